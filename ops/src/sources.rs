//! Where the figures come from: each origin's operations listener (`/v1/seconds`), and the edge's
//! data points, from a local recorder or from the Workers Analytics Engine SQL API
//! (<https://developers.cloudflare.com/analytics/analytics-engine/sql-api/>), read with a token
//! this process holds and no page ever sees.

use harbour_contract::points::{
    BLOB_CAMPAIGN, BLOB_OUTCOME, BLOB_REGION, BUCKETS, DOUBLE_COUNT, DOUBLE_FIRST_BUCKET,
    DOUBLE_LATENCY_SUM, DOUBLE_SECOND,
};
use serde_json::Value;

use crate::http::Client;
use crate::recording::{EdgeCell, EdgeRow, OriginSecond};
use crate::target::{Edge, Origin};

/// How far back the SQL API is asked: data points reach it within minutes.
const AE_LOOKBACK_MINUTES: u64 = 15;

fn number(value: &Value) -> f64 {
    match value {
        Value::Number(n) => n.as_f64().unwrap_or(0.0),
        // The SQL API's JSON may quote 64-bit integers.
        Value::String(s) => s.parse().unwrap_or(0.0),
        _ => 0.0,
    }
}

/// Seconds an origin keeps (`origin/src/seconds.rs`): none before them is filled in.
const ORIGIN_KEPT_SECONDS: u64 = 300;

/// An origin's seconds from `since_s` up to its own clock's, every one of them: a second it
/// leaves out had nothing happen (zero counts), so an idle origin still draws its line at 0.
pub fn origin_seconds(
    client: &Client,
    origin: &Origin,
    since_s: u64,
) -> Result<Vec<(u64, OriginSecond)>, String> {
    let answer = client.get(&format!("{}/v1/seconds?since={since_s}", origin.ops))?;
    if answer.status != 200 {
        return Err(format!(
            "{}/v1/seconds answered {}",
            origin.ops, answer.status
        ));
    }
    Ok(read_seconds(&answer.json()?, since_s))
}

/// `/v1/seconds`' answer as every second from `since_s` to its `now_s`.
fn read_seconds(report: &Value, since_s: u64) -> Vec<(u64, OriginSecond)> {
    let seconds = report["seconds"].as_array().cloned().unwrap_or_default();
    let mut read: std::collections::BTreeMap<u64, OriginSecond> = seconds
        .iter()
        .map(|s| {
            let n = |name: &str| number(&s[name]) as u64;
            (
                n("second"),
                OriginSecond {
                    stored: n("stored"),
                    replayed: n("replayed"),
                    refused: n("refused"),
                    failed: n("failed"),
                    shed: n("shed"),
                    in_flight_max: n("in_flight_max"),
                },
            )
        })
        .collect();
    if let Some(now_s) = report["now_s"].as_u64() {
        let first = since_s.max(now_s.saturating_sub(ORIGIN_KEPT_SECONDS - 1));
        for second in first..=now_s {
            read.entry(second).or_default();
        }
    }
    read.into_iter().collect()
}

