//! Origin CPU per stored row: one `harbour-origin` process on 127.0.0.1, fed signed submissions
//! the way the edge sends them, its CPU time read from `/proc/<pid>/stat`.
//!
//! `origin-bench [--rows N] [--connections C] [--rate R] [--rounds R] [--durability normal|full]
//!               [--commit-window S] [--store URL] [--origin PATH]`
//!
//! Each round starts a fresh origin (a new SQLite file in a temporary directory, or `--store`),
//! warms it with 500 submissions, then sends N more (default 20,000) over C keep-alive
//! connections (default 16), each connection one request at a time (as fast as answered, or
//! paced so that all together offer `--rate` submissions per second), every body written with
//! `entry::EntryBody` and signed with `signature::SigningKey` as the edge does. Every request is
//! built before the clock starts, so the load generator's own work is not in the origin's way more
//! than it must be. CPU per row is the origin's user + system time over the measured phase ÷ the
//! rows it stored in it (`/v1/count`); every answer must be 201. The median round is printed
//! with the others. Each round also prints the store's commits in the measured phase
//! (`/v1/load`): rows per commit, and CPU per commit. A synced commit costs the same whatever
//! it holds, and at a paced rate how many rows it holds varies from run to run, so two builds
//! compare by both. It prints the answers' p50 and p99 too, from when each request was due (or
//! written, at full speed), so a build that saves CPU by holding answers back shows it.
//! Bounded: a round gives up after 120 s (a paced one after twice its rows' time at the rate, if
//! longer), a read after 10 s.
//!
//! `--durability full` (every commit synced) is the default here, as it is the origin's and the
//! edge benchmark's (`scripts/bench`); `normal` is there to compare. `--origin` defaults to the `harbour-origin`
//! beside this binary (`cargo build --release -p harbour-origin` builds both).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use harbour_contract::entry::{EntryBody, NoticeRecord, Signals};
use harbour_contract::signature::{sha256_hex, Signed, SigningKey};

const REGION: &str = "eu";
const KEY: &str = "origin-bench-eu-key-0123456789abcdefghijkl";
const PERSON_KEY: &str = "origin-bench-eu-person-key-0123456789abcdef";
const WARM_ROWS: usize = 500;
const ROUND_LIMIT: Duration = Duration::from_secs(120);
const READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Linux's `USER_HZ`: the unit of `utime` and `stime` in `/proc/<pid>/stat`.
const TICKS_PER_S: f64 = 100.0;

struct Options {
    rows: usize,
    connections: usize,
    rounds: usize,
    /// Submissions per second offered over all connections; `None`: as fast as answered.
    rate: Option<usize>,
    durability: String,
    /// `--commit-window` for the origin, when given.
    commit_window: Option<String>,
    store: Option<String>,
    origin: PathBuf,
}

fn options() -> Result<Options, String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let value = |flag: &str| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let number = |flag: &str, default: usize| -> Result<usize, String> {
        value(flag).map_or(Ok(default), |v| {
            v.parse()
                .ok()
                .filter(|n| *n > 0)
                .ok_or(format!("{flag}: a positive number"))
        })
    };
    let beside = std::env::current_exe()
        .map_err(|e| e.to_string())?
        .with_file_name("harbour-origin");
    Ok(Options {
        rows: number("--rows", 20_000)?,
        connections: number("--connections", 16)?,
        rounds: number("--rounds", 3)?,
        rate: value("--rate").map(|_| number("--rate", 0)).transpose()?,
        durability: value("--durability").unwrap_or_else(|| "full".into()),
        commit_window: value("--commit-window"),
        store: value("--store"),
        origin: value("--origin").map_or(beside, PathBuf::from),
    })
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn free_port() -> Result<u16, String> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| e.to_string())
}

