//! A deterministic simulator for Raft clusters (cargo feature `sim`).
//!
//! [`run`] plays one seed: a cluster of 3 to 7 production [`Node`](crate::node::Node)s (the
//! same sans-I/O node that [`RaftNode`](crate::RaftNode) pumps on tokio: protocol core,
//! driver, proposals, restore at start, snapshot policy) on the real write-ahead log
//! ([`WalStorage`](crate::storage::WalStorage)) over a simulated disk, on a virtual clock,
//! with clients reading and writing a key-value store while the simulator injects faults.
//! [`run_workload`] does the same for your own state machine, clients and
//! [`Model`](crate::linearizability::Model): see [`Workload`]. [`run_slow_follower`] plays
//! one fixed scenario instead: a follower far behind, on links much slower than the others',
//! catches up while the cluster keeps committing, and the run reports the bytes the leader
//! sent it against those it needed ([`SlowFollower`]).
//!
//! Faults:
//!
//! - messages lost, duplicated, delayed and reordered;
//! - partitions: symmetric, one-way, and bridged (one node sees both sides), healed later;
//! - crashes and restarts: half are process crashes, after which unsynced bytes are still in
//!   the page cache (and the restarted node reads them), half are power losses, in which
//!   unsynced writes are lost and the last one may be torn at any byte;
//! - failed syncs (the node stops, as a real one must). Nodes store their logs in the real
//!   write-ahead log on a simulated disk. Crashes fall between events and the driver syncs
//!   within one event, so unsynced bytes exist at a crash only after a failed sync: that is
//!   the "power lost during fsync" case, and the crash then keeps any byte-prefix of them;
//! - pauses: a node stops ticking and receiving, then resumes with stale state;
//! - snapshots (unless [`SimConfig::snapshots`] is off): each seed draws small thresholds, so
//!   nodes take and store many snapshots and compact their logs, and leaders send snapshots in
//!   small chunks that the network loses, duplicates and reorders, across leader changes; a
//!   node may go down while storing one (its sync fails before the file is renamed into place,
//!   or it crashes just after, before compacting: [`FaultConfig::snapshot_write_crash`]);
//! - a long outage ([`SimConfig::outage_ms`], [`SimConfig::snapshot_catch_up`]): a follower is
//!   down while thousands of entries are committed and compacted, and rejoins by snapshot;
//! - per seed, besides the fault rates: flow-control limits from the defaults down to one
//!   entry per message, one append in flight and one-byte budgets (per message, and in
//!   flight to a follower); disks whose syncs run one after another and now and then stall
//!   for hundreds of milliseconds (so a leader's own sync can lag far behind its followers');
//!   links with a bandwidth ([`Links`]: a message occupies its link for its wire size over
//!   the bandwidth, and later ones queue behind it); and crashes aimed at nodes with syncs in
//!   flight. A leader whose own sync stalls for
//!   [`Config::max_sync_stall_ms`](crate::Config::max_sync_stall_ms) steps down (see
//!   [`SimReport::stall_step_downs`]);
//! - a leader's disk freezes ([`FaultConfig::leader_disk_freeze`]; about one seed in ten by
//!   default, drawn from a stream of its own): its syncs hang for 0.6 to 2.5 seconds while
//!   its heartbeats could go on, so it must step down and another leader take over
//!   ([`DiskFreezeReport`]);
//! - membership changes ([`SimConfig::membership`]; about two seeds in five by default, drawn
//!   from a stream of their own, so that the other seeds run exactly as they did before):
//!   the cluster starts with 3 to 5 voters, and an operator asks the leader for one change
//!   at a time, whatever the faults: a new node is started on an empty disk with no members,
//!   added as a learner, and made a voter (joint consensus) once it holds the leader's
//!   configuration and its log is within
//!   [`Config::promotion_max_lag`](crate::Config::promotion_max_lag) of the leader's; a
//!   removed node may also rejoin with what its disk holds; voters (the leader too) and
//!   learners are removed; one voter, or a majority of them at once, is replaced through one
//!   joint change; leadership is transferred. Clusters stay within 3 to 7 voters and 7 nodes.
//!   A change the leader refuses (`ChangeInProgress`, `NotCaughtUp`) is retried later: that is
//!   normal. Some seeds favour many learners (with partitions that put the leader and its
//!   learners on one side, the other voters on the other) or replacements (where the old and
//!   the new voters have disjoint majorities). Removed nodes keep running with pre-vote;
//!   without it (where their elections would disrupt the cluster) they are shut down.
//!
//! Every random choice comes from the seed, so a seed *is* a run: the same seed replays the
//! same events, which [`SimReport::trace_hash`] fingerprints. After the workload, the
//! simulator heals every fault, lets the cluster converge, and checks:
//!
//! - election safety: at most one leader per term, across every configuration;
//! - one vote per term: every vote granted is seen as it is sent, and a node that grants two
//!   in one term is reported even if no second leader results;
//! - log matching: two logs that agree on an entry's term agree on everything before it;
//! - state machine safety: every node applies the same command at each index, once, in order;
//! - durability: every acknowledged operation is in every member's log after convergence (or
//!   committed and compacted into its snapshot), and every member's state machine is the same;
//! - linearizability of the client history ([`crate::linearizability`], per-key);
//! - membership: a node removed by a committed configuration never leads a later term, and
//!   nothing it sends in the term of an election it starts afterwards deposes a leader; a
//!   leader refuses a second change while one is under way;
//! - liveness after healing: the members of the leader's configuration converge on one leader
//!   and one commit index, with no change left half done (nodes outside it, removed or never
//!   added, do not count).
//!
//! [`PlantedBug`] switches on a real protocol bug (simulation builds only) to show that these
//! checks catch what they are meant to catch; most are wrappers around a node's storage and
//! state machine (`planted.rs`), outside the production code; the three that only the
//! protocol core can express (committing an earlier term's entry by counting, changing voters
//! without the joint phase, counting learners towards commits) live there behind the `sim`
//! feature. A panic in a run (a safety invariant the node asserts, or a bug anywhere) is
//! caught and reported as a violation of that seed.

