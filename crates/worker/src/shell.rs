//! The edge shell: the only code that knows it runs in a Workers isolate.
//!
//! The per-request cost of a Rust worker is the Rust↔JS boundary, not the logic, so the shell is
//! shaped to cross it as rarely as possible: `shim.js` reads the request (method, URL, a handful
//! of headers, `request.cf.country`, the body bytes up to the cap) and calls `decide` once; the
//! whole decision comes back as one string of lines (see `decide`). A submission the isolate's own limits admit
//! comes back as "consult this rate-limiting binding with this key": `shim.js` awaits the
//! binding and reports its answer (or its failure or silence) to `consulted`, which answers with
//! the forward or the reply. When it says forward, `shim.js` sends the bytes it was given and
//! reports each attempt's status and body to `conclude`, which names the next origin of the same
//! region or the final reply. JS moves bytes; every decision is made here.
//!
//! The environment (origin URLs, signing secrets, rate-limiting bindings) is read once per
//! isolate in `configure`.
//!
//! The `worker` crate's wrappers are not used here: linking it at all keeps every class it
//! exports to JS (streams, R2, containers, ...), which costs about 120 KB gzip of wasm, and its
//! per-call conversions are the measured overhead this shell exists to avoid.

use std::cell::RefCell;

use wasm_bindgen::prelude::*;

use harbour_contract::env::{key_var, origins_var, FORM_KEY_VAR};
use harbour_contract::points::ANALYTICS_BINDING;
use harbour_core::attempt::AttemptResult;
use harbour_core::config::{Config, ConfigError};
use harbour_core::context::Finished;
use harbour_core::journal::{Journal, Lines};
use harbour_core::phase::admission::{location_limits, LocationResult, CONSULT_TIMEOUT_MS};
use harbour_core::phase::forward::Ticket;
use harbour_core::phase::request::{Body, Facts};
use harbour_core::pipeline::{
    unconfigured, Expired, Held, Next, Pipeline, Seeds, Verdict, MAX_HELD,
};
use harbour_core::tickets::{TicketBook, MAX_FILED};
use harbour_policy::text::{push_strings, JsonObject};
use harbour_policy::{Issue, Policy, PolicyError};

use crate::wire::{
    reply_text, request_facts, Wire, BODY_BYTES, BODY_INCOMPLETE, BODY_TOO_LARGE,
    LOCATION_ADMITTED, LOCATION_REFUSED, LOCATION_TIMED_OUT,
};

/// Everything an isolate keeps between requests.
struct Shell {
    pipeline: Pipeline,
    tickets: TicketBook<Ticket>,
    /// Requests awaiting the location's rate-limiting binding.
    holds: TicketBook<Held>,
    journal: Journal,
}

thread_local! {
    static SHELL: RefCell<Option<Shell>> = const { RefCell::new(None) };
}

/// Reads the environment for the shipped policy's regions, rate limits and form key. `random`
/// is 24 bytes from the platform's CSPRNG: three independent seeds (the limiter's hash key,
/// request ids, challenge salts). Returns `{"ok":true,"max_body_bytes":N}` or
/// `{"ok":false,"error":"..."}`; in the latter case every request is answered 500
/// `config_invalid`, and the error (which names the bad entries, never a secret's value) is for
/// the log. Either may carry `"candidate_error"` (see `configure_policies`), also for the log.
#[wasm_bindgen]
pub fn configure(env: &JsValue, random: &[u8]) -> String {
    let property = |name: &str| js_sys::Reflect::get(env, &JsValue::from_str(name)).ok();
    // Vars and secrets are both plain string properties of `env`.
    let lookup = |name: &str| -> Option<String> { property(name)?.as_string() };
    // A binding is an object with its kind's method: `limit` for a rate-limiting binding,
    // `writeDataPoint` for the Analytics Engine dataset.
    let bound = |name: &str| {
        let method = if name == ANALYTICS_BINDING {
            "writeDataPoint"
        } else {
            "limit"
        };
        property(name)
            .filter(JsValue::is_object)
            .and_then(|binding| js_sys::Reflect::get(&binding, &JsValue::from_str(method)).ok())
            .is_some_and(|method| method.is_function())
    };
    configure_with(&lookup, &bound, random)
}

