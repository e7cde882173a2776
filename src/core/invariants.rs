//! Raft's safety rules on a node's own state, asserted in every build (release included).
//!
//! `term`, `voted_for` and `commit_index` change only through [`RaftCore::set_term`],
//! [`RaftCore::vote_for`] and [`RaftCore::commit_to`]; the leader of a term is recorded only
//! through [`RaftCore::note_leader`]. Each asserts the rule it obeys. A violated rule means
//! this node's state is broken (or a peer broke Raft's safety, which no validation of one
//! message can detect): the node stops by panicking with a message naming the rule, rather
//! than carry on and spread the damage. Malformed peer input never reaches these asserts: it
//! is validated and dropped first (`message_bounds.rs`, `check_entries` in `mod.rs`).
//!
//! [`RaftCore::check_invariants`] asserts the whole-state invariants, cheaply enough to call
//! after every event.

use super::{RaftCore, Role};
use crate::types::{LogIndex, NodeId, Term};

impl RaftCore {
    /// Moves to `term`. Terms never decrease; a newer term starts with no vote and no known
    /// leader.
    pub(super) fn set_term(&mut self, term: Term) {
        assert!(
            term >= self.term,
            "Raft safety rule violated: terms never decrease ({} in term {} was asked to move to term {term})",
            self.id,
            self.term
        );
        if term > self.term {
            self.term = term;
            self.voted_for = None;
            self.leader_of_term = None;
            // A transfer is one leader's, in one term: another leader's chunks of a snapshot
            // of the same entry may hold other bytes (Raft §7 does not make them canonical).
            #[cfg(feature = "sim")]
            let keep_transfer = self.planted_splice_snapshot_transfers;
            #[cfg(not(feature = "sim"))]
            let keep_transfer = false;
            if !keep_transfer {
                self.incoming_snapshot = None;
            }
        }
    }

    /// Casts this term's vote for `candidate`. At most one vote per term: voting
    /// again for the same candidate is a repeat, for another one a violation.
    pub(super) fn vote_for(&mut self, candidate: NodeId) {
        assert!(
            self.voted_for.is_none_or(|voted| voted == candidate),
            "Raft safety rule violated: at most one vote per term ({} voted for {:?} in term {} and was asked to vote for {candidate})",
            self.id,
            self.voted_for,
            self.term
        );
        self.voted_for = Some(candidate);
    }

    /// Advances the commit index to `index`. A lower or equal index changes nothing: callers
    /// pass what they have learnt is committed (a leader's commit index in a late message can
    /// be behind what this node knows), so the commit index never decreases by construction.
    /// It never passes the end of the log.
    pub(super) fn commit_to(&mut self, index: LogIndex) {
        if index <= self.commit_index {
            return;
        }
        assert!(
            index <= self.log.last_index(),
            "Raft safety rule violated: the commit index never passes the log's end ({} asked to commit {index} with its log ending at {})",
            self.id,
            self.log.last_index()
        );
        self.commit_index = index;
    }

    /// Records that `leader` leads the current term (whom to follow is the caller's to set in
    /// `leader_id`). A term has at most one
    /// leader (election safety, §5.2): hearing from a second one means a peer or this node
    /// broke the protocol.
    pub(super) fn note_leader(&mut self, leader: NodeId) {
        if let Some(known) = self.leader_of_term {
            assert!(
                known == leader,
                "Raft safety rule violated: at most one leader per term ({} knows {known} leads term {} and heard {leader} claim it too)",
                self.id,
                self.term
            );
        }
        self.leader_of_term = Some(leader);
    }

