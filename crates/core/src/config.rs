//! Configuration: the policy plus what differs per environment (origin URLs, signing keys).
//!
//! Per region `R` (id upper-cased, `-` as `_`) the environment provides:
//! - `HARBOUR_ORIGINS_R`: one or more origin base URLs, primary first, separated by spaces or
//!   commas (a `wrangler.toml` var);
//! - `HARBOUR_KEY_R`: the region's signing secret, at least 32 bytes (`wrangler secret put`, or
//!   `.dev.vars` locally).
//!
//! And once: `HARBOUR_FORM_KEY`, the secret that vouches for the challenges the form description
//! hands out (see `challenge`), at least 32 bytes and never a region's signing secret (a
//! challenge MAC must never be something an origin would take for a signature, nor the reverse).
//!
//! And optionally `HARBOUR_LOG`: `summary` (the default) or `decisions` (see `journal`), and
//! `HARBOUR_PAGE_ORIGINS`: pages of this environment, beside each campaign's `allowed_origins`,
//! that may submit across origins (space- or comma-separated `scheme://host[:port]`; plain http
//! only on loopback), e.g. a developer's page on `http://localhost:8787`.
//!
//! A region whose policy names an ingress (`harbour_policy::ingress`) is served on
//! `https://{its host}`. `HARBOUR_INGRESS_R` moves that to an address on this machine, for a local
//! stack and tests (`http://cn.localhost:8787`: browsers and curl take every `*.localhost` name
//! for this machine): anything else is refused, so no variable can move a deployed ingress
//! somewhere the policy (and the residency report made from it) does not say, and a variable for
//! a region whose policy names no ingress is refused too.
//!
//! Assembly reports every missing or malformed entry at once. In an isolate a failed assembly
//! answers every request with 500 `config_invalid` and forwards nothing.
//!
//! Beyond the form of each entry, assembly refuses what would weaken residency or the signature:
//! plain `http://` to anything but a loopback address (the submission and its signature would
//! cross the network in clear), one origin host (`host:port`) in two regions (one server would
//! hold two regions' data), one signing secret in two regions (an origin would accept another
//! region's signatures), and, once any origin is off this machine, the secrets `local_env` hands
//! out (they are in harbour's own source, so anyone can sign with them).

use harbour_contract::env::{ingress_var, key_var, origins_var, FORM_KEY_VAR};
use harbour_contract::http::SUBMISSIONS_PATH;
use harbour_contract::signature::{SigningKey, MIN_KEY_BYTES};
use harbour_policy::text::quoted;
use harbour_policy::{Issue, Policy, PolicyError, Region, RegionIndex};

/// How much the edge logs (`HARBOUR_LOG`); see `journal`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LogMode {
    /// Visitor outcomes counted, operator matters one line each.
    #[default]
    Summary,
    /// One line per decision.
    Decisions,
}

impl LogMode {
    pub const VARIABLE: &'static str = "HARBOUR_LOG";

    /// Unset or empty is the default; anything else must be one of the two names.
    pub fn parse(value: Option<&str>) -> Option<LogMode> {
        match value.map(str::trim) {
            None | Some("") | Some("summary") => Some(LogMode::Summary),
            Some("decisions") => Some(LogMode::Decisions),
            Some(_) => None,
        }
    }
}

/// An origin of one region. Only `Config` builds these, from that region's own variable.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Origin {
    pub region: RegionIndex,
    /// Full URL of the submissions endpoint.
    pub url: String,
    /// The path part of `url`, which the signature covers.
    pub path: String,
}

#[derive(Clone, Debug)]
pub struct RegionSetup {
    pub origins: Vec<Origin>,
    pub key: SigningKey,
    /// Where the region's ingress answers, if its policy names one.
    pub ingress: Option<Site>,
}

/// Where a region's ingress answers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Site {
    /// `scheme://host[:port]`: what the URLs it serves start with.
    pub base: String,
    /// Its host, lower case, without the port: what a request's host is compared with.
    pub host: String,
}

impl Site {
    /// The policy's hostname, as deployed.
    fn deployed(host: &str) -> Site {
        Site {
            base: format!("https://{host}"),
            host: host.to_owned(),
        }
    }

