//! [`Node`]: one Raft node as a sans-I/O state machine, with everything around the protocol
//! core that does not depend on how time passes, bytes move or threads run.
//!
//! A `Node` owns a [`RaftCore`], its [`Storage`] and the application's [`StateMachine`]. It
//! restores the state machine from the latest snapshot when it starts, carries out the core's
//! work in the order Raft's safety depends on (the driver: send, write, flush, apply, and send
//! what promised durability only once the flush's sync completes), answers proposals with
//! their results (or says their outcome is unknown when leadership is lost), and decides when
//! to take a snapshot.
//!
//! What it leaves to its caller, the *pump*, is exactly what differs between runtimes: reading
//! a clock, moving messages, completing syncs on some thread, and storing snapshots
//! somewhere. The pump feeds events in ([`tick`](Node::tick), [`step`](Node::step),
//! [`propose`](Node::propose), [`sync_done`](Node::sync_done),
//! [`snapshot_stored`](Node::snapshot_stored)), then calls [`process`](Node::process), which
//! hands the work out through the [`NodeIo`] the pump implements. [`RaftNode`](crate::RaftNode)
//! is such a pump on tokio; the simulator (`sim`) is another on a virtual clock, so it tests
//! the very code production runs.
//!
//! # Driving a node by hand
//!
//! A single-node cluster on one thread, with syncs completed at once:
//!
//! ```
//! use std::error::Error;
//!
//! use raft_consensus::node::{Node, NodeIo};
//! use raft_consensus::storage::{MemoryStorage, PendingSync, Storage};
//! use raft_consensus::core::ReadPolicy;
//! use raft_consensus::{Config, LogIndex, Message, NodeId, ProposeError, ReadError, ReadId, Role, StateMachine};
//!
//! /// Adds each command's first byte to a total.
//! #[derive(Default)]
//! struct Total(u64);
//!
//! impl StateMachine for Total {
//!     fn apply(&mut self, command: &[u8]) -> Result<Vec<u8>, Box<dyn Error + Send + Sync>> {
//!         self.0 += u64::from(command[0]);
//!         Ok(self.0.to_le_bytes().to_vec())
//!     }
//! }
//!
//! /// What this little runtime does with the node's work: syncs are kept to complete after
//! /// `process` returns, answers are collected, and there is nobody to send messages to.
//! #[derive(Default)]
//! struct Pump {
//!     syncs: Vec<Box<dyn PendingSync>>,
//!     answers: Vec<(&'static str, Result<Vec<u8>, ProposeError>)>,
//!     reads: Vec<(ReadId, Result<LogIndex, ReadError>)>,
//! }
//!
//! impl NodeIo<&'static str> for Pump {
//!     fn send(&mut self, _message: Message) {}
//!     fn start_sync(&mut self, sync: Box<dyn PendingSync>) {
//!         self.syncs.push(sync);
//!     }
//!     fn answer(&mut self, waiter: &'static str, result: Result<Vec<u8>, ProposeError>) {
//!         self.answers.push((waiter, result));
//!     }
//!     fn read_ready(&mut self, read: ReadId, result: Result<LogIndex, ReadError>) {
//!         self.reads.push((read, result));
//!     }
//! }
//!
//! /// One pass of the loop a runtime runs: feed time, do the work, complete the syncs.
//! fn turn(node: &mut Node<MemoryStorage, Total, &'static str>, pump: &mut Pump, now_ms: u64) -> Result<(), Box<dyn Error>> {
//!     node.tick(now_ms);
//!     node.process(pump)?;
//!     while !pump.syncs.is_empty() {
//!         for sync in std::mem::take(&mut pump.syncs) {
//!             sync.complete()?;
//!             node.sync_done(pump);
//!         }
//!         node.process(pump)?;
//!     }
//!     Ok(())
//! }
//!
//! # fn main() -> Result<(), Box<dyn Error>> {
//! let mut node = Node::start(NodeId(1), [NodeId(1)], Config::default(), MemoryStorage::new(), Total::default(), 7)?;
//! let mut pump = Pump::default();
//! let mut now_ms = 0;
//! while node.core().role() != Role::Leader {
//!     now_ms += 10;
//!     turn(&mut node, &mut pump, now_ms)?;
//! }
//! node.propose(vec![5].into(), "first").map_err(|(error, _)| error)?;
//! node.propose(vec![2].into(), "second").map_err(|(error, _)| error)?;
//! turn(&mut node, &mut pump, now_ms)?;
//! let answers: Vec<(&str, Vec<u8>)> = pump.answers.drain(..).map(|(who, result)| (who, result.unwrap())).collect();
//! assert_eq!(answers, [("first", 5u64.to_le_bytes().to_vec()), ("second", 7u64.to_le_bytes().to_vec())]);
//!
//! // A linearizable read: once it is ready, the state machine reflects every write before it.
//! let read = node.read(ReadPolicy::ReadIndex)?;
//! turn(&mut node, &mut pump, now_ms)?;
//! assert_eq!(pump.reads, [(read, Ok(LogIndex(3)))]); // the no-op, then two commands
//! assert_eq!(node.state_machine().0, 7);
//! # Ok(())
//! # }
//! ```

use std::error::Error;

use bytes::Bytes;

use std::collections::BTreeMap;

use crate::config::{Config, MAX_MEMBERS};
use crate::core::{InitialState, LOG_TARGET, MemberAddress, RaftCore, ReadPolicy, Role};
pub use crate::driver::TakenSnapshot;
use crate::driver::{Applied, Driver, probe_snapshot_support, restore_snapshot};
use crate::error::{
    ConfigError, MembershipError, ProposeError, ReadError, StartError, StorageError,
};
use crate::message::{EntryPayload, Message, MessageBody};
use crate::proposals::{PendingProposals, ProposalOutcome};
use crate::snapshot::Snapshot;
use crate::state_machine::StateMachine;
use crate::storage::{PendingSync, Storage};
use crate::types::{LogIndex, NodeId, ReadId, Term};

/// What a state machine's `apply` returned.
pub type ApplyResult = Result<Vec<u8>, Box<dyn Error + Send + Sync>>;

/// How a proposal ended: the state machine's result, or why there is none.
pub type ProposalResult = Result<Vec<u8>, ProposeError>;

