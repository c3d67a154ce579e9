//! PostgreSQL for the harness: a server that `scripts/pg` started (its databases, and an outage
//! a test causes by stopping and restarting it), and a throwaway cluster on a free loopback port
//! that is destroyed on drop.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::project::workspace_root;

/// A PostgreSQL server started by `scripts/pg`, known by its cluster directory.
#[derive(Clone, Debug)]
pub struct PgServer {
    pub dir: PathBuf,
}

fn pg_script(args: &[&str]) -> String {
    let output = Command::new("bash")
        .arg(workspace_root().join("scripts/pg"))
        .args(args)
        .stderr(Stdio::inherit())
        .output()
        .unwrap_or_else(|e| panic!("scripts/pg {args:?}: {e}"));
    assert!(output.status.success(), "scripts/pg {args:?} failed");
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

impl PgServer {
    /// The URL of database `name`, created if missing.
    pub fn database(&self, name: &str) -> String {
        let dir = self.dir.display().to_string();
        pg_script(&["createdb", &dir, name]);
        pg_script(&["url", &dir, name])
    }

    /// Stops the server (fast shutdown: sessions are ended), as an outage would.
    pub fn stop(&self) {
        pg_script(&["stop", &self.dir.display().to_string()]);
    }

    /// Starts it again on the same port.
    pub fn restart(&self) {
        pg_script(&["start", &self.dir.display().to_string()]);
    }
}

/// A throwaway PostgreSQL cluster on a free loopback port (`scripts/pg`), destroyed on drop.
pub struct PgCluster {
    pub server: PgServer,
}

fn destroy(dir: &Path) {
    let _ = Command::new("bash")
        .arg(workspace_root().join("scripts/pg"))
        .args(["destroy", &dir.display().to_string()])
        .status();
}

impl PgCluster {
    pub fn start(dir: &Path) -> PgCluster {
        destroy(dir);
        pg_script(&["start", &dir.display().to_string()]);
        PgCluster {
            server: PgServer {
                dir: dir.to_path_buf(),
            },
        }
    }
}

impl std::ops::Deref for PgCluster {
    type Target = PgServer;
    fn deref(&self) -> &PgServer {
        &self.server
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        destroy(&self.dir);
    }
}
