//! The edge shell's conversions, run as wasm under Node: the JS-facing functions take what the
//! shim passes (the request's facts as one string, a byte array, numbers, an `env` object) and
//! give back the answers the shim reads (`parse_decision` reads them back as JSON).
#![cfg(target_arch = "wasm32")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use harbour_contract::env::{key_var, origins_var, FORM_KEY_VAR};
use harbour_contract::signature::SignatureHeader;
use harbour_core::phase::admission::location_limits;
use harbour_core::phase::challenge;
use harbour_policy::{Policy, SHIPPED_POLICY};
use harbour_worker::shell::{
    conclude, configure, configure_policies, consulted, expected_variables, orphaned,
};
use harbour_worker::wire::{
    parse_decision, request_line, BODY_BYTES, BODY_TOO_LARGE, BODY_UNREAD, LOCATION_ADMITTED,
    LOCATION_FAILED, LOCATION_REFUSED,
};
use js_sys::{Object, Reflect};
use serde_json::Value;
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_test::wasm_bindgen_test;

const URL: &str = "https://campaign.example/api/campaigns/spring-launch/submissions";
const VALID: &[u8] = br#"{"name":"Ada","email":"ada@example.org","country":"IT","consent":true}"#;

/// `harbour_worker::shell::decide` with the request's text facts as separate values, joined as
/// the shim joins them.
#[allow(clippy::too_many_arguments)]
fn decide(
    method: &str,
    url: &str,
    content_type: Option<String>,
    body_state: u8,
    body: &[u8],
    country: Option<String>,
    client_ip: Option<String>,
    idempotency_key: Option<String>,
    challenge: Option<String>,
    origin: Option<String>,
    now_ms: f64,
) -> String {
    // The notice the campaign page shows in English, as it sends it.
    let notice = Policy::shipped().unwrap().campaigns[0].notice_header("en");
    let line = request_line([
        Some(method),
        Some(url),
        content_type.as_deref(),
        country.as_deref(),
        client_ip.as_deref(),
        idempotency_key.as_deref(),
        challenge.as_deref(),
        origin.as_deref(),
        Some(&notice),
    ]);
    harbour_worker::shell::decide(&line, body_state, body, now_ms)
}

fn env_object() -> JsValue {
    let env = Object::new();
    let policy = Policy::shipped().unwrap();
    for (i, region) in policy.regions.iter().enumerate() {
        Reflect::set(
            &env,
            &origins_var(&region.id).into(),
            &format!(
                "http://127.0.0.1:{} http://127.0.0.1:{}",
                9000 + i,
                9100 + i
            )
            .into(),
        )
        .unwrap();
        Reflect::set(
            &env,
            &key_var(&region.id).into(),
            &format!("{}-0123456789abcdef0123456789abcdef", region.id).into(),
        )
        .unwrap();
    }
    // The rate-limiting bindings the policy needs: objects with a `limit` method.
    for limit in location_limits(&policy) {
        let binding = Object::new();
        let method = js_sys::Function::new_with_args(
            "options",
            "return Promise.resolve({ success: true });",
        );
        Reflect::set(&binding, &"limit".into(), &method).unwrap();
        Reflect::set(&env, &limit.binding_name().into(), &binding).unwrap();
    }
    Reflect::set(&env, &FORM_KEY_VAR.into(), &FORM_KEY.into()).unwrap();
    Reflect::set(&env, &"HARBOUR_LOG".into(), &"decisions".into()).unwrap();
    env.into()
}

fn setup() {
    let answer = parse_decision(&configure(&env_object(), &[42; 24]));
    assert_eq!(answer["ok"], true, "{answer}");
    assert_eq!(answer["max_body_bytes"], 8192);
}

const KEY: &str = "edge-key-0123456789abcdef";
const FORM_KEY: &str = "form-0123456789abcdef0123456789abcdef";
const NOW: f64 = 1_764_000_000_000.0;

/// A solution for `KEY` to the challenge of a form description this shell hands out, solved
/// once (challenges are stateless: every configured instance with the same form key takes it).
fn solution() -> String {
    solution_for(KEY)
}

