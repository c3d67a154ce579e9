//! The checked policy as Rust code, so the worker carries its policies built rather than a JSON
//! parser and the policy checks (about a fifth of the wasm).
//!
//! The worker's build.rs parses and checks each policy it compiles in (`Policy::parse`), writes
//! it back out with `rust_source` to `$OUT_DIR/compiled_policy.rs`, and the worker includes that
//! file; a test there checks that it builds what `Policy::parse` reads. The helpers below are
//! what that code calls.

use std::fmt::Write as _;
use std::num::{NonZeroU32, NonZeroU64};

use crate::country::Country;
use crate::field::Field;
use crate::notice::DrawScope;
use crate::quota::Quota;
use crate::{Campaign, Policy, Region, RegionIndex, SignalAction, SurgeWindow};

/// A region's position in the compiled policy (which the build checked).
#[inline]
pub const fn region_index(index: usize) -> RegionIndex {
    RegionIndex(index)
}

/// A string of the compiled policy.
#[inline]
pub fn text(literal: &str) -> String {
    literal.to_owned()
}

/// Strings of the compiled policy.
#[inline]
pub fn texts(literals: &[&str]) -> Vec<String> {
    literals.iter().map(|s| text(s)).collect()
}

/// Country codes of the compiled policy; `None` for one that is not a code (the checks the
/// build ran make that impossible).
#[inline]
pub fn countries(codes: &[&str]) -> Option<Vec<Country>> {
    codes.iter().map(|code| Country::parse(code)).collect()
}

/// A quota of the compiled policy; `None` for a zero (as for `countries`).
#[inline]
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
        "use harbour_policy::code::{countries, quota, region_index, text, texts};\n\
         use harbour_policy::field::{Field, FieldKind};\n\
         #[allow(unused_imports)]\n\
         use harbour_policy::ingress::{Ingress, KeptInRegionBy};\n\
         use harbour_policy::notice::{Draw, DrawScope, Notice};\n\
         use harbour_policy::*;\n\n",
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
        "], region_index({}), SignalPolicy {{ ",
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
                "{name}: SignalAction::RouteTo(region_index({})), ",
                index.get()
            ),
        };
    }
    let _ = write!(
        out,
        "}}, OnConflict::{:?}, DeclaredMove::{:?}, {}, vec![",
        p.on_conflict, p.declared_move, p.max_body_bytes
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
    let _ = write!(out, ", name: text({:?}), names: vec![", r.name);
    locale_texts(out, &r.names);
    let _ = write!(out, "], operator: {}, ingress: ", option_text(&r.operator));
    match &r.ingress {
        Some(ingress) => {
            let _ = write!(
                out,
                "Some(Ingress {{ host: text({:?}), kept_in_region_by: KeptInRegionBy::{:?} }})",
                ingress.host, ingress.kept_in_region_by
            );
        }
        None => out.push_str("None"),
    }
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
    let n = &c.notice;
    let _ = write!(
        out,
        "], ends_ms: {}, retention_days: {}, notice: Notice {{ controller: text({:?}), \
         contact: text({:?}), purpose: text({:?}), link: text({:?}), purposes: vec![",
        c.ends_ms, c.retention_days, n.controller, n.contact, n.purpose, n.link
    );
    locale_texts(out, &n.purposes);
    out.push_str("] }, notice_versions: vec![");
    locale_texts(out, &c.notice_versions);
    out.push_str("], draw: ");
    match &c.draw {
        None => out.push_str("None"),
        Some(draw) => {
            let _ = write!(out, "Some(Draw {{ winners: {}, scope: ", draw.winners);
            match &draw.scope {
                DrawScope::PerRegion => out.push_str("DrawScope::PerRegion"),
                DrawScope::Global { excluded } => {
                    let _ = write!(
                        out,
                        "DrawScope::Global {{ excluded: texts(&{excluded:?}) }}"
                    );
                }
            }
            out.push_str(" })");
        }
    }
    out.push_str(" },\n");
}

/// `(locale, text)` pairs, as `(&'static str, String)` tuples.
fn locale_texts(out: &mut String, pairs: &[(&'static str, String)]) {
    for (locale, value) in pairs {
        let _ = write!(out, "({locale:?}, text({value:?})), ");
    }
}

fn field(out: &mut String, f: &Field) {
    let _ = writeln!(
        out,
        "Field {{ name: text({:?}), label: text({:?}), kind: FieldKind::{:?}, required: {}, \
         max_length: {}, values: texts(&{:?}), min: {:?}, max: {:?}, must_be_true: {}, \
         residency_signal: {}, marketing_consent: {}, identifying: {}, provider_rules: {} }},",
        f.name,
        f.label,
        f.kind,
        f.required,
        f.max_length,
        f.values,
        f.min,
        f.max,
        f.must_be_true,
        f.residency_signal,
        f.marketing_consent,
        f.identifying,
        f.provider_rules
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
    use crate::Policy;

    #[test]
    fn the_source_builds_what_it_was_given_with_surge_windows_and_routes() {
        // The shipped policy has no surge window and refuses every doubtful signal; the text
        // the code is made from must carry those parts too. Checked on the text the build writes.
        let mut raw: serde_json::Value = serde_json::from_str(crate::SHIPPED_POLICY).unwrap();
        raw["signals"]["tor"] = "region:global".into();
        raw["regions"][0]["ingress"] = serde_json::json!({"host": "cn.campaign.example", "kept_in_region_by": "china_network"});
        raw["campaigns"][0]["surge_windows"] = serde_json::json!([{
            "id": "kickoff", "start": "2026-03-14T20:15:00Z", "end": "2026-03-14T20:45:00Z",
            "per_client": {"burst": 2, "window_ms": 60000},
            "on_location_unavailable": "fail_closed", "difficulty_bits": 22
        }]);
        let policy = Policy::parse(&raw.to_string()).unwrap();
        let code = super::rust_source(&policy, Some(&policy));
        assert!(
            code.contains("SignalAction::RouteTo(region_index("),
            "{code}"
        );
        assert!(
            code.contains("SurgeWindow { id: text(\"kickoff\")"),
            "{code}"
        );
        assert!(code.contains("difficulty_bits: Some(22)"), "{code}");
        assert!(
            code.contains("ingress: Some(Ingress { host: text(\"cn.campaign.example\"), kept_in_region_by: KeptInRegionBy::ChinaNetwork })"),
            "{code}"
        );
        assert!(code.contains("operator: None, ingress: None },"), "{code}");
        assert!(code.contains("pub fn candidate() -> Option<Policy> {\n    Some("));
    }
}
