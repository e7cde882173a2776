//! The tokio runtime (`RaftNode`) end to end on in-process channels: proposals, errors,
//! restarts and shutdown. Time is tokio's paused test clock, which jumps straight to the next
//! timer, so these tests wait for conditions, never for wall-clock time.

use std::error::Error;
use std::time::Duration;

use raft_consensus::storage::MemoryStorage;
use raft_consensus::transport::ChannelNetwork;
use raft_consensus::{
    Config, ConfigError, FatalError, NodeId, ProposeError, RaftNode, ReadError, ReadPolicy, Role,
    StartError, StateMachine, WaitError,
};

const DEADLINE: Duration = Duration::from_secs(30);

/// Records every command; answers with how many it has applied. Rejects the command `fail`.
#[derive(Default)]
struct Recorder {
    applied: Vec<Vec<u8>>,
}

impl StateMachine for Recorder {
    fn apply(&mut self, command: &[u8]) -> Result<Vec<u8>, Box<dyn Error + Send + Sync>> {
        if command == b"fail" {
            return Err("the command `fail` always fails".into());
        }
        if command == b"panic" {
            panic!("the state machine cannot go on after `panic`");
        }
        self.applied.push(command.to_vec());
        Ok((self.applied.len() as u64).to_le_bytes().to_vec())
    }

    /// `count`: how many commands it has applied; anything else is refused.
    fn query(&self, query: &[u8]) -> Result<Vec<u8>, Box<dyn Error + Send + Sync>> {
        match query {
            b"count" => Ok((self.applied.len() as u64).to_le_bytes().to_vec()),
            _ => Err("the only query is `count`".into()),
        }
    }
}

fn count(result: &[u8]) -> u64 {
    u64::from_le_bytes(result.try_into().expect("results are 8-byte counters"))
}

struct Cluster {
    network: ChannelNetwork,
    members: Vec<NodeId>,
    nodes: Vec<RaftNode>,
}

impl Cluster {
    fn start(size: u64) -> Cluster {
        let network = ChannelNetwork::new();
        let members: Vec<NodeId> = (1..=size).map(NodeId).collect();
        let nodes = members
            .iter()
            .map(|id| {
                RaftNode::start(
                    *id,
                    members.clone(),
                    Config::default(),
                    MemoryStorage::new(),
                    network.join(*id),
                    Recorder::default(),
                )
                .expect("valid configuration")
            })
            .collect();
        Cluster { network, members, nodes }
    }

    async fn leader(&self) -> &RaftNode {
        let status = self.nodes[0]
            .wait_for(DEADLINE, |status| status.leader_id.is_some())
            .await
            .expect("a leader is elected");
        let leader = status.leader_id.expect("checked above");
        let node = self.node(leader);
        node.wait_for(DEADLINE, |status| status.is_leader()).await.expect("the leader knows it");
        node
    }

    fn node(&self, id: NodeId) -> &RaftNode {
        self.nodes.iter().find(|node| node.id() == id).expect("a member")
    }

    async fn shutdown(&self) {
        for node in &self.nodes {
            node.shutdown().await.expect("clean shutdown");
        }
    }
}

/// A proposal to the leader returns the state machine's result once applied, and every node
/// applies it.
#[tokio::test(start_paused = true)]
async fn proposals_return_the_apply_result_and_replicate_everywhere() {
    let cluster = Cluster::start(3);
    let leader = cluster.leader().await;
    for expected in 1..=20u64 {
        let result = leader.propose(format!("command {expected}").into_bytes()).await.unwrap();
        assert_eq!(count(&result), expected);
    }
    let target = leader.status().commit_index;
    for node in &cluster.nodes {
        node.wait_for(DEADLINE, |status| status.applied_index >= target).await.unwrap();
    }
    cluster.shutdown().await;
}