    /// `http(s)://host[:port]` on this machine (`localhost`, a name under it, 127.0.0.0/8 or
    /// `[::1]`), for a local stack; `None` for anything else.
    fn simulated(value: &str) -> Option<Site> {
        let value = value.trim().trim_end_matches('/');
        let authority = value
            .strip_prefix("http://")
            .or_else(|| value.strip_prefix("https://"))?;
        if authority.is_empty()
            || !authority
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b))
        {
            return None;
        }
        let host_port = origin_host(value)?;
        let host = host_port[..host_port.rfind(':')?].to_owned();
        let local = host.ends_with(".localhost") || is_loopback(&host_port);
        local.then(|| Site {
            base: value.to_ascii_lowercase(),
            host,
        })
    }
}

#[derive(Clone, Debug)]
pub struct Config {
    pub policy: Policy,
    /// Indexed like `policy.regions`.
    pub regions: Vec<RegionSetup>,
    /// Keys the challenges' MACs (`HARBOUR_FORM_KEY`).
    pub form_key: SigningKey,
    pub log: LogMode,
    /// This environment's pages allowed to submit to every campaign (`HARBOUR_PAGE_ORIGINS`).
    pub page_origins: Vec<String>,
}

/// The variable naming this environment's own campaign pages.
pub const PAGE_ORIGINS_VAR: &str = "HARBOUR_PAGE_ORIGINS";

/// `HARBOUR_PAGE_ORIGINS`, checked: web origins, plain http only on loopback.
fn page_origins(env: &dyn Fn(&str) -> Option<String>, issues: &mut Vec<Issue>) -> Vec<String> {
    let mut origins = Vec::new();
    for origin in env(PAGE_ORIGINS_VAR)
        .unwrap_or_default()
        .split([' ', ','])
        .filter(|s| !s.is_empty())
    {
        let problem = match harbour_policy::web_origin(origin) {
            None => Some("is not a scheme://host[:port] origin without a path"),
            Some(("http", _)) if !origin_host(origin).is_some_and(|h| is_loopback(&h)) => Some(
                "uses http://, allowed only for a page on this machine (loopback); use https://",
            ),
            Some(_) => None,
        };
        match problem {
            Some(problem) => issues.push(Issue {
                path: PAGE_ORIGINS_VAR.into(),
                message: format!("{} {problem}", quoted(origin)),
            }),
            None => origins.push(origin.to_owned()),
        }
    }
    origins
}

/// Splits `scheme://host[:port][/base]` into the endpoint URL and its path.
fn endpoint(base: &str) -> Option<(String, String)> {
    let rest = base
        .strip_prefix("https://")
        .or_else(|| base.strip_prefix("http://"))?;
    let (host, base_path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let host_ok = !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b));
    let path_ok =
        !base_path.contains(['?', '#']) && base_path.bytes().all(|b| b.is_ascii_graphic());
    if !host_ok || !path_ok {
        return None;
    }
    let path = format!("{}{SUBMISSIONS_PATH}", base_path.trim_end_matches('/'));
    let scheme_len = base.len() - rest.len();
    Some((format!("{}{host}{path}", &base[..scheme_len]), path))
}

/// `host:port` of a base URL, lower case, with the scheme's default port made explicit, so that
/// `https://A.example` and `https://a.example:443` are one origin host. Meaningful only for a URL
/// `endpoint` accepts; `None` for another scheme.
fn origin_host(base: &str) -> Option<String> {
    let (rest, default_port) = match base.strip_prefix("https://") {
        Some(rest) => (rest, "443"),
        None => (base.strip_prefix("http://")?, "80"),
    };
    let authority = rest[..rest.find('/').unwrap_or(rest.len())].to_ascii_lowercase();
    // A port follows the last `:`, unless that `:` is inside an IPv6 literal's brackets.
    let (host, port) = match authority.rfind(':') {
        Some(colon) if !authority[colon..].contains(']') => {
            (&authority[..colon], &authority[colon + 1..])
        }
        _ => (authority.as_str(), default_port),
    };
    // `a.example.` is the fully qualified spelling of `a.example`: one host.
    Some(format!("{}:{port}", host.trim_end_matches('.')))
}

/// How the secrets of `Config::local_env` end. They are published with harbour's source: fine for a
/// stack on loopback, refused anywhere else.
const PUBLISHED_SECRET_SUFFIX: &str = "-secret-0123456789abcdefghijklmnop";

fn published_secret(name: &str) -> String {
    format!("{name}{PUBLISHED_SECRET_SUFFIX}")
}

