//! The broadcasts of a campaign, as the campaign team knows them (a TOML file they fill in; the
//! shipped policy's is `policy/broadcasts.toml`):
//!
//! ```toml
//! campaign = "spring-launch"
//!
//! [[broadcast]]
//! name = "Saturday prime time"
//! start = "2027-03-13T20:15:00Z"    # UTC, as the policy writes times
//! minutes = 30                       # how long the peak lasts
//! visitors_per_second = 5000         # expected at the peak
//! submissions_per_visitor = 1.0      # optional: 1 (every visitor enters) unless known
//! visitors_per_address = 1           # optional: people behind one address (offices, mobile carriers)
//! [broadcast.countries]              # the audience by country (ISO 3166 codes), shares adding up to 1;
//! IT = 0.6                           # "other" is everyone else (the policy's rest-of-world region)
//! other = 0.4
//! ```
//!
//! Expected submissions per second in a region = visitors per second × submissions per visitor ×
//! the shares of the countries the policy places in that region.

use harbour_policy::country::Country;
use harbour_policy::utc::{format_ms, parse_ms};
use harbour_policy::Policy;
use serde::Deserialize;

/// The share key for everyone outside the listed countries.
pub const OTHER: &str = "other";

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    campaign: String,
    #[serde(default)]
    broadcast: Vec<Entry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    name: String,
    start: String,
    minutes: u32,
    visitors_per_second: f64,
    #[serde(default = "one")]
    submissions_per_visitor: f64,
    #[serde(default = "one_address")]
    visitors_per_address: u32,
    countries: toml::Table,
}

fn one() -> f64 {
    1.0
}

fn one_address() -> u32 {
    1
}

/// One broadcast, checked against the policy.
#[derive(Clone, Debug, PartialEq)]
pub struct Broadcast {
    pub name: String,
    pub start_ms: u64,
    pub end_ms: u64,
    pub visitors_per_second: f64,
    pub submissions_per_visitor: f64,
    pub visitors_per_address: u32,
    /// Expected submissions per second at the peak, per region (the policy's order; 0 where none
    /// is expected).
    pub expected: Vec<(String, f64)>,
}

impl Broadcast {
    pub fn when(&self) -> String {
        let start = format_ms(self.start_ms);
        let end = format_ms(self.end_ms);
        // 2027-03-13T20:15:00.000Z → "2027-03-13 20:15"
        format!(
            "{} {} to {} UTC",
            &start[..10],
            &start[11..16],
            &end[11..16]
        )
    }

    pub fn expected_total(&self) -> f64 {
        self.expected.iter().map(|(_, n)| n).sum()
    }
}

/// A campaign's broadcasts.
#[derive(Clone, Debug, PartialEq)]
pub struct Broadcasts {
    pub campaign: String,
    pub broadcasts: Vec<Broadcast>,
}

/// Reads a broadcasts file against `policy`; every problem at once, each naming its entry.
pub fn parse(text: &str, policy: &Policy) -> Result<Broadcasts, Vec<String>> {
    let file: File = toml::from_str(text).map_err(|e| vec![e.to_string()])?;
    let mut problems = Vec::new();
    if policy.campaign(&file.campaign).is_none() {
        problems.push(format!(
            "campaign {:?}: the policy has no such campaign",
            file.campaign
        ));
    }
    if file.broadcast.is_empty() {
        problems.push("no [[broadcast]] entry".into());
    }
    let mut broadcasts = Vec::new();
    for (i, entry) in file.broadcast.iter().enumerate() {
        let at = format!("broadcast {} ({:?})", i + 1, entry.name);
        match check(entry, policy) {
            Ok(broadcast) => broadcasts.push(broadcast),
            Err(issues) => problems.extend(issues.into_iter().map(|p| format!("{at}: {p}"))),
        }
    }
    if problems.is_empty() {
        Ok(Broadcasts {
            campaign: file.campaign,
            broadcasts,
        })
    } else {
        Err(problems)
    }
}