/// Work for `key` on a challenge of the form description (solved once per key).
fn solution_for(key: &str) -> String {
    thread_local! {
        static SOLVED: std::cell::RefCell<std::collections::HashMap<String, String>> =
            std::cell::RefCell::new(std::collections::HashMap::new());
    }
    if let Some(known) = SOLVED.with(|cell| cell.borrow().get(key).cloned()) {
        return known;
    }
    let form = "https://campaign.example/api/campaigns/spring-launch";
    let description = parse_decision(&decide(
        "GET",
        form,
        None,
        BODY_UNREAD,
        b"",
        None,
        None,
        None,
        None,
        None,
        NOW,
    ));
    let body: Value = serde_json::from_str(description["reply"]["body"].as_str().unwrap()).unwrap();
    let token = body["challenge"]["token"].as_str().unwrap();
    let bits = body["challenge"]["difficulty_bits"].as_u64().unwrap() as u8;
    let solved = challenge::solution(token, &challenge::solve(token, key, bits));
    SOLVED.with(|cell| cell.borrow_mut().insert(key.to_owned(), solved.clone()));
    solved
}

/// `decide`, and for a decision to consult the location, `consulted` with the binding admitting.
fn call(
    method: &str,
    content_type: Option<&str>,
    state: u8,
    body: &[u8],
    country: Option<&str>,
    ip: &str,
) -> Value {
    let decision = decide_only(method, content_type, state, body, country, ip);
    match decision["consult"]["hold"].as_f64() {
        Some(hold) => parse_decision(&consulted(hold, LOCATION_ADMITTED, 1_764_000_000_001.0)),
        None => decision,
    }
}

fn decide_only(
    method: &str,
    content_type: Option<&str>,
    state: u8,
    body: &[u8],
    country: Option<&str>,
    ip: &str,
) -> Value {
    parse_decision(&decide(
        method,
        URL,
        content_type.map(String::from),
        state,
        body,
        country.map(String::from),
        Some(ip.to_owned()),
        Some(KEY.to_owned()),
        Some(solution()),
        None,
        NOW,
    ))
}

#[wasm_bindgen_test]
fn env_object_is_read_and_a_valid_submission_becomes_a_forward() {
    setup();
    let decision = call(
        "POST",
        Some("application/json"),
        BODY_BYTES,
        VALID,
        Some("IT"),
        "192.0.2.1",
    );
    let forward = &decision["forward"];
    assert_eq!(forward["url"], "http://127.0.0.1:9002/v1/submissions");
    let headers: Vec<(String, String)> =
        serde_json::from_value(forward["headers"].clone()).unwrap();
    let signature = headers
        .iter()
        .find(|(n, _)| n == "x-harbour-signature")
        .map(|(_, v)| v.as_str())
        .unwrap();
    assert_eq!(SignatureHeader::parse(signature).unwrap().region, "eu");
    let body: Value = serde_json::from_str(forward["body"].as_str().unwrap()).unwrap();
    assert_eq!(body["fields"]["name"], "Ada");
    assert!(forward["ticket"].is_u64());
}

#[wasm_bindgen_test]
fn refusals_come_back_as_replies_with_a_log_line() {
    setup();
    let too_large = call(
        "POST",
        Some("application/json"),
        BODY_TOO_LARGE,
        b"",
        Some("IT"),
        "192.0.2.2",
    );
    assert_eq!(too_large["reply"]["status"], 413);
    let log: Value = serde_json::from_str(too_large["reply"]["log"].as_str().unwrap()).unwrap();
    assert_eq!(log["outcome"], "body_too_large");
    assert!(
        !too_large["reply"]["log"]
            .as_str()
            .unwrap()
            .contains("192.0.2.2"),
        "the log carries no address"
    );
    let get = call("GET", None, BODY_UNREAD, b"", None, "192.0.2.2");
    assert_eq!(get["reply"]["status"], 405);
    let headers = get["reply"]["headers"].as_array().unwrap();
    assert!(headers
        .iter()
        .any(|h| h[0] == "allow" && h[1] == "POST, OPTIONS"));
    let no_country = call(
        "POST",
        Some("application/json"),
        BODY_BYTES,
        VALID,
        None,
        "192.0.2.3",
    );
    assert_eq!(no_country["reply"]["status"], 403);
}

