//! One test per membership rule of the Raft thesis (chapter 4, and §3.10 for leadership
//! transfer), each named after the sentence it checks, on production nodes in the
//! simulator's [`Cluster`] (the real write-ahead log on simulated disks, manual delivery,
//! fixed seeds, the safety checks after every step). Each fails when its rule is weakened.

use raft_consensus::core::Role;
use raft_consensus::sim::Cluster;
use raft_consensus::{Config, LogIndex, MembershipError, MessageBody, NodeId, ProposeError};

/// A 3-node cluster whose leader is node 1, with its no-op committed everywhere.
fn three_with_leader_1() -> Cluster {
    let mut cluster = Cluster::new(3, 7);
    cluster.campaign(1);
    cluster.stabilize();
    assert_eq!(cluster.role(1), Role::Leader);
    cluster
}

/// Node `id` joins empty and becomes a learner with the whole log.
fn add_caught_up_learner(cluster: &mut Cluster, id: u64) {
    cluster.add_node(id);
    cluster.add_learner(1, id).expect("node 1 leads and no change runs");
    cluster.stabilize();
    assert!(cluster.core(1).configuration().learners().contains(&NodeId(id)));
}

fn voters(cluster: &Cluster, id: u64) -> Vec<u64> {
    cluster.core(id).configuration().voters().iter().map(|voter| voter.0).collect()
}

/// "A server always uses the latest configuration in its log, regardless of whether the
/// entry is committed" (§4.1): a follower uses a configuration entry as soon as it appends it.
#[test]
fn a_configuration_is_used_once_appended_not_once_committed() {
    let mut cluster = three_with_leader_1();
    add_caught_up_learner(&mut cluster, 4);
    cluster.change_voters(1, &[1, 2, 3, 4]).expect("4 has caught up");
    // Deliver the joint entry to node 2 only; no answer reaches the leader yet.
    cluster.deliver_round(|message| message.to == NodeId(2));
    let joint = cluster.core(2).configuration();
    assert!(joint.is_joint(), "node 2 appended C_old,new and uses it: {joint}");
    assert!(cluster.core(2).commit_index() < cluster.core(2).configuration_index());
}

/// "...if its log is truncated, it reverts to the previous configuration" (§4.1): a follower
/// whose uncommitted configuration entry is overwritten by a new leader goes back.
#[test]
fn a_truncated_configuration_entry_is_undone() {
    let mut cluster = Cluster::new(5, 7);
    cluster.campaign(1);
    cluster.stabilize();
    cluster.add_node(6);
    let index = cluster.add_learner(1, 6).expect("no change runs");
    // Only node 2 appends the entry; nobody answers.
    cluster.deliver_round(|message| message.to == NodeId(2));
    cluster.drop_in_flight();
    assert!(cluster.core(2).configuration().learners().contains(&NodeId(6)));
    // Nodes 3, 4 and 5 elect node 3, whose log lacks the entry, and commit its no-op.
    cluster.partition(&[&[1, 2, 6], &[3, 4, 5]]);
    cluster.campaign(3);
    cluster.stabilize();
    assert_eq!(cluster.role(3), Role::Leader);
    // Node 2 hears from node 3: its entry at that index is replaced, and so is the
    // configuration it gave.
    cluster.heal();
    cluster.isolate(1);
    cluster.fire_timer(3);
    cluster.stabilize();
    assert_ne!(
        cluster.log(2)[index.0 as usize - 1].term,
        cluster.log(1)[index.0 as usize - 1].term
    );
    assert!(cluster.core(2).configuration().learners().is_empty(), "reverted to voters only");
    assert_eq!(voters(&cluster, 2), [1, 2, 3, 4, 5]);
}

