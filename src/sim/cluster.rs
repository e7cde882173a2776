//! [`Cluster`]: a scriptable cluster of production [`Node`]s, for scenario tests.
//!
//! It owns everything around the nodes that a test scripts by hand, and nothing else:
//!
//! - each node is the production [`Node`] (core, driver, proposals, snapshot policy) on the
//!   real write-ahead log over a simulated disk (`SimDisk`), so a crash is a real power
//!   loss (unsynced writes are lost) and a restart really recovers from the disk; nodes can
//!   start from a preset log, term, vote and commit index ([`Preset`]), written through the
//!   `Storage` trait before the node starts;
//! - the state machine is a [`Journal`] of applied commands;
//! - a **manual message queue**: what nodes send is held until the test delivers or drops
//!   it, with blocked links (partitions) and, optionally, deterministic loss ("every n-th
//!   message") and reordering;
//! - a **virtual clock**: nodes are ticked only when the test says so (or lets time run);
//! - **syncs**: completed at once, unless a node holds them ([`Cluster::hold_syncs`]) until
//!   [`Cluster::complete_syncs`], so a test can show a leader whose own sync lags;
//! - **proposals** with their recorded outcomes ([`Cluster::proposals`]);
//! - **linearizable reads** ([`Cluster::read`]), each checked when served: the node must
//!   have applied every entry committed anywhere before the read was asked;
//! - the simulator's checker (election safety, log matching, committed prefixes, state
//!   machine safety: every node applies the same command at each index, once, in order),
//!   run after every step: a violation panics with its description.
//!
//! With [`Cluster::set_recording`] on, every step writes readable lines (messages sent, role
//! and term changes, votes, commits, applied commands, proposal answers) that
//! [`Cluster::take_output`] hands out: scenario scripts ([`super::script`]) print them.

use std::collections::{BTreeMap, VecDeque};
use std::fmt::Write as _;

use bytes::Bytes;

use crate::config::Config;
use crate::core::{MemberAddress, RaftCore, ReadPolicy, Role};
use crate::error::{MembershipError, ProposeError, ReadError, StorageError};
use crate::message::{Entry, Message};
use crate::node::{ApplyResult, Node, NodeIo, ProposalResult};
use crate::snapshot::SnapshotMeta;
use crate::state_machine::StateMachine;
use crate::storage::{PendingSync, SnapshotStore};
use crate::types::{LogIndex, NodeId, ReadId, Term};

use super::checks::Checker;
use super::describe::{describe_command, describe_entry, describe_message};
use super::disk::{SimDisk, SimStorage};
use super::journal::{AppliedCommand, Journal};
use super::message_queue::MessageQueue;
use super::preset::Preset;
use super::rng::SimRng;

/// The step, in virtual milliseconds, in which [`Cluster::advance_time`] moves the clock.
pub const TICK_STEP_MS: u64 = 5;

/// Deliveries after which one call assumes the cluster is looping forever.
const MAX_DELIVERIES_PER_CALL: usize = 1_000_000;

/// What became of a log entry a leader appended, as far as the cluster's committed log can
/// tell: see [`Cluster::entry_fate`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EntryFate {
    /// Committed at the index it was appended at.
    Committed,
    /// Can never commit: a client must propose it again.
    Lost,
    /// Not decided yet.
    Pending,
}

/// A proposal made through [`Cluster::propose`] and how it ended.
#[derive(Debug)]
pub struct Proposal {
    /// The node it was made at.
    pub node: NodeId,
    /// The command.
    pub command: Vec<u8>,
    /// Where the leader appended it, and in which term (`None`: refused, and the refusal
    /// was returned by [`Cluster::propose`]).
    pub appended_at: Option<(LogIndex, Term)>,
    /// The answer, once there is one: the state machine's result or why there is none.
    pub outcome: Option<Result<Vec<u8>, ProposeError>>,
}

/// A node as a cluster runs it: the production node on the WAL over a simulated disk, with
/// proposals identified by their position in [`Cluster::proposals`].
type ClusterNode = Node<SimStorage, Journal, usize>;

/// A running incarnation of a node.
struct Running {
    node: ClusterNode,
    /// The state machine's record, shared with the node's journal.
    journal: Journal,
    /// Syncs handed out and not completed, oldest first.
    syncs: VecDeque<Box<dyn PendingSync>>,
    /// The last index this incarnation applied (checked to increase).
    last_applied: LogIndex,
}

/// One member of the cluster: its disk, and its node when it is up.
struct Member {
    disk: SimDisk,
    running: Option<Running>,
    /// Whether syncs wait for [`Cluster::complete_syncs`].
    holds_syncs: bool,
    /// Commands applied by any incarnation, in order (restored snapshots included).
    applied_ever: Vec<AppliedCommand>,
    /// The highest commit index seen on this node, across restarts.
    highest_commit_seen: LogIndex,
    /// The latest snapshot this node took and stored.
    stored_snapshot: Option<SnapshotMeta>,
    /// Whether the node was added to a running cluster ([`Cluster::add_node`]): it starts
    /// with no members and learns its configuration from the leader.
    joined: bool,
}

/// What the cluster prints a change of: a node's role, term, vote, leader and commit index.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Observed {
    role: Role,
    term: Term,
    voted_for: Option<NodeId>,
    leader: Option<NodeId>,
    commit_index: LogIndex,
}

impl Observed {
    fn of(core: &RaftCore) -> Observed {
        Observed {
            role: core.role(),
            term: core.term(),
            voted_for: core.voted_for(),
            leader: core.leader_id(),
            commit_index: core.commit_index(),
        }
    }
}

/// The cluster's side of [`NodeIo`] for one call into a node.
struct ClusterIo<'a> {
    id: NodeId,
    now_ms: u64,
    checker: &'a mut Checker,
    journal: &'a Journal,
    last_applied: &'a mut LogIndex,
    applied_ever: &'a mut Vec<AppliedCommand>,
    syncs: &'a mut VecDeque<Box<dyn PendingSync>>,
    outbox: Vec<Message>,
    answers: Vec<(usize, ProposalResult)>,
    reads: Vec<(ReadId, Result<LogIndex, ReadError>)>,
    applied: Vec<AppliedCommand>,
}

