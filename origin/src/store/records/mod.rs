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

mod postgres;
mod sqlite;

use serde_json::{json, Value};

use super::{Location, Unavailable};

/// An entry as stored, as the commands show it.
#[derive(Clone, Debug, PartialEq)]
pub struct StoredEntry {
    pub receipt_id: String,
    pub region: String,
    pub campaign: String,
    pub stored_at_ms: u64,
    pub platform_country: String,
    pub declared_country: Option<String>,
    /// `(locale, version)` of the notice the visitor was shown.
    pub notice: Option<(String, String)>,
    /// When the visitor withdrew their marketing consent, if they did.
    pub marketing_withdrawn_ms: Option<u64>,
    /// The keyed person digest; never printed (it is the region's key's, and says nothing to
    /// the person).
    pub person_digest: Option<String>,
    /// The stored `fields` object.
    pub fields: Value,
}

impl StoredEntry {
    /// The entry as the commands print it: everything stored of the person but the digests.
    pub fn to_json(&self) -> Value {
        json!({
            "receipt_id": self.receipt_id,
            "region": self.region,
            "campaign": self.campaign,
            "stored_at_ms": self.stored_at_ms,
            "platform_country": self.platform_country,
            "declared_country": self.declared_country,
            "notice": self.notice.as_ref().map(|(locale, version)| {
                json!({"locale": locale, "version": version})
            }),
            "marketing_withdrawn_ms": self.marketing_withdrawn_ms,
            "fields": self.fields,
        })
    }
}

/// The record an erasure leaves: no personal data.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Erasure {
    pub at_ms: u64,
    pub region: String,
    pub campaign: String,
    pub entries: u64,
}

/// What an erasure did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Erased {
    pub entries: u64,
    /// SQLite: whether the write-ahead log was truncated (no copy of the erased pages left in
    /// it); `None` for PostgreSQL.
    pub log_truncated: Option<bool>,
}

/// A region's store, opened for its commands.
pub enum Records {
    Sqlite(rusqlite::Connection),
    Postgres(tokio_postgres::Client),
}

/// What `Records::each` calls with every entry; an error stops the listing.
pub type Visit<'a> = dyn FnMut(StoredEntry) -> Result<(), Unavailable> + 'a;

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

/// Deletes at most `at_most` rows of `campaign` in one statement (retention); how many.
pub fn delete_campaign_rows_sqlite(
    connection: &rusqlite::Connection,
    campaign: &str,
    at_most: usize,
) -> Result<u64, Unavailable> {
    sqlite::delete_campaign_rows(connection, campaign, at_most)
}

/// Deletes at most `at_most` rows of `campaign` in one statement (retention); how many.
pub async fn delete_campaign_rows_postgres(
    client: &tokio_postgres::Client,
    campaign: &str,
    at_most: usize,
) -> Result<u64, Unavailable> {
    postgres::delete_campaign_rows(client, campaign, at_most).await
}

/// The columns every listing reads, in `StoredEntry`'s order (the payload last).
const COLUMNS: &str = "receipt_id, region, campaign, stored_at_ms, platform_country,
    declared_country, notice_locale, notice_version, marketing_withdrawn_ms, person_digest";

/// The `fields` object of a stored payload (`null` if the payload has none).
fn fields_of(payload: &str) -> Result<Value, Unavailable> {
    let payload: Value = serde_json::from_str(payload)
        .map_err(|e| Unavailable(format!("a stored payload is not JSON: {e}")))?;
    Ok(payload.get("fields").cloned().unwrap_or(Value::Null))
}

fn to_u64(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

fn to_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}