/// One submission as the edge forwards it, signed at `timestamp_ms`: the request's bytes, ready
/// to write.
fn request(key: &SigningKey, run: &str, n: usize, timestamp_ms: u64) -> Vec<u8> {
    let email = format!("bench-{run}-{n}@example.org");
    let fields = serde_json::json!({
        "consent": true, "country": "IT", "email": email, "name": format!("Bench Visitor {n}"),
    })
    .to_string();
    let request_id = format!("r-{run}-{n}");
    let body = EntryBody {
        campaign: "spring-launch",
        fields_json: &fields,
        received_at_ms: timestamp_ms,
        region: REGION,
        request_id: &request_id,
        signals: Signals {
            basis: "platform",
            declared_country: None,
            platform_country: "IT",
        },
        // What the edge forwards for an entry whose page showed the notice (any version: the
        // origin stores what it is sent).
        notice: Some(NoticeRecord {
            locale: "en",
            version: "0123456789abcdef0123456789abcdef",
        }),
    }
    .write();
    let idempotency_key = harbour_contract::key::numbered(run, n as u64);
    let signature = key.sign(&Signed {
        method: "POST",
        path: "/v1/submissions",
        timestamp_ms,
        region: REGION,
        idempotency_key: &idempotency_key,
        body_sha256_hex: &sha256_hex(body.as_bytes()),
    });
    format!(
        "POST /v1/submissions HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n\
         idempotency-key: {idempotency_key}\r\nx-harbour-signature: {signature}\r\n\
         content-length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Reads one answer off a keep-alive connection: its status.
fn answer(reader: &mut BufReader<TcpStream>) -> Result<u16, String> {
    let mut line = String::new();
    reader.read_line(&mut line).map_err(|e| e.to_string())?;
    let status = line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or(format!("no status line: {line:?}"))?;
    let mut length = 0usize;
    loop {
        line.clear();
        reader.read_line(&mut line).map_err(|e| e.to_string())?;
        let header = line.trim_end();
        if header.is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':') {
            if name.eq_ignore_ascii_case("content-length") {
                length = value.trim().parse().map_err(|_| "bad content-length")?;
            }
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).map_err(|e| e.to_string())?;
    Ok(status)
}

/// Sends `requests` over `connections` keep-alive connections; every answer must be 201.
/// Each connection paced to `rate / connections` a second when `rate` is given. The time each
/// answer took, sorted: from when its request was due (paced) or written (full speed), so a
/// request held back by a slow answer before it counts its wait.
fn send(
    port: u16,
    requests: Vec<Vec<u8>>,
    connections: usize,
    rate: Option<usize>,
) -> Result<Vec<Duration>, String> {
    // A paced round is given twice the time its rows take at the rate, and never less than
    // `ROUND_LIMIT`: a long run (five minutes of a broadcast's peak) is bounded too.
    let limit = rate.map_or(ROUND_LIMIT, |r| {
        ROUND_LIMIT.max(Duration::from_secs_f64(
            2.0 * requests.len() as f64 / r.max(1) as f64,
        ))
    });
    let started = Instant::now();
    let deadline = started + limit;
    let interval = rate.map(|r| Duration::from_secs_f64(connections as f64 / r as f64));
    let mut shares: Vec<Vec<Vec<u8>>> = (0..connections).map(|_| Vec::new()).collect();
    for (i, r) in requests.into_iter().enumerate() {
        shares[i % connections].push(r);
    }
    let threads: Vec<_> = shares
        .into_iter()
        .enumerate()
        .map(|(c, share)| {
            // Connections start spread over one interval, not all at once.
            let offset = interval.map(|i| i.mul_f64(c as f64 / connections as f64));
            std::thread::spawn(move || -> Result<Vec<Duration>, String> {
                let stream = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
                stream
                    .set_read_timeout(Some(READ_TIMEOUT))
                    .map_err(|e| e.to_string())?;
                stream.set_nodelay(true).map_err(|e| e.to_string())?;
                let mut writer = stream.try_clone().map_err(|e| e.to_string())?;
                let mut reader = BufReader::new(stream);
                let mut latencies = Vec::with_capacity(share.len());
                for (i, r) in share.into_iter().enumerate() {
                    if Instant::now() > deadline {
                        return Err(format!("the round took over {} s", limit.as_secs()));
                    }
                    let due = match (interval, offset) {
                        (Some(interval), Some(offset)) => {
                            let due = started + offset + interval.saturating_mul(i as u32);
                            std::thread::sleep(due.saturating_duration_since(Instant::now()));
                            due
                        }
                        _ => Instant::now(),
                    };
                    writer.write_all(&r).map_err(|e| e.to_string())?;
                    let status = answer(&mut reader)?;
                    latencies.push(due.elapsed());
                    if status != 201 {
                        return Err(format!("answered {status}, not 201"));
                    }
                }
                Ok(latencies)
            })
        })
        .collect();
    let mut latencies = Vec::new();
    for thread in threads {
        latencies.extend(thread.join().map_err(|_| "a sender panicked")??);
    }
    latencies.sort();
    Ok(latencies)
}

/// The `q` quantile of sorted `latencies`, in ms.
fn quantile_ms(latencies: &[Duration], q: f64) -> f64 {
    let index = ((latencies.len() as f64 * q) as usize).min(latencies.len().saturating_sub(1));
    latencies.get(index).map_or(0.0, |d| d.as_secs_f64() * 1e3)
}

/// User + system CPU seconds from a `/proc/.../stat` text: (command name, seconds).
fn stat_seconds(stat: &str) -> Option<(String, f64)> {
    let (head, rest) = stat.rsplit_once(')')?;
    let name = head.split_once('(')?.1.to_owned();
    // Fields after the command name (which may hold spaces), from field 3 on: utime and stime
    // are fields 14 and 15, indexes 11 and 12 here.
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let tick = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok());
    Some((name, (tick(11)? + tick(12)?) / TICKS_PER_S))
}

/// The process's CPU seconds in all, and by thread name (`tokio-rt-worker`, `sqlite-writer`, …).
fn cpu_seconds(pid: u32) -> Result<(f64, BTreeMap<String, f64>), String> {
    let whole = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| stat_seconds(&s))
        .ok_or(format!("cannot read /proc/{pid}/stat"))?;
    let mut threads = BTreeMap::new();
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).map_err(|e| e.to_string())?;
    for task in tasks.flatten() {
        let stat = std::fs::read_to_string(task.path().join("stat")).unwrap_or_default();
        if let Some((name, seconds)) = stat_seconds(&stat) {
            *threads.entry(name).or_insert(0.0) += seconds;
        }
    }
    Ok((whole.1, threads))
}

