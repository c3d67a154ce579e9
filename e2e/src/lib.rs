//! Drives the real local stack for end-to-end tests: reference origins (separate processes,
//! SQLite files), the built worker under `wrangler dev`, and a raw HTTP/1.1 client that sends
//! exactly the bytes a test asks for. Everything listens on 127.0.0.1 and is stopped on drop.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The shipped policy's region ids, in its order. The policy is the only list of regions:
/// everything here that starts one origin per region iterates this.
pub fn regions() -> Vec<String> {
    harbour::policy::Policy::shipped()
        .expect("the shipped policy passes its checks")
        .regions
        .into_iter()
        .map(|region| region.id)
        .collect()
}

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// A port nothing listens on, never the same twice in one process: ports are picked before the
/// servers start, and the system may hand a just-closed one out again.
pub fn free_port() -> u16 {
    static HANDED_OUT: std::sync::Mutex<std::collections::BTreeSet<u16>> =
        std::sync::Mutex::new(std::collections::BTreeSet::new());
    for _ in 0..1000 {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        if HANDED_OUT.lock().unwrap().insert(port) {
            return port;
        }
    }
    panic!("no fresh port after 1000 tries");
}

#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or(serde_json::Value::Null)
    }
}

/// Sends raw request bytes and reads the whole response (the request says `Connection: close`).
pub fn raw(port: u16, request: &[u8]) -> std::io::Result<Response> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    stream.write_all(request)?;
    // Read until the response is complete by its own framing: servers may keep the connection
    // open despite `Connection: close`.
    let mut bytes = Vec::new();
    let mut buffer = [0u8; 16 * 1024];
    loop {
        if let Some(response) = complete_response(&bytes) {
            return Ok(response);
        }
        let n = stream.read(&mut buffer)?;
        if n == 0 {
            return parse_response(&bytes).ok_or_else(|| {
                std::io::Error::other(format!(
                    "unparseable response: {:?}",
                    String::from_utf8_lossy(&bytes)
                ))
            });
        }
        bytes.extend_from_slice(&buffer[..n]);
    }
}

/// The response, once `bytes` holds all of it.
fn complete_response(bytes: &[u8]) -> Option<Response> {
    let split = bytes.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&bytes[..split]).to_ascii_lowercase();
    let body = &bytes[split + 4..];
    let length = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse::<usize>().ok());
    let status: u16 = head.split(' ').nth(1)?.parse().ok()?;
    let complete = if let Some(length) = length {
        body.len() >= length
    } else if head.contains("transfer-encoding: chunked") {
        dechunk(body).is_some()
    } else {
        status == 204 || status == 304 || (100..200).contains(&status)
    };
    complete.then(|| parse_response(bytes)).flatten()
}

