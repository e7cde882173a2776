//! [`SimDisk`]: a node's storage in the simulator, with the faults of a real disk.
//!
//! Writes are buffered until `sync`, as in a real write-ahead log. At a crash, a random prefix
//! of the unsynced writes survives (the operating system may have flushed some of them), the
//! last surviving append may be torn (only a prefix of its entries reaches the disk, which is
//! what a log whose recovery drops a torn tail record leaves), and the rest is lost. A synced
//! write always survives. `sync` itself can fail, which stops the node.

use std::sync::{Arc, Mutex, MutexGuard};

use crate::core::InitialState;
use crate::error::StorageError;
use crate::hard_state::HardState;
use crate::message::Entry;
use crate::storage::Storage;

use super::rng::SimRng;

/// A write that has not been synced yet.
#[derive(Clone, Debug)]
enum UnsyncedWrite {
    Append(Vec<Entry>),
    HardState(HardState),
}

#[derive(Debug, Default)]
struct DiskState {
    durable: InitialState,
    unsynced: Vec<UnsyncedWrite>,
    /// Whether the next `sync` fails (an injected I/O error).
    fail_next_sync: bool,
}

/// One node's disk. Clones share it, so the disk outlives the node's crash.
#[derive(Clone, Debug, Default)]
pub(crate) struct SimDisk {
    state: Arc<Mutex<DiskState>>,
}

/// What a crash did to the unsynced writes, for the run's fault counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct CrashDamage {
    /// Unsynced writes that were lost.
    pub(crate) lost_writes: usize,
    /// Whether the last surviving append was torn.
    pub(crate) torn: bool,
}

impl SimDisk {
    fn lock(&self) -> MutexGuard<'_, DiskState> {
        // The simulator is single-threaded per run; a poisoned lock only follows a panic that
        // already fails the run, and the plain data inside is still consistent.
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Applies a crash: keeps a random prefix of the unsynced writes (tearing the last kept
    /// append with probability `torn_write_probability`) and drops the rest.
    pub(crate) fn crash(&self, rng: &mut SimRng, torn_write_probability: f64) -> CrashDamage {
        let mut state = self.lock();
        let unsynced = std::mem::take(&mut state.unsynced);
        state.fail_next_sync = false;
        let kept = rng.below(unsynced.len() as u64 + 1) as usize;
        let mut damage = CrashDamage { lost_writes: unsynced.len() - kept, torn: false };
        for (position, write) in unsynced.into_iter().take(kept).enumerate() {
            match write {
                UnsyncedWrite::Append(mut entries) => {
                    let last_kept = position + 1 == kept;
                    if last_kept && !entries.is_empty() && rng.chance(torn_write_probability) {
                        let survivors = rng.below(entries.len() as u64) as usize;
                        entries.truncate(survivors);
                        damage.torn = true;
                    }
                    apply_append(&mut state.durable, &entries);
                }
                UnsyncedWrite::HardState(hard_state) => state.durable.hard_state = hard_state,
            }
        }
        damage
    }

    /// Makes the next `sync` fail with an I/O error.
    pub(crate) fn fail_next_sync(&self) {
        self.lock().fail_next_sync = true;
    }
}

fn apply_append(durable: &mut InitialState, entries: &[Entry]) {
    let Some(first) = entries.first() else { return };
    let keep = (first.index.0.saturating_sub(1) as usize).min(durable.entries.len());
    durable.entries.truncate(keep);
    // A torn batch after a lost earlier write could leave a gap; a gap is not a log, so the
    // entries past it are dropped, as a real log's recovery would.
    for entry in entries {
        if entry.index.0 == durable.entries.len() as u64 + 1 {
            durable.entries.push(entry.clone());
        } else {
            break;
        }
    }
}

/// The [`Storage`] a simulated node runs on: the real trait, backed by a [`SimDisk`].
#[derive(Debug)]
pub(crate) struct SimStorage {
    disk: SimDisk,
    forget_vote_on_load: bool,
}

impl SimStorage {
    pub(crate) fn new(disk: SimDisk, forget_vote_on_load: bool) -> Self {
        SimStorage { disk, forget_vote_on_load }
    }
}

impl Storage for SimStorage {
    fn load(&mut self) -> Result<InitialState, StorageError> {
        let mut state = self.disk.lock().durable.clone();
        if self.forget_vote_on_load {
            // Planted bug: the vote does not survive a restart.
            state.hard_state.voted_for = None;
        }
        Ok(state)
    }

    fn append(&mut self, entries: &[Entry]) -> Result<(), StorageError> {
        if !entries.is_empty() {
            self.disk.lock().unsynced.push(UnsyncedWrite::Append(entries.to_vec()));
        }
        Ok(())
    }

    fn save_hard_state(&mut self, hard_state: &HardState) -> Result<(), StorageError> {
        self.disk.lock().unsynced.push(UnsyncedWrite::HardState(*hard_state));
        Ok(())
    }

    fn sync(&mut self) -> Result<(), StorageError> {
        let mut state = self.disk.lock();
        if std::mem::take(&mut state.fail_next_sync) {
            return Err(StorageError::io(
                "syncing the simulated disk",
                std::io::Error::other("injected I/O error"),
            ));
        }
        let unsynced = std::mem::take(&mut state.unsynced);
        for write in unsynced {
            match write {
                UnsyncedWrite::Append(entries) => apply_append(&mut state.durable, &entries),
                UnsyncedWrite::HardState(hard_state) => state.durable.hard_state = hard_state,
            }
        }
        Ok(())
    }
}
