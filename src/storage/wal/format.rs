//! The write-ahead log's on-disk format: segment headers and checksummed records. The
//! byte-level specification is `docs/wal-format.md`; keep the two in step.
//!
//! All integers are little-endian. A segment is a header followed by records:
//!
//! ```text
//! header:  magic "RAFTWAL\0" (8) | format version u32 | flags u32 (bit 0: recycled)
//!          | node id u64 | cluster id u64 | segment sequence u64 | crc32c of the above u32
//! record:  body length u32 | crc32c of body u32 | bytes back to the durable end u32
//!          | crc32c of (segment sequence u64, then the previous 12 bytes) u32 | body
//! body:    kind u8, then for kind 1 (entry): term u64 | index u64 | payload kind u8
//!          (0 blank, 1 command, 2 configuration) | the command's bytes, or the
//!          configuration's encoding (`core/configuration_encoding.rs`), to the body's end;
//!          for kind 2 (hard state): term u64 | has vote u8 | voted for u64 | commit u64;
//!          for kind 3 (log reset): base term u64 | base index u64;
//!          for kind 4 (members): count u32 | that many node ids u64, strictly increasing
//! ```
//!
//! Segments may be preallocated with zeros after their records: a record's length is never 0,
//! so a zero record prefix marks the end of the records.
//!
//! Format version 1 had a 12-byte record prefix (no durable distance, and a prefix checksum over
//! the length and body checksum alone). This build still reads version-1 segments, and writes
//! version 2 only: [`Framing`] says which one a segment uses.

use bytes::Bytes;

use crate::config::MAX_MEMBERS;
use crate::core::Configuration;
use crate::hard_state::HardState;
use crate::message::{Entry, EntryPayload};
use crate::types::{LogId, LogIndex, NodeId, Term};

/// The first eight bytes of every segment.
pub(crate) const MAGIC: [u8; 8] = *b"RAFTWAL\0";
/// The format version this build writes.
pub(crate) const FORMAT_VERSION: u32 = 2;
/// The oldest format version this build reads (it never appends to a segment of it).
pub(crate) const OLDEST_READABLE_VERSION: u32 = 1;
/// Bytes in a segment header.
pub(crate) const HEADER_LEN: usize = 8 + 4 + 4 + 8 + 8 + 8 + 4;
/// Bytes before a record's body in the current format: length, body checksum, how many bytes
/// before the record the log was known to be durable when it was written (so recovery can
/// tell the bytes of writes that may not have been synced from those that were), and a
/// checksum of those three seeded with the segment's sequence (so a
/// damaged length is never mistaken for a record cut short by a crash, and a record is never
/// read as part of another segment).
pub(crate) const RECORD_PREFIX_LEN: usize = 16;
/// The record prefix of format version 1: length, body checksum, checksum of those two.
const V1_RECORD_PREFIX_LEN: usize = 12;
/// Every record starts within this many bytes of the durable end, so that the distance fits
/// its u32 field: the log syncs before a batch grows past it.
pub(crate) const MAX_DURABLE_BACK: usize = 1 << 30;
/// Bytes of an entry record's body besides the command.
pub(crate) const ENTRY_BODY_OVERHEAD: usize = 1 + 8 + 8 + 1;

const KIND_ENTRY: u8 = 1;
const KIND_HARD_STATE: u8 = 2;
const KIND_LOG_RESET: u8 = 3;
const HARD_STATE_BODY_LEN: usize = 1 + 8 + 1 + 8 + 8;
const LOG_RESET_BODY_LEN: usize = 1 + 8 + 8;
const KIND_MEMBERS: u8 = 4;
/// An entry record's payload kinds.
const PAYLOAD_BLANK: u8 = 0;
const PAYLOAD_COMMAND: u8 = 1;
const PAYLOAD_CONFIGURATION: u8 = 2;

/// Who a segment belongs to, and its place in the log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct SegmentHeader {
    pub(crate) format_version: u32,
    pub(crate) node_id: u64,
    pub(crate) cluster_id: u64,
    pub(crate) sequence: u64,
    /// The file held an earlier segment (compaction handed it back for reuse): after this
    /// segment's records come that segment's stale bytes, not zeros.
    pub(crate) recycled: bool,
}

