//! Residency as the policy documents it, written apart from harbour's `Policy::region_of`,
//! `residency::place` and validation: the policy's JSON read with serde_json, the ISO 3166-1
//! codes from `report/iso3166-1.tsv` (Debian's iso-codes, not harbour's own country list), the
//! declared country read from the raw body, and origins named after their region, so the region
//! a URL belongs to is read from the URL rather than asked of harbour's configuration.
//! Shared by the fuzz targets (`mod oracle;`); each uses part of it.
#![allow(dead_code)]

use std::collections::HashMap;

use serde_json::Value;

const ISO_TABLE: &str = include_str!("../../report/iso3166-1.tsv");

/// What the oracle expects of a submission harbour found valid: its region's id, or the refusal
/// code of the classify phase.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Expected {
    Region(String),
    Refused(&'static str),
}

pub struct Oracle {
    /// Country code (upper case) → region id, for the countries a region lists.
    listed: HashMap<String, String>,
    strictness: HashMap<String, u64>,
    rest_of_world: String,
    /// unknown, tor, missing: the region a doubtful platform signal is routed to, or None to refuse.
    signals: [Option<String>; 3],
    on_conflict: String,
    /// `confirm` (a declared country moves an entry only with the visitor's `confirm_region`)
    /// or `platform` (it never moves one).
    declared_move: String,
    /// The name of the first campaign's field that declares a country.
    pub declared_field: Option<String>,
}

fn str_at<'a>(value: &'a Value, path: &str) -> &'a str {
    value
        .pointer(path)
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("policy JSON: no string at {path}"))
}

impl Oracle {
    pub fn from_json(policy: &str) -> Oracle {
        let json: Value = serde_json::from_str(policy).expect("policy JSON");
        let mut listed = HashMap::new();
        let mut strictness = HashMap::new();
        for region in json["regions"].as_array().expect("regions") {
            let id = region["id"].as_str().expect("region id").to_owned();
            strictness.insert(id.clone(), region["strictness"].as_u64().unwrap_or(0));
            for code in region["countries"].as_array().into_iter().flatten() {
                let code = code.as_str().expect("country code").to_ascii_uppercase();
                assert!(
                    is_country(&code),
                    "the policy lists {code}, which is no country"
                );
                let other = listed.insert(code.clone(), id.clone());
                assert!(other.is_none(), "{code} is listed twice");
            }
        }
        let signal = |name: &str| {
            let action = str_at(&json, &format!("/signals/{name}"));
            action.strip_prefix("region:").map(str::to_owned)
        };
        let declared_field = json["campaigns"][0]["fields"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|f| f["residency_signal"] == Value::Bool(true))
            .and_then(|f| f["name"].as_str())
            .map(str::to_owned);
        Oracle {
            listed,
            strictness,
            rest_of_world: str_at(&json, "/rest_of_world").to_owned(),
            signals: [signal("unknown"), signal("tor"), signal("missing")],
            on_conflict: str_at(&json, "/on_conflict").to_owned(),
            declared_move: json["declared_move"]
                .as_str()
                .unwrap_or("confirm")
                .to_owned(),
            declared_field,
        }
    }

    /// The region whose law covers `code` (an ISO code, upper case).
    pub fn region_of(&self, code: &str) -> String {
        self.listed
            .get(code)
            .cloned()
            .unwrap_or_else(|| self.rest_of_world.clone())
    }

    /// The region the platform's country header points to, or the refusal of a doubtful signal.
    fn platform_region(&self, header: Option<&str>) -> Result<String, &'static str> {
        let value = header.map(str::trim).unwrap_or("");
        let (route, refusal) = match value {
            "" => (&self.signals[2], "country_missing"),
            "T1" => (&self.signals[1], "country_anonymised"),
            // The platform writes codes in upper case; anything else is no code it sends.
            code if code.len() == 2
                && code.bytes().all(|b| b.is_ascii_uppercase())
                && is_country(code) =>
            {
                return Ok(self.region_of(code))
            }
            _ => (&self.signals[0], "country_unknown"),
        };
        route.clone().ok_or(refusal)
    }

    /// The rule of `on_conflict` over the platform's header and the declared country (an ISO
    /// code, upper case), as README and the policy's documentation state it; a declared country
    /// that would move the entry out of the platform's region does so under `declared_move:
    /// confirm` only when `confirmed` names that region, and is refused otherwise.
    pub fn expected(
        &self,
        platform: Option<&str>,
        declared: Option<&str>,
        confirmed: Option<&str>,
    ) -> Expected {
        let p = match self.platform_region(platform) {
            Ok(region) => region,
            Err(refusal) => return Expected::Refused(refusal),
        };
        let Some(d) = declared.map(|c| self.region_of(c)) else {
            return Expected::Region(p);
        };
        if d == p {
            return Expected::Region(p);
        }
        let row = &self.rest_of_world;
        let declared_wins = match self.on_conflict.as_str() {
            "platform" => false,
            "stricter" => self.strictness[&d] > self.strictness[&p],
            "refuse" if &p == row => true,
            "refuse" if &d == row => false,
            "refuse" => return Expected::Refused("residency_conflict"),
            rule => panic!("unknown conflict rule {rule:?}"),
        };
        match (declared_wins, self.declared_move.as_str()) {
            (false, _) | (true, "platform") => Expected::Region(p),
            (true, "confirm") if confirmed == Some(d.as_str()) => Expected::Region(d),
            (true, "confirm") => Expected::Refused("storage_unconfirmed"),
            (true, rule) => panic!("unknown declared_move {rule:?}"),
        }
    }

    /// The declared country of a body harbour accepted: the signal field's value, trimmed and
    /// upper-cased, when it is a country. `Err` when the oracle cannot read the body at all.
    pub fn declared(&self, content_type: &str, body: &[u8]) -> Result<Option<String>, String> {
        let Some(field) = &self.declared_field else {
            return Ok(None);
        };
        Ok(member(content_type, body, field)?
            .map(|v| v.trim().to_ascii_uppercase())
            .filter(|v| is_country(v)))
    }

    /// The region the visitor confirmed storage in: the body's `confirm_region`, as sent.
    pub fn confirmed(&self, content_type: &str, body: &[u8]) -> Result<Option<String>, String> {
        member(content_type, body, "confirm_region")
    }
}

