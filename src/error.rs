//! The library's error types, one enum per operation, every variant documented.
//!
//! Errors a caller may retry elsewhere ([`ProposeError::NotLeader`]) are kept apart from those
//! whose effect is unknown ([`ProposeError::OutcomeUnknown`]) and from fatal ones
//! ([`StorageError`]).

use std::error::Error as StdError;
use std::io;
use std::path::PathBuf;
use std::sync::Arc;

use crate::types::{LogIndex, NodeId};

/// A [`Config`](crate::Config) whose limits contradict each other.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// The minimum election timeout is zero.
    #[error("election_timeout_min_ms must be greater than zero")]
    ZeroElectionTimeout,
    /// The election timeout range `[min, max)` is empty.
    #[error(
        "election timeout range is empty: election_timeout_min_ms ({min_ms}) must be below election_timeout_max_ms ({max_ms})"
    )]
    EmptyElectionTimeoutRange {
        /// The configured minimum.
        min_ms: u64,
        /// The configured maximum.
        max_ms: u64,
    },
    /// Heartbeats would not arrive before followers time out.
    #[error(
        "heartbeat_interval_ms ({heartbeat_ms}) must be above zero and below election_timeout_min_ms ({election_timeout_min_ms}), or followers start elections against a healthy leader"
    )]
    HeartbeatNotBelowElectionTimeout {
        /// The configured heartbeat interval.
        heartbeat_ms: u64,
        /// The configured minimum election timeout.
        election_timeout_min_ms: u64,
    },
    /// A size or count limit is larger than the 32-bit length fields that frame it.
    #[error("{name} must be at most {max}")]
    LimitTooLarge {
        /// The name of the offending field.
        name: &'static str,
        /// The largest value allowed.
        max: usize,
    },
    /// A size or count limit is zero, so nothing could ever be sent or accepted.
    #[error("{name} must be greater than zero")]
    ZeroLimit {
        /// The name of the offending field.
        name: &'static str,
    },
    /// `max_entry_bytes` is above the largest command the node's storage can store: the node
    /// could accept a proposal and then fail to store it, and stop.
    #[error(
        "max_entry_bytes ({configured}) is above the largest entry the storage can store ({storage})"
    )]
    EntryLimitAboveStorage {
        /// The configured `max_entry_bytes`.
        configured: usize,
        /// The storage's limit.
        storage: usize,
    },
    /// A message the node may send under this configuration is larger than the transport's
    /// largest frame ([`TcpConfig::max_frame_bytes`](crate::transport::TcpConfig::max_frame_bytes)):
    /// the peer would close the connection on it every time it is sent. `name` is the limit
    /// that makes the message that large. See [`Config`](crate::Config)'s "Size limits".
    #[error(
        "{name} ({value}) makes messages of up to {message_bytes} bytes, above the transport's maximum frame of {max_frame_bytes} bytes"
    )]
    MessageAboveFrameLimit {
        /// The configuration field that sets the message's size.
        name: &'static str,
        /// That field's value.
        value: usize,
        /// The largest message it allows, as encoded on the wire.
        message_bytes: usize,
        /// The transport's largest frame.
        max_frame_bytes: usize,
    },
    /// Lease reads are on without pre-vote: only pre-vote's rule (a voter that heard from a
    /// leader within the minimum election timeout ignores vote requests) keeps a new leader
    /// from being elected while the old one's lease runs.
    #[error(
        "lease_reads needs pre_vote: without it, a new leader could be elected while the old one's lease runs"
    )]
    LeaseReadsWithoutPreVote,
    /// The clock drift bound leaves no lease at all.
    #[error(
        "clock_drift_bound_ms ({drift_ms}) must be below election_timeout_min_ms ({election_timeout_min_ms}), or a lease never runs"
    )]
    DriftBoundNotBelowElectionTimeout {
        /// The configured drift bound.
        drift_ms: u64,
        /// The configured minimum election timeout.
        election_timeout_min_ms: u64,
    },
    /// The stall limit is so short that syncs on a healthy disk under ordinary load would
    /// reach it, and leaders would step down over them.
    #[error(
        "max_sync_stall_ms ({max_sync_stall_ms}) must be 0 (off) or above heartbeat_interval_ms ({heartbeat_ms}), or leaders step down over ordinary sync latency"
    )]
    SyncStallNotAboveHeartbeat {
        /// The configured stall limit.
        max_sync_stall_ms: u64,
        /// The configured heartbeat interval.
        heartbeat_ms: u64,
    },
}

