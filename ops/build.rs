//! uPlot, the charts library of the live view and the broadcast report, comes from npm
//! (`package.json`, exact version, installed by `scripts/setup`'s `npm ci`): its built files are
//! copied from `node_modules/uplot/dist` into the build and compiled into the binaries, so the
//! commands serve it themselves and a report carries it inline. Nothing minified is committed.

use std::path::PathBuf;

const FILES: [&str; 2] = ["uPlot.iife.min.js", "uPlot.min.css"];

fn main() {
    let manifest = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_default());
    let dist = manifest.join("../node_modules/uplot/dist");
    let out = PathBuf::from(std::env::var_os("OUT_DIR").unwrap_or_default());
    println!("cargo:rerun-if-changed={}", dist.display());
    for file in FILES {
        let from = dist.join(file);
        println!("cargo:rerun-if-changed={}", from.display());
        if let Err(e) = std::fs::copy(&from, out.join(file)) {
            println!(
                "cargo:warning={}: {e}; run `bash scripts/setup` (npm ci installs uplot from package-lock.json)",
                from.display()
            );
            std::process::exit(1);
        }
    }
}
