//! Syncing the write-ahead log in the background: [`WalSync`], the [`PendingSync`] that
//! `WalStorage::flush` returns, and [`SyncMark`], what the log shares with its syncs in
//! flight: how far the current segment is written and how far it is known to be durable.
//!
//! A flush writes the buffered records (`pwrite`) and returns a `WalSync`; completing it runs
//! `fdatasync` on the log's second handle to the segment, which makes durable everything
//! written to the file by then: that write, and any made after it. A sync that finds the mark
//! already past its write therefore has nothing left to do (an earlier one covered it), and
//! the log writes into every record how far back the durable end was, which recovery uses to
//! tell bytes that may be torn from bytes that were synced.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use crate::error::StorageError;
use crate::metrics::Histogram;
use crate::storage::PendingSync;
use crate::storage::fs::{AppendFile, FileSystem};

/// How far the current segment is written and synced, shared by the log and its syncs.
#[derive(Debug)]
pub(crate) struct SyncMark {
    /// The segment the offsets are in.
    pub(crate) sequence: u64,
    /// The end of what was written to it (perhaps not durable yet).
    pub(crate) written: u64,
    /// The end of what is known to be durable.
    pub(crate) durable: u64,
    /// A sync failed: the log takes no more writes.
    pub(crate) failed: bool,
}

impl SyncMark {
    /// The mark of a segment durable up to `len`.
    pub(crate) fn shared(sequence: u64, len: u64) -> Arc<Mutex<SyncMark>> {
        Arc::new(Mutex::new(SyncMark { sequence, written: len, durable: len, failed: false }))
    }
}

/// Locks `mutex`. Every critical section here only assigns plain fields and cannot panic
/// half-way, so a poisoned lock still holds consistent data.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The sync of one flushed write to segment `sequence`, ending at `end`.
pub(crate) struct WalSync<F: FileSystem> {
    /// The log's sync handle to the segment (a second handle, so that syncs never wait for
    /// the writer).
    pub(crate) file: Arc<Mutex<F::File>>,
    pub(crate) path: PathBuf,
    pub(crate) sequence: u64,
    pub(crate) end: u64,
    pub(crate) mark: Arc<Mutex<SyncMark>>,
    /// Where the time of each `fdatasync` is recorded.
    pub(crate) latency: Arc<Histogram>,
}

impl<F: FileSystem> PendingSync for WalSync<F> {
    fn complete(self: Box<Self>) -> Result<(), StorageError> {
        let covered = {
            let mark = lock(&self.mark);
            if mark.failed {
                return Err(StorageError::io(
                    format!("syncing {}", self.path.display()),
                    std::io::Error::other("an earlier sync of the log failed"),
                ));
            }
            // A roll-over syncs the whole segment before the next one begins.
            if mark.sequence != self.sequence || mark.durable >= self.end {
                return Ok(());
            }
            mark.written
        };
        let started = Instant::now();
        let result = lock(&self.file).sync_data();
        self.latency.record(started.elapsed());
        let mut mark = lock(&self.mark);
        match result {
            Ok(()) => {
                if mark.sequence == self.sequence {
                    mark.durable = mark.durable.max(covered);
                }
                Ok(())
            }
            Err(error) => {
                mark.failed = true;
                Err(StorageError::io(format!("syncing {}", self.path.display()), error))
            }
        }
    }
}
