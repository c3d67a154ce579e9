//! The load generator: keep-alive connections over loopback at a fixed rate or as fast as
//! answers come, with the page's retry behaviour, counting every answer.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::mix::{challenge_for, plan, request_bytes, Mix};

/// One answer: status, `Retry-After` in seconds if given, body.
type Answer = (u16, Option<u64>, String);

/// Reads one response off a keep-alive connection.
fn read_response(stream: &mut TcpStream, buffer: &mut Vec<u8>) -> std::io::Result<Answer> {
    let mut chunk = [0u8; 8192];
    loop {
        if let Some(split) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buffer[..split]).to_ascii_lowercase();
            let status: u16 = head
                .split(' ')
                .nth(1)
                .and_then(|s| s.parse().ok())
                .unwrap_or(0);
            let length = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok());
            let retry_after = head
                .lines()
                .find_map(|l| l.strip_prefix("retry-after:"))
                .and_then(|v| v.trim().parse::<u64>().ok());
            if let Some(length) = length {
                if buffer.len() >= split + 4 + length {
                    let body = String::from_utf8_lossy(&buffer[split + 4..split + 4 + length])
                        .into_owned();
                    buffer.drain(..split + 4 + length);
                    return Ok((status, retry_after, body));
                }
            } else if head.contains("transfer-encoding: chunked") {
                if let Some(end) = buffer[split + 4..]
                    .windows(5)
                    .position(|w| w == b"0\r\n\r\n")
                {
                    let body =
                        String::from_utf8_lossy(&buffer[split + 4..split + 4 + end]).into_owned();
                    buffer.drain(..split + 4 + end + 5);
                    return Ok((status, retry_after, body));
                }
            } else {
                return Err(std::io::Error::other("response without length"));
            }
        }
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            return Err(std::io::Error::other("connection closed"));
        }
        buffer.extend_from_slice(&chunk[..n]);
    }
}

