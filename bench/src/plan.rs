//! What the parent and its worker processes say to each other, one JSON object per line.
//!
//! The parent writes a [`Plan`] to a worker's stdin, then [`Command`]s; the worker writes [`Report`]s to
//! its stdout. Times are CLOCK_MONOTONIC nanoseconds, which every process on the machine shares.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use serde::{Deserialize, Serialize};

use crate::conn::{own_addr, source_addr, Protocol};
use crate::stats::{Errors, HistWire};
use crate::telnet::Profile;

/// What the clients of a worker do once the parent says go.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Log in and join during setup, then chat on the windows' schedule (seed, ceiling, firehose,
    /// logins, slowreaders, abuse, soak).
    Chat,
    /// Connect only at go, all at once; log in; hold until stopped.
    Storm,
    /// Log in and join during setup; at go drop the connection, reconnect, log in, join again.
    Churn,
    /// Everyone in one channel; client 0 sends `bigroom_messages` lines, everyone records them.
    Bigroom,
    /// From go until `hold_ms`: connect (with `tls`, make a full handshake), wait for the greeting,
    /// close, and again; every greeting is counted, with its time from the connect.
    Handshakes,
}

/// A stretch of the measured phase, relative to go.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Window {
    pub name: String,
    pub start_ms: u64,
    pub end_ms: u64,
    /// Chat lines per second per client (mean of an exponential think time); 0 is silence.
    pub rate: f64,
    /// Login loopers work during this window.
    pub logins: bool,
}

/// Everything one worker needs to know.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Plan {
    pub mode: Mode,
    pub protocol: Protocol,
    /// The telnet client every connection behaves like (ringtalk only).
    pub client: Profile,
    pub addr: SocketAddr,
    pub worker: u32,
    /// This worker's chat clients are ids `first..first + count` of `total`.
    pub first: u32,
    pub count: u32,
    pub total: u32,
    /// Users per channel (0: one channel for everyone).
    pub group: u32,
    pub password: String,
    /// Source addresses to rotate over (127.0.0.2 ..).
    pub source_addrs: u32,
    pub timeout_ms: u64,
    /// Clients of this worker connecting and logging in at once during setup.
    pub connect_concurrency: u32,
    pub message_bytes: u32,
    pub windows: Vec<Window>,
    /// How long clients keep reading after the last window, for lines still on their way.
    pub grace_ms: u64,
    /// Fraction of clients that never read after joining, and their SO_RCVBUF.
    pub slow_fraction: f64,
    pub slow_rcvbuf: u32,
    /// Ids of this worker's login loopers (names `bl<id>`).
    pub loopers: Vec<u32>,
    pub bigroom_messages: u32,
    pub bigroom_interval_ms: u64,
    /// Storm and churn: how long after go the worker waits before giving up on its clients.
    pub hold_ms: u64,
    /// Send a [`Report::Window`] as each window (plus grace) ends.
    pub report_windows: bool,
    /// Login names are this and the id (`b7`); login loopers' are this, `l` and their id (`bl3`).
    pub name_prefix: String,
    /// Every client connects from an address of its own ([`own_addr`]) instead of rotating over
    /// `source_addrs` (abuse: the server limits each address).
    pub own_addrs: bool,
    /// Seats of the first channel kept for a client that is not a chat client (the abuse paster):
    /// chat client `id` sits in channel `(id + reserved_seats) / group`.
    pub reserved_seats: u32,
    /// Login loopers in all (over every worker), for their share of a paced schedule.
    pub looper_total: u32,
    /// Loopers log in one at a time, this far apart over all of them (0: each as fast as it can).
    pub login_interval_ms: u64,
    /// Soak: chat clients leave and come back on this schedule.
    pub leave: Option<Leave>,
    /// Abuse: this worker is the attacker.
    pub attack: Option<AttackPlan>,
    /// Failover: the parent kills a node this long after go; the kill time, go + this, divides
    /// lines sent before it from lines sent after, and each client counts what its channel went
    /// through ([`ChannelFailover`]).
    #[serde(default)]
    pub kill_at_ms: Option<u64>,
    /// Tells: each line is a private message (`/tell`) to another user picked at random, instead
    /// of a line on the channel; it has one reader, the addressee.
    #[serde(default)]
    pub tells: bool,
    /// Every connection speaks TLS (`--tls`: `addr` is a TLS port).
    #[serde(default)]
    pub tls: bool,
}

