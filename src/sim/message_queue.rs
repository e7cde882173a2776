//! [`MessageQueue`]: the network of a scripted [`Cluster`](super::Cluster). Messages are held
//! until the test delivers or drops them; links can be blocked (partitions); optionally every
//! n-th message sent is lost and deliveries pick a random message instead of the oldest.

use std::collections::{BTreeSet, VecDeque};

use crate::message::Message;
use crate::types::NodeId;

use super::rng::SimRng;

/// Messages in flight, blocked links, and what was delivered and lost.
#[derive(Debug, Default)]
pub(crate) struct MessageQueue {
    in_flight: VecDeque<Message>,
    /// Directed links (from, to) on which every message is lost.
    blocked: BTreeSet<(NodeId, NodeId)>,
    /// When set, every n-th message sent is lost.
    drop_every: Option<u64>,
    /// When set, each delivery picks a random in-flight message instead of the oldest.
    reorder: bool,
    sent_count: u64,
    dropped_count: u64,
    delivered: Vec<Message>,
}

impl MessageQueue {
    /// Queues `message`, unless the loss rule loses it; returns whether it was queued.
    pub(crate) fn send(&mut self, message: Message) -> bool {
        self.sent_count += 1;
        if self.drop_every.is_some_and(|every| self.sent_count % every == 0) {
            self.dropped_count += 1;
            return false;
        }
        self.in_flight.push_back(message);
        true
    }

    /// Takes the next message to deliver among those `selected`: the oldest, or a random one
    /// when reordering.
    pub(crate) fn take_next(
        &mut self,
        rng: &mut SimRng,
        mut selected: impl FnMut(&Message) -> bool,
    ) -> Option<Message> {
        let candidates: Vec<usize> = self
            .in_flight
            .iter()
            .enumerate()
            .filter(|(_, message)| selected(message))
            .map(|(position, _)| position)
            .collect();
        if candidates.is_empty() {
            return None;
        }
        let chosen = if self.reorder { rng.below(candidates.len() as u64) as usize } else { 0 };
        self.in_flight.remove(candidates[chosen])
    }

    /// Takes every message in flight for which `selected` holds, oldest first.
    pub(crate) fn take_matching(
        &mut self,
        mut selected: impl FnMut(&Message) -> bool,
    ) -> VecDeque<Message> {
        let (chosen, kept): (VecDeque<Message>, VecDeque<Message>) =
            std::mem::take(&mut self.in_flight).into_iter().partition(|message| selected(message));
        self.in_flight = kept;
        chosen
    }

    /// Whether a message from `from` to `to` is lost to a blocked link.
    pub(crate) fn is_blocked(&self, from: NodeId, to: NodeId) -> bool {
        self.blocked.contains(&(from, to))
    }

    /// Whether the link between `a` and `b` is open both ways.
    pub(crate) fn connects(&self, a: NodeId, b: NodeId) -> bool {
        !self.is_blocked(a, b) && !self.is_blocked(b, a)
    }

    /// Blocks the link from `from` to `to`.
    pub(crate) fn block(&mut self, from: NodeId, to: NodeId) {
        self.blocked.insert((from, to));
    }

    /// Unblocks every link.
    pub(crate) fn heal(&mut self) {
        self.blocked.clear();
    }

    /// Loses every `n`-th message sent from now on, or none.
    pub(crate) fn drop_every_nth(&mut self, n: Option<u64>) {
        self.drop_every = n;
    }

    /// Whether deliveries pick a random message instead of the oldest.
    pub(crate) fn set_reordering(&mut self, reorder: bool) {
        self.reorder = reorder;
    }

    /// Counts `count` messages lost.
    pub(crate) fn count_dropped(&mut self, count: usize) {
        self.dropped_count += count as u64;
    }

    /// Records `message` as delivered.
    pub(crate) fn record_delivered(&mut self, message: Message) {
        self.delivered.push(message);
    }

    /// Messages in flight, oldest first.
    pub(crate) fn in_flight(&self) -> impl Iterator<Item = &Message> {
        self.in_flight.iter()
    }

    /// Every message delivered, in delivery order.
    pub(crate) fn delivered(&self) -> &[Message] {
        &self.delivered
    }

    /// How many messages were lost.
    pub(crate) fn dropped_count(&self) -> u64 {
        self.dropped_count
    }
}
