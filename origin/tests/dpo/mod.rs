//! Helpers for the tests of a region's records: origins of any region on a policy of the test's
//! own, submissions carrying the record of consent, and `harbour-entries` run as a process.

#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use serde_json::{json, Value};

use crate::common::{
    exchange, free_port, fresh_pg_database, now_ms, temp_dir, wait_until_healthy, Entry, Response,
};

/// The signing key of region `r` in these tests.
pub fn signing_key(region: &str) -> String {
    format!("records-test-signing-key-{region}-0123456789abcdef")
}

/// The person key of region `r`: each region its own.
pub fn person_key(region: &str) -> String {
    format!("records-test-person-key-{region}-0123456789abcdef")
}

/// The draw key every region's origins hold for a global draw.
pub const DRAW_KEY: &str = "records-test-draw-key-0123456789abcdefghijkl";
/// A campaign's draw key variable, as `harbour_contract::env::draw_key_var` names it.
pub fn draw_key_var(campaign: &str) -> String {
    harbour_contract::env::draw_key_var(campaign)
}

/// A campaign of the test policy: the shipped campaign's form and notice under another id, end,
/// retention and draw.
pub struct Spec {
    pub id: &'static str,
    pub ends: &'static str,
    pub retention_days: u32,
    pub draw: Value,
}

pub fn per_region(winners: u32) -> Value {
    json!({"winners": winners, "scope": "per_region"})
}

pub fn global(winners: u32, excluded: &[&str]) -> Value {
    json!({"winners": winners, "scope": "global", "excluded_regions": excluded})
}

/// Closed in 2020, kept for ten years: a draw may run, retention not yet.
pub const CLOSED: &str = "2020-01-01T00:00:00Z";
/// Open until 2099.
pub const OPEN: &str = "2099-01-01T00:00:00Z";

/// Writes a policy with `specs` as its campaigns into `dir`; its path.
pub fn policy_file(dir: &Path, name: &str, specs: &[Spec]) -> PathBuf {
    let mut raw: Value = serde_json::from_str(harbour_policy::SHIPPED_POLICY).unwrap();
    let template = raw["campaigns"][0].clone();
    let campaigns: Vec<Value> = specs
        .iter()
        .map(|spec| {
            let mut c = template.clone();
            c["id"] = spec.id.into();
            c["ends"] = spec.ends.into();
            c["retention"] = json!({"days_after_end": spec.retention_days});
            c["draw"] = spec.draw.clone();
            c
        })
        .collect();
    raw["campaigns"] = Value::Array(campaigns);
    let path = dir.join(name);
    std::fs::write(&path, raw.to_string()).unwrap();
    harbour_policy::Policy::parse(&raw.to_string()).unwrap_or_else(|e| panic!("{e}"));
    path
}

/// A running origin of `region`.
pub struct RegionOrigin {
    child: Child,
    pub region: String,
    pub port: u16,
    pub ops_port: u16,
    pub log: PathBuf,
}

impl RegionOrigin {
    pub fn start(region: &str, store: &str, policy: &Path) -> RegionOrigin {
        let (port, ops_port) = (free_port(), free_port());
        let log = std::env::temp_dir().join(format!("harbour-records-origin-{port}.log"));
        let child = Command::new(env!("CARGO_BIN_EXE_harbour-origin"))
            .args(["--region", region, "--listen", &format!("127.0.0.1:{port}")])
            .args(["--ops-listen", &format!("127.0.0.1:{ops_port}")])
            .args(["--store", store, "--policy", &policy.display().to_string()])
            .env(harbour_contract::env::key_var(region), signing_key(region))
            .env(
                harbour_contract::env::person_key_var(region),
                person_key(region),
            )
            .env_remove("HARBOUR_STORE")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let mut origin = RegionOrigin {
            child,
            region: region.into(),
            port,
            ops_port,
            log,
        };
        origin.wait_ready();
        origin
    }

