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
use crate::workerd::{cpu_seconds, measure, tree_cpu_seconds, Bench};

fn expected_region(policy: &Policy, country: &str) -> String {
    policy
        .region(policy.region_of(Country::parse(country).unwrap()))
        .id
        .clone()
}

/// The rehearsal's run number: its keys say `-bench-2-` (`mix::key_of`).
pub const RUN: u32 = 2;

/// What a rehearsal offers and what its audit expects.
pub struct Rehearsal {
    pub rate: f64,
    pub duration_s: u64,
    pub mix: Mix,
    /// Its keys say `-bench-{run}-`: several rehearsals in one bench run each have their own.
    pub run: u32,
    /// Clients retry 502/503/504 and no answer with the same key, as the page does.
    pub retry: bool,
    /// The one region whose origins are made to fail: attempts answered 502/503/504 or not at
    /// all may be for it alone. `None`: not checked.
    pub faulted: Option<&'static str>,
    /// Where `harbour-live` serves the live view meanwhile (`127.0.0.1:PORT`), if anywhere.
    pub live: Option<String>,
}

impl Rehearsal {
    /// `rate` for `duration_s` of `mix`, without retries or faults.
    pub fn new(rate: f64, duration_s: u64, mix: Mix) -> Rehearsal {
        Rehearsal {
            rate,
            duration_s,
            mix,
            run: RUN,
            retry: false,
            faulted: None,
            live: None,
        }
    }
}

/// What a rehearsal came to.
pub struct Rehearsed {
    /// Whether its audit passed.
    pub passed: bool,
    pub stats: Stats,
    pub audit: Audit,
}

/// Runs the rehearsal and its audit.
pub fn rehearse(bench: &Bench, plan: &Rehearsal) -> Rehearsed {
    let policy = Policy::shipped().unwrap();
    let ports = bench.harbour_ports();
    println!(
        "rehearsal: {:.0} req/s offered for {} s over {} workerd process{} (round robin), {}; origins on {}{}",
        plan.rate,
        plan.duration_s,
        ports.len(),
        if ports.len() == 1 { "" } else { "es" },
        plan.mix.describe(),
        if bench.postgres.is_some() {
            "PostgreSQL (a database per region, shared by its two origins)"
        } else {
            "SQLite (a file per region, shared by its two origins; synchronous=FULL, the default)"
        },
        if plan.retry { "; clients retry 502/503/504 and no-answer with the same key, as the page does" } else { "" }
    );
    println!("  load average before: {}", load_average());
    let title = format!(
        "Rehearsal: {:.0} submissions a second offered for {} s, {}{}",
        plan.rate,
        plan.duration_s,
        plan.mix.describe(),
        if plan.retry {
            ", clients retrying as the page does"
        } else {
            ""
        }
    );
    let watch = Watch::start(bench, &title, plan.live.as_deref(), plan.duration_s);
    let load = Load {
        ports,
        connections: 256,
        duration: Duration::from_secs(plan.duration_s),
        rate: Some(plan.rate),
        mix: plan.mix,
        run: plan.run,
        first: 0,
        retry: plan.retry,
    };
    let before = Usage::of(bench);
    let (stats, cpu) = measure(bench, &load);
    let used = Usage::of(bench).since(&before);
    println!("  load average after: {}", load_average());
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
            return Rehearsed {
                passed: false,
                stats,
                audit: Audit::default(),
            };
        }
    };
    let audit = audit(&policy, &ledger, &stats, plan);
    report(&audit, &stats, cpu);
    used.report(stats.elapsed.as_secs_f64(), &audit.rows_by_region);
    let path = watch.finish(bench, audit.for_report(&stats, cpu));
    println!("  broadcast report: {}", path.display());
    Rehearsed {
        passed: audit.passed(),
        stats,
        audit,
    }
}

/// /proc/loadavg's 1, 5 and 15 minute figures: how busy the shared box was.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

/// CPU seconds used so far by each process of the rehearsal, so a result can be read on a box
/// whose cores they share: each workerd, each reference origin (with the submissions it
/// received), the PostgreSQL server with its backends, and this process (the load generator,
/// which also solves every challenge).
struct Usage {
    /// Name, CPU seconds, submissions received (origins only).
    processes: Vec<(String, f64, Option<u64>)>,
}

