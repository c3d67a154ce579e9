//! `harbour-origin --region eu --listen 127.0.0.1:8703 --ops-listen 127.0.0.1:9703 --db eu.sqlite`
//!
//! Secrets are read from the environment, never from the command line, where `ps` would show
//! them: the signing key (`HARBOUR_KEY_EU` for region `eu`, or the variable `--key-env` names),
//! the person key for one entry per person (`HARBOUR_PERSON_KEY_EU`, or `--person-key-env`), and
//! a PostgreSQL URL with a password (`HARBOUR_STORE`).
//! `--max-in-flight N` bounds the submissions in flight (default 256); past it, 503
//! `origin_busy` at once (see `in_flight`). The listener's limits (connections, deadlines, the
//! minimum body rate, the body cap) are options too, with the defaults `USAGE` lists (see
//! `listener`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

use harbour_contract::env::{key_var, person_key_var};
use harbour_contract::signature::SigningKey;
use harbour_origin::in_flight::{InFlight, DEFAULT_MAX_IN_FLIGHT, DEFAULT_SPARE_MS};
use harbour_origin::listener::{fit_connections, open_files, Limits};
use harbour_origin::person::PersonRules;
use harbour_origin::server::{serve, tls_config, Origin};
use harbour_origin::store::postgres::DEFAULT_POOL_SIZE;
use harbour_origin::store::{Durability, Location, Store};
use harbour_policy::Policy;

