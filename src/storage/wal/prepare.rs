//! Preparing the next segment off the critical path: a segment file is written full of zeros
//! to `segment_max_bytes` and synced under a temporary name (`prepare-<sequence>.tmp`, which
//! recovery does not read and `open` removes), so that at roll-over the log only renames it
//! and writes its header. Records then overwrite zeros already on disk: `fdatasync` has data
//! to write but no file size or block allocation to record (which, on ext4, is most of the
//! cost of syncing an appended file). `fallocate` would not do: its unwritten extents are
//! converted, a metadata change, at each sync of a write into them.
//!
//! On a [`FileSystem`] that allows it ([`FileSystem::prepare_in_background`]) the work runs on
//! one thread per prepared segment; the log waits for it at roll-over only if it has not
//! finished. Dropping the [`Preparer`] (or [`Preparer::cancel`]) cancels and joins the thread
//! and removes the file. Otherwise (the simulator) the segment is prepared inline when asked
//! for.
//!
//! A preparation that fails (a full disk, typically) removes what it wrote before it reports
//! the error: zeros for a later segment never keep the space the log's own records need.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;

use crate::storage::fs::{AppendFile, FileSystem};

/// Zeros are written in pieces of this size (the cancel flag is checked between them).
const CHUNK_BYTES: u64 = 1024 * 1024;
/// The preparer syncs after this many bytes, so the disk gets them in bursts no larger.
const SYNC_EVERY_BYTES: u64 = 16 * 1024 * 1024;

/// The temporary name of prepared segment `sequence`.
pub(crate) fn prepared_name(sequence: u64) -> String {
    format!("prepare-{sequence:020}.tmp")
}

/// Whether `name` is a prepared (or half-prepared) segment's temporary name.
pub(crate) fn is_prepared_name(name: &str) -> bool {
    name.starts_with("prepare-") && name.ends_with(".tmp")
}

enum Job {
    Running { sequence: u64, cancel: Arc<AtomicBool>, thread: JoinHandle<io::Result<()>> },
    Done { sequence: u64, result: io::Result<()> },
}

/// Prepares one segment at a time for a log in `dir`.
pub(crate) struct Preparer<F: FileSystem> {
    fs: F,
    dir: PathBuf,
    len: u64,
    job: Option<Job>,
}

impl<F: FileSystem> Preparer<F> {
    pub(crate) fn new(fs: F, dir: PathBuf, len: u64) -> Self {
        Preparer { fs, dir, len, job: None }
    }

    /// Whether a segment is being prepared or waits to be taken.
    pub(crate) fn is_started(&self) -> bool {
        self.job.is_some()
    }

    /// Starts preparing segment `sequence` (in the background if the file system allows it),
    /// unless a preparation is already under way.
    pub(crate) fn start(&mut self, sequence: u64) {
        if self.job.is_some() {
            return;
        }
        let path = self.dir.join(prepared_name(sequence));
        let len = self.len;
        if !self.fs.prepare_in_background() {
            let result = zero_fill(&self.fs, &path, len, &AtomicBool::new(false));
            self.job = Some(Job::Done { sequence, result });
            return;
        }
        let cancel = Arc::new(AtomicBool::new(false));
        let fs = self.fs.clone();
        let thread_cancel = Arc::clone(&cancel);
        let spawned = std::thread::Builder::new()
            .name(String::from("wal-prepare"))
            .spawn(move || zero_fill(&fs, &path, len, &thread_cancel));
        self.job = Some(match spawned {
            Ok(thread) => Job::Running { sequence, cancel, thread },
            Err(error) => Job::Done { sequence, result: Err(error) },
        });
    }

    /// Whether a preparation finished without an error and waits to be taken (never blocks).
    pub(crate) fn is_ready(&mut self) -> bool {
        self.job = match self.job.take() {
            Some(Job::Running { sequence, thread, .. }) if thread.is_finished() => {
                let result = thread.join().unwrap_or_else(|_| {
                    Err(io::Error::other("the thread preparing the segment panicked"))
                });
                Some(Job::Done { sequence, result })
            }
            job => job,
        };
        matches!(self.job, Some(Job::Done { result: Ok(()), .. }))
    }