/// Where a [`Node`] hands out its work: the I/O its pump carries out. `W` is what the pump
/// keeps per proposal to answer it (a reply channel, a client id).
pub trait NodeIo<W> {
    /// Sends `message` to its `to` node. May drop it (Raft retries); must not block.
    fn send(&mut self, message: Message);

    /// Makes the writes flushed so far durable, later or now, on any thread: complete the
    /// syncs in the order they are handed out, and report each with [`Node::sync_done`].
    fn start_sync(&mut self, sync: Box<dyn PendingSync>);

    /// A proposal's outcome: the state machine's result once its entry is applied,
    /// [`ProposeError::NotLeader`] when another leader's entry took its index (it never
    /// committed), [`ProposeError::OutcomeUnknown`] when this node stopped leading first.
    fn answer(&mut self, waiter: W, result: ProposalResult);

    /// A read asked for with [`Node::read`] may be served now: the state machine has applied
    /// through its read index (`Ok`), or it cannot be served (`Err`).
    fn read_ready(&mut self, read: ReadId, result: Result<LogIndex, ReadError>);

    /// Observes each command applied, in log order (the simulator checks that every node
    /// applies the same). Does nothing by default.
    fn applied(&mut self, index: LogIndex, term: Term, command: &[u8], result: &ApplyResult) {
        let _ = (index, term, command, result);
    }
}

/// A member a cluster is bootstrapped with: its id and how to reach it. A bare [`NodeId`]
/// converts into one with empty addresses (enough for in-process transports).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    /// The member's id.
    pub id: NodeId,
    /// Its addresses, replicated with the configuration.
    pub address: MemberAddress,
}

impl From<NodeId> for Member {
    fn from(id: NodeId) -> Self {
        Member { id, address: MemberAddress::default() }
    }
}

/// One Raft node, sans I/O: see the [module documentation](self).
pub struct Node<S: Storage, M: StateMachine, W = ()> {
    driver: Driver<S, M>,
    /// Proposals appended to this leader's log, waiting for their entries to be applied.
    pending: PendingProposals<W>,
    /// The first entry of the latest membership change this node appended: its index and
    /// term, so that [`Node::change_outcome`] can tell it from an entry that replaced it.
    change_started: Option<(LogIndex, Term)>,
    /// Reads with a confirmed read index, waiting for the state machine to apply through it.
    reads_awaiting_apply: BTreeMap<LogIndex, Vec<ReadId>>,
    /// How many reads `reads_awaiting_apply` holds.
    reads_awaiting_apply_count: usize,
}

impl<S: Storage, M: StateMachine, W> Node<S, M, W> {
    /// Starts node `id` from what `storage` holds. `members` bootstrap a new cluster: its
    /// voting members (they must include `id`), as [`NodeId`]s or as [`Member`]s with their
    /// addresses. A node records them in storage the first time it starts; from then on the
    /// configuration it stores wins (membership changes move it), and a disagreeing
    /// `members` is logged once as a warning. An empty `members` starts a node that joins a
    /// running cluster: it stands for no election until it learns, from the leader, a
    /// configuration that makes it a voter. `state_machine` must be empty: it is restored from the latest stored
    /// snapshot, if there is one, and the committed entries after it are applied again as the
    /// node learns they are committed.
    ///
    /// `seed` drives the election timer's jitter: it must differ between the nodes of a
    /// cluster. The node's clock starts at the first [`tick`](Self::tick).
    ///
    /// Snapshots are taken (see the `snapshot_*` fields of [`Config`]) as
    /// [`Config::snapshot_mode`] says: by default when the state machine implements
    /// [`StateMachine::snapshot`] (one that does not never has its log compacted, which is
    /// logged once here as a warning naming its type); with
    /// [`SnapshotMode::Required`](crate::SnapshotMode::Required), a state machine without them
    /// fails the start with [`StartError::SnapshotsUnsupported`].
    pub fn start(
        id: NodeId,
        members: impl IntoIterator<Item = impl Into<Member>>,
        config: Config,
        mut storage: S,
        mut state_machine: M,
        seed: u64,
    ) -> Result<Self, StartError> {
        if let Some(storage_limit) = storage.max_entry_bytes()
            && config.max_entry_bytes > storage_limit
        {
            return Err(StartError::Config(ConfigError::EntryLimitAboveStorage {
                configured: config.max_entry_bytes,
                storage: storage_limit,
            }));
        }
        let mut initial: InitialState = storage.load()?;
        let mut addresses = BTreeMap::new();
        let mut given = Vec::new();
        for member in members {
            let Member { id, address } = member.into();
            addresses.insert(id, address);
            given.push(id);
        }
        given.sort_unstable();
        given.dedup();
        let members = agree_on_members(id, given, &mut initial, &mut storage)?;
        let snapshots_supported = probe_snapshot_support(&state_machine, config.snapshot_mode, id)?;
        if let Some(snapshot) = &initial.snapshot {
            restore_snapshot(&mut state_machine, &storage.snapshot_store(), snapshot)?;
            tracing::info!(target: LOG_TARGET, node = %id, "Restored the state machine from the snapshot through {}", snapshot.meta.last_included);
        }
        let mut core = RaftCore::new(id, members, config, initial, seed)?;
        core.learn_addresses(&addresses);
        tracing::info!(target: LOG_TARGET, node = %id, "Starting as Follower in term {} with {} log entries", core.term(), core.last_log_id().index);
        Ok(Node {
            driver: Driver::new(core, storage, state_machine, snapshots_supported),
            pending: PendingProposals::default(),
            change_started: None,
            reads_awaiting_apply: BTreeMap::new(),
            reads_awaiting_apply_count: 0,
        })
    }

    /// The protocol core, to read the node's state.
    pub fn core(&self) -> &RaftCore {
        &self.driver.core
    }

    /// The protocol core, to change what only the simulator changes (planted bugs).
    #[cfg(feature = "sim")]
    pub(crate) fn core_mut(&mut self) -> &mut RaftCore {
        &mut self.driver.core
    }

