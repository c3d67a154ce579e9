//! The request pipeline: named phases over plain data, composed into one verdict.
//!
//! ```text
//! route → request_check → challenge → validate → classify → shed → admit   (Pipeline::request)
//!   … the shell consults the location's rate-limiting binding …
//! settle → screen → plan                                                      (Pipeline::after_consult)
//!   then, per origin attempt, after_attempt                                   (Pipeline::after_attempt)
//! ```
//!
//! Each phase is a function of its own module that either goes on with a value or answers now
//! ([`Flow`]); `Pipeline::flow` and `Pipeline::finish` read top to bottom. The proof of work is
//! checked before the body is parsed or anything charged, so a request without it costs next to
//! nothing and can never spend a budget that visitors who did the work need. Residency is
//! classified before limits are charged because the per-region budget needs the region; nothing
//! is charged for a request that is refused for any other reason, so a visitor correcting a form
//! is not penalised. The one platform call a decision needs (the binding) is a value too:
//! `request` ends with [`Verdict::Consult`], everything the later phases need held in [`Held`],
//! and the shell hands the binding's answer back with it.
//!
//! `Pipeline` holds what lives as long as an isolate: the configuration (or why it is invalid),
//! the candidate policy evaluated in shadow (see `shadow`), the admission state, the origins'
//! breakers, the request-id generator and the log lines its state changes produce. It never
//! reads a clock or the environment.

use std::ops::ControlFlow;

use crate::admission::{
    admit, settle, Admission, Applicant, Consult, LocationAnswer, Provisional, CONSULT_TIMEOUT_MS,
};
use crate::breaker::{shed, transition_line, Breakers, Report, OPEN_MS};
use crate::challenge::challenge;
use crate::config::Config;
use crate::forward::{
    self, AttemptResult, Entry, Filed, ForwardPlan, Next, Onward, PlanInput, Ticket,
};
use crate::journal::LogRecord;
use crate::limit::ClientKey;
use crate::reply::{problem, Answer, Cors, Flow, Phase, Reply};
use crate::request::{request_check, route, Facts};
use crate::residency::{classify, Residency};
use crate::screen::{screen, Decoy};
use crate::shadow::{self, Comparison, View};
use crate::validate::{validate, Submission};
use harbour_policy::text::push_hex_u64;
use harbour_policy::{CampaignIndex, Policy, PolicyError};

/// What the pipeline concluded for a request: answer it, forward it, or first ask the location.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    Answer {
        reply: Reply,
        log: LogRecord,
    },
    Forward {
        plan: Box<ForwardPlan>,
    },
    /// Ask the location's rate-limiting binding, then give its answer and `held` back to
    /// [`Pipeline::after_consult`].
    Consult {
        consult: Consult,
        held: Box<Held>,
    },
}

/// A request the isolate admitted while the location's answer is awaited: what the later phases
/// need, and what admission charged (given back if the location refuses).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Held {
    request_id: String,
    received_ms: u64,
    campaign: CampaignIndex,
    submission: Submission,
    residency: Residency,
    idempotency_key: Option<String>,
    cors: Cors,
    provisional: Provisional,
}

/// How long after its consult's timeout a held request is kept for an answer still coming.
const HELD_GRACE_MS: u64 = 2_000;
/// Held requests an isolate keeps at most (their handlers never came back): about 1 KB each.
pub const MAX_HELD: usize = 10_000;

impl Filed for Held {
    fn drop_after_ms(&self) -> u64 {
        self.received_ms
            .saturating_add(CONSULT_TIMEOUT_MS + HELD_GRACE_MS)
    }
}

/// Independent secrets of an isolate: one keys the limiter's hash table, one makes request ids,
/// one the challenges' salts, so nothing a client sees reveals another.
#[derive(Clone, Copy, Debug)]
pub struct Seeds {
    pub limiter: u64,
    pub request_ids: u64,
    pub challenges: u64,
}

/// What the log of an early answer needs to know of the phases that went before it.
#[derive(Default)]
struct Trace {
    campaign: Option<String>,
    region: Option<String>,
    cors: Cors,
}

