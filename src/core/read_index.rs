//! Linearizable reads without log writes: ReadIndex, follower reads and leases (Raft thesis
//! §6.4).
//!
//! A read may be served from a node's state machine once that has applied everything that
//! was committed when the read arrived, *and* the node knows nothing newer was committed
//! elsewhere. The leader knows the first part (its commit index, once an entry of its own
//! term has committed: a new leader does not know what its predecessors committed before
//! that), and proves the second by confirming it still leads: a majority must answer a
//! heartbeat sent after the read arrived. Any newer leader needs votes from that majority,
//! and each of them had not yet heard of a newer term when it answered.
//!
//! - **ReadIndex** (leader): the read gets the commit index and the next heartbeat round;
//!   once a majority has echoed that round (or a later one) the read index is confirmed.
//!   Reads that arrive before the round's heartbeats leave share the round: a batch of reads
//!   costs one round.
//! - **Follower reads**: a follower forwards a batch of reads to its leader in one
//!   `ReadIndex` message; the leader confirms as above and answers with the read index, and
//!   the follower serves them from its own state machine once it has applied that far. The
//!   request itself counts as the follower's answer (it left after the reads arrived, in the
//!   leader's term), so when the leader and that follower are a majority (three voters) the
//!   leader answers at once, without a round: a follower read costs one round trip.
//! - **Leases** (opt-in, [`Config::lease_reads`](crate::Config)): a majority's answers to a
//!   round that started at `t` mean no other leader can be elected before `t +
//!   election_timeout_min - clock_drift_bound` (each of them ignores vote requests for the
//!   minimum election timeout after hearing from the leader). Until then, the leader confirms
//!   reads that accept a lease at once.
//!
//! Rounds: the leader's round counts up within its term whenever a round is asked for after
//! a message of the current round has left, so a read is only ever confirmed by answers to
//! messages sent after it arrived. Every `AppendEntries` carries the round; answers echo it.
//! A node keeps reads only while the leadership they depend on lasts: a leader that steps
//! down fails its reads, and a follower whose leader or term changes fails the reads it
//! forwarded (their answers would be dropped as stale).

use std::collections::{BTreeMap, VecDeque};

use super::{LOG_TARGET, RaftCore, Role};
use crate::error::ReadError;
use crate::message::MessageBody;
use crate::types::{HeartbeatRound, LogId, LogIndex, NodeId, ReadId};

/// How a read may be confirmed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ReadPolicy {
    /// Confirm leadership with a heartbeat round to a majority (ReadIndex, Raft thesis
    /// §6.4): safe whatever the clocks do.
    ReadIndex,
    /// Accept the leader's lease when it has one ([`Config::lease_reads`](crate::Config)),
    /// saving the round trip; fall back to a round otherwise. Safe only under the lease's
    /// clock assumption.
    Lease,
}

/// Mixed into a node's seed to draw where its read ids start (apart from its election
/// jitter, whose draws stay as they were).
const READ_ID_STREAM: u64 = 0x5245_4144_4944_5321;

/// How many round start times a leader remembers for its lease: rounds that many behind the
/// newest are forgotten, and an answer to one of them no longer extends the lease.
const REMEMBERED_ROUNDS: usize = 256;

/// Who asked for a read the leader is confirming.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ReadOrigin {
    /// This node.
    Local(ReadId),
    /// A follower, for its batch `request`.
    Remote { node: NodeId, request: ReadId },
}

/// A read the leader has given a read index and a round.
#[derive(Clone, Copy, Debug)]
struct RoundRead {
    origin: ReadOrigin,
    round: HeartbeatRound,
    read_index: LogIndex,
}

/// A batch of reads a follower forwarded to its leader.
#[derive(Clone, Debug)]
struct ForwardedBatch {
    leader: NodeId,
    sent_ms: u64,
    reads: Vec<ReadId>,
}

