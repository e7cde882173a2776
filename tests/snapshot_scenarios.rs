//! Deterministic scenarios of snapshots in the sans-I/O core (Raft §7): compaction behind a
//! snapshot, a follower that fell behind the leader's log catching up through InstallSnapshot
//! (with lost and reordered chunks, a leader change and a follower crash mid-transfer), a
//! follower whose log disagrees with the snapshot, and a restart from snapshot plus log tail.
//!
//! Every test drives production [`Node`](raft_consensus::node::Node)s through the
//! simulator's [`Cluster`]: the real write-ahead log (and snapshot files) on simulated disks,
//! virtual time, fixed seeds, and the simulator's safety checks after every step. The state
//! machine is a [`Journal`](raft_consensus::sim::Journal) of applied commands, so "applied
//! the same" means the same commands at the same indexes.

use raft_consensus::core::Role;
use raft_consensus::sim::{Cluster, PlantedBug};
use raft_consensus::{Config, LogIndex, Message, MessageBody, NodeId};

/// Snapshots every few hundred entries' worth, sent in small chunks so that a transfer takes
/// many messages.
fn snapshot_config() -> Config {
    Config {
        snapshot_keep_entries: 50,
        snapshot_chunk_bytes: 512,
        max_inflight_snapshot_chunks: 2,
        ..Config::default()
    }
}

fn is_snapshot_chunk_to(message: &Message, id: u64) -> bool {
    message.to == NodeId(id) && matches!(message.body, MessageBody::InstallSnapshot { .. })
}

/// A follower of `leader` other than `not`.
fn follower_of(cluster: &Cluster, leader: u64, not: &[u64]) -> u64 {
    cluster
        .ids()
        .into_iter()
        .map(|id| id.0)
        .find(|id| *id != leader && !not.contains(id))
        .expect("a three-node cluster has two followers")
}

/// Proposes `count` commands at `leader`, letting time run so they commit.
fn write(cluster: &mut Cluster, leader: u64, first: usize, count: usize) {
    for number in first..first + count {
        cluster
            .propose(leader, format!("command {number}").as_bytes())
            .unwrap_or_else(|error| panic!("proposal {number} refused: {error}"));
        if number % 50 == 0 {
            cluster.advance_time(5);
        }
    }
    let target = cluster.core(leader).last_log_id().index;
    assert!(
        cluster.run_until(5_000, |c| c.core(leader).applied_index() >= target),
        "the leader did not apply its writes:\n{}",
        cluster.describe()
    );
}

/// Runs until `ids` have applied exactly what `leader` applied.
fn converge(cluster: &mut Cluster, leader: u64, ids: &[u64], max_ms: u64) {
    assert!(
        cluster.run_until(max_ms, |c| ids
            .iter()
            .all(|id| c.is_up(*id) && c.applied(*id) == c.applied(leader))),
        "{ids:?} did not converge with node{leader} within {max_ms} ms:\n{}",
        cluster.describe()
    );
}

/// Lets time run with only the first three snapshot chunks to `lagging` delivered: a transfer
/// is under way and not finished.
fn start_a_transfer(cluster: &mut Cluster, lagging: u64) {
    let mut budget = 3;
    // Long enough for a transfer the leader started while the follower was cut off to be
    // found stalled (an election timeout without progress) and resent.
    cluster.advance_time_delivering(1_000, |message| {
        if !is_snapshot_chunk_to(message, lagging) {
            return true;
        }
        let deliver = budget > 0;
        budget -= i32::from(deliver);
        deliver
    });
    assert_eq!(budget, 0, "no transfer started:\n{}", cluster.describe());
    assert_eq!(cluster.core(lagging).applied_index(), LogIndex(0), "the transfer finished");
}

/// The scenario every test starts from: a leader with thousands of entries, one follower cut
/// off since the start, the leader's log compacted behind a snapshot.
fn leader_ahead_of_an_isolated_follower(seed: u64, entries: usize) -> (Cluster, u64, u64) {
    let mut cluster = Cluster::with_config(3, snapshot_config(), seed);
    let leader = cluster.elect_leader(5_000);
    let lagging = follower_of(&cluster, leader, &[]);
    cluster.isolate(lagging);
    write(&mut cluster, leader, 0, entries);
    cluster.take_snapshot(leader);
    let snapshot = cluster.stored_snapshot(leader).expect("the leader stored a snapshot");
    assert_eq!(snapshot.last_included.index, cluster.core(leader).applied_index());
    assert!(
        cluster.core(leader).first_log_index().0 > entries as u64 - 100,
        "the leader's log was not compacted: it starts at {}",
        cluster.core(leader).first_log_index()
    );
    (cluster, leader, lagging)
}

