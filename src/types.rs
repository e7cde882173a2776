//! Identifier newtypes shared by every layer: [`NodeId`], [`Term`], [`LogIndex`], the pair
//! [`LogId`] that names one log entry unambiguously, and the [`HeartbeatRound`] and
//! [`ReadId`] of linearizable reads.
//!
//! Keeping them distinct types means a term can never be passed where an index is expected.

use std::fmt;

/// The identity of one member of a Raft cluster. Displayed as `node<N>` (for example `node2`).
///
/// ```
/// use raft_consensus::NodeId;
/// assert_eq!(NodeId(2).to_string(), "node2");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NodeId(pub u64);

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "node{}", self.0)
    }
}

impl From<u64> for NodeId {
    fn from(value: u64) -> Self {
        NodeId(value)
    }
}

/// A Raft term: a logical clock that increases with every election.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Term(pub u64);

impl Term {
    /// The term that follows this one.
    ///
    /// Never wraps: a node's term grows by one per election it starts, or jumps to a peer's
    /// term, and the core refuses messages whose term is above `u64::MAX / 2` (see
    /// `core/message_bounds.rs`), so no run comes near `u64::MAX`. Panics if it would.
    pub fn next(self) -> Term {
        Term(self.0.checked_add(1).expect(
            "terms stay below u64::MAX: peers' terms above u64::MAX / 2 are refused and a node adds one per election",
        ))
    }
}

impl fmt::Display for Term {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// The position of an entry in the replicated log. The first entry has index 1; index 0
/// stands for "before the first entry".
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LogIndex(pub u64);

impl LogIndex {
    /// The index that follows this one.
    ///
    /// Never wraps: a log grows one entry at a time, and the core refuses messages carrying
    /// indexes above `u64::MAX / 2` (see `core/message_bounds.rs`), so no index held or
    /// computed comes near `u64::MAX`. Panics if it would.
    pub fn next(self) -> LogIndex {
        LogIndex(self.0.checked_add(1).expect(
            "log indexes stay below u64::MAX: peers' indexes above u64::MAX / 2 are refused and a log grows one entry at a time",
        ))
    }

    /// The index before this one, saturating at zero.
    pub fn prev(self) -> LogIndex {
        LogIndex(self.0.saturating_sub(1))
    }
}

impl fmt::Display for LogIndex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// The term and index of one log entry. By the Log Matching Property, two logs that hold an
/// entry with the same `LogId` are identical up to and including it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct LogId {
    /// The term in which the entry was created.
    pub term: Term,
    /// The entry's position in the log.
    pub index: LogIndex,
}

impl LogId {
    /// Builds a `LogId` from a term and an index.
    pub fn new(term: Term, index: LogIndex) -> Self {
        LogId { term, index }
    }

    /// Whether a log ending at `self` is at least as up to date as one ending at `other`
    /// (Raft §5.4.1): the later last term wins; with equal terms, the longer log wins.
    pub fn is_at_least_as_up_to_date_as(&self, other: &LogId) -> bool {
        (self.term, self.index) >= (other.term, other.index)
    }
}

impl fmt::Display for LogId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.index, self.term)
    }
}

/// A leader's heartbeat round within its term: it counts up each time the leader asks its
/// followers to confirm its leadership (a round of heartbeats, or a read that needs one). Every
/// `AppendEntries` carries the leader's current round and every answer echoes the round of the
/// message it answers, so the leader knows which confirmation an answer belongs to (ReadIndex,
/// Raft thesis §6.4).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct HeartbeatRound(pub u64);

impl fmt::Display for HeartbeatRound {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// The id a node gives one linearizable read it was asked for, to name the read when its
/// read index is known (see [`RaftCore::read_index`](crate::core::RaftCore::read_index)).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ReadId(pub u64);

impl fmt::Display for ReadId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "read{}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn up_to_date_compares_last_term_first_then_length() {
        let long_old = LogId::new(Term(2), LogIndex(10));
        let short_new = LogId::new(Term(3), LogIndex(1));
        assert!(short_new.is_at_least_as_up_to_date_as(&long_old));
        assert!(!long_old.is_at_least_as_up_to_date_as(&short_new));
        let longer = LogId::new(Term(3), LogIndex(2));
        assert!(longer.is_at_least_as_up_to_date_as(&short_new));
        assert!(!short_new.is_at_least_as_up_to_date_as(&longer));
        assert!(short_new.is_at_least_as_up_to_date_as(&short_new));
    }

    #[test]
    #[should_panic(expected = "terms stay below u64::MAX")]
    fn the_next_term_never_wraps() {
        let _ = Term(u64::MAX).next();
    }

    #[test]
    #[should_panic(expected = "log indexes stay below u64::MAX")]
    fn the_next_index_never_wraps() {
        let _ = LogIndex(u64::MAX).next();
    }
}
