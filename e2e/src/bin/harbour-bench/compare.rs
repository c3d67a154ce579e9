//! The cost comparison: interleaved rounds of harbour, the plain-JS peer doing the same job and
//! the pass-through baseline (and `other` when served) at maximum and at a fixed rate, medians
//! and ratios, and an audit that every receipt a contestant gave in a phase is a stored row.

use std::collections::HashMap;
use std::time::Duration;

use crate::load::Load;
use crate::mix::Mix;
use crate::workerd::{measure, Bench};

/// The middle value; for an even count, the mean of the two middle ones (with two rounds, the
/// upper one alone would be the worse round).
fn median(values: &mut [f64]) -> f64 {
    values.sort_by(|a, b| a.total_cmp(b));
    let mid = values.len() / 2;
    if values.len() % 2 == 0 {
        (values[mid - 1] + values[mid]) / 2.0
    } else {
        values[mid]
    }
}

/// A second at maximum rate per worker, not counted, so round 0 does not measure a cold
/// isolate (its first JIT tiers, the first connections to the origins).
fn warm_up(bench: &Bench) {
    let mut workers = vec![bench.harbour_port];
    workers.extend(bench.other_port);
    workers.extend([bench.peer_port, bench.baseline_port]);
    for (i, port) in workers.into_iter().enumerate() {
        crate::load::run_load(&Load {
            port,
            connections: 32,
            duration: Duration::from_secs(1),
            rate: None,
            mix: Mix::ValidOnly,
            run: WARM_UP_RUN,
            first: i as u64 * 10_000_000,
            retry: false,
        });
    }
}

const WARM_UP_RUN: u32 = 3;

pub struct Comparison {
    pub rounds: u32,
    pub seconds: u64,
    pub fixed_rate: f64,
    /// Whether to run the fixed-rate phase (latency) besides the maximum-rate one (cost).
    pub fixed: bool,
}

/// Rows the origins stored for the keys of requests `first..=last` of the comparison's run.
fn stored_rows(bench: &Bench, first: u64, last: u64) -> u64 {
    let (low, high) = (
        crate::mix::key_of(COMPARISON_RUN, first),
        crate::mix::key_of(COMPARISON_RUN, last),
    );
    bench
        .dbs
        .iter()
        .map(|(_, db)| {
            rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
                .and_then(|c| {
                    c.query_row(
                        "SELECT count(*) FROM submissions WHERE idempotency_key BETWEEN ?1 AND ?2",
                        [&low, &high],
                        |row| row.get::<_, u64>(0),
                    )
                })
                .unwrap_or(0)
        })
        .sum()
}

const COMPARISON_RUN: u32 = 1;

