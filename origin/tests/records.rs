//! A region's records through `harbour-entries`, run as a process against a store a real origin
//! filled: the record of consent, access, erasure, withdrawal of marketing consent, export, and
//! the refusals. Every store-dependent test runs on SQLite and, in the Postgres tier of
//! `bash scripts/test` (`--ignored`), on PostgreSQL.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod dpo;

use std::path::{Path, PathBuf};

use serde_json::Value;

use dpo::{
    entries, fields, per_region, policy_file, Kind, RegionOrigin, Spec, Stores, CLOSED, OPEN,
};

/// spring: closed, kept ten years, drawn per region; autumn: open.
fn two_campaigns(dir: &Path) -> PathBuf {
    policy_file(
        dir,
        "policy.json",
        &[
            Spec {
                id: "spring",
                ends: CLOSED,
                retention_days: 3650,
                draw: per_region(3),
            },
            Spec {
                id: "autumn",
                ends: OPEN,
                retention_days: 30,
                draw: per_region(3),
            },
        ],
    )
}

fn notice_version(policy: &Path, campaign: &str, locale: &str) -> String {
    let policy = harbour_policy::Policy::parse(&std::fs::read_to_string(policy).unwrap()).unwrap();
    policy
        .campaign(campaign)
        .unwrap()
        .notice_version(locale)
        .to_owned()
}

/// The arguments every command of these tests takes: region eu, `store`, `policy`, `campaign`.
fn base<'a>(command: &'a str, store: &'a str, policy: &'a str, campaign: &'a str) -> Vec<&'a str> {
    vec![
        command,
        "--region",
        "eu",
        "--store",
        store,
        "--policy",
        policy,
        "--campaign",
        campaign,
    ]
}

