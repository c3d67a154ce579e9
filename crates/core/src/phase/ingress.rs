//! Ingress: whether the hostname a submission arrived on may process it.
//!
//! A region whose policy names an ingress (`harbour_policy::ingress`) has its submissions taken on
//! that hostname alone, whose zone keeps the processing in the region; the other regions' are
//! taken on the campaign's main hostname, which is any host that is no region's ingress. So:
//!
//! - on a region's ingress, only that region's submissions go on;
//! - on any other host, only the submissions of regions without an ingress go on;
//! - anything else is answered 421 Misdirected Request (RFC 9110 §15.5.20), `wrong_ingress`, with
//!   `submit`: where the submission belongs. That is an absolute URL for an ingress, and the path
//!   alone for the main hostname, which the edge never learns: it is the campaign page's own.
//!
//! The phase runs right after classify: placing a submission needs its two country signals and
//! nothing more, and nothing after placing (limits, the location's binding, the origins) ever sees
//! a misdirected one. A refused submission was read where it arrived, as every request is; the
//! page asks the form description where to send each country's entries, so only a client that
//! ignores it (or a visitor whose network moved them between two requests) meets this answer.
//!
//! Examples, with `cn` on `cn.campaign.example` and `eu` without an ingress: an entry placed in
//! `eu` sent to `cn.campaign.example` is refused naming `/api/campaigns/{id}/submissions`; one
//! placed in `cn` sent to `campaign.example` is refused naming
//! `https://cn.campaign.example/api/campaigns/{id}/submissions`; one placed in `cn` sent to
//! `cn.campaign.example`, or in `eu` to `campaign.example`, goes on.

use crate::config::Config;
use crate::outcome::Outcome;
use crate::reply::{problem, Answer, Flow, Phase};
use harbour_policy::text::quoted;
use harbour_policy::RegionIndex;

/// Which of harbour's hostnames a request arrived on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arrival {
    /// Any host that is no region's ingress.
    Main,
    /// The ingress of this region.
    Ingress(RegionIndex),
}

impl Arrival {
    /// The hostname of a request's URL, compared with each region's ingress.
    pub fn of(config: &Config, url: &str) -> Arrival {
        let host = host_of(url);
        config
            .policy
            .region_indices()
            .find(|r| config.ingress(*r).is_some_and(|site| site.host == host))
            .map_or(Arrival::Main, Arrival::Ingress)
    }
}

/// The host of a URL, lower case, without port, user part or a trailing dot; IPv6 in brackets.
fn host_of(url: &str) -> String {
    let rest = url.find("://").map_or(url, |i| &url[i + 3..]);
    let authority = &rest[..rest.find(['/', '?', '#']).unwrap_or(rest.len())];
    let authority = authority.rsplit('@').next().unwrap_or(authority);
    let host = match authority.rfind(':') {
        Some(colon) if !authority[colon..].contains(']') => &authority[..colon],
        _ => authority,
    };
    host.trim_end_matches('.').to_ascii_lowercase()
}

/// Where a submission to `campaign` placed in `region` is sent: its region's ingress, or the
/// main hostname's path (relative: the page's own host) for a region without one, or when
/// nothing is placed yet.
pub fn submit_url(config: &Config, campaign: &str, region: Option<RegionIndex>) -> String {
    let base = region
        .and_then(|r| config.ingress(r))
        .map_or("", |site| site.base.as_str());
    format!("{base}/api/campaigns/{campaign}/submissions")
}

