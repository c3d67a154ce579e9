//! Idempotency keys of load generators. The campaign page sends a random UUID
//! (`crypto.randomUUID()`), so a store's index of keys takes each new key at a random place: a
//! page write per row once the index outgrows memory. A generator's keys must do the same, or
//! it measures a store that appends; and it must read the request number back from a stored
//! row. `numbered` puts a mixed prefix first (where an index orders it) and the number after.

/// The key of request `n` of run `run`: `{16 hex digits}-bench-{run}-{n, 12 digits}`, as long
/// as a UUID.
pub fn numbered(run: &str, n: u64) -> String {
    format!("{:016x}-bench-{run}-{n:012}", spread(run, n))
}

/// The request number of a key that `numbered(run, …)` made.
pub fn number_of(run: &str, key: &str) -> Option<u64> {
    let (prefix, rest) = key.split_once('-')?;
    let n: u64 = rest
        .strip_prefix("bench-")?
        .strip_prefix(run)?
        .strip_prefix('-')?
        .parse()
        .ok()?;
    (prefix == format!("{:016x}", spread(run, n))).then_some(n)
}

/// SplitMix64's finaliser of `n` and the run's bytes: consecutive requests land far apart.
fn spread(run: &str, n: u64) -> u64 {
    let seed = run.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    });
    let mut z = n.wrapping_add(seed).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbered_keys_read_back_and_spread_like_random_ones() {
        let keys: Vec<String> = (0..256).map(|n| numbered("2", n)).collect();
        for (n, key) in keys.iter().enumerate() {
            assert_eq!(number_of("2", key), Some(n as u64), "{key}");
            assert!((16..=64).contains(&key.len()), "{key}");
            assert!(key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'));
        }
        assert_eq!(number_of("3", &keys[5]), None);
        assert_eq!(number_of("2", &keys[5].replacen('0', "1", 1)), None);
        // Sorted as an index sorts them, consecutive requests are scattered.
        let mut sorted = keys.clone();
        sorted.sort();
        let in_order = sorted
            .windows(2)
            .filter(|w| number_of("2", &w[0]) < number_of("2", &w[1]));
        assert!((64..192).contains(&in_order.count()));
    }
}
