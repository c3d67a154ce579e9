//! What is kept, for how long, and who processes it: the inventory of every data element harbour
//! handles (one table, `ELEMENTS`, plus a row per field of each campaign) and the record of
//! processing (GDPR Art. 30). The tests read the origin's table definitions, the forwarded
//! entry's writer and the log lines' writers, and fail when one of their names is missing here.

use std::fmt::Write as _;

use harbour_contract::http::{HEADER_IDEMPOTENCY_KEY, HEADER_SIGNATURE};
use harbour_policy::{Campaign, Policy};

/// Where an element lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Place {
    /// In the memory of the isolate that runs harbour, in the Cloudflare location.
    EdgeMemory,
    /// In the signed request from the location to one origin of the entry's region.
    Forwarded,
    /// In the origin's database, in the entry's region.
    OriginStore,
    /// In log lines (the edge's, through the platform; the origin's, on its host).
    Logs,
    /// In a service of the platform (Cloudflare), not in harbour's code or store.
    Platform,
    /// In a file an origin command writes, on the host that runs it, in the region.
    CommandOutput,
}

impl Place {
    fn text(self) -> &'static str {
        match self {
            Place::EdgeMemory => "edge memory",
            Place::Forwarded => "forwarded",
            Place::OriginStore => "origin store in the region",
            Place::Logs => "logs",
            Place::Platform => "platform",
            Place::CommandOutput => "a command's output in the region",
        }
    }
}

/// How long an element is kept and how it goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Retention {
    /// The entry's: the campaign's retention rule, the hourly sweep, `harbour-entries erase`.
    WithTheEntry,
    /// Only while the request is handled.
    Request,
    /// Stated in words.
    Said(&'static str),
}

/// One data element.
#[derive(Clone, Copy, Debug)]
pub struct Element {
    pub what: &'static str,
    pub purpose: &'static str,
    pub places: &'static [Place],
    pub retention: Retention,
    /// Its names in the origin's tables (`table.column`).
    pub stored: &'static [&'static str],
    /// Its names in the forwarded request (body members by path, headers by name).
    pub forwarded: &'static [&'static str],
    /// Its keys in log lines.
    pub logged: &'static [&'static str],
}

const WITH_ENTRY: &str = "with the entry: the campaign's retention rule, applied hourly by \
    the region's origins themselves; earlier on the person's request (`harbour-entries erase`)";
const EDGE_LOGS: &str = "the platform's retention for the account's logs (`wrangler.toml` turns \
    on no stored logs; `wrangler tail` streams them live)";

use Place::*;

