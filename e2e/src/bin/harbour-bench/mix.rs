//! What the load sends: the n-th request of a run, computed, so the audit can tell afterwards
//! what each stored row was meant to be.

const PATH: &str = "/api/campaigns/spring-launch/submissions";

#[derive(Clone, Copy, PartialEq)]
pub enum Mix {
    /// Every request valid, from its own client: the like-for-like cost comparison.
    ValidOnly,
    /// Valid from many clients and countries, 10 % invalid, 10 % from ten clients far over
    /// their limit.
    Realistic,
}

/// The n-th request of a run, deterministic so the audit can recompute what was sent.
pub struct Planned {
    /// One key per submission, kept across retries, as the campaign page does.
    pub key: String,
    pub country: &'static str,
    pub ip: String,
    pub body: String,
    pub valid: bool,
}

fn country_for(n: u64) -> &'static str {
    match (n.wrapping_mul(2_654_435_761) >> 7) % 100 {
        0..=39 => "US",
        40..=49 => "IT",
        50..=56 => "DE",
        57..=61 => "FR",
        62..=76 => "CN",
        77..=86 => "RU",
        _ => "AU",
    }
}

pub fn plan(mix: Mix, run: u32, n: u64) -> Planned {
    let country = country_for(n);
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
        key: format!("bench-{run}-{n:012}"),
        country,
        ip,
        body,
        valid: kind >= 2,
    }
}

pub fn request_bytes(p: &Planned) -> Vec<u8> {
    format!(
        "POST {PATH} HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\naccept-encoding: identity\r\n\
         idempotency-key: {}\r\ncf-connecting-ip: {}\r\nx-bench-cf: {{\"country\":\"{}\"}}\r\ncontent-length: {}\r\n\r\n{}",
        p.key,
        p.ip,
        p.country,
        p.body.len(),
        p.body
    )
    .into_bytes()
}
