//! The edge's data points for Workers Analytics Engine: what the edge writes and what the live
//! view and the broadcast report read back, laid out once.
//!
//! One point is one second of one isolate for one (campaign, region, outcome, status):
//!
//! ```text
//! indexes  [campaign]                          the sampling key (absent when no campaign was named)
//! blobs    [campaign, region, outcome, status] region "" when none was chosen; status "" for a
//!                                              breaker opening; outcome as the log names it
//! doubles  [second, count, latency_ms_sum,     second: Unix seconds the point covers;
//!           bucket_1 … bucket_11]              bucket_i: how many answered within
//!                                              LATENCY_BOUNDS_MS[i-1] ms (the last, beyond them)
//! ```
//!
//! The latency buckets are columns of one point rather than a blob per bucket: a point per bucket
//! would multiply what an isolate writes by the buckets it sees, for the same sums. Nothing in a
//! point names a person: no field value, no address, no key, no request id. Counts are what they
//! are in the isolate; the platform may sample points, so readers weigh each by its
//! `_sample_interval` (<https://developers.cloudflare.com/analytics/analytics-engine/sampling/>).

/// The worker's binding (`[[analytics_engine_datasets]]` in `wrangler.toml`).
pub const ANALYTICS_BINDING: &str = "HARBOUR_ANALYTICS";
/// The dataset the binding writes to, which the SQL API reads as a table.
pub const DATASET: &str = "harbour_broadcast";

/// The outcome of a point that counts a region's breaker openings (an origin said it was full,
/// or stayed silent on its trial).
pub const BREAKER_OPENED: &str = "breaker_opened";

/// Upper bounds of the latency buckets, in ms; a last bucket holds everything beyond.
pub const LATENCY_BOUNDS_MS: [u64; 10] = [2, 5, 10, 25, 50, 100, 250, 500, 1_000, 2_500];
/// Latency buckets per point.
pub const BUCKETS: usize = LATENCY_BOUNDS_MS.len() + 1;

/// Positions in `blobs` (0-based; the SQL API names them `blob1` …).
pub const BLOB_CAMPAIGN: usize = 0;
pub const BLOB_REGION: usize = 1;
pub const BLOB_OUTCOME: usize = 2;
pub const BLOB_STATUS: usize = 3;
/// Positions in `doubles` (0-based; `double1` …).
pub const DOUBLE_SECOND: usize = 0;
pub const DOUBLE_COUNT: usize = 1;
pub const DOUBLE_LATENCY_SUM: usize = 2;
pub const DOUBLE_FIRST_BUCKET: usize = 3;
/// Doubles per point.
pub const DOUBLES: usize = DOUBLE_FIRST_BUCKET + BUCKETS;

/// The bucket a latency falls in.
pub fn bucket_of(latency_ms: u64) -> usize {
    LATENCY_BOUNDS_MS
        .iter()
        .position(|bound| latency_ms <= *bound)
        .unwrap_or(LATENCY_BOUNDS_MS.len())
}

/// The latency below which a share `q` (0..=1) of the counted answers fell, from their buckets:
/// linear within the bucket it lands in (the last bucket reads as its lower bound). `None` when
/// nothing was counted.
pub fn quantile_ms(buckets: &[f64; BUCKETS], q: f64) -> Option<f64> {
    let total: f64 = buckets.iter().sum();
    if total <= 0.0 {
        return None;
    }
    let wanted = q.clamp(0.0, 1.0) * total;
    let mut below = 0.0;
    for (i, count) in buckets.iter().enumerate() {
        if *count > 0.0 && below + count >= wanted {
            let low = if i == 0 { 0 } else { LATENCY_BOUNDS_MS[i - 1] } as f64;
            let Some(high) = LATENCY_BOUNDS_MS.get(i) else {
                return Some(low);
            };
            let within = ((wanted - below) / count).clamp(0.0, 1.0);
            return Some(low + within * (*high as f64 - low));
        }
        below += count;
    }
    LATENCY_BOUNDS_MS.last().map(|bound| *bound as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latencies_fall_in_the_bucket_of_their_upper_bound() {
        assert_eq!(bucket_of(0), 0);
        assert_eq!(bucket_of(2), 0);
        assert_eq!(bucket_of(3), 1);
        assert_eq!(bucket_of(2_500), 9);
        assert_eq!(bucket_of(2_501), 10);
        assert_eq!(DOUBLES, 14);
    }

    #[test]
    fn quantiles_interpolate_within_their_bucket() {
        let mut buckets = [0.0; BUCKETS];
        assert_eq!(quantile_ms(&buckets, 0.5), None);
        // 100 answers within 5 ms (bucket 2..5), one beyond 2.5 s.
        buckets[1] = 100.0;
        buckets[10] = 1.0;
        let p50 = quantile_ms(&buckets, 0.5).unwrap();
        assert!((p50 - 3.5).abs() < 0.1, "{p50}");
        assert_eq!(quantile_ms(&buckets, 1.0), Some(2_500.0));
        assert!(quantile_ms(&buckets, 0.99).unwrap() <= 5.0);
    }
}
