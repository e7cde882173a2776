//! [`MemoryFs`]: a file system in memory for the write-ahead log under fuzzing: fast (no
//! `fsync`), private to one input, and inspectable (a failed recovery must leave every file
//! as it found it). Every write is durable at once; segments are prepared inline, so a run is
//! deterministic.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use raft_consensus::storage::{AppendFile, FileSystem, InMemoryFile};

/// Files and directories, shared by every clone.
#[derive(Clone, Debug, Default)]
pub struct MemoryFs {
    state: Arc<Mutex<State>>,
}

#[derive(Debug, Default)]
struct State {
    dirs: BTreeSet<PathBuf>,
    files: BTreeMap<PathBuf, Vec<u8>>,
}

impl MemoryFs {
    /// Creates `path` (and its directory) holding `bytes`.
    pub fn put(&self, path: &Path, bytes: &[u8]) {
        let mut state = self.lock();
        if let Some(parent) = path.parent() {
            state.dirs.insert(parent.to_path_buf());
        }
        state.files.insert(path.to_path_buf(), bytes.to_vec());
    }

    /// Every file and its content.
    pub fn files(&self) -> BTreeMap<PathBuf, Vec<u8>> {
        self.lock().files.clone()
    }

    /// Replaces the content of `path`, if it exists, with what `change` makes of it.
    pub fn modify(&self, path: &Path, change: impl FnOnce(&mut Vec<u8>)) {
        if let Some(bytes) = self.lock().files.get_mut(path) {
            change(bytes);
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while the lock is held fails the input anyway: the state is still readable.
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

fn not_found(path: &Path) -> io::Error {
    io::Error::new(io::ErrorKind::NotFound, format!("{} does not exist", path.display()))
}

impl FileSystem for MemoryFs {
    type File = MemoryFile;
    type ReadFile = InMemoryFile;

    fn open_read(&self, path: &Path) -> io::Result<InMemoryFile> {
        let content = self.lock().files.get(path).cloned().ok_or_else(|| not_found(path))?;
        Ok(InMemoryFile::new(content))
    }

    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        self.lock().dirs.insert(dir.to_path_buf());
        Ok(())
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let state = self.lock();
        if !state.dirs.contains(dir) {
            return Err(not_found(dir));
        }
        let in_dir = state.files.keys().filter(|path| path.parent() == Some(dir));
        Ok(in_dir.filter_map(|path| Some(path.file_name()?.to_str()?.to_owned())).collect())
    }

    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        self.lock().files.get(path).cloned().ok_or_else(|| not_found(path))
    }

    fn open_write(&self, path: &Path) -> io::Result<MemoryFile> {
        self.lock().files.entry(path.to_path_buf()).or_default();
        Ok(MemoryFile { fs: self.clone(), path: path.to_path_buf() })
    }

    fn truncate(&self, path: &Path, length: u64) -> io::Result<()> {
        let mut state = self.lock();
        let file = state.files.get_mut(path).ok_or_else(|| not_found(path))?;
        file.resize(usize::try_from(length).map_err(io::Error::other)?, 0);
        Ok(())
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        self.lock().files.remove(path).map(drop).ok_or_else(|| not_found(path))
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut state = self.lock();
        let bytes = state.files.remove(from).ok_or_else(|| not_found(from))?;
        state.files.insert(to.to_path_buf(), bytes);
        Ok(())
    }

    fn sync_dir(&self, _dir: &Path) -> io::Result<()> {
        Ok(())
    }

    fn prepare_in_background(&self) -> bool {
        false
    }
}

/// A file of a [`MemoryFs`], open for positioned writes.
#[derive(Debug)]
pub struct MemoryFile {
    fs: MemoryFs,
    path: PathBuf,
}

impl AppendFile for MemoryFile {
    fn write_at(&mut self, bytes: &[u8], offset: u64) -> io::Result<()> {
        let mut state = self.fs.lock();
        let file = state.files.get_mut(&self.path).ok_or_else(|| not_found(&self.path))?;
        let start = usize::try_from(offset).map_err(io::Error::other)?;
        let end = start.checked_add(bytes.len()).ok_or_else(|| io::Error::other("overflow"))?;
        if file.len() < end {
            file.resize(end, 0);
        }
        file[start..end].copy_from_slice(bytes);
        Ok(())
    }

    fn sync_data(&mut self) -> io::Result<()> {
        Ok(())
    }

    fn try_clone(&self) -> io::Result<MemoryFile> {
        Ok(MemoryFile { fs: self.fs.clone(), path: self.path.clone() })
    }
}