/// Whether `host_port` (from `origin_host`) names this machine: `localhost`, 127.0.0.0/8 or `::1`.
fn is_loopback(host_port: &str) -> bool {
    let host = match host_port.rfind(':') {
        Some(colon) => &host_port[..colon],
        None => host_port,
    };
    if host == "localhost" {
        return true;
    }
    if let Some(v6) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        return v6
            .parse::<std::net::Ipv6Addr>()
            .is_ok_and(|ip| ip.is_loopback());
    }
    host.parse::<std::net::Ipv4Addr>()
        .is_ok_and(|ip| ip.is_loopback())
}

/// What is wrong with an origin whose host is `host` (from `origin_host`) in `var`, given the hosts
/// earlier entries took: plain http off this machine, or a host another region already uses.
fn host_issue(
    base: &str,
    host: &str,
    var: &str,
    hosts_seen: &[(String, String)],
) -> Option<String> {
    if base.starts_with("http://") && !is_loopback(host) {
        return Some(format!(
            "{} uses http://, allowed only for loopback addresses (127.0.0.0/8, ::1, localhost); use https://",
            quoted(base)
        ));
    }
    let (_, other) = hosts_seen
        .iter()
        .find(|(seen, other)| seen == host && other != var)?;
    Some(format!(
        "origin host {host} is also in {other}; each region needs origins of its own"
    ))
}

/// `HARBOUR_FORM_KEY`, checked: long enough and no region's signing secret (`secrets_seen`).
fn form_key(
    env: &dyn Fn(&str) -> Option<String>,
    secrets_seen: &[(String, String)],
    issues: &mut Vec<Issue>,
) -> Option<SigningKey> {
    let secret = env(FORM_KEY_VAR).unwrap_or_default();
    let mut fail = |message: String| {
        issues.push(Issue {
            path: FORM_KEY_VAR.into(),
            message,
        })
    };
    let Some(key) = SigningKey::new(secret.as_bytes()) else {
        fail(format!(
            "the form key needs a secret of at least {MIN_KEY_BYTES} bytes"
        ));
        return None;
    };
    if let Some((_, region_var)) = secrets_seen.iter().find(|(seen, _)| *seen == secret) {
        // Names the other variable, never the secret.
        fail(format!(
            "the form key is the same secret as {region_var}; it must be a secret of its own"
        ));
        return None;
    }
    Some(key)
}

/// Where `region`'s ingress answers (see the module's rules): the policy's hostname, or the
/// address `HARBOUR_INGRESS_R` simulates it on; `sites_seen` holds the simulated hosts earlier
/// regions took, with their variable.
fn ingress_site(
    index: RegionIndex,
    region: &Region,
    env: &dyn Fn(&str) -> Option<String>,
    sites_seen: &mut Vec<(String, String)>,
    issues: &mut Vec<Issue>,
) -> Option<Site> {
    let name = ingress_var(&region.id);
    let value = env(&name).filter(|v| !v.trim().is_empty());
    let entry = format!("regions[{}].ingress", index.get());
    let mut fail = |message: String| {
        issues.push(Issue {
            path: name.clone(),
            message,
        })
    };
    let (policy, value) = match (&region.ingress, value) {
        (None, None) => return None,
        (Some(policy), None) => return Some(Site::deployed(&policy.host)),
        (None, Some(_)) => {
            fail(format!("the policy names no ingress for region {} ({entry}); this variable only moves one to this machine: remove it", quoted(&region.id)));
            return None;
        }
        (Some(policy), Some(value)) => (policy, value),
    };
    let Some(site) = Site::simulated(&value) else {
        fail(format!("{} is not an address on this machine (http://{}.localhost:8787); this variable only simulates {entry}.host ({}) locally, and a deployment serves the policy's hostname", quoted(&value), region.id, policy.host));
        return None;
    };
    if let Some((_, other)) = sites_seen.iter().find(|(host, _)| *host == site.host) {
        fail(format!(
            "{} is also {other}'s host; each region's ingress needs a host of its own",
            site.host
        ));
        return None;
    }
    sites_seen.push((site.host.clone(), name.clone()));
    Some(site)
}

/// The secrets that are `local_env`'s published ones, each an issue: the configuration has an
/// origin off this machine, which must not trust a key anyone can read.
fn published_secrets(
    policy: &Policy,
    env: &dyn Fn(&str) -> Option<String>,
    issues: &mut Vec<Issue>,
) {
    let names = policy.regions.iter().map(|r| key_var(&r.id));
    for name in names.chain([FORM_KEY_VAR.to_owned()]) {
        if env(&name).is_some_and(|secret| secret.ends_with(PUBLISHED_SECRET_SUFFIX)) {
            issues.push(Issue {
                message: "this is a test secret published with harbour's source, accepted only while every origin is on this machine; set a secret of its own (openssl rand -hex 32)".into(),
                path: name,
            });
        }
    }
}

