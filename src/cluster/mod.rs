//! Several ringtalk nodes serving one chat, joined by a NATS server (`--cluster nats://HOST:PORT`).
//!
//! No maintained NATS client runs without tokio, so each node runs one *bridge* thread: a
//! current-thread tokio runtime with the `async-nats` client, the same shape as the SQLite and
//! bcrypt workers. No shard waits on it. What it does so far:
//!
//! - it connects, and reconnects by itself when the NATS server goes and comes back (the log says
//!   so, and [`ClusterView::connected`] follows);
//! - it announces this node once a second and keeps the [`membership`] of live nodes (a node not
//!   heard from for 3 s is gone);
//! - [`placement`] says which node is a channel's home (rendezvous hashing over the live nodes).
//!
//! Lines, accounts and channels do not cross nodes yet: each node still serves its own users and
//! channels alone (docs/ARCHITECTURE.md, "Cluster", says what is built and what is not).

pub mod membership;
pub mod placement;

use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Instant;

use futures::StreamExt;
use tracing::{info, warn};

use membership::{Membership, ANNOUNCE_EVERY};

/// The subject every node announces itself on.
pub const NODES_SUBJECT: &str = "ringtalk.nodes";

/// What the rest of the server (the heartbeat, tests) may read of the cluster.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClusterView {
    /// The bridge is connected to the NATS server now.
    pub connected: bool,
    /// Live nodes, this one included, in name order.
    pub nodes: Vec<String>,
}

/// Reads the bridge's [`ClusterView`] from any thread.
#[derive(Clone, Debug)]
pub struct ClusterWatch(Arc<Mutex<ClusterView>>);

impl ClusterWatch {
    /// The cluster as the bridge sees it now.
    pub fn view(&self) -> ClusterView {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// The bridge thread and what it shares.
#[derive(Debug)]
pub struct Cluster {
    view: Arc<Mutex<ClusterView>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Cluster {
    /// Starts the bridge thread for node `node` of the cluster at `url`. Returns at once: the
    /// connection is made (and remade) in the background.
    pub fn start(url: &str, node: &str) -> std::io::Result<Cluster> {
        let view = Arc::new(Mutex::new(ClusterView {
            connected: false,
            nodes: vec![node.to_string()],
        }));
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let (url, node, shared) = (url.to_string(), node.to_string(), view.clone());
        let thread = std::thread::Builder::new()
            .name("ringtalk-bridge".into())
            .spawn(move || runtime.block_on(bridge(url, node, shared, stop_rx)))?;
        Ok(Cluster {
            view,
            stop: Some(stop_tx),
            thread: Some(thread),
        })
    }

    /// The cluster as the bridge sees it now.
    pub fn view(&self) -> ClusterView {
        self.watch().view()
    }

    /// A handle that reads the view from any thread (the heartbeat's).
    pub fn watch(&self) -> ClusterWatch {
        ClusterWatch(self.view.clone())
    }

    /// Stops the bridge and waits for its thread.
    pub fn stop(mut self) {
        self.stop_and_join();
    }

    fn stop_and_join(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.stop_and_join();
    }
}

/// The bridge: keeps the connection, announces this node, follows the others.
async fn bridge(
    url: String,
    node: String,
    view: Arc<Mutex<ClusterView>>,
    mut stop: tokio::sync::oneshot::Receiver<()>,
) {
    let events = view.clone();
    let connecting = async_nats::ConnectOptions::new()
        .name(&node)
        .retry_on_initial_connect()
        .event_callback(move |event| {
            let view = events.clone();
            async move {
                let connected = match event {
                    async_nats::Event::Connected => true,
                    async_nats::Event::Disconnected => false,
                    _ => return,
                };
                if connected {
                    info!("cluster: connected to NATS");
                } else {
                    warn!("cluster: lost NATS; reconnecting");
                }
                view.lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .connected = connected;
            }
        })
        .connect(url.as_str())
        .await;
    let client = match connecting {
        Ok(client) => client,
        Err(e) => {
            warn!(%url, error = %e, "cluster: cannot use this NATS address; this node runs alone");
            return;
        }
    };
    let mut announcements = match client.subscribe(NODES_SUBJECT).await {
        Ok(sub) => sub,
        Err(e) => {
            warn!(error = %e, "cluster: cannot subscribe; this node runs alone");
            return;
        }
    };
    let mut membership = Membership::new(&node, Instant::now());
    let mut tick = tokio::time::interval(ANNOUNCE_EVERY);
    loop {
        tokio::select! {
            _ = &mut stop => break,
            _ = tick.tick() => {
                // Queued by the client while NATS is away, and sent when it is back; never
                // waited on for longer than a tick, so a stop is never held up by it.
                let announce = client.publish(NODES_SUBJECT, node.clone().into());
                let _ = tokio::time::timeout(ANNOUNCE_EVERY, announce).await;
                for gone in membership.expire(&node, Instant::now()) {
                    info!(node = %gone, "cluster: node gone");
                }
            }
            msg = announcements.next() => {
                let Some(msg) = msg else { break };
                if let Ok(name) = std::str::from_utf8(&msg.payload) {
                    if membership.heard(name, Instant::now()) {
                        info!(node = %name, "cluster: node joined");
                    }
                }
            }
        }
        view.lock().unwrap_or_else(PoisonError::into_inner).nodes =
            membership.nodes().map(str::to_string).collect();
    }
    // What is queued goes out if NATS is there; if it is away, the flush would wait for it.
    let _ = tokio::time::timeout(FLUSH_AT_STOP, client.flush()).await;
}

/// How long a stopping node waits to send what it has queued for NATS.
const FLUSH_AT_STOP: std::time::Duration = std::time::Duration::from_secs(1);

/// This node's name unless `--node-name` gives one: the host name and the process id.
pub fn default_node_name() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most `buf.len()` bytes into the buffer we own.
    let ok = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) } == 0;
    let host: String = if ok {
        let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
        String::from_utf8_lossy(&buf[..end])
            .chars()
            .filter(char::is_ascii_graphic)
            .take(48)
            .collect()
    } else {
        String::new()
    };
    let host = if host.is_empty() {
        "node".to_string()
    } else {
        host
    };
    format!("{host}-{}", std::process::id())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_node_name_is_a_valid_one() {
        let name = default_node_name();
        assert!(membership::valid_node_name(&name), "{name:?}");
        assert!(name.ends_with(&format!("-{}", std::process::id())));
    }
}
