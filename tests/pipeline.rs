//! The pipeline as a black box, natively: request facts in, a reply or a forward plan out.
#![cfg(not(target_arch = "wasm32"))]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use harbour::challenge;
use harbour::config::Config;
use harbour::forward::{after_attempt, AttemptResult, Next};
use harbour::forward::{HEADER_IDEMPOTENCY_KEY, HEADER_SIGNATURE};
use harbour::pipeline::{Pipeline, Seeds, Verdict};
use harbour::policy::SHIPPED_POLICY;
use harbour::reply::Reply;
use harbour::request::{Body, Facts};
use harbour::signature::SignatureHeader;

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
        now_ms: NOW,
    }
}

fn reply(step: Verdict) -> Reply {
    match step {
        Verdict::Answer { reply, .. } => reply,
        Verdict::Forward { plan } => panic!("forwarded to {}", plan.first.url),
    }
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
        let r = reply(pipeline.request(&f));
        assert_eq!(
            (r.status, code(&r).as_str()),
            (status, expected),
            "{} {:?}",
            f.method,
            f.content_type
        );
    }
    let allow = reply(pipeline.request(&facts("GET", None, Body::Unread, None, "192.0.2.1")));
    assert_eq!(allow.header("allow"), Some("POST, OPTIONS"));
    let unknown = Facts {
        url: "https://campaign.example/api/campaigns/nope/submissions",
        ..facts("POST", json, body, Some("IT"), "192.0.2.1")
    };
    assert_eq!(reply(pipeline.request(&unknown)).status, 404);
    let elsewhere = Facts {
        url: "https://campaign.example/admin",
        ..facts("GET", None, Body::Unread, None, "192.0.2.1")
    };
    assert_eq!(reply(pipeline.request(&elsewhere)).status, 404);
}

#[test]
fn an_invalid_policy_environment_answers_config_invalid_to_everything() {
    let broken = Config::assemble(SHIPPED_POLICY, &|_| None);
    let mut pipeline = Pipeline::new(broken, SEEDS);
    let r = reply(pipeline.request(&facts(
        "POST",
        Some("application/json"),
        Body::Bytes(VALID.as_bytes()),
        Some("IT"),
        "192.0.2.1",
    )));
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
        let r = reply(pipeline.request(&facts(
            "POST",
            json,
            Body::Bytes(b"{}"),
            Some("IT"),
            "192.0.2.9",
        )));
        assert_eq!(r.status, 422);
    }
    for i in 0..5 {
        let body =
            format!(r#"{{"name":"A","email":"a{i}@example.org","country":"IT","consent":true}}"#);
        let step = pipeline.request(&facts(
            "POST",
            json,
            Body::Bytes(body.as_bytes()),
            Some("IT"),
            "192.0.2.9",
        ));
        assert!(matches!(step, Verdict::Forward { .. }), "submission {i}");
    }
    let limited = reply(pipeline.request(&facts(
        "POST",
        json,
        Body::Bytes(VALID.as_bytes()),
        Some("IT"),
        "192.0.2.9",
    )));
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
    matches!(pipeline.request(&f), Verdict::Forward { .. })
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
    let Verdict::Forward { plan } = pipeline.request(&f) else {
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
    let preflight = reply(pipeline.request(&Facts {
        method: "OPTIONS",
        origin: Some("http://127.0.0.1:8787"),
        ..base
    }));
    assert_eq!(preflight.status, 204);
    assert_eq!(
        preflight.header("access-control-allow-origin"),
        Some("http://127.0.0.1:8787")
    );
    let foreign = reply(pipeline.request(&Facts {
        origin: Some("https://evil.example"),
        ..base
    }));
    assert_eq!(
        (foreign.status, code(&foreign).as_str()),
        (403, "origin_not_allowed")
    );
    let same_origin = pipeline.request(&Facts {
        origin: Some("https://campaign.example"),
        ..base
    });
    assert!(matches!(same_origin, Verdict::Forward { .. }));
}

#[test]
fn a_filled_honeypot_is_answered_like_success_and_not_forwarded() {
    let mut pipeline = Pipeline::new(Ok(config()), SEEDS);
    let body =
        r#"{"name":"Bot","email":"bot@example.org","country":"IT","consent":true,"website":"x"}"#;
    let r = reply(pipeline.request(&facts(
        "POST",
        Some("application/json"),
        Body::Bytes(body.as_bytes()),
        Some("IT"),
        "192.0.2.40",
    )));
    assert_eq!(r.status, 202);
    let receipt: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(receipt["receipt"]["region"], "eu");

    // The same submission without the honeypot, stored by an origin: the visitor's receipt.
    let real_body = r#"{"name":"Bot","email":"bot@example.org","country":"IT","consent":true}"#;
    let Verdict::Forward { plan } = pipeline.request(&facts(
        "POST",
        Some("application/json"),
        Body::Bytes(real_body.as_bytes()),
        Some("IT"),
        "192.0.2.41",
    )) else {
        panic!("not forwarded")
    };
    let origin_answer = r#"{"receipt":{"id":"eu-5f0c1d2e3a4b6978","region":"eu"}}"#;
    let Next::Done { reply: real, .. } = after_attempt(
        &config(),
        &plan.ticket,
        AttemptResult::Answered {
            status: 201,
            body: origin_answer,
        },
        plan.ticket.received_ms + 5,
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
    let Verdict::Answer { log, .. } = pipeline.request(&facts(
        "POST",
        Some("application/json"),
        Body::Bytes(body.as_bytes()),
        Some("IT"),
        "203.0.113.77",
    )) else {
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
            pipeline.request(&Facts {
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
            })
        };
    // No work: refused before the body is read (an invalid one would be 422) and before any
    // limit is charged: the client's 5 per minute are all still there afterwards.
    for _ in 0..10 {
        let r = reply(submit(&mut pipeline, "{}", KEY, None, NOW));
        assert_eq!((r.status, code(&r).as_str()), (400, "challenge_required"));
        assert_eq!(r.header("content-type"), Some("application/problem+json"));
    }
    let answer = challenge::solution(&token, &challenge::solve(&token, KEY, bits));
    for i in 0..5 {
        let body =
            format!(r#"{{"name":"A","email":"a{i}@example.org","country":"IT","consent":true}}"#);
        let step = submit(&mut pipeline, &body, KEY, Some(&answer), NOW + i);
        assert!(matches!(step, Verdict::Forward { .. }), "submission {i}");
    }
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
        pipeline.request(&Facts {
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
        })
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
    let Verdict::Forward { plan } = send(&mut pipeline, fresh, NOW + 1) else {
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
            matches!(pipeline.request(&f), Verdict::Forward { .. }),
            "request {i}"
        );
    }
}