/// Every problem found assembling a configuration: the policy's, and the environment's, each
/// naming its entry or variable.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError(pub Vec<Issue>);

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        PolicyError(self.0.clone()).fmt(f)
    }
}

impl std::error::Error for ConfigError {}

impl From<PolicyError> for ConfigError {
    fn from(error: PolicyError) -> ConfigError {
        ConfigError(error.0)
    }
}

impl Config {
    pub fn assemble(
        policy_json: &str,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        Config::for_policy(Policy::parse(policy_json)?, env)
    }

    /// `assemble` for a policy already parsed and checked (the worker's compiled-in one).
    pub fn for_policy(
        policy: Policy,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let mut issues = Vec::new();
        let mut regions = Vec::new();
        // Origin hosts and secrets already taken, with the variable that took them.
        let mut hosts_seen: Vec<(String, String)> = Vec::new();
        let mut secrets_seen: Vec<(String, String)> = Vec::new();
        let mut sites_seen: Vec<(String, String)> = Vec::new();
        for (index, region) in policy.region_indices().zip(&policy.regions) {
            let ingress = ingress_site(index, region, env, &mut sites_seen, &mut issues);
            let origins_name = origins_var(&region.id);
            let mut origins = Vec::new();
            for base in env(&origins_name)
                .unwrap_or_default()
                .split([' ', ','])
                .filter(|s| !s.is_empty())
            {
                match endpoint(base).zip(origin_host(base)) {
                    Some(((url, path), host)) => {
                        if let Some(message) = host_issue(base, &host, &origins_name, &hosts_seen) {
                            issues.push(Issue {
                                path: origins_name.clone(),
                                message,
                            });
                        }
                        origins.push(Origin {
                            region: index,
                            url,
                            path,
                        });
                        if !hosts_seen.iter().any(|(seen, _)| *seen == host) {
                            hosts_seen.push((host, origins_name.clone()));
                        }
                    }
                    None => issues.push(Issue {
                        path: origins_name.clone(),
                        message: format!("{} is not an http(s) base URL", quoted(base)),
                    }),
                }
            }
            // The signature covers the path, and every attempt sends the same signed request.
            if origins.iter().any(|o| o.path != origins[0].path) {
                issues.push(Issue {
                    path: origins_name.clone(),
                    message: format!(
                        "the origins of region {} must share one base path (the signature covers it)",
                        quoted(&region.id)
                    ),
                });
            }
            if origins.is_empty() {
                issues.push(Issue {
                    path: origins_name,
                    message: format!("region {} has no origin", quoted(&region.id)),
                });
            }
            let key_name = key_var(&region.id);
            let secret = env(&key_name);
            let key = secret
                .as_deref()
                .and_then(|secret| SigningKey::new(secret.as_bytes()));
            if let (Some(secret), Some(_)) = (secret, &key) {
                match secrets_seen.iter().find(|(seen, _)| *seen == secret) {
                    // Names the other variable, never the secret.
                    Some((_, other)) => issues.push(Issue {
                        message: format!("region {} has the same signing secret as {other}; each region needs its own, or one region's origin accepts another's signatures", quoted(&region.id)),
                        path: key_name.clone(),
                    }),
                    None => secrets_seen.push((secret, key_name.clone())),
                }
            }
            if key.is_none() {
                issues.push(Issue {
                    path: key_name,
                    message: format!(
                        "region {} needs a signing secret of at least {MIN_KEY_BYTES} bytes",
                        quoted(&region.id)
                    ),
                });
            }
            if let Some(key) = key {
                regions.push(RegionSetup {
                    origins,
                    key,
                    ingress,
                });
            }
        }
        let form_key = form_key(env, &secrets_seen, &mut issues);
        let page_origins = page_origins(env, &mut issues);
        if !hosts_seen.iter().all(|(host, _)| is_loopback(host)) {
            published_secrets(&policy, env, &mut issues);
        }
        let log_value = env(LogMode::VARIABLE);
        let log = LogMode::parse(log_value.as_deref()).unwrap_or_else(|| {
            issues.push(Issue {
                path: LogMode::VARIABLE.into(),
                message: format!(
                    "{} is not a log mode (summary or decisions)",
                    quoted(&log_value.unwrap_or_default())
                ),
            });
            LogMode::default()
        });
        match form_key {
            Some(form_key) if issues.is_empty() => Ok(Config {
                policy,
                regions,
                form_key,
                log,
                page_origins,
            }),
            _ => Err(ConfigError(issues)),
        }
    }

