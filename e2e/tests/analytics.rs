//! The edge's data points, under `workerd serve` with the release worker and the real entry
//! module: workerd's own Analytics Engine binding takes each `writeDataPoint` and forwards it to
//! the local recorder (`bench/recorder.js`), where the live view's reader finds them. A second's
//! points are written once it is over, with the isolate's next decision, and name no person.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use harbour_contract::env::FORM_KEY_VAR;
use harbour_contract::points::{BLOB_OUTCOME, BLOB_REGION, BLOB_STATUS, DOUBLE_COUNT};
use harbour_e2e::http::{request, Response};
use harbour_e2e::process::{free_port, wait_until};
use harbour_e2e::project::workspace_root;
use harbour_e2e::proof::Prepared;
use harbour_e2e::region::RegionOrigin;
use harbour_e2e::workerd::{submit_as, Socket, Worker, WorkerdConfig, TEST_CF_HEADER};
use harbour_ops::http::Client;
use harbour_ops::sources::edge_rows;
use harbour_ops::target::Edge;
use serde_json::Value;

const SUBMIT_PATH: &str = "/api/campaigns/spring-launch/submissions";
const FORM_PATH: &str = "/api/campaigns/spring-launch";
const COUNTRY: &str = "IT";

fn submit(port: u16, n: u32, ip: &str) -> (Response, String) {
    let prepared = Prepared::fetch(port, None);
    let body = format!(
        r#"{{"name":"Visitor {n}","email":"points{n}@example.org","country":"{COUNTRY}","consent":true}}"#
    );
    let reply = submit_as(port, SUBMIT_PATH, COUNTRY, ip, &prepared, &body);
    (reply, prepared.key.clone())
}

/// What the recorder holds.
fn recorded(recorder: u16) -> Vec<Value> {
    let answer = request(recorder, "GET", "/points?since_s=0", &[], b"");
    assert_eq!(answer.status, 200, "{}", answer.body);
    answer.json()["points"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// Entries counted under `outcome`, over every point.
fn counted(points: &[Value], outcome: &str) -> f64 {
    points
        .iter()
        .filter(|p| p["blobs"][BLOB_OUTCOME] == outcome)
        .map(|p| p["doubles"][DOUBLE_COUNT].as_f64().unwrap())
        .sum()
}

#[test]
fn the_workers_data_points_reach_the_binding_and_the_live_views_reader() {
    let root = workspace_root();
    assert!(
        root.join("build/worker/index.wasm").is_file(),
        "build the release worker first (bash scripts/build)"
    );
    let dir = root.join("target/e2e/analytics");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let origin = RegionOrigin::start(&dir, "analytics", COUNTRY);
    let (port, recorder) = (free_port(), free_port());
    let worker = Worker::build("harbour", &root.join("build/worker"))
        .text(
            FORM_KEY_VAR,
            "analytics-form-key-0123456789abcdefghijklmnopqrstuvwxyz",
        )
        .with_rate_limits()
        .with_analytics()
        .texts(&origin.bindings(None));
    let socket = Socket {
        port,
        cf_header: Some(TEST_CF_HEADER),
    };
    let _workerd = WorkerdConfig::new(&dir, &["local"])
        .serve(worker, socket)
        .record_analytics(recorder)
        .start("workerd.capnp", &dir.join("workerd.log"), port);
    let started_s = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();

    let mut secrets = Vec::new();
    for n in 0..2 {
        let ip = format!("198.51.100.{}", 20 + n);
        let (reply, key) = submit(port, n, &ip);
        assert_eq!(reply.status, 202, "{}", reply.body);
        secrets.extend([format!("points{n}@example.org"), ip, key]);
    }
    let refused = request(
        port,
        "POST",
        SUBMIT_PATH,
        &[("content-type", "text/plain")],
        b"{}",
    );
    assert_eq!(refused.status, 415);
    // The last second's points go with the first decision after it is over.
    std::thread::sleep(Duration::from_millis(1_100));
    assert_eq!(request(port, "GET", FORM_PATH, &[], b"").status, 200);
    wait_until(
        "the stored entries' points",
        Duration::from_secs(10),
        || counted(&recorded(recorder), "stored") >= 2.0,
    );
    let points = recorded(recorder);
    assert_eq!(counted(&points, "stored"), 2.0, "{points:?}");
    assert_eq!(
        counted(&points, "unsupported_media_type"),
        1.0,
        "{points:?}"
    );
    assert_eq!(
        counted(&points, "ok"),
        0.0,
        "form descriptions are not entries"
    );
    let stored = points
        .iter()
        .find(|p| p["blobs"][BLOB_OUTCOME] == "stored")
        .unwrap();
    assert_eq!(stored["blobs"][BLOB_REGION], origin.region);
    assert_eq!(stored["blobs"][BLOB_STATUS], "202");
    assert_eq!(stored["indexes"], serde_json::json!(["spring-launch"]));
    let text = serde_json::to_string(&points).unwrap();
    for secret in &secrets {
        assert!(!text.contains(secret.as_str()), "{secret} in {text}");
    }
    assert_eq!(origin.rows().len(), 2);

    // The live view reads the same, by region and outcome.
    let client = Client::new(Duration::from_secs(3), 1);
    let edge = Edge::Recorder(format!("http://127.0.0.1:{recorder}"));
    let rows = edge_rows(&client, &edge, None, Some("spring-launch"), started_s).unwrap();
    let stored_rows: f64 = rows
        .iter()
        .filter(|r| r.outcome == "stored" && r.region == origin.region)
        .map(|r| r.cell.count)
        .sum();
    assert_eq!(stored_rows, 2.0, "{rows:?}");
}