/// The index `k` of a bench channel's name, `bc<k>` as [`Plan::channel`] makes it (the server may
/// write it in another case); `None` for any other channel.
pub fn channel_index(name: &str) -> Option<u32> {
    let k = name
        .get(2..)
        .filter(|_| name[..2].eq_ignore_ascii_case("bc"))?;
    if k.is_empty() || !k.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    k.parse().ok()
}

/// Soak: in each period a fraction of the chat clients leave and come back.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Leave {
    /// Fraction of the chat clients that leave in each period.
    pub fraction: f64,
    pub period_ms: u64,
    /// Periods in all; period `p` starts `p * period_ms` after go.
    pub periods: u32,
}

/// One planned departure: when (ms after go), and whether by `/quit` or by dropping the connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LeaveAt {
    pub at_ms: u64,
    pub quit: bool,
}

impl Leave {
    /// When chat client `id` leaves (and at once comes back). In period `p` the clients whose
    /// `id + p` is picked by [`spread`] leave, so each period takes another `fraction` of them,
    /// spread over every channel; each leaves at a time of its own between a tenth and eight tenths
    /// into the period (so it is back before the period ends), half of them with `/quit`, half by
    /// dropping the connection.
    pub fn schedule(&self, id: u32) -> Vec<LeaveAt> {
        let period = self.period_ms.max(1);
        (0..self.periods)
            .filter(|&p| spread(id as u64 + p as u64, self.fraction))
            .map(|p| {
                let h = splitmix64(((id as u64) << 32) | p as u64);
                LeaveAt {
                    at_ms: p as u64 * period + period / 10 + h % (period * 7 / 10).max(1),
                    quit: (h >> 40) & 1 == 0,
                }
            })
            .collect()
    }
}

/// Whether `x` is one of the `fraction` of all numbers picked, spread evenly (one in 20 for 0.05).
pub fn spread(x: u64, fraction: f64) -> bool {
    fraction > 0.0 && ((x as f64 + 1.0) * fraction).floor() > (x as f64 * fraction).floor()
}

/// A well-mixed 64-bit hash (SplitMix64's finaliser), for schedules that look random but repeat.
pub fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Abuse: what the attacker does, all from one address, during `start_ms..end_ms` after go.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AttackPlan {
    /// The attacker's one source address (never a chat client's).
    pub src: Ipv4Addr,
    pub start_ms: u64,
    pub end_ms: u64,
    /// Connection attempts, spread evenly from `flood_start_ms` to the attack's end.
    pub connections: u32,
    /// When the flood begins: a little after the guessers have connected, so that they meet the
    /// login throttle and the flood meets the connection limits.
    pub flood_start_ms: u64,
    /// Flood attempts waiting for the server's answer at once.
    pub in_flight: u32,
    /// Flood connections the server let in that are held open (to the end of the attack) at once;
    /// beyond that they are closed at the greeting, so a server without limits cannot take every
    /// descriptor of the machine.
    pub hold_max: u32,
    /// Wrong passwords for `victim`, spread evenly over the attack.
    pub guesses: u32,
    /// Connections guessing side by side (each takes every `guessers`-th guess).
    pub guessers: u32,
    /// An existing account; its password is never guessed right.
    pub victim: String,
    /// The account that pastes, logged in and on `paste_channel` from setup on.
    pub paster: String,
    pub paste_channel: String,
    /// Lines of the paste, written as fast as the server reads them at the start of the attack.
    pub paste_lines: u32,
}

