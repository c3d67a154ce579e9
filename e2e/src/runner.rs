//! Runs named scenarios on one stack, for the end-to-end suites that share a stack across
//! scenarios (`tests/stack.rs`, `tests/postgres.rs`): the words on the command line choose
//! scenarios by substring, and a word that chooses none is an error before anything starts, so a
//! mistyped filter never ends in "0 passed, 0 failed". One line per scenario, the worker log's
//! tail when one fails, and a closing "e2e: N passed, M failed".

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::Instant;

use crate::stack::Stack;

pub type Scenario = (&'static str, fn(&mut Stack));

/// The scenarios `words` choose (all of them when there are no words), in their order; an error
/// naming every word that chooses none.
pub fn select(words: &[String], scenarios: Vec<Scenario>) -> Result<Vec<Scenario>, String> {
    if words.is_empty() {
        return Ok(scenarios);
    }
    let unmatched: Vec<&str> = words
        .iter()
        .filter(|w| !scenarios.iter().any(|(name, _)| name.contains(w.as_str())))
        .map(String::as_str)
        .collect();
    if !unmatched.is_empty() {
        let names: Vec<&str> = scenarios.iter().map(|(name, _)| *name).collect();
        return Err(format!(
            "no scenario matches {unmatched:?}; the scenarios are:\n  {}",
            names.join("\n  ")
        ));
    }
    Ok(scenarios
        .into_iter()
        .filter(|(name, _)| words.iter().any(|w| name.contains(w.as_str())))
        .collect())
}

/// The scenarios the command line's words choose; exits with status 1, naming the words, when
/// one chooses none. Call it before starting the stack.
pub fn chosen(scenarios: Vec<Scenario>) -> Vec<Scenario> {
    let words: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    select(&words, scenarios).unwrap_or_else(|problem| {
        println!("e2e: {problem}");
        println!("e2e: 0 passed, 1 failed");
        std::process::exit(1);
    })
}

/// Runs `scenarios` on `stack`, one line each, then stops the stack. Whether all passed.
#[must_use]
pub fn run(mut stack: Stack, started: Instant, scenarios: Vec<Scenario>) -> bool {
    println!(
        "e2e: stack up in {:.1} s (worker on 127.0.0.1:{})",
        started.elapsed().as_secs_f64(),
        stack.port
    );
    let (mut passed, mut failed) = (0, 0);
    for (name, scenario) in scenarios {
        let t = Instant::now();
        match catch_unwind(AssertUnwindSafe(|| scenario(&mut stack))) {
            Ok(()) => {
                passed += 1;
                println!("test {name} ... ok ({:.1} s)", t.elapsed().as_secs_f64());
            }
            Err(_) => {
                failed += 1;
                println!("test {name} ... FAILED");
            }
        }
    }
    if failed > 0 {
        let log = stack.worker_log();
        let tail: Vec<&str> = log.lines().rev().take(40).collect();
        println!("--- last lines of the worker log ---");
        for line in tail.into_iter().rev() {
            println!("{line}");
        }
    }
    drop(stack);
    println!("e2e: {passed} passed, {failed} failed");
    failed == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn noop(_: &mut Stack) {}

    fn all() -> Vec<Scenario> {
        vec![("one_entry_per_person", noop), ("same_key_twice", noop)]
    }

    fn names(chosen: Vec<Scenario>) -> Vec<&'static str> {
        chosen.into_iter().map(|(name, _)| name).collect()
    }

    #[test]
    fn no_words_choose_every_scenario_and_a_word_chooses_by_substring() {
        assert_eq!(names(select(&[], all()).unwrap()).len(), 2);
        let chosen = select(&["person".to_owned()], all()).unwrap();
        assert_eq!(names(chosen), ["one_entry_per_person"]);
    }

    #[test]
    fn a_word_that_chooses_nothing_is_an_error_naming_it() {
        let words = ["person".to_owned(), "persno".to_owned()];
        let error = select(&words, all()).expect_err("an error");
        assert!(error.contains("\"persno\""), "{error}");
        assert!(!error.contains("[\"person\""), "{error}");
    }
}
