//! Counters of what the server does: the heartbeat log line, `GET /metrics` ([`crate::metrics`]),
//! tests, and the load generator's view of the server all come from here, so none of them parses
//! logs.
//!
//! # Two kinds of counter, by how often they move
//!
//! - **Per connection** (accepted, open, logged in, logins by outcome, limit hits): relaxed atomics
//!   in [`ShardStats`], one set per shard, written by that shard alone and read by anyone at any
//!   time. They move a few times in a connection's life, so an atomic costs nothing there; and the
//!   connection gauges are kept by guards ([`GaugeGuard`]) that no exit path can forget.
//! - **Per line and per delivery** (lines ordered, deliveries, drops, the delivery latency
//!   histogram) and what the hub knows (channels, members): plain [`Cell`]s in [`LocalStats`],
//!   which only the shard's own thread ever touches. A line fanned out to a thousand members
//!   costs a thousand plain additions, not a thousand atomic read-modify-writes on a cache line
//!   other threads read. Nobody reads these directly: [`Stats::snapshot`] *asks* each shard
//!   ([`Ask`]), through a bounded queue and the shard's doorbell, and the shard's inbox task
//!   answers with a [`LocalSnapshot`] the next time it runs, without waiting for anyone (a full
//!   reply queue drops the answer). The asker waits for the answers at most a given time; a shard
//!   that does not answer in time is reported down ([`ShardSnapshot::up`]) with the last values it
//!   gave, so counters never go backwards.
//!
//! A [`Snapshot`] is consistent per counter, not across counters (each shard answers at its own
//! moment).

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TrySendError};

use crate::defences::Limit;
use crate::mesh::Doorbell;

/// Kinds of limit counted (see [`Limit::ALL`]).
pub const LIMITS: usize = Limit::ALL.len();

/// How long [`Stats::snapshot`] waits for the shards' answers.
pub const ASK_TIMEOUT: Duration = Duration::from_secs(1);

/// Questions that may wait for one shard; an asker that finds the queue full counts the shard as
/// not answering (it is already that far behind).
const ASKS_WAITING: usize = 8;

/// Upper bounds of the latency histograms' buckets, in microseconds: 1, 2.5, 5 in every decade
/// from 10 µs to 10 s. The last bucket (past the last bound) is `+Inf`.
pub const BUCKET_BOUNDS_US: [u64; 19] = [
    10, 25, 50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000,
    500_000, 1_000_000, 2_500_000, 5_000_000, 10_000_000,
];

/// Buckets in a histogram: one per bound, and `+Inf`.
pub const BUCKETS: usize = BUCKET_BOUNDS_US.len() + 1;

/// The bucket a value of `us` microseconds is counted in (the first whose bound is at least it).
fn bucket_of(us: u64) -> usize {
    BUCKET_BOUNDS_US.partition_point(|&bound| bound < us)
}

/// A copy of a histogram: how many values fell in each bucket (not cumulative), and their sum.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Histogram {
    /// Values per bucket, indexed like [`BUCKET_BOUNDS_US`], then `+Inf`.
    pub counts: [u64; BUCKETS],
    /// The sum of every value, in microseconds.
    pub sum_us: u64,
}

impl Histogram {
    /// How many values were observed.
    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// Both histograms' values together.
    pub fn plus(&self, other: &Histogram) -> Histogram {
        Histogram {
            counts: std::array::from_fn(|i| self.counts[i] + other.counts[i]),
            sum_us: self.sum_us + other.sum_us,
        }
    }
}

/// A histogram only its own thread touches (no atomics): a shard's delivery latencies.
#[derive(Debug, Default)]
pub struct LocalHistogram {
    counts: [Cell<u64>; BUCKETS],
    sum_us: Cell<u64>,
}

impl LocalHistogram {
    /// Counts `n` values of `us` microseconds each.
    pub fn observe(&self, us: u64, n: u64) {
        let bucket = &self.counts[bucket_of(us)];
        bucket.set(bucket.get().wrapping_add(n));
        self.sum_us
            .set(self.sum_us.get().wrapping_add(us.saturating_mul(n)));
    }

    /// A copy of it.
    pub fn snapshot(&self) -> Histogram {
        Histogram {
            counts: std::array::from_fn(|i| self.counts[i].get()),
            sum_us: self.sum_us.get(),
        }
    }
}

/// A histogram that any thread may add to (relaxed atomics): bcrypt times, observed on the worker
/// threads, never on a shard.
#[derive(Debug, Default)]
pub struct SharedHistogram {
    counts: [AtomicU64; BUCKETS],
    sum_us: AtomicU64,
}

