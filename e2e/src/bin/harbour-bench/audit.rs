//! The rehearsal: a realistic mix at a fixed rate, then an audit against the origins' own
//! databases (nothing lost, stored twice or delivered outside its region), and its broadcast
//! report (`watch`): the charts of the live view and the audit, in one HTML file.

use std::collections::HashMap;
use std::time::Duration;

use harbour_policy::country::Country;
use harbour_policy::Policy;

use crate::ledger::{match_receipts, Ledger, Matched};
use crate::load::{Load, Stats};
use crate::mix::{key_of, plan, Mix};
use crate::watch::Watch;
use crate::workerd::{cpu_seconds, measure, Bench};

fn expected_region(policy: &Policy, country: &str) -> String {
    policy
        .region(policy.region_of(Country::parse(country).unwrap()))
        .id
        .clone()
}

/// The rehearsal's run number: its keys are `bench-2-…` (`mix::key_of`).
const RUN: u32 = 2;

/// What a rehearsal offers and what its audit expects.
pub struct Rehearsal {
    pub rate: f64,
    pub duration_s: u64,
    /// Clients retry 502/503/504 and no answer with the same key, as the page does.
    pub retry: bool,
    /// The one region whose origins are made to fail: attempts answered 502/503/504 or not at
    /// all may be for it alone. `None`: not checked.
    pub faulted: Option<&'static str>,
    /// Where `harbour-live` serves the live view meanwhile (`127.0.0.1:PORT`), if anywhere.
    pub live: Option<String>,
}

/// Runs the rehearsal and its audit; whether the audit passed, and the answers.
pub fn rehearse(bench: &Bench, plan: &Rehearsal) -> (bool, Stats) {
    let policy = Policy::shipped().unwrap();
    println!("rehearsal: {:.0} req/s offered for {} s, realistic mix (80 % valid, 10 % invalid, 10 % over-limit clients){}",
        plan.rate, plan.duration_s,
        if plan.retry { "; clients retry 502/503/504 and no-answer with the same key, as the page does" } else { "" });
    let load = Load {
        port: bench.harbour_port,
        connections: 256,
        duration: Duration::from_secs(plan.duration_s),
        rate: Some(plan.rate),
        mix: Mix::Realistic,
        run: RUN,
        first: 0,
        retry: plan.retry,
    };
    let title = format!(
        "Rehearsal: {:.0} submissions a second offered for {} s, realistic mix{}",
        plan.rate,
        plan.duration_s,
        if plan.retry {
            ", clients retrying as the page does"
        } else {
            ""
        }
    );
    let watch = Watch::start(bench, &title, plan.live.as_deref(), plan.duration_s);
    let before = Usage::of(bench);
    let (stats, cpu) = measure(bench, &load);
    let used = Usage::of(bench).since(&before);
    let ledger = match Ledger::read(&bench.dbs) {
        Ok(ledger) => ledger,
        Err(e) => {
            println!("  audit: the stores cannot be read: {e}");
            let unread = harbour_ops::recording::Audit {
                passed: false,
                figures: vec![("the stores".into(), format!("cannot be read: {e}"))],
                answers: Vec::new(),
            };
            println!(
                "  broadcast report: {}",
                watch.finish(bench, unread).display()
            );
            return (false, stats);
        }
    };
    let audit = audit(&policy, &ledger, &stats, plan);
    report(&audit, &stats, cpu);
    used.report(stats.elapsed.as_secs_f64());
    let path = watch.finish(bench, audit.for_report(&stats, cpu));
    println!("  broadcast report: {}", path.display());
    (audit.passed(), stats)
}

/// CPU seconds used so far by each part of the rehearsal, so a result can be read on a box
/// whose cores they share: the workerd process, the reference origins together, and this
/// process (the load generator, which also solves every challenge).
struct Usage {
    workerd: f64,
    origins: f64,
    load: f64,
}

impl Usage {
    fn of(bench: &Bench) -> Usage {
        let origins = bench.origins.lock().unwrap();
        Usage {
            workerd: cpu_seconds(bench.workerd.pid()),
            origins: origins
                .iter()
                .filter_map(|slot| slot.process.as_ref())
                .map(|p| cpu_seconds(p.pid()))
                .sum(),
            load: cpu_seconds(std::process::id()),
        }
    }

