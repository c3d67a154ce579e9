//! What an origin responds to a forward, written by the origin and read by the edge:
//!
//! | status | body | meaning |
//! |---|---|---|
//! | 201 | `{"receipt":{"id","region","stored_at_ms"}}` | stored |
//! | 200 | `{"receipt":{...},"replayed":true}` | this key was stored before with the same fields: the first receipt |
//! | 409 | `{"code":"idempotency_key_reused"}` | this key was stored before with other fields |
//! | 409 | `{"code":"already_entered"}` | another key holds this person's entry in the campaign |
//! | 503 | `{"code":"origin_busy","retry_after_ms":N}` | full, stored nothing: spare this origin for N ms |
//! | 503 | `{"code":"storage_unavailable"}` | the store cannot answer: try the region's next origin |
//! | 422 | `{"code":"invalid_identifying_field","field":NAME}` | the field's value identifies no one |
//! | 400, 401, 421 | `{"code":...}` | refused (see [`Code`]) |
//!
//! The edge reads only what it needs ([`code`], [`receipt`], [`busy_interval_ms`], [`field`]) through
//! [`ResponseJson`], which parses like serde_json's `Value` without its tree in the worker.

use harbour_policy::text::{push_quoted, push_u64};

/// An origin's answer code (the `code` member), each written and read through this one name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Code {
    /// 503: full, stored nothing.
    OriginBusy,
    /// 503: the store could not answer.
    StorageUnavailable,
    /// 409: another key already holds an entry from the same person in this campaign.
    AlreadyEntered,
    /// 409: the key was seen before with different fields.
    IdempotencyKeyReused,
    /// 421: tagged (and signed) for another region.
    WrongRegion,
    /// 401: signature missing, malformed or wrong.
    BadSignature,
    /// 401: timestamp outside the window.
    StaleTimestamp,
    /// 400: the body is not JSON.
    MalformedBody,
    /// 400: the body names no campaign.
    MissingCampaign,
    /// 400: the body has no fields object.
    MissingFields,
    /// 400: a campaign takes one entry per person and this origin has no person key.
    NoPersonKey,
    /// 400: a field that identifies a person is missing or of the wrong type.
    MissingIdentifyingField,
    /// 422: a field that identifies a person has a value no person can be told by (an invisible
    /// character, not an address; see `harbour_policy::identity`). The edge refuses what it can
    /// tell without Unicode's data; the origin's fold refuses the rest, naming the field.
    InvalidIdentifyingField,
}

impl Code {
    pub const ALL: [Code; 13] = [
        Code::OriginBusy,
        Code::StorageUnavailable,
        Code::AlreadyEntered,
        Code::IdempotencyKeyReused,
        Code::WrongRegion,
        Code::BadSignature,
        Code::StaleTimestamp,
        Code::MalformedBody,
        Code::MissingCampaign,
        Code::MissingFields,
        Code::NoPersonKey,
        Code::MissingIdentifyingField,
        Code::InvalidIdentifyingField,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            Code::OriginBusy => "origin_busy",
            Code::StorageUnavailable => "storage_unavailable",
            Code::AlreadyEntered => "already_entered",
            Code::IdempotencyKeyReused => "idempotency_key_reused",
            Code::WrongRegion => "wrong_region",
            Code::BadSignature => "bad_signature",
            Code::StaleTimestamp => "stale_timestamp",
            Code::MalformedBody => "malformed_body",
            Code::MissingCampaign => "missing_campaign",
            Code::MissingFields => "missing_fields",
            Code::NoPersonKey => "no_person_key",
            Code::MissingIdentifyingField => "missing_identifying_field",
            Code::InvalidIdentifyingField => "invalid_identifying_field",
        }
    }

    /// The HTTP status an origin answers with this code.
    pub const fn status(self) -> u16 {
        match self {
            Code::OriginBusy | Code::StorageUnavailable => 503,
            Code::AlreadyEntered | Code::IdempotencyKeyReused => 409,
            Code::WrongRegion => 421,
            Code::BadSignature | Code::StaleTimestamp => 401,
            Code::MalformedBody
            | Code::MissingCampaign
            | Code::MissingFields
            | Code::NoPersonKey
            | Code::MissingIdentifyingField => 400,
            Code::InvalidIdentifyingField => 422,
        }
    }

    pub fn parse(text: &str) -> Option<Code> {
        Code::ALL.into_iter().find(|code| code.as_str() == text)
    }
}

