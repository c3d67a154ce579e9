//! The residency report, `docs/residency.md`: what harbour does with a visitor's country, written
//! from the policy by the code that decides at the edge, for a data-protection officer to read
//! without reading code.
//!
//! Nothing in it is written by hand that the code can tell: each country's region comes from
//! `Policy::region_of`, each worked example from `residency::place`, what leaves the edge from a
//! sample submission run through the real pipeline, and what is logged from real log lines. Where
//! the code shows something this tool has no words for (a new body member, a new log key), it
//! refuses to write the report rather than leave it out.

pub mod names;

use std::fmt::Write as _;

use harbour_contract::env::{key_var, origins_var};
use harbour_contract::http::{HEADER_IDEMPOTENCY_KEY, HEADER_SIGNATURE};
use harbour_core::attempt::{ATTEMPT_TIMEOUT_MS, DEADLINE_MS};
use harbour_core::config::{Config, LogMode};
use harbour_core::journal::{Journal, LogRecord, SUMMARY_WINDOW_MS};
use harbour_core::outcome::Outcome;
use harbour_core::phase::admission::LocationResult;
use harbour_core::phase::challenge;
use harbour_core::phase::ingress::submit_url;
use harbour_core::phase::request::{Body, Facts};
use harbour_core::phase::residency::{
    moved_by_declared, place, Basis, PlatformCountry, Residency, Unplaceable,
};
use harbour_core::pipeline::{Pipeline, Seeds, Verdict};
use harbour_core::reply::Phase;
use harbour_core::shadow::{Comparison, View};
use harbour_policy::country::Country;
use harbour_policy::field::FieldKind;
use harbour_policy::ingress::KeptInRegionBy;
use harbour_policy::notice::DrawScope;
use harbour_policy::quota::Quota;
use harbour_policy::{
    Campaign, FailMode, OnConflict, Policy, RegionIndex, SignalAction, CANDIDATE_FILE,
};
use serde_json::Value;

/// Where the report is committed, relative to the repository root.
pub const REPORT_PATH: &str = "docs/residency.md";

/// The report for the live policy text and, if there is one, the candidate's.
pub fn render(live_json: &str, candidate_json: Option<&str>) -> Result<String, String> {
    let policy = Policy::parse(live_json).map_err(|e| e.to_string())?;
    let candidate = candidate_json
        .map(Policy::parse)
        .transpose()
        .map_err(|e| format!("{CANDIDATE_FILE}: {e}"))?;
    let mut out = String::new();
    intro(&mut out, &policy);
    regions(&mut out, &policy);
    countries(&mut out, &policy)?;
    conflicts(&mut out, &policy)?;
    doubtful_signals(&mut out, &policy)?;
    failover(&mut out, &policy);
    where_processing_happens(&mut out, &policy);
    what_leaves_the_edge(&mut out, live_json, &policy)?;
    what_is_logged(&mut out)?;
    notices(&mut out, &policy);
    retention(&mut out, &policy);
    draws(&mut out, &policy);
    limits(&mut out, &policy);
    shadow(&mut out, &policy, candidate.as_ref())?;
    Ok(out)
}

fn intro(out: &mut String, policy: &Policy) {
    let row = &policy.region(policy.rest_of_world).id;
    let laws: Vec<String> = law_regions(policy)
        .map(|r| format!("`{}`", policy.region(r).id))
        .collect();
    let _ = write!(
        out,
        "# Data residency: where a visitor's entry may go\n\n\
         _Generated from `policy/harbour.json` by `bash scripts/report`, with the code that decides \
         at the edge. Do not edit: `bash scripts/test` fails when this file differs from what the \
         policy generates._\n\n\
         harbour decides at the edge, before anything is stored, which region's law an entry falls \
         under, and sends it only to that region's origins (its storage servers). The regions with \
         a law of their own are {laws}; every other country belongs to the rest-of-world region \
         `{row}`.\n\n\
         - **The country the platform sees is the one trusted.** Cloudflare determines it from the \
         visitor's connection (`request.cf.country`). Headers a visitor can set (`CF-IPCountry`, \
         `X-Forwarded-For`, `X-Real-IP`, ...) are ignored.\n\
         - **A campaign may also ask the visitor for their country** (a field marked as the \
         residency signal). That is a second signal; when it points to another region, the \
         conflict rule below decides.\n\
         - **An entry goes to one region only**: its first origin, and on failure only that \
         region's other origins, never another region's.\n\n",
        laws = join_and(&laws),
    );
    if policy.on_conflict == OnConflict::Stricter {
        out.push_str(
            "> **This policy uses the `stricter` conflict rule.** When the country a visitor \
             declares falls in a stricter region than the country they connect from, their entry \
             is stored in that stricter region, under its law — an EU visitor who chooses China \
             is stored in China. The visitor is told where and must confirm it first (see \
             below), but the choice of jurisdiction is theirs to make in a dropdown.\n\n",
        );
    }
}

fn regions(out: &mut String, policy: &Policy) {
    out.push_str(
        "## Regions\n\n\
         The strictness rank orders regions for the `stricter` conflict rule (higher is \
         stricter); the variables name where each deployment sets the region's origin addresses \
         and signing key. Their values are not part of this report.\n\n\
         | Region | Law of its own | Strictness rank | Countries | Origin variable | Signing-key variable |\n\
         | --- | --- | ---: | ---: | --- | --- |\n",
    );
    for (i, region) in policy.regions.iter().enumerate() {
        let index = region_index(policy, i);
        let law = if policy.has_own_law(index) {
            "yes"
        } else {
            "rest of the world: every country no other region lists, each under its own law (the \
             UK's GDPR, Brazil's LGPD, ...), stored together"
        };
        let count = all_countries()
            .filter(|c| policy.region_of(*c) == index)
            .count();
        let _ = writeln!(
            out,
            "| `{}` | {law} | {} | {count} | `{}` | `{}` |",
            region.id,
            region.strictness,
            origins_var(&region.id),
            key_var(&region.id)
        );
    }
    out.push('\n');
}

fn countries(out: &mut String, policy: &Policy) -> Result<(), String> {
    let total = all_countries().count();
    let _ = write!(
        out,
        "## Countries per region\n\n\
         Every country code the platform can report ({total}: the 249 ISO 3166-1 codes and `XK`, \
         Kosovo, a code ISO leaves to users that the platform reports) is in exactly one region. \
         A region's list names the countries its entry in the policy lists; the rest-of-world \
         region also takes every country no region lists.\n\n"
    );
    for (i, region) in policy.regions.iter().enumerate() {
        let index = region_index(policy, i);
        let members: Vec<Country> = all_countries()
            .filter(|c| policy.region_of(*c) == index)
            .collect();
        let title = if policy.has_own_law(index) {
            String::new()
        } else {
            ", the rest of the world".into()
        };
        let count = match members.len() {
            1 => "1 country".to_owned(),
            n => format!("{n} countries"),
        };
        let _ = write!(out, "### `{}`{title} ({count})\n\n", region.id);
        for country in members {
            let listed = if !policy.has_own_law(index) && region.countries.contains(&country) {
                " (listed explicitly)"
            } else {
                ""
            };
            let _ = writeln!(out, "- `{country}` {}{listed}", name(country)?);
        }
        out.push('\n');
    }
    Ok(())
}

