//! [`Links`]: the simulated network's links as pipes of limited bandwidth, one per direction
//! between two nodes, like the one TCP connection a transport keeps per peer.
//!
//! A link with a bandwidth sends one message after another: a message occupies it for its
//! size divided by the bandwidth, and a message sent while the link is busy queues behind
//! the ones before it (FIFO). Each link has the bandwidth it was given, or the default one;
//! a link without one (the default default) sends everything at once, as if it had infinite
//! bandwidth. Sizes are the messages' wire sizes ([`message_size`]); time is kept in
//! microseconds, so that small messages on fast links do not each cost a whole millisecond.

use std::collections::BTreeMap;

use crate::message::Message;
use crate::transport::codec;
use crate::types::NodeId;

/// The bytes `message` takes on the wire (its encoding by the TCP codec).
pub fn message_size(message: &Message) -> u64 {
    codec::encoded_len(message) as u64
}

/// The links between nodes: their bandwidths and what each still has to send.
#[derive(Clone, Debug, Default)]
pub struct Links {
    /// Bytes per virtual millisecond of a link given no bandwidth of its own (`None`:
    /// unlimited).
    default_bytes_per_ms: Option<u64>,
    /// Links (from, to) given a bandwidth of their own.
    bandwidths: BTreeMap<(NodeId, NodeId), Option<u64>>,
    /// When each link (from, to) has sent everything it was given, in microseconds.
    busy_until_us: BTreeMap<(NodeId, NodeId), u64>,
}

impl Links {
    /// Links of unlimited bandwidth.
    pub fn unlimited() -> Links {
        Links::default()
    }

    /// Links of `bytes_per_ms` each (`None`: unlimited), unless given another.
    pub fn with_bandwidth(bytes_per_ms: Option<u64>) -> Links {
        Links { default_bytes_per_ms: bytes_per_ms, ..Links::default() }
    }

    /// Gives the link from `from` to `to` its own bandwidth (`None`: unlimited). What it is
    /// sending keeps its place.
    pub fn set_bandwidth(&mut self, from: NodeId, to: NodeId, bytes_per_ms: Option<u64>) {
        self.bandwidths.insert((from, to), bytes_per_ms);
    }

    /// Gives every link to and from `node` the bandwidth `bytes_per_ms` among `nodes`.
    pub fn set_node_bandwidth(
        &mut self,
        node: NodeId,
        nodes: &[NodeId],
        bytes_per_ms: Option<u64>,
    ) {
        for other in nodes.iter().copied().filter(|other| *other != node) {
            self.set_bandwidth(node, other, bytes_per_ms);
            self.set_bandwidth(other, node, bytes_per_ms);
        }
    }

    /// The bandwidth of the link from `from` to `to`, in bytes per virtual millisecond
    /// (`None`: unlimited).
    pub fn bandwidth(&self, from: NodeId, to: NodeId) -> Option<u64> {
        self.bandwidths.get(&(from, to)).copied().unwrap_or(self.default_bytes_per_ms)
    }

    /// Puts `bytes` on the link from `from` to `to` at `now_ms`, behind what it is still
    /// sending. Returns the virtual millisecond at which their last byte has left (`now_ms`
    /// on a link of unlimited bandwidth, which queues nothing); the network's delay comes on
    /// top.
    pub fn transmit(&mut self, from: NodeId, to: NodeId, bytes: u64, now_ms: u64) -> u64 {
        let Some(bytes_per_ms) = self.bandwidth(from, to) else {
            return now_ms;
        };
        let busy_until_us = self.busy_until_us.entry((from, to)).or_default();
        let transmission_us = bytes.saturating_mul(1_000).div_ceil(bytes_per_ms.max(1));
        *busy_until_us =
            (*busy_until_us).max(now_ms.saturating_mul(1_000)).saturating_add(transmission_us);
        busy_until_us.div_ceil(1_000)
    }

    /// How many virtual milliseconds the link from `from` to `to` still needs, at `now_ms`,
    /// to send what it was given.
    pub fn backlog_ms(&self, from: NodeId, to: NodeId, now_ms: u64) -> u64 {
        let busy_until_us = self.busy_until_us.get(&(from, to)).copied().unwrap_or(0);
        busy_until_us.div_ceil(1_000).saturating_sub(now_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_link_sends_one_message_after_another_at_its_bandwidth() {
        let (a, b, c) = (NodeId(1), NodeId(2), NodeId(3));
        let mut links = Links::with_bandwidth(Some(1_000));
        links.set_bandwidth(a, c, Some(100));
        // 5,000 bytes at 1,000 bytes/ms: gone at 5 ms; the next message queues behind.
        assert_eq!(links.transmit(a, b, 5_000, 0), 5);
        assert_eq!(links.transmit(a, b, 1_000, 1), 6);
        assert_eq!(links.backlog_ms(a, b, 2), 4);
        // Each direction and each pair is a link of its own.
        assert_eq!(links.transmit(b, a, 1_000, 1), 2);
        assert_eq!(links.transmit(a, c, 1_000, 1), 11);
        // An idle link starts at once; small messages add up in microseconds.
        assert_eq!(links.transmit(a, b, 100, 20), 21);
        assert_eq!(links.transmit(a, b, 100, 20), 21);
        assert_eq!(links.backlog_ms(a, b, 21), 0);
        // Unlimited: nothing waits.
        links.set_node_bandwidth(c, &[a, b, c], None);
        assert_eq!(links.transmit(a, c, 1 << 30, 30), 30);
        assert_eq!(Links::unlimited().transmit(a, b, 1 << 30, 7), 7);
    }
}
