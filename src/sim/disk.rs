//! [`SimDisk`]: a node's disk in the simulator, under the real write-ahead log.
//!
//! It implements the [`FileSystem`] trait the WAL uses, with a real disk's failure modes:
//! written bytes are only durable after `sync_data`; at a power loss, the unsynced writes of a
//! file may survive in part, either as a prefix cut at any byte or as any subset of their
//! 512-byte sectors, landed out of order (where a write did not land, the old content stays:
//! zeros in preallocated space), and the rest is lost; a file whose
//! directory entry was never synced may vanish, and a rename not followed by a directory sync
//! may be undone; and a sync can fail, which stops the node. A process crash loses nothing
//! (the page cache survives). Segments are prepared inline, not on a background thread, so
//! that a run replays exactly.
//! [`SimStorage`] is the WAL on this disk.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::core::InitialState;
use crate::error::StorageError;
use crate::hard_state::HardState;
use crate::message::Entry;
use crate::storage::{
    AppendFile, FileSystem, InMemoryFile, Storage, WalIdentity, WalOptions, WalSnapshotStore,
    WalStorage,
};
use crate::types::{LogId, LogIndex, NodeId};

use super::rng::SimRng;

/// Where each simulated node keeps its log.
const DATA_DIR: &str = "/data";
/// Segments small enough that runs create, roll and recover many of them.
const SEGMENT_MAX_BYTES: u64 = 16 * 1024;

#[derive(Debug, Default)]
struct SimFile {
    durable: Vec<u8>,
    /// Positioned writes not yet synced, in the order they were made: offset and bytes.
    unsynced: Vec<(u64, Vec<u8>)>,
    /// Whether the file's directory entry (its current name) is durable.
    linked: bool,
    /// The name the file is durably linked under, when it was renamed and the directory not
    /// synced since: a power loss undoes the rename.
    durable_name: Option<PathBuf>,
}

impl SimFile {
    /// The content a reader sees: the durable bytes with every unsynced write applied.
    fn content(&self) -> Vec<u8> {
        let mut bytes = self.durable.clone();
        for (offset, write) in &self.unsynced {
            apply_write(&mut bytes, *offset, write);
        }
        bytes
    }

    fn unsynced_bytes(&self) -> usize {
        self.unsynced.iter().map(|(_, write)| write.len()).sum()
    }
}

/// Lands the first `kept` bytes of `writes` (in the order they were made) on `durable`; returns
/// how many landed.
fn land_prefix(durable: &mut Vec<u8>, writes: Vec<(u64, Vec<u8>)>, kept: usize) -> usize {
    let mut left = kept;
    for (offset, write) in writes {
        if left == 0 {
            break;
        }
        let landed = left.min(write.len());
        apply_write(durable, offset, &write[..landed]);
        left -= landed;
    }
    kept - left
}

/// Lands each 512-byte sector (aligned to the file's offsets) that `writes` touched on
/// `durable` with probability one half, as its latest content: a disk writes what the page
/// cache holds, so two writes into one sector land together or not at all. Returns how many
/// written bytes landed.
fn land_sectors(durable: &mut Vec<u8>, writes: Vec<(u64, Vec<u8>)>, rng: &mut SimRng) -> usize {
    const SECTOR_BYTES: u64 = 512;
    let mut latest = durable.clone();
    let mut sectors = std::collections::BTreeMap::new();
    for (offset, write) in &writes {
        apply_write(&mut latest, *offset, write);
        let end = offset + write.len() as u64;
        let mut start = *offset;
        while start < end {
            let sector = start / SECTOR_BYTES;
            let piece_end = ((sector + 1) * SECTOR_BYTES).min(end);
            *sectors.entry(sector).or_insert(0) += (piece_end - start) as usize;
            start = piece_end;
        }
    }
    let mut landed = 0;
    for (sector, written) in sectors {
        if rng.chance(0.5) {
            let start = (sector * SECTOR_BYTES) as usize;
            let end = (start + SECTOR_BYTES as usize).min(latest.len());
            apply_write(durable, start as u64, &latest[start..end]);
            landed += written;
        }
    }
    landed
}

