//! The data directory's lock: a [`WalStorage`] holds its directory exclusively while it lives.
//! A second open, from this process or another, is refused with
//! [`StorageError::DirectoryLocked`] naming the directory and the holder's pid; the lock goes
//! when the storage is dropped, and with the process that held it, even one killed with
//! `SIGKILL` (a restarted node must never find its own directory locked by the dead one).
//!
//! The other process is this test binary itself, re-run with `--ignored --exact
//! wal_lock_child`: that ignored test does nothing unless `WAL_LOCK_CHILD_DIR` is set; with
//! it, it opens the log there, prints `WALLOCK HELD`, and holds it until killed (or until its stdin closes).
#![cfg(unix)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Mutex;

use raft_consensus::storage::{LOCK_FILE_NAME, Storage, WalIdentity, WalOptions, WalStorage};
use raft_consensus::{HardState, NodeId, StorageError, StorageErrorKind, Term};

const IDENTITY: WalIdentity = WalIdentity { node_id: NodeId(1), cluster_id: 7 };

fn open(dir: &Path) -> Result<WalStorage, StorageError> {
    WalStorage::open(dir, IDENTITY, WalOptions::default())
}

/// Asserts that `result` is the refusal of a locked `dir`, held by `pid`.
fn assert_locked(result: Result<WalStorage, StorageError>, dir: &Path, pid: u32) {
    match result {
        Err(error @ StorageError::DirectoryLocked { .. }) => {
            let StorageError::DirectoryLocked { dir: locked, holder_pid } = &error else {
                unreachable!("matched above");
            };
            assert_eq!(locked, dir);
            assert_eq!(*holder_pid, Some(pid));
            assert_eq!(error.kind(), StorageErrorKind::Other);
            let message = error.to_string();
            assert!(message.contains(&dir.display().to_string()), "{message}");
            assert!(message.contains(&format!("process {pid}")), "{message}");
        }
        Err(other) => panic!("expected the directory to be locked, got: {other}"),
        Ok(_) => panic!("a second WalStorage opened {} while the first holds it", dir.display()),
    }
}

/// Held by [`another_process_is_refused_and_its_lock_dies_with_it`] while it spawns its child,
/// and by the same-process test throughout. A child process starts with a copy of every
/// open descriptor, the lock's included, until its `exec` closes them: in that window a
/// storage dropped here would still be locked by the child's copy, and the reopen refused.
static SPAWNING: Mutex<()> = Mutex::new(());

#[test]
fn a_second_open_in_the_same_process_is_refused_until_the_first_is_dropped() {
    let _no_spawn = SPAWNING.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let mut first = open(dir.path()).unwrap();
    first.save_hard_state(&HardState { term: Term(3), ..HardState::default() }).unwrap();
    first.sync().unwrap();
    assert!(dir.path().join(LOCK_FILE_NAME).exists());

    assert_locked(open(dir.path()), dir.path(), std::process::id());
    // The refused open changed nothing: the first storage goes on writing.
    first.save_hard_state(&HardState { term: Term(4), ..HardState::default() }).unwrap();
    first.sync().unwrap();

    drop(first);
    let mut reopened = open(dir.path()).expect("the lock is released when the storage drops");
    assert_eq!(reopened.load().unwrap().hard_state.term, Term(4));
}

#[test]
fn a_leftover_lock_file_without_a_holder_does_not_lock() {
    // A lock file a killed process left (or one copied with the directory) holds a pid but no
    // lock: only the lock counts.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join(LOCK_FILE_NAME), "4242\n").unwrap();
    let storage = open(dir.path()).expect("an unlocked lock file is no lock");
    let recorded = std::fs::read_to_string(dir.path().join(LOCK_FILE_NAME)).unwrap();
    assert_eq!(recorded.trim(), std::process::id().to_string());
    drop(storage);
}

#[test]
fn another_process_is_refused_and_its_lock_dies_with_it() {
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().expect("the test binary's path");
    let spawning = SPAWNING.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let mut child = Command::new(exe)
        .args(["--ignored", "--exact", "wal_lock_child", "--nocapture", "--test-threads=1"])
        .env("WAL_LOCK_CHILD_DIR", dir.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawning the child process");
    // The child has run `exec`: it holds none of this process's descriptors any more.
    drop(spawning);
    let stdout = child.stdout.take().expect("stdout is piped");
    let mut lines = BufReader::new(stdout).lines();
    // Blocks until the child has the lock (or ends: then the test fails below).
    let locked = lines.any(|line| line.is_ok_and(|line| line.contains("WALLOCK HELD")));
    assert!(locked, "the child never reported holding the lock");

    assert_locked(open(dir.path()), dir.path(), child.id());

    child.kill().expect("killing the child (SIGKILL)");
    child.wait().expect("reaping the child");
    let mut reopened = open(dir.path()).expect("a killed holder's lock is gone with it");
    assert_eq!(reopened.load().unwrap().hard_state.term, Term(9));
}

/// The other process of [`another_process_is_refused_and_its_lock_dies_with_it`]: holds the
/// directory until killed. Does nothing when run on its own.
#[test]
#[ignore = "run by another_process_is_refused_and_its_lock_dies_with_it, in its own process"]
fn wal_lock_child() {
    let Some(dir) = std::env::var_os("WAL_LOCK_CHILD_DIR") else {
        return;
    };
    let mut storage = open(Path::new(&dir)).unwrap();
    storage.save_hard_state(&HardState { term: Term(9), ..HardState::default() }).unwrap();
    storage.sync().unwrap();
    println!("WALLOCK HELD");
    // Hold the lock until killed, or until the parent goes away (its end of stdin closes).
    let _ = std::io::Read::read_to_end(&mut std::io::stdin(), &mut Vec::new());
}