    fn wait_ready(&mut self) {
        wait_until_healthy(&mut self.child, self.ops_port, &self.log);
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn count(&self) -> u64 {
        crate::common::get(self.ops_port, "/v1/count").json()["count"]
            .as_u64()
            .unwrap()
    }

    /// Submits `fields` to `campaign` as the edge forwards them, with the notice
    /// `(locale, version)`; the receipt id.
    pub fn submit(&self, campaign: &str, fields: Value, notice: Option<(&str, &str)>) -> String {
        let reply = self.send(campaign, fields, notice);
        assert_eq!(reply.status, 201, "{}", reply.body);
        reply.json()["receipt"]["id"].as_str().unwrap().to_owned()
    }

    pub fn send(&self, campaign: &str, fields: Value, notice: Option<(&str, &str)>) -> Response {
        self.send_with_key(campaign, &format!("records-{}", uuid_ish()), fields, notice)
    }

    /// As the edge sends it, with idempotency key `key` (a retry sends the same).
    pub fn send_with_key(
        &self,
        campaign: &str,
        key: &str,
        fields: Value,
        notice: Option<(&str, &str)>,
    ) -> Response {
        let entry = Entry {
            campaign: campaign.into(),
            key: key.into(),
            fields: fields.clone(),
            region_tag: self.region.clone(),
            signing_key: signing_key(&self.region),
            timestamp_ms: now_ms(),
        };
        let body = json!({
            "campaign": campaign,
            "fields": fields,
            "notice": notice.map(|(locale, version)| json!({"locale": locale, "version": version})),
            "received_at_ms": entry.timestamp_ms,
            "region": self.region,
            "request_id": "records-test",
            "signals": {"basis": "platform", "declared_country": null, "platform_country": "IT"},
        })
        .to_string();
        let headers = entry.headers(&body);
        let headers: Vec<(&str, &str)> = headers
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .collect();
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        exchange(
            &mut stream,
            "POST",
            "/v1/submissions",
            &headers,
            body.as_bytes(),
        )
        .unwrap()
    }
}

impl Drop for RegionOrigin {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An idempotency key's unique part: 16-64 of `A-Z a-z 0-9 - _`.
fn uuid_ish() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!(
        "{}-{}-{}",
        std::process::id(),
        now_ms(),
        NEXT.fetch_add(1, Ordering::SeqCst)
    )
}

/// The fields of an entry from `email`, with the marketing box as given (`None`: left empty).
pub fn fields(name: &str, email: &str, marketing: Option<bool>) -> Value {
    let mut fields = json!({"name": name, "email": email, "country": "IT", "consent": true});
    if let Some(marketing) = marketing {
        fields["marketing"] = marketing.into();
    }
    fields
}

/// What a `harbour-entries` run printed, and how it ended.
pub struct Run {
    pub status: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn json(&self) -> Value {
        assert_eq!(self.status, 0, "{}", self.stderr);
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| panic!("{e}: {}", self.stdout))
    }

    pub fn lines(&self) -> Vec<String> {
        assert_eq!(self.status, 0, "{}", self.stderr);
        self.stdout.lines().map(str::to_owned).collect()
    }

    /// Asserts a refusal: exit 1 and one line on stderr containing each of `words`.
    pub fn refused(&self, words: &[&str]) {
        assert_eq!(self.status, 1, "{} {}", self.stdout, self.stderr);
        let lines: Vec<&str> = self.stderr.lines().collect();
        assert_eq!(lines.len(), 1, "one line: {}", self.stderr);
        for word in words {
            assert!(lines[0].contains(word), "{word:?} in {}", lines[0]);
        }
        assert!(self.stdout.is_empty(), "{}", self.stdout);
    }
}

/// Runs `harbour-entries` with `args` and the region keys and draw key in the environment (and
/// nothing from the test's own `HARBOUR_STORE`).
pub fn entries(args: &[&str]) -> Run {
    let mut command = Command::new(env!("CARGO_BIN_EXE_harbour-entries"));
    command.args(args).env_remove("HARBOUR_STORE");
    for region in ["cn", "ru", "eu", "au", "global"] {
        command.env(
            harbour_contract::env::person_key_var(region),
            person_key(region),
        );
    }
    for campaign in ["spring", "autumn", "world", "old", "live"] {
        command.env(draw_key_var(campaign), DRAW_KEY);
    }
    finish(command.output().unwrap())
}

fn finish(output: Output) -> Run {
    Run {
        status: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8(output.stdout).unwrap(),
        stderr: String::from_utf8(output.stderr).unwrap(),
    }
}

/// `HMAC-SHA256(seed, receipt id)` in hex, computed here, apart from the code under test.
pub fn expected_ticket(seed: &str, receipt_id: &str) -> String {
    use hmac::{Hmac, Mac};
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(seed.as_bytes()).unwrap();
    mac.update(receipt_id.as_bytes());
    mac.finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Where a test's stores are: a SQLite file per region in a fresh directory, or a fresh
/// PostgreSQL database per region.
#[derive(Clone, Copy)]
pub enum Kind {
    Sqlite,
    Postgres,
}

pub struct Stores {
    pub kind: Kind,
    pub dir: PathBuf,
    pub name: &'static str,
}

impl Stores {
    pub fn new(kind: Kind, name: &'static str) -> Stores {
        Stores {
            kind,
            dir: temp_dir(name),
            name,
        }
    }

    /// A new store for `region`.
    pub fn store(&self, region: &str) -> String {
        match self.kind {
            Kind::Sqlite => self
                .dir
                .join(format!("{region}.sqlite"))
                .display()
                .to_string(),
            Kind::Postgres => fresh_pg_database(&format!("{}_{region}", self.name)),
        }
    }
}
