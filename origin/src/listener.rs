//! The origin's listeners: its own accept loop, hyper's HTTP/1.1 on each connection, and the rules
//! that keep a stranger from holding the origin with connections that never finish a request.
//!
//! Rules (each limit is a command-line option, see `Limits`):
//!
//! - **Connections**: a listener holds at most `max_connections`. At the cap it stops accepting,
//!   so new connections wait in the kernel's listen backlog rather than being refused (a burst of
//!   the edge's own connections is served a moment later, not failed over), and it makes room
//!   (checked every `DRAIN_EVERY` while at the cap): it closes each connection whose request has
//!   been on its way (head or body) for `INCOMPLETE_AT_CAP`, and each keep-alive connection idle
//!   for `IDLE_AT_CAP`. The edge sends a request in one go, so one still arriving after that is
//!   a stranger's or a broken client's; and a connection the edge is using is idle for moments
//!   only, so strangers holding the cap make room before the edge's connections do. Every
//!   connection that is not handling a request runs against a deadline below, so a place is
//!   always given back within a bounded time.
//! - **TLS**: the handshake must finish within `handshake_timeout` of the accept.
//! - **Head**: a request's head must be complete within `head_timeout` of the connection's start
//!   (after TLS), or of its first byte on a kept-alive connection.
//! - **Body**: a request is read whole before any route sees it, so a route (and the in-flight
//!   bound behind it) only ever handles complete requests. The body must arrive within
//!   `body_timeout` of the end of the head and, after its grace (`BODY_GRACE` and a random part
//!   of `GRACE_SPREAD`), at `min_body_rate` bytes a second on average (a trickle is cut off long
//!   before the deadline); a body cut off is answered 408 and its connection closed. A body over
//!   `max_body_bytes` (declared or found) is never kept: what the client goes on sending is read
//!   and thrown away under the same deadline and rate, up to `DISCARD_LIMIT` bytes, and then
//!   answered 413 and its connection closed. So the client can read its 413 rather than risk a
//!   reset of a connection closed on unread bytes (RFC 9112 §9.6), and one that sends refused
//!   bodies in a loop holds a connection for as long as it sends, not for one round trip each
//!   (the loop would be a flood of new connections). A client that asked to
//!   `Expect: 100-continue` is answered 413 at once: it sends nothing more.
//! - **Handling**: no connection deadline runs while a route handles a complete request; the
//!   route's own bounds apply (the in-flight bound, the store's timeouts). The connection is not
//!   read meanwhile, so a peer that half-closes after its request still gets the answer.
//! - **Idle**: after an answer, a connection with no new request for `idle_timeout` is closed, as
//!   is one whose peer does not read its answer within that time.
//! - **Shutdown**: when told to stop, a listener stops accepting (its socket closes, so what waits
//!   in the backlog is refused), closes idle connections, and lets requests under way finish, for
//!   up to `SHUTDOWN_GRACE`.

use std::collections::hash_map::RandomState;
use std::convert::Infallible;
use std::future::Future;
use std::hash::BuildHasher;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Bytes, Incoming};
use hyper::header::{HeaderValue, CONNECTION, CONTENT_TYPE, EXPECT};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::json;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Notify, OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};
use tokio_rustls::TlsAcceptor;

/// An answer: status, headers and a body already in memory.
pub type Reply = Response<Full<Bytes>>;

