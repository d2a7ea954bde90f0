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

    /// Number of shards (one pinned executor each). Default: the CPUs this process may run on.
    #[arg(long)]
    pub shards: Option<usize>,

    /// Listen backlog for each shard's socket (the kernel caps it at net.core.somaxconn).
    #[arg(long, default_value_t = 65535)]
    pub backlog: u32,

    /// Directory for the database and channel logs; created if missing.
    #[arg(long, default_value = "./ringtalk-data")]
    pub data_dir: PathBuf,

    /// bcrypt cost for new password hashes (4..=16).
    #[arg(long, default_value_t = 12, value_parser = clap::value_parser!(u32).range(4..=16))]
    pub bcrypt_cost: u32,

    /// Seconds a connection may take to log in before it is closed.
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..))]
    pub login_timeout: u64,

    /// Seconds between heartbeat log lines (0 turns them off).
    #[arg(long, default_value_t = 10)]
    pub stats_interval: u64,

    /// Threads that run SQLite and bcrypt work (default: the CPUs this process may run on).
    #[arg(long)]
    pub workers: Option<usize>,

    /// Jobs that may wait for a worker thread before new requests are answered "Server busy".
    #[arg(long, default_value_t = 1024)]
    pub worker_queue: usize,

    /// Most members a channel may have (0: no limit).
    #[arg(long, default_value_t = 6)]
    pub channel_capacity: u32,

    /// Most lines waiting to be sent to one connection; lines past it are dropped for that reader.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..))]
    pub queue_limit: u32,

    /// Microseconds per write to one busy connection: a connection may write once per interval (and
    /// save up one write while quiet); output beyond that waits at most one interval and leaves with
    /// the next write, so a lively channel costs fewer system calls. 0 writes at once.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(0..=100_000))]
    pub write_interval_us: u32,
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
    }

    #[test]
    fn bcrypt_cost_out_of_range_is_refused() {
        assert!(Config::try_parse_from(["ringtalk", "--bcrypt-cost", "3"]).is_err());
        assert!(Config::try_parse_from(["ringtalk", "--bcrypt-cost", "17"]).is_err());
        assert!(Config::try_parse_from(["ringtalk", "--bcrypt-cost", "16"]).is_ok());
    }
}
