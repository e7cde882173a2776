//! [`Client`]: proposes commands to a cluster through its leader. It knows the members
//! (ids and [`Endpoint`]s), caches the leader, follows `NotLeader` hints, moves on to the next
//! member with exponential backoff and jitter when a member cannot help, and gives up within a
//! [`RetryPolicy`]'s limits with a typed [`ClientError`] carrying the last error seen.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use tokio::time::Instant;

use crate::client::endpoint::{Endpoint, Failure};
use crate::client::session::{Envelope, Session};
use crate::types::NodeId;

/// No leader cached.
const NO_LEADER: usize = usize::MAX;

/// How long and how often a [`Client`] retries one command.
///
/// After an attempt fails, the client tries again at once on a leader named by a `NotLeader`
/// hint (at most as many hops in a row as there are members, so that two members naming each
/// other cannot spin); otherwise it pauses, then tries the next member (in the order given to
/// [`Client::new`]). Pauses start at `first_backoff` and double up to `max_backoff`; each is
/// drawn uniformly from the upper half of the current value (jitter, so that clients do not
/// retry in lockstep). The client gives up after `max_attempts` attempts, or when the next
/// pause would end after `deadline` (counted from the call), and an attempt still running at
/// the deadline is abandoned: the call never takes much longer than `deadline`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// The first pause. Default 10 ms.
    pub first_backoff: Duration,
    /// The longest pause. Default 1 s.
    pub max_backoff: Duration,
    /// The most time one call takes, attempts and pauses together. Default 10 s.
    pub deadline: Duration,
    /// The most attempts one call makes (at least 1). Default 100.
    pub max_attempts: u32,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            first_backoff: Duration::from_millis(10),
            max_backoff: Duration::from_secs(1),
            deadline: Duration::from_secs(10),
            max_attempts: 100,
        }
    }
}

/// A [`Client`] was given no member.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("a client needs at least one member")]
pub struct NoMembers;

/// Why a [`Client`] call did not return the state machine's result. `E` is the
/// [`Endpoint`]'s error.
#[derive(Debug, thiserror::Error)]
pub enum ClientError<E: std::error::Error + 'static> {
    /// A member answered with a [`Failure::Final`] error (the state machine refused the
    /// command, or it is too large): retrying cannot help.
    #[error("{node} refused the command: {error}")]
    Rejected {
        /// The member that answered.
        node: NodeId,
        /// Its error.
        #[source]
        error: E,
    },
    /// The command may or may not have been applied ([`Failure::OutcomeUnknown`]), and the
    /// call was not one that retries such a command ([`Client::propose`]: a retry could
    /// apply it twice).
    #[error(
        "the outcome is unknown, not retried (the command is not deduplicated): {node}: {error}"
    )]
    OutcomeUnknown {
        /// The member that answered.
        node: NodeId,
        /// Its error.
        #[source]
        error: E,
    },
    /// The [`RetryPolicy`]'s attempts or deadline ran out.
    #[error(
        "gave up after {attempts} attempts in {} ms ({}); last error: {}",
        .elapsed.as_millis(),
        if *.outcome_unknown { "an attempt may have been applied" } else { "nothing was applied" },
        describe_last(.last)
    )]
    GaveUp {
        /// Attempts made.
        attempts: u32,
        /// Time spent.
        elapsed: Duration,
        /// Whether an attempt may have been applied: one failed with
        /// [`Failure::OutcomeUnknown`], or was abandoned at the deadline. When `false`, every
        /// attempt promised that the command was not applied.
        outcome_unknown: bool,
        /// The last error, and the member that returned it (`None` when the only attempt
        /// was abandoned at the deadline).
        last: Option<(NodeId, E)>,
    },
}

fn describe_last<E: std::fmt::Display>(last: &Option<(NodeId, E)>) -> String {
    match last {
        Some((node, error)) => format!("{node}: {error}"),
        None => String::from("none (the deadline passed during the first attempt)"),
    }
}

