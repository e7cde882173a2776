//! [`Snapshot`]: a state machine's whole state at one log position, the unit of log
//! compaction and of catching up a follower that is too far behind for the log.
//!
//! A snapshot replaces the log up to and including [`SnapshotMeta::last_included`]: a node
//! that holds one needs no entry at or below that index, and a follower that receives one
//! restores its state machine from it and continues from the log after it (Raft §7).

use bytes::Bytes;

use crate::core::Configuration;
use crate::types::LogId;

/// What a snapshot covers.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SnapshotMeta {
    /// The last log entry whose effect the snapshot contains.
    pub last_included: LogId,
    /// The cluster's configuration as of that entry (the latest configuration entry at or
    /// before it): a node that installs the snapshot uses it until its log says otherwise.
    pub configuration: Configuration,
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
