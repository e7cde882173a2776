//! The sans-I/O protocol core: [`RaftCore`] is Raft as a pure state machine.
//!
//! It never reads a clock, touches a socket or a file, or spawns a task. Its caller feeds it
//! time ([`RaftCore::tick`]), messages ([`RaftCore::step`]) and proposals
//! ([`RaftCore::propose`]), then collects the work those produced as a [`Ready`] and
//! acknowledges it with [`RaftCore::advance`]:
//!
//! 1. send `ready.messages` (they need nothing durable first),
//! 2. persist `ready.hard_state` and `ready.entries` and sync (when `ready.must_sync`),
//! 3. send `ready.persisted_messages` (votes and acknowledgments that promise durability),
//! 4. apply `ready.committed_entries` in order,
//! 5. hand `ready.ack` back to [`RaftCore::advance`].
//!
//! The rules live in files named after them: `election` (§5.2, §5.4.1), `replication`
//! (§5.3, §5.4.2), `log`, `progress`, `configuration` (every majority count, over `quorum`),
//! `ready`, `snapshot`, `invariants` (the single mutation points of term, vote and commit
//! index, and [`RaftCore::check_invariants`]), `message_bounds` (the terms and indexes a
//! peer may send) and `disk_stall` (a leader whose syncs hang steps down). Randomness comes
//! from a seed the caller provides, so the same inputs always give the same outputs.
//!
//! All of a node's protocol logs use the target `raft_consensus::raft_node`, so one filter
//! (`RUST_LOG=raft_consensus::raft_node=debug`) shows what a node does, whichever layer did it.

mod configuration;
mod configuration_encoding;
mod disk_stall;
mod election;
mod invariants;
mod log;
mod membership;
pub(crate) mod message_bounds;
mod progress;
mod quorum;
mod read_index;
mod ready;
mod replication;
pub(crate) mod rng;
mod snapshot;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::Arc;

use bytes::Bytes;

pub use self::configuration::{Configuration, MemberAddress};
pub use self::configuration_encoding::MAX_ADDRESS_BYTES;
pub use self::quorum::VoteResult;
pub use self::read_index::ReadPolicy;
pub use self::ready::{Ready, ReadyAck};
pub use self::snapshot::{ReceivedSnapshotChunk, SnapshotChunkToSend};

use self::log::RaftLog;
use self::membership::{ConfigurationHistory, LeadershipTransfer};
use self::progress::Progress;
use self::rng::Rng;
use crate::config::Config;
use crate::error::{ProposeError, StartError, StorageError};
use crate::hard_state::HardState;
use crate::message::{Entry, EntryPayload, Message, MessageBody};
use crate::snapshot::Snapshot;
use crate::types::{HeartbeatRound, LogId, LogIndex, NodeId, Term};

/// The tracing target of every protocol log line.
pub(crate) const LOG_TARGET: &str = "raft_consensus::raft_node";

/// The role a node plays in its current term.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    /// Follows a leader and answers its requests.
    Follower,
    /// Asks for votes to become leader.
    Candidate,
    /// Accepts proposals and replicates the log.
    Leader,
    /// No longer runs: [`RaftNode::status`](crate::RaftNode::status) reports it once the node
    /// was shut down or stopped on a fatal error. The protocol core itself never takes it.
    Stopped,
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Role::Follower => "Follower",
            Role::Candidate => "Candidate",
            Role::Leader => "Leader",
            Role::Stopped => "Stopped",
        })
    }
}

/// What a node recovered from storage, to start a [`RaftCore`] from.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct InitialState {
    /// The last persisted hard state.
    pub hard_state: HardState,
    /// The latest stored snapshot, if any. The caller restores its state machine from it
    /// before the core applies anything.
    pub snapshot: Option<Snapshot>,
    /// The persisted log entries, contiguous: from index 1 without a snapshot; with one, from
    /// anywhere up to just after the snapshot's last entry. Entries that do not agree with the
    /// snapshot (a log reset that a crash interrupted) are dropped when the core starts.
    pub entries: Vec<Entry>,
    /// The voting members storage recorded (see [`Storage::save_members`]), if any.
    /// [`Node::start`](crate::node::Node::start) checks them against the members it is given;
    /// the core itself takes its members from its caller.
    ///
    /// [`Storage::save_members`]: crate::storage::Storage::save_members
    pub members: Option<Vec<NodeId>>,
}

/// One Raft node's protocol state. See the [module documentation](self) for how to drive it.
#[derive(Debug)]
pub struct RaftCore {
    id: NodeId,
    config: Config,
    /// The latest configuration in the log (see `membership.rs`); every majority is counted
    /// by it. Changes only in `refresh_configuration`.
    configuration: Arc<Configuration>,
    /// The configuration entries of the log, and the configuration at its base.
    configurations: ConfigurationHistory,
    /// Leader: the leadership transfer under way.
    transfer: Option<LeadershipTransfer>,

    // Durable state (mirrored to storage through `Ready`). `term`, `voted_for` and
    // `commit_index` change only through `set_term`, `vote_for` and `commit_to`
    // (`invariants.rs`), which assert the rules they obey.
    term: Term,
    voted_for: Option<NodeId>,
    log: RaftLog,
    /// Invariant: `commit_index <= log.last_index()`, and it never decreases.
    commit_index: LogIndex,

    // Volatile state.
    role: Role,
    /// The leader this node follows now (cleared when it stops trusting it).
    leader_id: Option<NodeId>,
    /// The leader of the current term once known (this node, if it leads), kept until the
    /// term changes: a different leader in the same term breaks election safety.
    leader_of_term: Option<NodeId>,
    /// Candidate only: who granted their vote in this term.
    votes_granted: BTreeSet<NodeId>,
    /// During a pre-vote round: who said they would vote for this node in the next term.
    pre_votes_granted: Option<BTreeSet<NodeId>>,
    /// Elections this node has started (for monitoring).
    elections_started: u64,
    /// Messages refused because they broke the protocol in a way no correct peer can (a
    /// second leader in a term, a leader overwriting committed entries): a buggy or
    /// compromised peer.
    protocol_violations: u64,
    /// When this node last heard from the leader of its term (or led), for the leader lease
    /// that lets it refuse pre-votes and ignore disruptive vote requests.
    last_leader_contact_ms: Option<u64>,
    /// Leader only: one entry per other voter.
    progress: BTreeMap<NodeId, Progress>,
    /// Leader: its current heartbeat round (see `read_index.rs`).
    heartbeat_round: HeartbeatRound,
    /// The linearizable reads being confirmed (see `read_index.rs`).
    reads: read_index::Reads,
    /// With lease reads: a node that has just started ignores vote requests until this time,
    /// as if it had just heard from a leader (it may have, before it restarted).
    votes_ignored_until_ms: u64,
    now_ms: u64,
    /// Whether `tick` has set the clock yet.
    clock_started: bool,
    election_deadline_ms: u64,
    heartbeat_deadline_ms: u64,
    check_quorum_deadline_ms: u64,
    rng: Rng,

