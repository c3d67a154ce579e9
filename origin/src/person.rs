//! One entry per person: the keyed digest a store keeps unique per campaign.
//!
//! A campaign's `one_entry_per` names the fields that together identify a person (for example
//! `["email"]`). Their values are normalised, so variants a person would call the same value are
//! one person, and then MACed with the region's person key (`HARBOUR_PERSON_KEY_<REGION>`):
//!
//! ```text
//! hex HMAC-SHA256(person key, "harbour-person-v1\n" + JSON [campaign, name1, value1, ...])
//! ```
//!
//! Keyed, so the column is not a reversible hash (whoever reads the table cannot test a list of
//! addresses against it without the key); per region, like every other secret; with the
//! campaign in the message, so one person's digests in two campaigns cannot be linked. The key
//! is its own secret, not the signing key: the edge never holds it, and rotating the signing
//! key leaves every stored digest valid.
//!
//! A global draw needs a digest that is the same for one person in every region (see `draw`):
//! the same message under the campaign's draw key (`HARBOUR_DRAW_KEY_<CAMPAIGN>`, held by every
//! region's origins, never by the edge) with its own prefix, `harbour-draw-v1\n`, so a draw
//! digest can never be matched against a stored person digest even under one key.
//!
//! Normalisation per field type, by `harbour_policy::identity` (the edge validates with its
//! checks; this origin runs the same checks and then the fold, which needs Unicode's data the
//! worker does not carry), so every spelling of one person gives one digest:
//! - `email`: the address's identifying form: the local part case folded and NFKC, the domain
//!   in its UTS 46 ASCII form (`ＡＤＡ@Bücher.example` = `ada@xn--bcher-kva.example`); with the
//!   field's `provider_rules`, without a `+tag` (and without gmail's dots);
//! - `string`: case folded and NFKC, trimmed, runs of white space made one space;
//! - `enum`, `country`: the value as validated (already canonical);
//! - `integer`: its decimal form;
//! - `bool` cannot identify anyone and is refused by the policy check.
//!
//! A submitted value with an invisible character or that is not an address is refused (422
//! `invalid_identifying_field`, naming the field: [`PersonRules::refused_field`]), never
//! digested: UTS 46 would drop a soft hyphen silently. The edge refuses invisible characters
//! and an address's wrong shape itself; what reaches this refusal is what only the fold can
//! tell (a domain UTS 46 refuses, a character that identifies no one). A stored value
//! (`Read::Stored`, what a draw reads) is read as Unicode's NFKC_Casefold reads text, without
//! its invisible characters: an entry stored before they were refused,
//! `ada\u{AD}@example.org`, is then the same person as `ada@example.org`, and counts once; one
//! this rule refuses for another reason is read as the rule before read it, so every entry the
//! edge took has a draw digest.
//!
//! **What a row stores** for an address ([`PersonRules::store_addresses`]): the local part as
//! typed and the domain in its UTS 46 ASCII form, for every email field of the campaign. The
//! edge forwards the domain as typed (only its ASCII letters lower-cased: it has no UTS 46), so
//! the origin writes the form every mail system can route: `ａｄａX@ｅｘａｍｐｌｅ．ｏｒｇ` is
//! stored as `ａｄａX@example.org`. Replays compare the fields as received, so a retry is still
//! a replay.
//!
//! The message is still `harbour-person-v1`: the rule before this one lower-cased and trimmed,
//! and on ASCII values (and lower-case NFC ones with an ASCII domain) both rules give the same
//! form, so the digests of rows stored before stay valid and such a person still cannot enter
//! twice. A row stored before
//! whose value this rule reads otherwise (a Unicode domain, which is now its A-label; a local
//! part or name NFKC or case folding changes) keeps its old digest: that person could enter once
//! more, with any spelling, and `harbour-entries access` (which looks a person up by digest)
//! does not find it by any spelling. No migration recomputes those digests (it would read every
//! stored row's fields with the person key as the origin starts, in both stores): a documented
//! limit, see the README's Stores section. Draws compute their digests from the stored fields,
//! so they count such a person once.

