//! The files that configure a deployment parse and agree with each other.
#![cfg(not(target_arch = "wasm32"))]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use harbour_contract::env::{key_var, origins_var, FORM_KEY_VAR};
use harbour_contract::points::{ANALYTICS_BINDING, DATASET};
use harbour_core::config::Config;
use harbour_core::phase::admission::location_limits;
use harbour_policy::{Policy, SHIPPED_POLICY};

fn wrangler() -> toml::Table {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../wrangler.toml"))
        .unwrap();
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

/// The vars of one environment assembled into a configuration, with `secret` giving the secret of
/// each key variable.
fn assemble_with(
    vars: &toml::Table,
    secret: &dyn Fn(&str) -> String,
) -> Result<Config, harbour_core::config::ConfigError> {
    Config::assemble(SHIPPED_POLICY, &|name| {
        if name.starts_with("HARBOUR_KEY_") || name == FORM_KEY_VAR {
            return Some(secret(name));
        }
        vars.get(name).and_then(|v| v.as_str()).map(String::from)
    })
}

/// `assemble_with` the secrets a deployer would set: one of their own per variable.
fn assemble(vars: &toml::Table) -> Result<Config, harbour_core::config::ConfigError> {
    assemble_with(vars, &|name| {
        format!("{name}-own-0123456789abcdefghijklmnopqrstuv")
    })
}

/// The secrets of the local stack (`Config::local_env`), published with the source.
fn published_secret(name: &str) -> String {
    let local = Config::local_env(SHIPPED_POLICY, 8700).unwrap();
    local.into_iter().find(|(n, _)| n == name).unwrap().1
}

fn assert_every_region_has_origins_and_no_secrets(vars: &toml::Table, environment: &str) {
    assert!(
        !vars.contains_key(FORM_KEY_VAR),
        "{environment}: the form key must be a secret, not a var"
    );
    let policy = Policy::shipped().unwrap();
    for region in &policy.regions {
        assert!(
            vars.contains_key(&origins_var(&region.id)),
            "{environment}: {} has no origins var",
            region.id
        );
        assert!(
            !vars.contains_key(&key_var(&region.id)),
            "{environment}: {} key must be a secret, not a var",
            region.id
        );
    }
}

#[test]
fn wrangler_vars_give_every_policy_region_its_origins_and_no_secrets() {
    let config = wrangler();
    let vars = config["vars"].as_table().unwrap();
    assert_every_region_has_origins_and_no_secrets(vars, "top level");
    // With keys supplied as secrets, the vars assemble into a valid configuration.
    let assembled = assemble(vars).unwrap();
    for (index, region) in assembled.policy.regions.iter().enumerate() {
        assert_eq!(
            assembled.regions[index].origins.len(),
            2,
            "{} primary + secondary",
            region.id
        );
    }
}

#[test]
fn production_vars_name_every_region_over_https_and_pass_the_config_checks() {
    let config = wrangler();
    let top = config["vars"].as_table().unwrap();
    // Environments do not inherit vars: production must set every one itself.
    let production = config["env"]["production"]["vars"].as_table().unwrap();
    let names = |t: &toml::Table| t.keys().cloned().collect::<Vec<_>>();
    assert_eq!(
        names(production),
        names(top),
        "the same variables as the top level"
    );
    assert_every_region_has_origins_and_no_secrets(production, "production");
    let policy = Policy::shipped().unwrap();
    for region in &policy.regions {
        let urls = production[&origins_var(&region.id)].as_str().unwrap();
        for url in urls.split([' ', ',']).filter(|u| !u.is_empty()) {
            assert!(
                url.starts_with("https://"),
                "{}: {url} is not https",
                region.id
            );
        }
    }
    let assembled = assemble(production).unwrap_or_else(|e| panic!("{e}"));
    for (index, region) in assembled.policy.regions.iter().enumerate() {
        assert!(
            !assembled.regions[index].origins.is_empty(),
            "{} has origins",
            region.id
        );
    }
    // No developer's page may submit to production.
    assert!(
        assembled
            .page_origins
            .iter()
            .all(|o| o.starts_with("https://")),
        "{:?}",
        assembled.page_origins
    );
    // The published test secrets work locally and are refused in production.
    assert!(assemble_with(top, &published_secret).is_ok());
    let refused = assemble_with(production, &published_secret).unwrap_err();
    assert_eq!(refused.0.len(), policy.regions.len() + 1, "{refused}");
    // The page and the entry are inherited, not redefined differently for production.
    for key in ["assets", "main"] {
        assert!(
            config["env"]["production"].get(key).is_none(),
            "env.production.{key} would override the top level"
        );
    }
}

#[test]
fn production_answers_on_its_routes_only_and_builds_the_shipped_policy() {
    let config = wrangler();
    let production = config["env"]["production"].as_table().unwrap();
    // workers_dev is inherited unless set: production must say false itself, or the worker also
    // answers on workers.dev, outside the zone's WAF.
    assert_eq!(production["workers_dev"].as_bool(), Some(false));
    assert_eq!(production["preview_urls"].as_bool(), Some(false));
    assert!(!production["routes"].as_array().unwrap().is_empty());
    assert_eq!(
        production["build"]["command"].as_str(),
        Some("bash scripts/build --production")
    );
    assert_eq!(
        production["build"]["watch_dir"],
        config["build"]["watch_dir"]
    );
}

#[test]
fn the_page_is_served_with_strict_transport_security() {
    let headers =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../www/_headers"))
            .unwrap();
    let hsts = headers
        .lines()
        .map(str::trim)
        .find_map(|line| line.strip_prefix("Strict-Transport-Security: "))
        .expect("www/_headers sets Strict-Transport-Security");
    let max_age: u64 = hsts
        .split(';')
        .find_map(|part| part.trim().strip_prefix("max-age="))
        .and_then(|age| age.parse().ok())
        .unwrap();
    // A year at least, the preload list's floor.
    assert!(max_age >= 31_536_000, "{hsts}");
}

/// `(name, limit, period)` of each `[[ratelimits]]` of one environment, sorted, and their
/// namespace ids.
fn ratelimits(environment: &toml::Table) -> (Vec<(String, i64, i64)>, Vec<String>) {
    let mut bindings = Vec::new();
    let mut namespaces = Vec::new();
    let declared = environment
        .get("ratelimits")
        .and_then(|r| r.as_array())
        .cloned()
        .unwrap_or_default();
    for binding in declared {
        let simple = &binding["simple"];
        bindings.push((
            binding["name"].as_str().unwrap().to_owned(),
            simple["limit"].as_integer().unwrap(),
            simple["period"].as_integer().unwrap(),
        ));
        namespaces.push(binding["namespace_id"].as_str().unwrap().to_owned());
    }
    bindings.sort();
    (bindings, namespaces)
}

#[test]
fn wrangler_declares_exactly_the_rate_limiting_bindings_the_policy_needs() {
    let policy = Policy::shipped().unwrap();
    let mut expected: Vec<(String, i64, i64)> = location_limits(&policy)
        .iter()
        .map(|l| {
            (
                l.binding_name(),
                i64::from(l.limit),
                i64::try_from(l.period_s).unwrap(),
            )
        })
        .collect();
    expected.sort();
    assert!(!expected.is_empty());
    let config = wrangler();
    let production = config["env"]["production"].as_table().unwrap();
    let mut all_namespaces = Vec::new();
    // Bindings are not inherited by environments: production declares its own.
    for (environment, table) in [("top level", &config), ("production", production)] {
        let (declared, namespaces) = ratelimits(table);
        assert_eq!(declared, expected, "{environment}: [[ratelimits]]");
        for namespace in &namespaces {
            assert!(
                !namespace.is_empty() && namespace.bytes().all(|b| b.is_ascii_digit()),
                "{environment}: namespace_id {namespace:?} must be a number"
            );
        }
        all_namespaces.extend(namespaces);
    }
    let count = all_namespaces.len();
    all_namespaces.sort();
    all_namespaces.dedup();
    assert_eq!(
        all_namespaces.len(),
        count,
        "each binding of each environment counts in a namespace of its own"
    );
}

/// `(binding, dataset)` of each `[[analytics_engine_datasets]]` of one environment.
fn datasets(environment: &toml::Table) -> Vec<(String, String)> {
    let declared = environment
        .get("analytics_engine_datasets")
        .and_then(|d| d.as_array())
        .cloned()
        .unwrap_or_default();
    declared
        .iter()
        .map(|d| {
            (
                d["binding"].as_str().unwrap().to_owned(),
                d["dataset"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

#[test]
fn each_environment_writes_data_points_to_a_dataset_of_its_own_and_production_to_the_live_views() {
    let config = wrangler();
    let production = config["env"]["production"].as_table().unwrap();
    // Bindings are not inherited by environments: production declares its own.
    let top = datasets(&config);
    let prod = datasets(production);
    assert_eq!(top.len(), 1, "top level: {top:?}");
    assert_eq!(prod, [(ANALYTICS_BINDING.to_owned(), DATASET.to_owned())]);
    assert_eq!(top[0].0, ANALYTICS_BINDING);
    assert_ne!(
        top[0].1, DATASET,
        "test traffic must not mix with a broadcast's"
    );
    for (_, dataset) in top.iter().chain(&prod) {
        // The SQL API reads the dataset as a table: a plain name.
        assert!(
            dataset
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_'),
            "{dataset}"
        );
    }
}

#[test]
fn the_form_key_secret_is_documented_where_deployers_look() {
    let command = format!("wrangler secret put {FORM_KEY_VAR} --env production");
    for file in ["wrangler.toml", "README.md"] {
        let text = std::fs::read_to_string(format!("{}/../../{file}", env!("CARGO_MANIFEST_DIR")))
            .unwrap();
        assert!(text.contains(&command), "{file} does not say `{command}`");
    }
}

#[test]
fn the_bench_policy_is_the_shipped_one_with_cheap_challenges() {
    // The bench builds the same worker with bench/policy.json: it must differ only in the work it
    // asks of clients (harbour's check costs the same at any difficulty), or the rehearsal would
    // measure another policy.
    let read = |file: &str| -> serde_json::Value {
        let text = std::fs::read_to_string(format!("{}/../../{file}", env!("CARGO_MANIFEST_DIR")))
            .unwrap();
        serde_json::from_str(&text).unwrap()
    };
    let (mut bench, mut shipped) = (read("bench/policy.json"), read("policy/harbour.json"));
    harbour_policy::Policy::parse(&bench.to_string()).unwrap();
    // The work asked: the campaign's, and each surge window's own.
    let strip = |policy: &mut serde_json::Value, check: bool| {
        for campaign in policy["campaigns"].as_array_mut().unwrap() {
            if check {
                assert!(campaign["challenge"]["difficulty_bits"].as_u64().unwrap() <= 8);
            }
            campaign.as_object_mut().unwrap().remove("challenge");
            for window in campaign["surge_windows"]
                .as_array_mut()
                .into_iter()
                .flatten()
            {
                if check {
                    assert!(window["difficulty_bits"].as_u64().unwrap_or(0) <= 8);
                }
                window.as_object_mut().unwrap().remove("difficulty_bits");
            }
        }
    };
    strip(&mut bench, true);
    strip(&mut shipped, false);
    assert_eq!(bench, shipped);
}

fn headers_file() -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../www/_headers")).unwrap()
}

/// What a production deployment of `policy` lacks for its regions' ingress, one line each: each
/// ingress is one of production's Workers custom domains (Regional Services applies to a custom
/// domain alone, https://developers.cloudflare.com/data-localization/how-to/workers/), no
/// `HARBOUR_INGRESS_*` var (production serves the policy's hostnames, which the residency report
/// states), the page's CSP lets it send entries there, and the page's own hostnames (production's
/// other routes) are allowed origins of every campaign, since the page sends to an ingress across
/// origins. Nothing for a policy without an ingress.
fn ingress_problems(policy: &Policy, production: &toml::Table, headers: &str) -> Vec<String> {
    let mut problems = Vec::new();
    let ingress: Vec<(&str, &str)> = policy
        .regions
        .iter()
        .filter_map(|r| Some((r.id.as_str(), r.ingress.as_ref()?.host.as_str())))
        .collect();
    if ingress.is_empty() {
        return problems;
    }
    let routes = production
        .get("routes")
        .and_then(|r| r.as_array())
        .cloned()
        .unwrap_or_default();
    let pattern = |route: &toml::Value| {
        route
            .get("pattern")
            .and_then(|p| p.as_str())
            .map(str::to_owned)
    };
    let custom_domain =
        |route: &toml::Value| route.get("custom_domain").and_then(|c| c.as_bool()) == Some(true);
    let connect_src: Vec<&str> = headers
        .lines()
        .filter_map(|l| l.trim().strip_prefix("Content-Security-Policy:"))
        .flat_map(|csp| csp.split(';'))
        .filter_map(|d| d.trim().strip_prefix("connect-src "))
        .flat_map(str::split_whitespace)
        .collect();
    for (region, host) in &ingress {
        if !routes
            .iter()
            .any(|r| pattern(r).as_deref() == Some(host) && custom_domain(r))
        {
            problems.push(format!("{region}: production has no route {{ pattern = \"{host}\", custom_domain = true }}"));
        }
        let var = harbour_contract::env::ingress_var(region);
        if production.get("vars").and_then(|v| v.get(&var)).is_some() {
            problems.push(format!(
                "{region}: production sets {var}; it serves the policy's {host}"
            ));
        }
        if !connect_src.contains(&format!("https://{host}").as_str()) {
            problems.push(format!(
                "{region}: www/_headers' connect-src lacks https://{host}"
            ));
        }
    }
    let pages = routes.iter().filter_map(pattern).filter_map(|p| {
        let host = p.split('/').next().unwrap_or_default().to_owned();
        (!ingress.iter().any(|(_, h)| *h == host)).then_some(host)
    });
    for page in pages {
        for campaign in &policy.campaigns {
            if !campaign
                .allowed_origins
                .contains(&format!("https://{page}"))
            {
                problems.push(format!(
                    "{}: allowed_origins lacks https://{page}, the page's own origin",
                    campaign.id
                ));
            }
        }
    }
    problems
}

#[test]
fn production_serves_each_ingress_of_the_policy_as_a_custom_domain_the_page_may_reach() {
    let config = wrangler();
    let production = config["env"]["production"].as_table().unwrap();
    let shipped = Policy::shipped().unwrap();
    assert_eq!(
        ingress_problems(&shipped, production, &headers_file()),
        Vec::<String>::new()
    );
    // A policy with an ingress for China and the EU, against today's files: every gap named.
    let mut raw: serde_json::Value = serde_json::from_str(SHIPPED_POLICY).unwrap();
    raw["regions"][0]["ingress"] =
        serde_json::json!({"host": "cn.campaign.example", "kept_in_region_by": "china_network"});
    raw["regions"][2]["ingress"] = serde_json::json!({"host": "eu.campaign.example", "kept_in_region_by": "regional_services"});
    let policy = Policy::parse(&raw.to_string()).unwrap();
    assert_eq!(
        ingress_problems(&policy, production, &headers_file()),
        [
            "cn: production has no route { pattern = \"cn.campaign.example\", custom_domain = true }",
            "cn: www/_headers' connect-src lacks https://cn.campaign.example",
            "eu: production has no route { pattern = \"eu.campaign.example\", custom_domain = true }",
            "eu: www/_headers' connect-src lacks https://eu.campaign.example",
            "spring-launch: allowed_origins lacks https://campaign.example, the page's own origin",
        ]
    );
    // The files a deployment with those ingresses has.
    let mut deployed = production.clone();
    let routes: toml::Value = toml::from_str::<toml::Table>(
        r#"routes = [
            { pattern = "campaign.example/*", zone_name = "campaign.example" },
            { pattern = "cn.campaign.example", custom_domain = true },
            { pattern = "eu.campaign.example", custom_domain = true },
        ]"#,
    )
    .unwrap()["routes"]
        .clone();
    deployed.insert("routes".into(), routes);
    let headers = headers_file().replace(
        "connect-src 'self'",
        "connect-src 'self' https://cn.campaign.example https://eu.campaign.example",
    );
    let mut allowing = raw.clone();
    allowing["campaigns"][0]["allowed_origins"] = serde_json::json!(["https://campaign.example"]);
    let allowing = Policy::parse(&allowing.to_string()).unwrap();
    assert_eq!(
        ingress_problems(&allowing, &deployed, &headers),
        Vec::<String>::new()
    );
    // A var that would move an ingress in production is named.
    let mut moved = deployed.clone();
    moved["vars"].as_table_mut().unwrap().insert(
        "HARBOUR_INGRESS_CN".into(),
        "http://cn.localhost:8787".into(),
    );
    assert_eq!(
        ingress_problems(&allowing, &moved, &headers),
        ["cn: production sets HARBOUR_INGRESS_CN; it serves the policy's cn.campaign.example"]
    );
}
