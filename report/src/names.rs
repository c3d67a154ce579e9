//! English country names for the report, from a table generated once from Debian's iso-codes
//! (see the header of `iso3166-1.tsv`). Host-side only: names never enter the worker's wasm.

use harbour_policy::country::Country;

const TABLE: &str = include_str!("../iso3166-1.tsv");

/// User-assigned codes the platform reports, with the English name the European Commission uses.
const USER_ASSIGNED: [(&str, &str); 1] = [("XK", "Kosovo")];

/// `(code, name)` for every ISO 3166-1 entry in the table, in its order.
pub fn iso_table() -> impl Iterator<Item = (&'static str, &'static str)> {
    TABLE
        .lines()
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .filter_map(|line| line.split_once('\t'))
}

/// The English short name of a country, or None if the table lacks it.
pub fn name(country: Country) -> Option<&'static str> {
    let code = country.as_str();
    iso_table()
        .chain(USER_ASSIGNED)
        .find(|(c, _)| *c == code)
        .map(|(_, name)| name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_is_exactly_iso_and_every_country_has_a_name() {
        let codes: Vec<&str> = iso_table().map(|(code, _)| code).collect();
        assert_eq!(codes.len(), 249);
        assert!(
            codes.windows(2).all(|w| w[0] < w[1]),
            "sorted, no duplicate"
        );
        let iso: Vec<&str> = Country::all()
            .filter(Country::is_iso_assigned)
            .map(|c| c.as_str_static())
            .collect();
        assert_eq!(codes, iso, "the table and harbour's list agree");
        for country in Country::all() {
            assert!(name(country).is_some_and(|n| !n.is_empty()), "{country}");
        }
        let italy = Country::parse("IT").unwrap();
        assert_eq!(name(italy), Some("Italy"));
        assert_eq!(name(Country::parse("XK").unwrap()), Some("Kosovo"));
        assert_eq!(name(Country::parse("AX").unwrap()), Some("Åland Islands"));
    }
}
