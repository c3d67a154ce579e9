//! Helpers for the origin's tests: the real `harbour-origin` binary as a process, signed
//! submissions over raw HTTP/1.1, and fresh PostgreSQL databases for the Postgres variants.

#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use harbour_contract::signature::{sha256_hex, Signed, SigningKey};

pub const REGION: &str = "eu";
pub const KEY: &str = "origin-test-eu-key-0123456789abcdefghijkl";
pub const PERSON_KEY: &str = "origin-test-eu-person-key-0123456789abcdef";
/// Where the Postgres variants create their databases (`bash scripts/test` sets it).
pub const PG_ADMIN_VAR: &str = "HARBOUR_TEST_PG_ADMIN";

/// Waits (20 s at most) until the origin `child` answers 200 on its ops listener's `/health`;
/// panics with its log (`log`) if it exits or never answers.
pub fn wait_until_healthy(child: &mut Child, ops_port: u16, log: &Path) {
    let log_text = || std::fs::read_to_string(log).unwrap_or_default();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(r) = try_request(ops_port, "GET", "/health", &[], b"") {
            if r.status == 200 {
                return;
            }
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("origin exited with {status}: {}", log_text());
        }
        assert!(
            Instant::now() < deadline,
            "origin did not start: {}",
            log_text()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// A name part no other call in any test process makes: the process, the time and a count (tests
/// of one binary run on threads, and two may start in the same millisecond).
fn unique() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!(
        "{}_{}_{}",
        std::process::id(),
        now_ms() % 1_000_000_000,
        NEXT.fetch_add(1, Ordering::SeqCst)
    )
}

pub fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("harbour-origin-{name}-{}", unique()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

pub struct Origin {
    pub child: Child,
    pub port: u16,
    pub ops_port: u16,
    pub log: PathBuf,
}

impl Origin {
    /// Starts the origin for `REGION` on `store` (a SQLite path or a postgres:// URL) with
    /// `extra` arguments, and waits until its ops listener answers.
    pub fn start(store: &str, extra: &[&str]) -> Origin {
        let mut origin = Origin::spawn(store, extra);
        origin.wait_ready();
        origin
    }

    /// Starts the origin without waiting for it: several can then start at once.
    pub fn spawn(store: &str, extra: &[&str]) -> Origin {
        Origin::spawn_from(
            Command::new(env!("CARGO_BIN_EXE_harbour-origin")),
            store,
            extra,
        )
    }

    /// `spawn` in a process that may open at most `open_files` files (soft and hard limit).
    pub fn spawn_with_open_files(open_files: u32, store: &str, extra: &[&str]) -> Origin {
        let mut command = Command::new("sh");
        command.args([
            "-c",
            &format!("ulimit -n {open_files} && exec \"$0\" \"$@\""),
            env!("CARGO_BIN_EXE_harbour-origin"),
        ]);
        Origin::spawn_from(command, store, extra)
    }

    fn spawn_from(mut command: Command, store: &str, extra: &[&str]) -> Origin {
        let (port, ops_port) = (free_port(), free_port());
        let log = std::env::temp_dir().join(format!("harbour-origin-test-{port}.log"));
        let child = command
            .args(["--region", REGION, "--listen", &format!("127.0.0.1:{port}")])
            .args([
                "--ops-listen",
                &format!("127.0.0.1:{ops_port}"),
                "--store",
                store,
            ])
            .args(extra)
            .env("HARBOUR_KEY_EU", KEY)
            .env("HARBOUR_PERSON_KEY_EU", PERSON_KEY)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        Origin {
            child,
            port,
            ops_port,
            log,
        }
    }

    /// Waits (20 s at most) until the ops listener answers; panics with the log if the origin
    /// exits or never answers.
    pub fn wait_ready(&mut self) {
        wait_until_healthy(&mut self.child, self.ops_port, &self.log);
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn submit(&self, entry: &Entry) -> Response {
        entry.send(self.port)
    }

    /// Sends SIGTERM (through `kill`, as an init system would).
    pub fn terminate(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits up to `within` for the process to exit; its status, or `None` if it still runs.
    pub fn wait_exit(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Origin {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub head: String,
    pub body: String,
}

impl Response {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or(serde_json::Value::Null)
    }
}

pub fn try_request(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<Response> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(20)))?;
    exchange(&mut stream, method, path, headers, body)
}

/// Writes one request with `Connection: close` and reads the answer to the end.
pub fn exchange(
    stream: &mut impl ReadWrite,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<Response> {
    let mut text = format!(
        "{method} {path} HTTP/1.1\r\nhost: 127.0.0.1\r\nconnection: close\r\ncontent-length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        text.push_str(&format!("{name}: {value}\r\n"));
    }
    text.push_str("\r\n");
    stream.write_all(text.as_bytes())?;
    stream.write_all(body)?;
    let mut bytes = Vec::new();
    // A TLS peer may close without close_notify after answering: keep what was read.
    if let Err(e) = stream.read_to_end(&mut bytes) {
        if bytes.is_empty() {
            return Err(e);
        }
    }
    let text = String::from_utf8_lossy(&bytes).into_owned();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| std::io::Error::other(format!("no response: {text:?}")))?;
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("no status: {head:?}")))?;
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_owned()
    };
    Ok(Response {
        status,
        head: head.to_owned(),
        body,
    })
}

