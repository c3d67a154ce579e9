//! Outcomes in words, for the campaign team: what each chart's series is called. The code stays
//! in brackets, for whoever looks it up (README, "Logs"; `docs/residency.md`).

use harbour_contract::points::BREAKER_OPENED;
use harbour_contract::response::Code;

/// What became of a submission, as the charts group it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Group {
    Accepted,
    Refused,
    Shed,
    Failed,
    /// Not an answer: a breaker opening.
    Breaker,
}

/// The group of an outcome (as the edge's log and data points name it).
pub fn group(outcome: &str) -> Group {
    match outcome {
        "stored" | "replayed" => Group::Accepted,
        "region_busy" | "origins_busy" | "location_limit_unavailable" => Group::Shed,
        "origins_unavailable"
        | "origin_bad_answer"
        | "origin_refused"
        | "no_origin"
        | "config_invalid"
        | "admission_expired"
        | "forward_expired"
        | "forward_orphaned" => Group::Failed,
        BREAKER_OPENED => Group::Breaker,
        _ => Group::Refused,
    }
}

fn words(outcome: &str) -> &str {
    match outcome {
        "stored" => "stored",
        "replayed" => "sent again, already stored",
        "validation_failed" => "form errors",
        "residency_conflict" => "two countries in two regions",
        "storage_unconfirmed" => "storage abroad not confirmed",
        "rate_limited_client" | "rate_limited_location" => "over the per-visitor limit",
        "rate_limited_campaign" | "rate_limited_region" => "over an isolate's budget",
        "challenge_required" => "no proof of work",
        "challenge_expired" => "proof of work expired",
        "challenge_invalid" => "proof of work wrong",
        "country_unknown" => "country unknown",
        "country_anonymised" => "country hidden (Tor)",
        "country_missing" => "no country",
        // The origin's code, passed on by the edge as its outcome: spelled in the contract only.
        o if o == Code::AlreadyEntered.as_str() => "already entered",
        "key_reused" | "origin_conflict" => "key used for another entry",
        "entry_in_progress" => "already being sent",
        "honeypot" => "a bot (decoy receipt)",
        "not_found" => "no such campaign",
        "origin_not_allowed" => "page not allowed",
        "method_not_allowed"
        | "unsupported_media_type"
        | "body_too_large"
        | "body_incomplete"
        | "invalid_utf8"
        | "malformed_body"
        | "duplicate_key"
        | "too_many_keys" => "unreadable request",
        "region_busy" => "origins full, not called",
        "origins_busy" => "origins full",
        "location_limit_unavailable" => "location's count unavailable",
        "origins_unavailable" | "no_origin" => "origins not answering",
        "origin_bad_answer" | "origin_refused" => "origin error",
        "config_invalid" => "configuration invalid",
        "admission_expired" | "forward_expired" | "forward_orphaned" => "edge lost track",
        other => other,
    }
}

/// A series' name: `accepted`, or the group and the outcome in words with its code.
pub fn label(outcome: &str) -> String {
    match group(outcome) {
        Group::Accepted => format!("accepted: {}", words(outcome)),
        Group::Refused => format!("refused: {} ({outcome})", words(outcome)),
        Group::Shed => format!("shed, asked to retry: {} ({outcome})", words(outcome)),
        Group::Failed => format!("failed: {} ({outcome})", words(outcome)),
        Group::Breaker => "breaker openings".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_outcome_has_words_and_a_group() {
        assert_eq!(label("stored"), "accepted: stored");
        assert_eq!(
            label("rate_limited_client"),
            "refused: over the per-visitor limit (rate_limited_client)"
        );
        assert_eq!(group("region_busy"), Group::Shed);
        assert_eq!(group("origins_unavailable"), Group::Failed);
        assert_eq!(
            label("something_new"),
            "refused: something_new (something_new)"
        );
    }
}
