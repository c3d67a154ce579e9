//! Where a region's store is, as an origin or a command is told it.

use std::path::PathBuf;

/// Where the store is, as given on the command line (`--store`, `--db`) or in `HARBOUR_STORE`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Location {
    Sqlite(PathBuf),
    /// A libpq-style URL (`postgres://user@host:port/db?options`).
    Postgres(String),
}

impl Location {
    /// `postgres://…` / `postgresql://…`, `sqlite:PATH`, or a bare path (SQLite).
    pub fn parse(text: &str) -> Result<Location, String> {
        let text = text.trim();
        if text.is_empty() {
            return Err("the store location is empty".into());
        }
        if text.starts_with("postgres://") || text.starts_with("postgresql://") {
            return Ok(Location::Postgres(text.to_owned()));
        }
        if let Some((scheme, _)) = text.split_once("://") {
            return Err(format!(
                "unknown store scheme {scheme:?}: use postgres://… or a SQLite file path"
            ));
        }
        let path = text.strip_prefix("sqlite:").unwrap_or(text);
        Ok(Location::Sqlite(PathBuf::from(path)))
    }

    /// For logs: the kind and where, without a password.
    pub fn describe(&self) -> String {
        match self {
            Location::Sqlite(path) => format!("sqlite:{}", path.display()),
            Location::Postgres(url) => redact_password(url),
        }
    }
}

fn redact_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split(':').next().unwrap_or("");
            let hidden = if userinfo.contains(':') { ":***" } else { "" };
            format!("{scheme}://{user}{hidden}@{host}{tail}")
        }
        None => url.to_owned(),
    }
}
