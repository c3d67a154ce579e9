//! End to end through the real stack: reference origins (processes, SQLite), the release worker
//! under `wrangler dev` on 127.0.0.1, raw HTTP. One stack serves every scenario; each scenario
//! uses its own client addresses and content so they do not interfere. Prints one line per
//! scenario and a closing "e2e: N passed, M failed"; the stack is stopped even when one fails.
//! `tests/postgres.rs` runs the store-dependent scenarios on PostgreSQL origins.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use harbour_contract::signature::{sha256_hex, Signed, SigningKey};
use harbour_e2e::http::{raw, request, send_within, Refusal, Response};
use harbour_e2e::process::wait_until;
use harbour_e2e::project::workspace_root;
use harbour_e2e::proof::{new_key, Prepared};
use harbour_e2e::proxy::Blackhole;
use harbour_e2e::runner::{chosen, run, Scenario};
use harbour_e2e::scenarios::{
    a_lost_answer_after_commit_gives_the_first_receipt, client, confirmed_entry, counts,
    each_country_lands_in_its_region_only, entry, one_entry_per_person,
    same_key_twice_gives_one_row_and_one_receipt, unique,
};
use harbour_e2e::stack::Stack;
use harbour_policy::Policy;

const SUBMIT: &str = "/api/campaigns/spring-launch/submissions";

fn page_and_form_description(stack: &Stack) {
    let page = request(stack.port, "GET", "/", &[], b"");
    assert_eq!(page.status, 200);
    assert!(page
        .header("content-type")
        .unwrap_or("")
        .starts_with("text/html"));
    let form = request(stack.port, "GET", "/api/campaigns/spring-launch", &[], b"");
    assert_eq!(form.status, 200, "{}", form.body);
    let names: Vec<String> = form.json()["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(names, ["name", "email", "country", "consent", "marketing"]);
    assert_eq!(form.json()["honeypot"], "remarks");
    assert_eq!(form.json()["lang"], "en");
    let challenge = &form.json()["challenge"];
    assert!(challenge["token"]
        .as_str()
        .unwrap()
        .starts_with("spring-launch."));
    assert!(challenge["difficulty_bits"].as_u64().unwrap() >= 1);
}

/// Platform IT, declared CN: two regions with laws of their own, so the policy's default rule
/// refuses with a field error on the declared country, and nothing reaches or is stored in any
/// region.
fn a_conflict_between_two_laws_is_refused_and_stored_nowhere(stack: &Stack) {
    let (received, stored) = (stack.received(), counts(stack));
    let reply = stack.submit(Some("IT"), &client(), &entry("CN"), &[]);
    assert_eq!(reply.status, 422, "{}", reply.body);
    assert_eq!(
        reply.header("content-type"),
        Some("application/problem+json")
    );
    let errors = reply.json()["errors"].clone();
    assert_eq!(errors.as_array().map(Vec::len), Some(1), "{errors}");
    assert_eq!(errors[0]["field"], "country");
    assert_eq!(errors[0]["code"], "residency_conflict");
    assert!(errors[0]["detail"].as_str().is_some_and(|d| !d.is_empty()));
    assert_eq!(stack.received(), received, "a conflict reached an origin");
    assert_eq!(counts(stack), stored, "a conflict was stored");
}

/// Platform US (rest of the world), declared CN: the region with a law wins once the visitor
/// confirms where the entry is stored (unconfirmed, it is a field error and stored nowhere); the
/// row is in CN and nowhere else, and both signals are kept with the basis that placed it.
fn a_law_beats_the_rest_of_the_world_and_both_signals_are_kept(stack: &Stack) {
    let before = counts(stack);
    let unconfirmed = stack.submit(Some("US"), &client(), &entry("CN"), &[]);
    assert_eq!(unconfirmed.status, 422, "{}", unconfirmed.body);
    assert_eq!(unconfirmed.json()["errors"][0]["field"], "country");
    assert_eq!(
        unconfirmed.json()["errors"][0]["code"],
        "storage_unconfirmed"
    );
    assert_eq!(counts(stack), before, "an unconfirmed move was stored");
    let reply = stack.submit(Some("US"), &client(), &confirmed_entry("CN", "cn"), &[]);
    assert_eq!(reply.status, 202, "{}", reply.body);
    assert_eq!(reply.json()["receipt"]["region"], "cn");
    let after = counts(stack);
    for ((region, was), (_, now)) in before.iter().zip(&after) {
        assert_eq!(
            now - was,
            usize::from(region == "cn"),
            "rows added to {region}"
        );
    }
    let row = stack.stored()["cn"].last().cloned().unwrap();
    assert_eq!(
        row.receipt_id,
        reply.json()["receipt"]["id"].as_str().unwrap()
    );
    assert_eq!(row.platform_country, "US");
    assert_eq!(row.declared_country.as_deref(), Some("CN"));
    assert_eq!(row.payload["signals"]["basis"], "declared_law");
}

/// Every field error of a body at once, in the order of the fields.
fn every_field_error_at_once(stack: &Stack) {
    let invalid = stack.submit(
        Some("IT"),
        &client(),
        r#"{"name":"","email":"nope","country":"ZZ","consent":false,"coupon":"x"}"#,
        &[],
    );
    assert_eq!(invalid.status, 422);
    assert_eq!(
        invalid.header("content-type"),
        Some("application/problem+json")
    );
    let codes: Vec<(String, String)> = invalid.json()["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["field"].as_str().unwrap().into(),
                e["code"].as_str().unwrap().into(),
            )
        })
        .collect();
    let expected = [
        ("coupon", "unknown_field"),
        ("name", "required"),
        ("email", "invalid_email"),
        ("country", "invalid_country"),
        ("consent", "must_be_true"),
    ];
    assert_eq!(codes, expected.map(|(f, c)| (f.to_owned(), c.to_owned())));
}