mod checks;
mod cluster;
mod describe;
mod disk;
mod journal;
mod kv;
mod links;
mod membership;
mod message_queue;
mod network;
mod planted;
mod preset;
mod rng;
pub mod script;
mod slow_follower;
mod trace;
mod variation;
mod workload;
mod world;

use std::fmt;

pub use checks::Violation;
pub use cluster::{Cluster, EntryFate, Proposal, TICK_STEP_MS};
pub use describe::{describe_command, describe_entry, describe_message};
pub use journal::{AppliedCommand, Journal};
pub use kv::SimKv;
pub use links::{Links, message_size};
pub use membership::MembershipCounts;
pub use preset::{Preset, preset, preset_entry};
pub use rng::SimRng;
pub use slow_follower::{SlowFollower, SlowFollowerReport, run_slow_follower};
pub use workload::{KvWorkload, Workload};

use crate::types::NodeId;

/// How a run is shaped: cluster size, workload and fault rates.
#[derive(Clone, Debug, PartialEq)]
pub struct SimConfig {
    /// Nodes in the cluster at the start (3 or 5 are typical); 0 picks 3 or 5 from the seed (3
    /// to 5 on a seed that changes membership, whose cluster then grows and shrinks).
    pub node_count: usize,
    /// Virtual milliseconds of client traffic (faults are injected during this time).
    pub workload_ms: u64,
    /// Virtual milliseconds the healed cluster gets to converge before that is a violation.
    pub convergence_limit_ms: u64,
    /// Concurrent clients, each with at most one operation outstanding.
    pub clients: usize,
    /// Distinct keys the clients use (a small set makes operations contend).
    pub keys: u8,
    /// How long a client waits for an answer before it records the outcome as unknown.
    pub client_timeout_ms: u64,
    /// Fault rates.
    pub faults: FaultConfig,
    /// A protocol bug to plant, to check that the checks catch it.
    pub planted_bug: Option<PlantedBug>,
    /// Log every simulated event (target `raft_consensus::sim`, level debug).
    pub trace: bool,
    /// Whether the nodes run pre-vote ([`Config::pre_vote`](crate::Config::pre_vote)).
    pub pre_vote: bool,
    /// Whether the nodes take snapshots and compact their logs. Each seed draws its own
    /// thresholds, tail and chunk sizes (small, so runs take many snapshots and send them in
    /// many chunks).
    pub snapshots: bool,
    /// A long outage: early in the workload one follower goes down (a power loss) for this
    /// many virtual milliseconds while the clients keep writing, so that it comes back far
    /// behind a log the others have compacted and must catch up by snapshot. 0: none.
    /// [`SimConfig::snapshot_catch_up`] is a run built around it.
    pub outage_ms: u64,
    /// Which seeds change the cluster's membership while the faults run (see
    /// [`MembershipMode`]).
    pub membership: MembershipMode,
}

