//! [`Progress`]: what a leader knows about one follower's log, and how it paces replication
//! to it.
//!
//! A follower is either probed (one AppendEntries at a time, until the leader finds where the
//! logs agree), replicated to (pipelined messages, at most `max_inflight_appends` of them and
//! `max_inflight_bytes` of entries), or sent a snapshot (when it needs entries the leader has
//! compacted). Invariant: `match_index < next_index`.
//!
//! Pacing by progress, not by message (issue #16): a message in flight is never presumed lost
//! because it is slow. Its entries stay counted until an acknowledgment covers them; the
//! follower counts as lost ([`Progress::is_lost`]) only once nothing it acknowledged has
//! advanced its match index for a whole loss timeout (the leader's election timeout) while
//! entries were in flight; and an acceptance never moves `next_index` back, so what is
//! already on the wire is not sent again. A rejection still reveals a gap at once (a lost
//! message, a restarted follower), and the leader probes from what the follower says it holds.

use std::collections::VecDeque;

use crate::snapshot::Snapshot;
use crate::types::{HeartbeatRound, LogIndex};

/// How the leader currently sends to a follower.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ReplicationMode {
    /// Searching for the point where the logs agree: one message at a time.
    Probe {
        /// A probe is outstanding; the next one waits for its answer or the next heartbeat.
        probe_sent: bool,
    },
    /// The logs agree up to `match_index`: entries are streamed, several messages in flight.
    Replicate,
    /// The follower needs entries the leader has compacted: a snapshot is being sent (see
    /// [`SnapshotTransfer`]); no entries are sent until it is installed.
    Snapshot,
}

/// A snapshot on its way to one follower, in chunks, with a window of chunks in flight.
///
/// A plain answer never moves the transfer back: a late or duplicated one must neither
/// multiply the traffic nor rewind the transfer, and a slow link only slows it. Chunks are
/// resent from the last byte the follower confirmed in two cases:
/// - the follower says a chunk came after a gap (`gap` in its answer: an earlier chunk was
///   lost or overtaken): at once, but once per confirmed byte count, so that the answers to
///   the rest of the window (and their duplicates) resend nothing more;
/// - it has confirmed nothing new for longer than an election timeout, or twice the longest
///   wait between two confirmations so far, whichever is longer (up to
///   [`MAX_STALL_TIMEOUTS`] election timeouts): the last chunks or the answers were lost. A
///   link that delivers a chunk per second is slow, not lost. If the follower said
///   meanwhile that it holds less than it confirmed before (it restarted, or dropped a
///   transfer whose checksum failed), this resend starts from the beginning.
#[derive(Clone, Debug)]
pub(crate) struct SnapshotTransfer {
    /// The snapshot being sent.
    pub(crate) snapshot: Snapshot,
    /// The offset of the next chunk to send.
    pub(crate) next_offset: u64,
    /// Bytes the follower has confirmed holding.
    pub(crate) acked: u64,
    /// When the transfer started or the follower last confirmed more bytes.
    pub(crate) last_progress_ms: u64,
    /// The longest wait between two confirmations of this transfer, in milliseconds.
    slowest_confirmation_ms: u64,
    /// The follower said it holds fewer bytes than it confirmed before, and has confirmed
    /// nothing since.
    follower_lost_bytes: bool,
    /// The confirmed byte count at which a gap last made the transfer resend: one resend
    /// per count.
    resent_after_gap_at: Option<u64>,
    /// Whether any chunk was sent since the transfer (re)started: an empty snapshot still
    /// needs one empty chunk.
    pub(crate) chunk_sent: bool,
}

/// The longest a transfer waits for a confirmation, in election timeouts, however slow the
/// link has been.
pub(crate) const MAX_STALL_TIMEOUTS: u64 = 10;

impl SnapshotTransfer {
    fn new(snapshot: Snapshot, now_ms: u64) -> Self {
        SnapshotTransfer {
            snapshot,
            next_offset: 0,
            acked: 0,
            last_progress_ms: now_ms,
            slowest_confirmation_ms: 0,
            follower_lost_bytes: false,
            resent_after_gap_at: None,
            chunk_sent: false,
        }
    }

    /// The snapshot's length in bytes.
    pub(crate) fn total_len(&self) -> u64 {
        self.snapshot.size
    }