    // Output bookkeeping (see `ready.rs`).
    messages: Vec<Message>,
    persisted_messages: Vec<Message>,
    /// The hard state last handed out for persistence.
    handed_hard_state: HardState,
    /// The first log index not yet handed out for persistence.
    unpersisted_from: LogIndex,
    /// Invariant: entries up to here are durable and equal to the in-memory log.
    persisted_index: LogIndex,
    /// The last index handed out to be applied.
    apply_handed_index: LogIndex,
    /// The last index the caller confirmed applied.
    applied_index: LogIndex,
    /// The writes handed out and not yet acknowledged durable (see `disk_stall.rs`).
    unsynced: disk_stall::UnsyncedWrites,

    // Snapshots (see `snapshot.rs`).
    /// The latest snapshot held, taken or received (its description: the bytes are in
    /// storage).
    snapshot: Option<Snapshot>,
    /// Follower: a snapshot being received from the leader.
    incoming_snapshot: Option<snapshot::IncomingSnapshot>,
    /// Leader: snapshot chunks to read from storage and send, for the next Ready.
    snapshot_chunks_out: Vec<SnapshotChunkToSend>,
    /// Follower: snapshot chunks accepted, to write to storage, for the next Ready.
    snapshot_chunks_in: Vec<ReceivedSnapshotChunk>,
    /// A received snapshot to hand out in the next Ready, to store and restore.
    pending_snapshot: Option<Snapshot>,
    /// The base to which the stored log must be reset (a received snapshot the log did not
    /// match), in the next Ready.
    pending_log_reset: Option<LogId>,
    /// Set after installing a snapshot: the next tick restarts the election timer.
    restart_election_timer_at_next_tick: bool,

    /// Simulation only: the planted bug that commits earlier-term entries by counting (and
    /// appends no no-op on taking office).
    #[cfg(feature = "sim")]
    pub(crate) planted_commit_previous_term: bool,
    /// Simulation only: the planted bug that changes voters in one step, without the joint
    /// phase (two majorities of old and new voters can then be disjoint).
    #[cfg(feature = "sim")]
    pub(crate) planted_change_without_joint: bool,
    /// Simulation only: the planted bug that counts learners towards the commit majority.
    #[cfg(feature = "sim")]
    pub(crate) planted_learners_count_for_commit: bool,
    /// Simulation only: the planted bug that confirms reads without a heartbeat round.
    #[cfg(feature = "sim")]
    pub(crate) planted_read_without_round: bool,
    /// Simulation only: the planted bug that continues a snapshot transfer with another
    /// leader's (or term's) chunks of a snapshot through the same entry and of the same
    /// length, and installs it without checking its checksum.
    #[cfg(feature = "sim")]
    pub(crate) planted_splice_snapshot_transfers: bool,
}

impl RaftCore {
    /// Creates a node with identity `id` in a cluster whose voting members are `voters` (which
    /// must include `id`), starting from `initial` state, with randomness from `seed`.
    ///
    /// The node starts as a follower; its clock starts at its first [`tick`](Self::tick), so
    /// a node restarted in a running cluster waits a whole election timeout before it stands.
    ///
    /// Fails on an invalid `config`, a member list without `id`, or stored entries that are
    /// not a log (not contiguous, with decreasing terms, or with a gap after the snapshot).
    pub fn new(
        id: NodeId,
        voters: impl IntoIterator<Item = NodeId>,
        config: Config,
        initial: InitialState,
        seed: u64,
    ) -> Result<Self, StartError> {
        config.validate()?;
        // The bootstrap configuration: the given voters, or none for a node that joins.
        let bootstrap = match Configuration::simple(voters) {
            None => Configuration::unknown(),
            Some(configuration) if configuration.is_voter(id) => configuration,
            Some(other) => {
                return Err(StartError::Membership {
                    reason: format!(
                        "the members {:?} do not include the node itself ({id})",
                        other.voters()
                    ),
                });
            }
        };
        let snapshot = initial.snapshot;
        // Stored values obey the bounds peers' values do (this node wrote them), so that
        // index and term arithmetic never overflows; anything beyond is corruption.
        let mut stored_ids = snapshot
            .iter()
            .map(|snapshot| snapshot.meta.last_included)
            .chain(initial.entries.iter().map(Entry::log_id))
            .chain(std::iter::once(LogId::new(initial.hard_state.term, LogIndex(0))));
        if let Some(beyond) = stored_ids.find(|log_id| {
            log_id.term > message_bounds::MAX_TERM || log_id.index > message_bounds::MAX_INDEX
        }) {
            return Err(StorageError::Corrupt {
                detail: format!(
                    "the stored term or index {beyond} is beyond the highest term ({}) or index ({}) a node accepts",
                    message_bounds::MAX_TERM,
                    message_bounds::MAX_INDEX
                ),
            }
            .into());
        }
        let (base, entries) = reconcile_with_snapshot(snapshot.as_ref(), initial.entries)
            .map_err(|detail| StorageError::Corrupt { detail })?;
        // When no stored entry follows the snapshot, the stored log must be reset to it before
        // anything is appended after it: entries dropped for the snapshot (a crash after it
        // was stored lost log writes not yet synced, or cut short a log reset) must go from
        // storage too, and a log reset that a crash lost (a node that had no entries when it
        // installed the snapshot) must be written again, or storage would see entries start
        // after a gap. The first Ready carries the reset; it is harmless when storage was
        // already reset there.
        let stored_log_dropped = entries.is_empty() && base.index > LogIndex(0);
        let mut log = RaftLog::from_entries(base, entries)
            .map_err(|detail| StorageError::Corrupt { detail })?;
        let snapshot_index = snapshot.as_ref().map_or(LogIndex(0), |s| s.meta.last_included.index);
        // Storage may still hold entries its snapshot let it drop (it compacts lazily, a
        // segment at a time): the log starts where it did before the restart, keeping
        // `snapshot_keep_entries` below the snapshot, as `snapshot_stored` compacts it.
        let compact_through =
            LogIndex(snapshot_index.0.saturating_sub(config.snapshot_keep_entries));
        if compact_through > log.base().index && log.term_at(compact_through).is_some() {
            log.compact_through(compact_through);
        }
        let mut hard_state = initial.hard_state;
        if log.last_log_id().term > hard_state.term {
            // The entries of a batch are written before its hard state, so a crash can keep
            // entries of a newer term without the hard state that moved to it. That hard
            // state's vote was never sent (votes leave only after the sync), so adopting the
            // entries' term with no vote is what the node durably promised.
            hard_state = HardState { term: log.last_log_id().term, voted_for: None, ..hard_state };
        }
        // A snapshot records the configuration at its end; the log's entries override it.
        let base_configuration = match &snapshot {
            Some(snapshot) => snapshot.meta.configuration.clone(),
            None => bootstrap,
        };
        let configurations =
            ConfigurationHistory::new(log.base().index, base_configuration, log.entries());
        let configuration = Arc::new(configurations.latest().1.clone());
        let last_index = log.last_index();
        let commit_index = hard_state.commit_index.max(snapshot_index).min(last_index);
        let mut core = RaftCore {
            id,
            config,
            configuration,
            configurations,
            transfer: None,
            // Restored below through the single mutation points, which check them.
            term: Term(0),
            voted_for: None,
            log,
            commit_index: LogIndex(0),
            role: Role::Follower,
            leader_id: None,
            leader_of_term: None,
            votes_granted: BTreeSet::new(),
            pre_votes_granted: None,
            elections_started: 0,
            protocol_violations: 0,
            last_leader_contact_ms: None,
            progress: BTreeMap::new(),
            heartbeat_round: HeartbeatRound(0),
            reads: read_index::Reads::new(seed),
            votes_ignored_until_ms: 0,
            now_ms: 0,
            clock_started: false,
            election_deadline_ms: 0,
            heartbeat_deadline_ms: 0,
            check_quorum_deadline_ms: 0,
            rng: Rng::new(seed),
            messages: Vec::new(),
            persisted_messages: Vec::new(),
            handed_hard_state: HardState { commit_index, ..hard_state },
            unpersisted_from: last_index.next(),
            persisted_index: last_index,
            apply_handed_index: snapshot_index,
            applied_index: snapshot_index,
            unsynced: disk_stall::UnsyncedWrites::default(),
            snapshot,
            incoming_snapshot: None,
            snapshot_chunks_out: Vec::new(),
            snapshot_chunks_in: Vec::new(),
            pending_snapshot: None,
            pending_log_reset: stored_log_dropped.then_some(base),
            restart_election_timer_at_next_tick: false,
            #[cfg(feature = "sim")]
            planted_commit_previous_term: false,
            #[cfg(feature = "sim")]
            planted_change_without_joint: false,
            #[cfg(feature = "sim")]
            planted_learners_count_for_commit: false,
            #[cfg(feature = "sim")]
            planted_read_without_round: false,
            #[cfg(feature = "sim")]
            planted_splice_snapshot_transfers: false,
        };
        core.set_term(hard_state.term);
        if let Some(voted) = hard_state.voted_for {
            core.vote_for(voted);
        }
        core.commit_to(commit_index);
        core.check_invariants();
        core.reset_election_deadline();
        Ok(core)
    }

