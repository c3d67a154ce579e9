//! The files that define the project as the harness sees it: the workspace root and
//! `wrangler.toml`, whose `compatibility_date` every configuration the harness writes (for
//! `wrangler dev` or `workerd serve`) takes, and whose `[vars]` name the local origins.

use std::path::{Path, PathBuf};

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("e2e/ is inside the workspace")
        .to_path_buf()
}

/// The workspace's `wrangler.toml`, parsed.
pub fn wrangler_toml(path: &Path) -> Result<toml::Table, String> {
    std::fs::read_to_string(path)
        .map_err(|e| e.to_string())
        .and_then(|text| text.parse().map_err(|e: toml::de::Error| e.to_string()))
        .map_err(|e| format!("{}: {e}", path.display()))
}

/// `compatibility_date` of the workspace's `wrangler.toml`: what the deployed worker runs with,
/// so what every worker the harness serves runs with.
pub fn compatibility_date() -> String {
    let path = workspace_root().join("wrangler.toml");
    let wrangler = wrangler_toml(&path).unwrap_or_else(|e| panic!("{e}"));
    wrangler
        .get("compatibility_date")
        .and_then(|v| v.as_str())
        .unwrap_or_else(|| panic!("{} has no compatibility_date", path.display()))
        .to_owned()
}
