//! The pipeline as a black box, natively: request facts in, a reply or a forward plan out.
#![cfg(not(target_arch = "wasm32"))]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use harbour_contract::http::{HEADER_IDEMPOTENCY_KEY, HEADER_SIGNATURE};
use harbour_contract::signature::SignatureHeader;
use harbour_core::attempt::AttemptResult;
use harbour_core::config::Config;
use harbour_core::phase::admission::LocationResult;
use harbour_core::phase::challenge;
use harbour_core::phase::request::{Body, Facts};
use harbour_core::pipeline::Next;
use harbour_core::pipeline::{Pipeline, Seeds, Verdict};
use harbour_core::reply::Reply;
use harbour_policy::SHIPPED_POLICY;

const SEEDS: Seeds = Seeds {
    limiter: 1,
    request_ids: 2,
    challenges: 3,
};
const NOW: u64 = 1_764_000_000_000;
const KEY: &str = "visitor-key-0123456789";
const URL: &str = "https://campaign.example/api/campaigns/spring-launch/submissions";
const VALID: &str = r#"{"name":"Ada","email":"ada@example.org","country":"IT","consent":true}"#;

/// The local configuration with 4-bit challenges, so that solving many is quick.
fn config() -> Config {
    let mut config = Config::local(SHIPPED_POLICY, 7000).unwrap();
    for campaign in &mut config.policy.campaigns {
        campaign.challenge.difficulty_bits = 4;
    }
    config
}

/// A solution for `key`, from a challenge `config` issued at `at`.
fn solved_at(key: &str, at: u64) -> &'static str {
    let config = config();
    let issued = challenge::issue(&config.form_key, &config.policy.campaigns[0], at, 42);
    let nonce = challenge::solve(&issued.token, key, issued.difficulty_bits);
    Box::leak(challenge::solution(&issued.token, &nonce).into_boxed_str())
}

/// A distinct well-formed key per call, with its solution.
fn keyed() -> (&'static str, &'static str) {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let key: &'static str = Box::leak(format!("test-key-{n:016}").into_boxed_str());
    (key, solved_at(key, NOW))
}

fn facts<'a>(
    method: &'a str,
    content_type: Option<&'a str>,
    body: Body<'a>,
    country: Option<&'a str>,
    ip: &'a str,
) -> Facts<'a> {
    let (key, solution) = keyed();
    Facts {
        method,
        url: URL,
        content_type,
        body,
        country,
        client_ip: Some(ip),
        idempotency_key: Some(key),
        challenge: Some(solution),
        origin: None,
        notice: Some(notice()),
        now_ms: NOW,
    }
}

/// The `Harbour-Notice` a page showing the campaign's English notice sends.
fn notice() -> &'static str {
    static HEADER: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    HEADER
        .get_or_init(|| harbour_policy::Policy::shipped().unwrap().campaigns[0].notice_header("en"))
}

fn reply(step: Verdict) -> Reply {
    match step {
        Verdict::Reply { reply, .. } => reply,
        Verdict::Forward { plan, .. } => panic!("forwarded to {}", plan.first.url),
        Verdict::Consult { consult, .. } => panic!("consults {}", consult.binding),
    }
}

/// A request through every phase, the location's binding admitting it.
fn admitted(pipeline: &mut Pipeline, facts: &Facts) -> Verdict {
    pipeline.request_answered(facts, LocationResult::Admitted)
}

fn code(reply: &Reply) -> String {
    reply.code().unwrap_or_default().to_owned()
}

#[test]
fn request_check_table() {
    let mut pipeline = Pipeline::new(Ok(config()), SEEDS);
    let json = Some("application/json");
    let body = Body::Bytes(VALID.as_bytes());
    let cases: Vec<(Facts, u16, &str)> = vec![
        (
            facts("GET", None, Body::Unread, Some("IT"), "192.0.2.1"),
            405,
            "method_not_allowed",
        ),
        (
            facts("DELETE", None, Body::Unread, Some("IT"), "192.0.2.1"),
            405,
            "method_not_allowed",
        ),
        (
            facts("POST", Some("text/plain"), body, Some("IT"), "192.0.2.1"),
            415,
            "unsupported_media_type",
        ),
        (
            facts("POST", None, body, Some("IT"), "192.0.2.1"),
            415,
            "unsupported_media_type",
        ),
        (
            facts(
                "POST",
                Some("application/json; charset=utf-16"),
                body,
                Some("IT"),
                "192.0.2.1",
            ),
            415,
            "unsupported_media_type",
        ),
        (
            facts("POST", json, Body::TooLarge, Some("IT"), "192.0.2.1"),
            413,
            "body_too_large",
        ),
        (
            facts(
                "POST",
                json,
                Body::Bytes(&[b' '; 9000]),
                Some("IT"),
                "192.0.2.1",
            ),
            413,
            "body_too_large",
        ),
        (
            facts("POST", json, Body::Incomplete, Some("IT"), "192.0.2.1"),
            400,
            "body_incomplete",
        ),
        (
            facts("POST", json, Body::Bytes(b"\xff"), Some("IT"), "192.0.2.1"),
            400,
            "invalid_utf8",
        ),
        (
            facts("POST", json, Body::Bytes(b"{}"), Some("IT"), "192.0.2.1"),
            422,
            "validation_failed",
        ),
        (
            facts("POST", json, body, Some("XX"), "192.0.2.1"),
            403,
            "country_unknown",
        ),
        (
            facts("POST", json, body, Some("T1"), "192.0.2.1"),
            403,
            "country_anonymised",
        ),
        (
            facts("POST", json, body, None, "192.0.2.1"),
            403,
            "country_missing",
        ),
    ];
    for (f, status, expected) in cases {
        let r = reply(admitted(&mut pipeline, &f));
        assert_eq!(
            (r.status, code(&r).as_str()),
            (status, expected),
            "{} {:?}",
            f.method,
            f.content_type
        );
    }
    let allow = reply(admitted(
        &mut pipeline,
        &facts("GET", None, Body::Unread, None, "192.0.2.1"),
    ));
    assert_eq!(allow.header("allow"), Some("POST, OPTIONS"));
    let unknown = Facts {
        url: "https://campaign.example/api/campaigns/nope/submissions",
        ..facts("POST", json, body, Some("IT"), "192.0.2.1")
    };
    assert_eq!(reply(admitted(&mut pipeline, &unknown)).status, 404);
    let elsewhere = Facts {
        url: "https://campaign.example/admin",
        ..facts("GET", None, Body::Unread, None, "192.0.2.1")
    };
    assert_eq!(reply(admitted(&mut pipeline, &elsewhere)).status, 404);
}

