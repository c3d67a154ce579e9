//! Routing and forwarding: which origins may receive a submission, what is sent, and what the
//! visitor is told once the origins have answered.
//!
//! Rules:
//! - A route lists only the origins of the submission's own region, primary first. Failover walks
//!   that list and nothing else: not on error, not on timeout, never to another region.
//! - An attempt is retried on the next origin only after a connection failure, a timeout, or
//!   502/503/504; any other answer is final (RFC 9110 does not make POST safe to repeat, and only
//!   the idempotency key makes these retries harmless).
//! - Each attempt has its own timeout and all of them share one deadline counted from receipt.
//! - The forwarded request is built from nothing: only harbour's own headers, never a copy of
//!   the client's, so client-sent `X-Harbour-*`, hop-by-hop or spoofable headers cannot pass.

use serde_json::json;

use crate::admission::Charge;
pub use crate::challenge::is_well_formed_key;
use crate::config::Config;
use crate::reply::{accepted, problem, retry_after_seconds, Answer, Cors, Flow, Phase, Reply};
use crate::residency::Residency;
use crate::validate::Submission;
use harbour_contract::answer::{self, Code};
use harbour_contract::entry::{EntryBody, Signals};
use harbour_contract::http::{HEADER_IDEMPOTENCY_KEY, HEADER_SIGNATURE, METHOD};
use harbour_contract::signature::{sha256_hex, Signed};
use harbour_policy::field::CleanValue;
use harbour_policy::text::{push_quoted, push_u64};
use harbour_policy::RegionIndex;

pub const ATTEMPT_TIMEOUT_MS: u64 = 3_000;
pub const DEADLINE_MS: u64 = 8_000;
/// An attempt with less time than this left is not started.
pub const MIN_ATTEMPT_MS: u64 = 200;
/// What a visitor is asked to wait when every origin of the region failed.
pub const UNAVAILABLE_RETRY_MS: u64 = 5_000;

/// The same campaign and the same cleaned content give the same key, so a resubmission that lost
/// its key still cannot create a second row.
pub fn derive_key(campaign: &str, canonical_fields: &str) -> String {
    let digest = sha256_hex(format!("{campaign}\n{canonical_fields}").as_bytes());
    format!("h-{}", &digest[..32])
}

/// The time an attempt may take, or `None` when the deadline leaves too little.
pub fn attempt_budget_ms(received_ms: u64, now_ms: u64) -> Option<u64> {
    let deadline = received_ms.saturating_add(DEADLINE_MS);
    let left = deadline.saturating_sub(now_ms);
    (left >= MIN_ATTEMPT_MS).then(|| left.min(ATTEMPT_TIMEOUT_MS))
}

/// State carried through the edge shell between attempts. It names a region, and every origin
/// is looked up from that region's list again, so nothing in it can point elsewhere.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ticket {
    pub region: RegionIndex,
    pub campaign: String,
    pub key: String,
    pub request_id: String,
    pub received_ms: u64,
    /// Index into the region's origins of the attempt under way.
    pub attempt: usize,
    /// Attempts made, the one under way included (origins whose breaker was open are skipped,
    /// so this can be less than `attempt + 1`).
    pub attempts: u32,
    pub rate_headers: Vec<(&'static str, String)>,
    pub cors: Cors,
    /// What the isolate's limits were charged, given back if every origin turns it away.
    pub charge: Option<Charge>,
}

/// How long after its deadline a ticket is kept for an attempt still reporting back.
const TICKET_GRACE_MS: u64 = 2_000;
/// More tickets than this (a flood of requests whose handlers never report back) evicts the
/// oldest; a report for an evicted ticket is answered 503 with retry advice.
pub const MAX_TICKETS: usize = 100_000;

/// Something filed while the shell awaits the platform, dropped after a time of its own.
pub trait Filed {
    /// When to drop it if it is never taken back.
    fn drop_after_ms(&self) -> u64;
}

