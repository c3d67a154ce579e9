//! The location's rate-limiting binding failing, under `workerd serve` with the release worker and
//! the real entry module: a binding whose `limit()` throws, and one that never answers. The
//! shipped campaign fails open: submissions are admitted on the isolate's own limits (which still
//! refuse a client over them), a silent binding costs its 500 ms wait and no more, and each
//! isolate says so in one log line, not one per request.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use harbour_contract::env::FORM_KEY_VAR;
use harbour_core::phase::admission::CONSULT_TIMEOUT_MS;
use harbour_e2e::http::Response;
use harbour_e2e::process::{free_port, wait_until, Process};
use harbour_e2e::project::workspace_root;
use harbour_e2e::proof::Prepared;
use harbour_e2e::region::RegionOrigin;
use harbour_e2e::workerd::{submit_as, Socket, Worker, WorkerdConfig, TEST_CF_HEADER};

const SUBMIT_PATH: &str = "/api/campaigns/spring-launch/submissions";
const COUNTRY: &str = "IT";

struct Edge {
    port: u16,
    dir: std::path::PathBuf,
    origin: RegionOrigin,
    _workerd: Process,
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
        let origin = RegionOrigin::start(&dir, "location", COUNTRY);
        let port = free_port();
        let worker = Worker::build("harbour", &root.join("build/worker"))
            .text(
                FORM_KEY_VAR,
                "location-form-key-0123456789abcdefghijklmnopqrstuvwxyz",
            )
            .with_rate_limits()
            .texts(&origin.bindings(None));
        let socket = Socket {
            port,
            cf_header: Some(TEST_CF_HEADER),
        };
        let workerd = WorkerdConfig::new(&dir, &["local"])
            .serve(worker, socket)
            .rate_limits_from(&dir.join("ratelimit.js"))
            .start("workerd.capnp", &dir.join("workerd.log"), port);
        Edge {
            port,
            dir,
            origin,
            _workerd: workerd,
        }
    }

    /// A fresh idempotency key with its solved challenge: the work a visitor does before sending,
    /// done before a test starts its clock.
    fn prepared(&self) -> Prepared {
        Prepared::fetch(self.port, None)
    }

    fn send(&self, ip: &str, n: u32, prepared: &Prepared) -> Response {
        let body = format!(
            r#"{{"name":"Visitor {n}","email":"visitor{n}@example.org","country":"{COUNTRY}","consent":true}}"#
        );
        submit_as(self.port, SUBMIT_PATH, COUNTRY, ip, prepared, &body)
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

/// Six submissions from one client: five admitted on the isolate's limits alone, the sixth
/// refused by them; every admitted one stored. Their work (`prepared`) is done before, so the six
/// arrive well inside one emission interval of the 5-per-minute limit (12 s), and inside the
/// minute of one unavailable line, on a slow machine too.
fn fails_open_on_the_isolates_limits(edge: &Edge, answer: &str, prepared: &[Prepared]) {
    let stored_before = edge.origin.rows().len();
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
    assert_eq!(edge.origin.rows().len(), stored_before + 5);
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
