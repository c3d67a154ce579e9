//! The cost comparison: interleaved rounds of harbour and the pass-through baseline at maximum
//! and at a fixed rate, medians and ratios.

use std::collections::HashMap;
use std::time::Duration;

use crate::load::Load;
use crate::mix::Mix;
use crate::workerd::{measure, Bench};

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(|a, b| a.total_cmp(b));
    values[values.len() / 2]
}

pub struct Comparison {
    pub rounds: u32,
    pub seconds: u64,
    pub fixed_rate: f64,
    /// Whether to run the fixed-rate phase (latency) besides the maximum-rate one (cost).
    pub fixed: bool,
}

pub fn compare(bench: &Bench, plan: &Comparison) {
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
    println!("comparison: {rounds} interleaved rounds of {seconds} s per phase, valid submissions only, 32 connections");
    for round in 0..rounds {
        // "origin": the same fixed-rate load straight at a reference origin (no workerd), which
        // answers 404 at once: the latency floor of this machine, load generator and loopback.
        let floor_port = bench.origins.lock().unwrap()[0].port;
        let mut workers = vec![("harbour", bench.harbour_port)];
        workers.extend(bench.other_port.map(|port| ("other", port)));
        workers.extend([("baseline", bench.baseline_port), ("origin", floor_port)]);
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
                    run: 1,
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
    println!("medians (harbour / baseline = ratio):");
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
        let b = summary("baseline", phase, pick);
        println!(
            "  {label:26} harbour {h:9.2}   baseline {b:9.2}   ratio {:5.2}",
            h / b
        );
        if results.contains_key(&("other", phase)) {
            let o = summary("other", phase, pick);
            println!(
                "  {:26} other   {o:9.2}   harbour / other {:5.3}   (other / baseline {:5.2})",
                "",
                h / o,
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
