//! The range of terms and log indexes the core accepts from a peer.
//!
//! The core adds one to terms and indexes (`Term::next`, `LogIndex::next`) and those panic
//! rather than wrap. A peer's message must never be able to drive that arithmetic near
//! `u64::MAX`, so any message whose term, or any of whose indexes, is above half the range
//! is malformed: [`check_bounds`] refuses it before anything reads it, and `RaftCore::step`
//! drops it with a warning. Half the range leaves room for 2^63 more elections and entries
//! after the highest accepted value, which no run comes near; no honest cluster comes near
//! the bound either (2^63 entries at a billion a second take three centuries).

use crate::message::{AppendResponse, Message, MessageBody};
use crate::types::{LogId, LogIndex, Term};

/// The highest term accepted from a peer.
pub(crate) const MAX_TERM: Term = Term(u64::MAX / 2);

/// The highest log index accepted from a peer.
pub(crate) const MAX_INDEX: LogIndex = LogIndex(u64::MAX / 2);

/// Checks that every term and index in `message` is within [`MAX_TERM`] and [`MAX_INDEX`];
/// otherwise says which is not.
pub(crate) fn check_bounds(message: &Message) -> Result<(), String> {
    check_term("the message's term", message.term)?;
    match &message.body {
        MessageBody::RequestVote { last_log_id } | MessageBody::PreVote { last_log_id } => {
            check_log_id("the last log id", *last_log_id)
        }
        MessageBody::RequestVoteResponse { .. } | MessageBody::PreVoteResponse { .. } => Ok(()),
        MessageBody::AppendEntries { prev_log_id, entries, leader_commit } => {
            check_log_id("the previous log id", *prev_log_id)?;
            check_index("the leader's commit index", *leader_commit)?;
            entries.iter().try_for_each(|entry| check_log_id("an entry", entry.log_id()))
        }
        MessageBody::AppendEntriesResponse(AppendResponse::Accepted { match_index }) => {
            check_index("the match index", *match_index)
        }
        MessageBody::AppendEntriesResponse(AppendResponse::Rejected {
            rejected_prev_index,
            hint,
        }) => {
            check_index("the rejected index", *rejected_prev_index)?;
            check_index("the hint's first index", hint.first_index)?;
            hint.conflict_term.map_or(Ok(()), |term| check_term("the hint's term", term))
        }
        MessageBody::InstallSnapshot { meta, .. } => {
            check_log_id("the snapshot's last entry", meta.last_included)
        }
        MessageBody::InstallSnapshotResponse { last_included, .. } => {
            check_log_id("the snapshot's last entry", *last_included)
        }
    }
}

fn check_term(what: &str, term: Term) -> Result<(), String> {
    if term > MAX_TERM {
        return Err(format!("{what} {term} is above the highest accepted term {MAX_TERM}"));
    }
    Ok(())
}

fn check_index(what: &str, index: LogIndex) -> Result<(), String> {
    if index > MAX_INDEX {
        return Err(format!("{what} {index} is above the highest accepted index {MAX_INDEX}"));
    }
    Ok(())
}

fn check_log_id(what: &str, log_id: LogId) -> Result<(), String> {
    check_term(what, log_id.term)?;
    check_index(what, log_id.index)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::ConflictHint;
    use crate::types::NodeId;

    fn message(term: u64, body: MessageBody) -> Message {
        Message { from: NodeId(1), to: NodeId(2), term: Term(term), body }
    }

    #[test]
    fn the_bounds_are_inclusive() {
        let at_bound = LogId::new(MAX_TERM, MAX_INDEX);
        let body = MessageBody::RequestVote { last_log_id: at_bound };
        assert!(check_bounds(&message(MAX_TERM.0, body.clone())).is_ok());
        assert!(check_bounds(&message(MAX_TERM.0 + 1, body)).is_err());
        let past = LogId::new(Term(1), LogIndex(MAX_INDEX.0 + 1));
        assert!(check_bounds(&message(1, MessageBody::PreVote { last_log_id: past })).is_err());
    }

    #[test]
    fn every_index_of_a_response_is_checked() {
        let huge = LogIndex(u64::MAX);
        let rejected = |rejected_prev_index, first_index, conflict_term| {
            message(
                1,
                MessageBody::AppendEntriesResponse(AppendResponse::Rejected {
                    rejected_prev_index,
                    hint: ConflictHint { conflict_term, first_index },
                }),
            )
        };
        assert!(check_bounds(&rejected(LogIndex(1), LogIndex(1), None)).is_ok());
        assert!(check_bounds(&rejected(huge, LogIndex(1), None)).is_err());
        assert!(check_bounds(&rejected(LogIndex(1), huge, None)).is_err());
        assert!(check_bounds(&rejected(LogIndex(1), LogIndex(1), Some(Term(u64::MAX)))).is_err());
        let accepted = AppendResponse::Accepted { match_index: huge };
        assert!(check_bounds(&message(1, MessageBody::AppendEntriesResponse(accepted))).is_err());
    }
}
