//! The origin as a process, over HTTP: the MAC comes first, the operations routes are not on the
//! submissions listener, receipt ids are opaque, one entry per person, and two origins on one
//! database store a submission once. Every store-dependent test runs on SQLite and, in the
//! Postgres tier of `bash scripts/test` (`--ignored`), on PostgreSQL.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{fresh_pg_database, get, sqlite_store, temp_dir, Entry, Origin};

fn sqlite() -> String {
    sqlite_store(&temp_dir("http"))
}

#[test]
fn a_bad_mac_is_401_whatever_the_region_and_time() {
    let origin = Origin::start(&sqlite(), &[]);
    let forged = |region: &str, ts_offset: i64| {
        let mut e = Entry::new("forged-key-0123456789", "mallory@example.org");
        e.region_tag = region.into();
        e.signing_key = "a key the attacker made up, 32+ bytes".into();
        e.timestamp_ms = e.timestamp_ms.saturating_add_signed(ts_offset);
        origin.submit(&e)
    };
    for (region, offset) in [("cn", 0), ("eu", -3_600_000), ("cn", -3_600_000), ("eu", 0)] {
        let reply = forged(region, offset);
        assert_eq!(
            (reply.status, reply.json()["code"].as_str()),
            (401, Some("bad_signature")),
            "{region} {offset}"
        );
    }
    // Harbour's own signature (this region's key) on another region's tag: misdirected.
    let mut misdirected = Entry::new("misdirected-key-0123456789", "m@example.org");
    misdirected.region_tag = "cn".into();
    assert_eq!(origin.submit(&misdirected).status, 421);
    let mut stale = Entry::new("stale-key-0123456789", "s@example.org");
    stale.timestamp_ms -= 3_600_000;
    assert_eq!(origin.submit(&stale).json()["code"], "stale_timestamp");
    assert_eq!(get(origin.ops_port, "/v1/count").json()["count"], 0);
}

#[test]
fn operations_routes_are_not_on_the_submissions_listener() {
    let origin = Origin::start(&sqlite(), &[]);
    for path in ["/health", "/v1/count", "/metrics", "/"] {
        let reply = get(origin.port, path);
        assert_eq!(reply.status, 404, "{path}: {}", reply.body);
        assert!(!reply.body.contains("count"), "{path}: {}", reply.body);
    }
    assert_eq!(get(origin.port, "/v1/submissions").status, 405);
    let health = get(origin.ops_port, "/health");
    assert_eq!(health.status, 200);
    assert_eq!(health.json()["region"], "eu");
    assert_eq!(health.json()["store"], "sqlite");
    assert_eq!(get(origin.ops_port, "/v1/count").json()["count"], 0);
    // And the operations listener takes no submissions.
    let entry = Entry::new("ops-key-0123456789abcdef", "ops@example.org");
    assert_eq!(entry.send(origin.ops_port).status, 404);
}

fn receipts_say_nothing_about_order_or_count(store: &str) {
    let origin = Origin::start(store, &[]);
    let ids: Vec<String> = (0..200)
        .map(|i| {
            let reply = origin.submit(&Entry::new(
                &format!("order-key-{i:012}"),
                &format!("order{i}@example.org"),
            ));
            assert_eq!(reply.status, 201, "{}", reply.body);
            reply.json()["receipt"]["id"].as_str().unwrap().to_owned()
        })
        .collect();
    let values: Vec<u64> = ids
        .iter()
        .map(|id| {
            assert!(harbour_origin::receipt::is_receipt_id("eu", id), "{id}");
            u64::from_str_radix(&id[3..], 16).unwrap()
        })
        .collect();
    let distinct: std::collections::BTreeSet<_> = values.iter().collect();
    assert_eq!(distinct.len(), values.len(), "ids repeat");
    // Sequential ids would rise every time and start near zero; random ones rise about half the
    // time (200 draws: outside 30–70 % by chance with odds below one in a billion).
    let rises = values.windows(2).filter(|w| w[1] > w[0]).count();
    assert!(
        (60..=140).contains(&rises),
        "{rises} of 199 consecutive ids rose"
    );
    let small = values.iter().filter(|v| **v < 1 << 40).count();
    assert!(small < 3, "{small} ids are small numbers: {:?}", &ids[..3]);
}

#[test]
fn receipts_say_nothing_about_order_or_count_sqlite() {
    receipts_say_nothing_about_order_or_count(&sqlite());
}

#[test]
#[ignore = "needs PostgreSQL: run by the postgres tier of bash scripts/test"]
fn receipts_say_nothing_about_order_or_count_postgres() {
    receipts_say_nothing_about_order_or_count(&fresh_pg_database("order"));
}

/// A policy with the shipped campaign and a second one with the same fields and rule.
fn two_campaign_policy(dir: &std::path::Path) -> String {
    let mut policy: serde_json::Value =
        serde_json::from_str(harbour_policy::SHIPPED_POLICY).unwrap();
    let mut autumn = policy["campaigns"][0].clone();
    autumn["id"] = "autumn-draw".into();
    policy["campaigns"].as_array_mut().unwrap().push(autumn);
    let path = dir.join("policy.json");
    std::fs::write(&path, policy.to_string()).unwrap();
    path.display().to_string()
}

