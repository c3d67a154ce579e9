//! Native cost of the pure core's phases, per submission (`scripts/bench` prints these).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use harbour_contract::signature::{sha256_hex, Signed, SigningKey};
use harbour_core::attempt::AttemptResult;
use harbour_core::config::Config;
use harbour_core::phase::admission::LocationResult;
use harbour_core::phase::challenge;
use harbour_core::phase::request::Encoding;
use harbour_core::phase::request::{Body, Facts};
use harbour_core::phase::residency::{place, PlatformCountry};
use harbour_core::phase::validate::{check, parse_body};
use harbour_core::pipeline::{Pipeline, Seeds, Verdict};
use harbour_core::shadow;
use harbour_core::tickets::TicketBook;
use harbour_policy::{Policy, SHIPPED_POLICY};

const SEEDS: Seeds = Seeds {
    limiter: 3,
    request_ids: 4,
    challenges: 5,
};
const KEY: &str = "bench-key-0123456789abcdef";
/// The key of the request that warms each fresh isolate before the measured one.
const WARM_KEY: &str = "bench-warm-0123456789abcdef";
const NOW: u64 = 1_764_000_000_000;

const BODY: &[u8] =
    br#"{"name":"Ada Lovelace","email":"ada.lovelace@example.org","country":"IT","consent":true}"#;
/// A name and an address that need Unicode's tables: NFKC and case folding, UTS 46.
const UNICODE_BODY: &[u8] =
    r#"{"name":"Zoë Lovelace","email":"ｊｏｓé.lovelace@Bücher-Laden.example","country":"IT","consent":true}"#
        .as_bytes();

fn config() -> Config {
    Config::local(SHIPPED_POLICY, 7000).unwrap()
}

/// A submission from Italy as the page sends it.
fn submission<'a>(
    ip: &'a str,
    key: &'a str,
    solution: &'a str,
    notice: &'a str,
    now_ms: u64,
) -> Facts<'a> {
    Facts {
        method: "POST",
        url: "https://campaign.example/api/campaigns/spring-launch/submissions",
        content_type: Some("application/json"),
        body: Body::Bytes(BODY),
        country: Some("IT"),
        client_ip: Some(ip),
        idempotency_key: Some(key),
        challenge: Some(solution),
        origin: None,
        notice: Some(notice),
        now_ms,
    }
}