/// An origin's name in the report: `origin <region> :<port>`.
fn origin_name(region: &str, port: u16) -> String {
    format!("origin {region} :{port}")
}

impl Usage {
    fn of(bench: &Bench) -> Usage {
        let mut processes: Vec<(String, f64, Option<u64>)> = bench
            .workerd_pids()
            .into_iter()
            .map(|(name, pid)| (name, cpu_seconds(pid), None))
            .collect();
        for slot in bench.origins.lock().unwrap().iter() {
            let Some(process) = slot.process.as_ref() else {
                continue;
            };
            let received = harbour_e2e::http::raw(
                slot.launch.ops_port,
                b"GET /v1/count HTTP/1.1\r\nhost: 127.0.0.1\r\nconnection: close\r\n\r\n",
            )
            .ok()
            .and_then(|r| r.json()["received"].as_u64());
            processes.push((
                origin_name(&slot.launch.region, slot.launch.port),
                cpu_seconds(process.pid()),
                received,
            ));
        }
        if let Some(pid) = bench.postgres_pid() {
            processes.push(("postgres".into(), tree_cpu_seconds(pid), None));
        }
        processes.push((
            "load generator".into(),
            cpu_seconds(std::process::id()),
            None,
        ));
        Usage { processes }
    }

    /// An origin restarted during the run (the fault modes) counts from its restart only, so its
    /// figure is then a floor.
    fn since(&self, before: &Usage) -> Usage {
        let earlier = |name: &str| before.processes.iter().find(|(n, _, _)| n == name);
        Usage {
            processes: self
                .processes
                .iter()
                .map(|(name, cpu, received)| {
                    let (cpu_before, received_before) =
                        earlier(name).map_or((0.0, None), |(_, c, r)| (*c, *r));
                    (
                        name.clone(),
                        (cpu - cpu_before).max(0.0),
                        received.map(|r| r.saturating_sub(received_before.unwrap_or(0))),
                    )
                })
                .collect(),
        }
    }

    fn report(&self, seconds: f64, rows_by_region: &[(String, u64)]) {
        let cores = |cpu: f64| cpu / seconds.max(1e-9);
        println!(
            "  CPU by process over the run (cores on average; {} cores on this box, shared):",
            std::thread::available_parallelism().map_or(0, |n| n.get())
        );
        for (name, cpu, received) in &self.processes {
            let per = received
                .filter(|r| *r > 0)
                .map(|r| {
                    format!(
                        "  ({r} submissions received, {:.0} us each)",
                        cpu * 1e6 / r as f64
                    )
                })
                .unwrap_or_default();
            println!("    {name:24} {:.2}{per}", cores(*cpu));
        }
        let total: f64 = self.processes.iter().map(|(_, cpu, _)| cpu).sum();
        println!("    {:24} {:.2}", "total", cores(total));
        if let Some((name, cpu, _)) = self.processes.iter().max_by(|a, b| a.1.total_cmp(&b.1)) {
            println!("  busiest process: {name} at {:.2} cores", cores(*cpu));
        }
        let mut per_row = Vec::new();
        for (region, rows) in rows_by_region {
            let prefix = format!("origin {region} :");
            let cpu: f64 = self
                .processes
                .iter()
                .filter(|(name, _, _)| name.starts_with(&prefix))
                .map(|(_, cpu, _)| cpu)
                .sum();
            if *rows > 0 {
                per_row.push(format!(
                    "{region} {:.0} us ({rows} rows, {:.2} cores)",
                    cpu * 1e6 / *rows as f64,
                    cores(cpu)
                ));
            }
        }
        println!(
            "  origin CPU per stored row, by region (its two origins' CPU / the rows this run stored there; goal <= 60 us): {}",
            per_row.join(", ")
        );
        let stored: u64 = rows_by_region.iter().map(|(_, rows)| rows).sum();
        if let Some((_, cpu, _)) = self.processes.iter().find(|(n, _, _)| n == "postgres") {
            if stored > 0 {
                println!(
                    "  PostgreSQL CPU per stored row (all regions): {:.0} us",
                    cpu * 1e6 / stored as f64
                );
            }
        }
    }
}

