//! Receipt ids (`harbour_contract::receipt`: `{region}-{16 lowercase hex digits}`, the shape the
//! edge gives bots too): the row's number (`seq`) encrypted with FF1 (NIST SP 800-38G
//! format-preserving encryption, AES-256, 64 binary numerals, the region as tweak) under a key
//! the store keeps. An id says nothing about
//! how many entries exist or which came first to anyone without the key; two rows never share
//! one (a permutation of distinct numbers), so the store needs no unique index on the ids, which
//! was a random write per row; and an id leads back to its row through the row's number.
//!
//! Numbers are handed out without asking the database: each store opened (a process, usually)
//! reserves an epoch, a counter that only grows, and numbers its rows `epoch << 32 | n`. A number
//! is never used twice, even after its row is deleted, and a row that is not stored (a replay, a
//! refused batch) leaves a gap. Rows stored before (numbers below `NUMBERED_FROM`) keep the random
//! ids they were given, found through a unique index that holds only them.

use std::sync::atomic::{AtomicU64, Ordering};

use aes::cipher::{BlockEncrypt, KeyInit};
use aes::{Aes256, Block};
use harbour_contract::receipt;

pub use harbour_contract::receipt::is_id_of as is_receipt_id;

/// The first number of the first epoch: rows numbered below it got random ids before ids were
/// derived from numbers.
pub const NUMBERED_FROM: i64 = 1 << EPOCH_SHIFT;
const EPOCH_SHIFT: u32 = 32;
/// The last epoch whose numbers all fit the databases' signed 64-bit integers.
pub const MAX_EPOCH: u64 = (1 << 31) - 1;
/// Bytes of a store's key (AES-256).
pub const KEY_BYTES: usize = 32;
/// How many ids a store tries for one row before giving up: a row is tried again with a fresh
/// number only when its insert was skipped and neither its key nor its person was found after
/// (the row holding them was deleted in between).
pub const MAX_ID_TRIES: usize = 4;

/// No id can be made: no random bytes for a key, a key of the wrong length, or an epoch's
/// numbers used up. The store is unavailable.
#[derive(Debug)]
pub struct NoId(pub String);

/// A new store key from the operating system's CSPRNG.
pub fn new_key() -> Result<[u8; KEY_BYTES], NoId> {
    let mut key = [0u8; KEY_BYTES];
    getrandom::fill(&mut key).map_err(|e| NoId(format!("no randomness for a key: {e}")))?;
    Ok(key)
}

/// A store's ids: its key, and the numbers of the epoch it reserved.
pub struct ReceiptIds {
    region: String,
    cipher: Ff1,
    next: AtomicU64,
    end: u64,
}

impl ReceiptIds {
    /// `epoch` must be one no other store of the database was given, from 1 to `MAX_EPOCH`.
    pub fn new(region: &str, key: &[u8], epoch: u64) -> Result<ReceiptIds, NoId> {
        let ids = ReceiptIds::reader(region, key)?;
        if !(1..=MAX_EPOCH).contains(&epoch) {
            return Err(NoId(format!("receipt epoch {epoch} is out of range")));
        }
        let first = epoch << EPOCH_SHIFT;
        Ok(ReceiptIds {
            next: AtomicU64::new(first),
            end: first + (1 << EPOCH_SHIFT),
            ..ids
        })
    }

    /// For reading only: finds rows by id (`seq_of`), numbers nothing.
    pub fn reader(region: &str, key: &[u8]) -> Result<ReceiptIds, NoId> {
        if key.len() != KEY_BYTES {
            return Err(NoId(format!(
                "the receipt key has {} bytes, not {KEY_BYTES}",
                key.len()
            )));
        }
        let cipher = Ff1::new(key, region.as_bytes())
            .ok_or_else(|| NoId(format!("region {region:?} is too long for a receipt tweak")))?;
        Ok(ReceiptIds {
            region: region.to_owned(),
            cipher,
            next: AtomicU64::new(0),
            end: 0,
        })
    }

    /// A fresh number and its id.
    pub fn next(&self) -> Result<(i64, String), NoId> {
        let seq = self.next.fetch_add(1, Ordering::Relaxed);
        if seq >= self.end {
            // Four billion rows from one process (or a reader): the next start reserves anew.
            return Err(NoId(
                "this store's receipt numbers are used up; restart it".into(),
            ));
        }
        let id = self.id_of(seq)?;
        Ok((
            i64::try_from(seq).map_err(|_| NoId("receipt number out of range".into()))?,
            id,
        ))
    }

