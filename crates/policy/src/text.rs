//! Writing text on the hot path without `core::fmt`: in wasm its machinery (argument tables,
//! padding, `Display` dispatch) cost more per decision than the values being written.

/// A JSON string literal (RFC 8259 §7), escaped exactly as serde_json escapes: `"`, `\\` and
/// control characters; everything else as is.
pub fn quoted(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    push_quoted(&mut out, text);
    out
}

/// [`quoted`], appended to `out`. Runs of bytes that need no escape are copied whole: every
/// byte that needs one is ASCII, so a run always ends on a character boundary. Copying per
/// character was the dearest single function of a decision in wasm.
pub fn push_quoted(out: &mut String, text: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.reserve(text.len() + 2);
    out.push('"');
    let bytes = text.as_bytes();
    let mut run_start = 0;
    for (at, &byte) in bytes.iter().enumerate() {
        let escape: &str = match byte {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0x08 => "\\b",
            0x0c => "\\f",
            0x00..=0x1f => "",
            _ => continue,
        };
        out.push_str(text.get(run_start..at).unwrap_or_default());
        run_start = at + 1;
        if escape.is_empty() {
            out.push_str("\\u00");
            out.push(char::from(HEX[usize::from(byte >> 4)]));
            out.push(char::from(HEX[usize::from(byte & 0xf)]));
        } else {
            out.push_str(escape);
        }
    }
    out.push_str(text.get(run_start..).unwrap_or_default());
    out.push('"');
}

/// ASCII bytes built on the stack, appended in one go: pushing them one `char` at a time was
/// a sixth of a decision in wasm.
fn push_ascii(out: &mut String, ascii: &[u8]) {
    out.push_str(std::str::from_utf8(ascii).unwrap_or_default());
}

/// `n` in decimal, appended.
pub fn push_u64(out: &mut String, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    push_ascii(out, &digits[at..]);
}

/// `n` in decimal.
pub fn decimal(n: u64) -> String {
    let mut out = String::with_capacity(20);
    push_u64(&mut out, n);
    out
}

const HEX_DIGITS: &[u8; 16] = b"0123456789abcdef";

/// Lower-case hex of `bytes`, appended.
pub fn push_hex(out: &mut String, bytes: &[u8]) {
    let mut buffer = [0u8; 64];
    for chunk in bytes.chunks(32) {
        for (i, byte) in chunk.iter().enumerate() {
            buffer[2 * i] = HEX_DIGITS[usize::from(byte >> 4)];
            buffer[2 * i + 1] = HEX_DIGITS[usize::from(byte & 0x0f)];
        }
        push_ascii(out, &buffer[..2 * chunk.len()]);
    }
}

/// The low `width` hex digits of `n`, zero-padded, appended (`width` at most 16).
pub fn push_hex_u64(out: &mut String, n: u64, width: u32) {
    let mut buffer = [0u8; 16];
    let width = width.min(16) as usize;
    for (i, slot) in buffer[..width].iter_mut().enumerate() {
        let shift = (width - 1 - i) * 4;
        *slot = HEX_DIGITS[((n >> shift) & 0xf) as usize];
    }
    push_ascii(out, &buffer[..width]);
}

/// `n` in decimal, appended, with a sign when negative.
pub fn push_i64(out: &mut String, n: i64) {
    if n < 0 {
        out.push('-');
    }
    push_u64(out, n.unsigned_abs());
}

/// A JSON array of strings, appended.
pub fn push_strings<'a>(out: &mut String, values: impl IntoIterator<Item = &'a str>) {
    push_array(out, values, push_quoted);
}

/// A JSON array, appended: each of `values` written by `write`.
fn push_array<'a>(
    out: &mut String,
    values: impl IntoIterator<Item = &'a str>,
    write: impl Fn(&mut String, &str),
) {
    out.push('[');
    for (i, value) in values.into_iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        write(out, value);
    }
    out.push(']');
}

/// A JSON object written member by member as it is built: what the page reads (the form
/// description) without a `serde_json::Value` tree, whose map and serialiser cost the worker
/// several KB. Members keep the order they are written in; names are not checked for repeats.
pub struct JsonObject {
    out: String,
    empty: bool,
}

impl Default for JsonObject {
    fn default() -> Self {
        JsonObject::new()
    }
}

impl JsonObject {
    pub fn new() -> JsonObject {
        let mut out = String::with_capacity(256);
        out.push('{');
        JsonObject { out, empty: true }
    }

    /// Starts member `name`; its value is written next.
    fn member(&mut self, name: &str) -> &mut String {
        if !self.empty {
            self.out.push(',');
        }
        self.empty = false;
        push_quoted(&mut self.out, name);
        self.out.push(':');
        &mut self.out
    }