impl AttackPlan {
    /// When guess `i` is due, ms after go.
    pub fn guess_at_ms(&self, i: u32) -> u64 {
        self.start_ms + (self.end_ms - self.start_ms) * i as u64 / self.guesses.max(1) as u64
    }

    /// When flood attempt `i` is due, ms after go.
    pub fn attempt_at_ms(&self, i: u32) -> u64 {
        let start = self.flood_start_ms.min(self.end_ms);
        start + (self.end_ms - start) * i as u64 / self.connections.max(1) as u64
    }

    /// The wrong password of guess `i` (a valid length, never the bench's password).
    pub fn wrong_password(i: u32) -> String {
        format!("wrong-guess-{i:05}")
    }
}

impl Plan {
    /// The login name of chat client `id`.
    pub fn name(&self, id: u32) -> String {
        format!("{}{id}", self.name_prefix)
    }

    /// The login name of login looper `lid`.
    pub fn looper_name(&self, lid: u32) -> String {
        format!("{}l{lid}", self.name_prefix)
    }

    /// The source address of client `id` (login loopers: `total + lid`).
    pub fn source(&self, id: u32) -> IpAddr {
        if self.own_addrs {
            own_addr(id)
        } else {
            source_addr(id, self.source_addrs)
        }
    }

    /// The index `k` of chat client `id`'s channel `bc<k>` (`None` for the one big room).
    pub fn channel_index_of(&self, id: u32) -> Option<u32> {
        (id + self.reserved_seats).checked_div(self.group)
    }

    /// The channel of chat client `id`.
    pub fn channel(&self, id: u32) -> String {
        match (id + self.reserved_seats).checked_div(self.group) {
            Some(k) => format!("bc{k}"),
            None => "bigroom".to_string(),
        }
    }

    /// Whether client `id` is one of the slow readers: spread evenly, `slow_fraction` of all ids.
    pub fn is_slow(&self, id: u32) -> bool {
        let f = self.slow_fraction;
        f > 0.0 && ((id as f64 + 1.0) * f).floor() > (id as f64 * f).floor()
    }

    /// The channel members a line from `sender` should reach (readers only; not the sender itself
    /// when the protocol does not echo).
    pub fn expected_readers(&self, sender: u32) -> u64 {
        if self.tells {
            return 1;
        }
        let r = self.reserved_seats;
        let (lo, hi) = match (sender + r).checked_div(self.group) {
            Some(k) => (
                (k * self.group).saturating_sub(r),
                (k * self.group + self.group - r).min(self.total),
            ),
            None => (0, self.total),
        };
        (lo..hi)
            .filter(|&id| !self.is_slow(id))
            .filter(|&id| id != sender || self.protocol.echoes_own())
            .count() as u64
    }

    /// The end of the last window, ms after go.
    pub fn windows_end_ms(&self) -> u64 {
        self.windows.iter().map(|w| w.end_ms).max().unwrap_or(0)
    }
}

/// Parent to worker, after the plan.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "lowercase")]
pub enum Command {
    /// Start the measured phase at this time.
    Go { at_ns: u64 },
    /// Stop now: clients close and the worker reports.
    Stop,
}

/// Worker to parent.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "ev", rename_all = "lowercase")]
pub enum Report {
    /// Every client has finished setup (or failed it).
    Ready(SetupReport),
    /// Window `index` and its grace are over (only with `report_windows`).
    Window { index: usize, stats: WindowReport },
    /// Every client has passed the mode's milestone (storm: logged in; churn: joined again) or
    /// failed.
    Reached,
    /// The worker is finished.
    Done(Box<WorkerReport>),
}

/// Setup: connecting, logging in, joining.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct SetupReport {
    pub clients: u32,
    pub connected: u32,
    pub logged_in: u32,
    pub joined: u32,
    /// Accounts that did not exist and were created.
    pub created: u32,
    /// "Server busy" answers (IRC: nick in use) waited out.
    pub busy: u64,
    /// "Channel is full" answers retried.
    pub full_retries: u64,
    pub seconds: f64,
    pub errors: Errors,
    /// The worker's open-files soft limit after raising it.
    pub nofile: u64,
}

