//! The files that configure a deployment parse and agree with each other.
#![cfg(not(target_arch = "wasm32"))]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use harbour::config::{key_var, origins_var, Config};
use harbour::policy::{Policy, SHIPPED_POLICY};

fn wrangler() -> toml::Table {
    let text =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/wrangler.toml")).unwrap();
    text.parse().unwrap()
}

#[test]
fn wrangler_toml_parses_and_points_at_the_built_entry_and_the_page() {
    let config = wrangler();
    assert_eq!(config["main"].as_str(), Some("build/worker/shim.mjs"));
    assert_eq!(config["assets"]["directory"].as_str(), Some("./www"));
    assert!(config["build"]["command"]
        .as_str()
        .unwrap()
        .contains("scripts/build"));
}

#[test]
fn wrangler_vars_give_every_policy_region_its_origins_and_no_secrets() {
    let config = wrangler();
    let vars = config["vars"].as_table().unwrap();
    let policy = Policy::shipped().unwrap();
    for region in &policy.regions {
        assert!(
            vars.contains_key(&origins_var(&region.id)),
            "{} has no origins var",
            region.id
        );
        assert!(
            !vars.contains_key(&key_var(&region.id)),
            "{} key must be a secret, not a var",
            region.id
        );
    }
    // With keys supplied as secrets, the vars assemble into a valid configuration.
    let assembled = Config::assemble(SHIPPED_POLICY, &|name| {
        if let Some(region) = name.strip_prefix("HARBOUR_KEY_") {
            return Some(format!("{region}-secret-0123456789abcdefghijklmnop"));
        }
        vars.get(name).and_then(|v| v.as_str()).map(String::from)
    });
    let assembled = assembled.unwrap();
    for (index, region) in assembled.policy.regions.iter().enumerate() {
        assert_eq!(
            assembled.regions[index].origins.len(),
            2,
            "{} primary + secondary",
            region.id
        );
    }
}
