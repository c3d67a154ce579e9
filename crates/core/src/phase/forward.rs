//! The forward phase: what follows each origin's answer, decided in one place.
//!
//! Rules:
//! - The answering origin's breaker learns what it said (full, answered, or silent).
//! - After a connection failure, a timeout or 502/503/504 (see `attempt`), the next origin of the
//!   same region whose breaker lets it be called is tried, while the deadline leaves time. The
//!   list is the region's own: never another region, not on error, not on timeout.
//! - Otherwise the visitor is answered: the receipt (the origin's id, for the ticket's region
//!   only), a second entry (409 `already_entered`), a key reused for other fields (409), every
//!   origin full (503 `origins_busy` with the key, the isolate's limits given back: nothing was
//!   stored and the visitor is not to blame), none answering (503 with the key), or 502.

use harbour_contract::response::{self, Code};
use harbour_policy::RegionIndex;

use crate::attempt::{attempt_budget_ms, Attempt, AttemptResult, DEADLINE_MS};
use crate::breaker::{transition_line, Breakers, Report, Transition, OPEN_MS};
use crate::config::Config;
use crate::context::Context;
use crate::outcome::Outcome;
use crate::phase::admission::Admission;
use crate::phase::validate::invalid_fields;
use crate::reply::{busy, problem, retry_later, Answer, Flow, Phase, Receipt, Reply};
use crate::tickets::Filed;
use harbour_policy::text::quoted;

/// What the visitor is asked to wait when every origin of the region failed.
pub const ORIGINS_UNAVAILABLE_RETRY_MS: u64 = 5_000;
/// How long after its deadline a ticket is kept for an attempt still reporting back.
const TICKET_GRACE_MS: u64 = 2_000;

/// A forward under way, held by the isolate between attempts. It names a region, and every
/// origin is looked up from that region's list again, so nothing in it can point elsewhere.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ticket {
    pub region: RegionIndex,
    /// Position, in the region's list, of the origin of the attempt under way.
    pub origin: usize,
    pub ctx: Context,
}

impl Filed for Ticket {
    fn drop_after_ms(&self) -> u64 {
        self.ctx
            .received_ms
            .saturating_add(DEADLINE_MS + TICKET_GRACE_MS)
    }
}

/// The isolate state an origin's answer updates.
pub struct Learning<'a> {
    pub breakers: &'a mut Breakers,
    pub admission: &'a mut Admission,
    /// Log lines of state changes (a breaker opening or closing).
    pub notes: &'a mut Vec<String>,
    /// The regions whose breakers opened, one entry per opening (counted in the data points).
    pub openings: &'a mut Vec<RegionIndex>,
}

/// The next attempt of a forward: the origin's position in the region's list, and where and how
/// long.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Onward {
    pub origin: usize,
    pub attempt: Attempt,
}

/// The forward phase, after the attempt on `ticket.origin` ended with `result`: the next
/// attempt, or the visitor's answer.
pub fn after_attempt(
    config: &Config,
    state: Learning,
    ticket: &Ticket,
    result: AttemptResult,
    now_ms: u64,
) -> Flow<Onward> {
    let region = ticket.region;
    let report = Report::of(&result);
    if let Some(transition) = state.breakers.record(region, ticket.origin, report, now_ms) {
        let region_id = &config.policy.region(region).id;
        state
            .notes
            .push(transition_line(region_id, ticket.origin, transition));
        if let Transition::Opened { .. } = transition {
            state.openings.push(region);
        }
    }
    if !result.is_retryable() {
        return Flow::Break(final_answer(config, ticket, result));
    }
    let next = state
        .breakers
        .pick(region, ticket.origin + 1, now_ms)
        .and_then(|next| Some((next, config.origins(region).get(next)?)));
    let budget = attempt_budget_ms(ticket.ctx.received_ms, now_ms);
    if let (Some((origin, next)), Some(timeout_ms)) = (next, budget) {
        let attempt = Attempt {
            url: next.url.clone(),
            timeout_ms,
        };
        return Flow::Continue(Onward { origin, attempt });
    }
    let key = ticket.ctx.key.as_deref().unwrap_or_default();
    if let Report::Busy { .. } = report {
        // Turned away by every origin it could try, nothing stored: the limits give it back.
        if let Some(charge) = &ticket.ctx.charge {
            state.admission.refund(charge, now_ms);
        }
        let wait_ms = state
            .breakers
            .available(region, now_ms)
            .err()
            .unwrap_or(OPEN_MS);
        return Flow::Break(Answer::new(
            Phase::Forward,
            busy(Outcome::OriginsBusy, key, wait_ms),
        ));
    }
    let reply = retry_later(
        Outcome::OriginsUnavailable,
        "Your entry could not be stored right now",
        Some(key),
        ORIGINS_UNAVAILABLE_RETRY_MS,
    );
    Flow::Break(Answer::new(Phase::Forward, reply))
}

