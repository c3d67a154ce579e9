//! Admission: whether a request may go on, asked of every limit layer.
//!
//! Layers, in order: per client (IPv4 address or IPv6 /64, per campaign), per campaign and per
//! region, all three in this isolate's memory (free, but each holds per isolate only); then per
//! client across the location, through the platform's rate-limiting binding, which the shell
//! consults only for a request the isolate's layers admitted. A request is charged to every
//! layer or to none: the isolate's layers are charged when they admit, and given back (GCRA
//! refund) when the location refuses, or cannot answer under `fail_closed`, so a refused request
//! costs nothing anywhere and a visitor correcting a form is not penalised (admission comes after
//! validation and classification for that reason). A refusal names the layer and carries its
//! wait.
//!
//! The per-client limit in force is the campaign's own or, inside a scheduled surge window, the
//! window's (`Campaign::in_force`). Client state is keyed by campaign, window and client: a GCRA
//! state is in units of the quota that made it, so a window's quota never reads the state the
//! campaign's quota wrote.
//!
//! Client state lives in a bounded table that sheds recovered keys first, so a flood of new
//! addresses cannot grow memory without bound; campaign and region budgets each have a cell of
//! their own that no flood of clients can evict.

use crate::limit::{Cell, Check, ClientKey, Decision, Limiter};
pub use crate::outcome::Layer;
use crate::outcome::Outcome;
use crate::reply::{problem, retry_after_seconds, Answer, Flow, Phase};
use harbour_contract::signature::SigningKey;
use harbour_policy::quota::{LocationLimit, Quota};
use harbour_policy::text::{push_hex, push_quoted, push_u64};
use harbour_policy::{Campaign, CampaignIndex, FailMode, Policy, RegionIndex, SurgeWindow};

/// Client keys the table holds per isolate before it sheds recovered and near-recovered ones.
/// An entry is [`CLIENT_ENTRY_BYTES`] in the table; with the table's spare capacity (it grows by
/// doubling and keeps an eighth free) client state stays under about 17 MB per isolate.
pub const MAX_CLIENT_KEYS: usize = 200_000;
/// Bytes of one client entry: the key (campaign, window, client) and its GCRA state and expiry.
pub const CLIENT_ENTRY_BYTES: usize = std::mem::size_of::<(ClientSlot, (crate::limit::Tat, u64))>();

/// How long the shell waits for the location's binding before taking it as unavailable.
pub const CONSULT_TIMEOUT_MS: u64 = 500;
/// While the binding is unavailable, one log line per isolate per this long at most.
pub const UNAVAILABLE_LOG_MS: u64 = 60_000;
/// What a visitor is asked to wait when `fail_closed` refuses for want of an answer.
pub const LOCATION_UNAVAILABLE_RETRY_MS: u64 = 5_000;

/// Who asks to be admitted, as the limits see it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Applicant {
    pub campaign: CampaignIndex,
    pub region: RegionIndex,
    pub client: ClientKey,
}

/// Admitted: what the client's own layer has left, for the `RateLimit` headers, and the
/// location's limit once the location has agreed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Grant {
    pub quota: Quota,
    pub remaining: u32,
    pub reset_ms: u64,
    pub location: Option<LocationLimit>,
}

/// Refused by `layer`, whose quota is `quota`, until `retry_after_ms` from now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Refusal {
    pub layer: Layer,
    pub quota: Quota,
    pub retry_after_ms: u64,
}

/// The location's rate-limiting binding to ask: its name in the environment and the key, the
/// same text in every isolate of the location (campaign, window and a keyed digest of the
/// client: the platform's counter never sees the visitor's address).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Consult {
    pub binding: String,
    pub key: String,
}

/// What the shell learnt from the binding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LocationResult {
    Admitted,
    Refused,
    /// The call threw.
    Failed,
    /// No answer within [`CONSULT_TIMEOUT_MS`].
    TimedOut,
}

impl LocationResult {
    fn as_str(self) -> &'static str {
        match self {
            LocationResult::Admitted => "admitted",
            LocationResult::Refused => "refused",
            LocationResult::Failed => "failed",
            LocationResult::TimedOut => "timed_out",
        }
    }
}

/// Client state key: campaign, limits period (0 the campaign's own, 1 + i surge window i), client.
type ClientSlot = (CampaignIndex, u16, ClientKey);

/// What the isolate's layers were charged for one request, to give back if the request ends
/// refused for another reason. Opaque: only admission reads one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Charge {
    slot: ClientSlot,
    client: Quota,
    campaign: Option<Quota>,
    region: Option<(RegionIndex, Quota)>,
}

