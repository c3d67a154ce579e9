//! Where a region keeps its submissions: an embedded SQLite file, or a PostgreSQL database that
//! every origin host of the region shares. Both give the same guarantees:
//!
//! - `(campaign, idempotency key)` is unique: a replay gets the first receipt (200), the same key
//!   with other fields is a conflict (409);
//! - with a person digest (`person`), `(campaign, person digest)` is unique too: a second entry
//!   from the same person under a new key is refused (409 `already_entered`);
//! - the row is committed (durably, see `Durability`) before `store` returns a receipt;
//! - both commit concurrent submissions together (`batch`): SQLite in one transaction of its
//!   writer thread (`group_commit`), PostgreSQL in one statement of a batcher task (`postgres`);
//! - receipt ids are the rows' numbers encrypted under the store's key (`receipt`): unique by
//!   construction, and they say nothing about order or count;
//! - each row keeps the notice the visitor was shown (locale and version: the record of
//!   consent), and, once withdrawn, when marketing consent was withdrawn;
//! - retention's deletes (`Store::delete_campaign_rows`) and the region's commands (`records`)
//!   take a bounded number of rows per statement, each its own short transaction.
//!
//! A database that cannot be reached is `Unavailable`, which the origin answers 503: the edge
//! then tries the region's next origin and tells the visitor to retry with the same key.

pub mod batch;
pub mod group_commit;
pub mod location;
pub mod postgres;
pub mod records;
pub mod row;
pub mod sqlite;

use std::time::Duration;

use batch::{BatchStats, Limits, POSTGRES_COMMIT_WINDOW, SQLITE_COMMIT_WINDOW};
use group_commit::SqliteStore;

pub use location::Location;
pub use row::{Durability, Receipt, Row, Stored, Unavailable};

/// A region's store.
#[derive(Clone)]
pub enum Store {
    /// One writer thread per process, committing what waits in batches (`group_commit`).
    Sqlite(SqliteStore),
    /// A pool per process and batcher tasks storing what waits with one statement a batch.
    Postgres(postgres::Postgres),
}

impl Store {
    /// Opens the store and creates or migrates its schema.
    /// `durability` is SQLite's; `pool_size` is PostgreSQL's connections per process;
    /// `commit_window` is both stores' (`--commit-window`); `None`, each store's own
    /// (`batch::SQLITE_COMMIT_WINDOW`, `batch::POSTGRES_COMMIT_WINDOW`).
    pub async fn open(
        location: &Location,
        region: &str,
        durability: Durability,
        commit_window: Option<Duration>,
        pool_size: usize,
    ) -> Result<Store, String> {
        match location {
            Location::Sqlite(path) => {
                let limits = Limits::with_window(commit_window.unwrap_or(SQLITE_COMMIT_WINDOW));
                SqliteStore::open(path, region, durability, limits)
                    .map(Store::Sqlite)
                    .map_err(|e| format!("cannot open {}: {e}", path.display()))
            }
            Location::Postgres(url) => {
                let commit_window = commit_window.unwrap_or(POSTGRES_COMMIT_WINDOW);
                postgres::Postgres::connect_with(url, region, pool_size, commit_window)
                    .await
                    .map(Store::Postgres)
                    .map_err(|e| format!("cannot use {}: {e}", location.describe()))
            }
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Store::Sqlite(_) => "sqlite",
            Store::Postgres(_) => "postgres",
        }
    }

    pub async fn store(&self, row: Row<'_>) -> Result<Stored, Unavailable> {
        match self {
            Store::Sqlite(sqlite) => sqlite.store(row).await,
            Store::Postgres(pg) => pg.store(row).await,
        }
    }

    /// Deletes at most `at_most` rows of `campaign` in one short transaction of its own, so
    /// submissions wait at most that long for it (retention; see `retention`); how many.
    pub async fn delete_campaign_rows(
        &self,
        campaign: &str,
        at_most: usize,
    ) -> Result<u64, Unavailable> {
        match self {
            Store::Sqlite(sqlite) => sqlite.delete_campaign_rows(campaign, at_most).await,
            Store::Postgres(pg) => pg.delete_campaign_rows(campaign, at_most).await,
        }
    }

    /// Whether the store answers at all (for health checks; cheap).
    pub async fn ping(&self) -> Result<(), Unavailable> {
        match self {
            Store::Sqlite(sqlite) => sqlite.ping().await,
            Store::Postgres(pg) => pg.ping().await,
        }
    }

    /// Rows stored in this region.
    pub async fn count(&self) -> Result<u64, Unavailable> {
        match self {
            Store::Sqlite(sqlite) => sqlite.count().await,
            Store::Postgres(pg) => pg.count().await,
        }
    }

    /// The batches committed and the submissions they answered.
    pub fn batch_stats(&self) -> BatchStats {
        match self {
            Store::Sqlite(sqlite) => sqlite.stats(),
            Store::Postgres(pg) => pg.stats(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations() {
        assert_eq!(
            Location::parse("postgres://h@127.0.0.1:5/eu").unwrap(),
            Location::Postgres("postgres://h@127.0.0.1:5/eu".into())
        );
        assert_eq!(
            Location::parse("sqlite:/tmp/eu.sqlite").unwrap(),
            Location::Sqlite("/tmp/eu.sqlite".into())
        );
        assert_eq!(
            Location::parse("eu.sqlite").unwrap(),
            Location::Sqlite("eu.sqlite".into())
        );
        assert!(Location::parse("mysql://x/y").is_err());
        assert!(Location::parse(" ").is_err());
        assert_eq!(
            Location::parse("postgres://app:s3cret@db:5432/eu?sslmode=disable")
                .unwrap()
                .describe(),
            "postgres://app:***@db:5432/eu?sslmode=disable"
        );
        assert_eq!(
            Location::parse("postgresql://db/eu").unwrap().describe(),
            "postgresql://db/eu"
        );
    }
}
