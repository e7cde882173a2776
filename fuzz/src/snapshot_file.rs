//! The `snapshot_file` target: arbitrary bytes as the write-ahead log's snapshot file
//! (`storage/wal/snapshot_file.rs`), alone in the log's directory, then the log opened with
//! the checks of [`check_recovery`]. The file is named after the index its own header gives
//! (bytes 32..40), so that a mutated index still reaches the checks behind the name check.

use crate::memory_fs::MemoryFs;
use crate::wal_recovery::{DIR, check_recovery};

/// Where a snapshot file's last included index lies.
const INDEX_AT: usize = 32;

/// The target.
pub fn open_snapshot_file(data: &[u8]) {
    let index = data
        .get(INDEX_AT..INDEX_AT + 8)
        .and_then(|bytes| bytes.try_into().ok())
        .map_or(0, u64::from_le_bytes);
    let fs = MemoryFs::default();
    fs.put(&std::path::Path::new(DIR).join(format!("snapshot-{index:020}.snap")), data);
    check_recovery(&fs);
}
