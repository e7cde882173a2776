//! [`SessionTable`]: the state machine's side of retry deduplication. For each client it
//! keeps the last sequence number applied, a digest of that request's command, the log index
//! at which it was applied and its result, so that a retry (the same [`SessionStamp`], sent
//! again after [`ProposeError::OutcomeUnknown`](crate::ProposeError::OutcomeUnknown)) is
//! answered with the kept result instead of being applied twice.
//!
//! The rules, for a request stamped `(client, sequence)` with command digest `d`:
//!
//! | the client's last applied request | the request is | answer |
//! |---|---|---|
//! | none | new | apply it and remember it |
//! | an older sequence | new | apply it and remember it |
//! | the same sequence, digest `d` (or none kept) | a retry: [`SessionCheck::Duplicate`] | the kept result, nothing applied |
//! | the same sequence, another digest | not a retry: [`SessionCheck::Conflict`] | a refusal, nothing applied |
//! | a newer sequence | [`SessionCheck::Stale`] | a refusal naming the last sequence, nothing applied |
//!
//! **Bound and eviction.** At most [`max_sessions`](SessionTable::max_sessions) clients are
//! kept. When remembering a new client would exceed it, the session whose last request was
//! applied at the lowest log index (ties: the lowest client id) is forgotten. Every node
//! applies the same commands at the same indexes, so every node forgets the same session. A
//! retry from a forgotten client is treated as new and applied again: the bound is how many
//! clients may have a retry in flight at once.
//!
//! **Determinism.** The table is part of the replicated state: it must be changed only from
//! [`StateMachine::apply_at`](crate::StateMachine::apply_at) (with the entry's index) and saved
//! in the state machine's snapshots ([`iter`](SessionTable::iter) and
//! [`restore_record`](SessionTable::restore_record)). Its maps are persistent
//! ([`imbl`]): cloning the table takes constant time, so a
//! [`SnapshotView`](crate::state_machine::SnapshotView) can keep a clone while the node goes on
//! applying.
//!
//! **Results kept.** Each session keeps its last result `R` whole; a state machine whose
//! results can be large keeps a bounded stand-in (raft-kv keeps "applied at index N" for a
//! result above 256 bytes).

use std::cmp::Ordering;

use imbl::{OrdMap, OrdSet};

use crate::client::session::{ClientId, Envelope, EnvelopeError, SessionStamp};
use crate::types::LogIndex;

/// The default for [`SessionTable::new`]'s bound: raft-kv keeps this many sessions.
pub const DEFAULT_MAX_SESSIONS: usize = 100_000;

/// What a table remembers of a client's last applied request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionRecord<R> {
    /// Its sequence number.
    pub sequence: u64,
    /// The log index at which it was applied: the session's age, for eviction.
    pub last_index: LogIndex,
    /// A digest of its command ([`command_digest`] for enveloped commands), to tell a retry
    /// from another command reusing the stamp; `None` when unknown (a session restored from a
    /// format that kept none), and then a reused stamp is answered as a retry.
    pub digest: Option<u64>,
    /// Its result, as the state machine chose to keep it.
    pub result: R,
}

/// What [`SessionTable::check`] found for a stamped request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SessionCheck<'a, R> {
    /// Not applied before: apply it, then [`record`](SessionTable::record) it.
    New,
    /// A retry of the client's last applied request: answer with this result, apply nothing.
    Duplicate(&'a R),
    /// The client has applied a newer request since: this one was applied long ago (its
    /// result is no longer kept) or overtaken. Refuse it; apply nothing.
    Stale {
        /// The client's last applied sequence number.
        last_sequence: u64,
    },
    /// The stamp of the client's last applied request with another command: not a retry.
    /// Refuse it; apply nothing.
    Conflict,
}

