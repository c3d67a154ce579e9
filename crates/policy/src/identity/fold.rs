//! The fold (feature `fold`): who is the same person, from Unicode's data. The origin digests
//! with it; the edge only runs the checks it starts with (the parent module's).
//!
//! - **The identifying form** of a local part or of a text is its UTS 46 mapping with the two
//!   deviation characters folded too (ß → ss, ς → σ, as UTS 46's transitional processing
//!   does): case folded and NFKC, so `ａｄａX`, `adaX` and `ADAX` are `adax`, and `jose\u{301}`
//!   is `josé`. On every character the mapping accepts this is exactly NFKC with full case
//!   folding (NFKC(casefold(NFKC(c)))), except that the ideographic full stops 。 and ｡ become
//!   `.`; on a text it is Unicode's toNFKC_Casefold (each character so mapped, then NFC). The
//!   tests check every scalar value, and random texts, against ICU4X's case folder. A
//!   character the mapping disallows (unassigned, private use, a few symbols such as ⒈)
//!   cannot identify anyone and is refused. White space runs become one space.
//! - **The domain** is processed as UTS 46 ToASCII (non-transitional, STD3 rules, hyphens
//!   checked first and last, DNS lengths) into its ASCII form: `bücher.example`,
//!   `Bücher.Example`, `xn--bcher-kva.example` and `ｂüｃｈｅｒ．ｅｘａｍｐｌｅ` are all
//!   `xn--bcher-kva.example`, with a top-level label of two characters or more, not numeric.
//! - **What the origin stores** for an address ([`Address::stored`]): the local part as the
//!   visitor typed it (trimmed) and the domain in its ASCII form. Not the identifying form: a
//!   mail system may tell `Ada` from `ada` (RFC 5321 §2.4), and folding `strauß` to `strauss`
//!   could name another mailbox; the folded form only goes into the person digest. The domain
//!   has one meaning whatever its spelling, and its A-label form is one every mail system can
//!   route.
//! - **Provider rules** (a policy option per field, off by default; for the digest only): a
//!   `+tag` ends the local part (RFC 5233 sub-addressing), and at gmail.com (googlemail.com is
//!   the same mailbox) dots do not count: `a.da+x@googlemail.com` is `ada@gmail.com`.
//!
//! Why these crates: ICU4X's data is one set of compact tries that idna's ICU4X back end also
//! uses, so the UTS 46 mapping for local parts comes at no extra size. Full NFKC plus ICU4X's
//! case folder would add about 27 KB gzip for the same answers; the unicode-rs stack
//! (unicode-normalization, caseless, idna's unicode-rs back end) about twice the whole.

use std::borrow::Cow;

use icu_normalizer::uts46::Uts46MapperBorrowed;
use idna::uts46::{AsciiDenyList, DnsLength, Hyphens, Uts46};

use super::{first_invisible, local_shape, shape, MAX_ADDRESS_BYTES};

/// Case folded and NFKC (see the module's rules), or `None` for a text with a character that
/// cannot identify anyone. Invisible characters must have been refused before: UTS 46 drops
/// most of them silently.
fn fold(text: &str) -> Option<String> {
    if text.is_ascii() {
        return Some(text.to_ascii_lowercase());
    }
    let mapped = uts46_map(text)?;
    if !mapped.contains(['ß', 'ς']) {
        return Some(mapped);
    }
    // UTS 46's deviations, folded as full case folding (and transitional UTS 46) does, and
    // mapped again for NFC: `ß\u{301}` is `ss\u{301}`, which composes to `sś`.
    uts46_map(&mapped.replace('ß', "ss").replace('ς', "σ"))
}

/// The UTS 46 mapping (mapped, ignored and deviation characters as UTS 46 says, then NFC), or
/// `None` if a character is disallowed.
fn uts46_map(text: &str) -> Option<String> {
    let mapped: String = Uts46MapperBorrowed::new()
        .map_normalize(text.chars())
        .collect();
    // U+FFFD is what the mapper puts in place of a disallowed character.
    (!mapped.contains('\u{FFFD}')).then_some(mapped)
}

