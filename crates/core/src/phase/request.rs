//! The request as the platform delivered it, and the first two phases it meets.
//!
//! - `route`: which endpoint and campaign the URL names (404 for anything else, whatever the
//!   method), whether the method fits the endpoint (405 with `Allow`), the form description for
//!   `GET`, and the CORS decision: a same-origin request needs none, a cross-origin one must come
//!   from one of the campaign's allowed origins or from one of harbour's own ingress hostnames
//!   (a page served there sends another region's entries to that region's ingress), or it is
//!   refused (403); a preflight is answered here (204). The campaign page's own origin on the
//!   main hostname is one of the campaign's allowed origins wherever a region has an ingress,
//!   since that page sends the region's entries across origins to the ingress.
//! - `request_check`: what the body is and whether it fits: JSON or form encoding in UTF-8 (415),
//!   at most the policy's body cap (413, decided before the shell buffers more than the cap), and
//!   complete (400).

use crate::config::Config;
use crate::outcome::Outcome;
use crate::phase::challenge;
use crate::phase::ingress::submit_url;
use crate::reply::{problem, Answer, Cors, Flow, Phase, Reply};
use harbour_policy::text::JsonObject;
use harbour_policy::{utc, Campaign, CampaignIndex, Policy, RegionIndex, LOCALES};

use crate::phase::residency::{choices, place, PlatformCountry};
pub use crate::phase::validate::{Encoding, Payload};

/// The request as the platform delivered it; every field is as read, unchecked.
#[derive(Clone, Copy, Debug)]
pub struct Facts<'a> {
    pub method: &'a str,
    pub url: &'a str,
    pub content_type: Option<&'a str>,
    pub body: Body<'a>,
    /// `request.cf.country`: the only trusted country signal.
    pub country: Option<&'a str>,
    /// `CF-Connecting-IP`, set by the platform.
    pub client_ip: Option<&'a str>,
    pub idempotency_key: Option<&'a str>,
    /// The `Harbour-Challenge` request header: the proof of work (see `challenge`).
    pub challenge: Option<&'a str>,
    /// The `Origin` request header (CORS).
    pub origin: Option<&'a str>,
    /// The `Harbour-Notice` request header: the notice the visitor was shown,
    /// `{locale}.{version}` (see `validate::notice_shown`).
    pub notice: Option<&'a str>,
    pub now_ms: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Body<'a> {
    /// Not read: the method carries none, or the route does not need it.
    Unread,
    Bytes(&'a [u8]),
    /// Declared or found to exceed the cap; the shell stopped reading.
    TooLarge,
    /// The client stopped sending before the body was complete.
    Incomplete,
}

/// What a URL path names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Endpoint<'a> {
    /// `/api/campaigns/{id}/submissions`
    Submissions(&'a str),
    /// `/api/campaigns/{id}`: the form description.
    Form(&'a str),
}

impl Endpoint<'_> {
    pub fn parse(path: &str) -> Option<Endpoint<'_>> {
        let rest = path.strip_prefix("/api/campaigns/")?;
        match rest.split_once('/') {
            Some((id, "submissions")) if !id.is_empty() => Some(Endpoint::Submissions(id)),
            None if !rest.is_empty() => Some(Endpoint::Form(rest)),
            _ => None,
        }
    }
}

/// The path of a request URL, without query or fragment.
fn path_of(url: &str) -> &str {
    let after_scheme = url.find("://").map_or(url, |i| &url[i + 3..]);
    let path = after_scheme.find('/').map_or("/", |i| &after_scheme[i..]);
    let end = path.find(['?', '#']).unwrap_or(path.len());
    &path[..end]
}

/// `scheme://host[:port]` of a request URL.
fn origin_of(url: &str) -> &str {
    let Some(scheme_end) = url.find("://") else {
        return "";
    };
    let rest = &url[scheme_end + 3..];
    &url[..scheme_end + 3 + rest.find('/').unwrap_or(rest.len())]
}

