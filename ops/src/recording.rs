//! A broadcast second by second: what each origin counted (the authority on stored rows) and what
//! the edge's data points say, kept as the sources report them, and turned into the series the
//! live view and the report draw.
//!
//! Sources are read again over a window (an origin's last seconds, the edge's last minutes: data
//! points arrive late), so each second's figures are replaced by the latest reading, never added
//! to: a reading twice counts once.

use std::collections::BTreeMap;

use harbour_contract::points::{quantile_ms, BUCKETS};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::words::{group, label, Group};

/// Seconds kept: six hours.
pub const MAX_SECONDS: u64 = 6 * 3_600;

/// One origin's second, from its `/v1/seconds`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OriginSecond {
    pub stored: u64,
    pub replayed: u64,
    pub refused: u64,
    pub failed: u64,
    pub shed: u64,
    pub in_flight_max: u64,
}

/// The edge's answers of one (second, region, outcome), summed over isolates and campaigns.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct EdgeCell {
    pub count: f64,
    pub latency_ms_sum: f64,
    pub buckets: [f64; BUCKETS],
}

impl EdgeCell {
    pub fn add(&mut self, other: &EdgeCell) {
        self.count += other.count;
        self.latency_ms_sum += other.latency_ms_sum;
        for (mine, theirs) in self.buckets.iter_mut().zip(other.buckets) {
            *mine += theirs;
        }
    }
}

/// One row an edge source reports.
#[derive(Clone, Debug, PartialEq)]
pub struct EdgeRow {
    pub second: u64,
    /// "" when no region was chosen.
    pub region: String,
    pub outcome: String,
    pub cell: EdgeCell,
}

/// An origin, as the recording names it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OriginName {
    pub label: String,
    pub region: String,
}

/// A rehearsal's audit, as the report shows it: (what, figure) pairs, and the answers by outcome.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Audit {
    pub passed: bool,
    pub figures: Vec<(String, String)>,
    pub answers: Vec<(String, u64)>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Recording {
    pub title: String,
    /// (id, name) of each region, in the policy's order.
    pub regions: Vec<(String, String)>,
    pub origins: Vec<OriginName>,
    /// second → origin label → its second.
    origin_seconds: BTreeMap<u64, BTreeMap<String, OriginSecond>>,
    /// second → region → outcome → cell.
    edge_seconds: BTreeMap<u64, BTreeMap<String, BTreeMap<String, EdgeCell>>>,
    /// Where the edge's figures come from, or why there are none.
    pub edge_source: String,
    pub audit: Option<Audit>,
}

impl Recording {
    pub fn new(title: &str, regions: Vec<(String, String)>, origins: Vec<OriginName>) -> Recording {
        Recording {
            title: title.to_owned(),
            regions,
            origins,
            ..Recording::default()
        }
    }

    /// An origin's reading: its seconds replace what was recorded for them.
    pub fn origin(&mut self, label: &str, seconds: Vec<(u64, OriginSecond)>) {
        for (second, counts) in seconds {
            self.origin_seconds
                .entry(second)
                .or_default()
                .insert(label.to_owned(), counts);
        }
        self.trim();
    }

    /// The edge's reading of every second from `from_s` on: it replaces those seconds.
    pub fn edge(&mut self, from_s: u64, rows: Vec<EdgeRow>) {
        let stale: Vec<u64> = self.edge_seconds.range(from_s..).map(|(s, _)| *s).collect();
        for second in stale {
            self.edge_seconds.remove(&second);
        }
        for row in rows.into_iter().filter(|r| r.second >= from_s) {
            self.edge_seconds
                .entry(row.second)
                .or_default()
                .entry(row.region)
                .or_default()
                .entry(row.outcome)
                .or_default()
                .add(&row.cell);
        }
        self.trim();
    }

    fn trim(&mut self) {
        let last = self.last_second().unwrap_or(0);
        let oldest = last.saturating_sub(MAX_SECONDS);
        self.origin_seconds = self.origin_seconds.split_off(&oldest);
        self.edge_seconds = self.edge_seconds.split_off(&oldest);
    }

    fn first_second(&self) -> Option<u64> {
        let origin = self.origin_seconds.keys().next().copied();
        let edge = self.edge_seconds.keys().next().copied();
        origin.into_iter().chain(edge).min()
    }

