//! [`WalStorage`]: the durable [`Storage`]: a write-ahead log of checksummed records in
//! segment files under one data directory.
//!
//! Entries and hard-state changes are appended as records to the current segment; `flush`
//! writes everything buffered since the last flush with one positioned write (`pwrite`) at
//! the end of the log and hands back its sync, an `fdatasync` that a node runs on its sync
//! thread while it writes the next batch (`sync.rs`); `sync` does both at once. Every
//! proposal batched into one `Ready` shares one write, and a sync often covers several
//! (group commit). A segment that grows past `segment_max_bytes` is closed and the next
//! one started, beginning with the current hard state; starting it syncs the directory. Old
//! segments are kept until log compaction allows removing them. The byte format is specified
//! in `docs/wal-format.md`.
//!
//! Segments after the first one a log opens with are preallocated: `prepare.rs` writes the
//! next segment full of zeros (and syncs it) under a temporary name ahead of time, on a
//! background thread, and the roll-over renames it into place and writes its header. Writes
//! then overwrite zeros already on disk, and `fdatasync` has no file size or allocation to
//! record. A segment's length therefore no longer says where its records end: zeros do. A
//! segment that grows as it is written (the first one, or one started without room to
//! prepare) has its successor prepared once it holds 64 KiB, and is closed as soon as that
//! is ready (for segments over 256 KiB): a fresh node's syncs cost what a seasoned one's do.
//!
//! Preallocation is an optimisation the log gives up rather than fail for: a preparation that
//! finds the disk full removes its partial file, and the roll-over then creates the next
//! segment empty, growing as it is written (as the first segment always does). A write of the
//! log's own records that finds the disk full while a prepared segment holds space drops that
//! segment and is retried once. Preparing stays off until compaction removes a segment file
//! (space came back). So the log needs free space only for the records it writes (see
//! [`WalOptions`]), never a whole segment's worth.
//!
//! Snapshots are files beside the segments (`snapshot_file.rs`). Once one is stored,
//! [`Storage::compact`] removes the oldest segments whose entries it covers (whole segments,
//! oldest first, never the current one). It keeps up to two of their files as spares, which
//! later roll-overs reuse instead of zero-filled files: the new header (flagged recycled)
//! goes over the old one, and the old records, checksummed under the old sequence, never
//! read as the new segment's. A log written behind regular snapshots then writes each byte
//! once, with no zero-filling competing with its syncs. A follower that installs a snapshot its log does not
//! match writes a log-reset record: the entries before it are gone.
//!
//! Opening recovers the log (see `recovery.rs`): a torn tail is cut off, and corruption before
//! it, a foreign node or cluster, or an unknown format version is refused with an error that
//! names the file, with nothing changed (but the lock file). Before it reads anything, opening takes the
//! directory's lock ([`FileSystem::lock_dir`]: an `flock` on its `LOCK` file) and holds it
//! while the storage lives, so a second log on the same directory, in this process or
//! another, is refused with [`StorageError::DirectoryLocked`].

mod format;
mod prepare;
mod recovery;
mod snapshot_file;
mod sync;

pub use snapshot_file::WalSnapshotStore;

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::core::InitialState;
use crate::error::{StorageError, StorageErrorKind};
use crate::hard_state::HardState;
use crate::message::{Entry, EntryPayload};
use crate::metrics::Histogram;
use crate::types::{LogId, LogIndex, NodeId};

use super::fs::{AppendFile, DirLock, FileSystem, ReadAtFile, StdFileSystem};
use super::{AlreadyDurable, PendingSync, Storage};
use format::{ENTRY_BODY_OVERHEAD, FORMAT_VERSION, Placement, SegmentHeader};
use prepare::Preparer;
use std::sync::Mutex;
use sync::{SyncMark, WalSync, lock};

/// Whose log this is. Stored in every segment header and checked when the log is opened, so a
/// node never starts from another node's or another cluster's data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WalIdentity {
    /// The node that owns the log.
    pub node_id: NodeId,
    /// The cluster the node belongs to.
    pub cluster_id: u64,
}