/// Connections a listener holds when `--max-connections` is not given: room for the edge's
/// connections (a few hundred at a peak) beside a thousand or more of a stranger's, so that an
/// attack of that size never makes the edge's new connections wait at the cap (a few KB each
/// while idle; `open_files` makes the process's open-file limit fit them).
pub const DEFAULT_MAX_CONNECTIONS: usize = 4096;
/// The operations listener's cap: an operator's probes and scrapers.
pub const OPS_MAX_CONNECTIONS: usize = 64;
/// Open files the process needs besides its connections: the store's files or its database
/// connections, the TLS material, logs.
pub const FILES_BESIDE_CONNECTIONS: u64 = 64;
/// The edge sends each request at once and gives a whole attempt 3 s: a handshake, head or body
/// slower than a few seconds is one the edge has already given up on.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
pub const DEFAULT_HEAD_TIMEOUT: Duration = Duration::from_secs(5);
pub const DEFAULT_BODY_TIMEOUT: Duration = Duration::from_secs(5);
/// Bytes a second a body must average after `BODY_GRACE`; 0 turns the rate check off. A
/// submission arrives in one or two packets; a stranger trickling a byte at a time is cut off
/// about a second in instead of at the body deadline.
pub const DEFAULT_MIN_BODY_RATE: u64 = 1024;
/// Long enough that a steady edge keeps its connections (Cloudflare keeps idle ones up to 900 s);
/// at the cap idle connections are closed first, so a stranger gains nothing from it.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Submissions are a few hundred bytes. The shipped policy caps a visitor's body at 8 KiB, and the
/// entry forwarded from it is at most twice that (a `%01` in a form becomes `\u0001` in JSON) plus
/// its envelope: 32 KiB holds any of them with room to spare.
pub const DEFAULT_MAX_BODY_BYTES: usize = 32 * 1024;
/// The most of a body over the cap that is read and thrown away before its 413 (see the module's
/// rules): eight times the default cap.
pub const DISCARD_LIMIT: u64 = 256 * 1024;
/// The start of a body that the rate check leaves alone (one slow round trip), at least.
pub const BODY_GRACE: Duration = Duration::from_secs(1);
/// Each body's grace is longer by a random part of this: connections opened together and cut by
/// the rate check together would come back together, and each wave of their reconnections
/// queues the edge's requests behind it on the runtime thread. Spread out, they do not
/// (`bash scripts/bench --slow-body`, quiet machine, p99 with over-cap heads: 46–75 ms before
/// the spread, 17–30 ms with it; see README).
pub const GRACE_SPREAD: Duration = Duration::from_millis(500);
/// How long requests under way may take to finish once shutdown begins.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// While at the cap, how often connections are asked to make room.
const DRAIN_EVERY: Duration = Duration::from_millis(50);
/// At the cap, a request still arriving after this makes room: several round trips of a slow
/// link, and far more than a request sent in one go takes.
pub const INCOMPLETE_AT_CAP: Duration = Duration::from_millis(250);
/// At the cap, a keep-alive connection idle this long makes room: longer than a busy edge
/// leaves its connections idle between requests, so its connections outlast a stranger's.
pub const IDLE_AT_CAP: Duration = Duration::from_secs(1);
/// The longest request head (request line and headers): hyper's buffer, whose floor is 8 KiB.
const MAX_HEAD_BYTES: usize = 16 * 1024;
/// A failed accept (out of file descriptors, say) is retried after this, not in a tight loop.
const ACCEPT_PAUSE: Duration = Duration::from_millis(50);

/// A listener's limits (see the module's rules).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    pub max_connections: usize,
    pub handshake_timeout: Duration,
    pub head_timeout: Duration,
    pub body_timeout: Duration,
    pub min_body_rate: u64,
    pub idle_timeout: Duration,
    pub max_body_bytes: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_connections: DEFAULT_MAX_CONNECTIONS,
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
            head_timeout: DEFAULT_HEAD_TIMEOUT,
            body_timeout: DEFAULT_BODY_TIMEOUT,
            min_body_rate: DEFAULT_MIN_BODY_RATE,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
        }
    }
}

impl Limits {
    /// When a body begun at `start`, `received` bytes of it in, must have shown its next byte:
    /// the body deadline, or sooner if it is behind the minimum rate after `grace` (`grace()`).
    pub fn body_deadline(&self, start: Instant, grace: Duration, received: u64) -> Instant {
        let hard = later(start, self.body_timeout);
        if self.min_body_rate == 0 {
            return hard;
        }
        let earned = Duration::from_micros(received.saturating_mul(1_000_000) / self.min_body_rate);
        hard.min(later(start, grace.saturating_add(earned)))
    }
}

/// A body's grace before the rate check: `BODY_GRACE` and a random part of `GRACE_SPREAD`.
pub fn grace() -> Duration {
    // Each `RandomState` has keys of its own (random per thread, then counted up), so hashing
    // nothing with a new one gives fresh bits without a system call. Not secret: only spread.
    let bits = RandomState::new().hash_one(());
    let fraction = (bits >> 11) as f64 / (1u64 << 53) as f64;
    BODY_GRACE.saturating_add(GRACE_SPREAD.mul_f64(fraction))
}

