//! The plan phase: the signed request for one origin of the submission's own region.
//!
//! Rules:
//! - Only the origins of the submission's region are ever planned for, primary first; failover
//!   (the forward phase) walks that same list and nothing else.
//! - The forwarded request is built from nothing: only harbour's own headers (see
//!   `harbour_contract::http`), never a copy of the client's, so client-sent `X-Harbour-*`,
//!   hop-by-hop or spoofable headers cannot pass.
//! - The body is the forwarded entry (`harbour_contract::entry`), whose digest the signature
//!   covers with the region, the path, the receipt time and the idempotency key; every attempt
//!   sends the same signed request.

use harbour_contract::entry::{EntryBody, NoticeRecord, Signals};
use harbour_contract::http::{HEADER_IDEMPOTENCY_KEY, HEADER_SIGNATURE, METHOD};
use harbour_contract::signature::{sha256_hex, Signed};
use harbour_policy::RegionIndex;

use crate::attempt::{Attempt, ATTEMPT_TIMEOUT_MS, DEADLINE_MS};
use crate::config::Config;
use crate::context::Context;
use crate::outcome::Outcome;
use crate::phase::residency::Residency;
use crate::phase::validate::NoticeShown;
use crate::reply::{retry_later, Answer, Flow, Phase};

/// What to send, and to which origin first.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ForwardPlan {
    pub region: RegionIndex,
    /// The position of the first attempt's origin in the region's list.
    pub origin: usize,
    pub first: Attempt,
    pub headers: Vec<(&'static str, String)>,
    pub body: String,
}

/// The plan phase: the signed request for the region's origin at position `origin` (the primary
/// unless its breaker is open). `ctx` has the region, the campaign and the entry's key; `entry`
/// is the entry's canonical fields and the notice its visitor was shown. A region without that
/// origin (configuration forbids a region without any) is answered 503 rather than guessed at.
pub fn plan(
    config: &Config,
    ctx: &Context,
    residency: &Residency,
    origin: usize,
    entry: (&str, Option<&NoticeShown>),
) -> Flow<ForwardPlan> {
    let (fields_json, notice) = entry;
    let region = residency.region;
    let campaign = ctx
        .campaign
        .and_then(|c| config.policy.campaigns.get(c.get()));
    let (Some(first_origin), Some(setup), Some(campaign), Some(key)) = (
        config.origins(region).get(origin),
        config.regions.get(region.get()),
        campaign,
        ctx.key.as_deref(),
    ) else {
        let reply = retry_later(
            Outcome::NoOrigin,
            "Your entry could not be stored right now",
            None,
            5_000,
        );
        return Flow::Break(Answer::new(Phase::Plan, reply));
    };
    let region_id = config.policy.region(region).id.as_str();
    let body = EntryBody {
        campaign: &campaign.id,
        fields_json,
        notice: notice.map(|n| NoticeRecord {
            locale: n.locale,
            version: &n.version,
        }),
        received_at_ms: ctx.received_ms,
        region: region_id,
        request_id: &ctx.request_id,
        signals: Signals {
            basis: residency.basis.as_str(),
            declared_country: residency.declared.as_ref().map(|c| c.as_str()),
            platform_country: residency.platform.code(),
        },
    }
    .write();
    let body_hash = sha256_hex(body.as_bytes());
    let signature = setup.key.sign(&Signed {
        method: METHOD,
        path: &first_origin.path,
        timestamp_ms: ctx.received_ms,
        region: region_id,
        idempotency_key: key,
        body_sha256_hex: &body_hash,
    });
    // Campaign, request id and receipt time are in the body, which the signature covers.
    let headers = vec![
        ("content-type", "application/json".to_owned()),
        (HEADER_IDEMPOTENCY_KEY, key.to_owned()),
        (HEADER_SIGNATURE, signature),
    ];
    Flow::Continue(ForwardPlan {
        region,
        origin,
        first: Attempt {
            url: first_origin.url.clone(),
            timeout_ms: ATTEMPT_TIMEOUT_MS.min(DEADLINE_MS),
        },
        headers,
        body,
    })
}
