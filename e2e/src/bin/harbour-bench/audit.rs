//! The rehearsal: a realistic mix at a fixed rate, then an audit against the origins' own
//! databases (nothing lost, stored twice or delivered outside its region).

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use harbour_e2e::read_rows;
use harbour_policy::country::Country;
use harbour_policy::Policy;

use crate::load::{Load, Stats};
use crate::mix::{plan, Mix};
use crate::workerd::{cpu_seconds, measure, Bench};

fn expected_region(policy: &Policy, country: &str) -> String {
    policy
        .region(policy.region_of(Country::parse(country).unwrap()))
        .id
        .clone()
}

/// Runs the rehearsal and its audit; whether the audit passed, and the answers.
pub fn rehearse(bench: &Bench, rate: f64, duration_s: u64, retry: bool) -> (bool, Stats) {
    let policy = Policy::shipped().unwrap();
    println!("rehearsal: {rate:.0} req/s offered for {duration_s} s, realistic mix (80 % valid, 10 % invalid, 10 % over-limit clients){}",
        if retry { "; clients retry 502/503/504 and no-answer with the same key, as the page does" } else { "" });
    let load = Load {
        port: bench.harbour_port,
        connections: 256,
        duration: Duration::from_secs(duration_s),
        rate: Some(rate),
        mix: Mix::Realistic,
        run: 2,
        first: 0,
        retry,
    };
    let before = Usage::of(bench);
    let (stats, cpu) = measure(bench, &load);
    let used = Usage::of(bench).since(&before);
    let audit = audit(&policy, &bench.dbs, &stats, retry);
    report(&audit, &stats, cpu);
    used.report(stats.elapsed.as_secs_f64());
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
struct Audit {
    retry: bool,
    submissions: usize,
    accepted: u64,
    rows_stored: usize,
    duplicates: u64,
    lost: u64,
    cross_region: u64,
    not_told_to_retry: u64,
    unstored_after_retries: u64,
    /// Attempts answered 502/503/504 or not at all, by the region they were for.
    trouble_by_region: Vec<(String, u64)>,
}

impl Audit {
    fn passed(&self) -> bool {
        self.lost == 0
            && self.cross_region == 0
            && self.duplicates == 0
            && self.not_told_to_retry == 0
            && (!self.retry || self.unstored_after_retries == 0)
    }
}

fn audit(policy: &Policy, dbs: &[(String, PathBuf)], stats: &Stats, retry: bool) -> Audit {
    // Audit against the origins' own databases.
    let mut rows_per_request: HashMap<u64, u64> = HashMap::new();
    let mut cross_region = 0u64;
    for (region, db) in dbs {
        for row in read_rows(db) {
            let email = row.payload["fields"]["email"].as_str().unwrap_or("");
            let Some(n) = email
                .strip_prefix("load2-")
                .and_then(|r| r.split('@').next())
                .and_then(|n| n.parse::<u64>().ok())
            else {
                continue;
            };
            let expected = expected_region(policy, plan(Mix::Realistic, 2, n).country);
            if row.region != *region || expected != *region {
                cross_region += 1;
            }
            *rows_per_request.entry(n).or_default() += 1;
        }
    }
    // The last answer each submission got (retries of one submission run on one connection, in order).
    let mut last: HashMap<u64, u16> = HashMap::new();
    for (n, status) in &stats.per_request {
        last.insert(*n, *status);
    }
    // Every attempt that met an origin problem, by the region it was for: only a faulted region
    // should appear.
    let mut trouble_by_region: HashMap<String, u64> = HashMap::new();
    for (n, status) in &stats.per_request {
        if matches!(status, 0 | 502..=504) {
            let country = plan(Mix::Realistic, 2, *n).country;
            *trouble_by_region
                .entry(expected_region(policy, country))
                .or_default() += 1;
        }
    }
    let duplicates: u64 = rows_per_request.values().map(|c| c.saturating_sub(1)).sum();
    let (mut accepted, mut lost, mut not_told_to_retry, mut unstored_after_retries) =
        (0u64, 0u64, 0u64, 0u64);
    for (n, status) in &last {
        let planned = plan(Mix::Realistic, 2, *n);
        let stored = rows_per_request.contains_key(n);
        let told_to_retry = matches!(status, 429 | 502..=504);
        if *status == 202 {
            accepted += 1;
        }
        // Lost: neither stored nor told to retry.
        if !stored
            && !told_to_retry
            && (*status == 202
                || (planned.valid && *status == 0)
                || (planned.valid && !(400..500).contains(status)))
        {
            lost += 1;
        }
        if planned.valid && *status != 202 && !told_to_retry {
            not_told_to_retry += 1;
        }
        let hot_client = planned.ip.starts_with("198.18.");
        if retry && planned.valid && !hot_client && !stored {
            unstored_after_retries += 1;
        }
    }
    let mut trouble_by_region: Vec<_> = trouble_by_region.into_iter().collect();
    trouble_by_region.sort();
    Audit {
        retry,
        submissions: last.len(),
        accepted,
        rows_stored: rows_per_request.len(),
        duplicates,
        lost,
        cross_region,
        not_told_to_retry,
        unstored_after_retries,
        trouble_by_region,
    }
}

fn report(audit: &Audit, stats: &Stats, cpu: f64) {
    let mut outcomes: Vec<_> = stats.outcomes.iter().collect();
    outcomes.sort();
    println!(
        "  submissions {}, attempts sent {}, answered {}",
        audit.submissions, stats.sent, stats.answered
    );
    println!(
        "  receipts (202) {}, rows stored {}, duplicate rows {}",
        audit.accepted, audit.rows_stored, audit.duplicates
    );
    println!("  answers by outcome (all attempts):");
    for (label, count) in outcomes {
        println!("    {label:40} {count}");
    }
    println!(
        "  attempts answered 502/503/504 or not at all, by region: {:?}",
        audit.trouble_by_region
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
