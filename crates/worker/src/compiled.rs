//! The policies the build compiled in (see build.rs), built from code rather than parsed: the
//! worker carries no policy parser and none of the checks.

use harbour_policy::{Issue, Policy, PolicyError, LIVE_FILE};

use crate::generated;

/// The live policy as build.rs compiled it in after its checks: what `Policy::parse` reads from
/// `COMPILED_POLICY_JSON`, without a JSON parser or the checks in the worker.
pub fn live() -> Result<Policy, PolicyError> {
    generated::live().ok_or_else(not_compiled)
}

/// The candidate policy as build.rs compiled it in, if there is one (see `live`).
pub fn candidate() -> Option<Result<Policy, PolicyError>> {
    crate::COMPILED_CANDIDATE_JSON.map(|_| generated::candidate().ok_or_else(not_compiled))
}

/// What the build checked cannot fail to build again; if it did, this says so.
fn not_compiled() -> PolicyError {
    PolicyError(vec![Issue {
        path: LIVE_FILE.into(),
        message: "the compiled-in policy does not hold what its checks passed".into(),
    }])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{COMPILED_CANDIDATE_JSON, COMPILED_POLICY_JSON};

    #[test]
    fn the_compiled_policy_is_the_one_its_json_reads_as() {
        assert_eq!(live(), Policy::parse(COMPILED_POLICY_JSON));
        assert!(live().is_ok());
    }

    #[test]
    fn the_compiled_candidate_is_the_candidate_file() {
        assert_eq!(candidate(), COMPILED_CANDIDATE_JSON.map(Policy::parse));
    }
}
