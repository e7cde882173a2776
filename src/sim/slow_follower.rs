//! [`SlowFollower`]: a follower far behind, on a link much slower than the others', catches
//! up while the rest of the cluster keeps committing; [`run_slow_follower`] reports how many
//! bytes the leader sent it against how many it needed, and whether anyone else stalled
//! meanwhile (issue #16).
//!
//! The nodes are production [`Node`]s on [`MemoryStorage`], whose syncs complete after a
//! set time, on a virtual clock, with [`Links`] that carry a set number of bytes per
//! millisecond one message after another (a message sent while its link is busy queues
//! behind the ones before it, as on the one TCP connection a transport keeps per peer). The
//! log's commands all share one buffer, so a log of a gigabyte costs one command's memory:
//! the bytes are virtual, but every message is charged its full wire size
//! ([`message_size`]). Every node but the last starts with the same committed log of
//! `entries_behind` commands; the last one, the slow follower, starts empty, and its links
//! (both ways, to every node) are the slow ones. A client writes a small command to the
//! leader at a steady rate throughout.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, VecDeque};
use std::error::Error;
use std::fmt;

use bytes::Bytes;

use crate::config::Config;
use crate::core::{InitialState, Role};
use crate::error::StorageError;
use crate::hard_state::HardState;
use crate::message::{Entry, EntryPayload, Message, MessageBody};
use crate::node::{Node, NodeIo, ProposalResult};
use crate::state_machine::StateMachine;
use crate::storage::{MemoryStorage, PendingSync, Storage};
use crate::types::{LogId, LogIndex, NodeId, ReadId, Term};

use super::links::{Links, message_size};

/// The shape of a slow-follower run.
#[derive(Clone, Debug)]
pub struct SlowFollower {
    /// Nodes in the cluster; the last one is the slow follower.
    pub nodes: usize,
    /// Commands the slow follower lacks at the start (every other node holds them,
    /// committed).
    pub entries_behind: u64,
    /// Bytes of each of those commands.
    pub entry_bytes: usize,
    /// Bandwidth of the links between the other nodes, in bytes per virtual millisecond.
    pub fast_link_bytes_per_ms: u64,
    /// Bandwidth of the slow follower's links, both ways, in bytes per virtual millisecond.
    pub slow_link_bytes_per_ms: u64,
    /// Delay of every message on top of its time on the link, in virtual milliseconds.
    pub latency_ms: u64,
    /// How long a sync takes on the other nodes, in virtual milliseconds. A disk runs one
    /// sync at a time, and each makes durable everything written before it started.
    pub sync_ms: u64,
    /// How long a sync takes on the slow follower, in virtual milliseconds.
    pub slow_sync_ms: u64,
    /// A client writes a command of `write_bytes` to the leader every `write_interval_ms`.
    pub write_interval_ms: u64,
    /// Bytes of each of the client's commands.
    pub write_bytes: usize,
    /// How long the run goes on once the slow follower has caught up, in virtual
    /// milliseconds (so that what the leader would still resend is counted too).
    pub settle_ms: u64,
    /// The run stops here, caught up or not, in virtual milliseconds.
    pub max_ms: u64,
    /// Every node's configuration.
    pub config: Config,
    /// Seeds the nodes' election timers.
    pub seed: u64,
}

impl Default for SlowFollower {
    /// Three nodes; the slow follower 1 GiB behind (1,024 commands of 1 MiB) on links of 12 MB
    /// per 100 ms (the example of issue #16), 20 times slower than the others'; syncs of
    /// 2 ms; a 100-byte write every 10 ms; the default [`Config`] without snapshots.
    fn default() -> Self {
        SlowFollower {
            nodes: 3,
            entries_behind: 1_024,
            entry_bytes: 1 << 20,
            fast_link_bytes_per_ms: 2_400_000,
            slow_link_bytes_per_ms: 120_000,
            latency_ms: 1,
            sync_ms: 2,
            slow_sync_ms: 2,
            write_interval_ms: 10,
            write_bytes: 100,
            settle_ms: 1_000,
            max_ms: 120_000,
            config: Config {
                snapshot_after_entries: 0,
                snapshot_after_bytes: 0,
                ..Config::default()
            },
            seed: 1,
        }
    }
}

