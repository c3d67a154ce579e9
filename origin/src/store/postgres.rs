//! PostgreSQL storage: one database per region, shared by every origin host of that region.
//!
//! `tokio-postgres` with a `deadpool-postgres` pool. Submissions are stored in batches (the rules
//! are `batch`'s): `BATCHERS` tasks per process each take every submission waiting and store
//! them with one statement, `INSERT … SELECT … FROM unnest(…) ON CONFLICT DO NOTHING
//! RETURNING`, which commits (autocommit, `synchronous_commit` as the server has it, `on` by
//! default) before any of its submissions is answered: one round trip and one commit for the
//! batch. A statement that fails, at any point up to its commit, stores none of its rows and
//! answers all of them `Unavailable`.
//!
//! The statement takes its rows ordered by (campaign, key), then arrival: a row whose key or
//! person an earlier row holds, in the database or in the batch, is skipped, and only for
//! skipped rows do lookups tell a replay, a conflict and a second entry from the same person
//! apart (a row whose key and person are both gone, deleted meanwhile, is retried with a fresh
//! number). The unique constraints decide, so two hosts storing the same key at once make one
//! row: the second insert waits for the first to commit and then finds its row. The order keeps
//! two hosts' batches from waiting on each other's keys in a cycle; rows of one person under
//! different keys sent to two hosts at once still can, and PostgreSQL then aborts one batch
//! (after `deadlock_timeout`), answered `Unavailable` and retried.

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use deadpool_postgres::{GenericClient, Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{mpsc, oneshot, Mutex};
use tokio_postgres::NoTls;

use super::batch::{
    Answer, BatchStats, CommitTime, Gauges, Limits, Pacing, Prepared, FULL_ENOUGH,
    POSTGRES_COMMIT_WINDOW,
};
use super::row::{Receipt, Row, Stored, Unavailable};
use crate::receipt::{new_key, ReceiptIds, MAX_ID_TRIES, NUMBERED_FROM};

/// Connections per origin process, unless `--pool-size` says otherwise.
pub const DEFAULT_POOL_SIZE: usize = 8;
/// Batching tasks per process (at most the pool's size), each holding a connection while it
/// stores a batch. Measured with store-bench on 2 cores: 4 did better than 1, 2 and 8.
pub const BATCHERS: usize = 4;
/// How long a store call waits for a connection, and a new connection for the server: short,
/// so an origin whose database is down answers 503 well inside the edge's attempt timeout.
const POOL_WAIT: Duration = Duration::from_secs(2);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Key of the advisory lock held while the schema is created or migrated ("harbour1").
const MIGRATION_LOCK: i64 = 0x6861_7262_6f75_7231;
/// 1: with `person_digest`; 2: with the record of consent (`notice_locale`, `notice_version`),
/// `marketing_withdrawn_ms` and the `erasures` table; 3: receipt ids derived from row numbers
/// (`receipt`), the `receipt_key` table and `receipt_epochs` sequence, and the unique index on
/// receipt ids kept for the rows numbered before.
const SCHEMA_VERSION: i32 = 3;

/// A batch in one statement. `n` is the arrival order; rows are taken by key, then arrival.
/// Rows carry their numbers (`receipt`), so the identity's own sequence is not used.
const INSERT_BATCH: &str = "INSERT INTO submissions (receipt_id, region, campaign,
        idempotency_key, fields_sha256, person_digest, platform_country, declared_country,
        payload, stored_at_ms, notice_locale, notice_version, seq)
    OVERRIDING SYSTEM VALUE
    SELECT id, $1, c, k, f, p, pc, dc, pl::jsonb, t, nl, nv, s
    FROM unnest($2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[],
        $8::text[], $9::text[], $10::int8[], $11::text[], $12::text[], $13::int8[])
        WITH ORDINALITY AS u(id, c, k, f, p, pc, dc, pl, t, nl, nv, s, n)
    ORDER BY c, k, n
    ON CONFLICT DO NOTHING
    RETURNING receipt_id";
