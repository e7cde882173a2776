//! Changing a running cluster's membership: growing it, replacing a node, moving and removing
//! the leader, while the example key-value store keeps serving.
//!
//! The steps, as the example prints them:
//!
//! 1. three nodes start and elect a leader, and a few commands commit;
//! 2. nodes 4 and 5 start with no members (they join a running cluster and wait to be added)
//!    and the leader adds each as a voter (`add_voter`: a learner first, promoted through
//!    joint consensus once its log has caught up), growing the cluster to five voters;
//! 3. node 6 joins as a voter and an original follower is removed (`remove_member`) and shut
//!    down, replacing it;
//! 4. the leader hands leadership to node 6 (`transfer_leadership`);
//! 5. node 6, now leading, removes itself: it steps down once the change commits and hands
//!    over to a caught-up voter, which then serves a write.
//!
//! Each step prints the configuration after it, and the example ends by checking that every
//! remaining node applied the same commands.
//!
//! ```bash
//! cargo run --example membership
//! RUST_LOG=debug cargo run --example membership
//! ```

#[allow(dead_code)]
mod common;
#[allow(dead_code)]
#[path = "kv_store.rs"]
mod kv_store;

use std::time::Duration;

use anyhow::{Context, ensure};
use kv_store::{KvCommand, KvStore, decode_response, encode_command};
use raft_consensus::storage::MemoryStorage;
use raft_consensus::transport::ChannelNetwork;
use raft_consensus::{
    Config, Configuration, MemberAddress, NodeId, RaftNode, ReadPolicy, StateMachine, Status,
};

/// The deadline of every wait: an election, a catch-up, a change, a transfer.
const WAIT: Duration = Duration::from_secs(5);

struct ClusterMember {
    node: RaftNode,
}

/// The running nodes, and every command committed so far (to check the stores against).
struct Cluster {
    network: ChannelNetwork,
    members: Vec<ClusterMember>,
    committed: Vec<KvCommand>,
}

impl Cluster {
    /// Starts node `id`: a founding voter when `members` lists the cluster, a node that
    /// waits to be added when `members` is empty.
    fn start(&mut self, id: NodeId, members: &[NodeId]) -> anyhow::Result<()> {
        let node = RaftNode::start(
            id,
            members.iter().copied(),
            Config::default(),
            MemoryStorage::new(),
            self.network.join(id),
            KvStore::new(),
        )?;
        self.members.push(ClusterMember { node });
        Ok(())
    }

    fn node(&self, id: NodeId) -> anyhow::Result<&RaftNode> {
        self.members
            .iter()
            .map(|member| &member.node)
            .find(|node| node.id() == id)
            .with_context(|| format!("{id} is not running"))
    }

    /// Waits until `observer` follows a leader other than `excluded`, then until that leader
    /// has committed everything in its log (its term's first entry included, which it needs
    /// before it accepts a membership change), and returns it.
    async fn settled_leader(
        &self,
        observer: NodeId,
        excluded: Option<NodeId>,
    ) -> anyhow::Result<(RaftNode, Status)> {
        let leader_id = common::wait_for_leader(self.node(observer)?, excluded, WAIT).await?;
        let leader = self.node(leader_id)?.clone();
        let status = leader
            .wait_for(WAIT, |status| {
                status.is_leader() && status.commit_index >= status.last_log_index
            })
            .await
            .with_context(|| format!("{leader_id} did not settle as leader within {WAIT:?}"))?;
        Ok((leader, status))
    }

    /// Proposes each command through the leader and prints its result.
    async fn write(&mut self, commands: &[KvCommand]) -> anyhow::Result<()> {
        let nodes: Vec<&RaftNode> = self.members.iter().map(|member| &member.node).collect();
        for command in commands {
            let result = common::propose(&nodes, encode_command(command)).await?;
            println!("  {command:?} -> {:?}", decode_response(&result)?);
        }
        self.committed.extend_from_slice(commands);
        Ok(())
    }

    /// Stops node `id` and takes it off the network.
    async fn stop(&mut self, id: NodeId) -> anyhow::Result<()> {
        let position = self
            .members
            .iter()
            .position(|member| member.node.id() == id)
            .with_context(|| format!("{id} is not running"))?;
        let stopped = self.members.remove(position);
        stopped.node.shutdown().await?;
        self.network.disconnect(id);
        Ok(())
    }
}

fn set(key: &str, value: &str) -> KvCommand {
    KvCommand::Set { key: key.into(), value: value.into() }
}

