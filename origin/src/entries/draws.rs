//! The draw commands (the algorithm and its rules are `draw`'s): a per-region draw from the
//! store or, for anyone checking it, from a list of receipt ids; a region's candidates for a
//! global draw; and the merge of every region's candidates.

use std::io::Write;

use serde_json::{json, Value};

use harbour_contract::env::draw_key_var;
use harbour_contract::receipt::is_id_of;
use harbour_policy::notice::DrawScope;
use harbour_policy::utc::format_ms;
use harbour_policy::{Campaign, Policy};

use super::setup::{print, secret, Args, Region};
use crate::draw::{ticket, CandidateFile, GlobalDraw, Lowest, Ticket};
use crate::person::PersonRules;
use crate::store::records::StoredEntry;
use crate::store::Unavailable;

/// The seed, and the campaign's draw if it has one of `scope`'s kind and has closed.
fn checked<'a>(
    campaign: &'a Campaign,
    args: &'a Args,
    global: bool,
    now_ms: u64,
) -> Result<(&'a str, usize), String> {
    let id = &campaign.id;
    let draw = campaign
        .draw
        .as_ref()
        .ok_or(format!("campaign {id} has no draw"))?;
    match (&draw.scope, global) {
        (DrawScope::PerRegion, true) => {
            return Err(format!(
                "campaign {id} draws per region: each region runs draw, and nothing leaves it"
            ))
        }
        (DrawScope::Global { .. }, false) => {
            return Err(format!(
                "campaign {id} has a global draw: each region runs candidates, then one merge"
            ))
        }
        _ => {}
    }
    let seed = args
        .seed
        .as_deref()
        .filter(|s| !s.is_empty())
        .ok_or("--seed is required: the seed published after the campaign closed")?;
    if now_ms < campaign.ends_ms {
        return Err(format!(
            "campaign {id} closes at {}: draw after it closes, from a seed published then",
            format_ms(campaign.ends_ms)
        ));
    }
    Ok((seed, usize::try_from(draw.winners).unwrap_or(usize::MAX)))
}

fn winners_json(winners: &[Ticket], with_region: bool) -> Vec<Value> {
    winners
        .iter()
        .enumerate()
        .map(|(i, w)| {
            let mut line = json!({"rank": i + 1, "ticket": w.ticket, "receipt_id": w.receipt_id});
            if with_region {
                line["region"] = Value::from(w.region.as_str());
            }
            line
        })
        .collect()
}

/// A per-region draw from the region's store: every entry a ticket, one per stored person.
pub(super) async fn draw(
    region: &mut Region,
    args: &Args,
    now_ms: u64,
    out: &mut dyn Write,
) -> Result<(), String> {
    let (seed, winners) = checked(&region.campaign, args, false, now_ms)?;
    let mut lowest = Lowest::new(winners);
    let mut visit = |entry: StoredEntry| -> Result<(), Unavailable> {
        lowest.offer(Ticket {
            ticket: ticket(seed, &entry.receipt_id),
            region: entry.region,
            receipt_id: entry.receipt_id,
            person: entry.person_digest,
        });
        Ok(())
    };
    let entries = region
        .records
        .each(&region.campaign.id, &mut visit)
        .await
        .map_err(|e| e.0)?;
    let winners = lowest.into_ranked();
    print(
        out,
        &json!({
            "campaign": region.campaign.id, "region": region.id, "seed": seed,
            "entries": entries, "winners": winners_json(&winners, false),
        }),
    )
}

/// A per-region draw again from a list of the region's receipt ids (one a line, as `export`
/// gives them), without the store: the store keeps one entry per person, so every receipt is
/// a person of its own and the winners are the store's.
pub(super) fn rerun(
    campaign: &Campaign,
    region: &str,
    args: &Args,
    now_ms: u64,
    out: &mut dyn Write,
) -> Result<(), String> {
    let (seed, winners) = checked(campaign, args, false, now_ms)?;
    let path = args.receipts.as_ref().ok_or("--receipts is required")?;
    let text =
        std::fs::read_to_string(path).map_err(|e| format!("--receipts {}: {e}", path.display()))?;
    let mut lowest = Lowest::new(winners);
    let mut entries = 0u64;
    for id in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if !is_id_of(region, id) {
            return Err(format!(
                "--receipts: {id} is not a receipt id of region {region}"
            ));
        }
        lowest.offer(Ticket {
            ticket: ticket(seed, id),
            receipt_id: id.to_owned(),
            region: region.to_owned(),
            person: None,
        });
        entries += 1;
    }
    let winners = lowest.into_ranked();
    print(
        out,
        &json!({
            "campaign": campaign.id, "region": region, "seed": seed,
            "entries": entries, "winners": winners_json(&winners, false),
        }),
    )
}

