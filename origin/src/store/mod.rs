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
//! - receipt ids are random (`receipt::new_id`), unique, and say nothing about order or count.
//!
//! A database that cannot be reached is `Unavailable`, which the origin answers 503: the edge
//! then tries the region's next origin and tells the visitor to retry with the same key.

pub mod batch;
pub mod group_commit;
pub mod postgres;
pub mod row;
pub mod sqlite;

use std::path::PathBuf;

use batch::{BatchStats, Limits};
use group_commit::SqliteStore;

pub use row::{Durability, Receipt, Row, Stored, Unavailable};

/// Where the store is, as given on the command line (`--store`, `--db`) or in `HARBOUR_STORE`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Location {
    Sqlite(PathBuf),
    /// A libpq-style URL (`postgres://user@host:port/db?options`).
    Postgres(String),
}

impl Location {
    /// `postgres://…` / `postgresql://…`, `sqlite:PATH`, or a bare path (SQLite).
    pub fn parse(text: &str) -> Result<Location, String> {
        let text = text.trim();
        if text.is_empty() {
            return Err("the store location is empty".into());
        }
        if text.starts_with("postgres://") || text.starts_with("postgresql://") {
            return Ok(Location::Postgres(text.to_owned()));
        }
        if let Some((scheme, _)) = text.split_once("://") {
            return Err(format!(
                "unknown store scheme {scheme:?}: use postgres://… or a SQLite file path"
            ));
        }
        let path = text.strip_prefix("sqlite:").unwrap_or(text);
        Ok(Location::Sqlite(PathBuf::from(path)))
    }

    /// For logs: the kind and where, without a password.
    pub fn describe(&self) -> String {
        match self {
            Location::Sqlite(path) => format!("sqlite:{}", path.display()),
            Location::Postgres(url) => redact_password(url),
        }
    }
}

fn redact_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split(':').next().unwrap_or("");
            let hidden = if userinfo.contains(':') { ":***" } else { "" };
            format!("{scheme}://{user}{hidden}@{host}{tail}")
        }
        None => url.to_owned(),
    }
}

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
    /// `durability` is SQLite's; `pool_size` is PostgreSQL's connections per process.
    pub async fn open(
        location: &Location,
        region: &str,
        durability: Durability,
        pool_size: usize,
    ) -> Result<Store, String> {
        match location {
            Location::Sqlite(path) => {
                SqliteStore::open(path, region, durability, Limits::default())
                    .map(Store::Sqlite)
                    .map_err(|e| format!("cannot open {}: {e}", path.display()))
            }
            Location::Postgres(url) => postgres::Postgres::connect_with(url, region, pool_size)
                .await
                .map(Store::Postgres)
                .map_err(|e| format!("cannot use {}: {e}", location.describe())),
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
