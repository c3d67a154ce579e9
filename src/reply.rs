//! Replies to the visitor, built as plain data for the edge shell to send.
//!
//! Refusals are RFC 9457 problem details (`application/problem+json`) with a stable `code` a
//! page can act on. The detail never carries internal error text: configuration and origin
//! trouble are logged, the visitor gets a generic sentence and, where retrying helps, a
//! `Retry-After`.

use serde::Serialize;
use serde_json::{json, Value};

pub const PROBLEM_JSON: &str = "application/problem+json";
pub const JSON: &str = "application/json";

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    pub body: String,
    /// The problem's machine code, kept beside the body so logs need not parse it back.
    #[serde(skip)]
    pub code: Option<&'static str>,
}

impl Reply {
    pub fn json(status: u16, body: &Value) -> Reply {
        Reply {
            status,
            headers: vec![
                ("content-type", JSON.into()),
                ("cache-control", "no-store".into()),
            ],
            body: body.to_string(),
            code: None,
        }
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn with_header(mut self, name: &'static str, value: impl Into<String>) -> Reply {
        self.headers.push((name, value.into()));
        self
    }

    /// The problem's machine code, for logs.
    pub fn code(&self) -> Option<&'static str> {
        self.code
    }
}

/// A problem detail; `extra` members are merged into the object.
pub fn problem(
    status: u16,
    code: &'static str,
    title: &str,
    detail: &str,
    extra: Option<Value>,
) -> Reply {
    let mut body = json!({
        "type": format!("urn:harbour:problem:{code}"),
        "title": title,
        "status": status,
        "code": code,
        "detail": detail,
    });
    if let (Value::Object(target), Some(Value::Object(more))) = (&mut body, extra) {
        target.extend(more);
    }
    Reply {
        status,
        headers: vec![
            ("content-type", PROBLEM_JSON.into()),
            ("cache-control", "no-store".into()),
        ],
        body: body.to_string(),
        code: Some(code),
    }
}

/// Seconds for `Retry-After` (RFC 9110 §10.2.3): whole seconds, rounded up, at least one.
pub fn retry_after_seconds(wait_ms: u64) -> u64 {
    wait_ms.div_ceil(1000).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn problem_body_snapshot() {
        let reply = problem(
            422,
            "validation_failed",
            "The submission has errors",
            "1 field needs attention",
            Some(json!({"errors": [{"field": "email", "code": "invalid_email"}]})),
        );
        assert_eq!(reply.status, 422);
        assert_eq!(reply.header("Content-Type"), Some(PROBLEM_JSON));
        assert_eq!(
            reply.body,
            r#"{"code":"validation_failed","detail":"1 field needs attention","errors":[{"code":"invalid_email","field":"email"}],"status":422,"title":"The submission has errors","type":"urn:harbour:problem:validation_failed"}"#
        );
        assert_eq!(reply.code(), Some("validation_failed"));
    }

    #[test]
    fn retry_after_rounds_up() {
        assert_eq!(retry_after_seconds(0), 1);
        assert_eq!(retry_after_seconds(1), 1);
        assert_eq!(retry_after_seconds(1000), 1);
        assert_eq!(retry_after_seconds(1001), 2);
        assert_eq!(retry_after_seconds(12_000), 12);
    }
}
