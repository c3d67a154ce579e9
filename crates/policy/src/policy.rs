//! The policy: regions, campaigns, limits and what to do with doubtful country signals.
//!
//! A policy is version-controlled JSON (`policy/harbour.json`), parsed and checked as a whole
//! before anything is served. `Policy::parse` reports every problem it finds at once, each naming
//! the entry at fault (`regions[2].countries[4]: ...`), so a bad policy fails `cargo test` with a
//! message a person can act on. Per-environment parts (origin URLs, signing keys) are not here:
//! they come from the environment, see `config`.

use std::collections::HashMap;
use std::num::{NonZeroU32, NonZeroU64};

use serde::Deserialize;

use crate::country::Country;
use crate::field::{Field, FieldKind, Options, RESERVED_MEMBERS};
use crate::ingress::{host_problem, Ingress, KeptInRegionBy};
use crate::notice::{self, Covered, Draw, DrawScope, Notice, MAX_RETENTION_DAYS, MAX_WINNERS};
use crate::quota::{Quota, LOCATION_PERIODS_S};

/// The repository's live policy as committed (`policy/harbour.json`): what the origins, the
/// report and the tests read. The worker compiles in the file its build names (`HARBOUR_POLICY`,
/// see harbour-worker's build.rs), which is this one unless a build says otherwise.
pub const SHIPPED_POLICY: &str = include_str!("../../../policy/harbour.json");

/// Where the candidate policy lives; the worker's build.rs compiles it in when the file exists.
pub const CANDIDATE_FILE: &str = "policy/candidate.json";

/// Position of a region in `Policy::regions`; only `Policy` hands these out.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RegionIndex(pub(crate) usize);

impl RegionIndex {
    pub fn get(self) -> usize {
        self.0
    }
}

/// Position of a campaign in `Policy::campaigns`; only `Policy` hands these out.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CampaignIndex(pub(crate) usize);

impl CampaignIndex {
    pub fn get(self) -> usize {
        self.0
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Region {
    pub id: String,
    /// What a visitor is told their entry's place of storage is ("the European Union"), in
    /// English; `names` in other locales.
    pub name: String,
    pub names: Vec<(&'static str, String)>,
    /// Who runs this region's origins (hosting company and place), for the record of
    /// processing; `None` until the deployment names one.
    pub operator: Option<String>,
    /// Higher is stricter; when two signals disagree the stricter region wins.
    pub strictness: u32,
    pub countries: Vec<Country>,
    /// Admissions per isolate that protect this region's origin capacity.
    pub budget: Option<Quota>,
    /// The hostname that alone takes this region's submissions, if the region has one (see
    /// `ingress`).
    pub ingress: Option<Ingress>,
}

/// What to do with a request whose country signal cannot place it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SignalAction {
    Refuse,
    RouteTo(RegionIndex),
}

/// What to do when the platform's country and the visitor's declared country map to two
/// different regions (see `residency::place`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum OnConflict {
    /// Refuse the submission (422 on the declared field) when both regions have a law of their
    /// own; when one of them is the rest-of-world region, the region with a law wins.
    #[default]
    Refuse,
    /// The platform's country decides; the declared one is only recorded.
    Platform,
    /// The stricter region (higher rank) wins.
    Stricter,
}

/// What happens when the declared country would store an entry in another region than the
/// platform's country places the visitor in (the conflict rule let the declared one win): a
/// choice in a dropdown must not move a visitor's data into another jurisdiction unknowingly.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DeclaredMove {
    /// The page says where the entry will be stored and asks the visitor to confirm; the edge
    /// takes the declared region only with that confirmation (`confirm_region`).
    #[default]
    Confirm,
    /// The platform's region keeps it; the declared country is only recorded.
    Platform,
}

impl DeclaredMove {
    pub fn as_str(self) -> &'static str {
        match self {
            DeclaredMove::Confirm => "confirm",
            DeclaredMove::Platform => "platform",
        }
    }
}

impl OnConflict {
    pub const ALL: [OnConflict; 3] = [
        OnConflict::Refuse,
        OnConflict::Platform,
        OnConflict::Stricter,
    ];

    /// The policy's name for the rule.
    pub fn as_str(self) -> &'static str {
        match self {
            OnConflict::Refuse => "refuse",
            OnConflict::Platform => "platform",
            OnConflict::Stricter => "stricter",
        }
    }

    pub fn parse(name: &str) -> Option<OnConflict> {
        OnConflict::ALL
            .into_iter()
            .find(|rule| rule.as_str() == name)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SignalPolicy {
    /// `XX` or any code that is not a country (see `country`).
    pub unknown: SignalAction,
    /// `T1`: the platform saw a Tor exit node.
    pub tor: SignalAction,
    /// No country at all.
    pub missing: SignalAction,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Campaign {
    pub id: String,
    pub title: String,
    pub fields: Vec<Field>,
    /// A field bots fill and people never see; a filled one is accepted and dropped.
    pub honeypot: Option<String>,
    /// Browser origins allowed to post cross-origin (CORS); same-origin needs no entry.
    pub allowed_origins: Vec<String>,
    pub per_client: Quota,
    pub campaign: Quota,
    /// The proof of work every submission must carry (see `challenge`).
    pub challenge: ChallengeRule,
    /// A sentence under the title, in English.
    pub intro: Option<String>,
    /// The campaign's texts in other languages, by locale; what one leaves out is English.
    pub texts: Vec<(&'static str, CampaignTexts)>,
    /// Fields that together identify a person: the region's store keeps one entry per person
    /// (a keyed digest of their normalised values is unique per campaign). Empty: no such rule.
    pub one_entry_per: Vec<String>,
    /// What admission does when the location's rate-limiting binding cannot answer.
    pub on_location_unavailable: FailMode,
    /// Scheduled windows with limits of their own, by start; they never overlap.
    pub surge_windows: Vec<SurgeWindow>,
    /// When the campaign closes (UTC ms): the draw's seed is published after it, and retention
    /// counts from it.
    pub ends_ms: u64,
    /// Entries are deleted this many days after `ends_ms`.
    pub retention_days: u32,
    pub notice: Notice,
    /// The notice version of every locale (see `notice`), computed when the policy is read.
    pub notice_versions: Vec<(&'static str, String)>,
    /// How winners are drawn, if the campaign has a draw.
    pub draw: Option<Draw>,
}

/// What admission does when the location's rate-limiting binding throws or does not answer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum FailMode {
    /// Admit on the isolate's own layers alone.
    #[default]
    Open,
    /// Answer 503 with `Retry-After`.
    Closed,
}

impl FailMode {
    pub fn as_str(self) -> &'static str {
        match self {
            FailMode::Open => "fail_open",
            FailMode::Closed => "fail_closed",
        }
    }
}

/// A scheduled window ("know what to expect": the minutes after a TV spot) with limits of its
/// own. From `start_ms` (inclusive) to `end_ms` (exclusive), UTC milliseconds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SurgeWindow {
    pub id: String,
    pub start_ms: u64,
    pub end_ms: u64,
    pub per_client: Quota,
    pub on_location_unavailable: FailMode,
    /// The challenge's difficulty inside the window; `None`: the campaign's.
    pub difficulty_bits: Option<u8>,
}

impl SurgeWindow {
    pub fn holds(&self, now_ms: u64) -> bool {
        self.start_ms <= now_ms && now_ms < self.end_ms
    }
}

/// The limits a campaign applies at one instant: its own, or those of the surge window that
/// holds the instant.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InForce<'a> {
    /// The window, by position in `surge_windows`; `None` outside every window.
    pub window: Option<(usize, &'a SurgeWindow)>,
    pub per_client: Quota,
    pub on_location_unavailable: FailMode,
    /// Leading zero bits a submission's proof of work must have.
    pub difficulty_bits: u8,
}

/// How hard a campaign's challenge is and how long a solved one stays good.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChallengeRule {
    /// Leading zero bits the solution's SHA-256 must have: 2^bits hashes expected.
    pub difficulty_bits: u8,
    pub valid_ms: u64,
}

/// A new campaign's challenge when its policy says nothing: about a second's work on a mid-range
/// phone (2^20 hashes; the browser tests measure the page's solver at 4x CPU throttling: about
/// 1 M hashes/s), good for half an hour.
pub const DEFAULT_CHALLENGE: ChallengeRule = ChallengeRule {
    difficulty_bits: 20,
    valid_ms: 30 * 60 * 1000,
};
pub const MAX_DIFFICULTY_BITS: u8 = 32;
pub const MIN_CHALLENGE_VALID_MS: u64 = 60_000;
pub const MAX_CHALLENGE_VALID_MS: u64 = 24 * 60 * 60 * 1000;

const DAY_MS: u64 = 24 * 60 * 60 * 1000;

impl Campaign {
    /// When the campaign's entries are deleted: `retention_days` after its end.
    pub fn delete_after_ms(&self) -> u64 {
        self.ends_ms
            .saturating_add(u64::from(self.retention_days).saturating_mul(DAY_MS))
    }

    /// The notice version of `locale` (see the module's rules), or the English one for a
    /// locale harbour does not know.
    pub fn notice_version(&self, locale: &str) -> &str {
        self.notice_versions
            .iter()
            .find(|(l, _)| *l == locale)
            .or(self.notice_versions.first())
            .map_or("", |(_, v)| v.as_str())
    }

    /// What a page sends as `Harbour-Notice` for the notice it shows in `locale`:
    /// `{locale}.{version}`.
    pub fn notice_header(&self, locale: &str) -> String {
        format!("{locale}.{}", self.notice_version(locale))
    }

    /// The label of field `name` in `locale`, English where the policy does not translate it.
    pub fn label(&self, name: &str, locale: &str) -> Option<&str> {
        let translated = self
            .texts(locale)
            .and_then(|t| t.labels.iter().find(|(n, _)| n == name))
            .map(|(_, l)| l.as_str());
        translated.or_else(|| self.field(name).map(|f| f.label.as_str()))
    }
}

/// The notice version of every locale, in [`LOCALES`] order (see `notice::version`).
fn notice_versions(campaign: &Campaign) -> Vec<(&'static str, String)> {
    LOCALES
        .iter()
        .map(|locale| {
            let covered = Covered {
                retention_days: campaign.retention_days,
                ends_ms: campaign.ends_ms,
                boxes: campaign
                    .fields
                    .iter()
                    .filter(|f| f.kind == FieldKind::Bool)
                    .map(|f| {
                        (
                            f.name.as_str(),
                            campaign.label(&f.name, locale).unwrap_or(""),
                        )
                    })
                    .collect(),
            };
            (*locale, notice::version(&campaign.notice, locale, &covered))
        })
        .collect()
}

/// The languages the campaign page speaks, English first (the fallback). A campaign's texts may
/// name any but English, whose texts are the campaign's own.
pub const LOCALES: [&str; 6] = ["en", "zh-CN", "ru", "it", "de", "fr"];

