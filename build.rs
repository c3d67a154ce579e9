//! Compiles the candidate policy in beside the live one when there is one: `policy/candidate.json`,
//! or the file `HARBOUR_CANDIDATE_POLICY` names (relative to the repository root), which lets a
//! benchmark build a shadowing worker without touching `policy/`. Without either, no candidate.

use std::path::Path;

fn main() {
    println!("cargo:rustc-check-cfg=cfg(harbour_candidate)");
    // The directory, so that adding or deleting the candidate is noticed.
    println!("cargo:rerun-if-changed=policy");
    println!("cargo:rerun-if-env-changed=HARBOUR_CANDIDATE_POLICY");
    let chosen = std::env::var("HARBOUR_CANDIDATE_POLICY")
        .ok()
        .filter(|path| !path.is_empty());
    let path = Path::new(chosen.as_deref().unwrap_or("policy/candidate.json"));
    if !path.exists() {
        if chosen.is_some() {
            panic!("HARBOUR_CANDIDATE_POLICY names {path:?}, which does not exist");
        }
        return;
    }
    let Ok(absolute) = path.canonicalize() else {
        panic!("cannot resolve the candidate policy {path:?}");
    };
    println!("cargo:rerun-if-changed={}", absolute.display());
    println!("cargo:rustc-cfg=harbour_candidate");
    println!(
        "cargo:rustc-env=HARBOUR_CANDIDATE_FILE={}",
        absolute.display()
    );
}
