//! Reading a write-ahead log back at start: every segment is checked before anything is
//! changed. Segments are preallocated and zero-filled, so a segment's length does not say
//! where its records end: the log ends at end of file or at a zero record prefix followed by
//! nothing but zeros. A record that fails (cut short, failing a checksum) in the last segment
//! is what a crash mid-write leaves, and is cut off, when it is the last write torn: every
//! byte after it is zero (a prefix of the write landed), or (format 2) it has a sector the
//! write never reached and no record of a later write follows it (the write's sectors landed
//! out of order). Anything else wrong is corruption: the node refuses to start with the file
//! and offset (repair from peers can hook in here). A directory of another node, cluster or
//! format version is refused untouched.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::core::InitialState;
use crate::core::message_bounds::MAX_INDEX;
use crate::error::StorageError;
use crate::hard_state::HardState;
use crate::message::Entry;
use crate::storage::fs::FileSystem;
use crate::types::{LogIndex, NodeId};

use super::format::{
    FORMAT_VERSION, Framing, HEADER_LEN, HeaderError, MAGIC, OLDEST_READABLE_VERSION, ReadOutcome,
    Record, SegmentHeader, read_record,
};

/// The largest segment sequence number a log may hold: the log numbers the segment after the
/// last one by adding 1, and a log that starts a segment every millisecond reaches this after
/// hundreds of millions of years. A larger one is corruption.
const MAX_SEQUENCE: u64 = u64::MAX / 2;

/// The unit a disk writes whole: a write that a crash interrupts lands as some of its
/// sectors, not necessarily in order.
const SECTOR_BYTES: usize = 512;
use super::{WalIdentity, segment_name, segment_sequence, snapshot_file};

/// The last segment as recovery left it.
#[derive(Debug)]
pub(crate) struct TailSegment {
    pub(crate) sequence: u64,
    /// The format version the segment is written in (0 when its header is being recreated).
    pub(crate) format_version: u32,
    pub(crate) path: PathBuf,
    /// Bytes up to the end of the last whole record (0 when even the header is torn).
    pub(crate) valid_len: u64,
    /// What a torn write left after `valid_len`, when there is any: it must be cleared before
    /// the log writes there again.
    pub(crate) torn: Option<TornWrite>,
    /// The file's length: shorter than a segment's full size when the segment grows as it is
    /// written (it was not preallocated).
    pub(crate) file_len: u64,
}

/// The bytes a torn write left after the last whole record of the last segment.
#[derive(Debug)]
pub(crate) struct TornWrite {
    /// Just after the last non-zero byte: `valid_len..end` holds what the write left.
    pub(crate) end: u64,
    /// Whether the failing record reaches the end of the file (the write grew the file, as
    /// when the segment was not preallocated), rather than being followed by zeros.
    pub(crate) at_end_of_file: bool,
}

/// What a log holds.
#[derive(Debug)]
pub(crate) struct Recovered {
    pub(crate) state: InitialState,
    pub(crate) tail: Option<TailSegment>,
    /// For each segment, the highest entry index it holds that is still part of the log (0
    /// when a later log reset made all of it obsolete): compaction removes a segment once a
    /// snapshot covers that index.
    pub(crate) segment_last_index: BTreeMap<u64, LogIndex>,
}

/// The log as replayed so far.
struct Replay {
    hard_state: HardState,
    /// The latest members record.
    members: Option<Vec<NodeId>>,
    /// The index before `entries[0]`; unknown until the first entry or reset when the oldest
    /// segment left is not segment 1 (compaction removed those before it).
    base: Option<LogIndex>,
    /// Whether `base` was only inferred from the first entry found (compaction removed the
    /// segments before it): an entry that replaces a suffix starting below it moves it down.
    base_inferred: bool,
    entries: Vec<Entry>,
    segment_last_index: BTreeMap<u64, LogIndex>,
}

