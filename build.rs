//! Picks the policy harbour compiles in, refuses to build with one that fails its checks, and
//! compiles the candidate policy in beside it when there is one.
//!
//! The live policy is `policy/harbour.json`, or the file `HARBOUR_POLICY` names (relative to the
//! workspace; the bench builds its worker with `bench/policy.json`, a policy of its own). It is
//! copied to `$OUT_DIR/policy.json`, which the crate embeds as `SHIPPED_POLICY`. A bad edit would
//! otherwise build, deploy and answer every request 500 `config_invalid`: this runs the very
//! checks the worker runs (`policy::check_policies`, compiled from the same source files) on the
//! very files the worker embeds, and fails the build with one error per bad entry, each naming
//! its file and entry. Everything those files hold beyond the checks is unused here. The checked
//! policies are also written out as Rust (`$OUT_DIR/compiled_policy.rs`, see `src/policy_code.rs`),
//! which the worker builds them from: it carries no policy parser.
//!
//! The candidate is `policy/candidate.json`, or the file `HARBOUR_CANDIDATE_POLICY` names,
//! which lets a benchmark build a shadowing worker without touching `policy/`. Without either,
//! no candidate.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

/// `src/policy.rs` re-exports the crate's embedded policy; here the file is read at run time.
pub const SHIPPED_POLICY: &str = "";

/// `src/policy_code.rs` refers to the compiled policies, which this writes.
mod compiled {
    pub fn live() -> Option<crate::policy::Policy> {
        None
    }
    pub fn candidate() -> Option<crate::policy::Policy> {
        None
    }
}

#[path = "src/country.rs"]
mod country;
#[path = "src/field.rs"]
mod field;
#[path = "src/limit.rs"]
mod limit;
#[path = "src/policy.rs"]
mod policy;
#[path = "src/policy_code.rs"]
mod policy_code;
#[path = "src/text.rs"]
mod text;
#[path = "src/utc.rs"]
mod utc;

/// Every source file the check is compiled from.
const SOURCES: [&str; 7] = [
    "src/policy.rs",
    "src/policy_code.rs",
    "src/country.rs",
    "src/field.rs",
    "src/limit.rs",
    "src/text.rs",
    "src/utc.rs",
];

fn main() {
    println!("cargo::rustc-check-cfg=cfg(harbour_candidate)");
    for source in SOURCES {
        println!("cargo::rerun-if-changed={source}");
    }
    println!("cargo::rerun-if-env-changed=HARBOUR_POLICY");
    let live_file = std::env::var("HARBOUR_POLICY").unwrap_or_else(|_| policy::LIVE_FILE.into());
    println!("cargo::rerun-if-changed={live_file}");
    let Ok(live) = std::fs::read_to_string(&live_file) else {
        println!("cargo::error={live_file}: cannot be read");
        return;
    };
    // The directory, so that adding or deleting the candidate is noticed.
    println!("cargo::rerun-if-changed=policy");
    println!("cargo::rerun-if-env-changed=HARBOUR_CANDIDATE_POLICY");
    let candidate = candidate_file();
    let candidate_text = candidate.as_ref().map(|path| {
        std::fs::read_to_string(path)
            .unwrap_or_else(|e| panic!("cannot read the candidate policy {path:?}: {e}"))
    });
    if let Err(error) = policy::check_policies(&live_file, &live, candidate_text.as_deref()) {
        for issue in &error.0 {
            println!("cargo::error={issue}");
        }
        return;
    }
    // Both passed the checks above, so both parse.
    let (Ok(live_policy), Ok(candidate_policy)) = (
        policy::Policy::parse(&live),
        candidate_text
            .as_deref()
            .map(policy::Policy::parse)
            .transpose(),
    ) else {
        println!("cargo::error=a policy that passed its checks does not parse");
        return;
    };
    let code = policy_code::rust_source(&live_policy, candidate_policy.as_ref());
    let out = PathBuf::from(std::env::var_os("OUT_DIR").unwrap_or_default());
    if std::fs::write(out.join("policy.json"), live).is_err()
        || std::fs::write(out.join("compiled_policy.rs"), code).is_err()
    {
        println!("cargo::error=cannot write the policy to OUT_DIR");
    }
    if let Some(path) = candidate {
        println!("cargo::rerun-if-changed={}", path.display());
        println!("cargo::rustc-cfg=harbour_candidate");
        println!("cargo::rustc-env=HARBOUR_CANDIDATE_FILE={}", path.display());
    }
}

/// The candidate policy's absolute path, if there is one.
fn candidate_file() -> Option<PathBuf> {
    let chosen = std::env::var("HARBOUR_CANDIDATE_POLICY")
        .ok()
        .filter(|path| !path.is_empty());
    let path = Path::new(chosen.as_deref().unwrap_or("policy/candidate.json"));
    if !path.exists() {
        if chosen.is_some() {
            panic!("HARBOUR_CANDIDATE_POLICY names {path:?}, which does not exist");
        }
        return None;
    }
    match path.canonicalize() {
        Ok(absolute) => Some(absolute),
        Err(e) => panic!("cannot resolve the candidate policy {path:?}: {e}"),
    }
}