/// Limits of a [`WalStorage`] (each field's doc gives its default).
///
/// # Free space
///
/// A log opens (and a node starts) with as little free space as its first write needs:
/// nothing at all when its last segment has room, else one new segment's header and leading
/// records (under 1 KiB of data: one file-system block, typically 4 KiB). Running, it needs
/// space for the records it writes and for each snapshot (the new snapshot file is written
/// in full before the previous one is removed). It does **not** need `segment_max_bytes`
/// free: the next segment is preallocated (zero-filled to `segment_max_bytes`) only while
/// there is room for it; a preparation that runs out of space removes its partial file, the
/// next segment then grows as it is written, and a prepared segment is dropped to make room
/// for the log's own records. With `segment_max_bytes` or more free, writes go to
/// preallocated space (faster syncs). When the disk is truly full, the write that fails
/// stops the node with a "disk full" [`StorageError`](crate::StorageError).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WalOptions {
    /// A segment that reaches this size, in bytes, is closed and a new one started. Segments
    /// after the first one a log opens with are preallocated (zero-filled) to this size when
    /// the disk has room for it (see "Free space" above); one that grows as it is written is
    /// closed early, once a preallocated one is ready to follow it. Default 64 MiB.
    pub segment_max_bytes: u64,
    /// The largest entry payload accepted, in bytes; larger ones are refused before anything
    /// is written. Default 16 MiB: above [`Config::max_entry_bytes`](crate::Config::max_entry_bytes)
    /// (8 MiB), which a node refuses to start above (see `Config`'s "Size limits").
    pub max_entry_bytes: usize,
}

impl Default for WalOptions {
    fn default() -> Self {
        WalOptions { segment_max_bytes: 64 * 1024 * 1024, max_entry_bytes: 16 * 1024 * 1024 }
    }
}

/// A write-ahead log in a data directory.
///
/// ```
/// use raft_consensus::storage::{Storage, WalIdentity, WalOptions, WalStorage};
/// use raft_consensus::{HardState, NodeId, Term};
///
/// let dir = tempfile::tempdir()?;
/// let identity = WalIdentity { node_id: NodeId(1), cluster_id: 7 };
/// let mut storage = WalStorage::open(dir.path(), identity, WalOptions::default())?;
/// storage.save_hard_state(&HardState { term: Term(2), ..HardState::default() })?;
/// storage.sync()?;
/// drop(storage);
///
/// let mut reopened = WalStorage::open(dir.path(), identity, WalOptions::default())?;
/// assert_eq!(reopened.load()?.hard_state.term, Term(2));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct WalStorage<F: FileSystem = StdFileSystem> {
    fs: F,
    dir: PathBuf,
    identity: WalIdentity,
    options: WalOptions,
    /// What recovery found, handed out once by `load`.
    recovered: Option<InitialState>,
    file: F::File,
    sequence: u64,
    /// Bytes in the current segment, including what `buffer` will add.
    segment_len: u64,
    /// Whether the current segment grows as it is written (it was not preallocated): its
    /// syncs then record the file's new size too. It is closed early, as soon as a
    /// preallocated or spare file is ready to follow it.
    segment_grows: bool,
    /// Records written since the last sync.
    buffer: Vec<u8>,
    /// The latest hard state and the members, written at the start of each new segment.
    leading: LeadingRecords,
    /// Set after a failed write: the file may end in a partial record, so nothing more is
    /// written (the node stops; recovery cuts the partial record off).
    failed: bool,
    /// A second handle to the current segment, for its syncs (see `sync.rs`).
    sync_file: Arc<Mutex<F::File>>,
    /// How far the current segment is written and durable, shared with syncs in flight.
    mark: Arc<Mutex<SyncMark>>,
    /// How long each `fdatasync` took.
    sync_latency: Arc<Histogram>,
    /// Prepares the next segment.
    preparer: Preparer<F>,
    /// For each segment, the highest index of a live entry in it (see `recovery.rs`).
    segment_last_index: BTreeMap<u64, LogIndex>,
    /// Files of compacted segments kept for reuse (`spare-<sequence>.tmp`): a roll-over
    /// takes one instead of a freshly zero-filled file.
    spares: Vec<PathBuf>,
    /// Whether to prepare (zero-fill) segments ahead: turned off when the disk had no room
    /// for one, on again when compaction removes a segment file.
    preallocate: bool,
    /// The data directory's lock ([`FileSystem::lock_dir`]), held while the log is open:
    /// released when the storage is dropped (a node's storage, when the node shuts down).
    _dir_lock: DirLock,
}

/// At most this many compacted segments are kept as spares; compaction removes the rest.
const MAX_SPARE_SEGMENTS: usize = 2;

/// A segment that grows as it is written has its successor prepared once it holds this many
/// bytes, and is closed as soon as that is ready: a log that has written this much is in use,
/// and its syncs are cheaper in preallocated space. Below it, a short-lived log (a test, a
/// node started and stopped) costs no zero-filling. Segments of at most four times this size
/// (tests' small ones) are closed when full, as before: they fill soon enough.
const GROWING_SEGMENT_PREPARE_BYTES: u64 = 64 * 1024;

impl<F: FileSystem> std::fmt::Debug for WalStorage<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WalStorage")
            .field("dir", &self.dir)
            .field("identity", &self.identity)
            .field("segment", &self.sequence)
            .finish_non_exhaustive()
    }
}

