//! `harbour-entries`: what the campaign team and the data-protection officer do with a region's
//! entries, run in that region against its store (README, "For the campaign team and the
//! data-protection officer"). Rules:
//!
//! - every command but `merge` reads one region's store and prints to stdout; nothing is sent
//!   anywhere, so what it prints stays where it runs (run it in the region);
//! - it refuses, with one line naming it and a nonzero exit, a region or campaign the policy
//!   does not hold, a store holding another region's entries of the campaign, a receipt id of
//!   another region, a draw the policy does not make, and a global draw's candidates from a
//!   region the policy excludes;
//! - secrets come from the environment only, as the origin's do: the region's person key
//!   (`HARBOUR_PERSON_KEY_<REGION>`), a campaign's draw key (`HARBOUR_DRAW_KEY_<CAMPAIGN>`) and a
//!   store URL with a password (`HARBOUR_STORE`); the store and policy are named as the origin
//!   names them (`--store`, `--db`, `HARBOUR_STORE`; `--policy FILE` or the shipped policy);
//! - a person is found as the origin matches one entry per person: their identifying values
//!   normalised and MACed with the region's person key (`person`), so an address spelled with
//!   other case or spaces finds the same entries;
//! - time is an input: `run` takes `now_ms`.

mod draws;
mod export;
mod requests;
mod setup;

use std::io::Write;

use setup::{campaign, region_id};
pub use setup::{load_policy, parse, Args, Command, Format, Region, USAGE};

/// Runs the command; what it prints goes to `out`. `Err`: one line saying what was refused.
pub async fn run(args: &Args, now_ms: u64, out: &mut dyn Write) -> Result<(), String> {
    let about_a_person = matches!(
        args.command,
        Command::Access | Command::Erase | Command::Withdraw
    );
    if let Some((name, _)) = args.identifying.first().filter(|_| !about_a_person) {
        return Err(format!("unknown option --{name}"));
    }
    if let Some(file) = args
        .files
        .first()
        .filter(|_| args.command != Command::Merge)
    {
        return Err(format!("unexpected argument {}", file.display()));
    }
    let policy = load_policy(args.policy.as_ref())?;
    let campaign = campaign(&policy, args)?;
    match args.command {
        Command::Merge => return draws::merge(&policy, &campaign, args, out),
        Command::Draw if args.receipts.is_some() => {
            let region = region_id(&policy, args)?;
            return draws::rerun(&campaign, &region, args, now_ms, out);
        }
        // Refused before any store is opened: nothing of an excluded region is read.
        Command::Candidates => draws::refuse_excluded(&campaign, &region_id(&policy, args)?)?,
        _ => {}
    }
    let mut region = Region::open(policy, campaign, args).await?;
    match args.command {
        Command::Access => requests::access(&mut region, args, out).await,
        Command::Erase => requests::erase(&mut region, args, now_ms, out).await,
        Command::Withdraw => requests::withdraw(&mut region, args, now_ms, out).await,
        Command::Entry => requests::entry(&mut region, args, out).await,
        Command::Erasures => requests::erasures(&mut region, out).await,
        Command::Export => export::export(&mut region, args.format, out).await,
        Command::Draw => draws::draw(&mut region, args, now_ms, out).await,
        Command::Candidates => draws::candidates(&mut region, args, now_ms, out).await,
        Command::Merge => Ok(()),
    }
}
