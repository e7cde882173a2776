//! [`RaftNode`]: the tokio runtime that runs one Raft node.
//!
//! One task owns the protocol core, the storage, the transport and the state machine. It turns
//! wall-clock time into ticks, feeds in messages and client proposals (in batches, so one sync
//! serves many proposals), pumps them through the sans-I/O [`Node`] (which the simulator
//! pumps too), and completes each proposal with the state machine's result. [`RaftNode`] is a cheap, cloneable
//! handle to that task.

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::config::Config;
use crate::core::{Configuration, LOG_TARGET, MemberAddress, ReadPolicy, Role};
use crate::error::{
    FatalError, MachineReadError, MembershipError, ProposeError, ReadError, StartError,
    StorageError, WaitError,
};
use crate::events::{EventPublisher, NodeEvent};
use crate::message::Message;
use crate::metrics::NodeMetrics;
use crate::node::{ApplyResult, Member, Node, NodeIo, ProposalResult};
use crate::snapshot::Snapshot;
use crate::state_machine::StateMachine;
use crate::status::Status;
use crate::storage::{PendingSync, Storage};
use crate::sync_thread::SyncThread;
use crate::transport::Transport;
use crate::types::{LogIndex, NodeId, ReadId, Term};

/// Most requests or messages taken in one batch before the node persists and answers.
const MAX_BATCH: usize = 4096;

/// How many times the node yields to the runtime, after taking the requests queued, to take
/// those of tasks that were about to send theirs before it persists the batch (see
/// [`NodeLoop::gather_requests`]).
const GATHER_ROUNDS: usize = 4;

type ProposeReply = oneshot::Sender<ProposalResult>;

type ChangeReply = oneshot::Sender<Result<Configuration, MembershipError>>;

enum Request {
    Propose { command: Bytes, reply: ProposeReply },
    Change { change: Change, reply: ChangeReply },
    Read { policy: ReadPolicy, reply: ReadReply },
}

/// Who waits for a linearizable read, and what for.
enum ReadReply {
    /// The read index, once the state machine has applied through it.
    Index(oneshot::Sender<Result<LogIndex, ReadError>>),
    /// The state machine's answer to a query, asked once it is safe.
    Query(Bytes, oneshot::Sender<Result<Vec<u8>, ReadError>>),
    /// A caller's closure ([`RaftNode::read`]), run on the state machine once it is safe.
    Machine(MachineRead),
}

/// A [`RaftNode::read`] closure, with its reply channel inside: run on the node's task with
/// the state machine (as `Any`, for the closure to take back its type), or with why the read
/// cannot be served.
type MachineRead = Box<dyn FnOnce(Result<&dyn Any, ReadError>) + Send>;

/// What a [`RaftNode::read`] closure sends back: its value, the panic it raised (resumed
/// in the caller, not on the node's task), or why the read was not served.
type MachineReadOutcome<R> = Result<std::thread::Result<R>, MachineReadError>;

impl ReadReply {
    fn fail(self, error: ReadError) {
        match self {
            ReadReply::Index(reply) => drop(reply.send(Err(error))),
            ReadReply::Query(_, reply) => drop(reply.send(Err(error))),
            ReadReply::Machine(read) => read(Err(error)),
        }
    }
}

/// The type of the state machine a node runs, for [`RaftNode::read`] to check its callers'.
#[derive(Clone, Copy, Debug)]
struct MachineType {
    id: TypeId,
    name: &'static str,
}

/// A membership change or leadership transfer asked of the node.
enum Change {
    AddLearner(NodeId, MemberAddress),
    SetVoters(Vec<NodeId>),
    Remove(NodeId),
    TransferLeadership(NodeId),
}

/// A handle to a running Raft node. Clones refer to the same node; the node stops when
/// [`shutdown`](Self::shutdown) is called or the last handle is dropped.
///
/// ```
/// use raft_consensus::storage::MemoryStorage;
/// use raft_consensus::transport::ChannelNetwork;
/// use raft_consensus::{Config, NodeId, RaftNode, StateMachine};
/// use std::time::Duration;
///
/// struct Counter(u64);
/// impl StateMachine for Counter {
///     fn apply(&mut self, _command: &[u8]) -> Result<Vec<u8>, Box<dyn std::error::Error + Send + Sync>> {
///         self.0 += 1;
///         Ok(self.0.to_le_bytes().to_vec())
///     }
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let network = ChannelNetwork::new();
/// let node = RaftNode::start(
///     NodeId(1),
///     [NodeId(1)],
///     Config::default(),
///     MemoryStorage::new(),
///     network.join(NodeId(1)),
///     Counter(0),
/// )?;
/// node.wait_for(Duration::from_secs(5), |status| status.is_leader()).await?;
/// let result = node.propose(b"increment".to_vec()).await?;
/// assert_eq!(result, 1u64.to_le_bytes());
/// node.shutdown().await?;
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct RaftNode {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    id: NodeId,
    promotion_max_lag: u64,
    max_entry_bytes: usize,
    counters: Arc<Counters>,
    requests: mpsc::Sender<Request>,
    status: watch::Receiver<Status>,
    /// Taken and fired by the first `shutdown`; dropping it (the last handle) stops the node
    /// too.
    stop: Mutex<Option<oneshot::Sender<()>>>,
    task: Mutex<Option<JoinHandle<Result<(), FatalError>>>>,
    /// Set by the node's task the moment it stops: why, if it stopped on its own.
    stopped: Arc<Stopped>,
    /// Closed by the node's task the moment it stops (nothing is ever sent on it), so that
    /// waiting for the stop does not wake on every status change.
    ended: watch::Receiver<()>,
    /// The type of the node's state machine.
    state_machine_type: MachineType,
    /// Subscribes to the node's events while its task runs.
    events: broadcast::WeakSender<NodeEvent>,
}

/// Set once, when the node's task stops: the fatal error that stopped it, or `None` for a
/// requested shutdown.
type Stopped = OnceLock<Option<FatalError>>;

