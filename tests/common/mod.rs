//! A deterministic harness for driving several [`RaftCore`]s by hand: no threads, no sleeps, no
//! tokio.
//!
//! [`TestCluster`] owns N cores and everything around them that a real node would have:
//!
//! - a per-node **disk** (log + hard state + latest snapshot) written exactly as a driver
//!   writes it: appends replace a stored suffix, like `src/storage/memory.rs`;
//! - a per-node **state machine**, reduced to the list of commands applied, in order; its
//!   snapshot is that list, encoded ([`TestCluster::take_snapshot`]);
//! - a **network**: a queue of in-flight messages with blocked links (partitions), optional
//!   deterministic loss ("drop every n-th message") and deterministic reordering;
//! - a **virtual clock** in milliseconds. Each node counts time from its own (re)start, as a
//!   real node counts from its process start.
//!
//! Every Ready is carried out in the driver's order (`src/driver.rs`): send `messages`,
//! persist `entries` and `hard_state`, send `persisted_messages`, apply `committed_entries`,
//! then `advance`. After every step the harness checks Raft's safety invariants and panics
//! with a description when one breaks:
//!
//! - **Election Safety**: at most one leader per term, ever.
//! - **Log Matching / Leader Completeness** for committed entries: once a node has committed
//!   an entry, that entry never changes on it, its commit index never decreases, and every
//!   node's committed prefix agrees with every other's.
//! - **State Machine Safety**: each node's applied commands are a prefix of every other
//!   node's, and each applied command is the committed entry at its index.
//! - **Apply exactly once**: every Ready's `committed_entries` continue exactly where the
//!   previous ones ended (no gap, no repeat).
//! - **Durability**: after each Ready the disk holds exactly the core's log and hard state.
//!
//! Two ways to drive it: let time run ([`TestCluster::advance_time`],
//! [`TestCluster::run_until`]) and let the randomized timers do their work, or script a
//! scenario message by message: fire a chosen node's timer ([`TestCluster::campaign`]),
//! deliver only the messages a predicate selects ([`TestCluster::deliver_matching`]) and drop
//! the rest. Scripted nodes are only ticked when a test says so.

// Each test binary that includes this module uses a different part of it.
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt::Write as _;

use bytes::Bytes;
use raft_consensus::core::{InitialState, RaftCore, Role};
use raft_consensus::message::AppendResponse;
use raft_consensus::{
    Config, Entry, EntryPayload, HardState, LogId, LogIndex, Message, MessageBody, NodeId,
    ProposeError, Snapshot, Term,
};

/// The step, in virtual milliseconds, in which [`TestCluster::advance_time`] moves the clock.
pub const TICK_STEP_MS: u64 = 5;

/// Deliveries after which [`TestCluster::deliver_all`] assumes the cluster is looping forever.
const MAX_DELIVERIES_PER_CALL: usize = 1_000_000;

/// One command as the state machine saw it: its log index, its term and its bytes.
pub type AppliedCommand = (LogIndex, Term, Vec<u8>);

/// The payload a preset log entry carries: unique per (index, term), so two nodes holding
/// the same entry hold equal bytes, as the Log Matching Property requires.
pub fn preset_entry(index: u64, term: u64) -> Entry {
    Entry {
        term: Term(term),
        index: LogIndex(index),
        payload: EntryPayload::Command(Bytes::from(format!("preset {index}@{term}"))),
    }
}

/// How a node starts: its log given as the term of each entry (index 1 first), its current
/// term, its vote and its commit index. Built with [`preset`].
#[derive(Clone, Debug)]
pub struct PresetNode {
    pub log_terms: Vec<u64>,
    pub term: u64,
    pub voted_for: Option<u64>,
    pub commit_index: u64,
}

/// A node whose log holds entries of `log_terms`, in the term of its last entry, having voted
/// for no one and committed nothing. Adjust with the builder methods.
pub fn preset(log_terms: &[u64]) -> PresetNode {
    PresetNode {
        log_terms: log_terms.to_vec(),
        term: log_terms.last().copied().unwrap_or(0),
        voted_for: None,
        commit_index: 0,
    }
}

impl PresetNode {
    /// Sets the node's current term.
    pub fn term(mut self, term: u64) -> Self {
        self.term = term;
        self
    }

    /// Sets the node's commit index.
    pub fn committed_through(mut self, index: u64) -> Self {
        self.commit_index = index;
        self
    }

