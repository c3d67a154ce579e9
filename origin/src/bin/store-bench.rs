//! Store throughput on this machine: SQLite with `synchronous=FULL`, SQLite with `NORMAL`, and
//! PostgreSQL, side by side in one run, through the origin's own `Store` (the code a submission
//! goes through after its signature is checked).
//!
//! `store-bench [--rows N] [--callers C] [--seconds S] [--commit-window S] [--postgres URL]`
//!
//! For each store: C concurrent callers store distinct submissions until N rows or S seconds
//! (saturation: rows/s, and p50/p99 of a store call including its wait for the store), then the
//! same with 64 callers (the broadcast goal is stated at 64), then one caller at a time for N/10
//! rows (p50/p99 of an uncontended call). "rows/commit" is batching at work: the submissions
//! answered per committed transaction (SQLite's writer, PostgreSQL's batch statements). "sqlite
//! FULL, 2 writers" is two stores on one file, the callers split between them: the writers of a
//! region's two origin processes taking SQLite's write lock in turn. "postgres, 1 row/batch" is
//! the same code with one-row batches and a batcher per caller: one autocommit statement per
//! submission, as many at once as there are callers, the server grouping their WAL flushes, the
//! shape the origin had before batching (which skipped the queue, and measured 15-20 % faster
//! than this line at 16 callers). The last line is
//! SQLite FULL's rate over PostgreSQL's (as shipped) at each caller count. Durability is never
//! lowered: FULL syncs every commit before any receipt of its batch is given, PostgreSQL runs
//! with `synchronous_commit` on. SQLite files go to a fresh temporary directory; PostgreSQL
//! needs an empty database (`bash scripts/bench --store` starts a throwaway cluster and passes
//! one).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use harbour_contract::signature::sha256_hex;
use harbour_origin::store::batch::{Limits, POSTGRES_COMMIT_WINDOW};
use harbour_origin::store::postgres::Postgres;
use harbour_origin::store::{Durability, Location, Row, Store, Stored};
use harbour_origin::verify::Verified;

/// The caller count the broadcast goal is stated at.
const GOAL_CALLERS: usize = 64;

struct Options {
    rows: usize,
    callers: usize,
    seconds: u64,
    /// Both stores' `--commit-window` (seconds); each store's own unless given.
    commit_window: Option<Duration>,
    postgres: Option<String>,
}

fn options() -> Options {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let value = |flag: &str| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let number = |flag: &str, default: usize| {
        value(flag)
            .map(|v| v.parse().unwrap_or_else(|_| panic!("{flag}: not a number")))
            .unwrap_or(default)
    };
    Options {
        rows: number("--rows", 20_000),
        callers: number("--callers", 16),
        seconds: number("--seconds", 20) as u64,
        commit_window: value("--commit-window")
            .map(|v| Duration::from_secs_f64(v.parse().expect("--commit-window: seconds"))),
        postgres: value("--postgres"),
    }
}

fn submission(run: &str, n: usize) -> Verified {
    let fields = serde_json::json!({
        "consent": true, "country": "IT",
        "email": format!("bench-{run}-{n}@example.org"),
        "name": format!("Bench Visitor {n}"),
    });
    let payload = serde_json::json!({
        "campaign": "spring-launch", "fields": fields, "received_at_ms": 1_764_000_000_000u64,
        "region": "eu", "request_id": format!("r-{run}-{n}"),
        "signals": {"basis": "platform", "declared_country": "IT", "platform_country": "IT"},
    });
    Verified {
        campaign: "spring-launch".into(),
        idempotency_key: harbour_contract::key::numbered(run, n as u64),
        fields_sha256: sha256_hex(fields.to_string().as_bytes()),
        platform_country: "IT".into(),
        declared_country: Some("IT".into()),
        notice: Some(("en".into(), "e014aab9287016c0008bfb485773be83".into())),
        payload,
    }
}

struct Measured {
    callers: usize,
    rows: usize,
    elapsed: Duration,
    latencies: Vec<Duration>,
    /// Commits and the submissions they answered during the run.
    commits: (u64, u64),
}

impl Measured {
    fn percentile(&self, p: f64) -> f64 {
        let mut sorted = self.latencies.clone();
        sorted.sort();
        let index = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len().max(1)) - 1;
        sorted.get(index).map_or(0.0, |d| d.as_secs_f64() * 1000.0)
    }

    fn rate(&self) -> f64 {
        self.rows as f64 / self.elapsed.as_secs_f64()
    }

    fn line(&self, name: &str) -> String {
        let (commits, submissions) = self.commits;
        let per_commit = submissions as f64 / commits.max(1) as f64;
        format!(
            "  {name:<24} {:>7} {:>9.0} {:>8} {:>9.2} {:>9.2} {:>12.1}",
            self.callers,
            self.rate(),
            self.rows,
            self.percentile(0.50),
            self.percentile(0.99),
            per_commit,
        )
    }
}

fn commits(stores: &[Store]) -> (u64, u64) {
    stores.iter().fold((0, 0), |(c, s), store| {
        let stats = store.batch_stats();
        (c + stats.commits, s + stats.submissions)
    })
}

