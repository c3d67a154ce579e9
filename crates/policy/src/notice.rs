//! What a campaign tells its visitors and promises its data-protection officer: the privacy
//! notice (who collects, how to reach them, why, a link to the full notice), how long entries are
//! kept, and how winners are drawn.
//!
//! Rules:
//! - Every campaign has a notice and a retention rule: entries are deleted a number of days
//!   after the campaign's end (GDPR Art. 5(1)(e), PIPL Art. 19, APP 11.2).
//! - The notice's version, per locale, is a digest of everything the visitor is shown in that
//!   locale that the policy writes: the notice, the retention rule, the campaign's end and the
//!   label of every consent box. An entry records the version it was made under, which proves
//!   which texts the visitor saw (GDPR Art. 7(1)); any change of those texts is a new version.
//! - A consent field marked `"consent": "marketing"` can never be required: agreeing to be
//!   contacted must be freely given and separate from entering (GDPR Art. 7(4)).
//! - A draw picks winners per region by default (no personal data crosses a border); a global
//!   draw may leave regions out, whose candidates then never leave them.

use sha2::{Digest, Sha256};

use crate::text::push_hex;

/// Who collects entries, why, and where the full notice is, as the policy writes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Notice {
    /// The controller's name and address.
    pub controller: String,
    /// How to reach the controller (or its data-protection officer) about the entries.
    pub contact: String,
    /// Why entries are collected, in English.
    pub purpose: String,
    /// The full notice (https).
    pub link: String,
    /// `purpose` in other locales; English for any the policy leaves out.
    pub purposes: Vec<(&'static str, String)>,
}

impl Notice {
    /// The purpose in `locale`, English for a locale the policy does not translate it into.
    pub fn purpose(&self, locale: &str) -> &str {
        self.purposes
            .iter()
            .find(|(l, _)| *l == locale)
            .map_or(self.purpose.as_str(), |(_, p)| p.as_str())
    }
}

/// How winners are drawn.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Draw {
    /// Winners per draw: per region for a per-region draw, in all for a global one.
    pub winners: u32,
    pub scope: DrawScope,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DrawScope {
    /// Each region draws from its own store; nothing crosses a border.
    PerRegion,
    /// Regions send their best candidates (a pseudonymous digest and a ticket each) to one merge;
    /// `excluded` regions (ids) take no part, so nothing of theirs leaves them.
    Global { excluded: Vec<String> },
}

/// The longest retention a policy may set, in days (ten years).
pub const MAX_RETENTION_DAYS: u32 = 3_650;
/// The most winners a draw may pick.
pub const MAX_WINNERS: u32 = 10_000;
/// What a notice's version covers besides the notice itself: how long entries are kept, when the
/// campaign ends, and the tick boxes' labels (name, label) in the version's locale.
pub struct Covered<'a> {
    pub retention_days: u32,
    pub ends_ms: u64,
    pub boxes: Vec<(&'a str, &'a str)>,
}

/// The version of `notice` in `locale`: the first 16 bytes of SHA-256 over the texts the visitor
/// is shown in that locale, in hex.
pub fn version(notice: &Notice, locale: &str, covered: &Covered) -> String {
    let mut hash = Sha256::new();
    let mut part = |name: &str, value: &str| {
        // Length-prefixed, so no two sets of texts hash alike by moving a boundary.
        for text in [name, value] {
            hash.update((text.len() as u64).to_le_bytes());
            hash.update(text.as_bytes());
        }
    };
    part("harbour-notice", "v1");
    part("locale", locale);
    part("controller", &notice.controller);
    part("contact", &notice.contact);
    part("purpose", notice.purpose(locale));
    part("link", &notice.link);
    part("retention_days", &covered.retention_days.to_string());
    part("ends_ms", &covered.ends_ms.to_string());
    for (name, label) in &covered.boxes {
        part(name, label);
    }
    let digest = hash.finalize();
    let mut version = String::with_capacity(32);
    push_hex(&mut version, &digest[..16]);
    version
}
