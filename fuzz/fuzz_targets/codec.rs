//! libFuzzer entry point of the `codec` target; the body is `raft_consensus_fuzz::codec::decode_frame`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| raft_consensus_fuzz::codec::decode_frame(data));
