//! Residency: which region's law a submission falls under.
//!
//! The only trusted country is the platform's (`request.cf.country`), never a header a client can
//! set. `XX` (unknown), `T1` (Tor) and a missing country are resolved by the policy, whose default
//! is to refuse; a region the policy routes them to stands in for the platform's region below.
//!
//! A declared country field, where the campaign has one, is a second signal. When it maps to the
//! same region as the platform's country there is nothing to decide. When the two regions differ,
//! the policy's `on_conflict` rule decides:
//! - `refuse` (the default): if both regions have a law of their own (neither is the rest-of-world
//!   region) the submission is refused, 422 on the declared field, and goes nowhere: an EU
//!   visitor's choice in a dropdown must not transfer their data to another jurisdiction, nor
//!   the reverse. If one of them is the rest-of-world region, the region with a law wins, so a
//!   visitor from China travelling in the US still goes to China.
//! - `platform`: the platform's region; the declared country is only recorded.
//! - `stricter`: the region with the higher strictness rank.
//!
//! When the rule lets the declared country win, the entry would be stored in another region than
//! the one the visitor connects from: the policy's `declared_move` decides whether that takes the
//! visitor's confirmation (`confirm`, the default: the page says where the entry will be stored,
//! the visitor confirms, and the edge takes the declared region only with `confirm_region` naming
//! it, 422 on the declared field otherwise) or keeps the platform's region (`platform`).
//!
//! Whatever the rule, a submission only ever goes to the region one of its two signals maps to.

use crate::outcome::Outcome;
pub use crate::outcome::{Unplaceable, CONFLICT, UNCONFIRMED};
use crate::phase::validate::invalid_fields;
use crate::reply::{problem, Answer, Flow, Phase};
use harbour_policy::country::Country;
use harbour_policy::field::error;
use harbour_policy::{Campaign, DeclaredMove, OnConflict, Policy, RegionIndex, SignalAction};

/// What the platform said about the visitor's country.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PlatformCountry {
    Known(Country),
    Unknown,
    Tor,
    Missing,
}

impl PlatformCountry {
    pub fn read(value: Option<&str>) -> PlatformCountry {
        match value.map(str::trim) {
            None | Some("") => PlatformCountry::Missing,
            Some("T1") => PlatformCountry::Tor,
            Some(code) => match Country::parse(code) {
                Some(country) if code.bytes().all(|b| b.is_ascii_uppercase()) => {
                    PlatformCountry::Known(country)
                }
                _ => PlatformCountry::Unknown,
            },
        }
    }

    /// For records and logs: the code, or the platform's marker for what it could not tell.
    pub fn code(&self) -> &str {
        match self {
            PlatformCountry::Known(country) => country.as_str(),
            PlatformCountry::Unknown => "XX",
            PlatformCountry::Tor => "T1",
            PlatformCountry::Missing => "",
        }
    }
}

/// Which signal placed the submission.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Basis {
    /// The platform's country alone, both signals agreed on the region, or the rule chose the
    /// platform's region.
    Platform,
    /// `stricter`: the declared country's region was stricter than the platform's.
    DeclaredStricter,
    /// `refuse`: the platform's region is the rest-of-world one and the declared country's
    /// region has a law of its own.
    DeclaredLaw,
    /// The platform could not place the visitor; the policy routed it.
    PolicyFallback,
}

