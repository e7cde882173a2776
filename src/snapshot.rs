//! [`Snapshot`]: a state machine's whole state at one log position, the unit of log
//! compaction and of catching up a follower that is too far behind for the log.
//!
//! A snapshot replaces the log up to and including [`SnapshotMeta::last_included`]: a node
//! that holds one needs no entry at or below that index, and a follower that receives one
//! restores its state machine from it and continues from the log after it (Raft §7).
//!
//! The bytes of a snapshot never sit whole in memory: the state machine writes them into
//! storage through a [`SnapshotSink`](crate::storage::SnapshotSink), a leader reads them back
//! chunk by chunk to send, a follower writes the chunks it receives into storage as they
//! arrive and restores its state machine by reading the stored file. What the protocol core
//! and the messages carry is this description: what the snapshot covers, its length, and a
//! checksum of its bytes that a follower verifies before restoring.

use std::fmt;

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

/// Names one snapshot's bytes: derived from what it covers, its length and its checksum, so
/// two snapshots of the same entry with different bytes (a state machine whose encoding is
/// not canonical, say one over a hash map) have different ids.
///
/// ```
/// use raft_consensus::snapshot::SnapshotId;
/// assert_eq!(SnapshotId(0x2a).to_string(), "snapshot-000000000000002a");
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SnapshotId(pub u64);

impl SnapshotId {
    /// The id of the snapshot through `last_included` whose bytes are `size` long with
    /// crc32c `checksum`.
    pub fn derive(last_included: LogId, size: u64, checksum: u32) -> SnapshotId {
        // SplitMix64's finalizer over the fields, folded one after another: a cheap mix in
        // which every input bit affects every output bit.
        fn mix(state: u64, value: u64) -> u64 {
            let mut z = state ^ value.wrapping_add(0x9E37_79B9_7F4A_7C15);
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        }
        let mut id = mix(0, last_included.index.0);
        id = mix(id, last_included.term.0);
        id = mix(id, size);
        id = mix(id, u64::from(checksum));
        SnapshotId(id)
    }
}

impl fmt::Display for SnapshotId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "snapshot-{:016x}", self.0)
    }
}

/// A stored snapshot: what it covers, and its length and checksum. Its bytes live in
/// storage (see [`SnapshotStore`](crate::storage::SnapshotStore)).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// What the snapshot covers.
    pub meta: SnapshotMeta,
    /// Its name: see [`SnapshotId::derive`].
    pub id: SnapshotId,
    /// The length of its bytes (the state machine's serialized state).
    pub size: u64,
    /// The crc32c of its bytes.
    pub checksum: u32,
}

impl Snapshot {
    /// The description of the snapshot covering `meta` whose bytes are `size` long with crc32c
    /// `checksum`.
    pub fn new(meta: SnapshotMeta, size: u64, checksum: u32) -> Snapshot {
        let id = SnapshotId::derive(meta.last_included, size, checksum);
        Snapshot { meta, id, size, checksum }
    }

    /// The description of a snapshot whose bytes are `data` (tests and in-memory storage).
    pub fn of_bytes(meta: SnapshotMeta, data: &[u8]) -> Snapshot {
        Snapshot::new(meta, data.len() as u64, crc32c::crc32c(data))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{LogIndex, Term};

    #[test]
    fn ids_differ_with_any_field() {
        let at = LogId::new(Term(2), LogIndex(10));
        let base = SnapshotId::derive(at, 100, 7);
        assert_eq!(base, SnapshotId::derive(at, 100, 7));
        assert_ne!(base, SnapshotId::derive(LogId::new(Term(3), LogIndex(10)), 100, 7));
        assert_ne!(base, SnapshotId::derive(LogId::new(Term(2), LogIndex(11)), 100, 7));
        assert_ne!(base, SnapshotId::derive(at, 101, 7));
        assert_ne!(base, SnapshotId::derive(at, 100, 8));
    }
}
