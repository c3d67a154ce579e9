//! Retention: an expired campaign's rows are deleted, in bounded statements, and only those;
//! a campaign not yet expired keeps its rows. With a fake clock against the store (SQLite, and
//! PostgreSQL in the Postgres tier), and in the origin process, whose background task sweeps at
//! start and logs counts only.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod dpo;

use std::time::{Duration, Instant};

use harbour_origin::retention::{log_line, sweep, Swept};
use harbour_origin::store::records::Records;
use harbour_origin::store::{Durability, Location, Row, Store, Stored};
use harbour_origin::verify::Verified;
use harbour_policy::Policy;

use dpo::{entries, fields, per_region, policy_file, Kind, RegionOrigin, Spec, Stores, OPEN};

/// `old` closed at the start of 2020 and is kept one day; `live` runs until 2099.
fn specs(old_ends: &'static str) -> [Spec; 2] {
    [
        Spec {
            id: "old",
            ends: old_ends,
            retention_days: 1,
            draw: per_region(1),
        },
        Spec {
            id: "live",
            ends: OPEN,
            retention_days: 30,
            draw: per_region(1),
        },
    ]
}

fn row(campaign: &str, n: usize) -> Verified {
    Verified {
        campaign: campaign.into(),
        idempotency_key: format!("retention-{campaign}-{n:04}-0123456789"),
        fields_sha256: format!("{n:064x}"),
        platform_country: "IT".into(),
        declared_country: None,
        notice: None,
        payload: serde_json::json!({"campaign": campaign, "fields": {"email": format!("{n}@example.org")}}),
    }
}

/// The campaigns of the rows in the store, one per row, sorted.
async fn campaigns_of_rows(location: &Location, policy: &Policy) -> Vec<String> {
    let mut records = Records::open(location, "eu").await.unwrap();
    let mut out = Vec::new();
    for campaign in &policy.campaigns {
        let mut visit = |entry: harbour_origin::store::records::StoredEntry| {
            out.push(entry.campaign);
            Ok(())
        };
        records.each(&campaign.id, &mut visit).await.unwrap();
    }
    out.sort();
    out
}

/// Runs the fake-clock test on a store of `kind` (made before the runtime starts: a fresh
/// PostgreSQL database is made on a runtime of its own).
fn with_a_fake_clock(kind: Kind) {
    let stores = Stores::new(kind, "retention");
    let path = policy_file(&stores.dir, "policy.json", &specs("2020-01-01T00:00:00Z"));
    let policy = Policy::parse(&std::fs::read_to_string(path).unwrap()).unwrap();
    let location = Location::parse(&stores.store("eu")).unwrap();
    if let Location::Sqlite(path) = &location {
        // The store makes its file; the commands' records open only an existing one.
        drop(std::fs::File::create(path).unwrap());
    }
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(expired_rows_go_and_only_those(&policy, &location));
}

