//! `raft-kv`: a replicated key-value service built only on `raft_consensus`'s public API.
//!
//! This crate holds the service's replicated state machine ([`KvStateMachine`]): get, put,
//! delete and compare-and-swap on byte keys and values, with snapshots and deduplication of
//! retried writes. The HTTP server, client and load generator build on it.

pub mod command;
pub mod state_machine;

pub use command::{Command, CommandError, Request, Response};
pub use state_machine::KvStateMachine;
