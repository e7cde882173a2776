//! # raft_consensus
//!
//! A Raft consensus library: replicate a deterministic [`StateMachine`] across a cluster so
//! that every node applies the same commands in the same order.
//!
//! ## Layers
//!
//! | module | owns |
//! |---|---|
//! | [`core`] | the sans-I/O protocol: [`core::RaftCore`], fed time, messages and proposals, producing [`core::Ready`] batches of work |
//! | [`storage`] | the [`storage::Storage`] trait for the durable log and [`HardState`]; [`storage::WalStorage`], a write-ahead log in a (locked) data directory, for real nodes; [`storage::MemoryStorage`], nothing durable, for tests |
//! | [`transport`] | the [`transport::Transport`] trait; [`transport::TcpTransport`] between processes (plain TCP, or mutual TLS with [`transport::PeerTls`]); [`transport::ChannelNetwork`] for nodes in one process (tests, examples) |
//! | [`node`] | [`node::Node`]: one node sans I/O (core, storage, state machine, proposals, snapshot policy), for any runtime to pump |
//! | [`RaftNode`] | the tokio runtime: one task per node that pumps a [`node::Node`] and answers [`RaftNode::propose`] |
//! | [`state_machine`] | the [`StateMachine`] trait your application implements |
//! | [`events`] | [`events::NodeEvent`]s a running node publishes ([`RaftNode::events`]) |
//! | [`client`] | [`client::Client`]: proposes through whichever node leads (following `NotLeader` hints, with backoff), and [`client::SessionTable`], with which a state machine applies a retried command once |
//!
//! ## A three-node cluster in one process
//!
//! ```
//! use std::error::Error;
//! use std::time::Duration;
//!
//! use raft_consensus::storage::MemoryStorage;
//! use raft_consensus::transport::ChannelNetwork;
//! use raft_consensus::{Config, NodeId, RaftNode, StateMachine};
//!
//! /// Appends every command to a list and answers with the list's length.
//! #[derive(Default)]
//! struct Journal(Vec<Vec<u8>>);
//!
//! impl StateMachine for Journal {
//!     fn apply(&mut self, command: &[u8]) -> Result<Vec<u8>, Box<dyn Error + Send + Sync>> {
//!         self.0.push(command.to_vec());
//!         Ok((self.0.len() as u64).to_le_bytes().to_vec())
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn Error>> {
//! let members = [NodeId(1), NodeId(2), NodeId(3)];
//! let network = ChannelNetwork::new();
//! let mut nodes = Vec::new();
//! for id in members {
//!     let transport = network.join(id);
//!     let node = RaftNode::start(id, members, Config::default(), MemoryStorage::new(), transport, Journal::default())?;
//!     nodes.push(node);
//! }
//!
//! // Wait until node 1 knows a leader, then propose through that leader.
//! let status = nodes[0].wait_for(Duration::from_secs(5), |status| status.leader_id.is_some()).await?;
//! let leader = nodes.iter().find(|node| Some(node.id()) == status.leader_id).unwrap();
//! let length = leader.propose(b"hello".to_vec()).await?;
//! assert_eq!(length, 1u64.to_le_bytes());
//!
//! for node in &nodes {
//!     node.shutdown().await?;
//! }
//! # Ok(())
//! # }
//! ```
//!
//! A proposal sent to a follower fails with [`ProposeError::NotLeader`], whose `leader_hint`
//! names the leader to retry on.
//!
//! ## Across processes
//!
//! A real node pairs [`storage::WalStorage`] with [`transport::TcpTransport`], both built from
//! one [`storage::WalIdentity`] (so the cluster id is given once:
//! [`transport::TcpConfig::for_identity`]). `TcpTransport`'s documentation shows the set-up
//! (addresses known before start, peers, shutdown and restart on the same port), and
//! `examples/tcp_cluster.rs` runs it with three nodes. [`Config`]'s "Size limits" says how the
//! size limits of the configuration, the log and the transport relate.
#![deny(missing_docs)]

pub mod client;
pub mod config;
pub mod core;
mod driver;
pub mod error;
pub mod events;
pub mod hard_state;
pub mod linearizability;
pub mod message;
pub mod metrics;
pub mod node;
mod proposals;
mod raft_node;
#[cfg(feature = "sim")]
pub mod sim;
pub mod snapshot;
mod start_checks;
pub mod state_machine;
mod status;
pub mod storage;
mod sync_thread;
pub mod transport;
pub mod types;

pub use config::Config;
pub use core::{Configuration, MemberAddress, ReadPolicy, Role};
pub use error::{
    ConfigError, FatalError, MachineReadError, MembershipError, ProposeError, ReadError,
    StartError, StorageError, StorageErrorKind, TcpStartError, WaitError,
};
pub use hard_state::HardState;
pub use message::{Entry, EntryPayload, Message, MessageBody};
pub use node::Member;
pub use raft_node::RaftNode;
pub use snapshot::{Snapshot, SnapshotMeta};
pub use state_machine::{SnapshotMode, StateMachine};
pub use status::Status;
pub use types::{LogId, LogIndex, NodeId, ReadId, Term};

/// The README's code blocks, compiled and run as doctests so that they stay true.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