    /// The environment of a local stack: every region of `policy_json` on two origins at
    /// 127.0.0.1 (`base_port + i` primary, `base_port + 100 + i` secondary) with fixed keys, and
    /// the page of `wrangler dev` (port 8787) allowed to submit.
    /// For tests, benches and tools; a deployment reads its own environment.
    pub fn local_env(
        policy_json: &str,
        base_port: u16,
    ) -> Result<Vec<(String, String)>, PolicyError> {
        let policy = Policy::parse(policy_json)?;
        let mut env = Vec::new();
        for (i, region) in policy.regions.iter().enumerate() {
            let (primary, secondary) =
                (usize::from(base_port) + i, usize::from(base_port) + 100 + i);
            env.push((
                origins_var(&region.id),
                format!("http://127.0.0.1:{primary} http://127.0.0.1:{secondary}"),
            ));
            env.push((key_var(&region.id), published_secret(&region.id)));
        }
        env.push((FORM_KEY_VAR.to_owned(), published_secret("form")));
        // The page `wrangler dev` serves, by either name.
        env.push((
            PAGE_ORIGINS_VAR.to_owned(),
            "http://localhost:8787 http://127.0.0.1:8787".to_owned(),
        ));
        Ok(env)
    }

    /// `assemble` over `local_env`.
    pub fn local(policy_json: &str, base_port: u16) -> Result<Config, ConfigError> {
        let env = Config::local_env(policy_json, base_port)?;
        Config::assemble(policy_json, &|name| {
            env.iter().find(|(n, _)| n == name).map(|(_, v)| v.clone())
        })
    }

    /// Where `region`'s ingress answers, if it has one.
    pub fn ingress(&self, region: RegionIndex) -> Option<&Site> {
        self.regions.get(region.get())?.ingress.as_ref()
    }

    pub fn origins(&self, region: RegionIndex) -> &[Origin] {
        self.regions
            .get(region.get())
            .map(|r| r.origins.as_slice())
            .unwrap_or(&[])
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use harbour_policy::SHIPPED_POLICY;
    use std::collections::HashMap;

    pub fn local_env() -> HashMap<String, String> {
        Config::local_env(SHIPPED_POLICY, 9100)
            .unwrap()
            .into_iter()
            .collect()
    }

    /// The local configuration, with challenges of 4 bits: tests solve many of them (the shipped
    /// difficulty is checked by the policy's own tests).
    pub fn local_config() -> Config {
        let mut config = Config::local(SHIPPED_POLICY, 9100).unwrap();
        for campaign in &mut config.policy.campaigns {
            campaign.challenge.difficulty_bits = 4;
        }
        config
    }

    #[test]
    fn modes_parse_and_refuse_anything_else() {
        assert_eq!(LogMode::parse(None), Some(LogMode::Summary));
        assert_eq!(LogMode::parse(Some(" ")), Some(LogMode::Summary));
        assert_eq!(LogMode::parse(Some("decisions")), Some(LogMode::Decisions));
        assert_eq!(LogMode::parse(Some("all")), None);
    }

    #[test]
    fn assembles_with_every_region_set() {
        let config = local_config();
        let eu = config.policy.region_index("eu").unwrap();
        let urls: Vec<_> = config.origins(eu).iter().map(|o| o.url.as_str()).collect();
        assert_eq!(
            urls,
            [
                "http://127.0.0.1:9102/v1/submissions",
                "http://127.0.0.1:9202/v1/submissions"
            ]
        );
    }

    #[test]
    fn names_every_missing_or_bad_entry() {
        let mut env = deployed_env();
        env.remove("HARBOUR_ORIGINS_RU");
        env.insert("HARBOUR_KEY_CN".into(), "short".into());
        env.insert("HARBOUR_ORIGINS_AU".into(), "ftp://x".into());
        env.insert("HARBOUR_LOG".into(), "verbose".into());
        env.insert(
            "HARBOUR_ORIGINS_EU".into(),
            "https://eu1.example/a https://eu2.example/b".into(),
        );
        let error = Config::assemble(SHIPPED_POLICY, &|name| env.get(name).cloned()).unwrap_err();
        let paths: Vec<_> = error.0.iter().map(|i| i.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "HARBOUR_KEY_CN",
                "HARBOUR_ORIGINS_RU",
                "HARBOUR_ORIGINS_EU",
                "HARBOUR_ORIGINS_AU",
                "HARBOUR_ORIGINS_AU",
                "HARBOUR_LOG"
            ]
        );
        env.insert("HARBOUR_LOG".into(), "decisions".into());
        assert!(error.to_string().contains("\"verbose\" is not a log mode"));
    }

