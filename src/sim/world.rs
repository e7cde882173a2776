//! [`World`]: one simulated run. A discrete-event loop on a virtual clock: every event (a
//! message arriving, a timer firing, a client acting, a fault starting or ending) is taken
//! from a queue ordered by (time, insertion order), so the run depends on the seed alone.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, VecDeque};

use crate::config::Config;
use crate::core::{MemberAddress, RaftCore, ReadPolicy, Role};
use crate::error::{MembershipError, ProposeError, ReadError, StorageError};
use crate::linearizability::{CheckResult, Model, Operation, check_with_limit};
use crate::message::Message;
use crate::node::{ApplyResult, Node, NodeIo, ProposalResult};
use crate::state_machine::StateMachine;
use crate::storage::PendingSync;
use crate::types::{LogIndex, NodeId, ReadId, Term};

use super::checks::{Checker, Violation};
use super::describe::describe_message;
use super::disk::{CrashDamage, SimDisk, SimStorage};
use super::links::{Links, message_size};
use super::membership::{
    Action, Aim, LeaderView, MAX_SIM_NODES, MembershipPlanner, MembershipVariation,
};
use super::network::{MessageFate, PartitionKind, SimNetwork};
use super::planted::{PlantedMachine, PlantedStorage};
use super::rng::SimRng;
use super::trace::TraceHash;
use super::variation::SeedVariation;
use super::workload::Workload;
use super::{
    DiskFreezeReport, FaultCounts, MembershipMode, OperationCounts, OutageReport, PlantedBug,
    SimConfig, SimReport, SnapshotCounts,
};

/// How often log matching is checked across the running nodes.
const CHECK_INTERVAL_MS: u64 = 500;
/// Delay between a client and a node, each way.
const CLIENT_DELAY_MS: (u64, u64) = (1, 4);
/// Pause between a client's answer and its next operation.
const CLIENT_THINK_MS: (u64, u64) = (0, 10);
/// Most events a run may process (a guard against a livelock in the simulator itself).
const MAX_EVENTS: u64 = 5_000_000;
/// Most configurations the linearizability search may explore per key before it gives up
/// (the run is then counted as inconclusive, never as a pass or a violation).
const LINEARIZABILITY_BUDGET: u64 = 1_000_000;
/// Mixed into the seed for the membership stream, apart from the world's own.
const MEMBERSHIP_STREAM: u64 = 0x4D45_4D42_4552_5348;
/// Share of seeds that change membership under [`MembershipMode::PerSeed`].
const MEMBERSHIP_SEED_SHARE: f64 = 0.4;
/// Mixed into the seed for the stream that decides how reads are served, apart from the
/// world's own.
const READS_STREAM: u64 = 0x5245_4144_5345_5256;
/// Mixed into the seed for the stream that draws the in-flight byte budget, apart from the
/// world's own.
const FLOW_STREAM: u64 = 0x464C_4F57_4259_5445;
/// Share of seeds whose nodes run with leases (when they run pre-vote).
const LEASE_SEED_SHARE: f64 = 0.5;
/// Pause between two membership rounds while a plan is under way.
const MEMBERSHIP_POLL_MS: (u64, u64) = (10, 60);
/// Mixed into the seed for the stream that decides a leader's disk freeze, apart from the
/// world's own.
const DISK_FREEZE_STREAM: u64 = 0x4652_4545_5A45_4449;
/// How long a frozen disk's syncs hang.
const DISK_FREEZE_MS: (u64, u64) = (600, 2_500);
/// How long to wait for a leader to freeze when there is none.
const DISK_FREEZE_RETRY_MS: u64 = 20;

/// Something that happens at a moment of virtual time.
#[derive(Debug)]
enum Event {
    Deliver(Message),
    Tick(NodeId),
    ClientIssue(usize),
    ClientRequest {
        client: usize,
        operation: usize,
        node: NodeId,
    },
    ClientAnswer {
        client: usize,
        operation: usize,
        answer: ClientAnswer,
    },
    ClientTimeout {
        client: usize,
        operation: usize,
    },
    FaultRound,
    Restart(NodeId),
    Resume(NodeId),
    Heal,
    CheckInvariants,
    EndWorkload,
    /// The snapshot a node took is written (its writer thread finished).
    SnapshotWritten {
        id: NodeId,
        incarnation: u64,
    },
    /// The oldest sync a node flushed is done (its sync thread's `fdatasync` returned).
    SyncDone {
        id: NodeId,
        incarnation: u64,
    },
    /// The long outage of [`SimConfig::outage_ms`] begins: a follower goes down.
    OutageStart,
    /// The membership planner takes its next step (membership seeds only).
    MembershipRound,
    /// The leader's disk freezes ([`FaultConfig::leader_disk_freeze`](super::FaultConfig)).
    DiskFreeze,
}

/// What a node answered a client.
#[derive(Clone, Debug)]
enum ClientAnswer {
    /// The state machine's result for the command applied at `index` in `term`.
    Applied {
        result: Vec<u8>,
        index: LogIndex,
        term: Term,
    },
    /// The state machine's answer to the query of a read served without a log entry.
    Read {
        result: Vec<u8>,
    },
    NotLeader(Option<NodeId>),
    Unknown,
}

struct Scheduled {
    time_ms: u64,
    sequence: u64,
    event: Event,
}

impl PartialEq for Scheduled {
    fn eq(&self, other: &Self) -> bool {
        (self.time_ms, self.sequence) == (other.time_ms, other.sequence)
    }
}
impl Eq for Scheduled {}
impl PartialOrd for Scheduled {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Scheduled {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.time_ms, self.sequence).cmp(&(other.time_ms, other.sequence))
    }
}

/// A simulated node: the production [`Node`] on the WAL over a simulated disk, with a
/// proposal's waiter being its (client, operation).
type SimRaftNode<M> = Node<PlantedStorage<SimStorage>, PlantedMachine<M>, (usize, usize)>;

/// A running incarnation of a node.
struct RunningNode<M: StateMachine> {
    node: SimRaftNode<M>,
    /// The last index this incarnation applied (state machine safety: strictly increasing).
    last_applied: LogIndex,
    /// Snapshots installed, as last counted.
    snapshots_installed: u64,
    /// A snapshot taken and being written (on a thread, in a real node).
    snapshot_to_write: Option<crate::node::TakenSnapshot>,
    /// Syncs flushed and not yet done (a real node's sync thread runs them), oldest first:
    /// until one is done, its writes are only in the page cache, and a power loss tears or
    /// loses them.
    syncs: VecDeque<Box<dyn PendingSync>>,
    /// Elections this incarnation had started when last looked at.
    elections_seen: u64,
    /// Whether it led when last looked at.
    leading_seen: bool,
    /// Times this incarnation had stepped down for a stalled disk when last looked at.
    stall_step_downs_seen: u64,
}

struct SimNode<M: StateMachine> {
    id: NodeId,
    disk: SimDisk,
    running: Option<RunningNode<M>>,
    /// How many times the node has started: an event for an earlier incarnation is stale.
    incarnation: u64,
    paused_until: Option<u64>,
    /// When the node's disk finishes the last sync handed to it (syncs run one after another).
    disk_busy_until_ms: u64,
    /// Until when the node's disk is frozen: no sync completes before (0: never frozen).
    disk_frozen_until_ms: u64,
    /// Events that reached the node while it was paused, handled when it resumes.
    deferred: Vec<Event>,
    tick_scheduled_at: Option<u64>,
    /// Whether the node was started to join (with no members) by a membership change.
    joined: bool,
    /// Whether the node has been a member: one of the first voters, or added as a learner.
    ever_member: bool,
    /// The index of the configuration entry that last added it (0 for the first voters).
    added_at: LogIndex,
    /// Whether a committed configuration after `added_at` leaves it out: from then on it
    /// must never lead nor depose a leader (until it is added again).
    removed: bool,
    /// The highest term among the running nodes and the leaders seen when it was removed:
    /// its elections after the removal are for later terms.
    removed_at_term: Term,
    /// The terms of the elections it started since it was removed.
    terms_stood_after_removal: BTreeSet<Term>,
    /// Whether it was shut down for good after its removal (runs without pre-vote, where a
    /// removed node that keeps running would disrupt the cluster with its elections).
    decommissioned: bool,
}

impl<M: StateMachine> SimNode<M> {
    /// A node with an empty disk that has not started yet.
    fn new(id: NodeId, joined: bool) -> Self {
        SimNode {
            id,
            disk: SimDisk::default(),
            running: None,
            incarnation: 0,
            paused_until: None,
            disk_busy_until_ms: 0,
            disk_frozen_until_ms: 0,
            deferred: Vec::new(),
            tick_scheduled_at: None,
            joined,
            ever_member: !joined,
            added_at: LogIndex(0),
            removed: false,
            removed_at_term: Term(0),
            terms_stood_after_removal: BTreeSet::new(),
            decommissioned: false,
        }
    }
}