impl WalStorage<StdFileSystem> {
    /// Opens (creating if needed) the log in `dir` for `identity`, recovering what it holds.
    ///
    /// The directory stays locked while the storage lives (a `LOCK` file in it, holding this
    /// process's pid): opening it again, from this process or another, fails with
    /// [`StorageError::DirectoryLocked`] until this storage is dropped (a node drops its
    /// storage when it shuts down) or the process ends, however it ends.
    pub fn open(
        dir: impl AsRef<Path>,
        identity: WalIdentity,
        options: WalOptions,
    ) -> Result<Self, StorageError> {
        WalStorage::open_on(StdFileSystem, dir, identity, options)
    }
}

impl<F: FileSystem> WalStorage<F> {
    /// Like [`WalStorage::open`], on the file system `fs`.
    pub fn open_on(
        fs: F,
        dir: impl AsRef<Path>,
        identity: WalIdentity,
        options: WalOptions,
    ) -> Result<Self, StorageError> {
        let dir = dir.as_ref().to_path_buf();
        let max_body_len = options
            .max_entry_bytes
            .checked_add(ENTRY_BODY_OVERHEAD)
            .filter(|length| u32::try_from(*length).is_ok())
            .ok_or_else(|| StorageError::EntryTooLarge {
                size: options.max_entry_bytes,
                max: u32::MAX as usize - ENTRY_BODY_OVERHEAD,
            })?;
        let existed = fs.list(&dir).is_ok();
        fs.create_dir_all(&dir)
            .map_err(|error| StorageError::io(format!("creating {}", dir.display()), error))?;
        if !existed {
            // Make the new directory's own entry durable, or a power loss could take it away.
            let parent = dir.parent().filter(|parent| !parent.as_os_str().is_empty());
            let parent = parent.unwrap_or(Path::new("."));
            fs.sync_dir(parent).map_err(|error| {
                StorageError::io(format!("syncing {}", parent.display()), error)
            })?;
        }
        // Before anything is read: a directory another log writes is not to be recovered.
        let dir_lock = fs.lock_dir(&dir).map_err(|error| lock_error(&dir, error))?;
        let recovered = recovery::recover(&fs, &dir, identity, max_body_len)?;
        let leading = LeadingRecords {
            hard_state: recovered.state.hard_state,
            members: recovered.state.members.clone(),
        };
        let (file, sequence, segment_len, segment_grows) = match recovered.tail {
            Some(tail) if tail.valid_len > 0 => {
                debug_assert!(tail.valid_len > format::HEADER_LEN as u64);
                if let Some(torn) = &tail.torn {
                    cut_torn_write(&fs, &tail.path, tail.valid_len, torn)?;
                }
                let mut file = fs.open_write(&tail.path).map_err(|error| {
                    StorageError::io(format!("opening {}", tail.path.display()), error)
                })?;
                // What recovery read may have been only in the page cache (a process killed
                // before its sync): make it durable before the node acts on it, since it will
                // not be written again.
                file.sync_data().map_err(|error| {
                    StorageError::io(format!("syncing {}", tail.path.display()), error)
                })?;
                fs.sync_dir(&dir).map_err(|error| {
                    StorageError::io(format!("syncing {}", dir.display()), error)
                })?;
                if tail.format_version < FORMAT_VERSION {
                    // Written by an earlier build: read, never appended to. The log goes on in
                    // a new segment of the current format.
                    grows(create_segment(&fs, &dir, identity, tail.sequence + 1, &leading)?)
                } else {
                    // A preallocated segment is never shorter than full; one that grows
                    // is, or it would have been closed. (The length is the file's before a
                    // torn write was cut off. A `segment_max_bytes` raised since the segment
                    // was started makes a preallocated one count as growing: it is then
                    // closed early, which costs one roll-over.)
                    let grows = tail.file_len < options.segment_max_bytes;
                    (file, tail.sequence, tail.valid_len, grows)
                }
            }
            Some(tail) => {
                // A crash cut the segment's creation (or its leading hard state) short: write
                // it again.
                fs.remove(&tail.path).map_err(|error| {
                    StorageError::io(format!("removing {}", tail.path.display()), error)
                })?;
                grows(create_segment(&fs, &dir, identity, tail.sequence, &leading)?)
            }
            None => grows(create_segment(&fs, &dir, identity, 1, &leading)?),
        };
        remove_leftovers(&fs, &dir)?;
        let sync_file = Arc::new(Mutex::new(file.try_clone().map_err(|error| {
            StorageError::io(
                format!("opening {}", dir.join(segment_name(sequence)).display()),
                error,
            )
        })?));
        let mut spares = Vec::new();
        let names = fs
            .list(&dir)
            .map_err(|error| StorageError::io(format!("listing {}", dir.display()), error))?;
        for name in names.into_iter().filter(|name| is_spare_name(name)) {
            let spare = dir.join(name);
            if is_full_length(&fs, &spare, options.segment_max_bytes) {
                spares.push(spare);
            } else {
                // Shorter than a segment now is (kept under a smaller `segment_max_bytes`):
                // reused, it would grow as it is written.
                fs.remove(&spare).map_err(|error| {
                    StorageError::io(format!("removing {}", spare.display()), error)
                })?;
            }
        }
        spares.sort();
        let preparer = Preparer::new(fs.clone(), dir.clone(), options.segment_max_bytes);
        let mut storage = WalStorage {
            fs,
            dir,
            identity,
            options,
            recovered: Some(recovered.state),
            file,
            sequence,
            segment_len,
            segment_grows,
            buffer: Vec::new(),
            leading,
            failed: false,
            sync_file,
            mark: SyncMark::shared(sequence, segment_len),
            sync_latency: Arc::default(),
            preparer,
            segment_last_index: recovered.segment_last_index,
            spares,
            preallocate: true,
            _dir_lock: dir_lock,
        };
        storage.prepare_next_if_due();
        Ok(storage)
    }

