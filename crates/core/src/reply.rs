//! Replies to the visitor, built as plain data for the edge shell to send, and the pipeline's
//! early answers.
//!
//! Refusals are RFC 9457 problem details (`application/problem+json`) with a stable `code` a
//! page can act on. The detail never carries internal error text: configuration and origin
//! trouble are logged, the visitor gets a generic sentence and, where retrying helps, a
//! `Retry-After`. An accepted submission is answered by [`accepted`] alone, whether an origin
//! stored it or it was quietly dropped as a bot's, so the two cannot differ in shape.

use std::ops::ControlFlow;

use serde::Serialize;

use harbour_contract::http::HEADER_IDEMPOTENCY_KEY;
use harbour_policy::text::{decimal, push_quoted, quoted};

use crate::outcome::Outcome;

pub const PROBLEM_JSON: &str = "application/problem+json";
pub const JSON: &str = "application/json";

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    pub body: String,
    /// The outcome a problem answers, kept beside the body so logs need not parse it back.
    #[serde(skip)]
    pub outcome: Option<Outcome>,
    /// How long the shell waits before sending it: 0 but for a bot's decoy receipt, which must
    /// take as long as a real one (an origin round trip) or it tells itself apart.
    #[serde(skip)]
    pub delay_ms: u64,
}

impl Reply {
    /// A JSON answer; `body` is already written as JSON.
    pub fn json(status: u16, body: String) -> Reply {
        Reply {
            status,
            headers: vec![
                ("content-type", JSON.into()),
                ("cache-control", "no-store".into()),
            ],
            body,
            outcome: None,
            delay_ms: 0,
        }
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn with_header(mut self, name: &'static str, value: impl Into<String>) -> Reply {
        self.headers.push((name, value.into()));
        self
    }

    /// The problem's machine code, as the body carries it.
    pub fn code(&self) -> Option<&'static str> {
        self.outcome.and_then(Outcome::code)
    }
}

/// A problem detail answering `outcome`, whose `code` it carries; `extra` members (name, value
/// already written as JSON) are merged into the object. Written by hand rather than through
/// `serde_json::Value`, whose map and serialiser cost the worker several KB: members in name
/// order, as a `Value` object writes them.
pub fn problem(
    status: u16,
    outcome: Outcome,
    title: &str,
    detail: &str,
    extra: &[(&'static str, String)],
) -> Reply {
    let code = outcome.code().unwrap_or(outcome.name());
    let mut kind = String::from("urn:harbour:problem:");
    kind.push_str(code);
    let status_text = decimal(u64::from(status));
    let (code, title, detail, kind) = (quoted(code), quoted(title), quoted(detail), quoted(&kind));
    let mut members: Vec<(&str, &str)> = vec![
        ("code", &code),
        ("detail", &detail),
        ("status", &status_text),
        ("title", &title),
        ("type", &kind),
    ];
    for (name, value) in extra {
        match members.iter().position(|(n, _)| *n >= *name) {
            Some(at) if members.get(at).is_some_and(|(n, _)| n == name) => {
                if let Some(member) = members.get_mut(at) {
                    member.1 = value;
                }
            }
            Some(at) => members.insert(at, (name, value)),
            None => members.push((name, value)),
        }
    }
    let mut body = String::with_capacity(256);
    body.push('{');
    for (i, (name, value)) in members.iter().enumerate() {
        if i > 0 {
            body.push(',');
        }
        push_quoted(&mut body, name);
        body.push(':');
        body.push_str(value);
    }
    body.push('}');
    Reply {
        status,
        headers: vec![
            ("content-type", PROBLEM_JSON.into()),
            ("cache-control", "no-store".into()),
        ],
        body,
        outcome: Some(outcome),
        delay_ms: 0,
    }
}

/// The pipeline's phases, in the order a request meets them (see `pipeline`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// The isolate's configuration could not be assembled.
    Configure,
    Route,
    RequestCheck,
    /// The proof of work (see `challenge`).
    Challenge,
    Validate,
    Classify,
    /// The hostname a submission arrived on takes its region's submissions (`phase::ingress`).
    Ingress,
    /// Every origin of the region is shedding load (`breaker`).
    Shed,
    Admit,
    Screen,
    Plan,
    Forward,
}

impl Phase {
    /// The name logs carry.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Configure => "configure",
            Phase::Route => "route",
            Phase::RequestCheck => "request_check",
            Phase::Challenge => "challenge",
            Phase::Validate => "validate",
            Phase::Classify => "classify",
            Phase::Ingress => "ingress",
            Phase::Shed => "shed",
            Phase::Admit => "admit",
            Phase::Screen => "screen",
            Phase::Plan => "plan",
            Phase::Forward => "forward",
        }
    }
}

