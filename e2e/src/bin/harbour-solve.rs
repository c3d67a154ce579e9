//! Solves a campaign's proof-of-work challenge for an API client (`scripts/submit` runs it).
//!
//! ```text
//! harbour-solve KEY < description.json
//! ```
//!
//! reads a form description (`GET /api/campaigns/{id}`) on standard input and prints two lines:
//! the `Harbour-Challenge` value for the idempotency key `KEY` (the challenge's token and a nonce
//! whose work covers that key, see `harbour_core::phase::challenge`), then the `Harbour-Notice`
//! value of the description's notice (`{lang}.{version}`), which says the sender showed it. Send
//! both with `Idempotency-Key: KEY`.

use std::io::Read;

fn main() {
    let mut args = std::env::args().skip(1);
    let (Some(key), None) = (args.next(), args.next()) else {
        fail("usage: harbour-solve IDEMPOTENCY_KEY < form-description.json");
    };
    if !harbour_core::phase::challenge::is_well_formed_key(&key) {
        fail("the idempotency key must be 16-64 of A-Z a-z 0-9 - _");
    }
    let mut text = String::new();
    if std::io::stdin().read_to_string(&mut text).is_err() {
        fail("standard input is not text");
    }
    let description: serde_json::Value = serde_json::from_str(&text)
        .unwrap_or_else(|e| fail(&format!("standard input is not a form description: {e}")));
    let challenge = &description["challenge"];
    let (Some(token), Some(bits)) = (
        challenge["token"].as_str(),
        challenge["difficulty_bits"]
            .as_u64()
            .and_then(|b| u8::try_from(b).ok()),
    ) else {
        fail("the description has no challenge (token, difficulty_bits)");
    };
    let (Some(lang), Some(version)) = (
        description["lang"].as_str(),
        description["notice"]["version"].as_str(),
    ) else {
        fail("the description has no notice (lang, notice.version)");
    };
    let nonce = harbour_core::phase::challenge::solve(token, &key, bits);
    println!(
        "{}\n{lang}.{version}",
        harbour_core::phase::challenge::solution(token, &nonce)
    );
}

fn fail(message: &str) -> ! {
    eprintln!("harbour-solve: {message}");
    std::process::exit(2);
}
