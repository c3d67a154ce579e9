//! SQLite storage, one file per region, shared by that region's origins on one host.
//!
//! WAL mode lets several processes write the same file safely. Writes come in batches
//! (`store_batch`, fed by the writer thread of `group_commit`): a batch is one IMMEDIATE
//! transaction (the write lock first, so every lookup and insert in it sees one state) and one
//! commit. Rules of a batch:
//!
//! - rows are taken in order, each against the file *and the rows before it in the batch*: two
//!   rows with one key make one row (the second is a replay or a conflict), two rows from one
//!   person make one entry (the second is `AlreadyEntered`);
//! - a row writes with one statement (`INSERT … ON CONFLICT DO NOTHING`); a statement error that
//!   SQLite confined to that statement answers only that row `Unavailable` (nothing of it is
//!   stored) and the batch goes on; an error that ended the transaction fails the batch;
//! - answers count only once the commit has succeeded: a batch that does not commit is answered
//!   `Unavailable` as a whole and stores nothing.
//!
//! `synchronous=FULL` by default: the commit is on disk before any receipt of its batch is sent.

use std::cell::Cell;
use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use rusqlite::{
    params, Connection, OpenFlags, OptionalExtension, Transaction, TransactionBehavior,
};

use super::batch::{Answer, Prepared};
use super::row::{Durability, Receipt, Row, Stored, Unavailable};
use crate::receipt::{new_key, ReceiptIds, MAX_ID_TRIES, NUMBERED_FROM};

/// The schema this code writes (`PRAGMA user_version`). 0: a file from before the person
/// digest; 1: with `person_digest` and its unique index; 2: with the record of consent
/// (`notice_locale`, `notice_version`), `marketing_withdrawn_ms` and the `erasures` table;
/// 3: receipt ids derived from row numbers (`receipt`), the `receipt_key` table, and the unique
/// index on receipt ids kept for the rows numbered before.
const SCHEMA_VERSION: i64 = 3;

/// Columns added after version 0, with their types: a file of any earlier version gets those
/// it lacks (all nullable, so rows stored before keep their meaning).
const ADDED_COLUMNS: [(&str, &str); 4] = [
    ("person_digest", "TEXT"),
    ("notice_locale", "TEXT"),
    ("notice_version", "TEXT"),
    ("marketing_withdrawn_ms", "INTEGER"),
];

/// How long a batch waits for the write lock another process holds before it is `Unavailable`.
pub const LOCK_WAIT: Duration = Duration::from_secs(5);
/// Sleep between two tries for a lock: short, as another process holds it for one batch.
const LOCK_POLL: Duration = Duration::from_micros(100);
/// How long opening a file waits for the write lock: another origin on the file may be
/// migrating it, which holds the lock for as long as copying its rows takes (a file from before
/// version 3 is rebuilt once), and an origin that gave up would not start at all.
pub const OPEN_LOCK_WAIT: Duration = Duration::from_secs(300);
/// Sleep between two tries for the lock while opening: another origin's migration takes
/// seconds, and no visitor waits on this one.
const OPEN_LOCK_POLL: Duration = Duration::from_millis(10);

// Any uniqueness conflict (key, person, number) skips the row; the lookups below say which.
const INSERT: &str = "INSERT INTO submissions (receipt_id, region, campaign, idempotency_key,
        fields_sha256, person_digest, platform_country, declared_country, payload, stored_at_ms,
        notice_locale, notice_version, seq, receipt_derived)
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, 1)
    ON CONFLICT DO NOTHING";
const BY_KEY: &str = "SELECT receipt_id, fields_sha256, stored_at_ms FROM submissions
    WHERE campaign = ?1 AND idempotency_key = ?2";
const BY_PERSON: &str = "SELECT 1 FROM submissions WHERE campaign = ?1 AND person_digest = ?2";

impl From<rusqlite::Error> for Unavailable {
    fn from(error: rusqlite::Error) -> Unavailable {
        Unavailable(format!("sqlite: {error}"))
    }
}