/// In-process channels route by node id, so members need no address.
fn no_address() -> MemberAddress {
    MemberAddress::default()
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    common::init_logging();

    let founders = [NodeId(1), NodeId(2), NodeId(3)];
    let mut cluster =
        Cluster { network: ChannelNetwork::new(), members: Vec::new(), committed: Vec::new() };
    for id in founders {
        cluster.start(id, &founders)?;
    }
    let (leader, status) = cluster.settled_leader(founders[0], None).await?;
    println!(
        "step 1: started 3 voters, {} leads term {}: {}",
        leader.id(),
        status.term,
        status.configuration
    );
    cluster.write(&[set("a", "1"), set("b", "2"), set("c", "3")]).await?;

    // Nodes 4 and 5 start with no members: they know no configuration and never stand for
    // election; they wait for the leader to add them.
    let mut configuration = Configuration::clone(&status.configuration);
    for id in [NodeId(4), NodeId(5)] {
        cluster.start(id, &[])?;
        let (leader, _) = cluster.settled_leader(founders[0], None).await?;
        configuration = leader.add_voter(id, no_address(), WAIT).await?;
        println!("  added {id} as a voter: {configuration}");
    }
    ensure!(configuration.voters().len() == 5, "expected 5 voters, got {configuration}");
    for id in [NodeId(4), NodeId(5)] {
        cluster
            .node(id)?
            .wait_for(WAIT, |status| status.configuration.voters().len() == 5)
            .await
            .with_context(|| format!("{id} did not learn the 5-voter configuration"))?;
    }
    println!("step 2: grew to 5 voters: {configuration}");
    cluster.write(&[set("d", "4")]).await?;

    // Replace an original follower with node 6: add the new node first, so the cluster never
    // has fewer than five voters, then remove the old one and stop it.
    let (leader, _) = cluster.settled_leader(founders[0], None).await?;
    let leader_id = leader.id();
    let replaced = *founders
        .iter()
        .find(|id| **id != leader_id)
        .context("an original voter other than the leader")?;
    cluster.start(NodeId(6), &[])?;
    let added = leader.add_voter(NodeId(6), no_address(), WAIT).await?;
    println!("  added {} as a voter: {added}", NodeId(6));
    let configuration = leader.remove_member(replaced).await?;
    ensure!(!configuration.is_member(replaced), "{replaced} is still in {configuration}");
    cluster.stop(replaced).await?;
    println!("step 3: replaced {replaced} with {}: {configuration}", NodeId(6));
    cluster.write(&[set("e", "5")]).await?;

    // Hand leadership to the newest voter.
    let (leader, _) = cluster.settled_leader(leader_id, None).await?;
    let from = leader.id();
    let target = NodeId(6);
    leader.transfer_leadership(target, WAIT).await?;
    let (leader, status) = cluster.settled_leader(target, None).await?;
    ensure!(leader.id() == target, "{} leads, not {target}", leader.id());
    println!(
        "step 4: transferred leadership from {from} to {target} (term {}): {}",
        status.term, status.configuration
    );
    cluster.write(&[set("f", "6")]).await?;

    // The leader removes itself: once the change commits it steps down and tells a caught-up
    // voter to stand at once (TimeoutNow).
    let removed = leader.id();
    let configuration = leader.remove_member(removed).await?;
    ensure!(!configuration.is_member(removed), "{removed} is still in {configuration}");
    let observer = *configuration.voters().first().context("voters remain")?;
    let (new_leader, status) = cluster.settled_leader(observer, Some(removed)).await?;
    let new_leader_id = new_leader.id();
    let command = set("g", "7");
    let result = new_leader.propose(encode_command(&command)).await?;
    println!("  {command:?} -> {:?} (on {new_leader_id})", decode_response(&result)?);
    cluster.committed.push(command);
    cluster.stop(removed).await?;
    println!(
        "step 5: removed the leader {removed}; {new_leader_id} leads term {} and serves: {configuration}",
        status.term
    );

    check_agreement(&cluster, new_leader_id).await?;
    for member in &cluster.members {
        member.node.shutdown().await?;
    }
    Ok(())
}

/// Waits until every running node has applied what the leader committed, then checks that
/// each holds the store the committed commands produce (applied here directly, without Raft).
async fn check_agreement(cluster: &Cluster, leader: NodeId) -> anyhow::Result<()> {
    let commit_index = cluster.node(leader)?.status().commit_index;
    let mut expected = KvStore::new();
    for command in &cluster.committed {
        expected
            .apply(&encode_command(command))
            .map_err(|error| anyhow::anyhow!("applying {command:?} directly: {error}"))?;
    }
    for member in &cluster.members {
        let id = member.node.id();
        let status = member
            .node
            .wait_for(WAIT, |status| status.applied_index >= commit_index)
            .await
            .with_context(|| format!("{id} did not apply up to {commit_index}"))?;
        // A linearizable read of the node's own store, run on the node's task.
        let store = member
            .node
            .read(ReadPolicy::ReadIndex, |store: &KvStore| store.clone())
            .await
            .with_context(|| format!("reading {id}'s store"))?;
        println!(
            "  {id} ({}, term {}, applied index {}): {store:?}",
            status.role, status.term, status.applied_index
        );
        ensure!(store == expected, "{id} holds {store:?}, expected {expected:?}");
    }
    let ids: Vec<String> =
        cluster.members.iter().map(|member| member.node.id().to_string()).collect();
    println!(
        "done: {} running nodes ({}) applied the same {} commands",
        ids.len(),
        ids.join(", "),
        cluster.committed.len()
    );
    Ok(())
}