    /// Whether another chunk may be sent now, with at most `window_bytes` unconfirmed.
    pub(crate) fn can_send(&self, window_bytes: u64) -> bool {
        let more = self.next_offset < self.total_len() || !self.chunk_sent;
        more && self.next_offset - self.acked < window_bytes.max(1)
    }

    /// Records the follower's answer that it holds `received` bytes (and whether the chunk
    /// it answers came after a gap). Only news moves the transfer forward, and only a gap
    /// right after the confirmed bytes, once per count, resends (see the type's doc).
    pub(crate) fn on_answer(&mut self, received: u64, gap: bool, now_ms: u64) {
        let received = received.min(self.total_len());
        if gap
            && received == self.acked
            && self.next_offset > received
            && self.resent_after_gap_at != Some(received)
        {
            self.resent_after_gap_at = Some(received);
            self.next_offset = received;
            return;
        }
        if received > self.acked {
            self.slowest_confirmation_ms =
                self.slowest_confirmation_ms.max(now_ms.saturating_sub(self.last_progress_ms));
            self.acked = received;
            self.next_offset = self.next_offset.max(received);
            self.last_progress_ms = now_ms;
            self.follower_lost_bytes = false;
        } else if received < self.acked {
            // The follower restarted or started over, or this is a late answer: which one
            // shows only if the transfer stalls (see `resume_offset`).
            self.follower_lost_bytes = true;
        }
    }

    /// Whether the follower has confirmed nothing for too long (see the type's doc).
    pub(crate) fn is_stalled(&self, now_ms: u64, election_timeout_ms: u64) -> bool {
        let patience = self
            .slowest_confirmation_ms
            .saturating_mul(2)
            .clamp(election_timeout_ms, election_timeout_ms.saturating_mul(MAX_STALL_TIMEOUTS));
        now_ms.saturating_sub(self.last_progress_ms) > patience
    }

    /// Where to resend from after a stall: the last confirmed byte, or the beginning if the
    /// follower lost what it had, or confirmed everything without installing it.
    pub(crate) fn resume_offset(&self) -> u64 {
        if self.follower_lost_bytes || self.acked >= self.total_len() { 0 } else { self.acked }
    }

    /// Starts sending again from `offset`.
    pub(crate) fn rewind_to(&mut self, offset: u64, now_ms: u64) {
        self.next_offset = offset;
        self.acked = offset;
        self.chunk_sent = false;
        self.last_progress_ms = now_ms;
        self.follower_lost_bytes = false;
    }
}

/// One AppendEntries with entries in flight.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Inflight {
    /// Its last entry's index.
    last: LogIndex,
    /// Its entries' wire size ([`Entry::encoded_len`](crate::message::Entry::encoded_len)).
    bytes: u64,
    /// When it was sent, in milliseconds.
    sent_ms: u64,
}

/// The leader's view of one follower.
#[derive(Clone, Debug)]
pub(crate) struct Progress {
    /// The highest index known to be stored on the follower and to match the leader's log.
    pub(crate) match_index: LogIndex,
    /// The next index to send (in Probe mode: where the probe starts).
    pub(crate) next_index: LogIndex,
    /// The current sending mode.
    pub(crate) mode: ReplicationMode,
    /// The AppendEntries with entries in flight, oldest first: in Replicate mode the
    /// pipeline, in Probe mode the probe.
    inflight: VecDeque<Inflight>,
    /// The sum of `inflight`'s bytes.
    inflight_bytes: u64,
    /// When the match index last advanced, in milliseconds.
    match_advanced_ms: u64,
    /// Whether the follower answered within the current check-quorum period.
    pub(crate) recently_active: bool,
    /// The highest heartbeat round the follower has answered (see `read_index.rs`).
    pub(crate) answered_round: HeartbeatRound,
    /// In Snapshot mode: the transfer under way.
    pub(crate) snapshot_transfer: Option<SnapshotTransfer>,
}

impl Progress {
    /// A follower about which nothing is known yet: probe from `next_index`.
    pub(crate) fn new(next_index: LogIndex) -> Self {
        Progress {
            match_index: LogIndex(0),
            next_index,
            mode: ReplicationMode::Probe { probe_sent: false },
            inflight: VecDeque::new(),
            inflight_bytes: 0,
            match_advanced_ms: 0,
            recently_active: false,
            answered_round: HeartbeatRound(0),
            snapshot_transfer: None,
        }
    }

