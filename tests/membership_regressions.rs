//! Regression tests for core bugs the membership simulator found, each a deterministic
//! reproduction of a failing seed (`raft-sim replay --seed 1021350 --membership always`,
//! `raft-sim replay --seed 2007009`), fixed since. A third (a learner promoted before it
//! held any configuration refused every vote, so a cluster that lost its leader mid-change
//! never elected again) has its rule tested in `tests/membership_rules.rs`. The last test
//! reproduces a bug found in review.

use raft_consensus::core::Role;
use raft_consensus::sim::Cluster;
use raft_consensus::{Config, MembershipError, Message, MessageBody, NodeId};

/// Raft thesis §3.10 and §4.2.3: a leadership transfer that does not complete within an
/// election timeout is abandoned, and a removed server must not disrupt the cluster. A
/// `TimeoutNow` that reaches its target after the transfer was abandoned and after the target
/// was removed (its log, behind, still holds a configuration where it votes) makes it stand
/// for a new term. Its vote request does not pass the leader's lease (only a voter of the
/// leader's configuration may bypass it), and the leader ignores the new term on its answers
/// to appends still in flight (a node outside the leader's configuration cannot depose it);
/// before the fix, the leader stepped down for a node that was not even a member. Found by the
/// simulator: `raft-sim replay --seed 1021350 --membership
/// always` ("node1, removed by a committed configuration, deposed node3, the leader of term 1,
/// with 1->3 AppendEntriesResponse term=2 rejected prev=18 log-too-short first=19").
#[test]
fn a_late_timeout_now_does_not_let_a_removed_node_depose_the_leader() {
    let config = Config { pre_vote: true, ..Config::default() };
    let mut cluster = Cluster::with_config(3, config, 1);
    let leader = cluster.elect_leader(2_000);
    let target = (1..=3).find(|id| *id != leader).unwrap_or(2);
    cluster.transfer_leadership(leader, target).expect("the target is a caught-up voter");
    let is_timeout_now = |message: &Message| matches!(message.body, MessageBody::TimeoutNow);
    assert!(cluster.in_flight().any(is_timeout_now), "TimeoutNow goes out at once");
    // The target is paused (it neither ticks nor hears anything) for a while: the transfer is
    // abandoned after an election timeout, and the leader removes the target.
    let other = (1..=3).find(|id| *id != leader && *id != target).unwrap_or(3);
    let to_target = |message: &Message| message.to == NodeId(target);
    let run_without_target = |cluster: &mut Cluster, ms: u64| {
        for _ in 0..ms / 10 {
            cluster.tick(leader, 10);
            cluster.tick(other, 0);
            cluster.deliver_matching(|message| !to_target(message));
        }
    };
    run_without_target(&mut cluster, 400);
    assert_eq!(cluster.core(leader).leadership_transfer_target(), None, "abandoned");
    cluster.remove_member(leader, target).expect("the leader removes the target");
    run_without_target(&mut cluster, 100);
    assert!(!cluster.core(leader).configuration().is_member(NodeId(target)));
    assert!(!cluster.core(leader).membership_change_in_progress());
    assert_eq!(cluster.core(target).leader_id(), Some(NodeId(leader)));
    let term = cluster.term(leader);

    // The TimeoutNow, sent before all that, arrives at last.
    cluster.deliver_matching(|message| to_target(message) && is_timeout_now(message));
    cluster.stabilize();
    assert_eq!(
        (cluster.role(leader), cluster.term(leader)),
        (Role::Leader, term),
        "the removed node deposed the leader:\n{}",
        cluster.describe()
    );
}

