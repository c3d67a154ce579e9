//! `harbour-origin --region eu --listen 127.0.0.1:8703 --db eu.sqlite`
//!
//! The signing secret is read from the environment (`HARBOUR_KEY_EU` for region `eu`, or the
//! variable named by `--key-env`), never from the command line, where `ps` would show it.
//! `--max-in-flight N` bounds the submissions in flight (default 256); past it, 503
//! `origin_busy` at once (see `in_flight`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::from_fn_with_state;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::serve::ListenerExt;
use axum::{Json, Router};
use serde_json::json;

use harbour::config::{key_var, SUBMISSIONS_PATH};
use harbour::signature::SigningKey;
use harbour_origin::in_flight::{bounded, InFlight, DEFAULT_MAX_IN_FLIGHT};
use harbour_origin::store::{Durability, Store, Stored};
use harbour_origin::verify::{verify, Received};

struct Origin {
    region: String,
    /// Every submission POST that arrived, stored or not: what tests check "nothing reached".
    received: std::sync::atomic::AtomicU64,
    key: SigningKey,
    store: Mutex<Store>,
}

struct Args {
    region: String,
    listen: SocketAddr,
    db: PathBuf,
    key_env: Option<String>,
    durability: Durability,
    max_in_flight: usize,
}

fn parse_args() -> Result<Args, String> {
    let mut region = None;
    let mut listen = None;
    let mut db = None;
    let mut key_env = None;
    let mut durability = Durability::Normal;
    let mut max_in_flight = DEFAULT_MAX_IN_FLIGHT;
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = || args.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--region" => region = Some(value()?),
            "--listen" => listen = Some(value()?.parse().map_err(|e| format!("--listen: {e}"))?),
            "--db" => db = Some(PathBuf::from(value()?)),
            "--key-env" => key_env = Some(value()?),
            "--durability" => {
                durability = match value()?.as_str() {
                    "full" => Durability::Full,
                    "normal" => Durability::Normal,
                    other => return Err(format!("--durability: {other:?} is not full or normal")),
                }
            }
            "--max-in-flight" => {
                max_in_flight = value()?
                    .parse()
                    .map_err(|_| "--max-in-flight: a number of submissions")?
            }
            "--help" | "-h" => return Err(String::new()),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(Args {
        region: region.ok_or("--region is required")?,
        listen: listen.ok_or("--listen is required")?,
        db: db.ok_or("--db is required")?,
        key_env,
        durability,
        max_in_flight,
    })
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn answer(status: StatusCode, body: serde_json::Value) -> Response {
    (status, Json(body)).into_response()
}

async fn submit(State(origin): State<Arc<Origin>>, headers: HeaderMap, body: Bytes) -> Response {
    origin
        .received
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let received = Received {
        signature: header("x-harbour-signature"),
        idempotency_key: header("idempotency-key"),
    };
    let verified = match verify(
        &origin.region,
        &origin.key,
        SUBMISSIONS_PATH,
        &received,
        &body,
        now_ms(),
    ) {
        Ok(v) => v,
        Err(refusal) => {
            eprintln!(
                "{}",
                json!({"msg": "origin.refused", "region": origin.region, "code": refusal.code()})
            );
            let status = StatusCode::from_u16(refusal.status()).unwrap_or(StatusCode::BAD_REQUEST);
            return answer(status, json!({ "code": refusal.code() }));
        }
    };
    let shared = origin.clone();
    let stored = tokio::task::spawn_blocking(move || {
        let mut store = shared
            .store
            .lock()
            .map_err(|_| "store lock poisoned".to_owned())?;
        store.store(&verified, now_ms()).map_err(|e| e.to_string())
    })
    .await
    .map_err(|e| e.to_string())
    .and_then(|r| r);
    match stored {
        Ok(Stored::New(r)) => answer(
            StatusCode::CREATED,
            json!({"receipt": {"id": r.id, "region": r.region, "stored_at_ms": r.stored_at_ms}}),
        ),
        Ok(Stored::Replay(r)) => answer(
            StatusCode::OK,
            json!({"receipt": {"id": r.id, "region": r.region, "stored_at_ms": r.stored_at_ms}, "replayed": true}),
        ),
        Ok(Stored::Conflict) => answer(
            StatusCode::CONFLICT,
            json!({"code": "idempotency_key_reused"}),
        ),
        Err(error) => {
            // 503 so harbour tries the region's next origin; the key makes that safe.
            eprintln!(
                "{}",
                json!({"msg": "origin.storage_error", "region": origin.region, "error": error})
            );
            answer(
                StatusCode::SERVICE_UNAVAILABLE,
                json!({"code": "storage_unavailable"}),
            )
        }
    }
}

async fn health(State(origin): State<Arc<Origin>>) -> Response {
    answer(
        StatusCode::OK,
        json!({"status": "ok", "region": origin.region}),
    )
}

async fn count(State(origin): State<Arc<Origin>>) -> Response {
    let counted = origin
        .store
        .lock()
        .map_err(|_| ())
        .and_then(|s| s.count().map_err(|_| ()));
    match counted {
        Ok(count) => answer(
            StatusCode::OK,
            json!({
                "region": origin.region,
                "count": count,
                "received": origin.received.load(std::sync::atomic::Ordering::Relaxed),
            }),
        ),
        Err(()) => answer(
            StatusCode::SERVICE_UNAVAILABLE,
            json!({"code": "storage_unavailable"}),
        ),
    }
}

async fn serve(args: Args) -> Result<(), String> {
    let key_name = args
        .key_env
        .clone()
        .unwrap_or_else(|| key_var(&args.region));
    let secret = std::env::var(&key_name).map_err(|_| format!("{key_name} is not set"))?;
    let key = SigningKey::new(secret.as_bytes())
        .ok_or(format!("{key_name} must be at least 32 bytes"))?;
    let store = Store::open(&args.db, &args.region, args.durability)
        .map_err(|e| format!("cannot open {}: {e}", args.db.display()))?;
    let origin = Arc::new(Origin {
        region: args.region.clone(),
        received: std::sync::atomic::AtomicU64::new(0),
        key,
        store: Mutex::new(store),
    });
    let in_flight = InFlight::new(args.max_in_flight);
    let load = {
        let in_flight = in_flight.clone();
        move || async move { Json(in_flight.report()) }
    };
    let app = Router::new()
        .route(
            SUBMISSIONS_PATH,
            post(submit).layer(from_fn_with_state(in_flight, bounded)),
        )
        .route("/v1/count", get(count))
        .route("/v1/load", get(load))
        .route("/health", get(health))
        .layer(DefaultBodyLimit::max(64 * 1024))
        .with_state(origin);
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", args.listen))?;
    eprintln!(
        "{}",
        json!({"msg": "origin.listening", "region": args.region, "listen": args.listen.to_string(), "db": args.db.display().to_string()})
    );
    // Answers are small: send each at once instead of letting Nagle wait for an ACK.
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await
        .map_err(|e| e.to_string())
}

fn main() {
    let args = match parse_args() {
        Ok(args) => args,
        Err(message) => {
            eprintln!("{message}\nusage: harbour-origin --region ID --listen ADDR:PORT --db FILE [--key-env VAR] [--durability full|normal] [--max-in-flight N]");
            std::process::exit(2);
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build();
    let result = match runtime {
        Ok(runtime) => runtime.block_on(serve(args)),
        Err(e) => Err(e.to_string()),
    };
    if let Err(message) = result {
        eprintln!("harbour-origin: {message}");
        std::process::exit(1);
    }
}
