//! Scenarios and helpers both end-to-end suites run: `tests/stack.rs` on SQLite origins and
//! `tests/postgres.rs` on PostgreSQL origins. Each scenario uses its own client addresses and
//! content, so scenarios on one stack do not interfere.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use harbour_policy::country::Country;
use harbour_policy::Policy;

use crate::process::free_port;
use crate::proxy::AnswerSwallower;
use crate::stack::Stack;

static UNIQUE: AtomicU32 = AtomicU32::new(1);

pub fn unique() -> u32 {
    UNIQUE.fetch_add(1, Ordering::Relaxed)
}

/// A distinct client address per call, so per-client limits never couple scenarios.
pub fn client() -> String {
    let n = unique();
    format!("198.51.{}.{}", n / 250, n % 250 + 1)
}

pub fn entry(country: &str) -> String {
    let n = unique();
    format!(
        r#"{{"name":"Visitor {n}","email":"visitor{n}@example.org","country":"{country}","consent":true}}"#
    )
}

/// An entry declaring `country` whose visitor confirmed that it is stored in `region` (the
/// description's storage choice, which a declared move out of the connecting region needs).
pub fn confirmed_entry(country: &str, region: &str) -> String {
    let n = unique();
    format!(
        r#"{{"name":"Visitor {n}","email":"visitor{n}@example.org","country":"{country}","consent":true,"confirm_region":"{region}"}}"#
    )
}

pub fn counts(stack: &Stack) -> Vec<(String, usize)> {
    let stored = stack.stored();
    stack
        .origins
        .iter()
        .map(|o| (o.region.clone(), stored[&o.region].len()))
        .collect()
}

/// (visitor country, the region it belongs to) for every region of the shipped policy: the
/// first country a region lists, and a country no region lists for the rest-of-world region.
pub fn a_country_per_region() -> Vec<(String, String)> {
    let policy = Policy::shipped().unwrap();
    let mut cases: Vec<(String, String)> = policy
        .regions
        .iter()
        .filter_map(|r| Some((r.countries.first()?.as_str().to_owned(), r.id.clone())))
        .collect();
    let unlisted = Country::all()
        .find(|c| policy.regions.iter().all(|r| !r.countries.contains(c)))
        .unwrap();
    let rest_of_world = policy.region(policy.rest_of_world).id.clone();
    cases.push((unlisted.as_str().to_owned(), rest_of_world));
    cases
}

pub fn each_country_lands_in_its_region_only(stack: &Stack) {
    let cases = a_country_per_region();
    let regions: Vec<&str> = cases.iter().map(|(_, region)| region.as_str()).collect();
    for o in &stack.origins {
        assert!(
            regions.contains(&o.region.as_str()),
            "no case for {}",
            o.region
        );
    }
    for (country, region) in &cases {
        let (country, region) = (country.as_str(), region.as_str());
        let before = stack.stored();
        let reply = stack.submit(Some(country), &client(), &entry(country), &[]);
        assert_eq!(reply.status, 202, "{country}: {}", reply.body);
        let receipt = &reply.json()["receipt"];
        assert_eq!(receipt["region"], region, "{country}");
        let after = stack.stored();
        for o in &stack.origins {
            let r = o.region.as_str();
            let added = after[r].len() - before[r].len();
            assert_eq!(
                added,
                usize::from(r == region),
                "{country} added {added} row(s) to {r}"
            );
        }
        let row = after[region].last().unwrap();
        assert_eq!(row.receipt_id, receipt["id"].as_str().unwrap());
        assert_eq!(row.region, region);
        assert_eq!(row.platform_country, country);
        assert_eq!(row.payload["region"], region);
        assert_eq!(row.payload["fields"]["country"], country);
    }
}

pub fn same_key_twice_gives_one_row_and_one_receipt(stack: &Stack) {
    let key = format!("page-key-{:016}", unique());
    let body = entry("AU");
    let ip = client();
    let first = stack.submit(Some("AU"), &ip, &body, &[("idempotency-key", &key)]);
    let second = stack.submit(Some("AU"), &ip, &body, &[("idempotency-key", &key)]);
    assert_eq!(
        (first.status, second.status),
        (202, 202),
        "{} / {}",
        first.body,
        second.body
    );
    assert_eq!(first.body, second.body);
    assert_eq!(second.header("idempotent-replayed"), Some("true"));
    let rows: Vec<_> = stack.stored()["au"]
        .iter()
        .filter(|r| r.idempotency_key == key)
        .cloned()
        .collect();
    assert_eq!(rows.len(), 1);
}