/// What the answers and the origins' databases say about a rehearsal.
#[derive(Debug, Default)]
pub struct Audit {
    retry: bool,
    mix: Option<Mix>,
    run: u32,
    pub submissions: usize,
    accepted: u64,
    pub rows_stored: usize,
    /// Keys of this run stored, by the region whose store holds them.
    pub rows_by_region: Vec<(String, u64)>,
    /// Rows past the first under one key, in any store.
    pub duplicates: u64,
    /// Rows whose body is not the submission their key names.
    wrong_entry: u64,
    pub lost: u64,
    pub cross_region: u64,
    not_told_to_retry: u64,
    /// Valid submissions of clients within their limit.
    pub valid: u64,
    /// Of those, the ones whose key is stored nowhere (after retries, if clients retried).
    pub unstored_after_retries: u64,
    /// Receipts matched to the rows of their keys.
    receipts: Matched,
    /// Attempts answered 502/503/504 or not at all, by the region they were for.
    trouble_by_region: Vec<(String, u64)>,
    /// Those of a region that was not made to fail.
    trouble_elsewhere: u64,
}

impl Audit {
    pub fn passed(&self) -> bool {
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

/// The request number of a key of run `run`.
fn request_number(run: u32, key: &str) -> Option<u64> {
    harbour_contract::key::number_of(&run.to_string(), key)
}

fn audit(policy: &Policy, ledger: &Ledger, stats: &Stats, plan: &Rehearsal) -> Audit {
    let mut audit = Audit {
        retry: plan.retry,
        mix: Some(plan.mix),
        run: plan.run,
        receipts: match_receipts(&stats.receipts, |n| key_of(plan.run, n), ledger),
        ..Audit::default()
    };
    audit_rows(policy, ledger, &mut audit);
    audit_answers(stats, ledger, &mut audit);
    audit_trouble(policy, stats, plan.faulted, &mut audit);
    audit
}

/// Every row of this run, by its key: once, in its region, holding its own submission.
fn audit_rows(policy: &Policy, ledger: &Ledger, audit: &mut Audit) {
    let mix = audit.mix.unwrap_or(Mix::Realistic);
    let mut by_region: HashMap<String, u64> = HashMap::new();
    for (key, rows) in ledger.iter() {
        let Some(n) = request_number(audit.run, key) else {
            continue;
        };
        let planned = plan(mix, audit.run, n);
        let expected = expected_region(policy, planned.country);
        for row in rows {
            *by_region.entry(row.store.clone()).or_default() += 1;
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
    audit.rows_by_region = by_region.into_iter().collect();
    audit.rows_by_region.sort();
}

/// Each submission's last answer against whether its key was stored.
fn audit_answers(stats: &Stats, ledger: &Ledger, audit: &mut Audit) {
    // The last answer each submission got (retries of one submission run on one connection, in order).
    let mut last: HashMap<u64, u16> = HashMap::new();
    for (n, status) in &stats.per_request {
        last.insert(*n, *status);
    }
    audit.submissions = last.len();
    let mix = audit.mix.unwrap_or(Mix::Realistic);
    for (n, status) in &last {
        let planned = plan(mix, audit.run, *n);
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
        if planned.valid && !hot_client {
            audit.valid += 1;
            if !stored {
                audit.unstored_after_retries += 1;
            }
        }
    }
}

/// Every attempt that met an origin problem, by the region it was for: with a faulted region,
/// no other may appear.
fn audit_trouble(policy: &Policy, stats: &Stats, faulted: Option<&str>, audit: &mut Audit) {
    let mut by_region: HashMap<String, u64> = HashMap::new();
    let mix = audit.mix.unwrap_or(Mix::Realistic);
    for (n, status) in &stats.per_request {
        if matches!(status, 0 | 502..=504) {
            let country = plan(mix, audit.run, *n).country;
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
    println!(
        "  valid submissions of clients within their limit {}, stored {}, not stored{} {}",
        audit.valid,
        audit.valid - audit.unstored_after_retries,
        if audit.retry {
            " after retrying"
        } else {
            " (no retries)"
        },
        audit.unstored_after_retries
    );
    println!(
        "  latency p50 {:.2} ms, p95 {:.2} ms, p99 {:.2} ms",
        stats.percentile_ms(0.5),
        stats.percentile_ms(0.95),
        stats.percentile_ms(0.99)
    );
    println!(
        "  workerd CPU (all edges) {:.1} us per attempt ({:.2} cores over the run)",
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
            faulted,
            ..Rehearsal::new(1.0, 1, Mix::Realistic)
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
