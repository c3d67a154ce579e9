//! Residency: which region's law a submission falls under.
//!
//! The only trusted country is the platform's (`request.cf.country`), never a header a client can
//! set. A declared country field, where the campaign has one, is a second signal: when the two
//! map to different regions the stricter region (higher policy rank) wins, so a visitor in China
//! who declares Italy stays in China, and one in Italy who declares China goes to China too.
//! `XX` (unknown), `T1` (Tor) and a missing country are resolved by the policy, whose default is
//! to refuse.

use crate::country::Country;
use crate::policy::{Policy, RegionIndex, SignalAction};
use crate::reply::{problem, Answer, Flow, Phase};

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
    /// The platform's country alone, or both signals agreed on the region.
    Platform,
    /// The declared country's region was stricter than the platform's.
    DeclaredStricter,
    /// The platform could not place the visitor; the policy routed it.
    PolicyFallback,
}

impl Basis {
    pub fn as_str(&self) -> &'static str {
        match self {
            Basis::Platform => "platform",
            Basis::DeclaredStricter => "declared_stricter",
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

/// Why no region could be chosen; nothing is forwarded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unplaceable {
    Unknown,
    Tor,
    Missing,
}

impl Unplaceable {
    pub fn code(&self) -> &'static str {
        match self {
            Unplaceable::Unknown => "country_unknown",
            Unplaceable::Tor => "country_anonymised",
            Unplaceable::Missing => "country_missing",
        }
    }
}

/// The classify phase: the submission's region from the platform's country and the declared
/// one, or 403 when the policy refuses to guess.
pub fn classify(
    policy: &Policy,
    platform_country: Option<&str>,
    declared: Option<Country>,
) -> Flow<Residency> {
    match place(policy, PlatformCountry::read(platform_country), declared) {
        Ok(residency) => Flow::Continue(residency),
        Err(refusal) => Flow::Break(Answer::new(
            Phase::Classify,
            problem(
                403,
                refusal.code(),
                "Entries cannot be accepted from here",
                "this campaign cannot determine where your entry may be stored",
                None,
            ),
        )),
    }
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
    if let Some(declared) = declared {
        let declared_region = policy.region_of(declared);
        if policy.region(declared_region).strictness > policy.region(platform_region).strictness {
            residency.region = declared_region;
            residency.basis = Basis::DeclaredStricter;
        }
    }
    Ok(residency)
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
        let table = [
            ("CN", None, Ok("cn")),
            ("RU", None, Ok("ru")),
            ("AU", None, Ok("au")),
            ("IT", None, Ok("eu")),
            ("NO", None, Ok("eu")),
            ("US", None, Ok("global")),
            ("BR", None, Ok("global")),
            // The stricter region wins when the signals disagree, in both directions.
            ("IT", Some("CN"), Ok("cn")),
            ("CN", Some("IT"), Ok("cn")),
            ("US", Some("DE"), Ok("eu")),
            ("DE", Some("US"), Ok("eu")),
            ("AU", Some("RU"), Ok("ru")),
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
    fn records_both_signals_and_the_basis() {
        let p = policy();
        let r = place(&p, PlatformCountry::read(Some("IT")), Country::parse("CN")).unwrap();
        assert_eq!(r.platform.code(), "IT");
        assert_eq!(r.declared.map(|c| c.to_string()).as_deref(), Some("CN"));
        assert_eq!(r.basis, Basis::DeclaredStricter);
    }

    #[test]
    fn the_phase_answers_403_with_the_refusal_code() {
        let p = policy();
        let Flow::Break(answer) = classify(&p, Some("T1"), None) else {
            panic!("a Tor visitor was placed")
        };
        assert_eq!(
            (answer.phase, answer.reply.status, answer.outcome),
            (Phase::Classify, 403, "country_anonymised")
        );
        let Flow::Continue(r) = classify(&p, Some("US"), Country::parse("DE")) else {
            panic!("a US visitor was refused")
        };
        assert_eq!(p.region(r.region).id, "eu");
    }
}