/// Admitted and charged by the isolate's layers; the location has yet to agree.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Provisional {
    pub grant: Grant,
    pub consult: Consult,
    pub on_unavailable: FailMode,
    charge: Charge,
}

impl Provisional {
    /// What the isolate's layers were charged.
    pub fn charge(&self) -> Charge {
        self.charge
    }
}

/// The limit state of one isolate.
pub struct Admission {
    /// Keys the client's digest in a binding key (the form key: every isolate of every location
    /// holds it, so one client has one key everywhere).
    location_key: Option<SigningKey>,
    clients: Limiter<ClientSlot>,
    campaigns: Vec<Cell>,
    regions: Vec<Cell>,
    unanswered: Unanswered,
}

impl Admission {
    /// State for `policy`'s campaigns and regions (none without one), with the key of the
    /// client digests it sends to the location's binding; `seed` keys the client table's hash.
    pub fn new(setup: Option<(&Policy, &SigningKey)>, seed: u64) -> Admission {
        let policy = setup.map(|(policy, _)| policy);
        Admission {
            location_key: setup.map(|(_, key)| key.clone()),
            clients: Limiter::seeded(MAX_CLIENT_KEYS, seed),
            campaigns: vec![Cell::default(); policy.map_or(0, |p| p.campaigns.len())],
            regions: vec![Cell::default(); policy.map_or(0, |p| p.regions.len())],
            unanswered: Unanswered::default(),
        }
    }

    /// Asks the isolate's layers; charges all of them only when all admit.
    pub fn admit(
        &mut self,
        policy: &Policy,
        applicant: &Applicant,
        now_ms: u64,
    ) -> Result<Provisional, Refusal> {
        let campaign = &policy.campaigns[applicant.campaign.get()];
        let in_force = campaign.in_force(now_ms);
        let period = in_force.window.map_or(0, |(i, _)| i + 1);
        let slot = (
            applicant.campaign,
            u16::try_from(period).unwrap_or(u16::MAX),
            applicant.client,
        );
        let per_client = in_force.per_client;
        let region = policy.region(applicant.region);
        let client = self.clients.peek(&slot, &per_client, now_ms);
        let campaign_check = self
            .campaigns
            .get(applicant.campaign.get())
            .map(|cell| cell.peek(&campaign.campaign, now_ms));
        let region_check = match (&region.budget, self.regions.get(applicant.region.get())) {
            (Some(budget), Some(cell)) => Some((budget, cell.peek(budget, now_ms))),
            _ => None,
        };
        let checks = [
            Some((Layer::Client, &per_client, client)),
            campaign_check.map(|c| (Layer::Campaign, &campaign.campaign, c)),
            region_check.map(|(quota, c)| (Layer::Region, quota, c)),
        ];
        // The longest wait wins: admitting after a shorter one would only be refused again.
        let refusal = checks
            .iter()
            .flatten()
            .filter_map(|(layer, quota, check)| match check.decision {
                Decision::Refuse { retry_after_ms } => Some(Refusal {
                    layer: *layer,
                    quota: **quota,
                    retry_after_ms,
                }),
                Decision::Admit { .. } => None,
            })
            .max_by_key(|r| (r.retry_after_ms, r.layer));
        if let Some(refusal) = refusal {
            return Err(refusal);
        }
        self.clients.commit(slot, &client, now_ms);
        let commit = |cells: &mut Vec<Cell>, index: usize, check: Option<&Check>| {
            if let (Some(cell), Some(check)) = (cells.get_mut(index), check) {
                cell.commit(check);
            }
        };
        commit(
            &mut self.campaigns,
            applicant.campaign.get(),
            campaign_check.as_ref(),
        );
        commit(
            &mut self.regions,
            applicant.region.get(),
            region_check.as_ref().map(|(_, c)| c),
        );
        let (remaining, reset_ms) = match client.decision {
            Decision::Admit {
                remaining,
                reset_ms,
            } => (remaining, reset_ms),
            Decision::Refuse { .. } => (0, 0),
        };
        Ok(Provisional {
            grant: Grant {
                quota: per_client,
                remaining,
                reset_ms,
                location: None,
            },
            consult: consult(
                campaign,
                in_force.window,
                &per_client,
                &applicant.client,
                self.location_key.as_ref(),
            ),
            on_unavailable: in_force.on_location_unavailable,
            charge: Charge {
                slot,
                client: per_client,
                campaign: campaign_check.map(|_| campaign.campaign),
                region: region_check.map(|(quota, _)| (applicant.region, *quota)),
            },
        })
    }

