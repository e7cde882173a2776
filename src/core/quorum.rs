//! Majority arithmetic over one set of voters ([`MajorityConfig`]): which index a majority
//! holds, and whether a majority granted a vote.
//!
//! A [`Configuration`](super::configuration::Configuration) combines one or two of these (two
//! during a joint change); nothing else in the core counts a majority.

use crate::types::{HeartbeatRound, LogIndex, NodeId};

/// Clusters up to this many voters are counted on the stack (the leader counts for every
/// acknowledgment, so the common case must not allocate).
const ON_STACK_VOTERS: usize = 9;

/// The outcome of a vote counted over a configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum VoteResult {
    /// A majority (of each half, in a joint configuration) granted.
    Won,
    /// A majority (of either half) refused: the vote cannot be won any more.
    Lost,
    /// Neither yet: more answers are needed.
    Pending,
}

/// One set of voters, sorted and without duplicates, decided by simple majority.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub(crate) struct MajorityConfig {
    voters: Vec<NodeId>,
}

impl MajorityConfig {
    /// The voters in `voters`, sorted and deduplicated.
    pub(crate) fn new(voters: impl IntoIterator<Item = NodeId>) -> Self {
        let mut voters: Vec<NodeId> = voters.into_iter().collect();
        voters.sort_unstable();
        voters.dedup();
        MajorityConfig { voters }
    }

    /// The voters, sorted.
    pub(crate) fn voters(&self) -> &[NodeId] {
        &self.voters
    }

    /// Whether `id` votes here.
    #[inline]
    pub(crate) fn contains(&self, id: NodeId) -> bool {
        // A scan: clusters have a handful of voters, where it beats a binary search's
        // unpredictable branches.
        self.voters.contains(&id)
    }

    /// How many of the voters form a majority.
    fn majority(&self) -> usize {
        self.voters.len() / 2 + 1
    }

    /// The highest index that a majority of the voters holds, given each voter's match index
    /// (`None`: not known, counted as 0). Nodes that are not voters here are never asked.
    ///
    /// An empty set of voters places no constraint: it answers the largest index, so that
    /// the joint minimum is decided by the other half.
    pub(crate) fn committed_index(
        &self,
        match_index_of: impl Fn(NodeId) -> Option<LogIndex>,
    ) -> LogIndex {
        self.majority_value(match_index_of, LogIndex(u64::MAX))
    }

    /// The highest heartbeat round that a majority of the voters has answered, given each
    /// voter's highest answered round (`None`: none, counted as 0). An empty set of voters
    /// answers the largest round, as [`committed_index`](Self::committed_index) does.
    pub(crate) fn quorum_round(
        &self,
        answered_round_of: impl Fn(NodeId) -> Option<HeartbeatRound>,
    ) -> HeartbeatRound {
        self.majority_value(answered_round_of, HeartbeatRound(u64::MAX))
    }

    /// The highest value at or below which a majority of the voters' values lie (the
    /// majority-th highest); `unconstrained` for an empty set of voters.
    fn majority_value<T: Copy + Ord + Default>(
        &self,
        value_of: impl Fn(NodeId) -> Option<T>,
        unconstrained: T,
    ) -> T {
        if self.voters.is_empty() {
            return unconstrained;
        }
        let values = self.voters.iter().map(|id| value_of(*id).unwrap_or_default());
        let count = self.voters.len();
        let mut on_stack = [T::default(); ON_STACK_VOTERS];
        let mut on_heap;
        let slots: &mut [T] = if count <= ON_STACK_VOTERS {
            for (slot, value) in on_stack.iter_mut().zip(values) {
                *slot = value;
            }
            &mut on_stack[..count]
        } else {
            on_heap = values.collect::<Vec<_>>();
            &mut on_heap
        };
        // Highest first: the majority-th highest value is reached by a majority.
        slots.sort_unstable_by(|a, b| b.cmp(a));
        slots[self.majority() - 1]
    }

