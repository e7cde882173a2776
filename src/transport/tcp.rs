//! [`TcpTransport`]: messages between processes over TCP.
//!
//! Each node listens on one address and dials each peer once for its outgoing messages, so
//! between two nodes there is one connection in each direction, each carrying a pipelined
//! stream of length-prefixed frames (`length u32 | message`, the message in the
//! [`codec`](super::codec) encoding). A connection opens with a handshake naming the wire
//! version, the cluster, the sending node and a fingerprint of the cluster's members (this
//! node and its peers); a node of another cluster or version, or one configured with other
//! members, is refused with a logged reason naming both values. (Two groups of nodes started
//! with different member lists could otherwise each elect a leader of "the" cluster; etcd
//! derives its cluster id from the initial members for the same reason.) Outgoing queues are bounded (a slow or dead peer costs at most
//! `queue_capacity` messages, then messages to it are dropped, which Raft tolerates), and a
//! broken connection is redialled with capped exponential backoff. A frame over
//! `max_frame_bytes`, an undecodable frame or a message claiming another sender closes that
//! connection with a logged error; nothing a peer sends can panic the node.

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

use super::Transport;
use super::codec::{WIRE_FORMAT_VERSION, decode_message, encode_message};
use crate::message::Message;
use crate::types::NodeId;

/// The first bytes of every connection.
const HANDSHAKE_MAGIC: [u8; 8] = *b"RAFTNET\0";
/// Bytes of a handshake: magic, wire version u32, cluster id u64, node id u64, members
/// fingerprint u64.
const HANDSHAKE_LEN: usize = 8 + 4 + 8 + 8 + 8;

/// Settings of a [`TcpTransport`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TcpConfig {
    /// The cluster's id; connections from another cluster are refused.
    pub cluster_id: u64,
    /// The largest frame accepted or sent, in bytes.
    pub max_frame_bytes: usize,
    /// Messages queued for one peer before further ones are dropped.
    pub queue_capacity: usize,
    /// Messages received and not yet taken by the node before further ones are dropped.
    pub inbox_capacity: usize,
    /// First wait before redialling a peer.
    pub reconnect_min_ms: u64,
    /// Longest wait between redials.
    pub reconnect_max_ms: u64,
}

impl TcpConfig {
    /// Defaults for the cluster `cluster_id`.
    pub fn new(cluster_id: u64) -> Self {
        TcpConfig {
            cluster_id,
            max_frame_bytes: 64 * 1024 * 1024,
            queue_capacity: 4096,
            inbox_capacity: 65_536,
            reconnect_min_ms: 10,
            reconnect_max_ms: 1_000,
        }
    }
}

/// A node's TCP transport. Must be created inside a tokio runtime (it spawns its tasks).
#[derive(Debug)]
pub struct TcpTransport {
    id: NodeId,
    traffic: Arc<PeerTraffic>,
    peers: HashMap<NodeId, mpsc::Sender<Message>>,
    inbox: mpsc::Receiver<Message>,
    local_addr: SocketAddr,
}

impl TcpTransport {
    /// Starts node `id`'s transport: accepts peers on `listener`, and dials each of `peers`.
    pub fn start(
        id: NodeId,
        listener: TcpListener,
        peers: impl IntoIterator<Item = (NodeId, SocketAddr)>,
        config: TcpConfig,
    ) -> io::Result<TcpTransport> {
        let local_addr = listener.local_addr()?;
        let peers: Vec<(NodeId, SocketAddr)> =
            peers.into_iter().filter(|(peer, _)| *peer != id).collect();
        let members = members_fingerprint(peers.iter().map(|(peer, _)| *peer).chain([id]));
        let identity = Identity { cluster_id: config.cluster_id, members };
        let traffic = Arc::new(PeerTraffic {
            peers: peers.iter().map(|(peer, _)| (*peer, Default::default())).collect(),
        });
        let (inbox_sender, inbox) = mpsc::channel(config.inbox_capacity.max(1));
        let accepting =
            Accepting { id, identity, inbox: inbox_sender, traffic: Arc::clone(&traffic) };
        tokio::spawn(accept_loop(accepting, listener, config.clone()));
        let mut senders = HashMap::new();
        for (peer, address) in peers {
            let (sender, queue) = mpsc::channel(config.queue_capacity.max(1));
            let link = Link { id, identity, peer, address, traffic: Arc::clone(&traffic) };
            tokio::spawn(dial_loop(link, queue, config.clone()));
            senders.insert(peer, sender);
        }
        Ok(TcpTransport { id, traffic, peers: senders, inbox, local_addr })
    }

    /// The address this node accepts peers on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Bytes sent to and received from each peer, shared: keep the handle before moving the
    /// transport into a node.
    pub fn traffic(&self) -> Arc<PeerTraffic> {
        Arc::clone(&self.traffic)
    }
}

/// Bytes exchanged with each configured peer (frames and handshakes).
#[derive(Debug, Default)]
pub struct PeerTraffic {
    peers: BTreeMap<NodeId, (AtomicU64, AtomicU64)>,
}

