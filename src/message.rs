//! What nodes exchange and store: log [`Entry`]s and the protocol [`Message`]s.
//!
//! These are plain values; how they are encoded on a wire or a disk belongs to the transport
//! and storage that carry them.

use bytes::Bytes;

use crate::core::Configuration;
use crate::snapshot::{Snapshot, SnapshotId};
use crate::types::{HeartbeatRound, LogId, LogIndex, NodeId, ReadId, Term};

/// Bytes an entry takes in an AppendEntries message on the wire besides its payload: its term
/// (8), index (8), payload kind (1) and payload length (4), as `transport/codec.rs` encodes it.
pub const ENTRY_FRAMING_BYTES: usize = 8 + 8 + 1 + 4;

/// One entry of the replicated log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// The term of the leader that created the entry.
    pub term: Term,
    /// The entry's position in the log.
    pub index: LogIndex,
    /// What the entry carries.
    pub payload: EntryPayload,
}

impl Entry {
    /// The entry's `LogId` (term and index).
    pub fn log_id(&self) -> LogId {
        LogId::new(self.term, self.index)
    }

    /// Bytes of payload the entry carries (used for message and batch size limits).
    pub fn payload_len(&self) -> usize {
        match &self.payload {
            EntryPayload::Blank => 0,
            EntryPayload::Command(bytes) => bytes.len(),
            EntryPayload::Configuration(configuration) => configuration.encoded_len(),
        }
    }

    /// Bytes the entry takes in an AppendEntries message on the wire: its payload and
    /// [`ENTRY_FRAMING_BYTES`]. A leader counts this against
    /// [`Config::max_inflight_bytes`](crate::Config::max_inflight_bytes).
    pub fn encoded_len(&self) -> usize {
        ENTRY_FRAMING_BYTES + self.payload_len()
    }
}

/// The content of a log entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EntryPayload {
    /// The no-op entry a new leader appends to commit entries of earlier terms (Raft §5.4.2).
    /// It is never passed to the state machine.
    Blank,
    /// A client command, passed to [`StateMachine::apply`](crate::StateMachine::apply) once
    /// committed.
    Command(Bytes),
    /// A new membership configuration (Raft thesis §4.1): every node uses it from the moment
    /// it is appended to its log, committed or not. Never passed to the state machine.
    Configuration(Configuration),
}

/// A protocol message from one node to another.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    /// The sender.
    pub from: NodeId,
    /// The recipient.
    pub to: NodeId,
    /// The sender's current term.
    pub term: Term,
    /// The request or response.
    pub body: MessageBody,
}