/// Concurrent proposals are batched but each gets its own result, in log order.
#[tokio::test(start_paused = true)]
async fn concurrent_proposals_each_get_their_own_result() {
    let cluster = Cluster::start(3);
    let leader = cluster.leader().await.clone();
    let mut tasks = Vec::new();
    for client in 0..50u64 {
        let leader = leader.clone();
        tasks.push(tokio::spawn(async move {
            leader.propose(client.to_le_bytes().to_vec()).await.map(|result| count(&result))
        }));
    }
    let mut counts = Vec::new();
    for task in tasks {
        counts.push(task.await.unwrap().unwrap());
    }
    counts.sort_unstable();
    assert_eq!(counts, (1..=50).collect::<Vec<u64>>());
    cluster.shutdown().await;
}

/// Answers each command with its log index and the command itself.
struct Echo;

impl StateMachine for Echo {
    fn apply(&mut self, command: &[u8]) -> Result<Vec<u8>, Box<dyn Error + Send + Sync>> {
        Ok(command.to_vec())
    }

    fn apply_at(
        &mut self,
        index: raft_consensus::LogIndex,
        command: &[u8],
    ) -> Result<Vec<u8>, Box<dyn Error + Send + Sync>> {
        let mut result = index.0.to_le_bytes().to_vec();
        result.extend_from_slice(command);
        Ok(result)
    }
}

/// Batching never swaps or merges results: 200 clients each propose 10 distinct commands in a
/// closed loop (so batches of up to 200 form); every client gets back its own command, at
/// log indexes that increase along its own proposals, and no index is answered twice.
#[tokio::test(start_paused = true)]
async fn batched_results_belong_to_their_own_proposals() {
    let network = ChannelNetwork::new();
    let members = [NodeId(1), NodeId(2), NodeId(3)];
    let nodes: Vec<RaftNode> = members
        .iter()
        .map(|id| {
            RaftNode::start(
                *id,
                members,
                Config::default(),
                MemoryStorage::new(),
                network.join(*id),
                Echo,
            )
            .expect("valid configuration")
        })
        .collect();
    let status = nodes[0]
        .wait_for(DEADLINE, |status| status.leader_id.is_some())
        .await
        .expect("a leader is elected");
    let leader_id = status.leader_id.expect("checked above");
    let leader = nodes.iter().find(|node| node.id() == leader_id).expect("a member").clone();
    leader.wait_for(DEADLINE, |status| status.is_leader()).await.expect("the leader knows it");
    let clients: Vec<_> = (0..200u64)
        .map(|client| {
            let leader = leader.clone();
            tokio::spawn(async move {
                let mut indexes = Vec::new();
                for sequence in 0..10u64 {
                    let command = format!("client {client} command {sequence}").into_bytes();
                    let result = leader.propose(command.clone()).await.expect("no fault");
                    let (index, echoed) = result.split_at(8);
                    assert_eq!(echoed, command, "client {client} got another proposal's result");
                    indexes.push(u64::from_le_bytes(index.try_into().expect("8 bytes")));
                }
                indexes
            })
        })
        .collect();
    let mut all = Vec::new();
    for client in clients {
        let indexes = client.await.expect("the client finished");
        assert!(indexes.windows(2).all(|pair| pair[0] < pair[1]), "out of order: {indexes:?}");
        all.extend(indexes);
    }
    let count = all.len();
    all.sort_unstable();
    all.dedup();
    assert_eq!(all.len(), count, "an index was answered twice");
    for node in &nodes {
        node.shutdown().await.expect("clean shutdown");
    }
}

/// A follower refuses proposals and names the leader.
#[tokio::test(start_paused = true)]
async fn followers_answer_not_leader_with_a_hint() {
    let cluster = Cluster::start(3);
    let leader = cluster.leader().await.id();
    let follower = cluster.nodes.iter().find(|node| node.id() != leader).unwrap();
    follower.wait_for(DEADLINE, |status| status.leader_id == Some(leader)).await.unwrap();
    match follower.propose(b"x".to_vec()).await {
        Err(ProposeError::NotLeader { leader_hint }) => assert_eq!(leader_hint, Some(leader)),
        other => panic!("expected NotLeader, got {other:?}"),
    }
    cluster.shutdown().await;
}