/// What [`SessionTable::execute`] did with a stamped request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SessionOutcome<R> {
    /// Applied now; its result.
    Applied(R),
    /// A retry, answered with the result kept from when it was applied.
    Duplicate(R),
    /// Refused as stale ([`SessionCheck::Stale`]).
    Stale {
        /// The client's last applied sequence number.
        last_sequence: u64,
    },
    /// Refused as a conflict ([`SessionCheck::Conflict`]).
    Conflict,
}

/// The sessions of a state machine: per client, its last applied request (rules, bound and
/// eviction in the module documentation).
///
/// ```
/// use raft_consensus::LogIndex;
/// use raft_consensus::client::{ClientId, Envelope, SessionOutcome, SessionStamp, SessionTable};
///
/// let mut table = SessionTable::new(1000);
/// let mut counter = 0u64;
/// let stamp = SessionStamp { client: ClientId(7), sequence: 1 };
/// let envelope = Envelope::encode(stamp, b"increment");
/// let mut apply = |_command: &[u8]| {
///     counter += 1;
///     counter
/// };
/// let first = table.apply_envelope(LogIndex(1), &envelope, &mut apply)?;
/// assert_eq!(first, SessionOutcome::Applied(1));
/// // The same envelope again (a retry after an unknown outcome): answered, not applied.
/// let retry = table.apply_envelope(LogIndex(2), &envelope, &mut apply)?;
/// assert_eq!(retry, SessionOutcome::Duplicate(1));
/// assert_eq!(counter, 1);
/// # Ok::<(), raft_consensus::client::EnvelopeError>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionTable<R: Clone> {
    sessions: OrdMap<ClientId, SessionRecord<R>>,
    /// (the index of a session's last request, its client): the least recent first. Derived
    /// from `sessions`; not part of a snapshot.
    ages: OrdSet<(LogIndex, ClientId)>,
    max_sessions: usize,
}

impl<R: Clone> Default for SessionTable<R> {
    /// A table of at most [`DEFAULT_MAX_SESSIONS`] sessions.
    fn default() -> Self {
        SessionTable::new(DEFAULT_MAX_SESSIONS)
    }
}

impl<R: Clone> SessionTable<R> {
    /// An empty table that keeps at most `max_sessions` sessions (0 keeps none: nothing is
    /// deduplicated). Every node of a cluster must use the same bound.
    pub fn new(max_sessions: usize) -> Self {
        SessionTable { sessions: OrdMap::new(), ages: OrdSet::new(), max_sessions }
    }

    /// The most sessions kept.
    pub fn max_sessions(&self) -> usize {
        self.max_sessions
    }

    /// How many sessions are kept.
    pub fn len(&self) -> usize {
        self.sessions.len()
    }

    /// Whether no session is kept.
    pub fn is_empty(&self) -> bool {
        self.sessions.is_empty()
    }

    /// The session of `client`, if kept.
    pub fn get(&self, client: ClientId) -> Option<&SessionRecord<R>> {
        self.sessions.get(&client)
    }

