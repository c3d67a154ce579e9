//! The forwarded entry: the body of a forward, written by the edge and read by the origin.
//!
//! ```text
//! {"campaign":..,"fields":{..},"notice":{"locale":..,"version":..}|null,"received_at_ms":..,
//!  "region":..,"request_id":..,"signals":{"basis":..,"declared_country":..|null,"platform_country":..}}
//! ```
//!
//! `notice` is the record of consent: the version of the campaign's notice (its texts and consent
//! labels) the visitor was shown, and in which language; the edge takes an entry only under the
//! current version.
//!
//! `fields` is the cleaned submission as a canonical JSON object (keys sorted), so the same
//! content is the same text; both country signals travel so a store keeps what placed the entry.
//! The signature covers the body's digest, so campaign, request id and receipt time need no
//! headers of their own.

use harbour_policy::text::{push_quoted, push_u64};
use serde_json::Value;

use crate::response::Code;

/// What placed an entry in its region.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Signals<'a> {
    /// How the region was chosen (the core's `Basis`, by name).
    pub basis: &'a str,
    /// The country the visitor chose in the form, if the campaign asks.
    pub declared_country: Option<&'a str>,
    /// The country the platform saw the connection from (or its marker for none).
    pub platform_country: &'a str,
}

/// Which notice the visitor was shown.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NoticeRecord<'a> {
    pub locale: &'a str,
    pub version: &'a str,
}

/// A forward's body, as the edge writes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EntryBody<'a> {
    pub campaign: &'a str,
    /// The cleaned fields as a canonical JSON object.
    pub fields_json: &'a str,
    pub notice: Option<NoticeRecord<'a>>,
    pub received_at_ms: u64,
    pub region: &'a str,
    pub request_id: &'a str,
    pub signals: Signals<'a>,
}

impl EntryBody<'_> {
    /// Written directly rather than through a `serde_json::Value` tree: this is the edge's hot
    /// path, and building the tree costs more in wasm than everything else the edge decides.
    pub fn write(&self) -> String {
        let mut out = String::with_capacity(256 + self.fields_json.len());
        out.push_str("{\"campaign\":");
        push_quoted(&mut out, self.campaign);
        out.push_str(",\"fields\":");
        out.push_str(self.fields_json);
        out.push_str(",\"notice\":");
        match self.notice {
            Some(notice) => {
                out.push_str("{\"locale\":");
                push_quoted(&mut out, notice.locale);
                out.push_str(",\"version\":");
                push_quoted(&mut out, notice.version);
                out.push('}');
            }
            None => out.push_str("null"),
        }
        out.push_str(",\"received_at_ms\":");
        push_u64(&mut out, self.received_at_ms);
        out.push_str(",\"region\":");
        push_quoted(&mut out, self.region);
        out.push_str(",\"request_id\":");
        push_quoted(&mut out, self.request_id);
        out.push_str(",\"signals\":{\"basis\":");
        push_quoted(&mut out, self.signals.basis);
        out.push_str(",\"declared_country\":");
        match self.signals.declared_country {
            Some(country) => push_quoted(&mut out, country),
            None => out.push_str("null"),
        }
        out.push_str(",\"platform_country\":");
        push_quoted(&mut out, self.signals.platform_country);
        out.push_str("}}");
        out
    }
}

/// A forward's body as an origin reads it.
#[derive(Clone, Debug, PartialEq)]
pub struct ReceivedEntry {
    pub campaign: String,
    /// The region the body is tagged for (the origin compares it with its own).
    pub region: Option<String>,
    /// The `fields` object.
    pub fields: Value,
    pub platform_country: String,
    pub declared_country: Option<String>,
    /// The notice the visitor was shown: `(locale, version)`.
    pub notice: Option<(String, String)>,
    /// The whole body, as stored.
    pub payload: Value,
}

impl ReceivedEntry {
    /// Reads a body: `MalformedBody` if it is not JSON, `MissingCampaign` or `MissingFields` if
    /// it lacks either.
    pub fn read(body: &[u8]) -> Result<ReceivedEntry, Code> {
        let payload: Value = serde_json::from_slice(body).map_err(|_| Code::MalformedBody)?;
        let text = |value: Option<&Value>| value.and_then(Value::as_str).map(str::to_owned);
        let campaign = text(payload.get("campaign"))
            .filter(|c| !c.is_empty())
            .ok_or(Code::MissingCampaign)?;
        let fields = payload
            .get("fields")
            .filter(|f| f.is_object())
            .cloned()
            .ok_or(Code::MissingFields)?;
        let signals = payload.get("signals");
        let signal = |name: &str| text(signals.and_then(|s| s.get(name)));
        let notice = payload.get("notice");
        let notice = text(notice.and_then(|n| n.get("locale")))
            .zip(text(notice.and_then(|n| n.get("version"))));
        Ok(ReceivedEntry {
            campaign,
            region: text(payload.get("region")),
            fields,
            platform_country: signal("platform_country").unwrap_or_default(),
            declared_country: signal("declared_country"),
            notice,
            payload,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn an_origin_reads_what_the_edge_writes() {
        let body = EntryBody {
            campaign: "c\"1",
            fields_json: r#"{"email":"ada@example.org","name":"Zoë"}"#,
            notice: Some(NoticeRecord {
                locale: "de",
                version: "0f1e",
            }),
            received_at_ms: 7,
            region: "cn",
            request_id: "r1",
            signals: Signals {
                basis: "declared_stricter",
                declared_country: Some("CN"),
                platform_country: "IT",
            },
        }
        .write();
        let parsed: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(
            parsed,
            json!({"campaign": "c\"1", "region": "cn", "request_id": "r1", "received_at_ms": 7,
                   "signals": {"platform_country": "IT", "declared_country": "CN", "basis": "declared_stricter"},
                   "fields": {"email": "ada@example.org", "name": "Zoë"},
                   "notice": {"locale": "de", "version": "0f1e"}})
        );
        // Keys in sorted order: the text serde_json's map would give.
        assert_eq!(body, parsed.to_string());
        let read = ReceivedEntry::read(body.as_bytes()).unwrap();
        assert_eq!(read.campaign, "c\"1");
        assert_eq!(read.region.as_deref(), Some("cn"));
        assert_eq!(read.fields["name"], "Zoë");
        assert_eq!(
            (
                read.platform_country.as_str(),
                read.declared_country.as_deref()
            ),
            ("IT", Some("CN"))
        );
        assert_eq!(read.notice, Some(("de".to_owned(), "0f1e".to_owned())));
    }

    #[test]
    fn a_body_without_its_parts_is_refused_by_name() {
        let read = |body: &str| ReceivedEntry::read(body.as_bytes()).map(|_| ());
        assert_eq!(read("not json"), Err(Code::MalformedBody));
        assert_eq!(read(r#"{"fields":{}}"#), Err(Code::MissingCampaign));
        assert_eq!(
            read(r#"{"campaign":"","fields":{}}"#),
            Err(Code::MissingCampaign)
        );
        assert_eq!(
            read(r#"{"campaign":"c","fields":[]}"#),
            Err(Code::MissingFields)
        );
        assert_eq!(read(r#"{"campaign":"c","fields":{}}"#), Ok(()));
    }
}
