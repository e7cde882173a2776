//! [`Driver`]: the one piece of code that carries out a core's [`Ready`] against storage, the
//! network and the state machine, in the order Raft's safety depends on.
//!
//! The tokio runtime ([`RaftNode`](crate::RaftNode)) uses it, and so will the deterministic
//! simulator, so what the simulator tests is the very ordering a real node uses:
//!
//! 1. send the messages that need nothing durable (a leader's AppendEntries),
//! 2. write entries and hard state, then sync,
//! 3. send the messages that promise durability (votes, acknowledgments),
//! 4. apply committed entries in order,
//! 5. acknowledge the Ready to the core.
//!
//! A storage error stops at step 2: nothing that depends on the failed write leaves the node.

use std::error::Error;

use bytes::Bytes;

use crate::core::{RaftCore, Ready};
use crate::error::StorageError;
use crate::message::{EntryPayload, Message};
use crate::state_machine::StateMachine;
use crate::storage::Storage;
use crate::types::{LogIndex, Term};

/// The result of applying one committed command.
pub(crate) struct Applied {
    /// The entry's index.
    pub(crate) index: LogIndex,
    /// The entry's term (a proposal matches only if both agree).
    pub(crate) term: Term,
    /// The command that was applied (the simulator checks that every node applied the same).
    #[cfg_attr(not(feature = "sim"), allow(dead_code))]
    pub(crate) command: Bytes,
    /// What the state machine returned.
    pub(crate) result: Result<Vec<u8>, Box<dyn Error + Send + Sync>>,
}

/// A protocol core with its storage and state machine.
pub(crate) struct Driver<S, M> {
    pub(crate) core: RaftCore,
    storage: S,
    state_machine: M,
    /// Simulation only: the planted bug that sends acknowledgments before the sync.
    #[cfg(feature = "sim")]
    pub(crate) planted_acknowledge_before_sync: bool,
}

impl<S: Storage, M: StateMachine> Driver<S, M> {
    pub(crate) fn new(core: RaftCore, storage: S, state_machine: M) -> Self {
        Driver {
            core,
            storage,
            state_machine,
            #[cfg(feature = "sim")]
            planted_acknowledge_before_sync: false,
        }
    }

    /// Carries out every pending [`Ready`] of the core, handing messages to `send` and apply
    /// results to `on_applied`. Returns an error, having sent nothing that depends on it, when
    /// storage fails; the node must then stop.
    pub(crate) fn process_ready(
        &mut self,
        mut send: impl FnMut(Message),
        mut on_applied: impl FnMut(Applied),
    ) -> Result<(), StorageError> {
        while self.core.has_ready() {
            let Ready { hard_state, entries, messages, persisted_messages, committed_entries, ack } =
                self.core.ready();
            for message in messages {
                send(message);
            }
            #[cfg(feature = "sim")]
            let persisted_messages = if self.planted_acknowledge_before_sync {
                // Planted bug: promise durability before the write is synced.
                for message in persisted_messages {
                    send(message);
                }
                Vec::new()
            } else {
                persisted_messages
            };
            let must_sync = hard_state.is_some() || !entries.is_empty();
            // Entries go first: whatever prefix of these writes survives a crash, a stored
            // commit index never points at an entry of this batch that was lost.
            if !entries.is_empty() {
                self.storage.append(&entries)?;
            }
            if let Some(hard_state) = hard_state {
                self.storage.save_hard_state(&hard_state)?;
            }
            if must_sync {
                self.storage.sync()?;
            }
            for message in persisted_messages {
                send(message);
            }
            for entry in committed_entries {
                if let EntryPayload::Command(command) = entry.payload {
                    let result = self.state_machine.apply_at(entry.index, &command);
                    on_applied(Applied { index: entry.index, term: entry.term, command, result });
                }
            }
            self.core.advance(ack);
        }
        Ok(())
    }
}