/// The simulator's side of [`NodeIo`] for one call into a node: applied commands go to the
/// checker at once; messages, syncs and answers are kept for the world to route after.
struct SimIo<'a> {
    now_ms: u64,
    id: NodeId,
    checker: &'a mut Checker,
    last_applied: &'a mut LogIndex,
    syncs: &'a mut VecDeque<Box<dyn PendingSync>>,
    started_syncs: usize,
    outbox: Vec<Message>,
    answers: Vec<((usize, usize), ProposalResult)>,
    reads: Vec<(ReadId, Result<LogIndex, ReadError>)>,
}

impl NodeIo<(usize, usize)> for SimIo<'_> {
    fn send(&mut self, message: Message) {
        self.checker.on_sent(&message, self.now_ms);
        self.outbox.push(message);
    }

    fn start_sync(&mut self, sync: Box<dyn PendingSync>) {
        self.syncs.push_back(sync);
        self.started_syncs += 1;
    }

    fn answer(&mut self, waiter: (usize, usize), result: ProposalResult) {
        self.answers.push((waiter, result));
    }

    fn read_ready(&mut self, read: ReadId, result: Result<LogIndex, ReadError>) {
        self.reads.push((read, result));
    }

    fn applied(&mut self, index: LogIndex, term: Term, command: &[u8], result: &ApplyResult) {
        let (id, now_ms) = (self.id, self.now_ms);
        let last_applied = &mut *self.last_applied;
        self.checker.on_applied_result(id, last_applied, index, term, command, result, now_ms);
    }
}

/// How a client operation ended, with the model's output `O`.
#[derive(Clone, Debug)]
pub(crate) enum RecordedOutcome<O> {
    Pending,
    Ok {
        output: O,
        index: LogIndex,
        term: Term,
    },
    /// Answered by a linearizable read (no log entry).
    Read {
        output: O,
    },
    Failed,
    Unknown,
}

/// One client operation in the history, with the model's input `I` and output `O`.
#[derive(Clone, Debug)]
pub(crate) struct OperationRecord<I, O> {
    pub(crate) client: usize,
    pub(crate) input: I,
    /// The command proposed for it.
    pub(crate) command: bytes::Bytes,
    pub(crate) call_ms: u64,
    pub(crate) return_ms: u64,
    pub(crate) outcome: RecordedOutcome<O>,
    /// Where the leader appended it: (index, term).
    pub(crate) appended_at: Option<(LogIndex, Term)>,
    /// For a read served without a log entry: how it is confirmed.
    pub(crate) read: Option<ReadPolicy>,
}

impl<I: Clone + std::fmt::Debug, O: Clone + std::fmt::Debug> OperationRecord<I, O> {
    /// The operation as the linearizability checker sees it.
    fn to_checked_operation(&self) -> Operation<I, O> {
        let client_id = self.client as u64;
        let input = self.input.clone();
        match &self.outcome {
            RecordedOutcome::Ok { output, .. } | RecordedOutcome::Read { output } => {
                Operation::ok(client_id, input, self.call_ms, self.return_ms, output.clone())
            }
            RecordedOutcome::Failed => Operation::failed(client_id, input, self.call_ms),
            RecordedOutcome::Unknown | RecordedOutcome::Pending => {
                Operation::unknown(client_id, input, self.call_ms)
            }
        }
    }

    /// One line for a violation report.
    fn describe(&self) -> String {
        let end = if self.return_ms == u64::MAX {
            String::from("...")
        } else {
            self.return_ms.to_string()
        };
        let read = match self.read {
            None => "",
            Some(ReadPolicy::ReadIndex) => " (read index)",
            Some(ReadPolicy::Lease) => " (lease read)",
        };
        format!(
            "client {} [{} ms, {end} ms] {:?}{read} -> {:?}",
            self.client, self.call_ms, self.input, self.outcome
        )
    }
}

/// A model's input and output types, for the workload `W`.
type InputOf<W> = <<W as Workload>::Model as Model>::Input;
type OutputOf<W> = <<W as Workload>::Model as Model>::Output;

struct SimClient {
    leader_guess: NodeId,
    outstanding: Option<usize>,
}

pub(crate) struct World<W: Workload> {
    seed: u64,
    /// What the clients do, and the model their history is checked against.
    workload: W,
    config: SimConfig,
    /// The configuration every node of this run starts with.
    raft_config: Config,
    /// What this seed drew besides its faults: flow-control limits, disk and link speeds.
    variation: SeedVariation,
    /// The links between nodes, with this seed's bandwidth.
    links: Links,
    rng: SimRng,
    now_ms: u64,
    queue: BinaryHeap<Reverse<Scheduled>>,
    next_sequence: u64,
    members: Vec<NodeId>,
    nodes: Vec<SimNode<W::Machine>>,
    network: SimNetwork,
    clients: Vec<SimClient>,
    history: Vec<OperationRecord<InputOf<W>, OutputOf<W>>>,
    checker: Checker,
    faults: FaultCounts,
    trace: TraceHash,
    events: u64,
    workload_over: bool,
    max_commit_index: LogIndex,
    linearizability_inconclusive: bool,
    snapshots: SnapshotCounts,
    /// The node taken down by the long outage, with its last log index and the time then.
    outage: Option<(NodeId, LogIndex, u64)>,
    /// What the long outage did, once the node is back.
    outage_report: Option<OutageReport>,
    /// The membership changes of a membership seed.
    membership: Option<MembershipPlanner>,
    /// What the membership seed drew.
    membership_variation: Option<MembershipVariation>,
    /// The index of the latest committed (simple) configuration any node has shown.
    committed_configuration_index: LogIndex,
    /// Decides how each read is served (its own stream, apart from the world's).
    reads_rng: SimRng,
    /// Reads asked of nodes: by node, incarnation and the id the node gave, the client
    /// operation they serve.
    pending_reads: BTreeMap<(NodeId, u64, ReadId), (usize, usize)>,
    /// The leader's disk freeze this seed drew: when, and for how long.
    disk_freeze_plan: Option<(u64, u64)>,
    /// What the freeze did, once a leader's disk froze.
    disk_freeze: Option<DiskFreezeReport>,
    /// Times leaders stepped down for a stalled disk.
    stall_step_downs: u64,
}

impl<W: Workload> World<W> {
    pub(crate) fn new(seed: u64, config: &SimConfig, workload: W) -> World<W> {
        let mut rng = SimRng::new(seed);
        let drawn_count = if rng.chance(0.5) { 3 } else { 5 };
        // Membership choices come from their own stream, so that a seed without membership
        // changes draws from the world's stream exactly what it drew before they existed.
        let mut membership_rng = SimRng::new(seed ^ MEMBERSHIP_STREAM);
        let membership_mode = match config.planted_bug {
            Some(bug) if bug.is_membership_bug() => MembershipMode::Always,
            _ => config.membership,
        };
        let membership_on = match membership_mode {
            MembershipMode::PerSeed => membership_rng.chance(MEMBERSHIP_SEED_SHARE),
            MembershipMode::Always => true,
            MembershipMode::Never => false,
        };
        let membership_variation =
            membership_on.then(|| MembershipVariation::draw(&mut membership_rng));
        let node_count = match (config.node_count, &membership_variation) {
            (0, Some(variation)) => variation.initial_nodes,
            (0, None) => drawn_count,
            (count, _) => count,
        };
        // Some seeds are calm, some stormy: scale every fault rate by a per-seed intensity.
        let intensity = [0.0, 0.5, 1.0, 1.0, 2.0, 3.0][rng.below(6) as usize];
        let mut config = config.clone();
        config.faults = config.faults.scaled(intensity);
        let raft_config = if config.snapshots {
            Config {
                pre_vote: config.pre_vote,
                snapshot_after_entries: rng.between(20, 300),
                snapshot_after_bytes: 0,
                snapshot_keep_entries: rng.between(0, 50),
                snapshot_chunk_bytes: rng.between(4, 64) as usize,
                max_inflight_snapshot_chunks: rng.between(1, 4) as usize,
                ..Config::default()
            }
        } else {
            Config {
                pre_vote: config.pre_vote,
                snapshot_after_entries: 0,
                snapshot_after_bytes: 0,
                ..Config::default()
            }
        };
        let mut flow_rng = SimRng::new(seed ^ FLOW_STREAM);
        let variation = SeedVariation::draw(&mut rng, &mut flow_rng, &raft_config);
        let mut raft_config = variation.apply_to(raft_config);
        // Reads: some seeds run with leases. The nodes share one virtual clock, so any drift
        // bound holds; each seed still draws one, which shortens its leases.
        let mut reads_rng = SimRng::new(seed ^ READS_STREAM);
        raft_config.lease_reads = config.pre_vote && reads_rng.chance(LEASE_SEED_SHARE);
        raft_config.clock_drift_bound_ms =
            reads_rng.between(0, raft_config.election_timeout_min_ms / 2);
        if let Some(membership) = &membership_variation {
            raft_config.promotion_max_lag = membership.promotion_max_lag;
        }
        let membership = membership_variation.as_ref().map(|membership| {
            MembershipPlanner::new(
                membership_rng,
                node_count,
                membership.promotion_max_lag,
                membership.aim,
            )
        });
        // The leader's disk freeze: its own stream, so that a seed without one draws from the
        // world's stream exactly what it drew before freezes existed.
        let mut freeze_rng = SimRng::new(seed ^ DISK_FREEZE_STREAM);
        let disk_freeze_plan = freeze_rng.chance(config.faults.leader_disk_freeze).then(|| {
            let at = freeze_rng.between(500, (config.workload_ms / 2).max(500));
            (at, freeze_rng.between(DISK_FREEZE_MS.0, DISK_FREEZE_MS.1))
        });
        let members: Vec<NodeId> = (1..=node_count as u64).map(NodeId).collect();
        let nodes = members.iter().map(|id| SimNode::new(*id, false)).collect();
        let clients = (0..config.clients)
            .map(|_| SimClient {
                leader_guess: members[rng.below(node_count as u64) as usize],
                outstanding: None,
            })
            .collect();
        World {
            seed,
            workload,
            config,
            raft_config,
            links: Links::with_bandwidth(variation.link_bytes_per_ms),
            variation,
            rng,
            now_ms: 0,
            queue: BinaryHeap::new(),
            next_sequence: 0,
            members,
            nodes,
            network: SimNetwork::default(),
            clients,
            history: Vec::new(),
            checker: Checker::default(),
            faults: FaultCounts::default(),
            trace: TraceHash::default(),
            events: 0,
            workload_over: false,
            max_commit_index: LogIndex(0),
            linearizability_inconclusive: false,
            snapshots: SnapshotCounts::default(),
            outage: None,
            outage_report: None,
            membership,
            membership_variation,
            committed_configuration_index: LogIndex(0),
            reads_rng,
            pending_reads: BTreeMap::new(),
            disk_freeze_plan,
            disk_freeze: None,
            stall_step_downs: 0,
        }
    }

