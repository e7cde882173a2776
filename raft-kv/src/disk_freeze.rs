//! A file system whose syncs wait while a signal file exists: a frozen disk, for tests
//! (`raft-kv serve --freeze-syncs-while FILE`). Compiled only with the `disk-freeze` feature,
//! which raft-kv's own tests turn on (a dev-dependency of the package on itself): a build of
//! the binary alone, such as `cargo build --release`, carries neither this nor the flag.
//!
//! Writes still go to the page cache at once, as on a real disk that stops completing its
//! flushes; every `fdatasync`, directory sync and durable truncation waits until the signal
//! file is removed, then goes through to the operating system's file system.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use raft_consensus::storage::{AppendFile, DirLock, FileSystem, StdFileSystem};

/// The operating system's file system, with syncs frozen while `signal` exists.
#[derive(Clone, Debug)]
pub struct FreezableFileSystem {
    signal: Arc<PathBuf>,
}

impl FreezableFileSystem {
    /// A file system whose syncs wait while `signal` exists.
    pub fn new(signal: PathBuf) -> Self {
        FreezableFileSystem { signal: Arc::new(signal) }
    }

    /// Returns once the signal file is gone.
    fn wait_while_frozen(&self) {
        while self.signal.exists() {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

/// A file of [`FreezableFileSystem`].
pub struct FreezableFile {
    file: File,
    fs: FreezableFileSystem,
}

impl AppendFile for FreezableFile {
    fn write_at(&mut self, bytes: &[u8], offset: u64) -> io::Result<()> {
        AppendFile::write_at(&mut self.file, bytes, offset)
    }

    fn sync_data(&mut self) -> io::Result<()> {
        self.fs.wait_while_frozen();
        AppendFile::sync_data(&mut self.file)
    }

    fn try_clone(&self) -> io::Result<Self> {
        Ok(FreezableFile { file: AppendFile::try_clone(&self.file)?, fs: self.fs.clone() })
    }
}

impl FileSystem for FreezableFileSystem {
    type File = FreezableFile;
    type ReadFile = std::fs::File;

    fn open_read(&self, path: &Path) -> io::Result<std::fs::File> {
        StdFileSystem.open_read(path)
    }

    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        StdFileSystem.create_dir_all(dir)
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        StdFileSystem.list(dir)
    }

    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        StdFileSystem.read(path)
    }

    fn open_write(&self, path: &Path) -> io::Result<FreezableFile> {
        Ok(FreezableFile { file: StdFileSystem.open_write(path)?, fs: self.clone() })
    }

    fn truncate(&self, path: &Path, length: u64) -> io::Result<()> {
        self.wait_while_frozen();
        StdFileSystem.truncate(path, length)
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        StdFileSystem.remove(path)
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        StdFileSystem.rename(from, to)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        self.wait_while_frozen();
        StdFileSystem.sync_dir(dir)
    }

    fn lock_dir(&self, dir: &Path) -> io::Result<DirLock> {
        StdFileSystem.lock_dir(dir)
    }
}