    /// Every session, by ascending client id: what a snapshot saves.
    pub fn iter(&self) -> impl Iterator<Item = (ClientId, &SessionRecord<R>)> + '_ {
        self.sessions.iter().map(|(client, record)| (*client, record))
    }

    /// What a request stamped `stamp` whose command has digest `digest` is (rules in the module
    /// documentation). Changes nothing.
    pub fn check(&self, stamp: SessionStamp, digest: u64) -> SessionCheck<'_, R> {
        let Some(last) = self.sessions.get(&stamp.client) else {
            return SessionCheck::New;
        };
        match stamp.sequence.cmp(&last.sequence) {
            Ordering::Equal if last.digest.is_some_and(|kept| kept != digest) => {
                SessionCheck::Conflict
            }
            Ordering::Equal => SessionCheck::Duplicate(&last.result),
            Ordering::Less => SessionCheck::Stale { last_sequence: last.sequence },
            Ordering::Greater => SessionCheck::New,
        }
    }

    /// Remembers the request stamped `stamp`, applied at `index` with `result`, as its
    /// client's last, after [`check`](Self::check) found it [`SessionCheck::New`] and the state
    /// machine applied it. May forget the least recent session (see the module documentation).
    ///
    /// Returns `false`, and changes nothing, when the client's kept sequence is not older than
    /// `stamp`'s: the request was not new, and a session never goes back.
    pub fn record(
        &mut self,
        stamp: SessionStamp,
        digest: Option<u64>,
        index: LogIndex,
        result: R,
    ) -> bool {
        if self.sessions.get(&stamp.client).is_some_and(|last| last.sequence >= stamp.sequence) {
            return false;
        }
        let record = SessionRecord { sequence: stamp.sequence, last_index: index, digest, result };
        self.restore_record(stamp.client, record);
        true
    }

    /// Puts back a session saved in a snapshot (replacing any kept for `client`), then forgets
    /// the least recent sessions beyond the bound, as [`record`](Self::record) does. A
    /// snapshot written with the same bound loses nothing.
    pub fn restore_record(&mut self, client: ClientId, record: SessionRecord<R>) {
        self.ages.insert((record.last_index, client));
        if let Some(previous) = self.sessions.insert(client, record) {
            self.ages.remove(&(previous.last_index, client));
        }
        while self.sessions.len() > self.max_sessions {
            let Some((_, oldest)) = self.ages.remove_min() else { break };
            self.sessions.remove(&oldest);
        }
    }

    /// Checks the request stamped `stamp` (command digest `digest`), applies it with `apply`
    /// when it is new and remembers its result (a clone of what `apply` returned), or answers
    /// it from the table.
    pub fn execute(
        &mut self,
        stamp: SessionStamp,
        digest: u64,
        index: LogIndex,
        apply: impl FnOnce() -> R,
    ) -> SessionOutcome<R> {
        match self.check(stamp, digest) {
            SessionCheck::Duplicate(result) => return SessionOutcome::Duplicate(result.clone()),
            SessionCheck::Stale { last_sequence } => {
                return SessionOutcome::Stale { last_sequence };
            }
            SessionCheck::Conflict => return SessionOutcome::Conflict,
            SessionCheck::New => {}
        }
        let result = apply();
        self.record(stamp, Some(digest), index, result.clone());
        SessionOutcome::Applied(result)
    }

    /// [`execute`](Self::execute) for a command wrapped in an [`Envelope`] (what
    /// [`Client::propose_in_session`](super::Client::propose_in_session) sends): unwraps it,
    /// digests the command with [`command_digest`], and hands the command to `apply` when it is
    /// new. Bytes that are not an envelope are an error and change nothing.
    pub fn apply_envelope(
        &mut self,
        index: LogIndex,
        envelope: &[u8],
        apply: impl FnOnce(&[u8]) -> R,
    ) -> Result<SessionOutcome<R>, EnvelopeError> {
        let (stamp, command) = Envelope::decode(envelope)?;
        Ok(self.execute(stamp, command_digest(command), index, || apply(command)))
    }
}

