//! Refuses to build harbour with a policy that fails its checks.
//!
//! `policy/harbour.json` is compiled into the worker, so a bad edit would otherwise build, deploy
//! and answer every request 500 `config_invalid`. This runs the very checks the worker runs
//! (`Policy::parse`, compiled from the same source files) on the very file the worker embeds, and
//! fails the build with one error per bad entry, each naming it. Everything those files hold
//! beyond the checks is unused here.
#![allow(dead_code)]

#[path = "src/country.rs"]
mod country;
#[path = "src/field.rs"]
mod field;
#[path = "src/limit.rs"]
mod limit;
#[path = "src/policy.rs"]
mod policy;
#[path = "src/text.rs"]
mod text;
#[path = "src/utc.rs"]
mod utc;

/// The policy file, as the crate's `SHIPPED_POLICY` embeds it, and every source file the check is
/// compiled from.
const INPUTS: [&str; 7] = [
    "policy/harbour.json",
    "src/policy.rs",
    "src/country.rs",
    "src/field.rs",
    "src/limit.rs",
    "src/text.rs",
    "src/utc.rs",
];

fn main() {
    for input in INPUTS {
        println!("cargo::rerun-if-changed={input}");
    }
    if let Err(error) = policy::Policy::parse(policy::SHIPPED_POLICY) {
        for issue in &error.0 {
            println!("cargo::error=policy/harbour.json: {issue}");
        }
    }
}
