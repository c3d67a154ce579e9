//! Store throughput on this machine: SQLite with `synchronous=FULL`, SQLite with `NORMAL`, and
//! PostgreSQL, side by side in one run, through the origin's own `Store` (the code a submission
//! goes through after its signature is checked).
//!
//! `store-bench [--rows N] [--callers C] [--seconds S] [--postgres URL]`
//!
//! For each store: C concurrent callers store distinct submissions until N rows or S seconds
//! (saturation: rows/s, and p50/p99 of a store call including its wait for the store), then one
//! caller at a time for N/10 rows (p50/p99 of an uncontended call). SQLite files go to a fresh
//! temporary directory; PostgreSQL needs an empty database (`bash scripts/bench --store` starts a
//! throwaway cluster and passes one).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use harbour_contract::signature::sha256_hex;
use harbour_origin::store::{Durability, Location, Row, Store, Stored};
use harbour_origin::verify::Verified;

struct Options {
    rows: usize,
    callers: usize,
    seconds: u64,
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
        rows: number("--rows", 5_000),
        callers: number("--callers", 16),
        seconds: number("--seconds", 20) as u64,
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
        idempotency_key: format!("bench-{run}-{n:012}"),
        fields_sha256: sha256_hex(fields.to_string().as_bytes()),
        platform_country: "IT".into(),
        declared_country: Some("IT".into()),
        payload,
    }
}

struct Measured {
    rows: usize,
    elapsed: Duration,
    latencies: Vec<Duration>,
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
}

/// `callers` tasks store rows `run`-0.. until `rows` are stored or `limit` has passed.
async fn measure(
    store: &Store,
    run: &str,
    rows: usize,
    callers: usize,
    limit: Duration,
) -> Measured {
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let started = Instant::now();
    let deadline = started + limit;
    let tasks: Vec<_> = (0..callers)
        .map(|_| {
            let (store, next, run) = (store.clone(), next.clone(), run.to_owned());
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
    Measured {
        rows: latencies.len(),
        elapsed: started.elapsed(),
        latencies,
    }
}

async fn bench(name: &str, location: &Location, durability: Durability, o: &Options) -> String {
    let store = Store::open(location, "eu", durability, o.callers)
        .await
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    let limit = Duration::from_secs(o.seconds);
    measure(&store, &format!("{name}-warm"), 200, o.callers, limit).await;
    let saturated = measure(&store, &format!("{name}-sat"), o.rows, o.callers, limit).await;
    let single = measure(&store, &format!("{name}-one"), o.rows / 10, 1, limit).await;
    format!(
        "  {name:<18} {:>9.0} {:>8} {:>9.2} {:>9.2} {:>11.2} {:>9.2}",
        saturated.rate(),
        saturated.rows,
        saturated.percentile(0.50),
        saturated.percentile(0.99),
        single.percentile(0.50),
        single.percentile(0.99),
    )
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
        "store throughput: {} callers at saturation (up to {} rows or {} s), then one caller ({} rows); ms per store call",
        o.callers, o.rows, o.seconds, o.rows / 10
    );
    println!(
        "  {:<18} {:>9} {:>8} {:>9} {:>9} {:>11} {:>9}",
        "store", "rows/s", "rows", "p50", "p99", "p50 alone", "p99 alone"
    );
    let mut stores = vec![
        (
            "sqlite FULL",
            Location::Sqlite(dir.join("full.sqlite")),
            Durability::Full,
        ),
        (
            "sqlite NORMAL",
            Location::Sqlite(dir.join("normal.sqlite")),
            Durability::Normal,
        ),
    ];
    match &o.postgres {
        Some(url) => stores.push((
            "postgres",
            Location::Postgres(url.clone()),
            Durability::Full,
        )),
        None => println!("  (no --postgres URL: PostgreSQL not measured)"),
    }
    for (name, location, durability) in &stores {
        let line = runtime.block_on(bench(name, location, *durability, &o));
        println!("{line}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