/// A string member of a JSON body or a value of a form body.
fn member(content_type: &str, body: &[u8], name: &str) -> Result<Option<String>, String> {
    if content_type.starts_with("application/json") {
        let json: Value = serde_json::from_slice(body).map_err(|e| e.to_string())?;
        Ok(json.get(name).and_then(Value::as_str).map(str::to_owned))
    } else {
        Ok(form_value(body, name))
    }
}

/// ISO 3166-1's codes and XK (which the platform reports for Kosovo).
pub fn is_country(code: &str) -> bool {
    code == "XK"
        || ISO_TABLE
            .lines()
            .filter(|line| !line.starts_with('#'))
            .any(|line| line.split('\t').next() == Some(code))
}

/// The value of `name` in an `application/x-www-form-urlencoded` body (WHATWG: `+` is a space,
/// then percent-decoding, then UTF-8 with replacement).
fn form_value(body: &[u8], name: &str) -> Option<String> {
    let decode = |part: &[u8]| {
        let mut out = Vec::with_capacity(part.len());
        let mut i = 0;
        while i < part.len() {
            let hex = |b: u8| (b as char).to_digit(16);
            match part[i] {
                b'+' => out.push(b' '),
                b'%' if i + 2 < part.len() => match (hex(part[i + 1]), hex(part[i + 2])) {
                    (Some(h), Some(l)) => {
                        out.push((h * 16 + l) as u8);
                        i += 2;
                    }
                    _ => out.push(b'%'),
                },
                b => out.push(b),
            }
            i += 1;
        }
        String::from_utf8_lossy(&out).into_owned()
    };
    body.split(|b| *b == b'&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| match pair.iter().position(|b| *b == b'=') {
            Some(at) => (decode(&pair[..at]), decode(&pair[at + 1..])),
            None => (decode(pair), String::new()),
        })
        .find(|(n, _)| n == name)
        .map(|(_, v)| v)
}

/// The environment of a configuration whose origins are named after their region:
/// `https://o{n}.{region}.origin.test`, two per region, and a signing secret per region that
/// `signing_secret` repeats.
pub fn env(policy: &str) -> impl Fn(&str) -> Option<String> {
    let json: Value = serde_json::from_str(policy).expect("policy JSON");
    let ids: Vec<String> = json["regions"]
        .as_array()
        .expect("regions")
        .iter()
        .map(|r| r["id"].as_str().expect("region id").to_owned())
        .collect();
    move |name: &str| {
        if name == "HARBOUR_FORM_KEY" {
            return Some("fuzz-form-key-0123456789abcdefghijklmnop".into());
        }
        let var = |id: &str| id.to_ascii_uppercase().replace('-', "_");
        for id in &ids {
            if name == format!("HARBOUR_ORIGINS_{}", var(id)) {
                return Some(format!(
                    "https://o0.{id}.origin.test https://o1.{id}.origin.test"
                ));
            }
            if name == format!("HARBOUR_KEY_{}", var(id)) {
                return Some(signing_secret(id));
            }
        }
        None
    }
}

pub fn signing_secret(region: &str) -> String {
    format!("fuzz-{region}-signing-secret-0123456789abcdefghijkl")
}

/// The region an origin URL of `env`'s configuration belongs to.
pub fn region_of_url(url: &str) -> &str {
    url.strip_prefix("https://")
        .and_then(|rest| rest.split_once(".origin.test/"))
        .and_then(|(host, _)| host.split_once('.'))
        .map(|(_, region)| region)
        .unwrap_or_else(|| panic!("{url} is no origin of the fuzz configuration"))
}
