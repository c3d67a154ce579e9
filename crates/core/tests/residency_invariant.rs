//! The residency invariant, over random policies, countries, declared values and origin answers,
//! under each conflict rule: a submission tagged region R is only ever planned to origins of R, on
//! the first attempt and on every failover, whatever the origins' breakers say; R is one of the
//! regions its two country signals map to (never a third); and R is what an oracle written apart
//! from `residency` expects of the rule. Origins answer at random (no answer, full, another 503,
//! stored), which opens and closes their breakers: no attempt goes to an origin whose breaker is
//! open, and a submission is answered 503 `region_busy` without an attempt exactly when every
//! origin of its region is open. Some regions take their submissions on an ingress hostname of
//! their own: a submission goes on only on the hostname its region is taken on (its ingress, or
//! any other host for a region without one), and is refused 421 anywhere else, before any origin
//! is planned. Then a walk over every code the platform can report, against the shipped policy.
#![cfg(not(target_arch = "wasm32"))]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;

use harbour_contract::env::FORM_KEY_VAR;
use harbour_contract::signature::SignatureHeader;
use harbour_core::attempt::AttemptResult;
use harbour_core::breaker::OPEN_MS;
use harbour_core::config::Config;
use harbour_core::phase::admission::LocationResult;
use harbour_core::phase::challenge;
use harbour_core::phase::forward::Ticket;
use harbour_core::phase::request::{Body, Facts};
use harbour_core::phase::residency::{place, PlatformCountry};
use harbour_core::pipeline::Next;
use harbour_core::pipeline::{Pipeline, Seeds, Verdict};
use harbour_policy::country::Country;
use harbour_policy::{OnConflict, Policy};
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
    /// Whether each region takes its submissions on an ingress (`r{i}.ingress.test`).
    ingress: Vec<bool>,
}

fn spec() -> impl Strategy<Value = Spec> {
    (1usize..6).prop_flat_map(|n| {
        (
            Just((0..n as u32).map(|i| i * 10).collect::<Vec<_>>()).prop_shuffle(),
            proptest::collection::hash_map(0usize..COUNTRIES, 0..n, 0..60),
            0..n,
            [
                proptest::option::of(0..n),
                proptest::option::of(0..n),
                proptest::option::of(0..n),
            ],
            proptest::collection::vec(1usize..4, n),
            proptest::collection::vec(any::<bool>(), n),
        )
            .prop_map(
                |(strictness, listed, rest_of_world, signals, origins_per_region, ingress)| Spec {
                    strictness,
                    listed,
                    rest_of_world,
                    signals,
                    origins_per_region,
                    ingress,
                },
            )
    })
}

/// ISO's 249 codes and XK.
const COUNTRIES: usize = 250;

fn countries() -> Vec<Country> {
    Country::all().collect()
}

fn policy_json(spec: &Spec, rule: OnConflict) -> String {
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
            let mut region = json!({"id": format!("r{r}"), "name": format!("Region {r}"), "strictness": strictness, "countries": codes.iter().map(|(_, c)| *c).collect::<Vec<_>>()});
            if spec.ingress[r] {
                region["ingress"] = json!({"host": format!("r{r}.ingress.test"), "kept_in_region_by": "regional_services"});
            }
            region
        })
        .collect();
    let action = |a: Option<usize>| a.map_or("refuse".to_owned(), |r| format!("region:r{r}"));
    json!({
        "regions": regions,
        "rest_of_world": format!("r{}", spec.rest_of_world),
        "signals": {"unknown": action(spec.signals[0]), "tor": action(spec.signals[1]), "missing": action(spec.signals[2])},
        "on_conflict": rule.as_str(),
        "max_body_bytes": 4096,
        "campaigns": [{
            "id": "c", "title": "c",
            "challenge": {"difficulty_bits": 1, "valid_ms": 600000},
            "ends": "2030-01-01T00:00:00Z", "retention": {"days_after_end": 30},
            "notice": {"controller": "C", "contact": "c@example.org", "purpose": "P", "link": "https://example.org/n"},
            "limits": {"per_client": {"burst": 1000000, "window_ms": 60000}, "campaign": {"burst": 1000000, "window_ms": 1000}},
            "fields": [
                {"name": "email", "label": "Email", "type": "email", "required": true},
                {"name": "country", "label": "Country", "type": "country", "residency_signal": true}
            ]
        }]
    })
    .to_string()
}