/// One row again, with a fresh number, after its batch skipped it and neither its key nor its
/// person was found (the row holding them was deleted in between).
const INSERT: &str = "INSERT INTO submissions (receipt_id, region, campaign, idempotency_key,
        fields_sha256, person_digest, platform_country, declared_country, payload, stored_at_ms,
        notice_locale, notice_version, seq)
    OVERRIDING SYSTEM VALUE
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, ($9::text)::jsonb, $10, $11, $12, $13)
    ON CONFLICT DO NOTHING
    RETURNING receipt_id";
const BY_KEY: &str = "SELECT receipt_id, fields_sha256, stored_at_ms FROM submissions
    WHERE campaign = $1 AND idempotency_key = $2";
const BY_PERSON: &str = "SELECT 1 FROM submissions WHERE campaign = $1 AND person_digest = $2";

/// The handle: the queue to this process's batchers.
#[derive(Clone)]
pub struct Postgres {
    database: Arc<Database>,
    // Dropping the last handle closes the queue: the batchers finish their batches and stop.
    jobs: mpsc::Sender<Job>,
    gauges: Arc<Gauges>,
}

/// What the batchers share (never the queue's sender, so they stop with the last handle).
struct Database {
    pool: Pool,
    region: String,
    ids: Arc<ReceiptIds>,
}

struct Job {
    row: Prepared,
    answer: oneshot::Sender<Answer>,
    queued_at: Instant,
}

/// The queue the batchers take from, in turn, with what they know of its arrivals.
struct Queue {
    jobs: mpsc::Receiver<Job>,
    pacing: Pacing,
}

/// What the batchers share outside the queue's lock: a batcher records its commit without
/// waiting for the one that gathers.
#[derive(Default)]
struct Underway {
    /// Batches being stored now. A batch is held open only while none is: the server commits
    /// concurrent batches together anyway, and a hold (under the queue's lock) keeps every other
    /// batcher from taking work.
    batches: AtomicUsize,
    commit_time: CommitTime,
}

impl Queue {
    /// Moves what waits into `batch`, up to `max_batch`.
    fn take_waiting(&mut self, batch: &mut Vec<Job>, max_batch: usize) {
        while batch.len() < max_batch {
            match self.jobs.try_recv() {
                Ok(job) => {
                    self.pacing.arrived(job.queued_at);
                    batch.push(job);
                }
                Err(_) => break,
            }
        }
    }
}

/// The error and its causes: tokio-postgres says only "db error", the server's message is its
/// source.
pub(in crate::store) fn unavailable(error: impl std::error::Error) -> Unavailable {
    let mut text = format!("postgres: {error}");
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text = format!("{text}: {cause_text}");
        }
        source = cause.source();
    }
    Unavailable(text)
}

impl Postgres {
    /// Connects (at least once, so a wrong URL fails at start) and creates or migrates the schema.
    pub async fn connect(url: &str, region: &str) -> Result<Postgres, String> {
        Postgres::connect_with(url, region, DEFAULT_POOL_SIZE, POSTGRES_COMMIT_WINDOW).await
    }

    pub async fn connect_with(
        url: &str,
        region: &str,
        pool_size: usize,
        commit_window: Duration,
    ) -> Result<Postgres, String> {
        let batchers = BATCHERS.min(pool_size.max(1));
        let limits = Limits::with_window(commit_window);
        Postgres::connect_batching(url, region, pool_size, batchers, limits).await
    }

    /// With `batchers` tasks and `limits` of one's own (the benchmark's one-row batches, tests).
    pub async fn connect_batching(
        url: &str,
        region: &str,
        pool_size: usize,
        batchers: usize,
        limits: Limits,
    ) -> Result<Postgres, String> {
        let mut config: tokio_postgres::Config = url
            .parse()
            .map_err(|e| format!("not a PostgreSQL URL: {e}"))?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        if config.get_application_name().is_none() {
            config.application_name(format!("harbour-origin {region}"));
        }
        let manager = Manager::from_config(
            config,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(pool_size.max(1))
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(POOL_WAIT))
            .create_timeout(Some(CONNECT_TIMEOUT))
            .recycle_timeout(Some(CONNECT_TIMEOUT))
            .build()
            .map_err(|e| e.to_string())?;
        let ids = {
            let mut client = pool.get().await.map_err(|e| e.to_string())?;
            migrate(&mut client).await.map_err(|e| e.to_string())?;
            reserve_ids(&mut client, region)
                .await
                .map_err(|e| e.to_string())?
        };
        let database = Arc::new(Database {
            pool,
            region: region.to_owned(),
            ids: Arc::new(ids),
        });
        let (jobs, queue) = mpsc::channel(limits.queue.max(1));
        let queue = Arc::new(Mutex::new(Queue {
            jobs: queue,
            pacing: Pacing::default(),
        }));
        let underway = Arc::new(Underway::default());
        let gauges = Arc::new(Gauges::default());
        for _ in 0..batchers.max(1) {
            tokio::spawn(batcher(
                database.clone(),
                queue.clone(),
                underway.clone(),
                gauges.clone(),
                limits,
            ));
        }
        Ok(Postgres {
            database,
            jobs,
            gauges,
        })
    }