    /// `local_env` with secrets of its own in place of the published ones, as a deployment has.
    fn deployed_env() -> HashMap<String, String> {
        let mut env = local_env();
        for (name, value) in env.iter_mut() {
            if name.starts_with("HARBOUR_KEY_") || name == FORM_KEY_VAR {
                *value = format!("{name}-own-0123456789abcdefghijklmnopqrstuv");
            }
        }
        env
    }

    fn issues_with(changes: &[(&str, &str)]) -> Vec<String> {
        let mut env = deployed_env();
        for (name, value) in changes {
            env.insert((*name).into(), (*value).into());
        }
        match Config::assemble(SHIPPED_POLICY, &|name| env.get(name).cloned()) {
            Ok(_) => Vec::new(),
            Err(error) => error.0.iter().map(ToString::to_string).collect(),
        }
    }

    #[test]
    fn plain_http_is_refused_off_this_machine() {
        assert_eq!(
            issues_with(&[("HARBOUR_ORIGINS_RU", "https://ru1.example/x http://ru2.example:8080/x")]),
            ["HARBOUR_ORIGINS_RU: \"http://ru2.example:8080/x\" uses http://, allowed only for loopback addresses (127.0.0.0/8, ::1, localhost); use https://"]
        );
        // Addresses that look local but are not loopback.
        for base in [
            "http://10.0.0.1",
            "http://[::2]:80",
            "http://localhost.example",
            "http://128.0.0.1",
        ] {
            let found = issues_with(&[("HARBOUR_ORIGINS_AU", base)]);
            assert_eq!(found.len(), 1, "{base}: {found:?}");
            assert!(found[0].starts_with("HARBOUR_ORIGINS_AU: "), "{found:?}");
        }
    }

    #[test]
    fn plain_http_is_allowed_on_loopback() {
        for base in [
            "http://127.0.0.1:8080",
            "http://127.9.9.9",
            "http://localhost:8080/base",
            "http://LOCALHOST",
            "http://[::1]:8080",
            "http://[::1]",
        ] {
            assert_eq!(
                issues_with(&[("HARBOUR_ORIGINS_AU", base)]),
                Vec::<String>::new(),
                "{base}"
            );
        }
        assert!(issues_with(&[("HARBOUR_ORIGINS_AU", "https://au.example")]).is_empty());
    }

    #[test]
    fn one_origin_host_in_two_regions_is_refused() {
        // Case and an explicit default port do not make another host; the base path does not either.
        let found = issues_with(&[
            (
                "HARBOUR_ORIGINS_CN",
                "https://store.example/in https://cn2.example/in",
            ),
            (
                "HARBOUR_ORIGINS_AU",
                "https://au.example/in https://STORE.example:443/in",
            ),
        ]);
        assert_eq!(
            found,
            ["HARBOUR_ORIGINS_AU: origin host store.example:443 is also in HARBOUR_ORIGINS_CN; each region needs origins of its own"]
        );
        // The same host on loopback, another port per region, is the local stack: allowed.
        assert!(issues_with(&[]).is_empty());
        // Another port is another host; within one region a host may repeat.
        assert!(issues_with(&[
            (
                "HARBOUR_ORIGINS_CN",
                "https://store.example:8443 https://store.example:8443"
            ),
            ("HARBOUR_ORIGINS_AU", "https://store.example"),
        ])
        .is_empty());
        let local = issues_with(&[("HARBOUR_ORIGINS_GLOBAL", "http://127.0.0.1:9100")]);
        assert_eq!(local.len(), 1, "{local:?}");
        assert!(local[0].starts_with(
            "HARBOUR_ORIGINS_GLOBAL: origin host 127.0.0.1:9100 is also in HARBOUR_ORIGINS_CN"
        ));
    }

