//! The origin's HTTP side: the submissions listener (optionally TLS) that harbour's edge calls,
//! and the operations listener (`/health`, `/v1/count`, `/v1/load`, `/v1/seconds`) for the
//! operator's own network. Both run on `listener`, whose rules bound what a connection may hold.
//!
//! The submissions listener serves `POST /v1/submissions` and nothing else: how many entries a
//! region holds is not a stranger's business, so the operations routes live on their own
//! listener, which an operator binds to loopback or a private network.
//!
//! A submission's order: read whole (the listener, under its deadlines), then its signature
//! checked (`verify`: 401 for a bad MAC whatever else is wrong), and only then a place in flight
//! (`in_flight`: 503 `origin_busy` past the bound), the person digest and the store. A stranger's
//! request, however slowly it arrives, never holds a place a signed submission needs.

use std::net::TcpListener;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::header::{HeaderValue, ALLOW, CONTENT_TYPE};
use hyper::{HeaderMap, Method, Request, Response, StatusCode};
use serde_json::json;

use harbour_contract::http::{HEADER_IDEMPOTENCY_KEY, HEADER_SIGNATURE, SUBMISSIONS_PATH};
use harbour_contract::response::{code_body, field_body, receipt_body, Code};
use harbour_contract::signature::SigningKey;

use crate::in_flight::InFlight;
use crate::listener::{Gauges, Limits, Listener, Reply, OPS_MAX_CONNECTIONS};
use crate::person::PersonRules;
use crate::seconds::{Count, Seconds};
use crate::store::{Row, Store, Stored};
use crate::verify::{verify, Received, Verified};

/// What a 503 asks the caller to wait, in seconds; the edge tries the region's next origin first.
const RETRY_AFTER_S: &str = "2";

