//! The proof of work every submission carries, and the `challenge` phase that checks it.
//!
//! The form description hands out a challenge: a token
//!
//! ```text
//! {campaign}.{expires_ms}.{difficulty_bits}.{salt: 32 hex}.{mac: 32 hex}
//! ```
//!
//! whose MAC (HMAC-SHA256 under `HARBOUR_FORM_KEY`, truncated to 128 bits) vouches for the rest.
//! A client solves it for the idempotency key it will send: it finds a nonce (1-16 lowercase
//! hex digits) such that
//!
//! ```text
//! SHA-256("{token}\n{idempotency key}\n{nonce}")
//! ```
//!
//! starts with `difficulty_bits` zero bits, and sends `Harbour-Challenge: {token}.{nonce}` with
//! `Idempotency-Key: {key}`. Checking it costs one HMAC and one hash and needs no state: the token
//! says everything and the MAC makes it trustworthy. Because the work covers the key, and an
//! origin stores one entry per key, one solved challenge is good for one entry; resending it
//! (after a 422, or a 503) is fine and costs no new work.
//!
//! The phase runs right after the request's framing is checked and before the body is parsed or
//! any limit is charged: a request without valid work costs a header parse and at most one HMAC,
//! and can never spend the campaign's or a region's budget, which belongs to visitors who did
//! the work. Refusals are honest (4xx problem+json with `challenge_required`,
//! `challenge_expired` or `challenge_invalid` and where to get a fresh challenge); a page answers
//! them by solving a new challenge and sending again with the same key.

use sha2::{Digest, Sha256};

use crate::config::Config;
pub use crate::outcome::ChallengeRefusal as Refusal;
use crate::outcome::Outcome;
use crate::reply::{problem, Answer, Flow, Phase};
use harbour_contract::signature::SigningKey;
use harbour_policy::text::{push_hex, push_hex_u64, push_u64};
use harbour_policy::{Campaign, ChallengeRule};

/// The request header that carries a solution.
pub const HEADER: &str = "harbour-challenge";

/// Bytes of the MAC the token carries (of HMAC-SHA256's 32).
const MAC_BYTES: usize = 16;
const MAC_PREFIX: &[u8] = b"harbour-challenge-v1\n";
const MAX_NONCE_DIGITS: usize = 16;
/// The longest a well-formed solution can be: a campaign id (64), an expiry (20 digits), a
/// difficulty (3), a salt (32), the MAC (32), a nonce (16) and five dots. Anything longer is
/// refused before any hashing, so a request cannot make the edge MAC an attacker-sized token.
const MAX_SOLUTION_BYTES: usize = 64 + 20 + 3 + 32 + 2 * MAC_BYTES + MAX_NONCE_DIGITS + 5;

/// The shape of an idempotency key a solution can cover, and that a forward carries as is
/// (otherwise `forward` derives one from the content).
pub fn is_well_formed_key(key: &str) -> bool {
    (16..=64).contains(&key.len())
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// The difficulty in force for `campaign` at `now_ms`: a surge window's own, or the campaign's.
/// Every solution must meet it, whatever the challenge it answers was issued with, so a form
/// handed out before a window opens is asked for the window's work (the page re-solves at once).
pub fn difficulty_at(campaign: &Campaign, now_ms: u64) -> u8 {
    campaign.in_force(now_ms).difficulty_bits
}

/// A challenge as the form description hands it out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Issued {
    pub token: String,
    pub difficulty_bits: u8,
    /// How long the token stays good, counted from when it was handed out.
    pub valid_ms: u64,
}

/// A new challenge for `campaign` at `now_ms`; `salt` makes it one of its own.
pub fn issue(key: &SigningKey, campaign: &Campaign, now_ms: u64, salt: u128) -> Issued {
    let ChallengeRule { valid_ms, .. } = campaign.challenge;
    let bits = difficulty_at(campaign, now_ms);
    let mut token = String::with_capacity(campaign.id.len() + 90);
    token.push_str(&campaign.id);
    token.push('.');
    push_u64(&mut token, now_ms.saturating_add(valid_ms));
    token.push('.');
    push_u64(&mut token, u64::from(bits));
    token.push('.');
    push_hex_u64(&mut token, (salt >> 64) as u64, 16);
    push_hex_u64(&mut token, salt as u64, 16);
    let mac = key.mac(&[MAC_PREFIX, token.as_bytes()]);
    token.push('.');
    push_hex(&mut token, &mac[..MAC_BYTES]);
    Issued {
        token,
        difficulty_bits: bits,
        valid_ms,
    }
}