    /// The state machine, to read it.
    pub fn state_machine(&self) -> &M {
        self.driver.state_machine()
    }

    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.driver.core.id()
    }

    /// Advances the node's clock to `now_ms` (milliseconds from any fixed origin, never
    /// decreasing) and fires its timers if due.
    pub fn tick(&mut self, now_ms: u64) {
        self.driver.core.tick(now_ms);
    }

    /// When [`tick`](Self::tick) next has work to do.
    pub fn next_deadline_ms(&self) -> u64 {
        self.driver.core.next_deadline_ms()
    }

    /// Handles a message from another node. A message from a node outside this node's
    /// configuration is dropped here, before the core sees it, unless Raft needs it from
    /// there: a leader's entries or snapshot, a vote request, a removed leader's
    /// `TimeoutNow`, the answer to a forwarded read. Answers and read requests are dropped.
    pub fn step(&mut self, message: Message) {
        if !admits(self.driver.core.configuration(), &message) {
            tracing::debug!(node = %self.id(), from = %message.from, "Dropping a message from {}: not a member of the configuration", message.from);
            return;
        }
        self.driver.core.step(message);
    }

    /// Appends `command` to the leader's log and keeps `waiter` to answer once its outcome
    /// is known (through [`NodeIo::answer`]). A node that cannot take it gives `waiter` back
    /// with the reason: [`ProposeError::NotLeader`] with the leader it knows, or
    /// [`ProposeError::TooLarge`].
    pub fn propose(&mut self, command: Bytes, waiter: W) -> Result<LogIndex, (ProposeError, W)> {
        match self.driver.core.propose(command) {
            Ok(index) => {
                self.pending.insert(index, self.driver.core.term(), waiter);
                Ok(index)
            }
            Err(error) => Err((error, waiter)),
        }
    }

    /// Asks for a linearizable read (Raft thesis §6.4): a leader confirms its leadership (with
    /// a heartbeat round to a majority, or its lease when `policy` and the config allow), a
    /// follower asks its leader for the read index. Once the state machine here has applied
    /// through that index, [`NodeIo::read_ready`] says the read may be served: anything read
    /// from the state machine then reflects every write that completed before the read was
    /// asked for. Fails at once when no leader is known or too many reads wait; see
    /// [`RaftCore::read_index`]. Reads confirmed and still waiting for the state machine
    /// count against [`Config::max_pending_reads`] too.
    pub fn read(&mut self, policy: ReadPolicy) -> Result<ReadId, ReadError> {
        let limit = self.driver.core.config().max_pending_reads;
        if self.reads_awaiting_apply_count >= limit {
            return Err(ReadError::TooManyPending { limit });
        }
        self.driver.core.read_index(policy)
    }

    /// Leader: adds `id` as a learner reachable at `address`; see
    /// [`RaftCore::add_learner`]. Returns the index of the configuration entry: follow the
    /// change with [`change_outcome`](Self::change_outcome).
    pub fn add_learner(
        &mut self,
        id: NodeId,
        address: MemberAddress,
    ) -> Result<LogIndex, MembershipError> {
        let started = self.driver.core.add_learner(id, address);
        self.note_change(started)
    }

    /// Leader: changes the voters to `voters` through joint consensus; see
    /// [`RaftCore::change_voters`].
    pub fn change_voters(
        &mut self,
        voters: impl IntoIterator<Item = NodeId>,
    ) -> Result<LogIndex, MembershipError> {
        let started = self.driver.core.change_voters(voters);
        self.note_change(started)
    }

    /// Leader: removes member `id` (a learner at once, a voter through joint consensus); see
    /// [`RaftCore::remove_member`].
    pub fn remove_member(&mut self, id: NodeId) -> Result<LogIndex, MembershipError> {
        let started = self.driver.core.remove_member(id);
        self.note_change(started)
    }

    /// Records where a change started (the leader's current term), for `change_outcome`.
    fn note_change(
        &mut self,
        started: Result<LogIndex, MembershipError>,
    ) -> Result<LogIndex, MembershipError> {
        if let Ok(index) = started {
            self.change_started = Some((index, self.driver.core.term()));
        }
        started
    }

    /// Leader: hands leadership to `target`; see [`RaftCore::transfer_leadership`].
    pub fn transfer_leadership(&mut self, target: NodeId) -> Result<(), MembershipError> {
        self.driver.core.transfer_leadership(target)
    }

    /// What became of the membership change whose first entry this leader appended at
    /// `index` (the latest it started): `None` while it runs; `Ok` once its entry is still in
    /// the log and a configuration at or after it is committed and not joint (the change is
    /// complete); [`MembershipError::OutcomeUnknown`] once this node stopped leading before
    /// that (the change may still complete under another leader), or once another leader's
    /// entry replaced it.
    pub fn change_outcome(&self, index: LogIndex) -> Option<Result<(), MembershipError>> {
        let core = &self.driver.core;
        let started_term = match self.change_started {
            Some((started, term)) if started == index => Some(term),
            _ => None,
        };
        let replaced = match (started_term, core.entry(index)) {
            (Some(term), Some(entry)) => entry.term != term,
            // Compacted away, or never recorded: it cannot be told apart.
            (_, None) => index >= core.first_log_index(),
            (None, Some(_)) => false,
        };
        if replaced {
            return Some(Err(MembershipError::OutcomeUnknown { index }));
        }
        if core.configuration_index() >= index && !core.membership_change_in_progress() {
            // Complete (a leader that removed itself steps down only after this holds).
            return Some(Ok(()));
        }
        if core.role() != Role::Leader {
            return Some(Err(MembershipError::OutcomeUnknown { index }));
        }
        None
    }

    /// Carries out the work the inputs so far produced: sends, writes and flushes, hands
    /// each flush's sync to [`NodeIo::start_sync`], applies committed commands and answers
    /// their proposals. A node that stops leading answers every proposal still waiting with
    /// [`ProposeError::OutcomeUnknown`].
    ///
    /// An error means storage failed (or a received snapshot could not be restored): nothing
    /// that depends on the failed write has left the node, and the node must stop.
    pub fn process(&mut self, io: &mut impl NodeIo<W>) -> Result<(), StorageError> {
        let pending = &mut self.pending;
        let mut answers = Answers { io, pending };
        let result = self.driver.process_ready(&mut answers);
        if self.driver.core.role() != Role::Leader && !self.pending.is_empty() {
            // Appended under a leadership that is gone: they may or may not commit.
            for (index, waiter) in self.pending.take_all() {
                io.answer(waiter, Err(ProposeError::OutcomeUnknown { index }));
            }
        }
        if result.is_ok() {
            self.release_reads(io);
        }
        result
    }

    /// Hands out the reads whose outcome the core decided, once the state machine has
    /// applied through their read index.
    fn release_reads(&mut self, io: &mut impl NodeIo<W>) {
        let applied = self.driver.core.applied_index();
        for (read, outcome) in self.driver.core.take_read_outcomes() {
            match outcome {
                Ok(read_index) if read_index > applied => {
                    self.reads_awaiting_apply.entry(read_index).or_default().push(read);
                    self.reads_awaiting_apply_count += 1;
                }
                outcome => io.read_ready(read, outcome),
            }
        }
        while let Some(entry) = self.reads_awaiting_apply.first_entry() {
            if *entry.key() > applied {
                break;
            }
            let read_index = *entry.key();
            let reads = entry.remove();
            self.reads_awaiting_apply_count -= reads.len();
            for read in reads {
                io.read_ready(read, Ok(read_index));
            }
        }
    }

    /// Reports that the oldest sync handed to [`NodeIo::start_sync`] completed: what waited
    /// for it is sent, and the core learns it is durable. Call [`process`](Self::process)
    /// next. (A sync that failed is fatal: the node must stop, not report it.)
    pub fn sync_done(&mut self, io: &mut impl NodeIo<W>) {
        self.driver.sync_done(|message| io.send(message));
    }

    /// How many syncs handed out are not reported done.
    pub fn syncs_in_flight(&self) -> usize {
        self.driver.syncs_in_flight()
    }

    /// Whether [`take_snapshot`](Self::take_snapshot) would take one now: enough was applied
    /// since the last one (the config's `snapshot_after_*`), the state machine supports
    /// snapshots, and none is being stored.
    pub fn snapshot_due(&self) -> bool {
        self.driver.snapshot_due()
    }

    /// Freezes a snapshot of the state machine when one is due
    /// ([`StateMachine::snapshot_view`]), for the pump to write into
    /// [`snapshot_store`](Self::snapshot_store) with [`TakenSnapshot::write_into`] (on another
    /// thread if it likes) and report with [`snapshot_stored`](Self::snapshot_stored).
    ///
    /// A state machine without its own `snapshot_view` serializes itself here, which holds
    /// the node up meanwhile. A leader therefore first sends a round of heartbeats (through
    /// `io`), so that its followers' election timers start afresh and the pause has the whole
    /// minimum election timeout to fit in.
    pub fn take_snapshot(
        &mut self,
        io: &mut impl NodeIo<W>,
    ) -> Result<Option<TakenSnapshot>, StorageError> {
        if !self.driver.snapshot_due() {
            return Ok(None);
        }
        if self.driver.core.role() == Role::Leader {
            self.driver.core.heartbeat_now();
            self.process(io)?;
        }
        Ok(self.driver.take_snapshot_if_due())
    }

    /// A handle that stores snapshots, for the pump to store what
    /// [`take_snapshot`](Self::take_snapshot) took.
    pub fn snapshot_store(&self) -> S::Snapshots {
        self.driver.snapshot_store()
    }

    /// Reports how storing the snapshot from [`take_snapshot`](Self::take_snapshot) went: once
    /// stored, the log is compacted behind it. A failed store is logged and retried with the
    /// next snapshot; an error means compaction failed, and the node must stop.
    pub fn snapshot_stored(
        &mut self,
        outcome: Result<Snapshot, StorageError>,
    ) -> Result<(), StorageError> {
        self.driver.snapshot_stored(outcome)
    }

    /// Snapshots this node took and stored since it started.
    pub fn snapshots_stored(&self) -> u64 {
        self.driver.snapshots_stored
    }

    /// Snapshots received from a leader and restored since the node started.
    pub fn snapshots_installed(&self) -> u64 {
        self.driver.snapshots_installed
    }

    /// Makes every write so far durable, including a hard state whose only change was the
    /// commit index (written without a sync of its own, see [`Ready::must_sync`]): a pump
    /// calls it when it shuts the node down cleanly, so that a node restarted on the same
    /// storage applies everything it had applied before.
    ///
    /// [`Ready::must_sync`]: crate::core::Ready::must_sync
    pub fn sync_storage(&mut self) -> Result<(), StorageError> {
        self.driver.sync_storage()
    }

    /// Stops the node: every proposal still waiting is answered with
    /// [`ProposeError::OutcomeUnknown`] (it may still commit under another leader).
    pub fn stop(&mut self, io: &mut impl NodeIo<W>) {
        for (index, waiter) in self.pending.take_all() {
            io.answer(waiter, Err(ProposeError::OutcomeUnknown { index }));
        }
        self.reads_awaiting_apply_count = 0;
        let waiting = std::mem::take(&mut self.reads_awaiting_apply).into_values().flatten();
        for read in waiting.chain(self.driver.core.abandon_reads()) {
            io.read_ready(read, Err(ReadError::Shutdown));
        }
    }
}

