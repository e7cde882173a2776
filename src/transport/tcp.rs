//! [`TcpTransport`]: messages between processes over TCP, and its settings, [`TcpConfig`].
//! How it works (connections, handshake, queues, limits) is documented on the type.

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, Semaphore, mpsc};

use super::Transport;
use super::codec::{WIRE_FORMAT_VERSION, decode_message, encode_message_but_chunk};
use super::tls::{PeerTls, certificate_names_node, node_name};
use crate::core::Configuration;
use crate::error::TcpStartError;
use crate::message::{Entry, Message, MessageBody};
use crate::storage::WalIdentity;
use crate::types::NodeId;

/// The first bytes of every connection.
const HANDSHAKE_MAGIC: [u8; 8] = *b"RAFTNET\0";
/// Bytes of a handshake's fixed part: magic, wire version u32, cluster id u64, node id u64,
/// members fingerprint u64. An advertised address follows: length u16, then that many bytes
/// of UTF-8 `host:port` (empty when the node advertises none).
const HANDSHAKE_LEN: usize = 8 + 4 + 8 + 8 + 8;
/// The longest advertised address accepted in a handshake.
const MAX_ADVERTISED_ADDR_BYTES: usize = 256;
/// Most peers a transport learns from inbound handshakes (nodes not in its configuration yet).
const MAX_LEARNED_PEERS: usize = crate::config::MAX_MEMBERS;

/// Settings of a [`TcpTransport`].
#[derive(Clone, Debug)]
pub struct TcpConfig {
    /// The cluster's id; connections from another cluster are refused. Take it from the
    /// storage's identity ([`TcpConfig::for_identity`]): a node refuses to start with a
    /// storage of another cluster. No default: [`TcpConfig::new`] takes it.
    pub cluster_id: u64,
    /// The largest frame accepted or sent, in bytes (one message, as encoded). Default 64
    /// MiB. A node refuses to start with a [`Config`](crate::Config) whose largest entry,
    /// AppendEntries batch or snapshot chunk would not fit: see `Config`'s "Size limits".
    pub max_frame_bytes: usize,
    /// Messages queued for one peer before further ones are dropped (a count). Default 4,096.
    pub queue_capacity: usize,
    /// Bytes of log entries and snapshot chunks queued for one peer before further messages
    /// carrying them are dropped (one is always queued when nothing else is). Default 64
    /// MiB: a leader's appends in flight to one follower (`max_inflight_appends` times
    /// `max_append_bytes`, by default) fit.
    pub queue_bytes: usize,
    /// Messages received and not yet taken by the node before further ones are dropped (a
    /// count). Default 65,536.
    pub inbox_capacity: usize,
    /// First wait before redialling a peer, in milliseconds. Default 10.
    pub reconnect_min_ms: u64,
    /// Longest wait between redials, in milliseconds (the wait doubles up to it). Default
    /// 1,000.
    pub reconnect_max_ms: u64,
    /// The fingerprint of the bootstrap members sent in the handshake: `None` computes it
    /// from the peers given to [`TcpTransport::start`] and this node (0 when none are
    /// given); `Some(0)` says "not bootstrapping" (a node that joins a running cluster, or
    /// restarts from its stored configuration), which every peer accepts. Default `None`.
    pub members_fingerprint: Option<u64>,
    /// The address peers reach this node at, sent in the handshake so that a peer that does
    /// not know this node yet (a new member) can answer it. `None` (the default): the
    /// listener's address.
    pub advertise_addr: Option<SocketAddr>,
    /// Mutual TLS for every connection (both directions); `None` (the default): plain TCP,
    /// trusting the node id a dialler claims.
    pub tls: Option<PeerTls>,
    /// How long a new connection (accepted or dialled) has to finish its TLS and transport
    /// handshakes before it is closed, in milliseconds. Default 5,000.
    pub handshake_timeout_ms: u64,
    /// Most connections the listener holds at once (handshaking or established); more are
    /// closed as soon as they are accepted. A cluster needs one per peer, plus a few while
    /// peers reconnect. Default 256.
    pub max_inbound_connections: usize,
}

impl TcpConfig {
    /// Defaults for the cluster of `identity`, the identity the node's
    /// [`WalStorage`](crate::storage::WalStorage) is opened with: the cluster id is then
    /// given once, for both.
    ///
    /// ```
    /// use raft_consensus::NodeId;
    /// use raft_consensus::storage::WalIdentity;
    /// use raft_consensus::transport::TcpConfig;
    ///
    /// let identity = WalIdentity { node_id: NodeId(1), cluster_id: 7 };
    /// assert_eq!(TcpConfig::for_identity(&identity).cluster_id, 7);
    /// ```
    pub fn for_identity(identity: &WalIdentity) -> Self {
        TcpConfig::new(identity.cluster_id)
    }

    /// Defaults for the cluster `cluster_id` (each field's doc gives its default).
    pub fn new(cluster_id: u64) -> Self {
        TcpConfig {
            cluster_id,
            max_frame_bytes: 64 * 1024 * 1024,
            queue_capacity: 4096,
            queue_bytes: 64 * 1024 * 1024,
            inbox_capacity: 65_536,
            reconnect_min_ms: 10,
            reconnect_max_ms: 1_000,
            members_fingerprint: None,
            advertise_addr: None,
            tls: None,
            handshake_timeout_ms: 5_000,
            max_inbound_connections: 256,
        }
    }
}