#[wasm_bindgen_test]
fn the_challenge_header_reaches_the_check() {
    setup();
    let post = |challenge: Option<String>| {
        parse_decision(&decide(
            "POST",
            URL,
            Some("application/json".into()),
            BODY_BYTES,
            VALID,
            Some("IT".into()),
            Some("192.0.2.9".into()),
            Some(KEY.into()),
            challenge,
            None,
            NOW,
        ))
    };
    let code = |decision: &Value| {
        let body: Value =
            serde_json::from_str(decision["reply"]["body"].as_str().unwrap()).unwrap();
        body["code"].as_str().unwrap().to_owned()
    };
    let without = post(None);
    assert_eq!(without["reply"]["status"], 400);
    assert_eq!(code(&without), "challenge_required");
    let junk = post(Some("spring-launch.1.1.00.00.0".into()));
    assert_eq!(code(&junk), "challenge_invalid");
    // With the work done, the submission goes on (to the location's binding, then forward).
    let hold = post(Some(solution()))["consult"]["hold"].as_f64().unwrap();
    let forwarded = parse_decision(&consulted(hold, LOCATION_ADMITTED, NOW + 1.0));
    assert!(forwarded["forward"]["ticket"].is_u64(), "{forwarded}");
    assert!(serde_json::from_str::<Vec<String>>(&expected_variables())
        .unwrap()
        .contains(&FORM_KEY_VAR.to_owned()));
}

#[wasm_bindgen_test]
fn conclude_walks_the_region_then_answers() {
    setup();
    let body = br#"{"name":"Bo","email":"bo@example.com.au","country":"AU","consent":true}"#;
    let decision = call(
        "POST",
        Some("application/json"),
        BODY_BYTES,
        body,
        Some("AU"),
        "192.0.2.4",
    );
    let ticket = decision["forward"]["ticket"].as_f64().unwrap();
    let retry = parse_decision(&conclude(ticket, 0, b"", 1_764_000_000_100.0));
    assert_eq!(
        retry["retry"]["url"],
        "http://127.0.0.1:9103/v1/submissions"
    );
    let next_ticket = retry["retry"]["ticket"].as_f64().unwrap();
    let done = parse_decision(&conclude(
        next_ticket,
        201,
        br#"{"receipt":{"id":"au-1","region":"au"}}"#,
        1_764_000_000_200.0,
    ));
    assert_eq!(done["reply"]["status"], 202);
    let receipt: Value = serde_json::from_str(done["reply"]["body"].as_str().unwrap()).unwrap();
    assert_eq!(receipt["receipt"]["region"], "au");
    assert!(done["reply"]["log"]
        .as_str()
        .unwrap()
        .contains("\"attempts\":2"));
    // A ticket is concluded once; a stale or unknown one is answered with retry advice.
    for stale in [ticket, next_ticket, 1e9] {
        let again = parse_decision(&conclude(stale, 201, b"", 1_764_000_000_300.0));
        assert_eq!(again["reply"]["status"], 503);
    }
}

#[wasm_bindgen_test]
fn a_missing_secret_makes_every_request_a_config_error() {
    let env = env_object();
    Reflect::delete_property(env.unchecked_ref::<Object>(), &"HARBOUR_KEY_CN".into()).unwrap();
    let answer = parse_decision(&configure(&env, &[1; 24]));
    assert_eq!(answer["ok"], false);
    assert!(answer["error"].as_str().unwrap().contains("HARBOUR_KEY_CN"));
    let decision = call(
        "POST",
        Some("application/json"),
        BODY_BYTES,
        VALID,
        Some("IT"),
        "192.0.2.5",
    );
    assert_eq!(decision["reply"]["status"], 500);
    assert!(decision["reply"]["body"]
        .as_str()
        .unwrap()
        .contains("config_invalid"));
    let names: Vec<String> = serde_json::from_str(&expected_variables()).unwrap();
    assert!(names.contains(&"HARBOUR_KEY_CN".to_owned()));
}

