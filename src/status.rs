//! [`Status`]: a snapshot of what one node knows, as reported by
//! [`RaftNode::status`](crate::RaftNode::status).

use std::sync::Arc;

use crate::core::{Configuration, RaftCore, Role};
use crate::types::{LogIndex, NodeId, Term};

/// What a node knows about itself and its cluster at one moment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Status {
    /// The node's id.
    pub id: NodeId,
    /// Its current role; [`Role::Stopped`] once the node has stopped (shut down, or stopped
    /// on a fatal error).
    pub role: Role,
    /// Its current term.
    pub term: Term,
    /// The leader it knows for the current term, if any (itself when leader); `None` once
    /// stopped.
    pub leader_id: Option<NodeId>,
    /// The highest index it knows committed.
    pub commit_index: LogIndex,
    /// The highest index its state machine has applied.
    pub applied_index: LogIndex,
    /// The index of the last entry in its log.
    pub last_log_index: LogIndex,
    /// The index of the first entry its log still holds (1 until compaction drops entries
    /// that a snapshot covers).
    pub first_log_index: LogIndex,
    /// The last index covered by the latest snapshot it holds (0 when it holds none).
    pub snapshot_index: LogIndex,
    /// Leader only: each follower (learners included) and the highest index known
    /// replicated on it.
    pub followers: Vec<(NodeId, LogIndex)>,
    /// The configuration the node uses: voters, learners, whether a change is half done
    /// (joint), and members' addresses.
    pub configuration: Arc<Configuration>,
    /// The index of the entry that set `configuration` (the log's base when none in the log
    /// did).
    pub configuration_index: LogIndex,
    /// Whether a membership change is under way (its configuration not yet committed, or
    /// joint).
    pub membership_change_in_progress: bool,
    /// How long the oldest write the node handed to its storage has waited for its sync, in
    /// milliseconds, once that is [`Config::max_sync_stall_ms`](crate::Config::max_sync_stall_ms)
    /// or more: its disk is stalled (a leader steps down, and no node stands for election,
    /// while it is). `None` while storage keeps up. As of the node's last event: a node
    /// with nothing to do updates it at least every election timeout.
    pub disk_stalled_for_ms: Option<u64>,
}

impl Status {
    pub(crate) fn of(core: &RaftCore) -> Status {
        Status {
            id: core.id(),
            role: core.role(),
            term: core.term(),
            leader_id: core.leader_id(),
            commit_index: core.commit_index(),
            applied_index: core.applied_index(),
            last_log_index: core.last_log_id().index,
            first_log_index: core.first_log_index(),
            snapshot_index: core
                .snapshot()
                .map_or(LogIndex(0), |snapshot| snapshot.meta.last_included.index),
            followers: core.follower_match_indexes(),
            configuration: core.shared_configuration(),
            configuration_index: core.configuration_index(),
            membership_change_in_progress: core.membership_change_in_progress(),
            disk_stalled_for_ms: core.disk_stalled_for_ms(),
        }
    }

    /// Whether the node is the leader.
    pub fn is_leader(&self) -> bool {
        self.role == Role::Leader
    }

    /// Turns the last status of a node that has stopped into what it reports from then on:
    /// [`Role::Stopped`], no leader, no followers; its indexes, term and configuration are
    /// its last ones.
    pub(crate) fn mark_stopped(&mut self) {
        self.role = Role::Stopped;
        self.leader_id = None;
        self.followers.clear();
    }
}
