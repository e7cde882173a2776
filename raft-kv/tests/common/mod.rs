//! What raft-kv's tests share: `raft-kv serve` child processes, quiet (`RUST_LOG=warn`,
//! output discarded), killed when the test ends however it ends; and free ports for nodes
//! (`ports.rs`).

pub mod ports;

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};

/// The running `raft-kv serve` processes, by node id.
#[derive(Default)]
#[allow(dead_code, reason = "the in-process tests include this module for its ports only")]
pub struct Processes {
    children: BTreeMap<u64, Child>,
}

impl Drop for Processes {
    fn drop(&mut self) {
        for child in self.children.values_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Processes {
    /// A `raft-kv serve --insecure` command (peers over plain TCP) for the caller to add its
    /// flags to.
    #[allow(dead_code, reason = "not every test that includes this module uses it")]
    pub fn serve_command() -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_raft-kv"));
        command.args(["serve", "--insecure"]);
        command
    }

    /// Takes `child`, started by the caller, as node `id` (killed when this drops).
    #[allow(dead_code, reason = "not every test that includes this module adopts")]
    pub fn adopt(&mut self, id: u64, child: std::process::Child) {
        self.children.insert(id, child);
    }

    /// Starts `command` (from [`serve_command`](Self::serve_command)) as node `id`.
    #[allow(dead_code, reason = "not every test that includes this module uses it")]
    pub fn spawn(&mut self, id: u64, mut command: Command) {
        let child = command
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("raft-kv starts");
        self.children.insert(id, child);
    }

    /// Kills node `id` with SIGKILL and reaps it.
    #[allow(dead_code, reason = "not every test that includes this module uses it")]
    pub fn kill(&mut self, id: u64) {
        let mut child = self.children.remove(&id).expect("a running node");
        child.kill().expect("SIGKILL");
        child.wait().expect("the killed node is reaped");
    }

    /// The ids of the running nodes.
    #[allow(dead_code, reason = "not every test that includes this module asks")]
    pub fn running(&self) -> impl Iterator<Item = u64> + '_ {
        self.children.keys().copied()
    }

    /// Whether node `id` runs.
    #[allow(dead_code, reason = "not every test that includes this module asks")]
    pub fn is_running(&self, id: u64) -> bool {
        self.children.contains_key(&id)
    }
}
