//! Fair draws from a seed published after the campaign closes (`docs/residency.md`, "Drawing
//! winners"). Rules:
//!
//! - an entry's **ticket** is `HMAC-SHA256(seed, receipt id)` in lowercase hex, the seed being
//!   the bytes of its text as published; a visitor cannot choose a receipt id (the store derives
//!   it from the row's number under its own key), and before the seed is out no one can compute
//!   a ticket;
//! - tickets rank by value (64 lowercase hex digits compare as numbers); equal tickets, which
//!   only equal receipt ids would make, rank by receipt id: the order is total;
//! - **one entry per person**: a person's lowest ticket stands for them; an entry without a
//!   person digest (a campaign without `one_entry_per`) is a person of its own;
//! - the `winners` lowest persons win, in ticket order; the same seed and entries give the same
//!   winners whatever order the entries are read in.
//!
//! A **global draw** ranks every region's entries together without moving them: each region
//! sends its `winners` lowest persons (ticket, receipt id, and a person digest under the
//! campaign's draw key, comparable across regions: `person::PersonRules::draw_digest`). That is
//! enough: a global winner's lowest ticket is in the region that holds it, and anyone ranking
//! above it there ranks above it globally too, so fewer than `winners` do. The merge takes
//! exactly one file from each region taking part and none from a region the policy excludes,
//! checks every ticket against the seed and every receipt id against its file's region, and
//! ranks the union by the same rules, so a person who entered in several regions counts once.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use harbour_contract::receipt::is_id_of;
use harbour_contract::signature::hex;

/// What a candidates file says it is.
pub const CANDIDATES_FORMAT: &str = "harbour-draw-candidates/1";

/// An entry's ticket: `HMAC-SHA256(seed, receipt id)`, lowercase hex.
pub fn ticket(seed: &str, receipt_id: &str) -> String {
    // HMAC takes a key of any length: this cannot fail.
    match Hmac::<Sha256>::new_from_slice(seed.as_bytes()) {
        Ok(mut mac) => {
            mac.update(receipt_id.as_bytes());
            hex(&mac.finalize().into_bytes())
        }
        Err(_) => String::new(),
    }
}

/// An entry in a draw.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ticket {
    pub ticket: String,
    pub receipt_id: String,
    /// The region holding the entry.
    pub region: String,
    /// The person digest; `None`: the entry is a person of its own.
    pub person: Option<String>,
}

impl Ticket {
    fn rank(&self) -> (String, String) {
        (self.ticket.clone(), self.receipt_id.clone())
    }
}

/// The `n` lowest tickets seen, one per person, kept as entries stream past (memory for `n`
/// entries, not for all of them).
pub struct Lowest {
    n: usize,
    ranked: BTreeMap<(String, String), Ticket>,
    /// Where each person of `ranked` stands.
    people: HashMap<String, (String, String)>,
}

impl Lowest {
    pub fn new(n: usize) -> Lowest {
        Lowest {
            n,
            ranked: BTreeMap::new(),
            people: HashMap::new(),
        }
    }

    /// Takes `entry` if it is among the `n` lowest persons so far. A person already held keeps
    /// their lower ticket. A person pushed out may come back with a lower ticket later: a
    /// person among the final `n` is never pushed out after their lowest ticket came, since
    /// that takes `n` other persons ranking lower.
    pub fn offer(&mut self, entry: Ticket) {
        let rank = entry.rank();
        if let Some(person) = &entry.person {
            if let Some(held) = self.people.get(person) {
                if *held <= rank {
                    return;
                }
                let held = held.clone();
                self.ranked.remove(&held);
                self.people.remove(person);
            }
        }
        if self.ranked.len() >= self.n {
            match self.ranked.last_key_value() {
                Some((last, _)) if *last > rank => {}
                _ => return,
            }
            if let Some((_, out)) = self.ranked.pop_last() {
                if let Some(person) = out.person {
                    self.people.remove(&person);
                }
            }
        }
        if let Some(person) = &entry.person {
            self.people.insert(person.clone(), rank.clone());
        }
        self.ranked.insert(rank, entry);
    }

    /// The persons held, lowest ticket first.
    pub fn into_ranked(self) -> Vec<Ticket> {
        self.ranked.into_values().collect()
    }
}

/// A region's contribution to a global draw: its lowest persons, pseudonymous.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CandidateFile {
    pub format: String,
    pub campaign: String,
    pub region: String,
    pub candidates: Vec<Candidate>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Candidate {
    pub ticket: String,
    pub receipt_id: String,
    /// The draw digest (64 hex digits), or `null` for an entry that is a person of its own.
    pub person: Option<String>,
}

