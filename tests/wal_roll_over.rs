//! A segment the write-ahead log closes is wholly durable, its zero end marker included,
//! before the next segment begins, even when a sync still in flight from an earlier flush
//! covered the closing flush's records. (Recovery needs the end marker of a closed recycled
//! segment: stale bytes follow its records.)
//!
//! The race is staged with a file system that records which files hold bytes written since
//! their last sync, and that completes an earlier flush's sync just before the end marker is
//! written (as the node's sync thread may do at that moment).

use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use raft_consensus::storage::{
    AppendFile, DirLock, FileSystem, PendingSync, StdFileSystem, Storage, WalIdentity, WalOptions,
    WalStorage,
};
use raft_consensus::{Entry, EntryPayload, LogIndex, NodeId, Term};

/// Bytes of the zero end marker that closes a segment (a zero record prefix).
const END_MARKER_LEN: usize = 16;

#[derive(Default)]
struct DiskState {
    /// Files written since their last sync.
    unsynced: Vec<PathBuf>,
    /// Syncs handed out by flushes and not completed yet, oldest first: the newest is
    /// completed just before an end marker is written.
    in_flight: Vec<Box<dyn PendingSync>>,
    /// Segments that held unsynced bytes when a later segment was started.
    closed_unsynced: Vec<PathBuf>,
}

#[derive(Clone, Default)]
struct TrackingDisk {
    state: Arc<Mutex<DiskState>>,
}

struct TrackedFile {
    path: PathBuf,
    file: <StdFileSystem as FileSystem>::File,
    state: Arc<Mutex<DiskState>>,
}

fn is_segment(path: &Path) -> bool {
    path.extension().is_some_and(|extension| extension == "log")
}

impl AppendFile for TrackedFile {
    fn write_at(&mut self, bytes: &[u8], offset: u64) -> io::Result<()> {
        if is_segment(&self.path) && bytes.len() == END_MARKER_LEN && bytes.iter().all(|b| *b == 0)
        {
            // The sync thread completes the earlier flush's sync now: it reads how far the
            // segment is written, which already takes in the closing flush's records.
            let in_flight = self.state.lock().unwrap().in_flight.pop();
            if let Some(sync) = in_flight {
                sync.complete().unwrap();
            }
        }
        self.file.write_at(bytes, offset)?;
        let mut state = self.state.lock().unwrap();
        if !state.unsynced.contains(&self.path) {
            state.unsynced.push(self.path.clone());
        }
        Ok(())
    }

    fn sync_data(&mut self) -> io::Result<()> {
        // What was written before the sync began is durable when it returns.
        let path = self.path.clone();
        self.state.lock().unwrap().unsynced.retain(|unsynced| *unsynced != path);
        self.file.sync_data()
    }

    fn try_clone(&self) -> io::Result<Self> {
        Ok(TrackedFile {
            path: self.path.clone(),
            file: self.file.try_clone()?,
            state: Arc::clone(&self.state),
        })
    }
}

impl FileSystem for TrackingDisk {
    type File = TrackedFile;
    type ReadFile = <StdFileSystem as FileSystem>::ReadFile;

    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        StdFileSystem.create_dir_all(dir)
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        StdFileSystem.list(dir)
    }

    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        StdFileSystem.read(path)
    }

    fn open_read(&self, path: &Path) -> io::Result<Self::ReadFile> {
        StdFileSystem.open_read(path)
    }

    fn open_write(&self, path: &Path) -> io::Result<TrackedFile> {
        let file = StdFileSystem.open_write(path)?;
        Ok(TrackedFile { path: path.to_path_buf(), file, state: Arc::clone(&self.state) })
    }

    fn truncate(&self, path: &Path, length: u64) -> io::Result<()> {
        StdFileSystem.truncate(path, length)
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        StdFileSystem.remove(path)
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        if is_segment(to) {
            // A segment is being started: every earlier one must be durable.
            let mut state = self.state.lock().unwrap();
            let unsynced: Vec<PathBuf> =
                state.unsynced.iter().filter(|path| is_segment(path)).cloned().collect();
            state.closed_unsynced.extend(unsynced);
        }
        StdFileSystem.rename(from, to)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        StdFileSystem.sync_dir(dir)
    }

    fn prepare_in_background(&self) -> bool {
        // Prepared inline: the roll-over is the one rename of a segment name.
        false
    }

    fn lock_dir(&self, dir: &Path) -> io::Result<DirLock> {
        StdFileSystem.lock_dir(dir)
    }
}

#[test]
fn a_closed_segment_is_durable_with_its_end_marker_before_the_next_begins() {
    let dir = tempfile::tempdir().unwrap();
    let disk = TrackingDisk::default();
    let state = Arc::clone(&disk.state);
    let identity = WalIdentity { node_id: NodeId(1), cluster_id: 7 };
    let options = WalOptions { segment_max_bytes: 4096, ..WalOptions::default() };
    let mut storage = WalStorage::open_on(disk, dir.path(), identity, options).unwrap();
    storage.load().unwrap();
    let mut index = 1;
    while StdFileSystem
        .list(dir.path())
        .unwrap()
        .iter()
        .filter(|name| name.ends_with(".log"))
        .count()
        < 2
    {
        let entry = Entry {
            term: Term(1),
            index: LogIndex(index),
            payload: EntryPayload::Command(Bytes::from(vec![7u8; 300])),
        };
        storage.append(&[entry]).unwrap();
        // Its sync stays in flight (a node allows 16 at once): none completes before the
        // closing flush, so the newest one is not yet covered by another.
        let sync = storage.flush().unwrap();
        state.lock().unwrap().in_flight.push(sync);
        index += 1;
        assert!(index < 16, "the segment never closed");
    }
    for sync in std::mem::take(&mut state.lock().unwrap().in_flight) {
        sync.complete().unwrap();
    }
    let closed_unsynced = state.lock().unwrap().closed_unsynced.clone();
    assert!(
        closed_unsynced.is_empty(),
        "segments not durable when the next began: {closed_unsynced:?}"
    );
}