    /// Advances the core's notion of time to `now_ms` (milliseconds since any fixed origin,
    /// never decreasing) and fires the election or heartbeat timer if it is due.
    pub fn tick(&mut self, now_ms: u64) {
        if !self.clock_started {
            // The first tick sets the clock; the election timeout runs from here.
            self.clock_started = true;
            self.now_ms = now_ms;
            self.start_stall_clock();
            self.reset_election_deadline();
            if self.config.lease_reads {
                // This node may have answered a leader's heartbeat just before it restarted:
                // the leader's lease counts on it not to vote for a while.
                self.votes_ignored_until_ms = now_ms + self.config.election_timeout_min_ms;
            }
            return;
        }
        debug_assert!(now_ms >= self.now_ms, "time must not go backwards");
        self.now_ms = self.now_ms.max(now_ms);
        if std::mem::take(&mut self.restart_election_timer_at_next_tick) {
            self.last_leader_contact_ms = Some(self.now_ms);
            if self.role != Role::Leader {
                self.reset_election_deadline();
            }
        }
        match self.role {
            Role::Leader => {
                // A leader whose disk stalled steps down, and sends no more heartbeats.
                self.step_down_if_disk_stalled();
                if self.role != Role::Leader {
                    return;
                }
                self.expire_leadership_transfer();
                if self.now_ms >= self.check_quorum_deadline_ms {
                    self.check_quorum();
                }
                if self.role == Role::Leader && self.now_ms >= self.heartbeat_deadline_ms {
                    self.broadcast_heartbeat();
                }
            }
            Role::Follower | Role::Candidate => {
                self.expire_forwarded_reads();
                if self.now_ms >= self.election_deadline_ms {
                    self.campaign();
                }
            }
            // Never the core's role (see `Role::Stopped`): nothing to do.
            Role::Stopped => {}
        }
    }

    /// Leader: sends a round of heartbeats now, as if the heartbeat timer had fired (before
    /// the caller pauses the node, for example to snapshot a large state machine).
    pub fn heartbeat_now(&mut self) {
        if self.role == Role::Leader {
            self.broadcast_heartbeat();
        }
    }

    /// The time at which [`tick`](Self::tick) next has work to do.
    pub fn next_deadline_ms(&self) -> u64 {
        match self.role {
            Role::Leader => self
                .heartbeat_deadline_ms
                .min(self.check_quorum_deadline_ms)
                .min(self.stall_deadline_ms().unwrap_or(u64::MAX)),
            Role::Follower | Role::Candidate => self.election_deadline_ms,
            Role::Stopped => u64::MAX,
        }
    }

    /// Handles a message from another node. Messages for another node, from a non-member, or
    /// from an older term are answered or dropped as the protocol requires; none is an error.
    pub fn step(&mut self, message: Message) {
        // Messages from nodes outside this node's configuration are handled: its
        // configuration may be behind the sender's (a new member, or one that has not yet
        // received the entry that added the sender), §4.1.
        if message.to != self.id || message.from == self.id {
            tracing::debug!(target: LOG_TARGET, node = %self.id, from = %message.from, to = %message.to, "Dropping message not meant for this node");
            return;
        }
        if let Err(problem) = message_bounds::check_bounds(&message) {
            // Checked before anything reads the message: no term or index arithmetic may
            // come near overflowing on a peer's values.
            tracing::warn!(target: LOG_TARGET, node = %self.id, from = %message.from, "Dropping malformed message: {problem}");
            return;
        }
        tracing::debug!(target: LOG_TARGET, node = %self.id, "Received {}", DisplayMessage(&message));
        // Pre-vote messages never change a term: they are answered or counted here.
        match message.body {
            MessageBody::PreVote { last_log_id } => {
                self.handle_pre_vote(message.from, message.term, last_log_id);
                return;
            }
            MessageBody::PreVoteResponse { granted: true } => {
                if message.term == self.term.next() {
                    self.handle_pre_vote_granted(message.from);
                }
                return;
            }
            MessageBody::PreVoteResponse { granted: false } if message.term <= self.term => return,
            MessageBody::RequestVote { leadership_transfer, .. }
                if self.config.pre_vote
                    && message.term > self.term
                    && self.in_leader_lease()
                    && !(leadership_transfer && self.configuration.is_voter(message.from)) =>
            {
                // A leader was heard from within the minimum election timeout: this election
                // can only disrupt it (Raft thesis §4.2.3). Only a voter the leader handed
                // leadership to may stand now; a node removed from the configuration cannot
                // use a late TimeoutNow to depose the leader.
                tracing::debug!(target: LOG_TARGET, node = %self.id, "Ignoring a vote request from {} for term {}: a leader is active", message.from, message.term);
                return;
            }
            _ => {}
        }
        if message.term > self.term
            && self.role == Role::Leader
            && !self.configuration.is_member(message.from)
        {
            // A node this leader's configuration (the latest in the log) does not list, such
            // as a removed member that stood after a late TimeoutNow, cannot depose it: only
            // members' terms matter to elections it takes part in.
            tracing::debug!(target: LOG_TARGET, node = %self.id, from = %message.from, "Ignoring a message of term {} from a node outside the configuration", message.term);
            return;
        }
        if message.term > self.term {
            let leader = match message.body {
                MessageBody::AppendEntries { .. } | MessageBody::InstallSnapshot { .. } => {
                    Some(message.from)
                }
                _ => None,
            };
            self.become_follower(message.term, leader);
        } else if message.term < self.term {
            self.reply_to_stale(message);
            return;
        }
        if matches!(
            message.body,
            MessageBody::AppendEntries { .. } | MessageBody::InstallSnapshot { .. }
        ) {
            // Election safety (§5.2): a term has one leader. A second claimant is refused
            // here, before this node follows it; its own state is intact, so it carries on.
            let known = if self.role == Role::Leader { Some(self.id) } else { self.leader_of_term };
            if let Some(known) = known.filter(|known| *known != message.from) {
                let term = self.term;
                self.refuse_violation(
                    message.from,
                    format_args!("it claims to lead term {term}, which {known} leads"),
                );
                return;
            }
        }
        match message.body {
            MessageBody::RequestVote { last_log_id, .. } => {
                self.handle_request_vote(message.from, last_log_id);
            }
            MessageBody::TimeoutNow => self.handle_timeout_now(message.from),
            MessageBody::RequestVoteResponse { granted } => {
                self.handle_vote_response(message.from, granted);
            }
            // Handled above: a refusal from a newer term has made this node a follower.
            MessageBody::PreVote { .. } | MessageBody::PreVoteResponse { .. } => {}
            MessageBody::AppendEntries { prev_log_id, entries, leader_commit, round } => {
                let max_entry_bytes = self.config.max_entry_bytes;
                if let Err(problem) =
                    check_entries(message.term, prev_log_id, &entries, max_entry_bytes)
                {
                    tracing::warn!(target: LOG_TARGET, node = %self.id, from = %message.from, "Dropping malformed AppendEntries: {problem}");
                    return;
                }
                self.handle_append_entries(
                    message.from,
                    prev_log_id,
                    entries,
                    leader_commit,
                    round,
                );
            }
            MessageBody::AppendEntriesResponse { result, round } => {
                self.on_round_answered(message.from, round);
                self.handle_append_response(message.from, result);
            }
            MessageBody::ReadIndex { request, lease } => {
                self.handle_read_index(message.from, request, lease);
            }
            MessageBody::ReadIndexResponse { request, read_index } => {
                self.handle_read_index_response(message.from, request, read_index);
            }
            MessageBody::InstallSnapshot { snapshot, offset, data } => {
                self.handle_install_snapshot(message.from, snapshot, offset, data);
            }
            MessageBody::InstallSnapshotResponse {
                snapshot,
                last_included,
                received,
                installed,
                gap,
            } => {
                self.handle_install_snapshot_response(
                    message.from,
                    snapshot,
                    last_included,
                    received,
                    installed,
                    gap,
                );
            }
        }
    }

