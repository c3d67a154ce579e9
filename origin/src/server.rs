//! The origin's HTTP side: the submissions listener (optionally TLS) that harbour's edge calls,
//! bounded in the submissions it has in flight (see `in_flight`), and the operations listener
//! (`/health`, `/v1/count`, `/v1/load`, `/v1/seconds`) for the operator's own network.
//!
//! The submissions listener serves `POST /v1/submissions` and nothing else: how many entries a
//! region holds is not a stranger's business, so the operations routes live on their own
//! listener, which an operator binds to loopback or a private network.

use std::net::TcpListener;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use axum_server::tls_rustls::RustlsConfig;
use axum_server::Handle;
use serde_json::json;

use harbour_contract::http::{HEADER_IDEMPOTENCY_KEY, HEADER_SIGNATURE, SUBMISSIONS_PATH};
use harbour_contract::response::{code_body, receipt_body, Code};
use harbour_contract::signature::SigningKey;

use crate::in_flight::{bounded, InFlight};
use crate::person::PersonRules;
use crate::seconds::{Count, Seconds};
use crate::store::{Row, Store, Stored};
use crate::verify::{verify, Received};

/// What a 503 asks the caller to wait, in seconds; the edge tries the region's next origin first.
const RETRY_AFTER_S: &str = "2";
/// Submission bodies are a few hundred bytes; the edge caps them far below this.
const MAX_BODY_BYTES: usize = 64 * 1024;