fn get(port: u16, path: &str) -> Result<serde_json::Value, String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(READ_TIMEOUT))
        .map_err(|e| e.to_string())?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nhost: 127.0.0.1\r\nconnection: close\r\n\r\n"
    )
    .map_err(|e| e.to_string())?;
    let mut text = String::new();
    stream
        .read_to_string(&mut text)
        .map_err(|e| e.to_string())?;
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    serde_json::from_str(body).map_err(|e| format!("{path}: {e}: {text:?}"))
}

struct Running {
    child: Child,
    port: u16,
    ops_port: u16,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(o: &Options, dir: &std::path::Path) -> Result<Running, String> {
    let (port, ops_port) = (free_port()?, free_port()?);
    let store = o
        .store
        .clone()
        .unwrap_or_else(|| dir.join("eu.sqlite").display().to_string());
    let child = Command::new(&o.origin)
        .args(["--region", REGION, "--listen", &format!("127.0.0.1:{port}")])
        .args(["--ops-listen", &format!("127.0.0.1:{ops_port}")])
        .args(["--store", &store, "--durability", &o.durability])
        .args(o.commit_window.iter().flat_map(|w| ["--commit-window", w]))
        .env("HARBOUR_KEY_EU", KEY)
        .env("HARBOUR_PERSON_KEY_EU", PERSON_KEY)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("{}: {e}", o.origin.display()))?;
    let running = Running {
        child,
        port,
        ops_port,
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while get(ops_port, "/health").is_err() {
        if Instant::now() > deadline {
            return Err("the origin did not answer /health within 20 s".into());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(running)
}

/// What a round measured.
struct Round {
    /// µs of origin CPU per stored row, in all and by thread name.
    per_row: f64,
    by_thread: BTreeMap<String, f64>,
    rate: f64,
    /// Commits in the measured phase.
    commits: u64,
    /// µs of origin CPU per commit.
    per_commit: f64,
    /// Answer times in the measured phase, ms.
    p50_ms: f64,
    p99_ms: f64,
}

fn round(o: &Options, index: usize) -> Result<Round, String> {
    let dir = std::env::temp_dir().join(format!(
        "harbour-origin-bench-{}-{index}",
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let origin = start(o, &dir)?;
    let key = SigningKey::new(KEY.as_bytes()).ok_or("the key is too short")?;
    let run = format!("{}-{}-{index}", std::process::id(), now_ms());
    let warm = (0..WARM_ROWS)
        .map(|n| request(&key, &format!("{run}w"), n, now_ms()))
        .collect();
    send(origin.port, warm, o.connections, None)?;
    // Signed for about when each is due, as the edge signs at forwarding: a paced run longer
    // than the origin's signature window (`MAX_SKEW_MS`, five minutes) stays within it.
    let built = now_ms();
    let due_ms = |n: usize| {
        o.rate.map_or(0, |r| {
            u64::try_from(n.saturating_mul(1000) / r.max(1)).unwrap_or(u64::MAX)
        })
    };
    let requests: Vec<Vec<u8>> = (0..o.rows)
        .map(|n| request(&key, &run, n, built.saturating_add(due_ms(n))))
        .collect();
    let count = |port| get(port, "/v1/count").map(|v| v["count"].as_u64().unwrap_or(0));
    let commits = |port| get(port, "/v1/load").map(|v| v["store"]["commits"].as_u64().unwrap_or(0));
    let pid = origin.child.id();
    let commits_before = commits(origin.ops_port)?;
    let (rows_before, (cpu_before, threads_before)) = (count(origin.ops_port)?, cpu_seconds(pid)?);
    let started = Instant::now();
    let latencies = send(origin.port, requests, o.connections, o.rate)?;
    let elapsed = started.elapsed().as_secs_f64();
    let (cpu_after, threads_after) = cpu_seconds(pid)?;
    let stored = count(origin.ops_port)? - rows_before;
    let commits = commits(origin.ops_port)?.saturating_sub(commits_before);
    drop(origin);
    let _ = std::fs::remove_dir_all(&dir);
    if stored != o.rows as u64 {
        return Err(format!("{stored} rows stored of {}", o.rows));
    }
    let per_row = |seconds: f64| seconds * 1e6 / stored as f64;
    let by_thread = threads_after
        .into_iter()
        .map(|(name, after)| {
            let before = threads_before.get(&name).copied().unwrap_or(0.0);
            (name, per_row(after - before))
        })
        .collect();
    Ok(Round {
        per_row: per_row(cpu_after - cpu_before),
        by_thread,
        rate: stored as f64 / elapsed,
        commits,
        per_commit: (cpu_after - cpu_before) * 1e6 / commits.max(1) as f64,
        p50_ms: quantile_ms(&latencies, 0.5),
        p99_ms: quantile_ms(&latencies, 0.99),
    })
}

fn main() {
    let o = match options() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("origin-bench: {e}");
            std::process::exit(2);
        }
    };
    println!(
        "origin CPU per stored row: {} rows over {} keep-alive connections at {}, {} rounds, durability {}",
        o.rows,
        o.connections,
        o.rate.map_or("full speed".into(), |r| format!("{r}/s")),
        o.rounds,
        o.durability
    );
    let mut results = Vec::new();
    for index in 0..o.rounds {
        match round(&o, index) {
            Ok(r) => {
                let threads: Vec<String> = r
                    .by_thread
                    .iter()
                    .map(|(name, us)| format!("{name} {us:.1}"))
                    .collect();
                println!(
                    "  round {index}: {:.1} µs CPU per row ({}), {:.0} rows/s, {:.1} rows per commit, {:.0} µs CPU per commit, answers p50 {:.2} ms p99 {:.2} ms",
                    r.per_row,
                    threads.join(", "),
                    r.rate,
                    o.rows as f64 / r.commits.max(1) as f64,
                    r.per_commit,
                    r.p50_ms,
                    r.p99_ms
                );
                results.push(r.per_row);
            }
            Err(e) => {
                eprintln!("origin-bench: round {index}: {e}");
                std::process::exit(1);
            }
        }
    }
    results.sort_by(f64::total_cmp);
    if let Some(median) = results.get(results.len() / 2) {
        println!("  median: {median:.1} µs CPU per row");
    }
}
