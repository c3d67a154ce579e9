//! The request pipeline: named phases over plain data, composed into one decision.
//!
//! `request_check → validate → classify → rate_limit → plan`, then, after each origin attempt,
//! `after_attempt`. Each phase either passes its result on or ends the request with a `Reply`.
//! Residency is classified before limits are charged because the per-region budget needs the
//! region; nothing is charged for a request that is refused for any other reason, so a visitor
//! correcting a form is not penalised.
//!
//! `Edge` holds what lives as long as an isolate: the configuration (or why it is invalid), the
//! limiter state and a request-id counter. It never reads a clock or the environment itself.

use serde_json::{json, Value};

use crate::config::Config;
use crate::forward::{self, ForwardPlan, Next, Outcome, PlanInput, Ticket};
use crate::limit::{ClientKey, Decision, Limiter, Quota};
use crate::policy::FORM_TOKEN_KEY;
use crate::policy::{Campaign, FieldKind, PolicyError};
use crate::reply::{problem, retry_after_seconds, Reply};
use crate::residency::{classify, PlatformCountry};
use crate::text::{push_hex_u64, push_quoted, push_u64};
use crate::validate::{parse_body, validate, Encoding, RawValue};

/// Forms older than this are refused as too fast too: a token is not a lasting pass.
const FORM_TOKEN_MAX_AGE_MS: u64 = 24 * 60 * 60 * 1000;

fn form_token_mac(config: &Config, campaign: &str, issued_ms: u64) -> String {
    // Keyed with the rest-of-world region's signing key under a message prefix of its own.
    let key = &config.regions[config.policy.rest_of_world.get()].key;
    let mac = key.mac_hex(&format!("harbour-form-v1\n{campaign}\n{issued_ms}"));
    mac[..32].to_owned()
}

/// `{issued_ms}.{mac}`: when the form was handed out, vouched for by harbour.
pub fn form_token(config: &Config, campaign: &str, now_ms: u64) -> String {
    format!("{now_ms}.{}", form_token_mac(config, campaign, now_ms))
}

fn form_token_ok(
    config: &Config,
    campaign: &str,
    token: &str,
    min_fill_ms: u64,
    now_ms: u64,
) -> bool {
    let Some((issued, mac)) = token.split_once('.') else {
        return false;
    };
    let Ok(issued_ms) = issued.parse::<u64>() else {
        return false;
    };
    let age = now_ms.saturating_sub(issued_ms);
    let expected = form_token_mac(config, campaign, issued_ms);
    // Constant time, so response timing says nothing about how much of a forgery matched.
    let same = mac.len() == expected.len()
        && mac
            .bytes()
            .zip(expected.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0;
    same && issued_ms <= now_ms && age >= min_fill_ms && age <= FORM_TOKEN_MAX_AGE_MS
}

/// Keys the limiter may hold per isolate before it sheds recovered and near-recovered ones.
const MAX_LIMITER_KEYS: usize = 200_000;

/// The request as the platform delivered it; every field is as read, unchecked.
#[derive(Clone, Copy, Debug)]
pub struct Facts<'a> {
    pub method: &'a str,
    pub url: &'a str,
    pub content_type: Option<&'a str>,
    pub body: Body<'a>,
    /// `request.cf.country`: the only trusted country signal.
    pub country: Option<&'a str>,
    /// `CF-Connecting-IP`, set by the platform.
    pub client_ip: Option<&'a str>,
    pub idempotency_key: Option<&'a str>,
    /// The `Origin` request header (CORS).
    pub origin: Option<&'a str>,
    pub now_ms: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Body<'a> {
    /// Not read: the method carries none, or the route does not need it.
    Unread,
    Bytes(&'a [u8]),
    /// Declared or found to exceed the cap; the shell stopped reading.
    TooLarge,
    /// The client stopped sending before the body was complete.
    Incomplete,
}

/// The log record of one decision. It carries no personal data: no field values, no address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogRecord {
    pub request_id: String,
    pub campaign: Option<String>,
    pub region: Option<String>,
    pub phase: &'static str,
    pub outcome: String,
    pub status: u16,
    /// Origin attempts made: 0 when nothing was forwarded.
    pub attempts: u32,
    pub received_ms: u64,
}

