//! [`Endpoint`]: how a [`Client`](super::Client) reaches one member to propose a command, and
//! [`Failure`], what a failed attempt means for a retry. The library implements it for
//! [`RaftNode`] (a node in the same process); an application implements it for its own
//! network API.

use std::future::Future;

use bytes::Bytes;

use crate::error::ProposeError;
use crate::raft_node::RaftNode;
use crate::types::NodeId;

/// What a failed proposal means for a retry. An [`Endpoint`] sorts its errors into these, and
/// the sort is a promise: [`NotLeader`](Self::NotLeader) and
/// [`Unavailable`](Self::Unavailable) promise that the command was **not** applied and will
/// not be; anything that may have reached the log is [`OutcomeUnknown`](Self::OutcomeUnknown).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failure {
    /// The member is not the leader and did not take the command; the leader is
    /// `leader_hint`, when the member knows one.
    NotLeader {
        /// The leader the member follows, if any.
        leader_hint: Option<NodeId>,
    },
    /// The member cannot take proposals now (it is down, shut down or unreachable before the
    /// command was sent); the command was not appended. Another member may take it.
    Unavailable,
    /// The command may or may not be applied (appended and then leadership lost, or a reply
    /// lost in the network). Retried only when the state machine deduplicates it.
    OutcomeUnknown,
    /// Retrying cannot help (the command is too large, or the state machine refused it):
    /// returned to the caller as it is.
    Final,
}

/// One member as a [`Client`](super::Client) reaches it: "propose these bytes on this node".
///
/// Implemented for [`RaftNode`]. An application implements it over its own API, for example
/// an HTTP request to the node's address, sorting its errors with
/// [`classify`](Self::classify): a refused connection is [`Failure::Unavailable`], a
/// timeout after the request was sent is [`Failure::OutcomeUnknown`].
pub trait Endpoint: Send + Sync {
    /// Why a proposal failed.
    type Error: std::error::Error + Send + Sync + 'static;

    /// Proposes `command` on this member and returns the state machine's result.
    fn propose(&self, command: Bytes) -> impl Future<Output = Result<Vec<u8>, Self::Error>> + Send;

    /// What `error` means for a retry.
    fn classify(error: &Self::Error) -> Failure;
}

impl Endpoint for RaftNode {
    type Error = ProposeError;

    fn propose(
        &self,
        command: Bytes,
    ) -> impl Future<Output = Result<Vec<u8>, ProposeError>> + Send {
        RaftNode::propose(self, command)
    }

    /// `NotLeader` is itself; a `LeadershipTransfer` points at its target; `Shutdown` and
    /// `Storage` (the node stopped; the command was not appended) are
    /// [`Failure::Unavailable`]; `OutcomeUnknown` is itself; `TooLarge` and `Apply` are
    /// [`Failure::Final`].
    fn classify(error: &ProposeError) -> Failure {
        match error {
            ProposeError::NotLeader { leader_hint } => {
                Failure::NotLeader { leader_hint: *leader_hint }
            }
            ProposeError::LeadershipTransfer { target } => {
                Failure::NotLeader { leader_hint: Some(*target) }
            }
            ProposeError::Shutdown | ProposeError::Storage(_) => Failure::Unavailable,
            ProposeError::OutcomeUnknown { .. } => Failure::OutcomeUnknown,
            ProposeError::TooLarge { .. } | ProposeError::Apply(_) => Failure::Final,
        }
    }
}
