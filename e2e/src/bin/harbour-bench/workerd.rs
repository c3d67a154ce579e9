//! The system under test: release reference origins (two per policy region, started with the
//! harness's origin launcher) and one `workerd serve` running harbour beside the plain-JS peer
//! and the pass-through baseline, from a config made with the harness's workerd config builder.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use harbour_contract::env::{key_var, origins_var, FORM_KEY_VAR};
use harbour_core::config::PAGE_ORIGINS_VAR;
use harbour_e2e::origin::{OriginLaunch, OriginSecrets};
use harbour_e2e::policy::regions;
use harbour_e2e::process::{free_port, wait_until, Process};
use harbour_e2e::project::workspace_root;
use harbour_e2e::workerd::{Module, Socket, Worker, WorkerdConfig};

use crate::load::{run_load, Load, Stats};

/// CPU seconds (user + system) a process has used, from /proc.
pub fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after_name = stat.rsplit_once(')').map(|(_, rest)| rest).unwrap_or("");
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let ticks: f64 = fields.get(11).and_then(|v| v.parse().ok()).unwrap_or(0.0)
        + fields.get(12).and_then(|v| v.parse().ok()).unwrap_or(0.0);
    ticks / 100.0
}

/// One origin of the bench: how it is started, and its process while it runs.
pub struct OriginSlot {
    pub launch: OriginLaunch,
    pub process: Option<Process>,
}

impl OriginSlot {
    /// Starts it (again), its log appended in `dir`.
    pub fn start(&mut self, dir: &Path) {
        let log = dir.join(format!(
            "origin-{}-{}.log",
            self.launch.region, self.launch.port
        ));
        self.process = Some(self.launch.start(&log));
    }
}

/// The bench measures the edge; SQLite with an fsync per commit (the origin's default) caps one
/// file near 1,400 rows/s here (`bash scripts/bench --store`), below the rehearsal's rate for one
/// region. NORMAL still survives an origin crash, which is what the fault runs kill; the origin
/// logs a warning.
const ORIGIN_FLAGS: [&str; 2] = ["--durability", "normal"];

pub struct Bench {
    pub dir: PathBuf,
    pub harbour_port: u16,
    /// The plain-JS peer (bench/peer.js) doing harbour's job.
    pub peer_port: u16,
    pub baseline_port: u16,
    /// Another build of the worker (`HARBOUR_BENCH_OTHER`), served beside harbour.
    pub other_port: Option<u16>,
    pub workerd: Process,
    /// The local Analytics Engine recorder's port: harbour's data points (`GET /points`).
    pub recorder_port: u16,
    pub origins: Arc<Mutex<Vec<OriginSlot>>>,
    pub dbs: Vec<(String, PathBuf)>,
    /// The regions' origins and keys, as text bindings every contestant gets.
    pub bindings: Vec<(String, String)>,
}

/// What `start_origins` started: the slots, each region's SQLite file, and the text bindings that
/// point a worker at them.
type Origins = (
    Vec<OriginSlot>,
    Vec<(String, PathBuf)>,
    Vec<(String, String)>,
);

/// Two origins per region sharing the region's SQLite file, started.
fn start_origins(dir: &Path) -> Origins {
    let (mut slots, mut dbs, mut bindings) = (Vec::new(), Vec::new(), Vec::new());
    for region in regions() {
        let key = format!("bench-{region}-0123456789abcdefghijklmnopqrstuvwxyz");
        let db = dir.join(format!("{region}.sqlite"));
        let mut urls = Vec::new();
        for _ in 0..2 {
            let mut slot = OriginSlot {
                launch: OriginLaunch {
                    region: region.clone(),
                    port: free_port(),
                    ops_port: free_port(),
                    store: db.display().to_string(),
                    extra: ORIGIN_FLAGS.map(str::to_owned).to_vec(),
                    secrets: Some(OriginSecrets {
                        key: key.clone(),
                        person_key: format!("{key}-person-key"),
                    }),
                },
                process: None,
            };
            slot.start(dir);
            urls.push(format!("http://127.0.0.1:{}", slot.launch.port));
            slots.push(slot);
        }
        bindings.push((origins_var(&region), urls.join(" ")));
        bindings.push((key_var(&region), key));
        dbs.push((region, db));
    }
    (slots, dbs, bindings)
}

/// HARBOUR_BENCH_OTHER=<dir with shim.mjs and index.wasm>, e.g. an earlier commit's
/// build/worker: copied into `dir/other` and served as a third worker of the same workerd, so a
/// change is measured against its predecessor in the same run rather than in two runs on a
/// shared machine. With HARBOUR_BENCH_OTHER_ANALYTICS=off it is served without the Analytics
/// Engine binding (harbour then counts and writes no data points): given harbour's own build,
/// that measures what the data points cost.
fn other_build(dir: &Path) -> Option<PathBuf> {
    let from = PathBuf::from(std::env::var_os("HARBOUR_BENCH_OTHER")?);
    let to = dir.join("other");
    std::fs::create_dir_all(&to).unwrap();
    for file in ["shim.mjs", "index.wasm"] {
        std::fs::copy(from.join(file), to.join(file))
            .unwrap_or_else(|e| panic!("HARBOUR_BENCH_OTHER: {}: {e}", from.join(file).display()));
    }
    Some(to)
}