const USAGE: &str = "usage: harbour-origin --region ID --listen ADDR:PORT
         (--db FILE | --store sqlite:FILE | --store postgres://… | HARBOUR_STORE=…)
         [--ops-listen ADDR:PORT] [--tls-cert PEM --tls-key PEM [--tls-client-ca PEM]]
         [--policy FILE]
         [--key-env VAR] [--person-key-env VAR] [--pool-size N] [--durability full|normal]
         [--max-in-flight N] [--spare-ms N] [--max-connections N] [--handshake-timeout S]
         [--head-timeout S] [--body-timeout S] [--min-body-rate BYTES] [--idle-timeout S]
         [--max-body-bytes N] [--commit-window S]
--tls-client-ca PEM: only clients with a certificate from these CAs complete a TLS handshake
  (mTLS: the edge's client certificate; see README, \"Running origins in production\").
The submissions listener's limits (seconds may have decimals):
  --max-in-flight N       verified submissions being stored at once; past it 503 origin_busy (256)
  --spare-ms N            how long a busy answer asks the edge to spare this origin (250)
  --max-connections N     open connections; past it new ones wait in the kernel's backlog and
                          requests still arriving, then idle connections, make room (4096,
                          within the open-file limit; the operations listener: 64)
  --handshake-timeout S   a TLS handshake (5)
  --head-timeout S        a request head, from the connection's start or its first byte (5)
  --body-timeout S        a request body, from the end of its head (5)
  --min-body-rate BYTES   bytes a second a body must average past its grace (1-1.5 s); 0: off (1024)
  --idle-timeout S        a keep-alive connection without a request (60)
  --max-body-bytes N      a request body; a larger one is refused with 413 (32768)
--commit-window S: while submissions come at least this often, each waits at most this
  long for others to share its commit (one synced write for several); 0: never
  (SQLite 0.005, PostgreSQL 0.002)";

/// Where the store is when neither `--store` nor `--db` is given.
const STORE_VAR: &str = "HARBOUR_STORE";

struct Args {
    region: String,
    listen: SocketAddr,
    ops_listen: Option<SocketAddr>,
    store: Location,
    policy: Option<PathBuf>,
    key_env: Option<String>,
    person_key_env: Option<String>,
    durability: Durability,
    /// `None`: the store's own.
    commit_window: Option<Duration>,
    pool_size: usize,
    max_in_flight: usize,
    spare_ms: u64,
    limits: Limits,
    /// `--max-connections` was given (see `listener::fit_connections`).
    connections_given: bool,
    tls: Option<(PathBuf, PathBuf)>,
    tls_client_ca: Option<PathBuf>,
}

fn parse_args() -> Result<Args, String> {
    let (mut region, mut listen, mut ops_listen, mut store) = (None, None, None, None);
    let (mut policy, mut key_env, mut person_key_env) = (None, None, None);
    let (mut tls_cert, mut tls_key, mut tls_client_ca) = (None, None, None);
    let mut durability = Durability::Full;
    let mut commit_window = None;
    let mut pool_size = DEFAULT_POOL_SIZE;
    let mut max_in_flight = DEFAULT_MAX_IN_FLIGHT;
    let mut spare_ms = DEFAULT_SPARE_MS;
    let mut limits = Limits::default();
    let mut connections_given = false;
    let mut args = std::env::args().skip(1);
    let address = |flag: &str, text: String| {
        text.parse::<SocketAddr>()
            .map_err(|e| format!("{flag}: {e}"))
    };
    while let Some(flag) = args.next() {
        let mut value = || args.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--region" => region = Some(value()?),
            "--listen" => listen = Some(address("--listen", value()?)?),
            "--ops-listen" => ops_listen = Some(address("--ops-listen", value()?)?),
            "--db" => store = Some(Location::Sqlite(PathBuf::from(value()?))),
            "--store" => {
                store = Some(Location::parse(&value()?).map_err(|e| format!("--store: {e}"))?)
            }
            "--policy" => policy = Some(PathBuf::from(value()?)),
            "--key-env" => key_env = Some(value()?),
            "--person-key-env" => person_key_env = Some(value()?),
            "--tls-cert" => tls_cert = Some(PathBuf::from(value()?)),
            "--tls-key" => tls_key = Some(PathBuf::from(value()?)),
            "--tls-client-ca" => tls_client_ca = Some(PathBuf::from(value()?)),
            "--pool-size" => {
                pool_size = value()?
                    .parse()
                    .ok()
                    .filter(|n| *n > 0)
                    .ok_or("--pool-size: a number of connections, at least 1")?
            }
            "--durability" => {
                durability = match value()?.as_str() {
                    "full" => Durability::Full,
                    "normal" => Durability::Normal,
                    other => return Err(format!("--durability: {other:?} is not full or normal")),
                }
            }
            "--commit-window" => {
                // At most a second: a longer wait would only hold visitors' answers back.
                commit_window = Some(parse_seconds(
                    "--commit-window",
                    &value()?,
                    |s| (0.0..=1.0).contains(&s),
                    "seconds from 0 to 1",
                )?)
            }
            "--max-in-flight" => {
                max_in_flight = value()?
                    .parse()
                    .map_err(|_| "--max-in-flight: a number of submissions")?
            }
            "--spare-ms" => {
                spare_ms = value()?
                    .parse()
                    .map_err(|_| "--spare-ms: a number of milliseconds")?
            }
            limit if LIMIT_FLAGS.contains(&limit) => {
                connections_given |= limit == "--max-connections";
                set_limit(&mut limits, limit, &value()?)?
            }
            "--help" | "-h" => return Err(String::new()),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    let store = match store {
        Some(store) => store,
        None => match std::env::var(STORE_VAR) {
            Ok(text) => Location::parse(&text).map_err(|e| format!("{STORE_VAR}: {e}"))?,
            Err(_) => return Err(format!("--db, --store or {STORE_VAR} is required")),
        },
    };
    let tls = match (tls_cert, tls_key) {
        (Some(cert), Some(key)) => Some((cert, key)),
        (None, None) => None,
        _ => return Err("--tls-cert and --tls-key go together".into()),
    };
    if tls_client_ca.is_some() && tls.is_none() {
        return Err("--tls-client-ca needs --tls-cert and --tls-key".into());
    }
    Ok(Args {
        region: region.ok_or("--region is required")?,
        listen: listen.ok_or("--listen is required")?,
        ops_listen,
        store,
        policy,
        key_env,
        person_key_env,
        durability,
        commit_window,
        pool_size,
        max_in_flight,
        spare_ms,
        limits,
        connections_given,
        tls,
        tls_client_ca,
    })
}

const LIMIT_FLAGS: [&str; 7] = [
    "--max-connections",
    "--handshake-timeout",
    "--head-timeout",
    "--body-timeout",
    "--min-body-rate",
    "--idle-timeout",
    "--max-body-bytes",
];

/// `text` as seconds (decimals allowed) that `allowed` accepts; else an error naming `flag` and
/// what it takes (`wanted`).
fn parse_seconds(
    flag: &str,
    text: &str,
    allowed: impl Fn(f64) -> bool,
    wanted: &str,
) -> Result<Duration, String> {
    text.parse::<f64>()
        .ok()
        .filter(|s| allowed(*s))
        .and_then(|s| Duration::try_from_secs_f64(s).ok())
        .ok_or(format!("{flag}: {wanted}, not {text:?}"))
}

/// One of the listener's limits (`LIMIT_FLAGS`) from its command-line value.
fn set_limit(limits: &mut Limits, flag: &str, text: &str) -> Result<(), String> {
    let count = || {
        text.parse::<usize>()
            .map_err(|_| format!("{flag}: a whole number, not {text:?}"))
    };
    // Above 0 and at most a day: a deadline of days would hold nothing off.
    let seconds = || {
        parse_seconds(
            flag,
            text,
            |s| s > 0.0 && s <= 86_400.0,
            "seconds above 0 and at most 86400",
        )
    };
    match flag {
        // At least one; at most what a semaphore counts.
        "--max-connections" => {
            limits.max_connections = Some(count()?)
                .filter(|n| (1..=u32::MAX as usize).contains(n))
                .ok_or(format!("{flag}: at least 1 connection"))?
        }
        "--handshake-timeout" => limits.handshake_timeout = seconds()?,
        "--head-timeout" => limits.head_timeout = seconds()?,
        "--body-timeout" => limits.body_timeout = seconds()?,
        "--min-body-rate" => limits.min_body_rate = count()? as u64,
        "--idle-timeout" => limits.idle_timeout = seconds()?,
        "--max-body-bytes" => {
            limits.max_body_bytes = Some(count()?)
                .filter(|n| *n > 0)
                .ok_or(format!("{flag}: at least 1 byte"))?
        }
        _ => return Err(format!("unknown argument {flag:?}")),
    }
    Ok(())
}

fn secret(name: &str) -> Result<SigningKey, String> {
    let secret = std::env::var(name).map_err(|_| format!("{name} is not set"))?;
    SigningKey::new(secret.as_bytes()).ok_or(format!("{name} must be at least 32 bytes"))
}

fn load_policy(path: Option<&PathBuf>) -> Result<Policy, String> {
    match path {
        None => Policy::shipped().map_err(|e| format!("the shipped policy: {e}")),
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("--policy {}: {e}", path.display()))?;
            Policy::parse(&text).map_err(|e| format!("--policy {}: {e}", path.display()))
        }
    }
}

async fn shutdown_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate => {}
    }
}

