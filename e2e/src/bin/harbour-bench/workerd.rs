//! The system under test: release reference origins (two per policy region) and one
//! `workerd serve` running harbour beside the pass-through baseline, from a config written here.

use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use harbour_contract::env::{key_var, origins_var};
use harbour_e2e::{
    free_port, person_key_var, regions, wait_until, workerd_ratelimits, workspace_root, Process,
};

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

pub struct OriginSlot {
    pub region: String,
    pub port: u16,
    /// Its operations listener (`/health`, `/v1/count`, `/v1/load`).
    pub ops_port: u16,
    pub key: String,
    pub db: PathBuf,
    /// More arguments for the origin, e.g. `--max-in-flight 2`.
    pub extra: Vec<String>,
    pub process: Option<Process>,
}

pub fn spawn_origin(dir: &std::path::Path, slot: &mut OriginSlot) {
    let origin_bin = std::env::var_os("HARBOUR_ORIGIN_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target/release/harbour-origin"));
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join(format!("origin-{}-{}.log", slot.region, slot.port)))
        .unwrap();
    let mut command = Command::new(origin_bin);
    command
        .args([
            "--region",
            &slot.region,
            "--listen",
            &format!("127.0.0.1:{}", slot.port),
            // The bench measures the edge; SQLite with an fsync per commit (the origin's
            // default) caps one file near 1,400 rows/s here (`bash scripts/bench --store`), below
            // the rehearsal's rate for one region. NORMAL still survives an origin crash, which
            // is what the fault runs kill; the origin logs a warning.
            "--durability",
            "normal",
            "--db",
        ])
        .arg(&slot.db)
        .args(["--ops-listen", &format!("127.0.0.1:{}", slot.ops_port)])
        .args(&slot.extra)
        .env(key_var(&slot.region), &slot.key)
        .env(
            person_key_var(&slot.region),
            format!("{}-person-key", slot.key),
        )
        .stdout(Stdio::null())
        .stderr(log);
    slot.process = Some(Process::spawn(
        &format!("origin {}", slot.region),
        &mut command,
    ));
    let port = slot.port;
    wait_until(
        &format!("origin {}", slot.region),
        Duration::from_secs(20),
        || TcpStream::connect(("127.0.0.1", port)).is_ok(),
    );
}

pub struct Bench {
    pub dir: PathBuf,
    pub harbour_port: u16,
    /// The plain-JS peer (bench/peer.js) doing harbour's job.
    pub peer_port: u16,
    pub baseline_port: u16,
    /// Another build of the worker (`HARBOUR_BENCH_OTHER`), served beside harbour.
    pub other_port: Option<u16>,
    pub workerd: Process,
    pub origins: Arc<Mutex<Vec<OriginSlot>>>,
    pub dbs: Vec<(String, PathBuf)>,
    /// The origins' and keys' bindings every contestant gets (workerd config text).
    pub bindings: String,
}

