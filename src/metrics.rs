//! Lock-free counters and latency histograms a node keeps for monitoring, and
//! [`NodeMetrics`], what [`RaftNode::metrics`](crate::RaftNode::metrics) reports.
//!
//! Recording is a few relaxed atomic additions, cheap enough for the hot path; exposition
//! (for example as Prometheus text) is left to the application.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds of the latency buckets, in microseconds (the last bucket is unbounded).
pub const LATENCY_BUCKETS_MICROS: [u64; 14] = [
    50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
    1_000_000,
];

/// A latency histogram with fixed buckets ([`LATENCY_BUCKETS_MICROS`]).
#[derive(Debug, Default)]
pub struct Histogram {
    /// Per bucket (not cumulative); the last slot counts values above every bound.
    buckets: [AtomicU64; LATENCY_BUCKETS_MICROS.len() + 1],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

/// A copy of a [`Histogram`] at one moment.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HistogramSnapshot {
    /// Cumulative counts: observations at or below each bound of [`LATENCY_BUCKETS_MICROS`].
    pub cumulative: Vec<u64>,
    /// All observations.
    pub count: u64,
    /// Sum of all observations, in microseconds.
    pub sum_micros: u64,
}

impl Histogram {
    /// Records one observation.
    pub fn record(&self, duration: Duration) {
        let micros = u64::try_from(duration.as_micros()).unwrap_or(u64::MAX);
        let bucket = LATENCY_BUCKETS_MICROS
            .iter()
            .position(|bound| micros <= *bound)
            .unwrap_or(LATENCY_BUCKETS_MICROS.len());
        self.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_micros.fetch_add(micros, Ordering::Relaxed);
    }

    /// The histogram now.
    pub fn snapshot(&self) -> HistogramSnapshot {
        let mut running = 0;
        let cumulative = self.buckets[..LATENCY_BUCKETS_MICROS.len()]
            .iter()
            .map(|bucket| {
                running += bucket.load(Ordering::Relaxed);
                running
            })
            .collect();
        HistogramSnapshot {
            cumulative,
            count: self.count.load(Ordering::Relaxed),
            sum_micros: self.sum_micros.load(Ordering::Relaxed),
        }
    }
}

/// What a node has done since it started.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeMetrics {
    /// Proposals appended to the log by this node as leader.
    pub proposals: u64,
    /// Proposals refused (not leader, too large).
    pub proposals_refused: u64,
    /// Entries this node learned to be committed.
    pub entries_committed: u64,
    /// Commands applied to the state machine.
    pub commands_applied: u64,
    /// Elections this node started.
    pub elections_started: u64,
    /// Peer messages refused because no correct peer sends them (a second leader claiming a
    /// term, a leader overwriting committed entries): a buggy or compromised peer.
    pub protocol_violations: u64,
    /// Times the leader this node knows changed (including to or from none).
    pub leader_changes: u64,
    /// Times this node stepped down as leader because its disk stalled (a write waited
    /// [`Config::max_sync_stall_ms`](crate::Config::max_sync_stall_ms) for its sync).
    pub disk_stall_step_downs: u64,
    /// The current term.
    pub term: u64,
    /// Snapshots this node took of its state machine and stored.
    pub snapshots_stored: u64,
    /// Snapshots this node received from a leader and installed.
    pub snapshots_installed: u64,
    /// The last index covered by the latest snapshot it holds (0: none).
    pub snapshot_index: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_count_into_cumulative_buckets() {
        let histogram = Histogram::default();
        histogram.record(Duration::from_micros(40));
        histogram.record(Duration::from_micros(400));
        histogram.record(Duration::from_secs(5));
        let snapshot = histogram.snapshot();
        assert_eq!(snapshot.count, 3);
        assert_eq!(snapshot.cumulative[0], 1);
        assert_eq!(snapshot.cumulative[3], 2);
        assert_eq!(*snapshot.cumulative.last().unwrap(), 2, "5 s is above every bound");
        assert_eq!(snapshot.sum_micros, 40 + 400 + 5_000_000);
    }
}
