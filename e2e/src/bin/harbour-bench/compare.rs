//! The cost comparison: interleaved rounds of harbour, the plain-JS peer doing the same job and
//! the pass-through baseline (and `other` when served) at maximum and at a fixed rate, medians
//! and ratios, and an audit that every receipt a contestant gave in a phase is a stored row.

use std::collections::HashMap;
use std::time::Duration;

use crate::ledger::{match_receipts, Ledger};
use crate::load::Load;
use crate::mix::Mix;
use crate::workerd::{measure, Bench};

/// The middle value; for an even count, the mean of the two middle ones (with two rounds, the
/// upper one alone would be the worse round).
pub fn median(values: &mut [f64]) -> f64 {
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
            ports: vec![port],
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

const COMPARISON_RUN: u32 = 1;

/// (throughput, CPU µs per request, p50 ms, p99 ms) of one phase.
type Sample = (f64, f64, f64, f64);

/// What the rounds measured, per (worker, phase), and the receipts (request number, receipt id)
/// each contestant that stores gave.
#[derive(Default)]
struct Measured {
    samples: HashMap<(&'static str, &'static str), Vec<Sample>>,
    receipts: HashMap<&'static str, Vec<(u64, String)>>,
}

/// Compares; whether every receipt (202) of a contestant that stores is the row of its key.
pub fn compare(bench: &Bench, plan: &Comparison) -> bool {
    warm_up(bench);
    println!(
        "comparison: {} interleaved rounds of {} s per phase, valid submissions only, 32 connections",
        plan.rounds, plan.seconds
    );
    let measured = run_rounds(bench, plan);
    print_medians(&measured, plan.fixed_rate);
    audit_receipts(bench, &measured)
}

/// The workers of a round, in order: harbour, `other` when served, the peer, the baseline, and
/// "origin": the fixed-rate load straight at a reference origin (no workerd), which answers 404
/// at once: the latency floor of this machine, load generator and loopback.
fn workers(bench: &Bench) -> Vec<(&'static str, u16)> {
    let floor_port = bench.origins.lock().unwrap()[0].launch.port;
    let mut workers = vec![("harbour", bench.harbour_port)];
    workers.extend(bench.other_port.map(|port| ("other", port)));
    workers.extend([
        ("peer", bench.peer_port),
        ("baseline", bench.baseline_port),
        ("origin", floor_port),
    ]);
    workers
}

fn run_rounds(bench: &Bench, plan: &Comparison) -> Measured {
    let phases: &[(&str, Option<f64>)] = if plan.fixed {
        &[("max", None), ("fixed", Some(plan.fixed_rate))]
    } else {
        &[("max", None)]
    };
    let mut measured = Measured::default();
    let mut first = 0u64;
    for round in 0..plan.rounds {
        for (name, port) in workers(bench) {
            for &(phase, rate) in phases {
                if name == "origin" && phase != "fixed" {
                    continue;
                }
                let load = Load {
                    ports: vec![port],
                    connections: 32,
                    duration: Duration::from_secs(plan.seconds),
                    rate,
                    mix: Mix::ValidOnly,
                    run: COMPARISON_RUN,
                    first,
                    retry: false,
                };
                let (stats, cpu) = measure(bench, &load);
                first += stats.sent + 1;
                let cpu_us = cpu * 1e6 / stats.answered.max(1) as f64;
                println!(
                    "  round {round} {name:8} {phase:5}: {:7.0} req/s, CPU {:6.1} us/req, p50 {:6.2} ms, p99 {:6.2} ms, outcomes {:?}",
                    stats.throughput(), cpu_us, stats.percentile_ms(0.5), stats.percentile_ms(0.99), stats.outcomes
                );
                measured.samples.entry((name, phase)).or_default().push((
                    stats.throughput(),
                    cpu_us,
                    stats.percentile_ms(0.5),
                    stats.percentile_ms(0.99),
                ));
                if matches!(name, "harbour" | "peer" | "other") {
                    measured
                        .receipts
                        .entry(name)
                        .or_default()
                        .extend(stats.receipts);
                }
            }
        }
    }
    measured
}

fn print_medians(measured: &Measured, fixed_rate: f64) {
    type Row<'a> = (&'a str, &'static str, fn(&Sample) -> f64);
    let results = &measured.samples;
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
}

/// Each receipt matched to the row of its key, per contestant; whether all matched.
fn audit_receipts(bench: &Bench, measured: &Measured) -> bool {
    let ledger = match Ledger::read(&bench.dbs) {
        Ok(ledger) => ledger,
        Err(e) => {
            println!("  audit: the stores cannot be read: {e}");
            return false;
        }
    };
    let mut names: Vec<_> = measured.receipts.keys().copied().collect();
    names.sort_unstable();
    let mut all_stored = true;
    for name in names {
        let key_of = |n| crate::mix::key_of(COMPARISON_RUN, n);
        let m = match_receipts(&measured.receipts[name], key_of, &ledger);
        all_stored &= m.passed();
        println!(
            "  audit {name:8}: receipts (202) {}, each its key's one row {}; without a row {}, the row's receipt another {}, stored twice {}",
            m.receipts, m.matched, m.without_row, m.other_receipt, m.stored_twice
        );
    }
    all_stored
}