/// A failure of durable storage. A node that sees one stops: it can no longer promise that
/// what it acknowledges is durable.
///
/// Its message starts with what kind of failure it is ([`StorageError::kind`]), so that the
/// one line a process prints before it exits says what an operator must fix: "disk full (No
/// space left on device (os error 28)) while writing /data/wal-….log", "read-only (Read-only
/// file system (os error 30)) while …", "corrupt data: …", "I/O error (…) while …".
#[derive(Clone, Debug, thiserror::Error)]
pub enum StorageError {
    /// An I/O operation failed. (The message includes the OS's; it is not repeated as the
    /// error's `source()`, so an error chain prints it once.)
    #[error("{} ({error}) while {operation}", StorageErrorKind::of_io(.error).label())]
    Io {
        /// What the storage was doing.
        operation: String,
        /// The underlying error.
        error: Arc<io::Error>,
    },
    /// Stored data failed a consistency check and will not be used.
    #[error("corrupt data: {detail}")]
    Corrupt {
        /// Where and how the data is corrupt.
        detail: String,
    },
    /// A record before the end of the write-ahead log failed its checksum or does not parse.
    /// The node refuses to start rather than use it; nothing was changed on disk.
    #[error("corrupt data: write-ahead log record in {} at byte offset {offset}: {reason}", file.display())]
    CorruptRecord {
        /// The segment file.
        file: PathBuf,
        /// The offset of the bad record in that file.
        offset: u64,
        /// What is wrong with it.
        reason: String,
    },
    /// The data directory belongs to another node or cluster; nothing was changed.
    #[error(
        "{} belongs to node {found_node} of cluster {found_cluster}, not node {expected_node} of cluster {expected_cluster}; refusing to use it",
        file.display()
    )]
    ForeignData {
        /// The segment file whose header names the owner.
        file: PathBuf,
        /// The node id this storage was opened for.
        expected_node: u64,
        /// The cluster id this storage was opened for.
        expected_cluster: u64,
        /// The node id in the file.
        found_node: u64,
        /// The cluster id in the file.
        found_cluster: u64,
    },
    /// The data was written in a format version this build does not know; nothing was changed.
    #[error(
        "{} has write-ahead log format version {found}; this build reads versions up to {supported}",
        file.display()
    )]
    UnsupportedVersion {
        /// The file.
        file: PathBuf,
        /// The version found.
        found: u32,
        /// The newest version this build reads (and the one it writes).
        supported: u32,
    },
    /// An entry is larger than the storage accepts; nothing was written.
    #[error("entry of {size} bytes exceeds the storage's maximum of {max} bytes")]
    EntryTooLarge {
        /// The entry's payload size.
        size: usize,
        /// The configured maximum.
        max: usize,
    },
    /// The state machine refused a snapshot (one stored, or one received from the leader):
    /// the node cannot know its state and stops.
    #[error("the state machine could not restore the snapshot through index {index}: {reason}")]
    Restore {
        /// The snapshot's last included index.
        index: crate::types::LogIndex,
        /// What the state machine's `restore` said.
        reason: String,
    },
    /// The state machine failed to write a snapshot (its
    /// [`SnapshotView::write_to`](crate::state_machine::SnapshotView::write_to) returned an
    /// error other than an I/O error): the log stays as it is and a later snapshot tries again.
    #[error("the state machine could not write the snapshot through index {index}: {reason}")]
    Snapshot {
        /// The snapshot's last included index.
        index: crate::types::LogIndex,
        /// What the state machine said.
        reason: String,
    },
    /// The data directory is in use: another process, or another storage of this process,
    /// holds its lock file. Nothing was read or changed. Stop the other user (or pick
    /// another directory); a lock is never left behind by a process that ended.
    #[error(
        "the data directory {} is in use by {}; refusing to open it twice",
        dir.display(),
        match holder_pid { Some(pid) => format!("process {pid}"), None => String::from("another process or node") }
    )]
    DirectoryLocked {
        /// The data directory.
        dir: PathBuf,
        /// The process id recorded in the lock file by its holder, when it is known (it may
        /// be this very process: two storages opened on one directory).
        holder_pid: Option<u32>,
    },
}

