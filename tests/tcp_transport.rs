//! The TCP transport on loopback: a real cluster over it, and what it does with peers that
//! are not of its cluster or that send bad frames. Waits are for conditions, with deadlines.

use std::error::Error;
use std::net::SocketAddr;
use std::time::Duration;

use raft_consensus::storage::{MemoryStorage, WalIdentity, WalOptions, WalStorage};
use raft_consensus::transport::codec::WIRE_FORMAT_VERSION;
use raft_consensus::transport::{TcpConfig, TcpTransport, Transport, members_fingerprint};
use raft_consensus::{
    Config, ConfigError, LogId, Message, MessageBody, NodeId, RaftNode, Snapshot, SnapshotMeta,
    StartError, StateMachine, TcpStartError, Term,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const DEADLINE: Duration = Duration::from_secs(20);
const WIRE_VERSION: u32 = WIRE_FORMAT_VERSION as u32;

#[derive(Default)]
struct Counter(u64);

impl StateMachine for Counter {
    fn apply(&mut self, _command: &[u8]) -> Result<Vec<u8>, Box<dyn Error + Send + Sync>> {
        self.0 += 1;
        Ok(self.0.to_le_bytes().to_vec())
    }
}

async fn listeners(count: usize) -> (Vec<TcpListener>, Vec<SocketAddr>) {
    let mut listeners = Vec::new();
    let mut addresses = Vec::new();
    for _ in 0..count {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        addresses.push(listener.local_addr().unwrap());
        listeners.push(listener);
    }
    (listeners, addresses)
}

fn vote_request(from: u64, to: u64) -> Message {
    Message {
        from: NodeId(from),
        to: NodeId(to),
        term: Term(1),
        body: MessageBody::PreVote { last_log_id: LogId::default() },
    }
}

async fn receive(transport: &mut TcpTransport) -> Message {
    tokio::time::timeout(DEADLINE, transport.recv()).await.expect("a message arrives").unwrap()
}

/// Three nodes over TCP elect a leader and replicate commands to all of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_runs_over_tcp() {
    let (listeners, addresses) = listeners(3).await;
    let members: Vec<NodeId> = (1..=3).map(NodeId).collect();
    let peers: Vec<(NodeId, SocketAddr)> = members.iter().copied().zip(addresses).collect();
    let mut nodes = Vec::new();
    for (id, listener) in members.iter().zip(listeners) {
        let others = peers.iter().copied().filter(|(peer, _)| peer != id);
        let transport = TcpTransport::start(*id, listener, others, TcpConfig::new(9)).unwrap();
        let node = RaftNode::start(
            *id,
            members.clone(),
            Config::default(),
            MemoryStorage::new(),
            transport,
            Counter::default(),
        )
        .unwrap();
        nodes.push(node);
    }
    let status = nodes[0].wait_for(DEADLINE, |status| status.leader_id.is_some()).await.unwrap();
    let leader = nodes.iter().find(|node| Some(node.id()) == status.leader_id).unwrap();
    leader.wait_for(DEADLINE, |status| status.is_leader()).await.unwrap();
    for expected in 1..=20u64 {
        let result = leader.propose(b"tick".to_vec()).await.unwrap();
        assert_eq!(result, expected.to_le_bytes());
    }
    let target = leader.status().commit_index;
    for node in &nodes {
        node.wait_for(DEADLINE, |status| status.applied_index >= target).await.unwrap();
    }
    for node in &nodes {
        node.shutdown().await.unwrap();
    }
}

/// A handshake from `node` of `cluster`, configured with `members`.
fn greeting(version: u32, cluster: u64, node: u64, members: &[u64]) -> Vec<u8> {
    let mut bytes = Vec::new();
    bytes.extend_from_slice(b"RAFTNET\0");
    bytes.extend_from_slice(&version.to_le_bytes());
    bytes.extend_from_slice(&cluster.to_le_bytes());
    bytes.extend_from_slice(&node.to_le_bytes());
    let fingerprint = if members.is_empty() {
        0
    } else {
        members_fingerprint(members.iter().copied().map(NodeId))
    };
    bytes.extend_from_slice(&fingerprint.to_le_bytes());
    // No advertised address.
    bytes.extend_from_slice(&0u16.to_le_bytes());
    bytes
}

fn frame(message: &Message) -> Vec<u8> {
    let mut body = Vec::new();
    raft_consensus::transport::codec::encode_message(message, &mut body);
    [(body.len() as u32).to_le_bytes().to_vec(), body].concat()
}

