//! Validation: from body bytes to a clean submission, or one report of every field error.
//!
//! Two encodings are accepted, JSON and `application/x-www-form-urlencoded`, both as one flat
//! object of field → value. Keys must be unique (a duplicate is ambiguous, so it is refused rather
//! than guessed at), fields not in the campaign are refused, the honeypot is noted and dropped.
//! Every field is checked (see `field`) and every failure reported at once (422). A body that
//! cannot be read as such an object at all is a 400.
//!
//! A [`Submission`] can only be made here, so every later phase sees checked input only.

use std::cell::Cell;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, Visitor};

use crate::outcome::Outcome;
pub use crate::outcome::Unreadable;
use crate::reply::{problem, Answer, Flow, Phase, Reply};
use harbour_policy::country::Country;
use harbour_policy::field::{truncate, CleanValue, FieldError, RawValue, RESERVED_MEMBERS};
use harbour_policy::text::{push_quoted, quoted};
use harbour_policy::{Campaign, LOCALES};

/// How a submission's body is encoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Encoding {
    Json,
    Form,
}

/// A body that may be read as a submission.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Payload<'f> {
    pub encoding: Encoding,
    pub bytes: &'f [u8],
}

/// Beyond this many keys a body is not a form submission.
const MAX_KEYS: usize = 64;

/// Why a body could not be read as a submission at all (400), as opposed to field errors (422).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BodyError {
    InvalidUtf8,
    /// Not a JSON object, or broken JSON or form encoding; the text is safe to show.
    Malformed(String),
    DuplicateKey(String),
    TooManyKeys,
}

impl BodyError {
    pub fn kind(&self) -> Unreadable {
        match self {
            BodyError::InvalidUtf8 => Unreadable::InvalidUtf8,
            BodyError::Malformed(_) => Unreadable::Malformed,
            BodyError::DuplicateKey(_) => Unreadable::DuplicateKey,
            BodyError::TooManyKeys => Unreadable::TooManyKeys,
        }
    }

    pub fn code(&self) -> &'static str {
        self.kind().code()
    }

    pub fn detail(&self) -> String {
        match self {
            BodyError::InvalidUtf8 => "the body is not valid UTF-8".into(),
            BodyError::Malformed(why) => why.clone(),
            BodyError::DuplicateKey(key) => {
                format!("the key {} appears more than once", quoted(key))
            }
            BodyError::TooManyKeys => format!("a submission has at most {MAX_KEYS} keys"),
        }
    }
}

pub fn parse_body(encoding: Encoding, bytes: &[u8]) -> Result<Vec<(String, RawValue)>, BodyError> {
    let text = std::str::from_utf8(bytes).map_err(|_| BodyError::InvalidUtf8)?;
    let pairs = match encoding {
        Encoding::Json => parse_json(text)?,
        Encoding::Form => parse_form(text)?,
    };
    for (i, (key, _)) in pairs.iter().enumerate() {
        if pairs[..i].iter().any(|(earlier, _)| earlier == key) {
            return Err(BodyError::DuplicateKey(truncate(key, 64)));
        }
    }
    Ok(pairs)
}

fn parse_json(text: &str) -> Result<Vec<(String, RawValue)>, BodyError> {
    // What `serde_json::from_str` does, with the seed saying what it refused. The seed reads
    // past what it refuses instead of failing with an error of its own: serde_json makes any
    // such error from its text (a search for " at line "), which would bring that code and
    // serde_json's error messages into the worker.
    let refused = Cell::new(None);
    let mut deserializer = serde_json::Deserializer::from_str(text);
    let parsed = FlatObject(&refused)
        .deserialize(&mut deserializer)
        .and_then(|pairs| deserializer.end().map(|()| pairs));
    match (parsed, refused.get()) {
        (_, Some(Refusal::TooManyKeys)) => Err(BodyError::TooManyKeys),
        (_, Some(Refusal::NotAnObject)) => Err(not_an_object()),
        (Ok(pairs), None) => Ok(pairs),
        (Err(e), None) => Err(match e.classify() {
            serde_json::error::Category::Data => not_an_object(),
            _ => BodyError::Malformed(format!(
                "the body is not valid JSON (line {} column {})",
                e.line(),
                e.column()
            )),
        }),
    }
}