/// A node that joins with an empty disk and catches up by snapshot stores the snapshot file
/// (synced, renamed), then writes a log reset to the snapshot's last index into the
/// write-ahead log, synced with the next flush. A power loss between the two keeps the
/// snapshot and loses the reset. At the restart, the core schedules a log reset only when
/// storage held entries (`stored_log_dropped` in `RaftCore::new`, `core/mod.rs`); the stored
/// log is empty, so none is written, and the entries after the snapshot are appended to a
/// log that still ends at index 0. The next restart refuses the write-ahead log ("entry
/// 142@3 does not continue the log of indexes 1..1" in the simulator: `raft-sim replay
/// --seed 2007009`). Original members rarely meet it (their logs hold entries), joining
/// nodes often do.
#[test]
fn a_joined_node_that_lost_its_log_reset_restarts_after_appending_past_the_snapshot() {
    let config = Config {
        snapshot_after_entries: 0,
        snapshot_after_bytes: 0,
        snapshot_keep_entries: 0,
        ..Config::default()
    };
    let mut cluster = Cluster::with_config(3, Config { pre_vote: false, ..config }, 1);
    let leader = cluster.elect_leader(2_000);
    for number in 0..10 {
        cluster.propose(leader, format!("x={number}").as_bytes()).expect("the leader appends");
        cluster.stabilize();
    }
    cluster.take_snapshot(leader);
    cluster.add_node(4);
    cluster.add_learner(leader, 4).expect("the leader adds a learner");
    let snapshot_to_4 = |message: &Message| {
        message.to == NodeId(4) && matches!(message.body, MessageBody::InstallSnapshot { .. })
    };
    cluster.deliver_matching(|message| !snapshot_to_4(message));
    assert!(cluster.in_flight().any(snapshot_to_4), "{}", cluster.describe());
    // From now on node 4's writes stay unsynced: its snapshot file is durable when written,
    // the log reset that follows it in the write-ahead log is not.
    cluster.hold_syncs(4);
    cluster.stabilize();
    assert_eq!(cluster.snapshots_installed(4), 1, "{}", cluster.describe());
    cluster.crash(4);
    cluster.restart(4);
    // The leader catches node 4 up after the snapshot: it appends, and syncs.
    cluster.propose(leader, b"after").expect("the leader appends");
    cluster.fire_timer(leader);
    cluster.stabilize();
    cluster.fire_timer(leader);
    cluster.stabilize();
    assert!(cluster.core(4).last_log_id().index > cluster.core(4).first_log_index());
    cluster.crash(4);
    // Panics today: "node4 reopens its write-ahead log: ... does not continue the log".
    cluster.restart(4);
    assert_eq!(cluster.core(4).last_log_id(), cluster.core(leader).last_log_id());
}

/// A leader's pending change that a later leader overwrote must not be reported complete
/// because some *other* configuration at a later index committed (`Node::change_outcome`;
/// found in review: the waiting client was told its change had succeeded).
#[test]
fn a_change_overwritten_by_another_leader_is_not_reported_complete() {
    let mut cluster = Cluster::new(3, 7);
    cluster.campaign(1);
    cluster.stabilize();
    assert_eq!(cluster.role(1), Role::Leader);
    cluster.add_node(4);
    cluster.add_node(5);
    // Node 1 appends "add learner 4"; nobody receives it.
    cluster.isolate(1);
    let index = cluster.add_learner(1, 4).expect("node 1 leads, no change runs");
    cluster.stabilize();
    cluster.drop_in_flight();
    // Nodes 2 and 3 elect node 2, which adds learner 5 (a different change) at a later index.
    cluster.campaign(2);
    cluster.stabilize();
    assert_eq!(cluster.role(2), Role::Leader);
    let other = cluster.add_learner(2, 5).expect("node 2 leads with its no-op committed");
    assert!(other > index);
    cluster.stabilize();
    assert!(cluster.core(2).commit_index() >= other);
    assert_eq!(cluster.role(1), Role::Leader, "node 1 has heard nothing yet");
    // Node 1 hears node 2's probe carrying the whole suffix, and nothing else first.
    cluster.heal();
    cluster.fire_timer(2);
    cluster.deliver_round(|m| m.from == NodeId(2) && m.to == NodeId(1));
    assert_ne!(cluster.role(1), Role::Leader);
    assert!(!cluster.core(1).configuration().learners().contains(&NodeId(4)), "4 was never added");
    let outcome = cluster.change_outcome(1, index);
    assert!(
        matches!(outcome, Some(Err(MembershipError::OutcomeUnknown { .. }))),
        "the change adding learner 4 was overwritten, yet its outcome is {outcome:?}"
    );
}
