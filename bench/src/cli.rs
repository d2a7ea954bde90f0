//! Flags. Every option is global, so it may come before or after the scenario name.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::conn::Protocol;
use crate::telnet::Profile;

/// Load generator for ringtalk (and IRC servers, for comparison).
///
/// Runs one scenario (or a suite) against a server on this machine and prints what it measured.
/// Every run is bounded in clients and seconds and stops by itself.
#[derive(Debug, Parser)]
#[command(name = "ringtalk-bench", version)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Cmd,
    #[command(flatten)]
    pub opts: Opts,
}

#[derive(Debug, Subcommand)]
pub enum Cmd {
    /// N users (default 3,000) in channels of 6, each saying a line every 10 s on average, for 60 s.
    Seed,
    /// seed, but every line is a private message (`/tell`) to a user picked at random.
    Tells,
    /// seed at the most users the server's and the bench's limits allow.
    Ceiling,
    /// 1,200 users (default) in channels of 6 under a rising ladder of send rates; the most
    /// deliveries/s held with p99 < 10 ms.
    Firehose,
    /// N clients (default 5,000) connect at once: time until all are greeted and logged in.
    Storm,
    /// Logins per second beside the bcrypt limit, and chat latency of logged-in users meanwhile.
    Logins,
    /// One channel with every user (server needs --channel-capacity 0): time for a line to reach all.
    Bigroom,
    /// 10% of clients never read: the others' latency and the server's RSS growth.
    Slowreaders,
    /// Every client drops at once and reconnects: seconds until the server's counts are right again.
    Churn,
    /// One address floods connections, guesses a password and pastes while 1,000 users, each on an
    /// address of its own, chat (server: --exempt none): their latency and logins with and without.
    Abuse,
    /// ceiling for 10 minutes while 5% of users leave and come back every minute: RSS per minute,
    /// the server's counts at the end, errors.
    Soak,
    /// Kills one node of a cluster (--kill-pid) after a baseline of chat in channels of 6: clients lost
    /// with it, and for each channel that moved, the time until its survivors' lines flow again.
    Failover,
    /// N clients (default 32) connect, wait for the greeting and close, in a loop, for --seconds
    /// (default 10): connections per second, and per second of server CPU. With --tls (and --addr a
    /// TLS port), every connection is a full TLS handshake.
    Handshakes,
    /// Several scenarios in a row (--scenarios seed,storm:5000,churn; `:N` sets that one's users).
    Suite {
        #[arg(
            long,
            value_delimiter = ',',
            default_value = "seed,firehose,firehose:60,storm,logins,bigroom,slowreaders,churn"
        )]
        scenarios: Vec<String>,
    },
    /// Every scenario but ceiling, abuse and soak, at default sizes (same as `suite`).
    All,
    /// CI check: seed, storm and churn at ~200 users for a few seconds each; fails only on protocol
    /// errors (or when no client could log in at all).
    Smoke,
    /// Internal: one worker process, driven over stdin/stdout by the parent.
    #[command(hide = true)]
    Worker,
}

