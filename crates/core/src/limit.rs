//! Rate limits as values: the generic cell rate algorithm (GCRA), with time passed in.
//!
//! A `Quota` admits `burst` requests at once and `burst` per `window_ms` sustained. The state per
//! key is one number, the theoretical arrival time (TAT). To stay exact for any window and burst,
//! time is counted in units of `1/burst` ms, so the emission interval is exactly `window_ms` units
//! and no rounding creeps in. A refusal carries the exact wait, which becomes `Retry-After`.
//! The clock is an argument: std's clock panics on wasm32, and tests need a fake clock.

use std::collections::HashMap;
use std::hash::{BuildHasher, DefaultHasher, Hash, Hasher};
use std::net::IpAddr;

use harbour_policy::quota::Quota;

/// GCRA time for `quota`: `ms` in units of `1/burst` ms.
fn units(quota: &Quota, ms: u64) -> u128 {
    u128::from(ms) * u128::from(quota.burst())
}

/// The most a key may be "ahead" of now: a full burst of emission intervals.
fn tolerance(quota: &Quota) -> u128 {
    u128::from(quota.window_ms()) * u128::from(quota.burst())
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    Admit {
        /// Requests that could still be admitted right now.
        remaining: u32,
        /// Until the bucket is full again.
        reset_ms: u64,
    },
    Refuse {
        /// The exact wait until one more request would be admitted.
        retry_after_ms: u64,
    },
}

impl Decision {
    pub fn admitted(&self) -> bool {
        matches!(self, Decision::Admit { .. })
    }
}

fn ceil_div(numerator: u128, denominator: u128) -> u64 {
    u64::try_from(numerator.div_ceil(denominator)).unwrap_or(u64::MAX)
}

/// A key's GCRA state: its theoretical arrival time, in the units of the quota that made it.
/// Opaque: only this module reads or makes one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tat(u128);

/// A decision not yet applied: commit `next` to admit, or drop it to leave the state as it was.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Check {
    pub decision: Decision,
    next: Option<Tat>,
    /// When the state committed by `next` carries no information any more.
    expires_ms: u64,
}

impl Check {
    pub fn admitted(&self) -> bool {
        self.decision.admitted()
    }
}

/// The generic cell rate algorithm for one request against a key's state.
pub fn gcra(quota: &Quota, tat: Option<Tat>, now_ms: u64) -> Check {
    let now = units(quota, now_ms);
    let burst = u128::from(quota.burst());
    let interval = u128::from(quota.window_ms());
    let next_tat = tat.map_or(now, |Tat(t)| t).max(now) + interval;
    let ahead = next_tat - now;
    if ahead > tolerance(quota) {
        let retry_after_ms = ceil_div(ahead - tolerance(quota), burst);
        return Check {
            decision: Decision::Refuse { retry_after_ms },
            next: None,
            expires_ms: now_ms,
        };
    }
    let spare = tolerance(quota) - ahead;
    let remaining = u32::try_from(spare / interval).unwrap_or(u32::MAX);
    let reset_ms = ceil_div(ahead, burst);
    Check {
        decision: Decision::Admit {
            remaining,
            reset_ms,
        },
        next: Some(Tat(next_tat)),
        expires_ms: now_ms.saturating_add(reset_ms),
    }
}

/// Gives back one request admitted earlier: the TAT moves back one emission interval, never
/// below now (a key cannot bank requests it did not use). Used when a request admitted by this
/// layer is refused by a later one, so that a refused request costs nothing.
pub fn refund(quota: &Quota, tat: Tat, now_ms: u64) -> Tat {
    let Tat(t) = tat;
    Tat(t
        .saturating_sub(u128::from(quota.window_ms()))
        .max(units(quota, now_ms)))
}

/// One key's state held on its own, never evicted: a budget shared by everyone.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Cell(Option<Tat>);

impl Cell {
    pub fn peek(&self, quota: &Quota, now_ms: u64) -> Check {
        gcra(quota, self.0, now_ms)
    }

    pub fn commit(&mut self, check: &Check) {
        if let Some(next) = check.next {
            self.0 = Some(next);
        }
    }

