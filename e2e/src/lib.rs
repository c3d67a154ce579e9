//! Drives the real local stack for end-to-end tests: reference origins (separate processes, on
//! SQLite files or a throwaway PostgreSQL cluster), the built worker under `wrangler dev`, and a
//! raw HTTP/1.1 client that sends exactly the bytes a test asks for. Everything listens on
//! 127.0.0.1 and is stopped on drop.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub mod scenarios;

/// The shipped policy's region ids, in its order. The policy is the only list of regions:
/// everything here that starts one origin per region iterates this.
pub fn regions() -> Vec<String> {
    harbour_policy::Policy::shipped()
        .expect("the shipped policy passes its checks")
        .regions
        .into_iter()
        .map(|region| region.id)
        .collect()
}

/// The rate-limiting bindings the shipped policy needs, with the limits it gives them.
pub fn location_limits() -> Vec<harbour_policy::quota::LocationLimit> {
    harbour_core::phase::admission::location_limits(
        &harbour_policy::Policy::shipped().expect("the shipped policy passes its checks"),
    )
}

/// `[[ratelimits]]` for a `wrangler.toml` that `wrangler dev` simulates: every binding the policy
/// needs, with its limit and period.
pub fn wrangler_ratelimits() -> String {
    location_limits()
        .iter()
        .enumerate()
        .map(|(i, l)| {
            format!(
                "[[ratelimits]]\nname = \"{}\"\nnamespace_id = \"{}\"\nsimple = {{ limit = {}, period = {} }}\n\n",
                l.binding_name(),
                9001 + i,
                l.limit,
                l.period_s
            )
        })
        .collect()
}

/// For a `workerd serve` config (which has no `[[ratelimits]]`): the bindings as workerd's
/// wrapped bindings over the module `wrangler dev` itself simulates the binding with, and the
/// extension that provides that module, for a config file in `config_dir` (inside the workspace:
/// capnp `embed` paths are relative to the file). Returns (bindings entries, `extensions` line).
pub fn workerd_ratelimits(config_dir: &Path) -> (String, String) {
    const SOURCE: &str = "node_modules/miniflare/dist/src/workers/ratelimit/ratelimit.worker.js";
    let root = workspace_root();
    assert!(
        root.join(SOURCE).is_file(),
        "{SOURCE} is missing: the rate-limiting simulation comes with wrangler's miniflare (bash scripts/setup)"
    );
    let depth = config_dir
        .strip_prefix(&root)
        .expect("the config file is inside the workspace")
        .components()
        .count();
    workerd_ratelimits_over(&format!("{}{SOURCE}", "../".repeat(depth)))
}

/// [`workerd_ratelimits`] over another module (`module`, relative to the config file) whose
/// default export takes `{namespaceId, limit, period}` and returns the binding.
pub fn workerd_ratelimits_over(module: &str) -> (String, String) {
    const MODULE: &str = "harbour-test:ratelimit";
    let bindings = location_limits()
        .iter()
        .map(|l| {
            format!(
                "    (name = \"{}\", wrapped = (moduleName = \"{MODULE}\", innerBindings = [(name = \"namespaceId\", text = \"{}\"), (name = \"limit\", json = \"{}\"), (name = \"period\", json = \"{}\")])),\n",
                l.binding_name(),
                l.binding_name(),
                l.limit,
                l.period_s
            )
        })
        .collect();
    let extensions = format!(
        "  extensions = [(modules = [(name = \"{MODULE}\", esModule = embed \"{module}\", internal = true)])],\n"
    );
    (bindings, extensions)
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

/// Where a region's rows are: one SQLite file, or one PostgreSQL database, shared by the
/// region's primary and secondary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegionStore {
    Sqlite(PathBuf),
    Postgres(String),
}

impl RegionStore {
    /// The `--store` argument of the region's origins.
    pub fn argument(&self) -> String {
        match self {
            RegionStore::Sqlite(path) => path.display().to_string(),
            RegionStore::Postgres(url) => url.clone(),
        }
    }