/// Reads and checks every segment in `dir`. Changes nothing.
pub(crate) fn recover<F: FileSystem>(
    fs: &F,
    dir: &Path,
    identity: WalIdentity,
    max_body_len: usize,
) -> Result<Recovered, StorageError> {
    let names = fs
        .list(dir)
        .map_err(|error| StorageError::io(format!("listing {}", dir.display()), error))?;
    let mut sequences: Vec<u64> = names.iter().filter_map(|name| segment_sequence(name)).collect();
    sequences.sort_unstable();
    if let Some(last) = sequences.last().filter(|last| **last > MAX_SEQUENCE) {
        return Err(StorageError::Corrupt {
            detail: format!(
                "write-ahead log segment {} in {} is numbered beyond the largest sequence, \
                 {MAX_SEQUENCE}",
                segment_name(*last),
                dir.display()
            ),
        });
    }
    let snapshot = snapshot_file::load_latest(fs, dir, identity)?;
    // Only compaction behind a snapshot removes segments, and it removes the oldest first.
    if let Some(first) = sequences.first()
        && *first != 1
        && snapshot.is_none()
    {
        return Err(StorageError::Corrupt {
            detail: format!(
                "write-ahead log segment {} is missing from {} (the first one found is {})",
                segment_name(1),
                dir.display(),
                segment_name(*first)
            ),
        });
    }
    for pair in sequences.windows(2) {
        if pair[1] != pair[0] + 1 {
            return Err(StorageError::Corrupt {
                detail: format!(
                    "write-ahead log segment {} is missing from {} (found {} and then {})",
                    segment_name(pair[0] + 1),
                    dir.display(),
                    segment_name(pair[0]),
                    segment_name(pair[1])
                ),
            });
        }
    }

    let mut replay = Replay {
        hard_state: HardState::default(),
        members: None,
        base: (sequences.first().is_none_or(|first| *first == 1)).then_some(LogIndex(0)),
        base_inferred: false,
        entries: Vec::new(),
        segment_last_index: BTreeMap::new(),
    };
    let mut tail = None;
    for (position, sequence) in sequences.iter().enumerate() {
        let is_last = position + 1 == sequences.len();
        let path = dir.join(segment_name(*sequence));
        let bytes = fs
            .read(&path)
            .map_err(|error| StorageError::io(format!("reading {}", path.display()), error))?;
        let corrupt = |offset: usize, reason: String| StorageError::CorruptRecord {
            file: path.clone(),
            offset: offset as u64,
            reason,
        };
        // Only bytes this node would have written at creation count as a creation cut short:
        // a short file of anything else (another node's, another version's) is refused.
        let expected_header = SegmentHeader {
            format_version: FORMAT_VERSION,
            node_id: identity.node_id.0,
            cluster_id: identity.cluster_id,
            sequence: *sequence,
            recycled: false,
        }
        .encode();
        let written_end = nonzero_end(&bytes, 0);
        let creation_cut_short = is_last
            && written_end < HEADER_LEN
            && bytes[..written_end] == expected_header[..written_end];
        if creation_cut_short {
            // A crash interrupted the creation of the last segment (a short file, a
            // preallocated one still all zeros, or one the file system grew before the data
            // reached the disk): it is created again.
            tail = Some(TailSegment {
                sequence: *sequence,
                format_version: 0,
                path,
                valid_len: 0,
                torn: None,
                file_len: bytes.len() as u64,
            });
            continue;
        }
        let header = check_header(&bytes, &path, identity, *sequence)?;
        let framing = Framing { version: header.format_version, sequence: *sequence };
        let prefix_len = framing.prefix_len();
        let mut offset = HEADER_LEN;
        let mut torn = None;
        while offset < bytes.len() {
            let rest = &bytes[offset..];
            // The zeros of preallocated space where a record would start: the end, if nothing
            // but zeros follows.
            let zero_prefix = rest[..rest.len().min(prefix_len)].iter().all(|byte| *byte == 0);
            let outcome = (!zero_prefix).then(|| read_record(rest, framing, max_body_len));
            // Where the failing record ends, as far as its prefix can tell.
            let (record_end, reason) = match outcome {
                Some(ReadOutcome::Record { record, length, .. }) => {
                    replay.apply(*sequence, record).map_err(|reason| corrupt(offset, reason))?;
                    offset += length;
                    continue;
                }
                Some(ReadOutcome::Invalid(reason)) => return Err(corrupt(offset, reason)),
                None => (offset, "the record prefix is all zeros"),
                Some(ReadOutcome::Incomplete) => (bytes.len(), "the segment ends inside a record"),
                Some(ReadOutcome::BadChecksum { length }) => {
                    (offset + length, "the record's checksum does not match")
                }
                Some(ReadOutcome::BadPrefix) => (
                    (offset + prefix_len).min(bytes.len()),
                    "the record's length checksum does not match",
                ),
            };
            let after = nonzero_end(&bytes, record_end);
            if zero_prefix && after == record_end {
                break;
            }
            let mut end = nonzero_end(&bytes, offset);
            if header.recycled && !is_last {
                // A closed segment ends with a zero prefix written at roll-over: anything
                // else where its records stop is damage to synced bytes.
                if zero_prefix {
                    break;
                }
                let why = "a recycled segment that is not the last must end with a zero prefix";
                return Err(corrupt(offset, format!("{reason}: {why}")));
            }
            if header.recycled {
                // The last segment, recycled: what follows its records is an older segment's
                // stale bytes, which never read as this segment's records. Only a record of
                // this segment written when the log was durable past the failure says it is
                // damage (the rest of a torn write may follow it).
                let scan = scan_after_failure(&bytes, offset, framing, max_body_len);
                if let Some(at) = scan.later_write {
                    let why = format!("a record of this segment follows at offset {at}");
                    return Err(corrupt(offset, format!("{reason}, and {why}: not its end")));
                }
                // The cut clears the records a torn write left; the stale bytes stay.
                end = scan.own_records_end.unwrap_or(offset);
            } else if !is_last {
                return Err(corrupt(offset, reason.to_owned()));
            } else if after > record_end {
                // Non-zero bytes follow the failure: damage, unless they are the rest of a
                // torn write that landed out of order (format 2 can tell): the failing record
                // has a sector the write never reached (a flipped bit does not zero a
                // sector), and no record of a later write follows.
                let later_write = (framing.version >= 2)
                    .then(|| scan_after_failure(&bytes, offset, framing, max_body_len).later_write)
                    .flatten();
                let hole = framing.version >= 2
                    && has_unwritten_sector(&bytes, offset, record_end.max(offset + prefix_len));
                if later_write.is_some() || !hole {
                    let why = match later_write {
                        Some(at) => format!("a record written after it follows at offset {at}"),
                        None => format!("non-zero bytes follow it (up to offset {})", after - 1),
                    };
                    return Err(corrupt(offset, format!("{reason}, and {why}: not a torn write")));
                }
            }
            if end > offset {
                // A torn write: the last write landed only in part (a prefix of it, or some
                // of its sectors), and was never synced.
                torn =
                    Some(TornWrite { end: end as u64, at_end_of_file: record_end >= bytes.len() });
            }
            break;
        }
        if is_last {
            // A segment whose leading hard state was torn off is created again as well.
            let valid_len = if offset > HEADER_LEN { offset as u64 } else { 0 };
            tail = Some(TailSegment {
                sequence: *sequence,
                format_version: framing.version,
                path,
                valid_len,
                torn,
                file_len: bytes.len() as u64,
            });
        }
    }
    let base = replay.base.unwrap_or_default();
    let last_index = LogIndex(base.0 + replay.entries.len() as u64);
    let snapshot_index = snapshot.as_ref().map_or(LogIndex(0), |s| s.meta.last_included.index);
    if replay.hard_state.commit_index > last_index.max(snapshot_index) {
        return Err(StorageError::Corrupt {
            detail: format!(
                "the write-ahead log in {} says index {} is committed but holds entries only up \
                 to {last_index} (snapshot through {snapshot_index})",
                dir.display(),
                replay.hard_state.commit_index,
            ),
        });
    }
    Ok(Recovered {
        state: InitialState {
            hard_state: replay.hard_state,
            snapshot,
            entries: replay.entries,
            members: replay.members,
        },
        tail,
        segment_last_index: replay.segment_last_index,
    })
}

