//! Form fields: each field type's policy name, what it may be configured with, how the page
//! draws it, and how a value is checked, in one place.
//!
//! Adding a type is one `FieldKind` variant (with its policy name in `name` and a place in
//! `FieldKind::ALL`), one arm in `spec` (how it is drawn and which options it takes) and one arm in `check` (its value
//! rule); the compiler points at both arms. The page draws fields from `spec` alone, so a type
//! that reuses an input kind needs no change in `www/`.
//!
//! Every failure has a stable machine code (`required`, `invalid_email`, `too_long`, ...), which
//! is what the campaign page shows next to the field.

use crate::country::Country;
use crate::identity;
use crate::text::JsonObject;

/// A field type, named in the policy by `FieldKind::name` (`"email"`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FieldKind {
    /// Free text.
    String,
    /// An email address; the domain's ASCII letters are lower-cased (see `identity`).
    Email,
    /// One of the field's `values`.
    Enum,
    /// A checkbox; `must_be_true` makes it a consent box.
    Bool,
    /// A whole number within the field's optional `min`/`max`.
    Integer,
    /// An ISO 3166-1 alpha-2 code; may be the campaign's residency signal.
    Country,
}

/// Where a select's options come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Options {
    None,
    /// The field's own `values` from the policy.
    Listed,
    /// Every assigned country code (the page shows names in the visitor's language).
    Countries,
}

/// How a field type is drawn and configured.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Spec {
    /// The HTML control the page draws: `text`, `email`, `number`, `checkbox` or `select`.
    pub input: &'static str,
    pub autocomplete: Option<&'static str>,
    pub options: Options,
    /// Takes `min`/`max`.
    pub range: bool,
    /// Enforces `max_length`.
    pub length: bool,
    /// May be `must_be_true`.
    pub consent: bool,
    /// May be the campaign's `residency_signal`.
    pub residency_signal: bool,
}

const TEXT: Spec = Spec {
    input: "text",
    autocomplete: None,
    options: Options::None,
    range: false,
    length: true,
    consent: false,
    residency_signal: false,
};

impl FieldKind {
    pub fn spec(self) -> Spec {
        match self {
            FieldKind::String => TEXT,
            FieldKind::Email => Spec {
                input: "email",
                autocomplete: Some("email"),
                ..TEXT
            },
            FieldKind::Enum => Spec {
                input: "select",
                options: Options::Listed,
                length: false,
                ..TEXT
            },
            FieldKind::Bool => Spec {
                input: "checkbox",
                length: false,
                consent: true,
                ..TEXT
            },
            FieldKind::Integer => Spec {
                input: "number",
                range: true,
                length: false,
                ..TEXT
            },
            FieldKind::Country => Spec {
                input: "select",
                autocomplete: Some("country"),
                options: Options::Countries,
                length: false,
                residency_signal: true,
                ..TEXT
            },
        }
    }

    /// Every type, in the order the policy's error message lists them.
    pub const ALL: [FieldKind; 6] = [
        FieldKind::String,
        FieldKind::Email,
        FieldKind::Enum,
        FieldKind::Bool,
        FieldKind::Integer,
        FieldKind::Country,
    ];

