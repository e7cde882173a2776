//! [`Progress`]: what a leader knows about one follower's log, and how it paces replication
//! to it.
//!
//! A follower is either probed (one AppendEntries at a time, until the leader finds where the
//! logs agree), replicated to (up to `max_inflight_appends` pipelined messages), or sent a
//! snapshot (when it needs entries the leader has compacted). Invariant:
//! `match_index < next_index`.

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

/// The leader's view of one follower.
#[derive(Clone, Debug)]
pub(crate) struct Progress {
    /// The highest index known to be stored on the follower and to match the leader's log.
    pub(crate) match_index: LogIndex,
    /// The next index to send.
    pub(crate) next_index: LogIndex,
    /// The current sending mode.
    pub(crate) mode: ReplicationMode,
    /// For each AppendEntries with entries in flight (Replicate mode): its last index and
    /// when it was sent, in milliseconds.
    inflight: VecDeque<(LogIndex, u64)>,
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
            recently_active: false,
            answered_round: HeartbeatRound(0),
            snapshot_transfer: None,
        }
    }

    /// Whether sending more entries must wait.
    pub(crate) fn is_paused(&self, max_inflight: usize) -> bool {
        match self.mode {
            ReplicationMode::Probe { probe_sent } => probe_sent,
            ReplicationMode::Replicate => self.inflight.len() >= max_inflight,
            ReplicationMode::Snapshot => true,
        }
    }

    /// Records that an AppendEntries ending at `last_sent` (None when it carried no entries)
    /// was sent at `now_ms`.
    pub(crate) fn on_sent(&mut self, last_sent: Option<LogIndex>, now_ms: u64) {
        match self.mode {
            ReplicationMode::Probe { .. } => {
                self.mode = ReplicationMode::Probe { probe_sent: true }
            }
            ReplicationMode::Replicate => {
                if let Some(last) = last_sent {
                    self.next_index = last.next();
                    self.inflight.push_back((last, now_ms));
                }
            }
            ReplicationMode::Snapshot => {}
        }
    }

    /// Records an acceptance up to `match_index`. Returns whether the match index advanced.
    pub(crate) fn on_accepted(&mut self, match_index: LogIndex) -> bool {
        let advanced = match_index > self.match_index;
        if advanced {
            self.match_index = match_index;
            self.next_index = self.next_index.max(match_index.next());
        }
        while self.inflight.front().is_some_and(|(last, _)| *last <= self.match_index) {
            self.inflight.pop_front();
        }
        match self.mode {
            ReplicationMode::Probe { .. } => {
                // The logs agree up to match_index: stream from there.
                if match_index.next() >= self.next_index || advanced {
                    self.mode = ReplicationMode::Replicate;
                    self.next_index = self.match_index.next();
                    self.inflight.clear();
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
                    self.inflight.clear();
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
        self.inflight.clear();
        self.snapshot_transfer = Some(SnapshotTransfer::new(snapshot, now_ms));
    }

    /// The follower installed a snapshot through `index` (or holds everything up to it):
    /// probe the log from just after it.
    pub(crate) fn on_snapshot_installed(&mut self, index: LogIndex) {
        self.match_index = self.match_index.max(index);
        self.snapshot_transfer = None;
        self.inflight.clear();
        self.next_index = self.match_index.next();
        self.mode = ReplicationMode::Probe { probe_sent: false };
    }

    /// Falls back to probing from `next_index` (after a rejection or a suspected loss).
    pub(crate) fn probe_from(&mut self, next_index: LogIndex) {
        debug_assert!(next_index > self.match_index, "never probe below the match index");
        self.next_index = next_index;
        self.mode = ReplicationMode::Probe { probe_sent: false };
        self.inflight.clear();
        self.snapshot_transfer = None;
    }

    /// Whether an AppendEntries sent before `sent_before_ms` is still unanswered (it or its
    /// answer was probably lost).
    pub(crate) fn has_inflight_sent_before(&self, sent_before_ms: u64) -> bool {
        self.inflight.front().is_some_and(|(_, sent_ms)| *sent_ms < sent_before_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_pauses_after_one_message_then_streams_once_accepted() {
        let mut progress = Progress::new(LogIndex(11));
        assert!(!progress.is_paused(4));
        progress.on_sent(Some(LogIndex(11)), 0);
        assert!(progress.is_paused(4));
        assert!(progress.on_accepted(LogIndex(11)));
        assert_eq!(progress.mode, ReplicationMode::Replicate);
        assert_eq!(progress.next_index, LogIndex(12));
    }

    #[test]
    fn a_stale_acceptance_below_the_probe_leaves_the_probe_waiting() {
        let mut progress = Progress::new(LogIndex(11));
        progress.on_sent(Some(LogIndex(11)), 0);
        // A late acceptance that proves nothing new (match 0, the probe asked about 10).
        assert!(!progress.on_accepted(LogIndex(0)), "the match index did not advance");
        assert_eq!(progress.mode, ReplicationMode::Probe { probe_sent: true });
        assert_eq!(progress.next_index, LogIndex(11));
    }

    #[test]
    fn replicate_pipelines_up_to_the_inflight_limit() {
        let mut progress = Progress::new(LogIndex(1));
        progress.on_sent(None, 0);
        progress.on_accepted(LogIndex(0));
        assert_eq!(progress.mode, ReplicationMode::Replicate);
        progress.on_sent(Some(LogIndex(5)), 10);
        progress.on_sent(Some(LogIndex(9)), 20);
        assert!(progress.is_paused(2));
        assert_eq!(progress.next_index, LogIndex(10));
        assert!(progress.has_inflight_sent_before(11));
        progress.on_accepted(LogIndex(5));
        assert!(!progress.is_paused(2));
        assert!(!progress.has_inflight_sent_before(20));
        assert!(progress.has_inflight_sent_before(21));
        progress.probe_from(LogIndex(6));
        assert!(!progress.has_inflight_sent_before(u64::MAX));
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
}
