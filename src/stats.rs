//! Counters that shards bump and anyone may read: the heartbeat log line, tests, and the load generator's
//! view of the server all come from here, so none of them parses logs.
//!
//! Each shard writes only its own [`ShardStats`] (relaxed atomics, no contention); readers take a
//! [`Snapshot`], which is consistent per counter, not across counters.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

use crate::defences::Limit;

/// Kinds of limit counted (see [`Limit::ALL`]).
pub const LIMITS: usize = Limit::ALL.len();

/// One shard's counters.
#[derive(Debug, Default)]
pub struct ShardStats {
    /// Connections accepted since start.
    pub accepted: AtomicU64,
    /// Connections open now.
    pub connections: AtomicU64,
    /// Sessions that are logged in now.
    pub logged_in: AtomicU64,
    /// Channels homed on this shard.
    pub channels: AtomicU64,
    /// Local sessions that are in a channel now.
    pub members: AtomicU64,
    /// Lines ordered by channels homed here (chat, joins, leaves) since start.
    pub lines: AtomicU64,
    /// Lines put into local sessions' outgoing queues since start.
    pub deliveries: AtomicU64,
    /// Lines not put into a local session's queue because it was full, since start.
    pub dropped: AtomicU64,
    /// Messages to other shards dropped because the outbox to that shard was full, since start.
    pub ring_dropped: AtomicU64,
    /// Times each defence held something back since start, indexed by [`Limit::index`].
    pub limit_hits: [AtomicU64; LIMITS],
}

impl ShardStats {
    /// Counts one hit of `limit`.
    pub fn hit(&self, limit: Limit) {
        self.limit_hits[limit.index()].fetch_add(1, Relaxed);
    }
}

/// Every shard's counters, indexed by shard.
#[derive(Debug)]
pub struct Stats {
    shards: Vec<ShardStats>,
}

/// A copy of one shard's counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ShardSnapshot {
    /// Connections accepted since start.
    pub accepted: u64,
    /// Connections open now.
    pub connections: u64,
    /// Sessions logged in now.
    pub logged_in: u64,
    /// Channels homed here.
    pub channels: u64,
    /// Local sessions in a channel now.
    pub members: u64,
    /// Lines ordered here since start.
    pub lines: u64,
    /// Lines queued for local sessions since start.
    pub deliveries: u64,
    /// Lines dropped for full session queues since start.
    pub dropped: u64,
    /// Messages dropped for full outboxes to other shards since start.
    pub ring_dropped: u64,
    /// Hits of each defence since start, indexed by [`Limit::index`].
    pub limit_hits: [u64; LIMITS],
}

impl ShardSnapshot {
    /// Hits of `limit` since start.
    pub fn hits(&self, limit: Limit) -> u64 {
        self.limit_hits[limit.index()]
    }
}

/// A copy of every shard's counters.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// One entry per shard, in shard order.
    pub shards: Vec<ShardSnapshot>,
}

impl Snapshot {
    /// Open connections on all shards.
    pub fn connections(&self) -> u64 {
        self.shards.iter().map(|s| s.connections).sum()
    }

    /// Logged-in sessions on all shards.
    pub fn logged_in(&self) -> u64 {
        self.shards.iter().map(|s| s.logged_in).sum()
    }

    /// Connections accepted since start on all shards.
    pub fn accepted(&self) -> u64 {
        self.shards.iter().map(|s| s.accepted).sum()
    }

    /// Every counter summed over all shards.
    pub fn total(&self) -> ShardSnapshot {
        self.shards
            .iter()
            .fold(ShardSnapshot::default(), |t, s| ShardSnapshot {
                accepted: t.accepted + s.accepted,
                connections: t.connections + s.connections,
                logged_in: t.logged_in + s.logged_in,
                channels: t.channels + s.channels,
                members: t.members + s.members,
                lines: t.lines + s.lines,
                deliveries: t.deliveries + s.deliveries,
                dropped: t.dropped + s.dropped,
                ring_dropped: t.ring_dropped + s.ring_dropped,
                limit_hits: std::array::from_fn(|i| t.limit_hits[i] + s.limit_hits[i]),
            })
    }
}

