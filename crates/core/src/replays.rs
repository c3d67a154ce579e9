//! Solutions the isolate has seen lately, and what each one bought.
//!
//! A solved challenge covers one idempotency key, and an origin stores one entry per key, so a
//! replayed solution can never store a second entry; but without memory each replay would still
//! pass validation and admission, cost a binding call and an origin round trip. So the isolate
//! remembers, per solution, the digest of the body it came with and how it ended:
//!
//! - while the first request is under way, the same solution is answered 503 `entry_in_progress`
//!   with `Retry-After: 1` and its key (a double click; the retry finds the receipt);
//! - once it was accepted, the same solution with the same body gets that receipt again at once
//!   (`Idempotent-Replayed: true`), and with another body 409 `idempotency_key_reused` — what
//!   the origin would say, without asking it;
//! - any other ending (refused, a 503 after which nothing was stored) is forgotten, so the page's
//!   retry with the same key and work goes through as new.
//!
//! A bot's decoy receipt is remembered like a real one, so resending its entry gets the same id,
//! replayed, as a real visitor's resend does. Memory is bounded (`MAX_SEEN` solutions, each for
//! at most `SEEN_FOR_MS`); what it forgot is answered by the origin as before. Hashes are keyed
//! with the isolate's seed, so no client can aim two solutions at one slot.

use std::collections::{HashMap, VecDeque};
use std::hash::BuildHasher;

use harbour_policy::RegionIndex;

use crate::limit::SeededState;

/// Solutions remembered at most: about 100 bytes each.
pub const MAX_SEEN: usize = 50_000;
/// How long a solution is remembered: the longest a challenge is valid.
pub const SEEN_FOR_MS: u64 = harbour_policy::MAX_CHALLENGE_VALID_MS;

/// A solution's id and its body's digest, both keyed hashes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sighting {
    solution: u64,
    body: u64,
}

/// How long a request counts as under way: past its forward's deadline it ended one way or
/// another (its handler may have died without reporting back).
const IN_FLIGHT_MS: u64 = crate::attempt::DEADLINE_MS + 2_000;

#[derive(Clone, Debug, PartialEq, Eq)]
enum Seen {
    InFlight {
        body: u64,
        since_ms: u64,
    },
    Accepted {
        body: u64,
        receipt: String,
        region: RegionIndex,
    },
}

/// What memory says of a request's solution.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Recall {
    /// Not seen (or forgotten): go on.
    New(Sighting),
    /// The first request with it is still under way.
    InFlight,
    /// Accepted before, with this same body: its receipt.
    Accepted {
        receipt: String,
        region: RegionIndex,
    },
    /// Accepted before with another body.
    OtherBody,
}

pub struct Replays {
    hasher: SeededState,
    seen: HashMap<u64, Seen, SeededState>,
    /// `(solution, forget after)`, oldest first.
    order: VecDeque<(u64, u64)>,
    max: usize,
}

impl Replays {
    pub fn new(seed: u64, max: usize) -> Replays {
        Replays {
            hasher: SeededState::new(seed),
            seen: HashMap::with_hasher(SeededState::new(seed.rotate_left(17))),
            order: VecDeque::new(),
            max: max.max(1),
        }
    }

    /// What is remembered of `solution` sent for `key` with `body`. The work covers the key,
    /// but two keys can share a token and a nonce: the key is part of what is remembered.
    pub fn recall(&mut self, solution: &str, key: &str, body: &[u8], now_ms: u64) -> Recall {
        self.forget_old(now_ms);
        let sighting = Sighting {
            solution: self.hasher.hash_one((solution, key)),
            body: self.hasher.hash_one(body),
        };
        match self.seen.get(&sighting.solution) {
            None => Recall::New(sighting),
            Some(Seen::InFlight { since_ms, .. })
                if now_ms.saturating_sub(*since_ms) >= IN_FLIGHT_MS =>
            {
                Recall::New(sighting)
            }
            Some(Seen::InFlight { .. }) => Recall::InFlight,
            Some(Seen::Accepted { body, .. }) if *body != sighting.body => Recall::OtherBody,
            Some(Seen::Accepted {
                receipt, region, ..
            }) => Recall::Accepted {
                receipt: receipt.clone(),
                region: *region,
            },
        }
    }

    /// The request with `sighting` was admitted and is under way.
    pub fn start(&mut self, sighting: Sighting, now_ms: u64) {
        self.forget_old(now_ms);
        while self.order.len() >= self.max {
            if let Some((oldest, _)) = self.order.pop_front() {
                self.seen.remove(&oldest);
            }
        }
        let body = sighting.body;
        let in_flight = Seen::InFlight {
            body,
            since_ms: now_ms,
        };
        if self.seen.insert(sighting.solution, in_flight).is_none() {
            self.order
                .push_back((sighting.solution, now_ms.saturating_add(SEEN_FOR_MS)));
        }
    }