    /// The state the node's storage would hand back on start.
    pub fn initial_state(&self) -> InitialState {
        InitialState {
            hard_state: HardState {
                term: Term(self.term),
                voted_for: self.voted_for.map(NodeId),
                commit_index: LogIndex(self.commit_index),
            },
            snapshot: None,
            entries: self
                .log_terms
                .iter()
                .enumerate()
                .map(|(position, term)| preset_entry(position as u64 + 1, *term))
                .collect(),
            members: None,
        }
    }
}

/// The harness's state machine snapshot: the applied commands, each as index, term, length
/// and bytes.
fn encode_applied(applied: &[AppliedCommand]) -> Bytes {
    let mut bytes = Vec::new();
    for (index, term, command) in applied {
        bytes.extend_from_slice(&index.0.to_le_bytes());
        bytes.extend_from_slice(&term.0.to_le_bytes());
        bytes.extend_from_slice(&(command.len() as u64).to_le_bytes());
        bytes.extend_from_slice(command);
    }
    Bytes::from(bytes)
}

/// The inverse of [`encode_applied`].
fn decode_applied(mut bytes: &[u8]) -> Vec<AppliedCommand> {
    let mut applied = Vec::new();
    let word = |bytes: &mut &[u8]| {
        let (head, rest) = bytes.split_at(8);
        *bytes = rest;
        u64::from_le_bytes(head.try_into().expect("eight bytes"))
    };
    while !bytes.is_empty() {
        let index = LogIndex(word(&mut bytes));
        let term = Term(word(&mut bytes));
        let length = word(&mut bytes) as usize;
        let (command, rest) = bytes.split_at(length);
        bytes = rest;
        applied.push((index, term, command.to_vec()));
    }
    applied
}

/// Whether `message` belongs to an election (a vote request or answer).
pub fn is_vote_traffic(message: &Message) -> bool {
    matches!(
        message.body,
        MessageBody::RequestVote { .. } | MessageBody::RequestVoteResponse { .. }
    )
}

/// Whether `message` is an AppendEntries carrying at least one entry of `term`.
pub fn carries_entry_of_term(message: &Message, term: u64) -> bool {
    match &message.body {
        MessageBody::AppendEntries { entries, .. } => {
            entries.iter().any(|entry| entry.term == Term(term))
        }
        _ => false,
    }
}

/// Whether `message` goes between `a` and `b`, in either direction.
pub fn between(message: &Message, a: u64, b: u64) -> bool {
    (message.from == NodeId(a) && message.to == NodeId(b))
        || (message.from == NodeId(b) && message.to == NodeId(a))
}

/// Whether `message` is a rejected AppendEntries answer.
pub fn is_append_rejection(message: &Message) -> bool {
    matches!(message.body, MessageBody::AppendEntriesResponse(AppendResponse::Rejected { .. }))
}

/// What became of a proposal: see [`TestCluster::outcome`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProposalOutcome {
    /// Committed at the index it was proposed at.
    Committed,
    /// Can never commit: the client must propose it again.
    Lost,
    /// Not decided yet.
    Pending,
}

/// A node's durable storage: what survives a crash.
#[derive(Clone, Debug, Default)]
struct Disk {
    hard_state: HardState,
    snapshot: Option<Snapshot>,
    /// The entry before `entries[0]`.
    base: LogId,
    entries: Vec<Entry>,
}

impl Disk {
    fn last_index(&self) -> LogIndex {
        LogIndex(self.base.index.0 + self.entries.len() as u64)
    }

    /// Writes `entries`, replacing the stored entries from the first one's index on.
    fn append(&mut self, entries: &[Entry]) {
        let Some(first) = entries.first() else {
            return;
        };
        let stored_last = self.last_index();
        assert!(
            first.index > self.base.index && first.index <= stored_last.next(),
            "append at index {} is outside the stored log {}..={stored_last}",
            first.index,
            self.base.index.next()
        );
        self.entries.truncate((first.index.0 - self.base.index.0 - 1) as usize);
        self.entries.extend_from_slice(entries);
    }

    /// Drops the entries up to `through`.
    fn compact(&mut self, through: LogIndex) {
        if through <= self.base.index {
            return;
        }
        let dropped = (through.0 - self.base.index.0) as usize;
        let last = self.entries[dropped - 1].log_id();
        self.entries.drain(..dropped);
        self.base = last;
    }
}

