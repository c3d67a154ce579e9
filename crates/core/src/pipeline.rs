//! The request pipeline: named phases over plain data, composed into one verdict.
//!
//! ```text
//! route → request_check → challenge → validate → classify → ingress → shed → admit
//!                                                                          (Pipeline::request)
//!   … the shell consults the location's rate-limiting binding …
//! settle → screen → plan                                                      (Pipeline::after_consult)
//!   … the shell sends the plan to an origin …
//! forward: the next origin of the region, or the answer                      (Pipeline::after_attempt)
//! ```
//!
//! Each phase is a function of its own module (`phase`) that either goes on with a value or
//! answers now ([`Flow`]); `flow` and `flow_after_consult` read top to bottom. Each request has
//! one [`Context`], which the phases fill in, and ends in one place, [`Pipeline::finish`]: its
//! reply (the context's CORS and `RateLimit` headers applied) and its log record. What each
//! phase answers: README, "How a request flows".
//!
//! The proof of work is checked before the body is parsed or anything charged, so a request
//! without it costs next to nothing and can never spend a budget that visitors who did the work
//! need. Residency is classified before limits are charged because the per-region budget needs
//! the region; nothing is charged for a request that is refused for any other reason, so a
//! visitor correcting a form is not penalised. The one platform call a decision needs (the
//! binding) is a value too: `request` ends with [`Verdict::Consult`], everything the later
//! phases need held in [`Held`], and the shell hands the binding's answer back with it.
//!
//! `Pipeline` holds what lives as long as an isolate: the configuration (or why it is invalid),
//! the candidate policy evaluated in shadow (see `shadow`), the admission state, the origins'
//! breakers, the request-id generator and the log lines its state changes produce. It never
//! reads a clock or the environment.

use std::ops::ControlFlow;

use harbour_policy::text::push_hex_u64;
use harbour_policy::{Policy, RegionIndex};

use crate::attempt::{Attempt, AttemptResult, DEADLINE_MS};
use crate::breaker::Breakers;
use crate::config::{Config, ConfigError};
use crate::context::{Context, Finished};
use crate::entry::Entry;
use crate::journal::LogRecord;
use crate::limit::ClientKey;
use crate::outcome::Outcome;
use crate::phase::admission::{
    admit, settle, Admission, Applicant, Consult, LocationResult, Provisional, CONSULT_TIMEOUT_MS,
};
use crate::phase::challenge::challenge;
use crate::phase::forward::{self, Learning, Onward, Ticket};
use crate::phase::ingress::{ingress, Arrival};
use crate::phase::plan::{plan, ForwardPlan};
use crate::phase::request::{request_check, route, Facts};
use crate::phase::residency::{classify, Residency};
use crate::phase::screen::{screen, Decoy};
use crate::phase::shed::shed;
use crate::phase::validate::{validate, Submission};
use crate::replays::{Recall, Replays, Sighting, MAX_SEEN};
use crate::reply::{problem, retry_later, Answer, Flow, Phase, Receipt, Reply};
use crate::shadow::{self, Comparison, View};
use crate::tickets::Filed;

/// What the pipeline concluded for a request: answer it, forward it, or first ask the location.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Send `reply`; `log` is the request's log record.
    Reply { reply: Reply, log: LogRecord },
    /// Send `plan`; report the origin's answer with `ticket` to [`Pipeline::after_attempt`].
    Forward {
        plan: Box<ForwardPlan>,
        ticket: Ticket,
    },
    /// Ask the location's rate-limiting binding, then give its answer and `held` back to
    /// [`Pipeline::after_consult`].
    Consult { consult: Consult, held: Box<Held> },
}

impl From<Finished> for Verdict {
    fn from(finished: Finished) -> Verdict {
        Verdict::Reply {
            reply: finished.reply,
            log: finished.log,
        }
    }
}

/// What follows an origin's answer: another attempt, or the visitor's answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Next {
    Retry { attempt: Attempt, ticket: Ticket },
    Done { reply: Reply, log: LogRecord },
}

/// A request the isolate admitted while the location's answer is awaited: its context, what the
/// later phases need, and what admission charged (given back if the location refuses).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Held {
    ctx: Context,
    submission: Submission,
    residency: Residency,
    /// The visitor's `Idempotency-Key`, if any (the entry's key is worked out from it later).
    client_key: Option<String>,
    provisional: Provisional,
}

