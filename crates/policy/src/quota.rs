//! Quotas as the policy writes them: a burst per window, and the limit the platform's
//! rate-limiting binding can count. Zero limits cannot be expressed (`NonZero`), so they cannot be
//! configured. The algorithm that applies them (GCRA) is the core's `limit`.

use std::num::{NonZeroU32, NonZeroU64};

use crate::text::push_u64;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Quota {
    burst: NonZeroU32,
    window_ms: NonZeroU64,
}

impl Quota {
    /// Zero limits and zero windows cannot be expressed, so they cannot be configured.
    pub fn new(burst: NonZeroU32, window_ms: NonZeroU64) -> Quota {
        Quota { burst, window_ms }
    }

    pub fn burst(&self) -> u32 {
        self.burst.get()
    }

    pub fn window_ms(&self) -> u64 {
        self.window_ms.get()
    }

    /// This quota as the platform's rate-limiting binding counts it, when the binding can: the
    /// binding takes a limit per period of 10 s or 60 s and nothing else.
    pub fn location(&self) -> Option<LocationLimit> {
        let period_s = self.window_ms.get() / 1000;
        (self.window_ms.get() % 1000 == 0 && LOCATION_PERIODS_S.contains(&period_s)).then_some(
            LocationLimit {
                limit: self.burst.get(),
                period_s,
            },
        )
    }
}

/// The periods the rate-limiting binding counts over (`simple.period` in `wrangler.toml`).
pub const LOCATION_PERIODS_S: [u64; 2] = [10, 60];

/// A limit of the platform's rate-limiting binding: `limit` per `period_s` in one location.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LocationLimit {
    pub limit: u32,
    pub period_s: u64,
}

impl LocationLimit {
    /// The binding's name in the environment (`[[ratelimits]] name`): one binding per distinct
    /// limit, named by it, so the names follow from the policy alone.
    pub fn binding_name(&self) -> String {
        let mut name = String::from("HARBOUR_RL_");
        push_u64(&mut name, u64::from(self.limit));
        name.push_str("_PER_");
        push_u64(&mut name, self.period_s);
        name.push('S');
        name
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quota(burst: u32, window_ms: u64) -> Quota {
        Quota::new(
            NonZeroU32::new(burst).unwrap(),
            NonZeroU64::new(window_ms).unwrap(),
        )
    }

    #[test]
    fn the_binding_counts_10_or_60_second_windows_only() {
        assert_eq!(
            quota(5, 60_000).location(),
            Some(LocationLimit {
                limit: 5,
                period_s: 60
            })
        );
        assert_eq!(quota(20, 10_000).location().map(|l| l.period_s), Some(10));
        for window_ms in [1_000, 30_000, 60_001, 10_500, 600_000] {
            assert_eq!(quota(5, window_ms).location(), None, "{window_ms}");
        }
        assert_eq!(
            quota(5, 60_000).location().unwrap().binding_name(),
            "HARBOUR_RL_5_PER_60S"
        );
    }
}
