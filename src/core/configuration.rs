//! [`Configuration`]: who the cluster's members are, and the only place the core decides
//! whether a majority agrees (elections, pre-votes, CheckQuorum, commits).
//!
//! It owns the voters (sorted, without duplicates), room for an outgoing voter set during a
//! joint change (Raft thesis §4.3) and for non-voting learners. Only simple configurations are
//! built today; the joint rules are in place and tested so that membership changes need no
//! new counting: a joint decision needs a majority of *both* halves.

use std::collections::BTreeSet;

use super::quorum::{MajorityConfig, VoteResult};
use crate::types::{LogIndex, NodeId};

/// The cluster's membership as one node sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Configuration {
    /// The voters (the new ones, during a joint change). Never empty.
    voters: MajorityConfig,
    /// During a joint change: the voters of the configuration being left.
    outgoing: Option<MajorityConfig>,
    /// Members that receive the log but do not vote.
    learners: BTreeSet<NodeId>,
    /// Every member once, voters first: computed when the configuration is built, because
    /// the core walks it on every broadcast.
    members: Vec<NodeId>,
}

impl Configuration {
    /// A simple configuration of `voters` (sorted and deduplicated here); `None` when empty.
    pub(crate) fn simple(voters: impl IntoIterator<Item = NodeId>) -> Option<Self> {
        let voters = MajorityConfig::new(voters);
        (!voters.voters().is_empty())
            .then(|| Configuration::from_parts(voters, None, BTreeSet::new()))
    }

    /// The one place a configuration is assembled (so `members` always matches the rest).
    fn from_parts(
        voters: MajorityConfig,
        outgoing: Option<MajorityConfig>,
        learners: BTreeSet<NodeId>,
    ) -> Self {
        let mut members: Vec<NodeId> = voters.voters().to_vec();
        let outgoing_only = outgoing.iter().flat_map(MajorityConfig::voters).copied();
        for id in outgoing_only.chain(learners.iter().copied()) {
            if !members.contains(&id) {
                members.push(id);
            }
        }
        Configuration { voters, outgoing, learners, members }
    }

    /// A joint configuration moving from `outgoing` to `incoming` (tests only, until
    /// membership changes exist).
    #[cfg(test)]
    pub(crate) fn joint(
        incoming: impl IntoIterator<Item = NodeId>,
        outgoing: impl IntoIterator<Item = NodeId>,
    ) -> Option<Self> {
        let incoming = MajorityConfig::new(incoming);
        (!incoming.voters().is_empty()).then(|| {
            Configuration::from_parts(
                incoming,
                Some(MajorityConfig::new(outgoing)),
                BTreeSet::new(),
            )
        })
    }

    /// The voters, sorted (during a joint change: the incoming ones).
    pub fn voters(&self) -> &[NodeId] {
        self.voters.voters()
    }

    /// During a joint change: the outgoing voters, sorted.
    pub fn outgoing_voters(&self) -> Option<&[NodeId]> {
        self.outgoing.as_ref().map(MajorityConfig::voters)
    }

    /// The non-voting members.
    pub fn learners(&self) -> &BTreeSet<NodeId> {
        &self.learners
    }

    /// Whether `id` votes (in either half of a joint configuration).
    #[inline]
    pub fn is_voter(&self, id: NodeId) -> bool {
        self.voters.contains(id) || self.outgoing.as_ref().is_some_and(|half| half.contains(id))
    }

    /// Whether `id` is a member: a voter of either half, or a learner.
    #[inline]
    pub fn is_member(&self, id: NodeId) -> bool {
        self.is_voter(id) || (!self.learners.is_empty() && self.learners.contains(&id))
    }

    /// Every member once, voters first: the nodes a leader replicates to (besides itself).
    pub fn members(&self) -> &[NodeId] {
        &self.members
    }

    /// Whether this configuration has more than one voter (anyone to ask for a vote).
    pub fn has_other_voters(&self, own: NodeId) -> bool {
        self.members.iter().any(|id| *id != own && self.is_voter(*id))
    }