/// A stored entry's receipt as an origin gives it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Receipt {
    /// `{region}-{16 hex}` (see `receipt::id`).
    pub id: String,
    pub region: String,
    pub stored_at_ms: u64,
}

/// The body of a 201 (`replayed` false) or of a 200 that replays the first receipt.
pub fn receipt_body(receipt: &Receipt, replayed: bool) -> String {
    let mut out = String::with_capacity(96 + receipt.id.len());
    out.push_str("{\"receipt\":{\"id\":");
    push_quoted(&mut out, &receipt.id);
    out.push_str(",\"region\":");
    push_quoted(&mut out, &receipt.region);
    out.push_str(",\"stored_at_ms\":");
    push_u64(&mut out, receipt.stored_at_ms);
    out.push('}');
    if replayed {
        out.push_str(",\"replayed\":true");
    }
    out.push('}');
    out
}

/// The body of an answer that carries only its code.
pub fn code_body(code: Code) -> String {
    let mut out = String::from("{\"code\":");
    push_quoted(&mut out, code.as_str());
    out.push('}');
    out
}

/// The body of an answer about one field (`invalid_identifying_field`).
pub fn field_body(code: Code, field: &str) -> String {
    let mut out = String::from("{\"code\":");
    push_quoted(&mut out, code.as_str());
    out.push_str(",\"field\":");
    push_quoted(&mut out, field);
    out.push('}');
    out
}

/// The body of a busy answer: spare this origin for `retry_after_ms`.
pub fn busy_body(retry_after_ms: u64) -> String {
    let mut out = String::from("{\"code\":");
    push_quoted(&mut out, Code::OriginBusy.as_str());
    out.push_str(",\"retry_after_ms\":");
    push_u64(&mut out, retry_after_ms);
    out.push('}');
    out
}

/// The `code` of an origin's answer, if it has a known one.
pub fn code(body: &str) -> Option<Code> {
    Code::parse(ResponseJson::read(body)?.get("code")?.as_str()?)
}

/// The `field` an origin's answer names, if any.
pub fn field(body: &str) -> Option<String> {
    ResponseJson::read(body)?
        .get("field")?
        .as_str()
        .map(str::to_owned)
}

/// The receipt id an origin's answer gives, if the answer holds one of `region`: an answer that
/// claims another region is no receipt, nor is an id a visitor could not be shown as it is
/// (empty, over 100 bytes, or other than ASCII letters, digits, `-` and `_`).
pub fn receipt(body: &str, region: &str) -> Option<String> {
    let value = ResponseJson::read(body)?;
    let receipt = value.get("receipt")?;
    let id = receipt.get("id")?.as_str()?;
    let plain = !id.is_empty()
        && id.len() <= 100
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_".contains(&b));
    (receipt.get("region")?.as_str()? == region && plain).then(|| id.to_owned())
}

/// `Some` when `body` is a busy answer, with the interval it asks for (`retry_after_ms`, or
/// `retry_after_s` in seconds), if it names one.
pub fn busy_interval_ms(body: &str) -> Option<Option<u64>> {
    // Cheap test first: most 503s are not busy answers.
    if !body.contains(Code::OriginBusy.as_str()) {
        return None;
    }
    let value = ResponseJson::read(body)?;
    if value.get("code")?.as_str()? != Code::OriginBusy.as_str() {
        return None;
    }
    Some(
        match (value.get("retry_after_ms"), value.get("retry_after_s")) {
            (Some(ms), _) => ms.as_u64(),
            (None, Some(s)) => s.as_u64().map(|s| s.saturating_mul(1000)),
            (None, None) => None,
        },
    )
}

