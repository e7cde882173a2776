//! Snapshot files beside the write-ahead log: `snapshot-<last included index>.snap`.
//!
//! A snapshot is written whole under a temporary name, synced, renamed into place and the
//! directory synced, so a crash leaves either the previous snapshot or the new one, never a
//! part. Older snapshot files are removed after that. The newest one is read back at start;
//! if it fails its checks the node refuses to start (it may already have dropped the log
//! segments the snapshot covers). Layout (little-endian; see `docs/wal-format.md`):
//!
//! ```text
//! magic "RAFTSNP\0" (8) | format version u32 (2) | reserved u32 (0) | node id u64
//! | cluster id u64 | last included term u64 | last included index u64
//! | configuration length u32 | configuration (`core/configuration_encoding.rs`)
//! | data length u64 | crc32c of everything before u32 | data | crc32c of data u32
//! ```
//!
//! Version 1 had `member count u32 | member ids u64...` in place of the configuration; this
//! build still reads it (as a configuration of those voters) and writes version 2.

use std::path::{Path, PathBuf};

use bytes::Bytes;

use super::WalIdentity;
use crate::core::Configuration;
use crate::error::StorageError;
use crate::snapshot::{Snapshot, SnapshotMeta};
use crate::storage::SnapshotWriter;
use crate::storage::fs::{AppendFile, FileSystem};
use crate::types::{LogId, LogIndex, NodeId, Term};

/// The first eight bytes of every snapshot file.
const MAGIC: [u8; 8] = *b"RAFTSNP\0";
/// The snapshot file format version this build reads and writes.
const FORMAT_VERSION: u32 = 2;
/// The version before configurations: a plain list of voters.
const MEMBER_LIST_VERSION: u32 = 1;
/// Suffix of a snapshot being written.
const TEMPORARY_SUFFIX: &str = ".tmp";

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

/// Encodes `snapshot` of `identity`'s log as a file.
fn encode(snapshot: &Snapshot, identity: WalIdentity) -> Vec<u8> {
    let meta = &snapshot.meta;
    let configuration_len = meta.configuration.encoded_len();
    let mut bytes = Vec::with_capacity(64 + configuration_len + snapshot.data.len());
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
    bytes.extend_from_slice(&(snapshot.data.len() as u64).to_le_bytes());
    let header_checksum = crc32c::crc32c(&bytes);
    bytes.extend_from_slice(&header_checksum.to_le_bytes());
    bytes.extend_from_slice(&snapshot.data);
    bytes.extend_from_slice(&crc32c::crc32c(&snapshot.data).to_le_bytes());
    bytes
}

/// Decodes a snapshot file of `identity`'s log, or says what is wrong with it.
fn decode(bytes: &[u8], identity: WalIdentity, path: &Path) -> Result<Snapshot, StorageError> {
    let corrupt = |offset: usize, reason: &str| StorageError::CorruptRecord {
        file: path.to_path_buf(),
        offset: offset as u64,
        reason: reason.to_owned(),
    };
    let mut reader = Cursor { bytes, offset: 0 };
    let magic = reader.take(8).ok_or_else(|| corrupt(0, "the snapshot file is too short"))?;
    if magic != MAGIC {
        return Err(corrupt(0, "not a snapshot file (bad magic number)"));
    }
    let version = reader.u32().ok_or_else(|| corrupt(8, "the snapshot file is too short"))?;
    if version != FORMAT_VERSION && version != MEMBER_LIST_VERSION {
        return Err(StorageError::UnsupportedVersion {
            file: path.to_path_buf(),
            found: version,
            supported: FORMAT_VERSION,
        });
    }
    let short = || corrupt(bytes.len(), "the snapshot file ends inside its header");
    let _reserved = reader.u32().ok_or_else(short)?;
    let node = reader.u64().ok_or_else(short)?;
    let cluster = reader.u64().ok_or_else(short)?;
    let term = reader.u64().ok_or_else(short)?;
    let index = reader.u64().ok_or_else(short)?;
    let configuration_start = reader.offset;
    let configuration = if version == MEMBER_LIST_VERSION {
        let count = reader.u32().ok_or_else(short)? as usize;
        if count > reader.remaining() / 8 {
            return Err(short());
        }
        let mut members = Vec::with_capacity(count);
        for _ in 0..count {
            members.push(NodeId(reader.u64().ok_or_else(short)?));
        }
        Configuration::simple(members).unwrap_or_default()
    } else {
        let length = reader.u32().ok_or_else(short)? as usize;
        let encoded = reader.take(length).ok_or_else(short)?;
        Configuration::decode(encoded).map_err(|reason| corrupt(configuration_start, &reason))?
    };
    let data_len = reader.u64().ok_or_else(short)?;
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
    let data_start = reader.offset;
    let data = usize::try_from(data_len)
        .ok()
        .and_then(|length| reader.take(length))
        .ok_or_else(|| corrupt(data_start, "the snapshot file ends inside its data"))?;
    let data_checksum =
        reader.u32().ok_or_else(|| corrupt(reader.offset, "the data checksum is missing"))?;
    if crc32c::crc32c(data) != data_checksum {
        return Err(corrupt(data_start, "the snapshot data's checksum does not match"));
    }
    if reader.remaining() > 0 {
        return Err(corrupt(reader.offset, "bytes follow the snapshot data"));
    }
    if snapshot_index(path.file_name().and_then(|name| name.to_str()).unwrap_or_default())
        != Some(LogIndex(index))
    {
        return Err(corrupt(0, "the snapshot's index does not match its file name"));
    }
    Ok(Snapshot {
        meta: SnapshotMeta {
            last_included: LogId::new(Term(term), LogIndex(index)),
            configuration,
        },
        data: Bytes::copy_from_slice(data),
    })
}