#[test]
fn an_invalid_policy_environment_answers_config_invalid_to_everything() {
    let broken = Config::assemble(SHIPPED_POLICY, &|_| None);
    let mut pipeline = Pipeline::new(broken, SEEDS);
    let r = reply(admitted(
        &mut pipeline,
        &facts(
            "POST",
            Some("application/json"),
            Body::Bytes(VALID.as_bytes()),
            Some("IT"),
            "192.0.2.1",
        ),
    ));
    assert_eq!((r.status, code(&r).as_str()), (500, "config_invalid"));
    assert!(
        !r.body.contains("HARBOUR_"),
        "no internals in the reply: {}",
        r.body
    );
}

#[test]
fn limits_charge_only_admitted_requests_and_refuse_with_the_wait() {
    let mut pipeline = Pipeline::new(Ok(config()), SEEDS);
    let json = Some("application/json");
    // Refused requests (here: invalid) cost the client nothing.
    for _ in 0..10 {
        let r = reply(admitted(
            &mut pipeline,
            &facts("POST", json, Body::Bytes(b"{}"), Some("IT"), "192.0.2.9"),
        ));
        assert_eq!(r.status, 422);
    }
    for i in 0..5 {
        let body =
            format!(r#"{{"name":"A","email":"a{i}@example.org","country":"IT","consent":true}}"#);
        let step = admitted(
            &mut pipeline,
            &facts(
                "POST",
                json,
                Body::Bytes(body.as_bytes()),
                Some("IT"),
                "192.0.2.9",
            ),
        );
        assert!(matches!(step, Verdict::Forward { .. }), "submission {i}");
    }
    let limited = reply(admitted(
        &mut pipeline,
        &facts(
            "POST",
            json,
            Body::Bytes(VALID.as_bytes()),
            Some("IT"),
            "192.0.2.9",
        ),
    ));
    assert_eq!(limited.status, 429);
    assert_eq!(limited.header("retry-after"), Some("12"));
    assert_eq!(
        limited.header("ratelimit-policy"),
        Some("\"client\";q=5;w=60")
    );
    // The same /64 is the same client; another /64 is not.
    let mut v6 = |ip| forwards(&mut pipeline, ip);
    assert!(v6("2001:db8:0:1::1"));
    for _ in 0..4 {
        assert!(v6("2001:db8:0:1::2"));
    }
    assert!(!v6("2001:db8:0:1:ffff::3"));
    assert!(v6("2001:db8:0:2::1"));
}

fn forwards(pipeline: &mut Pipeline, ip: &str) -> bool {
    let n = ip.len() + ip.bytes().map(usize::from).sum::<usize>();
    let body =
        format!(r#"{{"name":"B","email":"b{n}@example.org","country":"DE","consent":true}}"#);
    let f = facts(
        "POST",
        Some("application/json"),
        Body::Bytes(body.as_bytes()),
        Some("DE"),
        ip,
    );
    let f = Facts {
        now_ms: 1_764_000_000_000 + n as u64,
        ..f
    };
    matches!(admitted(pipeline, &f), Verdict::Forward { .. })
}

#[test]
fn the_forward_request_carries_only_harbours_own_headers() {
    let mut pipeline = Pipeline::new(Ok(config()), SEEDS);
    let f = Facts {
        idempotency_key: Some("client-key-0123456789abcdef"),
        challenge: Some(solved_at("client-key-0123456789abcdef", NOW)),
        ..facts(
            "POST",
            Some("application/json"),
            Body::Bytes(VALID.as_bytes()),
            Some("IT"),
            "192.0.2.20",
        )
    };
    let Verdict::Forward { plan, .. } = admitted(&mut pipeline, &f) else {
        panic!("not forwarded")
    };
    let names: Vec<&str> = plan.headers.iter().map(|(n, _)| *n).collect();
    assert_eq!(
        names,
        ["content-type", "idempotency-key", "x-harbour-signature",]
    );
    let get = |name: &str| {
        plan.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    };
    let signature = SignatureHeader::parse(get(HEADER_SIGNATURE).unwrap()).unwrap();
    assert_eq!(signature.region, "eu");
    assert_eq!(signature.timestamp_ms, f.now_ms);
    assert_eq!(signature.mac_hex.len(), 64);
    assert_eq!(
        get(HEADER_IDEMPOTENCY_KEY),
        Some("client-key-0123456789abcdef")
    );
    let body: serde_json::Value = serde_json::from_str(&plan.body).unwrap();
    assert_eq!(body["fields"]["email"], "ada@example.org");
    assert_eq!(body["signals"]["platform_country"], "IT");
    // A malformed client key cannot carry a solution (one derived from the content would let
    // one solution serve many entries): refused, whatever the work.
    let bad = "bad key\r\nx-injected: 1";
    let f = Facts {
        idempotency_key: Some(bad),
        challenge: Some(solved_at(bad, NOW)),
        client_ip: Some("192.0.2.21"),
        ..f
    };
    let refused = reply(pipeline.request(&f));
    assert_eq!(
        (refused.status, code(&refused).as_str()),
        (403, "challenge_invalid")
    );
}

#[test]
fn cors_allows_listed_origins_and_refuses_others() {
    let mut pipeline = Pipeline::new(Ok(config()), SEEDS);
    let base = facts(
        "POST",
        Some("application/json"),
        Body::Bytes(VALID.as_bytes()),
        Some("IT"),
        "192.0.2.30",
    );
    let preflight = reply(admitted(
        &mut pipeline,
        &Facts {
            method: "OPTIONS",
            origin: Some("http://127.0.0.1:8787"),
            ..base
        },
    ));
    assert_eq!(preflight.status, 204);
    assert_eq!(
        preflight.header("access-control-allow-origin"),
        Some("http://127.0.0.1:8787")
    );
    let foreign = reply(admitted(
        &mut pipeline,
        &Facts {
            origin: Some("https://evil.example"),
            ..base
        },
    ));
    assert_eq!(
        (foreign.status, code(&foreign).as_str()),
        (403, "origin_not_allowed")
    );
    let same_origin = admitted(
        &mut pipeline,
        &Facts {
            origin: Some("https://campaign.example"),
            ..base
        },
    );
    assert!(matches!(same_origin, Verdict::Forward { .. }));
}

#[test]
fn a_filled_honeypot_is_answered_like_success_and_not_forwarded() {
    let mut pipeline = Pipeline::new(Ok(config()), SEEDS);
    let body =
        r#"{"name":"Bot","email":"bot@example.org","country":"IT","consent":true,"remarks":"x"}"#;
    let r = reply(admitted(
        &mut pipeline,
        &facts(
            "POST",
            Some("application/json"),
            Body::Bytes(body.as_bytes()),
            Some("IT"),
            "192.0.2.40",
        ),
    ));
    assert_eq!(r.status, 202);
    let receipt: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(receipt["receipt"]["region"], "eu");

    // The same submission without the honeypot, stored by an origin: the visitor's receipt.
    let real_body = r#"{"name":"Bot","email":"bot@example.org","country":"IT","consent":true}"#;
    let Verdict::Forward { ticket, .. } = admitted(
        &mut pipeline,
        &facts(
            "POST",
            Some("application/json"),
            Body::Bytes(real_body.as_bytes()),
            Some("IT"),
            "192.0.2.41",
        ),
    ) else {
        panic!("not forwarded")
    };
    let origin_answer = r#"{"receipt":{"id":"eu-5f0c1d2e3a4b6978","region":"eu"}}"#;
    let received_ms = ticket.ctx.received_ms;
    let Next::Done { reply: real, .. } = pipeline.after_attempt(
        ticket,
        AttemptResult::Answered {
            status: 201,
            body: origin_answer,
        },
        received_ms + 5,
    ) else {
        panic!("not done")
    };
    // Indistinguishable by shape: status, header names, JSON keys, id format.
    assert_eq!(r.status, real.status);
    let names = |reply: &Reply| reply.headers.iter().map(|(n, _)| *n).collect::<Vec<_>>();
    assert_eq!(names(&r), names(&real));
    let real_receipt: serde_json::Value = serde_json::from_str(&real.body).unwrap();
    let keys = |v: &serde_json::Value| {
        let mut keys: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
        keys.extend(v["receipt"].as_object().unwrap().keys().cloned());
        keys
    };
    assert_eq!(keys(&receipt), keys(&real_receipt));
    let id_shape = |id: &str| {
        let (region, rest) = id.split_once('-').unwrap();
        (
            region.to_owned(),
            rest.len(),
            rest.bytes().all(|b| b.is_ascii_hexdigit()),
        )
    };
    assert_eq!(
        id_shape(receipt["receipt"]["id"].as_str().unwrap()),
        id_shape(real_receipt["receipt"]["id"].as_str().unwrap())
    );
    assert!(receipt["idempotency_key"]
        .as_str()
        .unwrap()
        .starts_with("test-key-"));
}

#[test]
fn decision_logs_carry_no_personal_data() {
    let mut pipeline = Pipeline::new(Ok(config()), SEEDS);
    let body =
        r#"{"name":"Secret Name","email":"secret@example.org","country":"IT","consent":"maybe"}"#;
    let Verdict::Reply { log, .. } = admitted(
        &mut pipeline,
        &facts(
            "POST",
            Some("application/json"),
            Body::Bytes(body.as_bytes()),
            Some("IT"),
            "203.0.113.77",
        ),
    ) else {
        panic!("forwarded")
    };
    let line = log.to_json(1_764_000_000_005);
    for secret in ["Secret", "secret@", "203.0.113.77"] {
        assert!(!line.contains(secret), "{line}");
    }
    let parsed: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(parsed["phase"], "validate");
    assert_eq!(parsed["outcome"], "validation_failed");
    assert_eq!(parsed["latency_ms"], 5);
}

#[test]
fn work_is_checked_first_and_a_request_without_it_costs_nothing() {
    let config = config();
    let mut pipeline = Pipeline::new(Ok(config.clone()), SEEDS);
    let description = reply(pipeline.request(&Facts {
        url: "https://campaign.example/api/campaigns/spring-launch?lang=de",
        ..facts("GET", None, Body::Unread, None, "192.0.2.50")
    }));
    let description: serde_json::Value = serde_json::from_str(&description.body).unwrap();
    assert_eq!(description["lang"], "de");
    let token = description["challenge"]["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let bits = description["challenge"]["difficulty_bits"]
        .as_u64()
        .unwrap() as u8;
    let json = Some("application/json");
    let submit =
        |pipeline: &mut Pipeline, body: &str, key: &str, solution: Option<&str>, at: u64| {
            admitted(
                pipeline,
                &Facts {
                    idempotency_key: Some(key),
                    challenge: solution,
                    now_ms: at,
                    ..facts(
                        "POST",
                        json,
                        Body::Bytes(body.as_bytes()),
                        Some("IT"),
                        "192.0.2.51",
                    )
                },
            )
        };
    // No work: refused before the body is read (an invalid one would be 422) and before any
    // limit is charged: the client's 5 per minute are all still there afterwards.
    for _ in 0..10 {
        let r = reply(submit(&mut pipeline, "{}", KEY, None, NOW));
        assert_eq!((r.status, code(&r).as_str()), (400, "challenge_required"));
        assert_eq!(r.header("content-type"), Some("application/problem+json"));
    }
    let answer = challenge::solution(&token, &challenge::solve(&token, KEY, bits));
    let Verdict::Forward { ticket, .. } = submit(&mut pipeline, VALID, KEY, Some(&answer), NOW)
    else {
        panic!("a solved entry was not forwarded")
    };
    // One solution buys one entry: while it is under way a resend waits, once stored a resend
    // gets its receipt from the isolate's memory, and another body under it is a reused key;
    // none of them costs a binding call or an origin.
    let waiting = reply(submit(&mut pipeline, VALID, KEY, Some(&answer), NOW + 1));
    assert_eq!(
        (waiting.status, code(&waiting).as_str()),
        (503, "entry_in_progress")
    );
    assert_eq!(waiting.header("idempotency-key"), Some(KEY));
    let stored = AttemptResult::Answered {
        status: 201,
        body: r#"{"receipt":{"id":"eu-0123456789abcdef","region":"eu"}}"#,
    };
    let Next::Done { reply: first, .. } = pipeline.after_attempt(ticket, stored, NOW + 2) else {
        panic!("stored, so done")
    };
    assert_eq!(first.status, 202);
    for i in 0..5 {
        let again = reply(submit(
            &mut pipeline,
            VALID,
            KEY,
            Some(&answer),
            NOW + 3 + i,
        ));
        assert_eq!(again.status, 202, "resend {i}");
        assert_eq!(again.body, first.body, "the first receipt");
        assert_eq!(again.header("idempotent-replayed"), Some("true"));
    }
    let other_body = r#"{"name":"B","email":"b@example.org","country":"IT","consent":true}"#;
    let reused = reply(submit(
        &mut pipeline,
        other_body,
        KEY,
        Some(&answer),
        NOW + 9,
    ));
    assert_eq!(
        (reused.status, code(&reused).as_str()),
        (409, "idempotency_key_reused")
    );
    // The solution is bound to its key: another key is refused, before the limits again.
    let other = reply(submit(
        &mut pipeline,
        VALID,
        "another-key-0123456789",
        Some(&answer),
        NOW,
    ));
    assert_eq!(
        (other.status, code(&other).as_str()),
        (403, "challenge_invalid")
    );
    // Expired: a genuine solution one millisecond after its challenge's expiry.
    let expires: u64 = token.split('.').nth(1).unwrap().parse().unwrap();
    let late = reply(submit(
        &mut pipeline,
        VALID,
        KEY,
        Some(&answer),
        expires + 1,
    ));
    assert_eq!(
        (late.status, code(&late).as_str()),
        (403, "challenge_expired")
    );
    // Stateless: another isolate (other seeds, no shared memory) takes the same solution.
    let mut elsewhere = Pipeline::new(
        Ok(config),
        Seeds {
            limiter: 7,
            request_ids: 8,
            challenges: 9,
        },
    );
    let step = submit(&mut elsewhere, VALID, KEY, Some(&answer), NOW);
    assert!(matches!(step, Verdict::Forward { .. }));
}

#[test]
fn a_day_old_form_gets_an_honest_refusal_and_a_fresh_challenge_gets_it_in() {
    // What min fill time and a 24-hour token got wrong: a tab left open for a day, or autofill
    // within a second, was answered like a success and dropped. Now both get in.
    let mut pipeline = Pipeline::new(Ok(config()), SEEDS);
    let day = 24 * 60 * 60 * 1000;
    let stale = solved_at(KEY, NOW - day);
    let send = |pipeline: &mut Pipeline, solution: &'static str, at: u64| {
        admitted(
            pipeline,
            &Facts {
                idempotency_key: Some(KEY),
                challenge: Some(solution),
                now_ms: at,
                ..facts(
                    "POST",
                    Some("application/json"),
                    Body::Bytes(VALID.as_bytes()),
                    Some("IT"),
                    "192.0.2.56",
                )
            },
        )
    };
    let refused = reply(send(&mut pipeline, stale, NOW));
    assert_eq!(
        (refused.status, code(&refused).as_str()),
        (403, "challenge_expired")
    );
    let body: serde_json::Value = serde_json::from_str(&refused.body).unwrap();
    assert_eq!(body["challenge_url"], "/api/campaigns/spring-launch");
    // The same key with a fresh solution, sent within a millisecond of the challenge.
    let fresh = solved_at(KEY, NOW);
    let Verdict::Forward { plan, .. } = send(&mut pipeline, fresh, NOW + 1) else {
        panic!("the fresh solution was not forwarded")
    };
    let key = plan
        .headers
        .iter()
        .find(|(n, _)| *n == HEADER_IDEMPOTENCY_KEY)
        .unwrap();
    assert_eq!(key.1, KEY, "the same key, so the retry cannot store twice");
}

#[test]
fn regression_a_clock_stepping_back_does_not_trip_the_limits() {
    let mut pipeline = Pipeline::new(Ok(config()), SEEDS);
    let at = |ms: u64, ip: &'static str, n: u32| {
        let body =
            format!(r#"{{"name":"C","email":"c{n}@example.org","country":"IT","consent":true}}"#);
        (body, ms, ip)
    };
    for (i, (body, ms, ip)) in [
        at(1_764_000_010_000, "192.0.2.60", 1),
        at(1_764_000_000_000, "192.0.2.61", 2),
    ]
    .into_iter()
    .enumerate()
    {
        let f = Facts {
            now_ms: ms,
            ..facts(
                "POST",
                Some("application/json"),
                Body::Bytes(body.as_bytes()),
                Some("IT"),
                ip,
            )
        };
        assert!(
            matches!(admitted(&mut pipeline, &f), Verdict::Forward { .. }),
            "request {i}"
        );
    }
}

/// A candidate that moves one country (IT from the EU region to RU) is counted in the summary
/// line, while every reply and forward is exactly the live policy's: the same requests through a
/// pipeline without a candidate give the same verdicts, signatures and limits included.
#[test]
fn a_shadow_candidate_is_counted_and_changes_no_reply_or_forward() {
    use harbour_core::config::LogMode;
    use harbour_core::journal::{Journal, SUMMARY_WINDOW_MS};
    use harbour_policy::Policy;

    let mut moved: serde_json::Value = serde_json::from_str(SHIPPED_POLICY).unwrap();
    let regions = moved["regions"].as_array_mut().unwrap();
    let position = |regions: &Vec<serde_json::Value>, id: &str| {
        regions.iter().position(|r| r["id"] == id).unwrap()
    };
    let (eu, ru) = (position(regions, "eu"), position(regions, "ru"));
    regions[eu]["countries"]
        .as_array_mut()
        .unwrap()
        .retain(|c| c != "IT");
    regions[ru]["countries"]
        .as_array_mut()
        .unwrap()
        .push("IT".into());
    let candidate = Policy::parse(&moved.to_string()).unwrap();

    let mut live = Pipeline::new(Ok(config()), SEEDS);
    let mut shadowed = Pipeline::new(Ok(config()), SEEDS).with_candidate(candidate);
    let mut journal = Journal::new(LogMode::Summary);
    let entry = |country: &str| {
        format!(
            r#"{{"name":"Ada","email":"ada@example.org","country":"{country}","consent":true}}"#
        )
    };
    // (platform country, declared country, client): the same busy client meets its limit.
    let mut requests = vec![
        ("IT", entry("IT"), "192.0.2.10"),
        ("IT", entry("FR"), "192.0.2.11"),
        ("DE", entry("DE"), "192.0.2.12"),
        // The visitor confirmed storage in the EU, where declaring Italy puts the entry.
        (
            "US",
            entry("IT").replace('}', r#","confirm_region":"eu"}"#),
            "192.0.2.13",
        ),
        ("IT", entry("CN"), "192.0.2.14"),
        ("IT", "{}".to_owned(), "192.0.2.15"),
    ];
    for _ in 0..6 {
        requests.push(("IT", entry("IT"), "192.0.2.16"));
    }
    let mut statuses = Vec::new();
    for (i, (country, body, ip)) in requests.iter().enumerate() {
        let mut f = facts(
            "POST",
            Some("application/json"),
            Body::Bytes(body.as_bytes()),
            Some(country),
            ip,
        );
        f.now_ms += i as u64;
        let expected = live.request(&f);
        let verdict = shadowed.request(&f);
        assert_eq!(verdict, expected, "request {i} ({country}, {body})");
        statuses.push(match &verdict {
            Verdict::Reply { reply, .. } => reply.status,
            Verdict::Forward { .. } | Verdict::Consult { .. } => 0,
        });
        let comparison = shadowed
            .shadow(&f, &verdict)
            .expect("a campaign submission");
        journal.shadow(&comparison, f.now_ms);
        if let Verdict::Reply { log, .. } = &verdict {
            journal.record(log, f.now_ms);
        }
    }
    // Admitted, admitted, admitted, admitted (each then asks the location), refused conflict,
    // invalid, then the busy client: five admitted and a 429.
    assert_eq!(statuses, [0, 0, 0, 0, 422, 422, 0, 0, 0, 0, 0, 429]);
    let last = facts("GET", None, Body::Unread, Some("IT"), "192.0.2.99");
    let form = shadowed.request(&last);
    assert_eq!(shadowed.shadow(&last, &form), None, "not a submission");

    let mut closing = facts("POST", None, Body::Unread, Some("IT"), "192.0.2.17");
    closing.now_ms += SUMMARY_WINDOW_MS;
    let Verdict::Reply { log, .. } = live.request(&closing) else {
        panic!("forwarded without a body")
    };
    let summary = journal.record(&log, closing.now_ms).summary.unwrap();
    let summary: serde_json::Value = serde_json::from_str(&summary).unwrap();
    assert_eq!(
        summary["shadow"],
        serde_json::json!([{
            "campaign": "spring-launch",
            "evaluated": 12,
            "region_changes": [
                // IT declaring IT and the busy client's six (one of them limited: limits are
                // outside the comparison, so it counts as placed).
                {"live": "eu", "candidate": "ru", "count": 7},
                // IT declaring FR: RU and the EU both have a law, so the candidate refuses; US
                // declaring IT: the visitor confirmed the EU, and the candidate would store the
                // entry in RU, so it asks again.
                {"live": "eu", "candidate": null, "count": 2}
            ],
            "outcome_changes": [
                {"live": "placed", "candidate": "residency_conflict", "count": 1},
                {"live": "placed", "candidate": "storage_unconfirmed", "count": 1}
            ]
        }])
    );
}

/// A valid submission from `ip` at `now_ms`; `n` makes its content its own.
fn submission(n: u32, ip: &'static str, now_ms: u64) -> (String, &'static str, u64) {
    (
        format!(r#"{{"name":"S","email":"s{n}@example.org","country":"IT","consent":true}}"#),
        ip,
        now_ms,
    )
}

/// `submission` through the pipeline, with a key of its own and work solved when it is sent.
fn run(pipeline: &mut Pipeline, (body, ip, now_ms): &(String, &'static str, u64)) -> Verdict {
    let key: &'static str = keyed().0;
    pipeline.request(&Facts {
        now_ms: *now_ms,
        idempotency_key: Some(key),
        challenge: Some(solved_at(key, *now_ms)),
        ..facts(
            "POST",
            Some("application/json"),
            Body::Bytes(body.as_bytes()),
            Some("IT"),
            ip,
        )
    })
}

#[test]
fn the_location_is_consulted_after_the_isolate_admits_and_decides_with_its_answer() {
    let mut pipeline = Pipeline::new(Ok(config()), SEEDS);
    let now = 1_764_000_000_000;
    let Verdict::Consult { consult, held } =
        run(&mut pipeline, &submission(1, "2001:db8:7:8::1", now))
    else {
        panic!("the location was not consulted")
    };
    assert_eq!(consult.binding, "HARBOUR_RL_5_PER_60S");
    // The campaign, then a digest of the client (its /64), never the address itself.
    let digest = consult.key.strip_prefix("spring-launch ").unwrap();
    assert!(
        digest.len() == 32 && digest.bytes().all(|b| b.is_ascii_hexdigit()),
        "{}",
        consult.key
    );
    let Verdict::Forward { plan, ticket } =
        pipeline.after_consult(*held, LocationResult::Admitted, now + 3)
    else {
        panic!("admitted but not forwarded")
    };
    assert_eq!(ticket.ctx.received_ms, now, "signed as received");
    assert!(plan.first.url.ends_with("/v1/submissions"));
    let policies = ticket
        .ctx
        .rate_headers
        .iter()
        .find(|(n, _)| *n == "ratelimit-policy")
        .map(|(_, v)| v.as_str());
    assert_eq!(policies, Some("\"client\";q=5;w=60, \"location\";q=5;w=60"));
    // Refused by the location, another address of the same /64: 429 naming the location, and
    // nothing charged: the client still has the four the isolate's layer left it.
    for i in 0..3 {
        let Verdict::Consult { held, .. } = run(
            &mut pipeline,
            &submission(2 + i, "2001:db8:7:8::ffff", now + 10),
        ) else {
            panic!("not consulted")
        };
        let refused = reply(pipeline.after_consult(*held, LocationResult::Refused, now + 11));
        assert_eq!(refused.status, 429);
        assert_eq!(
            refused.header("ratelimit-policy"),
            Some("\"location\";q=5;w=60")
        );
        assert_eq!(refused.header("retry-after"), Some("60"));
    }
    for i in 0..4 {
        let verdict = run(
            &mut pipeline,
            &submission(10 + i, "2001:db8:7:8::2", now + 20),
        );
        assert!(matches!(verdict, Verdict::Consult { .. }), "submission {i}");
    }
    let limited = reply(run(
        &mut pipeline,
        &submission(20, "2001:db8:7:8::3", now + 20),
    ));
    assert_eq!(
        limited.header("ratelimit-policy"),
        Some("\"client\";q=5;w=60"),
        "the isolate's layer refuses without consulting"
    );
}

#[test]
fn surge_window_limits_hold_from_start_to_the_millisecond_before_end() {
    let mut raw: serde_json::Value = serde_json::from_str(SHIPPED_POLICY).unwrap();
    raw["campaigns"][0]["surge_windows"] = serde_json::json!([
        {"id": "tv-spot", "start": "2026-03-14T20:15:00Z", "end": "2026-03-14T20:20:00Z",
         "per_client": {"burst": 20, "window_ms": 10000}, "on_location_unavailable": "fail_closed"}
    ]);
    // The work `solved_at` does (4 bits), so that only the limits are tested here.
    raw["campaigns"][0]["challenge"] =
        serde_json::json!({"difficulty_bits": 4, "valid_ms": 1800000});
    let config = Config::local(&raw.to_string(), 7000).unwrap();
    let start = harbour_policy::utc::parse_ms("2026-03-14T20:15:00Z").unwrap();
    let end = harbour_policy::utc::parse_ms("2026-03-14T20:20:00Z").unwrap();
    for (at, binding, mode_refuses) in [
        (start - 1, "HARBOUR_RL_5_PER_60S", false),
        (start, "HARBOUR_RL_20_PER_10S", true),
        (start + 1, "HARBOUR_RL_20_PER_10S", true),
        (end - 1, "HARBOUR_RL_20_PER_10S", true),
        (end, "HARBOUR_RL_5_PER_60S", false),
        (end + 1, "HARBOUR_RL_5_PER_60S", false),
    ] {
        // A fresh isolate per instant: time only moves forward within one.
        let mut pipeline = Pipeline::new(Ok(config.clone()), SEEDS);
        let Verdict::Consult { consult, held } =
            run(&mut pipeline, &submission(1, "192.0.2.70", at))
        else {
            panic!("not consulted at {at}")
        };
        assert_eq!(consult.binding, binding, "at {at}");
        assert_eq!(
            consult.key.contains("@tv-spot"),
            binding.contains("_20_"),
            "{}",
            consult.key
        );
        // The window's own admission mode: fail_closed inside, fail_open outside.
        let verdict = pipeline.after_consult(*held, LocationResult::TimedOut, at + 500);
        match verdict {
            Verdict::Reply { reply, .. } => {
                assert!(mode_refuses, "at {at}: {}", reply.body);
                assert_eq!(reply.status, 503);
                assert_eq!(reply.code(), Some("location_limit_unavailable"));
            }
            Verdict::Forward { .. } => assert!(!mode_refuses, "at {at}: forwarded"),
            Verdict::Consult { .. } => panic!("consulted twice"),
        }
    }
}

fn receipt() -> AttemptResult<'static> {
    AttemptResult::Answered {
        status: 201,
        body: r#"{"receipt":{"id":"eu-0123456789abcdef","region":"eu"}}"#,
    }
}

const BUSY: AttemptResult<'static> = AttemptResult::Answered {
    status: 503,
    body: r#"{"code":"origin_busy","retry_after_s":1}"#,
};

#[test]
fn origins_that_say_they_are_full_are_spared_until_their_breaker_half_opens() {
    let config = config();
    let mut pipeline = Pipeline::new(Ok(config.clone()), SEEDS);
    let eu = config.policy.region_index("eu").unwrap();
    let urls: Vec<String> = config.origins(eu).iter().map(|o| o.url.clone()).collect();
    let now = 1_764_000_000_000;
    let forward = |pipeline: &mut Pipeline, n: u32, ip: &'static str, at: u64| match run(
        pipeline,
        &submission(n, ip, at),
    ) {
        Verdict::Consult { held, .. } => {
            pipeline.after_consult(*held, LocationResult::Admitted, at)
        }
        other => other,
    };
    let Verdict::Forward { plan, ticket } = forward(&mut pipeline, 1, "192.0.2.80", now) else {
        panic!("not forwarded")
    };
    assert_eq!(plan.first.url, urls[0]);
    // The primary is full: failover to the secondary, in the region.
    let Next::Retry { attempt, ticket } = pipeline.after_attempt(ticket.clone(), BUSY, now + 1)
    else {
        panic!("no failover")
    };
    assert_eq!(attempt.url, urls[1]);
    // While the primary's breaker is open, new submissions go straight to the secondary.
    let Verdict::Forward {
        plan: second,
        ticket: second_ticket,
    } = forward(&mut pipeline, 2, "192.0.2.81", now + 2)
    else {
        panic!("not forwarded")
    };
    assert_eq!(
        (second.first.url.as_str(), second_ticket.ctx.attempts),
        (urls[1].as_str(), 1)
    );
    // The secondary is full too: 503 with the key and when to come back.
    let Next::Done { reply, log } = pipeline.after_attempt(ticket.clone(), BUSY, now + 3) else {
        panic!("no answer")
    };
    assert_eq!((reply.status, log.outcome.name()), (503, "origins_busy"));
    assert_eq!(reply.header("retry-after"), Some("1"));
    assert_eq!(reply.header("idempotency-key"), ticket.ctx.key.as_deref());
    let notes = pipeline.take_notes();
    assert_eq!(notes.len(), 2, "{notes:?}");
    assert!(notes[0].contains("\"origin\":0,\"state\":\"open\""));
    // Both open: answered at once, no origin, no consult, no limit charged (one client, ten times).
    for i in 0..10 {
        let Verdict::Reply { reply, log } =
            run(&mut pipeline, &submission(3, "192.0.2.82", now + 4 + i))
        else {
            panic!("not answered at once")
        };
        assert_eq!((reply.status, reply.code()), (503, Some("region_busy")));
        assert_eq!(log.attempts, 0);
        assert!(reply
            .header("idempotency-key")
            .unwrap()
            .starts_with("test-key-"));
    }
    // The answer of the request sent to the secondary before it opened changes nothing.
    pipeline.after_attempt(second_ticket.clone(), receipt(), now + 20);
    assert!(matches!(
        run(&mut pipeline, &submission(4, "192.0.2.82", now + 21)),
        Verdict::Reply { .. }
    ));
    // After the interval: one trial at the primary; meanwhile the region is still shed.
    let Verdict::Forward {
        plan: trial,
        ticket: trial_ticket,
    } = forward(&mut pipeline, 5, "192.0.2.82", now + 1_001)
    else {
        panic!("no trial")
    };
    assert_eq!(trial.first.url, urls[0]);
    // The trial stored: closed; the same client still had its whole budget.
    let Next::Done { reply, .. } =
        pipeline.after_attempt(trial_ticket.clone(), receipt(), now + 1_010)
    else {
        panic!("no answer")
    };
    assert_eq!(reply.status, 202);
    assert!(pipeline.take_notes()[0].contains("\"origin\":0,\"state\":\"closed\""));
    for i in 0..4 {
        let Verdict::Forward { plan, .. } =
            forward(&mut pipeline, 6 + i, "192.0.2.82", now + 1_020)
        else {
            panic!("submission {i} refused")
        };
        assert_eq!(plan.first.url, urls[0]);
    }
    // The first submission, turned away by both origins, was given back to its client's limit.
    for i in 0..5 {
        let verdict = forward(&mut pipeline, 20 + i, "192.0.2.80", now + 1_030);
        assert!(
            matches!(verdict, Verdict::Forward { .. }),
            "submission {i} of the client turned away"
        );
    }
}

#[test]
fn a_held_request_is_shed_and_given_back_if_its_region_filled_up_meanwhile() {
    let config = config();
    let mut pipeline = Pipeline::new(Ok(config.clone()), SEEDS);
    let now = 1_764_000_000_000;
    let Verdict::Consult { held, .. } = run(&mut pipeline, &submission(1, "192.0.2.90", now))
    else {
        panic!("not consulted")
    };
    // While its binding is awaited, another request finds both EU origins full.
    let Verdict::Forward { ticket, .. } = pipeline.request_answered(
        &Facts {
            now_ms: now,
            ..facts(
                "POST",
                Some("application/json"),
                Body::Bytes(VALID.as_bytes()),
                Some("IT"),
                "192.0.2.91",
            )
        },
        LocationResult::Admitted,
    ) else {
        panic!("not forwarded")
    };
    let Next::Retry { ticket, .. } = pipeline.after_attempt(ticket.clone(), BUSY, now + 1) else {
        panic!("no failover")
    };
    pipeline.after_attempt(ticket.clone(), BUSY, now + 2);
    let shed = reply(pipeline.after_consult(*held, LocationResult::Admitted, now + 3));
    assert_eq!((shed.status, shed.code()), (503, Some("region_busy")));
    // Its charge was given back: the client has all 5 once the region takes submissions again.
    for i in 0..5 {
        let verdict = run(
            &mut pipeline,
            &submission(10 + i, "192.0.2.90", now + 2_000),
        );
        assert!(matches!(verdict, Verdict::Consult { .. }), "submission {i}");
    }
}

#[test]
fn a_bots_resend_gets_the_same_decoy_again_as_a_visitors_resend_gets_its_receipt() {
    let mut pipeline = Pipeline::new(Ok(config()), SEEDS);
    let bot =
        r#"{"name":"Bot","email":"bot@example.org","country":"IT","consent":true,"remarks":"x"}"#;
    let sent = facts(
        "POST",
        Some("application/json"),
        Body::Bytes(bot.as_bytes()),
        Some("IT"),
        "192.0.2.60",
    );
    let first = reply(admitted(&mut pipeline, &sent));
    assert_eq!(first.status, 202);
    assert_eq!(first.header("idempotent-replayed"), None);
    let again = reply(admitted(
        &mut pipeline,
        &Facts {
            now_ms: NOW + 5,
            ..sent
        },
    ));
    assert_eq!(again.status, 202);
    assert_eq!(
        again.body, first.body,
        "the same decoy id, as an origin's replay would give"
    );
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
}

#[test]
fn after_a_503_that_stored_nothing_the_same_key_and_work_go_through_again() {
    let mut pipeline = Pipeline::new(Ok(config()), SEEDS);
    let sent = facts(
        "POST",
        Some("application/json"),
        Body::Bytes(VALID.as_bytes()),
        Some("IT"),
        "192.0.2.61",
    );
    let Verdict::Forward { ticket, .. } = admitted(&mut pipeline, &sent) else {
        panic!("not forwarded")
    };
    // Neither origin answers: 503 with the key, nothing stored.
    let Next::Retry { ticket, .. } = pipeline.after_attempt(ticket, AttemptResult::Failed, NOW + 1)
    else {
        panic!("no failover")
    };
    let Next::Done { reply: failed, .. } =
        pipeline.after_attempt(ticket, AttemptResult::Failed, NOW + 2)
    else {
        panic!("no answer")
    };
    assert_eq!(failed.status, 503);
    // The page's retry, same key and same work, is a new attempt, not a memory.
    let retry = admitted(
        &mut pipeline,
        &Facts {
            now_ms: NOW + 3,
            ..sent
        },
    );
    assert!(matches!(retry, Verdict::Forward { .. }), "{retry:?}");
}

/// `config()` with an ingress for `cn` (China Network) and `eu` (Regional Services).
fn ingress_config() -> Config {
    let mut policy: serde_json::Value = serde_json::from_str(SHIPPED_POLICY).unwrap();
    policy["regions"][0]["ingress"] =
        serde_json::json!({"host": "cn.campaign.example", "kept_in_region_by": "china_network"});
    policy["regions"][2]["ingress"] = serde_json::json!({"host": "eu.campaign.example", "kept_in_region_by": "regional_services"});
    let mut config = Config::local(&policy.to_string(), 7000).unwrap();
    for campaign in &mut config.policy.campaigns {
        campaign.challenge.difficulty_bits = 4;
    }
    config
}

/// An entry from `country` (the platform's and the declared one) sent to `host`.
fn sent_to(host: &str, country: &'static str, ip: &'static str) -> Facts<'static> {
    let url: &'static str = Box::leak(
        format!("https://{host}/api/campaigns/spring-launch/submissions").into_boxed_str(),
    );
    let body: &'static str = Box::leak(
        format!(
            r#"{{"name":"Ada","email":"{ip}@example.org","country":"{country}","consent":true}}"#
        )
        .into_boxed_str(),
    );
    Facts {
        url,
        ..facts(
            "POST",
            Some("application/json"),
            Body::Bytes(body.as_bytes()),
            Some(country),
            ip,
        )
    }
}