    pub fn read_rows(&self) -> Vec<StoredRow> {
        match self {
            RegionStore::Sqlite(path) => read_rows(path),
            RegionStore::Postgres(url) => read_pg_rows(url),
        }
    }
}

pub struct OriginSpec {
    pub region: String,
    pub primary: u16,
    pub secondary: u16,
    /// The operations listeners (`/health`, `/v1/count`) of the primary and the secondary.
    pub primary_ops: u16,
    pub secondary_ops: u16,
    pub store: RegionStore,
    pub key: String,
    pub person_key: String,
}

impl OriginSpec {
    /// The operations port of the origin whose submissions port is `port`.
    pub fn ops_port(&self, port: u16) -> u16 {
        if port == self.primary {
            self.primary_ops
        } else {
            self.secondary_ops
        }
    }
}

/// Which store the stack's origins use.
pub enum Backend<'a> {
    Sqlite,
    /// One database per region on this server.
    Postgres(&'a PgServer),
}

/// The local stack: two origins per region sharing that region's store, and the worker.
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
/// The `Harbour-Challenge` value for `key`: the challenge of the form description the edge on
/// `port` hands out, solved.
pub fn proof_from(port: u16, key: &str) -> String {
    let form = request(port, "GET", "/api/campaigns/spring-launch", &[], b"");
    let challenge = &form.json()["challenge"];
    let token = challenge["token"].as_str().expect("a challenge");
    let bits = challenge["difficulty_bits"]
        .as_u64()
        .expect("its difficulty") as u8;
    harbour_core::phase::challenge::solution(
        token,
        &harbour_core::phase::challenge::solve(token, key, bits),
    )
}

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

/// The arguments and environment that start a region's origin on `port` (ops on `ops_port`).
pub fn origin_command(spec: &OriginSpec, port: u16, ops_port: u16) -> Command {
    let mut command = Command::new(origin_binary());
    command
        .args(["--region", &spec.region])
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args(["--ops-listen", &format!("127.0.0.1:{ops_port}")])
        .args(["--store", &spec.store.argument()])
        .env(harbour_contract::env::key_var(&spec.region), &spec.key)
        .env(person_key_var(&spec.region), &spec.person_key);
    command
}

/// The variable of a region's person key (see `harbour_origin::person`).
pub fn person_key_var(region: &str) -> String {
    format!(
        "HARBOUR_PERSON_KEY_{}",
        region.to_ascii_uppercase().replace('-', "_")
    )
}

impl Stack {
    pub fn start(name: &str) -> Stack {
        Stack::start_on(name, Backend::Sqlite)
    }

    pub fn start_on(name: &str, backend: Backend) -> Stack {
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
                primary_ops: free_port(),
                secondary_ops: free_port(),
                store: match &backend {
                    Backend::Sqlite => RegionStore::Sqlite(dir.join(format!("{region}.sqlite"))),
                    Backend::Postgres(cluster) => {
                        RegionStore::Postgres(cluster.database(&format!("{name}_{region}")))
                    }
                },
                key: format!("e2e-{region}-{i}-0123456789abcdefghijklmnopqrstuvwxyz"),
                person_key: format!("e2e-person-{region}-{i}-0123456789abcdefghijklmnop"),
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
        self.start_origin_on(port, port);
    }

    /// Starts the origin that `port` names in the worker's configuration, listening on `listen`
    /// instead (a test may put something between the worker and the origin).
    pub fn start_origin_on(&mut self, port: u16, listen: u16) {
        self.launch_origin(port, listen, &[]);
    }

    /// An origin with more arguments, e.g. `["--max-in-flight", "0"]`.
    pub fn start_origin_with(&mut self, port: u16, extra: &[&str]) {
        self.launch_origin(port, port, extra);
    }