/// One window's chat figures.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct WindowReport {
    /// Chat lines sent whose send time is in this window.
    pub sent: u64,
    /// Deliveries those lines should make (members that read).
    pub expected: u64,
    /// Deliveries received of lines sent in this window.
    pub delivered: u64,
    /// Lines the server said it dropped (`[N messages dropped]`), counted when the notice arrived.
    pub dropped: u64,
    /// Sends more than 100 ms behind their schedule (the bench could not keep up).
    pub late_sends: u64,
    /// Delivery latency of lines sent in this window, µs.
    pub latency: HistWire,
    /// Of `latency`, the lines that crossed from another cluster node (empty outside a cluster).
    #[serde(default)]
    pub cross_latency: HistWire,
    /// Logins completed (logins, abuse: by the loopers; soak: returns, logged in and joined again).
    pub logins: u64,
    /// Connect to logged in, µs (soak: to joined again).
    pub login_latency: HistWire,
    /// Logins (soak: returns) that failed.
    pub login_failed: u64,
}

/// One bigroom line: how many got it and how long the last one waited.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Fanout {
    pub sent_ns: u64,
    pub reached: u64,
    pub max_us: u64,
}

/// Everything a worker measured.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct WorkerReport {
    pub setup: SetupReport,
    pub windows: Vec<WindowReport>,
    /// Errors after setup.
    pub errors: Errors,
    /// A few error texts, for the reader.
    pub samples: Vec<String>,
    /// Storm: go to `Username: ` seen, µs.
    pub greet: HistWire,
    /// Storm: go to logged in, µs. Churn: go to joined again, µs.
    pub ready: HistWire,
    pub greeted: u32,
    pub logged_in: u32,
    /// Churn: clients logged in and joined again.
    pub rejoined: u32,
    /// Clients that ran to the end without an error.
    pub held: u32,
    pub busy: u64,
    pub full_retries: u64,
    /// Chat text not written by the bench.
    pub foreign: u64,
    /// Server complaints about what the bench sent (also counted as protocol errors).
    pub complaints: u64,
    pub fanout: Vec<Fanout>,
    /// Lines of the abuse paste received by this worker's chat clients.
    pub paste_received: u64,
    /// Lines the server's flood control dropped from this worker's chat clients (its notices).
    pub flood_dropped: u64,
    /// Abuse: what the attacker got through (the attacker's worker only).
    pub attack: Option<AttackReport>,
    /// A cluster's notices received by this worker's chat clients while chatting.
    pub notices: Notices,
    /// Failover: clients whose connection ended with the killed node (closed or reset within
    /// [`LOST_WINDOW_NS`] of the kill); not counted as errors.
    pub lost_with_node: u32,
    /// Failover: per channel with members in this worker, what it went through.
    pub failover: Vec<ChannelFailover>,
}

/// Failover: a client whose connection closes or resets this soon after the kill was on the killed
/// node (SIGKILL closes a process's sockets at once; the clients see it within milliseconds).
pub const LOST_WINDOW_NS: u64 = 2_000_000_000;

/// A cluster's notices (issue 11), counted wherever chat clients read: never errors.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Notices {
    /// `[#<channel> moved to another node; ...]`
    pub moved: u64,
    /// `[Chat with other nodes in #<channel> is interrupted; ...]`
    pub interrupted: u64,
    /// `[Chat with other nodes in #<channel> is back.]`
    pub back: u64,
}

impl Notices {
    pub fn add(&mut self, o: &Notices) {
        self.moved += o.moved;
        self.interrupted += o.interrupted;
        self.back += o.back;
    }

    pub fn total(&self) -> u64 {
        self.moved + self.interrupted + self.back
    }
}

