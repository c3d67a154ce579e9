//! The system under test: release reference origins (two per policy region, started with the
//! harness's origin launcher, at the store's default durability), each region's two sharing one
//! store (a SQLite file, or a database of a throwaway PostgreSQL cluster), and one `workerd serve`
//! running harbour beside the plain-JS peer and the pass-through baseline, from a config made
//! with the harness's workerd config builder; for the rehearsal, more `workerd serve` processes
//! running harbour alone (the platform runs many isolates; one workerd here saturates one core).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use harbour_contract::env::{key_var, origins_var, FORM_KEY_VAR};
use harbour_core::config::PAGE_ORIGINS_VAR;
use harbour_e2e::origin::{OriginLaunch, OriginSecrets};
use harbour_e2e::pg::PgCluster;
use harbour_e2e::policy::regions;
use harbour_e2e::process::{free_port, wait_until, Process};
use harbour_e2e::project::workspace_root;
use harbour_e2e::rows::RegionStore;
use harbour_e2e::workerd::{Module, Socket, Worker, WorkerdConfig};

use crate::load::{run_load, Load, Stats};

/// The fields of /proc/<pid>/stat after the command name (the 3rd field of the file is the
/// first here); empty when the process is gone.
fn stat_fields(pid: u32) -> Vec<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after_name = stat.rsplit_once(')').map(|(_, rest)| rest).unwrap_or("");
    after_name.split_whitespace().map(str::to_owned).collect()
}

/// Linux's `USER_HZ`: the unit of the times in /proc/<pid>/stat.
const TICKS_PER_S: f64 = 100.0;

/// The sum of `stat`'s fields at `indices` (after the name), in seconds.
fn ticks(fields: &[String], indices: &[usize]) -> f64 {
    indices
        .iter()
        .filter_map(|&i| fields.get(i).and_then(|v| v.parse::<f64>().ok()))
        .sum::<f64>()
        / TICKS_PER_S
}

/// CPU seconds (user + system) a process has used, from /proc.
pub fn cpu_seconds(pid: u32) -> f64 {
    ticks(&stat_fields(pid), &[11, 12])
}