impl SharedHistogram {
    /// Counts one value of `took`.
    pub fn observe(&self, took: Duration) {
        let us = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        self.counts[bucket_of(us)].fetch_add(1, Relaxed);
        self.sum_us.fetch_add(us, Relaxed);
    }

    /// Runs `f` and counts how long it took.
    pub fn time<T>(&self, f: impl FnOnce() -> T) -> T {
        let start = Instant::now();
        let result = f();
        self.observe(start.elapsed());
        result
    }

    /// A copy of it (consistent per bucket, not across buckets).
    pub fn snapshot(&self) -> Histogram {
        Histogram {
            counts: std::array::from_fn(|i| self.counts[i].load(Relaxed)),
            sum_us: self.sum_us.load(Relaxed),
        }
    }
}

/// How a login attempt ended (one password checked, or one account made).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LoginOutcome {
    /// Logged in.
    Ok,
    /// A new account was made, and its user logged in.
    NewAccount,
    /// The password was wrong.
    BadPassword,
    /// The right password for a banned account.
    Banned,
    /// The account was gone by the time its password was checked.
    Unknown,
    /// Failed logins from the address held the attempt back before any check.
    Throttled,
    /// The worker queue was full.
    Busy,
    /// The database or a worker failed.
    Failed,
}

impl LoginOutcome {
    /// Every outcome, in the order of [`LoginOutcome::index`].
    pub const ALL: [LoginOutcome; 8] = [
        LoginOutcome::Ok,
        LoginOutcome::NewAccount,
        LoginOutcome::BadPassword,
        LoginOutcome::Banned,
        LoginOutcome::Unknown,
        LoginOutcome::Throttled,
        LoginOutcome::Busy,
        LoginOutcome::Failed,
    ];

    /// Its place in per-outcome arrays.
    pub fn index(self) -> usize {
        self as usize
    }

    /// Its name in the metrics.
    pub fn name(self) -> &'static str {
        match self {
            LoginOutcome::Ok => "ok",
            LoginOutcome::NewAccount => "new_account",
            LoginOutcome::BadPassword => "bad_password",
            LoginOutcome::Banned => "banned",
            LoginOutcome::Unknown => "unknown",
            LoginOutcome::Throttled => "throttled",
            LoginOutcome::Busy => "busy",
            LoginOutcome::Failed => "failed",
        }
    }
}

/// Outcomes counted (see [`LoginOutcome::ALL`]).
pub const LOGIN_OUTCOMES: usize = LoginOutcome::ALL.len();

/// One shard's per-connection counters, readable from any thread.
#[derive(Debug, Default)]
pub struct ShardStats {
    /// Connections accepted since start.
    pub accepted: AtomicU64,
    /// Connections open now.
    pub connections: AtomicU64,
    /// Sessions that are logged in now.
    pub logged_in: AtomicU64,
    /// Times each defence held something back since start, indexed by [`Limit::index`].
    pub limit_hits: [AtomicU64; LIMITS],
    /// Login attempts since start, by [`LoginOutcome::index`].
    pub logins: [AtomicU64; LOGIN_OUTCOMES],
}

impl ShardStats {
    /// Counts one hit of `limit`.
    pub fn hit(&self, limit: Limit) {
        self.limit_hits[limit.index()].fetch_add(1, Relaxed);
    }

    /// Counts one login attempt that ended as `outcome`.
    pub fn login(&self, outcome: LoginOutcome) {
        self.logins[outcome.index()].fetch_add(1, Relaxed);
    }
}

/// One shard's per-line counters, touched by its own thread only (see the module's doc).
#[derive(Debug, Default)]
pub struct LocalStats {
    /// Lines ordered by channels homed here (chat, joins, leaves) since start.
    pub lines: Cell<u64>,
    /// Lines put into local sessions' outgoing queues since start.
    pub deliveries: Cell<u64>,
    /// Lines not put into a local session's queue because it was full, since start.
    pub dropped: Cell<u64>,
    /// Messages to other shards dropped because the outbox to that shard was full, since start.
    pub ring_dropped: Cell<u64>,
    /// How long lines waited in sessions' queues, from the queue to the write that sent them.
    pub latency: LocalHistogram,
    /// Answers given so far: numbers them, so that of two answers the later is known.
    answers: Cell<u64>,
}

