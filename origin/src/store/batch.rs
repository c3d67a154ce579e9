//! What the two stores' batching shares: a submission made ready before it reaches the batch
//! (`Prepared`), the bounds of a batch and of the queue before it (`Limits`), and the counts of
//! what the batching did (`BatchStats`).
//!
//! Both stores follow the same rules: a batch takes every submission waiting, up to
//! `max_batch`; a submission that finds `queue` submissions already waiting is answered
//! `Unavailable` at once; each submission is answered after its batch committed, and a batch
//! that did not commit answers all of its submissions `Unavailable` and stores nothing.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use super::row::{Row, Stored, Unavailable};
use crate::receipt::new_id;

/// Submissions per batch, at most: enough to absorb a burst between two commits, few enough that
/// one batch's work stays a few milliseconds.
pub const MAX_BATCH: usize = 512;
/// Submissions waiting for a batch, at most: two full batches. Beyond it a submission is
/// refused at once (503, retried with its key) rather than waiting behind seconds of work.
pub const QUEUE: usize = 1024;

/// One submission's answer from its batch.
pub type Answer = Result<Stored, Unavailable>;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    pub max_batch: usize,
    pub queue: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_batch: MAX_BATCH,
            queue: QUEUE,
        }
    }
}

/// A row ready for a batch: owned, its payload serialized and its first receipt id drawn, so
/// the batch (one thread holding SQLite's write lock, or one statement) only binds and executes.
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
    /// The receipt id to try first.
    pub id: String,
}

impl Prepared {
    pub fn new(row: &Row, region: &str) -> Result<Prepared, Unavailable> {
        let s = row.submission;
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
            id: new_id(region)?,
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