/// The requests and responses of the Raft protocol.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MessageBody {
    /// A candidate asks for a vote (Raft §5.2).
    RequestVote {
        /// The last entry of the candidate's log, for the election restriction (§5.4.1).
        last_log_id: LogId,
        /// The candidate stands because the leader handed leadership to it
        /// ([`MessageBody::TimeoutNow`]): voters answer even while they hear from a leader
        /// (their leader lease would otherwise make them ignore the request).
        leadership_transfer: bool,
    },
    /// The answer to `RequestVote`.
    RequestVoteResponse {
        /// Whether the vote was granted.
        granted: bool,
    },
    /// A node whose election timer fired asks whether it would win an election, before it
    /// starts one (pre-vote). The message's term is the term it would stand in; nobody's term
    /// or vote changes.
    PreVote {
        /// The last entry of the asking node's log.
        last_log_id: LogId,
    },
    /// The answer to `PreVote`: granted (with the asked-for term) or refused (with the
    /// voter's current term).
    PreVoteResponse {
        /// Whether the voter would vote for it.
        granted: bool,
    },
    /// A leader replicates entries, or asserts its leadership when `entries` is empty (§5.3).
    AppendEntries {
        /// The entry just before `entries`, which the follower must hold for consistency.
        prev_log_id: LogId,
        /// The entries to append, in index order starting at `prev_log_id.index + 1`.
        entries: Vec<Entry>,
        /// The leader's commit index.
        leader_commit: LogIndex,
        /// The leader's heartbeat round when it sent this; the answer echoes it.
        round: HeartbeatRound,
    },
    /// The answer to `AppendEntries`.
    AppendEntriesResponse {
        /// Whether the follower's log matched.
        result: AppendResponse,
        /// The `round` of the `AppendEntries` answered: the follower knew this leader (its
        /// term was not newer) when it answered a message sent in that round.
        round: HeartbeatRound,
    },
    /// A leader sends a follower one chunk of a snapshot, because the follower needs entries
    /// the leader has compacted away (Raft §7). Chunks go in order; the follower writes them
    /// to storage as they come and installs the snapshot once it holds all `snapshot.size`
    /// bytes and their checksum matches `snapshot.checksum`. A transfer is the leader's term
    /// and `snapshot.id`: chunks of two transfers are never put together.
    InstallSnapshot {
        /// The snapshot: what it covers, its id, length and checksum (the same in every chunk
        /// of one transfer).
        snapshot: Snapshot,
        /// Where `data` starts in the snapshot.
        offset: u64,
        /// The chunk.
        data: Bytes,
    },
    /// The leader hands leadership to the recipient, whose log it has brought up to date:
    /// the recipient starts an election at once, without pre-vote (Raft thesis §3.10).
    TimeoutNow,
    /// A follower asks the leader for a read index for a batch of reads its clients asked of
    /// it (Raft thesis §6.4.1): the leader confirms its leadership, then answers with its
    /// commit index, and the follower serves the reads once it has applied that far.
    ReadIndex {
        /// The follower's name for the batch (the id of its first read), echoed in the answer.
        request: ReadId,
        /// Every read of the batch accepts a leader's lease in place of a heartbeat round
        /// (when the leader runs with leases; otherwise it runs the round).
        lease: bool,
    },
    /// The leader's answer to `ReadIndex`.
    ReadIndexResponse {
        /// The batch answered.
        request: ReadId,
        /// The entry the follower must apply through before serving the batch (a committed
        /// entry: a follower that holds this very entry may commit up to it at once), or
        /// `None` when the recipient could not confirm it (it does not lead, or has too many
        /// reads waiting).
        read_index: Option<LogId>,
    },
    /// The answer to an `InstallSnapshot` chunk.
    InstallSnapshotResponse {
        /// The snapshot the answer is about.
        snapshot: SnapshotId,
        /// The last entry that snapshot covers.
        last_included: LogId,
        /// How many bytes of it the follower holds, contiguous from the start: the offset of
        /// the next chunk it needs.
        received: u64,
        /// Whether the follower has installed it (or already held everything it covers):
        /// replication continues from the log after `last_included`.
        installed: bool,
        /// The chunk answered starts past `received`: the bytes from `received` on were lost
        /// (or reordered) on the way, and the follower dropped it.
        gap: bool,
    },
}

/// How a follower answered an `AppendEntries`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AppendResponse {
    /// The follower's log matches the leader's up to and including `match_index`.
    Accepted {
        /// The last index known to match the leader's log.
        match_index: LogIndex,
    },
    /// The consistency check failed at `rejected_prev_index`; `hint` says where to retry.
    Rejected {
        /// The `prev_log_id.index` of the rejected request (lets the leader drop stale
        /// rejections).
        rejected_prev_index: LogIndex,
        /// Where the follower's log diverges, so the leader can skip a whole term per round
        /// trip instead of one entry.
        hint: ConflictHint,
    },
}

/// A follower's hint for fast log backtracking.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConflictHint {
    /// The term of the follower's entry at the rejected index, or `None` when the follower's
    /// log is shorter than that index.
    pub conflict_term: Option<Term>,
    /// With a `conflict_term`: the first index the follower holds of that term. Without: the
    /// follower's last index plus one.
    pub first_index: LogIndex,
}
