//! Deterministic simulation: many seeds of a cluster under mixed faults, each checked for
//! election safety, log matching, state machine safety, durability of acknowledged writes,
//! linearizability and convergence after healing (see `raft_consensus::sim`), some of them
//! changing membership under the faults. Also: a seed replays exactly, and a planted protocol
//! bug is caught.
//!
//! Longer soaks: `cargo run --profile sim --features sim --bin raft-sim -- soak --seeds 100000`.

use std::sync::Mutex;

use raft_consensus::sim::{
    self, DiskFreezeReport, FaultConfig, MembershipCounts, MembershipMode, PlantedBug, SimConfig,
    SimReport, SnapshotCounts,
};

/// Seeds of mixed faults every `cargo test` runs.
const CI_SEEDS: u64 = 520;

/// Runs `seeds` on every core and returns the reports, ordered by seed.
fn run_seeds(seeds: std::ops::Range<u64>, config: &SimConfig) -> Vec<SimReport> {
    let next = Mutex::new(seeds.clone());
    let reports = Mutex::new(Vec::new());
    let threads = std::thread::available_parallelism().map_or(2, |count| count.get());
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| {
                loop {
                    let Some(seed) = next.lock().expect("no worker panics holding it").next()
                    else {
                        break;
                    };
                    let report = sim::run(seed, config);
                    reports.lock().expect("no worker panics holding it").push(report);
                }
            });
        }
    });
    let mut reports = reports.into_inner().expect("workers are done");
    reports.sort_by_key(|report| report.seed);
    reports
}

fn describe_failures(reports: &[SimReport], config: &SimConfig) -> String {
    let mut text = String::new();
    for report in reports.iter().filter(|report| !report.violations.is_empty()) {
        text.push_str(&format!("seed {}:\n", report.seed));
        for violation in &report.violations {
            text.push_str(&format!("  {violation}\n"));
        }
        text.push_str(&format!("  replay: {}\n", sim::replay_command(report.seed, config)));
    }
    text
}

/// Every invariant holds across hundreds of seeds of message loss, duplication, reordering,
/// partitions (symmetric, one-way, bridge), crashes with lost and torn unsynced writes,
/// failed syncs and pauses.
#[test]
fn mixed_fault_seeds_hold_every_invariant() {
    let config = SimConfig::default();
    let reports = run_seeds(0..CI_SEEDS, &config);
    assert_eq!(reports.len() as u64, CI_SEEDS);
    let failures = describe_failures(&reports, &config);
    assert!(failures.is_empty(), "invariant violations:\n{failures}");
    // The runs did real work under real faults (guards against a simulator that does nothing).
    let operations: u64 = reports.iter().map(|report| report.operations.ok).sum();
    let crashes: u64 = reports.iter().map(|report| report.faults.crashes).sum();
    let partitions: u64 = reports.iter().map(|report| report.faults.partitions).sum();
    let torn: u64 = reports.iter().map(|report| report.faults.torn_writes).sum();
    assert!(operations > CI_SEEDS * 100, "only {operations} operations succeeded");
    assert!(crashes > CI_SEEDS, "only {crashes} crashes");
    assert!(partitions > CI_SEEDS / 2, "only {partitions} partitions");
    assert!(torn > 0, "no torn write was ever injected");
    let snapshots = reports.iter().fold(SnapshotCounts::default(), |mut total, report| {
        total.add(&report.snapshots);
        total
    });
    assert!(snapshots.stored > CI_SEEDS * 5, "only {} snapshots stored", snapshots.stored);
    assert!(
        snapshots.installed > CI_SEEDS / 10,
        "only {} snapshots installed",
        snapshots.installed
    );
    let inconclusive = reports.iter().filter(|report| report.linearizability_inconclusive).count();
    assert!(inconclusive * 100 <= reports.len(), "{inconclusive} runs were too hard to check");
    // About one seed in ten froze its leader's disk; leaders stepped down for stalled disks
    // (frozen ones, and the slow syncs some seeds draw).
    let freezes: u64 = reports.iter().map(|report| report.faults.disk_freezes).sum();
    let stall_step_downs: u64 = reports.iter().map(|report| report.stall_step_downs).sum();
    assert!((CI_SEEDS / 20..=CI_SEEDS / 5).contains(&freezes), "{freezes} disk freezes");
    assert!(stall_step_downs > freezes / 2, "only {stall_step_downs} stall step-downs");
    // About two seeds in five changed membership; the others ran as they always did.
    let changing = reports.iter().filter(|report| report.membership.is_some()).count() as u64;
    assert!(
        (CI_SEEDS / 4..=CI_SEEDS / 2).contains(&changing),
        "{changing} of {CI_SEEDS} seeds changed membership"
    );
}