/// A submission addressed to a known campaign by an allowed page.
#[derive(Clone, Debug)]
pub struct Routed<'c> {
    pub index: CampaignIndex,
    pub campaign: &'c Campaign,
    pub cors: Cors,
}

fn not_found(detail: &str) -> Answer {
    Answer::new(
        Phase::Route,
        problem(404, Outcome::NotFound, "Not found", detail, &[]),
    )
}

/// `salt` makes the challenge of a form description one of its own.
pub fn route<'c>(config: &'c Config, facts: &Facts, salt: u128) -> Flow<Routed<'c>> {
    let Some(endpoint) = Endpoint::parse(path_of(facts.url)) else {
        return Flow::Break(not_found("no such resource"));
    };
    let (Endpoint::Submissions(id) | Endpoint::Form(id)) = endpoint;
    // An unknown campaign is 404 whatever the method.
    let Some((index, campaign)) = config.policy.find_campaign(id) else {
        return Flow::Break(not_found("no such campaign"));
    };
    let (allowed, method_ok) = match endpoint {
        Endpoint::Form(_) => ("GET, HEAD", matches!(facts.method, "GET" | "HEAD")),
        Endpoint::Submissions(_) => ("POST, OPTIONS", matches!(facts.method, "POST" | "OPTIONS")),
    };
    if !method_ok {
        let reply = problem(
            405,
            Outcome::MethodNotAllowed,
            "Method not allowed",
            &format!("use {allowed}"),
            &[],
        )
        .with_header("allow", allowed);
        return Flow::Break(Answer::new(Phase::Route, reply));
    }
    if let Endpoint::Form(_) = endpoint {
        let locale = query_param(facts.url, "lang").unwrap_or(LOCALES[0]);
        let platform = PlatformCountry::read(facts.country);
        let description = form_description(config, campaign, locale, platform, facts.now_ms, salt);
        // Not shared by caches: each carries a challenge of its own.
        return Flow::Break(Answer::new(Phase::Route, Reply::json(200, description)));
    }
    let cors = match facts.origin {
        None => Cors(None),
        Some(origin) if origin == origin_of(facts.url) => Cors(None),
        Some(origin) if allowed_origin(config, campaign, origin) => Cors(Some(origin.to_owned())),
        Some(_) => {
            let reply = problem(
                403,
                Outcome::OriginNotAllowed,
                "Cross-origin submission refused",
                "this page is not allowed to submit to this campaign",
                &[],
            );
            return Flow::Break(Answer::new(Phase::Route, reply));
        }
    };
    if facts.method == "OPTIONS" {
        let reply = Reply {
            status: 204,
            headers: vec![
                ("access-control-allow-methods", "POST".into()),
                (
                    "access-control-allow-headers",
                    "content-type, idempotency-key, harbour-challenge, harbour-notice".into(),
                ),
                ("access-control-max-age", "600".into()),
            ],
            body: String::new(),
            outcome: None,
            delay_ms: 0,
        };
        return Flow::Break(Answer::new(Phase::Route, cors.apply(reply)));
    }
    Flow::Continue(Routed {
        index,
        campaign,
        cors,
    })
}

/// Whether a page at `origin` may send entries across origins: one of the campaign's allowed
/// origins, or one of harbour's own ingress hostnames.
fn allowed_origin(config: &Config, campaign: &Campaign, origin: &str) -> bool {
    campaign.allowed_origins.iter().any(|a| a == origin)
        || config.page_origins.iter().any(|a| a == origin)
        || config
            .regions
            .iter()
            .any(|r| r.ingress.as_ref().is_some_and(|site| site.base == origin))
}

