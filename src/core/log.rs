//! [`RaftLog`]: the in-memory copy of the replicated log that the core reasons about.
//!
//! The core keeps every entry it holds in memory (storage is written through, and read only at
//! start), so no protocol step ever waits on a disk read. Memory is bounded by log compaction:
//! entries covered by a snapshot are dropped, and the log remembers only the `LogId` of the
//! last one it dropped (its base).
//!
//! Invariant: `entries[i].index == base.index + 1 + i`, and terms never decrease along the
//! log, starting from the base's term.

use crate::message::Entry;
use crate::types::{LogId, LogIndex, Term};

/// The entries a node holds, contiguous from `base.index + 1`.
#[derive(Clone, Debug, Default)]
pub(crate) struct RaftLog {
    /// The entry just before the first one held: `0@0` for a log that starts at index 1, or
    /// the last entry dropped by compaction.
    base: LogId,
    entries: Vec<Entry>,
}

impl RaftLog {
    /// A log holding `entries` after `base`; they must be contiguous from `base.index + 1`
    /// with non-decreasing terms from `base.term`; otherwise a description of what is wrong.
    pub(crate) fn from_entries(base: LogId, entries: Vec<Entry>) -> Result<Self, String> {
        let mut previous = base;
        for entry in &entries {
            if entry.index != previous.index.next() {
                return Err(format!(
                    "stored log entry {} does not follow {previous} (entries must be contiguous)",
                    entry.log_id()
                ));
            }
            if entry.term < previous.term {
                return Err(format!(
                    "stored log terms decrease: {previous} is followed by {}",
                    entry.log_id()
                ));
            }
            previous = entry.log_id();
        }
        Ok(RaftLog { base, entries })
    }

    /// The entries held, in order.
    pub(crate) fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// The entry just before the first one held (`0@0` when nothing was compacted).
    pub(crate) fn base(&self) -> LogId {
        self.base
    }

    /// The index of the last entry (the base's index for a log holding no entry).
    pub(crate) fn last_index(&self) -> LogIndex {
        LogIndex(self.base.index.0 + self.entries.len() as u64)
    }

    /// The term and index of the last entry (the base for a log holding no entry).
    pub(crate) fn last_log_id(&self) -> LogId {
        self.entries.last().map(Entry::log_id).unwrap_or(self.base)
    }

    /// The term of the entry at `index`: the base's term at the base, `None` below the base
    /// (compacted) or past the end.
    pub(crate) fn term_at(&self, index: LogIndex) -> Option<Term> {
        if index == self.base.index {
            return Some(self.base.term);
        }
        self.entry(index).map(|entry| entry.term)
    }

    /// The entry at `index`, if held.
    pub(crate) fn entry(&self, index: LogIndex) -> Option<&Entry> {
        let offset = index.0.checked_sub(self.base.index.0 + 1)?;
        self.entries.get(usize::try_from(offset).ok()?)
    }

    /// Drops the entries up to and including `index`, which must be held; it becomes the base.
    pub(crate) fn compact_through(&mut self, index: LogIndex) {
        // Callers compact only behind a snapshot of applied, so held, entries.
        let term = self.term_at(index).unwrap_or_else(|| {
            panic!(
                "invariant violated: compacting through {index}, which the log (after {}, through {}) does not hold",
                self.base,
                self.last_index()
            )
        });
        if index <= self.base.index {
            return;
        }
        let dropped = (index.0 - self.base.index.0) as usize;
        self.entries.drain(..dropped);
        self.base = LogId::new(term, index);
    }

    /// Drops every entry: the log continues after `base` (a snapshot the log does not match).
    pub(crate) fn reset_to(&mut self, base: LogId) {
        self.entries.clear();
        self.base = base;
    }

    /// Appends one entry at `last_index() + 1`, with a term no lower than the last entry's
    /// (peer entries are checked before they get here, so a violation is this node's bug).
    #[inline(always)]
    pub(crate) fn append(&mut self, entry: Entry) {
        let last = self.last_log_id();
        // One cheap comparison on the hot path; the message is built only on the cold one.
        if entry.index.0 != last.index.0.wrapping_add(1) || entry.term < last.term {
            broken_append(entry.log_id(), last);
        }
        self.entries.push(entry);
    }

    /// Removes the entries at `index` and after. Neither the base (covered by a snapshot) nor
    /// anything at or below `commit_index` is ever removed: a violation stops the node.
    pub(crate) fn truncate_from(&mut self, index: LogIndex, commit_index: LogIndex) {
        assert!(
            index > self.base.index && index > commit_index,
            "Raft safety rule violated: a committed entry is never truncated (truncating from {index} with the commit index at {commit_index} and the log's base at {})",
            self.base
        );
        // In range: index > base, and anything past the end truncates nothing.
        let keep = usize::try_from(index.0 - self.base.index.0 - 1).unwrap_or(usize::MAX);
        self.entries.truncate(keep);
    }

