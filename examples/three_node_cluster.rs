//! A three-node Raft cluster in one process, replicating the example key-value store.
//!
//! All three nodes start as followers. One times out, becomes a candidate, wins a majority
//! and leads: it sends heartbeats every 100 ms. Commands proposed to the leader are
//! replicated and applied on every node, which the example shows by printing each node's
//! store. Then it stops the leader; the two others elect a new one in a higher term, and more
//! commands commit with two of three nodes.
//!
//! ```bash
//! RUST_LOG=info cargo run --example three_node_cluster
//! RUST_LOG=debug cargo run --example three_node_cluster
//! ```

#[allow(dead_code)]
mod common;
#[allow(dead_code)]
#[path = "kv_store.rs"]
mod kv_store;

use std::time::Duration;

use anyhow::{Context, ensure};
use kv_store::{KvCommand, KvStore, decode_response, encode_command};
use raft_consensus::transport::ChannelNetwork;
use raft_consensus::{Config, NodeId, RaftNode, ReadPolicy};

const ELECTION_WAIT: Duration = Duration::from_secs(5);

struct ClusterMember {
    node: RaftNode,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    common::init_logging();

    let ids = [NodeId(1), NodeId(2), NodeId(3)];
    let data = common::DataDirs::new()?;
    let network = ChannelNetwork::new();
    let mut members = Vec::new();
    for id in ids {
        let node = RaftNode::start(
            id,
            ids,
            Config::default(),
            data.storage(id)?,
            network.join(id),
            KvStore::new(),
        )?;
        println!("{id} started as {}", node.status().role);
        members.push(ClusterMember { node });
    }

    let leader = common::wait_for_leader(&members[0].node, None, ELECTION_WAIT).await?;
    let term = members[0].node.status().term;
    println!("{leader} was elected leader for term {term}");

    run_commands(
        &members,
        &[
            KvCommand::Set { key: "x".into(), value: "1".into() },
            KvCommand::Set { key: "y".into(), value: "2".into() },
            KvCommand::Set { key: "z".into(), value: "3".into() },
            KvCommand::Get { key: "y".into() },
        ],
    )
    .await?;
    show_agreement(&members).await?;

    println!("Stopping the leader, {leader}");
    let position = members
        .iter()
        .position(|member| member.node.id() == leader)
        .context("the leader is one of the members")?;
    let stopped = members.remove(position);
    stopped.node.shutdown().await?;
    network.disconnect(leader);

    let new_leader = common::wait_for_leader(&members[0].node, Some(leader), ELECTION_WAIT).await?;
    let new_term = members[0].node.status().term;
    ensure!(new_term > term, "the new leader's term {new_term} is not above {term}");
    println!("{new_leader} was elected leader for term {new_term}");

    run_commands(
        &members,
        &[
            KvCommand::Set { key: "w".into(), value: "4".into() },
            KvCommand::Delete { key: "x".into() },
        ],
    )
    .await?;
    show_agreement(&members).await?;

    for member in &members {
        member.node.shutdown().await?;
    }
    println!("Done: the cluster kept serving after losing its leader");
    Ok(())
}

/// Proposes each command through the current leader and prints its result.
async fn run_commands(members: &[ClusterMember], commands: &[KvCommand]) -> anyhow::Result<()> {
    let nodes: Vec<&RaftNode> = members.iter().map(|member| &member.node).collect();
    for command in commands {
        let result = common::propose(&nodes, encode_command(command)).await?;
        println!("{command:?} -> {:?}", decode_response(&result)?);
    }
    Ok(())
}

/// Waits until every member has applied what the leader committed, prints each member's
/// store and checks that they are equal.
async fn show_agreement(members: &[ClusterMember]) -> anyhow::Result<()> {
    let commit_index = members
        .iter()
        .map(|member| member.node.status())
        .find(|status| status.is_leader())
        .context("a leader is running")?
        .commit_index;
    for member in members {
        member
            .node
            .wait_for(ELECTION_WAIT, |status| status.applied_index >= commit_index)
            .await
            .with_context(|| format!("{} did not apply up to {commit_index}", member.node.id()))?;
    }
    let mut contents = Vec::new();
    for member in members {
        // A linearizable read of the node's own store, run on the node's task.
        let store = member
            .node
            .read(ReadPolicy::ReadIndex, |store: &KvStore| store.clone())
            .await
            .with_context(|| format!("reading {}'s store", member.node.id()))?;
        let status = member.node.status();
        println!(
            "{} ({}, term {}, applied index {}): {store:?}",
            status.id, status.role, status.term, status.applied_index
        );
        contents.push(store);
    }
    ensure!(contents.windows(2).all(|pair| pair[0] == pair[1]), "the nodes' stores differ");
    println!("All {} running nodes hold the same data", members.len());
    Ok(())
}
