//! The phases, in the order a request meets them. Each is a function over plain data that goes
//! on with a value or answers now ([`Flow`](crate::reply::Flow)); `Pipeline` composes them.
//!
//! | phase | module | answers |
//! |---|---|---|
//! | route | [`request`] | 404, 405, the form description (200), CORS (403, 204) |
//! | request_check | [`request`] | 415, 413, 400 for an incomplete body |
//! | challenge | [`challenge`] | 400 `challenge_required`, 403 `challenge_expired` / `_invalid` |
//! | validate | [`validate`] | 400 unreadable body, 422 field errors |
//! | classify | [`residency`] | 403 unknown, anonymised or missing country, 422 conflict |
//! | shed | [`shed`] | 503 `region_busy` while every origin of the region is full |
//! | admit | [`admission`] | 429 naming the isolate's layer; else the binding is consulted |
//! | settle | [`admission`] | 429 naming the location, or 503 under `fail_closed` |
//! | screen | [`screen`] | a decoy 202 for a bot |
//! | plan | [`plan`] | the signed request for the region's first available origin |
//! | forward | [`forward`] | per origin answer: the next origin of the region, or the answer |

pub mod admission;
pub mod challenge;
pub mod forward;
pub mod plan;
pub mod request;
pub mod residency;
pub mod screen;
pub mod shed;
pub mod validate;