/// "The leader does not accept a second change until the first one is complete" (the
/// thesis's one-at-a-time rule): an uncommitted or joint configuration refuses a new change
/// with a typed error.
#[test]
fn a_second_change_is_refused_while_one_runs() {
    let mut cluster = three_with_leader_1();
    cluster.add_node(4);
    cluster.add_node(5);
    cluster.add_learner(1, 4).expect("no change runs");
    assert_eq!(cluster.add_learner(1, 5), Err(MembershipError::ChangeInProgress));
    cluster.stabilize();
    cluster.add_learner(1, 5).expect("the first change committed");
    cluster.stabilize();
    cluster.change_voters(1, &[1, 2, 3, 4]).expect("4 has caught up");
    // C_old,new appended: everything else waits until C_new commits.
    assert_eq!(cluster.remove_member(1, 5), Err(MembershipError::ChangeInProgress));
    // C_old,new commits and the leader appends C_new: still running.
    cluster.deliver_round(|_| true);
    cluster.deliver_round(|message| message.to == NodeId(1));
    assert!(cluster.core(1).membership_change_in_progress());
    assert_eq!(cluster.remove_member(1, 5), Err(MembershipError::ChangeInProgress));
    cluster.stabilize();
    assert!(!cluster.core(1).membership_change_in_progress());
    cluster.remove_member(1, 5).expect("the change is complete");
}

/// A learner becomes a voter only once it has caught up (§4.2.1: new servers join as
/// non-voting members until they can catch up): a learner further behind than
/// `promotion_max_lag` is refused with `NotCaughtUp`.
#[test]
fn a_learner_is_promoted_only_once_caught_up() {
    let config = Config { pre_vote: false, promotion_max_lag: 2, ..Config::default() };
    let mut cluster = Cluster::with_config(3, config, 11);
    cluster.campaign(1);
    cluster.stabilize();
    cluster.add_node(4);
    cluster.add_learner(1, 4).expect("no change runs");
    // Node 4 receives nothing while the leader's log grows by 5 entries.
    cluster.partition(&[&[4], &[1, 2, 3]]);
    cluster.stabilize();
    for number in 0..5 {
        cluster.propose(1, format!("write {number}").as_bytes()).expect("node 1 leads");
        cluster.stabilize();
    }
    let refused = cluster.change_voters(1, &[1, 2, 3, 4]);
    assert!(
        matches!(refused, Err(MembershipError::NotCaughtUp { id: NodeId(4), .. })),
        "{refused:?}"
    );
    assert_eq!(voters(&cluster, 1), [1, 2, 3], "nothing was appended");
    cluster.heal();
    cluster.fire_timer(1);
    cluster.stabilize();
    cluster.fire_timer(1);
    cluster.stabilize();
    cluster.change_voters(1, &[1, 2, 3, 4]).expect("node 4 has caught up");
}

/// Learners "do not count towards majorities" (§4.2.1): a leader whose voters have not
/// stored an entry does not commit it, however many learners have.
#[test]
fn learners_never_count_towards_a_commit() {
    let mut cluster = three_with_leader_1();
    add_caught_up_learner(&mut cluster, 4);
    cluster.stabilize();
    add_caught_up_learner(&mut cluster, 5);
    let index = cluster.propose(1, b"only learners store it").expect("node 1 leads");
    // Deliver to the learners only, and their answers.
    cluster.deliver_round(|message| [4, 5].contains(&message.to.0));
    cluster.deliver_round(|message| message.to == NodeId(1));
    assert!(cluster.commit_index(1) < index.0, "two learners and the leader are no majority");
    cluster.stabilize();
    assert!(cluster.commit_index(1) >= index.0);
}

/// Joint consensus (§4.3): in C_old,new, "agreement (for elections and entry commitment)
/// requires separate majorities from both the old and new configurations".
#[test]
fn a_joint_configuration_commits_only_with_both_majorities() {
    let mut cluster = three_with_leader_1();
    add_caught_up_learner(&mut cluster, 4);
    add_caught_up_learner(&mut cluster, 5);
    // Replace nodes 2 and 3 by 4 and 5: C_old = {1,2,3}, C_new = {1,4,5}.
    let joint_index = cluster.change_voters(1, &[1, 4, 5]).expect("both caught up");
    // The new voters store it, the old ones do not: a majority of C_new only.
    cluster.deliver_round(|message| [4, 5].contains(&message.to.0));
    cluster.deliver_round(|message| message.to == NodeId(1));
    assert!(cluster.commit_index(1) < joint_index.0, "C_old has no majority for it");
    cluster.stabilize();
    assert_eq!(voters(&cluster, 1), [1, 4, 5]);
    assert!(!cluster.core(1).configuration().is_joint(), "C_new followed by itself");
}