/// Reads a UTC instant for people.
fn day(ms: u64) -> String {
    harbour_policy::utc::format_ms(ms)
}

fn notices(out: &mut String, policy: &Policy) {
    out.push_str(
        "## What visitors are told, and the record of their consent\n\n\
         The campaign page shows each campaign's notice beside its form, in the visitor's \
         language: who collects the entry and how to reach them, why, where the entry will be \
         stored for the country the visitor chooses (worked out by the edge's own rule), how \
         long it is kept, and a link to the full notice (GDPR Art. 13, PIPL Art. 17). Every \
         entry carries the **version** of the notice it was made under — a digest of the \
         notice, the retention rule and the consent boxes' labels in that language — and the \
         language; the edge refuses an entry made under any other version, and the origin \
         stores both with the entry, which is the controller's record of what the visitor saw \
         and agreed to (GDPR Art. 7(1)). Agreeing to marketing is a box of its own that is \
         never required (GDPR Art. 7(4)); it is withdrawn with the origin's `withdraw` \
         command.\n\n",
    );
    for campaign in &policy.campaigns {
        let n = &campaign.notice;
        let _ = write!(
            out,
            "### Campaign `{}`\n\n\
             - Controller: {}\n\
             - Contact: {}\n\
             - Full notice: <{}>\n\
             - Entries are deleted {} days after the campaign ends ({}).\n\n\
             | Language | Version | Purpose | Consent boxes |\n| --- | --- | --- | --- |\n",
            campaign.id,
            n.controller,
            n.contact,
            n.link,
            campaign.retention_days,
            day(campaign.ends_ms)
        );
        for locale in harbour_policy::LOCALES {
            let boxes: Vec<String> = campaign
                .fields
                .iter()
                .filter(|f| f.kind == FieldKind::Bool)
                .map(|f| {
                    let kind = if f.marketing_consent {
                        "marketing, optional"
                    } else if f.must_be_true {
                        "required to enter"
                    } else {
                        "optional"
                    };
                    format!(
                        "`{}` ({kind}): {}",
                        f.name,
                        campaign.label(&f.name, locale).unwrap_or("")
                    )
                })
                .collect();
            let _ = writeln!(
                out,
                "| `{locale}` | `{}` | {} | {} |",
                campaign.notice_version(locale),
                n.purpose(locale),
                boxes.join("<br>")
            );
        }
        out.push('\n');
    }
}

fn retention(out: &mut String, policy: &Policy) {
    out.push_str(
        "## How long entries are kept\n\n\
         Each region's origins delete their own expired entries, in batches, and log only how \
         many they deleted; nothing leaves the region to be deleted. An entry, its person \
         digest, its fields' digest and its idempotency key go together (GDPR Art. 5(1)(e), \
         PIPL Art. 19 and 47, APP 11.2).\n\n\
         | Campaign | Ends (UTC) | Deleted after (days) | Deleted from (UTC) |\n| --- | --- | ---: | --- |\n",
    );
    for c in &policy.campaigns {
        let _ = writeln!(
            out,
            "| `{}` | {} | {} | {} |",
            c.id,
            day(c.ends_ms),
            c.retention_days,
            day(c.delete_after_ms())
        );
    }
    out.push('\n');
}

fn draws(out: &mut String, policy: &Policy) {
    out.push_str(
        "## Drawing winners\n\n\
         A draw picks its winners from a seed published after the campaign closes: each entry's \
         ticket is HMAC-SHA256(seed, receipt id), the lowest tickets win, one entry per person. \
         Anyone holding the seed and a region's receipt ids can run it again and get the same \
         winners.\n\n",
    );
    for c in &policy.campaigns {
        let Some(draw) = &c.draw else {
            let _ = writeln!(out, "- `{}`: no draw.", c.id);
            continue;
        };
        match &draw.scope {
            DrawScope::PerRegion => {
                let _ = writeln!(
                    out,
                    "- `{}`: **per region**, {} winner(s) in each region, drawn by each region's \
                     origins from their own store. Nothing crosses a border.",
                    c.id, draw.winners
                );
            }
            DrawScope::Global { excluded } => {
                let taking: Vec<String> = policy
                    .regions
                    .iter()
                    .filter(|r| !excluded.contains(&r.id))
                    .map(|r| format!("`{}`", r.id))
                    .collect();
                let left: Vec<String> = excluded.iter().map(|r| format!("`{r}`")).collect();
                let _ = writeln!(
                    out,
                    "- `{}`: **global**, {} winner(s) in all. The regions {} each send their \
                     {} lowest tickets to one merge, each with a pseudonymous person digest \
                     (HMAC with a per-campaign draw key that every region's origins hold and \
                     the edge never does) so a person who entered in several regions counts \
                     once; no field value crosses a border. The merge names the winners' \
                     receipt ids and regions, and each region looks its winners up locally.{}",
                    c.id,
                    draw.winners,
                    join_and(&taking),
                    draw.winners,
                    if left.is_empty() {
                        String::new()
                    } else {
                        format!(
                            " {} take(s) no part: nothing of theirs leaves them.",
                            join_and(&left)
                        )
                    }
                );
            }
        }
    }
    out.push('\n');
}

fn rule_text(rule: OnConflict) -> &'static str {
    match rule {
        OnConflict::Refuse => {
            "When the two regions both have a law of their own, the entry is **refused**: the \
             visitor sees an error next to the country field (422, `residency_conflict`) and \
             nothing is sent anywhere. A choice in a form must not move a visitor's data into \
             another jurisdiction, in either direction. When one of the two is the rest-of-world \
             region, the region with a law wins: a visitor from China travelling in a \
             rest-of-world country still goes to China."
        }
        OnConflict::Platform => {
            "The platform's country decides; the declared country is recorded with the entry \
             but never moves it."
        }
        OnConflict::Stricter => {
            "The region with the higher strictness rank wins, whichever signal points to it."
        }
    }
}