/// What a slow-follower run measured.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SlowFollowerReport {
    /// Wire bytes of the entries the slow follower holds at the end (it started with none):
    /// what it needed to receive.
    pub bytes_needed: u64,
    /// Wire bytes of the entries the leader sent the slow follower in AppendEntries.
    pub entry_bytes_sent: u64,
    /// Wire bytes of every message sent to the slow follower (heartbeats and votes too).
    pub wire_bytes_sent: u64,
    /// AppendEntries sent to the slow follower, with entries or without.
    pub appends_sent: u64,
    /// When the slow follower first held the leader's whole log, in virtual milliseconds
    /// from the start (`None`: not within `max_ms`).
    pub caught_up_ms: Option<u64>,
    /// Client writes the leader accepted, and how many of them committed.
    pub writes: u64,
    /// Of `writes`, those answered as applied.
    pub writes_committed: u64,
    /// The longest a client write took to commit and apply on the leader, in virtual
    /// milliseconds.
    pub max_write_latency_ms: u64,
    /// The longest a node other than the slow follower went without its commit index
    /// advancing, from the first write on, in virtual milliseconds.
    pub longest_commit_gap_ms: u64,
    /// The most the slow follower's inbound link had queued, in virtual milliseconds of
    /// sending.
    pub max_slow_link_backlog_ms: u64,
    /// Times a node became leader (1 when the first leader kept its office).
    pub leaders_elected: u64,
    /// Virtual milliseconds the run lasted.
    pub virtual_ms: u64,
}

impl SlowFollowerReport {
    /// Entry bytes sent over entry bytes needed: 1.0 when nothing was sent twice.
    pub fn resend_ratio(&self) -> f64 {
        self.entry_bytes_sent as f64 / self.bytes_needed.max(1) as f64
    }
}

impl fmt::Display for SlowFollowerReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const MIB: f64 = (1 << 20) as f64;
        write!(
            f,
            "needed {:.1} MiB, sent {:.1} MiB of entries ({:.3}x; {:.1} MiB on the wire in {} appends), caught up at {}, {} of {} writes committed (slowest {} ms), longest commit gap elsewhere {} ms, slow link backlog up to {} ms, {} leader(s) elected, {} virtual ms",
            self.bytes_needed as f64 / MIB,
            self.entry_bytes_sent as f64 / MIB,
            self.resend_ratio(),
            self.wire_bytes_sent as f64 / MIB,
            self.appends_sent,
            self.caught_up_ms.map_or_else(|| String::from("never"), |ms| format!("{ms} ms")),
            self.writes_committed,
            self.writes,
            self.max_write_latency_ms,
            self.longest_commit_gap_ms,
            self.max_slow_link_backlog_ms,
            self.leaders_elected,
            self.virtual_ms,
        )
    }
}

/// Runs `run` and reports what it measured.
pub fn run_slow_follower(run: &SlowFollower) -> SlowFollowerReport {
    SlowFollowerWorld::new(run).run()
}

/// Memory storage whose syncs are not done when flushed: the run completes them after the
/// node's sync time.
struct LaterSyncStorage(MemoryStorage);

/// A sync the run completes later (there is nothing to do: the storage is memory).
struct LaterSync;

impl PendingSync for LaterSync {
    fn complete(self: Box<Self>) -> Result<(), StorageError> {
        Ok(())
    }
}

impl Storage for LaterSyncStorage {
    type Snapshots = MemoryStorage;

    fn load(&mut self) -> Result<InitialState, StorageError> {
        self.0.load()
    }

    fn append(&mut self, entries: &[Entry]) -> Result<(), StorageError> {
        self.0.append(entries)
    }

    fn reset_log(&mut self, base: LogId) -> Result<(), StorageError> {
        self.0.reset_log(base)
    }

    fn compact(&mut self, through: LogIndex) -> Result<(), StorageError> {
        self.0.compact(through)
    }

    fn snapshot_store(&self) -> MemoryStorage {
        self.0.snapshot_store()
    }

