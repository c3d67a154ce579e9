//! Origin back-pressure under load: the EU origins run with a low bound on submissions in flight
//! while a realistic mix is offered well above what that bound lets through at once, and clients
//! retry 503s with the same key after the advised wait, as the campaign page does.
//!
//! Reported: the most each bounded origin ever had in flight (from its own `/v1/load`; must not
//! exceed the bound) and how many it shed; how often the edge's breakers opened and closed (from
//! workerd's log); how many submissions the edge answered 503 `region_busy` without calling an
//! origin; and the rehearsal's audit (receipts = rows, nothing lost, nothing stored twice,
//! nothing outside its region).

use std::time::Duration;

use crate::audit::{rehearse, Rehearsal};
use crate::workerd::Bench;

/// What an origin reports of its in-flight bound, from its operations listener.
fn load_of(ops_port: u16) -> serde_json::Value {
    let load = harbour_e2e::http::request(ops_port, "GET", "/v1/load", &[], b"");
    assert_eq!(load.status, 200, "/v1/load on :{ops_port}: {}", load.body);
    load.json()
}

pub fn run(bench: &Bench, bound: usize, rate: f64, duration_s: u64) -> bool {
    println!("back-pressure: EU origins at --max-in-flight {bound}");
    let bounded: Vec<(usize, u16, u16)> = {
        let mut origins = bench.origins.lock().unwrap();
        let eu: Vec<usize> = origins
            .iter()
            .enumerate()
            .filter(|(_, o)| o.launch.region == "eu")
            .map(|(i, _)| i)
            .collect();
        for &i in &eu {
            if let Some(mut process) = origins[i].process.take() {
                process.stop();
            }
            let extra = &mut origins[i].launch.extra;
            extra.extend(["--max-in-flight".into(), bound.to_string()]);
            origins[i].start(&bench.dir);
        }
        eu.iter()
            .map(|&i| (i, origins[i].launch.port, origins[i].launch.ops_port))
            .collect()
    };
    let log_before = std::fs::read_to_string(bench.dir.join("workerd.log")).unwrap_or_default();
    let plan = Rehearsal {
        rate,
        duration_s,
        retry: true,
        faulted: None,
        live: None,
    };
    let (audited, stats) = rehearse(bench, &plan);
    // Let the last log lines reach the file.
    std::thread::sleep(Duration::from_millis(500));
    let log = std::fs::read_to_string(bench.dir.join("workerd.log")).unwrap_or_default();
    let new_log = log.get(log_before.len()..).unwrap_or("");
    let breaker = |state: &str| {
        new_log
            .lines()
            .filter(|l| l.contains("\"msg\":\"harbour.breaker\""))
            .filter(|l| l.contains(&format!("\"state\":\"{state}\"")))
            .count()
    };
    let mut within_bound = true;
    for (index, port, ops_port) in &bounded {
        let load = load_of(*ops_port);
        let most = load["max_in_flight_seen"].as_u64().unwrap_or(u64::MAX);
        within_bound &= most <= bound as u64;
        println!(
            "  EU origin {index} (:{port}): bound {}, most in flight {most}, shed {} (answered 503 origin_busy, nothing stored)",
            load["bound"], load["shed"]
        );
    }
    let answered = |label: &str| stats.outcomes.get(label).copied().unwrap_or(0);
    println!(
        "  edge breakers: opened {}, closed {} (workerd log)",
        breaker("open"),
        breaker("closed")
    );
    println!(
        "  503 region_busy, answered at the edge without an origin call: {}; 503 origins_busy, after the region's origins answered busy: {}",
        answered("503 region_busy"),
        answered("503 origins_busy")
    );
    println!(
        "  most in flight within the bound: {}",
        if within_bound { "yes" } else { "NO" }
    );
    audited && within_bound
}
