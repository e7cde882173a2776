//! Delivery of [`Message`]s between nodes, behind the [`Transport`] trait.
//!
//! Raft tolerates lost, duplicated and reordered messages, so a transport may drop a message
//! rather than block or buffer without bound. Implementations: [`TcpTransport`] (between
//! processes) and [`ChannelNetwork`] (in-process channels, for tests and examples).

mod channel;
pub mod codec;
mod tcp;
mod tls;

use std::future::Future;

pub use channel::{ChannelNetwork, ChannelTransport};
pub use tcp::{PeerTraffic, TcpConfig, TcpTransport, check_handshake_bytes, members_fingerprint};
pub use tls::{PeerTls, TlsError};

use crate::core::Configuration;
use crate::message::Message;

/// How one node sends messages to its peers and receives theirs.
pub trait Transport: Send + 'static {
    /// Queues `message` for delivery to `message.to`. Must not block; may drop the message
    /// (a full queue, an unreachable peer).
    fn send(&mut self, message: Message);

    /// Waits for the next message addressed to this node. `None` means no message will ever
    /// arrive again. Must be cancel-safe: a message is never lost when the future is dropped.
    fn recv(&mut self) -> impl Future<Output = Option<Message>> + Send;

    /// Returns a message that has already arrived, without waiting, if there is one. Lets the
    /// node handle a burst of messages with one persist.
    fn try_recv(&mut self) -> Option<Message>;

    /// The node's configuration changed (a membership change, or the first configuration a
    /// joining node learns): a transport that dials peers by address reaches the new members
    /// through [`Configuration::addresses`]. The default does nothing (a transport that
    /// reaches every node without addresses, such as [`ChannelTransport`]).
    fn update_members(&mut self, configuration: &Configuration) {
        let _ = configuration;
    }

    /// The cluster this transport talks to, if it checks one with its peers
    /// ([`TcpConfig::cluster_id`]): [`RaftNode::start`](crate::RaftNode::start) refuses a
    /// storage that reports another ([`StartError::ClusterIdMismatch`](crate::StartError::ClusterIdMismatch)).
    /// `None` (the default): the transport has no cluster id, and nothing is checked.
    fn cluster_id(&self) -> Option<u64> {
        None
    }

    /// The largest message, in encoded bytes, this transport sends and accepts, if it has a
    /// limit ([`TcpConfig::max_frame_bytes`]): [`RaftNode::start`](crate::RaftNode::start)
    /// refuses a [`Config`](crate::Config) whose messages could be larger
    /// ([`ConfigError::MessageAboveFrameLimit`](crate::ConfigError::MessageAboveFrameLimit);
    /// see `Config`'s "Size limits"). `None` (the default): no limit.
    fn max_message_bytes(&self) -> Option<usize> {
        None
    }
}
