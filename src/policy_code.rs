//! The checked policy as Rust code, so the worker carries its policies built rather than a JSON
//! parser and the policy checks (about a fifth of the wasm).
//!
//! build.rs parses and checks each policy it compiles in (`Policy::parse`), writes it back out
//! with `rust_source` to `$OUT_DIR/compiled_policy.rs`, and the crate includes that file as
//! `crate::compiled`. `compiled()` builds the live policy from it; a test checks that it equals
//! `Policy::parse(SHIPPED_POLICY)`. The helpers below are what that code calls.

use std::fmt::Write as _;
use std::num::{NonZeroU32, NonZeroU64};

use crate::country::Country;
use crate::field::Field;
use crate::limit::Quota;
use crate::policy::{
    Campaign, Policy, PolicyError, PolicyIssue, Region, SignalAction, SurgeWindow,
    CANDIDATE_POLICY, LIVE_FILE,
};

/// The shipped policy as build.rs compiled it in after its checks: equal to
/// `Policy::shipped()`, without a JSON parser or the checks in the worker.
pub fn compiled() -> Result<Policy, PolicyError> {
    crate::compiled::live().ok_or_else(not_compiled)
}

/// The candidate policy as build.rs compiled it in, if there is one (see `compiled`).
pub fn compiled_candidate() -> Option<Result<Policy, PolicyError>> {
    CANDIDATE_POLICY.map(|_| crate::compiled::candidate().ok_or_else(not_compiled))
}

/// What the build checked cannot fail to build again; if it did, this says so.
fn not_compiled() -> PolicyError {
    PolicyError(vec![PolicyIssue {
        path: LIVE_FILE.into(),
        message: "the compiled-in policy does not hold what its checks passed".into(),
    }])
}

/// A string of the compiled policy.
pub fn text(literal: &str) -> String {
    literal.to_owned()
}

/// Strings of the compiled policy.
pub fn texts(literals: &[&str]) -> Vec<String> {
    literals.iter().map(|s| text(s)).collect()
}

/// Country codes of the compiled policy; `None` for one that is not a code (the checks the
/// build ran make that impossible).
pub fn countries(codes: &[&str]) -> Option<Vec<Country>> {
    codes.iter().map(|code| Country::parse(code)).collect()
}

/// A quota of the compiled policy; `None` for a zero (as for `countries`).
pub fn quota(burst: u32, window_ms: u64) -> Option<Quota> {
    Some(Quota::new(
        NonZeroU32::new(burst)?,
        NonZeroU64::new(window_ms)?,
    ))
}

/// Rust source for `pub fn live() -> Option<Policy>` and `pub fn candidate() -> Option<Policy>`
/// building these policies (`candidate` is `None` without one).
pub fn rust_source(live: &Policy, candidate: Option<&Policy>) -> String {
    let mut out = String::from(
        "use crate::field::{Field, FieldKind};\n\
         use crate::policy::*;\n\
         use crate::policy_code::{countries, quota, text, texts};\n\n",
    );
    out.push_str("pub fn live() -> Option<Policy> {\n    Some(");
    policy(&mut out, live);
    out.push_str(
        ")\n}\n\n#[allow(clippy::unnecessary_wraps)]\npub fn candidate() -> Option<Policy> {\n    ",
    );
    match candidate {
        Some(candidate) => {
            out.push_str("Some(");
            policy(&mut out, candidate);
            out.push(')');
        }
        None => out.push_str("None"),
    }
    out.push_str("\n}\n");
    out
}

fn policy(out: &mut String, p: &Policy) {
    out.push_str("Policy::assembled(vec![");
    for region in &p.regions {
        self::region(out, region);
    }
    let _ = write!(
        out,
        "], RegionIndex({}), SignalPolicy {{ ",
        p.rest_of_world.get()
    );
    let signals = [
        ("unknown", p.signals.unknown),
        ("tor", p.signals.tor),
        ("missing", p.signals.missing),
    ];
    for (name, action) in signals {
        let _ = match action {
            SignalAction::Refuse => write!(out, "{name}: SignalAction::Refuse, "),
            SignalAction::RouteTo(index) => write!(
                out,
                "{name}: SignalAction::RouteTo(RegionIndex({})), ",
                index.get()
            ),
        };
    }
    let _ = write!(
        out,
        "}}, OnConflict::{:?}, {}, vec![",
        p.on_conflict, p.max_body_bytes
    );
    for campaign in &p.campaigns {
        self::campaign(out, campaign);
    }
    out.push_str("])");
}

fn region(out: &mut String, r: &Region) {
    let _ = write!(
        out,
        "Region {{ id: text({:?}), strictness: {}, countries: countries(&{:?})?, budget: ",
        r.id,
        r.strictness,
        r.countries.iter().map(Country::as_str).collect::<Vec<_>>()
    );
    option_quota(out, r.budget);
    out.push_str(" },\n");
}

