//! Origin faults injected while a rehearsal runs.

use std::time::Duration;

use crate::workerd::Bench;

/// The region whose origins the faults hit: the audit allows origin trouble for it alone.
pub const FAULTED: &str = "eu";

/// While load runs, in five equal steps: kill the EU primary; kill the EU secondary too; restart
/// both; stall the EU primary (it accepts and never answers); restore it.
pub fn inject_faults(bench: &Bench, duration_s: u64) -> std::thread::JoinHandle<()> {
    let origins = bench.origins.clone();
    let dir = bench.dir.clone();
    let step = Duration::from_secs_f64(duration_s as f64 / 5.0);
    std::thread::spawn(move || {
        let (primary, secondary) = {
            let o = origins.lock().unwrap();
            let eu: Vec<usize> = o
                .iter()
                .enumerate()
                .filter(|(_, s)| s.launch.region == FAULTED)
                .map(|(i, _)| i)
                .collect();
            (eu[0], eu[1])
        };
        let at = |k: f64| println!("  t+{:.0}s:", k * step.as_secs_f64());
        let kill = |i: usize| {
            if let Some(mut p) = origins.lock().unwrap()[i].process.take() {
                p.kill_hard();
            }
        };
        std::thread::sleep(step);
        at(1.0);
        println!("    EU primary killed");
        kill(primary);
        std::thread::sleep(step);
        at(2.0);
        println!("    EU secondary killed: the region has no origin");
        kill(secondary);
        std::thread::sleep(step);
        at(3.0);
        println!("    EU origins restarted");
        {
            let mut o = origins.lock().unwrap();
            o[primary].start(&dir);
            o[secondary].start(&dir);
        }
        std::thread::sleep(step);
        at(4.0);
        println!("    EU primary stalled (accepts, never answers)");
        kill(primary);
        let port = origins.lock().unwrap()[primary].launch.port;
        let hole = harbour_e2e::proxy::Blackhole::bind(port);
        std::thread::sleep(step);
        drop(hole);
        println!("    EU primary restored");
        origins.lock().unwrap()[primary].start(&dir);
    })
}
