//! [`SyncThread`]: the thread that completes a node's storage syncs (its `fdatasync`s) in
//! the order they were flushed, so that the node's task goes on writing the next batch,
//! stepping messages and answering clients while the disk syncs the last one.

use std::sync::mpsc as std_mpsc;
use std::thread::JoinHandle;

use tokio::sync::mpsc;

use crate::error::StorageError;
use crate::storage::PendingSync;
use crate::types::NodeId;

/// One node's sync thread and the channel its results come back on.
pub(crate) struct SyncThread {
    jobs: Option<std_mpsc::Sender<Box<dyn PendingSync>>>,
    done: mpsc::UnboundedReceiver<Result<(), StorageError>>,
    thread: Option<JoinHandle<()>>,
}

impl SyncThread {
    /// Starts the sync thread of node `id`.
    pub(crate) fn spawn(id: NodeId) -> Result<SyncThread, StorageError> {
        let (jobs, job_receiver) = std_mpsc::channel::<Box<dyn PendingSync>>();
        let (done_sender, done) = mpsc::unbounded_channel();
        let thread = std::thread::Builder::new()
            .name(format!("raft-sync-{id}"))
            .spawn(move || {
                // Ends when the node drops its sender; a result nobody waits for any more is
                // dropped.
                for sync in job_receiver {
                    if done_sender.send(sync.complete()).is_err() {
                        break;
                    }
                }
            })
            .map_err(|error| {
                StorageError::io(format!("starting the sync thread of {id}"), error)
            })?;
        Ok(SyncThread { jobs: Some(jobs), done, thread: Some(thread) })
    }

    /// Hands `sync` to the thread, after every sync handed before it.
    pub(crate) fn start(&self, sync: Box<dyn PendingSync>) {
        // If the thread is gone, `done` reports it: its sender was dropped with it.
        if let Some(jobs) = &self.jobs {
            let _ = jobs.send(sync);
        }
    }

    /// The result of the oldest sync not yet reported, once it is done; an error if the
    /// thread is gone.
    pub(crate) async fn done(&mut self) -> Result<(), StorageError> {
        self.done.recv().await.unwrap_or_else(|| {
            Err(StorageError::io(
                String::from("syncing the log"),
                std::io::Error::other("the sync thread stopped"),
            ))
        })
    }
}

impl Drop for SyncThread {
    fn drop(&mut self) {
        // Closing the channel ends the thread once the syncs already handed over are done.
        self.jobs = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
