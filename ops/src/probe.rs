//! The readiness check's probe: how many submissions a second a region's origins store, measured
//! by sending them submissions signed as the edge signs them, bounded in count and time.
//!
//! Rules:
//! - At most `max_submissions` per region, for at most `max_seconds`, `concurrency` at a time,
//!   spread over the region's origins in turn (the edge fails over to the next origin of the
//!   region, so together they are what the region carries).
//! - Each is a real entry, so the store's real cost is measured: it is stored under the campaign
//!   [`PROBE_CAMPAIGN`], which is no campaign of a policy (no draw, export or retention of a real
//!   campaign includes it), with a key of this run (a replay would cost the store less).
//! - Capacity is entries stored per second over the probe. An origin answering that it is full
//!   (`origin_busy`) stored nothing; what it says is counted apart, and the thread it answered
//!   waits the interval it asks for (at most [`MOST_BUSY_WAIT`]), as the edge spares a full
//!   origin, rather than spend the probe's submissions on answers that store nothing.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use harbour_contract::entry::{EntryBody, Signals};
use harbour_contract::http::{HEADER_IDEMPOTENCY_KEY, HEADER_SIGNATURE, METHOD, SUBMISSIONS_PATH};
use harbour_contract::response;
use harbour_contract::signature::{sha256_hex, Signed};

use crate::http::Client;
use crate::target::Origin;

/// The campaign probe entries are stored under.
pub const PROBE_CAMPAIGN: &str = "readiness-probe";

/// The longest a probe thread waits after a busy answer.
pub const MOST_BUSY_WAIT: Duration = Duration::from_millis(250);

/// The wait after a busy answer that names no interval.
const BUSY_WAIT_UNNAMED_MS: u64 = 100;

/// How much a probe may send.
#[derive(Clone, Copy, Debug)]
pub struct Bounds {
    pub max_submissions: u64,
    pub max_seconds: f64,
    pub concurrency: usize,
}

impl Default for Bounds {
    fn default() -> Bounds {
        Bounds {
            max_submissions: 2_000,
            max_seconds: 5.0,
            concurrency: 32,
        }
    }
}

/// What a region's probe measured.
#[derive(Clone, Debug, Default)]
pub struct Measured {
    pub region: String,
    pub origins: usize,
    /// The store the origins report on `/health` (`sqlite`, `postgres`), or `unknown`.
    pub store: String,
    pub stored: u64,
    pub busy: u64,
    pub failed: u64,
    pub seconds: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    /// Why the probe could not run, or why its figure is not to be trusted.
    pub problem: Option<String>,
}