pub fn start() -> Bench {
    let root = workspace_root();
    let dir = root.join("target/bench");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let mut origins = Vec::new();
    let mut bindings = String::new();
    let mut dbs = Vec::new();
    for region in regions() {
        let key = format!("bench-{region}-0123456789abcdefghijklmnopqrstuvwxyz");
        let db = dir.join(format!("{region}.sqlite"));
        let mut ports = Vec::new();
        // Primary and secondary share the region's database.
        for _ in 0..2 {
            let mut slot = OriginSlot {
                region: region.clone(),
                port: free_port(),
                ops_port: free_port(),
                key: key.clone(),
                db: db.clone(),
                extra: Vec::new(),
                process: None,
            };
            spawn_origin(&dir, &mut slot);
            ports.push(format!("http://127.0.0.1:{}", slot.port));
            origins.push(slot);
        }
        bindings.push_str(&format!(
            "(name = \"{}\", text = \"{}\"),\n",
            origins_var(&region),
            ports.join(" ")
        ));
        bindings.push_str(&format!(
            "(name = \"{}\", text = \"{key}\"),\n",
            key_var(&region)
        ));
        dbs.push((region, db));
    }
    let (harbour_port, peer_port, baseline_port) = (free_port(), free_port(), free_port());
    // HARBOUR_BENCH_OTHER=<dir with shim.mjs and index.wasm>, e.g. an earlier commit's
    // build/worker: served as a third worker of the same workerd, so a change is measured against
    // its predecessor in the same run rather than in two runs on a shared machine.
    let other = std::env::var_os("HARBOUR_BENCH_OTHER").map(|from| {
        let from = PathBuf::from(from);
        std::fs::create_dir_all(dir.join("other")).unwrap();
        for file in ["shim.mjs", "index.wasm"] {
            std::fs::copy(from.join(file), dir.join("other").join(file)).unwrap_or_else(|e| {
                panic!("HARBOUR_BENCH_OTHER: {}: {e}", from.join(file).display())
            });
        }
        free_port()
    });
    let (other_service, other_socket, other_worker) = match other {
        Some(port) => (
            "    (name = \"other\", worker = .other),\n".to_owned(),
            format!("    (name = \"other\", address = \"127.0.0.1:{port}\", http = (cfBlobHeader = \"x-bench-cf\"), service = \"other\"),\n"),
            "const other :Workerd.Worker = (\n  modules = [\n    (name = \"shim.mjs\", esModule = embed \"other/shim.mjs\"),\n    (name = \"index.wasm\", wasm = embed \"other/index.wasm\"),\n  ],\n  compatibilityDate = \"2025-09-01\",\n  bindings = [\n    (name = \"HARBOUR_FORM_KEY\", text = \"bench-form-key-0123456789abcdefghijklmnopqrstuvwxyz\"),\n{ratelimits}{bindings}  ],\n  globalOutbound = \"loopback\",\n);\n".to_owned(),
        ),
        None => Default::default(),
    };
    // harbour consults the location's rate-limiting binding for every submission its own limits
    // admit: here wrangler dev's simulation of it, so the cost of the step is measured.
    let (ratelimits, extensions) = workerd_ratelimits(&dir);
    let config = format!(
        r#"using Workerd = import "/workerd/workerd.capnp";
const config :Workerd.Config = (
  services = [
    (name = "harbour", worker = .harbour),
    (name = "peer", worker = .peer),
    (name = "baseline", worker = .baseline),
{other_service}    (name = "loopback", network = (allow = ["public", "private", "local", "network"])),
  ],
  sockets = [
    (name = "harbour", address = "127.0.0.1:{harbour_port}", http = (cfBlobHeader = "x-bench-cf"), service = "harbour"),
    (name = "peer", address = "127.0.0.1:{peer_port}", http = (cfBlobHeader = "x-bench-cf"), service = "peer"),
    (name = "baseline", address = "127.0.0.1:{baseline_port}", http = (cfBlobHeader = "x-bench-cf"), service = "baseline"),
{other_socket}  ],
{extensions});
{harbour_worker}{peer_worker}const baseline :Workerd.Worker = (
  modules = [(name = "passthrough.js", esModule = embed "{baseline}")],
  compatibilityDate = "2025-09-01",
  bindings = [
{bindings}  ],
  globalOutbound = "loopback",
);
{other_worker}"#,
        // capnp `embed` paths are relative to the config file, which sits in target/bench. The
        // worker built with bench/policy.json (scripts/bench).
        harbour_worker = worker_def("harbour", Contestant::Harbour, &ratelimits, &bindings),
        peer_worker = worker_def("peer", Contestant::Peer, &ratelimits, &bindings),
        baseline = "../../bench/passthrough.js",
        other_worker = other_worker
            .replace("{ratelimits}", &ratelimits)
            .replace("{bindings}", &bindings),
    );
    let config_path = dir.join("workerd.capnp");
    std::fs::write(&config_path, config).unwrap();
    let log = std::fs::File::create(dir.join("workerd.log")).unwrap();
    let workerd_bin = root.join("node_modules/@cloudflare/workerd-linux-64/bin/workerd");
    let mut command = Command::new(workerd_bin);
    command.arg("serve").arg(&config_path);
    // For profiling with the V8 inspector (Chrome DevTools or a CDP client).
    if let Some(address) = std::env::var_os("HARBOUR_BENCH_INSPECTOR") {
        command.arg("--inspector-addr").arg(address);
    }
    command.stdout(log.try_clone().unwrap()).stderr(log);
    let workerd = Process::spawn("workerd", &mut command);
    let probe = "GET /api/campaigns/spring-launch HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n";
    wait_until("workerd", Duration::from_secs(30), || {
        harbour_e2e::raw(harbour_port, probe.as_bytes())
            .map(|r| r.status == 200)
            .unwrap_or(false)
    });
    let description = harbour_e2e::raw(harbour_port, probe.as_bytes())
        .unwrap()
        .json();
    crate::mix::use_challenge(None, &description["challenge"]);
    crate::mix::use_challenge(Some(harbour_port), &description["challenge"]);
    // The peer hands out challenges of its own and checks them with its own code.
    let peer_probe =
        "GET /api/campaigns/spring-launch HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n";
    let peer_description = harbour_e2e::raw(peer_port, peer_probe.as_bytes())
        .unwrap()
        .json();
    crate::mix::use_challenge(Some(peer_port), &peer_description["challenge"]);
    Bench {
        dir,
        harbour_port,
        peer_port,
        baseline_port,
        other_port: other,
        workerd,
        origins: Arc::new(Mutex::new(origins)),
        dbs,
        bindings,
    }
}

/// A worker that does the whole job, as the bench serves it.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Contestant {
    /// The release build with bench/policy.json (scripts/bench).
    Harbour,
    /// bench/peer.js with bench/policy.json as a JSON module.
    Peer,
}

/// The workerd definition of `contestant` as the worker `name`, with the form key, the
/// rate-limiting bindings and the regions' origins and keys. Paths are relative to a config file
/// in target/bench (or another directory two levels under the workspace).
pub fn worker_def(name: &str, contestant: Contestant, ratelimits: &str, bindings: &str) -> String {
    let modules = match contestant {
        Contestant::Harbour => "    (name = \"shim.mjs\", esModule = embed \"../bench-worker/worker/shim.mjs\"),\n    (name = \"index.wasm\", wasm = embed \"../bench-worker/worker/index.wasm\"),\n",
        Contestant::Peer => "    (name = \"peer.js\", esModule = embed \"../../bench/peer.js\"),\n    (name = \"policy.json\", json = embed \"../../bench/policy.json\"),\n",
    };
    format!(
        "const {name} :Workerd.Worker = (\n  modules = [\n{modules}  ],\n  compatibilityDate = \"2025-09-01\",\n  bindings = [\n    (name = \"HARBOUR_FORM_KEY\", text = \"{FORM_KEY}\"),\n{ratelimits}{bindings}  ],\n  globalOutbound = \"loopback\",\n);\n"
    )
}

pub const FORM_KEY: &str = "bench-form-key-0123456789abcdefghijklmnopqrstuvwxyz";

pub fn measure(bench: &Bench, load: &Load) -> (Stats, f64) {
    let pid = bench.workerd.pid();
    let before = cpu_seconds(pid);
    let stats = run_load(load);
    let cpu = cpu_seconds(pid) - before;
    (stats, cpu)
}
