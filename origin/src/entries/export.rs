//! A campaign's entries, streamed in their stable order (`stored_at_ms`, then receipt id) as
//! CSV or JSON lines. Rules:
//!
//! - every entry of the campaign in this region's store, and nothing else;
//! - CSV: a header, then one row per entry: the entry's record (receipt id, region, when
//!   stored, the country signals, the notice's locale and version, when marketing consent was
//!   withdrawn) and then the campaign's fields in the policy's order; values are quoted as
//!   RFC 4180 says, and a text value that a spreadsheet would run as a formula (starting with
//!   `=`, `+`, `-`, `@`, a tab or a carriage return) is written after a `'`;
//! - JSON lines: one entry per line, as `access` shows it, fields verbatim.

use std::io::Write;

use serde_json::Value;

use super::setup::{print, Format, Region};
use crate::store::records::StoredEntry;
use crate::store::Unavailable;

const RECORD_COLUMNS: [&str; 8] = [
    "receipt_id",
    "region",
    "stored_at_ms",
    "platform_country",
    "declared_country",
    "notice_locale",
    "notice_version",
    "marketing_withdrawn_ms",
];

pub(super) async fn export(
    region: &mut Region,
    format: Format,
    out: &mut dyn Write,
) -> Result<(), String> {
    let names: Vec<String> = region
        .campaign
        .fields
        .iter()
        .map(|f| f.name.clone())
        .collect();
    if format == Format::Csv {
        let header: Vec<String> = RECORD_COLUMNS
            .iter()
            .map(|c| (*c).to_owned())
            .chain(names.iter().cloned())
            .collect();
        csv_line(out, &header).map_err(|e| e.0)?;
    }
    let mut visit = |entry: StoredEntry| -> Result<(), Unavailable> {
        match format {
            Format::JsonLines => print(out, &entry.to_json()).map_err(Unavailable),
            Format::Csv => csv_line(out, &row(&entry, &names)),
        }
    };
    region
        .records
        .each(&region.campaign.id, &mut visit)
        .await
        .map_err(|e| e.0)?;
    out.flush()
        .map_err(|e| format!("cannot write the output: {e}"))
}

/// An entry's CSV cells, in the header's order.
fn row(entry: &StoredEntry, names: &[String]) -> Vec<String> {
    let number = |n: Option<u64>| n.map(|n| n.to_string()).unwrap_or_default();
    let (locale, version) = entry.notice.clone().unwrap_or_default();
    let mut cells = vec![
        entry.receipt_id.clone(),
        entry.region.clone(),
        entry.stored_at_ms.to_string(),
        entry.platform_country.clone(),
        entry.declared_country.clone().unwrap_or_default(),
        locale,
        version,
        number(entry.marketing_withdrawn_ms),
    ];
    cells.extend(names.iter().map(|name| match entry.fields.get(name) {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(text)) => inert(text),
        Some(other) => other.to_string(),
    }));
    cells
}

/// A text a spreadsheet will not run as a formula.
fn inert(text: &str) -> String {
    if text.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{text}")
    } else {
        text.to_owned()
    }
}

fn csv_line(out: &mut dyn Write, cells: &[String]) -> Result<(), Unavailable> {
    let mut line = String::new();
    for (i, cell) in cells.iter().enumerate() {
        if i > 0 {
            line.push(',');
        }
        if cell.contains([',', '"', '\n', '\r']) {
            line.push('"');
            line.push_str(&cell.replace('"', "\"\""));
            line.push('"');
        } else {
            line.push_str(cell);
        }
    }
    line.push_str("\r\n");
    out.write_all(line.as_bytes())
        .map_err(|e| Unavailable(format!("cannot write the output: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn cells_are_quoted_and_formulas_made_inert() {
        let mut out = Vec::new();
        csv_line(
            &mut out,
            &[
                "plain".into(),
                "a,b".into(),
                "say \"hi\"".into(),
                "two\nlines".into(),
            ],
        )
        .unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "plain,\"a,b\",\"say \"\"hi\"\"\",\"two\nlines\"\r\n"
        );
        let entry = StoredEntry {
            receipt_id: "eu-0000000000000001".into(),
            region: "eu".into(),
            campaign: "c".into(),
            stored_at_ms: 5,
            platform_country: "IT".into(),
            declared_country: None,
            notice: Some(("de".into(), "v1".into())),
            marketing_withdrawn_ms: Some(9),
            person_digest: Some("d".into()),
            fields: json!({"name": "=HYPERLINK(\"x\")", "age": -3, "marketing": false}),
        };
        let names = ["name", "age", "marketing", "absent"].map(String::from);
        assert_eq!(
            row(&entry, &names),
            [
                "eu-0000000000000001",
                "eu",
                "5",
                "IT",
                "",
                "de",
                "v1",
                "9",
                "'=HYPERLINK(\"x\")",
                "-3",
                "false",
                ""
            ]
        );
    }
}
