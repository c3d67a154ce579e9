//! The edge shell's line protocol: what `shim.js` passes to `edge::decide` (the request's text
//! facts as one string) and what every edge answer is (lines of text, read in order: no JSON to
//! parse per request; the protocol itself is described at `edge::decide`). Plain text over plain
//! data, so it is tested natively; only `edge` calls it.

use serde_json::{json, Value};

use harbour_core::forward::Attempt;
use harbour_core::journal::Lines;
use harbour_core::reply::Reply;
use harbour_policy::text::push_u64;

/// Separates the text facts in `decide`'s `request` argument; a value that is absent (no such
/// header, no `cf.country`) is `ABSENT`. Neither can occur in a method, a serialised URL or a
/// header value (the Fetch standard forbids both in header values).
pub const FACT_SEPARATOR: char = '\n';
pub const ABSENT: &str = "\0";

/// `decide`'s `request` argument from its facts, in order: method, URL, `Content-Type`,
/// `cf.country`, `CF-Connecting-IP`, `Idempotency-Key`, `Harbour-Challenge`, `Origin` (as
/// `shim.js` builds it; for tests and tools).
pub fn request_line(facts: [Option<&str>; 8]) -> String {
    let mut line = String::with_capacity(256);
    for (i, fact) in facts.iter().enumerate() {
        if i > 0 {
            line.push(FACT_SEPARATOR);
        }
        line.push_str(fact.unwrap_or(ABSENT));
    }
    line
}

/// The eight facts of a request line; missing trailing ones are absent.
pub fn request_facts(line: &str) -> [Option<&str>; 8] {
    let mut facts = [None; 8];
    for (slot, value) in facts.iter_mut().zip(line.split(FACT_SEPARATOR)) {
        *slot = (value != ABSENT).then_some(value);
    }
    facts
}

/// An answer in the shell's line protocol (see `crate::shell::decide`), written field by field.
pub struct Wire(String);

impl Wire {
    /// Starts an answer of `kind` after its notes.
    pub fn new(notes: &[String], kind: &str, capacity: usize) -> Wire {
        let notes_len: usize = notes.iter().map(|note| note.len() + 1).sum();
        let mut out = Wire(String::with_capacity(capacity + notes_len));
        out.number(notes.len() as u64);
        for note in notes {
            out.field(note);
        }
        out.field(kind);
        out
    }

    /// One field and its line end. No field may hold a newline, or the shim would read the rest
    /// of the answer out of step. None can (header values, URLs and keys are checked where they
    /// are made; log lines are JSON); should one ever, it is written with a space instead.
    pub fn field(&mut self, value: &str) {
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
        self.field(&attempt.url);
        self.number(attempt.timeout_ms);
        self.number(ticket);
    }

    /// The number of headers, then each one's name and value.
    pub fn headers(&mut self, headers: &[(&'static str, String)]) {
        self.number(headers.len() as u64);
        for (name, value) in headers {
            self.field(name);
            self.field(value);
        }
    }

    /// The answer, nothing after its fields.
    pub fn finish(self) -> String {
        self.0
    }

    /// The answer with `body`, verbatim, after its fields.
    pub fn body(mut self, body: &str) -> String {
        self.0.push_str(body);
        self.0
    }
}

pub fn reply_text(reply: &Reply, lines: Lines, notes: &[String]) -> String {
    let log = lines.decision.unwrap_or_default();
    let summary = lines.summary.unwrap_or_default();
    let capacity = 128 + log.len() + summary.len() + reply.body.len();
    let mut out = Wire::new(notes, "reply", capacity);
    out.number(u64::from(reply.status));
    out.headers(&reply.headers);
    out.field(&log);
    out.field(&summary);
    out.body(&reply.body)
}

/// Reads an answer back into one JSON value, for tests of the shell's conversions:
/// `{"reply":{status,headers,body},"log":..,"summary":..,"notes":..}`, `{"consult":{consult:
/// {binding,key,timeout_ms},hold}}`, `{"forward":{key,url,timeout_ms,ticket,headers,body}}` or
/// `{"retry":{url,timeout_ms,ticket}}`, the last three with `notes` when there are any; headers
/// are `[name, value]` pairs, notes one string of lines. `null` if it is malformed.
pub fn parse_decision(text: &str) -> Value {
    if text.starts_with('{') {
        // `configure` answers with plain JSON.
        return serde_json::from_str(text).unwrap_or(Value::Null);
    }
    read_answer(text).unwrap_or(Value::Null)
}

/// Reads the fields of an answer in order.
struct Fields<'a>(&'a str);

impl<'a> Fields<'a> {
    fn field(&mut self) -> Option<&'a str> {
        let (line, rest) = self.0.split_once('\n')?;
        self.0 = rest;
        Some(line)
    }

