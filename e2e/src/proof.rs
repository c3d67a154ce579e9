//! The proof of work as a visitor's page does it: a fresh idempotency key, the challenge a
//! worker's form description hands out, solved for that key, and the notice the page showed
//! (`Harbour-Notice: {locale}.{version}`, from the same description). Solving 20 bits takes about a second
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

/// A challenge from a worker's form description: its token and difficulty, the notice the
/// description carried, and when it came.
#[derive(Clone, Debug)]
pub struct Challenge {
    pub token: String,
    pub bits: u8,
    /// The `Harbour-Notice` value a page sends after showing this description's notice.
    pub notice: String,
    pub fetched: Instant,
}

/// The `Harbour-Notice` value for a form description: `{lang}.{notice.version}`.
pub fn notice_of(description: &serde_json::Value) -> String {
    let lang = description["lang"].as_str();
    let version = description["notice"]["version"].as_str();
    let (Some(lang), Some(version)) = (lang, version) else {
        panic!("no notice in the form description: {description}");
    };
    format!("{lang}.{version}")
}

impl Challenge {
    /// The challenge the worker on `port` hands out now.
    pub fn fetch(port: u16) -> Challenge {
        let form = request(port, "GET", FORM_PATH, &[], b"");
        let description = form.json();
        let challenge = &description["challenge"];
        let token = challenge["token"].as_str();
        let bits = challenge["difficulty_bits"].as_u64();
        let (Some(token), Some(bits)) = (token, bits) else {
            panic!("no challenge in the form description: {}", form.body);
        };
        Challenge {
            token: token.to_owned(),
            bits: u8::try_from(bits).expect("a difficulty under 256 bits"),
            notice: notice_of(&description),
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

/// A key and its solved challenge, with the notice shown: the work done before a test starts
/// its clock.
#[derive(Clone, Debug)]
pub struct Prepared {
    pub key: String,
    pub proof: String,
    pub notice: String,
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
            notice: challenge.notice.clone(),
        }
    }

    /// `key` (or a fresh one) with its work, for the challenge the worker on `port` hands out now.
    pub fn fetch(port: u16, key: Option<&str>) -> Prepared {
        let key = key.map_or_else(new_key, str::to_owned);
        Prepared::for_key(&Challenge::fetch(port), &key)
    }

    /// As request headers: `Idempotency-Key`, `Harbour-Challenge` and `Harbour-Notice`.
    pub fn headers(&self) -> [(&'static str, &str); 3] {
        [
            ("idempotency-key", &self.key),
            ("harbour-challenge", &self.proof),
            ("harbour-notice", &self.notice),
        ]
    }
}
