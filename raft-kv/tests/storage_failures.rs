//! A `raft-kv serve` process whose storage fails exits non-zero, promptly, with a one-line
//! reason that names the kind of failure (#15), so that its supervisor restarts it: corrupt
//! data at start (always runs), and a disk that fills while it serves (on a real small
//! tmpfs, when this process may mount one; otherwise it prints why it skipped). Waits are for
//! conditions, with deadlines.

#![cfg(unix)]

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::Processes;
use common::ports::free_addresses;
use raft_kv::client::request;

const DEADLINE: Duration = Duration::from_secs(30);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest a node may take to exit once its storage failed: the server gives requests in
/// flight 3 s, then exits.
const EXIT_DEADLINE: Duration = Duration::from_secs(8);

/// A single-node `raft-kv serve` on free loopback ports.
struct Node {
    http: SocketAddr,
    raft: SocketAddr,
    data_dir: PathBuf,
}

impl Node {
    fn new(data_dir: &Path) -> Node {
        let addresses = free_addresses(2);
        let (raft, http) = (addresses[0], addresses[1]);
        Node { http, raft, data_dir: data_dir.to_path_buf() }
    }

    fn command(&self) -> std::process::Command {
        let mut command = Processes::serve_command();
        command.args(["--id", "1"]).arg("--data-dir").arg(&self.data_dir);
        command.args(["--raft-addr", &self.raft.to_string()]);
        command.args(["--http-addr", &self.http.to_string()]);
        command
    }

    /// Starts it with its stderr captured, killed if the test ends first.
    fn spawn_captured(&self) -> tokio::process::Child {
        let mut command = tokio::process::Command::from(self.command());
        command
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("raft-kv starts")
    }

    /// Waits until it reports itself leader.
    async fn wait_for_leader(&self) {
        let started = Instant::now();
        loop {
            let reply = request(self.http, "GET", "/v1/status", &[], b"", REQUEST_TIMEOUT).await;
            if let Ok(reply) = reply
                && let Ok(status) = reply.json()
                && status["role"] == "Leader"
            {
                return;
            }
            assert!(started.elapsed() < DEADLINE, "no leader within {DEADLINE:?}");
            tokio::task::yield_now().await;
        }
    }

    /// Writes `key`; whether it was acknowledged.
    async fn put(&self, key: &str, value: &[u8]) -> bool {
        let path = format!("/v1/kv/{key}");
        let reply = request(self.http, "PUT", &path, &[], value, REQUEST_TIMEOUT).await;
        reply.is_ok_and(|reply| reply.status == 200)
    }
}

/// Waits (at most `deadline`) for `child` to exit; returns its exit code and stderr.
async fn exit_of(child: tokio::process::Child, deadline: Duration) -> (Option<i32>, String) {
    let output = tokio::time::timeout(deadline, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("the node did not exit within {deadline:?}"))
        .expect("the node's output");
    (output.status.code(), String::from_utf8_lossy(&output.stderr).into_owned())
}

/// The last line of `stderr`, which must be the process's one-line reason.
fn reason(stderr: &str) -> &str {
    stderr.lines().last().unwrap_or_default()
}

/// A node whose log is corrupt refuses to start: exit status 1 and "corrupt data: ..." naming
/// the file and offset.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_with_a_corrupt_log_exits_with_the_reason() {
    let root = tempfile::tempdir().unwrap();
    let node = Node::new(&root.path().join("node1"));
    let mut processes = Processes::default();
    processes.spawn(1, node.command());
    node.wait_for_leader().await;
    for key in 0..4 {
        assert!(node.put(&format!("key-{key}"), &[b'v'; 32 * 1024]).await, "write {key}");
    }
    processes.kill(1);

    // A byte in the middle of the log: inside an acknowledged write, before the end.
    let segment = node.data_dir.join(format!("wal-{:020}.log", 1));
    let mut bytes = std::fs::read(&segment).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(&segment, bytes).unwrap();

    let (code, stderr) = exit_of(node.spawn_captured(), DEADLINE).await;
    assert_eq!(code, Some(1), "{stderr}");
    let line = reason(&stderr);
    assert!(line.starts_with("raft-kv: "), "{stderr}");
    assert!(line.contains("corrupt data: write-ahead log record in "), "{line}");
    assert!(line.contains("wal-00000000000000000001.log"), "{line}");
}

/// A tmpfs of `bytes` mounted on a new temporary directory, unmounted when dropped; `None`
/// (with the reason printed) when this process may not mount one.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(bytes: u64) -> Option<Tmpfs> {
        let dir = tempfile::tempdir().ok()?;
        let mounted = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={bytes}"), "tmpfs"])
            .arg(dir.path())
            .output();
        match mounted {
            Ok(output) if output.status.success() => Some(Tmpfs { dir }),
            Ok(output) => {
                let reason = String::from_utf8_lossy(&output.stderr);
                println!("skipped: cannot mount a tmpfs (needs root): {}", reason.trim());
                None
            }
            Err(error) => {
                println!("skipped: cannot run mount: {error}");
                None
            }
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(self.dir.path()).status();
    }
}

/// On a 2 MiB tmpfs (far less than a 64 MiB segment), a node starts and serves; when its
/// disk fills, it exits with status 1 within a few seconds, even with a request in flight
/// that never completes (a PUT whose body never arrives), its last line "raft-kv: ...
/// storage failed: disk full (No space left on device ...) while writing ...".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_whose_disk_fills_exits_with_disk_full() {
    let Some(tmpfs) = Tmpfs::mount(2 * 1024 * 1024) else { return };
    let node = Node::new(&tmpfs.dir.path().join("node1"));
    let child = node.spawn_captured();
    node.wait_for_leader().await;
    let mut stalled = tokio::net::TcpStream::connect(node.http).await.expect("connects");
    let head = "PUT /v1/kv/stalled HTTP/1.1\r\nHost: raft-kv\r\nContent-Length: 1000\r\n\r\nabc";
    tokio::io::AsyncWriteExt::write_all(&mut stalled, head.as_bytes()).await.expect("sends");
    let mut acknowledged = 0;
    while node.put(&format!("key-{acknowledged}"), &[b'v'; 64 * 1024]).await {
        acknowledged += 1;
        assert!(acknowledged < 100, "2 MiB never filled");
    }
    let failed = Instant::now();
    assert!(acknowledged > 0, "nothing was written");

    let (code, stderr) = exit_of(child, EXIT_DEADLINE).await;
    let took = failed.elapsed();
    assert_eq!(code, Some(1), "{stderr}");
    let line = reason(&stderr);
    assert!(line.starts_with("raft-kv: "), "{stderr}");
    assert!(line.contains("storage failed: disk full (No space left on device"), "{line}");
    assert!(line.contains("wal-"), "the message names the file: {line}");
    println!("exited {took:?} after the failed write: {line}");
    drop(stalled);
}
