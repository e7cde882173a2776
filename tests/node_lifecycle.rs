//! What a `RaftNode` reports about itself across its life: a stopped status after shutdown or
//! a fatal error (never the role it last had), `stopped` returning then and only then, and the first log index after a restart from
//! a snapshot. Time is tokio's paused test clock: tests wait for conditions with deadlines.

use std::time::Duration;

use raft_consensus::storage::{MemoryStorage, Storage, WalIdentity, WalOptions, WalStorage};
use raft_consensus::transport::ChannelNetwork;
use raft_consensus::{Config, LogIndex, NodeId, RaftNode, Role, WaitError};

const DEADLINE: Duration = Duration::from_secs(30);

#[path = "common/counter.rs"]
mod counter;

use counter::Counter;

fn start_single(network: &ChannelNetwork, config: Config, storage: impl Storage) -> RaftNode {
    RaftNode::start(NodeId(1), [NodeId(1)], config, storage, network.join(NodeId(1)), Counter(0))
        .expect("valid start")
}

async fn leader(config: Config) -> RaftNode {
    let network = ChannelNetwork::new();
    let node = start_single(&network, config, MemoryStorage::new());
    node.wait_for(DEADLINE, |status| status.is_leader()).await.expect("it leads");
    node
}

/// After `shutdown`, the status says Stopped (not Leader), with no leader and no followers,
/// and its indexes are the last ones; waiting fails with `Shutdown` even for a condition that
/// holds on those indexes.
#[tokio::test(start_paused = true)]
async fn a_shut_down_leader_reports_stopped_and_waits_fail() {
    let node = leader(Config::default()).await;
    node.propose(b"one".to_vec()).await.expect("committed");
    let before = node.status();
    node.shutdown().await.expect("clean shutdown");
    let after = node.status();
    assert_eq!(after.role, Role::Stopped);
    assert!(!after.is_leader());
    assert_eq!(after.leader_id, None);
    assert!(after.followers.is_empty());
    assert_eq!((after.applied_index, after.term), (before.applied_index, before.term));
    assert_eq!(
        node.wait_for(DEADLINE, |status| status.applied_index >= before.applied_index).await,
        Err(WaitError::Shutdown),
        "the condition holds on the frozen status, but the node has stopped"
    );
    assert_eq!(
        node.wait_for(DEADLINE, |status| status.is_leader()).await,
        Err(WaitError::Shutdown)
    );
    assert_eq!(node.wait_for(DEADLINE, |_| true).await, Err(WaitError::Shutdown));
}

/// A handle waiting while the node is shut down from another handle gets `Shutdown`.
#[tokio::test(start_paused = true)]
async fn a_wait_under_way_ends_with_shutdown() {
    let node = leader(Config::default()).await;
    let waiter = node.clone();
    let waiting = tokio::spawn(async move { waiter.wait_for(DEADLINE, |_| false).await });
    node.shutdown().await.expect("clean shutdown");
    assert_eq!(waiting.await.expect("the waiter ran"), Err(WaitError::Shutdown));
}

/// A node stopped by a fatal error reports Stopped too.
#[tokio::test(start_paused = true)]
async fn a_node_stopped_by_a_fatal_error_reports_stopped() {
    let node = leader(Config::default()).await;
    let _ = node.propose(b"panic".to_vec()).await;
    assert_eq!(node.wait_for(DEADLINE, |_| false).await, Err(WaitError::Shutdown));
    assert!(node.fatal_error().is_some());
    assert_eq!(node.status().role, Role::Stopped);
    assert_eq!(node.wait_for(DEADLINE, |_| true).await, Err(WaitError::Shutdown));
}

/// `stopped` waits while the node runs and commits, then returns once it is shut down (no
/// fatal error), and at once when called after.
#[tokio::test(start_paused = true)]
async fn stopped_waits_through_commits_and_returns_at_shutdown() {
    let node = leader(Config::default()).await;
    let watcher = node.clone();
    let mut watching = tokio::spawn(async move { watcher.stopped().await });
    for _ in 0..3 {
        node.propose(b"one".to_vec()).await.expect("committed");
    }
    let still_waiting = tokio::time::timeout(Duration::from_secs(1), &mut watching).await;
    assert!(still_waiting.is_err(), "stopped returned while the node runs");
    node.shutdown().await.expect("clean shutdown");
    let returned = tokio::time::timeout(DEADLINE, watching).await.expect("it returns at shutdown");
    assert!(returned.expect("the watcher ran").is_none(), "a shutdown is no fatal error");
    assert!(node.stopped().await.is_none(), "called after the stop, it returns at once");
}