/// An origin's JSON answer, holding only what harbour reads from one: strings, whole numbers
/// from 0 and objects (a repeated key: the last one counts, as in a map); anything else is
/// `Other`. Parsed by serde_json like a `Value` (same syntax, same nesting limit), without the
/// `Value` tree and its code in the worker.
#[derive(Debug, PartialEq)]
pub enum ResponseJson {
    Text(String),
    Whole(u64),
    Object(Vec<(String, ResponseJson)>),
    Other,
}

impl ResponseJson {
    /// `None` if `body` is not JSON.
    pub fn read(body: &str) -> Option<ResponseJson> {
        serde_json::from_str(body).ok()
    }

    /// The value under `key`, if this is an object that has it.
    pub fn get(&self, key: &str) -> Option<&ResponseJson> {
        match self {
            ResponseJson::Object(pairs) => {
                pairs.iter().rev().find(|(k, _)| k == key).map(|(_, v)| v)
            }
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            ResponseJson::Text(text) => Some(text),
            _ => None,
        }
    }

    pub fn as_u64(&self) -> Option<u64> {
        match self {
            ResponseJson::Whole(n) => Some(*n),
            _ => None,
        }
    }
}

impl<'de> serde::Deserialize<'de> for ResponseJson {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(ResponseVisitor)
    }
}

/// Takes every JSON type (serde's default visits would describe a refused one, which brings
/// float formatting into the worker).
struct ResponseVisitor;