/// Writes `bytes` at `offset` of `content`, growing it with zeros first if needed.
fn apply_write(content: &mut Vec<u8>, offset: u64, bytes: &[u8]) {
    let start = usize::try_from(offset).unwrap_or(usize::MAX);
    let end = start.saturating_add(bytes.len());
    if content.len() < end {
        content.resize(end, 0);
    }
    content[start..end].copy_from_slice(bytes);
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

    /// Applies a power loss. Renames whose directory was never synced are undone, and files
    /// whose directory entry was never synced vanish. With probability
    /// `torn_write_probability` a file keeps part of its unsynced writes (otherwise all are
    /// lost), in one of two ways, equally likely: a random prefix of them, in the order they
    /// were made, cut at any byte (the writes before the cut land whole, the one it falls in
    /// lands up to the cut, the later ones are lost); or a random subset of their 512-byte
    /// sectors (as a disk that reorders writes in its cache leaves them). Wherever a write
    /// does not land, what was durable there stays: zeros in preallocated space.
    pub(crate) fn crash(&self, rng: &mut SimRng, torn_write_probability: f64) -> CrashDamage {
        let mut state = self.lock();
        state.fail_next_sync = false;
        let mut damage = CrashDamage::default();
        let unlinked: Vec<PathBuf> = state
            .files
            .iter()
            .filter(|(_, file)| !file.linked)
            .map(|(path, _)| path.clone())
            .collect();
        for path in unlinked {
            let Some(mut file) = state.files.remove(&path) else { continue };
            if let Some(old) = file.durable_name.take()
                && !state.files.contains_key(&old)
            {
                file.linked = true;
                state.files.insert(old, file);
            }
        }
        for file in state.files.values_mut() {
            let total = file.unsynced_bytes();
            let unsynced = std::mem::take(&mut file.unsynced);
            if total == 0 {
                continue;
            }
            if !rng.chance(torn_write_probability) {
                damage.lost_bytes += total;
                continue;
            }
            let landed = if rng.chance(0.5) {
                land_prefix(&mut file.durable, unsynced, rng.below(total as u64 + 1) as usize)
            } else {
                land_sectors(&mut file.durable, unsynced, rng)
            };
            damage.lost_bytes += total - landed;
            damage.torn |= landed > 0;
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
    /// What the file held when opened (a snapshot file, which nothing writes once it is in
    /// place, stays readable after it is removed, as an open file does).
    type ReadFile = InMemoryFile;

    fn open_read(&self, path: &Path) -> io::Result<InMemoryFile> {
        let state = self.lock();
        let file = state.files.get(path).ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))?;
        Ok(InMemoryFile::new(file.content()))
    }

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
        Ok(file.content())
    }

    fn open_write(&self, path: &Path) -> io::Result<SimFileHandle> {
        self.lock().files.entry(path.to_path_buf()).or_default();
        Ok(SimFileHandle { disk: self.clone(), path: path.to_path_buf() })
    }

    fn truncate(&self, path: &Path, length: u64) -> io::Result<()> {
        let mut state = self.lock();
        let file =
            state.files.get_mut(path).ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))?;
        let mut bytes = file.content();
        bytes.truncate(usize::try_from(length).unwrap_or(usize::MAX));
        file.durable = bytes;
        file.unsynced.clear();
        Ok(())
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        self.lock().files.remove(path).map(|_| ()).ok_or_else(|| io::ErrorKind::NotFound.into())
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut state = self.lock();
        let mut file = state.files.remove(from).ok_or(io::ErrorKind::NotFound)?;
        if file.linked {
            file.durable_name = Some(from.to_path_buf());
        }
        file.linked = false;
        state.files.insert(to.to_path_buf(), file);
        Ok(())
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        for (path, file) in self.lock().files.iter_mut() {
            if path.parent() == Some(dir) {
                file.linked = true;
                file.durable_name = None;
            }
        }
        Ok(())
    }

    fn prepare_in_background(&self) -> bool {
        // A run must replay exactly: every disk operation happens on the node's own turn.
        false
    }
}

/// A file of a [`SimDisk`], open for positioned writes. It names the file by path, so it
/// follows the name, not the file, across a rename (the log reopens a renamed segment).
#[derive(Clone, Debug)]
pub(crate) struct SimFileHandle {
    disk: SimDisk,
    path: PathBuf,
}