async fn expired_rows_go_and_only_those(policy: &Policy, location: &Location) {
    let (policy, location) = (policy.clone(), location.clone());
    let store = Store::open(&location, "eu", Durability::Full, None, 4)
        .await
        .unwrap();
    for (campaign, rows) in [("old", 7), ("live", 2)] {
        for n in 0..rows {
            let submission = row(campaign, n);
            let stored = store
                .store(Row {
                    submission: &submission,
                    person: None,
                    now_ms: 1,
                })
                .await;
            assert!(matches!(stored, Ok(Stored::New(_))), "{stored:?}");
        }
    }
    let deadline = policy.campaign("old").unwrap().delete_after_ms();
    assert_eq!(deadline, 1_577_836_800_000 + 86_400_000);
    // A millisecond before the deadline: nothing is due.
    assert_eq!(sweep(&store, &policy, deadline - 1, 3).await, []);
    assert_eq!(store.count().await.unwrap(), 9);
    // At the deadline: old's rows go, three per statement; live's stay.
    let swept = sweep(&store, &policy, deadline, 3).await;
    let expected = Swept {
        campaign: "old".into(),
        deleted: 7,
        error: None,
    };
    assert_eq!(swept, std::slice::from_ref(&expected));
    assert_eq!(
        campaigns_of_rows(&location, &policy).await,
        ["live", "live"]
    );
    // Nothing more to do the next time.
    let again = sweep(&store, &policy, deadline + 3_600_000, 3).await;
    assert_eq!(again.iter().map(|s| s.deleted).sum::<u64>(), 0);
    // A statement deletes no more than it is allowed.
    assert_eq!(store.delete_campaign_rows("live", 1).await.unwrap(), 1);
    assert_eq!(store.count().await.unwrap(), 1);
    // What the origin logs: counts only.
    let line = log_line("eu", &expected).unwrap();
    assert_eq!(
        line,
        serde_json::json!({"msg": "origin.retention", "region": "eu", "campaign": "old", "deleted": 7})
    );
    assert_eq!(log_line("eu", &again[0]), None);
}

#[test]
fn retention_deletes_an_expired_campaigns_rows_and_only_those_sqlite() {
    with_a_fake_clock(Kind::Sqlite);
}

#[test]
#[ignore = "needs PostgreSQL: run by the postgres tier of bash scripts/test"]
fn retention_deletes_an_expired_campaigns_rows_and_only_those_postgres() {
    with_a_fake_clock(Kind::Postgres);
}

fn the_origin_deletes_expired_rows_itself(kind: Kind) {
    let stores = Stores::new(kind, "retention_origin");
    let store = stores.store("eu");
    // While both campaigns run, entries come in.
    let running = policy_file(&stores.dir, "running.json", &specs(OPEN));
    {
        let origin = RegionOrigin::start("eu", &store, &running);
        for i in 0..3 {
            origin.submit(
                "old",
                fields("Old", &format!("old{i}@example.org"), None),
                None,
            );
        }
        for i in 0..2 {
            origin.submit(
                "live",
                fields("Live", &format!("live{i}@example.org"), None),
                None,
            );
        }
        assert_eq!(origin.count(), 5);
    }
    // The policy now says `old` ended in 2020 and kept its entries a day: the restarted
    // origin's first sweep deletes them.
    let expired = policy_file(&stores.dir, "expired.json", &specs("2020-01-01T00:00:00Z"));
    let origin = RegionOrigin::start("eu", &store, &expired);
    let deadline = Instant::now() + Duration::from_secs(20);
    while origin.count() != 2 {
        assert!(
            Instant::now() < deadline,
            "not swept: {}",
            origin.log_text()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let log = origin.log_text();
    let lines: Vec<serde_json::Value> = log
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .filter(|l: &serde_json::Value| l["msg"] == "origin.retention")
        .collect();
    assert_eq!(
        lines,
        [
            serde_json::json!({"msg": "origin.retention", "region": "eu", "campaign": "old", "deleted": 3})
        ],
        "{log}"
    );
    assert!(!log.contains("example.org"), "no address in the log: {log}");
    let p = expired.display().to_string();
    let export = |campaign: &str| {
        entries(&[
            "export",
            "--region",
            "eu",
            "--store",
            &store,
            "--policy",
            &p,
            "--campaign",
            campaign,
            "--format",
            "jsonl",
        ])
        .lines()
        .len()
    };
    assert_eq!((export("old"), export("live")), (0, 2));
}

#[test]
fn the_origin_deletes_expired_rows_itself_and_logs_counts_only_sqlite() {
    the_origin_deletes_expired_rows_itself(Kind::Sqlite);
}

#[test]
#[ignore = "needs PostgreSQL: run by the postgres tier of bash scripts/test"]
fn the_origin_deletes_expired_rows_itself_and_logs_counts_only_postgres() {
    the_origin_deletes_expired_rows_itself(Kind::Postgres);
}
