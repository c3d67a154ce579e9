//! Bot screening: submissions that look accepted and go nowhere.
//!
//! A filled honeypot marks a bot. It gets the same 202 receipt a stored submission gets (same
//! fields, same headers, an id of the same shape), so it learns nothing, and nothing is
//! forwarded. It has done the proof of work (`challenge`) like everyone, and screening comes
//! after admission, so such bots pay into the limits like everyone.
//!
//! There is no minimum fill time: a form sent back within a second (autofill) or a day after it
//! was loaded is a real visitor's often enough, and a fake success would drop their entry.

use harbour_contract::receipt;

use crate::outcome::Outcome;
use crate::phase::validate::Submission;
use crate::reply::{Answer, Flow, Phase, Receipt};

/// Why a submission was taken for a bot's, if it was.
pub fn bot_sign(submission: &Submission) -> Option<Outcome> {
    submission.honeypot_filled().then_some(Outcome::Honeypot)
}

/// What the screen phase needs to answer like an origin would.
pub struct Decoy<'a> {
    pub region_id: &'a str,
    pub key: &'a str,
    /// Unpredictable bits for the receipt id.
    pub entropy: u64,
}

/// The screen phase: a bot's submission gets a receipt and goes no further.
pub fn screen(submission: &Submission, decoy: Decoy) -> Flow<()> {
    let Some(sign) = bot_sign(submission) else {
        return Flow::Continue(());
    };
    let receipt = Receipt {
        id: receipt::id(decoy.region_id, decoy.entropy),
        region_id: decoy.region_id,
        key: decoy.key,
        replayed: false,
    };
    Flow::Break(Answer::accepted(Phase::Screen, sign, receipt))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tests::local_config;
    use crate::phase::request::Encoding;
    use crate::phase::validate::{check, parse_body};

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
    fn only_the_honeypot_marks_a_bot_however_fast_or_late_the_form_comes_back() {
        // No timing: the proof of work (`challenge`) replaced the form token and its minimum fill
        // time, so a form autofilled at once or sent from a day-old tab is judged like any other.
        assert_eq!(bot_sign(&submission(&format!("{{{ENTRY}}}"))), None);
        let blank = submission(&format!(r#"{{{ENTRY},"remarks":" "}}"#));
        assert_eq!(bot_sign(&blank), None);
        let honeypot = submission(&format!(r#"{{{ENTRY},"remarks":"x"}}"#));
        assert_eq!(bot_sign(&honeypot), Some(Outcome::Honeypot));
        // The old form token is no longer a key the body may carry.
        let campaign = local_config().policy.campaigns[0].clone();
        let old = format!(r#"{{{ENTRY},"_form":"1.ab"}}"#);
        let errors = check(
            &campaign,
            parse_body(Encoding::Json, old.as_bytes()).unwrap(),
        )
        .unwrap_err();
        assert_eq!(errors[0].code, "unknown_field");
    }

    #[test]
    fn a_bot_gets_a_receipt_shaped_like_an_origins() {
        let decoy = Decoy {
            region_id: "global",
            key: "h-0123456789abcdef0123456789abcdef",
            entropy: 0xabc,
        };
        let bot = submission(&format!(r#"{{{ENTRY},"remarks":"x"}}"#));
        let Flow::Break(answer) = screen(&bot, decoy) else {
            panic!("a bot went on")
        };
        assert_eq!(answer.outcome.name(), "honeypot");
        let expected = crate::reply::accepted(
            "global-0000000000000abc",
            "global",
            "h-0123456789abcdef0123456789abcdef",
            false,
        );
        // The receipt a stored entry gets, to the byte; the pipeline adds the same `RateLimit`
        // headers to both.
        assert_eq!(answer.reply, expected);
    }
}
