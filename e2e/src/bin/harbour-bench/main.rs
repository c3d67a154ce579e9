//! Peak rehearsal and cost benchmark. Runs the release worker under `workerd serve` directly
//! (wrangler dev's proxy would be what is measured otherwise) beside a plain-JS pass-through
//! baseline in the same workerd process, with release reference origins, and drives load from
//! this process over loopback.
//!
//! harbour-bench                      interleaved comparison with the peer and the baseline (about 3 minutes)
//! harbour-bench --short              the same, shorter phases (seconds)
//!   [--rounds N] [--seconds S] [--fixed-rate R] [--cost-only]
//!                                    override rounds, seconds per phase, the fixed rate; or
//!                                    measure only the cost at maximum rate
//! harbour-bench --rehearsal [--rate 5000] [--duration 300] [--mix realistic|national]
//!               [--edges N] [--store sqlite|postgres] [--live 127.0.0.1:PORT]
//!                                    the peak: fixed rate, a mix (realistic over five regions, or
//!                                    the national broadcast's, 92 % EU), loss and residency audit,
//!                                    CPU by process; the load spread round robin over N workerd
//!                                    processes (default 1); origins on SQLite (default) or on a
//!                                    throwaway PostgreSQL cluster (a database per region); and its
//!                                    broadcast report (target/bench/broadcast-report.html); with
//!                                    --live, harbour-live shows it meanwhile
//! harbour-bench --slow-body [--connections 1000] [--lengths 65536,32768] [--rate 1000]
//!               [--duration 30] [--rounds 1] [--mix national] [--edges N] [--store sqlite|postgres]
//!                                    the rehearsal with slow-body connections held against the
//!                                    EU origins, each attack between two runs without (`attack`)
//! harbour-bench --faults [--rate 1000] [--duration 50]
//!                                    the same audit while the EU origins are killed and restarted
//! harbour-bench --backpressure [--max-in-flight 2] [--rate 2000] [--duration 30]
//!                                    the same audit with the EU origins' in-flight bound set low:
//!                                    the most they had in flight, the edge's breakers, the 503s
//!                                    answered without calling an origin
//!
//! harbour-bench --cold [--samples 7] cold start only: workerd started to first answer, harbour and
//!                                    the peer each in a workerd of its own (also part of the
//!                                    comparison runs)
//!
//! The comparison runs first check that harbour and the plain-JS peer answer alike (`parity`),
//! and audit that every receipt is a stored row; either failing sets the exit code.
//!
//! Numbers are printed, not asserted, except the audit of a rehearsal (lost and cross-region
//! deliveries must be 0), which sets the exit code.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod attack;
mod audit;
mod backpressure;
mod cold;
mod compare;
mod faults;
mod ledger;
mod load;
mod mix;
mod parity;
mod watch;
mod workerd;

use audit::Rehearsal;
use compare::{compare, Comparison};
use mix::Mix;