/// A loopback socket whose `request.cf` comes from the load generator's `x-bench-cf` header.
fn socket(port: u16) -> Socket {
    Socket {
        port,
        cf_header: Some("x-bench-cf"),
    }
}

pub fn start() -> Bench {
    let dir = workspace_root().join("target/bench");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let (slots, dbs, bindings) = start_origins(&dir);
    let (harbour_port, peer_port, baseline_port) = (free_port(), free_port(), free_port());
    let recorder_port = free_port();
    let baseline = Worker::new(
        "baseline",
        vec![Module::Es(
            "passthrough.js".into(),
            workspace_root().join("bench/passthrough.js"),
        )],
    )
    .texts(&bindings);
    let mut config = WorkerdConfig::new(&dir, &["public", "private", "local", "network"])
        .record_analytics(recorder_port)
        .serve(
            contestant("harbour", Contestant::Harbour, &bindings),
            socket(harbour_port),
        )
        .serve(
            contestant("peer", Contestant::Peer, &bindings),
            socket(peer_port),
        )
        .serve(baseline, socket(baseline_port));
    let other = other_build(&dir).map(|build| (free_port(), build));
    if let Some((port, build)) = &other {
        let analytics = std::env::var("HARBOUR_BENCH_OTHER_ANALYTICS").as_deref() != Ok("off");
        let build = Contestant::Build {
            dir: build.clone(),
            analytics,
        };
        let worker = contestant("other", build, &bindings);
        config = config.serve(worker, socket(*port));
    }
    let workerd = serve(&dir, &config, harbour_port);
    use_challenges(harbour_port, peer_port);
    Bench {
        dir,
        harbour_port,
        peer_port,
        baseline_port,
        other_port: other.map(|(port, _)| port),
        workerd,
        recorder_port,
        origins: Arc::new(Mutex::new(slots)),
        dbs,
        bindings,
    }
}

/// Starts workerd on `config`, its log in `dir`, and waits until harbour answers.
fn serve(dir: &Path, config: &WorkerdConfig, harbour_port: u16) -> Process {
    let mut command = config.command("workerd.capnp");
    // For profiling with the V8 inspector (Chrome DevTools or a CDP client).
    if let Some(address) = std::env::var_os("HARBOUR_BENCH_INSPECTOR") {
        command.arg("--inspector-addr").arg(address);
    }
    let log = std::fs::File::create(dir.join("workerd.log")).unwrap();
    command.stdout(log.try_clone().unwrap()).stderr(log);
    let workerd = Process::spawn("workerd", &mut command);
    wait_until("workerd", Duration::from_secs(30), || {
        harbour_e2e::http::responds(harbour_port, FORM)
    });
    workerd
}

const FORM: &str = "/api/campaigns/spring-launch";

/// The challenges the load answers: harbour's (also the default for the pass-through and the
/// origin floor, which check nothing) and the peer's, which hands out challenges of its own and
/// checks them with its own code.
fn use_challenges(harbour_port: u16, peer_port: u16) {
    let description = harbour_e2e::http::request(harbour_port, "GET", FORM, &[], b"").json();
    crate::mix::use_description(None, &description);
    crate::mix::use_description(Some(harbour_port), &description);
    let peer_description = harbour_e2e::http::request(peer_port, "GET", FORM, &[], b"").json();
    crate::mix::use_description(Some(peer_port), &peer_description);
}

/// A worker that does the whole job, as the bench serves it.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum Contestant {
    /// The release build with bench/policy.json (scripts/bench).
    Harbour,
    /// bench/peer.js with bench/policy.json as a JSON module.
    Peer,
    /// Another build of harbour, from `dir`; with the Analytics Engine binding or without.
    Build { dir: PathBuf, analytics: bool },
}

/// `contestant` as the worker `name`, with the form key, the rate-limiting bindings and the
/// regions' origins and keys.
pub fn contestant(name: &str, contestant: Contestant, bindings: &[(String, String)]) -> Worker {
    let root = workspace_root();
    // harbour's builds write their data points to the recorder: the bench's figures include
    // what writing them costs (an earlier build that writes none ignores the binding).
    let worker = match contestant {
        Contestant::Harbour => {
            Worker::build(name, &root.join("target/bench-worker/worker")).with_analytics()
        }
        Contestant::Build {
            dir,
            analytics: true,
        } => Worker::build(name, &dir).with_analytics(),
        Contestant::Build {
            dir,
            analytics: false,
        } => Worker::build(name, &dir),
        Contestant::Peer => Worker::new(
            name,
            vec![
                Module::Es("peer.js".into(), root.join("bench/peer.js")),
                Module::Json("policy.json".into(), root.join("bench/policy.json")),
            ],
        ),
    };
    worker
        .text(FORM_KEY_VAR, FORM_KEY)
        .text(PAGE_ORIGINS_VAR, PAGE_ORIGIN)
        .with_rate_limits()
        .texts(bindings)
}

/// A page on this machine allowed to submit across origins (the parity's CORS cases).
pub const PAGE_ORIGIN: &str = "http://localhost:8787";

pub const FORM_KEY: &str = "bench-form-key-0123456789abcdefghijklmnopqrstuvwxyz";

pub fn measure(bench: &Bench, load: &Load) -> (Stats, f64) {
    let pid = bench.workerd.pid();
    let before = cpu_seconds(pid);
    let stats = run_load(load);
    let cpu = cpu_seconds(pid) - before;
    (stats, cpu)
}
