//! How a request ended, as one value: the name logs count it under and the problem `code` its
//! reply carries (the same text for most; where they differ, the log says more than the visitor
//! is told, e.g. which limit layer refused, or that a 202 was a bot's decoy).

use harbour_contract::response::Code;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// A form description or a CORS preflight.
    Described,
    NotFound,
    MethodNotAllowed,
    OriginNotAllowed,
    UnsupportedMediaType,
    BodyTooLarge,
    BodyIncomplete,
    /// No, an expired, or an invalid proof of work.
    Challenge(ChallengeRefusal),
    /// The body could not be read as a submission (400).
    Unreadable(Unreadable),
    /// Field errors (422).
    ValidationFailed,
    /// The same solution (so the same key) is already under way in this isolate.
    InProgress,
    /// The same solution came before with another body: the key belongs to another entry.
    KeyReused,
    /// No region could be chosen (403, or 422 on the country field for a conflict).
    Unplaceable(Unplaceable),
    /// Placed in a region taken on another hostname (421, see `phase::ingress`).
    WrongIngress,
    /// Every origin of the region is shedding load: answered without calling one.
    RegionBusy,
    RateLimited(Layer),
    /// The location's binding did not answer and the campaign fails closed.
    LocationLimitUnavailable,
    /// A bot's submission, answered with a decoy receipt and forwarded nowhere.
    Honeypot,
    /// The region has no origin to plan for (configuration forbids this).
    NoOrigin,
    /// The isolate has no valid configuration.
    ConfigInvalid,
    Stored,
    Replayed,
    /// The origin already holds this person's entry in the campaign.
    AlreadyEntered,
    /// The origin already holds this key with other fields.
    OriginConflict,
    /// Every origin the forward could try was full.
    OriginsBusy,
    /// No origin of the region answered.
    OriginsUnavailable,
    /// An origin's success answer held no receipt of the region.
    OriginBadAnswer,
    /// An origin refused the forward (any other final answer).
    OriginRefused,
    /// The location's answer came for a request the isolate no longer held.
    AdmissionExpired,
    /// An origin's answer came for a forward the isolate no longer held.
    ForwardExpired,
    /// An origin's answer came for a forward filed by an instance that trapped.
    ForwardOrphaned,
}

impl Outcome {
    /// What logs count it under.
    pub fn name(self) -> &'static str {
        match self {
            Outcome::Described => "ok",
            Outcome::NotFound => "not_found",
            Outcome::MethodNotAllowed => "method_not_allowed",
            Outcome::OriginNotAllowed => "origin_not_allowed",
            Outcome::UnsupportedMediaType => "unsupported_media_type",
            Outcome::BodyTooLarge => "body_too_large",
            Outcome::BodyIncomplete => "body_incomplete",
            Outcome::Challenge(refusal) => refusal.code(),
            Outcome::Unreadable(error) => error.code(),
            Outcome::ValidationFailed => "validation_failed",
            Outcome::InProgress => "entry_in_progress",
            Outcome::KeyReused => "key_reused",
            Outcome::Unplaceable(refusal) => refusal.code(),
            Outcome::WrongIngress => "wrong_ingress",
            Outcome::RegionBusy => "region_busy",
            Outcome::RateLimited(layer) => match layer {
                Layer::Client => "rate_limited_client",
                Layer::Campaign => "rate_limited_campaign",
                Layer::Region => "rate_limited_region",
                Layer::Location => "rate_limited_location",
            },
            Outcome::LocationLimitUnavailable => "location_limit_unavailable",
            Outcome::Honeypot => "honeypot",
            Outcome::NoOrigin => "no_origin",
            Outcome::ConfigInvalid => "config_invalid",
            Outcome::Stored => "stored",
            Outcome::Replayed => "replayed",
            Outcome::AlreadyEntered => Code::AlreadyEntered.as_str(),
            Outcome::OriginConflict => "origin_conflict",
            Outcome::OriginsBusy => "origins_busy",
            Outcome::OriginsUnavailable => "origins_unavailable",
            Outcome::OriginBadAnswer => "origin_bad_answer",
            Outcome::OriginRefused => "origin_refused",
            Outcome::AdmissionExpired => "admission_expired",
            Outcome::ForwardExpired => "forward_expired",
            Outcome::ForwardOrphaned => "forward_orphaned",
        }
    }

    /// The problem `code` the visitor's reply carries; `None` for a 2xx.
    pub fn code(self) -> Option<&'static str> {
        Some(match self {
            Outcome::Described | Outcome::Honeypot | Outcome::Stored | Outcome::Replayed => {
                return None
            }
            // A refused conflict is a field error on the country field, like any other.
            Outcome::ValidationFailed | Outcome::Unplaceable(Unplaceable::Conflict) => {
                "validation_failed"
            }
            Outcome::RateLimited(_) => "rate_limited",
            Outcome::NoOrigin | Outcome::OriginsUnavailable => "region_unavailable",
            Outcome::OriginConflict | Outcome::KeyReused => Code::IdempotencyKeyReused.as_str(),
            Outcome::OriginBadAnswer | Outcome::OriginRefused => "origin_error",
            other => other.name(),
        })
    }

    /// 503s that shed load: every origin of a region full (`region_busy` without a call,
    /// `origins_busy` after one) or no answer from the location's binding under `fail_closed`.
    /// They come by the thousand exactly when an isolate is busiest, so logs count them like
    /// visitor outcomes; what caused them is written once (a breaker's transitions, an
    /// unavailable binding at most once a minute).
    pub fn sheds_load(self) -> bool {
        matches!(
            self,
            Outcome::RegionBusy | Outcome::OriginsBusy | Outcome::LocationLimitUnavailable
        )
    }
}