/// The visitor's answer to an origin's final answer.
fn final_answer(config: &Config, ticket: &Ticket, result: AttemptResult) -> Answer {
    let key = ticket.ctx.key.as_deref().unwrap_or_default();
    let region_id = &config.policy.region(ticket.region).id;
    let AttemptResult::Answered { status, body } = result else {
        // Unreachable by construction (failures are retryable), kept total for safety.
        return bad_gateway(key, Outcome::OriginBadAnswer);
    };
    match status {
        200 | 201 => match response::receipt(body, region_id) {
            Some(id) => {
                let replayed = status == 200;
                let outcome = if replayed {
                    Outcome::Replayed
                } else {
                    Outcome::Stored
                };
                let receipt = Receipt {
                    id,
                    region_id,
                    key,
                    replayed,
                };
                Answer::accepted(Phase::Forward, outcome, receipt)
            }
            None => bad_gateway(key, Outcome::OriginBadAnswer),
        },
        409 if response::code(body) == Some(Code::AlreadyEntered) => Answer::new(
            Phase::Forward,
            problem(
                409,
                Outcome::AlreadyEntered,
                "You have already entered",
                "This campaign takes one entry per person, and we already have yours.",
                &[],
            ),
        ),
        409 => Answer::new(
            Phase::Forward,
            problem(
                409,
                Outcome::OriginConflict,
                "This key was already used for a different entry",
                "Start a new entry; the key belongs to an earlier, different submission.",
                &[],
            ),
        ),
        // A value the edge's check let through and only the origin's Unicode fold refuses:
        // the visitor corrects the field it names (one of the campaign's, or this is no answer
        // to show).
        422 if response::code(body) == Some(Code::InvalidIdentifyingField) => {
            let campaign = ticket
                .ctx
                .campaign
                .and_then(|c| config.policy.campaigns.get(c.get()));
            let field = response::field(body)
                .and_then(|name| campaign?.fields.iter().find(|f| f.name == name));
            match field {
                Some(field) => Answer::new(
                    Phase::Forward,
                    invalid_fields(vec![harbour_policy::field::identifies_no_one(field)]),
                ),
                None => bad_gateway(key, Outcome::OriginRefused),
            }
        }
        _ => bad_gateway(key, Outcome::OriginRefused),
    }
}