impl Filed for Ticket {
    fn drop_after_ms(&self) -> u64 {
        self.received_ms
            .saturating_add(DEADLINE_MS + TICKET_GRACE_MS)
    }
}

/// Tickets of forwards under way (or other state the shell awaits the platform for), held where
/// they were made so the shell passes only a number between calls. One whose request never
/// reports back (the visitor went away and the handler was cancelled) is dropped once its time
/// has passed, and the oldest goes first past `max` entries.
#[derive(Debug)]
pub struct TicketBook<T = Ticket> {
    /// Id of `entries[0]`; ids grow by one per ticket.
    first_id: u64,
    /// `(dropped after, ticket)`; `None` once taken.
    entries: std::collections::VecDeque<Option<(u64, T)>>,
    max: usize,
}

impl<T: Filed> Default for TicketBook<T> {
    fn default() -> TicketBook<T> {
        TicketBook::with_max(MAX_TICKETS)
    }
}

impl<T: Filed> TicketBook<T> {
    /// A book that holds at most `max` entries.
    pub fn with_max(max: usize) -> TicketBook<T> {
        TicketBook {
            first_id: 0,
            entries: std::collections::VecDeque::new(),
            max: max.max(1),
        }
    }

    /// Files a ticket and returns its id. Drops what has expired at `now_ms` first.
    pub fn file(&mut self, ticket: T, now_ms: u64) -> u64 {
        self.expire(now_ms);
        let drop_after = ticket.drop_after_ms();
        self.entries.push_back(Some((drop_after, ticket)));
        self.first_id + self.entries.len() as u64 - 1
    }

    /// Takes the ticket filed under `id`, once.
    pub fn take(&mut self, id: u64) -> Option<T> {
        let index = usize::try_from(id.checked_sub(self.first_id)?).ok()?;
        let ticket = self.entries.get_mut(index)?.take().map(|(_, t)| t);
        self.trim();
        ticket
    }

