//! Storage failures (#15): a full disk, a read-only one and corrupt data each stop a node
//! with a message that names the kind of failure, and a node whose disk has less free space
//! than a write-ahead log segment still starts and runs until the disk is truly full.
//!
//! The deterministic tests run the real `WalStorage` on [`LimitedDisk`], a `FileSystem` over
//! real files with a byte budget: a write past it lands as far as it fits and then fails with
//! `ENOSPC`, as a real file system's does. The last test repeats the main rules on a real
//! small tmpfs, when this process may mount one (root); otherwise it prints why it skipped.

#![cfg(unix)]

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use raft_consensus::storage::{
    AppendFile, FileSystem, StdFileSystem, Storage, WalIdentity, WalOptions, WalStorage,
};
use raft_consensus::transport::ChannelNetwork;
use raft_consensus::{
    Config, Entry, EntryPayload, FatalError, LogIndex, NodeId, ProposeError, RaftNode, StartError,
    StateMachine, StorageError, StorageErrorKind, Term,
};

const DEADLINE: Duration = Duration::from_secs(30);

/// Segments of the deterministic tests: small, so that a few hundred KiB cross roll-overs.
const SEGMENT_BYTES: u64 = 64 * 1024;

// ----- A disk with a byte budget. -----

#[derive(Debug, Default)]
struct DiskState {
    /// Bytes the files may hold in all.
    capacity: u64,
    /// The size of every file written through this disk.
    sizes: HashMap<PathBuf, u64>,
    /// Every write fails with `EROFS`.
    read_only: bool,
    /// Whether the log may prepare segments on a background thread.
    background: bool,
}

impl DiskState {
    fn used(&self) -> u64 {
        self.sizes.values().sum()
    }
}

/// Real files under a byte budget (see the module comment). Clones share the budget.
#[derive(Clone, Debug, Default)]
struct LimitedDisk {
    state: Arc<Mutex<DiskState>>,
}

impl LimitedDisk {
    /// A disk of `capacity` bytes, preparing segments inline (deterministic).
    fn new(capacity: u64) -> LimitedDisk {
        let state = DiskState { capacity, ..DiskState::default() };
        LimitedDisk { state: Arc::new(Mutex::new(state)) }
    }

    fn lock(&self) -> MutexGuard<'_, DiskState> {
        // A test that panicked while holding it fails anyway.
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn used(&self) -> u64 {
        self.lock().used()
    }

    fn set_read_only(&self) {
        self.lock().read_only = true;
    }

    /// Counts the files already in `dir` (written by an earlier run) against the budget.
    fn account_existing(&self, dir: &Path) {
        let mut state = self.lock();
        for entry in std::fs::read_dir(dir).unwrap() {
            let entry = entry.unwrap();
            state.sizes.insert(entry.path(), entry.metadata().unwrap().len());
        }
    }
}

fn read_only_error() -> io::Error {
    io::Error::from_raw_os_error(libc::EROFS)
}

impl FileSystem for LimitedDisk {
    type File = LimitedFile;
    type ReadFile = std::fs::File;

    fn open_read(&self, path: &Path) -> io::Result<std::fs::File> {
        StdFileSystem.open_read(path)
    }

    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        StdFileSystem.create_dir_all(dir)
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        StdFileSystem.list(dir)
    }

    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        StdFileSystem.read(path)
    }

    fn open_write(&self, path: &Path) -> io::Result<LimitedFile> {
        let mut state = self.lock();
        if state.read_only {
            return Err(read_only_error());
        }
        let file = StdFileSystem.open_write(path)?;
        state.sizes.insert(path.to_path_buf(), file.metadata()?.len());
        Ok(LimitedFile { disk: self.clone(), path: path.to_path_buf(), file })
    }

    fn truncate(&self, path: &Path, length: u64) -> io::Result<()> {
        let mut state = self.lock();
        if state.read_only {
            return Err(read_only_error());
        }
        StdFileSystem.truncate(path, length)?;
        state.sizes.insert(path.to_path_buf(), length);
        Ok(())
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        let mut state = self.lock();
        if state.read_only {
            return Err(read_only_error());
        }
        StdFileSystem.remove(path)?;
        state.sizes.remove(path);
        Ok(())
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut state = self.lock();
        if state.read_only {
            return Err(read_only_error());
        }
        StdFileSystem.rename(from, to)?;
        let size = state.sizes.remove(from).unwrap_or(0);
        state.sizes.insert(to.to_path_buf(), size);
        Ok(())
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        StdFileSystem.sync_dir(dir)
    }

    fn prepare_in_background(&self) -> bool {
        self.lock().background
    }
}

