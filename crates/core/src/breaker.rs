//! Origin back-pressure, as one isolate sees it: a breaker per origin.
//!
//! An origin that is full says so at once (503 with the code `origin_busy`, stored
//! nothing). The breaker of that origin opens: for the interval the origin asked for (its
//! `retry_after_ms` or `retry_after_s`; 1 s if it names none, within 100 ms to 30 s) no
//! submission of this isolate is sent there,
//! and failover takes the region's next origin whose breaker is closed, within the region as
//! always. While every origin of a region is open, the `shed` phase answers new submissions for
//! that region 503 with `Retry-After` and their idempotency key without calling any. Once the
//! interval has passed the breaker is half-open: the next submission is the one trial, whose
//! answer closes it (anything but busy) or opens it again (busy, or no answer).
//!
//! State is a few bytes per origin, per isolate; time is an input. The real capacity guard is
//! the origin's own bound on what it has in flight: this only spares a shedding origin the
//! calls of one isolate.

use harbour_contract::response;

use crate::attempt::{AttemptResult, DEADLINE_MS};
use harbour_policy::text::{push_quoted, push_u64};
use harbour_policy::RegionIndex;

/// How long a breaker stays open when the origin names no interval.
pub const OPEN_MS: u64 = 1_000;
/// The shortest interval an origin may ask for.
pub const MIN_OPEN_MS: u64 = 100;
/// The longest interval an origin may ask for.
pub const MAX_OPEN_MS: u64 = 30_000;
/// A trial that has not reported by then (its request died with its handler) is given up and
/// another one is allowed.
pub const TRIAL_STALE_MS: u64 = DEADLINE_MS + 2_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Closed,
    Open {
        until_ms: u64,
    },
    /// Half-open, with one trial under way since `since_ms`.
    Trial {
        since_ms: u64,
    },
}

/// What an attempt told about its origin.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Report {
    /// Full: open for this long.
    Busy { open_ms: u64 },
    /// It answered (stored, replayed, refused, or failed otherwise): it is taking requests.
    Answered,
    /// No answer (connection error or timeout).
    Silent,
}

impl Report {
    pub fn of(result: &AttemptResult) -> Report {
        match result {
            AttemptResult::Failed => Report::Silent,
            AttemptResult::Answered { status: 503, body } => match busy_interval_ms(body) {
                Some(open_ms) => Report::Busy { open_ms },
                None => Report::Answered,
            },
            AttemptResult::Answered { .. } => Report::Answered,
        }
    }
}

/// The interval a busy answer asks for (1 s if it names none, within the bounds), or `None` if
/// the body is not a busy answer.
fn busy_interval_ms(body: &str) -> Option<u64> {
    let asked = response::busy_interval_ms(body)?;
    Some(asked.unwrap_or(OPEN_MS).clamp(MIN_OPEN_MS, MAX_OPEN_MS))
}

/// A change of a breaker's state, for the log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transition {
    Opened { open_ms: u64 },
    Closed,
}

/// The breakers of every origin, indexed like the configuration's regions and their origins.
#[derive(Debug, Default)]
pub struct Breakers {
    regions: Vec<Vec<State>>,
}

impl Breakers {
    /// All closed; `origins[r]` is how many origins region `r` has.
    pub fn new(origins: impl IntoIterator<Item = usize>) -> Breakers {
        Breakers {
            regions: origins
                .into_iter()
                .map(|n| vec![State::Closed; n])
                .collect(),
        }
    }

    fn states(&self, region: RegionIndex) -> &[State] {
        self.regions.get(region.get()).map_or(&[], Vec::as_slice)
    }

    /// Whether an origin of `region` may be called at `now_ms`, without claiming a trial; if
    /// none may, how long until one might.
    pub fn available(&self, region: RegionIndex, now_ms: u64) -> Result<(), u64> {
        let mut wait = u64::MAX;
        for state in self.states(region) {
            match *state {
                State::Closed => return Ok(()),
                State::Open { until_ms } if until_ms <= now_ms => return Ok(()),
                State::Trial { since_ms } if since_ms.saturating_add(TRIAL_STALE_MS) <= now_ms => {
                    return Ok(())
                }
                State::Open { until_ms } => wait = wait.min(until_ms - now_ms),
                // The trial's answer decides; the visitor is asked back after one interval.
                State::Trial { .. } => wait = wait.min(OPEN_MS),
            }
        }
        // A region without origins never gets here: configuration refuses one.
        Err(if wait == u64::MAX { OPEN_MS } else { wait })
    }

