//! The policy parser on arbitrary text: an error or a policy, never a panic.
#![no_main]

use harbour_policy::Policy;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(policy) = Policy::parse(text) {
            for country in harbour_policy::country::Country::all() {
                let _ = policy.region(policy.region_of(country));
            }
        }
    }
});
