//! [`Config`]: every timing and size limit of a node, explicit and validated.
//!
//! Defaults follow the seed: an election timeout drawn per election from [150, 300) ms and a
//! heartbeat every 100 ms. [`Config::validate`] rejects combinations that cannot work, such as a
//! heartbeat interval at or above the minimum election timeout.

use crate::error::ConfigError;
use crate::state_machine::SnapshotMode;
use crate::transport::codec::largest_messages;

/// Timing and size limits of one Raft node. Each field's doc gives its default
/// ([`Config::default`]) and unit; [`Config::validate`] refuses combinations that cannot work.
///
/// # Size limits
///
/// A command is limited three times on its way: [`max_entry_bytes`](Config::max_entry_bytes)
/// (default 8 MiB) is what a client may propose; the storage must be able to store it
/// ([`WalOptions::max_entry_bytes`](crate::storage::WalOptions::max_entry_bytes), default 16
/// MiB, checked through [`Storage::max_entry_bytes`](crate::storage::Storage::max_entry_bytes));
/// and the message carrying it must fit in the transport's frame
/// ([`TcpConfig::max_frame_bytes`](crate::transport::TcpConfig::max_frame_bytes), default 64
/// MiB, checked through [`Transport::max_message_bytes`](crate::transport::Transport::max_message_bytes)).
/// A message is larger than its payload: an AppendEntries carries up to
/// [`max_append_bytes`](Config::max_append_bytes) of commands (or one command of up to
/// `max_entry_bytes`, when larger: the first entry is always sent) in up to
/// [`max_append_entries`](Config::max_append_entries) entries of 21 bytes of framing each, and
/// an InstallSnapshot carries a [`snapshot_chunk_bytes`](Config::snapshot_chunk_bytes) chunk
/// and the cluster configuration (counted as 64 KiB). So `max_entry_bytes <=
/// WalOptions::max_entry_bytes`, and each of those messages, framing included, must be at
/// most `max_frame_bytes`: [`RaftNode::start`](crate::RaftNode::start) refuses a node whose
/// parts break either rule ([`ConfigError::EntryLimitAboveStorage`],
/// [`ConfigError::MessageAboveFrameLimit`], naming the values), since the first command or
/// chunk that large would stop the node or be dropped forever; and [`Config::validate`]
/// refuses limits whose messages could not be framed at all (a 32-bit length, whatever the
/// transport: [`ConfigError::LimitTooLarge`]). The other byte limits only
/// bound memory and pace, and any values work together:
/// [`max_inflight_bytes`](Config::max_inflight_bytes) (8 MiB; one larger entry is still sent
/// alone), [`TcpConfig::queue_bytes`](crate::transport::TcpConfig::queue_bytes) (64 MiB; one
/// message is always queued), `max_inflight_snapshot_chunks` chunks in flight, and
/// [`max_snapshot_bytes`](Config::max_snapshot_bytes) (4 GiB, the largest snapshot accepted:
/// keep it above your state's size). Raising `max_entry_bytes` therefore means raising
/// `WalOptions::max_entry_bytes` and `max_frame_bytes` with it when they are too small.
///
/// ```
/// use raft_consensus::Config;
///
/// let config = Config { heartbeat_interval_ms: 50, ..Config::default() };
/// assert!(config.validate().is_ok());
///
/// let broken = Config { heartbeat_interval_ms: 200, ..Config::default() };
/// assert!(broken.validate().is_err());
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// Lower bound (inclusive) of the randomized election timeout, in milliseconds. Default
    /// 150.
    pub election_timeout_min_ms: u64,
    /// Upper bound (exclusive) of the randomized election timeout, in milliseconds. Default
    /// 300.
    pub election_timeout_max_ms: u64,
    /// How often a leader sends heartbeats, in milliseconds. Must be below
    /// `election_timeout_min_ms`. Default 100.
    pub heartbeat_interval_ms: u64,
    /// Most AppendEntries messages carrying entries that may be in flight to one follower (a
    /// count). Default 64.
    pub max_inflight_appends: usize,
    /// Most bytes of entries that may be in flight to one follower, unacknowledged (like
    /// etcd-raft's `MaxInflightBytes`). Default 8 MiB.
    ///
    /// An entry counts for its wire size: its payload plus 21 bytes of framing (term, index,
    /// payload kind and length; [`Entry::encoded_len`](crate::Entry::encoded_len)). A message
    /// is trimmed to the room left; one entry larger than the whole budget is still sent, on
    /// its own, once nothing else is in flight. Heartbeats carry no entries and are never held
    /// back.
    ///
    /// The budget bounds what queues on a slow follower's link, which its heartbeats and new
    /// entries wait behind: 8 MiB is 70 ms at 1 Gbit/s, 0.7 s at 100 Mbit/s. And a follower
    /// gets at most this much per acknowledgment round trip (the network's round trip plus its
    /// sync): 8 MiB is 800 MB/s at 10 ms, more than a 1 Gbit/s link or one disk takes, but
    /// about 25 MB/s for a follower whose syncs take 150 ms. Raise it for followers with long
    /// round trips or slow disks (`BENCHMARKS.md`, "Slow follower catch-up", measures both).
    pub max_inflight_bytes: u64,
    /// Most bytes of entry payload in one AppendEntries message (at least one entry is always
    /// sent, so an entry up to `max_entry_bytes` still fits). Default 1 MiB. See "Size
    /// limits" above.
    pub max_append_bytes: usize,
    /// Most entries in one AppendEntries message (a count). Default 4,096.
    pub max_append_entries: usize,
    /// Largest command a client may propose, in bytes. Larger proposals are rejected before
    /// anything is written ([`ProposeError::TooLarge`](crate::ProposeError::TooLarge)).
    /// Default 8 MiB. Must fit in the storage's and the transport's limits: see "Size limits"
    /// above.
    pub max_entry_bytes: usize,
    /// Most client requests queued for the node's task before `propose` waits (a count).
    /// Default 65,536.
    pub max_pending_requests: usize,
    /// Run a pre-vote round before an election (Raft thesis §9.6): a node whose election
    /// timer fires first asks whether a majority would vote for it, without raising its term,
    /// and voters that heard from a leader within `election_timeout_min_ms` say no (and ignore
    /// vote requests too). A node cut off by a partition therefore cannot depose a healthy
    /// leader when it comes back. Default on.
    pub pre_vote: bool,
    /// Take a snapshot once this many entries were applied since the last one (0: never by
    /// count), if the log has also outgrown `snapshot_log_multiple` times the last
    /// snapshot. Only state machines that implement snapshots are ever snapshotted.
    /// Default 16,384.
    pub snapshot_after_entries: u64,
    /// Take a snapshot once this many bytes of commands were applied since the last one (0:
    /// never by size), if the log has also outgrown `snapshot_log_multiple` times the last
    /// snapshot. Default 64 MiB.
    pub snapshot_after_bytes: u64,
    /// A snapshot is taken only once the command bytes applied since the last one reach this
    /// multiple of the last snapshot's size (0: no such condition). The `snapshot_after_*`
    /// thresholds make a snapshot due for a small state; this keeps a large one from being
    /// rewritten after every few thousand entries: each snapshot then writes at most
    /// `1 / snapshot_log_multiple` bytes per byte of log written, whatever the state's size
    /// (and the log since the last snapshot stays below about this multiple of the state, plus
    /// the thresholds). Default 1.
    pub snapshot_log_multiple: u64,
    /// Entries kept in the log below a snapshot, so that a follower slightly behind still
    /// catches up from the log rather than by a whole snapshot (a count). Default 1,024.
    pub snapshot_keep_entries: u64,
    /// Most bytes of snapshot data in one InstallSnapshot message. Default 1 MiB. The
    /// message must fit in the transport's frame: see "Size limits" above.
    pub snapshot_chunk_bytes: usize,
    /// Most InstallSnapshot chunks in flight to one follower (flow control; a count). Default
    /// 4.
    pub max_inflight_snapshot_chunks: usize,
    /// Largest snapshot a follower accepts from a leader, in bytes (it is written to storage
    /// as it arrives, never held whole in memory): a transfer declaring more is refused at its
    /// first chunk, so a peer cannot make a node fill its disk. Must exceed every snapshot the
    /// state machine makes. Default 4 GiB.
    pub max_snapshot_bytes: u64,
    /// A learner becomes a voter only if its log is at most this many entries behind the
    /// leader's (otherwise [`MembershipError::NotCaughtUp`](crate::MembershipError)): a voter
    /// far behind would slow every commit it is needed for (a count of entries). Default
    /// 1,000.
    pub promotion_max_lag: u64,
    /// Serve [`ReadPolicy::Lease`](crate::core::ReadPolicy) reads on the leader without a
    /// round trip, within a lease (Raft thesis §6.4.1). Off by default: it trades the safety
    /// of linearizable reads for an assumption about clocks.
    ///
    /// **The clock assumption.** A leader's lease runs for `election_timeout_min_ms -
    /// clock_drift_bound_ms` from the moment it sent the heartbeats a majority has answered.
    /// Each of those followers ignores vote requests for `election_timeout_min_ms` after it
    /// receives the heartbeat (the pre-vote rule, so `pre_vote` must be on), so no other leader
    /// can be elected while the lease runs, *provided that* no node's clock runs faster than
    /// the leader's by more than `clock_drift_bound_ms` over one election timeout (time as each
    /// node's monotonic clock measures it: steps of wall-clock time do not matter, but a
    /// virtual machine paused and resumed, or a clock slewed hard, can break it). Every node
    /// of the cluster must run with the same `lease_reads` and timeouts: a node that restarts
    /// ignores vote requests for `election_timeout_min_ms` after it starts, in case it
    /// answered a heartbeat just before. When the lease has lapsed, or once the leader has
    /// handed leadership over in its term, lease reads fall back to a ReadIndex round.
    pub lease_reads: bool,
    /// How far, in milliseconds over one election timeout, any node's clock may run ahead of
    /// the leader's; the lease is shortened by this much. Used only with `lease_reads`.
    /// Default 30.
    pub clock_drift_bound_ms: u64,
    /// Most linearizable reads a node keeps waiting: for confirmation (its own, and on a
    /// leader its followers' forwarded requests, counted apart), and again once confirmed,
    /// for its state machine to catch up. More are refused with
    /// [`ReadError::TooManyPending`](crate::ReadError). A count; default 65,536.
    pub max_pending_reads: usize,
    /// How long, in milliseconds, a node's oldest write handed to storage may wait for its
    /// sync before the node counts its disk as stalled (default 300, the default maximum
    /// election timeout; 0: never). A leader whose disk stalls cannot make its log durable,
    /// yet its heartbeats would keep followers from electing another leader: so it steps
    /// down (in the same term, logging why), hands leadership to a follower that holds its
    /// whole log if there is one, and stops sending heartbeats, so a healthy node takes
    /// over. A node whose disk is stalled stands for no election and takes no leadership
    /// handed to it until the sync completes. [`Status::disk_stalled_for_ms`] reports a
    /// stall on any node. A leader with no other voter keeps leading: nobody could take over.
    ///
    /// Must be 0 or above `heartbeat_interval_ms`. Raise it for disks whose syncs can take
    /// that long in normal service (a spinning disk under heavy load), or leaders step down
    /// over ordinary slowness.
    ///
    /// [`Status::disk_stalled_for_ms`]: crate::Status::disk_stalled_for_ms
    pub max_sync_stall_ms: u64,
    /// Whether the node takes snapshots: [`SnapshotMode::IfSupported`] (the default: when
    /// the state machine implements them, warning at start when it does not),
    /// [`SnapshotMode::Required`] (refuse to start when it does not) or
    /// [`SnapshotMode::Off`]. The `snapshot_*` thresholds above say when.
    pub snapshot_mode: SnapshotMode,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            election_timeout_min_ms: 150,
            election_timeout_max_ms: 300,
            heartbeat_interval_ms: 100,
            max_inflight_appends: 64,
            max_inflight_bytes: 8 * 1024 * 1024,
            max_append_bytes: 1024 * 1024,
            max_append_entries: 4096,
            max_entry_bytes: 8 * 1024 * 1024,
            max_pending_requests: 65_536,
            pre_vote: true,
            snapshot_after_entries: 16_384,
            snapshot_after_bytes: 64 * 1024 * 1024,
            snapshot_log_multiple: 1,
            snapshot_keep_entries: 1024,
            snapshot_chunk_bytes: 1024 * 1024,
            max_inflight_snapshot_chunks: 4,
            max_snapshot_bytes: 4 * 1024 * 1024 * 1024,
            promotion_max_lag: 1_000,
            lease_reads: false,
            clock_drift_bound_ms: 30,
            max_pending_reads: 65_536,
            max_sync_stall_ms: 300,
            snapshot_mode: SnapshotMode::IfSupported,
        }
    }
}