/// One member of the cluster: a core when it is up, and what outlives it.
struct SimNode {
    id: NodeId,
    /// `None` while the node is crashed.
    core: Option<RaftCore>,
    disk: Disk,
    /// The virtual time at which the current incarnation started: its clock's zero.
    started_at_ms: u64,
    /// How many times the node was (re)started; seeds each incarnation differently.
    incarnation: u64,
    /// Commands applied by the current incarnation's state machine, in order.
    applied: Vec<AppliedCommand>,
    /// Commands applied by any incarnation, in order (for "was this ever applied?").
    applied_ever: Vec<AppliedCommand>,
    /// The last index (command or no-op) handed out to apply in the current incarnation.
    last_applied_index: LogIndex,
    /// The highest commit index ever observed on this node, across restarts.
    highest_commit_seen: LogIndex,
}

/// A tiny deterministic generator (SplitMix64) for reordering deliveries.
#[derive(Clone, Debug)]
struct SplitMix(u64);

impl SplitMix {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, bound: usize) -> usize {
        (self.next_u64() % bound as u64) as usize
    }
}

/// The messages between nodes and the faults applied to them.
struct Network {
    in_flight: VecDeque<Message>,
    /// Directed links (from, to) on which every message is dropped.
    blocked: BTreeSet<(NodeId, NodeId)>,
    /// When set, every n-th message sent is lost.
    drop_every: Option<u64>,
    /// When set, each delivery picks a random in-flight message instead of the oldest.
    reorder: bool,
    rng: SplitMix,
    sent_count: u64,
    dropped_count: u64,
    /// Every message delivered, in delivery order (for counting round trips).
    delivered: Vec<Message>,
}

impl Network {
    fn send(&mut self, message: Message) {
        self.sent_count += 1;
        let lost = self.drop_every.is_some_and(|every| self.sent_count % every == 0);
        if lost || self.blocked.contains(&(message.from, message.to)) {
            self.dropped_count += 1;
            return;
        }
        self.in_flight.push_back(message);
    }

    /// The position of the next message to deliver among those `selected`.
    fn pick(&mut self, mut selected: impl FnMut(&Message) -> bool) -> Option<usize> {
        let candidates: Vec<usize> = self
            .in_flight
            .iter()
            .enumerate()
            .filter(|(_, message)| selected(message))
            .map(|(position, _)| position)
            .collect();
        if candidates.is_empty() {
            return None;
        }
        let chosen = if self.reorder { self.rng.below(candidates.len()) } else { 0 };
        Some(candidates[chosen])
    }
}

/// N Raft cores, their disks, state machines and network, under a virtual clock. See the
/// [module documentation](self).
pub struct TestCluster {
    config: Config,
    seed: u64,
    nodes: BTreeMap<NodeId, SimNode>,
    network: Network,
    now_ms: u64,
    /// Election Safety record: the leader seen for each term.
    leaders_by_term: BTreeMap<Term, NodeId>,
    /// The cluster-wide committed log: the longest committed prefix any node has had.
    committed_log: Vec<Entry>,
}

impl TestCluster {
    /// `size` nodes (ids 1..=size) with empty logs and the default configuration.
    pub fn new(size: u64, seed: u64) -> Self {
        // Scripted scenarios script the real vote; pre-vote has its own scenarios.
        Self::with_config(size, Config { pre_vote: false, ..Config::default() }, seed)
    }

    /// `size` nodes (ids 1..=size) with empty logs.
    pub fn with_config(size: u64, config: Config, seed: u64) -> Self {
        let presets = (0..size).map(|_| preset(&[])).collect();
        Self::with_presets(presets, config, seed)
    }