    /// The policy's name for this type. Plain strings rather than serde's: serde's string
    /// deserializer brings float formatting into the worker (for error messages it never
    /// writes), about 6 KB gzip.
    pub fn name(self) -> &'static str {
        match self {
            FieldKind::String => "string",
            FieldKind::Email => "email",
            FieldKind::Enum => "enum",
            FieldKind::Bool => "bool",
            FieldKind::Integer => "integer",
            FieldKind::Country => "country",
        }
    }

    /// The type named `name` in a policy, or a message listing every name there is.
    pub fn parse(name: &str) -> Result<FieldKind, String> {
        if let Some(kind) = FieldKind::ALL.into_iter().find(|kind| kind.name() == name) {
            return Ok(kind);
        }
        let names: Vec<String> = FieldKind::ALL
            .iter()
            .map(|kind| format!("`{}`", kind.name()))
            .collect();
        Err(format!(
            "unknown variant `{name}`, expected one of {}",
            names.join(", ")
        ))
    }

    /// Checks one present, non-blank value.
    fn check(self, field: &Field, value: RawValue) -> Result<CleanValue, FieldError> {
        let name = field.name.as_str();
        let wrong_type = || {
            error(
                name,
                "invalid_type",
                format!("expected a {} value", self.name()),
            )
        };
        match self {
            FieldKind::String => {
                let RawValue::Text(text) = value else {
                    return Err(wrong_type());
                };
                clean_text(field, &text).map(CleanValue::Text)
            }
            FieldKind::Email => {
                let RawValue::Text(text) = value else {
                    return Err(wrong_type());
                };
                let text = clean_text(field, &text)?;
                // The shape the origin's fold checks first (`identity`): what this refuses, the
                // origin refuses too.
                identity::address(&text)
                    .map(CleanValue::Text)
                    .ok_or_else(|| {
                        error(
                            name,
                            "invalid_email",
                            "enter an address like name@example.com",
                        )
                    })
            }
            FieldKind::Enum => {
                let RawValue::Text(text) = value else {
                    return Err(wrong_type());
                };
                let text = text.trim();
                if field.values.iter().any(|a| a == text) {
                    Ok(CleanValue::Text(text.to_owned()))
                } else {
                    Err(error(
                        name,
                        "not_allowed",
                        format!("choose one of: {}", field.values.join(", ")),
                    ))
                }
            }
            FieldKind::Bool => {
                let flag = match &value {
                    RawValue::Bool(b) => Some(*b),
                    RawValue::Text(text) => match text.trim() {
                        "true" | "on" | "1" | "yes" => Some(true),
                        "false" | "off" | "0" | "no" => Some(false),
                        _ => None,
                    },
                    _ => None,
                };
                match flag {
                    None => Err(wrong_type()),
                    Some(false) if field.must_be_true => Err(error(
                        name,
                        "must_be_true",
                        "this box must be ticked to take part",
                    )),
                    Some(flag) => Ok(CleanValue::Bool(flag)),
                }
            }
            FieldKind::Integer => {
                let number = match &value {
                    RawValue::Integer(n) => Some(*n),
                    RawValue::Text(text) => text.trim().parse::<i64>().ok(),
                    _ => None,
                };
                let number = number.ok_or_else(wrong_type)?;
                let (min, max) = (field.min, field.max);
                if min.is_some_and(|min| number < min) || max.is_some_and(|max| number > max) {
                    let range = match (min, max) {
                        (Some(a), Some(b)) => format!("between {a} and {b}"),
                        (Some(a), None) => format!("at least {a}"),
                        (None, Some(b)) => format!("at most {b}"),
                        (None, None) => String::new(),
                    };
                    return Err(error(
                        name,
                        "out_of_range",
                        format!("enter a number {range}"),
                    ));
                }
                Ok(CleanValue::Integer(number))
            }
            FieldKind::Country => {
                let RawValue::Text(text) = value else {
                    return Err(wrong_type());
                };
                Country::parse(text.trim())
                    .map(|c| CleanValue::Text(c.to_string()))
                    .ok_or_else(|| {
                        error(
                            name,
                            "invalid_country",
                            "choose a country (ISO 3166-1 alpha-2 code)",
                        )
                    })
            }
        }
    }
}

/// Body members that are not fields: the region the visitor confirmed their entry may be stored
/// in (`confirm_region`). No field may take these names.
pub const RESERVED_MEMBERS: [&str; 1] = ["confirm_region"];

/// A field of a campaign's form, as the policy defines it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Field {
    pub name: String,
    pub label: String,
    pub kind: FieldKind,
    pub required: bool,
    /// In characters (Unicode scalar values), after trimming.
    pub max_length: u32,
    /// The allowed values of an `enum` field; empty for every other type.
    pub values: Vec<String>,
    pub min: Option<i64>,
    pub max: Option<i64>,
    /// For consent boxes: only `true` is acceptable.
    pub must_be_true: bool,
    /// The visitor's declared country, a second residency signal.
    pub residency_signal: bool,
    /// Agreeing to be contacted (marketing): never required (see `notice`).
    pub marketing_consent: bool,
    /// Named in the campaign's `one_entry_per`: its value identifies a person.
    pub identifying: bool,
    /// For an identifying email field: sub-addresses and gmail's dots do not tell people apart
    /// (see `identity`). Off unless the policy says so.
    pub provider_rules: bool,
}

