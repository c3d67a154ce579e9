//! A region's records as the commands read them, and the pieces both stores' statements share.

use serde_json::{json, Value};

use crate::store::row::Unavailable;

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

/// What `Records::each` calls with every entry; an error stops the listing.
pub type Visit<'a> = dyn FnMut(StoredEntry) -> Result<(), Unavailable> + 'a;

/// The columns every listing reads, in `StoredEntry`'s order (the payload last).
pub(super) const COLUMNS: &str = "receipt_id, region, campaign, stored_at_ms, platform_country,
    declared_country, notice_locale, notice_version, marketing_withdrawn_ms, person_digest";

/// The `fields` object of a stored payload (`null` if the payload has none).
pub(super) fn fields_of(payload: &str) -> Result<Value, Unavailable> {
    let payload: Value = serde_json::from_str(payload)
        .map_err(|e| Unavailable(format!("a stored payload is not JSON: {e}")))?;
    Ok(payload.get("fields").cloned().unwrap_or(Value::Null))
}

pub(super) fn to_u64(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

pub(super) fn to_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}