#[test]
fn a_region_with_an_ingress_is_processed_there_and_refused_everywhere_else() {
    let mut pipeline = Pipeline::new(Ok(ingress_config()), SEEDS);
    let cn_submit = "https://cn.campaign.example/api/campaigns/spring-launch/submissions";
    let eu_submit = "https://eu.campaign.example/api/campaigns/spring-launch/submissions";
    let own_submit = "/api/campaigns/spring-launch/submissions";
    // (host, country) → refused naming this URL, or forwarded to this origin port (cn 7000,
    // ru 7001, eu 7002).
    let table = [
        ("cn.campaign.example", "CN", Ok(7000)),
        ("eu.campaign.example", "IT", Ok(7002)),
        ("campaign.example", "RU", Ok(7001)),
        ("campaign.example", "CN", Err(cn_submit)),
        ("campaign.example", "IT", Err(eu_submit)),
        ("cn.campaign.example", "IT", Err(eu_submit)),
        ("eu.campaign.example", "CN", Err(cn_submit)),
        ("cn.campaign.example", "RU", Err(own_submit)),
        ("eu.campaign.example", "AU", Err(own_submit)),
    ];
    for (i, (host, country, expected)) in table.into_iter().enumerate() {
        let ip: &'static str = Box::leak(format!("192.0.2.{}", 100 + i).into_boxed_str());
        let verdict = admitted(&mut pipeline, &sent_to(host, country, ip));
        match (verdict, expected) {
            (Verdict::Forward { plan, .. }, Ok(port)) => {
                assert!(
                    plan.first
                        .url
                        .starts_with(&format!("http://127.0.0.1:{port}/")),
                    "{host} {country}: {}",
                    plan.first.url
                )
            }
            (Verdict::Reply { reply, log }, Err(submit)) => {
                assert_eq!(
                    (reply.status, code(&reply).as_str()),
                    (421, "wrong_ingress")
                );
                let body: serde_json::Value = serde_json::from_str(&reply.body).unwrap();
                assert_eq!(body["submit"], submit, "{host} {country}");
                assert_eq!(
                    (log.phase.as_str(), log.outcome.name()),
                    ("ingress", "wrong_ingress")
                );
            }
            (verdict, expected) => panic!("{host} {country}: {verdict:?}, expected {expected:?}"),
        }
    }
}