/// CPU seconds of a process and its children, alive or ended (a server that forks a process per
/// connection, as PostgreSQL does): its own time, its ended children's (`cutime`, `cstime`) and
/// its live children's.
pub fn tree_cpu_seconds(pid: u32) -> f64 {
    let own = ticks(&stat_fields(pid), &[11, 12, 13, 14]);
    let children: f64 = std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .map(stat_fields)
        .filter(|fields| fields.get(1).and_then(|p| p.parse::<u32>().ok()) == Some(pid))
        .map(|fields| ticks(&fields, &[11, 12, 13, 14]))
        .sum();
    own + children
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

/// How the system under test is laid out.
#[derive(Clone, Copy, Debug)]
pub struct Setup {
    /// `workerd serve` processes running harbour (the first also serves the peer and baseline).
    pub edges: usize,
    pub postgres: bool,
}

/// A `workerd serve` process running harbour alone, beside the first.
pub struct Edge {
    pub port: u16,
    pub workerd: Process,
}

pub struct Bench {
    pub dir: PathBuf,
    /// The first workerd's harbour.
    pub harbour_port: u16,
    /// The plain-JS peer (bench/peer.js) doing harbour's job.
    pub peer_port: u16,
    pub baseline_port: u16,
    /// Another build of the worker, or another version of the peer (`HARBOUR_BENCH_OTHER`),
    /// served beside harbour.
    pub other_port: Option<u16>,
    pub workerd: Process,
    /// The rehearsal's further edges (`Setup::edges` − 1).
    pub edges: Vec<Edge>,
    /// The local Analytics Engine recorder's port: harbour's data points (`GET /points`).
    pub recorder_port: u16,
    pub origins: Arc<Mutex<Vec<OriginSlot>>>,
    pub dbs: Vec<(String, RegionStore)>,
    /// The regions' origins and keys, as text bindings every contestant gets.
    pub bindings: Vec<(String, String)>,
    /// The PostgreSQL cluster the stores are in, if they are; declared last, so it is destroyed
    /// after the origins have stopped.
    pub postgres: Option<PgCluster>,
}

impl Bench {
    /// Every harbour the load may send to: the first workerd's, then each further edge's.
    pub fn harbour_ports(&self) -> Vec<u16> {
        std::iter::once(self.harbour_port)
            .chain(self.edges.iter().map(|e| e.port))
            .collect()
    }

    /// Each workerd process: its name and pid.
    pub fn workerd_pids(&self) -> Vec<(String, u32)> {
        std::iter::once(("workerd 1".to_owned(), self.workerd.pid()))
            .chain(
                self.edges
                    .iter()
                    .enumerate()
                    .map(|(i, e)| (format!("workerd {}", i + 2), e.workerd.pid())),
            )
            .collect()
    }

    /// The PostgreSQL server's (postmaster's) pid, if the stores are in one.
    pub fn postgres_pid(&self) -> Option<u32> {
        let cluster = std::fs::read_to_string(self.postgres.as_ref()?.dir.join("cluster")).ok()?;
        let pid_file = Path::new(cluster.trim()).join("data/postmaster.pid");
        std::fs::read_to_string(pid_file)
            .ok()?
            .lines()
            .next()?
            .trim()
            .parse()
            .ok()
    }
}

/// What `start_origins` started: the slots, each region's store, and the text bindings that
/// point a worker at them.
type Origins = (
    Vec<OriginSlot>,
    Vec<(String, RegionStore)>,
    Vec<(String, String)>,
);

/// Two origins per region sharing the region's store (a SQLite file in `dir`, or a database of
/// `postgres`), started with the store's defaults: SQLite syncs every commit
/// (`synchronous=FULL`), as a campaign's origins do.
fn start_origins(dir: &Path, postgres: Option<&PgCluster>) -> Origins {
    let (mut slots, mut dbs, mut bindings) = (Vec::new(), Vec::new(), Vec::new());
    for region in regions() {
        let key = format!("bench-{region}-0123456789abcdefghijklmnopqrstuvwxyz");
        let db = match postgres {
            Some(cluster) => RegionStore::Postgres(cluster.database(&region)),
            None => RegionStore::Sqlite(dir.join(format!("{region}.sqlite"))),
        };
        let mut urls = Vec::new();
        for _ in 0..2 {
            let mut slot = OriginSlot {
                launch: OriginLaunch {
                    region: region.clone(),
                    port: free_port(),
                    ops_port: free_port(),
                    store: db.argument(),
                    extra: Vec::new(),
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
/// build/worker, or <a .js file>, another version of bench/peer.js: copied into `dir/other` and
/// served as another worker of the same workerd, so a change is measured against its
/// predecessor in the same run rather than in two runs on a shared machine. With
/// HARBOUR_BENCH_OTHER_ANALYTICS=off a build is served without the Analytics Engine binding
/// (harbour then counts and writes no data points): given harbour's own build, that measures
/// what the data points cost.
fn other_build(dir: &Path) -> Option<Contestant> {
    let from = PathBuf::from(std::env::var_os("HARBOUR_BENCH_OTHER")?);
    let to = dir.join("other");
    std::fs::create_dir_all(&to).unwrap();
    if from.extension().is_some_and(|e| e == "js") {
        let copy = to.join("peer.js");
        std::fs::copy(&from, &copy)
            .unwrap_or_else(|e| panic!("HARBOUR_BENCH_OTHER: {}: {e}", from.display()));
        return Some(Contestant::PeerFile(copy));
    }
    for file in ["shim.mjs", "index.wasm"] {
        std::fs::copy(from.join(file), to.join(file))
            .unwrap_or_else(|e| panic!("HARBOUR_BENCH_OTHER: {}: {e}", from.join(file).display()));
    }
    let analytics = std::env::var("HARBOUR_BENCH_OTHER_ANALYTICS").as_deref() != Ok("off");
    Some(Contestant::Build { dir: to, analytics })
}

/// `HARBOUR_BENCH_V8_FLAGS="--trace-gc ..."`: V8 flags for the bench's workerds, for diagnosis
/// (`--trace-gc` logs each collection and its pause to `target/bench/workerd*.log`).
fn v8_flags() -> Vec<String> {
    std::env::var("HARBOUR_BENCH_V8_FLAGS")
        .map(|flags| flags.split_whitespace().map(str::to_owned).collect())
        .unwrap_or_default()
}

/// A loopback socket whose `request.cf` comes from the load generator's `x-bench-cf` header.
fn socket(port: u16) -> Socket {
    Socket {
        port,
        cf_header: Some("x-bench-cf"),
    }
}

pub fn start(setup: Setup) -> Bench {
    let dir = workspace_root().join("target/bench");
    if dir.join("pg").exists() {
        // A cluster an interrupted run left behind: stopped and removed before its directory.
        let _ = std::process::Command::new("bash")
            .arg(workspace_root().join("scripts/pg"))
            .args(["destroy", &dir.join("pg").display().to_string()])
            .status();
    }
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let postgres = setup.postgres.then(|| PgCluster::start(&dir.join("pg")));
    let (slots, dbs, bindings) = start_origins(&dir, postgres.as_ref());
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
        .v8_flags(v8_flags())
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
        let worker = contestant("other", build.clone(), &bindings);
        config = config.serve(worker, socket(*port));
    }
    let workerd = serve(&dir, &config, "workerd", harbour_port);
    let edges = (2..=setup.edges.max(1))
        .map(|i| {
            let port = free_port();
            // The same build without the Analytics Engine binding: the recorder listens in the
            // first workerd only, so the live view's edge figures are the first edge's.
            let harbour = Contestant::Build {
                dir: workspace_root().join("target/bench-worker/worker"),
                analytics: false,
            };
            let config = WorkerdConfig::new(&dir, &["public", "private", "local", "network"])
                .v8_flags(v8_flags())
                .serve(contestant("harbour", harbour, &bindings), socket(port));
            Edge {
                port,
                workerd: serve(&dir, &config, &format!("workerd-{i}"), port),
            }
        })
        .collect();
    use_challenges(
        harbour_port,
        peer_port,
        other.as_ref().map(|(port, _)| *port),
    );
    Bench {
        dir,
        harbour_port,
        peer_port,
        baseline_port,
        other_port: other.map(|(port, _)| port),
        workerd,
        edges,
        recorder_port,
        origins: Arc::new(Mutex::new(slots)),
        dbs,
        bindings,
        postgres,
    }
}

/// Starts workerd on `config` (written to `name`.capnp, its log to `name`.log in `dir`) and waits
/// until harbour on `harbour_port` answers.
fn serve(dir: &Path, config: &WorkerdConfig, name: &str, harbour_port: u16) -> Process {
    let mut command = config.command(&format!("{name}.capnp"));
    // For profiling with the V8 inspector (Chrome DevTools or a CDP client).
    if let Some(address) = std::env::var_os("HARBOUR_BENCH_INSPECTOR") {
        command.arg("--inspector-addr").arg(address);
    }
    let log = std::fs::File::create(dir.join(format!("{name}.log"))).unwrap();
    command.stdout(log.try_clone().unwrap()).stderr(log);
    let workerd = Process::spawn("workerd", &mut command);
    wait_until("workerd", Duration::from_secs(30), || {
        harbour_e2e::http::responds(harbour_port, FORM)
    });
    workerd
}

const FORM: &str = "/api/campaigns/spring-launch";

/// The challenges the load answers: harbour's (also the default for the pass-through and the
/// origin floor, which check nothing) and the peer's (and the other worker's), which hand out
/// challenges of their own and check them with their own code.
fn use_challenges(harbour_port: u16, peer_port: u16, other_port: Option<u16>) {
    let description = harbour_e2e::http::request(harbour_port, "GET", FORM, &[], b"").json();
    crate::mix::use_description(None, &description);
    crate::mix::use_description(Some(harbour_port), &description);
    for port in std::iter::once(peer_port).chain(other_port) {
        let description = harbour_e2e::http::request(port, "GET", FORM, &[], b"").json();
        crate::mix::use_description(Some(port), &description);
    }
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
    /// Another version of the peer, from this file, with bench/policy.json.
    PeerFile(PathBuf),
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
        Contestant::Peer => peer(name, root.join("bench/peer.js")),
        Contestant::PeerFile(file) => peer(name, file),
    };
    worker
        .text(FORM_KEY_VAR, FORM_KEY)
        .text(PAGE_ORIGINS_VAR, PAGE_ORIGIN)
        .with_rate_limits()
        .texts(bindings)
}

/// A version of the peer, as the worker `name`.
fn peer(name: &str, file: PathBuf) -> Worker {
    let root = workspace_root();
    Worker::new(
        name,
        vec![
            Module::Es("peer.js".into(), file),
            Module::Json("policy.json".into(), root.join("bench/policy.json")),
        ],
    )
}

/// A page on this machine allowed to submit across origins (the parity's CORS cases).
pub const PAGE_ORIGIN: &str = "http://localhost:8787";

pub const FORM_KEY: &str = "bench-form-key-0123456789abcdefghijklmnopqrstuvwxyz";

/// Runs `load`; its answers and the CPU seconds the workerd processes used meanwhile.
pub fn measure(bench: &Bench, load: &Load) -> (Stats, f64) {
    let pids: Vec<u32> = bench.workerd_pids().iter().map(|(_, pid)| *pid).collect();
    let used = || pids.iter().map(|pid| cpu_seconds(*pid)).sum::<f64>();
    let before = used();
    let stats = run_load(load);
    let cpu = used() - before;
    (stats, cpu)
}
