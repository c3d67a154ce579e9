//! What the edge writes to the log.
//!
//! At a broadcast peak a line per accepted submission is millions of lines that repeat what the
//! origins already store (each row carries its request id), and writing one costs about as much
//! CPU as everything harbour decides. So by default (`HARBOUR_LOG=summary`) outcomes a visitor
//! caused (accepted, replayed, refused with a 4xx) are counted per campaign, region and outcome
//! and written as one `harbour.summary` line per isolate at most every [`SUMMARY_WINDOW_MS`],
//! while everything an operator must look at is written at once, one line each: every 5xx, and
//! every forward that needed more than one attempt. `HARBOUR_LOG=decisions` writes every decision
//! on its own line. No line carries personal data.
//!
//! With a candidate policy (see `shadow`), the summary also counts, per campaign, the submissions
//! the candidate was evaluated on and the (live → candidate) region and outcome pairs that
//! differed, in either log mode.
//!
//! With the Analytics Engine binding, every decision is also counted in the isolate's data points
//! (see `points`), which go to the shell with the decision that makes them due, as the summary
//! does.

use crate::config::LogMode;
use crate::outcome::Outcome;
use crate::points::{Counted, Points};
use crate::reply::Phase;
use crate::shadow::Comparison;
use harbour_policy::text::{push_quoted, push_u64};

/// The log record of one decision. It carries no personal data: no field values, no address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogRecord {
    pub request_id: String,
    pub campaign: Option<String>,
    pub region: Option<String>,
    pub phase: Phase,
    pub outcome: Outcome,
    pub status: u16,
    /// Origin attempts made: 0 when nothing was forwarded.
    pub attempts: u32,
    pub received_ms: u64,
}

impl LogRecord {
    pub fn to_json(&self, now_ms: u64) -> String {
        // Written directly: a line per decision, on the hot path.
        let mut line = String::with_capacity(192);
        line.push_str("{\"msg\":\"harbour.decision\",\"request_id\":");
        push_quoted(&mut line, &self.request_id);
        line.push_str(",\"campaign\":");
        push_optional(&mut line, self.campaign.as_deref());
        line.push_str(",\"region\":");
        push_optional(&mut line, self.region.as_deref());
        line.push_str(",\"phase\":");
        push_quoted(&mut line, self.phase.as_str());
        line.push_str(",\"outcome\":");
        push_quoted(&mut line, self.outcome.name());
        line.push_str(",\"status\":");
        push_u64(&mut line, u64::from(self.status));
        line.push_str(",\"attempts\":");
        push_u64(&mut line, u64::from(self.attempts));
        line.push_str(",\"latency_ms\":");
        push_u64(&mut line, now_ms.saturating_sub(self.received_ms));
        line.push('}');
        line
    }
}

/// The longest a summary covers.
pub const SUMMARY_WINDOW_MS: u64 = 10_000;
/// Distinct (campaign, region, outcome, status) rows a summary holds before it is written early.
const MAX_SUMMARY_ROWS: usize = 64;

#[derive(Debug)]
struct Row {
    campaign: Option<String>,
    region: Option<String>,
    outcome: Outcome,
    status: u16,
    count: u64,
    latency_ms_max: u64,
    latency_ms_total: u64,
}

/// A campaign's shadow counts in a summary window. Pairs are bounded by the policies (their
/// regions and the phases' refusal codes), not by traffic.
#[derive(Debug)]
struct ShadowRow {
    campaign: String,
    evaluated: u64,
    /// (live region, candidate region, count), `None` where a policy placed nothing.
    regions: Vec<(Option<String>, Option<String>, u64)>,
    /// (live outcome, candidate outcome, count), by name.
    outcomes: Vec<(&'static str, &'static str, u64)>,
}

/// The lines one decision produces: its own, a summary when one is due, and the data points
/// that are due (a JSON array, see `points`).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Lines {
    pub decision: Option<String>,
    pub summary: Option<String>,
    pub points: Option<String>,
}