/// A bounds-checked reader.
struct Cursor<'a> {
    bytes: &'a [u8],
    offset: usize,
}

impl<'a> Cursor<'a> {
    fn remaining(&self) -> usize {
        self.bytes.len() - self.offset
    }

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

/// Reads the newest snapshot in `dir`, if there is one. Changes nothing.
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
    let bytes = fs
        .read(&path)
        .map_err(|error| StorageError::io(format!("reading {}", path.display()), error))?;
    decode(&bytes, identity, &path).map(Some)
}

/// Stores snapshots in a write-ahead log's directory; cloneable, for another thread.
#[derive(Clone, Debug)]
pub struct WalSnapshotWriter<F: FileSystem> {
    fs: F,
    dir: PathBuf,
    identity: WalIdentity,
}

impl<F: FileSystem> WalSnapshotWriter<F> {
    pub(super) fn new(fs: F, dir: PathBuf, identity: WalIdentity) -> Self {
        WalSnapshotWriter { fs, dir, identity }
    }
}

impl<F: FileSystem> SnapshotWriter for WalSnapshotWriter<F> {
    fn write(&mut self, snapshot: &Snapshot) -> Result<(), StorageError> {
        let index = snapshot.meta.last_included.index;
        let path = self.dir.join(snapshot_name(index));
        let temporary = self.dir.join(format!("{}{TEMPORARY_SUFFIX}", snapshot_name(index)));
        let io_error = |what: &str, path: &Path| {
            let operation = format!("{what} {}", path.display());
            move |error| StorageError::io(operation, error)
        };
        // A leftover of an earlier attempt would keep its bytes past the new end.
        let _ = self.fs.remove(&temporary);
        let bytes = encode(snapshot, self.identity);
        let mut file = self.fs.open_write(&temporary).map_err(io_error("creating", &temporary))?;
        if let Err(error) = file.write_at(&bytes, 0).and_then(|()| file.sync_data()) {
            // What was written would only hold space (a full disk, typically) until the next
            // start removes it.
            drop(file);
            let _ = self.fs.remove(&temporary);
            return Err(io_error("writing", &temporary)(error));
        }
        drop(file);
        self.fs.rename(&temporary, &path).map_err(io_error("renaming", &temporary))?;
        self.fs.sync_dir(&self.dir).map_err(io_error("syncing", &self.dir))?;
        // The new snapshot is durable: older ones are no longer needed. Another writer (a
        // received snapshot stored while a taken one is written) may remove them first.
        let names = self.fs.list(&self.dir).map_err(io_error("listing", &self.dir))?;
        let mut removed = false;
        for name in names {
            if snapshot_index(&name).is_some_and(|older| older < index) {
                let older = self.dir.join(&name);
                match self.fs.remove(&older) {
                    Ok(()) => removed = true,
                    Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
                    Err(error) => return Err(io_error("removing", &older)(error)),
                }
            }
        }
        if removed {
            self.fs.sync_dir(&self.dir).map_err(io_error("syncing", &self.dir))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity() -> WalIdentity {
        WalIdentity { node_id: NodeId(2), cluster_id: 9 }
    }

    fn snapshot() -> Snapshot {
        Snapshot {
            meta: SnapshotMeta {
                last_included: LogId::new(Term(3), LogIndex(42)),
                configuration: Configuration::of_voters([NodeId(1), NodeId(2), NodeId(3)]),
            },
            data: Bytes::from_static(b"the state machine"),
        }
    }

    fn path() -> PathBuf {
        PathBuf::from("/data").join(snapshot_name(LogIndex(42)))
    }

    #[test]
    fn a_snapshot_file_round_trips() {
        let bytes = encode(&snapshot(), identity());
        assert_eq!(decode(&bytes, identity(), &path()).expect("valid"), snapshot());
    }

    #[test]
    fn every_damage_is_refused_with_the_file_named() {
        let bytes = encode(&snapshot(), identity());
        for cut in 0..bytes.len() {
            assert!(decode(&bytes[..cut], identity(), &path()).is_err(), "cut at {cut}");
        }
        for position in 0..bytes.len() {
            let mut flipped = bytes.clone();
            flipped[position] ^= 0x10;
            let error = decode(&flipped, identity(), &path()).expect_err("a flipped bit");
            assert!(error.to_string().contains("snapshot-"), "{error}");
        }
        let foreign = WalIdentity { node_id: NodeId(5), ..identity() };
        assert!(matches!(
            decode(&bytes, foreign, &path()),
            Err(StorageError::ForeignData { found_node: 2, .. })
        ));
        let renamed = PathBuf::from("/data").join(snapshot_name(LogIndex(41)));
        assert!(decode(&bytes, identity(), &renamed).is_err());
    }

    #[test]
    fn names_parse_back() {
        assert_eq!(snapshot_index(&snapshot_name(LogIndex(7))), Some(LogIndex(7)));
        assert_eq!(snapshot_index("snapshot-7.snap"), None);
        assert!(is_temporary_name(&format!("{}.tmp", snapshot_name(LogIndex(7)))));
        assert!(!is_temporary_name(&snapshot_name(LogIndex(7))));
    }
}