/// `stopped` returns the fatal error of a node that stopped on its own.
#[tokio::test(start_paused = true)]
async fn stopped_returns_the_fatal_error() {
    let node = leader(Config::default()).await;
    let watcher = node.clone();
    let watching = tokio::spawn(async move { watcher.stopped().await });
    let _ = node.propose(b"panic".to_vec()).await;
    let returned = tokio::time::timeout(DEADLINE, watching).await.expect("it returns at the stop");
    let fatal = returned.expect("the watcher ran").expect("a fatal error");
    let recorded = node.fatal_error().expect("recorded too");
    assert_eq!(fatal.to_string(), recorded.to_string());
}

/// A node restarted from write-ahead-log storage that holds a snapshot reports the first index
/// its log holds, as it did before the restart: one past the snapshot when no entries are
/// kept below it, not 1 (the log's segments on disk may still hold older entries).
#[tokio::test(start_paused = true)]
async fn the_first_log_index_survives_a_restart_from_a_snapshot() {
    for keep in [0, 5] {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let config =
            Config { snapshot_after_entries: 20, snapshot_keep_entries: keep, ..Config::default() };
        let open = || {
            let identity = WalIdentity { node_id: NodeId(1), cluster_id: 7 };
            WalStorage::open(dir.path(), identity, WalOptions::default()).expect("the WAL opens")
        };
        let network = ChannelNetwork::new();
        let node = start_single(&network, config.clone(), open());
        node.wait_for(DEADLINE, |status| status.is_leader()).await.expect("it leads");
        for _ in 0..30 {
            node.propose(b"count".to_vec()).await.expect("committed");
        }
        let running = node
            .wait_for(DEADLINE, |status| status.snapshot_index > LogIndex(0))
            .await
            .expect("a snapshot is taken");
        let expected = LogIndex(running.snapshot_index.0.saturating_sub(keep) + 1);
        assert_eq!(running.first_log_index, expected, "keep {keep}: before the restart");
        node.shutdown().await.expect("clean shutdown");

        let network = ChannelNetwork::new();
        let restarted = start_single(&network, config, open());
        let status = restarted.status();
        assert_eq!(status.snapshot_index, running.snapshot_index, "keep {keep}");
        assert_eq!(status.first_log_index, expected, "keep {keep}: after the restart");
        restarted.shutdown().await.expect("clean shutdown");
    }
}

/// A node shut down cleanly comes back, on the same write-ahead log, having applied
/// everything it applied before, though the commit index of its last write was written
/// without a sync of its own: the shutdown syncs it.
#[tokio::test(start_paused = true)]
async fn a_clean_shutdown_keeps_the_last_commit_index() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let open = || {
        let identity = WalIdentity { node_id: NodeId(1), cluster_id: 7 };
        WalStorage::open(dir.path(), identity, WalOptions::default()).expect("the WAL opens")
    };
    let network = ChannelNetwork::new();
    let node = start_single(&network, Config::default(), open());
    node.wait_for(DEADLINE, |status| status.is_leader()).await.expect("it leads");
    for _ in 0..3 {
        node.propose(b"count".to_vec()).await.expect("committed");
    }
    let before = node.status();
    node.shutdown().await.expect("clean shutdown");

    let network = ChannelNetwork::new();
    let restarted = start_single(&network, Config::default(), open());
    // Applied again from the stored commit index, before any election: a node that had
    // lost its last commit index would apply those entries only after electing itself
    // again (in a later term) and committing through an entry of that term.
    let applied = restarted
        .wait_for(DEADLINE, |status| status.applied_index >= before.applied_index)
        .await
        .expect("everything applied again");
    assert_eq!(applied.term, before.term, "applied only after a new election");
    restarted.shutdown().await.expect("clean shutdown");
}
