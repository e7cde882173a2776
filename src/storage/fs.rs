//! [`FileSystem`]: the thin file interface the write-ahead log goes through, so that the
//! simulator can put a disk that loses, tears and fails writes under the real log code.
//! [`StdFileSystem`] is the real one.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;

/// The file operations the write-ahead log needs, and nothing more.
///
/// Clones must refer to the same file system: the log hands a clone to the thread that
/// prepares its next segment (see [`FileSystem::prepare_in_background`]).
pub trait FileSystem: Clone + Send + 'static {
    /// A file open for positioned writes.
    type File: AppendFile;
    /// A file open for positioned reads.
    type ReadFile: ReadAtFile;

    /// Creates `dir` and its parents if missing.
    fn create_dir_all(&self, dir: &Path) -> io::Result<()>;
    /// The names of the files in `dir`.
    fn list(&self, dir: &Path) -> io::Result<Vec<String>>;
    /// The whole content of `path`.
    fn read(&self, path: &Path) -> io::Result<Vec<u8>>;
    /// Opens `path` for positioned reads. The open file stays readable, with the content it
    /// had, after `path` is removed or replaced.
    fn open_read(&self, path: &Path) -> io::Result<Self::ReadFile>;
    /// Opens `path` for positioned writes (not in append mode: a write lands at the offset it
    /// names), creating it empty if missing. Its content and length are left as they are.
    fn open_write(&self, path: &Path) -> io::Result<Self::File>;
    /// Cuts `path` to `length` bytes and makes that durable.
    fn truncate(&self, path: &Path, length: u64) -> io::Result<()>;
    /// Removes `path`.
    fn remove(&self, path: &Path) -> io::Result<()>;
    /// Renames `from` to `to` (replacing `to` if it exists) in one atomic step. The new name is
    /// durable only after [`FileSystem::sync_dir`] on the directory; until then a power loss
    /// may undo the rename.
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Makes the creation, renaming and removal of entries in `dir` durable.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
    /// Whether the log may prepare (zero-fill) its next segment on a background thread. A
    /// file system that must see every operation in a deterministic order (the simulator's
    /// disk) returns `false`, and the log then prepares segments inline.
    fn prepare_in_background(&self) -> bool {
        true
    }

    /// Takes an exclusive lock on the data directory `dir` (which exists), held until the
    /// returned [`DirLock`] is dropped, so that two logs (of two processes, or two opens in
    /// one process) never write the same directory. A directory another holder has locked
    /// is refused with an error of kind [`io::ErrorKind::WouldBlock`], its message naming
    /// the holder's pid when known.
    ///
    /// The default takes no lock ([`DirLock::none`]): right for a file system no other
    /// process can reach (the simulator's disk, a fuzzer's). [`StdFileSystem`] locks a
    /// `LOCK` file in the directory; a file system that wraps it should forward to it.
    fn lock_dir(&self, dir: &Path) -> io::Result<DirLock> {
        let _ = dir;
        Ok(DirLock::none())
    }
}

/// The name of the file [`StdFileSystem::lock_dir`](FileSystem::lock_dir) locks in a data
/// directory. It holds the pid of the process that last locked it (text, for operators and
/// for the error a second opener gets); only the lock itself, never the file's presence,
/// says whether the directory is in use, so a file left by a killed process is harmless.
pub const LOCK_FILE_NAME: &str = "LOCK";

/// An exclusive lock on a data directory ([`FileSystem::lock_dir`]), released when dropped
/// (and by the operating system when the process ends, however it ends).
#[derive(Debug)]
pub struct DirLock {
    /// The locked file (an `flock` on its open file description), or `None` for no lock.
    _file: Option<File>,
}

impl DirLock {
    /// A lock that locks nothing, for file systems no other process can reach.
    pub fn none() -> DirLock {
        DirLock { _file: None }
    }

    /// Locks `dir`'s [`LOCK_FILE_NAME`] file with `flock(LOCK_EX | LOCK_NB)`, then records
    /// this process's pid in it.
    ///
    /// `flock` rather than `fcntl` locks: an `flock` belongs to the open file, so a second
    /// open in the same process is refused too (an `fcntl` lock is the process's, and would
    /// let two nodes of one process share a directory), and closing another descriptor of
    /// the same file does not release it. (`std::fs::File::try_lock` does the same, but only
    /// from Rust 1.89, above this crate's `rust-version`.)
    pub fn lock(dir: &Path) -> io::Result<DirLock> {
        use std::io::Read;
        use std::os::fd::AsRawFd;

        let path = dir.join(LOCK_FILE_NAME);
        let mut file =
            OpenOptions::new().read(true).write(true).create(true).truncate(false).open(&path)?;
        // SAFETY: `flock` only reads its arguments; the descriptor is open for the call.
        let locked = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if locked != 0 {
            let error = io::Error::last_os_error();
            if error.kind() != io::ErrorKind::WouldBlock {
                return Err(error);
            }
            let mut holder = String::new();
            let holder = match file.read_to_string(&mut holder) {
                Ok(_) => holder.trim().parse::<u32>().ok(),
                Err(_) => None,
            };
            let message = match holder {
                Some(pid) => format!("{} is locked by process {pid}", path.display()),
                None => format!("{} is locked by another process or node", path.display()),
            };
            return Err(io::Error::new(io::ErrorKind::WouldBlock, LockedBy { message, holder }));
        }
        file.set_len(0)?;
        file.write_all_at(format!("{}\n", std::process::id()).as_bytes(), 0)?;
        Ok(DirLock { _file: Some(file) })
    }
}

