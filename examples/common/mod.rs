//! Helpers the runnable examples share: logging set up from `RUST_LOG`, where nodes keep
//! their logs, waiting for a leader and proposing through it. (The examples read each node's
//! store with `RaftNode::read`: no state machine wrapper is needed.)

use std::io::IsTerminal;
use std::time::Duration;

use std::path::PathBuf;

use anyhow::Context;
use raft_consensus::client::Client;
use raft_consensus::storage::{WalIdentity, WalOptions, WalStorage};
use raft_consensus::{NodeId, RaftNode};
use tracing_subscriber::EnvFilter;

/// The cluster id the examples' logs are stamped with.
const EXAMPLE_CLUSTER_ID: u64 = 0xE4A3_01E5;

/// Where the examples' nodes keep their write-ahead logs: under `RAFT_DATA_DIR` when it is
/// set (kept, so a second run restarts from it), otherwise in a fresh temporary directory
/// removed when the example ends (so every run starts at term 1, as the README shows).
pub struct DataDirs {
    root: PathBuf,
    _temporary: Option<tempfile::TempDir>,
}

impl DataDirs {
    pub fn new() -> anyhow::Result<Self> {
        match std::env::var_os("RAFT_DATA_DIR") {
            Some(root) => Ok(DataDirs { root: PathBuf::from(root), _temporary: None }),
            None => {
                let temporary = tempfile::Builder::new()
                    .prefix("raft-consensus-example-")
                    .tempdir()
                    .context("creating a temporary data directory")?;
                Ok(DataDirs { root: temporary.path().to_path_buf(), _temporary: Some(temporary) })
            }
        }
    }

    /// Node `id`'s data directory.
    pub fn node_dir(&self, id: NodeId) -> PathBuf {
        self.root.join(id.to_string())
    }

    /// Opens node `id`'s write-ahead log (recovering what an earlier run left there).
    pub fn storage(&self, id: NodeId) -> anyhow::Result<WalStorage> {
        let dir = self.node_dir(id);
        let identity = WalIdentity { node_id: id, cluster_id: EXAMPLE_CLUSTER_ID };
        let storage = WalStorage::open(&dir, identity, WalOptions::default())
            .with_context(|| format!("opening {id}'s write-ahead log in {}", dir.display()))?;
        println!("{id} keeps its log in {}", dir.display());
        Ok(storage)
    }
}

/// Logs to stdout, filtered by `RUST_LOG` (default `info`). Colours only on a terminal, so
/// piped output holds the plain log lines.
pub fn init_logging() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stdout().is_terminal())
        .init();
}

/// Waits until `observer` follows (or is) a leader other than `excluded`, and returns it.
pub async fn wait_for_leader(
    observer: &RaftNode,
    excluded: Option<NodeId>,
    timeout: Duration,
) -> anyhow::Result<NodeId> {
    let status = observer
        .wait_for(timeout, |status| status.leader_id.is_some() && status.leader_id != excluded)
        .await
        .with_context(|| format!("no leader elected within {timeout:?}"))?;
    status.leader_id.context("the status has a leader")
}

/// Proposes `command` through the leader among `nodes` with the library's leader-following
/// [`Client`] (it follows `NotLeader` hints, and backs off while no leader is known).
pub async fn propose(nodes: &[&RaftNode], command: Vec<u8>) -> anyhow::Result<Vec<u8>> {
    let client = Client::new(nodes.iter().map(|node| (node.id(), (*node).clone())))?;
    Ok(client.propose(command).await?)
}