/// Waits until the node closes `stream` (a read returns end of file or an error).
async fn assert_closed(stream: &mut TcpStream) {
    let mut byte = [0u8; 1];
    let read =
        tokio::time::timeout(DEADLINE, stream.read(&mut byte)).await.expect("closed in time");
    assert!(matches!(read, Ok(0) | Err(_)), "the connection stayed open");
}

/// A node of another cluster, speaking another wire version, or configured with other members
/// is refused: the connection is closed and its message never delivered; a node of the same
/// cluster and members gets through.
#[tokio::test]
async fn a_node_of_another_cluster_version_or_membership_is_refused() {
    // Node 3's address is one nobody listens on: only the greetings below reach node 1.
    let (mut listeners, addresses) = listeners(2).await;
    drop(listeners.pop());
    let peers = [(NodeId(3), addresses[1])];
    let mut node1 =
        TcpTransport::start(NodeId(1), listeners.pop().unwrap(), peers, TcpConfig::new(1)).unwrap();
    for greeting in [
        greeting(WIRE_VERSION, 2, 3, &[1, 3]),
        greeting(WIRE_VERSION - 1, 1, 3, &[1, 3]),
        greeting(WIRE_VERSION + 1, 1, 3, &[1, 3]),
        greeting(WIRE_VERSION, 1, 3, &[1, 2, 3]),
        greeting(WIRE_VERSION, 1, 3, &[3]),
    ] {
        let mut stream = TcpStream::connect(addresses[0]).await.unwrap();
        stream.write_all(&greeting).await.unwrap();
        let _ = stream.write_all(&frame(&vote_request(3, 1))).await;
        assert_closed(&mut stream).await;
    }
    // The same members in another order, and a node that is not bootstrapping (fingerprint
    // 0: it joins, or restarts from its stored configuration), get through.
    for members in [&[3, 1][..], &[]] {
        let mut stream = TcpStream::connect(addresses[0]).await.unwrap();
        stream.write_all(&greeting(WIRE_VERSION, 1, 3, members)).await.unwrap();
        stream.write_all(&frame(&vote_request(3, 1))).await.unwrap();
        assert_eq!(receive(&mut node1).await.from, NodeId(3));
    }
    assert!(node1.try_recv().is_none(), "a refused peer's message was delivered");
}

/// A node started with no peers (it joins) is added by the leader: it learns the leader's
/// address from the leader's handshake to answer it, then the members' addresses from the
/// configuration, and becomes a voter that takes over leadership.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_joins_a_running_cluster_over_tcp() {
    let (mut listeners, addresses) = listeners(2).await;
    let joining_listener = listeners.pop().unwrap();
    let address = |index: usize| raft_consensus::MemberAddress {
        raft_addr: addresses[index].to_string(),
        client_addr: String::new(),
    };
    let first = RaftNode::start(
        NodeId(1),
        [raft_consensus::Member { id: NodeId(1), address: address(0) }],
        Config::default(),
        MemoryStorage::new(),
        TcpTransport::start(NodeId(1), listeners.pop().unwrap(), [], TcpConfig::new(4)).unwrap(),
        Counter::default(),
    )
    .unwrap();
    first.wait_for(DEADLINE, |status| status.is_leader()).await.unwrap();
    first.propose(b"before".to_vec()).await.unwrap();
    let joining = RaftNode::start(
        NodeId(2),
        Vec::<NodeId>::new(),
        Config::default(),
        MemoryStorage::new(),
        TcpTransport::start(NodeId(2), joining_listener, [], TcpConfig::new(4)).unwrap(),
        Counter::default(),
    )
    .unwrap();
    let configuration = first.add_voter(NodeId(2), address(1), DEADLINE).await.unwrap();
    assert_eq!(configuration.voters(), &[NodeId(1), NodeId(2)]);
    assert!(!configuration.is_joint());
    let on_joining = joining
        .wait_for(DEADLINE, |status| status.configuration.voters().len() == 2)
        .await
        .unwrap();
    assert_eq!(on_joining.configuration.address(NodeId(1)), Some(&address(0)));
    first.transfer_leadership(NodeId(2), DEADLINE).await.unwrap();
    joining.wait_for(DEADLINE, |status| status.is_leader()).await.unwrap();
    assert_eq!(joining.propose(b"after".to_vec()).await.unwrap(), 2u64.to_le_bytes());
    first.shutdown().await.unwrap();
    joining.shutdown().await.unwrap();
}

