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
//! Normalisation per field type (the edge has already validated and cleaned each value):
//! - `email`: trimmed, the whole address lower-cased (`Ada@Example.org ` = `ada@example.org`);
//! - `string`: trimmed, runs of white space made one space, lower-cased;
//! - `enum`, `country`: the value as validated (already canonical);
//! - `integer`: its decimal form;
//! - `bool` cannot identify anyone and is refused by the policy check.

use harbour_contract::response::Code;
use harbour_contract::signature::{self, SigningKey};
use harbour_policy::field::FieldKind;
use harbour_policy::Policy;
use serde_json::Value;

/// The normalised form of one value, or `None` when the value cannot identify anyone.
pub fn normalise(kind: FieldKind, value: &Value) -> Option<String> {
    match (kind, value) {
        (FieldKind::Email, Value::String(text)) => Some(text.trim().to_lowercase()),
        (FieldKind::String, Value::String(text)) => Some(
            text.split_whitespace()
                .collect::<Vec<_>>()
                .join(" ")
                .to_lowercase(),
        ),
        (FieldKind::Enum | FieldKind::Country, Value::String(text)) => Some(text.trim().to_owned()),
        (FieldKind::Integer, Value::Number(number)) => number.as_i64().map(|n| n.to_string()),
        _ => None,
    }
    .filter(|text| !text.is_empty())
}

/// What identifies a person in each campaign of the policy.
#[derive(Clone, Debug, Default)]
pub struct PersonRules {
    /// (campaign id, the identifying fields with their types); campaigns without a rule absent.
    campaigns: Vec<(String, Vec<(String, FieldKind)>)>,
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
                    .filter_map(|name| c.field(name).map(|f| (name.clone(), f.kind)))
                    .collect();
                (c.id.clone(), fields)
            })
            .collect();
        PersonRules { campaigns }
    }

    pub fn is_empty(&self) -> bool {
        self.campaigns.is_empty()
    }

    /// The identifying fields of `campaign` (name and type), or `None` for a campaign without
    /// a rule.
    pub fn identifying(&self, campaign: &str) -> Option<&[(String, FieldKind)]> {
        self.campaigns
            .iter()
            .find(|(id, _)| id == campaign)
            .map(|(_, fields)| fields.as_slice())
    }

    /// The digest identifying the person behind `fields` in `campaign`: `Ok(None)` for a campaign
    /// without a rule, `Err` when an identifying field is missing or unusable (the edge never
    /// forwards such an entry; a store must not take it as a new person).
    pub fn digest(
        &self,
        key: Option<&SigningKey>,
        campaign: &str,
        fields: &Value,
    ) -> Result<Option<String>, Code> {
        self.keyed(b"harbour-person-v1\n", key, campaign, fields)
    }

    /// The person's digest for a global draw, under the campaign's draw key: the same in every
    /// region for the same normalised values (see the module's rules).
    pub fn draw_digest(
        &self,
        draw_key: &SigningKey,
        campaign: &str,
        fields: &Value,
    ) -> Result<Option<String>, Code> {
        self.keyed(b"harbour-draw-v1\n", Some(draw_key), campaign, fields)
    }

    fn keyed(
        &self,
        prefix: &[u8],
        key: Option<&SigningKey>,
        campaign: &str,
        fields: &Value,
    ) -> Result<Option<String>, Code> {
        let Some(identifying) = self.identifying(campaign) else {
            return Ok(None);
        };
        let key = key.ok_or(Code::NoPersonKey)?;
        let mut message = vec![Value::from(campaign)];
        for (name, kind) in identifying {
            let value = fields
                .get(name)
                .and_then(|v| normalise(*kind, v))
                .ok_or(Code::MissingIdentifyingField)?;
            message.push(Value::from(name.as_str()));
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

    #[test]
    fn email_variants_are_one_person() {
        let k = key(b"person-key-eu-0123456789abcdefghijkl");
        let digest = |email: &str| {
            rules()
                .digest(
                    Some(&k),
                    "spring-launch",
                    &json!({"email": email, "name": "x"}),
                )
                .unwrap()
                .unwrap()
        };
        let first = digest("ada@example.org");
        assert_eq!(digest("  Ada@Example.ORG "), first);
        assert_eq!(digest("ADA@EXAMPLE.ORG"), first);
        assert_ne!(digest("ada2@example.org"), first);
        assert_eq!(first.len(), 64);
        assert!(!first.contains("ada"));
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

    #[test]
    fn normalisation_per_type() {
        let n = |kind, value: Value| normalise(kind, &value);
        assert_eq!(
            n(FieldKind::Email, json!(" Ada@Example.org ")).as_deref(),
            Some("ada@example.org")
        );
        assert_eq!(
            n(FieldKind::String, json!("  Ada \t LOVELACE ")).as_deref(),
            Some("ada lovelace")
        );
        assert_eq!(n(FieldKind::Country, json!("IT")).as_deref(), Some("IT"));
        assert_eq!(n(FieldKind::Enum, json!("gold")).as_deref(), Some("gold"));
        assert_eq!(n(FieldKind::Integer, json!(-42)).as_deref(), Some("-42"));
        assert_eq!(n(FieldKind::Bool, json!(true)), None);
        assert_eq!(n(FieldKind::Email, json!(7)), None);
        assert_eq!(n(FieldKind::String, json!("   ")), None);
    }
}
