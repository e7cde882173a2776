//! How `RaftNode` batches client requests: after taking the requests queued, the node's task
//! yields to the runtime so that tasks about to propose join the same batch (one append and
//! one sync for all), a bounded number of times. The node runs on a current-thread runtime
//! with a paused clock, so the order tasks run in is fixed.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::Duration;

use raft_consensus::core::InitialState;
use raft_consensus::storage::{MemoryStorage, Storage};
use raft_consensus::transport::ChannelNetwork;
use raft_consensus::{
    Config, Entry, HardState, LogId, LogIndex, NodeId, ProposeError, RaftNode, StorageError,
};

#[path = "common/counter.rs"]
mod counter;

use counter::Counter;

const DEADLINE: Duration = Duration::from_secs(30);

/// Memory storage that records how many entries each append carried.
struct CountingStorage {
    inner: MemoryStorage,
    appends: Arc<Mutex<Vec<usize>>>,
}

impl Storage for CountingStorage {
    type Snapshots = MemoryStorage;

    fn load(&mut self) -> Result<InitialState, StorageError> {
        self.inner.load()
    }

    fn append(&mut self, entries: &[Entry]) -> Result<(), StorageError> {
        self.appends.lock().expect("no test thread panics holding it").push(entries.len());
        self.inner.append(entries)
    }

    fn reset_log(&mut self, base: LogId) -> Result<(), StorageError> {
        self.inner.reset_log(base)
    }

    fn compact(&mut self, through: LogIndex) -> Result<(), StorageError> {
        self.inner.compact(through)
    }

    fn snapshot_store(&self) -> MemoryStorage {
        self.inner.snapshot_store()
    }

    fn save_hard_state(&mut self, hard_state: &HardState) -> Result<(), StorageError> {
        self.inner.save_hard_state(hard_state)
    }

    fn save_members(&mut self, members: &[NodeId]) -> Result<(), StorageError> {
        self.inner.save_members(members)
    }

    fn sync(&mut self) -> Result<(), StorageError> {
        self.inner.sync()
    }
}

/// A single-node leader whose appends are recorded.
async fn counted_leader() -> (RaftNode, Arc<Mutex<Vec<usize>>>) {
    let appends = Arc::new(Mutex::new(Vec::new()));
    let storage = CountingStorage { inner: MemoryStorage::new(), appends: Arc::clone(&appends) };
    let network = ChannelNetwork::new();
    let node = RaftNode::start(
        NodeId(1),
        [NodeId(1)],
        Config::default(),
        storage,
        network.join(NodeId(1)),
        Counter(0),
    )
    .expect("valid start");
    node.wait_for(DEADLINE, |status| status.is_leader()).await.expect("it leads");
    (node, appends)
}

/// Starts `node.propose(command)` and polls it once, which sends the request to the node's
/// task (waking it), and returns the rest of the proposal to await later.
async fn send_proposal(
    node: &RaftNode,
    command: &'static [u8],
) -> Pin<Box<dyn Future<Output = Result<Vec<u8>, ProposeError>> + Send>> {
    let node = node.clone();
    let mut proposal: Pin<Box<dyn Future<Output = _> + Send>> =
        Box::pin(async move { node.propose(command.to_vec()).await });
    std::future::poll_fn(|context| {
        assert!(proposal.as_mut().poll(context).is_pending(), "a proposal waits for its commit");
        Poll::Ready(())
    })
    .await;
    proposal
}

/// A request sent by a task that became ready only after the node's task was woken (so it
/// runs after the node's task starts taking the batch) joins that batch: the node yields
/// before it appends. Without that yield, the two proposals take two batches.
#[tokio::test(start_paused = true)]
async fn a_request_about_to_arrive_joins_the_batch() {
    let (node, appends) = counted_leader().await;
    appends.lock().expect("not poisoned").clear();
    // The node's task is woken by the first request; the second proposer is spawned after,
    // so it runs after the node's task.
    let first = send_proposal(&node, b"first").await;
    let second = tokio::spawn({
        let node = node.clone();
        async move { node.propose(b"second".to_vec()).await }
    });
    first.await.expect("committed");
    second.await.expect("the proposer ran").expect("committed");
    let batches = appends.lock().expect("not poisoned").clone();
    assert_eq!(batches, [2], "both proposals in one batch");
    node.shutdown().await.expect("clean shutdown");
}

/// The node yields a bounded number of times: a feeder that sends one request per turn
/// of the runtime, for longer than the bound, gets its requests cut into several batches
/// rather than the first batch held back until the feeder stops.
#[tokio::test(start_paused = true)]
async fn gathering_a_batch_is_bounded() {
    const REQUESTS: usize = 30;
    let (node, appends) = counted_leader().await;
    appends.lock().expect("not poisoned").clear();
    let mut proposals = Vec::new();
    for _ in 0..REQUESTS {
        proposals.push(send_proposal(&node, b"one").await);
        tokio::task::yield_now().await;
    }
    for proposal in proposals {
        proposal.await.expect("committed");
    }
    let batches = appends.lock().expect("not poisoned").clone();
    assert_eq!(batches.iter().sum::<usize>(), REQUESTS, "each proposal once: {batches:?}");
    assert!(batches.iter().all(|&batch| batch <= 5), "a batch gathered too long: {batches:?}");
    assert!(batches.iter().any(|&batch| batch > 1), "no batch gathered: {batches:?}");
    node.shutdown().await.expect("clean shutdown");
}