/// The submissions listener's connection cap for a process that may open `open_files` files:
/// `max_connections` when it fits beside the operations listener and `FILES_BESIDE_CONNECTIONS`.
/// A cap given on the command line (`given`) that does not fit is an error; the default is
/// lowered to what fits, with a warning saying so.
pub fn fit_connections(
    max_connections: usize,
    given: bool,
    open_files: u64,
) -> Result<(usize, Option<String>), String> {
    let beside = OPS_MAX_CONNECTIONS as u64 + FILES_BESIDE_CONNECTIONS;
    let fits = usize::try_from(open_files.saturating_sub(beside)).unwrap_or(usize::MAX);
    if max_connections <= fits {
        return Ok((max_connections, None));
    }
    let needed = max_connections as u64 + beside;
    let raise = "raise the open-file limit (LimitNOFILE= in a systemd unit, ulimit -n in a shell)";
    if given {
        return Err(format!(
            "--max-connections {max_connections} needs about {needed} open files, and this process may open {open_files}: {raise} or give a lower --max-connections"
        ));
    }
    if fits < OPS_MAX_CONNECTIONS {
        return Err(format!(
            "this process may open {open_files} files, too few for a listener beside the operations one: {raise}"
        ));
    }
    let warning = format!(
        "connections capped at {fits}, not {max_connections}: this process may open {open_files} files; {raise} for the full cap"
    );
    Ok((fits, Some(warning)))
}

/// The open-file limit raised as far as the system allows (the soft limit to the hard one), and
/// what it is then; `None` where it cannot be read.
pub fn open_files() -> Option<u64> {
    rlimit::increase_nofile_limit(u64::MAX).ok()
}

/// `time` after `start`, at most a year (the command line allows a day): adding never panics,
/// and a year after a monotonic clock reading always exists, so `start` itself is never returned
/// in practice.
fn later(start: Instant, time: Duration) -> Instant {
    const YEAR: Duration = Duration::from_secs(365 * 24 * 3600);
    start.checked_add(time.min(YEAR)).unwrap_or(start)
}

/// What a listener has done, for `/v1/load`.
#[derive(Default)]
pub struct Gauges {
    cap: usize,
    accepted: AtomicU64,
    open: AtomicUsize,
    most: AtomicUsize,
    timed_out: AtomicU64,
    drained: AtomicU64,
    refused_bodies: AtomicU64,
}

impl Gauges {
    /// `{"cap","accepted","open","max_open_seen","timed_out","drained","refused_bodies"}`:
    /// connections accepted so far, open now, the most ever open, cut by a deadline (handshake,
    /// head, body, idle), closed to make room at the cap (see the module's rules), and bodies
    /// refused (too large, too slow, broken).
    pub fn report(&self) -> serde_json::Value {
        json!({
            "cap": self.cap,
            "accepted": self.accepted.load(Ordering::Relaxed),
            "open": self.open.load(Ordering::Relaxed),
            "max_open_seen": self.most.load(Ordering::Relaxed),
            "timed_out": self.timed_out.load(Ordering::Relaxed),
            "drained": self.drained.load(Ordering::Relaxed),
            "refused_bodies": self.refused_bodies.load(Ordering::Relaxed),
        })
    }

    fn opened(self: &Arc<Self>) -> Open {
        self.accepted.fetch_add(1, Ordering::Relaxed);
        let now = self.open.fetch_add(1, Ordering::Relaxed) + 1;
        self.most.fetch_max(now, Ordering::Relaxed);
        Open(self.clone())
    }

    fn timed_out(&self) {
        self.timed_out.fetch_add(1, Ordering::Relaxed);
    }
}

/// An open connection, counted until dropped.
struct Open(Arc<Gauges>);

