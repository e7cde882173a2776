//! Snapshots through the tokio runtime (`RaftNode`), on both storages: automatic snapshots
//! and compaction, a restart from snapshot plus log tail, and a state machine without
//! snapshots, whose log is never compacted. Waits are for conditions, with deadlines, on
//! tokio's paused clock.

use std::error::Error;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use raft_consensus::state_machine::SnapshotView;
use raft_consensus::storage::{MemoryStorage, Storage, WalIdentity, WalOptions, WalStorage};
use raft_consensus::transport::ChannelNetwork;
use raft_consensus::{Config, LogIndex, NodeId, RaftNode, StateMachine};

const DEADLINE: Duration = Duration::from_secs(10);

/// Sums the numbers it is given; its snapshot is the sum and the count.
#[derive(Default)]
struct Sum {
    total: u64,
    count: u64,
}

impl StateMachine for Sum {
    fn apply(&mut self, command: &[u8]) -> Result<Vec<u8>, Box<dyn Error + Send + Sync>> {
        let amount: [u8; 8] = command.try_into()?;
        self.total += u64::from_le_bytes(amount);
        self.count += 1;
        Ok([self.total.to_le_bytes(), self.count.to_le_bytes()].concat())
    }

    fn snapshot(&self) -> Result<Vec<u8>, Box<dyn Error + Send + Sync>> {
        Ok([self.total.to_le_bytes(), self.count.to_le_bytes()].concat())
    }

    fn restore(&mut self, snapshot: &[u8]) -> Result<(), Box<dyn Error + Send + Sync>> {
        let (total, count) = snapshot.split_at_checked(8).ok_or("snapshot too short")?;
        self.total = u64::from_le_bytes(total.try_into()?);
        self.count = u64::from_le_bytes(count.try_into()?);
        Ok(())
    }
}

/// The same, without snapshots (the trait's defaults).
#[derive(Default)]
struct SumWithoutSnapshots(Sum);

impl StateMachine for SumWithoutSnapshots {
    fn apply(&mut self, command: &[u8]) -> Result<Vec<u8>, Box<dyn Error + Send + Sync>> {
        self.0.apply(command)
    }
}

/// [`Sum`] whose snapshot writes wait until the test lets them go, and say when they end.
struct HeldSnapshots {
    sum: Sum,
    release: Arc<Mutex<mpsc::Receiver<()>>>,
    written: Arc<AtomicBool>,
}

/// A view of a [`HeldSnapshots`]: the snapshot bytes, written once released.
struct HeldView {
    bytes: Vec<u8>,
    release: Arc<Mutex<mpsc::Receiver<()>>>,
    written: Arc<AtomicBool>,
}

impl SnapshotView for HeldView {
    fn write_to(
        self: Box<Self>,
        out: &mut dyn std::io::Write,
    ) -> Result<(), Box<dyn Error + Send + Sync>> {
        // The stimulus is the test's release, not time: this blocks until it comes.
        let released = self.release.lock().map_err(|_| "poisoned")?.recv();
        released.map_err(|_| "the test ended without releasing the write")?;
        out.write_all(&self.bytes)?;
        self.written.store(true, Ordering::SeqCst);
        Ok(())
    }
}

impl StateMachine for HeldSnapshots {
    fn apply(&mut self, command: &[u8]) -> Result<Vec<u8>, Box<dyn Error + Send + Sync>> {
        self.sum.apply(command)
    }

    fn snapshot(&self) -> Result<Vec<u8>, Box<dyn Error + Send + Sync>> {
        self.sum.snapshot()
    }

    fn snapshot_view(&self) -> Result<Box<dyn SnapshotView>, Box<dyn Error + Send + Sync>> {
        Ok(Box::new(HeldView {
            bytes: self.sum.snapshot()?,
            release: Arc::clone(&self.release),
            written: Arc::clone(&self.written),
        }))
    }

    fn restore(&mut self, snapshot: &[u8]) -> Result<(), Box<dyn Error + Send + Sync>> {
        self.sum.restore(snapshot)
    }
}

fn config() -> Config {
    Config { snapshot_after_entries: 20, snapshot_keep_entries: 5, ..Config::default() }
}

/// Proposes 1..=count to a single-node cluster and returns the node's last answer.
async fn add_numbers(node: &RaftNode, first: u64, count: u64) -> Vec<u8> {
    let mut answer = Vec::new();
    for number in first..first + count {
        answer = node.propose(number.to_le_bytes().to_vec()).await.expect("committed");
    }
    answer
}

fn total_and_count(answer: &[u8]) -> (u64, u64) {
    let total = u64::from_le_bytes(answer[..8].try_into().expect("16-byte answers"));
    let count = u64::from_le_bytes(answer[8..].try_into().expect("16-byte answers"));
    (total, count)
}

/// Starts a single node on `storage`, waits until it leads, adds `first..first + 100`, shuts
/// it down, and returns its last status and its last answer (total, count).
async fn run_once<S: Storage, M: StateMachine + Send + 'static>(
    storage: S,
    machine: M,
    first: u64,
) -> (raft_consensus::Status, (u64, u64)) {
    let network = ChannelNetwork::new();
    let node = RaftNode::start(
        NodeId(1),
        [NodeId(1)],
        config(),
        storage,
        network.join(NodeId(1)),
        machine,
    )
    .expect("a valid start");
    node.wait_for(DEADLINE, |status| status.is_leader()).await.expect("it elects itself");
    let answer = add_numbers(&node, first, 100).await;
    let status = node.status();
    node.shutdown().await.expect("a clean stop");
    (status, total_and_count(&answer))
}

