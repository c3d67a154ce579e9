//! harbour's request pipeline: named phases over plain data, composed into one verdict (see
//! `pipeline`). Nothing here names the platform: time is an argument, the environment a lookup,
//! and every platform call a decision needs is a value the shell carries out (harbour-worker).

pub mod admission;
pub mod breaker;
pub mod challenge;
pub mod config;
pub mod forward;
pub mod journal;
pub mod limit;
pub mod pipeline;
pub mod reply;
pub mod request;
pub mod residency;
pub mod screen;
pub mod shadow;
pub mod validate;
