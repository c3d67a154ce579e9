//! Group commit for SQLite: one writer thread per process owns the write connection and stores
//! every submission waiting in one transaction with one commit (one fsync under
//! `synchronous=FULL`), instead of one transaction and one fsync per submission.
//!
//! Rules (besides `batch`'s):
//!
//! - a submission is answered only after the commit of its batch: `New` and `Replay` receipts
//!   are on disk (as `Durability` promises) when the caller sees them;
//! - a batch that does not commit (the write lock not had within `sqlite::LOCK_WAIT`, a failed
//!   COMMIT, an error that ended the transaction) answers every one of its submissions
//!   `Unavailable` and stores nothing of it; the edge retries with the same key;
//! - inside a batch, rows are stored in arrival order, each against the rows before it
//!   (`sqlite::Sqlite::store_batch`): a conflict or a refused row affects only itself;
//! - batches form by themselves: while one commits, the next waits in the queue; and while
//!   submissions come at least every `commit_window` (5 ms), a batch of fewer than
//!   `batch::FULL_ENOUGH` is held open up to that long while others keep coming (`Pacing`), so a
//!   synced commit, whose CPU is the same for one row or eight, is shared at paced rates too. A
//!   submission waits at most `commit_window` for that; `--commit-window 0` never holds.
//!
//! Several processes may share the file: each has its own writer, and SQLite's write lock
//! (WAL, a busy handler polling every 100 µs for up to `sqlite::LOCK_WAIT`) orders their
//! batches. Reads (`ping`, `count`) use a second connection, so they never queue behind writes.
//! Retention's deletes (`delete_campaign_rows`) use a connection of their own too, each a short
//! transaction that the writer's batches take the lock around, as they do another process's.
//!
//! Checkpoints (copying the WAL into the database file, two syncs) run on a third connection in
//! a checkpointer thread, so a batch's commit never waits for one: after commits it checkpoints
//! what it can without blocking anyone (PASSIVE), and once the WAL holds `WAL_PAGES` pages it
//! syncs what it copied and copies what came meanwhile (`catch_up`), then restarts the log
//! (RESTART: writers wait while it copies and syncs the few frames left), so the WAL file stays
//! bounded and is overwritten in place, never grown, under sustained load. Its rounds come
//! closer together when commits fill the log faster (`next_pause`; the writer's WAL hook counts
//! the pages its commits write). The writer's own checkpoint (that hook, in place of SQLite's
//! automatic one) stays on, at a higher mark, should the checkpointer fall behind. An I/O error
//! in a checkpoint stops the process (`stop_if_writes_may_be_lost`), before any log restart.

use std::cell::Cell;
use std::ffi::c_int;
use std::fs::File;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rusqlite::Connection;
use tokio::sync::oneshot;

use super::batch::{Answer, BatchStats, CommitTime, Gauges, Limits, Pacing, Prepared, FULL_ENOUGH};
use super::row::{Durability, Row, Stored, Unavailable};
use super::sqlite::{self, Sqlite};
use crate::receipt::ReceiptIds;

/// WAL pages (4 KiB) at which the checkpointer restarts the log: 16 MiB, about a second of
/// commits at 1,000 rows a second (a row writes 3–4 pages) and a quarter second at 5,000, so a
/// page many commits touched is copied into the database once a round.
pub const WAL_PAGES: u32 = 4096;
/// The writer's own automatic checkpoint (pages): a backstop, four times the checkpointer's mark.
const WRITER_CHECKPOINT_PAGES: u32 = 4 * WAL_PAGES;
/// The pause between two checkpoints while the log stays under `WAL_PAGES` in it (and the
/// longest): commits accumulate, and a page many commits touched is copied (and the file synced)
/// once per round. At 20 ms the checkpointer cost about 30 µs of CPU per stored row at 700
/// rows/s (`origin-bench --rate 700 --durability full`), at 1 s about 2 µs.
const CHECKPOINT_PAUSE: Duration = Duration::from_secs(1);
/// Least pause when commits fill the log faster than `CHECKPOINT_PAUSE` empties it. Each round's
/// RESTART holds the writer a few ms: at 100 ms, rounds at full speed (64 callers of
/// `store-bench`, keys spread as visitors' are) gave a store call's p99 24–25 ms, at 300 ms 8–18 ms
/// at the same rows/s. At 5,000 rows/s the rule's pause (about 450 ms) is above either.
const SHORTEST_CHECKPOINT_PAUSE: Duration = Duration::from_millis(300);

/// PASSIVE passes a round adds at most before its RESTART while commits keep adding to the log.
const CATCH_UP_PASSES: usize = 4;
/// Pages commits may add during a round's last pass and sync for it to go on to RESTART.
const RESTART_TAIL: u64 = 256;

/// When the checkpointer works: past how many WAL pages it restarts the log, and the longest
/// pause between two of its rounds.
#[derive(Clone, Copy, Debug)]
struct Checkpointing {
    wal_pages: u32,
    pause: Duration,
}

const CHECKPOINTING: Checkpointing = Checkpointing {
    wal_pages: WAL_PAGES,
    pause: CHECKPOINT_PAUSE,
};

/// What the checkpointer has done so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CheckpointStats {
    /// Times it restarted the WAL.
    pub wal_restarts: u64,
    /// RESTART checkpoints that could not finish: a commit was under way past the busy timeout.
    /// Expected now and then under load; the next commit's round tries again.
    pub unfinished: u64,
    /// Checkpoints that failed (the writer's backstop then bounds the WAL).
    pub failures: u64,
}

