//! Regional ingress: the hostname on which a region's submissions are taken, and the platform
//! product that keeps the processing on it inside the region.
//!
//! Without an ingress, a submission is read and decided in whichever Cloudflare location serves
//! the visitor: for a visitor in mainland China that location is outside China, for one in the
//! EU most likely (not certainly) in the EU. A region that names an ingress is served only on
//! its own hostname, in a zone whose settings keep it in the region:
//!
//! - `regional_services`: the hostname is a Workers custom domain with Regional Services (a
//!   regional hostname) set to the region's own processing region, e.g. the EU;
//! - `china_network`: the hostname's zone is on Cloudflare's China Network (which needs an ICP
//!   filing), so mainland China's visitors are served in mainland China.
//!
//! The policy can name the product; it cannot see the zone. The edge takes a region's submissions
//! on its hostname only, and refuses them anywhere else (see harbour-core's `phase::ingress`).
//!
//! The host is a lower-case DNS name of at least two labels (`cn.campaign.example`), without a
//! scheme, port, path or trailing dot: the edge compares it with the host of each request.

/// What keeps the processing of a region's ingress inside the region.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeptInRegionBy {
    /// Regional Services on the hostname (a Workers custom domain).
    RegionalServices,
    /// The zone is on the China Network (mainland China only).
    ChinaNetwork,
}

impl KeptInRegionBy {
    pub const ALL: [KeptInRegionBy; 2] = [
        KeptInRegionBy::RegionalServices,
        KeptInRegionBy::ChinaNetwork,
    ];

    /// Its name in the policy.
    pub fn as_str(self) -> &'static str {
        match self {
            KeptInRegionBy::RegionalServices => "regional_services",
            KeptInRegionBy::ChinaNetwork => "china_network",
        }
    }

    pub fn parse(name: &str) -> Option<KeptInRegionBy> {
        KeptInRegionBy::ALL.into_iter().find(|k| k.as_str() == name)
    }
}

/// A region's ingress as the policy names it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ingress {
    /// The hostname that serves the region's submissions.
    pub host: String,
    pub kept_in_region_by: KeptInRegionBy,
}

/// What is wrong with `host` as an ingress hostname, if anything.
pub fn host_problem(host: &str) -> Option<String> {
    let labels: Vec<&str> = host.split('.').collect();
    let label_ok = |label: &&str| {
        (1..=63).contains(&label.len())
            && label
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !label.starts_with('-')
            && !label.ends_with('-')
    };
    if host.len() > 253 || labels.len() < 2 || !labels.iter().all(label_ok) {
        return Some(format!(
            "{host:?} is not a hostname: lower-case labels of a-z 0-9 - joined by dots (cn.campaign.example), without a scheme, port or path"
        ));
    }
    // The last label of a DNS name is never all digits: that is an address, not a zone's host.
    if labels
        .last()
        .is_some_and(|l| l.bytes().all(|b| b.is_ascii_digit()))
    {
        return Some(format!(
            "{host:?} is an address; an ingress is a hostname in a zone"
        ));
    }
    if labels.last() == Some(&"localhost") {
        return Some(format!(
            "{host:?} is this machine; the policy names the deployed hostname (HARBOUR_INGRESS_<REGION> simulates it locally)"
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn products_parse_by_their_policy_names() {
        for kept in KeptInRegionBy::ALL {
            assert_eq!(KeptInRegionBy::parse(kept.as_str()), Some(kept));
        }
        assert_eq!(KeptInRegionBy::parse("regional-services"), None);
    }

    #[test]
    fn hosts_are_plain_lower_case_names() {
        for good in ["cn.campaign.example", "eu-1.a.example", "x1.example"] {
            assert_eq!(host_problem(good), None, "{good}");
        }
        for bad in [
            "",
            "example",
            "Cn.campaign.example",
            "https://cn.campaign.example",
            "cn.campaign.example:443",
            "cn.campaign.example/",
            "cn.campaign.example.",
            "-cn.example",
            "cn-.example",
            "cn..example",
            "10.0.0.1",
            "cn.localhost",
        ] {
            assert!(host_problem(bad).is_some(), "{bad:?} accepted");
        }
        assert!(host_problem(&format!("{}.example", "a".repeat(64))).is_some());
    }
}
