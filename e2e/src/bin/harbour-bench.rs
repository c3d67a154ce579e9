//! Peak rehearsal and cost benchmark. Runs the release worker under `workerd serve` directly
//! (wrangler dev's proxy would be what is measured otherwise) beside a plain-JS pass-through
//! baseline in the same workerd process, with release reference origins, and drives load from
//! this process over loopback.
//!
//! harbour-bench                      interleaved comparison with the baseline (about 2 minutes)
//! harbour-bench --short              the same, shorter phases (seconds)
//!   [--rounds N] [--seconds S] [--fixed-rate R] [--cost-only]
//!                                    override rounds, seconds per phase, the fixed rate; or
//!                                    measure only the cost at maximum rate
//! harbour-bench --rehearsal [--rate 5000] [--duration 300]
//!                                    the peak: fixed rate, realistic mix, loss and residency audit
//! harbour-bench --faults [--rate 1000] [--duration 40]
//!                                    the same audit while the EU origins are killed and restarted
//!
//! Numbers are printed, not asserted, except the audit of a rehearsal (lost and cross-region
//! deliveries must be 0), which sets the exit code.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use harbour::config::{key_var, origins_var};
use harbour::country::Country;
use harbour::policy::Policy;
use harbour_e2e::{free_port, read_rows, regions, wait_until, workspace_root, Process};

const PATH: &str = "/api/campaigns/spring-launch/submissions";

#[derive(Clone, Copy, PartialEq)]
enum Mix {
    /// Every request valid, from its own client: the like-for-like cost comparison.
    ValidOnly,
    /// Valid from many clients and countries, 10 % invalid, 10 % from ten clients far over
    /// their limit.
    Realistic,
}

/// The n-th request of a run, deterministic so the audit can recompute what was sent.
struct Planned {
    /// One key per submission, kept across retries, as the campaign page does.
    key: String,
    country: &'static str,
    ip: String,
    body: String,
    valid: bool,
}

fn country_for(n: u64) -> &'static str {
    match (n.wrapping_mul(2_654_435_761) >> 7) % 100 {
        0..=39 => "US",
        40..=49 => "IT",
        50..=56 => "DE",
        57..=61 => "FR",
        62..=76 => "CN",
        77..=86 => "RU",
        _ => "AU",
    }
}

fn plan(mix: Mix, run: u32, n: u64) -> Planned {
    let country = country_for(n);
    let kind = if mix == Mix::ValidOnly { 10 } else { n % 20 };
    let ip = match kind {
        2 | 3 => format!("198.18.0.{}", n % 10),
        _ => {
            let i = if mix == Mix::ValidOnly {
                n
            } else {
                n % 400_000
            };
            format!("100.{}.{}.{}", 64 + (i >> 16) % 64, (i >> 8) & 255, i & 255)
        }
    };
    let email = if kind < 2 {
        format!("load{run}-{n}-at-example.org")
    } else {
        format!("load{run}-{n}@example.org")
    };
    let body = format!(
        r#"{{"name":"Load Visitor {n}","email":"{email}","country":"{country}","consent":true}}"#
    );
    Planned {
        key: format!("bench-{run}-{n:012}"),
        country,
        ip,
        body,
        valid: kind >= 2,
    }
}

fn request_bytes(p: &Planned) -> Vec<u8> {
    format!(
        "POST {PATH} HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\naccept-encoding: identity\r\n\
         idempotency-key: {}\r\ncf-connecting-ip: {}\r\nx-bench-cf: {{\"country\":\"{}\"}}\r\ncontent-length: {}\r\n\r\n{}",
        p.key,
        p.ip,
        p.country,
        p.body.len(),
        p.body
    )
    .into_bytes()
}

/// Reads one response off a keep-alive connection: (status, body).
fn read_response(stream: &mut TcpStream, buffer: &mut Vec<u8>) -> std::io::Result<(u16, String)> {
    let mut chunk = [0u8; 8192];
    loop {
        if let Some(split) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buffer[..split]).to_ascii_lowercase();
            let status: u16 = head
                .split(' ')
                .nth(1)
                .and_then(|s| s.parse().ok())
                .unwrap_or(0);
            let length = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok());
            if let Some(length) = length {
                if buffer.len() >= split + 4 + length {
                    let body = String::from_utf8_lossy(&buffer[split + 4..split + 4 + length])
                        .into_owned();
                    buffer.drain(..split + 4 + length);
                    return Ok((status, body));
                }
            } else if head.contains("transfer-encoding: chunked") {
                if let Some(end) = buffer[split + 4..]
                    .windows(5)
                    .position(|w| w == b"0\r\n\r\n")
                {
                    let body =
                        String::from_utf8_lossy(&buffer[split + 4..split + 4 + end]).into_owned();
                    buffer.drain(..split + 4 + end + 5);
                    return Ok((status, body));
                }
            } else {
                return Err(std::io::Error::other("response without length"));
            }
        }
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            return Err(std::io::Error::other("connection closed"));
        }
        buffer.extend_from_slice(&chunk[..n]);
    }
}