struct Job {
    row: Prepared,
    answer: oneshot::Sender<Answer>,
    queued_at: Instant,
}

#[derive(Default)]
struct CheckpointGauges {
    wal_restarts: AtomicU64,
    unfinished: AtomicU64,
    failures: AtomicU64,
    /// WAL pages the writer's commits have written, over every restart of the log: how fast
    /// commits fill it, whoever empties it.
    pages_written: AtomicU64,
}

thread_local! {
    /// Pages in the WAL after the last commit on this thread's connection (`wal_committed`).
    static WAL_PAGES_AFTER_COMMIT: Cell<Option<i64>> = const { Cell::new(None) };
}

/// The writer connection's WAL hook, in place of SQLite's automatic checkpoint: notes the
/// pages now in the WAL for the writer (`count_pages_written`), and past
/// `WRITER_CHECKPOINT_PAGES` checkpoints them as the automatic checkpoint would (PASSIVE; its
/// failure is left to the next commit, as SQLite's own hook leaves it, unless writes may have
/// been lost: `stop_if_writes_may_be_lost`).
fn wal_committed(wal: &rusqlite::hooks::Wal, pages: c_int) -> rusqlite::Result<()> {
    WAL_PAGES_AFTER_COMMIT.with(|after| after.set(Some(i64::from(pages))));
    if pages >= c_int::try_from(WRITER_CHECKPOINT_PAGES).unwrap_or(c_int::MAX) {
        if let Err(error) = wal.checkpoint() {
            stop_if_writes_may_be_lost(&error);
        }
    }
    Ok(())
}

/// After a commit on the writer's thread: adds the pages it wrote to `pages_written`. `last` is
/// the WAL's pages after the previous commit; fewer now means the log was restarted in between,
/// and everything in it is new.
fn count_pages_written(last: &mut i64, gauges: &CheckpointGauges) {
    let Some(now) = WAL_PAGES_AFTER_COMMIT.with(Cell::take) else {
        return;
    };
    let written = if now >= *last { now - *last } else { now };
    *last = now;
    gauges
        .pages_written
        .fetch_add(u64::try_from(written).unwrap_or(0), Ordering::Relaxed);
}

/// A SQLite store: the handle to this process's writer thread and read connection.
#[derive(Clone)]
pub struct SqliteStore {
    shared: Arc<Shared>,
}

struct Shared {
    ids: Arc<ReceiptIds>,
    // Dropping the last handle drops this sender: the writer finishes its batch and stops.
    jobs: SyncSender<Job>,
    gauges: Arc<Gauges>,
    checkpoints: Arc<CheckpointGauges>,
    reader: Mutex<Connection>,
    /// Retention's deletes, with `secure_delete` on.
    maintenance: Mutex<Connection>,
    writer: JoinHandle<()>,
}

impl SqliteStore {
    /// Opens (creating or migrating) the file and starts its writer and checkpointer threads.
    pub fn open(
        path: &Path,
        region: &str,
        durability: Durability,
        limits: Limits,
    ) -> Result<SqliteStore, String> {
        let sqlite = Sqlite::open(path, region, durability);
        SqliteStore::start(sqlite, path, durability, limits, CHECKPOINTING)
    }

    /// Starts the threads on an opened `sqlite` (tests prepare its connection first).
    fn start(
        sqlite: Result<Sqlite, Unavailable>,
        path: &Path,
        durability: Durability,
        limits: Limits,
        checkpointing: Checkpointing,
    ) -> Result<SqliteStore, String> {
        let sqlite = sqlite.map_err(|e| e.to_string())?;
        sqlite.set_wal_hook(wal_committed);
        if !sqlite.coalesce_wal_writes() {
            return Err("the writer's WAL is not open through harbour-wal-writes".into());
        }
        let ids = sqlite.ids();
        // Opened after the writer's migration, so the file and its WAL mode exist.
        let reader =
            sqlite::connect(path, durability, true).map_err(|e| format!("read connection: {e}"))?;
        let checkpointer = sqlite::connect(path, durability, false)
            .map_err(|e| format!("checkpoint connection: {e}"))?;
        let database =
            sqlite::sync_handle(path).map_err(|e| format!("database file for syncs: {e}"))?;
        let maintenance = sqlite::connect(path, durability, false)
            .and_then(|c| c.pragma_update(None, "secure_delete", "ON").map(|()| c))
            .map_err(|e| format!("maintenance connection: {e}"))?;
        let (jobs, queue) = sync_channel(limits.queue.max(1));
        // One pending signal is enough: the checkpointer looks at the whole WAL each time.
        let (committed, commits) = sync_channel(1);
        let gauges = Arc::new(Gauges::default());
        let checkpoints = Arc::new(CheckpointGauges::default());
        std::thread::Builder::new()
            .name("sqlite-checkpointer".into())
            .spawn({
                let checkpoints = checkpoints.clone();
                move || {
                    checkpoint(
                        &checkpointer,
                        &database,
                        &commits,
                        &checkpoints,
                        checkpointing,
                    )
                }
            })
            .map_err(|e| format!("cannot start the checkpointer thread: {e}"))?;
        let writer = std::thread::Builder::new()
            .name("sqlite-writer".into())
            .spawn({
                let gauges = gauges.clone();
                let checkpoints = checkpoints.clone();
                let runtime = tokio::runtime::Handle::try_current().ok();
                move || {
                    write(
                        sqlite,
                        &queue,
                        &committed,
                        &gauges,
                        &checkpoints,
                        limits,
                        runtime.as_ref(),
                    )
                }
            })
            .map_err(|e| format!("cannot start the writer thread: {e}"))?;
        Ok(SqliteStore {
            shared: Arc::new(Shared {
                ids,
                jobs,
                gauges,
                checkpoints,
                reader: Mutex::new(reader),
                maintenance: Mutex::new(maintenance),
                writer,
            }),
        })
    }

