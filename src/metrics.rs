//! `GET /metrics`: the server's counters in the Prometheus text format (version 0.0.4), served
//! with `--metrics-listen ADDR` (off by default).
//!
//! # Who asks whom
//!
//! One plain thread, `ringtalk-metrics`, owns a blocking [`TcpListener`] and serves one connection
//! at a time; no shard and no async runtime is involved in the serving. For each scrape it reads:
//!
//! - the shards' counters through [`Stats::snapshot`]: per-connection ones straight from their
//!   atomics, per-line ones (lines, deliveries, drops, the delivery latency histogram, channels,
//!   members) by *asking* every shard, through a bounded queue and its doorbell, and waiting for
//!   the answers at most [`ASK_TIMEOUT`](crate::stats::ASK_TIMEOUT). A shard answers from its
//!   inbox task with a `try_send`, so the scrape thread waits for shards but no shard ever waits
//!   for it; a shard that does not answer in time is shown as `ringtalk_shard_up{shard} 0` with
//!   the last values it gave.
//! - the worker pool's queue depth and bcrypt histogram ([`Accounts`]), the channel log's drops
//!   ([`ChannelLog`]), and the cluster's state ([`ClusterWatch`]): atomics and a mutex that no
//!   shard holds for longer than a copy.
//!
//! # The encoder
//!
//! Written here, about a hundred lines, rather than taken from `prometheus-client`: that crate
//! writes OpenMetrics (a counter's `# TYPE` names it without `_total`, and an `# EOF` ends the
//! text), which is not the 0.0.4 text format and content type asked for; and its metric types
//! own their values (atomics registered up front), where every value here is read at scrape time
//! from a snapshot. The format is small: `# HELP` and `# TYPE` once per family, then
//! `name{label="value"} number` lines; counters end in `_total`; a histogram is cumulative
//! `_bucket{le=...}` lines, `_sum` and `_count`. Label values are escaped, though every one of them
//! is a number or a fixed name.
//!
//! What it costs in the binary: no new dependency; the release binary grew by 164 kB stripped
//! (12,385,336 to 12,549,112 bytes; 91.5 to 92.5 MB with the debug information the release
//! profile keeps), for this module, the asking, the histograms and the login outcomes.
//!
//! # The listener
//!
//! HTTP/1.0-ish: a request is read up to [`MAX_REQUEST`] bytes, `GET /metrics` (or `HEAD`) is
//! answered 200, any other path 404, another method 405, anything that is not a request line 400;
//! every answer has a `Content-Length` and the connection is closed after it. One connection holds
//! the thread for at most [`IO_TIMEOUT`] in all, however slowly it sends or reads, so a stop (which
//! waits for the connection being served) waits at most that long too. The thread
//! ends when the server stops ([`MetricsServer::stop`]: a flag, then a `shutdown(2)` of the
//! listening socket, which wakes the blocked `accept`).

use std::fmt::Write as _;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tracing::{info, warn};

use crate::accounts::Accounts;
use crate::chanlog::ChannelLog;
use crate::cluster::ClusterWatch;
use crate::defences::Limit;
use crate::listener::LogLimiter;
use crate::stats::{Histogram, LoginOutcome, ShardSnapshot, Stats, BUCKET_BOUNDS_US};

/// The most bytes of a request read; a request whose headers do not end within them is refused.
pub const MAX_REQUEST: usize = 8 * 1024;

/// How long one connection may hold the thread, from accept to the last byte of the answer: one
/// deadline for the whole exchange, not per read (a client trickling a byte a second must not
/// hold the thread, or the server's shutdown, for hours).
pub const IO_TIMEOUT: Duration = Duration::from_secs(2);

/// The content type of the Prometheus text format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// How long the thread rests after an `accept` that failed for want of descriptors.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// What a scrape reads.
#[derive(Clone)]
pub struct Sources {
    /// Every shard's counters.
    pub stats: Arc<Stats>,
    /// The worker pool: queue depth, bcrypt times.
    pub accounts: Accounts,
    /// The channel log writer: lines it dropped.
    pub chanlog: ChannelLog,
    /// The bridge, in a cluster.
    pub cluster: Option<ClusterWatch>,
}