/// Every read a node is confirming, as leader or follower.
#[derive(Debug, Default)]
pub(super) struct Reads {
    /// The last read id given out. It starts at a random point, drawn from the node's seed
    /// (which differs every time a node starts): a follower that restarts must never take
    /// a late answer to its previous incarnation's request for an answer to a new one with
    /// the same id (found by the simulator: the stale read index served a stale read).
    next_id: u64,
    /// Leader: reads that arrived before an entry of its term committed.
    awaiting_commit: Vec<ReadOrigin>,
    /// Leader: reads waiting for a majority to answer their round, in round order.
    awaiting_round: VecDeque<RoundRead>,
    /// Leader: whether a message carrying the current round has left (a read arriving now
    /// needs a new round).
    round_carried: bool,
    /// Leader: a read asked for a round whose heartbeats have not been sent yet.
    round_unsent: bool,
    /// Leader: the highest round a majority has answered.
    quorum_round: HeartbeatRound,
    /// Leader: when each recent round started (for the lease), oldest first.
    round_started_ms: VecDeque<(HeartbeatRound, u64)>,
    /// Leader: the lease runs while the clock is below this.
    lease_until_ms: u64,
    /// Leader: it sent `TimeoutNow` in this term. The target's election may ignore the
    /// followers' lease, so this leader holds no lease again in its term.
    lease_forfeited: bool,
    /// Leader: reads forwarded by followers and not answered yet.
    remote_pending: usize,
    /// Follower: reads not yet forwarded, and whether each accepts a lease.
    unforwarded: Vec<(ReadId, bool)>,
    /// Follower: batches forwarded and not answered, by request id.
    forwarded: BTreeMap<ReadId, ForwardedBatch>,
    /// Reads with an outcome, for the caller to take.
    outcomes: Vec<(ReadId, Result<LogIndex, ReadError>)>,
    /// This node's reads without an outcome yet (each decided once, through `decide`).
    local_pending: usize,
}

impl Reads {
    /// No reads yet, with read ids starting at a random point drawn from `seed`.
    pub(super) fn new(seed: u64) -> Self {
        let next_id = super::rng::Rng::new(seed ^ READ_ID_STREAM).next_u64();
        Reads { next_id, ..Reads::default() }
    }

    /// One of this node's reads has an outcome, for the caller to take.
    fn decide(&mut self, read: ReadId, outcome: Result<LogIndex, ReadError>) {
        self.local_pending = self
            .local_pending
            .checked_sub(1)
            .expect("invariant: each read taken on is decided exactly once");
        self.outcomes.push((read, outcome));
    }
}

impl RaftCore {
    /// Asks for a linearizable read. The outcome (the read index to apply through before
    /// serving the read, or why there is none) comes later from
    /// [`take_read_outcomes`](Self::take_read_outcomes), named by the returned id; a leader
    /// without other voters (or with a lease the read may use) has it at once.
    ///
    /// A leader confirms the read itself; a follower that knows its leader forwards it there
    /// (with the next [`Ready`](super::Ready)). Fails at once with
    /// [`ReadError::NotLeader`] when no leader is known, or
    /// [`ReadError::TooManyPending`] past [`Config::max_pending_reads`](crate::Config).
    pub fn read_index(&mut self, policy: ReadPolicy) -> Result<ReadId, ReadError> {
        let limit = self.config.max_pending_reads;
        if self.reads.local_pending >= limit {
            return Err(ReadError::TooManyPending { limit });
        }
        match self.role {
            Role::Leader => {}
            Role::Follower if self.leader_id.is_some() => {
                let id = self.new_read_id();
                self.reads.unforwarded.push((id, policy == ReadPolicy::Lease));
                return Ok(id);
            }
            Role::Follower | Role::Candidate => {
                return Err(ReadError::NotLeader { leader_hint: self.leader_id });
            }
            Role::Stopped => return Err(ReadError::Shutdown),
        }
        let id = self.new_read_id();
        self.start_read(ReadOrigin::Local(id), policy == ReadPolicy::Lease);
        Ok(id)
    }

    /// The reads whose outcome is known since the last call: each read's index (serve it
    /// once the state machine has applied through it), or why it cannot be served.
    pub fn take_read_outcomes(&mut self) -> Vec<(ReadId, Result<LogIndex, ReadError>)> {
        std::mem::take(&mut self.reads.outcomes)
    }

