//! harbour's Workers shell: the JS entry (`shim.js`) moves bytes, `harbour_core` makes every
//! decision, and this crate connects the two with as few Rust↔JS crossings as possible. It is the
//! only crate that names the platform (`wasm_bindgen`, `js_sys`).
//!
//! Its build.rs compiles the checked policy in as code (`compiled`); `shell` is the JS-facing
//! surface (wasm32 only); `wire` is the line protocol both sides of the boundary speak.

/// The policy build.rs checked and compiled in, as JSON: `policy/harbour.json`, or the file
/// `HARBOUR_POLICY` named at build time (the bench's own).
pub const COMPILED_POLICY_JSON: &str = include_str!(concat!(env!("OUT_DIR"), "/policy.json"));

/// The candidate policy build.rs compiled in beside it, as JSON, if there is one.
pub const COMPILED_CANDIDATE_JSON: Option<&str> = if cfg!(harbour_candidate) {
    Some(include_str!(concat!(env!("OUT_DIR"), "/candidate.json")))
} else {
    None
};

/// The policies build.rs checked, as code (`harbour_policy::code::rust_source`).
mod generated {
    include!(concat!(env!("OUT_DIR"), "/compiled_policy.rs"));
}

pub mod compiled;
#[cfg(target_arch = "wasm32")]
pub mod shell;
pub mod wire;

/// The module's heap: talc instead of std's dlmalloc, for a smaller module (2.2 KB gzip) at the
/// same decision time. An isolate runs one request at a time: the single-threaded variant.
#[cfg(all(target_arch = "wasm32", not(target_feature = "atomics")))]
#[global_allocator]
static HEAP: talc::wasm::WasmDynamicTalc = talc::wasm::new_wasm_dynamic_allocator();