/// The families with one sample per shard: name, help, type, and the shard's value.
type PerShard = (
    &'static str,
    &'static str,
    &'static str,
    fn(&ShardSnapshot) -> u64,
);

const PER_SHARD: [PerShard; 7] = [
    (
        "ringtalk_connections",
        "Connections open now.",
        "gauge",
        |s| s.connections,
    ),
    (
        "ringtalk_logged_in_users",
        "Sessions logged in now.",
        "gauge",
        |s| s.logged_in,
    ),
    (
        "ringtalk_connections_accepted_total",
        "Connections accepted since start.",
        "counter",
        |s| s.accepted,
    ),
    (
        "ringtalk_channels",
        "Channels homed on the shard.",
        "gauge",
        |s| s.channels,
    ),
    (
        "ringtalk_channel_members",
        "The shard's sessions that are in a channel.",
        "gauge",
        |s| s.members,
    ),
    (
        "ringtalk_lines_total",
        "Lines ordered by channels homed on the shard (chat, joins, leaves) since start.",
        "counter",
        |s| s.lines,
    ),
    (
        "ringtalk_deliveries_total",
        "Lines put into the shard's sessions' outgoing queues since start.",
        "counter",
        |s| s.deliveries,
    ),
];

/// The text of one scrape.
pub fn render(sources: &Sources) -> String {
    let snap = sources.stats.snapshot();
    let mut t = Text::default();
    let shards: Vec<String> = (0..snap.shards.len()).map(|i| i.to_string()).collect();
    let per_shard = |t: &mut Text, name: &str, value: &dyn Fn(usize) -> u64| {
        for (i, shard) in shards.iter().enumerate() {
            t.sample(name, &[("shard", shard)], value(i));
        }
    };

    t.family("ringtalk_shard_up", "Whether the shard answered this scrape (1) or not (0: its per-line values are the last it gave).", "gauge");
    per_shard(&mut t, "ringtalk_shard_up", &|i| {
        u64::from(snap.shards[i].up)
    });
    t.family(
        "ringtalk_shard_answer_seconds",
        "How long this scrape waited for the shards' answers.",
        "gauge",
    );
    t.sample(
        "ringtalk_shard_answer_seconds",
        &[],
        Seconds(snap.asked_in.as_micros() as u64),
    );

    for (name, help, kind, value) in PER_SHARD {
        t.family(name, help, kind);
        per_shard(&mut t, name, &|i| value(&snap.shards[i]));
    }

    let total = snap.total();
    t.family(
        "ringtalk_logins_total",
        "Login attempts since start, by how they ended.",
        "counter",
    );
    for outcome in LoginOutcome::ALL {
        t.sample(
            "ringtalk_logins_total",
            &[("outcome", outcome.name())],
            total.logins(outcome),
        );
    }
    t.family(
        "ringtalk_limit_hits_total",
        "Times each defence held something back since start.",
        "counter",
    );
    for limit in Limit::ALL {
        t.sample(
            "ringtalk_limit_hits_total",
            &[("kind", limit.name())],
            total.hits(limit),
        );
    }

    t.family("ringtalk_dropped_total", "Lines dropped since start: a reader's full queue (queue), a full outbox to another shard (ring), the channel log's full queue (log), the way to or from other nodes (bridge).", "counter");
    for (i, shard) in shards.iter().enumerate() {
        let s = &snap.shards[i];
        t.sample(
            "ringtalk_dropped_total",
            &[("kind", "queue"), ("shard", shard)],
            s.dropped,
        );
        t.sample(
            "ringtalk_dropped_total",
            &[("kind", "ring"), ("shard", shard)],
            s.ring_dropped,
        );
    }
    t.sample(
        "ringtalk_dropped_total",
        &[("kind", "log")],
        sources.chanlog.dropped(),
    );
    if let Some(cluster) = &sources.cluster {
        let (_, _, dropped) = cluster.traffic();
        t.sample("ringtalk_dropped_total", &[("kind", "bridge")], dropped);
    }

    t.family(
        "ringtalk_worker_queue_depth",
        "Jobs (SQLite, bcrypt) waiting for a worker thread.",
        "gauge",
    );
    t.sample(
        "ringtalk_worker_queue_depth",
        &[],
        sources.accounts.queue_depth() as u64,
    );
    t.family(
        "ringtalk_bcrypt_seconds",
        "Time each bcrypt hash or password check took, on the worker threads.",
        "histogram",
    );
    t.histogram(
        "ringtalk_bcrypt_seconds",
        None,
        &sources.accounts.bcrypt_times(),
    );
    t.family("ringtalk_delivery_latency_seconds", "Time from a line entering a session's queue to the write that sends it (each line counted at the oldest line of its write's wait).", "histogram");
    for (i, shard) in shards.iter().enumerate() {
        t.histogram(
            "ringtalk_delivery_latency_seconds",
            Some(("shard", shard)),
            &snap.shards[i].latency,
        );
    }

    if let Some(cluster) = &sources.cluster {
        let view = cluster.view();
        let (sent, received, _) = cluster.traffic();
        t.family(
            "ringtalk_cluster_connected",
            "Whether the bridge is connected to NATS now.",
            "gauge",
        );
        t.sample("ringtalk_cluster_connected", &[], u64::from(view.connected));
        t.family(
            "ringtalk_cluster_nodes",
            "Live nodes of the cluster as this node sees it, this one included.",
            "gauge",
        );
        t.sample("ringtalk_cluster_nodes", &[], view.nodes.len() as u64);
        t.family(
            "ringtalk_cluster_messages_sent_total",
            "Messages published to NATS since start.",
            "counter",
        );
        t.sample("ringtalk_cluster_messages_sent_total", &[], sent);
        t.family(
            "ringtalk_cluster_messages_received_total",
            "Messages from other nodes handed to a shard since start.",
            "counter",
        );
        t.sample("ringtalk_cluster_messages_received_total", &[], received);
    }
    t.out
}