/// The ingress phase: go on when `arrival` is where submissions placed in `region` are taken,
/// 421 `wrong_ingress` naming that place otherwise.
pub fn ingress(config: &Config, campaign: &str, arrival: Arrival, region: RegionIndex) -> Flow<()> {
    let belongs = match config.ingress(region) {
        Some(_) => Arrival::Ingress(region),
        None => Arrival::Main,
    };
    if arrival == belongs {
        return Flow::Continue(());
    }
    let submit = submit_url(config, campaign, Some(region));
    let reply = problem(
        421,
        Outcome::WrongIngress,
        "Send this entry to its region's address",
        "entries stored in this region are taken at another address; send it there (submit), unchanged",
        &[
            ("region", quoted(&config.policy.region(region).id)),
            ("submit", quoted(&submit)),
        ],
    );
    Flow::Break(Answer::new(Phase::Ingress, reply))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tests::ingress_policy;
    use crate::config::Config;

    fn config() -> Config {
        Config::local(&ingress_policy(), 9100).unwrap()
    }

    #[test]
    fn hosts_compare_without_case_port_or_trailing_dot() {
        for (url, host) in [
            ("https://CN.Campaign.Example/api", "cn.campaign.example"),
            (
                "https://cn.campaign.example.:443/api?x#y",
                "cn.campaign.example",
            ),
            ("http://cn.localhost:8787", "cn.localhost"),
            ("http://u:p@cn.localhost:8787/", "cn.localhost"),
            ("http://[::1]:8787/api", "[::1]"),
            ("https://campaign.example?q=a:b", "campaign.example"),
        ] {
            assert_eq!(host_of(url), host, "{url}");
        }
        let config = config();
        let cn = config.policy.region_index("cn").unwrap();
        let arrival = |url| Arrival::of(&config, url);
        assert_eq!(
            arrival("https://cn.campaign.example./api"),
            Arrival::Ingress(cn)
        );
        assert_eq!(arrival("https://campaign.example/api"), Arrival::Main);
        assert_eq!(arrival("https://xcn.campaign.example/api"), Arrival::Main);
        assert_eq!(
            arrival("https://cn.campaign.example.evil.example/api"),
            Arrival::Main
        );
    }

    #[test]
    fn each_region_is_taken_where_its_policy_says_and_nowhere_else() {
        let config = config();
        let region = |id| config.policy.region_index(id).unwrap();
        let (cn, eu, ru) = (region("cn"), region("eu"), region("ru"));
        let table = [
            (Arrival::Ingress(cn), cn, None),
            (Arrival::Ingress(eu), eu, None),
            (Arrival::Main, ru, None),
            (
                Arrival::Main,
                cn,
                Some("https://cn.campaign.example/api/campaigns/c/submissions"),
            ),
            (
                Arrival::Main,
                eu,
                Some("https://eu.campaign.example/api/campaigns/c/submissions"),
            ),
            (
                Arrival::Ingress(eu),
                cn,
                Some("https://cn.campaign.example/api/campaigns/c/submissions"),
            ),
            (
                Arrival::Ingress(cn),
                ru,
                Some("/api/campaigns/c/submissions"),
            ),
        ];
        for (arrival, placed, refused) in table {
            let flow = ingress(&config, "c", arrival, placed);
            match (flow, refused) {
                (Flow::Continue(()), None) => {}
                (Flow::Break(answer), Some(submit)) => {
                    assert_eq!(
                        (answer.phase, answer.reply.status, answer.outcome),
                        (Phase::Ingress, 421, Outcome::WrongIngress)
                    );
                    let body: serde_json::Value = serde_json::from_str(&answer.reply.body).unwrap();
                    assert_eq!(body["code"], "wrong_ingress");
                    assert_eq!(body["submit"], submit);
                    assert_eq!(body["region"], config.policy.region(placed).id);
                }
                (flow, refused) => {
                    panic!("{arrival:?} / {placed:?}: {flow:?}, expected {refused:?}")
                }
            }
        }
    }

    #[test]
    fn submit_urls_name_the_ingress_or_the_pages_own_host() {
        let config = config();
        let region = |id| config.policy.region_index(id);
        assert_eq!(
            submit_url(&config, "c", region("cn")),
            "https://cn.campaign.example/api/campaigns/c/submissions"
        );
        assert_eq!(
            submit_url(&config, "c", region("au")),
            "/api/campaigns/c/submissions"
        );
        assert_eq!(
            submit_url(&config, "c", None),
            "/api/campaigns/c/submissions"
        );
    }
}