impl Field {
    /// Checks a field's value as it arrived: `Ok(None)` for an optional field left empty.
    pub fn check(&self, value: Option<RawValue>) -> Result<Option<CleanValue>, FieldError> {
        match value {
            Some(v) if !v.is_blank() => self.kind.check(self, v).map(Some),
            _ if self.required => Err(error(&self.name, "required", "this field is required")),
            _ => Ok(None),
        }
    }

    /// What the page needs to draw this field, straight from the policy, so the form and the
    /// validator cannot disagree: a JSON object, with `label` in the page's language.
    pub fn describe(&self, label: &str) -> String {
        let spec = self.kind.spec();
        let mut out = JsonObject::new();
        out.str("name", &self.name)
            .str("label", label)
            .str("type", self.kind.name())
            .str("input", spec.input)
            .bool("required", self.required);
        if spec.length {
            out.u64("max_length", u64::from(self.max_length));
        }
        if let Some(autocomplete) = spec.autocomplete {
            out.str("autocomplete", autocomplete);
        }
        match spec.options {
            Options::None => {}
            Options::Listed => {
                out.strs("values", self.values.iter().map(String::as_str));
            }
            Options::Countries => {
                out.strs("values", Country::all().map(|c| c.as_str_static()))
                    .str("value_names", "region");
            }
        }
        if spec.range {
            out.opt_i64("min", self.min).opt_i64("max", self.max);
        }
        if self.must_be_true {
            out.bool("must_be_true", true);
        }
        if self.marketing_consent {
            out.str("consent", "marketing");
        }
        if self.residency_signal {
            out.bool("residency_signal", true);
        }
        out.finish()
    }
}

/// A value as it arrived, before the campaign's schema is applied.
#[derive(Clone, Debug, PartialEq)]
pub enum RawValue {
    Text(String),
    Bool(bool),
    Integer(i64),
    /// A number that is not a 64-bit integer.
    OtherNumber,
    Null,
    /// An array or object, which no field accepts.
    Nested,
}

impl RawValue {
    pub fn is_blank(&self) -> bool {
        match self {
            RawValue::Null => true,
            RawValue::Text(text) => text.trim().is_empty(),
            _ => false,
        }
    }
}

/// A checked value, in the form it is forwarded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CleanValue {
    Text(String),
    Bool(bool),
    Integer(i64),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldError {
    pub field: String,
    pub code: &'static str,
    pub detail: String,
}

pub fn truncate(text: &str, max_chars: usize) -> String {
    text.chars().take(max_chars).collect()
}

pub fn error(field: &str, code: &'static str, detail: impl Into<String>) -> FieldError {
    FieldError {
        field: truncate(field, 64),
        code,
        detail: detail.into(),
    }
}

/// The error for a value the origin refused as identifying no one (`invalid_identifying_field`):
/// what only the origin's fold can tell (`identity`), said as the edge says its own refusals.
pub fn identifies_no_one(field: &Field) -> FieldError {
    match field.kind {
        FieldKind::Email => error(
            &field.name,
            "invalid_email",
            "enter an address like name@example.com (this one has no valid domain or has symbols no address uses)",
        ),
        _ => error(
            &field.name,
            "invalid_characters",
            "remove symbols that cannot tell people apart",
        ),
    }
}

/// Trims, refuses control and invisible characters (`identity::is_invisible`: they have no
/// place in a form field, hide one spelling inside another and are a favourite of log and
/// header injection), and enforces the length in characters rather than bytes, so a name in
/// Chinese has the same room as one in Latin script.
fn clean_text(field: &Field, text: &str) -> Result<String, FieldError> {
    let text = text.trim();
    if identity::first_invisible(text).is_some() {
        return Err(error(
            &field.name,
            "invalid_characters",
            "remove control or invisible formatting characters",
        ));
    }
    let length = text.chars().count();
    if length > field.max_length as usize {
        return Err(error(
            &field.name,
            "too_long",
            format!("use at most {} characters", field.max_length),
        ));
    }
    Ok(text.to_owned())
}