/// Every element but the campaigns' fields (those are rows of their own, per campaign).
pub const ELEMENTS: &[Element] = &[
    Element {
        what: "the visitor's address",
        purpose: "the per-visitor limits",
        places: &[EdgeMemory],
        retention: Retention::Said(
            "the isolate's count for the limit's window; never forwarded, stored or logged",
        ),
        stored: &[],
        forwarded: &[],
        logged: &[],
    },
    Element {
        what: "the rate-limiting binding's key: `<campaign> <digest>`, the digest an \
               HMAC-SHA256 of the address under the edge's form key, 128 bits",
        purpose: "the per-visitor limit counted by the location's rate-limiting service",
        places: &[Platform],
        retention: Retention::Said("the platform's, for the limit's period"),
        stored: &[],
        forwarded: &[],
        logged: &[],
    },
    Element {
        what: "the campaign's id",
        purpose: "which campaign an entry, a log line or a record belongs to",
        places: &[Forwarded, OriginStore, Logs],
        retention: Retention::Said("with the entry; in log lines, the logs' retention"),
        stored: &["submissions.campaign", "erasures.campaign"],
        forwarded: &["campaign"],
        logged: &["campaign"],
    },
    Element {
        what: "the region",
        purpose: "which region's law and store an entry falls under",
        places: &[Forwarded, OriginStore, Logs],
        retention: Retention::Said("with the entry; in log lines, the logs' retention"),
        stored: &["submissions.region", "erasures.region"],
        forwarded: &["region"],
        logged: &["region"],
    },
    Element {
        what: "the country signals (the platform's, the declared one, and which placed the entry)",
        purpose: "a record of why the entry is stored in its region",
        places: &[EdgeMemory, Forwarded, OriginStore],
        retention: Retention::WithTheEntry,
        stored: &[
            "submissions.platform_country",
            "submissions.declared_country",
        ],
        forwarded: &[
            "signals",
            "signals.basis",
            "signals.declared_country",
            "signals.platform_country",
        ],
        logged: &[],
    },
    Element {
        what: "the entry as received (`payload`: every forwarded body member, fields included)",
        purpose: "the entry itself, for the campaign, access and export",
        places: &[OriginStore],
        retention: Retention::WithTheEntry,
        stored: &["submissions.payload", "submissions.seq"],
        forwarded: &["fields"],
        logged: &[],
    },
    Element {
        what: "the person digest: HMAC-SHA256 of the identifying fields under the region's \
               person key, with the campaign's id",
        purpose: "one entry per person in the region; finding a person's entries for access \
                  and erasure",
        places: &[OriginStore],
        retention: Retention::WithTheEntry,
        stored: &["submissions.person_digest"],
        forwarded: &[],
        logged: &[],
    },
    Element {
        what: "`fields_sha256`: an unkeyed SHA-256 of the entry's fields",
        purpose: "telling a retried entry from a different one under the same idempotency key",
        places: &[OriginStore],
        retention: Retention::WithTheEntry,
        stored: &["submissions.fields_sha256"],
        forwarded: &[],
        logged: &[],
    },
    Element {
        what: "the idempotency key (random from the page; for a client that sends none, \
               derived from a SHA-256 of the campaign and the fields)",
        purpose: "storing a retried entry once",
        places: &[EdgeMemory, Forwarded, OriginStore],
        retention: Retention::WithTheEntry,
        stored: &["submissions.idempotency_key"],
        forwarded: &[HEADER_IDEMPOTENCY_KEY],
        logged: &[],
    },
    Element {
        what: "the request id (arrival time and 16 random hexadecimal digits)",
        purpose: "tying an operator's log line to the entry it is about",
        places: &[Forwarded, OriginStore, Logs],
        retention: Retention::Said(
            "with the entry (in `payload`); in a decision line, the logs' retention",
        ),
        stored: &[],
        forwarded: &["request_id"],
        logged: &["request_id"],
    },
    Element {
        what: "the receipt id (the region's id and the row's number encrypted under the store's \
               key)",
        purpose: "the visitor's proof of entry; the draw's ticket is made from it",
        places: &[OriginStore],
        retention: Retention::WithTheEntry,
        stored: &["submissions.receipt_id", "submissions.receipt_derived"],
        forwarded: &[],
        logged: &[],
    },
    Element {
        what: "the times: received at the edge, stored at the origin",
        purpose: "the record of when the entry was made",
        places: &[Forwarded, OriginStore],
        retention: Retention::WithTheEntry,
        stored: &["submissions.stored_at_ms"],
        forwarded: &["received_at_ms"],
        logged: &[],
    },
    Element {
        what: "the notice record: the locale and version of the notice the visitor was shown",
        purpose: "the controller's record of consent (GDPR Art. 7(1))",
        places: &[Forwarded, OriginStore],
        retention: Retention::WithTheEntry,
        stored: &["submissions.notice_locale", "submissions.notice_version"],
        forwarded: &["notice", "notice.locale", "notice.version"],
        logged: &[],
    },
    Element {
        what: "the marketing withdrawal time",
        purpose: "the record that the person withdrew their marketing consent (GDPR Art. 7(3))",
        places: &[OriginStore],
        retention: Retention::WithTheEntry,
        stored: &["submissions.marketing_withdrawn_ms"],
        forwarded: &[],
        logged: &[],
    },
    Element {
        what: "an erasure record: when, which campaign and region, how many entries (no \
               personal data)",
        purpose: "the proof that an erasure request was carried out",
        places: &[OriginStore],
        retention: Retention::Said(
            "as long as the region's store; no retention rule deletes it, it names no one",
        ),
        stored: &[
            "erasures.seq",
            "erasures.at_ms",
            "erasures.region",
            "erasures.campaign",
            "erasures.entries",
        ],
        forwarded: &[],
        logged: &[],
    },
    Element {
        what: "the store's receipt key (AES-256, drawn when the store is created) and how many \
               epochs of row numbers it has handed out",
        purpose: "receipt ids: a row's number encrypted under the key, so ids are unique and \
                  say nothing about how many entries exist or which came first",
        places: &[OriginStore],
        retention: Retention::Said("as long as the store; names no one"),
        stored: &["receipt_key.key", "receipt_key.last_epoch"],
        forwarded: &[],
        logged: &[],
    },
    Element {
        what: "the store's schema version",
        purpose: "bringing an older store up to date",
        places: &[OriginStore],
        retention: Retention::Said("as long as the store; names no one"),
        stored: &["harbour_schema.version"],
        forwarded: &[],
        logged: &[],
    },
    Element {
        what: "the signature header: the time, the region and an HMAC-SHA256 with the region's \
               signing key",
        purpose: "the origin takes only entries signed for its own region",
        places: &[Forwarded],
        retention: Retention::Request,
        stored: &[],
        forwarded: &[HEADER_SIGNATURE, "content-type"],
        logged: &[],
    },
    Element {
        what: "the edge's log lines: decisions (request id, campaign, region, phase, outcome, \
               status, attempts, latency), summaries (counts per outcome, the shadow policy's \
               changes), breaker and rate-limiting-service states; never a field value, an \
               address or an idempotency key",
        purpose: "operating the edge (see 'What is logged')",
        places: &[Logs, Platform],
        retention: Retention::Said(EDGE_LOGS),
        stored: &[],
        forwarded: &[],
        logged: &[
            "msg",
            "phase",
            "outcome",
            "status",
            "attempts",
            "latency_ms",
            "from_ms",
            "to_ms",
            "outcomes",
            "count",
            "latency_ms_mean",
            "latency_ms_max",
            "shadow",
            "evaluated",
            "outcome_changes",
            "region_changes",
            "live",
            "candidate",
            "origin",
            "state",
            "open_ms",
            "binding",
            "mode",
            "answer",
            "unanswered",
        ],
    },
    Element {
        what: "the origin's log lines: refusals by code, storage errors, retention counts, its \
               start; never a field value",
        purpose: "operating the origin",
        places: &[Logs],
        retention: Retention::Said("the origin host's log retention, in the region"),
        stored: &[],
        forwarded: &[],
        logged: &[
            "msg",
            "code",
            "error",
            "warning",
            "deleted",
            "listen",
            "tls",
            "tls_client_ca",
            "ops_listen",
            "store",
        ],
    },
    Element {
        what: "draw tickets (HMAC-SHA256 of the published seed and a receipt id) and, for a \
               global draw, a draw digest per candidate (HMAC under the campaign's draw key)",
        purpose: "drawing winners fairly, one entry per person",
        places: &[CommandOutput],
        retention: Retention::Said(
            "computed when a draw runs; a global draw's candidates file is kept and deleted \
             by whoever runs the draw",
        ),
        stored: &[],
        forwarded: &[],
        logged: &[],
    },
];