    /// Plays the run. A panic inside it (a `debug_assert!` of a protocol invariant, or a bug
    /// anywhere) is caught and reported as a violation of this seed.
    pub(crate) fn run(mut self) -> SimReport {
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.play()));
        match outcome {
            Ok(converged) => self.finish(converged),
            Err(panic) => {
                let message = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|text| (*text).to_owned()))
                    .unwrap_or_else(|| String::from("a panic with a non-text payload"));
                let at_ms = self.now_ms;
                self.checker.report(Violation::Panic { message, at_ms });
                self.report()
            }
        }
    }

    /// Processes events until the healed cluster converges or time runs out. Returns whether
    /// it converged.
    fn play(&mut self) -> bool {
        self.trace_event(format_args!("{} nodes, {:?}", self.members.len(), self.variation));
        for id in self.members.clone() {
            self.start_node(id);
        }
        for client in 0..self.clients.len() {
            let delay = self.rng.between(0, 50);
            self.schedule(delay, Event::ClientIssue(client));
        }
        let fault_interval = self.config.faults.fault_interval_ms;
        self.schedule(fault_interval, Event::FaultRound);
        self.schedule(CHECK_INTERVAL_MS, Event::CheckInvariants);
        self.schedule(self.config.workload_ms, Event::EndWorkload);
        if self.config.outage_ms > 0 {
            let start = self.rng.between(300, 1_000).min(self.config.workload_ms);
            self.schedule(start, Event::OutageStart);
        }
        if let Some((at, _)) = self.disk_freeze_plan {
            self.schedule(at.min(self.config.workload_ms), Event::DiskFreeze);
        }
        if let Some(variation) = &self.membership_variation {
            self.trace_event(format_args!("membership changes: {variation:?}"));
            let (low, high) = variation.idle_ms;
            if let Some(planner) = self.membership.as_mut() {
                let first = planner.rng().between(low, high);
                self.schedule(first, Event::MembershipRound);
            }
        }

        let deadline = self.config.workload_ms + self.config.convergence_limit_ms;
        let mut converged = false;
        while let Some(Reverse(next)) = self.queue.pop() {
            if next.time_ms > deadline || self.events >= MAX_EVENTS {
                break;
            }
            self.now_ms = next.time_ms;
            self.events += 1;
            self.trace.add_u64(self.now_ms);
            self.handle(next.event);
            // Every node's whole-state invariants, after every event: a broken one panics,
            // which the run reports as a violation of this seed.
            for node in &self.nodes {
                if let Some(running) = &node.running {
                    running.node.core().check_invariants();
                }
            }
            if self.workload_over && self.has_converged() {
                converged = true;
                break;
            }
        }
        converged
    }

    fn schedule(&mut self, delay_ms: u64, event: Event) {
        let sequence = self.next_sequence;
        self.next_sequence += 1;
        self.queue.push(Reverse(Scheduled { time_ms: self.now_ms + delay_ms, sequence, event }));
    }

    fn node_position(&self, id: NodeId) -> usize {
        // Nodes are NodeId(1)..=NodeId(n), stored in order (membership changes add the next).
        (id.0 - 1) as usize
    }

    /// Every node the run has created (members or not), in id order.
    fn node_ids(&self) -> Vec<NodeId> {
        self.nodes.iter().map(|node| node.id).collect()
    }

    /// A node chosen at random, for a client's guess of the leader.
    fn random_node(&mut self) -> NodeId {
        self.nodes[self.rng.below(self.nodes.len() as u64) as usize].id
    }

    fn trace_event(&self, description: std::fmt::Arguments<'_>) {
        if self.config.trace {
            tracing::debug!(target: "raft_consensus::sim", "t={}ms {}", self.now_ms, description);
        }
    }

    fn handle(&mut self, event: Event) {
        match event {
            Event::Deliver(message) => self.deliver(message),
            Event::Tick(id) => self.tick(id),
            Event::ClientIssue(client) => self.client_issue(client),
            Event::ClientRequest { client, operation, node } => {
                self.client_request(client, operation, node);
            }
            Event::ClientAnswer { client, operation, answer } => {
                self.client_answer(client, operation, answer);
            }
            Event::ClientTimeout { client, operation } => self.client_timeout(client, operation),
            Event::FaultRound => self.fault_round(),
            Event::Restart(id) => {
                let node = &self.nodes[self.node_position(id)];
                if node.running.is_none() && !node.decommissioned {
                    self.trace.add_u64(0xA1);
                    self.trace_event(format_args!("{id} restarts"));
                    self.end_outage(id);
                    self.start_node(id);
                }
            }
            Event::Resume(id) => self.resume(id),
            Event::Heal => {
                self.trace.add_u64(0xA2);
                self.trace_event(format_args!("network healed"));
                self.network.heal();
            }
            Event::CheckInvariants => {
                self.check_log_matching();
                if !self.workload_over {
                    self.schedule(CHECK_INTERVAL_MS, Event::CheckInvariants);
                }
            }
            Event::EndWorkload => self.end_workload(),
            Event::OutageStart => self.outage_start(),
            Event::MembershipRound => self.membership_round(),
            Event::SnapshotWritten { id, incarnation } => {
                if let Some(Event::SnapshotWritten { id, incarnation }) =
                    self.accepts(id, Event::SnapshotWritten { id, incarnation })
                {
                    self.snapshot_written(id, incarnation);
                }
            }
            Event::SyncDone { id, incarnation } => {
                if let Some(Event::SyncDone { id, incarnation }) =
                    self.accepts(id, Event::SyncDone { id, incarnation })
                {
                    self.sync_done(id, incarnation);
                }
            }
            Event::DiskFreeze => self.freeze_leader_disk(),
        }
    }

    /// Node `id`'s oldest sync in flight completes (unless the node restarted since): its
    /// writes become durable, and the messages that waited for them go out.
    fn sync_done(&mut self, id: NodeId, incarnation: u64) {
        let position = self.node_position(id);
        let node = &mut self.nodes[position];
        if node.incarnation != incarnation {
            return;
        }
        if self.now_ms < node.disk_frozen_until_ms {
            // A frozen disk completes nothing until it thaws (the syncs stay in order).
            let thaw_in = node.disk_frozen_until_ms - self.now_ms;
            self.schedule(thaw_in, Event::SyncDone { id, incarnation });
            return;
        }
        let Some(running) = node.running.as_mut() else { return };
        let Some(sync) = running.syncs.pop_front() else { return };
        if let Err(error) = sync.complete() {
            self.trace_event(format_args!("{id} stops: {error}"));
            self.crash(id);
            return;
        }
        self.trace.add_u64(0xA6);
        self.after_input_with(id, |node, io| {
            node.sync_done(io);
            Ok(())
        });
    }

    /// Node `id` finished writing the snapshot it took (unless it restarted since).
    fn snapshot_written(&mut self, id: NodeId, incarnation: u64) {
        // Sometimes the node goes down while it writes the snapshot: its sync fails (the power
        // goes, or the process dies, between writing the temporary file and renaming it into
        // place), or just after the file is durable, before the node compacts its log.
        let interrupted = self.rng.chance(self.config.faults.snapshot_write_crash);
        let mid_write = interrupted && self.rng.chance(0.5);
        let position = self.node_position(id);
        let node = &mut self.nodes[position];
        if node.incarnation != incarnation {
            return;
        }
        let Some(running) = node.running.as_mut() else { return };
        let Some(snapshot) = running.snapshot_to_write.take() else { return };
        let index = snapshot.meta().last_included.index;
        let mut store = running.node.snapshot_store();
        if mid_write {
            node.disk.fail_next_sync();
        }
        let written = snapshot.write_into(&mut store);
        if interrupted {
            self.faults.snapshot_write_crashes += 1;
            self.trace.add_u64(0xA5);
            self.trace_event(format_args!(
                "{id} goes down {} its snapshot through index {index}",
                if mid_write { "while writing" } else { "just after writing" }
            ));
            self.crash(id);
            return;
        }
        let stored = written.is_ok();
        self.snapshots.stored += u64::from(stored);
        let result = running.node.snapshot_stored(written);
        self.trace.add_u64(0xA4);
        self.trace.add_u64(index.0);
        self.trace_event(format_args!(
            "{id} {} its snapshot through index {index}",
            if stored { "stored" } else { "failed to store" }
        ));
        if let Err(error) = result {
            self.trace_event(format_args!("{id} stops: {error}"));
            self.crash(id);
            return;
        }
        self.after_input(id);
    }

    /// Whether the node can take an event now; a paused node keeps it for later.
    fn accepts(&mut self, id: NodeId, event: Event) -> Option<Event> {
        let position = self.node_position(id);
        let node = &mut self.nodes[position];
        // A crashed node loses the event.
        node.running.as_ref()?;
        if node.paused_until.is_some() {
            node.deferred.push(event);
            return None;
        }
        Some(event)
    }

    fn deliver(&mut self, message: Message) {
        let Some(Event::Deliver(message)) = self.accepts(message.to, Event::Deliver(message))
        else {
            return;
        };
        if !self.network.connected(message.from, message.to) {
            self.faults.messages_dropped += 1;
            return;
        }
        self.trace.add_message(&message);
        let (from, to) = (message.from, message.to);
        let now_ms = self.now_ms;
        // A node removed by a committed configuration must never disrupt the cluster it
        // left (with pre-vote; without it, removed nodes are shut down): watch whether a
        // message carrying the term of an election it started after its removal (a vote
        // request, or any answer it gives in that term) deposes a leader. (Messages it sent
        // before, delivered late, may depose a stale leader, as any node's may.)
        let sender = &self.nodes[self.node_position(from)];
        let watch = self.config.pre_vote
            && sender.removed
            && sender.terms_stood_after_removal.contains(&message.term);
        let mut deposed = None;
        self.after_input_with(to, |node, _| {
            node.tick(now_ms);
            let leading = node.core().role() == Role::Leader;
            let term = node.core().term();
            let description = watch.then(|| describe_message(&message));
            node.step(message);
            if leading && node.core().role() != Role::Leader {
                deposed = description.map(|message| (term, message));
            }
            Ok(())
        });
        if let Some((term, message)) = deposed {
            self.checker.report(Violation::Membership {
                detail: format!(
                    "{from}, removed by a committed configuration, deposed {to}, the leader of term {term}, with {message}"
                ),
                at_ms: now_ms,
            });
        }
    }

    fn tick(&mut self, id: NodeId) {
        let position = self.node_position(id);
        if self.nodes[position].tick_scheduled_at == Some(self.now_ms) {
            self.nodes[position].tick_scheduled_at = None;
        }
        if self.nodes[position].paused_until.is_some() {
            return;
        }
        let now_ms = self.now_ms;
        self.after_input_with(id, |node, _| {
            node.tick(now_ms);
            Ok(())
        });
    }

    /// Freezes the disk of the node leading now (or, with no leader, tries again shortly):
    /// none of its syncs completes until the freeze ends.
    fn freeze_leader_disk(&mut self) {
        let Some((_, frozen_ms)) = self.disk_freeze_plan else { return };
        if self.workload_over || self.disk_freeze.is_some() {
            return;
        }
        let leader = self
            .nodes
            .iter()
            .filter(|node| node.paused_until.is_none())
            .filter_map(|node| {
                let core = node.running.as_ref()?.node.core();
                (core.role() == Role::Leader).then(|| (core.term(), node.id))
            })
            .max();
        let Some((term, id)) = leader else {
            self.schedule(DISK_FREEZE_RETRY_MS, Event::DiskFreeze);
            return;
        };
        let position = self.node_position(id);
        self.nodes[position].disk_frozen_until_ms = self.now_ms + frozen_ms;
        self.faults.disk_freezes += 1;
        self.disk_freeze = Some(DiskFreezeReport {
            node: id,
            term: term.0,
            frozen_at_ms: self.now_ms,
            frozen_ms,
            stepped_down_after_ms: None,
            new_leader_commit_after_ms: None,
        });
        self.trace.add_u64(0xA7);
        self.trace.add_u64(id.0);
        self.trace_event(format_args!(
            "the disk of {id}, leader of term {term}, freezes for {frozen_ms} ms"
        ));
    }

    /// While a leader's disk is frozen: notes when it steps down for it, and when a leader of
    /// a later term first commits an entry of its own term.
    fn observe_disk_freeze(
        &mut self,
        id: NodeId,
        term: Term,
        commits_own_term: bool,
        stepped_down_for_stall: bool,
    ) {
        let now_ms = self.now_ms;
        let Some(freeze) = self.disk_freeze.as_mut() else { return };
        if now_ms >= freeze.frozen_at_ms + freeze.frozen_ms {
            return;
        }
        let since_ms = now_ms - freeze.frozen_at_ms;
        if id == freeze.node && stepped_down_for_stall && freeze.stepped_down_after_ms.is_none() {
            freeze.stepped_down_after_ms = Some(since_ms);
        }
        if id != freeze.node
            && term.0 > freeze.term
            && commits_own_term
            && freeze.new_leader_commit_after_ms.is_none()
        {
            freeze.new_leader_commit_after_ms = Some(since_ms);
        }
    }

    /// Starts (or restarts) node `id` from its disk.
    fn start_node(&mut self, id: NodeId) {
        let position = self.node_position(id);
        let bug = self.config.planted_bug;
        // The real write-ahead log recovers from whatever the crash left. An injected I/O
        // error keeps the node down until a later attempt; any other refusal (corruption it
        // cannot explain) is reported as a violation of this run.
        let storage = match SimStorage::open(self.nodes[position].disk.clone(), id) {
            Ok(storage) => PlantedStorage::new(storage, bug),
            Err(StorageError::Io { .. }) => {
                self.trace_event(format_args!("{id} fails to open its log (I/O error); retrying"));
                let retry = self.config.faults.min_downtime_ms.max(1);
                self.schedule(retry, Event::Restart(id));
                return;
            }
            Err(error) => panic!("{id} cannot reopen its write-ahead log: {error}"),
        };
        let state_machine = PlantedMachine::new(self.workload.new_machine(), bug);
        // The simulated disk holds exactly what the node wrote, so a refusal here is a bug
        // in the node or the disk model: the run reports it as a violation (a caught panic).
        // A node that joined a running cluster starts with no members and learns its
        // configuration from the leader (and, once it has one, from its disk).
        let members = if self.nodes[position].joined { Vec::new() } else { self.members.clone() };
        let mut node = Node::start(
            id,
            members,
            self.raft_config.clone(),
            storage,
            state_machine,
            self.rng.next_u64(),
        )
        .unwrap_or_else(|error| panic!("{id} cannot restart from its disk: {error}"));
        match bug {
            Some(PlantedBug::CommitPreviousTermByCounting) => {
                node.core_mut().planted_commit_previous_term = true;
            }
            Some(PlantedBug::ChangeWithoutJointPhase) => {
                node.core_mut().planted_change_without_joint = true;
            }
            Some(PlantedBug::LearnersCountForCommit) => {
                node.core_mut().planted_learners_count_for_commit = true;
            }
            Some(PlantedBug::ReadWithoutRound) => {
                node.core_mut().planted_read_without_round = true;
            }
            Some(PlantedBug::SpliceSnapshotTransfers) => {
                node.core_mut().planted_splice_snapshot_transfers = true;
            }
            _ => {}
        }
        node.tick(self.now_ms);
        let node_state = &mut self.nodes[position];
        node_state.incarnation += 1;
        node_state.running = Some(RunningNode {
            node,
            last_applied: LogIndex(0),
            snapshots_installed: 0,
            snapshot_to_write: None,
            syncs: VecDeque::new(),
            elections_seen: 0,
            leading_seen: false,
            stall_step_downs_seen: 0,
        });
        node_state.paused_until = None;
        node_state.deferred.clear();
        node_state.tick_scheduled_at = None;
        self.after_input(id);
    }

    /// Crashes node `id`: its memory is gone, and so are some of its unsynced writes.
    fn crash(&mut self, id: NodeId) {
        self.crash_for(id, None);
    }

    /// Crashes node `id` and restarts it after `downtime_ms`, or after a random downtime.
    fn crash_for(&mut self, id: NodeId, downtime_ms: Option<u64>) {
        let position = self.node_position(id);
        let node = &mut self.nodes[position];
        if node.running.take().is_none() {
            return;
        }
        node.paused_until = None;
        node.deferred.clear();
        node.tick_scheduled_at = None;
        // The syncs in flight die with the process.
        node.disk_busy_until_ms = 0;
        // A process crash leaves the operating system's page cache (unsynced bytes stay
        // readable, and may still be lost by a later power loss); a power loss does not.
        let power_loss = !self.rng.chance(self.config.faults.process_crash);
        let damage = if power_loss {
            node.disk.crash(&mut self.rng, self.config.faults.torn_write)
        } else {
            self.faults.process_crashes += 1;
            CrashDamage::default()
        };
        self.faults.crashes += 1;
        self.faults.lost_unsynced_bytes += damage.lost_bytes as u64;
        self.faults.torn_writes += u64::from(damage.torn);
        self.trace.add_u64(0xA3);
        self.trace.add_u64(id.0);
        self.trace_event(format_args!(
            "{id} crashes ({}; {} unsynced bytes lost, torn: {})",
            if power_loss { "power loss" } else { "process crash, page cache kept" },
            damage.lost_bytes,
            damage.torn
        ));
        // Once the workload is over, faults are healed: a node that stops then (a sync failure
        // injected earlier) comes back at once.
        let downtime = if self.workload_over {
            0
        } else if let Some(downtime_ms) = downtime_ms {
            downtime_ms
        } else {
            let faults = &self.config.faults;
            self.rng
                .between(faults.min_downtime_ms, faults.max_downtime_ms.max(faults.min_downtime_ms))
        };
        self.schedule(downtime, Event::Restart(id));
    }

    /// Carries out the node's pending work after an input, then routes what it produced.
    fn after_input(&mut self, id: NodeId) {
        self.after_input_with(id, |_, _| Ok(()));
    }

    /// Feeds node `id` an input (`input`, which may already hand out work through the I/O),
    /// carries out the work it produced, takes a snapshot if one is due, and routes it all:
    /// messages to the network, syncs and snapshot writes to later events, answers to clients.
    fn after_input_with(
        &mut self,
        id: NodeId,
        input: impl FnOnce(&mut SimRaftNode<W::Machine>, &mut SimIo<'_>) -> Result<(), StorageError>,
    ) {
        let position = self.node_position(id);
        let now_ms = self.now_ms;
        let incarnation_now = self.nodes[position].incarnation;
        let Some(running) = self.nodes[position].running.as_mut() else { return };
        let mut io = SimIo {
            now_ms,
            id,
            checker: &mut self.checker,
            last_applied: &mut running.last_applied,
            syncs: &mut running.syncs,
            started_syncs: 0,
            outbox: Vec::new(),
            answers: Vec::new(),
            reads: Vec::new(),
        };
        let node = &mut running.node;
        let mut result = input(node, &mut io).and_then(|()| node.process(&mut io));
        let mut snapshot_taken = None;
        if result.is_ok() && running.snapshot_to_write.is_none() {
            match node.take_snapshot(&mut io) {
                Ok(taken) => snapshot_taken = taken,
                Err(error) => result = Err(error),
            }
        }
        let SimIo { started_syncs, outbox, answers, reads, .. } = io;
        // Reads that may be served are served now, from the state machine as it is.
        let mut read_answers = Vec::new();
        for (read, outcome) in reads {
            let Some((client, operation)) = self.pending_reads.remove(&(id, incarnation_now, read))
            else {
                continue;
            };
            let answer = match outcome {
                Ok(_) => match node.state_machine().query(&self.history[operation].command) {
                    Ok(result) => ClientAnswer::Read { result },
                    Err(_) => ClientAnswer::Unknown,
                },
                Err(ReadError::NotLeader { leader_hint }) => ClientAnswer::NotLeader(leader_hint),
                // Nothing was read: the read failed, and had no effect.
                Err(_) => ClientAnswer::NotLeader(None),
            };
            read_answers.push((client, operation, answer));
        }
        let installed = node.snapshots_installed() - running.snapshots_installed;
        running.snapshots_installed = node.snapshots_installed();
        let core = node.core();
        let (role, term, commit_index) = (core.role(), core.term(), core.commit_index());
        // A leader's own-term entry committed: its leadership commits.
        let commits_own_term = role == Role::Leader
            && core.entry(commit_index).is_some_and(|entry| entry.term == term);
        let stall_step_downs = core.disk_stall_step_downs();
        let stepped_down_for_stall = stall_step_downs > running.stall_step_downs_seen;
        self.stall_step_downs += stall_step_downs.saturating_sub(running.stall_step_downs_seen);
        running.stall_step_downs_seen = stall_step_downs;
        let deadline = node.next_deadline_ms();
        let incarnation = self.nodes[position].incarnation;
        for _ in 0..started_syncs {
            // The disk runs syncs one after another, each taking this seed's latency (now and
            // then a long stall); whichever event comes first completes the oldest sync, so
            // they complete in order.
            let latency = self.variation.sync_latency_ms(&mut self.rng);
            let node = &mut self.nodes[position];
            let done_at =
                node.disk_busy_until_ms.max(now_ms).max(node.disk_frozen_until_ms) + latency;
            node.disk_busy_until_ms = done_at;
            self.schedule(done_at - now_ms, Event::SyncDone { id, incarnation });
        }
        self.snapshots.installed += installed;
        if let Some(outage) = self.outage_report.as_mut().filter(|outage| outage.node == id) {
            outage.snapshots_installed += installed;
        }
        if let Some(snapshot) = snapshot_taken {
            if let Some(running) = self.nodes[position].running.as_mut() {
                running.snapshot_to_write = Some(snapshot);
            }
            let delay = self.rng.between(1, 40);
            self.schedule(delay, Event::SnapshotWritten { id, incarnation });
        }
        if role == Role::Leader {
            self.checker.on_leader(term, id, now_ms);
        }
        self.max_commit_index = self.max_commit_index.max(commit_index);
        self.observe_disk_freeze(id, term, commits_own_term, stepped_down_for_stall);

        for message in outbox {
            self.send(message);
        }
        for ((client, operation), result) in answers {
            let answer = match result {
                Ok(result) => match self.history[operation].appended_at {
                    Some((index, term)) => ClientAnswer::Applied { result, index, term },
                    None => ClientAnswer::Unknown,
                },
                Err(ProposeError::NotLeader { leader_hint }) => {
                    ClientAnswer::NotLeader(leader_hint)
                }
                Err(_) => ClientAnswer::Unknown,
            };
            self.answer_client(client, operation, answer);
        }
        for (client, operation, answer) in read_answers {
            self.answer_client(client, operation, answer);
        }
        match result {
            Ok(()) => {
                let node = &mut self.nodes[position];
                if node.tick_scheduled_at.is_none_or(|scheduled| deadline < scheduled) {
                    let at = deadline.max(now_ms);
                    node.tick_scheduled_at = Some(at);
                    self.schedule(at - now_ms, Event::Tick(id));
                }
            }
            Err(error) => {
                self.trace_event(format_args!("{id} stops: {error}"));
                self.crash(id);
            }
        }
        if self.membership.is_some() {
            self.observe_membership(id);
        }
    }

    fn send(&mut self, message: Message) {
        match self.network.fate(&self.config.faults, &mut self.rng) {
            MessageFate::Dropped => self.faults.messages_dropped += 1,
            MessageFate::Delivered(delays) => {
                if delays.len() > 1 {
                    self.faults.messages_duplicated += 1;
                }
                for delay in &delays {
                    if *delay > self.config.faults.max_delay_ms {
                        self.faults.messages_reordered += 1;
                    }
                }
                // A link with a bandwidth sends one message after another: this one leaves
                // once the link has sent what it was given before.
                let size = message_size(&message);
                let departure_ms = self.links.transmit(message.from, message.to, size, self.now_ms);
                let queued_ms = departure_ms - self.now_ms;
                let delays: Vec<u64> = delays.into_iter().map(|delay| delay + queued_ms).collect();
                let last = delays.len() - 1;
                let mut message = Some(message);
                for (position, delay) in delays.into_iter().enumerate() {
                    let copy = if position == last { message.take() } else { message.clone() };
                    if let Some(copy) = copy {
                        self.schedule(delay, Event::Deliver(copy));
                    }
                }
            }
        }
    }

    fn answer_client(&mut self, client: usize, operation: usize, answer: ClientAnswer) {
        if self.rng.chance(self.config.faults.client_response_loss) {
            self.faults.client_responses_lost += 1;
            return;
        }
        let delay = self.rng.between(CLIENT_DELAY_MS.0, CLIENT_DELAY_MS.1);
        self.schedule(delay, Event::ClientAnswer { client, operation, answer });
    }

    fn client_issue(&mut self, client: usize) {
        if self.workload_over || self.clients[client].outstanding.is_some() {
            return;
        }
        let (command, input) = self.workload.next_operation(client, &mut self.rng);
        let id = self.history.len();
        self.trace.add_u64(0xB1);
        self.trace.add_bytes(&command);
        let mut node = self.clients[client].leader_guess;
        // A read is proposed like a write a third of the time; otherwise it is served without
        // a log entry (by lease when the seed runs with leases, half of those times), on the
        // node the client believes leads or, half the time, on any node (a follower read).
        let read = if self.workload.is_read(&input) && !self.reads_rng.chance(1.0 / 3.0) {
            if self.reads_rng.chance(0.5) {
                let members = self.node_ids();
                node = members[self.reads_rng.below(members.len() as u64) as usize];
            }
            let lease = self.raft_config.lease_reads && self.reads_rng.chance(0.5);
            Some(if lease { ReadPolicy::Lease } else { ReadPolicy::ReadIndex })
        } else {
            None
        };
        self.trace.add_u64(match read {
            None => 0,
            Some(ReadPolicy::ReadIndex) => 1,
            Some(ReadPolicy::Lease) => 2,
        });
        self.trace_event(format_args!("client {client} invokes {input:?} on {node}"));
        self.history.push(OperationRecord {
            client,
            input,
            command: command.into(),
            call_ms: self.now_ms,
            return_ms: u64::MAX,
            outcome: RecordedOutcome::Pending,
            appended_at: None,
            read,
        });
        self.clients[client].outstanding = Some(id);
        let delay = self.rng.between(CLIENT_DELAY_MS.0, CLIENT_DELAY_MS.1);
        self.schedule(delay, Event::ClientRequest { client, operation: id, node });
        let timeout = self.config.client_timeout_ms;
        self.schedule(timeout, Event::ClientTimeout { client, operation: id });
    }

    fn client_request(&mut self, client: usize, operation: usize, node: NodeId) {
        let Some(Event::ClientRequest { .. }) =
            self.accepts(node, Event::ClientRequest { client, operation, node })
        else {
            return;
        };
        let command = self.history[operation].command.clone();
        let position = self.node_position(node);
        let incarnation = self.nodes[position].incarnation;
        let Some(running) = self.nodes[position].running.as_mut() else { return };
        if let Some(policy) = self.history[operation].read {
            // The node reads its clock first, as a real node's pump does: a lease is judged
            // by the time now, not the time of the node's last event.
            running.node.tick(self.now_ms);
            match running.node.read(policy) {
                Ok(read) => {
                    self.pending_reads.insert((node, incarnation, read), (client, operation));
                    self.after_input(node);
                }
                Err(ReadError::NotLeader { leader_hint }) => {
                    self.answer_client(client, operation, ClientAnswer::NotLeader(leader_hint));
                }
                Err(_) => self.answer_client(client, operation, ClientAnswer::NotLeader(None)),
            }
            return;
        }
        match running.node.propose(command, (client, operation)) {
            Ok(index) => {
                let term = running.node.core().term();
                self.history[operation].appended_at = Some((index, term));
                self.after_input(node);
            }
            Err((ProposeError::NotLeader { leader_hint }, _)) => {
                self.answer_client(client, operation, ClientAnswer::NotLeader(leader_hint));
            }
            Err((ProposeError::LeadershipTransfer { target }, _)) => {
                // Refused, never appended: the client tries the transfer's target.
                self.answer_client(client, operation, ClientAnswer::NotLeader(Some(target)));
            }
            Err(_) => self.answer_client(client, operation, ClientAnswer::Unknown),
        }
    }

    fn client_answer(&mut self, client: usize, operation: usize, answer: ClientAnswer) {
        if self.clients[client].outstanding != Some(operation) {
            return;
        }
        self.history[operation].return_ms = self.now_ms;
        let (outcome, guess) = match answer {
            ClientAnswer::Applied { result, index, term } => {
                let record = &self.history[operation];
                let outcome = match self.workload.output(client, &record.input, &result) {
                    Some(output) => RecordedOutcome::Ok { output, index, term },
                    None => RecordedOutcome::Unknown,
                };
                (outcome, None)
            }
            ClientAnswer::Read { result } => {
                let record = &self.history[operation];
                let outcome = match self.workload.output(client, &record.input, &result) {
                    Some(output) => RecordedOutcome::Read { output },
                    None => RecordedOutcome::Unknown,
                };
                (outcome, None)
            }
            ClientAnswer::NotLeader(hint) => {
                // Drawn even when there is a hint (as it always was: seeds replay as before).
                let random = self.random_node();
                (RecordedOutcome::Failed, Some(hint.unwrap_or(random)))
            }
            ClientAnswer::Unknown => (RecordedOutcome::Unknown, Some(self.random_node())),
        };
        self.history[operation].outcome = outcome;
        if let Some(guess) = guess {
            self.clients[client].leader_guess = guess;
        }
        self.trace.add_u64(0xB2);
        self.trace.add_u64(operation as u64);
        self.trace_event(format_args!(
            "client {client} gets {:?}",
            self.history[operation].outcome
        ));
        self.clients[client].outstanding = None;
        let think = self.rng.between(CLIENT_THINK_MS.0, CLIENT_THINK_MS.1);
        self.schedule(think, Event::ClientIssue(client));
    }

    fn client_timeout(&mut self, client: usize, operation: usize) {
        if self.clients[client].outstanding != Some(operation) {
            return;
        }
        self.history[operation].outcome = RecordedOutcome::Unknown;
        self.trace.add_u64(0xB3);
        self.trace_event(format_args!("client {client} times out"));
        let guess = self.random_node();
        let state = &mut self.clients[client];
        state.outstanding = None;
        state.leader_guess = guess;
        self.schedule(0, Event::ClientIssue(client));
    }

    fn running_nodes(&self) -> Vec<NodeId> {
        self.nodes.iter().filter(|node| node.running.is_some()).map(|node| node.id).collect()
    }

    fn fault_round(&mut self) {
        if self.workload_over {
            return;
        }
        let faults = self.config.faults.clone();
        if !self.network.is_partitioned() && self.rng.chance(faults.partition) {
            let kind = [PartitionKind::Symmetric, PartitionKind::OneWay, PartitionKind::Bridge]
                [self.rng.below(3) as usize];
            let nodes = self.node_ids();
            let kind = if kind == PartitionKind::Bridge && nodes.len() < 3 {
                PartitionKind::Symmetric
            } else {
                kind
            };
            if let Some((side_a, side_b)) = self.learner_side_partition() {
                // The leader and its learners on one side, the other voters on the other.
                let one_way = kind == PartitionKind::OneWay;
                self.network.split(&side_a, &side_b, one_way);
                self.trace_event(format_args!("partition of {side_a:?} from {side_b:?}"));
            } else {
                self.network.partition(&nodes, kind, &mut self.rng);
            }
            self.faults.partitions += 1;
            self.trace.add_u64(0xC1);
            self.trace_event(format_args!("partition ({kind:?})"));
            let duration = self.rng.between(100, faults.max_partition_ms.max(100));
            self.schedule(duration, Event::Heal);
        }
        if self.rng.chance(faults.crash) {
            let mut candidates = self.running_nodes();
            if self.rng.chance(self.variation.aimed_crash_chance) {
                // Aim at the nodes with writes in flight: their crash loses or tears them.
                let syncing: Vec<NodeId> = self
                    .nodes
                    .iter()
                    .filter(|node| node.running.as_ref().is_some_and(|r| !r.syncs.is_empty()))
                    .map(|node| node.id)
                    .collect();
                if !syncing.is_empty() {
                    candidates = syncing;
                }
            }
            if let Some(victim) = self.rng.pick(&candidates) {
                self.crash(victim);
            }
        }
        if self.rng.chance(faults.sync_failure) {
            let running = self.running_nodes();
            if let Some(victim) = self.rng.pick(&running) {
                self.faults.sync_failures += 1;
                self.nodes[self.node_position(victim)].disk.fail_next_sync();
            }
        }
        if self.rng.chance(faults.pause) {
            let candidates: Vec<NodeId> = self
                .nodes
                .iter()
                .filter(|node| node.running.is_some() && node.paused_until.is_none())
                .map(|node| node.id)
                .collect();
            if let Some(victim) = self.rng.pick(&candidates) {
                let duration = self.rng.between(50, faults.max_pause_ms.max(50));
                let position = self.node_position(victim);
                self.nodes[position].paused_until = Some(self.now_ms + duration);
                self.faults.pauses += 1;
                self.trace.add_u64(0xC2);
                self.trace_event(format_args!("{victim} pauses for {duration} ms"));
                self.schedule(duration, Event::Resume(victim));
            }
        }
        self.schedule(faults.fault_interval_ms, Event::FaultRound);
    }

    /// The long outage begins: a running follower goes down (a power loss) for
    /// [`SimConfig::outage_ms`] while the others go on.
    fn outage_start(&mut self) {
        let followers: Vec<NodeId> = self
            .nodes
            .iter()
            .filter(|node| {
                node.running
                    .as_ref()
                    .is_some_and(|running| running.node.core().role() != Role::Leader)
            })
            .map(|node| node.id)
            .collect();
        let Some(victim) = self.rng.pick(&followers) else {
            // Nobody to take down now (an election, or nodes down): try again shortly.
            self.schedule(50, Event::OutageStart);
            return;
        };
        let position = self.node_position(victim);
        let last_index = self.nodes[position]
            .running
            .as_ref()
            .map_or(LogIndex(0), |running| running.node.core().last_log_id().index);
        self.outage = Some((victim, last_index, self.now_ms));
        self.trace.add_u64(0xC3);
        self.trace_event(format_args!(
            "{victim} goes down for {} ms (long outage) at log index {last_index}",
            self.config.outage_ms
        ));
        self.crash_for(victim, Some(self.config.outage_ms));
    }

    /// Node `id` comes back: if the long outage took it down, record how far behind it is.
    fn end_outage(&mut self, id: NodeId) {
        if let Some((node, last_index, start_ms)) = self.outage
            && node == id
        {
            self.outage = None;
            self.outage_report = Some(OutageReport {
                node,
                down_ms: self.now_ms - start_ms,
                entries_behind: self.max_commit_index.0.saturating_sub(last_index.0),
                snapshots_installed: 0,
            });
        }
    }

    fn resume(&mut self, id: NodeId) {
        let position = self.node_position(id);
        let node = &mut self.nodes[position];
        if node.paused_until.is_none() {
            return;
        }
        node.paused_until = None;
        let deferred = std::mem::take(&mut node.deferred);
        self.trace_event(format_args!("{id} resumes with {} deferred events", deferred.len()));
        self.tick(id);
        for event in deferred {
            self.handle(event);
        }
    }

    fn end_workload(&mut self) {
        self.workload_over = true;
        self.trace_event(format_args!("workload over: healing every fault"));
        self.network.heal();
        if let Some(planner) = self.membership.as_mut() {
            planner.stop();
        }
        for id in self.node_ids() {
            let position = self.node_position(id);
            if self.nodes[position].decommissioned {
                continue;
            }
            if self.nodes[position].running.is_none() {
                self.end_outage(id);
                self.start_node(id);
            } else if self.nodes[position].paused_until.is_some() {
                self.resume(id);
            }
        }
    }

    fn check_log_matching(&mut self) {
        let cores: Vec<&RaftCore> = self
            .nodes
            .iter()
            .filter_map(|node| node.running.as_ref().map(|running| running.node.core()))
            .collect();
        self.checker.check_log_matching(&cores, self.now_ms);
    }

    /// The running, unpaused node that leads the highest term, if any.
    fn current_leader(&self) -> Option<&RaftCore> {
        self.nodes
            .iter()
            .filter(|node| node.paused_until.is_none())
            .filter_map(|node| node.running.as_ref().map(|running| running.node.core()))
            .filter(|core| core.role() == Role::Leader)
            .max_by_key(|core| core.term())
    }

    /// Every member of the leader's configuration (and the leader) up, following the leader
    /// in its term, every entry committed and applied on each, and no client waiting. Nodes
    /// outside the leader's configuration (removed, or started and never added) do not
    /// count.
    fn has_converged(&self) -> bool {
        if self.clients.iter().any(|client| client.outstanding.is_some()) {
            return false;
        }
        let Some(leader) = self.current_leader() else {
            return false;
        };
        let target = leader.last_log_id();
        if leader.commit_index() != target.index {
            return false;
        }
        let configuration = leader.configuration();
        let mut members = configuration.members().iter().copied();
        std::iter::once(leader.id()).chain(&mut members).all(|id| {
            let node = &self.nodes[self.node_position(id)];
            let Some(running) = &node.running else { return false };
            let core = running.node.core();
            node.paused_until.is_none()
                && core.term() == leader.term()
                && core.leader_id() == Some(leader.id())
                && core.last_log_id() == target
                && core.applied_index() == target.index
        })
    }

    /// The members of the leader's configuration and the leader (after convergence: the
    /// nodes that must hold every acknowledged write).
    fn final_members(&self) -> Vec<NodeId> {
        let Some(leader) = self.current_leader() else { return self.node_ids() };
        let mut members = leader.configuration().members().to_vec();
        if !members.contains(&leader.id()) {
            members.push(leader.id());
        }
        members.sort_unstable();
        members
    }

    fn finish(mut self, converged: bool) -> SimReport {
        self.check_log_matching();
        if converged {
            self.check_durability();
        } else {
            let detail = self.describe_cluster();
            self.checker.report(Violation::NoConvergence { detail });
        }
        self.linearizability_inconclusive = !self.check_linearizability();
        self.report()
    }

    fn report(self) -> SimReport {
        let mut operations = OperationCounts::default();
        for record in &self.history {
            match record.outcome {
                RecordedOutcome::Ok { .. } | RecordedOutcome::Read { .. } => operations.ok += 1,
                RecordedOutcome::Failed => operations.failed += 1,
                RecordedOutcome::Unknown | RecordedOutcome::Pending => operations.unknown += 1,
            }
        }
        self.trace_event(format_args!(
            "run over after {} events; violations: {}",
            self.events,
            self.checker.violations().len()
        ));
        SimReport {
            seed: self.seed,
            node_count: self.members.len(),
            trace_hash: self.trace.value(),
            events: self.events,
            virtual_ms: self.now_ms,
            operations,
            faults: self.faults,
            snapshots: self.snapshots,
            outage: self.outage_report,
            membership: self.membership.as_ref().map(|planner| planner.counts),
            disk_freeze: self.disk_freeze,
            stall_step_downs: self.stall_step_downs,
            commit_index: self.max_commit_index.0,
            linearizability_inconclusive: self.linearizability_inconclusive,
            violations: self.checker.into_violations(),
        }
    }

    /// Durability: every acknowledged operation is in every member's log, at its index and
    /// term, or committed and compacted into the member's snapshot. And every member's state
    /// machine is the same (they applied, or restored from snapshots, the same commands).
    /// Nodes outside the final configuration (removed ones that keep running) are not held to
    /// it.
    fn check_durability(&mut self) {
        let members = self.final_members();
        let is_member = |node: &&SimNode<W::Machine>| members.contains(&node.id);
        let mut stores = self.nodes.iter().filter(is_member).filter_map(|node| {
            Some((node.id, node.running.as_ref()?.node.state_machine().inner()))
        });
        if let Some((first_id, first_store)) = stores.next() {
            for (id, store) in stores {
                if store != first_store {
                    self.checker.report(Violation::StateMachineSafety {
                        node: id,
                        index: 0,
                        detail: format!(
                            "after convergence its state differs from {first_id}'s: {store:?} against {first_store:?}"
                        ),
                        at_ms: self.now_ms,
                    });
                }
            }
        }
        let acknowledged: Vec<(LogIndex, Term)> = self
            .history
            .iter()
            .filter_map(|record| match record.outcome {
                RecordedOutcome::Ok { index, term, .. } => Some((index, term)),
                _ => None,
            })
            .collect();
        for node in self.nodes.iter().filter(is_member) {
            let Some(running) = &node.running else { continue };
            let core = running.node.core();
            for (index, term) in &acknowledged {
                let compacted = *index < core.first_log_index() && *index <= core.commit_index();
                if !compacted && core.entry(*index).map(|entry| entry.term) != Some(*term) {
                    self.checker.report(Violation::AcknowledgedWriteLost {
                        node: node.id,
                        index: index.0,
                        term: term.0,
                    });
                }
            }
        }
    }

    fn describe_cluster(&self) -> String {
        let mut parts = Vec::new();
        for node in &self.nodes {
            match &node.running {
                None => parts.push(format!("{} down", node.id)),
                Some(running) => {
                    let core = running.node.core();
                    parts.push(format!(
                        "{} {} term {} leader {:?} last {} commit {} applied {}",
                        node.id,
                        core.role(),
                        core.term(),
                        core.leader_id(),
                        core.last_log_id(),
                        core.commit_index(),
                        core.applied_index()
                    ));
                }
            }
        }
        let waiting = self.clients.iter().filter(|client| client.outstanding.is_some()).count();
        format!("after {} ms: {}; {waiting} clients waiting", self.now_ms, parts.join("; "))
    }

    /// Linearizability of the client history, per key, within a search budget.
    fn check_linearizability(&mut self) -> bool {
        let operations: Vec<Operation<InputOf<W>, OutputOf<W>>> =
            self.history.iter().map(OperationRecord::to_checked_operation).collect();
        match check_with_limit(&self.workload.model(), &operations, LINEARIZABILITY_BUDGET) {
            Ok(CheckResult::Linearizable) => true,
            Ok(CheckResult::GaveUp { .. }) => false,
            Ok(CheckResult::NotLinearizable { operations: culprits, .. }) => {
                let described: Vec<String> =
                    culprits.iter().map(|position| self.history[*position].describe()).collect();
                self.checker
                    .report(Violation::NotLinearizable { operations: described.join("\n") });
                true
            }
            Err(error) => {
                self.checker.report(Violation::NotLinearizable {
                    operations: format!("the simulator recorded a malformed history: {error}"),
                });
                true
            }
        }
    }
}