    /// Every read this node has not handed out an outcome for, given up (the node stops).
    pub(crate) fn abandon_reads(&mut self) -> Vec<ReadId> {
        self.fail_pending_reads();
        self.take_read_outcomes().into_iter().map(|(read, _)| read).collect()
    }

    /// Whether the leader holds a lease now (see [`Config::lease_reads`](crate::Config)).
    pub fn has_lease(&self) -> bool {
        self.role == Role::Leader
            && self.config.lease_reads
            && !self.reads.lease_forfeited
            && self.now_ms < self.reads.lease_until_ms
    }

    /// The id of a read this node takes on (it is decided later, exactly once).
    fn new_read_id(&mut self) -> ReadId {
        self.reads.next_id = self.reads.next_id.wrapping_add(1);
        self.reads.local_pending += 1;
        ReadId(self.reads.next_id)
    }

    /// Whether an entry of the leader's term has committed: only then does its commit index
    /// cover everything any earlier leader committed (thesis §6.4, step 1).
    fn committed_in_term(&self) -> bool {
        self.log.term_at(self.commit_index) == Some(self.term)
    }

    /// Leader: gives a read its read index and round, or confirms it at once.
    fn start_read(&mut self, origin: ReadOrigin, accepts_lease: bool) {
        if !self.committed_in_term() {
            self.reads.awaiting_commit.push(origin);
            return;
        }
        if accepts_lease && self.has_lease() {
            self.deliver_read(origin, self.commit_index);
            return;
        }
        if let ReadOrigin::Remote { node, .. } = origin
            && self.majority_with(node)
        {
            // The follower's request left after its reads arrived, in this leader's term:
            // with this leader, that is a majority that had not moved to a newer term since
            // the reads began, which is what a round would prove.
            self.deliver_read(origin, self.commit_index);
            return;
        }
        #[cfg(feature = "sim")]
        if self.planted_read_without_round {
            // Planted bug: the leader takes its own word that it still leads.
            self.deliver_read(origin, self.commit_index);
            return;
        }
        let round = self.round_for_new_read();
        let read_index = self.commit_index;
        self.reads.awaiting_round.push_back(RoundRead { origin, round, read_index });
        // A leader without other voters confirms at once.
        self.confirm_reads();
    }

    /// Whether this leader and `follower` together are a majority (of each half, when joint).
    fn majority_with(&self, follower: NodeId) -> bool {
        let (own_id, configuration) = (self.id, &self.configuration);
        let answered = |id| (id == own_id || id == follower).then_some(true);
        configuration.vote_result(answered) == super::VoteResult::Won
    }

    /// Leader: the round a read arriving now waits for: the current one if no message of it
    /// has left yet, else a new one. Its heartbeats go out with the next Ready.
    fn round_for_new_read(&mut self) -> HeartbeatRound {
        if self.reads.round_carried {
            self.start_round();
        }
        self.reads.round_unsent = true;
        self.heartbeat_round
    }

    /// Leader: starts the next heartbeat round, remembering when (for the lease).
    pub(super) fn start_round(&mut self) {
        self.heartbeat_round = HeartbeatRound(self.heartbeat_round.0 + 1);
        self.reads.round_carried = false;
        if self.reads.round_started_ms.len() == REMEMBERED_ROUNDS {
            self.reads.round_started_ms.pop_front();
        }
        self.reads.round_started_ms.push_back((self.heartbeat_round, self.now_ms));
    }

    /// Leader: the round stamped on an `AppendEntries` about to leave.
    pub(super) fn round_for_message(&mut self) -> HeartbeatRound {
        self.reads.round_carried = true;
        self.heartbeat_round
    }

    /// Leader, after a heartbeat broadcast: a read's round has gone out with it.
    pub(super) fn round_sent(&mut self) {
        self.reads.round_unsent = false;
    }

    /// Whether a read waits for its round's heartbeats to be sent.
    pub(super) fn read_round_unsent(&self) -> bool {
        self.role == Role::Leader && self.reads.round_unsent
    }

    /// Whether a follower holds reads to forward to its leader.
    pub(super) fn reads_to_forward(&self) -> bool {
        self.role == Role::Follower
            && self.leader_id.is_some()
            && !self.reads.unforwarded.is_empty()
    }