impl Drop for Open {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Why a body was not read whole.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refused {
    /// Over `max_body_bytes` (declared or received): 413.
    TooLarge,
    /// Past the body deadline or behind the minimum rate: 408.
    TooSlow,
    /// The peer broke the body off or sent a malformed one: 400.
    Broken,
}

impl Refused {
    /// The answer, which also closes the connection: nothing more of the body is read.
    pub fn reply(self) -> Reply {
        let (status, code) = match self {
            Refused::TooLarge => (StatusCode::PAYLOAD_TOO_LARGE, "body_too_large"),
            Refused::TooSlow => (StatusCode::REQUEST_TIMEOUT, "body_timeout"),
            Refused::Broken => (StatusCode::BAD_REQUEST, "malformed_body"),
        };
        let mut reply = Response::new(Full::new(Bytes::from(format!("{{\"code\":\"{code}\"}}"))));
        *reply.status_mut() = status;
        let headers = reply.headers_mut();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        headers.insert(CONNECTION, HeaderValue::from_static("close"));
        reply
    }
}

/// Reads a body whole under `limits` (see the module's rules). `continue_expected`: the client
/// waits for `100 Continue` before it sends the body, which reading it would send.
pub async fn read_body(
    mut body: Incoming,
    limits: &Limits,
    continue_expected: bool,
) -> Result<Bytes, Refused> {
    let max = u64::try_from(limits.max_body_bytes).unwrap_or(u64::MAX);
    let (start, grace) = (Instant::now(), grace());
    if body.size_hint().lower() > max {
        if !continue_expected {
            discard(body, limits, (start, grace), 0).await;
        }
        return Err(Refused::TooLarge);
    }
    let mut received = 0u64;
    // One frame (the usual case: the body came with its head) is kept as it is; more are joined.
    let (mut first, mut joined): (Option<Bytes>, Vec<u8>) = (None, Vec::new());
    while !body.is_end_stream() {
        let deadline = limits.body_deadline(start, grace, received);
        let frame = match tokio::time::timeout_at(deadline, body.frame()).await {
            Err(_) => return Err(Refused::TooSlow),
            Ok(None) => break,
            Ok(Some(Err(_))) => return Err(Refused::Broken),
            Ok(Some(Ok(frame))) => frame,
        };
        let Ok(data) = frame.into_data() else {
            continue; // trailers
        };
        received += data.len() as u64;
        if received > max {
            discard(body, limits, (start, grace), received).await;
            return Err(Refused::TooLarge);
        }
        match first.take() {
            None if joined.is_empty() => first = Some(data),
            None => joined.extend_from_slice(&data),
            Some(earlier) => {
                joined.extend_from_slice(&earlier);
                joined.extend_from_slice(&data);
            }
        }
    }
    Ok(first.unwrap_or_else(|| Bytes::from(joined)))
}

/// Reads the rest of a body over the cap, `received` bytes of it in, and throws it away: until it
/// ends, breaks, falls behind the body deadline or minimum rate (after the body's `grace`), or
/// passes `DISCARD_LIMIT`.
async fn discard(
    mut body: Incoming,
    limits: &Limits,
    (start, grace): (Instant, Duration),
    mut received: u64,
) {
    while !body.is_end_stream() && received <= DISCARD_LIMIT {
        let deadline = limits.body_deadline(start, grace, received);
        match tokio::time::timeout_at(deadline, body.frame()).await {
            Ok(Some(Ok(frame))) => {
                if let Ok(data) = frame.into_data() {
                    received += data.len() as u64;
                }
            }
            _ => return,
        }
    }
}

/// The deadline a connection runs against, set by where it is in its request cycle.
struct Watch {
    born: Instant,
    /// Microseconds after `born` at which the connection is cut; `NEVER` while a route handles
    /// a request.
    deadline_us: AtomicU64,
    /// Where the connection is in its request cycle: `INCOMPLETE`, `HANDLING` or `IDLE`.
    stage: AtomicU8,
    /// Microseconds after `born` at which the current stage began.
    stage_since_us: AtomicU64,
    head_timeout: Duration,
    idle_timeout: Duration,
}

const NEVER: u64 = u64::MAX;
/// A request's head or body is on its way (also a new connection before its first byte).
const INCOMPLETE: u8 = 0;
/// A route handles a complete request.
const HANDLING: u8 = 1;
/// Answered, and no byte of a next request yet.
const IDLE: u8 = 2;

impl Watch {
    /// A new connection: its first head is due within the head timeout.
    fn new(limits: &Limits) -> Watch {
        let watch = Watch {
            born: Instant::now(),
            deadline_us: AtomicU64::new(NEVER),
            stage: AtomicU8::new(INCOMPLETE),
            stage_since_us: AtomicU64::new(0),
            head_timeout: limits.head_timeout,
            idle_timeout: limits.idle_timeout,
        };
        watch.due_in(limits.head_timeout);
        watch
    }