/// A node's transport over TCP, between processes (or nodes of one process). Must be
/// created inside a tokio runtime (it spawns its tasks).
///
/// # Setting up
///
/// - **Addresses.** [`start`](TcpTransport::start) takes a listener you bind: bind every
///   node's listener first (port 0 lets the system pick a free port), read each one's
///   [`local_addr`](tokio::net::TcpListener::local_addr), and only then start the
///   transports with those addresses. [`TcpTransport::local_addr`] reports it afterwards.
/// - **Peers** are the *other* nodes, each with the address its listener is bound to (or
///   advertises). The node's own id among them is refused
///   ([`TcpStartError::OwnIdAmongPeers`](crate::TcpStartError::OwnIdAmongPeers)). Members
///   that join later are dialled from the configuration, without a restart.
/// - **One cluster id.** Build the config from the storage's identity,
///   [`TcpConfig::for_identity`]: [`RaftNode::start`](crate::RaftNode::start) refuses a
///   storage and a transport of different clusters, naming both ids
///   ([`StartError::ClusterIdMismatch`](crate::StartError::ClusterIdMismatch)), and a
///   [`Config`](crate::Config) whose messages would not fit in
///   [`TcpConfig::max_frame_bytes`] (see `Config`'s "Size limits").
/// - **Shutdown.** Dropping the transport (a [`RaftNode`](crate::RaftNode) drops it when its
///   [`shutdown`](crate::RaftNode::shutdown) returns) closes the listener at once: the node
///   can be started again right away on the same address, with the same data directory.
///
/// # Example
///
/// Two nodes on loopback, each with its write-ahead log; node 2 is shut down and restarted
/// on the same port from its log.
///
/// ```
/// use std::error::Error;
/// use std::net::SocketAddr;
/// use std::path::Path;
/// use std::time::Duration;
///
/// use raft_consensus::storage::{WalIdentity, WalOptions, WalStorage};
/// use raft_consensus::transport::{TcpConfig, TcpTransport};
/// use raft_consensus::{Config, NodeId, RaftNode, StateMachine};
/// use tokio::net::TcpListener;
///
/// /// Counts the commands applied.
/// #[derive(Default)]
/// struct Counter(u64);
///
/// impl StateMachine for Counter {
///     fn apply(&mut self, _command: &[u8]) -> Result<Vec<u8>, Box<dyn Error + Send + Sync>> {
///         self.0 += 1;
///         Ok(self.0.to_le_bytes().to_vec())
///     }
/// }
///
/// const MEMBERS: [NodeId; 2] = [NodeId(1), NodeId(2)];
///
/// /// Starts node `id` listening on `listener`, its peers at `addresses` (node n at n - 1).
/// fn start(id: NodeId, listener: TcpListener, addresses: &[SocketAddr], data: &Path) -> Result<RaftNode, Box<dyn Error>> {
///     let identity = WalIdentity { node_id: id, cluster_id: 7 };
///     let storage = WalStorage::open(data.join(id.to_string()), identity, WalOptions::default())?;
///     // The other nodes only: the node's own id among its peers is refused.
///     let peers = MEMBERS.into_iter().zip(addresses.iter().copied()).filter(|(peer, _)| *peer != id);
///     let transport = TcpTransport::start(id, listener, peers, TcpConfig::for_identity(&identity))?;
///     Ok(RaftNode::start(id, MEMBERS, Config::default(), storage, transport, Counter::default())?)
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn Error>> {
/// let data = tempfile::tempdir()?;
/// // Bind every listener first, on port 0: every address is known before any node starts.
/// let mut listeners = Vec::new();
/// for _ in MEMBERS {
///     listeners.push(TcpListener::bind("127.0.0.1:0").await?);
/// }
/// let addresses = listeners.iter().map(TcpListener::local_addr).collect::<Result<Vec<_>, _>>()?;
/// let mut nodes = Vec::new();
/// for (id, listener) in MEMBERS.into_iter().zip(listeners) {
///     nodes.push(start(id, listener, &addresses, data.path())?);
/// }
///
/// let status = nodes[0].wait_for(Duration::from_secs(10), |status| status.leader_id.is_some()).await?;
/// let leader = nodes.iter().find(|node| Some(node.id()) == status.leader_id).ok_or("no leader")?;
/// assert_eq!(leader.propose(b"one".to_vec()).await?, 1u64.to_le_bytes());
///
/// // Shut node 2 down: its port and data directory are free again as soon as that returns.
/// nodes[1].shutdown().await?;
/// let listener = TcpListener::bind(addresses[1]).await?;
/// nodes[1] = start(NodeId(2), listener, &addresses, data.path())?;
/// let status = nodes[1].wait_for(Duration::from_secs(10), |status| status.applied_index.0 >= 1).await?;
/// assert_eq!(status.id, NodeId(2));
///
/// for node in &nodes {
///     node.shutdown().await?;
/// }
/// # Ok(())
/// # }
/// ```
///
/// # How it works
///
/// Each node listens on one address and dials each peer once for its outgoing messages, so
/// between two nodes there is one connection in each direction, each carrying a pipelined
/// stream of length-prefixed frames (`length u32 | message`, the message in the
/// [`codec`](super::codec) encoding). A connection opens with a handshake naming the wire
/// version, the cluster, the sending node, a fingerprint of the members it bootstraps with,
/// and the address it can be reached at. A node of another cluster or version is refused with
/// a logged reason naming both values, and so is one bootstrapping with other members (two
/// groups of nodes started with different member lists could otherwise each elect a leader
/// of "the" cluster; etcd derives its cluster id from the initial members for the same
/// reason); a node that is not bootstrapping (it joins, or restarts from its stored
/// configuration) sends fingerprint 0, which every peer accepts.
///
/// Peers come from three places: those given at start, the members' addresses in each new
/// configuration ([`Transport::update_members`]: members that join are dialled, members that
/// leave are no longer), and the advertised address in an inbound handshake from a node not
/// known yet (a leader that added this node, before this node has the configuration naming
/// it), at most [`MAX_MEMBERS`](crate::config::MAX_MEMBERS) of those. Outgoing queues are
/// bounded: a slow peer costs at most `queue_capacity` messages and `queue_bytes` of entries
/// and snapshot chunks, then messages to it are dropped, which Raft tolerates; what is queued
/// for a peer that cannot be reached is dropped when a dial fails (it would be stale by the
/// time the peer is back, and a leader resends snapshot chunks to a silent follower every
/// election timeout), so a dead peer holds next to no memory. A broken connection is
/// redialled with capped exponential backoff, cut short when that peer connects to this node
/// (it is up: a node that restarts is answered at once, not after up to `reconnect_max_ms`).
/// A frame over `max_frame_bytes`, an undecodable frame or a message claiming another sender closes that
/// connection with a logged error; nothing a peer sends can panic the node.
///
/// With [`TcpConfig::tls`] every connection is mutual TLS ([`PeerTls`]): the dialler checks
/// that the certificate it is shown names the peer it dials (`node<ID>`), and the acceptor
/// that the dialler's certificate names the node id its handshake claims, so a node can only
/// speak as itself. Without it, the transport trusts the id a dialler claims: plain TCP is for
/// tests, examples and networks where every host is trusted.
///
/// What a stranger can make a listener hold is bounded: at most `max_inbound_connections`
/// connections (more are closed at once, with a log line when the cap is first reached), each
/// finishing its TLS and transport handshakes within `handshake_timeout_ms` or being closed,
/// and a frame's buffer grows with the bytes that actually arrive (beyond the largest frame
/// that connection has delivered whole), never with the length a peer declares.
#[derive(Debug)]
pub struct TcpTransport {
    id: NodeId,
    identity: Identity,
    config: TcpConfig,
    traffic: Arc<PeerTraffic>,
    redials: Arc<Redials>,
    /// Each peer's queue and the address its dial loop dials.
    peers: HashMap<NodeId, PeerQueue>,
    /// Peers that introduced themselves in an inbound handshake.
    learned: mpsc::Receiver<(NodeId, SocketAddr)>,
    /// Peers that left the configuration, no longer dialled, with their last address: a
    /// message to one dials it again (a removed leader still manages the cluster until its
    /// removal commits, and needs the answers).
    departed: HashMap<NodeId, SocketAddr>,
    inbox: mpsc::Receiver<Message>,
    local_addr: SocketAddr,
    /// The listener the accept loop accepts on; taken out (closed) when the transport drops.
    listener: SharedListener,
}

impl Drop for TcpTransport {
    /// Closes the listener now, not when the accept loop next runs: the address is free as
    /// soon as the transport is gone.
    fn drop(&mut self) {
        drop(lock_listener(&self.listener).take());
    }
}

impl TcpTransport {
    /// Starts node `id`'s transport: accepts peers on `listener`, and dials each of `peers`,
    /// the other nodes (see "Setting up" above).
    ///
    /// # Errors
    ///
    /// [`TcpStartError::OwnIdAmongPeers`] when `peers` names `id` itself;
    /// [`TcpStartError::Listener`] when the listener's address cannot be read. Either
    /// converts into an [`io::Error`].
    pub fn start(
        id: NodeId,
        listener: TcpListener,
        peers: impl IntoIterator<Item = (NodeId, SocketAddr)>,
        config: TcpConfig,
    ) -> Result<TcpTransport, TcpStartError> {
        let local_addr = listener.local_addr().map_err(TcpStartError::Listener)?;
        let peers: Vec<(NodeId, SocketAddr)> = peers.into_iter().collect();
        if let Some(&(_, address)) = peers.iter().find(|(peer, _)| *peer == id) {
            return Err(TcpStartError::OwnIdAmongPeers { id, address });
        }
        let members = config.members_fingerprint.unwrap_or_else(|| {
            if peers.is_empty() {
                0
            } else {
                members_fingerprint(peers.iter().map(|(peer, _)| *peer).chain([id]))
            }
        });
        let advertised = config.advertise_addr.unwrap_or(local_addr);
        let identity = Identity { cluster_id: config.cluster_id, members, advertised };
        let traffic = Arc::new(PeerTraffic::default());
        let redials = Arc::new(Redials::default());
        let (inbox_sender, inbox) = mpsc::channel(config.inbox_capacity.max(1));
        let (learned_sender, learned) = mpsc::channel(64);
        let accepting = Accepting {
            id,
            identity,
            inbox: inbox_sender,
            learned: learned_sender,
            traffic: Arc::clone(&traffic),
            redials: Arc::clone(&redials),
        };
        let listener = Arc::new(Mutex::new(Some(listener)));
        tokio::spawn(accept_loop(accepting, Arc::clone(&listener), config.clone()));
        let mut transport = TcpTransport {
            id,
            identity,
            config,
            traffic,
            redials,
            peers: HashMap::new(),
            learned,
            departed: HashMap::new(),
            inbox,
            local_addr,
            listener,
        };
        for (peer, address) in peers {
            transport.dial(peer, address);
        }
        Ok(transport)
    }

    /// Starts (or restarts, at a new address) the dial loop to `peer`.
    fn dial(&mut self, peer: NodeId, address: SocketAddr) {
        if self.peers.get(&peer).is_some_and(|known| known.address == address) {
            return;
        }
        let (sender, queue) = mpsc::channel(self.config.queue_capacity.max(1));
        let queued = Arc::new(AtomicUsize::new(0));
        self.traffic.add_peer(peer);
        let link = Link {
            id: self.id,
            identity: self.identity,
            peer,
            address,
            traffic: Arc::clone(&self.traffic),
            redial: self.redials.of(peer),
            queued: Arc::clone(&queued),
        };
        tokio::spawn(dial_loop(link, queue, self.config.clone()));
        // Replacing the old sender closes the old dial loop's queue: it ends.
        self.peers.insert(peer, PeerQueue { sender, address, queued });
    }

    /// Adds the peers that introduced themselves since the last call (within the limit).
    fn take_learned_peers(&mut self) {
        while let Ok((peer, address)) = self.learned.try_recv() {
            if peer != self.id
                && !self.peers.contains_key(&peer)
                && self.peers.len() < MAX_LEARNED_PEERS
            {
                tracing::debug!(node = %self.id, %peer, "Learned {peer}'s address {address} from its handshake");
                self.dial(peer, address);
            }
        }
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

/// Bytes exchanged with each peer dialled (frames and handshakes).
#[derive(Debug, Default)]
pub struct PeerTraffic {
    peers: RwLock<BTreeMap<NodeId, Arc<(AtomicU64, AtomicU64)>>>,
}

impl PeerTraffic {
    /// `(peer, bytes sent, bytes received)` for every peer dialled.
    pub fn snapshot(&self) -> Vec<(NodeId, u64, u64)> {
        self.read()
            .iter()
            .map(|(peer, counters)| {
                let (sent, received) = &**counters;
                (*peer, sent.load(Ordering::Relaxed), received.load(Ordering::Relaxed))
            })
            .collect()
    }

    fn read(
        &self,
    ) -> std::sync::RwLockReadGuard<'_, BTreeMap<NodeId, Arc<(AtomicU64, AtomicU64)>>> {
        // Counters are plain atomics: a poisoned lock still guards a consistent map.
        self.peers.read().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn add_peer(&self, peer: NodeId) {
        let mut peers = self.peers.write().unwrap_or_else(|poisoned| poisoned.into_inner());
        peers.entry(peer).or_default();
    }

    fn add_sent(&self, peer: NodeId, bytes: usize) {
        if let Some(counters) = self.read().get(&peer) {
            counters.0.fetch_add(bytes as u64, Ordering::Relaxed);
        }
    }

    fn add_received(&self, peer: NodeId, bytes: usize) {
        if let Some(counters) = self.read().get(&peer) {
            counters.1.fetch_add(bytes as u64, Ordering::Relaxed);
        }
    }
}

impl Transport for TcpTransport {
    fn send(&mut self, message: Message) {
        if !self.peers.contains_key(&message.to) {
            self.take_learned_peers();
            if let Some(address) = self.departed.remove(&message.to) {
                self.dial(message.to, address);
            }
        }
        match self.peers.get(&message.to) {
            Some(peer) => {
                let bytes = queued_bytes(&message);
                let before = peer.queued.fetch_add(bytes, Ordering::Relaxed);
                let over = before > 0 && before + bytes > self.config.queue_bytes;
                if over || peer.sender.try_send(message).is_err() {
                    peer.queued.fetch_sub(bytes, Ordering::Relaxed);
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

    /// Dials the members of `configuration` whose Raft address is a `host:port` socket
    /// address (new members, or members at a new address); peers that left it are no longer
    /// dialled, until a message goes to one again.
    fn update_members(&mut self, configuration: &Configuration) {
        self.take_learned_peers();
        if configuration.is_unknown() {
            return;
        }
        for (&peer, address) in configuration.addresses() {
            if peer == self.id {
                continue;
            }
            match address.raft_addr.parse::<SocketAddr>() {
                Ok(address) => self.dial(peer, address),
                Err(_) if address.raft_addr.is_empty() => {}
                Err(error) => {
                    tracing::warn!(node = %self.id, %peer, "Cannot dial {peer} at {:?}: {error}", address.raft_addr)
                }
            }
        }
        let leaving: Vec<NodeId> =
            self.peers.keys().copied().filter(|peer| !configuration.is_member(*peer)).collect();
        for peer in leaving {
            tracing::debug!(node = %self.id, %peer, "No longer dialling {peer}: it left the configuration");
            if let Some(queue) = self.peers.remove(&peer) {
                if self.departed.len() >= MAX_LEARNED_PEERS {
                    self.departed.clear();
                }
                self.departed.insert(peer, queue.address);
            }
        }
    }

    fn cluster_id(&self) -> Option<u64> {
        Some(self.identity.cluster_id)
    }

    fn max_message_bytes(&self) -> Option<usize> {
        Some(self.config.max_frame_bytes)
    }
}

/// One peer's outgoing queue, which its dial loop empties.
#[derive(Debug)]
struct PeerQueue {
    sender: mpsc::Sender<Message>,
    /// The address the dial loop dials.
    address: SocketAddr,
    /// [`queued_bytes`] of the messages in the queue.
    queued: Arc<AtomicUsize>,
}

/// What a queued message counts against `queue_bytes`: the log entries or snapshot chunk it
/// carries, and a little for the rest.
fn queued_bytes(message: &Message) -> usize {
    let payload = match &message.body {
        MessageBody::AppendEntries { entries, .. } => entries.iter().map(Entry::payload_len).sum(),
        MessageBody::InstallSnapshot { data, .. } => data.len(),
        _ => 0,
    };
    64 + payload
}

/// Wakes a peer's dial loop out of its backoff when that peer connects to this node: a peer
/// that has just dialled in is up, so the way back to it need not wait out a backoff that
/// grew while it was down (up to `reconnect_max_ms`, a second by default: the first answers
/// to a restarted node, a whole snapshot transfer to it, would wait that long).
#[derive(Debug, Default)]
struct Redials {
    peers: Mutex<HashMap<NodeId, Arc<Notify>>>,
}

impl Redials {
    /// The signal `peer`'s dial loop waits on during its backoff.
    fn of(&self, peer: NodeId) -> Arc<Notify> {
        let mut peers = self.peers.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        Arc::clone(peers.entry(peer).or_default())
    }

    /// `peer` connected to this node: its dial loop redials now if it is waiting.
    fn wake(&self, peer: NodeId) {
        let peers = self.peers.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(redial) = peers.get(&peer) {
            redial.notify_one();
        }
    }
}

/// What a node's handshake says about the cluster it belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Identity {
    cluster_id: u64,
    /// [`members_fingerprint`] of the members this node bootstraps with (0: none).
    members: u64,
    /// Where peers reach this node.
    advertised: SocketAddr,
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

fn handshake(identity: Identity, node: NodeId) -> Vec<u8> {
    let mut bytes = vec![0u8; HANDSHAKE_LEN];
    bytes[..8].copy_from_slice(&HANDSHAKE_MAGIC);
    bytes[8..12].copy_from_slice(&u32::from(WIRE_FORMAT_VERSION).to_le_bytes());
    bytes[12..20].copy_from_slice(&identity.cluster_id.to_le_bytes());
    bytes[20..28].copy_from_slice(&node.0.to_le_bytes());
    bytes[28..36].copy_from_slice(&identity.members.to_le_bytes());
    // A socket address's text is at most 47 bytes.
    let advertised = identity.advertised.to_string();
    bytes.extend_from_slice(&(advertised.len() as u16).to_le_bytes());
    bytes.extend_from_slice(advertised.as_bytes());
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
    if peer_members != identity.members && peer_members != 0 && identity.members != 0 {
        return Err(format!(
            "peer was configured with other members (members fingerprint {peer_members:016x}, this node's {:016x}): every node must be started with the same member list",
            identity.members
        ));
    }
    Ok(NodeId(word(20..28)))
}

/// A connection's byte stream: plain TCP, or TLS over it.
trait PeerStream: AsyncRead + AsyncWrite + Unpin + Send {}

impl<S: AsyncRead + AsyncWrite + Unpin + Send> PeerStream for S {}

/// The accepting side of a node's transport: who accepts, as whom, and where messages go.
struct Accepting {
    id: NodeId,
    identity: Identity,
    inbox: mpsc::Sender<Message>,
    /// Where peers' advertised addresses go.
    learned: mpsc::Sender<(NodeId, SocketAddr)>,
    traffic: Arc<PeerTraffic>,
    redials: Arc<Redials>,
}

/// The listener, shared by the accept loop and the transport, which takes it out (closing
/// it) when it drops.
type SharedListener = Arc<Mutex<Option<TcpListener>>>;

fn lock_listener(listener: &SharedListener) -> std::sync::MutexGuard<'_, Option<TcpListener>> {
    // An `Option` taken or not: a poisoned lock still guards a consistent value.
    listener.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

async fn accept_loop(accepting: Accepting, listener: SharedListener, config: TcpConfig) {
    let Accepting { id, identity, inbox, learned, traffic, redials } = accepting;
    let slots = Arc::new(Semaphore::new(config.max_inbound_connections.max(1)));
    let mut at_cap = false;
    loop {
        // The transport closes the listener when it drops (its node stopped): the address
        // is free at once for a node started again in the same process. Then this ends.
        let accepted = tokio::select! {
            accepted = std::future::poll_fn(|context| {
                match lock_listener(&listener).as_ref() {
                    Some(listener) => listener.poll_accept(context).map(Some),
                    None => std::task::Poll::Ready(None),
                }
            }) => accepted,
            () = inbox.closed() => return,
        };
        let Some(accepted) = accepted else {
            return;
        };
        match accepted {
            Ok((stream, address)) => {
                let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
                    if !at_cap {
                        tracing::warn!(node = %id, %address, "Refusing peer connections: the listener holds its maximum of {} connections", config.max_inbound_connections);
                        at_cap = true;
                    }
                    drop(stream);
                    continue;
                };
                if at_cap {
                    tracing::info!(node = %id, "Accepting peer connections again");
                    at_cap = false;
                }
                let connection = Inbound {
                    id,
                    identity,
                    address,
                    inbox: inbox.clone(),
                    learned: learned.clone(),
                    traffic: Arc::clone(&traffic),
                    redials: Arc::clone(&redials),
                };
                let config = config.clone();
                tokio::spawn(async move {
                    read_connection(connection, stream, config).await;
                    drop(slot);
                });
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
    learned: mpsc::Sender<(NodeId, SocketAddr)>,
    traffic: Arc<PeerTraffic>,
    redials: Arc<Redials>,
}

/// Reads one peer's frames into the inbox until the connection ends or misbehaves.
async fn read_connection(connection: Inbound, stream: TcpStream, config: TcpConfig) {
    let (id, address) = (connection.id, connection.address);
    let timeout = Duration::from_millis(config.handshake_timeout_ms);
    let greeted = tokio::time::timeout(timeout, accept_handshake(&connection, stream, &config));
    let (peer, stream) = match greeted.await {
        Ok(Ok(greeted)) => greeted,
        Ok(Err(Refused(Some(reason)))) => {
            tracing::warn!(node = %id, %address, "Refusing a connection: {reason}");
            return;
        }
        Ok(Err(Refused(None))) => return,
        Err(_) => {
            tracing::warn!(node = %id, %address, "Refusing a connection: no handshake within {} ms", config.handshake_timeout_ms);
            return;
        }
    };
    let Inbound { inbox, traffic, redials, .. } = connection;
    redials.wake(peer);
    // Frames arrive back to back: one read takes many (a length prefix is not a system call).
    let mut stream = tokio::io::BufReader::with_capacity(FRAME_READ_CHUNK, stream);
    // The largest frame this peer has sent whole: a frame up to that size gets its whole
    // buffer at once (a 1 MiB snapshot chunk is then not copied four times as its buffer
    // doubles), a larger one grows with the bytes that arrive.
    let mut largest_received = 0;
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
        let frame = match read_frame(&mut stream, length, largest_received).await {
            Ok(frame) => frame,
            Err(_) => return,
        };
        largest_received = largest_received.max(length);
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

/// Bytes of a frame read before its buffer grows: a peer's declared length costs memory
/// only as the bytes arrive.
const FRAME_READ_CHUNK: usize = 64 * 1024;

/// Reads a `length`-byte frame, its buffer growing with the bytes received beyond
/// `FRAME_READ_CHUNK` or `received_before` bytes, whichever is larger (the largest frame
/// the peer sent before).
async fn read_frame(
    stream: &mut (impl AsyncRead + Unpin),
    length: usize,
    received_before: usize,
) -> io::Result<Vec<u8>> {
    let mut frame = Vec::with_capacity(length.min(FRAME_READ_CHUNK.max(received_before)));
    let read = stream.take(length as u64).read_to_end(&mut frame).await?;
    if read < length {
        return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "the connection ended mid-frame"));
    }
    Ok(frame)
}

/// Why an inbound connection was closed during its handshakes (`None`: the peer went away,
/// nothing worth logging).
struct Refused(Option<String>);

impl From<io::Error> for Refused {
    fn from(_: io::Error) -> Refused {
        Refused(None)
    }
}

/// The accepting side's handshakes: TLS (when configured), then the transport's. Returns the
/// peer's node id, checked against its certificate under TLS.
async fn accept_handshake(
    connection: &Inbound,
    stream: TcpStream,
    config: &TcpConfig,
) -> Result<(NodeId, Box<dyn PeerStream>), Refused> {
    let (mut stream, certificate): (Box<dyn PeerStream>, _) = match &config.tls {
        None => (Box::new(stream), None),
        Some(tls) => {
            let stream = tls
                .acceptor()
                .accept(stream)
                .await
                .map_err(|error| Refused(Some(format!("TLS handshake failed: {error}"))))?;
            let certificate = stream
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|chain| chain.first())
                .map(|certificate| certificate.clone().into_owned());
            (Box::new(stream), certificate)
        }
    };
    let mut greeting = [0u8; HANDSHAKE_LEN];
    stream.read_exact(&mut greeting).await?;
    let peer =
        check_handshake(&greeting, connection.identity).map_err(|reason| Refused(Some(reason)))?;
    if config.tls.is_some() {
        // The TLS verifier demanded a certificate chaining to the CA; it must also be this
        // node's.
        let names_peer = certificate
            .as_ref()
            .is_some_and(|certificate| certificate_names_node(certificate, peer));
        if !names_peer {
            return Err(Refused(Some(format!(
                "the peer claims to be {peer} but its certificate does not name node{}",
                peer.0
            ))));
        }
    }
    let mut length = [0u8; 2];
    stream.read_exact(&mut length).await?;
    let length = u16::from_le_bytes(length) as usize;
    if length > MAX_ADVERTISED_ADDR_BYTES {
        return Err(Refused(Some(format!("a {length}-byte advertised address"))));
    }
    let mut advertised = vec![0u8; length];
    stream.read_exact(&mut advertised).await?;
    // The transport adds it if it does not know the peer yet (a full queue drops it: the peer
    // introduces itself again on its next connection).
    if let Some(advertised) =
        parse_advertised(&advertised).map_err(|reason| Refused(Some(reason)))?
    {
        let _ = connection.learned.try_send((peer, advertised));
    }
    Ok((peer, stream))
}

/// A handshake's advertised address: empty (none) or UTF-8 `host:port`.
fn parse_advertised(bytes: &[u8]) -> Result<Option<SocketAddr>, String> {
    if bytes.is_empty() {
        return Ok(None);
    }
    std::str::from_utf8(bytes)
        .ok()
        .and_then(|text| text.parse::<SocketAddr>().ok())
        .map(Some)
        .ok_or_else(|| String::from("the advertised address is not host:port"))
}

/// Checks a whole handshake in `bytes` (the fixed part, the advertised address's length and
/// the address) as a node of cluster `cluster_id` that is not bootstrapping would, with the
/// same checks the listener makes; returns the peer's id and address, or why it is refused.
/// For the fuzz target and tests: the listener reads the same parts from its stream.
#[doc(hidden)]
pub fn check_handshake_bytes(
    bytes: &[u8],
    cluster_id: u64,
) -> Result<(NodeId, Option<SocketAddr>), String> {
    let advertised = SocketAddr::from(([127, 0, 0, 1], 0));
    let identity = Identity { cluster_id, members: 0, advertised };
    let fixed: &[u8; HANDSHAKE_LEN] = bytes
        .get(..HANDSHAKE_LEN)
        .and_then(|fixed| fixed.try_into().ok())
        .ok_or_else(|| String::from("a handshake shorter than its fixed part"))?;
    let peer = check_handshake(fixed, identity)?;
    let rest = &bytes[HANDSHAKE_LEN..];
    let length = rest
        .get(..2)
        .map(|length| u16::from_le_bytes([length[0], length[1]]) as usize)
        .ok_or_else(|| String::from("a handshake without its address length"))?;
    if length > MAX_ADVERTISED_ADDR_BYTES {
        return Err(format!("a {length}-byte advertised address"));
    }
    let address = rest.get(2..2 + length).ok_or_else(|| String::from("a truncated address"))?;
    Ok((peer, parse_advertised(address)?))
}

/// One outgoing connection's ends.
struct Link {
    id: NodeId,
    identity: Identity,
    peer: NodeId,
    address: SocketAddr,
    traffic: Arc<PeerTraffic>,
    /// Signalled when the peer connects to this node: the backoff ends.
    redial: Arc<Notify>,
    /// [`queued_bytes`] of the messages in the queue.
    queued: Arc<AtomicUsize>,
}

/// Dials `link.address` and completes the TLS (when configured) and transport handshakes.
async fn connect(link: &Link, config: &TcpConfig) -> io::Result<Box<dyn PeerStream>> {
    let stream = TcpStream::connect(link.address).await?;
    let _ = stream.set_nodelay(true);
    let mut stream: Box<dyn PeerStream> = match &config.tls {
        None => Box::new(stream),
        // The certificate the peer shows must name the node dialled.
        Some(tls) => Box::new(tls.connector().connect(node_name(link.peer), stream).await?),
    };
    stream.write_all(&handshake(link.identity, link.id)).await?;
    stream.flush().await?;
    Ok(stream)
}

/// Keeps a connection to `peer` and writes its queued messages, redialling with backoff.
async fn dial_loop(link: Link, mut queue: mpsc::Receiver<Message>, config: TcpConfig) {
    let (id, peer, address) = (link.id, link.peer, link.address);
    let mut backoff_ms = config.reconnect_min_ms.max(1);
    let mut buffer = Vec::new();
    let mut chunks: Vec<(usize, Message, usize)> = Vec::new();
    let timeout = Duration::from_millis(config.handshake_timeout_ms);
    loop {
        let connected =
            tokio::time::timeout(timeout, connect(&link, &config)).await.unwrap_or_else(|_| {
                let message = format!("no handshake within {} ms", config.handshake_timeout_ms);
                Err(io::Error::new(io::ErrorKind::TimedOut, message))
            });
        let mut stream = match connected {
            Ok(stream) => stream,
            Err(error) => {
                // A refused TLS handshake is worth a warning; a peer that is down is not.
                if error.kind() == io::ErrorKind::InvalidData {
                    tracing::warn!(node = %id, %peer, "Connecting to {peer} at {address} failed: {error}");
                } else {
                    tracing::trace!(node = %id, %peer, "Dialling {address} failed: {error}");
                }
                // What was queued would be stale by the time the peer is reachable (Raft
                // resends what still matters): a peer that is down holds no memory here.
                while let Ok(message) = queue.try_recv() {
                    link.queued.fetch_sub(queued_bytes(&message), Ordering::Relaxed);
                }
                let woken = tokio::select! {
                    () = tokio::time::sleep(Duration::from_millis(backoff_ms)) => false,
                    () = link.redial.notified() => true,
                };
                backoff_ms = if woken {
                    config.reconnect_min_ms.max(1)
                } else {
                    (backoff_ms * 2).min(config.reconnect_max_ms.max(1))
                };
                if queue.is_closed() {
                    return;
                }
                continue;
            }
        };
        tracing::debug!(node = %id, %peer, "Connected to {address}");
        backoff_ms = config.reconnect_min_ms.max(1);
        loop {
            let Some(first) = queue.recv().await else { return };
            link.queued.fetch_sub(queued_bytes(&first), Ordering::Relaxed);
            // Pipelining: everything already queued (up to about 1 MiB) goes out together.
            // Snapshot chunks are written from their messages' bytes, not copied into the
            // buffer: `chunks` holds, for each, where it goes in the buffer's bytes.
            buffer.clear();
            chunks.clear();
            let mut batch_bytes = 0;
            let mut next = Some(first);
            while let Some(message) = next {
                let start = buffer.len();
                buffer.extend_from_slice(&[0u8; 4]);
                let chunk = encode_message_but_chunk(&message, &mut buffer).map_or(0, <[u8]>::len);
                let length = buffer.len() - start - 4 + chunk;
                if length > config.max_frame_bytes {
                    tracing::error!(node = %id, %peer, "Dropping a {length}-byte message over the frame maximum");
                    buffer.truncate(start);
                } else {
                    let length = u32::try_from(length).unwrap_or(u32::MAX);
                    buffer[start..start + 4].copy_from_slice(&length.to_le_bytes());
                    batch_bytes += 4 + length as usize;
                    if chunk > 0 {
                        chunks.push((buffer.len(), message, chunk));
                    }
                }
                next = if batch_bytes < 1024 * 1024 { queue.try_recv().ok() } else { None };
                if let Some(message) = &next {
                    link.queued.fetch_sub(queued_bytes(message), Ordering::Relaxed);
                }
            }
            let written = async {
                let mut from = 0;
                for (at, message, len) in &chunks {
                    write_all_pair(&mut stream, &buffer[from..*at], &chunk_of(message)[..*len])
                        .await?;
                    from = *at;
                }
                stream.write_all(&buffer[from..]).await?;
                stream.flush().await
            };
            if let Err(error) = written.await {
                tracing::debug!(node = %id, %peer, "Connection to {address} lost: {error}");
                break;
            }
            link.traffic.add_sent(peer, batch_bytes);
        }
    }
}

/// The snapshot chunk a message carries (empty for other messages).
fn chunk_of(message: &Message) -> &[u8] {
    match &message.body {
        MessageBody::InstallSnapshot { data, .. } => data,
        _ => &[],
    }
}

/// Writes all of `first`, then all of `second`, in as few writes as the stream allows.
async fn write_all_pair(
    stream: &mut (impl AsyncWrite + Unpin),
    mut first: &[u8],
    mut second: &[u8],
) -> io::Result<()> {
    while !first.is_empty() {
        let slices = [io::IoSlice::new(first), io::IoSlice::new(second)];
        let written = stream.write_vectored(&slices).await?;
        if written == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        if written < first.len() {
            first = &first[written..];
        } else {
            second = &second[written - first.len()..];
            first = &[];
        }
    }
    stream.write_all(second).await
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The handshake a transport sends passes the checks its listener makes, and what the
    /// checks refuse is refused, not a panic.
    #[test]
    fn a_sent_handshake_passes_the_listeners_checks() {
        let advertised = SocketAddr::from(([10, 0, 0, 7], 7003));
        let identity = Identity { cluster_id: 4, members: 0, advertised };
        let bytes = handshake(identity, NodeId(3));
        assert_eq!(check_handshake_bytes(&bytes, 4), Ok((NodeId(3), Some(advertised))));
        assert!(check_handshake_bytes(&bytes, 5).is_err(), "another cluster");
        for length in 0..bytes.len() {
            assert!(check_handshake_bytes(&bytes[..length], 4).is_err());
        }
        let mut bad_address = bytes.clone();
        let last = bad_address.len() - 1;
        bad_address[last] = b'x';
        assert!(check_handshake_bytes(&bad_address, 4).is_err());
    }

    /// Writes some bytes per call, from the first slice only or across slices.
    struct Trickle {
        written: Vec<u8>,
        per_call: usize,
        vectored: bool,
    }

    impl AsyncWrite for Trickle {
        fn poll_write(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
            bytes: &[u8],
        ) -> std::task::Poll<io::Result<usize>> {
            let count = bytes.len().min(self.per_call);
            self.written.extend_from_slice(&bytes[..count]);
            std::task::Poll::Ready(Ok(count))
        }

        fn poll_write_vectored(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
            slices: &[io::IoSlice<'_>],
        ) -> std::task::Poll<io::Result<usize>> {
            let mut count = 0;
            for slice in slices {
                let take = slice.len().min(self.per_call - count);
                self.written.extend_from_slice(&slice[..take]);
                count += take;
                if !self.vectored || count == self.per_call {
                    break;
                }
            }
            std::task::Poll::Ready(Ok(count))
        }

        fn is_write_vectored(&self) -> bool {
            self.vectored
        }

        fn poll_flush(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<io::Result<()>> {
            std::task::Poll::Ready(Ok(()))
        }

        fn poll_shutdown(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<io::Result<()>> {
            std::task::Poll::Ready(Ok(()))
        }
    }

    /// A frame's head and its chunk go out whole and in order, however the stream splits
    /// the writes.
    #[tokio::test]
    async fn a_pair_of_slices_is_written_whole() {
        for vectored in [false, true] {
            for per_call in [1, 2, 3, 7, 100] {
                let mut stream = Trickle { written: Vec::new(), per_call, vectored };
                write_all_pair(&mut stream, b"head", b"chunk bytes").await.unwrap();
                assert_eq!(stream.written, b"headchunk bytes", "{per_call} per call");
                let mut stream = Trickle { written: Vec::new(), per_call, vectored };
                write_all_pair(&mut stream, b"", b"chunk").await.unwrap();
                assert_eq!(stream.written, b"chunk");
            }
        }
    }

    /// A frame is read whole; a connection that ends before the declared length (here 64
    /// MiB, with 1,000 bytes sent) is an error, not a wait or a 64 MiB buffer.
    #[tokio::test]
    async fn a_frame_is_read_whole_or_not_at_all() {
        let bytes = vec![7u8; 1000];
        let frame = read_frame(&mut &bytes[..], 1000, 0).await.expect("a whole frame");
        assert_eq!(frame, bytes);
        let short = read_frame(&mut &bytes[..], 64 * 1024 * 1024, 0).await;
        assert_eq!(short.map_err(|error| error.kind()), Err(io::ErrorKind::UnexpectedEof));
    }
}
