//! [`Journal`]: the state machine of scripted clusters. It records every command it applies
//! (index, term and bytes), answers each with the command's bytes, and snapshots and restores
//! that list, so that "two nodes applied the same" means the same commands at the same
//! indexes, in the same terms.
//!
//! Its snapshot encoding is not canonical, on purpose: each node writes its records starting
//! from a rotation of its own (its salt), and a restore puts them back in index order. Two
//! nodes' snapshots of one state thus have the same length and different bytes, as a real
//! state machine's over a hash map would, so a follower that put chunks of two leaders'
//! snapshots together would restore a state no node had.

use std::error::Error;
use std::sync::{Arc, Mutex, MutexGuard};

use crate::state_machine::StateMachine;
use crate::types::{LogIndex, Term};

/// One command as the state machine saw it: its log index, its term and its bytes.
pub type AppliedCommand = (LogIndex, Term, Vec<u8>);

/// Records each applied command. The driver hands a state machine the index of a command but
/// not its term; the [`Cluster`](super::Cluster) fills the term in from the node's apply
/// report, through a handle that shares the record.
#[derive(Clone, Debug, Default)]
pub struct Journal {
    records: Arc<Mutex<Vec<AppliedCommand>>>,
    /// Where this node's snapshot encoding starts in its records (modulo their number).
    salt: u64,
}

impl Journal {
    /// An empty journal whose snapshots start their records at rotation `salt`.
    pub(crate) fn salted(salt: u64) -> Journal {
        Journal { records: Arc::default(), salt }
    }

    /// A handle on the same record, for the pump to read it and fill terms in.
    pub(crate) fn share(&self) -> Journal {
        self.clone()
    }

    fn lock(&self) -> MutexGuard<'_, Vec<AppliedCommand>> {
        // One thread drives a cluster; a poisoned lock only follows a panic that already
        // fails the test, and the list inside is still consistent.
        self.records.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The commands applied so far (or restored from a snapshot), in order.
    pub fn records(&self) -> Vec<AppliedCommand> {
        self.lock().clone()
    }

    /// Sets the term of the command just applied at `index`.
    pub(crate) fn set_term(&self, index: LogIndex, term: Term) {
        if let Some(last) = self.lock().last_mut().filter(|last| last.0 == index) {
            last.1 = term;
        }
    }
}

impl StateMachine for Journal {
    fn apply(&mut self, command: &[u8]) -> Result<Vec<u8>, Box<dyn Error + Send + Sync>> {
        Ok(command.to_vec())
    }

    fn apply_at(
        &mut self,
        index: LogIndex,
        command: &[u8],
    ) -> Result<Vec<u8>, Box<dyn Error + Send + Sync>> {
        // The term is filled in by the pump as soon as the driver reports the apply.
        self.lock().push((index, Term(0), command.to_vec()));
        Ok(command.to_vec())
    }

    fn snapshot(&self) -> Result<Vec<u8>, Box<dyn Error + Send + Sync>> {
        let records = self.lock();
        let start = match records.len() {
            0 => 0,
            count => usize::try_from(self.salt % count as u64).unwrap_or(0),
        };
        let (head, tail) = records.split_at(start);
        let mut bytes = encode(tail);
        bytes.extend(encode(head));
        Ok(bytes)
    }

    fn restore(&mut self, snapshot: &[u8]) -> Result<(), Box<dyn Error + Send + Sync>> {
        let mut restored = decode(snapshot).ok_or("a journal snapshot is cut short")?;
        // Undo the encoding's rotation (a stable sort: nothing else moves).
        restored.sort_by_key(|(index, _, _)| *index);
        *self.lock() = restored;
        Ok(())
    }
}

/// Each command as index, term, length and bytes (little-endian words).
fn encode(records: &[AppliedCommand]) -> Vec<u8> {
    let mut bytes = Vec::new();
    for (index, term, command) in records {
        bytes.extend_from_slice(&index.0.to_le_bytes());
        bytes.extend_from_slice(&term.0.to_le_bytes());
        bytes.extend_from_slice(&(command.len() as u64).to_le_bytes());
        bytes.extend_from_slice(command);
    }
    bytes
}

/// The inverse of [`encode`]; `None` when the bytes end in the middle of a record.
fn decode(mut bytes: &[u8]) -> Option<Vec<AppliedCommand>> {
    fn word(bytes: &mut &[u8]) -> Option<u64> {
        let (head, rest) = bytes.split_first_chunk::<8>()?;
        *bytes = rest;
        Some(u64::from_le_bytes(*head))
    }
    let mut records = Vec::new();
    while !bytes.is_empty() {
        let index = LogIndex(word(&mut bytes)?);
        let term = Term(word(&mut bytes)?);
        let length = usize::try_from(word(&mut bytes)?).ok()?;
        if bytes.len() < length {
            return None;
        }
        let (command, rest) = bytes.split_at(length);
        bytes = rest;
        records.push((index, term, command.to_vec()));
    }
    Some(records)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_snapshot_restores_the_same_records() {
        let mut journal = Journal::default();
        journal.apply_at(LogIndex(2), b"a").expect("a journal applies every command");
        journal.set_term(LogIndex(2), Term(3));
        journal.apply_at(LogIndex(4), b"").expect("a journal applies every command");
        let snapshot = journal.snapshot().expect("a journal always snapshots");
        let mut restored = Journal::default();
        restored.restore(&snapshot).expect("a journal restores its own snapshot");
        assert_eq!(
            restored.records(),
            vec![(LogIndex(2), Term(3), b"a".to_vec()), (LogIndex(4), Term(0), Vec::new())]
        );
        assert!(restored.restore(&snapshot[..snapshot.len() - 1]).is_err());
    }

    #[test]
    fn salted_journals_encode_one_state_differently_and_restore_it_alike() {
        let journals = [Journal::salted(1), Journal::salted(2)];
        for mut journal in journals.iter().cloned() {
            for index in 1..=3 {
                journal.apply_at(LogIndex(index), b"x").expect("a journal applies every command");
            }
        }
        let expected = journals[0].records();
        let [one, two] = journals.map(|journal| journal.snapshot().expect("it snapshots"));
        assert_eq!(one.len(), two.len());
        assert_ne!(one, two, "the same state encoded the same way");
        for snapshot in [one, two] {
            let mut restored = Journal::default();
            restored.restore(&snapshot).expect("a journal restores any node's snapshot");
            assert_eq!(restored.records(), expected);
        }
    }
}