impl PeerTraffic {
    /// `(peer, bytes sent, bytes received)` for every configured peer.
    pub fn snapshot(&self) -> Vec<(NodeId, u64, u64)> {
        self.peers
            .iter()
            .map(|(peer, (sent, received))| {
                (*peer, sent.load(Ordering::Relaxed), received.load(Ordering::Relaxed))
            })
            .collect()
    }

    fn add_sent(&self, peer: NodeId, bytes: usize) {
        if let Some((sent, _)) = self.peers.get(&peer) {
            sent.fetch_add(bytes as u64, Ordering::Relaxed);
        }
    }

    fn add_received(&self, peer: NodeId, bytes: usize) {
        if let Some((_, received)) = self.peers.get(&peer) {
            received.fetch_add(bytes as u64, Ordering::Relaxed);
        }
    }
}

impl Transport for TcpTransport {
    fn send(&mut self, message: Message) {
        match self.peers.get(&message.to) {
            Some(queue) => {
                if queue.try_send(message).is_err() {
                    tracing::trace!(node = %self.id, "Dropping a message: the peer's queue is full or closed");
                }
            }
            None => {
                tracing::debug!(node = %self.id, to = %message.to, "Dropping a message to an unknown peer")
            }
        }
    }

    async fn recv(&mut self) -> Option<Message> {
        self.inbox.recv().await
    }

    fn try_recv(&mut self) -> Option<Message> {
        self.inbox.try_recv().ok()
    }
}

/// What a node's handshake says about the cluster it belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Identity {
    cluster_id: u64,
    /// [`members_fingerprint`] of the members this node was configured with.
    members: u64,
}