#[test]
fn a_follower_cut_off_for_thousands_of_entries_catches_up_through_a_snapshot() {
    let (mut cluster, leader, lagging) = leader_ahead_of_an_isolated_follower(11, 2_000);
    cluster.heal();
    converge(&mut cluster, leader, &[lagging], 10_000);
    let chunks = cluster.delivered().iter().filter(|m| is_snapshot_chunk_to(m, lagging)).count();
    assert!(chunks > 1, "the snapshot should arrive in several chunks, got {chunks}");
    assert!(
        cluster.core(lagging).first_log_index().0 > 1_900,
        "the follower should hold only the log after the snapshot, it starts at {}",
        cluster.core(lagging).first_log_index()
    );
    // It keeps up from the log afterwards.
    write(&mut cluster, leader, 2_000, 20);
    converge(&mut cluster, leader, &[lagging], 5_000);
}

#[test]
fn a_follower_slightly_behind_catches_up_from_the_kept_log_tail() {
    let mut cluster = Cluster::with_config(3, snapshot_config(), 12);
    let leader = cluster.elect_leader(5_000);
    let lagging = follower_of(&cluster, leader, &[]);
    write(&mut cluster, leader, 0, 500);
    converge(&mut cluster, leader, &[lagging], 5_000);
    cluster.isolate(lagging);
    write(&mut cluster, leader, 500, 20);
    cluster.take_snapshot(leader);
    cluster.heal();
    converge(&mut cluster, leader, &[lagging], 5_000);
    assert!(
        !cluster.delivered().iter().any(|m| is_snapshot_chunk_to(m, lagging)),
        "20 entries behind is within the kept tail of 50: no snapshot should be sent"
    );
}

#[test]
fn lost_and_reordered_chunks_still_deliver_the_snapshot() {
    let (mut cluster, leader, lagging) = leader_ahead_of_an_isolated_follower(13, 1_000);
    cluster.heal();
    cluster.drop_every_nth_message(Some(4));
    cluster.set_reordering(true);
    converge(&mut cluster, leader, &[lagging], 30_000);
    assert!(cluster.dropped_count() > 0);
}

#[test]
fn a_new_leader_mid_transfer_brings_the_follower_up_to_date() {
    let (mut cluster, leader, lagging) = leader_ahead_of_an_isolated_follower(14, 1_000);
    let other = follower_of(&cluster, leader, &[lagging]);
    cluster.take_snapshot(other);
    cluster.heal();
    // Let a few chunks through, then lose the leader.
    start_a_transfer(&mut cluster, lagging);
    cluster.crash(leader);
    assert!(
        cluster.run_until(10_000, |c| c.is_up(other) && c.role(other) == Role::Leader),
        "the other follower should take over:\n{}",
        cluster.describe()
    );
    converge(&mut cluster, other, &[lagging], 10_000);
    cluster.restart(leader);
    converge(&mut cluster, other, &[leader, lagging], 10_000);
}

/// Issue #16's splice: a follower that got the first chunks of one leader's snapshot, then
/// hears a new leader whose snapshot covers the same entry with the same length but other
/// bytes (the simulator's journals encode one state differently on each node), must not put
/// the two together. The new leader continues from where the follower says it stands, so a
/// follower that keyed its transfer by entry and length only would take the old leader's
/// prefix with the new leader's rest. It installs the new leader's snapshot; with the bug
/// planted (`PlantedBug::SpliceSnapshotTransfers`), the node stops on the driver's check that
/// a snapshot is installed from its own bytes only.
fn splice_scenario(plant: bool) -> (Cluster, u64, u64) {
    let (mut cluster, leader, lagging) = leader_ahead_of_an_isolated_follower(14, 1_000);
    let other = follower_of(&cluster, leader, &[lagging]);
    let applied = cluster.core(leader).applied_index();
    assert!(cluster.run_until(5_000, |c| c.core(other).applied_index() == applied));
    cluster.take_snapshot(other);
    let (mine, theirs) = (cluster.stored_snapshot(leader), cluster.stored_snapshot(other));
    assert_eq!(mine, theirs, "both snapshots cover the same entry");
    if plant {
        assert!(cluster.plant_bug(lagging, PlantedBug::SpliceSnapshotTransfers));
    }
    cluster.heal();
    // The old leader's first two chunks arrive; the rest of its transfer is lost.
    cluster.advance_time_delivering(1_000, |message| match &message.body {
        MessageBody::InstallSnapshot { offset, .. } => *offset < 1_024,
        _ => true,
    });
    assert_eq!(cluster.core(lagging).applied_index(), LogIndex(0), "the transfer finished");
    assert!(
        cluster.delivered().iter().any(|m| is_snapshot_chunk_to(m, lagging)),
        "no chunk arrived:\n{}",
        cluster.describe()
    );
    cluster.crash(leader);
    assert!(
        cluster.run_until(10_000, |c| c.is_up(other) && c.role(other) == Role::Leader),
        "the other follower should take over:\n{}",
        cluster.describe()
    );
    (cluster, other, lagging)
}