    /// Gives back what a provisional admission charged, when the request is refused for
    /// another reason before the location's answer counts.
    pub fn withdraw(&mut self, provisional: &Provisional, now_ms: u64) {
        self.refund(&provisional.charge, now_ms);
    }

    /// Gives back a charge (see [`crate::limit::refund`]): the request it was made for was
    /// refused for another reason after admission (every origin of its region was full).
    pub fn refund(&mut self, charge: &Charge, now_ms: u64) {
        self.clients.refund(&charge.slot, &charge.client, now_ms);
        if let (Some(quota), Some(cell)) =
            (charge.campaign, self.campaigns.get_mut(charge.slot.0.get()))
        {
            cell.refund(&quota, now_ms);
        }
        if let Some((region, quota)) = charge.region {
            if let Some(cell) = self.regions.get_mut(region.get()) {
                cell.refund(&quota, now_ms);
            }
        }
    }

    /// Client keys held, for tests of the memory bound.
    pub fn client_keys(&self) -> usize {
        self.clients.len()
    }
}

/// What a client digest's MAC starts with, so it can stand for no other of the form key's MACs.
const CLIENT_DIGEST_PREFIX: &[u8] = b"harbour-client-v1\n";

/// The binding and key for a client under `per_client` (the policy checks guarantee the
/// binding can count it; should it not, the name says so and configuration finds no binding).
fn consult(
    campaign: &Campaign,
    window: Option<(usize, &SurgeWindow)>,
    per_client: &Quota,
    client: &ClientKey,
    location_key: Option<&SigningKey>,
) -> Consult {
    let binding = per_client.location().map_or_else(
        || "HARBOUR_RL_INEXPRESSIBLE".to_owned(),
        |l| l.binding_name(),
    );
    let mut key = String::with_capacity(campaign.id.len() + 48);
    key.push_str(&campaign.id);
    if let Some((_, window)) = window {
        key.push('@');
        key.push_str(&window.id);
    }
    key.push(' ');
    let mut address = String::with_capacity(24);
    client.push_text(&mut address);
    // 128 bits of HMAC: the same client is the same key in every location, and the key cannot
    // be turned back into an address without the form key.
    match location_key {
        Some(location_key) => {
            let digest = location_key.mac(&[CLIENT_DIGEST_PREFIX, address.as_bytes()]);
            push_hex(&mut key, &digest[..16]);
        }
        // Only an admission without a configuration, which admits nothing.
        None => key.push_str("unkeyed"),
    }
    Consult { binding, key }
}

/// Every binding a policy needs, once each: one per distinct per-client limit (campaigns' own
/// and their surge windows'), in order. Their names are what `wrangler.toml` must declare.
pub fn location_limits(policy: &Policy) -> Vec<LocationLimit> {
    let mut limits: Vec<LocationLimit> = Vec::new();
    let quotas = policy.campaigns.iter().flat_map(|c| {
        std::iter::once(&c.per_client).chain(c.surge_windows.iter().map(|w| &w.per_client))
    });
    // A handful: an insertion keeps a general sort out of the wasm.
    for limit in quotas.filter_map(Quota::location) {
        let at = limits.partition_point(|l| *l < limit);
        if limits.get(at) != Some(&limit) {
            limits.insert(at, limit);
        }
    }
    limits
}

/// The admit phase (the isolate's layers): 429 with `Retry-After` and `RateLimit` /
/// `RateLimit-Policy` headers for the layer that refused, or a provisional admission, charged,
/// whose binding the shell consults next.
pub fn admit(
    admission: &mut Admission,
    policy: &Policy,
    applicant: &Applicant,
    now_ms: u64,
) -> Flow<Provisional> {
    match admission.admit(policy, applicant, now_ms) {
        Ok(provisional) => Flow::Continue(provisional),
        Err(refusal) => Flow::Break(refused(&refusal)),
    }
}

