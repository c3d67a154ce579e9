//! Who is the same person, and which characters no text may carry: one implementation, in two
//! parts so the worker carries only the cheap one.
//!
//! **What the edge checks** (always built; the edge validates with it, and the origin runs the
//! same functions first):
//!
//! - **Invisible characters are refused** in every text: a character with the
//!   Default_Ignorable_Code_Point property (soft hyphen U+00AD, combining grapheme joiner U+034F,
//!   variation selectors such as U+FE0F, zero-width characters, bidi controls, Hangul fillers,
//!   tags, ...) or of general category Cc (control), Cf (format), Zl or Zp (line and paragraph
//!   separators): Unicode's data as a table of 27 ranges, checked against ICU4X's for every
//!   scalar value (`invisible`). Refused rather than dropped: `ada\u{AD}@example.org` is sent
//!   back with a reason, never stored as a spelling its owner cannot see.
//! - **An address's shape** ([`address`]): `local@domain`, at most 254 bytes; the local part at
//!   most 64 bytes of ASCII letters, digits and ``!#$%&'*+-/=?^_`{|}~``, dots not first, last or
//!   doubled, and any other Unicode (RFC 6531); the domain two labels or more, separated by `.`
//!   or by the full stops UTS 46 reads as one (`．`, `。`, `｡`), none empty, none starting or
//!   ending with `-`, ASCII in a label only letters, digits and `-`, no white space; an ASCII
//!   label at most 63 bytes, an ASCII top-level label two
//!   characters or more and not all digits.
//! - **What the edge forwards** for an address: as typed (trimmed), the domain's ASCII letters
//!   lower-cased. Not folded: a mail system may tell `Ada` from `ada` (RFC 5321 §2.4).
//!
//! **The fold** (feature `fold`: the origin, which keeps the person digest, and host tools; not
//! the worker, whose gzip its Unicode data made 60 KB larger: 170,964 bytes against 110,936
//! without it, 111,571 with the checks above), in `fold`: UTS 46 ToASCII
//! for the domain, NFKC with full case folding for the local part and for texts, after the
//! checks above. The fold refuses more than the edge can see without Unicode's data (a domain
//! UTS 46 refuses, such as an `xn--` label that is no Punycode or a disallowed symbol; a local
//! part whose folded form loses the shape, such as `ａ．．b`; a character that cannot identify
//! anyone, such as private use), never less: what the edge refuses, the origin refuses, and an
//! ASCII address is refused by both or by neither but for an `xn--` label's Punycode (the tests
//! check both, with every scalar value in each part of an address). The origin answers what only it refuses with 422 `invalid_identifying_field`
//! naming the field, which the edge passes on as the field's error.

mod invisible;

#[cfg(feature = "fold")]
pub mod fold;

use std::borrow::Cow;

/// RFC 5321 §4.5.3.1: 64 octets for a local part, 254 for a whole path's address (so a domain
/// within it is shorter than DNS's 253); DNS: 63 for a label.
pub const MAX_LOCAL_BYTES: usize = 64;
pub const MAX_ADDRESS_BYTES: usize = 254;
const MAX_LABEL_BYTES: usize = 63;

/// The full stops UTS 46 maps to `.` between a domain's labels (and IDNA2003 read as one).
const LABEL_SEPARATORS: [char; 4] = ['.', '\u{FF0E}', '\u{3002}', '\u{FF61}'];

/// Characters no text may carry: invisible, or not text at all.
pub fn is_invisible(c: char) -> bool {
    // ASCII's only such characters are its controls; most text is ASCII.
    if c.is_ascii() {
        return c.is_ascii_control();
    }
    invisible::contains(c)
}

/// The first invisible character of `text`, if any.
pub fn first_invisible(text: &str) -> Option<char> {
    text.chars().find(|c| is_invisible(*c))
}

/// `text` without its invisible characters, as Unicode's NFKC_Casefold reads text without its
/// default ignorables: for reading values stored before they were refused.
pub fn without_invisible(text: &str) -> Cow<'_, str> {
    if first_invisible(text).is_none() {
        return Cow::Borrowed(text);
    }
    Cow::Owned(text.chars().filter(|c| !is_invisible(*c)).collect())
}

/// The edge's check of an address (see the module's rules): what it forwards, or `None` if
/// `text` is not shaped like an address.
pub fn address(text: &str) -> Option<String> {
    let (local, domain) = shape(text)?;
    Some(format!("{local}@{}", domain.to_ascii_lowercase()))
}

/// The trimmed local part and domain of an address of the right shape.
fn shape(text: &str) -> Option<(&str, &str)> {
    let text = text.trim();
    if text.len() > MAX_ADDRESS_BYTES || first_invisible(text).is_some() {
        return None;
    }
    let (local, domain) = text.rsplit_once('@')?;
    let ok = local.len() <= MAX_LOCAL_BYTES && local_shape(local) && domain_shape(domain);
    ok.then_some((local, domain))
}

/// The local part's shape (the fold checks it again on the folded form).
fn local_shape(local: &str) -> bool {
    !local.is_empty()
        && local.chars().all(|c| {
            !c.is_ascii() || c.is_ascii_alphanumeric() || "!#$%&'*+-/=?^_`{|}~.".contains(c)
        })
        && !local.starts_with('.')
        && !local.ends_with('.')
        && !local.contains("..")
}