    fn number(&mut self) -> Option<u64> {
        self.field()?.parse().ok()
    }

    fn headers(&mut self) -> Option<Value> {
        let count = self.number()?;
        let pairs = (0..count).map(|_| Some(json!([self.field()?, self.field()?])));
        pairs.collect::<Option<Vec<_>>>().map(Value::Array)
    }
}

fn read_answer(text: &str) -> Option<Value> {
    let mut at = Fields(text);
    let count = at.number()?;
    let notes: Vec<&str> = (0..count).map(|_| at.field()).collect::<Option<_>>()?;
    let notes = (!notes.is_empty()).then(|| notes.join("\n"));
    let kind = at.field()?;
    let mut meta = match kind {
        "reply" => {
            let (status, headers) = (at.number()?, at.headers()?);
            let (log, summary) = (at.field()?, at.field()?);
            let reply = json!({ "status": status, "headers": headers, "body": at.0 });
            let summary = (!summary.is_empty()).then_some(summary);
            return Some(json!({ "reply": reply, "log": log, "summary": summary, "notes": notes }));
        }
        "consult" => {
            let hold = at.number()?;
            let (binding, key, timeout_ms) = (at.field()?, at.field()?, at.number()?);
            let consult = json!({ "binding": binding, "key": key, "timeout_ms": timeout_ms });
            json!({ "consult": consult, "hold": hold })
        }
        "forward" => {
            let key = at.field()?;
            let (url, timeout_ms, ticket) = (at.field()?, at.number()?, at.number()?);
            let headers = at.headers()?;
            json!({ "key": key, "url": url, "timeout_ms": timeout_ms, "ticket": ticket,
                    "headers": headers, "body": at.0 })
        }
        "retry" => {
            json!({ "url": at.field()?, "timeout_ms": at.number()?, "ticket": at.number()? })
        }
        _ => return None,
    };
    if let Some(notes) = notes {
        meta["notes"] = notes.into();
    }
    Some(json!({ kind: meta }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

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
        ];
        assert_eq!(request_facts(&request_line(facts)), facts);
        // A line cut short leaves the missing facts absent.
        assert_eq!(
            request_facts("GET\nhttps://x.example/"),
            [
                Some("GET"),
                Some("https://x.example/"),
                None,
                None,
                None,
                None,
                None,
                None
            ]
        );
    }

    #[test]
    fn a_field_with_a_newline_cannot_put_the_answer_out_of_step() {
        let reply = Reply {
            status: 400,
            headers: vec![("x-a", "one\ntwo".into()), ("x-b", "three".into())],
            body: "{\"a\":\n1}".into(),
            code: None,
        };
        let lines = Lines {
            decision: Some("{\"log\":1}".into()),
            summary: None,
        };
        let notes = ["{\"note\":1}".to_owned(), "{\"note\":2}".to_owned()];
        let answer = parse_decision(&reply_text(&reply, lines, &notes));
        assert_eq!(answer["reply"]["status"], 400);
        assert_eq!(
            answer["reply"]["headers"],
            json!([["x-a", "one two"], ["x-b", "three"]])
        );
        assert_eq!(answer["reply"]["body"], "{\"a\":\n1}");
        assert_eq!(answer["log"], "{\"log\":1}");
        assert_eq!(answer["summary"], Value::Null);
        assert_eq!(answer["notes"], "{\"note\":1}\n{\"note\":2}");
    }
}