impl StorageError {
    /// Wraps an I/O error with a description of the operation that failed.
    pub fn io(operation: impl Into<String>, source: io::Error) -> Self {
        StorageError::Io { operation: operation.into(), error: Arc::new(source) }
    }

    /// What kind of failure this is: what an operator has to fix before the node can run.
    pub fn kind(&self) -> StorageErrorKind {
        match self {
            StorageError::Io { error, .. } => StorageErrorKind::of_io(error),
            StorageError::Corrupt { .. } | StorageError::CorruptRecord { .. } => {
                StorageErrorKind::Corrupt
            }
            StorageError::ForeignData { .. }
            | StorageError::UnsupportedVersion { .. }
            | StorageError::EntryTooLarge { .. }
            | StorageError::Restore { .. }
            | StorageError::Snapshot { .. }
            | StorageError::DirectoryLocked { .. } => StorageErrorKind::Other,
        }
    }
}

/// The kinds of [`StorageError`], as an operator sees them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum StorageErrorKind {
    /// The file system has no space left, or the quota is used up (`ENOSPC`, `EDQUOT`):
    /// free space (or let the log compact) and restart.
    DiskFull,
    /// The data directory cannot be written: a read-only file system, or no permission
    /// (`EROFS`, `EACCES`, `EPERM`).
    ReadOnly,
    /// Stored data failed a check: restore the node from a peer (or a backup).
    Corrupt,
    /// Another I/O error (`EIO` and the like): the disk or the file system is failing.
    Io,
    /// Anything else: data of another node or format version, an entry too large, a
    /// snapshot the state machine refused, a data directory another user has locked.
    Other,
}

impl StorageErrorKind {
    /// The kind of an I/O error.
    pub fn of_io(error: &io::Error) -> StorageErrorKind {
        match error.kind() {
            io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded => StorageErrorKind::DiskFull,
            io::ErrorKind::ReadOnlyFilesystem | io::ErrorKind::PermissionDenied => {
                StorageErrorKind::ReadOnly
            }
            _ => StorageErrorKind::Io,
        }
    }

    /// How a message names it: "disk full", "read-only", "corrupt data", "I/O error",
    /// "storage error".
    pub fn label(self) -> &'static str {
        match self {
            StorageErrorKind::DiskFull => "disk full",
            StorageErrorKind::ReadOnly => "read-only",
            StorageErrorKind::Corrupt => "corrupt data",
            StorageErrorKind::Io => "I/O error",
            StorageErrorKind::Other => "storage error",
        }
    }
}

impl std::fmt::Display for StorageErrorKind {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(self.label())
    }
}

/// Why a [`RaftNode`](crate::RaftNode) could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The configuration is invalid.
    #[error("invalid configuration: {0}")]
    Config(#[from] ConfigError),
    /// The stored state could not be read (or written, at a first start). Its message is
    /// part of this one, not repeated as `source()`.
    #[error("could not load stored state: {0}")]
    Storage(StorageError),
    /// `RaftNode::start` was called outside a tokio runtime.
    #[error("RaftNode::start must be called from within a tokio runtime")]
    NoRuntime,
    /// The member list is empty or does not contain the node itself.
    #[error("invalid membership: {reason}")]
    Membership {
        /// What is wrong with the member list.
        reason: String,
    },
    /// [`Config::snapshot_mode`](crate::Config::snapshot_mode) is
    /// [`SnapshotMode::Required`](crate::SnapshotMode::Required), and the state machine does
    /// not implement snapshots.
    #[error(
        "snapshots are required (Config::snapshot_mode), but the state machine {state_machine} does not implement them: implement StateMachine::snapshot and restore (or snapshot_view and restore_from), forwarding them in any wrapper"
    )]
    SnapshotsUnsupported {
        /// The state machine's type name.
        state_machine: &'static str,
    },
    /// The storage and the transport were set up for different clusters (a
    /// [`WalIdentity`](crate::storage::WalIdentity)'s `cluster_id` and a
    /// [`TcpConfig`](crate::transport::TcpConfig)'s): the node would refuse its own peers'
    /// connections. Build both from one identity
    /// ([`TcpConfig::for_identity`](crate::transport::TcpConfig::for_identity)).
    #[error(
        "the storage belongs to cluster {storage} but the transport to cluster {transport}: give both the same cluster id (TcpConfig::for_identity)"
    )]
    ClusterIdMismatch {
        /// The cluster id the storage reports ([`Storage::cluster_id`](crate::storage::Storage::cluster_id)).
        storage: u64,
        /// The cluster id the transport reports ([`Transport::cluster_id`](crate::transport::Transport::cluster_id)).
        transport: u64,
    },
}