    fn save_hard_state(&mut self, hard_state: &HardState) -> Result<(), StorageError> {
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

/// A state machine that only counts what it applies (commands share one buffer; nothing is
/// copied).
#[derive(Default)]
struct CountingMachine {
    applied_bytes: u64,
}

impl StateMachine for CountingMachine {
    fn apply(&mut self, command: &[u8]) -> Result<Vec<u8>, Box<dyn Error + Send + Sync>> {
        self.applied_bytes += command.len() as u64;
        Ok(Vec::new())
    }
}

/// What one call into a node handed out.
#[derive(Default)]
struct Outputs {
    messages: Vec<Message>,
    syncs: Vec<Box<dyn PendingSync>>,
    answers: Vec<(u64, ProposalResult)>,
}

impl NodeIo<u64> for Outputs {
    fn send(&mut self, message: Message) {
        self.messages.push(message);
    }

    fn start_sync(&mut self, sync: Box<dyn PendingSync>) {
        self.syncs.push(sync);
    }

    fn answer(&mut self, waiter: u64, result: ProposalResult) {
        self.answers.push((waiter, result));
    }

    fn read_ready(&mut self, _read: ReadId, _result: Result<LogIndex, crate::error::ReadError>) {}
}

enum Event {
    Tick(usize),
    Deliver(Message),
    SyncDone(usize),
    Write,
}

struct Scheduled {
    at_ms: u64,
    sequence: u64,
    event: Event,
}

impl PartialEq for Scheduled {
    fn eq(&self, other: &Self) -> bool {
        (self.at_ms, self.sequence) == (other.at_ms, other.sequence)
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
        (self.at_ms, self.sequence).cmp(&(other.at_ms, other.sequence))
    }
}

struct RunNode {
    node: Node<LaterSyncStorage, CountingMachine, u64>,
    /// Syncs handed out and not completed, oldest first.
    syncs: VecDeque<Box<dyn PendingSync>>,
    /// While the disk syncs: how many of `syncs` its sync covers (those handed out before it
    /// started; like the write-ahead log's, one sync makes every earlier write durable).
    syncing: Option<usize>,
    sync_ms: u64,
    tick_at_ms: Option<u64>,
    commit_index: LogIndex,
    commit_changed_ms: u64,
}

struct SlowFollowerWorld<'a> {
    run: &'a SlowFollower,
    ids: Vec<NodeId>,
    nodes: Vec<RunNode>,
    slow: usize,
    links: Links,
    now_ms: u64,
    queue: BinaryHeap<Reverse<Scheduled>>,
    sequence: u64,
    command: Bytes,
    written_at_ms: BTreeMap<u64, u64>,
    next_write: u64,
    first_write_ms: Option<u64>,
    leader: Option<usize>,
    report: SlowFollowerReport,
}

impl<'a> SlowFollowerWorld<'a> {
    fn new(run: &'a SlowFollower) -> Self {
        assert!(run.nodes >= 2, "a slow follower and at least one other node");
        let ids: Vec<NodeId> = (1..=run.nodes as u64).map(NodeId).collect();
        let slow = run.nodes - 1;
        let big = Bytes::from(vec![0u8; run.entry_bytes]);
        let preset: Vec<Entry> = (1..=run.entries_behind)
            .map(|index| Entry {
                term: Term(1),
                index: LogIndex(index),
                payload: EntryPayload::Command(big.clone()),
            })
            .collect();
        let nodes = ids
            .iter()
            .enumerate()
            .map(|(position, id)| {
                let mut storage = MemoryStorage::new();
                if position != slow {
                    let hard_state = HardState {
                        term: Term(1),
                        voted_for: None,
                        commit_index: LogIndex(run.entries_behind),
                    };
                    let stored = storage
                        .append(&preset)
                        .and_then(|()| storage.save_hard_state(&hard_state))
                        .and_then(|()| storage.sync());
                    stored.expect("memory storage does not fail");
                }
                let node = Node::start(
                    *id,
                    ids.clone(),
                    run.config.clone(),
                    LaterSyncStorage(storage),
                    CountingMachine::default(),
                    run.seed.wrapping_mul(1_000).wrapping_add(id.0),
                )
                .expect("a valid configuration and log");
                RunNode {
                    node,
                    syncs: VecDeque::new(),
                    syncing: None,
                    sync_ms: if position == slow { run.slow_sync_ms } else { run.sync_ms },
                    tick_at_ms: None,
                    commit_index: LogIndex(0),
                    commit_changed_ms: 0,
                }
            })
            .collect();
        let mut links = Links::with_bandwidth(Some(run.fast_link_bytes_per_ms));
        links.set_node_bandwidth(ids[slow], &ids, Some(run.slow_link_bytes_per_ms));
        SlowFollowerWorld {
            run,
            ids,
            nodes,
            slow,
            links,
            now_ms: 0,
            queue: BinaryHeap::new(),
            sequence: 0,
            command: Bytes::from(vec![1u8; run.write_bytes]),
            written_at_ms: BTreeMap::new(),
            next_write: 0,
            first_write_ms: None,
            leader: None,
            report: SlowFollowerReport::default(),
        }
    }

