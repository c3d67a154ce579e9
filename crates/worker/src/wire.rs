//! The line protocol between `shim.js` and the shell, defined once, here.
//!
//! Into Rust: the request's text facts as one string ([`REQUEST_FACTS`], in order, separated by
//! a newline, [`ABSENT`] for a fact the request lacks), and small numbers ([`CODES`]) for a body's
//! state and a binding's result. Out of Rust: every decision is lines of text read in order, no
//! JSON to parse per request: the number of notes (log lines of state changes, written at once), the
//! notes, the decision's kind, then its fields ([`DECISIONS`]), one a line; a `body` is the rest of
//! the answer, verbatim (bodies are never escaped or scanned).
//!
//! The JS side is generated from these tables ([`js_protocol`]) into a marked block of
//! `shim.js`; a test fails when the block differs, and the writers below are checked against the
//! tables by reading their output back with [`parse_decision`], which follows the same tables.
//! Plain text over plain data, so it is tested natively.

use harbour_contract::points::ANALYTICS_BINDING;
use harbour_core::attempt::Attempt;
use harbour_core::journal::Lines;
use harbour_core::reply::Reply;
use harbour_policy::text::push_u64;
use serde_json::{json, Value};

/// Separates the text facts in `decide`'s `request` argument. Neither it nor [`ABSENT`] can
/// occur in a method, a serialised URL or a header value (the Fetch standard forbids both).
pub const FACT_SEPARATOR: char = '\n';
/// A fact the request does not have (no such header, no `cf.country`).
pub const ABSENT: &str = "\0";

/// The request's text facts, in order: each one's name and the JS expression `shim.js` reads it
/// with (`request`, and `headers` for `request.headers`).
pub const REQUEST_FACTS: [(&str, &str); 9] = [
    ("method", "request.method"),
    ("url", "request.url"),
    ("content_type", "headers.get(\"content-type\")"),
    ("country", "request.cf?.country"),
    ("client_ip", "headers.get(\"cf-connecting-ip\")"),
    ("idempotency_key", "headers.get(\"idempotency-key\")"),
    ("challenge", "headers.get(\"harbour-challenge\")"),
    ("origin", "headers.get(\"origin\")"),
    ("notice", "headers.get(\"harbour-notice\")"),
];

/// The numbers the shim passes for a body's state (`decide`) and a binding's answer
/// (`consulted`).
pub const CODES: [(&str, u8); 8] = [
    ("BODY_UNREAD", BODY_UNREAD),
    ("BODY_BYTES", BODY_BYTES),
    ("BODY_TOO_LARGE", BODY_TOO_LARGE),
    ("BODY_INCOMPLETE", BODY_INCOMPLETE),
    ("LOCATION_ADMITTED", LOCATION_ADMITTED),
    ("LOCATION_REFUSED", LOCATION_REFUSED),
    ("LOCATION_FAILED", LOCATION_FAILED),
    ("LOCATION_TIMED_OUT", LOCATION_TIMED_OUT),
];
pub const BODY_UNREAD: u8 = 0;
pub const BODY_BYTES: u8 = 1;
pub const BODY_TOO_LARGE: u8 = 2;
pub const BODY_INCOMPLETE: u8 = 3;
pub const LOCATION_ADMITTED: u8 = 1;
pub const LOCATION_REFUSED: u8 = 2;
pub const LOCATION_FAILED: u8 = 3;
pub const LOCATION_TIMED_OUT: u8 = 4;

/// How a field is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Field {
    /// One line of text.
    Text,
    /// One line, a whole number.
    Number,
    /// A count, then each header's name and value, a line each.
    Headers,
    /// The rest of the answer, verbatim; always last.
    Body,
}

/// A decision's kind and its fields, in the order they are written.
pub struct DecisionKind {
    pub kind: &'static str,
    /// `(name, how)`; the names are the JS reader's property names.
    pub fields: &'static [(&'static str, Field)],
}

