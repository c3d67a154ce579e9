//! What every command starts from: its arguments, the policy, and the region's store opened for
//! the campaign; and how it prints.

use std::io::Write;
use std::path::PathBuf;

use harbour_contract::env::STORE_VAR;
use harbour_contract::signature::SigningKey;
use harbour_policy::{Campaign, Policy};

use crate::store::records::Records;
use crate::store::Location;

pub const USAGE: &str = "usage: harbour-entries COMMAND --region ID --campaign ID [options]
  access     --<field> VALUE…       a person's entries, as JSON
  erase      --<field> VALUE…       deletes a person's entries; keeps an erasure record
  withdraw   --<field> VALUE…       withdraws a person's marketing consent
  export     [--format csv|jsonl]   every entry of the campaign, in stable order
  entry      --receipt ID           one entry (a winner's), as JSON
  erasures                          the campaign's erasure records, as JSON lines
  draw       --seed SEED [--receipts FILE]   a per-region draw's winners
  candidates --seed SEED            this region's candidates for a global draw
  merge      --seed SEED FILE…      a global draw's winners from the regions' candidates
                                    (no --region, no store)
options: (--db FILE | --store sqlite:FILE | --store postgres://… | HARBOUR_STORE=…)
         [--policy FILE] [--person-key-env VAR] [--draw-key-env VAR]
         identifying values as --<field> VALUE (--email ada@example.org) or --field NAME=VALUE";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Command {
    Access,
    Erase,
    Withdraw,
    Export,
    Entry,
    Erasures,
    Draw,
    Candidates,
    Merge,
}

impl Command {
    fn parse(name: &str) -> Option<Command> {
        Some(match name {
            "access" => Command::Access,
            "erase" => Command::Erase,
            "withdraw" => Command::Withdraw,
            "export" => Command::Export,
            "entry" => Command::Entry,
            "erasures" => Command::Erasures,
            "draw" => Command::Draw,
            "candidates" => Command::Candidates,
            "merge" => Command::Merge,
            _ => return None,
        })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Csv,
    JsonLines,
}

/// The command line, read.
#[derive(Clone, Debug)]
pub struct Args {
    pub command: Command,
    pub region: Option<String>,
    pub campaign: Option<String>,
    pub store: Option<Location>,
    pub policy: Option<PathBuf>,
    pub person_key_env: Option<String>,
    pub draw_key_env: Option<String>,
    pub seed: Option<String>,
    pub format: Format,
    pub receipt: Option<String>,
    pub receipts: Option<PathBuf>,
    /// Identifying values, `(field, value)`, as given.
    pub identifying: Vec<(String, String)>,
    /// Positional arguments: `merge`'s candidates files.
    pub files: Vec<PathBuf>,
}

/// Reads the command line (without the program's name). `Err("")` asks for the usage alone.
pub fn parse(mut args: impl Iterator<Item = String>) -> Result<Args, String> {
    let command = match args.next().as_deref() {
        None | Some("--help" | "-h" | "help") => return Err(String::new()),
        Some(name) => Command::parse(name).ok_or(format!("unknown command {name:?}"))?,
    };
    let mut out = Args {
        command,
        region: None,
        campaign: None,
        store: None,
        policy: None,
        person_key_env: None,
        draw_key_env: None,
        seed: None,
        format: Format::Csv,
        receipt: None,
        receipts: None,
        identifying: Vec::new(),
        files: Vec::new(),
    };
    while let Some(arg) = args.next() {
        let Some(flag) = arg.strip_prefix("--") else {
            out.files.push(PathBuf::from(arg));
            continue;
        };
        let value = args.next().ok_or(format!("--{flag} needs a value"))?;
        match flag {
            "region" => out.region = Some(value),
            "campaign" => out.campaign = Some(value),
            "db" => out.store = Some(Location::Sqlite(PathBuf::from(value))),
            "store" => {
                out.store = Some(Location::parse(&value).map_err(|e| format!("--store: {e}"))?)
            }
            "policy" => out.policy = Some(PathBuf::from(value)),
            "person-key-env" => out.person_key_env = Some(value),
            "draw-key-env" => out.draw_key_env = Some(value),
            "seed" => out.seed = Some(value),
            "receipt" => out.receipt = Some(value),
            "receipts" => out.receipts = Some(PathBuf::from(value)),
            "format" => {
                out.format = match value.as_str() {
                    "csv" => Format::Csv,
                    "jsonl" => Format::JsonLines,
                    other => return Err(format!("--format: {other:?} is not csv or jsonl")),
                }
            }
            "field" => {
                let (name, value) = value.split_once('=').ok_or("--field takes NAME=VALUE")?;
                out.identifying.push((name.to_owned(), value.to_owned()));
            }
            // Any other flag names an identifying field; the campaign says which it needs.
            name => out.identifying.push((name.to_owned(), value)),
        }
    }
    Ok(out)
}

/// A secret from the environment: the variable `name`, at least 32 bytes.
pub(super) fn secret(name: &str, what: &str) -> Result<SigningKey, String> {
    let value = std::env::var(name).map_err(|_| format!("{name} is not set: it holds {what}"))?;
    SigningKey::new(value.as_bytes()).ok_or(format!("{name} must be at least 32 bytes"))
}

/// The shipped policy, or `--policy FILE`.
pub fn load_policy(path: Option<&PathBuf>) -> Result<Policy, String> {
    match path {
        None => Policy::shipped().map_err(|e| format!("the shipped policy: {e}")),
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("--policy {}: {e}", path.display()))?;
            Policy::parse(&text).map_err(|e| format!("--policy {}: {e}", path.display()))
        }
    }
}

