//! `RaftNode::events`: role and leader changes, the applied index (coalesced), snapshots
//! taken and installed, and the node stopping, published to subscribers; a subscriber that
//! falls behind is told how many events it lost. Time is tokio's paused test clock: every
//! wait is for an event, with a deadline.

use std::time::Duration;

use raft_consensus::events::{EVENTS_CAPACITY, NodeEvent};
use raft_consensus::storage::MemoryStorage;
use raft_consensus::transport::ChannelNetwork;
use raft_consensus::{Config, FatalError, LogIndex, NodeId, RaftNode, Role, Term};
use tokio::sync::broadcast::Receiver;
use tokio::sync::broadcast::error::RecvError;

const DEADLINE: Duration = Duration::from_secs(30);

#[path = "common/counter.rs"]
mod counter;

use counter::Counter;

fn start(network: &ChannelNetwork, id: u64, members: &[u64], config: Config) -> RaftNode {
    let members: Vec<NodeId> = members.iter().copied().map(NodeId).collect();
    let transport = network.join(NodeId(id));
    RaftNode::start(NodeId(id), members, config, MemoryStorage::new(), transport, Counter(0))
        .expect("valid start")
}

/// The next event `matching` accepts, skipping others, within the deadline.
async fn next_event(
    events: &mut Receiver<NodeEvent>,
    mut matching: impl FnMut(&NodeEvent) -> bool,
) -> NodeEvent {
    let found = tokio::time::timeout(DEADLINE, async {
        loop {
            match events.recv().await {
                Ok(event) if matching(&event) => return event,
                Ok(_) => {}
                Err(error) => panic!("the events ended before the one awaited: {error}"),
            }
        }
    });
    found.await.expect("the event came before the deadline")
}

/// Every event until the channel closes, within the deadline.
async fn drain(events: &mut Receiver<NodeEvent>) -> Vec<NodeEvent> {
    let drained = tokio::time::timeout(DEADLINE, async {
        let mut seen = Vec::new();
        loop {
            match events.recv().await {
                Ok(event) => seen.push(event),
                Err(RecvError::Closed) => return seen,
                Err(RecvError::Lagged(lost)) => panic!("lost {lost} events"),
            }
        }
    });
    drained.await.expect("the channel closed before the deadline")
}

/// A node of one, subscribed before it leads: it becomes the leader and learns itself as
/// leader; commands show as applied; shutdown is the last event and the
/// channel then closes.
#[tokio::test(start_paused = true)]
async fn a_single_node_reports_its_election_its_applies_and_its_stop() {
    let network = ChannelNetwork::new();
    let node = start(&network, 1, &[1], Config::default());
    let mut events = node.events();
    // A node of one wins its election within one batch of work: it reports the role it
    // ends the batch with, Leader.
    let leader =
        next_event(&mut events, |event| matches!(event, NodeEvent::RoleChanged { .. })).await;
    assert!(
        matches!(leader, NodeEvent::RoleChanged { role: Role::Leader, term: Term(1) }),
        "{leader:?}"
    );
    let known =
        next_event(&mut events, |event| matches!(event, NodeEvent::LeaderChanged { .. })).await;
    assert!(
        matches!(known, NodeEvent::LeaderChanged { leader: Some(NodeId(1)), term: Term(1) }),
        "{known:?}"
    );
    node.propose(b"one".to_vec()).await.expect("committed");
    let last = node.status().applied_index;
    next_event(
        &mut events,
        |event| matches!(event, NodeEvent::Applied { index } if *index == last),
    )
    .await;
    node.shutdown().await.expect("clean shutdown");
    let rest = drain(&mut events).await;
    assert!(matches!(rest.last(), Some(NodeEvent::Stopped { error: None })), "{rest:?}");
    let mut late = node.events();
    assert!(
        matches!(tokio::time::timeout(DEADLINE, late.recv()).await, Ok(Err(RecvError::Closed))),
        "a stopped node's events are closed"
    );
}

/// Commands applied in one batch make one `Applied` event, not one per entry; the last one
/// names the last index.
#[tokio::test(start_paused = true)]
async fn applied_events_are_coalesced() {
    let network = ChannelNetwork::new();
    let node = start(&network, 1, &[1], Config::default());
    node.wait_for(DEADLINE, |status| status.is_leader()).await.expect("it leads");
    let mut events = node.events();
    let proposals: Vec<_> = (0..200)
        .map(|_| {
            let node = node.clone();
            tokio::spawn(async move { node.propose(b"count".to_vec()).await })
        })
        .collect();
    for proposal in proposals {
        proposal.await.expect("the proposer ran").expect("committed");
    }
    let last = node.status().applied_index;
    node.shutdown().await.expect("clean shutdown");
    let applied: Vec<LogIndex> = drain(&mut events)
        .await
        .into_iter()
        .filter_map(|event| match event {
            NodeEvent::Applied { index } => Some(index),
            _ => None,
        })
        .collect();
    assert_eq!(applied.last(), Some(&last));
    assert!(applied.windows(2).all(|pair| pair[0] < pair[1]), "{applied:?}");
    assert!(applied.len() < 200, "one event per entry: {} events", applied.len());
}