/// Refuses a region that `campaign`'s global draw leaves out.
pub(super) fn refuse_excluded(campaign: &Campaign, region: &str) -> Result<(), String> {
    match campaign.draw.as_ref().map(|d| &d.scope) {
        Some(DrawScope::Global { excluded }) if excluded.iter().any(|r| r == region) => {
            Err(format!(
                "region {region} is excluded from campaign {}'s global draw: its entries take no part and nothing of them leaves the region",
                campaign.id
            ))
        }
        _ => Ok(()),
    }
}

/// This region's candidates for a global draw: its lowest persons by the draw digest, which
/// every region computes alike; no field value.
pub(super) async fn candidates(
    region: &mut Region,
    args: &Args,
    now_ms: u64,
    out: &mut dyn Write,
) -> Result<(), String> {
    let campaign = region.campaign.clone();
    refuse_excluded(&campaign, &region.id)?;
    let (seed, winners) = checked(&campaign, args, true, now_ms)?;
    let rules = PersonRules::from_policy(&region.policy);
    let key = match rules.identifying(&campaign.id) {
        None => None,
        Some(_) => {
            let variable = args
                .draw_key_env
                .clone()
                .unwrap_or_else(|| draw_key_var(&campaign.id));
            Some(secret(&variable, "the campaign's draw key")?)
        }
    };
    let mut lowest = Lowest::new(winners);
    let mut visit = |entry: StoredEntry| -> Result<(), Unavailable> {
        let person = match &key {
            None => None,
            Some(key) => rules
                .draw_digest(key, &campaign.id, &entry.fields)
                .map_err(|code| {
                    Unavailable(format!(
                        "entry {} has no usable identifying values ({})",
                        entry.receipt_id,
                        code.as_str()
                    ))
                })?,
        };
        lowest.offer(Ticket {
            ticket: ticket(seed, &entry.receipt_id),
            region: entry.region,
            receipt_id: entry.receipt_id,
            person,
        });
        Ok(())
    };
    region
        .records
        .each(&campaign.id, &mut visit)
        .await
        .map_err(|e| e.0)?;
    let file = CandidateFile::new(&campaign.id, &region.id, lowest.into_ranked());
    let text = serde_json::to_string_pretty(&file).map_err(|e| e.to_string())?;
    print(out, &text)
}

/// The global winners from the regions' candidates files.
pub(super) fn merge(
    policy: &Policy,
    campaign: &Campaign,
    args: &Args,
    out: &mut dyn Write,
) -> Result<(), String> {
    let id = &campaign.id;
    let Some(DrawScope::Global { excluded }) = campaign.draw.as_ref().map(|d| &d.scope) else {
        return Err(format!(
            "campaign {id} has no global draw: nothing to merge"
        ));
    };
    let seed = args
        .seed
        .as_deref()
        .filter(|s| !s.is_empty())
        .ok_or("--seed is required: the seed the regions drew with")?;
    if args.files.is_empty() {
        return Err("give the regions' candidates files".into());
    }
    let mut files = Vec::new();
    for path in &args.files {
        let name = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| format!("{name}: {e}"))?;
        let file: CandidateFile = serde_json::from_str(&text)
            .map_err(|e| format!("{name}: not a candidates file: {e}"))?;
        files.push((name, file));
    }
    let taking_part: Vec<String> = policy
        .regions
        .iter()
        .map(|r| r.id.clone())
        .filter(|r| !excluded.contains(r))
        .collect();
    let draw = GlobalDraw {
        campaign: id,
        winners: campaign
            .draw
            .as_ref()
            .map_or(0, |d| usize::try_from(d.winners).unwrap_or(usize::MAX)),
        taking_part: &taking_part,
        excluded,
        seed,
    };
    let winners = draw.merge(&files)?;
    print(
        out,
        &json!({"campaign": id, "seed": seed, "winners": winners_json(&winners, true)}),
    )
}