/// The identifying form of a text field's value: trimmed, case folded and NFKC, runs of white
/// space made one space. `None` when it has an invisible character, a character that cannot
/// identify anyone, or nothing left.
pub fn text(value: &str) -> Option<String> {
    if first_invisible(value).is_some() {
        return None;
    }
    let folded = fold(value)?;
    let joined = folded.split_whitespace().collect::<Vec<_>>().join(" ");
    (!joined.is_empty()).then_some(joined)
}

/// An address that passed every check: its forwarded form and its identifying parts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Address {
    /// The local part as typed (trimmed).
    local: String,
    /// The local part's identifying form.
    folded_local: String,
    /// The domain's ASCII form (A-labels, lower case).
    domain: String,
}

impl Address {
    /// Checks an address: the edge's check (`identity::address`), then the fold (see the
    /// module's rules); `None` if it is not one.
    pub fn parse(text: &str) -> Option<Address> {
        let (local, domain) = shape(text)?;
        let folded_local = fold(local).filter(|folded| local_shape(folded))?;
        let domain = ascii_domain(domain)?;
        (local.len() + 1 + domain.len() <= MAX_ADDRESS_BYTES).then(|| Address {
            local: local.to_owned(),
            folded_local,
            domain,
        })
    }

    /// What the origin stores: the local part as typed, the domain's ASCII form.
    pub fn stored(&self) -> String {
        format!("{}@{}", self.local, self.domain)
    }

    /// What identifies the person behind the address: both parts folded, and with
    /// `provider_rules` sub-addresses (and gmail's dots) removed.
    pub fn identity(&self, provider_rules: bool) -> String {
        let mut local = Cow::Borrowed(self.folded_local.as_str());
        let mut domain = self.domain.as_str();
        if provider_rules {
            // `user+detail` (RFC 5233): a tag needs a mailbox before it.
            if let Some((mailbox, _tag)) = local.split_once('+').filter(|(m, _)| !m.is_empty()) {
                local = Cow::Owned(mailbox.to_owned());
            }
            if domain == "googlemail.com" {
                domain = "gmail.com";
            }
            if domain == "gmail.com" {
                local = Cow::Owned(local.replace('.', ""));
            }
        }
        format!("{local}@{domain}")
    }
}