    fn last_second(&self) -> Option<u64> {
        let origin = self.origin_seconds.keys().next_back().copied();
        let edge = self.edge_seconds.keys().next_back().copied();
        origin.into_iter().chain(edge).max()
    }

    /// The charts' data, every second, as `charts.js` reads it: all recorded by default; the
    /// `last` seconds only, and none after `until`, when given.
    pub fn series(&self, last: Option<u64>, until: Option<u64>) -> Value {
        let (Some(first), Some(recorded)) = (self.first_second(), self.last_second()) else {
            return self.no_series();
        };
        let end = until.map_or(recorded, |until| recorded.min(until));
        if end < first {
            return self.no_series();
        }
        let start = last.map_or(first, |n| end.saturating_sub(n).max(first));
        let x: Vec<u64> = (start..=end).collect();
        let mut regions: Vec<Value> = self
            .regions
            .iter()
            .map(|(id, name)| self.region_series(&x, id, name))
            .collect();
        if self.has_edge_region(&x, "") {
            regions.push(self.region_series(&x, "", "Not placed in a region (refused before)"));
        }
        json!({
            "title": self.title,
            "x": x,
            "edge_source": self.edge_source,
            "regions": regions,
            "latency": self.latency_series(&x),
            "origins": self.origin_series(&x),
            "breakers": self.breaker_series(&x),
            "audit": self.audit,
        })
    }

    fn no_series(&self) -> Value {
        json!({"title": self.title, "x": [], "edge_source": self.edge_source,
               "regions": [], "origins": [], "audit": self.audit})
    }

    fn has_edge_region(&self, x: &[u64], region: &str) -> bool {
        x.iter().any(|s| {
            self.edge_seconds
                .get(s)
                .is_some_and(|r| r.contains_key(region))
        })
    }

    /// One region: its origins' stored rows a second, and the edge's answers by outcome.
    fn region_series(&self, x: &[u64], id: &str, name: &str) -> Value {
        let labels: Vec<&OriginName> = self.origins.iter().filter(|o| o.region == id).collect();
        let stored: Vec<Option<u64>> = x
            .iter()
            .map(|s| {
                let seconds = self.origin_seconds.get(s)?;
                let mine: Vec<&OriginSecond> = labels
                    .iter()
                    .filter_map(|o| seconds.get(&o.label))
                    .collect();
                (!mine.is_empty()).then(|| mine.iter().map(|o| o.stored).sum())
            })
            .collect();
        // Each outcome seen, as its label; those of one label summed.
        let mut by_label: BTreeMap<(Group, String), Vec<f64>> = BTreeMap::new();
        for (i, s) in x.iter().enumerate() {
            let Some(outcomes) = self.edge_seconds.get(s).and_then(|r| r.get(id)) else {
                continue;
            };
            for (outcome, cell) in outcomes {
                if group(outcome) == Group::Breaker {
                    continue;
                }
                let values = by_label
                    .entry((group(outcome), label(outcome)))
                    .or_insert_with(|| vec![0.0; x.len()]);
                values[i] += cell.count;
            }
        }
        let totals = |values: &[f64]| values.iter().sum::<f64>().round() as u64;
        let edge: Vec<Value> = by_label
            .into_iter()
            .map(|((_, label), values)| json!({"label": label, "total": totals(&values), "values": values}))
            .collect();
        let stored_total: u64 = stored.iter().flatten().sum();
        json!({"id": id, "name": name, "stored": stored, "stored_total": stored_total, "edge": edge})
    }

    /// The edge's time to answer a submission (all regions and outcomes), p50 and p99, in ms.
    fn latency_series(&self, x: &[u64]) -> Value {
        let mut p50 = Vec::with_capacity(x.len());
        let mut p99 = Vec::with_capacity(x.len());
        for s in x {
            let mut buckets = [0.0; BUCKETS];
            for (outcome, cell) in self
                .edge_seconds
                .get(s)
                .into_iter()
                .flat_map(|r| r.values())
                .flat_map(|o| o.iter())
            {
                if group(outcome) != Group::Breaker {
                    for (mine, theirs) in buckets.iter_mut().zip(cell.buckets) {
                        *mine += theirs;
                    }
                }
            }
            p50.push(quantile_ms(&buckets, 0.5));
            p99.push(quantile_ms(&buckets, 0.99));
        }
        json!({"p50": p50, "p99": p99})
    }

