//! The [`StateMachine`] trait: the application that Raft replicates.
//!
//! Every node applies the same committed commands in the same order, so a state machine must
//! be deterministic: the same commands from the same state give the same results everywhere.
//!
//! An implementation, as in the examples' README (commands encoded with bincode):
//!
//! ```
//! use std::error::Error;
//!
//! use bincode::{Encode, Decode};
//! use raft_consensus::state_machine::StateMachine;
//!
//! #[derive(Debug, Clone, Encode, Decode)]
//! enum MyCommand {
//!     // Your commands here
//!     Add(u64),
//! }
//!
//! #[derive(Debug)]
//! struct MyStateMachine {
//!     // Your state here
//!     total: u64,
//! }
//!
//! impl StateMachine for MyStateMachine {
//!     fn apply(&mut self, command: &[u8]) -> Result<Vec<u8>, Box<dyn Error + Send + Sync>> {
//!         let (cmd, _): (MyCommand, _) =
//!             bincode::decode_from_slice(command, bincode::config::standard())?;
//!
//!         // Execute command and return result
//!         match cmd {
//!             MyCommand::Add(amount) => self.total += amount,
//!         }
//!         Ok(bincode::encode_to_vec(self.total, bincode::config::standard())?)
//!     }
//! }
//!
//! let mut machine = MyStateMachine { total: 0 };
//! let command = bincode::encode_to_vec(MyCommand::Add(5), bincode::config::standard()).unwrap();
//! let result = machine.apply(&command).unwrap();
//! let (total, _): (u64, _) = bincode::decode_from_slice(&result, bincode::config::standard()).unwrap();
//! assert_eq!(total, 5);
//! assert!(machine.apply(b"not a command").is_err());
//! // Snapshots and queries are optional; the default implementations say they are unsupported.
//! assert!(machine.snapshot().is_err());
//! assert!(machine.query(b"total").is_err());
//! ```

use std::error::Error;
use std::fmt;
use std::io;

use crate::types::LogIndex;

/// A state machine's state frozen at one log position, taken by
/// [`StateMachine::snapshot_view`] on the node's task and written out by
/// [`write_to`](Self::write_to) on another thread while the node goes on applying commands.
///
/// A `Vec<u8>` is one (the bytes of [`StateMachine::snapshot`]); a state machine over a
/// persistent (copy-on-write) map makes one by cloning the map, which takes constant time,
/// and writes it record by record, so the snapshot never sits whole in memory.
pub trait SnapshotView: Send + 'static {
    /// Writes the frozen state into `out`. The bytes are what
    /// [`StateMachine::restore_from`] reads back.
    fn write_to(
        self: Box<Self>,
        out: &mut dyn io::Write,
    ) -> Result<(), Box<dyn Error + Send + Sync>>;
}

impl SnapshotView for Vec<u8> {
    fn write_to(
        self: Box<Self>,
        out: &mut dyn io::Write,
    ) -> Result<(), Box<dyn Error + Send + Sync>> {
        out.write_all(&self)?;
        Ok(())
    }
}

/// The error the default [`StateMachine::snapshot`] and [`StateMachine::restore`] return.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SnapshotsUnsupported;

impl fmt::Display for SnapshotsUnsupported {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(
            "this state machine does not support snapshots (implement StateMachine::snapshot and StateMachine::restore)",
        )
    }
}

impl Error for SnapshotsUnsupported {}

/// Whether a node takes snapshots of its state machine: [`Config::snapshot_mode`]. A node
/// checks it against its state machine when it starts: a state machine implements snapshots
/// unless its [`snapshot_view`](StateMachine::snapshot_view) (by default, its
/// [`snapshot`](StateMachine::snapshot)) returns [`SnapshotsUnsupported`], as the trait's
/// default does (and so does a wrapper that forwards only `apply`).
///
/// ```
/// use raft_consensus::{Config, SnapshotMode};
///
/// // Refuse to start unless the state machine implements snapshots.
/// let config = Config { snapshot_mode: SnapshotMode::Required, ..Config::default() };
/// # assert!(config.validate().is_ok());
/// ```
///
/// [`Config::snapshot_mode`]: crate::Config::snapshot_mode
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum SnapshotMode {
    /// Take snapshots if the state machine implements them; if it does not, run without
    /// (the log is never compacted and a restart replays it all) and log a warning naming
    /// the state machine's type when the node starts. The default: a state machine with
    /// only `apply` works as it is, and says so.
    #[default]
    IfSupported,
    /// Take snapshots: a node whose state machine does not implement them refuses to start
    /// ([`StartError::SnapshotsUnsupported`](crate::StartError::SnapshotsUnsupported), naming
    /// its type). Choose it for any state machine meant to run long.
    Required,
    /// Never take snapshots, whatever the state machine implements: the log is never
    /// compacted and a restart replays it all. A snapshot already stored is still restored at
    /// start, and one sent by a leader that takes snapshots is still installed (with
    /// [`restore_from`](StateMachine::restore_from)).
    Off,
}