    /// The data directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The latency of every `fdatasync` of the log's records, shared: keep the handle before
    /// moving the storage into a node.
    pub fn sync_latency(&self) -> Arc<Histogram> {
        Arc::clone(&self.sync_latency)
    }

    /// The sequence numbers of the segment files in the directory, oldest first.
    fn existing_segments(&self) -> Result<Vec<u64>, StorageError> {
        let names = self
            .fs
            .list(&self.dir)
            .map_err(|error| StorageError::io(format!("listing {}", self.dir.display()), error))?;
        let mut sequences: Vec<u64> =
            names.iter().filter_map(|name| segment_sequence(name)).collect();
        sequences.sort_unstable();
        Ok(sequences)
    }

    fn check_usable(&self) -> Result<(), StorageError> {
        if self.failed || lock(&self.mark).failed {
            return Err(StorageError::io(
                format!("writing to {}", self.dir.display()),
                std::io::Error::other("an earlier write failed; the log takes no more writes"),
            ));
        }
        Ok(())
    }

    /// Starts preparing the next segment once the current one is a quarter full, or holds
    /// [`GROWING_SEGMENT_PREPARE_BYTES`] if it is to be closed early (a segment started by a
    /// roll-over has its successor prepared at once).
    fn prepare_next_if_due(&mut self) {
        let due = if self.closes_early() {
            GROWING_SEGMENT_PREPARE_BYTES
        } else {
            self.options.segment_max_bytes / 4
        };
        if self.preallocate
            && self.spares.is_empty()
            && !self.preparer.is_started()
            && self.segment_len >= due
        {
            self.preparer.start(self.sequence + 1);
        }
    }

    /// Whether the current segment is to be closed before it is full: it grows as it is
    /// written, and is large enough for that to matter (a quarter of it is more than
    /// [`GROWING_SEGMENT_PREPARE_BYTES`]; smaller ones fill soon enough).
    fn closes_early(&self) -> bool {
        self.segment_grows && self.options.segment_max_bytes / 4 > GROWING_SEGMENT_PREPARE_BYTES
    }

    /// Whether the current segment is closed after this write: when it is full, or when it is
    /// to be closed early and a preallocated (or spare) file is ready to take over.
    fn closes_now(&mut self) -> bool {
        self.segment_len >= self.options.segment_max_bytes
            || (self.closes_early() && (!self.spares.is_empty() || self.preparer.is_ready()))
    }

    /// Whether the segment file at `path` is long enough to be kept as a spare
    /// ([`is_full_length`]).
    fn is_full_length(&self, path: &Path) -> bool {
        is_full_length(&self.fs, path, self.options.segment_max_bytes)
    }

    /// Where records encoded now go: the current segment, after the durable end as the log
    /// knows it (a sync in flight may move it on; an older value only claims less).
    fn placement(&self) -> Placement {
        let buffer_start = self.segment_len - self.buffer.len() as u64;
        let mark = lock(&self.mark);
        let durable = if mark.sequence == self.sequence { mark.durable } else { 0 };
        Placement { sequence: self.sequence, durable_gap: buffer_start.saturating_sub(durable) }
    }

    /// Records that the current segment holds entries up to `index`.
    fn note_last_index(&mut self, index: Option<LogIndex>) {
        if let Some(index) = index {
            let segment_last = self.segment_last_index.entry(self.sequence).or_default();
            *segment_last = (*segment_last).max(index);
        }
    }

