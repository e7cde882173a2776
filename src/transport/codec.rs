//! The wire encoding of [`Message`]s, for transports that cross a process boundary.
//!
//! An explicit, versioned little-endian record (no serialisation framework, so the format is
//! what this file says and nothing a dependency upgrade can change). Decoding checks every
//! length against the bytes present before it allocates or slices, rejects unknown versions,
//! kinds and flags and trailing bytes, and never panics: bad input from the network is an
//! error, not a crash. Entry payloads are sliced out of the input without copying.
//!
//! ```text
//! message: version u8 (5) | kind u8 | from u64 | to u64 | term u64 | body
//! kind 1 RequestVote:                  last log term u64 | last log index u64
//!                                      | leadership transfer u8 (0 or 1)
//! kind 3 PreVote:                      last log term u64 | last log index u64
//! kind 2 RequestVoteResponse,
//! kind 4 PreVoteResponse:              granted u8 (0 or 1)
//! kind 5 AppendEntries:                prev term u64 | prev index u64 | leader commit u64
//!                                      | heartbeat round u64 | entry count u32 | entries
//!   entry:                             term u64 | index u64 | payload kind u8 (0 blank,
//!                                      1 command, 2 configuration) | payload length u32
//!                                      | the command, or the configuration's encoding
//!                                      (`core/configuration_encoding.rs`)
//! kind 6 AppendEntriesResponse
//!        (accepted):                   heartbeat round u64 | match index u64
//! kind 7 AppendEntriesResponse
//!        (rejected):                   heartbeat round u64 | rejected prev index u64
//!                                      | has conflict term u8 | conflict term u64
//!                                      | first index u64
//! kind 8 InstallSnapshot:              last included term u64 | last included index u64
//!                                      | configuration length u32 | its encoding
//!                                      | snapshot id u64 | total length u64 | checksum u32
//!                                      | offset u64 | chunk length u32 | chunk bytes
//! kind 9 InstallSnapshotResponse:      snapshot id u64 | last included term u64
//!                                      | last included index u64 | received u64
//!                                      | installed u8 | gap u8
//! kind 10 TimeoutNow:                  (no body)
//! kind 11 ReadIndex:                   request u64 | lease u8 (0 or 1)
//! kind 12 ReadIndexResponse:           request u64 | has read index u8 | read index term u64
//!                                      | read index u64
//! ```
//!
//! Kinds 8 and 9 were added within version 1: a build that predates them refuses them as
//! unknown kinds, and the cluster it is in has no snapshots to send.
//!
//! Version 2 changes no message: it is the version whose TCP handshake also carries the
//! fingerprint of the cluster's members, so a version-1 node and a version-2 node refuse each
//! other at the handshake, each naming both versions.
//!
//! Version 3 adds membership changes: configuration entries (payload kind 2), the full
//! configuration in `InstallSnapshot` (in place of a member list), the leadership-transfer
//! flag of `RequestVote`, and `TimeoutNow` (kind 10).
//!
//! Version 4 adds linearizable reads without log writes: the heartbeat round that every
//! `AppendEntries` carries and every answer echoes (a leader confirms its leadership for
//! ReadIndex reads by counting answers to a round), and a follower's `ReadIndex` request
//! (kind 11) with the leader's answer (kind 12). A read index, when present, obeys the same
//! bound as every other index (`core/message_bounds.rs`).
//!
//! Version 5 streams snapshots: `InstallSnapshot` names the snapshot (its id, derived from
//! what it covers, its length and its crc32c checksum, which it also carries: a decoder
//! refuses an id that does not match) so that a follower never puts chunks of two transfers
//! together and checks the checksum before restoring, and `InstallSnapshotResponse` names the
//! snapshot it answers about and says whether the chunk it answers came after a gap.

use bytes::Bytes;

use crate::core::Configuration;
use crate::message::{
    AppendResponse, ConflictHint, ENTRY_FRAMING_BYTES, Entry, EntryPayload, Message, MessageBody,
};
use crate::snapshot::{Snapshot, SnapshotId, SnapshotMeta};
use crate::types::{HeartbeatRound, LogId, LogIndex, NodeId, ReadId, Term};

/// The wire format version this build writes and reads.
pub const WIRE_FORMAT_VERSION: u8 = 5;

