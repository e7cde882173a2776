//! The range of terms and log indexes the core accepts from a peer.
//!
//! The core adds one to terms and indexes (`Term::next`, `LogIndex::next`) and those panic
//! rather than wrap. A peer's message must never be able to drive that arithmetic near
//! `u64::MAX`, so any message whose term, or any of whose indexes, is above half the range
//! is malformed: [`check_bounds`] refuses it before anything reads it, and `RaftCore::step`
//! drops it with a warning. Half the range leaves room for 2^63 more elections and entries
//! after the highest accepted value, which no run comes near; no honest cluster comes near
//! the bound either (2^63 entries at a billion a second take three centuries).

use std::fmt;

use crate::message::{AppendResponse, Message, MessageBody};
use crate::types::{LogId, LogIndex, Term};

/// The highest term accepted from a peer.
pub(crate) const MAX_TERM: Term = Term(u64::MAX / 2);

/// The highest log index accepted from a peer.
pub(crate) const MAX_INDEX: LogIndex = LogIndex(u64::MAX / 2);

/// Checks that every term and index in `message` is within [`MAX_TERM`] and [`MAX_INDEX`];
/// otherwise says which is not.
pub(crate) fn check_bounds(message: &Message) -> Result<(), OutOfBounds> {
    check_term("the message's term", message.term)?;
    match &message.body {
        MessageBody::RequestVote { last_log_id, .. } | MessageBody::PreVote { last_log_id } => {
            check_log_id("the last log id", *last_log_id)
        }
        MessageBody::RequestVoteResponse { .. }
        | MessageBody::PreVoteResponse { .. }
        | MessageBody::TimeoutNow
        | MessageBody::ReadIndex { .. }
        | MessageBody::ReadIndexResponse { read_index: None, .. } => Ok(()),
        MessageBody::ReadIndexResponse { read_index: Some(read_index), .. } => {
            check_log_id("the read index", *read_index)
        }
        MessageBody::AppendEntries { prev_log_id, entries, leader_commit, .. } => {
            check_log_id("the previous log id", *prev_log_id)?;
            check_index("the leader's commit index", *leader_commit)?;
            entries.iter().try_for_each(|entry| check_log_id("an entry", entry.log_id()))
        }
        MessageBody::AppendEntriesResponse {
            result: AppendResponse::Accepted { match_index },
            ..
        } => check_index("the match index", *match_index),
        MessageBody::AppendEntriesResponse {
            result: AppendResponse::Rejected { rejected_prev_index, hint },
            ..
        } => {
            check_index("the rejected index", *rejected_prev_index)?;
            check_index("the hint's first index", hint.first_index)?;
            hint.conflict_term.map_or(Ok(()), |term| check_term("the hint's term", term))
        }
        MessageBody::InstallSnapshot { snapshot, .. } => {
            check_log_id("the snapshot's last entry", snapshot.meta.last_included)
        }
        MessageBody::InstallSnapshotResponse { last_included, .. } => {
            check_log_id("the snapshot's last entry", *last_included)
        }
    }
}

/// Which number of a message is out of range. Plain data, so that checking a well-formed
/// message (every message the core steps) costs a few comparisons and no allocation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct OutOfBounds {
    /// What the number is, e.g. "the leader's commit index".
    what: &'static str,
    /// Its value.
    value: u64,
    /// Whether it is a term (else an index).
    is_term: bool,
}

impl fmt::Display for OutOfBounds {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let OutOfBounds { what, value, is_term } = *self;
        if is_term {
            write!(f, "{what} {value} is above the highest accepted term {MAX_TERM}")
        } else {
            write!(f, "{what} {value} is above the highest accepted index {MAX_INDEX}")
        }
    }
}

#[inline]
fn check_term(what: &'static str, term: Term) -> Result<(), OutOfBounds> {
    if term > MAX_TERM {
        return Err(OutOfBounds { what, value: term.0, is_term: true });
    }
    Ok(())
}

#[inline]
fn check_index(what: &'static str, index: LogIndex) -> Result<(), OutOfBounds> {
    if index > MAX_INDEX {
        return Err(OutOfBounds { what, value: index.0, is_term: false });
    }
    Ok(())
}

#[inline]
fn check_log_id(what: &'static str, log_id: LogId) -> Result<(), OutOfBounds> {
    check_term(what, log_id.term)?;
    check_index(what, log_id.index)
}

