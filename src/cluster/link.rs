//! The queues between a node's shards and its bridge thread.
//!
//! Shards hand the bridge [`ClusterOut`] messages through one tokio channel (the bridge awaits it
//! on its runtime; a shard's send never waits), and the bridge hands each shard [`ClusterIn`]
//! messages through a crossbeam channel of its own and rings the shard's doorbell, as a ring
//! between shards would; the shard's inbox task takes them with the rings' messages. Neither side
//! ever waits for room, so the bridge adds no edge to the graph of awaited sends.
//!
//! Both directions carry control messages (joins, leaves, answers, views), which always go, and
//! lines, which are bounded: at most [`LINES_TO_BRIDGE`] lines wait for the bridge from all shards
//! and [`LINES_TO_SHARD`] for each shard; past that a line is dropped and counted, and its loss
//! shows where it belongs (a gap in the home's numbers becomes a `[N messages dropped]` notice).
//! Control messages are few per session and per change of the cluster, so their queues stay short
//! by what sends them.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;

use tokio::sync::mpsc;

use super::wire::{ClusterIn, ClusterOut};
use crate::mesh::Doorbell;

/// Lines that may wait for the bridge, from all shards together.
pub const LINES_TO_BRIDGE: usize = 65_536;
/// Lines that may wait for one shard, from the bridge.
pub const LINES_TO_SHARD: usize = 65_536;

/// What the heartbeat shows of the traffic with other nodes.
#[derive(Debug, Default)]
pub struct Traffic {
    /// Messages published to NATS.
    pub sent: AtomicU64,
    /// Messages from other nodes handed to a shard.
    pub received: AtomicU64,
    /// Lines dropped because a queue between the shards and the bridge was full, or NATS away.
    pub dropped: AtomicU64,
}

/// A shard's end.
#[derive(Debug)]
pub struct ShardLink {
    to_bridge: mpsc::UnboundedSender<ClusterOut>,
    /// Lines waiting for the bridge, from every shard (shared with the bridge, which counts down).
    lines_to_bridge: Arc<AtomicUsize>,
    from_bridge: crossbeam_channel::Receiver<ClusterIn>,
    /// Lines waiting for this shard (the bridge counts up).
    lines_here: Arc<AtomicUsize>,
    traffic: Arc<Traffic>,
}

impl ShardLink {
    /// Hands `msg` to the bridge, or drops it if it is a line and too many wait.
    pub fn send(&self, msg: ClusterOut) {
        if msg.droppable() {
            if self.lines_to_bridge.load(Relaxed) >= LINES_TO_BRIDGE {
                self.traffic.dropped.fetch_add(1, Relaxed);
                return;
            }
            self.lines_to_bridge.fetch_add(1, Relaxed);
        }
        // Fails only once the bridge has stopped, when there is nobody to tell.
        let _ = self.to_bridge.send(msg);
    }

    /// The next message from the bridge, if one is waiting.
    pub fn try_recv(&self) -> Option<ClusterIn> {
        let msg = self.from_bridge.try_recv().ok()?;
        if msg.droppable() {
            self.lines_here.fetch_sub(1, Relaxed);
        }
        Some(msg)
    }
}

/// The bridge's way to one shard.
#[derive(Debug)]
struct ToShard {
    tx: crossbeam_channel::Sender<ClusterIn>,
    lines: Arc<AtomicUsize>,
    doorbell: Arc<Doorbell>,
}

/// The bridge's end: what the shards send, and a way to each shard. Cloning it clones the ways
/// to the shards (for tasks of the bridge that hand messages over), not the receiver.
#[derive(Debug, Clone)]
pub struct ToShards {
    shards: Arc<[ToShard]>,
    traffic: Arc<Traffic>,
}

impl ToShards {
    /// Hands `msg` to shard `shard` and rings its doorbell; a line is dropped (and counted) if
    /// the shard has too many waiting.
    pub fn send(&self, shard: usize, msg: ClusterIn) {
        let Some(to) = self.shards.get(shard) else {
            return;
        };
        if msg.droppable() {
            if to.lines.load(Relaxed) >= LINES_TO_SHARD {
                self.traffic.dropped.fetch_add(1, Relaxed);
                return;
            }
            to.lines.fetch_add(1, Relaxed);
        }
        if msg.from_another_node() {
            self.traffic.received.fetch_add(1, Relaxed);
        }
        if to.tx.send(msg).is_ok() {
            to.doorbell.ring();
        }
    }

    /// Hands every shard a message made by `msg`.
    pub fn send_all(&self, msg: impl Fn() -> ClusterIn) {
        for shard in 0..self.shards.len() {
            self.send(shard, msg());
        }
    }

    /// How many shards.
    pub fn len(&self) -> usize {
        self.shards.len()
    }

    /// Whether there are none (never, in a running server).
    pub fn is_empty(&self) -> bool {
        self.shards.is_empty()
    }

    /// The counters.
    pub fn traffic(&self) -> &Arc<Traffic> {
        &self.traffic
    }
}

/// What the bridge receives from the shards.
#[derive(Debug)]
pub struct FromShards {
    rx: mpsc::UnboundedReceiver<ClusterOut>,
    lines: Arc<AtomicUsize>,
}

impl FromShards {
    /// The next message from any shard; `None` once every shard's end is gone.
    pub async fn recv(&mut self) -> Option<ClusterOut> {
        let msg = self.rx.recv().await?;
        if msg.droppable() {
            self.lines.fetch_sub(1, Relaxed);
        }
        Some(msg)
    }
}

/// Links for shards with these doorbells: one end per shard, and the bridge's two.
pub fn links(doorbells: &[Arc<Doorbell>]) -> (Vec<ShardLink>, ToShards, FromShards) {
    let traffic = Arc::new(Traffic::default());
    let (to_bridge, rx) = mpsc::unbounded_channel();
    let lines_to_bridge = Arc::new(AtomicUsize::new(0));
    let mut ends = Vec::with_capacity(doorbells.len());
    let mut shards = Vec::with_capacity(doorbells.len());
    for doorbell in doorbells {
        let (tx, from_bridge) = crossbeam_channel::unbounded();
        let lines = Arc::new(AtomicUsize::new(0));
        ends.push(ShardLink {
            to_bridge: to_bridge.clone(),
            lines_to_bridge: lines_to_bridge.clone(),
            from_bridge,
            lines_here: lines.clone(),
            traffic: traffic.clone(),
        });
        shards.push(ToShard {
            tx,
            lines,
            doorbell: doorbell.clone(),
        });
    }
    let to_shards = ToShards {
        shards: shards.into(),
        traffic,
    };
    let from_shards = FromShards {
        rx,
        lines: lines_to_bridge,
    };
    (ends, to_shards, from_shards)
}