pub trait ReadWrite: Read + Write {}
impl<T: Read + Write> ReadWrite for T {}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let size = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if size == 0 || rest.len() < size {
            break;
        }
        out.push_str(&rest[..size]);
        body = rest[size..].trim_start_matches("\r\n");
    }
    out
}

pub fn get(port: u16, path: &str) -> Response {
    try_request(port, "GET", path, &[], b"").unwrap()
}

/// A submission as harbour's edge forwards it.
#[derive(Clone, Debug)]
pub struct Entry {
    pub campaign: String,
    pub key: String,
    pub fields: serde_json::Value,
    /// The region the request is tagged for (`r` and the body's `region`).
    pub region_tag: String,
    pub signing_key: String,
    pub timestamp_ms: u64,
}

impl Entry {
    pub fn new(key: &str, email: &str) -> Entry {
        Entry {
            campaign: "spring-launch".into(),
            key: key.into(),
            fields: serde_json::json!({"name": "Ada", "email": email, "country": "IT", "consent": true}),
            region_tag: REGION.into(),
            signing_key: KEY.into(),
            timestamp_ms: now_ms(),
        }
    }

    pub fn body(&self) -> String {
        serde_json::json!({
            "campaign": self.campaign,
            "fields": self.fields,
            "received_at_ms": self.timestamp_ms,
            "region": self.region_tag,
            "request_id": "test",
            "signals": {"basis": "platform", "declared_country": "IT", "platform_country": "IT"},
        })
        .to_string()
    }

    pub fn signature(&self, body: &str) -> String {
        SigningKey::new(self.signing_key.as_bytes())
            .unwrap()
            .sign(&Signed {
                method: "POST",
                path: "/v1/submissions",
                timestamp_ms: self.timestamp_ms,
                region: &self.region_tag,
                idempotency_key: &self.key,
                body_sha256_hex: &sha256_hex(body.as_bytes()),
            })
    }

    pub fn headers(&self, body: &str) -> Vec<(String, String)> {
        vec![
            ("content-type".into(), "application/json".into()),
            ("idempotency-key".into(), self.key.clone()),
            ("x-harbour-signature".into(), self.signature(body)),
        ]
    }

    pub fn send_on(&self, stream: &mut impl ReadWrite) -> std::io::Result<Response> {
        let body = self.body();
        let headers = self.headers(&body);
        let headers: Vec<(&str, &str)> = headers
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .collect();
        exchange(stream, "POST", "/v1/submissions", &headers, body.as_bytes())
    }

    pub fn send(&self, port: u16) -> Response {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        self.send_on(&mut stream).unwrap()
    }
}