fn conflicts(out: &mut String, policy: &Policy) -> Result<(), String> {
    let rule = policy.on_conflict;
    let _ = write!(
        out,
        "## When the two signals disagree\n\n\
         When the platform's country and the country the visitor declares are in the same \
         region, that region takes the entry. When they are in different regions, this policy's \
         rule is **`{}`** (`on_conflict`; the rule holds for every campaign). {}\n\n\
         The other rules a policy can choose, for comparison: ",
        rule.as_str(),
        rule_text(rule)
    );
    let others: Vec<String> = OnConflict::ALL
        .into_iter()
        .filter(|r| *r != rule)
        .map(|r| format!("`{}`: {}", r.as_str(), rule_text(r)))
        .collect();
    let _ = write!(
        out,
        "{}\n\n\
         Whatever the rule, an entry only ever goes to a region one of its two signals points \
         to.\n\n\
         ### Worked examples\n\n\
         One country per region, each as the platform's country against each as the declared \
         one, decided by the code the edge runs with this policy and, in the last two columns, \
         with the rule changed.\n\n\
         | The platform sees | The visitor declares | This policy (`{}`) | Why | ",
        others.join(" "),
        rule.as_str()
    );
    let others: Vec<OnConflict> = OnConflict::ALL.into_iter().filter(|r| *r != rule).collect();
    let headers: Vec<String> = others
        .iter()
        .map(|r| format!("Under `{}`", r.as_str()))
        .collect();
    let _ = writeln!(
        out,
        "{} |\n| --- | --- | --- | --- | --- | --- |",
        headers.join(" | ")
    );
    let examples = example_countries(policy)?;
    let mut pairs: Vec<(Country, Country)> = Vec::new();
    for platform in &examples {
        for declared in &examples {
            pairs.push((*platform, *declared));
        }
    }
    // Two countries of one region: nothing to decide.
    if let Some(region) = policy.regions.iter().find(|r| r.countries.len() >= 2) {
        pairs.push((region.countries[1], region.countries[0]));
    }
    for (platform, declared) in pairs {
        let signals = (PlatformCountry::Known(platform), Some(declared));
        let decided = place(policy, signals.0, signals.1);
        let _ = write!(
            out,
            "| {} | {} | {} | {} |",
            described(policy, platform)?,
            described(policy, declared)?,
            result(policy, &decided),
            why(policy, signals, &decided)
        );
        for other in &others {
            let mut changed = policy.clone();
            changed.on_conflict = *other;
            let _ = write!(
                out,
                " {} |",
                result(&changed, &place(&changed, signals.0, signals.1))
            );
        }
        out.push('\n');
    }
    out.push('\n');
    Ok(())
}

fn doubtful_signals(out: &mut String, policy: &Policy) -> Result<(), String> {
    out.push_str(
        "## Unknown, Tor and missing countries\n\n\
         The platform reports `XX` when it cannot tell the country and `T1` for a connection \
         through Tor, and may report nothing. A code that is not a country is treated like `XX`. \
         The policy says what each of these gets; a refusal is a 403 with the code below, and \
         nothing is sent anywhere.\n\n\
         | The platform sees | Meaning | This policy |\n\
         | --- | --- | --- |\n",
    );
    let signals = [
        (
            "`XX`",
            "country unknown",
            policy.signals.unknown,
            Unplaceable::Unknown,
        ),
        (
            "`T1`",
            "connection through Tor",
            policy.signals.tor,
            Unplaceable::Tor,
        ),
        (
            "nothing",
            "no country at all",
            policy.signals.missing,
            Unplaceable::Missing,
        ),
    ];
    for (code, meaning, action, refusal) in signals {
        let what = match action {
            SignalAction::Refuse => format!("refused (403 `{}`)", refusal.code()),
            SignalAction::RouteTo(region) => format!(
                "stored in `{}`, which then stands in for the platform's region under the conflict rule",
                policy.region(region).id
            ),
        };
        let _ = writeln!(out, "| {code} | {meaning} | {what} |");
    }
    let examples = example_countries(policy)?;
    out.push_str("\nWith a declared country, as decided with this policy:\n\n");
    for (platform, code) in [
        (PlatformCountry::Unknown, "`XX`"),
        (PlatformCountry::Tor, "`T1`"),
        (PlatformCountry::Missing, "nothing"),
    ] {
        for declared in examples.iter().take(2) {
            let decided = place(policy, platform, Some(*declared));
            let _ = writeln!(
                out,
                "- The platform sees {code}, the visitor declares {}: {}.",
                described(policy, *declared)?,
                result(policy, &decided)
            );
        }
    }
    out.push('\n');
    Ok(())
}

fn failover(out: &mut String, policy: &Policy) {
    let region = policy.regions.first().map_or("EU", |r| r.id.as_str());
    let _ = write!(
        out,
        "## Failover stays in the region\n\n\
         Each region's origin variable (e.g. `{}`) lists one or more origins, primary first. An \
         entry goes to the primary; only when it cannot be reached, does not answer within \
         {ATTEMPT_TIMEOUT_MS} ms, or answers 502, 503 or 504, is it sent to the next origin of \
         **the same region's** list, and so on, all within {DEADLINE_MS} ms of its arrival. When \
         every origin of the region failed, the visitor is asked to try again later (503) and the \
         entry goes nowhere else: not on error, not on timeout, never to another region. A \
         property test checks this over random policies for every rule above.\n\n",
        origins_var(region)
    );
}

/// What keeps a region's ingress in the region, as the zone must have it.
fn product(kept: KeptInRegionBy, region: &str) -> String {
    match kept {
        KeptInRegionBy::RegionalServices => format!(
            "Regional Services set to this region (`{region}`) on that hostname, a Workers custom \
             domain"
        ),
        KeptInRegionBy::ChinaNetwork => "the China Network (Cloudflare's network in mainland \
             China, run with a partner there; it needs an ICP filing)"
            .into(),
    }
}