impl NodeIo<usize> for ClusterIo<'_> {
    fn send(&mut self, message: Message) {
        self.checker.on_sent(&message, self.now_ms);
        self.outbox.push(message);
    }

    fn start_sync(&mut self, sync: Box<dyn PendingSync>) {
        self.syncs.push_back(sync);
    }

    fn answer(&mut self, waiter: usize, result: ProposalResult) {
        self.answers.push((waiter, result));
    }

    fn read_ready(&mut self, read: ReadId, result: Result<LogIndex, ReadError>) {
        self.reads.push((read, result));
    }

    fn applied(&mut self, index: LogIndex, term: Term, command: &[u8], result: &ApplyResult) {
        self.journal.set_term(index, term);
        let (id, now_ms) = (self.id, self.now_ms);
        let last_applied = &mut *self.last_applied;
        self.checker.on_applied_result(id, last_applied, index, term, command, result, now_ms);
        self.applied_ever.push((index, term, command.to_vec()));
        self.applied.push((index, term, command.to_vec()));
    }
}

/// A scriptable cluster of production nodes on simulated disks, for scenario tests: a manual
/// message queue (deliver or drop what a test chooses; partitions), a virtual clock, syncs a
/// test can hold ([`Cluster::hold_syncs`]), power-loss crashes and restarts, preset logs,
/// proposals with their outcomes, a [`Journal`] state machine, and the simulator's safety
/// checks after every step (a violation panics with its description). With
/// [`Cluster::set_recording`] on, steps write readable lines for [`Cluster::take_output`]
/// (what scenario scripts print).
pub struct Cluster {
    config: Config,
    members: Vec<NodeId>,
    nodes: BTreeMap<NodeId, Member>,
    now_ms: u64,
    rng: SimRng,
    checker: Checker,
    network: MessageQueue,
    proposals: Vec<Proposal>,
    /// The reads asked of nodes, by node and the id it gave them.
    reads: BTreeMap<(NodeId, ReadId), AskedRead>,
    /// Reads asked so far (they are numbered `r1`, `r2`, ... in the output).
    reads_asked: u64,
    /// Outcomes of reads not registered yet (decided in the very step that asked them).
    unclaimed_reads: Vec<(ReadId, Result<LogIndex, ReadError>)>,
    /// The longest committed prefix any node has had (entries a snapshot covered when the
    /// node first committed them are absent: `None`).
    committed_log: Vec<Option<Entry>>,
    /// Whether steps write output lines, and whether messages sent are among them.
    recording: bool,
    recording_messages: bool,
    output: Vec<String>,
}

impl Cluster {
    /// `size` nodes (ids 1..=size) with empty logs and the default configuration, except
    /// that pre-vote is off: scripted scenarios script the real vote.
    pub fn new(size: u64, seed: u64) -> Cluster {
        Cluster::with_config(size, Config { pre_vote: false, ..Config::default() }, seed)
    }

    /// `size` nodes (ids 1..=size) with empty logs.
    pub fn with_config(size: u64, config: Config, seed: u64) -> Cluster {
        Cluster::with_presets((0..size).map(|_| Preset::default()).collect(), config, seed)
    }

    /// One node per preset, ids 1, 2, ... in order, each starting from its preset state.
    /// Panics on an invalid configuration or a preset the write-ahead log refuses.
    pub fn with_presets(presets: Vec<Preset>, config: Config, seed: u64) -> Cluster {
        if let Err(error) = config.validate() {
            panic!("a scenario's configuration must be valid: {error}");
        }
        let members: Vec<NodeId> = (1..=presets.len() as u64).map(NodeId).collect();
        let mut cluster = Cluster {
            config,
            members: members.clone(),
            nodes: BTreeMap::new(),
            now_ms: 0,
            rng: SimRng::new(seed),
            checker: Checker::default(),
            network: MessageQueue::default(),
            proposals: Vec::new(),
            reads: BTreeMap::new(),
            reads_asked: 0,
            unclaimed_reads: Vec::new(),
            committed_log: Vec::new(),
            recording: false,
            recording_messages: true,
            output: Vec::new(),
        };
        for (id, preset) in members.iter().zip(&presets) {
            let disk = SimDisk::default();
            let mut storage = SimStorage::open(disk.clone(), *id)
                .unwrap_or_else(|error| panic!("{id}: a fresh simulated disk opens: {error}"));
            preset
                .write_to(&mut storage)
                .unwrap_or_else(|error| panic!("{id}: the preset {preset:?} is storable: {error}"));
            cluster.nodes.insert(
                *id,
                Member {
                    disk,
                    running: None,
                    holds_syncs: false,
                    applied_ever: Vec::new(),
                    highest_commit_seen: LogIndex(0),
                    stored_snapshot: None,
                    joined: false,
                },
            );
        }
        for id in members {
            cluster.start(id);
        }
        cluster
    }

    // ---------------------------------------------------------------- output

    /// Turns the output lines on or off (off by default: long tests make many steps).
    pub fn set_recording(&mut self, recording: bool) {
        self.recording = recording;
    }

    /// Whether the output lines include each message sent (on by default).
    pub fn set_recording_messages(&mut self, recording_messages: bool) {
        self.recording_messages = recording_messages;
    }

    /// Takes the output lines written since the last call.
    pub fn take_output(&mut self) -> Vec<String> {
        std::mem::take(&mut self.output)
    }

    fn record(&mut self, line: impl FnOnce() -> String) {
        if self.recording {
            self.output.push(line());
        }
    }

    // ---------------------------------------------------------------- inspection

    /// Every node's id, sorted.
    pub fn ids(&self) -> Vec<NodeId> {
        self.nodes.keys().copied().collect()
    }

    /// The current virtual time.
    pub fn now_ms(&self) -> u64 {
        self.now_ms
    }

    /// The configuration every node runs with.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Whether node `id` is running (not crashed).
    pub fn is_up(&self, id: u64) -> bool {
        self.member(id).running.is_some()
    }

    /// The core of node `id`. Panics if it is crashed.
    pub fn core(&self, id: u64) -> &RaftCore {
        self.running(id).node.core()
    }

    /// Node `id`'s role.
    pub fn role(&self, id: u64) -> Role {
        self.core(id).role()
    }

    /// Node `id`'s current term, as a number.
    pub fn term(&self, id: u64) -> u64 {
        self.core(id).term().0
    }

