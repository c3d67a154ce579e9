//! What the two stores' batching shares: a submission made ready before it reaches the batch
//! (`Prepared`), the bounds of a batch and of the queue before it (`Limits`), and the counts of
//! what the batching did (`BatchStats`).
//!
//! Both stores follow the same rules: a batch takes every submission waiting, up to
//! `max_batch`; a submission that finds `queue` submissions already waiting is answered
//! `Unavailable` at once; each submission is answered after its batch committed, and a batch
//! that did not commit answers all of its submissions `Unavailable` and stores nothing.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use super::row::{Row, Stored, Unavailable};
use crate::receipt::ReceiptIds;

/// Submissions per batch, at most: enough to absorb a burst between two commits, few enough that
/// one batch's work stays a few milliseconds.
pub const MAX_BATCH: usize = 512;
/// Submissions waiting for a batch, at most: two full batches. Beyond it a submission is
/// refused at once (503, retried with its key) rather than waiting behind seconds of work.
pub const QUEUE: usize = 1024;
/// How long, at most, a submission waits for others to share its commit, when they arrive
/// often enough that some will (`Pacing`), on SQLite. A commit costs the writer about the same
/// CPU whatever it holds (a synced write and the wake-ups around it), so at 1,840 submissions a
/// second 5 ms fills a batch to `FULL_ENOUGH` (8.7 rows a commit against 4.1 at 2 ms) and takes
/// 14–17 % off the origin's CPU a row (26 % at 1,000 a second); at 5,000 a second batches fill
/// by themselves and nothing is held. PostgreSQL's `commit_delay` is the same idea.
pub const SQLITE_COMMIT_WINDOW: Duration = Duration::from_millis(5);
/// The same on PostgreSQL, shorter: its batchers hold only while no batch is under way, so a
/// longer window added 0.9 ms at p50 and no rows a commit (3.0 against 3.3 at 1,840 a second).
pub const POSTGRES_COMMIT_WINDOW: Duration = Duration::from_millis(2);

/// One submission's answer from its batch.
pub type Answer = Result<Stored, Unavailable>;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    pub max_batch: usize,
    pub queue: usize,
    /// `SQLITE_COMMIT_WINDOW` or `POSTGRES_COMMIT_WINDOW`; zero: a batch is only what waited
    /// while the previous one committed.
    pub commit_window: Duration,
}

impl Limits {
    /// `MAX_BATCH` and `QUEUE`, with `commit_window`.
    pub const fn with_window(commit_window: Duration) -> Limits {
        Limits {
            max_batch: MAX_BATCH,
            queue: QUEUE,
            commit_window,
        }
    }
}

/// A row ready for a batch: owned, its payload serialized and its number and receipt id drawn,
/// so the batch (one thread holding SQLite's write lock, or one statement) only binds and
/// executes.
#[derive(Debug, Clone, PartialEq)]
pub struct Prepared {
    pub campaign: String,
    pub idempotency_key: String,
    pub fields_sha256: String,
    pub person: Option<String>,
    pub platform_country: String,
    pub declared_country: Option<String>,
    /// The notice the visitor was shown (the record of consent), when the entry names one.
    pub notice_locale: Option<String>,
    pub notice_version: Option<String>,
    /// The payload as JSON text.
    pub payload: String,
    pub now_ms: u64,
    /// The row's number and the receipt id derived from it (`receipt`), to try first.
    pub seq: i64,
    pub id: String,
}

impl Prepared {
    pub fn new(row: &Row, ids: &ReceiptIds) -> Result<Prepared, Unavailable> {
        let s = row.submission;
        let (seq, id) = ids.next()?;
        Ok(Prepared {
            campaign: s.campaign.clone(),
            idempotency_key: s.idempotency_key.clone(),
            fields_sha256: s.fields_sha256.clone(),
            person: row.person.map(str::to_owned),
            platform_country: s.platform_country.clone(),
            declared_country: s.declared_country.clone(),
            notice_locale: s.notice.as_ref().map(|(locale, _)| locale.clone()),
            notice_version: s.notice.as_ref().map(|(_, version)| version.clone()),
            payload: s.payload.to_string(),
            now_ms: row.now_ms,
            seq,
            id,
        })
    }

    pub fn stored_at_ms(&self) -> i64 {
        i64::try_from(self.now_ms).unwrap_or(i64::MAX)
    }
}

/// What a store's batching has done so far (for tests, the benchmark and operators).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BatchStats {
    /// Batches taken from the queue: committed, failed, or being written.
    pub batches: u64,
    /// Batches committed.
    pub commits: u64,
    /// Submissions answered by those commits (new rows, replays, conflicts, refused rows).
    pub submissions: u64,
    /// Batches that did not commit; each of their submissions was answered `Unavailable`.
    pub failed_batches: u64,
    /// The largest batch so far.
    pub largest_batch: u64,
}

#[derive(Default)]
pub struct Gauges {
    /// Submissions sent to the queue and not yet taken into a batch.
    waiting: AtomicUsize,
    batches: AtomicU64,
    commits: AtomicU64,
    submissions: AtomicU64,
    failed_batches: AtomicU64,
    largest_batch: AtomicU64,
}

