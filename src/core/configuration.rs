//! [`Configuration`]: who the cluster's members are, and the only place the core decides
//! whether a majority agrees (elections, pre-votes, CheckQuorum, commits).
//!
//! It owns the voters (sorted, without duplicates), the outgoing voters during a joint change
//! (Raft thesis §4.3), the non-voting learners, and each member's addresses (opaque to the
//! core: the transport and the application read them). A joint decision needs a majority of
//! *both* halves. Configurations are values: a change builds a new one
//! ([`with_learner`](Configuration::with_learner), [`enter_joint`](Configuration::enter_joint),
//! [`leave_joint`](Configuration::leave_joint)), which the leader appends to its log as an
//! entry; every node uses the latest configuration in its log from the moment it is appended
//! (§4.1).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::Arc;

use super::quorum::{MajorityConfig, VoteResult};
use crate::types::{HeartbeatRound, LogIndex, NodeId};

/// How to reach a member: replicated with the configuration, so that every node (a new one
/// too) learns where the others are. The core never reads them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct MemberAddress {
    /// Where the member accepts Raft traffic (for [`TcpTransport`](crate::transport::TcpTransport): a
    /// `host:port`). Empty when the transport needs none (in-process channels).
    pub raft_addr: String,
    /// Where the member serves the application's clients (raft-kv: its HTTP address). Empty
    /// when the application has none.
    pub client_addr: String,
}

/// The cluster's membership as one node sees it. A cheap handle (one pointer): cloning it
/// shares the same immutable configuration, so it costs nothing to keep one in every
/// configuration entry, snapshot and status report.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Configuration {
    inner: Arc<Members>,
}

/// What a [`Configuration`] holds.
#[derive(Debug, PartialEq, Eq)]
struct Members {
    /// The voters (the new ones, during a joint change). Empty only on a node that has not
    /// yet learned any configuration (started to join a cluster).
    voters: MajorityConfig,
    /// During a joint change: the voters of the configuration being left.
    outgoing: Option<MajorityConfig>,
    /// Members that receive the log but do not vote.
    learners: BTreeSet<NodeId>,
    /// How to reach members, where known.
    addresses: BTreeMap<NodeId, MemberAddress>,
    /// Every member once, voters first: computed when the configuration is built, because
    /// the core walks it on every broadcast.
    members: Vec<NodeId>,
}

impl Configuration {
    /// A simple configuration of `voters` (sorted and deduplicated here); `None` when empty.
    pub(crate) fn simple(voters: impl IntoIterator<Item = NodeId>) -> Option<Self> {
        let voters = MajorityConfig::new(voters);
        (!voters.voters().is_empty())
            .then(|| Configuration::from_parts(voters, None, BTreeSet::new(), BTreeMap::new()))
    }

    /// A simple configuration of `voters` (sorted and deduplicated here), with no learners
    /// and no addresses; the [unknown](Self::is_unknown) configuration when `voters` is
    /// empty.
    ///
    /// ```
    /// use raft_consensus::{Configuration, NodeId};
    ///
    /// let configuration = Configuration::of_voters([NodeId(3), NodeId(1), NodeId(2)]);
    /// assert_eq!(configuration.voters(), &[NodeId(1), NodeId(2), NodeId(3)]);
    /// assert!(!configuration.is_joint());
    /// assert_eq!(configuration.to_string(), "voters [1, 2, 3]");
    /// ```
    pub fn of_voters(voters: impl IntoIterator<Item = NodeId>) -> Self {
        Configuration::simple(voters).unwrap_or_default()
    }

    /// The configuration of a node that knows none yet (started to join a cluster): no
    /// members, so it never stands for election and counts no majority.
    pub(crate) fn unknown() -> Self {
        Configuration::from_parts(MajorityConfig::default(), None, BTreeSet::new(), BTreeMap::new())
    }

