//! Snapshot files beside the write-ahead log: `snapshot-<last included index>.snap`.
//!
//! A snapshot is streamed under a temporary name (its header, which holds the data's length
//! and checksum, is written last, at the front of the file), synced, renamed into place and
//! the directory synced, so a crash leaves either the previous snapshot or the new one, never
//! a part. Older snapshot files are removed after that. At start only the newest one's
//! header is read and checked (a node that cannot read it refuses to start: it may already
//! have dropped the log segments the snapshot covers); its data's checksum is checked as the
//! node restores its state machine from it, which it does at once. Layout (little-endian;
//! see `docs/wal-format.md`):
//!
//! ```text
//! magic "RAFTSNP\0" (8) | format version u32 (3) | reserved u32 (0) | node id u64
//! | cluster id u64 | last included term u64 | last included index u64
//! | configuration length u32 | configuration (`core/configuration_encoding.rs`)
//! | data length u64 | crc32c of data u32 | crc32c of everything before u32 | data
//! ```
//!
//! Version 2 had the data's checksum after the data (`... | data length u64 | header crc32c
//! u32 | data | crc32c of data u32`), and version 1 also had `member count u32 | member ids
//! u64...` in place of the configuration; this build reads both and writes version 3.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use bytes::Bytes;

use super::WalIdentity;
use crate::core::Configuration;
use crate::error::StorageError;
use crate::snapshot::{Snapshot, SnapshotMeta};
use crate::storage::fs::{AppendFile, FileSystem, ReadAtFile};
use crate::storage::{SnapshotSink, SnapshotSource, SnapshotStore};
use crate::types::{LogId, LogIndex, NodeId, Term};

/// The first eight bytes of every snapshot file.
const MAGIC: [u8; 8] = *b"RAFTSNP\0";
/// The snapshot file format version this build writes.
const FORMAT_VERSION: u32 = 3;
/// The version with the data's checksum after the data.
const TRAILING_CHECKSUM_VERSION: u32 = 2;
/// The version before configurations: a plain list of voters.
const MEMBER_LIST_VERSION: u32 = 1;
/// Suffix of a snapshot being written.
const TEMPORARY_SUFFIX: &str = ".tmp";
/// The header's fixed part: magic, version, reserved, node, cluster, term, index, and the
/// configuration's length (or member count).
const FIXED_HEADER_BYTES: usize = 8 + 4 + 4 + 8 + 8 + 8 + 8 + 4;
/// The largest configuration (or member list) a header may declare: far above any real one
/// (a configuration holds at most `MAX_MEMBERS` members with short addresses), so a damaged
/// length is refused before anything that size is read.
const MAX_CONFIGURATION_BYTES: usize = 1 << 20;
/// How much a sink buffers before writing to the file (a write at least this long, with
/// nothing buffered, goes to the file as it is).
const SINK_BUFFER_BYTES: usize = 1 << 20;
/// Every this many bytes written, a sink starts syncing what it wrote on a background thread
/// (when its file system allows background work): the disk writes the snapshot out while the
/// rest arrives, rather than all of it in the final sync. The kernel would otherwise keep a
/// gigabyte dirty in memory (its background writeback starts at 10 % of memory), and the
/// final sync took 0.4 s of a 1 GB snapshot's 2 s catch-up.
const WRITEBACK_BYTES: u64 = 32 << 20;

/// The file name of the snapshot through `index`.
fn snapshot_name(index: LogIndex) -> String {
    format!("snapshot-{:020}.snap", index.0)
}

