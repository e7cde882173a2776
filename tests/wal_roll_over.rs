//! How the write-ahead log moves from one segment to the next, through a file system that
//! watches it ([`InstrumentedDisk`]):
//!
//! - a segment the log closes is wholly durable, its zero end marker included, before the
//!   next segment begins, even when a sync still in flight from an earlier flush covered the
//!   closing flush's records (recovery needs the end marker of a closed recycled segment:
//!   stale bytes follow its records). The race is staged by completing an earlier flush's
//!   sync just before the end marker is written, as the node's sync thread may do then;
//! - the log never waits for the background preparation of its next segment except at a
//!   roll-over that needs it: a segment that grows as it is written is closed early only once
//!   its successor is ready, and until then writes go on into it. The preparation is held
//!   back by blocking the creation of `prepare-*.tmp` files until the test lets it go.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use bytes::Bytes;
use raft_consensus::storage::{
    AppendFile, DirLock, FileSystem, PendingSync, StdFileSystem, Storage, WalIdentity, WalOptions,
    WalStorage,
};
use raft_consensus::{Entry, EntryPayload, LogIndex, NodeId, Term};

/// Bytes of the zero end marker that closes a segment (a zero record prefix).
const END_MARKER_LEN: usize = 16;

/// How the disk lets the log prepare its segments.
#[derive(Clone, Copy)]
enum Preparation {
    /// Inline, when the log asks (the roll-over is then the one rename of a segment name).
    Inline,
    /// On the log's background thread; `held`: its file is not created until [`Gate::open`].
    Background { held: bool },
}

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

/// The real file system, watched: which files hold unsynced bytes, whether a segment is
/// started while an earlier one does, and (see [`Preparation`]) when segments are prepared.
#[derive(Clone)]
struct InstrumentedDisk {
    state: Arc<Mutex<DiskState>>,
    gate: Arc<Gate>,
    background: bool,
}

impl InstrumentedDisk {
    fn new(preparation: Preparation) -> InstrumentedDisk {
        let (background, held) = match preparation {
            Preparation::Inline => (false, false),
            Preparation::Background { held } => (true, held),
        };
        let gate = Gate { open: Mutex::new(!held), opened: Condvar::new() };
        InstrumentedDisk { state: Arc::default(), gate: Arc::new(gate), background }
    }
}

struct Gate {
    open: Mutex<bool>,
    opened: Condvar,
}

impl Gate {
    fn open(&self) {
        *self.open.lock().unwrap() = true;
        self.opened.notify_all();
    }

    fn wait(&self) {
        let mut open = self.open.lock().unwrap();
        while !*open {
            open = self.opened.wait(open).unwrap();
        }
    }
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

impl FileSystem for InstrumentedDisk {
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
        let name = path.file_name().and_then(|name| name.to_str()).unwrap_or_default();
        if name.starts_with("prepare-") {
            self.gate.wait();
        }
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
        self.background
    }

    fn lock_dir(&self, dir: &Path) -> io::Result<DirLock> {
        StdFileSystem.lock_dir(dir)
    }
}

fn entry(index: u64, command_len: usize) -> Entry {
    Entry {
        term: Term(1),
        index: LogIndex(index),
        payload: EntryPayload::Command(Bytes::from(vec![7u8; command_len])),
    }
}

fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut names: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| is_segment(path))
        .collect();
    names.sort();
    names
}

#[test]
fn a_closed_segment_is_durable_with_its_end_marker_before_the_next_begins() {
    let dir = tempfile::tempdir().unwrap();
    let disk = InstrumentedDisk::new(Preparation::Inline);
    let state = Arc::clone(&disk.state);
    let identity = WalIdentity { node_id: NodeId(1), cluster_id: 7 };
    let options = WalOptions { segment_max_bytes: 4096, ..WalOptions::default() };
    let mut storage = WalStorage::open_on(disk, dir.path(), identity, options).unwrap();
    storage.load().unwrap();
    let mut index = 1;
    while segments(dir.path()).len() < 2 {
        storage.append(&[entry(index, 300)]).unwrap();
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

/// Entries written, one sync each, past the point where the first segment's successor is
/// being prepared (64 KiB) while that preparation is held back: every write returns, the
/// segment grows on; once the preparation may finish, the segment is closed at a later write.
#[test]
fn writes_go_on_while_the_next_segment_is_being_prepared() {
    let dir = tempfile::tempdir().unwrap();
    let disk = InstrumentedDisk::new(Preparation::Background { held: true });
    let gate = Arc::clone(&disk.gate);
    let identity = WalIdentity { node_id: NodeId(1), cluster_id: 7 };
    let options = WalOptions { segment_max_bytes: 1024 * 1024, ..WalOptions::default() };
    let path = dir.path().to_path_buf();
    let (progress, writes) = mpsc::channel();
    let writer = std::thread::spawn(move || {
        let mut storage = WalStorage::open_on(disk, &path, identity, options).unwrap();
        storage.load().unwrap();
        // 128 KiB: twice the point where the preparation starts, a quarter of the segment.
        for index in 1..=128 {
            storage.append(&[entry(index, 1024)]).unwrap();
            storage.sync().unwrap();
            progress.send(index).unwrap();
        }
        storage
    });
    for expected in 1..=128 {
        let index = writes
            .recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|_| panic!("write {expected} waited for the segment being prepared"));
        assert_eq!(index, expected);
    }
    let mut storage = writer.join().unwrap();
    assert_eq!(segments(dir.path()).len(), 1, "closed before its successor was ready");

    gate.open();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let mut index = 129;
    while segments(dir.path()).len() == 1 {
        assert!(std::time::Instant::now() < deadline, "not closed once its successor was ready");
        storage.append(&[entry(index, 1024)]).unwrap();
        storage.sync().unwrap();
        index += 1;
    }
    let first = std::fs::metadata(&segments(dir.path())[0]).unwrap().len();
    assert!(first < 1024 * 1024 / 2, "segment 1 closed at {first} bytes");
    drop(storage);
    let identity = WalIdentity { node_id: NodeId(1), cluster_id: 7 };
    let options = WalOptions { segment_max_bytes: 1024 * 1024, ..WalOptions::default() };
    let state = WalStorage::open(dir.path(), identity, options).unwrap().load().unwrap();
    assert_eq!(state.entries, (1..index).map(|index| entry(index, 1024)).collect::<Vec<_>>());
}