pub struct Sqlite {
    connection: Connection,
    region: String,
    ids: Arc<ReceiptIds>,
}

impl Sqlite {
    /// Opens through the WAL-writes VFS (`harbour_wal_writes`), whose WAL file writes a commit's
    /// frames at once once `coalesce_wal_writes` asks it to.
    pub fn open(path: &Path, region: &str, durability: Durability) -> Result<Sqlite, Unavailable> {
        let connection = harbour_wal_writes::open(path, OpenFlags::default())?;
        Sqlite::prepare(connection, region, durability)
    }

    pub fn in_memory(region: &str) -> Result<Sqlite, Unavailable> {
        Sqlite::prepare(Connection::open_in_memory()?, region, Durability::Full)
    }

    fn prepare(
        mut connection: Connection,
        region: &str,
        durability: Durability,
    ) -> Result<Sqlite, Unavailable> {
        connection.busy_handler(Some(wait_while_opening))?;
        connection.pragma_update(None, "journal_mode", "WAL")?;
        set_durability(&connection, durability)?;
        migrate(&mut connection)?;
        let ids = Arc::new(reserve_ids(&mut connection, region)?);
        connection.busy_handler(Some(wait_for_lock))?;
        Ok(Sqlite {
            connection,
            region: region.to_owned(),
            ids,
        })
    }

    /// The receipt ids of this connection's epoch, for preparing rows before the writer.
    pub fn ids(&self) -> Arc<ReceiptIds> {
        self.ids.clone()
    }

    /// One submission in a transaction of its own.
    pub fn store(&mut self, row: &Row) -> Result<Stored, Unavailable> {
        let prepared = Prepared::new(row, &self.ids)?;
        self.store_batch(std::slice::from_ref(&prepared))?
            .pop()
            .unwrap_or_else(|| Err(Unavailable("sqlite: a batch of one gave no answer".into())))
    }

    /// Stores `rows` in one IMMEDIATE transaction with one commit (see the module's rules).
    /// `Ok`: the commit succeeded; one answer per row, in order. `Err`: nothing was committed.
    pub fn store_batch(&mut self, rows: &[Prepared]) -> Result<Vec<Answer>, Unavailable> {
        let tx = self
            .connection
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mut answers = Vec::with_capacity(rows.len());
        for row in rows {
            match store_row(&tx, &self.region, &self.ids, row) {
                Ok(stored) => answers.push(Ok(stored)),
                // SQLite undid the failed statement only: this row is refused, the others go on.
                Err(e) if !tx.is_autocommit() => answers.push(Err(e)),
                // The error rolled the whole transaction back (SQLite does so for some I/O and
                // memory errors): going on would write outside any transaction.
                Err(e) => return Err(e),
            }
        }
        // A failed COMMIT leaves the transaction open; dropping `tx` then rolls it back.
        tx.commit()?;
        Ok(answers)
    }

    /// From now on writes each commit's WAL frames with one write instead of two a frame
    /// (`harbour_wal_writes`); `false` if the connection was not opened by `open`.
    pub fn coalesce_wal_writes(&self) -> bool {
        harbour_wal_writes::coalesce(&self.connection)
    }

    /// Calls `hook` after each commit on this connection with the pages then in the WAL,
    /// instead of SQLite's automatic checkpoint (which is such a hook itself).
    pub fn set_wal_hook(
        &self,
        hook: fn(&rusqlite::hooks::Wal, std::ffi::c_int) -> rusqlite::Result<()>,
    ) {
        self.connection.wal_hook(Some(hook));
    }

    pub fn ping(&self) -> rusqlite::Result<()> {
        self.connection.query_row("SELECT 1", [], |_| Ok(()))
    }

    pub fn count(&self) -> rusqlite::Result<u64> {
        count(&self.connection)
    }

    /// The prepared connection, for the records' statements (`records`).
    pub(super) fn into_connection(self) -> Connection {
        self.connection
    }