impl AppendFile for SimFileHandle {
    fn write_at(&mut self, bytes: &[u8], offset: u64) -> io::Result<()> {
        let mut state = self.disk.lock();
        let file = state.files.get_mut(&self.path).ok_or(io::ErrorKind::NotFound)?;
        file.unsynced.push((offset, bytes.to_vec()));
        Ok(())
    }

    fn sync_data(&mut self) -> io::Result<()> {
        let mut state = self.disk.lock();
        if std::mem::take(&mut state.fail_next_sync) {
            return Err(io::Error::other("injected I/O error"));
        }
        let file = state.files.get_mut(&self.path).ok_or(io::ErrorKind::NotFound)?;
        for (offset, write) in std::mem::take(&mut file.unsynced) {
            apply_write(&mut file.durable, offset, &write);
        }
        Ok(())
    }

    fn try_clone(&self) -> io::Result<SimFileHandle> {
        Ok(self.clone())
    }
}

/// The storage a simulated node runs on: the real write-ahead log on its [`SimDisk`].
#[derive(Debug)]
pub(crate) struct SimStorage {
    wal: WalStorage<SimDisk>,
}

impl SimStorage {
    /// Opens node `id`'s log on `disk`, recovering what survived.
    pub(crate) fn open(disk: SimDisk, id: NodeId) -> Result<Self, StorageError> {
        let identity = WalIdentity { node_id: id, cluster_id: 1 };
        let options = WalOptions { segment_max_bytes: SEGMENT_MAX_BYTES, ..WalOptions::default() };
        let wal = WalStorage::open_on(disk, DATA_DIR, identity, options)?;
        Ok(SimStorage { wal })
    }
}

impl Storage for SimStorage {
    type Snapshots = WalSnapshotStore<SimDisk>;

    fn load(&mut self) -> Result<InitialState, StorageError> {
        self.wal.load()
    }

    fn append(&mut self, entries: &[Entry]) -> Result<(), StorageError> {
        self.wal.append(entries)
    }

    fn save_hard_state(&mut self, hard_state: &HardState) -> Result<(), StorageError> {
        self.wal.save_hard_state(hard_state)
    }

    fn save_members(&mut self, members: &[NodeId]) -> Result<(), StorageError> {
        self.wal.save_members(members)
    }

    fn sync(&mut self) -> Result<(), StorageError> {
        self.wal.sync()
    }

    fn flush(&mut self) -> Result<Box<dyn crate::storage::PendingSync>, StorageError> {
        self.wal.flush()
    }

    fn max_entry_bytes(&self) -> Option<usize> {
        self.wal.max_entry_bytes()
    }

    fn reset_log(&mut self, base: LogId) -> Result<(), StorageError> {
        self.wal.reset_log(base)
    }

    fn compact(&mut self, through: LogIndex) -> Result<(), StorageError> {
        self.wal.compact(through)
    }