/// Waits until the node's log is compacted behind a snapshot (written on a blocking thread).
async fn wait_for_compaction(node: &RaftNode) -> raft_consensus::Status {
    node.wait_for(DEADLINE, |status| status.first_log_index > LogIndex(50))
        .await
        .expect("the log is compacted behind a snapshot")
}

#[tokio::test]
async fn a_node_snapshots_compacts_and_restarts_from_snapshot_plus_tail_in_memory() {
    let storage = MemoryStorage::new();
    let network = ChannelNetwork::new();
    let node = RaftNode::start(
        NodeId(1),
        [NodeId(1)],
        config(),
        storage.clone(),
        network.join(NodeId(1)),
        Sum::default(),
    )
    .expect("a valid start");
    node.wait_for(DEADLINE, |status| status.is_leader()).await.expect("it elects itself");
    let answer = add_numbers(&node, 1, 100).await;
    assert_eq!(total_and_count(&answer), (5050, 100));
    let status = wait_for_compaction(&node).await;
    assert!(status.snapshot_index > LogIndex(50), "{status:?}");
    node.shutdown().await.expect("a clean stop");

    // Restarted from the same storage: the snapshot restores the sum, the tail is applied.
    let (status, answer) = run_once(storage, Sum::default(), 101).await;
    assert_eq!(answer, ((1..=200).sum::<u64>(), 200), "state lost or applied twice");
    assert!(status.first_log_index > LogIndex(1));
}

#[tokio::test]
async fn a_node_restarts_from_snapshot_plus_tail_on_the_write_ahead_log() {
    let directory = tempfile::tempdir().expect("a temporary directory");
    let identity = WalIdentity { node_id: NodeId(1), cluster_id: 3 };
    let open = || WalStorage::open(directory.path(), identity, WalOptions::default()).unwrap();
    let network = ChannelNetwork::new();
    let node = RaftNode::start(
        NodeId(1),
        [NodeId(1)],
        config(),
        open(),
        network.join(NodeId(1)),
        Sum::default(),
    )
    .expect("a valid start");
    node.wait_for(DEADLINE, |status| status.is_leader()).await.expect("it elects itself");
    add_numbers(&node, 1, 100).await;
    wait_for_compaction(&node).await;
    node.shutdown().await.expect("a clean stop");

    let (status, answer) = run_once(open(), Sum::default(), 101).await;
    assert_eq!(answer, ((1..=200).sum::<u64>(), 200), "state lost or applied twice");
    assert!(status.first_log_index > LogIndex(1));
}

#[tokio::test]
async fn a_state_machine_without_snapshots_is_never_compacted() {
    let storage = MemoryStorage::new();
    let (status, answer) = run_once(storage.clone(), SumWithoutSnapshots::default(), 1).await;
    assert_eq!(answer, (5050, 100));
    assert_eq!(status.snapshot_index, LogIndex(0));
    assert_eq!(status.first_log_index, LogIndex(1));
    let (status, answer) = run_once(storage, SumWithoutSnapshots::default(), 101).await;
    assert_eq!(answer, ((1..=200).sum::<u64>(), 200), "the whole log is applied again");
    assert_eq!(status.first_log_index, LogIndex(1));
}

/// A node shut down while a snapshot is being written finishes the write before `shutdown`
/// returns: the write goes into the data directory (and removes older snapshots there), which
/// a node started next on it must have to itself. (Before, `shutdown` returned at once and a
/// restart could list a snapshot file that the old write then removed.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_waits_for_a_snapshot_being_written() {
    let (release, held) = mpsc::channel();
    let written = Arc::new(AtomicBool::new(false));
    let machine = HeldSnapshots {
        sum: Sum::default(),
        release: Arc::new(Mutex::new(held)),
        written: Arc::clone(&written),
    };
    let network = ChannelNetwork::new();
    let config = Config { snapshot_after_entries: 20, ..Config::default() };
    let node = RaftNode::start(
        NodeId(1),
        [NodeId(1)],
        config,
        MemoryStorage::new(),
        network.join(NodeId(1)),
        machine,
    )
    .expect("a valid start");
    node.wait_for(DEADLINE, |status| status.is_leader()).await.expect("it elects itself");
    // Enough to make a snapshot due; its write then waits for the release.
    add_numbers(&node, 1, 30).await;
    let shutdown = tokio::spawn({
        let node = node.clone();
        async move { node.shutdown().await }
    });
    node.wait_for(DEADLINE, |status| status.role == raft_consensus::Role::Stopped)
        .await
        .expect_err("a stopped node's waits fail");
    // The node's loop has ended; its shutdown must not return while the write is held.
    let early = tokio::time::timeout(Duration::from_millis(300), async {
        while !shutdown.is_finished() {
            tokio::task::yield_now().await;
        }
    })
    .await;
    assert!(early.is_err(), "shutdown returned while a snapshot was still being written");
    release.send(()).expect("the write waits for the release");
    shutdown.await.expect("the shutdown task").expect("a clean stop");
    assert!(written.load(Ordering::SeqCst), "shutdown returned before the write ended");
}
