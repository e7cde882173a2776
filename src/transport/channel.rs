//! [`ChannelNetwork`]: an in-process network of bounded tokio channels, with no serialisation.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::mpsc;

use super::Transport;
use crate::message::Message;
use crate::types::NodeId;

/// How many messages may wait in one node's inbox before further ones are dropped.
const DEFAULT_INBOX_CAPACITY: usize = 65_536;

/// An in-process network connecting the nodes of one process. Clones share the network.
///
/// ```
/// use raft_consensus::transport::ChannelNetwork;
/// use raft_consensus::NodeId;
///
/// let network = ChannelNetwork::new();
/// let transport_for_node1 = network.join(NodeId(1));
/// let transport_for_node2 = network.join(NodeId(2));
/// # drop((transport_for_node1, transport_for_node2));
/// ```
#[derive(Clone, Debug)]
pub struct ChannelNetwork {
    inboxes: Arc<Mutex<HashMap<NodeId, mpsc::Sender<Message>>>>,
    /// Bumped (under the lock) whenever `inboxes` changes, so that a transport can keep its
    /// own copy of the map and send without taking the lock until the map changes.
    generation: Arc<AtomicU64>,
    inbox_capacity: usize,
}

impl Default for ChannelNetwork {
    fn default() -> Self {
        ChannelNetwork::with_inbox_capacity(DEFAULT_INBOX_CAPACITY)
    }
}

impl ChannelNetwork {
    /// An empty network with the default inbox capacity.
    pub fn new() -> Self {
        ChannelNetwork::default()
    }

    /// An empty network whose inboxes hold at most `capacity` messages (at least 1).
    pub fn with_inbox_capacity(capacity: usize) -> Self {
        ChannelNetwork {
            inboxes: Arc::default(),
            generation: Arc::default(),
            inbox_capacity: capacity.max(1),
        }
    }

    /// Connects node `id` and returns its transport. Joining again (a restarted node)
    /// replaces the earlier inbox.
    pub fn join(&self, id: NodeId) -> ChannelTransport {
        let (sender, inbox) = mpsc::channel(self.inbox_capacity);
        let mut inboxes = self.lock();
        inboxes.insert(id, sender);
        self.generation.fetch_add(1, Ordering::Release);
        drop(inboxes);
        ChannelTransport {
            id,
            network: self.clone(),
            inbox,
            peers: HashMap::new(),
            peers_generation: None,
        }
    }

    /// Disconnects node `id`: messages to it are dropped until it joins again.
    pub fn disconnect(&self, id: NodeId) {
        let mut inboxes = self.lock();
        inboxes.remove(&id);
        self.generation.fetch_add(1, Ordering::Release);
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<NodeId, mpsc::Sender<Message>>> {
        // The map is only inserted into and removed from; a panic elsewhere cannot leave it
        // half-updated, so a poisoned lock is safe to keep using.
        self.inboxes.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// One node's end of a [`ChannelNetwork`].
#[derive(Debug)]
pub struct ChannelTransport {
    id: NodeId,
    network: ChannelNetwork,
    inbox: mpsc::Receiver<Message>,
    /// This transport's copy of the network's inboxes, as of `peers_generation`.
    peers: HashMap<NodeId, mpsc::Sender<Message>>,
    peers_generation: Option<u64>,
}

impl Transport for ChannelTransport {
    fn send(&mut self, message: Message) {
        // The copy is current unless a node joined or left since it was made: then it is
        // made again (a send that starts after `disconnect` returns sees the change).
        let generation = self.network.generation.load(Ordering::Acquire);
        if self.peers_generation != Some(generation) {
            let inboxes = self.network.lock();
            self.peers = inboxes.clone();
            self.peers_generation = Some(self.network.generation.load(Ordering::Relaxed));
        }
        match self.peers.get(&message.to) {
            Some(sender) => {
                if let Err(error) = sender.try_send(message) {
                    tracing::trace!(from = %self.id, "Dropping message: {error}");
                }
            }
            None => {
                tracing::trace!(from = %self.id, to = %message.to, "Dropping message to a disconnected node")
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::MessageBody;
    use crate::types::Term;

    fn vote_request(from: u64, to: u64) -> Message {
        Message {
            from: NodeId(from),
            to: NodeId(to),
            term: Term(1),
            body: MessageBody::RequestVoteResponse { granted: true },
        }
    }

    #[tokio::test]
    async fn delivers_to_joined_nodes_and_drops_for_disconnected_ones() {
        let network = ChannelNetwork::with_inbox_capacity(2);
        let mut first = network.join(NodeId(1));
        let mut second = network.join(NodeId(2));
        first.send(vote_request(1, 2));
        assert_eq!(second.recv().await, Some(vote_request(1, 2)));
        network.disconnect(NodeId(2));
        first.send(vote_request(1, 2));
        assert_eq!(second.try_recv(), None);
        // A full inbox drops instead of blocking.
        let mut third = network.join(NodeId(3));
        for _ in 0..5 {
            first.send(vote_request(1, 3));
        }
        assert!(third.try_recv().is_some());
        assert!(third.try_recv().is_some());
        assert_eq!(third.try_recv(), None);
    }
}