fn not_an_object() -> BodyError {
    BodyError::Malformed("the body must be one JSON object".into())
}

/// What the top-level parser refused, read past rather than failed on (see `parse_json`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Refusal {
    NotAnObject,
    TooManyKeys,
}

/// A top-level JSON object kept as ordered pairs, so duplicate keys stay visible; anything else,
/// or an object past `MAX_KEYS`, is read to its end and named in the cell.
struct FlatObject<'a>(&'a Cell<Option<Refusal>>);

impl<'de> DeserializeSeed<'de> for FlatObject<'_> {
    type Value = Vec<(String, RawValue)>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        struct ObjectVisitor<'a>(&'a Cell<Option<Refusal>>);
        impl ObjectVisitor<'_> {
            fn refuse<E>(&self, refusal: Refusal) -> Result<Vec<(String, RawValue)>, E> {
                self.0.set(Some(refusal));
                Ok(Vec::new())
            }
        }
        impl<'de> Visitor<'de> for ObjectVisitor<'_> {
            type Value = Vec<(String, RawValue)>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object")
            }
            // Every JSON type is taken here: serde's default visits would describe a refused
            // value (`Unexpected`), and describing a float brings float formatting into the
            // worker (about 6 KB gzip) for a message nobody reads.
            fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
                self.refuse(Refusal::NotAnObject)
            }
            fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
                self.refuse(Refusal::NotAnObject)
            }
            fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
                self.refuse(Refusal::NotAnObject)
            }
            fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
                self.refuse(Refusal::NotAnObject)
            }
            fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
                self.refuse(Refusal::NotAnObject)
            }
            fn visit_unit<E>(self) -> Result<Self::Value, E> {
                self.refuse(Refusal::NotAnObject)
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                self.0.set(Some(Refusal::NotAnObject));
                while seq.next_element::<de::IgnoredAny>()?.is_some() {}
                Ok(Vec::new())
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut pairs = Vec::new();
                while let Some((key, value)) = map.next_entry::<String, RawValue>()? {
                    if pairs.len() == MAX_KEYS {
                        self.0.set(Some(Refusal::TooManyKeys));
                        while map
                            .next_entry::<de::IgnoredAny, de::IgnoredAny>()?
                            .is_some()
                        {}
                        return Ok(Vec::new());
                    }
                    pairs.push((key, value));
                }
                Ok(pairs)
            }
        }
        deserializer.deserialize_any(ObjectVisitor(self.0))
    }
}

/// `application/x-www-form-urlencoded` as the WHATWG URL standard parses it: `&`-separated,
/// `+` is a space, percent escapes decode to bytes that must form UTF-8.
fn parse_form(text: &str) -> Result<Vec<(String, RawValue)>, BodyError> {
    let mut pairs = Vec::new();
    for part in text.split('&').filter(|p| !p.is_empty()) {
        if pairs.len() == MAX_KEYS {
            return Err(BodyError::TooManyKeys);
        }
        let (key, value) = part.split_once('=').unwrap_or((part, ""));
        pairs.push((percent_decode(key)?, RawValue::Text(percent_decode(value)?)));
    }
    Ok(pairs)
}

fn percent_decode(text: &str) -> Result<String, BodyError> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = bytes.get(i + 1..i + 3).and_then(|h| {
                    let h = std::str::from_utf8(h).ok()?;
                    u8::from_str_radix(h, 16).ok()
                });
                match hex {
                    Some(byte) => {
                        out.push(byte);
                        i += 2;
                    }
                    None => {
                        return Err(BodyError::Malformed(
                            "the form encoding has a broken percent escape".into(),
                        ))
                    }
                }
            }
            other => out.push(other),
        }
        i += 1;
    }
    String::from_utf8(out).map_err(|_| BodyError::InvalidUtf8)
}