fn where_processing_happens(out: &mut String, policy: &Policy) {
    let with_ingress: Vec<String> = policy
        .regions
        .iter()
        .filter(|r| r.ingress.is_some())
        .map(|r| format!("`{}`", r.id))
        .collect();
    let _ = write!(
        out,
        "## Where processing happens\n\n\
         An entry is stored only in its region (above). Before that, it is read and decided at \
         the edge: in a Cloudflare location (a data centre of the platform) that the visitor's \
         connection reaches. Unless its region takes entries on a hostname of its own, that is \
         whichever location serves the visitor. Cloudflare chooses it, usually near the visitor \
         but not always in the visitor's country or region. **For a visitor in mainland China it \
         is a location outside mainland China**, unless the hostname's zone is on Cloudflare's \
         China Network.\n\n\
         A region keeps this processing inside it with an **ingress**: a hostname of its own, \
         named in the policy, whose zone has Regional Services set to the region (the EU, Russia \
         and Australia are among the processing regions Cloudflare offers; mainland China is not) \
         or, for mainland China, is on the China Network. The edge \
         then takes that region's entries on that hostname only: sent anywhere else, they are \
         refused (421 `wrong_ingress`, naming the hostname) right after they are placed, before \
         any limit is counted or anything is sent on; and it takes no other region's entries \
         there. The campaign page asks the edge, for the country the visitor chooses, where to \
         send the entry. This report is made from the policy and cannot see a zone's settings: \
         where the table says a zone must have a product, the deployment must see to it. Regions \
         with an ingress in this policy: {}.\n\n\
         The campaign page and its form description are served on the campaign's main hostname, \
         in whichever location serves the visitor, like any website: the visitor's address and \
         the country the platform sees reach that location, the form's contents do not.\n\n\
         | Region | Ingress in this policy | Where entries are read and decided (the edge) | The per-visitor count of the location | Where entries are stored (the origins) | The platform's logs of the requests |\n\
         | --- | --- | --- | --- | --- | --- |\n",
        join_and(&with_ingress)
    );
    let china = Country::parse("CN");
    for region in &policy.regions {
        let (ingress, edge) = match &region.ingress {
            Some(ingress) => (
                format!(
                    "`{}` (`{}`)",
                    ingress.host,
                    ingress.kept_in_region_by.as_str()
                ),
                format!(
                    "only Cloudflare locations in the region: its entries are taken on `{}` \
                     alone, whose zone must have {}",
                    ingress.host,
                    product(ingress.kept_in_region_by, &region.id)
                ),
            ),
            None if china.is_some_and(|cn| region.countries.contains(&cn)) => (
                "none".into(),
                "any Cloudflare location, whichever serves the visitor: **for a visitor in \
                 mainland China, a location outside mainland China**"
                    .into(),
            ),
            None => (
                "none".into(),
                "any Cloudflare location, whichever serves the visitor: possibly outside the \
                 region"
                    .into(),
            ),
        };
        let operator = region
            .operator
            .as_ref()
            .map_or(String::new(), |o| format!(", run by {o}"));
        let _ = writeln!(
            out,
            "| `{id}` | {ingress} | {edge} | the same location as the edge (a keyed digest of the \
             address, never the address) | in the region, on its own origins \
             (`{origins}`){operator} | where the account's log region says (below) |",
            id = region.id,
            origins = origins_var(&region.id),
        );
    }
    out.push_str(
        "\nThe platform's logs: Cloudflare keeps its records of an account's requests (analytics, \
         and Workers Logs or Logpush where the account turns them on) in the account's log region \
         (Customer Metadata Boundary), the US or the EU, when one is set, and otherwise in its \
         core data centres anywhere. Only for a region inside the EU (or the US) can they stay in \
         the region that way. harbour's `wrangler.toml` turns none of them on. `wrangler tail` \
         streams each request live to whoever runs it on the account: see what the platform \
         sees, below.\n\n",
    );
}

fn what_leaves_the_edge(out: &mut String, live_json: &str, policy: &Policy) -> Result<(), String> {
    out.push_str(
        "## What leaves the edge\n\n\
         **In the Cloudflare location** (see above), in the memory of the isolate that runs \
         harbour, the whole request is read: the form's fields, the visitor's address \
         (`CF-Connecting-IP`) and the country the platform sees. The address serves one purpose \
         there, the per-visitor limits: it is counted in the isolate's memory, and the \
         location's rate-limiting service counts a keyed digest of it (HMAC-SHA256 under the \
         edge's form key, 128 bits of it, with the campaign's id beside it): the service never \
         sees the address, and without the key the digest cannot be turned back into one. \
         harbour stores neither.\n\n\
         **From the location**, an accepted entry is sent to one origin of its region as one \
         signed HTTPS request, exactly what the tables below list (read from a sample entry run \
         through the edge's own code). harbour sends nothing else about the visitor anywhere: \
         not their address, not their browser's headers or cookies, not the form's hidden \
         anti-bot fields.\n\n\
         **What the platform sees.** Every request reaches the location with its headers (the \
         visitor's address among them) and the platform's `cf` object about the connection \
         (country, city, network and more), as for any site on Cloudflare. `wrangler tail`, the \
         platform's live log stream, shows each request's URL, headers and `cf` object beside \
         harbour's log lines to whoever runs it on the account (it blanks cookies and headers \
         whose names look like credentials, not the address). These are the platform's records, \
         not harbour's; where Cloudflare keeps them is the account's log region (above).\n\n",
    );
    for campaign in &policy.campaigns {
        let (headers, body) = sample_forward(live_json, policy, campaign)?;
        let _ = write!(
            out,
            "### Campaign `{}`\n\n| Header | What it holds |\n| --- | --- |\n",
            campaign.id
        );
        for name in headers {
            let _ = writeln!(out, "| `{name}` | {} |", header_meaning(&name)?);
        }
        out.push_str("\n| Body member | What it holds |\n| --- | --- |\n");
        let mut keys = Vec::new();
        members(&body, "", &mut keys);
        for key in keys {
            let _ = writeln!(out, "| `{key}` | {} |", body_meaning(campaign, &key)?);
        }
        out.push('\n');
        if !campaign.one_entry_per.is_empty() {
            let fields: Vec<String> = campaign
                .one_entry_per
                .iter()
                .map(|f| format!("`{f}`"))
                .collect();
            let _ = write!(
                out,
                "One entry per person: the origin also stores a keyed digest of {} (HMAC-SHA256 \
                 with the region's own person key, `HARBOUR_PERSON_KEY_<REGION>`, which only the \
                 region's origins hold; the campaign id is in the digested message, so one person \
                 cannot be linked across campaigns). Without the key the digest cannot be reversed \
                 or matched. A second entry by the same person is refused (409 \
                 `already_entered`).\n\n",
                join_and(&fields)
            );
        }
    }
    Ok(())
}

fn header_meaning(name: &str) -> Result<&'static str, String> {
    Ok(match name {
        "content-type" => "`application/json`",
        HEADER_IDEMPOTENCY_KEY => {
            "the key the campaign page made for this entry (random), so a retried entry is \
             stored once; for a client that sends none, one derived from a SHA-256 hash of the \
             campaign and the entry's fields"
        }
        HEADER_SIGNATURE => {
            "the time, the region, and an HMAC-SHA256 with the region's signing key over the \
             request: the origin refuses anything not signed for its own region"
        }
        other => return Err(format!("the report has no words for the header {other:?}")),
    })
}

fn body_meaning(campaign: &Campaign, key: &str) -> Result<String, String> {
    if let Some(field) = key.strip_prefix("fields.") {
        let Some(field) = campaign.field(field) else {
            return Err(format!(
                "the body has a field {field:?} the campaign does not define"
            ));
        };
        let kind = match field.kind {
            FieldKind::String => "text",
            FieldKind::Email => "an email address",
            FieldKind::Enum => "one of the campaign's choices",
            FieldKind::Bool => "yes or no",
            FieldKind::Integer => "a whole number",
            FieldKind::Country => "a country code",
        };
        let need = if field.required {
            "required"
        } else {
            "optional"
        };
        let signal = if field.residency_signal {
            "; the residency signal"
        } else {
            ""
        };
        return Ok(format!(
            "the visitor's answer to \"{}\": {kind}, {need}{signal}",
            field.label
        ));
    }
    Ok(match key {
        "campaign" => "the campaign's id",
        "notice.locale" => "the language the visitor was shown the notice and the consent boxes in",
        "notice.version" => {
            "the version of the notice the visitor was shown (a digest of the notice, the \
             retention rule and the consent labels in that language): which texts the visitor \
             agreed to, for the controller's record of consent"
        }
        "received_at_ms" => "when the edge received the entry (milliseconds since 1970, UTC)",
        "region" => "the region the entry was placed in",
        "request_id" => {
            "the edge's id of the request: its arrival time and 16 random hexadecimal digits"
        }
        "signals.basis" => {
            "which signal placed the entry: `platform`, `declared_law` (the platform's country is \
             in the rest of the world, the declared one's region has a law), `declared_stricter` \
             (under the `stricter` rule) or `policy_fallback` (the policy routed an unknown, Tor \
             or missing country); either `declared_*` means the visitor confirmed storage in \
             that region"
        }
        "signals.declared_country" => "the country the visitor declared, or null",
        "signals.platform_country" => {
            "the country the platform saw (`XX`, `T1` or empty when the policy routed those)"
        }
        other => {
            return Err(format!(
                "the report has no words for the body member {other:?}"
            ))
        }
    }
    .to_owned())
}

