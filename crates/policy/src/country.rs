//! Country codes: ISO 3166-1 alpha-2, plus the one user-assigned code the platform reports.
//!
//! The platform reports a visitor's country as an alpha-2 code, `XX` when it cannot tell and `T1`
//! for Tor exit nodes (Cloudflare's `request.cf.country`). Those two are signals, not countries,
//! and are kept out of this list on purpose so that policy and field validation reject them.
//!
//! `XK` (Kosovo) is not assigned by ISO: it is a user-assigned code (ISO 3166-1 leaves `AA`,
//! `QM`-`QZ`, `XA`-`XZ` and `ZZ` to users) that the platform, the European Commission and others
//! use for Kosovo. The platform reports it like any country, so it is one here in every role: a
//! platform signal, a declared country a visitor can choose (so a visitor in Kosovo can state
//! where they are), and an entry a policy can list. No other user-assigned code is accepted.

/// Every officially assigned ISO 3166-1 alpha-2 code and `XK`, sorted, two ASCII letters each.
const ASSIGNED: &str =
    "AD AE AF AG AI AL AM AO AQ AR AS AT AU AW AX AZ BA BB BD BE BF BG BH BI BJ \
BL BM BN BO BQ BR BS BT BV BW BY BZ CA CC CD CF CG CH CI CK CL CM CN CO CR CU CV CW CX CY CZ DE DJ \
DK DM DO DZ EC EE EG EH ER ES ET FI FJ FK FM FO FR GA GB GD GE GF GG GH GI GL GM GN GP GQ GR GS GT \
GU GW GY HK HM HN HR HT HU ID IE IL IM IN IO IQ IR IS IT JE JM JO JP KE KG KH KI KM KN KP KR KW KY \
KZ LA LB LC LI LK LR LS LT LU LV LY MA MC MD ME MF MG MH MK ML MM MN MO MP MQ MR MS MT MU MV MW MX \
MY MZ NA NC NE NF NG NI NL NO NP NR NU NZ OM PA PE PF PG PH PK PL PM PN PR PS PT PW PY QA RE RO RS \
RU RW SA SB SC SD SE SG SH SI SJ SK SL SM SN SO SR SS ST SV SX SY SZ TC TD TF TG TH TJ TK TL TM TN \
TO TR TT TV TW TZ UA UG UM US UY UZ VA VC VE VG VI VN VU WF WS XK YE YT ZA ZM ZW";

/// User-assigned codes in `ASSIGNED` (see the module documentation).
const USER_ASSIGNED: [[u8; 2]; 1] = [*b"XK"];

/// A validated country code (ISO 3166-1 alpha-2 or `XK`), stored upper-case.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Country([u8; 2]);

impl Country {
    /// Accepts an assigned alpha-2 code or `XK`, in either case; anything else is `None`.
    pub fn parse(code: &str) -> Option<Country> {
        let bytes = code.as_bytes();
        if bytes.len() != 2 || !bytes.iter().all(u8::is_ascii_alphabetic) {
            return None;
        }
        let upper = [bytes[0].to_ascii_uppercase(), bytes[1].to_ascii_uppercase()];
        let assigned = ASSIGNED.as_bytes();
        // The list is sorted with a fixed stride of three bytes ("AD ").
        let count = assigned.len().div_ceil(3);
        let (mut low, mut high) = (0usize, count);
        while low < high {
            let mid = (low + high) / 2;
            let at = [assigned[mid * 3], assigned[mid * 3 + 1]];
            match at.cmp(&upper) {
                std::cmp::Ordering::Equal => return Some(Country(upper)),
                std::cmp::Ordering::Less => low = mid + 1,
                std::cmp::Ordering::Greater => high = mid,
            }
        }
        None
    }

    pub fn as_str(&self) -> &str {
        // Both bytes were checked to be ASCII letters in `parse`.
        std::str::from_utf8(&self.0).unwrap_or("XX")
    }

    /// The code as a slice of the static list, for callers that outlive `self`.
    pub fn as_str_static(&self) -> &'static str {
        ASSIGNED
            .split(' ')
            .find(|code| code.as_bytes() == self.0)
            .unwrap_or("XX")
    }

    /// Whether ISO 3166-1 assigned this code (every country but `XK`).
    pub fn is_iso_assigned(&self) -> bool {
        !USER_ASSIGNED.contains(&self.0)
    }

    /// Every code, ISO's and `XK`, for exhaustive tests and policy checks.
    pub fn all() -> impl Iterator<Item = Country> {
        ASSIGNED
            .split(' ')
            .map(|code| Country([code.as_bytes()[0], code.as_bytes()[1]]))
    }
}

impl std::fmt::Display for Country {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_is_sorted_unique_and_fixed_stride() {
        let codes: Vec<&str> = ASSIGNED.split(' ').collect();
        assert_eq!(codes.len(), 250, "249 ISO codes and XK");
        assert!(codes.iter().all(|c| c.len() == 2));
        assert!(codes.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn parses_assigned_codes_in_any_case() {
        for (input, expected) in [("CN", Some("CN")), ("it", Some("IT")), ("Ru", Some("RU"))] {
            assert_eq!(
                Country::parse(input).map(|c| c.to_string()),
                expected.map(String::from)
            );
        }
        assert_eq!(Country::all().count(), 250);
        assert_eq!(Country::all().filter(Country::is_iso_assigned).count(), 249);
        assert!(Country::all().all(|c| Country::parse(c.as_str()) == Some(c)));
    }

    #[test]
    fn kosovo_is_a_country_but_no_other_user_assigned_code_is() {
        let xk = Country::parse("xk").unwrap();
        assert_eq!(xk.as_str(), "XK");
        assert_eq!(xk.as_str_static(), "XK");
        assert!(!xk.is_iso_assigned());
        assert!(Country::parse("IT").unwrap().is_iso_assigned());
        for other in ["XA", "XZ", "AA", "QM", "ZZ", "XX"] {
            assert_eq!(Country::parse(other), None, "{other}");
        }
    }

    #[test]
    fn rejects_platform_signals_and_junk() {
        for input in ["XX", "T1", "", "C", "CHN", "ZZ", "C1", "é", "UK", "EU"] {
            assert_eq!(Country::parse(input), None, "{input}");
        }
    }
}