/// A submission that passed validation. Its fields are private and only this module makes one,
/// so no later phase can see unchecked input.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Submission {
    fields: Vec<(String, CleanValue)>,
    declared_country: Option<Country>,
    honeypot_filled: bool,
    /// The notice the visitor was shown: its locale and version (checked against the campaign's).
    notice: Option<NoticeShown>,
    /// The region the visitor confirmed their entry may be stored in, if they were asked.
    confirmed_region: Option<String>,
}

/// Which notice a visitor saw: the version of the campaign's notice in that locale.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NoticeShown {
    pub locale: &'static str,
    pub version: String,
}

impl Submission {
    /// In the campaign's field order; optional fields left empty are absent.
    pub fn fields(&self) -> &[(String, CleanValue)] {
        &self.fields
    }

    /// The visitor's own statement of country, a second residency signal.
    pub fn declared_country(&self) -> Option<Country> {
        self.declared_country
    }

    /// The honeypot was filled: accept quietly, forward nothing.
    pub fn honeypot_filled(&self) -> bool {
        self.honeypot_filled
    }

    /// The notice the visitor was shown, if the campaign has one.
    pub fn notice(&self) -> Option<&NoticeShown> {
        self.notice.as_ref()
    }

    /// The region id the visitor confirmed storage in, if any.
    pub fn confirmed_region(&self) -> Option<&str> {
        self.confirmed_region.as_deref()
    }
}

/// The validate phase: a readable body (400 otherwise) whose every field passes, sent under the
/// campaign's current notice (422 with every error otherwise).
pub fn validate(campaign: &Campaign, payload: Payload, notice: Option<&str>) -> Flow<Submission> {
    let refuse = |reply| Flow::Break(Answer::new(Phase::Validate, reply));
    let pairs = match parse_body(payload.encoding, payload.bytes) {
        Ok(pairs) => pairs,
        Err(e) => {
            return refuse(problem(
                400,
                Outcome::Unreadable(e.kind()),
                "Unreadable submission",
                &e.detail(),
                &[],
            ))
        }
    };
    // Every error at once: the fields' and the notice's.
    let shown = notice_shown(campaign, notice);
    match (check(campaign, pairs), shown) {
        (Ok(mut submission), Ok(shown)) => {
            submission.notice = Some(shown);
            Flow::Continue(submission)
        }
        (Ok(_), Err(notice)) => refuse(invalid_fields(vec![notice])),
        (Err(mut errors), shown) => {
            errors.extend(shown.err());
            refuse(invalid_fields(errors))
        }
    }
}

/// The one 422 for field errors, `{"errors":[{"field","code","detail"}]}`, which the page shows
/// next to each field; a residency conflict on the declared field is answered with it too.
pub fn invalid_fields(errors: Vec<FieldError>) -> Reply {
    let detail = format!("{} field(s) need attention", errors.len());
    // Each error's members in name order, as problem's members are.
    let mut list = String::from("[");
    for (i, e) in errors.iter().enumerate() {
        if i > 0 {
            list.push(',');
        }
        list.push_str("{\"code\":");
        push_quoted(&mut list, e.code);
        list.push_str(",\"detail\":");
        push_quoted(&mut list, &e.detail);
        list.push_str(",\"field\":");
        push_quoted(&mut list, &e.field);
        list.push('}');
    }
    list.push(']');
    problem(
        422,
        Outcome::ValidationFailed,
        "The submission has errors",
        &detail,
        &[("errors", list)],
    )
}