    /// Queues the submission for a batcher and waits for its batch's commit.
    pub async fn store(&self, row: Row<'_>) -> Result<Stored, Unavailable> {
        let (answer, answered) = oneshot::channel();
        let job = Job {
            row: Prepared::new(&row, &self.database.ids)?,
            answer,
            queued_at: Instant::now(),
        };
        self.gauges.queued();
        if let Err(refused) = self.jobs.try_send(job) {
            self.gauges.refused();
            return Err(Unavailable(match refused {
                TrySendError::Full(_) => "postgres: the batch queue is full".into(),
                TrySendError::Closed(_) => "postgres: the batchers have stopped".into(),
            }));
        }
        answered
            .await
            .map_err(|_| Unavailable("postgres: the batcher stopped before answering".into()))?
    }

    pub async fn count(&self) -> Result<u64, Unavailable> {
        let client = self.database.pool.get().await.map_err(unavailable)?;
        let row = client
            .query_one("SELECT count(*) FROM submissions", &[])
            .await
            .map_err(unavailable)?;
        Ok(u64::try_from(row.get::<_, i64>(0)).unwrap_or(0))
    }

    /// Deletes at most `at_most` rows of `campaign` in one statement (retention); how many.
    pub async fn delete_campaign_rows(
        &self,
        campaign: &str,
        at_most: usize,
    ) -> Result<u64, Unavailable> {
        let client = self.database.pool.get().await.map_err(unavailable)?;
        delete_campaign_rows(&client, campaign, at_most).await
    }

    /// Whether the database answers at all.
    pub async fn ping(&self) -> Result<(), Unavailable> {
        let client = self.database.pool.get().await.map_err(unavailable)?;
        client.simple_query("").await.map_err(unavailable)?;
        Ok(())
    }

    pub fn stats(&self) -> BatchStats {
        self.gauges.stats()
    }

    /// Submissions queued and not yet taken by a batcher.
    pub fn waiting(&self) -> usize {
        self.gauges.waiting()
    }
}

impl Database {
    /// Stores `rows` with one statement. `Ok`: it committed; one answer per row, in order.
    /// `Err`: nothing was stored.
    async fn store_batch(&self, rows: &[Prepared]) -> Result<Vec<Answer>, Unavailable> {
        let client = self.pool.get().await.map_err(unavailable)?;
        let text = |f: fn(&Prepared) -> &str| -> Vec<&str> { rows.iter().map(f).collect() };
        let maybe = |f: fn(&Prepared) -> Option<&str>| -> Vec<Option<&str>> {
            rows.iter().map(f).collect()
        };
        let stored_at: Vec<i64> = rows.iter().map(Prepared::stored_at_ms).collect();
        let numbers: Vec<i64> = rows.iter().map(|r| r.seq).collect();
        let insert = client
            .prepare_cached(INSERT_BATCH)
            .await
            .map_err(unavailable)?;
        let mut inserted: HashSet<String> = client
            .query(
                &insert,
                &[
                    &self.region,
                    &text(|r| &r.id),
                    &text(|r| &r.campaign),
                    &text(|r| &r.idempotency_key),
                    &text(|r| &r.fields_sha256),
                    &maybe(|r| r.person.as_deref()),
                    &text(|r| &r.platform_country),
                    &maybe(|r| r.declared_country.as_deref()),
                    &text(|r| &r.payload),
                    &stored_at,
                    &maybe(|r| r.notice_locale.as_deref()),
                    &maybe(|r| r.notice_version.as_deref()),
                    &numbers,
                ],
            )
            .await
            .map_err(unavailable)?
            .into_iter()
            .map(|r| r.get(0))
            .collect();
        let mut answers = Vec::with_capacity(rows.len());
        for row in rows {
            if inserted.remove(&row.id) {
                answers.push(Ok(Stored::New(Receipt {
                    id: row.id.clone(),
                    region: self.region.clone(),
                    stored_at_ms: row.now_ms,
                })));
            } else {
                // Committed or not, the batch's other rows keep their answers.
                answers.push(self.settle(&client, row).await);
            }
        }
        Ok(answers)
    }