impl Gauges {
    /// Before a submission is sent to the queue, so `took` never counts below 0.
    pub fn queued(&self) {
        self.waiting.fetch_add(1, Ordering::SeqCst);
    }

    /// A submission the queue refused.
    pub fn refused(&self) {
        self.waiting.fetch_sub(1, Ordering::SeqCst);
    }

    pub fn took(&self, size: usize) {
        self.waiting.fetch_sub(size, Ordering::SeqCst);
        self.batches.fetch_add(1, Ordering::SeqCst);
        self.largest_batch.fetch_max(count(size), Ordering::SeqCst);
    }

    pub fn committed(&self, size: usize) {
        self.commits.fetch_add(1, Ordering::SeqCst);
        self.submissions.fetch_add(count(size), Ordering::SeqCst);
    }

    pub fn failed(&self) {
        self.failed_batches.fetch_add(1, Ordering::SeqCst);
    }

    pub fn waiting(&self) -> usize {
        self.waiting.load(Ordering::SeqCst)
    }

    pub fn stats(&self) -> BatchStats {
        BatchStats {
            batches: self.batches.load(Ordering::SeqCst),
            commits: self.commits.load(Ordering::SeqCst),
            submissions: self.submissions.load(Ordering::SeqCst),
            failed_batches: self.failed_batches.load(Ordering::SeqCst),
            largest_batch: self.largest_batch.load(Ordering::SeqCst),
        }
    }
}

fn count(size: usize) -> u64 {
    u64::try_from(size).unwrap_or(u64::MAX)
}

/// The longest gap between two arrivals that `Pacing` counts at its full length: a quiet
/// minute then counts as a second, so the estimate follows a peak's start within tens of rows.
const LONGEST_GAP: Duration = Duration::from_secs(1);
/// After a hold that caught nobody, the batches that skip holding double, up to this many.
const MOST_SKIPPED: u32 = 64;
/// Submissions in a batch past which it is not held open: a commit's fixed CPU (about 200 µs
/// here) is then under 30 µs a row, and more callers waiting on it would only wait longer.
pub const FULL_ENOUGH: usize = 8;
/// A hold's shortest step: about what a sleep's wake-up is late by anyway (Linux's timer slack).
const SHORTEST_STEP: Duration = Duration::from_micros(50);

/// When and how long a writer holds a batch open (`Limits::commit_window`), going by moving
/// averages of the gaps between arrivals and of commits' durations (`CommitTime`):
///
/// - only when another submission is due within the window, and only until the batch holds
///   `FULL_ENOUGH`;
/// - never when `FULL_ENOUGH` arrive while a commit is under way: batches then fill by
///   themselves, and callers that each wait for their answer before sending again (a benchmark's
///   closed loop) would only be slowed;
/// - in steps of two average gaps, for as long as each step brings someone: callers that
///   arrived together (answered by one commit, sending again at once) are all in after a step,
///   and the batch commits then, not at the window's end;
/// - a caller that sends its next submission only once answered arrives often but never during a
///   hold: after each hold that caught nobody, the next 1, 2, 4 … 64 batches do not hold, so
///   such a caller waits on one commit in 64.
#[derive(Clone, Copy, Debug, Default)]
pub struct Pacing {
    last: Option<Instant>,
    gap: Option<Duration>,
    /// Batches still to go without holding.
    skip: u32,
    /// Batches to skip after the next hold that catches nobody (doubles each time).
    backoff: u32,
}

impl Pacing {
    /// A submission queued `at`.
    pub fn arrived(&mut self, at: Instant) {
        if let Some(last) = self.last {
            let gap = at.saturating_duration_since(last).min(LONGEST_GAP);
            self.gap = Some(match self.gap {
                Some(average) => average - average / 8 + gap / 8,
                None => gap,
            });
        }
        self.last = Some(self.last.map_or(at, |last| last.max(at)));
    }

    /// Whether to hold the next batch open for up to `window`, commits taking `commit` on
    /// average. Counts a skipped batch.
    pub fn hold(&mut self, window: Duration, commit: Option<Duration>) -> bool {
        let Some(gap) = self.gap.filter(|gap| !window.is_zero() && *gap <= window) else {
            return false;
        };
        let fills_by_itself = commit.is_some_and(|commit| {
            commit >= gap.saturating_mul(u32::try_from(FULL_ENOUGH).unwrap_or(u32::MAX))
        });
        if fills_by_itself {
            return false;
        }
        if self.skip > 0 {
            self.skip -= 1;
            return false;
        }
        true
    }

    /// How long one step of a hold sleeps: two average gaps, at least `SHORTEST_STEP`.
    pub fn step(&self) -> Duration {
        self.gap
            .map_or(SHORTEST_STEP, |gap| gap.saturating_mul(2))
            .max(SHORTEST_STEP)
    }