/// Which seeds of a run change the cluster's membership: nodes added (as learners, then
/// voters), voters and learners removed, voters replaced (one, or a majority at once), and
/// leadership transferred, one change at a time, under every fault.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum MembershipMode {
    /// Some seeds (about two in five, drawn from the seed) change membership; the others run
    /// exactly as they did before membership changes existed.
    #[default]
    PerSeed,
    /// Every seed changes membership.
    Always,
    /// No seed does.
    Never,
}

impl MembershipMode {
    /// Every mode.
    pub const ALL: [MembershipMode; 3] =
        [MembershipMode::PerSeed, MembershipMode::Always, MembershipMode::Never];

    /// The mode's name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            MembershipMode::PerSeed => "per-seed",
            MembershipMode::Always => "always",
            MembershipMode::Never => "never",
        }
    }

    /// The mode with this command-line name.
    pub fn from_name(name: &str) -> Option<MembershipMode> {
        MembershipMode::ALL.into_iter().find(|mode| mode.name() == name)
    }
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            node_count: 0,
            workload_ms: 6_000,
            convergence_limit_ms: 30_000,
            clients: 4,
            keys: 3,
            client_timeout_ms: 1_000,
            faults: FaultConfig::default(),
            planted_bug: None,
            trace: false,
            pre_vote: true,
            snapshots: true,
            outage_ms: 0,
            membership: MembershipMode::PerSeed,
        }
    }
}

impl SimConfig {
    /// A follower cut off for thousands of entries: a 20-second workload of 8 clients under
    /// light faults, during which one follower is down for 15 seconds while the others
    /// commit and compact what it lacks; it rejoins by snapshot (`raft-sim soak --faults
    /// light --workload-ms 20000 --clients 8 --outage-ms 15000`).
    pub fn snapshot_catch_up() -> SimConfig {
        SimConfig {
            workload_ms: 20_000,
            clients: 8,
            outage_ms: 15_000,
            faults: FaultConfig::light(),
            ..SimConfig::default()
        }
    }
}

