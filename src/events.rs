//! [`NodeEvent`]: what a running node tells those who subscribed with
//! [`RaftNode::events`](crate::RaftNode::events), so that they need not poll
//! [`RaftNode::status`](crate::RaftNode::status): role and leader changes, the applied index,
//! snapshots taken and installed, and the node stopping.
//!
//! The node's task publishes them on a bounded [`tokio::sync::broadcast`] channel of
//! [`EVENTS_CAPACITY`] events, right after it publishes the status that shows them. It never
//! waits for a subscriber: one that falls further behind loses the oldest events and is told
//! how many ([`RecvError::Lagged`](tokio::sync::broadcast::error::RecvError::Lagged)); the
//! status then says where the node is. While nobody subscribes, no event is built.

use tokio::sync::broadcast;

use crate::core::Role;
use crate::error::FatalError;
use crate::status::Status;
use crate::types::{LogIndex, NodeId, Term};

/// How many events a subscriber may fall behind before it loses the oldest ones.
pub const EVENTS_CAPACITY: usize = 1024;

/// Something that happened on a node, in the order it happened there.
#[derive(Clone, Debug)]
pub enum NodeEvent {
    /// The node's role changed (to [`Role::Leader`], [`Role::Candidate`] or
    /// [`Role::Follower`]) in `term`. Each event is the role the node holds at the end of a
    /// batch of work: one held only within a batch (a node of one is a candidate for an
    /// instant) is not reported.
    RoleChanged {
        /// The new role.
        role: Role,
        /// The term it plays it in.
        term: Term,
    },
    /// The leader the node knows changed: `None` while it knows none (an election), or
    /// another node (or itself) in `term`.
    LeaderChanged {
        /// The leader it now knows, if any.
        leader: Option<NodeId>,
        /// Its current term.
        term: Term,
    },
    /// The state machine has applied through `index`. Coalesced: one event per batch of
    /// work the node did, not one per entry, so indexes may be skipped.
    Applied {
        /// The highest index applied.
        index: LogIndex,
    },
    /// The node stored a snapshot of its own state machine through `index`, and compacted
    /// its log behind it.
    SnapshotTaken {
        /// The last index the snapshot covers.
        index: LogIndex,
    },
    /// The node installed a snapshot through `index` that its leader sent: its state
    /// machine was replaced by it.
    SnapshotInstalled {
        /// The last index the snapshot covers.
        index: LogIndex,
    },
    /// The node stopped: shut down (`None`), or on a fatal error. The last event; the
    /// channel closes after it.
    Stopped {
        /// Why it stopped on its own, if it did.
        error: Option<FatalError>,
    },
}

/// The node's side of the channel: what subscribers last heard, and the events found since.
#[derive(Debug)]
pub(crate) struct EventPublisher {
    sender: broadcast::Sender<NodeEvent>,
    role: Role,
    term: Term,
    leader: Option<NodeId>,
    applied: LogIndex,
    snapshots_stored: u64,
    snapshots_installed: u64,
    /// Found by [`observe`](Self::observe), sent by [`publish`](Self::publish) (kept to
    /// reuse its allocation).
    found: Vec<NodeEvent>,
}

impl EventPublisher {
    /// A publisher starting from `status`, and the handle through which callers subscribe
    /// (weak: the channel closes once the node's task drops the publisher).
    pub(crate) fn new(status: &Status) -> (EventPublisher, broadcast::WeakSender<NodeEvent>) {
        let (sender, _) = broadcast::channel(EVENTS_CAPACITY);
        let weak = sender.downgrade();
        let publisher = EventPublisher {
            sender,
            role: status.role,
            term: status.term,
            leader: status.leader_id,
            applied: status.applied_index,
            snapshots_stored: 0,
            snapshots_installed: 0,
            found: Vec::new(),
        };
        (publisher, weak)
    }

