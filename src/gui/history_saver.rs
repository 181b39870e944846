//! Writes the gallery index off the window's thread: a save (serialise, write, fsync, rename) can
//! take tens of milliseconds on a slow disk, longer than a frame. One named thread takes snapshots
//! through a channel and always writes the newest it has; failures come back as messages.

use std::path::PathBuf;
use std::sync::mpsc::{channel, Receiver, Sender};

use crate::history::History;

/// The saving thread's handle.
pub struct HistorySaver {
    snapshots: Sender<History>,
    failures: Receiver<String>,
    thread: std::thread::JoinHandle<()>,
}

impl HistorySaver {
    /// Starts the thread writing to `path`.
    pub fn spawn(path: PathBuf) -> std::io::Result<Self> {
        let (snapshots, inbox) = channel::<History>();
        let (report, failures) = channel::<String>();
        let thread = std::thread::Builder::new().name("easel-history".into()).spawn(move || {
            while let Ok(mut newest) = inbox.recv() {
                // Several snapshots queued: only the newest matters.
                while let Ok(newer) = inbox.try_recv() {
                    newest = newer;
                }
                if let Err(e) = newest.save(&path) {
                    let _ = report.send(e.to_string());
                }
            }
        })?;
        Ok(Self { snapshots, failures, thread })
    }

    /// Queues a snapshot to write.
    pub fn save(&self, history: History) {
        // The thread only stops when this handle is dropped.
        let _ = self.snapshots.send(history);
    }

    /// Writes `last` after anything queued, waits for the thread, and returns every failure.
    pub fn finish(self, last: History) -> Vec<String> {
        let _ = self.snapshots.send(last);
        drop(self.snapshots);
        let _ = self.thread.join();
        self.failures.try_iter().collect()
    }

    /// Save failures since the last call.
    pub fn failures(&self) -> Vec<String> {
        self.failures.try_iter().collect()
    }
}
