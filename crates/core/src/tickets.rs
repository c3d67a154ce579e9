//! What the isolate holds while the shell awaits the platform: requests awaiting the location's
//! binding, and forwards awaiting an origin. The shell passes only a number between calls; what
//! it stands for stays here, in the isolate's memory.

use std::collections::VecDeque;

/// Something filed while the shell awaits the platform, dropped after a time of its own.
pub trait Filed {
    /// When to drop it if it is never taken back.
    fn drop_after_ms(&self) -> u64;
}

/// Entries filed under increasing ids. One whose request never reports back (the visitor went
/// away and the handler was cancelled) is dropped once its time has passed, and the oldest goes
/// first past `max` entries.
#[derive(Debug)]
pub struct TicketBook<T> {
    /// Id of `entries[0]`; ids grow by one per entry.
    first_id: u64,
    /// `(dropped after, entry)`; `None` once taken.
    entries: VecDeque<Option<(u64, T)>>,
    max: usize,
}

/// More entries than this in one book (a flood of requests whose handlers never report back)
/// evicts the oldest; a report for an evicted entry is answered 503 with retry advice.
pub const MAX_FILED: usize = 100_000;

impl<T: Filed> Default for TicketBook<T> {
    fn default() -> TicketBook<T> {
        TicketBook::with_max(MAX_FILED)
    }
}

impl<T: Filed> TicketBook<T> {
    /// A book that holds at most `max` entries.
    pub fn with_max(max: usize) -> TicketBook<T> {
        TicketBook {
            first_id: 0,
            entries: VecDeque::new(),
            max: max.max(1),
        }
    }

    /// Files a ticket and returns its id. Drops what has expired at `now_ms` first.
    pub fn file(&mut self, ticket: T, now_ms: u64) -> u64 {
        self.expire(now_ms);
        let drop_after = ticket.drop_after_ms();
        self.entries.push_back(Some((drop_after, ticket)));
        self.first_id + self.entries.len() as u64 - 1
    }

    /// Takes the ticket filed under `id`, once.
    pub fn take(&mut self, id: u64) -> Option<T> {
        let index = usize::try_from(id.checked_sub(self.first_id)?).ok()?;
        let ticket = self.entries.get_mut(index)?.take().map(|(_, t)| t);
        self.trim();
        ticket
    }

    pub fn len(&self) -> usize {
        self.entries.iter().filter(|e| e.is_some()).count()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn expire(&mut self, now_ms: u64) {
        while let Some(front) = self.entries.front() {
            let expired = front.as_ref().is_none_or(|(after, _)| *after <= now_ms);
            if !expired && self.entries.len() < self.max {
                break;
            }
            self.entries.pop_front();
            self.first_id += 1;
        }
    }

    fn trim(&mut self) {
        while matches!(self.entries.front(), Some(None)) {
            self.entries.pop_front();
            self.first_id += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq)]
    struct Note {
        filed_ms: u64,
    }

    const LIFE_MS: u64 = 10_000;

    impl Filed for Note {
        fn drop_after_ms(&self) -> u64 {
            self.filed_ms + LIFE_MS
        }
    }

    fn ticket(filed_ms: u64) -> Note {
        Note { filed_ms }
    }

    #[test]
    fn tickets_are_taken_once_and_dropped_after_their_deadline() {
        let mut book = TicketBook::<Note>::default();
        let a = book.file(ticket(1_000), 1_000);
        let b = book.file(ticket(1_001), 1_001);
        assert_ne!(a, b);
        assert_eq!(book.take(b).map(|t| t.filed_ms), Some(1_001));
        assert_eq!(book.take(b), None, "taken once");
        assert_eq!(book.take(b + 1), None, "never filed");
        assert_eq!(book.len(), 1);
        // A retry files the ticket again under a new id.
        let a_ticket = book.take(a).unwrap();
        let a2 = book.file(a_ticket, 1_500);
        assert!(a2 > b);
        assert!(book.take(a).is_none());
        // A request that never reports back is dropped once its deadline and grace have passed.
        book.file(ticket(2_000), 2_000);
        assert_eq!(book.len(), 2);
        book.file(ticket(20_000), 2_000 + LIFE_MS);
        assert_eq!(book.len(), 1);
        assert!(book.take(a2).is_none());
    }

    #[test]
    fn the_ticket_book_is_bounded() {
        let mut book = TicketBook::<Note>::default();
        for _ in 0..MAX_FILED + 10 {
            book.file(ticket(5), 5);
        }
        assert_eq!(book.len(), MAX_FILED);
        assert!(book.take(0).is_none(), "the oldest went first");
        assert!(book.take(10).is_some());
    }
}
