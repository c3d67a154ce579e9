//! The audit's view of the stores: every stored row by its idempotency key (the key the edge and
//! the origins promise to store once), and the matching of each receipt a worker gave to the row
//! its key names. A count of receipts against a count of rows would let an extra row in one
//! place cancel a missing one in another; matching cannot.

use harbour_e2e::rows::{RegionStore, StoredRow};
use std::collections::{BTreeMap, HashMap};

/// What the audit needs of one stored row.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Row {
    /// The region whose store holds it.
    pub store: String,
    /// The region the row says it is for.
    pub region: String,
    pub receipt_id: String,
    /// The entry's email field, to tell which submission's body it holds.
    pub email: Option<String>,
}

/// Every stored row by idempotency key.
#[derive(Default)]
pub struct Ledger {
    rows: HashMap<String, Vec<Row>>,
}

impl Ledger {
    /// The rows of every region's store; an unreadable store is an error.
    pub fn read(dbs: &[(String, RegionStore)]) -> Result<Ledger, String> {
        let mut ledger = Ledger::default();
        for (region, db) in dbs {
            for row in db.read_rows()? {
                ledger.add(region, &row);
            }
        }
        Ok(ledger)
    }

    /// Adds `row`, found in `store`'s store.
    pub fn add(&mut self, store: &str, row: &StoredRow) {
        self.rows
            .entry(row.idempotency_key.clone())
            .or_default()
            .push(Row {
                store: store.to_owned(),
                region: row.region.clone(),
                receipt_id: row.receipt_id.clone(),
                email: row.payload["fields"]["email"].as_str().map(str::to_owned),
            });
    }

    /// The rows stored under `key`, in every store.
    pub fn rows(&self, key: &str) -> &[Row] {
        self.rows.get(key).map_or(&[], Vec::as_slice)
    }

    /// Every key with its rows.
    pub fn iter(&self) -> impl Iterator<Item = (&String, &Vec<Row>)> {
        self.rows.iter()
    }
}

/// Receipts matched to rows.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Matched {
    /// Submissions answered 202 at least once.
    pub receipts: u64,
    /// Whose key has exactly one row, and that row's receipt is the one given.
    pub matched: u64,
    /// Whose key has no row anywhere.
    pub without_row: u64,
    /// Whose key's row has another receipt, or that got two different receipts.
    pub other_receipt: u64,
    /// Whose key has more than one row.
    pub stored_twice: u64,
}

impl Matched {
    pub fn passed(&self) -> bool {
        self.without_row == 0 && self.other_receipt == 0 && self.stored_twice == 0
    }
}

/// Matches each receipt (`(request number, receipt id)`, a request answered 202 more than once
/// listed once per answer) to the row of its key, `key_of(n)`.
pub fn match_receipts(
    receipts: &[(u64, String)],
    key_of: impl Fn(u64) -> String,
    ledger: &Ledger,
) -> Matched {
    let mut given: BTreeMap<u64, Vec<&str>> = BTreeMap::new();
    for (n, receipt) in receipts {
        let ids = given.entry(*n).or_default();
        if !ids.contains(&receipt.as_str()) {
            ids.push(receipt);
        }
    }
    let mut matched = Matched::default();
    for (n, ids) in given {
        matched.receipts += 1;
        match ledger.rows(&key_of(n)) {
            [] => matched.without_row += 1,
            [row] if ids == [row.receipt_id.as_str()] => matched.matched += 1,
            [_] => matched.other_receipt += 1,
            _ => matched.stored_twice += 1,
        }
    }
    matched
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(key: &str, receipt: &str) -> StoredRow {
        StoredRow {
            receipt_id: receipt.into(),
            region: "eu".into(),
            idempotency_key: key.into(),
            platform_country: "IT".into(),
            declared_country: None,
            payload: serde_json::json!({"fields": {"email": format!("{key}@example.org")}}),
        }
    }

    fn key(n: u64) -> String {
        format!("k{n}")
    }

    #[test]
    fn a_missing_row_is_not_cancelled_by_an_extra_one() {
        let mut ledger = Ledger::default();
        // Receipts for k1 and k2; rows for k1 and k3 (two rows, two receipts: a count agrees).
        ledger.add("eu", &row("k1", "eu-1"));
        ledger.add("eu", &row("k3", "eu-3"));
        let receipts = [(1, "eu-1".to_owned()), (2, "eu-2".to_owned())];
        let matched = match_receipts(&receipts, key, &ledger);
        assert_eq!((matched.matched, matched.without_row), (1, 1));
        assert!(!matched.passed());
    }

    #[test]
    fn a_row_with_another_receipt_or_a_second_row_fails() {
        let mut ledger = Ledger::default();
        ledger.add("eu", &row("k1", "eu-other"));
        ledger.add("eu", &row("k2", "eu-2"));
        ledger.add("ru", &row("k2", "ru-2"));
        let receipts = [(1, "eu-1".to_owned()), (2, "eu-2".to_owned())];
        let matched = match_receipts(&receipts, key, &ledger);
        assert_eq!((matched.other_receipt, matched.stored_twice), (1, 1));
        assert!(!matched.passed());
    }

    #[test]
    fn every_receipt_with_its_own_row_passes_and_a_replay_is_one_receipt() {
        let mut ledger = Ledger::default();
        ledger.add("eu", &row("k1", "eu-1"));
        ledger.add("eu", &row("k2", "eu-2"));
        let receipts = [(1, "eu-1".into()), (2, "eu-2".into()), (2, "eu-2".into())];
        let matched = match_receipts(&receipts, key, &ledger);
        assert_eq!((matched.receipts, matched.matched), (2, 2));
        assert!(matched.passed());
        let changed = [(1, "eu-1".into()), (1, "eu-9".into())];
        assert_eq!(match_receipts(&changed, key, &ledger).other_receipt, 1);
    }
}