/// Every rate-limiting binding the policy needs that `bound` does not find, named.
fn missing_bindings(policy: &Policy, bound: &dyn Fn(&str) -> bool) -> Vec<Issue> {
    location_limits(policy)
        .into_iter()
        .filter(|limit| !bound(&limit.binding_name()))
        .map(|limit| Issue {
            path: limit.binding_name(),
            message: format!(
                "no rate-limiting binding; wrangler.toml needs [[ratelimits]] name = \"{}\", namespace_id = \"<a number>\", simple = {{ limit = {}, period = {} }} (in each environment)",
                limit.binding_name(),
                limit.limit,
                limit.period_s
            ),
        })
        .collect()
}

/// Three independent seeds from 24 random bytes (fewer bytes leave the rest zero).
fn seeds(random: &[u8]) -> Seeds {
    let word = |at: usize| {
        let mut bytes = [0u8; 8];
        for (i, byte) in bytes.iter_mut().enumerate() {
            *byte = random.get(at + i).copied().unwrap_or(0);
        }
        u64::from_le_bytes(bytes)
    };
    Seeds {
        limiter: word(0),
        request_ids: word(8),
        challenges: word(16),
    }
}

/// `configure` with the environment as plain lookups (strings, and whether a binding is there:
/// each rate-limiting binding, and [`ANALYTICS_BINDING`], without which no data points are
/// counted), for tests.
pub fn configure_with(
    lookup: &dyn Fn(&str) -> Option<String>,
    bound: &dyn Fn(&str) -> bool,
    random: &[u8],
) -> String {
    configure_parsed(
        crate::compiled::live(),
        crate::compiled::candidate(),
        lookup,
        bound,
        random,
    )
}

/// `configure_with` for a given live policy and candidate. A candidate that does not parse
/// (the build's checks refuse one) is left out and named in `"candidate_error"`: the shadow
/// must never be why live traffic is refused.
pub fn configure_policies(
    live: &str,
    candidate: Option<&str>,
    lookup: &dyn Fn(&str) -> Option<String>,
    bound: &dyn Fn(&str) -> bool,
    random: &[u8],
) -> String {
    let candidate = candidate.map(Policy::parse);
    configure_parsed(Policy::parse(live), candidate, lookup, bound, random)
}

/// `configure_policies` for policies already parsed (the worker's are compiled in).
fn configure_parsed(
    live: Result<Policy, PolicyError>,
    candidate: Option<Result<Policy, PolicyError>>,
    lookup: &dyn Fn(&str) -> Option<String>,
    bound: &dyn Fn(&str) -> bool,
    random: &[u8],
) -> String {
    // The bindings are checked before the policy moves into the config, so that a config error
    // names them too without a copy of the policy.
    let missing = live
        .as_ref()
        .map(|policy| missing_bindings(policy, bound))
        .unwrap_or_default();
    let config = match live
        .map_err(ConfigError::from)
        .and_then(|policy| Config::for_policy(policy, lookup))
    {
        Ok(config) if missing.is_empty() => Ok(config),
        Ok(_) => Err(ConfigError(missing)),
        Err(ConfigError(mut issues)) => {
            issues.extend(missing);
            Err(ConfigError(issues))
        }
    };
    let mut answer = JsonObject::new();
    match &config {
        Ok(config) => answer
            .bool("ok", true)
            .u64("max_body_bytes", u64::from(config.policy.max_body_bytes)),
        Err(error) => answer.bool("ok", false).str("error", &error.to_string()),
    };
    let mut journal = Journal::new(config.as_ref().map(|c| c.log).unwrap_or_default());
    // Data points only where the binding takes them: wrangler dev's does nothing, and without
    // one (tests, a deployment without the dataset) counting them would be work for nothing.
    if bound(ANALYTICS_BINDING) {
        journal = journal.with_points();
    }
    let mut pipeline = Pipeline::new(config, seeds(random));
    match candidate {
        Some(Ok(candidate)) => pipeline = pipeline.with_candidate(candidate),
        Some(Err(error)) => {
            answer.str("candidate_error", &error.to_string());
        }
        None => {}
    }
    let shell = Shell {
        pipeline,
        tickets: TicketBook::with_max(MAX_FILED),
        holds: TicketBook::with_max(MAX_HELD),
        journal,
    };
    SHELL.with(|cell| *cell.borrow_mut() = Some(shell));
    answer.finish()
}

