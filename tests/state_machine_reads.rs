//! `RaftNode::read`: a closure run on the node's state machine once a linearizable read may
//! be served, typed by the state machine the node runs. Time is tokio's paused test clock:
//! tests wait for conditions with deadlines.

use std::error::Error;
use std::time::Duration;

use raft_consensus::storage::MemoryStorage;
use raft_consensus::transport::ChannelNetwork;
use raft_consensus::{
    Config, MachineReadError, NodeId, RaftNode, ReadError, ReadPolicy, StateMachine,
};

const DEADLINE: Duration = Duration::from_secs(30);

/// Keeps every command it applied.
#[derive(Default)]
struct Journal(Vec<Vec<u8>>);

impl StateMachine for Journal {
    fn apply(&mut self, command: &[u8]) -> Result<Vec<u8>, Box<dyn Error + Send + Sync>> {
        self.0.push(command.to_vec());
        Ok(Vec::new())
    }
}

/// Another state machine type, which no node here runs.
struct Unrelated;

impl StateMachine for Unrelated {
    fn apply(&mut self, _command: &[u8]) -> Result<Vec<u8>, Box<dyn Error + Send + Sync>> {
        Ok(Vec::new())
    }
}

fn start_cluster(size: u64) -> (ChannelNetwork, Vec<RaftNode>) {
    let network = ChannelNetwork::new();
    let members: Vec<NodeId> = (1..=size).map(NodeId).collect();
    let nodes = members
        .iter()
        .map(|id| {
            let transport = network.join(*id);
            RaftNode::start(
                *id,
                members.clone(),
                Config::default(),
                MemoryStorage::new(),
                transport,
                Journal::default(),
            )
            .expect("valid start")
        })
        .collect();
    (network, nodes)
}

async fn leader(nodes: &[RaftNode]) -> RaftNode {
    let status = nodes[0]
        .wait_for(DEADLINE, |status| status.leader_id.is_some())
        .await
        .expect("a leader is elected");
    let leader = nodes.iter().find(|node| Some(node.id()) == status.leader_id).expect("a member");
    leader.wait_for(DEADLINE, |status| status.is_leader()).await.expect("it knows it leads");
    leader.clone()
}

/// Every node, followers too, read at once after each write's answer, sees that write: the
/// closure runs only once the node has applied through the read index.
#[tokio::test(start_paused = true)]
async fn reads_on_every_node_see_every_acknowledged_write() {
    let (_network, nodes) = start_cluster(3);
    let leader = leader(&nodes).await;
    for written in 1..=5usize {
        leader.propose(format!("write {written}").into_bytes()).await.expect("committed");
        for node in &nodes {
            let seen = node
                .read(ReadPolicy::ReadIndex, |journal: &Journal| journal.0.len())
                .await
                .expect("the read is served");
            assert_eq!(seen, written, "{} missed an acknowledged write", node.id());
        }
    }
    let last = leader
        .read(ReadPolicy::Lease, |journal: &Journal| journal.0.last().cloned())
        .await
        .expect("a lease read falls back to a round when leases are off");
    assert_eq!(last, Some(b"write 5".to_vec()));
    for node in &nodes {
        node.shutdown().await.expect("clean shutdown");
    }
}

/// A type other than the node's state machine fails at once, naming both types.
#[tokio::test(start_paused = true)]
async fn reading_as_another_type_names_both_types() {
    let (_network, nodes) = start_cluster(1);
    let node = leader(&nodes).await;
    match node.read(ReadPolicy::ReadIndex, |_: &Unrelated| ()).await {
        Err(error @ MachineReadError::WrongStateMachine { requested, node: running }) => {
            assert!(requested.ends_with("Unrelated"), "{requested}");
            assert!(running.ends_with("Journal"), "{running}");
            let message = error.to_string();
            assert!(message.contains(requested) && message.contains(running), "{message}");
        }
        other => panic!("expected WrongStateMachine, got {other:?}"),
    }
    node.shutdown().await.expect("clean shutdown");
}

/// A closure that panics panics in its caller; the node goes on serving.
#[tokio::test(start_paused = true)]
async fn a_panicking_read_panics_in_the_caller_and_the_node_goes_on() {
    let (_network, nodes) = start_cluster(1);
    let node = leader(&nodes).await;
    let reader = node.clone();
    let read = tokio::spawn(async move {
        reader
            .read(ReadPolicy::ReadIndex, |_: &Journal| -> usize { panic!("the reader's own bug") })
            .await
    });
    let panic = read.await.expect_err("the read panicked").into_panic();
    assert_eq!(panic.downcast_ref::<&str>(), Some(&"the reader's own bug"));
    assert!(node.is_running());
    node.propose(b"after".to_vec()).await.expect("the node still serves");
    let seen = node.read(ReadPolicy::ReadIndex, |journal: &Journal| journal.0.len()).await;
    assert_eq!(seen, Ok(1));
    node.shutdown().await.expect("clean shutdown");
}

/// A node with no leader, or stopped, serves no read, with the reason.
#[tokio::test(start_paused = true)]
async fn reads_without_a_leader_or_after_shutdown_fail_with_the_reason() {
    let network = ChannelNetwork::new();
    let members = [NodeId(1), NodeId(2), NodeId(3)];
    let alone = RaftNode::start(
        NodeId(1),
        members,
        Config::default(),
        MemoryStorage::new(),
        network.join(NodeId(1)),
        Journal::default(),
    )
    .expect("valid start");
    assert_eq!(
        alone.read(ReadPolicy::ReadIndex, |journal: &Journal| journal.0.len()).await,
        Err(MachineReadError::Read(ReadError::NotLeader { leader_hint: None }))
    );
    alone.shutdown().await.expect("clean shutdown");
    assert_eq!(
        alone.read(ReadPolicy::ReadIndex, |journal: &Journal| journal.0.len()).await,
        Err(MachineReadError::Read(ReadError::Shutdown))
    );
}
