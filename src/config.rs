//! Every knob an operator can turn, in one place, parsed from the command line.
//!
//! The library takes a [`Config`] value rather than reading flags itself, so tests build one in code
//! (port 0, low bcrypt cost, a temporary data directory) and run the same server the binary runs.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;

use crate::defences::address::ExemptArg;
use crate::defences::rate::Rate;
use crate::listener::Serves;

/// Where the database and channel logs go unless `--data-dir` says otherwise (also the default of
/// `ringtalk admin`).
pub const DEFAULT_DATA_DIR: &str = "./ringtalk-data";

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

/// Most lines for `--flood-burst`, `--flood-rate` and `--flood-queue`: a held line may take 512
/// bytes, so a flooding session holds at most about 0.5 MB.
pub const MAX_FLOOD: u32 = 1000;

/// How ringtalk runs: where it listens, how many shards, where it keeps its data.
#[derive(Clone, Debug, Parser)]
#[command(
    name = "ringtalk",
    version,
    about = "A thread-per-core telnet chat server",
    after_help = "Accounts can be made admins while the server is stopped: see `ringtalk admin --help`."
)]
pub struct Config {
    /// Address to listen on for plain telnet (repeatable: every address is served by every shard).
    /// The default accepts local users only; use 0.0.0.0:5555 to accept remote users over IPv4 and
    /// `[::]:5555` over IPv6. An IPv6 address listens for IPv6 only (IPV6_V6ONLY), so
    /// `--listen 0.0.0.0:5555 --listen [::]:5555` serves both on one port. `none` listens for no
    /// plain telnet at all (a server on `--tls-listen` alone).
    #[arg(long, value_name = "ADDR", default_values = ["127.0.0.1:5555"])]
    pub listen: Vec<ListenArg>,

    /// Address to listen on for telnet over TLS (repeatable; none by default). Needs `--tls-cert`
    /// and `--tls-key`. IPv6 addresses are IPv6 only, as for `--listen`.
    #[arg(long, value_name = "ADDR")]
    pub tls_listen: Vec<SocketAddr>,

    /// The TLS certificate chain, PEM, the server's own certificate first. Read at start and
    /// again when the certificates are reloaded (SIGHUP).
    #[arg(long, value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,

    /// The TLS certificate's private key, PEM (PKCS#8, PKCS#1 or SEC1).
    #[arg(long, value_name = "FILE")]
    pub tls_key: Option<PathBuf>,

    /// Number of shards (one pinned executor each), 1..=256. Default: the CPUs this process may run
    /// on, at most 256.
    #[arg(long, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=MAX_SHARDS as u64))]
    pub shards: Option<usize>,

    /// Listen backlog for each shard's socket (the kernel caps it at net.core.somaxconn).
    #[arg(long, default_value_t = 65535, value_parser = clap::value_parser!(u32).range(1..))]
    pub backlog: u32,

    /// Directory for the database and channel logs; created if missing.
    #[arg(long, default_value = DEFAULT_DATA_DIR)]
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

    /// Networks whose connections skip every per-address limit and flood control (repeatable;
    /// `none` clears the list). Default: loopback, so load tests from this machine are not limited.
    #[arg(long, value_name = "CIDR", default_values = ["127.0.0.0/8", "::1"])]
    pub exempt: Vec<ExemptArg>,

    /// Most connections open at once from one address (IPv4) or /64 (IPv6); 0: no limit.
    #[arg(long, default_value_t = 16)]
    pub max_conns_per_ip: u32,

    /// Most connections from one address (or /64) that have not logged in yet; 0: no limit.
    #[arg(long, default_value_t = 4)]
    pub max_unauth_per_ip: u32,

    /// Most new connections from one address (or /64) per period, as N/SECS, or `off`.
    #[arg(long, value_name = "N/SECS", default_value = "32/600")]
    pub conn_rate: Rate,

    /// Most new accounts created from one address (or /64) per period, as N/SECS, or `off`.
    #[arg(long, value_name = "N/SECS", default_value = "2/600")]
    pub signup_rate: Rate,

