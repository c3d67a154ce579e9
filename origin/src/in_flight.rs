//! Back-pressure: a bound on the submissions an origin has in flight.
//!
//! The real capacity of a region is its origin's, and only the origin knows how full it is, so it
//! says so: past the bound, a submission is answered at once, before its person digest and its
//! store, with 503 `{"code":"origin_busy","retry_after_ms":250}` and `Retry-After: 1`. The edge
//! takes that as "try the region's other origin, and spare this one for a quarter of a second"
//! (a bound is hit by bursts: an origin that is full now usually is not a moment later); a client
//! gets whole seconds. Nothing was stored, so a retry with the same idempotency key is stored once.
//!
//! A place is taken only by a submission read whole (by the listener, under its deadlines) and
//! carrying harbour's signature (`verify`), so that a stranger's request, however slowly it
//! arrives and however many there are, never holds one (see `server`).
//!
//! The counts are for operators and the benchmark: the most ever in flight (never above the
//! bound) and how many were shed.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use http_body_util::Full;
use hyper::header::{HeaderValue, CONTENT_TYPE, RETRY_AFTER};
use hyper::{Response, StatusCode};
use serde_json::json;

use harbour_contract::response::busy_body;

use crate::listener::Reply;

/// Submissions in flight when `--max-in-flight` is not given.
pub const DEFAULT_MAX_IN_FLIGHT: usize = 256;
/// What a busy answer asks a client to wait (`Retry-After`, whole seconds).
pub const BUSY_RETRY_AFTER_S: u64 = 1;
/// What a busy answer asks the edge to spare this origin for, when `--spare-ms` is not given.
pub const DEFAULT_SPARE_MS: u64 = 250;

pub struct InFlight {
    bound: usize,
    /// How long a busy answer asks the edge to spare this origin (`retry_after_ms`).
    spare_ms: u64,
    now: AtomicUsize,
    most: AtomicUsize,
    shed: AtomicU64,
}

/// A submission's place in flight, given back when it is answered (or its handler dropped).
pub struct Slot {
    of: Arc<InFlight>,
    /// Submissions in flight just after this one entered.
    pub level: usize,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.of.now.fetch_sub(1, Ordering::AcqRel);
    }
}

impl InFlight {
    pub fn new(bound: usize, spare_ms: u64) -> Arc<InFlight> {
        Arc::new(InFlight {
            bound,
            spare_ms,
            now: AtomicUsize::new(0),
            most: AtomicUsize::new(0),
            shed: AtomicU64::new(0),
        })
    }

    /// A place in flight, or `None` when all `bound` are taken. Never lets the count pass the
    /// bound, even for an instant, so the most ever seen is a true maximum.
    pub fn enter(self: &Arc<Self>) -> Option<Slot> {
        let mut current = self.now.load(Ordering::Acquire);
        loop {
            if current >= self.bound {
                self.shed.fetch_add(1, Ordering::Relaxed);
                return None;
            }
            match self.now.compare_exchange_weak(
                current,
                current + 1,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => {
                    self.most.fetch_max(current + 1, Ordering::Relaxed);
                    return Some(Slot {
                        of: self.clone(),
                        level: current + 1,
                    });
                }
                Err(now) => current = now,
            }
        }
    }

    /// `{"bound","in_flight","max_in_flight_seen","shed"}`.
    pub fn report(&self) -> serde_json::Value {
        json!({
            "bound": self.bound,
            "in_flight": self.now.load(Ordering::Relaxed),
            "max_in_flight_seen": self.most.load(Ordering::Relaxed),
            "shed": self.shed.load(Ordering::Relaxed),
        })
    }

    /// The answer past the bound.
    pub fn busy(&self) -> Reply {
        busy(self.spare_ms)
    }
}

fn busy(spare_ms: u64) -> Reply {
    let mut response = Response::new(Full::from(busy_body(spare_ms)));
    *response.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert(RETRY_AFTER, HeaderValue::from(BUSY_RETRY_AFTER_S));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bound_holds_and_slots_come_back() {
        let in_flight = InFlight::new(2, DEFAULT_SPARE_MS);
        let a = in_flight.enter().unwrap();
        let b = in_flight.enter().unwrap();
        assert!(in_flight.enter().is_none());
        drop(a);
        let c = in_flight.enter().unwrap();
        assert!(in_flight.enter().is_none());
        drop((b, c));
        let report = in_flight.report();
        assert_eq!(report["in_flight"], 0);
        assert_eq!(report["max_in_flight_seen"], 2);
        assert_eq!(report["shed"], 2);
        // A bound of 0 sheds everything (an origin taken out of rotation).
        assert!(InFlight::new(0, DEFAULT_SPARE_MS).enter().is_none());
    }

    #[test]
    fn concurrent_entries_never_pass_the_bound() {
        let in_flight = InFlight::new(3, DEFAULT_SPARE_MS);
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let in_flight = in_flight.clone();
                std::thread::spawn(move || {
                    for _ in 0..10_000 {
                        if let Some(slot) = in_flight.enter() {
                            std::hint::black_box(&slot);
                        }
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        let report = in_flight.report();
        assert!(report["max_in_flight_seen"].as_u64().unwrap() <= 3);
        assert_eq!(report["in_flight"], 0);
    }
}
