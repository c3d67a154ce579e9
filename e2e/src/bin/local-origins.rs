//! The local origins `scripts/run` starts, from the two files that define them: every region of
//! the shipped policy, with the ports of its `HARBOUR_ORIGINS_<REGION>` URLs in `wrangler.toml`'s
//! `[vars]` (what the worker under `wrangler dev` will call).
//!
//! `local-origins [CONFIG]` prints one line each, for the shell:
//!
//! ```text
//! key HARBOUR_KEY_CN                  the region's signing-key variable (.dev.vars)
//! person-key HARBOUR_PERSON_KEY_CN    the region's person key (origins only; .run/person-keys.env)
//! origin cn 8701 9701                 an origin to start: region, port on 127.0.0.1 (primary
//!                                     first), and its operations port (the port + 1000)
//! key HARBOUR_FORM_KEY                the challenges' key, last (.dev.vars)
//! ```
//!
//! `local-origins start (--sqlite DIR | --postgres CLUSTER_DIR) [CONFIG]` starts those origins
//! with the harness's origin launcher: each region's primary and secondary share one store, the
//! SQLite file `DIR/<region>.sqlite` or the database `harbour_<region>` of the cluster
//! `scripts/pg` runs in `CLUSTER_DIR`. Their keys come from the environment (`HARBOUR_KEY_<REGION>`,
//! `HARBOUR_PERSON_KEY_<REGION>`), their logs go to this process's standard error. It waits until
//! each answers `/health`, says so, and runs until every origin has exited. The origins stay in
//! this process's group: signalling the group (as `scripts/run` does on Ctrl-C) stops them all.
//!
//! `CONFIG` is read instead of the workspace's `wrangler.toml`. Exits non-zero, naming each entry,
//! when a region has no origins variable, or an origin is not `http://127.0.0.1:<port>` (only
//! those can be started here) or shares its port (or its operations port) with another.

use std::path::PathBuf;
use std::process::Child;

use harbour_e2e::origin::{local_plan, LocalPlan, OriginLaunch};
use harbour_e2e::pg::PgServer;
use harbour_e2e::project::workspace_root;

const USAGE: &str =
    "usage: local-origins [CONFIG] | local-origins start (--sqlite DIR | --postgres CLUSTER_DIR) [CONFIG]";

/// Where each region's store is.
enum Stores {
    Sqlite(PathBuf),
    Postgres(PgServer),
}

impl Stores {
    fn of(&self, region: &str) -> String {
        match self {
            Stores::Sqlite(dir) => dir.join(format!("{region}.sqlite")).display().to_string(),
            Stores::Postgres(server) => server.database(&format!("harbour_{region}")),
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (stores, config) = match args.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        [] => (None, None),
        [config] if !config.starts_with('-') && config != "start" => (None, Some(config)),
        ["start", flag, dir, ref rest @ ..] if rest.len() <= 1 => {
            let dir = PathBuf::from(dir);
            let stores = match flag {
                "--sqlite" => Stores::Sqlite(dir),
                "--postgres" => Stores::Postgres(PgServer { dir }),
                _ => fail(&[USAGE.into()]),
            };
            (Some(stores), rest.first().copied())
        }
        _ => fail(&[USAGE.into()]),
    };
    let path = config.map_or_else(|| workspace_root().join("wrangler.toml"), PathBuf::from);
    let plan = local_plan(&path).unwrap_or_else(|problems| fail(&problems));
    match stores {
        None => print!("{}", plan.lines),
        Some(stores) => start(&plan, &stores),
    }
}

/// Starts every origin of `plan`, waits until each is healthy, then until all have exited.
fn start(plan: &LocalPlan, stores: &Stores) {
    let mut children: Vec<(OriginLaunch, Child)> = Vec::new();
    let mut store = (String::new(), String::new());
    for origin in &plan.origins {
        if store.0 != origin.region {
            store = (origin.region.clone(), stores.of(&origin.region));
        }
        let launch = OriginLaunch {
            region: origin.region.clone(),
            port: origin.port,
            ops_port: origin.ops_port,
            store: store.1.clone(),
            extra: Vec::new(),
            secrets: None,
        };
        match launch.command().spawn() {
            Ok(child) => children.push((launch, child)),
            Err(e) => fail(&[format!("cannot start harbour-origin: {e}")]),
        }
    }
    for (launch, child) in &mut children {
        if let Err(e) = launch.wait_healthy(|| matches!(child.try_wait(), Ok(None))) {
            fail(&[format!(
                "the {} origin on :{}: {e}",
                launch.region, launch.port
            )]);
        }
    }
    eprintln!("local-origins: {} origins up", children.len());
    for (_, child) in &mut children {
        let _ = child.wait();
    }
}

/// Prints each problem and exits non-zero; the origins started so far are in this process group
/// and are stopped with it by whoever started it.
fn fail(problems: &[String]) -> ! {
    for problem in problems {
        eprintln!("local-origins: {problem}");
    }
    std::process::exit(1);
}