impl LogRecord {
    pub fn to_json(&self, now_ms: u64) -> String {
        // Written directly: a line per decision, on the hot path.
        let mut line = String::with_capacity(192);
        line.push_str("{\"msg\":\"harbour.decision\",\"request_id\":");
        push_quoted(&mut line, &self.request_id);
        for (name, value) in [
            (",\"campaign\":", &self.campaign),
            (",\"region\":", &self.region),
        ] {
            line.push_str(name);
            match value {
                Some(value) => push_quoted(&mut line, value),
                None => line.push_str("null"),
            }
        }
        line.push_str(",\"phase\":");
        push_quoted(&mut line, self.phase);
        line.push_str(",\"outcome\":");
        push_quoted(&mut line, &self.outcome);
        line.push_str(",\"status\":");
        push_u64(&mut line, u64::from(self.status));
        line.push_str(",\"attempts\":");
        push_u64(&mut line, u64::from(self.attempts));
        line.push_str(",\"latency_ms\":");
        push_u64(&mut line, now_ms.saturating_sub(self.received_ms));
        line.push('}');
        line
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    Reply { reply: Reply, log: LogRecord },
    Forward { plan: Box<ForwardPlan> },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum LimitKey {
    Client(usize, ClientKey),
    Campaign(usize),
    Region(usize),
}

pub struct Edge {
    config: Result<Config, PolicyError>,
    limiter: Limiter<LimitKey>,
    seed: u64,
    counter: u64,
    /// The latest time seen: limits never see the clock go backwards (a wall clock can step back,
    /// and GCRA would then refuse until it caught up).
    latest_ms: u64,
}

/// splitmix64: spreads a counter into well-mixed bits for request ids.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// The path of a request URL, without query or fragment.
fn path_of(url: &str) -> &str {
    let after_scheme = url.find("://").map_or(url, |i| &url[i + 3..]);
    let path = after_scheme.find('/').map_or("/", |i| &after_scheme[i..]);
    let end = path.find(['?', '#']).unwrap_or(path.len());
    &path[..end]
}

/// `scheme://host[:port]` of a request URL.
fn origin_of(url: &str) -> &str {
    let Some(scheme_end) = url.find("://") else {
        return "";
    };
    let rest = &url[scheme_end + 3..];
    &url[..scheme_end + 3 + rest.find('/').unwrap_or(rest.len())]
}

enum Route<'a> {
    Submissions(&'a str),
    CampaignForm(&'a str),
    Unknown,
}

fn route(path: &str) -> Route<'_> {
    let Some(rest) = path.strip_prefix("/api/campaigns/") else {
        return Route::Unknown;
    };
    match rest.split_once('/') {
        Some((id, "submissions")) if !id.is_empty() => Route::Submissions(id),
        None if !rest.is_empty() => Route::CampaignForm(rest),
        _ => Route::Unknown,
    }
}

pub fn with_cors(reply: Reply, origin: &str) -> Reply {
    reply
        .with_header("access-control-allow-origin", origin)
        .with_header(
            "access-control-expose-headers",
            "retry-after, ratelimit, ratelimit-policy, idempotency-key, idempotent-replayed",
        )
        .with_header("vary", "origin")
}

impl Edge {
    pub fn new(config: Result<Config, PolicyError>, seed: u64) -> Edge {
        Edge {
            config,
            limiter: Limiter::seeded(MAX_LIMITER_KEYS, mix(seed ^ 0x5EED_0F11_A17E_2500)),
            seed,
            counter: 0,
            latest_ms: 0,
        }
    }

    pub fn config(&self) -> Result<&Config, &PolicyError> {
        self.config.as_ref()
    }

    fn next_request_id(&mut self, now_ms: u64) -> String {
        self.counter = self.counter.wrapping_add(1);
        let mut id = String::with_capacity(27);
        push_hex_u64(&mut id, now_ms, 11);
        push_hex_u64(&mut id, mix(self.seed ^ self.counter), 16);
        id
    }

    pub fn decide(&mut self, facts: &Facts) -> Step {
        self.latest_ms = self.latest_ms.max(facts.now_ms);
        let facts = &Facts {
            now_ms: self.latest_ms,
            ..*facts
        };
        let request_id = self.next_request_id(facts.now_ms);
        let mut log = LogRecord {
            request_id: request_id.clone(),
            campaign: None,
            region: None,
            phase: "request_check",
            outcome: String::new(),
            status: 0,
            attempts: 0,
            received_ms: facts.now_ms,
        };
        let result = self.run(facts, request_id, &mut log);
        match result {
            Ok(plan) => Step::Forward {
                plan: Box::new(plan),
            },
            Err(reply) => {
                log.status = reply.status;
                if log.outcome.is_empty() {
                    log.outcome = reply.code().unwrap_or("ok").to_owned();
                }
                Step::Reply { reply, log }
            }
        }
    }

    fn run(
        &mut self,
        facts: &Facts,
        request_id: String,
        log: &mut LogRecord,
    ) -> Result<ForwardPlan, Reply> {
        let config = match &self.config {
            Ok(config) => config,
            Err(_) => {
                log.outcome = "config_invalid".into();
                return Err(problem(
                    500,
                    "config_invalid",
                    "Service misconfigured",
                    "This service cannot accept entries right now.",
                    None,
                ));
            }
        };
        let path = path_of(facts.url);
        let (campaign_id, wants_form) = match route(path) {
            Route::Submissions(id) => (id, false),
            Route::CampaignForm(id) => (id, true),
            Route::Unknown => return Err(not_found("no such resource")),
        };
        // An unknown campaign is 404 whatever the method.
        let Some((campaign_index, campaign)) = config
            .policy
            .campaigns
            .iter()
            .enumerate()
            .find(|(_, c)| c.id == campaign_id)
        else {
            return Err(not_found("no such campaign"));
        };
        let allowed = if wants_form {
            "GET, HEAD"
        } else {
            "POST, OPTIONS"
        };
        let method_ok = if wants_form {
            matches!(facts.method, "GET" | "HEAD")
        } else {
            matches!(facts.method, "POST" | "OPTIONS")
        };
        if !method_ok {
            return Err(problem(
                405,
                "method_not_allowed",
                "Method not allowed",
                &format!("use {allowed}"),
                None,
            )
            .with_header("allow", allowed));
        }
        log.campaign = Some(campaign.id.clone());
        if wants_form {
            let mut description = form_description(campaign);
            if campaign.min_fill_ms.is_some() {
                description["form_token"] =
                    Value::from(form_token(config, &campaign.id, facts.now_ms));
            }
            // Not shared by caches: the token carries the time the form was handed out.
            return Err(Reply::json(200, &description));
        }
        let cors_origin = match facts.origin {
            None => None,
            Some(origin) if origin == origin_of(facts.url) => None,
            Some(origin) if campaign.allowed_origins.iter().any(|a| a == origin) => {
                Some(origin.to_owned())
            }
            Some(_) => {
                return Err(problem(
                    403,
                    "origin_not_allowed",
                    "Cross-origin submission refused",
                    "this page is not allowed to submit to this campaign",
                    None,
                ))
            }
        };
        let cors = |reply: Reply| match &cors_origin {
            Some(origin) => with_cors(reply, origin),
            None => reply,
        };
        if facts.method == "OPTIONS" {
            return Err(cors(Reply {
                status: 204,
                headers: vec![
                    ("access-control-allow-methods", "POST".into()),
                    (
                        "access-control-allow-headers",
                        "content-type, idempotency-key".into(),
                    ),
                    ("access-control-max-age", "600".into()),
                ],
                body: String::new(),
                code: None,
            }));
        }

        // request_check: what the body is and whether it fits.
        let media = media_type(facts.content_type);
        let encoding = match media.as_ref().map(|(essence, ok)| (essence.as_str(), *ok)) {
            Some(("application/json", true)) => Encoding::Json,
            Some(("application/x-www-form-urlencoded", true)) => Encoding::Form,
            _ => {
                return Err(cors(
                    problem(
                        415,
                        "unsupported_media_type",
                        "Unsupported content type",
                        "send application/json or application/x-www-form-urlencoded (UTF-8)",
                        None,
                    )
                    .with_header(
                        "accept-post",
                        "application/json, application/x-www-form-urlencoded",
                    ),
                ))
            }
        };
        let bytes = match facts.body {
            Body::Bytes(bytes) if bytes.len() <= config.policy.max_body_bytes as usize => bytes,
            Body::Bytes(_) | Body::TooLarge => {
                return Err(cors(problem(
                    413,
                    "body_too_large",
                    "Submission too large",
                    &format!(
                        "a submission is at most {} bytes",
                        config.policy.max_body_bytes
                    ),
                    None,
                )))
            }
            Body::Unread => b"",
            Body::Incomplete => {
                return Err(cors(problem(
                    400,
                    "body_incomplete",
                    "Incomplete submission",
                    "the body ended early; please send it again",
                    None,
                )))
            }
        };

        // validate
        log.phase = "validate";
        let mut pairs = parse_body(encoding, bytes).map_err(|e| {
            cors(problem(
                400,
                e.code(),
                "Unreadable submission",
                &e.detail(),
                None,
            ))
        })?;
        let token = pairs
            .iter()
            .position(|(key, _)| key == FORM_TOKEN_KEY)
            .map(|i| pairs.remove(i).1);
        let too_fast = match (campaign.min_fill_ms, token) {
            (Some(min_fill_ms), Some(RawValue::Text(token))) => {
                !form_token_ok(config, &campaign.id, &token, min_fill_ms, facts.now_ms)
            }
            (Some(_), Some(_)) => true,
            // API clients without the page send none; the honeypot and limits still apply.
            _ => false,
        };
        let submission = validate(campaign, pairs).map_err(|errors| {
            let detail = format!("{} field(s) need attention", errors.len());
            let errors: Vec<Value> = errors
                .into_iter()
                .map(|e| json!({"field": e.field, "code": e.code, "detail": e.detail}))
                .collect();
            cors(problem(
                422,
                "validation_failed",
                "The submission has errors",
                &detail,
                Some(json!({ "errors": errors })),
            ))
        })?;

        // classify
        log.phase = "classify";
        let platform = PlatformCountry::read(facts.country);
        let residency =
            classify(&config.policy, platform, submission.declared_country).map_err(|refusal| {
                cors(problem(
                    403,
                    refusal.code(),
                    "Entries cannot be accepted from here",
                    "this campaign cannot determine where your entry may be stored",
                    None,
                ))
            })?;
        let region = config.policy.region(residency.region);
        log.region = Some(region.id.clone());

        // rate_limit: ask every layer, charge only if all admit.
        log.phase = "rate_limit";
        let client = ClientKey::from_ip(facts.client_ip);
        let mut layers: Vec<(LimitKey, &Quota, &'static str)> = vec![
            (
                LimitKey::Client(campaign_index, client),
                &campaign.per_client,
                "client",
            ),
            (
                LimitKey::Campaign(campaign_index),
                &campaign.campaign,
                "campaign",
            ),
        ];
        if let Some(budget) = &region.budget {
            layers.push((LimitKey::Region(residency.region.get()), budget, "region"));
        }
        let now = facts.now_ms;
        let decisions: Vec<_> = layers
            .iter()
            .map(|(key, quota, _)| self.limiter.peek(key, quota, now))
            .collect();
        let client_quota = &campaign.per_client;
        let refused = decisions
            .iter()
            .zip(&layers)
            .filter_map(|((decision, _), (_, _, name))| match decision {
                Decision::Refuse { retry_after_ms } => Some((*retry_after_ms, *name)),
                Decision::Admit { .. } => None,
            })
            .max();
        if let Some((retry_after_ms, layer)) = refused {
            log.outcome = format!("rate_limited_{layer}");
            let seconds = retry_after_seconds(retry_after_ms);
            return Err(cors(
                problem(
                    429,
                    "rate_limited",
                    "Too many submissions",
                    &format!("please wait {seconds} s and try again"),
                    Some(json!({ "retry_after_s": seconds })),
                )
                .with_header("retry-after", seconds.to_string())
                .with_header("ratelimit-policy", policy_header(client_quota))
                .with_header("ratelimit", format!("\"{layer}\";r=0;t={seconds}")),
            ));
        }
        let mut client_remaining = (0, 0);
        for ((decision, tat), (key, _, _)) in decisions.into_iter().zip(&layers) {
            if let (
                Decision::Admit {
                    remaining,
                    reset_ms,
                },
                Some(tat),
            ) = (decision, tat)
            {
                if matches!(key, LimitKey::Client(..)) {
                    client_remaining = (remaining, retry_after_seconds(reset_ms));
                }
                self.limiter
                    .commit(*key, tat, now.saturating_add(reset_ms), now);
            }
        }
        let rate_headers: Vec<(&'static str, String)> = vec![
            ("ratelimit-policy", policy_header(client_quota)),
            ("ratelimit", {
                let mut value = String::with_capacity(32);
                value.push_str("\"client\";r=");
                push_u64(&mut value, u64::from(client_remaining.0));
                value.push_str(";t=");
                push_u64(&mut value, client_remaining.1);
                value
            }),
        ];

        // A filled honeypot, or a form sent faster than a person fills it, looks accepted and
        // goes nowhere.
        if submission.honeypot_filled || too_fast {
            log.outcome = if too_fast { "too_fast" } else { "honeypot" }.into();
            let mut reply = Reply::json(
                202,
                &json!({
                    "status": "accepted",
                    "receipt": { "id": format!("{}-{}", region.id, request_id.get(11..).unwrap_or(&request_id)), "region": region.id },
                }),
            );
            reply.headers.extend(rate_headers);
            return Err(cors(reply));
        }

        // plan
        log.phase = "plan";
        let plan = forward::plan(PlanInput {
            config,
            residency: &residency,
            campaign: &campaign.id,
            submission: &submission,
            client_key: facts.idempotency_key,
            request_id,
            now_ms: now,
            rate_headers,
            cors_origin,
        });
        plan.ok_or_else(|| {
            log.outcome = "no_origin".into();
            problem(
                503,
                "region_unavailable",
                "Your entry could not be stored right now",
                "please try again shortly",
                None,
            )
            .with_header("retry-after", "5")
        })
    }

    /// After an attempt: the next origin of the same region, or the final reply and its log.
    pub fn conclude(&self, ticket: &Ticket, outcome: Outcome, now_ms: u64) -> Result<Next, Reply> {
        let config = self.config.as_ref().map_err(|_| {
            problem(
                500,
                "config_invalid",
                "Service misconfigured",
                "This service cannot accept entries right now.",
                None,
            )
        })?;
        Ok(forward::after_attempt(config, ticket, outcome, now_ms))
    }

    /// The log record that ends a forwarded request.
    pub fn forward_log(&self, ticket: &Ticket, status: u16, outcome: &str) -> LogRecord {
        let region = self
            .config
            .as_ref()
            .ok()
            .and_then(|c| c.policy.regions.get(ticket.region))
            .map(|r| r.id.clone());
        LogRecord {
            request_id: ticket.request_id.clone(),
            campaign: Some(ticket.campaign.clone()),
            region,
            phase: "forward",
            outcome: outcome.to_owned(),
            status,
            attempts: u32::try_from(ticket.attempt + 1).unwrap_or(u32::MAX),
            received_ms: ticket.received_ms,
        }
    }
}

fn not_found(detail: &str) -> Reply {
    problem(404, "not_found", "Not found", detail, None)
}

/// `RateLimit-Policy` as in the IETF httpapi draft: quota `q` per window `w` seconds.
fn policy_header(quota: &Quota) -> String {
    let mut value = String::with_capacity(32);
    value.push_str("\"client\";q=");
    push_u64(&mut value, u64::from(quota.burst()));
    value.push_str(";w=");
    push_u64(&mut value, retry_after_seconds(quota.window_ms()));
    value
}

/// The media type in lower case and whether its charset, if any, is UTF-8.
fn media_type(content_type: Option<&str>) -> Option<(String, bool)> {
    let mut parts = content_type?.split(';');
    let essence = parts.next()?.trim().to_ascii_lowercase();
    let charset_ok = parts.all(|param| match param.split_once('=') {
        Some((name, value)) if name.trim().eq_ignore_ascii_case("charset") => {
            value.trim().trim_matches('"').eq_ignore_ascii_case("utf-8")
        }
        _ => true,
    });
    Some((essence, charset_ok))
}

/// What the campaign page needs to draw the form, straight from the policy, so the form and the
/// validator cannot disagree.
pub fn form_description(campaign: &Campaign) -> Value {
    let fields: Vec<Value> = campaign
        .fields
        .iter()
        .map(|f| {
            let mut field = json!({
                "name": f.name,
                "label": f.label,
                "type": f.kind.name(),
                "required": f.required,
                "max_length": f.max_length,
            });
            if f.must_be_true {
                field["must_be_true"] = Value::Bool(true);
            }
            match &f.kind {
                FieldKind::Enum(values) => field["values"] = json!(values),
                FieldKind::Integer { min, max } => {
                    field["min"] = json!(min);
                    field["max"] = json!(max);
                }
                FieldKind::Country => {
                    let codes: Vec<&str> = crate::country::Country::all()
                        .map(|c| c.as_str_static())
                        .collect();
                    field["values"] = json!(codes);
                }
                _ => {}
            }
            field
        })
        .collect();
    json!({
        "id": campaign.id,
        "title": campaign.title,
        "fields": fields,
        "honeypot": campaign.honeypot,
        "submit": format!("/api/campaigns/{}/submissions", campaign.id),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_and_origins() {
        assert_eq!(path_of("https://a.example/api/x?y=1#z"), "/api/x");
        assert_eq!(path_of("https://a.example"), "/");
        assert_eq!(
            origin_of("http://127.0.0.1:8787/api/x"),
            "http://127.0.0.1:8787"
        );
        assert!(matches!(
            route("/api/campaigns/abc/submissions"),
            Route::Submissions("abc")
        ));
        assert!(matches!(
            route("/api/campaigns/abc"),
            Route::CampaignForm("abc")
        ));
        assert!(matches!(
            route("/api/campaigns//submissions"),
            Route::Unknown
        ));
        assert!(matches!(route("/api/campaigns/abc/other"), Route::Unknown));
    }

    #[test]
    fn media_types() {
        assert_eq!(
            media_type(Some("Application/JSON; charset=UTF-8")),
            Some(("application/json".into(), true))
        );
        assert_eq!(
            media_type(Some("application/json;charset=latin1")),
            Some(("application/json".into(), false))
        );
        assert_eq!(media_type(None), None);
    }
}
