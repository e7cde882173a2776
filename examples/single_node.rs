//! A single Raft node running the example key-value store.
//!
//! The node starts as a follower, its election timeout fires, it elects itself (it is the
//! whole cluster), and then every command goes through the Raft log: appended, persisted,
//! committed and applied, with the store's result printed.
//!
//! ```bash
//! cargo run --example single_node
//! RUST_LOG=debug cargo run --example single_node
//! ```

#[allow(dead_code)]
mod common;
#[allow(dead_code)]
#[path = "kv_store.rs"]
mod kv_store;

use std::time::Duration;

use anyhow::Context;
use kv_store::{KvCommand, KvStore, decode_response, encode_command};
use raft_consensus::transport::ChannelNetwork;
use raft_consensus::{Config, NodeId, RaftNode};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    common::init_logging();

    let id = NodeId(1);
    let data = common::DataDirs::new()?;
    let network = ChannelNetwork::new();
    let node = RaftNode::start(
        id,
        [id],
        Config::default(),
        data.storage(id)?,
        network.join(id),
        KvStore::new(),
    )?;
    println!("{id} started as {}", node.status().role);

    let status = node
        .wait_for(Duration::from_secs(5), |status| status.is_leader())
        .await
        .context("the node did not elect itself")?;
    println!("{id} is the leader of term {}", status.term);

    let commands = [
        KvCommand::Set { key: "language".into(), value: "Rust".into() },
        KvCommand::Set { key: "protocol".into(), value: "Raft".into() },
        KvCommand::Get { key: "language".into() },
        KvCommand::Delete { key: "protocol".into() },
        KvCommand::Get { key: "protocol".into() },
    ];
    for command in commands {
        let result = node.propose(encode_command(&command)).await?;
        let response = decode_response(&result)?;
        println!("{command:?} -> {response:?}");
    }

    let status = node.status();
    println!(
        "{id}: role {}, term {}, commit index {}, applied index {}",
        status.role, status.term, status.commit_index, status.applied_index
    );
    node.shutdown().await?;
    Ok(())
}