/// The membership counts of `reports`, summed.
fn membership_totals(reports: &[SimReport]) -> MembershipCounts {
    let mut total = MembershipCounts::default();
    for report in reports {
        total.add(
            &report
                .membership
                .unwrap_or_else(|| panic!("seed {} made no membership change", report.seed)),
        );
    }
    total
}

/// Every invariant holds while the membership changes under the faults: nodes started empty
/// join as learners and become voters once caught up, voters and learners are removed (the
/// leader too), one voter or a majority of them are replaced through one joint change, and
/// leadership is transferred; removed nodes keep running and never lead nor depose a leader.
#[test]
fn membership_change_seeds_hold_every_invariant() {
    let config = SimConfig { membership: MembershipMode::Always, ..SimConfig::default() };
    let reports = run_seeds(20_000..20_120, &config);
    let failures = describe_failures(&reports, &config);
    assert!(failures.is_empty(), "invariant violations:\n{failures}");
    let total = membership_totals(&reports);
    assert!(total.completed > 300, "only {} plans completed: {total}", total.completed);
    assert!(total.nodes_started > 100, "{total}");
    assert!(total.learners_added > 200 && total.voter_changes > 100, "{total}");
    assert!(total.removals > 50 && total.transfers > 50, "{total}");
    // The leaders refused what they must: a second change, a learner not caught up.
    assert!(total.refused_in_progress > 0 && total.refused_not_caught_up > 0, "{total}");
    assert_eq!(total.refused_invalid, 0, "the simulator asked for invalid changes: {total}");
    let operations: u64 = reports.iter().map(|report| report.operations.ok).sum();
    assert!(operations > 120 * 100, "only {operations} operations succeeded");
}

/// Membership changes under a crash storm, with pre-vote and with the classic election
/// (where removed nodes are shut down: they would disrupt the cluster with their elections).
#[test]
fn membership_changes_under_a_crash_storm_hold_every_invariant() {
    for pre_vote in [true, false] {
        let config = SimConfig {
            faults: FaultConfig::crash_storm(),
            membership: MembershipMode::Always,
            pre_vote,
            ..SimConfig::default()
        };
        let reports = run_seeds(30_000..30_060, &config);
        let failures = describe_failures(&reports, &config);
        assert!(failures.is_empty(), "invariant violations:\n{failures}");
        let total = membership_totals(&reports);
        assert!(total.completed > 100 && total.voter_changes > 20, "{total}");
    }
}

/// A membership seed replays exactly too.
#[test]
fn a_membership_seed_replays_exactly() {
    let config = SimConfig { membership: MembershipMode::Always, ..SimConfig::default() };
    for seed in [5, 600] {
        let first = sim::run(seed, &config);
        let second = sim::run(seed, &config);
        assert!(first.membership.is_some_and(|counts| counts.plans > 0), "seed {seed}");
        assert_eq!(first.trace_hash, second.trace_hash, "seed {seed} did not replay");
        assert_eq!(first.events, second.events);
        assert_eq!(first.membership, second.membership);
        assert_eq!(first.violations, second.violations);
    }
    let command = sim::replay_command(5, &config);
    assert!(command.ends_with("--seed 5 --membership always"), "{command}");
}