/// The mix, whether the stores are PostgreSQL, and the attack's `Content-Length`s, from the
/// command line (`word` reads a flag's value).
fn options(
    word: &dyn Fn(&str) -> Option<String>,
    attack: bool,
) -> Result<(Mix, bool, Vec<usize>), String> {
    let default_mix = if attack { "national" } else { "realistic" };
    let mix = Mix::parse(&word("--mix").unwrap_or(default_mix.into()))
        .ok_or("--mix: realistic or national")?;
    let postgres = match word("--store").as_deref() {
        None | Some("sqlite") => false,
        Some("postgres") => true,
        Some(other) => return Err(format!("--store: sqlite or postgres, not {other:?}")),
    };
    let lengths = word("--lengths")
        .unwrap_or("65536,32768".into())
        .split(',')
        .map(|l| l.trim().parse::<usize>().ok())
        .collect::<Option<Vec<_>>>()
        .ok_or("--lengths: bytes, comma-separated")?;
    Ok((mix, postgres, lengths))
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let word = |flag: &str| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    // `--live 127.0.0.1:PORT`: harbour-live shows the rehearsal as it runs.
    let live = word("--live");
    let value = |flag: &str| word(flag).and_then(|v| v.parse::<f64>().ok());
    let attack = args.iter().any(|a| a == "--slow-body");
    let (mix, postgres, lengths) = options(&word, attack).unwrap_or_else(|problem| {
        eprintln!("{problem}");
        std::process::exit(2);
    });
    let bench = workerd::start(workerd::Setup {
        edges: value("--edges").map_or(1, |n| n.max(1.0) as usize),
        postgres,
    });
    println!(
        "workerd on 127.0.0.1 (harbour :{}, peer :{}, baseline :{}), files in {}",
        bench.harbour_port,
        bench.peer_port,
        bench.baseline_port,
        bench.dir.display()
    );
    if !bench.edges.is_empty() {
        let ports: Vec<String> = bench.edges.iter().map(|e| format!(":{}", e.port)).collect();
        println!(
            "further workerd processes with harbour alone: {}",
            ports.join(", ")
        );
    }
    let ok = if args.iter().any(|a| a == "--cold") {
        cold::measure(&bench, value("--samples").unwrap_or(7.0) as usize);
        true
    } else if args.iter().any(|a| a == "--faults") {
        let duration = value("--duration").unwrap_or(50.0) as u64;
        println!("faults under load: EU origins killed, restarted and stalled");
        let faults = faults::inject_faults(&bench, duration);
        let plan = Rehearsal {
            retry: true,
            faulted: Some(faults::FAULTED),
            live: live.clone(),
            ..Rehearsal::new(value("--rate").unwrap_or(1000.0), duration, mix)
        };
        let ok = audit::rehearse(&bench, &plan).passed;
        faults.join().unwrap();
        ok
    } else if args.iter().any(|a| a == "--backpressure") {
        backpressure::run(
            &bench,
            value("--max-in-flight").unwrap_or(2.0) as usize,
            value("--rate").unwrap_or(2000.0),
            value("--duration").unwrap_or(30.0) as u64,
        )
    } else if attack {
        attack::run(
            &bench,
            &attack::Attack {
                connections: value("--connections").unwrap_or(1000.0) as usize,
                lengths,
                rounds: value("--rounds").unwrap_or(1.0).max(1.0) as usize,
                rate: value("--rate").unwrap_or(1000.0),
                duration_s: value("--duration").unwrap_or(30.0) as u64,
                mix,
            },
        )
    } else if args.iter().any(|a| a == "--rehearsal") {
        let plan = Rehearsal {
            live: live.clone(),
            ..Rehearsal::new(
                value("--rate").unwrap_or(5000.0),
                value("--duration").unwrap_or(300.0) as u64,
                mix,
            )
        };
        audit::rehearse(&bench, &plan).passed
    } else {
        let short = args.iter().any(|a| a == "--short");
        let (rounds, seconds, fixed_rate) = if short {
            (2, 3, 1000.0)
        } else {
            (4, 6, 2000.0)
        };
        let alike = parity::check(&bench);
        let stored = compare(
            &bench,
            &Comparison {
                rounds: value("--rounds").map_or(rounds, |v| v as u32),
                seconds: value("--seconds").map_or(seconds, |v| v as u64),
                fixed_rate: value("--fixed-rate").unwrap_or(fixed_rate),
                fixed: !args.iter().any(|a| a == "--cost-only"),
            },
        );
        if !args.iter().any(|a| a == "--cost-only") {
            cold::measure(&bench, if short { 5 } else { 7 });
        }
        let rehearsed = if short && !args.iter().any(|a| a == "--cost-only") {
            let plan = Rehearsal::new(1000.0, 5, mix);
            audit::rehearse(&bench, &plan).passed
        } else {
            true
        };
        alike && stored && rehearsed
    };
    drop(bench);
    std::process::exit(if ok { 0 } else { 1 });
}