    /// Node `id`'s commit index, as a number.
    pub fn commit_index(&self, id: u64) -> u64 {
        self.core(id).commit_index().0
    }

    /// Node `id`'s log (the core's view), from the first entry it holds (index 1 unless
    /// compacted).
    pub fn log(&self, id: u64) -> Vec<Entry> {
        let core = self.core(id);
        (core.first_log_index().0..=core.last_log_id().index.0)
            .filter_map(|index| core.entry(LogIndex(index)).cloned())
            .collect()
    }

    /// The term of each entry of node `id`'s log, from the first entry it holds.
    pub fn log_terms(&self, id: u64) -> Vec<u64> {
        self.log(id).iter().map(|entry| entry.term.0).collect()
    }

    /// Commands applied by node `id`'s current state machine (restored snapshots included),
    /// in order.
    pub fn applied(&self, id: u64) -> Vec<AppliedCommand> {
        self.running(id).journal.records()
    }

    /// The bytes of the commands applied by node `id`'s current state machine, in order.
    pub fn applied_commands(&self, id: u64) -> Vec<Vec<u8>> {
        self.applied(id).into_iter().map(|(_, _, command)| command).collect()
    }

    /// Commands applied by any incarnation of node `id`, in order.
    pub fn applied_ever(&self, id: u64) -> &[AppliedCommand] {
        &self.member(id).applied_ever
    }

    /// Whether any incarnation of any node ever applied `command`.
    pub fn anyone_ever_applied(&self, command: &[u8]) -> bool {
        self.nodes
            .values()
            .any(|member| member.applied_ever.iter().any(|(_, _, applied)| applied == command))
    }

    /// Every term that had a leader, in order.
    pub fn terms_with_a_leader(&self) -> Vec<u64> {
        self.checker.leaders().map(|(term, _)| term.0).collect()
    }

    /// The leader ever seen in `term`, if any.
    pub fn leader_of_term(&self, term: u64) -> Option<NodeId> {
        self.checker.leaders().find(|(seen, _)| seen.0 == term).map(|(_, id)| id)
    }

    /// What became of the entry a leader of `term` appended at `index`.
    ///
    /// It is lost once a different entry is committed at `index`, or once any entry of a
    /// later term is committed before `index`: every future leader holds that later-term entry
    /// (Leader Completeness), and after it only entries of that term or later, so no future
    /// leader can hold it. Every newer leader commits an entry of its own term, so an entry
    /// stays pending only while its own leader could still commit it.
    pub fn entry_fate(&self, index: LogIndex, term: Term) -> EntryFate {
        match self.committed_log.get(index.0 as usize - 1) {
            Some(Some(entry)) if entry.term == term => EntryFate::Committed,
            Some(Some(_)) => EntryFate::Lost,
            Some(None) => panic!("entry {index} was committed inside a snapshot: ask earlier"),
            None if self.committed_log.iter().flatten().any(|entry| entry.term > term) => {
                EntryFate::Lost
            }
            None => EntryFate::Pending,
        }
    }

    /// The leader of the newest term: a running node in the Leader role whose term is at
    /// least every running node's term. A leader cut off in an older term is not returned.
    pub fn leader(&self) -> Option<NodeId> {
        let cores: Vec<&RaftCore> = self.running_cores().collect();
        let newest_term = cores.iter().map(|core| core.term()).max()?;
        cores
            .iter()
            .find(|core| core.role() == Role::Leader && core.term() == newest_term)
            .map(|core| core.id())
    }

    /// Whether there is a [`leader`](Self::leader) that every running node it can reach
    /// follows, in its term.
    pub fn has_stable_leader(&self) -> bool {
        let Some(leader) = self.leader() else {
            return false;
        };
        let term = self.core(leader.0).term();
        self.running_cores()
            .filter(|core| core.id() != leader && self.can_reach(leader, core.id()))
            .all(|core| {
                core.role() == Role::Follower
                    && core.term() == term
                    && core.leader_id() == Some(leader)
            })
    }

    /// Messages still in flight, oldest first.
    pub fn in_flight(&self) -> impl Iterator<Item = &Message> {
        self.network.in_flight()
    }

    /// Every message delivered so far, in delivery order.
    pub fn delivered(&self) -> &[Message] {
        self.network.delivered()
    }

    /// How many messages were lost (loss rule, blocked link, crashed node, dropped by hand).
    pub fn dropped_count(&self) -> u64 {
        self.network.dropped_count()
    }

    /// Every proposal made, in order.
    pub fn proposals(&self) -> &[Proposal] {
        &self.proposals
    }

    /// The latest snapshot node `id` took and stored.
    pub fn stored_snapshot(&self, id: u64) -> Option<&SnapshotMeta> {
        self.member(id).stored_snapshot.as_ref()
    }

    /// Snapshots node `id`'s current incarnation installed from a leader.
    pub fn snapshots_installed(&self, id: u64) -> u64 {
        self.running(id).node.snapshots_installed()
    }

    /// Syncs node `id` handed out that are not complete.
    pub fn syncs_waiting(&self, id: u64) -> usize {
        self.running(id).syncs.len()
    }

    /// One line about node `id`: role, term, vote, leader, commit and applied indexes, its
    /// log's terms, and held syncs.
    pub fn status_line(&self, id: u64) -> String {
        let Some(running) = &self.member(id).running else {
            return format!("{id}: down");
        };
        let core = running.node.core();
        let mut line = format!(
            "{id}: {} term={} vote={} leader={} commit={} applied={} log={}",
            core.role(),
            core.term(),
            optional_id(core.voted_for()),
            optional_id(core.leader_id()),
            core.commit_index(),
            core.applied_index(),
            describe_log_terms(core),
        );
        if !running.syncs.is_empty() {
            let _ = write!(line, " syncs-waiting={}", running.syncs.len());
        }
        if let Some(stalled_ms) = core.disk_stalled_for_ms() {
            let _ = write!(line, " disk-stalled={stalled_ms}ms");
        }
        line
    }

    /// Node `id`'s log, one entry per line: `index@term command`.
    pub fn log_lines(&self, id: u64) -> Vec<String> {
        let core = self.core(id);
        let mut lines = Vec::new();
        if core.first_log_index() > LogIndex(1) {
            lines.push(format!("{id}: compacted through {}", core.first_log_index().prev()));
        }
        lines.extend(self.log(id).iter().map(|entry| format!("{id}: {}", describe_entry(entry))));
        if lines.is_empty() {
            lines.push(format!("{id}: empty log"));
        }
        lines
    }