/// The index in a snapshot file's name, if `name` is one.
fn snapshot_index(name: &str) -> Option<LogIndex> {
    let digits = name.strip_prefix("snapshot-")?.strip_suffix(".snap")?;
    if digits.len() != 20 || !digits.bytes().all(|byte| byte.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok().map(LogIndex)
}

/// Whether `name` is a snapshot a crash left half written.
pub(super) fn is_temporary_name(name: &str) -> bool {
    name.strip_suffix(TEMPORARY_SUFFIX).and_then(snapshot_index).is_some()
}

/// Encodes the header of a snapshot of `identity`'s log covering `meta` whose data is
/// `data_len` bytes with crc32c `data_checksum`.
fn encode_header(
    meta: &SnapshotMeta,
    identity: WalIdentity,
    data_len: u64,
    data_checksum: u32,
) -> Vec<u8> {
    let configuration_len = meta.configuration.encoded_len();
    let mut bytes = Vec::with_capacity(FIXED_HEADER_BYTES + configuration_len + 16);
    bytes.extend_from_slice(&MAGIC);
    bytes.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    bytes.extend_from_slice(&0u32.to_le_bytes());
    bytes.extend_from_slice(&identity.node_id.0.to_le_bytes());
    bytes.extend_from_slice(&identity.cluster_id.to_le_bytes());
    bytes.extend_from_slice(&meta.last_included.term.0.to_le_bytes());
    bytes.extend_from_slice(&meta.last_included.index.0.to_le_bytes());
    // A configuration holds at most MAX_MEMBERS members of short addresses.
    bytes.extend_from_slice(&u32::try_from(configuration_len).unwrap_or(u32::MAX).to_le_bytes());
    meta.configuration.encode_into(&mut bytes);
    bytes.extend_from_slice(&data_len.to_le_bytes());
    bytes.extend_from_slice(&data_checksum.to_le_bytes());
    let header_checksum = crc32c::crc32c(&bytes);
    bytes.extend_from_slice(&header_checksum.to_le_bytes());
    bytes
}

/// A snapshot file's header, checked: the snapshot it describes and where its data starts.
#[derive(Debug, PartialEq, Eq)]
struct Header {
    snapshot: Snapshot,
    data_offset: u64,
}

/// Reads `len` bytes at `offset` of `file`, or fails with `short`.
fn read_exact_at(
    file: &impl ReadAtFile,
    offset: u64,
    len: usize,
    path: &Path,
) -> Result<Vec<u8>, StorageError> {
    let mut buf = vec![0; len];
    let read = file
        .read_at(&mut buf, offset)
        .map_err(|error| StorageError::io(format!("reading {}", path.display()), error))?;
    if read < len {
        return Err(StorageError::CorruptRecord {
            file: path.to_path_buf(),
            offset: offset + read as u64,
            reason: "the snapshot file is too short".to_owned(),
        });
    }
    Ok(buf)
}

/// Reads and checks the header of the snapshot file `file` (at `path`) of `identity`'s log,
/// and checks that the file's length is what the header says. Reads nothing of the data
/// (except a version 2 file's trailing checksum).
fn read_header(
    file: &impl ReadAtFile,
    identity: WalIdentity,
    path: &Path,
) -> Result<Header, StorageError> {
    let corrupt = |offset: usize, reason: &str| StorageError::CorruptRecord {
        file: path.to_path_buf(),
        offset: offset as u64,
        reason: reason.to_owned(),
    };
    let file_len = file
        .size()
        .map_err(|error| StorageError::io(format!("reading {}", path.display()), error))?;
    let fixed = read_exact_at(file, 0, FIXED_HEADER_BYTES.min(file_len as usize), path)?;
    let mut reader = Cursor { bytes: &fixed, offset: 0 };
    let magic = reader.take(8).ok_or_else(|| corrupt(0, "the snapshot file is too short"))?;
    if magic != MAGIC {
        return Err(corrupt(0, "not a snapshot file (bad magic number)"));
    }
    let version = reader.u32().ok_or_else(|| corrupt(8, "the snapshot file is too short"))?;
    if version != FORMAT_VERSION
        && version != TRAILING_CHECKSUM_VERSION
        && version != MEMBER_LIST_VERSION
    {
        return Err(StorageError::UnsupportedVersion {
            file: path.to_path_buf(),
            found: version,
            supported: FORMAT_VERSION,
        });
    }
    let short = || corrupt(file_len as usize, "the snapshot file ends inside its header");
    if fixed.len() < FIXED_HEADER_BYTES {
        return Err(short());
    }
    let _reserved = reader.u32().ok_or_else(short)?;
    let node = reader.u64().ok_or_else(short)?;
    let cluster = reader.u64().ok_or_else(short)?;
    let term = reader.u64().ok_or_else(short)?;
    let index = reader.u64().ok_or_else(short)?;
    let declared = reader.u32().ok_or_else(short)? as usize;
    let configuration_bytes =
        if version == MEMBER_LIST_VERSION { declared.saturating_mul(8) } else { declared };
    if configuration_bytes > MAX_CONFIGURATION_BYTES {
        return Err(corrupt(
            FIXED_HEADER_BYTES - 4,
            "the configuration's declared length is too large",
        ));
    }
    let checksums = if version == FORMAT_VERSION { 8 } else { 4 };
    let header_len = FIXED_HEADER_BYTES + configuration_bytes + 8 + checksums;
    if (file_len as usize) < header_len {
        return Err(short());
    }
    let bytes = read_exact_at(file, 0, header_len, path)?;
    let mut reader = Cursor { bytes: &bytes, offset: FIXED_HEADER_BYTES };
    let encoded = reader.take(configuration_bytes).ok_or_else(short)?;
    let configuration = if version == MEMBER_LIST_VERSION {
        let members = encoded
            .chunks_exact(8)
            .map(|id| NodeId(u64::from_le_bytes(id.try_into().unwrap_or_default())))
            .collect::<Vec<_>>();
        Configuration::simple(members).unwrap_or_default()
    } else {
        Configuration::decode(encoded).map_err(|reason| corrupt(FIXED_HEADER_BYTES, &reason))?
    };
    let data_len = reader.u64().ok_or_else(short)?;
    let stored_checksum = if version == FORMAT_VERSION { reader.u32() } else { None };
    let header_end = reader.offset;
    let header_checksum = reader.u32().ok_or_else(short)?;
    if crc32c::crc32c(&bytes[..header_end]) != header_checksum {
        return Err(corrupt(header_end, "the snapshot header's checksum does not match"));
    }
    if node != identity.node_id.0 || cluster != identity.cluster_id {
        return Err(StorageError::ForeignData {
            file: path.to_path_buf(),
            expected_node: identity.node_id.0,
            expected_cluster: identity.cluster_id,
            found_node: node,
            found_cluster: cluster,
        });
    }
    if snapshot_index(path.file_name().and_then(|name| name.to_str()).unwrap_or_default())
        != Some(LogIndex(index))
    {
        return Err(corrupt(0, "the snapshot's index does not match its file name"));
    }
    let data_offset = header_len as u64;
    let trailer = if stored_checksum.is_some() { 0 } else { 4 };
    let expected_len = data_offset.checked_add(data_len).and_then(|end| end.checked_add(trailer));
    if expected_len != Some(file_len) {
        let reason = if expected_len.is_some_and(|expected| expected > file_len) {
            "the snapshot file ends inside its data"
        } else {
            "the snapshot file's length does not match its header"
        };
        return Err(corrupt(header_len, reason));
    }
    let data_checksum = match stored_checksum {
        Some(checksum) => checksum,
        None => {
            let trailing = read_exact_at(file, data_offset + data_len, 4, path)?;
            u32::from_le_bytes(trailing.try_into().unwrap_or_default())
        }
    };
    let meta =
        SnapshotMeta { last_included: LogId::new(Term(term), LogIndex(index)), configuration };
    Ok(Header { snapshot: Snapshot::new(meta, data_len, data_checksum), data_offset })
}

/// A bounds-checked reader.
struct Cursor<'a> {
    bytes: &'a [u8],
    offset: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, length: usize) -> Option<&'a [u8]> {
        let end = self.offset.checked_add(length)?;
        let taken = self.bytes.get(self.offset..end)?;
        self.offset = end;
        Some(taken)
    }

    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }

    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }
}

