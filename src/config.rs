//! Configuration: the policy plus what differs per environment (origin URLs, signing keys).
//!
//! Per region `R` (id upper-cased, `-` as `_`) the environment provides:
//! - `HARBOUR_ORIGINS_R`: one or more origin base URLs, primary first, separated by spaces or
//!   commas (a `wrangler.toml` var);
//! - `HARBOUR_KEY_R`: the region's signing secret, at least 32 bytes (`wrangler secret put`, or
//!   `.dev.vars` locally).
//!
//! And optionally `HARBOUR_LOG`: `summary` (the default) or `decisions` (see `journal`).
//!
//! Assembly reports every missing or malformed entry at once. In an isolate a failed assembly
//! answers every request with 500 `config_invalid` and forwards nothing.

use crate::policy::{Policy, PolicyError, PolicyIssue, RegionIndex};
use crate::signature::{SigningKey, MIN_KEY_BYTES};

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

/// Where submissions are stored, relative to an origin's base URL.
pub const SUBMISSIONS_PATH: &str = "/v1/submissions";

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
}

#[derive(Clone, Debug)]
pub struct Config {
    pub policy: Policy,
    /// Indexed like `policy.regions`.
    pub regions: Vec<RegionSetup>,
    pub log: LogMode,
}

pub fn origins_var(region_id: &str) -> String {
    format!("HARBOUR_ORIGINS_{}", env_suffix(region_id))
}

pub fn key_var(region_id: &str) -> String {
    format!("HARBOUR_KEY_{}", env_suffix(region_id))
}

fn env_suffix(region_id: &str) -> String {
    region_id.to_ascii_uppercase().replace('-', "_")
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

impl Config {
    pub fn assemble(
        policy_json: &str,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, PolicyError> {
        let policy = Policy::parse(policy_json)?;
        let mut issues = Vec::new();
        let mut regions = Vec::new();
        for (index, region) in policy.regions.iter().enumerate() {
            let origins_name = origins_var(&region.id);
            let mut origins = Vec::new();
            for base in env(&origins_name)
                .unwrap_or_default()
                .split([' ', ','])
                .filter(|s| !s.is_empty())
            {
                match endpoint(base) {
                    Some((url, path)) => origins.push(Origin {
                        region: RegionIndex(index),
                        url,
                        path,
                    }),
                    None => issues.push(PolicyIssue {
                        path: origins_name.clone(),
                        message: format!("{base:?} is not an http(s) base URL"),
                    }),
                }
            }
            // The signature covers the path, and every attempt sends the same signed request.
            if origins.iter().any(|o| o.path != origins[0].path) {
                issues.push(PolicyIssue {
                    path: origins_name.clone(),
                    message: format!(
                        "the origins of region {:?} must share one base path (the signature covers it)",
                        region.id
                    ),
                });
            }
            if origins.is_empty() {
                issues.push(PolicyIssue {
                    path: origins_name,
                    message: format!("region {:?} has no origin", region.id),
                });
            }
            let key_name = key_var(&region.id);
            let key = env(&key_name).and_then(|secret| SigningKey::new(secret.as_bytes()));
            if key.is_none() {
                issues.push(PolicyIssue {
                    path: key_name,
                    message: format!(
                        "region {:?} needs a signing secret of at least {MIN_KEY_BYTES} bytes",
                        region.id
                    ),
                });
            }
            if let Some(key) = key {
                regions.push(RegionSetup { origins, key });
            }
        }
        let log_value = env(LogMode::VARIABLE);
        let log = LogMode::parse(log_value.as_deref()).unwrap_or_else(|| {
            issues.push(PolicyIssue {
                path: LogMode::VARIABLE.into(),
                message: format!(
                    "{:?} is not a log mode (summary or decisions)",
                    log_value.unwrap_or_default()
                ),
            });
            LogMode::default()
        });
        if issues.is_empty() {
            Ok(Config {
                policy,
                regions,
                log,
            })
        } else {
            Err(PolicyError(issues))
        }
    }

    /// The environment of a local stack: every region of `policy_json` on two origins at
    /// 127.0.0.1 (`base_port + i` primary, `base_port + 100 + i` secondary) with fixed keys.
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
            env.push((
                key_var(&region.id),
                format!("{}-secret-0123456789abcdefghijklmnop", region.id),
            ));
        }
        Ok(env)
    }

    /// `assemble` over `local_env`.
    pub fn local(policy_json: &str, base_port: u16) -> Result<Config, PolicyError> {
        let env = Config::local_env(policy_json, base_port)?;
        Config::assemble(policy_json, &|name| {
            env.iter().find(|(n, _)| n == name).map(|(_, v)| v.clone())
        })
    }

    pub fn origins(&self, region: RegionIndex) -> &[Origin] {
        self.regions
            .get(region.0)
            .map(|r| r.origins.as_slice())
            .unwrap_or(&[])
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::policy::SHIPPED_POLICY;
    use std::collections::HashMap;

    pub fn local_env() -> HashMap<String, String> {
        Config::local_env(SHIPPED_POLICY, 9100)
            .unwrap()
            .into_iter()
            .collect()
    }

    pub fn local_config() -> Config {
        Config::local(SHIPPED_POLICY, 9100).unwrap()
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
        let mut env = local_env();
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
