//! `harbour-live`: the broadcast's live view, a page on 127.0.0.1 that plots second by second
//! each region's entries by outcome, the edge's time to answer and breaker openings, and each
//! origin's submissions in flight and turned away. The origins' operations listeners are read
//! every second; the edge's data points from a local recorder or from the Workers Analytics
//! Engine SQL API, with the token in `HARBOUR_AE_TOKEN` (which the page never sees).
//!
//! ```text
//! harbour-live [--listen 127.0.0.1:8790] [--target FILE] [--recorder URL] [--campaign ID]
//!              [--policy FILE] [--record FILE] [--for SECONDS] [--title TEXT]
//! harbour-live --report RECORDING --out REPORT.html
//! ```
//!
//! Without `--target`, the local stack (`scripts/run`). `--record` keeps what it saw in a file
//! (written every few seconds), from which `--report` makes the broadcast report. It stops after
//! `--for` seconds (12 hours unless given), or on Ctrl-C.

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use harbour_ops::collect::Collector;
use harbour_ops::http::bind_loopback;
use harbour_ops::live::{serve, Run};
use harbour_ops::page::report;
use harbour_ops::recording::Recording;
use harbour_ops::target::{self, Edge, AE_TOKEN_VAR};
use harbour_policy::Policy;

const USAGE: &str =
    "usage: harbour-live [--listen 127.0.0.1:PORT] [--target FILE] [--recorder URL] [--campaign ID]
                    [--policy FILE] [--record FILE] [--for SECONDS] [--title TEXT]
       harbour-live --report RECORDING --out REPORT.html";

#[derive(Default)]
struct Args {
    listen: Option<String>,
    target: Option<PathBuf>,
    recorder: Option<String>,
    campaign: Option<String>,
    policy: Option<PathBuf>,
    record: Option<PathBuf>,
    for_s: Option<u64>,
    title: Option<String>,
    report: Option<PathBuf>,
    out: Option<PathBuf>,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args::default();
    let mut given = std::env::args().skip(1);
    while let Some(flag) = given.next() {
        let mut value = || given.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--listen" => args.listen = Some(value()?),
            "--target" => args.target = Some(PathBuf::from(value()?)),
            "--recorder" => args.recorder = Some(value()?.trim_end_matches('/').to_owned()),
            "--campaign" => args.campaign = Some(value()?),
            "--policy" => args.policy = Some(PathBuf::from(value()?)),
            "--record" => args.record = Some(PathBuf::from(value()?)),
            "--for" => args.for_s = Some(value()?.parse().map_err(|_| "--for: whole seconds")?),
            "--title" => args.title = Some(value()?),
            "--report" => args.report = Some(PathBuf::from(value()?)),
            "--out" => args.out = Some(PathBuf::from(value()?)),
            "--help" | "-h" => return Err(String::new()),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(args)
}

fn read(path: &PathBuf) -> Result<String, String> {
    std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))
}

/// `--report`: the broadcast report from a recording.
fn write_report(recording: &PathBuf, out: Option<&PathBuf>) -> Result<(), String> {
    let out = out.ok_or("--report needs --out REPORT.html")?;
    let recording: Recording = serde_json::from_str(&read(recording)?)
        .map_err(|e| format!("{}: not a recording ({e})", recording.display()))?;
    std::fs::write(out, report(&recording)).map_err(|e| format!("{}: {e}", out.display()))?;
    println!("broadcast report: {}", out.display());
    Ok(())
}

fn live(args: &Args) -> Result<(), String> {
    let policy = match &args.policy {
        None => Policy::shipped().map_err(|e| format!("the shipped policy: {e}"))?,
        Some(path) => {
            Policy::parse(&read(path)?).map_err(|e| format!("{}: {e}", path.display()))?
        }
    };
    let mut target = match &args.target {
        None => target::local(&std::env::current_dir().unwrap_or_default(), &policy),
        Some(path) => target::parse(&read(path)?, &policy),
    }
    .map_err(|problems| problems.join("\n"))?;
    if let Some(url) = &args.recorder {
        target.edge = Edge::Recorder(url.clone());
    }
    let token = match target.edge {
        Edge::AnalyticsEngine { .. } => Some(std::env::var(AE_TOKEN_VAR).map_err(|_| {
            format!("{AE_TOKEN_VAR} must hold an API token with Account Analytics Read, to read the edge's data points")
        })?),
        _ => None,
    };
    let listen = args.listen.as_deref().unwrap_or("127.0.0.1:8790");
    let listener = bind_loopback(listen)?;
    let address = listener.local_addr().map_err(|e| e.to_string())?;
    let title = args
        .title
        .clone()
        .unwrap_or_else(|| format!("harbour live view: {}", target.name));
    let edge_every = match target.edge {
        Edge::AnalyticsEngine { .. } => Duration::from_secs(5),
        _ => Duration::from_secs(1),
    };
    let collector = Collector::new(&policy, target, token, args.campaign.clone(), &title);
    println!("live view: http://{address}/");
    let run = Run {
        record: args.record.clone(),
        until: Instant::now() + Duration::from_secs(args.for_s.unwrap_or(12 * 3_600)),
        edge_every,
    };
    let stop = AtomicBool::new(false);
    serve(listener, collector, run, &stop);
    if let Some(file) = &args.record {
        println!("recording: {}", file.display());
    }
    Ok(())
}

fn main() {
    let args = parse_args().unwrap_or_else(|message| {
        eprintln!("{message}\n{USAGE}");
        std::process::exit(2)
    });
    let result = match &args.report {
        Some(recording) => write_report(recording, args.out.as_ref()),
        None => live(&args),
    };
    if let Err(message) = result {
        eprintln!("harbour-live: {message}");
        std::process::exit(1);
    }
}