fn places(list: &[Place]) -> String {
    list.iter().map(|p| p.text()).collect::<Vec<_>>().join(", ")
}

fn names(element: &Element) -> String {
    let all: Vec<String> = element
        .stored
        .iter()
        .chain(element.forwarded)
        .map(|n| format!("`{n}`"))
        .collect();
    if all.is_empty() {
        String::new()
    } else {
        format!(" ({})", all.join(", "))
    }
}

fn retention_text(r: Retention) -> &'static str {
    match r {
        Retention::WithTheEntry => WITH_ENTRY,
        Retention::Request => "only while the request is sent",
        Retention::Said(text) => text,
    }
}

fn field_rows(out: &mut String, campaign: &Campaign) {
    for f in &campaign.fields {
        let _ = writeln!(
            out,
            "| `{}`: the field `{}` (\"{}\") (`fields.{}`) | {} | {} | {} days after the \
             campaign ends; {} |",
            campaign.id,
            f.name,
            f.label,
            f.name,
            campaign.notice.purpose(harbour_policy::LOCALES[0]),
            places(&[EdgeMemory, Forwarded, OriginStore]),
            campaign.retention_days,
            WITH_ENTRY
        );
    }
}

/// The section: the inventory, then the record of processing.
pub fn render(out: &mut String, policy: &Policy) {
    out.push_str(
        "## What is kept, for how long, and who processes it\n\n\
         Every data element harbour handles, what it is for, where it lives and how it goes. \
         Nothing else about a visitor is kept. A test reads the origin's tables, the forwarded \
         entry and the log lines and fails when one of their names is missing here.\n\n\
         | Element | Purpose | Where it lives | Kept for, and deleted by |\n\
         | --- | --- | --- | --- |\n",
    );
    for campaign in &policy.campaigns {
        field_rows(out, campaign);
    }
    for e in ELEMENTS {
        let _ = writeln!(
            out,
            "| {}{} | {} | {} | {} |",
            e.what,
            names(e),
            e.purpose,
            places(e.places),
            retention_text(e.retention)
        );
    }
    out.push_str(
        "\n### Record of processing (GDPR Art. 30)\n\n\
         The controller of each campaign is named in its notice (above); the visitors who enter \
         are the data subjects; the data are those listed above. No personal data is sent from \
         one region to another: only a global draw's pseudonymous candidates cross, where the \
         policy allows it (see 'Drawing winners').\n\n\
         | Processor | What it does | Where |\n| --- | --- | --- |\n\
         | Cloudflare | runs the edge: reads and decides each entry, counts the binding's key, \
         keeps the platform's records of the requests | its locations, as 'Where processing \
         happens' says |\n",
    );
    for region in &policy.regions {
        let host = region.operator.as_deref().unwrap_or("not yet named");
        let _ = writeln!(
            out,
            "| {host} | hosts region `{}`'s origins: stores, deletes and draws its entries | in \
             the region (`{}`) |",
            region.id,
            harbour_contract::env::origins_var(&region.id)
        );
    }
    out.push('\n');
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;
    use std::path::Path;

    fn source(path: &str) -> String {
        let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(path);
        std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    /// `table.column` for every column of every `CREATE TABLE` and `ADD COLUMN` in `text`.
    fn columns(text: &str) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        let mut rest = text;
        while let Some(at) = rest.find("CREATE TABLE ") {
            rest = &rest[at + "CREATE TABLE ".len()..];
            let head = rest.trim_start_matches("IF NOT EXISTS ");
            let Some(open) = head.find('(') else { break };
            let table = head[..open].trim().to_owned();
            // Only a statement: "CREATE TABLE" in a comment names no table.
            if table.is_empty() || !table.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                continue;
            }
            // The body ends at the parenthesis that closes the first.
            let mut depth = 0;
            let mut end = open;
            for (i, c) in head[open..].char_indices() {
                match c {
                    '(' => depth += 1,
                    ')' => {
                        depth -= 1;
                        if depth == 0 {
                            end = open + i;
                            break;
                        }
                    }
                    _ => {}
                }
            }
            let body = &head[open + 1..end];
            let mut depth = 0;
            let mut item = String::new();
            let mut items = Vec::new();
            for c in body.chars() {
                match c {
                    '(' => depth += 1,
                    ')' => depth -= 1,
                    ',' if depth == 0 => {
                        items.push(std::mem::take(&mut item));
                        continue;
                    }
                    _ => {}
                }
                item.push(c);
            }
            items.push(item);
            for item in items {
                let item: String = item
                    .lines()
                    .filter(|l| !l.trim_start().starts_with("--"))
                    .collect::<Vec<_>>()
                    .join(" ");
                let Some(word) = item.split_whitespace().next() else {
                    continue;
                };
                if ["CONSTRAINT", "UNIQUE", "PRIMARY", "FOREIGN", "CHECK"].contains(&word) {
                    continue;
                }
                out.insert(format!("{table}.{word}"));
            }
        }
        for (at, _) in text.match_indices("ADD COLUMN ") {
            let tail = text[at + "ADD COLUMN ".len()..].trim_start_matches("IF NOT EXISTS ");
            let word: String = tail
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '{')
                .collect();
            // SQLite's added columns are named in its `ADDED_COLUMNS` list.
            if !word.starts_with('{') {
                out.insert(format!("submissions.{word}"));
            }
        }
        out
    }

    /// The SQLite store's `ADDED_COLUMNS` entries.
    fn added_columns(text: &str) -> BTreeSet<String> {
        let start = text.find("const ADDED_COLUMNS").expect("ADDED_COLUMNS");
        let end = start + text[start..].find("];").expect("end of ADDED_COLUMNS");
        text[start..end]
            .match_indices("(\"")
            .map(|(at, _)| {
                let name = &text[start + at + 2..end];
                format!("submissions.{}", &name[..name.find('"').unwrap_or(0)])
            })
            .collect()
    }

    /// Every JSON key a writer spells: `\"key\":` in hand-written lines, `"key":` in `json!`.
    fn json_keys(text: &str, escaped: bool) -> BTreeSet<String> {
        let (open, close) = if escaped {
            ("\\\"", "\\\":")
        } else {
            ("\"", "\":")
        };
        let mut out = BTreeSet::new();
        for (at, _) in text.match_indices(close) {
            let before = &text[..at];
            if let Some(start) = before.rfind(open) {
                let key = &before[start + open.len()..];
                if !key.is_empty()
                    && key
                        .chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
                {
                    out.insert(key.to_owned());
                }
            }
        }
        out
    }

    /// The `json!` log lines of an origin source file: from each `json!(` naming `"msg"` to its
    /// `})`, test modules left out.
    fn origin_log_keys(text: &str) -> BTreeSet<String> {
        let text = text.split("#[cfg(test)]\nmod tests").next().unwrap_or(text);
        let mut out = BTreeSet::new();
        for (at, _) in text.match_indices("json!(") {
            let span = &text[at..];
            let end = span.find("})").map_or(span.len(), |e| e + 2);
            if span[..end].contains("\"msg\"") {
                out.extend(json_keys(&span[..end], false));
            }
        }
        out
    }

    fn inventory_names(pick: fn(&Element) -> &'static [&'static str]) -> BTreeSet<String> {
        ELEMENTS
            .iter()
            .flat_map(|e| pick(e).iter().map(|n| (*n).to_owned()))
            .collect()
    }

    fn missing(found: &BTreeSet<String>, named: &BTreeSet<String>) -> Vec<String> {
        found.difference(named).cloned().collect()
    }

    #[test]
    fn every_stored_column_is_in_the_inventory() {
        let stored = inventory_names(|e| e.stored);
        let sqlite = source("origin/src/store/sqlite.rs");
        let sqlite = sqlite
            .split("#[cfg(test)]\nmod tests")
            .next()
            .unwrap_or(&sqlite);
        let postgres = source("origin/src/store/postgres.rs");
        let postgres = postgres
            .split("#[cfg(test)]\nmod tests")
            .next()
            .unwrap_or(&postgres);
        let mut found = columns(sqlite);
        found.extend(added_columns(sqlite));
        found.extend(columns(postgres));
        // The reading found the tables it must.
        for known in [
            "submissions.person_digest",
            "erasures.entries",
            "harbour_schema.version",
        ] {
            assert!(
                found.contains(known),
                "{known} not read from the stores: {found:?}"
            );
        }
        assert_eq!(missing(&found, &stored), Vec::<String>::new());
        // And the inventory names nothing the stores do not have.
        assert_eq!(missing(&stored, &found), Vec::<String>::new());
    }

    #[test]
    fn every_forwarded_member_is_in_the_inventory() {
        let named = inventory_names(|e| e.forwarded);
        let segments: BTreeSet<String> = named
            .iter()
            .flat_map(|n| n.split('.').map(str::to_owned))
            .collect();
        let found = json_keys(&source("crates/contract/src/entry.rs"), true);
        assert!(found.contains("received_at_ms"), "{found:?}");
        assert_eq!(missing(&found, &segments), Vec::<String>::new());
        // What the edge's own code forwards, fields and headers included.
        let policy = Policy::parse(harbour_policy::SHIPPED_POLICY).unwrap();
        for campaign in &policy.campaigns {
            let (headers, body) =
                crate::sample_forward(harbour_policy::SHIPPED_POLICY, &policy, campaign).unwrap();
            let mut keys = Vec::new();
            crate::members(&body, "", &mut keys);
            for key in keys.into_iter().chain(headers) {
                let covered = named.contains(&key)
                    || key
                        .strip_prefix("fields.")
                        .is_some_and(|f| campaign.field(f).is_some());
                assert!(covered, "forwarded {key:?} is not in the inventory");
            }
        }
    }

    #[test]
    fn every_log_key_is_in_the_inventory() {
        let named = inventory_names(|e| e.logged);
        let mut found = BTreeSet::new();
        for file in ["journal.rs", "breaker.rs", "phase/admission.rs"] {
            let text = source(&format!("crates/core/src/{file}"));
            let text = text
                .split("#[cfg(test)]\nmod tests")
                .next()
                .unwrap_or(&text)
                .to_owned();
            assert!(text.contains("\\\"msg\\\""), "{file} writes no log line");
            found.extend(json_keys(&text, true));
        }
        for file in ["server.rs", "retention.rs", "main.rs", "listener.rs"] {
            found.extend(origin_log_keys(&source(&format!("origin/src/{file}"))));
        }
        assert!(
            found.contains("deleted") && found.contains("latency_ms"),
            "{found:?}"
        );
        assert_eq!(missing(&found, &named), Vec::<String>::new());
    }

    #[test]
    fn the_record_of_processing_names_each_region_s_host_or_says_it_is_not_named() {
        let mut policy = Policy::parse(harbour_policy::SHIPPED_POLICY).unwrap();
        policy.regions[0].operator = Some("Example Hosting, Frankfurt".into());
        let mut out = String::new();
        render(&mut out, &policy);
        assert!(
            out.contains("| Example Hosting, Frankfurt | hosts region"),
            "{out}"
        );
        let unnamed = out.matches("| not yet named | hosts region").count();
        assert_eq!(unnamed, policy.regions.len() - 1, "{out}");
        for campaign in &policy.campaigns {
            for f in &campaign.fields {
                assert!(out.contains(&format!("(`fields.{}`)", f.name)), "{out}");
            }
        }
    }
}