    #[cfg(test)]
    pub(super) fn connection(&self) -> &Connection {
        &self.connection
    }
}

/// A descriptor of the database file at `path` for syncing it (`File::sync_data`) outside
/// SQLite: the checkpointer flushes what its passes copied before the step that holds the
/// writer (`group_commit`). One per file per process, shared and never closed: closing any
/// descriptor of a file drops every POSIX lock the process holds on it, SQLite's included. (A
/// file replaced at the same path while the process runs keeps the old descriptor: that sync
/// then misses, and the log restart syncs everything itself, as SQLite always does.)
pub fn sync_handle(path: &Path) -> std::io::Result<Arc<File>> {
    static OPEN: OnceLock<Mutex<HashMap<PathBuf, Arc<File>>>> = OnceLock::new();
    let path = path.canonicalize()?;
    let mut open = OPEN
        .get_or_init(Mutex::default)
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    if let Some(file) = open.get(&path) {
        return Ok(file.clone());
    }
    let file = Arc::new(File::open(&path)?);
    open.insert(path, file.clone());
    Ok(file)
}

/// A connection to a file `Sqlite::open` has prepared, for reads (`read_only`) or checkpoints.
/// Checkpoints sync as `durability` says: FULL and NORMAL both sync the file at checkpoint.
pub fn connect(
    path: &Path,
    durability: Durability,
    read_only: bool,
) -> rusqlite::Result<Connection> {
    let flags = if read_only {
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX
    } else {
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX
    };
    let connection = Connection::open_with_flags(path, flags)?;
    connection.busy_handler(Some(wait_for_lock))?;
    set_durability(&connection, durability)?;
    Ok(connection)
}

fn set_durability(connection: &Connection, durability: Durability) -> rusqlite::Result<()> {
    connection.pragma_update(
        None,
        "synchronous",
        match durability {
            Durability::Full => "FULL",
            Durability::Normal => "NORMAL",
        },
    )
}

/// The busy handler: SQLite's own (`busy_timeout`) sleeps 1, 2, 5, 10… ms between tries, so a
/// writer waiting for another process's batch (a few ms) often sleeps well past its release.
/// Short sleeps take the lock soon after it is free, for `LOCK_WAIT` in all.
fn wait_for_lock(tries_before: i32) -> bool {
    keep_waiting(tries_before, LOCK_POLL, LOCK_WAIT)
}

/// The busy handler while a store opens (its migration and epoch): `OPEN_LOCK_WAIT` in all.
fn wait_while_opening(tries_before: i32) -> bool {
    let waiting = keep_waiting(tries_before, OPEN_LOCK_POLL, OPEN_LOCK_WAIT);
    if waiting && tries_before == 100 {
        // The origin's log line shape (`origin.warning`), as the operator reads it at start.
        let warning = format!(
            "waiting for the SQLite file's write lock: another origin may be migrating it \
             (up to {} s)",
            OPEN_LOCK_WAIT.as_secs()
        );
        eprintln!(
            "{}",
            serde_json::json!({"msg": "origin.warning", "warning": warning})
        );
    }
    waiting
}

thread_local! {
    /// When this thread's connection first found the lock taken, in the wait now under way.
    static WAITING_SINCE: Cell<Option<Instant>> = const { Cell::new(None) };
}

/// Sleeps `poll` and says to try again, until `budget` has passed since the first try of this
/// wait, by the clock: a sleep of 100 µs takes longer, and counting tries made a 5 s wait last
/// about 9.5 s here.
fn keep_waiting(tries_before: i32, poll: Duration, budget: Duration) -> bool {
    let now = Instant::now();
    let since = WAITING_SINCE.with(|since| match since.get() {
        Some(since) if tries_before > 0 => since,
        _ => {
            since.set(Some(now));
            now
        }
    });
    if now.duration_since(since) >= budget {
        return false;
    }
    std::thread::sleep(poll);
    true
}