/// A phase's answer: the reply, the phase that gave it and its outcome.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Answer {
    pub phase: Phase,
    pub outcome: Outcome,
    pub reply: Reply,
    /// The receipt id an accepted answer gives, remembered for the solution's replays.
    pub receipt: Option<String>,
}

impl Answer {
    /// Answered with `reply`: a problem's own outcome, or a description.
    pub fn new(phase: Phase, reply: Reply) -> Answer {
        Answer {
            phase,
            outcome: reply.outcome.unwrap_or(Outcome::Described),
            reply,
            receipt: None,
        }
    }

    /// The one receipt for an accepted entry (see [`accepted`]), counted under `outcome`.
    pub fn accepted(phase: Phase, outcome: Outcome, receipt: Receipt) -> Answer {
        let Receipt {
            id,
            region_id,
            key,
            replayed,
        } = receipt;
        Answer {
            phase,
            outcome,
            reply: accepted(&id, region_id, key, replayed),
            receipt: Some(id),
        }
    }

    /// Answered with `reply` under an outcome its reply does not tell (a decoy receipt must not).
    pub fn counted_as(mut self, outcome: Outcome) -> Answer {
        self.outcome = outcome;
        self
    }
}

/// What a phase returns: go on with a value, or answer now.
pub type Flow<T> = ControlFlow<Answer, T>;

/// The browser origin a cross-origin reply is addressed to, when the campaign allows it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Cors(pub Option<String>);

impl Cors {
    pub fn apply(&self, reply: Reply) -> Reply {
        let Some(origin) = &self.0 else {
            return reply;
        };
        reply
            .with_header("access-control-allow-origin", origin.clone())
            .with_header(
                "access-control-expose-headers",
                "retry-after, ratelimit, ratelimit-policy, idempotency-key, idempotent-replayed",
            )
            .with_header("vary", "origin")
    }
}

/// What an accepted answer tells the visitor.
pub struct Receipt<'a> {
    pub id: String,
    pub region_id: &'a str,
    pub key: &'a str,
    /// A resend of an entry already accepted.
    pub replayed: bool,
}

/// The one receipt for an accepted submission (202): `{"status":"accepted","receipt":{"id",
/// "region"},"idempotency_key"}` with the key also as a header; `replayed` adds
/// `Idempotent-Replayed: true`.
pub fn accepted(receipt_id: &str, region_id: &str, key: &str, replayed: bool) -> Reply {
    let mut body = String::with_capacity(80 + receipt_id.len() + key.len());
    body.push_str("{\"status\":\"accepted\",\"receipt\":{\"id\":");
    push_quoted(&mut body, receipt_id);
    body.push_str(",\"region\":");
    push_quoted(&mut body, region_id);
    body.push_str("},\"idempotency_key\":");
    push_quoted(&mut body, key);
    body.push('}');
    let mut headers = vec![
        ("content-type", JSON.into()),
        ("cache-control", "no-store".into()),
        ("idempotency-key", key.to_owned()),
    ];
    if replayed {
        headers.push(("idempotent-replayed", "true".into()));
    }
    Reply {
        status: 202,
        headers,
        body,
        outcome: None,
        delay_ms: 0,
    }
}

/// 503 for a region whose origins are all shedding load (`RegionBusy` without a call,
/// `OriginsBusy` after one), with the visitor's idempotency key so the retry (after
/// `Retry-After`) is stored at most once.
pub fn busy(outcome: Outcome, key: &str, wait_ms: u64) -> Reply {
    let seconds = retry_after_seconds(wait_ms);
    problem(
        503,
        outcome,
        "Lots of entries right now",
        "Your entry was not stored yet. Please try again shortly with the same Idempotency-Key; it will not be stored twice.",
        &[
            ("idempotency_key", quoted(key)),
            ("retry_after_s", decimal(seconds)),
        ],
    )
    .with_header("retry-after", decimal(seconds))
    .with_header(HEADER_IDEMPOTENCY_KEY, key.to_owned())
}