#[test]
fn a_misdirected_entry_is_refused_before_any_limit_is_charged_or_the_location_asked() {
    let mut pipeline = Pipeline::new(Ok(ingress_config()), SEEDS);
    // Far more than the per-client limit (5 per minute), all from one address, all to the main
    // hostname for China: each refused at the ingress phase, none consulting the binding
    // (`reply` panics on a consult).
    for _ in 0..12 {
        let refused = reply(pipeline.request(&sent_to("campaign.example", "CN", "192.0.2.130")));
        assert_eq!(
            (refused.status, code(&refused).as_str()),
            (421, "wrong_ingress")
        );
    }
    // The same address then sends its entries to China's ingress, with its whole limit left.
    for n in 0..5 {
        let verdict = admitted(
            &mut pipeline,
            &sent_to("cn.campaign.example", "CN", "192.0.2.130"),
        );
        assert!(
            matches!(verdict, Verdict::Forward { .. }),
            "entry {n}: {verdict:?}"
        );
    }
    let over = reply(admitted(
        &mut pipeline,
        &sent_to("cn.campaign.example", "CN", "192.0.2.130"),
    ));
    assert_eq!((over.status, code(&over).as_str()), (429, "rate_limited"));
}

#[test]
fn a_receipt_from_memory_is_given_only_on_its_regions_ingress() {
    let mut pipeline = Pipeline::new(Ok(ingress_config()), SEEDS);
    let sent = sent_to("cn.campaign.example", "CN", "192.0.2.140");
    let Verdict::Forward { ticket, .. } = admitted(&mut pipeline, &sent) else {
        panic!("not forwarded")
    };
    let stored = AttemptResult::Answered {
        status: 201,
        body: r#"{"receipt":{"id":"cn-0123456789abcdef","region":"cn"}}"#,
    };
    let Next::Done { reply: first, .. } = pipeline.after_attempt(ticket, stored, NOW + 1) else {
        panic!("not done")
    };
    assert_eq!(first.status, 202);
    // The same entry, key and work sent again to the main hostname: refused, not answered.
    let elsewhere = Facts {
        url: "https://campaign.example/api/campaigns/spring-launch/submissions",
        now_ms: NOW + 2,
        ..sent
    };
    let refused = reply(admitted(&mut pipeline, &elsewhere));
    assert_eq!(
        (refused.status, code(&refused).as_str()),
        (421, "wrong_ingress")
    );
    // On China's ingress, the receipt again.
    let again = reply(admitted(
        &mut pipeline,
        &Facts {
            now_ms: NOW + 3,
            ..sent
        },
    ));
    assert_eq!(again.status, 202);
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
}