    pub fn str(&mut self, name: &str, value: &str) -> &mut JsonObject {
        push_quoted(self.member(name), value);
        self
    }

    /// A string, or `null` for none.
    pub fn opt_str(&mut self, name: &str, value: Option<&str>) -> &mut JsonObject {
        match value {
            Some(value) => self.str(name, value),
            None => self.raw(name, "null"),
        }
    }

    pub fn bool(&mut self, name: &str, value: bool) -> &mut JsonObject {
        self.raw(name, if value { "true" } else { "false" })
    }

    pub fn u64(&mut self, name: &str, value: u64) -> &mut JsonObject {
        push_u64(self.member(name), value);
        self
    }

    /// An integer, or `null` for none.
    pub fn opt_i64(&mut self, name: &str, value: Option<i64>) -> &mut JsonObject {
        match value {
            Some(value) => {
                push_i64(self.member(name), value);
                self
            }
            None => self.raw(name, "null"),
        }
    }

    /// A value already written as JSON.
    pub fn raw(&mut self, name: &str, json: &str) -> &mut JsonObject {
        self.member(name).push_str(json);
        self
    }

    /// An array of strings.
    pub fn strs<'a>(
        &mut self,
        name: &str,
        values: impl IntoIterator<Item = &'a str>,
    ) -> &mut JsonObject {
        push_strings(self.member(name), values);
        self
    }

    /// An array of values already written as JSON.
    pub fn raws<'a>(
        &mut self,
        name: &str,
        values: impl IntoIterator<Item = &'a str>,
    ) -> &mut JsonObject {
        push_array(self.member(name), values, |out, value| out.push_str(value));
        self
    }

    /// The object's text, closed.
    pub fn finish(&mut self) -> String {
        let mut out = std::mem::take(&mut self.out);
        out.push('}');
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_matches_serde_json_for_every_control_and_special_character() {
        let all: String = (0u32..0x80)
            .filter_map(char::from_u32)
            .chain(['é', '中', '\u{2028}', '😀'])
            .collect();
        assert_eq!(quoted(&all), serde_json::to_string(&all).unwrap());
        assert_eq!(quoted(""), "\"\"");
    }

    #[test]
    fn numbers_match_core_fmt() {
        for n in [0, 1, 9, 10, 99, 1_764_000_000_000, u64::MAX] {
            assert_eq!(decimal(n), n.to_string());
            let mut hex = String::new();
            push_hex_u64(&mut hex, n, 16);
            assert_eq!(hex, format!("{n:016x}"));
            let mut short = String::new();
            push_hex_u64(&mut short, n & 0xFFF_FFFF_FFFF, 11);
            assert_eq!(short, format!("{:011x}", n & 0xFFF_FFFF_FFFF));
        }
        let mut hex = String::new();
        push_hex(&mut hex, &[0x00, 0x0f, 0xa5, 0xff]);
        assert_eq!(hex, "000fa5ff");
        let long: Vec<u8> = (0..=255).collect();
        let mut hex = String::new();
        push_hex(&mut hex, &long);
        let expected: String = long.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex, expected);
    }

    #[test]
    fn objects_read_back_as_what_was_written() {
        let inner = JsonObject::new().str("a", "x\"y").finish();
        let written = JsonObject::new()
            .str("s", "Zoë \\ \u{7}")
            .opt_str("none", None)
            .opt_str("some", Some("v"))
            .bool("t", true)
            .bool("f", false)
            .u64("n", u64::MAX)
            .opt_i64("neg", Some(i64::MIN))
            .opt_i64("unset", None)
            .strs("list", ["a", "b"])
            .strs("empty", [])
            .raws("objects", [inner.as_str(), "{}"])
            .finish();
        let expected = serde_json::json!({
            "s": "Zoë \\ \u{7}", "none": null, "some": "v", "t": true, "f": false,
            "n": u64::MAX, "neg": i64::MIN, "unset": null, "list": ["a", "b"], "empty": [],
            "objects": [{"a": "x\"y"}, {}],
        });
        let read: serde_json::Value = serde_json::from_str(&written).unwrap();
        assert_eq!(read, expected);
        assert_eq!(JsonObject::new().finish(), "{}");
    }

    #[cfg(not(target_arch = "wasm32"))]
    proptest::proptest! {
        #[test]
        fn quoting_matches_serde_json_for_any_text(text in "\\PC*|[\\x00-\\x7f]{0,40}") {
            proptest::prop_assert_eq!(quoted(&text), serde_json::to_string(&text).unwrap());
        }

        #[test]
        fn decimals_match_core_fmt(n in proptest::num::u64::ANY) {
            proptest::prop_assert_eq!(decimal(n), n.to_string());
        }
    }
}