    /// Asserts the invariants of the whole node state; panics naming the first one broken.
    ///
    /// Cheap enough to call after every event (a simulator does): it is O(number of members)
    /// and O(1) in the log's length. Checked: the commit index is within
    /// `[log base, last log index]`; applied and handed-to-apply indexes are at most the commit
    /// index; the persisted index is at most the last log index; the held snapshot ends at or
    /// before the commit index; the log's first and last entries sit where its length says,
    /// with non-decreasing terms from the base (every append asserts contiguity and terms
    /// entry by entry, so checking the ends suffices); the role agrees with the known leader
    /// (a leader leads its term; a candidate voted for itself and follows no one; a follower
    /// does not follow itself); the vote, if any, is for a voter; a leader has progress for
    /// exactly the other members, each with `match_index < next_index`; others have none.
    pub fn check_invariants(&self) {
        let id = self.id;
        let last_index = self.log.last_index();
        let base = self.log.base().index;
        let commit = self.commit_index;
        assert!(
            commit <= last_index,
            "invariant violated: {id}'s commit index {commit} passes its log's end {last_index}"
        );
        assert!(
            commit >= base,
            "invariant violated: {id}'s commit index {commit} is below its log's base {base} (compacted entries are committed)"
        );
        assert!(
            self.applied_index <= commit && self.apply_handed_index <= commit,
            "invariant violated: {id} applied {} (handed out {}) past its commit index {commit}",
            self.applied_index,
            self.apply_handed_index
        );
        assert!(
            self.persisted_index <= last_index,
            "invariant violated: {id}'s persisted index {} passes its log's end {last_index}",
            self.persisted_index
        );
        if let Some(snapshot) = &self.snapshot {
            let through = snapshot.meta.last_included.index;
            assert!(
                through <= commit,
                "invariant violated: {id} holds a snapshot through {through}, past its commit index {commit}"
            );
        }
        self.log.check_invariants();
        match self.role {
            Role::Leader => assert!(
                self.leader_id == Some(id) && self.leader_of_term == Some(id),
                "invariant violated: {id} is the leader of term {} but records {:?} as its leader",
                self.term,
                self.leader_id
            ),
            Role::Candidate => assert!(
                self.leader_id.is_none() && self.voted_for == Some(id),
                "invariant violated: {id} is a candidate in term {} following {:?} with its vote for {:?}",
                self.term,
                self.leader_id,
                self.voted_for
            ),
            Role::Follower => assert!(
                self.leader_id != Some(id),
                "invariant violated: {id} is a follower of itself in term {}",
                self.term
            ),
            Role::Stopped => {
                panic!(
                    "invariant violated: {id}'s core has the role Stopped, which only a stopped runtime's status reports"
                )
            }
        }
        if self.role == Role::Leader {
            let mut others = 0;
            for member in self.peers() {
                others += 1;
                assert!(
                    self.progress.contains_key(&member),
                    "invariant violated: leader {id} has no progress for member {member}"
                );
            }
            assert!(
                self.progress.len() == others,
                "invariant violated: leader {id} tracks progress for non-members: {:?}",
                self.progress
                    .keys()
                    .filter(|peer| !self.configuration.is_member(**peer) || **peer == id)
                    .collect::<Vec<_>>()
            );
        } else {
            assert!(
                self.progress.is_empty(),
                "invariant violated: {id} is a {} with replication progress",
                self.role
            );
        }
        for (peer, progress) in &self.progress {
            assert!(
                progress.match_index < progress.next_index,
                "invariant violated: leader {id}'s progress for {peer} has match index {} not below next index {}",
                progress.match_index,
                progress.next_index
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::InitialState;
    use super::*;
    use crate::config::Config;
    use crate::hard_state::HardState;
    use crate::message::{Entry, EntryPayload, Message, MessageBody};
    use crate::types::LogId;

    fn entry(term: u64, index: u64) -> Entry {
        Entry { term: Term(term), index: LogIndex(index), payload: EntryPayload::Blank }
    }

    /// Node `id` of the cluster {1, 2, 3}, in `term` with `voted_for`, holding `entries`.
    fn node(id: u64, term: u64, voted_for: Option<u64>, entries: Vec<Entry>) -> RaftCore {
        let hard_state = HardState {
            term: Term(term),
            voted_for: voted_for.map(NodeId),
            commit_index: LogIndex(0),
        };
        let initial =
            InitialState { hard_state, snapshot: None, entries, ..InitialState::default() };
        let config = Config { pre_vote: false, ..Config::default() };
        let voters = [NodeId(1), NodeId(2), NodeId(3)];
        let mut core = RaftCore::new(NodeId(id), voters, config, initial, id)
            .expect("the test builds a valid start");
        core.tick(0);
        core
    }

    fn append_entries(
        from: u64,
        term: u64,
        prev: LogId,
        entries: Vec<Entry>,
        commit: u64,
    ) -> Message {
        Message {
            from: NodeId(from),
            to: NodeId(2),
            term: Term(term),
            body: MessageBody::AppendEntries {
                prev_log_id: prev,
                entries,
                leader_commit: LogIndex(commit),
                round: crate::types::HeartbeatRound(0),
            },
        }
    }

    #[test]
    fn raising_the_term_clears_the_vote() {
        let mut core = node(2, 3, Some(1), Vec::new());
        core.set_term(Term(3));
        assert_eq!(core.voted_for(), Some(NodeId(1)), "the same term keeps the vote");
        core.set_term(Term(4));
        assert_eq!((core.term(), core.voted_for()), (Term(4), None));
        core.check_invariants();
    }

    #[test]
    #[should_panic(expected = "terms never decrease")]
    fn a_decreasing_term_stops_the_node() {
        let mut core = node(2, 3, None, Vec::new());
        core.set_term(Term(2));
    }

    #[test]
    fn repeating_the_same_vote_is_allowed() {
        let mut core = node(2, 3, Some(1), Vec::new());
        core.vote_for(NodeId(1));
        assert_eq!(core.voted_for(), Some(NodeId(1)));
    }

    #[test]
    #[should_panic(expected = "at most one vote per term")]
    fn a_second_vote_in_a_term_stops_the_node() {
        let mut core = node(2, 3, Some(1), Vec::new());
        core.vote_for(NodeId(3));
    }

    #[test]
    fn a_stored_vote_for_a_node_that_has_since_left_is_kept_at_start() {
        // Votes go to candidates, whatever later configurations say about them: the vote
        // is what this node promised for the term, and it must keep it.
        let hard_state =
            HardState { term: Term(1), voted_for: Some(NodeId(9)), commit_index: LogIndex(0) };
        let initial = InitialState { hard_state, ..InitialState::default() };
        let core = RaftCore::new(NodeId(1), [NodeId(1), NodeId(2)], Config::default(), initial, 1)
            .expect("a vote is state to keep, not a membership error");
        assert_eq!(core.voted_for(), Some(NodeId(9)));
    }

    #[test]
    fn a_lower_commit_index_changes_nothing() {
        let mut core = node(2, 1, None, vec![entry(1, 1), entry(1, 2)]);
        core.commit_to(LogIndex(2));
        core.commit_to(LogIndex(1));
        assert_eq!(core.commit_index(), LogIndex(2));
        core.check_invariants();
    }

    #[test]
    #[should_panic(expected = "the commit index never passes the log's end")]
    fn committing_past_the_log_end_stops_the_node() {
        let mut core = node(2, 1, None, vec![entry(1, 1), entry(1, 2)]);
        core.commit_to(LogIndex(3));
    }

    /// A second leader claiming a term (a buggy or compromised peer) is refused, counted and
    /// logged; the follower keeps its leader and its log, and carries on.
    #[test]
    fn a_second_leader_in_a_term_is_refused_by_a_follower() {
        let mut core = node(2, 1, None, Vec::new());
        core.step(append_entries(1, 1, LogId::default(), vec![entry(1, 1)], 0));
        assert_eq!(core.leader_id(), Some(NodeId(1)));
        core.step(append_entries(3, 1, LogId::default(), vec![entry(1, 1), entry(1, 2)], 0));
        assert_eq!(core.leader_id(), Some(NodeId(1)));
        assert_eq!(core.last_log_id(), LogId::new(Term(1), LogIndex(1)), "nothing appended");
        assert_eq!(core.protocol_violations(), 1);
        core.check_invariants();
    }

    /// The rule behind that refusal stays asserted where the leader is recorded: a caller
    /// that let a second leader through is this node's own bug, and stops it.
    #[test]
    #[should_panic(expected = "at most one leader per term")]
    fn recording_a_second_leader_of_the_term_stops_the_node() {
        let mut core = node(2, 1, None, Vec::new());
        core.step(append_entries(1, 1, LogId::default(), Vec::new(), 0));
        core.note_leader(NodeId(3));
    }

    #[test]
    fn a_second_leader_in_a_term_is_refused_even_after_the_follower_stopped_following() {
        let mut core = node(2, 1, None, Vec::new());
        core.step(append_entries(1, 1, LogId::default(), Vec::new(), 0));
        // The follower stops trusting its leader (a pre-vote round), in the same term.
        core.tick(10_000);
        assert_eq!(core.term(), Term(2), "pre-vote is off: the election timer started term 2");
        core.step(append_entries(1, 2, LogId::default(), Vec::new(), 0));
        core.become_follower(Term(2), None);
        core.step(append_entries(3, 2, LogId::default(), Vec::new(), 0));
        assert_eq!(core.leader_id(), None);
        assert_eq!(core.protocol_violations(), 1);
    }

    #[test]
    fn a_leader_hearing_another_leader_of_its_term_refuses_it() {
        let mut core = node(1, 0, None, Vec::new());
        core.tick(10_000);
        assert_eq!(core.role(), Role::Candidate);
        core.step(Message {
            from: NodeId(2),
            to: NodeId(1),
            term: core.term(),
            body: MessageBody::RequestVoteResponse { granted: true },
        });
        assert_eq!(core.role(), Role::Leader);
        core.check_invariants();
        let mut message = append_entries(3, core.term().0, LogId::default(), Vec::new(), 0);
        message.to = NodeId(1);
        core.step(message);
        assert_eq!(core.role(), Role::Leader);
        assert_eq!(core.protocol_violations(), 1);
        core.check_invariants();
    }

    /// A leader asking to overwrite a committed entry (impossible for a correct one: it holds
    /// every committed entry) is refused; the follower's log and commit index are intact.
    #[test]
    fn a_leader_overwriting_a_committed_entry_is_refused() {
        let mut core = node(2, 1, None, Vec::new());
        core.step(append_entries(1, 1, LogId::default(), vec![entry(1, 1), entry(1, 2)], 2));
        assert_eq!(core.commit_index(), LogIndex(2));
        // A leader of term 2 that lacks the committed entries.
        core.step(append_entries(3, 2, LogId::default(), vec![entry(2, 1)], 0));
        assert_eq!(core.last_log_id(), LogId::new(Term(1), LogIndex(2)));
        assert_eq!(core.commit_index(), LogIndex(2));
        assert_eq!(core.protocol_violations(), 1);
        core.check_invariants();
        // An uncommitted conflicting entry is still replaced (the normal repair, §5.3).
        core.step(append_entries(1, 1, LogId::new(Term(1), LogIndex(2)), vec![entry(1, 3)], 2));
        core.step(append_entries(3, 2, LogId::new(Term(1), LogIndex(2)), vec![entry(2, 3)], 2));
        assert_eq!(core.last_log_id(), LogId::new(Term(2), LogIndex(3)));
        assert_eq!(core.protocol_violations(), 1);
    }

    /// The rule behind that refusal stays asserted where entries are truncated.
    #[test]
    #[should_panic(expected = "a committed entry is never truncated")]
    fn truncating_a_committed_entry_stops_the_node() {
        let mut core = node(2, 1, None, Vec::new());
        core.step(append_entries(1, 1, LogId::default(), vec![entry(1, 1), entry(1, 2)], 2));
        core.append_from_leader(vec![entry(2, 1)]);
    }

    #[test]
    fn a_late_leader_commit_index_does_not_lower_the_commit_index() {
        let mut core = node(2, 1, None, Vec::new());
        core.step(append_entries(1, 1, LogId::default(), vec![entry(1, 1), entry(1, 2)], 2));
        core.step(append_entries(1, 1, LogId::default(), vec![entry(1, 1)], 1));
        assert_eq!(core.commit_index(), LogIndex(2));
        assert_eq!(core.last_log_id(), LogId::new(Term(1), LogIndex(2)));
        core.check_invariants();
    }

    #[test]
    #[should_panic(expected = "commit index 5 passes its log's end")]
    fn check_invariants_catches_a_commit_index_past_the_log() {
        let mut core = node(2, 1, None, vec![entry(1, 1)]);
        core.commit_index = LogIndex(5);
        core.check_invariants();
    }

    #[test]
    #[should_panic(expected = "applied")]
    fn check_invariants_catches_applied_past_commit() {
        let mut core = node(2, 1, None, vec![entry(1, 1)]);
        core.applied_index = LogIndex(1);
        core.check_invariants();
    }

    #[test]
    #[should_panic(expected = "is the leader of term")]
    fn check_invariants_catches_a_leader_without_itself_as_leader() {
        let mut core = node(2, 1, None, Vec::new());
        core.role = Role::Leader;
        core.check_invariants();
    }

    /// Three nodes driven by hand, every message delivered, every Ready carried out at once:
    /// the invariants hold after every event through an election and replication.
    #[test]
    fn check_invariants_holds_through_an_election_and_replication() {
        let mut nodes: Vec<RaftCore> = (1..=3).map(|id| node(id, 0, None, Vec::new())).collect();
        let mut now_ms = 0;
        let mut proposed = 0;
        for _round in 0..200 {
            now_ms += 10;
            for core in &mut nodes {
                core.tick(now_ms);
                core.check_invariants();
            }
            if let Some(leader) = nodes.iter_mut().find(|core| core.role() == Role::Leader) {
                if proposed < 20 {
                    leader.propose(bytes::Bytes::from_static(b"x")).expect("the leader accepts");
                    proposed += 1;
                }
            }
            let mut in_flight = Vec::new();
            for core in &mut nodes {
                let ready = core.ready();
                in_flight.extend(ready.messages);
                in_flight.extend(ready.persisted_messages);
                core.advance(ready.ack);
                core.check_invariants();
            }
            for message in in_flight {
                let to = usize::try_from(message.to.0 - 1).expect("ids 1..=3");
                nodes[to].step(message);
                nodes[to].check_invariants();
            }
        }
        let leaders = nodes.iter().filter(|core| core.role() == Role::Leader).count();
        assert_eq!(leaders, 1);
        assert!(nodes.iter().all(|core| core.commit_index() >= LogIndex(proposed)));
    }
}