/// Over the body cap, with a length and while streaming one without.
fn oversize_bodies_are_refused(stack: &Stack) {
    let path = SUBMIT;
    let json = ("content-type", "application/json");
    let it = ("mf-cf-blob", r#"{"country":"IT"}"#);
    let big = format!(r#"{{"name":"{}"}}"#, "x".repeat(20_000));
    let ip = client();
    let oversize = request(
        stack.port,
        "POST",
        path,
        &[json, it, ("cf-connecting-ip", &ip)],
        big.as_bytes(),
    );
    assert_eq!(
        (oversize.status, oversize.json()["code"].as_str()),
        (413, Some("body_too_large"))
    );

    // No Content-Length: the cap is enforced while streaming.
    let mut chunked = format!(
        "POST {path} HTTP/1.1\r\nhost: 127.0.0.1\r\nconnection: close\r\naccept-encoding: identity\r\ncontent-type: application/json\r\nmf-cf-blob: {{\"country\":\"IT\"}}\r\ntransfer-encoding: chunked\r\n\r\n"
    )
    .into_bytes();
    for _ in 0..10 {
        chunked.extend_from_slice(format!("{:x}\r\n{}\r\n", 1000, "y".repeat(1000)).as_bytes());
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    let streamed = raw(stack.port, &chunked).unwrap();
    assert_eq!(streamed.status, 413, "{}", streamed.body);
}

fn methods_types_and_campaigns_are_checked(stack: &Stack) {
    let path = SUBMIT;
    let json = ("content-type", "application/json");
    let it = ("mf-cf-blob", r#"{"country":"IT"}"#);
    let get = request(stack.port, "GET", path, &[], b"");
    assert_eq!(
        (get.status, get.header("allow")),
        (405, Some("POST, OPTIONS"))
    );
    let put = request(stack.port, "PUT", path, &[json, it], entry("IT").as_bytes());
    assert_eq!(put.status, 405);

    let text = request(
        stack.port,
        "POST",
        path,
        &[("content-type", "text/plain"), it],
        entry("IT").as_bytes(),
    );
    assert_eq!(
        (text.status, text.json()["code"].as_str()),
        (415, Some("unsupported_media_type"))
    );
    let latin1 = request(
        stack.port,
        "POST",
        path,
        &[("content-type", "application/json; charset=iso-8859-1"), it],
        entry("IT").as_bytes(),
    );
    assert_eq!(latin1.status, 415);

    let unknown = request(
        stack.port,
        "POST",
        "/api/campaigns/no-such-campaign/submissions",
        &[json, it],
        entry("IT").as_bytes(),
    );
    assert_eq!(
        (unknown.status, unknown.json()["code"].as_str()),
        (404, Some("not_found"))
    );
}

/// A body that is not JSON, and country signals that place nothing.
fn unreadable_bodies_and_unplaceable_countries_are_refused(stack: &Stack) {
    let path = SUBMIT;
    let json = ("content-type", "application/json");
    let broken = stack.submit(Some("IT"), &client(), r#"{"name":"#, &[]);
    assert_eq!(
        (broken.status, broken.json()["code"].as_str()),
        (400, Some("malformed_body"))
    );

    for (blob, code) in [
        (r#"{"country":"XX"}"#, "country_unknown"),
        (r#"{"country":"T1"}"#, "country_anonymised"),
        (r#"{"asn":64500}"#, "country_missing"),
    ] {
        let ip = client();
        let [(k, key), (c, proof), (n, notice)] = stack.keyed();
        let reply = request(
            stack.port,
            "POST",
            path,
            &[
                json,
                ("mf-cf-blob", blob),
                ("cf-connecting-ip", &ip),
                (k, &key),
                (c, &proof),
                (n, &notice),
            ],
            entry("US").as_bytes(),
        );
        assert_eq!(
            (reply.status, reply.json()["code"].as_str()),
            (403, Some(code)),
            "{blob}"
        );
    }
}

fn refusals_reach_no_origin(stack: &Stack) {
    let received_before = stack.received();
    let stored_before = counts(stack);
    every_field_error_at_once(stack);
    oversize_bodies_are_refused(stack);
    methods_types_and_campaigns_are_checked(stack);
    unreadable_bodies_and_unplaceable_countries_are_refused(stack);
    // A filled honeypot looks accepted and goes nowhere.
    let bot = stack.submit(Some("IT"), &client(), r#"{"name":"Bot","email":"bot@example.org","country":"IT","consent":true,"remarks":"http://spam.example"}"#, &[]);
    assert_eq!(bot.status, 202);

    assert_eq!(
        stack.received(),
        received_before,
        "a refused request reached an origin"
    );
    assert_eq!(counts(stack), stored_before);
}

fn nth_plus_one_submission_is_limited_per_client(stack: &Stack) {
    let (busy, other) = (client(), client());
    // The work first: solving takes longer than the limit's 12 s per entry allows six to span.
    let solved: Vec<[(&str, String); 3]> = (0..7).map(|_| stack.keyed()).collect();
    let headers = |i: usize| -> Vec<(&str, &str)> {
        solved[i].iter().map(|(n, v)| (*n, v.as_str())).collect()
    };
    for i in 0..5 {
        let reply = stack.submit(Some("US"), &busy, &entry("US"), &headers(i));
        assert_eq!(reply.status, 202, "submission {i}: {}", reply.body);
    }
    let before = stack.received();
    let limited = stack.submit(Some("US"), &busy, &entry("US"), &headers(5));
    assert_eq!(limited.status, 429, "{}", limited.body);
    let retry_after: u64 = limited.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=12).contains(&retry_after), "retry-after {retry_after}");
    assert_eq!(
        limited.header("ratelimit-policy"),
        Some("\"client\";q=5;w=60")
    );
    assert!(limited.header("ratelimit").unwrap().contains("r=0"));
    // Rotating spoofable headers does not make a new client.
    let mut spoofing = headers(6);
    spoofing.extend([
        ("x-forwarded-for", "192.0.2.200"),
        ("x-real-ip", "192.0.2.201"),
        ("true-client-ip", "192.0.2.202"),
    ]);
    let spoofed = stack.submit(Some("US"), &busy, &entry("US"), &spoofing);
    assert_eq!(spoofed.status, 429);
    assert_eq!(
        stack.received(),
        before,
        "a limited request reached an origin"
    );
    let fine = stack.submit(Some("US"), &other, &entry("US"), &[]);
    assert_eq!(
        fine.status, 202,
        "another client is not limited: {}",
        fine.body
    );
}

fn client_country_headers_change_nothing(stack: &Stack) {
    let reply = stack.submit(
        Some("CN"),
        &client(),
        &entry("CN"),
        &[
            ("cf-ipcountry", "US"),
            ("x-forwarded-for", "8.8.8.8"),
            ("x-harbour-region", "global"),
            ("x-harbour-signature", "t=1,r=global,v1=00"),
        ],
    );
    assert_eq!(reply.status, 202, "{}", reply.body);
    assert_eq!(reply.json()["receipt"]["region"], "cn");
    let row = stack.stored()["cn"].last().cloned().unwrap();
    assert_eq!(row.platform_country, "CN");
}

fn failover_stays_in_region_and_retry_lands_once(stack: &mut Stack) {
    let eu = (stack.origin("eu").primary, stack.origin("eu").secondary);
    let others_before: BTreeMap<_, _> = stack
        .received()
        .into_iter()
        .filter(|(r, _)| *r != "eu")
        .collect();
    stack.stop_origin(eu.0);
    let reply = stack.submit(Some("IT"), &client(), &entry("IT"), &[]);
    assert_eq!(reply.status, 202, "secondary takes over: {}", reply.body);
    assert_eq!(reply.json()["receipt"]["region"], "eu");

    stack.stop_origin(eu.1);
    let key = format!("retry-key-{:016}", unique());
    let body = entry("DE");
    let ip = client();
    let down = stack.submit(Some("DE"), &ip, &body, &[("idempotency-key", &key)]);
    assert_eq!(down.status, 503, "{}", down.body);
    assert!(down.header("retry-after").is_some());
    assert_eq!(down.json()["idempotency_key"], key.as_str());
    let others_after: BTreeMap<_, _> = stack
        .received()
        .into_iter()
        .filter(|(r, _)| *r != "eu")
        .collect();
    assert_eq!(others_after, others_before, "failover left the region");

    stack.start_origin(eu.0);
    stack.start_origin(eu.1);
    let retried = stack.submit(Some("DE"), &ip, &body, &[("idempotency-key", &key)]);
    assert_eq!(retried.status, 202, "{}", retried.body);
    let again = stack.submit(Some("DE"), &ip, &body, &[("idempotency-key", &key)]);
    assert_eq!(again.body, retried.body);
    let rows = stack.stored()["eu"]
        .iter()
        .filter(|r| r.idempotency_key == key)
        .count();
    assert_eq!(rows, 1);

    // Operator matters get a log line each (the default log mode counts the rest): the
    // failover that stored, and the answer that no origin of the region could take it.
    let logged = |outcome: &str| {
        stack.worker_log().lines().any(|line| {
            line.contains("\"msg\":\"harbour.decision\"")
                && line.contains(&format!("\"outcome\":\"{outcome}\""))
                && line.contains("\"region\":\"eu\"")
                && line.contains("\"attempts\":2")
        })
    };
    wait_until("failover log lines", Duration::from_secs(10), || {
        logged("stored") && logged("origins_unavailable")
    });
    assert!(
        !stack.worker_log().contains("@example"),
        "the log carries no field values"
    );
}

fn origin_refuses_forged_stale_and_misdirected(stack: &Stack) {
    let eu = stack.origin("eu");
    let before = stack.stored()["eu"].len();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let send = |region_tag: &str, key: &[u8], ts: u64| {
        let body = format!(
            r#"{{"campaign":"spring-launch","region":"{region_tag}","signals":{{"platform_country":"IT"}},"fields":{{"name":"Mallory"}}}}"#
        );
        let hash = sha256_hex(body.as_bytes());
        let signature = SigningKey::new(key).unwrap().sign(&Signed {
            method: "POST",
            path: "/v1/submissions",
            timestamp_ms: ts,
            region: region_tag,
            idempotency_key: "forged-key-0123456789",
            body_sha256_hex: &hash,
        });
        request(
            eu.primary,
            "POST",
            "/v1/submissions",
            &[
                ("content-type", "application/json"),
                ("idempotency-key", "forged-key-0123456789"),
                ("x-harbour-signature", &signature),
            ],
            body.as_bytes(),
        )
    };
    assert_eq!(
        send("eu", b"a key the attacker made up, 32+ bytes", now).status,
        401
    );
    assert_eq!(send("eu", eu.key.as_bytes(), now - 3_600_000).status, 401);
    assert_eq!(send("cn", eu.key.as_bytes(), now).status, 421);
    // The MAC comes first: another region's tag with a made-up key says only 401.
    assert_eq!(
        send("cn", b"a key the attacker made up, 32+ bytes", now).status,
        401
    );
    assert_eq!(stack.stored()["eu"].len(), before);
    // The submissions port serves nothing else: counts and health are on the operations port.
    for path in ["/v1/count", "/health"] {
        assert_eq!(
            request(eu.primary, "GET", path, &[], b"").status,
            404,
            "{path}"
        );
    }
}

fn a_hanging_primary_times_out_and_the_secondary_stores(stack: &mut Stack) {
    let au = (stack.origin("au").primary, stack.origin("au").secondary);
    stack.stop_origin(au.0);
    let hole = Blackhole::bind(au.0);
    // The work first, so that only the answer is timed.
    let solved = stack.keyed();
    let headers: Vec<(&str, &str)> = solved.iter().map(|(n, v)| (*n, v.as_str())).collect();
    let started = Instant::now();
    let reply = stack.submit(Some("AU"), &client(), &entry("AU"), &headers);
    let waited = started.elapsed();
    drop(hole);
    stack.start_origin(au.0);
    assert_eq!(reply.status, 202, "{}", reply.body);
    assert_eq!(reply.json()["receipt"]["region"], "au");
    let timeout = std::time::Duration::from_millis(harbour_core::attempt::ATTEMPT_TIMEOUT_MS);
    assert!(
        waited >= timeout,
        "answered after {waited:?}, before the attempt timeout"
    );
    assert!(waited < timeout * 2, "took {waited:?}");
}

/// The longest a hostile request may wait for its refusal. Every one is answered in
/// milliseconds here; a server that hangs until the client gives up, or drops the connection
/// without a word, fails.
const REFUSAL_BOUND: Duration = Duration::from_secs(10);

/// A submission from Italy with a fresh client, key (unless `headers` has one) and its work,
/// then `headers`.
fn send_entry(stack: &Stack, headers: &[(&str, &str)], body: &[u8]) -> Response {
    let ip = client();
    let given = headers.iter().find(|(n, _)| *n == "idempotency-key");
    let key = given.map_or_else(new_key, |(_, k)| (*k).to_owned());
    let challenge = stack.challenge();
    let proof = challenge.solve(&key);
    let mut all: Vec<(&str, &str)> = vec![
        ("content-type", "application/json"),
        ("mf-cf-blob", r#"{"country":"IT"}"#),
        ("cf-connecting-ip", &ip),
        ("harbour-challenge", &proof),
        ("harbour-notice", &challenge.notice),
    ];
    if given.is_none() {
        all.push(("idempotency-key", &key));
    }
    all.extend_from_slice(headers);
    request(stack.port, "POST", SUBMIT, &all, body)
}

/// `reply` is the problem `status` / `code`.
fn expect_problem(reply: &Response, status: u16, code: &str) {
    assert_eq!(
        (reply.status, reply.json()["code"].as_str()),
        (status, Some(code)),
        "{}",
        reply.body
    );
    assert_eq!(
        reply.header("content-type"),
        Some("application/problem+json")
    );
}

/// `request` answered within `REFUSAL_BOUND`: the answer.
fn answered_within_bound(port: u16, request: &[u8], what: &str) -> Response {
    let (outcome, took) = send_within(port, request, REFUSAL_BOUND);
    match outcome {
        Refusal::Answered(response) if took < REFUSAL_BOUND => response,
        Refusal::Answered(_) => panic!("{what}: answered only after {took:?}"),
        Refusal::Closed(e) => panic!("{what}: the connection closed without an answer ({e})"),
        Refusal::Silent => panic!("{what}: no answer within {REFUSAL_BOUND:?}"),
    }
}

fn malformed_bodies_are_refused(stack: &Stack) {
    let send = |body: &[u8]| send_entry(stack, &[], body);
    expect_problem(&send(b"{\"name\":\"\xff\xfe\"}"), 400, "invalid_utf8");
    expect_problem(&send(br#"{"name":"a","name":"b"}"#), 400, "duplicate_key");
    let deep_value = format!(
        r#"{{"name":{}{},"email":"d@example.org","country":"IT","consent":true}}"#,
        "[".repeat(3000),
        "]".repeat(3000)
    );
    let reply = send(deep_value.as_bytes());
    expect_problem(&reply, 422, "validation_failed");
    assert_eq!(reply.json()["errors"][0]["code"], "invalid_type");
    let deep = format!("{}{}", "[".repeat(4000), "]".repeat(4000));
    expect_problem(&send(deep.as_bytes()), 400, "malformed_body");
    let many_keys: String = format!(
        "{{{}}}",
        (0..200)
            .map(|i| format!("\"k{i}\":1"))
            .collect::<Vec<_>>()
            .join(",")
    );
    expect_problem(&send(many_keys.as_bytes()), 400, "too_many_keys");
}

fn unsupported_types_are_refused(stack: &Stack) {
    for content_type in [
        "application/json; charset=utf-16",
        "multipart/form-data; boundary=x",
    ] {
        let reply = send_entry(
            stack,
            &[("content-type", content_type)],
            entry("IT").as_bytes(),
        );
        expect_problem(&reply, 415, "unsupported_media_type");
    }
    let ip = client();
    let untyped = request(
        stack.port,
        "POST",
        SUBMIT,
        &[
            ("mf-cf-blob", r#"{"country":"IT"}"#),
            ("cf-connecting-ip", &ip),
        ],
        entry("IT").as_bytes(),
    );
    expect_problem(&untyped, 415, "unsupported_media_type");
}

/// Bare CR or LF inside a header value, followed by what would be harbour's own region header:
/// refused by the HTTP layer with a 4xx, or the HTTP layer ends the header there and the rest is
/// a header harbour never reads (accepted, in the region of the platform's country). Either way
/// answered within the bound. How many were accepted (and so stored).
fn injected_line_breaks_add_no_header(stack: &Stack) -> usize {
    let mut accepted = 0;
    for separator in ["\r", "\n"] {
        let body = entry("IT");
        // Solved for the key as it reads if the HTTP layer ends the header at the separator.
        let key = format!("injected-key-{}", unique() + 1_000_000_000);
        let proof = stack.proof(&key);
        let notice = stack.challenge().notice;
        let text = format!(
            "POST {SUBMIT} HTTP/1.1\r\nhost: x\r\nconnection: close\r\naccept-encoding: identity\r\ncontent-type: application/json\r\nmf-cf-blob: {{\"country\":\"IT\"}}\r\nharbour-notice: {notice}\r\nharbour-challenge: {proof}\r\nidempotency-key: {key}{separator}x-harbour-region: cn\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        );
        let reply = answered_within_bound(stack.port, text.as_bytes(), &format!("{separator:?}"));
        if reply.status == 202 {
            assert_eq!(reply.json()["receipt"]["region"], "eu", "{separator:?}");
            assert_eq!(reply.json()["idempotency_key"], key.as_str());
            accepted += 1;
        } else {
            assert!(
                (400..500).contains(&reply.status),
                "{separator:?}: {} {}",
                reply.status,
                reply.body
            );
        }
    }
    accepted
}

/// A header far over any HTTP layer's limit (200 KB): 431 before harbour sees it.
fn a_huge_header_is_refused(stack: &Stack) {
    let huge = "h".repeat(200_000);
    let text = format!("POST {SUBMIT} HTTP/1.1\r\nhost: x\r\nconnection: close\r\nx-padding: {huge}\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{{}}");
    let reply = answered_within_bound(stack.port, text.as_bytes(), "a 200 KB header");
    assert_eq!(reply.status, 431, "a 200 KB header: {}", reply.body);
}

/// A body shorter than its declared length, then the client half-closes. harbour answers 400
/// `body_incomplete` when it sees the body end early; under `wrangler dev` its local proxy
/// answers first, with its own 503 "restarted mid-request" page. One of the two, within the
/// bound; never silence or a dropped connection.
fn a_truncated_body_is_refused(stack: &Stack) {
    use std::io::Write;
    let body = entry("IT");
    let head = format!("POST {SUBMIT} HTTP/1.1\r\nhost: x\r\nconnection: close\r\naccept-encoding: identity\r\ncontent-type: application/json\r\nmf-cf-blob: {{\"country\":\"IT\"}}\r\ncontent-length: {}\r\n\r\n", body.len() + 50);
    let started = std::time::Instant::now();
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", stack.port)).unwrap();
    stream.set_read_timeout(Some(REFUSAL_BOUND)).unwrap();
    stream.write_all(head.as_bytes()).unwrap();
    stream.write_all(body.as_bytes()).unwrap();
    stream.shutdown(std::net::Shutdown::Write).unwrap();
    let reply = harbour_e2e::http::read_response(&mut stream).unwrap_or_else(|e| {
        panic!(
            "a truncated body: no answer ({e}) after {:?}",
            started.elapsed()
        )
    });
    assert!(
        started.elapsed() < REFUSAL_BOUND,
        "answered after {:?}",
        started.elapsed()
    );
    let ours = reply.status == 400 && reply.json()["code"] == "body_incomplete";
    let dev_proxy = reply.status == 503 && reply.body.contains("restarted mid-request");
    assert!(
        ours || dev_proxy,
        "a truncated body got {} {}",
        reply.status,
        reply.body
    );
}

fn path_tricks_find_nothing(stack: &Stack) {
    for trick in [
        "/api/campaigns/spring-launch/submissions/",
        "/api/campaigns/spring-launch/submissions/x",
        "/api/campaigns/SPRING-LAUNCH/submissions",
        "/api/campaigns/spring-launch%2Fsubmissions",
    ] {
        let ip = client();
        let r = request(
            stack.port,
            "POST",
            trick,
            &[
                ("content-type", "application/json"),
                ("mf-cf-blob", r#"{"country":"IT"}"#),
                ("cf-connecting-ip", &ip),
            ],
            entry("IT").as_bytes(),
        );
        assert_eq!(r.status, 404, "{trick}: {}", r.body);
    }
}

/// A slow body (sent in two parts a second apart) is still read, and the worker keeps serving.
fn a_slow_body_is_read(stack: &Stack) {
    use std::io::{Read, Write};
    let body = entry("AU");
    let [(_, key), (_, proof), (_, notice)] = stack.keyed();
    let head = format!("POST {SUBMIT} HTTP/1.1\r\nhost: x\r\nconnection: close\r\naccept-encoding: identity\r\ncontent-type: application/json\r\nmf-cf-blob: {{\"country\":\"AU\"}}\r\nidempotency-key: {key}\r\nharbour-challenge: {proof}\r\nharbour-notice: {notice}\r\ncontent-length: {}\r\n\r\n", body.len());
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", stack.port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    stream.write_all(head.as_bytes()).unwrap();
    stream.write_all(&body.as_bytes()[..10]).unwrap();
    std::thread::sleep(Duration::from_secs(1));
    stream.write_all(&body.as_bytes()[10..]).unwrap();
    let mut answer = [0u8; 12];
    stream.read_exact(&mut answer).unwrap();
    assert_eq!(&answer, b"HTTP/1.1 202");
    let still = stack.submit(Some("IT"), &client(), &entry("IT"), &[]);
    assert_eq!(
        still.status, 202,
        "the worker keeps serving: {}",
        still.body
    );
}

fn hostile_input_gets_clear_refusals_and_reaches_no_origin(stack: &mut Stack) {
    let before = stack.received();
    let stored_before = counts(stack);
    malformed_bodies_are_refused(stack);
    unsupported_types_are_refused(stack);
    let accepted_injections = injected_line_breaks_add_no_header(stack);
    // A header value trying to smuggle harbour's own header is no key a solution can cover:
    // refused, whatever work came with it, and nothing is forwarded.
    let smuggled = send_entry(
        stack,
        &[("idempotency-key", "abc x-harbour-region: cn")],
        entry("IT").as_bytes(),
    );
    expect_problem(&smuggled, 403, "challenge_invalid");
    a_huge_header_is_refused(stack);
    a_truncated_body_is_refused(stack);
    path_tricks_find_nothing(stack);
    assert_eq!(
        counts(stack).iter().map(|(_, n)| n).sum::<usize>(),
        stored_before.iter().map(|(_, n)| n).sum::<usize>() + accepted_injections,
        "only valid entries were stored"
    );
    let after = stack.received();
    let extra: u64 = after.values().sum::<u64>() - before.values().sum::<u64>();
    assert_eq!(
        extra as usize, accepted_injections,
        "only valid entries reached an origin"
    );
    a_slow_body_is_read(stack);
}

/// Waits, if need be, until `needed` ms fit before the next whole minute: the simulated binding
/// counts per minute since the epoch (as a period of the real one starts and ends), so a test that
/// must stay inside one period starts early enough in it.
fn early_in_a_minute(needed: Duration) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    let into = Duration::from_millis((now.as_millis() % 60_000) as u64);
    if into + needed > Duration::from_secs(58) {
        std::thread::sleep(Duration::from_secs(60) - into + Duration::from_millis(500));
    }
}

fn layer_of(reply: &Response) -> String {
    let policy = reply.header("ratelimit-policy").unwrap_or("");
    policy.split('"').nth(1).unwrap_or("").to_owned()
}

/// The isolate's GCRA gives a client back one submission every 12 s (5 per minute); the
/// location's binding counts 5 per minute. A client that used its 5 is admitted by the isolate
/// 12 s later, and refused by the location: that is the layer fleets of isolates cannot cheat.
/// An IPv6 client rotating addresses inside its /64 is one client in both layers.
fn the_location_refuses_what_the_isolate_alone_would_admit_and_a_slash_64_is_one_client(
    stack: &Stack,
) {
    // The work first, all of it: the first eleven must arrive inside one emission interval of
    // the isolate's limit (12 s) and all of them inside one minute of the location's, which a
    // 20-bit solve per submission would not on a loaded machine.
    let solved: Vec<Prepared> = (0..14).map(|_| stack.prepared()).collect();
    let mut solved = solved.iter();
    let mut send = |ip: &str| {
        let prepared = solved.next().expect("a solved submission");
        stack.submit(Some("US"), ip, &entry("US"), &prepared.headers())
    };
    early_in_a_minute(Duration::from_secs(20));
    let v4 = client();
    let n = unique();
    let v6 = |host: u32| format!("2001:db8:{:x}:{:x}::{:x}", n >> 16, n & 0xffff, host + 1);
    let received_before = stack.received()["global"];
    for i in 0..5 {
        let reply = send(&v4);
        assert_eq!(reply.status, 202, "v4 submission {i}: {}", reply.body);
        assert_eq!(
            reply.header("ratelimit-policy"),
            Some("\"client\";q=5;w=60, \"location\";q=5;w=60")
        );
        // Each from another address of the same /64.
        let reply = send(&v6(i));
        assert_eq!(reply.status, 202, "v6 submission {i}: {}", reply.body);
    }
    // At once: the isolate's own layer refuses the sixth, a rotated address changes nothing.
    let reply = send(&v6(5));
    assert_eq!((reply.status, layer_of(&reply)), (429, "client".to_owned()));
    std::thread::sleep(Duration::from_millis(12_500));
    for (who, ip) in [("v4", v4.clone()), ("v6", v6(6))] {
        let reply = send(&ip);
        assert_eq!(reply.status, 429, "{who}: {}", reply.body);
        assert_eq!(
            layer_of(&reply),
            "location",
            "{who}: refused by the location"
        );
        assert_eq!(
            reply.header("ratelimit-policy"),
            Some("\"location\";q=5;w=60")
        );
        assert_eq!(reply.header("ratelimit"), Some("\"location\";r=0;t=60"));
        assert_eq!(reply.header("retry-after"), Some("60"));
    }
    assert_eq!(
        stack.received()["global"],
        received_before + 10,
        "the refused reached no origin"
    );
    // Another /64 is another client.
    let other = format!("2001:db8:{:x}:{:x}::1", (n >> 16) + 1, n & 0xffff);
    let reply = send(&other);
    assert_eq!(reply.status, 202, "{}", reply.body);
}

/// Origins that say they are full: the edge fails over in region, then answers 503 with the key
/// without calling them while both breakers are open; once they take entries again, the retry
/// with the same key is stored once. The full origins ask to be spared for 3 s (250 ms by
/// default), so that the second request meets open breakers however loaded the machine is.
fn full_origins_are_spared_and_the_retry_lands_once(stack: &mut Stack) {
    const SPARE_MS: u64 = 3_000;
    let ru = (stack.origin("ru").primary, stack.origin("ru").secondary);
    for port in [ru.0, ru.1] {
        stack.stop_origin(port);
        stack.start_origin_with(
            port,
            &["--max-in-flight", "0", "--spare-ms", &SPARE_MS.to_string()],
        );
    }
    let others_before: BTreeMap<_, _> = stack
        .received()
        .into_iter()
        .filter(|(r, _)| *r != "ru")
        .collect();
    let key = format!("busy-key-{:016}", unique());
    // The work, done before the timed part.
    let proof = stack.proof(&key);
    let body = entry("RU");
    let ip = client();
    let busy = stack.submit(
        Some("RU"),
        &ip,
        &body,
        &[("idempotency-key", &key), ("harbour-challenge", &proof)],
    );
    assert_eq!(busy.status, 503, "{}", busy.body);
    assert_eq!(busy.json()["code"], "origins_busy");
    // The wait the origins asked for, in whole seconds.
    assert_eq!(busy.header("retry-after"), Some("3"));
    assert_eq!(busy.header("idempotency-key"), Some(key.as_str()));
    let shed = |stack: &Stack| [ru.0, ru.1].map(|port| stack.load(port)["shed"].as_u64().unwrap());
    assert_eq!(shed(stack), [1, 1], "both origins were tried, in region");
    // Both breakers open: answered at once, no origin called.
    let spared = stack.submit(
        Some("RU"),
        &ip,
        &body,
        &[("idempotency-key", &key), ("harbour-challenge", &proof)],
    );
    assert_eq!(spared.status, 503, "{}", spared.body);
    assert_eq!(spared.json()["code"], "region_busy");
    assert_eq!(spared.json()["idempotency_key"], key.as_str());
    assert!(spared.header("retry-after").is_some());
    assert_eq!(shed(stack), [1, 1], "no origin was called");
    // The origins take entries again; after the interval one trial closes the primary's breaker.
    for port in [ru.0, ru.1] {
        stack.stop_origin(port);
        stack.start_origin(port);
    }
    std::thread::sleep(Duration::from_millis(SPARE_MS + 100));
    let stored = stack.submit(
        Some("RU"),
        &ip,
        &body,
        &[("idempotency-key", &key), ("harbour-challenge", &proof)],
    );
    assert_eq!(stored.status, 202, "{}", stored.body);
    let again = stack.submit(
        Some("RU"),
        &ip,
        &body,
        &[("idempotency-key", &key), ("harbour-challenge", &proof)],
    );
    assert_eq!(again.body, stored.body);
    let rows = stack.stored()["ru"]
        .iter()
        .filter(|r| r.idempotency_key == key)
        .count();
    assert_eq!(rows, 1);
    let others_after: BTreeMap<_, _> = stack
        .received()
        .into_iter()
        .filter(|(r, _)| *r != "ru")
        .collect();
    assert_eq!(others_after, others_before, "nothing left the region");
    let breaker_lines = |state: &str| {
        stack
            .worker_log()
            .lines()
            .filter(|l| {
                l.contains("\"msg\":\"harbour.breaker\"")
                    && l.contains("\"region\":\"ru\"")
                    && l.contains(&format!("\"state\":\"{state}\""))
            })
            .count()
    };
    wait_until("breaker log lines", Duration::from_secs(10), || {
        breaker_lines("open") >= 2 && breaker_lines("closed") >= 1
    });
}

fn the_page_is_served_with_its_security_headers(stack: &Stack) {
    for path in ["/", "/app.js", "/pow.js", "/style.css", "/locales/de.json"] {
        let reply = request(stack.port, "GET", path, &[], b"");
        assert_eq!(reply.status, 200, "{path}");
        let csp = reply
            .header("content-security-policy")
            .unwrap_or_else(|| panic!("{path}: no CSP"));
        let directives: Vec<&str> = csp.split(';').map(str::trim).collect();
        for wanted in [
            "default-src 'none'",
            "script-src 'self'",
            "worker-src 'self'",
            "connect-src 'self'",
            "style-src 'self'",
            "frame-ancestors 'none'",
        ] {
            assert!(
                directives.contains(&wanted),
                "{path}: {wanted} missing from {csp}"
            );
        }
        assert!(
            !csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"),
            "{csp}"
        );
        assert!(
            !csp.contains("http:") && !csp.contains("https:") && !csp.contains('*'),
            "a third-party origin in {csp}"
        );
        assert_eq!(
            reply.header("x-content-type-options"),
            Some("nosniff"),
            "{path}"
        );
        assert_eq!(
            reply.header("referrer-policy"),
            Some("no-referrer"),
            "{path}"
        );
        assert_eq!(reply.header("x-frame-options"), Some("DENY"), "{path}");
    }
    // The rules file configures the assets; it is not one of them.
    let rules = request(stack.port, "GET", "/_headers", &[], b"");
    assert!(
        !rules.body.contains("Content-Security-Policy"),
        "/_headers is served"
    );
}

fn work_is_required_and_refusals_store_nothing(stack: &Stack) {
    let received_before = stack.received();
    let stored_before = counts(stack);
    let body = entry("IT");
    let ip = client();
    let key = new_key();
    let code = |r: &Response| r.json()["code"].as_str().unwrap_or("").to_owned();
    // No solution at all: refused, and told where a challenge is.
    let bare = stack.submit(
        Some("IT"),
        &ip,
        &body,
        &[("idempotency-key", &key), ("harbour-challenge", "")],
    );
    assert_eq!(
        (bare.status, code(&bare).as_str()),
        (400, "challenge_required"),
        "{}",
        bare.body
    );
    assert_eq!(bare.json()["challenge_url"], "/api/campaigns/spring-launch");
    // A genuine challenge that expired (issued with this worker's key a day ago).
    let policy = Policy::shipped().unwrap();
    let campaign = policy.campaign("spring-launch").unwrap();
    let form_key = SigningKey::new(stack.form_key.as_bytes()).unwrap();
    let day_ago = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
        - 24 * 3_600_000;
    let old = harbour_core::phase::challenge::issue(&form_key, campaign, day_ago, 1);
    let stale = harbour_core::phase::challenge::solution(
        &old.token,
        &harbour_core::phase::challenge::solve(&old.token, &key, old.difficulty_bits),
    );
    let expired = stack.submit(
        Some("IT"),
        &ip,
        &body,
        &[("idempotency-key", &key), ("harbour-challenge", &stale)],
    );
    assert_eq!(
        (expired.status, code(&expired).as_str()),
        (403, "challenge_expired")
    );
    // A solution for another key.
    let theirs = stack.proof(&new_key());
    let wrong = stack.submit(
        Some("IT"),
        &ip,
        &body,
        &[("idempotency-key", &key), ("harbour-challenge", &theirs)],
    );
    assert_eq!(
        (wrong.status, code(&wrong).as_str()),
        (403, "challenge_invalid")
    );
    // A made-up token.
    let forged = format!(
        "spring-launch.99999999999999.1.{}.{}.0",
        "0".repeat(32),
        "0".repeat(32)
    );
    let made_up = stack.submit(
        Some("IT"),
        &ip,
        &body,
        &[("idempotency-key", &key), ("harbour-challenge", &forged)],
    );
    assert_eq!(
        (made_up.status, code(&made_up).as_str()),
        (403, "challenge_invalid")
    );
    assert_eq!(
        stack.received(),
        received_before,
        "a refused request reached an origin"
    );
    assert_eq!(counts(stack), stored_before);
    // The same key with fresh work gets in, once.
    let fresh = stack.submit(Some("IT"), &ip, &body, &[("idempotency-key", &key)]);
    assert_eq!(fresh.status, 202, "{}", fresh.body);
    let rows = stack.stored()["eu"]
        .iter()
        .filter(|r| r.idempotency_key == key)
        .count();
    assert_eq!(rows, 1);
}

fn the_form_description_speaks_each_locale(stack: &Stack) {
    let policy = Policy::shipped().unwrap();
    let campaign = policy.campaign("spring-launch").unwrap();
    for locale in harbour_policy::LOCALES {
        let form = request(
            stack.port,
            "GET",
            &format!("/api/campaigns/spring-launch?lang={locale}"),
            &[],
            b"",
        );
        assert_eq!(form.status, 200);
        let described = form.json();
        assert_eq!(described["lang"], locale);
        let title = campaign
            .texts(locale)
            .and_then(|t| t.title.clone())
            .unwrap_or(campaign.title.clone());
        assert_eq!(described["title"], title.as_str(), "{locale}");
        assert!(described["challenge"]["token"]
            .as_str()
            .unwrap()
            .starts_with("spring-launch."));
        let file = workspace_root().join(format!("www/locales/{locale}.json"));
        let served = request(
            stack.port,
            "GET",
            &format!("/locales/{locale}.json"),
            &[],
            b"",
        );
        assert_eq!(
            served.body,
            std::fs::read_to_string(file).unwrap(),
            "{locale}"
        );
    }
}

fn scripts_submit_sends_a_working_entry(stack: &Stack) {
    let before = stack.stored()["eu"].len();
    let ip = client();
    let body = entry("IT");
    let output = std::process::Command::new("bash")
        .arg(workspace_root().join("scripts/submit"))
        .arg(format!(
            "http://127.0.0.1:{}/api/campaigns/spring-launch/submissions",
            stack.port
        ))
        .arg(&body)
        .args(["-H", r#"MF-CF-Blob: {"country":"IT"}"#, "-H"])
        .arg(format!("cf-connecting-ip: {ip}"))
        .env("HARBOUR_SOLVE", env!("CARGO_BIN_EXE_harbour-solve"))
        .output()
        .unwrap();
    let printed = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{printed}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let receipt: serde_json::Value = serde_json::from_str(printed.trim()).unwrap();
    assert_eq!(receipt["status"], "accepted");
    assert_eq!(receipt["receipt"]["region"], "eu");
    let rows = stack.stored()["eu"].clone();
    assert_eq!(rows.len(), before + 1);
    assert_eq!(
        rows.last().unwrap().receipt_id,
        receipt["receipt"]["id"].as_str().unwrap()
    );
}

/// One solved challenge buys one entry: the same request sent again, alone or several at once,
/// reaches the region's origin once and is answered with the first receipt (or 503
/// `entry_in_progress` while the first is under way); another body under that key and work is
/// 409 without reaching any origin.
fn a_replayed_solution_reaches_the_origin_once(stack: &Stack) {
    let prepared = stack.prepared();
    let headers = prepared.headers();
    let (ip, body) = (client(), entry("DE"));
    let before = stack.received();
    let first = stack.submit(Some("DE"), &ip, &body, &headers);
    assert_eq!(first.status, 202, "{}", first.body);
    let answers: Vec<Response> = std::thread::scope(|scope| {
        let sends: Vec<_> = (0..4)
            .map(|_| scope.spawn(|| stack.submit(Some("DE"), &ip, &body, &headers)))
            .collect();
        sends.into_iter().map(|s| s.join().unwrap()).collect()
    });
    for answer in answers
        .iter()
        .chain([&stack.submit(Some("DE"), &ip, &body, &headers)])
    {
        match answer.status {
            202 => {
                assert_eq!(answer.body, first.body);
                assert_eq!(answer.header("idempotent-replayed"), Some("true"));
            }
            503 => assert_eq!(
                answer.json()["code"],
                "entry_in_progress",
                "{}",
                answer.body
            ),
            other => panic!("a replay answered {other}: {}", answer.body),
        }
    }
    let other = stack.submit(Some("DE"), &ip, &entry("AT"), &headers);
    assert_eq!(other.status, 409, "{}", other.body);
    assert_eq!(other.json()["code"], "idempotency_key_reused");
    let after = stack.received();
    for (region, was) in &before {
        let added = after[region] - was;
        assert_eq!(
            added,
            u64::from(region == "eu"),
            "POSTs received in {region}"
        );
    }
    let rows = stack.stored()["eu"]
        .iter()
        .filter(|r| r.idempotency_key == prepared.key)
        .count();
    assert_eq!(rows, 1);
}

/// Issue 23, against the real stack: after an entry from `adaX…@example.org` (and `josé…@`,
/// `…@bücher-laden.example`), each other spelling of the same address is 409
/// `already_entered` (the origin's fold) or, with an invisible character, 422 at the edge
/// without reaching any origin. An address only the origin's fold refuses (no Punycode) is the
/// field's 422 too. Each person has one row, its domain in ASCII.
fn another_spelling_of_an_address_is_one_person(stack: &Stack) {
    // Zero-padded: no other scenario's address holds `{n}@`.
    let n = format!("{:08}", unique());
    let (ada, jose, buecher) = (
        format!("adaX{n}@example.org"),
        format!("jos\u{E9}{n}@example.org"),
        format!("ada{n}@bücher-laden.example"),
    );
    let body = |email: &str| {
        serde_json::json!({"name": "Ada", "email": email, "country": "FR", "consent": true})
            .to_string()
    };
    let submit = |email: &str| {
        let key = format!("spelling-{:016}", unique());
        stack.submit(
            Some("FR"),
            &client(),
            &body(email),
            &[("idempotency-key", &key)],
        )
    };
    for email in [&ada, &jose, &buecher] {
        let first = submit(email);
        assert_eq!(first.status, 202, "{email}: {}", first.body);
    }
    let before = stack.received();
    let same_person = [
        ("case", format!("ADAx{n}@Example.ORG")),
        ("fullwidth letters", format!("ａｄａX{n}@example.org")),
        ("NFD after NFC", format!("jose\u{301}{n}@example.org")),
        (
            "A-label after U-label",
            format!("ada{n}@xn--bcher-laden-thb.example"),
        ),
        (
            "fullwidth domain",
            format!("adaX{n}@ｅｘａｍｐｌｅ．ｏｒｇ"),
        ),
    ];
    for (what, email) in &same_person {
        let reply = submit(email);
        assert_eq!(reply.status, 409, "{what}: {}", reply.body);
        expect_problem(&reply, 409, "already_entered");
    }
    let invisible = [
        ("soft hyphen", format!("ada\u{AD}X{n}@example.org")),
        ("variation selector", format!("adaX\u{FE0F}{n}@example.org")),
        (
            "combining grapheme joiner",
            format!("ada\u{34F}X{n}@example.org"),
        ),
    ];
    let only_the_fold_refuses = format!("ada{n}@xn--zz.example");
    for (what, email, code) in invisible
        .iter()
        .map(|(what, email)| (*what, email, "invalid_characters"))
        .chain([("no Punycode", &only_the_fold_refuses, "invalid_email")])
    {
        let reply = submit(email);
        expect_problem(&reply, 422, "validation_failed");
        let error = &reply.json()["errors"][0];
        assert_eq!(
            (error["field"].as_str(), error["code"].as_str()),
            (Some("email"), Some(code)),
            "{what}: {}",
            reply.body
        );
    }
    // The 409s and the one only the fold refuses reached the origin; the invisible ones not.
    let after = stack.received();
    for (region, was) in &before {
        let expected = if region == "eu" {
            same_person.len() + 1
        } else {
            0
        };
        assert_eq!(
            after[region] - was,
            expected as u64,
            "POSTs received in {region}"
        );
    }
    let stored: Vec<String> = stack.stored()["eu"]
        .iter()
        .filter_map(|r| r.payload["fields"]["email"].as_str())
        .filter(|email| email.contains(&format!("{n}@")))
        .map(str::to_owned)
        .collect();
    assert_eq!(
        stored,
        [ada, jose, format!("ada{n}@xn--bcher-laden-thb.example")],
        "one row per person, the domain in its ASCII form"
    );
}

fn main() {
    let scenarios: Vec<Scenario> = vec![
        ("page_and_form_description", |s| {
            page_and_form_description(s)
        }),
        ("the_page_is_served_with_its_security_headers", |s| {
            the_page_is_served_with_its_security_headers(s)
        }),
        ("the_form_description_speaks_each_locale", |s| {
            the_form_description_speaks_each_locale(s)
        }),
        ("work_is_required_and_refusals_store_nothing", |s| {
            work_is_required_and_refusals_store_nothing(s)
        }),
        ("scripts_submit_sends_a_working_entry", |s| {
            scripts_submit_sends_a_working_entry(s)
        }),
        ("each_country_lands_in_its_region_only", |s| {
            each_country_lands_in_its_region_only(s)
        }),
        (
            "a_conflict_between_two_laws_is_refused_and_stored_nowhere",
            |s| a_conflict_between_two_laws_is_refused_and_stored_nowhere(s),
        ),
        (
            "a_law_beats_the_rest_of_the_world_and_both_signals_are_kept",
            |s| a_law_beats_the_rest_of_the_world_and_both_signals_are_kept(s),
        ),
        ("refusals_reach_no_origin", |s| refusals_reach_no_origin(s)),
        ("nth_plus_one_submission_is_limited_per_client", |s| {
            nth_plus_one_submission_is_limited_per_client(s)
        }),
        (
            "the_location_refuses_what_the_isolate_alone_would_admit_and_a_slash_64_is_one_client",
            |s| {
                the_location_refuses_what_the_isolate_alone_would_admit_and_a_slash_64_is_one_client(
                    s,
                )
            },
        ),
        (
            "full_origins_are_spared_and_the_retry_lands_once",
            full_origins_are_spared_and_the_retry_lands_once,
        ),
        ("client_country_headers_change_nothing", |s| {
            client_country_headers_change_nothing(s)
        }),
        ("same_key_twice_gives_one_row_and_one_receipt", |s| {
            same_key_twice_gives_one_row_and_one_receipt(s)
        }),
        ("a_replayed_solution_reaches_the_origin_once", |s| {
            a_replayed_solution_reaches_the_origin_once(s)
        }),
        ("one_entry_per_person", |s| one_entry_per_person(s)),
        ("another_spelling_of_an_address_is_one_person", |s| {
            another_spelling_of_an_address_is_one_person(s)
        }),
        ("origin_refuses_forged_stale_and_misdirected", |s| {
            origin_refuses_forged_stale_and_misdirected(s)
        }),
        (
            "failover_stays_in_region_and_retry_lands_once",
            failover_stays_in_region_and_retry_lands_once,
        ),
        (
            "a_hanging_primary_times_out_and_the_secondary_stores",
            a_hanging_primary_times_out_and_the_secondary_stores,
        ),
        (
            "a_lost_answer_after_commit_gives_the_first_receipt",
            a_lost_answer_after_commit_gives_the_first_receipt,
        ),
        (
            "hostile_input_gets_clear_refusals_and_reaches_no_origin",
            hostile_input_gets_clear_refusals_and_reaches_no_origin,
        ),
    ];
    let scenarios = chosen(scenarios);
    let started = Instant::now();
    let stack = Stack::start("stack");
    if !run(stack, started, scenarios) {
        std::process::exit(1);
    }
}