/// Every decision `decide`, `consulted`, `conclude` and `orphaned` give.
pub const DECISIONS: [DecisionKind; 4] = [
    // The visitor's reply, its decision's log line (or an empty line), a summary (or one), the
    // data points due for the Analytics Engine binding (a JSON array of `writeDataPoint`
    // arguments, or an empty line), and how long to wait before sending it (0 but for a bot's
    // decoy).
    DecisionKind {
        kind: "reply",
        fields: &[
            ("status", Field::Number),
            ("headers", Field::Headers),
            ("log", Field::Text),
            ("summary", Field::Text),
            ("points", Field::Text),
            ("delayMs", Field::Number),
            ("body", Field::Body),
        ],
    },
    // Ask the location's binding; then call `consulted` with the hold and the answer.
    DecisionKind {
        kind: "consult",
        fields: &[
            ("hold", Field::Number),
            ("binding", Field::Text),
            ("key", Field::Text),
            ("timeoutMs", Field::Number),
        ],
    },
    // The first attempt of a forward; its headers and body serve every attempt.
    DecisionKind {
        kind: "forward",
        fields: &[
            ("key", Field::Text),
            ("url", Field::Text),
            ("timeoutMs", Field::Number),
            ("ticket", Field::Number),
            ("headers", Field::Headers),
            ("body", Field::Body),
        ],
    },
    // A further attempt of the same forward.
    DecisionKind {
        kind: "retry",
        fields: &[
            ("url", Field::Text),
            ("timeoutMs", Field::Number),
            ("ticket", Field::Number),
        ],
    },
];

/// `decide`'s `request` argument from its facts, in [`REQUEST_FACTS`] order (as `shim.js`
/// builds it; for tests and tools).
pub fn request_line(facts: [Option<&str>; 9]) -> String {
    let mut line = String::with_capacity(256);
    for (i, fact) in facts.iter().enumerate() {
        if i > 0 {
            line.push(FACT_SEPARATOR);
        }
        line.push_str(fact.unwrap_or(ABSENT));
    }
    line
}

/// The facts of a request line; missing trailing ones are absent.
pub fn request_facts(line: &str) -> [Option<&str>; 9] {
    let mut facts = [None; 9];
    for (slot, value) in facts.iter_mut().zip(line.split(FACT_SEPARATOR)) {
        *slot = (value != ABSENT).then_some(value);
    }
    facts
}

/// A decision being written, field by field, in the order of its [`DecisionKind`].
pub struct Wire(String);

impl Wire {
    /// Starts an answer of `kind` after its notes.
    pub fn new(notes: &[String], kind: &str, capacity: usize) -> Wire {
        let notes_len: usize = notes.iter().map(|note| note.len() + 1).sum();
        let mut out = Wire(String::with_capacity(capacity + notes_len));
        out.number(notes.len() as u64);
        for note in notes {
            out.text(note);
        }
        out.text(kind);
        out
    }

    /// A text field and its line end. No field may hold a newline, or the shim would read the
    /// rest of the answer out of step. None can (header values, URLs and keys are checked where
    /// they are made; log lines are JSON); should one ever, it is written with a space instead.
    pub fn text(&mut self, value: &str) {
        if value.contains('\n') {
            self.0.push_str(&value.replace('\n', " "));
        } else {
            self.0.push_str(value);
        }
        self.0.push('\n');
    }

    pub fn number(&mut self, value: u64) {
        push_u64(&mut self.0, value);
        self.0.push('\n');
    }

    /// URL, timeout and ticket of an origin attempt.
    pub fn attempt(&mut self, attempt: &Attempt, ticket: u64) {
        self.text(&attempt.url);
        self.number(attempt.timeout_ms);
        self.number(ticket);
    }

