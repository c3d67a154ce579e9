//! The forward plan, signature and the walk over origin answers, on arbitrary answers: no
//! panic, the first attempt and every retry go to an origin of the region an oracle written
//! apart from harbour (`oracle.rs`) says for the two country signals, the signature verifies
//! with that region's secret and names it, and a submission is refused exactly when the oracle
//! refuses it.
#![no_main]

mod oracle;

use std::sync::OnceLock;

use harbour_contract::http::HEADER_SIGNATURE;
use harbour_contract::signature::{sha256_hex, Signed, SigningKey};
use harbour_core::phase::admission::LocationResult;
use harbour_core::phase::challenge;
use harbour_core::config::Config;
use harbour_core::attempt::AttemptResult;
use harbour_core::pipeline::{Next, Pipeline, Seeds, Verdict};
use harbour_core::phase::request::{Body, Facts};
use harbour_policy::SHIPPED_POLICY;
use libfuzzer_sys::fuzz_target;
use oracle::{region_of_url, signing_secret, Expected, Oracle};

/// The shipped policy's laws (China, Russia, two EU countries, Australia), the rest of the world
/// twice, and Norway (in the EU region, outside the EU).
const COUNTRIES: [&str; 8] = ["CN", "RU", "IT", "DE", "AU", "US", "BR", "NO"];

fn fixed() -> &'static (Config, Oracle) {
    static FIXED: OnceLock<(Config, Oracle)> = OnceLock::new();
    FIXED.get_or_init(|| {
        let mut config = Config::assemble(SHIPPED_POLICY, &oracle::env(SHIPPED_POLICY)).unwrap();
        config.policy.campaigns[0].challenge.difficulty_bits = 1;
        (config, Oracle::from_json(SHIPPED_POLICY))
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, answers)) = data.split_first() else {
        return;
    };
    let (config, oracle) = fixed();
    let key = "fuzz-key-0123456789abcdef";
    let issued = challenge::issue(
        &config.form_key,
        &config.policy.campaigns[0],
        1_764_000_000_000,
        1,
    );
    let solution = challenge::solution(&issued.token, &challenge::solve(&issued.token, key, 1));
    let country = COUNTRIES[usize::from(selector) % COUNTRIES.len()];
    let declared = COUNTRIES[usize::from(selector >> 3) % COUNTRIES.len()];
    // Half confirm storage in the declared country's region, as the page does once asked.
    let confirm = if selector & 0x40 == 0 {
        String::new()
    } else {
        format!(r#","confirm_region":"{}""#, oracle.region_of(declared))
    };
    let body = format!(
        r#"{{"name":"F","email":"f@example.org","country":"{declared}","consent":true{confirm}}}"#
    );
    let notice = config.policy.campaigns[0].notice_header("en");
    let mut pipeline = Pipeline::new(
        Ok(config.clone()),
        Seeds {
            limiter: 1,
            request_ids: 2,
            challenges: 3,
        },
    );
    let facts = Facts {
        method: "POST",
        url: "https://campaign.example/api/campaigns/spring-launch/submissions",
        content_type: Some("application/json"),
        body: Body::Bytes(body.as_bytes()),
        country: Some(country),
        client_ip: Some("192.0.2.1"),
        idempotency_key: Some(key),
        challenge: Some(&solution),
        origin: None,
        notice: Some(&notice),
        now_ms: 1_764_000_000_000,
    };
    let confirmed = (selector & 0x40 != 0).then(|| oracle.region_of(declared));
    let expected = oracle.expected(Some(country), Some(declared), confirmed.as_deref());
    let (plan, first_ticket) = match pipeline.request_answered(&facts, LocationResult::Admitted) {
        Verdict::Forward { plan, ticket } => (plan, ticket),
        Verdict::Reply { log, .. } => {
            // A valid submission whose signals the oracle places is always forwarded here.
            assert_eq!(
                Expected::Refused(log.outcome.name()),
                expected,
                "{country} / {declared}"
            );
            return;
        }
        Verdict::Consult { .. } => panic!("the location's answer was given"),
    };
    let Expected::Region(region) = expected else {
        panic!("{country} / {declared} forwarded, but the oracle says {expected:?}");
    };
    assert_eq!(
        region_of_url(&plan.first.url),
        region,
        "{country} / {declared}: first attempt"
    );
    let header = |name: &str| {
        plan.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
            .unwrap_or("")
    };
    let hash = sha256_hex(plan.body.as_bytes());
    let signed = Signed {
        method: "POST",
        path: "/v1/submissions",
        timestamp_ms: facts.now_ms,
        region: &region,
        idempotency_key: header("idempotency-key"),
        body_sha256_hex: &hash,
    };
    // Only the oracle's region's origins hold this secret.
    let secret = signing_secret(&region);
    assert!(
        SigningKey::new(secret.as_bytes())
            .unwrap()
            .verify(&signed, header(HEADER_SIGNATURE)),
        "not signed for {region}"
    );
    // Walk arbitrary origin answers: (status byte pair, body chunk) per attempt, through the
    // pipeline so the origins' breakers see them (a busy answer opens one).
    let mut ticket = first_ticket;
    for chunk in answers.chunks(24) {
        let status = chunk.first().map_or(0, |b| u16::from(*b) * 3);
        let text = String::from_utf8_lossy(chunk.get(1..).unwrap_or(&[]));
        let outcome = if status == 0 {
            AttemptResult::Failed
        } else {
            AttemptResult::Answered {
                status,
                body: &text,
            }
        };
        match pipeline.after_attempt(ticket.clone(), outcome, facts.now_ms + 100) {
            Next::Retry {
                attempt,
                ticket: next,
            } => {
                assert_eq!(
                    region_of_url(&attempt.url),
                    region,
                    "a retry left the region"
                );
                ticket = next;
            }
            Next::Done { reply, .. } => {
                assert!((200..600).contains(&reply.status));
                return;
            }
        }
    }
});
