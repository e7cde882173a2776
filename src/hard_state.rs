//! [`HardState`]: the part of a node's state that must survive a restart besides the log.

use crate::types::{LogIndex, NodeId, Term};

/// The durable scalar state of a node. A node persists it before it answers any message that
/// depends on it (a vote, an acknowledgment).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HardState {
    /// The latest term this node has seen.
    pub term: Term,
    /// The candidate this node voted for in `term`, if any.
    pub voted_for: Option<NodeId>,
    /// The highest index this node knows to be committed. Persisting it is an optimisation
    /// for restarts; it is never ahead of the durable log.
    pub commit_index: LogIndex,
}