    /// Starts the next segment (the current one is closed).
    fn roll_over(&mut self) -> Result<(), StorageError> {
        let sequence = self.sequence + 1;
        let started = if let Some(spare) = self.spares.pop() {
            install_recycled(&self.fs, &self.dir, &spare, self.identity, sequence, &self.leading)
                .map(preallocated)
        } else {
            match self.take_prepared(sequence) {
                Ok(Some(prepared)) => install_segment(
                    &self.fs,
                    &self.dir,
                    &prepared,
                    self.identity,
                    sequence,
                    &self.leading,
                )
                .map(preallocated),
                // No room for a preallocated segment: one that grows as it is written.
                Ok(None) => {
                    create_segment(&self.fs, &self.dir, self.identity, sequence, &self.leading)
                        .map(grows)
                }
                Err(error) => Err(error),
            }
        };
        // A segment half started would take a second header on retry: take no more writes.
        let (file, sequence, segment_len, segment_grows) =
            started.inspect_err(|_| self.failed = true)?;
        tracing::debug!("Started write-ahead log segment {}", segment_name(sequence));
        let sync_file = file.try_clone().map_err(|error| {
            self.failed = true;
            StorageError::io(format!("opening {}", segment_name(sequence)), error)
        })?;
        self.file = file;
        self.sync_file = Arc::new(Mutex::new(sync_file));
        self.sequence = sequence;
        self.segment_len = segment_len;
        self.segment_grows = segment_grows;
        let mut mark = lock(&self.mark);
        (mark.sequence, mark.written, mark.durable) = (sequence, segment_len, segment_len);
        drop(mark);
        // The log is being written: have the next one ready in time, unless a spare is.
        if self.preallocate && self.spares.is_empty() {
            self.preparer.start(sequence + 1);
        }
        Ok(())
    }

    /// The prepared file for segment `sequence`, or `None` when preallocation is off or the
    /// preparation ran out of space (which turns it off): the caller then creates the segment
    /// empty. Any other failure to prepare is an error.
    fn take_prepared(&mut self, sequence: u64) -> Result<Option<PathBuf>, StorageError> {
        if !self.preallocate && !self.preparer.is_started() {
            return Ok(None);
        }
        match self.preparer.take(sequence) {
            Ok(prepared) => Ok(Some(prepared)),
            Err(error) if StorageErrorKind::of_io(&error) == StorageErrorKind::DiskFull => {
                tracing::warn!(
                    "No room to preallocate write-ahead log segment {} ({} bytes): {error}; it grows as it is written instead, and segments are not preallocated until compaction frees space",
                    segment_name(sequence),
                    self.options.segment_max_bytes
                );
                self.preallocate = false;
                Ok(None)
            }
            Err(error) => Err(StorageError::io(
                format!("preparing segment {}", segment_name(sequence)),
                error,
            )),
        }
    }

    /// Writes `bytes` at `offset` of the current segment. If the disk is full while a
    /// prepared (or half-prepared) segment holds space, that segment is dropped, preparing is
    /// turned off, and the write is retried once: the log's records come before zeros for a
    /// later segment. (Writing the same bytes at the same offset again is harmless.)
    fn write_current(&mut self, bytes: &[u8], offset: u64) -> io::Result<()> {
        match self.file.write_at(bytes, offset) {
            Err(error)
                if StorageErrorKind::of_io(&error) == StorageErrorKind::DiskFull
                    && self.preparer.is_started() =>
            {
                tracing::warn!(
                    "Disk full writing write-ahead log segment {}: dropping the segment prepared ahead to make room, and preparing no more until compaction frees space",
                    segment_name(self.sequence)
                );
                self.preparer.cancel();
                self.preallocate = false;
                self.file.write_at(bytes, offset)
            }
            result => result,
        }
    }
}

impl<F: FileSystem> Storage for WalStorage<F> {
    type Snapshots = WalSnapshotStore<F>;

    fn load(&mut self) -> Result<InitialState, StorageError> {
        self.recovered.take().ok_or_else(|| StorageError::Corrupt {
            detail: String::from("WalStorage::load called twice; open the log again to reread it"),
        })
    }

    fn append(&mut self, entries: &[Entry]) -> Result<(), StorageError> {
        self.check_usable()?;
        for entry in entries {
            if let EntryPayload::Command(command) = &entry.payload
                && command.len() > self.options.max_entry_bytes
            {
                return Err(StorageError::EntryTooLarge {
                    size: command.len(),
                    max: self.options.max_entry_bytes,
                });
            }
        }
        let mut last_buffered = None;
        let mut place = self.placement();
        for entry in entries {
            if place.durable_gap + self.buffer.len() as u64 >= format::MAX_DURABLE_BACK as u64 {
                // Records carry their distance to the durable end as a u32: a batch this
                // large is synced in parts.
                self.note_last_index(last_buffered.take());
                self.sync()?;
                place = self.placement();
            }
            let before = self.buffer.len();
            format::encode_entry(entry, place, &mut self.buffer);
            self.segment_len += (self.buffer.len() - before) as u64;
            last_buffered = Some(entry.index);
        }
        self.note_last_index(last_buffered);
        Ok(())
    }