/// Membership changes (membership seeds only): the planner's rounds, carried out at the
/// leader, and what the world watches of them.
impl<W: Workload> World<W> {
    /// One round of the membership planner: start the nodes a plan needs, then make at most
    /// one membership call at the leader; schedule the next round.
    fn membership_round(&mut self) {
        if self.workload_over {
            return;
        }
        let Some(view) = self.current_leader().map(|core| LeaderView {
            leader: core.id(),
            configuration: core.configuration().clone(),
            busy: core.membership_change_in_progress()
                || core.leadership_transfer_target().is_some(),
            last_index: core.last_log_id().index,
            configuration_index: core.configuration_index(),
            match_indexes: core.follower_match_indexes(),
        }) else {
            self.schedule_membership_round();
            return;
        };
        let spare: Vec<NodeId> = self
            .nodes
            .iter()
            .filter(|node| {
                !node.decommissioned
                    && !view.configuration.is_member(node.id)
                    && (!node.ever_member || node.removed)
            })
            .map(|node| node.id)
            .collect();
        let now_ms = self.now_ms;
        if self.config.trace
            && let Some(plan) = self.membership.as_ref().and_then(MembershipPlanner::describe_plan)
        {
            self.trace_event(format_args!("membership plan under way: {plan}"));
        }
        loop {
            let Some(planner) = self.membership.as_mut() else { return };
            match planner.next_action(now_ms, Some(&view), &spare, true) {
                Action::Wait => break,
                Action::StartNode(id) => self.create_node(id),
                action => {
                    self.carry_out(view.leader, action);
                    break;
                }
            }
        }
        self.schedule_membership_round();
    }