    fn schedule(&mut self, at_ms: u64, event: Event) {
        self.sequence += 1;
        self.queue.push(Reverse(Scheduled { at_ms, sequence: self.sequence, event }));
    }

    fn run(mut self) -> SlowFollowerReport {
        for position in 0..self.nodes.len() {
            self.nodes[position].node.tick(0);
            self.process(position, Outputs::default());
        }
        self.schedule(self.run.write_interval_ms, Event::Write);
        let mut stop_at_ms = self.run.max_ms;
        while let Some(Reverse(scheduled)) = self.queue.pop() {
            if scheduled.at_ms > stop_at_ms {
                break;
            }
            self.now_ms = scheduled.at_ms;
            match scheduled.event {
                Event::Tick(position) => {
                    if self.nodes[position].tick_at_ms == Some(self.now_ms) {
                        self.nodes[position].tick_at_ms = None;
                        self.nodes[position].node.tick(self.now_ms);
                        self.process(position, Outputs::default());
                    }
                }
                Event::Deliver(message) => {
                    let position = (message.to.0 - 1) as usize;
                    let node = &mut self.nodes[position].node;
                    // The node's clock first: it reads it for what the message starts.
                    node.tick(self.now_ms);
                    node.step(message);
                    self.process(position, Outputs::default());
                }
                Event::SyncDone(position) => {
                    let mut outputs = Outputs::default();
                    let node = &mut self.nodes[position];
                    node.node.tick(self.now_ms);
                    for _ in 0..node.syncing.take().unwrap_or(0) {
                        if let Some(sync) = node.syncs.pop_front() {
                            sync.complete().expect("memory storage does not fail");
                            node.node.sync_done(&mut outputs);
                        }
                    }
                    self.process(position, outputs);
                    self.start_disk_sync(position);
                }
                Event::Write => {
                    self.write();
                    self.schedule(self.now_ms + self.run.write_interval_ms, Event::Write);
                }
            }
            if self.report.caught_up_ms.is_none() && self.slow_caught_up() {
                self.report.caught_up_ms = Some(self.now_ms);
                stop_at_ms = stop_at_ms.min(self.now_ms + self.run.settle_ms);
            }
        }
        self.finish()
    }

    /// Whether the slow follower holds the leader's whole log.
    fn slow_caught_up(&self) -> bool {
        let Some(leader) = self.leader else { return false };
        let leader_last = self.nodes[leader].node.core().last_log_id();
        leader_last.index > LogIndex(self.run.entries_behind)
            && self.nodes[self.slow].node.core().last_log_id() == leader_last
    }

    fn write(&mut self) {
        let Some(leader) = self.leader else { return };
        let id = self.next_write;
        self.nodes[leader].node.tick(self.now_ms);
        match self.nodes[leader].node.propose(self.command.clone(), id) {
            Ok(_) => {
                self.next_write += 1;
                self.report.writes += 1;
                self.written_at_ms.insert(id, self.now_ms);
                self.first_write_ms.get_or_insert(self.now_ms);
            }
            Err(_) => return,
        }
        self.process(leader, Outputs::default());
    }

