//! Cold start in workerd: from `workerd serve` starting to the first answered request (a form
//! description), each contestant in a workerd of its own, started several times in alternation.
//! The origins need not run: a form description calls none.

use std::process::Stdio;
use std::time::{Duration, Instant};

use harbour_e2e::process::{free_port, Process};
use harbour_e2e::workerd::{Socket, WorkerdConfig};

use crate::workerd::{contestant, Bench, Contestant};

/// Milliseconds from spawning a workerd serving only `which` to its first 200.
fn once(bench: &Bench, which: Contestant) -> f64 {
    let port = free_port();
    let worker = contestant("w", which.clone(), &bench.bindings);
    let socket = Socket {
        port,
        cf_header: None,
    };
    // Every contestant beside the same recorder, whether it writes data points or not.
    let mut command = WorkerdConfig::new(&bench.dir, &["local"])
        .serve(worker, socket)
        .record_analytics(free_port())
        .command(&format!("cold-{which:?}.capnp"));
    command.stdout(Stdio::null()).stderr(Stdio::null());
    let probe = "GET /api/campaigns/spring-launch HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n";
    let started = Instant::now();
    let process = Process::spawn("workerd (cold start)", &mut command);
    let deadline = started + Duration::from_secs(30);
    loop {
        if harbour_e2e::http::raw(port, probe.as_bytes()).is_ok_and(|r| r.status == 200) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{which:?}: no answer within 30 s"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    let elapsed = started.elapsed().as_secs_f64() * 1e3;
    drop(process);
    elapsed
}

/// Prints the medians of `samples` alternating starts per contestant and the ratio.
pub fn measure(bench: &Bench, samples: usize) {
    let mut times = [Vec::new(), Vec::new()];
    for i in 0..samples {
        let order = if i % 2 == 0 { [0, 1] } else { [1, 0] };
        for which in order {
            let contestant = [Contestant::Harbour, Contestant::Peer][which].clone();
            times[which].push(once(bench, contestant));
        }
    }
    for t in &mut times {
        t.sort_by(f64::total_cmp);
    }
    let (h, p) = (times[0][samples / 2], times[1][samples / 2]);
    println!(
        "cold start in workerd: serve started to first answer (median of {samples} starts each, alternating)\n  harbour {h:7.1} ms   peer {p:7.1} ms   harbour/peer {:.2}   (harbour {:?}, peer {:?})",
        h / p,
        times[0].iter().map(|t| t.round() as u64).collect::<Vec<_>>(),
        times[1].iter().map(|t| t.round() as u64).collect::<Vec<_>>()
    );
}