/// Bytes of an entry besides its command.
const ENTRY_OVERHEAD: usize = ENTRY_FRAMING_BYTES;
/// Bytes of every message before its body: version, kind, from, to and term.
const HEADER_BYTES: usize = 1 + 1 + 8 + 8 + 8;
/// An entry's payload kinds.
const PAYLOAD_BLANK: u8 = 0;
const PAYLOAD_COMMAND: u8 = 1;
const PAYLOAD_CONFIGURATION: u8 = 2;

/// Why bytes could not be decoded as a message.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The bytes end before the message does.
    #[error(
        "message truncated: {field} needs {needed} bytes at offset {offset}, {available} remain"
    )]
    Truncated {
        /// What was being read.
        field: &'static str,
        /// Where.
        offset: usize,
        /// How many bytes it needs.
        needed: usize,
        /// How many are left.
        available: usize,
    },
    /// A wire format version this build does not know.
    #[error("unknown wire format version {0} (this build speaks version {WIRE_FORMAT_VERSION})")]
    UnknownVersion(u8),
    /// A message kind this version does not define.
    #[error("unknown message kind {0}")]
    UnknownKind(u8),
    /// A flag byte that is neither 0 nor 1, or a payload kind that does not exist.
    #[error("invalid {field} byte {value}")]
    InvalidByte {
        /// Which field.
        field: &'static str,
        /// The byte found.
        value: u8,
    },
    /// A field whose bytes do not make a valid value.
    #[error("invalid {field}: {reason}")]
    Invalid {
        /// Which field.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// Bytes left over after a complete message.
    #[error("{0} trailing bytes after the message")]
    TrailingBytes(usize),
}

/// The length of `message`'s encoding (what [`encode_message`] appends), computed without
/// encoding it: the simulator charges links by it.
pub fn encoded_len(message: &Message) -> usize {
    let body = match &message.body {
        MessageBody::RequestVote { .. } => 8 + 8 + 1,
        MessageBody::PreVote { .. } => 8 + 8,
        MessageBody::RequestVoteResponse { .. } | MessageBody::PreVoteResponse { .. } => 1,
        MessageBody::TimeoutNow => 0,
        MessageBody::ReadIndex { .. } => 8 + 1,
        MessageBody::ReadIndexResponse { .. } => 8 + 1 + 8 + 8,
        MessageBody::AppendEntries { entries, .. } => {
            8 + 8 + 8 + 8 + 4 + entries.iter().map(Entry::encoded_len).sum::<usize>()
        }
        MessageBody::AppendEntriesResponse { result: AppendResponse::Accepted { .. }, .. } => 8 + 8,
        MessageBody::AppendEntriesResponse { result: AppendResponse::Rejected { .. }, .. } => {
            8 + 8 + 1 + 8 + 8
        }
        MessageBody::InstallSnapshot { snapshot, data, .. } => {
            8 + 8 + 4 + snapshot.meta.configuration.encoded_len() + 8 + 8 + 4 + 8 + 4 + data.len()
        }
        MessageBody::InstallSnapshotResponse { .. } => 8 + 8 + 8 + 8 + 1 + 1,
    };
    HEADER_BYTES + body
}

/// Room a snapshot chunk's message leaves for the cluster configuration it carries: the
/// members' ids and addresses (a few dozen bytes each), so a few hundred members.
pub(crate) const CONFIGURATION_ALLOWANCE: usize = 64 * 1024;