    /// One node per preset, ids 1, 2, ... in order, each starting from its preset state.
    pub fn with_presets(presets: Vec<PresetNode>, config: Config, seed: u64) -> Self {
        config.validate().expect("test config must be valid");
        let mut cluster = TestCluster {
            config,
            seed,
            nodes: BTreeMap::new(),
            network: Network {
                in_flight: VecDeque::new(),
                blocked: BTreeSet::new(),
                drop_every: None,
                reorder: false,
                rng: SplitMix(seed ^ 0x5EED_F00D),
                sent_count: 0,
                dropped_count: 0,
                delivered: Vec::new(),
            },
            now_ms: 0,
            leaders_by_term: BTreeMap::new(),
            committed_log: Vec::new(),
        };
        for (position, preset) in presets.iter().enumerate() {
            let id = NodeId(position as u64 + 1);
            let initial = preset.initial_state();
            let disk = Disk {
                hard_state: initial.hard_state,
                snapshot: None,
                base: LogId::default(),
                entries: initial.entries,
            };
            cluster.nodes.insert(
                id,
                SimNode {
                    id,
                    core: None,
                    disk,
                    started_at_ms: 0,
                    incarnation: 0,
                    applied: Vec::new(),
                    applied_ever: Vec::new(),
                    last_applied_index: LogIndex(0),
                    highest_commit_seen: LogIndex(0),
                },
            );
        }
        let ids = cluster.ids();
        for id in ids {
            cluster.start_from_disk(id);
        }
        cluster
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

    /// Whether node `id` is running (not crashed).
    pub fn is_up(&self, id: u64) -> bool {
        self.node(id).core.is_some()
    }

    /// The core of node `id`. Panics if it is crashed.
    pub fn core(&self, id: u64) -> &RaftCore {
        self.node(id).core.as_ref().unwrap_or_else(|| panic!("node{id} is crashed"))
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

    /// Node `id`'s in-memory log (the core's view), from the first entry it holds (index 1
    /// unless compacted).
    pub fn log(&self, id: u64) -> Vec<Entry> {
        let core = self.core(id);
        (core.first_log_index().0..=core.last_log_id().index.0)
            .map(|index| core.entry(LogIndex(index)).expect("a log is contiguous").clone())
            .collect()
    }

    /// The term of each entry of node `id`'s log, index 1 first.
    pub fn log_terms(&self, id: u64) -> Vec<u64> {
        self.log(id).iter().map(|entry| entry.term.0).collect()
    }

    /// Node `id`'s durable log (what a restart would recover).
    pub fn disk_log(&self, id: u64) -> &[Entry] {
        &self.node(id).disk.entries
    }

    /// Commands applied by node `id`'s current state machine, in order.
    pub fn applied(&self, id: u64) -> &[AppliedCommand] {
        &self.node(id).applied
    }

    /// The bytes of the commands applied by node `id`'s current state machine, in order.
    pub fn applied_commands(&self, id: u64) -> Vec<Vec<u8>> {
        self.applied(id).iter().map(|(_, _, command)| command.clone()).collect()
    }

    /// Commands applied by any incarnation of node `id`, in order.
    pub fn applied_ever(&self, id: u64) -> &[AppliedCommand] {
        &self.node(id).applied_ever
    }

    /// Whether any incarnation of any node ever applied `command`.
    pub fn anyone_ever_applied(&self, command: &[u8]) -> bool {
        self.nodes
            .values()
            .any(|node| node.applied_ever.iter().any(|(_, _, applied)| applied == command))
    }

    /// The longest committed prefix that any node has had.
    pub fn committed_log(&self) -> &[Entry] {
        &self.committed_log
    }

    /// Every term that had a leader, in order.
    pub fn terms_with_a_leader(&self) -> Vec<u64> {
        self.leaders_by_term.keys().map(|term| term.0).collect()
    }

    /// The leader ever seen in `term`, if any.
    pub fn leader_of_term(&self, term: u64) -> Option<NodeId> {
        self.leaders_by_term.get(&Term(term)).copied()
    }

    /// What became of the entry a leader of `term` appended at `index`, as far as the
    /// cluster's committed log can tell.
    ///
    /// It is lost once a different entry is committed at `index`, or once any entry of a
    /// later term is committed before `index`: every future leader holds that later-term entry
    /// (Leader Completeness), and after it only entries of that term or later, so no future
    /// leader can hold the proposal. Every newer leader commits an entry of its own term, so
    /// a proposal stays pending only while its own leader could still commit it.
    pub fn outcome(&self, index: LogIndex, term: Term) -> ProposalOutcome {
        match self.committed_log.get(index.0 as usize - 1) {
            Some(entry) if entry.term == term => ProposalOutcome::Committed,
            Some(_) => ProposalOutcome::Lost,
            None if self.committed_log.iter().any(|entry| entry.term > term) => {
                ProposalOutcome::Lost
            }
            None => ProposalOutcome::Pending,
        }
    }

    /// The leader of the newest term: a running node in the Leader role whose term is at
    /// least every running node's term. A leader cut off in an older term is not returned.
    pub fn leader(&self) -> Option<NodeId> {
        let newest_term = self.running().map(|(_, core)| core.term()).max()?;
        self.running()
            .find(|(_, core)| core.role() == Role::Leader && core.term() == newest_term)
            .map(|(id, _)| id)
    }

    /// Whether there is a [`leader`](Self::leader) that every running node it can reach
    /// follows, in its term.
    pub fn has_stable_leader(&self) -> bool {
        let Some(leader) = self.leader() else {
            return false;
        };
        let term = self.core(leader.0).term();
        self.running().filter(|(id, _)| *id != leader && self.can_reach(leader, *id)).all(
            |(_, core)| {
                core.role() == Role::Follower
                    && core.term() == term
                    && core.leader_id() == Some(leader)
            },
        )
    }

    /// Messages still in flight.
    pub fn in_flight(&self) -> impl Iterator<Item = &Message> {
        self.network.in_flight.iter()
    }

    /// Every message delivered so far, in delivery order.
    pub fn delivered(&self) -> &[Message] {
        &self.network.delivered
    }

    /// How many messages the network lost (loss rule or blocked link at send time).
    pub fn dropped_count(&self) -> u64 {
        self.network.dropped_count
    }

    /// A one-line-per-node summary, for assertion messages.
    pub fn describe(&self) -> String {
        let mut text = format!("t={}ms\n", self.now_ms);
        for (id, node) in &self.nodes {
            match &node.core {
                None => {
                    let _ = writeln!(text, "  {id}: crashed");
                }
                Some(core) => {
                    let terms: Vec<u64> = (core.first_log_index().0..=core.last_log_id().index.0)
                        .filter_map(|index| core.entry(LogIndex(index)))
                        .map(|entry| entry.term.0)
                        .collect();
                    let _ = writeln!(
                        text,
                        "  {id}: {} term {} leader {:?} commit {} log {:?}",
                        core.role(),
                        core.term(),
                        core.leader_id(),
                        core.commit_index(),
                        terms
                    );
                }
            }
        }
        text
    }

    // ---------------------------------------------------------------- clients

    /// Proposes `command` at node `id` and carries out the resulting Ready (nothing is
    /// delivered yet).
    pub fn propose(&mut self, id: u64, command: &[u8]) -> Result<LogIndex, ProposeError> {
        let result = self.core_mut(NodeId(id)).propose(Bytes::copy_from_slice(command));
        self.process_ready(NodeId(id));
        result
    }

    /// Node `id` snapshots its state machine (the applied commands) and stores it; the core
    /// compacts its log behind it and the disk drops what the core allows.
    pub fn take_snapshot(&mut self, id: u64) {
        let node = self.node_mut(NodeId(id));
        let core = node.core.as_mut().unwrap_or_else(|| panic!("node{id} is crashed"));
        let Some(meta) = core.snapshot_meta_for_applied() else {
            return;
        };
        let snapshot = Snapshot { meta, data: encode_applied(&node.applied) };
        node.disk.snapshot = Some(snapshot.clone());
        if let Some(through) = core.snapshot_stored(snapshot) {
            node.disk.compact(through);
        }
        self.process_ready(NodeId(id));
    }

    /// The latest snapshot node `id` stored, if any.
    pub fn stored_snapshot(&self, id: u64) -> Option<&Snapshot> {
        self.node(id).disk.snapshot.as_ref()
    }

    // ---------------------------------------------------------------- time

    /// Moves the clock forward by `ms` in steps of [`TICK_STEP_MS`]; at each step every
    /// running node is ticked and its Ready carried out, then every message is delivered.
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
                self.tick(id);
            }
            self.deliver_matching(&mut selected);
        }
    }

    /// Advances time until `done` holds, for at most `max_ms` virtual milliseconds. Returns
    /// whether `done` held.
    pub fn run_until(&mut self, max_ms: u64, mut done: impl FnMut(&TestCluster) -> bool) -> bool {
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
        assert!(
            self.run_until(max_ms, TestCluster::has_stable_leader),
            "no stable leader within {max_ms} ms:\n{}",
            self.describe()
        );
        self.leader().expect("a stable leader exists").0
    }

    /// Moves the clock to node `id`'s next timer deadline (if it is later than now) and ticks
    /// that node only, carrying out its Ready. Nothing is delivered.
    pub fn fire_timer(&mut self, id: u64) {
        let node_id = NodeId(id);
        let node = self.node(id);
        let deadline = node.started_at_ms + self.core(id).next_deadline_ms();
        self.now_ms = self.now_ms.max(deadline);
        self.tick(node_id);
    }

    /// Fires node `id`'s election timer with pre-vote on: it starts a pre-vote round, its term
    /// unchanged. Nothing is delivered.
    pub fn campaign_pre_vote(&mut self, id: u64) {
        assert_ne!(self.role(id), Role::Leader, "node{id} already leads");
        let term_before = self.term(id);
        self.fire_timer(id);
        assert_eq!(self.term(id), term_before, "node{id} raised its term before a pre-vote");
    }

    /// Makes follower or candidate `id` start an election now, by firing its election timer.
    /// Nothing is delivered.
    pub fn campaign(&mut self, id: u64) {
        assert_ne!(self.role(id), Role::Leader, "node{id} already leads");
        let term_before = self.term(id);
        self.fire_timer(id);
        assert_eq!(self.term(id), term_before + 1, "node{id} did not start an election");
    }

    /// Makes every node of `ids` start an election at the same virtual instant, before any
    /// of them hears from another. Nothing is delivered.
    pub fn campaign_together(&mut self, ids: &[u64]) {
        let latest_deadline = ids
            .iter()
            .map(|id| self.node(*id).started_at_ms + self.core(*id).next_deadline_ms())
            .max()
            .expect("at least one node");
        self.now_ms = self.now_ms.max(latest_deadline);
        for id in ids {
            let term_before = self.term(*id);
            self.tick(NodeId(*id));
            assert_eq!(self.term(*id), term_before + 1, "node{id} did not campaign");
        }
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
        while let Some(position) = self.network.pick(&mut selected) {
            let message =
                self.network.in_flight.remove(position).expect("picked position is in range");
            self.deliver(message);
            delivered += 1;
            assert!(
                delivered < MAX_DELIVERIES_PER_CALL,
                "messages never stop flowing:\n{}",
                self.describe()
            );
        }
        delivered
    }

    /// Drops the in-flight messages for which `selected` holds. Returns how many.
    pub fn drop_matching(&mut self, mut selected: impl FnMut(&Message) -> bool) -> usize {
        let before = self.network.in_flight.len();
        self.network.in_flight.retain(|message| !selected(message));
        let dropped = before - self.network.in_flight.len();
        self.network.dropped_count += dropped as u64;
        dropped
    }

    /// Drops every in-flight message.
    pub fn drop_in_flight(&mut self) -> usize {
        self.drop_matching(|_| true)
    }

    /// Cuts node `id` off from every other node, both ways.
    pub fn isolate(&mut self, id: u64) {
        let others: Vec<u64> = self.ids().iter().map(|id| id.0).filter(|o| *o != id).collect();
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
                        self.network.blocked.insert((NodeId(*from), NodeId(*to)));
                    }
                }
            }
        }
    }

    /// Blocks the link from `from` to `to` (one direction).
    pub fn block_link(&mut self, from: u64, to: u64) {
        self.network.blocked.insert((NodeId(from), NodeId(to)));
    }

    /// Unblocks every link.
    pub fn heal(&mut self) {
        self.network.blocked.clear();
    }

    /// Loses every `n`-th message sent from now on (counting all messages), or none.
    pub fn drop_every_nth_message(&mut self, n: Option<u64>) {
        self.network.drop_every = n;
    }

    /// Delivers in-flight messages in a (seeded) random order instead of oldest first.
    pub fn set_reordering(&mut self, reorder: bool) {
        self.network.reorder = reorder;
    }

    // ---------------------------------------------------------------- faults

    /// Stops node `id`: it no longer ticks or receives, and messages to or from it that are
    /// in flight are lost. Its disk survives; its volatile state does not.
    pub fn crash(&mut self, id: u64) {
        let node_id = NodeId(id);
        let node = self.node_mut(node_id);
        assert!(node.core.is_some(), "node{id} is already crashed");
        node.core = None;
        self.drop_matching(|message| message.from == node_id || message.to == node_id);
    }

    /// Starts node `id` again from its disk, with a fresh seed and a fresh state machine
    /// (which re-applies the committed log from the start).
    pub fn restart(&mut self, id: u64) {
        assert!(!self.is_up(id), "node{id} is running");
        self.start_from_disk(NodeId(id));
    }

    // ---------------------------------------------------------------- internals

    fn node(&self, id: u64) -> &SimNode {
        self.nodes.get(&NodeId(id)).unwrap_or_else(|| panic!("no node{id}"))
    }

    fn node_mut(&mut self, id: NodeId) -> &mut SimNode {
        self.nodes.get_mut(&id).unwrap_or_else(|| panic!("no {id}"))
    }

    fn core_mut(&mut self, id: NodeId) -> &mut RaftCore {
        self.node_mut(id).core.as_mut().unwrap_or_else(|| panic!("{id} is crashed"))
    }

    fn running(&self) -> impl Iterator<Item = (NodeId, &RaftCore)> {
        self.nodes.iter().filter_map(|(id, node)| node.core.as_ref().map(|core| (*id, core)))
    }

    fn running_ids(&self) -> Vec<NodeId> {
        self.running().map(|(id, _)| id).collect()
    }

    fn can_reach(&self, from: NodeId, to: NodeId) -> bool {
        !self.network.blocked.contains(&(from, to)) && !self.network.blocked.contains(&(to, from))
    }

    fn start_from_disk(&mut self, id: NodeId) {
        let voters = self.ids();
        let config = self.config.clone();
        let now_ms = self.now_ms;
        let seed = self.seed;
        let node = self.node_mut(id);
        node.incarnation += 1;
        let node_seed =
            seed.wrapping_mul(1_000_003).wrapping_add(id.0 * 1_000).wrapping_add(node.incarnation);
        let initial = InitialState {
            hard_state: node.disk.hard_state,
            snapshot: node.disk.snapshot.clone(),
            entries: node.disk.entries.clone(),
            members: None,
        };
        // Restore the state machine from the snapshot, as a node does before it starts.
        let (restored, restored_through) = match &node.disk.snapshot {
            Some(snapshot) => (decode_applied(&snapshot.data), snapshot.meta.last_included.index),
            None => (Vec::new(), LogIndex(0)),
        };
        node.core = Some(
            RaftCore::new(id, voters, config, initial, node_seed)
                .expect("the harness restarts nodes from valid disks and configurations"),
        );
        // Start the node's clock at its local time 0, as the runtime does.
        if let Some(core) = node.core.as_mut() {
            core.tick(0);
        }
        node.started_at_ms = now_ms;
        node.applied = restored;
        node.last_applied_index = restored_through;
        // A restarted node re-applies its committed entries before doing anything else.
        self.process_ready(id);
    }

    /// Ticks node `id` at the current time (on its own clock) and carries out its Ready.
    fn tick(&mut self, id: NodeId) {
        let now_ms = self.now_ms;
        let node = self.node_mut(id);
        let local_now = now_ms - node.started_at_ms;
        node.core.as_mut().unwrap_or_else(|| panic!("{id} is crashed")).tick(local_now);
        self.process_ready(id);
    }

    fn deliver(&mut self, message: Message) {
        let to = message.to;
        if self.network.blocked.contains(&(message.from, to)) {
            self.network.dropped_count += 1;
            return;
        }
        let Some(core) = self.nodes.get_mut(&to).and_then(|node| node.core.as_mut()) else {
            self.network.dropped_count += 1;
            return;
        };
        self.network.delivered.push(message.clone());
        core.step(message);
        self.process_ready(to);
    }

    /// Carries out every pending Ready of node `id` in the driver's order, then checks the
    /// invariants.
    fn process_ready(&mut self, id: NodeId) {
        let TestCluster { nodes, network, .. } = self;
        let node = nodes.get_mut(&id).unwrap_or_else(|| panic!("no {id}"));
        let Some(core) = node.core.as_mut() else {
            return;
        };
        while core.has_ready() {
            let ready = core.ready();
            // 1. Messages that promise nothing durable.
            for message in ready.messages {
                network.send(message);
            }
            // 2. Store a received snapshot, reset the log behind it, persist entries and hard
            // state (and "sync").
            if let Some(snapshot) = &ready.snapshot {
                node.disk.snapshot = Some(snapshot.clone());
            }
            if let Some(base) = ready.log_reset {
                node.disk.entries.clear();
                node.disk.base = base;
            }
            node.disk.append(&ready.entries);
            if let Some(hard_state) = ready.hard_state {
                node.disk.hard_state = hard_state;
            }
            let snapshot_index =
                node.disk.snapshot.as_ref().map_or(LogIndex(0), |s| s.meta.last_included.index);
            assert!(
                node.disk.hard_state.commit_index <= node.disk.last_index().max(snapshot_index),
                "{id}: durable commit index {} is ahead of the durable log (through {})",
                node.disk.hard_state.commit_index,
                node.disk.last_index()
            );
            // 3. Messages that promise durability.
            for message in ready.persisted_messages {
                network.send(message);
            }
            // 4. Restore a received snapshot, then apply committed entries, in order, exactly
            // once.
            if let Some(snapshot) = ready.snapshot {
                let restored = decode_applied(&snapshot.data);
                node.applied_ever.extend(restored.iter().cloned());
                node.applied = restored;
                node.last_applied_index = snapshot.meta.last_included.index;
            }
            for entry in ready.committed_entries {
                assert_eq!(
                    entry.index,
                    node.last_applied_index.next(),
                    "{id}: committed entries must be handed out in order, without gaps or repeats"
                );
                node.last_applied_index = entry.index;
                if let EntryPayload::Command(command) = &entry.payload {
                    let applied = (entry.index, entry.term, command.to_vec());
                    node.applied.push(applied.clone());
                    node.applied_ever.push(applied);
                }
            }
            // 5. Acknowledge.
            core.advance(ready.ack);
        }
        self.check_invariants(id);
    }

    /// Checks the safety invariants that involve node `id` (see the module documentation).
    fn check_invariants(&mut self, id: NodeId) {
        let TestCluster { nodes, leaders_by_term, committed_log, .. } = self;
        let node = nodes.get(&id).expect("node exists");
        let Some(core) = node.core.as_ref() else {
            return;
        };

        // Election Safety: at most one leader per term.
        if core.role() == Role::Leader {
            let recorded = *leaders_by_term.entry(core.term()).or_insert(id);
            assert_eq!(recorded, id, "two leaders in term {}: {recorded} and {id}", core.term());
        }

        // Durability: the disk holds exactly the core's log and hard state.
        let last_index = core.last_log_id().index;
        assert_eq!(
            node.disk.last_index(),
            last_index,
            "{id}: the durable log's end differs from the in-memory log's"
        );
        for stored in
            node.disk.entries.iter().filter(|stored| stored.index >= core.first_log_index())
        {
            assert_eq!(
                Some(stored),
                core.entry(stored.index),
                "{id}: durable entry {} differs from the in-memory one",
                stored.index
            );
        }
        assert_eq!(
            node.disk.hard_state,
            HardState {
                term: core.term(),
                voted_for: core.voted_for(),
                commit_index: core.commit_index(),
            },
            "{id}: durable hard state differs from the core's"
        );

        // Committed entries never change, the commit index never decreases, and every node
        // agrees on the committed prefix.
        let commit_index = core.commit_index();
        assert!(
            commit_index >= node.highest_commit_seen,
            "{id}: commit index went back from {} to {commit_index}",
            node.highest_commit_seen
        );
        for index in core.first_log_index().0..=commit_index.0 {
            let entry = core
                .entry(LogIndex(index))
                .unwrap_or_else(|| panic!("{id}: committed index {index} is not in its log"));
            match committed_log.get(index as usize - 1) {
                Some(committed) => assert_eq!(
                    committed, entry,
                    "{id}: committed entry {index} differs from the one committed before"
                ),
                None => committed_log.push(entry.clone()),
            }
        }

        // State Machine Safety: applied commands are committed entries, and every node's
        // applied sequence is a prefix of every other's.
        for (index, term, command) in &node.applied {
            let committed = committed_log
                .get(index.0 as usize - 1)
                .unwrap_or_else(|| panic!("{id} applied index {index}, never committed"));
            assert_eq!(
                (committed.term, &committed.payload),
                (*term, &EntryPayload::Command(Bytes::copy_from_slice(command))),
                "{id} applied at index {index} something other than the committed entry"
            );
        }
        let applied = &node.applied;
        for (other_id, other) in nodes.iter() {
            if *other_id == id {
                continue;
            }
            let shorter = applied.len().min(other.applied.len());
            assert_eq!(
                applied[..shorter],
                other.applied[..shorter],
                "{id} and {other_id} applied different command sequences"
            );
        }
        nodes.get_mut(&id).expect("node exists").highest_commit_seen = commit_index;
    }
}