    /// A row the batch's statement skipped: a replay, a conflict, a second entry, or (neither
    /// key nor person found: the row holding them was deleted meanwhile) retried alone with a
    /// fresh number.
    async fn settle(&self, client: &impl GenericClient, row: &Prepared) -> Answer {
        for _ in 1..MAX_ID_TRIES {
            let by_key = client.prepare_cached(BY_KEY).await.map_err(unavailable)?;
            if let Some(existing) = client
                .query_opt(&by_key, &[&row.campaign, &row.idempotency_key])
                .await
                .map_err(unavailable)?
            {
                let fields_sha256: String = existing.get(1);
                if fields_sha256 != row.fields_sha256 {
                    return Ok(Stored::Conflict);
                }
                let stored_at_ms: i64 = existing.get(2);
                return Ok(Stored::Replay(Receipt {
                    id: existing.get(0),
                    region: self.region.clone(),
                    stored_at_ms: u64::try_from(stored_at_ms).unwrap_or(0),
                }));
            }
            if let Some(person) = &row.person {
                let by_person = client
                    .prepare_cached(BY_PERSON)
                    .await
                    .map_err(unavailable)?;
                if client
                    .query_opt(&by_person, &[&row.campaign, person])
                    .await
                    .map_err(unavailable)?
                    .is_some()
                {
                    return Ok(Stored::AlreadyEntered);
                }
            }
            let (seq, id) = self.ids.next()?;
            let insert = client.prepare_cached(INSERT).await.map_err(unavailable)?;
            let inserted = client
                .query_opt(
                    &insert,
                    &[
                        &id,
                        &self.region,
                        &row.campaign,
                        &row.idempotency_key,
                        &row.fields_sha256,
                        &row.person,
                        &row.platform_country,
                        &row.declared_country,
                        &row.payload,
                        &row.stored_at_ms(),
                        &row.notice_locale,
                        &row.notice_version,
                        &seq,
                    ],
                )
                .await
                .map_err(unavailable)?;
            if inserted.is_some() {
                return Ok(Stored::New(Receipt {
                    id,
                    region: self.region.clone(),
                    stored_at_ms: row.now_ms,
                }));
            }
        }
        Err(Unavailable(
            "no row number taken after several tries".into(),
        ))
    }
}