/// Whether a node with `configuration` takes `message` to its core. A member's message
/// always; a joining node (no configuration yet) takes every message, since it learns its
/// configuration from them. From a node outside the configuration only the requests Raft
/// needs a node to take from there, because the sender may know a newer configuration than
/// this node: a leader's `AppendEntries` and `InstallSnapshot` (this node missed the entry
/// adding it), a candidate's `RequestVote` and `PreVote` (§4.1: a voter that has not yet
/// received the entry adding the candidate must still vote, or a change interrupted by a
/// failure could leave no electable majority), a removed leader's `TimeoutNow` (it hands
/// leadership to a member once its removal commits), and the answer to a read this node
/// forwarded. Answers to requests (votes, acknowledgements) and read requests come only from
/// the members this node asked or serves: from anyone else they are dropped, so a node with
/// no place in the cluster cannot push a term or an acknowledgement into it that way.
fn admits(configuration: &crate::core::Configuration, message: &Message) -> bool {
    configuration.is_unknown()
        || configuration.is_member(message.from)
        || matches!(
            message.body,
            MessageBody::AppendEntries { .. }
                | MessageBody::InstallSnapshot { .. }
                | MessageBody::RequestVote { .. }
                | MessageBody::PreVote { .. }
                | MessageBody::TimeoutNow
                | MessageBody::ReadIndexResponse { .. }
        )
}