impl RaftNode {
    /// Starts node `id`, restoring whatever `storage` holds. `members` bootstrap a new
    /// cluster: its voting members (which must include `id`), as [`NodeId`]s or [`Member`]s
    /// with addresses; once the node has a stored configuration, that wins (a disagreeing
    /// `members` is logged as a warning). Empty `members` start a node that joins a running
    /// cluster: it waits for the leader to add it. Must be called from within a tokio
    /// runtime.
    ///
    /// The state machine is restored from the latest stored snapshot, if there is one, and
    /// the committed entries after it are applied again before the node serves, so it comes
    /// back with the state it had: all of it after a clean [`shutdown`](Self::shutdown), and
    /// after a crash at least a prefix of it (a commit index is synced with the next write,
    /// not on its own: the rest is applied once the leader's commit index is heard again).
    /// `state_machine` must be empty.
    ///
    /// Snapshots are taken automatically (see the `snapshot_*` fields of [`Config`]) as
    /// [`Config::snapshot_mode`] says: by default when the state machine implements
    /// [`StateMachine::snapshot`] (one that does not never has its log compacted, which is
    /// logged once here as a warning naming its type); with
    /// [`SnapshotMode::Required`](crate::SnapshotMode::Required), a state machine without them
    /// fails the start with [`StartError::SnapshotsUnsupported`].
    pub fn start<S, T, M>(
        id: NodeId,
        members: impl IntoIterator<Item = impl Into<Member>>,
        config: Config,
        storage: S,
        transport: T,
        state_machine: M,
    ) -> Result<RaftNode, StartError>
    where
        S: Storage,
        T: Transport,
        M: StateMachine + Send + 'static,
    {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| StartError::NoRuntime)?;
        crate::start_checks::check_parts(&config, &storage, &transport)?;
        // Each node draws its own election jitter; the seed only needs to differ between
        // nodes and runs, which the standard library's per-process random keys provide.
        let seed = RandomState::new().hash_one(id.0);
        let mut node = Node::start(id, members, config.clone(), storage, state_machine, seed)?;
        node.tick(0);
        let mut transport = transport;
        transport.update_members(node.core().configuration());

