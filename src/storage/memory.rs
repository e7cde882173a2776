//! [`MemoryStorage`]: storage in memory, for tests and examples.

use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;

use super::{BytesSource, SnapshotSink, SnapshotSource, SnapshotStore, Storage};
use crate::core::InitialState;
use crate::error::StorageError;
use crate::hard_state::HardState;
use crate::message::Entry;
use crate::snapshot::{Snapshot, SnapshotMeta};
use crate::types::{LogId, LogIndex, NodeId};

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
    state: Arc<Mutex<Stored>>,
}

/// What a [`MemoryStorage`] holds.
#[derive(Clone, Debug, Default)]
struct Stored {
    hard_state: HardState,
    members: Option<Vec<NodeId>>,
    /// The latest snapshot and its bytes.
    snapshot: Option<(Snapshot, Bytes)>,
    /// The entry before `entries[0]`.
    base: LogId,
    entries: Vec<Entry>,
}

impl Stored {
    fn last_index(&self) -> LogIndex {
        LogIndex(self.base.index.0 + self.entries.len() as u64)
    }
}

impl MemoryStorage {
    /// Empty storage: a node that has never run.
    pub fn new() -> Self {
        MemoryStorage::default()
    }

    fn lock(&self) -> MutexGuard<'_, Stored> {
        // A panic while holding this lock leaves plain data that is still consistent: every
        // mutation below completes without panicking. So a poisoned lock is safe to use.
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Storage for MemoryStorage {
    type Snapshots = MemoryStorage;

    fn load(&mut self) -> Result<InitialState, StorageError> {
        let state = self.lock();
        Ok(InitialState {
            hard_state: state.hard_state,
            snapshot: state.snapshot.as_ref().map(|(snapshot, _)| snapshot.clone()),
            entries: state.entries.clone(),
            members: state.members.clone(),
        })
    }

    fn append(&mut self, entries: &[Entry]) -> Result<(), StorageError> {
        let Some(first) = entries.first() else {
            return Ok(());
        };
        let mut state = self.lock();
        let stored_last = state.last_index();
        if first.index <= state.base.index || first.index > stored_last.next() {
            return Err(StorageError::Corrupt {
                detail: format!(
                    "append at index {} is outside the stored log ({}..={stored_last})",
                    first.index,
                    state.base.index.next()
                ),
            });
        }
        let keep = (first.index.0 - state.base.index.0 - 1) as usize;
        state.entries.truncate(keep);
        state.entries.extend_from_slice(entries);
        Ok(())
    }

    fn reset_log(&mut self, base: LogId) -> Result<(), StorageError> {
        let mut state = self.lock();
        state.entries.clear();
        state.base = base;
        Ok(())
    }

    fn compact(&mut self, through: LogIndex) -> Result<(), StorageError> {
        let mut state = self.lock();
        if through <= state.base.index {
            return Ok(());
        }
        let through = through.min(state.last_index());
        let dropped = (through.0 - state.base.index.0) as usize;
        if let Some(last_dropped) = state.entries.get(dropped.wrapping_sub(1)) {
            let base = last_dropped.log_id();
            state.entries.drain(..dropped);
            state.base = base;
        }
        Ok(())
    }

    fn snapshot_store(&self) -> MemoryStorage {
        self.clone()
    }

    fn save_hard_state(&mut self, hard_state: &HardState) -> Result<(), StorageError> {
        self.lock().hard_state = *hard_state;
        Ok(())
    }

    fn save_members(&mut self, members: &[NodeId]) -> Result<(), StorageError> {
        self.lock().members = Some(members.to_vec());
        Ok(())
    }

    fn sync(&mut self) -> Result<(), StorageError> {
        Ok(())
    }
}

impl SnapshotStore for MemoryStorage {
    fn create(&mut self, meta: &SnapshotMeta) -> Result<Box<dyn SnapshotSink>, StorageError> {
        Ok(Box::new(MemorySink { storage: self.clone(), meta: meta.clone(), data: Vec::new() }))
    }

    fn open(&self, snapshot: &Snapshot) -> Result<Box<dyn SnapshotSource>, StorageError> {
        match &self.lock().snapshot {
            Some((held, data)) if held.id == snapshot.id => {
                Ok(Box::new(BytesSource::new(held.clone(), data.clone())))
            }
            _ => Err(StorageError::Corrupt { detail: format!("{} is not stored", snapshot.id) }),
        }
    }
}

/// A snapshot being written into a [`MemoryStorage`].
struct MemorySink {
    storage: MemoryStorage,
    meta: SnapshotMeta,
    data: Vec<u8>,
}

impl std::io::Write for MemorySink {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.data.extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl SnapshotSink for MemorySink {
    fn finish(self: Box<Self>) -> Result<Snapshot, StorageError> {
        let MemorySink { storage, meta, data } = *self;
        let snapshot = Snapshot::of_bytes(meta, &data);
        let mut state = storage.lock();
        let newer = state.snapshot.as_ref().is_none_or(|(held, _)| {
            held.meta.last_included.index <= snapshot.meta.last_included.index
        });
        if newer {
            state.snapshot = Some((snapshot.clone(), Bytes::from(data)));
        }
        Ok(snapshot)
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

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

    #[test]
    fn compaction_and_reset_move_the_base() {
        let mut storage = MemoryStorage::new();
        storage.append(&[entry(1, 1), entry(1, 2), entry(2, 3)]).unwrap();
        storage.compact(LogIndex(2)).unwrap();
        assert_eq!(storage.load().unwrap().entries, vec![entry(2, 3)]);
        assert!(storage.append(&[entry(2, 2)]).is_err(), "below the base");
        storage.append(&[entry(3, 4)]).unwrap();
        storage.reset_log(LogId::new(Term(4), LogIndex(10))).unwrap();
        assert!(storage.load().unwrap().entries.is_empty());
        storage.append(&[entry(4, 11)]).unwrap();
        assert_eq!(storage.load().unwrap().entries, vec![entry(4, 11)]);
        let mut store = storage.snapshot_store();
        let mut write = |index| {
            let meta = SnapshotMeta {
                last_included: LogId::new(Term(4), LogIndex(index)),
                configuration: crate::core::Configuration::default(),
            };
            let mut sink = store.create(&meta).unwrap();
            sink.write_all(b"state").unwrap();
            sink.finish().unwrap()
        };
        let tenth = write(10);
        write(5);
        assert_eq!(
            storage.load().unwrap().snapshot,
            Some(tenth.clone()),
            "an older one is ignored"
        );
        let source = storage.snapshot_store().open(&tenth).unwrap();
        assert_eq!(source.read_at(1, 3).unwrap(), "tat");
    }
}
