//! Leader election (Raft §5.2) with the election restriction (§5.4.1), and CheckQuorum.
//!
//! A follower or candidate whose election timer fires starts an election for the next term and
//! votes for itself. A voter grants at most one vote per term, and only to a candidate whose log
//! is at least as up to date as its own. A candidate with a majority becomes leader and
//! appends a no-op entry of its term at once, so that earlier entries can commit (§5.4.2).
//! A leader that has not heard from a majority for an election timeout steps down.

use std::collections::BTreeSet;

use super::progress::Progress;
use super::quorum::VoteResult;
use super::{LOG_TARGET, RaftCore, Role};
use crate::message::{EntryPayload, MessageBody};
use crate::types::{LogId, NodeId, Term};

impl RaftCore {
    /// The election timer fired: run a pre-vote round (when configured, and when there is
    /// anyone to ask) or start an election at once.
    pub(super) fn campaign(&mut self) {
        if !self.configuration.is_voter(self.id) {
            // A learner, a removed member or a node that has not learned a configuration
            // yet never stands (it could not count a majority that includes itself).
            self.reset_election_deadline();
            return;
        }
        if !self.may_stand_for_election() {
            // Its disk is stalled (see `disk_stall.rs`): it tries again at the next timeout.
            self.reset_election_deadline();
            return;
        }
        if self.config.pre_vote && self.configuration.has_other_voters(self.id) {
            self.start_pre_vote();
        } else {
            self.start_election();
        }
    }

    /// Asks every voter whether it would vote for this node in the next term. Changes neither
    /// term nor vote, so nothing needs to be persisted before asking.
    fn start_pre_vote(&mut self) {
        let prospective_term = self.term.next();
        self.pre_votes_granted = Some(BTreeSet::from([self.id]));
        self.leader_id = None;
        self.reset_election_deadline();
        tracing::debug!(target: LOG_TARGET, node = %self.id, "Starting pre-vote for term {prospective_term}");
        let last_log_id = self.log.last_log_id();
        let peers: Vec<NodeId> = self.peers().collect();
        for peer in peers {
            self.send_with_term(peer, prospective_term, MessageBody::PreVote { last_log_id });
        }
    }

    /// Answers a pre-vote for `term` from `candidate`: yes if the term is newer, the
    /// candidate's log is at least as up to date, and no leader is active here.
    pub(super) fn handle_pre_vote(&mut self, candidate: NodeId, term: Term, candidate_last: LogId) {
        let granted = term > self.term
            && candidate_last.is_at_least_as_up_to_date_as(&self.log.last_log_id())
            && !self.in_leader_lease();
        let answer_term = if granted { term } else { self.term };
        self.send_with_term(candidate, answer_term, MessageBody::PreVoteResponse { granted });
    }

    /// Counts a pre-vote from `voter`; with a majority, starts the real election.
    pub(super) fn handle_pre_vote_granted(&mut self, voter: NodeId) {
        if self.role == Role::Leader {
            return;
        }
        let Some(granted) = self.pre_votes_granted.as_mut() else { return };
        granted.insert(voter);
        let result = self.configuration.vote_result(|id| granted.contains(&id).then_some(true));
        if result == VoteResult::Won {
            self.start_election();
        }
    }

    /// Whether this node leads, or heard from its leader within the minimum election timeout.
    pub(super) fn in_leader_lease(&self) -> bool {
        self.role == Role::Leader
            || self.now_ms < self.votes_ignored_until_ms
            || self.last_leader_contact_ms.is_some_and(|contact| {
                self.leader_id.is_some()
                    && self.now_ms < contact + self.config.election_timeout_min_ms
            })
    }

    /// Starts an election for the next term (the election timer fired).
    pub(super) fn start_election(&mut self) {
        self.start_election_with(false);
    }

    /// Starts an election at once because the leader handed leadership to this node: voters
    /// answer even inside their leader lease.
    pub(super) fn start_election_for_transfer(&mut self) {
        self.start_election_with(true);
    }

    fn start_election_with(&mut self, leadership_transfer: bool) {
        self.pre_votes_granted = None;
        if !self.may_stand_for_election() {
            // A pre-vote won, or leadership handed over, while the disk stalled.
            self.reset_election_deadline();
            return;
        }
        self.fail_pending_reads();
        self.elections_started += 1;
        self.set_term(self.term.next());
        self.vote_for(self.id);
        self.role = Role::Candidate;
        self.leader_id = None;
        self.progress.clear();
        self.votes_granted.clear();
        self.votes_granted.insert(self.id);
        self.reset_election_deadline();
        tracing::info!(target: LOG_TARGET, node = %self.id, "Starting election for term {}", self.term);
        if self.has_won_election() {
            self.win_election();
            return;
        }
        let last_log_id = self.log.last_log_id();
        let peers: Vec<NodeId> = self.peers().collect();
        for peer in peers {
            // The vote for ourselves must be durable before anyone can count on this election.
            self.send_after_persist(
                peer,
                MessageBody::RequestVote { last_log_id, leadership_transfer },
            );
        }
    }