/// "Once C_new is committed, the leader steps down if it is not part of C_new" (§4.2.2), and
/// not before: until then it manages the cluster.
#[test]
fn a_removed_leader_steps_down_only_once_c_new_commits() {
    let mut cluster = three_with_leader_1();
    cluster.remove_member(1, 1).expect("no change runs");
    cluster.stabilize();
    // C_new is committed: node 1 no longer leads, and someone else does (TimeoutNow).
    assert_ne!(cluster.role(1), Role::Leader);
    assert!(
        cluster.ids().iter().any(|id| id.0 != 1 && cluster.role(id.0) == Role::Leader),
        "{}",
        cluster.describe()
    );
    let mut cluster = three_with_leader_1();
    cluster.remove_member(1, 1).expect("no change runs");
    // Only the joint entry goes out and is answered: the leader still leads (and appends
    // C_new), since C_new is not committed.
    cluster.deliver_round(|_| true);
    cluster.deliver_round(|message| message.to == NodeId(1));
    assert_eq!(cluster.role(1), Role::Leader);
    assert!(cluster.core(1).configuration().voters().iter().all(|voter| voter.0 != 1));
}

/// Servers not in the configuration never start elections (§4.2.2, and §4.2.1 for learners):
/// a learner, a removed node and a node that has not joined yet keep quiet when their
/// election timers fire.
#[test]
fn a_node_that_is_not_a_voter_never_stands() {
    let mut cluster = three_with_leader_1();
    cluster.add_node(4);
    cluster.tick(4, 10_000);
    assert_eq!(cluster.core(4).elections_started(), 0, "a joining node");
    cluster.add_learner(1, 4).expect("no change runs");
    cluster.stabilize();
    cluster.fire_timer(4);
    assert_eq!(cluster.core(4).elections_started(), 0, "a learner");
}

/// "Removed servers ... can disrupt the cluster" unless they are ignored (§4.2.3): with
/// pre-vote (on by default), a removed voter whose election timer fires (it may never have
/// received C_new: the leader stops replicating to it once C_new is appended) cannot move
/// the cluster's term or unseat its leader.
#[test]
fn a_removed_voter_cannot_disrupt_the_cluster() {
    let config = Config { pre_vote: true, ..Config::default() };
    let mut cluster = Cluster::with_config(3, config, 5);
    let leader = cluster.elect_leader(2_000);
    let removed = if leader == 3 { 2 } else { 3 };
    cluster.remove_member(leader, removed).expect("no change runs");
    cluster.stabilize();
    let term = cluster.term(leader);
    for _ in 0..5 {
        cluster.fire_timer(removed);
        cluster.stabilize();
        cluster.fire_timer(leader);
        cluster.stabilize();
    }
    assert_eq!(cluster.role(leader), Role::Leader, "{}", cluster.describe());
    assert_eq!(cluster.term(leader), term, "the cluster's term did not move");
    let remaining: Vec<u64> = [1, 2, 3].into_iter().filter(|id| *id != removed).collect();
    assert_eq!(voters(&cluster, leader), remaining);
}