    fn reset_log(&mut self, base: LogId) -> Result<(), StorageError> {
        self.check_usable()?;
        let before = self.buffer.len();
        format::encode_log_reset(base, self.placement(), &mut self.buffer);
        self.segment_len += (self.buffer.len() - before) as u64;
        for last in self.segment_last_index.values_mut() {
            *last = LogIndex(0);
        }
        self.segment_last_index.insert(self.sequence, base.index);
        Ok(())
    }

    fn compact(&mut self, through: LogIndex) -> Result<(), StorageError> {
        let removable: Vec<u64> = self
            .existing_segments()?
            .into_iter()
            .take_while(|sequence| {
                *sequence < self.sequence
                    && self.segment_last_index.get(sequence).is_none_or(|last| *last <= through)
            })
            .collect();
        if removable.is_empty() {
            return Ok(());
        }
        // Oldest first: a crash part-way leaves the log a run of consecutive segments. A few
        // are kept as spares for later segments, which then need no zero-filling. A removed
        // one frees space: preparing segments ahead may go on.
        for sequence in &removable {
            let path = self.dir.join(segment_name(*sequence));
            if self.spares.len() < MAX_SPARE_SEGMENTS && self.is_full_length(&path) {
                let spare = self.dir.join(spare_name(*sequence));
                self.fs.rename(&path, &spare).map_err(|error| {
                    StorageError::io(format!("renaming {} to a spare", path.display()), error)
                })?;
                self.spares.push(spare);
            } else {
                self.fs.remove(&path).map_err(|error| {
                    StorageError::io(format!("removing {}", path.display()), error)
                })?;
                self.preallocate = true;
            }
            self.segment_last_index.remove(sequence);
        }
        self.fs
            .sync_dir(&self.dir)
            .map_err(|error| StorageError::io(format!("syncing {}", self.dir.display()), error))?;
        tracing::debug!(
            "Compacted the write-ahead log through index {through}: removed {} segment(s)",
            removable.len()
        );
        Ok(())
    }

    fn max_entry_bytes(&self) -> Option<usize> {
        Some(self.options.max_entry_bytes)
    }

    fn cluster_id(&self) -> Option<u64> {
        Some(self.identity.cluster_id)
    }

    fn snapshot_store(&self) -> WalSnapshotStore<F> {
        WalSnapshotStore::new(self.fs.clone(), self.dir.clone(), self.identity)
    }

    fn save_hard_state(&mut self, hard_state: &HardState) -> Result<(), StorageError> {
        self.check_usable()?;
        let before = self.buffer.len();
        format::encode_hard_state(hard_state, self.placement(), &mut self.buffer);
        self.segment_len += (self.buffer.len() - before) as u64;
        self.leading.hard_state = *hard_state;
        Ok(())
    }

    fn save_members(&mut self, members: &[NodeId]) -> Result<(), StorageError> {
        self.check_usable()?;
        let before = self.buffer.len();
        format::encode_members(members, self.placement(), &mut self.buffer);
        self.segment_len += (self.buffer.len() - before) as u64;
        self.leading.members = Some(members.to_vec());
        Ok(())
    }

    fn sync(&mut self) -> Result<(), StorageError> {
        self.flush()?.complete()
    }

    /// Writes the buffered records with one positioned write and returns their sync, which
    /// runs `fdatasync` on a second handle to the segment. When the segment is full, it is
    /// synced here and the next one started (only the last segment may end in an unsynced,
    /// possibly torn, write).
    fn flush(&mut self) -> Result<Box<dyn PendingSync>, StorageError> {
        self.check_usable()?;
        if self.buffer.is_empty() {
            return Ok(Box::new(AlreadyDurable));
        }
        let path = self.dir.join(segment_name(self.sequence));
        let offset = self.segment_len - self.buffer.len() as u64;
        let buffer = std::mem::take(&mut self.buffer);
        let written = self.write_current(&buffer, offset);
        // Kept: its allocation serves the next batch.
        self.buffer = buffer;
        if let Err(error) = written {
            self.failed = true;
            return Err(StorageError::io(format!("writing {}", path.display()), error));
        }
        self.buffer.clear();
        let closing = self.closes_now();
        let mut written_end = self.segment_len;
        if closing {
            // The segment is closed: a zero record prefix after its records marks where they
            // end (in a recycled file, stale bytes follow, so nothing else would tell a damaged
            // last record from the end). It is written before the mark below says how far the
            // segment is written: a sync still in flight that reads the new mark then covers
            // the marker too, and one that read the old mark leaves this flush's sync to run.
            let end_marker = [0u8; format::RECORD_PREFIX_LEN];
            if let Err(error) = self.write_current(&end_marker, self.segment_len) {
                self.failed = true;
                return Err(StorageError::io(format!("writing {}", path.display()), error));
            }
            written_end += end_marker.len() as u64;
        }
        lock(&self.mark).written = written_end;
        let sync = Box::new(WalSync::<F> {
            file: Arc::clone(&self.sync_file),
            path,
            sequence: self.sequence,
            end: written_end,
            mark: Arc::clone(&self.mark),
            latency: Arc::clone(&self.sync_latency),
        });
        if !closing {
            self.prepare_next_if_due();
            return Ok(sync);
        }
        // All of the segment, its end marker included, is durable before the next one begins.
        sync.complete().inspect_err(|_| self.failed = true)?;
        self.roll_over()?;
        self.prepare_next_if_due();
        Ok(Box::new(AlreadyDurable))
    }
}