/// Creates the schema, or brings an older one up to `SCHEMA_VERSION`, under an advisory lock so
/// the region's origins (and commands) starting together do it once.
pub(in crate::store) async fn migrate(
    client: &mut tokio_postgres::Client,
) -> Result<(), Unavailable> {
    let tx = locked(client).await?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS harbour_schema (version INTEGER NOT NULL);
         CREATE TABLE IF NOT EXISTS submissions (
            seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            -- Unique by construction (`receipt`); the ids of rows numbered before version 3
            -- by the index below.
            receipt_id TEXT NOT NULL,
            region TEXT NOT NULL,
            campaign TEXT NOT NULL,
            idempotency_key TEXT NOT NULL,
            fields_sha256 TEXT NOT NULL,
            person_digest TEXT,
            platform_country TEXT NOT NULL,
            declared_country TEXT,
            payload JSONB NOT NULL,
            stored_at_ms BIGINT NOT NULL,
            notice_locale TEXT,
            notice_version TEXT,
            marketing_withdrawn_ms BIGINT,
            CONSTRAINT submissions_key UNIQUE (campaign, idempotency_key),
            -- NULLs are distinct: rows of campaigns without the rule never collide.
            CONSTRAINT submissions_person UNIQUE (campaign, person_digest)
         );",
    )
    .await
    .map_err(unavailable)?;
    let version: Option<i32> = tx
        .query_opt("SELECT max(version) FROM harbour_schema", &[])
        .await
        .map_err(unavailable)?
        .and_then(|row| row.get(0));
    if let Some(v) = version.filter(|v| *v > SCHEMA_VERSION) {
        return Err(Unavailable(format!(
            "the database has schema version {v}, newer than this origin's {SCHEMA_VERSION}"
        )));
    }
    if version == Some(SCHEMA_VERSION) {
        return tx.commit().await.map_err(unavailable);
    }
    // A table of an earlier version is left as it was by CREATE TABLE IF NOT EXISTS: bring it
    // up here, whatever version row it has. Entries stored before version 2 carry their notice
    // in the payload only: it is copied into the columns, so the record of consent reads the
    // same for every row.
    tx.batch_execute(
        "ALTER TABLE submissions ADD COLUMN IF NOT EXISTS person_digest TEXT,
            ADD COLUMN IF NOT EXISTS notice_locale TEXT,
            ADD COLUMN IF NOT EXISTS notice_version TEXT,
            ADD COLUMN IF NOT EXISTS marketing_withdrawn_ms BIGINT;
         DO $$ BEGIN
            IF NOT EXISTS (SELECT 1 FROM pg_constraint WHERE conname = 'submissions_person') THEN
                ALTER TABLE submissions
                    ADD CONSTRAINT submissions_person UNIQUE (campaign, person_digest);
            END IF;
         END $$;
         UPDATE submissions
            SET notice_locale = payload->'notice'->>'locale',
                notice_version = payload->'notice'->>'version'
            WHERE notice_locale IS NULL AND jsonb_typeof(payload->'notice') = 'object';
         CREATE TABLE IF NOT EXISTS erasures (
            seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            at_ms BIGINT NOT NULL,
            region TEXT NOT NULL,
            campaign TEXT NOT NULL,
            entries BIGINT NOT NULL
         );
         ALTER TABLE submissions DROP CONSTRAINT IF EXISTS submissions_receipt_id_key;
         CREATE TABLE IF NOT EXISTS receipt_key (key BYTEA NOT NULL);
         CREATE SEQUENCE IF NOT EXISTS receipt_epochs;
         DELETE FROM harbour_schema;",
    )
    .await
    .map_err(unavailable)?;
    tx.batch_execute(&format!(
        "CREATE UNIQUE INDEX IF NOT EXISTS submissions_random_receipt
            ON submissions (receipt_id) WHERE seq < {NUMBERED_FROM};"
    ))
    .await
    .map_err(unavailable)?;
    tx.execute(
        "INSERT INTO receipt_key (key) SELECT $1 WHERE NOT EXISTS (SELECT 1 FROM receipt_key)",
        &[&new_key()?.as_slice()],
    )
    .await
    .map_err(unavailable)?;
    tx.execute(
        "INSERT INTO harbour_schema (version) VALUES ($1)",
        &[&SCHEMA_VERSION],
    )
    .await
    .map_err(unavailable)?;
    tx.commit().await.map_err(unavailable)
}

/// A transaction holding the migration lock until it ends.
async fn locked(
    client: &mut tokio_postgres::Client,
) -> Result<tokio_postgres::Transaction<'_>, Unavailable> {
    let tx = client.transaction().await.map_err(unavailable)?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(unavailable)?;
    Ok(tx)
}

/// The database's receipt key, for numbering rows or finding them by derived id.
pub(in crate::store) async fn receipt_key(
    client: &impl tokio_postgres::GenericClient,
) -> Result<Vec<u8>, Unavailable> {
    Ok(client
        .query_one("SELECT key FROM receipt_key", &[])
        .await
        .map_err(unavailable)?
        .get(0))
}