/// The error the default [`StateMachine::query`] returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QueriesUnsupported;

impl fmt::Display for QueriesUnsupported {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(
            "this state machine does not answer queries (implement StateMachine::query, or read a handle it shares after RaftNode::read_index)",
        )
    }
}

impl Error for QueriesUnsupported {}

/// An application whose commands Raft replicates.
///
/// `apply` receives each committed command once, in log order. A node that restarts builds a
/// fresh state machine and applies the committed log to it again (from the latest snapshot
/// once snapshots exist), so the machine must start empty and keep its state in memory or
/// make replays harmless. Its `Err` is a result like any other, returned to the proposer: it
/// must be deterministic and must leave the state as it would be on every other node.
pub trait StateMachine {
    /// Executes one committed command and returns its result.
    fn apply(&mut self, command: &[u8]) -> Result<Vec<u8>, Box<dyn Error + Send + Sync>>;

    /// Executes the committed command at log position `index`. This is what a node calls;
    /// the default ignores the index and calls [`apply`](Self::apply). Override it when the
    /// result should name the entry (every node sees the same index for the same command).
    fn apply_at(
        &mut self,
        index: LogIndex,
        command: &[u8],
    ) -> Result<Vec<u8>, Box<dyn Error + Send + Sync>> {
        let _ = index;
        self.apply(command)
    }

    /// Answers a read-only `query` from the current state, changing nothing. A node calls it
    /// for a linearizable read ([`RaftNode::query`](crate::RaftNode::query)) once the state
    /// machine has applied everything committed when the read arrived, so the answer is as
    /// fresh as a command's would be, without a log entry. Optional: the default says
    /// queries are unsupported (an application can instead read state it shares with its
    /// state machine after [`RaftNode::read_index`](crate::RaftNode::read_index)). It runs
    /// on the node's own task, like `apply`: a slow query holds the node up.
    fn query(&self, query: &[u8]) -> Result<Vec<u8>, Box<dyn Error + Send + Sync>> {
        let _ = query;
        Err(Box::new(QueriesUnsupported))
    }

    /// Serializes the whole state. Optional: the default says snapshots are unsupported
    /// ([`SnapshotsUnsupported`]), and a node with the default
    /// [`SnapshotMode::IfSupported`] then runs without snapshots (warning once when it
    /// starts); with [`SnapshotMode::Required`] it refuses to start. A wrapper around another
    /// state machine must forward this and [`restore`](Self::restore) (or `snapshot_view` and
    /// `restore_from`) to keep its snapshots.
    ///
    /// The node calls [`snapshot_view`](Self::snapshot_view), whose default calls this: a
    /// state machine whose state is large implements `snapshot_view` instead, so that the
    /// node's task is not held up while the state is serialized.
    fn snapshot(&self) -> Result<Vec<u8>, Box<dyn Error + Send + Sync>> {
        Err(Box::new(SnapshotsUnsupported))
    }

    /// Replaces the whole state with a snapshot made by [`snapshot`](Self::snapshot).
    /// Optional: the default says snapshots are unsupported.
    ///
    /// The node calls [`restore_from`](Self::restore_from), whose default reads the whole
    /// snapshot into memory and calls this.
    fn restore(&mut self, snapshot: &[u8]) -> Result<(), Box<dyn Error + Send + Sync>> {
        let _ = snapshot;
        Err(Box::new(SnapshotsUnsupported))
    }

    /// Freezes the current state for a snapshot, quickly, on the node's task; the node then
    /// writes it out on another thread ([`SnapshotView::write_to`]) while it goes on applying
    /// commands. The default serializes the state at once with [`snapshot`](Self::snapshot).
    fn snapshot_view(&self) -> Result<Box<dyn SnapshotView>, Box<dyn Error + Send + Sync>> {
        Ok(Box::new(self.snapshot()?))
    }

    /// Replaces the whole state with a snapshot read from `snapshot` (what a
    /// [`SnapshotView`] wrote). It must leave the state unchanged when it returns an error.
    /// The default reads everything into memory and calls [`restore`](Self::restore).
    fn restore_from(
        &mut self,
        snapshot: &mut dyn io::Read,
    ) -> Result<(), Box<dyn Error + Send + Sync>> {
        let mut bytes = Vec::new();
        snapshot.read_to_end(&mut bytes)?;
        self.restore(&bytes)
    }
}