/// Any JSON value, as the submission parser reads a field (without serde_json's `Value` tree).
impl<'de> serde::Deserialize<'de> for RawValue {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ValueVisitor;
        impl<'de> serde::de::Visitor<'de> for ValueVisitor {
            type Value = RawValue;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON value")
            }
            fn visit_bool<E>(self, v: bool) -> Result<RawValue, E> {
                Ok(RawValue::Bool(v))
            }
            fn visit_i64<E>(self, v: i64) -> Result<RawValue, E> {
                Ok(RawValue::Integer(v))
            }
            fn visit_u64<E>(self, v: u64) -> Result<RawValue, E> {
                Ok(i64::try_from(v).map_or(RawValue::OtherNumber, RawValue::Integer))
            }
            fn visit_f64<E>(self, _: f64) -> Result<RawValue, E> {
                Ok(RawValue::OtherNumber)
            }
            fn visit_str<E>(self, v: &str) -> Result<RawValue, E> {
                Ok(RawValue::Text(v.to_owned()))
            }
            fn visit_string<E>(self, v: String) -> Result<RawValue, E> {
                Ok(RawValue::Text(v))
            }
            fn visit_unit<E>(self) -> Result<RawValue, E> {
                Ok(RawValue::Null)
            }
            fn visit_none<E>(self) -> Result<RawValue, E> {
                Ok(RawValue::Null)
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<RawValue, A::Error> {
                while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {}
                Ok(RawValue::Nested)
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<RawValue, A::Error> {
                while map
                    .next_entry::<serde::de::IgnoredAny, serde::de::IgnoredAny>()?
                    .is_some()
                {}
                Ok(RawValue::Nested)
            }
        }
        deserializer.deserialize_any(ValueVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    #[test]
    fn kind_names_round_trip_and_an_unknown_one_lists_them_all() {
        for kind in FieldKind::ALL {
            assert_eq!(FieldKind::parse(kind.name()), Ok(kind));
        }
        assert_eq!(FieldKind::Email.name(), "email");
        assert_eq!(
            FieldKind::parse("emial"),
            Err(
                "unknown variant `emial`, expected one of `string`, `email`, `enum`, `bool`, \
                 `integer`, `country`"
                    .into()
            )
        );
    }

    fn field(kind: FieldKind) -> Field {
        Field {
            name: "f".into(),
            label: "F".into(),
            kind,
            required: true,
            max_length: 8,
            values: vec!["a".into(), "b".into()],
            min: Some(1),
            max: Some(9),
            must_be_true: kind == FieldKind::Bool,
            residency_signal: false,
            marketing_consent: false,
            identifying: false,
            provider_rules: false,
        }
    }

    fn text(value: &str) -> Option<RawValue> {
        Some(RawValue::Text(value.into()))
    }

    #[test]
    fn each_kind_checks_its_values() {
        let table: Vec<(FieldKind, Option<RawValue>, Result<CleanValue, &str>)> = vec![
            (
                FieldKind::String,
                text(" ab "),
                Ok(CleanValue::Text("ab".into())),
            ),
            (FieldKind::String, text("abcdefghi"), Err("too_long")),
            (
                FieldKind::String,
                text("a\u{202e}"),
                Err("invalid_characters"),
            ),
            (
                FieldKind::String,
                Some(RawValue::Integer(1)),
                Err("invalid_type"),
            ),
            (FieldKind::String, None, Err("required")),
            (FieldKind::String, Some(RawValue::Null), Err("required")),
            (
                FieldKind::Email,
                text("A@B.CO"),
                Ok(CleanValue::Text("A@b.co".into())),
            ),
            (FieldKind::Email, text("nope"), Err("invalid_email")),
            (
                FieldKind::Enum,
                text(" b"),
                Ok(CleanValue::Text("b".into())),
            ),
            (FieldKind::Enum, text("c"), Err("not_allowed")),
            (FieldKind::Bool, text("on"), Ok(CleanValue::Bool(true))),
            (
                FieldKind::Bool,
                Some(RawValue::Bool(false)),
                Err("must_be_true"),
            ),
            (FieldKind::Bool, text("maybe"), Err("invalid_type")),
            (FieldKind::Integer, text(" 7 "), Ok(CleanValue::Integer(7))),
            (
                FieldKind::Integer,
                Some(RawValue::Integer(10)),
                Err("out_of_range"),
            ),
            (
                FieldKind::Integer,
                Some(RawValue::OtherNumber),
                Err("invalid_type"),
            ),
            (
                FieldKind::Country,
                text("it"),
                Ok(CleanValue::Text("IT".into())),
            ),
            (FieldKind::Country, text("T1"), Err("invalid_country")),
            (
                FieldKind::Country,
                Some(RawValue::Nested),
                Err("invalid_type"),
            ),
        ];
        for (kind, value, expected) in table {
            let got = field(kind).check(value.clone()).map(Option::unwrap);
            assert_eq!(got.map_err(|e| e.code), expected, "{kind:?} {value:?}");
        }
        let optional = Field {
            required: false,
            ..field(FieldKind::String)
        };
        assert_eq!(optional.check(text("  ")), Ok(None));
    }

    #[test]
    fn descriptions_come_from_the_spec() {
        let describe =
            |kind| -> Value { serde_json::from_str(&field(kind).describe("Label")).unwrap() };
        let email = describe(FieldKind::Email);
        assert_eq!(email["label"], "Label");
        assert_eq!(email["input"], "email");
        assert_eq!(email["autocomplete"], "email");
        assert_eq!(email["max_length"], 8);
        assert!(email.get("values").is_none());
        let country = describe(FieldKind::Country);
        assert_eq!(country["input"], "select");
        assert_eq!(country["value_names"], "region");
        assert_eq!(
            country["values"].as_array().map(Vec::len),
            Some(250),
            "ISO and XK"
        );
        let integer = describe(FieldKind::Integer);
        assert_eq!(
            (integer["min"].clone(), integer["max"].clone()),
            (json!(1), json!(9))
        );
        assert!(integer.get("max_length").is_none());
        let consent = describe(FieldKind::Bool);
        assert_eq!(consent["input"], "checkbox");
        assert_eq!(consent["must_be_true"], true);
        for kind in FieldKind::ALL {
            let spec = kind.spec();
            assert!(
                ["text", "email", "number", "checkbox", "select"].contains(&spec.input),
                "{kind:?} draws an input the page knows"
            );
        }
    }

    #[test]
    fn invisible_characters_are_refused_in_every_text_field() {
        for kind in [FieldKind::String, FieldKind::Email] {
            for value in [
                "a\u{AD}@b.co",
                "a\u{FE0F}@b.co",
                "a\u{34F}@b.co",
                "a\u{600}@b.co",
            ] {
                let got = field(kind).check(text(value)).map_err(|e| e.code);
                assert_eq!(got, Err("invalid_characters"), "{kind:?} {value:?}");
            }
        }
    }

    #[test]
    fn an_address_is_forwarded_as_typed_with_its_domain_lower_cased() {
        let email = Field {
            max_length: 254,
            ..field(FieldKind::Email)
        };
        let forwarded = |value: &str| email.check(text(value)).map_err(|e| e.code);
        assert_eq!(
            forwarded(" ｊｏｓé@Bücher.EXAMPLE "),
            Ok(Some(CleanValue::Text("ｊｏｓé@bücher.example".into())))
        );
        assert_eq!(forwarded("a@b_c.example"), Err("invalid_email"));
        assert_eq!(forwarded("a＠b.co"), Err("invalid_email"));
    }

    /// The edge refuses in an identifying text what it refuses in any text; what else cannot
    /// identify anyone (private use, unassigned) only the origin's fold can tell, and refuses.
    #[test]
    fn an_identifying_text_is_checked_as_any_text() {
        let name = Field {
            identifying: true,
            ..field(FieldKind::String)
        };
        assert_eq!(
            name.check(text("Ada")),
            Ok(Some(CleanValue::Text("Ada".into())))
        );
        assert_eq!(
            name.check(text("Ada\u{200D}")).map_err(|e| e.code),
            Err("invalid_characters")
        );
        assert_eq!(
            name.check(text("\u{E000}")),
            Ok(Some(CleanValue::Text("\u{E000}".into())))
        );
    }
}