    /// Appends a client command to the leader's log and returns its index. Replication starts
    /// with the next [`Ready`].
    pub fn propose(&mut self, command: Bytes) -> Result<LogIndex, ProposeError> {
        if self.role != Role::Leader {
            return Err(ProposeError::NotLeader { leader_hint: self.leader_id });
        }
        if let Some(target) = self.leadership_transfer_target() {
            return Err(ProposeError::LeadershipTransfer { target });
        }
        if command.len() > self.config.max_entry_bytes {
            return Err(ProposeError::TooLarge {
                size: command.len(),
                max: self.config.max_entry_bytes,
            });
        }
        Ok(self.append_own_entry(EntryPayload::Command(command)))
    }

    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.id
    }

    /// The configuration the node runs with.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The current role.
    pub fn role(&self) -> Role {
        self.role
    }

    /// The current term.
    pub fn term(&self) -> Term {
        self.term
    }

    /// The leader of the current term, if known.
    pub fn leader_id(&self) -> Option<NodeId> {
        self.leader_id
    }

    /// The candidate this node voted for in the current term.
    pub fn voted_for(&self) -> Option<NodeId> {
        self.voted_for
    }

    /// The highest index known to be committed.
    pub fn commit_index(&self) -> LogIndex {
        self.commit_index
    }

    /// The highest index the caller has confirmed applied.
    pub fn applied_index(&self) -> LogIndex {
        self.applied_index
    }

    /// The term and index of the last entry in the log.
    pub fn last_log_id(&self) -> LogId {
        self.log.last_log_id()
    }

    /// The entry at `index`, if this node holds it.
    pub fn entry(&self, index: LogIndex) -> Option<&Entry> {
        self.log.entry(index)
    }

    /// How many elections this node has started.
    pub fn elections_started(&self) -> u64 {
        self.elections_started
    }

    /// How many peer messages this node refused because no correct peer could have sent
    /// them (a second leader claiming this node's term, a leader overwriting committed
    /// entries). Each is logged at error level with the sender.
    pub fn protocol_violations(&self) -> u64 {
        self.protocol_violations
    }

    /// Records and logs a peer message refused for breaking the protocol.
    pub(crate) fn refuse_violation(&mut self, from: NodeId, what: std::fmt::Arguments<'_>) {
        self.protocol_violations += 1;
        tracing::error!(target: LOG_TARGET, node = %self.id, from = %from, "Refusing a message from {from} that no correct peer sends: {what} (a buggy or compromised peer)");
    }

    /// The voting members, sorted.
    pub fn voters(&self) -> &[NodeId] {
        self.configuration.voters()
    }

    /// Leader only: each follower's match index (the highest index known replicated there).
    pub fn follower_match_indexes(&self) -> Vec<(NodeId, LogIndex)> {
        self.progress.iter().map(|(id, progress)| (*id, progress.match_index)).collect()
    }

    /// The other members.
    fn peers(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.configuration.members().iter().copied().filter(move |id| *id != self.id)
    }

    fn hard_state(&self) -> HardState {
        HardState { term: self.term, voted_for: self.voted_for, commit_index: self.commit_index }
    }

    /// Queues a message that may be sent before anything is persisted.
    fn send(&mut self, to: NodeId, body: MessageBody) {
        let message = Message { from: self.id, to, term: self.term, body };
        tracing::debug!(target: LOG_TARGET, node = %self.id, "Sending {}", DisplayMessage(&message));
        self.messages.push(message);
    }

    /// Queues a pre-vote message, whose term is the term asked about rather than this node's,
    /// to be sent at once (pre-votes change no durable state).
    fn send_with_term(&mut self, to: NodeId, term: Term, body: MessageBody) {
        let message = Message { from: self.id, to, term, body };
        tracing::debug!(target: LOG_TARGET, node = %self.id, "Sending {}", DisplayMessage(&message));
        self.messages.push(message);
    }

    /// Queues a message that may only be sent once this node's state is persisted.
    fn send_after_persist(&mut self, to: NodeId, body: MessageBody) {
        let message = Message { from: self.id, to, term: self.term, body };
        tracing::debug!(target: LOG_TARGET, node = %self.id, "Sending (after persist) {}", DisplayMessage(&message));
        self.persisted_messages.push(message);
    }

    fn reset_election_deadline(&mut self) {
        let timeout = self
            .rng
            .in_range(self.config.election_timeout_min_ms, self.config.election_timeout_max_ms);
        self.election_deadline_ms = self.now_ms + timeout;
    }

    /// Adopts `term` (when newer) and follows `leader` (when known).
    fn become_follower(&mut self, term: Term, leader: Option<NodeId>) {
        let keeps_leader = self.role == Role::Follower
            && term == self.term
            && leader.is_some()
            && self.leader_id == leader;
        if !keeps_leader {
            // The leadership the pending reads depend on is over (for a follower: its reads
            // were forwarded to a leader whose answers it would now drop).
            self.fail_pending_reads();
        }
        self.set_term(term);
        if self.role != Role::Follower {
            tracing::info!(target: LOG_TARGET, node = %self.id, "Becoming follower in term {}", self.term);
        }
        self.role = Role::Follower;
        if let Some(leader) = leader {
            self.note_leader(leader);
        }
        self.leader_id = leader;
        self.votes_granted.clear();
        self.pre_votes_granted = None;
        self.progress.clear();
        self.transfer = None;
        self.reset_election_deadline();
    }

    /// Appends an entry of the current term to the leader's own log.
    #[inline]
    fn append_own_entry(&mut self, payload: EntryPayload) -> LogIndex {
        if self.role != Role::Leader {
            not_the_leader(self.id, self.role);
        }
        let index = self.log.last_index().next();
        if let EntryPayload::Configuration(_) = &payload {
            return self.append_own_configuration(Entry { term: self.term, index, payload });
        }
        self.log.append(Entry { term: self.term, index, payload });
        index
    }

    /// The rare path of [`append_own_entry`](Self::append_own_entry), kept out of the
    /// proposal path: a configuration entry is used from the moment it is appended.
    #[cold]
    #[inline(never)]
    fn append_own_configuration(&mut self, entry: Entry) -> LogIndex {
        let index = entry.index;
        self.configurations.on_append(&entry);
        self.log.append(entry);
        self.refresh_configuration();
        index
    }

    /// Answers a message from an older term so that its sender learns the newer term.
    fn reply_to_stale(&mut self, message: Message) {
        match message.body {
            MessageBody::RequestVote { .. } => {
                self.send_after_persist(
                    message.from,
                    MessageBody::RequestVoteResponse { granted: false },
                );
            }
            MessageBody::AppendEntries { prev_log_id, round, .. } => {
                let hint = crate::message::ConflictHint {
                    conflict_term: None,
                    first_index: self.log.last_index().next(),
                };
                self.send_after_persist(
                    message.from,
                    MessageBody::AppendEntriesResponse {
                        result: crate::message::AppendResponse::Rejected {
                            rejected_prev_index: prev_log_id.index,
                            hint,
                        },
                        round,
                    },
                );
            }
            MessageBody::ReadIndex { request, .. } => {
                // The asking node learns of the newer term from the answer.
                self.send(
                    message.from,
                    MessageBody::ReadIndexResponse { request, read_index: None },
                );
            }
            MessageBody::InstallSnapshot { snapshot, .. } => {
                self.send_after_persist(
                    message.from,
                    MessageBody::InstallSnapshotResponse {
                        snapshot: snapshot.id,
                        last_included: snapshot.meta.last_included,
                        received: 0,
                        installed: false,
                        gap: false,
                    },
                );
            }
            MessageBody::RequestVoteResponse { .. }
            | MessageBody::TimeoutNow
            | MessageBody::AppendEntriesResponse { .. }
            | MessageBody::ReadIndexResponse { .. }
            | MessageBody::InstallSnapshotResponse { .. }
            | MessageBody::PreVote { .. }
            | MessageBody::PreVoteResponse { .. } => {}
        }
    }
}

