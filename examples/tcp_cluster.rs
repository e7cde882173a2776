//! A three-node cluster as a real deployment runs it, in one process: each node listens on
//! its own TCP port (`TcpTransport`, on loopback) and keeps its log on disk (`WalStorage`).
//!
//! It binds the three listeners first (port 0: the system picks free ports), so every node's
//! address is known before any node starts; each node gets the *other* nodes as its peers,
//! and one `WalIdentity` gives both its storage and its transport the cluster id. Once a
//! leader is elected and commands are applied, it shows that a running node's data directory
//! is locked, shuts a follower down, commits more commands without it, and restarts it on the
//! same port from its log: it rebuilds its store from the log and catches up on what it
//! missed.
//!
//! ```bash
//! cargo run --example tcp_cluster
//! RUST_LOG=info cargo run --example tcp_cluster
//! ```
//!
//! The logs go to a fresh temporary directory, or under `RAFT_DATA_DIR` when it is set.

#[allow(dead_code)]
mod common;
#[allow(dead_code)]
#[path = "kv_store.rs"]
mod kv_store;

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, bail, ensure};
use kv_store::{KvCommand, KvStore, decode_response, encode_command};
use raft_consensus::storage::{WalIdentity, WalOptions, WalStorage};
use raft_consensus::transport::{TcpConfig, TcpTransport};
use raft_consensus::{Config, NodeId, RaftNode, ReadPolicy, StorageError};
use tokio::net::TcpListener;

/// The cluster id, stamped on every node's log and checked in every TCP handshake.
const CLUSTER_ID: u64 = 0x7C9_C1A5;
const MEMBERS: [NodeId; 3] = [NodeId(1), NodeId(2), NodeId(3)];
const WAIT: Duration = Duration::from_secs(10);

/// A running node.
struct Running {
    node: RaftNode,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    common::init_logging();
    let data = common::DataDirs::new()?;

    // 1. Addresses first: bind every listener, then read the ports the system picked.
    let mut listeners = Vec::new();
    for id in MEMBERS {
        let listener = TcpListener::bind("127.0.0.1:0").await.context("binding a listener")?;
        println!("{id} listens on {}", listener.local_addr()?);
        listeners.push(listener);
    }
    let addresses = listeners.iter().map(TcpListener::local_addr).collect::<Result<Vec<_>, _>>()?;

    // 2. Start each node with its log, and the other nodes as its peers.
    let mut nodes = Vec::new();
    for (id, listener) in MEMBERS.into_iter().zip(listeners) {
        nodes.push(start_node(id, listener, &addresses, &data)?);
    }

    let leader = common::wait_for_leader(&nodes[0].node, None, WAIT).await?;
    println!("{leader} was elected leader for term {}", nodes[0].node.status().term);
    run_commands(
        &nodes,
        &[
            KvCommand::Set { key: "x".into(), value: "1".into() },
            KvCommand::Set { key: "y".into(), value: "2".into() },
        ],
    )
    .await?;
    show_agreement(&nodes).await?;

    // 3. A running node's data directory is locked: a second storage on it is refused.
    let follower = MEMBERS.into_iter().find(|id| *id != leader).context("a follower")?;
    match WalStorage::open(data.node_dir(follower), identity(follower), WalOptions::default()) {
        Err(error @ StorageError::DirectoryLocked { .. }) => {
            println!("Opening {follower}'s data directory a second time is refused: {error}");
        }
        Err(other) => return Err(other.into()),
        Ok(_) => bail!("a second storage opened {follower}'s data directory while it runs"),
    }

    // 4. Shut the follower down: its port and data directory are free once that returns.
    let position = nodes.iter().position(|running| running.node.id() == follower);
    let stopped = nodes.remove(position.context("the follower is running")?);
    stopped.node.shutdown().await?;
    let position = MEMBERS.iter().position(|id| *id == follower);
    let address = addresses[position.context("the follower is a member")?];
    println!("Stopped {follower}; its address {address} is free again");

