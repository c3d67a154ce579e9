//! `harbour-ready`: is each region ready for the broadcasts? Reads the policy and the campaign
//! team's broadcasts file, measures each region's origins with a short, bounded probe (the local
//! stack by default; another deployment only when a target file names it), and prints, per
//! broadcast and region, the expected submissions a second, the limits in force, the capacity
//! measured and a verdict with what to change.
//!
//! ```text
//! harbour-ready [--broadcasts policy/broadcasts.toml] [--policy FILE] [--target FILE]
//!               [--probe-submissions 2000] [--probe-seconds 5] [--concurrency 32] [--no-probe]
//! ```
//!
//! Exit status: 0 ready, 1 not ready (or not measured), 2 a file or an argument is wrong.

use std::path::PathBuf;
use std::time::Duration;

use harbour_ops::broadcast;
use harbour_ops::http::Client;
use harbour_ops::probe::{self, Bounds, Measured, PROBE_CAMPAIGN};
use harbour_ops::readiness::{check, render_check, render_measured, HEADROOM};
use harbour_ops::target::{self, Target};
use harbour_policy::Policy;

const NOT_PROBED: &str = "no broadcast expects entries here, so nothing was sent";

const USAGE: &str = "usage: harbour-ready [--broadcasts FILE] [--policy FILE] [--target FILE]
                     [--probe-submissions N] [--probe-seconds S] [--concurrency N] [--no-probe]";

struct Args {
    broadcasts: PathBuf,
    policy: Option<PathBuf>,
    target: Option<PathBuf>,
    bounds: Bounds,
    probe: bool,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        broadcasts: PathBuf::from("policy/broadcasts.toml"),
        policy: None,
        target: None,
        bounds: Bounds::default(),
        probe: true,
    };
    let mut given = std::env::args().skip(1);
    while let Some(flag) = given.next() {
        let mut value = || given.next().ok_or(format!("{flag} needs a value"));
        let number = |text: String| {
            text.parse::<f64>()
                .ok()
                .filter(|n| n.is_finite() && *n > 0.0)
                .ok_or(format!("{flag}: a number above 0"))
        };
        match flag.as_str() {
            "--broadcasts" => args.broadcasts = PathBuf::from(value()?),
            "--policy" => args.policy = Some(PathBuf::from(value()?)),
            "--target" => args.target = Some(PathBuf::from(value()?)),
            "--probe-submissions" => args.bounds.max_submissions = number(value()?)? as u64,
            "--probe-seconds" => args.bounds.max_seconds = number(value()?)?.min(60.0),
            "--concurrency" => args.bounds.concurrency = (number(value()?)? as usize).min(256),
            "--no-probe" => args.probe = false,
            "--help" | "-h" => return Err(String::new()),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(args)
}

fn read(path: &PathBuf) -> Result<String, Vec<String>> {
    std::fs::read_to_string(path).map_err(|e| vec![format!("{}: {e}", path.display())])
}

/// Each problem, naming the file it is in.
fn at(path: &std::path::Path, problems: Vec<String>) -> Vec<String> {
    problems
        .into_iter()
        .map(|p| format!("{}: {p}", path.display()))
        .collect()
}

fn load(args: &Args) -> Result<(Policy, broadcast::Broadcasts, Target), Vec<String>> {
    let policy = match &args.policy {
        None => Policy::shipped().map_err(|e| vec![format!("the shipped policy: {e}")])?,
        Some(path) => {
            Policy::parse(&read(path)?).map_err(|e| vec![format!("{}: {e}", path.display())])?
        }
    };
    let broadcasts =
        broadcast::parse(&read(&args.broadcasts)?, &policy).map_err(|p| at(&args.broadcasts, p))?;
    let target = match &args.target {
        None => target::local(&std::env::current_dir().unwrap_or_default(), &policy)?,
        Some(path) => target::parse(&read(path)?, &policy).map_err(|p| at(path, p))?,
    };
    Ok((policy, broadcasts, target))
}

/// Probes the regions some broadcast expects entries in; nothing is sent to the others.
fn measure(
    policy: &Policy,
    broadcasts: &broadcast::Broadcasts,
    target: &Target,
    bounds: Bounds,
) -> Vec<Measured> {
    let client = Client::new(Duration::from_secs(5), bounds.concurrency);
    let expects = |region: &str| {
        broadcasts
            .broadcasts
            .iter()
            .any(|b| b.expected.iter().any(|(r, n)| r == region && *n > 0.0))
    };
    target
        .regions(policy)
        .into_iter()
        .map(|(region, origins)| {
            if expects(region) {
                probe::measure(&client, region, &origins, bounds)
            } else {
                Measured {
                    region: region.to_owned(),
                    origins: origins.len(),
                    problem: Some(NOT_PROBED.into()),
                    ..Measured::default()
                }
            }
        })
        .collect()
}

fn main() {
    let args = parse_args().unwrap_or_else(|message| {
        eprintln!("{message}\n{USAGE}");
        std::process::exit(2)
    });
    let (policy, broadcasts, target) = load(&args).unwrap_or_else(|problems| {
        for problem in problems {
            eprintln!("harbour-ready: {problem}");
        }
        std::process::exit(2)
    });
    println!(
        "harbour readiness check: campaign \"{}\", {} broadcast(s) from {}; target: {}",
        broadcasts.campaign,
        broadcasts.broadcasts.len(),
        args.broadcasts.display(),
        target.name
    );
    let measured = if args.probe {
        let b = args.bounds;
        println!(
            "\nEach region's origins, probed: at most {} submissions or {} s per region, {} at a time, stored under the campaign \"{PROBE_CAMPAIGN}\"",
            b.max_submissions, b.max_seconds, b.concurrency
        );
        let measured = measure(&policy, &broadcasts, &target, b);
        print!("{}", render_measured(&measured));
        measured
    } else {
        println!("\nThe origins were not probed (--no-probe): no capacity is known.");
        Vec::new()
    };
    let Some(campaign) = policy.campaign(&broadcasts.campaign) else {
        std::process::exit(2)
    };
    let mut ready = true;
    for broadcast in &broadcasts.broadcasts {
        let checked = check(&policy, campaign, broadcast, &measured);
        ready &= checked.ready();
        println!("\n{}", render_check(&checked));
    }
    if ready {
        println!(
            "READY: every region's origins carry its expected peak with {:.0} % to spare, and the limits in force let the audience in.",
            (HEADROOM - 1.0) * 100.0
        );
    } else {
        println!("NOT READY: make the changes above, then run the check again.");
    }
    std::process::exit(if ready { 0 } else { 1 });
}