/// Adds `n` to a plain counter.
pub fn add(counter: &Cell<u64>, n: u64) {
    counter.set(counter.get().wrapping_add(n));
}

impl LocalStats {
    /// What the shard answers when asked, with what its hub knows.
    pub fn snapshot(&self, channels: u64, members: u64) -> LocalSnapshot {
        add(&self.answers, 1);
        LocalSnapshot {
            answer: self.answers.get(),
            channels,
            members,
            lines: self.lines.get(),
            deliveries: self.deliveries.get(),
            dropped: self.dropped.get(),
            ring_dropped: self.ring_dropped.get(),
            latency: self.latency.snapshot(),
        }
    }
}

/// A shard's answer to an [`Ask`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LocalSnapshot {
    /// Which of the shard's answers this is (1 for its first): a later answer has a larger one.
    pub answer: u64,
    /// Channels homed on the shard.
    pub channels: u64,
    /// Local sessions in a channel.
    pub members: u64,
    /// See [`LocalStats::lines`].
    pub lines: u64,
    /// See [`LocalStats::deliveries`].
    pub deliveries: u64,
    /// See [`LocalStats::dropped`].
    pub dropped: u64,
    /// See [`LocalStats::ring_dropped`].
    pub ring_dropped: u64,
    /// See [`LocalStats::latency`].
    pub latency: Histogram,
}

/// A question to a shard: its [`LocalSnapshot`], into `reply` (with its index), without waiting.
#[derive(Debug)]
pub struct Ask {
    reply: Sender<(usize, LocalSnapshot)>,
}

impl Ask {
    /// Answers, without waiting: an asker that has given up, or a full reply queue, gets nothing.
    pub fn answer(self, shard: usize, snapshot: LocalSnapshot) {
        let _ = self.reply.try_send((shard, snapshot));
    }
}

/// The way to ask one shard.
#[derive(Debug)]
struct Asking {
    tx: Sender<Ask>,
    doorbell: Arc<Doorbell>,
}

/// Every shard's counters, and the way to ask each shard for those it keeps to itself.
#[derive(Debug)]
pub struct Stats {
    shards: Vec<ShardStats>,
    asking: Vec<Asking>,
    /// Each shard's last answer, for a shard that does not answer in time.
    last: Mutex<Vec<LocalSnapshot>>,
}

/// A copy of one shard's counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ShardSnapshot {
    /// Whether the shard answered this time; if not, its per-line counters are its last answer's.
    pub up: bool,
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
    /// Login attempts since start, by [`LoginOutcome::index`].
    pub logins: [u64; LOGIN_OUTCOMES],
    /// How long lines waited between their session's queue and the write that sent them.
    pub latency: Histogram,
}

impl ShardSnapshot {
    /// Hits of `limit` since start.
    pub fn hits(&self, limit: Limit) -> u64 {
        self.limit_hits[limit.index()]
    }

    /// Login attempts that ended as `outcome` since start.
    pub fn logins(&self, outcome: LoginOutcome) -> u64 {
        self.logins[outcome.index()]
    }
}

/// A copy of every shard's counters.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// One entry per shard, in shard order.
    pub shards: Vec<ShardSnapshot>,
    /// How long the shards took to answer (the slowest, or the time given up after).
    pub asked_in: Duration,
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

    /// Every counter summed over all shards (up: whether every shard answered).
    pub fn total(&self) -> ShardSnapshot {
        let start = ShardSnapshot {
            up: true,
            ..ShardSnapshot::default()
        };
        self.shards.iter().fold(start, |t, s| ShardSnapshot {
            up: t.up && s.up,
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
            logins: std::array::from_fn(|i| t.logins[i] + s.logins[i]),
            latency: t.latency.plus(&s.latency),
        })
    }
}

impl Stats {
    /// Zeroed counters for shards with these doorbells, and for each shard the queue it takes
    /// questions from (its inbox task answers them: [`Ask::answer`]).
    pub fn new(doorbells: &[Arc<Doorbell>]) -> (Arc<Stats>, Vec<Receiver<Ask>>) {
        let (asking, asks): (Vec<_>, Vec<_>) = doorbells
            .iter()
            .map(|doorbell| {
                let (tx, rx) = crossbeam_channel::bounded(ASKS_WAITING);
                let asking = Asking {
                    tx,
                    doorbell: doorbell.clone(),
                };
                (asking, rx)
            })
            .unzip();
        let stats = Stats {
            shards: doorbells.iter().map(|_| ShardStats::default()).collect(),
            asking,
            last: Mutex::new(vec![LocalSnapshot::default(); doorbells.len()]),
        };
        (Arc::new(stats), asks)
    }

