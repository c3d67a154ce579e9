//! Picks the policy harbour compiles in and refuses to build with one that fails its checks.
//!
//! The policy is `policy/harbour.json`, or the file `HARBOUR_POLICY` names (relative to the
//! workspace; the bench builds its worker with `bench/policy.json`, a policy of its own). It is
//! copied to `$OUT_DIR/policy.json`, which the crate embeds as `SHIPPED_POLICY`. A bad edit would
//! otherwise build, deploy and answer every request 500 `config_invalid`: this runs the very
//! checks the worker runs (`Policy::parse`, compiled from the same source files) on the very file
//! the worker embeds, and fails the build with one error per bad entry, each naming it.
//! Everything those files hold beyond the checks is unused here.
#![allow(dead_code)]

/// `src/policy.rs` re-exports the crate's embedded policy; here the file is read at run time.
pub const SHIPPED_POLICY: &str = "";

#[path = "src/country.rs"]
mod country;
#[path = "src/field.rs"]
mod field;
#[path = "src/limit.rs"]
mod limit;
#[path = "src/policy.rs"]
mod policy;

/// Every source file the check is compiled from.
const INPUTS: [&str; 4] = [
    "src/policy.rs",
    "src/country.rs",
    "src/field.rs",
    "src/limit.rs",
];

const DEFAULT_POLICY: &str = "policy/harbour.json";

fn main() {
    for input in INPUTS {
        println!("cargo::rerun-if-changed={input}");
    }
    println!("cargo::rerun-if-env-changed=HARBOUR_POLICY");
    let chosen = std::env::var("HARBOUR_POLICY").unwrap_or_else(|_| DEFAULT_POLICY.to_owned());
    println!("cargo::rerun-if-changed={chosen}");
    let Ok(text) = std::fs::read_to_string(&chosen) else {
        println!("cargo::error={chosen}: cannot be read");
        return;
    };
    if let Err(error) = policy::Policy::parse(&text) {
        for issue in &error.0 {
            println!("cargo::error={chosen}: {issue}");
        }
    }
    let out = std::path::PathBuf::from(std::env::var_os("OUT_DIR").unwrap_or_default());
    if std::fs::write(out.join("policy.json"), text).is_err() {
        println!("cargo::error=cannot write the policy to OUT_DIR");
    }
}
