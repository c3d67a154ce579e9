//! What a region's own commands read and change in its store (`harbour-entries`: access,
//! erasure, withdrawal, export, draws; see the README, "For the campaign team and the
//! data-protection officer"), and the deletes of the origin's retention task.
//!
//! Rules:
//!
//! - a command opens the store as the origin does (creating or migrating its schema), but never
//!   creates a SQLite file that is not there: a wrong path is an error, not an empty region;
//! - a campaign's entries are listed in one stable order, `stored_at_ms` then receipt id;
//! - a person's entries are found by the stored person digest (`person`), never by reading
//!   field values, so a lookup is exactly the origin's one-entry-per-person match;
//! - erasure deletes the person's rows, and with them everything derived from the entry (person
//!   digest, fields digest, idempotency key, receipt id), and writes one erasure record in the
//!   same transaction: when, region, campaign, how many; nothing of the person. SQLite deletes
//!   with `secure_delete` (freed pages are zeroed) and then truncates its write-ahead log when no
//!   reader needs it, so the erased bytes are in neither file;
//! - withdrawal sets the campaign's marketing field to `false` in the stored fields and keeps the
//!   first withdrawal's time on the row (`marketing_withdrawn_ms`); the fields digest stays the
//!   one received, so the edge's retry of the original submission still replays its receipt;
//! - retention deletes a campaign's rows at most `at_most` per statement, each statement its own
//!   transaction, so the writer waits at most one such statement.

mod entry;
mod postgres;
mod sqlite;

use super::location::Location;
use super::row::Unavailable;

pub use entry::{Erased, Erasure, StoredEntry, Visit};

/// A region's store, opened for its commands.
pub enum Records {
    Sqlite(rusqlite::Connection),
    Postgres(tokio_postgres::Client),
}

impl Records {
    /// Opens (and creates or migrates the schema of) the store at `location`.
    pub async fn open(location: &Location, region: &str) -> Result<Records, Unavailable> {
        match location {
            Location::Sqlite(path) => sqlite::open(path, region).map(Records::Sqlite),
            Location::Postgres(url) => postgres::open(url, region).await.map(Records::Postgres),
        }
    }

    /// A region other than `region` among `campaign`'s rows, if the store holds one: a store of
    /// another region, opened by mistake.
    pub async fn foreign_region(
        &mut self,
        campaign: &str,
        region: &str,
    ) -> Result<Option<String>, Unavailable> {
        match self {
            Records::Sqlite(c) => sqlite::foreign_region(c, campaign, region),
            Records::Postgres(c) => postgres::foreign_region(c, campaign, region).await,
        }
    }

    /// The entries of the person whose digest is `person`, in the stable order.
    pub async fn by_person(
        &mut self,
        campaign: &str,
        person: &str,
    ) -> Result<Vec<StoredEntry>, Unavailable> {
        match self {
            Records::Sqlite(c) => sqlite::by_person(c, campaign, person),
            Records::Postgres(c) => postgres::by_person(c, campaign, person).await,
        }
    }

    pub async fn by_receipt(
        &mut self,
        campaign: &str,
        receipt_id: &str,
    ) -> Result<Option<StoredEntry>, Unavailable> {
        match self {
            Records::Sqlite(c) => sqlite::by_receipt(c, campaign, receipt_id),
            Records::Postgres(c) => postgres::by_receipt(c, campaign, receipt_id).await,
        }
    }

    /// Deletes the person's entries and records the erasure (see the module's rules).
    pub async fn erase(
        &mut self,
        region: &str,
        campaign: &str,
        person: &str,
        now_ms: u64,
    ) -> Result<Erased, Unavailable> {
        match self {
            Records::Sqlite(c) => sqlite::erase(c, region, campaign, person, now_ms),
            Records::Postgres(c) => postgres::erase(c, region, campaign, person, now_ms).await,
        }
    }

    /// Sets marketing field `field` to false in the person's entries and records when; the
    /// number of entries.
    pub async fn withdraw(
        &mut self,
        campaign: &str,
        person: &str,
        field: &str,
        now_ms: u64,
    ) -> Result<u64, Unavailable> {
        match self {
            Records::Sqlite(c) => sqlite::withdraw(c, campaign, person, field, now_ms),
            Records::Postgres(c) => postgres::withdraw(c, campaign, person, field, now_ms).await,
        }
    }

    /// Calls `visit` with every entry of `campaign`, in the stable order, reading them a page
    /// at a time; the number of entries.
    pub async fn each(
        &mut self,
        campaign: &str,
        visit: &mut Visit<'_>,
    ) -> Result<u64, Unavailable> {
        match self {
            Records::Sqlite(c) => sqlite::each(c, campaign, visit),
            Records::Postgres(c) => postgres::each(c, campaign, visit).await,
        }
    }

    /// The erasure records of `campaign`, oldest first.
    pub async fn erasures(&mut self, campaign: &str) -> Result<Vec<Erasure>, Unavailable> {
        match self {
            Records::Sqlite(c) => sqlite::erasures(c, campaign),
            Records::Postgres(c) => postgres::erasures(c, campaign).await,
        }
    }
}
