//! The write-ahead log never waits for the background preparation of its next segment except
//! at a roll-over that needs it: a segment that grows as it is written is closed early only
//! once its successor is ready, and until then writes go on into it. The preparation is held
//! back here by a file system that blocks the creation of `prepare-*.tmp` files until the test
//! lets it go.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use bytes::Bytes;
use raft_consensus::storage::{
    DirLock, FileSystem, StdFileSystem, Storage, WalIdentity, WalOptions, WalStorage,
};
use raft_consensus::{Entry, EntryPayload, LogIndex, NodeId, Term};

/// The real file system, except that creating a prepared segment waits for [`Gate::open`].
#[derive(Clone, Default)]
struct GatedDisk {
    gate: Arc<Gate>,
}

#[derive(Default)]
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

impl FileSystem for GatedDisk {
    type File = <StdFileSystem as FileSystem>::File;
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

    fn open_write(&self, path: &Path) -> io::Result<Self::File> {
        let name = path.file_name().and_then(|name| name.to_str()).unwrap_or_default();
        if name.starts_with("prepare-") {
            self.gate.wait();
        }
        StdFileSystem.open_write(path)
    }

    fn truncate(&self, path: &Path, length: u64) -> io::Result<()> {
        StdFileSystem.truncate(path, length)
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        StdFileSystem.remove(path)
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        StdFileSystem.rename(from, to)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        StdFileSystem.sync_dir(dir)
    }

    fn lock_dir(&self, dir: &Path) -> io::Result<DirLock> {
        StdFileSystem.lock_dir(dir)
    }
}

fn entry(index: u64) -> Entry {
    Entry {
        term: Term(1),
        index: LogIndex(index),
        payload: EntryPayload::Command(Bytes::from(vec![7u8; 1024])),
    }
}

fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut names: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|extension| extension == "log"))
        .collect();
    names.sort();
    names
}

/// Entries written, one sync each, past the point where the first segment's successor is
/// being prepared (64 KiB) while that preparation is held back: every write returns, the
/// segment grows on; once the preparation may finish, the segment is closed at a later write.
#[test]
fn writes_go_on_while_the_next_segment_is_being_prepared() {
    let dir = tempfile::tempdir().unwrap();
    let disk = GatedDisk::default();
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
            storage.append(&[entry(index)]).unwrap();
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
        storage.append(&[entry(index)]).unwrap();
        storage.sync().unwrap();
        index += 1;
    }
    let first = std::fs::metadata(&segments(dir.path())[0]).unwrap().len();
    assert!(first < 1024 * 1024 / 2, "segment 1 closed at {first} bytes");
    drop(storage);
    let identity = WalIdentity { node_id: NodeId(1), cluster_id: 7 };
    let options = WalOptions { segment_max_bytes: 1024 * 1024, ..WalOptions::default() };
    let state = WalStorage::open(dir.path(), identity, options).unwrap().load().unwrap();
    assert_eq!(state.entries, (1..index).map(entry).collect::<Vec<_>>());
}