/// Header flag: the segment reuses an older segment's file.
const FLAG_RECYCLED: u32 = 1;

/// Why a header could not be read.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum HeaderError {
    /// Fewer bytes than a header (a segment whose creation a crash interrupted).
    Short,
    /// Not a segment of this log format.
    BadMagic,
    /// The header's checksum does not match.
    BadChecksum,
    /// Flags this build does not know (a newer build's feature).
    UnknownFlags(u32),
}

impl SegmentHeader {
    pub(crate) fn encode(&self) -> [u8; HEADER_LEN] {
        let mut bytes = [0u8; HEADER_LEN];
        bytes[0..8].copy_from_slice(&MAGIC);
        bytes[8..12].copy_from_slice(&self.format_version.to_le_bytes());
        let flags = if self.recycled { FLAG_RECYCLED } else { 0 };
        bytes[12..16].copy_from_slice(&flags.to_le_bytes());
        bytes[16..24].copy_from_slice(&self.node_id.to_le_bytes());
        bytes[24..32].copy_from_slice(&self.cluster_id.to_le_bytes());
        bytes[32..40].copy_from_slice(&self.sequence.to_le_bytes());
        let checksum = crc32c::crc32c(&bytes[..40]);
        bytes[40..44].copy_from_slice(&checksum.to_le_bytes());
        bytes
    }

    pub(crate) fn decode(bytes: &[u8]) -> Result<SegmentHeader, HeaderError> {
        let header = bytes.get(..HEADER_LEN).ok_or(HeaderError::Short)?;
        if header[0..8] != MAGIC {
            return Err(HeaderError::BadMagic);
        }
        if crc32c::crc32c(&header[..40]) != read_u32(header, 40) {
            return Err(HeaderError::BadChecksum);
        }
        let format_version = read_u32(header, 8);
        // Version 1 wrote these bytes as 0 and ignored them.
        let flags = if format_version >= 2 { read_u32(header, 12) } else { 0 };
        if flags & !FLAG_RECYCLED != 0 {
            return Err(HeaderError::UnknownFlags(flags));
        }
        Ok(SegmentHeader {
            format_version,
            node_id: read_u64(header, 16),
            cluster_id: read_u64(header, 24),
            sequence: read_u64(header, 32),
            recycled: flags & FLAG_RECYCLED != 0,
        })
    }
}

/// One record of the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Record {
    Entry(Entry),
    HardState(HardState),
    /// Every entry before this record is gone: the log continues after `base`, which a stored
    /// snapshot covers (a follower installed a snapshot its log did not match).
    LogReset(LogId),
    /// The voting members the node was started with (sorted, no duplicates).
    Members(Vec<NodeId>),
}

/// How one segment frames its records: by its format version, and (from version 2) by its
/// sequence, which seeds every record prefix's checksum.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Framing {
    pub(crate) version: u32,
    pub(crate) sequence: u64,
}

impl Framing {
    /// The framing this build writes segment `sequence` with.
    pub(crate) fn current(sequence: u64) -> Framing {
        Framing { version: FORMAT_VERSION, sequence }
    }

    /// Bytes before a record's body.
    pub(crate) fn prefix_len(self) -> usize {
        if self.version == 1 { V1_RECORD_PREFIX_LEN } else { RECORD_PREFIX_LEN }
    }

    /// The checksum that closes a record prefix, over the prefix's other bytes.
    fn prefix_checksum(self, prefix: &[u8]) -> u32 {
        if self.version == 1 {
            return crc32c::crc32c(&prefix[..8]);
        }
        crc32c::crc32c_append(crc32c::crc32c(&self.sequence.to_le_bytes()), &prefix[..12])
    }
}

/// Where the records encoded into a write buffer go: segment `sequence`, the buffer starting
/// `durable_gap` bytes after the end of what the log knew to be durable when encoding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Placement {
    pub(crate) sequence: u64,
    pub(crate) durable_gap: u64,
}

impl Placement {
    /// A buffer written right at the durable end (nothing in flight before it), as one write
    /// whose records' offsets are their positions in it.
    pub(crate) fn at_durable_end(sequence: u64) -> Placement {
        Placement { sequence, durable_gap: 0 }
    }
}

