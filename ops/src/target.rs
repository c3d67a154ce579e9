//! Where a deployment's origins and edge figures are: the local stack (`scripts/run`) by default,
//! or a target file naming another (staging, say). Nothing is sent off this machine without a
//! target file: the local stack's origins must be on loopback.
//!
//! A target file (TOML):
//!
//! ```toml
//! name = "staging"
//! [[origin]]                      # each origin of each region, primary first
//! region = "eu"
//! url = "https://eu-1.staging.example"   # its submissions listener (what the edge calls)
//! ops = "http://10.0.0.5:9703"           # its operations listener (/health, /v1/seconds)
//! key_env = "HARBOUR_KEY_EU"             # optional: the region's signing key, for the probe
//! [edge]                          # optional: where the edge's data points are read
//! recorder = "http://127.0.0.1:9799"     # a local recorder (the bench's workerd binds one), or
//! analytics_engine = { account_id = "…", dataset = "harbour_broadcast" }  # token: HARBOUR_AE_TOKEN
//! ```

use std::path::Path;

use harbour_contract::env::{key_var, origins_var};
use harbour_contract::points::DATASET;
use harbour_contract::signature::SigningKey;
use harbour_policy::Policy;
use serde::Deserialize;

/// A local origin's operations listener is on its port plus this (as `scripts/run` starts them).
pub const LOCAL_OPS_OFFSET: u16 = 1000;
/// The variable that holds the Analytics Engine SQL API token (never given to the page).
pub const AE_TOKEN_VAR: &str = "HARBOUR_AE_TOKEN";
/// The Cloudflare API the SQL API is part of.
pub const CLOUDFLARE_API: &str = "https://api.cloudflare.com/client/v4";

/// One origin of a region.
#[derive(Clone, Debug)]
pub struct Origin {
    pub region: String,
    /// Base URL of its submissions listener.
    pub url: String,
    /// Base URL of its operations listener.
    pub ops: String,
    /// The region's signing key, when the environment (or `.dev.vars`, locally) holds it.
    pub key: Option<SigningKey>,
    /// Where the key was looked for, for a message when it is missing.
    pub key_from: String,
}

impl Origin {
    /// `host:port` of the submissions listener, for labels.
    pub fn label(&self) -> String {
        let host = self.url.split("://").nth(1).unwrap_or(&self.url);
        format!("{} {}", self.region, host.trim_end_matches('/'))
    }
}

/// Where the edge's data points are read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Edge {
    /// None: `wrangler dev` records no data points.
    None,
    /// A local recorder's base URL (`GET /points?since_s=`).
    Recorder(String),
    /// The Analytics Engine SQL API of an account; the token comes from [`AE_TOKEN_VAR`].
    AnalyticsEngine {
        api: String,
        account_id: String,
        dataset: String,
    },
}

/// A deployment to look at.
#[derive(Clone, Debug)]
pub struct Target {
    /// What the output calls it.
    pub name: String,
    /// Whether this is the local stack (loopback only).
    pub local: bool,
    pub origins: Vec<Origin>,
    pub edge: Edge,
}

impl Target {
    /// Each region's origins, in the policy's order of regions.
    pub fn regions<'a>(&'a self, policy: &'a Policy) -> Vec<(&'a str, Vec<&'a Origin>)> {
        policy
            .regions
            .iter()
            .map(|r| {
                let origins = self.origins.iter().filter(|o| o.region == r.id).collect();
                (r.id.as_str(), origins)
            })
            .collect()
    }
}

/// The signing key in `var`: from the environment, else from `dev_vars` (the local stack's
/// `.dev.vars`, `NAME=value` lines).
fn key_from(var: &str, dev_vars: &str) -> Option<SigningKey> {
    let value = std::env::var(var).ok().or_else(|| {
        dev_vars.lines().find_map(|line| {
            let (name, value) = line.split_once('=')?;
            (name.trim() == var).then(|| value.trim().to_owned())
        })
    })?;
    SigningKey::new(value.as_bytes())
}