    /// Lines a user may send at once before flood control holds them back (1..=1000).
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=MAX_FLOOD as i64))]
    pub flood_burst: u32,

    /// Lines a second a user may send after the burst (0: no flood control; at most 1000).
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(0..=MAX_FLOOD as i64))]
    pub flood_rate: u32,

    /// Lines that wait for flood control before further lines are dropped (0..=1000).
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(0..=MAX_FLOOD as i64))]
    pub flood_queue: u32,

    /// Join a cluster of ringtalk nodes through the NATS server at this URL (e.g.
    /// `nats://127.0.0.1:4222`); off by default. Nodes of one cluster may share a listening port.
    #[arg(long, value_name = "URL")]
    pub cluster: Option<String>,

    /// This node's name in the cluster (default: host name and process id); at most 64 printable
    /// characters, no spaces.
    #[arg(long, value_parser = parse_node_name)]
    pub node_name: Option<String>,

    /// A user who is a server admin while this server runs, besides those the data directory
    /// names (`ringtalk admin grant`); may be given more than once.
    #[arg(long = "admin", value_name = "NAME")]
    pub admins: Vec<String>,

    /// Lines each channel keeps, in memory, and shows (marked `[history]`) to whoever joins it
    /// (0: none). Not kept across a restart.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(0..=100))]
    pub history_lines: u32,

    /// A text file every user is shown after logging in (the message of the day): read at
    /// start and on SIGHUP, at most 100 lines and 16 KiB; control characters are removed.
    #[arg(long, value_name = "FILE")]
    pub motd: Option<PathBuf>,

    /// A line of the MSSP table that MUD clients and crawlers read, as KEY=VALUE (repeatable, at
    /// most 64): e.g. `NAME=My Chat`, `HOSTNAME=chat.example.org`, `CONTACT=admin@example.org`,
    /// `WEBSITE=…`, `LANGUAGE=English`, `LOCATION=…`. Replaces the default of the same key.
    #[arg(long, value_name = "KEY=VALUE")]
    pub mssp: Vec<crate::mssp::Entry>,

    /// What to log: a level (`error`, `warn`, `info`, `debug`, `trace`) or per-module directives
    /// such as `info,ringtalk::cluster=debug`. Default: the `RUST_LOG` variable, else `info`.
    #[arg(long, value_name = "FILTER", value_parser = parse_log_level)]
    pub log_level: Option<String>,

    /// A TOML file of settings: each key is a flag's name without the dashes (`flood-rate = 2`,
    /// `listen = ["0.0.0.0:5555"]`); a flag given on the command line wins over the file. SIGHUP
    /// reads it again (see README, "Changing the configuration").
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Print the configuration these flags and `--config` add up to, as a TOML file, and exit.
    #[arg(long)]
    pub print_config: bool,

    /// Serve `GET /metrics` (Prometheus text format) on this address, e.g. `127.0.0.1:9555`; off
    /// by default. Anyone who can reach it sees the server's counters.
    #[arg(long, value_name = "ADDR")]
    pub metrics_listen: Option<SocketAddr>,

    /// The message of the day's lines, as [`Config::load_motd`] read them.
    #[arg(skip)]
    pub motd_lines: Arc<[String]>,

    /// Slots in each ring between two shards, instead of the number sized for the shard count (not a
    /// flag: tests set it to fill rings on purpose).
    #[arg(skip)]
    pub ring_slots: Option<usize>,
}

/// One `--listen` value: an address, or `none`, which stands for no address (so `--listen none`
/// leaves plain telnet off, and a configuration file can say so: `listen = ["none"]`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ListenArg(pub Option<SocketAddr>);

impl std::str::FromStr for ListenArg {
    type Err = String;

    fn from_str(s: &str) -> Result<ListenArg, String> {
        if s.eq_ignore_ascii_case("none") {
            return Ok(ListenArg(None));
        }
        s.parse()
            .map(|a| ListenArg(Some(a)))
            .map_err(|e| format!("{e} (an address such as 0.0.0.0:5555 or [::]:5555, or none)"))
    }
}

impl From<SocketAddr> for ListenArg {
    fn from(addr: SocketAddr) -> ListenArg {
        ListenArg(Some(addr))
    }
}

fn parse_node_name(s: &str) -> Result<String, String> {
    if crate::cluster::membership::valid_node_name(s) {
        Ok(s.to_string())
    } else {
        Err("a node name is 1 to 64 printable characters, no spaces".to_string())
    }
}

fn parse_log_level(s: &str) -> Result<String, String> {
    tracing_subscriber::EnvFilter::builder()
        .parse(s)
        .map(|_| s.to_string())
        .map_err(|e| format!("not a log filter: {e}"))
}

impl Config {
    /// A configuration for tests and embedding: every default, listening on `127.0.0.1:0`, data in `data_dir`,
    /// the cheapest bcrypt cost.
    pub fn for_tests(data_dir: impl Into<PathBuf>) -> Config {
        let mut config = Config::parse_from(["ringtalk"]);
        config.listen = vec!["127.0.0.1:0".parse().expect("literal address")];
        config.data_dir = data_dir.into();
        config.bcrypt_cost = *BCRYPT_COST_RANGE.start();
        config.stats_interval = 0;
        config
    }