    fn due_in(&self, time: Duration) {
        let at = self.born.elapsed().saturating_add(time).as_micros();
        self.deadline_us
            .store(u64::try_from(at).unwrap_or(NEVER - 1), Ordering::Relaxed);
    }

    fn enter(&self, stage: u8) {
        let now = u64::try_from(self.born.elapsed().as_micros()).unwrap_or(NEVER - 1);
        self.stage_since_us.store(now, Ordering::Relaxed);
        self.stage.store(stage, Ordering::Relaxed);
    }

    /// Bytes came in: on an idle connection, the first of a new head.
    fn arrived(&self) {
        if self.is_idle() {
            self.enter(INCOMPLETE);
            self.due_in(self.head_timeout);
        }
    }

    /// A head is complete and its body is on its way: the body's own deadlines apply
    /// (`read_body`), no connection deadline.
    fn reading_body(&self) {
        self.enter(INCOMPLETE);
        self.deadline_us.store(NEVER, Ordering::Relaxed);
    }

    /// The request is complete: the route's own bounds apply until it answers.
    fn handling(&self) {
        self.enter(HANDLING);
        self.deadline_us.store(NEVER, Ordering::Relaxed);
    }

    fn answered(&self) {
        self.due_in(self.idle_timeout);
        self.enter(IDLE);
    }

    fn is_idle(&self) -> bool {
        self.stage.load(Ordering::Relaxed) == IDLE
    }

    /// Whether, at the cap, this connection makes room (see the module's rules).
    fn makes_room(&self) -> bool {
        let since = Duration::from_micros(self.stage_since_us.load(Ordering::Relaxed));
        let in_stage = self.born.elapsed().saturating_sub(since);
        match self.stage.load(Ordering::Relaxed) {
            INCOMPLETE => in_stage >= INCOMPLETE_AT_CAP,
            IDLE => in_stage >= IDLE_AT_CAP,
            _ => false,
        }
    }

    fn deadline(&self) -> Option<Instant> {
        let us = self.deadline_us.load(Ordering::Relaxed);
        (us != NEVER).then(|| later(self.born, Duration::from_micros(us)))
    }
}

/// A connection's transport held to its `Watch`: a read or write that waits past the deadline
/// fails with `TimedOut`, which ends the connection.
struct Guarded<IO> {
    io: IO,
    watch: Arc<Watch>,
    gauges: Arc<Gauges>,
    timer: Pin<Box<Sleep>>,
    armed: Option<Instant>,
    expired: bool,
}

impl<IO> Guarded<IO> {
    fn new(io: IO, watch: Arc<Watch>, gauges: Arc<Gauges>) -> Guarded<IO> {
        let timer = Box::pin(tokio::time::sleep_until(watch.born));
        Guarded {
            io,
            watch,
            gauges,
            timer,
            armed: None,
            expired: false,
        }
    }