/// 503 with retry advice and, when there is one, the idempotency key the retry must carry: for an
/// entry that may or may not have been stored, or was not taken at all.
pub fn retry_later(outcome: Outcome, title: &str, key: Option<&str>, wait_ms: u64) -> Reply {
    let extra: Vec<(&'static str, String)> = key
        .map(|key| ("idempotency_key", quoted(key)))
        .into_iter()
        .collect();
    let reply = problem(
        503,
        outcome,
        title,
        "Please try again shortly with the same Idempotency-Key; it will not be stored twice.",
        &extra,
    )
    .with_header("retry-after", decimal(retry_after_seconds(wait_ms)));
    match key {
        Some(key) => reply.with_header(HEADER_IDEMPOTENCY_KEY, key.to_owned()),
        None => reply,
    }
}

/// Seconds for `Retry-After` (RFC 9110 §10.2.3): whole seconds, rounded up, at least one.
pub fn retry_after_seconds(wait_ms: u64) -> u64 {
    wait_ms.div_ceil(1000).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    #[test]
    fn problem_body_snapshot() {
        let reply = problem(
            422,
            Outcome::ValidationFailed,
            "The submission has errors",
            "1 field needs attention",
            &[(
                "errors",
                r#"[{"code":"invalid_email","field":"email"}]"#.to_owned(),
            )],
        );
        assert_eq!(reply.status, 422);
        assert_eq!(reply.header("Content-Type"), Some(PROBLEM_JSON));
        assert_eq!(
            reply.body,
            r#"{"code":"validation_failed","detail":"1 field needs attention","errors":[{"code":"invalid_email","field":"email"}],"status":422,"title":"The submission has errors","type":"urn:harbour:problem:validation_failed"}"#
        );
        assert_eq!(reply.code(), Some("validation_failed"));
    }

    /// The hand-written body is what a `serde_json::Value` object writes: members in name order
    /// (extras among them), strings escaped alike.
    #[test]
    fn problem_bodies_match_serde_json() {
        let odd = "a\"b\\c\n\r\t\u{8}\u{c}\u{1}\u{1f}\u{7f}é€😀</script>";
        for (title, detail) in [("T", "d"), (odd, odd), ("", "")] {
            let reply = problem(
                503,
                Outcome::LocationLimitUnavailable,
                title,
                detail,
                &[
                    ("retry_after_s", decimal(7)),
                    ("idempotency_key", quoted(odd)),
                    ("challenge_url", quoted("/api/campaigns/x")),
                    ("submit", quoted(odd)),
                ],
            );
            let expected = serde_json::json!({
                "type": "urn:harbour:problem:location_limit_unavailable",
                "title": title,
                "status": 503,
                "code": "location_limit_unavailable",
                "detail": detail,
                "retry_after_s": 7,
                "idempotency_key": odd,
                "challenge_url": "/api/campaigns/x",
                "submit": odd,
            });
            assert_eq!(reply.body, expected.to_string());
        }
        let bare = problem(404, Outcome::NotFound, "Not found", "no such campaign", &[]);
        let expected = serde_json::json!({
            "type": "urn:harbour:problem:not_found", "title": "Not found", "status": 404,
            "code": "not_found", "detail": "no such campaign",
        });
        assert_eq!(bare.body, expected.to_string());
    }

    #[test]
    fn the_accepted_receipt_snapshot() {
        let reply = accepted("eu-1", "eu", "k\"1", true);
        assert_eq!(reply.status, 202);
        assert_eq!(
            reply.body,
            r#"{"status":"accepted","receipt":{"id":"eu-1","region":"eu"},"idempotency_key":"k\"1"}"#
        );
        let parsed: Value = serde_json::from_str(&reply.body).unwrap();
        assert_eq!(parsed["idempotency_key"], "k\"1");
        assert_eq!(reply.header("idempotency-key"), Some("k\"1"));
        assert_eq!(reply.header("idempotent-replayed"), Some("true"));
        assert_eq!(
            accepted("eu-1", "eu", "k", false).header("idempotent-replayed"),
            None
        );
    }

    #[test]
    fn cors_headers_only_for_an_allowed_origin() {
        let plain = Reply::json(200, "{}".into());
        assert_eq!(Cors::default().apply(plain.clone()), plain);
        let crossed = Cors(Some("https://a.example".into())).apply(plain);
        assert_eq!(
            crossed.header("access-control-allow-origin"),
            Some("https://a.example")
        );
        assert_eq!(crossed.header("vary"), Some("origin"));
    }

    #[test]
    fn retry_after_rounds_up() {
        assert_eq!(retry_after_seconds(0), 1);
        assert_eq!(retry_after_seconds(1), 1);
        assert_eq!(retry_after_seconds(1000), 1);
        assert_eq!(retry_after_seconds(1001), 2);
        assert_eq!(retry_after_seconds(12_000), 12);
    }
}