/// Stops the node: it was about to append an entry of its own while not leading.
#[cold]
#[inline(never)]
fn not_the_leader(id: NodeId, role: Role) -> ! {
    panic!("invariant violated: only a leader appends entries of its own ({id} is a {role})");
}

/// The log a node starts with, given its stored snapshot and entries: the base the entries
/// follow, and the entries. Entries that disagree with the snapshot (a stored log reset to a
/// received snapshot that a crash cut short) are dropped; entries that leave a gap after the
/// snapshot, or start after index 1 without one, are corruption.
fn reconcile_with_snapshot(
    snapshot: Option<&Snapshot>,
    entries: Vec<Entry>,
) -> Result<(LogId, Vec<Entry>), String> {
    let Some(first) = entries.first().map(|entry| entry.index) else {
        return Ok((snapshot.map(|s| s.meta.last_included).unwrap_or_default(), entries));
    };
    let Some(snapshot) = snapshot else {
        if first != LogIndex(1) {
            return Err(format!(
                "the stored log starts at index {first} and no snapshot covers the entries before it"
            ));
        }
        return Ok((LogId::default(), entries));
    };
    let last = snapshot.meta.last_included;
    if first > last.index.next() {
        return Err(format!(
            "the stored log starts at index {first}, after a gap behind the snapshot through {last}"
        ));
    }
    let offset = (last.index.0 + 1 - first.0) as usize;
    // The stored entry at the snapshot's last index, if any, must be the snapshot's.
    let holds_last =
        first <= last.index && entries.get(offset - 1).is_some_and(|entry| entry.log_id() == last);
    if first == last.index.next() || holds_last {
        if first == LogIndex(1) {
            return Ok((LogId::default(), entries));
        }
        if first == last.index.next() {
            return Ok((last, entries));
        }
        // The term before the first stored entry is unknown: that entry becomes the base.
        let mut entries = entries;
        let base = entries.remove(0).log_id();
        return Ok((base, entries));
    }
    // The log does not hold the snapshot's last entry: nothing in it is known to follow it.
    Ok((last, Vec::new()))
}

/// Checks that `entries` can follow `prev_log_id` in a log sent by a leader of `term`: indexes
/// contiguous from `prev_log_id.index + 1`, terms non-decreasing, between the previous entry's
/// term and the leader's; and that no command is larger than `max_entry_bytes` (a leader
/// never proposes one, and storage would refuse it and stop the node: it is refused here,
/// before anything is stored).
fn check_entries(
    term: Term,
    prev_log_id: LogId,
    entries: &[Entry],
    max_entry_bytes: usize,
) -> Result<(), String> {
    let mut previous = prev_log_id;
    for entry in entries {
        if let EntryPayload::Command(command) = &entry.payload
            && command.len() > max_entry_bytes
        {
            return Err(format!(
                "entry {} carries a command of {} bytes, above max_entry_bytes ({max_entry_bytes})",
                entry.log_id(),
                command.len()
            ));
        }
        if entry.index != previous.index.next() {
            return Err(format!("entry {} does not follow {previous}", entry.log_id()));
        }
        if entry.term < previous.term || entry.term > term {
            return Err(format!(
                "entry {} has a term outside [{}, {term}]",
                entry.log_id(),
                previous.term
            ));
        }
        previous = entry.log_id();
    }
    Ok(())
}

/// A one-line rendering of a message for debug logs (entries are counted, not printed).
struct DisplayMessage<'a>(&'a Message);

