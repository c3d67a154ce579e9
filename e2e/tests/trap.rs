//! Recovery from a WebAssembly trap. A build with the `test-trap` feature (a dev build into
//! `target/trap-worker`, never what `scripts/build` ships) traps on a request for
//! `/api/__test_trap`; it runs under `workerd serve` with the real entry module, one real origin
//! for the region under test, and an origin port per other region that nothing answers.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use harbour_contract::env::FORM_KEY_VAR;
use harbour_e2e::http::{request, Response};
use harbour_e2e::process::{free_port, wait_until, Process};
use harbour_e2e::project::workspace_root;
use harbour_e2e::proof::Prepared;
use harbour_e2e::region::RegionOrigin;
use harbour_e2e::rows::StoredRow;
use harbour_e2e::workerd::{submit_as, Socket, Worker, WorkerdConfig, TEST_CF_HEADER};

const TRAP_PATH: &str = "/api/__test_trap";
const FORM_PATH: &str = "/api/campaigns/spring-launch";
const SUBMIT_PATH: &str = "/api/campaigns/spring-launch/submissions";
/// Submissions come from here; the region they belong to is read from the policy.
const COUNTRY: &str = "IT";

/// Builds the test variant once per test binary and returns its directory.
fn trap_worker() -> &'static Path {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT.get_or_init(|| {
        let root = workspace_root();
        let out = "target/trap-worker";
        let status = Command::new("bash")
            .current_dir(&root)
            .args([
                "-c",
                "source scripts/lib.sh && cd crates/worker && \
                 CUSTOM_SHIM=\"$ROOT/crates/worker/src/shim.js\" \
                 worker-build --dev --out-dir \"$ROOT/$1\" --features test-trap",
                "build",
                out,
            ])
            .stdout(Stdio::null())
            .status()
            .unwrap();
        assert!(status.success(), "building the test-trap worker failed");
        root.join(out).join("worker")
    })
}

/// A port in front of an origin that holds each connection until the test lets it through.
struct Gate {
    port: u16,
    held: Arc<Mutex<Vec<TcpStream>>>,
    behind: u16,
}

impl Gate {
    fn new(behind: u16) -> Gate {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let held = Arc::new(Mutex::new(Vec::new()));
        let queue = held.clone();
        // Ends with the test process; accepts only what the test sends through the worker.
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                queue.lock().unwrap().push(stream);
            }
        });
        Gate { port, held, behind }
    }

    fn waiting(&self) -> usize {
        self.held.lock().unwrap().len()
    }

    /// Lets the oldest held request through to the origin, and its answer back.
    fn release_oldest(&self) {
        let client = self.held.lock().unwrap().remove(0);
        let origin = TcpStream::connect(("127.0.0.1", self.behind)).unwrap();
        for (mut from, mut to) in [
            (client.try_clone().unwrap(), origin.try_clone().unwrap()),
            (origin, client),
        ] {
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut from, &mut to);
                let _ = to.shutdown(std::net::Shutdown::Write);
            });
        }
    }
}

struct Edge {
    port: u16,
    dir: PathBuf,
    origin: RegionOrigin,
    _workerd: Process,
}

impl Edge {
    /// workerd with the test variant. The region of `COUNTRY` has its real origin as secondary,
    /// and as primary the same origin, behind a `Gate` when `gated`.
    fn start(name: &str, gated: bool) -> (Edge, Option<Gate>) {
        let root = workspace_root();
        let build = trap_worker();
        let dir = root.join("target/e2e").join(name);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let origin = RegionOrigin::start(&dir, "trap", COUNTRY);
        let gate = gated.then(|| Gate::new(origin.port));
        let port = free_port();
        let worker = Worker::build("harbour", build)
            .text("HARBOUR_LOG", "decisions")
            .text(
                FORM_KEY_VAR,
                "trap-form-key-0123456789abcdefghijklmnopqrstuvwxyz",
            )
            .with_rate_limits()
            .texts(&origin.bindings(Some(gate.as_ref().map_or(origin.port, |g| g.port))));
        let socket = Socket {
            port,
            cf_header: Some(TEST_CF_HEADER),
        };
        let workerd = WorkerdConfig::new(&dir, &["local"])
            .serve(worker, socket)
            .start("workerd.capnp", &dir.join("workerd.log"), port);
        let edge = Edge {
            port,
            dir,
            origin,
            _workerd: workerd,
        };
        (edge, gate)
    }

    /// A fresh key (or `key`) with its work done: the solve happens before a test waits on
    /// what the submission does, never inside the wait.
    fn prepared(&self, key: Option<&str>) -> Prepared {
        Prepared::fetch(self.port, key)
    }

    /// Entry `n` from its own client, with the key and work of `prepared`.
    fn submit(&self, n: u32, prepared: &Prepared) -> Response {
        let ip = format!("198.51.100.{n}");
        submit_as(self.port, SUBMIT_PATH, COUNTRY, &ip, prepared, &entry(n))
    }

    /// Entry `n` with a fresh key, its work done just before.
    fn submit_new(&self, n: u32) -> Response {
        self.submit(n, &self.prepared(None))
    }

    fn trap(&self) -> Response {
        request(self.port, "GET", TRAP_PATH, &[], b"")
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("workerd.log")).unwrap_or_default()
    }

    fn restarts(&self) -> usize {
        self.log()
            .matches("\"msg\":\"harbour.edge_restarted\"")
            .count()
    }
}

fn entry(n: u32) -> String {
    format!(
        r#"{{"name":"Visitor {n}","email":"visitor{n}@example.org","country":"{COUNTRY}","consent":true}}"#
    )
}