fn what_is_logged(out: &mut String) -> Result<(), String> {
    let _ = write!(
        out,
        "## What is logged\n\n\
         The edge's log lines carry no field value, no address and no idempotency key: only \
         ids, codes and counts. They are **pseudonymous**: a decision line carries the request's \
         id, which is stored with the entry at its origin, so whoever holds both can tie the \
         line to the entry and the person who made it. Summary lines carry no request id. By \
         default (`HARBOUR_LOG=summary`) outcomes are counted and \
         written as one summary line per isolate at most every {} s; a line per decision is \
         written only for what an operator must look at (every 5xx, every entry that needed a \
         second origin), or for every decision with `HARBOUR_LOG=decisions`. Besides these, \
         `harbour.config_invalid` and `harbour.candidate_invalid` name a wrong configuration \
         entry (never a secret's value) and `harbour.edge_failure` an internal error.\n\n",
        SUMMARY_WINDOW_MS / 1000
    );
    let (decision, summary) = sample_log_lines();
    for (title, line) in [("A decision", decision), ("A summary", summary)] {
        let value: Value = serde_json::from_str(&line).map_err(|e| e.to_string())?;
        let _ = write!(
            out,
            "{title} (`{}`):\n\n| Key | What it holds |\n| --- | --- |\n",
            value["msg"].as_str().unwrap_or("")
        );
        let mut keys = Vec::new();
        members(&value, "", &mut keys);
        for key in keys {
            let _ = writeln!(out, "| `{key}` | {} |", log_meaning(&key)?);
        }
        out.push('\n');
    }
    Ok(())
}

fn log_meaning(key: &str) -> Result<&'static str, String> {
    let tail = key.rsplit(['.', ']']).next().unwrap_or(key);
    Ok(match (key, tail) {
        ("msg", _) => "the kind of line",
        ("request_id", _) => "the edge's id of the request (as in the stored entry)",
        ("phase", _) => "the step that decided (`validate`, `classify`, `admit`, `forward`, ...)",
        ("attempts", _) => "origin attempts made",
        ("latency_ms", _) => "time from arrival to answer",
        ("from_ms" | "to_ms", _) => "the window the summary covers",
        ("status", _) | (_, "status") => "the HTTP status answered",
        ("outcome", _) | (_, "outcome") => {
            "the outcome code (`stored`, `validation_failed`, `residency_conflict`, ...)"
        }
        (_, "campaign") => "the campaign's id",
        (_, "region") => "the region's id, when the entry was placed",
        (_, "count") => "how many",
        (_, "latency_ms_mean" | "latency_ms_max") => {
            "time from arrival to answer, mean and maximum"
        }
        (_, "evaluated") => "entries the candidate policy was evaluated on (see below)",
        (_, "live") => "what the live policy decided (a region, or an outcome code or `placed`)",
        (_, "candidate") => "what the candidate policy would have decided",
        _ => return Err(format!("the report has no words for the log key {key:?}")),
    })
}

fn limits(out: &mut String, policy: &Policy) {
    out.push_str(
        "## Limits per campaign\n\n\
         Entries beyond a limit are refused with 429 and a time to retry; nothing is stored. \
         The per-visitor limit is counted twice: by each isolate of the edge, in its memory, and \
         by the platform's rate-limiting service in the visitor's edge location, under the key \
         `<campaign> <digest>`: the digest is HMAC-SHA256 of the address (an IPv6 address counts \
         as its /64) under the edge's form key, cut to 128 bits, so the service counts the same \
         visitor as one key without ever seeing the address; it is not stored with the entry. \
         The whole-campaign and region \
         budgets are counted per isolate, as a guard; the origins protect their own capacity \
         (see the README).\n\n\
         | Campaign | Per visitor (IP address, or IPv6 /64) | Whole campaign (per isolate) | \
         If the location's count cannot be had |\n\
         | --- | --- | --- | --- |\n",
    );
    for campaign in &policy.campaigns {
        let _ = writeln!(
            out,
            "| `{}` | {} | {} | {} |",
            campaign.id,
            quota(&campaign.per_client),
            quota(&campaign.campaign),
            fail_mode(campaign.on_location_unavailable)
        );
    }
    out.push_str(
        "\n### Surge windows\n\n\
         Scheduled windows (UTC, from the start to just before the end) with a per-visitor limit \
         of their own; outside them the campaign's limits apply.\n\n",
    );
    let windows: Vec<_> = policy
        .campaigns
        .iter()
        .flat_map(|c| c.surge_windows.iter().map(move |w| (c, w)))
        .collect();
    if windows.is_empty() {
        out.push_str("None: the campaigns' own limits apply at all times.\n");
    } else {
        out.push_str(
            "| Campaign | Window | From | Until | Per visitor | If the location's count cannot be had |\n\
             | --- | --- | --- | --- | --- | --- |\n",
        );
        for (campaign, window) in windows {
            let _ = writeln!(
                out,
                "| `{}` | `{}` | {} | {} | {} | {} |",
                campaign.id,
                window.id,
                harbour_policy::utc::format_ms(window.start_ms),
                harbour_policy::utc::format_ms(window.end_ms),
                quota(&window.per_client),
                fail_mode(window.on_location_unavailable)
            );
        }
    }
    out.push_str("\n| Region | Budget per isolate (a guard) |\n| --- | --- |\n");
    for region in &policy.regions {
        let budget = region.budget.as_ref().map_or("none".to_owned(), quota);
        let _ = writeln!(out, "| `{}` | {budget} |", region.id);
    }
    out.push('\n');
}

fn fail_mode(mode: FailMode) -> &'static str {
    match mode {
        FailMode::Open => "admitted on the isolate's own count (`fail_open`)",
        FailMode::Closed => "refused with 503, retry later (`fail_closed`)",
    }
}

fn quota(quota: &Quota) -> String {
    let window = quota.window_ms();
    let window = if window % 1000 == 0 {
        format!("{} s", window / 1000)
    } else {
        format!("{window} ms")
    };
    format!("{} per {window}", quota.burst())
}

