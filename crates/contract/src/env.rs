//! The environment variables the edge and the origins read, per region `R` (the region's id
//! upper-cased, `-` as `_`):
//!
//! - `HARBOUR_ORIGINS_R`: the region's origin base URLs, primary first (the edge);
//! - `HARBOUR_KEY_R`: the region's signing secret (the edge signs, the region's origins verify);
//! - `HARBOUR_PERSON_KEY_R`: the key of the one-entry-per-person digest (origins only; the edge
//!   never holds it);
//! - `HARBOUR_INGRESS_R`: where the region's ingress (the policy's hostname for its submissions)
//!   answers on this machine, e.g. `http://cn.localhost:8787` (the edge, local stacks and tests
//!   only: a deployment serves the policy's own hostname);
//!
//! per campaign `C` (its id upper-cased, `-` as `_`):
//!
//! - `HARBOUR_DRAW_KEY_C`: the key of the person digest a global draw compares across regions
//!   (every region's origins hold the same value; the edge never does);
//!
//! and once, `HARBOUR_FORM_KEY`: the secret that vouches for the proof-of-work challenges (the
//! edge only; never a region's signing secret); on an origin host, `HARBOUR_STORE`: where the
//! region's store is (a PostgreSQL URL may hold a password) when no `--store` or `--db` says.

/// The form key's variable.
pub const FORM_KEY_VAR: &str = "HARBOUR_FORM_KEY";

/// Where an origin host's store is (the origin and the region's commands).
pub const STORE_VAR: &str = "HARBOUR_STORE";

pub fn origins_var(region_id: &str) -> String {
    format!("HARBOUR_ORIGINS_{}", suffix(region_id))
}

pub fn key_var(region_id: &str) -> String {
    format!("HARBOUR_KEY_{}", suffix(region_id))
}

pub fn ingress_var(region_id: &str) -> String {
    format!("HARBOUR_INGRESS_{}", suffix(region_id))
}

pub fn person_key_var(region_id: &str) -> String {
    format!("HARBOUR_PERSON_KEY_{}", suffix(region_id))
}

pub fn draw_key_var(campaign_id: &str) -> String {
    format!("HARBOUR_DRAW_KEY_{}", suffix(campaign_id))
}

fn suffix(region_id: &str) -> String {
    region_id.to_ascii_uppercase().replace('-', "_")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_region_id() {
        assert_eq!(origins_var("eu"), "HARBOUR_ORIGINS_EU");
        assert_eq!(key_var("rest-of-world"), "HARBOUR_KEY_REST_OF_WORLD");
        assert_eq!(person_key_var("cn"), "HARBOUR_PERSON_KEY_CN");
        assert_eq!(
            draw_key_var("spring-launch"),
            "HARBOUR_DRAW_KEY_SPRING_LAUNCH"
        );
        assert_eq!(
            ingress_var("rest-of-world"),
            "HARBOUR_INGRESS_REST_OF_WORLD"
        );
    }
}