pub fn count(connection: &Connection) -> rusqlite::Result<u64> {
    connection
        .query_row("SELECT COUNT(*) FROM submissions", [], |row| {
            row.get::<_, i64>(0)
        })
        .map(|n| u64::try_from(n).unwrap_or(0))
}

/// One row of a batch, under the batch's write lock: insert, and only when nothing was inserted
/// tell a replay, a conflict and a second entry apart; when it was none of them (the row that
/// held the key or person was deleted meanwhile), try again with a fresh number.
fn store_row(
    tx: &Transaction,
    region: &str,
    ids: &ReceiptIds,
    row: &Prepared,
) -> Result<Stored, Unavailable> {
    let stored_at_ms = row.stored_at_ms();
    let (mut seq, mut id) = (row.seq, row.id.clone());
    for _ in 0..MAX_ID_TRIES {
        let inserted = tx.prepare_cached(INSERT)?.execute(params![
            id,
            region,
            row.campaign,
            row.idempotency_key,
            row.fields_sha256,
            row.person,
            row.platform_country,
            row.declared_country,
            row.payload,
            stored_at_ms,
            row.notice_locale,
            row.notice_version,
            seq,
        ])?;
        if inserted == 1 {
            return Ok(Stored::New(Receipt {
                id,
                region: region.to_owned(),
                stored_at_ms: row.now_ms,
            }));
        }
        let existing = tx
            .prepare_cached(BY_KEY)?
            .query_row(params![row.campaign, row.idempotency_key], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, i64>(2)?,
                ))
            })
            .optional()?;
        if let Some((id, fields_sha256, stored_at_ms)) = existing {
            if fields_sha256 != row.fields_sha256 {
                return Ok(Stored::Conflict);
            }
            return Ok(Stored::Replay(Receipt {
                id,
                region: region.to_owned(),
                stored_at_ms: u64::try_from(stored_at_ms).unwrap_or(0),
            }));
        }
        if let Some(person) = &row.person {
            let entered = tx
                .prepare_cached(BY_PERSON)?
                .query_row(params![row.campaign, person], |_| Ok(()))
                .optional()?;
            if entered.is_some() {
                return Ok(Stored::AlreadyEntered);
            }
        }
        (seq, id) = ids.next()?;
    }
    Err(Unavailable(
        "no row number taken after several tries".into(),
    ))
}

/// The submissions table as this version makes it. Receipt ids are not unique by constraint:
/// derived ones are by construction (`receipt`), and `submissions_random_receipt` keeps the
/// random ones of rows numbered before unique and findable.
/// `receipt_derived`: 1 when the receipt id is derived from `seq`, 0 for a random one from before
/// version 3. It has no default, so an origin of an earlier version still writing the file (a
/// rolling upgrade of two that share it) cannot insert a row that SQLite numbers itself with a
/// random id no index holds: that origin answers 503 and the edge tries the other.
const SUBMISSIONS: &str = "CREATE TABLE IF NOT EXISTS submissions (
            seq INTEGER PRIMARY KEY,
            receipt_id TEXT NOT NULL,
            region TEXT NOT NULL,
            campaign TEXT NOT NULL,
            idempotency_key TEXT NOT NULL,
            fields_sha256 TEXT NOT NULL,
            person_digest TEXT,
            platform_country TEXT NOT NULL,
            declared_country TEXT,
            payload TEXT NOT NULL,
            stored_at_ms INTEGER NOT NULL,
            notice_locale TEXT,
            notice_version TEXT,
            marketing_withdrawn_ms INTEGER,
            receipt_derived INTEGER NOT NULL,
            UNIQUE (campaign, idempotency_key)
        )";
const SUBMISSIONS_COLUMNS: &str = "seq, receipt_id, region, campaign, idempotency_key,
    fields_sha256, person_digest, platform_country, declared_country, payload, stored_at_ms,
    notice_locale, notice_version, marketing_withdrawn_ms";