/// The value of `name` in a URL's query, if it has one made of plain characters (a locale tag).
fn query_param<'u>(url: &'u str, name: &str) -> Option<&'u str> {
    let query = url.split_once('?')?.1;
    let query = query.split('#').next().unwrap_or_default();
    query
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value)
        .filter(|value| {
            value
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

/// What the campaign page needs to draw the form, straight from the policy, so the form and the
/// validator cannot disagree: the campaign's texts and field labels in `locale` (one of
/// [`LOCALES`], English for anything else or for what the policy does not translate), its notice
/// (with the version the entry sends back), where an entry is stored for each country the
/// visitor may choose and where it is sent (worked out by the residency rule itself, for this
/// visitor's `platform` country: `submit` for an entry that declares no country, each choice's
/// own `submit` otherwise; see `ingress`), and a challenge to solve.
pub fn form_description(
    config: &Config,
    campaign: &Campaign,
    locale: &str,
    platform: PlatformCountry,
    now_ms: u64,
    salt: u128,
) -> String {
    let locale = LOCALES
        .iter()
        .find(|l| l.eq_ignore_ascii_case(locale))
        .copied()
        .unwrap_or(LOCALES[0]);
    let texts = campaign.texts(locale);
    let label = |name: &str| {
        let labels = texts.map(|t| t.labels.as_slice()).unwrap_or_default();
        labels
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, l)| l.as_str())
    };
    let fields: Vec<String> = campaign
        .fields
        .iter()
        .map(|f| f.describe(label(&f.name).unwrap_or(&f.label)))
        .collect();
    let title = texts
        .and_then(|t| t.title.as_ref())
        .unwrap_or(&campaign.title);
    let intro = texts
        .and_then(|t| t.intro.as_ref())
        .or(campaign.intro.as_ref());
    let issued = challenge::issue(&config.form_key, campaign, now_ms, salt);
    let notice = &campaign.notice;
    let placed = place(&config.policy, platform, None).ok().map(|r| r.region);
    let notice = JsonObject::new()
        .str("controller", &notice.controller)
        .str("contact", &notice.contact)
        .str("purpose", notice.purpose(locale))
        .str("link", &notice.link)
        .u64("retention_days", u64::from(campaign.retention_days))
        .str("ends", &utc::format_ms(campaign.ends_ms))
        .str("version", campaign.notice_version(locale))
        .finish();
    let challenge = JsonObject::new()
        .str("token", &issued.token)
        .u64("difficulty_bits", u64::from(issued.difficulty_bits))
        .u64("expires_in_ms", issued.valid_ms)
        .finish();
    JsonObject::new()
        .str("id", &campaign.id)
        .str("lang", locale)
        .str("title", title)
        .opt_str("intro", intro.map(String::as_str))
        .raws("fields", fields.iter().map(String::as_str))
        .opt_str("honeypot", campaign.honeypot.as_deref())
        .str("submit", &submit_url(config, &campaign.id, placed))
        .raw("notice", &notice)
        .raw("storage", &storage(config, &campaign.id, locale, platform))
        .raw("challenge", &challenge)
        .finish()
}

/// Where an entry is stored for each country the visitor may declare: per region, its countries
/// and what declaring one does (`{"region", "name", "confirm", "submit"}`, or
/// `{"refused": code}`), and the region every country no region lists falls to.
fn storage(config: &Config, campaign: &str, locale: &str, platform: PlatformCountry) -> String {
    let policy = &config.policy;
    let name = |index: RegionIndex| {
        let region = policy.region(index);
        let translated = region.names.iter().find(|(l, _)| *l == locale);
        translated.map_or(region.name.as_str(), |(_, n)| n.as_str())
    };
    let choices: Vec<String> = choices(policy, platform)
        .into_iter()
        .filter_map(|(region, choice)| {
            let outcome = match choice? {
                Ok((stored, confirm)) => JsonObject::new()
                    .str("region", &policy.region(stored).id)
                    .str("name", name(stored))
                    .bool("confirm", confirm)
                    .str("submit", &submit_url(config, campaign, Some(stored)))
                    .finish(),
                Err(refusal) => JsonObject::new().str("refused", refusal.code()).finish(),
            };
            let countries = policy.region(region).countries.iter();
            Some(
                JsonObject::new()
                    .str("region", &policy.region(region).id)
                    .strs("countries", countries.map(|c| c.as_str_static()))
                    .raw("then", &outcome)
                    .finish(),
            )
        })
        .collect();
    JsonObject::new()
        .raws("choices", choices.iter().map(String::as_str))
        .str("rest_of_world", &policy.region(policy.rest_of_world).id)
        .finish()
}

