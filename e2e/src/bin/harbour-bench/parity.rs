//! Before anything is timed: harbour and the plain-JS peer answer the same requests alike
//! (status, problem code, field errors, headers, receipt region) and store the same rows, so the
//! comparison measures two implementations of one job.

use serde_json::Value;

use harbour_e2e::{raw, read_rows, Response};

use crate::mix::challenge_for;
use crate::workerd::Bench;

const SUBMIT: &str = "/api/campaigns/spring-launch/submissions";
const FORM: &str = "/api/campaigns/spring-launch";

/// One request, described once and sent to each contestant with its own key and proof.
struct Case {
    name: &'static str,
    method: &'static str,
    path: &'static str,
    headers: Vec<(&'static str, String)>,
    body: String,
    /// Send a solved `Harbour-Challenge` for the contestant's key.
    solve: bool,
    /// Send an `Idempotency-Key` (the contestant's own, suffixed by the case's name).
    key: bool,
}

fn entry(tag: &str, country: &str, extra: &str) -> String {
    format!(
        r#"{{"name":"  Parity {tag} ","email":"parity-{tag}@Example.ORG","country":"{country}","consent":true{extra}}}"#
    )
}

fn cases(tag: &str) -> Vec<Case> {
    let json = |body: String| Case {
        name: "",
        method: "POST",
        path: SUBMIT,
        headers: vec![("content-type", "application/json".into())],
        body,
        solve: true,
        key: true,
    };
    let named = |name, case: Case| Case { name, ..case };
    let with = |mut case: Case, header: &'static str, value: &str| {
        case.headers.push((header, value.to_owned()));
        case
    };
    let it = r#"{"country":"IT"}"#;
    vec![
        named(
            "no such path",
            Case {
                path: "/api/other",
                ..json(String::new())
            },
        ),
        named(
            "no such campaign",
            Case {
                path: "/api/campaigns/nope/submissions",
                ..json(String::new())
            },
        ),
        named(
            "form by POST",
            Case {
                path: FORM,
                ..json(String::new())
            },
        ),
        named(
            "submissions by GET",
            Case {
                method: "GET",
                ..json(String::new())
            },
        ),
        named(
            "preflight",
            with(
                Case {
                    method: "OPTIONS",
                    ..json(String::new())
                },
                "origin",
                "http://localhost:8787",
            ),
        ),
        named(
            "foreign page",
            with(json(entry(tag, "IT", "")), "origin", "https://evil.example"),
        ),
        named(
            "text/plain",
            Case {
                headers: vec![("content-type", "text/plain".into())],
                ..json(entry(tag, "IT", ""))
            },
        ),
        named(
            "too large",
            json(format!(r#"{{"name":"{}"}}"#, "x".repeat(9000))),
        ),
        named(
            "no proof",
            Case {
                solve: false,
                ..json(entry(tag, "IT", ""))
            },
        ),
        named(
            "junk proof",
            with(
                Case {
                    solve: false,
                    ..json(entry(tag, "IT", ""))
                },
                "harbour-challenge",
                "junk",
            ),
        ),
        named(
            "proof without key",
            Case {
                key: false,
                ..json(entry(tag, "IT", ""))
            },
        ),
        named("not JSON", json("{\"name\":".into())),
        named("an array", json("[1,2]".into())),
        named(
            "every field wrong",
            json(r#"{"name":"","email":"nope","country":"ZZ","consent":false,"extra":1}"#.into()),
        ),
        named(
            "wrong types",
            json(r#"{"name":7,"email":["a"],"country":true,"consent":"maybe"}"#.into()),
        ),
        named(
            "control character",
            json(r#"{"name":"A\u202eB","email":"a@b.co","country":"IT","consent":true}"#.into()),
        ),
        named(
            "residency conflict",
            with(json(entry(tag, "CN", "")), "x-bench-cf", it),
        ),
        named(
            "no platform country",
            Case {
                headers: vec![("content-type", "application/json".into())],
                ..json(entry(tag, "IT", ""))
            },
        ),
        named(
            "tor",
            with(
                json(entry(tag, "IT", "")),
                "x-bench-cf",
                r#"{"country":"T1"}"#,
            ),
        ),
        named(
            "unknown country",
            with(
                json(entry(tag, "IT", "")),
                "x-bench-cf",
                r#"{"country":"XX"}"#,
            ),
        ),
        named(
            "valid, EU",
            with(json(entry(tag, "IT", "")), "x-bench-cf", it),
        ),
        named(
            "valid, rest of world",
            with(
                json(entry(&format!("{tag}-us"), "US", "")),
                "x-bench-cf",
                r#"{"country":"US"}"#,
            ),
        ),
        named(
            "declared law wins",
            with(
                json(entry(&format!("{tag}-cn"), "CN", "")),
                "x-bench-cf",
                r#"{"country":"US"}"#,
            ),
        ),
        named(
            "form encoded",
            with(
                Case {
                    headers: vec![(
                        "content-type",
                        "application/x-www-form-urlencoded; charset=UTF-8".into(),
                    )],
                    ..json(format!(
                        "name=Form+{tag}&email=form-{tag}%40example.org&country=de&consent=on"
                    ))
                },
                "x-bench-cf",
                r#"{"country":"DE"}"#,
            ),
        ),
        named(
            "honeypot",
            with(
                json(entry(
                    &format!("{tag}-bot"),
                    "IT",
                    r#","website":"http://spam""#,
                )),
                "x-bench-cf",
                it,
            ),
        ),
        named(
            "cross-origin allowed",
            with(
                with(
                    json(entry(&format!("{tag}-page"), "AU", "")),
                    "x-bench-cf",
                    r#"{"country":"AU"}"#,
                ),
                "origin",
                "http://localhost:8787",
            ),
        ),
    ]
}

fn send(port: u16, tag: &str, case: &Case, client: &str) -> Response {
    let key = format!(
        "parity-{tag}-case-{}",
        case.name.replace([' ', ',', '/'], "-")
    );
    let mut head = format!(
        "{} {} HTTP/1.1\r\nhost: 127.0.0.1\r\nconnection: close\r\naccept-encoding: identity\r\ncf-connecting-ip: {client}\r\n",
        case.method, case.path
    );
    for (name, value) in &case.headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    if case.key {
        head.push_str(&format!("idempotency-key: {key}\r\n"));
    }
    if case.solve {
        let (token, bits) = challenge_for(port);
        let nonce = harbour_core::phase::challenge::solve(&token, &key, bits);
        head.push_str(&format!(
            "harbour-challenge: {}\r\n",
            harbour_core::phase::challenge::solution(&token, &nonce)
        ));
    }
    if case.method != "GET" {
        head.push_str(&format!("content-length: {}\r\n", case.body.len()));
    }
    head.push_str("\r\n");
    head.push_str(&case.body);
    raw(port, head.as_bytes()).unwrap_or_else(|e| panic!("{}: {e}", case.name))
}

/// What must be the same in two answers: status, problem code, field errors, header names and
/// the values that carry meaning, the receipt's region and the key echoed.
fn view(response: &Response) -> Value {
    let body: Value = serde_json::from_str(&response.body).unwrap_or(Value::Null);
    let mut names: Vec<String> = response
        .headers
        .iter()
        .map(|(n, _)| n.to_ascii_lowercase())
        .filter(|n| {
            !matches!(
                n.as_str(),
                "date" | "content-length" | "transfer-encoding" | "connection"
            )
        })
        .collect();
    names.sort();
    let kept = |name: &str| response.header(name).map(str::to_owned);
    serde_json::json!({
        "status": response.status,
        "code": body["code"],
        "errors": body["errors"],
        // The one detail the peer words otherwise: JSON.parse does not give line and column.
        "detail": if body["code"] == "malformed_body" { Value::Null } else { body["detail"].clone() },
        "receipt_region": body["receipt"]["region"],
        "receipt_shape": body["receipt"]["id"].as_str().map(|id| id.len()),
        "headers": names,
        "content-type": kept("content-type"),
        "ratelimit": kept("ratelimit"),
        "ratelimit-policy": kept("ratelimit-policy"),
        "retry-after": kept("retry-after"),
        "allow": kept("allow"),
        "cors": kept("access-control-allow-origin"),
    })
}

/// A stored row with what differs by contestant by design taken out.
fn row_view(tag: &str, row: &harbour_e2e::StoredRow) -> Value {
    let mut payload = row.payload.clone();
    for volatile in ["request_id", "received_at_ms"] {
        payload.as_object_mut().map(|p| p.remove(volatile));
    }
    let text = payload
        .to_string()
        .replace(&format!("-{tag}"), "-TAG")
        .replace(&format!(" {tag}"), " TAG");
    serde_json::json!({
        "region": row.region,
        "key": row.idempotency_key.replace(&format!("-{tag}-"), "-TAG-"),
        "platform_country": row.platform_country,
        "declared_country": row.declared_country,
        "payload": serde_json::from_str::<Value>(&text).unwrap_or(Value::Null),
    })
}

/// Sends every case to harbour and to the peer; whether they all agreed.
pub fn check(bench: &Bench) -> bool {
    let contestants = [("harbour", bench.harbour_port), ("peer", bench.peer_port)];
    let mut agreed = 0;
    let mut differences = Vec::new();
    let (harbour_cases, peer_cases) = (cases("harbour"), cases("peer"));
    for (i, (hc, pc)) in harbour_cases.iter().zip(&peer_cases).enumerate() {
        // A client of its own per case: the per-client limit is a case of its own below.
        let client = format!("198.51.100.{}", 10 + i);
        let h = view(&send(contestants[0].1, "harbour", hc, &client));
        let p = view(&send(contestants[1].1, "peer", pc, &client));
        if h == p {
            agreed += 1;
        } else {
            differences.push(format!(
                "{}:\n      harbour {h}\n      peer    {p}",
                hc.name
            ));
        }
    }
    // The form description: the same, challenge token aside (each hands out its own).
    let description = |port| {
        let mut d = raw(
            port,
            format!("GET {FORM}?lang=de HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
                .as_bytes(),
        )
        .unwrap()
        .json();
        let token = d["challenge"]["token"].take();
        (
            d,
            token
                .as_str()
                .map(|t| t.split('.').map(str::len).collect::<Vec<_>>()),
        )
    };
    let (hd, pd) = (
        description(bench.harbour_port),
        description(bench.peer_port),
    );
    if hd == pd {
        agreed += 1;
    } else {
        differences.push(format!(
            "form description:\n      harbour {hd:?}\n      peer    {pd:?}"
        ));
    }
    // Six entries from one client: the sixth is over the per-client limit.
    let limit: Vec<Vec<u16>> = contestants
        .iter()
        .map(|(tag, port)| {
            (0..6)
                .map(|n| {
                    let case = Case {
                        name: [
                            "limit 0", "limit 1", "limit 2", "limit 3", "limit 4", "limit 5",
                        ][n],
                        method: "POST",
                        path: SUBMIT,
                        headers: vec![
                            ("content-type", "application/json".into()),
                            ("x-bench-cf", r#"{"country":"FR"}"#.into()),
                        ],
                        body: entry(&format!("{tag}-limit{n}"), "FR", ""),
                        solve: true,
                        key: true,
                    };
                    send(*port, tag, &case, "203.0.113.9").status
                })
                .collect()
        })
        .collect();
    if limit[0] == limit[1] {
        agreed += 1;
    } else {
        differences.push(format!(
            "per-client limit: harbour {:?}, peer {:?}",
            limit[0], limit[1]
        ));
    }
    // The rows each stored, alike once the tag is taken out.
    let rows = |tag: &str| {
        let mut rows: Vec<Value> = bench
            .dbs
            .iter()
            .flat_map(|(_, db)| read_rows(db))
            .filter(|r| r.idempotency_key.starts_with(&format!("parity-{tag}-")))
            .map(|r| row_view(tag, &r))
            .collect();
        rows.sort_by_key(|r| r["key"].to_string());
        rows
    };
    let (hr, pr) = (rows("harbour"), rows("peer"));
    if hr == pr && !hr.is_empty() {
        agreed += 1;
    } else {
        differences.push(format!(
            "stored rows:\n      harbour {hr:?}\n      peer    {pr:?}"
        ));
    }
    println!(
        "parity: harbour and the peer agree on {agreed} of {} checks ({} stored rows each)",
        agreed + differences.len(),
        hr.len()
    );
    for d in &differences {
        println!("    differs: {d}");
    }
    differences.is_empty()
}
