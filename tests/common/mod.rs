//! Message predicates shared by the scenario tests. The cluster they script (network, disk,
//! clock, executor and invariant checks) is the simulator's
//! [`Cluster`](raft_consensus::sim::Cluster).

// Each test binary that includes this module uses a different part of it.
#![allow(dead_code)]

use raft_consensus::message::AppendResponse;
use raft_consensus::{Message, MessageBody, NodeId, Term};

/// Whether `message` belongs to an election (a vote request or answer).
pub fn is_vote_traffic(message: &Message) -> bool {
    matches!(
        message.body,
        MessageBody::RequestVote { .. } | MessageBody::RequestVoteResponse { .. }
    )
}

/// Whether `message` is an AppendEntries carrying at least one entry of `term`.
pub fn carries_entry_of_term(message: &Message, term: u64) -> bool {
    match &message.body {
        MessageBody::AppendEntries { entries, .. } => {
            entries.iter().any(|entry| entry.term == Term(term))
        }
        _ => false,
    }
}

/// Whether `message` goes between `a` and `b`, in either direction.
pub fn between(message: &Message, a: u64, b: u64) -> bool {
    (message.from == NodeId(a) && message.to == NodeId(b))
        || (message.from == NodeId(b) && message.to == NodeId(a))
}

/// Whether `message` is a rejected AppendEntries answer.
pub fn is_append_rejection(message: &Message) -> bool {
    matches!(
        message.body,
        MessageBody::AppendEntriesResponse { result: AppendResponse::Rejected { .. }, .. }
    )
}
