//! Refuses to build harbour with a policy that fails its checks, and compiles the candidate policy
//! in beside the live one when there is one.
//!
//! `policy/harbour.json` is compiled into the worker, so a bad edit would otherwise build, deploy
//! and answer every request 500 `config_invalid`. This runs the very checks the worker runs
//! (`policy::check_policies`, compiled from the same source files) on the very files the worker
//! embeds, and fails the build with one error per bad entry, each naming it. Everything those
//! files hold beyond the checks is unused here.
//!
//! The candidate is `policy/candidate.json`, or the file `HARBOUR_CANDIDATE_POLICY` names
//! (relative to the repository root), which lets a benchmark build a shadowing worker without
//! touching `policy/`. Without either, no candidate.
#![allow(dead_code)]

use std::path::Path;

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

/// Every source file the check is compiled from.
const SOURCES: [&str; 6] = [
    "src/policy.rs",
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
    // The directory, so that adding or deleting the candidate is noticed.
    println!("cargo::rerun-if-changed=policy");
    println!("cargo::rerun-if-changed=policy/harbour.json");
    println!("cargo::rerun-if-env-changed=HARBOUR_CANDIDATE_POLICY");
    let candidate = candidate_file();
    let candidate_text = candidate.as_ref().map(|path| {
        std::fs::read_to_string(path)
            .unwrap_or_else(|e| panic!("cannot read the candidate policy {path:?}: {e}"))
    });
    if let Err(error) = policy::check_policies(policy::SHIPPED_POLICY, candidate_text.as_deref()) {
        for issue in &error.0 {
            println!("cargo::error={issue}");
        }
        return;
    }
    if let Some(path) = candidate {
        println!("cargo::rerun-if-changed={}", path.display());
        println!("cargo::rustc-cfg=harbour_candidate");
        println!("cargo::rustc-env=HARBOUR_CANDIDATE_FILE={}", path.display());
    }
}

/// The candidate policy's absolute path, if there is one.
fn candidate_file() -> Option<std::path::PathBuf> {
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
