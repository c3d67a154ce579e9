//! The edge shell: the only code that knows it runs in a Workers isolate.
//!
//! The per-request cost of a Rust worker is the Rust↔JS boundary, not the logic, so the shell is
//! shaped to cross it as rarely as possible: `shim.js` reads the request (method, URL, a handful
//! of headers, `request.cf.country`, the body bytes up to the cap) and calls `decide` once; the
//! whole decision comes back as one JSON string. When it says forward, `shim.js` sends the bytes
//! it was given and reports each attempt's status and body to `conclude`, which names the next
//! origin of the same region or the final reply. JS moves bytes; every decision is made here.
//!
//! The environment (origin URLs, signing secrets) is read once per isolate in `configure`.
//!
//! The `worker` crate's wrappers are not used here: linking it at all keeps every class it
//! exports to JS (streams, R2, containers, ...), which costs about 120 KB gzip of wasm, and its
//! per-call conversions are the measured overhead this shell exists to avoid.

use std::cell::RefCell;

use serde_json::{json, Value};
use wasm_bindgen::prelude::*;

use crate::config::{key_var, origins_var, Config};
use crate::forward::{quoted, Next, Outcome, Ticket};
use crate::pipeline::{Body, Edge, Facts, LogRecord, Step};
use crate::policy::{Policy, SHIPPED_POLICY};
use crate::reply::{problem, Reply};

thread_local! {
    static EDGE: RefCell<Option<Edge>> = const { RefCell::new(None) };
}

/// Reads the environment for the shipped policy's regions. Returns
/// `{"ok":true,"max_body_bytes":N}` or `{"ok":false,"error":"..."}`; in the latter case every
/// request is answered 500 `config_invalid`, and the error (which names the bad entries, never a
/// secret's value) is for the log.
#[wasm_bindgen]
pub fn configure(env: &JsValue, seed: f64) -> String {
    // Vars and secrets are both plain string properties of `env`.
    let lookup = |name: &str| -> Option<String> {
        js_sys::Reflect::get(env, &JsValue::from_str(name))
            .ok()
            .and_then(|value| value.as_string())
    };
    configure_with(&lookup, seed)
}

/// `configure` with the environment as a plain lookup, for tests.
pub fn configure_with(lookup: &dyn Fn(&str) -> Option<String>, seed: f64) -> String {
    let config = Config::assemble(SHIPPED_POLICY, lookup);
    let answer = match &config {
        Ok(config) => json!({ "ok": true, "max_body_bytes": config.policy.max_body_bytes }),
        Err(error) => json!({ "ok": false, "error": error.to_string() }),
    };
    let edge = Edge::new(config, seed.to_bits());
    EDGE.with(|cell| *cell.borrow_mut() = Some(edge));
    answer.to_string()
}

/// Names of the variables `configure` reads, for operators and the README.
#[wasm_bindgen]
pub fn expected_variables() -> String {
    let regions = Policy::parse(SHIPPED_POLICY)
        .map(|p| p.regions.into_iter().map(|r| r.id).collect::<Vec<_>>())
        .unwrap_or_default();
    let names: Vec<String> = regions
        .iter()
        .flat_map(|id| [origins_var(id), key_var(id)])
        .collect();
    json!(names).to_string()
}

/// Body states passed from JS.
pub const BODY_UNREAD: u8 = 0;
pub const BODY_BYTES: u8 = 1;
pub const BODY_TOO_LARGE: u8 = 2;
pub const BODY_INCOMPLETE: u8 = 3;