/// Appends the encoding of an entry record to `buffer`, which holds one write from its start:
/// each record's prefix says how far back from it the log was known durable (its position in
/// the buffer plus `place.durable_gap`).
pub(crate) fn encode_entry(entry: &Entry, place: Placement, buffer: &mut Vec<u8>) {
    let start = begin_record(buffer);
    buffer.push(KIND_ENTRY);
    buffer.extend_from_slice(&entry.term.0.to_le_bytes());
    buffer.extend_from_slice(&entry.index.0.to_le_bytes());
    match &entry.payload {
        EntryPayload::Blank => buffer.push(PAYLOAD_BLANK),
        EntryPayload::Command(command) => {
            buffer.push(PAYLOAD_COMMAND);
            buffer.extend_from_slice(command);
        }
        EntryPayload::Configuration(configuration) => {
            buffer.push(PAYLOAD_CONFIGURATION);
            configuration.encode_into(buffer);
        }
    }
    finish_record(buffer, start, place);
}

/// Appends the encoding of a hard-state record to `buffer` (one write, as for
/// [`encode_entry`]).
pub(crate) fn encode_hard_state(hard_state: &HardState, place: Placement, buffer: &mut Vec<u8>) {
    let start = begin_record(buffer);
    buffer.push(KIND_HARD_STATE);
    buffer.extend_from_slice(&hard_state.term.0.to_le_bytes());
    buffer.push(u8::from(hard_state.voted_for.is_some()));
    buffer.extend_from_slice(&hard_state.voted_for.map_or(0, |id| id.0).to_le_bytes());
    buffer.extend_from_slice(&hard_state.commit_index.0.to_le_bytes());
    finish_record(buffer, start, place);
}

/// Appends the encoding of a members record to `buffer` (one write, as for [`encode_entry`]).
/// `members` are sorted, without duplicates, and at most [`MAX_MEMBERS`].
pub(crate) fn encode_members(members: &[NodeId], place: Placement, buffer: &mut Vec<u8>) {
    assert!(
        !members.is_empty()
            && members.len() <= MAX_MEMBERS
            && members.windows(2).all(|pair| pair[0] < pair[1]),
        "a members record lists 1 to {MAX_MEMBERS} sorted, distinct ids (the node checks them first)"
    );
    let start = begin_record(buffer);
    buffer.push(KIND_MEMBERS);
    buffer.extend_from_slice(&(members.len() as u32).to_le_bytes());
    for member in members {
        buffer.extend_from_slice(&member.0.to_le_bytes());
    }
    finish_record(buffer, start, place);
}

/// Appends the encoding of a log-reset record to `buffer` (one write, as for
/// [`encode_entry`]).
pub(crate) fn encode_log_reset(base: LogId, place: Placement, buffer: &mut Vec<u8>) {
    let start = begin_record(buffer);
    buffer.push(KIND_LOG_RESET);
    buffer.extend_from_slice(&base.term.0.to_le_bytes());
    buffer.extend_from_slice(&base.index.0.to_le_bytes());
    finish_record(buffer, start, place);
}

fn begin_record(buffer: &mut Vec<u8>) -> usize {
    let start = buffer.len();
    buffer.extend_from_slice(&[0u8; RECORD_PREFIX_LEN]);
    start
}

fn finish_record(buffer: &mut [u8], start: usize, place: Placement) {
    let durable_back = place.durable_gap + start as u64;
    debug_assert!(
        durable_back < MAX_DURABLE_BACK as u64,
        "a record starts {durable_back} bytes after the durable end"
    );
    let body = &buffer[start + RECORD_PREFIX_LEN..];
    let length = u32::try_from(body.len()).unwrap_or(u32::MAX);
    let checksum = crc32c::crc32c(body);
    let durable_back = u32::try_from(durable_back).unwrap_or(u32::MAX);
    buffer[start..start + 4].copy_from_slice(&length.to_le_bytes());
    buffer[start + 4..start + 8].copy_from_slice(&checksum.to_le_bytes());
    buffer[start + 8..start + 12].copy_from_slice(&durable_back.to_le_bytes());
    let prefix_checksum =
        Framing::current(place.sequence).prefix_checksum(&buffer[start..start + RECORD_PREFIX_LEN]);
    buffer[start + 12..start + 16].copy_from_slice(&prefix_checksum.to_le_bytes());
}

