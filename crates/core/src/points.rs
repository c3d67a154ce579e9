//! The isolate's data points for Workers Analytics Engine (laid out in
//! `harbour_contract::points`): what the live view and the broadcast report plot for the edge.
//!
//! Rules:
//! - Every decision about a submission counts, whatever the log writes (a failover's stored entry
//!   stands alone in the log and is counted here too); form descriptions and preflights are not
//!   entries and do not count.
//! - A point is one second of this isolate for one (campaign, region, outcome, status): how many,
//!   their latency summed and how many fell in each latency bucket. Breaker openings are points
//!   of their region (outcome `breaker_opened`).
//! - A second is written once it is over, with the isolate's next decision, which carries the
//!   points to the shell in the answer it already sends: no call across the boundary of its own.
//!   At most [`MAX_POINTS`] go with one decision, the oldest first (the platform takes 25 per
//!   invocation); the rest go with the next ones.
//! - What waits is bounded: past [`MAX_ROWS`] rows the current second is written early too (a
//!   second in two points sums the same).
//!
//! Example: three answers stored in second 100, one refused in second 101; the first decision in
//! second 102 carries two points: (100, stored, count 3) and (101, validation_failed, count 1).

use harbour_contract::points::{bucket_of, BREAKER_OPENED, BUCKETS};
use harbour_policy::text::{push_quoted, push_u64};

use crate::outcome::Outcome;

/// What a point counts of one finished decision: nothing that names a person or a request.
#[derive(Clone, Copy, Debug)]
pub struct Counted<'a> {
    pub campaign: Option<&'a str>,
    pub region: Option<&'a str>,
    pub outcome: Outcome,
    pub status: u16,
    pub latency_ms: u64,
}

/// Points one decision carries at most: the platform's limit per invocation in its older, lower
/// form (<https://developers.cloudflare.com/analytics/analytics-engine/limits/>).
pub const MAX_POINTS: usize = 25;
/// Rows an isolate keeps before writing the current second early.
pub const MAX_ROWS: usize = 256;

#[derive(Debug)]
struct Row {
    second: u64,
    campaign: Option<String>,
    region: Option<String>,
    outcome: &'static str,
    /// 0 for a breaker opening, which has no status.
    status: u16,
    count: u64,
    latency_ms_sum: u64,
    buckets: [u64; BUCKETS],
}

impl Row {
    fn is(&self, second: u64, campaign: Option<&str>, region: Option<&str>, outcome: &str) -> bool {
        self.second == second
            && self.outcome == outcome
            && self.region.as_deref() == region
            && self.campaign.as_deref() == campaign
    }
}

/// The points an isolate has counted and not yet handed over.
#[derive(Debug, Default)]
pub struct Points {
    rows: Vec<Row>,
}

impl Points {
    /// Counts a decision finished at `now_ms`.
    pub fn record(&mut self, counted: Counted, now_ms: u64) {
        if counted.outcome == Outcome::Described {
            return;
        }
        let row = self.row(
            now_ms / 1_000,
            counted.campaign,
            counted.region,
            counted.outcome.name(),
            counted.status,
        );
        row.count += 1;
        row.latency_ms_sum = row.latency_ms_sum.saturating_add(counted.latency_ms);
        row.buckets[bucket_of(counted.latency_ms)] += 1;
    }

    /// Counts a breaker of `region` opening at `now_ms`.
    pub fn opened(&mut self, region: &str, now_ms: u64) {
        self.row(now_ms / 1_000, None, Some(region), BREAKER_OPENED, 0)
            .count += 1;
    }

    /// The row of a second and key, made when new. The current second's rows are the last ones,
    /// so the search starts from the end.
    fn row(
        &mut self,
        second: u64,
        campaign: Option<&str>,
        region: Option<&str>,
        outcome: &'static str,
        status: u16,
    ) -> &mut Row {
        let found = self
            .rows
            .iter()
            .rposition(|row| row.status == status && row.is(second, campaign, region, outcome));
        let at = match found {
            Some(at) => at,
            None => {
                self.rows.push(Row {
                    second,
                    campaign: campaign.map(str::to_owned),
                    region: region.map(str::to_owned),
                    outcome,
                    status,
                    count: 0,
                    latency_ms_sum: 0,
                    buckets: [0; BUCKETS],
                });
                self.rows.len() - 1
            }
        };
        &mut self.rows[at]
    }

    /// The points due at `now_ms`, as the JSON array of `writeDataPoint` arguments the shell
    /// writes as given: the seconds that are over (or, past [`MAX_ROWS`], every row), in the
    /// order they were first counted (oldest first), at most [`MAX_POINTS`]. `None` when
    /// nothing is due.
    pub fn due(&mut self, now_ms: u64) -> Option<String> {
        let now_s = now_ms / 1_000;
        let crowded = self.rows.len() >= MAX_ROWS;
        if !crowded && self.rows.first().is_none_or(|row| row.second >= now_s) {
            return None;
        }
        let mut out = String::with_capacity(2_048);
        let mut written = 0;
        self.rows.retain(|row| {
            let due = written < MAX_POINTS && (crowded || row.second < now_s);
            if due {
                out.push(if written == 0 { '[' } else { ',' });
                push_point(&mut out, row);
                written += 1;
            }
            !due
        });
        if written == 0 {
            return None;
        }
        out.push(']');
        Some(out)
    }
}