#[allow(clippy::too_many_arguments)]
#[wasm_bindgen]
pub fn decide(
    method: &str,
    url: &str,
    content_type: Option<String>,
    body_state: u8,
    body: &[u8],
    country: Option<String>,
    client_ip: Option<String>,
    idempotency_key: Option<String>,
    origin: Option<String>,
    now_ms: f64,
) -> String {
    let now_ms = clock(now_ms);
    let facts = Facts {
        method,
        url,
        content_type: content_type.as_deref(),
        body: match body_state {
            BODY_BYTES => Body::Bytes(body),
            BODY_TOO_LARGE => Body::TooLarge,
            BODY_INCOMPLETE => Body::Incomplete,
            _ => Body::Unread,
        },
        country: country.as_deref(),
        client_ip: client_ip.as_deref(),
        idempotency_key: idempotency_key.as_deref(),
        origin: origin.as_deref(),
        now_ms,
    };
    let step = EDGE.with(|cell| match cell.try_borrow_mut() {
        Ok(mut slot) => slot.as_mut().map(|edge| edge.decide(&facts)),
        Err(_) => None,
    });
    match step {
        Some(Step::Reply { reply, log }) => reply_json(&reply, &log, now_ms),
        Some(Step::Forward { plan }) => {
            let ticket = serde_json::to_string(&plan.ticket).unwrap_or_default();
            format!(
                "{{\"forward\":{{\"url\":{},\"timeout_ms\":{},\"headers\":{},\"body\":{},\"ticket\":{}}}}}",
                quoted(&plan.first.url),
                plan.first.timeout_ms,
                header_pairs(&plan.headers),
                quoted(&plan.body),
                quoted(&ticket),
            )
        }
        None => unconfigured(now_ms),
    }
}

/// `status` 0 means the attempt failed without an answer (connection error or timeout).
#[wasm_bindgen]
pub fn conclude(ticket: &str, status: u16, body: &str, now_ms: f64) -> String {
    let now_ms = clock(now_ms);
    let Ok(ticket) = serde_json::from_str::<Ticket>(ticket) else {
        return internal_error(now_ms);
    };
    let outcome = if status == 0 {
        Outcome::Failed
    } else {
        Outcome::Answered { status, body }
    };
    let next = EDGE.with(|cell| match cell.try_borrow() {
        Ok(slot) => slot.as_ref().map(|edge| {
            let log_for =
                |reply: &Reply, outcome: &str| edge.forward_log(&ticket, reply.status, outcome);
            match edge.conclude(ticket.clone(), outcome, now_ms) {
                Ok(Next::Retry { attempt, ticket }) => json!({
                    "retry": {
                        "url": attempt.url,
                        "timeout_ms": attempt.timeout_ms,
                        "ticket": serde_json::to_string(&ticket).unwrap_or_default(),
                    }
                })
                .to_string(),
                Ok(Next::Done { reply, outcome }) => {
                    reply_json(&reply, &log_for(&reply, outcome), now_ms)
                }
                Err(reply) => reply_json(&reply, &log_for(&reply, "config_invalid"), now_ms),
            }
        }),
        Err(_) => None,
    });
    next.unwrap_or_else(|| unconfigured(now_ms))
}

/// `Date.now()` as whole ms; a nonsense value becomes 0 rather than a panic.
fn clock(now_ms: f64) -> u64 {
    if now_ms.is_finite() && now_ms >= 0.0 {
        now_ms as u64
    } else {
        0
    }
}

/// `[["name","value"],...]`. The decisions are written directly, not through a
/// `serde_json::Value` tree: building the tree was the dearest part of a decision in wasm.
fn header_pairs(headers: &[(&'static str, String)]) -> String {
    let mut out = String::from("[");
    for (i, (name, value)) in headers.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push('[');
        out.push_str(&quoted(name));
        out.push(',');
        out.push_str(&quoted(value));
        out.push(']');
    }
    out.push(']');
    out
}

fn reply_json(reply: &Reply, log: &LogRecord, now_ms: u64) -> String {
    format!(
        "{{\"reply\":{{\"status\":{},\"headers\":{},\"body\":{}}},\"log\":{}}}",
        reply.status,
        header_pairs(&reply.headers),
        quoted(&reply.body),
        quoted(&log.to_json(now_ms)),
    )
}

fn internal(code: &'static str, now_ms: u64) -> String {
    let reply = problem(
        500,
        code,
        "Internal error",
        "This service cannot accept entries right now.",
        None,
    );
    let log = LogRecord {
        request_id: String::new(),
        campaign: None,
        region: None,
        phase: "edge",
        outcome: code.to_owned(),
        status: 500,
        received_ms: now_ms,
    };
    reply_json(&reply, &log, now_ms)
}

fn unconfigured(now_ms: u64) -> String {
    internal("config_invalid", now_ms)
}

fn internal_error(now_ms: u64) -> String {
    internal("internal_error", now_ms)
}

/// Parses a decision string, for tests of the shell's conversions.
pub fn parse_decision(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or(Value::Null)
}