/// The domain's shape, as far as it can be told without Unicode's data: for an ASCII domain
/// exactly what UTS 46 ToASCII (STD3 rules, hyphens first and last, DNS lengths) and the
/// top-level rule accept, but for the Punycode of an `xn--` label.
fn domain_shape(domain: &str) -> bool {
    let mut labels = 0;
    let mut last = "";
    for label in domain.split(LABEL_SEPARATORS) {
        let ok = !label.is_empty()
            && !label.starts_with('-')
            && !label.ends_with('-')
            && (!label.is_ascii() || label.len() <= MAX_LABEL_BYTES)
            && label.chars().all(|c| {
                if c.is_ascii() {
                    c.is_ascii_alphanumeric() || c == '-'
                } else {
                    !c.is_whitespace()
                }
            });
        if !ok {
            return false;
        }
        labels += 1;
        last = label;
    }
    let tld_ok = !last.is_ascii() || (last.len() >= 2 && !last.bytes().all(|b| b.is_ascii_digit()));
    labels >= 2 && tld_ok
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 23's spellings of `adaX@example.org` at the edge: the invisible ones refused, the
    /// others forwarded as typed (the origin's fold makes them one person).
    #[test]
    fn the_edge_refuses_invisible_spellings_and_forwards_the_others_as_typed() {
        for (what, variant) in [
            ("soft hyphen", "ada\u{AD}X@example.org"),
            ("variation selector", "adaX\u{FE0F}@example.org"),
            ("combining grapheme joiner", "ad\u{34F}aX@example.org"),
            ("zero width space", "ada\u{200B}X@example.org"),
            ("soft hyphen in the domain", "adaX@exam\u{AD}ple.org"),
        ] {
            assert_eq!(address(variant), None, "{what}");
        }
        for (variant, forwarded) in [
            (" ADAx@Example.ORG ", "ADAx@example.org"),
            ("ａｄａX@example.org", "ａｄａX@example.org"),
            ("adaX@ｅｘａｍｐｌｅ．ｏｒｇ", "adaX@ｅｘａｍｐｌｅ．ｏｒｇ"),
            ("jose\u{301}@example.org", "jose\u{301}@example.org"),
            ("ada@Bücher-Laden.example", "ada@bücher-laden.example"),
            (
                "ada@XN--bcher-laden-thb.example",
                "ada@xn--bcher-laden-thb.example",
            ),
        ] {
            assert_eq!(address(variant).as_deref(), Some(forwarded), "{variant}");
        }
    }

    #[test]
    fn address_shapes() {
        for good in [
            "a@b.co",
            "first.last+tag@sub.example.com",
            "x@xn--bcher-kva.example",
            "用户@例子.中国",
            "o'brien@example.ie",
            "strauß@example.de",
            "a@b--c.example",
            "a@b.xn--p1ai",
            "a@example。org",
        ] {
            assert!(address(good).is_some(), "{good}");
        }
        let long_local = format!("{}@example.org", "a".repeat(65));
        let long_label = format!("a@{}.org", "b".repeat(64));
        let too_long = format!("a@{}org", "b.".repeat(126));
        for bad in [
            "",
            "a",
            "a@",
            "@b.co",
            "a@b",
            "a@b.",
            "a@.b.co",
            "a@b..co",
            "a..b@c.co",
            ".a@c.co",
            "a.@c.co",
            "a b@c.co",
            "a@b_c.co",
            "a@-b.co",
            "a@b-.co",
            "a@b.123",
            "a@b.c",
            "a@@b.co",
            "a\u{0}@b.co",
            "a@b\u{2028}.co",
            "\u{FEFF}a@b.co",
            "a@b\u{202E}.co",
            "a@bü\u{3000}x.co",
            "a@ü．．co",
            &long_local,
            &long_label,
            &too_long,
        ] {
            assert!(address(bad).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn invisible_is_the_unicode_property_and_categories() {
        // Default_Ignorable_Code_Point (some of them visible to no one, some Mn or Lo).
        for c in [
            '\u{AD}',
            '\u{34F}',
            '\u{FE0F}',
            '\u{FE00}',
            '\u{115F}',
            '\u{3164}',
            '\u{E0041}',
            '\u{E0FFF}',
        ] {
            assert!(is_invisible(c), "{c:?}");
        }
        // Cc, Cf (not default ignorable: Arabic number sign, interlinear annotation), Zl, Zp.
        for c in [
            '\u{0}', '\u{7F}', '\u{85}', '\u{600}', '\u{FFF9}', '\u{2028}', '\u{2029}',
        ] {
            assert!(is_invisible(c), "{c:?}");
        }
        for c in [
            'a',
            ' ',
            '\u{A0}',
            'é',
            '\u{301}',
            '用',
            '😀',
            '\u{E000}',
            '\u{10FFFF}',
        ] {
            assert!(!is_invisible(c), "{c:?}");
        }
        assert_eq!(without_invisible("A\u{AD}d\u{FE0F}a\u{600}"), "Ada");
    }
}