    run_commands(
        &nodes,
        &[
            KvCommand::Set { key: "z".into(), value: "3".into() },
            KvCommand::Delete { key: "x".into() },
        ],
    )
    .await?;
    show_agreement(&nodes).await?;

    // 5. Restart it on the same port, from its log.
    let listener = TcpListener::bind(address)
        .await
        .with_context(|| format!("binding {address} again after {follower} stopped"))?;
    let restarted = start_node(follower, listener, &addresses, &data)?;
    let status = restarted.node.status();
    println!(
        "{follower} restarted on {address} from its log: term {}, log through index {}",
        status.term, status.last_log_index
    );
    nodes.push(restarted);
    show_agreement(&nodes).await?;
    println!("{follower} caught up with what it missed while it was down");

    for running in &nodes {
        running.node.shutdown().await?;
    }
    println!(
        "done: 3 nodes over TCP with write-ahead logs; {follower} restarted on its port and caught up"
    );
    Ok(())
}

/// The identity node `id`'s log is opened with; its transport takes the cluster id from it.
fn identity(id: NodeId) -> WalIdentity {
    WalIdentity { node_id: id, cluster_id: CLUSTER_ID }
}

/// Starts node `id`: its write-ahead log, a TCP transport on `listener` dialling the other
/// members at `addresses`, and the runtime.
fn start_node(
    id: NodeId,
    listener: TcpListener,
    addresses: &[SocketAddr],
    data: &common::DataDirs,
) -> anyhow::Result<Running> {
    let identity = identity(id);
    let dir = data.node_dir(id);
    let storage = WalStorage::open(&dir, identity, WalOptions::default())
        .with_context(|| format!("opening {id}'s write-ahead log in {}", dir.display()))?;
    println!("{id} keeps its log in {}", dir.display());
    // Peers are the other nodes: the node's own id among them is refused.
    let peers = MEMBERS.into_iter().zip(addresses.iter().copied()).filter(|(peer, _)| *peer != id);
    let transport = TcpTransport::start(id, listener, peers, TcpConfig::for_identity(&identity))?;
    let node = RaftNode::start(id, MEMBERS, Config::default(), storage, transport, KvStore::new())?;
    Ok(Running { node })
}

/// Proposes each command through the current leader and prints its result.
async fn run_commands(nodes: &[Running], commands: &[KvCommand]) -> anyhow::Result<()> {
    let running: Vec<&RaftNode> = nodes.iter().map(|running| &running.node).collect();
    for command in commands {
        let result = common::propose(&running, encode_command(command)).await?;
        println!("{command:?} -> {:?}", decode_response(&result)?);
    }
    Ok(())
}

/// Waits until every node has applied what the leader committed, prints each store and
/// checks that they are equal.
async fn show_agreement(nodes: &[Running]) -> anyhow::Result<()> {
    let leader = common::wait_for_leader(&nodes[0].node, None, WAIT).await?;
    let commit_index = nodes
        .iter()
        .find(|running| running.node.id() == leader)
        .map(|running| running.node.status().commit_index)
        .context("the leader is running")?;
    let mut contents = Vec::new();
    for running in nodes {
        let status = running
            .node
            .wait_for(WAIT, |status| status.applied_index >= commit_index)
            .await
            .with_context(|| format!("{} did not apply up to {commit_index}", running.node.id()))?;
        // A linearizable read of the node's own store, run on the node.
        let store = running
            .node
            .read(ReadPolicy::ReadIndex, |store: &KvStore| store.clone())
            .await
            .with_context(|| format!("reading {}'s store", running.node.id()))?;
        println!(
            "{} ({}, applied index {}): {store:?}",
            status.id, status.role, status.applied_index
        );
        contents.push(store);
    }
    ensure!(contents.windows(2).all(|pair| pair[0] == pair[1]), "the nodes' stores differ");
    Ok(())
}
