//! libFuzzer entry point of the `kv_request` target; the body is `raft_consensus_fuzz::kv_request::decode_request`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| raft_consensus_fuzz::kv_request::decode_request(data));
