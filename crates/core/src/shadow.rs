//! Shadow evaluation: what a candidate policy would decide for a submission, for comparison only.
//!
//! A candidate policy (`policy/candidate.json`, compiled in beside the live one) is evaluated on
//! every submission the live policy routed to one of its campaigns, with the same phase functions
//! the live pipeline runs: `request_check`, `validate` and `classify`, against the candidate's
//! campaign of the same id. That is the part of a decision a policy makes about a submission: is
//! it readable and valid, and which region's law it falls under. The comparison covers exactly
//! that, for both policies: an outcome (a refusal code of one of those phases, or [`PLACED`]) and
//! the region. It does not cover
//! - routing (method, CORS origins): the live policy's route chose the campaign;
//! - the hostname a submission arrived on (`phase::ingress`): which hostname takes a region is
//!   the live configuration's, and a placed submission counts as placed whatever it answered;
//! - admission: the candidate's limits would need state of their own, and charging the live
//!   limiters with a second policy's quotas would change live answers (state made under one
//!   quota means nothing under another);
//! - the bot screen and forwarding, which depend on configuration and origins, not the policy.
//!
//! The evaluation is pure: it reads the request and the candidate and changes nothing, so no
//! answer, limit or forward can differ for having run it. The summary log counts the pairs that
//! differ (see `journal`).

use std::ops::ControlFlow;

use crate::outcome::Outcome;
use crate::phase::request::{request_check, Facts};
use crate::phase::residency::classify;
use crate::phase::validate::validate;
use crate::reply::Phase;
use harbour_policy::Policy;

/// What logs call the outcome of a submission that passed every phase the comparison covers.
pub const PLACED: &str = "placed";

/// What one policy decided, within the comparison's scope.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct View<'p> {
    /// The region's id, when the submission was placed.
    pub region: Option<&'p str>,
    /// A refusal of `request_check`, `validate` or `classify` (`NotFound` when the candidate has
    /// no such campaign); `None` when the submission was placed.
    pub outcome: Option<Outcome>,
}

impl<'p> View<'p> {
    /// Placed in `region`.
    pub fn placed(region: Option<&'p str>) -> View<'p> {
        View {
            region,
            outcome: None,
        }
    }

    /// The outcome's name in logs: a refusal's, or [`PLACED`].
    pub fn outcome_name(&self) -> &'static str {
        self.outcome.map_or(PLACED, Outcome::name)
    }

    /// The live view from how far the live pipeline got: `stopped` is the phase and outcome of
    /// its answer (None when it forwarded), `region` what classify placed. None when the live
    /// pipeline stopped before the phases the comparison covers (no submission to a campaign).
    pub fn live(stopped: Option<(Phase, Outcome)>, region: Option<&'p str>) -> Option<View<'p>> {
        let placed = View::placed(region);
        let Some((phase, outcome)) = stopped else {
            return Some(placed);
        };
        match phase {
            // A request without valid work never had its submission read: nothing to compare.
            Phase::Configure | Phase::Route | Phase::Challenge => None,
            Phase::RequestCheck | Phase::Validate | Phase::Classify => Some(View {
                region: None,
                outcome: Some(outcome),
            }),
            // Where a placed submission is taken (the ingress) is the configuration's matter, as
            // routing is; the comparison ends at placing it.
            Phase::Ingress
            | Phase::Shed
            | Phase::Admit
            | Phase::Screen
            | Phase::Plan
            | Phase::Forward => Some(placed),
        }
    }
}

/// The live and candidate views of one submission to one campaign.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Comparison<'p> {
    pub campaign: &'p str,
    pub live: View<'p>,
    pub candidate: View<'p>,
}

impl Comparison<'_> {
    pub fn region_differs(&self) -> bool {
        self.live.region != self.candidate.region
    }

    pub fn outcome_differs(&self) -> bool {
        self.live.outcome != self.candidate.outcome
    }
}

