//! Durable state behind the [`Storage`] trait: the log, the [`HardState`], and (later)
//! snapshots.
//!
//! The runtime writes through storage and reads it back only when a node starts: the protocol
//! core keeps the log it works on in memory. A write is durable only after
//! [`Storage::sync`] returns; the runtime never acknowledges anything to another node or a
//! client before that.
//!
//! Implementations: [`WalStorage`] (a write-ahead log on disk: the default for real nodes) and
//! [`MemoryStorage`] (tests; nothing survives the process). The WAL reaches files through the
//! [`FileSystem`] trait, so the simulator can run it on a disk that fails.

mod fs;
mod memory;
mod wal;

pub use fs::{AppendFile, FileSystem, StdFileSystem};
pub use memory::MemoryStorage;
pub use wal::{WalIdentity, WalOptions, WalStorage};

use crate::core::InitialState;
use crate::error::StorageError;
use crate::hard_state::HardState;
use crate::message::Entry;

/// Durable storage for one node's Raft state.
///
/// Writes may be buffered until [`sync`](Storage::sync); a crash may lose any write not yet
/// synced, but never a synced one, and the writes that survive it are a prefix of the writes
/// made (in call order). Calls come from the node's own task, one at a time; the driver saves
/// the entries of a batch before its hard state.
pub trait Storage: Send + 'static {
    /// Reads back everything durable, to start a node from. Called once, before any write.
    fn load(&mut self) -> Result<InitialState, StorageError>;

    /// Appends `entries`, which are contiguous. If the first one's index is at or below the
    /// last stored index, the stored entries from that index on are removed first. The first
    /// index is never more than the last stored index plus one.
    fn append(&mut self, entries: &[Entry]) -> Result<(), StorageError>;

    /// Replaces the stored hard state.
    fn save_hard_state(&mut self, hard_state: &HardState) -> Result<(), StorageError>;

    /// Makes every earlier write durable. Many appends may share one sync (group commit).
    fn sync(&mut self) -> Result<(), StorageError>;
}