fn config(spec: &Spec, rule: OnConflict) -> Config {
    let json = policy_json(spec, rule);
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

/// What the oracle expects: a region, or a refusal with its status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expected {
    Region(usize),
    Refused(u16),
}

/// The region the platform's signal points to (its country's, or where the policy routes a
/// doubtful signal), or None when the policy refuses it.
fn platform_region(spec: &Spec, platform: &str) -> Option<usize> {
    let all = countries();
    match platform {
        "" => spec.signals[2],
        "T1" => spec.signals[1],
        code => match all.iter().position(|c| c.as_str() == code) {
            Some(c) => Some(region_of(spec, c)),
            None => spec.signals[0],
        },
    }
}

fn region_of(spec: &Spec, country: usize) -> usize {
    spec.listed
        .get(&country)
        .copied()
        .unwrap_or(spec.rest_of_world)
}

/// The rule as the policy documents it, written apart from `residency::place`: a declared
/// country that moves the entry out of the platform's region does so only when the visitor
/// confirmed that region (`confirmed`), and is refused on its field (422) otherwise.
fn expected_region(
    spec: &Spec,
    rule: OnConflict,
    platform: &str,
    declared: Option<usize>,
    confirmed: bool,
) -> Expected {
    let Some(p) = platform_region(spec, platform) else {
        return Expected::Refused(403);
    };
    let Some(d) = declared.map(|c| region_of(spec, c)) else {
        return Expected::Region(p);
    };
    let row = spec.rest_of_world;
    let moved = match rule {
        _ if d == p => false,
        OnConflict::Platform => false,
        OnConflict::Stricter => spec.strictness[d] > spec.strictness[p],
        OnConflict::Refuse if p == row => true,
        OnConflict::Refuse if d == row => false,
        OnConflict::Refuse => return Expected::Refused(422),
    };
    match (moved, confirmed) {
        (false, _) => Expected::Region(p),
        (true, true) => Expected::Region(d),
        (true, false) => Expected::Refused(422),
    }
}

fn region_of_url(url: &str) -> usize {
    url.strip_prefix("https://r")
        .and_then(|rest| rest.split('-').next())
        .and_then(|n| n.parse().ok())
        .unwrap()
}

fn platform_value() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => (0usize..COUNTRIES).prop_map(|i| countries()[i].as_str().to_owned()),
        1 => Just("XX".to_owned()),
        1 => Just("T1".to_owned()),
        1 => Just(String::new()),
        1 => "[A-Za-z0-9]{0,3}",
    ]
}

/// One request: platform country, declared country, whether the visitor confirmed storage in the
/// declared country's region, the hostname it is sent to (`None`: the main one, `Some(r)`:
/// `r{r}.ingress.test`, an ingress only if region r has one), ms since the previous request, and
/// how each origin attempt is answered.
type Request = (String, Option<usize>, bool, Option<usize>, u64, Vec<Answer>);

/// The oracle's verdict once the hostname is known: a placed submission goes on only on the
/// hostname its region is taken on, and is refused 421 anywhere else.
fn expected_on(spec: &Spec, expected: Expected, sent_to: Option<usize>) -> Expected {
    let Expected::Region(region) = expected else {
        return expected;
    };
    let arrived = sent_to.filter(|r| spec.ingress.get(*r) == Some(&true));
    let taken_on = spec.ingress[region].then_some(region);
    if arrived == taken_on {
        expected
    } else {
        Expected::Refused(421)
    }
}