pub fn request_check<'f>(policy: &Policy, facts: &Facts<'f>) -> Flow<Payload<'f>> {
    let refuse = |reply: Reply| Flow::Break(Answer::new(Phase::RequestCheck, reply));
    let encoding = match media_type(facts.content_type) {
        Some((essence, true)) if essence == "application/json" => Encoding::Json,
        Some((essence, true)) if essence == "application/x-www-form-urlencoded" => Encoding::Form,
        _ => {
            return refuse(
                problem(
                    415,
                    Outcome::UnsupportedMediaType,
                    "Unsupported content type",
                    "send application/json or application/x-www-form-urlencoded (UTF-8)",
                    &[],
                )
                .with_header(
                    "accept-post",
                    "application/json, application/x-www-form-urlencoded",
                ),
            )
        }
    };
    let bytes = match facts.body {
        Body::Bytes(bytes) if bytes.len() <= policy.max_body_bytes as usize => bytes,
        Body::Bytes(_) | Body::TooLarge => {
            return refuse(problem(
                413,
                Outcome::BodyTooLarge,
                "Submission too large",
                &format!("a submission is at most {} bytes", policy.max_body_bytes),
                &[],
            ))
        }
        Body::Unread => b"",
        Body::Incomplete => {
            return refuse(problem(
                400,
                Outcome::BodyIncomplete,
                "Incomplete submission",
                "the body ended early; please send it again",
                &[],
            ))
        }
    };
    Flow::Continue(Payload { encoding, bytes })
}