/// The location's answer decides a provisional admission: admitted; refused (429 naming the
/// location layer, the charges given back); or, when the binding cannot answer, as the limits in
/// force say: `fail_open` admits on the isolate's layers alone, `fail_closed` answers 503 with
/// `Retry-After` and `key`, the charges given back. An unavailable binding is logged (into
/// `notes`) at most once a minute per isolate.
pub fn settle(
    admission: &mut Admission,
    provisional: Provisional,
    answer: LocationResult,
    key: &str,
    now_ms: u64,
    notes: &mut Vec<String>,
) -> Flow<Grant> {
    let Provisional {
        mut grant,
        consult,
        on_unavailable,
        charge,
    } = provisional;
    match answer {
        LocationResult::Admitted => {
            grant.location = charge.client.location();
            Flow::Continue(grant)
        }
        LocationResult::Refused => {
            admission.refund(&charge, now_ms);
            // The binding does not say when its count frees up: at the latest after its period.
            Flow::Break(refused(&Refusal {
                layer: Layer::Location,
                quota: charge.client,
                retry_after_ms: charge.client.window_ms(),
            }))
        }
        LocationResult::Failed | LocationResult::TimedOut => {
            notes.extend(admission.unanswered.note(
                &consult.binding,
                answer,
                on_unavailable,
                now_ms,
            ));
            match on_unavailable {
                FailMode::Open => Flow::Continue(grant),
                FailMode::Closed => {
                    admission.refund(&charge, now_ms);
                    Flow::Break(Answer::new(Phase::Admit, unavailable(key)))
                }
            }
        }
    }
}

/// 429 for a refusal, with the refusing layer's headers.
fn refused(refusal: &Refusal) -> Answer {
    let seconds = retry_after_seconds(refusal.retry_after_ms);
    let reply = problem(
        429,
        Outcome::RateLimited(refusal.layer),
        "Too many submissions",
        &format!("please wait {seconds} s and try again"),
        &[("retry_after_s", harbour_policy::text::decimal(seconds))],
    )
    .with_header("retry-after", harbour_policy::text::decimal(seconds))
    .with_header(
        "ratelimit-policy",
        policy_header(refusal.layer, &refusal.quota),
    )
    .with_header("ratelimit", limit_header(refusal.layer, 0, seconds));
    Answer::new(Phase::Admit, reply)
}

fn unavailable(key: &str) -> crate::reply::Reply {
    let seconds = retry_after_seconds(LOCATION_UNAVAILABLE_RETRY_MS);
    problem(
        503,
        Outcome::LocationLimitUnavailable,
        "Your entry could not be taken right now",
        "Please try again shortly with the same Idempotency-Key; it will not be stored twice.",
        &[
            ("idempotency_key", harbour_policy::text::quoted(key)),
            ("retry_after_s", harbour_policy::text::decimal(seconds)),
        ],
    )
    .with_header("retry-after", harbour_policy::text::decimal(seconds))
    .with_header("idempotency-key", key.to_owned())
}

/// Unanswered consults since the last log line, and when that line was written.
#[derive(Debug, Default)]
struct Unanswered {
    last_line_ms: Option<u64>,
    unlogged: u64,
}

impl Unanswered {
    fn note(
        &mut self,
        binding: &str,
        answer: LocationResult,
        mode: FailMode,
        now_ms: u64,
    ) -> Option<String> {
        self.unlogged += 1;
        if self
            .last_line_ms
            .is_some_and(|last| now_ms.saturating_sub(last) < UNAVAILABLE_LOG_MS)
        {
            return None;
        }
        let mut line = String::with_capacity(160);
        line.push_str("{\"msg\":\"harbour.location_limit_unavailable\",\"binding\":");
        push_quoted(&mut line, binding);
        line.push_str(",\"answer\":");
        push_quoted(&mut line, answer.as_str());
        line.push_str(",\"mode\":");
        push_quoted(&mut line, mode.as_str());
        // Counted since the previous line, this one included.
        line.push_str(",\"unanswered\":");
        push_u64(&mut line, self.unlogged);
        line.push('}');
        self.unlogged = 0;
        self.last_line_ms = Some(now_ms);
        Some(line)
    }
}

impl Grant {
    /// `RateLimit-Policy` (the client's own layer, and the location's once it agreed) and
    /// `RateLimit` (the client's own layer: the binding does not say what is left).
    pub fn headers(&self) -> Vec<(&'static str, String)> {
        let mut policies = policy_header(Layer::Client, &self.quota);
        if let Some(location) = self.location {
            policies.push_str(", ");
            push_item(
                &mut policies,
                Layer::Location,
                "q",
                u64::from(location.limit),
            );
            policies.push_str(";w=");
            push_u64(&mut policies, location.period_s);
        }
        vec![
            ("ratelimit-policy", policies),
            (
                "ratelimit",
                limit_header(
                    Layer::Client,
                    self.remaining,
                    retry_after_seconds(self.reset_ms),
                ),
            ),
        ]
    }
}

/// `"layer";name=value`, a list item of the IETF httpapi RateLimit headers.
fn push_item(out: &mut String, layer: Layer, name: &str, value: u64) {
    out.push('"');
    out.push_str(layer.as_str());
    out.push_str("\";");
    out.push_str(name);
    out.push('=');
    push_u64(out, value);
}

