//! A follower that was down while the cluster compacted its log catches up from a snapshot.
//!
//! Three nodes replicate the example key-value store, with small snapshot thresholds: every
//! 200 applied commands each node snapshots its store (`KvStore::snapshot`) and compacts its
//! log, keeping the last 20 entries. One follower is stopped; 1,000 more commands commit
//! without it. When it starts again from its data directory, the entries it lacks are gone
//! from the leader's log, so the leader streams it a snapshot in chunks; the follower restores
//! its store from it (`KvStore::restore`) and continues from the log. The log lines to look
//! for are the leader's `Sending snapshot through ...` and the follower's `Installed snapshot
//! through ...`.
//!
//! ```bash
//! cargo run --example snapshot_catch_up
//! RUST_LOG=debug cargo run --example snapshot_catch_up
//! ```

#[allow(dead_code)]
mod common;
#[allow(dead_code)]
#[path = "kv_store.rs"]
mod kv_store;

use std::time::Duration;

use anyhow::{Context, ensure};
use kv_store::{KvCommand, KvStore, encode_command};
use raft_consensus::transport::ChannelNetwork;
use raft_consensus::{Config, NodeId, RaftNode, ReadPolicy, SnapshotMode};

const WAIT: Duration = Duration::from_secs(10);
/// Commands written while the follower is down.
const WRITES_WHILE_DOWN: usize = 1_000;
/// Commands in flight at once.
const CONCURRENCY: usize = 50;

fn config() -> Config {
    Config {
        snapshot_after_entries: 200,
        snapshot_keep_entries: 20,
        snapshot_chunk_bytes: 4 * 1024,
        // This example is about snapshots: refuse to start without them.
        snapshot_mode: SnapshotMode::Required,
        ..Config::default()
    }
}

struct Member {
    node: RaftNode,
}

fn start(
    id: NodeId,
    ids: [NodeId; 3],
    data: &common::DataDirs,
    network: &ChannelNetwork,
) -> anyhow::Result<Member> {
    let node =
        RaftNode::start(id, ids, config(), data.storage(id)?, network.join(id), KvStore::new())?;
    Ok(Member { node })
}

/// Writes `count` keys, `CONCURRENCY` at a time, through the leader among `members`.
async fn write(members: &[&Member], first: usize, count: usize) -> anyhow::Result<()> {
    let nodes: Vec<RaftNode> = members.iter().map(|member| member.node.clone()).collect();
    for batch_start in (first..first + count).step_by(CONCURRENCY) {
        let mut batch = Vec::new();
        for number in batch_start..(batch_start + CONCURRENCY).min(first + count) {
            let nodes = nodes.clone();
            batch.push(tokio::spawn(async move {
                let command = KvCommand::Set {
                    key: format!("key-{:04}", number % 300),
                    value: format!("value {number}"),
                };
                let nodes: Vec<&RaftNode> = nodes.iter().collect();
                common::propose(&nodes, encode_command(&command)).await
            }));
        }
        for proposal in batch {
            proposal.await.context("a proposal task failed")??;
        }
    }
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    common::init_logging();
    let ids = [NodeId(1), NodeId(2), NodeId(3)];
    let data = common::DataDirs::new()?;
    let network = ChannelNetwork::new();
    let mut members = Vec::new();
    for id in ids {
        members.push(start(id, ids, &data, &network)?);
    }
    let leader = common::wait_for_leader(&members[0].node, None, WAIT).await?;
    println!("{leader} leads; writing 100 keys with every node up");
    write(&members.iter().collect::<Vec<_>>(), 0, 100).await?;

    let lagging = ids.into_iter().find(|id| *id != leader).context("a follower exists")?;
    let position = members.iter().position(|member| member.node.id() == lagging);
    let stopped = members.remove(position.context("the follower is a member")?);
    stopped.node.shutdown().await?;
    network.disconnect(lagging);
    println!("Stopped {lagging}; writing {WRITES_WHILE_DOWN} more keys without it");
    write(&members.iter().collect::<Vec<_>>(), 100, WRITES_WHILE_DOWN).await?;

    let leader_status = members
        .iter()
        .map(|member| member.node.status())
        .find(|status| status.is_leader())
        .context("a leader is running")?;
    println!(
        "{} has committed through index {}; its log now starts at index {}",
        leader_status.id, leader_status.commit_index, leader_status.first_log_index
    );
    ensure!(
        leader_status.first_log_index.0 > 100,
        "the leader should have compacted the entries {lagging} lacks"
    );

    println!("Starting {lagging} again from its data directory");
    let restarted = start(lagging, ids, &data, &network)?;
    let caught_up = restarted
        .node
        .wait_for(WAIT, |status| status.applied_index >= leader_status.commit_index)
        .await
        .with_context(|| format!("{lagging} did not catch up"))?;
    println!(
        "{lagging} caught up: applied index {}, log starts at index {} (it never received the \
         entries before it: they came in the snapshot)",
        caught_up.applied_index, caught_up.first_log_index
    );
    members.push(restarted);

    let mut stores: Vec<KvStore> = Vec::new();
    for member in &members {
        // A linearizable read of the node's own store, run on the node's task.
        let store = member
            .node
            .read(ReadPolicy::ReadIndex, |store: &KvStore| store.clone())
            .await
            .with_context(|| format!("reading {}'s store", member.node.id()))?;
        stores.push(store);
    }
    ensure!(stores.windows(2).all(|pair| pair[0] == pair[1]), "the nodes' stores differ");
    println!("All 3 nodes hold the same {} keys", stores[0].len());
    for member in &members {
        member.node.shutdown().await?;
    }
    Ok(())
}