// The errors that wrap a `StorageError` include its message in theirs, so they do not also
// return it as `source()` (an error chain would print it twice): `From` by hand, not `#[from]`.
impl From<StorageError> for StartError {
    fn from(error: StorageError) -> Self {
        StartError::Storage(error)
    }
}

impl From<StorageError> for FatalError {
    fn from(error: StorageError) -> Self {
        FatalError::Storage(error)
    }
}

impl From<StorageError> for ProposeError {
    fn from(error: StorageError) -> Self {
        ProposeError::Storage(error)
    }
}

/// Why a running node stopped on its own: [`RaftNode::shutdown`](crate::RaftNode::shutdown)
/// returns it. Either way the node can no longer be trusted to go on; restart it (a
/// supervisor should), and for a broken rule, keep its data directory for diagnosis.
#[derive(Clone, Debug, thiserror::Error)]
pub enum FatalError {
    /// Storage failed: what the node acknowledges could no longer be made durable. The
    /// message says what kind of failure it was ("storage failed: disk full (...) while
    /// writing ...", see [`StorageError::kind`]).
    #[error("storage failed: {0}")]
    Storage(StorageError),
    /// The node found one of Raft's safety rules (or another invariant of its own state)
    /// broken, or its state machine panicked: `message` names what. Nothing that depended
    /// on it left the node.
    #[error("the node stopped: {message}")]
    Panicked {
        /// The panic's message, such as "Raft safety rule violated: at most one vote per
        /// term (...)".
        message: String,
    },
}