/// Runs `requests` through a pipeline over `spec` under `rule` and checks every verdict and
/// every failover against the oracle and the breaker model.
fn check_rule(spec: &Spec, rule: OnConflict, requests: Vec<Request>) -> Result<(), TestCaseError> {
    let config = config(spec, rule);
    let mut pipeline = Pipeline::new(
        Ok(config.clone()),
        Seeds {
            limiter: 7,
            request_ids: 8,
            challenges: 9,
        },
    );
    // A key and its solved work per request (the challenge is not what this test is about, and
    // one solution buys one entry).
    let issued = challenge::issue(&config.form_key, &config.policy.campaigns[0], 1_000_000, 1);
    let mut model = Model {
        breakers: spec
            .origins_per_region
            .iter()
            .map(|n| vec![None; *n])
            .collect(),
        latest: 0,
    };
    let mut now = 1_000_000u64;
    let notice = config.policy.campaigns[0].notice_header("en");
    for (i, (platform, declared, confirm, sent_to, gap, answers)) in
        requests.into_iter().enumerate()
    {
        now += gap;
        // Requests are spaced by `gap` from the previous request, not from its last attempt: a
        // request may come "before" an answer the pipeline has already seen.
        let seen = model.at(now);
        let key = format!("residency-key-{i:010}");
        let solution = challenge::solution(
            &issued.token,
            &challenge::solve(&issued.token, &key, issued.difficulty_bits),
        );
        let body = match declared {
            Some(c) if confirm => format!(
                r#"{{"email":"v{i}@example.org","country":"{}","confirm_region":"r{}"}}"#,
                countries()[c],
                region_of(spec, c)
            ),
            Some(c) => format!(
                r#"{{"email":"v{i}@example.org","country":"{}"}}"#,
                countries()[c]
            ),
            None => format!(r#"{{"email":"v{i}@example.org"}}"#),
        };
        let url = match sent_to {
            Some(r) => format!("https://r{r}.ingress.test/api/campaigns/c/submissions"),
            None => "https://edge.test/api/campaigns/c/submissions".to_owned(),
        };
        let facts = Facts {
            method: "POST",
            url: &url,
            content_type: Some("application/json"),
            body: Body::Bytes(body.as_bytes()),
            country: (!platform.is_empty()).then_some(platform.as_str()),
            client_ip: Some("192.0.2.1"),
            idempotency_key: Some(&key),
            challenge: Some(&solution),
            origin: None,
            notice: Some(&notice),
            now_ms: now,
        };
        let expected = expected_region(spec, rule, &platform, declared, confirm);
        let expected = expected_on(spec, expected, sent_to);
        match pipeline.request_answered(&facts, LocationResult::Admitted) {
            Verdict::Forward { plan, ticket } => {
                let Expected::Region(region) = expected else {
                    return Err(TestCaseError::fail(format!(
                        "forwarded a refusal: {platform:?} / {declared:?}"
                    )));
                };
                // Never a region neither signal points to, whatever the rule.
                let pointed = [
                    platform_region(spec, &platform),
                    declared.map(|c| region_of(spec, c)),
                ];
                prop_assert!(
                    pointed.contains(&Some(ticket.region.get())),
                    "r{} is neither signal's region {:?}",
                    ticket.region.get(),
                    pointed
                );
                let signature = plan
                    .headers
                    .iter()
                    .find(|(n, _)| *n == "x-harbour-signature")
                    .map(|(_, v)| v.as_str())
                    .unwrap_or("");
                let tag = SignatureHeader::parse(signature).map(|s| s.region.to_owned());
                prop_assert_eq!(tag, Some(format!("r{region}")));
                let body: serde_json::Value = serde_json::from_str(&plan.body)
                    .map_err(|e| TestCaseError::fail(e.to_string()))?;
                let expected_tag = format!("r{region}");
                prop_assert_eq!(body["region"].as_str(), Some(expected_tag.as_str()));
                prop_assert_eq!(ticket.region.get(), region);
                prop_assert_eq!(region_of_url(&plan.first.url), region);
                // The first origin whose breaker lets it be called.
                prop_assert_eq!(Some(ticket.origin), model.first_callable(region, 0, seen));
                follow_attempts(&mut pipeline, &mut model, &ticket, region, i, now, answers)?;
            }
            Verdict::Reply { reply, .. } => match expected {
                Expected::Refused(status) => prop_assert_eq!(
                    reply.status,
                    status,
                    "{:?} / {:?}: {}",
                    platform,
                    declared,
                    reply.body
                ),
                Expected::Region(region) => {
                    // Only while every origin of the region is open, and without an attempt.
                    prop_assert_eq!(reply.status, 503, "{}", reply.body);
                    prop_assert_eq!(reply.code(), Some("region_busy"));
                    prop_assert_eq!(model.first_callable(region, 0, seen), None);
                }
            },
            Verdict::Consult { .. } => prop_assert!(false, "the binding was answered"),
        }
    }
    Ok(())
}

/// Answers each attempt of a forward as `answers` say, checking every retry stays in `region`
/// and goes to the next origin the breaker model lets be called.
fn follow_attempts(
    pipeline: &mut Pipeline,
    model: &mut Model,
    first: &Ticket,
    region: usize,
    i: usize,
    now: u64,
    answers: Vec<Answer>,
) -> Result<(), TestCaseError> {
    let mut ticket = first.clone();
    let mut answers = answers.into_iter();
    let mut t = now;
    loop {
        t += 10;
        let seen = model.at(t);
        let origin = ticket.origin;
        let given = answers.next().unwrap_or(Answer::Stored);
        let receipt = format!(r#"{{"receipt":{{"id":"r{region}-{i}","region":"r{region}"}}}}"#);
        let result = match given {
            Answer::Silent => AttemptResult::Failed,
            Answer::Busy => AttemptResult::Answered {
                status: 503,
                body: r#"{"code":"origin_busy","retry_after_s":1}"#,
            },
            Answer::OtherUnavailable => AttemptResult::Answered {
                status: 503,
                body: r#"{"code":"storage_unavailable"}"#,
            },
            Answer::Stored => AttemptResult::Answered {
                status: 201,
                body: &receipt,
            },
        };
        model.record(region, origin, given, seen);
        match pipeline.after_attempt(ticket.clone(), result, t) {
            Next::Retry {
                attempt,
                ticket: next,
            } => {
                prop_assert_eq!(region_of_url(&attempt.url), region);
                prop_assert_eq!(next.region.get(), region);
                prop_assert!(!matches!(given, Answer::Stored));
                prop_assert_eq!(
                    Some(next.origin),
                    model.first_callable(region, origin + 1, seen)
                );
                ticket = next;
            }
            Next::Done { reply, .. } => {
                match given {
                    Answer::Stored => prop_assert_eq!(reply.status, 202),
                    _ => {
                        prop_assert_eq!(reply.status, 503);
                        prop_assert_eq!(model.first_callable(region, origin + 1, seen), None);
                        prop_assert!(reply.header("retry-after").is_some());
                    }
                }
                return Ok(());
            }
        }
    }
}

fn requests() -> impl Strategy<Value = Vec<Request>> {
    proptest::collection::vec(
        (
            platform_value(),
            proptest::option::of(0usize..COUNTRIES),
            any::<bool>(),
            proptest::option::of(0usize..6),
            0u64..1_500,
            proptest::collection::vec(answer(), 4),
        ),
        1..16,
    )
}

/// How an origin answers one attempt.
#[derive(Clone, Copy, Debug)]
enum Answer {
    Silent,
    Busy,
    OtherUnavailable,
    Stored,
}

fn answer() -> impl Strategy<Value = Answer> {
    prop_oneof![
        Just(Answer::Silent),
        Just(Answer::Busy),
        Just(Answer::OtherUnavailable),
        Just(Answer::Stored),
    ]
}

/// An independent model of the breakers: per origin, `None` closed or `Some(until)` open until
/// then (afterwards half-open: the next call is the trial). Attempts here are answered before
/// the next request, so a trial never stays pending.
struct Model {
    breakers: Vec<Vec<Option<u64>>>,
    /// The latest time given: the pipeline never lets its clock step back (a request whose time
    /// is before an earlier attempt's answer is taken at the later time), and neither does this.
    latest: u64,
}

impl Model {
    /// `now`, or the latest time given if that is later.
    fn at(&mut self, now: u64) -> u64 {
        self.latest = self.latest.max(now);
        self.latest
    }

    fn callable(&self, region: usize, origin: usize, now: u64) -> bool {
        self.breakers[region][origin].is_none_or(|until| until <= now)
    }

    fn first_callable(&self, region: usize, from: usize, now: u64) -> Option<usize> {
        (from..self.breakers[region].len()).find(|&o| self.callable(region, o, now))
    }

    fn record(&mut self, region: usize, origin: usize, answer: Answer, now: u64) {
        let state = &mut self.breakers[region][origin];
        *state = match (*state, answer) {
            (_, Answer::Busy) => Some(now + OPEN_MS),
            (Some(_), Answer::Silent) => Some(now + OPEN_MS),
            (Some(_), Answer::OtherUnavailable | Answer::Stored) => None,
            (None, _) => None,
        };
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn refuse_never_leaves_the_signals_regions_and_refuses_two_laws(spec in spec(), requests in requests()) {
        check_rule(&spec, OnConflict::Refuse, requests)?;
    }

    #[test]
    fn platform_never_leaves_the_platforms_region(spec in spec(), requests in requests()) {
        check_rule(&spec, OnConflict::Platform, requests)?;
    }

    #[test]
    fn stricter_never_leaves_the_signals_regions(spec in spec(), requests in requests()) {
        check_rule(&spec, OnConflict::Stricter, requests)?;
    }
}

/// The ISO 3166-1 codes as Debian's iso-codes lists them, the same table the report names
/// countries from: a source apart from `country`'s own list.
const ISO_TABLE: &str = include_str!("../../../report/iso3166-1.tsv");

fn iso_codes() -> Vec<String> {
    ISO_TABLE
        .lines()
        .filter(|line| !line.starts_with('#') && !line.is_empty())
        .map(|line| line.split('\t').next().unwrap().to_owned())
        .collect()
}

/// Every code the platform can report (ISO's, XK, XX, T1, a missing one) against the shipped
/// policy: a country maps to exactly one region (the one that lists it, or the rest-of-world
/// region), and each signal gets the refusal the report documents. Every other pair of letters
/// is no country and is refused as unknown.
#[test]
fn every_code_the_platform_reports_is_placed_once_or_refused_as_documented() {
    let policy = Policy::shipped().unwrap();
    let report = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/residency.md"),
    )
    .unwrap();
    let mut countries = iso_codes();
    assert_eq!(countries.len(), 249);
    countries.push("XK".into());
    for code in &countries {
        let country = Country::parse(code).unwrap_or_else(|| panic!("{code} is not a country"));
        let listed: Vec<&str> = policy
            .regions
            .iter()
            .filter(|r| r.countries.contains(&country))
            .map(|r| r.id.as_str())
            .collect();
        assert!(listed.len() <= 1, "{code} is listed by {listed:?}");
        let placed = place(&policy, PlatformCountry::read(Some(code)), None)
            .unwrap_or_else(|e| panic!("{code} refused: {}", e.code()));
        let expected = listed
            .first()
            .copied()
            .unwrap_or(&policy.region(policy.rest_of_world).id);
        assert_eq!(policy.region(placed.region).id, expected, "{code}");
        // And as a declared country from the same place: never a conflict with itself.
        let both = place(&policy, PlatformCountry::read(Some(code)), Some(country)).unwrap();
        assert_eq!(both.region, placed.region, "{code} declared");
    }
    let signals = [
        (Some("XX"), "country_unknown"),
        (Some("T1"), "country_anonymised"),
        (None, "country_missing"),
    ];
    for (code, refusal) in signals {
        let outcome = place(&policy, PlatformCountry::read(code), None);
        assert_eq!(
            outcome.map(|_| ()).map_err(|e| e.code()),
            Err(refusal),
            "{code:?}"
        );
        assert!(
            report.contains(refusal),
            "docs/residency.md does not document {refusal}"
        );
    }
    assert!(report.contains("`XX`") && report.contains("`T1`"));
    let mut others = 0;
    for a in b'A'..=b'Z' {
        for b in b'A'..=b'Z' {
            let code = String::from_utf8(vec![a, b]).unwrap();
            if countries.contains(&code) {
                continue;
            }
            others += 1;
            assert_eq!(Country::parse(&code), None, "{code} is no country");
            let outcome = place(&policy, PlatformCountry::read(Some(&code)), None);
            assert_eq!(
                outcome.map(|_| ()).map_err(|e| e.code()),
                Err("country_unknown"),
                "{code}"
            );
        }
    }
    assert_eq!(others, 26 * 26 - 250);
}