/// The domain's ASCII form per UTS 46 ToASCII, with two labels or more and a top-level label of
/// two characters or more that is not all digits.
fn ascii_domain(domain: &str) -> Option<String> {
    let ascii = Uts46::new()
        .to_ascii(
            domain.as_bytes(),
            AsciiDenyList::STD3,
            Hyphens::CheckFirstLast,
            DnsLength::Verify,
        )
        .ok()?;
    let tld = ascii.rsplit_once('.')?.1;
    let tld_ok = tld.len() >= 2 && !tld.bytes().all(|b| b.is_ascii_digit());
    tld_ok.then(|| ascii.into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity(address: &str) -> Option<String> {
        Address::parse(address).map(|a| a.identity(false))
    }

    /// Issue 23: each spelling of `adaX@example.org` (and of `josé@`, `bücher-…`) that was
    /// stored as a new entry is now the same person, or not an address at all.
    #[test]
    fn another_spelling_of_the_same_address_is_the_same_person_or_refused() {
        let ada = identity("adaX@example.org").unwrap();
        assert_eq!(ada, "adax@example.org");
        let same = [
            ("case", "ADAx@Example.ORG"),
            ("fullwidth letters", "ａｄａX@example.org"),
            ("fullwidth domain", "adaX@ｅｘａｍｐｌｅ.ｏｒｇ"),
            ("fullwidth dot", "adaX@example．org"),
            ("surrounding space", "  adaX@example.org "),
        ];
        for (what, variant) in same {
            assert_eq!(identity(variant).as_deref(), Some(ada.as_str()), "{what}");
        }
        let refused = [
            ("soft hyphen", "ada\u{AD}X@example.org"),
            ("variation selector", "adaX\u{FE0F}@example.org"),
            ("combining grapheme joiner", "ad\u{34F}aX@example.org"),
            ("zero width space", "ada\u{200B}X@example.org"),
            ("soft hyphen in the domain", "adaX@exam\u{AD}ple.org"),
        ];
        for (what, variant) in refused {
            assert_eq!(identity(variant), None, "{what}");
        }
        let jose = identity("jos\u{E9}@example.org").unwrap();
        assert_eq!(identity("jose\u{301}@example.org").unwrap(), jose, "NFD");
        let buecher = identity("ada@bücher-laden.example").unwrap();
        assert_eq!(buecher, "ada@xn--bcher-laden-thb.example");
        assert_eq!(
            identity("ada@xn--bcher-laden-thb.example").unwrap(),
            buecher,
            "A-label"
        );
        assert_eq!(identity("ada@BÜCHER-Laden.example").unwrap(), buecher);
    }

    #[test]
    fn the_stored_form_keeps_the_local_part_and_writes_the_domain_in_ascii() {
        let stored = |text: &str| Address::parse(text).map(|a| a.stored());
        assert_eq!(
            stored(" Ada@Example.ORG ").as_deref(),
            Some("Ada@example.org")
        );
        assert_eq!(
            stored("ａｄａX@bücher．example").as_deref(),
            Some("ａｄａX@xn--bcher-kva.example")
        );
        assert_eq!(
            stored("用户@例子.中国").as_deref(),
            Some("用户@xn--fsqu00a.xn--fiqs8s")
        );
    }

    /// What only the fold refuses: the edge forwards these, the origin answers 422.
    #[test]
    fn the_fold_refuses_what_the_edge_cannot_see_without_unicode_data() {
        for (what, text) in [
            ("no Punycode", "a@xn--zz.example"),
            ("folded dots doubled", "ａ．．b@example.org"),
            ("private use in the local part", "\u{E000}@example.org"),
            ("private use in the domain", "a@\u{E000}.example"),
            ("a fullwidth hyphen first", "a@－b.example"),
            ("a numeric fullwidth top-level label", "a@b.１２３"),
            ("unassigned", "a@b\u{50000}.example"),
        ] {
            assert!(
                super::super::address(text).is_some(),
                "{what}: the edge's check"
            );
            assert!(Address::parse(text).is_none(), "{what}: the fold");
        }
    }

    #[test]
    fn provider_rules_drop_sub_addresses_and_gmail_dots() {
        let rules = |text: &str| Address::parse(text).map(|a| a.identity(true));
        assert_eq!(
            rules("A.da+x@googlemail.com").as_deref(),
            Some("ada@gmail.com")
        );
        assert_eq!(rules("ada@gmail.com").as_deref(), Some("ada@gmail.com"));
        assert_eq!(
            rules("a.da+news@example.org").as_deref(),
            Some("a.da@example.org")
        );
        assert_eq!(
            rules("+news@example.org").as_deref(),
            Some("+news@example.org")
        );
        // Off by default: every tag and dot counts.
        assert_eq!(
            identity("a.da+x@gmail.com").as_deref(),
            Some("a.da+x@gmail.com")
        );
    }

    #[test]
    fn texts_are_folded_and_invisible_characters_refused() {
        assert_eq!(
            text("  Ada \u{A0} LOVELACE ").as_deref(),
            Some("ada lovelace")
        );
        assert_eq!(text("Ada\tLovelace"), None, "a control character");
        assert_eq!(
            text("ＡＤＡ\u{3000}Lovelace").as_deref(),
            Some("ada lovelace")
        );
        assert_eq!(text("STRAUẞ").as_deref(), text("strauss").as_deref());
        // Folded, then composed: ß and a combining acute are s and ś.
        assert_eq!(text("ß\u{301}").as_deref(), Some("s\u{15B}"));
        assert_eq!(text("ΣΊΣΥΦΟΣ").as_deref(), text("σίσυφος").as_deref());
        assert_eq!(text("Jose\u{301}"), text("José"));
        assert_eq!(text("   "), None);
        assert_eq!(text("Ada\u{AD}"), None);
        assert_eq!(text("Ada\u{FE0F}"), None);
        assert_eq!(text("\u{E000}"), None, "private use cannot identify anyone");
    }
}

/// The identifying form is NFKC with full case folding: checked for every Unicode scalar value
/// against ICU4X's case folder and NFKC normaliser (native only: too slow under wasm).
#[cfg(all(test, not(target_arch = "wasm32")))]
mod conformance {
    use super::super::is_invisible;
    use super::*;
    use icu_casemap::CaseMapperBorrowed;
    use icu_normalizer::ComposingNormalizerBorrowed;

    #[test]
    fn the_fold_is_nfkc_casefold_wherever_it_accepts_a_character() {
        let (nfkc, case) = (
            ComposingNormalizerBorrowed::new_nfkc(),
            CaseMapperBorrowed::new(),
        );
        let mut differ = Vec::new();
        let mut accepted = 0;
        for c in (0..=0x10FFFF).filter_map(char::from_u32) {
            if is_invisible(c) {
                continue;
            }
            let text = c.to_string();
            let Some(folded) = fold(&text) else { continue };
            accepted += 1;
            let nfkc_text = nfkc.normalize(&text);
            let case_folded = case.fold_string(&nfkc_text);
            let expected = nfkc.normalize(&case_folded);
            if folded != expected {
                differ.push((c, folded));
            }
        }
        assert_eq!(
            differ,
            [('\u{3002}', ".".to_owned()), ('\u{FF61}', ".".to_owned())]
        );
        assert!(accepted > 150_000, "{accepted}");
    }

    proptest::proptest! {
        /// On strings: Unicode's toNFKC_Casefold, each character mapped as above and the
        /// result made NFC (which is not NFKC(casefold(NFKC(s))) for a combining mark before
        /// its base: U+0345 U+0308 is ϊ).
        #[test]
        fn on_strings_it_is_to_nfkc_casefold(text in "[a-zßςΣſéÅＡ-Ｚ\u{301}\u{308}\u{345}ǅﬃ。]{0,12}|\\PC{0,12}") {
            if first_invisible(&text).is_none() {
                if let Some(folded) = fold(&text) {
                    let (nfkc, nfc, case) = (
                        ComposingNormalizerBorrowed::new_nfkc(),
                        ComposingNormalizerBorrowed::new_nfc(),
                        CaseMapperBorrowed::new(),
                    );
                    let mapped: String = text
                        .chars()
                        .map(|c| {
                            let nfkc_c = nfkc.normalize(c.encode_utf8(&mut [0; 4])).into_owned();
                            let folded_c = case.fold_string(&nfkc_c).into_owned();
                            nfkc.normalize(&folded_c).replace(['\u{3002}', '\u{FF61}'], ".")
                        })
                        .collect();
                    proptest::prop_assert_eq!(folded, nfc.normalize(&mapped).into_owned());
                }
            }
        }
    }
}

#[cfg(all(test, not(target_arch = "wasm32")))]
mod properties {
    use super::super::MAX_LOCAL_BYTES;
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Any text: no panic; an address's identity, read again as an address, is itself
        /// (unless folding made its local part longer than an address may be).
        #[test]
        fn the_identity_is_a_fixed_point(
            text in "[a-zA-Z0-9.+_ßſςΣéＡ-Ｚａ-ｚ\u{301}\u{AD}]{0,20}@[a-zA-Z0-9üＢ．。-]{1,20}\\.[a-zï]{2,4}",
            noise in "\\PC{0,12}",
        ) {
            let _ = Address::parse(&noise);
            let _ = text_of(&noise);
            if let Some(address) = Address::parse(&text) {
                // Provider rules may leave a local part no address has (`ada.+x` is `ada.`),
                // which is still one person's identity, never empty.
                prop_assert!(!address.identity(true).starts_with('@'));
                let identity = address.identity(false);
                let local_bytes = identity.rsplit_once('@').map_or(0, |(l, _)| l.len());
                prop_assume!(local_bytes <= MAX_LOCAL_BYTES && identity.len() <= MAX_ADDRESS_BYTES);
                let again = Address::parse(&identity).map(|a| a.identity(false));
                prop_assert_eq!(again.as_deref(), Some(identity.as_str()));
            }
        }
    }

    fn text_of(value: &str) -> Option<String> {
        text(value).filter(|folded| text(folded).as_deref() == Some(folded.as_str()))
    }
}