impl Stats {
    /// Zeroed counters for `shards` shards.
    pub fn new(shards: usize) -> Arc<Stats> {
        Arc::new(Stats {
            shards: (0..shards).map(|_| ShardStats::default()).collect(),
        })
    }

    /// The counters of one shard.
    pub fn shard(&self, index: usize) -> &ShardStats {
        &self.shards[index]
    }

    /// Reads every counter.
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            shards: self
                .shards
                .iter()
                .map(|s| ShardSnapshot {
                    accepted: s.accepted.load(Relaxed),
                    connections: s.connections.load(Relaxed),
                    logged_in: s.logged_in.load(Relaxed),
                    channels: s.channels.load(Relaxed),
                    members: s.members.load(Relaxed),
                    lines: s.lines.load(Relaxed),
                    deliveries: s.deliveries.load(Relaxed),
                    dropped: s.dropped.load(Relaxed),
                    ring_dropped: s.ring_dropped.load(Relaxed),
                    limit_hits: std::array::from_fn(|i| s.limit_hits[i].load(Relaxed)),
                })
                .collect(),
        }
    }
}

/// A counter that goes up and down with the life of something.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Gauge {
    /// [`ShardStats::connections`].
    Connections,
    /// [`ShardStats::logged_in`].
    LoggedIn,
}

/// Adds one to a gauge now and takes it away when dropped, so no exit path can forget the decrement.
#[derive(Debug)]
pub struct GaugeGuard {
    stats: Arc<Stats>,
    /// A `u16`, not a `usize`: every session holds a guard (its task another once logged in), and
    /// shards are at most 256.
    shard: u16,
    gauge: Gauge,
}

impl GaugeGuard {
    /// Increments `gauge` of shard `shard` until the guard is dropped.
    pub fn new(stats: Arc<Stats>, shard: usize, gauge: Gauge) -> GaugeGuard {
        let guard = GaugeGuard {
            stats,
            shard: u16::try_from(shard).expect("shards are at most 256"),
            gauge,
        };
        guard.counter().fetch_add(1, Relaxed);
        guard
    }

    fn counter(&self) -> &AtomicU64 {
        let s = self.stats.shard(usize::from(self.shard));
        match self.gauge {
            Gauge::Connections => &s.connections,
            Gauge::LoggedIn => &s.logged_in,
        }
    }
}

impl Drop for GaugeGuard {
    fn drop(&mut self) {
        self.counter().fetch_sub(1, Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gauges_return_to_zero_when_guards_drop() {
        let stats = Stats::new(2);
        {
            let _a = GaugeGuard::new(stats.clone(), 0, Gauge::Connections);
            let _b = GaugeGuard::new(stats.clone(), 1, Gauge::Connections);
            let _c = GaugeGuard::new(stats.clone(), 1, Gauge::LoggedIn);
            let snap = stats.snapshot();
            assert_eq!(snap.connections(), 2);
            assert_eq!(snap.logged_in(), 1);
            assert_eq!(snap.shards[1].connections, 1);
        }
        assert_eq!(stats.snapshot().connections(), 0);
        assert_eq!(stats.snapshot().logged_in(), 0);
    }

    #[test]
    fn the_total_sums_every_counter_over_shards() {
        let shard = |n: u64| ShardSnapshot {
            accepted: n,
            connections: 2 * n,
            logged_in: 3 * n,
            channels: 4 * n,
            members: 5 * n,
            lines: 6 * n,
            deliveries: 7 * n,
            dropped: 8 * n,
            ring_dropped: 9 * n,
            limit_hits: std::array::from_fn(|i| (10 + i as u64) * n),
        };
        let snap = Snapshot {
            shards: vec![shard(1), shard(10)],
        };
        assert_eq!(snap.total(), shard(11));
    }
}
