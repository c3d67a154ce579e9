//! The residency invariant, over random policies, countries and declared values: a submission
//! tagged region R is only ever planned to origins of R, on the first attempt and on every
//! failover, and R is the stricter of the regions its two country signals map to.
#![cfg(not(target_arch = "wasm32"))]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;

use harbour::challenge;
use harbour::config::{Config, FORM_KEY_VAR};
use harbour::country::Country;
use harbour::forward::{after_attempt, AttemptResult, Next};
use harbour::pipeline::{Pipeline, Seeds, Verdict};
use harbour::request::{Body, Facts};
use harbour::signature::SignatureHeader;
use proptest::prelude::*;
use serde_json::json;

#[derive(Debug, Clone)]
struct Spec {
    /// Strictness per region; distinct by construction.
    strictness: Vec<u32>,
    /// Country index → region index, for the countries a region lists.
    listed: HashMap<usize, usize>,
    rest_of_world: usize,
    /// Per signal (unknown, tor, missing): None refuses, Some(r) routes to region r.
    signals: [Option<usize>; 3],
    origins_per_region: Vec<usize>,
}

fn spec() -> impl Strategy<Value = Spec> {
    (1usize..6).prop_flat_map(|n| {
        (
            Just((0..n as u32).map(|i| i * 10).collect::<Vec<_>>()).prop_shuffle(),
            proptest::collection::hash_map(0usize..249, 0..n, 0..60),
            0..n,
            [
                proptest::option::of(0..n),
                proptest::option::of(0..n),
                proptest::option::of(0..n),
            ],
            proptest::collection::vec(1usize..4, n),
        )
            .prop_map(
                |(strictness, listed, rest_of_world, signals, origins_per_region)| Spec {
                    strictness,
                    listed,
                    rest_of_world,
                    signals,
                    origins_per_region,
                },
            )
    })
}

fn countries() -> Vec<Country> {
    Country::all().collect()
}

fn policy_json(spec: &Spec) -> String {
    let all = countries();
    let regions: Vec<_> = spec
        .strictness
        .iter()
        .enumerate()
        .map(|(r, strictness)| {
            let mut codes: Vec<(usize, &str)> = spec
                .listed
                .iter()
                .filter(|(_, region)| **region == r)
                .map(|(c, _)| (*c, all[*c].as_str_static()))
                .collect();
            codes.sort();
            json!({"id": format!("r{r}"), "strictness": strictness, "countries": codes.iter().map(|(_, c)| *c).collect::<Vec<_>>()})
        })
        .collect();
    let action = |a: Option<usize>| a.map_or("refuse".to_owned(), |r| format!("region:r{r}"));
    json!({
        "regions": regions,
        "rest_of_world": format!("r{}", spec.rest_of_world),
        "signals": {"unknown": action(spec.signals[0]), "tor": action(spec.signals[1]), "missing": action(spec.signals[2])},
        "max_body_bytes": 4096,
        "campaigns": [{
            "id": "c", "title": "c",
            "challenge": {"difficulty_bits": 1, "valid_ms": 600000},
            "limits": {"per_client": {"burst": 1000000, "window_ms": 1000}, "campaign": {"burst": 1000000, "window_ms": 1000}},
            "fields": [
                {"name": "email", "label": "Email", "type": "email", "required": true},
                {"name": "country", "label": "Country", "type": "country", "residency_signal": true}
            ]
        }]
    })
    .to_string()
}

fn config(spec: &Spec) -> Config {
    let json = policy_json(spec);
    Config::assemble(&json, &|name| {
        if name == FORM_KEY_VAR {
            return Some("form-key-0123456789abcdefghijklmnopqrstuv".into());
        }
        let region: usize = name
            .strip_prefix("HARBOUR_ORIGINS_R")
            .or_else(|| name.strip_prefix("HARBOUR_KEY_R"))?
            .parse()
            .ok()?;
        if name.starts_with("HARBOUR_KEY_") {
            return Some(format!("key-of-region-{region}-0123456789abcdefghijklmnop"));
        }
        let urls: Vec<String> = (0..spec.origins_per_region[region])
            .map(|j| format!("https://r{region}-o{j}.origin.test"))
            .collect();
        Some(urls.join(" "))
    })
    .unwrap()
}