impl Basis {
    pub fn as_str(&self) -> &'static str {
        match self {
            Basis::Platform => "platform",
            Basis::DeclaredStricter => "declared_stricter",
            Basis::DeclaredLaw => "declared_law",
            Basis::PolicyFallback => "policy_fallback",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Residency {
    pub region: RegionIndex,
    pub platform: PlatformCountry,
    pub declared: Option<Country>,
    pub basis: Basis,
}

/// What the visitor is told next to the declared field (the page has its own words for it).
pub const CONFLICT_DETAIL: &str = "entries from where you are cannot be stored under the data-protection law of the country you chose; choose the country you are in";

/// The classify phase: the submission's region from the platform's country and the declared
/// one; 403 when the policy refuses to guess, 422 on the declared field for a refused conflict or
/// an unconfirmed move, shaped like every other field error. `confirmed` is the region id the
/// visitor confirmed storage in, if any.
pub fn classify(
    policy: &Policy,
    campaign: &Campaign,
    platform_country: Option<&str>,
    declared: Option<Country>,
    confirmed: Option<&str>,
) -> Flow<Residency> {
    let placed =
        place(policy, PlatformCountry::read(platform_country), declared).and_then(|residency| {
            let region = &policy.region(residency.region).id;
            if moved_by_declared(&residency) && confirmed != Some(region.as_str()) {
                return Err(Unplaceable::Unconfirmed);
            }
            Ok(residency)
        });
    let refusal = match placed {
        Ok(residency) => return Flow::Continue(residency),
        Err(refusal) => refusal,
    };
    // Only a declared country conflicts or moves, and only the signal field declares one.
    let field = campaign.fields.iter().find(|f| f.residency_signal);
    let name = field.map_or("country", |f| f.name.as_str());
    let reply = match refusal {
        Unplaceable::Conflict => invalid_fields(vec![error(name, CONFLICT, CONFLICT_DETAIL)]),
        Unplaceable::Unconfirmed => invalid_fields(vec![error(
            name,
            UNCONFIRMED,
            "entries for the country you chose are stored in another region than the one you are connecting from; confirm where your entry will be stored to go on",
        )]),
        _ => problem(
            403,
            Outcome::Unplaceable(refusal),
            "Entries cannot be accepted from here",
            "this campaign cannot determine where your entry may be stored",
            &[],
        ),
    };
    Flow::Break(Answer::new(Phase::Classify, reply).counted_as(Outcome::Unplaceable(refusal)))
}

/// Whether the declared country moved the entry out of the platform's region (which, under
/// `declared_move: confirm`, takes the visitor's confirmation).
pub fn moved_by_declared(residency: &Residency) -> bool {
    matches!(
        residency.basis,
        Basis::DeclaredStricter | Basis::DeclaredLaw
    )
}

/// The region whose law a submission falls under, by the rules above.
pub fn place(
    policy: &Policy,
    platform: PlatformCountry,
    declared: Option<Country>,
) -> Result<Residency, Unplaceable> {
    let (platform_region, basis) = match platform {
        PlatformCountry::Known(country) => (policy.region_of(country), Basis::Platform),
        PlatformCountry::Unknown => (
            fallback(policy.signals.unknown, Unplaceable::Unknown)?,
            Basis::PolicyFallback,
        ),
        PlatformCountry::Tor => (
            fallback(policy.signals.tor, Unplaceable::Tor)?,
            Basis::PolicyFallback,
        ),
        PlatformCountry::Missing => (
            fallback(policy.signals.missing, Unplaceable::Missing)?,
            Basis::PolicyFallback,
        ),
    };
    let mut residency = Residency {
        region: platform_region,
        platform,
        declared,
        basis,
    };
    let Some(declared_region) = declared.map(|c| policy.region_of(c)) else {
        return Ok(residency);
    };
    if declared_region == platform_region {
        return Ok(residency);
    }
    let declared_wins = match policy.on_conflict {
        OnConflict::Platform => None,
        OnConflict::Stricter => (policy.region(declared_region).strictness
            > policy.region(platform_region).strictness)
            .then_some(Basis::DeclaredStricter),
        OnConflict::Refuse => match (
            policy.has_own_law(platform_region),
            policy.has_own_law(declared_region),
        ) {
            (true, true) => return Err(Unplaceable::Conflict),
            (false, true) => Some(Basis::DeclaredLaw),
            _ => None,
        },
    };
    // Under `declared_move: platform` a declared country never moves an entry.
    let declared_wins = declared_wins.filter(|_| policy.declared_move == DeclaredMove::Confirm);
    if let Some(basis) = declared_wins {
        residency.region = declared_region;
        residency.basis = basis;
    }
    Ok(residency)
}

/// What declaring a country does: stored in a region (and whether the visitor must confirm it),
/// or refused.
pub type Choice = Result<(RegionIndex, bool), Unplaceable>;

/// What declaring a country of each region would do, for a visitor the platform places as
/// `platform` (the page shows it before the visitor sends): the region the entry would be stored
/// in and whether the visitor must confirm it, or why it would be refused. `None` for a region
/// with no country a visitor can declare. Worked out by `place` itself, with a country of that
/// region standing for the region.
pub fn choices(policy: &Policy, platform: PlatformCountry) -> Vec<(RegionIndex, Option<Choice>)> {
    policy
        .region_indices()
        .map(|region| {
            let country = Country::all().find(|c| policy.region_of(*c) == region);
            let choice = country.map(|country| {
                place(policy, platform, Some(country))
                    .map(|residency| (residency.region, moved_by_declared(&residency)))
            });
            (region, choice)
        })
        .collect()
}

fn fallback(action: SignalAction, refusal: Unplaceable) -> Result<RegionIndex, Unplaceable> {
    match action {
        SignalAction::Refuse => Err(refusal),
        SignalAction::RouteTo(region) => Ok(region),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> Policy {
        Policy::shipped().unwrap()
    }

    fn with_rule(rule: OnConflict) -> Policy {
        let mut p = policy();
        p.on_conflict = rule;
        p
    }

    fn region_id(
        policy: &Policy,
        platform: &str,
        declared: Option<&str>,
    ) -> Result<String, &'static str> {
        place(
            policy,
            PlatformCountry::read(Some(platform)),
            declared.and_then(Country::parse),
        )
        .map(|r| policy.region(r.region).id.clone())
        .map_err(|e| e.code())
    }

    #[test]
    fn shipped_policy_places_each_law() {
        let p = policy();
        assert_eq!(p.on_conflict, OnConflict::Refuse);
        let table = [
            ("CN", None, Ok("cn")),
            ("RU", None, Ok("ru")),
            ("AU", None, Ok("au")),
            ("IT", None, Ok("eu")),
            ("NO", None, Ok("eu")),
            ("RE", None, Ok("eu")),
            ("AX", None, Ok("eu")),
            ("US", None, Ok("global")),
            ("BR", None, Ok("global")),
            ("XK", None, Ok("global")),
            // Two regions with laws of their own: refused, in both directions.
            ("IT", Some("CN"), Err("residency_conflict")),
            ("CN", Some("IT"), Err("residency_conflict")),
            ("AU", Some("RU"), Err("residency_conflict")),
            ("GP", Some("AU"), Err("residency_conflict")),
            // One of them is the rest of the world: the region with a law wins.
            ("US", Some("DE"), Ok("eu")),
            ("DE", Some("US"), Ok("eu")),
            ("US", Some("CN"), Ok("cn")),
            ("CN", Some("US"), Ok("cn")),
            ("XK", Some("RU"), Ok("ru")),
            // Same region: nothing to decide.
            ("FR", Some("IT"), Ok("eu")),
            ("MQ", Some("FR"), Ok("eu")),
            ("XX", None, Err("country_unknown")),
            ("XX", Some("IT"), Err("country_unknown")),
            ("T1", None, Err("country_anonymised")),
            ("T1", Some("US"), Err("country_anonymised")),
            ("", None, Err("country_missing")),
            ("ZZ", None, Err("country_unknown")),
            ("cn", None, Err("country_unknown")),
        ];
        for (platform, declared, expected) in table {
            assert_eq!(
                region_id(&p, platform, declared),
                expected.map(String::from),
                "{platform} / {declared:?}"
            );
        }
    }

    #[test]
    fn each_rule_on_the_same_conflicts() {
        // (platform, declared) → (refuse, platform, stricter)
        let table = [
            (
                ("IT", "CN"),
                (Err("residency_conflict"), Ok("eu"), Ok("cn")),
            ),
            (
                ("CN", "IT"),
                (Err("residency_conflict"), Ok("cn"), Ok("cn")),
            ),
            (("US", "DE"), (Ok("eu"), Ok("global"), Ok("eu"))),
            (("DE", "US"), (Ok("eu"), Ok("eu"), Ok("eu"))),
            (
                ("AU", "RU"),
                (Err("residency_conflict"), Ok("au"), Ok("ru")),
            ),
            (("FR", "IT"), (Ok("eu"), Ok("eu"), Ok("eu"))),
        ];
        for ((platform, declared), (refuse, by_platform, stricter)) in table {
            for (rule, expected) in [
                (OnConflict::Refuse, refuse),
                (OnConflict::Platform, by_platform),
                (OnConflict::Stricter, stricter),
            ] {
                assert_eq!(
                    region_id(&with_rule(rule), platform, Some(declared)),
                    expected.map(String::from),
                    "{platform} / {declared} under {}",
                    rule.as_str()
                );
            }
        }
    }

    #[test]
    fn a_region_the_policy_routes_doubtful_signals_to_stands_in_for_the_platform() {
        let mut p = policy();
        p.signals.unknown = SignalAction::RouteTo(p.region_index("eu").unwrap());
        p.signals.tor = SignalAction::RouteTo(p.rest_of_world);
        assert_eq!(region_id(&p, "XX", None), Ok("eu".into()));
        assert_eq!(region_id(&p, "XX", Some("CN")), Err("residency_conflict"));
        assert_eq!(region_id(&p, "T1", Some("CN")), Ok("cn".into()));
        let r = place(&p, PlatformCountry::Tor, Country::parse("US")).unwrap();
        assert_eq!(r.basis, Basis::PolicyFallback);
    }

    #[test]
    fn records_both_signals_and_the_basis() {
        let r = place(
            &policy(),
            PlatformCountry::read(Some("US")),
            Country::parse("CN"),
        )
        .unwrap();
        assert_eq!(r.platform.code(), "US");
        assert_eq!(r.declared.map(|c| c.to_string()).as_deref(), Some("CN"));
        assert_eq!(r.basis, Basis::DeclaredLaw);
        let stricter = with_rule(OnConflict::Stricter);
        let r = place(
            &stricter,
            PlatformCountry::read(Some("IT")),
            Country::parse("CN"),
        )
        .unwrap();
        assert_eq!(r.basis, Basis::DeclaredStricter);
        let platform = with_rule(OnConflict::Platform);
        let r = place(
            &platform,
            PlatformCountry::read(Some("IT")),
            Country::parse("CN"),
        )
        .unwrap();
        assert_eq!(
            (r.basis, r.declared),
            (Basis::Platform, Country::parse("CN"))
        );
    }

    #[test]
    fn the_phase_answers_403_with_the_refusal_code() {
        let p = policy();
        let campaign = &p.campaigns[0];
        let Flow::Break(answer) = classify(&p, campaign, Some("T1"), None, None) else {
            panic!("a Tor visitor was placed")
        };
        assert_eq!(
            (answer.phase, answer.reply.status, answer.outcome.name()),
            (Phase::Classify, 403, "country_anonymised")
        );
        let de = Country::parse("DE");
        let Flow::Continue(r) = classify(&p, campaign, Some("US"), de, Some("eu")) else {
            panic!("a US visitor who confirmed the EU was refused")
        };
        assert_eq!(p.region(r.region).id, "eu");
    }

    #[test]
    fn a_declared_country_moves_an_entry_only_with_the_visitors_confirmation() {
        let p = policy();
        let campaign = &p.campaigns[0];
        let de = Country::parse("DE");
        // Connecting from the US, declaring Germany: stored in the EU only once confirmed.
        for confirmed in [None, Some("global"), Some("cn")] {
            let Flow::Break(answer) = classify(&p, campaign, Some("US"), de, confirmed) else {
                panic!("moved to the EU without confirming it ({confirmed:?})")
            };
            assert_eq!(answer.reply.status, 422);
            assert_eq!(answer.outcome.name(), UNCONFIRMED);
            let body: serde_json::Value = serde_json::from_str(&answer.reply.body).unwrap();
            assert_eq!(body["errors"][0]["field"], "country");
            assert_eq!(body["errors"][0]["code"], UNCONFIRMED);
        }
        // Nothing to confirm when the declared country stays in the connection's region.
        let Flow::Continue(r) = classify(&p, campaign, Some("IT"), de, None) else {
            panic!("an Italian visitor declaring Germany was refused")
        };
        assert_eq!(p.region(r.region).id, "eu");
        // A policy that keeps the platform's region never moves it, and asks nothing.
        let mut keep = p.clone();
        keep.declared_move = harbour_policy::DeclaredMove::Platform;
        let Flow::Continue(r) = classify(&keep, campaign, Some("US"), de, None) else {
            panic!("refused under declared_move: platform")
        };
        assert_eq!(
            (keep.region(r.region).id.as_str(), r.basis),
            ("global", Basis::Platform)
        );
        assert_eq!(r.declared, de, "the declared country is still recorded");
    }

    #[test]
    fn the_choices_a_page_shows_are_what_placing_would_do() {
        let p = policy();
        for platform in ["IT", "US", "CN", "T1"] {
            let platform = PlatformCountry::read(Some(platform));
            let choices = choices(&p, platform);
            for country in Country::all() {
                let listed = p.region_of(country);
                let (_, choice) = choices.iter().find(|(r, _)| *r == listed).unwrap();
                let placed =
                    place(&p, platform, Some(country)).map(|r| (r.region, moved_by_declared(&r)));
                assert_eq!(choice.as_ref(), Some(&placed), "{platform:?} {country}");
            }
        }
    }

    #[test]
    fn a_refused_conflict_is_a_field_error_on_the_declared_field() {
        let p = policy();
        let campaign = &p.campaigns[0];
        let Flow::Break(answer) = classify(&p, campaign, Some("IT"), Country::parse("CN"), None)
        else {
            panic!("an Italian visitor declaring China was placed")
        };
        assert_eq!(
            (answer.phase, answer.reply.status, answer.outcome.name()),
            (Phase::Classify, 422, "residency_conflict")
        );
        let body: serde_json::Value = serde_json::from_str(&answer.reply.body).unwrap();
        assert_eq!(body["code"], "validation_failed");
        assert_eq!(
            body["errors"],
            serde_json::json!([{"field": "country", "code": "residency_conflict", "detail": CONFLICT_DETAIL}])
        );
    }
}
