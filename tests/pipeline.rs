//! The pipeline as a black box, natively: request facts in, a reply or a forward plan out.
#![cfg(not(target_arch = "wasm32"))]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use harbour::config::Config;
use harbour::form_token;
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
};
const URL: &str = "https://campaign.example/api/campaigns/spring-launch/submissions";
const VALID: &str = r#"{"name":"Ada","email":"ada@example.org","country":"IT","consent":true}"#;

fn config() -> Config {
    Config::local(SHIPPED_POLICY, 7000).unwrap()
}

fn facts<'a>(
    method: &'a str,
    content_type: Option<&'a str>,
    body: Body<'a>,
    country: Option<&'a str>,
    ip: &'a str,
) -> Facts<'a> {
    Facts {
        method,
        url: URL,
        content_type,
        body,
        country,
        client_ip: Some(ip),
        idempotency_key: None,
        origin: None,
        now_ms: 1_764_000_000_000,
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
    // A malformed client key is replaced by one derived from the content.
    let f = Facts {
        idempotency_key: Some("bad key\r\nx-injected: 1"),
        client_ip: Some("192.0.2.21"),
        ..f
    };
    let Verdict::Forward { plan } = pipeline.request(&f) else {
        panic!("not forwarded")
    };
    let key = plan
        .headers
        .iter()
        .find(|(n, _)| *n == HEADER_IDEMPOTENCY_KEY)
        .unwrap()
        .1
        .clone();
    assert!(key.starts_with("h-") && key.len() == 34, "{key}");
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
        .starts_with("h-"));
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
fn forms_sent_faster_than_a_person_fills_them_go_nowhere() {
    let config = config();
    let mut pipeline = Pipeline::new(Ok(config.clone()), SEEDS);
    let description = reply(pipeline.request(&Facts {
        url: "https://campaign.example/api/campaigns/spring-launch",
        ..facts("GET", None, Body::Unread, None, "192.0.2.50")
    }));
    let description: serde_json::Value = serde_json::from_str(&description.body).unwrap();
    let token = description["form_token"].as_str().unwrap().to_owned();
    let issued: u64 = token.split('.').next().unwrap().parse().unwrap();
    let submit = |pipeline: &mut Pipeline, token: &str, after_ms: u64, ip: &str| {
        let body = format!(
            r#"{{"name":"Ada","email":"ada{after_ms}@example.org","country":"IT","consent":true,"_form":"{token}"}}"#
        );
        let f = Facts {
            now_ms: issued + after_ms,
            ..facts(
                "POST",
                Some("application/json"),
                Body::Bytes(body.as_bytes()),
                Some("IT"),
                ip,
            )
        };
        pipeline.request(&f)
    };
    // Too fast: answered like success, not forwarded.
    let fast = reply(submit(&mut pipeline, &token, 300, "192.0.2.51"));
    assert_eq!(fast.status, 202);
    // After the policy's minimum fill time: forwarded.
    assert!(matches!(
        submit(&mut pipeline, &token, 1_500, "192.0.2.52"),
        Verdict::Forward { .. }
    ));
    // A forged or altered token is treated as a bot's, however old it claims to be.
    let forged = format!("{}.{}", issued - 60_000, "0".repeat(32));
    assert_eq!(
        reply(submit(&mut pipeline, &forged, 1_500, "192.0.2.53")).status,
        202
    );
    let stale = form_token::mint(&config, "spring-launch", issued - 25 * 60 * 60 * 1000);
    assert_eq!(
        reply(submit(&mut pipeline, &stale, 1_500, "192.0.2.54")).status,
        202
    );
    // Without a token (an API client), the submission is judged on its content alone.
    let plain = facts(
        "POST",
        Some("application/json"),
        Body::Bytes(VALID.as_bytes()),
        Some("IT"),
        "192.0.2.55",
    );
    let step = pipeline.request(&Facts {
        now_ms: issued + 2_000,
        ..plain
    });
    assert!(matches!(step, Verdict::Forward { .. }));
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

/// A candidate that moves one country (IT from the EU region to RU) is counted in the summary
/// line, while every reply and forward is exactly the live policy's: the same requests through a
/// pipeline without a candidate give the same verdicts, signatures and limits included.
#[test]
fn a_shadow_candidate_is_counted_and_changes_no_reply_or_forward() {
    use harbour::config::LogMode;
    use harbour::journal::{Journal, SUMMARY_WINDOW_MS};
    use harbour::policy::Policy;

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
        ("US", entry("IT"), "192.0.2.13"),
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
            Verdict::Answer { reply, .. } => reply.status,
            Verdict::Forward { .. } => 0,
        });
        let comparison = shadowed
            .shadow(&f, &verdict)
            .expect("a campaign submission");
        journal.shadow(&comparison, f.now_ms);
        if let Verdict::Answer { log, .. } = &verdict {
            journal.record(log, f.now_ms);
        }
    }
    // Forwarded, forwarded, forwarded, forwarded, refused conflict, invalid, then the busy
    // client: five forwards and a 429.
    assert_eq!(statuses, [0, 0, 0, 0, 422, 422, 0, 0, 0, 0, 0, 429]);
    let last = facts("GET", None, Body::Unread, Some("IT"), "192.0.2.99");
    let form = shadowed.request(&last);
    assert_eq!(shadowed.shadow(&last, &form), None, "not a submission");

    let mut closing = facts("POST", None, Body::Unread, Some("IT"), "192.0.2.17");
    closing.now_ms += SUMMARY_WINDOW_MS;
    let Verdict::Answer { log, .. } = live.request(&closing) else {
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
                // IT declaring IT, the busy client's six (one of them limited: limits are
                // outside the comparison, so it counts as placed), and US declaring IT (the
                // declared country's law wins, now RU's).
                {"live": "eu", "candidate": "ru", "count": 8},
                // IT declaring FR: RU and the EU both have a law, so the candidate refuses.
                {"live": "eu", "candidate": null, "count": 1}
            ],
            "outcome_changes": [
                {"live": "placed", "candidate": "residency_conflict", "count": 1}
            ]
        }])
    );
}