fn shadow(out: &mut String, live: &Policy, candidate: Option<&Policy>) -> Result<(), String> {
    out.push_str("## Candidate policy in shadow\n\n");
    let Some(candidate) = candidate else {
        let _ = writeln!(
            out,
            "There is no candidate policy (`{CANDIDATE_FILE}`): nothing is evaluated in shadow."
        );
        return Ok(());
    };
    let _ = write!(
        out,
        "A candidate policy (`{CANDIDATE_FILE}`) is evaluated on every entry beside this one. It \
         changes no answer, no limit and no forward: the summary log only counts, per campaign, \
         the entries it would have placed in another region or decided otherwise. Where it \
         differs from the live policy:\n\n"
    );
    let mut differences = Vec::new();
    if candidate.on_conflict != live.on_conflict {
        differences.push(format!(
            "- The conflict rule: `{}` → `{}`.",
            live.on_conflict.as_str(),
            candidate.on_conflict.as_str()
        ));
    }
    for country in all_countries() {
        let (from, to) = (
            &live.region(live.region_of(country)).id,
            &candidate.region(candidate.region_of(country)).id,
        );
        if from != to {
            differences.push(format!(
                "- `{country}` {}: `{from}` → `{to}`.",
                name(country)?
            ));
        }
    }
    for (what, from, to) in [
        (
            "unknown (`XX`)",
            live.signals.unknown,
            candidate.signals.unknown,
        ),
        ("Tor (`T1`)", live.signals.tor, candidate.signals.tor),
        ("missing", live.signals.missing, candidate.signals.missing),
    ] {
        let (from, to) = (action(live, from), action(candidate, to));
        if from != to {
            differences.push(format!("- A {what} country: {from} → {to}."));
        }
    }
    for region in &candidate.regions {
        match live.regions.iter().find(|r| r.id == region.id) {
            None => differences.push(format!("- A new region `{}`.", region.id)),
            Some(old) if old.strictness != region.strictness => differences.push(format!(
                "- Region `{}`'s strictness rank: {} → {}.",
                region.id, old.strictness, region.strictness
            )),
            Some(_) => {}
        }
    }
    for region in &live.regions {
        if !candidate.regions.iter().any(|r| r.id == region.id) {
            differences.push(format!("- Region `{}` is gone.", region.id));
        }
    }
    for campaign in &live.campaigns {
        match candidate.campaign(&campaign.id) {
            None => differences.push(format!("- Campaign `{}` is gone.", campaign.id)),
            Some(other) if other != campaign => {
                differences.push(format!("- Campaign `{}` changes.", campaign.id))
            }
            Some(_) => {}
        }
    }
    if differences.is_empty() {
        out.push_str("- Nothing that changes where an entry goes.\n");
    }
    for line in differences {
        let _ = writeln!(out, "{line}");
    }
    Ok(())
}

fn action(policy: &Policy, action: SignalAction) -> String {
    match action {
        SignalAction::Refuse => "refused".into(),
        SignalAction::RouteTo(region) => format!("`{}`", policy.region(region).id),
    }
}

// ---- helpers --------------------------------------------------------------------------------

fn all_countries() -> impl Iterator<Item = Country> {
    Country::all()
}

fn name(country: Country) -> Result<&'static str, String> {
    names::name(country).ok_or_else(|| format!("no English name for {country}"))
}

fn region_index(policy: &Policy, position: usize) -> RegionIndex {
    // Every region has an id, so the lookup by it finds the region at `position`.
    policy
        .region_index(&policy.regions[position].id)
        .unwrap_or(policy.rest_of_world)
}

fn law_regions(policy: &Policy) -> impl Iterator<Item = RegionIndex> + '_ {
    (0..policy.regions.len())
        .map(|i| region_index(policy, i))
        .filter(|r| policy.has_own_law(*r))
}

fn join_and(items: &[String]) -> String {
    match items {
        [] => "none".into(),
        [one] => one.clone(),
        [init @ .., last] => format!("{} and {last}", init.join(", ")),
    }
}

/// One country per region: the first a region lists; for the rest of the world, a well-known
/// country it takes (or the first it takes).
fn example_countries(policy: &Policy) -> Result<Vec<Country>, String> {
    let mut examples = Vec::new();
    for (i, region) in policy.regions.iter().enumerate() {
        let index = region_index(policy, i);
        let example = if policy.has_own_law(index) {
            region.countries.first().copied()
        } else {
            ["US", "BR", "IN", "JP"]
                .into_iter()
                .filter_map(Country::parse)
                .find(|c| policy.region_of(*c) == index)
                .or_else(|| all_countries().find(|c| policy.region_of(*c) == index))
        };
        match example {
            Some(country) => examples.push(country),
            None => return Err(format!("region {:?} has no country", region.id)),
        }
    }
    Ok(examples)
}

fn described(policy: &Policy, country: Country) -> Result<String, String> {
    Ok(format!(
        "{} (`{country}`, `{}`)",
        name(country)?,
        policy.region(policy.region_of(country)).id
    ))
}

fn result(policy: &Policy, decided: &Result<Residency, Unplaceable>) -> String {
    match decided {
        Ok(residency) if moved_by_declared(residency) => format!(
            "stored in `{}` once the visitor confirms it (422 `storage_unconfirmed` until then)",
            policy.region(residency.region).id
        ),
        Ok(residency) => format!("stored in `{}`", policy.region(residency.region).id),
        Err(Unplaceable::Conflict) => "**refused** (422 `residency_conflict`)".into(),
        Err(refusal) => format!("**refused** (403 `{}`)", refusal.code()),
    }
}

fn why(
    policy: &Policy,
    (platform, declared): (PlatformCountry, Option<Country>),
    decided: &Result<Residency, Unplaceable>,
) -> String {
    let id = |r: RegionIndex| format!("`{}`", policy.region(r).id);
    let declared_region = declared.map(|c| policy.region_of(c));
    let platform_region = match platform {
        PlatformCountry::Known(c) => Some(policy.region_of(c)),
        _ => None,
    };
    match (decided, platform_region, declared_region) {
        (Err(Unplaceable::Conflict), Some(p), Some(d)) => {
            format!("{} and {} both have a law of their own", id(p), id(d))
        }
        (Err(refusal), _, _) => format!("the platform's signal is refused ({})", refusal.code()),
        (Ok(r), Some(p), Some(d)) if p == d => format!("both are in {}", id(r.region)),
        (Ok(r), _, _) => match r.basis {
            Basis::DeclaredLaw => format!(
                "the platform's country is in the rest of the world; {} has a law",
                id(r.region)
            ),
            Basis::DeclaredStricter => format!("{} has the higher rank", id(r.region)),
            Basis::Platform if policy.on_conflict == OnConflict::Refuse => format!(
                "the declared country is in the rest of the world; {} has a law",
                id(r.region)
            ),
            Basis::Platform => "the platform's country decides".into(),
            Basis::PolicyFallback => "the policy routes the platform's signal".into(),
        },
    }
}

