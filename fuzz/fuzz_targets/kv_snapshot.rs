//! libFuzzer entry point of the `kv_snapshot` target; the body is `raft_consensus_fuzz::kv_snapshot::restore_snapshot`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| raft_consensus_fuzz::kv_snapshot::restore_snapshot(data));