fn parse_response(bytes: &[u8]) -> Option<Response> {
    let split = bytes.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&bytes[..split]).ok()?;
    let mut lines = head.split("\r\n");
    let status = lines.next()?.split(' ').nth(1)?.parse().ok()?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let mut body = bytes[split + 4..].to_vec();
    let chunked = headers
        .iter()
        .any(|(n, v)| n == "transfer-encoding" && v.eq_ignore_ascii_case("chunked"));
    if chunked {
        body = dechunk(&body)?;
    }
    Some(Response {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

fn dechunk(mut bytes: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = bytes.windows(2).position(|w| w == b"\r\n")?;
        let size_text = std::str::from_utf8(&bytes[..line_end]).ok()?;
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        bytes = &bytes[line_end + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(bytes.get(..size)?);
        bytes = bytes.get(size + 2..)?;
    }
}

/// A request with the usual framing; `headers` are added as given.
pub fn request(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Response {
    let mut text = format!(
        "{method} {path} HTTP/1.1\r\nhost: 127.0.0.1:{port}\r\nconnection: close\r\naccept-encoding: identity\r\n"
    );
    for (name, value) in headers {
        text.push_str(&format!("{name}: {value}\r\n"));
    }
    if !body.is_empty() || method == "POST" {
        text.push_str(&format!("content-length: {}\r\n", body.len()));
    }
    text.push_str("\r\n");
    let mut bytes = text.into_bytes();
    bytes.extend_from_slice(body);
    raw(port, &bytes).unwrap_or_else(|e| panic!("{method} {path}: {e}"))
}

/// A child process in its own process group, so stopping it also stops what it started.
pub struct Process {
    child: Child,
    pub name: String,
}

impl Process {
    pub fn spawn(name: &str, command: &mut Command) -> Process {
        command.process_group(0);
        let child = command
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        Process {
            child,
            name: name.to_owned(),
        }
    }

    /// SIGKILL, as a crash would: no graceful shutdown.
    pub fn kill_hard(&mut self) {
        let group = format!("-{}", self.child.id());
        let _ = Command::new("kill")
            .args(["-KILL", "--", &group])
            .stderr(Stdio::null())
            .status();
        let _ = self.child.wait();
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn stop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let group = format!("-{}", self.child.id());
            let _ = Command::new("kill")
                .args(["-TERM", "--", &group])
                .stderr(Stdio::null())
                .status();
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = self.child.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = Command::new("kill")
                .args(["-KILL", "--", &group])
                .stderr(Stdio::null())
                .status();
            let _ = self.child.wait();
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.stop();
    }
}

pub fn wait_until(what: &str, timeout: Duration, mut ready: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if ready() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("{what} not ready after {timeout:?}");
}

fn responds(port: u16, path: &str) -> bool {
    let request = format!("GET {path} HTTP/1.1\r\nhost: 127.0.0.1\r\nconnection: close\r\n\r\n");
    matches!(raw(port, request.as_bytes()), Ok(r) if r.status == 200)
}

pub struct OriginSpec {
    pub region: String,
    pub primary: u16,
    pub secondary: u16,
    pub db: PathBuf,
    pub key: String,
}

/// The local stack: two origins per region sharing that region's SQLite file, and the worker.
pub struct Stack {
    pub dir: PathBuf,
    pub port: u16,
    pub origins: Vec<OriginSpec>,
    /// `HARBOUR_FORM_KEY` of the worker under test.
    pub form_key: String,
    origin_processes: HashMap<u16, Process>,
    wrangler: Option<Process>,
    /// A challenge from the worker's form description, reused for many keys while it is fresh.
    challenge: std::sync::Mutex<Option<(Instant, String, u8)>>,
}

/// A fresh idempotency key, never the same twice in one process.
pub fn new_key() -> String {
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let pid = std::process::id();
    format!("e2e-{pid}-{n:012}")
}

pub fn origin_binary() -> PathBuf {
    std::env::var_os("HARBOUR_ORIGIN_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target/debug/harbour-origin"))
}

impl Stack {
    pub fn start(name: &str) -> Stack {
        let root = workspace_root();
        let dir = root.join("target/e2e").join(name);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let origins: Vec<OriginSpec> = regions()
            .into_iter()
            .enumerate()
            .map(|(i, region)| OriginSpec {
                primary: free_port(),
                secondary: free_port(),
                db: dir.join(format!("{region}.sqlite")),
                key: format!("e2e-{region}-{i}-0123456789abcdefghijklmnopqrstuvwxyz"),
                region,
            })
            .collect();
        let mut stack = Stack {
            dir,
            port: free_port(),
            origins,
            form_key: "e2e-form-key-0123456789abcdefghijklmnopqrstuvwxyz".into(),
            origin_processes: HashMap::new(),
            wrangler: None,
            challenge: std::sync::Mutex::new(None),
        };
        for i in 0..stack.origins.len() {
            let (primary, secondary) = (stack.origins[i].primary, stack.origins[i].secondary);
            stack.start_origin(primary);
            stack.start_origin(secondary);
        }
        stack.start_worker();
        stack
    }

    fn spec_for_port(&self, port: u16) -> &OriginSpec {
        self.origins
            .iter()
            .find(|o| o.primary == port || o.secondary == port)
            .expect("port of a known origin")
    }

    pub fn origin(&self, region: &str) -> &OriginSpec {
        self.origins.iter().find(|o| o.region == region).unwrap()
    }

    pub fn start_origin(&mut self, port: u16) {
        let spec = self.spec_for_port(port);
        let log =
            std::fs::File::create(self.dir.join(format!("origin-{}-{port}.log", spec.region)))
                .unwrap();
        let mut command = Command::new(origin_binary());
        command
            .args([
                "--region",
                &spec.region,
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--db",
            ])
            .arg(&spec.db)
            .env(harbour::config::key_var(&spec.region), &spec.key)
            .stdout(Stdio::null())
            .stderr(log);
        let process = Process::spawn(&format!("origin {} :{port}", spec.region), &mut command);
        self.origin_processes.insert(port, process);
        wait_until(&format!("origin :{port}"), Duration::from_secs(20), || {
            responds(port, "/health")
        });
    }

    pub fn stop_origin(&mut self, port: u16) {
        if let Some(mut process) = self.origin_processes.remove(&port) {
            process.stop();
        }
    }

    fn start_worker(&mut self) {
        let root = workspace_root();
        // A config of its own beside its own .dev.vars, so a developer's .dev.vars and state
        // never leak into the test.
        let mut vars = String::new();
        let mut secrets = String::new();
        for o in &self.origins {
            vars.push_str(&format!(
                "{} = \"http://127.0.0.1:{} http://127.0.0.1:{}\"\n",
                harbour::config::origins_var(&o.region),
                o.primary,
                o.secondary
            ));
            secrets.push_str(&format!(
                "{}={}\n",
                harbour::config::key_var(&o.region),
                o.key
            ));
        }
        secrets.push_str(&format!(
            "{}={}\n",
            harbour::config::FORM_KEY_VAR,
            self.form_key
        ));
        let config = format!(
            "name = \"harbour-e2e\"\nmain = \"{main}\"\ncompatibility_date = \"2025-09-01\"\n\n\
             [assets]\ndirectory = \"{www}\"\nnot_found_handling = \"none\"\n\n[vars]\n{vars}",
            main = root.join("build/worker/shim.mjs").display(),
            www = root.join("www").display(),
        );
        std::fs::write(self.dir.join("wrangler.toml"), config).unwrap();
        std::fs::write(self.dir.join(".dev.vars"), secrets).unwrap();
        let log = std::fs::File::create(self.dir.join("wrangler.log")).unwrap();
        let mut command = Command::new(root.join("node_modules/.bin/wrangler"));
        command
            .current_dir(&self.dir)
            .args(["dev", "--ip", "127.0.0.1", "--port", &self.port.to_string()])
            .args(["--inspector-port", &free_port().to_string()])
            .args(["--show-interactive-dev-session=false", "--log-level", "log"])
            .env("WRANGLER_SEND_METRICS", "false")
            .env("CI", "true")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        self.wrangler = Some(Process::spawn("wrangler dev", &mut command));
        let port = self.port;
        wait_until("wrangler dev", Duration::from_secs(120), || {
            responds(port, "/api/campaigns/spring-launch")
        });
    }

    /// A `Harbour-Challenge` value for `key`, solved for a challenge this worker's form
    /// description handed out (fetched again when the one in hand is ten minutes old).
    pub fn proof(&self, key: &str) -> String {
        let mut held = self.challenge.lock().unwrap();
        let stale = held
            .as_ref()
            .is_none_or(|(at, _, _)| at.elapsed() > Duration::from_secs(600));
        if stale {
            let form = request(self.port, "GET", "/api/campaigns/spring-launch", &[], b"");
            let challenge = &form.json()["challenge"];
            let token = challenge["token"].as_str().expect("a challenge").to_owned();
            let bits = challenge["difficulty_bits"]
                .as_u64()
                .expect("its difficulty") as u8;
            *held = Some((Instant::now(), token, bits));
        }
        let (_, token, bits) = held.as_ref().unwrap();
        harbour::challenge::solution(token, &harbour::challenge::solve(token, key, *bits))
    }

    /// A new key and its `Harbour-Challenge` value, as headers.
    pub fn keyed(&self) -> [(&'static str, String); 2] {
        let key = new_key();
        let proof = self.proof(&key);
        [("idempotency-key", key), ("harbour-challenge", proof)]
    }

    /// A submission as the campaign page would send it, from `country` (via the platform's
    /// `request.cf`, which `wrangler dev` takes from `MF-CF-Blob`) and client address `ip`:
    /// with an idempotency key (a new one unless `extra` has one) and a solved challenge for it
    /// (unless `extra` has a `harbour-challenge`; an empty one is left out).
    pub fn submit(
        &self,
        country: Option<&str>,
        ip: &str,
        body: &str,
        extra: &[(&str, &str)],
    ) -> Response {
        let blob = country.map(|c| format!("{{\"country\":\"{c}\"}}"));
        let mut headers: Vec<(&str, &str)> = vec![
            ("content-type", "application/json"),
            ("cf-connecting-ip", ip),
        ];
        if let Some(blob) = &blob {
            headers.push(("mf-cf-blob", blob));
        }
        let given = |name: &str| extra.iter().find(|(n, _)| *n == name).map(|(_, v)| *v);
        let key = given("idempotency-key").map_or_else(new_key, str::to_owned);
        let proof = match given("harbour-challenge") {
            Some(_) => None,
            None => Some(self.proof(&key)),
        };
        if given("idempotency-key").is_none() {
            headers.push(("idempotency-key", &key));
        }
        if let Some(proof) = &proof {
            headers.push(("harbour-challenge", proof));
        }
        headers.extend(
            extra
                .iter()
                .filter(|(n, v)| *n != "harbour-challenge" || !v.is_empty()),
        );
        request(
            self.port,
            "POST",
            "/api/campaigns/spring-launch/submissions",
            &headers,
            body.as_bytes(),
        )
    }

    /// Rows stored per region, read from the SQLite files themselves.
    pub fn stored(&self) -> HashMap<String, Vec<StoredRow>> {
        self.origins
            .iter()
            .map(|o| (o.region.clone(), read_rows(&o.db)))
            .collect()
    }

    /// Submission POSTs each region's origins received, stored or not.
    pub fn received(&self) -> HashMap<String, u64> {
        self.origins
            .iter()
            .map(|o| {
                let mut total = 0;
                for port in [o.primary, o.secondary] {
                    if self.origin_processes.contains_key(&port) {
                        let r = request(port, "GET", "/v1/count", &[], b"");
                        total += r.json()["received"].as_u64().unwrap_or(0);
                    }
                }
                (o.region.clone(), total)
            })
            .collect()
    }

    pub fn worker_log(&self) -> String {
        std::fs::read_to_string(self.dir.join("wrangler.log")).unwrap_or_default()
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        if let Some(mut w) = self.wrangler.take() {
            w.stop();
        }
        for (_, mut p) in self.origin_processes.drain() {
            p.stop();
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredRow {
    pub receipt_id: String,
    pub region: String,
    pub idempotency_key: String,
    pub platform_country: String,
    pub declared_country: Option<String>,
    pub payload: serde_json::Value,
}

pub fn read_rows(db: &Path) -> Vec<StoredRow> {
    let Ok(connection) =
        rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
    else {
        return Vec::new();
    };
    let Ok(mut statement) = connection.prepare(
        "SELECT receipt_id, region, idempotency_key, platform_country, declared_country, payload FROM submissions ORDER BY seq",
    ) else {
        return Vec::new();
    };
    statement
        .query_map([], |row| {
            Ok(StoredRow {
                receipt_id: row.get(0)?,
                region: row.get(1)?,
                idempotency_key: row.get(2)?,
                platform_country: row.get(3)?,
                declared_country: row.get(4)?,
                payload: serde_json::from_str(&row.get::<_, String>(5)?).unwrap_or_default(),
            })
        })
        .map(|rows| rows.filter_map(Result::ok).collect())
        .unwrap_or_default()
}

/// A listener that accepts connections and never answers: an origin that hangs.
pub struct Blackhole {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Blackhole {
    pub fn bind(port: u16) -> Blackhole {
        let listener = TcpListener::bind(("127.0.0.1", port)).unwrap();
        listener.set_nonblocking(true).unwrap();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut held = Vec::new();
            let deadline = Instant::now() + Duration::from_secs(120);
            while !flag.load(std::sync::atomic::Ordering::Relaxed) && Instant::now() < deadline {
                if let Ok((stream, _)) = listener.accept() {
                    held.push(stream);
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        });
        Blackhole {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Blackhole {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