/// Whether the file at `path` is at least `segment_max_bytes` long, so that reused as a spare
/// its records overwrite bytes already on disk. (A segment closed early, while it grew, is
/// shorter; one that cannot be measured is not reused.)
fn is_full_length<F: FileSystem>(fs: &F, path: &Path, segment_max_bytes: u64) -> bool {
    fs.open_read(path).and_then(|file| file.size()).is_ok_and(|len| len >= segment_max_bytes)
}

/// A segment just started that grows as it is written.
fn grows<File>((file, sequence, len): (File, u64, u64)) -> (File, u64, u64, bool) {
    (file, sequence, len, true)
}

/// A segment just started in a preallocated (or recycled) file.
fn preallocated<File>((file, sequence, len): (File, u64, u64)) -> (File, u64, u64, bool) {
    (file, sequence, len, false)
}

/// Creates segment `sequence` (not preallocated: it grows as it is written): header and hard
/// state, synced, and the directory synced.
fn create_segment<F: FileSystem>(
    fs: &F,
    dir: &Path,
    identity: WalIdentity,
    sequence: u64,
    leading: &LeadingRecords,
) -> Result<(F::File, u64, u64), StorageError> {
    let path = dir.join(segment_name(sequence));
    let file = fs
        .open_write(&path)
        .map_err(|error| StorageError::io(format!("creating {}", path.display()), error))?;
    write_segment_start(fs, dir, &path, file, identity, sequence, leading)
}

/// Starts segment `sequence` from the prepared (zero-filled, synced) file `prepared`: renames
/// it into place, writes the header and hard state over its first zeros, syncs it and the
/// directory.
fn install_segment<F: FileSystem>(
    fs: &F,
    dir: &Path,
    prepared: &Path,
    identity: WalIdentity,
    sequence: u64,
    leading: &LeadingRecords,
) -> Result<(F::File, u64, u64), StorageError> {
    let path = dir.join(segment_name(sequence));
    fs.rename(prepared, &path).map_err(|error| {
        StorageError::io(format!("renaming {} to {}", prepared.display(), path.display()), error)
    })?;
    let file = fs
        .open_write(&path)
        .map_err(|error| StorageError::io(format!("opening {}", path.display()), error))?;
    write_segment_start(fs, dir, &path, file, identity, sequence, leading)
}

/// Writes segment `sequence`'s header and leading hard state at the start of `file` (at
/// `path`) with one write, syncs it, and syncs the directory.
fn write_segment_start<F: FileSystem>(
    fs: &F,
    dir: &Path,
    path: &Path,
    mut file: F::File,
    identity: WalIdentity,
    sequence: u64,
    leading: &LeadingRecords,
) -> Result<(F::File, u64, u64), StorageError> {
    let bytes = segment_start(identity, sequence, false, leading);
    file.write_at(&bytes, 0)
        .and_then(|()| file.sync_data())
        .map_err(|error| StorageError::io(format!("writing {}", path.display()), error))?;
    fs.sync_dir(dir)
        .map_err(|error| StorageError::io(format!("syncing {}", dir.display()), error))?;
    Ok((file, sequence, bytes.len() as u64))
}

/// What every segment repeats after its header, so that compaction never removes the only
/// copy: the current hard state, and the members once they are recorded.
#[derive(Clone, Debug, Default)]
struct LeadingRecords {
    hard_state: HardState,
    members: Option<Vec<NodeId>>,
}

/// The bytes a segment starts with: its header and the leading records, one write.
fn segment_start(
    identity: WalIdentity,
    sequence: u64,
    recycled: bool,
    leading: &LeadingRecords,
) -> Vec<u8> {
    let header = SegmentHeader {
        format_version: FORMAT_VERSION,
        node_id: identity.node_id.0,
        cluster_id: identity.cluster_id,
        sequence,
        recycled,
    };
    let mut bytes = header.encode().to_vec();
    format::encode_hard_state(&leading.hard_state, Placement::at_durable_end(sequence), &mut bytes);
    if let Some(members) = &leading.members {
        format::encode_members(members, Placement::at_durable_end(sequence), &mut bytes);
    }
    bytes
}