    pub fn len(&self) -> usize {
        self.entries.iter().filter(|e| e.is_some()).count()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn expire(&mut self, now_ms: u64) {
        while let Some(front) = self.entries.front() {
            let expired = front.as_ref().is_none_or(|(after, _)| *after <= now_ms);
            if !expired && self.entries.len() < self.max {
                break;
            }
            self.entries.pop_front();
            self.first_id += 1;
        }
    }

    fn trim(&mut self) {
        while matches!(self.entries.front(), Some(None)) {
            self.entries.pop_front();
            self.first_id += 1;
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attempt {
    pub url: String,
    pub timeout_ms: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ForwardPlan {
    pub region: RegionIndex,
    pub first: Attempt,
    pub headers: Vec<(&'static str, String)>,
    pub body: String,
    pub ticket: Ticket,
}

/// The forwarded body (see `harbour_contract::entry`): the cleaned fields with the region tag
/// and both country signals.
pub fn forward_body(
    campaign: &str,
    region_id: &str,
    residency: &Residency,
    fields_json: &str,
    request_id: &str,
    received_ms: u64,
) -> String {
    EntryBody {
        campaign,
        fields_json,
        received_at_ms: received_ms,
        region: region_id,
        request_id,
        signals: Signals {
            basis: residency.basis.as_str(),
            declared_country: residency.declared.as_ref().map(|c| c.as_str()),
            platform_country: residency.platform.code(),
        },
    }
    .write()
}

/// The cleaned fields as a JSON object with keys in sorted order: a canonical form, so the
/// same content always gives the same derived key.
pub fn fields_json(submission: &Submission) -> String {
    // A handful of fields: an insertion sort keeps a general sort out of the wasm.
    let mut fields: Vec<&(String, CleanValue)> = Vec::with_capacity(submission.fields().len());
    for field in submission.fields() {
        let at = fields
            .iter()
            .position(|f| f.0 > field.0)
            .unwrap_or(fields.len());
        fields.insert(at, field);
    }
    let mut out = String::from("{");
    for (i, (name, value)) in fields.into_iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        push_quoted(&mut out, name);
        out.push(':');
        match value {
            CleanValue::Text(t) => push_quoted(&mut out, t),
            CleanValue::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            CleanValue::Integer(n) => {
                if *n < 0 {
                    out.push('-');
                }
                push_u64(&mut out, n.unsigned_abs());
            }
        }
    }
    out.push('}');
    out
}

/// A submission in the form it is forwarded and stored under: its canonical fields and its
/// idempotency key (the client's when well formed, else one derived from the content).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub fields_json: String,
    pub key: String,
}

impl Entry {
    pub fn new(campaign: &str, submission: &Submission, client_key: Option<&str>) -> Entry {
        let fields_json = fields_json(submission);
        let key = match client_key.filter(|k| is_well_formed_key(k)) {
            Some(k) => k.to_owned(),
            None => derive_key(campaign, &fields_json),
        };
        Entry { fields_json, key }
    }
}

pub struct PlanInput<'a> {
    pub residency: &'a Residency,
    /// Which of the region's origins to try first (its position in the region's list).
    pub origin: usize,
    pub campaign: &'a str,
    pub entry: Entry,
    pub request_id: String,
    pub now_ms: u64,
    pub rate_headers: Vec<(&'static str, String)>,
    pub cors: Cors,
    pub charge: Option<Charge>,
}

/// The plan phase: the signed request for the region's origin at position `origin` (the primary
/// unless its breaker is open). A region without that origin (configuration forbids a region
/// without any) is answered 503 rather than guessed at.
pub fn plan(config: &Config, input: PlanInput) -> Flow<ForwardPlan> {
    let PlanInput {
        residency,
        origin,
        campaign,
        entry,
        request_id,
        now_ms,
        rate_headers,
        cors,
        charge,
    } = input;
    let region = residency.region;
    let region_id = config.policy.region(region).id.as_str();
    let (Some(first_origin), Some(setup)) = (
        config.origins(region).get(origin),
        config.regions.get(region.get()),
    ) else {
        let reply = problem(
            503,
            "region_unavailable",
            "Your entry could not be stored right now",
            "please try again shortly",
            None,
        )
        .with_header("retry-after", "5");
        return Flow::Break(Answer::new(Phase::Plan, reply).counted_as("no_origin"));
    };
    let Entry { fields_json, key } = entry;
    let body = forward_body(
        campaign,
        region_id,
        residency,
        &fields_json,
        &request_id,
        now_ms,
    );
    let body_hash = sha256_hex(body.as_bytes());
    let signature = setup.key.sign(&Signed {
        method: METHOD,
        path: &first_origin.path,
        timestamp_ms: now_ms,
        region: region_id,
        idempotency_key: &key,
        body_sha256_hex: &body_hash,
    });
    // Campaign, request id and receipt time are in the body, which the signature covers.
    let headers = vec![
        ("content-type", "application/json".to_owned()),
        (HEADER_IDEMPOTENCY_KEY, key.clone()),
        (HEADER_SIGNATURE, signature),
    ];
    Flow::Continue(ForwardPlan {
        region,
        first: Attempt {
            url: first_origin.url.clone(),
            timeout_ms: ATTEMPT_TIMEOUT_MS.min(DEADLINE_MS),
        },
        headers,
        body,
        ticket: Ticket {
            region,
            campaign: campaign.to_owned(),
            key,
            request_id,
            received_ms: now_ms,
            attempt: origin,
            attempts: 1,
            rate_headers,
            cors,
            charge,
        },
    })
}

/// How one attempt ended, as the shell saw it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttemptResult<'a> {
    Answered {
        status: u16,
        body: &'a str,
    },
    /// Connection refused or reset, DNS failure, or the attempt's timeout.
    Failed,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Next {
    Retry { attempt: Attempt, ticket: Ticket },
    Done { reply: Reply, outcome: &'static str },
}

/// Where failover may go after an attempt, as the caller's breakers see it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Onward {
    /// The position, in the ticket's region's list, of the next origin that may be called.
    pub next: Option<usize>,
    /// Set when the attempt's origin answered that it is full: no origin left means "busy",
    /// to be retried after this long, rather than "unavailable".
    pub busy_retry_ms: Option<u64>,
}

impl Onward {
    /// Every origin after the ticket's, in order: no breaker in the way.
    pub fn in_order(ticket: &Ticket) -> Onward {
        Onward {
            next: Some(ticket.attempt + 1),
            busy_retry_ms: None,
        }
    }
}

/// Whether an attempt's end lets the next origin be tried: a connection failure, a timeout, or
/// 502/503/504. Any other answer is final.
pub fn is_retryable(result: &AttemptResult) -> bool {
    match result {
        AttemptResult::Failed => true,
        AttemptResult::Answered { status, .. } => matches!(status, 502..=504),
    }
}

/// Decides what follows an attempt: the next origin of the same region (`onward.next`, a
/// position in that region's own list), or the visitor's answer.
pub fn after_attempt(
    config: &Config,
    ticket: &Ticket,
    result: AttemptResult,
    now_ms: u64,
    onward: Onward,
) -> Next {
    let region = ticket.region;
    if is_retryable(&result) {
        let next_origin = onward
            .next
            .and_then(|next| Some((next, config.origins(region).get(next)?)));
        let budget = attempt_budget_ms(ticket.received_ms, now_ms);
        if let (Some((next_index, origin)), Some(timeout_ms)) = (next_origin, budget) {
            return Next::Retry {
                attempt: Attempt {
                    url: origin.url.clone(),
                    timeout_ms,
                },
                ticket: Ticket {
                    attempt: next_index,
                    attempts: ticket.attempts.saturating_add(1),
                    ..ticket.clone()
                },
            };
        }
        if let Some(wait_ms) = onward.busy_retry_ms {
            let reply = busy_reply("origins_busy", &ticket.key, wait_ms);
            return finish(reply, ticket, "origins_busy");
        }
        let reply = problem(
            503,
            "region_unavailable",
            "Your entry could not be stored right now",
            "Please try again shortly with the same Idempotency-Key; it will not be stored twice.",
            Some(json!({ "idempotency_key": ticket.key })),
        )
        .with_header(
            "retry-after",
            retry_after_seconds(UNAVAILABLE_RETRY_MS).to_string(),
        )
        .with_header(HEADER_IDEMPOTENCY_KEY, ticket.key.clone());
        return finish(reply, ticket, "origins_unavailable");
    }
    let AttemptResult::Answered { status, body } = result else {
        // Unreachable by construction (failures are retryable), kept total for safety.
        return finish(bad_gateway(ticket), ticket, "origin_bad_answer");
    };
    match status {
        200 | 201 => match answer::receipt(body, &config.policy.region(region).id) {
            Some(id) => {
                let replayed = status == 200;
                let region_id = &config.policy.region(region).id;
                let reply = accepted(&id, region_id, &ticket.key, replayed);
                finish(reply, ticket, if replayed { "replayed" } else { "stored" })
            }
            None => finish(bad_gateway(ticket), ticket, "origin_bad_answer"),
        },
        409 if answer::code(body) == Some(Code::AlreadyEntered) => finish(
            problem(
                409,
                Code::AlreadyEntered.as_str(),
                "You have already entered",
                "This campaign takes one entry per person, and we already have yours.",
                None,
            ),
            ticket,
            Code::AlreadyEntered.as_str(),
        ),
        409 => finish(
            problem(
                409,
                "idempotency_key_reused",
                "This key was already used for a different entry",
                "Start a new entry; the key belongs to an earlier, different submission.",
                None,
            ),
            ticket,
            "origin_conflict",
        ),
        _ => finish(bad_gateway(ticket), ticket, "origin_refused"),
    }
}

/// 503 for a region whose origins are all shedding load, with the visitor's idempotency key so
/// the retry (after `Retry-After`) is stored at most once.
pub fn busy_reply(code: &'static str, key: &str, wait_ms: u64) -> Reply {
    let seconds = retry_after_seconds(wait_ms);
    problem(
        503,
        code,
        "Lots of entries right now",
        "Your entry was not stored yet. Please try again shortly with the same Idempotency-Key; it will not be stored twice.",
        Some(json!({ "idempotency_key": key, "retry_after_s": seconds })),
    )
    .with_header("retry-after", harbour_policy::text::decimal(seconds))
    .with_header(HEADER_IDEMPOTENCY_KEY, key.to_owned())
}

fn bad_gateway(ticket: &Ticket) -> Reply {
    problem(
        502,
        "origin_error",
        "Your entry could not be stored",
        "The storage service did not accept it. Please try again later with the same Idempotency-Key.",
        Some(json!({ "idempotency_key": ticket.key })),
    )
    .with_header("retry-after", retry_after_seconds(UNAVAILABLE_RETRY_MS).to_string())
    .with_header(HEADER_IDEMPOTENCY_KEY, ticket.key.clone())
}

fn finish(mut reply: Reply, ticket: &Ticket, outcome: &'static str) -> Next {
    reply.headers.extend(ticket.rate_headers.iter().cloned());
    Next::Done {
        reply: ticket.cors.apply(reply),
        outcome,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    #[test]
    fn deadline_arithmetic() {
        assert_eq!(attempt_budget_ms(1_000, 1_000), Some(ATTEMPT_TIMEOUT_MS));
        assert_eq!(
            attempt_budget_ms(1_000, 1_000 + DEADLINE_MS - 1_000),
            Some(1_000)
        );
        assert_eq!(
            attempt_budget_ms(1_000, 1_000 + DEADLINE_MS - MIN_ATTEMPT_MS),
            Some(MIN_ATTEMPT_MS)
        );
        assert_eq!(
            attempt_budget_ms(1_000, 1_000 + DEADLINE_MS - MIN_ATTEMPT_MS + 1),
            None
        );
        assert_eq!(attempt_budget_ms(1_000, u64::MAX), None);
        // A clock that went backwards never grants more than one attempt's timeout.
        assert_eq!(attempt_budget_ms(10_000, 0), Some(ATTEMPT_TIMEOUT_MS));
    }

    #[test]
    fn key_shapes() {
        assert!(is_well_formed_key("0b6a3c0e-5f55-4c1e-9b1a-2f1d3c4b5a69"));
        assert!(!is_well_formed_key("short"));
        assert!(!is_well_formed_key("has space in it 1234"));
        assert!(!is_well_formed_key(&"a".repeat(65)));
        assert_eq!(derive_key("c", "{}"), derive_key("c", "{}"));
        assert_ne!(derive_key("c", "{}"), derive_key("d", "{}"));
        assert!(is_well_formed_key(&derive_key("c", "{}")));
    }

    #[test]
    fn an_origins_conflict_is_told_apart_from_a_second_entry() {
        let config = crate::config::tests::local_config();
        let outcome = |body: &str| match after_attempt(
            &config,
            &ticket(1_000),
            AttemptResult::Answered { status: 409, body },
            1_100,
            Onward::in_order(&ticket(1_000)),
        ) {
            Next::Done { reply, outcome } => {
                let problem: Value = serde_json::from_str(&reply.body).unwrap();
                (
                    reply.status,
                    problem["code"].as_str().unwrap().to_owned(),
                    outcome,
                )
            }
            other => panic!("{other:?}"),
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

    fn ticket(received_ms: u64) -> Ticket {
        Ticket {
            region: harbour_policy::code::region_index(0),
            campaign: "c".into(),
            key: "k".into(),
            request_id: "r".into(),
            received_ms,
            attempt: 0,
            attempts: 1,
            rate_headers: Vec::new(),
            cors: Cors::default(),
            charge: None,
        }
    }

    #[test]
    fn tickets_are_taken_once_and_dropped_after_their_deadline() {
        let mut book = TicketBook::default();
        let a = book.file(ticket(1_000), 1_000);
        let b = book.file(ticket(1_001), 1_001);
        assert_ne!(a, b);
        assert_eq!(book.take(b).map(|t| t.received_ms), Some(1_001));
        assert_eq!(book.take(b), None, "taken once");
        assert_eq!(book.take(b + 1), None, "never filed");
        assert_eq!(book.len(), 1);
        // A retry files the ticket again under a new id.
        let a_ticket = book.take(a).unwrap();
        let a2 = book.file(a_ticket, 1_500);
        assert!(a2 > b);
        assert!(book.take(a).is_none());
        // A request that never reports back is dropped once its deadline and grace have passed.
        book.file(ticket(2_000), 2_000);
        assert_eq!(book.len(), 2);
        book.file(ticket(20_000), 2_000 + DEADLINE_MS + TICKET_GRACE_MS);
        assert_eq!(book.len(), 1);
        assert!(book.take(a2).is_none());
    }

    #[test]
    fn the_ticket_book_is_bounded() {
        let mut book = TicketBook::default();
        for _ in 0..MAX_TICKETS + 10 {
            book.file(ticket(5), 5);
        }
        assert_eq!(book.len(), MAX_TICKETS);
        assert!(book.take(0).is_none(), "the oldest went first");
        assert!(book.take(10).is_some());
    }

    #[test]
    fn written_json_matches_what_serde_json_makes() {
        let mut raw: Value = serde_json::from_str(harbour_policy::SHIPPED_POLICY).unwrap();
        raw["campaigns"][0]["one_entry_per"] = json!([]);
        raw["campaigns"][0]["fields"] = json!([
            {"name": "name", "label": "N", "type": "string"},
            {"name": "consent", "label": "C", "type": "bool"},
            {"name": "age", "label": "A", "type": "integer"},
        ]);
        // Translated labels would name the fields replaced here.
        raw["campaigns"][0]["texts"] = json!({});
        let policy = harbour_policy::Policy::parse(&raw.to_string()).unwrap();
        let body = json!({"name": "Zoë \"Z\" \\ <b>\u{7}", "consent": true, "age": -42});
        let pairs = crate::validate::parse_body(
            crate::request::Encoding::Json,
            body.to_string().as_bytes(),
        )
        .unwrap();
        // The control character is refused by validation; the writer must still escape it.
        assert!(crate::validate::check(&policy.campaigns[0], pairs).is_err());
        let body = json!({"name": "Zoë \"Z\" \\ <b>", "consent": true, "age": -42});
        let pairs = crate::validate::parse_body(
            crate::request::Encoding::Json,
            body.to_string().as_bytes(),
        )
        .unwrap();
        let submission = crate::validate::check(&policy.campaigns[0], pairs).unwrap();
        let written = fields_json(&submission);
        let parsed: Value = serde_json::from_str(&written).unwrap();
        assert_eq!(
            parsed,
            json!({"name": "Zoë \"Z\" \\ <b>", "consent": true, "age": -42})
        );
        // Sorted keys: the same canonical text serde_json's map would give.
        assert_eq!(written, parsed.to_string());
        let residency = crate::residency::Residency {
            region: harbour_policy::code::region_index(0),
            platform: crate::residency::PlatformCountry::read(Some("IT")),
            declared: harbour_policy::country::Country::parse("CN"),
            basis: crate::residency::Basis::DeclaredStricter,
        };
        let body = forward_body("c\"1", "cn", &residency, &written, "r1", 7);
        let parsed: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(
            parsed,
            json!({"campaign": "c\"1", "region": "cn", "request_id": "r1", "received_at_ms": 7,
                   "signals": {"platform_country": "IT", "declared_country": "CN", "basis": "declared_stricter"},
                   "fields": {"name": "Zoë \"Z\" \\ <b>", "consent": true, "age": -42}})
        );
        assert_eq!(body, parsed.to_string());
    }
}
