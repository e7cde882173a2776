//! libFuzzer entry point of the `snapshot_file` target; the body is `raft_consensus_fuzz::snapshot_file::open_snapshot_file`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| raft_consensus_fuzz::snapshot_file::open_snapshot_file(
    data
));
