//! [`SimDisk`]: a node's disk in the simulator, under the real write-ahead log.
//!
//! It implements the [`FileSystem`] trait the WAL uses, with a real disk's failure modes:
//! appended bytes are only durable after `sync_data`; at a crash, any prefix of the unsynced
//! bytes of a file may survive, cut at any byte (a torn record), and the rest is lost; a file
//! whose directory entry was never synced may vanish; and a sync can fail, which stops the node.
//! [`SimStorage`] is the WAL on this disk (with the planted forget-the-vote bug when asked).

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::core::InitialState;
use crate::error::StorageError;
use crate::hard_state::HardState;
use crate::message::Entry;
use crate::storage::{AppendFile, FileSystem, Storage, WalIdentity, WalOptions, WalStorage};
use crate::types::NodeId;

use super::rng::SimRng;

/// Where each simulated node keeps its log.
const DATA_DIR: &str = "/data";
/// Segments small enough that runs create, roll and recover many of them.
const SEGMENT_MAX_BYTES: u64 = 16 * 1024;

#[derive(Debug, Default)]
struct SimFile {
    durable: Vec<u8>,
    unsynced: Vec<u8>,
    /// Whether the file's directory entry is durable.
    linked: bool,
}

#[derive(Debug, Default)]
struct DiskState {
    files: BTreeMap<PathBuf, SimFile>,
    /// Whether the next `sync_data` fails (an injected I/O error).
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
    /// Unsynced bytes that were lost.
    pub(crate) lost_bytes: usize,
    /// Whether a file kept part of its unsynced bytes (a torn write).
    pub(crate) torn: bool,
}

impl SimDisk {
    fn lock(&self) -> MutexGuard<'_, DiskState> {
        // Each run is single-threaded; a poisoned lock only follows a panic that already
        // fails the run, and the plain data inside is still consistent.
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Applies a crash: each file keeps a random prefix of its unsynced bytes, cut at any
    /// byte with probability `torn_write_probability` (otherwise all are lost), and files
    /// whose directory entry was never synced vanish.
    pub(crate) fn crash(&self, rng: &mut SimRng, torn_write_probability: f64) -> CrashDamage {
        let mut state = self.lock();
        state.fail_next_sync = false;
        let mut damage = CrashDamage::default();
        state.files.retain(|_, file| file.linked);
        for file in state.files.values_mut() {
            let unsynced = std::mem::take(&mut file.unsynced);
            if unsynced.is_empty() {
                continue;
            }
            let kept = if rng.chance(torn_write_probability) {
                rng.below(unsynced.len() as u64 + 1) as usize
            } else {
                0
            };
            damage.lost_bytes += unsynced.len() - kept;
            damage.torn |= kept > 0;
            file.durable.extend_from_slice(&unsynced[..kept]);
        }
        damage
    }

    /// Makes the next `sync_data` fail with an I/O error.
    pub(crate) fn fail_next_sync(&self) {
        self.lock().fail_next_sync = true;
    }
}

impl FileSystem for SimDisk {
    type File = SimFileHandle;

    fn create_dir_all(&self, _dir: &Path) -> io::Result<()> {
        Ok(())
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let state = self.lock();
        Ok(state
            .files
            .keys()
            .filter(|path| path.parent() == Some(dir))
            .filter_map(|path| path.file_name()?.to_str().map(str::to_owned))
            .collect())
    }

    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        let state = self.lock();
        let file = state.files.get(path).ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))?;
        let mut bytes = file.durable.clone();
        bytes.extend_from_slice(&file.unsynced);
        Ok(bytes)
    }

    fn open_append(&self, path: &Path) -> io::Result<SimFileHandle> {
        self.lock().files.entry(path.to_path_buf()).or_default();
        Ok(SimFileHandle { disk: self.clone(), path: path.to_path_buf() })
    }

    fn truncate(&self, path: &Path, length: u64) -> io::Result<()> {
        let mut state = self.lock();
        let file =
            state.files.get_mut(path).ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))?;
        let mut bytes = std::mem::take(&mut file.durable);
        bytes.append(&mut file.unsynced);
        bytes.truncate(length as usize);
        file.durable = bytes;
        Ok(())
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        self.lock().files.remove(path).map(|_| ()).ok_or_else(|| io::ErrorKind::NotFound.into())
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        for (path, file) in self.lock().files.iter_mut() {
            if path.parent() == Some(dir) {
                file.linked = true;
            }
        }
        Ok(())
    }
}

/// A file of a [`SimDisk`], open for appending.
#[derive(Debug)]
pub(crate) struct SimFileHandle {
    disk: SimDisk,
    path: PathBuf,
}

impl AppendFile for SimFileHandle {
    fn append(&mut self, bytes: &[u8]) -> io::Result<()> {
        let mut state = self.disk.lock();
        let file = state.files.get_mut(&self.path).ok_or(io::ErrorKind::NotFound)?;
        file.unsynced.extend_from_slice(bytes);
        Ok(())
    }

    fn sync_data(&mut self) -> io::Result<()> {
        let mut state = self.disk.lock();
        if std::mem::take(&mut state.fail_next_sync) {
            return Err(io::Error::other("injected I/O error"));
        }
        let file = state.files.get_mut(&self.path).ok_or(io::ErrorKind::NotFound)?;
        let mut unsynced = std::mem::take(&mut file.unsynced);
        file.durable.append(&mut unsynced);
        Ok(())
    }
}

/// The storage a simulated node runs on: the real write-ahead log on its [`SimDisk`].
#[derive(Debug)]
pub(crate) struct SimStorage {
    wal: WalStorage<SimDisk>,
    forget_vote_on_load: bool,
}

impl SimStorage {
    /// Opens node `id`'s log on `disk`, recovering what survived.
    pub(crate) fn open(
        disk: SimDisk,
        id: NodeId,
        forget_vote_on_load: bool,
    ) -> Result<Self, StorageError> {
        let identity = WalIdentity { node_id: id, cluster_id: 1 };
        let options = WalOptions { segment_max_bytes: SEGMENT_MAX_BYTES, ..WalOptions::default() };
        let wal = WalStorage::open_on(disk, DATA_DIR, identity, options)?;
        Ok(SimStorage { wal, forget_vote_on_load })
    }
}

impl Storage for SimStorage {
    fn load(&mut self) -> Result<InitialState, StorageError> {
        let mut state = self.wal.load()?;
        if self.forget_vote_on_load {
            // Planted bug: the vote does not survive a restart.
            state.hard_state.voted_for = None;
        }
        Ok(state)
    }

    fn append(&mut self, entries: &[Entry]) -> Result<(), StorageError> {
        self.wal.append(entries)
    }

    fn save_hard_state(&mut self, hard_state: &HardState) -> Result<(), StorageError> {
        self.wal.save_hard_state(hard_state)
    }

    fn sync(&mut self) -> Result<(), StorageError> {
        self.wal.sync()
    }
}