    /// The counters of one shard.
    pub fn shard(&self, index: usize) -> &ShardStats {
        &self.shards[index]
    }

    /// Sessions logged in now on every shard, from the shared counters alone: never waits, so a
    /// shard may call it (MSSP's `PLAYERS`).
    pub fn logged_in_now(&self) -> u64 {
        self.shards.iter().map(|s| s.logged_in.load(Relaxed)).sum()
    }

    /// Reads every counter, asking the shards for theirs and waiting at most [`ASK_TIMEOUT`].
    /// Blocks: never call it on a shard.
    pub fn snapshot(&self) -> Snapshot {
        self.snapshot_within(ASK_TIMEOUT)
    }

    /// Reads every counter, waiting at most `timeout` for the shards' answers.
    pub fn snapshot_within(&self, timeout: Duration) -> Snapshot {
        let started = Instant::now();
        let answers = self.ask(started + timeout);
        let asked_in = started.elapsed();
        let shards = self
            .shards
            .iter()
            .zip(answers)
            .map(|(s, (up, local))| ShardSnapshot {
                up,
                accepted: s.accepted.load(Relaxed),
                connections: s.connections.load(Relaxed),
                logged_in: s.logged_in.load(Relaxed),
                channels: local.channels,
                members: local.members,
                lines: local.lines,
                deliveries: local.deliveries,
                dropped: local.dropped,
                ring_dropped: local.ring_dropped,
                limit_hits: std::array::from_fn(|i| s.limit_hits[i].load(Relaxed)),
                logins: std::array::from_fn(|i| s.logins[i].load(Relaxed)),
                latency: local.latency,
            })
            .collect();
        Snapshot { shards, asked_in }
    }