use harbour_contract::response::Code;
use harbour_contract::signature::{self, SigningKey};
use harbour_policy::field::{Field, FieldKind};
use harbour_policy::identity::fold::{self, Address};
use harbour_policy::identity::without_invisible;
use harbour_policy::Policy;
use serde_json::Value;

/// How a value is read: as submitted, or as stored (what a draw reads; rows stored before this
/// rule may hold what it refuses).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Read {
    /// Invisible characters and values that identify no one are refused.
    Submitted,
    /// Invisible characters are left out (as NFKC_Casefold leaves out default ignorables), and
    /// a value this rule still refuses is read as the rule before read it (trimmed and
    /// lower-cased): an entry the edge once took always has a digest. Such a form cannot equal
    /// one this rule gives, whose domains are ASCII and texts mapped.
    Stored,
}

/// The normalised form of one identifying value: `MissingIdentifyingField` when it is absent
/// or of the wrong type, `InvalidIdentifyingField` when it cannot identify anyone.
pub fn normalise(field: &Field, value: Option<&Value>, read: Read) -> Result<String, Code> {
    let missing = Code::MissingIdentifyingField;
    let text = match (field.kind, value) {
        (FieldKind::Email | FieldKind::String, Some(Value::String(text))) => text,
        (FieldKind::Enum | FieldKind::Country, Some(Value::String(text))) => {
            return Some(text.trim().to_owned())
                .filter(|text| !text.is_empty())
                .ok_or(missing);
        }
        (FieldKind::Integer, Some(Value::Number(number))) => {
            return number
                .as_i64()
                .map(|n| n.to_string())
                .ok_or(Code::InvalidIdentifyingField);
        }
        _ => return Err(missing),
    };
    if text.trim().is_empty() {
        return Err(missing);
    }
    let folded = |text: &str| match field.kind {
        FieldKind::Email => Address::parse(text).map(|a| a.identity(field.provider_rules)),
        _ => fold::text(text),
    };
    match read {
        Read::Submitted => folded(text).ok_or(Code::InvalidIdentifyingField),
        Read::Stored => Ok(
            folded(&without_invisible(text)).unwrap_or_else(|| match field.kind {
                FieldKind::Email => text.trim().to_lowercase(),
                _ => text
                    .split_whitespace()
                    .collect::<Vec<_>>()
                    .join(" ")
                    .to_lowercase(),
            }),
        ),
    }
}

/// What identifies a person in each campaign of the policy, and how its addresses are stored.
#[derive(Clone, Debug, Default)]
pub struct PersonRules {
    /// (campaign id, the identifying fields); campaigns without a rule absent.
    campaigns: Vec<(String, Vec<Field>)>,
    /// (campaign id, its email fields' names); campaigns without one absent.
    addresses: Vec<(String, Vec<String>)>,
}

