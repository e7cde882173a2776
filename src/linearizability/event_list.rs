//! [`EventList`]: a partition's calls and returns in time order, as a doubly linked list from
//! which the search lifts an operation's two events when it linearizes the operation, and
//! into which it puts them back, in constant time, when it backtracks.
//!
//! An operation whose outcome is unknown has no return event: it returns at +infinity, after
//! everything else, and the search never needs to reach that point (see `search`).

/// One node of the list.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Event {
    /// The head or the tail of the list, which carry no event.
    Sentinel,
    /// The call of `operation`, whose return event (if it has one) sits at node `return_node`.
    Call {
        /// The operation's number within the partition.
        operation: usize,
        /// The node of the operation's return event; `None` for an unknown outcome.
        return_node: Option<usize>,
    },
    /// The return of `operation`.
    Return {
        /// The operation's number within the partition.
        operation: usize,
    },
}

/// The node that comes before every event.
const HEAD: usize = 0;

/// A partition's events, ordered by time, with calls before returns at the same instant so
/// that operations touching at an instant count as concurrent.
///
/// Nodes are numbered `0..events.len()` once and for all at construction; every node number
/// the list hands out or stores is one of those, so its indexing never goes out of range.
#[derive(Debug)]
pub(crate) struct EventList {
    /// The event at each node; node `HEAD` and the last node are sentinels.
    events: Vec<Event>,
    /// The node after each node in the list (the tail's entry points at itself).
    next: Vec<usize>,
    /// The node before each node in the list (the head's entry points at itself).
    previous: Vec<usize>,
}

impl EventList {
    /// The list for operations `0..intervals.len()`, where `intervals[operation]` holds the
    /// operation's call time and, if it returned, its return time.
    pub(crate) fn new(intervals: &[(u64, Option<u64>)]) -> Self {
        /// Sorts calls before returns at the same instant.
        const CALL_RANK: u8 = 0;
        const RETURN_RANK: u8 = 1;

        let mut timeline: Vec<(u64, u8, usize)> = Vec::with_capacity(intervals.len() * 2);
        for (operation, &(call_time, return_time)) in intervals.iter().enumerate() {
            timeline.push((call_time, CALL_RANK, operation));
            if let Some(return_time) = return_time {
                timeline.push((return_time, RETURN_RANK, operation));
            }
        }
        timeline.sort_unstable();

        // Node of each operation's return event, so that its call can point at it.
        let mut return_nodes: Vec<Option<usize>> = vec![None; intervals.len()];
        for (position, &(_, rank, operation)) in timeline.iter().enumerate() {
            if rank == RETURN_RANK {
                return_nodes[operation] = Some(position + 1);
            }
        }

        let mut events = Vec::with_capacity(timeline.len() + 2);
        events.push(Event::Sentinel);
        for &(_, rank, operation) in &timeline {
            events.push(if rank == CALL_RANK {
                Event::Call { operation, return_node: return_nodes[operation] }
            } else {
                Event::Return { operation }
            });
        }
        events.push(Event::Sentinel);

        let tail = events.len() - 1;
        let next = (0..events.len()).map(|node| (node + 1).min(tail)).collect();
        let previous = (0..events.len()).map(|node| node.saturating_sub(1)).collect();
        EventList { events, next, previous }
    }

    /// The first node still in the list (the tail if the list is empty).
    pub(crate) fn first(&self) -> usize {
        self.next[HEAD]
    }

    /// The node after `node`.
    pub(crate) fn next(&self, node: usize) -> usize {
        self.next[node]
    }

    /// The event at `node`.
    pub(crate) fn event(&self, node: usize) -> Event {
        self.events[node]
    }

    /// Takes the call at `call_node`, and its return if it has one, out of the list.
    pub(crate) fn lift(&mut self, call_node: usize) {
        self.unlink(call_node);
        if let Event::Call { return_node: Some(return_node), .. } = self.events[call_node] {
            self.unlink(return_node);
        }
    }

    /// Puts back the events [`lift`](Self::lift) took out. Lifts must be undone in the reverse
    /// order they were made in, which the search's stack guarantees.
    pub(crate) fn unlift(&mut self, call_node: usize) {
        if let Event::Call { return_node: Some(return_node), .. } = self.events[call_node] {
            self.relink(return_node);
        }
        self.relink(call_node);
    }

    /// Removes `node` from the list; it keeps its own links so that it can be put back.
    fn unlink(&mut self, node: usize) {
        let (before, after) = (self.previous[node], self.next[node]);
        self.next[before] = after;
        self.previous[after] = before;
    }

    /// Puts `node` back between the neighbours it had when it was unlinked.
    fn relink(&mut self, node: usize) {
        let (before, after) = (self.previous[node], self.next[node]);
        self.next[before] = node;
        self.previous[after] = node;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The events still in the list, from head to tail.
    fn remaining(list: &EventList) -> Vec<Event> {
        let mut events = Vec::new();
        let mut node = list.first();
        while list.event(node) != Event::Sentinel {
            events.push(list.event(node));
            node = list.next(node);
        }
        events
    }

    fn call(operation: usize, return_node: Option<usize>) -> Event {
        Event::Call { operation, return_node }
    }

    #[test]
    fn events_are_in_time_order_with_calls_first_on_ties() {
        // Operation 0: [0, 5]; operation 1: [5, 9]; operation 2: called at 3, unknown outcome.
        let list = EventList::new(&[(0, Some(5)), (5, Some(9)), (3, None)]);
        assert_eq!(
            remaining(&list),
            vec![
                call(0, Some(4)),
                call(2, None),
                call(1, Some(5)),
                Event::Return { operation: 0 },
                Event::Return { operation: 1 },
            ]
        );
    }

    #[test]
    fn lift_and_unlift_in_stack_order_restore_the_list() {
        let mut list = EventList::new(&[(0, Some(10)), (1, Some(4)), (2, None), (5, Some(6))]);
        let original = remaining(&list);
        let call_nodes: Vec<usize> = (1..=original.len())
            .filter(|&node| matches!(list.event(node), Event::Call { .. }))
            .collect();

        list.lift(call_nodes[1]);
        list.lift(call_nodes[0]);
        list.lift(call_nodes[3]);
        assert_eq!(remaining(&list), vec![call(2, None)]);

        list.unlift(call_nodes[3]);
        list.unlift(call_nodes[0]);
        list.unlift(call_nodes[1]);
        assert_eq!(remaining(&list), original);
    }

    #[test]
    fn empty_list_starts_at_its_tail() {
        let list = EventList::new(&[]);
        assert_eq!(list.event(list.first()), Event::Sentinel);
    }
}
