//! [`SimNetwork`]: which links are cut, and what happens to a message on its way: loss,
//! duplication, delay and reordering.

use std::collections::BTreeSet;

use crate::types::NodeId;

use super::FaultConfig;
use super::rng::SimRng;

/// The kinds of partition the simulator creates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum PartitionKind {
    /// Two groups that cannot reach each other.
    Symmetric,
    /// One group's messages to the other are lost; the other direction works.
    OneWay,
    /// Two groups that cannot reach each other, and one node that reaches both.
    Bridge,
}

/// The cut links (from, to) of the current partition, if any.
#[derive(Debug, Default)]
pub(crate) struct SimNetwork {
    cut_links: BTreeSet<(NodeId, NodeId)>,
}

/// What happens to one message.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum MessageFate {
    /// It is lost.
    Dropped,
    /// It arrives after each of these delays (more than one: duplicated).
    Delivered(Vec<u64>),
}

impl SimNetwork {
    /// Whether `from` can currently reach `to`.
    pub(crate) fn connected(&self, from: NodeId, to: NodeId) -> bool {
        !self.cut_links.contains(&(from, to))
    }

    /// Whether a partition is in place.
    pub(crate) fn is_partitioned(&self) -> bool {
        !self.cut_links.is_empty()
    }

    /// Cuts the links of a new partition of `nodes` of the given kind.
    pub(crate) fn partition(&mut self, nodes: &[NodeId], kind: PartitionKind, rng: &mut SimRng) {
        self.cut_links.clear();
        let mut shuffled = nodes.to_vec();
        rng.shuffle(&mut shuffled);
        let bridge = if kind == PartitionKind::Bridge { shuffled.pop() } else { None };
        let split = rng.between(1, shuffled.len().saturating_sub(1).max(1) as u64) as usize;
        let (side_a, side_b) = shuffled.split_at(split.min(shuffled.len()));
        for a in side_a {
            for b in side_b {
                self.cut_links.insert((*a, *b));
                if kind != PartitionKind::OneWay {
                    self.cut_links.insert((*b, *a));
                }
            }
        }
        debug_assert!(
            bridge.is_none_or(|node| self.cut_links.iter().all(|(x, y)| *x != node && *y != node))
        );
    }

    /// Cuts every link from `side_a` to `side_b`, and back unless `one_way` (a partition
    /// chosen by the caller rather than drawn).
    pub(crate) fn split(&mut self, side_a: &[NodeId], side_b: &[NodeId], one_way: bool) {
        self.cut_links.clear();
        for a in side_a {
            for b in side_b {
                self.cut_links.insert((*a, *b));
                if !one_way {
                    self.cut_links.insert((*b, *a));
                }
            }
        }
    }

    /// Restores every link.
    pub(crate) fn heal(&mut self) {
        self.cut_links.clear();
    }

    /// Decides what happens to a message sent now.
    pub(crate) fn fate(&self, faults: &FaultConfig, rng: &mut SimRng) -> MessageFate {
        if rng.chance(faults.message_loss) {
            return MessageFate::Dropped;
        }
        let mut delays = vec![delay(faults, rng)];
        if rng.chance(faults.message_duplication) {
            delays.push(delay(faults, rng));
        }
        MessageFate::Delivered(delays)
    }
}

/// A network delay: usually short, sometimes long enough to reorder messages.
fn delay(faults: &FaultConfig, rng: &mut SimRng) -> u64 {
    let base = rng.between(faults.min_delay_ms, faults.max_delay_ms);
    if rng.chance(faults.message_reorder) {
        base + rng.between(1, faults.reorder_delay_ms)
    } else {
        base
    }
}
