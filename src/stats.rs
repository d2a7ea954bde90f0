//! Counters that shards bump and anyone may read: the heartbeat log line, tests, and the load generator's
//! view of the server all come from here, so none of them parses logs.
//!
//! Each shard writes only its own [`ShardStats`] (relaxed atomics, no contention); readers take a
//! [`Snapshot`], which is consistent per counter, not across counters.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

/// One shard's counters.
#[derive(Debug, Default)]
pub struct ShardStats {
    /// Connections accepted since start.
    pub accepted: AtomicU64,
    /// Connections open now.
    pub connections: AtomicU64,
    /// Sessions that are logged in now.
    pub logged_in: AtomicU64,
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
    shard: usize,
    gauge: Gauge,
}

impl GaugeGuard {
    /// Increments `gauge` of shard `shard` until the guard is dropped.
    pub fn new(stats: Arc<Stats>, shard: usize, gauge: Gauge) -> GaugeGuard {
        let guard = GaugeGuard {
            stats,
            shard,
            gauge,
        };
        guard.counter().fetch_add(1, Relaxed);
        guard
    }

    fn counter(&self) -> &AtomicU64 {
        let s = self.stats.shard(self.shard);
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
}