/// What reading one record from the front of `bytes` found.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum ReadOutcome {
    /// A record, its encoded length, and how many bytes before it the log was known durable
    /// when it was written (0 in format version 1, which does not record it).
    Record { record: Record, length: usize, durable_back: u32 },
    /// The bytes end inside the record (whose length checked out): a write a crash cut short
    /// (only valid at the tail).
    Incomplete,
    /// The record is complete but its checksum fails (a torn write at the tail, otherwise
    /// corruption).
    BadChecksum { length: usize },
    /// The prefix's own checksum fails: a damaged length, or a prefix a crash cut short
    /// (in preallocated space, the bytes the write did not reach are zeros).
    BadPrefix,
    /// The record cannot be a record of this log: a length over the maximum, or a body whose
    /// checksum matches but that does not decode.
    Invalid(String),
}

/// Reads the record at the front of `bytes`, framed by `framing`; `max_body_len` bounds what a
/// length may claim.
pub(crate) fn read_record(bytes: &[u8], framing: Framing, max_body_len: usize) -> ReadOutcome {
    let prefix_len = framing.prefix_len();
    if bytes.len() < prefix_len {
        return ReadOutcome::Incomplete;
    }
    if framing.prefix_checksum(bytes) != read_u32(bytes, prefix_len - 4) {
        return ReadOutcome::BadPrefix;
    }
    let durable_back = if framing.version == 1 { 0 } else { read_u32(bytes, 8) };
    let body_len = read_u32(bytes, 0) as usize;
    if body_len > max_body_len {
        return ReadOutcome::Invalid(format!(
            "record length {body_len} exceeds the maximum of {max_body_len}"
        ));
    }
    let total = prefix_len + body_len;
    let Some(body) = bytes.get(prefix_len..total) else {
        return ReadOutcome::Incomplete;
    };
    if crc32c::crc32c(body) != read_u32(bytes, 4) {
        return ReadOutcome::BadChecksum { length: total };
    }
    match decode_body(body) {
        Ok(record) => ReadOutcome::Record { record, length: total, durable_back },
        Err(reason) => ReadOutcome::Invalid(reason),
    }
}

fn decode_body(body: &[u8]) -> Result<Record, String> {
    match body.first() {
        Some(&KIND_ENTRY) if body.len() >= ENTRY_BODY_OVERHEAD => {
            let term = Term(read_u64(body, 1));
            let index = LogIndex(read_u64(body, 9));
            let rest = &body[ENTRY_BODY_OVERHEAD..];
            let payload = match body[17] {
                PAYLOAD_BLANK if rest.is_empty() => EntryPayload::Blank,
                PAYLOAD_COMMAND => EntryPayload::Command(Bytes::copy_from_slice(rest)),
                PAYLOAD_CONFIGURATION => EntryPayload::Configuration(
                    Configuration::decode(rest)
                        .map_err(|problem| format!("entry {index}: {problem}"))?,
                ),
                other => return Err(format!("entry payload kind {other} is unknown")),
            };
            Ok(Record::Entry(Entry { term, index, payload }))
        }
        Some(&KIND_HARD_STATE) if body.len() == HARD_STATE_BODY_LEN => {
            let voted_for = match body[9] {
                0 if read_u64(body, 10) == 0 => None,
                0 => return Err(String::from("hard state has a voted-for value but no vote flag")),
                1 => Some(NodeId(read_u64(body, 10))),
                other => return Err(format!("hard state vote flag {other} is invalid")),
            };
            Ok(Record::HardState(HardState {
                term: Term(read_u64(body, 1)),
                voted_for,
                commit_index: LogIndex(read_u64(body, 18)),
            }))
        }
        Some(&KIND_LOG_RESET) if body.len() == LOG_RESET_BODY_LEN => {
            Ok(Record::LogReset(LogId::new(Term(read_u64(body, 1)), LogIndex(read_u64(body, 9)))))
        }
        Some(&KIND_MEMBERS) if body.len() >= 5 => {
            let count = read_u32(body, 1) as usize;
            if count == 0 || count > MAX_MEMBERS || body.len() != 5 + 8 * count {
                return Err(format!(
                    "members record of {} bytes cannot list {count} members",
                    body.len()
                ));
            }
            let members: Vec<NodeId> =
                (0..count).map(|position| NodeId(read_u64(body, 5 + 8 * position))).collect();
            if !members.windows(2).all(|pair| pair[0] < pair[1]) {
                return Err(String::from("members record lists ids out of order or twice"));
            }
            Ok(Record::Members(members))
        }
        Some(kind) => Err(format!("record kind {kind} with a {}-byte body is unknown", body.len())),
        None => Err(String::from("empty record body")),
    }
}