/// Fault rates. Probabilities are per message, or per fault round (every
/// `fault_interval_ms` of virtual time) for node and network faults. [`run`] scales them by
/// a per-seed intensity, so some seeds are calm and others stormy.
#[derive(Clone, Debug, PartialEq)]
pub struct FaultConfig {
    /// Probability that a message is lost.
    pub message_loss: f64,
    /// Probability that a message is delivered twice.
    pub message_duplication: f64,
    /// Probability that a message gets an extra delay (so it overtakes or is overtaken).
    pub message_reorder: f64,
    /// Shortest network delay.
    pub min_delay_ms: u64,
    /// Longest ordinary network delay.
    pub max_delay_ms: u64,
    /// Longest extra delay of a reordered message.
    pub reorder_delay_ms: u64,
    /// How often node and network faults are considered.
    pub fault_interval_ms: u64,
    /// Per round: probability of a new partition (symmetric, one-way or bridge).
    pub partition: f64,
    /// Longest a partition lasts.
    pub max_partition_ms: u64,
    /// Per round: probability that a running node crashes.
    pub crash: f64,
    /// Shortest time a crashed node stays down.
    pub min_downtime_ms: u64,
    /// Longest a crashed node stays down.
    pub max_downtime_ms: u64,
    /// Probability that a crash is a process crash, which leaves unsynced bytes in the page
    /// cache (readable after the restart, lost only by a later power loss), rather than a
    /// power loss.
    pub process_crash: f64,
    /// At a crash: probability that part of the unsynced bytes survives (cut at any byte,
    /// so the last record is torn); otherwise all unsynced bytes are lost.
    pub torn_write: f64,
    /// Per round: probability that a node's next sync fails (the node stops; restarted later).
    pub sync_failure: f64,
    /// Per round: probability that a running node pauses.
    pub pause: f64,
    /// Longest pause.
    pub max_pause_ms: u64,
    /// Probability that an answer to a client is lost (the client sees a timeout).
    pub client_response_loss: f64,
    /// Probability that a node goes down while it stores a snapshot it took: half of the
    /// time its sync of the snapshot file fails (before the file is renamed into place), half
    /// of the time just after the snapshot is durable, before the log is compacted behind it.
    /// The crash is a process crash or a power loss, as any other.
    pub snapshot_write_crash: f64,
    /// Probability that a seed freezes its leader's disk once during the workload: the
    /// syncs of the node leading then hang for 0.6 to 2.5 seconds (every sync, those in
    /// flight too; across a restart as well), longer than
    /// [`Config::max_sync_stall_ms`](crate::Config::max_sync_stall_ms). Drawn per seed from
    /// a stream of its own, so seeds without a freeze run as they would without this
    /// setting, and not scaled by the seed's intensity. See [`DiskFreezeReport`].
    pub leader_disk_freeze: f64,
}

impl Default for FaultConfig {
    fn default() -> Self {
        FaultConfig {
            message_loss: 0.03,
            message_duplication: 0.02,
            message_reorder: 0.05,
            min_delay_ms: 1,
            max_delay_ms: 8,
            reorder_delay_ms: 60,
            fault_interval_ms: 100,
            partition: 0.04,
            max_partition_ms: 2_000,
            crash: 0.04,
            min_downtime_ms: 50,
            max_downtime_ms: 1_500,
            process_crash: 0.5,
            torn_write: 0.5,
            sync_failure: 0.005,
            pause: 0.02,
            max_pause_ms: 1_000,
            client_response_loss: 0.02,
            snapshot_write_crash: 0.03,
            leader_disk_freeze: 0.1,
        }
    }
}

impl FaultConfig {
    /// Frequent crashes with short downtimes, failing syncs, partitions and lossy links:
    /// leadership changes hands often, which is where bugs in votes, durability and the commit
    /// rule show. The planted-bug tests use it.
    pub fn crash_storm() -> FaultConfig {
        FaultConfig {
            message_loss: 0.05,
            message_duplication: 0.1,
            message_reorder: 0.1,
            reorder_delay_ms: 300,
            partition: 0.08,
            max_partition_ms: 800,
            crash: 0.3,
            min_downtime_ms: 5,
            max_downtime_ms: 300,
            torn_write: 0.5,
            sync_failure: 0.1,
            pause: 0.05,
            max_pause_ms: 400,
            snapshot_write_crash: 0.15,
            ..FaultConfig::default()
        }
    }

    /// The message faults of the mixed preset with rare partitions, crashes and pauses: the
    /// cluster makes steady progress (thousands of entries in a 20-second workload), as the
    /// long-outage runs of [`SimConfig::snapshot_catch_up`] need.
    pub fn light() -> FaultConfig {
        FaultConfig {
            partition: 0.01,
            crash: 0.01,
            sync_failure: 0.001,
            pause: 0.005,
            ..FaultConfig::default()
        }
    }