/// The fingerprint of a member list that the handshake carries (order and duplicates do not
/// matter): FNV-1a over the sorted ids, each as u64 little-endian. Not a defence against
/// forgery (authenticating peers is another layer's job), only against two nodes configured
/// with different members talking to each other by mistake.
///
/// ```
/// use raft_consensus::NodeId;
/// use raft_consensus::transport::members_fingerprint;
///
/// let members = [NodeId(1), NodeId(2), NodeId(3)];
/// assert_eq!(members_fingerprint(members), members_fingerprint([NodeId(3), NodeId(1), NodeId(2), NodeId(1)]));
/// assert_ne!(members_fingerprint(members), members_fingerprint([NodeId(1), NodeId(2)]));
/// ```
pub fn members_fingerprint(members: impl IntoIterator<Item = NodeId>) -> u64 {
    let sorted: std::collections::BTreeSet<NodeId> = members.into_iter().collect();
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for member in sorted {
        for byte in member.0.to_le_bytes() {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    hash
}

fn handshake(identity: Identity, node: NodeId) -> [u8; HANDSHAKE_LEN] {
    let mut bytes = [0u8; HANDSHAKE_LEN];
    bytes[..8].copy_from_slice(&HANDSHAKE_MAGIC);
    bytes[8..12].copy_from_slice(&u32::from(WIRE_FORMAT_VERSION).to_le_bytes());
    bytes[12..20].copy_from_slice(&identity.cluster_id.to_le_bytes());
    bytes[20..28].copy_from_slice(&node.0.to_le_bytes());
    bytes[28..36].copy_from_slice(&identity.members.to_le_bytes());
    bytes
}

/// Checks a peer's handshake; returns the peer's node id or why it is refused.
fn check_handshake(bytes: &[u8; HANDSHAKE_LEN], identity: Identity) -> Result<NodeId, String> {
    let cluster_id = identity.cluster_id;
    if bytes[..8] != HANDSHAKE_MAGIC {
        return Err(String::from("not a raft_consensus peer (bad handshake magic)"));
    }
    let word = |range: std::ops::Range<usize>| {
        let mut value = [0u8; 8];
        value[..range.len()].copy_from_slice(&bytes[range]);
        u64::from_le_bytes(value)
    };
    let version = word(8..12);
    if version != u64::from(WIRE_FORMAT_VERSION) {
        return Err(format!(
            "peer speaks wire version {version}, this node speaks {WIRE_FORMAT_VERSION}"
        ));
    }
    let peer_cluster = word(12..20);
    if peer_cluster != cluster_id {
        return Err(format!("peer belongs to cluster {peer_cluster}, this node to {cluster_id}"));
    }
    let peer_members = word(28..36);
    if peer_members != identity.members {
        return Err(format!(
            "peer was configured with other members (members fingerprint {peer_members:016x}, this node's {:016x}): every node must be started with the same member list",
            identity.members
        ));
    }
    Ok(NodeId(word(20..28)))
}

/// The accepting side of a node's transport: who accepts, as whom, and where messages go.
struct Accepting {
    id: NodeId,
    identity: Identity,
    inbox: mpsc::Sender<Message>,
    traffic: Arc<PeerTraffic>,
}

async fn accept_loop(accepting: Accepting, listener: TcpListener, config: TcpConfig) {
    let Accepting { id, identity, inbox, traffic } = accepting;
    loop {
        // The transport dropped (its node stopped): close the listener at once, so that the
        // address is free for a node started again in the same process.
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = inbox.closed() => return,
        };
        match accepted {
            Ok((stream, address)) => {
                let connection = Inbound {
                    id,
                    identity,
                    address,
                    inbox: inbox.clone(),
                    traffic: Arc::clone(&traffic),
                };
                tokio::spawn(read_connection(connection, stream, config.clone()));
            }
            Err(error) => {
                tracing::warn!(node = %id, "Accepting a peer connection failed: {error}");
                tokio::time::sleep(Duration::from_millis(config.reconnect_min_ms)).await;
            }
        }
    }
}

/// An accepted connection: who accepted it, from where, and where its messages go.
struct Inbound {
    id: NodeId,
    identity: Identity,
    address: SocketAddr,
    inbox: mpsc::Sender<Message>,
    traffic: Arc<PeerTraffic>,
}

/// Reads one peer's frames into the inbox until the connection ends or misbehaves.
async fn read_connection(connection: Inbound, mut stream: TcpStream, config: TcpConfig) {
    let Inbound { id, identity, address, inbox, traffic } = connection;
    let mut greeting = [0u8; HANDSHAKE_LEN];
    if stream.read_exact(&mut greeting).await.is_err() {
        return;
    }
    let peer = match check_handshake(&greeting, identity) {
        Ok(peer) => peer,
        Err(reason) => {
            tracing::warn!(node = %id, %address, "Refusing a connection: {reason}");
            return;
        }
    };
    loop {
        let mut length = [0u8; 4];
        if stream.read_exact(&mut length).await.is_err() {
            return;
        }
        let length = u32::from_le_bytes(length) as usize;
        if length > config.max_frame_bytes {
            tracing::error!(node = %id, %peer, "Closing the connection: a {length}-byte frame exceeds the maximum of {}", config.max_frame_bytes);
            return;
        }
        let mut frame = vec![0u8; length];
        if stream.read_exact(&mut frame).await.is_err() {
            return;
        }
        traffic.add_received(peer, 4 + length);
        let message = match decode_message(&Bytes::from(frame)) {
            Ok(message) => message,
            Err(error) => {
                tracing::error!(node = %id, %peer, "Closing the connection: undecodable frame: {error}");
                return;
            }
        };
        if message.from != peer || message.to != id {
            tracing::error!(node = %id, %peer, "Closing the connection: a message from {} to {} on {peer}'s connection", message.from, message.to);
            return;
        }
        if inbox.try_send(message).is_err() && inbox.is_closed() {
            return;
        }
    }
}

/// One outgoing connection's ends.
struct Link {
    id: NodeId,
    identity: Identity,
    peer: NodeId,
    address: SocketAddr,
    traffic: Arc<PeerTraffic>,
}

/// Keeps a connection to `peer` and writes its queued messages, redialling with backoff.
async fn dial_loop(link: Link, mut queue: mpsc::Receiver<Message>, config: TcpConfig) {
    let Link { id, identity, peer, address, traffic } = link;
    let mut backoff_ms = config.reconnect_min_ms.max(1);
    let mut buffer = Vec::new();
    loop {
        let mut stream = match TcpStream::connect(address).await {
            Ok(stream) => stream,
            Err(error) => {
                tracing::trace!(node = %id, %peer, "Dialling {address} failed: {error}");
                tokio::time::sleep(Duration::from_millis(backoff_ms)).await;
                backoff_ms = (backoff_ms * 2).min(config.reconnect_max_ms.max(1));
                if queue.is_closed() {
                    return;
                }
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        if stream.write_all(&handshake(identity, id)).await.is_err() {
            continue;
        }
        tracing::debug!(node = %id, %peer, "Connected to {address}");
        backoff_ms = config.reconnect_min_ms.max(1);
        loop {
            let Some(first) = queue.recv().await else { return };
            // Pipelining: everything already queued goes out in one write.
            buffer.clear();
            let mut next = Some(first);
            while let Some(message) = next {
                let start = buffer.len();
                buffer.extend_from_slice(&[0u8; 4]);
                encode_message(&message, &mut buffer);
                let length = buffer.len() - start - 4;
                if length > config.max_frame_bytes {
                    tracing::error!(node = %id, %peer, "Dropping a {length}-byte message over the frame maximum");
                    buffer.truncate(start);
                } else {
                    let length = u32::try_from(length).unwrap_or(u32::MAX);
                    buffer[start..start + 4].copy_from_slice(&length.to_le_bytes());
                }
                next = if buffer.len() < 1024 * 1024 { queue.try_recv().ok() } else { None };
            }
            if let Err(error) = stream.write_all(&buffer).await {
                tracing::debug!(node = %id, %peer, "Connection to {address} lost: {error}");
                break;
            }
            traffic.add_sent(peer, buffer.len());
        }
    }
}