/// Describes the newest snapshot in `dir`, if there is one, having checked its header.
/// Changes nothing.
pub(super) fn load_latest<F: FileSystem>(
    fs: &F,
    dir: &Path,
    identity: WalIdentity,
) -> Result<Option<Snapshot>, StorageError> {
    let names = fs
        .list(dir)
        .map_err(|error| StorageError::io(format!("listing {}", dir.display()), error))?;
    let Some(newest) = names.iter().filter_map(|name| snapshot_index(name)).max() else {
        return Ok(None);
    };
    let path = dir.join(snapshot_name(newest));
    let file = fs
        .open_read(&path)
        .map_err(|error| StorageError::io(format!("opening {}", path.display()), error))?;
    read_header(&file, identity, &path).map(|header| Some(header.snapshot))
}

/// Stores and reads snapshots in a write-ahead log's directory; cloneable, for another
/// thread.
#[derive(Clone, Debug)]
pub struct WalSnapshotStore<F: FileSystem> {
    fs: F,
    dir: PathBuf,
    identity: WalIdentity,
}

impl<F: FileSystem> WalSnapshotStore<F> {
    pub(super) fn new(fs: F, dir: PathBuf, identity: WalIdentity) -> Self {
        WalSnapshotStore { fs, dir, identity }
    }