    /// The preset's name on the `raft-sim` command line, if these rates are a preset.
    pub fn preset_name(&self) -> Option<&'static str> {
        if *self == FaultConfig::default() {
            Some("mixed")
        } else if *self == FaultConfig::crash_storm() {
            Some("crash-storm")
        } else if *self == FaultConfig::light() {
            Some("light")
        } else {
            None
        }
    }

    /// The preset with this command-line name.
    pub fn preset(name: &str) -> Option<FaultConfig> {
        match name {
            "mixed" => Some(FaultConfig::default()),
            "crash-storm" => Some(FaultConfig::crash_storm()),
            "light" => Some(FaultConfig::light()),
            _ => None,
        }
    }

    /// The same kinds of fault, every rate multiplied by `factor` (the per-seed
    /// [`leader_disk_freeze`](FaultConfig::leader_disk_freeze) stays as it is).
    pub fn scaled(&self, factor: f64) -> FaultConfig {
        let scale = |probability: f64| (probability * factor).clamp(0.0, 1.0);
        FaultConfig {
            message_loss: scale(self.message_loss),
            message_duplication: scale(self.message_duplication),
            message_reorder: scale(self.message_reorder),
            partition: scale(self.partition),
            crash: scale(self.crash),
            torn_write: self.torn_write,
            sync_failure: scale(self.sync_failure),
            pause: scale(self.pause),
            client_response_loss: scale(self.client_response_loss),
            snapshot_write_crash: scale(self.snapshot_write_crash),
            ..self.clone()
        }
    }
}

/// A real protocol bug the simulator can plant, to show that its checks have teeth.
///
/// How often a crash-storm seed catches each one (measured, see `BENCHMARKS.md`):
/// `AcknowledgeBeforeSync` about 5 seeds in 100; `ForgetVoteOnRestart` about 4 in 1,000 with
/// pre-vote off (pre-vote makes two candidates in one term, which it needs, very rare: 0 in
/// 10,000); both are CI tests. `CommitPreviousTermByCounting` about 1 safety violation in 10,000 (it
/// needs Figure 8's exact sequence of crashes). The snapshot bugs (CI tests too):
/// `SnapshotSkipsEntry` about 6 seeds in 100 (27 in 100 with mixed faults; the final
/// state-machine comparison or the apply check catches it), `InstallKeepsConflictingLog`
/// about 6 in 100 (the write-ahead log refuses to reopen: a gap or stale entries under the
/// snapshot's successors). The membership bugs (CI tests too; every seed changes membership
/// when one is planted): `ChangeWithoutJointPhase` about 8 seeds in 100 (12 in 100 with mixed
/// faults: two leaders of one term, a committed entry overwritten, or a removed node that
/// leads), `LearnersCountForCommit` about 2 in 100 (5 in 100 with mixed faults: a committed
/// entry overwritten once the voters the leader left behind elect one of theirs).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PlantedBug {
    /// The leader commits an entry of an earlier term by counting its replicas (Raft Figure 8),
    /// and (not knowing why it is needed) appends no no-op entry when it takes office.
    CommitPreviousTermByCounting,
    /// A node's vote is not restored after a restart, so it can vote twice in one term.
    ForgetVoteOnRestart,
    /// Acknowledgments and votes are sent before the write they promise is synced.
    AcknowledgeBeforeSync,
    /// A follower that restores a snapshot received from the leader takes it to cover one
    /// entry more than it does (an off-by-one): the entry right after the snapshot is never
    /// applied there.
    SnapshotSkipsEntry,
    /// A follower that installs a snapshot its log does not match resets its log in memory
    /// but keeps the stored one (writes no log-reset record): the stale entries stay on disk
    /// under the new ones.
    InstallKeepsConflictingLog,
    /// A leader changes the voters in one step, straight to C_new, without the joint
    /// configuration C_old,new: a majority of the old voters and a majority of the new ones
    /// can then decide apart (in the core, `change_voters`, behind the `sim` feature). Every
    /// seed changes membership when it is planted.
    ChangeWithoutJointPhase,
    /// A leader counts learners towards the commit majority, as if they voted: an entry held
    /// by the leader and its learners commits without a majority of the voters (in the core,
    /// `maybe_commit`, behind the `sim` feature). Every seed changes membership when it is
    /// planted.
    LearnersCountForCommit,
    /// A leader confirms a ReadIndex read at once, without the heartbeat round that proves
    /// it still leads (in the core, `read_index.rs`, behind the `sim` feature): a leader cut
    /// off from its majority serves reads that miss what a newer leader committed.
    ReadWithoutRound,
    /// A follower continues a snapshot transfer with any chunk of a snapshot through the same
    /// entry and of the same length, whoever sends it and in whatever term, and installs it
    /// without checking its checksum (in the core, `snapshot.rs`, behind the `sim` feature):
    /// two leaders' snapshots of one state, encoded differently (the simulator's journal
    /// encodes its records from a node-specific rotation), get spliced. The driver's check
    /// that every chunk it writes belongs to the snapshot under way stops the node
    /// (`tests/snapshot_scenarios.rs` plays the sequence).
    SpliceSnapshotTransfers,
}