#[wasm_bindgen_test]
fn an_orphaned_forward_gets_retry_advice_with_its_key() {
    setup();
    let key = "entry-0123456789abcdef";
    let answer = parse_decision(&orphaned(Some(key.to_owned()), 1_764_000_000_000.0));
    let reply = &answer["reply"];
    assert_eq!(reply["status"], 503);
    let headers: Vec<(String, String)> = serde_json::from_value(reply["headers"].clone()).unwrap();
    let header = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    };
    assert_eq!(header("idempotency-key"), Some(key));
    assert_eq!(header("retry-after"), Some("1"));
    let body: Value = serde_json::from_str(reply["body"].as_str().unwrap()).unwrap();
    assert_eq!(body["code"], "forward_orphaned");
    assert_eq!(body["idempotency_key"], key);
    let log: Value = serde_json::from_str(answer["reply"]["log"].as_str().unwrap()).unwrap();
    assert_eq!(log["outcome"], "forward_orphaned");
    // Without a key there is none to show.
    let keyless = parse_decision(&orphaned(None, 1_764_000_000_000.0));
    assert_eq!(keyless["reply"]["status"], 503);
    assert!(!keyless["reply"]["body"]
        .as_str()
        .unwrap()
        .contains("idempotency_key"));
}

/// The environment `env_object` holds, as a plain lookup (one origin per region).
fn lookup(name: &str) -> Option<String> {
    if name == FORM_KEY_VAR {
        return Some(FORM_KEY.into());
    }
    let policy = Policy::shipped().unwrap();
    let i = policy
        .regions
        .iter()
        .position(|r| origins_var(&r.id) == name || key_var(&r.id) == name)?;
    Some(if name.starts_with("HARBOUR_ORIGINS_") {
        format!("http://127.0.0.1:{}", 9000 + i)
    } else {
        format!("{}-0123456789abcdef0123456789abcdef", policy.regions[i].id)
    })
}

/// The shell as deployed with a candidate that moves IT to the RU region: every reply and
/// forward is byte for byte what the shell without a candidate answers, and the summary counts
/// the moved submissions.
#[wasm_bindgen_test]
fn a_shadow_candidate_changes_no_answer_and_is_counted_in_the_summary() {
    let mut moved: Value = serde_json::from_str(SHIPPED_POLICY).unwrap();
    for region in moved["regions"].as_array_mut().unwrap() {
        let is_ru = region["id"] == "ru";
        let countries = region["countries"].as_array_mut().unwrap();
        countries.retain(|c| c != "IT");
        if is_ru {
            countries.push("IT".into());
        }
    }
    let moved = moved.to_string();
    let run = |candidate: Option<&str>| -> Vec<String> {
        let answer = parse_decision(&configure_policies(
            SHIPPED_POLICY,
            candidate,
            &lookup,
            &|_| true,
            &[9; 16],
        ));
        assert_eq!(answer["ok"], true, "{answer}");
        let requests: [(&[u8], &str, &str); 4] = [
            (VALID, "IT", "192.0.2.40"),
            (
                br#"{"name":"Bo","email":"bo@example.org","country":"FR","consent":true}"#,
                "IT",
                "192.0.2.41",
            ),
            (
                br#"{"name":"Cy","email":"cy@example.org","country":"DE","consent":true}"#,
                "DE",
                "192.0.2.42",
            ),
            (b"{}", "IT", "192.0.2.43"),
        ];
        let mut out = Vec::new();
        // A key and its work per request: one solution buys one entry.
        for (i, (body, country, ip)) in requests.into_iter().enumerate() {
            let key = format!("{KEY}-{i}");
            out.push(decide(
                "POST",
                URL,
                Some("application/json".into()),
                BODY_BYTES,
                body,
                Some(country.into()),
                Some(ip.into()),
                Some(key.clone()),
                Some(solution_for(&key)),
                None,
                1_764_000_000_000.0 + i as f64,
            ));
        }
        // After the summary window, the next answer carries the summary line.
        let key = format!("{KEY}-last");
        out.push(decide(
            "POST",
            URL,
            Some("application/json".into()),
            BODY_BYTES,
            b"{}",
            Some("IT".into()),
            Some("192.0.2.44".into()),
            Some(key.clone()),
            Some(solution_for(&key)),
            None,
            1_764_000_060_000.0,
        ));
        out
    };
    // The work first, before either run's isolate is configured: fetching a challenge is a
    // decision of its own, which would be counted in one run's summary and not the other's.
    for key in (0..4)
        .map(|i| format!("{KEY}-{i}"))
        .chain([format!("{KEY}-last")])
    {
        solution_for(&key);
    }
    let live = run(None);
    let shadowed = run(Some(&moved));
    let (last_live, last_shadowed) = (&live[4], &shadowed[4]);
    assert_eq!(
        live[..4],
        shadowed[..4],
        "every answer and forward is the live one"
    );
    let summary_of = |text: &str| -> Value {
        serde_json::from_str(parse_decision(text)["reply"]["summary"].as_str().unwrap()).unwrap()
    };
    let (live_summary, mut summary) = (summary_of(last_live), summary_of(last_shadowed));
    assert_eq!(
        live_summary.get("shadow"),
        None,
        "no candidate, nothing to count"
    );
    let shadow = summary.as_object_mut().unwrap().remove("shadow").unwrap();
    assert_eq!(
        summary["outcomes"], live_summary["outcomes"],
        "the same outcomes are counted"
    );
    let mut rest = parse_decision(last_shadowed);
    rest["reply"]["summary"] = Value::Null;
    let mut live_rest = parse_decision(last_live);
    live_rest["reply"]["summary"] = Value::Null;
    assert_eq!(rest, live_rest);
    assert_eq!(
        shadow,
        serde_json::json!([{
            "campaign": "spring-launch",
            "evaluated": 5,
            "region_changes": [
                {"live": "eu", "candidate": "ru", "count": 1},
                {"live": "eu", "candidate": null, "count": 1}
            ],
            "outcome_changes": [
                {"live": "placed", "candidate": "residency_conflict", "count": 1}
            ]
        }])
    );
}