/// A crash storm (frequent crashes, failed syncs) holds every invariant too, with pre-vote
/// and with the classic election.
#[test]
fn crash_storm_seeds_hold_every_invariant() {
    for pre_vote in [true, false] {
        let config =
            SimConfig { faults: FaultConfig::crash_storm(), pre_vote, ..SimConfig::default() };
        let reports = run_seeds(10_000..10_100, &config);
        let failures = describe_failures(&reports, &config);
        assert!(failures.is_empty(), "invariant violations:\n{failures}");
        // Nodes went down while storing snapshots (a failed sync before the rename, or just
        // after the file was durable, before compaction) and recovered from what that left.
        let interrupted: u64 =
            reports.iter().map(|report| report.faults.snapshot_write_crashes).sum();
        let stored: u64 = reports.iter().map(|report| report.snapshots.stored).sum();
        // (About 11 in 100 seeds, since two gets in three are served without a log entry;
        // membership seeds, two in five, vary it.)
        assert!(interrupted >= 8, "only {interrupted} snapshot writes were interrupted");
        assert!(stored > interrupted * 2, "only {stored} snapshots stored");
    }
}

/// A follower cut off for hundreds or thousands of entries (down 15 virtual seconds while 8 clients write
/// and the others compact their logs behind small, frequent snapshots) comes back, catches up
/// by snapshot, and the cluster converges with every invariant held. The same runs:
/// `raft-sim soak --start-seed 2 --seeds 4 --faults light --workload-ms 20000 --clients 8
/// --outage-ms 15000`.
#[test]
fn a_follower_cut_off_for_thousands_of_entries_catches_up_by_snapshot() {
    let config = SimConfig::snapshot_catch_up();
    let reports = run_seeds(2..6, &config);
    let failures = describe_failures(&reports, &config);
    assert!(failures.is_empty(), "invariant violations:\n{failures}");
    for report in &reports {
        let outage = report
            .outage
            .unwrap_or_else(|| panic!("seed {}: the outage node never came back", report.seed));
        assert_eq!(outage.down_ms, config.outage_ms, "seed {}", report.seed);
        // Far more than the at most 50 entries a node keeps behind its snapshot (about 290
        // to 1,500, 506 on average over seeds 2 to 5: reads served without log entries write
        // none).
        assert!(
            outage.entries_behind >= 200,
            "seed {}: only {} entries behind",
            report.seed,
            outage.entries_behind
        );
        assert!(
            outage.snapshots_installed > 0 && report.snapshots.installed > 0,
            "seed {}: {} came back {} entries behind but installed no snapshot",
            report.seed,
            outage.node,
            outage.entries_behind
        );
    }
    let command = sim::replay_command(reports[0].seed, &config);
    assert!(command.contains("--outage-ms 15000 --faults light"), "{command}");
}

/// A leader whose disk freezes (its syncs hang for 0.6 to 2.5 virtual seconds while its
/// heartbeats could go on) steps down once its oldest write has waited
/// `Config::max_sync_stall_ms`, and another leader commits while the disk is still frozen;
/// every invariant holds, linearizability included. Light faults, so that the freeze is the
/// main event of each run.
#[test]
fn a_leader_whose_disk_freezes_steps_down_and_another_commits_meanwhile() {
    let faults = FaultConfig { leader_disk_freeze: 1.0, ..FaultConfig::light() };
    let config = SimConfig { faults, ..SimConfig::default() };
    let reports = run_seeds(30_000..30_060, &config);
    let failures = describe_failures(&reports, &config);
    assert!(failures.is_empty(), "invariant violations:\n{failures}");
    let freezes: Vec<DiskFreezeReport> =
        reports.iter().filter_map(|report| report.disk_freeze).collect();
    assert_eq!(freezes.len(), reports.len(), "a seed found no leader to freeze");
    let mut stepped_down: Vec<u64> =
        freezes.iter().filter_map(|freeze| freeze.stepped_down_after_ms).collect();
    let mut taken_over: Vec<u64> =
        freezes.iter().filter_map(|freeze| freeze.new_leader_commit_after_ms).collect();
    stepped_down.sort_unstable();
    taken_over.sort_unstable();
    let median = |values: &[u64]| values.get(values.len() / 2).copied().unwrap_or(0);
    println!(
        "{} freezes: {} leaders stepped down for it (median {} ms after the freeze, at most {} ms), another leader committed in {} (median {} ms, at most {} ms)",
        freezes.len(),
        stepped_down.len(),
        median(&stepped_down),
        stepped_down.last().copied().unwrap_or(0),
        taken_over.len(),
        median(&taken_over),
        taken_over.last().copied().unwrap_or(0),
    );
    // Measured over these seeds: 52 of 60 stepped down for the stall (median 302 ms after the
    // freeze: the oldest write may predate it); most others had already lost leadership to
    // an election (a leader with 16 syncs waiting hands out no more work, heartbeats
    // included). Another leader committed in 59 (median 429 ms), all but one within the
    // freeze's last 20 ms.
    assert!(stepped_down.len() * 4 >= freezes.len() * 3, "too few leaders stepped down");
    assert!(taken_over.len() * 10 >= freezes.len() * 9, "too few freezes saw another leader");
    let two_election_timeouts = 2 * raft_consensus::Config::default().election_timeout_max_ms;
    assert!(median(&taken_over) <= two_election_timeouts, "{taken_over:?}");
}

