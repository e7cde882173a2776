//! The invariants every simulated run is held to, and [`Violation`], what a broken one
//! reports.

use std::collections::BTreeMap;
use std::fmt;

use crate::core::RaftCore;
use crate::message::{Message, MessageBody};
use crate::node::ApplyResult;
use crate::types::{LogIndex, NodeId, Term};

use super::trace::TraceHash;

/// Most violations kept per run; the first ones are the interesting ones.
const MAX_VIOLATIONS: usize = 16;

/// A broken invariant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Violation {
    /// Election safety: two leaders in one term.
    TwoLeaders {
        /// The term.
        term: u64,
        /// The leader seen first.
        first: NodeId,
        /// The other leader.
        second: NodeId,
        /// Virtual time of the second.
        at_ms: u64,
    },
    /// One vote per term (§5.2): a node granted its vote in one term to two candidates.
    TwoVotes {
        /// The voter.
        voter: NodeId,
        /// The term.
        term: u64,
        /// The candidate it voted for first.
        first: NodeId,
        /// The other candidate.
        second: NodeId,
        /// Virtual time of the second vote.
        at_ms: u64,
    },
    /// Log matching: two logs agree on an entry's term but differ before it.
    LogMismatch {
        /// The two nodes.
        nodes: (NodeId, NodeId),
        /// The index where both hold the same term.
        agreed_index: u64,
        /// The earlier index where they differ.
        differing_index: u64,
        /// Virtual time of the check.
        at_ms: u64,
    },
    /// Two nodes hold different entries at an index both consider committed.
    CommittedEntriesDiffer {
        /// The two nodes.
        nodes: (NodeId, NodeId),
        /// The index.
        index: u64,
        /// Virtual time of the check.
        at_ms: u64,
    },
    /// State machine safety: a node applied something else at an index than another did,
    /// or applied out of order or twice.
    StateMachineSafety {
        /// The node.
        node: NodeId,
        /// The index.
        index: u64,
        /// What differed.
        detail: String,
        /// Virtual time.
        at_ms: u64,
    },
    /// Durability: an operation a client saw succeed is missing after convergence.
    AcknowledgedWriteLost {
        /// The node whose log lacks it.
        node: NodeId,
        /// The index it was acknowledged at.
        index: u64,
        /// The term it was acknowledged in.
        term: u64,
    },
    /// The client history is not linearizable.
    NotLinearizable {
        /// The operations of the partition (for the key-value workload: the key) that cannot
        /// be ordered, one per line.
        operations: String,
    },
    /// The run panicked: a protocol invariant's `debug_assert!` (in builds with debug
    /// assertions: tests and the `sim` profile) or another bug fired.
    Panic {
        /// The panic message.
        message: String,
        /// Virtual time.
        at_ms: u64,
    },
    /// After every fault was healed, the cluster did not converge in time.
    NoConvergence {
        /// What was still wrong.
        detail: String,
    },
    /// A membership rule broke: a node removed by a committed configuration led a later term
    /// or deposed a leader (it must never disrupt the cluster it left), or a leader accepted
    /// a second membership change while one was under way.
    Membership {
        /// What happened.
        detail: String,
        /// Virtual time.
        at_ms: u64,
    },
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Violation::TwoLeaders { term, first, second, at_ms } => {
                write!(
                    f,
                    "election safety: {first} and {second} both led term {term} (at {at_ms} ms)"
                )
            }
            Violation::TwoVotes { voter, term, first, second, at_ms } => write!(
                f,
                "one vote per term: {voter} voted for {first} and for {second} in term {term} (at {at_ms} ms)"
            ),
            Violation::LogMismatch { nodes, agreed_index, differing_index, at_ms } => write!(
                f,
                "log matching: {} and {} agree on the term at index {agreed_index} but differ at index {differing_index} (at {at_ms} ms)",
                nodes.0, nodes.1
            ),
            Violation::CommittedEntriesDiffer { nodes, index, at_ms } => write!(
                f,
                "committed entries differ: {} and {} both consider index {index} committed but hold different entries (at {at_ms} ms)",
                nodes.0, nodes.1
            ),
            Violation::StateMachineSafety { node, index, detail, at_ms } => {
                write!(f, "state machine safety: {node} at index {index}: {detail} (at {at_ms} ms)")
            }
            Violation::AcknowledgedWriteLost { node, index, term } => write!(
                f,
                "durability: the operation acknowledged at index {index} in term {term} is not in {node}'s log after convergence"
            ),
            Violation::NotLinearizable { operations } => {
                write!(f, "linearizability: these operations cannot be linearized:\n{operations}")
            }
            Violation::Panic { message, at_ms } => write!(f, "panic at {at_ms} ms: {message}"),
            Violation::NoConvergence { detail } => write!(f, "liveness after healing: {detail}"),
            Violation::Membership { detail, at_ms } => {
                write!(f, "membership: {detail} (at {at_ms} ms)")
            }
        }
    }
}

/// What the checker remembers across a run.
#[derive(Debug, Default)]
pub(crate) struct Checker {
    leaders_by_term: BTreeMap<Term, NodeId>,
    /// Every vote granted: (voter, term) -> candidate.
    votes: BTreeMap<(NodeId, Term), NodeId>,
    /// Every command applied anywhere: index -> (term, hash of command, hash of result).
    applied: BTreeMap<LogIndex, (Term, u64, u64)>,
    violations: Vec<Violation>,
}

impl Checker {
    pub(crate) fn report(&mut self, violation: Violation) {
        if self.violations.len() < MAX_VIOLATIONS && !self.violations.contains(&violation) {
            self.violations.push(violation);
        }
    }

