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
