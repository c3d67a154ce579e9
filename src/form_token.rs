//! The form token: when the campaign page was handed its form, vouched for by harbour, so a
//! form sent back faster than a person fills one can be told apart (see `screen`).

use crate::config::Config;

/// Forms older than this are refused as too fast too: a token is not a lasting pass.
pub const MAX_AGE_MS: u64 = 24 * 60 * 60 * 1000;

fn mac(config: &Config, campaign: &str, issued_ms: u64) -> String {
    // Keyed with the rest-of-world region's signing key under a message prefix of its own.
    let key = &config.regions[config.policy.rest_of_world.get()].key;
    let mac = key.mac_hex(&format!("harbour-form-v1\n{campaign}\n{issued_ms}"));
    mac[..32].to_owned()
}

/// `{issued_ms}.{mac}`: when the form was handed out, vouched for by harbour.
pub fn mint(config: &Config, campaign: &str, now_ms: u64) -> String {
    format!("{now_ms}.{}", mac(config, campaign, now_ms))
}

/// Whether `token` was minted here for `campaign`, at least `min_fill_ms` and at most a day ago.
pub fn is_valid(
    config: &Config,
    campaign: &str,
    token: &str,
    min_fill_ms: u64,
    now_ms: u64,
) -> bool {
    let Some((issued, received)) = token.split_once('.') else {
        return false;
    };
    let Ok(issued_ms) = issued.parse::<u64>() else {
        return false;
    };
    let age = now_ms.saturating_sub(issued_ms);
    let expected = mac(config, campaign, issued_ms);
    // Constant time, so response timing says nothing about how much of a forgery matched.
    let same = received.len() == expected.len()
        && received
            .bytes()
            .zip(expected.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0;
    same && issued_ms <= now_ms && age >= min_fill_ms && age <= MAX_AGE_MS
}
