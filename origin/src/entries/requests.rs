//! A person's requests, in their region: access, erasure, withdrawal of marketing consent; and
//! the lookups of one entry (a winner's) and of the erasure records.

use std::io::Write;

use serde_json::{json, Map, Value};

use harbour_contract::env::person_key_var;
use harbour_contract::receipt::is_id_of;
use harbour_policy::field::FieldKind;

use super::setup::{print, secret, Args, Region};
use crate::person::PersonRules;

/// The person digest of the identifying values in `args`, as the origin computes it for one
/// entry per person (normalised, MACed with the region's person key).
fn person_digest(region: &Region, args: &Args) -> Result<String, String> {
    let campaign = &region.campaign.id;
    let rules = PersonRules::from_policy(&region.policy);
    let Some(identifying) = rules.identifying(campaign) else {
        return Err(format!(
            "campaign {campaign} has no one_entry_per: the region keeps no person digest for it, so its entries cannot be found by person"
        ));
    };
    let flags: Vec<String> = identifying
        .iter()
        .map(|f| format!("--{}", f.name))
        .collect();
    if let Some((name, _)) = args
        .identifying
        .iter()
        .find(|(name, _)| !identifying.iter().any(|f| &f.name == name))
    {
        return Err(format!(
            "--{name} is not an identifying field of campaign {campaign} ({})",
            flags.join(", ")
        ));
    }
    let mut fields = Map::new();
    for field in identifying {
        let (name, kind) = (&field.name, field.kind);
        let Some((_, text)) = args.identifying.iter().find(|(n, _)| n == name) else {
            return Err(format!(
                "campaign {campaign} identifies a person by {}: give each",
                flags.join(", ")
            ));
        };
        let value = match kind {
            FieldKind::Integer => text
                .trim()
                .parse::<i64>()
                .map(Value::from)
                .map_err(|_| format!("--{name}: not an integer"))?,
            _ => Value::from(text.as_str()),
        };
        fields.insert(name.clone(), value);
    }
    let variable = args
        .person_key_env
        .clone()
        .unwrap_or_else(|| person_key_var(&region.id));
    let key = secret(&variable, "the region's person key")?;
    match rules.digest(Some(&key), campaign, &Value::Object(fields)) {
        Ok(Some(digest)) => Ok(digest),
        Ok(None) => Err(format!("campaign {campaign} has no one_entry_per")),
        Err(code) => Err(format!(
            "the values given for {} identify no one ({}: empty, not an address, or an invisible character)",
            flags.join(", "),
            code.as_str()
        )),
    }
}

pub(super) async fn access(
    region: &mut Region,
    args: &Args,
    out: &mut dyn Write,
) -> Result<(), String> {
    let person = person_digest(region, args)?;
    let entries = region
        .records
        .by_person(&region.campaign.id, &person)
        .await
        .map_err(|e| e.0)?;
    let entries: Vec<Value> = entries.iter().map(|e| e.to_json()).collect();
    print(
        out,
        &json!({"campaign": region.campaign.id, "region": region.id, "entries": entries}),
    )
}

pub(super) async fn erase(
    region: &mut Region,
    args: &Args,
    now_ms: u64,
    out: &mut dyn Write,
) -> Result<(), String> {
    let person = person_digest(region, args)?;
    let erased = region
        .records
        .erase(&region.id, &region.campaign.id, &person, now_ms)
        .await
        .map_err(|e| e.0)?;
    print(
        out,
        &json!({
            "campaign": region.campaign.id, "region": region.id, "erased": erased.entries,
            "at_ms": now_ms, "log_truncated": erased.log_truncated,
        }),
    )
}

pub(super) async fn withdraw(
    region: &mut Region,
    args: &Args,
    now_ms: u64,
    out: &mut dyn Write,
) -> Result<(), String> {
    let campaign = &region.campaign;
    let Some(field) = campaign.fields.iter().find(|f| f.marketing_consent) else {
        return Err(format!(
            "campaign {} has no marketing consent field",
            campaign.id
        ));
    };
    let field = field.name.clone();
    let person = person_digest(region, args)?;
    let withdrawn = region
        .records
        .withdraw(&region.campaign.id, &person, &field, now_ms)
        .await
        .map_err(|e| e.0)?;
    print(
        out,
        &json!({
            "campaign": region.campaign.id, "region": region.id, "withdrawn": withdrawn,
            "field": field, "at_ms": now_ms,
        }),
    )
}

pub(super) async fn entry(
    region: &mut Region,
    args: &Args,
    out: &mut dyn Write,
) -> Result<(), String> {
    let receipt = args.receipt.as_deref().ok_or("--receipt is required")?;
    if !is_id_of(&region.id, receipt) {
        return Err(format!(
            "{receipt} is not a receipt id of region {}",
            region.id
        ));
    }
    let found = region
        .records
        .by_receipt(&region.campaign.id, receipt)
        .await
        .map_err(|e| e.0)?;
    let found = found.ok_or(format!(
        "no entry of campaign {} has receipt {receipt} in region {}",
        region.campaign.id, region.id
    ))?;
    print(out, &found.to_json())
}

pub(super) async fn erasures(region: &mut Region, out: &mut dyn Write) -> Result<(), String> {
    let records = region
        .records
        .erasures(&region.campaign.id)
        .await
        .map_err(|e| e.0)?;
    for r in records {
        print(
            out,
            &json!({"at_ms": r.at_ms, "region": r.region, "campaign": r.campaign, "entries": r.entries}),
        )?;
    }
    Ok(())
}