/// What `candidate` decides for a submission to the campaign `campaign_id`.
pub fn evaluate<'p>(candidate: &'p Policy, campaign_id: &str, facts: &Facts) -> View<'p> {
    let Some((_, campaign)) = candidate.find_campaign(campaign_id) else {
        return View {
            region: None,
            outcome: Some(Outcome::NotFound),
        };
    };
    let placed = (|| {
        let payload = request_check(candidate, facts)?;
        let submission = validate(campaign, payload, facts.notice)?;
        let (declared, confirmed) = (submission.declared_country(), submission.confirmed_region());
        classify(candidate, campaign, facts.country, declared, confirmed)
    })();
    match placed {
        ControlFlow::Continue(residency) => {
            View::placed(Some(candidate.region(residency.region).id.as_str()))
        }
        ControlFlow::Break(answer) => View {
            region: None,
            outcome: Some(answer.outcome),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::phase::request::Body;
    use harbour_policy::SHIPPED_POLICY;

    fn facts<'a>(country: &'a str, body: &'a str) -> Facts<'a> {
        Facts {
            method: "POST",
            url: "https://campaign.example/api/campaigns/spring-launch/submissions",
            content_type: Some("application/json"),
            body: Body::Bytes(body.as_bytes()),
            country: Some(country),
            client_ip: Some("192.0.2.1"),
            idempotency_key: None,
            challenge: None,
            origin: None,
            notice: Some(crate::phase::validate::shipped_notice()),
            now_ms: 1,
        }
    }

    fn confirmed(country: &str, region: &str) -> String {
        format!(
            r#"{{"name":"Ada","email":"ada@example.org","country":"{country}","consent":true,"confirm_region":"{region}"}}"#
        )
    }

    fn entry(country: &str) -> String {
        format!(
            r#"{{"name":"Ada","email":"ada@example.org","country":"{country}","consent":true}}"#
        )
    }

    /// The shipped policy with `edit` applied.
    fn candidate(edit: impl FnOnce(&mut serde_json::Value)) -> Policy {
        let mut json: serde_json::Value = serde_json::from_str(SHIPPED_POLICY).unwrap();
        edit(&mut json);
        Policy::parse(&json.to_string()).unwrap()
    }

    #[test]
    fn the_candidate_runs_the_live_phases() {
        let same = Policy::shipped().unwrap();
        let view =
            |country: &str, body: &str| evaluate(&same, "spring-launch", &facts(country, body));
        fn seen(view: View<'_>) -> (Option<String>, &'static str) {
            (view.region.map(str::to_owned), view.outcome_name())
        }
        let placed = |region: &str| (Some(region.to_owned()), PLACED);
        let refused = |name| (None::<String>, name);
        assert_eq!(seen(view("IT", &entry("IT"))), placed("eu"));
        // Connecting from the rest of the world, declaring China: stored there once confirmed.
        assert_eq!(
            seen(view("US", &entry("CN"))),
            refused("storage_unconfirmed")
        );
        assert_eq!(seen(view("US", &confirmed("CN", "cn"))), placed("cn"));
        assert_eq!(
            seen(view("IT", &entry("CN"))),
            refused("residency_conflict")
        );
        assert_eq!(
            seen(view("T1", &entry("US"))),
            refused("country_anonymised")
        );
        assert_eq!(seen(view("IT", "{}")), refused("validation_failed"));
        assert_eq!(seen(view("IT", "{")), refused("malformed_body"));
        let unknown = evaluate(&same, "autumn", &facts("IT", &entry("IT")));
        assert_eq!(seen(unknown), refused("not_found"));
    }

    #[test]
    fn a_moved_country_and_a_changed_rule_show_in_the_candidates_view() {
        let moved = candidate(|p| {
            let eu = p["regions"][2]["countries"].as_array_mut().unwrap();
            eu.retain(|c| c != "IT");
            p["regions"][1]["countries"]
                .as_array_mut()
                .unwrap()
                .push("IT".into());
        });
        let it = evaluate(&moved, "spring-launch", &facts("IT", &entry("IT")));
        assert_eq!(it.region, Some("ru"));
        let stricter = candidate(|p| p["on_conflict"] = "stricter".into());
        let conflict = evaluate(
            &stricter,
            "spring-launch",
            &facts("IT", &confirmed("CN", "cn")),
        );
        assert_eq!(conflict.region, Some("cn"));
    }

    #[test]
    fn the_live_view_stops_where_the_live_pipeline_did() {
        assert_eq!(
            View::live(Some((Phase::Route, Outcome::NotFound)), None),
            None
        );
        assert_eq!(
            View::live(Some((Phase::Validate, Outcome::ValidationFailed)), None),
            Some(View {
                region: None,
                outcome: Some(Outcome::ValidationFailed)
            })
        );
        // Limits are outside the comparison: a limited submission was placed.
        assert_eq!(
            View::live(
                Some((
                    Phase::Admit,
                    Outcome::RateLimited(crate::phase::admission::Layer::Client)
                )),
                Some("eu")
            ),
            Some(View::placed(Some("eu")))
        );
        assert_eq!(
            View::live(None, Some("cn")).map(|v| v.outcome_name()),
            Some(PLACED)
        );
    }
}