    /// Counts a vote: `granted(id)` is `Some(true)` for a grant, `Some(false)` for a refusal,
    /// `None` for no answer yet. Answers from nodes that are not voters here are never asked.
    /// An empty set of voters wins (it places no constraint on a joint vote).
    pub(crate) fn vote_result(&self, granted: impl Fn(NodeId) -> Option<bool>) -> VoteResult {
        if self.voters.is_empty() {
            return VoteResult::Won;
        }
        let (mut yes, mut no) = (0, 0);
        for answer in self.voters.iter().map(|id| granted(*id)) {
            match answer {
                Some(true) => yes += 1,
                Some(false) => no += 1,
                None => {}
            }
        }
        let majority = self.majority();
        if yes >= majority {
            VoteResult::Won
        } else if no > self.voters.len() - majority {
            // So many refused that the rest cannot make a majority.
            VoteResult::Lost
        } else {
            VoteResult::Pending
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(ids: &[u64]) -> MajorityConfig {
        MajorityConfig::new(ids.iter().map(|id| NodeId(*id)))
    }

    fn indexes(pairs: &[(u64, u64)]) -> impl Fn(NodeId) -> Option<LogIndex> + '_ {
        move |id| pairs.iter().find(|(node, _)| *node == id.0).map(|(_, index)| LogIndex(*index))
    }

    #[test]
    fn voters_are_sorted_and_deduplicated() {
        assert_eq!(config(&[3, 1, 2, 1]).voters(), &[NodeId(1), NodeId(2), NodeId(3)]);
        assert!(config(&[3, 1]).contains(NodeId(3)));
        assert!(!config(&[3, 1]).contains(NodeId(2)));
    }

    #[test]
    fn majorities() {
        assert_eq!(config(&[1]).majority(), 1);
        assert_eq!(config(&[1, 2]).majority(), 2);
        assert_eq!(config(&[1, 2, 3]).majority(), 2);
        assert_eq!(config(&[1, 2, 3, 4]).majority(), 3);
        assert_eq!(config(&[1, 2, 3, 4, 5]).majority(), 3);
    }

    #[test]
    fn committed_index_is_what_a_majority_holds() {
        let three = config(&[1, 2, 3]);
        assert_eq!(three.committed_index(indexes(&[(1, 5), (2, 1), (3, 3)])), LogIndex(3));
        let five = config(&[1, 2, 3, 4, 5]);
        let held = [(1, 9), (2, 9), (3, 2), (4, 1), (5, 0)];
        assert_eq!(five.committed_index(indexes(&held)), LogIndex(2));
        assert_eq!(config(&[1]).committed_index(indexes(&[(1, 4)])), LogIndex(4));
    }

    #[test]
    fn committed_index_with_an_even_number_of_voters_needs_more_than_half() {
        let two = config(&[1, 2]);
        assert_eq!(two.committed_index(indexes(&[(1, 7), (2, 3)])), LogIndex(3));
        let four = config(&[1, 2, 3, 4]);
        let held = [(1, 8), (2, 8), (3, 5), (4, 1)];
        assert_eq!(four.committed_index(indexes(&held)), LogIndex(5));
    }

    #[test]
    fn committed_index_counts_unknown_voters_as_zero_and_ignores_non_members() {
        let three = config(&[1, 2, 3]);
        assert_eq!(three.committed_index(indexes(&[(1, 5)])), LogIndex(0));
        let with_strangers = [(1, 5), (7, 5), (8, 5), (9, 5)];
        assert_eq!(three.committed_index(indexes(&with_strangers)), LogIndex(0));
    }

    #[test]
    fn committed_index_of_a_large_cluster_counts_on_the_heap() {
        let eleven = config(&(1..=11).collect::<Vec<_>>());
        let held: Vec<(u64, u64)> = (1..=11).map(|id| (id, id)).collect();
        // Six of eleven hold index 6 or more.
        assert_eq!(eleven.committed_index(indexes(&held)), LogIndex(6));
    }

    #[test]
    fn vote_results() {
        let three = config(&[1, 2, 3]);
        let answers = |pairs: &'static [(u64, bool)]| {
            move |id: NodeId| pairs.iter().find(|(node, _)| *node == id.0).map(|(_, yes)| *yes)
        };
        assert_eq!(three.vote_result(answers(&[(1, true)])), VoteResult::Pending);
        assert_eq!(three.vote_result(answers(&[(1, true), (2, true)])), VoteResult::Won);
        assert_eq!(three.vote_result(answers(&[(1, true), (2, false)])), VoteResult::Pending);
        assert_eq!(three.vote_result(answers(&[(2, false), (3, false)])), VoteResult::Lost);
        let one = config(&[1]);
        assert_eq!(one.vote_result(answers(&[(1, true)])), VoteResult::Won);
        assert_eq!(one.vote_result(answers(&[])), VoteResult::Pending);
        let four = config(&[1, 2, 3, 4]);
        assert_eq!(four.vote_result(answers(&[(1, true), (2, true)])), VoteResult::Pending);
        assert_eq!(
            four.vote_result(answers(&[(1, true), (2, false), (3, false)])),
            VoteResult::Lost
        );
        assert_eq!(four.vote_result(answers(&[(1, true), (2, true), (3, true)])), VoteResult::Won);
        // Grants from nodes that are not voters are never counted.
        let strangers = answers(&[(1, true), (7, true), (8, true), (9, true)]);
        assert_eq!(three.vote_result(strangers), VoteResult::Pending);
    }

    #[test]
    fn a_vote_is_lost_only_when_the_rest_cannot_make_a_majority() {
        let answers = |pairs: &'static [(u64, bool)]| {
            move |id: NodeId| pairs.iter().find(|(node, _)| *node == id.0).map(|(_, yes)| *yes)
        };
        // Five voters: two refusals leave three that may still grant.
        let five = config(&[1, 2, 3, 4, 5]);
        assert_eq!(five.vote_result(answers(&[(1, false), (2, false)])), VoteResult::Pending);
        assert_eq!(
            five.vote_result(answers(&[(1, false), (2, false), (3, false)])),
            VoteResult::Lost
        );
        // Two voters: one refusal leaves one, short of the two needed.
        let two = config(&[1, 2]);
        assert_eq!(two.vote_result(answers(&[(1, false)])), VoteResult::Lost);
        // One voter: its refusal loses.
        assert_eq!(config(&[1]).vote_result(answers(&[(1, false)])), VoteResult::Lost);
    }

    #[test]
    fn an_empty_half_places_no_constraint() {
        let empty = MajorityConfig::default();
        assert_eq!(empty.committed_index(|_| None), LogIndex(u64::MAX));
        assert_eq!(empty.vote_result(|_| None), VoteResult::Won);
    }
}
