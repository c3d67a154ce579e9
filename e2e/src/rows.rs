//! The rows the origins stored, read from the stores themselves (a region's SQLite file or its
//! PostgreSQL database). A store that cannot be read is an error, never "no rows": a test that
//! asserts something was stored nowhere must not pass because it looked nowhere.

use std::path::{Path, PathBuf};

/// Where a region's rows are: one SQLite file, or one PostgreSQL database, shared by the
/// region's primary and secondary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegionStore {
    Sqlite(PathBuf),
    Postgres(String),
}

impl RegionStore {
    /// The `--store` argument of the region's origins.
    pub fn argument(&self) -> String {
        match self {
            RegionStore::Sqlite(path) => path.display().to_string(),
            RegionStore::Postgres(url) => url.clone(),
        }
    }

    pub fn read_rows(&self) -> Result<Vec<StoredRow>, String> {
        match self {
            RegionStore::Sqlite(path) => read_rows(path),
            RegionStore::Postgres(url) => read_pg_rows(url),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredRow {
    pub receipt_id: String,
    pub region: String,
    pub idempotency_key: String,
    pub platform_country: String,
    pub declared_country: Option<String>,
    pub payload: serde_json::Value,
}

const SELECT: &str = "SELECT receipt_id, region, idempotency_key, platform_country, \
                      declared_country, payload FROM submissions ORDER BY seq";

/// The rows of a SQLite store, by number (each origin process numbers its rows in its own
/// range, so this is stored order within one process).
pub fn read_rows(db: &Path) -> Result<Vec<StoredRow>, String> {
    let fail = |e: &dyn std::fmt::Display| format!("reading {}: {e}", db.display());
    let connection =
        rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .map_err(|e| fail(&e))?;
    let mut statement = connection.prepare(SELECT).map_err(|e| fail(&e))?;
    let rows = statement
        .query_map([], |row| {
            Ok((
                row.get(0)?,
                row.get(1)?,
                row.get(2)?,
                row.get(3)?,
                row.get(4)?,
                row.get::<_, String>(5)?,
            ))
        })
        .map_err(|e| fail(&e))?;
    rows.map(|row| {
        let (receipt_id, region, idempotency_key, platform_country, declared_country, payload) =
            row.map_err(|e| fail(&e))?;
        Ok(StoredRow {
            payload: serde_json::from_str(&payload).map_err(|e| fail(&e))?,
            receipt_id,
            region,
            idempotency_key,
            platform_country,
            declared_country,
        })
    })
    .collect()
}

/// The rows of a region's PostgreSQL database, by number (as `read_rows`).
pub fn read_pg_rows(url: &str) -> Result<Vec<StoredRow>, String> {
    let fail = |e: &dyn std::fmt::Display| format!("reading the PostgreSQL store: {e}");
    let mut client = postgres::Client::connect(url, postgres::NoTls).map_err(|e| fail(&e))?;
    let select = SELECT.replace("payload FROM", "payload::text FROM");
    let rows = client.query(&select, &[]).map_err(|e| fail(&e))?;
    rows.iter()
        .map(|row| {
            Ok(StoredRow {
                receipt_id: row.try_get(0).map_err(|e| fail(&e))?,
                region: row.try_get(1).map_err(|e| fail(&e))?,
                idempotency_key: row.try_get(2).map_err(|e| fail(&e))?,
                platform_country: row.try_get(3).map_err(|e| fail(&e))?,
                declared_country: row.try_get(4).map_err(|e| fail(&e))?,
                payload: serde_json::from_str(row.try_get::<_, &str>(5).map_err(|e| fail(&e))?)
                    .map_err(|e| fail(&e))?,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("harbour-e2e-rows-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        let _ = std::fs::remove_file(&path);
        path
    }

    #[test]
    fn a_store_that_does_not_exist_is_an_error_not_no_rows() {
        let missing = scratch("missing.sqlite");
        let error = read_rows(&missing).unwrap_err();
        assert!(error.contains("missing.sqlite"), "{error}");
    }

    #[test]
    fn a_store_without_the_table_is_an_error_not_no_rows() {
        let path = scratch("empty.sqlite");
        rusqlite::Connection::open(&path)
            .unwrap()
            .execute_batch("CREATE TABLE other (x INTEGER)")
            .unwrap();
        assert!(read_rows(&path).unwrap_err().contains("submissions"));
    }

    #[test]
    fn a_row_that_does_not_read_is_an_error_and_a_good_one_reads() {
        let path = scratch("rows.sqlite");
        let connection = rusqlite::Connection::open(&path).unwrap();
        connection
            .execute_batch(
                "CREATE TABLE submissions (seq INTEGER PRIMARY KEY, receipt_id TEXT, region TEXT,
                   idempotency_key TEXT, platform_country TEXT, declared_country TEXT, payload TEXT);
                 INSERT INTO submissions VALUES (1, 'eu-1', 'eu', 'k1', 'IT', NULL, '{\"a\":1}');",
            )
            .unwrap();
        let rows = read_rows(&path).unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].payload["a"], 1);
        connection
            .execute_batch(
                "INSERT INTO submissions VALUES (2, 'eu-2', 'eu', 'k2', 'IT', NULL, 'not json');",
            )
            .unwrap();
        assert!(read_rows(&path).is_err(), "a payload that is not JSON");
        let postgres = read_pg_rows("postgres://nobody@127.0.0.1:1/none");
        assert!(postgres.is_err(), "a database that cannot be reached");
    }
}
