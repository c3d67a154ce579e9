//! Admission: whether a request may go on, asked of every limit layer at once.
//!
//! Layers, in order: per client (IPv4 address or IPv6 /64, per campaign), per campaign, per
//! region. A request is charged to every layer or to none, so a refused request costs nothing
//! anywhere and a visitor correcting a form is not penalised (admission comes after validation
//! and classification for that reason). A refusal names the layer and carries its exact wait.
//!
//! Client state lives in a bounded table that sheds recovered keys first, so a flood of new
//! addresses cannot grow memory without bound; campaign and region budgets each have a cell of
//! their own that no flood of clients can evict. All of it is per isolate.

use crate::limit::{Cell, Check, ClientKey, Decision, Limiter, Quota};
use crate::policy::{CampaignIndex, Policy, RegionIndex};
use crate::reply::{problem, retry_after_seconds, Answer, Flow, Phase};
use crate::text::push_u64;

/// Client keys the table holds per isolate before it sheds recovered and near-recovered ones:
/// at most about 64 bytes each, so client state stays under ~13 MB.
pub const MAX_CLIENT_KEYS: usize = 200_000;

/// A limit layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Layer {
    Client,
    Campaign,
    Region,
}

impl Layer {
    pub fn as_str(self) -> &'static str {
        match self {
            Layer::Client => "client",
            Layer::Campaign => "campaign",
            Layer::Region => "region",
        }
    }

    /// The outcome logs count a refusal by this layer under.
    pub fn refused_outcome(self) -> &'static str {
        match self {
            Layer::Client => "rate_limited_client",
            Layer::Campaign => "rate_limited_campaign",
            Layer::Region => "rate_limited_region",
        }
    }
}

/// Who asks to be admitted, as the limits see it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Applicant {
    pub campaign: CampaignIndex,
    pub region: RegionIndex,
    pub client: ClientKey,
}

/// Admitted: what the client's own layer has left, for the `RateLimit` headers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Grant {
    pub quota: Quota,
    pub remaining: u32,
    pub reset_ms: u64,
}

/// Refused by `layer`, whose quota is `quota`, until `retry_after_ms` from now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Refusal {
    pub layer: Layer,
    pub quota: Quota,
    pub retry_after_ms: u64,
}

/// The limit state of one isolate.
pub struct Admission {
    clients: Limiter<(CampaignIndex, ClientKey)>,
    campaigns: Vec<Cell>,
    regions: Vec<Cell>,
}

impl Admission {
    /// State for `policy`'s campaigns and regions (none without one); `seed` keys the client
    /// table's hash.
    pub fn new(policy: Option<&Policy>, seed: u64) -> Admission {
        Admission {
            clients: Limiter::seeded(MAX_CLIENT_KEYS, seed),
            campaigns: vec![Cell::default(); policy.map_or(0, |p| p.campaigns.len())],
            regions: vec![Cell::default(); policy.map_or(0, |p| p.regions.len())],
        }
    }