#[derive(Debug, Default)]
pub struct Journal {
    mode: LogMode,
    window_start_ms: Option<u64>,
    rows: Vec<Row>,
    shadow: Vec<ShadowRow>,
    /// Counted only where the Analytics Engine binding is there to take them.
    points: Option<Points>,
}

impl Journal {
    pub fn new(mode: LogMode) -> Journal {
        Journal {
            mode,
            ..Journal::default()
        }
    }

    /// The same journal, counting data points too.
    pub fn with_points(mut self) -> Journal {
        self.points = Some(Points::default());
        self
    }

    /// Counts a breaker of `region` opening, in the data points.
    pub fn opened(&mut self, region: &str, now_ms: u64) {
        if let Some(points) = &mut self.points {
            points.opened(region, now_ms);
        }
    }

    /// The data points due after a decision at `now_ms`, the decision counted first.
    fn points(&mut self, record: &LogRecord, now_ms: u64) -> Option<String> {
        let points = self.points.as_mut()?;
        let counted = Counted {
            campaign: record.campaign.as_deref(),
            region: record.region.as_deref(),
            outcome: record.outcome,
            status: record.status,
            latency_ms: now_ms.saturating_sub(record.received_ms),
        };
        points.record(counted, now_ms);
        points.due(now_ms)
    }

    /// Whether a decision gets a line of its own.
    pub fn stands_alone(&self, record: &LogRecord) -> bool {
        self.mode == LogMode::Decisions
            || (record.status >= 500 && !record.outcome.sheds_load())
            || record.attempts > 1
    }

    pub fn record(&mut self, record: &LogRecord, now_ms: u64) -> Lines {
        let points = self.points(record, now_ms);
        if self.stands_alone(record) {
            return Lines {
                decision: Some(record.to_json(now_ms)),
                summary: self.due(now_ms, false),
                points,
            };
        }
        let latency = now_ms.saturating_sub(record.received_ms);
        self.window_start_ms.get_or_insert(now_ms);
        let same = |row: &&mut Row| {
            row.status == record.status
                && row.outcome == record.outcome
                && row.region == record.region
                && row.campaign == record.campaign
        };
        match self.rows.iter_mut().find(same) {
            Some(row) => {
                row.count += 1;
                row.latency_ms_total = row.latency_ms_total.saturating_add(latency);
                row.latency_ms_max = row.latency_ms_max.max(latency);
            }
            None => self.rows.push(Row {
                campaign: record.campaign.clone(),
                region: record.region.clone(),
                outcome: record.outcome,
                status: record.status,
                count: 1,
                latency_ms_max: latency,
                latency_ms_total: latency,
            }),
        }
        Lines {
            decision: None,
            summary: self.due(now_ms, self.rows.len() >= MAX_SUMMARY_ROWS),
            points,
        }
    }

    /// Counts a shadow comparison; it is written with the window's summary.
    pub fn shadow(&mut self, comparison: &Comparison, now_ms: u64) {
        self.window_start_ms.get_or_insert(now_ms);
        let at = match self
            .shadow
            .iter()
            .position(|row| row.campaign == comparison.campaign)
        {
            Some(at) => at,
            None => {
                self.shadow.push(ShadowRow {
                    campaign: comparison.campaign.to_owned(),
                    evaluated: 0,
                    regions: Vec::new(),
                    outcomes: Vec::new(),
                });
                self.shadow.len() - 1
            }
        };
        let row = &mut self.shadow[at];
        row.evaluated += 1;
        let (live, candidate) = (&comparison.live, &comparison.candidate);
        if comparison.region_differs() {
            let same = |pair: &&mut (Option<String>, Option<String>, u64)| {
                pair.0.as_deref() == live.region && pair.1.as_deref() == candidate.region
            };
            match row.regions.iter_mut().find(same) {
                Some(pair) => pair.2 += 1,
                None => row.regions.push((
                    live.region.map(str::to_owned),
                    candidate.region.map(str::to_owned),
                    1,
                )),
            }
        }
        if comparison.outcome_differs() {
            let pair = (live.outcome_name(), candidate.outcome_name());
            match row.outcomes.iter_mut().find(|p| (p.0, p.1) == pair) {
                Some(found) => found.2 += 1,
                None => row.outcomes.push((pair.0, pair.1, 1)),
            }
        }
    }