    /// Notes what changed since the last call, as the node's new `status` and its snapshot
    /// counts show; the events wait for [`publish`](Self::publish). Builds none while nobody
    /// subscribes.
    pub(crate) fn observe(
        &mut self,
        status: &Status,
        snapshots_stored: u64,
        snapshots_installed: u64,
    ) {
        let role_changed = status.role != self.role;
        let leader_changed = status.leader_id != self.leader;
        let applied = status.applied_index > self.applied;
        let installed = snapshots_installed > self.snapshots_installed;
        let stored = snapshots_stored > self.snapshots_stored;
        self.role = status.role;
        self.term = status.term;
        self.leader = status.leader_id;
        self.applied = status.applied_index.max(self.applied);
        self.snapshots_stored = snapshots_stored;
        self.snapshots_installed = snapshots_installed;
        if self.sender.receiver_count() == 0 {
            return;
        }
        let (term, snapshot) = (status.term, status.snapshot_index);
        if role_changed {
            self.found.push(NodeEvent::RoleChanged { role: status.role, term });
        }
        if leader_changed {
            self.found.push(NodeEvent::LeaderChanged { leader: status.leader_id, term });
        }
        if installed {
            self.found.push(NodeEvent::SnapshotInstalled { index: snapshot });
        }
        if applied {
            self.found.push(NodeEvent::Applied { index: status.applied_index });
        }
        if stored {
            self.found.push(NodeEvent::SnapshotTaken { index: snapshot });
        }
    }

    /// Sends the events [`observe`](Self::observe) found.
    pub(crate) fn publish(&mut self) {
        for event in self.found.drain(..) {
            // An error only says nobody subscribes any more.
            let _ = self.sender.send(event);
        }
    }

    /// Sends the last event: the node stopped.
    pub(crate) fn stopped(&mut self, error: Option<FatalError>) {
        self.found.clear();
        let _ = self.sender.send(NodeEvent::Stopped { error });
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::core::Configuration;

    fn status(role: Role, leader: Option<NodeId>, applied: u64) -> Status {
        Status {
            id: NodeId(1),
            role,
            term: Term(2),
            leader_id: leader,
            commit_index: LogIndex(applied),
            applied_index: LogIndex(applied),
            last_log_index: LogIndex(applied),
            first_log_index: LogIndex(1),
            snapshot_index: LogIndex(0),
            followers: Vec::new(),
            configuration: Arc::new(Configuration::default()),
            configuration_index: LogIndex(0),
            membership_change_in_progress: false,
            disk_stalled_for_ms: None,
        }
    }

    /// While nobody subscribes, changes are followed but no event is built; a subscriber
    /// then hears of the changes after it subscribed, not of older ones.
    #[test]
    fn no_event_is_built_without_a_subscriber() {
        let (mut publisher, handle) = EventPublisher::new(&status(Role::Follower, None, 0));
        publisher.observe(&status(Role::Leader, Some(NodeId(1)), 3), 0, 0);
        assert!(publisher.found.is_empty(), "built {:?} with nobody to hear them", publisher.found);
        let mut events = handle.upgrade().expect("the publisher lives").subscribe();
        publisher.observe(&status(Role::Leader, Some(NodeId(1)), 5), 0, 0);
        publisher.publish();
        assert!(matches!(events.try_recv(), Ok(NodeEvent::Applied { index: LogIndex(5) })));
        assert!(events.try_recv().is_err(), "only the change after subscribing");
    }

    /// An `Applied` event means the applied index moved: a change of role or leader at the
    /// same applied index announces only that change.
    #[test]
    fn applied_is_announced_only_when_the_index_moves() {
        let (mut publisher, handle) = EventPublisher::new(&status(Role::Follower, None, 4));
        let mut events = handle.upgrade().expect("the publisher lives").subscribe();
        publisher.observe(&status(Role::Follower, Some(NodeId(2)), 4), 0, 0);
        publisher.publish();
        let leader = Some(NodeId(2));
        assert!(
            matches!(events.try_recv(), Ok(NodeEvent::LeaderChanged { leader: l, .. }) if l == leader)
        );
        assert!(events.try_recv().is_err(), "no Applied event: the applied index stayed at 4");
    }
}