/// A file of a [`LimitedDisk`].
#[derive(Debug)]
struct LimitedFile {
    disk: LimitedDisk,
    path: PathBuf,
    file: File,
}

impl AppendFile for LimitedFile {
    fn write_at(&mut self, bytes: &[u8], offset: u64) -> io::Result<()> {
        let mut state = self.disk.lock();
        if state.read_only {
            return Err(read_only_error());
        }
        let size = state.sizes.get(&self.path).copied().unwrap_or(0);
        let end = offset + bytes.len() as u64;
        let growth = end.saturating_sub(size);
        let free = state.capacity.saturating_sub(state.used());
        if growth <= free {
            self.file.write_at(bytes, offset)?;
            state.sizes.insert(self.path.clone(), size.max(end));
            return Ok(());
        }
        // As much as fits lands, then the disk is full.
        let fits = (bytes.len() as u64 - (growth - free)) as usize;
        if fits > 0 {
            self.file.write_at(&bytes[..fits], offset)?;
            state.sizes.insert(self.path.clone(), size.max(offset + fits as u64));
        }
        Err(io::Error::from_raw_os_error(libc::ENOSPC))
    }

    fn sync_data(&mut self) -> io::Result<()> {
        self.file.sync_data()
    }

    fn try_clone(&self) -> io::Result<LimitedFile> {
        let file = self.file.try_clone()?;
        Ok(LimitedFile { disk: self.disk.clone(), path: self.path.clone(), file })
    }
}

// ----- Helpers. -----

fn identity() -> WalIdentity {
    WalIdentity { node_id: NodeId(1), cluster_id: 7 }
}

fn options() -> WalOptions {
    WalOptions { segment_max_bytes: SEGMENT_BYTES, ..WalOptions::default() }
}

fn entry(index: u64, command_len: usize) -> Entry {
    let command: Vec<u8> = (0..command_len).map(|i| (index as usize * 31 + i) as u8).collect();
    Entry {
        term: Term(1),
        index: LogIndex(index),
        payload: EntryPayload::Command(Bytes::from(command)),
    }
}

/// Appends and syncs 1000-byte entries from index `first` on until a write fails; returns
/// the last index synced and the error.
fn fill_until_full<S: Storage>(storage: &mut S, first: u64) -> (u64, StorageError) {
    let mut index = first;
    loop {
        let written = storage.append(&[entry(index, 1000)]).and_then(|()| storage.sync());
        if let Err(error) = written {
            return (index - 1, error);
        }
        index += 1;
        assert!(index < first + 100_000, "the disk never filled");
    }
}

fn segment_count(dir: &Path) -> usize {
    StdFileSystem.list(dir).unwrap().iter().filter(|name| name.starts_with("wal-")).count()
}

/// The entries a log in `dir` holds, read back on the real file system.
fn entries_in(dir: &Path) -> u64 {
    let mut storage = WalStorage::open(dir, identity(), options()).expect("the log reopens");
    storage.load().expect("the log loads").entries.len() as u64
}

fn assert_disk_full(error: &StorageError) {
    assert_eq!(error.kind(), StorageErrorKind::DiskFull, "{error:?}");
    let message = error.to_string();
    assert!(message.starts_with("disk full (No space left on device"), "{message}");
}

// ----- The write-ahead log on a nearly full disk. -----