impl Measured {
    /// Entries stored per second; `None` when nothing could be measured.
    pub fn capacity(&self) -> Option<f64> {
        (self.problem.is_none() && self.seconds > 0.0).then(|| self.stored as f64 / self.seconds)
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The path part of a base URL followed by the submissions path (what the signature covers).
fn submissions_path(base: &str) -> String {
    let rest = base.split("://").nth(1).unwrap_or(base);
    let path = rest.find('/').map_or("", |at| &rest[at..]);
    format!("{}{SUBMISSIONS_PATH}", path.trim_end_matches('/'))
}

/// One probe submission to `origin`: its status (0 for no answer) and body.
fn send(client: &Client, origin: &Origin, key: &str, n: u64) -> (u16, String) {
    let Some(signing) = &origin.key else {
        return (0, String::new());
    };
    let now = now_ms();
    let request_id = format!("probe-{n}");
    let fields = format!("{{\"probe\":{n}}}");
    let body = EntryBody {
        campaign: PROBE_CAMPAIGN,
        fields_json: &fields,
        notice: None,
        received_at_ms: now,
        region: &origin.region,
        request_id: &request_id,
        signals: Signals {
            basis: "platform",
            declared_country: None,
            platform_country: "XX",
        },
    }
    .write();
    let path = submissions_path(&origin.url);
    let digest = sha256_hex(body.as_bytes());
    let signature = signing.sign(&Signed {
        method: METHOD,
        path: &path,
        timestamp_ms: now,
        region: &origin.region,
        idempotency_key: key,
        body_sha256_hex: &digest,
    });
    let headers = [
        ("content-type", "application/json"),
        (HEADER_IDEMPOTENCY_KEY, key),
        (HEADER_SIGNATURE, signature.as_str()),
    ];
    let url = format!("{}{SUBMISSIONS_PATH}", origin.url);
    match client.post(&url, &headers, &body) {
        Ok(answer) => (answer.status, answer.body),
        Err(_) => (0, String::new()),
    }
}

/// What the probe's threads found.
#[derive(Default)]
struct Tally {
    stored: u64,
    busy: u64,
    failed: u64,
    latencies_us: Vec<u64>,
    first_failure: Option<String>,
}

/// Probes the origins of one region.
pub fn measure(client: &Client, region: &str, origins: &[&Origin], bounds: Bounds) -> Measured {
    let mut measured = Measured {
        region: region.to_owned(),
        origins: origins.len(),
        store: store_kind(client, origins),
        ..Measured::default()
    };
    if origins.is_empty() {
        measured.problem = Some("no origin".into());
        return measured;
    }
    if let Some(missing) = origins.iter().find(|o| o.key.is_none()) {
        measured.problem = Some(format!(
            "no signing key: set {} (32 bytes or more), the key the region's origins hold",
            missing.key_from
        ));
        return measured;
    }
    let run = format!("probe-{:x}-{}", now_ms(), std::process::id());
    let next = AtomicU64::new(0);
    let tally = Mutex::new(Tally::default());
    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(bounds.max_seconds);
    std::thread::scope(|scope| {
        for _ in 0..bounds.concurrency.max(1) {
            scope.spawn(|| {
                let mut mine = Tally::default();
                loop {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    if n >= bounds.max_submissions || Instant::now() >= deadline {
                        break;
                    }
                    let origin = origins[n as usize % origins.len()];
                    let sent = Instant::now();
                    let (status, body) = send(client, origin, &format!("{run}-{n}"), n);
                    mine.latencies_us.push(sent.elapsed().as_micros() as u64);
                    if let Some(wait) = count(&mut mine, origin, status, &body) {
                        let left = deadline.saturating_duration_since(Instant::now());
                        std::thread::sleep(wait.min(MOST_BUSY_WAIT).min(left));
                    }
                }
                let mut all = tally.lock().unwrap_or_else(|e| e.into_inner());
                all.stored += mine.stored;
                all.busy += mine.busy;
                all.failed += mine.failed;
                all.latencies_us.extend(mine.latencies_us);
                if all.first_failure.is_none() {
                    all.first_failure = mine.first_failure;
                }
            });
        }
    });
    measured.seconds = started.elapsed().as_secs_f64();
    let mut tally = tally.into_inner().unwrap_or_else(|e| e.into_inner());
    tally.latencies_us.sort_unstable();
    let at = |q: f64| {
        let i = ((tally.latencies_us.len().max(1) - 1) as f64 * q).round() as usize;
        tally
            .latencies_us
            .get(i)
            .map_or(0.0, |us| *us as f64 / 1000.0)
    };
    (measured.p50_ms, measured.p99_ms) = (at(0.5), at(0.99));
    (measured.stored, measured.busy, measured.failed) = (tally.stored, tally.busy, tally.failed);
    // A probe whose submissions mostly failed measured a problem, not a capacity.
    if tally.failed > tally.stored {
        measured.problem = Some(format!(
            "{} of {} submissions failed: {}",
            tally.failed,
            tally.failed + tally.stored + tally.busy,
            tally.first_failure.unwrap_or_default()
        ));
    }
    measured
}

/// Counts an answer; for a busy one, how long the origin asks to be spared.
fn count(tally: &mut Tally, origin: &Origin, status: u16, body: &str) -> Option<Duration> {
    let busy = (status == 503)
        .then(|| response::busy_interval_ms(body))
        .flatten();
    match (status, busy) {
        (200 | 201, _) => tally.stored += 1,
        (_, Some(interval_ms)) => {
            tally.busy += 1;
            return Some(Duration::from_millis(
                interval_ms.unwrap_or(BUSY_WAIT_UNNAMED_MS),
            ));
        }
        _ => {
            tally.failed += 1;
            if tally.first_failure.is_none() {
                let what = match status {
                    0 => "no answer".to_owned(),
                    401 => format!(
                        "401 from {}: its key is not the one in {}",
                        origin.url, origin.key_from
                    ),
                    _ => format!("{status} from {}: {}", origin.url, body.trim()),
                };
                tally.first_failure = Some(what);
            }
        }
    }
    None
}

/// The store the first origin that answers `/health` names.
fn store_kind(client: &Client, origins: &[&Origin]) -> String {
    origins
        .iter()
        .find_map(|o| {
            let health = client.get(&format!("{}/health", o.ops)).ok()?.json().ok()?;
            health["store"].as_str().map(str::to_owned)
        })
        .unwrap_or_else(|| "unknown".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signed_path_keeps_the_bases_path() {
        assert_eq!(submissions_path("http://127.0.0.1:8703"), "/v1/submissions");
        assert_eq!(
            submissions_path("https://eu.example/harbour/"),
            "/harbour/v1/submissions"
        );
    }
}