    #[test]
    fn page_origins_are_web_origins_and_plain_http_only_on_loopback() {
        let mut env = local_env();
        env.insert(
            PAGE_ORIGINS_VAR.into(),
            "http://localhost:8787, https://staging.campaign.example http://127.0.0.1:8787".into(),
        );
        let config = Config::assemble(SHIPPED_POLICY, &|name| env.get(name).cloned()).unwrap();
        assert_eq!(
            config.page_origins,
            [
                "http://localhost:8787",
                "https://staging.campaign.example",
                "http://127.0.0.1:8787"
            ]
        );
        assert_eq!(
            issues_with(&[(PAGE_ORIGINS_VAR, "http://campaign.example https://a.example/page")]),
            [
                "HARBOUR_PAGE_ORIGINS: \"http://campaign.example\" uses http://, allowed only for a page on this machine (loopback); use https://",
                "HARBOUR_PAGE_ORIGINS: \"https://a.example/page\" is not a scheme://host[:port] origin without a path"
            ]
        );
        assert!(issues_with(&[]).is_empty(), "unset: no page origins");
    }

    #[test]
    fn a_fully_qualified_host_is_the_same_host() {
        let found = issues_with(&[
            ("HARBOUR_ORIGINS_CN", "https://store.example./in"),
            ("HARBOUR_ORIGINS_AU", "https://Store.Example:443/in"),
        ]);
        assert_eq!(
            found,
            ["HARBOUR_ORIGINS_AU: origin host store.example:443 is also in HARBOUR_ORIGINS_CN; each region needs origins of its own"]
        );
    }

