//! libFuzzer entry point of the `handshake` target; the body is `raft_consensus_fuzz::handshake::check_handshake`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| raft_consensus_fuzz::handshake::check_handshake(data));