fn phases(c: &mut Criterion) {
    let notice = Policy::shipped().unwrap().campaigns[0].notice_header("en");
    let config = config();
    let campaign = config.policy.campaign("spring-launch").unwrap().clone();
    // At the shipped difficulty: the check costs the same whatever the work was.
    let issued = challenge::issue(&config.form_key, &campaign, NOW, 7);
    let nonce = challenge::solve(&issued.token, KEY, issued.difficulty_bits);
    let solution = challenge::solution(&issued.token, &nonce);
    let warm_nonce = challenge::solve(&issued.token, WARM_KEY, issued.difficulty_bits);
    let warm_solution = challenge::solution(&issued.token, &warm_nonce);
    c.bench_function("challenge (verify: HMAC + SHA-256)", |b| {
        b.iter(|| {
            challenge::verify(
                &config.form_key,
                &campaign,
                Some(black_box(&solution)),
                Some(black_box(KEY)),
                NOW,
            )
            .unwrap()
        })
    });
    c.bench_function("validate (parse + check)", |b| {
        b.iter(|| {
            check(
                &campaign,
                parse_body(Encoding::Json, black_box(BODY)).unwrap(),
            )
            .unwrap()
        })
    });
    c.bench_function("validate, Unicode name and address (parse + check)", |b| {
        b.iter(|| {
            check(
                &campaign,
                parse_body(Encoding::Json, black_box(UNICODE_BODY)).unwrap(),
            )
            .unwrap()
        })
    });
    let declared = harbour_policy::country::Country::parse("IT");
    c.bench_function("classify", |b| {
        b.iter(|| {
            place(
                &config.policy,
                PlatformCountry::read(black_box(Some("IT"))),
                declared,
            )
            .unwrap()
        })
    });
    let key = SigningKey::new(b"eu-key-0123456789abcdefghijklmnopqrstuv").unwrap();
    c.bench_function("sign (sha256 of body + hmac)", |b| {
        b.iter(|| {
            let hash = sha256_hex(black_box(BODY));
            key.sign(&Signed {
                method: "POST",
                path: "/v1/submissions",
                timestamp_ms: 1,
                region: "eu",
                idempotency_key: "k-0123456789abcdef",
                body_sha256_hex: &hash,
            })
        })
    });
    let forwarded = |verdict: Verdict| match verdict {
        Verdict::Forward { plan, .. } => plan,
        Verdict::Reply { reply, .. } => panic!("{}", reply.body),
        Verdict::Consult { .. } => panic!("consulted twice"),
    };
    let mut n = 0u32;
    c.bench_function(
        "request (whole pipeline to a signed plan, binding admitting)",
        |b| {
            // An isolate remembers each solution it accepted (one solution buys one entry), so
            // each measured request gets an isolate of its own, made outside the timing and
            // warmed by one request under another key.
            b.iter_batched_ref(
                || {
                    let mut pipeline = Pipeline::new(Ok(config.clone()), SEEDS);
                    let warm = submission("192.0.2.9", WARM_KEY, &warm_solution, &notice, NOW);
                    forwarded(pipeline.request_answered(&warm, LocationResult::Admitted));
                    pipeline
                },
                |pipeline| {
                    n = n.wrapping_add(1);
                    let ip = format!("10.{}.{}.{}", n >> 16 & 255, n >> 8 & 255, n & 255);
                    let facts = submission(&ip, KEY, &solution, &notice, NOW + u64::from(n));
                    forwarded(pipeline.request_answered(&facts, LocationResult::Admitted))
                },
                BatchSize::SmallInput,
            )
        },
    );
    let mut pipeline = Pipeline::new(Ok(config.clone()), SEEDS);
    let facts = Facts {
        method: "POST",
        url: "https://campaign.example/api/campaigns/spring-launch/submissions",
        content_type: Some("application/json"),
        body: Body::Bytes(BODY),
        country: Some("IT"),
        client_ip: Some("192.0.2.1"),
        idempotency_key: Some(KEY),
        challenge: Some(&solution),
        origin: None,
        notice: Some(&notice),
        now_ms: 1_764_000_000_000,
    };
    let Verdict::Forward { ticket, .. } =
        pipeline.request_answered(&facts, LocationResult::Admitted)
    else {
        panic!("not forwarded")
    };
    // A candidate that moves IT to the RU region: every evaluation differs from the live one.
    let mut moved: serde_json::Value = serde_json::from_str(SHIPPED_POLICY).unwrap();
    for region in moved["regions"].as_array_mut().unwrap() {
        let is_ru = region["id"] == "ru";
        let countries = region["countries"].as_array_mut().unwrap();
        countries.retain(|c| c != "IT");
        if is_ru {
            countries.push("IT".into());
        }
    }
    let candidate = Policy::parse(&moved.to_string()).unwrap();
    let shadow_facts = Facts {
        method: "POST",
        url: "https://campaign.example/api/campaigns/spring-launch/submissions",
        content_type: Some("application/json"),
        body: Body::Bytes(BODY),
        country: Some("IT"),
        client_ip: Some("192.0.2.1"),
        idempotency_key: Some(KEY),
        challenge: Some(&solution),
        origin: None,
        notice: Some(&notice),
        now_ms: 1_764_000_000_000,
    };
    c.bench_function(
        "shadow (candidate policy's check + validate + classify)",
        |b| b.iter(|| shadow::evaluate(&candidate, "spring-launch", black_box(&shadow_facts))),
    );
    let receipt = r#"{"receipt":{"id":"eu-0000000001","region":"eu","stored_at_ms":1}}"#;
    let mut book = TicketBook::with_max(16);
    c.bench_function("after_attempt (ticket + origin receipt to the 202)", |b| {
        b.iter(|| {
            let id = book.file(ticket.clone(), 1_764_000_000_000);
            let ticket = book.take(black_box(id)).unwrap();
            pipeline.after_attempt(
                ticket,
                AttemptResult::Answered {
                    status: 201,
                    body: receipt,
                },
                1_764_000_000_010,
            )
        })
    });
}

criterion_group!(benches, phases);
criterion_main!(benches);