impl<'de> serde::de::Visitor<'de> for ResponseVisitor {
    type Value = ResponseJson;
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E>(self, _: bool) -> Result<ResponseJson, E> {
        Ok(ResponseJson::Other)
    }
    fn visit_i64<E>(self, n: i64) -> Result<ResponseJson, E> {
        Ok(u64::try_from(n).map_or(ResponseJson::Other, ResponseJson::Whole))
    }
    fn visit_u64<E>(self, n: u64) -> Result<ResponseJson, E> {
        Ok(ResponseJson::Whole(n))
    }
    fn visit_f64<E>(self, _: f64) -> Result<ResponseJson, E> {
        Ok(ResponseJson::Other)
    }
    fn visit_str<E>(self, text: &str) -> Result<ResponseJson, E> {
        Ok(ResponseJson::Text(text.to_owned()))
    }
    fn visit_string<E>(self, text: String) -> Result<ResponseJson, E> {
        Ok(ResponseJson::Text(text))
    }
    fn visit_unit<E>(self) -> Result<ResponseJson, E> {
        Ok(ResponseJson::Other)
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<ResponseJson, A::Error> {
        while seq.next_element::<ResponseJson>()?.is_some() {}
        Ok(ResponseJson::Other)
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<ResponseJson, A::Error> {
        let mut pairs = Vec::new();
        while let Some(pair) = map.next_entry::<String, ResponseJson>()? {
            pairs.push(pair);
        }
        Ok(ResponseJson::Object(pairs))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    #[test]
    fn codes_read_back_as_written() {
        for code in Code::ALL {
            assert_eq!(Code::parse(code.as_str()), Some(code));
            assert_eq!(self::code(&code_body(code)), Some(code));
        }
        assert_eq!(Code::parse("teapot"), None);
    }

    #[test]
    fn an_answer_about_a_field_names_it() {
        let body = field_body(Code::InvalidIdentifyingField, "e\"mail");
        assert_eq!(
            body,
            r#"{"code":"invalid_identifying_field","field":"e\"mail"}"#
        );
        assert_eq!(code(&body), Some(Code::InvalidIdentifyingField));
        assert_eq!(field(&body).as_deref(), Some("e\"mail"));
        assert_eq!(field(&code_body(Code::AlreadyEntered)), None);
        assert_eq!(field(r#"{"field":7}"#), None);
    }

    #[test]
    fn receipts_and_busy_answers_read_back_as_written() {
        let stored = Receipt {
            id: crate::receipt::id("eu", 7),
            region: "eu".into(),
            stored_at_ms: 12,
        };
        for replayed in [false, true] {
            let body = receipt_body(&stored, replayed);
            let value: Value = serde_json::from_str(&body).unwrap();
            assert_eq!(value["receipt"]["stored_at_ms"], 12);
            assert_eq!(value.get("replayed").is_some(), replayed);
            assert_eq!(receipt(&body, "eu"), Some(stored.id.clone()));
            assert_eq!(receipt(&body, "cn"), None, "another region's receipt");
        }
        assert_eq!(busy_interval_ms(&busy_body(250)), Some(Some(250)));
        assert_eq!(
            busy_interval_ms(r#"{"code":"origin_busy","retry_after_s":2}"#),
            Some(Some(2000))
        );
        assert_eq!(busy_interval_ms(r#"{"code":"origin_busy"}"#), Some(None));
        assert_eq!(busy_interval_ms(&code_body(Code::StorageUnavailable)), None);
        assert_eq!(busy_interval_ms(r#"{"detail":"origin_busy"}"#), None);
    }

    #[test]
    fn a_receipt_id_must_be_plain_text() {
        let ok = r#"{"receipt":{"id":"eu-000001","region":"eu"}}"#;
        assert_eq!(receipt(ok, "eu").as_deref(), Some("eu-000001"));
        assert!(receipt(r#"{"receipt":{"id":"a\"b","region":"eu"}}"#, "eu").is_none());
        assert!(receipt("not json", "eu").is_none());
    }

    #[test]
    fn answer_json_reads_what_a_value_reads() {
        let deep = format!(
            "{{\"code\":\"x\",\"n\":{}{}}}",
            "[".repeat(200),
            "]".repeat(200)
        );
        let bodies = [
            r#"{"code":"origin_busy","retry_after_ms":250,"retry_after_s":-1}"#,
            r#"{"code":1,"retry_after_ms":2.5,"retry_after_s":18446744073709551615}"#,
            r#"{"code":"a","code":"b","receipt":{"id":"x","region":"eu"},"receipt":{"id":"y"}}"#,
            r#"{"code":"a","code":null,"receipt":[{"id":"x"}],"extra":{"code":"inner"}}"#,
            r#"{"receipt":{"id":"eu-1","region":"eu","more":[1,{"a":true}]},"retry_after_s":3}"#,
            r#"["code","origin_busy"]"#,
            r#""origin_busy""#,
            r#"{"code":"\u00e9\n"}"#,
            r#"{"code":"a"} trailing"#,
            r#"{"code":"a""#,
            "",
            &deep,
        ];
        for body in bodies {
            let ours = ResponseJson::read(body);
            let value: Option<Value> = serde_json::from_str(body).ok();
            assert_eq!(ours.is_some(), value.is_some(), "{body}");
            let (Some(ours), Some(value)) = (ours, value) else {
                continue;
            };
            for key in ["code", "retry_after_ms", "retry_after_s"] {
                let theirs = value.get(key);
                assert_eq!(ours.get(key).is_some(), theirs.is_some(), "{body} {key}");
                assert_eq!(
                    ours.get(key).and_then(ResponseJson::as_str),
                    theirs.and_then(Value::as_str),
                    "{body} {key}"
                );
                assert_eq!(
                    ours.get(key).and_then(ResponseJson::as_u64),
                    theirs.and_then(Value::as_u64),
                    "{body} {key}"
                );
            }
            for key in ["id", "region"] {
                let theirs = value
                    .get("receipt")
                    .and_then(|r| r.get(key))
                    .and_then(Value::as_str);
                let read = ours
                    .get("receipt")
                    .and_then(|r| r.get(key))
                    .and_then(ResponseJson::as_str);
                assert_eq!(read, theirs, "{body} receipt.{key}");
            }
        }
    }
}
