//! Bot screening: submissions that look accepted and go nowhere.
//!
//! A filled honeypot, or (for a campaign with `min_fill_ms`) a form token that is forged, over a
//! day old or younger than the minimum fill time, marks a bot. It gets the same 202 receipt a
//! stored submission gets (same fields, same headers, an id of the same shape), so it learns
//! nothing, and nothing is forwarded. Submissions without a token (API clients) are judged on
//! content alone. Screening comes after admission, so bots pay into the limits like everyone.

use crate::admission::Grant;
use crate::config::Config;
use crate::form_token;
use crate::policy::Campaign;
use crate::reply::{accepted, Answer, Flow, Phase};
use crate::text::push_hex_u64;
use crate::validate::Submission;

/// Why a submission was taken for a bot's, if it was.
pub fn bot_sign(
    config: &Config,
    campaign: &Campaign,
    submission: &Submission,
    now_ms: u64,
) -> Option<&'static str> {
    if submission.honeypot_filled() {
        return Some("honeypot");
    }
    match (campaign.min_fill_ms, submission.form_token()) {
        (Some(min_fill_ms), Some(token))
            if !form_token::is_valid(config, &campaign.id, token, min_fill_ms, now_ms) =>
        {
            Some("too_fast")
        }
        _ => None,
    }
}

/// A receipt id of the shape origins give (`{region}-{16 hex digits}`), from `entropy`.
pub fn decoy_receipt_id(region_id: &str, entropy: u64) -> String {
    let mut id = String::with_capacity(region_id.len() + 17);
    id.push_str(region_id);
    id.push('-');
    push_hex_u64(&mut id, entropy, 16);
    id
}

/// What the screen phase needs to answer like an origin would.
pub struct Decoy<'a> {
    pub region_id: &'a str,
    pub key: &'a str,
    /// Unpredictable bits for the receipt id.
    pub entropy: u64,
    pub grant: &'a Grant,
}

/// The screen phase: a bot's submission gets a receipt and goes no further.
pub fn screen(
    config: &Config,
    campaign: &Campaign,
    submission: &Submission,
    now_ms: u64,
    decoy: Decoy,
) -> Flow<()> {
    let Some(sign) = bot_sign(config, campaign, submission, now_ms) else {
        return Flow::Continue(());
    };
    let mut reply = accepted(
        &decoy_receipt_id(decoy.region_id, decoy.entropy),
        decoy.region_id,
        decoy.key,
        false,
    );
    reply.headers.extend(decoy.grant.headers());
    Flow::Break(Answer::new(Phase::Screen, reply).counted_as(sign))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tests::local_config;
    use crate::limit::Quota;
    use crate::request::Encoding;
    use crate::validate::{check, parse_body};
    use std::num::{NonZeroU32, NonZeroU64};

    fn submission(body: &str) -> Submission {
        let campaign = local_config().policy.campaigns[0].clone();
        check(
            &campaign,
            parse_body(Encoding::Json, body.as_bytes()).unwrap(),
        )
        .unwrap()
    }

    const ENTRY: &str = r#""name":"A","email":"a@b.co","country":"US","consent":true"#;

    #[test]
    fn form_tokens_are_checked_for_mac_and_age() {
        let config = local_config();
        let campaign = &config.policy.campaigns[0];
        let issued = 1_000_000;
        let token = form_token::mint(&config, &campaign.id, issued);
        let min = campaign.min_fill_ms.unwrap();
        let with = |token: &str| submission(&format!(r#"{{{ENTRY},"_form":"{token}"}}"#));
        let sign = |s: &Submission, now| bot_sign(&config, campaign, s, now);
        assert_eq!(sign(&with(&token), issued + min), None);
        assert_eq!(sign(&with(&token), issued + min - 1), Some("too_fast"));
        assert_eq!(
            sign(&with(&token), issued + form_token::MAX_AGE_MS + 1),
            Some("too_fast")
        );
        let forged = format!("{issued}.{}", "0".repeat(32));
        assert_eq!(sign(&with(&forged), issued + min), Some("too_fast"));
        assert_eq!(sign(&with("junk"), issued + min), Some("too_fast"));
        // No token at all: an API client, judged on content.
        assert_eq!(sign(&submission(&format!("{{{ENTRY}}}")), 0), None);
        let honeypot = submission(&format!(r#"{{{ENTRY},"website":"x"}}"#));
        assert_eq!(sign(&honeypot, 0), Some("honeypot"));
    }

    #[test]
    fn a_bot_gets_a_receipt_shaped_like_an_origins() {
        let config = local_config();
        let campaign = &config.policy.campaigns[0];
        let grant = Grant {
            quota: Quota::new(
                NonZeroU32::new(5).unwrap(),
                NonZeroU64::new(60_000).unwrap(),
            ),
            remaining: 4,
            reset_ms: 12_000,
            location: None,
        };
        let decoy = Decoy {
            region_id: "global",
            key: "h-0123456789abcdef0123456789abcdef",
            entropy: 0xabc,
            grant: &grant,
        };
        let bot = submission(&format!(r#"{{{ENTRY},"website":"x"}}"#));
        let Flow::Break(answer) = screen(&config, campaign, &bot, 0, decoy) else {
            panic!("a bot went on")
        };
        assert_eq!(answer.outcome, "honeypot");
        let expected = crate::reply::accepted(
            "global-0000000000000abc",
            "global",
            "h-0123456789abcdef0123456789abcdef",
            false,
        );
        assert_eq!(answer.reply.body, expected.body);
        assert_eq!(answer.reply.status, 202);
        let names: Vec<_> = answer.reply.headers.iter().map(|(n, _)| *n).collect();
        assert_eq!(
            names,
            [
                "content-type",
                "cache-control",
                "idempotency-key",
                "ratelimit-policy",
                "ratelimit"
            ]
        );
    }
}
