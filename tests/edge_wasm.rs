//! The edge shell's conversions, run as wasm under Node: the JS-facing functions take what the
//! shim passes (strings, optional strings, a byte array, an `env` object) and give back the JSON
//! the shim reads.
#![cfg(target_arch = "wasm32")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use harbour::challenge;
use harbour::config::{key_var, origins_var, FORM_KEY_VAR};
use harbour::edge::{
    conclude, configure, decide, expected_variables, orphaned, parse_decision, BODY_BYTES,
    BODY_TOO_LARGE, BODY_UNREAD,
};
use harbour::policy::Policy;
use harbour::signature::SignatureHeader;
use js_sys::{Object, Reflect};
use serde_json::Value;
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_test::wasm_bindgen_test;

const URL: &str = "https://campaign.example/api/campaigns/spring-launch/submissions";
const VALID: &[u8] = br#"{"name":"Ada","email":"ada@example.org","country":"IT","consent":true}"#;

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
    Reflect::set(
        &env,
        &FORM_KEY_VAR.into(),
        &"form-0123456789abcdef0123456789abcdef".into(),
    )
    .unwrap();
    Reflect::set(&env, &"HARBOUR_LOG".into(), &"decisions".into()).unwrap();
    env.into()
}

fn setup() {
    let answer = parse_decision(&configure(&env_object(), &[42; 24]));
    assert_eq!(answer["ok"], true, "{answer}");
    assert_eq!(answer["max_body_bytes"], 8192);
}

const KEY: &str = "edge-key-0123456789abcdef";
const NOW: f64 = 1_764_000_000_000.0;

/// A solution for `KEY` to the challenge of a form description this shell hands out, solved
/// once (challenges are stateless: every configured instance with the same form key takes it).
fn solution() -> String {
    thread_local! {
        static SOLVED: std::cell::OnceCell<String> = const { std::cell::OnceCell::new() };
    }
    SOLVED.with(|cell| {
        cell.get_or_init(|| {
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
            let body: Value =
                serde_json::from_str(description["reply"]["body"].as_str().unwrap()).unwrap();
            let token = body["challenge"]["token"].as_str().unwrap();
            let bits = body["challenge"]["difficulty_bits"].as_u64().unwrap() as u8;
            challenge::solution(token, &challenge::solve(token, KEY, bits))
        })
        .clone()
    })
}

fn call(
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
    let log: Value = serde_json::from_str(too_large["log"].as_str().unwrap()).unwrap();
    assert_eq!(log["outcome"], "body_too_large");
    assert!(
        !too_large["log"].as_str().unwrap().contains("192.0.2.2"),
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
    assert!(post(Some(solution()))["forward"]["ticket"].is_u64());
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
    assert!(done["log"].as_str().unwrap().contains("\"attempts\":2"));
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
    let log: Value = serde_json::from_str(answer["log"].as_str().unwrap()).unwrap();
    assert_eq!(log["outcome"], "forward_orphaned");
    // Without a key there is none to show.
    let keyless = parse_decision(&orphaned(None, 1_764_000_000_000.0));
    assert_eq!(keyless["reply"]["status"], 503);
    assert!(!keyless["reply"]["body"]
        .as_str()
        .unwrap()
        .contains("idempotency_key"));
}
