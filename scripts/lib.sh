# Shared settings for harbour's scripts. Source it; it changes nothing by itself.
# shellcheck shell=bash
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# Installs that outlive a clone (cargo-installed tools) live here, so a second run is fast.
HARBOUR_CACHE="${HARBOUR_CACHE:-$HOME/.cache/harbour}"
TOOLS="$HARBOUR_CACHE/tools"
WORKER_BUILD_VERSION="0.8.7"

export PATH="$TOOLS/bin:$HOME/.cargo/bin:$ROOT/node_modules/.bin:$PATH"
# worker-build would download these from GitHub; point it at the ones setup installed.
export WASM_BINDGEN_BIN="$TOOLS/bin/wasm-bindgen"
export WASM_OPT_BIN="$ROOT/node_modules/.bin/wasm-opt"
export ESBUILD_BIN="$ROOT/node_modules/.bin/esbuild"
export WRANGLER_SEND_METRICS=false
export CI="${CI:-}"

say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

# The wasm-bindgen version Cargo.lock pins; the CLI must match it exactly.
wasm_bindgen_version() {
  awk '/^name = "wasm-bindgen"$/ { getline; gsub(/version = |"/, ""); print; exit }' "$ROOT/Cargo.lock"
}