    /// Whether sending more entries must wait. `next_entry_bytes` is the wire size of the
    /// entry at `next_index` (0 when there is none). In Replicate mode, at most
    /// `max_inflight` messages and `max_inflight_bytes` bytes of entries may be in flight,
    /// except that one entry is always sendable when nothing is (however large it is).
    pub(crate) fn is_paused(
        &self,
        max_inflight: usize,
        max_inflight_bytes: u64,
        next_entry_bytes: u64,
    ) -> bool {
        match self.mode {
            ReplicationMode::Probe { probe_sent } => probe_sent,
            ReplicationMode::Replicate => {
                self.inflight.len() >= max_inflight
                    || (!self.inflight.is_empty()
                        && self.inflight_bytes.saturating_add(next_entry_bytes)
                            > max_inflight_bytes)
            }
            ReplicationMode::Snapshot => true,
        }
    }

    /// How many bytes of entries the next message may carry within `max_inflight_bytes`
    /// (it carries at least one entry whatever this says).
    pub(crate) fn inflight_room(&self, max_inflight_bytes: u64) -> u64 {
        max_inflight_bytes.saturating_sub(self.inflight_bytes)
    }

    /// Records that an AppendEntries ending at `last_sent` (None when it carried no entries)
    /// with `bytes` of entries was sent at `now_ms`.
    pub(crate) fn on_sent(&mut self, last_sent: Option<LogIndex>, bytes: u64, now_ms: u64) {
        match self.mode {
            ReplicationMode::Probe { .. } => {
                self.mode = ReplicationMode::Probe { probe_sent: true };
                // The probe is the only message in flight: one sent again replaces it.
                self.clear_inflight();
                if let Some(last) = last_sent {
                    self.push_inflight(Inflight { last, bytes, sent_ms: now_ms });
                }
            }
            ReplicationMode::Replicate => {
                if let Some(last) = last_sent {
                    self.next_index = last.next();
                    self.push_inflight(Inflight { last, bytes, sent_ms: now_ms });
                }
            }
            ReplicationMode::Snapshot => {}
        }
    }

    fn push_inflight(&mut self, inflight: Inflight) {
        self.inflight_bytes = self.inflight_bytes.saturating_add(inflight.bytes);
        self.inflight.push_back(inflight);
    }

    fn clear_inflight(&mut self) {
        self.inflight.clear();
        self.inflight_bytes = 0;
    }

    /// Records an acceptance up to `match_index` at `now_ms`. Returns whether the match index
    /// advanced. `next_index` never moves back: an acceptance that arrives late (after a
    /// probe, or after messages sent since) says nothing about what followed it.
    pub(crate) fn on_accepted(&mut self, match_index: LogIndex, now_ms: u64) -> bool {
        let advanced = match_index > self.match_index;
        if advanced {
            self.match_index = match_index;
            self.match_advanced_ms = now_ms;
            self.next_index = self.next_index.max(match_index.next());
        }
        while self.inflight.front().is_some_and(|inflight| inflight.last <= self.match_index) {
            if let Some(acknowledged) = self.inflight.pop_front() {
                self.inflight_bytes = self.inflight_bytes.saturating_sub(acknowledged.bytes);
            }
        }
        match self.mode {
            ReplicationMode::Probe { .. } => {
                // The logs agree up to match_index: stream from there, after the probe if it
                // is still in flight (it goes on as the first message of the pipeline).
                if match_index.next() >= self.next_index || advanced {
                    self.mode = ReplicationMode::Replicate;
                    if let Some(probe) = self.inflight.back() {
                        self.next_index = self.next_index.max(probe.last.next());
                    }
                }
            }
            ReplicationMode::Snapshot => {
                // The follower already holds what the snapshot covers (it installed it and
                // the answer was lost, or it caught up otherwise): back to the log.
                let covered = self.snapshot_transfer.as_ref().is_none_or(|transfer| {
                    self.match_index >= transfer.snapshot.meta.last_included.index
                });
                if covered {
                    self.snapshot_transfer = None;
                    self.mode = ReplicationMode::Replicate;
                    self.next_index = self.match_index.next();
                    self.clear_inflight();
                }
            }
            ReplicationMode::Replicate => {}
        }
        debug_assert!(self.match_index < self.next_index);
        advanced
    }

