//! The load generator: keep-alive connections over loopback at a fixed rate or as fast as
//! answers come, with the page's retry behaviour, counting every answer.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

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
    /// Where to send: connection `c` goes to `ports[c % ports.len()]` (several edges, round
    /// robin).
    pub ports: Vec<u16>,
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
    /// Request number → the receipt id of each 202 it was answered (empty if the body had none).
    pub receipts: Vec<(u64, String)>,
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

    /// Counts the answer (or its absence) request `n` got, timed from `from`.
    fn record(&mut self, n: u64, answer: Option<Answer>, from: Instant) {
        let Some((status, _, body)) = answer else {
            *self.outcomes.entry("no answer".into()).or_default() += 1;
            self.per_request.push((n, 0));
            return;
        };
        self.answered += 1;
        self.latencies_us.push(from.elapsed().as_micros() as u64);
        *self
            .outcomes
            .entry(outcome_label(status, &body))
            .or_default() += 1;
        self.per_request.push((n, status));
        if status == 202 {
            self.receipts
                .push((n, receipt_id(&body).unwrap_or("").to_owned()));
        }
    }

    fn merge(&mut self, other: Stats) {
        self.sent += other.sent;
        self.answered += other.answered;
        self.latencies_us.extend(other.latencies_us);
        self.per_request.extend(other.per_request);
        self.receipts.extend(other.receipts);
        for (k, v) in other.outcomes {
            *self.outcomes.entry(k).or_default() += v;
        }
    }
}

/// The receipt id of an accepted answer: `{"status":"accepted","receipt":{"id":"…"`.
pub fn receipt_id(body: &str) -> Option<&str> {
    body.split("\"receipt\":{\"id\":\"")
        .nth(1)?
        .split('"')
        .next()
}

/// A retry waiting its turn: when it is due, the request number, the attempts so far.
type Retry = (Instant, u64, u32);

/// One connection's schedule: fresh requests at its share of the rate until the deadline, and
/// the page's retries, which may run up to a minute past it.
struct Schedule<'a> {
    next: &'a AtomicU64,
    deadline: Instant,
    interval: Option<Duration>,
    scheduled: Instant,
    retries: std::collections::VecDeque<Retry>,
}

impl Schedule<'_> {
    /// The next request to send and its attempt number (1 for a fresh one), after waiting for
    /// its time; `None` when the connection is done.
    fn next_request(&mut self) -> Option<(u64, u32)> {
        loop {
            if Instant::now() >= self.deadline {
                return self.next_retry_after_deadline();
            }
            if let Some(interval) = self.interval {
                sleep_until(self.scheduled);
                self.scheduled += interval;
            }
            if Instant::now() >= self.deadline {
                continue;
            }
            return Some(match self.retries.front() {
                Some(&(due, n, attempts)) if due <= Instant::now() => {
                    self.retries.pop_front();
                    (n, attempts + 1)
                }
                _ => (self.next.fetch_add(1, Ordering::Relaxed), 1),
            });
        }
    }

    /// Past the load: finish the retries, then stop.
    fn next_retry_after_deadline(&mut self) -> Option<(u64, u32)> {
        let (due, n, attempts) = self.retries.pop_front()?;
        if Instant::now() > self.deadline + Duration::from_secs(60) {
            return None;
        }
        sleep_until(due);
        Some((n, attempts + 1))
    }

    /// When a fresh request sent now was due: latency counts from the scheduled send time at a
    /// fixed rate, so a stall is not hidden by sending late (coordinated omission).
    fn due_time(&self, attempt: u32) -> Instant {
        let now = Instant::now();
        match self.interval {
            Some(interval) if attempt == 1 => self.scheduled.checked_sub(interval).unwrap_or(now),
            _ => now,
        }
    }

    /// As the page does: after the advised wait, else a fixed one. The queue stays in due order:
    /// a short hint may come after a long one.
    fn retry_later(&mut self, n: u64, attempt: u32, hint: Option<u64>) {
        let wait = hint.map_or(RETRY_WAIT, Duration::from_secs);
        let due = Instant::now() + wait;
        let at = self.retries.partition_point(|(other, _, _)| *other <= due);
        self.retries.insert(at, (due, n, attempt));
    }
}