/// A value in microseconds, written in seconds.
struct Seconds(u64);

impl std::fmt::Display for Seconds {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0 as f64 / 1e6)
    }
}

/// The text being written.
#[derive(Default)]
struct Text {
    out: String,
}

impl Text {
    /// Starts a family: its help and its type.
    fn family(&mut self, name: &str, help: &str, kind: &str) {
        let _ = writeln!(self.out, "# HELP {name} {}", escape_help(help));
        let _ = writeln!(self.out, "# TYPE {name} {kind}");
    }

    /// One sample line.
    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl std::fmt::Display) {
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (label, value)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                let _ = write!(self.out, "{label}=\"{}\"", escape_label(value));
            }
            self.out.push('}');
        }
        let _ = writeln!(self.out, " {value}");
    }

    /// A histogram's samples: cumulative buckets, sum and count (the family is started apart).
    fn histogram(&mut self, name: &str, label: Option<(&str, &str)>, h: &Histogram) {
        let bucket = format!("{name}_bucket");
        let mut cumulative = 0;
        for (i, count) in h.counts.iter().enumerate() {
            cumulative += count;
            let le = match BUCKET_BOUNDS_US.get(i) {
                Some(&us) => Seconds(us).to_string(),
                None => "+Inf".to_string(),
            };
            let mut labels = Vec::with_capacity(2);
            labels.extend(label);
            labels.push(("le", le.as_str()));
            self.sample(&bucket, &labels, cumulative);
        }
        let labels: Vec<_> = label.into_iter().collect();
        self.sample(&format!("{name}_sum"), &labels, Seconds(h.sum_us));
        self.sample(&format!("{name}_count"), &labels, cumulative);
    }
}