pub struct Pipeline {
    config: Result<Config, PolicyError>,
    /// Evaluated beside the live policy, never in its place.
    candidate: Option<Policy>,
    admission: Admission,
    breakers: Breakers,
    request_ids: RequestIds,
    salts: RequestIds,
    /// The latest time seen: limits never see the clock go backwards (a wall clock can step back,
    /// and GCRA would then refuse until it caught up).
    latest_ms: u64,
    /// Log lines of state changes (breakers, an unavailable binding), for the shell to write.
    notes: Vec<String>,
}

impl Pipeline {
    pub fn new(config: Result<Config, PolicyError>, seeds: Seeds) -> Pipeline {
        let admission = Admission::new(config.as_ref().ok().map(|c| &c.policy), seeds.limiter);
        let breakers = Breakers::new(
            config
                .as_ref()
                .map(|c| {
                    c.regions
                        .iter()
                        .map(|r| r.origins.len())
                        .collect::<Vec<_>>()
                })
                .unwrap_or_default(),
        );
        Pipeline {
            config,
            candidate: None,
            admission,
            breakers,
            request_ids: RequestIds {
                seed: seeds.request_ids,
                counter: 0,
            },
            salts: RequestIds {
                seed: seeds.challenges,
                counter: 0,
            },
            latest_ms: 0,
            notes: Vec::new(),
        }
    }

    /// The same pipeline with a candidate policy to evaluate in shadow.
    pub fn with_candidate(mut self, candidate: Policy) -> Pipeline {
        self.candidate = Some(candidate);
        self
    }

    pub fn config(&self) -> Result<&Config, &PolicyError> {
        self.config.as_ref()
    }

    /// The candidate policy's view of the submission `request` just decided, beside the live
    /// one: None without a candidate, or when the live pipeline stopped before a campaign's
    /// submission. It reads only its arguments, so it cannot change an answer, a limit or a
    /// forward.
    pub fn shadow<'a>(&'a self, facts: &Facts, verdict: &'a Verdict) -> Option<Comparison<'a>> {
        let candidate = self.candidate.as_ref()?;
        let (campaign, live) = match verdict {
            Verdict::Answer { log, .. } => (
                log.campaign.as_deref()?,
                View::live(Some((log.phase, log.outcome)), log.region.as_deref())?,
            ),
            Verdict::Forward { plan } => {
                let policy = &self.config.as_ref().ok()?.policy;
                let region = policy.regions.get(plan.region.get())?.id.as_str();
                (
                    plan.ticket.campaign.as_str(),
                    View::live(None, Some(region))?,
                )
            }
            // Placed and admitted by the isolate; the location's answer is outside the comparison.
            Verdict::Consult { held, .. } => {
                let policy = &self.config.as_ref().ok()?.policy;
                let campaign = policy.campaigns.get(held.campaign.get())?.id.as_str();
                let region = policy.regions.get(held.residency.region.get())?.id.as_str();
                (campaign, View::live(None, Some(region))?)
            }
        };
        Some(Comparison {
            campaign,
            live,
            candidate: shadow::evaluate(candidate, campaign, facts),
        })
    }

    /// The log lines state changes produced since the last call.
    pub fn take_notes(&mut self) -> Vec<String> {
        std::mem::take(&mut self.notes)
    }

    /// Never behind the latest time seen.
    fn clock(&mut self, now_ms: u64) -> u64 {
        self.latest_ms = self.latest_ms.max(now_ms);
        self.latest_ms
    }

    /// Runs a request through every phase up to the location's binding.
    pub fn request(&mut self, facts: &Facts) -> Verdict {
        let facts = &Facts {
            now_ms: self.clock(facts.now_ms),
            ..*facts
        };
        let request_id = self.request_ids.next(facts.now_ms);
        let mut trace = Trace::default();
        match self.flow(facts, &request_id, &mut trace) {
            ControlFlow::Continue(held) => Verdict::Consult {
                consult: held.provisional.consult.clone(),
                held: Box::new(held),
            },
            ControlFlow::Break(answer) => answered(answer, request_id, trace, facts.now_ms),
        }
    }