    /// After a hold: how many submissions it caught.
    pub fn held(&mut self, caught: usize) {
        if caught > 0 {
            self.backoff = 0;
        } else {
            self.backoff = (self.backoff * 2).clamp(1, MOST_SKIPPED);
            self.skip = self.backoff;
        }
    }
}

/// A moving average of how long commits take (each new one weighs 1/8), shared by a store's
/// batchers.
#[derive(Debug, Default)]
pub struct CommitTime {
    /// Nanoseconds; 0 before the first commit.
    average_ns: AtomicU64,
}

impl CommitTime {
    pub fn record(&self, took: Duration) {
        let took = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        // Batchers that finish together may each update from the same old value: one of their
        // durations is then left out, which an average of many does not notice.
        let average = self.average_ns.load(Ordering::Relaxed);
        let next = if average == 0 {
            took
        } else {
            average - average / 8 + took / 8
        };
        self.average_ns.store(next.max(1), Ordering::Relaxed);
    }

    pub fn average(&self) -> Option<Duration> {
        match self.average_ns.load(Ordering::Relaxed) {
            0 => None,
            ns => Some(Duration::from_nanos(ns)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WINDOW: Duration = Duration::from_millis(2);

    /// `n` arrivals `gap` apart from `start`, then the instant after the last.
    fn arrive(pacing: &mut Pacing, start: Instant, gap: Duration, n: u32) -> Instant {
        for i in 0..n {
            pacing.arrived(start + gap * i);
        }
        start + gap * n
    }

    #[test]
    fn holds_only_when_another_is_due_within_the_window() {
        let mut pacing = Pacing::default();
        assert!(
            !pacing.hold(WINDOW, None),
            "no gap known before two arrivals"
        );
        pacing.arrived(Instant::now());
        assert!(!pacing.hold(WINDOW, None), "no gap known after one arrival");

        let mut often = Pacing::default();
        arrive(&mut often, Instant::now(), Duration::from_micros(500), 20);
        assert!(often.hold(WINDOW, None));
        assert!(
            !often.hold(Duration::ZERO, None),
            "a zero window never holds"
        );
        assert_eq!(often.step(), Duration::from_millis(1), "two average gaps");

        let mut seldom = Pacing::default();
        arrive(&mut seldom, Instant::now(), Duration::from_millis(5), 20);
        assert!(!seldom.hold(WINDOW, None));
    }

    #[test]
    fn never_holds_when_a_commit_brings_enough_by_itself() {
        let mut pacing = Pacing::default();
        // 4,000 a second: 8 come in 2 ms.
        arrive(&mut pacing, Instant::now(), Duration::from_micros(250), 20);
        assert!(pacing.hold(WINDOW, Some(Duration::from_micros(300))));
        assert!(pacing.hold(WINDOW, Some(Duration::from_micros(1900))));
        assert!(!pacing.hold(WINDOW, Some(Duration::from_millis(2))));

        let commits = CommitTime::default();
        assert_eq!(commits.average(), None);
        commits.record(Duration::from_millis(2));
        assert_eq!(commits.average(), Some(Duration::from_millis(2)));
        commits.record(Duration::from_millis(10));
        assert_eq!(commits.average(), Some(Duration::from_millis(3)));
    }

    #[test]
    fn a_step_is_never_shorter_than_the_shortest() {
        let mut pacing = Pacing::default();
        arrive(&mut pacing, Instant::now(), Duration::from_micros(1), 20);
        assert_eq!(pacing.step(), SHORTEST_STEP);
    }

    #[test]
    fn holds_that_catch_nobody_are_skipped_ever_longer_up_to_the_most() {
        let mut pacing = Pacing::default();
        arrive(&mut pacing, Instant::now(), Duration::from_micros(300), 20);
        // Counts the batches until the next hold, after a hold that caught nobody.
        let until_next_hold = |pacing: &mut Pacing| {
            pacing.held(0);
            let mut skipped = 0;
            while !pacing.hold(WINDOW, None) {
                skipped += 1;
                assert!(skipped <= MOST_SKIPPED, "never holds again");
            }
            skipped
        };
        let skipped: Vec<u32> = (0..9).map(|_| until_next_hold(&mut pacing)).collect();
        assert_eq!(skipped, [1, 2, 4, 8, 16, 32, 64, 64, 64]);
        // A hold that caught someone starts the doubling over.
        pacing.held(3);
        assert!(pacing.hold(WINDOW, None));
        assert_eq!(until_next_hold(&mut pacing), 1);
    }

    #[test]
    fn a_peak_after_a_quiet_hour_is_followed_within_tens_of_arrivals() {
        let mut pacing = Pacing::default();
        let start = Instant::now();
        let quiet = arrive(&mut pacing, start, Duration::from_secs(3600), 2);
        assert!(!pacing.hold(WINDOW, None));
        let mut arrivals = 0;
        while !pacing.hold(WINDOW, None) {
            pacing.arrived(quiet + Duration::from_micros(250) * arrivals);
            arrivals += 1;
            assert!(
                arrivals < 100,
                "still not holding after {arrivals} arrivals"
            );
        }
        assert!(arrivals <= 64, "{arrivals} arrivals before the first hold");
    }
}
