//! The `kv_snapshot` target: arbitrary bytes as a raft-kv snapshot for
//! [`KvStateMachine::restore`] and, streamed, [`KvStateMachine::restore_from`]
//! (`raft-kv/src/state_machine.rs`). Restoring must succeed or fail, never panic, and both
//! ways must agree; a failed restore must leave the store as it was; a restored store must
//! snapshot to bytes that restore the same store, and its snapshot view must write those
//! same bytes.

use std::io::Read;

use raft_consensus::{LogIndex, StateMachine};
use raft_kv::{Command, KvStateMachine, Request};

/// Hands out the bytes a few at a time, as a stream from a file or the network might.
struct Trickle<'a>(&'a [u8]);

impl Read for Trickle<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = buf.len().min(3).min(self.0.len());
        buf[..n].copy_from_slice(&self.0[..n]);
        self.0 = &self.0[n..];
        Ok(n)
    }
}

/// The target.
pub fn restore_snapshot(data: &[u8]) {
    let mut store = KvStateMachine::new();
    let put = Command::Put { key: b"k".to_vec(), value: b"v".to_vec() };
    store.execute(LogIndex(1), Request { session: Some((3, 1)), command: put });
    let before = store.clone();
    let mut streamed = store.clone();
    let streamed_result = streamed.restore_from(&mut Trickle(data));
    if store.restore(data).is_err() {
        assert_eq!(store, before, "a failed restore changed the store");
        assert!(streamed_result.is_err(), "a stream restored what the slice refused");
        assert_eq!(streamed, before, "a failed streamed restore changed the store");
        return;
    }
    assert!(streamed_result.is_ok(), "a stream refused what the slice restored");
    assert_eq!(streamed, store, "restoring from a stream and from a slice differ");
    let snapshot = store.snapshot().expect("a store always snapshots");
    let mut viewed = Vec::new();
    store
        .snapshot_view()
        .expect("a store always snapshots")
        .write_to(&mut viewed)
        .expect("a Vec takes every byte");
    assert_eq!(viewed, snapshot, "the snapshot view and snapshot() differ");
    let mut again = KvStateMachine::new();
    again.restore(&snapshot).expect("a store's own snapshot restores");
    assert_eq!(again, store, "a restored store does not round-trip through its snapshot");
}