    /// Asserts, in O(1), that the log is contiguous with non-decreasing terms: its first and
    /// last entries sit where the base and its length say, with terms in order. `append`
    /// checks every entry as it comes, so the ends are enough.
    pub(crate) fn check_invariants(&self) {
        let (Some(first), Some(last)) = (self.entries.first(), self.entries.last()) else {
            return;
        };
        assert!(
            first.index == self.base.index.next() && last.index == self.last_index(),
            "invariant violated: log entries are contiguous (base {}, first {}, last {}, {} entries)",
            self.base,
            first.log_id(),
            last.log_id(),
            self.entries.len()
        );
        assert!(
            self.base.term <= first.term && first.term <= last.term,
            "invariant violated: log terms never decrease (base {}, first {}, last {})",
            self.base,
            first.log_id(),
            last.log_id()
        );
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
        let held_to = to.min(self.last_index());
        if from <= self.base.index || from > held_to || max_count == 0 {
            return Vec::new();
        }
        let first = (from.0 - self.base.index.0 - 1) as usize;
        let last = (held_to.0 - self.base.index.0 - 1) as usize;
        // Both in bounds: `base < from <= held_to <= last_index()`.
        let candidates = &self.entries[first..=last.min(first.saturating_add(max_count - 1))];
        // Count first, then copy into a vector of exactly that size: a batch of thousands of
        // entries must not grow its vector a dozen times, nor hold room it does not use.
        let mut count = 0;
        let mut bytes = 0usize;
        for entry in candidates {
            bytes = bytes.saturating_add(entry.payload_len());
            if count > 0 && bytes > max_bytes {
                break;
            }
            count += 1;
        }
        let mut batch = Vec::with_capacity(count);
        for entry in &candidates[..count] {
            batch.push(entry.clone());
        }
        batch
    }

    /// The first index of the run of entries with `term` that contains `index` (not looking
    /// below the first entry held).
    pub(crate) fn first_index_of_term_run(&self, index: LogIndex) -> LogIndex {
        let Some(term) = self.term_at(index) else {
            return index;
        };
        let mut first = index;
        while first > self.base.index.next() && self.term_at(first.prev()) == Some(term) {
            first = first.prev();
        }
        first
    }

    /// The last index at or below `at_most` whose entry has `term`, if any (looking no lower
    /// than the base).
    pub(crate) fn last_index_of_term(&self, term: Term, at_most: LogIndex) -> Option<LogIndex> {
        let mut index = at_most.min(self.last_index());
        while index >= self.base.index && index.0 >= 1 {
            let entry_term = self.term_at(index)?;
            if entry_term == term {
                return Some(index);
            }
            if entry_term < term || index == self.base.index {
                return None;
            }
            index = index.prev();
        }
        None
    }
}

