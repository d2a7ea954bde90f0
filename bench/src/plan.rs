//! What the parent and its worker processes say to each other, one JSON object per line.
//!
//! The parent writes a [`Plan`] to a worker's stdin, then [`Command`]s; the worker writes [`Report`]s to
//! its stdout. Times are CLOCK_MONOTONIC nanoseconds, which every process on the machine shares.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use crate::conn::Protocol;
use crate::stats::{Errors, HistWire};
use crate::telnet::Profile;

/// What the clients of a worker do once the parent says go.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Log in and join during setup, then chat on the windows' schedule (seed, ceiling, firehose,
    /// logins, slowreaders).
    Chat,
    /// Connect only at go, all at once; log in; hold until stopped.
    Storm,
    /// Log in and join during setup; at go drop the connection, reconnect, log in, join again.
    Churn,
    /// Everyone in one channel; client 0 sends `bigroom_messages` lines, everyone records them.
    Bigroom,
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
}

impl Plan {
    /// The login name of chat client `id`.
    pub fn name(id: u32) -> String {
        format!("b{id}")
    }

    /// The channel of chat client `id`.
    pub fn channel(&self, id: u32) -> String {
        match id.checked_div(self.group) {
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
        let (lo, hi) = match sender.checked_div(self.group) {
            Some(k) => (
                k * self.group,
                (k * self.group + self.group).min(self.total),
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
    /// Logins completed (logins scenario).
    pub logins: u64,
    /// Connect to logged in, µs (logins scenario).
    pub login_latency: HistWire,
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