/// The media type in lower case and whether its charset, if any, is UTF-8.
fn media_type(content_type: Option<&str>) -> Option<(String, bool)> {
    let mut parts = content_type?.split(';');
    let essence = parts.next()?.trim().to_ascii_lowercase();
    let charset_ok = parts.all(|param| match param.split_once('=') {
        Some((name, value)) if name.trim().eq_ignore_ascii_case("charset") => {
            value.trim().trim_matches('"').eq_ignore_ascii_case("utf-8")
        }
        _ => true,
    });
    Some((essence, charset_ok))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tests::local_config;
    use serde_json::Value;

    /// The form description as the page reads it.
    fn described(
        config: &Config,
        campaign: &Campaign,
        locale: &str,
        platform: PlatformCountry,
        now_ms: u64,
        salt: u128,
    ) -> Value {
        let text = form_description(config, campaign, locale, platform, now_ms, salt);
        serde_json::from_str(&text).unwrap()
    }

    const URL: &str = "https://campaign.example/api/campaigns/spring-launch/submissions";

    fn facts<'a>(method: &'a str, url: &'a str) -> Facts<'a> {
        Facts {
            method,
            url,
            content_type: Some("application/json"),
            body: Body::Bytes(b"{}"),
            country: Some("IT"),
            client_ip: Some("192.0.2.1"),
            idempotency_key: None,
            challenge: None,
            origin: None,
            notice: Some(crate::phase::validate::shipped_notice()),
            now_ms: 1_764_000_000_000,
        }
    }

    fn answer<T: std::fmt::Debug>(flow: Flow<T>) -> (Phase, u16, &'static str) {
        match flow {
            Flow::Break(a) => (a.phase, a.reply.status, a.outcome.name()),
            Flow::Continue(value) => panic!("went on with {value:?}"),
        }
    }

    #[test]
    fn paths_and_origins() {
        assert_eq!(path_of("https://a.example/api/x?y=1#z"), "/api/x");
        assert_eq!(path_of("https://a.example"), "/");
        assert_eq!(
            origin_of("http://127.0.0.1:8787/api/x"),
            "http://127.0.0.1:8787"
        );
        assert_eq!(
            Endpoint::parse("/api/campaigns/abc/submissions"),
            Some(Endpoint::Submissions("abc"))
        );
        assert_eq!(
            Endpoint::parse("/api/campaigns/abc"),
            Some(Endpoint::Form("abc"))
        );
        assert_eq!(Endpoint::parse("/api/campaigns//submissions"), None);
        assert_eq!(Endpoint::parse("/api/campaigns/abc/other"), None);
    }

    #[test]
    fn route_answers_what_is_not_a_submission() {
        let config = local_config();
        let form = "https://campaign.example/api/campaigns/spring-launch";
        let table = [
            (
                facts("POST", "https://campaign.example/nope"),
                404,
                "not_found",
            ),
            (
                facts(
                    "POST",
                    "https://campaign.example/api/campaigns/x/submissions",
                ),
                404,
                "not_found",
            ),
            (
                facts("DELETE", "https://campaign.example/api/campaigns/x"),
                404,
                "not_found",
            ),
            (facts("GET", URL), 405, "method_not_allowed"),
            (facts("POST", form), 405, "method_not_allowed"),
            (facts("GET", form), 200, "ok"),
            (
                Facts {
                    origin: Some("https://evil.example"),
                    ..facts("POST", URL)
                },
                403,
                "origin_not_allowed",
            ),
            (
                Facts {
                    origin: Some("http://localhost:8787"),
                    ..facts("OPTIONS", URL)
                },
                204,
                "ok",
            ),
        ];
        for (f, status, outcome) in table {
            assert_eq!(
                answer(route(&config, &f, 0)),
                (Phase::Route, status, outcome),
                "{} {}",
                f.method,
                f.url
            );
        }
    }

    #[test]
    fn route_passes_submissions_with_their_cors_decision() {
        let config = local_config();
        let same = Facts {
            origin: Some("https://campaign.example"),
            ..facts("POST", URL)
        };
        let Flow::Continue(routed) = route(&config, &same, 0) else {
            panic!("same origin refused")
        };
        assert_eq!(routed.campaign.id, "spring-launch");
        assert_eq!(routed.cors, Cors(None));
        let allowed = Facts {
            origin: Some("http://localhost:8787"),
            ..facts("POST", URL)
        };
        let Flow::Continue(routed) = route(&config, &allowed, 0) else {
            panic!("allowed origin refused")
        };
        assert_eq!(routed.cors, Cors(Some("http://localhost:8787".into())));
    }

    #[test]
    fn the_form_description_draws_every_field_and_carries_a_challenge() {
        let config = local_config();
        let campaign = config.policy.campaign("spring-launch").unwrap();
        let description = described(
            &config,
            campaign,
            "en",
            PlatformCountry::read(Some("IT")),
            5,
            9,
        );
        let names: Vec<_> = description["fields"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["name", "email", "country", "consent", "marketing"]);
        let token = description["challenge"]["token"].as_str().unwrap();
        assert!(token.starts_with(&format!(
            "spring-launch.{}.",
            5 + campaign.challenge.valid_ms
        )));
        assert_eq!(
            description["challenge"]["difficulty_bits"],
            campaign.challenge.difficulty_bits
        );
        assert_eq!(
            description["challenge"]["expires_in_ms"],
            campaign.challenge.valid_ms
        );
        // Each description has a challenge of its own.
        let other = described(
            &config,
            campaign,
            "en",
            PlatformCountry::read(Some("IT")),
            5,
            10,
        );
        assert_ne!(
            other["challenge"]["token"],
            description["challenge"]["token"]
        );
    }

    #[test]
    fn the_form_description_speaks_the_asked_locale_with_english_for_the_rest() {
        let config = local_config();
        let campaign = config.policy.campaign("spring-launch").unwrap();
        let url = |q: &str| format!("https://c.example/api/campaigns/spring-launch{q}");
        assert_eq!(query_param(&url("?lang=de"), "lang"), Some("de"));
        assert_eq!(
            query_param(&url("?x=1&lang=zh-CN#top"), "lang"),
            Some("zh-CN")
        );
        assert_eq!(query_param(&url("?lang=%3Cb%3E"), "lang"), None);
        assert_eq!(query_param(&url(""), "lang"), None);
        let english = described(
            &config,
            campaign,
            "en",
            PlatformCountry::read(Some("IT")),
            5,
            9,
        );
        assert_eq!(english["lang"], "en");
        assert_eq!(english["title"], campaign.title.as_str());
        for locale in &LOCALES[1..] {
            let described = described(
                &config,
                campaign,
                locale,
                PlatformCountry::read(Some("IT")),
                5,
                9,
            );
            assert_eq!(described["lang"], *locale);
            let texts = campaign
                .texts(locale)
                .expect("the shipped policy translates every locale");
            assert_eq!(described["title"], texts.title.as_deref().unwrap());
            for field in described["fields"].as_array().unwrap() {
                let name = field["name"].as_str().unwrap();
                let translated = texts
                    .labels
                    .iter()
                    .find(|(n, _)| n == name)
                    .map(|(_, l)| l.as_str());
                let english = campaign.field(name).unwrap().label.as_str();
                assert_eq!(
                    field["label"],
                    translated.unwrap_or(english),
                    "{locale} {name}"
                );
            }
        }
        // Case-insensitive; an unknown locale is English; a missing label falls back.
        assert_eq!(
            described(
                &config,
                campaign,
                "ZH-cn",
                PlatformCountry::read(Some("IT")),
                5,
                9
            )["lang"],
            "zh-CN"
        );
        assert_eq!(
            described(
                &config,
                campaign,
                "pt",
                PlatformCountry::read(Some("IT")),
                5,
                9
            )["lang"],
            "en"
        );
        let mut partial = campaign.clone();
        partial.texts = vec![(
            "de",
            harbour_policy::CampaignTexts {
                title: None,
                intro: None,
                labels: vec![("email".into(), "E-Mail".into())],
            },
        )];
        let german = described(
            &config,
            &partial,
            "de",
            PlatformCountry::read(Some("IT")),
            5,
            9,
        );
        assert_eq!(german["title"], campaign.title.as_str());
        assert_eq!(german["fields"][1]["label"], "E-Mail");
        assert_eq!(
            german["fields"][0]["label"],
            campaign.fields[0].label.as_str()
        );
    }

    fn ingress_config() -> Config {
        let mut config = Config::local(&crate::config::tests::ingress_policy(), 9100).unwrap();
        config.policy.campaigns[0].challenge.difficulty_bits = 4;
        config
    }

    #[test]
    fn the_form_description_says_where_each_choice_is_sent() {
        let config = ingress_config();
        let campaign = config.policy.campaign("spring-launch").unwrap();
        let described_for = |platform: &str| {
            let platform = PlatformCountry::read(Some(platform));
            described(&config, campaign, "en", platform, 5, 9)
        };
        let (cn, eu, own) = (
            "https://cn.campaign.example/api/campaigns/spring-launch/submissions",
            "https://eu.campaign.example/api/campaigns/spring-launch/submissions",
            "/api/campaigns/spring-launch/submissions",
        );
        // An entry without a declared country goes where the platform's country places it.
        for (platform, submit) in [
            ("CN", cn),
            ("IT", eu),
            ("US", own),
            ("RU", own),
            ("T1", own),
        ] {
            assert_eq!(described_for(platform)["submit"], submit, "{platform}");
        }
        // Each choice names where an entry declaring it is sent: the region it is stored in.
        let choice = |description: &Value, region: &str| {
            let choices = description["storage"]["choices"].as_array().unwrap();
            let found = choices.iter().find(|c| c["region"] == region).unwrap();
            found["then"].clone()
        };
        let from_us = described_for("US");
        assert_eq!(choice(&from_us, "cn")["submit"], cn);
        assert_eq!(choice(&from_us, "eu")["submit"], eu);
        assert_eq!(
            choice(&from_us, "au")["submit"],
            "/api/campaigns/spring-launch/submissions"
        );
        // From China, declaring the US keeps the entry in China: sent to China's ingress.
        let from_cn = described_for("CN");
        assert_eq!(choice(&from_cn, "global")["region"], "cn");
        assert_eq!(choice(&from_cn, "global")["submit"], cn);
        assert_eq!(choice(&from_cn, "eu")["refused"], "residency_conflict");
        assert_eq!(choice(&from_cn, "eu").get("submit"), None);
        // Without an ingress, every entry is sent to the page's own host, as before.
        let plain = local_config();
        let campaign = plain.policy.campaign("spring-launch").unwrap();
        let description = described(
            &plain,
            campaign,
            "en",
            PlatformCountry::read(Some("CN")),
            5,
            9,
        );
        assert_eq!(description["submit"], own);
        assert_eq!(choice(&description, "cn")["submit"], own);
    }

    #[test]
    fn an_ingress_takes_pages_from_the_campaigns_origins_and_harbours_own_hostnames() {
        let config = ingress_config();
        let at_cn = "https://cn.campaign.example/api/campaigns/spring-launch/submissions";
        for (origin, allowed) in [
            (Some("https://cn.campaign.example"), Some(None)),
            (None, Some(None)),
            (
                Some("https://eu.campaign.example"),
                Some(Some("https://eu.campaign.example")),
            ),
            (
                Some("http://localhost:8787"),
                Some(Some("http://localhost:8787")),
            ),
            (Some("https://evil.example"), None),
            (Some("http://eu.campaign.example"), None),
        ] {
            let f = Facts {
                origin,
                ..facts("POST", at_cn)
            };
            match (route(&config, &f, 0), allowed) {
                (Flow::Continue(routed), Some(cors)) => {
                    assert_eq!(routed.cors, Cors(cors.map(String::from)), "{origin:?}")
                }
                (Flow::Break(answer), None) => {
                    assert_eq!(answer.outcome, Outcome::OriginNotAllowed, "{origin:?}")
                }
                (_, allowed) => panic!("{origin:?}: expected {allowed:?}"),
            }
        }
        // Without an ingress, another region's hostname is just another origin.
        let f = Facts {
            origin: Some("https://eu.campaign.example"),
            ..facts("POST", URL)
        };
        assert!(matches!(route(&local_config(), &f, 0), Flow::Break(_)));
    }

    #[test]
    fn request_check_table() {
        let policy = local_config().policy;
        let big = [b' '; 9000];
        let table: Vec<(Option<&str>, Body, u16, &str)> = vec![
            (
                Some("text/plain"),
                Body::Bytes(b"{}"),
                415,
                "unsupported_media_type",
            ),
            (None, Body::Bytes(b"{}"), 415, "unsupported_media_type"),
            (
                Some("application/json; charset=utf-16"),
                Body::Bytes(b"{}"),
                415,
                "unsupported_media_type",
            ),
            (
                Some("application/json"),
                Body::TooLarge,
                413,
                "body_too_large",
            ),
            (
                Some("application/json"),
                Body::Bytes(&big),
                413,
                "body_too_large",
            ),
            (
                Some("application/json"),
                Body::Incomplete,
                400,
                "body_incomplete",
            ),
        ];
        for (content_type, body, status, outcome) in table {
            let f = Facts {
                content_type,
                body,
                ..facts("POST", URL)
            };
            assert_eq!(
                answer(request_check(&policy, &f)),
                (Phase::RequestCheck, status, outcome),
                "{content_type:?}"
            );
        }
        let form = Facts {
            content_type: Some("Application/X-WWW-Form-Urlencoded; charset=\"UTF-8\""),
            ..facts("POST", URL)
        };
        assert_eq!(
            request_check(&policy, &form),
            Flow::Continue(Payload {
                encoding: Encoding::Form,
                bytes: b"{}"
            })
        );
    }

    #[test]
    fn media_types() {
        assert_eq!(
            media_type(Some("Application/JSON; charset=UTF-8")),
            Some(("application/json".into(), true))
        );
        assert_eq!(
            media_type(Some("application/json;charset=latin1")),
            Some(("application/json".into(), false))
        );
        assert_eq!(media_type(None), None);
    }
}