/// Blank entries at indexes 1, 2, ... with the given terms (for tests).
/// Stops the node: appending `appended` after `last` breaks the log's shape.
#[cold]
#[inline(never)]
fn broken_append(appended: LogId, last: LogId) -> ! {
    if appended.index.0 != last.index.0.wrapping_add(1) {
        panic!(
            "invariant violated: log entries are contiguous (appending {appended} after {last})"
        );
    }
    panic!("invariant violated: log terms never decrease (appending {appended} after {last})");
}

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
        RaftLog::from_entries(LogId::default(), blank_entries_with_terms(terms))
            .expect("the test builds a contiguous log with non-decreasing terms")
    }

    #[test]
    fn a_stored_log_that_is_not_a_log_is_refused() {
        let entry = |term, index| Entry {
            term: Term(term),
            index: LogIndex(index),
            payload: EntryPayload::Blank,
        };
        let start = LogId::default();
        assert!(RaftLog::from_entries(start, vec![entry(1, 1), entry(1, 3)]).is_err());
        assert!(RaftLog::from_entries(start, vec![entry(2, 1), entry(1, 2)]).is_err());
        assert!(RaftLog::from_entries(start, vec![entry(1, 2)]).is_err());
        assert!(RaftLog::from_entries(start, vec![entry(1, 1), entry(2, 2)]).is_ok());
        let base = LogId::new(Term(3), LogIndex(7));
        assert!(RaftLog::from_entries(base, vec![entry(3, 8), entry(4, 9)]).is_ok());
        assert!(RaftLog::from_entries(base, vec![entry(2, 8)]).is_err(), "term below the base");
        assert!(RaftLog::from_entries(base, vec![entry(3, 9)]).is_err(), "gap after the base");
    }

    #[test]
    fn a_compacted_log_answers_from_its_base() {
        let mut log = log_of_terms(&[1, 1, 2, 2, 3]);
        log.compact_through(LogIndex(3));
        assert_eq!(log.base(), LogId::new(Term(2), LogIndex(3)));
        assert_eq!(log.term_at(LogIndex(2)), None, "compacted");
        assert_eq!(log.term_at(LogIndex(3)), Some(Term(2)));
        assert_eq!(log.entry(LogIndex(3)), None, "the base is no longer held");
        assert_eq!(log.entry(LogIndex(4)).map(|entry| entry.term), Some(Term(2)));
        assert_eq!(log.last_log_id(), LogId::new(Term(3), LogIndex(5)));
        assert_eq!(log.first_index_of_term_run(LogIndex(4)), LogIndex(4));
        assert_eq!(log.last_index_of_term(Term(2), LogIndex(5)), Some(LogIndex(4)));
        assert_eq!(log.last_index_of_term(Term(1), LogIndex(5)), None);
        assert_eq!(log.entries_between(LogIndex(1), LogIndex(5), 10, 100).len(), 0);
        assert_eq!(log.entries_between(LogIndex(4), LogIndex(5), 10, 100).len(), 2);
        log.truncate_from(LogIndex(5), LogIndex(3));
        assert_eq!(log.last_index(), LogIndex(4));
        log.reset_to(LogId::new(Term(5), LogIndex(40)));
        assert_eq!(log.last_log_id(), LogId::new(Term(5), LogIndex(40)));
        assert_eq!(log.term_at(LogIndex(4)), None);
    }

    #[test]
    fn a_second_compaction_drops_only_the_entries_after_the_first_base() {
        let mut log = log_of_terms(&[1, 1, 2, 2, 3, 3]);
        log.compact_through(LogIndex(2));
        log.compact_through(LogIndex(4));
        assert_eq!(log.base(), LogId::new(Term(2), LogIndex(4)));
        assert_eq!(log.entry(LogIndex(5)).map(|entry| entry.term), Some(Term(3)));
        assert_eq!(log.last_log_id(), LogId::new(Term(3), LogIndex(6)));
        log.check_invariants();
    }

    #[test]
    #[should_panic(expected = "log entries are contiguous")]
    fn the_invariant_check_finds_a_gap_in_the_log() {
        let entries = blank_entries_with_terms(&[1, 1, 1]);
        let log = RaftLog {
            base: LogId::default(),
            entries: vec![entries[0].clone(), entries[2].clone()],
        };
        log.check_invariants();
    }

    #[test]
    #[should_panic(expected = "log terms never decrease")]
    fn the_invariant_check_finds_decreasing_terms() {
        let log = RaftLog {
            base: LogId::new(Term(3), LogIndex(0)),
            entries: blank_entries_with_terms(&[2, 2]),
        };
        log.check_invariants();
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
        assert_eq!(log.last_index_of_term(Term(0), LogIndex(10)), None, "the base 0@0 is no entry");
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
        assert_eq!(log.entries_between(LogIndex(1), LogIndex(5), 10, 20).len(), 2, "exactly full");
        assert_eq!(log.entries_between(LogIndex(2), LogIndex(5), 10, 1).len(), 1);
        assert!(log.entries_between(LogIndex(6), LogIndex(5), 10, 100).is_empty());
        assert!(log.entries_between(LogIndex(8), LogIndex(9), 10, 100).is_empty(), "past the end");
        assert!(log.entries_between(LogIndex(1), LogIndex(5), 0, 100).is_empty(), "no room");
        log.truncate_from(LogIndex(3), LogIndex(0));
        assert_eq!(log.last_index(), LogIndex(2));
    }

    #[test]
    #[should_panic(expected = "a committed entry is never truncated")]
    fn truncating_a_committed_entry_stops_the_node() {
        let mut log = log_of_terms(&[1, 1, 2]);
        log.truncate_from(LogIndex(2), LogIndex(2));
    }

    #[test]
    #[should_panic(expected = "a committed entry is never truncated")]
    fn truncating_the_base_stops_the_node() {
        let mut log = log_of_terms(&[1, 1, 2, 2]);
        log.compact_through(LogIndex(2));
        log.truncate_from(LogIndex(2), LogIndex(0));
    }

    #[test]
    #[should_panic(expected = "log entries are contiguous")]
    fn appending_with_a_gap_stops_the_node() {
        let mut log = log_of_terms(&[1]);
        log.append(Entry { term: Term(1), index: LogIndex(3), payload: EntryPayload::Blank });
    }

    #[test]
    #[should_panic(expected = "log terms never decrease")]
    fn appending_an_older_term_stops_the_node() {
        let mut log = log_of_terms(&[2]);
        log.append(Entry { term: Term(1), index: LogIndex(2), payload: EntryPayload::Blank });
    }
}