/// A frame over the maximum, one that does not decode, or one claiming another sender closes
/// that connection, and the node goes on serving other peers.
#[tokio::test]
async fn oversized_and_garbage_frames_close_the_connection_without_harm() {
    let (mut listeners, addresses) = listeners(2).await;
    let second = listeners.pop().unwrap();
    let first = listeners.pop().unwrap();
    let config = TcpConfig { max_frame_bytes: 1024, ..TcpConfig::new(5) };
    let mut node1 =
        TcpTransport::start(NodeId(1), first, [(NodeId(2), addresses[1])], config.clone()).unwrap();

    for bad_frame in [
        (1_000_000u32).to_le_bytes().to_vec(),
        [4u32.to_le_bytes().to_vec(), vec![9, 9, 9, 9]].concat(),
        frame(&vote_request(7, 1)),
    ] {
        let mut stream = TcpStream::connect(addresses[0]).await.unwrap();
        stream.write_all(&greeting(WIRE_VERSION, 5, 2, &[1, 2])).await.unwrap();
        stream.write_all(&bad_frame).await.unwrap();
        assert_closed(&mut stream).await;
    }

    let mut node2 =
        TcpTransport::start(NodeId(2), second, [(NodeId(1), addresses[0])], config).unwrap();
    node2.send(vote_request(2, 1));
    assert_eq!(receive(&mut node1).await.from, NodeId(2));
}

/// Dropping a transport (its node stopped) frees its address at once, so a node started again
/// in the same process can listen there: the very next bind succeeds, with no wait.
#[tokio::test]
async fn a_dropped_transport_frees_its_address() {
    let (mut listeners, addresses) = listeners(1).await;
    let transport =
        TcpTransport::start(NodeId(1), listeners.pop().unwrap(), [], TcpConfig::new(1)).unwrap();
    drop(transport);
    if let Err(error) = TcpListener::bind(addresses[0]).await {
        panic!("the address is still taken right after the transport dropped: {error}");
    }
}

/// Peers are the other nodes: the node's own id among them is refused, naming it.
#[tokio::test]
async fn the_nodes_own_id_among_its_peers_is_refused() {
    let (mut bound, addresses) = listeners(2).await;
    drop(bound.pop());
    let peers = [(NodeId(1), addresses[0]), (NodeId(2), addresses[1])];
    let refused = TcpTransport::start(NodeId(1), bound.remove(0), peers, TcpConfig::new(1));
    match refused {
        Err(error @ TcpStartError::OwnIdAmongPeers { .. }) => {
            assert!(
                matches!(error, TcpStartError::OwnIdAmongPeers { id: NodeId(1), address } if address == addresses[0])
            );
            let message = error.to_string();
            assert!(message.contains("node1"), "{message}");
            let io_error = std::io::Error::from(error);
            assert_eq!(io_error.kind(), std::io::ErrorKind::InvalidInput);
        }
        Err(other) => panic!("expected OwnIdAmongPeers, got {other}"),
        Ok(_) => panic!("a transport started with itself among its peers"),
    }
    let (mut fresh, _) = listeners(1).await;
    let only_others = [(NodeId(2), addresses[1])];
    assert!(
        TcpTransport::start(NodeId(1), fresh.remove(0), only_others, TcpConfig::new(1)).is_ok()
    );
}

/// A node whose peer is down drops what it queued for it when a dial fails, and backs off
/// from dialling it; when the peer comes up and dials in, the node dials back at once instead
/// of waiting out its backoff (here a minute: the message arrives well before).
#[tokio::test]
async fn a_peer_that_dials_in_is_dialled_back_at_once_and_gets_no_stale_messages() {
    let (mut listeners, addresses) = listeners(2).await;
    let second_listener = listeners.pop().unwrap();
    let peers = [(NodeId(1), addresses[0]), (NodeId(2), addresses[1])];
    let patient =
        TcpConfig { reconnect_min_ms: 60_000, reconnect_max_ms: 60_000, ..TcpConfig::new(5) };
    // Node 2's address refuses connections until node 2 starts.
    drop(second_listener);
    let mut first =
        TcpTransport::start(NodeId(1), listeners.pop().unwrap(), [peers[1]], patient.clone())
            .unwrap();
    // Queued before the dial loop first runs (this runtime has one thread): the dial fails,
    // the message is dropped, and the backoff begins.
    first.send(vote_request(1, 2));
    tokio::time::sleep(Duration::from_millis(200)).await;
    let second_listener = TcpListener::bind(addresses[1]).await.unwrap();
    let mut second = TcpTransport::start(NodeId(2), second_listener, [peers[0]], patient).unwrap();
    // Node 2 dials node 1 (its first dial succeeds), which wakes node 1's dial loop.
    second.send(vote_request(2, 1));
    assert_eq!(receive(&mut first).await.from, NodeId(2));
    first.send(Message { term: Term(2), ..vote_request(1, 2) });
    let received = receive(&mut second).await;
    assert_eq!((received.from, received.term), (NodeId(1), Term(2)), "not the stale message");
}

