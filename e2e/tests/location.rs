//! The location's rate-limiting binding failing, under `workerd serve` with the release worker and
//! the real entry module: a binding whose `limit()` throws, and one that never answers. The
//! shipped campaign fails open: submissions are admitted on the isolate's own limits (which still
//! refuse a client over them), a silent binding costs its 500 ms wait and no more, and each
//! isolate says so in one log line, not one per request.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use harbour_contract::env::{key_var, origins_var};
use harbour_core::phase::admission::CONSULT_TIMEOUT_MS;
use harbour_e2e::{
    free_port, origin_binary, person_key_var, read_rows, request, wait_until,
    workerd_ratelimits_over, workspace_root, Process, Response,
};
use harbour_policy::country::Country;
use harbour_policy::Policy;

const SUBMIT_PATH: &str = "/api/campaigns/spring-launch/submissions";
const COUNTRY: &str = "IT";

struct Edge {
    port: u16,
    dir: PathBuf,
    db: PathBuf,
    _processes: Vec<Process>,
}

impl Edge {
    /// workerd with the release worker, whose rate-limiting bindings are made by `binding_js`
    /// (a module whose default export returns the binding object); one real origin for the
    /// region of `COUNTRY`.
    fn start(name: &str, binding_js: &str) -> Edge {
        let root = workspace_root();
        assert!(
            root.join("build/worker/index.wasm").is_file(),
            "build the release worker first (bash scripts/build)"
        );
        let dir = root.join("target/e2e").join(name);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("ratelimit.js"), binding_js).unwrap();
        let policy = Policy::shipped().unwrap();
        let region = policy.region(policy.region_of(Country::parse(COUNTRY).unwrap()));
        let origin_port = free_port();
        let key = format!(
            "location-{}-0123456789abcdefghijklmnopqrstuvwxyz",
            region.id
        );
        let db = dir.join("origin.sqlite");
        let log = std::fs::File::create(dir.join("origin.log")).unwrap();
        let mut command = Command::new(origin_binary());
        command
            .args(["--region", &region.id, "--listen"])
            .arg(format!("127.0.0.1:{origin_port}"))
            .arg("--db")
            .arg(&db)
            .env(key_var(&region.id), &key)
            .env(
                person_key_var(&region.id),
                format!(
                    "location-person-{}-0123456789abcdefghijklmnopqrstuvwxyz",
                    region.id
                ),
            )
            .stdout(Stdio::null())
            .stderr(log);
        let mut processes = vec![Process::spawn("origin", &mut command)];
        wait_until("origin", Duration::from_secs(20), || {
            TcpStream::connect(("127.0.0.1", origin_port)).is_ok()
        });
        let mut bindings = String::new();
        for other in &policy.regions {
            let (origins, secret) = if other.id == region.id {
                (format!("http://127.0.0.1:{origin_port}"), key.clone())
            } else {
                // Never reached: every submission of the test is for the one region.
                (
                    format!("http://127.0.0.1:{}", free_port()),
                    format!("location-{}-0123456789abcdefghijklmnopqrstuvwxyz", other.id),
                )
            };
            bindings.push_str(&format!(
                "    (name = \"{}\", text = \"{origins}\"),\n    (name = \"{}\", text = \"{secret}\"),\n",
                origins_var(&other.id),
                key_var(&other.id)
            ));
        }
        let (ratelimits, extensions) = workerd_ratelimits_over("ratelimit.js");
        let port = free_port();
        let config = format!(
            r#"using Workerd = import "/workerd/workerd.capnp";
const config :Workerd.Config = (
  services = [
    (name = "harbour", worker = .harbour),
    (name = "loopback", network = (allow = ["local"])),
  ],
  sockets = [
    (name = "harbour", address = "127.0.0.1:{port}", http = (cfBlobHeader = "x-test-cf"), service = "harbour"),
  ],
{extensions});
const harbour :Workerd.Worker = (
  modules = [
    (name = "shim.mjs", esModule = embed "../../../build/worker/shim.mjs"),
    (name = "index.wasm", wasm = embed "../../../build/worker/index.wasm"),
  ],
  compatibilityDate = "2025-09-01",
  bindings = [
    (name = "HARBOUR_FORM_KEY", text = "location-form-key-0123456789abcdefghijklmnopqrstuvwxyz"),
{ratelimits}{bindings}  ],
  globalOutbound = "loopback",
);
"#
        );
        let config_path = dir.join("workerd.capnp");
        std::fs::write(&config_path, config).unwrap();
        let log = std::fs::File::create(dir.join("workerd.log")).unwrap();
        let mut command = Command::new(root.join("node_modules/.bin/workerd"));
        command
            .arg("serve")
            .arg(&config_path)
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        processes.push(Process::spawn("workerd", &mut command));
        wait_until("workerd", Duration::from_secs(30), || {
            harbour_e2e::raw(
                port,
                b"GET /api/campaigns/spring-launch HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
            )
            .is_ok_and(|r| r.status == 200)
        });
        Edge {
            port,
            dir,
            db,
            _processes: processes,
        }
    }

    /// A fresh idempotency key with its solved challenge: the work a visitor does before sending,
    /// done before a test starts its clock.
    fn prepared(&self) -> Prepared {
        let key = harbour_e2e::new_key();
        let proof = harbour_e2e::proof_from(self.port, &key);
        Prepared { key, proof }
    }

    fn send(&self, ip: &str, n: u32, prepared: &Prepared) -> Response {
        let blob = format!("{{\"country\":\"{COUNTRY}\"}}");
        let body = format!(
            r#"{{"name":"Visitor {n}","email":"visitor{n}@example.org","country":"{COUNTRY}","consent":true}}"#
        );
        let (key, proof) = (&prepared.key, &prepared.proof);
        request(
            self.port,
            "POST",
            SUBMIT_PATH,
            &[
                ("content-type", "application/json"),
                ("x-test-cf", &blob),
                ("cf-connecting-ip", ip),
                ("idempotency-key", key),
                ("harbour-challenge", proof),
            ],
            body.as_bytes(),
        )
    }

    /// The `harbour.location_limit_unavailable` lines written so far.
    fn unavailable_lines(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(self.dir.join("workerd.log"))
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("\"msg\":\"harbour.location_limit_unavailable\""))
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

