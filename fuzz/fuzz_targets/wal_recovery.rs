//! libFuzzer entry point of the `wal_recovery` target; the body is `raft_consensus_fuzz::wal_recovery::recover_wal`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| raft_consensus_fuzz::wal_recovery::recover_wal(data));