    /// An origin restarted during the run (the fault modes) counts from its restart only, so the
    /// origins' figure is then a floor.
    fn since(&self, before: &Usage) -> Usage {
        Usage {
            workerd: self.workerd - before.workerd,
            origins: (self.origins - before.origins).max(0.0),
            load: self.load - before.load,
        }
    }

    fn report(&self, seconds: f64) {
        let cores = |cpu: f64| cpu / seconds.max(1e-9);
        println!(
            "  CPU by process over the run (cores on average): workerd {:.2}, origins {:.2}, load generator {:.2}, total {:.2} of {} on this box",
            cores(self.workerd),
            cores(self.origins),
            cores(self.load),
            cores(self.workerd + self.origins + self.load),
            std::thread::available_parallelism().map_or(0, |n| n.get())
        );
    }
}

/// What the answers and the origins' databases say about a rehearsal.
#[derive(Debug, Default)]
struct Audit {
    retry: bool,
    submissions: usize,
    accepted: u64,
    rows_stored: usize,
    /// Rows past the first under one key, in any store.
    duplicates: u64,
    /// Rows whose body is not the submission their key names.
    wrong_entry: u64,
    lost: u64,
    cross_region: u64,
    not_told_to_retry: u64,
    unstored_after_retries: u64,
    /// Receipts matched to the rows of their keys.
    receipts: Matched,
    /// Attempts answered 502/503/504 or not at all, by the region they were for.
    trouble_by_region: Vec<(String, u64)>,
    /// Those of a region that was not made to fail.
    trouble_elsewhere: u64,
}

impl Audit {
    fn passed(&self) -> bool {
        self.lost == 0
            && self.cross_region == 0
            && self.duplicates == 0
            && self.wrong_entry == 0
            && self.not_told_to_retry == 0
            && self.receipts.passed()
            && self.trouble_elsewhere == 0
            && (!self.retry || self.unstored_after_retries == 0)
    }
}

impl Audit {
    /// The audit as the broadcast report shows it.
    fn for_report(&self, stats: &Stats, cpu: f64) -> harbour_ops::recording::Audit {
        let m = &self.receipts;
        let mut figures: Vec<(String, String)> = [
            ("submissions sent", self.submissions.to_string()),
            ("attempts sent (retries included)", stats.sent.to_string()),
            ("attempts answered", stats.answered.to_string()),
            ("receipts given (202)", self.accepted.to_string()),
            (
                "entries stored (one row per key)",
                self.rows_stored.to_string(),
            ),
            (
                "receipts matched to their entry's row",
                format!("{} of {}", m.matched, m.receipts),
            ),
            (
                "lost (answered 202, or valid and unanswered, and not stored)",
                self.lost.to_string(),
            ),
            ("stored outside their region", self.cross_region.to_string()),
            (
                "stored twice (rows past the first under one key)",
                self.duplicates.to_string(),
            ),
            (
                "valid, refused without retry advice",
                self.not_told_to_retry.to_string(),
            ),
            (
                "time to answer, p50 / p99 (load generator)",
                format!(
                    "{:.1} ms / {:.1} ms",
                    stats.percentile_ms(0.5),
                    stats.percentile_ms(0.99)
                ),
            ),
            (
                "edge CPU per attempt (workerd)",
                format!("{:.0} µs", cpu * 1e6 / stats.answered.max(1) as f64),
            ),
        ]
        .into_iter()
        .map(|(what, figure)| (what.to_owned(), figure))
        .collect();
        if self.retry {
            figures.push((
                "valid and not stored after retrying".into(),
                self.unstored_after_retries.to_string(),
            ));
        }
        let mut answers: Vec<(String, u64)> = stats
            .outcomes
            .iter()
            .map(|(k, v)| (k.clone(), *v))
            .collect();
        answers.sort();
        harbour_ops::recording::Audit {
            passed: self.passed(),
            figures,
            answers,
        }
    }
}

/// The request number of a key of this run.
fn request_number(key: &str) -> Option<u64> {
    key.strip_prefix(&format!("bench-{RUN}-"))?.parse().ok()
}

fn audit(policy: &Policy, ledger: &Ledger, stats: &Stats, plan: &Rehearsal) -> Audit {
    let mut audit = Audit {
        retry: plan.retry,
        receipts: match_receipts(&stats.receipts, |n| key_of(RUN, n), ledger),
        ..Audit::default()
    };
    audit_rows(policy, ledger, &mut audit);
    audit_answers(stats, ledger, &mut audit);
    audit_trouble(policy, stats, plan.faulted, &mut audit);
    audit
}

