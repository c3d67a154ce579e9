//! The PostgreSQL store's schema as the origin makes it at start: created once under its
//! advisory lock when a region's origins start together on an empty database, and migrated from
//! the schema before the person digest. Run by the Postgres tier of `bash scripts/test`
//! (`--ignored`, with `HARBOUR_TEST_PG_ADMIN` naming the throwaway cluster).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{fresh_pg_database, get, Entry, Origin, Pg, PgBarrier};

fn receipt_id(reply: &common::Response) -> String {
    reply.json()["receipt"]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("no receipt: {} {}", reply.status, reply.body))
        .to_owned()
}

/// Two origins started at once on an empty database, their first connections (the migration's)
/// held by a relay and let through together so both migrations begin at the same instant: both
/// come up, the schema is made once, and both store into the one table.
#[test]
#[ignore = "needs PostgreSQL: run by the postgres tier of bash scripts/test"]
fn two_origins_starting_at_once_on_an_empty_database_make_the_schema_once_and_both_store() {
    let url = fresh_pg_database("migrate_race");
    // The origin's pool gives up on a connection after 2 s: release before that.
    let barrier = PgBarrier::new(&url, 2, Duration::from_millis(1500));
    let mut origins = [
        Origin::spawn(&barrier.url, &[]),
        Origin::spawn(&barrier.url, &[]),
    ];
    for origin in &mut origins {
        origin.wait_ready();
    }
    assert!(
        barrier.lined_up(),
        "the two origins' first connections did not arrive within 1.5 s of each other: the race was not run"
    );
    let pg = Pg::connect(&url);
    assert_eq!(
        pg.value::<i64>("SELECT count(*) FROM harbour_schema"),
        1,
        "one migration recorded"
    );
    assert_eq!(
        pg.value::<i64>(
            "SELECT count(*) FROM pg_class WHERE relname = 'submissions' AND relkind = 'r'"
        ),
        1
    );
    // Each stores an entry of its own, then finds the other's: both write the one table.
    let entries = [
        Entry::new("migrate-race-key-a-0123", "race.a@example.org"),
        Entry::new("migrate-race-key-b-0123", "race.b@example.org"),
    ];
    let receipts: Vec<String> = origins
        .iter()
        .zip(&entries)
        .map(|(origin, entry)| {
            let reply = origin.submit(entry);
            assert_eq!(reply.status, 201, "{}", reply.body);
            receipt_id(&reply)
        })
        .collect();
    for (i, origin) in origins.iter().enumerate() {
        let other = 1 - i;
        let reply = origin.submit(&entries[other]);
        assert_eq!(reply.status, 200, "{}", reply.body);
        assert_eq!(receipt_id(&reply), receipts[other]);
    }
    assert_eq!(pg.value::<i64>("SELECT count(*) FROM submissions"), 2);
}

/// The table as it was before the person digest (schema version 0): no `person_digest` column
/// and no unique person constraint.
const SCHEMA_0: &str = "CREATE TABLE submissions (
    seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    receipt_id TEXT NOT NULL UNIQUE,
    region TEXT NOT NULL,
    campaign TEXT NOT NULL,
    idempotency_key TEXT NOT NULL,
    fields_sha256 TEXT NOT NULL,
    platform_country TEXT NOT NULL,
    declared_country TEXT,
    payload JSONB NOT NULL,
    stored_at_ms BIGINT NOT NULL,
    CONSTRAINT submissions_key UNIQUE (campaign, idempotency_key)
)";

/// A schema-0 database holding `entry` as today's origin stores it (its row copied over, less
/// the digest), so its fields hash is the origin's own; the entry's receipt id.
fn schema_0_database_with(entry: &Entry, version_row: bool) -> (String, String) {
    let scratch = fresh_pg_database("v0_source");
    let receipt = {
        let origin = Origin::start(&scratch, &[]);
        let reply = origin.submit(entry);
        assert_eq!(reply.status, 201, "{}", reply.body);
        receipt_id(&reply)
    };
    let row = Pg::connect(&scratch)
        .query(
            "SELECT receipt_id, region, campaign, idempotency_key, fields_sha256,
                platform_country, declared_country, payload::text, stored_at_ms
             FROM submissions",
            &[],
        )
        .remove(0);
    let url = fresh_pg_database("v0");
    let pg = Pg::connect(&url);
    pg.batch(SCHEMA_0);
    if version_row {
        pg.batch("CREATE TABLE harbour_schema (version INTEGER NOT NULL); INSERT INTO harbour_schema VALUES (0);");
    }
    let text = |i: usize| row.get::<_, Option<String>>(i);
    let stored_at_ms: i64 = row.get(8);
    pg.query(
        "INSERT INTO submissions (receipt_id, region, campaign, idempotency_key, fields_sha256,
            platform_country, declared_country, payload, stored_at_ms)
         VALUES ($1, $2, $3, $4, $5, $6, $7, CAST($8::text AS jsonb), $9)",
        &[
            &text(0),
            &text(1),
            &text(2),
            &text(3),
            &text(4),
            &text(5),
            &text(6),
            &text(7),
            &stored_at_ms,
        ],
    );
    (url, receipt)
}

/// A database of schema version 0 with one entry (with no version row, and with version 0
/// recorded): the origin migrates it at start, the old entry's key replays its receipt, one
/// entry per person holds for entries made afterwards, and a restart finds the schema current.
#[test]
#[ignore = "needs PostgreSQL: run by the postgres tier of bash scripts/test"]
fn a_database_from_before_the_person_digest_is_migrated_at_start_postgres() {
    for version_row in [false, true] {
        let old = Entry::new("schema-0-old-key-0123", "before@example.org");
        let (url, old_receipt) = schema_0_database_with(&old, version_row);
        let origin = Origin::start(&url, &[]);
        let pg = Pg::connect(&url);
        assert_eq!(
            pg.value::<i64>(
                "SELECT count(*) FROM information_schema.columns
                 WHERE table_name = 'submissions' AND column_name = 'person_digest'"
            ),
            1,
            "version row {version_row}: person_digest added at start"
        );
        let replay = origin.submit(&old);
        assert_eq!(
            (replay.status, receipt_id(&replay)),
            (200, old_receipt.clone()),
            "version row {version_row}: the old entry replays its receipt"
        );
        let first = origin.submit(&Entry::new("schema-0-new-key-a-01", "after@example.org"));
        assert_eq!(
            first.status, 201,
            "version row {version_row}: {}",
            first.body
        );
        let mut again = Entry::new("schema-0-new-key-b-01", "After@Example.org");
        again.fields["name"] = "Someone Else".into();
        let second = origin.submit(&again);
        assert_eq!(
            (second.status, second.json()["code"].as_str()),
            (409, Some("already_entered")),
            "version row {version_row}: {}",
            second.body
        );
        assert_eq!(get(origin.ops_port, "/v1/count").json()["count"], 2);
        drop(origin);
        // Started again, the origin finds the schema current and the rows where they were.
        let restarted = Origin::start(&url, &[]);
        let replay = restarted.submit(&old);
        assert_eq!((replay.status, receipt_id(&replay)), (200, old_receipt));
        assert_eq!(get(restarted.ops_port, "/v1/count").json()["count"], 2);
    }
}
