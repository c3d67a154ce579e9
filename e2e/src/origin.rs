//! The one way a reference origin is started, by the e2e stack, the bench and `scripts/run`
//! (through `local-origins start`): `OriginLaunch` holds the region, the loopback ports, the
//! store and any extra flags, and makes the command line and environment; the secrets are given,
//! or left to the environment the caller inherited. Also the local origins `wrangler.toml`'s
//! `[vars]` name for each region of the policy (`local_plan`), which `scripts/run` starts.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use harbour_contract::env::{key_var, origins_var, person_key_var, FORM_KEY_VAR};
use harbour_policy::Policy;

use crate::http::responds;
use crate::process::Process;

/// How long an origin may take to answer its `/health` after it was started.
pub const START_TIMEOUT: Duration = Duration::from_secs(20);

/// A region's signing key and person key, handed to its origins in their environment.
#[derive(Clone, Debug)]
pub struct OriginSecrets {
    pub key: String,
    pub person_key: String,
}

/// Everything one origin process is started with.
#[derive(Clone, Debug)]
pub struct OriginLaunch {
    pub region: String,
    /// Its submissions listener, on 127.0.0.1.
    pub port: u16,
    /// Its operations listener (`/health`, `/v1/count`, `/v1/load`), on 127.0.0.1.
    pub ops_port: u16,
    /// The `--store` argument: a SQLite file or a PostgreSQL URL.
    pub store: String,
    /// More arguments, e.g. `--max-in-flight 2`.
    pub extra: Vec<String>,
    /// `None`: the keys come from the environment the caller inherited (`scripts/run` sources
    /// them from `.dev.vars` and `.run/person-keys.env`).
    pub secrets: Option<OriginSecrets>,
}

impl OriginLaunch {
    /// The command line and environment; output is the caller's to direct.
    pub fn command(&self) -> Command {
        let mut command = Command::new(origin_binary());
        command
            .args(["--region", &self.region])
            .args(["--listen", &format!("127.0.0.1:{}", self.port)])
            .args(["--ops-listen", &format!("127.0.0.1:{}", self.ops_port)])
            .args(["--store", &self.store])
            .args(&self.extra)
            .stdin(Stdio::null());
        if let Some(secrets) = &self.secrets {
            command
                .env(key_var(&self.region), &secrets.key)
                .env(person_key_var(&self.region), &secrets.person_key);
        }
        command
    }

    /// Starts it in a process group of its own, its log appended to `log`, and waits until it
    /// answers `/health`.
    pub fn start(&self, log: &Path) -> Process {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap_or_else(|e| panic!("{}: {e}", log.display()));
        let mut command = self.command();
        command.stdout(Stdio::null()).stderr(log);
        let name = format!("origin {} :{}", self.region, self.port);
        let mut process = Process::spawn(&name, &mut command);
        if let Err(e) = self.wait_healthy(|| process.running()) {
            panic!("{name}: {e}");
        }
        process
    }

    /// Waits until `/health` answers 200; an error when `running` says the process ended or
    /// `START_TIMEOUT` passed.
    pub fn wait_healthy(&self, mut running: impl FnMut() -> bool) -> Result<(), String> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if responds(self.ops_port, "/health") {
                return Ok(());
            }
            if !running() {
                return Err("the origin exited before it answered /health".into());
            }
            if Instant::now() > deadline {
                return Err(format!("no answer on /health within {START_TIMEOUT:?}"));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// The `harbour-origin` binary: `HARBOUR_ORIGIN_BIN`, or the one cargo built beside the running
/// executable (so a release bench starts release origins and a test build debug ones).
pub fn origin_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("HARBOUR_ORIGIN_BIN") {
        return PathBuf::from(path);
    }
    let exe = std::env::current_exe().expect("the running executable's path");
    let mut dir = exe.parent().expect("a directory").to_path_buf();
    // Test executables live in target/<profile>/deps.
    if dir.ends_with("deps") {
        dir.pop();
    }
    let binary = dir.join("harbour-origin");
    assert!(
        binary.is_file(),
        "{} is missing: cargo build -p harbour-origin (with --release for a release tool)",
        binary.display()
    );
    binary
}

/// An origin's operations listener is on its port plus this, for the local origins.
pub const OPS_OFFSET: u16 = 1000;

/// One local origin `wrangler.toml` names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocalOrigin {
    pub region: String,
    pub port: u16,
    pub ops_port: u16,
}

/// The local origins and the secrets' variables, as `local-origins` prints them for the shell.
#[derive(Clone, Debug, Default)]
pub struct LocalPlan {
    /// One line per key variable and per origin, in the policy's order (see `local-origins`).
    pub lines: String,
    /// Primary first within each region.
    pub origins: Vec<LocalOrigin>,
}

/// Every region of the shipped policy, with the ports of its `HARBOUR_ORIGINS_<REGION>` URLs in
/// `wrangler`'s `[vars]`. Every problem at once, naming the entry, when a region has no
/// variable, or an origin is not `http://127.0.0.1:<port>` or shares a port with another.
pub fn local_plan(wrangler: &Path) -> Result<LocalPlan, Vec<String>> {
    let config = crate::project::wrangler_toml(wrangler).map_err(|e| vec![e])?;
    let empty = toml::Table::new();
    let vars = config
        .get("vars")
        .and_then(|v| v.as_table())
        .unwrap_or(&empty);
    let policy = Policy::shipped().map_err(|e| vec![format!("policy/harbour.json: {e}")])?;
    let mut plan = LocalPlan::default();
    let mut problems = Vec::new();
    for region in &policy.regions {
        plan.lines
            .push_str(&format!("key {}\n", key_var(&region.id)));
        plan.lines
            .push_str(&format!("person-key {}\n", person_key_var(&region.id)));
        let name = origins_var(&region.id);
        let Some(urls) = vars.get(&name).and_then(|v| v.as_str()) else {
            problems.push(format!(
                "{} [vars] has no {name} for the policy's region {:?}",
                wrangler.display(),
                region.id
            ));
            continue;
        };
        for url in urls.split([' ', ',']).filter(|url| !url.is_empty()) {
            let at = format!("{} [vars] {name}: {url}", wrangler.display());
            match plan.add(&region.id, url) {
                Ok(()) => {}
                Err(problem) => problems.push(format!("{at}: {problem}")),
            }
        }
    }
    plan.lines.push_str(&format!("key {FORM_KEY_VAR}\n"));
    if problems.is_empty() {
        Ok(plan)
    } else {
        Err(problems)
    }
}

impl LocalPlan {
    fn add(&mut self, region: &str, url: &str) -> Result<(), &'static str> {
        let port = loopback_port(url)
            .ok_or("not http://127.0.0.1:<port>, so no local origin can be started for it")?;
        let taken = |p: u16| self.origins.iter().any(|o| o.port == p || o.ops_port == p);
        if taken(port) {
            return Err("its port is already another origin's");
        }
        let ops_port = port
            .checked_add(OPS_OFFSET)
            .filter(|ops| !taken(*ops))
            .ok_or("its operations port (port + 1000) is not free for it")?;
        self.lines
            .push_str(&format!("origin {region} {port} {ops_port}\n"));
        self.origins.push(LocalOrigin {
            region: region.to_owned(),
            port,
            ops_port,
        });
        Ok(())
    }
}

fn loopback_port(url: &str) -> Option<u16> {
    let port = url.strip_prefix("http://127.0.0.1:")?;
    port.strip_suffix('/').unwrap_or(port).parse().ok()
}
