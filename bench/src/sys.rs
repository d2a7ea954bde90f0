//! What the kernel tells the bench: the shared clock, open-files limits, and the server's figures from
//! /proc (RSS, CPU seconds, its limits) and the network counters from /proc/net/netstat.

use std::collections::BTreeMap;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// CLOCK_MONOTONIC in nanoseconds: one clock for every process on the machine, so a worker can read
/// the send time another worker wrote into a message.
pub fn now_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the struct we own.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// A tokio instant for a CLOCK_MONOTONIC time (now if it has passed).
pub fn instant_at(ns: u64) -> tokio::time::Instant {
    tokio::time::Instant::now() + Duration::from_nanos(ns.saturating_sub(now_ns()))
}

/// Descriptors a worker keeps back for itself (stdio, the runtime, its epoll).
pub const WORKER_FD_MARGIN: u64 = 100;

/// The most clients one worker process runs.
pub const MAX_PER_WORKER: u64 = 15_000;

/// Raises the soft RLIMIT_NOFILE to the hard limit (the server's own code); returns (soft, hard).
pub fn raise_nofile() -> io::Result<(u64, u64)> {
    let lim = ringtalk::limits::raise_nofile()?;
    Ok((lim.soft, lim.hard))
}

/// Clients one worker may run under an open-files limit.
pub fn clients_per_worker(soft_limit: u64) -> u64 {
    MAX_PER_WORKER.min(soft_limit.saturating_sub(WORKER_FD_MARGIN))
}

/// The kernel's ephemeral port range (`net.ipv4.ip_local_port_range`).
pub fn ephemeral_ports() -> Option<(u32, u32)> {
    let s = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").ok()?;
    let mut it = s.split_whitespace().map(|w| w.parse().ok());
    Some((it.next()??, it.next()??))
}

/// `net.core.somaxconn`, the cap on every listen backlog.
pub fn somaxconn() -> Option<u64> {
    std::fs::read_to_string("/proc/sys/net/core/somaxconn")
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// The server process as /proc shows it at one moment.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct ProcSample {
    /// Resident set size, bytes.
    pub rss_bytes: u64,
    /// utime + stime, seconds.
    pub cpu_s: f64,
}

/// Reads RSS (from /proc/<pid>/statm) and CPU time (utime+stime from /proc/<pid>/stat).
pub fn proc_sample(pid: u32) -> io::Result<ProcSample> {
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(1) as u64;
    let tick = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let statm = std::fs::read_to_string(format!("/proc/{pid}/statm"))?;
    let resident: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|w| w.parse().ok())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "bad statm"))?;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let (utime, stime) = parse_stat_times(&stat)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "bad stat"))?;
    Ok(ProcSample {
        rss_bytes: resident * page,
        cpu_s: (utime + stime) as f64 / tick,
    })
}

/// Samples every process of `pids`; `None` if any of them cannot be read (a sum over fewer
/// processes than before would not compare with it).
pub fn proc_samples(pids: &[u32]) -> Option<Vec<ProcSample>> {
    if pids.is_empty() {
        return None;
    }
    pids.iter().map(|&p| proc_sample(p).ok()).collect()
}

impl ProcSample {
    /// The sum over several processes (the nodes of a cluster).
    pub fn sum(samples: &[ProcSample]) -> ProcSample {
        samples
            .iter()
            .fold(ProcSample::default(), |a, s| ProcSample {
                rss_bytes: a.rss_bytes + s.rss_bytes,
                cpu_s: a.cpu_s + s.cpu_s,
            })
    }
}

/// utime and stime (fields 14 and 15) of a /proc/<pid>/stat line; the command name in parentheses may
/// hold spaces, so fields are counted after its closing parenthesis.
pub fn parse_stat_times(stat: &str) -> Option<(u64, u64)> {
    let after = &stat[stat.rfind(')')? + 1..];
    let mut fields = after.split_whitespace();
    // After the name: state is field 3, so utime (14) is the 12th here.
    let utime = fields.nth(11)?.parse().ok()?;
    let stime = fields.next()?.parse().ok()?;
    Some((utime, stime))
}

/// The soft "Max open files" of a process, from /proc/<pid>/limits.
pub fn proc_nofile(pid: u32) -> io::Result<u64> {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits"))?;
    parse_limits_nofile(&limits)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "no Max open files line"))
}

