//! [`Snapshot`]: a state machine's whole state at one log position, the unit of log
//! compaction and of catching up a follower that is too far behind for the log.
//!
//! A snapshot replaces the log up to and including [`SnapshotMeta::last_included`]: a node
//! that holds one needs no entry at or below that index, and a follower that receives one
//! restores its state machine from it and continues from the log after it (Raft §7).

use bytes::Bytes;

use crate::types::{LogId, NodeId};

/// What a snapshot covers.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SnapshotMeta {
    /// The last log entry whose effect the snapshot contains.
    pub last_included: LogId,
    /// The cluster's voting members as of that entry, sorted.
    pub members: Vec<NodeId>,
}

/// A state machine's serialized state with what it covers.
///
/// `data` is what [`StateMachine::snapshot`](crate::StateMachine::snapshot) returned; the
/// library stores and sends it as opaque bytes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// What the snapshot covers.
    pub meta: SnapshotMeta,
    /// The state machine's state, as its `snapshot` serialized it.
    pub data: Bytes,
}