    /// The number of headers, then each one's name and value.
    pub fn headers(&mut self, headers: &[(&'static str, String)]) {
        self.number(headers.len() as u64);
        for (name, value) in headers {
            self.text(name);
            self.text(value);
        }
    }

    /// The answer, nothing after its fields.
    pub fn end(self) -> String {
        self.0
    }

    /// The answer with `body`, verbatim, after its fields.
    pub fn end_with_body(mut self, body: &str) -> String {
        self.0.push_str(body);
        self.0
    }
}

/// A `reply` answer.
pub fn reply_text(reply: &Reply, lines: Lines, notes: &[String]) -> String {
    let log = lines.decision.unwrap_or_default();
    let summary = lines.summary.unwrap_or_default();
    let points = lines.points.unwrap_or_default();
    let capacity = 128 + log.len() + summary.len() + points.len() + reply.body.len();
    let mut out = Wire::new(notes, "reply", capacity);
    out.number(u64::from(reply.status));
    out.headers(&reply.headers);
    out.text(&log);
    out.text(&summary);
    out.text(&points);
    out.number(reply.delay_ms);
    out.end_with_body(&reply.body)
}

/// The JS side of the protocol: the constants and one reader per decision kind, each reading its
/// fields in order into an object. `shim.js` holds this text between its `wire` markers.
pub fn js_protocol() -> String {
    let mut js = String::from(
        "// Generated from crates/worker/src/wire.rs (`js_protocol`); a test there keeps it current.\n",
    );
    js.push_str(&format!("const ABSENT = {:?};\n", ABSENT));
    js.push_str(&format!(
        "// The Analytics Engine binding a reply's `points` are written to.\nconst ANALYTICS_BINDING = {ANALYTICS_BINDING:?};\n"
    ));
    for (name, value) in CODES {
        js.push_str(&format!("const {name} = {value};\n"));
    }
    js.push_str("// The request's text facts, in the order `decide` reads them.\n");
    js.push_str("function requestFacts(request, headers) {\n  return (\n");
    for (i, (_, expression)) in REQUEST_FACTS.iter().enumerate() {
        let glue = if i + 1 == REQUEST_FACTS.len() {
            ""
        } else {
            " +"
        };
        let separator = if i + 1 == REQUEST_FACTS.len() {
            ""
        } else {
            " + \"\\n\""
        };
        js.push_str(&format!("    ({expression} ?? ABSENT){separator}{glue}\n"));
    }
    js.push_str("  );\n}\n");
    js.push_str(
        "// Each answer's fields, in the order the shell writes them.\nconst READERS = {\n",
    );
    for answer in &DECISIONS {
        js.push_str(&format!("  {}: (a) => ({{", answer.kind));
        for (i, (name, field)) in answer.fields.iter().enumerate() {
            let read = match field {
                Field::Text => "a.field()",
                Field::Number => "a.number()",
                Field::Headers => "a.headers()",
                Field::Body => "a.body()",
            };
            let comma = if i == 0 { "" } else { "," };
            js.push_str(&format!("{comma} {name}: {read}"));
        }
        js.push_str(" }),\n");
    }
    js.push_str("};\n");
    js
}

/// Reads a decision back into one JSON value by the tables, for tests of the shell:
/// `{"<kind>":{<fields>},"notes":..}`, headers as `[name, value]` pairs, notes one string of
/// lines (absent when there are none); `configure`'s plain JSON as it is. `null` if malformed.
pub fn parse_decision(text: &str) -> Value {
    if text.starts_with('{') {
        return serde_json::from_str(text).unwrap_or(Value::Null);
    }
    read_answer(text).unwrap_or(Value::Null)
}

/// Reads the fields of an answer in order.
struct Fields<'a>(&'a str);

impl<'a> Fields<'a> {
    fn text(&mut self) -> Option<&'a str> {
        let (line, rest) = self.0.split_once('\n')?;
        self.0 = rest;
        Some(line)
    }

    fn number(&mut self) -> Option<u64> {
        self.text()?.parse().ok()
    }

    fn headers(&mut self) -> Option<Value> {
        let count = self.number()?;
        let pairs = (0..count).map(|_| Some(json!([self.text()?, self.text()?])));
        pairs.collect::<Option<Vec<_>>>().map(Value::Array)
    }

    fn read(&mut self, field: Field) -> Option<Value> {
        Some(match field {
            Field::Text => json!(self.text()?),
            Field::Number => json!(self.number()?),
            Field::Headers => self.headers()?,
            Field::Body => json!(std::mem::take(&mut self.0)),
        })
    }
}