/// The region an oracle independent of `classify` expects, or None for a refusal.
fn expected_region(spec: &Spec, platform: &str, declared: Option<usize>) -> Option<usize> {
    let all = countries();
    let region_of = |c: usize| spec.listed.get(&c).copied().unwrap_or(spec.rest_of_world);
    let by_platform = match platform {
        "" => spec.signals[2]?,
        "T1" => spec.signals[1]?,
        code => match all.iter().position(|c| c.as_str() == code) {
            Some(c) => region_of(c),
            None => spec.signals[0]?,
        },
    };
    Some(match declared.map(region_of) {
        Some(d) if spec.strictness[d] > spec.strictness[by_platform] => d,
        _ => by_platform,
    })
}

fn region_of_url(url: &str) -> usize {
    url.strip_prefix("https://r")
        .and_then(|rest| rest.split('-').next())
        .and_then(|n| n.parse().ok())
        .unwrap()
}

fn platform_value() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => (0usize..249).prop_map(|i| countries()[i].as_str().to_owned()),
        1 => Just("XX".to_owned()),
        1 => Just("T1".to_owned()),
        1 => Just(String::new()),
        1 => "[A-Za-z0-9]{0,3}",
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn no_plan_or_failover_leaves_the_tagged_region(
        spec in spec(),
        requests in proptest::collection::vec((platform_value(), proptest::option::of(0usize..249)), 1..12),
    ) {
        let config = config(&spec);
        let mut pipeline = Pipeline::new(Ok(config.clone()), Seeds { limiter: 7, request_ids: 8, challenges: 9 });
        let key = "residency-key-0123456789";
        let issued = challenge::issue(&config.form_key, &config.policy.campaigns[0], 1_000_000, 1);
        let solution = challenge::solution(&issued.token, &challenge::solve(&issued.token, key, issued.difficulty_bits));
        for (i, (platform, declared)) in requests.into_iter().enumerate() {
            let body = match declared {
                Some(c) => format!(r#"{{"email":"v{i}@example.org","country":"{}"}}"#, countries()[c]),
                None => format!(r#"{{"email":"v{i}@example.org"}}"#),
            };
            let facts = Facts {
                method: "POST",
                url: "https://edge.test/api/campaigns/c/submissions",
                content_type: Some("application/json"),
                body: Body::Bytes(body.as_bytes()),
                country: (!platform.is_empty()).then_some(platform.as_str()),
                client_ip: Some("192.0.2.1"),
                idempotency_key: Some(key),
                challenge: Some(&solution),
                origin: None,
                now_ms: 1_000_000 + i as u64,
            };
            let expected = expected_region(&spec, &platform, declared);
            match pipeline.request(&facts) {
                Verdict::Forward { plan } => {
                    let region = expected.ok_or_else(|| TestCaseError::fail(format!("forwarded a refusal: {platform:?}")))?;
                    let signature = plan.headers.iter().find(|(n, _)| *n == "x-harbour-signature").map(|(_, v)| v.as_str()).unwrap_or("");
                    let tag = SignatureHeader::parse(signature).map(|s| s.region.to_owned());
                    prop_assert_eq!(tag, Some(format!("r{region}")));
                    let body: serde_json::Value = serde_json::from_str(&plan.body).map_err(|e| TestCaseError::fail(e.to_string()))?;
                    let expected_tag = format!("r{region}");
                    prop_assert_eq!(body["region"].as_str(), Some(expected_tag.as_str()));
                    prop_assert_eq!(plan.ticket.region.get(), region);
                    prop_assert_eq!(region_of_url(&plan.first.url), region);
                    let mut ticket = plan.ticket.clone();
                    let mut tried = 1;
                    loop {
                        match after_attempt(&config, &ticket, AttemptResult::Failed, facts.now_ms + 10) {
                            Next::Retry { attempt, ticket: next } => {
                                prop_assert_eq!(region_of_url(&attempt.url), region);
                                prop_assert_eq!(next.region.get(), region);
                                tried += 1;
                                ticket = next;
                            }
                            Next::Done { reply, .. } => {
                                prop_assert_eq!(reply.status, 503);
                                break;
                            }
                        }
                    }
                    prop_assert_eq!(tried, spec.origins_per_region[region]);
                }
                Verdict::Answer { reply, .. } => {
                    prop_assert!(expected.is_none(), "refused {:?} / {:?} with {}: {}", platform, declared, reply.status, reply.body);
                    prop_assert_eq!(reply.status, 403);
                }
            }
        }
    }
}