    /// Each origin's most in flight and what it shed, a second.
    fn origin_series(&self, x: &[u64]) -> Value {
        let series: Vec<Value> = self
            .origins
            .iter()
            .map(|o| {
                let of = |s: &u64| self.origin_seconds.get(s).and_then(|m| m.get(&o.label));
                let in_flight: Vec<Option<u64>> =
                    x.iter().map(|s| of(s).map(|c| c.in_flight_max)).collect();
                let shed: Vec<Option<u64>> = x.iter().map(|s| of(s).map(|c| c.shed)).collect();
                let shed_total: u64 = shed.iter().flatten().sum();
                json!({"label": o.label, "region": o.region, "in_flight": in_flight,
                       "shed": shed, "shed_total": shed_total})
            })
            .collect();
        Value::Array(series)
    }

    /// Each region's breaker openings a second, at the edge.
    fn breaker_series(&self, x: &[u64]) -> Value {
        let series: Vec<Value> = self
            .regions
            .iter()
            .map(|(id, _)| {
                let values: Vec<f64> = x
                    .iter()
                    .map(|s| {
                        self.edge_seconds
                            .get(s)
                            .and_then(|r| r.get(id))
                            .map_or(0.0, |o| {
                                o.iter()
                                    .filter(|(outcome, _)| group(outcome) == Group::Breaker)
                                    .map(|(_, c)| c.count)
                                    .sum()
                            })
                    })
                    .collect();
                let total = values.iter().sum::<f64>().round() as u64;
                json!({"label": id, "total": total, "values": values})
            })
            .collect();
        Value::Array(series)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cell(count: f64, bucket: usize) -> EdgeCell {
        let mut cell = EdgeCell {
            count,
            latency_ms_sum: count,
            ..EdgeCell::default()
        };
        cell.buckets[bucket] = count;
        cell
    }

    fn row(second: u64, region: &str, outcome: &str, count: f64) -> EdgeRow {
        EdgeRow {
            second,
            region: region.into(),
            outcome: outcome.into(),
            cell: cell(count, 1),
        }
    }

    #[test]
    fn readings_replace_their_seconds_and_become_series() {
        let origins = vec![
            OriginName {
                label: "eu a".into(),
                region: "eu".into(),
            },
            OriginName {
                label: "eu b".into(),
                region: "eu".into(),
            },
        ];
        let regions = vec![("eu".to_owned(), "Europe".to_owned())];
        let mut recording = Recording::new("test", regions, origins);
        let second = |stored| OriginSecond {
            stored,
            ..OriginSecond::default()
        };
        recording.origin("eu a", vec![(100, second(3)), (101, second(4))]);
        recording.origin("eu b", vec![(101, second(1))]);
        // Read again: replaced, not added.
        recording.origin("eu a", vec![(101, second(5))]);
        recording.edge(
            100,
            vec![
                row(100, "eu", "stored", 3.0),
                row(101, "", "validation_failed", 2.0),
            ],
        );
        recording.edge(
            101,
            vec![
                row(101, "", "validation_failed", 2.0),
                row(102, "eu", "breaker_opened", 1.0),
            ],
        );
        let series = recording.series(None, None);
        assert_eq!(series["x"], json!([100, 101, 102]));
        let eu = &series["regions"][0];
        assert_eq!(eu["stored"], json!([3, 6, null]));
        assert_eq!(eu["stored_total"], 9);
        assert_eq!(eu["edge"][0]["label"], "accepted: stored");
        assert_eq!(eu["edge"][0]["values"], json!([3.0, 0.0, 0.0]));
        let unplaced = &series["regions"][1];
        assert_eq!(unplaced["id"], "");
        assert_eq!(unplaced["edge"][0]["values"], json!([0.0, 2.0, 0.0]));
        assert_eq!(series["breakers"][0]["values"], json!([0.0, 0.0, 1.0]));
        assert_eq!(series["latency"]["p50"][2], Value::Null);
        assert!(series["latency"]["p50"][0].as_f64().unwrap() <= 5.0);
        // A recording survives being written and read back.
        let text = serde_json::to_string(&recording).unwrap();
        let back: Recording = serde_json::from_str(&text).unwrap();
        assert_eq!(back.series(None, None), series);
        assert_eq!(recording.series(Some(1), None)["x"], json!([101, 102]));
        // Seconds not yet over at the edge are left out of the live view.
        assert_eq!(recording.series(Some(1), Some(101))["x"], json!([100, 101]));
        assert_eq!(recording.series(None, Some(99))["x"], json!([]));
    }
}