/// Creates the tables, or brings a file from an earlier version up to `SCHEMA_VERSION`, under
/// the write lock so two origins starting at once do it once.
fn migrate(connection: &mut Connection) -> Result<(), Unavailable> {
    let tx = connection.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let version: i64 = tx.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if version >= SCHEMA_VERSION {
        return Ok(tx.commit()?);
    }
    // `seq` without AUTOINCREMENT: numbers come from epochs (`receipt`), never reused.
    tx.execute_batch(SUBMISSIONS)?;
    for (column, kind) in ADDED_COLUMNS {
        let present: bool = tx.query_row(
            "SELECT COUNT(*) > 0 FROM pragma_table_info('submissions') WHERE name = ?1",
            [column],
            |r| r.get(0),
        )?;
        if !present {
            tx.execute_batch(&format!(
                "ALTER TABLE submissions ADD COLUMN {column} {kind};"
            ))?;
        }
    }
    // Before version 3 the receipt id column was UNIQUE, and SQLite cannot drop a column's
    // constraint: copy the rows into a table without it (once; seconds for a million rows).
    let receipt_constrained: bool = tx.query_row(
        "SELECT COUNT(*) > 0 FROM pragma_index_list('submissions') AS l
            JOIN pragma_index_info(l.name) AS i
            WHERE l.origin = 'u' AND i.name = 'receipt_id'",
        [],
        |r| r.get(0),
    )?;
    if receipt_constrained {
        let rebuilt =
            SUBMISSIONS.replacen(" IF NOT EXISTS submissions ", " submissions_rebuilt ", 1);
        tx.execute_batch(&format!(
            "{rebuilt};
             INSERT INTO submissions_rebuilt ({SUBMISSIONS_COLUMNS}, receipt_derived)
                SELECT {SUBMISSIONS_COLUMNS}, 0 FROM submissions;
             DROP TABLE submissions;
             ALTER TABLE submissions_rebuilt RENAME TO submissions;"
        ))?;
    }
    // Entries stored before version 2 carry their notice in the payload only: copy it into the
    // columns, so the record of consent reads the same for every row.
    tx.execute_batch(
        "UPDATE submissions
            SET notice_locale = json_extract(payload, '$.notice.locale'),
                notice_version = json_extract(payload, '$.notice.version')
            WHERE notice_locale IS NULL AND json_valid(payload)
                AND json_type(payload, '$.notice') = 'object';",
    )?;
    // NULLs are distinct: rows of campaigns without the rule never collide.
    tx.execute_batch(&format!(
        "CREATE UNIQUE INDEX IF NOT EXISTS submissions_person
            ON submissions (campaign, person_digest);
         CREATE UNIQUE INDEX IF NOT EXISTS submissions_random_receipt
            ON submissions (receipt_id) WHERE seq < {NUMBERED_FROM};
         CREATE TABLE IF NOT EXISTS receipt_key (
            key BLOB NOT NULL,
            last_epoch INTEGER NOT NULL
         );
         CREATE TABLE IF NOT EXISTS erasures (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,
            at_ms INTEGER NOT NULL,
            region TEXT NOT NULL,
            campaign TEXT NOT NULL,
            entries INTEGER NOT NULL
         );
         PRAGMA user_version = {SCHEMA_VERSION};"
    ))?;
    tx.execute(
        "INSERT INTO receipt_key (key, last_epoch)
            SELECT ?1, 0 WHERE NOT EXISTS (SELECT 1 FROM receipt_key)",
        [new_key()?.as_slice()],
    )?;
    Ok(tx.commit()?)
}

/// Reserves the next epoch of the file's receipt numbers for one store, with the file's key:
/// past the counter and past every stored row's epoch (a file restored from a backup has an
/// older counter, but its rows still say how far numbering had come).
fn reserve_ids(connection: &mut Connection, region: &str) -> Result<ReceiptIds, Unavailable> {
    let tx = connection.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let (key, epoch): (Vec<u8>, i64) = tx.query_row(
        "UPDATE receipt_key SET last_epoch = max(last_epoch,
                (SELECT ifnull(max(seq), 0) >> 32 FROM submissions)) + 1
            RETURNING key, last_epoch",
        [],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    tx.commit()?;
    Ok(ReceiptIds::new(
        region,
        &key,
        u64::try_from(epoch).unwrap_or(0),
    )?)
}