/// What every command but `merge` works on: the policy, one of its regions and campaigns, and
/// that region's store.
pub struct Region {
    pub policy: Policy,
    pub id: String,
    pub campaign: Campaign,
    pub records: Records,
}

/// The campaign `args` names, if the policy holds it.
pub(super) fn campaign(policy: &Policy, args: &Args) -> Result<Campaign, String> {
    let id = args.campaign.as_deref().ok_or("--campaign is required")?;
    policy
        .campaign(id)
        .cloned()
        .ok_or(format!("campaign {id} is not in the policy"))
}

impl Region {
    /// Opens the region's store for `campaign`, refusing a region the policy does not hold and
    /// a store holding another region's entries of the campaign.
    pub async fn open(policy: Policy, campaign: Campaign, args: &Args) -> Result<Region, String> {
        let id = region_id(&policy, args)?;
        let location = match &args.store {
            Some(location) => location.clone(),
            None => match std::env::var(STORE_VAR) {
                Ok(text) => Location::parse(&text).map_err(|e| format!("{STORE_VAR}: {e}"))?,
                Err(_) => return Err(format!("--db, --store or {STORE_VAR} is required")),
            },
        };
        let mut records = Records::open(&location, &id)
            .await
            .map_err(|e| format!("cannot open the store {}: {e}", location.describe()))?;
        let foreign = records
            .foreign_region(&campaign.id, &id)
            .await
            .map_err(|e| e.0)?;
        if let Some(other) = foreign {
            return Err(format!(
                "the store {} holds region {other}'s entries of campaign {}, not region {id}'s",
                location.describe(),
                campaign.id
            ));
        }
        Ok(Region {
            policy,
            id,
            campaign,
            records,
        })
    }
}

/// The region `args` names, if the policy holds it.
pub(super) fn region_id(policy: &Policy, args: &Args) -> Result<String, String> {
    let id = args.region.clone().ok_or("--region is required")?;
    if policy.region_index(&id).is_none() {
        return Err(format!("region {id} is not in the policy"));
    }
    Ok(id)
}

/// Writes one line (a JSON document) to `out`.
pub(super) fn print(out: &mut dyn Write, line: &impl std::fmt::Display) -> Result<(), String> {
    writeln!(out, "{line}").map_err(|e| format!("cannot write the output: {e}"))
}
