//! What a rehearsal looked like, second by second, and its broadcast report: the origins'
//! operations listeners and harbour's data points (from the workerd's recorder) are read every
//! second during the load, with the code the live view uses (`harbour_ops::collect`); after it,
//! the report (one HTML file: the live view's charts and the audit) is written beside the bench's
//! files. With `--live ADDRESS`, `harbour-live` serves the live view of the same stack meanwhile.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use harbour_e2e::process::Process;
use harbour_ops::collect::Collector;
use harbour_ops::live::write_recording;
use harbour_ops::page::report;
use harbour_ops::recording::Audit;
use harbour_ops::target::{Edge, Origin, Target};
use harbour_policy::Policy;

use crate::workerd::Bench;

const FORM: &str = "/api/campaigns/spring-launch";

fn now_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The bench's stack as the operations tools see it: its origins and its recorder.
fn target(bench: &Bench) -> Target {
    let origins = bench.origins.lock().unwrap();
    Target {
        name: "the bench (workerd serve, local origins)".into(),
        local: true,
        origins: origins
            .iter()
            .map(|slot| Origin {
                region: slot.launch.region.clone(),
                url: format!("http://127.0.0.1:{}", slot.launch.port),
                ops: format!("http://127.0.0.1:{}", slot.launch.ops_port),
                key: None,
                key_from: String::new(),
            })
            .collect(),
        edge: Edge::Recorder(format!("http://127.0.0.1:{}", bench.recorder_port)),
    }
}

/// The same, as a target file for `harbour-live`.
fn target_file(target: &Target) -> String {
    let mut text = format!("name = {:?}\n", target.name);
    for o in &target.origins {
        text.push_str(&format!(
            "[[origin]]\nregion = {:?}\nurl = {:?}\nops = {:?}\n",
            o.region, o.url, o.ops
        ));
    }
    if let Edge::Recorder(url) = &target.edge {
        text.push_str(&format!("[edge]\nrecorder = {url:?}\n"));
    }
    text
}

/// A rehearsal being watched.
pub struct Watch {
    stop: Arc<AtomicBool>,
    reading: JoinHandle<Collector>,
    live: Option<Process>,
}

impl Watch {
    /// Starts reading the stack every second (and `harbour-live` on `live`, if given) for a
    /// rehearsal of `duration_s` seconds.
    pub fn start(bench: &Bench, title: &str, live: Option<&str>, duration_s: u64) -> Watch {
        let policy = Policy::shipped().unwrap();
        let target = target(bench);
        let live = live.map(|address| start_live(bench, &target, address, title, duration_s));
        let mut collector = Collector::new(&policy, target, None, None, title);
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        let reading = std::thread::spawn(move || {
            while !stopping.load(Ordering::Relaxed) {
                let started = Instant::now();
                collector.poll(now_s(), true);
                std::thread::sleep(Duration::from_secs(1).saturating_sub(started.elapsed()));
            }
            collector
        });
        Watch {
            stop,
            reading,
            live,
        }
    }

    /// After the load: the edge's last seconds flushed, a last reading, the audit added; writes
    /// the report and returns its path.
    pub fn finish(self, bench: &Bench, audit: Audit) -> PathBuf {
        // An isolate hands a second's data points over with its next decision once the second is
        // over: a few form descriptions after the last second of load carry them.
        std::thread::sleep(Duration::from_millis(1_200));
        for _ in 0..3 {
            harbour_e2e::http::request(bench.harbour_port, "GET", FORM, &[], b"");
            std::thread::sleep(Duration::from_millis(100));
        }
        std::thread::sleep(Duration::from_millis(500));
        self.stop.store(true, Ordering::Relaxed);
        let mut collector = self.reading.join().unwrap();
        collector.poll(now_s(), true);
        collector.recording.audit = Some(audit);
        let recording = bench.dir.join("broadcast-recording.json");
        write_recording(&collector, &recording).unwrap();
        let path = bench.dir.join("broadcast-report.html");
        std::fs::write(&path, report(&collector.recording)).unwrap();
        if let Some(mut live) = self.live {
            live.stop();
        }
        path
    }
}

/// `harbour-live` (built beside this program) on `address`, for the bench's stack.
fn start_live(
    bench: &Bench,
    target: &Target,
    address: &str,
    title: &str,
    duration_s: u64,
) -> Process {
    let file = bench.dir.join("live-target.toml");
    std::fs::write(&file, target_file(target)).unwrap();
    let binary = std::env::current_exe()
        .unwrap()
        .with_file_name("harbour-live");
    assert!(
        binary.is_file(),
        "{} is missing: cargo build -p harbour-ops",
        binary.display()
    );
    let mut command = Command::new(binary);
    command
        .args(["--listen", address, "--target"])
        .arg(&file)
        .args(["--title", title, "--for", &(duration_s + 300).to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(bench.dir.join("harbour-live.log")).unwrap());
    let process = Process::spawn("harbour-live", &mut command);
    println!("live view: http://{address}/");
    process
}