impl CandidateFile {
    /// A region's file from its lowest persons.
    pub fn new(campaign: &str, region: &str, lowest: Vec<Ticket>) -> CandidateFile {
        CandidateFile {
            format: CANDIDATES_FORMAT.into(),
            campaign: campaign.into(),
            region: region.into(),
            candidates: lowest
                .into_iter()
                .map(|t| Candidate {
                    ticket: t.ticket,
                    receipt_id: t.receipt_id,
                    person: t.person,
                })
                .collect(),
        }
    }
}

/// What a merge is for: the campaign, its winners, the regions that take part, the seed.
pub struct GlobalDraw<'a> {
    pub campaign: &'a str,
    pub winners: usize,
    pub taking_part: &'a [String],
    pub excluded: &'a [String],
    pub seed: &'a str,
}

impl GlobalDraw<'_> {
    /// The global winners from the regions' files, each `(name, file)` with the name used in
    /// errors; an error names the file and what is wrong with it.
    pub fn merge(&self, files: &[(String, CandidateFile)]) -> Result<Vec<Ticket>, String> {
        let mut seen = BTreeSet::new();
        let mut lowest = Lowest::new(self.winners);
        for (name, file) in files {
            self.check(name, file)?;
            if !seen.insert(file.region.as_str()) {
                return Err(format!(
                    "{name}: a second file from region {}; each region sends one",
                    file.region
                ));
            }
            for c in &file.candidates {
                lowest.offer(Ticket {
                    ticket: c.ticket.clone(),
                    receipt_id: c.receipt_id.clone(),
                    region: file.region.clone(),
                    person: c.person.clone(),
                });
            }
        }
        let missing: Vec<&str> = self
            .taking_part
            .iter()
            .map(String::as_str)
            .filter(|r| !seen.contains(r))
            .collect();
        if !missing.is_empty() {
            return Err(format!(
                "no candidates from region(s) {}: every region taking part sends its file",
                missing.join(", ")
            ));
        }
        Ok(lowest.into_ranked())
    }

    fn check(&self, name: &str, file: &CandidateFile) -> Result<(), String> {
        if file.format != CANDIDATES_FORMAT {
            return Err(format!("{name}: not a candidates file ({:?})", file.format));
        }
        if file.campaign != self.campaign {
            return Err(format!(
                "{name}: candidates of campaign {}, not {}",
                file.campaign, self.campaign
            ));
        }
        if self.excluded.contains(&file.region) {
            return Err(format!(
                "{name}: region {} is excluded from campaign {}'s global draw; its candidates must not leave it",
                file.region, self.campaign
            ));
        }
        if !self.taking_part.contains(&file.region) {
            return Err(format!(
                "{name}: region {} is not in the policy",
                file.region
            ));
        }
        if file.candidates.len() > self.winners {
            return Err(format!(
                "{name}: {} candidates, more than the draw's {} winners",
                file.candidates.len(),
                self.winners
            ));
        }
        for c in &file.candidates {
            if !is_id_of(&file.region, &c.receipt_id) {
                return Err(format!(
                    "{name}: {} is not a receipt id of region {}",
                    c.receipt_id, file.region
                ));
            }
            if ticket(self.seed, &c.receipt_id) != c.ticket {
                return Err(format!(
                    "{name}: the ticket of {} is not this seed's (made with another seed?)",
                    c.receipt_id
                ));
            }
            // Lowercase only: one person must have one spelling, or they would count twice.
            let is_digest = |d: &str| {
                d.len() == 64 && d.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
            };
            if !c.person.as_deref().is_none_or(is_digest) {
                return Err(format!(
                    "{name}: the person of {} is not a digest",
                    c.receipt_id
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(seed: &str, region: &str, n: u64, person: Option<&str>) -> Ticket {
        let receipt_id = harbour_contract::receipt::id(region, n);
        Ticket {
            ticket: ticket(seed, &receipt_id),
            receipt_id,
            region: region.into(),
            person: person.map(str::to_owned),
        }
    }

    /// The definition, by brute force: every person's lowest ticket, sorted, the first `n`.
    fn by_definition(entries: &[Ticket], n: usize) -> Vec<Ticket> {
        let mut best: BTreeMap<String, Ticket> = BTreeMap::new();
        for e in entries {
            let who = e.person.clone().unwrap_or_else(|| e.receipt_id.clone());
            match best.get(&who) {
                Some(held) if held.rank() <= e.rank() => {}
                _ => {
                    best.insert(who, e.clone());
                }
            }
        }
        let mut all: Vec<Ticket> = best.into_values().collect();
        all.sort_by_key(Ticket::rank);
        all.truncate(n);
        all
    }

    #[test]
    fn a_ticket_is_the_hmac_of_the_receipt_id_under_the_seed() {
        // RFC 4231 test case 2: HMAC-SHA256("Jefe", "what do ya want for nothing?").
        assert_eq!(
            ticket("Jefe", "what do ya want for nothing?"),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        assert_ne!(ticket("seed-a", "eu-0"), ticket("seed-b", "eu-0"));
    }

    #[test]
    fn the_lowest_are_the_definitions_whatever_the_order_and_one_per_person() {
        let seed = "2027-07-01 published seed";
        // 300 entries of 120 persons (some entries with no person), in three orders.
        let mut entries: Vec<Ticket> = (0..300u64)
            .map(|n| {
                let person = format!("{:064x}", n % 120);
                entry(seed, "eu", n, (n % 7 != 0).then_some(person.as_str()))
            })
            .collect();
        for n in [1, 5, 40] {
            let expected = by_definition(&entries, n);
            for _ in 0..3 {
                let mut lowest = Lowest::new(n);
                for e in &entries {
                    lowest.offer(e.clone());
                }
                assert_eq!(lowest.into_ranked(), expected, "n = {n}");
                entries.reverse();
                entries.rotate_left(17);
            }
        }
    }

    const SHARED: &str = "0000000000000000000000000000000000000000000000000000000000000007";

    /// Three regions' files of 20 entries each; in every region the lowest ticket is the
    /// entry of one person who entered in all three.
    fn files(seed: &str) -> Vec<(String, CandidateFile)> {
        let regions = [("eu", 0u64), ("cn", 100), ("ru", 200)];
        regions
            .iter()
            .map(|(region, base)| {
                let entries: Vec<Ticket> = (0..20)
                    .map(|n| entry(seed, region, base + n, None))
                    .collect();
                let first = entries.iter().map(Ticket::rank).min().unwrap();
                let mut lowest = Lowest::new(3);
                for (n, mut e) in entries.into_iter().enumerate() {
                    e.person = Some(if e.rank() == first {
                        SHARED.to_owned()
                    } else {
                        format!("{:064x}", base + 1000 + n as u64)
                    });
                    lowest.offer(e);
                }
                (
                    format!("{region}.json"),
                    CandidateFile::new("c", region, lowest.into_ranked()),
                )
            })
            .collect()
    }

    #[test]
    fn a_merge_counts_a_person_once_and_checks_every_file() {
        let seed = "merge seed";
        let regions = ["eu".to_owned(), "cn".to_owned(), "ru".to_owned()];
        let draw = GlobalDraw {
            campaign: "c",
            winners: 3,
            taking_part: &regions,
            excluded: &[],
            seed,
        };
        let files = files(seed);
        for (_, file) in &files {
            assert_eq!(file.candidates[0].person.as_deref(), Some(SHARED));
        }
        let winners = draw.merge(&files).unwrap();
        let shared = winners
            .iter()
            .filter(|w| w.person.as_deref() == Some(SHARED))
            .count();
        assert_eq!(shared, 1, "{winners:?}");
        assert_eq!(winners.len(), 3);
        let all: Vec<Ticket> = files
            .iter()
            .flat_map(|(_, f)| {
                f.candidates.iter().map(|c| Ticket {
                    ticket: c.ticket.clone(),
                    receipt_id: c.receipt_id.clone(),
                    region: f.region.clone(),
                    person: c.person.clone(),
                })
            })
            .collect();
        assert_eq!(winners, by_definition(&all, 3));
        let people: BTreeSet<_> = winners.iter().map(|w| w.person.clone()).collect();
        assert_eq!(people.len(), winners.len());
        // Files in another order: the same winners.
        let mut reordered = files.clone();
        reordered.reverse();
        assert_eq!(draw.merge(&reordered).unwrap(), winners);
        let refused = |files: &[(String, CandidateFile)]| draw.merge(files).unwrap_err();
        assert!(
            refused(&files[..2]).contains("ru"),
            "{}",
            refused(&files[..2])
        );
        let mut twice = files.clone();
        twice.push(files[0].clone());
        assert!(refused(&twice).contains("second file"));
        let other_seed = GlobalDraw {
            seed: "another seed",
            ..draw
        };
        assert!(other_seed
            .merge(&files)
            .unwrap_err()
            .contains("another seed"));
        let mut forged = files.clone();
        forged[1].1.candidates[0].receipt_id = "eu-0000000000000001".into();
        assert!(refused(&forged).contains("not a receipt id of region cn"));
        let excluded = ["cn".to_owned()];
        let without_cn = GlobalDraw {
            excluded: &excluded,
            ..draw
        };
        assert!(without_cn.merge(&files).unwrap_err().contains("excluded"));
    }
}