    fn io_error(what: &str, path: &Path) -> impl FnOnce(io::Error) -> StorageError + use<F> {
        let operation = format!("{what} {}", path.display());
        move |error| StorageError::io(operation, error)
    }
}

impl<F: FileSystem> SnapshotStore for WalSnapshotStore<F> {
    fn create(&mut self, meta: &SnapshotMeta) -> Result<Box<dyn SnapshotSink>, StorageError> {
        let index = meta.last_included.index;
        let path = self.dir.join(snapshot_name(index));
        let temporary = self.dir.join(format!("{}{TEMPORARY_SUFFIX}", snapshot_name(index)));
        // A leftover of an earlier attempt would keep its bytes past the new end.
        let _ = self.fs.remove(&temporary);
        let file =
            self.fs.open_write(&temporary).map_err(Self::io_error("creating", &temporary))?;
        let header_len = encode_header(meta, self.identity, 0, 0).len() as u64;
        Ok(Box::new(WalSnapshotSink {
            store: self.clone(),
            meta: meta.clone(),
            file: Some(file),
            temporary,
            path,
            header_len,
            written: 0,
            checksum: 0,
            buffer: Vec::new(),
            writeback: None,
            writeback_from: 0,
        }))
    }

    fn open(&self, snapshot: &Snapshot) -> Result<Box<dyn SnapshotSource>, StorageError> {
        let path = self.dir.join(snapshot_name(snapshot.meta.last_included.index));
        let file = self.fs.open_read(&path).map_err(Self::io_error("opening", &path))?;
        let header = read_header(&file, self.identity, &path)?;
        if header.snapshot.id != snapshot.id {
            return Err(StorageError::CorruptRecord {
                file: path,
                offset: 0,
                reason: format!("holds {} where {} was expected", header.snapshot.id, snapshot.id),
            });
        }
        Ok(Box::new(WalSnapshotSource {
            snapshot: header.snapshot,
            file,
            data_offset: header.data_offset,
            path,
            buffers: Arc::default(),
        }))
    }
}

/// A snapshot file being written under its temporary name.
struct WalSnapshotSink<F: FileSystem> {
    store: WalSnapshotStore<F>,
    meta: SnapshotMeta,
    /// `None` once finished.
    file: Option<F::File>,
    temporary: PathBuf,
    path: PathBuf,
    header_len: u64,
    /// Data bytes handed to the file so far.
    written: u64,
    /// crc32c of every data byte written into the sink (buffered or not).
    checksum: u32,
    buffer: Vec<u8>,
    /// The background sync under way (see [`WRITEBACK_BYTES`]), if any.
    writeback: Option<std::thread::JoinHandle<io::Result<()>>>,
    /// `written` when the last background sync started.
    writeback_from: u64,
}