    /// A prepared segment for segment `sequence`: waits for the preparation under way if it
    /// is still running, or prepares one now if none was started. Returns the temporary
    /// file's path. The file is named after the segment it was started for, which may be an
    /// earlier one (a roll-over in between reused a spare instead): zeros serve any segment.
    pub(crate) fn take(&mut self, sequence: u64) -> io::Result<PathBuf> {
        let (prepared, result) = match self.job.take() {
            Some(Job::Running { sequence, thread, .. }) => (
                sequence,
                thread.join().unwrap_or_else(|_| {
                    Err(io::Error::other("the thread preparing the segment panicked"))
                }),
            ),
            Some(Job::Done { sequence, result }) => (sequence, result),
            None => {
                let path = self.dir.join(prepared_name(sequence));
                (sequence, zero_fill(&self.fs, &path, self.len, &AtomicBool::new(false)))
            }
        };
        result.map(|()| self.dir.join(prepared_name(prepared)))
    }

    /// Stops the preparation under way, if any, and removes its file: the space it holds is
    /// free again when this returns.
    pub(crate) fn cancel(&mut self) {
        let sequence = match self.job.take() {
            Some(Job::Running { sequence, cancel, thread }) => {
                cancel.store(true, Ordering::Relaxed);
                // Its result does not matter any more; a panic in it was already reported.
                let _ = thread.join();
                sequence
            }
            Some(Job::Done { sequence, .. }) => sequence,
            None => return,
        };
        self.discard(sequence);
    }

    fn discard(&self, sequence: u64) {
        let path = self.dir.join(prepared_name(sequence));
        match self.fs.remove(&path) {
            Ok(()) => {}
            Err(error) if error.kind() == io::ErrorKind::NotFound => {}
            Err(error) => tracing::debug!("Could not remove {}: {error}", path.display()),
        }
    }
}

impl<F: FileSystem> Drop for Preparer<F> {
    fn drop(&mut self) {
        self.cancel();
    }
}

/// Creates `path` afresh as `len` zero bytes, synced. Stops early (without an error) if
/// `cancel` is set: the caller then removes the file. On an error, removes the file first
/// (as far as it can), so that a failed preparation holds no space.
fn zero_fill<F: FileSystem>(fs: &F, path: &Path, len: u64, cancel: &AtomicBool) -> io::Result<()> {
    let result = write_zeros(fs, path, len, cancel);
    if let Err(error) = &result {
        match fs.remove(path) {
            Ok(()) => {}
            Err(remove_error) if remove_error.kind() == io::ErrorKind::NotFound => {}
            Err(remove_error) => tracing::warn!(
                "Could not remove {} after preparing it failed ({error}): {remove_error}",
                path.display()
            ),
        }
    }
    result
}

/// The body of [`zero_fill`].
fn write_zeros<F: FileSystem>(
    fs: &F,
    path: &Path,
    len: u64,
    cancel: &AtomicBool,
) -> io::Result<()> {
    match fs.remove(path) {
        Ok(()) => {}
        Err(error) if error.kind() == io::ErrorKind::NotFound => {}
        Err(error) => return Err(error),
    }
    let mut file = fs.open_write(path)?;
    // At most CHUNK_BYTES: fits a usize.
    let zeros = vec![0u8; len.min(CHUNK_BYTES) as usize];
    let mut offset = 0;
    let mut unsynced = 0;
    while offset < len {
        if cancel.load(Ordering::Relaxed) {
            return Ok(());
        }
        let piece = (len - offset).min(zeros.len() as u64);
        file.write_at(&zeros[..piece as usize], offset)?;
        offset += piece;
        unsynced += piece;
        if unsynced >= SYNC_EVERY_BYTES && offset < len {
            file.sync_data()?;
            unsynced = 0;
        }
    }
    file.sync_data()
}