/// `callers` tasks (caller i on `stores[i % len]`) store rows `run`-0.. until `rows` are stored
/// or `limit` has passed.
async fn measure(
    stores: &[Store],
    run: &str,
    rows: usize,
    callers: usize,
    limit: Duration,
) -> Measured {
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let before = commits(stores);
    let started = Instant::now();
    let deadline = started + limit;
    let tasks: Vec<_> = (0..callers)
        .map(|caller| {
            let store = stores[caller % stores.len()].clone();
            let (next, run) = (next.clone(), run.to_owned());
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                loop {
                    let n = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if n >= rows || Instant::now() >= deadline {
                        break;
                    }
                    let s = submission(&run, n);
                    let person = sha256_hex(format!("{run}-{n}").as_bytes());
                    let t = Instant::now();
                    let stored = store
                        .store(Row {
                            submission: &s,
                            person: Some(&person),
                            now_ms: 1_764_000_000_000,
                        })
                        .await;
                    latencies.push(t.elapsed());
                    assert!(matches!(stored, Ok(Stored::New(_))), "{stored:?}");
                }
                latencies
            })
        })
        .collect();
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await.unwrap());
    }
    let elapsed = started.elapsed();
    let ((c, s), (c0, s0)) = (commits(stores), before);
    let commits = (c - c0, s - s0);
    Measured {
        callers,
        rows: latencies.len(),
        elapsed,
        latencies,
        commits,
    }
}

/// Saturation at each caller count, then one caller; one line each. Returns the saturated
/// rates by caller count.
async fn bench(name: &str, stores: &[Store], o: &Options) -> Vec<(usize, f64)> {
    let limit = Duration::from_secs(o.seconds);
    measure(stores, &format!("{name}-warm"), 200, o.callers, limit).await;
    let mut rates = Vec::new();
    for callers in caller_counts(o) {
        let run = format!("{name}-sat{callers}");
        let saturated = measure(stores, &run, o.rows, callers, limit).await;
        println!("{}", saturated.line(name));
        rates.push((callers, saturated.rate()));
    }
    let single = measure(stores, &format!("{name}-one"), o.rows / 10, 1, limit).await;
    println!("{}", single.line(name));
    rates
}

/// The saturation runs: `--callers`, and the goal's 64 if that is not it.
fn caller_counts(o: &Options) -> Vec<usize> {
    let mut counts = vec![o.callers];
    if o.callers != GOAL_CALLERS {
        counts.push(GOAL_CALLERS);
    }
    counts
}

async fn open(location: &Location, durability: Durability, o: &Options) -> Store {
    Store::open(
        location,
        "eu",
        durability,
        o.commit_window,
        o.callers.max(GOAL_CALLERS),
    )
    .await
    .unwrap_or_else(|e| panic!("{}: {e}", location.describe()))
}

fn main() {
    let o = options();
    let dir = std::env::temp_dir().join(format!("harbour-store-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    println!(
        "store throughput: {} callers at saturation (up to {} rows or {} s each), then one caller ({} rows); ms per store call",
        caller_counts(&o)
            .iter()
            .map(usize::to_string)
            .collect::<Vec<_>>()
            .join(" and "),
        o.rows,
        o.seconds,
        o.rows / 10
    );
    println!(
        "  {:<24} {:>7} {:>9} {:>8} {:>9} {:>9} {:>12}",
        "store", "callers", "rows/s", "rows", "p50", "p99", "rows/commit"
    );
    runtime.block_on(async {
        let full = Location::Sqlite(dir.join("full.sqlite"));
        let sqlite_full = bench(
            "sqlite FULL",
            &[open(&full, Durability::Full, &o).await],
            &o,
        )
        .await;
        let normal = Location::Sqlite(dir.join("normal.sqlite"));
        bench(
            "sqlite NORMAL",
            &[open(&normal, Durability::Normal, &o).await],
            &o,
        )
        .await;
        let shared = Location::Sqlite(dir.join("shared.sqlite"));
        let two = [
            open(&shared, Durability::Full, &o).await,
            open(&shared, Durability::Full, &o).await,
        ];
        bench("sqlite FULL, 2 writers", &two, &o).await;
        let Some(url) = &o.postgres else {
            println!("  (no --postgres URL: PostgreSQL not measured)");
            return;
        };
        let postgres = bench(
            "postgres",
            &[open(&Location::Postgres(url.clone()), Durability::Full, &o).await],
            &o,
        )
        .await;
        // The shape of the origin before batching: one autocommit statement per submission, as
        // many at once as there are callers (a connection each), the server grouping their
        // WAL flushes.
        let per_row = Postgres::connect_batching(
            url,
            "eu",
            o.callers.max(GOAL_CALLERS),
            o.callers.max(GOAL_CALLERS),
            Limits {
                max_batch: 1,
                ..Limits::with_window(POSTGRES_COMMIT_WINDOW)
            },
        )
        .await
        .unwrap();
        bench("postgres, 1 row/batch", &[Store::Postgres(per_row)], &o).await;
        let ratios: Vec<String> = sqlite_full
            .iter()
            .zip(&postgres)
            .map(|((callers, full), (_, pg))| format!("{callers} callers {:.2}", full / pg))
            .collect();
        println!(
            "  sqlite FULL rows/s ÷ postgres rows/s: {}",
            ratios.join(", ")
        );
    });
    let _ = std::fs::remove_dir_all(&dir);
}
