//! Drives the real local stack for end-to-end tests and the bench: reference origins (separate
//! processes, on SQLite files or a throwaway PostgreSQL cluster), the built worker under
//! `wrangler dev` or `workerd serve`, and a raw HTTP/1.1 client that sends exactly the bytes a
//! test asks for. Everything listens on 127.0.0.1 and is stopped on drop.
//!
//! | module | holds |
//! |---|---|
//! | `http` | the raw HTTP/1.1 client and its `Response` |
//! | `process` | child processes in groups of their own, free ports, waiting until ready |
//! | `project` | the workspace root and `wrangler.toml` (its `compatibility_date`) |
//! | `policy` | the shipped policy's regions and rate-limiting bindings, as the harness needs them |
//! | `proof` | keys and solved challenges, as the campaign page makes them |
//! | `origin` | the one origin launcher, and the local origins `wrangler.toml` names |
//! | `workerd` | the one `workerd serve` configuration builder |
//! | `stack` | the e2e stack: origins per region and `wrangler dev` |
//! | `pg` | PostgreSQL servers and throwaway clusters (`scripts/pg`) |
//! | `proxy` | what a test puts in an origin's place: a lost answer, a hang |
//! | `region` | one region's real origin, for tests of the worker under `workerd serve` |
//! | `rows` | the stores and the rows read from them (an unreadable store is an error) |
//! | `runner`, `scenarios` | running named scenarios on one stack; the scenarios both suites share |

#![allow(clippy::unwrap_used, clippy::expect_used)]

pub mod http;
pub mod origin;
pub mod pg;
pub mod policy;
pub mod process;
pub mod project;
pub mod proof;
pub mod proxy;
pub mod region;
pub mod rows;
pub mod runner;
pub mod scenarios;
pub mod stack;
pub mod workerd;