pub fn parse_limits_nofile(limits: &str) -> Option<u64> {
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line["Max open files".len()..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// The user count in ringtalk's startup line (`... allows about 19888 users`).
pub fn parse_startup_users(log: &str) -> Option<u64> {
    log.lines().rev().find_map(|l| {
        let i = l.find("allows about ")?;
        l[i + "allows about ".len()..]
            .split_whitespace()
            .next()?
            .parse()
            .ok()
    })
}

/// The fields (`key=value`) of a heartbeat line of ringtalk's log (`... heartbeat connections=12
/// logged_in=12 ... limits=conn_cap=0 unauth_cap=3 ... rss_mb=20.1`), colour escapes removed and
/// quotes taken off; a field that lists others (`limits=conn_cap=0 unauth_cap=3`) gives each its
/// own key. `None` for any other line. Whatever counters the server adds come along.
pub fn parse_heartbeat(line: &str) -> Option<BTreeMap<String, String>> {
    let plain = strip_ansi(line);
    let i = plain.find(" heartbeat")?;
    let rest = &plain[i + " heartbeat".len()..];
    let mut fields = BTreeMap::new();
    let mut words = rest.split(' ');
    while let Some(word) = words.next() {
        let Some((k, v)) = word.rsplit_once('=') else {
            continue;
        };
        let k = k.rsplit('=').next().unwrap_or(k);
        let mut v = v.to_string();
        // A quoted value may hold spaces (`per_shard="5/5 7/7"`).
        if v.starts_with('"') && !(v.len() > 1 && v.ends_with('"')) {
            for more in words.by_ref() {
                v.push(' ');
                v.push_str(more);
                if more.ends_with('"') {
                    break;
                }
            }
        }
        fields.insert(k.to_string(), v.trim_matches('"').to_string());
    }
    (!fields.is_empty()).then_some(fields)
}

/// Removes terminal escape sequences (ESC [ ... letter).
fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            for d in chars.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The length of a file (a log the bench reads the new part of later); `None` if it cannot be read.
pub fn file_len(path: &Path) -> Option<u64> {
    std::fs::metadata(path).ok().map(|m| m.len())
}

/// The heartbeats in bytes `from..to` of a log (`to`: its end), in order.
pub fn heartbeats_in(path: &Path, from: u64, to: Option<u64>) -> Vec<BTreeMap<String, String>> {
    let Ok(mut f) = std::fs::File::open(path) else {
        return Vec::new();
    };
    let mut text = Vec::new();
    if f.seek(SeekFrom::Start(from)).is_err() {
        return Vec::new();
    }
    let read = match to {
        Some(to) => f.take(to.saturating_sub(from)).read_to_end(&mut text),
        None => f.read_to_end(&mut text),
    };
    if read.is_err() {
        return Vec::new();
    }
    String::from_utf8_lossy(&text)
        .lines()
        .filter_map(parse_heartbeat)
        .collect()
}

/// TcpExt ListenOverflows and ListenDrops from /proc/net/netstat (for the whole network namespace).
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct ListenCounters {
    pub overflows: u64,
    pub drops: u64,
}

pub fn listen_counters() -> io::Result<ListenCounters> {
    let text = std::fs::read_to_string("/proc/net/netstat")?;
    parse_netstat(&text)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "no TcpExt in netstat"))
}

pub fn parse_netstat(text: &str) -> Option<ListenCounters> {
    let mut lines = text.lines();
    while let Some(names) = lines.next() {
        let values = lines.next()?;
        if !names.starts_with("TcpExt:") {
            continue;
        }
        let mut c = ListenCounters::default();
        for (n, v) in names.split_whitespace().zip(values.split_whitespace()) {
            match n {
                "ListenOverflows" => c.overflows = v.parse().ok()?,
                "ListenDrops" => c.drops = v.parse().ok()?,
                _ => {}
            }
        }
        return Some(c);
    }
    None
}

/// The sockets of TCP table lines (`/proc/net/tcp` and `tcp6`) in state `state` (`0A` listening,
/// `01` established) whose local port is `port`, as the link text of a descriptor on them
/// (`socket:[<inode>]`).
fn socket_inodes(port: u16, state: &str) -> Vec<String> {
    let mut inodes = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        inodes.extend(parse_tcp_table(&text, port, state));
    }
    inodes
}