fn read_u32(bytes: &[u8], offset: usize) -> u32 {
    let mut word = [0u8; 4];
    word.copy_from_slice(&bytes[offset..offset + 4]);
    u32::from_le_bytes(word)
}

fn read_u64(bytes: &[u8], offset: usize) -> u64 {
    let mut word = [0u8; 8];
    word.copy_from_slice(&bytes[offset..offset + 8]);
    u64::from_le_bytes(word)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(term: u64, index: u64, command: Option<&[u8]>) -> Entry {
        Entry {
            term: Term(term),
            index: LogIndex(index),
            payload: command.map_or(EntryPayload::Blank, |bytes| {
                EntryPayload::Command(Bytes::copy_from_slice(bytes))
            }),
        }
    }

    #[test]
    fn records_round_trip() {
        let records = [
            Record::Entry(entry(3, 7, Some(b"hello"))),
            Record::Entry(entry(3, 8, None)),
            Record::Entry(entry(4, 9, Some(b""))),
            Record::HardState(HardState {
                term: Term(4),
                voted_for: Some(NodeId(2)),
                commit_index: LogIndex(8),
            }),
            Record::HardState(HardState::default()),
            Record::LogReset(LogId::new(Term(4), LogIndex(1000))),
            Record::Members(vec![NodeId(1), NodeId(2), NodeId(7)]),
        ];
        let mut buffer = Vec::new();
        for record in &records {
            match record {
                Record::Entry(entry) => {
                    encode_entry(entry, Placement::at_durable_end(5), &mut buffer)
                }
                Record::HardState(hard_state) => {
                    encode_hard_state(hard_state, Placement::at_durable_end(5), &mut buffer)
                }
                Record::LogReset(base) => {
                    encode_log_reset(*base, Placement::at_durable_end(5), &mut buffer)
                }
                Record::Members(members) => {
                    encode_members(members, Placement::at_durable_end(5), &mut buffer)
                }
            }
        }
        let mut offset = 0;
        for expected in &records {
            match read_record(&buffer[offset..], Framing::current(5), 1024) {
                ReadOutcome::Record { record, length, durable_back } => {
                    assert_eq!(&record, expected);
                    assert_eq!(durable_back as usize, offset, "each record knows the durable end");
                    offset += length;
                }
                other => panic!("expected a record, got {other:?}"),
            }
        }
        assert_eq!(offset, buffer.len());
    }

    #[test]
    fn a_members_record_with_a_bad_count_or_order_is_refused() {
        let body = |count: u32, ids: &[u64]| {
            let mut body = vec![KIND_MEMBERS];
            body.extend_from_slice(&count.to_le_bytes());
            for id in ids {
                body.extend_from_slice(&id.to_le_bytes());
            }
            body
        };
        assert_eq!(decode_body(&body(2, &[1, 3])), Ok(Record::Members(vec![NodeId(1), NodeId(3)])));
        assert!(decode_body(&body(0, &[])).is_err(), "no members");
        assert!(decode_body(&body(3, &[1, 3])).is_err(), "count past the body");
        assert!(decode_body(&body(u32::MAX, &[1])).is_err(), "a huge count allocates nothing");
        assert!(decode_body(&body(2, &[3, 1])).is_err(), "out of order");
        assert!(decode_body(&body(2, &[3, 3])).is_err(), "twice");
    }

    #[test]
    fn a_record_of_another_segment_does_not_read() {
        let mut buffer = Vec::new();
        encode_entry(&entry(1, 1, Some(b"payload")), Placement::at_durable_end(5), &mut buffer);
        assert!(matches!(
            read_record(&buffer, Framing::current(5), 1024),
            ReadOutcome::Record { .. }
        ));
        assert_eq!(read_record(&buffer, Framing::current(6), 1024), ReadOutcome::BadPrefix);
    }

    #[test]
    fn version_1_records_still_read() {
        // A version-1 record: length, body checksum, checksum of those 8 bytes, body.
        let body = [&[1u8][..], &7u64.to_le_bytes(), &9u64.to_le_bytes(), &[1], b"old"].concat();
        let length = u32::try_from(body.len()).expect("a short body").to_le_bytes();
        let head = [&length[..], &crc32c::crc32c(&body).to_le_bytes()].concat();
        let record = [&head[..], &crc32c::crc32c(&head).to_le_bytes(), &body].concat();
        let framing = Framing { version: 1, sequence: 3 };
        match read_record(&record, framing, 1024) {
            ReadOutcome::Record { record: Record::Entry(read), length, durable_back: 0 } => {
                assert_eq!(read, entry(7, 9, Some(b"old")));
                assert_eq!(length, record.len());
            }
            other => panic!("expected a version-1 record, got {other:?}"),
        }
        assert_eq!(read_record(&record, Framing::current(3), 1024), ReadOutcome::BadPrefix);
    }

    #[test]
    fn damaged_records_are_classified() {
        let mut buffer = Vec::new();
        encode_entry(&entry(1, 1, Some(b"payload")), Placement::at_durable_end(1), &mut buffer);
        let framing = Framing::current(1);
        for cut in 0..buffer.len() {
            let outcome = read_record(&buffer[..cut], framing, 1024);
            assert_eq!(outcome, ReadOutcome::Incomplete, "cut at {cut}");
        }
        let mut flipped = buffer.clone();
        flipped[RECORD_PREFIX_LEN + 3] ^= 0x10;
        assert!(matches!(read_record(&flipped, framing, 1024), ReadOutcome::BadChecksum { .. }));
        assert!(matches!(read_record(&buffer, framing, 4), ReadOutcome::Invalid(_)));
        let mut bad_length = buffer.clone();
        bad_length[2] ^= 0x40;
        assert_eq!(read_record(&bad_length, framing, 1 << 30), ReadOutcome::BadPrefix);
        let mut bad_offset = buffer.clone();
        bad_offset[9] ^= 0x01;
        assert_eq!(read_record(&bad_offset, framing, 1024), ReadOutcome::BadPrefix);
        let mut torn_prefix = buffer.clone();
        torn_prefix[5..].fill(0);
        assert_eq!(read_record(&torn_prefix, framing, 1024), ReadOutcome::BadPrefix);
    }

    #[test]
    fn headers_round_trip_and_reject_damage() {
        let header = SegmentHeader {
            format_version: FORMAT_VERSION,
            node_id: 3,
            cluster_id: 9,
            sequence: 12,
            recycled: false,
        };
        let bytes = header.encode();
        assert_eq!(SegmentHeader::decode(&bytes), Ok(header));
        let recycled = SegmentHeader { recycled: true, ..header };
        assert_eq!(SegmentHeader::decode(&recycled.encode()), Ok(recycled));
        let mut unknown = bytes;
        unknown[13] = 1;
        let checksum = crc32c::crc32c(&unknown[..40]);
        unknown[40..44].copy_from_slice(&checksum.to_le_bytes());
        assert_eq!(SegmentHeader::decode(&unknown), Err(HeaderError::UnknownFlags(0x100)));
        assert_eq!(SegmentHeader::decode(&bytes[..10]), Err(HeaderError::Short));
        let mut bad = bytes;
        bad[20] ^= 1;
        assert_eq!(SegmentHeader::decode(&bad), Err(HeaderError::BadChecksum));
        bad = bytes;
        bad[0] = b'X';
        assert_eq!(SegmentHeader::decode(&bad), Err(HeaderError::BadMagic));
    }
}
