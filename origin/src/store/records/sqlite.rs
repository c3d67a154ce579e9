//! The records' statements on SQLite (see the parent module's rules).

use std::path::Path;

use rusqlite::{params, Connection, OptionalExtension, Row, TransactionBehavior};

use super::entry::{fields_of, to_i64, to_u64, Erased, Erasure, StoredEntry, Visit, COLUMNS};
use crate::receipt::{derived_seq, NUMBERED_FROM};
use crate::store::sqlite::{receipt_key, Sqlite};
use crate::store::{Durability, Unavailable};

pub(super) fn open(path: &Path, region: &str) -> Result<Connection, Unavailable> {
    // `Connection::open` would create an empty file: a typo must not look like an empty region.
    if !path.is_file() {
        return Err(Unavailable(format!(
            "no SQLite store at {}",
            path.display()
        )));
    }
    let connection = Sqlite::open(path, region, Durability::Full)?.into_connection();
    // Deleted rows' bytes are overwritten with zeros, not left in free pages.
    connection.pragma_update(None, "secure_delete", "ON")?;
    Ok(connection)
}

fn entry(row: &Row) -> rusqlite::Result<(StoredEntry, String)> {
    let locale: Option<String> = row.get(6)?;
    let version: Option<String> = row.get(7)?;
    let entry = StoredEntry {
        receipt_id: row.get(0)?,
        region: row.get(1)?,
        campaign: row.get(2)?,
        stored_at_ms: to_u64(row.get(3)?),
        platform_country: row.get(4)?,
        declared_country: row.get(5)?,
        notice: locale.zip(version),
        marketing_withdrawn_ms: row.get::<_, Option<i64>>(8)?.map(to_u64),
        person_digest: row.get(9)?,
        fields: serde_json::Value::Null,
    };
    Ok((entry, row.get(10)?))
}

/// The entries a query with `params` selects, in its order.
fn entries(
    connection: &Connection,
    condition: &str,
    params: &[&dyn rusqlite::ToSql],
) -> Result<Vec<StoredEntry>, Unavailable> {
    let sql = format!(
        "SELECT {COLUMNS}, payload FROM submissions WHERE {condition}
         ORDER BY stored_at_ms, receipt_id"
    );
    let mut statement = connection.prepare(&sql)?;
    let mut rows = statement.query(params)?;
    let mut out = Vec::new();
    while let Some(row) = rows.next()? {
        let (mut entry, payload) = entry(row)?;
        entry.fields = fields_of(&payload)?;
        out.push(entry);
    }
    Ok(out)
}

pub(super) fn foreign_region(
    connection: &Connection,
    campaign: &str,
    region: &str,
) -> Result<Option<String>, Unavailable> {
    Ok(connection
        .query_row(
            "SELECT region FROM submissions WHERE campaign = ?1 AND region <> ?2 LIMIT 1",
            params![campaign, region],
            |r| r.get(0),
        )
        .optional()?)
}

pub(super) fn by_person(
    connection: &Connection,
    campaign: &str,
    person: &str,
) -> Result<Vec<StoredEntry>, Unavailable> {
    entries(
        connection,
        "campaign = ?1 AND person_digest = ?2",
        &[&campaign, &person],
    )
}

/// A derived id leads to its row's number; an id given before ids were derived is found through
/// the index that holds only those rows.
pub(super) fn by_receipt(
    connection: &Connection,
    campaign: &str,
    receipt_id: &str,
) -> Result<Option<StoredEntry>, Unavailable> {
    if let Some(seq) = derived_seq(&receipt_key(connection)?, receipt_id) {
        let found = entries(
            connection,
            "seq = ?3 AND campaign = ?1 AND receipt_id = ?2",
            &[&campaign, &receipt_id, &seq],
        )?;
        if let Some(entry) = found.into_iter().next() {
            return Ok(Some(entry));
        }
    }
    let found = entries(
        connection,
        &format!("receipt_id = ?2 AND seq < {NUMBERED_FROM} AND campaign = ?1"),
        &[&campaign, &receipt_id],
    )?;
    Ok(found.into_iter().next())
}

pub(super) fn erase(
    connection: &mut Connection,
    region: &str,
    campaign: &str,
    person: &str,
    now_ms: u64,
) -> Result<Erased, Unavailable> {
    let tx = connection.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let deleted = tx.execute(
        "DELETE FROM submissions WHERE campaign = ?1 AND person_digest = ?2",
        params![campaign, person],
    )?;
    let entries = u64::try_from(deleted).unwrap_or(u64::MAX);
    tx.execute(
        "INSERT INTO erasures (at_ms, region, campaign, entries) VALUES (?1, ?2, ?3, ?4)",
        params![to_i64(now_ms), region, campaign, to_i64(entries)],
    )?;
    tx.commit()?;
    // The log still holds the pages as they were before the delete: copy what it has into the
    // file and empty it, which SQLite does only once no reader needs an older state.
    let busy: i64 = connection.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| r.get(0))?;
    Ok(Erased {
        entries,
        log_truncated: Some(busy == 0),
    })
}

pub(super) fn withdraw(
    connection: &Connection,
    campaign: &str,
    person: &str,
    field: &str,
    now_ms: u64,
) -> Result<u64, Unavailable> {
    // Field names are plain (a-z 0-9 - _, the policy checks), so quoting them in the path is
    // enough. The first withdrawal's time stays.
    let updated = connection.execute(
        "UPDATE submissions
            SET payload = json_set(payload, '$.fields.\"' || ?3 || '\"', json('false')),
                marketing_withdrawn_ms = COALESCE(marketing_withdrawn_ms, ?4)
            WHERE campaign = ?1 AND person_digest = ?2",
        params![campaign, person, field, to_i64(now_ms)],
    )?;
    Ok(u64::try_from(updated).unwrap_or(u64::MAX))
}

pub(super) fn each(
    connection: &Connection,
    campaign: &str,
    visit: &mut Visit<'_>,
) -> Result<u64, Unavailable> {
    let sql = format!(
        "SELECT {COLUMNS}, payload FROM submissions WHERE campaign = ?1
         ORDER BY stored_at_ms, receipt_id"
    );
    let mut statement = connection.prepare(&sql)?;
    let mut rows = statement.query(params![campaign])?;
    let mut count = 0;
    // SQLite steps through the rows: nothing but the current one is held.
    while let Some(row) = rows.next()? {
        let (mut entry, payload) = entry(row)?;
        entry.fields = fields_of(&payload)?;
        visit(entry)?;
        count += 1;
    }
    Ok(count)
}

pub(super) fn erasures(
    connection: &Connection,
    campaign: &str,
) -> Result<Vec<Erasure>, Unavailable> {
    let mut statement = connection.prepare(
        "SELECT at_ms, region, campaign, entries FROM erasures WHERE campaign = ?1 ORDER BY seq",
    )?;
    let rows = statement.query_map(params![campaign], |r| {
        Ok(Erasure {
            at_ms: to_u64(r.get(0)?),
            region: r.get(1)?,
            campaign: r.get(2)?,
            entries: to_u64(r.get(3)?),
        })
    })?;
    Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
}
