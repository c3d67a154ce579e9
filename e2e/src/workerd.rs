//! The one writer of `workerd serve` configurations, for the e2e tests and the bench: workers
//! (a build directory's `shim.mjs` and `index.wasm`, or plain modules), their text bindings, the
//! location's rate-limiting bindings and the Analytics Engine dataset, each behind a loopback
//! socket, all with the `compatibility_date` of `wrangler.toml`. capnp `embed` paths are relative
//! to the config file, which this writes beside the paths it makes relative.
//!
//! The dataset is workerd's own `analyticsEngine` binding (it needs `--experimental`, which the
//! configuration's `command` adds), forwarding every data point to `bench/recorder.js`, which
//! keeps them and serves them on a loopback port of its own: the same `writeDataPoint` calls the
//! platform takes, where the live view and the rehearsal's report read them.

use std::path::{Component, Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use harbour_contract::points::ANALYTICS_BINDING;

use crate::http::{request, responds, Response};
use crate::policy::location_limits;
use crate::process::{wait_until, Process};
use crate::project::{compatibility_date, workspace_root};
use crate::proof::Prepared;

/// The module `wrangler dev` itself simulates the rate-limiting binding with (from wrangler's
/// miniflare): workerd has no such binding, so the harness wraps this one.
const SIMULATED_RATE_LIMIT: &str =
    "node_modules/miniflare/dist/src/workers/ratelimit/ratelimit.worker.js";
/// The name the wrapped binding's module has inside workerd.
const RATE_LIMIT_MODULE: &str = "harbour-test:ratelimit";
/// Every worker's outbound fetches go through this service.
const OUTBOUND: &str = "loopback";
/// The local stand-in for Analytics Engine: its service and module.
const RECORDER: &str = "recorder";
const RECORDER_MODULE: &str = "bench/recorder.js";

/// One module of a worker.
#[derive(Clone, Debug)]
pub enum Module {
    Es(String, PathBuf),
    Wasm(String, PathBuf),
    Json(String, PathBuf),
}

/// A worker: its modules and bindings.
#[derive(Clone, Debug)]
pub struct Worker {
    name: String,
    modules: Vec<Module>,
    texts: Vec<(String, String)>,
    rate_limits: bool,
    analytics: bool,
}

impl Worker {
    /// A worker made of `modules`; `name` is its service, socket and capnp constant.
    pub fn new(name: &str, modules: Vec<Module>) -> Worker {
        Worker {
            name: name.to_owned(),
            modules,
            texts: Vec::new(),
            rate_limits: false,
            analytics: false,
        }
    }

    /// harbour as `scripts/build` leaves it in `dir` (`build/worker`, or another build's).
    pub fn build(name: &str, dir: &Path) -> Worker {
        Worker::new(
            name,
            vec![
                Module::Es("shim.mjs".into(), dir.join("shim.mjs")),
                Module::Wasm("index.wasm".into(), dir.join("index.wasm")),
            ],
        )
    }

    /// A text binding (a variable or a secret).
    pub fn text(mut self, name: &str, value: &str) -> Worker {
        self.texts.push((name.to_owned(), value.to_owned()));
        self
    }

    pub fn texts(mut self, pairs: &[(String, String)]) -> Worker {
        self.texts.extend_from_slice(pairs);
        self
    }

    /// Every rate-limiting binding the shipped policy needs, with its limit and period.
    pub fn with_rate_limits(mut self) -> Worker {
        self.rate_limits = true;
        self
    }

    /// The Analytics Engine dataset (`HARBOUR_ANALYTICS`), recorded by the configuration's
    /// recorder (`WorkerdConfig::record_analytics`).
    pub fn with_analytics(mut self) -> Worker {
        self.analytics = true;
        self
    }
}

/// The request header the tests' sockets have workerd read `request.cf` from.
pub const TEST_CF_HEADER: &str = "x-test-cf";

/// Sends a JSON `body` to `path` of the worker on `port` (a socket reading `TEST_CF_HEADER`) as
/// a visitor in `country` at `ip`, with `prepared`'s key, proof of work and notice.
pub fn submit_as(
    port: u16,
    path: &str,
    country: &str,
    ip: &str,
    prepared: &Prepared,
    body: &str,
) -> Response {
    let blob = format!("{{\"country\":\"{country}\"}}");
    let mut headers = vec![
        ("content-type", "application/json"),
        (TEST_CF_HEADER, blob.as_str()),
        ("cf-connecting-ip", ip),
    ];
    headers.extend(prepared.headers());
    request(port, "POST", path, &headers, body.as_bytes())
}

/// Where a worker listens: a loopback port, and the request header workerd reads `request.cf`
/// from (what the platform would fill in), if any.
#[derive(Clone, Copy, Debug)]
pub struct Socket {
    pub port: u16,
    pub cf_header: Option<&'static str>,
}

/// A `workerd serve` configuration being put together.
pub struct WorkerdConfig {
    dir: PathBuf,
    allow: Vec<String>,
    served: Vec<(Worker, Socket)>,
    rate_limit_module: PathBuf,
    /// The recorder's loopback port, when data points are recorded.
    recorder: Option<u16>,
    /// V8 flags for every isolate (workerd's `v8Flags`), for diagnosis.
    v8_flags: Vec<String>,
}

impl WorkerdConfig {
    /// A configuration to be written into `dir`, whose workers may fetch the networks `allow`
    /// names (workerd's `network.allow`: `local`, `private`, ...).
    pub fn new(dir: &Path, allow: &[&str]) -> WorkerdConfig {
        WorkerdConfig {
            dir: dir.to_path_buf(),
            allow: allow.iter().map(|a| (*a).to_owned()).collect(),
            served: Vec::new(),
            rate_limit_module: workspace_root().join(SIMULATED_RATE_LIMIT),
            recorder: None,
            v8_flags: Vec::new(),
        }
    }

    /// Passes `flags` to V8 in every isolate (`--trace-gc` logs each collection and its pause).
    pub fn v8_flags(mut self, flags: Vec<String>) -> WorkerdConfig {
        self.v8_flags = flags;
        self
    }

    /// Records the data points of the workers `with_analytics`, served on `port` (`GET
    /// /points?since_s=`).
    pub fn record_analytics(mut self, port: u16) -> WorkerdConfig {
        self.recorder = Some(port);
        self
    }

    /// `workerd serve` on this configuration, written to `file`: with `--experimental` when it
    /// records data points (workerd keeps its Analytics Engine binding behind the flag), so that
    /// every worker beside the recorder runs under the same flags.
    pub fn command(&self, file: &str) -> Command {
        let mut command = serve_command(&self.write(file));
        if self.recorder.is_some() {
            command.arg("--experimental");
        }
        command
    }

    /// Serves `worker` on `socket`.
    pub fn serve(mut self, worker: Worker, socket: Socket) -> WorkerdConfig {
        self.served.push((worker, socket));
        self
    }

    /// The rate-limiting bindings come from `module` (default export: `{namespaceId, limit,
    /// period}` → the binding) instead of wrangler dev's simulation.
    pub fn rate_limits_from(mut self, module: &Path) -> WorkerdConfig {
        self.rate_limit_module = module.to_path_buf();
        self
    }

    /// The configuration's text.
    pub fn text(&self) -> String {
        let date = compatibility_date();
        let mut text = String::from("using Workerd = import \"/workerd/workerd.capnp\";\n");
        text.push_str("const config :Workerd.Config = (\n  services = [\n");
        for (worker, _) in &self.served {
            text.push_str(&format!(
                "    (name = \"{0}\", worker = .{0}),\n",
                worker.name
            ));
        }
        if self.recorder.is_some() {
            text.push_str(&format!(
                "    (name = \"{RECORDER}\", worker = .{RECORDER}),\n"
            ));
        }
        let allow: Vec<String> = self.allow.iter().map(|a| format!("\"{a}\"")).collect();
        text.push_str(&format!(
            "    (name = \"{OUTBOUND}\", network = (allow = [{}])),\n  ],\n  sockets = [\n",
            allow.join(", ")
        ));
        for (worker, socket) in &self.served {
            text.push_str(&socket_line(&worker.name, socket));
        }
        if let Some(port) = self.recorder {
            let socket = Socket {
                port,
                cf_header: None,
            };
            text.push_str(&socket_line(RECORDER, &socket));
        }
        text.push_str("  ],\n");
        if !self.v8_flags.is_empty() {
            let quoted: Vec<String> = self.v8_flags.iter().map(|f| format!("{f:?}")).collect();
            text.push_str(&format!("  v8Flags = [{}],\n", quoted.join(", ")));
        }
        if self.served.iter().any(|(w, _)| w.rate_limits) {
            text.push_str(&format!(
                "  extensions = [(modules = [(name = \"{RATE_LIMIT_MODULE}\", esModule = embed \"{}\", internal = true)])],\n",
                self.embed(&self.rate_limit_module)
            ));
        }
        text.push_str(");\n");
        for (worker, _) in &self.served {
            text.push_str(&self.worker_text(worker, &date));
        }
        if self.recorder.is_some() {
            let recorder = Worker::new(
                RECORDER,
                vec![Module::Es(
                    "recorder.js".into(),
                    workspace_root().join(RECORDER_MODULE),
                )],
            );
            text.push_str(&self.worker_text(&recorder, &date));
        }
        text
    }

    fn worker_text(&self, worker: &Worker, date: &str) -> String {
        let mut text = format!("const {} :Workerd.Worker = (\n  modules = [\n", worker.name);
        for module in &worker.modules {
            let (name, kind, path) = match module {
                Module::Es(name, path) => (name, "esModule", path),
                Module::Wasm(name, path) => (name, "wasm", path),
                Module::Json(name, path) => (name, "json", path),
            };
            let path = self.embed(path);
            text.push_str(&format!(
                "    (name = \"{name}\", {kind} = embed \"{path}\"),\n"
            ));
        }
        text.push_str(&format!(
            "  ],\n  compatibilityDate = \"{date}\",\n  bindings = [\n"
        ));
        for (name, value) in &worker.texts {
            text.push_str(&format!("    (name = \"{name}\", text = \"{value}\"),\n"));
        }
        if worker.rate_limits {
            text.push_str(&rate_limit_bindings());
        }
        if worker.analytics {
            assert!(
                self.recorder.is_some(),
                "{} has the Analytics Engine binding but the configuration records none (record_analytics)",
                worker.name
            );
            text.push_str(&format!(
                "    (name = \"{ANALYTICS_BINDING}\", analyticsEngine = \"{RECORDER}\"),\n"
            ));
        }
        text.push_str(&format!("  ],\n  globalOutbound = \"{OUTBOUND}\",\n);\n"));
        text
    }

    /// `path` as an `embed` of a config file in `dir`.
    fn embed(&self, path: &Path) -> String {
        assert!(path.exists(), "{} is missing", path.display());
        relative(&self.dir, path)
    }

    /// Writes the configuration to `file` in its directory; the path written.
    pub fn write(&self, file: &str) -> PathBuf {
        std::fs::create_dir_all(&self.dir).expect("the config's directory");
        let path = self.dir.join(file);
        std::fs::write(&path, self.text()).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        path
    }

    /// Writes it to `file` and starts `workerd serve` on it, output appended to `log`, waiting
    /// (up to 30 s) until the worker on `ready_port` answers its form description.
    pub fn start(&self, file: &str, log: &Path, ready_port: u16) -> Process {
        let mut command = self.command(file);
        let log = std::fs::File::create(log).unwrap_or_else(|e| panic!("{}: {e}", log.display()));
        command
            .stdout(log.try_clone().expect("a second handle"))
            .stderr(log);
        let process = Process::spawn("workerd", &mut command);
        wait_until("workerd", Duration::from_secs(30), || {
            responds(ready_port, "/api/campaigns/spring-launch")
        });
        process
    }
}

fn socket_line(name: &str, socket: &Socket) -> String {
    let http = socket
        .cf_header
        .map_or_else(String::new, |h| format!("cfBlobHeader = \"{h}\""));
    format!(
        "    (name = \"{name}\", address = \"127.0.0.1:{}\", http = ({http}), service = \"{name}\"),\n",
        socket.port
    )
}

/// Each rate-limiting binding of the policy as workerd's wrapped binding over the module.
fn rate_limit_bindings() -> String {
    location_limits()
        .iter()
        .map(|l| {
            format!(
                "    (name = \"{0}\", wrapped = (moduleName = \"{RATE_LIMIT_MODULE}\", innerBindings = [(name = \"namespaceId\", text = \"{0}\"), (name = \"limit\", json = \"{1}\"), (name = \"period\", json = \"{2}\")])),\n",
                l.binding_name(),
                l.limit,
                l.period_s
            )
        })
        .collect()
}

/// `workerd serve CONFIG`, output not yet directed.
pub fn serve_command(config: &Path) -> Command {
    let mut command = Command::new(workerd_binary());
    command.arg("serve").arg(config).stdin(Stdio::null());
    command
}

/// The workerd binary wrangler installed: the platform package's own executable where there is
/// one (its pid is then workerd's, whose CPU the bench reads), else `node_modules/.bin/workerd`.
pub fn workerd_binary() -> PathBuf {
    let root = workspace_root();
    let native = root.join("node_modules/@cloudflare/workerd-linux-64/bin/workerd");
    if cfg!(all(target_os = "linux", target_arch = "x86_64")) && native.is_file() {
        native
    } else {
        root.join("node_modules/.bin/workerd")
    }
}

/// `to` relative to the directory `from` (both absolute, or both relative to one place).
pub fn relative(from: &Path, to: &Path) -> String {
    fn normal(p: &Path) -> Vec<Component<'_>> {
        p.components().filter(|c| *c != Component::CurDir).collect()
    }
    let (from, to) = (normal(from), normal(to));
    let common = from.iter().zip(&to).take_while(|(a, b)| a == b).count();
    let mut parts: Vec<String> = vec!["..".into(); from.len() - common];
    parts.extend(
        to[common..]
            .iter()
            .map(|c| c.as_os_str().to_string_lossy().into_owned()),
    );
    parts.join("/")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_paths_climb_to_the_common_directory() {
        let root = Path::new("/w");
        assert_eq!(
            relative(
                &root.join("target/e2e/x"),
                &root.join("build/worker/shim.mjs")
            ),
            "../../../build/worker/shim.mjs"
        );
        assert_eq!(
            relative(
                &root.join("target/bench"),
                &root.join("target/bench/other/a.js")
            ),
            "other/a.js"
        );
    }

    #[test]
    fn a_config_names_each_worker_its_socket_and_the_compatibility_date() {
        let root = workspace_root();
        let worker = Worker::new(
            "peer",
            vec![Module::Es("peer.js".into(), root.join("bench/peer.js"))],
        )
        .text("HARBOUR_FORM_KEY", "k")
        .with_rate_limits()
        .with_analytics();
        let socket = Socket {
            port: 1234,
            cf_header: Some("x-test-cf"),
        };
        let config = WorkerdConfig::new(&root.join("target/bench"), &["local"])
            .serve(worker, socket)
            .record_analytics(4321);
        let text = config.text();
        let args: Vec<_> = config
            .command("test.capnp")
            .get_args()
            .map(|a| a.to_owned())
            .collect();
        assert!(args.iter().any(|a| a == "--experimental"), "{args:?}");
        for wanted in [
            "(name = \"peer\", worker = .peer)",
            "address = \"127.0.0.1:1234\", http = (cfBlobHeader = \"x-test-cf\")",
            "esModule = embed \"../../bench/peer.js\"",
            &format!("compatibilityDate = \"{}\"", compatibility_date()),
            "(name = \"HARBOUR_FORM_KEY\", text = \"k\")",
            "HARBOUR_RL_5_PER_60S",
            "extensions = [",
            "(name = \"HARBOUR_ANALYTICS\", analyticsEngine = \"recorder\")",
            "(name = \"recorder\", address = \"127.0.0.1:4321\"",
            "esModule = embed \"../../bench/recorder.js\"",
        ] {
            assert!(text.contains(wanted), "{wanted} not in\n{text}");
        }
    }
}
