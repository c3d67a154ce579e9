//! The local stack the end-to-end suites drive: two reference origins per region of the policy
//! (primary and secondary, sharing the region's store), started with the origin launcher, and the
//! release worker under `wrangler dev` with a configuration of its own. Also what a test asks of
//! it: submissions as the campaign page sends them, and what the origins received and stored.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::Duration;

use harbour_contract::env::{key_var, origins_var, FORM_KEY_VAR};

use crate::http::{request, responds, Response};
use crate::origin::{OriginLaunch, OriginSecrets};
use crate::pg::PgServer;
use crate::policy::{regions, wrangler_ratelimits};
use crate::process::{free_port, wait_until, Process};
use crate::project::{compatibility_date, workspace_root};
use crate::proof::{new_key, Challenge, Prepared};
use crate::rows::{RegionStore, StoredRow};

const SUBMIT_PATH: &str = "/api/campaigns/spring-launch/submissions";

/// A region's origins: their ports, their store and their secrets.
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

    /// How to start the origin the worker knows as `port`, listening on `listen`.
    pub fn launch(&self, port: u16, listen: u16, extra: &[&str]) -> OriginLaunch {
        OriginLaunch {
            region: self.region.clone(),
            port: listen,
            ops_port: self.ops_port(port),
            store: self.store.argument(),
            extra: extra.iter().map(|a| (*a).to_owned()).collect(),
            secrets: Some(OriginSecrets {
                key: self.key.clone(),
                person_key: self.person_key.clone(),
            }),
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
    challenge: Mutex<Option<Challenge>>,
}

impl Stack {
    pub fn start(name: &str) -> Stack {
        Stack::start_on(name, Backend::Sqlite)
    }

    pub fn start_on(name: &str, backend: Backend) -> Stack {
        let dir = workspace_root().join("target/e2e").join(name);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("the stack's directory");
        let origins = regions()
            .into_iter()
            .enumerate()
            .map(|(i, region)| spec(&dir, name, &backend, i, region))
            .collect();
        let mut stack = Stack {
            dir,
            port: free_port(),
            origins,
            form_key: "e2e-form-key-0123456789abcdefghijklmnopqrstuvwxyz".into(),
            origin_processes: HashMap::new(),
            wrangler: None,
            challenge: Mutex::new(None),
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
        self.origins
            .iter()
            .find(|o| o.region == region)
            .unwrap_or_else(|| panic!("no origins for region {region}"))
    }

    pub fn start_origin(&mut self, port: u16) {
        self.launch_origin(port, port, &[]);
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
        let log = self
            .dir
            .join(format!("origin-{}-{listen}.log", spec.region));
        let process = spec.launch(port, listen, extra).start(&log);
        self.origin_processes.insert(port, process);
    }

    pub fn stop_origin(&mut self, port: u16) {
        if let Some(mut process) = self.origin_processes.remove(&port) {
            process.stop();
        }
    }

    /// `wrangler dev` with a config of its own beside its own .dev.vars, so a developer's
    /// .dev.vars and state never leak into the test.
    fn start_worker(&mut self) {
        let root = workspace_root();
        let mut vars = String::new();
        let mut secrets = String::new();
        for o in &self.origins {
            let origins_var = origins_var(&o.region);
            vars.push_str(&format!(
                "{origins_var} = \"http://127.0.0.1:{} http://127.0.0.1:{}\"\n",
                o.primary, o.secondary
            ));
            secrets.push_str(&format!("{}={}\n", key_var(&o.region), o.key));
        }
        secrets.push_str(&format!("{FORM_KEY_VAR}={}\n", self.form_key));
        // The rate-limiting bindings with the policy's own limits: wrangler dev simulates them.
        let config = format!(
            "name = \"harbour-e2e\"\nmain = \"{main}\"\ncompatibility_date = \"{date}\"\n\n\
             [assets]\ndirectory = \"{www}\"\nnot_found_handling = \"none\"\n\n{ratelimits}[vars]\n{vars}",
            main = root.join("build/worker/shim.mjs").display(),
            date = compatibility_date(),
            www = root.join("www").display(),
            ratelimits = wrangler_ratelimits(),
        );
        std::fs::write(self.dir.join("wrangler.toml"), config).expect("wrangler.toml");
        std::fs::write(self.dir.join(".dev.vars"), secrets).expect(".dev.vars");
        let log = std::fs::File::create(self.dir.join("wrangler.log")).expect("wrangler.log");
        let mut command = Command::new(root.join("node_modules/.bin/wrangler"));
        command
            .current_dir(&self.dir)
            .args(["dev", "--ip", "127.0.0.1", "--port", &self.port.to_string()])
            .args(["--inspector-port", &free_port().to_string()])
            .args(["--show-interactive-dev-session=false", "--log-level", "log"])
            .env("WRANGLER_SEND_METRICS", "false")
            .env("CI", "true")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("a second handle"))
            .stderr(log);
        self.wrangler = Some(Process::spawn("wrangler dev", &mut command));
        let port = self.port;
        wait_until("wrangler dev", Duration::from_secs(120), || {
            responds(port, "/api/campaigns/spring-launch")
        });
    }

    /// The challenge this worker's form description handed out, fetched again when the one in
    /// hand is ten minutes old.
    pub fn challenge(&self) -> Challenge {
        let mut held = self.challenge.lock().unwrap_or_else(|e| e.into_inner());
        match held.as_ref() {
            Some(challenge) if !challenge.stale() => challenge.clone(),
            _ => held.insert(Challenge::fetch(self.port)).clone(),
        }
    }

    /// A `Harbour-Challenge` value for `key`.
    pub fn proof(&self, key: &str) -> String {
        self.challenge().solve(key)
    }

    /// A new key with its work done.
    pub fn prepared(&self) -> Prepared {
        Prepared::new(&self.challenge())
    }

    /// `key` with its work done.
    pub fn prepared_for(&self, key: &str) -> Prepared {
        Prepared::for_key(&self.challenge(), key)
    }

    /// A new key, its `Harbour-Challenge` value and the notice shown, as headers.
    pub fn keyed(&self) -> [(&'static str, String); 3] {
        let prepared = self.prepared();
        [
            ("idempotency-key", prepared.key),
            ("harbour-challenge", prepared.proof),
            ("harbour-notice", prepared.notice),
        ]
    }

    /// A submission as the campaign page would send it, from `country` (via the platform's
    /// `request.cf`, which `wrangler dev` takes from `MF-CF-Blob`) and client address `ip`:
    /// with an idempotency key (a new one unless `extra` has one), a solved challenge for it
    /// (unless `extra` has a `harbour-challenge`) and the notice the page showed (unless `extra`
    /// has a `harbour-notice`); an empty one in `extra` is left out.
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
        let challenge = self.challenge();
        let proof = match given("harbour-challenge") {
            Some(_) => None,
            None => Some(challenge.solve(&key)),
        };
        if given("idempotency-key").is_none() {
            headers.push(("idempotency-key", &key));
        }
        if let Some(proof) = &proof {
            headers.push(("harbour-challenge", proof));
        }
        if given("harbour-notice").is_none() {
            headers.push(("harbour-notice", &challenge.notice));
        }
        headers.extend(extra.iter().filter(|(n, v)| {
            !matches!(*n, "harbour-challenge" | "harbour-notice") || !v.is_empty()
        }));
        request(self.port, "POST", SUBMIT_PATH, &headers, body.as_bytes())
    }

    /// Rows stored per region, read from the stores themselves (SQLite files or databases).
    /// A store that cannot be read fails the test.
    pub fn stored(&self) -> HashMap<String, Vec<StoredRow>> {
        self.origins
            .iter()
            .map(|o| {
                let rows = o.store.read_rows().unwrap_or_else(|e| panic!("{e}"));
                (o.region.clone(), rows)
            })
            .collect()
    }

    /// Submission POSTs each region's running origins received, stored or not. An origin that
    /// does not say fails the test.
    pub fn received(&self) -> HashMap<String, u64> {
        self.origins
            .iter()
            .map(|o| {
                let running = [o.primary, o.secondary]
                    .into_iter()
                    .filter(|port| self.origin_processes.contains_key(port));
                let total = running.map(|port| received_by(o.ops_port(port))).sum();
                (o.region.clone(), total)
            })
            .collect()
    }

    /// What the origin on `port` reports of its in-flight bound: bound, in flight, most in
    /// flight, shed (from its operations listener).
    pub fn load(&self, port: u16) -> serde_json::Value {
        let ops = self.spec_for_port(port).ops_port(port);
        let load = request(ops, "GET", "/v1/load", &[], b"");
        assert_eq!(load.status, 200, "/v1/load of :{port}: {}", load.body);
        load.json()
    }

    pub fn worker_log(&self) -> String {
        std::fs::read_to_string(self.dir.join("wrangler.log")).unwrap_or_default()
    }
}

/// What an origin's `/v1/count` says it received.
fn received_by(ops_port: u16) -> u64 {
    let count = request(ops_port, "GET", "/v1/count", &[], b"");
    match (count.status, count.json()["received"].as_u64()) {
        (200, Some(received)) => received,
        _ => panic!(
            "/v1/count on :{ops_port} answered {}: {}",
            count.status, count.body
        ),
    }
}

/// Region `region`'s origins (the `i`-th of the policy) for the stack `name` in `dir`.
fn spec(
    dir: &std::path::Path,
    name: &str,
    backend: &Backend,
    i: usize,
    region: String,
) -> OriginSpec {
    OriginSpec {
        primary: free_port(),
        secondary: free_port(),
        primary_ops: free_port(),
        secondary_ops: free_port(),
        store: match backend {
            Backend::Sqlite => RegionStore::Sqlite(dir.join(format!("{region}.sqlite"))),
            Backend::Postgres(server) => {
                RegionStore::Postgres(server.database(&format!("{name}_{region}")))
            }
        },
        key: format!("e2e-{region}-{i}-0123456789abcdefghijklmnopqrstuvwxyz"),
        person_key: format!("e2e-person-{region}-{i}-0123456789abcdefghijklmnop"),
        region,
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