/// How long after its consult's timeout a held request is kept for an answer still coming.
const HELD_GRACE_MS: u64 = 2_000;
/// Held requests an isolate keeps at most (their handlers never came back): about 1 KB each.
pub const MAX_HELD: usize = 10_000;

impl Filed for Held {
    fn drop_after_ms(&self) -> u64 {
        self.ctx
            .received_ms
            .saturating_add(CONSULT_TIMEOUT_MS + HELD_GRACE_MS)
    }
}

/// What the platform reported for a request the isolate no longer holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Expired {
    /// The location's answer, for a held request dropped meanwhile.
    Admission,
    /// An origin's answer, for a forward whose ticket was dropped meanwhile.
    Forward,
    /// An origin's answer, for a forward filed by an instance that trapped: the origin may have
    /// stored the entry under `key` (from the forward's headers).
    Orphaned { key: Option<String> },
}

/// Independent secrets of an isolate: one keys the limiter's hash table, one makes request ids,
/// one the challenges' salts, so nothing a client sees reveals another.
#[derive(Clone, Copy, Debug)]
pub struct Seeds {
    pub limiter: u64,
    pub request_ids: u64,
    pub challenges: u64,
}

pub struct Pipeline {
    config: Result<Config, ConfigError>,
    /// Evaluated beside the live policy, never in its place.
    candidate: Option<Policy>,
    admission: Admission,
    breakers: Breakers,
    /// Solutions seen lately and what they bought (see `replays`).
    replays: Replays,
    request_ids: RequestIds,
    salts: RequestIds,
    /// The latest time seen: limits never see the clock go backwards (a wall clock can step back,
    /// and GCRA would then refuse until it caught up).
    latest_ms: u64,
    /// Log lines of state changes (breakers, an unavailable binding), for the shell to write.
    notes: Vec<String>,
    /// The regions whose breakers opened since the shell last asked, one entry per opening.
    openings: Vec<RegionIndex>,
    /// How long a stored entry's forward takes here, smoothed: what a bot's decoy waits.
    forward_ms: u64,
}

/// What a decoy waits before any forward was timed in this isolate.
const FIRST_FORWARD_MS: u64 = 40;

impl Pipeline {
    pub fn new(config: Result<Config, ConfigError>, seeds: Seeds) -> Pipeline {
        let admission = Admission::new(
            config.as_ref().ok().map(|c| (&c.policy, &c.form_key)),
            seeds.limiter,
        );
        let origins = config
            .as_ref()
            .map(|c| c.regions.iter().map(|r| r.origins.len()).collect())
            .unwrap_or_else(|_| Vec::new());
        Pipeline {
            config,
            candidate: None,
            admission,
            breakers: Breakers::new(origins),
            // The limiter's secret, spread apart: replay ids are never shown to anyone.
            replays: Replays::new(mix(seeds.limiter ^ 0x0072_6570_6c61_7973), MAX_SEEN),
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
            openings: Vec::new(),
            forward_ms: FIRST_FORWARD_MS,
        }
    }

    /// The same pipeline with a candidate policy to evaluate in shadow.
    pub fn with_candidate(mut self, candidate: Policy) -> Pipeline {
        self.candidate = Some(candidate);
        self
    }

    pub fn config(&self) -> Result<&Config, &ConfigError> {
        self.config.as_ref()
    }

