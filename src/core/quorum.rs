//! Quorum arithmetic: how many votes win an election and which index a majority holds.

use crate::types::LogIndex;

/// The number of members that form a majority of `voter_count`.
pub(crate) fn majority(voter_count: usize) -> usize {
    voter_count / 2 + 1
}

/// The highest index that a majority of voters has durably stored, given each voter's match
/// index (the leader's own included). Reorders `match_indexes`.
pub(crate) fn majority_match_index(match_indexes: &mut [LogIndex]) -> LogIndex {
    debug_assert!(!match_indexes.is_empty(), "a cluster has at least one voter");
    match_indexes.sort_unstable_by(|a, b| b.cmp(a));
    match_indexes[majority(match_indexes.len()) - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn majorities() {
        assert_eq!(majority(1), 1);
        assert_eq!(majority(2), 2);
        assert_eq!(majority(3), 2);
        assert_eq!(majority(4), 3);
        assert_eq!(majority(5), 3);
    }

    #[test]
    fn majority_match_index_is_the_median_of_the_highest() {
        let mut three = [LogIndex(5), LogIndex(1), LogIndex(3)];
        assert_eq!(majority_match_index(&mut three), LogIndex(3));
        let mut five = [LogIndex(9), LogIndex(9), LogIndex(2), LogIndex(1), LogIndex(0)];
        assert_eq!(majority_match_index(&mut five), LogIndex(2));
        let mut one = [LogIndex(4)];
        assert_eq!(majority_match_index(&mut one), LogIndex(4));
    }
}