    /// A one-line-per-node summary, for assertion messages.
    pub fn describe(&self) -> String {
        let mut text = format!("t={}ms\n", self.now_ms);
        for id in self.nodes.keys() {
            let _ = writeln!(text, "  {}", self.status_line(id.0));
        }
        text
    }

    // ---------------------------------------------------------------- membership

    /// Starts a new node `id` on an empty disk with no members: it waits to be added by the
    /// leader ([`add_learner`](Self::add_learner)) and learns the configuration from it.
    pub fn add_node(&mut self, id: u64) {
        assert!(!self.nodes.contains_key(&NodeId(id)), "node {id} exists already");
        self.nodes.insert(
            NodeId(id),
            Member {
                disk: SimDisk::default(),
                running: None,
                holds_syncs: false,
                applied_ever: Vec::new(),
                highest_commit_seen: LogIndex(0),
                stored_snapshot: None,
                joined: true,
            },
        );
        self.start(NodeId(id));
    }

    /// Node `leader` adds `id` as a learner.
    pub fn add_learner(&mut self, leader: u64, id: u64) -> Result<LogIndex, MembershipError> {
        let address = MemberAddress { raft_addr: format!("sim:{id}"), client_addr: String::new() };
        self.change(leader, |node| node.add_learner(NodeId(id), address))
    }

    /// Node `leader` changes the voters to `voters` (joint consensus).
    pub fn change_voters(
        &mut self,
        leader: u64,
        voters: &[u64],
    ) -> Result<LogIndex, MembershipError> {
        let voters: Vec<NodeId> = voters.iter().map(|id| NodeId(*id)).collect();
        self.change(leader, |node| node.change_voters(voters))
    }

    /// Node `leader` removes member `id`.
    pub fn remove_member(&mut self, leader: u64, id: u64) -> Result<LogIndex, MembershipError> {
        self.change(leader, |node| node.remove_member(NodeId(id)))
    }

    /// Node `leader` starts handing leadership to `target`.
    pub fn transfer_leadership(&mut self, leader: u64, target: u64) -> Result<(), MembershipError> {
        let result =
            self.with_node(NodeId(leader), |node, _| Ok(node.transfer_leadership(NodeId(target))));
        match &result {
            Ok(()) => self.record(|| format!("{leader}: transfers leadership to {target}")),
            Err(error) => self.record(|| format!("{leader}: refuses the transfer: {error}")),
        }
        result
    }

    /// What became of the membership change node `leader` appended at `index` (see
    /// [`Node::change_outcome`]).
    pub fn change_outcome(
        &self,
        leader: u64,
        index: LogIndex,
    ) -> Option<Result<(), MembershipError>> {
        self.running(leader).node.change_outcome(index)
    }

    /// Node `id`'s current configuration, as one line.
    pub fn configuration_line(&self, id: u64) -> String {
        match &self.member(id).running {
            Some(running) => format!("{id}: {}", running.node.core().configuration()),
            None => format!("{id}: down"),
        }
    }

    /// Runs one membership change at node `leader`, recording the outcome.
    fn change(
        &mut self,
        leader: u64,
        change: impl FnOnce(&mut ClusterNode) -> Result<LogIndex, MembershipError>,
    ) -> Result<LogIndex, MembershipError> {
        let result = self.with_node(NodeId(leader), |node, _| Ok(change(node)));
        match &result {
            Ok(index) => {
                let configuration = self.core(leader).configuration().to_string();
                self.record(|| {
                    format!("{leader}: appends configuration {configuration} at {index}")
                });
            }
            Err(error) => self.record(|| format!("{leader}: refuses the change: {error}")),
        }
        result
    }

    // ---------------------------------------------------------------- clients

    /// Proposes `command` at node `id` and carries out what follows (nothing is delivered).
    pub fn propose(&mut self, id: u64, command: &[u8]) -> Result<LogIndex, ProposeError> {
        let number = self.proposals.len();
        self.proposals.push(Proposal {
            node: NodeId(id),
            command: command.to_vec(),
            appended_at: None,
            outcome: None,
        });
        let bytes = Bytes::copy_from_slice(command);
        let result = self
            .with_node(NodeId(id), |node, _| Ok(node.propose(bytes, number).map_err(|(e, _)| e)));
        match &result {
            Ok(index) => {
                let term = Term(self.term(id));
                self.proposals[number].appended_at = Some((*index, term));
                self.record(|| {
                    format!("{id}: appends {} at {index}@{term}", describe_command(command))
                });
            }
            Err(error) => {
                self.record(|| format!("{id}: refuses {}: {error}", describe_command(command)));
            }
        }
        result
    }

    /// Asks node `id` for a linearizable read and carries out what follows (nothing is
    /// delivered). When the node says the read may be served, the cluster checks that it has
    /// applied every entry committed anywhere before the read was asked (a violation
    /// panics) and records what the read sees: the last command the node applied. Returns
    /// the read's number (`r<n>` in the output), or why the node refused it.
    pub fn read(&mut self, id: u64, policy: ReadPolicy) -> Result<u64, ReadError> {
        let mut numbers = self.read_batch(id, policy, 1)?;
        Ok(numbers.pop().unwrap_or_default())
    }

    /// Like [`read`](Self::read), for `count` reads asked in one step (as a runtime takes a
    /// batch of requests), so that they share a heartbeat round or a forwarded request.
    /// Stops at the first refusal.
    pub fn read_batch(
        &mut self,
        id: u64,
        policy: ReadPolicy,
        count: u64,
    ) -> Result<Vec<u64>, ReadError> {
        let committed_when_asked = LogIndex(self.committed_log.len() as u64);
        let results = self.with_node(NodeId(id), |node, _| {
            Ok((0..count).map(|_| node.read(policy)).collect::<Vec<_>>())
        });
        let lease = if policy == ReadPolicy::Lease { " (lease)" } else { "" };
        let mut numbers = Vec::new();
        for result in results {
            match result {
                Ok(read) => {
                    self.reads_asked += 1;
                    let number = self.reads_asked;
                    let asked = AskedRead { number, committed_when_asked };
                    self.reads.insert((NodeId(id), read), asked);
                    self.record(|| format!("{id}: starts read r{number}{lease}"));
                    numbers.push(number);
                }
                Err(error) => {
                    self.record(|| format!("{id}: refuses a read{lease}: {error}"));
                    return Err(error);
                }
            }
        }
        // Reads confirmed at once came out of the step that asked for them.
        let early = std::mem::take(&mut self.unclaimed_reads);
        self.serve_reads(NodeId(id), early);
        Ok(numbers)
    }