impl Config {
    /// Checks that the limits are consistent with each other.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.election_timeout_min_ms == 0 {
            return Err(ConfigError::ZeroElectionTimeout);
        }
        if self.election_timeout_min_ms >= self.election_timeout_max_ms {
            return Err(ConfigError::EmptyElectionTimeoutRange {
                min_ms: self.election_timeout_min_ms,
                max_ms: self.election_timeout_max_ms,
            });
        }
        if self.heartbeat_interval_ms == 0
            || self.heartbeat_interval_ms >= self.election_timeout_min_ms
        {
            return Err(ConfigError::HeartbeatNotBelowElectionTimeout {
                heartbeat_ms: self.heartbeat_interval_ms,
                election_timeout_min_ms: self.election_timeout_min_ms,
            });
        }
        for (name, value) in [
            ("max_inflight_appends", self.max_inflight_appends),
            ("max_append_bytes", self.max_append_bytes),
            ("max_append_entries", self.max_append_entries),
            ("max_entry_bytes", self.max_entry_bytes),
            ("max_pending_requests", self.max_pending_requests),
            ("snapshot_chunk_bytes", self.snapshot_chunk_bytes),
            ("max_inflight_snapshot_chunks", self.max_inflight_snapshot_chunks),
            ("max_pending_reads", self.max_pending_reads),
            ("max_snapshot_bytes", usize::try_from(self.max_snapshot_bytes).unwrap_or(usize::MAX)),
            ("max_inflight_bytes", usize::try_from(self.max_inflight_bytes).unwrap_or(usize::MAX)),
        ] {
            if value == 0 {
                return Err(ConfigError::ZeroLimit { name });
            }
        }
        if self.lease_reads && !self.pre_vote {
            return Err(ConfigError::LeaseReadsWithoutPreVote);
        }
        if self.lease_reads && self.clock_drift_bound_ms >= self.election_timeout_min_ms {
            return Err(ConfigError::DriftBoundNotBelowElectionTimeout {
                drift_ms: self.clock_drift_bound_ms,
                election_timeout_min_ms: self.election_timeout_min_ms,
            });
        }
        if self.max_sync_stall_ms != 0 && self.max_sync_stall_ms <= self.heartbeat_interval_ms {
            return Err(ConfigError::SyncStallNotAboveHeartbeat {
                max_sync_stall_ms: self.max_sync_stall_ms,
                heartbeat_ms: self.heartbeat_interval_ms,
            });
        }
        // Entries and their counts are framed with 32-bit lengths on the wire and on disk.
        for (name, value) in [
            ("max_entry_bytes", self.max_entry_bytes),
            ("max_append_entries", self.max_append_entries),
            ("snapshot_chunk_bytes", self.snapshot_chunk_bytes),
        ] {
            if value > MAX_FRAMED_LENGTH {
                return Err(ConfigError::LimitTooLarge { name, max: MAX_FRAMED_LENGTH });
            }
        }
        // So is every message, framing included: the largest ones must fit a 32-bit length
        // whatever the transport (see "Size limits").
        for (name, value, message_bytes) in largest_messages(self) {
            if message_bytes > MAX_FRAMED_LENGTH {
                let framing = message_bytes - value;
                return Err(ConfigError::LimitTooLarge {
                    name,
                    max: MAX_FRAMED_LENGTH.saturating_sub(framing),
                });
            }
        }
        Ok(())
    }
}

