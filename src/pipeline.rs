//! The request pipeline: named phases over plain data, composed into one verdict.
//!
//! ```text
//! route → request_check → challenge → validate → classify → admit → screen → plan
//!                                            (Pipeline::request) then, per attempt, after_attempt
//! ```
//!
//! Each phase is a function of its own module that either goes on with a value or answers now
//! ([`Flow`]); `Pipeline::flow` reads top to bottom. The proof of work is checked before the body
//! is parsed or anything charged, so a request without it costs next to nothing and can never
//! spend a budget that visitors who did the work need. Residency is classified before limits are
//! charged because the per-region budget needs the region; nothing is charged for a request that
//! is refused for any other reason, so a visitor correcting a form is not penalised.
//!
//! `Pipeline` holds what lives as long as an isolate: the configuration (or why it is invalid),
//! the admission state and the request-id generator. It never reads a clock or the environment.

use std::ops::ControlFlow;

use crate::admission::{admit, Admission, Applicant};
use crate::challenge::challenge;
use crate::config::Config;
use crate::forward::{self, AttemptResult, Entry, ForwardPlan, Next, PlanInput, Ticket};
use crate::journal::LogRecord;
use crate::limit::ClientKey;
use crate::policy::PolicyError;
use crate::reply::{problem, Answer, Cors, Flow, Phase, Reply};
use crate::request::{request_check, route, Facts};
use crate::residency::classify;
use crate::screen::{screen, Decoy};
use crate::text::push_hex_u64;
use crate::validate::validate;

/// What the pipeline concluded for a request: answer it, or forward it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    Answer { reply: Reply, log: LogRecord },
    Forward { plan: Box<ForwardPlan> },
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
    admission: Admission,
    request_ids: RequestIds,
    salts: RequestIds,
    /// The latest time seen: limits never see the clock go backwards (a wall clock can step back,
    /// and GCRA would then refuse until it caught up).
    latest_ms: u64,
}

impl Pipeline {
    pub fn new(config: Result<Config, PolicyError>, seeds: Seeds) -> Pipeline {
        let admission = Admission::new(config.as_ref().ok().map(|c| &c.policy), seeds.limiter);
        Pipeline {
            config,
            admission,
            request_ids: RequestIds {
                seed: seeds.request_ids,
                counter: 0,
            },
            salts: RequestIds {
                seed: seeds.challenges,
                counter: 0,
            },
            latest_ms: 0,
        }
    }

    pub fn config(&self) -> Result<&Config, &PolicyError> {
        self.config.as_ref()
    }

    /// Runs a request through every phase.
    pub fn request(&mut self, facts: &Facts) -> Verdict {
        self.latest_ms = self.latest_ms.max(facts.now_ms);
        let facts = &Facts {
            now_ms: self.latest_ms,
            ..*facts
        };
        let request_id = self.request_ids.next(facts.now_ms);
        let mut trace = Trace::default();
        match self.flow(facts, &request_id, &mut trace) {
            ControlFlow::Continue(plan) => Verdict::Forward {
                plan: Box::new(plan),
            },
            ControlFlow::Break(answer) => Verdict::Answer {
                log: LogRecord {
                    request_id,
                    campaign: trace.campaign,
                    region: trace.region,
                    phase: answer.phase,
                    outcome: answer.outcome,
                    status: answer.reply.status,
                    attempts: 0,
                    received_ms: facts.now_ms,
                },
                reply: trace.cors.apply(answer.reply),
            },
        }
    }

    /// The phases in the order a request meets them.
    fn flow(&mut self, facts: &Facts, request_id: &str, trace: &mut Trace) -> Flow<ForwardPlan> {
        let config = configured(&self.config)?;
        let routed = route(config, facts, self.salts.salt())?;
        let campaign = routed.campaign;
        trace.campaign = Some(campaign.id.clone());
        trace.cors = routed.cors.clone();
        let payload = request_check(&config.policy, facts)?;
        let (key, now_ms) = (facts.idempotency_key, facts.now_ms);
        challenge(config, campaign, facts.challenge, key, now_ms)?;
        let submission = validate(campaign, payload)?;
        let residency = classify(&config.policy, facts.country, submission.declared_country())?;
        let region_id = &config.policy.region(residency.region).id;
        trace.region = Some(region_id.clone());
        let applicant = Applicant {
            campaign: routed.index,
            region: residency.region,
            client: ClientKey::from_ip(facts.client_ip),
        };
        let grant = admit(
            &mut self.admission,
            &config.policy,
            &applicant,
            facts.now_ms,
        )?;
        let entry = Entry::new(&campaign.id, &submission, facts.idempotency_key);
        let decoy = Decoy {
            region_id,
            key: &entry.key,
            entropy: self.request_ids.entropy(),
            grant: &grant,
        };
        screen(&submission, decoy)?;
        let input = PlanInput {
            residency: &residency,
            campaign: &campaign.id,
            entry,
            request_id: request_id.to_owned(),
            now_ms: facts.now_ms,
            rate_headers: grant.headers(),
            cors: routed.cors,
        };
        forward::plan(config, input)
    }

    /// After an attempt: the next origin of the same region, or the final reply and its log.
    pub fn after_attempt(&self, ticket: &Ticket, result: AttemptResult, now_ms: u64) -> Next {
        match &self.config {
            Ok(config) => forward::after_attempt(config, ticket, result, now_ms),
            Err(_) => Next::Done {
                reply: config_invalid(),
                outcome: "config_invalid",
            },
        }
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
            attempts: u32::try_from(ticket.attempt + 1).unwrap_or(u32::MAX),
            received_ms: ticket.received_ms,
        }
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
