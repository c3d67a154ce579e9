//! Picks the policy the worker compiles in, refuses to build with one that fails its checks, and
//! compiles the candidate policy in beside it when there is one.
//!
//! The live policy is `policy/harbour.json`, or the file `HARBOUR_POLICY` names (relative to the
//! workspace; the bench builds its worker with `bench/policy.json`, a policy of its own). It is
//! copied to `$OUT_DIR/policy.json`, which the crate embeds as `COMPILED_POLICY_JSON`. A bad edit
//! would otherwise build, deploy and answer every request 500 `config_invalid`: this runs the
//! very checks the worker's configuration assumes (`harbour_policy::check_policies`) on the very
//! files the worker embeds, and fails the build with one error per bad entry, each naming its
//! file and entry. The checked policies are written out as Rust (`$OUT_DIR/compiled_policy.rs`,
//! see `harbour_policy::code`), which the worker builds them from: it carries no policy parser.
//!
//! The candidate is `policy/candidate.json`, or the file `HARBOUR_CANDIDATE_POLICY` names,
//! which lets a benchmark build a shadowing worker without touching `policy/`. Without either,
//! no candidate.

use std::path::{Path, PathBuf};

use harbour_policy::{check_policies, code, Policy, LIVE_FILE};

fn main() {
    println!("cargo::rustc-check-cfg=cfg(harbour_candidate)");
    let root = workspace_root();
    println!("cargo::rerun-if-env-changed=HARBOUR_POLICY");
    let live_name = std::env::var("HARBOUR_POLICY").unwrap_or_else(|_| LIVE_FILE.into());
    let live_file = root.join(&live_name);
    println!("cargo::rerun-if-changed={}", live_file.display());
    let Ok(live) = std::fs::read_to_string(&live_file) else {
        println!("cargo::error={live_name}: cannot be read");
        return;
    };
    // The directory, so that adding or deleting the candidate is noticed.
    println!("cargo::rerun-if-changed={}", root.join("policy").display());
    println!("cargo::rerun-if-env-changed=HARBOUR_CANDIDATE_POLICY");
    let candidate = match candidate_file(&root) {
        Ok(candidate) => candidate,
        Err(message) => {
            println!("cargo::error={message}");
            return;
        }
    };
    let candidate_text = match candidate.as_ref().map(std::fs::read_to_string).transpose() {
        Ok(text) => text,
        Err(e) => {
            println!("cargo::error=cannot read the candidate policy: {e}");
            return;
        }
    };
    if let Err(error) = check_policies(&live_name, &live, candidate_text.as_deref()) {
        for issue in &error.0 {
            println!("cargo::error={issue}");
        }
        return;
    }
    // Both passed the checks above, so both parse.
    let (Ok(live_policy), Ok(candidate_policy)) = (
        Policy::parse(&live),
        candidate_text.as_deref().map(Policy::parse).transpose(),
    ) else {
        println!("cargo::error=a policy that passed its checks does not parse");
        return;
    };
    for warning in live_policy.warnings() {
        println!("cargo::warning={live_name}: {warning}");
    }
    let source = code::rust_source(&live_policy, candidate_policy.as_ref());
    let out = PathBuf::from(std::env::var_os("OUT_DIR").unwrap_or_default());
    let candidate_json = candidate_text.unwrap_or_default();
    if std::fs::write(out.join("policy.json"), live).is_err()
        || std::fs::write(out.join("candidate.json"), candidate_json).is_err()
        || std::fs::write(out.join("compiled_policy.rs"), source).is_err()
    {
        println!("cargo::error=cannot write the policy to OUT_DIR");
    }
    if let Some(path) = candidate {
        println!("cargo::rerun-if-changed={}", path.display());
        println!("cargo::rustc-cfg=harbour_candidate");
    }
}

/// The workspace root: two levels above this crate.
fn workspace_root() -> PathBuf {
    let manifest = std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_default();
    Path::new(&manifest).join("../..")
}

/// The candidate policy's absolute path, if there is one.
fn candidate_file(root: &Path) -> Result<Option<PathBuf>, String> {
    let chosen = std::env::var("HARBOUR_CANDIDATE_POLICY")
        .ok()
        .filter(|path| !path.is_empty());
    let path = root.join(chosen.as_deref().unwrap_or(harbour_policy::CANDIDATE_FILE));
    if !path.exists() {
        return match chosen {
            Some(chosen) => Err(format!(
                "HARBOUR_CANDIDATE_POLICY names {chosen:?}, which does not exist"
            )),
            None => Ok(None),
        };
    }
    path.canonicalize().map(Some).map_err(|e| {
        format!(
            "cannot resolve the candidate policy {}: {e}",
            path.display()
        )
    })
}