    /// The first origin of `region` from position `from` on that may be called at `now_ms`. An
    /// open one whose interval has passed becomes half-open with this call as its one trial.
    pub fn pick(&mut self, region: RegionIndex, from: usize, now_ms: u64) -> Option<usize> {
        let states = self.regions.get_mut(region.get())?;
        for (index, state) in states.iter_mut().enumerate().skip(from) {
            match *state {
                State::Closed => return Some(index),
                State::Open { until_ms } if until_ms <= now_ms => {}
                State::Trial { since_ms } if since_ms.saturating_add(TRIAL_STALE_MS) <= now_ms => {}
                State::Open { .. } | State::Trial { .. } => continue,
            }
            *state = State::Trial { since_ms: now_ms };
            return Some(index);
        }
        None
    }

    /// Records what an attempt at `origin` of `region` told; the transition, if any, is for
    /// the log.
    pub fn record(
        &mut self,
        region: RegionIndex,
        origin: usize,
        report: Report,
        now_ms: u64,
    ) -> Option<Transition> {
        let state = self.regions.get_mut(region.get())?.get_mut(origin)?;
        let before = *state;
        match (before, report) {
            (State::Open { until_ms }, Report::Busy { open_ms }) => {
                // A straggler sent before the breaker opened: keep the longer interval.
                *state = State::Open {
                    until_ms: until_ms.max(now_ms.saturating_add(open_ms)),
                };
                None
            }
            (_, Report::Busy { open_ms }) => {
                *state = State::Open {
                    until_ms: now_ms.saturating_add(open_ms),
                };
                Some(Transition::Opened { open_ms })
            }
            (State::Trial { .. }, Report::Answered) => {
                *state = State::Closed;
                Some(Transition::Closed)
            }
            (State::Trial { .. }, Report::Silent) => {
                *state = State::Open {
                    until_ms: now_ms.saturating_add(OPEN_MS),
                };
                Some(Transition::Opened { open_ms: OPEN_MS })
            }
            // Closed stays closed on any answer; an open breaker waits for its trial, not for
            // stragglers sent before it opened. Silence is the attempt timeout's business.
            (State::Closed | State::Open { .. }, Report::Answered | Report::Silent) => None,
        }
    }
}