    fn launch_origin(&mut self, port: u16, listen: u16, extra: &[&str]) {
        let spec = self.spec_for_port(port);
        let ops = spec.ops_port(port);
        let log = std::fs::File::create(
            self.dir
                .join(format!("origin-{}-{listen}.log", spec.region)),
        )
        .unwrap();
        let mut command = origin_command(spec, listen, ops);
        command.args(extra).stdout(Stdio::null()).stderr(log);
        let process = Process::spawn(&format!("origin {} :{listen}", spec.region), &mut command);
        self.origin_processes.insert(port, process);
        wait_until(
            &format!("origin :{listen}"),
            Duration::from_secs(20),
            || responds(ops, "/health"),
        );
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
                harbour_contract::env::origins_var(&o.region),
                o.primary,
                o.secondary
            ));
            secrets.push_str(&format!(
                "{}={}\n",
                harbour_contract::env::key_var(&o.region),
                o.key
            ));
        }
        secrets.push_str(&format!(
            "{}={}\n",
            harbour_contract::env::FORM_KEY_VAR,
            self.form_key
        ));
        // The rate-limiting bindings with the policy's own limits: wrangler dev simulates them.
        let config = format!(
            "name = \"harbour-e2e\"\nmain = \"{main}\"\ncompatibility_date = \"2025-09-01\"\n\n\
             [assets]\ndirectory = \"{www}\"\nnot_found_handling = \"none\"\n\n{ratelimits}[vars]\n{vars}",
            main = root.join("build/worker/shim.mjs").display(),
            www = root.join("www").display(),
            ratelimits = wrangler_ratelimits(),
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
        harbour_core::phase::challenge::solution(
            token,
            &harbour_core::phase::challenge::solve(token, key, *bits),
        )
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

    /// Rows stored per region, read from the stores themselves (SQLite files or databases).
    pub fn stored(&self) -> HashMap<String, Vec<StoredRow>> {
        self.origins
            .iter()
            .map(|o| (o.region.clone(), o.store.read_rows()))
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
                        let r = request(o.ops_port(port), "GET", "/v1/count", &[], b"");
                        total += r.json()["received"].as_u64().unwrap_or(0);
                    }
                }
                (o.region.clone(), total)
            })
            .collect()
    }

    /// What an origin's `/v1/load` reports: bound, in flight, most in flight, shed.
    /// What the origin on `port` reports of its in-flight bound (from its operations listener).
    pub fn load(&self, port: u16) -> serde_json::Value {
        let ops = self.spec_for_port(port).ops_port(port);
        request(ops, "GET", "/v1/load", &[], b"").json()
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

/// The rows of a region's PostgreSQL database, in the order they were stored.
pub fn read_pg_rows(url: &str) -> Vec<StoredRow> {
    let Ok(mut client) = postgres::Client::connect(url, postgres::NoTls) else {
        return Vec::new();
    };
    let Ok(rows) = client.query(
        "SELECT receipt_id, region, idempotency_key, platform_country, declared_country, \
         payload::text FROM submissions ORDER BY seq",
        &[],
    ) else {
        return Vec::new();
    };
    rows.iter()
        .map(|row| StoredRow {
            receipt_id: row.get(0),
            region: row.get(1),
            idempotency_key: row.get(2),
            platform_country: row.get(3),
            declared_country: row.get(4),
            payload: serde_json::from_str(row.get::<_, &str>(5)).unwrap_or_default(),
        })
        .collect()
}

/// A PostgreSQL server started by `scripts/pg`: what a test needs to use, stop and restart it.
#[derive(Clone, Debug)]
pub struct PgServer {
    pub dir: PathBuf,
    pub port: u16,
}

/// A throwaway PostgreSQL cluster on a free loopback port (`scripts/pg`), destroyed on drop.
pub struct PgCluster {
    pub server: PgServer,
}

fn pg_script(args: &[&str]) -> String {
    let output = Command::new("bash")
        .arg(workspace_root().join("scripts/pg"))
        .args(args)
        .stderr(Stdio::inherit())
        .output()
        .unwrap_or_else(|e| panic!("scripts/pg {args:?}: {e}"));
    assert!(output.status.success(), "scripts/pg {args:?} failed");
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

impl PgServer {
    /// The URL of database `name`, created if missing.
    pub fn database(&self, name: &str) -> String {
        let dir = self.dir.display().to_string();
        pg_script(&["createdb", &dir, name]);
        pg_script(&["url", &dir, name])
    }

    /// Stops the server (fast shutdown: sessions are ended), as an outage would.
    pub fn stop(&self) {
        pg_script(&["stop", &self.dir.display().to_string()]);
    }

    /// Starts it again on the same port.
    pub fn restart(&self) {
        pg_script(&["start", &self.dir.display().to_string()]);
    }
}

impl PgCluster {
    pub fn start(dir: &Path) -> PgCluster {
        let _ = Command::new("bash")
            .arg(workspace_root().join("scripts/pg"))
            .args(["destroy", &dir.display().to_string()])
            .status();
        let port = pg_script(&["start", &dir.display().to_string()])
            .parse()
            .unwrap();
        PgCluster {
            server: PgServer {
                dir: dir.to_path_buf(),
                port,
            },
        }
    }
}

impl std::ops::Deref for PgCluster {
    type Target = PgServer;
    fn deref(&self) -> &PgServer {
        &self.server
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(workspace_root().join("scripts/pg"))
            .args(["destroy", &self.dir.display().to_string()])
            .status();
    }
}

/// A relay from `listen` to the origin on `upstream` that passes every request on and swallows
/// every answer: the origin does its work (and commits) but its answer never reaches the caller,
/// whose connection stays open until it gives up. What the caller meets is an origin that
/// committed and then never answered.
pub struct AnswerSwallower {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    swallowed: std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl AnswerSwallower {
    pub fn bind(listen: u16, upstream: u16) -> AnswerSwallower {
        use std::sync::atomic::Ordering::Relaxed;
        let listener = TcpListener::bind(("127.0.0.1", listen)).unwrap();
        listener.set_nonblocking(true).unwrap();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let swallowed = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (flag, sink) = (stop.clone(), swallowed.clone());
        let thread = std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(120);
            let mut relays = Vec::new();
            while !flag.load(Relaxed) && Instant::now() < deadline {
                let Ok((client, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(10));
                    continue;
                };
                let Ok(mut origin) = TcpStream::connect(("127.0.0.1", upstream)) else {
                    continue;
                };
                let _ = client.set_nonblocking(false);
                let _ = origin.set_read_timeout(Some(Duration::from_millis(100)));
                let (flag, sink) = (flag.clone(), sink.clone());
                relays.push(std::thread::spawn(move || {
                    // Requests go up; answers are read and kept, never sent down.
                    let mut up = origin.try_clone().unwrap();
                    let mut down = client.try_clone().unwrap();
                    let pump = std::thread::spawn(move || {
                        let _ = std::io::copy(&mut down, &mut up);
                        let _ = up.shutdown(std::net::Shutdown::Write);
                    });
                    let mut buffer = [0u8; 4096];
                    while !flag.load(Relaxed) && Instant::now() < deadline {
                        match origin.read(&mut buffer) {
                            Ok(0) => break,
                            Ok(n) => sink.lock().unwrap().extend_from_slice(&buffer[..n]),
                            Err(e)
                                if e.kind() == std::io::ErrorKind::WouldBlock
                                    || e.kind() == std::io::ErrorKind::TimedOut => {}
                            Err(_) => break,
                        }
                    }
                    let _ = client.shutdown(std::net::Shutdown::Both);
                    let _ = pump.join();
                }));
            }
            for relay in relays {
                let _ = relay.join();
            }
        });
        AnswerSwallower {
            stop,
            swallowed,
            thread: Some(thread),
        }
    }

    /// Every byte the origin answered, none of which reached the caller.
    pub fn swallowed(&self) -> String {
        String::from_utf8_lossy(&self.swallowed.lock().unwrap()).into_owned()
    }
}

impl Drop for AnswerSwallower {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
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
