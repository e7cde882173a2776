//! # raft_consensus
//!
//! A Raft consensus library: a sans-I/O protocol [`core`], pluggable [`storage`] and
//! [`transport`], and [`RaftNode`], the tokio runtime that ties them to your
//! [`StateMachine`].
#![deny(missing_docs)]

pub mod config;
pub mod core;
mod driver;
pub mod error;
pub mod hard_state;
pub mod message;
mod raft_node;
pub mod state_machine;
mod status;
pub mod storage;
pub mod transport;
pub mod types;

pub use config::Config;
pub use core::Role;
pub use error::{ConfigError, ProposeError, StartError, StorageError, WaitError};
pub use hard_state::HardState;
pub use message::{Entry, EntryPayload, Message, MessageBody};
pub use raft_node::RaftNode;
pub use state_machine::StateMachine;
pub use status::Status;
pub use types::{LogId, LogIndex, NodeId, Term};