        let (request_sender, requests) = mpsc::channel(config.max_pending_requests);
        let initial_status = Status::of(node.core());
        let (events, events_handle) = EventPublisher::new(&initial_status);
        let (status_sender, status) = watch::channel(initial_status);
        // A oneshot rather than a watch: the node polls the same receiver on every wakeup,
        // which registers its waker with atomics and no lock.
        let (stop, stop_requested) = oneshot::channel();
        let counters = Arc::new(Counters::default());
        let stopped = Arc::new(Stopped::new());
        let (ended_sender, ended) = watch::channel(());
        let node_configuration = node.core().shared_configuration();
        let node_loop = NodeLoop {
            counters: Arc::clone(&counters),
            counted_commit: LogIndex(0),
            counted_leader: None,
            node,
            syncs: SyncThread::spawn(id)?,
            snapshot_write: None,
            transport,
            requests,
            stop_requested,
            status: status_sender,
            completed: Vec::new(),
            reads: HashMap::new(),
            ready_reads: Vec::new(),
            pending_change: None,
            known_configuration: node_configuration,
            epoch: Instant::now(),
            stopped: Arc::clone(&stopped),
            ended: Some(ended_sender),
            events,
        };
        let task = runtime.spawn(node_loop.run());
        Ok(RaftNode {
            shared: Arc::new(Shared {
                id,
                promotion_max_lag: config.promotion_max_lag,
                counters,
                max_entry_bytes: config.max_entry_bytes,
                requests: request_sender,
                status,
                stop: Mutex::new(Some(stop)),
                task: Mutex::new(Some(task)),
                stopped,
                ended,
                state_machine_type: MachineType {
                    id: TypeId::of::<M>(),
                    name: std::any::type_name::<M>(),
                },
                events: events_handle,
            }),
        })
    }

    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.shared.id
    }

    /// Replicates `command` and returns the state machine's result once it is committed and
    /// applied. Only the leader accepts proposals; others answer
    /// [`ProposeError::NotLeader`] with the leader they know.
    pub async fn propose(&self, command: impl Into<Bytes>) -> Result<Vec<u8>, ProposeError> {
        let command = command.into();
        if command.len() > self.shared.max_entry_bytes {
            return Err(ProposeError::TooLarge {
                size: command.len(),
                max: self.shared.max_entry_bytes,
            });
        }
        let (reply, result) = oneshot::channel();
        self.shared
            .requests
            .send(Request::Propose { command, reply })
            .await
            .map_err(|_| ProposeError::Shutdown)?;
        // The node answers every proposal it took before it stops; a dropped reply means it
        // stopped before taking this one.
        result.await.unwrap_or(Err(ProposeError::Shutdown))
    }

    /// Waits until a linearizable read may be served on this node, and returns its read
    /// index: the state machine here has applied everything committed when the call was
    /// made, and no newer leader can have committed anything this node lacks (Raft thesis
    /// §6.4). State read after it returns (through a handle the application shares with its
    /// state machine) reflects every write that completed before the call, on any node:
    /// a leader confirms its leadership with one heartbeat round (shared by the reads that
    /// arrive meanwhile), a follower asks its leader for the index and serves the read
    /// itself. No log entry is written and nothing is synced.
    ///
    /// With [`ReadPolicy::Lease`] and [`Config::lease_reads`] on, a leader within its lease
    /// skips the round (see the clock assumption there); otherwise the policy falls back to
    /// a round.
    ///
    /// Errors: [`ReadError::NotLeader`] when no leader is known, [`ReadError::LeadershipLost`]
    /// when leadership changed before the read was confirmed (retry),
    /// [`ReadError::TooManyPending`], [`ReadError::Shutdown`]. A read that cannot complete
    /// (a leader cut off from its majority) fails within about an election timeout.
    ///
    /// ```
    /// # use raft_consensus::storage::MemoryStorage;
    /// # use raft_consensus::transport::ChannelNetwork;
    /// # use raft_consensus::{Config, NodeId, RaftNode, ReadPolicy, StateMachine};
    /// # use std::time::Duration;
    /// # struct Counter(u64);
    /// # impl StateMachine for Counter {
    /// #     fn apply(&mut self, _command: &[u8]) -> Result<Vec<u8>, Box<dyn std::error::Error + Send + Sync>> {
    /// #         self.0 += 1;
    /// #         Ok(self.0.to_le_bytes().to_vec())
    /// #     }
    /// # }
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let network = ChannelNetwork::new();
    /// # let node = RaftNode::start(NodeId(1), [NodeId(1)], Config::default(), MemoryStorage::new(), network.join(NodeId(1)), Counter(0))?;
    /// # node.wait_for(Duration::from_secs(5), |status| status.is_leader()).await?;
    /// node.propose(b"increment".to_vec()).await?;
    /// let read_index = node.read_index(ReadPolicy::ReadIndex).await?;
    /// assert!(node.status().applied_index >= read_index);
    /// # node.shutdown().await?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn read_index(&self, policy: ReadPolicy) -> Result<LogIndex, ReadError> {
        let (reply, result) = oneshot::channel();
        self.send_read(policy, ReadReply::Index(reply)).await?;
        result.await.unwrap_or(Err(ReadError::Shutdown))
    }

    /// A linearizable read through the state machine's [`StateMachine::query`]: once the read
    /// may be served (as for [`read_index`](Self::read_index)), the node's task asks its state
    /// machine and returns the answer. A query the state machine refuses fails with
    /// [`ReadError::Query`].
    pub async fn query(
        &self,
        query: impl Into<Bytes>,
        policy: ReadPolicy,
    ) -> Result<Vec<u8>, ReadError> {
        let (reply, result) = oneshot::channel();
        self.send_read(policy, ReadReply::Query(query.into(), reply)).await?;
        result.await.unwrap_or(Err(ReadError::Shutdown))
    }

    /// Runs `read` on the node's state machine once a read may be served, as for
    /// [`read_index`](Self::read_index) (with [`ReadPolicy::ReadIndex`], linearizable: the
    /// state machine reflects every write that completed before the call, on any node), and
    /// returns what it returns. No shared lock around the state machine is needed: the
    /// closure borrows it on the node's task, between two commands.
    ///
    /// `M` is the type of the state machine the node was started with (the node is not
    /// generic over it, so the type is checked when the call is made): another type fails at
    /// once with [`MachineReadError::WrongStateMachine`], naming both.
    ///
    /// The closure runs on the node's own task, like `apply`: a slow closure holds up the
    /// whole node (its heartbeats too), so copy out what you need and work on it after the
    /// call returns. A closure that panics leaves the node running; the panic is resumed in
    /// the caller.
    ///
    /// Errors: [`MachineReadError::Read`] with those of [`read_index`](Self::read_index).
    ///
    /// ```
    /// use raft_consensus::storage::MemoryStorage;
    /// use raft_consensus::transport::ChannelNetwork;
    /// use raft_consensus::{Config, MachineReadError, NodeId, RaftNode, ReadPolicy, StateMachine};
    /// use std::time::Duration;
    ///
    /// #[derive(Default)]
    /// struct Balances(std::collections::BTreeMap<u8, u64>);
    /// impl StateMachine for Balances {
    ///     fn apply(&mut self, command: &[u8]) -> Result<Vec<u8>, Box<dyn std::error::Error + Send + Sync>> {
    ///         let [account, amount] = command else { return Err("two bytes: account, amount".into()) };
    ///         *self.0.entry(*account).or_default() += u64::from(*amount);
    ///         Ok(Vec::new())
    ///     }
    /// }
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let network = ChannelNetwork::new();
    /// let node = RaftNode::start(NodeId(1), [NodeId(1)], Config::default(), MemoryStorage::new(), network.join(NodeId(1)), Balances::default())?;
    /// node.wait_for(Duration::from_secs(5), |status| status.is_leader()).await?;
    /// node.propose(vec![7, 40]).await?;
    /// let balance = node.read(ReadPolicy::ReadIndex, |machine: &Balances| machine.0.get(&7).copied()).await?;
    /// assert_eq!(balance, Some(40));
    ///
    /// // A type other than the node's state machine is refused, naming both.
    /// struct Other;
    /// impl StateMachine for Other {
    ///     fn apply(&mut self, _: &[u8]) -> Result<Vec<u8>, Box<dyn std::error::Error + Send + Sync>> {
    ///         Ok(Vec::new())
    ///     }
    /// }
    /// let wrong = node.read(ReadPolicy::ReadIndex, |_: &Other| ()).await;
    /// assert!(matches!(wrong, Err(MachineReadError::WrongStateMachine { .. })));
    /// # node.shutdown().await?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn read<M, R>(
        &self,
        policy: ReadPolicy,
        read: impl FnOnce(&M) -> R + Send + 'static,
    ) -> Result<R, MachineReadError>
    where
        M: StateMachine + 'static,
        R: Send + 'static,
    {
        let node_type = self.shared.state_machine_type;
        let wrong_type = move || MachineReadError::WrongStateMachine {
            requested: std::any::type_name::<M>(),
            node: node_type.name,
        };
        if TypeId::of::<M>() != node_type.id {
            return Err(wrong_type());
        }
        let (reply, result) = oneshot::channel::<MachineReadOutcome<R>>();
        let machine_read: MachineRead = Box::new(move |machine| {
            let outcome = machine.map_err(MachineReadError::Read).and_then(|machine| {
                let machine = machine.downcast_ref::<M>().ok_or_else(wrong_type)?;
                // The closure only borrows the state machine: a panic in it cannot leave the
                // state half changed, and the node goes on.
                Ok(std::panic::catch_unwind(AssertUnwindSafe(|| read(machine))))
            });
            let _ = reply.send(outcome);
        });
        self.send_read(policy, ReadReply::Machine(machine_read)).await?;
        match result.await {
            Ok(Ok(Ok(value))) => Ok(value),
            Ok(Ok(Err(panic))) => std::panic::resume_unwind(panic),
            Ok(Err(error)) => Err(error),
            Err(_) => Err(MachineReadError::Read(ReadError::Shutdown)),
        }
    }

    async fn send_read(&self, policy: ReadPolicy, reply: ReadReply) -> Result<(), ReadError> {
        self.shared
            .requests
            .send(Request::Read { policy, reply })
            .await
            .map_err(|_| ReadError::Shutdown)
    }

    /// Leader: adds `id` as a learner reachable at `address` (it receives the log and
    /// snapshots but does not vote) and returns the configuration once the change is
    /// committed. Errors: [`MembershipError::NotLeader`] (with the leader known),
    /// [`MembershipError::ChangeInProgress`], [`MembershipError::Invalid`] (an id or address
    /// in use), [`MembershipError::OutcomeUnknown`] (leadership lost before it committed).
    pub async fn add_learner(
        &self,
        id: NodeId,
        address: MemberAddress,
    ) -> Result<Configuration, MembershipError> {
        self.change(Change::AddLearner(id, address)).await
    }

    /// Leader: changes the voters to `voters` through joint consensus and returns the new
    /// configuration once it is committed (both phases). New voters must be learners whose
    /// log is within [`Config::promotion_max_lag`] of the leader's
    /// ([`MembershipError::NotCaughtUp`] otherwise).
    pub async fn change_voters(
        &self,
        voters: impl IntoIterator<Item = NodeId>,
    ) -> Result<Configuration, MembershipError> {
        self.change(Change::SetVoters(voters.into_iter().collect())).await
    }

    /// Leader: adds `id` as a voter: as a learner first, then, once its log has caught up
    /// (within [`Config::promotion_max_lag`], waiting at most `catch_up_timeout`), as a
    /// voter through joint consensus. Returns the configuration once it is committed.
    ///
    /// A node that does not catch up in time stays a learner
    /// ([`MembershipError::NotCaughtUp`]); calling again resumes from there.
    ///
    /// ```
    /// use raft_consensus::storage::MemoryStorage;
    /// use raft_consensus::transport::ChannelNetwork;
    /// use raft_consensus::{Config, MemberAddress, NodeId, RaftNode, StateMachine};
    /// use std::time::Duration;
    ///
    /// struct Noop;
    /// impl StateMachine for Noop {
    ///     fn apply(&mut self, _: &[u8]) -> Result<Vec<u8>, Box<dyn std::error::Error + Send + Sync>> {
    ///         Ok(Vec::new())
    ///     }
    /// }
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let network = ChannelNetwork::new();
    /// let start = |id: u64, members: Vec<NodeId>| {
    ///     let (config, storage) = (Config::default(), MemoryStorage::new());
    ///     RaftNode::start(NodeId(id), members, config, storage, network.join(NodeId(id)), Noop)
    /// };
    /// let leader = start(1, vec![NodeId(1)])?;
    /// leader.wait_for(Duration::from_secs(5), |status| status.is_leader()).await?;
    /// // Node 2 starts with no members: it waits to be added.
    /// let joining = start(2, Vec::new())?;
    /// let timeout = Duration::from_secs(5);
    /// let configuration = leader.add_voter(NodeId(2), MemberAddress::default(), timeout).await?;
    /// assert_eq!(configuration.voters(), &[NodeId(1), NodeId(2)]);
    /// joining.wait_for(timeout, |status| status.configuration.is_voter(NodeId(2))).await?;
    /// leader.shutdown().await?;
    /// joining.shutdown().await?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn add_voter(
        &self,
        id: NodeId,
        address: MemberAddress,
        catch_up_timeout: Duration,
    ) -> Result<Configuration, MembershipError> {
        let configuration = self.status().configuration;
        if configuration.is_voter(id) {
            return Ok(Configuration::clone(&configuration));
        }
        if !configuration.learners().contains(&id) || configuration.address(id) != Some(&address) {
            self.add_learner(id, address).await?;
        }
        let lag = self.shared.promotion_max_lag;
        let caught_up = self
            .wait_for(catch_up_timeout, |status| {
                !status.is_leader()
                    || status.followers.iter().any(|(follower, matched)| {
                        // It holds the configuration that made it a learner, and is within
                        // the lag (what `change_voters` requires).
                        *follower == id
                            && *matched >= status.configuration_index
                            && matched.0.saturating_add(lag) >= status.last_log_index.0
                    })
            })
            .await;
        let status = match caught_up {
            Ok(status) => status,
            Err(WaitError::Shutdown) => return Err(MembershipError::Shutdown),
            Err(WaitError::Timeout) => {
                let status = self.status();
                let match_index = status
                    .followers
                    .iter()
                    .find(|(follower, _)| *follower == id)
                    .map_or(LogIndex(0), |(_, matched)| *matched);
                return Err(MembershipError::NotCaughtUp {
                    id,
                    match_index,
                    leader_last_index: status.last_log_index,
                });
            }
        };
        if !status.is_leader() {
            return Err(MembershipError::NotLeader { leader_hint: status.leader_id });
        }
        let mut voters = status.configuration.voters().to_vec();
        voters.push(id);
        self.change_voters(voters).await
    }

    /// Leader: removes member `id` (a learner at once, a voter through joint consensus) and
    /// returns the configuration once the change is committed. The leader can remove itself:
    /// it steps down once the change commits, handing leadership to a caught-up voter.
    pub async fn remove_member(&self, id: NodeId) -> Result<Configuration, MembershipError> {
        self.change(Change::Remove(id)).await
    }

    /// Leader: hands leadership to the voter `target` (Raft thesis §3.10) and waits, at most
    /// `timeout`, until this node sees `target` lead. Proposals are refused meanwhile
    /// ([`ProposeError::LeadershipTransfer`]); a transfer that does not complete within an
    /// election timeout is abandoned and this node takes proposals again.
    pub async fn transfer_leadership(
        &self,
        target: NodeId,
        timeout: Duration,
    ) -> Result<(), MembershipError> {
        self.change(Change::TransferLeadership(target)).await?;
        match self.wait_for(timeout, |status| status.leader_id == Some(target)).await {
            Ok(_) => Ok(()),
            Err(WaitError::Shutdown) => Err(MembershipError::Shutdown),
            Err(WaitError::Timeout) => Err(MembershipError::TransferTimedOut { target }),
        }
    }

    async fn change(&self, change: Change) -> Result<Configuration, MembershipError> {
        let (reply, result) = oneshot::channel();
        self.shared
            .requests
            .send(Request::Change { change, reply })
            .await
            .map_err(|_| MembershipError::Shutdown)?;
        result.await.unwrap_or(Err(MembershipError::Shutdown))
    }

    /// What the node knows now. Once the node has stopped (shut down, or stopped on a fatal
    /// error: [`is_running`](Self::is_running) is false), its role is [`Role::Stopped`] with
    /// no leader and no followers, and its indexes are the last ones it published.
    ///
    /// ```
    /// # use raft_consensus::storage::MemoryStorage;
    /// # use raft_consensus::transport::ChannelNetwork;
    /// # use raft_consensus::{Config, NodeId, RaftNode, Role, StateMachine, WaitError};
    /// # use std::time::Duration;
    /// # struct Noop;
    /// # impl StateMachine for Noop {
    /// #     fn apply(&mut self, _: &[u8]) -> Result<Vec<u8>, Box<dyn std::error::Error + Send + Sync>> {
    /// #         Ok(Vec::new())
    /// #     }
    /// # }
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let network = ChannelNetwork::new();
    /// # let node = RaftNode::start(NodeId(1), [NodeId(1)], Config::default(), MemoryStorage::new(), network.join(NodeId(1)), Noop)?;
    /// node.wait_for(Duration::from_secs(5), |status| status.is_leader()).await?;
    /// node.shutdown().await?;
    /// assert_eq!(node.status().role, Role::Stopped);
    /// let waited = node.wait_for(Duration::from_secs(5), |status| status.applied_index.0 > 0).await;
    /// assert_eq!(waited, Err(WaitError::Shutdown));
    /// # Ok(())
    /// # }
    /// ```
    pub fn status(&self) -> Status {
        let mut status = self.shared.status.borrow().clone();
        if !self.is_running() {
            // The task publishes the stopped status as it ends; a task that never got there
            // (its runtime shut down) left its last running one.
            status.mark_stopped();
        }
        status
    }

    /// Whether the node still runs: false from the moment it stops on its own (a storage
    /// failure or a broken rule, see [`fatal_error`](Self::fatal_error)) or is shut down.
    pub fn is_running(&self) -> bool {
        self.shared.stopped.get().is_none() && self.shared.status.has_changed().is_ok()
    }

    /// Why the node stopped on its own, once it has (the error
    /// [`shutdown`](Self::shutdown) returns); `None` while it runs or after a requested
    /// shutdown. Set the moment it stops, before it answers the requests still waiting.
    pub fn fatal_error(&self) -> Option<FatalError> {
        self.shared.stopped.get().cloned().flatten()
    }

    /// Subscribes to what happens on the node from now on ([`NodeEvent`]): role and leader
    /// changes, the applied index (coalesced), snapshots taken and installed, and, last, the
    /// node stopping, after which the receiver reports `Closed`. Read
    /// [`status`](Self::status) for where the node stands when you subscribe.
    ///
    /// The channel holds [`EVENTS_CAPACITY`](crate::events::EVENTS_CAPACITY) events per
    /// subscriber and the node never waits for one: a subscriber that falls further behind
    /// loses the oldest and its next `recv` reports how many
    /// ([`RecvError::Lagged`](broadcast::error::RecvError::Lagged)); read `status` then.
    /// A node with no subscriber builds no events.
    ///
    /// ```
    /// # use raft_consensus::storage::MemoryStorage;
    /// # use raft_consensus::transport::ChannelNetwork;
    /// # use raft_consensus::{Config, NodeId, RaftNode, StateMachine};
    /// use raft_consensus::events::NodeEvent;
    /// # use std::time::Duration;
    /// # struct Noop;
    /// # impl StateMachine for Noop {
    /// #     fn apply(&mut self, _: &[u8]) -> Result<Vec<u8>, Box<dyn std::error::Error + Send + Sync>> {
    /// #         Ok(Vec::new())
    /// #     }
    /// # }
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let network = ChannelNetwork::new();
    /// let node = RaftNode::start(NodeId(1), [NodeId(1)], Config::default(), MemoryStorage::new(), network.join(NodeId(1)), Noop)?;
    /// let mut events = node.events();
    /// let leader = tokio::time::timeout(Duration::from_secs(5), async {
    ///     loop {
    ///         if let NodeEvent::LeaderChanged { leader: Some(leader), .. } = events.recv().await? {
    ///             return Ok::<_, tokio::sync::broadcast::error::RecvError>(leader);
    ///         }
    ///     }
    /// })
    /// .await??;
    /// assert_eq!(leader, NodeId(1));
    /// # node.shutdown().await?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn events(&self) -> broadcast::Receiver<NodeEvent> {
        match self.shared.events.upgrade() {
            Some(sender) => sender.subscribe(),
            // The node's task has ended: a receiver that reports `Closed` at once.
            None => broadcast::channel(1).1,
        }
    }

    /// What the node has done since it started.
    pub fn metrics(&self) -> NodeMetrics {
        let counters = &self.shared.counters;
        let read = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        NodeMetrics {
            proposals: read(&counters.proposals),
            proposals_refused: read(&counters.proposals_refused),
            entries_committed: read(&counters.entries_committed),
            commands_applied: read(&counters.commands_applied),
            elections_started: read(&counters.elections_started),
            protocol_violations: read(&counters.protocol_violations),
            disk_stall_step_downs: read(&counters.disk_stall_step_downs),
            leader_changes: read(&counters.leader_changes),
            term: self.shared.status.borrow().term.0,
            snapshots_stored: read(&counters.snapshots_stored),
            snapshots_installed: read(&counters.snapshots_installed),
            snapshot_index: self.shared.status.borrow().snapshot_index.0,
        }
    }

    /// Waits until `condition` holds for the node's status, at most `timeout`, and returns
    /// that status. Fails with [`WaitError::Timeout`] when it does not hold in time, and with
    /// [`WaitError::Shutdown`] as soon as the node has stopped, even if `condition` holds on
    /// the status it stopped with (see [`status`](Self::status)).
    pub async fn wait_for(
        &self,
        timeout: Duration,
        mut condition: impl FnMut(&Status) -> bool,
    ) -> Result<Status, WaitError> {
        let mut status = self.shared.status.clone();
        let stopped_or_holds =
            status.wait_for(|current| current.role == Role::Stopped || condition(current));
        match tokio::time::timeout(timeout, stopped_or_holds).await {
            Ok(Ok(current)) if current.role != Role::Stopped && self.is_running() => {
                Ok(current.clone())
            }
            Ok(_) => Err(WaitError::Shutdown),
            Err(_) => Err(WaitError::Timeout),
        }
    }

    /// Waits until the node has stopped, shut down or on its own, and returns why it
    /// stopped on its own, if it did (as [`fatal_error`](Self::fatal_error)). Unlike
    /// [`wait_for`](Self::wait_for) it does not wake while the node runs, so a task can wait
    /// on it for the node's whole life at no cost.
    ///
    /// ```
    /// # use raft_consensus::storage::MemoryStorage;
    /// # use raft_consensus::transport::ChannelNetwork;
    /// # use raft_consensus::{Config, NodeId, RaftNode, StateMachine};
    /// # struct Noop;
    /// # impl StateMachine for Noop {
    /// #     fn apply(&mut self, _: &[u8]) -> Result<Vec<u8>, Box<dyn std::error::Error + Send + Sync>> {
    /// #         Ok(Vec::new())
    /// #     }
    /// # }
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let network = ChannelNetwork::new();
    /// # let node = RaftNode::start(NodeId(1), [NodeId(1)], Config::default(),
    /// #     MemoryStorage::new(), network.join(NodeId(1)), Noop)?;
    /// let watcher = tokio::spawn({
    ///     let node = node.clone();
    ///     async move { node.stopped().await }
    /// });
    /// node.shutdown().await?;
    /// assert!(watcher.await?.is_none(), "a requested shutdown is no fatal error");
    /// # Ok(())
    /// # }
    /// ```
    pub async fn stopped(&self) -> Option<FatalError> {
        let mut ended = self.shared.ended.clone();
        // Nothing is sent on the channel: `changed` returns only once the loop dropped its
        // sender, or at once if it already has.
        let _ = ended.changed().await;
        self.fatal_error()
    }

    /// Stops the node: proposals not yet appended fail with [`ProposeError::Shutdown`],
    /// appended ones with [`ProposeError::OutcomeUnknown`], and the task ends. Returns why
    /// the node stopped earlier on its own, if it did: a storage failure, or a broken safety
    /// rule ([`FatalError`]). Calling it again returns `Ok`. It returns once nothing of the
    /// node writes to its storage any more: a snapshot being written is finished first, so
    /// a node started next on the same data directory has it to itself.
    pub async fn shutdown(&self) -> Result<(), FatalError> {
        let stop = self.shared.stop.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).take();
        if let Some(stop) = stop {
            let _ = stop.send(());
        }
        let task = self.shared.task.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).take();
        match task {
            Some(task) => match task.await {
                Ok(result) => result,
                Err(join_error) if join_error.is_panic() => {
                    std::panic::resume_unwind(join_error.into_panic())
                }
                Err(_) => Ok(()),
            },
            None => Ok(()),
        }
    }
}