/// The largest messages a node running with `config` sends, as encoded: for each limit that
/// sets one's size, `(field name, field value, largest message bytes)`.
///
/// An AppendEntries carries at most `max_append_bytes` of payload, or one entry of up to
/// `max_entry_bytes` when that is larger (the first entry is always sent), in at most
/// `max_append_entries` entries of [`ENTRY_OVERHEAD`] bytes each; an InstallSnapshot carries
/// one chunk of at most `snapshot_chunk_bytes` and the configuration (counted as
/// [`CONFIGURATION_ALLOWANCE`]).
pub(crate) fn largest_messages(config: &crate::Config) -> [(&'static str, usize, usize); 3] {
    let append_overhead = HEADER_BYTES + 8 + 8 + 8 + 8 + 4;
    let framing = config.max_append_entries.saturating_mul(ENTRY_OVERHEAD);
    let append = |payload: usize| append_overhead.saturating_add(framing).saturating_add(payload);
    let snapshot_overhead = HEADER_BYTES + 8 + 8 + 4 + 8 + 8 + 4 + 8 + 4 + CONFIGURATION_ALLOWANCE;
    [
        ("max_entry_bytes", config.max_entry_bytes, append(config.max_entry_bytes)),
        ("max_append_bytes", config.max_append_bytes, append(config.max_append_bytes)),
        (
            "snapshot_chunk_bytes",
            config.snapshot_chunk_bytes,
            snapshot_overhead.saturating_add(config.snapshot_chunk_bytes),
        ),
    ]
}

/// Appends the encoding of `message` to `buffer`.
pub fn encode_message(message: &Message, buffer: &mut Vec<u8>) {
    if let Some(chunk) = encode_message_but_chunk(message, buffer) {
        buffer.extend_from_slice(chunk);
    }
}

/// Appends the encoding of `message` to `buffer`, except, for an `InstallSnapshot`, the
/// chunk's bytes, which come last in the encoding: it returns them, for the caller to send
/// right after what it appended without copying them into `buffer`.
pub fn encode_message_but_chunk<'a>(
    message: &'a Message,
    buffer: &mut Vec<u8>,
) -> Option<&'a [u8]> {
    let kind = match &message.body {
        MessageBody::RequestVote { .. } => 1,
        MessageBody::RequestVoteResponse { .. } => 2,
        MessageBody::PreVote { .. } => 3,
        MessageBody::PreVoteResponse { .. } => 4,
        MessageBody::AppendEntries { .. } => 5,
        MessageBody::AppendEntriesResponse { result: AppendResponse::Accepted { .. }, .. } => 6,
        MessageBody::AppendEntriesResponse { result: AppendResponse::Rejected { .. }, .. } => 7,
        MessageBody::InstallSnapshot { .. } => 8,
        MessageBody::InstallSnapshotResponse { .. } => 9,
        MessageBody::TimeoutNow => 10,
        MessageBody::ReadIndex { .. } => 11,
        MessageBody::ReadIndexResponse { .. } => 12,
    };
    buffer.push(WIRE_FORMAT_VERSION);
    buffer.push(kind);
    put_u64(buffer, message.from.0);
    put_u64(buffer, message.to.0);
    put_u64(buffer, message.term.0);
    match &message.body {
        MessageBody::RequestVote { last_log_id, leadership_transfer } => {
            put_u64(buffer, last_log_id.term.0);
            put_u64(buffer, last_log_id.index.0);
            buffer.push(u8::from(*leadership_transfer));
        }
        MessageBody::PreVote { last_log_id } => {
            put_u64(buffer, last_log_id.term.0);
            put_u64(buffer, last_log_id.index.0);
        }
        MessageBody::TimeoutNow => {}
        MessageBody::ReadIndex { request, lease } => {
            put_u64(buffer, request.0);
            buffer.push(u8::from(*lease));
        }
        MessageBody::ReadIndexResponse { request, read_index } => {
            put_u64(buffer, request.0);
            buffer.push(u8::from(read_index.is_some()));
            let read_index = read_index.unwrap_or_default();
            put_u64(buffer, read_index.term.0);
            put_u64(buffer, read_index.index.0);
        }
        MessageBody::RequestVoteResponse { granted } | MessageBody::PreVoteResponse { granted } => {
            buffer.push(u8::from(*granted))
        }
        MessageBody::AppendEntries { prev_log_id, entries, leader_commit, round } => {
            put_u64(buffer, prev_log_id.term.0);
            put_u64(buffer, prev_log_id.index.0);
            put_u64(buffer, leader_commit.0);
            put_u64(buffer, round.0);
            // Config::validate keeps entry counts and sizes within 32 bits.
            debug_assert!(u32::try_from(entries.len()).is_ok());
            let count = u32::try_from(entries.len()).unwrap_or(u32::MAX);
            buffer.extend_from_slice(&count.to_le_bytes());
            for entry in entries.iter().take(count as usize) {
                put_u64(buffer, entry.term.0);
                put_u64(buffer, entry.index.0);
                let encoded_configuration;
                let (kind, payload): (u8, &[u8]) = match &entry.payload {
                    EntryPayload::Blank => (PAYLOAD_BLANK, &[]),
                    EntryPayload::Command(bytes) => (PAYLOAD_COMMAND, bytes),
                    EntryPayload::Configuration(configuration) => {
                        encoded_configuration = configuration.encode();
                        (PAYLOAD_CONFIGURATION, &encoded_configuration)
                    }
                };
                buffer.push(kind);
                debug_assert!(u32::try_from(payload.len()).is_ok());
                let length = u32::try_from(payload.len()).unwrap_or(u32::MAX);
                buffer.extend_from_slice(&length.to_le_bytes());
                buffer.extend_from_slice(&payload[..length as usize]);
            }
        }
        MessageBody::AppendEntriesResponse {
            result: AppendResponse::Accepted { match_index },
            round,
        } => {
            put_u64(buffer, round.0);
            put_u64(buffer, match_index.0);
        }
        MessageBody::AppendEntriesResponse {
            result: AppendResponse::Rejected { rejected_prev_index, hint },
            round,
        } => {
            put_u64(buffer, round.0);
            put_u64(buffer, rejected_prev_index.0);
            buffer.push(u8::from(hint.conflict_term.is_some()));
            put_u64(buffer, hint.conflict_term.map_or(0, |term| term.0));
            put_u64(buffer, hint.first_index.0);
        }
        MessageBody::InstallSnapshot { snapshot, offset, data } => {
            let meta = &snapshot.meta;
            put_u64(buffer, meta.last_included.term.0);
            put_u64(buffer, meta.last_included.index.0);
            // A configuration holds at most MAX_MEMBERS members of short addresses.
            let length = u32::try_from(meta.configuration.encoded_len()).unwrap_or(u32::MAX);
            buffer.extend_from_slice(&length.to_le_bytes());
            meta.configuration.encode_into(buffer);
            put_u64(buffer, snapshot.id.0);
            put_u64(buffer, snapshot.size);
            buffer.extend_from_slice(&snapshot.checksum.to_le_bytes());
            put_u64(buffer, *offset);
            // Config::validate keeps snapshot_chunk_bytes within 32 bits.
            debug_assert!(u32::try_from(data.len()).is_ok());
            let length = u32::try_from(data.len()).unwrap_or(u32::MAX);
            buffer.extend_from_slice(&length.to_le_bytes());
            return Some(&data[..length as usize]);
        }
        MessageBody::InstallSnapshotResponse {
            snapshot,
            last_included,
            received,
            installed,
            gap,
        } => {
            put_u64(buffer, snapshot.0);
            put_u64(buffer, last_included.term.0);
            put_u64(buffer, last_included.index.0);
            put_u64(buffer, *received);
            buffer.push(u8::from(*installed));
            buffer.push(u8::from(*gap));
        }
    }
    None
}