    #[test]
    fn published_secrets_serve_only_a_stack_on_this_machine() {
        // The local stack: published secrets, every origin on loopback.
        let env = local_env();
        assert!(Config::assemble(SHIPPED_POLICY, &|name| env.get(name).cloned()).is_ok());
        // One origin elsewhere: each published secret is named, and only those.
        let mut env = local_env();
        env.insert("HARBOUR_ORIGINS_AU".into(), "https://au.example".into());
        env.insert(
            "HARBOUR_KEY_RU".into(),
            "ru-own-0123456789abcdefghijklmnopqrstuv".into(),
        );
        let error = Config::assemble(SHIPPED_POLICY, &|name| env.get(name).cloned()).unwrap_err();
        let paths: Vec<_> = error.0.iter().map(|i| i.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "HARBOUR_KEY_CN",
                "HARBOUR_KEY_EU",
                "HARBOUR_KEY_AU",
                "HARBOUR_KEY_GLOBAL",
                "HARBOUR_FORM_KEY"
            ]
        );
        assert!(error.0[0].message.contains("published"), "{error}");
    }

    #[test]
    fn one_signing_secret_in_two_regions_is_refused_without_showing_it() {
        let secret = "the-same-secret-0123456789abcdefghijklmnop";
        let found = issues_with(&[("HARBOUR_KEY_RU", secret), ("HARBOUR_KEY_GLOBAL", secret)]);
        assert_eq!(
            found,
            ["HARBOUR_KEY_GLOBAL: region \"global\" has the same signing secret as HARBOUR_KEY_RU; each region needs its own, or one region's origin accepts another's signatures"]
        );
        assert!(!found[0].contains(secret));
    }

    #[test]
    fn the_form_key_must_be_long_and_its_own() {
        let mut env = local_env();
        env.remove(FORM_KEY_VAR);
        let missing = Config::assemble(SHIPPED_POLICY, &|name| env.get(name).cloned()).unwrap_err();
        assert_eq!(
            missing
                .0
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>(),
            ["HARBOUR_FORM_KEY: the form key needs a secret of at least 32 bytes"]
        );
        assert_eq!(
            issues_with(&[(FORM_KEY_VAR, "short")]),
            ["HARBOUR_FORM_KEY: the form key needs a secret of at least 32 bytes"]
        );
        let eu_secret = deployed_env()["HARBOUR_KEY_EU"].clone();
        let reused = issues_with(&[(FORM_KEY_VAR, &eu_secret)]);
        assert_eq!(
            reused,
            ["HARBOUR_FORM_KEY: the form key is the same secret as HARBOUR_KEY_EU; it must be a secret of its own"]
        );
        assert!(!reused[0].contains(&eu_secret));
        assert!(
            issues_with(&[(FORM_KEY_VAR, "another-form-secret-0123456789abcdefgh")]).is_empty()
        );
    }

    /// The shipped policy with an ingress for `cn` (China Network) and `eu` (Regional Services).
    pub fn ingress_policy() -> String {
        let mut raw: serde_json::Value = serde_json::from_str(SHIPPED_POLICY).unwrap();
        raw["regions"][0]["ingress"] = serde_json::json!({"host": "cn.campaign.example", "kept_in_region_by": "china_network"});
        raw["regions"][2]["ingress"] = serde_json::json!({"host": "eu.campaign.example", "kept_in_region_by": "regional_services"});
        raw.to_string()
    }

    fn ingress_config(changes: &[(&str, &str)]) -> Result<Config, Vec<String>> {
        let mut env = deployed_env();
        for (name, value) in changes {
            env.insert((*name).into(), (*value).into());
        }
        Config::assemble(&ingress_policy(), &|name| env.get(name).cloned())
            .map_err(|e| e.0.iter().map(ToString::to_string).collect())
    }

    #[test]
    fn an_ingress_answers_on_the_policys_hostname() {
        let config = ingress_config(&[]).unwrap();
        let site = |id: &str| {
            config
                .ingress(config.policy.region_index(id).unwrap())
                .cloned()
        };
        assert_eq!(
            site("cn"),
            Some(Site {
                base: "https://cn.campaign.example".into(),
                host: "cn.campaign.example".into()
            })
        );
        assert_eq!(
            site("eu").map(|s| s.base),
            Some("https://eu.campaign.example".into())
        );
        assert_eq!(site("ru"), None);
        // The shipped policy names none.
        let shipped = local_config();
        assert!(shipped
            .policy
            .region_indices()
            .all(|r| shipped.ingress(r).is_none()));
    }

    #[test]
    fn an_ingress_is_simulated_only_on_this_machine() {
        for (value, base, host) in [
            (
                "http://cn.localhost:8787",
                "http://cn.localhost:8787",
                "cn.localhost",
            ),
            (
                "http://CN.Localhost:8787/",
                "http://cn.localhost:8787",
                "cn.localhost",
            ),
            (
                "http://127.0.0.2:8787",
                "http://127.0.0.2:8787",
                "127.0.0.2",
            ),
            ("https://localhost", "https://localhost", "localhost"),
            ("http://[::1]:9000", "http://[::1]:9000", "[::1]"),
        ] {
            let config = ingress_config(&[("HARBOUR_INGRESS_CN", value)]).unwrap();
            let cn = config.policy.region_index("cn").unwrap();
            assert_eq!(
                config.ingress(cn),
                Some(&Site {
                    base: base.into(),
                    host: host.into()
                }),
                "{value}"
            );
        }
        for value in [
            "https://cn.staging.example",
            "http://localhost.example",
            "http://cn.localhost:8787/api",
            "cn.localhost:8787",
            "http://10.0.0.1",
        ] {
            let found = ingress_config(&[("HARBOUR_INGRESS_CN", value)]).unwrap_err();
            assert_eq!(found.len(), 1, "{value}: {found:?}");
            assert!(
                found[0].starts_with(&format!("HARBOUR_INGRESS_CN: {value:?} is not an address on this machine (http://cn.localhost:8787); this variable only simulates regions[0].ingress.host (cn.campaign.example) locally")),
                "{found:?}"
            );
        }
    }

    #[test]
    fn an_ingress_variable_needs_the_policys_ingress_and_a_host_of_its_own() {
        assert_eq!(
            ingress_config(&[("HARBOUR_INGRESS_RU", "http://ru.localhost:8787")]).unwrap_err(),
            ["HARBOUR_INGRESS_RU: the policy names no ingress for region \"ru\" (regions[1].ingress); this variable only moves one to this machine: remove it"]
        );
        assert_eq!(
            ingress_config(&[
                ("HARBOUR_INGRESS_CN", "http://x.localhost:8787"),
                ("HARBOUR_INGRESS_EU", "http://X.localhost:9999")
            ])
            .unwrap_err(),
            ["HARBOUR_INGRESS_EU: x.localhost is also HARBOUR_INGRESS_CN's host; each region's ingress needs a host of its own"]
        );
        // An empty variable is no variable.
        assert!(ingress_config(&[("HARBOUR_INGRESS_RU", " ")]).is_ok());
    }

    #[test]
    fn endpoints_keep_a_base_path() {
        assert_eq!(
            endpoint("https://eu.example.com/harbour/"),
            Some((
                "https://eu.example.com/harbour/v1/submissions".into(),
                "/harbour/v1/submissions".into()
            ))
        );
        assert_eq!(
            endpoint("http://[::1]:8080"),
            Some((
                "http://[::1]:8080/v1/submissions".into(),
                "/v1/submissions".into()
            ))
        );
        for bad in [
            "",
            "eu.example.com",
            "https://",
            "https://a b",
            "https://x/?q",
            "mailto:x",
        ] {
            assert_eq!(endpoint(bad), None, "{bad}");
        }
    }
}