impl PersonRules {
    pub fn from_policy(policy: &Policy) -> PersonRules {
        let campaigns = policy
            .campaigns
            .iter()
            .filter(|c| !c.one_entry_per.is_empty())
            .map(|c| {
                let fields = c
                    .one_entry_per
                    .iter()
                    .filter_map(|name| c.field(name).cloned())
                    .collect();
                (c.id.clone(), fields)
            })
            .collect();
        let addresses = policy
            .campaigns
            .iter()
            .map(|c| {
                let names = c
                    .fields
                    .iter()
                    .filter(|f| f.kind == FieldKind::Email)
                    .map(|f| f.name.clone());
                (c.id.clone(), names.collect::<Vec<_>>())
            })
            .filter(|(_, names)| !names.is_empty())
            .collect();
        PersonRules {
            campaigns,
            addresses,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.campaigns.is_empty()
    }

    /// The identifying fields of `campaign`, or `None` for a campaign without a rule.
    pub fn identifying(&self, campaign: &str) -> Option<&[Field]> {
        self.campaigns
            .iter()
            .find(|(id, _)| id == campaign)
            .map(|(_, fields)| fields.as_slice())
    }

    /// The digest identifying the person behind `fields` in `campaign`: `Ok(None)` for a campaign
    /// without a rule, `Err` when an identifying field is missing or cannot identify anyone (the
    /// edge never forwards such an entry; a store must not take it as a new person).
    pub fn digest(
        &self,
        key: Option<&SigningKey>,
        campaign: &str,
        fields: &Value,
    ) -> Result<Option<String>, Code> {
        self.keyed(
            b"harbour-person-v1\n",
            key,
            campaign,
            fields,
            Read::Submitted,
        )
    }

    /// The first identifying field of `campaign` whose submitted value identifies no one: what
    /// a refusal of `digest` with `InvalidIdentifyingField` names.
    pub fn refused_field(&self, campaign: &str, fields: &Value) -> Option<&str> {
        self.identifying(campaign)?
            .iter()
            .find(|field| {
                normalise(field, fields.get(&field.name), Read::Submitted)
                    == Err(Code::InvalidIdentifyingField)
            })
            .map(|field| field.name.as_str())
    }

    /// Writes each address of `fields` in the form a row stores: the local part as typed, the
    /// domain's ASCII form (see the module's rules). An address the fold refuses (in a field
    /// that identifies no one: `digest` refuses the others) stays as the edge forwarded it.
    pub fn store_addresses(&self, campaign: &str, fields: &mut Value) {
        let Some((_, names)) = self.addresses.iter().find(|(id, _)| id == campaign) else {
            return;
        };
        for name in names {
            if let Some(value) = fields.get_mut(name) {
                if let Some(address) = value.as_str().and_then(Address::parse) {
                    *value = Value::from(address.stored());
                }
            }
        }
    }

    /// The person's digest for a global draw, under the campaign's draw key: the same in every
    /// region for the same normalised values (see the module's rules), read from stored entries.
    pub fn draw_digest(
        &self,
        draw_key: &SigningKey,
        campaign: &str,
        fields: &Value,
    ) -> Result<Option<String>, Code> {
        self.keyed(
            b"harbour-draw-v1\n",
            Some(draw_key),
            campaign,
            fields,
            Read::Stored,
        )
    }

    fn keyed(
        &self,
        prefix: &[u8],
        key: Option<&SigningKey>,
        campaign: &str,
        fields: &Value,
        read: Read,
    ) -> Result<Option<String>, Code> {
        let Some(identifying) = self.identifying(campaign) else {
            return Ok(None);
        };
        let key = key.ok_or(Code::NoPersonKey)?;
        let mut message = vec![Value::from(campaign)];
        for field in identifying {
            let value = normalise(field, fields.get(&field.name), read)?;
            message.push(Value::from(field.name.as_str()));
            message.push(Value::from(value));
        }
        let message = Value::Array(message).to_string();
        let mac = key.mac(&[prefix, message.as_bytes()]);
        Ok(Some(signature::hex(&mac)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rules() -> PersonRules {
        PersonRules::from_policy(&Policy::shipped().unwrap())
    }

    fn key(secret: &[u8]) -> SigningKey {
        SigningKey::new(secret).unwrap()
    }

    fn digest_of(rules: &PersonRules, email: &str) -> Result<Option<String>, Code> {
        let k = key(b"person-key-eu-0123456789abcdefghijkl");
        rules.digest(
            Some(&k),
            "spring-launch",
            &json!({"email": email, "name": "x"}),
        )
    }

    #[test]
    fn email_variants_are_one_person() {
        let digest = |email: &str| digest_of(&rules(), email).unwrap().unwrap();
        let first = digest("ada@example.org");
        assert_eq!(digest("  Ada@Example.ORG "), first);
        assert_eq!(digest("ADA@EXAMPLE.ORG"), first);
        assert_ne!(digest("ada2@example.org"), first);
        assert_eq!(first.len(), 64);
        assert!(!first.contains("ada"));
    }

    /// Issue 23: each of these was a new entry after `adaX@example.org` (or `josé@`,
    /// `bücher-…`); now each is the same person, or refused as no address.
    #[test]
    fn another_spelling_of_an_address_is_the_same_person_or_refused() {
        let digest = |email: &str| digest_of(&rules(), email);
        let ada = digest("adaX@example.org").unwrap();
        for same in [
            "ADAX@EXAMPLE.ORG",
            "ａｄａX@example.org",
            "adaX@ｅｘａｍｐｌｅ.ｏｒｇ",
        ] {
            assert_eq!(digest(same).unwrap(), ada, "{same}");
        }
        for invisible in [
            "ada\u{AD}X@example.org",
            "adaX\u{FE0F}@example.org",
            "ada\u{34F}X@example.org",
        ] {
            assert_eq!(
                digest(invisible),
                Err(Code::InvalidIdentifyingField),
                "{invisible:?}"
            );
        }
        assert_eq!(
            digest("jose\u{301}@example.org"),
            digest("jos\u{E9}@example.org")
        );
        assert_eq!(
            digest("ada@xn--bcher-laden-thb.example"),
            digest("ada@bücher-laden.example")
        );
        assert_eq!(digest("not an address"), Err(Code::InvalidIdentifyingField));
    }

    /// The rule before this one lower-cased and trimmed: on ASCII values both agree, so the
    /// digests of rows stored before stay what a new entry of the same person computes.
    #[test]
    fn an_ascii_address_keeps_the_digest_the_earlier_rule_gave_it() {
        // hex HMAC-SHA256(key, "harbour-person-v1\n" + ["spring-launch","email","ada@example.org"])
        let earlier = "b24dfb9d230e07038b723c32337caba2ade0fd5626f53b91ad9cb19c7be55505";
        assert_eq!(
            digest_of(&rules(), " Ada@Example.ORG").unwrap().as_deref(),
            Some(earlier)
        );
    }

    #[test]
    fn provider_rules_make_sub_addresses_one_person_only_when_the_policy_says_so() {
        let mut raw: Value = serde_json::from_str(harbour_policy::SHIPPED_POLICY).unwrap();
        raw["campaigns"][0]["fields"][1]["provider_rules"] = true.into();
        let with_rules = PersonRules::from_policy(&Policy::parse(&raw.to_string()).unwrap());
        let tagged = "a.da+spring@gmail.com";
        assert_eq!(
            digest_of(&with_rules, tagged),
            digest_of(&with_rules, "ada@googlemail.com")
        );
        assert_ne!(
            digest_of(&rules(), tagged),
            digest_of(&rules(), "ada@gmail.com")
        );
    }

    #[test]
    fn the_digest_depends_on_the_key_and_the_campaign() {
        let fields = json!({"email": "ada@example.org"});
        let (eu, cn) = (
            key(b"person-key-eu-0123456789abcdefghijkl"),
            key(b"person-key-cn-0123456789abcdefghijkl"),
        );
        let mut raw: Value = serde_json::from_str(harbour_policy::SHIPPED_POLICY).unwrap();
        let mut second = raw["campaigns"][0].clone();
        second["id"] = "autumn".into();
        raw["campaigns"].as_array_mut().unwrap().push(second);
        let rules = PersonRules::from_policy(&Policy::parse(&raw.to_string()).unwrap());
        let spring_eu = rules.digest(Some(&eu), "spring-launch", &fields).unwrap();
        let spring_cn = rules.digest(Some(&cn), "spring-launch", &fields).unwrap();
        let autumn_eu = rules.digest(Some(&eu), "autumn", &fields).unwrap();
        assert_ne!(spring_eu, spring_cn);
        assert_ne!(spring_eu, autumn_eu);
        assert_eq!(rules.digest(Some(&eu), "no-rule", &fields), Ok(None));
        assert_eq!(
            rules.digest(None, "spring-launch", &fields),
            Err(Code::NoPersonKey)
        );
        assert_eq!(
            rules.digest(Some(&eu), "spring-launch", &json!({"name": "x"})),
            Err(Code::MissingIdentifyingField)
        );
    }

    #[test]
    fn the_draw_digest_is_one_per_person_under_one_key_and_never_a_person_digest() {
        let draw = key(b"draw-key-spring-0123456789abcdefghijkl");
        let fields = |email: &str| json!({"email": email});
        let digest = |email: &str| {
            rules()
                .draw_digest(&draw, "spring-launch", &fields(email))
                .unwrap()
                .unwrap()
        };
        assert_eq!(digest(" Ada@Example.ORG"), digest("ada@example.org"));
        // Stored before invisible characters were refused: the same person, counted once.
        assert_eq!(digest("ada\u{AD}@example.org"), digest("ada@example.org"));
        assert_eq!(
            digest("ada@bücher.example"),
            digest("ada@xn--bcher-kva.example")
        );
        assert_ne!(digest("ada2@example.org"), digest("ada@example.org"));
        // The same key as a person key gives another digest: the prefixes keep them apart.
        assert_ne!(
            rules()
                .digest(Some(&draw), "spring-launch", &fields("ada@example.org"))
                .unwrap()
                .unwrap(),
            digest("ada@example.org")
        );
        assert_eq!(
            rules().identifying("spring-launch").map(<[_]>::len),
            Some(1)
        );
        assert!(rules().identifying("no-rule").is_none());
    }

    /// The edge forwards a domain as typed; the row holds its ASCII form, the local part as
    /// typed. A refused value is named.
    #[test]
    fn rows_store_addresses_with_ascii_domains_and_refusals_name_the_field() {
        let mut fields = json!({"email": " ａｄａX@ｅｘａｍｐｌｅ．ｏｒｇ ", "name": "Ada"});
        rules().store_addresses("spring-launch", &mut fields);
        assert_eq!(
            fields,
            json!({"email": "ａｄａX@example.org", "name": "Ada"})
        );
        let mut fields = json!({"email": "Ada@Bücher.example"});
        rules().store_addresses("spring-launch", &mut fields);
        assert_eq!(fields["email"], "Ada@xn--bcher-kva.example");
        // Refused by the fold (the edge let it through): kept as it came, and named.
        let refused = json!({"email": "ada@xn--zz.example"});
        let mut kept = refused.clone();
        rules().store_addresses("spring-launch", &mut kept);
        assert_eq!(kept, refused);
        assert_eq!(
            digest_of(&rules(), "ada@xn--zz.example"),
            Err(Code::InvalidIdentifyingField)
        );
        assert_eq!(
            rules().refused_field("spring-launch", &refused),
            Some("email")
        );
        assert_eq!(
            rules().refused_field("spring-launch", &json!({"email": "ada@example.org"})),
            None
        );
        assert_eq!(rules().refused_field("no-rule", &refused), None);
    }

    #[test]
    fn normalisation_per_type() {
        let field = |kind| {
            let mut field = Policy::shipped().unwrap().campaigns[0].fields[0].clone();
            field.kind = kind;
            field
        };
        let n = |kind, value: Value| normalise(&field(kind), Some(&value), Read::Submitted);
        assert_eq!(
            n(FieldKind::Email, json!(" Ada@Example.org ")),
            Ok("ada@example.org".into())
        );
        assert_eq!(
            n(FieldKind::String, json!("  Ada \u{A0} LOVELACE ")),
            Ok("ada lovelace".into())
        );
        assert_eq!(
            n(FieldKind::String, json!("ＡＤＡ Straße")),
            Ok("ada strasse".into())
        );
        assert_eq!(n(FieldKind::Country, json!("IT")), Ok("IT".into()));
        assert_eq!(n(FieldKind::Enum, json!("gold")), Ok("gold".into()));
        assert_eq!(n(FieldKind::Integer, json!(-42)), Ok("-42".into()));
        let (missing, invalid) = (
            Err(Code::MissingIdentifyingField),
            Err(Code::InvalidIdentifyingField),
        );
        assert_eq!(n(FieldKind::Bool, json!(true)), missing);
        assert_eq!(n(FieldKind::Email, json!(7)), missing);
        assert_eq!(n(FieldKind::String, json!("   ")), missing);
        assert_eq!(
            normalise(&field(FieldKind::String), None, Read::Submitted),
            missing
        );
        assert_eq!(n(FieldKind::String, json!("Ada\tLovelace")), invalid);
        assert_eq!(n(FieldKind::String, json!("Ada\u{200B}")), invalid);
        assert_eq!(n(FieldKind::Email, json!("ada@b")), invalid);
        let stored = |value: Value| normalise(&field(FieldKind::Email), Some(&value), Read::Stored);
        assert_eq!(
            stored(json!("ada\u{AD}@exa\u{FE0F}mple.org")),
            Ok("ada@example.org".into())
        );
        // What this rule refuses but the edge once took: read as the rule before read it.
        assert_eq!(
            stored(json!(" Ada@\u{E000}.Example ")),
            Ok("ada@\u{e000}.example".into())
        );
    }
}