/// The parts of a received solution.
struct Parsed<'a> {
    /// Everything before the nonce: what the MAC and the work cover.
    token: &'a str,
    campaign: &'a str,
    expires_ms: u64,
    bits: u8,
    mac_hex: &'a str,
    nonce: &'a str,
}

fn parse(solution: &str) -> Option<Parsed<'_>> {
    let (token, nonce) = solution.rsplit_once('.')?;
    let (signed, mac_hex) = token.rsplit_once('.')?;
    let mut parts = signed.split('.');
    let (campaign, expires, bits, salt) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let hex = |s: &str, max: usize| {
        (1..=max).contains(&s.len()) && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    };
    let digits =
        |s: &str, max: usize| (1..=max).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_digit());
    let well_formed = parts.next().is_none()
        && (1..=64).contains(&campaign.len())
        && digits(expires, 20)
        && digits(bits, 3)
        && hex(salt, 32)
        && salt.len() == 32
        && hex(mac_hex, 2 * MAC_BYTES)
        && mac_hex.len() == 2 * MAC_BYTES
        && hex(nonce, MAX_NONCE_DIGITS);
    if !well_formed {
        return None;
    }
    Some(Parsed {
        token,
        campaign,
        expires_ms: expires.parse().ok()?,
        bits: bits.parse().ok()?,
        mac_hex,
        nonce,
    })
}

/// Leading zero bits of a digest.
fn leading_zero_bits(digest: &[u8]) -> u32 {
    let mut bits = 0;
    for byte in digest {
        bits += byte.leading_zeros();
        if *byte != 0 {
            break;
        }
    }
    bits
}

/// The digest the work is judged on.
fn work(token: &str, idempotency_key: &str, nonce: &str) -> [u8; 32] {
    let mut hash = Sha256::new();
    for part in [token, "\n", idempotency_key, "\n", nonce] {
        hash.update(part.as_bytes());
    }
    hash.finalize().into()
}

/// Whether `mac_hex` is the MAC's first bytes, compared in constant time.
fn same_mac(mac: &[u8; 32], mac_hex: &str) -> bool {
    let digit = |b: u8| match b {
        b'0'..=b'9' => b - b'0',
        _ => b.wrapping_sub(b'a').wrapping_add(10),
    };
    let hex = mac_hex.as_bytes();
    let mut difference = 0u8;
    for (i, byte) in mac[..MAC_BYTES].iter().enumerate() {
        let received = (digit(hex[2 * i]) << 4) | digit(hex[2 * i + 1]);
        difference |= received ^ byte;
    }
    difference == 0
}

/// Checks a submission's solution (the `Harbour-Challenge` value) for `campaign`, sent with
/// `idempotency_key`, at `now_ms`.
pub fn verify(
    key: &SigningKey,
    campaign: &Campaign,
    solution: Option<&str>,
    idempotency_key: Option<&str>,
    now_ms: u64,
) -> Result<(), Refusal> {
    let solution = solution.ok_or(Refusal::Required)?.trim();
    // The cheap checks first: length and shape, then the campaign, and only then the MAC.
    let parsed = (solution.len() <= MAX_SOLUTION_BYTES)
        .then(|| parse(solution))
        .flatten()
        .ok_or(Refusal::Invalid(
            "the Harbour-Challenge header is not {token}.{nonce}",
        ))?;
    if parsed.campaign != campaign.id {
        return Err(Refusal::Invalid(
            "the challenge was issued for another campaign",
        ));
    }
    let signed = &parsed.token[..parsed.token.len() - parsed.mac_hex.len() - 1];
    if !same_mac(&key.mac(&[MAC_PREFIX, signed.as_bytes()]), parsed.mac_hex) {
        return Err(Refusal::Invalid("the challenge was not issued here"));
    }
    if now_ms > parsed.expires_ms || parsed.bits < difficulty_at(campaign, now_ms) {
        return Err(Refusal::Expired);
    }
    let Some(idempotency_key) = idempotency_key.filter(|k| is_well_formed_key(k)) else {
        return Err(Refusal::Invalid(
            "a solution covers the Idempotency-Key it was solved for: send that key (16-64 of A-Z a-z 0-9 - _)",
        ));
    };
    let digest = work(parsed.token, idempotency_key, parsed.nonce);
    if leading_zero_bits(&digest) < u32::from(parsed.bits) {
        return Err(Refusal::Invalid(
            "the solution does not meet the challenge's difficulty for this Idempotency-Key",
        ));
    }
    Ok(())
}