async fn run(args: Args) -> Result<(), String> {
    let key = secret(
        &args
            .key_env
            .clone()
            .unwrap_or_else(|| key_var(&args.region)),
    )?;
    let policy = load_policy(args.policy.as_ref())?;
    // A forwarded entry is at most about twice the visitor's body (escaping) plus its envelope.
    let largest_entry = 2 * policy.max_body_bytes as usize + 1024;
    if largest_entry > args.limits.max_body_bytes {
        log_warning(&format!("--max-body-bytes {} is below the {largest_entry} bytes a forwarded entry may reach under the policy's max_body_bytes ({}): such entries would be refused with 413", args.limits.max_body_bytes, policy.max_body_bytes));
    }
    let rules = PersonRules::from_policy(&policy);
    let person_key = if rules.is_empty() {
        None
    } else {
        let name = args
            .person_key_env
            .clone()
            .unwrap_or_else(|| person_key_var(&args.region));
        Some(secret(&name).map_err(|e| {
            format!(
                "{e}: the policy keeps one entry per person, which needs the region's person key"
            )
        })?)
    };
    if args.durability == Durability::Normal && matches!(args.store, Location::Sqlite(_)) {
        log_warning("--durability normal: SQLite commits are not synced to disk before the receipt is sent; a power cut can lose entries whose receipts were already given");
    }
    let tls = match &args.tls {
        Some((cert, key)) => Some(tls_config(cert, key, args.tls_client_ca.as_deref())?),
        None => None,
    };
    let store = Store::open(
        &args.store,
        &args.region,
        args.durability,
        args.commit_window,
        args.pool_size,
    )
    .await?;
    let bind = |address: SocketAddr| {
        std::net::TcpListener::bind(address).map_err(|e| format!("cannot listen on {address}: {e}"))
    };
    let public = bind(args.listen)?;
    let ops = args.ops_listen.map(bind).transpose()?;
    // The bound addresses: a port 0 asked for any free port.
    let bound = |listener: &std::net::TcpListener| {
        listener
            .local_addr()
            .map_or_else(|e| e.to_string(), |a| a.to_string())
    };
    eprintln!(
        "{}",
        json!({
            "msg": "origin.listening",
            "region": args.region,
            "listen": bound(&public),
            "tls": tls.is_some(),
            "tls_client_ca": args.tls_client_ca.is_some(),
            "ops_listen": ops.as_ref().map(bound),
            "store": args.store.describe(),
        })
    );
    // Expired entries are deleted here, in the region (see `retention`).
    harbour_origin::retention::spawn(store.clone(), policy, args.region.clone());
    let origin = Arc::new(Origin {
        region: args.region,
        received: AtomicU64::new(0),
        key,
        person_key,
        rules,
        store,
        in_flight: InFlight::new(args.max_in_flight, args.spare_ms),
        seconds: Arc::default(),
    });
    serve(origin, public, ops, tls, args.limits, shutdown_signal()).await
}

fn log_warning(message: &str) {
    eprintln!("{}", json!({"msg": "origin.warning", "warning": message}));
}

fn main() {
    let mut args = match parse_args() {
        Ok(args) => args,
        Err(message) => {
            eprintln!("{message}\n{USAGE}");
            std::process::exit(2);
        }
    };
    // Every connection is an open file: the limit raised as far as allowed, the cap fitted to it.
    if let Some(open_files) = open_files() {
        match fit_connections(
            args.limits.max_connections,
            args.connections_given,
            open_files,
        ) {
            Ok((cap, warning)) => {
                args.limits.max_connections = cap;
                if let Some(warning) = warning {
                    log_warning(&warning);
                }
            }
            Err(message) => {
                eprintln!("harbour-origin: {message}");
                std::process::exit(2);
            }
        }
    }
    // One thread for HTTP, MACs and JSON: an origin's work per submission is a few tens of µs,
    // and the SQLite writer, the checkpointer and the blocking pool are threads of their own.
    // Against two worker threads it saved 20-40 µs of CPU per stored row (cross-thread wake-ups
    // and work stealing; `origin-bench --rate 2000 --durability full`).
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build();
    let result = match runtime {
        Ok(runtime) => runtime.block_on(run(args)),
        Err(e) => Err(e.to_string()),
    };
    if let Err(message) = result {
        eprintln!("harbour-origin: {message}");
        std::process::exit(1);
    }
}