impl PlantedBug {
    /// Every planted bug.
    pub const ALL: [PlantedBug; 9] = [
        PlantedBug::CommitPreviousTermByCounting,
        PlantedBug::ForgetVoteOnRestart,
        PlantedBug::AcknowledgeBeforeSync,
        PlantedBug::SnapshotSkipsEntry,
        PlantedBug::InstallKeepsConflictingLog,
        PlantedBug::ChangeWithoutJointPhase,
        PlantedBug::LearnersCountForCommit,
        PlantedBug::ReadWithoutRound,
        PlantedBug::SpliceSnapshotTransfers,
    ];

    /// The bug's name on the command line (kebab-case).
    pub fn name(self) -> &'static str {
        match self {
            PlantedBug::CommitPreviousTermByCounting => "commit-previous-term",
            PlantedBug::ForgetVoteOnRestart => "forget-vote",
            PlantedBug::AcknowledgeBeforeSync => "ack-before-sync",
            PlantedBug::SnapshotSkipsEntry => "snapshot-skips-entry",
            PlantedBug::InstallKeepsConflictingLog => "install-keeps-conflicting-log",
            PlantedBug::ChangeWithoutJointPhase => "change-without-joint",
            PlantedBug::LearnersCountForCommit => "learners-count-for-commit",
            PlantedBug::ReadWithoutRound => "read-without-round",
            PlantedBug::SpliceSnapshotTransfers => "splice-snapshot-transfers",
        }
    }

    /// Whether the bug is in membership changes (a run with it planted changes membership on
    /// every seed).
    pub fn is_membership_bug(self) -> bool {
        matches!(self, PlantedBug::ChangeWithoutJointPhase | PlantedBug::LearnersCountForCommit)
    }

    /// The bug with this command-line name.
    pub fn from_name(name: &str) -> Option<PlantedBug> {
        PlantedBug::ALL.into_iter().find(|bug| bug.name() == name)
    }
}

/// Counts of the faults a run injected, by kind.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FaultCounts {
    /// Messages lost (by chance or to a partition).
    pub messages_dropped: u64,
    /// Messages delivered twice.
    pub messages_duplicated: u64,
    /// Messages given an extra, reordering delay.
    pub messages_reordered: u64,
    /// Partitions started.
    pub partitions: u64,
    /// Node crashes (including nodes stopped by a failed sync).
    pub crashes: u64,
    /// Of those, process crashes (page cache kept); the others were power losses.
    pub process_crashes: u64,
    /// Unsynced bytes lost at crashes.
    pub lost_unsynced_bytes: u64,
    /// Crashes that left part of an unsynced write on disk (a torn record).
    pub torn_writes: u64,
    /// Injected sync failures.
    pub sync_failures: u64,
    /// Node pauses.
    pub pauses: u64,
    /// Client answers lost.
    pub client_responses_lost: u64,
    /// Nodes that went down while storing a snapshot they took (counted in `crashes` too).
    pub snapshot_write_crashes: u64,
    /// Leaders' disks frozen ([`FaultConfig::leader_disk_freeze`]).
    pub disk_freezes: u64,
}

