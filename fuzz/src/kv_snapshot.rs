//! The `kv_snapshot` target: arbitrary bytes as a raft-kv snapshot for
//! [`KvStateMachine::restore`] (`raft-kv/src/state_machine.rs`). Restoring must succeed or
//! fail, never panic; a failed restore must leave the store as it was; a restored store must
//! snapshot to bytes that restore the same store.

use raft_consensus::{LogIndex, StateMachine};
use raft_kv::{Command, KvStateMachine, Request};

/// The target.
pub fn restore_snapshot(data: &[u8]) {
    let mut store = KvStateMachine::new();
    let put = Command::Put { key: b"k".to_vec(), value: b"v".to_vec() };
    store.execute(LogIndex(1), Request { session: Some((3, 1)), command: put });
    let before = store.clone();
    if store.restore(data).is_err() {
        assert_eq!(store, before, "a failed restore changed the store");
        return;
    }
    let snapshot = store.snapshot().expect("a store always snapshots");
    let mut again = KvStateMachine::new();
    again.restore(&snapshot).expect("a store's own snapshot restores");
    assert_eq!(again, store, "a restored store does not round-trip through its snapshot");
}