#[cfg(test)]
mod tests {
    use super::super::{InitialState, RaftCore, Role};
    use super::*;
    use crate::config::Config;
    use crate::message::{ConflictHint, Entry, EntryPayload};
    use crate::snapshot::SnapshotMeta;
    use crate::types::NodeId;

    fn message(term: u64, body: MessageBody) -> Message {
        Message { from: NodeId(1), to: NodeId(2), term: Term(term), body }
    }

    #[test]
    fn the_bounds_are_inclusive() {
        let at_bound = LogId::new(MAX_TERM, MAX_INDEX);
        let body = MessageBody::RequestVote { last_log_id: at_bound, leadership_transfer: false };
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
                MessageBody::AppendEntriesResponse {
                    result: AppendResponse::Rejected {
                        rejected_prev_index,
                        hint: ConflictHint { conflict_term, first_index },
                    },
                    round: crate::types::HeartbeatRound(0),
                },
            )
        };
        assert!(check_bounds(&rejected(LogIndex(1), LogIndex(1), None)).is_ok());
        assert!(check_bounds(&rejected(huge, LogIndex(1), None)).is_err());
        assert!(check_bounds(&rejected(LogIndex(1), huge, None)).is_err());
        assert!(check_bounds(&rejected(LogIndex(1), LogIndex(1), Some(Term(u64::MAX)))).is_err());
        let accepted = AppendResponse::Accepted { match_index: huge };
        assert!(
            check_bounds(&message(
                1,
                MessageBody::AppendEntriesResponse {
                    result: accepted,
                    round: crate::types::HeartbeatRound(0)
                }
            ))
            .is_err()
        );
    }

    /// Node 2 of {1, 2}, following node 1 in term 1.
    fn follower() -> RaftCore {
        let config = Config { pre_vote: false, ..Config::default() };
        let mut core =
            RaftCore::new(NodeId(2), [NodeId(1), NodeId(2)], config, InitialState::default(), 2)
                .expect("a valid start");
        core.tick(0);
        core.step(Message {
            from: NodeId(1),
            to: NodeId(2),
            term: Term(1),
            body: MessageBody::AppendEntries {
                prev_log_id: LogId::default(),
                entries: vec![Entry {
                    term: Term(1),
                    index: LogIndex(1),
                    payload: EntryPayload::Blank,
                }],
                leader_commit: LogIndex(0),
                round: crate::types::HeartbeatRound(0),
            },
        });
        assert_eq!((core.term(), core.leader_id()), (Term(1), Some(NodeId(1))));
        core
    }

    /// Node 1 of {1, 2}, leading term 1.
    fn leader() -> RaftCore {
        let config = Config { pre_vote: false, ..Config::default() };
        let mut core =
            RaftCore::new(NodeId(1), [NodeId(1), NodeId(2)], config, InitialState::default(), 1)
                .expect("a valid start");
        core.tick(0);
        core.tick(10_000);
        core.step(Message {
            from: NodeId(2),
            to: NodeId(1),
            term: Term(1),
            body: MessageBody::RequestVoteResponse { granted: true },
        });
        assert_eq!((core.term(), core.role()), (Term(1), Role::Leader));
        let ready = core.ready();
        core.advance(ready.ack);
        core
    }

    fn snapshot_meta(last_included: LogId) -> SnapshotMeta {
        SnapshotMeta {
            last_included,
            configuration: crate::core::Configuration::of_voters([NodeId(1), NodeId(2)]),
        }
    }

    /// One message of every kind, with the given term and with every index set to `index`.
    fn every_kind(index: LogIndex) -> Vec<MessageBody> {
        let log_id = LogId::new(Term(1), index);
        let entry = Entry { term: Term(1), index, payload: EntryPayload::Blank };
        vec![
            MessageBody::RequestVote { last_log_id: log_id, leadership_transfer: false },
            MessageBody::RequestVoteResponse { granted: true },
            MessageBody::PreVote { last_log_id: log_id },
            MessageBody::PreVoteResponse { granted: true },
            MessageBody::PreVoteResponse { granted: false },
            MessageBody::AppendEntries {
                prev_log_id: log_id,
                entries: vec![entry.clone()],
                leader_commit: index,
                round: crate::types::HeartbeatRound(0),
            },
            MessageBody::AppendEntries {
                prev_log_id: LogId::new(Term(1), LogIndex(1)),
                entries: Vec::new(),
                leader_commit: index,
                round: crate::types::HeartbeatRound(0),
            },
            MessageBody::AppendEntries {
                prev_log_id: LogId::new(Term(1), LogIndex(1)),
                entries: vec![entry],
                leader_commit: LogIndex(1),
                round: crate::types::HeartbeatRound(0),
            },
            MessageBody::AppendEntriesResponse {
                result: AppendResponse::Accepted { match_index: index },
                round: crate::types::HeartbeatRound(0),
            },
            MessageBody::AppendEntriesResponse {
                result: AppendResponse::Rejected {
                    rejected_prev_index: index,
                    hint: ConflictHint { conflict_term: Some(Term(u64::MAX)), first_index: index },
                },
                round: crate::types::HeartbeatRound(0),
            },
            MessageBody::AppendEntriesResponse {
                result: AppendResponse::Rejected {
                    rejected_prev_index: LogIndex(1),
                    hint: ConflictHint { conflict_term: None, first_index: index },
                },
                round: crate::types::HeartbeatRound(0),
            },
            MessageBody::InstallSnapshot {
                snapshot: crate::snapshot::Snapshot::new(snapshot_meta(log_id), u64::MAX, 0),
                offset: index.0,
                data: bytes::Bytes::from_static(b"chunk"),
            },
            MessageBody::InstallSnapshotResponse {
                snapshot: crate::snapshot::SnapshotId(index.0),
                last_included: log_id,
                received: index.0,
                installed: true,
                gap: false,
            },
        ]
    }

    fn deliver_to(core: &mut RaftCore, term: Term, body: MessageBody) {
        let from = if core.id() == NodeId(1) { NodeId(2) } else { NodeId(1) };
        core.step(Message { from, to: core.id(), term, body });
        core.check_invariants();
        let ready = core.ready();
        core.advance(ready.ack);
        core.check_invariants();
    }

    #[test]
    fn a_peer_sending_the_largest_term_changes_nothing() {
        for body in every_kind(LogIndex(1)) {
            for mut core in [follower(), leader()] {
                let (term, role) = (core.term(), core.role());
                deliver_to(&mut core, Term(u64::MAX), body.clone());
                assert_eq!((core.term(), core.role()), (term, role), "after {body:?}");
                deliver_to(&mut core, Term(MAX_TERM.0 + 1), body.clone());
                assert_eq!((core.term(), core.role()), (term, role), "after {body:?}");
            }
        }
    }

    #[test]
    fn a_peer_sending_the_largest_index_changes_nothing() {
        for body in every_kind(LogIndex(u64::MAX)) {
            for mut core in [follower(), leader()] {
                let before = (core.term(), core.role(), core.last_log_id(), core.commit_index());
                deliver_to(&mut core, Term(1), body.clone());
                let after = (core.term(), core.role(), core.last_log_id(), core.commit_index());
                assert_eq!(before, after, "after {body:?}");
            }
        }
    }

    #[test]
    fn a_peer_at_the_bounds_cannot_make_a_node_overflow() {
        // Everything at the highest accepted values is handled without overflowing.
        for body in every_kind(MAX_INDEX) {
            for mut core in [follower(), leader()] {
                deliver_to(&mut core, MAX_TERM, body.clone());
                assert!(core.term() <= MAX_TERM);
            }
        }
        // A snapshot ending at the highest accepted index is installed, and the log can grow
        // past it without wrapping; a peer's entry beyond the bound is refused.
        let mut core = follower();
        let last = LogId::new(Term(1), MAX_INDEX);
        deliver_to(
            &mut core,
            Term(1),
            MessageBody::InstallSnapshot {
                snapshot: crate::snapshot::Snapshot::of_bytes(snapshot_meta(last), b"s"),
                offset: 0,
                data: bytes::Bytes::from_static(b"s"),
            },
        );
        assert_eq!((core.last_log_id(), core.commit_index()), (last, MAX_INDEX));
        let beyond = Entry { term: Term(1), index: MAX_INDEX.next(), payload: EntryPayload::Blank };
        let append = MessageBody::AppendEntries {
            prev_log_id: last,
            entries: vec![beyond],
            leader_commit: MAX_INDEX.next(),
            round: crate::types::HeartbeatRound(0),
        };
        deliver_to(&mut core, Term(1), append);
        assert_eq!(core.last_log_id(), last);
        core.tick(1_000_000);
        core.tick(2_000_000);
        assert_eq!(core.term(), Term(2), "the node can still stand for election");
        core.check_invariants();
    }
}