/// [`socket_inodes`] of one table's text.
pub fn parse_tcp_table(text: &str, port: u16, state: &str) -> Vec<String> {
    let mut inodes = Vec::new();
    for line in text.lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        // sl local_address rem_address st ... inode (field 9)
        if f.len() < 10 || f[3] != state {
            continue;
        }
        let Some((_, p)) = f[1].rsplit_once(':') else {
            continue;
        };
        if u16::from_str_radix(p, 16).ok() == Some(port) {
            inodes.push(format!("socket:[{}]", f[9]));
        }
    }
    inodes
}

/// How many of `pid`'s descriptors are among `inodes` (only processes this user may look into).
fn held_by(pid: u32, inodes: &std::collections::HashSet<String>) -> io::Result<u64> {
    let mut n = 0;
    for fd in std::fs::read_dir(format!("/proc/{pid}/fd"))?.flatten() {
        if let Ok(target) = std::fs::read_link(fd.path()) {
            n += target.to_str().is_some_and(|t| inodes.contains(t)) as u64;
        }
    }
    Ok(n)
}

/// The pids of the processes listening on `addr`'s port: one server, or every node of a cluster
/// sharing it (SO_REUSEPORT). Found through /proc/net/tcp and the processes' descriptors; only
/// processes this user may look into are seen. In /proc's order (ascending pids).
pub fn find_listener_pids(addr: std::net::SocketAddr) -> Vec<u32> {
    let inodes: std::collections::HashSet<String> =
        socket_inodes(addr.port(), "0A").into_iter().collect();
    if inodes.is_empty() {
        return Vec::new();
    }
    let me = std::process::id();
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut pids: Vec<u32> = procs
        .flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()))
        .filter(|&pid| pid != me && held_by(pid, &inodes).is_ok_and(|n| n > 0))
        .collect();
    pids.sort_unstable();
    pids
}

/// Whether process `pid` holds a socket listening on `addr`'s port (the failover scenario's check
/// that the pid it is about to kill is a node of the server under test).
pub fn listens_on(pid: u32, addr: std::net::SocketAddr) -> bool {
    let inodes: std::collections::HashSet<String> =
        socket_inodes(addr.port(), "0A").into_iter().collect();
    held_by(pid, &inodes).is_ok_and(|n| n > 0)
}

/// Established connections that process `pid` holds on local port `port`: the clients a node
/// serves. `None` if its descriptors cannot be read.
pub fn connections_held(pid: u32, port: u16) -> Option<u64> {
    let inodes: std::collections::HashSet<String> = socket_inodes(port, "01").into_iter().collect();
    held_by(pid, &inodes).ok()
}

/// Sleeps until CLOCK_MONOTONIC reaches `ns` (clock_nanosleep with an absolute time: no drift,
/// microseconds late at most on an idle core).
pub fn sleep_until_ns(ns: u64) {
    let ts = libc::timespec {
        tv_sec: (ns / 1_000_000_000) as libc::time_t,
        tv_nsec: (ns % 1_000_000_000) as libc::c_long,
    };
    loop {
        // SAFETY: clock_nanosleep reads `ts`; no remainder is asked for with TIMER_ABSTIME.
        let r = unsafe {
            libc::clock_nanosleep(
                libc::CLOCK_MONOTONIC,
                libc::TIMER_ABSTIME,
                &ts,
                std::ptr::null_mut(),
            )
        };
        if r != libc::EINTR {
            return;
        }
    }
}