/// Leadership transfer (§3.10): "the prior leader stops accepting new client requests",
/// brings the target up to date, sends TimeoutNow, and the target wins at once.
#[test]
fn a_transfer_refuses_proposals_and_hands_over() {
    let mut cluster = three_with_leader_1();
    cluster.transfer_leadership(1, 3).expect("node 3 is a voter");
    assert!(matches!(
        cluster.propose(1, b"during the transfer"),
        Err(ProposeError::LeadershipTransfer { target: NodeId(3) })
    ));
    cluster.stabilize();
    assert_eq!(cluster.role(3), Role::Leader);
    let transfer_votes = cluster
        .delivered()
        .iter()
        .filter(|message| {
            matches!(message.body, MessageBody::RequestVote { leadership_transfer: true, .. })
        })
        .count();
    assert_eq!(transfer_votes, 2, "node 3 asked both others, flagged as a transfer");
}

/// "If the transfer does not complete within an election timeout, the prior leader aborts
/// the transfer and resumes accepting client requests" (§3.10).
#[test]
fn a_transfer_that_does_not_complete_is_abandoned() {
    let mut cluster = three_with_leader_1();
    cluster.isolate(3);
    cluster.transfer_leadership(1, 3).expect("node 3 is a voter");
    assert!(cluster.propose(1, b"refused").is_err());
    let timeout = cluster.config().election_timeout_max_ms;
    cluster.tick(1, timeout);
    assert_eq!(cluster.role(1), Role::Leader);
    cluster.propose(1, b"taken again").expect("the transfer was abandoned");
}

/// Only the leader a node follows can hand it leadership: a TimeoutNow from anyone else is
/// ignored (it would let any peer start elections at will).
#[test]
fn a_timeout_now_from_a_node_that_does_not_lead_is_ignored() {
    let mut cluster = three_with_leader_1();
    let term = cluster.term(2);
    cluster.transfer_leadership(1, 2).expect("node 2 is a voter");
    // Rewrite the TimeoutNow as if node 3 had sent it.
    let forged = cluster
        .in_flight()
        .find(|message| matches!(message.body, MessageBody::TimeoutNow))
        .cloned();
    assert!(forged.is_some(), "node 2 was caught up: TimeoutNow went out");
    cluster.drop_in_flight();
    let mut forged = forged.expect("checked above");
    forged.from = NodeId(3);
    cluster.inject(forged);
    cluster.deliver_round(|_| true);
    assert_eq!(cluster.term(2), term, "node 2 did not stand");
    assert_eq!(cluster.core(2).elections_started(), 0);
}

/// A new leader does not change the configuration before an entry of its own term commits
/// (the thesis's fix for changes after a leader change, §4.1): until then it cannot know the
/// latest committed configuration.
#[test]
fn a_new_leader_changes_nothing_before_its_term_commits() {
    let mut cluster = Cluster::new(3, 3);
    cluster.campaign(1);
    // Node 1 wins but its no-op is not committed yet.
    cluster.deliver_round(|_| true);
    cluster.deliver_round(|_| true);
    assert_eq!(cluster.role(1), Role::Leader);
    assert!(cluster.commit_index(1) < cluster.core(1).last_log_id().index.0);
    cluster.add_node(4);
    assert_eq!(cluster.add_learner(1, 4), Err(MembershipError::ChangeInProgress));
    cluster.stabilize();
    assert!(cluster.add_learner(1, 4).is_ok());
    assert_eq!(cluster.core(1).configuration_index(), LogIndex(2));
}

/// A server votes for a candidate that its own configuration does not list (§4.1: a server
/// accepts RequestVote from a server not in its latest configuration): its configuration may
/// lag behind the candidate's. A new voter that has not yet received the entry that promoted
/// it must still vote, or a cluster whose leader fails mid-change could never elect again
/// (the simulator found that case).
#[test]
fn a_voter_grants_a_candidate_its_configuration_does_not_list() {
    let mut cluster = Cluster::new(3, 9);
    cluster.tick(2, 0);
    let last = cluster.core(2).last_log_id();
    let term = cluster.term(2) + 1;
    cluster.inject(raft_consensus::Message {
        from: NodeId(9),
        to: NodeId(2),
        term: raft_consensus::Term(term),
        body: MessageBody::RequestVote { last_log_id: last, leadership_transfer: false },
    });
    cluster.deliver_round(|message| message.to == NodeId(2));
    assert_eq!(cluster.core(2).voted_for(), Some(NodeId(9)));
}