    /// Plants `bug` in node `id`'s protocol core (until the node restarts). Only the bugs
    /// that live in the core can be planted this way; for the others, this returns `false`
    /// and plants nothing.
    pub fn plant_bug(&mut self, id: u64, bug: super::PlantedBug) -> bool {
        use super::PlantedBug;
        let running =
            self.member_mut(id).running.as_mut().unwrap_or_else(|| panic!("node{id} is down"));
        let core = running.node.core_mut();
        match bug {
            PlantedBug::CommitPreviousTermByCounting => core.planted_commit_previous_term = true,
            PlantedBug::ChangeWithoutJointPhase => core.planted_change_without_joint = true,
            PlantedBug::LearnersCountForCommit => core.planted_learners_count_for_commit = true,
            PlantedBug::ReadWithoutRound => core.planted_read_without_round = true,
            PlantedBug::SpliceSnapshotTransfers => core.planted_splice_snapshot_transfers = true,
            PlantedBug::ForgetVoteOnRestart
            | PlantedBug::AcknowledgeBeforeSync
            | PlantedBug::SnapshotSkipsEntry
            | PlantedBug::InstallKeepsConflictingLog => return false,
        }
        true
    }

    /// Node `id` took a snapshot of its state machine through its applied index now, stores
    /// it, and compacts its log behind it (keeping the configured tail).
    pub fn take_snapshot(&mut self, id: u64) {
        let running = self.running(id);
        let Some(meta) = running.node.core().snapshot_meta_for_applied() else {
            self.record(|| format!("{id}: nothing applied to snapshot"));
            return;
        };
        let data = running
            .node
            .state_machine()
            .snapshot()
            .unwrap_or_else(|error| panic!("a journal always snapshots: {error}"));
        let snapshot = running
            .node
            .snapshot_store()
            .create(&meta)
            .and_then(|mut sink| {
                sink.write_all(&data)
                    .map_err(|error| StorageError::io("writing the snapshot", error))?;
                sink.finish()
            })
            .unwrap_or_else(|error| panic!("{id}: the simulated disk stores snapshots: {error}"));
        self.member_mut(id).stored_snapshot = Some(meta.clone());
        self.with_node(NodeId(id), |node, _| node.snapshot_stored(Ok(snapshot)));
        let first = self.core(id).first_log_index();
        self.record(|| {
            format!("{id}: stored a snapshot through {}, log starts at {first}", meta.last_included)
        });
    }

    // ---------------------------------------------------------------- time

    /// Moves the clock forward by `ms` in steps of [`TICK_STEP_MS`]; at each step every
    /// running node is ticked, then every message is delivered (and those they cause).
    pub fn advance_time(&mut self, ms: u64) {
        self.advance_time_delivering(ms, |_| true);
    }

    /// Like [`advance_time`](Self::advance_time), but delivers only the messages `selected`
    /// picks; the others stay in flight.
    pub fn advance_time_delivering(&mut self, ms: u64, mut selected: impl FnMut(&Message) -> bool) {
        let end = self.now_ms + ms;
        while self.now_ms < end {
            self.now_ms = (self.now_ms + TICK_STEP_MS).min(end);
            for id in self.running_ids() {
                self.tick_node(id);
            }
            self.deliver_matching(&mut selected);
        }
    }

    /// Moves the clock forward by `ms` and ticks node `id` only. Nothing is delivered.
    pub fn tick(&mut self, id: u64, ms: u64) {
        self.now_ms += ms;
        self.tick_node(NodeId(id));
    }

    /// Advances time until `done` holds, for at most `max_ms` virtual milliseconds. Returns
    /// whether `done` held.
    pub fn run_until(&mut self, max_ms: u64, mut done: impl FnMut(&Cluster) -> bool) -> bool {
        let end = self.now_ms + max_ms;
        loop {
            if done(self) {
                return true;
            }
            if self.now_ms >= end {
                return false;
            }
            self.advance_time(TICK_STEP_MS.min(end - self.now_ms));
        }
    }

    /// Runs until there is a stable leader (panicking after `max_ms`) and returns it.
    pub fn elect_leader(&mut self, max_ms: u64) -> u64 {
        if !self.run_until(max_ms, Cluster::has_stable_leader) {
            panic!("no stable leader within {max_ms} ms:\n{}", self.describe());
        }
        self.leader().map_or(0, |leader| leader.0)
    }

    /// Moves the clock to node `id`'s next timer deadline (if it is later than now) and ticks
    /// that node only. Nothing is delivered. A follower or candidate starts an election (or
    /// a pre-vote), a leader sends heartbeats.
    pub fn fire_timer(&mut self, id: u64) {
        let deadline = self.running(id).node.next_deadline_ms();
        self.now_ms = self.now_ms.max(deadline);
        self.tick_node(NodeId(id));
    }

    /// Makes follower or candidate `id` start an election now (with pre-vote on: a pre-vote
    /// round), by firing its election timer. Nothing is delivered.
    pub fn campaign(&mut self, id: u64) {
        if self.role(id) == Role::Leader {
            panic!("node{id} already leads: a leader does not campaign");
        }
        self.fire_timer(id);
    }

    /// Makes every node of `ids` start an election at the same virtual instant, before any
    /// of them hears from another. Nothing is delivered.
    pub fn campaign_together(&mut self, ids: &[u64]) {
        let latest_deadline =
            ids.iter().map(|id| self.running(*id).node.next_deadline_ms()).max().unwrap_or(0);
        self.now_ms = self.now_ms.max(latest_deadline);
        for id in ids {
            self.tick_node(NodeId(*id));
        }
    }

    // ---------------------------------------------------------------- syncs

    /// From now on (until it crashes) node `id`'s syncs wait for
    /// [`complete_syncs`](Self::complete_syncs): its writes stay unsynced (a crash loses
    /// them), and what promises them waits.
    pub fn hold_syncs(&mut self, id: u64) {
        self.member_mut(id).holds_syncs = true;
    }