/// `RateLimit-Policy` as in the IETF httpapi draft: quota `q` per window `w` seconds.
fn policy_header(layer: Layer, quota: &Quota) -> String {
    let mut value = String::with_capacity(32);
    push_item(&mut value, layer, "q", u64::from(quota.burst()));
    value.push_str(";w=");
    push_u64(&mut value, retry_after_seconds(quota.window_ms()));
    value
}

/// `RateLimit`: `r` requests remaining, `t` seconds until the quota is whole again.
fn limit_header(layer: Layer, remaining: u32, seconds: u64) -> String {
    let mut value = String::with_capacity(32);
    push_item(&mut value, layer, "r", u64::from(remaining));
    value.push_str(";t=");
    push_u64(&mut value, seconds);
    value
}

#[cfg(test)]
mod tests {
    use super::*;
    use harbour_policy::SHIPPED_POLICY;

    /// The shipped policy with small limits: 3 per client, 5 per campaign, 4 for the EU region.
    fn policy() -> Policy {
        let mut raw: serde_json::Value = serde_json::from_str(SHIPPED_POLICY).unwrap();
        raw["campaigns"][0]["limits"]["per_client"] =
            serde_json::json!({"burst": 3, "window_ms": 60_000});
        raw["campaigns"][0]["limits"]["campaign"] =
            serde_json::json!({"burst": 5, "window_ms": 1_000});
        raw["regions"][2]["budget"] = serde_json::json!({"burst": 4, "window_ms": 10_000});
        Policy::parse(&raw.to_string()).unwrap()
    }

    const FORM_SECRET: &[u8] = b"form-0123456789abcdef0123456789abcdef";

    fn form_key() -> SigningKey {
        SigningKey::new(FORM_SECRET).unwrap()
    }