/// Starts segment `sequence` in `spare`, a file that compaction handed back (it still holds
/// an older segment's bytes, which no longer read as records: their checksums are seeded with
/// the old sequence). The header, marked recycled, and the hard state are written over its
/// start and synced under the spare's name; then it is renamed into place and the directory
/// synced. A crash before the rename leaves a spare; after it, a segment whose header says
/// stale bytes follow its records.
fn install_recycled<F: FileSystem>(
    fs: &F,
    dir: &Path,
    spare: &Path,
    identity: WalIdentity,
    sequence: u64,
    leading: &LeadingRecords,
) -> Result<(F::File, u64, u64), StorageError> {
    let path = dir.join(segment_name(sequence));
    let bytes = segment_start(identity, sequence, true, leading);
    let io_error =
        |what: &str, error| StorageError::io(format!("{what} {}", spare.display()), error);
    let mut file = fs.open_write(spare).map_err(|error| io_error("opening", error))?;
    file.write_at(&bytes, 0)
        .and_then(|()| file.sync_data())
        .map_err(|error| io_error("writing", error))?;
    fs.rename(spare, &path).map_err(|error| {
        StorageError::io(format!("renaming {} to {}", spare.display(), path.display()), error)
    })?;
    fs.sync_dir(dir)
        .map_err(|error| StorageError::io(format!("syncing {}", dir.display()), error))?;
    let file = fs
        .open_write(&path)
        .map_err(|error| StorageError::io(format!("opening {}", path.display()), error))?;
    Ok((file, sequence, bytes.len() as u64))
}

/// Removes what a torn write left in `path` after the last whole record (`valid_len`), and
/// makes that durable. A record cut off by the end of the file (a write that grew the file) is
/// cut off by truncating the file back to `valid_len`; damage followed by zeros (preallocated
/// space) is overwritten with zeros, so that the file keeps its length and the zeros read as
/// the end of the log.
fn cut_torn_write<F: FileSystem>(
    fs: &F,
    path: &Path,
    valid_len: u64,
    torn: &recovery::TornWrite,
) -> Result<(), StorageError> {
    tracing::warn!(
        "Cutting a torn write off {}: {} bytes after offset {}",
        path.display(),
        torn.end - valid_len,
        valid_len
    );
    let io_error = |error| StorageError::io(format!("cutting {}", path.display()), error);
    if torn.at_end_of_file {
        return fs.truncate(path, valid_len).map_err(io_error);
    }
    let length = usize::try_from(torn.end - valid_len).map_err(io::Error::other);
    let zeros = vec![0u8; length.map_err(io_error)?];
    let mut file = fs.open_write(path).map_err(io_error)?;
    file.write_at(&zeros, valid_len).and_then(|()| file.sync_data()).map_err(io_error)
}

/// Removes the temporary files of segments a crash left half prepared (or prepared and
/// unused), which are made again when needed, and of snapshots a crash left half written.
/// The error for a data directory whose lock could not be taken: [`StorageError::DirectoryLocked`]
/// when another holder has it, an I/O error otherwise.
fn lock_error(dir: &Path, error: io::Error) -> StorageError {
    if error.kind() != io::ErrorKind::WouldBlock {
        return StorageError::io(format!("locking {}", dir.display()), error);
    }
    let holder_pid = error
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<super::fs::LockedBy>())
        .and_then(|locked| locked.holder);
    StorageError::DirectoryLocked { dir: dir.to_path_buf(), holder_pid }
}

fn remove_leftovers<F: FileSystem>(fs: &F, dir: &Path) -> Result<(), StorageError> {
    let names = fs
        .list(dir)
        .map_err(|error| StorageError::io(format!("listing {}", dir.display()), error))?;
    let leftover =
        |name: &&String| prepare::is_prepared_name(name) || snapshot_file::is_temporary_name(name);
    for name in names.iter().filter(leftover) {
        let path = dir.join(name);
        tracing::debug!("Removing the leftover prepared segment {}", path.display());
        fs.remove(&path)
            .map_err(|error| StorageError::io(format!("removing {}", path.display()), error))?;
    }
    Ok(())
}

/// The name a compacted segment's file waits under until a roll-over reuses it.
fn spare_name(sequence: u64) -> String {
    format!("spare-{sequence:020}.tmp")
}

/// Whether `name` is a spare segment file's name.
fn is_spare_name(name: &str) -> bool {
    name.starts_with("spare-") && name.ends_with(".tmp")
}

/// The file name of segment `sequence`.
pub(crate) fn segment_name(sequence: u64) -> String {
    format!("wal-{sequence:020}.log")
}

/// The sequence number in a segment's file name, if `name` is one.
pub(crate) fn segment_sequence(name: &str) -> Option<u64> {
    let digits = name.strip_prefix("wal-")?.strip_suffix(".log")?;
    if digits.len() != 20 || !digits.bytes().all(|byte| byte.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}