fn read_answer(text: &str) -> Option<Value> {
    let mut at = Fields(text);
    let count = at.number()?;
    let notes: Vec<&str> = (0..count).map(|_| at.text()).collect::<Option<_>>()?;
    let kind = at.text()?;
    let spec = DECISIONS.iter().find(|a| a.kind == kind)?;
    let mut fields = serde_json::Map::new();
    for (name, field) in spec.fields {
        fields.insert((*name).to_owned(), at.read(*field)?);
    }
    // Nothing may follow the fields of an answer without a body.
    if !at.0.is_empty() {
        return None;
    }
    let mut answer = json!({ kind: fields });
    if !notes.is_empty() {
        answer["notes"] = notes.join("\n").into();
    }
    Some(answer)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_facts_keep_absent_apart_from_empty() {
        let facts = [
            Some("POST"),
            Some("https://x.example/api"),
            None,
            Some("IT"),
            Some(""),
            None,
            Some("token.1f"),
            None,
            Some("en.0a"),
        ];
        assert_eq!(request_facts(&request_line(facts)), facts);
        // A line cut short leaves the missing facts absent.
        let mut short = [None; 9];
        (short[0], short[1]) = (Some("GET"), Some("https://x.example/"));
        assert_eq!(request_facts("GET\nhttps://x.example/"), short);
    }

    #[test]
    fn a_field_with_a_newline_cannot_put_the_answer_out_of_step() {
        let reply = Reply {
            status: 400,
            headers: vec![("x-a", "one\ntwo".into()), ("x-b", "three".into())],
            body: "{\"a\":\n1}".into(),
            outcome: None,
            delay_ms: 0,
        };
        let lines = Lines {
            decision: Some("{\"log\":1}".into()),
            summary: None,
            points: Some("[{\"blobs\":[\"a\"]}]".into()),
        };
        let notes = ["{\"note\":1}".to_owned(), "{\"note\":2}".to_owned()];
        let answer = parse_decision(&reply_text(&reply, lines, &notes));
        assert_eq!(
            answer,
            json!({"reply": {"status": 400, "headers": [["x-a", "one two"], ["x-b", "three"]],
                             "log": "{\"log\":1}", "summary": "", "points": "[{\"blobs\":[\"a\"]}]",
                             "delayMs": 0, "body": "{\"a\":\n1}"},
                   "notes": "{\"note\":1}\n{\"note\":2}"})
        );
    }

    #[test]
    fn every_kind_reads_back_by_the_tables() {
        let mut forward = Wire::new(&[], "forward", 64);
        forward.text("key-1");
        forward.attempt(
            &Attempt {
                url: "https://o.example/v1/submissions".into(),
                timeout_ms: 3000,
            },
            7,
        );
        forward.headers(&[("content-type", "application/json".into())]);
        let forward = parse_decision(&forward.end_with_body("{}"));
        assert_eq!(forward["forward"]["ticket"], 7);
        assert_eq!(forward["forward"]["body"], "{}");
        let mut retry = Wire::new(&["n".into()], "retry", 64);
        retry.attempt(
            &Attempt {
                url: "u".into(),
                timeout_ms: 1,
            },
            8,
        );
        let retry = parse_decision(&retry.end());
        assert_eq!(
            retry,
            json!({"retry": {"url": "u", "timeoutMs": 1, "ticket": 8}, "notes": "n"})
        );
        // A field too many, or an unknown kind, is malformed.
        assert_eq!(parse_decision("0\nretry\nu\n1\n8\nextra\n"), Value::Null);
        assert_eq!(parse_decision("0\nteapot\n"), Value::Null);
    }

    /// The shim's copy of the protocol is the one these tables generate. After changing the
    /// tables, `HARBOUR_WRITE_SHIM=1 cargo test -p harbour-worker wire` rewrites it.
    #[test]
    fn the_shim_reads_the_protocol_these_tables_define() {
        const BEGIN: &str = "// wire: begin\n";
        const END: &str = "// wire: end\n";
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/shim.js");
        let shim = std::fs::read_to_string(&path).unwrap();
        let start = shim.find(BEGIN).expect("shim.js has a wire block") + BEGIN.len();
        let end = shim.find(END).expect("shim.js ends its wire block");
        let expected = js_protocol();
        if std::env::var_os("HARBOUR_WRITE_SHIM").is_some() {
            let written = format!("{}{expected}{}", &shim[..start], &shim[end..]);
            std::fs::write(&path, written).unwrap();
            return;
        }
        assert_eq!(
            shim[start..end],
            expected,
            "shim.js's wire block is stale: HARBOUR_WRITE_SHIM=1 cargo test -p harbour-worker wire"
        );
    }
}