/// The error inside the [`io::Error`] of a refused [`DirLock::lock`]: who holds the lock.
#[derive(Debug)]
pub(crate) struct LockedBy {
    message: String,
    /// The pid recorded in the lock file, when it holds one.
    pub(crate) holder: Option<u32>,
}

impl std::fmt::Display for LockedBy {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(&self.message)
    }
}

impl std::error::Error for LockedBy {}

/// A file open for positioned writes.
pub trait AppendFile: Send + 'static {
    /// Writes all of `bytes` at `offset` (`pwrite`), growing the file if they reach past its
    /// end. Not yet durable.
    fn write_at(&mut self, bytes: &[u8], offset: u64) -> io::Result<()>;
    /// Makes every written byte, and the file's length, durable (`fdatasync`).
    fn sync_data(&mut self) -> io::Result<()>;
    /// Another handle to the same file (`dup`), so that one thread can sync it while another
    /// writes to it: a sync through either makes every byte written through both durable.
    fn try_clone(&self) -> io::Result<Self>
    where
        Self: Sized;
}

/// A file open for positioned reads, from any thread.
pub trait ReadAtFile: Send + Sync + 'static {
    /// Reads into `buf` from `offset` (`pread`), returning how many bytes were read: fewer
    /// than asked only at the end of the file.
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize>;
    /// The file's length in bytes.
    fn size(&self) -> io::Result<u64>;
}

/// A file's content held in memory, read by position: what an in-memory [`FileSystem`] (the
/// simulator's disk, a fuzzer's) opens for reading. It keeps the content it was given, so it
/// stays readable, unchanged, after the file is removed or replaced, as an open file does.
///
/// ```
/// use raft_consensus::storage::{InMemoryFile, ReadAtFile};
/// let file = InMemoryFile::new(b"snapshot".to_vec());
/// let mut buf = [0; 4];
/// assert_eq!(file.read_at(&mut buf, 4)?, 4);
/// assert_eq!(&buf, b"shot");
/// assert_eq!(file.read_at(&mut buf, 6)?, 2, "cut at the end");
/// assert_eq!(file.size()?, 8);
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Clone, Debug, Default)]
pub struct InMemoryFile {
    content: bytes::Bytes,
}

impl InMemoryFile {
    /// A file holding `content`.
    pub fn new(content: impl Into<bytes::Bytes>) -> Self {
        InMemoryFile { content: content.into() }
    }
}

impl ReadAtFile for InMemoryFile {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        let start = usize::try_from(offset).unwrap_or(usize::MAX).min(self.content.len());
        let count = buf.len().min(self.content.len() - start);
        buf[..count].copy_from_slice(&self.content[start..start + count]);
        Ok(count)
    }

    fn size(&self) -> io::Result<u64> {
        Ok(self.content.len() as u64)
    }
}

/// The operating system's file system.
#[derive(Clone, Copy, Debug, Default)]
pub struct StdFileSystem;

impl FileSystem for StdFileSystem {
    type File = File;
    type ReadFile = File;

    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        fs::create_dir_all(dir)
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in fs::read_dir(dir)? {
            if let Some(name) = entry?.file_name().to_str() {
                names.push(name.to_owned());
            }
        }
        Ok(names)
    }

    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        fs::read(path)
    }

    fn open_read(&self, path: &Path) -> io::Result<File> {
        File::open(path)
    }

    fn open_write(&self, path: &Path) -> io::Result<File> {
        OpenOptions::new().create(true).truncate(false).write(true).open(path)
    }

    fn truncate(&self, path: &Path, length: u64) -> io::Result<()> {
        let file = OpenOptions::new().write(true).open(path)?;
        file.set_len(length)?;
        file.sync_all()
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        fs::remove_file(path)
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        fs::rename(from, to)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        File::open(dir)?.sync_all()
    }

    fn lock_dir(&self, dir: &Path) -> io::Result<DirLock> {
        DirLock::lock(dir)
    }
}

impl AppendFile for File {
    fn write_at(&mut self, bytes: &[u8], offset: u64) -> io::Result<()> {
        FileExt::write_all_at(self, bytes, offset)
    }

    fn sync_data(&mut self) -> io::Result<()> {
        File::sync_data(self)
    }

    fn try_clone(&self) -> io::Result<File> {
        File::try_clone(self)
    }
}

impl ReadAtFile for File {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        let mut filled = 0;
        while filled < buf.len() {
            match FileExt::read_at(self, &mut buf[filled..], offset + filled as u64) {
                Ok(0) => break,
                Ok(count) => filled += count,
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(error) => return Err(error),
            }
        }
        Ok(filled)
    }

    fn size(&self) -> io::Result<u64> {
        Ok(self.metadata()?.len())
    }
}