/// What lies after a failing record, as far as whole records of this segment tell.
#[derive(Clone, Copy, Debug)]
struct AfterFailure {
    /// The offset of a whole record written when the log was already durable past the
    /// failing record (its offset minus its distance back to the durable end lies after the
    /// failure): the failure is then in synced bytes, damage, not a torn write. (Only writes
    /// not yet synced can be torn, and a record tells where the durable end was.)
    later_write: Option<usize>,
    /// Just after the last whole record of this segment that follows the failure (all of the
    /// torn write, when there is no later one).
    own_records_end: Option<usize>,
}

/// Scans every offset after `failed_at` for whole records of this segment (a record's
/// prefix checksum is seeded with its segment, so bytes of another segment never match).
fn scan_after_failure(
    bytes: &[u8],
    failed_at: usize,
    framing: Framing,
    max_body_len: usize,
) -> AfterFailure {
    let prefix_len = framing.prefix_len();
    let mut found = AfterFailure { later_write: None, own_records_end: None };
    let mut at = failed_at + 1;
    while at + prefix_len <= bytes.len() {
        // A record prefix holds a non-zero length: skip runs of zeros, up to where a prefix
        // could still reach the next non-zero byte.
        let Some(next_nonzero) = bytes[at..].iter().position(|byte| *byte != 0) else {
            break;
        };
        at = at.max((at + next_nonzero).saturating_sub(prefix_len - 1));
        match read_record(&bytes[at..], framing, max_body_len) {
            ReadOutcome::Record { length, durable_back, .. } => {
                let durable_end = at.checked_sub(durable_back as usize);
                if durable_end.is_none_or(|end| end > failed_at) {
                    found.later_write = Some(at);
                    return found;
                }
                at += length;
                found.own_records_end = Some(at);
            }
            _ => at += 1,
        }
    }
    found
}