fn outcome_label(status: u16, body: &str) -> String {
    let code = body
        .split("\"code\":\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next());
    match code {
        Some(code) => format!("{status} {code}"),
        None => status.to_string(),
    }
}

pub struct Load {
    pub port: u16,
    pub connections: usize,
    pub duration: Duration,
    /// Requests per second across all connections; `None` sends as fast as answers come.
    pub rate: Option<f64>,
    pub mix: Mix,
    pub run: u32,
    pub first: u64,
    /// Retry no-answer and 502/503/504 with the same key after the advised wait, as the page
    /// does, for up to a minute past the end of the load.
    pub retry: bool,
}

/// The wait before a retry when the answer gave no `Retry-After` (or none came).
const RETRY_WAIT: Duration = Duration::from_secs(5);
const MAX_ATTEMPTS: u32 = 8;

#[derive(Default)]
pub struct Stats {
    pub sent: u64,
    pub answered: u64,
    pub latencies_us: Vec<u64>,
    pub outcomes: HashMap<String, u64>,
    /// Request number → status (0 = no answer), for the audit.
    pub per_request: Vec<(u64, u16)>,
    pub elapsed: Duration,
}

impl Stats {
    pub fn percentile_ms(&self, p: f64) -> f64 {
        if self.latencies_us.is_empty() {
            return f64::NAN;
        }
        let index = ((self.latencies_us.len() as f64 - 1.0) * p).round() as usize;
        self.latencies_us[index] as f64 / 1000.0
    }

    pub fn throughput(&self) -> f64 {
        self.answered as f64 / self.elapsed.as_secs_f64()
    }
}

pub fn run_load(load: &Load) -> Stats {
    let next = Arc::new(AtomicU64::new(load.first));
    let merged = Arc::new(Mutex::new(Stats::default()));
    let started = Instant::now();
    let deadline = started + load.duration;
    let per_connection_interval = load
        .rate
        .map(|r| Duration::from_secs_f64(load.connections as f64 / r));
    let threads: Vec<_> = (0..load.connections)
        .map(|c| {
            let next = next.clone();
            let merged = merged.clone();
            let (port, mix, run, connections, retry) =
                (load.port, load.mix, load.run, load.connections, load.retry);
            let challenge = challenge_for(port);
            std::thread::spawn(move || {
                let mut local = Stats::default();
                let mut stream: Option<TcpStream> = None;
                let mut buffer = Vec::new();
                // Spread the connections' schedules over one interval.
                let offset =
                    per_connection_interval.map(|i| i.mul_f64(c as f64 / connections as f64));
                let mut scheduled = started + offset.unwrap_or_default();
                let mut retries: std::collections::VecDeque<(Instant, u64, u32)> =
                    Default::default();
                loop {
                    let mut attempt_of = 1;
                    let n = if Instant::now() < deadline {
                        if let Some(interval) = per_connection_interval {
                            let now = Instant::now();
                            if scheduled > now {
                                std::thread::sleep(scheduled - now);
                            }
                            scheduled += interval;
                        }
                        if Instant::now() >= deadline {
                            continue;
                        }
                        match retries.front() {
                            Some(&(due, n, attempts)) if due <= Instant::now() => {
                                retries.pop_front();
                                attempt_of = attempts + 1;
                                n
                            }
                            _ => next.fetch_add(1, Ordering::Relaxed),
                        }
                    } else {
                        // Past the load: finish the retries, then stop.
                        let Some((due, n, attempts)) = retries.pop_front() else {
                            break;
                        };
                        if Instant::now() > deadline + Duration::from_secs(60) {
                            break;
                        }
                        let now = Instant::now();
                        if due > now {
                            std::thread::sleep(due - now);
                        }
                        attempt_of = attempts + 1;
                        n
                    };
                    let planned = plan(mix, run, n);
                    let bytes = request_bytes(&planned, &challenge);
                    // Latency from the scheduled send time at a fixed rate, so a stall is not hidden
                    // by sending late (coordinated omission).
                    let now = Instant::now();
                    let from = if per_connection_interval.is_some() && attempt_of == 1 {
                        scheduled
                            .checked_sub(per_connection_interval.unwrap_or_default())
                            .unwrap_or(now)
                    } else {
                        now
                    };
                    local.sent += 1;
                    let mut answer = None;
                    for _attempt in 0..2 {
                        if stream.is_none() {
                            stream = TcpStream::connect(("127.0.0.1", port)).ok();
                            if let Some(s) = &stream {
                                let _ = s.set_nodelay(true);
                                let _ = s.set_read_timeout(Some(Duration::from_secs(30)));
                            }
                            buffer.clear();
                        }
                        let Some(s) = stream.as_mut() else { break };
                        if s.write_all(&bytes).is_ok() {
                            if let Ok(r) = read_response(s, &mut buffer) {
                                answer = Some(r);
                                break;
                            }
                        }
                        // A kept-alive connection closed under us before the request was read:
                        // reconnect once. A second failure counts as no answer.
                        stream = None;
                    }
                    let status = answer.as_ref().map_or(0, |(status, _, _)| *status);
                    if retry && matches!(status, 0 | 502..=504) && attempt_of < MAX_ATTEMPTS {
                        // As the page does: after the advised wait, else a fixed one.
                        let wait = answer
                            .as_ref()
                            .and_then(|(_, hint, _)| *hint)
                            .map_or(RETRY_WAIT, Duration::from_secs);
                        // Keep the queue in due order: a short hint may come after a long one.
                        let due = Instant::now() + wait;
                        let at = retries.partition_point(|(other, _, _)| *other <= due);
                        retries.insert(at, (due, n, attempt_of));
                    }
                    match answer {
                        Some((status, _, body)) => {
                            local.answered += 1;
                            local.latencies_us.push(from.elapsed().as_micros() as u64);
                            *local
                                .outcomes
                                .entry(outcome_label(status, &body))
                                .or_default() += 1;
                            local.per_request.push((n, status));
                        }
                        None => {
                            *local.outcomes.entry("no answer".into()).or_default() += 1;
                            local.per_request.push((n, 0));
                        }
                    }
                }
                let mut m = merged.lock().unwrap();
                m.sent += local.sent;
                m.answered += local.answered;
                m.latencies_us.extend(local.latencies_us);
                m.per_request.extend(local.per_request);
                for (k, v) in local.outcomes {
                    *m.outcomes.entry(k).or_default() += v;
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let mut stats = std::mem::take(&mut *merged.lock().unwrap());
    stats.elapsed = load.duration;
    stats.latencies_us.sort_unstable();
    stats
}
