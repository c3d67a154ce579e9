//! The readiness check (`harbour-ready`) against a real origin it probes: a region whose origin
//! is held to two submissions in flight on SQLite cannot carry a peak far above what it stores,
//! and the check says so, says what to change and exits non-zero; the same origin is ready for a
//! small peak. The other regions expect no load, so nothing is sent to them.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

use harbour_e2e::origin::{OriginLaunch, OriginSecrets};
use harbour_e2e::process::{free_port, Process};
use harbour_e2e::project::workspace_root;
use harbour_policy::Policy;

const KEY: &str = "ready-test-eu-0123456789abcdefghijklmnopqrstuvwxyz";

fn ready_binary() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let mut dir = exe.parent().unwrap().to_path_buf();
    if dir.ends_with("deps") {
        dir.pop();
    }
    let binary = dir.join("harbour-ready");
    assert!(
        binary.is_file(),
        "{} is missing: cargo build -p harbour-ops",
        binary.display()
    );
    binary
}

/// The EU origin, at most two submissions in flight, on its own SQLite file (synced: the
/// origin's default).
fn start_origin(dir: &Path) -> (OriginLaunch, Process) {
    let launch = OriginLaunch {
        region: "eu".into(),
        port: free_port(),
        ops_port: free_port(),
        store: dir.join("eu.sqlite").display().to_string(),
        extra: vec!["--max-in-flight".into(), "2".into()],
        secrets: Some(OriginSecrets {
            key: KEY.into(),
            person_key: format!("{KEY}-person"),
        }),
    };
    let process = launch.start(&dir.join("origin.log"));
    (launch, process)
}

/// A target file: the EU origin, and a port nothing listens on for every other region.
fn target_file(dir: &Path, eu: &OriginLaunch) -> PathBuf {
    let policy = Policy::shipped().unwrap();
    let mut text = String::from("name = \"a test origin\"\n");
    for region in &policy.regions {
        let (port, ops) = if region.id == "eu" {
            (eu.port, eu.ops_port)
        } else {
            (free_port(), free_port())
        };
        text.push_str(&format!(
            "[[origin]]\nregion = \"{}\"\nurl = \"http://127.0.0.1:{port}\"\nops = \"http://127.0.0.1:{ops}\"\n",
            region.id
        ));
    }
    let path = dir.join("target.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn broadcasts_file(dir: &Path, visitors_per_second: u64) -> PathBuf {
    let text = format!(
        "campaign = \"spring-launch\"\n[[broadcast]]\nname = \"test spot\"\nstart = \"2027-03-13T20:15:00Z\"\nminutes = 10\nvisitors_per_second = {visitors_per_second}\n[broadcast.countries]\nIT = 0.7\nDE = 0.3\n"
    );
    let path = dir.join(format!("broadcasts-{visitors_per_second}.toml"));
    std::fs::write(&path, text).unwrap();
    path
}

/// Runs the check; its exit status and output.
fn check(target: &Path, broadcasts: &Path) -> (Option<i32>, String) {
    let output = Command::new(ready_binary())
        .arg("--target")
        .arg(target)
        .arg("--broadcasts")
        .arg(broadcasts)
        .args(["--probe-submissions", "400", "--probe-seconds", "3"])
        .env("HARBOUR_KEY_EU", KEY)
        .current_dir(workspace_root())
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.code(), text)
}

#[test]
fn a_peak_beyond_what_a_regions_origins_store_is_not_ready_and_says_what_to_change() {
    let dir = workspace_root().join("target/e2e/ready");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let (eu, _origin) = start_origin(&dir);
    let target = target_file(&dir, &eu);

    let (status, out) = check(&target, &broadcasts_file(&dir, 200_000));
    assert_eq!(status, Some(1), "{out}");
    let eu_line = out
        .lines()
        .find(|l| l.trim_start().starts_with("eu ") && l.contains("200,000/s"))
        .unwrap_or_else(|| panic!("no eu line:\n{out}"));
    assert!(eu_line.contains("NOT READY"), "{eu_line}");
    assert!(
        out.contains("CHANGE: move eu to PostgreSQL"),
        "the change for a SQLite region:\n{out}"
    );
    assert!(out.contains("NOT READY: make the changes above"), "{out}");
    // The regions that expect nothing were not probed: nothing was sent to them.
    assert!(
        out.contains("cn       not measured: no broadcast expects entries here"),
        "{out}"
    );

    let (status, out) = check(&target, &broadcasts_file(&dir, 5));
    assert_eq!(status, Some(0), "a small peak is ready:\n{out}");
    assert!(out.contains("READY: every region's origins carry"), "{out}");
}