    /// Starts sending `snapshot`: entries wait until the follower has installed it.
    pub(crate) fn start_snapshot(&mut self, snapshot: Snapshot, now_ms: u64) {
        self.mode = ReplicationMode::Snapshot;
        self.clear_inflight();
        self.snapshot_transfer = Some(SnapshotTransfer::new(snapshot, now_ms));
    }

    /// The follower installed a snapshot through `index` (or holds everything up to it):
    /// probe the log from just after it.
    pub(crate) fn on_snapshot_installed(&mut self, index: LogIndex) {
        self.match_index = self.match_index.max(index);
        self.snapshot_transfer = None;
        self.clear_inflight();
        self.next_index = self.match_index.next();
        self.mode = ReplicationMode::Probe { probe_sent: false };
    }

    /// Falls back to probing from `next_index` (after a rejection or a loss): what was in
    /// flight no longer counts.
    pub(crate) fn probe_from(&mut self, next_index: LogIndex) {
        debug_assert!(next_index > self.match_index, "never probe below the match index");
        self.next_index = next_index;
        self.mode = ReplicationMode::Probe { probe_sent: false };
        self.clear_inflight();
        self.snapshot_transfer = None;
    }

    /// Whether the follower counts as lost at `now_ms`: entries are in flight, and for
    /// `timeout_ms` no acknowledgment has advanced the match index (counted from the later of
    /// the last advance and the sending of the oldest message in flight). A slow follower
    /// that acknowledges anything new within each timeout is never lost, however long its
    /// queue.
    pub(crate) fn is_lost(&self, now_ms: u64, timeout_ms: u64) -> bool {
        self.inflight.front().is_some_and(|oldest| {
            let waiting_since_ms = oldest.sent_ms.max(self.match_advanced_ms);
            now_ms.saturating_sub(waiting_since_ms) >= timeout_ms
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Count and byte limits that never bind.
    const ANY: (usize, u64) = (usize::MAX, u64::MAX);

    /// A follower in Replicate mode with the logs agreeing through `match_index`.
    fn replicating(match_index: u64) -> Progress {
        let mut progress = Progress::new(LogIndex(match_index + 1));
        progress.on_sent(None, 0, 0);
        progress.on_accepted(LogIndex(match_index), 0);
        assert_eq!(progress.mode, ReplicationMode::Replicate);
        progress
    }

    #[test]
    fn probe_pauses_after_one_message_then_streams_once_accepted() {
        let mut progress = Progress::new(LogIndex(11));
        assert!(!progress.is_paused(4, u64::MAX, 10));
        progress.on_sent(Some(LogIndex(11)), 10, 0);
        assert!(progress.is_paused(4, u64::MAX, 10));
        assert!(progress.on_accepted(LogIndex(11), 5));
        assert_eq!(progress.mode, ReplicationMode::Replicate);
        assert_eq!(progress.next_index, LogIndex(12));
        assert_eq!(progress.inflight_room(100), 100, "the accepted probe is no longer in flight");
    }

    #[test]
    fn a_stale_acceptance_below_the_probe_leaves_the_probe_waiting() {
        let mut progress = Progress::new(LogIndex(11));
        progress.on_sent(Some(LogIndex(11)), 10, 0);
        // A late acceptance that proves nothing new (match 0, the probe asked about 10).
        assert!(!progress.on_accepted(LogIndex(0), 5), "the match index did not advance");
        assert_eq!(progress.mode, ReplicationMode::Probe { probe_sent: true });
        assert_eq!(progress.next_index, LogIndex(11));
    }

    #[test]
    fn replicate_pipelines_up_to_the_inflight_limit() {
        let mut progress = replicating(0);
        progress.on_sent(Some(LogIndex(5)), 50, 10);
        progress.on_sent(Some(LogIndex(9)), 40, 20);
        assert!(progress.is_paused(2, u64::MAX, 10));
        assert_eq!(progress.next_index, LogIndex(10));
        progress.on_accepted(LogIndex(5), 30);
        assert!(!progress.is_paused(2, u64::MAX, 10));
        progress.probe_from(LogIndex(6));
        assert!(!progress.is_lost(u64::MAX, 0), "nothing is in flight after a fallback");
        assert_eq!(progress.inflight_room(100), 100);
        assert_eq!(progress.mode, ReplicationMode::Probe { probe_sent: false });
    }

    fn transfer_of(size: u64) -> SnapshotTransfer {
        let snapshot = Snapshot { size, ..Snapshot::default() };
        SnapshotTransfer::new(snapshot, 0)
    }

    #[test]
    fn a_snapshot_answer_moves_the_transfer_forward_never_back() {
        let mut transfer = transfer_of(100);
        transfer.next_offset = 40;
        transfer.on_answer(20, false, 5);
        assert_eq!((transfer.acked, transfer.next_offset, transfer.last_progress_ms), (20, 40, 5));
        // Late, duplicated, or beyond the end: nothing moves back, nothing past the end.
        transfer.on_answer(10, false, 6);
        transfer.on_answer(20, false, 7);
        assert_eq!((transfer.acked, transfer.next_offset, transfer.last_progress_ms), (20, 40, 5));
        transfer.on_answer(500, false, 8);
        assert_eq!((transfer.acked, transfer.next_offset), (100, 100));
    }

    #[test]
    fn a_gap_right_after_the_confirmed_bytes_resends_once_per_count() {
        let mut transfer = transfer_of(100);
        transfer.next_offset = 40;
        transfer.on_answer(10, false, 1);
        transfer.on_answer(10, true, 2);
        assert_eq!(transfer.next_offset, 10, "resent from the confirmed byte");
        transfer.next_offset = 40;
        transfer.on_answer(10, true, 3);
        assert_eq!(transfer.next_offset, 40, "a second gap answer for the same count resent");
        // A gap answer about fewer bytes than confirmed is late: it resends nothing.
        transfer.on_answer(20, false, 4);
        transfer.on_answer(10, true, 5);
        assert_eq!((transfer.acked, transfer.next_offset), (20, 40));
        // A new count may resend once more.
        transfer.on_answer(20, true, 6);
        assert_eq!(transfer.next_offset, 20);
    }

    #[test]
    fn a_transfer_stalls_after_an_election_timeout_or_twice_its_slowest_confirmation() {
        let mut transfer = transfer_of(100);
        transfer.next_offset = 40;
        assert!(!transfer.is_stalled(300, 300));
        assert!(transfer.is_stalled(301, 300));
        // Confirmations 500 ms apart (a slow link): patience grows to 1000 ms.
        transfer.on_answer(10, false, 500);
        assert!(!transfer.is_stalled(1_500, 300));
        assert!(transfer.is_stalled(1_501, 300));
        // Never past MAX_STALL_TIMEOUTS election timeouts.
        transfer.on_answer(20, false, 100_000);
        let limit = 300 * MAX_STALL_TIMEOUTS;
        assert!(!transfer.is_stalled(100_000 + limit, 300));
        assert!(transfer.is_stalled(100_000 + limit + 1, 300));
    }

    #[test]
    fn a_stalled_transfer_resumes_from_the_confirmed_byte_unless_the_follower_lost_it() {
        let mut transfer = transfer_of(100);
        transfer.on_answer(30, false, 1);
        assert_eq!(transfer.resume_offset(), 30);
        transfer.on_answer(0, false, 2);
        assert_eq!(transfer.resume_offset(), 0, "the follower said it lost the bytes");
        transfer.on_answer(40, false, 3);
        assert_eq!(transfer.resume_offset(), 40, "it confirmed more since: that answer was late");
        transfer.on_answer(100, false, 4);
        assert_eq!(transfer.resume_offset(), 0, "all confirmed and not installed");
        transfer.rewind_to(0, 5);
        assert_eq!((transfer.acked, transfer.next_offset, transfer.chunk_sent), (0, 0, false));
    }

    /// The byte budget: sending waits while the next entry would take the bytes in flight
    /// past `max_inflight_bytes`, and resumes as acknowledgments free room.
    #[test]
    fn replicate_keeps_the_bytes_in_flight_within_the_budget() {
        let mut progress = replicating(0);
        progress.on_sent(Some(LogIndex(3)), 60, 0);
        assert_eq!(progress.inflight_room(100), 40);
        assert!(!progress.is_paused(usize::MAX, 100, 40), "the next entry fits exactly");
        assert!(progress.is_paused(usize::MAX, 100, 41), "the next entry does not fit");
        progress.on_sent(Some(LogIndex(4)), 40, 0);
        assert!(progress.is_paused(usize::MAX, 100, 1), "the budget is full");
        assert_eq!(progress.inflight_room(100), 0);
        // An acknowledgment of the first message frees its bytes.
        progress.on_accepted(LogIndex(3), 5);
        assert_eq!(progress.inflight_room(100), 60);
        assert!(!progress.is_paused(usize::MAX, 100, 60));
        // An acknowledgment of part of a message frees nothing of it (5..=8 here), only of
        // the messages it covers whole (4).
        progress.on_sent(Some(LogIndex(8)), 50, 6);
        assert_eq!(progress.inflight_room(100), 10);
        progress.on_accepted(LogIndex(6), 7);
        assert_eq!(progress.inflight_room(100), 50);
        progress.on_accepted(LogIndex(8), 8);
        assert_eq!(progress.inflight_room(100), 100);
    }

    /// An entry larger than the whole budget is sendable once nothing is in flight (else
    /// replication would stop for good), and only then.
    #[test]
    fn an_entry_larger_than_the_budget_goes_alone() {
        let mut progress = replicating(0);
        assert!(!progress.is_paused(usize::MAX, 100, 1_000), "nothing in flight: it goes");
        progress.on_sent(Some(LogIndex(1)), 1_000, 0);
        assert!(progress.is_paused(usize::MAX, 100, 1), "over budget: nothing more");
        progress.on_accepted(LogIndex(1), 5);
        assert!(!progress.is_paused(usize::MAX, 100, 1_000));
        let (count, bytes) = ANY;
        assert!(!progress.is_paused(count, bytes, u64::MAX));
    }

    /// A follower is lost only when no acknowledgment has advanced its match index for the
    /// whole timeout while entries were in flight, not when one message is old.
    #[test]
    fn a_follower_is_lost_only_when_its_match_index_stands_still_for_the_timeout() {
        let mut progress = replicating(0);
        assert!(!progress.is_lost(1_000, 300), "nothing in flight: nothing to lose");
        progress.on_sent(Some(LogIndex(10)), 100, 1_000);
        progress.on_sent(Some(LogIndex(20)), 100, 1_010);
        assert!(!progress.is_lost(1_299, 300));
        // An acknowledgment that advances the match index restarts the wait, although the
        // message it covers only in part is older than the timeout.
        progress.on_accepted(LogIndex(15), 1_250);
        assert!(!progress.is_lost(1_300, 300), "acknowledged 50 ms ago");
        assert!(!progress.is_lost(1_549, 300));
        // A heartbeat's acceptance (no advance) does not.
        progress.on_accepted(LogIndex(15), 1_500);
        assert!(progress.is_lost(1_550, 300));
        // After a quiet spell, the wait starts when entries are sent again.
        progress.on_accepted(LogIndex(20), 1_600);
        progress.on_sent(Some(LogIndex(21)), 100, 5_000);
        assert!(!progress.is_lost(5_299, 300));
        assert!(progress.is_lost(5_300, 300));
    }

    /// Late acceptances never move `next_index` back: in Replicate mode, nor when one arrives
    /// during a probe (the probe in flight goes on as part of the pipeline, not sent again).
    #[test]
    fn late_acceptances_never_rewind_next_index() {
        let mut progress = replicating(0);
        for last in [10, 20, 30] {
            progress.on_sent(Some(LogIndex(last)), 100, 0);
        }
        assert!(progress.on_accepted(LogIndex(10), 5));
        assert_eq!(progress.next_index, LogIndex(31), "an old acceptance rewound the pipeline");
        // The follower was lost; the leader probes from its match index (resending 11..=20),
        // then an acceptance sent before the loss arrives: streaming resumes after the probe.
        progress.probe_from(LogIndex(11));
        progress.on_sent(Some(LogIndex(20)), 100, 400);
        assert!(progress.on_accepted(LogIndex(15), 410));
        assert_eq!(progress.mode, ReplicationMode::Replicate);
        assert_eq!(progress.next_index, LogIndex(21), "the probe's entries would be sent again");
        assert_eq!(progress.inflight_room(1_000), 900, "the probe is still in flight");
        assert!(progress.on_accepted(LogIndex(30), 420));
        assert_eq!(progress.next_index, LogIndex(31));
    }
}
