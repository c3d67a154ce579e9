//! The build refuses a policy that fails its checks: `scripts/build`, run on a copy of the
//! project whose policy has bad entries, exits non-zero before anything is built and names each
//! entry with the checker's own message.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Command;

use harbour_e2e::project::workspace_root;
use harbour_policy::{Policy, SHIPPED_POLICY};

/// Copies the project's files as they stand (tracked or new, not ignored) from `root` to `to`.
fn copy_project(root: &Path, to: &Path) {
    let listed = Command::new("git")
        .current_dir(root)
        .args([
            "ls-files",
            "-z",
            "--cached",
            "--others",
            "--exclude-standard",
        ])
        .output()
        .unwrap();
    assert!(listed.status.success(), "git ls-files failed");
    for name in String::from_utf8(listed.stdout).unwrap().split('\0') {
        let from = root.join(name);
        // A tracked file deleted in the work tree is not part of the project as it stands.
        if name.is_empty() || !from.is_file() {
            continue;
        }
        let target = to.join(name);
        std::fs::create_dir_all(target.parent().unwrap()).unwrap();
        std::fs::copy(&from, &target).unwrap();
    }
    // The build's npm tools (wasm-opt, esbuild) are the project's own.
    std::os::unix::fs::symlink(root.join("node_modules"), to.join("node_modules")).unwrap();
}

#[test]
fn scripts_build_refuses_a_bad_policy_and_names_each_entry() {
    let root = workspace_root();
    let copy = root.join("target/policy-build-test");
    let _ = std::fs::remove_dir_all(&copy);
    copy_project(&root, &copy);

    let mut policy: serde_json::Value = serde_json::from_str(SHIPPED_POLICY).unwrap();
    policy["max_body_bytes"] = 10.into();
    policy["campaigns"][0]["fields"][0]["type"] = "emial".into();
    let bad = serde_json::to_string_pretty(&policy).unwrap();
    std::fs::write(copy.join("policy/harbour.json"), &bad).unwrap();
    let issues = Policy::parse(&bad).unwrap_err().0;
    let paths: Vec<&str> = issues.iter().map(|i| i.path.as_str()).collect();
    assert_eq!(paths, ["max_body_bytes", "campaigns[0].fields[0].type"]);

    let output = Command::new("bash")
        .arg(copy.join("scripts/build"))
        .env("HARBOUR_FORCE_BUILD", "1")
        // A target dir of its own, kept between runs: whatever the copy compiles never lands
        // where the real build looks for the worker.
        .env(
            "CARGO_TARGET_DIR",
            root.join("target/policy-build-test-target"),
        )
        .output()
        .unwrap();
    let printed = String::from_utf8_lossy(&output.stderr).into_owned()
        + &String::from_utf8_lossy(&output.stdout);
    assert!(!output.status.success(), "the build passed:\n{printed}");
    let summary = printed
        .split("the policy fails its checks; nothing was built:")
        .nth(1)
        .unwrap_or_else(|| panic!("no summary of the policy's problems:\n{printed}"));
    for issue in &issues {
        assert!(
            summary.contains(&format!("  policy/harbour.json: {issue}\n")),
            "{issue} is not in the summary:\n{printed}"
        );
    }
    assert!(!printed.contains("wasm size:"), "{printed}");
    assert!(!copy.join("build/worker/shim.mjs").exists());
    let _ = std::fs::remove_dir_all(&copy);
}