// The refusals phases name, defined here so an outcome needs no phase.

/// A limit layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Layer {
    Client,
    Campaign,
    Region,
    /// Per client across the location: the platform's rate-limiting binding.
    Location,
}

impl Layer {
    pub fn as_str(self) -> &'static str {
        match self {
            Layer::Client => "client",
            Layer::Campaign => "campaign",
            Layer::Region => "region",
            Layer::Location => "location",
        }
    }
}

/// Why a submission's work was not accepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChallengeRefusal {
    /// No `Harbour-Challenge` header.
    Required,
    /// A genuine challenge past its expiry, or issued with less work than is now required.
    Expired,
    /// Anything else: malformed, not issued here, for another campaign, sent without the key it
    /// was solved for, or short of the work. The text says which, for API users.
    Invalid(&'static str),
}

impl ChallengeRefusal {
    pub fn code(self) -> &'static str {
        match self {
            ChallengeRefusal::Required => "challenge_required",
            ChallengeRefusal::Expired => "challenge_expired",
            ChallengeRefusal::Invalid(_) => "challenge_invalid",
        }
    }
}

/// Why no region could be chosen; nothing is forwarded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unplaceable {
    Unknown,
    Tor,
    Missing,
    /// `refuse`: the two signals point to two regions with laws of their own.
    Conflict,
    /// The declared country would move the entry to another region, and the visitor has not
    /// confirmed storage there.
    Unconfirmed,
}

impl Unplaceable {
    pub fn code(&self) -> &'static str {
        match self {
            Unplaceable::Unknown => "country_unknown",
            Unplaceable::Tor => "country_anonymised",
            Unplaceable::Missing => "country_missing",
            Unplaceable::Conflict => CONFLICT,
            Unplaceable::Unconfirmed => UNCONFIRMED,
        }
    }
}

/// The field error code of a refused conflict, and the outcome logs count it under.
pub const CONFLICT: &str = "residency_conflict";

/// The field error code of a declared move the visitor has not confirmed.
pub const UNCONFIRMED: &str = "storage_unconfirmed";

/// A body error (`phase::validate::BodyError`) without its text, as outcomes count it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unreadable {
    InvalidUtf8,
    Malformed,
    DuplicateKey,
    TooManyKeys,
}

impl Unreadable {
    pub fn code(self) -> &'static str {
        match self {
            Unreadable::InvalidUtf8 => "invalid_utf8",
            Unreadable::Malformed => "malformed_body",
            Unreadable::DuplicateKey => "duplicate_key",
            Unreadable::TooManyKeys => "too_many_keys",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_log_says_more_than_the_visitor_is_told_only_where_it_must() {
        assert_eq!(
            (
                Outcome::RateLimited(Layer::Location).name(),
                Outcome::RateLimited(Layer::Location).code()
            ),
            ("rate_limited_location", Some("rate_limited"))
        );
        assert_eq!(Outcome::Honeypot.code(), Outcome::Stored.code());
        assert_eq!(
            Outcome::Unplaceable(Unplaceable::Conflict).name(),
            "residency_conflict"
        );
        assert_eq!(
            Outcome::OriginConflict.code(),
            Some("idempotency_key_reused")
        );
        for outcome in [
            Outcome::NotFound,
            Outcome::RegionBusy,
            Outcome::ConfigInvalid,
        ] {
            assert_eq!(outcome.code(), Some(outcome.name()));
        }
    }
}