/// Names of the environment entries `configure` reads, for operators and the README: each
/// region's origins and key, then each rate-limiting binding the policy needs.
#[wasm_bindgen]
pub fn expected_variables() -> String {
    let Ok(policy) = crate::compiled::live() else {
        return "[]".into();
    };
    let mut names: Vec<String> = policy
        .regions
        .iter()
        .flat_map(|r| [origins_var(&r.id), key_var(&r.id)])
        .chain(location_limits(&policy).iter().map(|l| l.binding_name()))
        .collect();
    names.push(FORM_KEY_VAR.to_owned());
    let mut list = String::new();
    push_strings(&mut list, names.iter().map(String::as_str));
    list
}

/// Decides a request from what the shim read of it: `request` is its text facts joined as
/// `wire::REQUEST_FACTS` says, `body` the bytes read as `body_state` (a `wire::CODES` body
/// state) says. The answer is in the line protocol (`wire::ANSWERS`): a `reply`, a `consult`
/// (ask the location's binding, then call `consulted`) or a `forward` (send it, then call
/// `conclude`).
#[wasm_bindgen]
pub fn decide(request: &str, body_state: u8, body: &[u8], now_ms: f64) -> String {
    // One string for the request's text facts: each string argument is a copy into wasm memory
    // with an allocation of its own, so one costs less than nine.
    let [method, url, content_type, country, client_ip, idempotency_key, challenge, origin, notice] =
        request_facts(request);
    let method = method.unwrap_or_default();
    let url = url.unwrap_or_default();
    #[cfg(feature = "test-trap")]
    trap_on_test_path(url);
    let now_ms = whole_ms(now_ms);
    let facts = Facts {
        method,
        url,
        content_type,
        body: match body_state {
            BODY_BYTES => Body::Bytes(body),
            BODY_TOO_LARGE => Body::TooLarge,
            BODY_INCOMPLETE => Body::Incomplete,
            _ => Body::Unread,
        },
        country,
        client_ip,
        idempotency_key,
        challenge,
        origin,
        notice,
        now_ms,
    };
    with_shell(now_ms, |shell| {
        let verdict = shell.pipeline.request(&facts);
        if let Some(comparison) = shell.pipeline.shadow(&facts, &verdict) {
            shell.journal.shadow(&comparison, now_ms);
        }
        verdict_text(shell, verdict, now_ms, &[])
    })
}

/// After the location's rate-limiting binding was consulted for the request held under `hold`:
/// `answer` is a `wire::CODES` location answer (anything else counts as a failure). Answers with
/// the first attempt of a forward, or a reply.
#[wasm_bindgen]
pub fn consulted(hold: f64, answer: u8, now_ms: f64) -> String {
    let now_ms = whole_ms(now_ms);
    let answer = match answer {
        LOCATION_ADMITTED => LocationResult::Admitted,
        LOCATION_REFUSED => LocationResult::Refused,
        LOCATION_TIMED_OUT => LocationResult::TimedOut,
        _ => LocationResult::Failed,
    };
    with_shell(now_ms, |shell| {
        // Ids are whole numbers below 2^53, exact in an f64.
        let Some(held) = shell.holds.take(hold as u64) else {
            let finished = shell.pipeline.expired(Expired::Admission, now_ms);
            return finished_text(shell, finished, now_ms, &[]);
        };
        let verdict = shell.pipeline.after_consult(held, answer, now_ms);
        let notes = take_notes(shell, now_ms);
        verdict_text(shell, verdict, now_ms, &notes)
    })
}

/// A verdict in the line protocol; a forward's ticket or a held request is filed here.
fn verdict_text(shell: &mut Shell, verdict: Verdict, now_ms: u64, notes: &[String]) -> String {
    match verdict {
        Verdict::Reply { reply, log } => {
            finished_text(shell, Finished { reply, log }, now_ms, notes)
        }
        Verdict::Forward { plan, ticket } => {
            let mut out = Wire::new(notes, "forward", 512 + plan.body.len());
            out.text(ticket.ctx.key.as_deref().unwrap_or_default());
            let ticket = shell.tickets.file(ticket, now_ms);
            out.attempt(&plan.first, ticket);
            out.headers(&plan.headers);
            out.end_with_body(&plan.body)
        }
        Verdict::Consult { consult, held } => {
            let hold = shell.holds.file(*held, now_ms);
            let mut out = Wire::new(notes, "consult", 160);
            out.number(hold);
            out.text(&consult.binding);
            out.text(&consult.key);
            out.number(CONSULT_TIMEOUT_MS);
            out.end()
        }
    }
}

