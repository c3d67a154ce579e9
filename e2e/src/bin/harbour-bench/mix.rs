//! What the load sends: the n-th request of a run, computed, so the audit can tell afterwards
//! what each stored row was meant to be.

const PATH: &str = "/api/campaigns/spring-launch/submissions";

/// What every request answers, per port, from each contestant's own form description (the
/// default, `None`, is harbour's: the pass-through and the origin floor check nothing): the
/// challenge (token, difficulty) and the notice shown (`Harbour-Notice`), if the description
/// carries one. The bench policy makes a challenge good for a day and 4 bits hard.
#[derive(Clone, Debug)]
pub struct Work {
    pub token: String,
    pub bits: u8,
    pub notice: Option<String>,
}

impl Work {
    /// The `Harbour-Challenge` value for `key`.
    pub fn proof(&self, key: &str) -> String {
        harbour_core::phase::challenge::solution(
            &self.token,
            &harbour_core::phase::challenge::solve(&self.token, key, self.bits),
        )
    }
}

type Challenges = std::collections::HashMap<Option<u16>, Work>;
static CHALLENGES: std::sync::Mutex<Option<Challenges>> = std::sync::Mutex::new(None);

pub fn use_description(port: Option<u16>, description: &serde_json::Value) {
    let challenge = &description["challenge"];
    let token = challenge["token"].as_str().expect("a challenge").to_owned();
    let bits = challenge["difficulty_bits"]
        .as_u64()
        .expect("its difficulty") as u8;
    assert!(
        bits <= 8,
        "the bench worker asks {bits} bits: built with the shipped policy?"
    );
    let notice = description["notice"]["version"]
        .is_string()
        .then(|| harbour_e2e::proof::notice_of(description));
    CHALLENGES
        .lock()
        .unwrap()
        .get_or_insert_with(Default::default)
        .insert(
            port,
            Work {
                token,
                bits,
                notice,
            },
        );
}

/// The work requests to `port` answer.
pub fn challenge_for(port: u16) -> Work {
    let challenges = CHALLENGES.lock().unwrap();
    let challenges = challenges.as_ref().expect("use_description first");
    challenges
        .get(&Some(port))
        .or_else(|| challenges.get(&None))
        .expect("use_description first")
        .clone()
}

#[derive(Clone, Copy, PartialEq, Debug)]
pub enum Mix {
    /// Every request valid, from its own client: the like-for-like cost comparison.
    ValidOnly,
    /// Valid from many clients and countries, 10 % invalid, 10 % from ten clients far over
    /// their limit.
    Realistic,
    /// The realistic mix's kinds of request from the audience of a national broadcast: 92 % of
    /// submissions from EU countries (the Netherlands most), so one region's two origins carry
    /// the peak.
    National,
}

impl Mix {
    /// `--mix` on the command line.
    pub fn parse(text: &str) -> Option<Mix> {
        match text {
            "realistic" => Some(Mix::Realistic),
            "national" => Some(Mix::National),
            _ => None,
        }
    }

    pub fn describe(self) -> &'static str {
        match self {
            Mix::ValidOnly => "valid only",
            Mix::Realistic => "realistic mix over five regions (80 % valid, 10 % invalid, 10 % over-limit clients)",
            Mix::National => "national-broadcast mix: 92 % from EU countries (80 % valid, 10 % invalid, 10 % over-limit clients)",
        }
    }
}

/// The n-th request of a run, deterministic so the audit can recompute what was sent.
pub struct Planned {
    /// One key per submission, kept across retries, as the campaign page does.
    pub key: String,
    pub country: &'static str,
    pub ip: String,
    /// The email field of its body: one entry per email, so each submission's own.
    pub email: String,
    pub body: String,
    pub valid: bool,
}

fn country_for(mix: Mix, n: u64) -> &'static str {
    let percentile = (n.wrapping_mul(2_654_435_761) >> 7) % 100;
    if mix == Mix::National {
        return match percentile {
            0..=39 => "NL",
            40..=59 => "DE",
            60..=69 => "BE",
            70..=79 => "FR",
            80..=84 => "IT",
            85..=89 => "ES",
            90..=91 => "AT",
            92..=96 => "US",
            97 => "CN",
            98 => "RU",
            _ => "AU",
        };
    }
    match percentile {
        0..=39 => "US",
        40..=49 => "IT",
        50..=56 => "DE",
        57..=61 => "FR",
        62..=76 => "CN",
        77..=86 => "RU",
        _ => "AU",
    }
}

/// The idempotency key of the n-th request of a run: spread over the key index as the page's
/// random UUIDs are, its number readable (`harbour_contract::key`).
pub fn key_of(run: u32, n: u64) -> String {
    harbour_contract::key::numbered(&run.to_string(), n)
}

pub fn plan(mix: Mix, run: u32, n: u64) -> Planned {
    let country = country_for(mix, n);
    let kind = if mix == Mix::ValidOnly { 10 } else { n % 20 };
    let ip = match kind {
        2 | 3 => format!("198.18.0.{}", n % 10),
        _ => {
            let i = if mix == Mix::ValidOnly {
                n
            } else {
                n % 400_000
            };
            format!("100.{}.{}.{}", 64 + (i >> 16) % 64, (i >> 8) & 255, i & 255)
        }
    };
    let email = if kind < 2 {
        format!("load{run}-{n}-at-example.org")
    } else {
        format!("load{run}-{n}@example.org")
    };
    let body = format!(
        r#"{{"name":"Load Visitor {n}","email":"{email}","country":"{country}","consent":true}}"#
    );
    Planned {
        key: key_of(run, n),
        country,
        ip,
        email,
        body,
        valid: kind >= 2,
    }
}

/// The request, with the work for its key done and the notice sent as the page does it.
pub fn request_bytes(p: &Planned, work: &Work) -> Vec<u8> {
    let proof = work.proof(&p.key);
    let notice = work
        .notice
        .as_ref()
        .map(|n| format!("harbour-notice: {n}\r\n"))
        .unwrap_or_default();
    format!(
        "POST {PATH} HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\naccept-encoding: identity\r\n\
         idempotency-key: {}\r\nharbour-challenge: {proof}\r\n{notice}cf-connecting-ip: {}\r\nx-bench-cf: {{\"country\":\"{}\"}}\r\ncontent-length: {}\r\n\r\n{}",
        p.key,
        p.ip,
        p.country,
        p.body.len(),
        p.body
    )
    .into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_national_mix_places_at_least_nine_in_ten_in_the_eu() {
        let policy = harbour_policy::Policy::shipped().unwrap();
        let in_eu = (0..10_000)
            .filter(|n| {
                let country =
                    harbour_policy::country::Country::parse(plan(Mix::National, 1, *n).country)
                        .unwrap();
                policy.region(policy.region_of(country)).id == "eu"
            })
            .count();
        assert!(in_eu >= 9_000, "{in_eu} of 10,000 in the EU");
    }
}