    /// The summary line, if the window has run its length (or `force`), and a fresh window.
    fn due(&mut self, now_ms: u64, force: bool) -> Option<String> {
        let start = self.window_start_ms?;
        if !force && now_ms.saturating_sub(start) < SUMMARY_WINDOW_MS {
            return None;
        }
        self.window_start_ms = None;
        if self.rows.is_empty() && self.shadow.is_empty() {
            return None;
        }
        let mut line = String::with_capacity(64 + 128 * self.rows.len());
        line.push_str("{\"msg\":\"harbour.summary\",\"from_ms\":");
        push_u64(&mut line, start);
        line.push_str(",\"to_ms\":");
        push_u64(&mut line, now_ms);
        line.push_str(",\"outcomes\":[");
        for (i, row) in self.rows.drain(..).enumerate() {
            if i > 0 {
                line.push(',');
            }
            line.push_str("{\"campaign\":");
            push_optional(&mut line, row.campaign.as_deref());
            line.push_str(",\"region\":");
            push_optional(&mut line, row.region.as_deref());
            line.push_str(",\"outcome\":");
            push_quoted(&mut line, row.outcome.name());
            for (name, value) in [
                (",\"status\":", u64::from(row.status)),
                (",\"count\":", row.count),
                (
                    ",\"latency_ms_mean\":",
                    row.latency_ms_total / row.count.max(1),
                ),
                (",\"latency_ms_max\":", row.latency_ms_max),
            ] {
                line.push_str(name);
                push_u64(&mut line, value);
            }
            line.push('}');
        }
        line.push(']');
        if !self.shadow.is_empty() {
            line.push_str(",\"shadow\":[");
            for (i, row) in self.shadow.drain(..).enumerate() {
                if i > 0 {
                    line.push(',');
                }
                push_shadow_row(&mut line, &row);
            }
            line.push(']');
        }
        line.push('}');
        Some(line)
    }
}

/// `{"campaign","evaluated","region_changes":[{"live","candidate","count"}],"outcome_changes":
/// [...]}`: what a candidate would have decided differently in one campaign.
fn push_shadow_row(line: &mut String, row: &ShadowRow) {
    line.push_str("{\"campaign\":");
    push_quoted(line, &row.campaign);
    line.push_str(",\"evaluated\":");
    push_u64(line, row.evaluated);
    line.push_str(",\"region_changes\":[");
    for (i, (live, candidate, count)) in row.regions.iter().enumerate() {
        push_change(line, i, live.as_deref(), candidate.as_deref(), *count);
    }
    line.push_str("],\"outcome_changes\":[");
    for (i, (live, candidate, count)) in row.outcomes.iter().enumerate() {
        push_change(line, i, Some(live), Some(candidate), *count);
    }
    line.push_str("]}");
}

fn push_change(line: &mut String, i: usize, live: Option<&str>, candidate: Option<&str>, n: u64) {
    if i > 0 {
        line.push(',');
    }
    line.push_str("{\"live\":");
    push_optional(line, live);
    line.push_str(",\"candidate\":");
    push_optional(line, candidate);
    line.push_str(",\"count\":");
    push_u64(line, n);
    line.push('}');
}