fn check(entry: &Entry, policy: &Policy) -> Result<Broadcast, Vec<String>> {
    let mut problems = Vec::new();
    let start_ms = parse_ms(&entry.start).map_err(|e| format!("start: {e}"));
    if entry.minutes == 0 {
        problems.push("minutes: at least 1".into());
    }
    if !(entry.visitors_per_second.is_finite() && entry.visitors_per_second > 0.0) {
        problems.push("visitors_per_second: a number above 0".into());
    }
    let spv = entry.submissions_per_visitor;
    if !(spv.is_finite() && spv > 0.0 && spv <= 10.0) {
        problems.push("submissions_per_visitor: a number above 0 (and at most 10)".into());
    }
    if entry.visitors_per_address == 0 {
        problems.push("visitors_per_address: at least 1".into());
    }
    let mut shares = vec![0.0; policy.regions.len()];
    let mut total = 0.0;
    for (code, share) in &entry.countries {
        let Some(share) = share.as_float().or(share.as_integer().map(|n| n as f64)) else {
            problems.push(format!("countries.{code}: a share between 0 and 1"));
            continue;
        };
        if !(0.0..=1.0).contains(&share) {
            problems.push(format!("countries.{code}: a share between 0 and 1"));
            continue;
        }
        let region = if code == OTHER {
            policy.rest_of_world
        } else {
            match Country::parse(code) {
                Some(country) => policy.region_of(country),
                None => {
                    problems.push(format!(
                        "countries.{code}: not an ISO 3166 country code (or \"{OTHER}\")"
                    ));
                    continue;
                }
            }
        };
        shares[region.get()] += share;
        total += share;
    }
    if entry.countries.is_empty() {
        problems.push("countries: the audience by country, shares adding up to 1".into());
    } else if (total - 1.0).abs() > 0.001 {
        problems.push(format!("countries: the shares add up to {total:.3}, not 1"));
    }
    let start_ms = match start_ms {
        Ok(ms) => ms,
        Err(e) => {
            problems.push(e);
            0
        }
    };
    if !problems.is_empty() {
        return Err(problems);
    }
    let per_second = entry.visitors_per_second * spv;
    Ok(Broadcast {
        name: entry.name.clone(),
        start_ms,
        end_ms: start_ms + u64::from(entry.minutes) * 60_000,
        visitors_per_second: entry.visitors_per_second,
        submissions_per_visitor: spv,
        visitors_per_address: entry.visitors_per_address,
        expected: policy
            .regions
            .iter()
            .zip(shares)
            .map(|(region, share)| (region.id.clone(), per_second * share))
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = r#"
campaign = "spring-launch"
[[broadcast]]
name = "prime time"
start = "2027-03-13T20:15:00Z"
minutes = 30
visitors_per_second = 1000
submissions_per_visitor = 0.5
[broadcast.countries]
IT = 0.5
DE = 0.2
CN = 0.1
other = 0.2
"#;

    #[test]
    fn expected_submissions_follow_the_policys_regions() {
        let policy = Policy::shipped().unwrap();
        let read = parse(FILE, &policy).unwrap();
        let broadcast = &read.broadcasts[0];
        let expected = |id: &str| {
            broadcast
                .expected
                .iter()
                .find(|(r, _)| r == id)
                .map(|(_, n)| *n)
                .unwrap()
        };
        assert_eq!(expected("eu"), 350.0);
        assert_eq!(expected("cn"), 50.0);
        assert_eq!(expected("global"), 100.0);
        assert_eq!(expected("ru"), 0.0);
        assert_eq!(broadcast.expected_total(), 500.0);
        assert_eq!(broadcast.visitors_per_address, 1);
        assert_eq!(broadcast.when(), "2027-03-13 20:15 to 20:45 UTC");
    }

    #[test]
    fn every_problem_is_named_at_once() {
        let policy = Policy::shipped().unwrap();
        let bad = FILE
            .replace("spring-launch", "autumn")
            .replace("IT = 0.5", "XY1 = 0.5\nFR = 2")
            .replace("2027-03-13T20:15:00Z", "2027-03-13T20:15:00+01:00");
        let problems = parse(&bad, &policy).unwrap_err();
        let text = problems.join("\n");
        for wanted in ["autumn", "XY1", "countries.FR", "start:", "add up to"] {
            assert!(text.contains(wanted), "{wanted} not in\n{text}");
        }
    }
}
