//! The proof of work as a visitor's page does it: a fresh idempotency key, the challenge a
//! worker's form description hands out, solved for that key. Solving 20 bits takes about a second
//! and far longer on a loaded machine, so a test whose assertion depends on time solves first
//! (`Prepared`) and only then starts its clock or its rate-limited sequence.

use std::time::{Duration, Instant};

use crate::http::request;

const FORM_PATH: &str = "/api/campaigns/spring-launch";

/// A fresh idempotency key, never the same twice in one process.
pub fn new_key() -> String {
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let pid = std::process::id();
    format!("e2e-{pid}-{n:012}")
}

/// A challenge from a worker's form description: its token and difficulty, and when it came.
#[derive(Clone, Debug)]
pub struct Challenge {
    pub token: String,
    pub bits: u8,
    pub fetched: Instant,
}

impl Challenge {
    /// The challenge the worker on `port` hands out now.
    pub fn fetch(port: u16) -> Challenge {
        let form = request(port, "GET", FORM_PATH, &[], b"");
        let challenge = &form.json()["challenge"];
        let token = challenge["token"].as_str();
        let bits = challenge["difficulty_bits"].as_u64();
        let (Some(token), Some(bits)) = (token, bits) else {
            panic!("no challenge in the form description: {}", form.body);
        };
        Challenge {
            token: token.to_owned(),
            bits: u8::try_from(bits).expect("a difficulty under 256 bits"),
            fetched: Instant::now(),
        }
    }

    /// Whether it is older than ten minutes (the shipped challenge is good for thirty).
    pub fn stale(&self) -> bool {
        self.fetched.elapsed() > Duration::from_secs(600)
    }

    /// The `Harbour-Challenge` value for `key`: the token and a nonce whose work covers the key.
    pub fn solve(&self, key: &str) -> String {
        let nonce = harbour_core::phase::challenge::solve(&self.token, key, self.bits);
        harbour_core::phase::challenge::solution(&self.token, &nonce)
    }
}

/// The `Harbour-Challenge` value for `key`, solved for a challenge the worker on `port` hands out.
pub fn proof_from(port: u16, key: &str) -> String {
    Challenge::fetch(port).solve(key)
}

/// A key and its solved challenge: the work done before a test starts its clock.
#[derive(Clone, Debug)]
pub struct Prepared {
    pub key: String,
    pub proof: String,
}

impl Prepared {
    /// A fresh key with its work, for `challenge`.
    pub fn new(challenge: &Challenge) -> Prepared {
        Prepared::for_key(challenge, &new_key())
    }

    /// `key` with its work, for `challenge`.
    pub fn for_key(challenge: &Challenge, key: &str) -> Prepared {
        Prepared {
            key: key.to_owned(),
            proof: challenge.solve(key),
        }
    }

    /// As request headers: `Idempotency-Key` and `Harbour-Challenge`.
    pub fn headers(&self) -> [(&'static str, &str); 2] {
        [
            ("idempotency-key", &self.key),
            ("harbour-challenge", &self.proof),
        ]
    }
}