fn sleep_until(when: Instant) {
    let now = Instant::now();
    if when > now {
        std::thread::sleep(when - now);
    }
}

/// A keep-alive connection to `port`, opened again when the server closed it.
struct Connection {
    port: u16,
    stream: Option<TcpStream>,
    buffer: Vec<u8>,
}

impl Connection {
    /// Sends `bytes` and reads the answer. A kept-alive connection closed under us before the
    /// request was read is opened again once; a second failure is no answer.
    fn send(&mut self, bytes: &[u8]) -> Option<Answer> {
        for _attempt in 0..2 {
            if self.stream.is_none() {
                self.stream = TcpStream::connect(("127.0.0.1", self.port)).ok();
                if let Some(s) = &self.stream {
                    let _ = s.set_nodelay(true);
                    let _ = s.set_read_timeout(Some(Duration::from_secs(30)));
                }
                self.buffer.clear();
            }
            let s = self.stream.as_mut()?;
            if s.write_all(bytes).is_ok() {
                if let Ok(answer) = read_response(s, &mut self.buffer) {
                    return Some(answer);
                }
            }
            self.stream = None;
        }
        None
    }
}

/// `HARBOUR_BENCH_SLOW_MS=N`: every answer later than N ms (from when it was due) is logged with
/// the wall-clock time it came and the edge it came from, to find when a tail happens and where.
fn slow_answer_bound() -> Option<Duration> {
    static BOUND: OnceLock<Option<Duration>> = OnceLock::new();
    *BOUND.get_or_init(|| {
        let value = std::env::var("HARBOUR_BENCH_SLOW_MS").ok()?;
        match value.parse::<u64>() {
            Ok(ms) => Some(Duration::from_millis(ms)),
            Err(_) => {
                eprintln!("HARBOUR_BENCH_SLOW_MS={value:?} is not a whole number of ms: ignored");
                None
            }
        }
    })
}

fn log_slow_answer(n: u64, port: u16, late: Duration) {
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    eprintln!(
        "slow answer: request {n}, edge :{port}, {} us after it was due, at {now_ms} ms since the epoch",
        late.as_micros()
    );
}

/// What one connection's thread does: send until its schedule ends; its counts.
fn drive(load: &Load, c: usize, next: &AtomicU64, started: Instant) -> Stats {
    let interval = load
        .rate
        .map(|r| Duration::from_secs_f64(load.connections as f64 / r));
    // Spread the connections' schedules over one interval.
    let offset = interval.map(|i| i.mul_f64(c as f64 / load.connections as f64));
    let mut schedule = Schedule {
        next,
        deadline: started + load.duration,
        interval,
        scheduled: started + offset.unwrap_or_default(),
        retries: Default::default(),
    };
    let port = load.ports[c % load.ports.len()];
    let mut connection = Connection {
        port,
        stream: None,
        buffer: Vec::new(),
    };
    let challenge = challenge_for(port);
    let mut local = Stats::default();
    while let Some((n, attempt)) = schedule.next_request() {
        let bytes = request_bytes(&plan(load.mix, load.run, n), &challenge);
        let from = schedule.due_time(attempt);
        local.sent += 1;
        let answer = connection.send(&bytes);
        let late = from.elapsed();
        let status = answer.as_ref().map_or(0, |(status, _, _)| *status);
        if load.retry && matches!(status, 0 | 502..=504) && attempt < MAX_ATTEMPTS {
            schedule.retry_later(n, attempt, answer.as_ref().and_then(|(_, hint, _)| *hint));
        }
        local.record(n, answer, from);
        if slow_answer_bound().is_some_and(|bound| late > bound) {
            log_slow_answer(n, port, late);
        }
    }
    local
}

pub fn run_load(load: &Load) -> Stats {
    let next = AtomicU64::new(load.first);
    let started = Instant::now();
    let mut stats = std::thread::scope(|scope| {
        let threads: Vec<_> = (0..load.connections)
            .map(|c| {
                let next = &next;
                scope.spawn(move || drive(load, c, next, started))
            })
            .collect();
        let mut merged = Stats::default();
        for t in threads {
            merged.merge(t.join().unwrap());
        }
        merged
    });
    stats.elapsed = load.duration;
    stats.latencies_us.sort_unstable();
    stats
}