/// Finds a nonce for `token` and `idempotency_key` (for API clients, tests and the bench: a
/// browser solves in `www/pow.js`). Expected 2^difficulty_bits hashes.
pub fn solve(token: &str, idempotency_key: &str, difficulty_bits: u8) -> String {
    let mut nonce = String::with_capacity(MAX_NONCE_DIGITS);
    for n in 0u64.. {
        nonce.clear();
        // As many hex digits as `n` needs.
        let digits = (64 - n.leading_zeros()).div_ceil(4).max(1);
        push_hex_u64(&mut nonce, n, digits);
        let digest = work(token, idempotency_key, &nonce);
        if leading_zero_bits(&digest) >= u32::from(difficulty_bits) {
            break;
        }
    }
    nonce
}

/// The `Harbour-Challenge` value for a solved token.
pub fn solution(token: &str, nonce: &str) -> String {
    format!("{token}.{nonce}")
}

/// The challenge phase: a submission without valid work is refused before anything is parsed
/// or charged.
pub fn challenge(
    config: &Config,
    campaign: &Campaign,
    solution: Option<&str>,
    idempotency_key: Option<&str>,
    now_ms: u64,
) -> Flow<()> {
    let refusal = match verify(
        &config.form_key,
        campaign,
        solution,
        idempotency_key,
        now_ms,
    ) {
        Ok(()) => return Flow::Continue(()),
        Err(refusal) => refusal,
    };
    let (status, title, detail) = match refusal {
        Refusal::Required => (
            400,
            "Proof of work required",
            "solve the challenge from the form description and send Harbour-Challenge: {token}.{nonce} with your Idempotency-Key",
        ),
        Refusal::Expired => (
            403,
            "Challenge expired",
            "fetch a fresh challenge from the form description, solve it and send again with the same Idempotency-Key",
        ),
        Refusal::Invalid(why) => (403, "Proof of work not accepted", why),
    };
    let mut url = String::from("/api/campaigns/");
    url.push_str(&campaign.id);
    let extra = [("challenge_url", harbour_policy::text::quoted(&url))];
    Flow::Break(Answer::new(
        Phase::Challenge,
        problem(status, Outcome::Challenge(refusal), title, detail, &extra),
    ))
}

