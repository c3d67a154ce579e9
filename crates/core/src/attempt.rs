//! One attempt of a forward: where it goes, how long it may take, and how it ended.
//!
//! Each attempt has its own timeout and all of them share one deadline counted from receipt. An
//! attempt is retried on the next origin of the region only after a connection failure, a
//! timeout, or 502/503/504; any other answer is final (RFC 9110 does not make POST safe to
//! repeat, and only the idempotency key makes these retries harmless).

pub const ATTEMPT_TIMEOUT_MS: u64 = 3_000;
pub const DEADLINE_MS: u64 = 8_000;
/// An attempt with less time than this left is not started.
pub const MIN_ATTEMPT_MS: u64 = 200;

/// The time an attempt may take, or `None` when the deadline leaves too little.
pub fn attempt_budget_ms(received_ms: u64, now_ms: u64) -> Option<u64> {
    let deadline = received_ms.saturating_add(DEADLINE_MS);
    let left = deadline.saturating_sub(now_ms);
    (left >= MIN_ATTEMPT_MS).then(|| left.min(ATTEMPT_TIMEOUT_MS))
}

/// Where an attempt goes and how long it may take.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attempt {
    pub url: String,
    pub timeout_ms: u64,
}

/// How one attempt ended, as the shell saw it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttemptResult<'a> {
    Answered {
        status: u16,
        body: &'a str,
    },
    /// Connection refused or reset, DNS failure, or the attempt's timeout.
    Failed,
}

impl AttemptResult<'_> {
    /// Whether this end lets the next origin be tried: a connection failure, a timeout, or
    /// 502/503/504. Any other answer is final.
    pub fn is_retryable(&self) -> bool {
        match self {
            AttemptResult::Failed => true,
            AttemptResult::Answered { status, .. } => matches!(status, 502..=504),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadline_arithmetic() {
        assert_eq!(attempt_budget_ms(1_000, 1_000), Some(ATTEMPT_TIMEOUT_MS));
        assert_eq!(
            attempt_budget_ms(1_000, 1_000 + DEADLINE_MS - 1_000),
            Some(1_000)
        );
        assert_eq!(
            attempt_budget_ms(1_000, 1_000 + DEADLINE_MS - MIN_ATTEMPT_MS),
            Some(MIN_ATTEMPT_MS)
        );
        assert_eq!(
            attempt_budget_ms(1_000, 1_000 + DEADLINE_MS - MIN_ATTEMPT_MS + 1),
            None
        );
        assert_eq!(attempt_budget_ms(1_000, u64::MAX), None);
        // A clock that went backwards never grants more than one attempt's timeout.
        assert_eq!(attempt_budget_ms(10_000, 0), Some(ATTEMPT_TIMEOUT_MS));
    }
}