    fn schedule_membership_round(&mut self) {
        let Some(planner) = self.membership.as_mut() else { return };
        let (low, high) = if planner.busy() {
            MEMBERSHIP_POLL_MS
        } else {
            self.membership_variation.as_ref().map_or(MEMBERSHIP_POLL_MS, |v| v.idle_ms)
        };
        let delay = planner.rng().between(low, high);
        self.schedule(delay, Event::MembershipRound);
    }

    /// Now and then on a membership seed whose leader has learners: the leader and its
    /// learners as one side of a partition, the other voters as the other. A leader must not
    /// commit there (a majority of the voters is on the other side), whatever its learners
    /// hold.
    fn learner_side_partition(&mut self) -> Option<(Vec<NodeId>, Vec<NodeId>)> {
        let chance = match self.membership_variation.as_ref()?.aim {
            Aim::ManyLearners => 0.6,
            Aim::Balanced | Aim::Replacements => 0.2,
        };
        let leader = self.current_leader()?;
        let configuration = leader.configuration();
        if configuration.learners().is_empty() {
            return None;
        }
        let mut side_a: Vec<NodeId> = configuration.learners().iter().copied().collect();
        side_a.push(leader.id());
        let side_b: Vec<NodeId> =
            self.node_ids().into_iter().filter(|id| !side_a.contains(id)).collect();
        let planner = self.membership.as_mut()?;
        planner.rng().chance(chance).then_some((side_a, side_b))
    }