#[wasm_bindgen_test]
fn a_candidate_that_does_not_parse_is_named_and_left_out() {
    let answer = parse_decision(&configure_policies(
        SHIPPED_POLICY,
        Some("{\"regions\": ["),
        &lookup,
        &|_| true,
        &[3; 16],
    ));
    assert_eq!(answer["ok"], true, "the live policy still serves: {answer}");
    assert!(answer["candidate_error"]
        .as_str()
        .unwrap()
        .contains("line 1 column"));
}

#[wasm_bindgen_test]
fn a_submission_asks_the_location_then_its_answer_decides() {
    setup();
    let decision = decide_only(
        "POST",
        Some("application/json"),
        BODY_BYTES,
        VALID,
        Some("IT"),
        "2001:db8:5:6::1",
    );
    let consult = &decision["consult"];
    assert_eq!(consult["binding"], "HARBOUR_RL_5_PER_60S");
    // The campaign and a keyed digest of the client, not its address.
    let key = consult["key"].as_str().unwrap();
    let digest = key.strip_prefix("spring-launch ").unwrap();
    assert!(digest.len() == 32 && !key.contains("2001"), "{key}");
    assert_eq!(consult["timeoutMs"], 500);
    let hold = decision["consult"]["hold"].as_f64().unwrap();
    let refused = parse_decision(&consulted(hold, LOCATION_REFUSED, 1_764_000_000_002.0));
    assert_eq!(refused["reply"]["status"], 429);
    let headers = refused["reply"]["headers"].as_array().unwrap();
    assert!(headers
        .iter()
        .any(|h| h[0] == "ratelimit-policy" && h[1] == "\"location\";q=5;w=60"));
    // A hold is answered once; an unknown one gets retry advice.
    let again = parse_decision(&consulted(hold, LOCATION_ADMITTED, 1_764_000_000_003.0));
    assert_eq!(again["reply"]["status"], 503);
    assert!(again["reply"]["body"]
        .as_str()
        .unwrap()
        .contains("admission_expired"));
    // The binding failed: fail_open, the shipped policy's default, forwards.
    let decision = decide_only(
        "POST",
        Some("application/json"),
        BODY_BYTES,
        VALID,
        Some("IT"),
        "2001:db8:5:6::2",
    );
    let hold = decision["consult"]["hold"].as_f64().unwrap();
    let forward = parse_decision(&consulted(hold, LOCATION_FAILED, 1_764_000_000_004.0));
    assert_eq!(
        forward["forward"]["url"],
        "http://127.0.0.1:9002/v1/submissions"
    );
    assert!(forward["notes"]
        .as_str()
        .unwrap()
        .contains("harbour.location_limit_unavailable"));
}