/// An `Err` from `apply` is the proposal's result, not a failure of the node.
#[tokio::test(start_paused = true)]
async fn apply_errors_are_returned_to_the_proposer() {
    let cluster = Cluster::start(1);
    let leader = cluster.leader().await;
    match leader.propose(b"fail".to_vec()).await {
        Err(ProposeError::Apply(error)) => assert!(error.to_string().contains("always fails")),
        other => panic!("expected an apply error, got {other:?}"),
    }
    assert_eq!(count(&leader.propose(b"ok".to_vec()).await.unwrap()), 1);
    cluster.shutdown().await;
}

/// A leader cut off from its followers cannot commit; when it loses leadership its pending
/// proposals end with `OutcomeUnknown`, not a false success or a false failure.
#[tokio::test(start_paused = true)]
async fn lost_leadership_makes_pending_proposals_outcome_unknown() {
    let cluster = Cluster::start(3);
    let leader = cluster.leader().await.clone();
    for id in &cluster.members {
        if *id != leader.id() {
            cluster.network.disconnect(*id);
        }
    }
    match leader.propose(b"stranded".to_vec()).await {
        Err(ProposeError::OutcomeUnknown { index }) => assert!(index.0 >= 2),
        other => panic!("expected OutcomeUnknown, got {other:?}"),
    }
    assert_ne!(leader.status().role, Role::Leader);
    cluster.shutdown().await;
}

/// A linearizable read on any node, leader or follower, sees every write acknowledged before
/// it, with no entry written; a query the state machine refuses is an error.
#[tokio::test(start_paused = true)]
async fn reads_on_every_node_see_every_acknowledged_write_without_a_log_entry() {
    let cluster = Cluster::start(3);
    let leader = cluster.leader().await.clone();
    for written in 1..=5u64 {
        leader.propose(format!("write {written}").into_bytes()).await.unwrap();
        let last_index = leader.status().last_log_index;
        for node in &cluster.nodes {
            // At once after the write's answer: a follower waits until it has applied it.
            let answer = node.query(b"count".to_vec(), ReadPolicy::ReadIndex).await.unwrap();
            assert_eq!(count(&answer), written, "{} read a stale count", node.id());
            let read_index = node.read_index(ReadPolicy::Lease).await.unwrap();
            assert!(node.status().applied_index >= read_index);
        }
        assert_eq!(leader.status().last_log_index, last_index, "a read wrote to the log");
    }
    match leader.query(b"size".to_vec(), ReadPolicy::ReadIndex).await {
        Err(ReadError::Query(reason)) => assert!(reason.contains("count"), "{reason}"),
        other => panic!("expected a refused query, got {other:?}"),
    }
    cluster.shutdown().await;
}

/// A leader cut off from its majority cannot confirm a read: it fails instead of answering
/// from a state a newer leader may have overwritten.
#[tokio::test(start_paused = true)]
async fn a_leader_cut_off_from_its_majority_serves_no_read() {
    let cluster = Cluster::start(3);
    let leader = cluster.leader().await.clone();
    leader.propose(b"before".to_vec()).await.unwrap();
    for id in &cluster.members {
        if *id != leader.id() {
            cluster.network.disconnect(*id);
        }
    }
    match leader.query(b"count".to_vec(), ReadPolicy::ReadIndex).await {
        Err(ReadError::LeadershipLost | ReadError::NotLeader { .. }) => {}
        other => panic!("a cut-off leader answered a read: {other:?}"),
    }
    cluster.shutdown().await;
    let stopped = leader.read_index(ReadPolicy::ReadIndex).await;
    assert_eq!(stopped, Err(ReadError::Shutdown));
}

/// Oversized commands are refused before anything is written.
#[tokio::test(start_paused = true)]
async fn oversized_commands_are_rejected() {
    let cluster = Cluster::start(1);
    let leader = cluster.leader().await;
    let before = leader.status().last_log_index;
    let huge = vec![0u8; Config::default().max_entry_bytes + 1];
    assert!(matches!(leader.propose(huge).await, Err(ProposeError::TooLarge { .. })));
    assert_eq!(leader.status().last_log_index, before);
    cluster.shutdown().await;
}