    /// Asks every layer; charges all of them only when all admit.
    pub fn admit(
        &mut self,
        policy: &Policy,
        applicant: &Applicant,
        now_ms: u64,
    ) -> Result<Grant, Refusal> {
        let campaign = &policy.campaigns[applicant.campaign.get()];
        let region = policy.region(applicant.region);
        let client_key = (applicant.campaign, applicant.client);
        let client = self.clients.peek(&client_key, &campaign.per_client, now_ms);
        let campaign_check = self
            .campaigns
            .get(applicant.campaign.get())
            .map(|cell| cell.peek(&campaign.campaign, now_ms));
        let region_check = match (&region.budget, self.regions.get(applicant.region.get())) {
            (Some(budget), Some(cell)) => Some((budget, cell.peek(budget, now_ms))),
            _ => None,
        };
        let checks = [
            Some((Layer::Client, &campaign.per_client, client)),
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
        self.clients.commit(client_key, &client, now_ms);
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
        Ok(Grant {
            quota: campaign.per_client,
            remaining,
            reset_ms,
        })
    }

    /// Client keys held, for tests of the memory bound.
    pub fn client_keys(&self) -> usize {
        self.clients.len()
    }
}

/// The admit phase: 429 with `Retry-After` and `RateLimit`/`RateLimit-Policy` headers for the
/// layer that refused, or the grant whose headers every later answer carries.
pub fn admit(
    admission: &mut Admission,
    policy: &Policy,
    applicant: &Applicant,
    now_ms: u64,
) -> Flow<Grant> {
    match admission.admit(policy, applicant, now_ms) {
        Ok(grant) => Flow::Continue(grant),
        Err(refusal) => {
            let seconds = retry_after_seconds(refusal.retry_after_ms);
            let reply = problem(
                429,
                "rate_limited",
                "Too many submissions",
                &format!("please wait {seconds} s and try again"),
                Some(serde_json::json!({ "retry_after_s": seconds })),
            )
            .with_header("retry-after", crate::text::decimal(seconds))
            .with_header(
                "ratelimit-policy",
                policy_header(refusal.layer, &refusal.quota),
            )
            .with_header("ratelimit", limit_header(refusal.layer, 0, seconds));
            Flow::Break(
                Answer::new(Phase::Admit, reply).counted_as(refusal.layer.refused_outcome()),
            )
        }
    }
}

impl Grant {
    /// `RateLimit-Policy` and `RateLimit` for the client's own layer.
    pub fn headers(&self) -> Vec<(&'static str, String)> {
        vec![
            (
                "ratelimit-policy",
                policy_header(Layer::Client, &self.quota),
            ),
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

/// `RateLimit-Policy` as in the IETF httpapi draft: quota `q` per window `w` seconds.
fn policy_header(layer: Layer, quota: &Quota) -> String {
    let mut value = String::with_capacity(32);
    value.push('"');
    value.push_str(layer.as_str());
    value.push_str("\";q=");
    push_u64(&mut value, u64::from(quota.burst()));
    value.push_str(";w=");
    push_u64(&mut value, retry_after_seconds(quota.window_ms()));
    value
}

/// `RateLimit`: `r` requests remaining, `t` seconds until the quota is whole again.
fn limit_header(layer: Layer, remaining: u32, seconds: u64) -> String {
    let mut value = String::with_capacity(32);
    value.push('"');
    value.push_str(layer.as_str());
    value.push_str("\";r=");
    push_u64(&mut value, u64::from(remaining));
    value.push_str(";t=");
    push_u64(&mut value, seconds);
    value
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::SHIPPED_POLICY;

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
        let mut admission = Admission::new(Some(&policy), 1);
        let one = applicant(&policy, "global", 1);
        for left in [2, 1, 0] {
            let grant = admission.admit(&policy, &one, 0).unwrap();
            assert_eq!(grant.remaining, left);
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
        let mut admission = Admission::new(Some(&policy), 1);
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
        let mut admission = Admission::new(Some(&policy), 7);
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
        let mut admission = Admission::new(Some(&policy), 1);
        let campaign = policy.find_campaign("spring-launch").unwrap().0;
        for client in 0..5 {
            let who = Applicant {
                campaign,
                region: policy.rest_of_world,
                client: ClientKey::V4(client),
            };
            let Flow::Continue(grant) = admit(&mut admission, &policy, &who, 0) else {
                panic!("refused early")
            };
            assert_eq!(
                grant.headers()[0],
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
        assert_eq!(answer.outcome, "rate_limited_campaign");
        let reply = answer.reply;
        assert_eq!(reply.status, 429);
        assert_eq!(reply.header("retry-after"), Some("1"));
        assert_eq!(
            reply.header("ratelimit-policy"),
            Some("\"campaign\";q=5;w=1")
        );
        assert_eq!(reply.header("ratelimit"), Some("\"campaign\";r=0;t=1"));
    }
}
