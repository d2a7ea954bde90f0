//! A thread that shards feed through a bounded queue (the channel logs, the audit log) and that
//! leaves when it reads a stop message: the one handle the server keeps to stop it. Stopping
//! sends the message after whatever is queued, so the thread writes everything first, then joins
//! it; dropping the handle does the same, once.

use std::fmt;
use std::io;
use std::thread::{self, JoinHandle};

use crossbeam_channel::Sender;
use tracing::warn;

/// A running writer thread, reading messages of type `M`.
pub struct WriterThread<M> {
    /// The handle's own sender, used once to send the stop message.
    stop: Option<Sender<M>>,
    /// Makes the stop message.
    stop_message: fn() -> M,
    thread: Option<JoinHandle<()>>,
    name: &'static str,
}

impl<M> fmt::Debug for WriterThread<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WriterThread")
            .field("name", &self.name)
            .field("running", &self.thread.is_some())
            .finish()
    }
}

impl<M> WriterThread<M> {
    /// Starts `run` on a thread named `name`; `queue` is a sender of the queue it reads, on
    /// which [`WriterThread::stop`] sends `stop_message()`.
    pub fn spawn(
        name: &'static str,
        queue: Sender<M>,
        stop_message: fn() -> M,
        run: impl FnOnce() + Send + 'static,
    ) -> io::Result<WriterThread<M>> {
        let thread = thread::Builder::new().name(name.into()).spawn(run)?;
        Ok(WriterThread {
            stop: Some(queue),
            stop_message,
            thread: Some(thread),
            name,
        })
    }

    /// Stops the thread once it has written everything queued before, and joins it. Call it
    /// after the shards have stopped sending: a message queued meanwhile may be lost.
    pub fn stop(mut self) {
        self.finish();
    }

    fn finish(&mut self) {
        if let Some(stop) = self.stop.take() {
            // Not a shard: a blocking send is fine, and fails only if the thread has gone.
            let _ = stop.send((self.stop_message)());
        }
        if let Some(thread) = self.thread.take() {
            if thread.join().is_err() {
                warn!(thread = self.name, "a writer thread panicked");
            }
        }
    }
}

impl<M> Drop for WriterThread<M> {
    fn drop(&mut self) {
        self.finish();
    }
}
