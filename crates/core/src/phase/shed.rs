//! The shed phase: while every origin of the submission's region is shedding load (their
//! breakers open, see `breaker`), answer 503 `region_busy` at once, with `Retry-After` and the
//! idempotency key: no origin is called and no limit is charged.

use harbour_policy::RegionIndex;

use crate::breaker::Breakers;
use crate::outcome::Outcome;
use crate::reply::{busy, Answer, Flow, Phase};

/// `key` gives the submission's idempotency key, worked out only for that answer.
pub fn shed(
    breakers: &Breakers,
    region: RegionIndex,
    now_ms: u64,
    key: impl FnOnce() -> String,
) -> Flow<()> {
    match breakers.available(region, now_ms) {
        Ok(()) => Flow::Continue(()),
        Err(wait_ms) => Flow::Break(Answer::new(
            Phase::Shed,
            busy(Outcome::RegionBusy, &key(), wait_ms),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::breaker::Report;

    const EU: RegionIndex = harbour_policy::code::region_index(0);

    #[test]
    fn shed_answers_503_with_the_key_and_the_wait() {
        let mut breakers = Breakers::new([1]);
        assert!(matches!(
            shed(&breakers, EU, 0, || unreachable!("no key needed")),
            Flow::Continue(())
        ));
        breakers.record(EU, 0, Report::Busy { open_ms: 2_000 }, 0);
        let Flow::Break(answer) = shed(&breakers, EU, 500, || "key-0123456789abcdef".into()) else {
            panic!("every origin is open")
        };
        assert_eq!(answer.phase, Phase::Shed);
        assert_eq!(answer.outcome, Outcome::RegionBusy);
        assert_eq!(answer.reply.status, 503);
        assert_eq!(answer.reply.header("retry-after"), Some("2"));
        assert_eq!(
            answer.reply.header("idempotency-key"),
            Some("key-0123456789abcdef")
        );
        assert!(answer
            .reply
            .body
            .contains("\"idempotency_key\":\"key-0123456789abcdef\""));
    }
}
