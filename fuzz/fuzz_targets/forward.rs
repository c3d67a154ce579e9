//! The forward plan, signature and the walk over origin answers, on arbitrary answers: no
//! panic, every retry stays in the ticket's region, and the signature verifies.
#![no_main]

use harbour_core::challenge;
use harbour_core::config::Config;
use harbour_core::admission::LocationAnswer;
use harbour_policy::country::Country;
use harbour_core::forward::{AttemptResult, Next};
use harbour_core::pipeline::{Pipeline, Seeds, Verdict};
use harbour_core::request::{Body, Facts};
use harbour_policy::SHIPPED_POLICY;
use harbour_contract::signature::{sha256_hex, Signed};
use libfuzzer_sys::fuzz_target;

const COUNTRIES: [&str; 8] = ["CN", "RU", "IT", "DE", "AU", "US", "BR", "NO"];

fuzz_target!(|data: &[u8]| {
    let Some((&selector, answers)) = data.split_first() else { return };
    let Ok(mut config) = Config::local(SHIPPED_POLICY, 7000) else { return };
    config.policy.campaigns[0].challenge.difficulty_bits = 1;
    let key = "fuzz-key-0123456789abcdef";
    let issued = challenge::issue(&config.form_key, &config.policy.campaigns[0], 1_764_000_000_000, 1);
    let solution = challenge::solution(&issued.token, &challenge::solve(&issued.token, key, 1));
    let country = COUNTRIES[usize::from(selector) % COUNTRIES.len()];
    let declared = COUNTRIES[usize::from(selector >> 3) % COUNTRIES.len()];
    let body = format!(r#"{{"name":"F","email":"f@example.org","country":"{declared}","consent":true}}"#);
    let mut pipeline = Pipeline::new(Ok(config.clone()), Seeds { limiter: 1, request_ids: 2, challenges: 3 });
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
        now_ms: 1_764_000_000_000,
    };
    let plan = match pipeline.request_answered(&facts, LocationAnswer::Admitted) {
        Verdict::Forward { plan } => plan,
        Verdict::Answer { log, .. } => {
            // Under the shipped rule (refuse), two countries in two regions with laws of their
            // own are the one valid submission that is not forwarded.
            let policy = &config.policy;
            let region = |code: &str| Country::parse(code).map(|c| policy.region_of(c));
            let (p, d) = (region(country), region(declared));
            let laws = p.zip(d).is_some_and(|(p, d)| p != d && policy.has_own_law(p) && policy.has_own_law(d));
            assert!(laws && log.outcome == "residency_conflict", "a valid submission was not forwarded: {}", log.outcome);
            return;
        }
        Verdict::Consult { .. } => panic!("the location's answer was given"),
    };
    let header = |name: &str| plan.headers.iter().find(|(n, _)| *n == name).map(|(_, v)| v.as_str()).unwrap_or("");
    let region = config.policy.regions[plan.ticket.region.get()].id.clone();
    let hash = sha256_hex(plan.body.as_bytes());
    let signed = Signed { method: "POST", path: "/v1/submissions", timestamp_ms: facts.now_ms, region: &region, idempotency_key: header("idempotency-key"), body_sha256_hex: &hash };
    assert!(config.regions[plan.region.get()].key.verify(&signed, header("x-harbour-signature")));
    // Walk arbitrary origin answers: (status byte pair, body chunk) per attempt, through the
    // pipeline so the origins' breakers see them (a busy answer opens one).
    let mut ticket = plan.ticket.clone();
    for chunk in answers.chunks(24) {
        let status = chunk.first().map_or(0, |b| u16::from(*b) * 3);
        let text = String::from_utf8_lossy(chunk.get(1..).unwrap_or(&[]));
        let outcome = if status == 0 { AttemptResult::Failed } else { AttemptResult::Answered { status, body: &text } };
        match pipeline.after_attempt(&ticket, outcome, facts.now_ms + 100) {
            Next::Retry { attempt, ticket: next } => {
                assert!(config.origins(plan.region).iter().any(|o| o.url == attempt.url), "left the region");
                ticket = next;
            }
            Next::Done { reply, .. } => {
                assert!((200..600).contains(&reply.status));
                return;
            }
        }
    }
});
