//! A submission in the form it is forwarded and stored under: its cleaned fields as canonical
//! JSON, and its idempotency key (the visitor's when well formed, else one derived from the
//! content, so a resubmission that lost its key still cannot create a second row).

use harbour_contract::signature::sha256_hex;
use harbour_policy::field::CleanValue;
use harbour_policy::text::{push_quoted, push_u64};

use crate::phase::challenge::is_well_formed_key;
use crate::phase::validate::Submission;

/// The same campaign and the same cleaned content give the same key, so a resubmission that lost
/// its key still cannot create a second row.
pub fn derive_key(campaign: &str, canonical_fields: &str) -> String {
    let digest = sha256_hex(format!("{campaign}\n{canonical_fields}").as_bytes());
    format!("h-{}", &digest[..32])
}

/// The cleaned fields as a JSON object with keys in sorted order: a canonical form, so the
/// same content always gives the same derived key.
pub fn fields_json(submission: &Submission) -> String {
    // A handful of fields: an insertion sort keeps a general sort out of the wasm.
    let mut fields: Vec<&(String, CleanValue)> = Vec::with_capacity(submission.fields().len());
    for field in submission.fields() {
        let at = fields
            .iter()
            .position(|f| f.0 > field.0)
            .unwrap_or(fields.len());
        fields.insert(at, field);
    }
    let mut out = String::from("{");
    for (i, (name, value)) in fields.into_iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        push_quoted(&mut out, name);
        out.push(':');
        match value {
            CleanValue::Text(t) => push_quoted(&mut out, t),
            CleanValue::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            CleanValue::Integer(n) => {
                if *n < 0 {
                    out.push('-');
                }
                push_u64(&mut out, n.unsigned_abs());
            }
        }
    }
    out.push('}');
    out
}

/// A submission in the form it is forwarded and stored under: its canonical fields and its
/// idempotency key (the client's when well formed, else one derived from the content).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub fields_json: String,
    pub key: String,
}

impl Entry {
    pub fn new(campaign: &str, submission: &Submission, client_key: Option<&str>) -> Entry {
        let fields_json = fields_json(submission);
        let key = match client_key.filter(|k| is_well_formed_key(k)) {
            Some(k) => k.to_owned(),
            None => derive_key(campaign, &fields_json),
        };
        Entry { fields_json, key }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    #[test]
    fn key_shapes() {
        assert!(is_well_formed_key("0b6a3c0e-5f55-4c1e-9b1a-2f1d3c4b5a69"));
        assert!(!is_well_formed_key("short"));
        assert!(!is_well_formed_key("has space in it 1234"));
        assert!(!is_well_formed_key(&"a".repeat(65)));
        assert_eq!(derive_key("c", "{}"), derive_key("c", "{}"));
        assert_ne!(derive_key("c", "{}"), derive_key("d", "{}"));
        assert!(is_well_formed_key(&derive_key("c", "{}")));
    }

    #[test]
    fn written_json_matches_what_serde_json_makes() {
        let mut raw: Value = serde_json::from_str(harbour_policy::SHIPPED_POLICY).unwrap();
        raw["campaigns"][0]["one_entry_per"] = json!([]);
        raw["campaigns"][0]["fields"] = json!([
            {"name": "name", "label": "N", "type": "string"},
            {"name": "consent", "label": "C", "type": "bool"},
            {"name": "age", "label": "A", "type": "integer"},
        ]);
        // Translated labels would name the fields replaced here.
        raw["campaigns"][0]["texts"] = json!({});
        let policy = harbour_policy::Policy::parse(&raw.to_string()).unwrap();
        let body = json!({"name": "Zoë \"Z\" \\ <b>\u{7}", "consent": true, "age": -42});
        let pairs = crate::phase::validate::parse_body(
            crate::phase::request::Encoding::Json,
            body.to_string().as_bytes(),
        )
        .unwrap();
        // The control character is refused by validation; the writer must still escape it.
        assert!(crate::phase::validate::check(&policy.campaigns[0], pairs).is_err());
        let body = json!({"name": "Zoë \"Z\" \\ <b>", "consent": true, "age": -42});
        let pairs = crate::phase::validate::parse_body(
            crate::phase::request::Encoding::Json,
            body.to_string().as_bytes(),
        )
        .unwrap();
        let submission = crate::phase::validate::check(&policy.campaigns[0], pairs).unwrap();
        let written = fields_json(&submission);
        let parsed: Value = serde_json::from_str(&written).unwrap();
        assert_eq!(
            parsed,
            json!({"name": "Zoë \"Z\" \\ <b>", "consent": true, "age": -42})
        );
        // Sorted keys: the same canonical text serde_json's map would give.
        assert_eq!(written, parsed.to_string());
    }
}
