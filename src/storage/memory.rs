//! [`MemoryStorage`]: storage in memory, for tests and examples.

use std::sync::{Arc, Mutex, MutexGuard};

use super::Storage;
use crate::core::InitialState;
use crate::error::StorageError;
use crate::hard_state::HardState;
use crate::message::Entry;

/// Storage kept in memory. Clones share the same data, so a test can keep a handle and start
/// a node again from what the previous incarnation stored. Nothing survives the process.
///
/// ```
/// use raft_consensus::storage::{MemoryStorage, Storage};
/// use raft_consensus::{HardState, NodeId, Term};
///
/// let mut storage = MemoryStorage::new();
/// let kept = storage.clone();
/// storage.save_hard_state(&HardState { term: Term(3), voted_for: Some(NodeId(1)), ..HardState::default() })?;
/// storage.sync()?;
/// assert_eq!(kept.clone().load()?.hard_state.term, Term(3));
/// # Ok::<(), raft_consensus::StorageError>(())
/// ```
#[derive(Clone, Debug, Default)]
pub struct MemoryStorage {
    state: Arc<Mutex<InitialState>>,
}

impl MemoryStorage {
    /// Empty storage: a node that has never run.
    pub fn new() -> Self {
        MemoryStorage::default()
    }

    fn lock(&self) -> MutexGuard<'_, InitialState> {
        // A panic while holding this lock leaves plain data that is still consistent: every
        // mutation below completes without panicking. So a poisoned lock is safe to use.
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Storage for MemoryStorage {
    fn load(&mut self) -> Result<InitialState, StorageError> {
        Ok(self.lock().clone())
    }

    fn append(&mut self, entries: &[Entry]) -> Result<(), StorageError> {
        let Some(first) = entries.first() else {
            return Ok(());
        };
        let mut state = self.lock();
        let stored_last = state.entries.len() as u64;
        if first.index.0 == 0 || first.index.0 > stored_last + 1 {
            return Err(StorageError::Corrupt {
                detail: format!(
                    "append at index {} would leave a gap after the last stored index {stored_last}",
                    first.index
                ),
            });
        }
        state.entries.truncate((first.index.0 - 1) as usize);
        state.entries.extend_from_slice(entries);
        Ok(())
    }

    fn save_hard_state(&mut self, hard_state: &HardState) -> Result<(), StorageError> {
        self.lock().hard_state = *hard_state;
        Ok(())
    }

    fn sync(&mut self) -> Result<(), StorageError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::EntryPayload;
    use crate::types::{LogIndex, Term};

    fn entry(term: u64, index: u64) -> Entry {
        Entry { term: Term(term), index: LogIndex(index), payload: EntryPayload::Blank }
    }

    #[test]
    fn append_replaces_a_suffix_and_refuses_gaps() {
        let mut storage = MemoryStorage::new();
        storage.append(&[entry(1, 1), entry(1, 2), entry(1, 3)]).unwrap();
        storage.append(&[entry(2, 2)]).unwrap();
        let loaded = storage.load().unwrap();
        assert_eq!(loaded.entries, vec![entry(1, 1), entry(2, 2)]);
        assert!(storage.append(&[entry(2, 4)]).is_err());
        assert_eq!(storage.load().unwrap().entries.len(), 2);
    }
}
