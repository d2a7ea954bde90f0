//! Every knob an operator can turn, in one place, parsed from the command line.
//!
//! The library takes a [`Config`] value rather than reading flags itself, so tests build one in code
//! (port 0, low bcrypt cost, a temporary data directory) and run the same server the binary runs.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

/// Lowest and highest bcrypt cost accepted by `--bcrypt-cost`.
pub const BCRYPT_COST_RANGE: std::ops::RangeInclusive<u32> = 4..=16;

/// Most shards: every pair of shards has a ring in each direction, so their memory grows with the
/// square of the count (see `mesh::ring_capacity`), and a shard's index must fit a `ShardId`.
pub const MAX_SHARDS: usize = 256;

/// Most worker threads.
pub const MAX_WORKERS: usize = 1024;

/// Most jobs waiting for the workers (the queue is allocated whole at start, ~24 bytes a slot).
pub const MAX_WORKER_QUEUE: usize = 1 << 20;

/// Longest login timeout: a day. (A deadline must stay a time the clock can hold.)
pub const MAX_LOGIN_TIMEOUT_S: u64 = 86_400;

/// Most lines one connection may have waiting: at 16 bytes a line held, a reader that never reads
/// holds about 1 MiB of queue at this limit, plus the lines themselves.
pub const MAX_QUEUE_LIMIT: u32 = 65_536;

/// How ringtalk runs: where it listens, how many shards, where it keeps its data.
#[derive(Clone, Debug, Parser)]
#[command(
    name = "ringtalk",
    version,
    about = "A thread-per-core telnet chat server"
)]
pub struct Config {
    /// Address to listen on. The default accepts local users only; use 0.0.0.0:5555 (or `[::]:5555`) to accept
    /// remote users.
    #[arg(long, default_value = "127.0.0.1:5555")]
    pub listen: SocketAddr,

    /// Number of shards (one pinned executor each), 1..=256. Default: the CPUs this process may run
    /// on, at most 256.
    #[arg(long, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=MAX_SHARDS as u64))]
    pub shards: Option<usize>,

    /// Listen backlog for each shard's socket (the kernel caps it at net.core.somaxconn).
    #[arg(long, default_value_t = 65535, value_parser = clap::value_parser!(u32).range(1..))]
    pub backlog: u32,

    /// Directory for the database and channel logs; created if missing.
    #[arg(long, default_value = "./ringtalk-data")]
    pub data_dir: PathBuf,

    /// bcrypt cost for new password hashes (4..=16).
    #[arg(long, default_value_t = 12, value_parser = clap::value_parser!(u32).range(4..=16))]
    pub bcrypt_cost: u32,

    /// Seconds a connection may take to log in before it is closed (1..=86400).
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=MAX_LOGIN_TIMEOUT_S))]
    pub login_timeout: u64,

    /// Seconds between heartbeat log lines (0 turns them off).
    #[arg(long, default_value_t = 10)]
    pub stats_interval: u64,

    /// Threads that run SQLite and bcrypt work, 1..=1024 (default: the CPUs this process may run on).
    #[arg(long, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=MAX_WORKERS as u64))]
    pub workers: Option<usize>,

    /// Jobs that may wait for a worker thread before new requests are answered "Server busy"
    /// (1..=1048576).
    #[arg(long, default_value_t = 1024, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=MAX_WORKER_QUEUE as u64))]
    pub worker_queue: usize,

    /// Most members a channel may have (0: no limit).
    #[arg(long, default_value_t = 6)]
    pub channel_capacity: u32,

    /// Most lines waiting to be sent to one connection, 1..=65536; lines past it are dropped for that
    /// reader.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=MAX_QUEUE_LIMIT as i64))]
    pub queue_limit: u32,

    /// Microseconds per write to one busy connection: a connection may write once per interval (and
    /// save up one write while quiet); output beyond that waits at most one interval and leaves with
    /// the next write, so a lively channel costs fewer system calls. 0 writes at once.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(0..=100_000))]
    pub write_interval_us: u32,

    /// Members a channel may have, counting the one who joins, for a joiner whose connection is on
    /// another shard to move it to the channel's home shard (0: never). A member of a small channel
    /// then costs its lines no crossing between shards; a big channel keeps its members where they
    /// connected, so its writes run on every core.
    #[arg(long, default_value_t = 64)]
    pub colocate_up_to: u32,

    /// Slots in each ring between two shards, instead of the number sized for the shard count (not a
    /// flag: tests set it to fill rings on purpose).
    #[arg(skip)]
    pub ring_slots: Option<usize>,
}

impl Config {
    /// A configuration for tests and embedding: every default, listening on `127.0.0.1:0`, data in `data_dir`,
    /// the cheapest bcrypt cost.
    pub fn for_tests(data_dir: impl Into<PathBuf>) -> Config {
        let mut config = Config::parse_from(["ringtalk"]);
        config.listen = "127.0.0.1:0".parse().expect("literal address");
        config.data_dir = data_dir.into();
        config.bcrypt_cost = *BCRYPT_COST_RANGE.start();
        config.stats_interval = 0;
        config
    }

    /// The login timeout as a [`Duration`].
    pub fn login_timeout(&self) -> Duration {
        Duration::from_secs(self.login_timeout)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_the_documented_ones() {
        let c = Config::parse_from(["ringtalk"]);
        assert_eq!(c.listen.to_string(), "127.0.0.1:5555");
        assert_eq!(c.backlog, 65535);
        assert_eq!(c.bcrypt_cost, 12);
        assert_eq!(c.login_timeout, 60);
        assert_eq!(c.stats_interval, 10);
        assert_eq!(c.data_dir, PathBuf::from("./ringtalk-data"));
        assert_eq!(c.channel_capacity, 6);
        assert_eq!(c.queue_limit, 100);
        assert_eq!(c.write_interval_us, 1000);
        assert_eq!(c.colocate_up_to, 64);
    }

    #[test]
    fn bcrypt_cost_out_of_range_is_refused() {
        assert!(Config::try_parse_from(["ringtalk", "--bcrypt-cost", "3"]).is_err());
        assert!(Config::try_parse_from(["ringtalk", "--bcrypt-cost", "17"]).is_err());
        assert!(Config::try_parse_from(["ringtalk", "--bcrypt-cost", "16"]).is_ok());
    }

    #[test]
    fn every_bound_is_refused_one_past_and_taken_at_the_edge() {
        let parses = |args: &[&str]| {
            let mut all = vec!["ringtalk"];
            all.extend_from_slice(args);
            Config::try_parse_from(all).is_ok()
        };
        let cases: &[(&str, &str, &str)] = &[
            ("--shards", "1", "0"),
            ("--shards", "256", "257"),
            ("--backlog", "1", "0"),
            ("--login-timeout", "86400", "86401"),
            ("--login-timeout", "1", "0"),
            ("--workers", "1", "0"),
            ("--workers", "1024", "1025"),
            ("--worker-queue", "1", "0"),
            ("--worker-queue", "1048576", "1048577"),
            ("--queue-limit", "1", "0"),
            ("--queue-limit", "65536", "65537"),
            ("--write-interval-us", "100000", "100001"),
            ("--bcrypt-cost", "16", "17"),
        ];
        for &(flag, edge, past) in cases {
            assert!(parses(&[flag, edge]), "{flag} {edge} refused");
            assert!(!parses(&[flag, past]), "{flag} {past} taken");
        }
    }
}
