//! `harbour-report`: writes `docs/residency.md` from the committed policy (and candidate), or
//! with `--check` fails when the committed file differs from what the policy generates.
//!
//!   cargo run -p harbour-report              (bash scripts/report)
//!   cargo run -p harbour-report -- --check   (bash scripts/test)

use std::path::PathBuf;
use std::process::ExitCode;

use harbour_policy::{check_policies, committed_candidate, LIVE_FILE, SHIPPED_POLICY};
use harbour_report::{render, REPORT_PATH};

fn main() -> ExitCode {
    let check = match std::env::args().nth(1).as_deref() {
        None => false,
        Some("--check") => true,
        Some(other) => {
            eprintln!("unknown argument {other:?}; usage: harbour-report [--check]");
            return ExitCode::from(2);
        }
    };
    let candidate = committed_candidate();
    if let Err(error) = check_policies(LIVE_FILE, SHIPPED_POLICY, candidate.as_deref()) {
        eprintln!("{error}");
        return ExitCode::FAILURE;
    }
    let report = match render(SHIPPED_POLICY, candidate.as_deref()) {
        Ok(report) => report,
        Err(error) => {
            eprintln!("cannot write the residency report: {error}");
            return ExitCode::FAILURE;
        }
    };
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(REPORT_PATH);
    if check {
        let committed = std::fs::read_to_string(&path).unwrap_or_default();
        if committed == report {
            println!("{REPORT_PATH} is current with the policy");
            return ExitCode::SUCCESS;
        }
        let line = committed
            .lines()
            .zip(report.lines())
            .position(|(a, b)| a != b)
            .unwrap_or_else(|| committed.lines().count().min(report.lines().count()));
        eprintln!(
            "{REPORT_PATH} differs from what the policy generates (first at line {}): run \
             `bash scripts/report` and commit the result",
            line + 1
        );
        return ExitCode::FAILURE;
    }
    if let Err(error) = std::fs::write(&path, &report) {
        eprintln!("cannot write {}: {error}", path.display());
        return ExitCode::FAILURE;
    }
    println!("wrote {REPORT_PATH} ({} lines)", report.lines().count());
    ExitCode::SUCCESS
}
