//! How `RaftNode` batches client requests: after taking the requests queued, the node's task
//! yields to the runtime so that tasks about to propose join the same batch (one append and
//! one sync for all), a bounded number of times. The node runs on a current-thread runtime
//! with a paused clock, so the order tasks run in is fixed; the batches are read off the
//! node's `Applied` events.

use std::future::Future;
use std::pin::Pin;
use std::task::Poll;
use std::time::Duration;

use raft_consensus::events::NodeEvent;
use raft_consensus::storage::MemoryStorage;
use raft_consensus::transport::ChannelNetwork;
use raft_consensus::{Config, LogIndex, NodeId, ProposeError, RaftNode};
use tokio::sync::broadcast;

#[path = "common/counter.rs"]
mod counter;

use counter::Counter;

const DEADLINE: Duration = Duration::from_secs(30);

/// A single-node leader, and a subscription to its events.
async fn leader() -> (RaftNode, broadcast::Receiver<NodeEvent>) {
    let network = ChannelNetwork::new();
    let node = RaftNode::start(
        NodeId(1),
        [NodeId(1)],
        Config::default(),
        MemoryStorage::new(),
        network.join(NodeId(1)),
        Counter(0),
    )
    .expect("valid start");
    node.wait_for(DEADLINE, |status| status.is_leader()).await.expect("it leads");
    let events = node.events();
    (node, events)
}

/// The batches a single-node leader committed, read off its events: a leader alone commits
/// and applies each batch as soon as it is written, and announces the applied index once per
/// batch, so each `Applied` event's advance is one batch's size.
fn batches(events: &mut broadcast::Receiver<NodeEvent>, from: LogIndex) -> Vec<u64> {
    let mut applied = from;
    let mut sizes = Vec::new();
    while let Ok(event) = events.try_recv() {
        if let NodeEvent::Applied { index } = event {
            sizes.push(index.0 - applied.0);
            applied = index;
        }
    }
    sizes
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
    let (node, mut events) = leader().await;
    let from = node.status().applied_index;
    // The node's task is woken by the first request; the second proposer is spawned after,
    // so it runs after the node's task.
    let first = send_proposal(&node, b"first").await;
    let second = tokio::spawn({
        let node = node.clone();
        async move { node.propose(b"second".to_vec()).await }
    });
    first.await.expect("committed");
    second.await.expect("the proposer ran").expect("committed");
    let batches = batches(&mut events, from);
    assert_eq!(batches, [2], "both proposals in one batch");
    node.shutdown().await.expect("clean shutdown");
}

/// The node yields a bounded number of times: a feeder that sends one request per turn
/// of the runtime, for longer than the bound, gets its requests cut into several batches
/// rather than the first batch held back until the feeder stops.
#[tokio::test(start_paused = true)]
async fn gathering_a_batch_is_bounded() {
    const REQUESTS: u64 = 30;
    let (node, mut events) = leader().await;
    let from = node.status().applied_index;
    let mut proposals = Vec::new();
    for _ in 0..REQUESTS {
        proposals.push(send_proposal(&node, b"one").await);
        tokio::task::yield_now().await;
    }
    for proposal in proposals {
        proposal.await.expect("committed");
    }
    let batches = batches(&mut events, from);
    assert_eq!(batches.iter().sum::<u64>(), REQUESTS, "each proposal once: {batches:?}");
    assert!(batches.iter().all(|&batch| batch <= 5), "a batch gathered too long: {batches:?}");
    assert!(batches.iter().any(|&batch| batch > 1), "no batch gathered: {batches:?}");
    node.shutdown().await.expect("clean shutdown");
}
