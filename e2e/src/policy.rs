//! What the harness reads from the shipped policy: its regions (the only list of regions: every
//! helper that starts one origin per region iterates it) and the location's rate-limiting
//! bindings it needs, written out for `wrangler dev`.

/// The shipped policy's region ids, in its order.
pub fn regions() -> Vec<String> {
    harbour_policy::Policy::shipped()
        .expect("the shipped policy passes its checks")
        .regions
        .into_iter()
        .map(|region| region.id)
        .collect()
}

/// The rate-limiting bindings the shipped policy needs, with the limits it gives them.
pub fn location_limits() -> Vec<harbour_policy::quota::LocationLimit> {
    harbour_core::phase::admission::location_limits(
        &harbour_policy::Policy::shipped().expect("the shipped policy passes its checks"),
    )
}

/// `[[ratelimits]]` for a `wrangler.toml` that `wrangler dev` simulates: every binding the policy
/// needs, with its limit and period.
pub fn wrangler_ratelimits() -> String {
    location_limits()
        .iter()
        .enumerate()
        .map(|(i, l)| {
            format!(
                "[[ratelimits]]\nname = \"{}\"\nnamespace_id = \"{}\"\nsimple = {{ limit = {}, period = {} }}\n\n",
                l.binding_name(),
                9001 + i,
                l.limit,
                l.period_s
            )
        })
        .collect()
}