    /// Queues the submission for the writer and waits for its batch's commit.
    pub async fn store(&self, row: Row<'_>) -> Result<Stored, Unavailable> {
        let (answer, answered) = oneshot::channel();
        // The writer is the bottleneck: what can be done before it, is.
        let job = Job {
            row: Prepared::new(&row, &self.shared.ids)?,
            answer,
            queued_at: Instant::now(),
        };
        let gauges = &self.shared.gauges;
        gauges.queued();
        if let Err(refused) = self.shared.jobs.try_send(job) {
            gauges.refused();
            return Err(Unavailable(match refused {
                TrySendError::Full(_) => "sqlite: the write queue is full".into(),
                TrySendError::Disconnected(_) => "sqlite: the writer has stopped".into(),
            }));
        }
        answered
            .await
            .map_err(|_| Unavailable("sqlite: the writer stopped before answering".into()))?
    }

    /// Whether the writer runs and the file answers a read.
    pub async fn ping(&self) -> Result<(), Unavailable> {
        if self.shared.writer.is_finished() {
            return Err(Unavailable("sqlite: the writer has stopped".into()));
        }
        self.read(|c| c.query_row("SELECT 1", [], |_| Ok(()))).await
    }

    /// Rows in the file (every process's, committed).
    pub async fn count(&self) -> Result<u64, Unavailable> {
        self.read(sqlite::count).await
    }

    /// Deletes at most `at_most` rows of `campaign` on the maintenance connection, in one
    /// statement (its own transaction); how many.
    pub async fn delete_campaign_rows(
        &self,
        campaign: &str,
        at_most: usize,
    ) -> Result<u64, Unavailable> {
        let (shared, campaign) = (self.shared.clone(), campaign.to_owned());
        tokio::task::spawn_blocking(move || {
            let connection = shared
                .maintenance
                .lock()
                .map_err(|_| Unavailable("sqlite: maintenance connection lock poisoned".into()))?;
            sqlite::delete_campaign_rows(&connection, &campaign, at_most)
        })
        .await
        .map_err(|e| Unavailable(e.to_string()))?
    }

    pub fn stats(&self) -> BatchStats {
        self.shared.gauges.stats()
    }

    pub fn checkpoint_stats(&self) -> CheckpointStats {
        let c = &self.shared.checkpoints;
        CheckpointStats {
            wal_restarts: c.wal_restarts.load(Ordering::SeqCst),
            unfinished: c.unfinished.load(Ordering::SeqCst),
            failures: c.failures.load(Ordering::SeqCst),
        }
    }

    /// Submissions queued and not yet taken by the writer.
    pub fn waiting(&self) -> usize {
        self.shared.gauges.waiting()
    }

    /// A read on the read connection, off the async runtime's threads.
    async fn read<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T, Unavailable> {
        let shared = self.shared.clone();
        tokio::task::spawn_blocking(move || {
            let reader = shared
                .reader
                .lock()
                .map_err(|_| Unavailable("sqlite: read connection lock poisoned".into()))?;
            work(&reader).map_err(Unavailable::from)
        })
        .await
        .map_err(|e| Unavailable(e.to_string()))?
    }
}

/// The writer thread: takes the first waiting submission and every one behind it (up to
/// `max_batch`); when others are due soon, holds a small batch open while they come, until the
/// first has waited `commit_window` at most (`Pacing`); stores them in one transaction, answers
/// them (on `runtime`, the one the store was opened on, if any), and again until every handle
/// is gone (its end ends the checkpointer's too).
fn write(
    mut sqlite: Sqlite,
    queue: &Receiver<Job>,
    committed: &SyncSender<()>,
    gauges: &Gauges,
    checkpoints: &CheckpointGauges,
    limits: Limits,
    runtime: Option<&tokio::runtime::Handle>,
) {
    let mut log_pages_after_commit = 0;
    let max_batch = limits.max_batch.max(1);
    let full_enough = FULL_ENOUGH.min(max_batch);
    let mut pacing = Pacing::default();
    let commits = CommitTime::default();
    while let Ok(first) = queue.recv() {
        let mut batch = Vec::with_capacity(max_batch.min(64));
        let opened = first.queued_at;
        pacing.arrived(first.queued_at);
        batch.push(first);
        take_waiting(queue, &mut batch, &mut pacing, max_batch);
        if batch.len() < full_enough && pacing.hold(limits.commit_window, commits.average()) {
            let (until, taken) = (opened + limits.commit_window, batch.len());
            while batch.len() < full_enough {
                let left = until.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    break;
                }
                // Sleeps, not waits on the queue: callers queue without waking this thread.
                std::thread::sleep(pacing.step().min(left));
                let before = batch.len();
                take_waiting(queue, &mut batch, &mut pacing, max_batch);
                if batch.len() == before {
                    break;
                }
            }
            pacing.held(batch.len() - taken);
        }
        gauges.took(batch.len());
        let size = batch.len();
        let (rows, answers): (Vec<Prepared>, Vec<_>) =
            batch.into_iter().map(|job| (job.row, job.answer)).unzip();
        let started = Instant::now();
        let outcome = sqlite.store_batch(&rows);
        count_pages_written(&mut log_pages_after_commit, checkpoints);
        if outcome.is_ok() {
            commits.record(started.elapsed());
            // Full: a signal is already pending, which covers this commit too.
            let _ = committed.try_send(());
            gauges.committed(size);
        } else {
            gauges.failed();
        }
        let deliver = move || match outcome {
            Ok(stored) => {
                // A caller that has gone away (its request dropped) just misses its answer.
                for (answer, stored) in answers.into_iter().zip(stored) {
                    let _ = answer.send(stored);
                }
            }
            Err(failed) => {
                for answer in answers {
                    let _ = answer.send(Err(failed.clone()));
                }
            }
        };
        // Answers go out from a task on the runtime: one wake-up from this thread instead of
        // one per caller, and the writer starts the next batch meanwhile.
        match runtime {
            Some(runtime) => {
                runtime.spawn(async move { deliver() });
            }
            None => deliver(),
        }
    }
}