#[wasm_bindgen_test]
fn a_full_origin_opens_its_breaker_and_the_shell_is_told_to_log_it() {
    setup();
    let decision = call(
        "POST",
        Some("application/json"),
        BODY_BYTES,
        br#"{"name":"Ru","email":"ru@example.org","country":"RU","consent":true}"#,
        Some("RU"),
        "192.0.2.30",
    );
    let ticket = decision["forward"]["ticket"].as_f64().unwrap();
    let busy = br#"{"code":"origin_busy","retry_after_s":1}"#;
    let retry = parse_decision(&conclude(ticket, 503, busy, 1_764_000_000_100.0));
    assert_eq!(
        retry["retry"]["url"],
        "http://127.0.0.1:9101/v1/submissions"
    );
    let note: Value = serde_json::from_str(retry["notes"].as_str().unwrap()).unwrap();
    assert_eq!(note["msg"], "harbour.breaker");
    assert_eq!(note["state"], "open");
    let next = retry["retry"]["ticket"].as_f64().unwrap();
    let done = parse_decision(&conclude(next, 503, busy, 1_764_000_000_200.0));
    assert_eq!(done["reply"]["status"], 503);
    assert!(done["reply"]["body"]
        .as_str()
        .unwrap()
        .contains("origins_busy"));
    assert!(done["notes"].as_str().unwrap().contains("\"origin\":1"));
}

#[wasm_bindgen_test]
fn a_missing_rate_limiting_binding_is_a_config_error_that_names_it() {
    let env = env_object();
    Reflect::delete_property(
        env.unchecked_ref::<Object>(),
        &"HARBOUR_RL_5_PER_60S".into(),
    )
    .unwrap();
    // Present but not a binding (a var of that name) is missing too.
    Reflect::set(&env, &"HARBOUR_RL_5_PER_60S".into(), &"5".into()).unwrap();
    let answer = parse_decision(&configure(&env, &[1; 16]));
    assert_eq!(answer["ok"], false);
    let error = answer["error"].as_str().unwrap();
    assert!(
        error.contains("HARBOUR_RL_5_PER_60S: no rate-limiting binding"),
        "{error}"
    );
    assert!(
        error.contains("simple = { limit = 5, period = 60 }"),
        "{error}"
    );
    let names: Vec<String> = serde_json::from_str(&expected_variables()).unwrap();
    assert!(names.contains(&"HARBOUR_RL_5_PER_60S".to_owned()));
}

/// The shell configured with a policy whose `cn` and `eu` take their submissions on an ingress,
/// `cn`'s simulated on this machine as `http://cn.localhost:8787` (what `scripts/run` does),
/// `eu`'s on the policy's own hostname.
fn configure_with_ingress(extra: &'static [(&'static str, &'static str)]) -> Value {
    let mut policy: Value = serde_json::from_str(SHIPPED_POLICY).unwrap();
    policy["regions"][0]["ingress"] =
        serde_json::json!({"host": "cn.campaign.example", "kept_in_region_by": "china_network"});
    policy["regions"][2]["ingress"] = serde_json::json!({"host": "eu.campaign.example", "kept_in_region_by": "regional_services"});
    let with_ingress = move |name: &str| {
        let simulated = [
            ("HARBOUR_INGRESS_CN", "http://cn.localhost:8787"),
            ("HARBOUR_LOG", "decisions"),
            // The page on the main hostname, as wrangler.toml allows it for `wrangler dev`.
            ("HARBOUR_PAGE_ORIGINS", "http://127.0.0.1:8787"),
        ];
        match extra.iter().chain(&simulated).find(|(n, _)| *n == name) {
            Some((_, value)) => Some((*value).to_owned()),
            None => lookup(name),
        }
    };
    parse_decision(&configure_policies(
        &policy.to_string(),
        None,
        &with_ingress,
        &|_| true,
        &[5; 24],
    ))
}