    /// Creates node `id` (the next id) on an empty disk and starts it with no members: it
    /// waits for the leader to add it.
    fn create_node(&mut self, id: NodeId) {
        debug_assert_eq!(id.0, self.nodes.len() as u64 + 1, "nodes are created in id order");
        debug_assert!(id.0 <= MAX_SIM_NODES);
        if id.0 != self.nodes.len() as u64 + 1 {
            return;
        }
        self.nodes.push(SimNode::new(id, true));
        self.trace.add_u64(0xD1);
        self.trace.add_u64(id.0);
        self.trace_event(format_args!("{id} starts on an empty disk to join the cluster"));
        self.start_node(id);
    }

    /// Makes the membership call `action` at `leader`, and records how it went.
    fn carry_out(&mut self, leader: NodeId, action: Action) {
        let mut outcome: Option<Result<LogIndex, MembershipError>> = None;
        let call = action.clone();
        self.after_input_with(leader, |node, _| {
            outcome = Some(match call {
                Action::AddLearner(id) | Action::ConcurrentChange(id) => {
                    node.add_learner(id, sim_address(id))
                }
                Action::ChangeVoters(voters) => node.change_voters(voters),
                Action::RemoveMember(id) => node.remove_member(id),
                Action::Transfer(target) => node.transfer_leadership(target).map(|()| LogIndex(0)),
                Action::Wait | Action::StartNode(_) => return Ok(()),
            });
            Ok(())
        });
        let Some(outcome) = outcome else { return };
        self.trace.add_u64(0xD2);
        self.trace.add_u64(leader.0);
        self.trace.add_u64(match &outcome {
            Ok(index) => index.0,
            Err(_) => u64::MAX,
        });
        self.trace_event(format_args!("{leader} is asked {action:?}: {outcome:?}"));
        let Some(planner) = self.membership.as_mut() else { return };
        let counts = &mut planner.counts;
        match (&action, outcome) {
            (Action::ConcurrentChange(id), Ok(index)) => {
                self.checker.report(Violation::Membership {
                    detail: format!(
                        "{leader} accepted a change (learner {id} at index {index}) while another was under way"
                    ),
                    at_ms: self.now_ms,
                });
            }
            (_, Ok(index)) => match action {
                Action::AddLearner(id) => {
                    counts.learners_added += 1;
                    let position = self.node_position(id);
                    let node = &mut self.nodes[position];
                    node.ever_member = true;
                    node.added_at = index;
                    node.removed = false;
                    node.terms_stood_after_removal.clear();
                }
                Action::ChangeVoters(_) => counts.voter_changes += 1,
                Action::RemoveMember(_) => counts.removals += 1,
                Action::Transfer(_) => counts.transfers += 1,
                _ => {}
            },
            (_, Err(MembershipError::ChangeInProgress)) => counts.refused_in_progress += 1,
            (_, Err(MembershipError::NotCaughtUp { .. })) => counts.refused_not_caught_up += 1,
            (_, Err(MembershipError::Invalid { .. })) => counts.refused_invalid += 1,
            (_, Err(_)) => {}
        }
    }