pub struct Origin {
    pub region: String,
    /// Every submission POST that arrived, stored or not: what tests check "nothing reached".
    pub received: AtomicU64,
    pub key: SigningKey,
    /// The region's person key; required when `rules` has any campaign.
    pub person_key: Option<SigningKey>,
    pub rules: PersonRules,
    pub store: Store,
    /// Submissions in flight, bounded: past the bound, 503 `origin_busy` once read and verified,
    /// before the person digest and the store.
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

/// A JSON answer.
fn reply(status: StatusCode, body: impl Into<Bytes>) -> Reply {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

fn answer(status: StatusCode, body: serde_json::Value) -> Reply {
    reply(status, body.to_string())
}

/// An answer of the contract's (see `harbour_contract::response`): its status and JSON body.
fn contract_answer(status: u16, body: String) -> Reply {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    reply(status, body)
}

/// An answer that carries only its code.
fn refused(code: Code) -> Reply {
    contract_answer(code.status(), code_body(code))
}

fn unavailable() -> Reply {
    let mut response = refused(Code::StorageUnavailable);
    response
        .headers_mut()
        .insert("retry-after", HeaderValue::from_static(RETRY_AFTER_S));
    response
}

fn not_found() -> Reply {
    let mut response = Response::new(Full::default());
    *response.status_mut() = StatusCode::NOT_FOUND;
    response
}

/// A known path asked with another method.
fn method_not_allowed(allow: &'static str) -> Reply {
    let mut response = Response::new(Full::default());
    *response.status_mut() = StatusCode::METHOD_NOT_ALLOWED;
    response
        .headers_mut()
        .insert(ALLOW, HeaderValue::from_static(allow));
    response
}

fn log(line: serde_json::Value) {
    eprintln!("{line}");
}

/// A submission, read whole: verified, then in flight (bounded), then stored; what came of it is
/// counted in its second (`seconds`).
async fn submit(origin: &Origin, headers: &HeaderMap, body: &[u8]) -> Reply {
    origin.received.fetch_add(1, Ordering::Relaxed);
    let arrived_ms = now_ms();
    origin.seconds.count(Count::Received, arrived_ms);
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let received = Received {
        signature: header(HEADER_SIGNATURE),
        idempotency_key: header(HEADER_IDEMPOTENCY_KEY),
    };
    let mut verified = match verify(
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
            origin.seconds.count(Count::Refused, arrived_ms);
            return refused(code);
        }
    };
    // Whole and signed by harbour: only now does it take a place in flight.
    let Some(slot) = origin.in_flight.enter() else {
        origin.seconds.count(Count::Shed, arrived_ms);
        return origin.in_flight.busy();
    };
    origin.seconds.in_flight(slot.level, arrived_ms);
    let reply = store(origin, &mut verified).await;
    let counted = match reply.status().as_u16() {
        201 => Count::Stored,
        200 => Count::Replayed,
        400..=499 => Count::Refused,
        _ => Count::Failed,
    };
    origin.seconds.count(counted, now_ms());
    reply
}

/// A verified submission, in flight: its person digest, then the store.
async fn store(origin: &Origin, verified: &mut Verified) -> Reply {
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
            log(json!({"msg": "origin.refused", "region": origin.region, "code": code.as_str()}));
            // A value the edge's check let through and the fold refuses (the edge has no
            // Unicode data for it): named, so the edge asks the visitor to correct that field.
            if let Some(field) = (code == Code::InvalidIdentifyingField)
                .then(|| origin.rules.refused_field(&verified.campaign, fields))
                .flatten()
            {
                return contract_answer(code.status(), field_body(code, field));
            }
            // Otherwise a policy the edge and this origin disagree on (the edge validates
            // required fields first). Refused, so no entry slips past the rule.
            return refused(code);
        }
    };
    if let Some(fields) = verified.payload.get_mut("fields") {
        origin.rules.store_addresses(&verified.campaign, fields);
    }
    let stored = origin
        .store
        .store(Row {
            submission: verified,
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
async fn health(origin: &Origin) -> Reply {
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

async fn count(origin: &Origin) -> Reply {
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

/// The in-flight bound, what is in flight, the most ever in flight and how many were shed; the
/// submissions listener's connections (`listener::Gauges`); and the store's batching (rows per
/// commit is what a synced commit's cost is shared by).
fn load(origin: &Origin, connections: &Gauges) -> Reply {
    let mut report = origin.in_flight.report();
    report["connections"] = connections.report();
    let batches = origin.store.batch_stats();
    report["store"] = json!({
        "batches": batches.batches,
        "commits": batches.commits,
        "submissions": batches.submissions,
        "failed_batches": batches.failed_batches,
        "largest_batch": batches.largest_batch,
    });
    answer(StatusCode::OK, report)
}

/// `?since=<Unix seconds>`: the seconds from then (at most the last five minutes), each with
/// what came of its submissions, beside the in-flight bound and what is in flight now.
fn seconds(origin: &Origin, query: Option<&str>) -> Reply {
    let since = query
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

/// The submissions listener's one route: `POST /v1/submissions`.
pub async fn submissions(origin: &Origin, request: Request<Bytes>) -> Reply {
    if request.uri().path() != SUBMISSIONS_PATH {
        return not_found();
    }
    if request.method() != Method::POST {
        return method_not_allowed("POST");
    }
    submit(origin, request.headers(), request.body()).await
}

/// The operations listener's routes.
pub async fn operations(origin: &Origin, connections: &Gauges, request: Request<Bytes>) -> Reply {
    let path = request.uri().path();
    if !matches!(path, "/health" | "/v1/count" | "/v1/load" | "/v1/seconds") {
        return not_found();
    }
    if request.method() != Method::GET {
        return method_not_allowed("GET");
    }
    match path {
        "/health" => health(origin).await,
        "/v1/count" => count(origin).await,
        "/v1/seconds" => seconds(origin, request.uri().query()),
        _ => load(origin, connections),
    }
}

/// The TLS configuration from PEM files: the certificate chain (leaf first) and its private key;
/// with `client_ca`, only clients presenting a certificate issued by one of its certificates
/// complete a handshake (mTLS: the edge's client certificate, see README).
pub fn tls_config(
    cert: &Path,
    key: &Path,
    client_ca: Option<&Path>,
) -> Result<Arc<rustls::ServerConfig>, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certificates = |flag: &str, path: &Path| {
        let chain = CertificateDer::pem_file_iter(path)
            .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
            .map_err(|e| format!("{flag} {}: {e}", path.display()))?;
        if chain.is_empty() {
            return Err(format!("{flag} {}: no certificate in it", path.display()));
        }
        Ok(chain)
    };
    let chain = certificates("--tls-cert", cert)?;
    let private_key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| format!("--tls-key {}: {e}", key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let builder = match client_ca {
        None => builder.with_no_client_auth(),
        Some(path) => {
            let mut roots = rustls::RootCertStore::empty();
            for ca in certificates("--tls-client-ca", path)? {
                roots
                    .add(ca)
                    .map_err(|e| format!("--tls-client-ca {}: {e}", path.display()))?;
            }
            let verifier =
                rustls::server::WebPkiClientVerifier::builder_with_provider(roots.into(), provider)
                    .build()
                    .map_err(|e| format!("--tls-client-ca {}: {e}", path.display()))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder
        .with_single_cert(chain, private_key)
        .map_err(|e| format!("--tls-cert/--tls-key: {e}"))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Serves both listeners until `shutdown` completes, then lets requests under way finish (up to
/// `listener::SHUTDOWN_GRACE`, 5 s). `limits` are the submissions listener's; the operations
/// listener has the same deadlines and a cap of its own.
pub async fn serve(
    origin: Arc<Origin>,
    public: TcpListener,
    ops: Option<TcpListener>,
    tls: Option<Arc<rustls::ServerConfig>>,
    limits: Limits,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), String> {
    let ops_limits = Limits {
        max_connections: OPS_MAX_CONNECTIONS,
        ..limits.clone()
    };
    let public = Listener::new(public, tls, limits).map_err(|e| e.to_string())?;
    let ops = ops
        .map(|listener| Listener::new(listener, None, ops_limits))
        .transpose()
        .map_err(|e| e.to_string())?;
    let (stop, stopping) = tokio::sync::watch::channel(false);
    let connections = public.gauges();
    let public = tokio::spawn(public.serve(
        {
            let origin = origin.clone();
            move |request| {
                let origin = origin.clone();
                async move { submissions(&origin, request).await }
            }
        },
        stopping.clone(),
    ));
    let ops = ops.map(|listener| {
        tokio::spawn(listener.serve(
            move |request| {
                let (origin, connections) = (origin.clone(), connections.clone());
                async move { operations(&origin, &connections, request).await }
            },
            stopping,
        ))
    });
    shutdown.await;
    let _ = stop.send(true);
    for server in std::iter::once(public).chain(ops) {
        server.await.map_err(|e| e.to_string())?;
    }
    Ok(())
}