/// The pipeline's notes for the log; the breaker openings among them are counted in the data
/// points too.
fn take_notes(shell: &mut Shell, now_ms: u64) -> Vec<String> {
    for region in shell.pipeline.take_openings() {
        shell.journal.opened(&region, now_ms);
    }
    shell.pipeline.take_notes()
}

/// A finished request as a `reply`, its log record through the journal.
fn finished_text(shell: &mut Shell, finished: Finished, now_ms: u64, notes: &[String]) -> String {
    let lines = shell.journal.record(&finished.log, now_ms);
    reply_text(&finished.reply, lines, notes)
}

/// After an attempt of the forward filed under `ticket`. `status` 0 means the attempt failed
/// without an answer (connection error or timeout). The origin's body comes as bytes: decoding
/// it to a JS string only to encode it back costs two conversions; one that is not UTF-8 reads
/// as empty, which no receipt is.
#[wasm_bindgen]
pub fn conclude(ticket: f64, status: u16, body: &[u8], now_ms: f64) -> String {
    let now_ms = whole_ms(now_ms);
    let body = std::str::from_utf8(body).unwrap_or_default();
    let result = if status == 0 {
        AttemptResult::Failed
    } else {
        AttemptResult::Answered { status, body }
    };
    with_shell(now_ms, |shell| {
        // Ids are whole numbers below 2^53, exact in an f64.
        let Some(ticket) = shell.tickets.take(ticket as u64) else {
            let finished = shell.pipeline.expired(Expired::Forward, now_ms);
            return finished_text(shell, finished, now_ms, &[]);
        };
        let next = shell.pipeline.after_attempt(ticket, result, now_ms);
        let notes = take_notes(shell, now_ms);
        match next {
            Next::Retry { attempt, ticket } => {
                let id = shell.tickets.file(ticket, now_ms);
                let mut out = Wire::new(&notes, "retry", 128);
                out.attempt(&attempt, id);
                out.end()
            }
            Next::Done { reply, log } => {
                finished_text(shell, Finished { reply, log }, now_ms, &notes)
            }
        }
    })
}

/// After an attempt of a forward filed by an instance that trapped and was replaced: its ticket
/// died with that instance's memory, so the origin's answer cannot be judged and no ticket of this
/// instance may stand in for it. The origin may have stored the entry: the visitor is asked to
/// retry with the same key (`idempotency_key`, from the forward's headers), stored at most once.
#[wasm_bindgen]
pub fn orphaned(idempotency_key: Option<String>, now_ms: f64) -> String {
    let now_ms = whole_ms(now_ms);
    with_shell(now_ms, |shell| {
        let what = Expired::Orphaned {
            key: idempotency_key,
        };
        let finished = shell.pipeline.expired(what, now_ms);
        finished_text(shell, finished, now_ms, &[])
    })
}

/// Runs `work` on the isolate's shell; without one (never configured, or its state in use, which
/// cannot happen in one thread), 500 with its own log line.
fn with_shell(now_ms: u64, work: impl FnOnce(&mut Shell) -> String) -> String {
    let answer = SHELL.with(|cell| {
        let mut slot = cell.try_borrow_mut().ok()?;
        Some(work(slot.as_mut()?))
    });
    answer.unwrap_or_else(|| {
        let Finished { reply, log } = unconfigured(now_ms);
        let lines = Lines {
            decision: Some(log.to_json(now_ms)),
            ..Lines::default()
        };
        reply_text(&reply, lines, &[])
    })
}

/// Builds with the `test-trap` feature, never shipped, trap on a request for this path, with the
/// shell's state borrowed as a panic anywhere in a decision would leave it; a test shows the
/// next request is answered normally.
#[cfg(feature = "test-trap")]
pub const TEST_TRAP_PATH: &str = "/api/__test_trap";

#[cfg(feature = "test-trap")]
fn trap_on_test_path(url: &str) {
    if url.ends_with(TEST_TRAP_PATH) {
        SHELL.with(|cell| {
            let _held = cell.borrow_mut();
            panic!("trap requested by a test build");
        });
    }
}

/// `Date.now()` as whole ms; a nonsense value becomes 0 rather than a panic.
fn whole_ms(now_ms: f64) -> u64 {
    if now_ms.is_finite() && now_ms >= 0.0 {
        now_ms as u64
    } else {
        0
    }
}