/// Every row of this run, by its key: once, in its region, holding its own submission.
fn audit_rows(policy: &Policy, ledger: &Ledger, audit: &mut Audit) {
    for (key, rows) in ledger.iter() {
        let Some(n) = request_number(key) else {
            continue;
        };
        let planned = plan(Mix::Realistic, RUN, n);
        let expected = expected_region(policy, planned.country);
        for row in rows {
            if row.region != row.store || row.store != expected {
                audit.cross_region += 1;
            }
            if row.email.as_deref() != Some(planned.email.as_str()) {
                audit.wrong_entry += 1;
            }
        }
        audit.rows_stored += 1;
        audit.duplicates += rows.len() as u64 - 1;
    }
}

/// Each submission's last answer against whether its key was stored.
fn audit_answers(stats: &Stats, ledger: &Ledger, audit: &mut Audit) {
    // The last answer each submission got (retries of one submission run on one connection, in order).
    let mut last: HashMap<u64, u16> = HashMap::new();
    for (n, status) in &stats.per_request {
        last.insert(*n, *status);
    }
    audit.submissions = last.len();
    for (n, status) in &last {
        let planned = plan(Mix::Realistic, RUN, *n);
        let stored = !ledger.rows(&planned.key).is_empty();
        let told_to_retry = matches!(status, 429 | 502..=504);
        if *status == 202 {
            audit.accepted += 1;
        }
        // Lost: neither stored nor told to retry.
        if !stored
            && !told_to_retry
            && (*status == 202
                || (planned.valid && *status == 0)
                || (planned.valid && !(400..500).contains(status)))
        {
            audit.lost += 1;
        }
        if planned.valid && *status != 202 && !told_to_retry {
            audit.not_told_to_retry += 1;
        }
        let hot_client = planned.ip.starts_with("198.18.");
        if audit.retry && planned.valid && !hot_client && !stored {
            audit.unstored_after_retries += 1;
        }
    }
}

/// Every attempt that met an origin problem, by the region it was for: with a faulted region,
/// no other may appear.
fn audit_trouble(policy: &Policy, stats: &Stats, faulted: Option<&str>, audit: &mut Audit) {
    let mut by_region: HashMap<String, u64> = HashMap::new();
    for (n, status) in &stats.per_request {
        if matches!(status, 0 | 502..=504) {
            let country = plan(Mix::Realistic, RUN, *n).country;
            *by_region
                .entry(expected_region(policy, country))
                .or_default() += 1;
        }
    }
    if let Some(faulted) = faulted {
        audit.trouble_elsewhere = by_region
            .iter()
            .filter(|(region, _)| region.as_str() != faulted)
            .map(|(_, count)| count)
            .sum();
    }
    audit.trouble_by_region = by_region.into_iter().collect();
    audit.trouble_by_region.sort();
}