    /// The transport is waiting: pending, or `TimedOut` once the deadline has passed.
    fn waiting<T>(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<T>> {
        if !self.expired {
            let Some(deadline) = self.watch.deadline() else {
                return Poll::Pending;
            };
            if self.armed != Some(deadline) {
                self.timer.as_mut().reset(deadline);
                self.armed = Some(deadline);
            }
            if self.timer.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            self.expired = true;
            self.gauges.timed_out();
        }
        Poll::Ready(Err(io::ErrorKind::TimedOut.into()))
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Guarded<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.io).poll_read(cx, buf) {
            Poll::Pending => this.waiting(cx),
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before {
                    this.watch.arrived();
                }
                Poll::Ready(Ok(()))
            }
            failed => failed,
        }
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Guarded<IO> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        match Pin::new(&mut this.io).poll_write(cx, buf) {
            Poll::Pending => this.waiting(cx),
            done => done,
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        match Pin::new(&mut this.io).poll_write_vectored(cx, bufs) {
            Poll::Pending => this.waiting(cx),
            done => done,
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match Pin::new(&mut this.io).poll_flush(cx) {
            Poll::Pending => this.waiting(cx),
            done => done,
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match Pin::new(&mut this.io).poll_shutdown(cx) {
            Poll::Pending => this.waiting(cx),
            done => done,
        }
    }
}

/// What every connection of a listener shares.
struct Shared {
    limits: Limits,
    gauges: Arc<Gauges>,
    tls: Option<TlsAcceptor>,
    http: http1::Builder,
    /// Rings while the listener is at its cap: connections that make room close.
    drain: Notify,
}

/// A bound socket, its limits, and (for the submissions listener) its TLS configuration.
pub struct Listener {
    tcp: TcpListener,
    slots: Arc<Semaphore>,
    shared: Arc<Shared>,
}

impl Listener {
    /// `tcp` is bound already (the command line's address, possibly port 0).
    pub fn new(
        tcp: std::net::TcpListener,
        tls: Option<Arc<rustls::ServerConfig>>,
        limits: Limits,
    ) -> io::Result<Listener> {
        tcp.set_nonblocking(true)?;
        let mut http = http1::Builder::new();
        // Ours are the deadlines (`Watch`): hyper's own head timeout would also cut idle
        // keep-alive connections at the head's (shorter) limit.
        // Half-close: while a route handles a request, hyper does not read ahead to notice the
        // peer closing. That read took a fresh buffer for every request (the request still
        // held the old one); the route finishes anyway, as the writer stores what it was given.
        http.keep_alive(true)
            .header_read_timeout(None)
            .half_close(true)
            .max_buf_size(MAX_HEAD_BYTES);
        let gauges = Arc::new(Gauges {
            cap: limits.max_connections,
            ..Gauges::default()
        });
        Ok(Listener {
            tcp: TcpListener::from_std(tcp)?,
            slots: Arc::new(Semaphore::new(limits.max_connections)),
            shared: Arc::new(Shared {
                limits,
                gauges,
                tls: tls.map(TlsAcceptor::from),
                http,
                drain: Notify::new(),
            }),
        })
    }

    pub fn gauges(&self) -> Arc<Gauges> {
        self.shared.gauges.clone()
    }

    /// Accepts connections and answers their requests with `route`, each request read whole
    /// first, until `stop` turns true; then waits for the connections (up to `SHUTDOWN_GRACE`).
    pub async fn serve<R, F>(self, route: R, mut stop: watch::Receiver<bool>)
    where
        R: Fn(Request<Bytes>) -> F + Clone + Send + Sync + 'static,
        F: Future<Output = Reply> + Send + 'static,
    {
        loop {
            let permit = tokio::select! {
                biased;
                () = stopped(&mut stop) => break,
                permit = self.slot() => permit,
            };
            let Some(permit) = permit else { break };
            let accepted = tokio::select! {
                biased;
                () = stopped(&mut stop) => break,
                accepted = self.tcp.accept() => accepted,
            };
            match accepted {
                Ok((tcp, _)) => {
                    let open = self.shared.gauges.opened();
                    let (shared, route, stop) = (self.shared.clone(), route.clone(), stop.clone());
                    tokio::spawn(async move {
                        connection(tcp, &shared, route, stop).await;
                        drop((open, permit));
                    });
                }
                Err(error) => {
                    log(json!({"msg": "origin.accept_failed", "error": error.to_string()}));
                    tokio::time::sleep(ACCEPT_PAUSE).await;
                }
            }
        }
        // Closing the socket refuses what waits in the backlog; then the connections end.
        let Listener { tcp, slots, shared } = self;
        drop(tcp);
        let all = u32::try_from(shared.limits.max_connections).unwrap_or(u32::MAX);
        let _ = tokio::time::timeout(SHUTDOWN_GRACE, slots.acquire_many(all)).await;
    }

    /// A place for one more connection; at the cap, connections are asked to make room until
    /// one is free.
    async fn slot(&self) -> Option<OwnedSemaphorePermit> {
        loop {
            match self.slots.clone().try_acquire_owned() {
                Ok(permit) => return Some(permit),
                Err(tokio::sync::TryAcquireError::Closed) => return None,
                Err(tokio::sync::TryAcquireError::NoPermits) => {}
            }
            self.shared.drain.notify_waiters();
            let wait = self.slots.clone().acquire_owned();
            if let Ok(permit) = tokio::time::timeout(DRAIN_EVERY, wait).await {
                return permit.ok();
            }
        }
    }
}

/// Resolves once `stop` is true (or its sender is gone, which also means stop).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|stop| *stop).await;
}

/// Resolves when the listener is at its cap while this connection is one that makes room.
async fn drained(watch: &Watch, drain: &Notify) {
    loop {
        drain.notified().await;
        if watch.makes_room() {
            return;
        }
    }
}

/// One connection: the TLS handshake under its deadline, if any, then HTTP/1.1.
async fn connection<R, F>(tcp: TcpStream, shared: &Shared, route: R, stop: watch::Receiver<bool>)
where
    R: Fn(Request<Bytes>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Reply> + Send + 'static,
{
    // Answers are one small write each: sent at once, not held back for more.
    let _ = tcp.set_nodelay(true);
    let Some(acceptor) = &shared.tls else {
        return http(tcp, shared, route, stop).await;
    };
    // Pinned out here so that a handshake cut off is counted before its socket closes.
    let handshake = acceptor.accept(tcp);
    tokio::pin!(handshake);
    match tokio::time::timeout(shared.limits.handshake_timeout, &mut handshake).await {
        Ok(Ok(tls)) => http(tls, shared, route, stop).await,
        // Not TLS, or a handshake that failed: nothing to answer.
        Ok(Err(_)) => {}
        Err(_) => shared.gauges.timed_out(),
    }
}

/// HTTP/1.1 on an established transport, until it closes, a deadline passes, it is drained, or
/// the listener stops (then requests under way finish first).
async fn http<IO, R, F>(io: IO, shared: &Shared, route: R, mut stop: watch::Receiver<bool>)
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    R: Fn(Request<Bytes>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Reply> + Send + 'static,
{
    let watch = Arc::new(Watch::new(&shared.limits));
    let service = {
        let (watch, limits, gauges) = (watch.clone(), shared.limits.clone(), shared.gauges.clone());
        service_fn(move |request: Request<Incoming>| {
            watch.reading_body();
            let (watch, limits, gauges, route) =
                (watch.clone(), limits.clone(), gauges.clone(), route.clone());
            async move {
                let (parts, body) = request.into_parts();
                let continue_expected = parts
                    .headers
                    .get(EXPECT)
                    .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
                let reply = match read_body(body, &limits, continue_expected).await {
                    Ok(body) => {
                        watch.handling();
                        route(Request::from_parts(parts, body)).await
                    }
                    Err(refused) => {
                        gauges.refused_bodies.fetch_add(1, Ordering::Relaxed);
                        refused.reply()
                    }
                };
                watch.answered();
                Ok::<_, Infallible>(reply)
            }
        })
    };
    let io = Guarded::new(io, watch.clone(), shared.gauges.clone());
    let connection = shared.http.serve_connection(TokioIo::new(io), service);
    tokio::pin!(connection);
    tokio::select! {
        biased;
        _ = connection.as_mut() => return,
        () = drained(&watch, &shared.drain) => {
            shared.gauges.drained.fetch_add(1, Ordering::Relaxed);
            return;
        }
        () = stopped(&mut stop) => {}
    }
    connection.as_mut().graceful_shutdown();
    let _ = connection.await;
}

fn log(line: serde_json::Value) {
    eprintln!("{line}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_body_behind_the_minimum_rate_is_due_sooner_than_the_deadline() {
        let limits = Limits {
            body_timeout: Duration::from_secs(10),
            min_body_rate: 1000,
            ..Limits::default()
        };
        let (start, grace) = (Instant::now(), BODY_GRACE + Duration::from_millis(300));
        // Nothing yet: the grace only.
        assert_eq!(limits.body_deadline(start, grace, 0), start + grace);
        // 500 bytes buy half a second more.
        assert_eq!(
            limits.body_deadline(start, grace, 500),
            start + grace + Duration::from_millis(500)
        );
        // Never past the body deadline, however fast it came.
        assert_eq!(
            limits.body_deadline(start, grace, 1_000_000),
            start + Duration::from_secs(10)
        );
        let no_rate = Limits {
            min_body_rate: 0,
            ..limits
        };
        assert_eq!(
            no_rate.body_deadline(start, grace, 0),
            start + Duration::from_secs(10)
        );
    }

    #[test]
    fn bodies_get_graces_spread_over_the_spread() {
        let graces: Vec<Duration> = (0..1000).map(|_| grace()).collect();
        assert!(graces
            .iter()
            .all(|g| *g >= BODY_GRACE && *g < BODY_GRACE + GRACE_SPREAD));
        // Spread, not bunched: each fifth of the spread gets a share (200 expected in each).
        let mut fifths = [0u32; 5];
        for g in &graces {
            let fifth = (g.saturating_sub(BODY_GRACE).as_secs_f64() / GRACE_SPREAD.as_secs_f64()
                * 5.0) as usize;
            fifths[fifth.min(4)] += 1;
        }
        assert!(fifths.iter().all(|n| *n >= 100), "{fifths:?}");
    }

    #[test]
    fn a_connection_runs_against_the_deadline_of_where_it_is() {
        let limits = Limits {
            head_timeout: Duration::from_secs(3),
            idle_timeout: Duration::from_secs(60),
            ..Limits::default()
        };
        let watch = Watch::new(&limits);
        let due = |watch: &Watch| watch.deadline().map(|d| d - watch.born);
        let near = |got: Option<Duration>, want: Duration| {
            got.is_some_and(|got| got >= want && got < want + Duration::from_secs(1))
        };
        assert!(near(due(&watch), Duration::from_secs(3)), "the first head");
        watch.reading_body();
        assert_eq!(watch.deadline(), None, "the body's own deadlines apply");
        watch.handling();
        assert_eq!(watch.deadline(), None, "a route has the request");
        assert!(
            !watch.makes_room(),
            "a request being handled never makes room"
        );
        watch.answered();
        assert!(watch.is_idle());
        assert!(near(due(&watch), Duration::from_secs(60)), "idle");
        watch.arrived();
        assert!(!watch.is_idle());
        assert!(near(due(&watch), Duration::from_secs(3)), "the next head");
        // More bytes of the same head leave its deadline alone.
        let before = watch.deadline();
        watch.arrived();
        assert_eq!(watch.deadline(), before);
    }

    #[test]
    fn at_the_cap_a_request_still_arriving_makes_room_sooner_than_an_idle_connection() {
        let watch = Watch::new(&Limits::default());
        assert!(!watch.makes_room(), "a new connection has its moment");
        std::thread::sleep(INCOMPLETE_AT_CAP + Duration::from_millis(50));
        assert!(watch.makes_room(), "no head after INCOMPLETE_AT_CAP");
        watch.reading_body();
        assert!(!watch.makes_room(), "a body just begun");
        watch.handling();
        watch.answered();
        std::thread::sleep(INCOMPLETE_AT_CAP + Duration::from_millis(50));
        assert!(!watch.makes_room(), "idle, but not for IDLE_AT_CAP");
        std::thread::sleep(IDLE_AT_CAP);
        assert!(watch.makes_room(), "idle for IDLE_AT_CAP");
        watch.arrived();
        assert!(!watch.makes_room(), "a next request begun");
    }

    #[test]
    fn the_connection_cap_fits_the_open_file_limit() {
        let beside = OPS_MAX_CONNECTIONS + FILES_BESIDE_CONNECTIONS as usize;
        assert_eq!(fit_connections(4096, false, 20_000), Ok((4096, None)));
        assert_eq!(
            fit_connections(4096, true, 4096 + beside as u64),
            Ok((4096, None))
        );
        // The default lowered to what fits under a unit's usual 1,024, with a warning.
        let (cap, warning) = fit_connections(4096, false, 1024).unwrap();
        assert_eq!(cap, 1024 - beside);
        assert!(warning.unwrap().contains("LimitNOFILE="));
        // A cap given on the command line is never lowered behind the operator's back.
        let refused = fit_connections(4096, true, 1024).unwrap_err();
        assert!(
            refused.contains("--max-connections 4096 needs about"),
            "{refused}"
        );
        assert!(fit_connections(4096, false, 100).is_err());
    }
}