    /// Reads `--motd` into [`Config::motd_lines`]; a file that cannot be read, or is too long,
    /// is refused with the reason.
    pub fn load_motd(&mut self) -> Result<(), String> {
        let Some(path) = &self.motd else {
            return Ok(());
        };
        let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
        self.motd_lines = motd_lines(&bytes).map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(())
    }

    /// Checks what the flags' parsers cannot check one value at a time.
    pub fn check(&self) -> Result<(), String> {
        if self.mssp.len() > crate::mssp::MAX_ENTRIES {
            return Err(format!(
                "--mssp is given {} times; at most {}",
                self.mssp.len(),
                crate::mssp::MAX_ENTRIES
            ));
        }
        if !self.tls_listen.is_empty() && (self.tls_cert.is_none() || self.tls_key.is_none()) {
            return Err("--tls-listen needs both --tls-cert and --tls-key".to_string());
        }
        if self.mssp.iter().any(|e| e.key() == "PLAYERS") {
            return Err("--mssp cannot set PLAYERS: the server counts them".to_string());
        }
        // Sockets on one port share it through SO_REUSEPORT (so that cluster nodes can), so the
        // kernel would not refuse an address given twice, or plain and TLS on one port: it would
        // split the connections between them.
        let all = self.listeners();
        for (i, &(a, a_serves)) in all.iter().enumerate() {
            for &(b, b_serves) in &all[i + 1..] {
                if a.port() == 0 || a.port() != b.port() || a.is_ipv4() != b.is_ipv4() {
                    continue;
                }
                if a == b {
                    return Err(format!("{a} is given twice (--listen and --tls-listen)"));
                }
                if a_serves != b_serves && (a.ip().is_unspecified() || b.ip().is_unspecified()) {
                    return Err(format!(
                        "{a} and {b} would share port {}: plain telnet and TLS need ports of their own",
                        a.port()
                    ));
                }
            }
        }
        Ok(())
    }

    /// Every address to listen on, with what it serves: the plain ones first, then TLS, each in
    /// the order given. A shard's listening sockets and their readiness tokens follow this order.
    pub fn listeners(&self) -> Vec<(SocketAddr, Serves)> {
        let plain = self
            .listen
            .iter()
            .filter_map(|a| a.0)
            .map(|a| (a, Serves::Telnet));
        let tls = self.tls_listen.iter().map(|&a| (a, Serves::TelnetOverTls));
        plain.chain(tls).collect()
    }

    /// The login timeout as a [`Duration`].
    pub fn login_timeout(&self) -> Duration {
        Duration::from_secs(self.login_timeout)
    }
}

/// The most a message of the day may be.
pub const MOTD_MAX_BYTES: usize = 16 * 1024;
/// The most lines a message of the day may have.
pub const MOTD_MAX_LINES: usize = 100;