impl<F: FileSystem> WalSnapshotSink<F> {
    fn write_buffer(&mut self) -> io::Result<()> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let buffer = std::mem::take(&mut self.buffer);
        let written = self.write_to_file(&buffer);
        self.buffer = buffer;
        self.buffer.clear();
        written
    }

    /// Writes `bytes` after what the file holds, and starts a background sync every
    /// [`WRITEBACK_BYTES`].
    fn write_to_file(&mut self, bytes: &[u8]) -> io::Result<()> {
        let file =
            self.file.as_mut().ok_or_else(|| io::Error::other("the snapshot is finished"))?;
        file.write_at(bytes, self.header_len + self.written)?;
        self.written += bytes.len() as u64;
        if self.written - self.writeback_from >= WRITEBACK_BYTES
            && self.store.fs.prepare_in_background()
            && self.writeback.as_ref().is_none_or(|sync| sync.is_finished())
        {
            self.finish_writeback()?;
            let file =
                self.file.as_ref().ok_or_else(|| io::Error::other("the snapshot is finished"))?;
            let mut clone = file.try_clone()?;
            self.writeback = Some(std::thread::spawn(move || clone.sync_data()));
            self.writeback_from = self.written;
        }
        Ok(())
    }

    /// Waits for the background sync, if one runs, and returns its error.
    fn finish_writeback(&mut self) -> io::Result<()> {
        match self.writeback.take() {
            Some(sync) => sync.join().unwrap_or_else(|_| Err(io::Error::other("a sync panicked"))),
            None => Ok(()),
        }
    }

    /// Writes the header, syncs and renames into place, then removes older snapshots.
    fn complete(&mut self) -> Result<Snapshot, StorageError> {
        let store = self.store.clone();
        self.write_buffer().map_err(WalSnapshotStore::<F>::io_error("writing", &self.temporary))?;
        // An error of a background sync is this file's (the final sync might not see it again).
        self.finish_writeback()
            .map_err(WalSnapshotStore::<F>::io_error("syncing", &self.temporary))?;
        let header = encode_header(&self.meta, store.identity, self.written, self.checksum);
        debug_assert_eq!(
            header.len() as u64,
            self.header_len,
            "the header's length depends only on the meta"
        );
        let mut file = self.file.take().ok_or_else(|| StorageError::Corrupt {
            detail: "a snapshot sink was finished twice".to_owned(),
        })?;
        file.write_at(&header, 0)
            .and_then(|()| file.sync_data())
            .map_err(WalSnapshotStore::<F>::io_error("writing", &self.temporary))?;
        drop(file);
        store
            .fs
            .rename(&self.temporary, &self.path)
            .map_err(WalSnapshotStore::<F>::io_error("renaming", &self.temporary))?;
        store
            .fs
            .sync_dir(&store.dir)
            .map_err(WalSnapshotStore::<F>::io_error("syncing", &store.dir))?;
        // The new snapshot is durable: older ones are no longer needed. Another sink (a
        // received snapshot stored while a taken one is written) may remove them first.
        let index = self.meta.last_included.index;
        let names = store
            .fs
            .list(&store.dir)
            .map_err(WalSnapshotStore::<F>::io_error("listing", &store.dir))?;
        let mut removed = false;
        for name in names {
            if snapshot_index(&name).is_some_and(|older| older < index) {
                let older = store.dir.join(&name);
                match store.fs.remove(&older) {
                    Ok(()) => removed = true,
                    Err(error) if error.kind() == io::ErrorKind::NotFound => {}
                    Err(error) => {
                        return Err(WalSnapshotStore::<F>::io_error("removing", &older)(error));
                    }
                }
            }
        }
        if removed {
            store
                .fs
                .sync_dir(&store.dir)
                .map_err(WalSnapshotStore::<F>::io_error("syncing", &store.dir))?;
        }
        Ok(Snapshot::new(self.meta.clone(), self.written, self.checksum))
    }
}

impl<F: FileSystem> io::Write for WalSnapshotSink<F> {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        if self.file.is_none() {
            return Err(io::Error::other("the snapshot is finished"));
        }
        self.checksum = crc32c::crc32c_append(self.checksum, bytes);
        if self.buffer.is_empty() && bytes.len() >= SINK_BUFFER_BYTES {
            // A chunk as large as the buffer (a received snapshot's): no copy.
            self.write_to_file(bytes)?;
            return Ok(bytes.len());
        }
        self.buffer.extend_from_slice(bytes);
        if self.buffer.len() >= SINK_BUFFER_BYTES {
            self.write_buffer()?;
        }
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.write_buffer()
    }
}

impl<F: FileSystem> SnapshotSink for WalSnapshotSink<F> {
    fn finish(mut self: Box<Self>) -> Result<Snapshot, StorageError> {
        self.complete()
    }
}