    /// See [`refund`].
    pub fn refund(&mut self, quota: &Quota, now_ms: u64) {
        self.0 = self.0.map(|tat| refund(quota, tat, now_ms));
    }
}

/// A client as rate limits see it: an IPv4 address, or an IPv6 /64 (one subscriber's usual
/// allocation, so rotating through a prefix buys nothing).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ClientKey {
    V4(u32),
    V6Prefix(u64),
    /// No usable address: such requests share one bucket.
    Unknown,
}

impl ClientKey {
    pub fn from_ip(text: Option<&str>) -> ClientKey {
        match text.map(str::trim).map(str::parse::<IpAddr>) {
            Some(Ok(IpAddr::V4(v4))) => ClientKey::V4(u32::from(v4)),
            Some(Ok(IpAddr::V6(v6))) => match v6.to_ipv4_mapped() {
                Some(v4) => ClientKey::V4(u32::from(v4)),
                None => ClientKey::V6Prefix((u128::from(v6) >> 64) as u64),
            },
            _ => ClientKey::Unknown,
        }
    }

    /// Appends the client as text, the same in every isolate and location: a rate-limiting key
    /// shared beyond one isolate. IPv4 dotted, an IPv6 /64 as its four groups (`2001:db8:1:2::/64`).
    pub fn push_text(&self, out: &mut String) {
        match self {
            ClientKey::V4(address) => {
                for (i, octet) in address.to_be_bytes().iter().enumerate() {
                    if i > 0 {
                        out.push('.');
                    }
                    harbour_policy::text::push_u64(out, u64::from(*octet));
                }
            }
            ClientKey::V6Prefix(prefix) => {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                for group in 0..4 {
                    let value = (prefix >> (48 - 16 * group)) & 0xffff;
                    // Without leading zeros, as addresses are written.
                    let digits = (1..4).rev().find(|d| value >> (4 * d) != 0).unwrap_or(0) + 1;
                    for d in (0..digits).rev() {
                        out.push(char::from(HEX[((value >> (4 * d)) & 0xf) as usize]));
                    }
                    out.push(':');
                }
                out.push_str(":/64");
            }
            ClientKey::Unknown => out.push_str("unknown"),
        }
    }
}

/// std's SipHash with a per-isolate secret absorbed before each key. On wasm32-unknown-unknown
/// std has no entropy, so `RandomState` keys are the same in every isolate; the limiter's keys
/// are client addresses, which clients choose, and known hash keys would let crafted addresses
/// pile into one bucket.
#[derive(Clone, Debug)]
pub struct SeededState(u64);

impl SeededState {
    pub fn new(seed: u64) -> SeededState {
        SeededState(seed)
    }
}

impl BuildHasher for SeededState {
    type Hasher = DefaultHasher;

    fn build_hasher(&self) -> DefaultHasher {
        let mut hasher = DefaultHasher::new();
        hasher.write_u64(self.0);
        hasher
    }
}

/// Per-key GCRA state with a bound on memory. An entry whose TAT has passed carries no
/// information (the key is back to a full burst), so it can be dropped at any time.
pub struct Limiter<K> {
    tats: HashMap<K, (Tat, u64), SeededState>,
    max_keys: usize,
}

impl<K: Hash + Eq + Copy> Limiter<K> {
    pub fn new(max_keys: usize) -> Limiter<K> {
        Limiter::seeded(max_keys, 0)
    }

    /// With a secret seed for the table's hash (see [`SeededState`]).
    pub fn seeded(max_keys: usize, seed: u64) -> Limiter<K> {
        Limiter {
            tats: HashMap::with_hasher(SeededState(seed)),
            max_keys: max_keys.max(2),
        }
    }

    pub fn len(&self) -> usize {
        self.tats.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tats.is_empty()
    }

    /// Decides without changing anything, so several layers can be asked before any commits.
    pub fn peek(&self, key: &K, quota: &Quota, now_ms: u64) -> Check {
        gcra(quota, self.tats.get(key).map(|(tat, _)| *tat), now_ms)
    }