impl FaultCounts {
    /// Adds another run's counts to these.
    pub fn add(&mut self, other: &FaultCounts) {
        self.messages_dropped += other.messages_dropped;
        self.messages_duplicated += other.messages_duplicated;
        self.messages_reordered += other.messages_reordered;
        self.partitions += other.partitions;
        self.crashes += other.crashes;
        self.process_crashes += other.process_crashes;
        self.lost_unsynced_bytes += other.lost_unsynced_bytes;
        self.torn_writes += other.torn_writes;
        self.sync_failures += other.sync_failures;
        self.pauses += other.pauses;
        self.client_responses_lost += other.client_responses_lost;
        self.snapshot_write_crashes += other.snapshot_write_crashes;
        self.disk_freezes += other.disk_freezes;
    }
}

impl fmt::Display for FaultCounts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "dropped {}, duplicated {}, reordered {}, partitions {}, crashes {} ({} process crashes, {} while storing a snapshot), lost unsynced bytes {}, torn writes {}, sync failures {}, pauses {}, client answers lost {}, leader disks frozen {}",
            self.messages_dropped,
            self.messages_duplicated,
            self.messages_reordered,
            self.partitions,
            self.crashes,
            self.process_crashes,
            self.snapshot_write_crashes,
            self.lost_unsynced_bytes,
            self.torn_writes,
            self.sync_failures,
            self.pauses,
            self.client_responses_lost,
            self.disk_freezes
        )
    }
}

/// What the nodes of a run did with snapshots.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SnapshotCounts {
    /// Snapshots a node took of its state machine and stored.
    pub stored: u64,
    /// Snapshots a follower received from a leader and installed.
    pub installed: u64,
}

impl SnapshotCounts {
    /// Adds another run's counts to these.
    pub fn add(&mut self, other: &SnapshotCounts) {
        self.stored += other.stored;
        self.installed += other.installed;
    }
}

impl fmt::Display for SnapshotCounts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} stored, {} installed from a leader", self.stored, self.installed)
    }
}

/// What the long outage of [`SimConfig::outage_ms`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OutageReport {
    /// The follower that went down.
    pub node: NodeId,
    /// How long it was down (virtual milliseconds).
    pub down_ms: u64,
    /// How many entries the cluster committed past the node's last one while it was down.
    pub entries_behind: u64,
    /// Snapshots the node installed from a leader after it came back.
    pub snapshots_installed: u64,
}

/// What the leader's disk freeze of [`FaultConfig::leader_disk_freeze`] did. Times are
/// virtual milliseconds from the moment the disk froze.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DiskFreezeReport {
    /// The leader whose disk froze.
    pub node: NodeId,
    /// The term it was leading.
    pub term: u64,
    /// When the disk froze (virtual time).
    pub frozen_at_ms: u64,
    /// How long its syncs hung.
    pub frozen_ms: u64,
    /// When it stepped down because its disk stalled, if it did while the disk was frozen
    /// (it may have lost leadership another way first: a crash, a partition).
    pub stepped_down_after_ms: Option<u64>,
    /// When a leader of a later term (another node) first committed an entry of its own
    /// term, if one did while the disk was still frozen.
    pub new_leader_commit_after_ms: Option<u64>,
}

/// Counts of client operations by outcome.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OperationCounts {
    /// Answered with a result.
    pub ok: u64,
    /// Definitely not applied (refused by a non-leader).
    pub failed: u64,
    /// Outcome unknown (timeout, lost answer, leadership lost).
    pub unknown: u64,
}

impl OperationCounts {
    /// All operations.
    pub fn total(&self) -> u64 {
        self.ok + self.failed + self.unknown
    }
}

