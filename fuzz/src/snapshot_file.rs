//! The `snapshot_file` target: arbitrary bytes as the write-ahead log's snapshot file
//! (`storage/wal/snapshot_file.rs`), alone in the log's directory, then the log opened with
//! the checks of [`check_recovery`]. The file is named after the index its own header gives,
//! so that a mutated index still reaches the checks behind the name check.

use crate::memory_fs::MemoryFs;
use crate::wal_recovery::{check_recovery, put_snapshot_file};

/// The target.
pub fn open_snapshot_file(data: &[u8]) {
    let fs = MemoryFs::default();
    put_snapshot_file(&fs, data);
    check_recovery(&fs);
}
