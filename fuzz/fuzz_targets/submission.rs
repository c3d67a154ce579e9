//! The whole request path on arbitrary bodies and headers: no panic, a body the pipeline accepts
//! is only ever planned to its region's origins, and the live policy evaluated in shadow as its
//! own candidate agrees with the live decision on every input.
#![no_main]

use harbour_core::challenge;
use harbour_core::config::Config;
use harbour_core::admission::LocationAnswer;
use harbour_core::pipeline::{Pipeline, Seeds, Verdict};
use harbour_core::reply::Phase;
use harbour_core::request::{Body, Facts};
use harbour_contract::signature::SignatureHeader;
use harbour_policy::{Policy, SHIPPED_POLICY};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else { return };
    let Ok(mut config) = Config::local(SHIPPED_POLICY, 7000) else { return };
    // One bit of work, so the body behind the challenge is reached on most inputs.
    config.policy.campaigns[0].challenge.difficulty_bits = 1;
    let now_ms = 1_764_000_000_000;
    let issued = challenge::issue(&config.form_key, &config.policy.campaigns[0], now_ms, 1);
    let Ok(same) = Policy::parse(SHIPPED_POLICY) else { return };
    let mut pipeline = Pipeline::new(Ok(config), Seeds { limiter: u64::from(selector), request_ids: 2, challenges: 3 })
        .with_candidate(same);
    let content_type = match selector % 4 {
        0 => "application/json",
        1 => "application/x-www-form-urlencoded",
        2 => "application/json; charset=utf-8",
        _ => "text/plain",
    };
    // Part of the input becomes the country and the key, so odd header values are covered too.
    let split = rest.len().min(usize::from(selector >> 2) % 8);
    let (head, body) = rest.split_at(split);
    let head = String::from_utf8_lossy(head);
    // Mostly a solved challenge for a fixed key; otherwise the arbitrary text as key and solution.
    let key = "fuzz-key-0123456789abcdef";
    let solved = challenge::solution(&issued.token, &challenge::solve(&issued.token, key, 1));
    let (key, solution) = if selector & 0x40 == 0 { (key, solved.as_str()) } else { (&*head, &*head) };
    let facts = Facts {
        method: "POST",
        url: "https://campaign.example/api/campaigns/spring-launch/submissions",
        content_type: Some(content_type),
        body: Body::Bytes(body),
        country: Some(if selector & 0x80 == 0 { "IT" } else { &head }),
        client_ip: Some("192.0.2.1"),
        idempotency_key: Some(key),
        challenge: Some(solution),
        origin: None,
        now_ms,
    };
    let verdict = pipeline.request(&facts);
    match pipeline.shadow(&facts, &verdict) {
        Some(comparison) => assert_eq!(comparison.live, comparison.candidate, "the same policy decided otherwise in shadow"),
        // Only a request without valid work (its body never read) goes uncompared.
        None => assert!(
            matches!(&verdict, Verdict::Answer { log, .. } if log.phase == Phase::Challenge),
            "a submission to a live campaign was not compared"
        ),
    }
    // The location's binding answers from the input too; only an admission (or fail_open) forwards.
    let answer = match rest.len() % 4 {
        0 => LocationAnswer::Refused,
        1 => LocationAnswer::Failed,
        2 => LocationAnswer::TimedOut,
        _ => LocationAnswer::Admitted,
    };
    let verdict = match verdict {
        Verdict::Consult { held, .. } => pipeline.after_consult(*held, answer, facts.now_ms),
        other => other,
    };
    if let Verdict::Forward { plan } = verdict {
        let config = pipeline.config().ok().expect("configured");
        let region = &config.policy.regions[plan.ticket.region.get()].id;
        assert!(config.origins(plan.region).iter().any(|o| o.url == plan.first.url));
        assert!(plan.headers.iter().any(|(n, v)| *n == "x-harbour-signature"
            && SignatureHeader::parse(v).is_some_and(|s| s.region == region.as_str())));
        assert!(plan.headers.iter().all(|(_, v)| !v.contains(['\r', '\n'])), "header injection");
    }
});