/// Moves what waits in `queue` into `batch`, up to `max_batch`.
fn take_waiting(
    queue: &Receiver<Job>,
    batch: &mut Vec<Job>,
    pacing: &mut Pacing,
    max_batch: usize,
) {
    while batch.len() < max_batch {
        match queue.try_recv() {
            Ok(job) => {
                pacing.arrived(job.queued_at);
                batch.push(job);
            }
            Err(_) => break,
        }
    }
}

/// The checkpointer thread: after commits, a PASSIVE checkpoint (copies what no reader still
/// needs, blocks no one); past `wal_pages` a RESTART one after `catch_up`, so the next commit
/// writes the WAL from its start; then at least `pause` before the next round. Ends when the
/// writer does.
fn checkpoint(
    connection: &Connection,
    database: &File,
    commits: &Receiver<()>,
    gauges: &CheckpointGauges,
    checkpointing: Checkpointing,
) {
    let wal_pages = i64::from(checkpointing.wal_pages);
    let mut pause = checkpointing.pause;
    let mut written_before = gauges.pages_written.load(Ordering::Relaxed);
    while commits.recv().is_ok() {
        let written = gauges.pages_written.load(Ordering::Relaxed);
        let written_since = written.saturating_sub(written_before);
        written_before = written;
        let outcome = wal_checkpoint(connection, "PASSIVE").and_then(|log_pages| {
            if log_pages < wal_pages {
                return Ok(false);
            }
            catch_up(connection, database, gauges, written)?;
            wal_checkpoint(connection, "RESTART").map(|_| true)
        });
        match outcome {
            Ok(true) => {
                gauges.wal_restarts.fetch_add(1, Ordering::SeqCst);
            }
            Ok(false) => {}
            Err(rusqlite::Error::SqliteFailure(error, _))
                if error.code == rusqlite::ErrorCode::DatabaseBusy =>
            {
                gauges.unfinished.fetch_add(1, Ordering::SeqCst);
            }
            Err(error) => {
                stop_if_writes_may_be_lost(&error);
                gauges.failures.fetch_add(1, Ordering::SeqCst);
            }
        }
        pause = next_pause(
            pause,
            written_since,
            u64::from(checkpointing.wal_pages),
            checkpointing.pause,
        );
        std::thread::sleep(pause);
    }
}

/// Before a RESTART, which holds the writer while it copies the frames left and syncs the
/// database: syncs what the passes copied (a PASSIVE pass that commits outrun leaves the
/// database unsynced) and copies what commits added meanwhile, without holding anyone, until
/// that is a short tail. `written`: the writer's pages-written count when the first pass began.
fn catch_up(
    connection: &Connection,
    database: &File,
    gauges: &CheckpointGauges,
    mut written: u64,
) -> rusqlite::Result<()> {
    for pass in 0..=CATCH_UP_PASSES {
        if pass > 0 {
            wal_checkpoint(connection, "PASSIVE")?;
        }
        // A pass no commit outran reached the log's end and synced the database itself.
        if gauges.pages_written.load(Ordering::Relaxed) == written {
            break;
        }
        database.sync_data().map_err(sync_failed)?;
        let now = gauges.pages_written.load(Ordering::Relaxed);
        if now.saturating_sub(written) <= RESTART_TAIL {
            break;
        }
        written = now;
    }
    Ok(())
}

/// A failed sync of the database file, as SQLite reports its own.
fn sync_failed(error: std::io::Error) -> rusqlite::Error {
    rusqlite::Error::SqliteFailure(
        rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_IOERR_FSYNC),
        Some(format!("syncing the database file: {error}")),
    )
}

/// Whether a checkpoint's error may mean pages copied into the database never reached the disk:
/// any I/O error. Linux reports a failed write-back once and marks the pages clean, so a later
/// sync that succeeds proves nothing, and the log restart after it would drop the only copy.
fn may_have_lost_writes(error: &rusqlite::Error) -> bool {
    matches!(error, rusqlite::Error::SqliteFailure(e, _)
        if e.code == rusqlite::ErrorCode::SystemIoFailure)
}

/// Stops the process on such an error (as PostgreSQL does on a failed fsync): the log is not
/// restarted yet, and at the next start SQLite's recovery copies every frame in it again. The
/// edge sends the region's submissions to its other origin meanwhile; a batch cut short was
/// not answered, and its retry with the same key is stored once.
fn stop_if_writes_may_be_lost(error: &rusqlite::Error) {
    if may_have_lost_writes(error) {
        eprintln!(
            "{}",
            serde_json::json!({
                "msg": "origin.fatal",
                "error": format!("SQLite checkpoint: {error}; stopping so that recovery copies the log again"),
            })
        );
        std::process::abort();
    }
}