fn one_entry_per_person(store: &str) {
    let dir = temp_dir("person");
    let origin = Origin::start(store, &["--policy", &two_campaign_policy(&dir)]);
    let first = origin.submit(&Entry::new("person-key-a-0123456789", "ada@example.org"));
    assert_eq!(first.status, 201, "{}", first.body);
    let receipt = first.json()["receipt"]["id"].as_str().unwrap().to_owned();

    // The same key again is a replay with the first receipt.
    let again = origin.submit(&Entry::new("person-key-a-0123456789", "ada@example.org"));
    assert_eq!(again.status, 200, "{}", again.body);
    assert_eq!(again.json()["receipt"]["id"], receipt.as_str());

    // A new key for the same person, or for a case or white-space variant of the address.
    for (key, email) in [
        ("person-key-b-0123456789", "ada@example.org"),
        ("person-key-c-0123456789", "Ada@Example.ORG"),
        ("person-key-d-0123456789", "  ada@example.org "),
        ("person-key-e-0123456789", "ADA@EXAMPLE.ORG\t"),
    ] {
        let mut entry = Entry::new(key, email);
        entry.fields["name"] = "Someone Else".into();
        let reply = origin.submit(&entry);
        assert_eq!(
            (reply.status, reply.json()["code"].as_str()),
            (409, Some("already_entered")),
            "{email:?}: {}",
            reply.body
        );
    }
    // Another person, and the same person in another campaign, are new entries.
    let other = origin.submit(&Entry::new("person-key-f-0123456789", "ada2@example.org"));
    assert_eq!(other.status, 201, "{}", other.body);
    let mut autumn = Entry::new("person-key-g-0123456789", "ada@example.org");
    autumn.campaign = "autumn-draw".into();
    assert_eq!(origin.submit(&autumn).status, 201);
    // The same key with other fields is still a key conflict, not a second entry.
    let mut changed = Entry::new("person-key-a-0123456789", "ada@example.org");
    changed.fields["name"] = "Changed".into();
    assert_eq!(
        origin.submit(&changed).json()["code"],
        "idempotency_key_reused"
    );
    assert_eq!(get(origin.ops_port, "/v1/count").json()["count"], 3);
}

#[test]
fn one_entry_per_person_sqlite() {
    one_entry_per_person(&sqlite());
}

#[test]
#[ignore = "needs PostgreSQL: run by the postgres tier of bash scripts/test"]
fn one_entry_per_person_postgres() {
    one_entry_per_person(&fresh_pg_database("person"));
}

/// Issue 23: after `adaX@example.org` (and `josé@…`, `bücher-laden.…`), each of these was
/// stored as a new entry. Now each is the same person (409) or no address at all (422).
fn another_spelling_of_an_address_is_the_same_person(store: &str) {
    let origin = Origin::start(store, &[]);
    let firsts = [
        "adaX@example.org",
        "jos\u{E9}@example.org",
        "ada@bücher-laden.example",
    ];
    for (n, email) in firsts.into_iter().enumerate() {
        let reply = origin.submit(&Entry::new(
            &format!("spelling-first-{n}-0123456789"),
            email,
        ));
        assert_eq!(reply.status, 201, "{email}: {}", reply.body);
    }
    let variants = [
        ("case", "ADAx@example.org", 409),
        ("fullwidth letters", "ａｄａX@example.org", 409),
        ("NFD after NFC", "jose\u{301}@example.org", 409),
        ("soft hyphen", "ada\u{AD}X@example.org", 422),
        ("variation selector", "adaX\u{FE0F}@example.org", 422),
        ("combining grapheme joiner", "ada\u{34F}X@example.org", 422),
        (
            "A-label after U-label",
            "ada@xn--bcher-laden-thb.example",
            409,
        ),
        ("fullwidth domain", "adaX@ｅｘａｍｐｌｅ.ｏｒｇ", 409),
    ];
    for (n, (what, email, status)) in variants.into_iter().enumerate() {
        let reply = origin.submit(&Entry::new(&format!("spelling-{n}-0123456789"), email));
        let (code, field) = if status == 409 {
            ("already_entered", None)
        } else {
            ("invalid_identifying_field", Some("email"))
        };
        assert_eq!(
            (
                reply.status,
                reply.json()["code"].as_str(),
                reply.json()["field"].as_str()
            ),
            (status, Some(code), field),
            "{what}: {}",
            reply.body
        );
    }
    assert_eq!(get(origin.ops_port, "/v1/count").json()["count"], 3);
}

#[test]
fn another_spelling_of_an_address_is_the_same_person_sqlite() {
    another_spelling_of_an_address_is_the_same_person(&sqlite());
}

#[test]
#[ignore = "needs PostgreSQL: run by the postgres tier of bash scripts/test"]
fn another_spelling_of_an_address_is_the_same_person_postgres() {
    another_spelling_of_an_address_is_the_same_person(&fresh_pg_database("spelling"));
}