/// Compares; whether every receipt (202) of a contestant that stores was found stored.
pub fn compare(bench: &Bench, plan: &Comparison) -> bool {
    let (rounds, seconds, fixed_rate) = (plan.rounds, plan.seconds, plan.fixed_rate);
    let phases: &[(&str, Option<f64>)] = if plan.fixed {
        &[("max", None), ("fixed", Some(fixed_rate))]
    } else {
        &[("max", None)]
    };
    let mut first = 0u64;
    // (throughput, CPU µs per request, p50 ms, p99 ms) per (worker, phase)
    type Sample = (f64, f64, f64, f64);
    type Row<'a> = (&'a str, &'a str, fn(&Sample) -> f64);
    let mut results: HashMap<(&str, &str), Vec<Sample>> = HashMap::new();
    // (receipts, rows stored) per contestant that stores
    let mut receipts: HashMap<&str, (u64, u64)> = HashMap::new();
    warm_up(bench);
    println!("comparison: {rounds} interleaved rounds of {seconds} s per phase, valid submissions only, 32 connections");
    for round in 0..rounds {
        // "origin": the same fixed-rate load straight at a reference origin (no workerd), which
        // answers 404 at once: the latency floor of this machine, load generator and loopback.
        let floor_port = bench.origins.lock().unwrap()[0].port;
        let mut workers = vec![("harbour", bench.harbour_port)];
        workers.extend(bench.other_port.map(|port| ("other", port)));
        workers.extend([
            ("peer", bench.peer_port),
            ("baseline", bench.baseline_port),
            ("origin", floor_port),
        ]);
        for (name, port) in workers {
            for &(phase, rate) in phases {
                if name == "origin" && phase != "fixed" {
                    continue;
                }
                let load = Load {
                    port,
                    connections: 32,
                    duration: Duration::from_secs(seconds),
                    rate,
                    mix: Mix::ValidOnly,
                    run: COMPARISON_RUN,
                    first,
                    retry: false,
                };
                let (stats, cpu) = measure(bench, &load);
                let stored = stored_rows(bench, first, first + stats.sent);
                first += stats.sent + 1;
                let accepted = stats.outcomes.get("202").copied().unwrap_or(0);
                if matches!(name, "harbour" | "peer" | "other") {
                    let tally = receipts.entry(name).or_default();
                    tally.0 += accepted;
                    tally.1 += stored;
                }
                let cpu_us = cpu * 1e6 / stats.answered.max(1) as f64;
                println!(
                    "  round {round} {name:8} {phase:5}: {:7.0} req/s, CPU {:6.1} us/req, p50 {:6.2} ms, p99 {:6.2} ms, stored {stored}, outcomes {:?}",
                    stats.throughput(), cpu_us, stats.percentile_ms(0.5), stats.percentile_ms(0.99), stats.outcomes
                );
                results.entry((name, phase)).or_default().push((
                    stats.throughput(),
                    cpu_us,
                    stats.percentile_ms(0.5),
                    stats.percentile_ms(0.99),
                ));
            }
        }
    }
    let summary = |name, phase, pick: fn(&Sample) -> f64| {
        let mut v: Vec<f64> = results[&(name, phase)].iter().map(pick).collect();
        median(&mut v)
    };
    println!("medians (ratios harbour / peer and harbour / baseline; lower is better for all but throughput):");
    let rows: [Row; 5] = [
        ("throughput req/s (max)", "max", |r| r.0),
        ("CPU us/req (max)", "max", |r| r.1),
        ("CPU us/req (fixed rate)", "fixed", |r| r.1),
        ("p50 ms (fixed rate)", "fixed", |r| r.2),
        ("p99 ms (fixed rate)", "fixed", |r| r.3),
    ];
    for (label, phase, pick) in rows {
        if !results.contains_key(&("harbour", phase)) {
            continue;
        }
        let h = summary("harbour", phase, pick);
        let p = summary("peer", phase, pick);
        let b = summary("baseline", phase, pick);
        println!(
            "  {label:26} harbour {h:9.2}   peer {p:9.2}   baseline {b:9.2}   harbour/peer {:5.2}   harbour/baseline {:5.2}",
            h / p,
            h / b
        );
        if results.contains_key(&("other", phase)) {
            let o = summary("other", phase, pick);
            println!(
                "  {:26} other   {o:9.2}   harbour / other {:5.3}   (other / peer {:5.2}, other / baseline {:5.2})",
                "",
                h / o,
                o / p,
                o / b
            );
        }
    }
    if results.contains_key(&("origin", "fixed")) {
        println!(
            "  floor at the fixed rate, straight to an origin (no workerd): p50 {:.2} ms, p99 {:.2} ms",
            summary("origin", "fixed", |r| r.2),
            summary("origin", "fixed", |r| r.3)
        );
    }
    println!("  (fixed rate = {fixed_rate:.0} req/s offered)");
    let mut all_stored = true;
    let mut names: Vec<_> = receipts.keys().copied().collect();
    names.sort_unstable();
    for name in names {
        let (accepted, stored) = receipts[name];
        let lost = accepted.saturating_sub(stored);
        all_stored &= lost == 0;
        println!(
            "  audit {name:8}: receipts (202) {accepted}, rows stored for its keys {stored}, receipts without a row {lost}"
        );
    }
    all_stored
}