/// Failover: one channel `bc<k>` as the members in one worker saw it; the parent merges the
/// workers' parts ([`ChannelFailover::merge`]). Times are CLOCK_MONOTONIC ns.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelFailover {
    pub channel: u32,
    /// Members that joined at setup.
    pub joined: u32,
    /// Members whose connection ended with the killed node.
    pub lost: u32,
    /// The first `moved to another node` notice received after the kill, by any member.
    pub notice_ns: Option<u64>,
    /// The last such notice (members on different nodes are told at different times).
    pub last_notice_ns: Option<u64>,
    /// The first delivery to any member of a line sent (scheduled) at or after the kill.
    pub first_after_ns: Option<u64>,
    /// Lines the surviving members sent at or after the kill (members lost with the node do not
    /// count: what they wrote went nowhere).
    pub sent_after: u64,
    /// The send (scheduled) time of the last of those.
    pub last_said_ns: Option<u64>,
    /// Deliveries received of lines sent at or after the kill.
    pub delivered_after: u64,
}

impl ChannelFailover {
    /// Adds another worker's part of the same channel.
    pub fn merge(&mut self, o: &ChannelFailover) {
        let earliest = |a: Option<u64>, b: Option<u64>| match (a, b) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let latest = |a: Option<u64>, b: Option<u64>| a.max(b);
        self.joined += o.joined;
        self.lost += o.lost;
        self.notice_ns = earliest(self.notice_ns, o.notice_ns);
        self.last_notice_ns = latest(self.last_notice_ns, o.last_notice_ns);
        self.first_after_ns = earliest(self.first_after_ns, o.first_after_ns);
        self.sent_after += o.sent_after;
        self.last_said_ns = latest(self.last_said_ns, o.last_said_ns);
        self.delivered_after += o.delivered_after;
    }

    /// Members still connected after the kill.
    pub fn survivors(&self) -> u32 {
        self.joined.saturating_sub(self.lost)
    }
}

/// Abuse: what the attacker tried and what it got. Nothing here is an error of the bench: the
/// server turning the attacker away is the point.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct AttackReport {
    pub flood: FloodCounts,
    pub guesses: GuessCounts,
    pub paste: PasteCounts,
    /// Why the paster could not log in or join, if it could not (then there was no paste).
    pub paster_error: Option<String>,
    /// Why the victim's account could not be made sure of, if it could not.
    pub victim_error: Option<String>,
    /// A few texts of what went wrong for the attacker, or unexpected lines.
    pub samples: Vec<String>,
}

/// The attacker's connection attempts.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FloodCounts {
    pub attempts: u64,
    /// Greeted with `Username: `: the server took the connection.
    pub accepted: u64,
    /// Turned away with `Too many connections from your address.`
    pub refused_conns: u64,
    /// ... `are still logging in; try again later.`
    pub refused_unauth: u64,
    /// ... `recently; try again later.`
    pub refused_rate: u64,
    /// Closed by the server without a refusal line or a greeting.
    pub closed: u64,
    /// The connection itself failed (refused, reset) or no answer came in time.
    pub failed: u64,
    /// Most accepted connections held open at once.
    pub held_peak: u64,
    /// Held connections the server closed before the attack ended (its login timeout).
    pub closed_while_held: u64,
}

/// The attacker's wrong passwords. Each guess ends as exactly one of answered, throttled,
/// no_connection, failed or not_made.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuessCounts {
    pub planned: u64,
    /// Answered `Incorrect password.`: the server checked it (a bcrypt hash).
    pub answered: u64,
    /// Answered with the login throttle's line: no hash done.
    pub throttled: u64,
    /// No connection to guess on: refused (by line or by TCP) when the guess was due.
    pub no_connection: u64,
    /// Timed out or ended by something unexpected.
    pub failed: u64,
    /// Still waiting when the attack (and its grace) ended.
    pub not_made: u64,
    /// Connections the guessers opened (greeted).
    pub connections: u64,
    /// Guesses held back by the per-account slow-down before their check (counted besides their
    /// outcome).
    pub slowed: u64,
    /// `Server busy` answers (the guess was asked again).
    pub busy: u64,
}