fn quota_call(q: Quota) -> String {
    format!("quota({}, {})?", q.burst(), q.window_ms())
}

fn option_quota(out: &mut String, q: Option<Quota>) {
    match q {
        Some(q) => {
            let _ = write!(out, "Some({})", quota_call(q));
        }
        None => out.push_str("None"),
    }
}

fn option_text(value: &Option<String>) -> String {
    match value {
        Some(s) => format!("Some(text({s:?}))"),
        None => "None".into(),
    }
}

fn campaign(out: &mut String, c: &Campaign) {
    let _ = write!(
        out,
        "Campaign {{ id: text({:?}), title: text({:?}), fields: vec![",
        c.id, c.title
    );
    for f in &c.fields {
        field(out, f);
    }
    let _ = write!(
        out,
        "], honeypot: {}, allowed_origins: texts(&{:?}), per_client: {}, campaign: {}, \
         challenge: ChallengeRule {{ difficulty_bits: {}, valid_ms: {} }}, intro: {}, texts: vec![",
        option_text(&c.honeypot),
        c.allowed_origins,
        quota_call(c.per_client),
        quota_call(c.campaign),
        c.challenge.difficulty_bits,
        c.challenge.valid_ms,
        option_text(&c.intro),
    );
    for (locale, t) in &c.texts {
        let _ = write!(
            out,
            "({locale:?}, CampaignTexts {{ title: {}, intro: {}, labels: vec![",
            option_text(&t.title),
            option_text(&t.intro)
        );
        for (name, label) in &t.labels {
            let _ = write!(out, "(text({name:?}), text({label:?})), ");
        }
        out.push_str("] }),\n");
    }
    let _ = write!(
        out,
        "], one_entry_per: texts(&{:?}), on_location_unavailable: FailMode::{:?}, surge_windows: vec![",
        c.one_entry_per, c.on_location_unavailable
    );
    for w in &c.surge_windows {
        surge_window(out, w);
    }
    out.push_str("] },\n");
}

fn field(out: &mut String, f: &Field) {
    let _ = writeln!(
        out,
        "Field {{ name: text({:?}), label: text({:?}), kind: FieldKind::{:?}, required: {}, \
         max_length: {}, values: texts(&{:?}), min: {:?}, max: {:?}, must_be_true: {}, \
         residency_signal: {} }},",
        f.name,
        f.label,
        f.kind,
        f.required,
        f.max_length,
        f.values,
        f.min,
        f.max,
        f.must_be_true,
        f.residency_signal
    );
}

fn surge_window(out: &mut String, w: &SurgeWindow) {
    let _ = writeln!(
        out,
        "SurgeWindow {{ id: text({:?}), start_ms: {}, end_ms: {}, per_client: {}, \
         on_location_unavailable: FailMode::{:?}, difficulty_bits: {:?} }},",
        w.id,
        w.start_ms,
        w.end_ms,
        quota_call(w.per_client),
        w.on_location_unavailable,
        w.difficulty_bits
    );
}

#[cfg(test)]
mod tests {
    use super::{compiled, compiled_candidate};
    use crate::policy::{Policy, CANDIDATE_POLICY};

    #[test]
    fn the_compiled_policy_is_the_shipped_one() {
        assert_eq!(compiled(), Policy::shipped());
        assert!(compiled().is_ok());
    }

    #[test]
    fn the_compiled_candidate_is_the_candidate_file() {
        assert_eq!(compiled_candidate(), CANDIDATE_POLICY.map(Policy::parse));
    }

    #[test]
    fn the_source_builds_what_it_was_given_with_surge_windows_and_routes() {
        // The shipped policy has no surge window and refuses every doubtful signal; the text
        // the code is made from must carry those parts too. Checked on the text the build writes.
        let mut raw: serde_json::Value =
            serde_json::from_str(crate::policy::SHIPPED_POLICY).unwrap();
        raw["signals"]["tor"] = "region:global".into();
        raw["campaigns"][0]["surge_windows"] = serde_json::json!([{
            "id": "kickoff", "start": "2026-03-14T20:15:00Z", "end": "2026-03-14T20:45:00Z",
            "per_client": {"burst": 2, "window_ms": 60000},
            "on_location_unavailable": "fail_closed", "difficulty_bits": 22
        }]);
        let policy = Policy::parse(&raw.to_string()).unwrap();
        let code = super::rust_source(&policy, Some(&policy));
        assert!(
            code.contains("SignalAction::RouteTo(RegionIndex("),
            "{code}"
        );
        assert!(
            code.contains("SurgeWindow { id: text(\"kickoff\")"),
            "{code}"
        );
        assert!(code.contains("difficulty_bits: Some(22)"), "{code}");
        assert!(code.contains("pub fn candidate() -> Option<Policy> {\n    Some("));
    }
}