/// Decodes one message that fills `bytes` exactly. Entry payloads share `bytes`' memory.
pub fn decode_message(bytes: &Bytes) -> Result<Message, DecodeError> {
    let mut reader = Reader { bytes, offset: 0 };
    let version = reader.u8("version")?;
    if version != WIRE_FORMAT_VERSION {
        return Err(DecodeError::UnknownVersion(version));
    }
    let kind = reader.u8("kind")?;
    let from = NodeId(reader.u64("from")?);
    let to = NodeId(reader.u64("to")?);
    let term = Term(reader.u64("term")?);
    let body = match kind {
        1 => MessageBody::RequestVote {
            last_log_id: reader.log_id("last log id")?,
            leadership_transfer: reader.flag("leadership transfer")?,
        },
        3 => MessageBody::PreVote { last_log_id: reader.log_id("last log id")? },
        10 => MessageBody::TimeoutNow,
        11 => MessageBody::ReadIndex {
            request: ReadId(reader.u64("request")?),
            lease: reader.flag("lease")?,
        },
        12 => {
            let request = ReadId(reader.u64("request")?);
            let has_read_index = reader.flag("has read index")?;
            let read_index = reader.log_id("read index")?;
            MessageBody::ReadIndexResponse {
                request,
                read_index: has_read_index.then_some(read_index),
            }
        }
        2 => MessageBody::RequestVoteResponse { granted: reader.flag("granted")? },
        4 => MessageBody::PreVoteResponse { granted: reader.flag("granted")? },
        5 => {
            let prev_log_id = reader.log_id("prev log id")?;
            let leader_commit = LogIndex(reader.u64("leader commit")?);
            let round = HeartbeatRound(reader.u64("heartbeat round")?);
            let count = reader.u32("entry count")? as usize;
            // Never trust a count for an allocation: each entry takes at least its overhead.
            let available = reader.remaining();
            if count > available / ENTRY_OVERHEAD {
                return Err(DecodeError::Truncated {
                    field: "entries",
                    offset: reader.offset,
                    needed: count.saturating_mul(ENTRY_OVERHEAD),
                    available,
                });
            }
            let mut entries = Vec::with_capacity(count);
            for _ in 0..count {
                let entry_term = Term(reader.u64("entry term")?);
                let index = LogIndex(reader.u64("entry index")?);
                let payload_kind = reader.u8("payload kind")?;
                let length = reader.u32("command length")? as usize;
                let command = reader.slice("command", length)?;
                let payload = match payload_kind {
                    PAYLOAD_BLANK if length == 0 => EntryPayload::Blank,
                    PAYLOAD_COMMAND => EntryPayload::Command(command),
                    PAYLOAD_CONFIGURATION => {
                        EntryPayload::Configuration(Configuration::decode(&command).map_err(
                            |reason| DecodeError::Invalid { field: "configuration", reason },
                        )?)
                    }
                    value => return Err(DecodeError::InvalidByte { field: "payload kind", value }),
                };
                entries.push(Entry { term: entry_term, index, payload });
            }
            MessageBody::AppendEntries { prev_log_id, entries, leader_commit, round }
        }
        6 => {
            let round = HeartbeatRound(reader.u64("heartbeat round")?);
            let match_index = LogIndex(reader.u64("match index")?);
            MessageBody::AppendEntriesResponse {
                result: AppendResponse::Accepted { match_index },
                round,
            }
        }
        7 => {
            let round = HeartbeatRound(reader.u64("heartbeat round")?);
            let rejected_prev_index = LogIndex(reader.u64("rejected prev index")?);
            let has_conflict_term = reader.flag("has conflict term")?;
            let conflict_term = Term(reader.u64("conflict term")?);
            let first_index = LogIndex(reader.u64("first index")?);
            let hint = ConflictHint {
                conflict_term: has_conflict_term.then_some(conflict_term),
                first_index,
            };
            MessageBody::AppendEntriesResponse {
                result: AppendResponse::Rejected { rejected_prev_index, hint },
                round,
            }
        }
        8 => {
            let last_included = reader.log_id("last included")?;
            let length = reader.u32("configuration length")? as usize;
            let encoded = reader.slice("configuration", length)?;
            let configuration = Configuration::decode(&encoded)
                .map_err(|reason| DecodeError::Invalid { field: "configuration", reason })?;
            let id = SnapshotId(reader.u64("snapshot id")?);
            let total_len = reader.u64("total length")?;
            let checksum = reader.u32("checksum")?;
            let offset = reader.u64("offset")?;
            let length = reader.u32("chunk length")? as usize;
            let data = reader.slice("chunk", length)?;
            let snapshot =
                Snapshot::new(SnapshotMeta { last_included, configuration }, total_len, checksum);
            if snapshot.id != id {
                return Err(DecodeError::Invalid {
                    field: "snapshot id",
                    reason: format!("{id} does not name the snapshot described ({})", snapshot.id),
                });
            }
            MessageBody::InstallSnapshot { snapshot, offset, data }
        }
        9 => MessageBody::InstallSnapshotResponse {
            snapshot: SnapshotId(reader.u64("snapshot id")?),
            last_included: reader.log_id("last included")?,
            received: reader.u64("received")?,
            installed: reader.flag("installed")?,
            gap: reader.flag("gap")?,
        },
        other => return Err(DecodeError::UnknownKind(other)),
    };
    if reader.remaining() > 0 {
        return Err(DecodeError::TrailingBytes(reader.remaining()));
    }
    Ok(Message { from, to, term, body })
}