/// The same seed gives the same run, event for event; another seed gives another run.
#[test]
fn a_seed_replays_exactly() {
    let config = SimConfig::default();
    for seed in [3, 77, 1234] {
        let first = sim::run(seed, &config);
        let second = sim::run(seed, &config);
        assert_eq!(first.trace_hash, second.trace_hash, "seed {seed} did not replay");
        assert_eq!(first.events, second.events);
        assert_eq!(first.operations, second.operations);
        assert_eq!(first.faults, second.faults);
    }
    assert_ne!(sim::run(3, &config).trace_hash, sim::run(4, &config).trace_hash);
}

/// Runs crash-storm seeds with `bug` planted until one reports a violation, checks that the
/// failing seed replays bit for bit with the same violations, and returns its replay command.
fn assert_planted_bug_is_caught(
    bug: PlantedBug,
    pre_vote: bool,
    seeds: std::ops::Range<u64>,
) -> String {
    let config = SimConfig {
        faults: FaultConfig::crash_storm(),
        planted_bug: Some(bug),
        pre_vote,
        ..SimConfig::default()
    };
    let command = assert_caught(&config, seeds);
    assert!(command.contains("--faults crash-storm"), "{command}");
    command
}

/// Runs seeds of `config` (which plants a bug) until one reports a violation, checks that
/// the failing seed replays bit for bit with the same violations, and returns its replay
/// command.
fn assert_caught(config: &SimConfig, seeds: std::ops::Range<u64>) -> String {
    let config = config.clone();
    let bug = config.planted_bug.expect("a planted bug");
    // A few seeds per core at a time, stopping at the first batch that catches the bug.
    let batch = 4 * std::thread::available_parallelism().map_or(2, |count| count.get()) as u64;
    let mut start = seeds.start;
    let failing = loop {
        assert!(start < seeds.end, "the planted bug {bug:?} was not caught in seeds {seeds:?}");
        let end = (start + batch).min(seeds.end);
        let reports = run_seeds(start..end, &config);
        if let Some(report) = reports.into_iter().find(|report| !report.violations.is_empty()) {
            break report;
        }
        start = end;
    };
    let replayed = sim::run(failing.seed, &config);
    assert_eq!(replayed.trace_hash, failing.trace_hash);
    assert_eq!(replayed.violations, failing.violations);
    let command = sim::replay_command(failing.seed, &config);
    assert!(command.contains(&format!("--seed {}", failing.seed)), "{command}");
    assert!(command.contains(&format!("--planted-bug {}", bug.name())), "{command}");
    command
}

