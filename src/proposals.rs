//! [`PendingProposals`]: proposals appended to the leader's log, waiting for their entry to be
//! applied. Shared by the tokio runtime and the simulator, so both decide a proposal's outcome
//! the same way:
//!
//! - its entry is applied with the term it was appended in: it committed, here is the result;
//! - another entry is applied at its index: it was overwritten, so it never committed;
//! - the node stops leading first: its outcome is unknown (it may still commit under the next
//!   leader, or be overwritten).

use std::collections::BTreeMap;

use crate::driver::Applied;
use crate::types::{LogIndex, Term};

/// How a tracked proposal ended.
pub(crate) enum ProposalOutcome {
    /// Committed and applied: the state machine's result.
    Applied(Applied),
    /// Another leader's entry took its index: definitely not applied.
    Overwritten,
}

/// Waiters of type `W`, one per appended proposal, keyed by log index.
#[derive(Debug)]
pub(crate) struct PendingProposals<W> {
    by_index: BTreeMap<LogIndex, (Term, W)>,
}

impl<W> Default for PendingProposals<W> {
    fn default() -> Self {
        PendingProposals { by_index: BTreeMap::new() }
    }
}

impl<W> PendingProposals<W> {
    /// Tracks a proposal appended at `index` in `term`.
    pub(crate) fn insert(&mut self, index: LogIndex, term: Term, waiter: W) {
        let previous = self.by_index.insert(index, (term, waiter));
        debug_assert!(previous.is_none(), "two proposals appended at index {index}");
    }

    /// Resolves the proposal (if any) whose index was just applied.
    pub(crate) fn on_applied(&mut self, applied: Applied) -> Option<(W, ProposalOutcome)> {
        let (term, waiter) = self.by_index.remove(&applied.index)?;
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
        std::mem::take(&mut self.by_index).into_iter().map(|(index, (_, waiter))| (index, waiter))
    }

    /// Whether no proposal is waiting.
    pub(crate) fn is_empty(&self) -> bool {
        self.by_index.is_empty()
    }
}
