//! What a request carries through its phases, and how it ends.
//!
//! One [`Context`] per request (pingora's `CTX`): each phase that learns something a later phase,
//! the final reply or the log record needs writes it here (the route its campaign and CORS
//! decision, classification its region, admission what it charged and the `RateLimit` headers it
//! granted, forwarding its attempts). Held requests and forward tickets carry their context, so
//! nothing is rebuilt from indices. Every request ends in [`Finished`], made in one place
//! (`Pipeline::finish`): the reply with the context's headers applied, and the log record.

use harbour_policy::{CampaignIndex, RegionIndex};

use crate::journal::LogRecord;
use crate::phase::admission::Charge;
use crate::replays::Sighting;
use crate::reply::{Cors, Reply};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Context {
    /// The isolate's id for this request; stored with the entry and written in its log line.
    pub request_id: String,
    /// When the isolate received the request (the shell's clock).
    pub received_ms: u64,
    /// Once routed.
    pub campaign: Option<CampaignIndex>,
    /// Once classified.
    pub region: Option<RegionIndex>,
    /// The browser origin a cross-origin reply is addressed to.
    pub cors: Cors,
    /// The entry's idempotency key once it has one (the visitor's, or one derived from it).
    pub key: Option<String>,
    /// `RateLimit-Policy` / `RateLimit` once admitted: every later reply carries them.
    pub rate_headers: Vec<(&'static str, String)>,
    /// What admission charged, given back if the request is turned away after it through no
    /// fault of the visitor's (every origin full).
    pub charge: Option<Charge>,
    /// Origin attempts made, the one under way included.
    pub attempts: u32,
    /// The request's solution as the isolate's memory knows it (see `replays`), once it was
    /// found new; its ending is remembered when the request finishes.
    pub sighting: Option<Sighting>,
}

impl Context {
    pub fn new(request_id: String, received_ms: u64) -> Context {
        Context {
            request_id,
            received_ms,
            campaign: None,
            region: None,
            cors: Cors::default(),
            key: None,
            rate_headers: Vec::new(),
            charge: None,
            attempts: 0,
            sighting: None,
        }
    }
}

/// How a request ended: what the visitor is sent and what the log records.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finished {
    pub reply: Reply,
    pub log: LogRecord,
}