/// One locale's campaign texts; `None` or a missing label falls back to English.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CampaignTexts {
    pub title: Option<String>,
    pub intro: Option<String>,
    /// (field name, label)
    pub labels: Vec<(String, String)>,
}

/// The most surge windows a campaign may list.
pub const MAX_SURGE_WINDOWS: usize = 100;

impl Campaign {
    pub fn field(&self, name: &str) -> Option<&Field> {
        self.fields.iter().find(|f| f.name == name)
    }

    /// The limits in force at `now_ms`.
    pub fn in_force(&self, now_ms: u64) -> InForce<'_> {
        match self
            .surge_windows
            .iter()
            .enumerate()
            .find(|(_, w)| w.holds(now_ms))
        {
            Some((index, window)) => InForce {
                window: Some((index, window)),
                per_client: window.per_client,
                on_location_unavailable: window.on_location_unavailable,
                difficulty_bits: window
                    .difficulty_bits
                    .unwrap_or(self.challenge.difficulty_bits),
            },
            None => InForce {
                window: None,
                per_client: self.per_client,
                on_location_unavailable: self.on_location_unavailable,
                difficulty_bits: self.challenge.difficulty_bits,
            },
        }
    }

    /// The texts for `locale` if the policy has any; English (the campaign's own) otherwise.
    pub fn texts(&self, locale: &str) -> Option<&CampaignTexts> {
        self.texts
            .iter()
            .find(|(l, _)| *l == locale)
            .map(|(_, texts)| texts)
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Policy {
    pub regions: Vec<Region>,
    pub rest_of_world: RegionIndex,
    pub signals: SignalPolicy,
    /// Policy-wide, not per campaign: which law a visitor's data falls under is a matter of the
    /// regions, and one campaign must not be able to export what the others refuse to.
    pub on_conflict: OnConflict,
    pub declared_move: DeclaredMove,
    pub max_body_bytes: u32,
    pub campaigns: Vec<Campaign>,
    by_country: HashMap<Country, RegionIndex>,
}

/// One problem in a policy or a configuration, with the path of the entry at fault (a policy
/// entry such as `regions[2].countries[4]`, or an environment variable).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Issue {
    pub path: String,
    pub message: String,
}

impl std::fmt::Display for Issue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// Every problem found in a policy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PolicyError(pub Vec<Issue>);

impl std::fmt::Display for PolicyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "invalid policy ({} problem(s))", self.0.len())?;
        for issue in &self.0 {
            write!(f, "\n  - {issue}")?;
        }
        Ok(())
    }
}

impl std::error::Error for PolicyError {}

impl Policy {
    pub fn shipped() -> Result<Policy, PolicyError> {
        Policy::parse(SHIPPED_POLICY)
    }

    /// Choices that pass the checks but have a consequence a deployer must know before shipping:
    /// the build prints each as a warning, and the residency report says it in its first lines.
    pub fn warnings(&self) -> Vec<String> {
        let mut warnings = Vec::new();
        if self.on_conflict == OnConflict::Stricter {
            let mut ranked: Vec<&Region> = self.regions.iter().collect();
            ranked.sort_by_key(|r| std::cmp::Reverse(r.strictness));
            let example = match ranked.as_slice() {
                [strictest, next, ..] => format!(
                    " (a visitor connecting from `{}` who declares a country of `{}` is stored in `{}`)",
                    next.id, strictest.id, strictest.id
                ),
                _ => String::new(),
            };
            let how = match self.declared_move {
                DeclaredMove::Confirm => "once the visitor confirms it on the page",
                DeclaredMove::Platform => "unless declared_move keeps the platform's region",
            };
            warnings.push(format!(
                "on_conflict: \"stricter\" stores an entry in the stricter region of the country the \
                 visitor declares, under that region's law{example}, {how}: a choice in a form \
                 moves personal data into another jurisdiction"
            ));
        }
        warnings
    }

    /// A policy from parts that passed the checks (the code `code::rust_source` writes, which
    /// the worker compiles in); the country index is derived from the regions.
    pub fn assembled(
        regions: Vec<Region>,
        rest_of_world: RegionIndex,
        signals: SignalPolicy,
        on_conflict: OnConflict,
        declared_move: DeclaredMove,
        max_body_bytes: u32,
        campaigns: Vec<Campaign>,
    ) -> Policy {
        let by_country = regions
            .iter()
            .enumerate()
            .flat_map(|(i, r)| r.countries.iter().map(move |&c| (c, RegionIndex(i))))
            .collect();
        Policy {
            regions,
            rest_of_world,
            signals,
            on_conflict,
            declared_move,
            max_body_bytes,
            campaigns,
            by_country,
        }
    }

    pub fn parse(json: &str) -> Result<Policy, PolicyError> {
        let raw: RawPolicy = serde_json::from_str(json).map_err(|e| {
            PolicyError(vec![Issue {
                path: format!("line {} column {}", e.line(), e.column()),
                message: e.to_string(),
            }])
        })?;
        let mut checker = Checker::default();
        let policy = checker.policy(raw);
        match policy {
            Some(policy) if checker.issues.is_empty() => Ok(policy),
            _ => Err(PolicyError(checker.issues)),
        }
    }

    /// Every region's index, in the policy's order.
    pub fn region_indices(&self) -> impl Iterator<Item = RegionIndex> {
        (0..self.regions.len()).map(RegionIndex)
    }

    pub fn region(&self, index: RegionIndex) -> &Region {
        &self.regions[index.0]
    }

    /// Whether a region has a law of its own: every region but the rest-of-world one.
    pub fn has_own_law(&self, index: RegionIndex) -> bool {
        index != self.rest_of_world
    }

    pub fn region_index(&self, id: &str) -> Option<RegionIndex> {
        self.regions
            .iter()
            .position(|r| r.id == id)
            .map(RegionIndex)
    }

    /// Every assigned country maps to exactly one region: its own, or the rest-of-world region.
    pub fn region_of(&self, country: Country) -> RegionIndex {
        self.by_country
            .get(&country)
            .copied()
            .unwrap_or(self.rest_of_world)
    }

    pub fn campaign(&self, id: &str) -> Option<&Campaign> {
        self.campaigns.iter().find(|c| c.id == id)
    }

    pub fn find_campaign(&self, id: &str) -> Option<(CampaignIndex, &Campaign)> {
        self.campaigns
            .iter()
            .enumerate()
            .find(|(_, c)| c.id == id)
            .map(|(i, c)| (CampaignIndex(i), c))
    }
}

/// The candidate policy committed beside the live one (`CANDIDATE_FILE` under the workspace
/// root), if there is one: for host tools and tests, which read it at run time.
pub fn committed_candidate() -> Option<String> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    std::fs::read_to_string(root.join(CANDIDATE_FILE)).ok()
}

/// Where the live policy lives unless a build names another (`HARBOUR_POLICY`).
pub const LIVE_FILE: &str = "policy/harbour.json";

/// Checks the live policy (read from `live_file`) and, when there is one, the candidate, with the
/// same checks and the same messages; each issue's path starts with its file. The one call for
/// anything that must refuse a bad policy before it ships (tests, the report tool, the build).
pub fn check_policies(
    live_file: &str,
    live: &str,
    candidate: Option<&str>,
) -> Result<(), PolicyError> {
    let mut issues = Vec::new();
    let files = [(live_file, Some(live)), (CANDIDATE_FILE, candidate)];
    for (file, text) in files {
        if let Some(Err(PolicyError(found))) = text.map(Policy::parse) {
            issues.extend(found.into_iter().map(|issue| Issue {
                path: format!("{file}: {}", issue.path),
                message: issue.message,
            }));
        }
    }
    if issues.is_empty() {
        Ok(())
    } else {
        Err(PolicyError(issues))
    }
}