/// The edge's check (`identity::address`, all the worker runs) and the fold (the origin's)
/// agree on what is refused: what the edge refuses the fold refuses, invisible characters are
/// refused by both, an ASCII address by both or by neither (but for an `xn--` label's
/// Punycode), and what the edge forwards is the same person as what was typed.
#[cfg(all(test, not(target_arch = "wasm32")))]
mod agreement {
    use super::super::{address, is_invisible, shape};
    use super::*;
    use proptest::prelude::*;

    /// Every scalar value in a local part, in a domain label and in a top-level label.
    #[test]
    fn every_scalar_value_in_each_part_of_an_address() {
        let parts = [
            ("a", "b@example.org"),
            ("ada@ex", "ample.org"),
            ("ada@example.o", "g"),
        ];
        let mut text = String::new();
        for c in (0..=0x10FFFF).filter_map(char::from_u32) {
            for (before, after) in parts {
                text.clear();
                text.extend([before, c.encode_utf8(&mut [0; 4]), after]);
                // `address` without its forwarded copy: three million checks.
                let edge = shape(&text).is_some();
                if is_invisible(c) {
                    assert!(!edge, "the edge takes {text:?}");
                }
                // Where the edge takes a non-ASCII character only the fold can tell.
                if edge && !c.is_ascii() {
                    continue;
                }
                let fold = Address::parse(&text).is_some();
                assert!(edge || !fold, "only the fold takes {text:?}");
                if c.is_ascii() {
                    assert_eq!(edge, fold, "{text:?}");
                }
            }
        }
    }

