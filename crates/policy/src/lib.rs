//! harbour's policy: regions and the countries in them, campaigns and their fields, limits and
//! surge windows, and what to do with doubtful country signals. Parsed and checked as a whole
//! (`Policy::parse`, `check_policies`), every problem reported at once naming the entry at fault;
//! written out as Rust (`code`) so the worker carries its policy built instead of a parser.
//!
//! This crate is what the worker's build.rs runs before anything is built: a policy that fails
//! its checks never becomes a worker. It knows nothing of requests or of the platform.

pub mod code;
pub mod country;
pub mod field;
pub mod identity;
pub mod ingress;
pub mod notice;
mod policy;
pub mod quota;
pub mod text;
pub mod utc;

pub use policy::*;