    /// After an input to node `id`: notes a newly committed configuration (the nodes it
    /// leaves out are removed from then on; without pre-vote they are shut down for good),
    /// and checks that a removed node never stands for election nor leads.
    fn observe_membership(&mut self, id: NodeId) {
        let position = self.node_position(id);
        let Some(running) = self.nodes[position].running.as_ref() else { return };
        let core = running.node.core();
        let index = core.configuration_index();
        let newly_committed = index > self.committed_configuration_index
            && index <= core.commit_index()
            && !core.configuration().is_joint()
            && !core.configuration().is_unknown();
        let (role, term, elections) = (core.role(), core.term(), core.elections_started());
        let mut removed_now = Vec::new();
        if newly_committed {
            let configuration = core.configuration().clone();
            self.committed_configuration_index = index;
            // The configuration committed in a term no higher than any a running node has
            // reached or a leader has had.
            let highest_term = self
                .nodes
                .iter()
                .filter_map(|node| node.running.as_ref().map(|running| running.node.core().term()))
                .chain(self.checker.leaders().map(|(term, _)| term))
                .max()
                .unwrap_or(term);
            for node in &mut self.nodes {
                if node.ever_member
                    && !node.removed
                    && node.added_at < index
                    && !configuration.is_member(node.id)
                {
                    node.removed = true;
                    node.removed_at_term = highest_term;
                    removed_now.push(node.id);
                }
            }
            self.trace_event(format_args!(
                "configuration {configuration} committed at {index}; removed now: {removed_now:?}"
            ));
        }
        let node = &mut self.nodes[position];
        if let Some(running) = node.running.as_mut() {
            // A node removed while it led (a pause, a partition) may still think it leads:
            // only a new leadership counts. (A removed node may still start an election: a
            // stale pre-vote grant, delivered late, can complete a pre-vote round. Harmless as
            // long as it neither leads nor deposes a leader, which `deliver` watches.)
            let stood = elections > running.elections_seen;
            let took_office = role == Role::Leader && !running.leading_seen;
            running.elections_seen = elections;
            running.leading_seen = role == Role::Leader;
            if node.removed && stood {
                node.terms_stood_after_removal.insert(term);
                if let Some(planner) = self.membership.as_mut() {
                    planner.counts.removed_elections += 1;
                }
            }
            // It may still win an election of an earlier term, with votes cast before its
            // removal (delivered late: a pause); any later term needs a log that holds the
            // configuration that removed it (Leader Completeness), which would make it a
            // member again.
            if node.removed && self.config.pre_vote && took_office && term > node.removed_at_term {
                self.checker.report(Violation::Membership {
                    detail: format!(
                        "{id}, removed by a committed configuration, leads term {term}"
                    ),
                    at_ms: self.now_ms,
                });
            }
        }
        if !self.config.pre_vote {
            for removed in removed_now {
                self.decommission(removed);
            }
        }
    }

    /// Shuts removed node `id` down for good (a clean stop: its disk keeps what it wrote).
    fn decommission(&mut self, id: NodeId) {
        let position = self.node_position(id);
        let node = &mut self.nodes[position];
        node.decommissioned = true;
        node.paused_until = None;
        node.deferred.clear();
        node.tick_scheduled_at = None;
        node.disk_busy_until_ms = 0;
        if node.running.take().is_some() {
            self.trace.add_u64(0xD3);
            self.trace.add_u64(id.0);
            self.trace_event(format_args!("{id} is shut down for good: it was removed"));
        }
    }
}

/// The address a simulated node is added with (the simulator's network needs none; the
/// configuration carries it all the same).
fn sim_address(id: NodeId) -> MemberAddress {
    MemberAddress { raft_addr: format!("sim:{}", id.0), client_addr: String::new() }
}
