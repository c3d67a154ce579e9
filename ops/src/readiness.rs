//! The readiness check's verdicts: for each broadcast and region, what is expected against what
//! the policy allows and what the origins carried, and what to change when it does not fit.
//!
//! Rules:
//! - A region is ready when its origins stored at least the expected submissions per second plus
//!   [`HEADROOM`] (the first seconds after a spot airs run above the forecast). When not: a region
//!   on SQLite is to move to PostgreSQL (one writer at a time, an fsync per commit); one on
//!   PostgreSQL needs another origin (or a larger database).
//! - The per-client limit in force at the broadcast's start must let everyone behind one address
//!   (`visitors_per_address`) enter; if not, the surge window's limit is to be raised.
//! - The proof of work in force must be solved on a slow phone within [`FILL_SECONDS`], the time a
//!   visitor takes to fill in the form (the page solves meanwhile); if not, it is to be lowered.
//! - A broadcast after the campaign's end cannot take entries.
//! - No surge window around a broadcast is a note, not a failure: the campaign's own limits apply.

use harbour_policy::utc::format_ms;
use harbour_policy::{Campaign, Policy};

use crate::broadcast::Broadcast;
use crate::probe::Measured;

/// Capacity a region needs above the expected peak.
pub const HEADROOM: f64 = 1.3;
/// SHA-256 hashes a second on a slow phone: the campaign page's solver at 4× CPU throttling
/// (README, "The proof of work").
pub const SLOW_PHONE_HASHES_PER_S: f64 = 1_000_000.0;
/// The time a visitor takes to fill in the form, while the page solves the proof of work.
pub const FILL_SECONDS: f64 = 10.0;

/// One region's line of a broadcast.
#[derive(Clone, Debug, PartialEq)]
pub struct RegionCheck {
    pub region: String,
    pub expected: f64,
    pub capacity: Option<f64>,
    pub ready: bool,
    pub verdict: String,
}

/// A broadcast, checked.
#[derive(Clone, Debug, PartialEq)]
pub struct Check {
    pub heading: String,
    /// The limits in force at its start, in words.
    pub limits: Vec<String>,
    pub regions: Vec<RegionCheck>,
    /// What must change before the broadcast.
    pub changes: Vec<String>,
    /// Worth knowing; nothing to change.
    pub notes: Vec<String>,
}

impl Check {
    pub fn ready(&self) -> bool {
        self.changes.is_empty()
    }
}