/// Waits for the snapshot write in `write` (which the caller checked is there).
async fn wait_for_write(write: &mut Option<SnapshotWrite>) -> Result<Snapshot, StorageError> {
    let Some(handle) = write.as_mut() else {
        return std::future::pending().await;
    };
    match handle.await {
        Ok(outcome) => outcome,
        Err(join_error) if join_error.is_panic() => {
            std::panic::resume_unwind(join_error.into_panic())
        }
        Err(_) => {
            Err(StorageError::Corrupt { detail: String::from("the snapshot write was cancelled") })
        }
    }
}

/// What the node's task counts, read by [`RaftNode::metrics`].
#[derive(Debug, Default)]
struct Counters {
    proposals: AtomicU64,
    proposals_refused: AtomicU64,
    entries_committed: AtomicU64,
    commands_applied: AtomicU64,
    elections_started: AtomicU64,
    protocol_violations: AtomicU64,
    disk_stall_step_downs: AtomicU64,
    leader_changes: AtomicU64,
    snapshots_stored: AtomicU64,
    snapshots_installed: AtomicU64,
}

/// What woke the node's task up.
enum Wakeup {
    Stop,
    Synced(Result<(), StorageError>),
    Message(Message),
    TransportClosed,
    Request(Request),
    SnapshotWritten(Result<Snapshot, StorageError>),
    Deadline,
}