/// Proposes commands to a cluster through its leader, whichever member that is.
///
/// * [`propose`](Self::propose): a command the state machine does not deduplicate. An
///   [`OutcomeUnknown`](Failure::OutcomeUnknown) failure is returned, never retried (a retry
///   could apply it twice).
/// * [`propose_in_session`](Self::propose_in_session): the command is stamped with a
///   [`Session`]'s client id and next sequence number (in an [`Envelope`]) and retried after
///   an unknown outcome; a state machine that checks stamps with a
///   [`SessionTable`](super::SessionTable) applies it once.
/// * [`propose_deduplicated`](Self::propose_deduplicated): bytes the state machine
///   deduplicates itself (stamped in the application's own format, or idempotent), retried
///   like a session's.
///
/// Retries follow the [`RetryPolicy`] (default: [`RetryPolicy::default`]). The leader that
/// last answered is cached and tried first by the next call. Calls may run concurrently
/// (a session's, one at a time).
///
/// ```
/// use std::error::Error;
/// use std::time::Duration;
///
/// use raft_consensus::client::{Client, Session, SessionOutcome, SessionTable};
/// use raft_consensus::storage::MemoryStorage;
/// use raft_consensus::transport::ChannelNetwork;
/// use raft_consensus::{Config, LogIndex, NodeId, RaftNode, StateMachine};
///
/// /// Counts its commands, applying each session request once.
/// #[derive(Default)]
/// struct Counter {
///     count: u64,
///     sessions: SessionTable<Vec<u8>>,
/// }
///
/// impl StateMachine for Counter {
///     fn apply(&mut self, command: &[u8]) -> Result<Vec<u8>, Box<dyn Error + Send + Sync>> {
///         self.apply_at(LogIndex(0), command)
///     }
///
///     fn apply_at(&mut self, index: LogIndex, command: &[u8]) -> Result<Vec<u8>, Box<dyn Error + Send + Sync>> {
///         let outcome = self.sessions.apply_envelope(index, command, |_command| {
///             self.count += 1;
///             self.count.to_le_bytes().to_vec()
///         })?;
///         match outcome {
///             SessionOutcome::Applied(result) | SessionOutcome::Duplicate(result) => Ok(result),
///             refused => Err(format!("refused: {refused:?}").into()),
///         }
///     }
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn Error>> {
/// let members = [NodeId(1), NodeId(2), NodeId(3)];
/// let network = ChannelNetwork::new();
/// let mut nodes = Vec::new();
/// for id in members {
///     let node = RaftNode::start(id, members, Config::default(), MemoryStorage::new(), network.join(id), Counter::default())?;
///     nodes.push(node);
/// }
///
/// // Whichever node leads (or none yet), the client finds it.
/// let client = Client::new(nodes.iter().map(|node| (node.id(), node.clone())))?;
/// let mut session = Session::random();
/// let count = client.propose_in_session(&mut session, b"increment").await?;
/// assert_eq!(count, 1u64.to_le_bytes());
/// assert!(client.leader().is_some());
///
/// for node in &nodes {
///     node.shutdown().await?;
/// }
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct Client<E> {
    members: Vec<(NodeId, E)>,
    policy: RetryPolicy,
    /// The index in `members` of the cached leader, or [`NO_LEADER`].
    leader: AtomicUsize,
    /// The jitter generator's state (SplitMix64).
    jitter: AtomicU64,
}

impl<E: Endpoint> Client<E> {
    /// A client of the cluster whose members are `members` (ids and how to reach them), with
    /// the default [`RetryPolicy`]. Ids should be distinct: a hint names the first member with
    /// its id. No leader is cached yet: the first call starts with the first member.
    pub fn new(members: impl IntoIterator<Item = (NodeId, E)>) -> Result<Self, NoMembers> {
        let members: Vec<(NodeId, E)> = members.into_iter().collect();
        if members.is_empty() {
            return Err(NoMembers);
        }
        Ok(Client {
            members,
            policy: RetryPolicy::default(),
            leader: AtomicUsize::new(NO_LEADER),
            jitter: AtomicU64::new(RandomState::new().hash_one(0u64)),
        })
    }

    /// This client with `policy`.
    pub fn with_policy(mut self, policy: RetryPolicy) -> Self {
        self.policy = policy;
        self
    }

    /// The retry policy.
    pub fn policy(&self) -> &RetryPolicy {
        &self.policy
    }

    /// The members' ids, in the order given.
    pub fn members(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.members.iter().map(|(id, _)| *id)
    }

    /// The cached leader: the member that last took a command, or that a member last named as
    /// leader. `None` before the first call and after the cached leader failed.
    pub fn leader(&self) -> Option<NodeId> {
        let index = self.leader.load(Ordering::Relaxed);
        self.members.get(index).map(|(id, _)| *id)
    }

    /// Proposes `command` through the leader and returns the state machine's result. An
    /// unknown outcome is returned as [`ClientError::OutcomeUnknown`], not retried.
    pub async fn propose(
        &self,
        command: impl Into<Bytes>,
    ) -> Result<Vec<u8>, ClientError<E::Error>> {
        self.run(command.into(), false).await
    }

    /// Proposes `command` under `session`'s next sequence number (wrapped in an [`Envelope`])
    /// and retries it after an unknown outcome: the state machine must check it with a
    /// [`SessionTable`](super::SessionTable) (see
    /// [`apply_envelope`](super::SessionTable::apply_envelope)). The sequence number is used up
    /// whatever the outcome. A [`ClientError::GaveUp`] whose `outcome_unknown` is set may
    /// still have been applied (once).
    pub async fn propose_in_session(
        &self,
        session: &mut Session,
        command: &[u8],
    ) -> Result<Vec<u8>, ClientError<E::Error>> {
        let envelope = Envelope::encode(session.next_stamp(), command);
        self.run(envelope, true).await
    }

    /// Proposes `command`, retrying it after an unknown outcome too: for bytes that the state
    /// machine applies at most once whatever the number of copies in the log (stamped in the
    /// application's own request format and checked with a
    /// [`SessionTable`](super::SessionTable), or idempotent).
    pub async fn propose_deduplicated(
        &self,
        command: impl Into<Bytes>,
    ) -> Result<Vec<u8>, ClientError<E::Error>> {
        self.run(command.into(), true).await
    }

    /// The retry loop (see [`RetryPolicy`]).
    async fn run(
        &self,
        command: Bytes,
        retry_unknown: bool,
    ) -> Result<Vec<u8>, ClientError<E::Error>> {
        let started = Instant::now();
        let deadline = started + self.policy.deadline;
        let max_attempts = self.policy.max_attempts.max(1);
        let mut target = match self.leader.load(Ordering::Relaxed) {
            index if index < self.members.len() => index,
            _ => 0,
        };
        let mut backoff = self.policy.first_backoff;
        let mut hops = 0;
        let mut outcome_unknown = false;
        let mut last = None;
        let mut attempts = 0;
        let gave_up = |attempts, outcome_unknown, last| ClientError::GaveUp {
            attempts,
            elapsed: started.elapsed(),
            outcome_unknown,
            last,
        };
        loop {
            let (node, endpoint) = &self.members[target];
            attempts += 1;
            let Ok(answer) =
                tokio::time::timeout_at(deadline, endpoint.propose(command.clone())).await
            else {
                return Err(gave_up(attempts, true, last));
            };
            let error = match answer {
                Ok(result) => {
                    self.leader.store(target, Ordering::Relaxed);
                    return Ok(result);
                }
                Err(error) => error,
            };
            let hinted = match E::classify(&error) {
                Failure::Final => return Err(ClientError::Rejected { node: *node, error }),
                Failure::OutcomeUnknown if !retry_unknown => {
                    self.forget_leader(target);
                    return Err(ClientError::OutcomeUnknown { node: *node, error });
                }
                Failure::OutcomeUnknown => {
                    outcome_unknown = true;
                    None
                }
                Failure::NotLeader { leader_hint } => leader_hint
                    .and_then(|hint| self.members.iter().position(|(id, _)| *id == hint))
                    .filter(|hinted| *hinted != target),
                Failure::Unavailable => None,
            };
            last = Some((*node, error));
            if attempts >= max_attempts {
                return Err(gave_up(attempts, outcome_unknown, last));
            }
            match hinted {
                Some(hinted) if hops < self.members.len() => {
                    hops += 1;
                    self.leader.store(hinted, Ordering::Relaxed);
                    target = hinted;
                }
                _ => {
                    hops = 0;
                    self.forget_leader(target);
                    target = hinted.unwrap_or((target + 1) % self.members.len());
                    let pause = self.jittered(backoff);
                    if Instant::now() + pause >= deadline {
                        return Err(gave_up(attempts, outcome_unknown, last));
                    }
                    tokio::time::sleep(pause).await;
                    backoff = backoff.saturating_mul(2).min(self.policy.max_backoff);
                }
            }
        }
    }

    /// Forgets the cached leader if it is the member at `index`.
    fn forget_leader(&self, index: usize) {
        let _ =
            self.leader.compare_exchange(index, NO_LEADER, Ordering::Relaxed, Ordering::Relaxed);
    }

    /// A pause drawn uniformly from `[backoff / 2, backoff]`.
    fn jittered(&self, backoff: Duration) -> Duration {
        let half = backoff / 2;
        let span = u64::try_from((backoff - half).as_nanos()).unwrap_or(u64::MAX);
        let draw = self.next_random() % span.saturating_add(1);
        half + Duration::from_nanos(draw)
    }

    /// SplitMix64: a new pseudo-random number from the shared state.
    fn next_random(&self) -> u64 {
        const GAMMA: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut z = self.jitter.fetch_add(GAMMA, Ordering::Relaxed).wrapping_add(GAMMA);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

#[cfg(test)]
mod tests {
    use std::future::Future;
    use std::sync::{Arc, Mutex};

    use super::*;

    /// A scripted error: it is the failure it stands for.
    #[derive(Debug, thiserror::Error)]
    #[error("scripted {0:?}")]
    struct Scripted(Failure);

    /// What a scripted member does with every proposal.
    #[derive(Clone, Copy, Debug)]
    enum Behaviour {
        Answer,
        Fail(Failure),
        Hang,
    }

    /// A member whose proposals follow its behaviour, recording (member, when) in `calls`.
    struct Member {
        id: NodeId,
        behaviour: Behaviour,
        calls: Arc<Mutex<Vec<(NodeId, Instant)>>>,
    }

    impl Endpoint for Member {
        type Error = Scripted;

        fn propose(
            &self,
            command: Bytes,
        ) -> impl Future<Output = Result<Vec<u8>, Scripted>> + Send {
            if let Ok(mut calls) = self.calls.lock() {
                calls.push((self.id, Instant::now()));
            }
            let behaviour = self.behaviour;
            async move {
                match behaviour {
                    Behaviour::Answer => Ok(command.to_vec()),
                    Behaviour::Fail(failure) => Err(Scripted(failure)),
                    Behaviour::Hang => std::future::pending().await,
                }
            }
        }

        fn classify(error: &Scripted) -> Failure {
            error.0
        }
    }

    type Calls = Arc<Mutex<Vec<(NodeId, Instant)>>>;

    fn cluster(behaviours: &[Behaviour]) -> (Client<Member>, Calls) {
        let calls = Calls::default();
        let members = (1..).zip(behaviours).map(|(id, behaviour)| {
            let member =
                Member { id: NodeId(id), behaviour: *behaviour, calls: Arc::clone(&calls) };
            (NodeId(id), member)
        });
        (Client::new(members).expect("three members were given"), calls)
    }

    fn called(calls: &Calls) -> Vec<u64> {
        calls.lock().map(|calls| calls.iter().map(|(id, _)| id.0).collect()).unwrap_or_default()
    }

    fn not_leader(hint: Option<u64>) -> Behaviour {
        Behaviour::Fail(Failure::NotLeader { leader_hint: hint.map(NodeId) })
    }

    #[tokio::test(start_paused = true)]
    async fn a_hint_is_followed_at_once_and_the_leader_is_cached() {
        let (client, calls) =
            cluster(&[not_leader(Some(3)), not_leader(Some(3)), Behaviour::Answer]);
        assert_eq!(client.leader(), None);
        let started = Instant::now();
        assert_eq!(client.propose(&b"x"[..]).await.ok(), Some(b"x".to_vec()));
        assert_eq!(called(&calls), [1, 3], "straight to the hinted leader");
        assert_eq!(started.elapsed(), Duration::ZERO, "no pause before following a hint");
        assert_eq!(client.leader(), Some(NodeId(3)));
        client.propose(&b"y"[..]).await.ok();
        assert_eq!(called(&calls), [1, 3, 3], "the next call starts at the cached leader");
    }

    #[tokio::test(start_paused = true)]
    async fn an_unknown_outcome_is_returned_unless_the_command_is_deduplicated() {
        let unknown = Behaviour::Fail(Failure::OutcomeUnknown);
        let (client, calls) = cluster(&[unknown, Behaviour::Answer, Behaviour::Answer]);
        match client.propose(&b"x"[..]).await {
            Err(ClientError::OutcomeUnknown { node, .. }) => assert_eq!(node, NodeId(1)),
            other => panic!("expected OutcomeUnknown, got {other:?}"),
        }
        assert_eq!(called(&calls), [1], "never retried");
        assert_eq!(client.propose_deduplicated(&b"x"[..]).await.ok(), Some(b"x".to_vec()));
        assert_eq!(called(&calls), [1, 1, 2], "retried on the next member");
        let mut session = Session::new(crate::client::ClientId(5));
        let answer = client.propose_in_session(&mut session, b"y").await.ok();
        let expected = Envelope::encode(
            crate::client::SessionStamp { client: crate::client::ClientId(5), sequence: 1 },
            b"y",
        );
        assert_eq!(answer, Some(expected.to_vec()), "the command went out in its envelope");
        assert_eq!(session.next_sequence(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_final_error_is_returned_at_once() {
        let (client, calls) = cluster(&[Behaviour::Fail(Failure::Final), Behaviour::Answer]);
        assert!(matches!(
            client.propose_deduplicated(&b"x"[..]).await,
            Err(ClientError::Rejected { node: NodeId(1), .. })
        ));
        assert_eq!(called(&calls), [1]);
    }

    #[tokio::test(start_paused = true)]
    async fn it_gives_up_after_max_attempts_with_the_last_error_and_backs_off_with_jitter() {
        let down = Behaviour::Fail(Failure::Unavailable);
        let (client, calls) = cluster(&[down, not_leader(None), down]);
        let policy = RetryPolicy {
            first_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_millis(400),
            deadline: Duration::from_secs(3600),
            max_attempts: 7,
        };
        let client = client.with_policy(policy);
        match client.propose(&b"x"[..]).await {
            Err(ClientError::GaveUp { attempts, outcome_unknown, last, .. }) => {
                assert_eq!(attempts, 7);
                assert!(!outcome_unknown);
                let last = last.map(|(node, error)| (node, error.0));
                assert_eq!(last, Some((NodeId(1), Failure::Unavailable)));
            }
            other => panic!("expected GaveUp, got {other:?}"),
        }
        assert_eq!(called(&calls), [1, 2, 3, 1, 2, 3, 1], "round robin");
        let times: Vec<Instant> =
            calls.lock().map(|calls| calls.iter().map(|(_, at)| *at).collect()).unwrap_or_default();
        let mut backoff = Duration::from_millis(100);
        let mut jittered = 0;
        for pair in times.windows(2) {
            let pause = pair[1] - pair[0];
            assert!(
                pause >= backoff / 2 && pause <= backoff,
                "pause {pause:?} for backoff {backoff:?}"
            );
            jittered += usize::from(pause != backoff);
            backoff = (backoff * 2).min(Duration::from_millis(400));
        }
        // A pause equals its backoff with a chance of about 1 in 10^7 each.
        assert!(jittered >= 5, "pauses are drawn, not fixed: {jittered} of 6 were");
        assert_eq!(client.leader(), None);
    }

    #[tokio::test(start_paused = true)]
    async fn it_gives_up_by_the_deadline() {
        let down = Behaviour::Fail(Failure::Unavailable);
        let (client, _calls) = cluster(&[down, down]);
        let policy = RetryPolicy { deadline: Duration::from_secs(2), ..RetryPolicy::default() };
        let client = client.with_policy(policy);
        let started = Instant::now();
        let error = client.propose(&b"x"[..]).await.err();
        assert!(started.elapsed() <= Duration::from_secs(2), "{:?}", started.elapsed());
        assert!(
            matches!(error, Some(ClientError::GaveUp { outcome_unknown: false, .. })),
            "{error:?}"
        );
        // A member that never answers is abandoned at the deadline: its outcome is unknown.
        let (client, calls) = cluster(&[Behaviour::Hang]);
        let client = client.with_policy(policy_with_deadline(Duration::from_secs(1)));
        let started = Instant::now();
        match client.propose(&b"x"[..]).await {
            Err(ClientError::GaveUp { attempts: 1, outcome_unknown: true, last: None, .. }) => {}
            other => panic!("expected GaveUp with an unknown outcome, got {other:?}"),
        }
        assert_eq!(started.elapsed(), Duration::from_secs(1));
        assert_eq!(called(&calls), [1]);
    }

    fn policy_with_deadline(deadline: Duration) -> RetryPolicy {
        RetryPolicy { deadline, ..RetryPolicy::default() }
    }

    #[tokio::test(start_paused = true)]
    async fn members_naming_each_other_do_not_spin() {
        let (client, calls) = cluster(&[not_leader(Some(2)), not_leader(Some(1))]);
        let policy = RetryPolicy { max_attempts: 12, ..RetryPolicy::default() };
        let client = client.with_policy(policy);
        assert!(client.propose(&b"x"[..]).await.is_err());
        let times: Vec<Instant> =
            calls.lock().map(|calls| calls.iter().map(|(_, at)| *at).collect()).unwrap_or_default();
        assert_eq!(times.len(), 12);
        let mut in_a_row = 1;
        for pair in times.windows(2) {
            in_a_row = if pair[1] == pair[0] { in_a_row + 1 } else { 1 };
            assert!(in_a_row <= 3, "more attempts without a pause than hops allowed (2) plus one");
        }
    }

    #[test]
    fn a_client_needs_a_member() {
        let none: Vec<(NodeId, Member)> = Vec::new();
        assert_eq!(Client::new(none).err(), Some(NoMembers));
    }
}
