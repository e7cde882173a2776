//! A leader-following client, and retry deduplication for the state machine.
//!
//! | item | side | owns |
//! |---|---|---|
//! | [`Client`] | client | proposing through the leader: the members, the cached leader, `NotLeader` hints, backoff with jitter, the [`RetryPolicy`] limits, [`ClientError`] |
//! | [`Endpoint`], [`Failure`] | client | reaching one member; implemented for [`RaftNode`](crate::RaftNode), and by an application for its network API |
//! | [`Session`], [`ClientId`], [`SessionStamp`], [`Envelope`] | client | numbering a client's requests, and the bytes that carry the number in front of a command |
//! | [`SessionTable`] | state machine | applying each stamped request once: a retry is answered with the kept result, a stale or conflicting stamp refused; bounded, with a deterministic eviction rule; snapshot-able |
//!
//! Why deduplication: a proposal whose leader loses leadership after appending it fails with
//! [`ProposeError::OutcomeUnknown`](crate::ProposeError::OutcomeUnknown): it may still commit.
//! Retrying it blindly could apply it twice. A [`Client`] retries such a command only when it
//! is stamped ([`Client::propose_in_session`]) or the caller says the state machine
//! deduplicates it ([`Client::propose_deduplicated`]); the state machine's [`SessionTable`]
//! then applies the first copy and answers every later copy with the first one's result.
//!
//! See [`Client`] for a whole example: a three-node cluster in one process and a counter that
//! counts each session request once.

mod endpoint;
mod leader_client;
mod session;
mod session_table;

pub use endpoint::{Endpoint, Failure};
pub use leader_client::{Client, ClientError, NoMembers, RetryPolicy};
pub use session::{
    ClientId, ENVELOPE_HEADER_BYTES, ENVELOPE_TAG, ENVELOPE_VERSION, Envelope, EnvelopeError,
    Session, SessionStamp,
};
pub use session_table::{
    DEFAULT_MAX_SESSIONS, SessionCheck, SessionOutcome, SessionRecord, SessionTable, command_digest,
};