fn outcome_label(status: u16, body: &str) -> String {
    let code = body
        .split("\"code\":\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next());
    match code {
        Some(code) => format!("{status} {code}"),
        None => status.to_string(),
    }
}

struct Load {
    port: u16,
    connections: usize,
    duration: Duration,
    /// Requests per second across all connections; `None` sends as fast as answers come.
    rate: Option<f64>,
    mix: Mix,
    run: u32,
    first: u64,
    /// Retry no-answer and 502/503/504 with the same key after the advised wait, as the page
    /// does, for up to a minute past the end of the load.
    retry: bool,
}

const RETRY_WAIT: Duration = Duration::from_secs(5);
const MAX_ATTEMPTS: u32 = 8;

#[derive(Default)]
struct Stats {
    sent: u64,
    answered: u64,
    latencies_us: Vec<u64>,
    outcomes: HashMap<String, u64>,
    /// Request number → status (0 = no answer), for the audit.
    per_request: Vec<(u64, u16)>,
    elapsed: Duration,
}

impl Stats {
    fn percentile_ms(&self, p: f64) -> f64 {
        if self.latencies_us.is_empty() {
            return f64::NAN;
        }
        let index = ((self.latencies_us.len() as f64 - 1.0) * p).round() as usize;
        self.latencies_us[index] as f64 / 1000.0
    }

    fn throughput(&self) -> f64 {
        self.answered as f64 / self.elapsed.as_secs_f64()
    }
}

fn run_load(load: &Load) -> Stats {
    let next = Arc::new(AtomicU64::new(load.first));
    let merged = Arc::new(Mutex::new(Stats::default()));
    let started = Instant::now();
    let deadline = started + load.duration;
    let per_connection_interval = load
        .rate
        .map(|r| Duration::from_secs_f64(load.connections as f64 / r));
    let threads: Vec<_> = (0..load.connections)
        .map(|c| {
            let next = next.clone();
            let merged = merged.clone();
            let (port, mix, run, connections, retry) =
                (load.port, load.mix, load.run, load.connections, load.retry);
            std::thread::spawn(move || {
                let mut local = Stats::default();
                let mut stream: Option<TcpStream> = None;
                let mut buffer = Vec::new();
                // Spread the connections' schedules over one interval.
                let offset =
                    per_connection_interval.map(|i| i.mul_f64(c as f64 / connections as f64));
                let mut scheduled = started + offset.unwrap_or_default();
                let mut retries: std::collections::VecDeque<(Instant, u64, u32)> =
                    Default::default();
                loop {
                    let mut attempt_of = 1;
                    let n = if Instant::now() < deadline {
                        if let Some(interval) = per_connection_interval {
                            let now = Instant::now();
                            if scheduled > now {
                                std::thread::sleep(scheduled - now);
                            }
                            scheduled += interval;
                        }
                        if Instant::now() >= deadline {
                            continue;
                        }
                        match retries.front() {
                            Some(&(due, n, attempts)) if due <= Instant::now() => {
                                retries.pop_front();
                                attempt_of = attempts + 1;
                                n
                            }
                            _ => next.fetch_add(1, Ordering::Relaxed),
                        }
                    } else {
                        // Past the load: finish the retries, then stop.
                        let Some((due, n, attempts)) = retries.pop_front() else {
                            break;
                        };
                        if Instant::now() > deadline + Duration::from_secs(60) {
                            break;
                        }
                        let now = Instant::now();
                        if due > now {
                            std::thread::sleep(due - now);
                        }
                        attempt_of = attempts + 1;
                        n
                    };
                    let planned = plan(mix, run, n);
                    let bytes = request_bytes(&planned);
                    // Latency from the scheduled send time at a fixed rate, so a stall is not hidden
                    // by sending late (coordinated omission).
                    let now = Instant::now();
                    let from = if per_connection_interval.is_some() && attempt_of == 1 {
                        scheduled
                            .checked_sub(per_connection_interval.unwrap_or_default())
                            .unwrap_or(now)
                    } else {
                        now
                    };
                    local.sent += 1;
                    let mut answer = None;
                    for _attempt in 0..2 {
                        if stream.is_none() {
                            stream = TcpStream::connect(("127.0.0.1", port)).ok();
                            if let Some(s) = &stream {
                                let _ = s.set_nodelay(true);
                                let _ = s.set_read_timeout(Some(Duration::from_secs(30)));
                            }
                            buffer.clear();
                        }
                        let Some(s) = stream.as_mut() else { break };
                        if s.write_all(&bytes).is_ok() {
                            if let Ok(r) = read_response(s, &mut buffer) {
                                answer = Some(r);
                                break;
                            }
                        }
                        // A kept-alive connection closed under us before the request was read:
                        // reconnect once. A second failure counts as no answer.
                        stream = None;
                    }
                    let status = answer.as_ref().map_or(0, |(status, _)| *status);
                    if retry && matches!(status, 0 | 502..=504) && attempt_of < MAX_ATTEMPTS {
                        retries.push_back((Instant::now() + RETRY_WAIT, n, attempt_of));
                    }
                    match answer {
                        Some((status, body)) => {
                            local.answered += 1;
                            local.latencies_us.push(from.elapsed().as_micros() as u64);
                            *local
                                .outcomes
                                .entry(outcome_label(status, &body))
                                .or_default() += 1;
                            local.per_request.push((n, status));
                        }
                        None => {
                            *local.outcomes.entry("no answer".into()).or_default() += 1;
                            local.per_request.push((n, 0));
                        }
                    }
                }
                let mut m = merged.lock().unwrap();
                m.sent += local.sent;
                m.answered += local.answered;
                m.latencies_us.extend(local.latencies_us);
                m.per_request.extend(local.per_request);
                for (k, v) in local.outcomes {
                    *m.outcomes.entry(k).or_default() += v;
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let mut stats = std::mem::take(&mut *merged.lock().unwrap());
    stats.elapsed = load.duration;
    stats.latencies_us.sort_unstable();
    stats
}

/// CPU seconds (user + system) a process has used, from /proc.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after_name = stat.rsplit_once(')').map(|(_, rest)| rest).unwrap_or("");
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let ticks: f64 = fields.get(11).and_then(|v| v.parse().ok()).unwrap_or(0.0)
        + fields.get(12).and_then(|v| v.parse().ok()).unwrap_or(0.0);
    ticks / 100.0
}

struct OriginSlot {
    region: String,
    port: u16,
    key: String,
    db: PathBuf,
    process: Option<Process>,
}

fn spawn_origin(dir: &std::path::Path, slot: &mut OriginSlot) {
    let origin_bin = std::env::var_os("HARBOUR_ORIGIN_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target/release/harbour-origin"));
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join(format!("origin-{}-{}.log", slot.region, slot.port)))
        .unwrap();
    let mut command = Command::new(origin_bin);
    command
        .args([
            "--region",
            &slot.region,
            "--listen",
            &format!("127.0.0.1:{}", slot.port),
            "--db",
        ])
        .arg(&slot.db)
        .env(key_var(&slot.region), &slot.key)
        .stdout(Stdio::null())
        .stderr(log);
    slot.process = Some(Process::spawn(
        &format!("origin {}", slot.region),
        &mut command,
    ));
    let port = slot.port;
    wait_until(
        &format!("origin {}", slot.region),
        Duration::from_secs(20),
        || TcpStream::connect(("127.0.0.1", port)).is_ok(),
    );
}

struct Bench {
    dir: PathBuf,
    harbour_port: u16,
    baseline_port: u16,
    workerd: Process,
    origins: Arc<Mutex<Vec<OriginSlot>>>,
    dbs: Vec<(String, PathBuf)>,
}

fn start() -> Bench {
    let root = workspace_root();
    let dir = root.join("target/bench");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let mut origins = Vec::new();
    let mut bindings = String::new();
    let mut dbs = Vec::new();
    for region in regions() {
        let key = format!("bench-{region}-0123456789abcdefghijklmnopqrstuvwxyz");
        let db = dir.join(format!("{region}.sqlite"));
        let mut ports = Vec::new();
        // Primary and secondary share the region's database.
        for _ in 0..2 {
            let mut slot = OriginSlot {
                region: region.clone(),
                port: free_port(),
                key: key.clone(),
                db: db.clone(),
                process: None,
            };
            spawn_origin(&dir, &mut slot);
            ports.push(format!("http://127.0.0.1:{}", slot.port));
            origins.push(slot);
        }
        bindings.push_str(&format!(
            "(name = \"{}\", text = \"{}\"),\n",
            origins_var(&region),
            ports.join(" ")
        ));
        bindings.push_str(&format!(
            "(name = \"{}\", text = \"{key}\"),\n",
            key_var(&region)
        ));
        dbs.push((region, db));
    }
    let (harbour_port, baseline_port) = (free_port(), free_port());
    let config = format!(
        r#"using Workerd = import "/workerd/workerd.capnp";
const config :Workerd.Config = (
  services = [
    (name = "harbour", worker = .harbour),
    (name = "baseline", worker = .baseline),
    (name = "loopback", network = (allow = ["public", "private", "local", "network"])),
  ],
  sockets = [
    (name = "harbour", address = "127.0.0.1:{harbour_port}", http = (cfBlobHeader = "x-bench-cf"), service = "harbour"),
    (name = "baseline", address = "127.0.0.1:{baseline_port}", http = (cfBlobHeader = "x-bench-cf"), service = "baseline"),
  ],
);
const harbour :Workerd.Worker = (
  modules = [
    (name = "shim.mjs", esModule = embed "{shim}"),
    (name = "index.wasm", wasm = embed "{wasm}"),
  ],
  compatibilityDate = "2025-09-01",
  bindings = [
{bindings}  ],
  globalOutbound = "loopback",
);
const baseline :Workerd.Worker = (
  modules = [(name = "passthrough.js", esModule = embed "{baseline}")],
  compatibilityDate = "2025-09-01",
  bindings = [
{bindings}  ],
  globalOutbound = "loopback",
);
"#,
        // capnp `embed` paths are relative to the config file, which sits in target/bench.
        shim = "../../build/worker/shim.mjs",
        wasm = "../../build/worker/index.wasm",
        baseline = "../../bench/passthrough.js",
    );
    let config_path = dir.join("workerd.capnp");
    std::fs::write(&config_path, config).unwrap();
    let log = std::fs::File::create(dir.join("workerd.log")).unwrap();
    let workerd_bin = root.join("node_modules/@cloudflare/workerd-linux-64/bin/workerd");
    let mut command = Command::new(workerd_bin);
    command.arg("serve").arg(&config_path);
    // For profiling with the V8 inspector (Chrome DevTools or a CDP client).
    if let Some(address) = std::env::var_os("HARBOUR_BENCH_INSPECTOR") {
        command.arg("--inspector-addr").arg(address);
    }
    command.stdout(log.try_clone().unwrap()).stderr(log);
    let workerd = Process::spawn("workerd", &mut command);
    let probe = "GET /api/campaigns/spring-launch HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n";
    wait_until("workerd", Duration::from_secs(30), || {
        harbour_e2e::raw(harbour_port, probe.as_bytes())
            .map(|r| r.status == 200)
            .unwrap_or(false)
    });
    Bench {
        dir,
        harbour_port,
        baseline_port,
        workerd,
        origins: Arc::new(Mutex::new(origins)),
        dbs,
    }
}

fn measure(bench: &Bench, load: &Load) -> (Stats, f64) {
    let pid = bench.workerd.pid();
    let before = cpu_seconds(pid);
    let stats = run_load(load);
    let cpu = cpu_seconds(pid) - before;
    (stats, cpu)
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(|a, b| a.total_cmp(b));
    values[values.len() / 2]
}

struct Comparison {
    rounds: u32,
    seconds: u64,
    fixed_rate: f64,
    /// Whether to run the fixed-rate phase (latency) besides the maximum-rate one (cost).
    fixed: bool,
}

fn compare(bench: &Bench, plan: &Comparison) {
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
        for (name, port) in [
            ("harbour", bench.harbour_port),
            ("baseline", bench.baseline_port),
            ("origin", floor_port),
        ] {
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

fn expected_region(policy: &Policy, country: &str) -> String {
    policy
        .region(policy.region_of(Country::parse(country).unwrap()))
        .id
        .clone()
}

fn rehearse(bench: &Bench, rate: f64, duration_s: u64, retry: bool) -> bool {
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
    let (stats, cpu) = measure(bench, &load);
    // Audit against the origins' own databases.
    let mut rows_per_request: HashMap<u64, u64> = HashMap::new();
    let mut cross_region = 0u64;
    for (region, db) in &bench.dbs {
        for row in read_rows(db) {
            let email = row.payload["fields"]["email"].as_str().unwrap_or("");
            let Some(n) = email
                .strip_prefix("load2-")
                .and_then(|r| r.split('@').next())
                .and_then(|n| n.parse::<u64>().ok())
            else {
                continue;
            };
            let expected = expected_region(&policy, plan(Mix::Realistic, 2, n).country);
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
                .entry(expected_region(&policy, country))
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
    let mut outcomes: Vec<_> = stats.outcomes.iter().collect();
    outcomes.sort();
    println!(
        "  submissions {}, attempts sent {}, answered {}",
        last.len(),
        stats.sent,
        stats.answered
    );
    println!(
        "  receipts (202) {accepted}, rows stored {}, duplicate rows {duplicates}",
        rows_per_request.len()
    );
    println!("  answers by outcome (all attempts):");
    for (label, count) in outcomes {
        println!("    {label:40} {count}");
    }
    let mut trouble: Vec<_> = trouble_by_region.into_iter().collect();
    trouble.sort();
    println!("  attempts answered 502/503/504 or not at all, by region: {trouble:?}");
    println!("  lost {lost}, cross-region deliveries {cross_region}, valid non-202 without retry advice {not_told_to_retry}");
    if retry {
        println!("  valid submissions (clients within their limit) not stored after retrying: {unstored_after_retries}");
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
    lost == 0
        && cross_region == 0
        && duplicates == 0
        && not_told_to_retry == 0
        && (!retry || unstored_after_retries == 0)
}

/// While load runs, in five equal steps: kill the EU primary; kill the EU secondary too; restart
/// both; stall the EU primary (it accepts and never answers); restore it.
fn inject_faults(bench: &Bench, duration_s: u64) -> std::thread::JoinHandle<()> {
    let origins = bench.origins.clone();
    let dir = bench.dir.clone();
    let step = Duration::from_secs_f64(duration_s as f64 / 5.0);
    std::thread::spawn(move || {
        let (primary, secondary) = {
            let o = origins.lock().unwrap();
            let eu: Vec<usize> = o
                .iter()
                .enumerate()
                .filter(|(_, s)| s.region == "eu")
                .map(|(i, _)| i)
                .collect();
            (eu[0], eu[1])
        };
        let at = |k: f64| println!("  t+{:.0}s:", k * step.as_secs_f64());
        let kill = |i: usize| {
            if let Some(mut p) = origins.lock().unwrap()[i].process.take() {
                p.kill_hard();
            }
        };
        std::thread::sleep(step);
        at(1.0);
        println!("    EU primary killed");
        kill(primary);
        std::thread::sleep(step);
        at(2.0);
        println!("    EU secondary killed: the region has no origin");
        kill(secondary);
        std::thread::sleep(step);
        at(3.0);
        println!("    EU origins restarted");
        {
            let mut o = origins.lock().unwrap();
            spawn_origin(&dir, &mut o[primary]);
            spawn_origin(&dir, &mut o[secondary]);
        }
        std::thread::sleep(step);
        at(4.0);
        println!("    EU primary stalled (accepts, never answers)");
        kill(primary);
        let port = origins.lock().unwrap()[primary].port;
        let hole = harbour_e2e::Blackhole::bind(port);
        std::thread::sleep(step);
        drop(hole);
        println!("    EU primary restored");
        spawn_origin(&dir, &mut origins.lock().unwrap()[primary]);
    })
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let value = |flag: &str| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
            .and_then(|v| v.parse::<f64>().ok())
    };
    let bench = start();
    println!(
        "workerd on 127.0.0.1 (harbour :{}, baseline :{}), files in {}",
        bench.harbour_port,
        bench.baseline_port,
        bench.dir.display()
    );
    let ok = if args.iter().any(|a| a == "--faults") {
        let duration = value("--duration").unwrap_or(50.0) as u64;
        println!("faults under load: EU origins killed, restarted and stalled");
        let faults = inject_faults(&bench, duration);
        let ok = rehearse(&bench, value("--rate").unwrap_or(1000.0), duration, true);
        faults.join().unwrap();
        ok
    } else if args.iter().any(|a| a == "--rehearsal") {
        rehearse(
            &bench,
            value("--rate").unwrap_or(5000.0),
            value("--duration").unwrap_or(300.0) as u64,
            false,
        )
    } else {
        let short = args.iter().any(|a| a == "--short");
        let (rounds, seconds, fixed_rate) = if short {
            (2, 3, 1000.0)
        } else {
            (4, 8, 2000.0)
        };
        compare(
            &bench,
            &Comparison {
                rounds: value("--rounds").map_or(rounds, |v| v as u32),
                seconds: value("--seconds").map_or(seconds, |v| v as u64),
                fixed_rate: value("--fixed-rate").unwrap_or(fixed_rate),
                fixed: !args.iter().any(|a| a == "--cost-only"),
            },
        );
        if short && !args.iter().any(|a| a == "--cost-only") {
            rehearse(&bench, 1000.0, 5, false)
        } else {
            true
        }
    };
    drop(bench);
    std::process::exit(if ok { 0 } else { 1 });
}