/// One entry per person (the shipped campaign's `one_entry_per: ["email"]`): a second entry
/// from the same address, in any case, under a new key is a 409 `already_entered` problem and
/// stores nothing; the first key again is still a replay of the first receipt.
pub fn one_entry_per_person(stack: &Stack) {
    let n = unique();
    let ip = client();
    let key = format!("person-key-{n:016}");
    let first_body = format!(
        r#"{{"name":"Person {n}","email":"person{n}@example.org","country":"FR","consent":true}}"#
    );
    let first = stack.submit(Some("FR"), &ip, &first_body, &[("idempotency-key", &key)]);
    assert_eq!(first.status, 202, "{}", first.body);
    let receipt = first.json()["receipt"]["id"].as_str().unwrap().to_owned();
    for (i, email) in [
        format!("person{n}@example.org"),
        format!("Person{n}@Example.ORG"),
        format!("  PERSON{n}@EXAMPLE.ORG "),
    ]
    .iter()
    .enumerate()
    {
        let body =
            format!(r#"{{"name":"Someone {i}","email":"{email}","country":"FR","consent":true}}"#);
        let again_key = format!("person-key-{n:08}-{i:07}");
        let second = stack.submit(
            Some("FR"),
            &client(),
            &body,
            &[("idempotency-key", &again_key)],
        );
        assert_eq!(
            (second.status, second.json()["code"].as_str()),
            (409, Some("already_entered")),
            "{email:?}: {}",
            second.body
        );
        assert_eq!(
            second.header("content-type"),
            Some("application/problem+json")
        );
        assert!(
            second.json()["detail"]
                .as_str()
                .unwrap()
                .contains("one entry per person"),
            "{}",
            second.body
        );
    }
    let replay = stack.submit(Some("FR"), &ip, &first_body, &[("idempotency-key", &key)]);
    assert_eq!(replay.status, 202, "{}", replay.body);
    assert_eq!(replay.json()["receipt"]["id"], receipt.as_str());
    assert_eq!(replay.header("idempotent-replayed"), Some("true"));
    let rows: Vec<_> = stack.stored()["eu"]
        .iter()
        .filter(|r| {
            r.payload["fields"]["email"]
                .as_str()
                .is_some_and(|e| e.eq_ignore_ascii_case(&format!("person{n}@example.org")))
        })
        .cloned()
        .collect();
    assert_eq!(rows.len(), 1, "one row for the person");
    assert_eq!(rows[0].receipt_id, receipt);
}

/// The primary commits and its answer is lost (it never reaches the edge): the edge times out,
/// the secondary (another process on the same database) finds the row and answers with its
/// receipt. Exactly one row, and the visitor's receipt is that row's.
pub fn a_lost_answer_after_commit_gives_the_first_receipt(stack: &mut Stack) {
    let region = "au";
    let key = format!("lost-answer-{:016}", unique());
    // The work first: the clock measures the edge's wait for the primary, not the solve.
    let prepared = stack.prepared_for(&key);
    let primary = stack.origin(region).primary;
    stack.stop_origin(primary);
    let behind = free_port();
    stack.start_origin_on(primary, behind);
    let swallower = AnswerSwallower::bind(primary, behind);
    let started = Instant::now();
    let reply = stack.submit(Some("AU"), &client(), &entry("AU"), &prepared.headers());
    let waited = started.elapsed();
    let swallowed = swallower.swallowed();
    drop(swallower);
    stack.stop_origin(primary);
    stack.start_origin(primary);

    assert_eq!(reply.status, 202, "{}", reply.body);
    let receipt = reply.json()["receipt"]["id"].as_str().unwrap().to_owned();
    // The primary did store it and answered 201 with this very receipt; nobody heard.
    assert!(swallowed.starts_with("HTTP/1.1 201"), "{swallowed}");
    assert!(swallowed.contains(&receipt), "{swallowed}");
    assert_eq!(reply.header("idempotent-replayed"), Some("true"));
    let timeout = Duration::from_millis(harbour_core::attempt::ATTEMPT_TIMEOUT_MS);
    assert!(waited >= timeout, "answered after {waited:?}");
    let rows: Vec<_> = stack.stored()[region]
        .iter()
        .filter(|r| r.idempotency_key == key)
        .cloned()
        .collect();
    assert_eq!(rows.len(), 1, "exactly one row");
    assert_eq!(
        rows[0].receipt_id, receipt,
        "the visitor's receipt is the row's"
    );
    println!(
        "  lost answer: primary answered 201 (swallowed), edge waited {:.1} s, secondary replayed; rows 1, receipt {receipt}",
        waited.as_secs_f64()
    );
}