    /// Decides a vote request from `candidate` in the current term.
    pub(super) fn handle_request_vote(&mut self, candidate: NodeId, candidate_last: LogId) {
        let free_to_vote = match self.voted_for {
            None => true,
            Some(voted) => voted == candidate,
        };
        let own_last = self.log.last_log_id();
        let candidate_up_to_date = candidate_last.is_at_least_as_up_to_date_as(&own_last);
        // The candidate need not be a voter in this node's configuration: that may lag
        // behind the candidate's (a new voter that has not yet received the entry that
        // promoted it must still vote, or a cluster whose leader fails mid-change could never
        // elect one). The candidate counts votes by its own configuration (§4.1).
        let granted = free_to_vote && candidate_up_to_date && self.role == Role::Follower;
        if granted {
            self.vote_for(candidate);
            self.reset_election_deadline();
            tracing::info!(target: LOG_TARGET, node = %self.id, "Granted vote to {} for term {}", candidate, self.term);
        } else {
            tracing::debug!(
                target: LOG_TARGET,
                node = %self.id,
                "Denied vote to {} for term {} (voted for {:?}, candidate last log {}, own last log {})",
                candidate, self.term, self.voted_for, candidate_last, own_last
            );
        }
        // A granted vote is only valid once it is durable.
        self.send_after_persist(candidate, MessageBody::RequestVoteResponse { granted });
    }

    /// Counts a vote answer from `voter` in the current term.
    pub(super) fn handle_vote_response(&mut self, voter: NodeId, granted: bool) {
        if self.role != Role::Candidate || !granted {
            return;
        }
        self.votes_granted.insert(voter);
        if self.has_won_election() {
            self.win_election();
        }
    }

    fn has_won_election(&self) -> bool {
        let result =
            self.configuration.vote_result(|id| self.votes_granted.contains(&id).then_some(true));
        result == VoteResult::Won
    }

    fn win_election(&mut self) {
        tracing::info!(target: LOG_TARGET, node = %self.id, "Election succeeded, becoming leader");
        self.become_leader();
    }

    /// Takes office: initialises each follower's progress, appends the term's no-op entry and
    /// announces leadership.
    fn become_leader(&mut self) {
        assert_eq!(self.role, Role::Candidate, "only a candidate that won its election leads");
        tracing::info!(target: LOG_TARGET, node = %self.id, "Becoming leader");
        self.role = Role::Leader;
        self.note_leader(self.id);
        self.leader_id = Some(self.id);
        self.votes_granted.clear();
        self.transfer = None;
        self.reset_reads_for_new_term();
        // A pre-vote round started before a late vote won the election is over.
        self.pre_votes_granted = None;
        let next_index = self.log.last_index().next();
        let peers: Vec<NodeId> = self.peers().collect();
        self.progress = peers.into_iter().map(|peer| (peer, Progress::new(next_index))).collect();
        self.check_quorum_deadline_ms = self.now_ms + self.config.election_timeout_max_ms;
        #[cfg(feature = "sim")]
        let skip_no_op = self.planted_commit_previous_term;
        #[cfg(not(feature = "sim"))]
        let skip_no_op = false;
        if !skip_no_op {
            self.append_own_entry(EntryPayload::Blank);
        }
        tracing::info!(target: LOG_TARGET, node = %self.id, "Sending heartbeats");
        self.broadcast_heartbeat();
    }

    /// Leader only: steps down unless a majority answered during the last period.
    pub(super) fn check_quorum(&mut self) {
        // The leader counts itself; a follower counts if it answered during the period.
        let active_vote = |id| {
            Some(
                id == self.id
                    || self.progress.get(&id).is_some_and(|progress| progress.recently_active),
            )
        };
        let result = self.configuration.vote_result(active_vote);
        let active = 1 + self.progress.values().filter(|progress| progress.recently_active).count();
        for progress in self.progress.values_mut() {
            progress.recently_active = false;
        }
        self.check_quorum_deadline_ms = self.now_ms + self.config.election_timeout_max_ms;
        if result != VoteResult::Won {
            tracing::warn!(
                target: LOG_TARGET,
                node = %self.id,
                "Stepping down: only {active} of {} members answered in the last {} ms",
                self.configuration.voters().len(),
                self.config.election_timeout_max_ms
            );
            let term = self.term;
            self.become_follower(term, None);
        }
    }
}