/// `1234.5` as `1,235`.
pub fn rate(n: f64) -> String {
    let whole = n.round().max(0.0) as u64;
    let digits = whole.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn per_window(burst: u32, window_ms: u64) -> String {
    match window_ms {
        1_000 => format!("{burst} a second"),
        60_000 => format!("{burst} a minute"),
        ms if ms % 1_000 == 0 => format!("{burst} per {} s", ms / 1_000),
        ms => format!("{burst} per {ms} ms"),
    }
}

/// `ms` as the policy writes a time: `2027-03-13T20:15:00Z`.
fn policy_time(ms: u64) -> String {
    format_ms(ms).replace(".000Z", "Z")
}

fn solve_seconds(bits: u8) -> f64 {
    2f64.powi(i32::from(bits)) / SLOW_PHONE_HASHES_PER_S
}

/// Checks one broadcast of `campaign` against the measured regions.
pub fn check(
    policy: &Policy,
    campaign: &Campaign,
    broadcast: &Broadcast,
    measured: &[Measured],
) -> Check {
    let in_force = campaign.in_force(broadcast.start_ms);
    let mut check = Check {
        heading: format!(
            "Broadcast \"{}\": {}, {} visitors a second at the peak, {} submission(s) each",
            broadcast.name,
            broadcast.when(),
            rate(broadcast.visitors_per_second),
            broadcast.submissions_per_visitor
        ),
        limits: Vec::new(),
        regions: Vec::new(),
        changes: Vec::new(),
        notes: Vec::new(),
    };
    let window_name = match in_force.window {
        Some((_, window)) => {
            if window.end_ms < broadcast.end_ms {
                check.notes.push(format!(
                    "surge window \"{}\" ends at {}, before the peak does ({}): the campaign's own limits apply after it",
                    window.id,
                    &format_ms(window.end_ms)[11..16],
                    &format_ms(broadcast.end_ms)[11..16],
                ));
            }
            format!("surge window \"{}\"", window.id)
        }
        None => {
            check.notes.push(format!(
                "no surge window covers this broadcast, so the campaign's own limits apply; to give it limits of its own, add to campaign \"{}\" in the policy: \"surge_windows\": [{{\"id\": \"…\", \"start\": \"{}\", \"end\": \"{}\", \"per_client\": {{\"burst\": …, \"window_ms\": 60000}}}}]",
                campaign.id,
                policy_time(broadcast.start_ms),
                policy_time(broadcast.end_ms),
            ));
            "the campaign's own limits (no surge window)".into()
        }
    };
    limits(
        policy,
        campaign,
        broadcast,
        &in_force,
        &window_name,
        &mut check,
    );
    for (region, expected) in &broadcast.expected {
        check.regions.push(region_check(
            region,
            *expected,
            measured,
            &mut check.changes,
        ));
    }
    if broadcast.start_ms >= campaign.ends_ms {
        check.changes.push(format!(
            "the campaign ends at {}, before this broadcast: move its \"ends\" in the policy",
            format_ms(campaign.ends_ms)
        ));
    }
    check
}

/// The limits in force, in words, and the changes they call for.
fn limits(
    policy: &Policy,
    campaign: &Campaign,
    broadcast: &Broadcast,
    in_force: &harbour_policy::InForce,
    window_name: &str,
    check: &mut Check,
) {
    let per_client = in_force.per_client;
    let binding = per_client
        .location()
        .map(|l| format!(", counted across each location by {}", l.binding_name()))
        .unwrap_or_default();
    check.limits.push(format!("in force: {window_name}"));
    check.limits.push(format!(
        "each visitor's address may enter {}{binding}; when that count cannot be had: {}",
        per_window(per_client.burst(), per_client.window_ms()),
        in_force.on_location_unavailable.as_str()
    ));
    let bits = in_force.difficulty_bits;
    check.limits.push(format!(
        "proof of work: {bits} bits, about {:.1} s on a slow phone (solved while the form is filled in)",
        solve_seconds(bits)
    ));
    let mut guards = format!(
        "runaway guards per isolate (not fleet limits): campaign {}",
        per_window(campaign.campaign.burst(), campaign.campaign.window_ms())
    );
    for region in &policy.regions {
        if let Some(budget) = region.budget {
            guards.push_str(&format!(
                ", {} {}",
                region.id,
                per_window(budget.burst(), budget.window_ms())
            ));
        }
    }
    check.limits.push(guards);
    let per_address = (f64::from(broadcast.visitors_per_address)
        * broadcast.submissions_per_visitor)
        .ceil() as u32;
    if per_client.burst() < per_address {
        check.changes.push(format!(
            "raise the per-client limit ({window_name}) to at least {} : up to {} visitors share one address, and the limit now lets {} in",
            per_window(per_address, per_client.window_ms()),
            broadcast.visitors_per_address,
            per_window(per_client.burst(), per_client.window_ms()),
        ).replace(" :", ":"));
    }
    if solve_seconds(bits) > FILL_SECONDS {
        let fits = (SLOW_PHONE_HASHES_PER_S * FILL_SECONDS).log2().floor() as u8;
        check.changes.push(format!(
            "lower the difficulty ({window_name}, \"difficulty_bits\") to {fits} bits or fewer: at {bits} bits a slow phone needs about {:.0} s, longer than filling in the form",
            solve_seconds(bits)
        ));
    }
}

fn region_check(
    region: &str,
    expected: f64,
    measured: &[Measured],
    changes: &mut Vec<String>,
) -> RegionCheck {
    let found = measured.iter().find(|m| m.region == region);
    let capacity = found.and_then(Measured::capacity);
    let needed = expected * HEADROOM;
    let mut line = RegionCheck {
        region: region.to_owned(),
        expected,
        capacity,
        ready: true,
        verdict: String::new(),
    };
    if expected <= 0.0 {
        line.verdict = "none expected".into();
        return line;
    }
    let Some(capacity) = capacity else {
        line.ready = false;
        let why = found
            .and_then(|m| m.problem.clone())
            .unwrap_or_else(|| "not probed".into());
        line.verdict = format!("NOT CHECKED: {why}");
        changes.push(format!(
            "measure {region}'s origins (the probe could not: {why})"
        ));
        return line;
    };
    if capacity >= needed {
        line.verdict = format!("ready ({:.1}× the expected peak)", capacity / expected);
        return line;
    }
    line.ready = false;
    line.verdict = format!(
        "NOT READY: needs {}/s with {:.0} % headroom",
        rate(needed),
        (HEADROOM - 1.0) * 100.0
    );
    let store = found.map_or("unknown", |m| m.store.as_str());
    changes.push(if store == "sqlite" {
        format!(
            "move {region} to PostgreSQL: its origins stored {}/s on SQLite (one writer at a time, an fsync per commit) and {}/s are needed; PostgreSQL commits concurrent entries together (README, \"Stores\"; locally `bash scripts/run --postgres`)",
            rate(capacity),
            rate(needed)
        )
    } else {
        let more = (needed / capacity * found.map_or(1, |m| m.origins) as f64).ceil();
        format!(
            "add origins to {region} (about {more:.0} in all, in HARBOUR_ORIGINS_{}), or give its database more room: they stored {}/s and {}/s are needed",
            region.to_ascii_uppercase().replace('-', "_"),
            rate(capacity),
            rate(needed)
        )
    });
    line
}

/// The probe's findings, a line per region.
pub fn render_measured(measured: &[Measured]) -> String {
    let mut out = String::new();
    for m in measured {
        let line = match (m.capacity(), &m.problem) {
            (Some(capacity), _) => format!(
                "  {:<8} {} origin(s), {:<9} stored {:>7}/s   ({} stored in {:.1} s, {} turned away as full, {} failed; p50 {:.1} ms, p99 {:.1} ms)",
                m.region, m.origins, m.store, rate(capacity), m.stored, m.seconds, m.busy, m.failed, m.p50_ms, m.p99_ms
            ),
            (None, Some(problem)) => format!("  {:<8} not measured: {problem}", m.region),
            (None, None) => format!("  {:<8} not measured", m.region),
        };
        out.push_str(&line);
        out.push('\n');
    }
    out
}

/// A broadcast's check, as printed.
pub fn render_check(check: &Check) -> String {
    let mut out = format!("{}\n", check.heading);
    for limit in &check.limits {
        out.push_str(&format!("  {limit}\n"));
    }
    out.push_str(&format!(
        "  {:<8} {:>18} {:>16}   verdict\n",
        "region", "expected at peak", "origins stored"
    ));
    for region in &check.regions {
        let capacity = region
            .capacity
            .map_or_else(|| "not measured".into(), |c| format!("{}/s", rate(c)));
        out.push_str(&format!(
            "  {:<8} {:>18} {:>16}   {}\n",
            region.region,
            format!("{}/s", rate(region.expected)),
            capacity,
            region.verdict
        ));
    }
    for change in &check.changes {
        out.push_str(&format!("  CHANGE: {change}\n"));
    }
    for note in &check.notes {
        out.push_str(&format!("  note: {note}\n"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broadcast;

    fn measured(region: &str, store: &str, per_s: f64) -> Measured {
        Measured {
            region: region.into(),
            origins: 2,
            store: store.into(),
            stored: (per_s * 2.0) as u64,
            seconds: 2.0,
            ..Measured::default()
        }
    }

    fn broadcast(extra: &str) -> Broadcast {
        let text = format!(
            "campaign = \"spring-launch\"\n[[broadcast]]\nname = \"spot\"\nstart = \"2027-03-13T20:15:00Z\"\nminutes = 30\nvisitors_per_second = 1000\n{extra}\n[broadcast.countries]\nIT = 0.8\nCN = 0.2\n"
        );
        let policy = Policy::shipped().unwrap();
        broadcast::parse(&text, &policy)
            .unwrap()
            .broadcasts
            .remove(0)
    }

    #[test]
    fn a_region_short_of_capacity_is_not_ready_and_says_what_to_change() {
        let policy = Policy::shipped().unwrap();
        let campaign = &policy.campaigns[0];
        let spot = broadcast("");
        let all = |eu: Measured| {
            let mut list: Vec<Measured> = policy
                .regions
                .iter()
                .map(|r| measured(&r.id, "sqlite", 5_000.0))
                .collect();
            list.retain(|m| m.region != "eu");
            list.push(eu);
            list
        };
        let ok = check(
            &policy,
            campaign,
            &spot,
            &all(measured("eu", "sqlite", 1_100.0)),
        );
        assert!(ok.ready(), "{ok:?}");
        let short = check(
            &policy,
            campaign,
            &spot,
            &all(measured("eu", "sqlite", 900.0)),
        );
        assert!(!short.ready());
        let eu = short.regions.iter().find(|r| r.region == "eu").unwrap();
        assert_eq!(eu.expected, 800.0);
        assert!(eu.verdict.starts_with("NOT READY"), "{}", eu.verdict);
        assert!(
            short.changes[0].contains("move eu to PostgreSQL"),
            "{:?}",
            short.changes
        );
        let pg = check(
            &policy,
            campaign,
            &spot,
            &all(measured("eu", "postgres", 900.0)),
        );
        assert!(
            pg.changes[0].contains("add origins to eu"),
            "{:?}",
            pg.changes
        );
        // No surge window in the shipped policy: a note, not a change.
        assert!(
            short.notes[0].contains("no surge window"),
            "{:?}",
            short.notes
        );
    }

    #[test]
    fn shared_addresses_and_slow_phones_call_for_other_limits() {
        let policy = Policy::shipped().unwrap();
        let mut campaign = policy.campaigns[0].clone();
        let spot = broadcast("visitors_per_address = 8");
        let fine: Vec<Measured> = policy
            .regions
            .iter()
            .map(|r| measured(&r.id, "postgres", 10_000.0))
            .collect();
        let shared = check(&policy, &campaign, &spot, &fine);
        assert!(
            shared
                .changes
                .iter()
                .any(|c| c.contains("raise the per-client limit")),
            "{:?}",
            shared.changes
        );
        campaign.challenge.difficulty_bits = 26;
        let slow = check(&policy, &campaign, &broadcast(""), &fine);
        assert!(
            slow.changes
                .iter()
                .any(|c| c.contains("lower the difficulty") && c.contains("to 23 bits")),
            "{:?}",
            slow.changes
        );
        assert_eq!(rate(12_345.4), "12,345");
    }
}