    /// It ended accepted, with `receipt` in `region` (`Some`), or otherwise (`None`).
    pub fn end(&mut self, sighting: Sighting, accepted: Option<(String, RegionIndex)>) {
        match accepted {
            Some((receipt, region)) => {
                if let Some(seen) = self.seen.get_mut(&sighting.solution) {
                    let body = sighting.body;
                    *seen = Seen::Accepted {
                        body,
                        receipt,
                        region,
                    };
                }
            }
            None => {
                self.seen.remove(&sighting.solution);
            }
        }
    }

    pub fn len(&self) -> usize {
        self.seen.len()
    }

    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }

    fn forget_old(&mut self, now_ms: u64) {
        while let Some(&(solution, after)) = self.order.front() {
            if after > now_ms && self.seen.contains_key(&solution) {
                break;
            }
            self.order.pop_front();
            if after <= now_ms {
                self.seen.remove(&solution);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EU: RegionIndex = harbour_policy::code::region_index(2);

    fn new(replays: &mut Replays, solution: &str, body: &[u8], now: u64) -> Sighting {
        match replays.recall(solution, "key-0123456789abcdef", body, now) {
            Recall::New(sighting) => sighting,
            other => panic!("{solution} was seen: {other:?}"),
        }
    }

    #[test]
    fn a_solution_is_in_flight_then_remembered_with_its_receipt_and_body() {
        let mut replays = Replays::new(7, 10);
        let first = new(&mut replays, "tok.1", b"{a}", 0);
        replays.start(first, 0);
        assert_eq!(
            replays.recall("tok.1", "key-0123456789abcdef", b"{a}", 1),
            Recall::InFlight
        );
        replays.end(first, Some(("eu-1".into(), EU)));
        assert_eq!(
            replays.recall("tok.1", "key-0123456789abcdef", b"{a}", 2),
            Recall::Accepted {
                receipt: "eu-1".into(),
                region: EU
            }
        );
        assert_eq!(
            replays.recall("tok.1", "key-0123456789abcdef", b"{b}", 3),
            Recall::OtherBody
        );
        // Another solution is another slot, and so is the same solution for another key.
        new(&mut replays, "tok.2", b"{a}", 4);
        assert!(matches!(
            replays.recall("tok.1", "key-fedcba9876543210", b"{a}", 5),
            Recall::New(_)
        ));
    }

    #[test]
    fn a_request_that_never_reported_back_is_not_in_flight_forever() {
        let mut replays = Replays::new(7, 10);
        let first = new(&mut replays, "tok.1", b"{a}", 0);
        replays.start(first, 0);
        assert_eq!(
            replays.recall("tok.1", "key-0123456789abcdef", b"{a}", IN_FLIGHT_MS - 1),
            Recall::InFlight
        );
        assert_eq!(
            replays.recall("tok.1", "key-0123456789abcdef", b"{a}", IN_FLIGHT_MS),
            Recall::New(first)
        );
    }

    #[test]
    fn an_entry_that_was_not_accepted_is_forgotten_so_its_retry_goes_through() {
        let mut replays = Replays::new(7, 10);
        let first = new(&mut replays, "tok.1", b"{a}", 0);
        replays.start(first, 0);
        replays.end(first, None);
        assert_eq!(
            replays.recall("tok.1", "key-0123456789abcdef", b"{a}", 1),
            Recall::New(first)
        );
    }

    #[test]
    fn memory_is_bounded_in_count_and_in_time() {
        let mut replays = Replays::new(7, 3);
        for n in 0..5 {
            let sighting = new(&mut replays, &format!("tok.{n}"), b"{}", n);
            replays.start(sighting, n);
            replays.end(sighting, Some((format!("eu-{n}"), EU)));
        }
        assert_eq!(replays.len(), 3, "the oldest went first");
        assert!(matches!(
            replays.recall("tok.0", "key-0123456789abcdef", b"{}", 6),
            Recall::New(_)
        ));
        assert!(matches!(
            replays.recall("tok.4", "key-0123456789abcdef", b"{}", 6),
            Recall::Accepted { .. }
        ));
        assert!(matches!(
            replays.recall("tok.4", "key-0123456789abcdef", b"{}", 4 + SEEN_FOR_MS),
            Recall::New(_)
        ));
        assert!(replays.is_empty());
    }
}