/// Applies the campaign's schema to the pairs of a readable body.
pub fn check(
    campaign: &Campaign,
    pairs: Vec<(String, RawValue)>,
) -> Result<Submission, Vec<FieldError>> {
    let mut errors = Vec::new();
    let mut honeypot_filled = false;
    let mut values: Vec<Option<RawValue>> = vec![None; campaign.fields.len()];
    let mut reserved: [Option<RawValue>; 1] = [None];
    for (key, value) in pairs {
        if campaign.honeypot.as_deref() == Some(key.as_str()) {
            honeypot_filled |= !value.is_blank();
            continue;
        }
        if let Some(at) = RESERVED_MEMBERS.iter().position(|m| *m == key) {
            reserved[at] = Some(value);
            continue;
        }
        match campaign.fields.iter().position(|f| f.name == key) {
            Some(index) => values[index] = Some(value),
            None => errors.push(harbour_policy::field::error(
                &key,
                "unknown_field",
                "this field is not part of the form",
            )),
        }
    }
    let mut fields = Vec::new();
    let mut declared_country = None;
    for (field, value) in campaign.fields.iter().zip(values) {
        match field.check(value) {
            Ok(Some(clean)) => {
                if field.residency_signal {
                    if let CleanValue::Text(code) = &clean {
                        declared_country = Country::parse(code);
                    }
                }
                fields.push((field.name.clone(), clean));
            }
            Ok(None) => {}
            Err(e) => errors.push(e),
        }
    }
    let [confirmed_region] = reserved.map(|value| match value {
        Some(RawValue::Text(text)) => Some(text),
        _ => None,
    });
    if errors.is_empty() {
        Ok(Submission {
            fields,
            declared_country,
            honeypot_filled,
            notice: None,
            confirmed_region,
        })
    } else {
        Err(errors)
    }
}

/// The `Harbour-Notice` of the shipped policy's first campaign in English: what a page showing
/// that notice sends, for tests.
#[cfg(test)]
pub(crate) fn shipped_notice() -> &'static str {
    static HEADER: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    HEADER.get_or_init(|| {
        let policy = harbour_policy::Policy::shipped().unwrap_or_else(|e| panic!("{e}"));
        policy.campaigns[0].notice_header("en")
    })
}