/// Snapshots record the configuration as of their last entry (§4.1, with §5 of the thesis's
/// compaction chapter): a node whose log is compacted past the configuration entries, and
/// one restarted from that snapshot alone, use the configuration the snapshot recorded.
#[test]
fn a_snapshot_carries_the_configuration_at_its_end() {
    let config = Config { pre_vote: false, snapshot_keep_entries: 0, ..Config::default() };
    let mut cluster = Cluster::with_config(3, config, 13);
    cluster.campaign(1);
    cluster.stabilize();
    add_caught_up_learner(&mut cluster, 4);
    cluster.propose(1, b"after the change").expect("node 1 leads");
    cluster.stabilize();
    cluster.fire_timer(1);
    cluster.stabilize();
    cluster.take_snapshot(2);
    let recorded = cluster.stored_snapshot(2).expect("node 2 stored a snapshot").clone();
    assert!(recorded.configuration.learners().contains(&NodeId(4)), "{}", recorded.configuration);
    assert_eq!(recorded.configuration.voters(), &[NodeId(1), NodeId(2), NodeId(3)]);
    assert!(
        cluster.core(2).first_log_index() > cluster.core(2).configuration_index(),
        "the configuration entry is compacted away"
    );
    cluster.crash(2);
    cluster.restart(2);
    assert_eq!(*cluster.core(2).configuration(), recorded.configuration);
}

/// The leader appends C_new only once C_old,new is committed (§4.3), not when earlier
/// entries commit: an entry proposed before the change commits first, and the configuration
/// stays joint until the joint entry itself does.
#[test]
fn c_new_waits_for_c_old_new_to_commit_not_for_earlier_entries() {
    let mut cluster = three_with_leader_1();
    add_caught_up_learner(&mut cluster, 4);
    let earlier = cluster.propose(1, b"before the change").expect("node 1 leads");
    let joint = cluster.change_voters(1, &[1, 2, 3, 4]).expect("4 has caught up");
    assert!(joint > earlier);
    // Only the AppendEntries carrying the earlier entry (not the joint one) are delivered.
    let carries_only_earlier = |message: &raft_consensus::Message| match &message.body {
        MessageBody::AppendEntries { entries, .. } => {
            entries.last().is_some_and(|entry| entry.index == earlier)
        }
        _ => false,
    };
    cluster.deliver_round(carries_only_earlier);
    cluster.deliver_round(|message| message.to == NodeId(1));
    assert!(cluster.commit_index(1) >= earlier.0, "the earlier entry committed");
    assert!(cluster.commit_index(1) < joint.0);
    assert!(cluster.core(1).configuration().is_joint(), "no C_new before C_old,new commits");
    assert_eq!(cluster.core(1).configuration_index(), joint);
}

/// A node that catches up through a snapshot takes the configuration the snapshot recorded
/// (a new node whose log the snapshot replaces learns its membership from it).
#[test]
fn a_node_installing_a_snapshot_takes_its_configuration() {
    let config = Config { pre_vote: false, snapshot_keep_entries: 0, ..Config::default() };
    let mut cluster = Cluster::with_config(3, config, 17);
    cluster.campaign(1);
    cluster.stabilize();
    cluster.add_node(4);
    cluster.isolate(4);
    cluster.add_learner(1, 4).expect("no change runs");
    cluster.propose(1, b"while node 4 is away").expect("node 1 leads");
    cluster.stabilize();
    cluster.take_snapshot(1);
    assert!(cluster.core(1).first_log_index() > cluster.core(1).configuration_index());
    assert!(cluster.core(4).configuration().is_unknown());
    cluster.heal();
    cluster.fire_timer(1);
    cluster.stabilize();
    assert_eq!(cluster.snapshots_installed(4), 1);
    assert_eq!(cluster.core(4).configuration(), cluster.core(1).configuration());
    assert!(cluster.core(4).configuration().learners().contains(&NodeId(4)));
}
