//! Durable state behind the [`Storage`] trait: the log, the [`HardState`], and snapshots.
//!
//! The runtime writes through storage and reads it back only when a node starts: the protocol
//! core keeps the log it works on in memory. A write is durable only after
//! [`Storage::sync`] returns, or the [`PendingSync`] of a later [`Storage::flush`] completes;
//! the runtime never acknowledges anything to another node or a client before that.
//!
//! Implementations: [`WalStorage`] (a write-ahead log on disk: the default for real nodes) and
//! [`MemoryStorage`] (tests; nothing survives the process). The WAL reaches files through the
//! [`FileSystem`] trait, so the simulator can run it on a disk that fails.

mod fs;
mod memory;
mod snapshot_store;
mod wal;

pub use fs::{
    AppendFile, DirLock, FileSystem, InMemoryFile, LOCK_FILE_NAME, ReadAtFile, StdFileSystem,
};
pub use memory::MemoryStorage;
pub use snapshot_store::{
    BytesSource, READ_BLOCK_BYTES, SnapshotReader, SnapshotSink, SnapshotSource, SnapshotStore,
};
pub use wal::{WalIdentity, WalOptions, WalSnapshotStore, WalStorage};

use crate::core::InitialState;
use crate::error::StorageError;
use crate::hard_state::HardState;
use crate::message::Entry;
use crate::types::{LogId, LogIndex, NodeId};

/// Durable storage for one node's Raft state.
///
/// Writes may be buffered until [`sync`](Storage::sync); a crash may lose any write not yet
/// synced, but never a synced one, and the writes that survive it are a prefix of the writes
/// made (in call order). Calls come from the node's own task, one at a time; the driver saves
/// the entries of a batch before its hard state.
///
/// Snapshots are stored and read through a [`SnapshotStore`], which the node may use from
/// another thread so that writing a large snapshot never holds up heartbeats; a snapshot is
/// durable when [`SnapshotSink::finish`] returns. Storage keeps the latest one and describes
/// it in `load`, with the log entries after it (and possibly some before it).
pub trait Storage: Send + 'static {
    /// The handle that stores and reads snapshots.
    type Snapshots: SnapshotStore;

    /// Reads back everything durable, to start a node from. Called once, before any write.
    fn load(&mut self) -> Result<InitialState, StorageError>;

    /// Appends `entries`, which are contiguous. If the first one's index is at or below the
    /// last stored index, the stored entries from that index on are removed first. The first
    /// index is never more than the last stored index plus one (after [`reset_log`], the
    /// reset base plus one).
    ///
    /// [`reset_log`]: Storage::reset_log
    fn append(&mut self, entries: &[Entry]) -> Result<(), StorageError>;

    /// Removes every stored entry: the log continues after `base`, which a stored snapshot
    /// covers. Durable after the next [`sync`](Storage::sync); until then a crash may leave the
    /// old entries, which the node drops when they disagree with the snapshot.
    fn reset_log(&mut self, base: LogId) -> Result<(), StorageError>;

    /// Entries up to and including `through` are covered by a durable snapshot and may be
    /// dropped. Storage may keep some (a write-ahead log drops whole segments only).
    fn compact(&mut self, through: LogIndex) -> Result<(), StorageError>;

    /// A handle that stores and reads snapshots, usable from another thread.
    fn snapshot_store(&self) -> Self::Snapshots;

    /// Replaces the stored hard state.
    fn save_hard_state(&mut self, hard_state: &HardState) -> Result<(), StorageError>;

    /// Records the cluster's voting members (sorted, no duplicates), durable after the next
    /// [`sync`](Storage::sync); [`load`](Storage::load) returns the latest ones in
    /// [`InitialState::members`]. A node records them once, when it first starts on empty
    /// storage, and from then on starts only with the same members.
    fn save_members(&mut self, members: &[NodeId]) -> Result<(), StorageError>;

    /// Makes every earlier write durable. Many appends may share one sync (group commit).
    fn sync(&mut self) -> Result<(), StorageError>;

    /// Hands every earlier write to the disk and returns the sync that makes them durable,
    /// to be completed later, possibly on another thread, while the next writes are made
    /// (pipelining: the next batch is written while this one syncs). Complete the syncs in
    /// the order they were flushed; one may also make later writes durable. Until its sync
    /// completes, a write is no more durable than before `sync`.
    ///
    /// The default syncs at once and returns a sync with nothing left to do.
    fn flush(&mut self) -> Result<Box<dyn PendingSync>, StorageError> {
        self.sync()?;
        Ok(Box::new(AlreadyDurable))
    }

    /// The largest command this storage can store, if it has a limit: a node refuses to
    /// start with a [`Config::max_entry_bytes`](crate::Config::max_entry_bytes) above it (it
    /// could accept a proposal it would then fail to store). `None` (the default): no limit.
    fn max_entry_bytes(&self) -> Option<usize> {
        None
    }

    /// The cluster this storage's data belongs to, if it records one
    /// ([`WalIdentity::cluster_id`]): [`RaftNode::start`](crate::RaftNode::start) refuses
    /// a transport that reports another ([`StartError::ClusterIdMismatch`](crate::StartError::ClusterIdMismatch)).
    /// `None` (the default): the storage records none, and nothing is checked.
    fn cluster_id(&self) -> Option<u64> {
        None
    }
}

/// The second half of a [`Storage::flush`]: what makes the flushed writes durable.
pub trait PendingSync: Send {
    /// Makes the writes flushed before it durable, blocking until they are (an `fdatasync`).
    fn complete(self: Box<Self>) -> Result<(), StorageError>;

    /// Whether there is nothing left to do (the writes are durable already): the caller may
    /// then skip handing it to another thread.
    fn is_durable(&self) -> bool {
        false
    }
}

/// A [`PendingSync`] for writes that are durable already.
#[derive(Clone, Copy, Debug, Default)]
pub struct AlreadyDurable;

impl PendingSync for AlreadyDurable {
    fn complete(self: Box<Self>) -> Result<(), StorageError> {
        Ok(())
    }

    fn is_durable(&self) -> bool {
        true
    }
}