/// The pause before the next round, from the last one (`pause`) and the pages commits wrote into
/// the WAL meanwhile (`written`): long enough that the next round finds about twice `wal_pages`
/// (so it restarts the log, which stays under the writer's own mark), between
/// `SHORTEST_CHECKPOINT_PAUSE` and `longest`, and at most twice the last. At a steady rate of
/// commits that is one restart a round. Without it, a rate that fills the log faster than
/// `longest` empties it (past 4,000 rows a second here) makes the log reach the writer's own
/// mark, whose checkpoint then copies it inside a commit: a 50–80 ms commit every second at 5,000
/// rows a second.
fn next_pause(pause: Duration, written: u64, wal_pages: u64, longest: Duration) -> Duration {
    let shortest = SHORTEST_CHECKPOINT_PAUSE.min(longest);
    let target = (wal_pages * 2) as f64;
    let next = if written > 0 {
        pause.mul_f64((target / written as f64).min(2.0))
    } else {
        pause.saturating_mul(2)
    };
    next.clamp(shortest, longest)
}

/// Runs a checkpoint; the pages in the WAL. A checkpoint that could not finish (another
/// connection in the way) is an error here.
fn wal_checkpoint(connection: &Connection, mode: &str) -> rusqlite::Result<i64> {
    let (busy, log_pages) =
        connection.query_row(&format!("PRAGMA wal_checkpoint({mode})"), [], |r| {
            Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?))
        })?;
    if busy != 0 {
        return Err(rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_BUSY),
            Some(format!("{mode} checkpoint did not finish")),
        ));
    }
    Ok(log_pages)
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;
    use std::time::{Duration, Instant};

    use super::*;
    use crate::store::batch::SQLITE_COMMIT_WINDOW;
    use crate::store::row::Receipt;
    use crate::verify::Verified;

    /// The origin's own limits for SQLite.
    const LIMITS: Limits = Limits::with_window(SQLITE_COMMIT_WINDOW);

    /// A database path in a fresh directory, removed with it.
    struct TempFile(PathBuf);

    impl std::ops::Deref for TempFile {
        type Target = Path;

        fn deref(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for TempFile {
        fn drop(&mut self) {
            if let Some(dir) = self.0.parent() {
                let _ = std::fs::remove_dir_all(dir);
            }
        }
    }

    fn temp_file(name: &str) -> TempFile {
        let dir = std::env::temp_dir().join(format!(
            "harbour-group-commit-{name}-{}-{:?}",
            std::process::id(),
            Instant::now()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        TempFile(dir.join("eu.sqlite"))
    }

    fn open(path: &Path, limits: Limits) -> SqliteStore {
        SqliteStore::open(path, "eu", Durability::Full, limits).unwrap()
    }

    /// A store whose writer connection ran `sql` first (triggers and pragmas of a test).
    fn open_with(path: &Path, sql: &str) -> SqliteStore {
        let sqlite = Sqlite::open(path, "eu", Durability::Full).unwrap();
        sqlite.connection().execute_batch(sql).unwrap();
        SqliteStore::start(Ok(sqlite), path, Durability::Full, LIMITS, CHECKPOINTING).unwrap()
    }

    #[derive(Clone)]
    struct Entry {
        key: &'static str,
        fields: &'static str,
        person: Option<&'static str>,
    }

    fn entry(key: &'static str, fields: &'static str, person: Option<&'static str>) -> Entry {
        Entry {
            key,
            fields,
            person,
        }
    }

    async fn put(store: &SqliteStore, e: &Entry) -> Answer {
        let submission = Verified {
            campaign: "c1".into(),
            idempotency_key: e.key.into(),
            fields_sha256: e.fields.into(),
            platform_country: "IT".into(),
            declared_country: None,
            notice: None,
            payload: serde_json::json!({"fields": {}}),
        };
        store
            .store(Row {
                submission: &submission,
                person: e.person,
                now_ms: 7,
            })
            .await
    }

    fn receipt(answer: &Answer) -> Receipt {
        match answer {
            Ok(Stored::New(r) | Stored::Replay(r)) => r.clone(),
            other => panic!("no receipt: {other:?}"),
        }
    }

    async fn wait_until(what: &str, done: impl Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !done() {
            assert!(Instant::now() < deadline, "timed out waiting until {what}");
            tokio::task::yield_now().await;
            std::thread::sleep(Duration::from_micros(200));
        }
    }

    /// Another connection holding the file's write lock, as another origin process would.
    struct WriteLock(Connection);

    impl WriteLock {
        fn take(path: &Path) -> WriteLock {
            let c = Connection::open(path).unwrap();
            c.execute_batch("BEGIN IMMEDIATE").unwrap();
            WriteLock(c)
        }

        fn release(self) {
            self.0.execute_batch("COMMIT").unwrap();
        }
    }

    /// Stores `entries` as one batch, in this order: while another connection holds the write
    /// lock, a first submission occupies the writer (it waits for the lock), `entries` queue one
    /// by one behind it, and the lock is released. Returns their answers.
    async fn one_batch(store: &SqliteStore, path: &Path, entries: &[Entry]) -> Vec<Answer> {
        let lock = WriteLock::take(path);
        let before = store.stats();
        let first = tokio::spawn({
            let store = store.clone();
            async move { put(&store, &entry("pacer", "p", None)).await }
        });
        wait_until("the writer holds the first submission", || {
            store.stats().batches == before.batches + 1 && store.waiting() == 0
        })
        .await;
        let mut queued = Vec::new();
        for (n, e) in entries.iter().enumerate() {
            let (store_, e) = (store.clone(), e.clone());
            queued.push(tokio::spawn(async move { put(&store_, &e).await }));
            wait_until("the entry is queued", || store.waiting() == n + 1).await;
        }
        lock.release();
        assert!(matches!(first.await.unwrap(), Ok(Stored::New(_))));
        let mut answers = Vec::new();
        for task in queued {
            answers.push(task.await.unwrap());
        }
        let after = store.stats();
        assert_eq!(
            after.commits + after.failed_batches,
            before.commits + before.failed_batches + 2,
            "the first submission's batch, then one batch of all entries: {after:?}"
        );
        answers
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn rows_of_one_batch_see_each_other_and_a_conflict_is_only_its_own() {
        let path = temp_file("in-batch");
        let store = open(&path, LIMITS);
        let answers = one_batch(
            &store,
            &path,
            &[
                entry("k1", "h1", None),
                entry("k1", "h1", None),
                entry("k1", "other", None),
                entry("k2", "h2", Some("p1")),
                entry("k3", "h3", Some("p1")),
                entry("k4", "h4", Some("p2")),
            ],
        )
        .await;
        let Ok(Stored::New(first)) = &answers[0] else {
            panic!("{answers:?}")
        };
        assert_eq!(answers[1], Ok(Stored::Replay(first.clone())));
        assert_eq!(answers[2], Ok(Stored::Conflict));
        assert!(matches!(answers[3], Ok(Stored::New(_))), "{answers:?}");
        assert_eq!(answers[4], Ok(Stored::AlreadyEntered));
        assert!(matches!(answers[5], Ok(Stored::New(_))), "{answers:?}");
        // The pacer, k1, k2 and k4: each once.
        assert_eq!(store.count().await.unwrap(), 4);
        assert_eq!(store.stats().failed_batches, 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn replays_conflicts_and_second_entries_across_batches() {
        let path = temp_file("across");
        let store = open(&path, LIMITS);
        let first = put(&store, &entry("k1", "h1", Some("p1"))).await;
        let Ok(Stored::New(receipt)) = &first else {
            panic!("{first:?}")
        };
        assert_eq!(
            put(&store, &entry("k1", "h1", Some("p1"))).await,
            Ok(Stored::Replay(receipt.clone()))
        );
        assert_eq!(
            put(&store, &entry("k1", "h9", Some("p1"))).await,
            Ok(Stored::Conflict)
        );
        assert_eq!(
            put(&store, &entry("k2", "h2", Some("p1"))).await,
            Ok(Stored::AlreadyEntered)
        );
        assert_eq!(store.stats().commits, 4);
        // A store opened again on the file (a restarted origin) answers the same.
        drop(store);
        let store = open(&path, LIMITS);
        assert_eq!(
            put(&store, &entry("k1", "h1", None)).await,
            Ok(Stored::Replay(receipt.clone()))
        );
        assert_eq!(store.count().await.unwrap(), 1);
    }

    /// A real failed COMMIT: a deferred foreign key that a trigger breaks for one row is checked
    /// only at COMMIT, which then fails and leaves the transaction to be rolled back.
    const POISON: &str = "PRAGMA foreign_keys = ON;
        CREATE TABLE poison_parent (id INTEGER PRIMARY KEY);
        CREATE TABLE poison_child (
            parent INTEGER REFERENCES poison_parent (id) DEFERRABLE INITIALLY DEFERRED);
        CREATE TRIGGER poison AFTER INSERT ON submissions WHEN NEW.idempotency_key = 'poison'
        BEGIN INSERT INTO poison_child VALUES (1); END;";

    /// Submissions 10 ms apart, each alone in the queue when it comes (a commit takes less), share
    /// commits once the writer knows they come that often: the first commits alone (no gap is
    /// known yet), the next ones wait for each other within the window.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn submissions_that_come_often_wait_for_each_other_within_the_window() {
        let path = temp_file("held");
        let window = Duration::from_millis(500);
        let store = open(
            &path,
            Limits {
                commit_window: window,
                ..LIMITS
            },
        );
        let keys = ["h0", "h1", "h2", "h3", "h4", "h5"];
        let started = Instant::now();
        let mut puts = Vec::new();
        for key in keys {
            let store = store.clone();
            puts.push(tokio::spawn(async move {
                put(&store, &entry(key, key, Some(key))).await
            }));
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        for put in puts {
            assert!(matches!(put.await.unwrap(), Ok(Stored::New(_))));
        }
        let stats = store.stats();
        assert_eq!((stats.submissions, store.count().await.unwrap()), (6, 6));
        // One commit each would be 6 (and a batch of 1): what a writer that never waits does
        // while its commits take under 10 ms.
        assert!(
            stats.commits <= 3 && stats.largest_batch >= 3,
            "rows did not share commits: {stats:?}"
        );
        assert!(
            started.elapsed() < window * 2,
            "a hold outlasted its window"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failed_commit_answers_its_whole_batch_unavailable_and_stores_nothing() {
        let path = temp_file("failed-commit");
        let store = open_with(&path, POISON);
        let k0 = put(&store, &entry("k0", "h0", None)).await;
        let answers = one_batch(
            &store,
            &path,
            &[
                entry("k0", "h0", None),
                entry("k1", "h1", None),
                entry("poison", "hp", None),
                entry("k2", "h2", Some("p2")),
            ],
        )
        .await;
        for answer in &answers {
            let Err(Unavailable(why)) = answer else {
                panic!("{answers:?}")
            };
            assert!(why.contains("FOREIGN KEY"), "{why}");
        }
        assert_eq!(store.stats().failed_batches, 1);
        // k0 and the pacer, from the batches before; nothing of the failed one.
        assert_eq!(store.count().await.unwrap(), 2);
        // Retried with their keys, outside the poisoned batch, they are stored once.
        assert_eq!(
            put(&store, &entry("k0", "h0", None)).await,
            Ok(Stored::Replay(receipt(&k0)))
        );
        assert!(matches!(
            put(&store, &entry("k1", "h1", None)).await,
            Ok(Stored::New(_))
        ));
        assert!(matches!(
            put(&store, &entry("k2", "h2", Some("p2"))).await,
            Ok(Stored::New(_))
        ));
        assert_eq!(store.count().await.unwrap(), 4);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_row_sqlite_refuses_fails_only_itself() {
        let path = temp_file("refused-row");
        let store = open_with(
            &path,
            "CREATE TRIGGER refuse BEFORE INSERT ON submissions
             WHEN NEW.idempotency_key = 'refused'
             BEGIN SELECT RAISE(ABORT, 'refused by a trigger'); END;",
        );
        let answers = one_batch(
            &store,
            &path,
            &[
                entry("k1", "h1", None),
                entry("refused", "hr", None),
                entry("k2", "h2", None),
            ],
        )
        .await;
        assert!(matches!(answers[0], Ok(Stored::New(_))), "{answers:?}");
        assert!(
            matches!(&answers[1], Err(Unavailable(why)) if why.contains("refused by a trigger")),
            "{answers:?}"
        );
        assert!(matches!(answers[2], Ok(Stored::New(_))), "{answers:?}");
        assert_eq!(store.stats().failed_batches, 0);
        assert_eq!(store.count().await.unwrap(), 3);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_callers_share_commits() {
        let path = temp_file("concurrent");
        let store = open(&path, LIMITS);
        let (callers, each) = (64, 20);
        let tasks: Vec<_> = (0..callers)
            .map(|c| {
                let store = store.clone();
                tokio::spawn(async move {
                    for n in 0..each {
                        let key: &'static str = format!("k-{c}-{n}").leak();
                        let answer = put(&store, &entry(key, "h", Some(key))).await;
                        assert!(matches!(answer, Ok(Stored::New(_))), "{answer:?}");
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap();
        }
        let stats = store.stats();
        assert_eq!(stats.submissions, callers * each);
        assert_eq!(store.count().await.unwrap(), callers * each);
        // One commit per submission would be 1,280 commits; batching makes far fewer.
        assert!(
            stats.submissions >= 2 * stats.commits,
            "rows per commit {:.2}: {stats:?}",
            stats.submissions as f64 / stats.commits as f64
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_full_queue_answers_unavailable_at_once_and_reads_do_not_wait() {
        let path = temp_file("full-queue");
        let store = open(
            &path,
            Limits {
                max_batch: 8,
                queue: 2,
                ..LIMITS
            },
        );
        let lock = WriteLock::take(&path);
        let mut queued = vec![tokio::spawn({
            let store = store.clone();
            async move { put(&store, &entry("k0", "h", None)).await }
        })];
        wait_until("the writer holds k0", || store.stats().batches == 1).await;
        for (n, key) in ["k1", "k2"].into_iter().enumerate() {
            let store_ = store.clone();
            queued.push(tokio::spawn(async move {
                put(&store_, &entry(key, "h", None)).await
            }));
            wait_until("queued", || store.waiting() == n + 1).await;
        }
        let started = Instant::now();
        let refused = put(&store, &entry("k3", "h", None)).await;
        assert_eq!(
            refused,
            Err(Unavailable("sqlite: the write queue is full".into()))
        );
        assert!(started.elapsed() < Duration::from_secs(1));
        // The write lock is still held: reads answer from the read connection meanwhile.
        store.ping().await.unwrap();
        assert_eq!(store.count().await.unwrap(), 0);
        lock.release();
        for task in queued {
            assert!(matches!(task.await.unwrap(), Ok(Stored::New(_))));
        }
        assert_eq!(store.count().await.unwrap(), 3);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn two_writers_on_one_file_store_each_key_once() {
        // Two stores on one file: two connections that take SQLite's write lock in turn, as the
        // writers of two origin processes do.
        let path = temp_file("two-writers");
        let stores = [open(&path, LIMITS), open(&path, LIMITS)];
        let keys = 300;
        let tasks: Vec<_> = (0..16)
            .map(|caller| {
                let store = stores[caller % 2].clone();
                tokio::spawn(async move {
                    let mut answers = Vec::new();
                    // Every caller goes through every key, from a different starting point.
                    for n in 0..keys {
                        let k = (n + caller * 37) % keys;
                        let key: &'static str = format!("k{k}").leak();
                        answers.push((k, put(&store, &entry(key, "h", Some(key))).await));
                    }
                    answers
                })
            })
            .collect();
        let mut first = vec![None; keys];
        let mut new = vec![0; keys];
        for task in tasks {
            for (k, answer) in task.await.unwrap() {
                if matches!(answer, Ok(Stored::New(_))) {
                    new[k] += 1;
                }
                let r = receipt(&answer);
                assert_eq!(first[k].get_or_insert_with(|| r.clone()), &r, "key {k}");
            }
        }
        assert!(new.iter().all(|&n| n == 1), "{new:?}");
        assert_eq!(stores[0].count().await.unwrap(), keys as u64);
        for store in &stores {
            assert!(store.stats().commits > 0);
        }
    }

    #[test]
    fn checkpoint_rounds_come_as_often_as_the_log_fills() {
        let longest = CHECKPOINT_PAUSE;
        let w = u64::from(WAL_PAGES);
        // Under the mark, the pause stays (or grows back to) the longest.
        assert_eq!(next_pause(longest, w / 2, w, longest), longest);
        assert_eq!(
            next_pause(Duration::from_millis(200), 0, w, longest),
            Duration::from_millis(400)
        );
        // 18,000 pages a second (5,000 rows a second here): from a second's pause the rounds
        // settle where each finds twice the mark, which stays under the writer's own.
        let rate = 18_000.0;
        let mut pause = longest;
        for _ in 0..8 {
            let found = (rate * pause.as_secs_f64()) as u64;
            pause = next_pause(pause, found, w, longest);
        }
        let found = (rate * pause.as_secs_f64()) as u64;
        assert!(
            (2 * w - 64..=2 * w + 64).contains(&found),
            "{found} pages a round"
        );
        assert!(found < u64::from(WRITER_CHECKPOINT_PAGES));
        // Never shorter than the shortest, nor longer than the longest.
        assert_eq!(
            next_pause(SHORTEST_CHECKPOINT_PAUSE, 100 * w, w, longest),
            SHORTEST_CHECKPOINT_PAUSE
        );
        assert_eq!(next_pause(longest, 1, w, longest), longest);
        // A test's short pause is the shortest too: the rounds keep to it.
        let short = Duration::from_millis(20);
        assert_eq!(next_pause(short, 100 * w, w, short), short);
    }

    #[test]
    fn only_io_errors_of_a_checkpoint_stop_the_process() {
        let ours = sync_failed(std::io::Error::from(std::io::ErrorKind::Other));
        assert!(may_have_lost_writes(&ours), "{ours:?}");
        let busy = rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_BUSY),
            None,
        );
        assert!(!may_have_lost_writes(&busy));
        // SQLite's own failed write of a checkpoint's page is one too.
        let write = rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_IOERR_WRITE),
            None,
        );
        assert!(may_have_lost_writes(&write));
        assert!(!may_have_lost_writes(&rusqlite::Error::QueryReturnedNoRows));
    }

    #[test]
    fn a_file_has_one_sync_handle_however_it_is_named() {
        let path = temp_file("sync-handle");
        let other = temp_file("sync-handle-other");
        let _stores = (open(&path, LIMITS), open(&other, LIMITS));
        let dir = path.parent().unwrap();
        let again = dir
            .join("..")
            .join(dir.file_name().unwrap())
            .join("eu.sqlite");
        let (first, second) = (
            sqlite::sync_handle(&path).unwrap(),
            sqlite::sync_handle(&again).unwrap(),
        );
        // One descriptor, never a second to close: the registry's, the store's checkpointer's
        // and these two.
        assert!(Arc::ptr_eq(&first, &second));
        assert_eq!(Arc::strong_count(&first), 4);
        assert!(!Arc::ptr_eq(&first, &sqlite::sync_handle(&other).unwrap()));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_checkpointer_keeps_the_wal_bounded() {
        let path = temp_file("wal");
        let sqlite = Sqlite::open(&path, "eu", Durability::Full);
        // A round every 20 ms: the 1,600 rows commit in well under the default pause.
        let checkpointing = Checkpointing {
            wal_pages: 64,
            pause: Duration::from_millis(20),
        };
        let store =
            SqliteStore::start(sqlite, &path, Durability::Full, LIMITS, checkpointing).unwrap();
        let tasks: Vec<_> = (0..16)
            .map(|c| {
                let store = store.clone();
                tokio::spawn(async move {
                    for n in 0..100 {
                        let key: &'static str = format!("k-{c}-{n}").leak();
                        let answer = put(&store, &entry(key, "h", Some(key))).await;
                        assert!(matches!(answer, Ok(Stored::New(_))), "{answer:?}");
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap();
        }
        let stats = store.checkpoint_stats();
        assert!(stats.wal_restarts > 0, "{stats:?}");
        assert_eq!(stats.failures, 0, "{stats:?}");
        // The 1,600 rows' commits write about 10 MB of WAL frames (below), all of it in the file if
        // nothing restarts the log before the writer's backstop (16,384 pages); restarted past
        // 64 pages, it grows only by what commits during a checkpoint round: 2-3 MB alone, up to
        // 7 MB measured in an optimised build beside the other tests, whose writer is faster.
        let wal = std::fs::metadata(path.with_extension("sqlite-wal"))
            .unwrap()
            .len();
        assert!(wal < 10 * 1024 * 1024, "WAL of {wal} bytes: {stats:?}");
        assert_eq!(store.count().await.unwrap(), 1600);
        // The writer's WAL hook counted what the commits wrote, across the restarts: at least the
        // table's page and one of each unique index for each of the 100 or more commits (16
        // callers; 1,413 measured), and no more than the 16,384 the backstop would have let the
        // log reach plus a little.
        let written = store
            .shared
            .checkpoints
            .pages_written
            .load(Ordering::Relaxed);
        assert!(
            (300..20_000).contains(&written),
            "{written} pages written: {stats:?}"
        );
    }
}