impl<F: FileSystem> Drop for WalSnapshotSink<F> {
    fn drop(&mut self) {
        if self.file.take().is_some() {
            // Unfinished (abandoned, or a write failed): what was written would only hold
            // space (a full disk, typically) until the next start removes it.
            let _ = self.store.fs.remove(&self.temporary);
        }
    }
}

/// A stored snapshot file open for reading.
struct WalSnapshotSource<R: ReadAtFile> {
    snapshot: Snapshot,
    file: R,
    data_offset: u64,
    path: PathBuf,
    /// Buffers of chunks read and since dropped, for the next reads: a leader reads a chunk
    /// per message, and a fresh allocation for each (zeroed, then overwritten) cost a pass
    /// over every byte sent and let the allocator wander through free memory it had
    /// returned to the system (the sending process's RSS grew by up to 300 MB during a 1 GB
    /// transfer while the memory in use grew by 3 MB).
    buffers: Arc<Mutex<Vec<Vec<u8>>>>,
}

/// Buffers a source keeps for reuse: a transfer's chunks in flight, and a few more.
const POOLED_BUFFERS: usize = 8;

/// A chunk read into a buffer of a source's pool, which it goes back to when dropped.
struct PooledChunk {
    buffer: Vec<u8>,
    pool: Arc<Mutex<Vec<Vec<u8>>>>,
}

impl AsRef<[u8]> for PooledChunk {
    fn as_ref(&self) -> &[u8] {
        &self.buffer
    }
}

impl Drop for PooledChunk {
    fn drop(&mut self) {
        let mut pool = self.pool.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if pool.len() < POOLED_BUFFERS {
            pool.push(std::mem::take(&mut self.buffer));
        }
    }
}

impl<R: ReadAtFile> SnapshotSource for WalSnapshotSource<R> {
    fn snapshot(&self) -> &Snapshot {
        &self.snapshot
    }