    /// The highest index a majority holds (of each half, in a joint configuration: the lower
    /// of the two), given each voter's match index; unknown voters count as 0, and
    /// non-voters are never asked. Allocates nothing for up to 9 voters per half.
    pub fn committed_index(&self, match_index_of: impl Fn(NodeId) -> Option<LogIndex>) -> LogIndex {
        let incoming = self.voters.committed_index(&match_index_of);
        match &self.outgoing {
            Some(outgoing) => incoming.min(outgoing.committed_index(&match_index_of)),
            None => incoming,
        }
    }

    /// Counts a vote: `granted(id)` is `Some(true)` for a grant, `Some(false)` for a refusal,
    /// `None` for no answer yet. Answers from non-voters are never asked. In a joint
    /// configuration the vote is won only if both halves win it, and lost if either loses it.
    pub fn vote_result(&self, granted: impl Fn(NodeId) -> Option<bool>) -> VoteResult {
        let incoming = self.voters.vote_result(&granted);
        let Some(outgoing) = &self.outgoing else {
            return incoming;
        };
        match (incoming, outgoing.vote_result(&granted)) {
            (VoteResult::Won, VoteResult::Won) => VoteResult::Won,
            (VoteResult::Lost, _) | (_, VoteResult::Lost) => VoteResult::Lost,
            _ => VoteResult::Pending,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(ids: &[u64]) -> Vec<NodeId> {
        ids.iter().map(|id| NodeId(*id)).collect()
    }

    fn simple(voters: &[u64]) -> Configuration {
        Configuration::simple(ids(voters)).expect("the test gives voters")
    }

    fn joint(incoming: &[u64], outgoing: &[u64]) -> Configuration {
        Configuration::joint(ids(incoming), ids(outgoing)).expect("the test gives voters")
    }

    fn matched(pairs: &[(u64, u64)]) -> impl Fn(NodeId) -> Option<LogIndex> + '_ {
        move |id| pairs.iter().find(|(node, _)| *node == id.0).map(|(_, index)| LogIndex(*index))
    }

    fn answers(pairs: &[(u64, bool)]) -> impl Fn(NodeId) -> Option<bool> + '_ {
        move |id| pairs.iter().find(|(node, _)| *node == id.0).map(|(_, yes)| *yes)
    }

    #[test]
    fn a_simple_configuration_needs_a_voter() {
        assert!(Configuration::simple([]).is_none());
        let configuration = simple(&[3, 1, 3, 2]);
        assert_eq!(configuration.voters(), ids(&[1, 2, 3]).as_slice());
        assert_eq!(configuration.members().to_vec(), ids(&[1, 2, 3]));
        assert!(configuration.is_voter(NodeId(2)));
        assert!(!configuration.is_member(NodeId(4)));
        assert!(configuration.has_other_voters(NodeId(1)));
        assert!(!simple(&[1]).has_other_voters(NodeId(1)));
    }

    #[test]
    fn simple_committed_index_single_even_and_odd() {
        assert_eq!(simple(&[1]).committed_index(matched(&[(1, 4)])), LogIndex(4));
        assert_eq!(simple(&[1, 2]).committed_index(matched(&[(1, 9), (2, 4)])), LogIndex(4));
        let three = simple(&[1, 2, 3]);
        assert_eq!(three.committed_index(matched(&[(1, 9), (2, 4), (3, 1)])), LogIndex(4));
        let four = simple(&[1, 2, 3, 4]);
        let held = [(1, 9), (2, 7), (3, 4), (4, 1)];
        assert_eq!(four.committed_index(matched(&held)), LogIndex(4));
    }