/// The lines of a message of the day: invalid UTF-8 replaced, tabs made spaces, every other
/// control character (terminal escapes included) removed, trailing blanks trimmed.
pub fn motd_lines(bytes: &[u8]) -> Result<Arc<[String]>, String> {
    if bytes.len() > MOTD_MAX_BYTES {
        return Err(format!(
            "the message of the day is {} bytes; at most {MOTD_MAX_BYTES}",
            bytes.len()
        ));
    }
    let text = String::from_utf8_lossy(bytes);
    let lines: Vec<String> = text
        .lines()
        .map(|line| {
            line.chars()
                .map(|c| if c == '\t' { ' ' } else { c })
                .filter(|c| !c.is_control())
                .collect::<String>()
                .trim_end()
                .to_string()
        })
        .collect();
    if lines.len() > MOTD_MAX_LINES {
        return Err(format!(
            "the message of the day has {} lines; at most {MOTD_MAX_LINES}",
            lines.len()
        ));
    }
    Ok(lines.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_of_the_day_is_cleaned_and_bounded() {
        let lines = motd_lines(b"Welcome!\r\n\x1b[31mred\x1b[0m\tand\xffmore  \n\nbye").unwrap();
        assert_eq!(
            &*lines,
            ["Welcome!", "[31mred[0m and\u{fffd}more", "", "bye"]
        );
        assert!(motd_lines(&vec![b'x'; MOTD_MAX_BYTES + 1]).is_err());
        assert!(motd_lines("a\n".repeat(MOTD_MAX_LINES + 1).as_bytes()).is_err());
        assert_eq!(motd_lines(b"").unwrap().len(), 0);
    }

    #[test]
    fn defaults_match_the_documented_ones() {
        let c = Config::parse_from(["ringtalk"]);
        assert_eq!(c.listen, ["127.0.0.1:5555".parse().unwrap()]);
        assert!(c.tls_listen.is_empty() && c.tls_cert.is_none() && c.tls_key.is_none());
        assert_eq!(c.backlog, 65535);
        assert_eq!(c.bcrypt_cost, 12);
        assert_eq!(c.login_timeout, 60);
        assert_eq!(c.stats_interval, 10);
        assert_eq!(c.data_dir, PathBuf::from("./ringtalk-data"));
        assert_eq!(c.channel_capacity, 6);
        assert_eq!(c.queue_limit, 100);
        assert_eq!(c.write_interval_us, 1000);
        assert_eq!(c.colocate_up_to, 64);
        let exempt: Vec<String> = c.exempt.iter().map(|e| e.0.unwrap().to_string()).collect();
        assert_eq!(exempt, ["127.0.0.0/8", "::1/128"]);
        assert_eq!(c.max_conns_per_ip, 16);
        assert_eq!(c.max_unauth_per_ip, 4);
        assert_eq!(c.conn_rate.to_string(), "32/600");
        assert_eq!(c.signup_rate.to_string(), "2/600");
        assert_eq!((c.flood_burst, c.flood_rate, c.flood_queue), (5, 2, 20));
    }

    #[test]
    fn listen_is_repeatable_and_replaces_the_default() {
        let c = Config::parse_from([
            "ringtalk",
            "--listen",
            "0.0.0.0:5555",
            "--listen",
            "[::]:5555",
            "--tls-listen",
            "[::1]:5556",
        ]);
        let want: Vec<ListenArg> = vec![
            "0.0.0.0:5555".parse().unwrap(),
            "[::]:5555".parse().unwrap(),
        ];
        assert_eq!(c.listen, want);
        assert_eq!(c.tls_listen, ["[::1]:5556".parse().unwrap()]);
    }

    #[test]
    fn check_refuses_listeners_that_would_share_a_port_and_a_counted_mssp_key() {
        let checked = |args: &[&str]| {
            let mut all = vec!["ringtalk", "--tls-cert", "c.pem", "--tls-key", "k.pem"];
            all.extend_from_slice(args);
            Config::try_parse_from(all).unwrap().check()
        };
        let twice = checked(&["--listen", "0.0.0.0:5555", "--listen", "0.0.0.0:5555"]);
        assert!(twice.unwrap_err().contains("given twice"));
        let shared = checked(&["--listen", "0.0.0.0:5555", "--tls-listen", "127.0.0.1:5555"]);
        assert!(shared.unwrap_err().contains("ports of their own"));
        // Other ports, other families, other addresses of one kind: all fine.
        assert!(checked(&["--listen", "0.0.0.0:5555", "--tls-listen", "0.0.0.0:5556"]).is_ok());
        assert!(checked(&["--listen", "0.0.0.0:5555", "--listen", "[::]:5555"]).is_ok());
        assert!(checked(&["--listen", "127.0.0.1:5555", "--listen", "127.0.0.2:5555"]).is_ok());
        assert!(checked(&["--listen", "127.0.0.1:0", "--tls-listen", "127.0.0.1:0"]).is_ok());
        let players = checked(&["--mssp", "PLAYERS=1000"]);
        assert!(players.unwrap_err().contains("PLAYERS"));
    }

    #[test]
    fn listen_none_leaves_plain_telnet_off() {
        let c =
            Config::try_parse_from(["ringtalk", "--listen", "none", "--tls-listen", "[::]:5556"])
                .unwrap();
        let listeners = c.listeners();
        assert_eq!(listeners.len(), 1);
        assert_eq!(listeners[0].1, Serves::TelnetOverTls);
        let c = Config::try_parse_from(["ringtalk", "--listen", "none", "--listen", "[::]:23"])
            .unwrap();
        assert_eq!(
            c.listeners(),
            [("[::]:23".parse().unwrap(), Serves::Telnet)]
        );
        assert!(Config::try_parse_from(["ringtalk", "--listen", "nowhere"]).is_err());
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
            ("--flood-burst", "1", "0"),
            ("--flood-burst", "1000", "1001"),
            ("--flood-rate", "1000", "1001"),
            ("--flood-queue", "1000", "1001"),
            ("--conn-rate", "1/604800", "1/604801"),
            ("--signup-rate", "1000000/1", "1000001/1"),
            ("--exempt", "10.0.0.0/8", "10.0.0.1/8"),
            ("--node-name", "host-1234", "has space"),
        ];
        for &(flag, edge, past) in cases {
            assert!(parses(&[flag, edge]), "{flag} {edge} refused");
            assert!(!parses(&[flag, past]), "{flag} {past} taken");
        }
    }
}
