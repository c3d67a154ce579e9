//! The slow-body attack as a scenario: many connections held against the EU origins, each
//! sending a submission's request head with a `Content-Length` and one byte of body, then nothing,
//! and opened again as soon as the origin closes it, while real submissions flow through the edge.
//!
//! One bench run measures the same load under the attack once per length, each attack phase
//! between two phases without it:
//! 65,536 bytes (over the origin's body cap: read and thrown away until the minimum-rate check
//! cuts it off, then 413) and the cap itself (32,768 bytes, the longest body the origin
//! waits for: a connection is held until the minimum-rate check cuts it off). Each phase has keys
//! of its own (`Rehearsal::run`) and its own audit; the summary compares each attack phase's p99
//! with those of the phases without it just before and after.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::audit::{rehearse, Rehearsal, Rehearsed};
use crate::compare::median;
use crate::mix::Mix;
use crate::workerd::Bench;

/// What the scenario offers.
pub struct Attack {
    /// Slow connections held at once, over the EU origins together.
    pub connections: usize,
    /// The `Content-Length` each attack phase declares, in order.
    pub lengths: Vec<usize>,
    /// Rounds of attack phases, each every length once.
    pub rounds: usize,
    pub rate: f64,
    pub duration_s: u64,
    pub mix: Mix,
}

/// The region attacked.
const REGION: &str = "eu";
/// Rehearsal run numbers of the phases: the first is the one without the attack.
const FIRST_RUN: u32 = 3;
/// Time for the attackers' connections to be in place before the load starts.
const SETTLE: Duration = Duration::from_secs(2);

/// What the attackers did, counted across their threads.
#[derive(Default)]
struct Counts {
    opened: AtomicU64,
    answered: AtomicU64,
    connect_failed: AtomicU64,
}

/// Attacker threads, each holding one connection at a time against its origin.
struct Attackers {
    stop: Arc<AtomicBool>,
    counts: Arc<Counts>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Attackers {
    /// `connections` threads spread over `ports`, each sending a head declaring `length` bytes
    /// and one byte of body, then nothing; again when the origin closes. They stop by
    /// themselves after `limit` at the latest.
    fn start(ports: &[u16], connections: usize, length: usize, limit: Duration) -> Attackers {
        let stop = Arc::new(AtomicBool::new(false));
        let counts = Arc::new(Counts::default());
        let deadline = Instant::now() + limit;
        let head = format!(
            "POST /v1/submissions HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n\
             content-length: {length}\r\n\r\n{{"
        );
        let threads = (0..connections)
            .map(|i| {
                let address = SocketAddr::from(([127, 0, 0, 1], ports[i % ports.len()]));
                let (stop, counts, head) = (stop.clone(), counts.clone(), head.clone());
                std::thread::Builder::new()
                    .stack_size(64 * 1024)
                    .spawn(move || hold(address, head.as_bytes(), &stop, &counts, deadline))
                    .expect("an attacker thread")
            })
            .collect();
        Attackers {
            stop,
            counts,
            threads,
        }
    }

    /// Stops every attacker; (connections opened, answers read, connects that failed).
    fn stop(self) -> (u64, u64, u64) {
        self.stop.store(true, Ordering::Relaxed);
        for thread in self.threads {
            let _ = thread.join();
        }
        let c = &self.counts;
        (
            c.opened.load(Ordering::Relaxed),
            c.answered.load(Ordering::Relaxed),
            c.connect_failed.load(Ordering::Relaxed),
        )
    }
}

/// One attacker: a connection held until the origin closes it, then the next.
fn hold(address: SocketAddr, head: &[u8], stop: &AtomicBool, counts: &Counts, deadline: Instant) {
    let mut buffer = [0u8; 1024];
    while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
        let Ok(mut stream) = TcpStream::connect_timeout(&address, Duration::from_secs(2)) else {
            counts.connect_failed.fetch_add(1, Ordering::Relaxed);
            std::thread::sleep(Duration::from_millis(50));
            continue;
        };
        counts.opened.fetch_add(1, Ordering::Relaxed);
        if stream.write_all(head).is_err() {
            continue;
        }
        let _ = stream.set_read_timeout(Some(Duration::from_millis(250)));
        let mut answered = false;
        loop {
            match stream.read(&mut buffer) {
                Ok(0) => break,
                Ok(_) => {
                    if !answered {
                        answered = true;
                        counts.answered.fetch_add(1, Ordering::Relaxed);
                    }
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    if stop.load(Ordering::Relaxed) || Instant::now() >= deadline {
                        return;
                    }
                }
                Err(_) => break,
            }
        }
    }
}

/// The attacked origins' `/v1/load` (in flight, and their submissions listener's connections).
fn loads(bench: &Bench) -> Vec<(u16, serde_json::Value)> {
    let origins = bench.origins.lock().unwrap();
    origins
        .iter()
        .filter(|o| o.launch.region == REGION)
        .map(|o| {
            let load = harbour_e2e::http::raw(
                o.launch.ops_port,
                b"GET /v1/load HTTP/1.1\r\nhost: 127.0.0.1\r\nconnection: close\r\n\r\n",
            )
            .map(|r| r.json())
            .unwrap_or_default();
            (o.launch.port, load)
        })
        .collect()
}