struct Prepared {
    key: String,
    proof: String,
}

/// Six submissions from one client: five admitted on the isolate's limits alone, the sixth
/// refused by them; every admitted one stored. Their work (`prepared`) is done before, so the six
/// arrive well inside one emission interval of the 5-per-minute limit (12 s), and inside the
/// minute of one unavailable line, on a slow machine too.
fn fails_open_on_the_isolates_limits(edge: &Edge, answer: &str, prepared: &[Prepared]) {
    let stored_before = read_rows(&edge.db).len();
    for n in 0..5 {
        let reply = edge.send("198.51.100.7", n, &prepared[n as usize]);
        assert_eq!(reply.status, 202, "submission {n}: {}", reply.body);
        // The location did not agree to anything: only the client's own layer is shown.
        assert_eq!(
            reply.header("ratelimit-policy"),
            Some("\"client\";q=5;w=60")
        );
    }
    let limited = edge.send("198.51.100.7", 5, &prepared[5]);
    assert_eq!(limited.status, 429, "{}", limited.body);
    assert_eq!(
        limited.header("ratelimit-policy"),
        Some("\"client\";q=5;w=60")
    );
    assert_eq!(read_rows(&edge.db).len(), stored_before + 5);
    wait_until("the unavailable line", Duration::from_secs(5), || {
        !edge.unavailable_lines().is_empty()
    });
    let lines = edge.unavailable_lines();
    assert_eq!(
        lines.len(),
        1,
        "one line a minute, not one per request: {lines:?}"
    );
    assert_eq!(lines[0]["answer"], answer);
    assert_eq!(lines[0]["mode"], "fail_open");
    assert_eq!(lines[0]["binding"], "HARBOUR_RL_5_PER_60S");
}

#[test]
fn a_binding_that_throws_fails_open() {
    let edge = Edge::start(
        "location-throws",
        "export default function () {\n  return { async limit() { throw new Error(\"rate limiting is down\"); } };\n}\n",
    );
    let prepared: Vec<Prepared> = (0..6).map(|_| edge.prepared()).collect();
    fails_open_on_the_isolates_limits(&edge, "failed", &prepared);
}

#[test]
fn a_binding_that_never_answers_costs_its_wait_and_fails_open() {
    let edge = Edge::start(
        "location-silent",
        "export default function () {\n  return { limit() { return new Promise(() => {}); } };\n}\n",
    );
    // The work first: the clock measures the binding's wait, not the challenge's solve.
    let mut prepared: Vec<Prepared> = (0..7).map(|_| edge.prepared()).collect();
    let first = prepared.remove(6);
    let started = Instant::now();
    let reply = edge.send("198.51.100.8", 100, &first);
    let waited = started.elapsed();
    assert_eq!(reply.status, 202, "{}", reply.body);
    let timeout = Duration::from_millis(CONSULT_TIMEOUT_MS);
    assert!(
        waited >= timeout,
        "answered after {waited:?}, before the wait"
    );
    assert!(waited < timeout * 4, "took {waited:?}");
    fails_open_on_the_isolates_limits(&edge, "timed_out", &prepared);
}