/// The local stack: every region of `policy` with the origins `wrangler.toml`'s `[vars]` name for
/// it in `root` (each must be `http://127.0.0.1:<port>`; its operations listener on the port +
/// [`LOCAL_OPS_OFFSET`]), and keys from the environment or `root/.dev.vars`.
pub fn local(root: &Path, policy: &Policy) -> Result<Target, Vec<String>> {
    let wrangler = root.join("wrangler.toml");
    let text = std::fs::read_to_string(&wrangler)
        .map_err(|e| vec![format!("{}: {e}", wrangler.display())])?;
    let config: toml::Table = text
        .parse()
        .map_err(|e| vec![format!("{}: {e}", wrangler.display())])?;
    let dev_vars = std::fs::read_to_string(root.join(".dev.vars")).unwrap_or_default();
    let vars = config.get("vars").and_then(|v| v.as_table());
    let mut problems = Vec::new();
    let mut origins = Vec::new();
    for region in &policy.regions {
        let var = origins_var(&region.id);
        let Some(urls) = vars.and_then(|v| v.get(&var)).and_then(|v| v.as_str()) else {
            problems.push(format!("wrangler.toml [vars] has no {var}"));
            continue;
        };
        for url in urls.split([' ', ',']).filter(|u| !u.is_empty()) {
            let port = url
                .strip_prefix("http://127.0.0.1:")
                .map(|p| p.trim_end_matches('/'))
                .and_then(|p| p.parse::<u16>().ok());
            let Some(ops_port) = port.and_then(|p| p.checked_add(LOCAL_OPS_OFFSET)) else {
                problems.push(format!(
                    "wrangler.toml [vars] {var}: {url} is not on this machine (http://127.0.0.1:<port>); name other hosts in a target file (--target)"
                ));
                continue;
            };
            let key_var = key_var(&region.id);
            origins.push(Origin {
                region: region.id.clone(),
                url: url.trim_end_matches('/').to_owned(),
                ops: format!("http://127.0.0.1:{ops_port}"),
                key: key_from(&key_var, &dev_vars),
                key_from: format!("{key_var} (environment or .dev.vars)"),
            });
        }
    }
    if problems.is_empty() {
        Ok(Target {
            name: "the local stack (wrangler.toml [vars], on this machine)".into(),
            local: true,
            origins,
            edge: Edge::None,
        })
    } else {
        Err(problems)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    name: String,
    #[serde(default)]
    origin: Vec<FileOrigin>,
    edge: Option<FileEdge>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileOrigin {
    region: String,
    url: String,
    ops: String,
    key_env: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileEdge {
    recorder: Option<String>,
    analytics_engine: Option<FileAnalytics>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileAnalytics {
    account_id: String,
    dataset: Option<String>,
    /// The API's base, for a proxy (default: Cloudflare's).
    api: Option<String>,
}

/// A target file, against `policy`: every region of the policy needs an origin, and no origin
/// may name a region the policy lacks.
pub fn parse(text: &str, policy: &Policy) -> Result<Target, Vec<String>> {
    let file: File = toml::from_str(text).map_err(|e| vec![e.to_string()])?;
    let mut problems = Vec::new();
    for origin in &file.origin {
        if policy.region_index(&origin.region).is_none() {
            problems.push(format!(
                "origin {}: the policy has no region {:?}",
                origin.url, origin.region
            ));
        }
        for url in [&origin.url, &origin.ops] {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                problems.push(format!("origin {url}: not an http:// or https:// URL"));
            }
        }
    }
    for region in &policy.regions {
        if !file.origin.iter().any(|o| o.region == region.id) {
            problems.push(format!("region {}: no [[origin]]", region.id));
        }
    }
    let edge = match file.edge {
        None => Edge::None,
        Some(FileEdge {
            recorder: Some(url),
            analytics_engine: None,
        }) => Edge::Recorder(url.trim_end_matches('/').to_owned()),
        Some(FileEdge {
            recorder: None,
            analytics_engine: Some(ae),
        }) => analytics(ae).unwrap_or_else(|problem| {
            problems.push(problem);
            Edge::None
        }),
        Some(_) => {
            problems.push("[edge]: either recorder or analytics_engine".into());
            Edge::None
        }
    };
    if !problems.is_empty() {
        return Err(problems);
    }
    let origins = file
        .origin
        .into_iter()
        .map(|o| {
            let var = o.key_env.unwrap_or_else(|| key_var(&o.region));
            Origin {
                key: key_from(&var, ""),
                key_from: format!("{var} (environment)"),
                region: o.region,
                url: o.url.trim_end_matches('/').to_owned(),
                ops: o.ops.trim_end_matches('/').to_owned(),
            }
        })
        .collect();
    Ok(Target {
        name: file.name,
        local: false,
        origins,
        edge,
    })
}

fn analytics(ae: FileAnalytics) -> Result<Edge, String> {
    let dataset = ae.dataset.unwrap_or_else(|| DATASET.to_owned());
    // Both go into the query's text and the URL's path: plain names only.
    let plain =
        |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if !plain(&ae.account_id) || !plain(&dataset) {
        return Err(
            "[edge.analytics_engine]: account_id and dataset are letters, digits and _".into(),
        );
    }
    Ok(Edge::AnalyticsEngine {
        api: ae
            .api
            .unwrap_or_else(|| CLOUDFLARE_API.to_owned())
            .trim_end_matches('/')
            .to_owned(),
        account_id: ae.account_id,
        dataset,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_local_stack_is_what_wrangler_toml_names_on_loopback() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let policy = Policy::shipped().unwrap();
        let target = local(&root, &policy).unwrap();
        assert!(target.local);
        let eu: Vec<_> = target.origins.iter().filter(|o| o.region == "eu").collect();
        assert_eq!(eu[0].url, "http://127.0.0.1:8703");
        assert_eq!(eu[0].ops, "http://127.0.0.1:9703");
        assert_eq!(eu[1].url, "http://127.0.0.1:8713");
        assert_eq!(target.edge, Edge::None);
    }

    #[test]
    fn a_target_file_names_every_region_and_one_edge_source() {
        let policy = Policy::shipped().unwrap();
        let mut text = String::from("name = \"staging\"\n");
        for region in &policy.regions {
            text.push_str(&format!(
                "[[origin]]\nregion = \"{0}\"\nurl = \"https://{0}-1.staging.example\"\nops = \"http://10.0.0.1:9703\"\n",
                region.id
            ));
        }
        let with_edge = format!("{text}[edge]\nanalytics_engine = {{ account_id = \"abc123\" }}\n");
        let target = parse(&with_edge, &policy).unwrap();
        assert!(!target.local);
        assert_eq!(
            target.edge,
            Edge::AnalyticsEngine {
                api: CLOUDFLARE_API.into(),
                account_id: "abc123".into(),
                dataset: DATASET.into()
            }
        );
        let missing = text.replace("region = \"au\"", "region = \"mars\"");
        let problems = parse(&missing, &policy).unwrap_err().join("\n");
        assert!(problems.contains("no region \"mars\""), "{problems}");
        assert!(problems.contains("region au: no [[origin]]"), "{problems}");
        let injected = format!("{text}[edge]\nanalytics_engine = {{ account_id = \"a; DROP\" }}\n");
        assert!(parse(&injected, &policy).is_err());
    }
}