fn bad_gateway(key: &str, outcome: Outcome) -> Answer {
    let reply: Reply = problem(
        502,
        outcome,
        "Your entry could not be stored",
        "The storage service did not accept it. Please try again later with the same Idempotency-Key.",
        &[("idempotency_key", quoted(key))],
    )
    .with_header(
        "retry-after",
        crate::reply::retry_after_seconds(ORIGINS_UNAVAILABLE_RETRY_MS).to_string(),
    )
    .with_header(
        harbour_contract::http::HEADER_IDEMPOTENCY_KEY,
        key.to_owned(),
    );
    Answer::new(Phase::Forward, reply)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn ticket(received_ms: u64) -> Ticket {
        let mut ctx = Context::new("r".into(), received_ms);
        ctx.key = Some("k".into());
        Ticket {
            region: harbour_policy::code::region_index(0),
            origin: 0,
            ctx,
        }
    }

    #[test]
    fn an_origins_conflict_is_told_apart_from_a_second_entry() {
        let config = crate::config::tests::local_config();
        let outcome = |body: &str| {
            let answer = final_answer(
                &config,
                &ticket(1_000),
                AttemptResult::Answered { status: 409, body },
            );
            let problem: Value = serde_json::from_str(&answer.reply.body).unwrap();
            (
                answer.reply.status,
                problem["code"].as_str().unwrap().to_owned(),
                answer.outcome.name(),
            )
        };
        assert_eq!(
            outcome(r#"{"code":"already_entered"}"#),
            (409, "already_entered".to_owned(), "already_entered")
        );
        for body in [r#"{"code":"idempotency_key_reused"}"#, "", "not json", "{}"] {
            assert_eq!(
                outcome(body),
                (409, "idempotency_key_reused".to_owned(), "origin_conflict"),
                "{body}"
            );
        }
    }

    /// What only the origin's fold refuses reaches the visitor as the field's error, as the
    /// edge's own check would say it; an answer naming no field of the campaign is no answer.
    #[test]
    fn an_origins_refusal_of_an_identifying_value_is_the_fields_error() {
        let config = crate::config::tests::local_config();
        let mut routed = ticket(1_000);
        routed.ctx.campaign = config.policy.find_campaign("spring-launch").map(|(i, _)| i);
        let answer = |ticket: &Ticket, body: &str| {
            let answer = final_answer(
                &config,
                ticket,
                AttemptResult::Answered { status: 422, body },
            );
            let problem: Value = serde_json::from_str(&answer.reply.body).unwrap();
            (answer.reply.status, problem)
        };
        let (status, problem) = answer(
            &routed,
            r#"{"code":"invalid_identifying_field","field":"email"}"#,
        );
        assert_eq!(status, 422);
        assert_eq!(problem["code"], "validation_failed");
        assert_eq!(problem["errors"][0]["field"], "email");
        assert_eq!(problem["errors"][0]["code"], "invalid_email");
        let (status, problem) = answer(
            &routed,
            r#"{"code":"invalid_identifying_field","field":"name"}"#,
        );
        assert_eq!(
            (status, &problem["errors"][0]["code"]),
            (422, &Value::from("invalid_characters"))
        );
        for (ticket, body) in [
            (
                &routed,
                r#"{"code":"invalid_identifying_field","field":"nope"}"#,
            ),
            (&routed, r#"{"code":"invalid_identifying_field"}"#),
            (&routed, r#"{"code":"malformed_body"}"#),
            (
                &ticket(1_000),
                r#"{"code":"invalid_identifying_field","field":"email"}"#,
            ),
        ] {
            let (status, problem) = answer(ticket, body);
            assert_eq!(
                (status, problem["code"].as_str()),
                (502, Some("origin_error")),
                "{body}"
            );
        }
    }

    #[test]
    fn a_receipt_must_name_the_tickets_region() {
        let config = crate::config::tests::local_config();
        let region_id = &config.policy.region(ticket(0).region).id;
        let other = config
            .policy
            .regions
            .iter()
            .find(|r| &r.id != region_id)
            .unwrap();
        let body =
            |region: &str| format!(r#"{{"receipt":{{"id":"{region}-1","region":"{region}"}}}}"#);
        let status = |body: &str| {
            let result = AttemptResult::Answered { status: 201, body };
            final_answer(&config, &ticket(0), result).reply.status
        };
        assert_eq!(status(&body(region_id)), 202);
        assert_eq!(status(&body(&other.id)), 502);
    }
}