/// Two origins on one database (a region's primary and secondary), the same submissions sent
/// to both at once: one row each, and both answers carry that row's receipt.
fn two_origins_on_one_database_store_once(store: &str) {
    let (a, b) = (Origin::start(store, &[]), Origin::start(store, &[]));
    let entries: Vec<Entry> = (0..40)
        .map(|i| {
            Entry::new(
                &format!("race-key-{i:012}"),
                &format!("race{i}@example.org"),
            )
        })
        .collect();
    let answers: Vec<(u16, u16, String, String)> = std::thread::scope(|scope| {
        let handles: Vec<_> = entries
            .iter()
            .map(|entry| {
                let (pa, pb) = (a.port, b.port);
                scope.spawn(move || {
                    let (ra, rb) = std::thread::scope(|inner| {
                        let ha = inner.spawn(|| entry.send(pa));
                        let hb = inner.spawn(|| entry.send(pb));
                        (ha.join().unwrap(), hb.join().unwrap())
                    });
                    let id = |r: &common::Response| {
                        r.json()["receipt"]["id"].as_str().unwrap_or("").to_owned()
                    };
                    (ra.status, rb.status, id(&ra), id(&rb))
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (sa, sb, ida, idb) in &answers {
        let mut statuses = [*sa, *sb];
        statuses.sort();
        assert_eq!(statuses, [200, 201], "one stores, the other replays");
        assert_eq!(ida, idb, "both answers carry the one row's receipt");
    }
    assert_eq!(get(a.ops_port, "/v1/count").json()["count"], 40);
}

#[test]
fn two_origins_on_one_database_store_once_sqlite() {
    two_origins_on_one_database_store_once(&sqlite());
}

#[test]
#[ignore = "needs PostgreSQL: run by the postgres tier of bash scripts/test"]
fn two_origins_on_one_database_store_once_postgres() {
    two_origins_on_one_database_store_once(&fresh_pg_database("race"));
}

#[test]
fn sqlite_is_synced_unless_told_otherwise_and_then_it_warns() {
    let dir = temp_dir("durability");
    let full = Origin::start(&dir.join("full.sqlite").display().to_string(), &[]);
    assert!(
        !full.log_text().contains("origin.warning"),
        "{}",
        full.log_text()
    );
    let normal = Origin::start(
        &dir.join("normal.sqlite").display().to_string(),
        &["--durability", "normal"],
    );
    assert!(
        normal.log_text().contains("power cut can lose entries"),
        "{}",
        normal.log_text()
    );
}

#[test]
fn a_policy_with_one_entry_per_person_needs_the_person_key() {
    let dir = temp_dir("person-key");
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_harbour-origin"))
        .args(["--region", "eu", "--listen", "127.0.0.1:0", "--db"])
        .arg(dir.join("eu.sqlite"))
        .env("HARBOUR_KEY_EU", common::KEY)
        .env_remove("HARBOUR_PERSON_KEY_EU")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("HARBOUR_PERSON_KEY_EU is not set"),
        "{stderr}"
    );
}

#[test]
fn the_operations_listener_counts_each_second_what_came_of_its_submissions() {
    // A bound of 0 sheds every submission: the in-flight side of the counts, at once.
    let full = Origin::start(&sqlite(), &["--max-in-flight", "0"]);
    assert_eq!(
        Entry::new("shed-key-0123456789abcdef", "s@example.org")
            .send(full.port)
            .status,
        503
    );
    let shed = get(full.ops_port, "/v1/seconds?since=0").json();
    let total = |report: &serde_json::Value, what: &str| -> u64 {
        report["seconds"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s[what].as_u64().unwrap())
            .sum()
    };
    assert_eq!((total(&shed, "received"), total(&shed, "shed")), (1, 1));
    assert_eq!(shed["bound"], 0);

    let origin = Origin::start(&sqlite(), &[]);
    let started_s = common::now_ms() / 1_000;
    let entry = Entry::new("seconds-key-0123456789abcdef", "sec@example.org");
    assert_eq!(origin.submit(&entry).status, 201);
    assert_eq!(origin.submit(&entry).status, 200);
    let reused = Entry::new("seconds-key-0123456789abcdef", "other@example.org");
    assert_eq!(origin.submit(&reused).status, 409);
    let report = get(origin.ops_port, &format!("/v1/seconds?since={started_s}")).json();
    assert_eq!(report["region"], "eu");
    assert!(report["now_s"].as_u64().unwrap() >= started_s);
    for (what, expected) in [
        ("received", 3),
        ("stored", 1),
        ("replayed", 1),
        ("refused", 1),
        ("failed", 0),
        ("shed", 0),
    ] {
        assert_eq!(total(&report, what), expected, "{what}: {report}");
    }
    let most = report["seconds"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["in_flight_max"].as_u64().unwrap())
        .max();
    assert_eq!(most, Some(1));
    // Seconds before `since` are left out; the rows are the authority, and they agree.
    let later = get(
        origin.ops_port,
        &format!("/v1/seconds?since={}", started_s + 3_600),
    )
    .json();
    assert_eq!(later["seconds"], serde_json::json!([]));
    assert_eq!(get(origin.ops_port, "/v1/count").json()["count"], 1);
}
