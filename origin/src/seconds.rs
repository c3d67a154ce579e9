//! What the origin did, second by second, for the operations listener's `/v1/seconds`: the live
//! view and the broadcast report read it, and it is the authority on rows stored.
//!
//! Each of the last [`KEPT_SECONDS`] seconds (Unix time) has its counts: submissions received,
//! stored as new rows, replayed (a key already stored), refused (any 4xx), failed (the store did
//! not answer), shed (turned away past the in-flight bound, before the store), and the most in flight
//! during the second. A ring of seconds behind one lock: a few counter bumps per submission, and
//! a reader that misses a poll reads the second again, whole, on the next one.

use std::sync::Mutex;

use serde_json::{json, Value};

/// Seconds kept: five minutes.
pub const KEPT_SECONDS: usize = 300;

/// What a submission came to, as counted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Count {
    Received,
    Stored,
    Replayed,
    Refused,
    Failed,
    Shed,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Second {
    /// Unix seconds; 0 for a slot never used.
    at: u64,
    received: u64,
    stored: u64,
    replayed: u64,
    refused: u64,
    failed: u64,
    shed: u64,
    in_flight_max: u64,
}

impl Second {
    fn to_json(self) -> Value {
        json!({
            "second": self.at,
            "received": self.received,
            "stored": self.stored,
            "replayed": self.replayed,
            "refused": self.refused,
            "failed": self.failed,
            "shed": self.shed,
            "in_flight_max": self.in_flight_max,
        })
    }
}

pub struct Seconds {
    ring: Mutex<Vec<Second>>,
}

impl Default for Seconds {
    fn default() -> Seconds {
        Seconds {
            ring: Mutex::new(vec![Second::default(); KEPT_SECONDS]),
        }
    }
}

impl Seconds {
    /// Runs `change` on the second of `now_ms`, fresh if its slot held an older one. A poisoned
    /// lock (a panic elsewhere while holding it) still holds plain counters: they are used.
    fn with_second(&self, now_ms: u64, change: impl FnOnce(&mut Second)) {
        let at = now_ms / 1_000;
        let mut ring = self.ring.lock().unwrap_or_else(|e| e.into_inner());
        let Some(slot) = ring.get_mut(at as usize % KEPT_SECONDS) else {
            return;
        };
        if slot.at != at {
            *slot = Second {
                at,
                ..Second::default()
            };
        }
        change(slot);
    }

    pub fn count(&self, what: Count, now_ms: u64) {
        self.with_second(now_ms, |s| {
            let counter = match what {
                Count::Received => &mut s.received,
                Count::Stored => &mut s.stored,
                Count::Replayed => &mut s.replayed,
                Count::Refused => &mut s.refused,
                Count::Failed => &mut s.failed,
                Count::Shed => &mut s.shed,
            };
            *counter += 1;
        });
    }

    /// Submissions in flight just after one entered.
    pub fn in_flight(&self, level: usize, now_ms: u64) {
        self.with_second(now_ms, |s| {
            s.in_flight_max = s.in_flight_max.max(level as u64)
        });
    }

    /// The seconds from `from_s` up to `now_ms`'s (the last still counting), oldest first; seconds
    /// in which nothing happened are absent (their counts are 0).
    pub fn since(&self, from_s: u64, now_ms: u64) -> Vec<Value> {
        let now_s = now_ms / 1_000;
        let oldest = now_s.saturating_sub(KEPT_SECONDS as u64 - 1);
        let ring = self.ring.lock().unwrap_or_else(|e| e.into_inner());
        let mut seconds: Vec<Second> = ring
            .iter()
            .filter(|s| s.at != 0 && s.at >= from_s.max(oldest) && s.at <= now_s)
            .copied()
            .collect();
        seconds.sort_by_key(|s| s.at);
        seconds.into_iter().map(Second::to_json).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_second_counts_apart_and_old_seconds_make_room() {
        let seconds = Seconds::default();
        let t = 1_800_000_000_000;
        seconds.count(Count::Received, t);
        seconds.count(Count::Stored, t + 10);
        seconds.in_flight(3, t + 20);
        seconds.in_flight(1, t + 30);
        seconds.count(Count::Shed, t + 1_000);
        let read = seconds.since(0, t + 1_500);
        assert_eq!(read.len(), 2);
        assert_eq!(read[0]["second"], t / 1_000);
        assert_eq!(read[0]["stored"], 1);
        assert_eq!(read[0]["in_flight_max"], 3);
        assert_eq!(read[1]["shed"], 1);
        assert_eq!(seconds.since(t / 1_000 + 1, t + 1_500).len(), 1);
        // A slot is reused a ring later: the old second is gone, not added to.
        let later = t + KEPT_SECONDS as u64 * 1_000;
        seconds.count(Count::Stored, later);
        let read = seconds.since(0, later);
        assert_eq!(read.len(), 2, "{read:?}");
        assert_eq!(read[0]["second"], t / 1_000 + 1);
        assert_eq!(read[1]["second"], later / 1_000);
        assert_eq!(
            (&read[1]["stored"], &read[1]["received"]),
            (&1.into(), &0.into())
        );
    }
}
