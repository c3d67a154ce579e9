//! What a campaign team runs around a broadcast: before it, the readiness check (`harbour-ready`:
//! expected submissions per region against the policy's limits and the origins' measured
//! capacity, with what to change); during it, the live view (`harbour-live`: a page on
//! 127.0.0.1, second by second); after it, the broadcast report (one HTML file, from a live
//! view's recording or a rehearsal).
//!
//! | module | holds |
//! |---|---|
//! | `broadcast` | the campaign team's file: each broadcast's start, peak and audience by country |
//! | `target` | where a deployment's origins and edge figures are (the local stack by default) |
//! | `probe`, `readiness` | the bounded capacity probe and the verdicts |
//! | `sources`, `collect`, `recording` | the origins' and the edge's figures, second by second |
//! | `words` | outcomes in plain words |
//! | `page`, `live`, `http` | the live view, the report, and the HTTP they use |

#![forbid(unsafe_code)]

pub mod broadcast;
pub mod collect;
pub mod http;
pub mod live;
pub mod page;
pub mod probe;
pub mod readiness;
pub mod recording;
pub mod sources;
pub mod target;
pub mod words;
