//! The fuzz targets' bodies, one module per target, shared with the stable corpus-replay tests
//! (`tests/fuzz_corpus.rs` and `raft-kv/tests/fuzz_corpus.rs` include these files by path), so
//! that CI replays the committed corpus through exactly what the fuzzer ran.
//!
//! Every function takes arbitrary bytes and must return without panicking; each also asserts
//! what the decoder promises (a decoded value re-encodes to something that decodes the same,
//! a failed recovery changes nothing).

pub mod codec;
pub mod corpus;
pub mod handshake;
pub mod input;
pub mod kv_request;
pub mod kv_snapshot;
pub mod memory_fs;
pub mod snapshot_file;
pub mod wal_recovery;