/// The bootstrap voters of a node's core: the members record if storage holds one, else
/// `given` (sorted, without duplicates), which is recorded durably on a node's first start.
/// An empty `given` starts a node that joins a running cluster and learns its configuration
/// from the leader.
///
/// Once a node has a stored configuration (the members record, a snapshot's, or a
/// configuration entry in its log), that configuration wins over `given`: membership changes
/// move it away from any list a node was first started with, so a disagreeing `given` is
/// logged once as a warning and otherwise ignored.
fn agree_on_members<S: Storage>(
    id: NodeId,
    given: Vec<NodeId>,
    initial: &mut InitialState,
    storage: &mut S,
) -> Result<Vec<NodeId>, StartError> {
    if given.len() > MAX_MEMBERS {
        return Err(StartError::Membership {
            reason: format!(
                "{} members are more than the {MAX_MEMBERS} a node supports",
                given.len()
            ),
        });
    }
    let recorded = initial.members.take();
    let logged = initial.entries.iter().rev().find_map(|entry| match &entry.payload {
        EntryPayload::Configuration(configuration) => Some(configuration.voters().to_vec()),
        _ => None,
    });
    let snapshotted = initial
        .snapshot
        .as_ref()
        .map(|snapshot| &snapshot.meta.configuration)
        .filter(|configuration| !configuration.is_unknown())
        .map(|configuration| configuration.voters().to_vec());
    let stored = logged.or(snapshotted).or_else(|| recorded.clone());
    match (&stored, &recorded) {
        (Some(stored), _) => {
            if !given.is_empty() && *stored != given {
                tracing::warn!(
                    target: LOG_TARGET,
                    node = %id,
                    "Started with members {} but the stored configuration has voters {}; the stored configuration wins",
                    list(&given),
                    list(stored)
                );
            }
        }
        (None, None) => {
            if given.contains(&id) {
                storage.save_members(&given)?;
                storage.sync()?;
            }
        }
        (None, Some(_)) => {}
    }
    Ok(recorded.unwrap_or(given))
}

/// `members` as `[node1, node2]`.
fn list(members: &[NodeId]) -> String {
    let names: Vec<String> = members.iter().map(NodeId::to_string).collect();
    format!("[{}]", names.join(", "))
}

/// The driver's sink: observes each applied command, then answers its proposal.
struct Answers<'a, I, W> {
    io: &'a mut I,
    pending: &'a mut PendingProposals<W>,
}

