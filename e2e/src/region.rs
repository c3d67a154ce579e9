//! One region under test, for the tests that run the worker under `workerd serve` against a
//! single real origin (`tests/trap.rs`, `tests/location.rs`): the origin of the region a country
//! belongs to, on its own SQLite file, and the bindings that point the worker at it. The other
//! regions' origins are ports nothing listens on: no submission of such a test goes there.

use std::path::{Path, PathBuf};

use harbour_contract::env::{key_var, origins_var};
use harbour_policy::country::Country;
use harbour_policy::Policy;

use crate::origin::{OriginLaunch, OriginSecrets};
use crate::process::{free_port, Process};
use crate::rows::{read_rows, StoredRow};

pub struct RegionOrigin {
    pub region: String,
    pub port: u16,
    pub db: PathBuf,
    key: String,
    /// Every test's keys differ by this.
    tag: String,
    _process: Process,
}

impl RegionOrigin {
    /// The origin of the region `country` belongs to, its store and log in `dir`, started.
    pub fn start(dir: &Path, tag: &str, country: &str) -> RegionOrigin {
        let policy = Policy::shipped().expect("the shipped policy passes its checks");
        let country = Country::parse(country).expect("a country code");
        let region = policy.region(policy.region_of(country)).id.clone();
        let key = format!("{tag}-{region}-0123456789abcdefghijklmnopqrstuvwxyz");
        let db = dir.join("origin.sqlite");
        let launch = OriginLaunch {
            region: region.clone(),
            port: free_port(),
            ops_port: free_port(),
            store: db.display().to_string(),
            extra: Vec::new(),
            secrets: Some(OriginSecrets {
                key: key.clone(),
                person_key: format!("{tag}-person-{region}-0123456789abcdefghijklmnopqrstuvwxyz"),
            }),
        };
        let process = launch.start(&dir.join("origin.log"));
        RegionOrigin {
            region,
            port: launch.port,
            db,
            key,
            tag: tag.to_owned(),
            _process: process,
        }
    }

    /// Text bindings for every region of the policy: this region's origins are `first` (when
    /// given) and then this origin, with this region's key; every other region's is a port
    /// nothing listens on.
    pub fn bindings(&self, first: Option<u16>) -> Vec<(String, String)> {
        let policy = Policy::shipped().expect("the shipped policy passes its checks");
        let mut bindings = Vec::new();
        for other in &policy.regions {
            let (origins, key) = if other.id == self.region {
                let ports: Vec<String> = first
                    .into_iter()
                    .chain([self.port])
                    .map(|port| format!("http://127.0.0.1:{port}"))
                    .collect();
                (ports.join(" "), self.key.clone())
            } else {
                (
                    format!("http://127.0.0.1:{}", free_port()),
                    format!(
                        "{}-{}-0123456789abcdefghijklmnopqrstuvwxyz",
                        self.tag, other.id
                    ),
                )
            };
            bindings.push((origins_var(&other.id), origins));
            bindings.push((key_var(&other.id), key));
        }
        bindings
    }

    /// The rows it stored; an unreadable store fails the test.
    pub fn rows(&self) -> Vec<StoredRow> {
        read_rows(&self.db).unwrap_or_else(|e| panic!("{e}"))
    }
}