/// The edge's rows for the seconds from `since_s` on, of `campaign` (all campaigns if `None`).
pub fn edge_rows(
    client: &Client,
    edge: &Edge,
    token: Option<&str>,
    campaign: Option<&str>,
    since_s: u64,
) -> Result<Vec<EdgeRow>, String> {
    match edge {
        Edge::None => Ok(Vec::new()),
        Edge::Recorder(url) => {
            let answer = client.get(&format!("{url}/points?since_s={since_s}"))?;
            let points = answer.json()?["points"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            Ok(points
                .iter()
                .filter(|p| campaign.is_none_or(|c| p["blobs"][BLOB_CAMPAIGN] == c))
                .filter_map(point_row)
                .filter(|row| row.second >= since_s)
                .collect())
        }
        Edge::AnalyticsEngine {
            api,
            account_id,
            dataset,
        } => {
            let token = token.ok_or("no Analytics Engine token")?;
            let url = format!("{api}/accounts/{account_id}/analytics_engine/sql");
            let query = ae_query(dataset, campaign, since_s)?;
            let authorization = format!("Bearer {token}");
            let answer = client.post(&url, &[("authorization", &authorization)], &query)?;
            if answer.status != 200 {
                // The body may say why (a token without Account Analytics Read); never the token.
                let body: String = answer.body.chars().take(300).collect();
                return Err(format!(
                    "the Analytics Engine SQL API answered {}: {body}",
                    answer.status
                ));
            }
            Ok(ae_rows(&answer.json()?))
        }
    }
}

/// A data point as `writeDataPoint` took it, as a row.
fn point_row(point: &Value) -> Option<EdgeRow> {
    let blobs = point["blobs"].as_array()?;
    let doubles = point["doubles"].as_array()?;
    let double = |i: usize| doubles.get(i).map_or(0.0, number);
    let text = |i: usize| {
        blobs
            .get(i)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    let mut cell = EdgeCell {
        count: double(DOUBLE_COUNT),
        latency_ms_sum: double(DOUBLE_LATENCY_SUM),
        ..EdgeCell::default()
    };
    for (i, bucket) in cell.buckets.iter_mut().enumerate() {
        *bucket = double(DOUBLE_FIRST_BUCKET + i);
    }
    Some(EdgeRow {
        second: double(DOUBLE_SECOND) as u64,
        region: text(BLOB_REGION),
        outcome: text(BLOB_OUTCOME),
        cell,
    })
}

/// The SQL: each (second, region, outcome)'s sums, every point weighed by its sample interval.
pub fn ae_query(dataset: &str, campaign: Option<&str>, since_s: u64) -> Result<String, String> {
    let column = |kind: &str, i: usize| format!("{kind}{}", i + 1);
    let plain = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_-".contains(&b))
    };
    if !plain(dataset) || campaign.is_some_and(|c| !plain(c)) {
        return Err("a dataset or campaign that is not a plain name".into());
    }
    let mut sql = format!(
        "SELECT {} AS second, {} AS region, {} AS outcome, SUM(_sample_interval * {}) AS count, SUM(_sample_interval * {}) AS latency_ms_sum",
        column("double", DOUBLE_SECOND),
        column("blob", BLOB_REGION),
        column("blob", BLOB_OUTCOME),
        column("double", DOUBLE_COUNT),
        column("double", DOUBLE_LATENCY_SUM),
    );
    for i in 0..BUCKETS {
        sql.push_str(&format!(
            ", SUM(_sample_interval * {}) AS bucket{}",
            column("double", DOUBLE_FIRST_BUCKET + i),
            i + 1
        ));
    }
    sql.push_str(&format!(
        " FROM {dataset} WHERE timestamp > NOW() - INTERVAL '{AE_LOOKBACK_MINUTES}' MINUTE AND {} >= {since_s}",
        column("double", DOUBLE_SECOND)
    ));
    if let Some(campaign) = campaign {
        sql.push_str(&format!(
            " AND {} = '{campaign}'",
            column("blob", BLOB_CAMPAIGN)
        ));
    }
    sql.push_str(" GROUP BY second, region, outcome ORDER BY second FORMAT JSON");
    Ok(sql)
}

/// The rows of a `FORMAT JSON` answer: `{"meta":[..],"data":[{..}],"rows":N}`.
pub fn ae_rows(answer: &Value) -> Vec<EdgeRow> {
    let data = answer["data"].as_array().cloned().unwrap_or_default();
    data.iter()
        .map(|row| {
            let mut cell = EdgeCell {
                count: number(&row["count"]),
                latency_ms_sum: number(&row["latency_ms_sum"]),
                ..EdgeCell::default()
            };
            for (i, bucket) in cell.buckets.iter_mut().enumerate() {
                *bucket = number(&row[format!("bucket{}", i + 1)]);
            }
            EdgeRow {
                second: number(&row["second"]) as u64,
                region: row["region"].as_str().unwrap_or_default().to_owned(),
                outcome: row["outcome"].as_str().unwrap_or_default().to_owned(),
                cell,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_query_weighs_each_point_by_its_sample_interval_and_names_plain_things_only() {
        let sql = ae_query("harbour_broadcast", Some("spring-launch"), 1_800_000_000).unwrap();
        for wanted in [
            "SELECT double1 AS second, blob2 AS region, blob3 AS outcome",
            "SUM(_sample_interval * double2) AS count",
            "SUM(_sample_interval * double14) AS bucket11",
            "FROM harbour_broadcast WHERE timestamp > NOW() - INTERVAL '15' MINUTE AND double1 >= 1800000000",
            "AND blob1 = 'spring-launch'",
            "GROUP BY second, region, outcome ORDER BY second FORMAT JSON",
        ] {
            assert!(sql.contains(wanted), "{wanted} not in {sql}");
        }
        assert!(ae_query("harbour_broadcast", Some("x' OR '1'='1"), 0).is_err());
    }

    #[test]
    fn an_origins_quiet_seconds_read_as_zero() {
        let report = json!({"now_s": 1_800_000_003u64, "seconds": [
            {"second": 1_800_000_001u64, "stored": 4, "in_flight_max": 2}
        ]});
        let read = read_seconds(&report, 1_800_000_000);
        let seconds: Vec<u64> = read.iter().map(|(s, _)| *s).collect();
        assert_eq!(seconds, (1_800_000_000..=1_800_000_003).collect::<Vec<_>>());
        assert_eq!(read[1].1.stored, 4);
        assert_eq!(read[0].1, OriginSecond::default());
        // From an old `since`, only what the origin keeps.
        assert_eq!(read_seconds(&report, 0).len(), 300);
    }

    #[test]
    fn answers_and_points_read_as_rows() {
        let answer = json!({"meta": [], "rows": 1, "data": [
            {"second": 1800000000.0, "region": "eu", "outcome": "stored", "count": "12",
             "latency_ms_sum": 48, "bucket2": 12}
        ]});
        let rows = ae_rows(&answer);
        assert_eq!(rows[0].second, 1_800_000_000);
        assert_eq!(rows[0].cell.count, 12.0);
        assert_eq!(rows[0].cell.buckets[1], 12.0);
        let point = json!({"indexes": ["spring-launch"], "blobs": ["spring-launch", "", "validation_failed", "422"],
                           "doubles": [1800000001, 2, 3, 2]});
        let row = point_row(&point).unwrap();
        assert_eq!(
            (row.second, row.region.as_str(), row.cell.count),
            (1_800_000_001, "", 2.0)
        );
        assert_eq!(row.cell.buckets[0], 2.0);
    }
}
