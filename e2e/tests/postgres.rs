//! End to end on PostgreSQL: the same stack as `tests/stack.rs` (real origins, the release
//! worker under `wrangler dev`), with each region's primary and secondary sharing one database in
//! a throwaway cluster (`scripts/pg`). Runs the scenarios whose outcome depends on the store, and
//! the database outage: PostgreSQL stopped under load and restarted.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use harbour_e2e::http::request;
use harbour_e2e::pg::{PgCluster, PgServer};
use harbour_e2e::project::workspace_root;
use harbour_e2e::proof::Prepared;
use harbour_e2e::runner::{chosen, run, Scenario};
use harbour_e2e::scenarios::{
    a_country_per_region, a_lost_answer_after_commit_gives_the_first_receipt, client,
    each_country_lands_in_its_region_only, entry, one_entry_per_person,
    same_key_twice_gives_one_row_and_one_receipt, unique,
};
use harbour_e2e::stack::{Backend, Stack};

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

/// One submission of the outage run, its work done before anything is sent.
struct Planned {
    country: String,
    region: String,
    body: String,
    prepared: Prepared,
}

/// What the senders and the one who stops the database share.
#[derive(Default)]
struct Outage {
    next: AtomicUsize,
    landed: AtomicUsize,
    down: AtomicBool,
    /// Set once the database is back: nothing waits for `down` after that.
    over: AtomicBool,
    refused_while_down: AtomicUsize,
    /// Answers from `wrangler dev`'s own proxy, not from harbour: it reloaded its worker while a
    /// POST was under way and does not retry those (see `DEV_PROXY_RESTARTED`).
    dev_proxy_restarts: AtomicUsize,
    outcomes: Mutex<Vec<Outcome>>,
}

/// How `wrangler dev`'s proxy answers a POST that was under way when it reloaded the worker (it
/// retries only GET and HEAD itself). Not harbour's answer: the client sends again with its key,
/// as after any lost answer, and the audit below still requires one row per key.
const DEV_PROXY_RESTARTED: &str = "Your worker restarted mid-request.";