/// Keys of a JSON value, nested ones joined with `.` and array items as `[]`, in order.
fn members(value: &Value, prefix: &str, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (key, inner) in map {
                let path = if prefix.is_empty() {
                    key.clone()
                } else {
                    format!("{prefix}.{key}")
                };
                match inner {
                    Value::Object(_) | Value::Array(_) => members(inner, &path, out),
                    _ => push_unique(out, path),
                }
            }
        }
        Value::Array(items) => {
            for item in items {
                members(item, &format!("{prefix}[]"), out);
            }
        }
        _ => push_unique(out, prefix.to_owned()),
    }
}

fn push_unique(out: &mut Vec<String>, key: String) {
    if !out.contains(&key) {
        out.push(key);
    }
}

/// A valid entry for `campaign`, run through the real pipeline with placeholder origins and keys:
/// the forwarded request's header names and body.
fn sample_forward(
    live_json: &str,
    policy: &Policy,
    campaign: &Campaign,
) -> Result<(Vec<String>, Value), String> {
    let mut config = Config::local(live_json, 40_000).map_err(|e| e.to_string())?;
    // The least work, solved here: what is forwarded does not depend on it.
    let now_ms = 1_764_000_000_000;
    let key = "report-sample-key-0123456789";
    let index = policy
        .find_campaign(&campaign.id)
        .ok_or("the campaign is not in the policy")?
        .0
        .get();
    config.policy.campaigns[index].challenge.difficulty_bits = 1;
    let issued = challenge::issue(&config.form_key, &config.policy.campaigns[index], now_ms, 1);
    let work = challenge::solution(
        &issued.token,
        &challenge::solve(&issued.token, key, issued.difficulty_bits),
    );
    let country = *example_countries(policy)?
        .last()
        .ok_or("the policy has no region")?;
    // Sent where the page would send it: its region's ingress, or the main hostname.
    let submit = submit_url(&config, &campaign.id, Some(policy.region_of(country)));
    let url = match submit.strip_prefix('/') {
        Some(path) => format!("https://campaign.example/{path}"),
        None => submit,
    };
    let mut pipeline = Pipeline::new(
        Ok(config),
        Seeds {
            limiter: 1,
            request_ids: 2,
            challenges: 3,
        },
    );
    let mut body = serde_json::Map::new();
    for field in &campaign.fields {
        let value: Value = match field.kind {
            FieldKind::String => "Ada".into(),
            FieldKind::Email => "ada@example.org".into(),
            FieldKind::Enum => field.values.first().cloned().unwrap_or_default().into(),
            FieldKind::Bool => true.into(),
            FieldKind::Integer => field.min.or(field.max).unwrap_or(0).into(),
            FieldKind::Country => country.as_str().into(),
        };
        body.insert(field.name.clone(), value);
    }
    let body = Value::Object(body).to_string();
    let notice = campaign.notice_header(harbour_policy::LOCALES[0]);
    let facts = Facts {
        method: "POST",
        url: &url,
        content_type: Some("application/json"),
        body: Body::Bytes(body.as_bytes()),
        country: Some(country.as_str()),
        client_ip: Some("192.0.2.1"),
        idempotency_key: Some(key),
        challenge: Some(&work),
        origin: None,
        notice: Some(&notice),
        now_ms,
    };
    match pipeline.request_answered(&facts, LocationResult::Admitted) {
        Verdict::Forward { plan, .. } => {
            let headers = plan.headers.iter().map(|(n, _)| (*n).to_owned()).collect();
            let body = serde_json::from_str(&plan.body).map_err(|e| e.to_string())?;
            Ok((headers, body))
        }
        Verdict::Consult { .. } => Err(format!(
            "a sample entry for campaign {:?} still waits for the location's count",
            campaign.id
        )),
        Verdict::Reply { reply, .. } => Err(format!(
            "a sample entry for campaign {:?} was not forwarded: {} {}",
            campaign.id, reply.status, reply.body
        )),
    }
}

/// A decision line and a summary line with every member the journal writes, shadow included.
fn sample_log_lines() -> (String, String) {
    let record = LogRecord {
        request_id: "r".into(),
        campaign: Some("c".into()),
        region: Some("r".into()),
        phase: Phase::Forward,
        outcome: Outcome::Stored,
        status: 202,
        attempts: 1,
        received_ms: 0,
    };
    let decision = record.to_json(1);
    let mut journal = Journal::new(LogMode::Summary);
    let placed = |region| View::placed(Some(region));
    let refused = View {
        region: None,
        outcome: Some(Outcome::Unplaceable(Unplaceable::Conflict)),
    };
    journal.shadow(
        &Comparison {
            campaign: "c",
            live: placed("a"),
            candidate: refused,
        },
        0,
    );
    journal.record(&record, 1);
    let summary = journal
        .record(&record, 1 + SUMMARY_WINDOW_MS)
        .summary
        .unwrap_or_default();
    (decision, summary)
}

#[cfg(test)]
mod tests {
    use super::*;
    use harbour_policy::{committed_candidate, SHIPPED_POLICY};

    fn report() -> String {
        render(SHIPPED_POLICY, committed_candidate().as_deref()).unwrap()
    }

    #[test]
    fn every_country_is_named_once_under_its_region() {
        let report = report();
        let policy = Policy::shipped().unwrap();
        for country in Country::all() {
            let line = format!("- `{country}` {}", names::name(country).unwrap());
            let found: Vec<_> = report.lines().filter(|l| l.starts_with(&line)).collect();
            assert_eq!(found.len(), 1, "{country}: {found:?}");
            let section = report[..report.find(found[0]).unwrap()]
                .rfind("### `")
                .map(|at| &report[at + 5..])
                .and_then(|rest| rest.split('`').next())
                .unwrap();
            assert_eq!(
                section,
                policy.region(policy.region_of(country)).id,
                "{country}"
            );
        }
    }

    #[test]
    fn the_report_holds_what_the_issue_of_residency_needs() {
        let report = report();
        for needle in [
            "## Regions",
            "## When the two signals disagree",
            "**`refuse`**",
            "| Austria (`AT`, `eu`) | China (`CN`, `cn`) | **refused** (422 `residency_conflict`)",
            "| United States (`US`, `global`) | China (`CN`, `cn`) | stored in `cn` once the visitor confirms it",
            "## What visitors are told, and the record of their consent",
            "| `de` | `",
            "(marketing, optional)",
            "## How long entries are kept",
            "| `spring-launch` | 2027-06-30T22:00:00.000Z | 90 | 2027-09-28T22:00:00.000Z |",
            "## Drawing winners",
            "**per region**, 3 winner(s) in each region",
            "country_unknown",
            "country_anonymised",
            "country_missing",
            "## Failover stays in the region",
            "HARBOUR_ORIGINS_EU",
            "One entry per person: the origin also stores a keyed digest of `email`",
            "HARBOUR_KEY_EU",
            "`signals.platform_country`",
            "`fields.email`",
            "`x-harbour-signature`",
            "## What is logged",
            "`outcomes[].campaign`",
            "`shadow[].region_changes[].candidate`",
            "| `spring-launch` | 5 per 60 s | 20000 per 1 s |",
            "## Candidate policy in shadow",
            "## Where processing happens",
        ] {
            assert!(report.contains(needle), "missing {needle:?}");
        }
        assert!(!report.contains("-secret-"), "no key value");
        assert!(!report.contains("127.0.0.1"), "no origin address");
    }