/// A label value as the text format writes it: `\`, `"` and newlines escaped.
fn escape_label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Help text as the text format writes it: `\` and newlines escaped.
fn escape_help(help: &str) -> String {
    help.replace('\\', "\\\\").replace('\n', "\\n")
}

/// The `--metrics-listen` endpoint: its thread, and the way to stop it.
pub struct MetricsServer {
    addr: SocketAddr,
    stopping: Arc<AtomicBool>,
    /// A second descriptor of the listening socket, to shut it down from another thread.
    listener: TcpListener,
    thread: JoinHandle<()>,
}

impl MetricsServer {
    /// Binds `addr` (at start, so a bad address fails the start with everything else).
    pub fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
        TcpListener::bind(addr)
    }

    /// Serves `GET /metrics` on `listener` from a thread of its own until [`MetricsServer::stop`].
    pub fn start(listener: TcpListener, sources: Sources) -> io::Result<MetricsServer> {
        let addr = listener.local_addr()?;
        let ours = listener.try_clone()?;
        let stopping = Arc::new(AtomicBool::new(false));
        let stop = stopping.clone();
        let thread = std::thread::Builder::new()
            .name("ringtalk-metrics".into())
            .spawn(move || serve(listener, &stop, &sources))?;
        info!(%addr, "metrics: serving GET /metrics");
        Ok(MetricsServer {
            addr,
            stopping,
            listener: ours,
            thread,
        })
    }

    /// The address it listens on (with the real port when port 0 was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops the thread (after the scrape it may be serving) and closes the socket.
    pub fn stop(self) {
        self.stopping.store(true, Ordering::SeqCst);
        // SAFETY: a plain system call on a descriptor this struct owns. It wakes the thread's
        // `accept`, which then fails and sees the flag.
        unsafe { libc::shutdown(self.listener.as_raw_fd(), libc::SHUT_RDWR) };
        if self.thread.join().is_err() {
            warn!("metrics: the thread panicked");
        }
    }
}

/// The thread's loop: one connection at a time, until stopped.
fn serve(listener: TcpListener, stopping: &AtomicBool, sources: &Sources) {
    let mut error_log = LogLimiter::new(Duration::from_secs(1));
    loop {
        let accepted = listener.accept();
        if stopping.load(Ordering::SeqCst) {
            return;
        }
        match accepted {
            Ok((stream, _)) => {
                if let Err(e) = answer(stream, sources) {
                    tracing::debug!(error = %e, "metrics: a scrape failed");
                }
            }
            Err(e) => {
                if let Some(held) = error_log.allow(Instant::now()) {
                    warn!(error = %e, repeats = held, "metrics: accept failed");
                }
                if crate::listener::is_fd_exhaustion(&e) {
                    std::thread::sleep(ACCEPT_BACKOFF);
                }
            }
        }
    }
}

/// What a request asks for.
#[derive(Debug, PartialEq, Eq)]
enum Request {
    /// `GET /metrics` (`head`: `HEAD`, the headers alone).
    Metrics { head: bool },
    /// Another path.
    NotFound,
    /// Another method.
    NotAllowed,
    /// Not an HTTP request line, or headers longer than [`MAX_REQUEST`].
    Bad,
}

/// Reads one request and answers it.
fn answer(mut stream: TcpStream, sources: &Sources) -> io::Result<()> {
    let deadline = Instant::now() + IO_TIMEOUT;
    // Each call may wait only for what is left of the deadline.
    let left = || {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the client took too long",
            ))
        } else {
            Ok(left)
        }
    };
    let mut buf = vec![0u8; MAX_REQUEST];
    let mut len = 0;
    let request = loop {
        if let Some(request) = parse(&buf[..len]) {
            break request;
        }
        if len == buf.len() {
            break Request::Bad;
        }
        stream.set_read_timeout(Some(left()?))?;
        match stream.read(&mut buf[len..]) {
            // Closed before the headers ended: what came is all there is.
            Ok(0) => break parse_line(&buf[..len]),
            Ok(n) => len += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    };
    let (status, body, head) = match request {
        Request::Metrics { head } => ("200 OK", render(sources), head),
        Request::NotFound => (
            "404 Not Found",
            "Not found: try /metrics\n".to_string(),
            false,
        ),
        Request::NotAllowed => ("405 Method Not Allowed", "Only GET\n".to_string(), false),
        Request::Bad => ("400 Bad Request", "Bad request\n".to_string(), false),
    };
    let allow = if status.starts_with("405") {
        "Allow: GET, HEAD\r\n"
    } else {
        ""
    };
    let header = format!(
        "HTTP/1.0 {status}\r\nContent-Type: {CONTENT_TYPE}\r\nContent-Length: {}\r\n{allow}Connection: close\r\n\r\n",
        body.len()
    );
    let mut out = header.into_bytes();
    if !head {
        out.extend_from_slice(body.as_bytes());
    }
    let mut sent = 0;
    while sent < out.len() {
        stream.set_write_timeout(Some(left()?))?;
        match stream.write(&out[sent..]) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => sent += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    stream.shutdown(Shutdown::Write)
}

/// The request in `bytes`, once its headers have ended (a blank line); `None` until then.
fn parse(bytes: &[u8]) -> Option<Request> {
    let ended =
        bytes.windows(4).any(|w| w == b"\r\n\r\n") || bytes.windows(2).any(|w| w == b"\n\n");
    ended.then(|| parse_line(bytes))
}

/// What the request line at the start of `bytes` asks for.
fn parse_line(bytes: &[u8]) -> Request {
    let line_end = bytes
        .iter()
        .position(|&b| b == b'\n')
        .unwrap_or(bytes.len());
    let Ok(line) = std::str::from_utf8(&bytes[..line_end]) else {
        return Request::Bad;
    };
    let mut parts = line.trim_end_matches('\r').split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Request::Bad;
    };
    if !version.starts_with("HTTP/1.") || method.is_empty() || !target.starts_with('/') {
        return Request::Bad;
    }
    let path = target.split_once('?').map_or(target, |(path, _)| path);
    match method {
        "GET" | "HEAD" if path == "/metrics" => Request::Metrics {
            head: method == "HEAD",
        },
        "GET" | "HEAD" => Request::NotFound,
        _ => Request::NotAllowed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_told_apart() {
        let get = |s: &str| parse(s.as_bytes());
        assert_eq!(
            get("GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"),
            Some(Request::Metrics { head: false })
        );
        assert_eq!(
            get("HEAD /metrics?x=1 HTTP/1.0\n\n"),
            Some(Request::Metrics { head: true })
        );
        assert_eq!(get("GET / HTTP/1.1\r\n\r\n"), Some(Request::NotFound));
        assert_eq!(
            get("POST /metrics HTTP/1.1\r\n\r\n"),
            Some(Request::NotAllowed)
        );
        assert_eq!(get("GET /metrics\r\n\r\n"), Some(Request::Bad));
        assert_eq!(
            get("\u{1b}[A garbage \u{0} x y\r\n\r\n"),
            Some(Request::Bad)
        );
        assert_eq!(get("GET /metrics HTTP/1.1\r\nHost: x\r\n"), None);
        assert_eq!(parse(&[0xff, b' ', b'\n', b'\n']), Some(Request::Bad));
        assert_eq!(parse_line(b""), Request::Bad);
    }

    #[test]
    fn histograms_are_written_cumulative_with_sum_and_count() {
        let mut h = Histogram::default();
        h.counts[0] = 2;
        h.counts[3] = 1;
        h.counts[BUCKET_BOUNDS_US.len()] = 1;
        h.sum_us = 1_500_000;
        let mut t = Text::default();
        t.histogram("x_seconds", Some(("shard", "0")), &h);
        let lines: Vec<&str> = t.out.lines().collect();
        assert_eq!(lines[0], "x_seconds_bucket{shard=\"0\",le=\"0.00001\"} 2");
        assert_eq!(lines[3], "x_seconds_bucket{shard=\"0\",le=\"0.0001\"} 3");
        assert_eq!(
            lines[BUCKET_BOUNDS_US.len()],
            "x_seconds_bucket{shard=\"0\",le=\"+Inf\"} 4"
        );
        assert!(t.out.contains("x_seconds_sum{shard=\"0\"} 1.5\n"));
        assert!(t.out.contains("x_seconds_count{shard=\"0\"} 4\n"));
    }

    #[test]
    fn label_values_and_help_are_escaped() {
        let mut t = Text::default();
        t.family("x", "a \\ b\nc", "gauge");
        t.sample("x", &[("k", "a\"b\\c\nd")], 1);
        assert_eq!(
            t.out,
            "# HELP x a \\\\ b\\nc\n# TYPE x gauge\nx{k=\"a\\\"b\\\\c\\nd\"} 1\n"
        );
    }
}
