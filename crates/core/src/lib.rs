//! harbour's request pipeline: named phases over plain data, composed into one verdict. Nothing
//! here names the platform: time is an argument, the environment a lookup, and every platform
//! call a decision needs is a value the shell (harbour-worker) carries out.
//!
//! - [`pipeline`]: what an isolate keeps and the order of the phases (start here);
//! - [`phase`]: one module per phase, in order;
//! - [`context`]: what a request carries through the phases, and how it ends;
//! - [`outcome`], [`reply`], [`journal`]: how it ends, what the visitor is sent, what is logged;
//!   [`points`]: what is counted for Workers Analytics Engine, per second;
//! - the isolate's state: [`limit`] (GCRA), [`breaker`] (per origin), [`tickets`] (requests
//!   awaiting the platform), [`replays`] (solutions seen lately and what they bought);
//! - [`config`] (the policy and the environment), [`entry`] (the entry as forwarded and keyed),
//!   [`attempt`] (an origin attempt and its deadline), [`shadow`] (a candidate policy beside the
//!   live one).

pub mod attempt;
pub mod breaker;
pub mod config;
pub mod context;
pub mod entry;
pub mod journal;
pub mod limit;
pub mod outcome;
pub mod phase;
pub mod pipeline;
pub mod points;
pub mod replays;
pub mod reply;
pub mod shadow;
pub mod tickets;