/// Sends SIGKILL to `pid`.
pub fn sigkill(pid: u32) -> io::Result<()> {
    let pid = libc::pid_t::try_from(pid)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "pid out of range"))?;
    // SAFETY: kill has no memory preconditions; the pid was checked to be a node of the server.
    if unsafe { libc::kill(pid, libc::SIGKILL) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// CPUs this process may run on.
pub fn cpus() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_times_after_a_name_with_spaces() {
        let stat = "1234 (ring talk) S 1 2 3 4 5 6 7 8 9 10 250 75 0 0 20 0 3 0 100 2000 300";
        assert_eq!(parse_stat_times(stat), Some((250, 75)));
    }

    #[test]
    fn limits_and_startup_line() {
        let limits = "Limit                     Soft Limit           Hard Limit           Units\n\
                      Max open files            20000                20000                files\n";
        assert_eq!(parse_limits_nofile(limits), Some(20000));
        let log =
            "\x1b[2m...\x1b[0m ringtalk listening on 127.0.0.1:5555 with 2 shards (CPUs [0, 1]); \
                   open-files limit 20000 (hard 20000) allows about 19888 users\n";
        assert_eq!(parse_startup_users(log), Some(19888));
    }

    #[test]
    fn heartbeat_fields() {
        let line = concat!(
            "\x1b[2m2026-11-30T04:39:39.123Z\x1b[0m \x1b[32m INFO\x1b[0m ",
            "\x1b[2mringtalk::server\x1b[0m\x1b[2m:\x1b[0m heartbeat ",
            "\x1b[3mconnections\x1b[0m\x1b[2m=\x1b[0m12 \x1b[3mlogged_in\x1b[0m\x1b[2m=\x1b[0m11 ",
            "\x1b[3mper_shard\x1b[0m\x1b[2m=\x1b[0m\"5/5 7/6\" members=10 rss_mb=20.1"
        );
        let f = parse_heartbeat(line).unwrap();
        assert_eq!(f["connections"], "12");
        assert_eq!(f["logged_in"], "11");
        assert_eq!(f["per_shard"], "5/5 7/6");
        assert_eq!(f["members"], "10");
        assert_eq!(f["rss_mb"], "20.1");
        assert_eq!(
            parse_heartbeat("INFO ringtalk: listening on 127.0.0.1:5555"),
            None
        );
        // As ringtalk writes it: per_shard and limits are lists with spaces.
        let plain = "2026-11-30T05:08:09.593071Z  INFO ringtalk::server: heartbeat connections=3 \
                     logged_in=3 per_shard=2/2 1/1 channels=11 limits=conn_cap=0 unauth_cap=4 \
                     conn_rate=74 login_throttle=2 flood=1975 worker_queue=0 rss_mb=13.8";
        let f = parse_heartbeat(plain).unwrap();
        assert_eq!(f["connections"], "3");
        assert_eq!(f["per_shard"], "2/2");
        assert_eq!(f["conn_cap"], "0");
        assert_eq!(f["unauth_cap"], "4");
        assert_eq!(f["conn_rate"], "74");
        assert_eq!(f["flood"], "1975");
        assert_eq!(f["worker_queue"], "0");
        assert!(!f.contains_key("limits"));
    }

    #[test]
    fn netstat_tcpext() {
        let text = "TcpExt: SyncookiesSent ListenOverflows ListenDrops\nTcpExt: 0 12 15\n\
                    IpExt: InNoRoutes\nIpExt: 0\n";
        assert_eq!(
            parse_netstat(text),
            Some(ListenCounters {
                overflows: 12,
                drops: 15
            })
        );
    }

    #[test]
    fn tcp_table_sockets_by_port_and_state() {
        let table = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
   0: 0100007F:15B3 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 111 1 0 100 0 0 10 0\n\
   1: 0100007F:15B3 0200007F:A1B2 01 00000000:00000000 00:00000000 00000000  1000        0 222 1 0 20 4 30 10 -1\n\
   2: 0200007F:A1B2 0100007F:15B3 01 00000000:00000000 00:00000000 00000000  1000        0 333 1 0 20 4 30 10 -1\n";
        assert_eq!(parse_tcp_table(table, 5555, "0A"), vec!["socket:[111]"]);
        assert_eq!(parse_tcp_table(table, 5555, "01"), vec!["socket:[222]"]);
        assert!(parse_tcp_table(table, 5556, "0A").is_empty());
    }

    #[test]
    fn samples_add_up_over_processes() {
        let a = ProcSample {
            rss_bytes: 10,
            cpu_s: 1.5,
        };
        let b = ProcSample {
            rss_bytes: 32,
            cpu_s: 0.25,
        };
        assert_eq!(
            ProcSample::sum(&[a, b]),
            ProcSample {
                rss_bytes: 42,
                cpu_s: 1.75
            }
        );
        assert_eq!(ProcSample::sum(&[]), ProcSample::default());
        let me = std::process::id();
        assert_eq!(proc_samples(&[me, me]).map(|v| v.len()), Some(2));
        assert_eq!(proc_samples(&[]), None);
        assert_eq!(proc_samples(&[me, u32::MAX]), None);
    }

    #[test]
    fn own_process_figures() {
        let s = proc_sample(std::process::id()).unwrap();
        assert!(s.rss_bytes > 0);
        assert!(now_ns() > 0);
        assert!(clients_per_worker(20_000) == 15_000 && clients_per_worker(1024) == 924);
    }
}