    /// The phases in the order a request meets them, up to the location's binding.
    fn flow(&mut self, facts: &Facts, request_id: &str, trace: &mut Trace) -> Flow<Held> {
        let config = configured(&self.config)?;
        let routed = route(config, facts, self.salts.salt())?;
        let campaign = routed.campaign;
        trace.campaign = Some(campaign.id.clone());
        trace.cors = routed.cors.clone();
        let payload = request_check(&config.policy, facts)?;
        let (key, now_ms) = (facts.idempotency_key, facts.now_ms);
        challenge(config, campaign, facts.challenge, key, now_ms)?;
        let submission = validate(campaign, payload)?;
        let declared = submission.declared_country();
        let residency = classify(&config.policy, campaign, facts.country, declared)?;
        trace.region = Some(config.policy.region(residency.region).id.clone());
        shed(&self.breakers, residency.region, facts.now_ms, || {
            Entry::new(&campaign.id, &submission, facts.idempotency_key).key
        })?;
        let applicant = Applicant {
            campaign: routed.index,
            region: residency.region,
            client: ClientKey::from_ip(facts.client_ip),
        };
        let provisional = admit(
            &mut self.admission,
            &config.policy,
            &applicant,
            facts.now_ms,
        )?;
        Flow::Continue(Held {
            request_id: request_id.to_owned(),
            received_ms: facts.now_ms,
            campaign: routed.index,
            submission,
            residency,
            idempotency_key: facts.idempotency_key.map(str::to_owned),
            cors: routed.cors,
            provisional,
        })
    }

    /// The rest of a held request once the location answered: forward it, or answer it.
    pub fn after_consult(&mut self, held: Held, answer: LocationAnswer, now_ms: u64) -> Verdict {
        let now_ms = self.clock(now_ms);
        let policy = self.config.as_ref().ok().map(|c| &c.policy);
        let trace = Trace {
            campaign: policy
                .and_then(|p| p.campaigns.get(held.campaign.get()))
                .map(|c| c.id.clone()),
            region: policy
                .and_then(|p| p.regions.get(held.residency.region.get()))
                .map(|r| r.id.clone()),
            cors: held.cors.clone(),
        };
        let (request_id, received_ms) = (held.request_id.clone(), held.received_ms);
        match self.finish(held, answer, now_ms) {
            ControlFlow::Continue(plan) => Verdict::Forward {
                plan: Box::new(plan),
            },
            ControlFlow::Break(answer) => answered(answer, request_id, trace, received_ms),
        }
    }

    /// The phases after the location's answer. The breakers are asked again first: the region's
    /// origins may have started shedding while the answer was awaited.
    fn finish(&mut self, held: Held, answer: LocationAnswer, now_ms: u64) -> Flow<ForwardPlan> {
        let config = configured(&self.config)?;
        let Some(campaign) = config.policy.campaigns.get(held.campaign.get()) else {
            return Flow::Break(Answer::new(Phase::Configure, config_invalid()));
        };
        let region = held.residency.region;
        let entry = Entry::new(
            &campaign.id,
            &held.submission,
            held.idempotency_key.as_deref(),
        );
        if let ControlFlow::Break(busy) = shed(&self.breakers, region, now_ms, || entry.key.clone())
        {
            self.admission.withdraw(&held.provisional, now_ms);
            return Flow::Break(busy);
        }
        let charge = held.provisional.charge();
        let grant = settle(
            &mut self.admission,
            held.provisional,
            answer,
            &entry.key,
            now_ms,
            &mut self.notes,
        )?;
        let region_id = &config.policy.region(region).id;
        let decoy = Decoy {
            region_id,
            key: &entry.key,
            entropy: self.request_ids.entropy(),
            grant: &grant,
        };
        screen(&held.submission, decoy)?;
        // Some origin is available (asked just above, in this same call): the first of them.
        let origin = self.breakers.pick(region, 0, now_ms).unwrap_or(0);
        let input = PlanInput {
            residency: &held.residency,
            origin,
            campaign: &campaign.id,
            entry,
            request_id: held.request_id,
            now_ms: held.received_ms,
            rate_headers: grant.headers(),
            cors: held.cors,
            charge: Some(charge),
        };
        forward::plan(config, input)
    }

