//! [`RaftLog`]: the in-memory copy of the replicated log that the core reasons about.
//!
//! The core keeps every entry it holds in memory (storage is written through, and read only at
//! start), so no protocol step ever waits on a disk read. Memory is bounded by log compaction.
//!
//! Invariant: `entries[i].index == first_index + i`, and terms never decrease along the log.

use crate::message::Entry;
use crate::types::{LogId, LogIndex, Term};

/// The entries a node holds, contiguous from index 1.
#[derive(Clone, Debug, Default)]
pub(crate) struct RaftLog {
    entries: Vec<Entry>,
}

impl RaftLog {
    /// A log holding `entries`, which must be contiguous from index 1 with non-decreasing
    /// terms; otherwise a description of what is wrong.
    pub(crate) fn from_entries(entries: Vec<Entry>) -> Result<Self, String> {
        for (position, entry) in entries.iter().enumerate() {
            if entry.index.0 != position as u64 + 1 {
                return Err(format!(
                    "stored log entry {} holds index {} (entries must be contiguous from 1)",
                    position + 1,
                    entry.index
                ));
            }
        }
        for pair in entries.windows(2) {
            if pair[0].term > pair[1].term {
                return Err(format!(
                    "stored log terms decrease: {} is followed by {}",
                    pair[0].log_id(),
                    pair[1].log_id()
                ));
            }
        }
        Ok(RaftLog { entries })
    }

    /// The index of the last entry, or 0 for an empty log.
    pub(crate) fn last_index(&self) -> LogIndex {
        LogIndex(self.entries.len() as u64)
    }

    /// The term and index of the last entry (`0@0` for an empty log).
    pub(crate) fn last_log_id(&self) -> LogId {
        self.entries.last().map(Entry::log_id).unwrap_or_default()
    }

    /// The term of the entry at `index`: `Some(Term(0))` for index 0, `None` past the end.
    pub(crate) fn term_at(&self, index: LogIndex) -> Option<Term> {
        if index.0 == 0 {
            return Some(Term(0));
        }
        self.entry(index).map(|entry| entry.term)
    }

    /// The entry at `index`, if held.
    pub(crate) fn entry(&self, index: LogIndex) -> Option<&Entry> {
        let position = usize::try_from(index.0.checked_sub(1)?).ok()?;
        self.entries.get(position)
    }

    /// Appends one entry at `last_index() + 1`.
    pub(crate) fn append(&mut self, entry: Entry) {
        debug_assert_eq!(entry.index, self.last_index().next(), "log entries must be contiguous");
        debug_assert!(entry.term >= self.last_log_id().term, "log terms must not decrease");
        self.entries.push(entry);
    }

    /// Removes the entries at `index` and after.
    pub(crate) fn truncate_from(&mut self, index: LogIndex) {
        debug_assert!(index.0 >= 1, "index 0 holds no entry");
        self.entries.truncate(index.0.saturating_sub(1) as usize);
    }

    /// Copies of the entries in `[from, to]` (inclusive), stopping early once `max_count`
    /// entries or `max_bytes` of payload are taken; the first entry is always taken.
    pub(crate) fn entries_between(
        &self,
        from: LogIndex,
        to: LogIndex,
        max_count: usize,
        max_bytes: usize,
    ) -> Vec<Entry> {
        let mut batch = Vec::new();
        let mut bytes = 0usize;
        let mut index = from;
        while index <= to && batch.len() < max_count {
            let Some(entry) = self.entry(index) else {
                break;
            };
            bytes += entry.payload_len();
            if !batch.is_empty() && bytes > max_bytes {
                break;
            }
            batch.push(entry.clone());
            index = index.next();
        }
        batch
    }

    /// The first index of the run of entries with `term` that contains `index`.
    pub(crate) fn first_index_of_term_run(&self, index: LogIndex) -> LogIndex {
        let Some(term) = self.term_at(index) else {
            return index;
        };
        let mut first = index;
        while first.0 > 1 && self.term_at(first.prev()) == Some(term) {
            first = first.prev();
        }
        first
    }

    /// The last index at or below `at_most` whose entry has `term`, if any.
    pub(crate) fn last_index_of_term(&self, term: Term, at_most: LogIndex) -> Option<LogIndex> {
        let mut index = at_most.min(self.last_index());
        while index.0 >= 1 {
            let entry_term = self.term_at(index)?;
            if entry_term == term {
                return Some(index);
            }
            if entry_term < term {
                return None;
            }
            index = index.prev();
        }
        None
    }
}

/// Blank entries at indexes 1, 2, ... with the given terms (for tests).
#[cfg(test)]
pub(crate) fn blank_entries_with_terms(terms: &[u64]) -> Vec<Entry> {
    terms
        .iter()
        .enumerate()
        .map(|(position, term)| Entry {
            term: Term(*term),
            index: LogIndex(position as u64 + 1),
            payload: crate::message::EntryPayload::Blank,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::EntryPayload;

    fn log_of_terms(terms: &[u64]) -> RaftLog {
        RaftLog::from_entries(blank_entries_with_terms(terms))
            .expect("the test builds a contiguous log with non-decreasing terms")
    }

    #[test]
    fn a_stored_log_that_is_not_a_log_is_refused() {
        let entry = |term, index| Entry {
            term: Term(term),
            index: LogIndex(index),
            payload: EntryPayload::Blank,
        };
        assert!(RaftLog::from_entries(vec![entry(1, 1), entry(1, 3)]).is_err());
        assert!(RaftLog::from_entries(vec![entry(2, 1), entry(1, 2)]).is_err());
        assert!(RaftLog::from_entries(vec![entry(1, 2)]).is_err());
        assert!(RaftLog::from_entries(vec![entry(1, 1), entry(2, 2)]).is_ok());
    }

    #[test]
    fn term_lookups() {
        let log = log_of_terms(&[1, 1, 1, 4, 4, 5, 5, 6, 6, 6]);
        assert_eq!(log.term_at(LogIndex(0)), Some(Term(0)));
        assert_eq!(log.term_at(LogIndex(4)), Some(Term(4)));
        assert_eq!(log.term_at(LogIndex(11)), None);
        assert_eq!(log.first_index_of_term_run(LogIndex(7)), LogIndex(6));
        assert_eq!(log.first_index_of_term_run(LogIndex(3)), LogIndex(1));
        assert_eq!(log.last_index_of_term(Term(4), LogIndex(10)), Some(LogIndex(5)));
        assert_eq!(log.last_index_of_term(Term(3), LogIndex(10)), None);
        assert_eq!(log.last_index_of_term(Term(6), LogIndex(8)), Some(LogIndex(8)));
        assert_eq!(log.last_log_id(), LogId::new(Term(6), LogIndex(10)));
    }

    #[test]
    fn batches_respect_count_and_byte_limits_but_always_take_one() {
        let mut log = RaftLog::default();
        for index in 1..=5 {
            log.append(Entry {
                term: Term(1),
                index: LogIndex(index),
                payload: EntryPayload::Command(vec![0u8; 10].into()),
            });
        }
        assert_eq!(log.entries_between(LogIndex(1), LogIndex(5), 3, 1000).len(), 3);
        assert_eq!(log.entries_between(LogIndex(1), LogIndex(5), 10, 25).len(), 2);
        assert_eq!(log.entries_between(LogIndex(2), LogIndex(5), 10, 1).len(), 1);
        assert!(log.entries_between(LogIndex(6), LogIndex(5), 10, 100).is_empty());
        log.truncate_from(LogIndex(3));
        assert_eq!(log.last_index(), LogIndex(2));
    }
}