    #[test]
    fn simple_vote_result_ignores_non_members() {
        let three = simple(&[1, 2, 3]);
        assert_eq!(three.vote_result(answers(&[(1, true), (2, true)])), VoteResult::Won);
        assert_eq!(
            three.vote_result(answers(&[(1, true), (4, true), (5, true)])),
            VoteResult::Pending
        );
        assert_eq!(three.vote_result(answers(&[(2, false), (3, false)])), VoteResult::Lost);
        assert_eq!(simple(&[1]).vote_result(answers(&[(1, true)])), VoteResult::Won);
        let four = simple(&[1, 2, 3, 4]);
        assert_eq!(four.vote_result(answers(&[(1, true), (2, true)])), VoteResult::Pending);
        assert_eq!(four.vote_result(answers(&[(1, true), (4, false)])), VoteResult::Pending);
        assert_eq!(four.vote_result(answers(&[(3, false), (4, false)])), VoteResult::Lost);
        assert_eq!(
            four.vote_result(answers(&[(2, false), (3, false), (4, false)])),
            VoteResult::Lost
        );
    }

    #[test]
    fn joint_members_are_listed_once() {
        let configuration = joint(&[1, 2, 3], &[2, 3, 4]);
        assert_eq!(configuration.members().to_vec(), ids(&[1, 2, 3, 4]));
        assert!(configuration.is_voter(NodeId(4)));
        assert_eq!(configuration.outgoing_voters(), Some(ids(&[2, 3, 4]).as_slice()));
    }

    #[test]
    fn joint_committed_index_is_the_lower_of_the_halves() {
        let configuration = joint(&[1, 2, 3], &[4, 5, 6]);
        // Incoming majority holds 7; outgoing majority holds 3.
        let held = [(1, 9), (2, 7), (3, 1), (4, 3), (5, 3), (6, 0)];
        assert_eq!(configuration.committed_index(matched(&held)), LogIndex(3));
        // Overlapping halves: node 2 and 3 count in both.
        let overlapping = joint(&[1, 2, 3], &[2, 3, 4]);
        let held = [(1, 10), (2, 8), (3, 2), (4, 9)];
        // Incoming {10, 8, 2} -> 8; outgoing {8, 2, 9} -> 8.
        assert_eq!(overlapping.committed_index(matched(&held)), LogIndex(8));
        let held = [(1, 10), (2, 8), (3, 2), (4, 1)];
        // Outgoing {8, 2, 1} -> 2.
        assert_eq!(overlapping.committed_index(matched(&held)), LogIndex(2));
        // A non-member's index counts nowhere.
        let with_stranger = [(1, 10), (2, 8), (3, 2), (4, 1), (9, 100)];
        assert_eq!(overlapping.committed_index(matched(&with_stranger)), LogIndex(2));
    }

    #[test]
    fn joint_vote_needs_both_halves() {
        let configuration = joint(&[1, 2, 3], &[4, 5, 6]);
        let incoming_only = [(1, true), (2, true)];
        assert_eq!(configuration.vote_result(answers(&incoming_only)), VoteResult::Pending);
        let both = [(1, true), (2, true), (4, true), (5, true)];
        assert_eq!(configuration.vote_result(answers(&both)), VoteResult::Won);
        let outgoing_lost = [(1, true), (2, true), (4, false), (5, false)];
        assert_eq!(configuration.vote_result(answers(&outgoing_lost)), VoteResult::Lost);
        let incoming_lost = [(1, false), (2, false), (4, true), (5, true)];
        assert_eq!(configuration.vote_result(answers(&incoming_lost)), VoteResult::Lost);
        let strangers = [(1, true), (2, true), (7, true), (8, true)];
        assert_eq!(configuration.vote_result(answers(&strangers)), VoteResult::Pending);
    }

    #[test]
    fn joint_with_an_empty_outgoing_half_is_decided_by_the_incoming_half() {
        let configuration = joint(&[1, 2, 3], &[]);
        assert_eq!(configuration.committed_index(matched(&[(1, 5), (2, 4)])), LogIndex(4));
        assert_eq!(configuration.vote_result(answers(&[(1, true), (3, true)])), VoteResult::Won);
    }
}