    #[test]
    fn surge_windows_are_listed_with_their_limits() {
        let mut policy: Value = serde_json::from_str(SHIPPED_POLICY).unwrap();
        policy["campaigns"][0]["surge_windows"] = serde_json::json!([
            {"id": "tv-spot", "start": "2026-03-14T20:15:00Z", "end": "2026-03-14T20:20:00Z",
             "per_client": {"burst": 20, "window_ms": 60000}, "on_location_unavailable": "fail_closed"}
        ]);
        let report = render(&policy.to_string(), None).unwrap();
        assert!(
            report.contains("| `spring-launch` | `tv-spot` | 2026-03-14T20:15:00.000Z | 2026-03-14T20:20:00.000Z | 20 per 60 s | refused with 503"),
            "{report}"
        );
        assert!(!report.contains("None: the campaigns' own limits apply at all times."));
    }

    #[test]
    fn a_candidate_shows_what_it_would_change() {
        let mut moved: Value = serde_json::from_str(SHIPPED_POLICY).unwrap();
        moved["on_conflict"] = "stricter".into();
        for region in moved["regions"].as_array_mut().unwrap() {
            let is_ru = region["id"] == "ru";
            let countries = region["countries"].as_array_mut().unwrap();
            countries.retain(|c| c != "AX");
            if is_ru {
                countries.push("AX".into());
            }
        }
        let report = render(SHIPPED_POLICY, Some(&moved.to_string())).unwrap();
        let shadow = &report[report.find("## Candidate policy in shadow").unwrap()..];
        assert!(shadow.contains("- The conflict rule: `refuse` → `stricter`."));
        assert!(shadow.contains("- `AX` Åland Islands: `eu` → `ru`."));
        let broken = render(SHIPPED_POLICY, Some("{}")).unwrap_err();
        assert!(broken.starts_with("policy/candidate.json: "), "{broken}");
    }

    /// The section of `report` that starts with `title`, up to the next section.
    fn section<'r>(report: &'r str, title: &str) -> &'r str {
        let start = report.find(title).unwrap_or_else(|| panic!("no {title}"));
        let rest = &report[start + title.len()..];
        &report[start..start + title.len() + rest.find("\n## ").unwrap_or(rest.len())]
    }

    #[test]
    fn where_processing_happens_is_a_row_per_region_and_says_china_plainly() {
        let report = report();
        let table = section(&report, "## Where processing happens");
        let policy = Policy::shipped().unwrap();
        for region in &policy.regions {
            let rows: Vec<_> = table
                .lines()
                .filter(|l| l.starts_with(&format!("| `{}` |", region.id)))
                .collect();
            assert_eq!(rows.len(), 1, "{}: {rows:?}", region.id);
            let cells: Vec<&str> = rows[0].split(" | ").collect();
            assert_eq!(cells.len(), 6, "{rows:?}");
            assert_eq!(cells[1], "none", "the shipped policy names no ingress");
            assert!(cells[2].starts_with("any Cloudflare location"), "{rows:?}");
            assert!(cells[3].contains("same location as the edge"), "{rows:?}");
            assert!(cells[4].contains(&origins_var(&region.id)), "{rows:?}");
            assert!(cells[5].contains("log region"), "{rows:?}");
        }
        assert!(table.contains("Regions with an ingress in this policy: none."));
        let cn = table.lines().find(|l| l.starts_with("| `cn` |")).unwrap();
        assert!(
            cn.contains("**for a visitor in mainland China, a location outside mainland China**")
        );
        assert!(table.contains(
            "the US or the EU, when one is set, and otherwise in its core data centres anywhere"
        ));
    }

    #[test]
    fn an_ingress_keeps_its_region_in_the_table_with_what_its_zone_must_have() {
        let mut policy: Value = serde_json::from_str(SHIPPED_POLICY).unwrap();
        policy["regions"][0]["ingress"] = serde_json::json!({"host": "cn.campaign.example", "kept_in_region_by": "china_network"});
        policy["regions"][2]["ingress"] = serde_json::json!({"host": "eu.campaign.example", "kept_in_region_by": "regional_services"});
        // The rest of the world too, where the sample entry comes from: it is sent to its
        // ingress, as the page would send it, or the report could not show what is forwarded.
        policy["regions"][4]["ingress"] = serde_json::json!({"host": "www.campaign.example", "kept_in_region_by": "regional_services"});
        let report = render(&policy.to_string(), None).unwrap();
        let table = section(&report, "## Where processing happens");
        let row = |id: &str| {
            table
                .lines()
                .find(|l| l.starts_with(&format!("| `{id}` |")))
                .unwrap()
                .to_owned()
        };
        assert!(table.contains("Regions with an ingress in this policy: `cn`, `eu` and `global`."));
        assert!(row("cn").starts_with("| `cn` | `cn.campaign.example` (`china_network`) | only Cloudflare locations in the region: its entries are taken on `cn.campaign.example` alone, whose zone must have the China Network"), "{}", row("cn"));
        assert!(
            row("eu").contains("whose zone must have Regional Services set to this region (`eu`)"),
            "{}",
            row("eu")
        );
        assert!(row("ru").contains("| none | any Cloudflare location"));
        assert!(report.contains("`signals.platform_country`"));
    }

    #[test]
    fn regression_the_report_claims_no_anonymity_and_no_address_kept_from_the_platform() {
        let report = report();
        assert!(
            !report.contains("not their IP address"),
            "the platform sees it"
        );
        assert!(
            !report.replace("pseudonymous", "").contains("anonymous"),
            "log lines carry request ids, which the stored entry carries too"
        );
        assert!(
            !report.contains("`<campaign> <address>`"),
            "the binding's key is a digest"
        );
        let logged = section(&report, "## What is logged");
        assert!(logged.contains("**pseudonymous**"));
        let leaves = section(&report, "## What leaves the edge");
        for needle in [
            "`wrangler tail`",
            "`cf` object",
            "keyed digest",
            "`CF-Connecting-IP`",
        ] {
            assert!(leaves.contains(needle), "{needle}");
        }
    }

    #[test]
    fn unknown_members_stop_the_report_rather_than_vanish_from_it() {
        let campaign = &Policy::shipped().unwrap().campaigns[0];
        assert!(body_meaning(campaign, "client_ip").is_err());
        assert!(body_meaning(campaign, "fields.coupon").is_err());
        assert!(header_meaning("x-forwarded-for").is_err());
        assert!(log_meaning("address").is_err());
    }
}