/// Most voting members a cluster may have: far beyond any real cluster, and small enough that
/// a members record (on disk) or list (on the wire) of this size is cheap to check.
pub const MAX_MEMBERS: usize = 1024;

/// The largest entry size or entry count a 32-bit length field can carry, with room for the
/// record around it.
const MAX_FRAMED_LENGTH: usize = (u32::MAX as usize) - 64;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_config_is_valid_and_matches_the_seed() {
        let config = Config::default();
        assert_eq!(config.validate(), Ok(()));
        assert_eq!(config.election_timeout_min_ms, 150);
        assert_eq!(config.election_timeout_max_ms, 300);
        assert_eq!(config.heartbeat_interval_ms, 100);
        assert_eq!(config.max_sync_stall_ms, config.election_timeout_max_ms);
    }

    #[test]
    fn invalid_configs_are_rejected_with_a_reason() {
        let heartbeat_too_slow = Config { heartbeat_interval_ms: 150, ..Config::default() };
        assert_eq!(
            heartbeat_too_slow.validate(),
            Err(ConfigError::HeartbeatNotBelowElectionTimeout {
                heartbeat_ms: 150,
                election_timeout_min_ms: 150
            })
        );
        let empty_range = Config { election_timeout_max_ms: 150, ..Config::default() };
        assert!(matches!(
            empty_range.validate(),
            Err(ConfigError::EmptyElectionTimeoutRange { .. })
        ));
        let huge_entries = Config { max_entry_bytes: usize::MAX, ..Config::default() };
        assert!(matches!(
            huge_entries.validate(),
            Err(ConfigError::LimitTooLarge { name: "max_entry_bytes", .. })
        ));
        // Each field fits 32 bits, but a message of that much payload and its framing does not.
        let huge_batches = Config { max_append_bytes: u32::MAX as usize - 64, ..Config::default() };
        let Err(ConfigError::LimitTooLarge { name: "max_append_bytes", max }) =
            huge_batches.validate()
        else {
            panic!("a batch that cannot be framed was accepted: {:?}", huge_batches.validate());
        };
        assert_eq!(Config { max_append_bytes: max, ..Config::default() }.validate(), Ok(()));
        assert!(Config { max_append_bytes: max + 1, ..Config::default() }.validate().is_err());
        let entry_without_room_for_framing =
            Config { max_entry_bytes: u32::MAX as usize - 64, ..Config::default() };
        assert!(matches!(
            entry_without_room_for_framing.validate(),
            Err(ConfigError::LimitTooLarge { name: "max_entry_bytes", .. })
        ));
        let zero_inflight = Config { max_inflight_appends: 0, ..Config::default() };
        assert_eq!(
            zero_inflight.validate(),
            Err(ConfigError::ZeroLimit { name: "max_inflight_appends" })
        );
        let lease_without_pre_vote =
            Config { lease_reads: true, pre_vote: false, ..Config::default() };
        assert_eq!(lease_without_pre_vote.validate(), Err(ConfigError::LeaseReadsWithoutPreVote));
        let no_lease_left =
            Config { lease_reads: true, clock_drift_bound_ms: 150, ..Config::default() };
        assert!(matches!(
            no_lease_left.validate(),
            Err(ConfigError::DriftBoundNotBelowElectionTimeout { drift_ms: 150, .. })
        ));
        let just_enough =
            Config { lease_reads: true, clock_drift_bound_ms: 149, ..Config::default() };
        assert_eq!(just_enough.validate(), Ok(()));
        let no_bytes_in_flight = Config { max_inflight_bytes: 0, ..Config::default() };
        assert_eq!(
            no_bytes_in_flight.validate(),
            Err(ConfigError::ZeroLimit { name: "max_inflight_bytes" })
        );
        let no_snapshots_accepted = Config { max_snapshot_bytes: 0, ..Config::default() };
        assert_eq!(
            no_snapshots_accepted.validate(),
            Err(ConfigError::ZeroLimit { name: "max_snapshot_bytes" })
        );
        let unused_drift = Config { clock_drift_bound_ms: 1_000, ..Config::default() };
        assert_eq!(unused_drift.validate(), Ok(()), "the drift bound matters only with leases");
        let stall_within_a_heartbeat = Config { max_sync_stall_ms: 100, ..Config::default() };
        assert_eq!(
            stall_within_a_heartbeat.validate(),
            Err(ConfigError::SyncStallNotAboveHeartbeat {
                max_sync_stall_ms: 100,
                heartbeat_ms: 100
            })
        );
        let stall_just_above = Config { max_sync_stall_ms: 101, ..Config::default() };
        assert_eq!(stall_just_above.validate(), Ok(()));
        let stall_detection_off = Config { max_sync_stall_ms: 0, ..Config::default() };
        assert_eq!(stall_detection_off.validate(), Ok(()), "0 turns stall detection off");
        let message = heartbeat_too_slow.validate().unwrap_err().to_string();
        assert!(message.contains("heartbeat"), "{message}");
    }
}
