//! [`TraceHash`]: a fingerprint of everything that happened in a run, so a test can prove that
//! the same seed gives the same run, event for event.
//!
//! FNV-1a over a fixed encoding of each event: simple, stable across Rust versions (unlike the
//! standard library's hasher), and fast enough to run on every event.

use crate::message::{AppendResponse, Message, MessageBody};

/// A running FNV-1a 64-bit hash.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct TraceHash(u64);

impl Default for TraceHash {
    fn default() -> Self {
        TraceHash(0xcbf2_9ce4_8422_2325)
    }
}

impl TraceHash {
    pub(crate) fn value(self) -> u64 {
        self.0
    }

    pub(crate) fn add_u64(&mut self, value: u64) {
        for byte in value.to_le_bytes() {
            self.0 ^= u64::from(byte);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01B3);
        }
    }

    pub(crate) fn add_bytes(&mut self, bytes: &[u8]) {
        self.add_u64(bytes.len() as u64);
        for byte in bytes {
            self.0 ^= u64::from(*byte);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01B3);
        }
    }

    /// Adds a message: its routing, term, kind and the fields that decide its effect.
    pub(crate) fn add_message(&mut self, message: &Message) {
        self.add_u64(message.from.0);
        self.add_u64(message.to.0);
        self.add_u64(message.term.0);
        match &message.body {
            MessageBody::RequestVote { last_log_id, leadership_transfer } => {
                self.add_u64(1);
                self.add_u64(last_log_id.term.0);
                self.add_u64(last_log_id.index.0);
                self.add_u64(u64::from(*leadership_transfer));
            }
            MessageBody::TimeoutNow => self.add_u64(10),
            MessageBody::ReadIndex { request, lease } => {
                self.add_u64(11);
                self.add_u64(request.0);
                self.add_u64(u64::from(*lease));
            }
            MessageBody::ReadIndexResponse { request, read_index } => {
                self.add_u64(12);
                self.add_u64(request.0);
                self.add_u64(read_index.map_or(0, |log_id| log_id.index.0 + 1));
                self.add_u64(read_index.map_or(0, |log_id| log_id.term.0));
            }
            MessageBody::RequestVoteResponse { granted } => {
                self.add_u64(2);
                self.add_u64(u64::from(*granted));
            }
            MessageBody::PreVote { last_log_id } => {
                self.add_u64(6);
                self.add_u64(last_log_id.term.0);
                self.add_u64(last_log_id.index.0);
            }
            MessageBody::PreVoteResponse { granted } => {
                self.add_u64(7);
                self.add_u64(u64::from(*granted));
            }
            MessageBody::AppendEntries { prev_log_id, entries, leader_commit, round } => {
                self.add_u64(3);
                self.add_u64(prev_log_id.term.0);
                self.add_u64(prev_log_id.index.0);
                self.add_u64(entries.len() as u64);
                if let Some(last) = entries.last() {
                    self.add_u64(last.term.0);
                    self.add_u64(last.index.0);
                }
                self.add_u64(leader_commit.0);
                self.add_u64(round.0);
            }
            MessageBody::AppendEntriesResponse {
                result: AppendResponse::Accepted { match_index },
                round,
            } => {
                self.add_u64(4);
                self.add_u64(match_index.0);
                self.add_u64(round.0);
            }
            MessageBody::AppendEntriesResponse {
                result: AppendResponse::Rejected { rejected_prev_index, hint },
                ..
            } => {
                self.add_u64(5);
                self.add_u64(rejected_prev_index.0);
                self.add_u64(hint.conflict_term.map_or(0, |term| term.0 + 1));
                self.add_u64(hint.first_index.0);
            }
            MessageBody::InstallSnapshot { snapshot, offset, data } => {
                self.add_u64(8);
                self.add_u64(snapshot.meta.last_included.term.0);
                self.add_u64(snapshot.meta.last_included.index.0);
                self.add_u64(*offset);
                self.add_u64(snapshot.size);
                self.add_bytes(data);
            }
            MessageBody::InstallSnapshotResponse { last_included, received, installed, .. } => {
                self.add_u64(9);
                self.add_u64(last_included.term.0);
                self.add_u64(last_included.index.0);
                self.add_u64(*received);
                self.add_u64(u64::from(*installed));
            }
        }
    }
}