/// Why a proposal did not return the state machine's result.
#[derive(Debug, thiserror::Error)]
pub enum ProposeError {
    /// This node is not the leader and did not append the command, or appended it and then
    /// saw another leader's entry take its index: either way it is definitely not applied.
    /// Retry on `leader_hint` (when known).
    #[error("not the leader{}", match leader_hint { Some(id) => format!("; the leader is {id}"), None => String::from("; no leader is known") })]
    NotLeader {
        /// The leader this node currently follows, if any.
        leader_hint: Option<NodeId>,
    },
    /// The command was appended at `index`, but this node lost leadership, shut down or
    /// stopped on a storage failure before it learned whether the entry committed. It may or may not be applied; a retry
    /// must be idempotent or deduplicated.
    #[error(
        "outcome unknown: the command was appended at index {index} but leadership was lost before it committed"
    )]
    OutcomeUnknown {
        /// The index at which the command was appended.
        index: LogIndex,
    },
    /// The command is larger than [`Config::max_entry_bytes`](crate::Config::max_entry_bytes);
    /// nothing was written.
    #[error("command of {size} bytes exceeds the maximum entry size of {max} bytes")]
    TooLarge {
        /// The command's size.
        size: usize,
        /// The configured maximum.
        max: usize,
    },
    /// The node has shut down (or is shutting down); the command was not appended.
    #[error("the node has shut down")]
    Shutdown,
    /// Storage failed and the node has stopped; the command was not appended.
    #[error("storage failed: {0}")]
    Storage(StorageError),
    /// This leader is handing leadership to `target` and takes no proposals until that ends
    /// (at most an election timeout); nothing was written. Retry on the new leader.
    #[error("leadership is being transferred to {target}")]
    LeadershipTransfer {
        /// The node leadership is being handed to.
        target: NodeId,
    },
    /// The command committed, and the state machine's `apply` returned this error. Every node
    /// applied the same command with the same result.
    ///
    /// The error is the very value your [`apply`](crate::StateMachine::apply) returned,
    /// boxed: get your type back with [`downcast`](Box::downcast) (or
    /// `downcast_ref` to only look at it).
    ///
    /// ```
    /// use std::error::Error;
    /// use std::time::Duration;
    ///
    /// use raft_consensus::storage::MemoryStorage;
    /// use raft_consensus::transport::ChannelNetwork;
    /// use raft_consensus::{Config, NodeId, ProposeError, RaftNode, StateMachine};
    ///
    /// #[derive(Debug, PartialEq, thiserror::Error)]
    /// #[error("{0} is not a number")]
    /// struct NotANumber(String);
    ///
    /// struct Sum(u64);
    ///
    /// impl StateMachine for Sum {
    ///     fn apply(&mut self, command: &[u8]) -> Result<Vec<u8>, Box<dyn Error + Send + Sync>> {
    ///         let text = String::from_utf8_lossy(command).into_owned();
    ///         self.0 += text.parse::<u64>().map_err(|_| NotANumber(text))?;
    ///         Ok(self.0.to_le_bytes().to_vec())
    ///     }
    /// }
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn Error>> {
    /// let network = ChannelNetwork::new();
    /// let node = RaftNode::start(NodeId(1), [NodeId(1)], Config::default(), MemoryStorage::new(), network.join(NodeId(1)), Sum(0))?;
    /// node.wait_for(Duration::from_secs(5), |status| status.is_leader()).await?;
    /// match node.propose(b"seven".to_vec()).await {
    ///     Err(ProposeError::Apply(error)) => {
    ///         let error: Box<NotANumber> = error.downcast().map_err(|_| "another error type")?;
    ///         assert_eq!(*error, NotANumber("seven".into()));
    ///     }
    ///     other => panic!("expected the state machine's error, got {other:?}"),
    /// }
    /// node.shutdown().await?;
    /// # Ok(())
    /// # }
    /// ```
    #[error("the state machine rejected the command: {0}")]
    Apply(#[source] Box<dyn StdError + Send + Sync>),
}

/// Why a linearizable read got no read index (and so must not be served).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ReadError {
    /// This node knows no leader to confirm the read with (an election is under way, or
    /// the node is cut off). Retry, on `leader_hint` when known.
    #[error("no leader to confirm the read{}", match leader_hint { Some(id) => format!("; try {id}"), None => String::new() })]
    NotLeader {
        /// The leader this node follows, if any.
        leader_hint: Option<NodeId>,
    },
    /// The leader that was confirming the read lost its leadership first (a newer term, or
    /// it could not reach a majority), or this follower moved to another leader while the
    /// read was being confirmed. Nothing was read; retry.
    #[error("leadership was lost before the read was confirmed")]
    LeadershipLost,
    /// More reads wait for confirmation than [`Config::max_pending_reads`](crate::Config::max_pending_reads)
    /// allows; nothing was read. Retry later.
    #[error("too many reads waiting (at most {limit})")]
    TooManyPending {
        /// The configured limit.
        limit: usize,
    },
    /// The read was not confirmed before the caller's deadline.
    #[error("the read was not confirmed in time")]
    Timeout,
    /// The node has shut down (or stopped on a fatal error).
    #[error("the node has shut down")]
    Shutdown,
    /// The read was confirmed, and the state machine's [`query`](crate::StateMachine::query)
    /// returned this error.
    #[error("the state machine could not answer the query: {0}")]
    Query(String),
}

