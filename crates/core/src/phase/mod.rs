//! The phases, one module each, in the order a request meets them: `request` (route,
//! request_check), `challenge`, `validate`, `residency` (classify), `ingress`, `shed`, `admission` (admit;
//! settle, after the location's binding answered), `screen`, `plan`, `forward` (after each
//! origin answer). Each is a function over plain data that goes on with a value or answers now
//! ([`Flow`](crate::reply::Flow)); `Pipeline` composes them. What each one answers, and why the
//! order is what it is: README, "How a request flows".

pub mod admission;
pub mod challenge;
pub mod forward;
pub mod ingress;
pub mod plan;
pub mod request;
pub mod residency;
pub mod screen;
pub mod shed;
pub mod validate;