/// Whether one of the sectors that `from..to` (a failing record, from its start) overlaps was
/// never reached by the write: its bytes from `from` on are all zero, what preallocation left
/// there (a sector lands whole or not at all). A write whose sectors landed out of order
/// looks like this; damage to written data (a flipped bit) does not.
fn has_unwritten_sector(bytes: &[u8], from: usize, to: usize) -> bool {
    let mut start = from - from % SECTOR_BYTES;
    while start < to.min(bytes.len()) {
        let end = (start + SECTOR_BYTES).min(bytes.len());
        if bytes[start.max(from)..end].iter().all(|byte| *byte == 0) {
            return true;
        }
        start = end;
    }
    false
}

/// The offset just after the last non-zero byte of `bytes` at or after `from` (`from` when
/// they are all zero).
fn nonzero_end(bytes: &[u8], from: usize) -> usize {
    let from = from.min(bytes.len());
    bytes[from..].iter().rposition(|byte| *byte != 0).map_or(from, |last| from + last + 1)
}

/// Checks a segment's header and returns it.
fn check_header(
    bytes: &[u8],
    path: &Path,
    identity: WalIdentity,
    sequence: u64,
) -> Result<SegmentHeader, StorageError> {
    let corrupt = |reason: &str| StorageError::CorruptRecord {
        file: path.to_path_buf(),
        offset: 0,
        reason: reason.to_owned(),
    };
    if bytes.len() >= MAGIC.len() && bytes[..MAGIC.len()] != MAGIC {
        return Err(corrupt("not a write-ahead log segment (bad magic number)"));
    }
    if bytes.len() >= 12 {
        let mut version = [0u8; 4];
        version.copy_from_slice(&bytes[8..12]);
        let found = u32::from_le_bytes(version);
        if !(OLDEST_READABLE_VERSION..=FORMAT_VERSION).contains(&found) {
            return Err(StorageError::UnsupportedVersion {
                file: path.to_path_buf(),
                found,
                supported: FORMAT_VERSION,
            });
        }
    }
    let header = match SegmentHeader::decode(bytes) {
        Ok(header) => header,
        Err(HeaderError::Short) => return Err(corrupt("the segment ends inside its header")),
        Err(HeaderError::BadMagic) => return Err(corrupt("not a write-ahead log segment")),
        Err(HeaderError::BadChecksum) => {
            return Err(corrupt("the header's checksum does not match"));
        }
        Err(HeaderError::UnknownFlags(flags)) => {
            return Err(corrupt(&format!(
                "the header has flags {flags:#x}, which this build does not know"
            )));
        }
    };
    if header.node_id != identity.node_id.0 || header.cluster_id != identity.cluster_id {
        return Err(StorageError::ForeignData {
            file: path.to_path_buf(),
            expected_node: identity.node_id.0,
            expected_cluster: identity.cluster_id,
            found_node: header.node_id,
            found_cluster: header.cluster_id,
        });
    }
    if header.sequence != sequence {
        return Err(corrupt(&format!(
            "the header says segment {} but the file name says {sequence}",
            header.sequence
        )));
    }
    Ok(header)
}