/// The notice a submission says its visitor was shown, from its `Harbour-Notice` header
/// (`{locale}.{version}`): a locale harbour knows and that locale's current notice version. An
/// entry without one, or with another version (a page loaded before the notice changed), is
/// refused: the page shows the current notice and the visitor sends again, so every stored entry
/// records a notice it was really made under.
pub fn notice_shown(campaign: &Campaign, header: Option<&str>) -> Result<NoticeShown, FieldError> {
    let fail = |code, detail: &str| Err(harbour_policy::field::error("notice", code, detail));
    let Some((locale, version)) = header.and_then(|h| h.split_once('.')) else {
        return fail(
            "notice_required",
            "send Harbour-Notice: {lang}.{version} from the form description",
        );
    };
    let Some(locale) = LOCALES.iter().find(|known| **known == locale) else {
        return fail(
            "notice_required",
            "the notice's locale is not one of harbour's",
        );
    };
    if version != campaign.notice_version(locale) {
        return fail(
            "notice_outdated",
            "the notice changed since this form was loaded; show the current one and send again",
        );
    }
    Ok(NoticeShown {
        locale,
        version: version.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use harbour_policy::Policy;

    fn campaign() -> Campaign {
        Policy::shipped().unwrap().campaigns[0].clone()
    }

    fn json(body: &str) -> Result<Submission, Vec<(String, &'static str)>> {
        let pairs = parse_body(Encoding::Json, body.as_bytes()).expect("parses");
        check(&campaign(), pairs)
            .map_err(|errors| errors.into_iter().map(|e| (e.field, e.code)).collect())
    }

    const VALID: &str =
        r#"{"name":"  Ada Lovelace ","email":"Ada@Example.ORG","country":"it","consent":true}"#;

    #[test]
    fn a_valid_submission_is_cleaned() {
        let s = json(VALID).unwrap();
        assert_eq!(
            s.fields(),
            vec![
                ("name".into(), CleanValue::Text("Ada Lovelace".into())),
                ("email".into(), CleanValue::Text("Ada@example.org".into())),
                ("country".into(), CleanValue::Text("IT".into())),
                ("consent".into(), CleanValue::Bool(true)),
            ]
        );
        assert_eq!(s.declared_country(), Country::parse("IT"));
        assert!(!s.honeypot_filled());
    }

    #[test]
    fn every_field_error_is_reported_at_once() {
        let errors = json(r#"{"name":"","email":"nope","country":"ZZ","consent":false,"extra":1}"#)
            .unwrap_err();
        assert_eq!(
            errors,
            vec![
                ("extra".into(), "unknown_field"),
                ("name".into(), "required"),
                ("email".into(), "invalid_email"),
                ("country".into(), "invalid_country"),
                ("consent".into(), "must_be_true"),
            ]
        );
    }

    #[test]
    fn field_rules_table() {
        let long_name = "é".repeat(101);
        let cases: Vec<(String, Vec<(String, &str)>)> = vec![
            (
                format!(
                    r#"{{"name":"{long_name}","email":"a@b.co","country":"IT","consent":true}}"#
                ),
                vec![("name".into(), "too_long")],
            ),
            (
                r#"{"name":"A","email":"a@b.co","country":"IT"}"#.into(),
                vec![("consent".into(), "required")],
            ),
            (
                r#"{"name":"A","email":"a@b.co","country":"IT","consent":"yes please"}"#.into(),
                vec![("consent".into(), "invalid_type")],
            ),
            (
                r#"{"name":7,"email":"a@b.co","country":"IT","consent":true}"#.into(),
                vec![("name".into(), "invalid_type")],
            ),
            (
                r#"{"name":["A"],"email":"a@b.co","country":"IT","consent":true}"#.into(),
                vec![("name".into(), "invalid_type")],
            ),
            (
                r#"{"name":"A\u0000B","email":"a@b.co","country":"IT","consent":true}"#.into(),
                vec![("name".into(), "invalid_characters")],
            ),
            (
                r#"{"name":"A\u202eB","email":"a@b.co","country":"IT","consent":true}"#.into(),
                vec![("name".into(), "invalid_characters")],
            ),
            (
                r#"{"name":null,"email":"a@b.co","country":"T1","consent":true}"#.into(),
                vec![
                    ("name".into(), "required"),
                    ("country".into(), "invalid_country"),
                ],
            ),
        ];
        for (body, expected) in cases {
            assert_eq!(json(&body).unwrap_err(), expected, "{body}");
        }
    }

    /// Issue 23: spellings of one address that were stored as new entries. Those with an
    /// invisible character are refused here (422); the others go on as typed (the domain's
    /// ASCII letters lower-cased), and the origin's digest (the same `identity`, with its fold)
    /// makes them the person they are (409).
    #[test]
    fn another_spelling_of_an_address_is_refused_or_forwarded_as_typed() {
        let with_email = |email: &str| {
            let body = serde_json::json!({"name": "Ada", "email": email, "country": "IT", "consent": true});
            json(&body.to_string()).map(|s| s.fields()[1].1.clone())
        };
        for (what, email) in [
            ("soft hyphen", "ada\u{AD}X@example.org"),
            ("variation selector", "adaX\u{FE0F}@example.org"),
            ("combining grapheme joiner", "ada\u{34F}X@example.org"),
            (
                "zero width joiner in the domain",
                "adaX@exa\u{200D}mple.org",
            ),
        ] {
            assert_eq!(
                with_email(email),
                Err(vec![("email".into(), "invalid_characters")]),
                "{what}"
            );
        }
        for (what, email, forwarded) in [
            ("case", "ADAx@Example.ORG", "ADAx@example.org"),
            (
                "fullwidth letters",
                "ａｄａX@example.org",
                "ａｄａX@example.org",
            ),
            (
                "fullwidth domain",
                "adaX@ｅｘａｍｐｌｅ．ｏｒｇ",
                "adaX@ｅｘａｍｐｌｅ．ｏｒｇ",
            ),
            (
                "U-label",
                "ada@Bücher-Laden.example",
                "ada@bücher-laden.example",
            ),
            (
                "A-label",
                "ada@XN--bcher-laden-thb.example",
                "ada@xn--bcher-laden-thb.example",
            ),
            ("NFD", "jose\u{301}@example.org", "jose\u{301}@example.org"),
        ] {
            assert_eq!(
                with_email(email),
                Ok(CleanValue::Text(forwarded.into())),
                "{what}"
            );
        }
        // Every text field, not only the address.
        let body = r#"{"name":"Ada\u00ad","email":"a@b.co","country":"IT","consent":true}"#;
        assert_eq!(
            json(body).unwrap_err(),
            vec![("name".into(), "invalid_characters")]
        );
    }

    #[test]
    fn the_phase_answers_400_for_an_unreadable_body_and_422_with_every_field_error() {
        let campaign = campaign();
        let phase = |bytes: &'static [u8]| {
            validate(
                &campaign,
                Payload {
                    encoding: Encoding::Json,
                    bytes,
                },
                Some(shipped_notice()),
            )
        };
        let Flow::Break(unreadable) = phase(b"[1]") else {
            panic!("an array was validated")
        };
        assert_eq!(
            (
                unreadable.phase,
                unreadable.reply.status,
                unreadable.outcome.name()
            ),
            (Phase::Validate, 400, "malformed_body")
        );
        let Flow::Break(invalid) = phase(br#"{"name":"","email":"x"}"#) else {
            panic!("an invalid body was validated")
        };
        assert_eq!(invalid.reply.status, 422);
        let body: serde_json::Value = serde_json::from_str(&invalid.reply.body).unwrap();
        let fields: Vec<_> = body["errors"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["field"].as_str().unwrap())
            .collect();
        assert_eq!(fields, ["name", "email", "country", "consent"]);
        assert!(matches!(phase(VALID.as_bytes()), Flow::Continue(_)));
    }

    #[test]
    fn the_proof_of_work_travels_outside_the_fields() {
        // The solution is a header (`challenge`), so a body key of that name, or the old form
        // token's, is a field the form does not have, and nothing of it reaches the fields.
        for key in ["_form", "harbour-challenge", "_challenge"] {
            let body = format!(
                r#"{{"name":"A","email":"a@b.co","country":"US","consent":true,"{key}":"1.ab"}}"#
            );
            assert_eq!(
                json(&body).unwrap_err(),
                vec![(key.to_owned(), "unknown_field")],
                "{key}"
            );
        }
        assert!(json(VALID)
            .unwrap()
            .fields()
            .iter()
            .all(|(name, _)| !name.starts_with('_')));
    }

    #[test]
    fn honeypot_is_noted_and_dropped() {
        let s = json(r#"{"name":"A","email":"a@b.co","country":"US","consent":true,"remarks":"http://spam"}"#).unwrap();
        assert!(s.honeypot_filled());
        assert!(s.fields().iter().all(|(name, _)| name != "remarks"));
        let s = json(r#"{"name":"A","email":"a@b.co","country":"US","consent":true,"remarks":""}"#)
            .unwrap();
        assert!(!s.honeypot_filled());
    }

    #[test]
    fn form_encoding_decodes_like_browsers() {
        let body = "name=Zo%C3%AB+Smith&email=zoe%40example.com&country=DE&consent=on";
        let pairs = parse_body(Encoding::Form, body.as_bytes()).unwrap();
        let s = check(&campaign(), pairs).unwrap();
        assert_eq!(s.fields[0].1, CleanValue::Text("Zoë Smith".into()));
        assert_eq!(s.fields[1].1, CleanValue::Text("zoe@example.com".into()));
        assert_eq!(s.fields[3].1, CleanValue::Bool(true));
    }

    #[test]
    fn unreadable_bodies_are_body_errors() {
        let cases: Vec<(Encoding, &[u8], &str)> = vec![
            (Encoding::Json, b"\xff\xfe", "invalid_utf8"),
            (Encoding::Json, b"{\"name\":", "malformed_body"),
            (Encoding::Json, b"[1,2]", "malformed_body"),
            (Encoding::Json, b"\"text\"", "malformed_body"),
            (Encoding::Json, b"{\"a\":1,\"a\":2}", "duplicate_key"),
            (Encoding::Form, b"a=1&a=2", "duplicate_key"),
            (Encoding::Form, b"a=%zz", "malformed_body"),
            (Encoding::Form, b"a=%ff", "invalid_utf8"),
        ];
        for (encoding, body, code) in cases {
            assert_eq!(
                parse_body(encoding, body).unwrap_err().code(),
                code,
                "{body:?}"
            );
        }
        // Deep nesting is skipped without recursion and then refused as a value no field takes.
        let deep = format!("{{\"name\":{}{}}}", "[".repeat(5000), "]".repeat(5000));
        let pairs = parse_body(Encoding::Json, deep.as_bytes()).unwrap();
        assert_eq!(pairs, vec![("name".to_string(), RawValue::Nested)]);
        let deep_top = format!("{}{}", "[".repeat(5000), "]".repeat(5000));
        assert_eq!(
            parse_body(Encoding::Json, deep_top.as_bytes())
                .unwrap_err()
                .code(),
            "malformed_body"
        );
        let many: String = (0..100).map(|i| format!("k{i}=v&")).collect();
        assert_eq!(
            parse_body(Encoding::Form, many.as_bytes())
                .unwrap_err()
                .code(),
            "too_many_keys"
        );
    }

    #[test]
    fn a_body_that_is_not_one_object_is_told_so_and_broken_json_where() {
        let not_object = "the body must be one JSON object";
        let cases: [(&[u8], &str); 16] = [
            (b"1", not_object),
            (b"-1", not_object),
            (b"1.5", not_object),
            (b"1e400", "the body is not valid JSON (line 1 column 5)"),
            (b"18446744073709551616", not_object),
            (b"\"text\"", not_object),
            (b"true", not_object),
            (b"null", not_object),
            (b"[]", not_object),
            (b"[1,", not_object),
            (b"nul", "the body is not valid JSON (line 1 column 3)"),
            (b"\"text", "the body is not valid JSON (line 1 column 5)"),
            (b"", "the body is not valid JSON (line 1 column 0)"),
            (b"x", "the body is not valid JSON (line 1 column 1)"),
            (b"{} 1", "the body is not valid JSON (line 1 column 4)"),
            (
                b"{\"a\":\n1.}",
                "the body is not valid JSON (line 2 column 3)",
            ),
        ];
        for (body, detail) in cases {
            let error = parse_body(Encoding::Json, body).unwrap_err();
            assert_eq!(
                (error.code(), error.detail()),
                ("malformed_body", detail.to_string()),
                "{body:?}"
            );
        }
    }

    #[test]
    fn too_many_keys_in_json_is_its_own_error() {
        let keys: Vec<String> = (0..100).map(|i| format!("\"k{i}\":1")).collect();
        let many = format!("{{{}}}", keys.join(","));
        assert_eq!(
            parse_body(Encoding::Json, many.as_bytes()).unwrap_err(),
            BodyError::TooManyKeys
        );
    }
}

#[cfg(all(test, not(target_arch = "wasm32")))]
mod properties {
    use super::*;
    use harbour_policy::Policy;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512), json in any::<bool>()) {
            let campaign = Policy::shipped().unwrap().campaigns[0].clone();
            let encoding = if json { Encoding::Json } else { Encoding::Form };
            if let Ok(pairs) = parse_body(encoding, &bytes) {
                let _ = check(&campaign, pairs);
            }
        }
    }
}