/// Reserves the next epoch of the database's receipt numbers for this process, with its key:
/// past the sequence and past every stored row's epoch (a database restored from a backup has
/// an older sequence, but its rows still say how far numbering had come). Under the migration
/// lock, so two processes starting together take two epochs.
async fn reserve_ids(
    client: &mut tokio_postgres::Client,
    region: &str,
) -> Result<ReceiptIds, Unavailable> {
    let tx = locked(client).await?;
    let key = receipt_key(&tx).await?;
    let epoch: i64 = tx
        .query_one(
            "SELECT setval('receipt_epochs', greatest(nextval('receipt_epochs'),
                (SELECT coalesce(max(seq), 0) >> 32 FROM submissions) + 1))",
            &[],
        )
        .await
        .map_err(unavailable)?
        .get(0);
    tx.commit().await.map_err(unavailable)?;
    Ok(ReceiptIds::new(
        region,
        &key,
        u64::try_from(epoch).unwrap_or(0),
    )?)
}

/// A batcher task: takes the first waiting submission and every one behind it (up to
/// `max_batch`); when others are due soon and no other batch is being stored, holds a small batch
/// open while they come (each within a step of the one before), until the first has waited
/// `commit_window` at most (`Pacing`, as SQLite's writer does); stores them
/// with one statement, answers each, and again until the queue closes.
async fn batcher(
    database: Arc<Database>,
    queue: Arc<Mutex<Queue>>,
    underway: Arc<Underway>,
    gauges: Arc<Gauges>,
    limits: Limits,
) {
    let max_batch = limits.max_batch.max(1);
    let full_enough = FULL_ENOUGH.min(max_batch);
    loop {
        let mut batch = Vec::new();
        {
            // One batcher gathers at a time; the others store meanwhile.
            let mut queue = queue.lock().await;
            let Some(first) = queue.jobs.recv().await else {
                return;
            };
            let opened = first.queued_at;
            queue.pacing.arrived(first.queued_at);
            batch.push(first);
            queue.take_waiting(&mut batch, max_batch);
            if batch.len() < full_enough
                && underway.batches.load(Ordering::SeqCst) == 0
                && queue
                    .pacing
                    .hold(limits.commit_window, underway.commit_time.average())
            {
                let (until, taken) = (opened + limits.commit_window, batch.len());
                while batch.len() < full_enough {
                    let left = until.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        break;
                    }
                    // Woken by the next arrival, not a timer: tokio's timers tick in whole
                    // milliseconds, and callers that come back together are in at once.
                    let step = queue.pacing.step().min(left);
                    let Ok(Some(job)) = tokio::time::timeout(step, queue.jobs.recv()).await else {
                        break;
                    };
                    queue.pacing.arrived(job.queued_at);
                    batch.push(job);
                    queue.take_waiting(&mut batch, max_batch);
                }
                queue.pacing.held(batch.len() - taken);
            }
        }
        gauges.took(batch.len());
        let size = batch.len();
        let (rows, answers): (Vec<Prepared>, Vec<_>) =
            batch.into_iter().map(|job| (job.row, job.answer)).unzip();
        let started = Instant::now();
        underway.batches.fetch_add(1, Ordering::SeqCst);
        let outcome = database.store_batch(&rows).await;
        underway.batches.fetch_sub(1, Ordering::SeqCst);
        match outcome {
            Ok(stored) => {
                underway.commit_time.record(started.elapsed());
                gauges.committed(size);
                // A caller that has gone away (its request dropped) just misses its answer.
                for (answer, stored) in answers.into_iter().zip(stored) {
                    let _ = answer.send(stored);
                }
            }
            Err(failed) => {
                gauges.failed();
                for answer in answers {
                    let _ = answer.send(Err(failed.clone()));
                }
            }
        }
    }
}

/// Deletes at most `at_most` rows of `campaign` in one statement (retention); how many.
async fn delete_campaign_rows(
    client: &tokio_postgres::Client,
    campaign: &str,
    at_most: usize,
) -> Result<u64, Unavailable> {
    let at_most = i64::try_from(at_most).unwrap_or(i64::MAX);
    // Autocommit: each statement is its own transaction, holding its rows' locks briefly.
    client
        .execute(
            "DELETE FROM submissions WHERE seq IN
                (SELECT seq FROM submissions WHERE campaign = $1 LIMIT $2)",
            &[&campaign, &at_most],
        )
        .await
        .map_err(unavailable)
}