impl fmt::Display for DisplayMessage<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let message = self.0;
        write!(f, "{} -> {} term {}: ", message.from, message.to, message.term)?;
        match &message.body {
            MessageBody::RequestVote { last_log_id, leadership_transfer } => {
                let transfer = if *leadership_transfer { " (leadership transfer)" } else { "" };
                write!(f, "RequestVote last_log={last_log_id}{transfer}")
            }
            MessageBody::TimeoutNow => f.write_str("TimeoutNow"),
            MessageBody::RequestVoteResponse { granted } => {
                write!(f, "RequestVoteResponse granted={granted}")
            }
            MessageBody::PreVote { last_log_id } => write!(f, "PreVote last_log={last_log_id}"),
            MessageBody::PreVoteResponse { granted } => {
                write!(f, "PreVoteResponse granted={granted}")
            }
            MessageBody::AppendEntries { prev_log_id, entries, leader_commit, round } => write!(
                f,
                "AppendEntries prev={prev_log_id} entries={} leader_commit={leader_commit} round={round}",
                entries.len()
            ),
            MessageBody::AppendEntriesResponse { result, round } => {
                write!(f, "AppendEntriesResponse {result:?} round={round}")
            }
            MessageBody::ReadIndex { request, lease } => {
                write!(f, "ReadIndex request={request} lease={lease}")
            }
            MessageBody::ReadIndexResponse { request, read_index } => match read_index {
                Some(log_id) => {
                    write!(f, "ReadIndexResponse request={request} read_index={log_id}")
                }
                None => write!(f, "ReadIndexResponse request={request} refused"),
            },
            MessageBody::InstallSnapshot { snapshot, offset, data } => write!(
                f,
                "InstallSnapshot {} last_included={} bytes {offset}..{} of {}",
                snapshot.id,
                snapshot.meta.last_included,
                // A peer's offset may be anything: this runs before the message is checked.
                offset.saturating_add(data.len() as u64),
                snapshot.size
            ),
            MessageBody::InstallSnapshotResponse {
                snapshot,
                last_included,
                received,
                installed,
                gap,
            } => write!(
                f,
                "InstallSnapshotResponse {snapshot} last_included={last_included} received={received} installed={installed} gap={gap}"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::SnapshotMeta;

    fn entry(term: u64, index: u64) -> Entry {
        Entry { term: Term(term), index: LogIndex(index), payload: EntryPayload::Blank }
    }

    #[test]
    fn malformed_append_entries_are_recognised() {
        let prev = LogId::new(Term(2), LogIndex(4));
        let check = |entries: &[Entry]| check_entries(Term(3), prev, entries, 4);
        assert!(check(&[entry(2, 5), entry(3, 6)]).is_ok());
        assert!(check(&[entry(2, 6)]).is_err(), "gap after prev");
        assert!(check(&[entry(1, 5)]).is_err(), "term below prev's");
        assert!(check(&[entry(4, 5)]).is_err(), "term above the leader's");
        assert!(check(&[entry(3, 5), entry(2, 6)]).is_err(), "decreasing");
        let command = |bytes: &'static [u8]| Entry {
            term: Term(3),
            index: LogIndex(5),
            payload: EntryPayload::Command(Bytes::from_static(bytes)),
        };
        assert!(check(&[command(b"four")]).is_ok(), "exactly at max_entry_bytes");
        assert!(check(&[command(b"fives")]).is_err(), "a command above max_entry_bytes");
    }

    #[test]
    fn a_follower_ignores_malformed_append_entries() {
        let config = Config::default();
        let mut core =
            RaftCore::new(NodeId(2), [NodeId(1), NodeId(2)], config, InitialState::default(), 1)
                .expect("valid configuration");
        core.tick(0);
        core.step(Message {
            from: NodeId(1),
            to: NodeId(2),
            term: Term(1),
            body: MessageBody::AppendEntries {
                prev_log_id: LogId::default(),
                entries: vec![entry(1, 2)],
                leader_commit: LogIndex(2),
                round: crate::types::HeartbeatRound(0),
            },
        });
        assert_eq!(core.last_log_id().index, LogIndex(0));
        assert_eq!(core.commit_index(), LogIndex(0));
    }

    /// A command above `max_entry_bytes` from a leader is refused before anything is stored
    /// (storage would refuse it and stop the node): the whole AppendEntries is dropped.
    #[test]
    fn a_follower_refuses_an_entry_above_max_entry_bytes_before_storing_anything() {
        let config = Config { max_entry_bytes: 4, ..Config::default() };
        let mut core =
            RaftCore::new(NodeId(2), [NodeId(1), NodeId(2)], config, InitialState::default(), 1)
                .expect("valid configuration");
        core.tick(0);
        let command = |bytes: &'static [u8], index| Entry {
            term: Term(1),
            index: LogIndex(index),
            payload: EntryPayload::Command(Bytes::from_static(bytes)),
        };
        let append = |entries| Message {
            from: NodeId(1),
            to: NodeId(2),
            term: Term(1),
            body: MessageBody::AppendEntries {
                prev_log_id: LogId::default(),
                entries,
                leader_commit: LogIndex(0),
                round: crate::types::HeartbeatRound(0),
            },
        };
        core.step(append(vec![command(b"four", 1), command(b"fives", 2)]));
        assert_eq!(core.last_log_id(), LogId::default(), "a part of it was stored");
        assert!(core.ready().entries.is_empty());
        core.step(append(vec![command(b"four", 1)]));
        assert_eq!(core.last_log_id(), LogId::new(Term(1), LogIndex(1)));
    }

    /// A snapshot declaring more than `max_snapshot_bytes` is refused at its first chunk:
    /// nothing of it is held; one of exactly the limit is received and installed.
    #[test]
    fn a_snapshot_above_max_snapshot_bytes_is_refused() {
        let config = Config { max_snapshot_bytes: 10, ..Config::default() };
        let mut core =
            RaftCore::new(NodeId(2), [NodeId(1), NodeId(2)], config, InitialState::default(), 1)
                .expect("valid configuration");
        core.tick(0);
        let chunk = |total_len: u64, data: &'static [u8]| Message {
            from: NodeId(1),
            to: NodeId(2),
            term: Term(1),
            body: MessageBody::InstallSnapshot {
                snapshot: Snapshot::new(
                    SnapshotMeta {
                        last_included: LogId::new(Term(1), LogIndex(5)),
                        configuration: Configuration::of_voters([NodeId(1), NodeId(2)]),
                    },
                    total_len,
                    crc32c::crc32c(data),
                ),
                offset: 0,
                data: Bytes::from_static(data),
            },
        };
        core.step(chunk(11, b"0123456789"));
        assert!(core.incoming_snapshot.is_none(), "a transfer above the limit was started");
        assert!(core.ready().messages.is_empty(), "a refused transfer was answered");
        core.step(chunk(10, b"0123456789"));
        assert_eq!(core.commit_index(), LogIndex(5), "a snapshot at the limit was installed");
    }

    /// A follower `node2` of `node1` in term 1, and an InstallSnapshot of bytes `offset..` of
    /// a snapshot through 5@1 whose whole bytes are `whole`, from `from` in `term`.
    fn snapshot_follower() -> RaftCore {
        let mut core = RaftCore::new(
            NodeId(2),
            [NodeId(1), NodeId(2), NodeId(3)],
            Config::default(),
            InitialState::default(),
            1,
        )
        .expect("valid configuration");
        core.tick(0);
        core
    }

    fn snapshot_chunk(
        from: u64,
        term: u64,
        whole: &'static [u8],
        offset: usize,
        len: usize,
    ) -> Message {
        let meta = SnapshotMeta {
            last_included: LogId::new(Term(1), LogIndex(5)),
            configuration: Configuration::of_voters([NodeId(1), NodeId(2), NodeId(3)]),
        };
        Message {
            from: NodeId(from),
            to: NodeId(2),
            term: Term(term),
            body: MessageBody::InstallSnapshot {
                snapshot: Snapshot::of_bytes(meta, whole),
                offset: offset as u64,
                data: Bytes::from_static(&whole[offset..offset + len]),
            },
        }
    }

    /// The `received` of the InstallSnapshotResponses in `messages`, and whether any says
    /// installed.
    fn snapshot_answers(messages: &[Message]) -> (Vec<u64>, bool) {
        let mut received = Vec::new();
        let mut installed = false;
        for message in messages {
            if let MessageBody::InstallSnapshotResponse {
                received: count, installed: done, ..
            } = message.body
            {
                received.push(count);
                installed |= done;
            }
        }
        (received, installed)
    }

    /// The follower verifies the whole snapshot's checksum before installing it: bytes that
    /// do not match what the leader announced are dropped, and the follower says it holds
    /// nothing of them.
    #[test]
    fn a_snapshot_whose_bytes_fail_the_checksum_is_not_installed() {
        let mut core = snapshot_follower();
        let mut message = snapshot_chunk(1, 1, b"abcdefgh", 0, 8);
        if let MessageBody::InstallSnapshot { data, .. } = &mut message.body {
            *data = Bytes::from_static(b"abcdefgX");
        }
        core.step(message);
        let ready = core.ready();
        assert!(ready.snapshot.is_none(), "bytes that fail the checksum were installed");
        assert_eq!(snapshot_answers(&ready.messages), (vec![0], false));
        assert!(snapshot_answers(&ready.persisted_messages).0.is_empty());
        assert_eq!(core.commit_index(), LogIndex(0));
        core.advance(ready.ack);
        // The same bytes, intact, install.
        core.step(snapshot_chunk(1, 1, b"abcdefgh", 0, 8));
        let ready = core.ready();
        assert_eq!(ready.snapshot.map(|snapshot| snapshot.size), Some(8));
        assert_eq!(ready.received_chunks.len(), 1);
    }

    /// A transfer is one leader's, in one term: a change of term drops it, and the next
    /// leader's chunk from the middle (of a snapshot with the same description, even) is not
    /// put after what the earlier one sent.
    #[test]
    fn a_term_change_drops_an_incoming_snapshot_transfer() {
        let mut core = snapshot_follower();
        core.step(snapshot_chunk(1, 1, b"abcdefgh", 0, 4));
        let ready = core.ready();
        assert_eq!(snapshot_answers(&ready.messages), (vec![4], false));
        assert_eq!(ready.received_chunks.len(), 1);
        core.advance(ready.ack);
        assert!(core.incoming_snapshot.is_some());
        core.step(Message {
            from: NodeId(3),
            to: NodeId(2),
            term: Term(2),
            body: MessageBody::AppendEntries {
                prev_log_id: LogId::default(),
                entries: Vec::new(),
                leader_commit: LogIndex(0),
                round: HeartbeatRound(1),
            },
        });
        assert_eq!(core.term(), Term(2));
        assert!(core.incoming_snapshot.is_none(), "a term change kept the transfer");
        let ready = core.ready();
        core.advance(ready.ack);
        core.step(snapshot_chunk(3, 2, b"abcdefgh", 4, 4));
        let ready = core.ready();
        assert_eq!(snapshot_answers(&ready.messages), (vec![0], false), "spliced across terms");
        assert!(ready.received_chunks.is_empty() && ready.snapshot.is_none());
    }

    #[test]
    fn a_node_drops_messages_not_meant_for_it_but_hears_leaders_outside_its_configuration() {
        let heartbeat = |from: u64, to: u64| Message {
            from: NodeId(from),
            to: NodeId(to),
            term: Term(1),
            body: MessageBody::AppendEntries {
                prev_log_id: LogId::default(),
                entries: vec![entry(1, 1)],
                leader_commit: LogIndex(0),
                round: crate::types::HeartbeatRound(0),
            },
        };
        // (from, to): addressed to node3; from itself.
        for (from, to) in [(1, 3), (2, 2)] {
            let members = [NodeId(1), NodeId(2), NodeId(3)];
            let mut core =
                RaftCore::new(NodeId(2), members, Config::default(), InitialState::default(), 1)
                    .expect("valid configuration");
            core.tick(0);
            core.step(heartbeat(from, to));
            assert_eq!(core.last_log_id(), LogId::default(), "node{from} to node{to} was taken");
            assert_eq!(core.leader_id(), None, "node{from} to node{to} was taken");
        }
        // A leader this node's configuration does not list yet (it was added in entries this
        // node has not received): followed, or a lagging node could never catch up (§4.1).
        let members = [NodeId(1), NodeId(2), NodeId(3)];
        let mut core =
            RaftCore::new(NodeId(2), members, Config::default(), InitialState::default(), 1)
                .expect("valid configuration");
        core.tick(0);
        core.step(heartbeat(9, 2));
        assert_eq!(core.leader_id(), Some(NodeId(9)));
        assert_eq!(core.last_log_id(), LogId::new(Term(1), LogIndex(1)));
    }

    #[test]
    fn a_proposal_up_to_the_entry_size_limit_is_accepted() {
        let config = Config { max_entry_bytes: 4, ..Config::default() };
        let mut core =
            RaftCore::new(NodeId(1), [NodeId(1)], config.clone(), InitialState::default(), 1)
                .expect("valid configuration");
        assert_eq!(core.config().max_entry_bytes, 4, "the core keeps the configuration it got");
        assert_eq!(core.voters(), &[NodeId(1)]);
        core.tick(0);
        core.tick(core.next_deadline_ms());
        assert_eq!(core.role(), Role::Leader, "a single node elects itself");
        assert!(core.propose(Bytes::from_static(b"four")).is_ok(), "exactly at the limit");
        assert!(matches!(
            core.propose(Bytes::from_static(b"fives")),
            Err(ProposeError::TooLarge { size: 5, max: 4 })
        ));
    }

    #[test]
    fn a_malformed_append_entries_of_a_newer_term_still_names_its_leader() {
        let mut core = RaftCore::new(
            NodeId(2),
            [NodeId(1), NodeId(2)],
            Config::default(),
            InitialState::default(),
            1,
        )
        .expect("valid configuration");
        core.tick(0);
        // Only the leader of term 3 sends AppendEntries in term 3, whatever their entries.
        core.step(Message {
            from: NodeId(1),
            to: NodeId(2),
            term: Term(3),
            body: MessageBody::AppendEntries {
                prev_log_id: LogId::default(),
                entries: vec![entry(3, 2)],
                leader_commit: LogIndex(0),
                round: crate::types::HeartbeatRound(0),
            },
        });
        assert_eq!((core.term(), core.leader_id()), (Term(3), Some(NodeId(1))));
        assert_eq!(core.last_log_id(), LogId::default(), "the malformed entries were taken");
    }

    #[test]
    fn a_stored_log_that_holds_the_snapshots_last_entry_is_kept_after_it() {
        let snapshot_through = |term, index| {
            let meta = SnapshotMeta {
                last_included: LogId::new(Term(term), LogIndex(index)),
                configuration: Configuration::of_voters([NodeId(1)]),
            };
            Snapshot::of_bytes(meta, b"")
        };
        let entries = |from: u64| (from..=5).map(|index| entry(1, index)).collect::<Vec<_>>();
        // The whole log from index 1, holding 3@1: kept as it is.
        let kept = reconcile_with_snapshot(Some(&snapshot_through(1, 3)), entries(1));
        assert_eq!(kept, Ok((LogId::default(), entries(1))));
        // From index 2: the first stored entry becomes the base.
        let kept = reconcile_with_snapshot(Some(&snapshot_through(1, 3)), entries(2));
        assert_eq!(kept, Ok((LogId::new(Term(1), LogIndex(2)), entries(3))));
        // Holding 3@1 where the snapshot ends at 3@2: nothing in the log follows it.
        let dropped = reconcile_with_snapshot(Some(&snapshot_through(2, 3)), entries(1));
        assert_eq!(dropped, Ok((LogId::new(Term(2), LogIndex(3)), Vec::new())));
    }

    #[test]
    fn a_core_refuses_an_invalid_start() {
        let bad_config = Config { heartbeat_interval_ms: 500, ..Config::default() };
        let result = RaftCore::new(NodeId(1), [NodeId(1)], bad_config, InitialState::default(), 1);
        assert!(matches!(result, Err(StartError::Config(_))));
        let result =
            RaftCore::new(NodeId(3), [NodeId(1)], Config::default(), InitialState::default(), 1);
        assert!(matches!(result, Err(StartError::Membership { .. })));
        let gap = InitialState { entries: vec![entry(1, 2)], ..InitialState::default() };
        let result = RaftCore::new(NodeId(1), [NodeId(1)], Config::default(), gap, 1);
        assert!(matches!(result, Err(StartError::Storage(StorageError::Corrupt { .. }))));
    }

    #[test]
    fn stored_terms_and_indexes_beyond_the_bounds_are_corruption() {
        let beyond = |initial: InitialState| {
            let result = RaftCore::new(NodeId(1), [NodeId(1)], Config::default(), initial, 1);
            matches!(result, Err(StartError::Storage(StorageError::Corrupt { .. })))
        };
        let hard_state =
            HardState { term: Term(u64::MAX), voted_for: None, commit_index: LogIndex(0) };
        assert!(beyond(InitialState { hard_state, ..InitialState::default() }));
        let entries = vec![entry(1, 1), entry(u64::MAX, 2)];
        assert!(beyond(InitialState { entries, ..InitialState::default() }));
        let snapshot = Snapshot::of_bytes(
            SnapshotMeta {
                last_included: LogId::new(Term(1), LogIndex(u64::MAX)),
                configuration: Configuration::of_voters([NodeId(1)]),
            },
            b"",
        );
        let entries = vec![entry(1, u64::MAX)];
        assert!(beyond(InitialState {
            snapshot: Some(snapshot),
            entries,
            ..InitialState::default()
        }));
    }

    #[test]
    fn stored_entries_of_a_newer_term_raise_the_term_without_a_vote() {
        let hard_state =
            HardState { term: Term(1), voted_for: Some(NodeId(1)), commit_index: LogIndex(0) };
        let initial = InitialState {
            hard_state,
            snapshot: None,
            entries: vec![entry(1, 1), entry(3, 2)],
            ..InitialState::default()
        };
        let core = RaftCore::new(NodeId(1), [NodeId(1), NodeId(2)], Config::default(), initial, 1)
            .expect("a valid log");
        assert_eq!(core.term(), Term(3));
        assert_eq!(core.voted_for(), None);
    }

    /// A node can store a snapshot through an entry whose log write a crash then lost (it
    /// applies committed entries while their sync is in flight). At start the log is dropped
    /// for the snapshot, and storage is told in the first Ready, before any entry is appended
    /// after the snapshot: otherwise the stored entries would end before the new ones begin.
    #[test]
    fn a_snapshot_past_the_stored_log_resets_the_stored_log() {
        let snapshot = Snapshot::of_bytes(
            SnapshotMeta {
                last_included: LogId::new(Term(2), LogIndex(7)),
                configuration: Configuration::of_voters([NodeId(1), NodeId(2)]),
            },
            b"state through 7",
        );
        let hard_state = HardState { term: Term(2), voted_for: None, commit_index: LogIndex(7) };
        let entries = (1..=5).map(|index| entry(2, index)).collect();
        let initial = InitialState {
            hard_state,
            snapshot: Some(snapshot),
            entries,
            ..InitialState::default()
        };
        let mut core =
            RaftCore::new(NodeId(1), [NodeId(1), NodeId(2)], Config::default(), initial, 1)
                .expect("a log the snapshot covers");
        assert_eq!(core.last_log_id(), LogId::new(Term(2), LogIndex(7)));
        assert!(core.has_ready());
        let ready = core.ready();
        assert_eq!(ready.log_reset, Some(LogId::new(Term(2), LogIndex(7))));
        assert!(ready.entries.is_empty());
        core.advance(ready.ack);
        assert!(core.ready().log_reset.is_none(), "the reset is handed out once");
    }
}

