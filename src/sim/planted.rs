//! Planted bugs as wrappers: [`PlantedStorage`] around a node's storage and
//! [`PlantedMachine`] around its state machine break one durability or apply rule each, from
//! outside the production code, so the simulator can show its checks catch them. (The bugs
//! that live in the protocol core itself, committing an earlier term's entry by counting
//! replicas, changing voters without the joint phase and counting learners towards commits,
//! cannot be expressed from outside and stay there, behind the `sim` feature; `world.rs`
//! switches them on.)

use std::error::Error;

use super::PlantedBug;
use crate::core::InitialState;
use crate::error::StorageError;
use crate::hard_state::HardState;
use crate::message::Entry;
use crate::state_machine::StateMachine;
use crate::storage::{AlreadyDurable, PendingSync, Storage};
use crate::types::{LogId, LogIndex, NodeId};

/// A storage that, with a planted bug, forgets the vote on load
/// ([`PlantedBug::ForgetVoteOnRestart`]), says a flush is durable before its sync ran
/// ([`PlantedBug::AcknowledgeBeforeSync`]: the sync runs at the next flush instead), or
/// ignores log resets ([`PlantedBug::InstallKeepsConflictingLog`]).
pub(crate) struct PlantedStorage<S> {
    inner: S,
    bug: Option<PlantedBug>,
    /// With `AcknowledgeBeforeSync`: the last flush's real sync, run at the next flush.
    deferred_sync: Option<Box<dyn PendingSync>>,
}

impl<S> PlantedStorage<S> {
    /// Wraps `inner`, breaking what `bug` says (nothing when `None`).
    pub(crate) fn new(inner: S, bug: Option<PlantedBug>) -> Self {
        PlantedStorage { inner, bug, deferred_sync: None }
    }
}

impl<S: Storage> Storage for PlantedStorage<S> {
    type Snapshots = S::Snapshots;

    fn load(&mut self) -> Result<InitialState, StorageError> {
        let mut state = self.inner.load()?;
        if self.bug == Some(PlantedBug::ForgetVoteOnRestart) {
            state.hard_state.voted_for = None;
        }
        Ok(state)
    }

    fn append(&mut self, entries: &[Entry]) -> Result<(), StorageError> {
        self.inner.append(entries)
    }

    fn reset_log(&mut self, base: LogId) -> Result<(), StorageError> {
        if self.bug == Some(PlantedBug::InstallKeepsConflictingLog) {
            return Ok(());
        }
        self.inner.reset_log(base)
    }

    fn compact(&mut self, through: LogIndex) -> Result<(), StorageError> {
        self.inner.compact(through)
    }

    fn snapshot_store(&self) -> Self::Snapshots {
        self.inner.snapshot_store()
    }

    fn save_hard_state(&mut self, hard_state: &HardState) -> Result<(), StorageError> {
        self.inner.save_hard_state(hard_state)
    }

    fn save_members(&mut self, members: &[NodeId]) -> Result<(), StorageError> {
        self.inner.save_members(members)
    }

    fn sync(&mut self) -> Result<(), StorageError> {
        self.inner.sync()
    }

    fn max_entry_bytes(&self) -> Option<usize> {
        self.inner.max_entry_bytes()
    }

    fn flush(&mut self) -> Result<Box<dyn PendingSync>, StorageError> {
        let sync = self.inner.flush()?;
        if self.bug != Some(PlantedBug::AcknowledgeBeforeSync) {
            return Ok(sync);
        }
        if let Some(earlier) = self.deferred_sync.replace(sync) {
            earlier.complete()?;
        }
        Ok(Box::new(AlreadyDurable))
    }
}

/// A state machine that, with [`PlantedBug::SnapshotSkipsEntry`], takes a restored snapshot
/// to cover one entry more than it does (an off-by-one): the next command is not applied.
#[derive(Clone, Debug, Default)]
pub(crate) struct PlantedMachine<M> {
    inner: M,
    skips_entry_after_restore: bool,
    skip_next: bool,
}

impl<M> PlantedMachine<M> {
    /// Wraps `inner`, breaking what `bug` says (nothing unless it is `SnapshotSkipsEntry`).
    pub(crate) fn new(inner: M, bug: Option<PlantedBug>) -> Self {
        PlantedMachine {
            inner,
            skips_entry_after_restore: bug == Some(PlantedBug::SnapshotSkipsEntry),
            skip_next: false,
        }
    }

    /// The wrapped state machine.
    pub(crate) fn inner(&self) -> &M {
        &self.inner
    }
}

impl<M: StateMachine> StateMachine for PlantedMachine<M> {
    fn apply(&mut self, command: &[u8]) -> Result<Vec<u8>, Box<dyn Error + Send + Sync>> {
        if std::mem::take(&mut self.skip_next) {
            return Ok(Vec::new());
        }
        self.inner.apply(command)
    }

    fn apply_at(
        &mut self,
        index: LogIndex,
        command: &[u8],
    ) -> Result<Vec<u8>, Box<dyn Error + Send + Sync>> {
        if std::mem::take(&mut self.skip_next) {
            return Ok(Vec::new());
        }
        self.inner.apply_at(index, command)
    }

    fn query(&self, query: &[u8]) -> Result<Vec<u8>, Box<dyn Error + Send + Sync>> {
        self.inner.query(query)
    }

    fn snapshot(&self) -> Result<Vec<u8>, Box<dyn Error + Send + Sync>> {
        self.inner.snapshot()
    }

    fn restore(&mut self, snapshot: &[u8]) -> Result<(), Box<dyn Error + Send + Sync>> {
        self.inner.restore(snapshot)?;
        self.skip_next = self.skips_entry_after_restore;
        Ok(())
    }
}