/// These need a PostgreSQL server: the postgres tier of `bash scripts/test` runs them with
/// `HARBOUR_TEST_PG_ADMIN` set (`cargo test -p harbour-origin -- --ignored`).
#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;
    use crate::verify::Verified;

    const NEEDS_PG: &str = "HARBOUR_TEST_PG_ADMIN";
    /// The origin's own limits for PostgreSQL.
    const LIMITS: Limits = Limits::with_window(POSTGRES_COMMIT_WINDOW);

    /// A fresh, empty database on the test server; its URL.
    async fn fresh_database(name: &str) -> String {
        let admin = std::env::var(NEEDS_PG)
            .unwrap_or_else(|_| panic!("{NEEDS_PG} is not set: the postgres tier sets it"));
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let database = format!("u_{name}_{}_{nanos}", std::process::id());
        let (client, connection) = tokio_postgres::connect(&admin, NoTls).await.unwrap();
        tokio::spawn(connection);
        client
            .batch_execute(&format!("CREATE DATABASE \"{database}\""))
            .await
            .unwrap();
        let (base, _) = admin.rsplit_once('/').unwrap();
        format!("{base}/{database}")
    }

    /// A store with one batcher, so a test can tell which submissions share a batch. Its
    /// statements give up on a lock after 5 s, so a test whose lock is never released fails
    /// rather than hangs.
    async fn one_batcher(url: &str, limits: Limits) -> Postgres {
        let url = format!("{url}?options=-c%20lock_timeout%3D5000");
        Postgres::connect_batching(&url, "eu", 4, 1, limits)
            .await
            .unwrap()
    }

    async fn sql(url: &str) -> tokio_postgres::Client {
        let (client, connection) = tokio_postgres::connect(url, NoTls).await.unwrap();
        tokio::spawn(connection);
        client
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

    async fn put(store: &Postgres, e: &Entry) -> Answer {
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

    async fn wait_until(what: &str, done: impl Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !done() {
            assert!(Instant::now() < deadline, "timed out waiting until {what}");
            tokio::task::yield_now().await;
            std::thread::sleep(Duration::from_micros(200));
        }
    }

    /// Stores `entries` as one batch, in this order: while another session holds a lock that
    /// every insert waits for, a first submission occupies the one batcher, `entries` queue
    /// one by one behind it, and the lock is released. Returns their answers.
    async fn one_batch(store: &Postgres, url: &str, entries: &[Entry]) -> Vec<Answer> {
        let locker = sql(url).await;
        locker
            .batch_execute("BEGIN; LOCK TABLE submissions IN EXCLUSIVE MODE")
            .await
            .unwrap();
        let before = store.stats();
        let first = tokio::spawn({
            let store = store.clone();
            async move { put(&store, &entry("pacer", "p", None)).await }
        });
        wait_until("the batcher holds the first submission", || {
            store.stats().batches == before.batches + 1 && store.waiting() == 0
        })
        .await;
        let mut queued = Vec::new();
        for (n, e) in entries.iter().enumerate() {
            let (store_, e) = (store.clone(), e.clone());
            queued.push(tokio::spawn(async move { put(&store_, &e).await }));
            wait_until("the entry is queued", || store.waiting() == n + 1).await;
        }
        locker.batch_execute("COMMIT").await.unwrap();
        assert!(matches!(first.await.unwrap(), Ok(Stored::New(_))));
        let mut answers = Vec::new();
        for task in queued {
            answers.push(task.await.unwrap());
        }
        let after = store.stats();
        assert_eq!(
            after.batches,
            before.batches + 2,
            "the first submission's batch, then one batch of all entries: {after:?}"
        );
        answers
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore = "needs PostgreSQL: run by the postgres tier of bash scripts/test"]
    async fn rows_of_one_batch_see_each_other_and_a_conflict_is_only_its_own() {
        let url = fresh_database("in_batch").await;
        let store = one_batcher(&url, LIMITS).await;
        let answers = one_batch(
            &store,
            &url,
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
        assert_eq!(store.count().await.unwrap(), 4);
        assert_eq!(store.stats().failed_batches, 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore = "needs PostgreSQL: run by the postgres tier of bash scripts/test"]
    async fn replays_conflicts_and_second_entries_across_batches() {
        let url = fresh_database("across").await;
        let store = one_batcher(&url, LIMITS).await;
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
        assert_eq!(store.count().await.unwrap(), 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore = "needs PostgreSQL: run by the postgres tier of bash scripts/test"]
    async fn a_failed_commit_answers_its_whole_batch_unavailable_and_stores_nothing() {
        let url = fresh_database("failed_commit").await;
        let store = one_batcher(&url, LIMITS).await;
        // A real failure at commit: a deferred constraint trigger runs when the batch's
        // statement commits, and refuses the transaction for one row.
        sql(&url)
            .await
            .batch_execute(
                "CREATE FUNCTION poison() RETURNS trigger LANGUAGE plpgsql AS $$
                 BEGIN
                     IF NEW.idempotency_key = 'poison' THEN
                         RAISE EXCEPTION 'poisoned at commit';
                     END IF;
                     RETURN NULL;
                 END $$;
                 CREATE CONSTRAINT TRIGGER poison AFTER INSERT ON submissions
                     DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION poison();",
            )
            .await
            .unwrap();
        let k0 = put(&store, &entry("k0", "h0", None)).await;
        let answers = one_batch(
            &store,
            &url,
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
            assert!(why.contains("poisoned at commit"), "{why}");
        }
        assert_eq!(store.stats().failed_batches, 1);
        // k0 and the pacer, from the batches before; nothing of the failed one.
        assert_eq!(store.count().await.unwrap(), 2);
        let Ok(Stored::New(k0)) = k0 else {
            panic!("{k0:?}")
        };
        assert_eq!(
            put(&store, &entry("k0", "h0", None)).await,
            Ok(Stored::Replay(k0))
        );
        assert!(matches!(
            put(&store, &entry("k1", "h1", None)).await,
            Ok(Stored::New(_))
        ));
        assert_eq!(store.count().await.unwrap(), 3);
    }

    /// As SQLite's writer: submissions 10 ms apart, each alone in the queue when it comes, share
    /// batches once the batcher knows they come that often.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore = "needs PostgreSQL: run by the postgres tier of bash scripts/test"]
    async fn submissions_that_come_often_wait_for_each_other_within_the_window() {
        let url = fresh_database("held").await;
        let window = Duration::from_millis(500);
        let store = one_batcher(
            &url,
            Limits {
                commit_window: window,
                ..LIMITS
            },
        )
        .await;
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
    #[ignore = "needs PostgreSQL: run by the postgres tier of bash scripts/test"]
    async fn concurrent_callers_share_commits() {
        let url = fresh_database("concurrent").await;
        let store = Postgres::connect(&url, "eu").await.unwrap();
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
        assert!(
            stats.submissions >= 2 * stats.commits,
            "rows per commit {:.2}: {stats:?}",
            stats.submissions as f64 / stats.commits as f64
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore = "needs PostgreSQL: run by the postgres tier of bash scripts/test"]
    async fn a_full_queue_answers_unavailable_at_once() {
        let url = fresh_database("full_queue").await;
        let store = one_batcher(
            &url,
            Limits {
                max_batch: 8,
                queue: 2,
                ..LIMITS
            },
        )
        .await;
        let locker = sql(&url).await;
        locker
            .batch_execute("BEGIN; LOCK TABLE submissions IN EXCLUSIVE MODE")
            .await
            .unwrap();
        let mut queued = vec![tokio::spawn({
            let store = store.clone();
            async move { put(&store, &entry("k0", "h", None)).await }
        })];
        wait_until("the batcher holds k0", || store.stats().batches == 1).await;
        for (n, key) in ["k1", "k2"].into_iter().enumerate() {
            let store_ = store.clone();
            queued.push(tokio::spawn(async move {
                put(&store_, &entry(key, "h", None)).await
            }));
            wait_until("queued", || store.waiting() == n + 1).await;
        }
        let started = Instant::now();
        assert_eq!(
            put(&store, &entry("k3", "h", None)).await,
            Err(Unavailable("postgres: the batch queue is full".into()))
        );
        assert!(started.elapsed() < Duration::from_secs(1));
        locker.batch_execute("COMMIT").await.unwrap();
        for task in queued {
            assert!(matches!(task.await.unwrap(), Ok(Stored::New(_))));
        }
        assert_eq!(store.count().await.unwrap(), 3);
    }
}