/// What one run did and found.
#[derive(Clone, Debug)]
pub struct SimReport {
    /// The seed.
    pub seed: u64,
    /// Nodes in the cluster.
    pub node_count: usize,
    /// A fingerprint of every event of the run, in order.
    pub trace_hash: u64,
    /// Events processed.
    pub events: u64,
    /// Virtual time at the end of the run.
    pub virtual_ms: u64,
    /// Client operations by outcome.
    pub operations: OperationCounts,
    /// Faults injected.
    pub faults: FaultCounts,
    /// Snapshots taken and stored, and snapshots installed from a leader.
    pub snapshots: SnapshotCounts,
    /// The long outage, when the run had one and the node came back.
    pub outage: Option<OutageReport>,
    /// The membership changes, when the seed made some ([`SimConfig::membership`]).
    pub membership: Option<MembershipCounts>,
    /// The leader's disk freeze, when the seed had one and a leader to freeze.
    pub disk_freeze: Option<DiskFreezeReport>,
    /// Times a leader stepped down because its disk stalled (its oldest sync outstanding for
    /// [`Config::max_sync_stall_ms`](crate::Config::max_sync_stall_ms)), under the seed's
    /// slow syncs or its freeze.
    pub stall_step_downs: u64,
    /// Highest commit index reached.
    pub commit_index: u64,
    /// Whether the linearizability search ran out of budget (neither a pass nor a violation).
    pub linearizability_inconclusive: bool,
    /// Invariant violations found (empty for a correct run).
    pub violations: Vec<Violation>,
}

/// The one-line command that replays `seed` of the built-in key-value workload under
/// `config` with every event logged. (A run of your own [`Workload`] replays by calling
/// [`run_workload`] again with the same seed and `trace: true`.)
///
/// Only the settings `raft-sim` exposes (`planted_bug`, `node_count`, `workload_ms`,
/// `clients`, `pre_vote`, `snapshots`, `outage_ms`, `membership`, a fault preset) are carried
/// over; a run with other settings must be replayed through [`run`].
pub fn replay_command(seed: u64, config: &SimConfig) -> String {
    let mut command = format!(
        "RUST_LOG=debug cargo run --profile sim --features sim --bin raft-sim -- replay --seed {seed}"
    );
    if let Some(bug) = config.planted_bug {
        command.push_str(&format!(" --planted-bug {}", bug.name()));
    }
    if config.node_count != 0 {
        command.push_str(&format!(" --nodes {}", config.node_count));
    }
    if config.workload_ms != SimConfig::default().workload_ms {
        command.push_str(&format!(" --workload-ms {}", config.workload_ms));
    }
    if config.clients != SimConfig::default().clients {
        command.push_str(&format!(" --clients {}", config.clients));
    }
    if config.outage_ms != 0 {
        command.push_str(&format!(" --outage-ms {}", config.outage_ms));
    }
    if !config.pre_vote {
        command.push_str(" --no-pre-vote");
    }
    if !config.snapshots {
        command.push_str(" --no-snapshots");
    }
    if config.membership != MembershipMode::PerSeed {
        command.push_str(&format!(" --membership {}", config.membership.name()));
    }
    match config.faults.preset_name() {
        Some("mixed") => {}
        Some(preset) => command.push_str(&format!(" --faults {preset}")),
        None => command.push_str(" (with custom fault rates)"),
    }
    command
}

/// Runs the simulation for `seed` with the built-in key-value workload ([`KvWorkload`] on
/// [`SimConfig::keys`] keys).
pub fn run(seed: u64, config: &SimConfig) -> SimReport {
    run_workload(seed, config, KvWorkload::new(config.keys))
}

/// Runs the simulation for `seed` with your own state machine, clients and model: see
/// [`Workload`].
pub fn run_workload<W: Workload>(seed: u64, config: &SimConfig, workload: W) -> SimReport {
    world::World::new(seed, config, workload).run()
}