/// The file's receipt key, for finding rows by derived id (`receipt::ReceiptIds::reader`).
pub(in crate::store) fn receipt_key(connection: &Connection) -> Result<Vec<u8>, Unavailable> {
    Ok(connection.query_row("SELECT key FROM receipt_key", [], |r| r.get(0))?)
}

/// Deletes at most `at_most` rows of `campaign` in one statement (retention); how many.
pub(in crate::store) fn delete_campaign_rows(
    connection: &Connection,
    campaign: &str,
    at_most: usize,
) -> Result<u64, Unavailable> {
    // SQLite's DELETE takes no LIMIT unless built for it: bound the rows by their keys. The
    // (campaign, idempotency_key) index finds them.
    let deleted = connection.execute(
        "DELETE FROM submissions WHERE seq IN
            (SELECT seq FROM submissions WHERE campaign = ?1 LIMIT ?2)",
        params![campaign, i64::try_from(at_most).unwrap_or(i64::MAX)],
    )?;
    Ok(u64::try_from(deleted).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::receipt::is_receipt_id;
    use crate::verify::Verified;

    /// SQLite's own reading of `synchronous` on a connection: 2 is FULL, 1 NORMAL.
    fn synchronous(connection: &Connection) -> i64 {
        connection
            .pragma_query_value(None, "synchronous", |row| row.get(0))
            .unwrap()
    }

    #[test]
    fn the_store_and_its_other_connections_sync_as_told_read_back_from_sqlite() {
        let dir = std::env::temp_dir().join(format!("harbour-sync-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for (durability, expected) in [(Durability::Full, 2), (Durability::Normal, 1)] {
            let path = dir.join(format!("{durability:?}.sqlite"));
            let store = Sqlite::open(&path, "eu", durability).unwrap();
            assert_eq!(
                synchronous(&store.connection),
                expected,
                "{durability:?}: the writer"
            );
            for read_only in [true, false] {
                let other = connect(&path, durability, read_only).unwrap();
                assert_eq!(
                    synchronous(&other),
                    expected,
                    "{durability:?}, read_only {read_only}"
                );
            }
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn opening_waits_out_another_origins_migration() {
        let (dir, path) = fresh_file("open-wait");
        drop(Sqlite::open(&path, "eu", Durability::Full).unwrap());
        // Another origin holds the write lock longer than a batch would wait for it, as a
        // migration that copies a large file's rows does.
        let (locked, is_locked) = std::sync::mpsc::channel();
        let holder = std::thread::spawn({
            let path = path.clone();
            move || {
                let other = Connection::open(&path).unwrap();
                other.execute_batch("BEGIN IMMEDIATE").unwrap();
                locked.send(()).unwrap();
                std::thread::sleep(LOCK_WAIT + Duration::from_millis(500));
                other.execute_batch("COMMIT").unwrap();
            }
        });
        is_locked.recv().unwrap();
        let started = std::time::Instant::now();
        let opened = Sqlite::open(&path, "eu", Durability::Full);
        let waited = started.elapsed();
        holder.join().unwrap();
        assert!(opened.is_ok(), "{:?}", opened.err());
        assert!(
            waited >= LOCK_WAIT,
            "opened after {waited:?}: the lock was not held"
        );
        // Once open, a batch waits `LOCK_WAIT` again (by the clock), not the opening's wait.
        let mut store = opened.unwrap();
        let other = Connection::open(&path).unwrap();
        other.execute_batch("BEGIN IMMEDIATE").unwrap();
        let started = std::time::Instant::now();
        let refused = store.store(&Row {
            submission: &submission("k-wait", "h"),
            person: None,
            now_ms: 1_000,
        });
        assert!(refused.is_err(), "{refused:?}");
        let waited = started.elapsed();
        assert!(
            (LOCK_WAIT..LOCK_WAIT + Duration::from_secs(2)).contains(&waited),
            "{waited:?}"
        );
        other.execute_batch("ROLLBACK").unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }

    fn submission(key: &str, fields_sha256: &str) -> Verified {
        Verified {
            campaign: "c1".into(),
            idempotency_key: key.into(),
            fields_sha256: fields_sha256.into(),
            platform_country: "IT".into(),
            declared_country: None,
            notice: None,
            payload: serde_json::json!({"fields": {}}),
        }
    }

    fn store(s: &mut Sqlite, v: &Verified, person: Option<&str>, now_ms: u64) -> Stored {
        s.store(&Row {
            submission: v,
            person,
            now_ms,
        })
        .unwrap()
    }

    #[test]
    fn stores_once_and_replays_the_first_receipt() {
        let mut s = Sqlite::in_memory("eu").unwrap();
        let first = store(&mut s, &submission("k1", "h1"), None, 10);
        let Stored::New(receipt) = first else {
            panic!("{first:?}")
        };
        assert!(is_receipt_id("eu", &receipt.id), "{}", receipt.id);
        assert_eq!(
            store(&mut s, &submission("k1", "h1"), None, 20),
            Stored::Replay(receipt)
        );
        assert_eq!(
            store(&mut s, &submission("k1", "other"), None, 30),
            Stored::Conflict
        );
        assert!(matches!(
            store(&mut s, &submission("k2", "h1"), None, 40),
            Stored::New(_)
        ));
        assert_eq!(s.count().unwrap(), 2);
    }

    /// A directory of this test process's own and a path in it where no file is yet.
    fn fresh_file(name: &str) -> (std::path::PathBuf, std::path::PathBuf) {
        let dir = std::env::temp_dir().join(format!("harbour-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("eu.sqlite");
        let _ = std::fs::remove_file(&path);
        (dir, path)
    }

    #[test]
    fn a_synced_batch_reaches_the_wal_in_one_write_and_other_connections_see_it() {
        let (dir, path) = fresh_file("wal-writes");
        let mut s = Sqlite::open(&path, "eu", Durability::Full).unwrap();
        assert!(s.coalesce_wal_writes());
        let reader = connect(&path, Durability::Full, true).unwrap();
        let before = harbour_wal_writes::writes(&s.connection).unwrap();
        let batches = 20;
        for b in 0..batches {
            let rows: Vec<Prepared> = (0..16)
                .map(|i| {
                    let v = submission(&format!("k-{b}-{i}"), "h");
                    let person = format!("p-{b}-{i}");
                    let row = Row {
                        submission: &v,
                        person: Some(&person),
                        now_ms: 1,
                    };
                    Prepared::new(&row, &s.ids).unwrap()
                })
                .collect();
            let answers = s.store_batch(&rows).unwrap();
            assert!(answers.iter().all(|a| matches!(a, Ok(Stored::New(_)))));
            assert_eq!(count(&reader).unwrap(), (b + 1) * 16);
        }
        let after = harbour_wal_writes::writes(&s.connection).unwrap();
        // Two writes a frame, several frames a batch; one write a batch.
        assert!(after.asked - before.asked >= 4 * batches, "{after:?}");
        assert!(after.made - before.made <= batches + 2, "{after:?}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_file_from_before_the_person_digest_is_migrated() {
        let (dir, path) = fresh_file("migrate");
        {
            let old = Connection::open(&path).unwrap();
            old.execute_batch(
                "CREATE TABLE submissions (
                    seq INTEGER PRIMARY KEY AUTOINCREMENT, receipt_id TEXT NOT NULL UNIQUE,
                    region TEXT NOT NULL, campaign TEXT NOT NULL, idempotency_key TEXT NOT NULL,
                    fields_sha256 TEXT NOT NULL, platform_country TEXT NOT NULL,
                    declared_country TEXT, payload TEXT NOT NULL, stored_at_ms INTEGER NOT NULL,
                    UNIQUE (campaign, idempotency_key));
                 INSERT INTO submissions (receipt_id, region, campaign, idempotency_key,
                    fields_sha256, platform_country, payload, stored_at_ms)
                 VALUES ('eu-0000000001', 'eu', 'c1', 'old-key', 'h0', 'IT', '{}', 1);",
            )
            .unwrap();
        }
        let mut s = Sqlite::open(&path, "eu", Durability::Full).unwrap();
        assert_eq!(s.count().unwrap(), 1);
        assert_eq!(
            store(&mut s, &submission("old-key", "h0"), None, 5),
            Stored::Replay(Receipt {
                id: "eu-0000000001".into(),
                region: "eu".into(),
                stored_at_ms: 1
            })
        );
        assert!(matches!(
            store(&mut s, &submission("k2", "h2"), Some("p1"), 5),
            Stored::New(_)
        ));
        assert_eq!(
            store(&mut s, &submission("k3", "h3"), Some("p1"), 6),
            Stored::AlreadyEntered
        );
        drop(s);
        // Opening again finds the schema current.
        let s = Sqlite::open(&path, "eu", Durability::Full).unwrap();
        assert_eq!(s.count().unwrap(), 2);
        // The rebuilt table kept the old row's random id, in the index that holds only those.
        let indexed: String = s
            .connection
            .query_row(
                "SELECT receipt_id FROM submissions INDEXED BY submissions_random_receipt
                    WHERE receipt_id = 'eu-0000000001' AND seq < 4294967296",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(indexed, "eu-0000000001");
        let _ = std::fs::remove_dir_all(&dir);
    }

    fn numbers(connection: &Connection) -> Vec<i64> {
        let mut statement = connection
            .prepare("SELECT seq FROM submissions ORDER BY seq")
            .unwrap();
        let rows = statement.query_map([], |r| r.get(0)).unwrap();
        rows.map(Result::unwrap).collect()
    }

    #[test]
    fn stores_sharing_a_file_number_apart_and_never_again_after_a_restore() {
        let (dir, path) = fresh_file("epochs");
        let (mut a, mut b) = (
            Sqlite::open(&path, "eu", Durability::Full).unwrap(),
            Sqlite::open(&path, "eu", Durability::Full).unwrap(),
        );
        for n in 0..3 {
            for (s, who) in [(&mut a, "a"), (&mut b, "b")] {
                let stored = store(s, &submission(&format!("{who}{n}"), "h"), None, n);
                assert!(matches!(stored, Stored::New(_)), "{stored:?}");
            }
        }
        let e = NUMBERED_FROM;
        assert_eq!(
            numbers(&a.connection),
            [e, e + 1, e + 2, 2 * e, 2 * e + 1, 2 * e + 2]
        );
        // A restored file's counter is older than its rows: the next store numbers past them.
        a.connection
            .execute("UPDATE receipt_key SET last_epoch = 0", [])
            .unwrap();
        let mut c = Sqlite::open(&path, "eu", Durability::Full).unwrap();
        assert!(matches!(
            store(&mut c, &submission("c0", "h"), None, 9),
            Stored::New(_)
        ));
        assert_eq!(numbers(&c.connection).last(), Some(&(3 * e)));
        // An origin of an earlier version, which lets SQLite number its rows, is refused.
        let unnumbered = c.connection.execute(
            "INSERT INTO submissions (receipt_id, region, campaign, idempotency_key,
                fields_sha256, platform_country, payload, stored_at_ms)
             VALUES ('eu-0000000000000002', 'eu', 'c1', 'old', 'h', 'IT', '{}', 1)",
            [],
        );
        assert!(unnumbered
            .unwrap_err()
            .to_string()
            .contains("NOT NULL constraint failed: submissions.receipt_derived"),);
        assert_eq!(c.count().unwrap(), 7);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