    /// Asks every shard and waits for the answers until `deadline`: each shard's answer, or its
    /// last one, and whether it answered this time.
    fn ask(&self, deadline: Instant) -> Vec<(bool, LocalSnapshot)> {
        let (reply, answers) = crossbeam_channel::bounded(self.asking.len());
        let mut waiting = 0;
        for asking in &self.asking {
            let ask = Ask {
                reply: reply.clone(),
            };
            match asking.tx.try_send(ask) {
                Ok(()) => {
                    asking.doorbell.ring();
                    waiting += 1;
                }
                // Far behind, or gone: not waited for.
                Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {}
            }
        }
        // Only the questions hold senders now: a shard that drops its question unanswered (it
        // has stopped) ends the wait for it.
        drop(reply);
        let mut answered: Vec<Option<LocalSnapshot>> = vec![None; self.asking.len()];
        while waiting > 0 {
            match answers.recv_deadline(deadline) {
                Ok((shard, snapshot)) => {
                    if let Some(slot) = answered.get_mut(shard) {
                        *slot = Some(snapshot);
                    }
                    waiting -= 1;
                }
                Err(_) => break,
            }
        }
        let mut last = self.last.lock().unwrap_or_else(PoisonError::into_inner);
        answered
            .into_iter()
            .zip(last.iter_mut())
            .map(|(answer, last)| match answer {
                Some(snapshot) => {
                    // Two askers may store their answers in either order: the last one kept is
                    // the shard's latest, so what stands in for a missing answer never goes back.
                    if snapshot.answer > last.answer {
                        *last = snapshot;
                    }
                    (true, snapshot)
                }
                None => (false, *last),
            })
            .collect()
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

    fn stats(shards: usize) -> (Arc<Stats>, Vec<Receiver<Ask>>) {
        let doorbells: Vec<_> = (0..shards).map(|_| Doorbell::new().unwrap()).collect();
        Stats::new(&doorbells)
    }

    #[test]
    fn gauges_return_to_zero_when_guards_drop() {
        let (stats, _asks) = stats(2);
        let quick = Duration::ZERO;
        {
            let _a = GaugeGuard::new(stats.clone(), 0, Gauge::Connections);
            let _b = GaugeGuard::new(stats.clone(), 1, Gauge::Connections);
            let _c = GaugeGuard::new(stats.clone(), 1, Gauge::LoggedIn);
            let snap = stats.snapshot_within(quick);
            assert_eq!(snap.connections(), 2);
            assert_eq!(snap.logged_in(), 1);
            assert_eq!(snap.shards[1].connections, 1);
        }
        assert_eq!(stats.snapshot_within(quick).connections(), 0);
        assert_eq!(stats.snapshot_within(quick).logged_in(), 0);
    }

    #[test]
    fn the_answer_kept_for_a_silent_shard_is_its_latest_whatever_order_askers_store_in() {
        let (stats, asks) = stats(1);
        let local = LocalStats::default();
        // Asker X's question is taken first, then asker Y's.
        let x = {
            let stats = stats.clone();
            std::thread::spawn(move || stats.snapshot_within(Duration::from_secs(10)))
        };
        let first = asks[0].recv().unwrap();
        let y = {
            let stats = stats.clone();
            std::thread::spawn(move || stats.snapshot_within(Duration::from_secs(10)))
        };
        let second = asks[0].recv().unwrap();
        add(&local.lines, 10);
        let older = local.snapshot(0, 0);
        add(&local.lines, 10);
        // Y hears the later answer and stores it first; X then stores the earlier one.
        second.answer(0, local.snapshot(0, 0));
        assert_eq!(y.join().unwrap().shards[0].lines, 20);
        first.answer(0, older);
        assert_eq!(x.join().unwrap().shards[0].lines, 10);
        // The shard falls silent: what stands in for it is its latest answer, not X's.
        let silent = stats.snapshot_within(Duration::ZERO);
        assert!(!silent.shards[0].up);
        assert_eq!(silent.shards[0].lines, 20);
    }

    #[test]
    fn a_shard_that_answers_is_up_and_one_that_does_not_keeps_its_last_answer() {
        let (stats, asks) = stats(2);
        let answerer = {
            let asks = asks[0].clone();
            std::thread::spawn(move || {
                let local = LocalStats::default();
                for ask in asks.iter().take(2) {
                    add(&local.lines, 10);
                    local.latency.observe(300, 2);
                    ask.answer(0, local.snapshot(3, 4));
                }
            })
        };
        let first = stats.snapshot_within(Duration::from_millis(100));
        assert!(first.shards[0].up);
        assert!(!first.shards[1].up, "shard 1 never answers");
        assert_eq!(first.shards[0].lines, 10);
        assert_eq!((first.shards[0].channels, first.shards[0].members), (3, 4));
        assert_eq!(first.shards[0].latency.count(), 2);
        assert_eq!(first.shards[0].latency.counts[bucket_of(300)], 2);
        assert_eq!(first.shards[0].latency.sum_us, 600);
        assert!(!first.total().up);
        let second = stats.snapshot_within(Duration::from_millis(100));
        assert_eq!(second.shards[0].lines, 20);
        answerer.join().unwrap();
        // Shard 0 stops answering: its last answer stands, and it is down.
        let third = stats.snapshot_within(Duration::from_millis(20));
        assert!(!third.shards[0].up);
        assert_eq!(third.shards[0].lines, 20);
        // Shard 1's queue of questions is full by now: it is not waited for at all.
        for _ in 0..ASKS_WAITING {
            let _ = stats.snapshot_within(Duration::ZERO);
        }
        let started = Instant::now();
        drop(asks);
        let gone = stats.snapshot_within(Duration::from_secs(5));
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "gone shards are not waited for"
        );
        assert!(!gone.shards[1].up);
    }

    #[test]
    fn buckets_take_values_up_to_their_bound() {
        assert_eq!(bucket_of(0), 0);
        assert_eq!(bucket_of(10), 0);
        assert_eq!(bucket_of(11), 1);
        assert_eq!(bucket_of(1_000), 6);
        assert_eq!(bucket_of(10_000_000), BUCKETS - 2);
        assert_eq!(bucket_of(u64::MAX), BUCKETS - 1);
        let shared = SharedHistogram::default();
        shared.observe(Duration::from_millis(3));
        shared.observe(Duration::from_secs(100));
        let snap = shared.snapshot();
        assert_eq!(snap.count(), 2);
        assert_eq!(snap.counts[bucket_of(3_000)], 1);
        assert_eq!(snap.counts[BUCKETS - 1], 1);
    }

    #[test]
    fn the_total_sums_every_counter_over_shards() {
        let shard = |n: u64| ShardSnapshot {
            up: true,
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
            logins: std::array::from_fn(|i| (20 + i as u64) * n),
            latency: Histogram {
                counts: std::array::from_fn(|i| (30 + i as u64) * n),
                sum_us: 40 * n,
            },
        };
        let snap = Snapshot {
            shards: vec![shard(1), shard(10)],
            asked_in: Duration::ZERO,
        };
        assert_eq!(snap.total(), shard(11));
    }
}
