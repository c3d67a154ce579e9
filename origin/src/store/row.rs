//! What every store reads and answers, apart from the stores themselves (which `store` chooses
//! between): one submission's row, how it was stored, and a store that cannot answer.

use crate::verify::Verified;

pub use harbour_contract::response::Receipt;

#[derive(Debug, PartialEq, Eq)]
pub enum Stored {
    New(Receipt),
    /// The key was seen before with the same fields: the first receipt.
    Replay(Receipt),
    /// The key was seen before with different fields.
    Conflict,
    /// Another key already holds an entry from the same person in this campaign.
    AlreadyEntered,
}

/// The store could not answer (database down, disk full, pool exhausted): retry later.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unavailable(pub String);

impl From<crate::receipt::NoId> for Unavailable {
    fn from(failed: crate::receipt::NoId) -> Unavailable {
        Unavailable(failed.0)
    }
}

impl std::fmt::Display for Unavailable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// What is written for one submission.
#[derive(Debug, Clone, PartialEq)]
pub struct Row<'a> {
    pub submission: &'a Verified,
    /// Keyed digest of the normalised values that identify a person (`person::digest`), for
    /// campaigns with `one_entry_per`.
    pub person: Option<&'a str>,
    pub now_ms: u64,
}

/// SQLite's `synchronous` setting: FULL survives power loss at the cost of an fsync per commit;
/// NORMAL (with WAL) survives a crash of the process but may lose the last commits on power
/// loss, so a receipt may already have been given for a row that is gone.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Durability {
    Full,
    Normal,
}
