//! `raft_consensus::client` against an in-process three-node cluster: the client finds the
//! leader from a follower, follows a new leader when the old one shuts down, and a command
//! whose outcome is unknown is retried in its session and applied once (or, outside a
//! session, returned to the caller and not retried). Time is tokio's paused test clock; the
//! tests wait for conditions, never for wall-clock time.

use std::error::Error;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use raft_consensus::client::{
    Client, ClientError, ENVELOPE_TAG, Session, SessionOutcome, SessionTable,
};
use raft_consensus::storage::MemoryStorage;
use raft_consensus::transport::ChannelNetwork;
use raft_consensus::{Config, LogIndex, NodeId, ProposeError, RaftNode, StateMachine};

const DEADLINE: Duration = Duration::from_secs(30);

/// What a node's journal applied: every command, and how many session retries it answered
/// from its table.
#[derive(Debug, Default)]
struct Applied {
    commands: Vec<Vec<u8>>,
    duplicates: usize,
}

impl Applied {
    fn count(&self, command: &[u8]) -> usize {
        self.commands.iter().filter(|applied| applied.as_slice() == command).count()
    }
}

/// Appends every command to a shared list and answers with the list's length. Enveloped
/// commands (the first byte is the envelope tag; plain test commands are ASCII) go through a
/// session table.
struct Journal {
    applied: Arc<Mutex<Applied>>,
    sessions: SessionTable<Vec<u8>>,
}

impl Journal {
    fn push(applied: &Mutex<Applied>, command: &[u8]) -> Vec<u8> {
        let mut applied = applied.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        applied.commands.push(command.to_vec());
        (applied.commands.len() as u64).to_le_bytes().to_vec()
    }
}

impl StateMachine for Journal {
    fn apply(&mut self, command: &[u8]) -> Result<Vec<u8>, Box<dyn Error + Send + Sync>> {
        self.apply_at(LogIndex(0), command)
    }

    fn apply_at(
        &mut self,
        index: LogIndex,
        command: &[u8],
    ) -> Result<Vec<u8>, Box<dyn Error + Send + Sync>> {
        if command.first() != Some(&ENVELOPE_TAG) {
            return Ok(Journal::push(&self.applied, command));
        }
        let applied = Arc::clone(&self.applied);
        match self
            .sessions
            .apply_envelope(index, command, |inner| Journal::push(&applied, inner))?
        {
            SessionOutcome::Applied(result) => Ok(result),
            SessionOutcome::Duplicate(result) => {
                applied.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).duplicates += 1;
                Ok(result)
            }
            refused => Err(format!("session refused: {refused:?}").into()),
        }
    }
}

struct Cluster {
    network: ChannelNetwork,
    nodes: Vec<RaftNode>,
    applied: Vec<Arc<Mutex<Applied>>>,
}

impl Cluster {
    fn start() -> Cluster {
        let members = [NodeId(1), NodeId(2), NodeId(3)];
        let network = ChannelNetwork::new();
        let mut nodes = Vec::new();
        let mut applied = Vec::new();
        for id in members {
            let shared = Arc::new(Mutex::new(Applied::default()));
            let journal =
                Journal { applied: Arc::clone(&shared), sessions: SessionTable::new(100) };
            let node = RaftNode::start(
                id,
                members,
                Config::default(),
                MemoryStorage::new(),
                network.join(id),
                journal,
            )
            .expect("a valid three-node configuration starts");
            nodes.push(node);
            applied.push(shared);
        }
        Cluster { network, nodes, applied }
    }

    /// The leader, as a running node sees it (a node shut down reports no leader).
    async fn leader(&self) -> NodeId {
        let running = self.nodes.iter().find(|node| node.is_running()).expect("a running node");
        let status = running
            .wait_for(DEADLINE, |status| status.leader_id.is_some())
            .await
            .expect("a leader is elected");
        status.leader_id.expect("the status has a leader")
    }

    fn node(&self, id: NodeId) -> &RaftNode {
        &self.nodes[self.position(id)]
    }

    fn position(&self, id: NodeId) -> usize {
        self.nodes.iter().position(|node| node.id() == id).expect("a member of the cluster")
    }

