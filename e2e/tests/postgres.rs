//! End to end on PostgreSQL: the same stack as `tests/stack.rs` (real origins, the release
//! worker under `wrangler dev`), with each region's primary and secondary sharing one database in
//! a throwaway cluster (`scripts/pg`). Runs the scenarios whose outcome depends on the store, and
//! the database outage: PostgreSQL stopped under load and restarted.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use harbour_e2e::scenarios::{
    a_country_per_region, a_lost_answer_after_commit_gives_the_first_receipt, client,
    each_country_lands_in_its_region_only, entry, one_entry_per_person, run,
    same_key_twice_gives_one_row_and_one_receipt, unique, Scenario,
};
use harbour_e2e::{request, workspace_root, Backend, PgCluster, PgServer, Stack};

/// What one submission of the outage run met.
#[derive(Debug, Default, Clone)]
struct Outcome {
    key: String,
    region: String,
    /// Every status it was answered, in order (0: no answer).
    statuses: Vec<u16>,
    receipt: Option<String>,
}

const SUBMISSIONS: usize = 120;
const SENDERS: usize = 16;

/// PostgreSQL stopped (fast shutdown) while submissions flow, then started again. Each sender
/// acts like the campaign page: on 503 it waits and sends the same submission with the same key.
/// While the database is down the origins answer 503 with Retry-After and the edge tells the
/// visitor to retry with the key; after the restart every submission lands once.
fn database_outage(stack: &mut Stack, cluster: &PgServer) {
    let cases = a_country_per_region();
    let plan: Vec<(String, String, String, String)> = (0..SUBMISSIONS)
        .map(|i| {
            let (country, region) = cases[i % cases.len()].clone();
            let key = format!("outage-{:016}", unique());
            (key, country.clone(), region, entry(&country))
        })
        .collect();
    let next = AtomicUsize::new(0);
    let answered = AtomicUsize::new(0);
    let down = AtomicBool::new(false);
    let outcomes = Mutex::new(Vec::new());
    let refused_while_down = AtomicUsize::new(0);
    let health_while_down = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..SENDERS {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some((key, country, region, body)) = plan.get(i) else {
                    break;
                };
                let mut outcome = Outcome {
                    key: key.clone(),
                    region: region.clone(),
                    ..Outcome::default()
                };
                let deadline = Instant::now() + Duration::from_secs(90);
                while Instant::now() < deadline {
                    // A client address per attempt: the per-client limit (5 a minute) is not
                    // what this test is about, and retries 300 ms apart would meet it.
                    let reply =
                        stack.submit(Some(country), &client(), body, &[("idempotency-key", key)]);
                    outcome.statuses.push(reply.status);
                    if reply.status == 202 {
                        outcome.receipt = reply.json()["receipt"]["id"].as_str().map(String::from);
                        break;
                    }
                    assert_eq!(reply.status, 503, "{}", reply.body);
                    assert!(reply.header("retry-after").is_some(), "{reply:?}");
                    assert_eq!(reply.json()["idempotency_key"], key.as_str());
                    if down.load(Ordering::Relaxed) {
                        refused_while_down.fetch_add(1, Ordering::Relaxed);
                    }
                    std::thread::sleep(Duration::from_millis(300));
                }
                answered.fetch_add(1, Ordering::Relaxed);
                outcomes.lock().unwrap().push(outcome);
            });
        }
        // Stop the database once a quarter of the submissions have landed, with the rest in
        // flight; keep it down for a few seconds of traffic; start it again.
        while answered.load(Ordering::Relaxed) < SUBMISSIONS / 4 {
            std::thread::sleep(Duration::from_millis(20));
        }
        cluster.stop();
        down.store(true, Ordering::Relaxed);
        let o = stack.origin("eu");
        for ops in [o.primary_ops, o.secondary_ops] {
            let health = request(ops, "GET", "/health", &[], b"");
            health_while_down
                .lock()
                .unwrap()
                .push((health.status, health.header("retry-after").is_some()));
        }
        std::thread::sleep(Duration::from_secs(4));
        down.store(false, Ordering::Relaxed);
        cluster.restart();
    });

    let outcomes = outcomes.into_inner().unwrap();
    assert_eq!(outcomes.len(), SUBMISSIONS);
    for (status, retry_after) in health_while_down.into_inner().unwrap() {
        assert_eq!(
            (status, retry_after),
            (503, true),
            "health while the database is down"
        );
    }
    let stored = stack.stored();
    let mut rows_per_key: HashMap<String, Vec<String>> = HashMap::new();
    for (region, rows) in &stored {
        for row in rows {
            assert_eq!(&row.region, region);
            rows_per_key
                .entry(row.idempotency_key.clone())
                .or_default()
                .push(row.receipt_id.clone());
        }
    }
    let (mut lost, mut duplicates, mut retried) = (0, 0, 0);
    for o in &outcomes {
        let rows = rows_per_key.get(&o.key).cloned().unwrap_or_default();
        let in_region = stored[&o.region]
            .iter()
            .filter(|r| r.idempotency_key == o.key)
            .count();
        assert_eq!(
            in_region,
            rows.len(),
            "{} stored outside {}",
            o.key,
            o.region
        );
        match (&o.receipt, rows.as_slice()) {
            (Some(receipt), [row]) => assert_eq!(receipt, row, "{}: receipt is the row's", o.key),
            (_, []) => lost += 1,
            _ => duplicates += rows.len().saturating_sub(1),
        }
        assert!(
            o.receipt.is_some(),
            "{} never landed: {:?}",
            o.key,
            o.statuses
        );
        if o.statuses.len() > 1 {
            retried += 1;
        }
    }
    let receipts = outcomes.iter().filter(|o| o.receipt.is_some()).count();
    let rows: usize = outcomes
        .iter()
        .map(|o| rows_per_key.get(&o.key).map_or(0, Vec::len))
        .sum();
    let refused = refused_while_down.load(Ordering::Relaxed);
    println!(
        "  database outage: {SUBMISSIONS} submissions, {refused} answers 503 while down, {retried} retried with their key, receipts {receipts}, rows {rows}, lost {lost}, duplicates {duplicates}"
    );
    assert!(
        refused > 0,
        "the outage was not felt: nothing was refused while down"
    );
    assert_eq!(
        (receipts, rows, lost, duplicates),
        (SUBMISSIONS, SUBMISSIONS, 0, 0)
    );
}

/// The cluster the stack's origins use, for the outage scenario to stop and restart.
static SERVER: OnceLock<PgServer> = OnceLock::new();

fn main() {
    let started = Instant::now();
    let cluster = PgCluster::start(&workspace_root().join("target/e2e/postgres-cluster"));
    let _ = SERVER.set(cluster.server.clone());
    let stack = Stack::start_on("postgres", Backend::Postgres(&cluster));
    let scenarios: Vec<Scenario> = vec![
        ("each_country_lands_in_its_region_only", |s| {
            each_country_lands_in_its_region_only(s)
        }),
        ("same_key_twice_gives_one_row_and_one_receipt", |s| {
            same_key_twice_gives_one_row_and_one_receipt(s)
        }),
        ("one_entry_per_person", |s| one_entry_per_person(s)),
        (
            "a_lost_answer_after_commit_gives_the_first_receipt",
            a_lost_answer_after_commit_gives_the_first_receipt,
        ),
        ("database_outage", |s| {
            database_outage(s, SERVER.get().expect("the cluster was started"))
        }),
    ];
    let ok = run(stack, started, scenarios);
    drop(cluster);
    if !ok {
        std::process::exit(1);
    }
}