/// The log line of a transition: `{"msg":"harbour.breaker","region":..,"origin":N,"state":..}`,
/// with `open_ms` when it opened.
pub fn transition_line(region_id: &str, origin: usize, transition: Transition) -> String {
    let mut line = String::with_capacity(96);
    line.push_str("{\"msg\":\"harbour.breaker\",\"region\":");
    push_quoted(&mut line, region_id);
    line.push_str(",\"origin\":");
    push_u64(&mut line, origin as u64);
    match transition {
        Transition::Opened { open_ms } => {
            line.push_str(",\"state\":\"open\",\"open_ms\":");
            push_u64(&mut line, open_ms);
        }
        Transition::Closed => line.push_str(",\"state\":\"closed\""),
    }
    line.push('}');
    line
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use serde_json::Value;

    const EU: RegionIndex = harbour_policy::code::region_index(0);

    fn busy(seconds: u64) -> String {
        format!(r#"{{"code":"origin_busy","retry_after_s":{seconds}}}"#)
    }

    #[test]
    fn a_busy_answer_is_told_apart_from_other_503s() {
        let report = |status, body: &str| Report::of(&AttemptResult::Answered { status, body });
        assert_eq!(report(503, &busy(2)), Report::Busy { open_ms: 2_000 });
        assert_eq!(
            report(503, r#"{"code":"origin_busy"}"#),
            Report::Busy { open_ms: OPEN_MS }
        );
        assert_eq!(
            report(503, &busy(3_600)),
            Report::Busy {
                open_ms: MAX_OPEN_MS
            }
        );
        assert_eq!(
            report(503, &busy(0)),
            Report::Busy {
                open_ms: MIN_OPEN_MS
            }
        );
        assert_eq!(
            report(503, r#"{"code":"origin_busy","retry_after_ms":250}"#),
            Report::Busy { open_ms: 250 }
        );
        assert_eq!(
            report(503, r#"{"code":"origin_busy","retry_after_ms":5}"#),
            Report::Busy {
                open_ms: MIN_OPEN_MS
            }
        );
        assert_eq!(
            report(503, r#"{"code":"storage_unavailable"}"#),
            Report::Answered
        );
        assert_eq!(report(503, "origin_busy, not JSON"), Report::Answered);
        assert_eq!(report(201, &busy(1)), Report::Answered);
        assert_eq!(Report::of(&AttemptResult::Failed), Report::Silent);
    }

    #[test]
    fn open_half_open_closed() {
        let mut breakers = Breakers::new([2]);
        assert_eq!(breakers.pick(EU, 0, 0), Some(0));
        assert_eq!(
            breakers.record(EU, 0, Report::Busy { open_ms: 1_000 }, 10),
            Some(Transition::Opened { open_ms: 1_000 })
        );
        // Failover skips the open primary; the region is still available through the secondary.
        assert_eq!(breakers.pick(EU, 0, 20), Some(1));
        assert_eq!(breakers.available(EU, 20), Ok(()));
        breakers.record(EU, 1, Report::Busy { open_ms: 2_000 }, 30);
        assert_eq!(
            breakers.available(EU, 30),
            Err(980),
            "the primary reopens first"
        );
        assert_eq!(breakers.pick(EU, 0, 1_009), None);
        // At the end of its interval the primary is half-open: one trial, no second caller.
        assert_eq!(breakers.available(EU, 1_010), Ok(()));
        assert_eq!(breakers.pick(EU, 0, 1_010), Some(0));
        assert_eq!(breakers.pick(EU, 0, 1_011), None, "one trial at a time");
        assert_eq!(breakers.available(EU, 1_011), Err(OPEN_MS));
        // A straggler's success does not close the secondary; only its own trial will.
        assert_eq!(breakers.record(EU, 1, Report::Answered, 1_012), None);
        assert_eq!(breakers.pick(EU, 1, 1_013), None);
        // The trial is answered: closed.
        assert_eq!(
            breakers.record(EU, 0, Report::Answered, 1_020),
            Some(Transition::Closed)
        );
        assert_eq!(breakers.pick(EU, 0, 1_021), Some(0));
        assert_eq!(
            breakers.pick(EU, 0, 1_022),
            Some(0),
            "closed takes everyone"
        );
    }

    #[test]
    fn a_failed_or_lost_trial_reopens() {
        let mut breakers = Breakers::new([1]);
        breakers.record(EU, 0, Report::Busy { open_ms: 1_000 }, 0);
        assert_eq!(breakers.pick(EU, 0, 1_000), Some(0));
        assert_eq!(
            breakers.record(EU, 0, Report::Silent, 1_500),
            Some(Transition::Opened { open_ms: OPEN_MS })
        );
        assert_eq!(breakers.pick(EU, 0, 2_499), None);
        assert_eq!(breakers.pick(EU, 0, 2_500), Some(0));
        // That trial never reports (its handler died): another one after TRIAL_STALE_MS.
        assert_eq!(breakers.pick(EU, 0, 2_500 + TRIAL_STALE_MS - 1), None);
        assert_eq!(breakers.pick(EU, 0, 2_500 + TRIAL_STALE_MS), Some(0));
    }

    #[test]
    fn silence_from_a_closed_origin_is_not_back_pressure() {
        let mut breakers = Breakers::new([2]);
        assert_eq!(breakers.record(EU, 0, Report::Silent, 5), None);
        assert_eq!(breakers.pick(EU, 0, 6), Some(0));
        // Unknown regions and origins are ignored, never a panic.
        assert_eq!(
            breakers.record(harbour_policy::code::region_index(9), 0, Report::Silent, 5),
            None
        );
        assert_eq!(breakers.record(EU, 9, Report::Silent, 5), None);
        assert_eq!(
            breakers.pick(harbour_policy::code::region_index(9), 0, 5),
            None
        );
    }

    #[test]
    fn transition_lines_are_json() {
        let line = transition_line("eu", 1, Transition::Opened { open_ms: 1_000 });
        let value: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(
            value,
            json!({"msg": "harbour.breaker", "region": "eu", "origin": 1, "state": "open", "open_ms": 1000})
        );
        let closed: Value =
            serde_json::from_str(&transition_line("eu", 0, Transition::Closed)).unwrap();
        assert_eq!(closed["state"], "closed");
    }
}