/// After shutdown, proposals fail with `Shutdown` and shutting down again is harmless.
#[tokio::test(start_paused = true)]
async fn shutdown_is_clean_and_idempotent() {
    let cluster = Cluster::start(1);
    let leader = cluster.leader().await;
    leader.shutdown().await.unwrap();
    assert!(matches!(leader.propose(b"late".to_vec()).await, Err(ProposeError::Shutdown)));
    leader.shutdown().await.unwrap();
}

/// A node that panics while it works (a broken safety rule, or here its state machine) stops
/// at once with the panic's message as a typed error, not a panic in the caller: the
/// proposal being applied is answered `OutcomeUnknown` (it committed, but its result is
/// lost), waiting for the node reports it stopped, and `shutdown` returns the reason.
#[tokio::test(start_paused = true)]
async fn a_node_that_panics_stops_with_the_reason() {
    let cluster = Cluster::start(1);
    let leader = cluster.leader().await;
    assert!(matches!(
        leader.propose(b"panic".to_vec()).await,
        Err(ProposeError::OutcomeUnknown { .. })
    ));
    let never = leader.wait_for(DEADLINE, |_| false).await;
    assert!(matches!(never, Err(WaitError::Shutdown)), "{never:?}");
    assert!(matches!(leader.propose(b"late".to_vec()).await, Err(ProposeError::Shutdown)));
    match leader.shutdown().await {
        Err(FatalError::Panicked { message }) => {
            assert!(message.contains("cannot go on after `panic`"), "{message}");
        }
        other => panic!("expected the panic's reason, got {other:?}"),
    }
    leader.shutdown().await.expect("a second shutdown is harmless");
}

/// Invalid start parameters are clear errors.
#[tokio::test]
async fn invalid_configuration_and_membership_are_refused() {
    let network = ChannelNetwork::new();
    let bad = Config { heartbeat_interval_ms: 500, ..Config::default() };
    let result = RaftNode::start(
        NodeId(1),
        [NodeId(1)],
        bad,
        MemoryStorage::new(),
        network.join(NodeId(1)),
        Recorder::default(),
    );
    assert!(matches!(
        result,
        Err(StartError::Config(ConfigError::HeartbeatNotBelowElectionTimeout { .. }))
    ));
    let result = RaftNode::start(
        NodeId(4),
        [NodeId(1), NodeId(2)],
        Config::default(),
        MemoryStorage::new(),
        network.join(NodeId(4)),
        Recorder::default(),
    );
    assert!(matches!(result, Err(StartError::Membership { .. })));
}

/// Starting outside a tokio runtime is an error, not a panic.
#[test]
fn starting_outside_a_runtime_is_an_error() {
    let network = ChannelNetwork::new();
    let result = RaftNode::start(
        NodeId(1),
        [NodeId(1)],
        Config::default(),
        MemoryStorage::new(),
        network.join(NodeId(1)),
        Recorder::default(),
    );
    assert!(matches!(result, Err(StartError::NoRuntime)));
}