/// Why [`RaftNode::read`](crate::RaftNode::read) returned no value: the read could not be
/// served ([`ReadError`]), or the caller named another state machine type than the node's.
/// Kept apart from [`ReadError`] so that code matching every `ReadError` keeps compiling.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MachineReadError {
    /// The read could not be served: retry or give up as the [`ReadError`] says.
    #[error(transparent)]
    Read(#[from] ReadError),
    /// The caller asked to read the state machine as another type than the node's (a
    /// mistake in the program, not a condition to retry). Nothing was read.
    #[error("cannot read the state machine as {requested}: the node runs a {node}")]
    WrongStateMachine {
        /// The type the caller asked for.
        requested: &'static str,
        /// The type of the node's state machine.
        node: &'static str,
    },
}

/// Why a membership change or a leadership transfer was not carried out.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MembershipError {
    /// This node is not the leader (or stopped leading before the change finished, with
    /// nothing of it appended). Retry on `leader_hint` (when known).
    #[error("not the leader{}", match leader_hint { Some(id) => format!("; the leader is {id}"), None => String::from("; no leader is known") })]
    NotLeader {
        /// The leader this node currently follows, if any.
        leader_hint: Option<NodeId>,
    },
    /// Another membership change (or leadership transfer) is under way: at most one runs at
    /// a time. Retry once it is done.
    #[error("another membership change is in progress")]
    ChangeInProgress,
    /// `id` cannot become a voter yet: it is not a learner, or its log is further behind the
    /// leader's than [`Config::promotion_max_lag`](crate::Config::promotion_max_lag).
    #[error(
        "{id} has not caught up: it holds the log through {match_index}, the leader's ends at {leader_last_index}"
    )]
    NotCaughtUp {
        /// The member that is behind.
        id: NodeId,
        /// The last index known to be replicated on it.
        match_index: LogIndex,
        /// The leader's last index.
        leader_last_index: LogIndex,
    },
    /// The change was appended at `index`, but leadership was lost (or the node stopped)
    /// before it was known to commit: it may still complete. Read the configuration to learn.
    #[error("outcome unknown: the change was appended at index {index} but did not finish")]
    OutcomeUnknown {
        /// The index of the configuration entry.
        index: LogIndex,
    },
    /// The request does not make sense for the current configuration: `reason` says why (an
    /// id already in use, an unknown member, an empty voter set, a transfer to a non-voter).
    #[error("invalid membership change: {reason}")]
    Invalid {
        /// What is wrong.
        reason: String,
    },
    /// A leadership transfer to `target` did not complete in time (the leader takes
    /// proposals again after an election timeout).
    #[error("leadership was not transferred to {target} in time")]
    TransferTimedOut {
        /// The node leadership was to go to.
        target: NodeId,
    },
    /// The node has shut down (or stopped on a storage failure).
    #[error("the node has shut down")]
    Shutdown,
}

/// Why [`RaftNode::wait_for`](crate::RaftNode::wait_for) returned without its condition.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum WaitError {
    /// The deadline passed first.
    #[error("timed out waiting for the node's status")]
    Timeout,
    /// The node shut down first.
    #[error("the node has shut down")]
    Shutdown,
}

/// Why [`TcpTransport::start`](crate::transport::TcpTransport::start) refused to start.
///
/// Converts into an [`io::Error`] (kind `InvalidInput` for a bad argument), so code that
/// started the transport in a function returning `io::Result` still compiles with `?`.
#[derive(Debug, thiserror::Error)]
pub enum TcpStartError {
    /// The listener's bound address could not be read. (The OS's message is part of this
    /// one, not repeated as `source()`.)
    #[error("reading the listener's address: {0}")]
    Listener(io::Error),
    /// The peers given include the node itself: peers are the *other* nodes (a node never
    /// dials itself).
    #[error("the peers include the node itself ({id} at {address}): give only the other nodes")]
    OwnIdAmongPeers {
        /// The node's id.
        id: NodeId,
        /// The address given for it.
        address: std::net::SocketAddr,
    },
}

impl From<TcpStartError> for io::Error {
    fn from(error: TcpStartError) -> io::Error {
        match error {
            TcpStartError::Listener(error) => error,
            own @ TcpStartError::OwnIdAmongPeers { .. } => {
                io::Error::new(io::ErrorKind::InvalidInput, own)
            }
        }
    }
}