fn with<'a>(mut args: Vec<&'a str>, more: &[&'a str]) -> Vec<&'a str> {
    args.extend_from_slice(more);
    args
}

fn access_and_erasure(kind: Kind) {
    let stores = Stores::new(kind, "access");
    let policy = two_campaigns(&stores.dir);
    let store = stores.store("eu");
    let origin = RegionOrigin::start("eu", &store, &policy);
    let version = notice_version(&policy, "spring", "de");
    let ada = origin.submit(
        "spring",
        fields("Ada", "ada@example.org", Some(true)),
        Some(("de", &version)),
    );
    let bob = origin.submit("spring", fields("Bob", "bob@example.org", None), None);
    origin.submit("autumn", fields("Ada", "ada@example.org", None), None);
    let (p, s) = (policy.display().to_string(), store.as_str());
    let access = |email: &str| entries(&with(base("access", s, &p, "spring"), &["--email", email]));

    // Found by the address spelled otherwise: the origin's normalisation and key.
    let found = access("  ADA@Example.ORG ").json();
    let list = found["entries"].as_array().unwrap();
    assert_eq!(list.len(), 1, "{found}");
    assert_eq!(list[0]["receipt_id"], ada.as_str());
    assert_eq!(list[0]["fields"]["email"], "ada@example.org");
    assert_eq!(list[0]["fields"]["name"], "Ada");
    // The record of consent: the notice the visitor was shown, stored with the entry.
    assert_eq!(list[0]["notice"]["locale"], "de");
    assert_eq!(list[0]["notice"]["version"], version.as_str());
    assert!(
        found.to_string().find("person").is_none(),
        "no digest shown: {found}"
    );

    let erased = entries(&with(
        base("erase", s, &p, "spring"),
        &["--email", "Ada@example.org"],
    ))
    .json();
    assert_eq!(erased["erased"], 1, "{erased}");
    assert_eq!(
        access("ada@example.org").json()["entries"],
        Value::Array(vec![])
    );
    // Only Ada's entry, only in this campaign.
    assert_eq!(
        access("bob@example.org").json()["entries"][0]["receipt_id"],
        bob.as_str()
    );
    let autumn = entries(&with(
        base("access", s, &p, "autumn"),
        &["--email", "ada@example.org"],
    ));
    assert_eq!(autumn.json()["entries"].as_array().unwrap().len(), 1);
    assert_eq!(origin.count(), 2);

    // The erasure record: when, where, how many; nothing of the person.
    let records = entries(&base("erasures", s, &p, "spring")).lines();
    assert_eq!(records.len(), 1, "{records:?}");
    let record: Value = serde_json::from_str(&records[0]).unwrap();
    assert_eq!(record["entries"], 1);
    assert_eq!(record["campaign"], "spring");
    assert_eq!(record["region"], "eu");
    assert_eq!(record["at_ms"], erased["at_ms"]);
    let keys: Vec<&String> = record.as_object().unwrap().keys().collect();
    assert_eq!(keys, ["at_ms", "campaign", "entries", "region"]);
    if let Kind::Sqlite = kind {
        assert_eq!(erased["log_truncated"], true, "{erased}");
        // Neither the file nor its log holds Ada's entry any more (Bob's is still there).
        let bytes = |suffix: &str| std::fs::read(format!("{store}{suffix}")).unwrap_or_default();
        let all = [bytes(""), bytes("-wal")].concat();
        let holds = |needle: &str| all.windows(needle.len()).any(|w| w == needle.as_bytes());
        assert!(holds("bob@example.org"), "the check can see a stored entry");
        assert!(!holds(&ada), "Ada's spring receipt id is still in the file");
    }
    // Asked again: nothing left, and the request is recorded too.
    let again = entries(&with(
        base("erase", s, &p, "spring"),
        &["--email", "ada@example.org"],
    ));
    assert_eq!(again.json()["erased"], 0);
    assert_eq!(entries(&base("erasures", s, &p, "spring")).lines().len(), 2);
}

#[test]
fn access_finds_a_person_by_any_spelling_and_erasure_leaves_only_a_record_sqlite() {
    access_and_erasure(Kind::Sqlite);
}

#[test]
#[ignore = "needs PostgreSQL: run by the postgres tier of bash scripts/test"]
fn access_finds_a_person_by_any_spelling_and_erasure_leaves_only_a_record_postgres() {
    access_and_erasure(Kind::Postgres);
}

/// The entries of `campaign` as JSON lines, by receipt id.
fn exported(store: &str, policy: &str, campaign: &str) -> Vec<Value> {
    entries(&with(
        base("export", store, policy, campaign),
        &["--format", "jsonl"],
    ))
    .lines()
    .iter()
    .map(|l| serde_json::from_str(l).unwrap())
    .collect()
}

fn marketing_consent_and_withdrawal(kind: Kind) {
    let stores = Stores::new(kind, "withdraw");
    let policy = two_campaigns(&stores.dir);
    let store = stores.store("eu");
    let origin = RegionOrigin::start("eu", &store, &policy);
    let p = policy.display().to_string();
    // Carol leaves the marketing box empty, Dave ticks it.
    let carol = origin.submit("spring", fields("Carol", "carol@example.org", None), None);
    let dave_fields = fields("Dave", "dave@example.org", Some(true));
    let dave_key = "records-withdraw-dave-0123456789";
    let first = origin.send_with_key("spring", dave_key, dave_fields.clone(), None);
    assert_eq!(first.status, 201, "{}", first.body);
    let dave = first.json()["receipt"]["id"].as_str().unwrap().to_owned();
    let before = exported(&store, &p, "spring");
    assert_eq!(before.len(), 2);
    let by_id = |rows: &[Value], id: &str| {
        rows.iter()
            .find(|r| r["receipt_id"] == id)
            .cloned()
            .unwrap()
    };
    assert!(by_id(&before, &carol)["fields"].get("marketing").is_none());
    assert_eq!(by_id(&before, &dave)["fields"]["marketing"], true);

    let withdrawn = entries(&with(
        base("withdraw", &store, &p, "spring"),
        &["--email", " DAVE@example.org"],
    ))
    .json();
    assert_eq!(
        (withdrawn["withdrawn"].as_u64(), withdrawn["field"].as_str()),
        (Some(1), Some("marketing"))
    );
    let after = exported(&store, &p, "spring");
    let dave_row = by_id(&after, &dave);
    assert_eq!(dave_row["fields"]["marketing"], false);
    assert_eq!(dave_row["marketing_withdrawn_ms"], withdrawn["at_ms"]);
    assert_eq!(
        dave_row["fields"]["name"], "Dave",
        "the rest of the entry as it was"
    );
    assert_eq!(
        by_id(&after, &carol),
        by_id(&before, &carol),
        "Carol's entry untouched"
    );
    // The CSV export shows it too.
    let csv = entries(&base("export", &store, &p, "spring")).stdout;
    let dave_line = csv.lines().find(|l| l.starts_with(&dave)).unwrap();
    assert!(dave_line.ends_with(",false"), "{dave_line}");
    assert!(
        dave_line.contains(&format!(",{},", withdrawn["at_ms"])),
        "{dave_line}"
    );
    // Withdrawing again keeps the first time.
    std::thread::sleep(std::time::Duration::from_millis(5));
    entries(&with(
        base("withdraw", &store, &p, "spring"),
        &["--email", "dave@example.org"],
    ))
    .json();
    assert_eq!(
        by_id(&exported(&store, &p, "spring"), &dave)["marketing_withdrawn_ms"],
        withdrawn["at_ms"]
    );
    // The edge retrying Dave's original submission still gets its receipt back.
    let retry = origin.send_with_key("spring", dave_key, dave_fields, None);
    assert_eq!(
        (retry.status, retry.json()["receipt"]["id"].as_str()),
        (200, Some(dave.as_str()))
    );
}

#[test]
fn an_entry_without_marketing_consent_is_stored_and_a_withdrawal_is_recorded_sqlite() {
    marketing_consent_and_withdrawal(Kind::Sqlite);
}

#[test]
#[ignore = "needs PostgreSQL: run by the postgres tier of bash scripts/test"]
fn an_entry_without_marketing_consent_is_stored_and_a_withdrawal_is_recorded_postgres() {
    marketing_consent_and_withdrawal(Kind::Postgres);
}

fn export_one_campaign(kind: Kind) {
    let stores = Stores::new(kind, "export");
    let policy = two_campaigns(&stores.dir);
    let store = stores.store("eu");
    let origin = RegionOrigin::start("eu", &store, &policy);
    let p = policy.display().to_string();
    let mut spring: Vec<String> = (0..5)
        .map(|i| {
            origin.submit(
                "spring",
                fields(&format!("S {i}"), &format!("s{i}@example.org"), None),
                None,
            )
        })
        .collect();
    let autumn: Vec<String> = (0..2)
        .map(|i| {
            origin.submit(
                "autumn",
                fields(&format!("A {i}"), &format!("a{i}@example.org"), None),
                None,
            )
        })
        .collect();
    let csv = entries(&base("export", &store, &p, "spring"));
    let lines = csv.lines();
    assert_eq!(
        lines[0],
        "receipt_id,region,stored_at_ms,platform_country,declared_country,notice_locale,notice_version,marketing_withdrawn_ms,name,email,country,consent,marketing"
    );
    let mut ids: Vec<String> = lines[1..]
        .iter()
        .map(|l| l.split(',').next().unwrap().to_owned())
        .collect();
    let rows = exported(&store, &p, "spring");
    // Stable order: by when stored, then receipt id; the same each time.
    let order: Vec<(u64, String)> = rows
        .iter()
        .map(|r| {
            (
                r["stored_at_ms"].as_u64().unwrap(),
                r["receipt_id"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let mut sorted = order.clone();
    sorted.sort();
    assert_eq!(order, sorted);
    assert_eq!(
        order.iter().map(|(_, id)| id.clone()).collect::<Vec<_>>(),
        ids
    );
    assert_eq!(
        entries(&base("export", &store, &p, "spring")).stdout,
        csv.stdout
    );
    // Every entry of the campaign, nothing of the other.
    ids.sort();
    spring.sort();
    assert_eq!(ids, spring);
    for id in &autumn {
        assert!(
            !csv.stdout.contains(id.as_str()),
            "{id} of autumn in spring's export"
        );
    }
    assert_eq!(exported(&store, &p, "autumn").len(), 2);
    assert!(rows
        .iter()
        .all(|r| r["region"] == "eu" && r["campaign"] == "spring"));
}

#[test]
fn export_prints_every_entry_of_its_campaign_and_nothing_of_another_sqlite() {
    export_one_campaign(Kind::Sqlite);
}

#[test]
#[ignore = "needs PostgreSQL: run by the postgres tier of bash scripts/test"]
fn export_prints_every_entry_of_its_campaign_and_nothing_of_another_postgres() {
    export_one_campaign(Kind::Postgres);
}

#[test]
fn every_command_refuses_what_its_region_does_not_hold() {
    let stores = Stores::new(Kind::Sqlite, "refusals");
    let policy = two_campaigns(&stores.dir);
    let store = stores.store("eu");
    let origin = RegionOrigin::start("eu", &store, &policy);
    origin.submit("spring", fields("Ada", "ada@example.org", None), None);
    let p = policy.display().to_string();
    let run = |args: &[&str]| entries(args);
    let as_region = |region: &'static str, command: &'static str| {
        let mut args = base(command, &store, &p, "spring");
        args[2] = region;
        args
    };
    run(&base("export", &store, &p, "winter")).refused(&["campaign winter is not in the policy"]);
    run(&as_region("mars", "export")).refused(&["region mars is not in the policy"]);
    // The EU's store opened as China's: refused, nothing printed.
    run(&as_region("cn", "export")).refused(&["holds region eu's entries", "not region cn's"]);
    run(&with(
        as_region("cn", "access"),
        &["--email", "ada@example.org"],
    ))
    .refused(&["holds region eu's"]);
    let missing = stores.dir.join("nowhere.sqlite").display().to_string();
    run(&base("export", &missing, &p, "spring")).refused(&["no SQLite store at", "nowhere.sqlite"]);
    assert!(
        !stores.dir.join("nowhere.sqlite").exists(),
        "no empty store made"
    );
    run(&with(
        base("entry", &store, &p, "spring"),
        &["--receipt", "cn-0123456789abcdef"],
    ))
    .refused(&["cn-0123456789abcdef is not a receipt id of region eu"]);
    run(&with(
        base("entry", &store, &p, "spring"),
        &["--receipt", "eu-0123456789abcdef"],
    ))
    .refused(&["no entry", "eu-0123456789abcdef"]);
    run(&with(
        base("access", &store, &p, "spring"),
        &["--name", "Ada"],
    ))
    .refused(&["--name is not an identifying field of campaign spring (--email)"]);
    run(&base("access", &store, &p, "spring")).refused(&["identifies a person by --email"]);
    run(&with(
        base("export", &store, &p, "spring"),
        &["--emial", "x"],
    ))
    .refused(&["unknown option --emial"]);
    // The person key from the environment only: another variable, unset, is refused by name.
    run(&with(
        base("access", &store, &p, "spring"),
        &["--email", "a@b.c", "--person-key-env", "NO_SUCH_KEY"],
    ))
    .refused(&["NO_SUCH_KEY is not set"]);
    let draw =
        |campaign: &'static str| with(base("draw", &store, &p, campaign), &["--seed", "published"]);
    run(&draw("autumn")).refused(&["campaign autumn closes at 2099-01-01T00:00:00.000Z"]);
    run(&with(
        base("candidates", &store, &p, "spring"),
        &["--seed", "s"],
    ))
    .refused(&["draws per region"]);
    run(&base("draw", &store, &p, "spring")).refused(&["--seed is required"]);
}
