//! [`PendingProposals`]: proposals appended to the leader's log, waiting for their entry to be
//! applied. [`Node`](crate::node::Node) owns them, so every runtime that pumps a node decides a
//! proposal's outcome the same way:
//!
//! - its entry is applied with the term it was appended in: it committed, here is the result;
//! - another entry is applied at its index: it was overwritten, so it never committed;
//! - the node stops leading first: its outcome is unknown (it may still commit under the next
//!   leader, or be overwritten).
//!
//! A leader appends at increasing indexes and applies in index order, so the waiters are kept
//! in a deque sorted by index: inserting and resolving are O(1) at its ends on every path a
//! node takes (a binary search covers any other order, as a map would).

use std::collections::VecDeque;

use crate::driver::Applied;
use crate::types::{LogIndex, Term};

/// How a tracked proposal ended.
pub(crate) enum ProposalOutcome {
    /// Committed and applied: the state machine's result.
    Applied(Applied),
    /// Another leader's entry took its index: definitely not applied.
    Overwritten,
}

/// Waiters of type `W`, one per appended proposal, sorted by log index (each index once).
#[derive(Debug)]
pub(crate) struct PendingProposals<W> {
    by_index: VecDeque<(LogIndex, Term, W)>,
}

impl<W> Default for PendingProposals<W> {
    fn default() -> Self {
        PendingProposals { by_index: VecDeque::new() }
    }
}

impl<W> PendingProposals<W> {
    /// Tracks a proposal appended at `index` in `term`.
    pub(crate) fn insert(&mut self, index: LogIndex, term: Term, waiter: W) {
        match self.by_index.back() {
            Some((last, _, _)) if *last >= index => {
                // Not the leader's usual order: keep the deque sorted, one waiter per index.
                match self.by_index.binary_search_by_key(&index, |(at, _, _)| *at) {
                    Ok(position) => {
                        debug_assert!(false, "two proposals appended at index {index}");
                        self.by_index[position] = (index, term, waiter);
                    }
                    Err(position) => self.by_index.insert(position, (index, term, waiter)),
                }
            }
            _ => self.by_index.push_back((index, term, waiter)),
        }
    }

    /// Resolves the proposal (if any) whose index was just applied.
    pub(crate) fn on_applied(&mut self, applied: Applied) -> Option<(W, ProposalOutcome)> {
        let (_, term, waiter) = match self.by_index.front() {
            Some((first, _, _)) if *first == applied.index => self.by_index.pop_front()?,
            Some((first, _, _)) if *first < applied.index => {
                let position =
                    self.by_index.binary_search_by_key(&applied.index, |(at, _, _)| *at).ok()?;
                self.by_index.remove(position)?
            }
            _ => return None,
        };
        let outcome = if term == applied.term {
            ProposalOutcome::Applied(applied)
        } else {
            ProposalOutcome::Overwritten
        };
        Some((waiter, outcome))
    }

    /// Removes every proposal: the node stopped leading or stopped altogether, so their
    /// outcome is unknown.
    pub(crate) fn take_all(&mut self) -> impl Iterator<Item = (LogIndex, W)> {
        std::mem::take(&mut self.by_index).into_iter().map(|(index, _, waiter)| (index, waiter))
    }

    /// Whether no proposal is waiting.
    pub(crate) fn is_empty(&self) -> bool {
        self.by_index.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    fn applied(index: u64, term: u64) -> Applied {
        Applied {
            index: LogIndex(index),
            term: Term(term),
            command: Bytes::new(),
            result: Ok(Vec::new()),
        }
    }

    fn resolve(pending: &mut PendingProposals<u64>, index: u64, term: u64) -> Option<(u64, bool)> {
        pending
            .on_applied(applied(index, term))
            .map(|(waiter, outcome)| (waiter, matches!(outcome, ProposalOutcome::Applied(_))))
    }

    #[test]
    fn proposals_resolve_by_index_in_any_order() {
        let mut pending = PendingProposals::default();
        for index in [3, 4, 6] {
            pending.insert(LogIndex(index), Term(2), index * 10);
        }
        pending.insert(LogIndex(5), Term(2), 50);
        pending.insert(LogIndex(1), Term(1), 10);
        assert_eq!(resolve(&mut pending, 2, 2), None, "nothing waits at index 2");
        assert_eq!(resolve(&mut pending, 4, 2), Some((40, true)), "from the middle");
        assert_eq!(resolve(&mut pending, 1, 1), Some((10, true)));
        assert_eq!(resolve(&mut pending, 3, 3), Some((30, false)), "another term: overwritten");
        assert_eq!(resolve(&mut pending, 3, 2), None, "resolved once");
        assert_eq!(resolve(&mut pending, 5, 2), Some((50, true)));
        let rest: Vec<_> = pending.take_all().collect();
        assert_eq!(rest, vec![(LogIndex(6), 60)]);
        assert!(pending.is_empty());
    }
}