impl Replay {
    /// Replays one record of segment `sequence`: entries replace any stored suffix from their
    /// index; a log reset drops every entry before it; the last hard state wins.
    fn apply(&mut self, sequence: u64, record: Record) -> Result<(), String> {
        let index = match &record {
            Record::Entry(entry) => Some(entry.index),
            Record::LogReset(base) => Some(base.index),
            Record::HardState(_) | Record::Members(_) => None,
        };
        if let Some(index) = index.filter(|index| *index > MAX_INDEX) {
            // No log reaches it (peers' larger indexes are refused), and counting on from it
            // would overflow.
            return Err(format!("index {index} is above the largest log index, {MAX_INDEX}"));
        }
        match record {
            Record::Entry(entry) => {
                if self.base.is_none() {
                    self.base = Some(entry.index.prev());
                    self.base_inferred = true;
                }
                let mut base = self.base.unwrap_or_default();
                if self.base_inferred && entry.index <= base && entry.index.0 > 0 {
                    // The entries found so far were replaced from an index whose own segment
                    // compaction removed (a snapshot covers it): the log restarts here.
                    self.entries.clear();
                    base = entry.index.prev();
                    self.base = Some(base);
                }
                let next = base.0 + self.entries.len() as u64 + 1;
                if entry.index <= base || entry.index.0 > next {
                    return Err(format!(
                        "entry {} does not continue the log of indexes {}..{}",
                        entry.log_id(),
                        base.0 + 1,
                        next
                    ));
                }
                self.entries.truncate((entry.index.0 - base.0 - 1) as usize);
                let last = self.segment_last_index.entry(sequence).or_default();
                *last = (*last).max(entry.index);
                self.entries.push(entry);
            }
            Record::HardState(hard_state) => self.hard_state = hard_state,
            Record::Members(members) => self.members = Some(members),
            Record::LogReset(reset) => {
                self.entries.clear();
                self.base = Some(reset.index);
                self.base_inferred = false;
                // Nothing before this record is part of the log any more.
                for last in self.segment_last_index.values_mut() {
                    *last = LogIndex(0);
                }
                self.segment_last_index.insert(sequence, reset.index);
            }
        }
        Ok(())
    }
}