    fn snapshot_store(&self) -> WalSnapshotStore<SimDisk> {
        self.wal.snapshot_store()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DIR: &str = "/d";

    fn path(name: &str) -> PathBuf {
        Path::new(DIR).join(name)
    }

    /// A file of `len` zeros, synced and linked, as a prepared segment is.
    fn zero_filled(disk: &SimDisk, name: &str, len: usize) -> SimFileHandle {
        let mut file = disk.open_write(&path(name)).unwrap();
        file.write_at(&vec![0; len], 0).unwrap();
        file.sync_data().unwrap();
        disk.sync_dir(Path::new(DIR)).unwrap();
        file
    }

    #[test]
    fn a_power_loss_tears_positioned_writes_into_zeros_at_any_byte_or_sector() {
        let written = b"abcdefghijkl";
        let mut seen = std::collections::BTreeSet::new();
        for seed in 0..600 {
            let disk = SimDisk::default();
            let mut file = zero_filled(&disk, "f", 64);
            file.write_at(&written[..8], 8).unwrap();
            file.write_at(&written[8..], 16).unwrap();
            assert_eq!(&disk.read(&path("f")).unwrap()[8..20], written);
            let damage = disk.crash(&mut SimRng::new(seed), 1.0);
            let bytes = disk.read(&path("f")).unwrap();
            assert_eq!(bytes.len(), 64, "seed {seed}: the length changed");
            let landed = &bytes[8..20];
            let kept = 12 - damage.lost_bytes;
            assert_eq!(landed.iter().filter(|byte| **byte != 0).count(), kept, "seed {seed}");
            assert!(bytes[..8].iter().chain(&bytes[20..]).all(|byte| *byte == 0), "seed {seed}");
            // Each byte is what was written there or the zeros that were durable before.
            assert!(
                landed.iter().zip(written).all(|(got, wrote)| got == wrote || *got == 0),
                "seed {seed}: {landed:?}"
            );
            seen.insert(landed.to_vec());
        }
        for kept in 0..=12 {
            let mut prefix = written.to_vec();
            prefix[kept..].fill(0);
            assert!(seen.contains(&prefix), "the cut after {kept} bytes never happened");
        }
        // Both writes fall in one sector, which lands whole: never the second without the
        // first by sectors (only a byte prefix cuts between them).
        let mut second_only = written.to_vec();
        second_only[..8].fill(0);
        assert!(!seen.contains(&second_only), "a sector landed in part: {seen:?}");
    }

    #[test]
    fn a_power_loss_lands_whole_sectors_of_a_write_in_any_subset() {
        let mut seen = std::collections::BTreeSet::new();
        for seed in 0..200 {
            let disk = SimDisk::default();
            let mut file = zero_filled(&disk, "f", 4096);
            file.write_at(&[7; 2048], 512).unwrap();
            disk.crash(&mut SimRng::new(seed), 1.0);
            let bytes = disk.read(&path("f")).unwrap();
            assert!(bytes.iter().all(|byte| *byte == 0 || *byte == 7), "seed {seed}");
            let whole_sectors: Vec<bool> =
                bytes.chunks(512).map(|sector| sector.iter().all(|byte| *byte == 7)).collect();
            seen.insert(whole_sectors);
        }
        // Among the outcomes: the write's third sector alone, which no prefix gives.
        let third_alone = [false, false, false, true, false, false, false, false];
        assert!(seen.contains(third_alone.as_slice()), "{seen:?}");
    }

    #[test]
    fn synced_writes_survive_and_a_process_crash_loses_nothing() {
        let disk = SimDisk::default();
        let mut file = zero_filled(&disk, "f", 16);
        file.write_at(b"xy", 2).unwrap();
        file.sync_data().unwrap();
        file.write_at(b"zz", 20).unwrap();
        // A process crash does not touch the disk: the unsynced write is still readable.
        assert_eq!(&disk.read(&path("f")).unwrap()[20..], b"zz");
        let damage = disk.crash(&mut SimRng::new(1), 0.0);
        assert_eq!(damage.lost_bytes, 2);
        let bytes = disk.read(&path("f")).unwrap();
        assert_eq!(bytes.len(), 16, "the unsynced write that grew the file is lost");
        assert_eq!(&bytes[2..4], b"xy");
    }

    #[test]
    fn a_rename_is_undone_by_a_power_loss_until_the_directory_is_synced() {
        let disk = SimDisk::default();
        drop(zero_filled(&disk, "prepared.tmp", 8));
        disk.rename(&path("prepared.tmp"), &path("segment")).unwrap();
        disk.crash(&mut SimRng::new(3), 0.5);
        assert_eq!(disk.list(Path::new(DIR)).unwrap(), ["prepared.tmp"]);

        disk.rename(&path("prepared.tmp"), &path("segment")).unwrap();
        disk.sync_dir(Path::new(DIR)).unwrap();
        disk.crash(&mut SimRng::new(3), 0.5);
        assert_eq!(disk.list(Path::new(DIR)).unwrap(), ["segment"]);
        assert_eq!(disk.read(&path("segment")).unwrap(), [0; 8]);

        // A file never linked vanishes, renamed or not.
        let mut file = disk.open_write(&path("new.tmp")).unwrap();
        file.write_at(b"data", 0).unwrap();
        file.sync_data().unwrap();
        disk.rename(&path("new.tmp"), &path("new")).unwrap();
        disk.crash(&mut SimRng::new(3), 0.5);
        assert_eq!(disk.list(Path::new(DIR)).unwrap(), ["segment"]);
    }
}