impl<I: NodeIo<W>, W> crate::driver::ReadySink for Answers<'_, I, W> {
    fn send(&mut self, message: Message) {
        self.io.send(message);
    }

    fn start_sync(&mut self, sync: Box<dyn PendingSync>) {
        self.io.start_sync(sync);
    }

    fn applied(&mut self, applied: Applied) {
        self.io.applied(applied.index, applied.term, &applied.command, &applied.result);
        if let Some((waiter, outcome)) = self.pending.on_applied(applied) {
            let result = match outcome {
                ProposalOutcome::Applied(applied) => applied.result.map_err(ProposeError::Apply),
                // Another leader's entry took this index: it never committed.
                ProposalOutcome::Overwritten => Err(ProposeError::NotLeader { leader_hint: None }),
            };
            self.io.answer(waiter, result);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state_machine::SnapshotMode;
    use crate::storage::MemoryStorage;

    /// A state machine that accepts anything.
    #[derive(Default)]
    struct Accepting;

    impl StateMachine for Accepting {
        fn apply(&mut self, _command: &[u8]) -> ApplyResult {
            Ok(Vec::new())
        }
    }

    fn start(
        storage: &MemoryStorage,
        members: &[u64],
    ) -> Result<Node<MemoryStorage, Accepting>, StartError> {
        let members = members.iter().copied().map(NodeId);
        Node::start(NodeId(1), members, Config::default(), storage.clone(), Accepting, 1)
    }

    #[test]
    fn a_node_records_its_members_and_the_stored_ones_win_on_restart() {
        let storage = MemoryStorage::new();
        start(&storage, &[3, 1, 2, 2]).expect("a first start records the members");
        assert_eq!(
            storage.clone().load().expect("loads").members,
            Some(vec![NodeId(1), NodeId(2), NodeId(3)]),
            "sorted, without duplicates, and durable before the node runs"
        );
        start(&storage, &[2, 3, 1]).expect("the same members in another order");
        let node = start(&storage, &[1, 2]).expect("other members: the stored ones win");
        assert_eq!(node.core().voters(), &[NodeId(1), NodeId(2), NodeId(3)]);
        let joined = start(&storage, &[]).expect("no members: the stored ones");
        assert_eq!(joined.core().voters(), &[NodeId(1), NodeId(2), NodeId(3)]);
        assert_eq!(
            storage.clone().load().expect("loads").members.map(|m| m.len()),
            Some(3),
            "unchanged"
        );
    }

    #[test]
    fn a_node_started_without_members_joins_and_never_stands() {
        let storage = MemoryStorage::new();
        let mut node = start(&storage, &[]).expect("a joining node starts");
        assert!(node.core().configuration().is_unknown());
        assert_eq!(storage.clone().load().expect("loads").members, None, "nothing recorded");
        node.tick(0);
        node.tick(10_000);
        assert_eq!(node.core().elections_started(), 0, "it knows no configuration");
        assert_eq!(node.core().role(), Role::Follower);
    }

    /// A node refuses to start with `max_entry_bytes` above what its storage can store (it
    /// would accept proposals it then fails to store), and starts at or below it.
    #[test]
    fn max_entry_bytes_above_the_storages_limit_is_refused() {
        use crate::storage::{WalIdentity, WalOptions, WalStorage};
        let directory = tempfile::tempdir().expect("a temporary directory");
        let open = || {
            let identity = WalIdentity { node_id: NodeId(1), cluster_id: 1 };
            let options = WalOptions { max_entry_bytes: 1024, ..WalOptions::default() };
            WalStorage::open(directory.path(), identity, options).expect("opens")
        };
        let start = |max_entry_bytes| {
            let config = Config { max_entry_bytes, ..Config::default() };
            Node::<_, Accepting>::start(NodeId(1), [NodeId(1)], config, open(), Accepting, 1)
        };
        assert!(matches!(
            start(1025),
            Err(StartError::Config(ConfigError::EntryLimitAboveStorage {
                configured: 1025,
                storage: 1024
            }))
        ));
        assert!(start(1024).is_ok(), "exactly the storage's limit");
    }

    /// A node outside the configuration gets through only what Raft needs from there: its
    /// answers are dropped before the core (a newer term in one changes nothing), its vote
    /// request is taken (§4.1: the voter's configuration may lag the candidate's).
    #[test]
    fn a_non_members_answers_are_dropped_and_its_vote_requests_taken() {
        let storage = MemoryStorage::new();
        let mut node = start(&storage, &[1, 2, 3]).expect("starts");
        let from_stranger =
            |term, body| Message { from: NodeId(9), to: NodeId(1), term: Term(term), body };
        node.step(from_stranger(5, MessageBody::RequestVoteResponse { granted: true }));
        node.step(from_stranger(6, MessageBody::PreVoteResponse { granted: false }));
        node.step(from_stranger(7, MessageBody::ReadIndex { request: ReadId(1), lease: false }));
        assert_eq!(node.core().term(), Term(0), "no answer of a non-member reached the core");
        let last_log_id = node.core().last_log_id();
        node.step(from_stranger(
            8,
            MessageBody::RequestVote { last_log_id, leadership_transfer: false },
        ));
        assert_eq!(node.core().term(), Term(8), "a vote request is taken");
        // A member's answer reaches the core.
        let mut answer = from_stranger(9, MessageBody::RequestVoteResponse { granted: false });
        answer.from = NodeId(2);
        node.step(answer);
        assert_eq!(node.core().term(), Term(9));
    }

    #[test]
    fn members_without_the_node_are_never_recorded() {
        let storage = MemoryStorage::new();
        assert!(matches!(start(&storage, &[2, 3]), Err(StartError::Membership { .. })));
        assert_eq!(storage.clone().load().expect("loads").members, None);
    }

    /// A state machine that keeps a count and snapshots it.
    #[derive(Default)]
    struct Counting(u64);

    impl StateMachine for Counting {
        fn apply(&mut self, _command: &[u8]) -> ApplyResult {
            self.0 += 1;
            Ok(self.0.to_le_bytes().to_vec())
        }

        fn snapshot(&self) -> ApplyResult {
            Ok(self.0.to_le_bytes().to_vec())
        }

        fn restore(&mut self, snapshot: &[u8]) -> Result<(), Box<dyn Error + Send + Sync>> {
            self.0 = u64::from_le_bytes(snapshot.try_into()?);
            Ok(())
        }
    }

    /// A pump that keeps the syncs handed to it, and completes them only when asked.
    #[derive(Default)]
    struct HeldSyncs {
        syncs: Vec<Box<dyn PendingSync>>,
        started: usize,
        answers: usize,
        reads: Vec<(ReadId, Result<LogIndex, ReadError>)>,
    }

    impl NodeIo<()> for HeldSyncs {
        fn send(&mut self, _message: Message) {}

        fn start_sync(&mut self, sync: Box<dyn PendingSync>) {
            self.syncs.push(sync);
            self.started += 1;
        }

        fn answer(&mut self, _waiter: (), _result: ProposalResult) {
            self.answers += 1;
        }

        fn read_ready(&mut self, read: ReadId, result: Result<LogIndex, ReadError>) {
            self.reads.push((read, result));
        }
    }

    /// Storage in memory whose flushes hand back a sync still to be done, as a disk's do.
    struct SyncLater(MemoryStorage);

    /// The second half of a [`SyncLater`] flush.
    struct LaterSync;

    impl PendingSync for LaterSync {
        fn complete(self: Box<Self>) -> Result<(), StorageError> {
            Ok(())
        }
    }

    impl Storage for SyncLater {
        type Snapshots = MemoryStorage;

        fn load(&mut self) -> Result<InitialState, StorageError> {
            self.0.load()
        }
        fn append(&mut self, entries: &[crate::message::Entry]) -> Result<(), StorageError> {
            self.0.append(entries)
        }
        fn reset_log(&mut self, base: crate::types::LogId) -> Result<(), StorageError> {
            self.0.reset_log(base)
        }
        fn compact(&mut self, through: LogIndex) -> Result<(), StorageError> {
            self.0.compact(through)
        }
        fn snapshot_store(&self) -> MemoryStorage {
            self.0.snapshot_store()
        }
        fn save_hard_state(
            &mut self,
            hard_state: &crate::hard_state::HardState,
        ) -> Result<(), StorageError> {
            self.0.save_hard_state(hard_state)
        }
        fn save_members(&mut self, members: &[NodeId]) -> Result<(), StorageError> {
            self.0.save_members(members)
        }
        fn sync(&mut self) -> Result<(), StorageError> {
            self.0.sync()
        }
        fn flush(&mut self) -> Result<Box<dyn PendingSync>, StorageError> {
            Ok(Box::new(LaterSync))
        }
    }

    /// Runs `node` (a cluster of one) until it leads, completing every sync.
    fn lead<S: Storage, M: StateMachine>(node: &mut Node<S, M, ()>, io: &mut HeldSyncs) {
        let mut now_ms = 0;
        while node.core().role() != Role::Leader {
            now_ms += 10;
            node.tick(now_ms);
            settle(node, io);
        }
    }

    /// Processes and completes syncs until nothing is left.
    fn settle<S: Storage, M: StateMachine>(node: &mut Node<S, M, ()>, io: &mut HeldSyncs) {
        node.process(io).expect("storage in memory does not fail");
        while !io.syncs.is_empty() {
            for sync in std::mem::take(&mut io.syncs) {
                sync.complete().expect("a sync in memory does not fail");
                node.sync_done(io);
            }
            node.process(io).expect("storage in memory does not fail");
        }
    }

    fn counting_node(config: Config) -> Node<MemoryStorage, Counting, ()> {
        Node::start(NodeId(1), [NodeId(1)], config, MemoryStorage::new(), Counting(0), 1)
            .expect("a valid start")
    }

    /// A snapshot is due once `snapshot_after_entries` commands were applied since the last
    /// one, not before; taking it starts the count again.
    #[test]
    fn a_snapshot_is_due_after_exactly_the_configured_number_of_commands() {
        let config = Config {
            snapshot_after_entries: 3,
            snapshot_after_bytes: 0,
            snapshot_log_multiple: 0,
            ..Config::default()
        };
        let mut node = counting_node(config);
        let mut io = HeldSyncs::default();
        lead(&mut node, &mut io);
        for round in 1..=2 {
            for _ in 0..2 {
                node.propose(Bytes::from_static(b"c"), ()).map_err(|(error, _)| error).unwrap();
                settle(&mut node, &mut io);
            }
            assert!(!node.snapshot_due(), "due after 2 of 3 commands (round {round})");
            node.propose(Bytes::from_static(b"c"), ()).map_err(|(error, _)| error).unwrap();
            settle(&mut node, &mut io);
            assert!(node.snapshot_due(), "not due after 3 of 3 commands (round {round})");
            let snapshot = node.take_snapshot(&mut io).unwrap().expect("a snapshot is due");
            assert!(!node.snapshot_due(), "due again while the snapshot is being stored");
            let stored = snapshot.write_into(&mut node.snapshot_store());
            node.snapshot_stored(stored).expect("compaction in memory");
            assert!(!node.snapshot_due(), "the count did not start again");
        }
        assert_eq!(node.snapshots_stored(), 2);
    }

    /// After a snapshot, the next one is due only once the command bytes applied since reach
    /// `snapshot_log_multiple` times its size (here 2 x 8 bytes), however many entries the
    /// thresholds ask for: a large state is not rewritten after every few entries.
    #[test]
    fn a_snapshot_waits_for_the_log_to_outgrow_a_multiple_of_the_last_one() {
        let config = Config {
            snapshot_after_entries: 3,
            snapshot_after_bytes: 0,
            snapshot_log_multiple: 2,
            ..Config::default()
        };
        let mut node = counting_node(config);
        let mut io = HeldSyncs::default();
        lead(&mut node, &mut io);
        let propose = |node: &mut Node<MemoryStorage, Counting, ()>, io: &mut HeldSyncs| {
            node.propose(Bytes::from_static(b"c"), ()).map_err(|(error, _)| error).unwrap();
            settle(node, io);
        };
        for _ in 0..3 {
            propose(&mut node, &mut io);
        }
        assert!(node.snapshot_due(), "the first snapshot follows the thresholds alone");
        let snapshot = node.take_snapshot(&mut io).unwrap().expect("a snapshot is due");
        let stored = snapshot.write_into(&mut node.snapshot_store());
        assert_eq!(stored.as_ref().map(|snapshot| snapshot.size).ok(), Some(8));
        node.snapshot_stored(stored).expect("compaction in memory");
        for applied in 1..16 {
            propose(&mut node, &mut io);
            assert!(!node.snapshot_due(), "due after {applied} bytes of log, below 2 x 8");
        }
        propose(&mut node, &mut io);
        assert!(node.snapshot_due(), "not due once the log reached 2 x the snapshot");
    }

    /// A snapshot is due once `snapshot_after_bytes` bytes of commands were applied.
    #[test]
    fn a_snapshot_is_due_after_exactly_the_configured_number_of_bytes() {
        let config = Config {
            snapshot_after_entries: 0,
            snapshot_after_bytes: 10,
            snapshot_log_multiple: 0,
            ..Config::default()
        };
        let mut node = counting_node(config);
        let mut io = HeldSyncs::default();
        lead(&mut node, &mut io);
        node.propose(Bytes::from_static(b"12345"), ()).map_err(|(error, _)| error).unwrap();
        settle(&mut node, &mut io);
        assert!(!node.snapshot_due(), "due after 5 of 10 bytes");
        node.propose(Bytes::from_static(b"67890"), ()).map_err(|(error, _)| error).unwrap();
        settle(&mut node, &mut io);
        assert!(node.snapshot_due(), "not due after 10 of 10 bytes");
    }

    /// A state machine without `snapshot` is never snapshotted, however much it applies.
    #[test]
    fn a_state_machine_without_snapshots_is_never_snapshotted() {
        let config =
            Config { snapshot_after_entries: 1, snapshot_after_bytes: 1, ..Config::default() };
        let mut node: Node<MemoryStorage, Accepting, ()> =
            Node::start(NodeId(1), [NodeId(1)], config, MemoryStorage::new(), Accepting, 1)
                .expect("a valid start");
        let mut io = HeldSyncs::default();
        lead(&mut node, &mut io);
        for _ in 0..3 {
            node.propose(Bytes::from_static(b"c"), ()).map_err(|(error, _)| error).unwrap();
            settle(&mut node, &mut io);
        }
        assert!(!node.snapshot_due());
        assert!(node.take_snapshot(&mut io).unwrap().is_none());
    }

    /// A single node leading, on storage whose syncs complete when the test says.
    fn leader_with_later_syncs() -> (Node<SyncLater, Counting, ()>, HeldSyncs) {
        let storage = SyncLater(MemoryStorage::new());
        let mut node: Node<SyncLater, Counting, ()> =
            Node::start(NodeId(1), [NodeId(1)], Config::default(), storage, Counting(0), 1)
                .expect("a valid start");
        let mut io = HeldSyncs::default();
        lead(&mut node, &mut io);
        (node, io)
    }

    /// A confirmed read is handed out only once the state machine has applied through its
    /// read index, and a node that stops fails the reads still waiting.
    #[test]
    fn a_read_is_ready_once_applied_through_its_read_index_and_fails_on_stop() {
        let (mut node, mut io) = leader_with_later_syncs();
        // A command appended but not yet durable, so not committed: a read asked now is
        // confirmed at the commit index before it.
        node.propose(Bytes::from_static(b"c"), ()).map_err(|(error, _)| error).unwrap();
        let read = node.read(ReadPolicy::ReadIndex).expect("the leader takes reads");
        node.process(&mut io).expect("storage in memory does not fail");
        assert_eq!(io.reads, [(read, Ok(LogIndex(1)))], "served at the no-op's index");
        io.reads.clear();
        // Once the command commits (its sync completes), a new read waits for it.
        settle(&mut node, &mut io);
        let read = node.read(ReadPolicy::ReadIndex).expect("the leader takes reads");
        node.process(&mut io).expect("storage in memory does not fail");
        assert_eq!(io.reads, [(read, Ok(LogIndex(2)))]);
        assert_eq!(node.state_machine().0, 1, "the command was applied before the read");
        io.reads.clear();
        node.propose(Bytes::from_static(b"c"), ()).map_err(|(error, _)| error).unwrap();
        node.process(&mut io).expect("storage in memory does not fail");
        let waiting = node.read(ReadPolicy::ReadIndex).expect("the leader takes reads");
        node.stop(&mut io);
        assert_eq!(io.reads, [(waiting, Err(ReadError::Shutdown))]);
    }

    /// At most sixteen syncs run at once: past that the next Ready waits (and grows) until a
    /// sync completes.
    #[test]
    fn at_most_sixteen_syncs_are_in_flight() {
        let (mut node, mut io) = leader_with_later_syncs();
        let started_before = io.started;
        for _ in 0..20 {
            node.propose(Bytes::from_static(b"c"), ()).map_err(|(error, _)| error).unwrap();
            node.process(&mut io).expect("storage in memory does not fail");
        }
        assert_eq!(io.started - started_before, 16, "syncs handed out beyond the limit");
        assert_eq!(node.syncs_in_flight(), 16);
        assert_eq!(io.answers, 0, "answered before its entry was durable");
        // Completing the syncs lets the waiting proposals through, in one more batch.
        settle(&mut node, &mut io);
        assert_eq!(node.syncs_in_flight(), 0);
        assert_eq!(io.answers, 20);
    }

    /// A state machine whose snapshot fails while it is empty, and works after.
    #[derive(Default)]
    struct NotWhileEmpty(Counting);

    impl StateMachine for NotWhileEmpty {
        fn apply(&mut self, command: &[u8]) -> ApplyResult {
            self.0.apply(command)
        }

        fn snapshot(&self) -> ApplyResult {
            if self.0.0 == 0 {
                return Err("nothing to snapshot yet".into());
            }
            self.0.snapshot()
        }
    }

    /// Only `SnapshotsUnsupported` at start turns snapshots off: a state machine whose
    /// snapshot fails for another reason while empty is still snapshotted once it has state.
    #[test]
    fn only_snapshots_unsupported_turns_snapshots_off() {
        let config =
            Config { snapshot_after_entries: 1, snapshot_after_bytes: 0, ..Config::default() };
        let mut node: Node<MemoryStorage, NotWhileEmpty, ()> = Node::start(
            NodeId(1),
            [NodeId(1)],
            config,
            MemoryStorage::new(),
            NotWhileEmpty::default(),
            1,
        )
        .expect("a valid start");
        let mut io = HeldSyncs::default();
        lead(&mut node, &mut io);
        node.propose(Bytes::from_static(b"c"), ()).map_err(|(error, _)| error).unwrap();
        settle(&mut node, &mut io);
        assert!(node.snapshot_due(), "snapshots were turned off by an unrelated error");
        assert!(node.take_snapshot(&mut io).unwrap().is_some());
    }

    /// A wrapper that forwards only `apply`: it compiles, and its snapshots are the trait's
    /// defaults (unsupported), whatever the machine inside implements.
    struct ForwardsOnlyApply(Counting);

    impl StateMachine for ForwardsOnlyApply {
        fn apply(&mut self, command: &[u8]) -> ApplyResult {
            self.0.apply(command)
        }
    }

    /// Whether a snapshot is due on a leader of one with `machine`, after three commands
    /// with a threshold of one, or why it did not start.
    fn snapshot_due_with<M: StateMachine>(
        mode: SnapshotMode,
        machine: M,
    ) -> Result<bool, StartError> {
        let config = Config {
            snapshot_after_entries: 1,
            snapshot_after_bytes: 0,
            snapshot_mode: mode,
            ..Config::default()
        };
        let mut node: Node<MemoryStorage, M, ()> =
            Node::start(NodeId(1), [NodeId(1)], config, MemoryStorage::new(), machine, 1)?;
        let mut io = HeldSyncs::default();
        lead(&mut node, &mut io);
        for _ in 0..3 {
            node.propose(Bytes::from_static(b"c"), ()).map_err(|(error, _)| error).unwrap();
        }
        settle(&mut node, &mut io);
        Ok(node.snapshot_due())
    }

    /// Each snapshot mode against a state machine with snapshots and one without (a wrapper
    /// that forwards only `apply`): `Required` refuses to start without them, naming the
    /// type; `IfSupported` takes them when it can and runs without otherwise; `Off` never
    /// takes them.
    #[test]
    fn the_snapshot_mode_decides_at_start() {
        match snapshot_due_with(SnapshotMode::Required, ForwardsOnlyApply(Counting(0))) {
            Err(StartError::SnapshotsUnsupported { state_machine }) => {
                assert!(state_machine.ends_with("ForwardsOnlyApply"), "{state_machine}");
            }
            other => panic!("expected SnapshotsUnsupported, got {other:?}"),
        }
        let message = StartError::SnapshotsUnsupported { state_machine: "my::Machine" }.to_string();
        assert!(message.contains("my::Machine") && message.contains("snapshot_mode"), "{message}");
        assert_eq!(snapshot_due_with(SnapshotMode::Required, Counting(0)).ok(), Some(true));
        assert_eq!(snapshot_due_with(SnapshotMode::IfSupported, Counting(0)).ok(), Some(true));
        assert_eq!(
            snapshot_due_with(SnapshotMode::IfSupported, ForwardsOnlyApply(Counting(0))).ok(),
            Some(false)
        );
        assert_eq!(snapshot_due_with(SnapshotMode::Off, Counting(0)).ok(), Some(false));
        assert_eq!(
            snapshot_due_with(SnapshotMode::Off, ForwardsOnlyApply(Counting(0))).ok(),
            Some(false)
        );
        assert_eq!(Config::default().snapshot_mode, SnapshotMode::IfSupported);
    }
}