    /// Completes the syncs node `id` holds, oldest first; returns how many. The node keeps
    /// holding later ones.
    pub fn complete_syncs(&mut self, id: u64) -> usize {
        let count = self.syncs_waiting(id);
        self.record(|| format!("{id}: completes {count} syncs"));
        self.with_node(NodeId(id), |node, io| {
            complete_syncs(node, io);
            Ok(())
        });
        count
    }

    /// Completes the syncs node `id` holds and stops holding them.
    pub fn release_syncs(&mut self, id: u64) -> usize {
        self.member_mut(id).holds_syncs = false;
        self.complete_syncs(id)
    }

    // ---------------------------------------------------------------- network

    /// Delivers in-flight messages (and those they cause) until none is left. Returns how
    /// many were delivered.
    pub fn deliver_all(&mut self) -> usize {
        self.deliver_matching(|_| true)
    }

    /// Delivers in-flight messages for which `selected` holds, including those that the
    /// deliveries cause, until no in-flight message is selected. Others stay in flight.
    /// Returns how many were delivered.
    pub fn deliver_matching(&mut self, mut selected: impl FnMut(&Message) -> bool) -> usize {
        let mut delivered = 0;
        while let Some(message) = self.network.take_next(&mut self.rng, &mut selected) {
            self.deliver(message);
            delivered += 1;
            if delivered >= MAX_DELIVERIES_PER_CALL {
                panic!("messages never stop flowing:\n{}", self.describe());
            }
        }
        delivered
    }

    /// Delivers the messages in flight now for which `selected` holds, oldest first; those
    /// they cause stay in flight. Returns how many were delivered.
    pub fn deliver_round(&mut self, mut selected: impl FnMut(&Message) -> bool) -> usize {
        let chosen = self.network.take_matching(|message| selected(message));
        let count = chosen.len();
        for message in chosen {
            self.deliver(message);
        }
        count
    }

    /// Drops the in-flight messages for which `selected` holds. Returns how many.
    pub fn drop_matching(&mut self, mut selected: impl FnMut(&Message) -> bool) -> usize {
        let dropped = self.network.take_matching(|message| selected(message));
        self.network.count_dropped(dropped.len());
        for message in &dropped {
            self.record(|| format!("dropped {}", describe_message(message)));
        }
        dropped.len()
    }

    /// Drops every in-flight message.
    pub fn drop_in_flight(&mut self) -> usize {
        self.drop_matching(|_| true)
    }

    /// Completes every sync of the nodes that do not hold theirs and delivers every message
    /// (and those that causes), until nothing is left to do.
    pub fn stabilize(&mut self) {
        loop {
            let mut progress = self.deliver_round(|_| true) > 0;
            for id in self.running_ids() {
                let member = &self.nodes[&id];
                let waiting =
                    member.running.as_ref().is_some_and(|running| !running.syncs.is_empty());
                if waiting && !member.holds_syncs {
                    self.complete_syncs(id.0);
                    progress = true;
                }
            }
            if !progress {
                return;
            }
        }
    }

    /// Cuts node `id` off from every other node, both ways.
    pub fn isolate(&mut self, id: u64) {
        let others: Vec<u64> =
            self.nodes.keys().map(|other| other.0).filter(|other| *other != id).collect();
        self.partition(&[&[id], &others]);
    }

    /// Blocks every link between nodes of different `groups`, both ways. Links within a group
    /// and links already blocked stay as they are.
    pub fn partition(&mut self, groups: &[&[u64]]) {
        for (group_position, group) in groups.iter().enumerate() {
            for (other_position, other) in groups.iter().enumerate() {
                if group_position == other_position {
                    continue;
                }
                for from in group.iter() {
                    for to in other.iter() {
                        self.network.block(NodeId(*from), NodeId(*to));
                    }
                }
            }
        }
    }

    /// Blocks the link from `from` to `to` (one direction).
    pub fn block_link(&mut self, from: u64, to: u64) {
        self.network.block(NodeId(from), NodeId(to));
    }

    /// Puts `message` in flight as if its sender had sent it: a forged, replayed or
    /// hand-made message, for tests of what a node does with one.
    pub fn inject(&mut self, message: Message) {
        self.network.send(message);
    }

    /// Unblocks every link.
    pub fn heal(&mut self) {
        self.network.heal();
    }

    /// Loses every `n`-th message sent from now on (counting all messages), or none.
    pub fn drop_every_nth_message(&mut self, n: Option<u64>) {
        self.network.drop_every_nth(n);
    }

    /// Delivers in-flight messages in a (seeded) random order instead of oldest first.
    pub fn set_reordering(&mut self, reorder: bool) {
        self.network.set_reordering(reorder);
    }

    // ---------------------------------------------------------------- faults

    /// Node `id` loses power: its memory is gone, and so are its unsynced writes (held syncs);
    /// messages to or from it that are in flight are lost. Returns how many unsynced bytes
    /// were lost.
    pub fn crash(&mut self, id: u64) -> usize {
        let node_id = NodeId(id);
        let member = self.member_mut(id);
        member.holds_syncs = false;
        let Some(mut running) = member.running.take() else {
            panic!("node{id} is already down");
        };
        let mut answers = Answers::default();
        running.node.stop(&mut answers);
        drop(running);
        let disk = self.member(id).disk.clone();
        let damage = disk.crash(&mut self.rng, 0.0);
        self.record(|| format!("{id}: crashes, losing {} unsynced bytes", damage.lost_bytes));
        self.answer(node_id, answers.0);
        for (read, outcome) in answers.1 {
            if let Some(asked) = self.reads.remove(&(node_id, read)) {
                let error = outcome.err().unwrap_or(ReadError::Shutdown);
                self.record(|| format!("{id}: fails read r{}: {error}", asked.number));
            }
        }
        self.drop_matching(|message| message.from == node_id || message.to == node_id);
        damage.lost_bytes
    }

    /// Starts node `id` again from its disk, with a fresh seed and an empty state machine
    /// (restored from its snapshot; committed entries are applied again).
    pub fn restart(&mut self, id: u64) {
        if self.is_up(id) {
            panic!("node{id} is running: crash it first");
        }
        self.start(NodeId(id));
    }