    /// Applies a check made by `peek` for `key`; a refusal changes nothing.
    pub fn commit(&mut self, key: K, check: &Check, now_ms: u64) {
        let Some(next) = check.next else {
            return;
        };
        if self.tats.len() >= self.max_keys && !self.tats.contains_key(&key) {
            self.make_room(now_ms);
        }
        self.tats.insert(key, (next, check.expires_ms));
    }

    fn make_room(&mut self, now_ms: u64) {
        self.tats.retain(|_, (_, expires_ms)| *expires_ms > now_ms);
        if self.tats.len() >= self.max_keys {
            // Still full of live keys: forget the half closest to full recovery. Those keys get
            // their burst back early; the alternative, growing without bound, takes the isolate.
            let mut expiries: Vec<u64> = self.tats.values().map(|(_, e)| *e).collect();
            let middle = expiries.len() / 2;
            let (_, cut, _) = expiries.select_nth_unstable(middle);
            let cut = *cut;
            self.tats.retain(|_, (_, expires_ms)| *expires_ms > cut);
        }
    }

    /// See [`refund`]; a key no longer held (dropped to make room) has nothing to give back.
    pub fn refund(&mut self, key: &K, quota: &Quota, now_ms: u64) {
        if let Some((tat, expires_ms)) = self.tats.get_mut(key) {
            *tat = refund(quota, *tat, now_ms);
            *expires_ms = ceil_div(tat.0, u128::from(quota.burst()));
        }
    }