// ---- raw, as written -------------------------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    regions: Vec<RawRegion>,
    rest_of_world: String,
    signals: RawSignals,
    on_conflict: Option<String>,
    declared_move: Option<String>,
    max_body_bytes: u32,
    campaigns: Vec<RawCampaign>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRegion {
    id: String,
    name: String,
    /// `{locale: name}`, read as plain JSON like `texts`.
    #[serde(default)]
    names: serde_json::Value,
    operator: Option<String>,
    strictness: u32,
    #[serde(default)]
    countries: Vec<String>,
    budget: Option<RawQuota>,
    ingress: Option<RawIngress>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawIngress {
    host: String,
    kept_in_region_by: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSignals {
    unknown: String,
    tor: String,
    missing: String,
}

#[derive(Deserialize, Clone, Copy)]
#[serde(deny_unknown_fields)]
struct RawQuota {
    burst: u32,
    window_ms: u64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCampaign {
    id: String,
    title: String,
    #[serde(default)]
    allowed_origins: Vec<String>,
    honeypot: Option<String>,
    /// Gone: kept only to refuse an old policy with a sentence rather than "unknown field".
    /// (Plain JSON values here and in `texts` reuse the deserializer the worker has anyway.)
    #[serde(default)]
    min_fill_ms: serde_json::Value,
    #[serde(default)]
    one_entry_per: Vec<String>,
    limits: RawCampaignLimits,
    #[serde(default)]
    surge_windows: Vec<RawSurgeWindow>,
    fields: Vec<RawField>,
    challenge: Option<RawChallenge>,
    intro: Option<String>,
    /// Read as plain JSON and checked by hand (`Checker::texts`): typed maps would add their own
    /// deserializers to the worker, about 10 KB of wasm, for a part the check walks once.
    #[serde(default)]
    texts: serde_json::Value,
    ends: String,
    retention: RawRetention,
    notice: RawNotice,
    draw: Option<RawDraw>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRetention {
    days_after_end: u32,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNotice {
    controller: String,
    contact: String,
    purpose: String,
    link: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDraw {
    winners: u32,
    scope: String,
    #[serde(default)]
    excluded_regions: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawChallenge {
    difficulty_bits: u32,
    valid_ms: u64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCampaignLimits {
    per_client: RawQuota,
    campaign: RawQuota,
    on_location_unavailable: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSurgeWindow {
    id: String,
    start: String,
    end: String,
    per_client: RawQuota,
    on_location_unavailable: Option<String>,
    difficulty_bits: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawField {
    name: String,
    label: String,
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    required: bool,
    max_length: Option<u32>,
    values: Option<Vec<String>>,
    min: Option<i64>,
    max: Option<i64>,
    #[serde(default)]
    must_be_true: bool,
    #[serde(default)]
    residency_signal: bool,
    /// `"marketing"`: agreeing to be contacted, which can never be required.
    consent: Option<String>,
    /// An identifying email field: sub-addresses and gmail's dots do not tell people apart.
    #[serde(default)]
    provider_rules: bool,
}

// ---- checking --------------------------------------------------------------------------------

/// `(scheme, host[:port])` of a web origin (`http` or `https`, no path, query or fragment).
pub fn web_origin(origin: &str) -> Option<(&'static str, &str)> {
    let (scheme, host) = match origin.strip_prefix("https://") {
        Some(host) => ("https", host),
        None => ("http", origin.strip_prefix("http://")?),
    };
    let ok =
        !host.is_empty() && !host.contains(['/', '?', '#']) && !host.contains(char::is_whitespace);
    ok.then_some((scheme, host))
}

/// Words of a name that autofill (browsers' heuristics, password managers' identities) reads as
/// something it can fill: a whole word of the name (split at `_`, `-`, `.`), or any part of it
/// for the longer ones.
const AUTOFILL_WORDS: &[&str] = &[
    "name", "first", "last", "given", "family", "middle", "nick", "mail", "tel", "fax", "zip",
    "city", "town", "state", "org", "job", "title", "age", "sex", "user", "pass", "pin", "card",
    "cc", "cvc", "cvv", "iban", "url", "web", "site", "www", "home", "otp", "code", "bday",
];
const AUTOFILL_PARTS: &[&str] = &[
    "email", "phone", "mobile", "address", "street", "postal", "postcode", "country", "region",
    "province", "company", "organi", "birth", "login", "password", "username", "website",
    "homepage", "surname", "account", "gender",
];

/// The autofill word in `name`, if it has one (see `AUTOFILL_WORDS`).
fn autofilled(name: &str) -> Option<&'static str> {
    let lower = name.to_ascii_lowercase();
    let whole = lower
        .split(['_', '-', '.'])
        .find_map(|word| AUTOFILL_WORDS.iter().find(|w| **w == word));
    whole
        .or_else(|| AUTOFILL_PARTS.iter().find(|part| lower.contains(**part)))
        .copied()
}

/// Field and campaign ids appear in URLs, JSON keys and logs: keep them plain.
fn is_plain_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

const DEFAULT_MAX_LENGTH: u32 = 200;
const MAX_FIELD_LENGTH: u32 = 10_000;

#[derive(Default)]
struct Checker {
    issues: Vec<Issue>,
}

impl Checker {
    fn fail(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.issues.push(Issue {
            path: path.into(),
            message: message.into(),
        });
    }

    fn quota(&mut self, path: &str, raw: RawQuota) -> Option<Quota> {
        let burst = NonZeroU32::new(raw.burst);
        let window = NonZeroU64::new(raw.window_ms);
        if burst.is_none() {
            self.fail(format!("{path}.burst"), "limit must be at least 1");
        }
        if window.is_none() {
            self.fail(format!("{path}.window_ms"), "window must be at least 1 ms");
        }
        Some(Quota::new(burst?, window?))
    }

    /// A per-client quota, which the location's rate-limiting binding must be able to count.
    fn per_client_quota(&mut self, path: &str, raw: RawQuota) -> Option<Quota> {
        let quota = self.quota(path, raw)?;
        if quota.location().is_none() {
            self.fail(
                format!("{path}.window_ms"),
                format!(
                    "{} ms cannot be counted per location: the rate-limiting binding counts over {} s or {} s (window_ms {} or {})",
                    raw.window_ms,
                    LOCATION_PERIODS_S[0],
                    LOCATION_PERIODS_S[1],
                    LOCATION_PERIODS_S[0] * 1000,
                    LOCATION_PERIODS_S[1] * 1000
                ),
            );
            return None;
        }
        Some(quota)
    }

    fn fail_mode(&mut self, path: &str, raw: Option<&str>, default: FailMode) -> FailMode {
        match raw {
            None => default,
            Some("fail_open") => FailMode::Open,
            Some("fail_closed") => FailMode::Closed,
            Some(other) => {
                self.fail(
                    path,
                    format!("{other:?} must be \"fail_open\" or \"fail_closed\""),
                );
                default
            }
        }
    }

    fn instant(&mut self, path: String, text: &str) -> Option<u64> {
        match crate::utc::parse_ms(text) {
            Ok(ms) => Some(ms),
            Err(why) => {
                self.fail(path, format!("{text:?} is not a UTC time: {why}"));
                None
            }
        }
    }

    /// A campaign's surge windows, each checked, then all of them against each other.
    fn surge_windows(
        &mut self,
        path: &str,
        raw: Vec<RawSurgeWindow>,
        campaign_mode: FailMode,
    ) -> Vec<SurgeWindow> {
        if raw.len() > MAX_SURGE_WINDOWS {
            self.fail(
                format!("{path}.surge_windows"),
                format!("{} windows; at most {MAX_SURGE_WINDOWS}", raw.len()),
            );
        }
        // (path, window) of each window that passed its own checks.
        let mut windows: Vec<(String, SurgeWindow)> = Vec::new();
        for (j, w) in raw.into_iter().enumerate() {
            let wpath = format!("{path}.surge_windows[{j}]");
            if !is_plain_id(&w.id) {
                self.fail(
                    format!("{wpath}.id"),
                    format!("window id {:?} must be 1-64 of a-z 0-9 - _", w.id),
                );
            } else if windows.iter().any(|(_, other)| other.id == w.id) {
                self.fail(
                    format!("{wpath}.id"),
                    format!("duplicate window {:?}", w.id),
                );
            }
            let start = self.instant(format!("{wpath}.start"), &w.start);
            let end = self.instant(format!("{wpath}.end"), &w.end);
            let per_client = self.per_client_quota(&format!("{wpath}.per_client"), w.per_client);
            let mode = self.fail_mode(
                &format!("{wpath}.on_location_unavailable"),
                w.on_location_unavailable.as_deref(),
                campaign_mode,
            );
            let difficulty_bits = w.difficulty_bits.and_then(|bits| {
                let valid = u8::try_from(bits)
                    .ok()
                    .filter(|bits| (1..=MAX_DIFFICULTY_BITS).contains(bits));
                if valid.is_none() {
                    self.fail(
                        format!("{wpath}.difficulty_bits"),
                        format!("{bits} is outside 1..={MAX_DIFFICULTY_BITS}"),
                    );
                }
                valid
            });
            let (Some(start_ms), Some(end_ms), Some(per_client)) = (start, end, per_client) else {
                continue;
            };
            if end_ms <= start_ms {
                self.fail(
                    format!("{wpath}.end"),
                    format!("{:?} is not after start {:?}", w.end, w.start),
                );
                continue;
            }
            // By start, inserted in place: a general sort would cost more wasm than it saves.
            let at = windows.partition_point(|(_, other)| other.start_ms <= start_ms);
            windows.insert(
                at,
                (
                    wpath,
                    SurgeWindow {
                        id: w.id,
                        start_ms,
                        end_ms,
                        per_client,
                        on_location_unavailable: mode,
                        difficulty_bits,
                    },
                ),
            );
        }
        for pair in windows.windows(2) {
            let ((earlier_path, earlier), (later_path, later)) = (&pair[0], &pair[1]);
            if later.start_ms < earlier.end_ms {
                self.fail(
                    later_path.clone(),
                    format!(
                        "window {:?} overlaps window {:?} ({earlier_path}); windows may touch but not overlap",
                        later.id, earlier.id
                    ),
                );
            }
        }
        windows.into_iter().map(|(_, w)| w).collect()
    }

    /// Regions, and the region of every country one of them lists.
    fn regions(&mut self, raw: Vec<RawRegion>) -> (Vec<Region>, HashMap<Country, RegionIndex>) {
        let mut regions = Vec::new();
        let mut by_country: HashMap<Country, RegionIndex> = HashMap::new();
        let mut country_path: HashMap<Country, String> = HashMap::new();
        if raw.is_empty() {
            self.fail("regions", "at least one region is required");
        }
        for (i, r) in raw.into_iter().enumerate() {
            let path = format!("regions[{i}]");
            if !is_plain_id(&r.id) {
                self.fail(
                    format!("{path}.id"),
                    format!("region id {:?} must be 1-64 of a-z 0-9 - _", r.id),
                );
            }
            if regions.iter().any(|other: &Region| other.id == r.id) {
                self.fail(format!("{path}.id"), format!("duplicate region {:?}", r.id));
            }
            if let Some(other) = regions
                .iter()
                .find(|other: &&Region| other.strictness == r.strictness)
            {
                self.fail(
                    format!("{path}.strictness"),
                    format!(
                        "strictness {} is also region {:?}'s; ranks must differ so conflicts have one answer",
                        r.strictness, other.id
                    ),
                );
            }
            let mut countries = Vec::new();
            for (j, code) in r.countries.iter().enumerate() {
                let cpath = format!("{path}.countries[{j}]");
                match Country::parse(code) {
                    Some(c) if code.bytes().all(|b| b.is_ascii_uppercase()) => {
                        if let Some(first) = country_path.get(&c) {
                            self.fail(
                                cpath,
                                format!("country {c} is in two regions (also at {first})"),
                            );
                        } else {
                            country_path.insert(c, cpath);
                            by_country.insert(c, RegionIndex(i));
                            countries.push(c);
                        }
                    }
                    _ => self.fail(
                        cpath,
                        format!(
                            "{code:?} is not a country code (ISO 3166-1 alpha-2 or XK, upper case)"
                        ),
                    ),
                }
            }
            let budget = r
                .budget
                .and_then(|q| self.quota(&format!("{path}.budget"), q));
            let names = self.translations(&format!("{path}.names"), r.names);
            let ingress = r
                .ingress
                .and_then(|raw| self.ingress(&format!("{path}.ingress"), raw, &countries));
            if let Some((host, other)) = ingress.as_ref().and_then(|i| {
                let other = regions.iter().find(|o: &&Region| {
                    o.ingress
                        .as_ref()
                        .is_some_and(|theirs| theirs.host == i.host)
                })?;
                Some((&i.host, &other.id))
            }) {
                self.fail(
                    format!("{path}.ingress.host"),
                    format!("{host:?} is also region {other:?}'s ingress; each region needs a hostname of its own"),
                );
            }
            if r.name.trim().is_empty() {
                self.fail(
                    format!("{path}.name"),
                    "a region needs a name visitors are shown as where their entry is stored",
                );
            }
            regions.push(Region {
                id: r.id,
                name: r.name,
                names,
                operator: r.operator,
                strictness: r.strictness,
                countries,
                budget,
                ingress,
            });
        }
        (regions, by_country)
    }

    /// A global draw's excluded regions must be the policy's.
    fn draw_regions(&mut self, campaigns: &[Campaign], regions: &[Region]) {
        for (i, campaign) in campaigns.iter().enumerate() {
            let Some(Draw {
                scope: DrawScope::Global { excluded },
                ..
            }) = &campaign.draw
            else {
                continue;
            };
            for (j, id) in excluded.iter().enumerate() {
                if !regions.iter().any(|r| &r.id == id) {
                    self.fail(
                        format!("campaigns[{i}].draw.excluded_regions[{j}]"),
                        format!("unknown region {id:?}"),
                    );
                }
            }
        }
    }

    /// A region's ingress: a plain hostname and a product that can keep it in the region (the
    /// China Network only for a region that takes mainland China).
    fn ingress(&mut self, path: &str, raw: RawIngress, countries: &[Country]) -> Option<Ingress> {
        if let Some(problem) = host_problem(&raw.host) {
            self.fail(format!("{path}.host"), problem);
            return None;
        }
        let Some(kept_in_region_by) = KeptInRegionBy::parse(&raw.kept_in_region_by) else {
            self.fail(
                format!("{path}.kept_in_region_by"),
                format!(
                    "{:?} must be \"regional_services\" or \"china_network\"",
                    raw.kept_in_region_by
                ),
            );
            return None;
        };
        let china = Country::parse("CN");
        if kept_in_region_by == KeptInRegionBy::ChinaNetwork
            && !china.is_some_and(|cn| countries.contains(&cn))
        {
            self.fail(
                format!("{path}.kept_in_region_by"),
                "the China Network serves from mainland China only; this region does not list CN",
            );
            return None;
        }
        Some(Ingress {
            host: raw.host,
            kept_in_region_by,
        })
    }

    fn policy(&mut self, raw: RawPolicy) -> Option<Policy> {
        let (regions, by_country) = self.regions(raw.regions);
        let find = |id: &str| regions.iter().position(|r| r.id == id).map(RegionIndex);

        let rest_of_world = find(&raw.rest_of_world);
        if rest_of_world.is_none() {
            self.fail(
                "rest_of_world",
                format!("unknown region {:?}", raw.rest_of_world),
            );
        }
        let mut action = |path: &str, text: &str| -> Option<SignalAction> {
            if text == "refuse" {
                return Some(SignalAction::Refuse);
            }
            match text.strip_prefix("region:").map(find) {
                Some(Some(index)) => Some(SignalAction::RouteTo(index)),
                Some(None) => {
                    self.fail(path, format!("unknown region in {text:?}"));
                    None
                }
                None => {
                    self.fail(
                        path,
                        format!("{text:?} must be \"refuse\" or \"region:<id>\""),
                    );
                    None
                }
            }
        };
        let signals = (
            action("signals.unknown", &raw.signals.unknown),
            action("signals.tor", &raw.signals.tor),
            action("signals.missing", &raw.signals.missing),
        );

        let on_conflict = match raw.on_conflict.as_deref() {
            None => Some(OnConflict::default()),
            Some(name) => {
                let rule = OnConflict::parse(name);
                if rule.is_none() {
                    self.fail(
                        "on_conflict",
                        format!("{name:?} must be \"refuse\", \"platform\" or \"stricter\""),
                    );
                }
                rule
            }
        };

        if raw.max_body_bytes < 256 || raw.max_body_bytes > 1_048_576 {
            self.fail(
                "max_body_bytes",
                format!("{} is outside 256..=1048576 bytes", raw.max_body_bytes),
            );
        }

        let mut campaigns: Vec<Campaign> = Vec::new();
        if raw.campaigns.is_empty() {
            self.fail("campaigns", "at least one campaign is required");
        }
        for (i, c) in raw.campaigns.into_iter().enumerate() {
            let path = format!("campaigns[{i}]");
            if let Some(campaign) = self.campaign(&path, c) {
                if campaigns.iter().any(|other| other.id == campaign.id) {
                    self.fail(
                        format!("{path}.id"),
                        format!("duplicate campaign {:?}", campaign.id),
                    );
                }
                campaigns.push(campaign);
            }
        }

        self.draw_regions(&campaigns, &regions);
        let (Some(unknown), Some(tor), Some(missing)) = signals else {
            return None;
        };
        let on_conflict = on_conflict?;
        let declared_move = match raw.declared_move.as_deref() {
            None | Some("confirm") => DeclaredMove::Confirm,
            Some("platform") => DeclaredMove::Platform,
            Some(other) => {
                self.fail(
                    "declared_move",
                    format!("{other:?} must be \"confirm\" or \"platform\""),
                );
                return None;
            }
        };
        Some(Policy {
            regions,
            rest_of_world: rest_of_world?,
            signals: SignalPolicy {
                unknown,
                tor,
                missing,
            },
            on_conflict,
            declared_move,
            max_body_bytes: raw.max_body_bytes,
            campaigns,
            by_country,
        })
    }

    fn campaign(&mut self, path: &str, c: RawCampaign) -> Option<Campaign> {
        if !is_plain_id(&c.id) {
            self.fail(
                format!("{path}.id"),
                format!("campaign id {:?} must be 1-64 of a-z 0-9 - _", c.id),
            );
        }
        for (j, origin) in c.allowed_origins.iter().enumerate() {
            let problem = match web_origin(origin) {
                None => "must be a scheme://host[:port] origin without a path",
                Some(("http", _)) => "is plain http: a campaign page is served over https; a page on a developer's machine belongs in the local environment's HARBOUR_PAGE_ORIGINS, never in the policy every environment ships",
                Some(_) => continue,
            };
            self.fail(
                format!("{path}.allowed_origins[{j}]"),
                format!("{origin:?} {problem}"),
            );
        }
        let per_client =
            self.per_client_quota(&format!("{path}.limits.per_client"), c.limits.per_client);
        let campaign = self.quota(&format!("{path}.limits.campaign"), c.limits.campaign);
        let on_location_unavailable = self.fail_mode(
            &format!("{path}.limits.on_location_unavailable"),
            c.limits.on_location_unavailable.as_deref(),
            FailMode::default(),
        );
        let surge_windows = self.surge_windows(path, c.surge_windows, on_location_unavailable);
        let names: Vec<String> = c.fields.iter().map(|f| f.name.clone()).collect();
        let fields = self.fields(path, c.fields, &c.one_entry_per);
        let signals = fields.iter().filter(|f| f.residency_signal).count();
        if signals > 1 {
            self.fail(
                format!("{path}.fields"),
                "at most one field can be the residency signal",
            );
        }
        if let Some(honeypot) = &c.honeypot {
            if !is_plain_id(honeypot) || fields.iter().any(|f| &f.name == honeypot) {
                self.fail(
                    format!("{path}.honeypot"),
                    format!("{honeypot:?} must be a plain name that is not a real field"),
                );
            } else if let Some(word) = autofilled(honeypot) {
                self.fail(
                    format!("{path}.honeypot"),
                    format!("{honeypot:?} names what browsers and password managers fill in by themselves ({word:?}): an autofilled honeypot turns a real entry into a decoy; choose a name no form asks for, such as \"remarks\""),
                );
            }
        }
        if !c.min_fill_ms.is_null() {
            self.fail(
                format!("{path}.min_fill_ms"),
                "the minimum fill time is gone (it dropped real entries: autofill, a tab left open); every submission now carries a proof of work instead, set by \"challenge\": {\"difficulty_bits\", \"valid_ms\"}; remove this key",
            );
        }
        self.one_entry_per(path, &c.one_entry_per, &names, &fields);
        let challenge = self.challenge(path, c.challenge);
        let (texts, purposes) = self.texts(path, c.texts, &names);
        let ends_ms = self.instant(format!("{path}.ends"), &c.ends);
        let retention_days = c.retention.days_after_end;
        if !(1..=MAX_RETENTION_DAYS).contains(&retention_days) {
            self.fail(
                format!("{path}.retention.days_after_end"),
                format!("{retention_days} is outside 1..={MAX_RETENTION_DAYS} days"),
            );
        }
        let notice = self.notice(path, c.notice, purposes);
        let draw = c.draw.and_then(|d| self.draw(path, d));
        let mut campaign = Campaign {
            one_entry_per: c.one_entry_per,
            id: c.id,
            title: c.title,
            fields,
            honeypot: c.honeypot,
            allowed_origins: c.allowed_origins,
            per_client: per_client?,
            campaign: campaign?,
            on_location_unavailable,
            surge_windows,
            challenge,
            intro: c.intro,
            texts,
            ends_ms: ends_ms?,
            retention_days,
            notice,
            notice_versions: Vec::new(),
            draw,
        };
        campaign.notice_versions = notice_versions(&campaign);
        Some(campaign)
    }

    /// The campaign's fields, each checked, and marked when `one_entry_per` names it.
    fn fields(&mut self, path: &str, raw: Vec<RawField>, one_entry_per: &[String]) -> Vec<Field> {
        let mut fields: Vec<Field> = Vec::new();
        if raw.is_empty() {
            self.fail(
                format!("{path}.fields"),
                "a campaign needs at least one field",
            );
        }
        for (j, f) in raw.into_iter().enumerate() {
            let fpath = format!("{path}.fields[{j}]");
            if fields.iter().any(|other| other.name == f.name) {
                self.fail(
                    format!("{fpath}.name"),
                    format!("duplicate field {:?}", f.name),
                );
            }
            let Some(mut field) = self.field(&fpath, f) else {
                continue;
            };
            field.identifying = one_entry_per.contains(&field.name);
            if field.provider_rules {
                self.provider_rules(&fpath, &field);
            }
            fields.push(field);
        }
        fields
    }

    /// Provider rules change only who counts as the same person: an email field that
    /// `one_entry_per` names.
    fn provider_rules(&mut self, fpath: &str, field: &Field) {
        let path = format!("{fpath}.provider_rules");
        if field.kind != FieldKind::Email {
            self.fail(
                path,
                format!("{} fields take no provider_rules", field.kind.name()),
            );
        } else if !field.identifying {
            self.fail(
                path,
                format!(
                    "{:?} is not in the campaign's one_entry_per: provider rules only decide who is the same person",
                    field.name
                ),
            );
        }
    }

    /// The notice: every part present, the link an https URL.
    fn notice(
        &mut self,
        path: &str,
        raw: RawNotice,
        purposes: Vec<(&'static str, String)>,
    ) -> Notice {
        for (name, value) in [
            ("controller", &raw.controller),
            ("contact", &raw.contact),
            ("purpose", &raw.purpose),
        ] {
            if value.trim().is_empty() {
                self.fail(
                    format!("{path}.notice.{name}"),
                    "the notice must say it (GDPR Art. 13(1))",
                );
            }
        }
        let link_ok = raw.link.strip_prefix("https://").is_some_and(|rest| {
            !rest.is_empty() && !rest.contains(char::is_whitespace) && !rest.starts_with('/')
        });
        if !link_ok {
            self.fail(
                format!("{path}.notice.link"),
                format!("{:?} must be an https:// link to the full notice", raw.link),
            );
        }
        Notice {
            controller: raw.controller,
            contact: raw.contact,
            purpose: raw.purpose,
            link: raw.link,
            purposes,
        }
    }

    /// `draw`: winners and scope; a global draw's excluded regions are the policy's own.
    fn draw(&mut self, path: &str, raw: RawDraw) -> Option<Draw> {
        if !(1..=MAX_WINNERS).contains(&raw.winners) {
            self.fail(
                format!("{path}.draw.winners"),
                format!("{} is outside 1..={MAX_WINNERS}", raw.winners),
            );
        }
        let scope = match raw.scope.as_str() {
            "per_region" if raw.excluded_regions.is_empty() => DrawScope::PerRegion,
            "per_region" => {
                self.fail(
                    format!("{path}.draw.excluded_regions"),
                    "only a global draw excludes regions; a per-region draw keeps every region's entries in it",
                );
                return None;
            }
            "global" => DrawScope::Global {
                excluded: raw.excluded_regions,
            },
            other => {
                self.fail(
                    format!("{path}.draw.scope"),
                    format!("{other:?} must be \"per_region\" or \"global\""),
                );
                return None;
            }
        };
        Some(Draw {
            winners: raw.winners,
            scope,
        })
    }

    /// `{locale: text}` for a translated name: known locales other than English, text values.
    fn translations(&mut self, path: &str, raw: serde_json::Value) -> Vec<(&'static str, String)> {
        use serde_json::Value;
        let mut out = Vec::new();
        let entries = match raw {
            Value::Null => return out,
            Value::Object(entries) => entries,
            _ => {
                self.fail(path, "must be an object of locale: text");
                return out;
            }
        };
        for (locale, text) in entries {
            match (LOCALES[1..].iter().find(|l| **l == locale), text) {
                (Some(known), Value::String(text)) => out.push((*known, text)),
                (Some(_), _) => self.fail(format!("{path}.{locale}"), "must be text"),
                (None, _) => self.fail(
                    format!("{path}.{locale}"),
                    format!("unknown locale; one of {}", LOCALES[1..].join(", ")),
                ),
            }
        }
        out
    }

    /// Each name a required field of the campaign, once, of a type that can tell people apart.
    /// A field declared but refused (`declared`, not in `fields`) has its own error already.
    fn one_entry_per(
        &mut self,
        path: &str,
        names: &[String],
        declared: &[String],
        fields: &[Field],
    ) {
        for (k, name) in names.iter().enumerate() {
            let npath = format!("{path}.one_entry_per[{k}]");
            if names[..k].contains(name) {
                self.fail(npath, format!("{name:?} is listed twice"));
                continue;
            }
            match fields.iter().find(|f| &f.name == name) {
                None if declared.contains(name) => {}
                None => self.fail(npath, format!("{name:?} is not a field of this campaign")),
                Some(f) if f.kind == FieldKind::Bool => self.fail(
                    npath,
                    format!("{name:?} is a bool field, which cannot tell people apart"),
                ),
                Some(f) if !f.required => self.fail(
                    npath,
                    format!(
                        "{name:?} must be a required field: an entry without it could not be told apart"
                    ),
                ),
                Some(_) => {}
            }
        }
    }

    fn challenge(&mut self, path: &str, raw: Option<RawChallenge>) -> ChallengeRule {
        let Some(raw) = raw else {
            return DEFAULT_CHALLENGE;
        };
        let bits = u8::try_from(raw.difficulty_bits)
            .ok()
            .filter(|bits| (1..=MAX_DIFFICULTY_BITS).contains(bits));
        if bits.is_none() {
            self.fail(
                format!("{path}.challenge.difficulty_bits"),
                format!(
                    "{} is outside 1..={MAX_DIFFICULTY_BITS}",
                    raw.difficulty_bits
                ),
            );
        }
        if !(MIN_CHALLENGE_VALID_MS..=MAX_CHALLENGE_VALID_MS).contains(&raw.valid_ms) {
            self.fail(
                format!("{path}.challenge.valid_ms"),
                format!(
                    "{} is outside {MIN_CHALLENGE_VALID_MS}..={MAX_CHALLENGE_VALID_MS} ms",
                    raw.valid_ms
                ),
            );
        }
        ChallengeRule {
            difficulty_bits: bits.unwrap_or(DEFAULT_CHALLENGE.difficulty_bits),
            valid_ms: raw.valid_ms,
        }
    }

    /// `texts`: `{locale: {"title", "intro", "labels": {field: label}, "notice": {"purpose"}}}`,
    /// each part optional; the notice's purposes come back apart.
    #[allow(clippy::type_complexity)]
    fn texts(
        &mut self,
        path: &str,
        raw: serde_json::Value,
        field_names: &[String],
    ) -> (
        Vec<(&'static str, CampaignTexts)>,
        Vec<(&'static str, String)>,
    ) {
        use serde_json::Value;
        let mut texts = Vec::new();
        let mut purposes = Vec::new();
        let locales = match raw {
            Value::Null => return (texts, purposes),
            Value::Object(locales) => locales,
            _ => {
                self.fail(
                    format!("{path}.texts"),
                    "must be an object of locale: texts",
                );
                return (texts, purposes);
            }
        };
        for (locale, t) in locales {
            let tpath = format!("{path}.texts.{locale}");
            let Some(known) = LOCALES[1..].iter().find(|l| **l == locale) else {
                let why = if locale == LOCALES[0] {
                    "English is the campaign's own title, intro and labels".to_owned()
                } else {
                    format!("unknown locale; one of {}", LOCALES[1..].join(", "))
                };
                self.fail(tpath, why);
                continue;
            };
            let Value::Object(parts) = t else {
                self.fail(tpath, "must be an object with title, intro and labels");
                continue;
            };
            let mut one = CampaignTexts::default();
            for (key, value) in parts {
                match (key.as_str(), value) {
                    ("title", Value::String(text)) => one.title = Some(text),
                    ("intro", Value::String(text)) => one.intro = Some(text),
                    ("labels", Value::Object(labels)) => {
                        for (name, label) in labels {
                            let lpath = format!("{tpath}.labels.{name}");
                            match label {
                                _ if !field_names.contains(&name) => {
                                    self.fail(lpath, "no such field")
                                }
                                Value::String(label) => one.labels.push((name, label)),
                                _ => self.fail(lpath, "a label is text"),
                            }
                        }
                    }
                    ("notice", Value::Object(notice)) => {
                        for (part, value) in notice {
                            match (part.as_str(), value) {
                                ("purpose", Value::String(text)) => purposes.push((*known, text)),
                                _ => self.fail(
                                    format!("{tpath}.notice.{part}"),
                                    "the notice's translated part is its purpose, as text",
                                ),
                            }
                        }
                    }
                    ("title" | "intro", _) => self.fail(format!("{tpath}.{key}"), "must be text"),
                    ("labels", _) => self.fail(
                        format!("{tpath}.labels"),
                        "must be an object of field: label",
                    ),
                    _ => self.fail(
                        format!("{tpath}.{key}"),
                        "unknown key: title, intro, labels or notice",
                    ),
                }
            }
            texts.push((*known, one));
        }
        (texts, purposes)
    }

    fn field(&mut self, path: &str, f: RawField) -> Option<Field> {
        if !is_plain_id(&f.name) {
            self.fail(
                format!("{path}.name"),
                format!("field name {:?} must be 1-64 of a-z 0-9 - _", f.name),
            );
        }
        if RESERVED_MEMBERS.contains(&f.name.as_str()) {
            self.fail(
                format!("{path}.name"),
                format!(
                    "{:?} is a member every submission carries for itself ({}); name the field otherwise",
                    f.name,
                    RESERVED_MEMBERS.join(", ")
                ),
            );
        }
        let kind = match FieldKind::parse(&f.kind) {
            Ok(kind) => kind,
            Err(why) => {
                self.fail(format!("{path}.type"), format!("unknown field type: {why}"));
                return None;
            }
        };
        // Each option only where the type's spec takes it.
        let spec = kind.spec();
        match (spec.options, &f.values) {
            (Options::Listed, Some(values)) if !values.is_empty() => {}
            (Options::Listed, _) => self.fail(
                format!("{path}.values"),
                format!("{} fields need a non-empty list of values", kind.name()),
            ),
            (_, Some(_)) => self.fail(
                format!("{path}.values"),
                format!("{} fields take no values", kind.name()),
            ),
            (_, None) => {}
        }
        if (f.min.is_some() || f.max.is_some()) && !spec.range {
            self.fail(path, format!("{} fields take no min/max", kind.name()));
        }
        if let (Some(min), Some(max)) = (f.min, f.max) {
            if min > max {
                self.fail(path, format!("min {min} is above max {max}"));
            }
        }
        if f.must_be_true && !spec.consent {
            self.fail(
                format!("{path}.must_be_true"),
                format!("{} fields cannot be required to be true", kind.name()),
            );
        }
        let marketing_consent = match f.consent.as_deref() {
            None => false,
            Some("marketing") if kind != FieldKind::Bool => {
                self.fail(
                    format!("{path}.consent"),
                    "a marketing consent is a bool field (a box to tick)",
                );
                false
            }
            Some("marketing") => {
                if f.required || f.must_be_true {
                    self.fail(
                        format!("{path}.consent"),
                        "a marketing consent can never be required: agreeing to be contacted must be freely given, so entering cannot depend on it (GDPR Art. 7(4)); remove \"required\" and \"must_be_true\"",
                    );
                }
                true
            }
            Some(other) => {
                self.fail(
                    format!("{path}.consent"),
                    format!("{other:?} is not a kind of consent; the one kind is \"marketing\""),
                );
                false
            }
        };
        if f.residency_signal && !spec.residency_signal {
            self.fail(
                format!("{path}.residency_signal"),
                format!("{} fields cannot be a residency signal", kind.name()),
            );
        }
        let max_length = f.max_length.unwrap_or(DEFAULT_MAX_LENGTH);
        if max_length == 0 || max_length > MAX_FIELD_LENGTH {
            self.fail(
                format!("{path}.max_length"),
                format!("{max_length} is outside 1..={MAX_FIELD_LENGTH}"),
            );
        }
        Some(Field {
            name: f.name,
            label: f.label,
            kind,
            required: f.required,
            max_length,
            values: f.values.unwrap_or_default(),
            min: f.min,
            max: f.max,
            must_be_true: f.must_be_true,
            residency_signal: f.residency_signal,
            marketing_consent,
            // Set with the campaign's `one_entry_per` (`fields`).
            identifying: false,
            provider_rules: f.provider_rules,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shipped_json() -> serde_json::Value {
        serde_json::from_str(SHIPPED_POLICY).unwrap()
    }

    fn problems(edit: impl FnOnce(&mut serde_json::Value)) -> Vec<String> {
        let mut policy = shipped_json();
        edit(&mut policy);
        match Policy::parse(&policy.to_string()) {
            Ok(_) => Vec::new(),
            Err(e) => e.0.iter().map(ToString::to_string).collect(),
        }
    }

    #[test]
    fn only_a_stricter_conflict_rule_warns_and_the_warning_names_the_move() {
        assert_eq!(Policy::shipped().unwrap().warnings(), Vec::<String>::new());
        let mut stricter = shipped_json();
        stricter["on_conflict"] = "stricter".into();
        let warnings = Policy::parse(&stricter.to_string()).unwrap().warnings();
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(
            warnings[0].contains("declares a country of `cn` is stored in `cn`"),
            "{}",
            warnings[0]
        );
        assert!(
            warnings[0].contains("once the visitor confirms it"),
            "{}",
            warnings[0]
        );
    }

    #[test]
    fn the_shipped_policy_is_valid() {
        let policy = Policy::shipped().unwrap();
        let ids: Vec<_> = policy.regions.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(ids, ["cn", "ru", "eu", "au", "global"]);
        assert_eq!(policy.region(policy.rest_of_world).id, "global");
        assert_eq!(policy.signals.unknown, SignalAction::Refuse);
        assert_eq!(policy.signals.tor, SignalAction::Refuse);
        assert_eq!(policy.signals.missing, SignalAction::Refuse);
        let eu = &policy.regions[policy.region_index("eu").unwrap().get()];
        assert_eq!(eu.countries.len(), 37, "EU 27 + EEA 3 + 7 territories");
        for territory in ["RE", "GP", "MQ", "GF", "YT", "MF", "AX"] {
            let country = Country::parse(territory).unwrap();
            assert_eq!(
                policy.region(policy.region_of(country)).id,
                "eu",
                "{territory}"
            );
        }
        let kosovo = Country::parse("XK").unwrap();
        let global = &policy.regions[policy.rest_of_world.get()];
        assert!(
            global.countries.contains(&kosovo),
            "XK is listed, not left over"
        );
        assert_eq!(policy.on_conflict, OnConflict::Refuse);
        let campaign = policy.campaign("spring-launch").unwrap();
        let names: Vec<_> = campaign.fields.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names, ["name", "email", "country", "consent", "marketing"]);
        assert!(campaign.field("consent").unwrap().must_be_true);
        // Entering does not depend on agreeing to marketing.
        let marketing = campaign.field("marketing").unwrap();
        assert!(marketing.marketing_consent && !marketing.required && !marketing.must_be_true);
        assert_eq!(campaign.retention_days, 90);
        assert!(campaign.delete_after_ms() > campaign.ends_ms);
        assert!(policy
            .regions
            .iter()
            .all(|r| r.names.len() == LOCALES.len() - 1));
        assert_eq!(campaign.one_entry_per, ["email"]);
        assert_eq!(campaign.challenge, DEFAULT_CHALLENGE);
        for locale in &LOCALES[1..] {
            let texts = campaign.texts(locale).unwrap();
            assert!(texts.title.is_some() && texts.intro.is_some(), "{locale}");
            assert_eq!(texts.labels.len(), campaign.fields.len(), "{locale}");
        }
    }

    #[test]
    fn every_country_maps_to_exactly_one_region() {
        let policy = Policy::shipped().unwrap();
        for country in Country::all() {
            let region = policy.region_of(country);
            let listed: Vec<_> = policy
                .regions
                .iter()
                .filter(|r| r.countries.contains(&country))
                .collect();
            assert!(listed.len() <= 1, "{country} listed twice");
            match listed.first() {
                Some(r) => assert_eq!(policy.region(region).id, r.id),
                None => assert_eq!(region, policy.rest_of_world),
            }
        }
    }

    #[test]
    fn one_entry_per_marks_its_fields_and_provider_rules_are_off_unless_set() {
        let policy = Policy::shipped().unwrap();
        let field = |policy: &Policy, name: &str| policy.campaigns[0].field(name).cloned().unwrap();
        assert!(field(&policy, "email").identifying);
        assert!(!field(&policy, "name").identifying);
        assert!(!field(&policy, "email").provider_rules);
        let mut raw = shipped_json();
        raw["campaigns"][0]["fields"][1]["provider_rules"] = true.into();
        let policy = Policy::parse(&raw.to_string()).unwrap();
        assert!(field(&policy, "email").provider_rules);
    }

    #[test]
    fn bad_policies_name_the_bad_entry() {
        type Edit = Box<dyn FnOnce(&mut serde_json::Value)>;
        let table: Vec<(&str, Edit, &str)> = vec![
            ("unknown rest-of-world region", Box::new(|p| p["rest_of_world"] = "mars".into()), "rest_of_world: unknown region \"mars\""),
            ("signal to unknown region", Box::new(|p| p["signals"]["tor"] = "region:mars".into()), "signals.tor: unknown region in \"region:mars\""),
            ("bad signal action", Box::new(|p| p["signals"]["missing"] = "allow".into()), "signals.missing: \"allow\" must be \"refuse\" or \"region:<id>\""),
            ("bad conflict rule", Box::new(|p| p["on_conflict"] = "declared".into()), "on_conflict: \"declared\" must be \"refuse\", \"platform\" or \"stricter\""),
            ("country in two regions", Box::new(|p| p["regions"][3]["countries"] = serde_json::json!(["AU", "IT"])), "regions[3].countries[1]: country IT is in two regions (also at regions[2].countries[14])"),
            ("not a country", Box::new(|p| p["regions"][0]["countries"] = serde_json::json!(["CN", "XX"])), "regions[0].countries[1]: \"XX\" is not a country code (ISO 3166-1 alpha-2 or XK, upper case)"),
            ("lower-case country", Box::new(|p| p["regions"][1]["countries"] = serde_json::json!(["ru"])), "regions[1].countries[0]: \"ru\" is not a country code (ISO 3166-1 alpha-2 or XK, upper case)"),
            ("duplicate region", Box::new(|p| p["regions"][1]["id"] = "cn".into()), "regions[1].id: duplicate region \"cn\""),
            ("tied strictness", Box::new(|p| p["regions"][1]["strictness"] = 40.into()), "regions[1].strictness: strictness 40 is also region \"cn\"'s; ranks must differ so conflicts have one answer"),
            ("zero limit", Box::new(|p| p["campaigns"][0]["limits"]["per_client"]["burst"] = 0.into()), "campaigns[0].limits.per_client.burst: limit must be at least 1"),
            ("zero window", Box::new(|p| p["regions"][2]["budget"]["window_ms"] = 0.into()), "regions[2].budget.window_ms: window must be at least 1 ms"),
            ("unknown field type", Box::new(|p| p["campaigns"][0]["fields"][1]["type"] = "emial".into()), "campaigns[0].fields[1].type: unknown field type: unknown variant `emial`, expected one of `string`, `email`, `enum`, `bool`, `integer`, `country`"),
            ("enum without values", Box::new(|p| p["campaigns"][0]["fields"][0]["type"] = "enum".into()), "campaigns[0].fields[0].values: enum fields need a non-empty list of values"),
            ("values on a string", Box::new(|p| p["campaigns"][0]["fields"][0]["values"] = serde_json::json!(["a"])), "campaigns[0].fields[0].values: string fields take no values"),
            ("range on an email", Box::new(|p| p["campaigns"][0]["fields"][1]["min"] = 1.into()), "campaigns[0].fields[1]: email fields take no min/max"),
            ("consent on a string", Box::new(|p| p["campaigns"][0]["fields"][0]["must_be_true"] = true.into()), "campaigns[0].fields[0].must_be_true: string fields cannot be required to be true"),
            ("signal on a string", Box::new(|p| {
                p["campaigns"][0]["fields"][0]["residency_signal"] = true.into();
                p["campaigns"][0]["fields"][2]["residency_signal"] = false.into();
            }), "campaigns[0].fields[0].residency_signal: string fields cannot be a residency signal"),
            ("honeypot shadows a field", Box::new(|p| p["campaigns"][0]["honeypot"] = "email".into()), "campaigns[0].honeypot: \"email\" must be a plain name that is not a real field"),
            ("autofilled honeypot", Box::new(|p| p["campaigns"][0]["honeypot"] = "website".into()), "campaigns[0].honeypot: \"website\" names what browsers and password managers fill in by themselves (\"website\"): an autofilled honeypot turns a real entry into a decoy; choose a name no form asks for, such as \"remarks\""),
            // (fields[3], not the email field the campaign's one_entry_per names)
            ("duplicate field", Box::new(|p| {
                p["campaigns"][0]["fields"][3]["name"] = "name".into();
                p["campaigns"][0]["texts"] = serde_json::json!({});
            }), "campaigns[0].fields[3].name: duplicate field \"name\""),
            ("the old minimum fill time", Box::new(|p| p["campaigns"][0]["min_fill_ms"] = 1500.into()), "campaigns[0].min_fill_ms: the minimum fill time is gone (it dropped real entries: autofill, a tab left open); every submission now carries a proof of work instead, set by \"challenge\": {\"difficulty_bits\", \"valid_ms\"}; remove this key"),
            ("no work", Box::new(|p| p["campaigns"][0]["challenge"]["difficulty_bits"] = 0.into()), "campaigns[0].challenge.difficulty_bits: 0 is outside 1..=32"),
            ("absurd work", Box::new(|p| p["campaigns"][0]["challenge"]["difficulty_bits"] = 300.into()), "campaigns[0].challenge.difficulty_bits: 300 is outside 1..=32"),
            ("challenge good for a week", Box::new(|p| p["campaigns"][0]["challenge"]["valid_ms"] = 604_800_000u64.into()), "campaigns[0].challenge.valid_ms: 604800000 is outside 60000..=86400000 ms"),
            ("unknown locale", Box::new(|p| p["campaigns"][0]["texts"]["pt"] = serde_json::json!({"title": "x"})), "campaigns[0].texts.pt: unknown locale; one of zh-CN, ru, it, de, fr"),
            ("English texts", Box::new(|p| p["campaigns"][0]["texts"]["en"] = serde_json::json!({"title": "x"})), "campaigns[0].texts.en: English is the campaign's own title, intro and labels"),
            ("typo in texts", Box::new(|p| p["campaigns"][0]["texts"]["de"]["titel"] = "x".into()), "campaigns[0].texts.de.titel: unknown key: title, intro, labels or notice"),
            ("label of no field", Box::new(|p| p["campaigns"][0]["texts"]["de"]["labels"]["phone"] = "Telefon".into()), "campaigns[0].texts.de.labels.phone: no such field"),
            ("path in CORS origin", Box::new(|p| p["campaigns"][0]["allowed_origins"] = serde_json::json!(["https://a.example/page"])), "campaigns[0].allowed_origins[0]: \"https://a.example/page\" must be a scheme://host[:port] origin without a path"),
            ("a developer's page in the policy", Box::new(|p| p["campaigns"][0]["allowed_origins"] = serde_json::json!(["http://localhost:8787"])), "campaigns[0].allowed_origins[0]: \"http://localhost:8787\" is plain http: a campaign page is served over https; a page on a developer's machine belongs in the local environment's HARBOUR_PAGE_ORIGINS, never in the policy every environment ships"),
            ("tiny body cap", Box::new(|p| p["max_body_bytes"] = 10.into()), "max_body_bytes: 10 is outside 256..=1048576 bytes"),
            ("zero max length", Box::new(|p| p["campaigns"][0]["fields"][0]["max_length"] = 0.into()), "campaigns[0].fields[0].max_length: 0 is outside 1..=10000"),
            ("one entry per unknown field", Box::new(|p| p["campaigns"][0]["one_entry_per"] = serde_json::json!(["emial"])), "campaigns[0].one_entry_per[0]: \"emial\" is not a field of this campaign"),
            ("one entry per a field twice", Box::new(|p| p["campaigns"][0]["one_entry_per"] = serde_json::json!(["email", "email"])), "campaigns[0].one_entry_per[1]: \"email\" is listed twice"),
            ("provider rules on a text", Box::new(|p| p["campaigns"][0]["fields"][0]["provider_rules"] = true.into()), "campaigns[0].fields[0].provider_rules: string fields take no provider_rules"),
            ("provider rules on an address that identifies no one", Box::new(|p| {
                p["campaigns"][0]["fields"][1]["provider_rules"] = true.into();
                p["campaigns"][0]["one_entry_per"] = serde_json::json!([]);
            }), "campaigns[0].fields[1].provider_rules: \"email\" is not in the campaign's one_entry_per: provider rules only decide who is the same person"),
            ("one entry per a bool", Box::new(|p| p["campaigns"][0]["one_entry_per"] = serde_json::json!(["consent"])), "campaigns[0].one_entry_per[0]: \"consent\" is a bool field, which cannot tell people apart"),
            ("one entry per an optional field", Box::new(|p| {
                p["campaigns"][0]["fields"][0]["required"] = false.into();
                p["campaigns"][0]["one_entry_per"] = serde_json::json!(["email", "name"]);
            }), "campaigns[0].one_entry_per[1]: \"name\" must be a required field: an entry without it could not be told apart"),
        ];
        for (what, edit, expected) in table {
            let found = problems(edit);
            assert_eq!(found, vec![expected.to_owned()], "{what}");
        }
    }

    fn with_windows(windows: serde_json::Value) -> Result<Policy, PolicyError> {
        let mut policy = shipped_json();
        policy["campaigns"][0]["surge_windows"] = windows;
        Policy::parse(&policy.to_string())
    }

    #[test]
    fn surge_windows_hold_from_their_start_to_just_before_their_end() {
        let policy = with_windows(serde_json::json!([
            // Listed out of order, and touching: one ends where the next starts.
            {"id": "late-news", "start": "2026-03-14T21:00:00Z", "end": "2026-03-14T21:05:00.5Z",
             "per_client": {"burst": 8, "window_ms": 10000}},
            {"id": "tv-spot", "start": "2026-03-14T20:15:00Z", "end": "2026-03-14T21:00:00Z",
             "per_client": {"burst": 20, "window_ms": 60000}, "on_location_unavailable": "fail_closed"}
        ]))
        .unwrap();
        let campaign = &policy.campaigns[0];
        let start = crate::utc::parse_ms("2026-03-14T20:15:00Z").unwrap();
        let touch = crate::utc::parse_ms("2026-03-14T21:00:00Z").unwrap();
        let end = crate::utc::parse_ms("2026-03-14T21:05:00.5Z").unwrap();
        let window = |ms| campaign.in_force(ms).window.map(|(_, w)| w.id.as_str());
        let burst = |ms| campaign.in_force(ms).per_client.burst();
        assert_eq!((window(start - 1), burst(start - 1)), (None, 5));
        assert_eq!((window(start), burst(start)), (Some("tv-spot"), 20));
        assert_eq!(window(start + 1), Some("tv-spot"));
        assert_eq!(window(touch - 1), Some("tv-spot"));
        assert_eq!((window(touch), burst(touch)), (Some("late-news"), 8));
        assert_eq!(window(end - 1), Some("late-news"));
        assert_eq!((window(end), burst(end)), (None, 5));
        assert_eq!(window(end + 1), None);
        // Each window's own admission mode; outside, the campaign's (default fail_open).
        assert_eq!(
            campaign.in_force(start).on_location_unavailable,
            FailMode::Closed
        );
        assert_eq!(
            campaign.in_force(touch).on_location_unavailable,
            FailMode::Open
        );
        assert_eq!(
            campaign.in_force(end).on_location_unavailable,
            FailMode::Open
        );
        // Sorted by start: the position is stable for keying state.
        assert_eq!(campaign.in_force(start).window.map(|(i, _)| i), Some(0));
    }

    #[test]
    fn a_window_without_a_mode_takes_the_campaigns() {
        let mut policy = shipped_json();
        policy["campaigns"][0]["limits"]["on_location_unavailable"] = "fail_closed".into();
        policy["campaigns"][0]["surge_windows"] = serde_json::json!([
            {"id": "w", "start": "2026-01-01T00:00:00Z", "end": "2026-01-01T00:05:00Z",
             "per_client": {"burst": 9, "window_ms": 60000}}
        ]);
        let policy = Policy::parse(&policy.to_string()).unwrap();
        let campaign = &policy.campaigns[0];
        assert_eq!(campaign.on_location_unavailable, FailMode::Closed);
        assert_eq!(
            campaign.surge_windows[0].on_location_unavailable,
            FailMode::Closed
        );
    }

    #[test]
    fn bad_surge_windows_and_inexpressible_limits_name_the_entry() {
        let window = |id: &str, start: &str, end: &str, window_ms: u64| {
            serde_json::json!({"id": id, "start": start, "end": end,
                               "per_client": {"burst": 10, "window_ms": window_ms}})
        };
        let table: Vec<(&str, serde_json::Value, &str)> = vec![
            (
                "overlap",
                serde_json::json!([
                    window("a", "2026-03-14T20:00:00Z", "2026-03-14T20:10:00Z", 60000),
                    window("b", "2026-03-14T20:09:59.999Z", "2026-03-14T20:20:00Z", 60000),
                ]),
                "campaigns[0].surge_windows[1]: window \"b\" overlaps window \"a\" (campaigns[0].surge_windows[0]); windows may touch but not overlap",
            ),
            (
                "end before start",
                serde_json::json!([window("a", "2026-03-14T20:10:00Z", "2026-03-14T20:00:00Z", 60000)]),
                "campaigns[0].surge_windows[0].end: \"2026-03-14T20:00:00Z\" is not after start \"2026-03-14T20:10:00Z\"",
            ),
            (
                "empty window",
                serde_json::json!([window("a", "2026-03-14T20:00:00Z", "2026-03-14T20:00:00Z", 60000)]),
                "campaigns[0].surge_windows[0].end: \"2026-03-14T20:00:00Z\" is not after start \"2026-03-14T20:00:00Z\"",
            ),
            (
                "local time",
                serde_json::json!([window("a", "2026-03-14T21:00:00+01:00", "2026-03-14T21:10:00Z", 60000)]),
                "campaigns[0].surge_windows[0].start: \"2026-03-14T21:00:00+01:00\" is not a UTC time: must end in Z (UTC); offsets are not taken",
            ),
            (
                "no such day",
                serde_json::json!([window("a", "2026-02-30T20:00:00Z", "2026-03-14T21:10:00Z", 60000)]),
                "campaigns[0].surge_windows[0].start: \"2026-02-30T20:00:00Z\" is not a UTC time: no such day in that month",
            ),
            (
                "window work out of range",
                serde_json::json!([{"id": "a", "start": "2026-03-14T20:00:00Z", "end": "2026-03-14T20:10:00Z",
                                    "per_client": {"burst": 10, "window_ms": 60000}, "difficulty_bits": 40}]),
                "campaigns[0].surge_windows[0].difficulty_bits: 40 is outside 1..=32",
            ),
            (
                "window limit the binding cannot count",
                serde_json::json!([window("a", "2026-03-14T20:00:00Z", "2026-03-14T20:10:00Z", 30000)]),
                "campaigns[0].surge_windows[0].per_client.window_ms: 30000 ms cannot be counted per location: the rate-limiting binding counts over 10 s or 60 s (window_ms 10000 or 60000)",
            ),
            (
                "duplicate id",
                serde_json::json!([
                    window("a", "2026-03-14T20:00:00Z", "2026-03-14T20:10:00Z", 60000),
                    window("a", "2026-03-15T20:00:00Z", "2026-03-15T20:10:00Z", 60000),
                ]),
                "campaigns[0].surge_windows[1].id: duplicate window \"a\"",
            ),
            (
                "bad id",
                serde_json::json!([window("TV spot", "2026-03-14T20:00:00Z", "2026-03-14T20:10:00Z", 60000)]),
                "campaigns[0].surge_windows[0].id: window id \"TV spot\" must be 1-64 of a-z 0-9 - _",
            ),
        ];
        for (what, windows, expected) in table {
            let mut policy = shipped_json();
            policy["campaigns"][0]["surge_windows"] = windows;
            let found: Vec<String> = match Policy::parse(&policy.to_string()) {
                Ok(_) => Vec::new(),
                Err(e) => e.0.iter().map(ToString::to_string).collect(),
            };
            assert_eq!(found, vec![expected.to_owned()], "{what}");
        }
        assert_eq!(
            problems(|p| p["campaigns"][0]["limits"]["per_client"]["window_ms"] = 1000.into()),
            ["campaigns[0].limits.per_client.window_ms: 1000 ms cannot be counted per location: the rate-limiting binding counts over 10 s or 60 s (window_ms 10000 or 60000)"]
        );
        assert_eq!(
            problems(|p| p["campaigns"][0]["limits"]["on_location_unavailable"] = "fail_shut".into()),
            ["campaigns[0].limits.on_location_unavailable: \"fail_shut\" must be \"fail_open\" or \"fail_closed\""]
        );
        assert_eq!(
            problems(|p| {
                p["campaigns"][0]["surge_windows"] = serde_json::json!((0..=MAX_SURGE_WINDOWS)
                    .map(|i| {
                        let day = i % 28 + 1;
                        let month = i / 28 + 1;
                        window(
                            &format!("w{i}"),
                            &format!("2026-{month:02}-{day:02}T00:00:00Z"),
                            &format!("2026-{month:02}-{day:02}T01:00:00Z"),
                            60000,
                        )
                    })
                    .collect::<Vec<_>>())
            }),
            ["campaigns[0].surge_windows: 101 windows; at most 100"]
        );
        // A campaign budget is the isolate's alone: any window is fine.
        assert!(
            problems(|p| p["campaigns"][0]["limits"]["campaign"]["window_ms"] = 1000.into())
                .is_empty()
        );
    }

    #[test]
    fn the_conflict_rule_defaults_to_refuse_and_parses_each_name() {
        let mut json = shipped_json();
        json.as_object_mut().unwrap().remove("on_conflict");
        let policy = Policy::parse(&json.to_string()).unwrap();
        assert_eq!(policy.on_conflict, OnConflict::Refuse);
        for rule in OnConflict::ALL {
            json["on_conflict"] = rule.as_str().into();
            assert_eq!(Policy::parse(&json.to_string()).unwrap().on_conflict, rule);
        }
    }

    #[test]
    fn the_live_and_candidate_policies_are_checked_alike() {
        assert_eq!(
            check_policies(LIVE_FILE, SHIPPED_POLICY, committed_candidate().as_deref()),
            Ok(())
        );
        let mut bad = shipped_json();
        bad["rest_of_world"] = "mars".into();
        let bad = bad.to_string();
        let found: Vec<String> = check_policies(LIVE_FILE, &bad, Some(&bad))
            .unwrap_err()
            .0
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            found,
            [
                "policy/harbour.json: rest_of_world: unknown region \"mars\"",
                "policy/candidate.json: rest_of_world: unknown region \"mars\""
            ]
        );
    }

    #[test]
    fn a_region_may_name_its_ingress_and_each_problem_names_the_entry() {
        let ingress =
            |host: &str, kept: &str| serde_json::json!({"host": host, "kept_in_region_by": kept});
        let mut raw = shipped_json();
        raw["regions"][0]["ingress"] = ingress("cn.campaign.example", "china_network");
        raw["regions"][2]["ingress"] = ingress("eu.campaign.example", "regional_services");
        let policy = Policy::parse(&raw.to_string()).unwrap();
        assert_eq!(
            policy.regions[0].ingress,
            Some(Ingress {
                host: "cn.campaign.example".into(),
                kept_in_region_by: KeptInRegionBy::ChinaNetwork
            })
        );
        assert_eq!(
            policy.regions[2]
                .ingress
                .as_ref()
                .map(|i| i.kept_in_region_by),
            Some(KeptInRegionBy::RegionalServices)
        );
        assert_eq!(policy.regions[1].ingress, None);
        // The shipped policy names none: its zones are placeholders, and an ingress is a promise
        // about a zone's settings.
        assert!(Policy::shipped()
            .unwrap()
            .regions
            .iter()
            .all(|r| r.ingress.is_none()));

        type Edit = Box<dyn FnOnce(&mut serde_json::Value)>;
        let table: Vec<(Edit, &str)> = vec![
            (Box::new(move |p| p["regions"][2]["ingress"] = ingress("EU.campaign.example", "regional_services")),
             "regions[2].ingress.host: \"EU.campaign.example\" is not a hostname: lower-case labels of a-z 0-9 - joined by dots (cn.campaign.example), without a scheme, port or path"),
            (Box::new(move |p| p["regions"][2]["ingress"] = ingress("https://eu.campaign.example", "regional_services")),
             "regions[2].ingress.host: \"https://eu.campaign.example\" is not a hostname: lower-case labels of a-z 0-9 - joined by dots (cn.campaign.example), without a scheme, port or path"),
            (Box::new(move |p| p["regions"][2]["ingress"] = ingress("eu.localhost", "regional_services")),
             "regions[2].ingress.host: \"eu.localhost\" is this machine; the policy names the deployed hostname (HARBOUR_INGRESS_<REGION> simulates it locally)"),
            (Box::new(move |p| p["regions"][2]["ingress"] = ingress("eu.campaign.example", "regional-services")),
             "regions[2].ingress.kept_in_region_by: \"regional-services\" must be \"regional_services\" or \"china_network\""),
            (Box::new(move |p| p["regions"][1]["ingress"] = ingress("ru.campaign.example", "china_network")),
             "regions[1].ingress.kept_in_region_by: the China Network serves from mainland China only; this region does not list CN"),
            (Box::new(move |p| {
                p["regions"][0]["ingress"] = ingress("in.campaign.example", "china_network");
                p["regions"][3]["ingress"] = ingress("in.campaign.example", "regional_services");
            }), "regions[3].ingress.host: \"in.campaign.example\" is also region \"cn\"'s ingress; each region needs a hostname of its own"),
            (Box::new(|p| p["regions"][0]["ingress"] = serde_json::json!({"host": "cn.campaign.example"})),
             "line 1 column"),
        ];
        for (edit, expected) in table {
            let found = problems(edit);
            assert_eq!(found.len(), 1, "{found:?}");
            assert!(
                found[0].starts_with(expected),
                "{found:?} is not {expected:?}"
            );
        }
    }

    #[test]
    fn all_problems_are_reported_together() {
        let found = problems(|p| {
            p["rest_of_world"] = "mars".into();
            p["campaigns"][0]["fields"][1]["type"] = "emial".into();
            p["campaigns"][0]["limits"]["campaign"]["burst"] = 0.into();
        });
        assert_eq!(found.len(), 3, "{found:?}");
    }

    #[test]
    fn typos_in_keys_and_broken_json_are_refused_with_a_position() {
        let found = problems(|p| p["campaigns"][0]["fields"][0]["requird"] = true.into());
        assert_eq!(found.len(), 1);
        assert!(found[0].contains("unknown field `requird`"), "{found:?}");
        let error = Policy::parse("{\"regions\": [").unwrap_err();
        assert!(error.0[0].path.starts_with("line 1 column"), "{error}");
    }

    #[test]
    fn a_marketing_consent_can_never_be_required() {
        let refusal = |change: &dyn Fn(&mut serde_json::Value)| {
            let mut json = shipped_json();
            change(&mut json);
            Policy::parse(&json.to_string())
                .unwrap_err()
                .0
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
        };
        let required = refusal(&|p| p["campaigns"][0]["fields"][4]["required"] = true.into());
        assert_eq!(required.len(), 1, "{required:?}");
        assert!(
            required[0].starts_with(
                "campaigns[0].fields[4].consent: a marketing consent can never be required"
            ) && required[0].contains("GDPR Art. 7(4)"),
            "{required:?}"
        );
        let forced = refusal(&|p| p["campaigns"][0]["fields"][4]["must_be_true"] = true.into());
        assert!(forced[0].contains("can never be required"), "{forced:?}");
        let on_text = refusal(&|p| p["campaigns"][0]["fields"][0]["consent"] = "marketing".into());
        assert_eq!(
            on_text,
            ["campaigns[0].fields[0].consent: a marketing consent is a bool field (a box to tick)"]
        );
    }

    #[test]
    fn notice_retention_and_draw_are_checked_by_entry() {
        let refusals = |change: &dyn Fn(&mut serde_json::Value)| {
            let mut json = shipped_json();
            change(&mut json);
            let issues = Policy::parse(&json.to_string()).unwrap_err().0;
            issues.into_iter().map(|i| i.path).collect::<Vec<_>>()
        };
        let c = "campaigns[0]";
        assert_eq!(
            refusals(&|p| p["campaigns"][0]["notice"]["link"] = "http://x.example".into()),
            [format!("{c}.notice.link")]
        );
        assert_eq!(
            refusals(&|p| p["campaigns"][0]["notice"]["controller"] = " ".into()),
            [format!("{c}.notice.controller")]
        );
        assert_eq!(
            refusals(&|p| p["campaigns"][0]["retention"]["days_after_end"] = 0.into()),
            [format!("{c}.retention.days_after_end")]
        );
        assert_eq!(
            refusals(&|p| p["campaigns"][0]["ends"] = "next summer".into()),
            [format!("{c}.ends")]
        );
        assert_eq!(
            refusals(&|p| {
                p["campaigns"][0]["draw"] = serde_json::json!({"winners": 3, "scope": "global", "excluded_regions": ["mars"]})
            }),
            [format!("{c}.draw.excluded_regions[0]")]
        );
        assert_eq!(
            refusals(&|p| p["campaigns"][0]["draw"]["scope"] = "everywhere".into()),
            [format!("{c}.draw.scope")]
        );
        assert_eq!(
            refusals(&|p| p["regions"][0]["names"]["xx"] = "?".into()),
            ["regions[0].names.xx"]
        );
    }

    #[test]
    fn a_notice_version_changes_with_what_its_locale_shows_and_only_with_that() {
        let versions = |change: &dyn Fn(&mut serde_json::Value)| {
            let mut json = shipped_json();
            change(&mut json);
            let policy = Policy::parse(&json.to_string()).unwrap();
            policy.campaigns[0].notice_versions.clone()
        };
        let shipped = versions(&|_| {});
        assert_eq!(shipped.len(), LOCALES.len());
        let distinct: std::collections::BTreeSet<_> = shipped.iter().map(|(_, v)| v).collect();
        assert_eq!(
            distinct.len(),
            LOCALES.len(),
            "each locale shows other texts"
        );
        assert!(shipped.iter().all(|(_, v)| v.len() == 32));
        fn changed(
            a: &[(&'static str, String)],
            b: &[(&'static str, String)],
        ) -> Vec<&'static str> {
            a.iter()
                .zip(b)
                .filter(|(x, y)| x.1 != y.1)
                .map(|(x, _)| x.0)
                .collect()
        }
        // The German purpose changes the German version only.
        let german =
            versions(&|p| p["campaigns"][0]["texts"]["de"]["notice"]["purpose"] = "Anders.".into());
        assert_eq!(changed(&shipped, &german), ["de"]);
        // The controller, retention and the English consent label are shown in every locale
        // (English where a locale does not translate a label).
        let controller =
            versions(&|p| p["campaigns"][0]["notice"]["controller"] = "Other Ltd".into());
        assert_eq!(changed(&shipped, &controller).len(), LOCALES.len());
        let kept = versions(&|p| p["campaigns"][0]["retention"]["days_after_end"] = 30.into());
        assert_eq!(changed(&shipped, &kept).len(), LOCALES.len());
        let consent_en = versions(&|p| p["campaigns"][0]["fields"][3]["label"] = "Rules ok".into());
        assert_eq!(changed(&shipped, &consent_en), ["en"]);
        // A text the notice does not show (the title) changes no version.
        assert_eq!(
            changed(
                &shipped,
                &versions(&|p| p["campaigns"][0]["title"] = "T".into())
            )
            .len(),
            0
        );
    }

    #[test]
    fn honeypot_names_that_autofill_fills_are_named() {
        for (name, word) in [
            ("website", "website"),
            ("url", "url"),
            ("home_page", "home"),
            ("company", "company"),
            ("contact-email", "email"),
            ("fax", "fax"),
            ("billingAddress", "address"),
        ] {
            assert_eq!(autofilled(name), Some(word), "{name}");
        }
        for name in ["remarks", "comment", "hp_check", "message", "page_note"] {
            assert_eq!(autofilled(name), None, "{name}");
        }
    }
}