    // ---------------------------------------------------------------- internals

    fn member(&self, id: u64) -> &Member {
        self.nodes.get(&NodeId(id)).unwrap_or_else(|| panic!("the cluster has no node{id}"))
    }

    fn member_mut(&mut self, id: u64) -> &mut Member {
        self.nodes.get_mut(&NodeId(id)).unwrap_or_else(|| panic!("the cluster has no node{id}"))
    }

    fn running(&self, id: u64) -> &Running {
        self.member(id).running.as_ref().unwrap_or_else(|| panic!("node{id} is down"))
    }

    fn running_cores(&self) -> impl Iterator<Item = &RaftCore> {
        self.nodes.values().filter_map(|member| member.running.as_ref().map(|r| r.node.core()))
    }

    fn running_ids(&self) -> Vec<NodeId> {
        self.running_cores().map(RaftCore::id).collect()
    }

    fn can_reach(&self, from: NodeId, to: NodeId) -> bool {
        self.network.connects(from, to)
    }

    fn start(&mut self, id: NodeId) {
        let seed = self.rng.next_u64();
        let member = self.member(id.0);
        let storage = SimStorage::open(member.disk.clone(), id)
            .unwrap_or_else(|error| panic!("{id} reopens its write-ahead log: {error}"));
        let journal = Journal::salted(id.0);
        let shared = journal.share();
        let members = if member.joined { Vec::new() } else { self.members.clone() };
        let node = Node::start(id, members, self.config.clone(), storage, journal, seed)
            .unwrap_or_else(|error| panic!("{id} starts from what its disk holds: {error}"));
        let restored = shared.records();
        let last_applied = restored.last().map_or(LogIndex(0), |(index, _, _)| *index);
        let line = format!("{id}: starts", id = id.0);
        self.member_mut(id.0).running =
            Some(Running { node, journal: shared, syncs: VecDeque::new(), last_applied });
        let status = self.status_line(id.0);
        self.record(|| format!("{line}: {}", status.split_once(": ").map_or("", |(_, rest)| rest)));
        let now_ms = self.now_ms;
        self.with_node(id, |node, _| {
            node.tick(now_ms);
            Ok(())
        });
    }

    fn tick_node(&mut self, id: NodeId) {
        let now_ms = self.now_ms;
        self.with_node(id, |node, _| {
            node.tick(now_ms);
            Ok(())
        });
    }

    fn deliver(&mut self, message: Message) {
        let (from, to) = (message.from, message.to);
        if self.network.is_blocked(from, to)
            || self.nodes.get(&to).is_none_or(|member| member.running.is_none())
        {
            self.network.count_dropped(1);
            self.record(|| format!("dropped {}", describe_message(&message)));
            return;
        }
        self.network.record_delivered(message.clone());
        self.with_node(to, |node, _| {
            node.step(message);
            Ok(())
        });
    }

    fn send(&mut self, message: Message) {
        let line = (self.recording && self.recording_messages).then(|| describe_message(&message));
        if self.network.send(message)
            && let Some(line) = line
        {
            self.output.push(line);
        }
    }

    fn answer(&mut self, id: NodeId, answers: Vec<(usize, ProposalResult)>) {
        for (number, result) in answers {
            let proposal = &mut self.proposals[number];
            let line = format!(
                "{}: answers {}: {}",
                id.0,
                describe_command(&proposal.command),
                match &result {
                    Ok(_) => String::from("applied"),
                    Err(error) => error.to_string(),
                }
            );
            proposal.outcome = Some(result);
            self.record(|| line);
        }
    }