pub struct Origin {
    pub region: String,
    /// Every submission POST that arrived, stored or not: what tests check "nothing reached".
    pub received: AtomicU64,
    pub key: SigningKey,
    /// The region's person key; required when `rules` has any campaign.
    pub person_key: Option<SigningKey>,
    pub rules: PersonRules,
    pub store: Store,
    /// Submissions in flight, bounded: past the bound, 503 `origin_busy` before anything is read.
    pub in_flight: Arc<InFlight>,
    /// What came of the submissions, second by second (`/v1/seconds`).
    pub seconds: Arc<Seconds>,
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

/// An answer of the contract's (see `harbour_contract::response`): its status and JSON body.
fn contract_answer(status: u16, body: String) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = (status, body).into_response();
    response.headers_mut().insert(
        axum::http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// An answer that carries only its code.
fn refused(code: Code) -> Response {
    contract_answer(code.status(), code_body(code))
}

fn unavailable() -> Response {
    let mut response = refused(Code::StorageUnavailable);
    response
        .headers_mut()
        .insert("retry-after", HeaderValue::from_static(RETRY_AFTER_S));
    response
}

fn log(line: serde_json::Value) {
    eprintln!("{line}");
}

async fn submit(State(origin): State<Arc<Origin>>, headers: HeaderMap, body: Bytes) -> Response {
    origin.received.fetch_add(1, Ordering::Relaxed);
    let response = handle(&origin, &headers, &body).await;
    let counted = match response.status().as_u16() {
        201 => Count::Stored,
        200 => Count::Replayed,
        400..=499 => Count::Refused,
        _ => Count::Failed,
    };
    origin.seconds.count(counted, now_ms());
    response
}

async fn handle(origin: &Origin, headers: &HeaderMap, body: &[u8]) -> Response {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let received = Received {
        signature: header(HEADER_SIGNATURE),
        idempotency_key: header(HEADER_IDEMPOTENCY_KEY),
    };
    let verified = match verify(
        &origin.region,
        &origin.key,
        SUBMISSIONS_PATH,
        &received,
        body,
        now_ms(),
    ) {
        Ok(v) => v,
        Err(code) => {
            log(json!({"msg": "origin.refused", "region": origin.region, "code": code.as_str()}));
            return refused(code);
        }
    };
    let fields = verified
        .payload
        .get("fields")
        .unwrap_or(&serde_json::Value::Null);
    let person = match origin
        .rules
        .digest(origin.person_key.as_ref(), &verified.campaign, fields)
    {
        Ok(person) => person,
        Err(code) => {
            // The edge validates required fields first: this is a policy the edge and this
            // origin disagree on. Refused, so no entry slips past the rule.
            log(json!({"msg": "origin.refused", "region": origin.region, "code": code.as_str()}));
            return refused(code);
        }
    };
    let stored = origin
        .store
        .store(Row {
            submission: &verified,
            person: person.as_deref(),
            now_ms: now_ms(),
        })
        .await;
    match stored {
        Ok(Stored::New(r)) => contract_answer(201, receipt_body(&r, false)),
        Ok(Stored::Replay(r)) => contract_answer(200, receipt_body(&r, true)),
        Ok(Stored::Conflict) => refused(Code::IdempotencyKeyReused),
        Ok(Stored::AlreadyEntered) => refused(Code::AlreadyEntered),
        Err(error) => {
            // 503 so harbour tries the region's next origin; the key makes that safe.
            log(json!({"msg": "origin.storage_error", "region": origin.region, "error": error.0}));
            unavailable()
        }
    }
}

/// 200 while the store answers, 503 when it does not (a load balancer can drain this origin).
async fn health(State(origin): State<Arc<Origin>>) -> Response {
    match origin.store.ping().await {
        Ok(()) => answer(
            StatusCode::OK,
            json!({"status": "ok", "region": origin.region, "store": origin.store.kind()}),
        ),
        Err(_) => {
            let mut response = answer(
                StatusCode::SERVICE_UNAVAILABLE,
                json!({"status": "store_unavailable", "region": origin.region, "store": origin.store.kind()}),
            );
            response
                .headers_mut()
                .insert("retry-after", HeaderValue::from_static(RETRY_AFTER_S));
            response
        }
    }
}

async fn count(State(origin): State<Arc<Origin>>) -> Response {
    match origin.store.count().await {
        Ok(count) => answer(
            StatusCode::OK,
            json!({
                "region": origin.region,
                "count": count,
                "received": origin.received.load(Ordering::Relaxed),
            }),
        ),
        Err(_) => unavailable(),
    }
}

/// The in-flight bound, what is in flight, the most ever in flight and how many were shed.
async fn load(State(origin): State<Arc<Origin>>) -> Response {
    answer(StatusCode::OK, origin.in_flight.report())
}

/// `?since=<Unix seconds>`: the seconds from then (at most the last five minutes), each with
/// what came of its submissions, beside the in-flight bound and what is in flight now.
async fn seconds(State(origin): State<Arc<Origin>>, uri: Uri) -> Response {
    let since = uri
        .query()
        .unwrap_or_default()
        .split('&')
        .find_map(|pair| pair.strip_prefix("since="))
        .and_then(|value| value.parse::<u64>().ok())
        .unwrap_or(0);
    let now = now_ms();
    let load = origin.in_flight.report();
    answer(
        StatusCode::OK,
        json!({
            "region": origin.region,
            "now_s": now / 1_000,
            "bound": load["bound"],
            "in_flight": load["in_flight"],
            "seconds": origin.seconds.since(since, now),
        }),
    )
}

/// The submissions listener's routes: `POST /v1/submissions` only.
pub fn submissions_router(origin: Arc<Origin>) -> Router {
    let state = (origin.in_flight.clone(), origin.seconds.clone());
    let bound = axum::middleware::from_fn_with_state(state, bounded);
    Router::new()
        .route(SUBMISSIONS_PATH, post(submit).layer(bound))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(origin)
}

/// The operations listener's routes.
pub fn ops_router(origin: Arc<Origin>) -> Router {
    Router::new()
        .route("/v1/count", get(count))
        .route("/v1/load", get(load))
        .route("/v1/seconds", get(seconds))
        .route("/health", get(health))
        .with_state(origin)
}

/// The TLS configuration from PEM files: the certificate chain (leaf first) and its private key.
pub fn tls_config(cert: &Path, key: &Path) -> Result<RustlsConfig, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let chain = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("--tls-cert {}: {e}", cert.display()))?;
    if chain.is_empty() {
        return Err(format!(
            "--tls-cert {}: no certificate in it",
            cert.display()
        ));
    }
    let private_key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| format!("--tls-key {}: {e}", key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(chain, private_key)
        .map_err(|e| format!("--tls-cert/--tls-key: {e}"))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(RustlsConfig::from_config(Arc::new(config)))
}

/// Serves both listeners until `shutdown` completes, then lets requests under way finish (up to
/// 5 s).
pub async fn serve(
    origin: Arc<Origin>,
    public: TcpListener,
    ops: Option<TcpListener>,
    tls: Option<RustlsConfig>,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), String> {
    let handle = Handle::new();
    public.set_nonblocking(true).map_err(|e| e.to_string())?;
    let app = submissions_router(origin.clone()).into_make_service();
    let public = match tls {
        Some(tls) => tokio::spawn(
            axum_server::from_tcp_rustls(public, tls)
                .handle(handle.clone())
                .serve(app),
        ),
        None => tokio::spawn(
            axum_server::from_tcp(public)
                .handle(handle.clone())
                .serve(app),
        ),
    };
    let ops = match ops {
        Some(listener) => {
            listener.set_nonblocking(true).map_err(|e| e.to_string())?;
            let app = ops_router(origin).into_make_service();
            Some(tokio::spawn(
                axum_server::from_tcp(listener)
                    .handle(handle.clone())
                    .serve(app),
            ))
        }
        None => None,
    };
    shutdown.await;
    handle.graceful_shutdown(Some(Duration::from_secs(5)));
    for server in std::iter::once(public).chain(ops) {
        server
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}