    /// The one place a configuration is assembled: learners that are voters are dropped (a
    /// promoted learner votes), addresses of non-members are dropped, and `members` is
    /// computed from the rest.
    pub(crate) fn from_parts(
        voters: MajorityConfig,
        outgoing: Option<MajorityConfig>,
        mut learners: BTreeSet<NodeId>,
        mut addresses: BTreeMap<NodeId, MemberAddress>,
    ) -> Self {
        let is_voter = |id: &NodeId| {
            voters.contains(*id) || outgoing.as_ref().is_some_and(|half| half.contains(*id))
        };
        learners.retain(|id| !is_voter(id));
        let mut members: Vec<NodeId> = voters.voters().to_vec();
        let outgoing_only = outgoing.iter().flat_map(MajorityConfig::voters).copied();
        for id in outgoing_only.chain(learners.iter().copied()) {
            if !members.contains(&id) {
                members.push(id);
            }
        }
        addresses.retain(|id, _| members.contains(id));
        Configuration {
            inner: Arc::new(Members { voters, outgoing, learners, addresses, members }),
        }
    }

    /// A joint configuration moving from `outgoing` to `incoming` (tests).
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
                BTreeMap::new(),
            )
        })
    }

    /// This configuration with `id` added as a learner reachable at `address` (a member's
    /// address is replaced).
    pub fn with_learner(&self, id: NodeId, address: MemberAddress) -> Self {
        let mut learners = self.inner.learners.clone();
        if !self.is_voter(id) {
            learners.insert(id);
        }
        let mut addresses = self.inner.addresses.clone();
        addresses.insert(id, address);
        Configuration::from_parts(
            self.inner.voters.clone(),
            self.inner.outgoing.clone(),
            learners,
            addresses,
        )
    }

    /// This configuration without the learner `id` (voters are removed through a joint
    /// change instead).
    pub fn without_learner(&self, id: NodeId) -> Self {
        let mut learners = self.inner.learners.clone();
        learners.remove(&id);
        Configuration::from_parts(
            self.inner.voters.clone(),
            self.inner.outgoing.clone(),
            learners,
            self.inner.addresses.clone(),
        )
    }

    /// The joint configuration C_old,new that moves this (simple) configuration's voters to
    /// `voters` (§4.3). Learners that become voters stop being learners; voters that leave
    /// keep their addresses until the joint configuration is left.
    pub fn enter_joint(&self, voters: impl IntoIterator<Item = NodeId>) -> Self {
        Configuration::from_parts(
            MajorityConfig::new(voters),
            Some(self.inner.voters.clone()),
            self.inner.learners.clone(),
            self.inner.addresses.clone(),
        )
    }

    /// The simple configuration C_new that ends this joint change: the incoming voters and
    /// the learners.
    pub fn leave_joint(&self) -> Self {
        Configuration::from_parts(
            self.inner.voters.clone(),
            None,
            self.inner.learners.clone(),
            self.inner.addresses.clone(),
        )
    }

    /// Whether this is a joint configuration (a change half done).
    pub fn is_joint(&self) -> bool {
        self.inner.outgoing.is_some()
    }

    /// Whether this node knows no configuration yet (it was started to join a cluster).
    pub fn is_unknown(&self) -> bool {
        self.inner.members.is_empty()
    }

    /// `id`'s addresses, if known.
    pub fn address(&self, id: NodeId) -> Option<&MemberAddress> {
        self.inner.addresses.get(&id)
    }

    /// Every known member address.
    pub fn addresses(&self) -> &BTreeMap<NodeId, MemberAddress> {
        &self.inner.addresses
    }

    /// This configuration with the addresses in `known` filled in for members that have
    /// none (a node's bootstrap addresses, given at each start).
    pub(crate) fn with_missing_addresses(&self, known: &BTreeMap<NodeId, MemberAddress>) -> Self {
        let mut addresses = known.clone();
        addresses.extend(self.inner.addresses.clone());
        Configuration::from_parts(
            self.inner.voters.clone(),
            self.inner.outgoing.clone(),
            self.inner.learners.clone(),
            addresses,
        )
    }

    /// The voters, sorted (during a joint change: the incoming ones).
    pub fn voters(&self) -> &[NodeId] {
        self.inner.voters.voters()
    }

    /// During a joint change: the outgoing voters, sorted.
    pub fn outgoing_voters(&self) -> Option<&[NodeId]> {
        self.inner.outgoing.as_ref().map(MajorityConfig::voters)
    }

    /// The non-voting members.
    pub fn learners(&self) -> &BTreeSet<NodeId> {
        &self.inner.learners
    }

    /// Whether `id` votes (in either half of a joint configuration).
    #[inline]
    pub fn is_voter(&self, id: NodeId) -> bool {
        self.inner.voters.contains(id)
            || self.inner.outgoing.as_ref().is_some_and(|half| half.contains(id))
    }

    /// Whether `id` is a member: a voter of either half, or a learner.
    #[inline]
    pub fn is_member(&self, id: NodeId) -> bool {
        self.is_voter(id) || (!self.inner.learners.is_empty() && self.inner.learners.contains(&id))
    }

    /// Every member once, voters first: the nodes a leader replicates to (besides itself).
    pub fn members(&self) -> &[NodeId] {
        &self.inner.members
    }

    /// Whether this configuration has more than one voter (anyone to ask for a vote).
    pub fn has_other_voters(&self, own: NodeId) -> bool {
        self.inner.members.iter().any(|id| *id != own && self.is_voter(*id))
    }

    /// The highest index a majority holds (of each half, in a joint configuration: the lower
    /// of the two), given each voter's match index; unknown voters count as 0, and
    /// non-voters are never asked. Allocates nothing for up to 9 voters per half.
    pub fn committed_index(&self, match_index_of: impl Fn(NodeId) -> Option<LogIndex>) -> LogIndex {
        if self.is_unknown() {
            // No voters: nothing is committed by counting.
            return LogIndex(0);
        }
        let incoming = self.inner.voters.committed_index(&match_index_of);
        match &self.inner.outgoing {
            Some(outgoing) => incoming.min(outgoing.committed_index(&match_index_of)),
            None => incoming,
        }
    }

    /// The highest heartbeat round a majority has answered (of each half, in a joint
    /// configuration: the lower of the two), given each voter's highest answered round;
    /// counted as [`committed_index`](Self::committed_index) counts match indexes.
    pub(crate) fn quorum_round(
        &self,
        answered_round_of: impl Fn(NodeId) -> Option<HeartbeatRound>,
    ) -> HeartbeatRound {
        if self.is_unknown() {
            return HeartbeatRound(0);
        }
        let incoming = self.inner.voters.quorum_round(&answered_round_of);
        match &self.inner.outgoing {
            Some(outgoing) => incoming.min(outgoing.quorum_round(&answered_round_of)),
            None => incoming,
        }
    }

    /// Counts a vote: `granted(id)` is `Some(true)` for a grant, `Some(false)` for a refusal,
    /// `None` for no answer yet. Answers from non-voters are never asked. In a joint
    /// configuration the vote is won only if both halves win it, and lost if either loses it.
    pub fn vote_result(&self, granted: impl Fn(NodeId) -> Option<bool>) -> VoteResult {
        if self.is_unknown() {
            return VoteResult::Lost;
        }
        let incoming = self.inner.voters.vote_result(&granted);
        let Some(outgoing) = &self.inner.outgoing else {
            return incoming;
        };
        match (incoming, outgoing.vote_result(&granted)) {
            (VoteResult::Won, VoteResult::Won) => VoteResult::Won,
            (VoteResult::Lost, _) | (_, VoteResult::Lost) => VoteResult::Lost,
            _ => VoteResult::Pending,
        }
    }
}

impl Default for Configuration {
    /// The [unknown](Configuration::is_unknown) configuration of a node that has learned none.
    fn default() -> Self {
        Configuration::unknown()
    }
}

impl fmt::Display for Configuration {
    /// `voters [1, 2, 3]`, then ` (joint with outgoing [1, 2, 4])` and ` learners [5]` where
    /// they apply; `unknown` for a node that knows no configuration yet.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fn list(f: &mut fmt::Formatter<'_>, ids: impl Iterator<Item = NodeId>) -> fmt::Result {
            let names: Vec<String> = ids.map(|id| id.0.to_string()).collect();
            write!(f, "[{}]", names.join(", "))
        }
        if self.is_unknown() {
            return f.write_str("unknown");
        }
        f.write_str("voters ")?;
        list(f, self.voters().iter().copied())?;
        if let Some(outgoing) = self.outgoing_voters() {
            f.write_str(" (joint with outgoing ")?;
            list(f, outgoing.iter().copied())?;
            f.write_str(")")?;
        }
        if !self.inner.learners.is_empty() {
            f.write_str(" learners ")?;
            list(f, self.inner.learners.iter().copied())?;
        }
        Ok(())
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