/// Every submission, solved first (on every core): a solve takes seconds on a loaded machine,
/// and inside the retry loop it would decide how many attempts meet the outage.
fn plan(stack: &Stack) -> Vec<Planned> {
    let cases = a_country_per_region();
    let challenge = stack.challenge();
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    let keys: Vec<String> = (0..SUBMISSIONS)
        .map(|_| format!("outage-{:016}", unique()))
        .collect();
    let solved: Vec<Prepared> = std::thread::scope(|scope| {
        let chunks: Vec<_> = keys
            .chunks(SUBMISSIONS.div_ceil(cores))
            .map(|chunk| {
                scope.spawn(|| {
                    chunk
                        .iter()
                        .map(|k| Prepared::for_key(&challenge, k))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        chunks.into_iter().flat_map(|c| c.join().unwrap()).collect()
    });
    solved
        .into_iter()
        .enumerate()
        .map(|(i, prepared)| {
            let (country, region) = cases[i % cases.len()].clone();
            let body = entry(&country);
            Planned {
                country,
                region,
                body,
                prepared,
            }
        })
        .collect()
}

/// One sender: takes the next submission until none is left, and sends it like the campaign
/// page, again with its key on every 503, for up to 90 s. The second half waits for the
/// database to go down, so it is certainly sent into the outage; the quarter before it is in
/// flight when the database stops.
fn send_all(stack: &Stack, plan: &[Planned], outage: &Outage) {
    loop {
        let i = outage.next.fetch_add(1, Ordering::Relaxed);
        let Some(planned) = plan.get(i) else {
            break;
        };
        while i >= SUBMISSIONS / 2
            && !outage.down.load(Ordering::Relaxed)
            && !outage.over.load(Ordering::Relaxed)
        {
            std::thread::sleep(Duration::from_millis(20));
        }
        let outcome = send_until_stored(stack, planned, outage);
        outage.landed.fetch_add(1, Ordering::Relaxed);
        outage.outcomes.lock().unwrap().push(outcome);
    }
}

fn send_until_stored(stack: &Stack, planned: &Planned, outage: &Outage) -> Outcome {
    let key = planned.prepared.key.as_str();
    let mut outcome = Outcome {
        key: key.to_owned(),
        region: planned.region.clone(),
        ..Outcome::default()
    };
    let deadline = Instant::now() + Duration::from_secs(90);
    while Instant::now() < deadline {
        // A client address per attempt: the per-client limit (5 a minute) is not what this
        // test is about, and retries 300 ms apart would meet it.
        let headers = planned.prepared.headers();
        let reply = stack.submit(Some(&planned.country), &client(), &planned.body, &headers);
        outcome.statuses.push(reply.status);
        if reply.status == 202 {
            outcome.receipt = reply.json()["receipt"]["id"].as_str().map(String::from);
            break;
        }
        assert_eq!(reply.status, 503, "{}", reply.body);
        assert!(reply.header("retry-after").is_some(), "{reply:?}");
        if reply.body.starts_with(DEV_PROXY_RESTARTED) {
            outage.dev_proxy_restarts.fetch_add(1, Ordering::Relaxed);
            eprintln!("  wrangler dev reloaded its worker with {key} under way; sending it again");
            std::thread::sleep(Duration::from_millis(300));
            continue;
        }
        assert_eq!(reply.json()["idempotency_key"], key, "{reply:?}");
        if outage.down.load(Ordering::Relaxed) {
            outage.refused_while_down.fetch_add(1, Ordering::Relaxed);
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    outcome
}

/// Stops the database once a quarter of the submissions have landed, with more in flight;
/// keeps it down for a few seconds of traffic; starts it again. What the EU origins' `/health`
/// said while it was down.
fn cause_outage(stack: &Stack, cluster: &PgServer, outage: &Outage) -> Vec<(u16, bool)> {
    while outage.landed.load(Ordering::Relaxed) < SUBMISSIONS / 4 {
        std::thread::sleep(Duration::from_millis(20));
    }
    cluster.stop();
    outage.down.store(true, Ordering::Relaxed);
    let o = stack.origin("eu");
    let health: Vec<(u16, bool)> = [o.primary_ops, o.secondary_ops]
        .into_iter()
        .map(|ops| {
            let health = request(ops, "GET", "/health", &[], b"");
            (health.status, health.header("retry-after").is_some())
        })
        .collect();
    std::thread::sleep(Duration::from_secs(4));
    outage.down.store(false, Ordering::Relaxed);
    cluster.restart();
    outage.over.store(true, Ordering::Relaxed);
    health
}

/// PostgreSQL stopped (fast shutdown) while submissions flow, then started again. Each sender
/// acts like the campaign page: on 503 it waits and sends the same submission with the same key.
/// While the database is down the origins answer 503 with Retry-After and the edge tells the
/// visitor to retry with the key; after the restart every submission lands once.
fn database_outage(stack: &mut Stack, cluster: &PgServer) {
    let plan = plan(stack);
    let outage = Outage::default();
    let stack = &*stack;
    let health = std::thread::scope(|scope| {
        for _ in 0..SENDERS {
            scope.spawn(|| send_all(stack, &plan, &outage));
        }
        cause_outage(stack, cluster, &outage)
    });
    for (status, retry_after) in health {
        assert_eq!(
            (status, retry_after),
            (503, true),
            "health while the database is down"
        );
    }
    let refused = outage.refused_while_down.load(Ordering::Relaxed);
    let restarts = outage.dev_proxy_restarts.load(Ordering::Relaxed);
    eprintln!("  answers from wrangler dev's proxy reloading its worker: {restarts}");
    check_every_submission_landed_once(stack, outage.outcomes.into_inner().unwrap(), refused);
}

fn check_every_submission_landed_once(stack: &Stack, outcomes: Vec<Outcome>, refused: usize) {
    assert_eq!(outcomes.len(), SUBMISSIONS);
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
    let scenarios = chosen(scenarios());
    let started = Instant::now();
    let cluster = PgCluster::start(&workspace_root().join("target/e2e/postgres-cluster"));
    let _ = SERVER.set(cluster.server.clone());
    let stack = Stack::start_on("postgres", Backend::Postgres(&cluster));
    let ok = run(stack, started, scenarios);
    drop(cluster);
    if !ok {
        std::process::exit(1);
    }
}

fn scenarios() -> Vec<Scenario> {
    vec![
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
    ]
}