/// The text of a panic's payload.
fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|text| (*text).to_owned()))
        .unwrap_or_else(|| String::from("a panic with a non-text payload"))
}

/// A snapshot being stored on a blocking thread.
type SnapshotWrite = JoinHandle<Result<Snapshot, StorageError>>;

struct NodeLoop<S: Storage, T, M: StateMachine> {
    node: Node<S, M, ProposeReply>,
    /// Completes the storage's syncs while the node goes on.
    syncs: SyncThread,
    /// The snapshot being written, if any: the node keeps serving meanwhile.
    snapshot_write: Option<SnapshotWrite>,
    counters: Arc<Counters>,
    /// The commit index and leader at the last count.
    counted_commit: LogIndex,
    counted_leader: Option<NodeId>,
    transport: T,
    requests: mpsc::Receiver<Request>,
    stop_requested: oneshot::Receiver<()>,
    status: watch::Sender<Status>,
    /// Proposals answered by the batch being processed (kept to reuse its allocation).
    completed: Vec<(ProposeReply, ProposalResult)>,
    /// Reads the node is confirming, by the id it gave them.
    reads: HashMap<ReadId, ReadReply>,
    /// Reads that may be served (or failed) after the batch being processed.
    ready_reads: Vec<(ReadId, Result<LogIndex, ReadError>)>,
    /// The membership change this leader appended and has not answered: the index of its
    /// first entry, and who waits for it.
    pending_change: Option<(LogIndex, ChangeReply)>,
    /// The configuration the transport was last told about.
    known_configuration: Arc<Configuration>,
    epoch: Instant,
    /// Shared with the handles: set when the loop ends.
    stopped: Arc<Stopped>,
    /// Dropped when the loop ends, which wakes [`RaftNode::stopped`].
    ended: Option<watch::Sender<()>>,
    /// Tells subscribers what changed.
    events: EventPublisher,
}