#[test]
fn a_new_leaders_snapshot_is_not_spliced_onto_the_old_leaders_chunks() {
    let (mut cluster, leader, lagging) = splice_scenario(false);
    converge(&mut cluster, leader, &[lagging], 10_000);
    assert!(cluster.snapshots_installed(lagging) >= 1);
}

#[test]
fn a_planted_splice_of_two_leaders_snapshots_is_caught() {
    let caught = std::panic::catch_unwind(|| {
        let (mut cluster, leader, lagging) = splice_scenario(true);
        converge(&mut cluster, leader, &[lagging], 10_000);
    });
    let message = caught.expect_err("the spliced snapshot went unnoticed");
    let message = message
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| message.downcast_ref::<&str>().map(|text| text.to_string()))
        .unwrap_or_default();
    assert!(message.contains("a snapshot is installed from its own bytes only"), "{message}");
}

#[test]
fn a_follower_that_crashes_mid_transfer_starts_over_and_catches_up() {
    let (mut cluster, leader, lagging) = leader_ahead_of_an_isolated_follower(15, 1_000);
    cluster.heal();
    start_a_transfer(&mut cluster, lagging);
    cluster.crash(lagging);
    cluster.advance_time(300);
    cluster.restart(lagging);
    converge(&mut cluster, leader, &[lagging], 10_000);
}

#[test]
fn a_follower_whose_log_disagrees_with_the_snapshot_drops_it() {
    let mut cluster = Cluster::with_config(3, snapshot_config(), 16);
    let old_leader = cluster.elect_leader(5_000);
    write(&mut cluster, old_leader, 0, 10);
    // The old leader, cut off, appends entries that never commit.
    cluster.isolate(old_leader);
    for number in 0..5 {
        cluster.propose(old_leader, format!("doomed {number}").as_bytes()).expect("still leader");
    }
    let survivor = follower_of(&cluster, old_leader, &[]);
    assert!(
        cluster.run_until(10_000, |c| c.leader().is_some_and(|id| id.0 != old_leader)),
        "the majority should elect a new leader:\n{}",
        cluster.describe()
    );
    let new_leader = cluster.leader().expect("just elected").0;
    assert_ne!(new_leader, old_leader);
    let _ = survivor;
    write(&mut cluster, new_leader, 10, 1_000);
    cluster.take_snapshot(new_leader);
    cluster.heal();
    converge(&mut cluster, new_leader, &[old_leader], 10_000);
    assert!(
        cluster.delivered().iter().any(|m| is_snapshot_chunk_to(m, old_leader)),
        "the old leader needed entries the new one had compacted"
    );
    for (_, _, command) in cluster.applied_ever(old_leader) {
        assert!(!command.starts_with(b"doomed"), "an uncommitted entry was applied");
    }
}

#[test]
fn a_restarted_node_comes_back_from_its_snapshot_and_log_tail() {
    let mut cluster = Cluster::with_config(3, snapshot_config(), 17);
    let leader = cluster.elect_leader(5_000);
    write(&mut cluster, leader, 0, 1_000);
    let follower = follower_of(&cluster, leader, &[]);
    converge(&mut cluster, leader, &[follower], 5_000);
    cluster.take_snapshot(follower);
    write(&mut cluster, leader, 1_000, 30);
    converge(&mut cluster, leader, &[follower], 5_000);
    let applied_before = cluster.applied(follower);
    cluster.crash(follower);
    cluster.restart(follower);
    // Restored from the snapshot, then the committed tail re-applied: the same commands. The
    // write-ahead log compacts whole segments, so the restarted node holds a little more log
    // below its snapshot than the kept tail, but not the start of the log: the state machine
    // cannot have come from replaying it.
    let snapshot_index =
        cluster.stored_snapshot(follower).map_or(0, |meta| meta.last_included.index.0);
    assert!(snapshot_index > 900, "the follower's snapshot covers through {snapshot_index}");
    let first_index = cluster.core(follower).first_log_index().0;
    assert!(first_index > 1 && first_index <= snapshot_index, "the log starts at {first_index}");
    assert!(
        cluster.run_until(5_000, |c| c.applied(follower).len() >= applied_before.len()),
        "the restarted node did not re-apply its log tail:\n{}",
        cluster.describe()
    );
    assert_eq!(cluster.applied(follower)[..applied_before.len()], applied_before[..]);
    converge(&mut cluster, leader, &[follower], 5_000);
}
