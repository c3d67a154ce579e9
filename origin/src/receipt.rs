//! Receipt ids (`harbour_contract::receipt`: `{region}-{16 lowercase hex digits}`, the shape the
//! edge gives bots too) from the operating system's CSPRNG: an id says nothing about how many
//! entries exist or which came first. Uniqueness is the store's: the column is unique, and
//! a collision (one in 2^64 per pair) is retried with a fresh id.

use harbour_contract::receipt;

/// How many fresh ids a store tries before giving up (a collision is already a 2^-64 event).
pub const MAX_ID_TRIES: usize = 4;

/// The operating system gave no random bytes: no id can be made (the store is unavailable).
#[derive(Debug)]
pub struct NoRandomness(pub String);

pub fn new_id(region: &str) -> Result<String, NoRandomness> {
    let mut bytes = [0u8; 8];
    getrandom::fill(&mut bytes).map_err(|e| NoRandomness(format!("no randomness: {e}")))?;
    Ok(receipt::id(region, u64::from_le_bytes(bytes)))
}

pub use harbour_contract::receipt::is_id_of as is_receipt_id;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_have_the_decoy_shape_and_do_not_repeat() {
        let ids: Vec<String> = (0..1000).map(|_| new_id("eu").unwrap()).collect();
        for id in &ids {
            assert!(is_receipt_id("eu", id), "{id}");
            assert_eq!(id.len(), receipt::id("eu", 0).len());
        }
        let distinct: std::collections::BTreeSet<_> = ids.iter().collect();
        assert_eq!(distinct.len(), ids.len());
        assert!(!is_receipt_id("eu", "eu-0000000001"));
        assert!(!is_receipt_id("eu", "cn-0123456789abcdef"));
        assert!(!is_receipt_id("eu", "eu-0123456789ABCDEF"));
    }
}