/// A fresh, empty database on the test PostgreSQL server; its URL.
pub fn fresh_pg_database(name: &str) -> String {
    let admin = std::env::var(PG_ADMIN_VAR).unwrap_or_else(|_| {
        panic!("{PG_ADMIN_VAR} is not set: the Postgres tier of bash scripts/test sets it")
    });
    let database = format!("t_{name}_{}", unique());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let (client, connection) = tokio_postgres::connect(&admin, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(connection);
        client
            .batch_execute(&format!("CREATE DATABASE \"{database}\""))
            .await
            .unwrap();
    });
    let (base, _) = admin.rsplit_once('/').unwrap();
    format!("{base}/{database}")
}

pub fn sqlite_store(dir: &Path) -> String {
    dir.join("eu.sqlite").display().to_string()
}

/// A client of the test PostgreSQL server, for setting a database up and reading it back.
pub struct Pg {
    runtime: tokio::runtime::Runtime,
    client: tokio_postgres::Client,
}

impl Pg {
    pub fn connect(url: &str) -> Pg {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let client = runtime.block_on(async {
            let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
                .await
                .unwrap();
            tokio::spawn(connection);
            client
        });
        Pg { runtime, client }
    }

    pub fn batch(&self, sql: &str) {
        self.runtime
            .block_on(self.client.batch_execute(sql))
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }

    pub fn query(
        &self,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Vec<tokio_postgres::Row> {
        self.runtime
            .block_on(self.client.query(sql, params))
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
    }

    /// The one value of a one-row, one-column query.
    pub fn value<T: for<'a> tokio_postgres::types::FromSql<'a>>(&self, sql: &str) -> T {
        let rows = self.query(sql, &[]);
        assert_eq!(rows.len(), 1, "{sql}");
        rows[0].get(0)
    }
}

/// A TCP relay in front of the PostgreSQL server of `url` that holds the first `n` connections
/// until all `n` have arrived (or `patience` has passed since the first), then lets them through
/// together; later connections pass at once. Origins started at the same time then send their
/// first statements, the schema migration, at the same instant, whatever their start-up times.
pub struct PgBarrier {
    /// `url` with the relay's port.
    pub url: String,
    /// Whether the held connections were released because all `n` had arrived.
    lined_up: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl PgBarrier {
    pub fn new(url: &str, n: usize, patience: Duration) -> PgBarrier {
        let config: tokio_postgres::Config = url.parse().unwrap();
        let server = ("127.0.0.1", config.get_ports()[0]);
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let relay = listener.local_addr().unwrap().port();
        let url = url.replacen(
            &format!("127.0.0.1:{}/", server.1),
            &format!("127.0.0.1:{relay}/"),
            1,
        );
        assert!(url.contains(&format!(":{relay}/")), "{url}");
        let lined_up = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = lined_up.clone();
        // Accepts in the background for the rest of the test process; each connection is piped
        // both ways until either side closes.
        std::thread::spawn(move || {
            let (tx, rx) = std::sync::mpsc::channel::<TcpStream>();
            std::thread::spawn(move || {
                for client in listener.incoming().flatten() {
                    if tx.send(client).is_err() {
                        return;
                    }
                }
            });
            let pipe = |client: TcpStream| {
                let Ok(upstream) = TcpStream::connect(server) else {
                    return;
                };
                let (mut a, mut b) = (client.try_clone().unwrap(), upstream.try_clone().unwrap());
                let (mut c, mut d) = (client, upstream);
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut a, &mut b);
                    let _ = b.shutdown(std::net::Shutdown::Write);
                });
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut d, &mut c);
                    let _ = c.shutdown(std::net::Shutdown::Write);
                });
            };
            let mut held = vec![rx.recv().unwrap()];
            let release_at = Instant::now() + patience;
            while held.len() < n {
                let left = release_at.saturating_duration_since(Instant::now());
                match rx.recv_timeout(left) {
                    Ok(client) => held.push(client),
                    Err(_) => break,
                }
            }
            flag.store(held.len() == n, std::sync::atomic::Ordering::SeqCst);
            held.into_iter().for_each(pipe);
            for client in rx {
                pipe(client);
            }
        });
        PgBarrier { url, lined_up }
    }

    pub fn lined_up(&self) -> bool {
        self.lined_up.load(std::sync::atomic::Ordering::SeqCst)
    }
}