/// What changed in each attacked origin's gauges over a phase.
fn report_loads(before: &[(u16, serde_json::Value)], after: &[(u16, serde_json::Value)]) {
    for ((port, was), (_, now)) in before.iter().zip(after) {
        let grew = |path: &[&str]| {
            let at = |v: &serde_json::Value| {
                path.iter().fold(v, |v, key| &v[*key]).as_u64().unwrap_or(0)
            };
            at(now).saturating_sub(at(was))
        };
        println!(
            "  EU origin :{port}: connections accepted {}, cut by a deadline {}, bodies refused {}, closed at the cap to make room {}, most open {} (cap {}); in flight at most {} (bound {}), shed {}",
            grew(&["connections", "accepted"]),
            grew(&["connections", "timed_out"]),
            grew(&["connections", "refused_bodies"]),
            grew(&["connections", "drained"]),
            now["connections"]["max_open_seen"],
            now["connections"]["cap"],
            now["max_in_flight_seen"],
            now["bound"],
            grew(&["shed"]),
        );
    }
}

/// One phase: the load, with `attack` (a `Content-Length`) held against the EU origins or not.
fn phase(bench: &Bench, plan: &Rehearsal, attack: Option<(usize, usize)>) -> Rehearsed {
    let ports: Vec<u16> = bench
        .origins
        .lock()
        .unwrap()
        .iter()
        .filter(|o| o.launch.region == REGION)
        .map(|o| o.launch.port)
        .collect();
    let before = loads(bench);
    let attackers = attack.map(|(connections, length)| {
        println!(
            "slow-body attack: {connections} connections against the EU origins (:{}), each a head declaring {length} bytes and one byte of body, then nothing; opened again when closed",
            ports.iter().map(u16::to_string).collect::<Vec<_>>().join(", :")
        );
        let limit = SETTLE + Duration::from_secs(plan.duration_s + 30);
        let attackers = Attackers::start(&ports, connections, length, limit);
        std::thread::sleep(SETTLE);
        attackers
    });
    if attack.is_none() {
        println!("without the attack:");
    }
    let rehearsed = rehearse(bench, plan);
    if let Some(attackers) = attackers {
        let (opened, answered, failed) = attackers.stop();
        println!(
            "  attackers: connections opened {opened}, answered and closed by the origin {answered}, connects that failed {failed}"
        );
    }
    report_loads(&before, &loads(bench));
    rehearsed
}

/// Runs the phases and prints their comparison; whether every phase's audit passed.
///
/// A phase without the attack comes before each attack phase and after the last, so each attack
/// is compared with the load just before and just after it: phases leave the stores fuller and the
/// edges' heaps larger, so a later phase may be slower with no attack at all. A p99 of a phase
/// rests on a few pauses (a collector's pause in an edge stalls every request it holds), so with
/// `rounds` above 1 the summary gives each length's median ratio too.
pub fn run(bench: &Bench, attack: &Attack) -> bool {
    let mut phases: Vec<(String, Option<usize>, Rehearsed)> = Vec::new();
    let attacks = (0..attack.rounds).flat_map(|_| attack.lengths.iter());
    let runs = std::iter::once(None).chain(attacks.flat_map(|l| [Some(*l), None]));
    for (i, length) in runs.enumerate() {
        let plan = Rehearsal {
            run: FIRST_RUN + i as u32,
            ..Rehearsal::new(attack.rate, attack.duration_s, attack.mix)
        };
        let rehearsed = phase(bench, &plan, length.map(|l| (attack.connections, l)));
        let name = match length {
            None => format!("{}. without the attack", i + 1),
            Some(l) => format!(
                "{}. {} slow connections, {l} bytes",
                i + 1,
                attack.connections
            ),
        };
        phases.push((name, length, rehearsed));
    }
    println!(
        "slow-body attack summary ({:.0} req/s offered for {} s each, {}):",
        attack.rate,
        attack.duration_s,
        attack.mix.describe()
    );
    println!(
        "  {:40} {:>9} {:>13} {:>11} {:>5} {:>9} {:>9}",
        "phase", "sent", "valid", "stored", "lost", "p50 ms", "p99 ms"
    );
    for (name, _, r) in &phases {
        println!(
            "  {name:40} {:>9} {:>13} {:>11} {:>5} {:>9.1} {:>9.1}",
            r.stats.sent,
            r.audit.valid,
            r.audit.valid - r.audit.unstored_after_retries,
            r.audit.lost,
            r.stats.percentile_ms(0.5),
            r.stats.percentile_ms(0.99)
        );
    }
    let p99 = |i: usize| phases[i].2.stats.percentile_ms(0.99);
    // Attack phases sit at odd places, each between two phases without it.
    let mut ratios: Vec<(usize, f64)> = Vec::new();
    for i in (1..phases.len()).step_by(2) {
        let (before, after) = (p99(i - 1), p99(i + 1));
        let around = (before + after) / 2.0;
        let ratio = p99(i) / around;
        if let Some(length) = phases[i].1 {
            ratios.push((length, ratio));
        }
        println!(
            "  {}: p99 {ratio:.2}x the phases without the attack around it (their mean, {around:.1} ms; goal <= 2), {:.2}x the one before, {:.2}x the one after; valid submissions not stored {} (goal 0)",
            phases[i].0,
            p99(i) / before,
            p99(i) / after,
            phases[i].2.audit.unstored_after_retries
        );
    }
    if attack.rounds > 1 {
        let mut lengths = attack.lengths.clone();
        lengths.sort_unstable();
        lengths.dedup();
        for length in &lengths {
            let mut of_length: Vec<f64> = ratios
                .iter()
                .filter(|(l, _)| l == length)
                .map(|(_, r)| *r)
                .collect();
            of_length.sort_by(f64::total_cmp);
            let listed: Vec<String> = of_length.iter().map(|r| format!("{r:.2}")).collect();
            println!(
                "  {} slow connections, {length} bytes: median p99 ratio {:.2}x over {} phases (goal <= 2; each: {})",
                attack.connections,
                median(&mut of_length),
                of_length.len(),
                listed.join(", ")
            );
        }
    }
    phases.iter().all(|(_, _, r)| r.passed)
}