fn report(audit: &Audit, stats: &Stats, cpu: f64) {
    let mut outcomes: Vec<_> = stats.outcomes.iter().collect();
    outcomes.sort();
    println!(
        "  submissions {}, attempts sent {}, answered {}",
        audit.submissions, stats.sent, stats.answered
    );
    println!(
        "  receipts (202) {}, keys stored {}, rows past the first under one key {}, rows holding another submission {}",
        audit.accepted, audit.rows_stored, audit.duplicates, audit.wrong_entry
    );
    let m = &audit.receipts;
    println!(
        "  receipts matched to their key's one row {} of {}; without a row {}, the row's receipt another {}, stored twice {}",
        m.matched, m.receipts, m.without_row, m.other_receipt, m.stored_twice
    );
    println!("  answers by outcome (all attempts):");
    for (label, count) in outcomes {
        println!("    {label:40} {count}");
    }
    println!(
        "  attempts answered 502/503/504 or not at all, by region: {:?}{}",
        audit.trouble_by_region,
        if audit.trouble_elsewhere > 0 {
            " (NOT only the faulted region)"
        } else {
            ""
        }
    );
    println!(
        "  lost {}, cross-region deliveries {}, valid non-202 without retry advice {}",
        audit.lost, audit.cross_region, audit.not_told_to_retry
    );
    if audit.retry {
        println!(
            "  valid submissions (clients within their limit) not stored after retrying: {}",
            audit.unstored_after_retries
        );
    }
    println!(
        "  latency p50 {:.2} ms, p95 {:.2} ms, p99 {:.2} ms",
        stats.percentile_ms(0.5),
        stats.percentile_ms(0.95),
        stats.percentile_ms(0.99)
    );
    println!(
        "  workerd CPU {:.1} us per attempt ({:.2} cores over the run)",
        cpu * 1e6 / stats.answered.max(1) as f64,
        cpu / stats.elapsed.as_secs_f64()
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use harbour_e2e::rows::StoredRow;

    fn stored(n: u64, region: &str) -> StoredRow {
        let planned = plan(Mix::Realistic, RUN, n);
        StoredRow {
            receipt_id: format!("{region}-{n}"),
            region: region.into(),
            idempotency_key: planned.key,
            platform_country: planned.country.into(),
            declared_country: None,
            payload: serde_json::json!({"fields": {"email": planned.email}}),
        }
    }

    fn region_of(n: u64) -> String {
        let policy = Policy::shipped().unwrap();
        expected_region(&policy, plan(Mix::Realistic, RUN, n).country)
    }

    /// Valid submissions (kind 4..20 of every 20) answered 202, each stored once in its region.
    fn clean() -> (Ledger, Stats) {
        let mut ledger = Ledger::default();
        let mut stats = Stats::default();
        for n in 4..10 {
            let region = region_of(n);
            ledger.add(&region, &stored(n, &region));
            stats.per_request.push((n, 202));
            stats.receipts.push((n, format!("{region}-{n}")));
        }
        (ledger, stats)
    }

    fn rehearsal(faulted: Option<&'static str>) -> Rehearsal {
        Rehearsal {
            rate: 1.0,
            duration_s: 1,
            retry: false,
            faulted,
            live: None,
        }
    }

    #[test]
    fn a_clean_run_passes() {
        let (ledger, stats) = clean();
        let policy = Policy::shipped().unwrap();
        let audit = audit(&policy, &ledger, &stats, &rehearsal(None));
        assert!(audit.passed(), "{audit:?}");
        assert_eq!(audit.receipts.matched, 6);
    }

    #[test]
    fn a_key_stored_twice_is_a_duplicate_even_with_one_entry_per_email() {
        let (mut ledger, stats) = clean();
        // Submission 5's key stored a second time, with the body of a submission never sent
        // (one entry per email lets that in): by email, nothing is stored twice.
        let unsent = plan(Mix::Realistic, RUN, 204);
        let store = region_of(204);
        let mut again = stored(5, &store);
        again.payload = serde_json::json!({"fields": {"email": unsent.email}});
        ledger.add(&store, &again);
        let policy = Policy::shipped().unwrap();
        let audit = audit(&policy, &ledger, &stats, &rehearsal(None));
        assert_eq!(audit.duplicates, 1);
        assert_eq!(audit.receipts.stored_twice, 1);
        assert!(!audit.passed());
    }

    #[test]
    fn a_row_with_another_submissions_body_fails() {
        let (_, stats) = clean();
        let mut ledger = Ledger::default();
        for n in 4..10 {
            let region = region_of(n);
            let mut row = stored(n, &region);
            if n == 4 {
                let other = plan(Mix::Realistic, RUN, 5).email;
                row.payload = serde_json::json!({"fields": {"email": other}});
            }
            ledger.add(&region, &row);
        }
        let policy = Policy::shipped().unwrap();
        let audit = audit(&policy, &ledger, &stats, &rehearsal(None));
        assert_eq!(audit.wrong_entry, 1);
        assert!(!audit.passed());
    }

    #[test]
    fn trouble_outside_the_faulted_region_fails() {
        let (mut ledger, mut stats) = clean();
        // A valid submission of the rest of the world, away from the clean ones.
        let n = (10..)
            .find(|n| region_of(*n) == "global" && n % 20 >= 4)
            .unwrap();
        let region = region_of(n);
        stats.per_request.push((n, 503));
        stats.per_request.push((n, 202));
        stats.receipts.push((n, format!("{region}-{n}")));
        ledger.add(&region, &stored(n, &region));
        let policy = Policy::shipped().unwrap();
        let audit_eu = audit(&policy, &ledger, &stats, &rehearsal(Some("eu")));
        assert_eq!(audit_eu.trouble_elsewhere, 1);
        assert!(!audit_eu.passed());
        let audit_there = audit(&policy, &ledger, &stats, &rehearsal(Some("global")));
        assert_eq!(audit_there.trouble_elsewhere, 0);
        assert!(audit_there.passed(), "{audit_there:?}");
    }
}
