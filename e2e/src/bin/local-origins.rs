//! The local origins `scripts/run` starts, from the two files that define them: every region of
//! the shipped policy, with the ports of its `HARBOUR_ORIGINS_<REGION>` URLs in `wrangler.toml`'s
//! `[vars]` (what the worker under `wrangler dev` will call). One line each, for the shell:
//!
//! ```text
//! key HARBOUR_KEY_CN                  the region's signing-key variable (.dev.vars)
//! person-key HARBOUR_PERSON_KEY_CN    the region's person key (origins only; .run/person-keys.env)
//! origin cn 8701 9701                 an origin to start: region, port on 127.0.0.1 (primary
//!                                     first), and its operations port (the port + 1000)
//! key HARBOUR_FORM_KEY               the challenges' key, last (.dev.vars)
//! ```
//!
//! `local-origins [CONFIG]` reads `CONFIG` instead of the workspace's `wrangler.toml`.
//!
//! Exits non-zero, naming each entry, when a region has no origins variable, or an origin is not
//! `http://127.0.0.1:<port>` (only those can be started here) or shares its port (or its
//! operations port) with another.

use harbour_contract::env::{key_var, origins_var, FORM_KEY_VAR};
use harbour_e2e::person_key_var;

/// An origin's operations listener is on its port plus this.
const OPS_OFFSET: u16 = 1000;
use harbour_policy::Policy;

fn main() {
    let path = std::env::args_os()
        .nth(1)
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| harbour_e2e::workspace_root().join("wrangler.toml"));
    match local_origins(&path) {
        Ok(lines) => print!("{lines}"),
        Err(problems) => {
            for problem in problems {
                eprintln!("local-origins: {problem}");
            }
            std::process::exit(1);
        }
    }
}

fn local_origins(path: &std::path::Path) -> Result<String, Vec<String>> {
    let wrangler: toml::Table = std::fs::read_to_string(path)
        .map_err(|e| e.to_string())
        .and_then(|text| text.parse().map_err(|e: toml::de::Error| e.to_string()))
        .map_err(|e| vec![format!("{}: {e}", path.display())])?;
    let empty = toml::Table::new();
    let vars = wrangler
        .get("vars")
        .and_then(|v| v.as_table())
        .unwrap_or(&empty);
    let file = path.display();
    let policy = Policy::shipped().map_err(|e| vec![format!("policy/harbour.json: {e}")])?;
    let mut lines = String::new();
    let mut problems = Vec::new();
    let mut ports = Vec::new();
    for region in &policy.regions {
        lines.push_str(&format!("key {}\n", key_var(&region.id)));
        lines.push_str(&format!("person-key {}\n", person_key_var(&region.id)));
        let name = origins_var(&region.id);
        let Some(urls) = vars.get(&name).and_then(|v| v.as_str()) else {
            problems.push(format!(
                "{file} [vars] has no {name} for the policy's region {:?}",
                region.id
            ));
            continue;
        };
        for url in urls.split([' ', ',']).filter(|url| !url.is_empty()) {
            match loopback_port(url) {
                Some(port) if ports.contains(&port) => problems.push(format!(
                    "{file} [vars] {name}: port {port} of {url} is already another origin's"
                )),
                Some(port) => match port.checked_add(OPS_OFFSET) {
                    Some(ops) if !ports.contains(&ops) => {
                        ports.extend([port, ops]);
                        lines.push_str(&format!("origin {} {port} {ops}\n", region.id));
                    }
                    _ => problems.push(format!(
                        "{file} [vars] {name}: {url}'s operations port (port + {OPS_OFFSET}) is \
                         not free for it"
                    )),
                },
                None => problems.push(format!(
                    "{file} [vars] {name}: {url} is not http://127.0.0.1:<port>, so no \
                     local origin can be started for it"
                )),
            }
        }
    }
    lines.push_str(&format!("key {FORM_KEY_VAR}\n"));
    if problems.is_empty() {
        Ok(lines)
    } else {
        Err(problems)
    }
}

fn loopback_port(url: &str) -> Option<u16> {
    let port = url.strip_prefix("http://127.0.0.1:")?;
    port.strip_suffix('/').unwrap_or(port).parse().ok()
}