/// The stored row whose fields are entry `n`'s.
fn row_of(edge: &Edge, n: u32) -> Vec<StoredRow> {
    edge.origin
        .rows()
        .into_iter()
        .filter(|r| r.payload["fields"]["email"] == format!("visitor{n}@example.org"))
        .collect()
}

fn assert_accepted(edge: &Edge, reply: &Response, n: u32) {
    assert_eq!(reply.status, 202, "{}", reply.body);
    let rows = row_of(edge, n);
    assert_eq!(rows.len(), 1, "entry {n} stored once");
    assert_eq!(reply.json()["receipt"]["id"], rows[0].receipt_id.as_str());
    assert_eq!(
        reply.json()["receipt"]["region"],
        edge.origin.region.as_str()
    );
}

#[test]
fn after_a_trap_the_next_request_is_answered_normally() {
    let (edge, _) = Edge::start("trap-recovery", false);
    assert_accepted(&edge, &edge.submit_new(1), 1);

    let trapped = edge.trap();
    assert_eq!(trapped.status, 503, "{}", trapped.body);
    assert_eq!(trapped.json()["code"], "edge_restarting");
    assert_eq!(trapped.header("retry-after"), Some("1"));
    assert_eq!(edge.restarts(), 0, "no restart before a request needs one");

    // The next request runs on a new instance: a form description and a full forward.
    let form = request(edge.port, "GET", FORM_PATH, &[], b"");
    assert_eq!(form.status, 200, "{}", form.body);
    assert_eq!(form.json()["id"], "spring-launch");
    assert_accepted(&edge, &edge.submit_new(2), 2);
    assert_accepted(&edge, &edge.submit_new(3), 3);
    assert_eq!(
        edge.restarts(),
        1,
        "one line per new instance:\n{}",
        edge.log()
    );

    // Every trap is recovered from, with one line each.
    assert_eq!(edge.trap().status, 503);
    assert_accepted(&edge, &edge.submit_new(4), 4);
    assert_eq!(edge.restarts(), 2, "{}", edge.log());
    let log = edge.log();
    assert!(log.contains("\"generation\":2"), "{log}");
    assert_eq!(log.matches("\"msg\":\"harbour.edge_failure\"").count(), 2);
}

#[test]
fn a_forward_under_way_across_a_restart_is_answered_with_retry_advice_never_another_ticket() {
    let (edge, gate) = Edge::start("trap-in-flight", true);
    let gate = gate.unwrap();
    // A fresh instance, so the next forward gets its first ticket, as will B after the restart.
    assert_eq!(edge.trap().status, 503);
    assert_eq!(request(edge.port, "GET", FORM_PATH, &[], b"").status, 200);

    let key_a = "entry-a-0123456789abcdef";
    // The work first: each wait below bounds what the edge does, not a solve.
    let (prepared_a, prepared_b) = (edge.prepared(Some(key_a)), edge.prepared(None));
    let edge = Arc::new(edge);
    let a = {
        let (edge, prepared) = (edge.clone(), prepared_a.clone());
        std::thread::spawn(move || edge.submit(10, &prepared))
    };
    wait_until("A at the origin", Duration::from_secs(5), || {
        gate.waiting() == 1
    });
    assert_eq!(edge.trap().status, 503);
    let b = {
        let edge = edge.clone();
        std::thread::spawn(move || edge.submit(11, &prepared_b))
    };
    wait_until("B at the origin", Duration::from_secs(5), || {
        gate.waiting() == 2
    });

    // A's origin stores it and answers; the instance that filed A is gone.
    gate.release_oldest();
    let a = a.join().unwrap();
    assert_eq!(a.status, 503, "{}", a.body);
    assert_eq!(a.json()["code"], "forward_orphaned");
    assert_eq!(a.header("retry-after"), Some("1"));
    assert_eq!(a.header("idempotency-key"), Some(key_a));
    assert_eq!(a.json()["idempotency_key"], key_a);
    assert_eq!(row_of(&edge, 10)[0].idempotency_key, key_a);

    // B, filed by the new instance under the same ticket number, gets its own receipt.
    gate.release_oldest();
    assert_accepted(&edge, &b.join().unwrap(), 11);

    // Retrying A with its key: the stored entry's receipt, and still one row. The retry may
    // reuse a connection the gate already let through, or open one it holds.
    let retried = {
        let edge = edge.clone();
        std::thread::spawn(move || edge.submit(10, &prepared_a))
    };
    wait_until("the retry's answer", Duration::from_secs(5), || {
        if gate.waiting() > 0 {
            gate.release_oldest();
        }
        retried.is_finished()
    });
    let retried = retried.join().unwrap();
    assert_accepted(&edge, &retried, 10);
    assert_eq!(retried.header("idempotent-replayed"), Some("true"));
    assert_eq!(edge.restarts(), 2, "{}", edge.log());
}

#[test]
fn the_shipped_build_cannot_trap_on_request() {
    let shipped = workspace_root().join("build/worker/index.wasm");
    let shipped = std::fs::read(&shipped)
        .unwrap_or_else(|e| panic!("{}: {e} (run bash scripts/build first)", shipped.display()));
    let test_build = std::fs::read(trap_worker().join("index.wasm")).unwrap();
    let has = |wasm: &[u8]| {
        wasm.windows(TRAP_PATH.len())
            .any(|w| w == TRAP_PATH.as_bytes())
    };
    assert!(has(&test_build), "the test build holds the trap path");
    assert!(!has(&shipped), "the shipped build must not");
}