#[wasm_bindgen_test]
fn a_region_is_processed_only_on_its_ingress_and_the_description_says_which() {
    let answer = configure_with_ingress(&[]);
    assert_eq!(answer["ok"], true, "{answer}");
    let cn_entry: &[u8] = br#"{"name":"Li","email":"li@example.cn","country":"CN","consent":true}"#;
    let post = |url: &str, origin: Option<&str>, key: &str| {
        parse_decision(&decide(
            "POST",
            url,
            Some("application/json".into()),
            BODY_BYTES,
            cn_entry,
            Some("CN".into()),
            Some("192.0.2.70".into()),
            Some(key.into()),
            Some(solution_for(key)),
            origin.map(String::from),
            NOW,
        ))
    };
    let at_cn = "http://cn.localhost:8787/api/campaigns/spring-launch/submissions";
    // On the main hostname: refused, naming China's ingress, with a log line that says why.
    let refused = post(
        "http://127.0.0.1:8787/api/campaigns/spring-launch/submissions",
        None,
        &format!("{KEY}-main"),
    );
    assert_eq!(refused["reply"]["status"], 421);
    let body: Value = serde_json::from_str(refused["reply"]["body"].as_str().unwrap()).unwrap();
    assert_eq!(body["code"], "wrong_ingress");
    assert_eq!(body["submit"], at_cn);
    let log: Value = serde_json::from_str(refused["reply"]["log"].as_str().unwrap()).unwrap();
    assert_eq!(
        (&log["phase"], &log["outcome"]),
        (&"ingress".into(), &"wrong_ingress".into())
    );
    // On China's ingress, from the page on the main hostname (an allowed origin): on to the
    // location's binding, then to China's origin, with the page's CORS headers.
    let key = format!("{KEY}-cn");
    let decision = post(at_cn, Some("http://127.0.0.1:8787"), &key);
    let hold = decision["consult"]["hold"].as_f64().unwrap();
    let forward = parse_decision(&consulted(hold, LOCATION_ADMITTED, NOW + 1.0));
    assert_eq!(
        forward["forward"]["url"],
        "http://127.0.0.1:9000/v1/submissions"
    );
    // The form description for a visitor in China sends entries there.
    let form = parse_decision(&decide(
        "GET",
        "http://127.0.0.1:8787/api/campaigns/spring-launch",
        None,
        BODY_UNREAD,
        b"",
        Some("CN".into()),
        None,
        None,
        None,
        None,
        NOW,
    ));
    let described: Value = serde_json::from_str(form["reply"]["body"].as_str().unwrap()).unwrap();
    assert_eq!(described["submit"], at_cn);
    let eu = described["storage"]["choices"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["region"] == "eu")
        .unwrap();
    assert_eq!(eu["then"]["refused"], "residency_conflict");
    setup();
}

#[wasm_bindgen_test]
fn an_ingress_variable_the_policy_does_not_back_is_a_config_error_that_names_it() {
    let answer = configure_with_ingress(&[("HARBOUR_INGRESS_RU", "http://ru.localhost:8787")]);
    assert_eq!(answer["ok"], false);
    let error = answer["error"].as_str().unwrap();
    assert!(
        error.contains("HARBOUR_INGRESS_RU: the policy names no ingress for region \"ru\""),
        "{error}"
    );
    let moved = configure_with_ingress(&[("HARBOUR_INGRESS_CN", "https://cn.elsewhere.example")]);
    assert!(
        moved["error"].as_str().unwrap().contains("HARBOUR_INGRESS_CN: \"https://cn.elsewhere.example\" is not an address on this machine"),
        "{moved}"
    );
    setup();
}