/// With less free space than a segment, preparing the next segment fails; the log removes
/// the partial file and rolls over onto a segment that grows as it is written, and stops
/// only when its own records no longer fit, keeping every synced one.
#[test]
fn the_log_rolls_over_with_less_free_space_than_a_segment() {
    let dir = tempfile::tempdir().unwrap();
    // Room for segment 1 and a little more, never for segment 1 plus a preallocated one.
    let capacity = SEGMENT_BYTES + 12 * 1024;
    let disk = LimitedDisk::new(capacity);
    let mut storage = WalStorage::open_on(disk.clone(), dir.path(), identity(), options()).unwrap();
    storage.load().unwrap();
    let (last_synced, error) = fill_until_full(&mut storage, 1);
    assert_disk_full(&error);
    assert!(segment_count(dir.path()) >= 2, "the log never rolled over");
    assert!(
        last_synced * 1000 > SEGMENT_BYTES,
        "only {last_synced} entries of 1000 bytes fit on a disk of {capacity} bytes"
    );
    assert!(disk.used() > capacity - 2 * 1024, "space was left unused: {} bytes", disk.used());
    drop(storage);
    assert!(
        StdFileSystem.list(dir.path()).unwrap().iter().all(|name| !name.starts_with("prepare-")),
        "a failed preparation left its file"
    );
    assert_eq!(entries_in(dir.path()), last_synced, "every synced entry is kept");
}

/// A prepared segment that holds the space the current segment's records need is dropped
/// to make room: the record write is retried and succeeds.
#[test]
fn a_prepared_segment_makes_room_for_the_logs_records() {
    let dir = tempfile::tempdir().unwrap();
    // Segment 2 is prepared (64 KiB) while segment 1 holds 16 KiB, and then only 20 KiB are
    // left for segment 1, which needs 48 KiB more before it is full.
    let capacity = 100 * 1024;
    let disk = LimitedDisk::new(capacity);
    let mut storage = WalStorage::open_on(disk.clone(), dir.path(), identity(), options()).unwrap();
    storage.load().unwrap();
    let (last_synced, error) = fill_until_full(&mut storage, 1);
    assert_disk_full(&error);
    assert!(
        last_synced * 1000 > SEGMENT_BYTES,
        "only {last_synced} entries fit on a disk of {capacity} bytes"
    );
    drop(storage);
    assert_eq!(entries_in(dir.path()), last_synced);
}

/// A log whose current segment is due for a successor opens, and takes writes, on a disk
/// with 2 KiB free: the preparation that fails holds no space.
#[test]
fn a_log_opens_and_writes_with_two_kib_free() {
    let dir = tempfile::tempdir().unwrap();
    let mut storage = WalStorage::open(dir.path(), identity(), options()).unwrap();
    storage.load().unwrap();
    // Over a quarter of a segment: the next open starts preparing segment 2.
    for index in 1..=20 {
        storage.append(&[entry(index, 1000)]).unwrap();
    }
    storage.sync().unwrap();
    drop(storage);
    let disk = LimitedDisk::default();
    disk.account_existing(dir.path());
    disk.lock().capacity = disk.used() + 2 * 1024;

    let mut storage = WalStorage::open_on(disk.clone(), dir.path(), identity(), options())
        .expect("opens with 2 KiB free");
    assert_eq!(storage.load().unwrap().entries.len(), 20);
    storage.append(&[entry(21, 1000)]).and_then(|()| storage.sync()).expect("a 1 KiB record fits");
    let (last_synced, error) = fill_until_full(&mut storage, 22);
    assert_disk_full(&error);
    assert_eq!(last_synced, 21, "a second 1 KiB record does not fit in what is left");
}