    fn id_of(&self, seq: u64) -> Result<String, NoId> {
        Ok(receipt::id(&self.region, self.cipher.encrypt(seq)))
    }

    /// The number of the row that `id` was derived for, if `id` is one of this region's derived
    /// ids (an id given before ids were derived decrypts to a number below `NUMBERED_FROM`, or
    /// to another row's: the caller compares the row's stored id).
    pub fn seq_of(&self, id: &str) -> Option<i64> {
        if !is_receipt_id(&self.region, id) {
            return None;
        }
        let hex = id.get(self.region.len() + 1..)?;
        let value = u64::from_str_radix(hex, 16).ok()?;
        i64::try_from(self.cipher.decrypt(value))
            .ok()
            .filter(|seq| *seq >= NUMBERED_FROM)
    }
}

/// FF1 for one case: radix 2, 64 numerals (a `u64`, most significant bit first), one tweak.
/// The general form (the `fpe` crate, this module's test oracle) spends about 8 µs a number on
/// numeral strings and big integers; here a round is one AES block (the PRF's first block,
/// `[P]`, is the same every round and is encrypted once), about 0.3 µs a number.
struct Ff1 {
    aes: Aes256,
    /// CIPH_K(P): the CBC-MAC's state after the constant first block.
    after_p: Block,
    /// T || [0]^((-t-b-1) mod 16), the start of every round's Q (b = 4 bytes for 32 numerals).
    q_head: Vec<u8>,
}

impl Ff1 {
    const ROUNDS: u8 = 10;

    /// `None` for a tweak longer than 11 bytes (Q would take a second block; regions are short).
    fn new(key: &[u8], tweak: &[u8]) -> Option<Ff1> {
        let aes = Aes256::new_from_slice(key).ok()?;
        if tweak.len() > 11 {
            return None;
        }
        let t = u32::try_from(tweak.len()).ok()?.to_be_bytes();
        // P = [1] [2] [1] [radix = 2]^3 [10] [u mod 256 = 32] [n = 64]^4 [t]^4.
        let mut after_p = Block::from([
            1, 2, 1, 0, 0, 2, 10, 32, 0, 0, 0, 64, t[0], t[1], t[2], t[3],
        ]);
        aes.encrypt_block(&mut after_p);
        let mut q_head = tweak.to_vec();
        q_head.resize(16 - 1 - 4, 0);
        Some(Ff1 {
            aes,
            after_p,
            q_head,
        })
    }

    /// y = NUM(S) of round `i` with B = `b`: S is the first 8 bytes of PRF(P || Q).
    fn round(&self, i: u8, b: u32) -> u32 {
        let mut q = [0u8; 16];
        q[..11].copy_from_slice(&self.q_head);
        q[11] = i;
        q[12..].copy_from_slice(&b.to_be_bytes());
        let mut r = self.after_p;
        for (r, q) in r.iter_mut().zip(q) {
            *r ^= q;
        }
        self.aes.encrypt_block(&mut r);
        // (A + y) mod 2^32 needs only y mod 2^32: the last 4 of S's 8 bytes.
        u32::from_be_bytes([r[4], r[5], r[6], r[7]])
    }

    fn encrypt(&self, x: u64) -> u64 {
        let (mut a, mut b) = ((x >> 32) as u32, x as u32);
        for i in 0..Self::ROUNDS {
            let c = a.wrapping_add(self.round(i, b));
            (a, b) = (b, c);
        }
        (u64::from(a) << 32) | u64::from(b)
    }

    fn decrypt(&self, x: u64) -> u64 {
        let (mut a, mut b) = ((x >> 32) as u32, x as u32);
        for i in (0..Self::ROUNDS).rev() {
            let c = b.wrapping_sub(self.round(i, a));
            (a, b) = (c, a);
        }
        (u64::from(a) << 32) | u64::from(b)
    }
}

