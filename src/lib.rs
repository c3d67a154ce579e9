//! harbour: validates, rate-limits, tags with a data-residency region and forwards campaign
//! submissions at the edge.
//!
//! Everything but `edge` is plain Rust over plain data, tested natively. `edge` is the only
//! module that knows it runs in a Workers isolate.

/// The policy compiled in: `policy/harbour.json`, or the file `HARBOUR_POLICY` named at build
/// time (the bench's own), copied by build.rs after it passed the policy checks.
pub const SHIPPED_POLICY: &str = include_str!(concat!(env!("OUT_DIR"), "/policy.json"));

/// The policies build.rs checked, as code (`policy_code::rust_source`): `live()`, `candidate()`.
pub mod compiled {
    include!(concat!(env!("OUT_DIR"), "/compiled_policy.rs"));
}

pub mod admission;
pub mod breaker;
pub mod challenge;
pub mod config;
pub mod country;
pub mod field;
pub mod forward;
pub mod journal;
pub mod limit;
pub mod pipeline;
pub mod policy;
pub mod policy_code;
pub mod reply;
pub mod request;
pub mod residency;
pub mod screen;
pub mod shadow;
pub mod signature;
pub mod text;
pub mod utc;
pub mod validate;
pub mod wire;

#[cfg(target_arch = "wasm32")]
pub mod edge;

/// The module's heap: talc instead of std's dlmalloc, for a smaller module (2.2 KB gzip) at the
/// same decision time. An isolate runs one request at a time: the single-threaded variant.
#[cfg(all(target_arch = "wasm32", not(target_feature = "atomics")))]
#[global_allocator]
static HEAP: talc::wasm::WasmDynamicTalc = talc::wasm::new_wasm_dynamic_allocator();