    proptest! {
        /// ASCII addresses: both take them or both refuse them, but where a label is `xn--`.
        #[test]
        fn an_ascii_address_is_refused_by_both_or_by_neither(
            text in "[ a-zA-Z0-9.+_'@-]{0,12}@[a-zA-Z0-9._-]{0,12}(\\.[a-zA-Z0-9-]{0,4}){0,2}",
        ) {
            prop_assume!(!text.to_ascii_lowercase().contains("xn--"));
            prop_assert_eq!(address(&text).is_some(), Address::parse(&text).is_some());
        }

        /// The origin reads what the edge forwarded: the same person, stored the same, as
        /// what the visitor typed.
        #[test]
        fn what_the_edge_forwards_is_the_person_typed(
            text in "[a-zA-Zß.+é\u{301}ＡＤａ]{1,8}@[a-zA-ZüÜＢｂ-]{1,8}[.．。][a-zA-Zｏ]{2,3}",
        ) {
            if let Some(forwarded) = address(&text) {
                let (typed, read) = (Address::parse(&text), Address::parse(&forwarded));
                prop_assert_eq!(
                    typed.as_ref().map(|a| (a.identity(false), a.stored())),
                    read.as_ref().map(|a| (a.identity(false), a.stored()))
                );
            } else {
                prop_assert!(Address::parse(&text).is_none());
            }
        }
    }
}