    /// Leader: `follower` answered a message of `round`. Rounds the leader has not started
    /// yet are ignored (a confused or hostile peer must not confirm reads in advance).
    pub(super) fn on_round_answered(&mut self, follower: NodeId, round: HeartbeatRound) {
        if self.role != Role::Leader {
            return;
        }
        if round > self.heartbeat_round {
            tracing::warn!(target: LOG_TARGET, node = %self.id, "Ignoring an answer from {follower} to round {round}, which has not started (current {})", self.heartbeat_round);
            return;
        }
        let Some(progress) = self.progress.get_mut(&follower) else { return };
        if round <= progress.answered_round {
            return;
        }
        progress.answered_round = round;
        self.confirm_reads();
    }

    /// Leader: confirms the reads whose round a majority has answered, and extends the
    /// lease to the newest such round.
    fn confirm_reads(&mut self) {
        let (own_id, own_round, progress) = (self.id, self.heartbeat_round, &self.progress);
        let quorum_round = self.configuration.quorum_round(|id| {
            if id == own_id { Some(own_round) } else { progress.get(&id).map(|p| p.answered_round) }
        });
        if quorum_round > self.reads.quorum_round {
            self.reads.quorum_round = quorum_round;
            self.extend_lease(quorum_round);
        }
        while let Some(read) = self.reads.awaiting_round.front().copied() {
            if read.round > quorum_round {
                break;
            }
            self.reads.awaiting_round.pop_front();
            self.deliver_read(read.origin, read.read_index);
        }
    }

    /// Leader: a majority has answered `quorum_round`: the lease runs from its start.
    fn extend_lease(&mut self, quorum_round: HeartbeatRound) {
        while self.reads.round_started_ms.front().is_some_and(|(round, _)| *round < quorum_round) {
            self.reads.round_started_ms.pop_front();
        }
        if let Some(&(round, started_ms)) = self.reads.round_started_ms.front()
            && round == quorum_round
        {
            let lease = self.config.election_timeout_min_ms - self.config.clock_drift_bound_ms;
            self.reads.lease_until_ms = self.reads.lease_until_ms.max(started_ms + lease);
        }
    }

    /// Leader: a read is confirmed at `read_index`.
    fn deliver_read(&mut self, origin: ReadOrigin, read_index: LogIndex) {
        match origin {
            ReadOrigin::Local(id) => self.reads.decide(id, Ok(read_index)),
            ReadOrigin::Remote { node, request } => {
                self.reads.remote_pending = self.reads.remote_pending.saturating_sub(1);
                // The entry's term lets the follower commit up to it at once. (Term 0 if a
                // snapshot has compacted it away since: the follower then matches nothing
                // and waits for the commit index to reach it, as it would anyway.)
                let term = self.log.term_at(read_index).unwrap_or_default();
                let read_index = Some(LogId::new(term, read_index));
                self.send(node, MessageBody::ReadIndexResponse { request, read_index });
            }
        }
    }

    /// Leader, once an entry of its term has committed: the reads that waited for it get
    /// their read index and a round.
    pub(super) fn start_reads_awaiting_commit(&mut self) {
        if self.role != Role::Leader || !self.committed_in_term() {
            return;
        }
        for origin in std::mem::take(&mut self.reads.awaiting_commit) {
            self.start_read(origin, false);
        }
    }

    /// Follower: forwards the reads asked of it since the last Ready to its leader, in one
    /// batch.
    pub(super) fn forward_reads(&mut self) {
        let Some(leader) = self.leader_id else { return };
        if self.role != Role::Follower || self.reads.unforwarded.is_empty() {
            return;
        }
        let batch = std::mem::take(&mut self.reads.unforwarded);
        let lease = batch.iter().all(|(_, lease)| *lease);
        let reads: Vec<ReadId> = batch.into_iter().map(|(id, _)| id).collect();
        let request = reads[0];
        self.reads
            .forwarded
            .insert(request, ForwardedBatch { leader, sent_ms: self.now_ms, reads });
        self.send(leader, MessageBody::ReadIndex { request, lease });
    }