/// The digest [`SessionTable::apply_envelope`] keeps of a command: FNV-1a, 64 bits (offset
/// basis `0xcbf29ce484222325`, prime `0x100000001b3`), over its bytes. Fixed and unkeyed, the
/// same on every node, platform and build, so it may be saved in snapshots. Not
/// collision-resistant against someone crafting two commands: a client can only confuse its
/// own session that way.
pub fn command_digest(command: &[u8]) -> u64 {
    const OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    command.iter().fold(OFFSET_BASIS, |hash, byte| (hash ^ u64::from(*byte)).wrapping_mul(PRIME))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stamp(client: u64, sequence: u64) -> SessionStamp {
        SessionStamp { client: ClientId(client), sequence }
    }

    #[test]
    fn a_retry_is_answered_with_the_kept_result_and_applied_once() {
        let mut table = SessionTable::new(10);
        assert_eq!((table.max_sessions(), table.len(), table.is_empty()), (10, 0, true));
        let mut applied = Vec::new();
        let mut run = |table: &mut SessionTable<u64>, index: u64, stamp, command: &'static str| {
            table.execute(stamp, command_digest(command.as_bytes()), LogIndex(index), || {
                applied.push(command);
                index * 10
            })
        };
        assert_eq!(run(&mut table, 1, stamp(1, 1), "a"), SessionOutcome::Applied(10));
        assert_eq!(run(&mut table, 2, stamp(1, 1), "a"), SessionOutcome::Duplicate(10));
        assert_eq!(run(&mut table, 3, stamp(1, 2), "b"), SessionOutcome::Applied(30));
        assert_eq!(run(&mut table, 4, stamp(1, 2), "b"), SessionOutcome::Duplicate(30));
        // Another client's stamps are its own.
        assert_eq!(run(&mut table, 5, stamp(2, 1), "a"), SessionOutcome::Applied(50));
        // Sequence numbers may skip (a request given up on before it reached the log).
        assert_eq!(run(&mut table, 6, stamp(1, 5), "c"), SessionOutcome::Applied(60));
        assert_eq!(applied, ["a", "b", "a", "c"]);
        assert_eq!((table.len(), table.is_empty()), (2, false));
        let kept = table.get(ClientId(1)).cloned();
        let expected = SessionRecord {
            sequence: 5,
            last_index: LogIndex(6),
            digest: Some(command_digest(b"c")),
            result: 60,
        };
        assert_eq!(kept, Some(expected));
    }

    #[test]
    fn an_older_sequence_is_stale_and_changes_nothing() {
        let mut table = SessionTable::new(10);
        table.execute(stamp(1, 1), 11, LogIndex(1), || "first");
        table.execute(stamp(1, 2), 22, LogIndex(2), || "second");
        let before = table.clone();
        let outcome = table.execute(stamp(1, 1), 11, LogIndex(3), || "applied twice");
        assert_eq!(outcome, SessionOutcome::Stale { last_sequence: 2 });
        assert_eq!(table, before);
        assert_eq!(table.check(stamp(1, 0), 0), SessionCheck::Stale { last_sequence: 2 });
    }

    #[test]
    fn the_same_stamp_with_another_command_is_a_conflict_and_changes_nothing() {
        let mut table = SessionTable::new(10);
        table.execute(stamp(1, 1), command_digest(b"put k v"), LogIndex(1), || 1);
        let before = table.clone();
        let outcome = table.execute(stamp(1, 1), command_digest(b"put k w"), LogIndex(2), || 2);
        assert_eq!(outcome, SessionOutcome::Conflict);
        assert_eq!(table, before);
        // A session restored without a digest answers the reused stamp as a retry.
        let record =
            SessionRecord { sequence: 4, last_index: LogIndex(3), digest: None, result: 7 };
        table.restore_record(ClientId(2), record);
        assert_eq!(table.check(stamp(2, 4), 12345), SessionCheck::Duplicate(&7));
    }

    #[test]
    fn record_never_moves_a_session_back() {
        let mut table = SessionTable::new(10);
        assert!(table.record(stamp(1, 5), Some(1), LogIndex(1), "five"));
        let before = table.clone();
        assert!(!table.record(stamp(1, 5), Some(2), LogIndex(2), "five again"));
        assert!(!table.record(stamp(1, 4), Some(1), LogIndex(3), "four"));
        assert_eq!(table, before);
        assert!(table.record(stamp(1, 6), Some(1), LogIndex(4), "six"));
        assert_eq!(table.get(ClientId(1)).map(|record| record.result), Some("six"));
    }

    #[test]
    fn the_least_recently_applied_session_is_forgotten_beyond_the_bound() {
        let mut table = SessionTable::new(3);
        // Clients 1, 2, 3 at indexes 1, 2, 3; then client 1 again at 4: client 2 is now the
        // least recent.
        for (client, index) in [(1, 1), (2, 2), (3, 3)] {
            table.execute(stamp(client, 1), 0, LogIndex(index), || index);
        }
        table.execute(stamp(1, 2), 0, LogIndex(4), || 4);
        assert_eq!(table.len(), 3);
        table.execute(stamp(4, 1), 0, LogIndex(5), || 5);
        assert_eq!(table.len(), 3, "the bound holds");
        let kept: Vec<u64> = table.iter().map(|(client, _)| client.0).collect();
        assert_eq!(kept, [1, 3, 4], "client 2, applied longest ago, is forgotten");
        // Its retry is new again (applied a second time: the documented price of the bound).
        assert_eq!(table.check(stamp(2, 1), 0), SessionCheck::New);
        // Ties at one index (a state machine applied without indexes) go by client id.
        let mut tied = SessionTable::new(2);
        for client in [9, 5, 7] {
            tied.execute(stamp(client, 1), 0, LogIndex(0), || client);
        }
        let kept: Vec<u64> = tied.iter().map(|(client, _)| client.0).collect();
        assert_eq!(kept, [7, 9]);
        // A bound of 0 keeps nothing.
        let mut none = SessionTable::new(0);
        none.execute(stamp(1, 1), 0, LogIndex(1), || 1);
        assert!(none.is_empty());
        assert_eq!(none.check(stamp(1, 1), 0), SessionCheck::New);
    }

    #[test]
    fn a_table_rebuilt_from_its_records_is_equal_and_evicts_alike() {
        let mut table = SessionTable::new(3);
        for (client, index) in [(5, 1), (6, 2), (7, 3)] {
            table.execute(stamp(client, 2), client, LogIndex(index), || index);
        }
        let mut rebuilt = SessionTable::new(3);
        for (client, record) in table.iter() {
            rebuilt.restore_record(client, record.clone());
        }
        assert_eq!(rebuilt, table);
        table.execute(stamp(8, 1), 0, LogIndex(4), || 4);
        rebuilt.execute(stamp(8, 1), 0, LogIndex(4), || 4);
        assert_eq!(rebuilt, table);
        assert!(table.get(ClientId(5)).is_none());
        // Restored into a smaller table, the least recent go first.
        let mut smaller = SessionTable::new(1);
        for (client, record) in table.iter() {
            smaller.restore_record(client, record.clone());
        }
        let kept: Vec<u64> = smaller.iter().map(|(client, _)| client.0).collect();
        assert_eq!(kept, [8]);
    }

    #[test]
    fn apply_envelope_unwraps_and_refuses_other_bytes() {
        let mut table = SessionTable::new(10);
        let envelope = Envelope::encode(stamp(3, 1), b"cmd");
        let mut seen = Vec::new();
        let outcome = table.apply_envelope(LogIndex(1), &envelope, |command| {
            seen.push(command.to_vec());
            command.len()
        });
        assert_eq!(outcome, Ok(SessionOutcome::Applied(3)));
        assert_eq!(seen, [b"cmd".to_vec()]);
        assert_eq!(
            table.get(ClientId(3)).and_then(|record| record.digest),
            Some(command_digest(b"cmd"))
        );
        let before = table.clone();
        assert!(table.apply_envelope(LogIndex(2), b"cmd", |_| 0).is_err());
        assert_eq!(table, before);
        let other = Envelope::encode(stamp(3, 1), b"other");
        assert_eq!(table.apply_envelope(LogIndex(3), &other, |_| 0), Ok(SessionOutcome::Conflict));
    }

    #[test]
    fn command_digest_is_fnv1a_64() {
        assert_eq!(command_digest(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(command_digest(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(command_digest(b"foobar"), 0x8594_4171_f739_67e8);
    }
}