    /// `request`, with the binding answering `answer` at once: for tests and tools without one.
    pub fn request_answered(&mut self, facts: &Facts, answer: LocationAnswer) -> Verdict {
        match self.request(facts) {
            Verdict::Consult { held, .. } => self.after_consult(*held, answer, facts.now_ms),
            other => other,
        }
    }

    /// After an attempt: the breaker of the origin learns what it answered, then the next
    /// origin of the same region whose breaker lets it be called, or the final reply and its log.
    pub fn after_attempt(&mut self, ticket: &Ticket, result: AttemptResult, now_ms: u64) -> Next {
        let Ok(config) = &self.config else {
            return Next::Done {
                reply: config_invalid(),
                outcome: "config_invalid",
            };
        };
        let (region, origin) = (ticket.region, ticket.attempt);
        let report = Report::of(&result);
        if let Some(transition) = self.breakers.record(region, origin, report, now_ms) {
            let region_id = &config.policy.region(region).id;
            self.notes
                .push(transition_line(region_id, origin, transition));
        }
        let next = forward::is_retryable(&result)
            .then(|| self.breakers.pick(region, origin + 1, now_ms))
            .flatten();
        let busy_retry_ms = matches!(report, Report::Busy { .. }).then(|| {
            self.breakers
                .available(region, now_ms)
                .err()
                .unwrap_or(OPEN_MS)
        });
        let onward = Onward {
            next,
            busy_retry_ms,
        };
        let next = forward::after_attempt(config, ticket, result, now_ms, onward);
        // Turned away by every origin it could try, nothing stored: the limits give it back.
        if let (
            Next::Done {
                outcome: "origins_busy",
                ..
            },
            Some(charge),
        ) = (&next, &ticket.charge)
        {
            self.admission.refund(charge, now_ms);
        }
        next
    }

    /// The log record that ends a forwarded request.
    pub fn forward_log(&self, ticket: &Ticket, status: u16, outcome: &'static str) -> LogRecord {
        let region = self
            .config
            .as_ref()
            .ok()
            .and_then(|c| c.policy.regions.get(ticket.region.get()))
            .map(|r| r.id.clone());
        LogRecord {
            request_id: ticket.request_id.clone(),
            campaign: Some(ticket.campaign.clone()),
            region,
            phase: Phase::Forward,
            outcome,
            status,
            attempts: ticket.attempts,
            received_ms: ticket.received_ms,
        }
    }
}

/// An early answer with its log record.
fn answered(answer: Answer, request_id: String, trace: Trace, received_ms: u64) -> Verdict {
    Verdict::Answer {
        log: LogRecord {
            request_id,
            campaign: trace.campaign,
            region: trace.region,
            phase: answer.phase,
            outcome: answer.outcome,
            status: answer.reply.status,
            attempts: 0,
            received_ms,
        },
        reply: trace.cors.apply(answer.reply),
    }
}

fn config_invalid() -> Reply {
    problem(
        500,
        "config_invalid",
        "Service misconfigured",
        "This service cannot accept entries right now.",
        None,
    )
}

/// The configure "phase": an isolate without a valid configuration answers 500 to everything.
fn configured(config: &Result<Config, PolicyError>) -> Flow<&Config> {
    match config {
        Ok(config) => Flow::Continue(config),
        Err(_) => Flow::Break(Answer::new(Phase::Configure, config_invalid())),
    }
}

/// splitmix64: spreads a counter into well-mixed bits.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// Request ids: the receipt time in hex, then 16 hex digits from a seeded counter. The seed is
/// the isolate's own and is used for nothing else.
struct RequestIds {
    seed: u64,
    counter: u64,
}

