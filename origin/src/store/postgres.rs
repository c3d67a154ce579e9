//! PostgreSQL storage: one database per region, shared by every origin host of that region.
//!
//! `tokio-postgres` with a `deadpool-postgres` pool. A store is one statement in the normal case,
//! `INSERT … ON CONFLICT DO NOTHING RETURNING`, which commits before it answers (autocommit,
//! `synchronous_commit` as the server has it, `on` by default); only when nothing was inserted
//! do lookups tell a replay, a conflict and a second entry from the same person apart. The unique
//! constraints decide, so two hosts storing the same key at once make one row: the second insert
//! waits for the first to commit and then finds its row.

use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio_postgres::NoTls;

use super::{Receipt, Row, Stored, Unavailable};
use crate::receipt::{new_id, MAX_ID_TRIES};

/// Connections per origin process, unless `--pool-size` says otherwise.
pub const DEFAULT_POOL_SIZE: usize = 8;
/// How long a store call waits for a connection, and a new connection for the server: short,
/// so an origin whose database is down answers 503 well inside the edge's attempt timeout.
const POOL_WAIT: Duration = Duration::from_secs(2);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Key of the advisory lock held while the schema is created or migrated ("harbour1").
const MIGRATION_LOCK: i64 = 0x6861_7262_6f75_7231;
const SCHEMA_VERSION: i32 = 1;

const INSERT: &str = "INSERT INTO submissions (receipt_id, region, campaign, idempotency_key,
        fields_sha256, person_digest, platform_country, declared_country, payload, stored_at_ms)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
    ON CONFLICT DO NOTHING
    RETURNING receipt_id";
const BY_KEY: &str = "SELECT receipt_id, fields_sha256, stored_at_ms FROM submissions
    WHERE campaign = $1 AND idempotency_key = $2";
const BY_PERSON: &str = "SELECT 1 FROM submissions WHERE campaign = $1 AND person_digest = $2";

#[derive(Clone)]
pub struct Postgres {
    pool: Pool,
    region: String,
}

fn unavailable(error: impl std::fmt::Display) -> Unavailable {
    Unavailable(format!("postgres: {error}"))
}

impl Postgres {
    /// Connects (at least once, so a wrong URL fails at start) and creates or migrates the schema.
    pub async fn connect(url: &str, region: &str) -> Result<Postgres, String> {
        Postgres::connect_with(url, region, DEFAULT_POOL_SIZE).await
    }

    pub async fn connect_with(
        url: &str,
        region: &str,
        pool_size: usize,
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
        let store = Postgres {
            pool,
            region: region.to_owned(),
        };
        store.migrate().await.map_err(|e| e.to_string())?;
        Ok(store)
    }

    /// Creates the schema, or brings an older one up to `SCHEMA_VERSION`, under an advisory lock
    /// so the region's origins starting together do it once.
    async fn migrate(&self) -> Result<(), Unavailable> {
        let mut client = self.pool.get().await.map_err(unavailable)?;
        let tx = client.transaction().await.map_err(unavailable)?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
            .await
            .map_err(unavailable)?;
        tx.batch_execute(
            "CREATE TABLE IF NOT EXISTS harbour_schema (version INTEGER NOT NULL);
             CREATE TABLE IF NOT EXISTS submissions (
                seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                receipt_id TEXT NOT NULL UNIQUE,
                region TEXT NOT NULL,
                campaign TEXT NOT NULL,
                idempotency_key TEXT NOT NULL,
                fields_sha256 TEXT NOT NULL,
                person_digest TEXT,
                platform_country TEXT NOT NULL,
                declared_country TEXT,
                payload JSONB NOT NULL,
                stored_at_ms BIGINT NOT NULL,
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
        // A table from version 0 (before the person digest) is left as it was by CREATE TABLE IF
        // NOT EXISTS: bring it up to version 1 here, whatever version row it has.
        tx.batch_execute(
            "ALTER TABLE submissions ADD COLUMN IF NOT EXISTS person_digest TEXT;
             DO $$ BEGIN
                IF NOT EXISTS (SELECT 1 FROM pg_constraint WHERE conname = 'submissions_person') THEN
                    ALTER TABLE submissions
                        ADD CONSTRAINT submissions_person UNIQUE (campaign, person_digest);
                END IF;
             END $$;",
        )
        .await
        .map_err(unavailable)?;
        if version != Some(SCHEMA_VERSION) {
            tx.execute("DELETE FROM harbour_schema", &[])
                .await
                .map_err(unavailable)?;
            tx.execute(
                "INSERT INTO harbour_schema (version) VALUES ($1)",
                &[&SCHEMA_VERSION],
            )
            .await
            .map_err(unavailable)?;
        }
        tx.commit().await.map_err(unavailable)
    }

    pub async fn store(&self, row: Row<'_>) -> Result<Stored, Unavailable> {
        let s = row.submission;
        let client = self.pool.get().await.map_err(unavailable)?;
        let stored_at_ms = i64::try_from(row.now_ms).unwrap_or(i64::MAX);
        for _ in 0..MAX_ID_TRIES {
            let id = new_id(&self.region)?;
            let insert = client.prepare_cached(INSERT).await.map_err(unavailable)?;
            let inserted = client
                .query_opt(
                    &insert,
                    &[
                        &id,
                        &self.region,
                        &s.campaign,
                        &s.idempotency_key,
                        &s.fields_sha256,
                        &row.person,
                        &s.platform_country,
                        &s.declared_country,
                        &s.payload,
                        &stored_at_ms,
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
            let by_key = client.prepare_cached(BY_KEY).await.map_err(unavailable)?;
            if let Some(existing) = client
                .query_opt(&by_key, &[&s.campaign, &s.idempotency_key])
                .await
                .map_err(unavailable)?
            {
                let fields_sha256: String = existing.get(1);
                if fields_sha256 != s.fields_sha256 {
                    return Ok(Stored::Conflict);
                }
                let stored_at_ms: i64 = existing.get(2);
                return Ok(Stored::Replay(Receipt {
                    id: existing.get(0),
                    region: self.region.clone(),
                    stored_at_ms: u64::try_from(stored_at_ms).unwrap_or(0),
                }));
            }
            if let Some(person) = row.person {
                let by_person = client
                    .prepare_cached(BY_PERSON)
                    .await
                    .map_err(unavailable)?;
                if client
                    .query_opt(&by_person, &[&s.campaign, &person])
                    .await
                    .map_err(unavailable)?
                    .is_some()
                {
                    return Ok(Stored::AlreadyEntered);
                }
            }
            // Neither key nor person: the receipt id collided. Try a fresh one.
        }
        Err(Unavailable("no free receipt id after several tries".into()))
    }

    pub async fn count(&self) -> Result<u64, Unavailable> {
        let client = self.pool.get().await.map_err(unavailable)?;
        let row = client
            .query_one("SELECT count(*) FROM submissions", &[])
            .await
            .map_err(unavailable)?;
        Ok(u64::try_from(row.get::<_, i64>(0)).unwrap_or(0))
    }

    /// Whether the database answers at all.
    pub async fn ping(&self) -> Result<(), Unavailable> {
        let client = self.pool.get().await.map_err(unavailable)?;
        client.simple_query("").await.map_err(unavailable)?;
        Ok(())
    }
}