    pub(crate) fn violations(&self) -> &[Violation] {
        &self.violations
    }

    /// Each term that had a leader, in order, with its leader.
    pub(crate) fn leaders(&self) -> impl Iterator<Item = (Term, NodeId)> + '_ {
        self.leaders_by_term.iter().map(|(term, leader)| (*term, *leader))
    }

    pub(crate) fn into_violations(self) -> Vec<Violation> {
        self.violations
    }

    /// Election safety: `node` leads `term`.
    pub(crate) fn on_leader(&mut self, term: Term, node: NodeId, now_ms: u64) {
        let first = *self.leaders_by_term.entry(term).or_insert(node);
        if first != node {
            self.report(Violation::TwoLeaders { term: term.0, first, second: node, at_ms: now_ms });
        }
    }

    /// One vote per term: `voter` sent a vote granted to `candidate` in `term`. Every vote a
    /// node sends passes here (a vote is sent only once it is durable), so a node that votes
    /// twice in a term is caught whether or not the second vote elects anyone.
    pub(crate) fn on_vote_granted(
        &mut self,
        voter: NodeId,
        term: Term,
        candidate: NodeId,
        now_ms: u64,
    ) {
        let first = *self.votes.entry((voter, term)).or_insert(candidate);
        if first != candidate {
            self.report(Violation::TwoVotes {
                voter,
                term: term.0,
                first,
                second: candidate,
                at_ms: now_ms,
            });
        }
    }

    /// A node sent `message`: votes granted are checked (one vote per term).
    pub(crate) fn on_sent(&mut self, message: &Message, now_ms: u64) {
        if let MessageBody::RequestVoteResponse { granted: true } = message.body {
            self.on_vote_granted(message.from, message.term, message.to, now_ms);
        }
    }

    /// [`on_applied`](Self::on_applied) with the state machine's result as it returned it (an
    /// error counts as its message's bytes).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn on_applied_result(
        &mut self,
        node: NodeId,
        last_applied: &mut LogIndex,
        index: LogIndex,
        term: Term,
        command: &[u8],
        result: &ApplyResult,
        now_ms: u64,
    ) {
        let result_bytes = match result {
            Ok(bytes) => bytes.clone(),
            Err(error) => error.to_string().into_bytes(),
        };
        self.on_applied(node, last_applied, index, term, command, &result_bytes, now_ms);
    }

    /// State machine safety: `node`, whose last applied index was `last_applied`, applied
    /// `command` at `index` in `term` with `result`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn on_applied(
        &mut self,
        node: NodeId,
        last_applied: &mut LogIndex,
        index: LogIndex,
        term: Term,
        command: &[u8],
        result: &[u8],
        now_ms: u64,
    ) {
        if index <= *last_applied {
            self.report(Violation::StateMachineSafety {
                node,
                index: index.0,
                detail: format!("applied again or out of order after index {last_applied}"),
                at_ms: now_ms,
            });
        }
        *last_applied = index;
        let mut command_hash = TraceHash::default();
        command_hash.add_bytes(command);
        let mut result_hash = TraceHash::default();
        result_hash.add_bytes(result);
        let record = (term, command_hash.value(), result_hash.value());
        let first = *self.applied.entry(index).or_insert(record);
        if first != record {
            let detail = if first.0 != term || first.1 != record.1 {
                format!(
                    "applied the entry of term {term}, another node applied one of term {} (or another command)",
                    first.0
                )
            } else {
                String::from("the same command gave a different result (non-deterministic apply)")
            };
            self.report(Violation::StateMachineSafety {
                node,
                index: index.0,
                detail,
                at_ms: now_ms,
            });
        }
    }

    /// Log matching, and agreement of committed prefixes, between every pair of running nodes
    /// (over the entries both still hold: compaction drops the ones a snapshot covers).
    pub(crate) fn check_log_matching(&mut self, cores: &[&RaftCore], now_ms: u64) {
        for (position, first) in cores.iter().enumerate() {
            for second in &cores[position + 1..] {
                let committed = first.commit_index().min(second.commit_index());
                let mut index = first.first_log_index().max(second.first_log_index());
                while index <= committed {
                    if first.entry(index) != second.entry(index) {
                        self.report(Violation::CommittedEntriesDiffer {
                            nodes: (first.id(), second.id()),
                            index: index.0,
                            at_ms: now_ms,
                        });
                        break;
                    }
                    index = index.next();
                }
                if let Some((agreed, differing)) = first_log_mismatch(first, second) {
                    self.report(Violation::LogMismatch {
                        nodes: (first.id(), second.id()),
                        agreed_index: agreed.0,
                        differing_index: differing.0,
                        at_ms: now_ms,
                    });
                }
            }
        }
    }
}

/// The highest index at which both logs hold the same term, and an earlier index where they
/// differ, if there is one (among the entries both hold).
fn first_log_mismatch(first: &RaftCore, second: &RaftCore) -> Option<(LogIndex, LogIndex)> {
    let shared_start = first.first_log_index().max(second.first_log_index());
    let shared_end = first.last_log_id().index.min(second.last_log_id().index);
    let mut agreed = shared_end;
    while agreed >= shared_start
        && first.entry(agreed).map(|entry| entry.term)
            != second.entry(agreed).map(|entry| entry.term)
    {
        agreed = agreed.prev();
    }
    let mut index = shared_start;
    while index <= agreed {
        if first.entry(index) != second.entry(index) {
            return Some((agreed, index));
        }
        index = index.next();
    }
    None
}