/// Corrupt data is named as such.
#[test]
fn corrupt_data_is_named_in_the_message() {
    let dir = tempfile::tempdir().unwrap();
    let mut storage = WalStorage::open(dir.path(), identity(), options()).unwrap();
    storage.load().unwrap();
    for index in 1..=3 {
        storage.append(&[entry(index, 100)]).unwrap();
    }
    storage.sync().unwrap();
    drop(storage);
    // A byte inside the first entry's command (after the 44-byte header, the 42-byte hard
    // state record and the entry's 16-byte prefix and 18 bytes of its body).
    let segment = dir.path().join(format!("wal-{:020}.log", 1));
    let mut bytes = std::fs::read(&segment).unwrap();
    bytes[44 + 42 + 16 + 18 + 10] ^= 0xff;
    std::fs::write(&segment, bytes).unwrap();
    let error = WalStorage::open(dir.path(), identity(), options()).unwrap_err();
    assert_eq!(error.kind(), StorageErrorKind::Corrupt, "{error:?}");
    assert!(error.to_string().starts_with("corrupt data: "), "{error}");
}

// ----- A node stops with the reason. -----

/// Counts the commands it applies.
#[derive(Default)]
struct Count(u64);

impl StateMachine for Count {
    fn apply(
        &mut self,
        _command: &[u8],
    ) -> Result<Vec<u8>, Box<dyn std::error::Error + Send + Sync>> {
        self.0 += 1;
        Ok(self.0.to_le_bytes().to_vec())
    }
}

fn start_node<F: FileSystem>(disk: F, dir: &Path, options: WalOptions) -> RaftNode {
    let storage = WalStorage::open_on(disk, dir, identity(), options).expect("the log opens");
    let network = ChannelNetwork::new();
    RaftNode::start(
        NodeId(1),
        [NodeId(1)],
        Config::default(),
        storage,
        network.join(NodeId(1)),
        Count(0),
    )
    .expect("the node starts")
}

/// Proposes 1000-byte commands until one fails; returns how many succeeded and the error.
async fn propose_until_failure(node: &RaftNode) -> (u64, ProposeError) {
    node.wait_for(DEADLINE, |status| status.is_leader()).await.expect("a leader");
    let mut acknowledged = 0;
    loop {
        match node.propose(vec![7u8; 1000]).await {
            Ok(_) => acknowledged += 1,
            Err(error) => return (acknowledged, error),
        }
        assert!(acknowledged < 100_000, "storage never failed");
    }
}

/// The node has stopped, at the latest when the failed proposal was answered, with `kind`;
/// its message starts with `message_start`.
async fn assert_stopped_with(node: &RaftNode, kind: StorageErrorKind, message_start: &str) {
    assert!(!node.is_running(), "a node whose storage failed still reports itself running");
    let fatal = node.fatal_error().expect("the node names why it stopped");
    let FatalError::Storage(storage_error) = &fatal else {
        panic!("not a storage error: {fatal:?}")
    };
    assert_eq!(storage_error.kind(), kind, "{fatal}");
    assert!(fatal.to_string().starts_with(message_start), "{fatal}");
    let returned = node.shutdown().await.expect_err("shutdown returns the fatal error");
    assert_eq!(returned.to_string(), fatal.to_string());
}

/// A node whose disk fills stops with "storage failed: disk full (...)".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_whose_disk_fills_stops_with_disk_full() {
    let dir = tempfile::tempdir().unwrap();
    let disk = LimitedDisk::new(SEGMENT_BYTES / 2);
    let node = start_node(disk, dir.path(), options());
    let (acknowledged, error) = propose_until_failure(&node).await;
    assert!(acknowledged > 0, "nothing was written before the disk filled");
    assert!(
        matches!(error, ProposeError::OutcomeUnknown { .. } | ProposeError::Storage(_)),
        "{error:?}"
    );
    assert_stopped_with(
        &node,
        StorageErrorKind::DiskFull,
        "storage failed: disk full (No space left on device",
    )
    .await;
}

/// A node whose disk turns read-only stops with "storage failed: read-only (...)".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_whose_disk_turns_read_only_stops_with_read_only() {
    let dir = tempfile::tempdir().unwrap();
    let disk = LimitedDisk::new(u64::MAX);
    let node = start_node(disk.clone(), dir.path(), options());
    node.wait_for(DEADLINE, |status| status.is_leader()).await.expect("a leader");
    node.propose(vec![1u8; 10]).await.expect("a write before the failure");
    disk.set_read_only();
    let (_, error) = propose_until_failure(&node).await;
    assert!(
        matches!(error, ProposeError::OutcomeUnknown { .. } | ProposeError::Storage(_)),
        "{error:?}"
    );
    assert_stopped_with(
        &node,
        StorageErrorKind::ReadOnly,
        "storage failed: read-only (Read-only file system",
    )
    .await;
}