    /// `read` of what node `id` applied.
    fn applied<T>(&self, id: NodeId, read: impl FnOnce(&Applied) -> T) -> T {
        read(
            &self.applied[self.position(id)]
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner()),
        )
    }

    /// A client whose members are listed with `first` first (the member it tries first).
    fn client_starting_at(&self, first: NodeId) -> Client<RaftNode> {
        let mut members: Vec<(NodeId, RaftNode)> =
            self.nodes.iter().map(|node| (node.id(), node.clone())).collect();
        members.sort_by_key(|(id, _)| *id != first);
        Client::new(members).expect("three members")
    }

    async fn shutdown(self) {
        for node in &self.nodes {
            let _ = node.shutdown().await;
        }
    }
}

#[tokio::test(start_paused = true)]
async fn a_client_started_against_a_follower_reaches_the_leader() {
    let cluster = Cluster::start();
    let leader = cluster.leader().await;
    let follower =
        cluster.nodes.iter().map(RaftNode::id).find(|id| *id != leader).expect("two followers");
    let client = cluster.client_starting_at(follower);
    assert_eq!(client.members().next(), Some(follower));
    let result = client.propose(&b"first"[..]).await.expect("the leader takes the command");
    assert_eq!(result, 1u64.to_le_bytes());
    assert_eq!(client.leader(), Some(leader));
    assert_eq!(cluster.applied(leader, |applied| applied.commands.clone()), [b"first".to_vec()]);
    cluster.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn the_client_follows_a_new_leader_when_the_leader_shuts_down() {
    let cluster = Cluster::start();
    let old_leader = cluster.leader().await;
    let client = cluster.client_starting_at(old_leader);
    let mut session = Session::random();
    let commands: Vec<Vec<u8>> = (0..10).map(|i| format!("command {i}").into_bytes()).collect();
    for (i, command) in commands.iter().enumerate() {
        if i == 5 {
            assert_eq!(client.leader(), Some(old_leader));
            cluster.node(old_leader).shutdown().await.expect("a clean shutdown");
        }
        let result = client
            .propose_in_session(&mut session, command)
            .await
            .unwrap_or_else(|error| panic!("command {i}: {error}"));
        assert_eq!(result, (i as u64 + 1).to_le_bytes(), "command {i}");
    }
    let new_leader = client.leader().expect("a leader took the last command");
    assert_ne!(new_leader, old_leader);
    assert_eq!(
        cluster.applied(new_leader, |applied| applied.commands.clone()),
        commands,
        "each applied once, in order"
    );
    cluster.shutdown().await;
}

/// Cuts the leader off from its followers' answers, proposes `command` through `propose` on a
/// client that tries the leader first, waits until both followers hold the entry (which the
/// leader can then never commit itself), and shuts the leader down: its proposal's outcome is
/// unknown, and the followers go on to commit the entry under a new leader. Returns the
/// client's answer, the old leader and a survivor.
async fn propose_as_the_leader_is_cut_off<T, F>(
    cluster: &Cluster,
    propose: impl FnOnce(Arc<Client<RaftNode>>) -> F,
) -> (T, NodeId, NodeId)
where
    F: Future<Output = T> + Send + 'static,
    T: Send + 'static,
{
    let leader = cluster.leader().await;
    let client = Arc::new(cluster.client_starting_at(leader));
    let appended_before = cluster.node(leader).status().last_log_index;
    cluster.network.disconnect(leader);
    let answer = tokio::spawn(propose(Arc::clone(&client)));
    let appended = cluster
        .node(leader)
        .wait_for(DEADLINE, |status| status.last_log_index > appended_before)
        .await
        .expect("the leader appends the command")
        .last_log_index;
    let followers: Vec<NodeId> =
        cluster.nodes.iter().map(RaftNode::id).filter(|id| *id != leader).collect();
    for follower in &followers {
        cluster
            .node(*follower)
            .wait_for(DEADLINE, |status| status.last_log_index >= appended)
            .await
            .expect("the follower appends the entry");
    }
    assert!(
        cluster.node(leader).status().commit_index < appended,
        "the cut-off leader never commits it"
    );
    let _ = cluster.node(leader).shutdown().await;
    let answer = answer.await.expect("the proposing task does not panic");
    (answer, leader, followers[0])
}

#[tokio::test(start_paused = true)]
async fn a_command_retried_after_an_unknown_outcome_is_applied_once() {
    let cluster = Cluster::start();
    let (answer, old_leader, survivor) =
        propose_as_the_leader_is_cut_off(&cluster, |client| async move {
            let mut session = Session::random();
            client.propose_in_session(&mut session, b"once").await
        })
        .await;
    let result = answer.expect("the retry in the session succeeds");
    assert_eq!(result, 1u64.to_le_bytes(), "the result of the first (and only) application");
    // The retry reached the log as a second copy, answered from the session table.
    let status = cluster
        .node(survivor)
        .wait_for(DEADLINE, |status| status.leader_id.is_some_and(|id| id != old_leader))
        .await
        .expect("a new leader");
    let new_leader = status.leader_id.expect("checked above");
    let (once, duplicates) =
        cluster.applied(new_leader, |applied| (applied.count(b"once"), applied.duplicates));
    assert_eq!(once, 1);
    assert_eq!(duplicates, 1, "the retry was applied as a duplicate");
    cluster.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn outside_a_session_an_unknown_outcome_is_returned_and_not_retried() {
    let cluster = Cluster::start();
    let (answer, _old_leader, survivor) =
        propose_as_the_leader_is_cut_off(&cluster, |client| async move {
            client.propose(&b"maybe"[..]).await
        })
        .await;
    let index = match answer {
        Err(ClientError::OutcomeUnknown {
            error: ProposeError::OutcomeUnknown { index }, ..
        }) => index,
        other => panic!("expected OutcomeUnknown, got {other:?}"),
    };
    // The entry commits under the new leader: once, as no retry was sent.
    cluster
        .node(survivor)
        .wait_for(DEADLINE, |status| status.applied_index >= index)
        .await
        .expect("the survivor applies the entry");
    let later = cluster.leader().await;
    let client = cluster.client_starting_at(later);
    client.propose(&b"after"[..]).await.expect("the cluster goes on");
    let leader = client.leader().expect("a leader took the command");
    let after = cluster.node(leader).status().applied_index;
    cluster
        .node(survivor)
        .wait_for(DEADLINE, |status| status.applied_index >= after)
        .await
        .expect("the survivor applies the next command");
    let counts =
        cluster.applied(survivor, |applied| (applied.count(b"maybe"), applied.count(b"after")));
    assert_eq!(counts, (1, 1), "\"maybe\" applied once: the client did not retry it");
    cluster.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn writers_in_flight_when_the_leader_shuts_down_each_apply_every_command_once() {
    let cluster = Cluster::start();
    let old_leader = cluster.leader().await;
    let client = Arc::new(cluster.client_starting_at(old_leader));
    let writers: Vec<_> = (0..3)
        .map(|writer| {
            let client = Arc::clone(&client);
            tokio::spawn(async move {
                let mut session = Session::random();
                for i in 0..20 {
                    let command = format!("writer {writer} command {i}").into_bytes();
                    if let Err(error) = client.propose_in_session(&mut session, &command).await {
                        return Err(format!("writer {writer} command {i}: {error}"));
                    }
                }
                Ok(())
            })
        })
        .collect();
    // Shut the leader down while the writers have commands in flight.
    cluster
        .node(old_leader)
        .wait_for(DEADLINE, |status| status.applied_index.0 >= 15)
        .await
        .expect("the writers make progress");
    cluster.node(old_leader).shutdown().await.expect("a clean shutdown");
    for writer in writers {
        writer.await.expect("the writer does not panic").unwrap_or_else(|error| panic!("{error}"));
    }
    let new_leader = client.leader().expect("a leader took the last commands");
    assert_ne!(new_leader, old_leader);
    for writer in 0..3 {
        for i in 0..20 {
            let command = format!("writer {writer} command {i}").into_bytes();
            let count = cluster.applied(new_leader, |applied| applied.count(&command));
            assert_eq!(count, 1, "writer {writer} command {i}");
        }
    }
    cluster.shutdown().await;
}