#[cfg(test)]
mod pre_vote_tests {
    use super::*;

    fn voter_with_log(terms: &[u64]) -> RaftCore {
        let entries = log::blank_entries_with_terms(terms);
        let hard_state = HardState { term: Term(2), voted_for: None, commit_index: LogIndex(0) };
        let initial =
            InitialState { hard_state, snapshot: None, entries, ..InitialState::default() };
        let mut core =
            RaftCore::new(NodeId(1), [NodeId(1), NodeId(2)], Config::default(), initial, 3)
                .expect("a valid log");
        core.tick(0);
        core
    }

    fn pre_vote_answer(core: &mut RaftCore, candidate_last: LogId) -> (Term, bool) {
        core.step(Message {
            from: NodeId(2),
            to: NodeId(1),
            term: Term(3),
            body: MessageBody::PreVote { last_log_id: candidate_last },
        });
        let ready = core.ready();
        assert!(ready.hard_state.is_none(), "a pre-vote changes no durable state");
        let answer = ready.messages.into_iter().next().expect("an answer");
        match answer.body {
            MessageBody::PreVoteResponse { granted } => (answer.term, granted),
            other => panic!("expected a PreVoteResponse, got {other:?}"),
        }
    }

    #[test]
    fn pre_votes_follow_the_election_restriction_and_change_no_term() {
        let mut core = voter_with_log(&[1, 2]);
        let behind = LogId::new(Term(1), LogIndex(5));
        assert_eq!(pre_vote_answer(&mut core, behind), (Term(2), false));
        let level = LogId::new(Term(2), LogIndex(2));
        assert_eq!(pre_vote_answer(&mut core, level), (Term(3), true));
        assert_eq!(core.term(), Term(2), "answering a pre-vote raised the term");
        assert_eq!(core.voted_for(), None, "answering a pre-vote cast a vote");
    }
}