fn put_u64(buffer: &mut Vec<u8>, value: u64) {
    buffer.extend_from_slice(&value.to_le_bytes());
}

/// A cursor that checks every read against the bytes left.
struct Reader<'a> {
    bytes: &'a Bytes,
    offset: usize,
}

impl Reader<'_> {
    fn remaining(&self) -> usize {
        self.bytes.len() - self.offset
    }

    fn take(&mut self, field: &'static str, needed: usize) -> Result<&[u8], DecodeError> {
        let available = self.remaining();
        if needed > available {
            return Err(DecodeError::Truncated { field, offset: self.offset, needed, available });
        }
        let start = self.offset;
        self.offset += needed;
        Ok(&self.bytes[start..start + needed])
    }

    fn slice(&mut self, field: &'static str, length: usize) -> Result<Bytes, DecodeError> {
        let start = self.offset;
        self.take(field, length)?;
        Ok(self.bytes.slice(start..start + length))
    }

    fn u8(&mut self, field: &'static str) -> Result<u8, DecodeError> {
        Ok(self.take(field, 1)?[0])
    }

    fn u32(&mut self, field: &'static str) -> Result<u32, DecodeError> {
        let mut word = [0u8; 4];
        word.copy_from_slice(self.take(field, 4)?);
        Ok(u32::from_le_bytes(word))
    }

    fn u64(&mut self, field: &'static str) -> Result<u64, DecodeError> {
        let mut word = [0u8; 8];
        word.copy_from_slice(self.take(field, 8)?);
        Ok(u64::from_le_bytes(word))
    }

    fn flag(&mut self, field: &'static str) -> Result<bool, DecodeError> {
        match self.u8(field)? {
            0 => Ok(false),
            1 => Ok(true),
            value => Err(DecodeError::InvalidByte { field, value }),
        }
    }

    fn log_id(&mut self, field: &'static str) -> Result<LogId, DecodeError> {
        let term = Term(self.u64(field)?);
        let index = LogIndex(self.u64(field)?);
        Ok(LogId::new(term, index))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn every_kind_of_message() -> Vec<Message> {
        let message = |body| Message { from: NodeId(1), to: NodeId(2), term: Term(7), body };
        let log_id = LogId::new(Term(6), LogIndex(41));
        vec![
            message(MessageBody::RequestVote { last_log_id: log_id, leadership_transfer: true }),
            message(MessageBody::RequestVoteResponse { granted: true }),
            message(MessageBody::PreVote { last_log_id: log_id }),
            message(MessageBody::PreVoteResponse { granted: false }),
            message(MessageBody::TimeoutNow),
            message(MessageBody::ReadIndex { request: ReadId(17), lease: true }),
            message(MessageBody::ReadIndex { request: ReadId(u64::MAX), lease: false }),
            message(MessageBody::ReadIndexResponse {
                request: ReadId(17),
                read_index: Some(LogId::new(Term(7), LogIndex(44))),
            }),
            message(MessageBody::ReadIndexResponse { request: ReadId(18), read_index: None }),
            message(MessageBody::AppendEntries {
                prev_log_id: log_id,
                entries: vec![
                    Entry { term: Term(7), index: LogIndex(42), payload: EntryPayload::Blank },
                    Entry {
                        term: Term(7),
                        index: LogIndex(43),
                        payload: EntryPayload::Command(Bytes::from_static(b"set x=1")),
                    },
                    Entry {
                        term: Term(7),
                        index: LogIndex(44),
                        payload: EntryPayload::Command(Bytes::new()),
                    },
                ],
                leader_commit: LogIndex(40),
                round: HeartbeatRound(9),
            }),
            message(MessageBody::AppendEntries {
                prev_log_id: log_id,
                entries: Vec::new(),
                leader_commit: LogIndex(40),
                round: HeartbeatRound(u64::MAX),
            }),
            message(MessageBody::AppendEntriesResponse {
                result: AppendResponse::Accepted { match_index: LogIndex(44) },
                round: HeartbeatRound(u64::MAX),
            }),
            message(MessageBody::AppendEntriesResponse {
                result: AppendResponse::Rejected {
                    rejected_prev_index: LogIndex(41),
                    hint: ConflictHint { conflict_term: Some(Term(5)), first_index: LogIndex(30) },
                },
                round: HeartbeatRound(u64::MAX),
            }),
            message(MessageBody::AppendEntriesResponse {
                result: AppendResponse::Rejected {
                    rejected_prev_index: LogIndex(41),
                    hint: ConflictHint { conflict_term: None, first_index: LogIndex(12) },
                },
                round: HeartbeatRound(u64::MAX),
            }),
            message(MessageBody::InstallSnapshot {
                snapshot: Snapshot::new(
                    SnapshotMeta {
                        last_included: log_id,
                        configuration: Configuration::of_voters([NodeId(1), NodeId(2), NodeId(3)]),
                    },
                    3 << 20,
                    0xdead_beef,
                ),
                offset: 1 << 20,
                data: Bytes::from_static(b"chunk of state"),
            }),
            message(MessageBody::InstallSnapshotResponse {
                snapshot: SnapshotId(0x1234_5678_9abc_def0),
                last_included: log_id,
                received: 4096,
                installed: true,
                gap: true,
            }),
        ]
    }

    fn encoded(message: &Message) -> Bytes {
        let mut buffer = Vec::new();
        encode_message(message, &mut buffer);
        Bytes::from(buffer)
    }

    #[test]
    fn every_message_round_trips() {
        for message in every_kind_of_message() {
            assert_eq!(decode_message(&encoded(&message)), Ok(message));
        }
    }

    #[test]
    fn encoded_len_is_the_length_of_the_encoding() {
        for message in every_kind_of_message() {
            assert_eq!(encoded_len(&message), encoded(&message).len(), "{message:?}");
        }
    }

    #[test]
    fn every_truncation_and_any_trailing_byte_is_an_error() {
        for message in every_kind_of_message() {
            let bytes = encoded(&message);
            for cut in 0..bytes.len() {
                assert!(decode_message(&bytes.slice(..cut)).is_err(), "{message:?} cut at {cut}");
            }
            let mut longer = bytes.to_vec();
            longer.push(0);
            assert_eq!(decode_message(&Bytes::from(longer)), Err(DecodeError::TrailingBytes(1)));
        }
    }

    #[test]
    fn unknown_versions_kinds_and_flags_are_errors() {
        let bytes = encoded(&every_kind_of_message()[1]).to_vec();
        for other in [WIRE_FORMAT_VERSION - 1, WIRE_FORMAT_VERSION + 1] {
            let mut version = bytes.clone();
            version[0] = other;
            assert_eq!(
                decode_message(&Bytes::from(version)),
                Err(DecodeError::UnknownVersion(other))
            );
        }
        let mut kind = bytes.clone();
        kind[1] = 99;
        assert_eq!(decode_message(&Bytes::from(kind)), Err(DecodeError::UnknownKind(99)));
        let mut flag = bytes;
        let last = flag.len() - 1;
        flag[last] = 2;
        assert!(matches!(
            decode_message(&Bytes::from(flag)),
            Err(DecodeError::InvalidByte { field: "granted", value: 2 })
        ));
    }

    #[test]
    fn a_huge_entry_count_is_refused_before_anything_is_allocated() {
        let message = every_kind_of_message()
            .into_iter()
            .find(|message| matches!(&message.body, MessageBody::AppendEntries { entries, .. } if !entries.is_empty()))
            .expect("an AppendEntries with entries");
        let mut bytes = encoded(&message).to_vec();
        // version, kind, from/to/term, prev log id and commit index, round.
        let count_offset = 2 + 24 + 24 + 8;
        bytes[count_offset..count_offset + 4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(
            decode_message(&Bytes::from(bytes)),
            Err(DecodeError::Truncated { field: "entries", .. })
        ));
    }

    #[test]
    fn random_bytes_never_panic() {
        // SplitMix64 over fixed seeds: random junk, and valid messages with random bytes flipped.
        let mut state = 0x1234_5678_u64;
        let mut next = move || {
            state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        };
        let messages = every_kind_of_message();
        for round in 0..20_000 {
            let bytes: Vec<u8> = if round % 2 == 0 {
                let length = (next() % 128) as usize;
                (0..length).map(|_| next() as u8).collect()
            } else {
                let mut bytes =
                    encoded(&messages[(next() % messages.len() as u64) as usize]).to_vec();
                let position = (next() % bytes.len() as u64) as usize;
                bytes[position] ^= (next() as u8) | 1;
                bytes
            };
            let _ = decode_message(&Bytes::from(bytes));
        }
    }
}