    /// The binding key's client part, computed apart from harbour's code: HMAC-SHA-256 under the
    /// form key of `harbour-client-v1\n{address}`, its first 16 bytes in hex.
    fn client_digest(address: &str) -> String {
        use hmac::{Hmac, Mac};
        let mut mac = Hmac::<sha2::Sha256>::new_from_slice(FORM_SECRET).unwrap();
        mac.update(format!("harbour-client-v1\n{address}").as_bytes());
        let bytes = mac.finalize().into_bytes();
        bytes[..16].iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn the_binding_key_holds_a_keyed_digest_of_the_client_not_its_address() {
        let policy = policy();
        let key_of = |admission: &mut Admission, client: &ClientKey| {
            let applicant = Applicant {
                client: *client,
                ..applicant(&policy, "eu", 0)
            };
            admission.admit(&policy, &applicant, 0).unwrap().consult.key
        };
        let v6 = ClientKey::from_ip(Some("2001:db8:1:2::7"));
        // Two isolates with the same form key: one key per client.
        let (mut here, mut there) = (
            Admission::new(Some((&policy, &form_key())), 1),
            Admission::new(Some((&policy, &form_key())), 2),
        );
        let key = key_of(&mut here, &v6);
        assert_eq!(
            key,
            format!("spring-launch {}", client_digest("2001:db8:1:2::/64"))
        );
        assert_eq!(key_of(&mut there, &v6), key);
        assert!(!key.contains("2001"), "{key}");
        assert_ne!(key_of(&mut here, &ClientKey::V4(7)), key);
        // Another form key: another digest.
        let other = SigningKey::new(b"another-form-key-0123456789abcdef0123").unwrap();
        let mut elsewhere = Admission::new(Some((&policy, &other)), 1);
        assert_ne!(key_of(&mut elsewhere, &v6), key);
    }

    fn applicant(policy: &Policy, region: &str, client: u32) -> Applicant {
        Applicant {
            campaign: policy.find_campaign("spring-launch").unwrap().0,
            region: policy.region_index(region).unwrap(),
            client: ClientKey::V4(client),
        }
    }

    #[test]
    fn each_layer_refuses_with_its_own_quota_and_wait() {
        let policy = policy();
        let mut admission = Admission::new(Some((&policy, &form_key())), 1);
        let one = applicant(&policy, "global", 1);
        for left in [2, 1, 0] {
            let admitted = admission.admit(&policy, &one, 0).unwrap();
            assert_eq!(admitted.grant.remaining, left);
        }
        let refusal = admission.admit(&policy, &one, 0).unwrap_err();
        assert_eq!(
            (refusal.layer, refusal.quota.burst(), refusal.retry_after_ms),
            (Layer::Client, 3, 20_000)
        );
        // Other clients: the campaign's 5 per second runs out after two more.
        for client in [2, 3] {
            admission
                .admit(&policy, &applicant(&policy, "global", client), 0)
                .unwrap();
        }
        let refusal = admission
            .admit(&policy, &applicant(&policy, "global", 4), 0)
            .unwrap_err();
        assert_eq!(
            (refusal.layer, refusal.quota.burst(), refusal.retry_after_ms),
            (Layer::Campaign, 5, 200)
        );
        // A second later the campaign has 5 again, but the EU budget holds only 4.
        for client in 10..14 {
            admission
                .admit(&policy, &applicant(&policy, "eu", client), 1_000)
                .unwrap();
        }
        let refusal = admission
            .admit(&policy, &applicant(&policy, "eu", 20), 1_000)
            .unwrap_err();
        assert_eq!(
            (refusal.layer, refusal.quota.burst(), refusal.retry_after_ms),
            (Layer::Region, 4, 2_500)
        );
    }

    #[test]
    fn a_refused_request_is_charged_nowhere() {
        let policy = policy();
        let mut admission = Admission::new(Some((&policy, &form_key())), 1);
        let one = applicant(&policy, "global", 1);
        for _ in 0..3 {
            admission.admit(&policy, &one, 0).unwrap();
        }
        // Client 1 is refused 10 times; the campaign budget (5) still has 2 left for others.
        for _ in 0..10 {
            admission.admit(&policy, &one, 0).unwrap_err();
        }
        for client in [2, 3] {
            admission
                .admit(&policy, &applicant(&policy, "global", client), 0)
                .unwrap();
        }
    }

    #[test]
    fn a_flood_of_new_clients_cannot_evict_the_budgets() {
        let mut raw: serde_json::Value = serde_json::from_str(SHIPPED_POLICY).unwrap();
        raw["campaigns"][0]["limits"]["campaign"] =
            serde_json::json!({"burst": 1_000_000, "window_ms": 3_600_000});
        raw["regions"][4]["budget"] = serde_json::json!({"burst": 300_000, "window_ms": 3_600_000});
        let policy = Policy::parse(&raw.to_string()).unwrap();
        let mut admission = Admission::new(Some((&policy, &form_key())), 7);
        let mut admitted = 0u32;
        for client in 0..(MAX_CLIENT_KEYS as u32 + 150_000) {
            let who = applicant(&policy, "global", client);
            if admission.admit(&policy, &who, 0).is_ok() {
                admitted += 1;
            }
        }
        assert_eq!(admitted, 300_000, "the region budget held across evictions");
        assert!(admission.client_keys() <= MAX_CLIENT_KEYS);
    }

    #[test]
    fn the_phase_answers_429_with_the_refusing_layers_headers() {
        let policy = policy();
        let mut admission = Admission::new(Some((&policy, &form_key())), 1);
        let campaign = policy.find_campaign("spring-launch").unwrap().0;
        for client in 0..5 {
            let who = Applicant {
                campaign,
                region: policy.rest_of_world,
                client: ClientKey::V4(client),
            };
            let Flow::Continue(admitted) = admit(&mut admission, &policy, &who, 0) else {
                panic!("refused early")
            };
            assert_eq!(
                admitted.grant.headers()[0],
                ("ratelimit-policy", "\"client\";q=3;w=60".to_owned())
            );
        }
        let who = Applicant {
            campaign,
            region: policy.rest_of_world,
            client: ClientKey::V4(99),
        };
        let Flow::Break(answer) = admit(&mut admission, &policy, &who, 0) else {
            panic!("the campaign budget did not hold")
        };
        assert_eq!(answer.outcome.name(), "rate_limited_campaign");
        let reply = answer.reply;
        assert_eq!(reply.status, 429);
        assert_eq!(reply.header("retry-after"), Some("1"));
        assert_eq!(
            reply.header("ratelimit-policy"),
            Some("\"campaign\";q=5;w=1")
        );
        assert_eq!(reply.header("ratelimit"), Some("\"campaign\";r=0;t=1"));
    }

    fn settled(
        admission: &mut Admission,
        policy: &Policy,
        who: &Applicant,
        answer: LocationResult,
        now_ms: u64,
        notes: &mut Vec<String>,
    ) -> Flow<Grant> {
        let Flow::Continue(provisional) = admit(admission, policy, who, now_ms) else {
            panic!("refused by the isolate")
        };
        settle(
            admission,
            provisional,
            answer,
            "key-0123456789abcdef",
            now_ms,
            notes,
        )
    }

    #[test]
    fn a_refusal_by_the_location_names_it_and_is_charged_nowhere() {
        let policy = policy();
        let mut admission = Admission::new(Some((&policy, &form_key())), 1);
        let one = applicant(&policy, "global", 1);
        let mut notes = Vec::new();
        for _ in 0..10 {
            let Flow::Break(answer) = settled(
                &mut admission,
                &policy,
                &one,
                LocationResult::Refused,
                0,
                &mut notes,
            ) else {
                panic!("the location refused")
            };
            assert_eq!(answer.outcome.name(), "rate_limited_location");
            assert_eq!(answer.reply.status, 429);
            assert_eq!(answer.reply.header("retry-after"), Some("60"));
            assert_eq!(
                answer.reply.header("ratelimit-policy"),
                Some("\"location\";q=3;w=60")
            );
            assert_eq!(
                answer.reply.header("ratelimit"),
                Some("\"location\";r=0;t=60")
            );
        }
        // Ten refusals later the client still has its 3, and the campaign its 5 per second.
        for _ in 0..3 {
            let Flow::Continue(grant) = settled(
                &mut admission,
                &policy,
                &one,
                LocationResult::Admitted,
                0,
                &mut notes,
            ) else {
                panic!("refused")
            };
            assert_eq!(
                grant.headers()[0].1,
                "\"client\";q=3;w=60, \"location\";q=3;w=60"
            );
        }
        for client in [2, 3] {
            admission
                .admit(&policy, &applicant(&policy, "global", client), 0)
                .unwrap();
        }
        assert_eq!(
            admission
                .admit(&policy, &applicant(&policy, "global", 4), 0)
                .unwrap_err()
                .layer,
            Layer::Campaign
        );
        assert!(notes.is_empty());
    }

    #[test]
    fn without_an_answer_the_mode_in_force_decides_and_one_line_a_minute_says_so() {
        let mut raw: serde_json::Value = serde_json::from_str(SHIPPED_POLICY).unwrap();
        raw["campaigns"][0]["limits"]["per_client"] =
            serde_json::json!({"burst": 2, "window_ms": 60_000});
        raw["campaigns"][0]["surge_windows"] = serde_json::json!([
            {"id": "spot", "start": "1970-01-01T00:10:00Z", "end": "1970-01-01T00:20:00Z",
             "per_client": {"burst": 2, "window_ms": 10_000}, "on_location_unavailable": "fail_closed"}
        ]);
        let policy = Policy::parse(&raw.to_string()).unwrap();
        let mut admission = Admission::new(Some((&policy, &form_key())), 1);
        let one = applicant(&policy, "eu", 1);
        let mut notes = Vec::new();
        // fail_open (the default): admitted on the isolate's layers alone, which still hold.
        for (at, answer) in [(0, LocationResult::Failed), (1, LocationResult::TimedOut)] {
            let flow = settled(&mut admission, &policy, &one, answer, at, &mut notes);
            assert!(matches!(flow, Flow::Continue(_)));
        }
        assert!(admission.admit(&policy, &one, 2).is_err(), "2 per minute");
        assert_eq!(notes.len(), 1, "one line for the first minute");
        let line: serde_json::Value = serde_json::from_str(&notes[0]).unwrap();
        assert_eq!(
            line,
            serde_json::json!({"msg": "harbour.location_limit_unavailable",
                "binding": "HARBOUR_RL_2_PER_60S", "answer": "failed", "mode": "fail_open", "unanswered": 1})
        );
        // In the window, fail_closed: 503 with the key, and the charge given back.
        let start = 600_000;
        for _ in 0..5 {
            let Flow::Break(answer) = settled(
                &mut admission,
                &policy,
                &one,
                LocationResult::TimedOut,
                start,
                &mut notes,
            ) else {
                panic!("fail_closed admitted")
            };
            assert_eq!(answer.reply.status, 503);
            assert_eq!(answer.outcome.name(), "location_limit_unavailable");
            assert_eq!(answer.reply.header("retry-after"), Some("5"));
            assert_eq!(
                answer.reply.header("idempotency-key"),
                Some("key-0123456789abcdef")
            );
        }
        assert_eq!(notes.len(), 2, "a minute later, one more line");
        let line: serde_json::Value = serde_json::from_str(&notes[1]).unwrap();
        assert_eq!(
            line["unanswered"], 2,
            "this one and the one unlogged before it"
        );
        assert_eq!(line["binding"], "HARBOUR_RL_2_PER_10S");
        assert_eq!(line["mode"], "fail_closed");
        for _ in 0..2 {
            assert!(admission.admit(&policy, &one, start).is_ok(), "refunded");
        }
    }

    #[test]
    fn a_surge_window_has_client_state_of_its_own() {
        let mut raw: serde_json::Value = serde_json::from_str(SHIPPED_POLICY).unwrap();
        raw["campaigns"][0]["limits"]["per_client"] =
            serde_json::json!({"burst": 2, "window_ms": 60_000});
        raw["campaigns"][0]["surge_windows"] = serde_json::json!([
            {"id": "spot", "start": "1970-01-01T00:10:00Z", "end": "1970-01-01T00:10:10Z",
             "per_client": {"burst": 10, "window_ms": 10_000}}
        ]);
        let policy = Policy::parse(&raw.to_string()).unwrap();
        let mut admission = Admission::new(Some((&policy, &form_key())), 1);
        let one = applicant(&policy, "eu", 1);
        let (start, end) = (600_000, 610_000);
        // Just before the window: the campaign's 2 per minute, used up.
        for _ in 0..2 {
            admission.admit(&policy, &one, start - 1).unwrap();
        }
        let refusal = admission.admit(&policy, &one, start - 1).unwrap_err();
        assert_eq!((refusal.layer, refusal.quota.burst()), (Layer::Client, 2));
        // From its first millisecond: the window's 10 per 10 s, counted apart.
        let provisional = admission.admit(&policy, &one, start).unwrap();
        assert_eq!(provisional.grant.quota.burst(), 10);
        assert_eq!(provisional.grant.remaining, 9);
        assert_eq!(provisional.consult.binding, "HARBOUR_RL_10_PER_10S");
        assert_eq!(
            provisional.consult.key,
            format!("spring-launch@spot {}", client_digest("0.0.0.1"))
        );
        for _ in 0..9 {
            admission.admit(&policy, &one, start).unwrap();
        }
        let refusal = admission.admit(&policy, &one, start).unwrap_err();
        assert_eq!((refusal.layer, refusal.quota.burst()), (Layer::Client, 10));
        // Its last millisecond is still the window's (one back per second since).
        let last = admission.admit(&policy, &one, end - 1).unwrap();
        assert_eq!(last.grant.quota.burst(), 10);
        // From its end: the campaign's own limit again, where the client left it (one more at
        // 30 s after the first two), neither reset nor overwritten by the window's.
        let refusal = admission.admit(&policy, &one, end).unwrap_err();
        assert_eq!(
            (refusal.layer, refusal.quota.burst(), refusal.retry_after_ms),
            (Layer::Client, 2, start - 1 + 30_000 - end)
        );
        let after = admission.admit(&policy, &one, start - 1 + 30_000).unwrap();
        assert_eq!(after.grant.quota.burst(), 2);
        assert_eq!(
            after.consult.key,
            format!("spring-launch {}", client_digest("0.0.0.1"))
        );
        assert_eq!(after.consult.binding, "HARBOUR_RL_2_PER_60S");
    }

    #[test]
    fn the_bindings_a_policy_needs_follow_from_its_limits() {
        let names = |policy: &Policy| {
            location_limits(policy)
                .iter()
                .map(LocationLimit::binding_name)
                .collect::<Vec<_>>()
        };
        assert_eq!(names(&Policy::shipped().unwrap()), ["HARBOUR_RL_5_PER_60S"]);
        let mut raw: serde_json::Value = serde_json::from_str(SHIPPED_POLICY).unwrap();
        raw["campaigns"][0]["surge_windows"] = serde_json::json!([
            {"id": "a", "start": "2026-01-01T00:00:00Z", "end": "2026-01-01T00:05:00Z",
             "per_client": {"burst": 20, "window_ms": 10_000}},
            {"id": "b", "start": "2026-01-02T00:00:00Z", "end": "2026-01-02T00:05:00Z",
             "per_client": {"burst": 5, "window_ms": 60_000}},
            {"id": "c", "start": "2026-01-03T00:00:00Z", "end": "2026-01-03T00:05:00Z",
             "per_client": {"burst": 20, "window_ms": 10_000}}
        ]);
        let policy = Policy::parse(&raw.to_string()).unwrap();
        assert_eq!(
            names(&policy),
            ["HARBOUR_RL_5_PER_60S", "HARBOUR_RL_20_PER_10S"],
            "one per distinct limit"
        );
    }

    #[test]
    fn the_client_table_entry_size_gives_the_stated_bound() {
        // hashbrown keeps capacity a power of two with an eighth free: 262,144 buckets for
        // 200,000 keys, each an entry plus one control byte.
        let buckets = (MAX_CLIENT_KEYS * 8 / 7).next_power_of_two();
        let bytes = buckets * (CLIENT_ENTRY_BYTES + 1);
        assert!(bytes < 17 << 20, "{bytes} bytes");
    }
}
