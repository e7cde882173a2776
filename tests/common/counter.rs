//! [`Counter`], the state machine the runtime tests (`node_events.rs`, `node_lifecycle.rs`)
//! run their nodes on.

use std::error::Error;

use raft_consensus::StateMachine;

/// Counts its commands; the command `panic` panics. Its snapshot is the count.
#[derive(Default)]
pub struct Counter(pub u64);

impl StateMachine for Counter {
    fn apply(&mut self, command: &[u8]) -> Result<Vec<u8>, Box<dyn Error + Send + Sync>> {
        if command == b"panic" {
            panic!("the counter cannot go on after `panic`");
        }
        self.0 += 1;
        Ok(self.0.to_le_bytes().to_vec())
    }

    fn snapshot(&self) -> Result<Vec<u8>, Box<dyn Error + Send + Sync>> {
        Ok(self.0.to_le_bytes().to_vec())
    }

    fn restore(&mut self, snapshot: &[u8]) -> Result<(), Box<dyn Error + Send + Sync>> {
        self.0 = u64::from_le_bytes(snapshot.try_into()?);
        Ok(())
    }
}