    fn read_at(&self, offset: u64, len: usize) -> Result<Bytes, StorageError> {
        let left = self.snapshot.size.saturating_sub(offset);
        let len = len.min(usize::try_from(left).unwrap_or(usize::MAX));
        let pooled = self.buffers.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).pop();
        let mut buffer = pooled.unwrap_or_default();
        // Zeroes only what the buffer never held.
        buffer.resize(len, 0);
        let read = self
            .file
            .read_at(&mut buffer, self.data_offset + offset)
            .map_err(|error| StorageError::io(format!("reading {}", self.path.display()), error))?;
        buffer.truncate(read);
        Ok(Bytes::from_owner(PooledChunk { buffer, pool: Arc::clone(&self.buffers) }))
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};

    use super::*;
    use crate::storage::StdFileSystem;
    use crate::storage::snapshot_store::SnapshotReader;

    fn identity() -> WalIdentity {
        WalIdentity { node_id: NodeId(2), cluster_id: 9 }
    }

    fn meta() -> SnapshotMeta {
        SnapshotMeta {
            last_included: LogId::new(Term(3), LogIndex(42)),
            configuration: Configuration::of_voters([NodeId(1), NodeId(2), NodeId(3)]),
        }
    }

    const DATA: &[u8] = b"the state machine";

    fn store(dir: &Path) -> WalSnapshotStore<StdFileSystem> {
        WalSnapshotStore::new(StdFileSystem, dir.to_path_buf(), identity())
    }

    /// Stores `DATA` in pieces through a sink.
    fn write(dir: &Path) -> Snapshot {
        let mut sink = store(dir).create(&meta()).unwrap();
        for piece in DATA.chunks(5) {
            sink.write_all(piece).unwrap();
        }
        sink.finish().unwrap()
    }

    fn read_all(dir: &Path, snapshot: &Snapshot) -> std::io::Result<Vec<u8>> {
        let source = store(dir).open(snapshot).map_err(std::io::Error::other)?;
        let mut data = Vec::new();
        SnapshotReader::new(source).read_to_end(&mut data)?;
        Ok(data)
    }

    fn header_of(path: &Path) -> Result<Header, StorageError> {
        read_header(&StdFileSystem.open_read(path).unwrap(), identity(), path)
    }

    /// A version 2 file, as builds before streamed snapshots wrote it.
    fn encode_version_2(meta: &SnapshotMeta, data: &[u8]) -> Vec<u8> {
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&MAGIC);
        bytes.extend_from_slice(&TRAILING_CHECKSUM_VERSION.to_le_bytes());
        bytes.extend_from_slice(&0u32.to_le_bytes());
        bytes.extend_from_slice(&identity().node_id.0.to_le_bytes());
        bytes.extend_from_slice(&identity().cluster_id.to_le_bytes());
        bytes.extend_from_slice(&meta.last_included.term.0.to_le_bytes());
        bytes.extend_from_slice(&meta.last_included.index.0.to_le_bytes());
        bytes.extend_from_slice(&(meta.configuration.encoded_len() as u32).to_le_bytes());
        meta.configuration.encode_into(&mut bytes);
        bytes.extend_from_slice(&(data.len() as u64).to_le_bytes());
        let header_checksum = crc32c::crc32c(&bytes);
        bytes.extend_from_slice(&header_checksum.to_le_bytes());
        bytes.extend_from_slice(data);
        bytes.extend_from_slice(&crc32c::crc32c(data).to_le_bytes());
        bytes
    }

    #[test]
    fn a_snapshot_streams_in_and_out() {
        let dir = tempfile::tempdir().unwrap();
        let snapshot = write(dir.path());
        assert_eq!(snapshot, Snapshot::of_bytes(meta(), DATA));
        assert_eq!(
            load_latest(&StdFileSystem, dir.path(), identity()).unwrap(),
            Some(snapshot.clone())
        );
        assert_eq!(read_all(dir.path(), &snapshot).unwrap(), DATA);
        let source = store(dir.path()).open(&snapshot).unwrap();
        assert_eq!(source.read_at(4, 5).unwrap(), "state");
        assert_eq!(source.read_at(15, 100).unwrap(), "ne", "cut at the end");
        assert!(source.read_at(100, 1).unwrap().is_empty());
        // Another snapshot with the same coverage but other bytes is not this one.
        let other = Snapshot::of_bytes(meta(), b"other bytes");
        assert!(store(dir.path()).open(&other).is_err());
    }

    /// Writes of every size (pieces buffered, whole chunks written as they are) past a few
    /// background syncs store exactly the bytes written.
    #[test]
    fn large_writes_and_background_syncs_store_every_byte() {
        let dir = tempfile::tempdir().unwrap();
        let data: Vec<u8> =
            (0..(WRITEBACK_BYTES * 2 + 12_345) as usize).map(|at| (at % 251) as u8).collect();
        let mut sink = store(dir.path()).create(&meta()).unwrap();
        let mut at = 0;
        for size in
            [3, SINK_BUFFER_BYTES, SINK_BUFFER_BYTES + 7, 1, SINK_BUFFER_BYTES * 3].iter().cycle()
        {
            let end = (at + size).min(data.len());
            sink.write_all(&data[at..end]).unwrap();
            at = end;
            if at == data.len() {
                break;
            }
        }
        let snapshot = sink.finish().unwrap();
        assert_eq!(snapshot, Snapshot::of_bytes(meta(), &data));
        assert!(read_all(dir.path(), &snapshot).unwrap() == data);
    }

    /// A source reuses the buffers of chunks dropped: each read still returns its own bytes,
    /// shorter or longer than the buffer's last use.
    #[test]
    fn reused_read_buffers_hold_the_bytes_asked_for() {
        let dir = tempfile::tempdir().unwrap();
        let snapshot = write(dir.path());
        let source = store(dir.path()).open(&snapshot).unwrap();
        let kept = source.read_at(0, 3).unwrap();
        for (offset, len) in [(4, 5), (0, DATA.len()), (10, 2), (1, 100), (16, 1)] {
            let expected = &DATA[offset..(offset + len).min(DATA.len())];
            assert_eq!(source.read_at(offset as u64, len).unwrap(), expected);
        }
        assert_eq!(kept, &DATA[..3], "a chunk still held is not reused");
    }

    #[test]
    fn an_unfinished_sink_leaves_nothing_and_a_newer_snapshot_replaces_older_ones() {
        let dir = tempfile::tempdir().unwrap();
        let mut sink = store(dir.path()).create(&meta()).unwrap();
        sink.write_all(b"half").unwrap();
        drop(sink);
        assert!(StdFileSystem.list(dir.path()).unwrap().is_empty());
        let older = write(dir.path());
        let source = store(dir.path()).open(&older).unwrap();
        let newer_meta =
            SnapshotMeta { last_included: LogId::new(Term(3), LogIndex(50)), ..meta() };
        let mut sink = store(dir.path()).create(&newer_meta).unwrap();
        sink.write_all(b"newer").unwrap();
        let newer = sink.finish().unwrap();
        assert_eq!(StdFileSystem.list(dir.path()).unwrap(), [snapshot_name(LogIndex(50))]);
        assert_eq!(load_latest(&StdFileSystem, dir.path(), identity()).unwrap(), Some(newer));
        // A source opened before stays readable.
        assert_eq!(source.read_at(0, DATA.len()).unwrap(), DATA);
    }

    #[test]
    fn every_damage_is_refused_with_the_file_named() {
        let dir = tempfile::tempdir().unwrap();
        let snapshot = write(dir.path());
        let path = dir.path().join(snapshot_name(LogIndex(42)));
        let bytes = std::fs::read(&path).unwrap();
        let header_len = bytes.len() - DATA.len();
        for cut in 0..bytes.len() {
            std::fs::write(&path, &bytes[..cut]).unwrap();
            assert!(header_of(&path).is_err(), "cut at {cut}");
        }
        for position in 0..bytes.len() {
            let mut flipped = bytes.clone();
            flipped[position] ^= 0x10;
            std::fs::write(&path, &flipped).unwrap();
            if position < header_len {
                let error = header_of(&path).expect_err("a flipped bit in the header");
                assert!(error.to_string().contains("snapshot-"), "{error}");
            } else {
                // The data is checked as it is read.
                assert_eq!(header_of(&path).unwrap().snapshot, snapshot);
                let error = read_all(dir.path(), &snapshot).expect_err("a flipped bit in the data");
                assert_eq!(error.kind(), std::io::ErrorKind::InvalidData);
            }
        }
        std::fs::write(&path, [&bytes[..], b"more"].concat()).unwrap();
        assert!(header_of(&path).is_err(), "bytes after the data");
        std::fs::write(&path, &bytes).unwrap();
        let foreign = WalIdentity { node_id: NodeId(5), ..identity() };
        assert!(matches!(
            read_header(&StdFileSystem.open_read(&path).unwrap(), foreign, &path),
            Err(StorageError::ForeignData { found_node: 2, .. })
        ));
        let renamed = dir.path().join(snapshot_name(LogIndex(41)));
        std::fs::rename(&path, &renamed).unwrap();
        assert!(header_of(&renamed).is_err());
    }

    #[test]
    fn a_version_2_file_still_reads() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(snapshot_name(LogIndex(42)));
        std::fs::write(&path, encode_version_2(&meta(), DATA)).unwrap();
        let snapshot = load_latest(&StdFileSystem, dir.path(), identity()).unwrap().unwrap();
        assert_eq!(snapshot, Snapshot::of_bytes(meta(), DATA));
        assert_eq!(read_all(dir.path(), &snapshot).unwrap(), DATA);
        let mut damaged = encode_version_2(&meta(), DATA);
        let last = damaged.len() - 1;
        damaged[last] ^= 1;
        std::fs::write(&path, damaged).unwrap();
        let snapshot = load_latest(&StdFileSystem, dir.path(), identity()).unwrap().unwrap();
        assert!(read_all(dir.path(), &snapshot).is_err(), "its trailing checksum is checked");
    }

    #[test]
    fn names_parse_back() {
        assert_eq!(snapshot_index(&snapshot_name(LogIndex(7))), Some(LogIndex(7)));
        assert_eq!(snapshot_index("snapshot-7.snap"), None);
        assert!(is_temporary_name(&format!("{}.tmp", snapshot_name(LogIndex(7)))));
        assert!(!is_temporary_name(&snapshot_name(LogIndex(7))));
    }
}