/// Counts syncs, to show that concurrent proposals share them (group commit).
#[derive(Clone, Default)]
struct CountingStorage {
    inner: MemoryStorage,
    syncs: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl raft_consensus::storage::Storage for CountingStorage {
    type Snapshots = MemoryStorage;

    fn reset_log(
        &mut self,
        base: raft_consensus::LogId,
    ) -> Result<(), raft_consensus::StorageError> {
        self.inner.reset_log(base)
    }
    fn compact(
        &mut self,
        through: raft_consensus::LogIndex,
    ) -> Result<(), raft_consensus::StorageError> {
        self.inner.compact(through)
    }
    fn snapshot_store(&self) -> MemoryStorage {
        self.inner.snapshot_store()
    }
    fn load(&mut self) -> Result<raft_consensus::core::InitialState, raft_consensus::StorageError> {
        self.inner.load()
    }
    fn append(
        &mut self,
        entries: &[raft_consensus::Entry],
    ) -> Result<(), raft_consensus::StorageError> {
        self.inner.append(entries)
    }
    fn save_hard_state(
        &mut self,
        hard_state: &raft_consensus::HardState,
    ) -> Result<(), raft_consensus::StorageError> {
        self.inner.save_hard_state(hard_state)
    }

    fn save_members(&mut self, members: &[NodeId]) -> Result<(), raft_consensus::StorageError> {
        self.inner.save_members(members)
    }
    fn sync(&mut self) -> Result<(), raft_consensus::StorageError> {
        self.syncs.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.inner.sync()
    }
}

/// Group commit: proposals that arrive together are appended in one batch and share one sync.
#[tokio::test(start_paused = true)]
async fn concurrent_proposals_share_syncs() {
    let network = ChannelNetwork::new();
    let storage = CountingStorage::default();
    let syncs = std::sync::Arc::clone(&storage.syncs);
    let node = start_single(storage, &network);
    node.wait_for(DEADLINE, |status| status.is_leader()).await.unwrap();
    let before = syncs.load(std::sync::atomic::Ordering::Relaxed);
    let proposals: Vec<_> = (0..200u64)
        .map(|client| {
            let node = node.clone();
            tokio::spawn(async move { node.propose(client.to_le_bytes().to_vec()).await })
        })
        .collect();
    for proposal in proposals {
        proposal.await.unwrap().unwrap();
    }
    let used = syncs.load(std::sync::atomic::Ordering::Relaxed) - before;
    assert!(used < 20, "200 concurrent proposals took {used} syncs");
    node.shutdown().await.unwrap();
}

/// Starts a single-node cluster on `storage`.
fn start_single<S: raft_consensus::storage::Storage>(
    storage: S,
    network: &ChannelNetwork,
) -> RaftNode {
    RaftNode::start(
        NodeId(1),
        [NodeId(1)],
        Config::default(),
        storage,
        network.join(NodeId(1)),
        Recorder::default(),
    )
    .expect("valid configuration")
}

/// Runs a node on storage from `open`, proposes ten commands, stops it, starts it again on
/// storage from `open`, and checks that it kept its term and log and rebuilt its state
/// machine by applying the committed entries again.
async fn assert_restart_replays_the_log<S: raft_consensus::storage::Storage>(open: impl Fn() -> S) {
    let network = ChannelNetwork::new();
    let node = start_single(open(), &network);
    node.wait_for(DEADLINE, |status| status.is_leader()).await.unwrap();
    for _ in 0..10 {
        node.propose(b"entry".to_vec()).await.unwrap();
    }
    let before = node.status();
    node.shutdown().await.unwrap();

    let restarted = start_single(open(), &network);
    let status = restarted
        .wait_for(DEADLINE, |status| status.applied_index >= before.commit_index)
        .await
        .unwrap();
    assert!(status.term >= before.term);
    assert!(status.last_log_index >= before.last_log_index);
    restarted.wait_for(DEADLINE, |status| status.is_leader()).await.unwrap();
    // Ten commands were applied again on restart, so the next one is the eleventh.
    assert_eq!(count(&restarted.propose(b"after".to_vec()).await.unwrap()), 11);
    restarted.shutdown().await.unwrap();
}

/// A node restarted from its (in-memory) storage replays its committed log.
#[tokio::test(start_paused = true)]
async fn a_restarted_node_replays_its_committed_log() {
    let storage = MemoryStorage::new();
    assert_restart_replays_the_log(|| storage.clone()).await;
}

/// A node restarted from its data directory (the write-ahead log) has its term, vote and log,
/// and rebuilds its state machine by applying the committed entries again.
#[tokio::test(start_paused = true)]
async fn a_node_restarts_from_its_data_directory() {
    use raft_consensus::storage::{WalIdentity, WalOptions, WalStorage};
    let dir = tempfile::tempdir().unwrap();
    let identity = WalIdentity { node_id: NodeId(1), cluster_id: 5 };
    assert_restart_replays_the_log(|| {
        WalStorage::open(dir.path(), identity, WalOptions::default()).unwrap()
    })
    .await;
}
