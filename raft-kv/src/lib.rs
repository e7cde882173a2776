//! `raft-kv`: a replicated key-value service built only on `raft_consensus`'s public API.
//!
//! This crate holds the service's replicated state machine ([`KvStateMachine`]): get, put,
//! delete and compare-and-swap on byte keys and values, with snapshots and deduplication of
//! retried writes. [`server`] serves it over HTTP/JSON as one node of a Raft cluster.

pub mod base64;
pub mod client;
pub mod command;
mod fast_lane;
pub mod http2_client;
pub mod http_endpoint;
pub mod http_server;
mod members;
pub mod server;
pub mod state_machine;
pub mod tls;

pub use command::{Command, CommandError, Request, Response};
pub use state_machine::KvStateMachine;
