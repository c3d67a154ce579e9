//! SQLite storage, one file per region, shared by that region's primary and secondary.
//!
//! WAL mode lets both processes write the same file safely; `(campaign, idempotency_key)` is
//! unique, so a retry that reaches the other process after the first one stored the row finds
//! it instead of adding a second.

use std::path::Path;
use std::time::Duration;

use rusqlite::{params, Connection, OptionalExtension};

use crate::verify::Verified;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipt {
    pub id: String,
    pub region: String,
    pub stored_at_ms: u64,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Stored {
    New(Receipt),
    /// The key was seen before with the same fields: the first receipt.
    Replay(Receipt),
    /// The key was seen before with different fields.
    Conflict,
}

pub struct Store {
    connection: Connection,
    region: String,
}

/// `synchronous` setting: FULL survives power loss at the cost of an fsync per commit; NORMAL
/// (with WAL) survives a crash of the process, which is what the tests and benchmarks kill.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Durability {
    Full,
    Normal,
}

impl Store {
    pub fn open(path: &Path, region: &str, durability: Durability) -> rusqlite::Result<Store> {
        let connection = Connection::open(path)?;
        Store::prepare(connection, region, durability)
    }

    pub fn in_memory(region: &str) -> rusqlite::Result<Store> {
        Store::prepare(Connection::open_in_memory()?, region, Durability::Normal)
    }

    fn prepare(
        connection: Connection,
        region: &str,
        durability: Durability,
    ) -> rusqlite::Result<Store> {
        connection.busy_timeout(Duration::from_secs(5))?;
        connection.pragma_update(None, "journal_mode", "WAL")?;
        connection.pragma_update(
            None,
            "synchronous",
            match durability {
                Durability::Full => "FULL",
                Durability::Normal => "NORMAL",
            },
        )?;
        connection.execute_batch(
            "CREATE TABLE IF NOT EXISTS submissions (
                seq INTEGER PRIMARY KEY AUTOINCREMENT,
                receipt_id TEXT NOT NULL UNIQUE,
                region TEXT NOT NULL,
                campaign TEXT NOT NULL,
                idempotency_key TEXT NOT NULL,
                fields_sha256 TEXT NOT NULL,
                platform_country TEXT NOT NULL,
                declared_country TEXT,
                payload TEXT NOT NULL,
                stored_at_ms INTEGER NOT NULL,
                UNIQUE (campaign, idempotency_key)
            );",
        )?;
        Ok(Store {
            connection,
            region: region.to_owned(),
        })
    }

    pub fn store(&mut self, submission: &Verified, now_ms: u64) -> rusqlite::Result<Stored> {
        let tx = self
            .connection
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let existing = tx
            .query_row(
                "SELECT receipt_id, fields_sha256, stored_at_ms FROM submissions
                 WHERE campaign = ?1 AND idempotency_key = ?2",
                params![submission.campaign, submission.idempotency_key],
                |row| {
                    Ok((
                        row.get::<_, String>(0)?,
                        row.get::<_, String>(1)?,
                        row.get::<_, i64>(2)?,
                    ))
                },
            )
            .optional()?;
        if let Some((id, fields_sha256, stored_at_ms)) = existing {
            tx.commit()?;
            if fields_sha256 != submission.fields_sha256 {
                return Ok(Stored::Conflict);
            }
            return Ok(Stored::Replay(Receipt {
                id,
                region: self.region.clone(),
                stored_at_ms: u64::try_from(stored_at_ms).unwrap_or(0),
            }));
        }
        let next: i64 = tx.query_row(
            "SELECT COALESCE(MAX(seq), 0) + 1 FROM submissions",
            [],
            |row| row.get(0),
        )?;
        let id = format!("{}-{:010}", self.region, next);
        tx.execute(
            "INSERT INTO submissions (receipt_id, region, campaign, idempotency_key, fields_sha256,
                platform_country, declared_country, payload, stored_at_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            params![
                id,
                self.region,
                submission.campaign,
                submission.idempotency_key,
                submission.fields_sha256,
                submission.platform_country,
                submission.declared_country,
                submission.payload.to_string(),
                i64::try_from(now_ms).unwrap_or(i64::MAX),
            ],
        )?;
        tx.commit()?;
        Ok(Stored::New(Receipt {
            id,
            region: self.region.clone(),
            stored_at_ms: now_ms,
        }))
    }

    pub fn count(&self) -> rusqlite::Result<u64> {
        self.connection
            .query_row("SELECT COUNT(*) FROM submissions", [], |row| {
                row.get::<_, i64>(0)
            })
            .map(|n| u64::try_from(n).unwrap_or(0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn submission(key: &str, fields_sha256: &str) -> Verified {
        Verified {
            campaign: "c1".into(),
            idempotency_key: key.into(),
            fields_sha256: fields_sha256.into(),
            platform_country: "IT".into(),
            declared_country: None,
            payload: serde_json::json!({"fields": {}}),
        }
    }

    #[test]
    fn stores_once_and_replays_the_first_receipt() {
        let mut store = Store::in_memory("eu").unwrap();
        let first = store.store(&submission("k1", "h1"), 10).unwrap();
        let Stored::New(receipt) = first else {
            panic!("{first:?}")
        };
        assert_eq!(receipt.id, "eu-0000000001");
        assert_eq!(
            store.store(&submission("k1", "h1"), 20).unwrap(),
            Stored::Replay(receipt)
        );
        assert_eq!(
            store.store(&submission("k1", "other"), 30).unwrap(),
            Stored::Conflict
        );
        assert!(matches!(
            store.store(&submission("k2", "h1"), 40).unwrap(),
            Stored::New(_)
        ));
        assert_eq!(store.count().unwrap(), 2);
    }
}
