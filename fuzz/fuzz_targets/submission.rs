//! The whole request path on arbitrary bodies and headers: no panic, and residency against an
//! oracle written apart from harbour (`oracle.rs`: the policy's JSON, Debian's ISO list, the
//! documented conflict rule). A body the pipeline accepts is only ever planned to an origin of
//! the region the oracle says for its two country signals, and a refusal of the classify phase is
//! the one the oracle expects. A candidate policy that really differs (another conflict rule, a
//! country moved, unknown countries routed rather than refused) runs in shadow: both views are
//! what the oracle says of each policy, so they differ exactly where the policies do.
#![no_main]

mod oracle;

use std::sync::OnceLock;

use harbour_contract::http::HEADER_SIGNATURE;
use harbour_contract::signature::SignatureHeader;
use harbour_core::phase::admission::LocationResult;
use harbour_core::phase::challenge;
use harbour_core::config::Config;
use harbour_core::pipeline::{Pipeline, Seeds, Verdict};
use harbour_core::reply::Phase;
use harbour_core::phase::request::{Body, Facts};
use harbour_policy::{Policy, SHIPPED_POLICY};
use libfuzzer_sys::fuzz_target;
use oracle::{region_of_url, Expected, Oracle};

/// The shipped policy with residency changed three ways and nothing else (the same campaigns and
/// size limit, so the phases before classify decide alike).
fn candidate_json() -> String {
    let mut json: serde_json::Value = serde_json::from_str(SHIPPED_POLICY).unwrap();
    assert_eq!(
        json["on_conflict"], "refuse",
        "the candidate must differ from the live rule"
    );
    json["on_conflict"] = "stricter".into();
    assert_eq!(json["signals"]["unknown"], "refuse");
    json["signals"]["unknown"] = "region:global".into();
    // Norway leaves the EU region (for the rest-of-world one).
    let eu = json["regions"]
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .find(|r| r["id"] == "eu")
        .unwrap();
    let countries = eu["countries"].as_array_mut().unwrap();
    let before = countries.len();
    countries.retain(|c| c != "NO");
    assert_eq!(countries.len(), before - 1, "NO was in the EU region");
    json.to_string()
}

struct Fixed {
    config: Config,
    /// The `Harbour-Notice` of the campaign's English notice.
    notice: String,
    candidate: Policy,
    live: Oracle,
    shadow: Oracle,
}

fn fixed() -> &'static Fixed {
    static FIXED: OnceLock<Fixed> = OnceLock::new();
    FIXED.get_or_init(|| {
        let mut config = Config::assemble(SHIPPED_POLICY, &oracle::env(SHIPPED_POLICY)).unwrap();
        // One bit of work, so the body behind the challenge is reached on most inputs.
        config.policy.campaigns[0].challenge.difficulty_bits = 1;
        let candidate = candidate_json();
        let notice = config.policy.campaigns[0].notice_header("en");
        Fixed {
            notice,
            config,
            candidate: Policy::parse(&candidate).unwrap(),
            live: Oracle::from_json(SHIPPED_POLICY),
            shadow: Oracle::from_json(&candidate),
        }
    })
}

/// A policy's view of a submission that reached classify: (region, outcome) as `shadow::View`
/// reports it.
fn view(expected: &Expected) -> (Option<&str>, &str) {
    match expected {
        Expected::Region(region) => (Some(region.as_str()), harbour_core::shadow::PLACED),
        Expected::Refused(code) => (None, code),
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let fixed = fixed();
    let now_ms = 1_764_000_000_000;
    let issued = challenge::issue(
        &fixed.config.form_key,
        &fixed.config.policy.campaigns[0],
        now_ms,
        1,
    );
    let mut pipeline = Pipeline::new(
        Ok(fixed.config.clone()),
        Seeds {
            limiter: u64::from(selector),
            request_ids: 2,
            challenges: 3,
        },
    )
    .with_candidate(fixed.candidate.clone());
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
    let (key, solution) = if selector & 0x40 == 0 {
        (key, solved.as_str())
    } else {
        (&*head, &*head)
    };
    let platform = if selector & 0x80 == 0 { "IT" } else { &head };
    let facts = Facts {
        method: "POST",
        url: "https://campaign.example/api/campaigns/spring-launch/submissions",
        content_type: Some(content_type),
        body: Body::Bytes(body),
        country: Some(platform),
        client_ip: Some("192.0.2.1"),
        idempotency_key: Some(key),
        challenge: Some(solution),
        origin: None,
        // Mostly the notice the page showed; otherwise the arbitrary text.
        notice: Some(if selector & 0x20 == 0 { &fixed.notice } else { &*head }),
        now_ms,
    };
    let verdict = pipeline.request(&facts);
    // What the oracle says of each policy, once the body was found valid (classify was reached).
    let reached_classify = match &verdict {
        Verdict::Reply { log, .. } => !matches!(
            log.phase,
            Phase::Configure
                | Phase::Route
                | Phase::Challenge
                | Phase::RequestCheck
                | Phase::Validate
        ),
        Verdict::Consult { .. } | Verdict::Forward { .. } => true,
    };
    let expected = reached_classify.then(|| {
        let declared = fixed.live.declared(content_type, body).unwrap_or_else(|e| {
            panic!("harbour accepted a body the oracle cannot read ({e}): {body:?}")
        });
        let declared = declared.as_deref();
        let confirmed = fixed.live.confirmed(content_type, body).ok().flatten();
        let confirmed = confirmed.as_deref();
        (
            fixed.live.expected(Some(platform), declared, confirmed),
            fixed.shadow.expected(Some(platform), declared, confirmed),
        )
    });
    match (pipeline.shadow(&facts, &verdict), &expected) {
        (Some(comparison), Some((live, candidate))) => {
            let (l, c) = (comparison.live, comparison.candidate);
            assert_eq!(
                (l.region, l.outcome_name()),
                view(live),
                "the live decision is not the oracle's ({platform:?})"
            );
            assert_eq!(
                (c.region, c.outcome_name()),
                view(candidate),
                "the candidate's decision is not the oracle's ({platform:?})"
            );
        }
        // Refused before classify: the candidate's campaign and size limit are the live ones, so
        // it refuses alike.
        (Some(comparison), None) => assert_eq!(
            comparison.live, comparison.candidate,
            "the candidate differs before classify"
        ),
        // Only a request without valid work (its body never read) goes uncompared.
        (None, _) => assert!(
            matches!(&verdict, Verdict::Reply { log, .. } if log.phase == Phase::Challenge),
            "a submission to a live campaign was not compared"
        ),
    }
    // The location's binding answers from the input too; only an admission (or fail_open) forwards.
    let answer = match rest.len() % 4 {
        0 => LocationResult::Refused,
        1 => LocationResult::Failed,
        2 => LocationResult::TimedOut,
        _ => LocationResult::Admitted,
    };
    let verdict = match verdict {
        Verdict::Consult { held, .. } => pipeline.after_consult(*held, answer, facts.now_ms),
        other => other,
    };
    if let Verdict::Forward { plan, .. } = verdict {
        let Some((Expected::Region(region), _)) = &expected else {
            panic!("forwarded what the oracle refuses: {expected:?} ({platform:?})");
        };
        assert_eq!(
            region_of_url(&plan.first.url),
            region,
            "planned to another region's origin"
        );
        assert!(plan.headers.iter().any(|(n, v)| *n == HEADER_SIGNATURE
            && SignatureHeader::parse(v).is_some_and(|s| s.region == region.as_str())));
        assert!(
            plan.headers.iter().all(|(_, v)| !v.contains(['\r', '\n'])),
            "header injection"
        );
    }
});
