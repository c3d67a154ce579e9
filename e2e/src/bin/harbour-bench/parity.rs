//! Before anything is timed: harbour and the plain-JS peer answer the same requests alike
//! (status, problem code, field errors, headers, receipt region) and store the same rows, so the
//! comparison measures two implementations of one job.

use serde_json::Value;

use harbour_e2e::http::{raw, Response};
use harbour_e2e::rows::{read_rows, StoredRow};

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
    /// Send the `Harbour-Notice` of the contestant's form description.
    notice: bool,
}

fn entry(tag: &str, country: &str, extra: &str) -> String {
    format!(
        r#"{{"name":"  Parity {tag} ","email":"parity-{tag}@Example.ORG","country":"{country}","consent":true{extra}}}"#
    )
}

/// A JSON submission to the campaign, with a key and its work.
fn json(body: String) -> Case {
    Case {
        name: "",
        method: "POST",
        path: SUBMIT,
        headers: vec![("content-type", "application/json".into())],
        body,
        solve: true,
        key: true,
        notice: true,
    }
}

fn named(name: &'static str, case: Case) -> Case {
    Case { name, ..case }
}

fn with(mut case: Case, header: &'static str, value: &str) -> Case {
    case.headers.push((header, value.to_owned()));
    case
}

/// `case` from the platform country `country` (workerd's `request.cf`, from `x-bench-cf`).
fn from(country: &str, case: Case) -> Case {
    with(case, "x-bench-cf", &format!(r#"{{"country":"{country}"}}"#))
}

fn cases(tag: &str) -> Vec<Case> {
    let mut cases = routing_cases(tag);
    cases.extend(refusal_cases(tag));
    cases.extend(accepted_cases(tag));
    cases
}

/// Paths, methods, CORS, content types, the size cap and the proof of work.
fn routing_cases(tag: &str) -> Vec<Case> {
    let empty = || json(String::new());
    let it = || json(entry(tag, "IT", ""));
    vec![
        named(
            "no such path",
            Case {
                path: "/api/other",
                ..empty()
            },
        ),
        named(
            "no such campaign",
            Case {
                path: "/api/campaigns/nope/submissions",
                ..empty()
            },
        ),
        named(
            "form by POST",
            Case {
                path: FORM,
                ..empty()
            },
        ),
        named(
            "submissions by GET",
            Case {
                method: "GET",
                ..empty()
            },
        ),
        named(
            "preflight",
            with(
                Case {
                    method: "OPTIONS",
                    ..empty()
                },
                "origin",
                "http://localhost:8787",
            ),
        ),
        named("foreign page", with(it(), "origin", "https://evil.example")),
        named(
            "text/plain",
            Case {
                headers: vec![("content-type", "text/plain".into())],
                ..it()
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
                ..it()
            },
        ),
        named(
            "junk proof",
            with(
                Case {
                    solve: false,
                    ..it()
                },
                "harbour-challenge",
                "junk",
            ),
        ),
        named("proof without key", Case { key: false, ..it() }),
    ]
}

/// Bodies that do not validate, and country signals that place nothing.
fn refusal_cases(tag: &str) -> Vec<Case> {
    let it = || json(entry(tag, "IT", ""));
    vec![
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
        named("residency conflict", from("IT", json(entry(tag, "CN", "")))),
        named(
            "no platform country",
            Case {
                headers: vec![("content-type", "application/json".into())],
                ..it()
            },
        ),
        named("tor", from("T1", it())),
        named("unknown country", from("XX", it())),
        named(
            "no notice",
            from(
                "IT",
                Case {
                    notice: false,
                    ..it()
                },
            ),
        ),
        named(
            "another notice",
            from(
                "IT",
                with(
                    Case {
                        notice: false,
                        ..it()
                    },
                    "harbour-notice",
                    "en.00000000000000000000000000000000",
                ),
            ),
        ),
        named(
            "declared move unconfirmed",
            from("US", json(entry(&format!("{tag}-move"), "CN", ""))),
        ),
    ]
}

/// Submissions that are stored (or, for the honeypot, look it).
fn accepted_cases(tag: &str) -> Vec<Case> {
    let form = Case {
        headers: vec![(
            "content-type",
            "application/x-www-form-urlencoded; charset=UTF-8".into(),
        )],
        ..json(format!(
            "name=Form+{tag}&email=form-{tag}%40example.org&country=de&consent=on"
        ))
    };
    let honeypot = entry(&format!("{tag}-bot"), "IT", r#","remarks":"http://spam""#);
    let page = from("AU", json(entry(&format!("{tag}-page"), "AU", "")));
    vec![
        named("valid, EU", from("IT", json(entry(tag, "IT", "")))),
        named(
            "valid, rest of world",
            from("US", json(entry(&format!("{tag}-us"), "US", ""))),
        ),
        named(
            "declared move confirmed",
            from(
                "US",
                json(entry(
                    &format!("{tag}-cn"),
                    "CN",
                    r#","confirm_region":"cn""#,
                )),
            ),
        ),
        named("form encoded", from("DE", form)),
        named("honeypot", from("IT", json(honeypot))),
        named(
            "cross-origin allowed",
            with(page, "origin", "http://localhost:8787"),
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
    let work = challenge_for(port);
    if case.solve {
        head.push_str(&format!("harbour-challenge: {}\r\n", work.proof(&key)));
    }
    if let Some(notice) = work.notice.as_ref().filter(|_| case.notice) {
        head.push_str(&format!("harbour-notice: {notice}\r\n"));
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
fn row_view(tag: &str, row: &StoredRow) -> Value {
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

/// The checks that agreed, and a description of each that did not.
#[derive(Default)]
struct Tally {
    agreed: usize,
    differences: Vec<String>,
}

impl Tally {
    fn compare<T: PartialEq + std::fmt::Debug>(&mut self, what: &str, harbour: T, peer: T) {
        if harbour == peer {
            self.agreed += 1;
        } else {
            self.differ(what, format!("{harbour:?}"), format!("{peer:?}"));
        }
    }

    fn differ(&mut self, what: &str, harbour: String, peer: String) {
        self.differences.push(format!(
            "{what}:\n      harbour {harbour}\n      peer    {peer}"
        ));
    }
}

/// Sends every case to harbour and to the peer; whether they all agreed.
pub fn check(bench: &Bench) -> bool {
    let mut tally = Tally::default();
    let (harbour_cases, peer_cases) = (cases("harbour"), cases("peer"));
    for (i, (hc, pc)) in harbour_cases.iter().zip(&peer_cases).enumerate() {
        // A client of its own per case: the per-client limit is a case of its own below.
        let client = format!("198.51.100.{}", 10 + i);
        let h = view(&send(bench.harbour_port, "harbour", hc, &client));
        let p = view(&send(bench.peer_port, "peer", pc, &client));
        if h == p {
            tally.agreed += 1;
        } else {
            tally.differ(hc.name, h.to_string(), p.to_string());
        }
    }
    tally.compare(
        "form description",
        description(bench.harbour_port),
        description(bench.peer_port),
    );
    tally.compare(
        "per-client limit",
        limit_statuses(bench.harbour_port, "harbour"),
        limit_statuses(bench.peer_port, "peer"),
    );
    let (hr, pr) = (stored_rows(bench, "harbour"), stored_rows(bench, "peer"));
    let stored = hr.as_ref().map_or(0, Vec::len);
    match (hr, pr) {
        (Ok(hr), Ok(pr)) if !hr.is_empty() => tally.compare("stored rows", hr, pr),
        (Ok(_), Ok(_)) => tally.differ("stored rows", "none".into(), "-".into()),
        (Err(e), _) | (_, Err(e)) => tally.differ("stored rows", e.clone(), e),
    }
    println!(
        "parity: harbour and the peer agree on {} of {} checks ({stored} stored rows each)",
        tally.agreed,
        tally.agreed + tally.differences.len(),
    );
    for d in &tally.differences {
        println!("    differs: {d}");
    }
    tally.differences.is_empty()
}

/// The form description: the same, challenge token aside (each hands out its own), but for the
/// lengths of the token's parts.
fn description(port: u16) -> (Value, Option<Vec<usize>>) {
    let request = format!("GET {FORM}?lang=de HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n");
    let mut d = raw(port, request.as_bytes()).unwrap().json();
    let token = d["challenge"]["token"].take();
    let parts = token
        .as_str()
        .map(|t| t.split('.').map(str::len).collect::<Vec<_>>());
    (d, parts)
}

/// Six entries from one client: the sixth is over the per-client limit.
fn limit_statuses(port: u16, tag: &str) -> Vec<u16> {
    const NAMES: [&str; 6] = [
        "limit 0", "limit 1", "limit 2", "limit 3", "limit 4", "limit 5",
    ];
    NAMES
        .iter()
        .enumerate()
        .map(|(n, name)| {
            let case = named(
                name,
                from("FR", json(entry(&format!("{tag}-limit{n}"), "FR", ""))),
            );
            send(port, tag, &case, "203.0.113.9").status
        })
        .collect()
}

/// The rows a contestant stored, alike once the tag is taken out; an unreadable store is an
/// error.
fn stored_rows(bench: &Bench, tag: &str) -> Result<Vec<Value>, String> {
    let mut rows = Vec::new();
    for (_, db) in &bench.dbs {
        for row in read_rows(db)? {
            if row.idempotency_key.starts_with(&format!("parity-{tag}-")) {
                rows.push(row_view(tag, &row));
            }
        }
    }
    rows.sort_by_key(|r| r["key"].to_string());
    Ok(rows)
}