    /// Decides and commits one key alone.
    pub fn check(&mut self, key: K, quota: &Quota, now_ms: u64) -> Decision {
        let check = self.peek(&key, quota, now_ms);
        self.commit(key, &check, now_ms);
        check.decision
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::num::{NonZeroU32, NonZeroU64};

    #[test]
    fn the_table_hash_depends_on_the_isolate_seed() {
        let key = ClientKey::V4(0x6440_0001);
        assert_ne!(SeededState(1).hash_one(key), SeededState(2).hash_one(key));
        assert_eq!(SeededState(7).hash_one(key), SeededState(7).hash_one(key));
    }

    fn quota(burst: u32, window_ms: u64) -> Quota {
        Quota::new(
            NonZeroU32::new(burst).unwrap(),
            NonZeroU64::new(window_ms).unwrap(),
        )
    }

    #[test]
    fn admits_a_burst_then_refuses_with_the_exact_wait() {
        let q = quota(5, 60_000);
        let mut limiter = Limiter::new(100);
        let remaining: Vec<_> = (0..5)
            .map(|_| match limiter.check(1, &q, 1_000) {
                Decision::Admit { remaining, .. } => remaining,
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(remaining, [4, 3, 2, 1, 0]);
        assert_eq!(
            limiter.check(1, &q, 1_000),
            Decision::Refuse {
                retry_after_ms: 12_000
            }
        );
        assert!(!limiter.check(1, &q, 12_999).admitted());
        assert!(limiter.check(1, &q, 13_000).admitted());
    }

    #[test]
    fn other_keys_are_independent() {
        let q = quota(1, 1_000);
        let mut limiter = Limiter::new(100);
        assert!(limiter.check(1, &q, 0).admitted());
        assert!(!limiter.check(1, &q, 0).admitted());
        assert!(limiter.check(2, &q, 0).admitted());
    }

    #[test]
    fn sub_millisecond_spacing_is_exact() {
        // 2,000 per second is one admission every 0.5 ms: no rounding to whole ms.
        let q = quota(2_000, 1_000);
        let mut limiter = Limiter::new(10);
        let admitted = (0..10_000)
            .filter(|i| limiter.check(0u8, &q, i / 10).admitted())
            .count();
        // 2,000 at once, then 2 per ms over the remaining 999 ms.
        assert_eq!(admitted, 2_000 + 2 * 999);
    }

    #[test]
    fn clients_are_keyed_by_ipv4_address_and_ipv6_slash_64() {
        let a = ClientKey::from_ip(Some("2001:db8:1:2:aaaa::1"));
        let b = ClientKey::from_ip(Some("2001:db8:1:2:ffff:1:2:3"));
        let c = ClientKey::from_ip(Some("2001:db8:1:3::1"));
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_eq!(
            ClientKey::from_ip(Some("::ffff:192.0.2.1")),
            ClientKey::from_ip(Some("192.0.2.1"))
        );
        assert_ne!(
            ClientKey::from_ip(Some("192.0.2.1")),
            ClientKey::from_ip(Some("192.0.2.2"))
        );
        assert_eq!(ClientKey::from_ip(Some("not an ip")), ClientKey::Unknown);
        assert_eq!(ClientKey::from_ip(None), ClientKey::Unknown);
    }

    #[test]
    fn memory_stays_bounded_under_many_live_keys() {
        let q = quota(1, 60_000);
        let mut limiter = Limiter::new(1_000);
        for key in 0..10_000u32 {
            limiter.check(key, &q, u64::from(key));
        }
        assert!(limiter.len() <= 1_000);
    }

    #[test]
    fn a_cell_admits_like_a_keyed_limiter_and_a_peek_alone_changes_nothing() {
        let q = quota(2, 1_000);
        let mut cell = Cell::default();
        for _ in 0..5 {
            assert!(cell.peek(&q, 0).admitted(), "peeking charges nothing");
        }
        for expected in [true, true, false] {
            let check = cell.peek(&q, 0);
            assert_eq!(check.admitted(), expected);
            cell.commit(&check);
        }
        assert!(cell.peek(&q, 500).admitted());
    }

    #[test]
    fn a_refund_gives_back_one_request_and_never_banks_unused_ones() {
        let q = quota(3, 60_000);
        let mut limiter = Limiter::new(10);
        for _ in 0..3 {
            assert!(limiter.check(1, &q, 0).admitted());
        }
        assert!(!limiter.check(1, &q, 0).admitted());
        limiter.refund(&1, &q, 0);
        assert!(limiter.check(1, &q, 0).admitted(), "the refunded slot");
        assert!(!limiter.check(1, &q, 0).admitted());
        // Refunds beyond what was charged bring the key back to a full burst, never past it.
        for _ in 0..10 {
            limiter.refund(&1, &q, 0);
        }
        let admitted = (0..10)
            .filter(|_| limiter.check(1, &q, 0).admitted())
            .count();
        assert_eq!(admitted, 3);
        // Nothing to give back for a key not held.
        limiter.refund(&2, &q, 0);
        assert!(limiter.peek(&2, &q, 0).admitted());
        // A cell refunds the same way.
        let mut cell = Cell::default();
        for _ in 0..3 {
            cell.commit(&cell.peek(&q, 0));
        }
        assert!(!cell.peek(&q, 0).admitted());
        cell.refund(&q, 0);
        assert!(cell.peek(&q, 0).admitted());
    }

    #[test]
    fn a_refund_at_a_later_time_keeps_the_expiry_for_eviction() {
        let q = quota(1, 1_000);
        let mut limiter = Limiter::new(2);
        assert!(limiter.check(1, &q, 0).admitted());
        limiter.refund(&1, &q, 500);
        // Refunded down to now (500): recovered at once, so the first to go when room is needed.
        limiter.check(2, &q, 500);
        limiter.check(3, &q, 600);
        assert!(limiter.len() <= 2);
        assert!(limiter.peek(&1, &q, 600).admitted());
    }

    #[test]
    fn clients_as_text_are_the_same_in_every_isolate() {
        let text = |ip: &str| {
            let mut out = String::new();
            ClientKey::from_ip(Some(ip)).push_text(&mut out);
            out
        };
        assert_eq!(text("192.0.2.1"), "192.0.2.1");
        assert_eq!(text("::ffff:192.0.2.1"), "192.0.2.1");
        assert_eq!(text("2001:db8:1:2:aaaa::1"), "2001:db8:1:2::/64");
        assert_eq!(text("2001:0DB8:0001:0002:ffff::9"), "2001:db8:1:2::/64");
        assert_eq!(text("::1"), "0:0:0:0::/64");
        assert_eq!(text("ffff:ffff:ffff:ffff::"), "ffff:ffff:ffff:ffff::/64");
        assert_eq!(text("not an address"), "unknown");
    }

    #[test]
    fn expired_keys_are_swept_first() {
        let q = quota(1, 1_000);
        let mut limiter = Limiter::new(4);
        for key in 0..4u32 {
            limiter.check(key, &q, 0);
        }
        // Everyone has recovered by t=5000: room is made by dropping them all.
        limiter.check(99, &q, 5_000);
        assert_eq!(limiter.len(), 1);
    }
}

#[cfg(all(test, not(target_arch = "wasm32")))]
mod properties {
    use super::*;
    use proptest::prelude::*;
    use std::num::{NonZeroU32, NonZeroU64};

    proptest! {
        /// GCRA admits at most `burst + floor(d / interval)` requests in any span of d ms.
        #[test]
        fn never_admits_more_than_the_quota_in_any_window(
            burst in 1u32..20,
            window_ms in 20u64..5_000,
            gaps in proptest::collection::vec(0u64..400, 1..300),
        ) {
            let q = Quota::new(NonZeroU32::new(burst).unwrap(), NonZeroU64::new(window_ms).unwrap());
            let mut limiter = Limiter::new(10);
            let mut now = 0u64;
            let mut admitted = Vec::new();
            for gap in gaps {
                now += gap;
                if limiter.check(0u8, &q, now).admitted() {
                    admitted.push(now);
                }
            }
            for (i, start) in admitted.iter().enumerate() {
                for (j, end) in admitted.iter().enumerate().skip(i) {
                    let span = u128::from(end - start);
                    let count = (j - i + 1) as u128;
                    // In units of 1/burst ms the interval is window_ms.
                    let allowed = u128::from(burst) + span * u128::from(burst) / u128::from(window_ms);
                    prop_assert!(count <= allowed, "{count} admitted within {span} ms");
                }
            }
        }

        /// A request admitted and refunded at once leaves no trace: every later decision is the
        /// one it would have been without it.
        #[test]
        fn admit_then_refund_is_no_charge(
            burst in 1u32..20,
            window_ms in 20u64..100_000,
            before in proptest::collection::vec(0u64..2_000, 0..30),
            later in proptest::collection::vec(0u64..5_000, 1..30),
        ) {
            let q = Quota::new(NonZeroU32::new(burst).unwrap(), NonZeroU64::new(window_ms).unwrap());
            let (mut charged, mut untouched) = (Limiter::new(10), Limiter::new(10));
            let mut now = 0u64;
            for gap in before {
                now += gap;
                charged.check(0u8, &q, now);
                untouched.check(0u8, &q, now);
            }
            if charged.check(0u8, &q, now).admitted() {
                charged.refund(&0u8, &q, now);
            }
            for gap in later {
                now += gap;
                prop_assert_eq!(charged.check(0u8, &q, now), untouched.check(0u8, &q, now));
            }
        }

        /// The wait in a refusal is exact: one ms earlier is still refused, at the wait it passes.
        #[test]
        fn retry_after_is_exact(
            burst in 1u32..20,
            window_ms in 20u64..100_000,
            extra in 1usize..5,
            start in 0u64..1_000_000_000_000,
        ) {
            let q = Quota::new(NonZeroU32::new(burst).unwrap(), NonZeroU64::new(window_ms).unwrap());
            let mut limiter = Limiter::new(10);
            for _ in 0..burst {
                prop_assert!(limiter.check(0u8, &q, start).admitted());
            }
            for _ in 0..extra {
                let Decision::Refuse { retry_after_ms } = limiter.check(0u8, &q, start) else {
                    return Err(TestCaseError::fail("admitted past the burst"));
                };
                prop_assert!(retry_after_ms >= 1);
                prop_assert!(!limiter.peek(&0u8, &q, start + retry_after_ms - 1).admitted());
                prop_assert!(limiter.peek(&0u8, &q, start + retry_after_ms).admitted());
            }
        }
    }
}