    /// Feeds node `id` an input, carries out the work it produced (completing its syncs at
    /// once unless it holds them, and taking a snapshot if one is due), routes what it
    /// produced, records what changed and checks the invariants.
    fn with_node<R>(
        &mut self,
        id: NodeId,
        input: impl FnOnce(&mut ClusterNode, &mut ClusterIo<'_>) -> Result<R, StorageError>,
    ) -> R {
        let now_ms = self.now_ms;
        let member = self.nodes.get_mut(&id).unwrap_or_else(|| panic!("the cluster has no {id}"));
        let holds_syncs = member.holds_syncs;
        let Some(running) = member.running.as_mut() else {
            panic!("{id} is down");
        };
        let before = Observed::of(running.node.core());
        let installed_before = running.node.snapshots_installed();
        let mut io = ClusterIo {
            id,
            now_ms,
            checker: &mut self.checker,
            journal: &running.journal,
            last_applied: &mut running.last_applied,
            applied_ever: &mut member.applied_ever,
            syncs: &mut running.syncs,
            outbox: Vec::new(),
            answers: Vec::new(),
            reads: Vec::new(),
            applied: Vec::new(),
        };
        let node = &mut running.node;
        let result = input(node, &mut io)
            .and_then(|value| node.process(&mut io).map(|()| value))
            .and_then(|value| {
                if !holds_syncs {
                    complete_syncs(node, &mut io);
                }
                let snapshot = node.take_snapshot(&mut io)?;
                Ok((value, snapshot))
            });
        let (value, snapshot) = result
            .unwrap_or_else(|error| panic!("{id}: storage never fails in a cluster: {error}"));
        let ClusterIo { outbox, answers, reads, applied, .. } = io;
        let after = Observed::of(node.core());
        let installed = (node.snapshots_installed() > installed_before).then(|| {
            let restored = running.journal.records();
            format!(
                "{}: installs the leader's snapshot through {} ({} commands)",
                id.0,
                node.core().first_log_index().prev(),
                restored.len()
            )
        });
        let stored = snapshot.map(|snapshot| {
            let meta = snapshot.meta().clone();
            let written = snapshot.write_into(&mut node.snapshot_store());
            node.snapshot_stored(written).unwrap_or_else(|error| {
                panic!("{id}: compaction never fails in a cluster: {error}")
            });
            meta
        });
        if let Some(meta) = stored {
            member.stored_snapshot = Some(meta);
        }

        if let Some(line) = installed {
            self.record(|| line);
        }
        self.record_changes(id, before, after, &applied);
        for message in outbox {
            self.send(message);
        }
        self.answer(id, answers);
        self.serve_reads(id, reads);
        self.check(id);
        value
    }

    /// Node `id` says reads may be served (or failed): records them, and checks that a
    /// served read reflects every entry committed before it was asked.
    fn serve_reads(&mut self, id: NodeId, outcomes: Vec<(ReadId, Result<LogIndex, ReadError>)>) {
        for (read, outcome) in outcomes {
            let Some(asked) = self.reads.remove(&(id, read)) else {
                self.unclaimed_reads.push((read, outcome));
                continue;
            };
            let number = asked.number;
            let read_index = match outcome {
                Ok(read_index) => read_index,
                Err(error) => {
                    self.record(|| format!("{}: fails read r{number}: {error}", id.0));
                    continue;
                }
            };
            let running = self.running(id.0);
            let applied = running.node.core().applied_index();
            if applied < asked.committed_when_asked || applied < read_index {
                panic!(
                    "linearizability violated: {id} served read r{number} having applied through {applied}, but entry {} was committed before the read was asked (read index {read_index}):\n{}",
                    asked.committed_when_asked,
                    self.describe()
                );
            }
            let seen = running.journal.records().last().map_or_else(
                || String::from("nothing"),
                |(_, _, command)| describe_command(command),
            );
            self.record(|| {
                format!(
                    "{}: serves read r{number} at read index {read_index}: last applied {seen}",
                    id.0
                )
            });
        }
    }

    fn record_changes(
        &mut self,
        id: NodeId,
        before: Observed,
        after: Observed,
        applied: &[AppliedCommand],
    ) {
        if !self.recording {
            return;
        }
        let id = id.0;
        if (before.role, before.term) != (after.role, after.term) {
            self.output.push(format!(
                "{id}: {} term={} -> {} term={}",
                before.role, before.term, after.role, after.term
            ));
        }
        if (after.voted_for, after.term) != (before.voted_for, before.term)
            && let Some(vote) = after.voted_for
            && vote.0 != id
        {
            self.output.push(format!("{id}: votes for {} in term {}", vote.0, after.term));
        }
        if after.leader != before.leader
            && let Some(leader) = after.leader
            && leader.0 != id
        {
            self.output.push(format!("{id}: follows {} in term {}", leader.0, after.term));
        }
        if after.commit_index != before.commit_index {
            self.output
                .push(format!("{id}: commit {} -> {}", before.commit_index, after.commit_index));
        }
        for (index, term, command) in applied {
            self.output.push(format!("{id}: applies {index}@{term} {}", describe_command(command)));
        }
    }

    /// Election safety, log matching and committed prefixes after a step of node `id`; the
    /// apply checks ran as it applied. Panics with the first violation.
    fn check(&mut self, id: NodeId) {
        let Some(running) = self.nodes.get(&id).and_then(|member| member.running.as_ref()) else {
            return;
        };
        let core = running.node.core();
        if core.role() == Role::Leader {
            self.checker.on_leader(core.term(), id, self.now_ms);
        }
        let commit_index = core.commit_index();
        let member = &self.nodes[&id];
        let from = core.first_log_index().max(member.highest_commit_seen.next());
        let mut index = from;
        while index <= commit_index {
            let entry = core.entry(index).cloned();
            let position = index.0 as usize - 1;
            if self.committed_log.len() < position {
                self.committed_log.resize(position, None);
            }
            match self.committed_log.get_mut(position) {
                None => self.committed_log.push(entry),
                Some(slot @ None) => *slot = entry,
                Some(Some(committed)) => {
                    if entry.as_ref().is_some_and(|entry| entry != committed) {
                        panic!(
                            "{id}: committed entry {index} differs from the one committed before:\n{}",
                            self.describe()
                        );
                    }
                }
            }
            index = index.next();
        }
        let highest = member.highest_commit_seen.max(commit_index);
        if let Some(member) = self.nodes.get_mut(&id) {
            member.highest_commit_seen = highest;
        }
        let Cluster { nodes, checker, now_ms, .. } = self;
        let cores: Vec<&RaftCore> = nodes
            .values()
            .filter_map(|member| member.running.as_ref().map(|running| running.node.core()))
            .collect();
        checker.check_log_matching(&cores, *now_ms);
        if let Some(violation) = self.checker.violations().first() {
            panic!("invariant violated: {violation}\n{}", self.describe());
        }
    }
}

/// Completes every sync `node` handed out, oldest first, and carries out what follows.
fn complete_syncs(node: &mut ClusterNode, io: &mut ClusterIo<'_>) {
    while let Some(sync) = io.syncs.pop_front() {
        sync.complete().unwrap_or_else(|error| {
            panic!("{}: a simulated sync never fails here: {error}", io.id)
        });
        node.sync_done(io);
        node.process(io)
            .unwrap_or_else(|error| panic!("{}: storage never fails in a cluster: {error}", io.id));
    }
}

/// A read asked of a node, and what it must reflect.
#[derive(Clone, Copy, Debug)]
struct AskedRead {
    /// Its number in the output.
    number: u64,
    /// The highest index any node had committed when the read was asked.
    committed_when_asked: LogIndex,
}

/// Collects the answers a stopping node gives; it sends and syncs nothing.
#[derive(Default)]
struct Answers(Vec<(usize, ProposalResult)>, Vec<(ReadId, Result<LogIndex, ReadError>)>);

impl NodeIo<usize> for Answers {
    fn send(&mut self, _message: Message) {}

    fn start_sync(&mut self, _sync: Box<dyn PendingSync>) {}

    fn answer(&mut self, waiter: usize, result: ProposalResult) {
        self.0.push((waiter, result));
    }

    fn read_ready(&mut self, read: ReadId, result: Result<LogIndex, ReadError>) {
        self.1.push((read, result));
    }
}

fn optional_id(id: Option<NodeId>) -> String {
    id.map_or_else(|| String::from("none"), |id| id.0.to_string())
}

/// The terms of a log's entries, comma-separated, after the compacted prefix if any.
fn describe_log_terms(core: &RaftCore) -> String {
    let first = core.first_log_index();
    let terms: Vec<String> = (first.0..=core.last_log_id().index.0)
        .filter_map(|index| core.entry(LogIndex(index)))
        .map(|entry| entry.term.to_string())
        .collect();
    let compacted =
        if first > LogIndex(1) { format!("..{}|", first.prev()) } else { String::new() };
    if terms.is_empty() && compacted.is_empty() {
        String::from("empty")
    } else {
        format!("{compacted}{}", terms.join(","))
    }
}