/// The attacker's paste.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PasteCounts {
    /// Lines written.
    pub sent: u64,
    /// Seconds from the first write until the last returned (the kernel's buffers take much of a
    /// paste at once; the server reads it from there).
    pub write_s: f64,
    /// Lines echoed back to the paster (ringtalk echoes a sender's own line): what got through.
    pub echoed: u64,
    /// Lines the server said it dropped (`You are sending too fast; N lines were dropped.`).
    pub dropped: u64,
    pub notices: u64,
    /// The paster's connection was closed by the server.
    pub disconnected: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(total: u32, group: u32, slow: f64, protocol: Protocol) -> Plan {
        Plan {
            mode: Mode::Chat,
            protocol,
            client: Profile::Terminal,
            addr: "127.0.0.1:5555".parse().unwrap(),
            worker: 0,
            first: 0,
            count: total,
            total,
            group,
            password: "pw".into(),
            source_addrs: 64,
            timeout_ms: 1000,
            connect_concurrency: 10,
            message_bytes: 40,
            windows: vec![],
            grace_ms: 0,
            slow_fraction: slow,
            slow_rcvbuf: 4096,
            loopers: vec![],
            bigroom_messages: 0,
            bigroom_interval_ms: 0,
            hold_ms: 0,
            report_windows: false,
            name_prefix: "b".into(),
            own_addrs: false,
            reserved_seats: 0,
            looper_total: 0,
            login_interval_ms: 0,
            leave: None,
            attack: None,
            kill_at_ms: None,
            tells: false,
            tls: false,
        }
    }

    #[test]
    fn channels_and_expected_readers() {
        let p = plan(14, 6, 0.0, Protocol::Ringtalk);
        assert_eq!(p.channel(5), "bc0");
        assert_eq!(p.channel(6), "bc1");
        assert_eq!(p.expected_readers(3), 6);
        assert_eq!(p.expected_readers(13), 2);
        let p = plan(14, 6, 0.0, Protocol::Irc);
        assert_eq!(p.expected_readers(3), 5);
        let p = plan(100, 0, 0.0, Protocol::Ringtalk);
        assert_eq!(p.channel(42), "bigroom");
        assert_eq!(p.expected_readers(0), 100);
    }

    #[test]
    fn channel_names_read_back_to_their_index() {
        let p = plan(14, 6, 0.0, Protocol::Ringtalk);
        for id in 0..14 {
            assert_eq!(channel_index(&p.channel(id)), p.channel_index_of(id));
        }
        assert_eq!(channel_index("BC12"), Some(12));
        assert_eq!(channel_index("bc"), None);
        assert_eq!(channel_index("bc1x"), None);
        assert_eq!(channel_index("bigroom"), None);
        assert_eq!(channel_index("Lobby"), None);
        assert_eq!(channel_index("b"), None);
        assert_eq!(channel_index("bé1"), None);
        assert_eq!(
            plan(100, 0, 0.0, Protocol::Ringtalk).channel_index_of(5),
            None
        );
    }

    #[test]
    fn channel_parts_merge_over_workers() {
        let mut a = ChannelFailover {
            channel: 3,
            joined: 4,
            lost: 1,
            notice_ns: Some(50),
            last_notice_ns: Some(50),
            first_after_ns: None,
            sent_after: 2,
            last_said_ns: Some(70),
            delivered_after: 0,
        };
        let b = ChannelFailover {
            channel: 3,
            joined: 2,
            lost: 1,
            notice_ns: Some(40),
            last_notice_ns: Some(45),
            first_after_ns: Some(90),
            sent_after: 1,
            last_said_ns: None,
            delivered_after: 5,
        };
        a.merge(&b);
        assert_eq!((a.joined, a.lost, a.survivors()), (6, 2, 4));
        assert_eq!((a.notice_ns, a.last_notice_ns), (Some(40), Some(50)));
        assert_eq!(a.first_after_ns, Some(90));
        assert_eq!(
            (a.sent_after, a.last_said_ns, a.delivered_after),
            (3, Some(70), 5)
        );
    }

    #[test]
    fn a_reserved_seat_shifts_the_first_channel() {
        let mut p = plan(14, 6, 0.0, Protocol::Ringtalk);
        p.reserved_seats = 1;
        assert_eq!(p.channel(0), "bc0");
        assert_eq!(p.channel(4), "bc0");
        assert_eq!(p.channel(5), "bc1");
        assert_eq!(p.channel(10), "bc1");
        assert_eq!(p.channel(11), "bc2");
        // Channel 0 holds ids 0..5 (and the paster, who is not counted); 1 holds 5..11; 2 holds 11..14.
        assert_eq!(p.expected_readers(0), 5);
        assert_eq!(p.expected_readers(7), 6);
        assert_eq!(p.expected_readers(13), 3);
        p.name_prefix = "ba".into();
        assert_eq!(p.name(7), "ba7");
        assert_eq!(p.looper_name(3), "bal3");
        p.own_addrs = true;
        assert_eq!(p.source(0), own_addr(0));
    }

    #[test]
    fn leaving_takes_a_fraction_each_period_and_returns_within_it() {
        let leave = Leave {
            fraction: 0.05,
            period_ms: 60_000,
            periods: 10,
        };
        let users = 2_000u32;
        let mut per_period = [0u32; 10];
        let mut quits = 0;
        let mut all = 0;
        for id in 0..users {
            let s = leave.schedule(id);
            for l in &s {
                let p = (l.at_ms / 60_000) as usize;
                per_period[p] += 1;
                let into = l.at_ms % 60_000;
                assert!((6_000..48_000).contains(&into), "{l:?}");
                quits += l.quit as u32;
                all += 1;
            }
            // One in 20 per period, each period another one in 20: no one leaves twice in 10.
            assert!(s.len() <= 1, "{id}: {s:?}");
        }
        assert!(per_period.iter().all(|&n| n == 100), "{per_period:?}");
        assert!((400..600).contains(&quits), "{quits} of {all}");
    }

    #[test]
    fn the_attack_is_spread_over_its_window() {
        let a = AttackPlan {
            src: Ipv4Addr::new(127, 0, 0, 2),
            start_ms: 30_000,
            end_ms: 90_000,
            connections: 19_000,
            flood_start_ms: 31_000,
            in_flight: 64,
            hold_max: 256,
            guesses: 1_000,
            guessers: 4,
            victim: "bavictim".into(),
            paster: "bapaster".into(),
            paste_channel: "bc0".into(),
            paste_lines: 10_000,
        };
        assert_eq!(a.guess_at_ms(0), 30_000);
        assert_eq!(a.guess_at_ms(500), 60_000);
        assert_eq!(a.guess_at_ms(999), 89_940);
        assert_eq!(a.attempt_at_ms(0), 31_000);
        assert_eq!(a.attempt_at_ms(9_500), 60_500);
        assert!(a.attempt_at_ms(18_999) < 90_000);
        assert_ne!(AttackPlan::wrong_password(1), AttackPlan::wrong_password(2));
        assert!(AttackPlan::wrong_password(1).len() >= 6);
    }

    #[test]
    fn slow_readers_are_spread_evenly() {
        let p = plan(1000, 6, 0.1, Protocol::Ringtalk);
        let slow: Vec<u32> = (0..1000).filter(|&id| p.is_slow(id)).collect();
        assert_eq!(slow.len(), 100);
        assert_eq!(&slow[..2], &[9, 19]);
        assert_eq!(p.expected_readers(0), 6);
        assert_eq!(p.expected_readers(6), 5);
    }

    #[test]
    fn messages_round_trip_as_json_lines() {
        let line = serde_json::to_string(&Command::Go { at_ns: 7 }).unwrap();
        assert_eq!(line, r#"{"cmd":"go","at_ns":7}"#);
        let back: Command = serde_json::from_str(&line).unwrap();
        assert_eq!(back, Command::Go { at_ns: 7 });
        let line = serde_json::to_string(&Report::Reached).unwrap();
        assert!(matches!(
            serde_json::from_str(&line).unwrap(),
            Report::Reached
        ));
    }
}