/// Snapshot chunks (and entries) queued for a peer count against `queue_bytes`: past it,
/// further ones are dropped rather than held, while the queue still takes messages without
/// them.
#[tokio::test]
async fn a_peers_queue_holds_at_most_queue_bytes_of_chunks() {
    let (mut listeners, addresses) = listeners(2).await;
    let second_listener = listeners.pop().unwrap();
    let peers = [(NodeId(1), addresses[0]), (NodeId(2), addresses[1])];
    let config = TcpConfig {
        reconnect_min_ms: 60_000,
        reconnect_max_ms: 60_000,
        queue_bytes: 3 << 19,
        ..TcpConfig::new(5)
    };
    drop(second_listener);
    let mut first =
        TcpTransport::start(NodeId(1), listeners.pop().unwrap(), [peers[1]], config.clone())
            .unwrap();
    // The first dial fails; the backoff begins, and messages queue.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let data = bytes::Bytes::from(vec![7u8; 1 << 20]);
    let snapshot = Snapshot::new(SnapshotMeta::default(), 3 << 20, 9);
    for chunk in 0..3u64 {
        let body = MessageBody::InstallSnapshot {
            snapshot: snapshot.clone(),
            offset: chunk << 20,
            data: data.clone(),
        };
        first.send(Message { body, ..vote_request(1, 2) });
    }
    first.send(Message { term: Term(2), ..vote_request(1, 2) });
    let second_listener = TcpListener::bind(addresses[1]).await.unwrap();
    let mut second = TcpTransport::start(NodeId(2), second_listener, [peers[0]], config).unwrap();
    second.send(vote_request(2, 1));
    assert_eq!(receive(&mut first).await.from, NodeId(2));
    // 1.5 MiB hold the first chunk only.
    let received = receive(&mut second).await;
    match received.body {
        MessageBody::InstallSnapshot { offset, data: received, .. } => {
            assert_eq!((offset, received), (0, data), "the first chunk, whole");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(receive(&mut second).await.term, Term(2));
}

/// Starts a one-node `RaftNode` on a fresh data directory of cluster 7 and a TCP transport
/// with `tcp`, returning what `RaftNode::start` said.
async fn start_single(config: Config, tcp: TcpConfig) -> Result<RaftNode, StartError> {
    let dir = tempfile::tempdir().unwrap();
    let identity = WalIdentity { node_id: NodeId(1), cluster_id: 7 };
    let storage = WalStorage::open(dir.path(), identity, WalOptions::default()).unwrap();
    let (mut bound, _) = listeners(1).await;
    let transport = TcpTransport::start(NodeId(1), bound.remove(0), [], tcp).unwrap();
    RaftNode::start(NodeId(1), [NodeId(1)], config, storage, transport, Counter::default())
}

/// The storage's and the transport's cluster ids must agree: a mismatch is refused at start,
/// naming both, before anything runs; a transport built from the storage's identity starts.
#[tokio::test]
async fn a_storage_and_a_transport_of_different_clusters_are_refused_at_start() {
    match start_single(Config::default(), TcpConfig::new(8)).await {
        Err(error @ StartError::ClusterIdMismatch { storage: 7, transport: 8 }) => {
            let message = error.to_string();
            assert!(message.contains("cluster 7") && message.contains("cluster 8"), "{message}");
        }
        Err(other) => panic!("expected a cluster id mismatch, got: {other}"),
        Ok(_) => panic!("a node started with storage of cluster 7 and a transport of cluster 8"),
    }
    let identity = WalIdentity { node_id: NodeId(1), cluster_id: 7 };
    let node = start_single(Config::default(), TcpConfig::for_identity(&identity)).await.unwrap();
    node.shutdown().await.unwrap();
}

/// A configuration whose messages cannot fit in the transport's frames is refused at start,
/// naming the limit: an entry, an AppendEntries batch or a snapshot chunk above
/// `max_frame_bytes` would close the connection every time it is sent.
#[tokio::test]
async fn a_config_whose_messages_exceed_the_frame_limit_is_refused_at_start() {
    const MIB: usize = 1024 * 1024;
    let small_frames = TcpConfig { max_frame_bytes: 4 * MIB, ..TcpConfig::new(7) };
    let cases = [
        ("max_entry_bytes", Config::default()),
        // Exactly the frame's size: the message's framing no longer fits.
        (
            "max_entry_bytes",
            Config { max_entry_bytes: 4 * MIB, max_append_bytes: MIB, ..Config::default() },
        ),
        (
            "max_append_bytes",
            Config { max_entry_bytes: MIB, max_append_bytes: 4 * MIB, ..Config::default() },
        ),
        (
            "snapshot_chunk_bytes",
            Config { max_entry_bytes: MIB, snapshot_chunk_bytes: 4 * MIB, ..Config::default() },
        ),
    ];
    for (limit, config) in cases {
        match start_single(config, small_frames.clone()).await {
            Err(StartError::Config(error @ ConfigError::MessageAboveFrameLimit { name, .. })) => {
                assert_eq!(name, limit);
                let message = error.to_string();
                assert!(
                    message.contains(limit) && message.contains(&(4 * MIB).to_string()),
                    "{message}"
                );
            }
            Err(other) => panic!("{limit}: expected MessageAboveFrameLimit, got: {other}"),
            Ok(_) => panic!("{limit}: a node started whose messages exceed the frame limit"),
        }
    }
    // Just within: the largest entry's message fits the frame.
    let fits = Config { max_entry_bytes: 3 * MIB, max_append_bytes: MIB, ..Config::default() };
    start_single(fits, small_frames).await.unwrap().shutdown().await.unwrap();
    // At the boundary: a frame exactly the largest message's size carries it; one byte less
    // does not.
    let config = Config { max_entry_bytes: 3 * MIB, max_append_bytes: MIB, ..Config::default() };
    let tiny_frames = TcpConfig { max_frame_bytes: MIB, ..TcpConfig::new(7) };
    let largest = match start_single(config.clone(), tiny_frames).await {
        Err(StartError::Config(ConfigError::MessageAboveFrameLimit { message_bytes, .. })) => {
            message_bytes
        }
        other => panic!("expected MessageAboveFrameLimit, got {:?}", other.map(|_| ())),
    };
    let exact = TcpConfig { max_frame_bytes: largest, ..TcpConfig::new(7) };
    start_single(config.clone(), exact).await.unwrap().shutdown().await.unwrap();
    let short = TcpConfig { max_frame_bytes: largest - 1, ..TcpConfig::new(7) };
    assert!(start_single(config, short).await.is_err(), "a frame one byte short was accepted");
    // The defaults fit each other.
    start_single(Config::default(), TcpConfig::new(7)).await.unwrap().shutdown().await.unwrap();
}

/// A node's `shutdown` releases its port and its data directory as it returns: the node
/// starts again at once on the same address, from the same log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_restarts_on_the_same_port_and_data_directory_right_after_shutdown() {
    let dir = tempfile::tempdir().unwrap();
    let identity = WalIdentity { node_id: NodeId(1), cluster_id: 7 };
    let (mut bound, addresses) = listeners(1).await;
    let mut listener = bound.remove(0);
    for round in 1..=3u64 {
        let storage = WalStorage::open(dir.path(), identity, WalOptions::default()).unwrap();
        let transport =
            TcpTransport::start(NodeId(1), listener, [], TcpConfig::for_identity(&identity))
                .unwrap();
        let node = RaftNode::start(
            NodeId(1),
            [NodeId(1)],
            Config::default(),
            storage,
            transport,
            Counter::default(),
        )
        .unwrap();
        node.wait_for(DEADLINE, |status| status.is_leader()).await.unwrap();
        // The counter is rebuilt from the log each time: one more command per round.
        assert_eq!(node.propose(b"tick".to_vec()).await.unwrap(), round.to_le_bytes());
        node.shutdown().await.unwrap();
        listener = match TcpListener::bind(addresses[0]).await {
            Ok(listener) => listener,
            Err(error) => panic!("round {round}: the port is still taken after shutdown: {error}"),
        };
    }
}