/// A node on a read-only disk does not start, and says why.
#[test]
fn a_read_only_disk_is_named_when_the_log_cannot_open() {
    let dir = tempfile::tempdir().unwrap();
    let disk = LimitedDisk::new(u64::MAX);
    disk.set_read_only();
    let error = WalStorage::open_on(disk, dir.path(), identity(), options()).unwrap_err();
    assert_eq!(error.kind(), StorageErrorKind::ReadOnly, "{error:?}");
    let start_error = StartError::from(error);
    assert!(
        start_error
            .to_string()
            .starts_with("could not load stored state: read-only (Read-only file system"),
        "{start_error}"
    );
}

// ----- The same on a real small file system. -----

/// A tmpfs of `bytes` mounted on a new temporary directory, unmounted when dropped; `None`
/// (with the reason printed) when this process may not mount one.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(bytes: u64) -> Option<Tmpfs> {
        let dir = tempfile::tempdir().ok()?;
        let mounted = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={bytes}"), "tmpfs"])
            .arg(dir.path())
            .output();
        match mounted {
            Ok(output) if output.status.success() => Some(Tmpfs { dir }),
            Ok(output) => {
                let reason = String::from_utf8_lossy(&output.stderr);
                println!("skipped: cannot mount a tmpfs (needs root): {}", reason.trim());
                None
            }
            Err(error) => {
                println!("skipped: cannot run mount: {error}");
                None
            }
        }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(self.dir.path()).status();
    }
}

/// On a real 1 MiB tmpfs: a node restarts with 24 KiB free and a log due to prepare a
/// 256 KiB segment, takes writes, and stops with "disk full" from the kernel's `ENOSPC` once
/// its records no longer fit. Skipped, saying so, where mounting is not allowed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_small_tmpfs_a_node_starts_nearly_full_and_stops_when_full() {
    let Some(tmpfs) = Tmpfs::mount(1024 * 1024) else { return };
    let data = tmpfs.path().join("data");
    let options = WalOptions { segment_max_bytes: 256 * 1024, ..WalOptions::default() };
    // A first run leaves 100 KiB in segment 1: over a quarter, so the next start prepares
    // segment 2 at once.
    let node = start_node(StdFileSystem, &data, options.clone());
    node.wait_for(DEADLINE, |status| status.is_leader()).await.expect("a leader");
    for _ in 0..100 {
        node.propose(vec![3u8; 1000]).await.expect("room for 100 KiB");
    }
    node.shutdown().await.expect("a clean shutdown");
    // Fill the disk but for 24 KiB.
    let filler = tmpfs.path().join("filler");
    let mut size = 0u64;
    {
        use std::io::Write;
        let mut file = File::create(&filler).unwrap();
        let block = vec![0u8; 4096];
        while file.write_all(&block).is_ok() {
            size += block.len() as u64;
        }
    }
    File::options().write(true).open(&filler).unwrap().set_len(size - 24 * 1024).unwrap();

    let node = start_node(StdFileSystem, &data, options);
    node.wait_for(DEADLINE, |status| status.is_leader()).await.expect("a leader");
    for _ in 0..10 {
        node.propose(vec![4u8; 1000]).await.expect("10 KiB fit in the 24 KiB left");
    }
    let (_, error) = propose_until_failure(&node).await;
    assert!(
        matches!(error, ProposeError::OutcomeUnknown { .. } | ProposeError::Storage(_)),
        "{error:?}"
    );
    assert_stopped_with(
        &node,
        StorageErrorKind::DiskFull,
        "storage failed: disk full (No space left on device",
    )
    .await;
}