/// A `Harbour-Challenge` value solved for `key`, issued at `now_ms`, for the first campaign.
#[cfg(test)]
pub(crate) fn solved_for_tests(config: &Config, key: &str, now_ms: u64) -> &'static str {
    let issued = issue(&config.form_key, &config.policy.campaigns[0], now_ms, 1);
    let nonce = solve(&issued.token, key, issued.difficulty_bits);
    Box::leak(solution(&issued.token, &nonce).into_boxed_str())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tests::local_config;

    const KEY: &str = "visitor-key-0123456789";
    const NOW: u64 = 1_764_000_000_000;

    fn campaign_with(bits: u8) -> Campaign {
        let mut campaign = local_config().policy.campaigns[0].clone();
        campaign.challenge.difficulty_bits = bits;
        campaign
    }

    fn solved(config: &Config, campaign: &Campaign, key: &str, at: u64) -> String {
        let issued = issue(
            &config.form_key,
            campaign,
            at,
            0x0123_4567_89ab_cdef_0011_2233_4455_6677,
        );
        solution(
            &issued.token,
            &solve(&issued.token, key, issued.difficulty_bits),
        )
    }

    #[test]
    fn an_issued_token_has_its_parts_and_a_solution_passes() {
        let config = local_config();
        let campaign = campaign_with(8);
        let issued = issue(&config.form_key, &campaign, NOW, 1);
        let parts: Vec<_> = issued.token.split('.').collect();
        assert_eq!(parts[0], "spring-launch");
        assert_eq!(parts[1], (NOW + campaign.challenge.valid_ms).to_string());
        assert_eq!(parts[2], "8");
        assert_eq!(parts[3], format!("{:032x}", 1));
        assert_eq!(parts[4].len(), 32);
        let answer = solved(&config, &campaign, KEY, NOW);
        assert_eq!(
            verify(
                &config.form_key,
                &campaign,
                Some(&answer),
                Some(KEY),
                NOW + 1
            ),
            Ok(())
        );
    }

    #[test]
    fn forged_mac_wrong_campaign_expired_other_key_and_short_work_are_refused() {
        let config = local_config();
        let campaign = campaign_with(8);
        let good = solved(&config, &campaign, KEY, NOW);
        let check = |solution: &str, key: Option<&str>, at: u64| {
            verify(&config.form_key, &campaign, Some(solution), key, at)
        };
        let invalid = |result: Result<(), Refusal>| matches!(result, Err(Refusal::Invalid(_)));
        // Forged MAC: any change to what the MAC covers, or to the MAC itself.
        let mut forged_mac = good.clone();
        let at = forged_mac.len() - good.rsplit('.').next().unwrap().len() - 2;
        forged_mac.replace_range(at..=at, if &good[at..=at] == "0" { "1" } else { "0" });
        assert!(invalid(check(&forged_mac, Some(KEY), NOW)), "{forged_mac}");
        let easier = good.replacen(".8.", ".1.", 1);
        assert!(invalid(check(&easier, Some(KEY), NOW)));
        let longer = good.replacen(
            &(NOW + campaign.challenge.valid_ms).to_string(),
            &u64::MAX.to_string(),
            1,
        );
        assert!(invalid(check(&longer, Some(KEY), NOW)));
        let other_key = SigningKey::new(b"another-form-secret-0123456789abcdef").unwrap();
        let issued = issue(&other_key, &campaign, NOW, 7);
        let foreign = solution(&issued.token, &solve(&issued.token, KEY, 8));
        assert_eq!(
            check(&foreign, Some(KEY), NOW),
            Err(Refusal::Invalid("the challenge was not issued here"))
        );
        // Wrong campaign: a genuine challenge of another campaign.
        let mut other = campaign.clone();
        other.id = "autumn".into();
        let theirs = solved(&config, &other, KEY, NOW);
        assert_eq!(
            check(&theirs, Some(KEY), NOW),
            Err(Refusal::Invalid(
                "the challenge was issued for another campaign"
            ))
        );
        // Expired: one millisecond past the token's expiry.
        let expiry = NOW + campaign.challenge.valid_ms;
        assert_eq!(check(&good, Some(KEY), expiry), Ok(()));
        assert_eq!(check(&good, Some(KEY), expiry + 1), Err(Refusal::Expired));
        // A solution for another idempotency key, or for none.
        assert!(invalid(check(&good, Some("visitor-key-9876543210"), NOW)));
        assert!(invalid(check(&good, None, NOW)));
        assert!(invalid(check(&good, Some("short"), NOW)));
        // Difficulty not met: a nonce that does not give the zero bits.
        let token = good.rsplit_once('.').unwrap().0;
        let weak = (0u64..)
            .map(|n| format!("{n:x}"))
            .find(|n| leading_zero_bits(&work(token, KEY, n)) < 8)
            .unwrap();
        assert_eq!(
            check(&solution(token, &weak), Some(KEY), NOW),
            Err(Refusal::Invalid(
                "the solution does not meet the challenge's difficulty for this Idempotency-Key"
            ))
        );
        // Missing or malformed.
        assert_eq!(
            verify(&config.form_key, &campaign, None, Some(KEY), NOW),
            Err(Refusal::Required)
        );
        for junk in [
            "",
            "x",
            "a.b.c.d.e.f",
            &format!("{token}."),
            &format!("{token}.XYZ"),
            &format!("{token}.{}", "0".repeat(17)),
        ] {
            assert!(invalid(check(junk, Some(KEY), NOW)), "{junk}");
        }
    }

    #[test]
    fn a_raised_difficulty_makes_older_challenges_stale() {
        let config = local_config();
        let easy = campaign_with(4);
        let answer = solved(&config, &easy, KEY, NOW);
        let harder = campaign_with(12);
        assert_eq!(
            verify(&config.form_key, &harder, Some(&answer), Some(KEY), NOW),
            Err(Refusal::Expired)
        );
        // A token issued at a higher difficulty keeps its own.
        let hard_answer = solved(&config, &harder, KEY, NOW);
        assert_eq!(
            verify(&config.form_key, &easy, Some(&hard_answer), Some(KEY), NOW),
            Ok(())
        );
    }

    #[test]
    fn a_surge_window_asks_its_own_work_from_its_start_to_just_before_its_end() {
        let config = local_config();
        let mut campaign = campaign_with(4);
        let (start, end) = (NOW + 60_000, NOW + 360_000);
        campaign.surge_windows = vec![harbour_policy::SurgeWindow {
            id: "tv-spot".into(),
            start_ms: start,
            end_ms: end,
            per_client: campaign.per_client,
            on_location_unavailable: harbour_policy::FailMode::Open,
            difficulty_bits: Some(10),
        }];
        for (at, bits) in [(start - 1, 4), (start, 10), (end - 1, 10), (end, 4)] {
            assert_eq!(difficulty_at(&campaign, at), bits, "at {at}");
            assert_eq!(
                issue(&config.form_key, &campaign, at, 1).difficulty_bits,
                bits
            );
        }
        // Work done for the campaign's 4 bits just before the window is stale inside it (the
        // page fetches a window challenge and solves again), and good again after it.
        let before = solved(&config, &campaign, KEY, start - 1);
        let verify_at = |at| verify(&config.form_key, &campaign, Some(&before), Some(KEY), at);
        assert_eq!(verify_at(start - 1), Ok(()));
        assert_eq!(verify_at(start), Err(Refusal::Expired));
        assert_eq!(verify_at(end - 1), Err(Refusal::Expired));
        assert_eq!(verify_at(end), Ok(()));
        // Work for the window's 10 bits passes inside it.
        let inside = solved(&config, &campaign, KEY, start);
        assert_eq!(
            verify(
                &config.form_key,
                &campaign,
                Some(&inside),
                Some(KEY),
                start + 1
            ),
            Ok(())
        );
    }

    #[test]
    fn the_phase_answers_each_refusal_with_its_code() {
        let config = local_config();
        let campaign = campaign_with(4);
        let good = solved(&config, &campaign, KEY, NOW);
        let answer = |solution: Option<&str>, at: u64| match challenge(
            &config,
            &campaign,
            solution,
            Some(KEY),
            at,
        ) {
            Flow::Break(a) => (a.phase, a.reply.status, a.outcome.name()),
            Flow::Continue(()) => (Phase::Challenge, 0, "passed"),
        };
        assert_eq!(answer(Some(&good), NOW), (Phase::Challenge, 0, "passed"));
        assert_eq!(
            answer(None, NOW),
            (Phase::Challenge, 400, "challenge_required")
        );
        assert_eq!(
            answer(Some(&good), u64::MAX),
            (Phase::Challenge, 403, "challenge_expired")
        );
        assert_eq!(
            answer(Some("junk"), NOW),
            (Phase::Challenge, 403, "challenge_invalid")
        );
        let Flow::Break(refused) = challenge(&config, &campaign, None, Some(KEY), NOW) else {
            panic!("went on")
        };
        let body: serde_json::Value = serde_json::from_str(&refused.reply.body).unwrap();
        assert_eq!(body["challenge_url"], "/api/campaigns/spring-launch");
    }

    #[test]
    fn zero_bits_are_counted_across_bytes() {
        assert_eq!(leading_zero_bits(&[0x80]), 0);
        assert_eq!(leading_zero_bits(&[0x00, 0x01]), 15);
        assert_eq!(leading_zero_bits(&[0x00, 0x00, 0x10]), 19);
        assert_eq!(leading_zero_bits(&[0; 32]), 256);
    }

    #[test]
    fn an_attacker_sized_or_foreign_token_is_refused_before_its_mac_is_computed() {
        let config = local_config();
        let campaign = campaign_with(8);
        let good = solved(&config, &campaign, KEY, NOW);
        let refusal =
            |solution: &str| verify(&config.form_key, &campaign, Some(solution), Some(KEY), NOW);
        // One byte over the longest well-formed solution: refused for its shape.
        let long = format!("{}.{}", "c".repeat(MAX_SOLUTION_BYTES), good);
        assert_eq!(
            refusal(&long),
            Err(Refusal::Invalid(
                "the Harbour-Challenge header is not {token}.{nonce}"
            ))
        );
        // Another campaign with a MAC that is not even ours: named for its campaign, which is
        // checked before the MAC (a wrong MAC would otherwise be the answer).
        let foreign = good.replacen("spring-launch", "autumn-sale", 1);
        let forged = {
            let (rest, nonce) = foreign.rsplit_once('.').unwrap();
            let (signed, _) = rest.rsplit_once('.').unwrap();
            format!("{signed}.{}.{nonce}", "0".repeat(2 * MAC_BYTES))
        };
        assert_eq!(
            refusal(&forged),
            Err(Refusal::Invalid(
                "the challenge was issued for another campaign"
            ))
        );
        // Digits beyond what an expiry or a difficulty can hold are malformed too.
        let (campaign_id, rest) = good.split_once('.').unwrap();
        let (expires, rest) = rest.split_once('.').unwrap();
        let padded = format!("{campaign_id}.{}{expires}.{rest}", "0".repeat(30));
        assert!(matches!(refusal(&padded), Err(Refusal::Invalid(_))));
        assert_eq!(refusal(&good), Ok(()));
    }
}