    /// Handles a follower's request for a read index.
    pub(super) fn handle_read_index(&mut self, from: NodeId, request: ReadId, lease: bool) {
        let limit = self.config.max_pending_reads;
        if self.role != Role::Leader || self.reads.remote_pending >= limit {
            self.send(from, MessageBody::ReadIndexResponse { request, read_index: None });
            return;
        }
        self.reads.remote_pending += 1;
        self.start_read(ReadOrigin::Remote { node: from, request }, lease);
    }

    /// Follower: the leader answered a forwarded batch.
    pub(super) fn handle_read_index_response(
        &mut self,
        from: NodeId,
        request: ReadId,
        read_index: Option<LogId>,
    ) {
        let Some(batch) = self.reads.forwarded.get(&request) else { return };
        if batch.leader != from {
            return;
        }
        let Some(batch) = self.reads.forwarded.remove(&request) else { return };
        if let Some(read_index) = read_index
            && read_index.index > self.commit_index
            && self.log.term_at(read_index.index) == Some(read_index.term)
        {
            // The leader says this entry is committed, and this node holds it: by Log
            // Matching its log equals the leader's up to there, so it commits that far now
            // rather than at the next heartbeat.
            self.commit_to(read_index.index);
        }
        let outcome = read_index.map(|log_id| log_id.index).ok_or(ReadError::LeadershipLost);
        for id in batch.reads {
            self.reads.decide(id, outcome.clone());
        }
    }

    /// Follower, at each tick: fails forwarded batches unanswered for a whole maximum
    /// election timeout (the request or its answer was lost).
    pub(super) fn expire_forwarded_reads(&mut self) {
        let expiry = self.config.election_timeout_max_ms;
        let now_ms = self.now_ms;
        let expired: Vec<ReadId> = self
            .reads
            .forwarded
            .iter()
            .filter(|(_, batch)| batch.sent_ms + expiry <= now_ms)
            .map(|(request, _)| *request)
            .collect();
        for request in expired {
            if let Some(batch) = self.reads.forwarded.remove(&request) {
                for id in batch.reads {
                    self.reads.decide(id, Err(ReadError::Timeout));
                }
            }
        }
    }

    /// The leadership reads depend on ended (this node stopped leading, or a follower moved
    /// to another leader or term): every read not yet confirmed fails.
    pub(super) fn fail_pending_reads(&mut self) {
        let reads = &mut self.reads;
        let waiting = std::mem::take(&mut reads.awaiting_commit)
            .into_iter()
            .chain(std::mem::take(&mut reads.awaiting_round).into_iter().map(|read| read.origin));
        for origin in waiting {
            // A follower whose reads this leader was confirming learns of the change itself.
            if let ReadOrigin::Local(id) = origin {
                reads.decide(id, Err(ReadError::LeadershipLost));
            }
        }
        reads.remote_pending = 0;
        let forwarded = std::mem::take(&mut reads.forwarded).into_values().flat_map(|b| b.reads);
        let unforwarded = std::mem::take(&mut reads.unforwarded).into_iter().map(|(id, _)| id);
        for id in forwarded.chain(unforwarded).collect::<Vec<_>>() {
            reads.decide(id, Err(ReadError::LeadershipLost));
        }
    }

    /// A new leader: rounds start again, with no lease until a majority answers one.
    pub(super) fn reset_reads_for_new_term(&mut self) {
        self.heartbeat_round = HeartbeatRound(0);
        let reads = &mut self.reads;
        reads.round_carried = true;
        reads.round_unsent = false;
        reads.quorum_round = HeartbeatRound(0);
        reads.round_started_ms.clear();
        reads.lease_until_ms = 0;
        reads.lease_forfeited = false;
    }

    /// Leader: it sent `TimeoutNow`, so no lease again in this term.
    pub(super) fn forfeit_lease(&mut self) {
        self.reads.lease_forfeited = true;
        self.reads.lease_until_ms = 0;
    }

    /// Leader: the configuration changed. A lease counted by the old one ends (the new
    /// voters may not have heard from this leader recently), and the rounds' answers are
    /// counted again by the new one.
    pub(super) fn recount_reads_for_new_configuration(&mut self) {
        self.reads.lease_until_ms = 0;
        self.reads.quorum_round = HeartbeatRound(0);
        self.confirm_reads();
    }
}
