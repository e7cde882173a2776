//! [`Preset`]: the state a scripted node starts from (a log given by the term of each entry,
//! a term, a vote and a commit index), written into its storage before it starts, as the node
//! would have stored it.

use bytes::Bytes;

use crate::error::StorageError;
use crate::hard_state::HardState;
use crate::message::{Entry, EntryPayload};
use crate::storage::Storage;
use crate::types::{LogIndex, NodeId, Term};

/// The payload a preset log entry carries: unique per (index, term), so two nodes holding
/// the same entry hold equal bytes, as the Log Matching Property requires.
pub fn preset_entry(index: u64, term: u64) -> Entry {
    Entry {
        term: Term(term),
        index: LogIndex(index),
        payload: EntryPayload::Command(Bytes::from(format!("preset {index}@{term}"))),
    }
}

/// How a node starts: its log given as the term of each entry (index 1 first), its current
/// term, its vote and its commit index. Built with [`preset`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Preset {
    /// The term of each entry, index 1 first.
    pub log_terms: Vec<u64>,
    /// The current term.
    pub term: u64,
    /// The node voted for in `term`.
    pub voted_for: Option<u64>,
    /// The commit index.
    pub commit_index: u64,
}

/// A node whose log holds entries of `log_terms`, in the term of its last entry, having voted
/// for no one and committed nothing. Adjust with the builder methods.
pub fn preset(log_terms: &[u64]) -> Preset {
    Preset {
        log_terms: log_terms.to_vec(),
        term: log_terms.last().copied().unwrap_or(0),
        voted_for: None,
        commit_index: 0,
    }
}

impl Preset {
    /// Sets the node's current term.
    pub fn term(mut self, term: u64) -> Self {
        self.term = term;
        self
    }

    /// Sets the node's commit index.
    pub fn committed_through(mut self, index: u64) -> Self {
        self.commit_index = index;
        self
    }

    /// Sets the node's vote in its current term.
    pub fn voted_for(mut self, id: u64) -> Self {
        self.voted_for = Some(id);
        self
    }

    /// Writes this state into `storage`, as a node would have stored it, and syncs.
    pub(crate) fn write_to(&self, storage: &mut impl Storage) -> Result<(), StorageError> {
        let entries: Vec<Entry> = self
            .log_terms
            .iter()
            .enumerate()
            .map(|(position, term)| preset_entry(position as u64 + 1, *term))
            .collect();
        if !entries.is_empty() {
            storage.append(&entries)?;
        }
        storage.save_hard_state(&HardState {
            term: Term(self.term),
            voted_for: self.voted_for.map(NodeId),
            commit_index: LogIndex(self.commit_index),
        })?;
        storage.sync()
    }
}