/// A snapshot the node takes is reported with its index; a node that receives one from its
/// leader reports it installed.
#[tokio::test(start_paused = true)]
async fn snapshots_taken_and_installed_are_reported() {
    let config =
        Config { snapshot_after_entries: 20, snapshot_keep_entries: 0, ..Config::default() };
    let network = ChannelNetwork::new();
    let members = [1, 2, 3];
    let nodes: Vec<RaftNode> =
        members.iter().map(|id| start(&network, *id, &members, config.clone())).collect();
    let status =
        nodes[0].wait_for(DEADLINE, |status| status.leader_id.is_some()).await.expect("a leader");
    let leader =
        nodes.iter().find(|node| Some(node.id()) == status.leader_id).expect("a member").clone();
    leader.wait_for(DEADLINE, |status| status.is_leader()).await.expect("it knows it leads");
    let lagging = nodes.iter().find(|node| node.id() != leader.id()).expect("a follower").clone();
    lagging.shutdown().await.expect("clean shutdown");
    network.disconnect(lagging.id());
    let mut leader_events = leader.events();
    for _ in 0..30 {
        leader.propose(b"count".to_vec()).await.expect("committed");
    }
    let taken =
        next_event(&mut leader_events, |event| matches!(event, NodeEvent::SnapshotTaken { .. }))
            .await;
    let NodeEvent::SnapshotTaken { index } = taken else { unreachable!("matched above") };
    assert!(index >= LogIndex(20), "{index}");
    assert!(leader.status().snapshot_index >= index);

    // The follower comes back empty: the leader's log no longer holds what it needs.
    let returning = start(&network, lagging.id().0, &members, config.clone());
    let mut returning_events = returning.events();
    let installed = next_event(&mut returning_events, |event| {
        matches!(event, NodeEvent::SnapshotInstalled { .. })
    })
    .await;
    let NodeEvent::SnapshotInstalled { index: installed } = installed else {
        unreachable!("matched above")
    };
    assert!(installed >= index, "{installed} < {index}");
    next_event(
        &mut returning_events,
        |event| matches!(event, NodeEvent::Applied { index } if *index >= installed),
    )
    .await;
    for node in nodes.iter().chain([&returning]) {
        node.shutdown().await.expect("clean shutdown");
    }
}

/// When the leader stops, a follower reports no leader, then the new one in a higher term.
#[tokio::test(start_paused = true)]
async fn a_leader_change_is_reported_with_its_term() {
    let network = ChannelNetwork::new();
    let members = [1, 2, 3];
    let nodes: Vec<RaftNode> =
        members.iter().map(|id| start(&network, *id, &members, Config::default())).collect();
    let status =
        nodes[0].wait_for(DEADLINE, |status| status.leader_id.is_some()).await.expect("a leader");
    let (old_leader, old_term) = (status.leader_id.expect("checked"), status.term);
    let watcher = nodes.iter().find(|node| node.id() != old_leader).expect("a follower");
    watcher
        .wait_for(DEADLINE, |status| status.leader_id == Some(old_leader))
        .await
        .expect("it follows");
    let mut events = watcher.events();
    let leader = nodes.iter().find(|node| node.id() == old_leader).expect("a member");
    leader.shutdown().await.expect("clean shutdown");
    network.disconnect(old_leader);
    let new = next_event(&mut events, |event| {
        matches!(event, NodeEvent::LeaderChanged { leader: Some(leader), .. } if *leader != old_leader)
    })
    .await;
    let NodeEvent::LeaderChanged { term, .. } = new else { unreachable!("matched above") };
    assert!(term > old_term, "{term} is not above {old_term}");
    for node in &nodes {
        node.shutdown().await.expect("clean shutdown");
    }
}

/// A subscriber that falls more than `EVENTS_CAPACITY` events behind is told how many it
/// lost, then reads on from the oldest kept; the node never waited for it.
#[tokio::test(start_paused = true)]
async fn a_slow_subscriber_is_told_how_many_events_it_lost() {
    let network = ChannelNetwork::new();
    let node = start(&network, 1, &[1], Config::default());
    node.wait_for(DEADLINE, |status| status.is_leader()).await.expect("it leads");
    let mut events = node.events();
    for _ in 0..EVENTS_CAPACITY + 10 {
        node.propose(b"count".to_vec()).await.expect("committed");
    }
    let first = tokio::time::timeout(DEADLINE, events.recv()).await;
    match first.expect("an event before the deadline") {
        Err(RecvError::Lagged(lost)) => assert!(lost >= 10, "lost {lost}"),
        other => panic!("expected Lagged, got {other:?}"),
    }
    let next = tokio::time::timeout(DEADLINE, events.recv()).await;
    assert!(matches!(next, Ok(Ok(NodeEvent::Applied { .. }))), "{next:?}");
    node.shutdown().await.expect("clean shutdown");
}

/// A node stopped by a fatal error says why in its last event.
#[tokio::test(start_paused = true)]
async fn a_fatal_stop_is_the_last_event_with_its_reason() {
    let network = ChannelNetwork::new();
    let node = start(&network, 1, &[1], Config::default());
    node.wait_for(DEADLINE, |status| status.is_leader()).await.expect("it leads");
    let mut events = node.events();
    let _ = node.propose(b"panic".to_vec()).await;
    let rest = drain(&mut events).await;
    match rest.last() {
        Some(NodeEvent::Stopped { error: Some(FatalError::Panicked { message }) }) => {
            assert!(message.contains("cannot go on"), "{message}");
        }
        other => panic!("expected a fatal Stopped last, got {other:?}"),
    }
    let _ = node.shutdown().await;
}