/// `{"indexes":[campaign],"blobs":[campaign,region,outcome,status],"doubles":[second,count,
/// latency_ms_sum,bucket…]}`.
fn push_point(out: &mut String, row: &Row) {
    out.push('{');
    if let Some(campaign) = &row.campaign {
        out.push_str("\"indexes\":[");
        push_quoted(out, campaign);
        out.push_str("],");
    }
    out.push_str("\"blobs\":[");
    push_quoted(out, row.campaign.as_deref().unwrap_or_default());
    out.push(',');
    push_quoted(out, row.region.as_deref().unwrap_or_default());
    out.push(',');
    push_quoted(out, row.outcome);
    out.push_str(",\"");
    if row.status != 0 {
        push_u64(out, u64::from(row.status));
    }
    out.push_str("\"],\"doubles\":[");
    for (i, value) in [row.second, row.count, row.latency_ms_sum]
        .iter()
        .chain(row.buckets.iter())
        .enumerate()
    {
        if i > 0 {
            out.push(',');
        }
        push_u64(out, *value);
    }
    out.push_str("]}");
}

#[cfg(test)]
mod tests {
    use super::*;
    use harbour_contract::points::{
        BLOB_OUTCOME, BLOB_REGION, BLOB_STATUS, DOUBLES, DOUBLE_COUNT, DOUBLE_FIRST_BUCKET,
        DOUBLE_LATENCY_SUM, DOUBLE_SECOND,
    };
    use serde_json::{json, Value};

    fn counted(
        outcome: Outcome,
        status: u16,
        region: Option<&str>,
        latency_ms: u64,
    ) -> Counted<'_> {
        Counted {
            campaign: Some("spring-launch"),
            region,
            outcome,
            status,
            latency_ms,
        }
    }

    fn parse(points: Option<String>) -> Vec<Value> {
        serde_json::from_str::<Value>(&points.expect("points due"))
            .unwrap()
            .as_array()
            .unwrap()
            .clone()
    }

    #[test]
    fn a_second_is_written_once_it_is_over_and_only_once() {
        let mut points = Points::default();
        for latency in [1, 3, 30] {
            points.record(
                counted(Outcome::Stored, 202, Some("eu"), latency),
                100_000 + latency,
            );
        }
        assert_eq!(points.due(100_999), None, "second 100 is not over");
        points.record(counted(Outcome::ValidationFailed, 422, None, 0), 101_200);
        let written = parse(points.due(102_000));
        assert_eq!(written.len(), 2);
        let stored = &written[0];
        assert_eq!(stored["indexes"], json!(["spring-launch"]));
        assert_eq!(stored["blobs"][BLOB_REGION], "eu");
        assert_eq!(stored["blobs"][BLOB_OUTCOME], "stored");
        assert_eq!(stored["blobs"][BLOB_STATUS], "202");
        let doubles = stored["doubles"].as_array().unwrap();
        assert_eq!(doubles.len(), DOUBLES);
        assert_eq!(doubles[DOUBLE_SECOND], 100);
        assert_eq!(doubles[DOUBLE_COUNT], 3);
        assert_eq!(doubles[DOUBLE_LATENCY_SUM], 34);
        // 1 ms and 3 ms in the first two buckets, 30 ms in the fifth (25..50).
        assert_eq!(doubles[DOUBLE_FIRST_BUCKET], 1);
        assert_eq!(doubles[DOUBLE_FIRST_BUCKET + 1], 1);
        assert_eq!(doubles[DOUBLE_FIRST_BUCKET + 4], 1);
        assert_eq!(
            written[1]["blobs"][BLOB_REGION], "",
            "not placed in a region"
        );
        assert_eq!(points.due(103_000), None, "each second is written once");
    }

    #[test]
    fn the_current_second_waits_and_descriptions_are_not_entries() {
        let mut points = Points::default();
        points.record(counted(Outcome::Described, 200, None, 0), 5_000);
        assert_eq!(points.due(9_000), None);
        points.record(counted(Outcome::Stored, 202, Some("cn"), 100), 9_100);
        assert_eq!(points.due(9_900), None, "second 9 is not over");
        assert_eq!(parse(points.due(10_000)).len(), 1);
    }

    #[test]
    fn breaker_openings_are_points_of_their_region() {
        let mut points = Points::default();
        points.opened("eu", 7_000);
        points.opened("eu", 7_500);
        let written = parse(points.due(8_000));
        assert_eq!(written[0]["blobs"], json!(["", "eu", "breaker_opened", ""]));
        assert_eq!(written[0]["doubles"][DOUBLE_COUNT], 2);
        assert!(written[0].get("indexes").is_none());
    }

    #[test]
    fn one_decision_carries_at_most_the_platforms_limit_oldest_first() {
        let mut points = Points::default();
        for second in 0..(MAX_POINTS as u64 + 5) {
            points.record(counted(Outcome::Stored, 202, Some("eu"), 0), second * 1_000);
        }
        let now = (MAX_POINTS as u64 + 5) * 1_000;
        let first = parse(points.due(now));
        assert_eq!(first.len(), MAX_POINTS);
        assert_eq!(first[0]["doubles"][DOUBLE_SECOND], 0);
        let rest = parse(points.due(now));
        assert_eq!(rest.len(), 5);
        assert_eq!(rest[4]["doubles"][DOUBLE_SECOND], MAX_POINTS as u64 + 4);
        assert_eq!(points.due(now), None);
    }

    #[test]
    fn past_the_bound_the_current_second_is_written_early() {
        let mut points = Points::default();
        let campaigns: Vec<String> = (0..MAX_ROWS).map(|i| format!("campaign-{i}")).collect();
        for campaign in &campaigns {
            let mut c = counted(Outcome::Stored, 202, Some("eu"), 0);
            c.campaign = Some(campaign);
            points.record(c, 1_000);
        }
        assert_eq!(parse(points.due(1_500)).len(), MAX_POINTS);
        assert!(points.rows.len() < MAX_ROWS);
    }
}