/// A planted snapshot bug (a follower restoring a snapshot from the leader takes it to cover
/// one entry more, and never applies that entry) is reported within a bounded number of seeds
/// (measured: 63 of 1,000 crash-storm seeds, 271 of 1,000 mixed), and the failing seed replays.
#[test]
fn a_planted_snapshot_skips_entry_bug_is_caught_and_replays() {
    assert_planted_bug_is_caught(PlantedBug::SnapshotSkipsEntry, true, 0..300);
}

/// A planted snapshot bug (a follower installing a snapshot its log does not match keeps its
/// stored log, writing no log-reset record) is reported within a bounded number of seeds
/// (measured: 64 of 1,000 crash-storm seeds), and the failing seed replays.
#[test]
fn a_planted_install_keeps_conflicting_log_bug_is_caught_and_replays() {
    assert_planted_bug_is_caught(PlantedBug::InstallKeepsConflictingLog, true, 0..300);
}

/// A planted durability bug (acknowledgments and votes sent before their write is synced) is
/// reported within a bounded number of seeds, and the failing seed replays exactly.
#[test]
fn a_planted_acknowledge_before_sync_bug_is_caught_and_replays() {
    assert_planted_bug_is_caught(PlantedBug::AcknowledgeBeforeSync, true, 0..300);
}

/// A planted election bug (a node forgets its vote across a restart, so it can vote twice in
/// one term) is reported within a bounded number of seeds, and the failing seed replays. It
/// needs two candidates in one term, which pre-vote makes very rare, so it runs without it.
/// Measured over crash-storm seeds 0..3000: the one-vote-per-term check catches 261; election
/// safety alone (two leaders in a term) caught 11.
#[test]
fn a_planted_forget_vote_bug_is_caught_and_replays() {
    let command = assert_planted_bug_is_caught(PlantedBug::ForgetVoteOnRestart, false, 0..600);
    assert!(command.contains("--no-pre-vote"), "{command}");
}

/// A planted membership bug (the leader changes the voters straight to C_new, without the
/// joint configuration) is reported within a bounded number of seeds (measured: 79 of 1,000
/// crash-storm seeds, 119 of 1,000 mixed; a voter replaced, or a majority of them, gives the
/// old and the new voters disjoint majorities: two leaders of one term, or a committed
/// entry overwritten), and the failing seed replays.
#[test]
fn a_planted_change_without_joint_bug_is_caught_and_replays() {
    assert_planted_bug_is_caught(PlantedBug::ChangeWithoutJointPhase, true, 0..100);
}

/// A planted membership bug (the leader counts its learners towards the commit majority) is
/// reported within a bounded number of seeds (measured: 21 of 1,000 crash-storm seeds, 52 of
/// 1,000 mixed: it needs the leader and its learners cut off from the other voters, then a
/// leader elected among those, which overwrites what the first one committed), and the
/// failing seed replays.
#[test]
fn a_planted_learners_count_for_commit_bug_is_caught_and_replays() {
    assert_planted_bug_is_caught(PlantedBug::LearnersCountForCommit, true, 0..150);
}

/// A planted read bug (a leader confirms ReadIndex reads without the heartbeat round that
/// proves it still leads) is caught by the linearizability check: a leader cut off by a
/// partition serves reads that miss what the new leader committed.
///
/// The window is narrow (the cut-off leader steps down once a check-quorum period passes
/// without a majority, and a follower's own request already proves what a round would in a
/// cluster of three), so few seeds catch it: of seeds 0 to 1,499, of three nodes and eight
/// clients, 734, 899 and 1,480 do. The range starts at 700 to keep the test short. (Before a
/// commit index alone stopped being synced, issue #17, seeds 308 and 339 were the first;
/// before flow control changed the traffic, issue #16, seed 28.)
#[test]
fn a_planted_read_without_round_bug_is_caught_and_replays() {
    let config = SimConfig {
        planted_bug: Some(PlantedBug::ReadWithoutRound),
        node_count: 3,
        clients: 8,
        ..SimConfig::default()
    };
    let command = assert_caught(&config, 700..1000);
    assert!(
        command.contains("--nodes 3 --clients 8") || command.contains("--clients 8"),
        "{command}"
    );
}