/// The number `id` was derived from under a store's `key`, if it is a derived id (of the region
/// it names). An id given before ids were derived may decrypt to another row's number: callers
/// compare the row's stored id.
pub fn derived_seq(key: &[u8], id: &str) -> Option<i64> {
    let (region, _) = id.rsplit_once('-')?;
    ReceiptIds::reader(region, key).ok()?.seq_of(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The `fpe` crate's FF1 on the same numbers: numerals in its binary strings go least
    /// significant bit of each byte first, so the number's bits are reversed to put its most
    /// significant bit first.
    fn oracle(key: &[u8], tweak: &[u8], x: u64, decrypt: bool) -> u64 {
        use fpe::ff1::{BinaryNumeralString, FF1};
        let ff1 = FF1::<Aes256>::new(key, 2).unwrap();
        let numerals = BinaryNumeralString::from_bytes_le(&x.reverse_bits().to_le_bytes());
        let out = if decrypt {
            ff1.decrypt(tweak, &numerals)
        } else {
            ff1.encrypt(tweak, &numerals)
        };
        let bytes: [u8; 8] = out.unwrap().to_bytes_le().try_into().unwrap();
        u64::from_le_bytes(bytes).reverse_bits()
    }

    #[test]
    fn ff1_agrees_with_the_general_implementation() {
        let key: Vec<u8> = (0..32).map(|i| i * 7 + 3).collect();
        let mut x = 0x0123_4567_89ab_cdef_u64;
        for tweak in [&b""[..], b"eu", b"global", b"abcdefghijk"] {
            let ff1 = Ff1::new(&key, tweak).unwrap();
            for n in [0, 1, NUMBERED_FROM as u64, u64::MAX] {
                assert_eq!(ff1.encrypt(n), oracle(&key, tweak, n, false), "{n}");
            }
            for _ in 0..200 {
                x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
                let encrypted = ff1.encrypt(x);
                assert_eq!(encrypted, oracle(&key, tweak, x, false), "{x}");
                assert_eq!(ff1.decrypt(x), oracle(&key, tweak, x, true), "{x}");
                assert_eq!(ff1.decrypt(encrypted), x);
            }
        }
        assert!(Ff1::new(&key, b"abcdefghijkl").is_none());
    }

    #[test]
    fn ids_have_the_decoy_shape_do_not_repeat_and_lead_back_to_their_number() {
        let ids = ReceiptIds::new("eu", &[7; KEY_BYTES], 1).unwrap();
        let drawn: Vec<(i64, String)> = (0..1000).map(|_| ids.next().unwrap()).collect();
        for (n, (seq, id)) in drawn.iter().enumerate() {
            assert_eq!(*seq, NUMBERED_FROM + n as i64);
            assert!(is_receipt_id("eu", id), "{id}");
            assert_eq!(ids.seq_of(id), Some(*seq));
        }
        let distinct: std::collections::BTreeSet<_> = drawn.iter().map(|(_, id)| id).collect();
        assert_eq!(distinct.len(), drawn.len());
        // Consecutive numbers give ids with nothing in common a reader could order by.
        let first_digits: std::collections::BTreeSet<_> =
            drawn.iter().map(|(_, id)| &id[3..4]).collect();
        assert_eq!(first_digits.len(), 16);
        assert_eq!(ids.seq_of("eu-0000000001"), None);
        assert_eq!(ids.seq_of(&drawn[0].1.replacen("eu", "cn", 1)), None);
    }

    #[test]
    fn ids_depend_on_the_key_and_epochs_do_not_overlap() {
        let a = ReceiptIds::new("eu", &[7; KEY_BYTES], 1).unwrap();
        let b = ReceiptIds::new("eu", &[8; KEY_BYTES], 1).unwrap();
        let (seq_a, id_a) = a.next().unwrap();
        let (seq_b, id_b) = b.next().unwrap();
        assert_eq!(seq_a, seq_b);
        assert_ne!(id_a, id_b);
        // Another key reads the id as some other number, or as none of the derived ones.
        assert_ne!(b.seq_of(&id_a), Some(seq_a));
        let second = ReceiptIds::new("eu", &[7; KEY_BYTES], 2).unwrap();
        assert_eq!(second.next().unwrap().0, 2 * NUMBERED_FROM);
        let reader = ReceiptIds::reader("eu", &[7; KEY_BYTES]).unwrap();
        assert_eq!(reader.seq_of(&id_a), Some(seq_a));
        assert_eq!(derived_seq(&[7; KEY_BYTES], &id_a), Some(seq_a));
        assert_eq!(derived_seq(&[7; KEY_BYTES], "eu"), None);
        assert!(reader.next().is_err(), "a reader numbers nothing");
    }

    #[test]
    fn bad_keys_and_epochs_are_refused() {
        assert!(ReceiptIds::reader("eu", &[7; 16]).is_err());
        assert!(ReceiptIds::new("eu", &[7; KEY_BYTES], 0).is_err());
        assert!(ReceiptIds::new("eu", &[7; KEY_BYTES], MAX_EPOCH + 1).is_err());
        let last = ReceiptIds::new("eu", &[7; KEY_BYTES], MAX_EPOCH).unwrap();
        assert!(last.next().unwrap().0 > 0);
        assert_ne!(new_key().unwrap(), new_key().unwrap());
    }
}