impl RequestIds {
    fn next(&mut self, now_ms: u64) -> String {
        let mut id = String::with_capacity(27);
        push_hex_u64(&mut id, now_ms, 11);
        push_hex_u64(&mut id, self.entropy(), 16);
        id
    }

    /// Bits no client can predict, for ids.
    fn entropy(&mut self) -> u64 {
        self.counter = self.counter.wrapping_add(1);
        mix(self.seed ^ self.counter)
    }

    /// 128 such bits, for a challenge's salt.
    fn salt(&mut self) -> u128 {
        (u128::from(self.entropy()) << 64) | u128::from(self.entropy())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::challenge::solved_for_tests as solved;
    use crate::config::tests::local_config;
    use crate::request::Body;

    const URL: &str = "https://campaign.example/api/campaigns/spring-launch/submissions";
    const VALID: &str = r#"{"name":"Ada","email":"ada@example.org","country":"IT","consent":true}"#;

    fn facts(body: &str) -> Facts<'_> {
        Facts {
            method: "POST",
            url: URL,
            content_type: Some("application/json"),
            body: Body::Bytes(body.as_bytes()),
            country: Some("IT"),
            client_ip: Some("192.0.2.1"),
            idempotency_key: Some(KEY),
            challenge: Some(solved(&local_config(), KEY, 1_764_000_000_000)),
            origin: None,
            now_ms: 1_764_000_000_000,
        }
    }

    const KEY: &str = "pipeline-key-0123456789";

    fn seeds() -> Seeds {
        Seeds {
            limiter: 1,
            request_ids: 2,
            challenges: 3,
        }
    }

    #[test]
    fn an_answer_is_logged_with_what_the_phases_before_it_learnt() {
        let mut pipeline = Pipeline::new(Ok(local_config()), seeds());
        let Verdict::Answer { log, reply } = pipeline.request(&facts("{}")) else {
            panic!("an empty body was forwarded")
        };
        assert_eq!(reply.status, 422);
        assert_eq!(log.phase, Phase::Validate);
        assert_eq!(log.campaign.as_deref(), Some("spring-launch"));
        assert_eq!(log.region, None, "refused before classification");
        let blocked = Facts {
            country: Some("T1"),
            ..facts(VALID)
        };
        let Verdict::Answer { log, .. } = pipeline.request(&blocked) else {
            panic!("a Tor visitor was forwarded")
        };
        assert_eq!(
            (log.phase, log.outcome),
            (Phase::Classify, "country_anonymised")
        );
    }

    #[test]
    fn cors_reaches_every_answer_after_the_route() {
        let mut pipeline = Pipeline::new(Ok(local_config()), seeds());
        let crossed = Facts {
            origin: Some("http://localhost:8787"),
            ..facts("{}")
        };
        let Verdict::Answer { reply, .. } = pipeline.request(&crossed) else {
            panic!("forwarded")
        };
        assert_eq!(
            reply.header("access-control-allow-origin"),
            Some("http://localhost:8787")
        );
    }

    #[test]
    fn an_isolate_without_configuration_answers_500_to_everything() {
        let broken = Err(PolicyError(Vec::new()));
        let mut pipeline = Pipeline::new(broken, seeds());
        let Verdict::Answer { reply, log } = pipeline.request(&facts(VALID)) else {
            panic!("forwarded without configuration")
        };
        assert_eq!((reply.status, log.phase), (500, Phase::Configure));
    }

    #[test]
    fn request_ids_are_unique_and_do_not_count_visibly() {
        let mut ids = RequestIds {
            seed: 9,
            counter: 0,
        };
        let a = ids.next(1);
        let b = ids.next(1);
        assert_eq!(a.len(), 27);
        assert_ne!(a, b);
        assert_eq!(a[..11], b[..11], "same millisecond");
        let (x, y) = (
            u64::from_str_radix(&a[11..], 16).unwrap(),
            u64::from_str_radix(&b[11..], 16).unwrap(),
        );
        assert!(x.abs_diff(y) > 1 << 20, "consecutive ids are far apart");
    }
}