fn push_optional(out: &mut String, value: Option<&str>) {
    match value {
        Some(value) => push_quoted(out, value),
        None => out.push_str("null"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn record(outcome: Outcome, status: u16, attempts: u32, received_ms: u64) -> LogRecord {
        LogRecord {
            request_id: "r1".into(),
            campaign: Some("spring-launch".into()),
            region: Some("eu".into()),
            phase: Phase::Forward,
            outcome,
            status,
            attempts,
            received_ms,
        }
    }

    #[test]
    fn visitor_outcomes_are_counted_and_written_once_per_window() {
        let mut journal = Journal::new(LogMode::Summary);
        let t0 = 1_000_000;
        for i in 0..5 {
            let lines = journal.record(&record(Outcome::Stored, 202, 1, t0 + i), t0 + i + 3 + i);
            assert_eq!(lines, Lines::default(), "nothing written inside the window");
        }
        journal.record(&record(Outcome::ValidationFailed, 422, 0, t0 + 10), t0 + 10);
        let lines = journal.record(
            &record(Outcome::Stored, 202, 1, t0 + SUMMARY_WINDOW_MS),
            t0 + 3 + SUMMARY_WINDOW_MS,
        );
        assert_eq!(lines.decision, None);
        let summary: Value = serde_json::from_str(&lines.summary.unwrap()).unwrap();
        assert_eq!(summary["msg"], "harbour.summary");
        assert_eq!(summary["from_ms"], t0 + 3);
        let rows = summary["outcomes"].as_array().unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0]["outcome"], "stored");
        assert_eq!(rows[0]["count"], 6);
        assert_eq!(rows[0]["latency_ms_max"], 7);
        assert_eq!(rows[1]["status"], 422);
        assert_eq!(rows[1]["count"], 1);
        // A fresh window starts empty.
        let next = journal.record(
            &record(Outcome::Stored, 202, 1, t0 + SUMMARY_WINDOW_MS + 4),
            t0 + SUMMARY_WINDOW_MS + 4,
        );
        assert_eq!(next, Lines::default());
    }

    #[test]
    fn operator_matters_stand_alone() {
        let mut journal = Journal::new(LogMode::Summary);
        let failover = journal.record(&record(Outcome::Stored, 202, 2, 10), 20);
        let line: Value = serde_json::from_str(&failover.decision.unwrap()).unwrap();
        assert_eq!(line["attempts"], 2);
        assert_eq!(line["latency_ms"], 10);
        let unavailable = journal.record(&record(Outcome::OriginsUnavailable, 503, 2, 10), 20);
        assert!(unavailable.decision.is_some());
        let config = journal.record(&record(Outcome::ConfigInvalid, 500, 0, 10), 20);
        assert!(config.decision.is_some());
    }

    #[test]
    fn load_shedding_503s_are_counted_not_written_one_by_one() {
        let mut journal = Journal::new(LogMode::Summary);
        let shedding = [
            Outcome::RegionBusy,
            Outcome::OriginsBusy,
            Outcome::LocationLimitUnavailable,
        ];
        for outcome in shedding {
            assert!(outcome.sheds_load());
            let lines = journal.record(&record(outcome, 503, 0, 10), 20);
            assert_eq!(lines, Lines::default(), "{outcome:?}");
        }
        let lines = journal.record(
            &record(Outcome::Stored, 202, 1, 10 + SUMMARY_WINDOW_MS),
            20 + SUMMARY_WINDOW_MS,
        );
        let summary: Value = serde_json::from_str(&lines.summary.unwrap()).unwrap();
        assert_eq!(summary["outcomes"].as_array().unwrap().len(), 4);
        // Other 5xx still stand alone.
        assert!(journal
            .record(&record(Outcome::OriginsUnavailable, 503, 1, 10), 20)
            .decision
            .is_some());
    }

    #[test]
    fn decisions_mode_writes_every_decision() {
        let mut journal = Journal::new(LogMode::Decisions);
        let lines = journal.record(&record(Outcome::Stored, 202, 1, 10), 12);
        assert!(lines.decision.unwrap().contains("\"outcome\":\"stored\""));
    }

    #[test]
    fn shadow_differences_are_counted_per_campaign_in_either_mode() {
        use crate::shadow::View;
        let placed = |region| View::placed(Some(region));
        let compare = |live, candidate| Comparison {
            campaign: "spring-launch",
            live,
            candidate,
        };
        let conflict = View {
            region: None,
            outcome: Some(Outcome::Unplaceable(
                crate::phase::residency::Unplaceable::Conflict,
            )),
        };
        for mode in [LogMode::Summary, LogMode::Decisions] {
            let mut journal = Journal::new(mode);
            let t0 = 1_000;
            journal.shadow(&compare(placed("eu"), placed("eu")), t0);
            journal.shadow(&compare(placed("eu"), placed("ru")), t0 + 1);
            journal.shadow(&compare(placed("eu"), placed("ru")), t0 + 2);
            journal.shadow(&compare(placed("cn"), conflict), t0 + 3);
            let quiet = journal.record(&record(Outcome::Stored, 202, 1, t0), t0 + 4);
            assert_eq!(quiet.summary, None, "{mode:?}: inside the window");
            let lines =
                journal.record(&record(Outcome::Stored, 202, 1, t0), t0 + SUMMARY_WINDOW_MS);
            let summary: Value = serde_json::from_str(&lines.summary.unwrap()).unwrap();
            assert_eq!(
                summary["shadow"],
                serde_json::json!([{
                    "campaign": "spring-launch",
                    "evaluated": 4,
                    "region_changes": [
                        {"live": "eu", "candidate": "ru", "count": 2},
                        {"live": "cn", "candidate": null, "count": 1}
                    ],
                    "outcome_changes": [
                        {"live": "placed", "candidate": "residency_conflict", "count": 1}
                    ]
                }]),
                "{mode:?}"
            );
            let next = journal.record(
                &record(Outcome::Stored, 202, 1, t0),
                t0 + 2 * SUMMARY_WINDOW_MS,
            );
            assert!(
                next.summary.is_none_or(|line| !line.contains("shadow")),
                "a fresh window starts without shadow counts"
            );
        }
    }

    #[test]
    fn data_points_count_every_decision_only_where_the_binding_takes_them() {
        let mut plain = Journal::new(LogMode::Summary);
        let mut counting = Journal::new(LogMode::Summary).with_points();
        for journal in [&mut plain, &mut counting] {
            // A failover stands alone in the log; it is an entry all the same.
            journal.record(&record(Outcome::Stored, 202, 2, 1_000), 1_040);
            journal.record(&record(Outcome::Stored, 202, 1, 1_000), 1_010);
            journal.opened("eu", 1_020);
        }
        let later = record(Outcome::ValidationFailed, 422, 0, 2_500);
        assert_eq!(plain.record(&later, 2_500).points, None);
        let points: Value =
            serde_json::from_str(&counting.record(&later, 2_500).points.unwrap()).unwrap();
        let counts: Vec<(String, u64)> = points
            .as_array()
            .unwrap()
            .iter()
            .map(|p| {
                let outcome = p["blobs"][2].as_str().unwrap().to_owned();
                (outcome, p["doubles"][1].as_u64().unwrap())
            })
            .collect();
        assert_eq!(
            counts,
            [("stored".to_owned(), 2), ("breaker_opened".to_owned(), 1)]
        );
    }

    #[test]
    fn a_summary_without_a_candidate_has_no_shadow_member() {
        let mut journal = Journal::new(LogMode::Summary);
        journal.record(&record(Outcome::Stored, 202, 1, 0), 1);
        let lines = journal.record(&record(Outcome::Stored, 202, 1, 0), 1 + SUMMARY_WINDOW_MS);
        let summary: Value = serde_json::from_str(&lines.summary.unwrap()).unwrap();
        assert!(summary.get("shadow").is_none());
    }

    #[test]
    fn many_distinct_outcomes_write_the_summary_early() {
        let mut journal = Journal::new(LogMode::Summary);
        let mut written = None;
        for i in 0..MAX_SUMMARY_ROWS {
            let mut r = record(Outcome::Stored, 202, 1, 10);
            r.campaign = Some(format!("campaign-{i}"));
            let lines = journal.record(&r, 11);
            if lines.summary.is_some() {
                written = Some(i);
            }
        }
        assert_eq!(written, Some(MAX_SUMMARY_ROWS - 1));
    }
}