    /// The candidate policy's view of the submission `request` just decided, beside the live
    /// one: None without a candidate, or when the live pipeline stopped before a campaign's
    /// submission. It reads only its arguments, so it cannot change an answer, a limit or a
    /// forward.
    pub fn shadow<'a>(&'a self, facts: &Facts, verdict: &'a Verdict) -> Option<Comparison<'a>> {
        let candidate = self.candidate.as_ref()?;
        let policy = &self.config.as_ref().ok()?.policy;
        let id = |ctx: &Context| Some(policy.campaigns.get(ctx.campaign?.get())?.id.as_str());
        let region = |ctx: &Context| Some(policy.region(ctx.region?).id.as_str());
        let (campaign, live) = match verdict {
            Verdict::Reply { log, .. } => (
                log.campaign.as_deref()?,
                View::live(Some((log.phase, log.outcome)), log.region.as_deref())?,
            ),
            Verdict::Forward { ticket, .. } => {
                (id(&ticket.ctx)?, View::placed(region(&ticket.ctx)))
            }
            // Placed and admitted by the isolate; the location's answer is outside the comparison.
            Verdict::Consult { held, .. } => (id(&held.ctx)?, View::placed(region(&held.ctx))),
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

    /// The ids of the regions whose breakers opened since the last call, one per opening.
    pub fn take_openings(&mut self) -> Vec<String> {
        let policy = self.config.as_ref().ok().map(|c| &c.policy);
        std::mem::take(&mut self.openings)
            .into_iter()
            .filter_map(|region| Some(policy?.regions.get(region.get())?.id.clone()))
            .collect()
    }

    /// `now_ms`, never behind the latest time seen.
    fn monotonic(&mut self, now_ms: u64) -> u64 {
        self.latest_ms = self.latest_ms.max(now_ms);
        self.latest_ms
    }

    /// Runs a request through every phase up to the location's binding.
    pub fn request(&mut self, facts: &Facts) -> Verdict {
        let facts = &Facts {
            now_ms: self.monotonic(facts.now_ms),
            ..*facts
        };
        let mut ctx = Context::new(self.request_ids.next(facts.now_ms), facts.now_ms);
        match self.flow(facts, &mut ctx) {
            ControlFlow::Continue((submission, residency, provisional)) => {
                if let Some(sighting) = ctx.sighting {
                    self.replays.start(sighting, facts.now_ms);
                }
                Verdict::Consult {
                    consult: provisional.consult.clone(),
                    held: Box::new(Held {
                        ctx,
                        submission,
                        residency,
                        client_key: facts.idempotency_key.map(str::to_owned),
                        provisional,
                    }),
                }
            }
            ControlFlow::Break(answer) => self.finish(&ctx, answer).into(),
        }
    }

    /// The phases in the order a request meets them, up to the location's binding.
    fn flow(
        &mut self,
        facts: &Facts,
        ctx: &mut Context,
    ) -> Flow<(Submission, Residency, Provisional)> {
        let config = configured(&self.config)?;
        let routed = route(config, facts, self.salts.salt())?;
        let campaign = routed.campaign;
        (ctx.campaign, ctx.cors) = (Some(routed.index), routed.cors);
        let payload = request_check(&config.policy, facts)?;
        let (key, now_ms) = (facts.idempotency_key, facts.now_ms);
        challenge(config, campaign, facts.challenge, key, now_ms)?;
        ctx.sighting = Some(recall(
            &mut self.replays,
            config,
            ctx,
            facts,
            payload.bytes,
        )?);
        let submission = validate(campaign, payload, facts.notice)?;
        let (declared, confirmed) = (submission.declared_country(), submission.confirmed_region());
        let residency = classify(&config.policy, campaign, facts.country, declared, confirmed)?;
        ctx.region = Some(residency.region);
        ingress(
            config,
            &campaign.id,
            Arrival::of(config, facts.url),
            residency.region,
        )?;
        shed(&self.breakers, residency.region, now_ms, || {
            Entry::new(&campaign.id, &submission, key).key
        })?;
        let applicant = Applicant {
            campaign: routed.index,
            region: residency.region,
            client: ClientKey::from_ip(facts.client_ip),
        };
        let provisional = admit(&mut self.admission, &config.policy, &applicant, now_ms)?;
        Flow::Continue((submission, residency, provisional))
    }

    /// The rest of a held request once the location answered: forward it, or answer it.
    pub fn after_consult(&mut self, held: Held, answer: LocationResult, now_ms: u64) -> Verdict {
        let now_ms = self.monotonic(now_ms);
        let Held {
            mut ctx,
            submission,
            residency,
            client_key,
            provisional,
        } = held;
        let admitted = Admitted {
            submission: &submission,
            residency: &residency,
            client_key: client_key.as_deref(),
            provisional,
        };
        match self.flow_after_consult(&mut ctx, admitted, answer, now_ms) {
            ControlFlow::Continue(plan) => {
                ctx.attempts = 1;
                let ticket = Ticket {
                    region: plan.region,
                    origin: plan.origin,
                    ctx,
                };
                Verdict::Forward {
                    plan: Box::new(plan),
                    ticket,
                }
            }
            ControlFlow::Break(answer) => self.finish(&ctx, answer).into(),
        }
    }

    /// The phases after the location's answer. The breakers are asked again first: the region's
    /// origins may have started shedding while the answer was awaited.
    fn flow_after_consult(
        &mut self,
        ctx: &mut Context,
        admitted: Admitted,
        answer: LocationResult,
        now_ms: u64,
    ) -> Flow<ForwardPlan> {
        let config = configured(&self.config)?;
        let Admitted {
            submission,
            residency,
            client_key,
            provisional,
        } = admitted;
        let campaign = ctx
            .campaign
            .and_then(|c| config.policy.campaigns.get(c.get()));
        let Some(campaign) = campaign else {
            return Flow::Break(config_invalid());
        };
        let region = residency.region;
        let entry = Entry::new(&campaign.id, submission, client_key);
        ctx.key = Some(entry.key.clone());
        if let ControlFlow::Break(busy) = shed(&self.breakers, region, now_ms, || entry.key.clone())
        {
            self.admission.withdraw(&provisional, now_ms);
            return Flow::Break(busy);
        }
        let charge = provisional.charge();
        let grant = settle(
            &mut self.admission,
            provisional,
            answer,
            &entry.key,
            now_ms,
            &mut self.notes,
        )?;
        (ctx.charge, ctx.rate_headers) = (Some(charge), grant.headers());
        let decoy = Decoy {
            region_id: &config.policy.region(region).id,
            key: &entry.key,
            entropy: self.request_ids.entropy(),
        };
        if let ControlFlow::Break(mut decoy) = screen(submission, decoy) {
            // As long as a real forward: ±25 % of the typical one.
            let spread = self.request_ids.entropy() % 51;
            decoy.reply.delay_ms = self.forward_ms * (75 + spread) / 100;
            return Flow::Break(decoy);
        }
        // Some origin is available (asked just above, in this same call): the first of them.
        let origin = self.breakers.pick(region, 0, now_ms).unwrap_or(0);
        let shown = (entry.fields_json.as_str(), submission.notice());
        plan(config, ctx, residency, origin, shown)
    }

    /// `request`, with the binding answering `answer` at once: for tests and tools without one.
    pub fn request_answered(&mut self, facts: &Facts, answer: LocationResult) -> Verdict {
        match self.request(facts) {
            Verdict::Consult { held, .. } => self.after_consult(*held, answer, facts.now_ms),
            other => other,
        }
    }

    /// After an attempt of the forward `ticket`: the forward phase decides (the origin's breaker
    /// learns what it answered; the region's next origin, or the answer).
    pub fn after_attempt(
        &mut self,
        mut ticket: Ticket,
        result: AttemptResult,
        now_ms: u64,
    ) -> Next {
        let now_ms = self.monotonic(now_ms);
        let Ok(config) = &self.config else {
            let Finished { reply, log } = self.finish(&ticket.ctx, config_invalid());
            return Next::Done { reply, log };
        };
        let state = Learning {
            breakers: &mut self.breakers,
            admission: &mut self.admission,
            notes: &mut self.notes,
            openings: &mut self.openings,
        };
        match forward::after_attempt(config, state, &ticket, result, now_ms) {
            ControlFlow::Continue(Onward { origin, attempt }) => {
                ticket.origin = origin;
                ticket.ctx.attempts = ticket.ctx.attempts.saturating_add(1);
                Next::Retry { attempt, ticket }
            }
            ControlFlow::Break(answer) => {
                if matches!(answer.outcome, Outcome::Stored | Outcome::Replayed) {
                    // Smoothed over the last dozens of entries, bounded by the deadline.
                    let took = now_ms
                        .saturating_sub(ticket.ctx.received_ms)
                        .min(DEADLINE_MS);
                    self.forward_ms = (self.forward_ms * 15 + took) / 16;
                }
                let Finished { reply, log } = self.finish(&ticket.ctx, answer);
                Next::Done { reply, log }
            }
        }
    }

    /// The answer for what the platform reported about a request the isolate no longer holds: 503
    /// with retry advice (and the key, when the entry may have been stored).
    pub fn expired(&mut self, what: Expired, now_ms: u64) -> Finished {
        let now_ms = self.monotonic(now_ms);
        let mut ctx = Context::new(String::new(), now_ms);
        let (phase, outcome, title) = match &what {
            Expired::Admission => (
                Phase::Admit,
                Outcome::AdmissionExpired,
                "Your entry could not be taken right now",
            ),
            Expired::Forward => (
                Phase::Forward,
                Outcome::ForwardExpired,
                "Your entry could not be stored right now",
            ),
            Expired::Orphaned { .. } => (
                Phase::Forward,
                Outcome::ForwardOrphaned,
                "Your entry could not be confirmed",
            ),
        };
        if let Expired::Orphaned { key } = what {
            ctx.key = key;
        }
        let reply = retry_later(outcome, title, ctx.key.as_deref(), 1_000);
        self.finish(&ctx, Answer::new(phase, reply))
    }

    /// Where every request ends: its reply, with the `RateLimit` headers admission granted and
    /// the CORS decision applied, and its log record.
    pub fn finish(&mut self, ctx: &Context, answer: Answer) -> Finished {
        if let Some(sighting) = ctx.sighting {
            let region = ctx.region;
            let accepted = answer.receipt.clone().zip(region);
            self.replays.end(sighting, accepted);
        }
        let policy = self.config.as_ref().ok().map(|c| &c.policy);
        let campaign = ctx
            .campaign
            .and_then(|c| policy?.campaigns.get(c.get()))
            .map(|c| c.id.clone());
        let region = ctx
            .region
            .and_then(|r| policy?.regions.get(r.get()))
            .map(|r| r.id.clone());
        let mut reply = answer.reply;
        reply.headers.extend(ctx.rate_headers.iter().cloned());
        let reply = ctx.cors.apply(reply);
        let log = LogRecord {
            request_id: ctx.request_id.clone(),
            campaign,
            region,
            phase: answer.phase,
            outcome: answer.outcome,
            status: reply.status,
            attempts: ctx.attempts,
            received_ms: ctx.received_ms,
        };
        Finished { reply, log }
    }
}

/// What the isolate remembers of this request's solution: new (go on), or answered from
/// memory (see `replays`): a resend of an accepted entry gets its receipt again, cheaply.
fn recall(
    replays: &mut Replays,
    config: &Config,
    ctx: &mut Context,
    facts: &Facts,
    body: &[u8],
) -> Flow<Sighting> {
    let solution = facts.challenge.unwrap_or_default();
    let key = facts.idempotency_key.unwrap_or_default();
    let answer = match replays.recall(solution, key, body, facts.now_ms) {
        Recall::New(sighting) => return Flow::Continue(sighting),
        Recall::InFlight => Answer::new(
            Phase::Challenge,
            retry_later(
                Outcome::InProgress,
                "This entry is being stored",
                Some(key),
                1_000,
            ),
        ),
        Recall::OtherBody => Answer::new(
            Phase::Challenge,
            problem(
                409,
                Outcome::KeyReused,
                "This key was already used for a different entry",
                "Start a new entry; the key belongs to an earlier, different submission.",
                &[],
            ),
        ),
        Recall::Accepted { receipt, region } => {
            ctx.region = Some(region);
            // Even a receipt from memory is given only where its region is taken.
            let campaign = ctx
                .campaign
                .and_then(|c| config.policy.campaigns.get(c.get()));
            let id = campaign.map_or("", |c| c.id.as_str());
            ingress(config, id, Arrival::of(config, facts.url), region)?;
            let receipt = Receipt {
                id: receipt,
                region_id: &config.policy.region(region).id,
                key,
                replayed: true,
            };
            Answer::accepted(Phase::Challenge, Outcome::Replayed, receipt)
        }
    };
    Flow::Break(answer)
}

/// What admission let through, as the phases after the location's answer take it.
struct Admitted<'a> {
    submission: &'a Submission,
    residency: &'a Residency,
    client_key: Option<&'a str>,
    provisional: Provisional,
}

/// The answer when the isolate has no configuration (or its state cannot be reached): 500.
pub fn unconfigured(now_ms: u64) -> Finished {
    let answer = config_invalid();
    Finished {
        log: LogRecord {
            request_id: String::new(),
            campaign: None,
            region: None,
            phase: answer.phase,
            outcome: answer.outcome,
            status: answer.reply.status,
            attempts: 0,
            received_ms: now_ms,
        },
        reply: answer.reply,
    }
}

fn config_invalid() -> Answer {
    let reply = problem(
        500,
        Outcome::ConfigInvalid,
        "Service misconfigured",
        "This service cannot accept entries right now.",
        &[],
    );
    Answer::new(Phase::Configure, reply)
}

/// The configure "phase": an isolate without a valid configuration answers 500 to everything.
fn configured(config: &Result<Config, ConfigError>) -> Flow<&Config> {
    match config {
        Ok(config) => Flow::Continue(config),
        Err(_) => Flow::Break(config_invalid()),
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
    use crate::config::tests::local_config;
    use crate::phase::challenge::solved_for_tests as solved;
    use crate::phase::request::Body;

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
            notice: Some(crate::phase::validate::shipped_notice()),
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
        let Verdict::Reply { log, reply } = pipeline.request(&facts("{}")) else {
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
        let Verdict::Reply { log, .. } = pipeline.request(&blocked) else {
            panic!("a Tor visitor was forwarded")
        };
        assert_eq!(
            (log.phase, log.outcome.name()),
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
        let Verdict::Reply { reply, .. } = pipeline.request(&crossed) else {
            panic!("forwarded")
        };
        assert_eq!(
            reply.header("access-control-allow-origin"),
            Some("http://localhost:8787")
        );
    }

    #[test]
    fn an_isolate_without_configuration_answers_500_to_everything() {
        let broken = Err(ConfigError(Vec::new()));
        let mut pipeline = Pipeline::new(broken, seeds());
        let Verdict::Reply { reply, log } = pipeline.request(&facts(VALID)) else {
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

    /// What a log line may hold: ids, names of the policy's own things, codes and numbers.
    const LOG_KEYS: [&str; 9] = [
        "msg",
        "request_id",
        "campaign",
        "region",
        "phase",
        "outcome",
        "status",
        "attempts",
        "latency_ms",
    ];

    #[test]
    fn log_records_carry_no_personal_data() {
        // Personal data in every place a request carries it: fields, address, key, challenge.
        let (name, email, ip) = (
            "Zerlina Quokka",
            "zerlina.quokka@example.org",
            "198.51.100.77",
        );
        let body =
            format!(r#"{{"name":"{name}","email":"{email}","country":"IT","consent":true}}"#);
        let invalid = format!(r#"{{"name":"{name}","email":"{email}x","country":"IT"}}"#);
        let mut pipeline = Pipeline::new(Ok(local_config()), seeds());
        let mut records = Vec::new();
        let other_key = "pipeline-key-other-0123456";
        let other_work = solved(&local_config(), other_key, 1_764_000_000_000);
        for (body, key, work) in [
            (body.as_str(), KEY, facts("").challenge),
            (invalid.as_str(), other_key, Some(other_work)),
        ] {
            let facts = Facts {
                client_ip: Some(ip),
                idempotency_key: Some(key),
                challenge: work,
                ..facts(body)
            };
            match pipeline.request_answered(&facts, LocationResult::Admitted) {
                Verdict::Reply { log, .. } => records.push(log),
                Verdict::Forward { ticket, .. } => {
                    let result = AttemptResult::Answered {
                        status: 201,
                        body: r#"{"receipt":{"id":"eu-0123456789abcdef","region":"eu"}}"#,
                    };
                    let Next::Done { log, .. } =
                        pipeline.after_attempt(ticket, result, facts.now_ms)
                    else {
                        panic!("stored, so done")
                    };
                    records.push(log);
                }
                Verdict::Consult { .. } => panic!("answered at once"),
            }
        }
        let outcomes: Vec<_> = records.iter().map(|r| r.outcome).collect();
        assert_eq!(outcomes, [Outcome::Stored, Outcome::ValidationFailed]);
        for record in &records {
            let line = record.to_json(record.received_ms);
            for personal in [name, email, "zerlina", ip, "198.51.100", KEY, other_key] {
                assert!(!line.contains(personal), "{personal:?} in {line}");
            }
            let value: serde_json::Value = serde_json::from_str(&line).unwrap();
            let keys: Vec<&str> = value
                .as_object()
                .unwrap()
                .keys()
                .map(String::as_str)
                .collect();
            assert!(keys.iter().all(|k| LOG_KEYS.contains(k)), "{keys:?}");
        }
    }
}
