//! Retention: each origin deletes its own region's expired entries; nothing leaves the region
//! to be deleted. Rules:
//!
//! - a campaign's rows are due once `now_ms >= campaign.delete_after_ms()` (its end plus its
//!   retention days); only the policy's campaigns are swept: rows of a campaign the policy no
//!   longer lists are kept, as no rule says when they expire (keep a finished campaign in the
//!   policy until its rows are gone);
//! - rows go at most `BATCH_ROWS` per statement, each statement its own transaction, with a
//!   pause between, so submissions wait at most one statement for a sweep;
//! - time is an input: `sweep` takes `now_ms`; only the background task (`spawn`) reads the
//!   clock;
//! - logs carry counts only: an `origin.retention` line per campaign that lost rows (campaign,
//!   deleted), `origin.retention_error` when the store failed (the next sweep goes on).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::json;

use harbour_policy::{Campaign, Policy};

use crate::store::Store;

/// Rows per delete statement: a few milliseconds of the store's time.
pub const BATCH_ROWS: usize = 500;
/// Between two sweeps. Deadlines are whole days after a campaign's end: an hour late is fine.
pub const INTERVAL: Duration = Duration::from_secs(60 * 60);
/// Between two statements of a sweep, so waiting submissions take the write lock first.
const PAUSE: Duration = Duration::from_millis(20);

/// What a sweep did for one campaign.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Swept {
    pub campaign: String,
    pub deleted: u64,
    /// The store's error that stopped this campaign's deletes, if one did.
    pub error: Option<String>,
}

/// The policy's campaigns whose rows are due for deletion at `now_ms`.
pub fn due(policy: &Policy, now_ms: u64) -> impl Iterator<Item = &Campaign> {
    policy
        .campaigns
        .iter()
        .filter(move |c| now_ms >= c.delete_after_ms())
}

/// Deletes the rows of every campaign due at `now_ms`, `batch_rows` per statement. A campaign
/// whose deletes fail is reported with its error; the others are still swept.
pub async fn sweep(store: &Store, policy: &Policy, now_ms: u64, batch_rows: usize) -> Vec<Swept> {
    let batch_rows = batch_rows.max(1);
    let mut swept = Vec::new();
    for campaign in due(policy, now_ms) {
        let mut done = Swept {
            campaign: campaign.id.clone(),
            deleted: 0,
            error: None,
        };
        loop {
            match store.delete_campaign_rows(&campaign.id, batch_rows).await {
                Ok(n) => {
                    done.deleted += n;
                    if n < u64::try_from(batch_rows).unwrap_or(u64::MAX) {
                        break;
                    }
                    tokio::time::sleep(PAUSE).await;
                }
                Err(e) => {
                    done.error = Some(e.0);
                    break;
                }
            }
        }
        swept.push(done);
    }
    swept
}

/// The log line of one campaign's sweep, if it has anything to say: counts only.
pub fn log_line(region: &str, swept: &Swept) -> Option<serde_json::Value> {
    match &swept.error {
        Some(error) => Some(json!({
            "msg": "origin.retention_error", "region": region, "campaign": swept.campaign,
            "deleted": swept.deleted, "error": error,
        })),
        None if swept.deleted > 0 => Some(json!({
            "msg": "origin.retention", "region": region, "campaign": swept.campaign,
            "deleted": swept.deleted,
        })),
        None => None,
    }
}

/// The origin's retention task: a sweep at start, then every `INTERVAL`, for as long as the
/// runtime runs.
pub fn spawn(store: Store, policy: Policy, region: String) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(INTERVAL);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            let now_ms = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
            for swept in sweep(&store, &policy, now_ms, BATCH_ROWS).await {
                if let Some(line) = log_line(&region, &swept) {
                    eprintln!("{line}");
                }
            }
        }
    })
}
