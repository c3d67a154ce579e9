//! The pages: the live view's files (served by `harbour-live`) and the broadcast report, one
//! self-contained HTML file with the same charts, uPlot inline, the figures inline and a
//! Content-Security-Policy that names each inline script and style by its SHA-256: the report
//! loads nothing and runs nothing else.

use base64::Engine;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::recording::{Audit, Recording};

pub const UPLOT_JS: &str = include_str!(concat!(env!("OUT_DIR"), "/uPlot.iife.min.js"));
pub const UPLOT_CSS: &str = include_str!(concat!(env!("OUT_DIR"), "/uPlot.min.css"));
pub const CHARTS_JS: &str = include_str!("../assets/charts.js");
pub const LIVE_JS: &str = include_str!("../assets/live.js");
pub const LIVE_HTML: &str = include_str!("../assets/live.html");
pub const STYLE_CSS: &str = include_str!("../assets/style.css");

/// The live view's Content-Security-Policy: its own files, its own `/data`, nothing else.
pub const LIVE_CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// `'sha256-…'` of a script's or style's text, as CSP names it.
fn csp_hash(text: &str) -> String {
    let digest = Sha256::digest(text.as_bytes());
    format!(
        "'sha256-{}'",
        base64::engine::general_purpose::STANDARD.encode(digest)
    )
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// JSON inside a `<script type="application/json">`: no `<` can close the element early.
fn inline_json(value: &Value) -> String {
    value.to_string().replace('<', "\\u003c")
}

/// A script's text as an inline script: a `</script` in it would end the element early.
fn inline_script(text: &str) -> String {
    text.replace("</script", "<\\/script")
}

fn audit_html(audit: &Audit) -> String {
    let verdict = if audit.passed {
        "<p class=\"verdict passed\">Passed: every entry answered with a receipt is stored once, in its own region.</p>"
    } else {
        "<p class=\"verdict failed\">Failed: see the figures below (entries lost, stored twice or outside their region).</p>"
    };
    let mut html = format!("<h2>Audit</h2>\n{verdict}\n<table class=\"audit\">\n<caption>What the load generator sent and what the origins' stores hold</caption>\n<tr><th scope=\"col\">What</th><th scope=\"col\">Figure</th></tr>\n");
    for (what, figure) in &audit.figures {
        html.push_str(&format!(
            "<tr><th scope=\"row\">{}</th><td class=\"n\">{}</td></tr>\n",
            escape(what),
            escape(figure)
        ));
    }
    html.push_str("</table>\n");
    if !audit.answers.is_empty() {
        html.push_str("<table class=\"audit\">\n<caption>Answers the load generator received, by status and code</caption>\n<tr><th scope=\"col\">Answer</th><th scope=\"col\">How many</th></tr>\n");
        for (answer, count) in &audit.answers {
            html.push_str(&format!(
                "<tr><th scope=\"row\">{}</th><td class=\"n\">{count}</td></tr>\n",
                escape(answer)
            ));
        }
        html.push_str("</table>\n");
    }
    html
}

/// `Unix seconds` as `2027-03-13 20:15:04`.
fn utc(seconds: u64) -> String {
    let text = harbour_policy::utc::format_ms(seconds * 1_000);
    format!("{} {}", &text[..10], &text[11..19])
}

/// The broadcast report: one HTML file, nothing to load.
pub fn report(recording: &Recording) -> String {
    let series = recording.series(None, None);
    let x = series["x"].as_array().cloned().unwrap_or_default();
    let span = match (
        x.first().and_then(Value::as_u64),
        x.last().and_then(Value::as_u64),
    ) {
        (Some(first), Some(last)) => format!("From {} to {} UTC.", utc(first), utc(last)),
        _ => "No figures were recorded.".into(),
    };
    let draw = "HarbourCharts.draw(document, JSON.parse(document.getElementById(\"recording\").textContent));";
    let scripts = [
        inline_script(UPLOT_JS),
        inline_script(CHARTS_JS),
        draw.to_owned(),
    ];
    let style = format!("{UPLOT_CSS}\n{STYLE_CSS}");
    let csp = format!(
        "default-src 'none'; script-src {}; style-src {}; img-src data:; base-uri 'none'; form-action 'none'",
        scripts.iter().map(|s| csp_hash(s)).collect::<Vec<_>>().join(" "),
        csp_hash(&style)
    );
    let audit = recording.audit.as_ref().map(audit_html).unwrap_or_default();
    let mut html = format!(
        "<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<meta http-equiv=\"Content-Security-Policy\" content=\"{csp}\">\n<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n<title>Broadcast report — {title}</title>\n<link rel=\"icon\" href=\"data:,\">\n<style>{style}</style>\n</head>\n<body>\n<header>\n<h1>Broadcast report</h1>\n<p>{title}</p>\n<p id=\"about\">{span} Second by second. The edge's figures: {source}.</p>\n</header>\n<main>\n{audit}<h2>Entries in each region</h2>\n<p class=\"explain\">The blue line is what the region's origins stored (their own count, the authority); the others are what the edge answered, by outcome. \"Shed\" entries were asked to come back in a moment, with their key: they are stored once when they do.</p>\n<div id=\"regions\"></div>\n<h2>The edge</h2>\n<div id=\"edge\"></div>\n<h2>The origins</h2>\n<div id=\"origins\"></div>\n</main>\n<script type=\"application/json\" id=\"recording\">{data}</script>\n",
        title = escape(&recording.title),
        source = escape(&recording.edge_source),
        data = inline_json(&series),
    );
    for script in &scripts {
        html.push_str(&format!("<script>{script}</script>\n"));
    }
    html.push_str("</body>\n</html>\n");
    html
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::recording::{EdgeCell, EdgeRow, OriginName, OriginSecond};

    #[test]
    fn a_report_carries_everything_and_its_policy_names_each_inline_part() {
        let mut recording = Recording::new(
            "Rehearsal </script><b>",
            vec![("eu".into(), "European Union".into())],
            vec![OriginName {
                label: "eu 127.0.0.1:1".into(),
                region: "eu".into(),
            }],
        );
        recording.origin(
            "eu 127.0.0.1:1",
            vec![(
                1_800_000_000,
                OriginSecond {
                    stored: 4,
                    ..OriginSecond::default()
                },
            )],
        );
        recording.edge(
            0,
            vec![EdgeRow {
                second: 1_800_000_000,
                region: "eu".into(),
                outcome: "stored".into(),
                cell: EdgeCell {
                    count: 4.0,
                    ..EdgeCell::default()
                },
            }],
        );
        recording.audit = Some(Audit {
            passed: true,
            figures: vec![("lost".into(), "0".into())],
            answers: vec![("202".into(), 4)],
        });
        let html = report(&recording);
        assert!(!html.contains("</script><b>"), "the title is escaped");
        assert!(html.contains("Rehearsal &lt;/script&gt;&lt;b&gt;"));
        assert!(html.contains("From 2027-01-15 08:00:00 to 2027-01-15 08:00:00 UTC."));
        assert!(html.contains(&csp_hash(CHARTS_JS)));
        assert!(html.contains(&csp_hash(&format!("{UPLOT_CSS}\n{STYLE_CSS}"))));
        assert!(html.contains("uPlot"), "uPlot is inline");
        assert!(!html.contains("src=\""), "nothing is loaded");
        assert!(html.contains("<th scope=\"row\">lost</th><td class=\"n\">0</td>"));
        // The figures read back whole from the inline data.
        let start = html.find("id=\"recording\">").unwrap() + "id=\"recording\">".len();
        let end = start + html[start..].find("</script>").unwrap();
        let data: Value = serde_json::from_str(&html[start..end]).unwrap();
        assert_eq!(data["regions"][0]["stored_total"], 4);
    }
}