#[derive(Debug, Clone, Args)]
pub struct Opts {
    /// Server address.
    #[arg(long, global = true, default_value = "127.0.0.1:5555")]
    pub addr: SocketAddr,
    /// Wire protocol of the server.
    #[arg(long, global = true, value_enum, default_value_t = Protocol::Ringtalk)]
    pub protocol: Protocol,
    /// The telnet client every connection behaves like: `terminal` (inetutils telnet, PuTTY:
    /// character mode, the server echoes and redraws), `mud` (Mudlet: line mode with GA) or `raw` (a
    /// script that never negotiates: line mode, no echo). ringtalk only.
    #[arg(long, global = true, value_enum, default_value_t = Profile::Terminal)]
    pub client: Profile,
    /// Connect over TLS (`--addr` is the server's `--tls-listen` port). The server's certificate is
    /// not checked, and every connection makes a full handshake (no resumption).
    #[arg(long, global = true)]
    pub tls: bool,
    /// Print one JSON object per scenario instead of the table.
    #[arg(long, global = true)]
    pub json: bool,
    /// Users (chat clients) for the scenario; each scenario has its own default.
    #[arg(long, global = true)]
    pub users: Option<u32>,
    /// Length of the scenario's measured phase (firehose: of each step; storm and churn: the most
    /// it waits; failover: the baseline before the kill); each scenario has its own default.
    #[arg(long, global = true)]
    pub seconds: Option<f64>,
    /// Users per channel.
    #[arg(long, global = true, default_value_t = 6)]
    pub group: u32,
    /// Mean seconds between one user's lines (exponential think time); scenario default.
    #[arg(long, global = true)]
    pub think: Option<f64>,
    /// Length of each chat line's text.
    #[arg(long, global = true, default_value_t = 40)]
    pub message_bytes: u32,
    /// The server's pid, or a comma-separated list of them (the nodes of a cluster, `101,102,103`):
    /// RSS and CPU before and after, summed over the processes; the open-files limit of the first.
    #[arg(long, global = true, value_parser = parse_pids)]
    pub server_pid: Option<PidList>,
    /// The most users the server takes (ceiling); else read from --server-log or --server-pid.
    #[arg(long, global = true)]
    pub server_max_users: Option<u64>,
    /// The server's log, to read its startup line ("allows about N users").
    #[arg(long, global = true)]
    pub server_log: Option<PathBuf>,
    /// CPUs the server hashes passwords on (logins limit); default: this machine's.
    #[arg(long, global = true)]
    pub server_cores: Option<usize>,
    /// The server's bcrypt cost (logins limit).
    #[arg(long, global = true, default_value_t = 4)]
    pub bcrypt_cost: u32,
    /// Least number of worker processes (more are used when the open-files limit needs them).
    #[arg(long, global = true)]
    pub workers: Option<u32>,
    /// Source addresses 127.0.0.2 ... to spread clients over (1..=253).
    #[arg(long, global = true, default_value_t = 64)]
    pub source_addrs: u32,
    /// Seconds one client may take to connect, log in and join.
    #[arg(long, global = true, default_value_t = 60.0)]
    pub timeout: f64,
    /// Clients per worker connecting and logging in at once during setup.
    #[arg(long, global = true, default_value_t = 256)]
    pub connect_concurrency: u32,
    /// Password of every bench account.
    #[arg(long, global = true, default_value = "bench-password")]
    pub password: String,
    /// Firehose: total chat lines per second of each step.
    #[arg(
        long,
        global = true,
        value_delimiter = ',',
        default_value = "5000,10000,20000,30000,40000,50000,75000,100000,125000,150000,200000,250000,300000"
    )]
    pub rates: Vec<u64>,
    /// Firehose: failed steps in a row after which the ladder stops.
    #[arg(long, global = true, default_value_t = 2)]
    pub max_failed_steps: u32,
    /// Bigroom: lines sent to the room.
    #[arg(long, global = true, default_value_t = 5)]
    pub messages: u32,
    /// Slowreaders: fraction of clients that never read.
    #[arg(long, global = true, default_value_t = 0.1)]
    pub slow_fraction: f64,
    /// Slowreaders: SO_RCVBUF of the clients that never read.
    #[arg(long, global = true, default_value_t = 4096)]
    pub slow_rcvbuf: u32,
    /// Logins: clients logging in and out in a loop, in all.
    #[arg(long, global = true, default_value_t = 32)]
    pub login_concurrency: u32,
    /// Logins: seconds of chat before the logins start (default 5); abuse: before the attack (30).
    #[arg(long, global = true)]
    pub baseline: Option<f64>,
    /// Abuse: the attacker's connection attempts.
    #[arg(long, global = true, default_value_t = 19_000)]
    pub attack_conns: u32,
    /// Abuse: the attacker's wrong passwords.
    #[arg(long, global = true, default_value_t = 1_000)]
    pub guesses: u32,
    /// Abuse: lines of the attacker's paste.
    #[arg(long, global = true, default_value_t = 10_000)]
    pub paste_lines: u32,
    /// Abuse: users (each on an address of its own, not chatting) whose logins are timed, in turn.
    #[arg(long, global = true, default_value_t = 20)]
    pub login_probes: u32,
    /// Abuse: timed logins per second, over all the login probes.
    #[arg(long, global = true, default_value_t = 1.5)]
    pub login_rate: f64,
    /// Failover: the node process to SIGKILL once the baseline (`--seconds`) is over.
    #[arg(long, global = true)]
    pub kill_pid: Option<u32>,
    /// Failover: seconds the run goes on after the kill.
    #[arg(long, global = true)]
    pub after: Option<f64>,
    /// Soak: seconds between rounds of leaving and coming back (and between RSS samples).
    #[arg(long, global = true, default_value_t = 60.0)]
    pub period: f64,
    /// Soak: fraction of the users that leave and come back in each period.
    #[arg(long, global = true, default_value_t = 0.05)]
    pub leave_fraction: f64,
    /// Ceiling: fraction of the server's user limit left free.
    #[arg(long, global = true, default_value_t = 0.02)]
    pub margin: f64,
    /// Seconds clients keep reading after the last line was sent.
    #[arg(long, global = true, default_value_t = 2.0)]
    pub grace: f64,
}

/// The processes of `--server-pid`: one server, or every node of a cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PidList(pub Vec<u32>);

/// `101` or `101,102,103` (spaces allowed around the commas); every pid once, none zero.
pub fn parse_pids(s: &str) -> Result<PidList, String> {
    let mut pids = Vec::new();
    for part in s.split(',') {
        let part = part.trim();
        let pid: u32 = part
            .parse()
            .map_err(|_| format!("{part:?} is not a pid (want e.g. 101 or 101,102,103)"))?;
        if pid == 0 {
            return Err("pid 0 is not a process".into());
        }
        if pids.contains(&pid) {
            return Err(format!("pid {pid} is listed twice"));
        }
        pids.push(pid);
    }
    Ok(PidList(pids))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_pids_are_one_or_a_list() {
        assert_eq!(parse_pids("101"), Ok(PidList(vec![101])));
        assert_eq!(parse_pids("101,102, 103"), Ok(PidList(vec![101, 102, 103])));
        assert!(parse_pids("").is_err());
        assert!(parse_pids("101,").is_err());
        assert!(parse_pids("101,x").is_err());
        assert!(parse_pids("0").is_err());
        assert!(parse_pids("101,101").is_err());
        assert!(parse_pids("-5").is_err());
    }

    #[test]
    fn server_pid_flag_takes_one_pid_or_several() {
        let one = Cli::try_parse_from(["ringtalk-bench", "seed", "--server-pid", "42"]).unwrap();
        assert_eq!(one.opts.server_pid, Some(PidList(vec![42])));
        let three =
            Cli::try_parse_from(["ringtalk-bench", "--server-pid", "1,2,3", "seed"]).unwrap();
        assert_eq!(three.opts.server_pid, Some(PidList(vec![1, 2, 3])));
        let none = Cli::try_parse_from(["ringtalk-bench", "seed"]).unwrap();
        assert_eq!(none.opts.server_pid, None);
        let f = Cli::try_parse_from([
            "ringtalk-bench",
            "failover",
            "--kill-pid",
            "7",
            "--after",
            "20",
        ])
        .unwrap();
        assert!(matches!(f.command, Cmd::Failover));
        assert_eq!(f.opts.kill_pid, Some(7));
        assert_eq!(f.opts.after, Some(20.0));
    }
}