    /// Lets node `position` carry out its work, after `outputs` it already handed out.
    fn process(&mut self, position: usize, mut outputs: Outputs) {
        self.nodes[position].node.process(&mut outputs).expect("memory storage does not fail");
        let now_ms = self.now_ms;
        self.nodes[position].syncs.extend(outputs.syncs);
        self.start_disk_sync(position);
        for message in outputs.messages {
            self.send(message);
        }
        for (write, result) in outputs.answers {
            if let (Ok(_), Some(written_ms)) = (result, self.written_at_ms.remove(&write)) {
                self.report.writes_committed += 1;
                self.report.max_write_latency_ms =
                    self.report.max_write_latency_ms.max(now_ms - written_ms);
            }
        }
        let node = &mut self.nodes[position];
        let deadline_ms = node.node.next_deadline_ms().max(now_ms);
        if node.tick_at_ms.is_none_or(|scheduled| deadline_ms < scheduled) {
            node.tick_at_ms = Some(deadline_ms);
            self.schedule(deadline_ms, Event::Tick(position));
        }
        self.observe(position);
    }

    /// Starts a sync of node `position`'s disk, if it has syncs waiting and is not syncing
    /// already: it takes the node's sync time and covers every sync handed out so far.
    fn start_disk_sync(&mut self, position: usize) {
        let node = &mut self.nodes[position];
        if node.syncing.is_none() && !node.syncs.is_empty() {
            node.syncing = Some(node.syncs.len());
            let done_ms = self.now_ms + node.sync_ms;
            self.schedule(done_ms, Event::SyncDone(position));
        }
    }

    fn observe(&mut self, position: usize) {
        let now_ms = self.now_ms;
        let core = self.nodes[position].node.core();
        let (role, commit_index) = (core.role(), core.commit_index());
        if role == Role::Leader && self.leader != Some(position) {
            self.leader = Some(position);
            self.report.leaders_elected += 1;
        }
        let node = &mut self.nodes[position];
        if commit_index != node.commit_index {
            node.commit_index = commit_index;
            if position != self.slow
                && let Some(first_write_ms) = self.first_write_ms
            {
                let since_ms = node.commit_changed_ms.max(first_write_ms);
                self.report.longest_commit_gap_ms =
                    self.report.longest_commit_gap_ms.max(now_ms - since_ms);
            }
            node.commit_changed_ms = now_ms;
        }
    }

    fn send(&mut self, message: Message) {
        let size = message_size(&message);
        let (from, to) = (message.from, message.to);
        if to == self.ids[self.slow] {
            self.report.wire_bytes_sent += size;
            if let MessageBody::AppendEntries { entries, .. } = &message.body {
                self.report.appends_sent += 1;
                self.report.entry_bytes_sent +=
                    entries.iter().map(|entry| entry.encoded_len() as u64).sum::<u64>();
            }
        }
        let departure_ms = self.links.transmit(from, to, size, self.now_ms);
        if to == self.ids[self.slow] {
            self.report.max_slow_link_backlog_ms =
                self.report.max_slow_link_backlog_ms.max(departure_ms - self.now_ms);
        }
        self.schedule(departure_ms + self.run.latency_ms, Event::Deliver(message));
    }

    fn finish(mut self) -> SlowFollowerReport {
        let now_ms = self.now_ms;
        // The gaps still open at the end count too.
        if let Some(first_write_ms) = self.first_write_ms {
            for (position, node) in self.nodes.iter().enumerate() {
                if position != self.slow {
                    let since_ms = node.commit_changed_ms.max(first_write_ms);
                    self.report.longest_commit_gap_ms =
                        self.report.longest_commit_gap_ms.max(now_ms.saturating_sub(since_ms));
                }
            }
        }
        let core = self.nodes[self.slow].node.core();
        self.report.bytes_needed = (1..=core.last_log_id().index.0)
            .filter_map(|index| core.entry(LogIndex(index)))
            .map(|entry| entry.encoded_len() as u64)
            .sum();
        self.report.virtual_ms = now_ms;
        self.report
    }
}