/// The runtime's side of [`NodeIo`]: messages go to the transport, syncs to the sync thread,
/// answers to a buffer sent once the new status is published.
struct LoopIo<'a, T> {
    transport: &'a mut T,
    syncs: &'a SyncThread,
    completed: &'a mut Vec<(ProposeReply, ProposalResult)>,
    ready_reads: &'a mut Vec<(ReadId, Result<LogIndex, ReadError>)>,
    applied: u64,
}

impl<T: Transport> NodeIo<ProposeReply> for LoopIo<'_, T> {
    fn send(&mut self, message: Message) {
        self.transport.send(message);
    }

    fn start_sync(&mut self, sync: Box<dyn PendingSync>) {
        self.syncs.start(sync);
    }

    fn answer(&mut self, waiter: ProposeReply, result: ProposalResult) {
        self.completed.push((waiter, result));
    }

    fn read_ready(&mut self, read: ReadId, result: Result<LogIndex, ReadError>) {
        self.ready_reads.push((read, result));
    }

    fn applied(&mut self, _index: LogIndex, _term: Term, _command: &[u8], _result: &ApplyResult) {
        self.applied += 1;
    }
}

impl<S: Storage, T: Transport, M: StateMachine + 'static> NodeLoop<S, T, M> {
    async fn run(mut self) -> Result<(), FatalError> {
        let id = self.node.id();
        let mut transport_open = true;
        let result = loop {
            if let Err(error) = self.guarded(|node_loop| {
                node_loop.process()?;
                node_loop.start_snapshot_if_due()
            }) {
                break Err(error);
            }
            let deadline = self.epoch + Duration::from_millis(self.node.next_deadline_ms());
            // Peers' messages come before client requests: a flood of requests must never
            // starve the replies and heartbeats that let the cluster make progress.
            let wakeup = tokio::select! {
                biased;
                _ = &mut self.stop_requested => Wakeup::Stop,
                synced = self.syncs.done(), if self.node.syncs_in_flight() > 0 => Wakeup::Synced(synced),
                message = self.transport.recv(), if transport_open => match message {
                    Some(message) => Wakeup::Message(message),
                    None => Wakeup::TransportClosed,
                },
                request = self.requests.recv() => match request {
                    Some(request) => Wakeup::Request(request),
                    None => Wakeup::Stop,
                },
                written = wait_for_write(&mut self.snapshot_write), if self.snapshot_write.is_some() => {
                    self.snapshot_write = None;
                    Wakeup::SnapshotWritten(written)
                }
                _ = tokio::time::sleep_until(deadline) => Wakeup::Deadline,
            };
            match wakeup {
                Wakeup::Stop => break Ok(()),
                Wakeup::TransportClosed => transport_open = false,
                Wakeup::Request(request) => {
                    if let Err(error) = self.gather_requests(request).await {
                        break Err(error);
                    }
                }
                wakeup => {
                    if let Err(error) = self.guarded(|node_loop| node_loop.handle(wakeup)) {
                        break Err(error);
                    }
                }
            }
        };
        // First: from here on, handles report the node stopped, not its last role.
        let _ = self.stopped.set(result.as_ref().err().cloned());
        self.status.send_modify(Status::mark_stopped);
        self.ended = None;
        self.stop(&result);
        // A snapshot still being written on its blocking thread finishes before the node
        // counts as stopped: it writes into the data directory (and removes older snapshots
        // there once done), which a node started next on the same directory must have to
        // itself. Its outcome no longer matters: a finished file is found at the next start.
        if let Some(write) = self.snapshot_write.take() {
            let _ = write.await;
        }
        self.events.stopped(result.as_ref().err().cloned());
        tracing::info!(target: LOG_TARGET, node = %id, "Stopped");
        result
    }

    /// Feeds what woke the node up into it, and advances its clock.
    fn handle(&mut self, wakeup: Wakeup) -> Result<(), StorageError> {
        match wakeup {
            Wakeup::Synced(synced) => {
                synced?;
                let (node, mut io) = self.split();
                node.sync_done(&mut io);
            }
            Wakeup::Message(message) => self.handle_messages(message),
            Wakeup::Request(request) => {
                self.handle_requests(request, MAX_BATCH);
            }
            Wakeup::SnapshotWritten(written) => self.node.snapshot_stored(written)?,
            Wakeup::Stop | Wakeup::TransportClosed | Wakeup::Deadline => {}
        }
        let now_ms = self.now_ms();
        self.node.tick(now_ms);
        Ok(())
    }

    /// Runs `work` on the node. A storage error, or a panic (a broken safety rule asserted
    /// in the core, or a panicking state machine), becomes the error that stops the node,
    /// logged with its reason; the loop then answers every waiting proposal and ends.
    fn guarded(
        &mut self,
        work: impl FnOnce(&mut Self) -> Result<(), StorageError>,
    ) -> Result<(), FatalError> {
        let id = self.node.id();
        let error = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| work(self))) {
            Ok(Ok(())) => return Ok(()),
            Ok(Err(storage)) => FatalError::Storage(storage),
            Err(panic) => FatalError::Panicked { message: panic_message(panic.as_ref()) },
        };
        tracing::error!(target: LOG_TARGET, node = %id, "Stopping: {error}");
        Err(error)
    }

    /// The node and the I/O it hands its work to.
    fn split(&mut self) -> (&mut Node<S, M, ProposeReply>, LoopIo<'_, T>) {
        (
            &mut self.node,
            LoopIo {
                transport: &mut self.transport,
                syncs: &self.syncs,
                completed: &mut self.completed,
                ready_reads: &mut self.ready_reads,
                applied: 0,
            },
        )
    }

    /// Takes a snapshot when one is due and writes it on a blocking thread. The state machine
    /// freezes a view of itself on this task (after a leader's round of heartbeats), which is
    /// written out on the blocking thread; a pause longer than a heartbeat interval is logged.
    fn start_snapshot_if_due(&mut self) -> Result<(), StorageError> {
        if self.snapshot_write.is_some() || !self.node.snapshot_due() {
            return Ok(());
        }
        let started = std::time::Instant::now();
        let (node, mut io) = self.split();
        let taken = node.take_snapshot(&mut io);
        self.answer_completed();
        let Some(snapshot) = taken? else {
            return Ok(());
        };
        let paused = started.elapsed();
        let heartbeat = Duration::from_millis(self.node.core().config().heartbeat_interval_ms);
        if paused > heartbeat {
            tracing::warn!(target: LOG_TARGET, node = %self.node.id(), "Taking a snapshot through {} held the node up for {} ms (heartbeats every {} ms)", snapshot.meta().last_included, paused.as_millis(), heartbeat.as_millis());
        }
        let mut store = self.node.snapshot_store();
        self.snapshot_write =
            Some(tokio::task::spawn_blocking(move || snapshot.write_into(&mut store)));
        Ok(())
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Takes `first` and the requests queued behind it into one batch. Then, while the batch
    /// has room, it yields to the runtime (at most [`GATHER_ROUNDS`] times, and no more once a
    /// yield brought nothing) and takes what arrived meanwhile: under load, the tasks that
    /// are about to propose (an HTTP connection whose request was just read, say) send theirs
    /// into the same batch, so one write, one sync and one message per follower serve them
    /// all. On an idle runtime a yield comes straight back, so a lone request waits for no
    /// one.
    async fn gather_requests(&mut self, first: Request) -> Result<(), FatalError> {
        let mut taken = 0;
        let mut next = Some(first);
        let mut rounds = 0;
        while let Some(request) = next {
            self.guarded(|node_loop| {
                taken += node_loop.handle_requests(request, MAX_BATCH - taken);
                Ok(())
            })?;
            if taken >= MAX_BATCH || rounds == GATHER_ROUNDS {
                break;
            }
            rounds += 1;
            tokio::task::yield_now().await;
            next = self.requests.try_recv().ok();
        }
        Ok(())
    }

    /// Takes `first` and whatever else is queued, `room` requests at most (at least one),
    /// into the core; returns how many it took.
    fn handle_requests(&mut self, first: Request, room: usize) -> usize {
        let now_ms = self.now_ms();
        self.node.tick(now_ms);
        let mut next = Some(first);
        let mut taken = 0;
        while let Some(request) = next {
            match request {
                Request::Propose { command, reply } => match self.node.propose(command, reply) {
                    Ok(_) => {
                        self.counters.proposals.fetch_add(1, Ordering::Relaxed);
                    }
                    Err((error, reply)) => {
                        self.counters.proposals_refused.fetch_add(1, Ordering::Relaxed);
                        let _ = reply.send(Err(error));
                    }
                },
                Request::Change { change, reply } => self.start_change(change, reply),
                Request::Read { policy, reply } => match self.node.read(policy) {
                    Ok(read) => {
                        self.reads.insert(read, reply);
                    }
                    Err(error) => reply.fail(error),
                },
            }
            taken += 1;
            next = if taken < room { self.requests.try_recv().ok() } else { None };
        }
        taken
    }

    /// Starts a membership change (or transfer) and keeps its reply until it completes.
    fn start_change(&mut self, change: Change, reply: ChangeReply) {
        if self.pending_change.is_some() {
            let _ = reply.send(Err(MembershipError::ChangeInProgress));
            return;
        }
        let started = match change {
            Change::AddLearner(id, address) => self.node.add_learner(id, address),
            Change::SetVoters(voters) => self.node.change_voters(voters),
            Change::Remove(id) => self.node.remove_member(id),
            Change::TransferLeadership(target) => {
                let outcome = self.node.transfer_leadership(target);
                let _ = reply.send(outcome.map(|()| self.node.core().configuration().clone()));
                return;
            }
        };
        match started {
            Ok(index) => self.pending_change = Some((index, reply)),
            Err(error) => {
                let _ = reply.send(Err(error));
            }
        }
    }

    /// Answers the pending membership change once it completed or can no longer be
    /// followed, and tells the transport about a new configuration.
    fn follow_membership(&mut self) {
        if let Some((index, _)) = &self.pending_change
            && let Some(outcome) = self.node.change_outcome(*index)
            && let Some((_, reply)) = self.pending_change.take()
        {
            let _ = reply.send(outcome.map(|()| self.node.core().configuration().clone()));
        }
        let configuration = self.node.core().shared_configuration();
        if !Arc::ptr_eq(&configuration, &self.known_configuration) {
            self.transport.update_members(&configuration);
            self.known_configuration = configuration;
        }
    }

    /// Steps `first` and whatever other messages have arrived (up to a batch).
    fn handle_messages(&mut self, first: Message) {
        let now_ms = self.now_ms();
        self.node.tick(now_ms);
        self.node.step(first);
        for _ in 1..MAX_BATCH {
            let Some(message) = self.transport.try_recv() else {
                break;
            };
            self.node.step(message);
        }
    }

    /// Carries out the node's work, then publishes the new status, then answers the proposals
    /// that completed: a proposer that gets its result finds `status()` already showing it
    /// applied.
    fn process(&mut self) -> Result<(), StorageError> {
        let (node, mut io) = self.split();
        let result = node.process(&mut io);
        let applied = io.applied;
        self.counters.commands_applied.fetch_add(applied, Ordering::Relaxed);
        self.count();
        if result.is_ok() {
            self.follow_membership();
        }
        if result.is_ok() {
            // After a storage failure the core may hold state that never became durable:
            // the last status published stays the last one that was.
            let current = Status::of(self.node.core());
            let node = &self.node;
            self.events.observe(&current, node.snapshots_stored(), node.snapshots_installed());
            self.status.send_if_modified(|status| {
                let changed = *status != current;
                if changed {
                    *status = current;
                }
                changed
            });
            self.events.publish();
        }
        self.answer_completed();
        result
    }

    /// Sends the answers the node produced (the buffer is kept, so answering allocates
    /// nothing), and serves the reads that may be served.
    fn answer_completed(&mut self) {
        for (reply, outcome) in self.completed.drain(..) {
            let _ = reply.send(outcome);
        }
        for (read, outcome) in self.ready_reads.drain(..) {
            let Some(reply) = self.reads.remove(&read) else { continue };
            match (reply, outcome) {
                (reply, Err(error)) => reply.fail(error),
                (ReadReply::Index(reply), Ok(read_index)) => drop(reply.send(Ok(read_index))),
                (ReadReply::Machine(read), Ok(_)) => {
                    let machine: &dyn Any = self.node.state_machine();
                    read(Ok(machine));
                }
                (ReadReply::Query(query, reply), Ok(_)) => {
                    let answer = self
                        .node
                        .state_machine()
                        .query(&query)
                        .map_err(|error| ReadError::Query(error.to_string()));
                    let _ = reply.send(answer);
                }
            }
        }
    }

    /// Updates the counters that follow the core's state.
    fn count(&mut self) {
        let core = self.node.core();
        let commit = core.commit_index();
        if commit > self.counted_commit {
            let newly = commit.0 - self.counted_commit.0;
            self.counters.entries_committed.fetch_add(newly, Ordering::Relaxed);
            self.counted_commit = commit;
        }
        if core.leader_id() != self.counted_leader {
            self.counted_leader = core.leader_id();
            self.counters.leader_changes.fetch_add(1, Ordering::Relaxed);
        }
        self.counters.elections_started.store(core.elections_started(), Ordering::Relaxed);
        self.counters.protocol_violations.store(core.protocol_violations(), Ordering::Relaxed);
        self.counters.disk_stall_step_downs.store(core.disk_stall_step_downs(), Ordering::Relaxed);
        let node = &self.node;
        self.counters.snapshots_stored.store(node.snapshots_stored(), Ordering::Relaxed);
        self.counters.snapshots_installed.store(node.snapshots_installed(), Ordering::Relaxed);
    }

    /// Answers every request still waiting, as the node stops.
    /// Appended proposals may still commit under another leader: their outcome is unknown.
    /// Queued ones were never appended: they fail with the reason the node stopped.
    fn stop(&mut self, result: &Result<(), FatalError>) {
        // A requested stop makes the last commit index durable (it is written without a sync
        // of its own), so that a restart applies everything this node applied. After a fatal
        // error the storage is not trusted with more.
        if result.is_ok()
            && let Err(error) = self.node.sync_storage()
        {
            tracing::warn!(target: LOG_TARGET, node = %self.node.id(), "Syncing the storage at shutdown failed: {error}");
        }
        let (node, mut io) = self.split();
        node.stop(&mut io);
        self.answer_completed();
        for (_, reply) in self.reads.drain() {
            reply.fail(ReadError::Shutdown);
        }
        if let Some((index, reply)) = self.pending_change.take() {
            let _ = reply.send(Err(MembershipError::OutcomeUnknown { index }));
        }
        self.requests.close();
        while let Ok(request) = self.requests.try_recv() {
            match request {
                Request::Propose { reply, .. } => {
                    let error = match result {
                        Err(FatalError::Storage(storage_error)) => {
                            ProposeError::Storage(storage_error.clone())
                        }
                        Err(FatalError::Panicked { .. }) | Ok(()) => ProposeError::Shutdown,
                    };
                    let _ = reply.send(Err(error));
                }
                Request::Change { reply, .. } => {
                    let _ = reply.send(Err(MembershipError::Shutdown));
                }
                Request::Read { reply, .. } => reply.fail(ReadError::Shutdown),
            }
        }
    }
}
