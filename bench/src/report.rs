//! What a scenario hands back: one [`Report`], printed as a readable block or as one JSON object.

use serde::Serialize;
use serde_json::{Map, Value};

use crate::stats::{Errors, Latency};
use crate::sys::ProcSample;

/// Setup totals over all workers.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Setup {
    pub clients: u32,
    pub connected: u32,
    pub logged_in: u32,
    pub joined: u32,
    pub created: u32,
    pub busy: u64,
    pub full_retries: u64,
    pub seconds: f64,
}

/// Chat deliveries over the measured phase.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Deliveries {
    pub sent: u64,
    pub expected: u64,
    pub delivered: u64,
    pub per_second: f64,
    /// Lines the server reported dropped for slow readers (`[N messages dropped]`).
    pub dropped: u64,
    /// Sends more than 100 ms behind schedule: the bench itself could not keep up.
    pub late_sends: u64,
    /// Whether a sender's own line counts (ringtalk echoes it; IRC does not).
    pub own_lines_counted: bool,
}

/// The server's processes (one, or every node of a cluster), when their pids are known. Every
/// figure is the sum over the processes.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ServerFigures {
    /// The first of `pids`.
    pub pid: u32,
    /// Every process sampled, in the order given.
    pub pids: Vec<u32>,
    /// Each process's own samples, in the order of `pids`.
    pub per_pid: Vec<PidSamples>,
    /// Before any client connected.
    pub before: ProcSample,
    /// After setup: every client connected, logged in and joined.
    pub loaded: ProcSample,
    /// After the measured phase, before the clients closed.
    pub after: ProcSample,
    /// (loaded − before) RSS over the clients that connected.
    pub rss_per_user_bytes: f64,
    /// after − loaded RSS.
    pub rss_growth_bytes: i64,
    /// CPU seconds during setup and during the measured phase.
    pub cpu_setup_s: f64,
    pub cpu_run_s: f64,
    /// cpu_run_s over the measured phase's wall time: 1.0 is one core busy.
    pub cpu_cores_used: f64,
}

/// One server process's samples.
#[derive(Clone, Debug, Default, Serialize)]
pub struct PidSamples {
    pub pid: u32,
    pub before: ProcSample,
    pub loaded: ProcSample,
    pub after: ProcSample,
}

/// One scenario's results.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub scenario: String,
    pub protocol: String,
    /// The telnet client profile the connections behaved like (ringtalk; IRC: `irc`).
    pub client: String,
    pub addr: String,
    pub users: u32,
    pub workers: u32,
    /// Wall time of the measured phase.
    pub seconds: f64,
    pub setup: Setup,
    /// Delivery latency over the whole measured phase.
    pub latency: Latency,
    pub deliveries: Option<Deliveries>,
    /// Setup and run errors together, and apart.
    pub errors: Errors,
    pub setup_errors: Errors,
    pub run_errors: Errors,
    pub error_samples: Vec<String>,
    pub server: Option<ServerFigures>,
    /// Figures only this scenario has.
    pub figures: Map<String, Value>,
    pub notes: Vec<String>,
    /// The scenario's own lines for the table (`figures` in words).
    #[serde(skip)]
    pub rows: Vec<(String, String)>,
    /// One figure for the suite's summary line.
    #[serde(skip)]
    pub headline: String,
    /// Why the run failed, when the scenario itself judges it failed (failover: a channel that
    /// moved and never carried a line again); the exit status is then 1.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failed: Option<String>,
}

/// Microseconds as a short human figure.
pub fn ms(us: u64) -> String {
    if us >= 10_000_000 {
        format!("{:.1} s", us as f64 / 1e6)
    } else if us >= 1_000_000 {
        format!("{:.2} s", us as f64 / 1e6)
    } else if us >= 10_000 {
        format!("{:.0} ms", us as f64 / 1e3)
    } else {
        format!("{:.2} ms", us as f64 / 1e3)
    }
}

/// Bytes as MB or kB.
pub fn bytes(b: f64) -> String {
    if b.abs() >= 1e6 {
        format!("{:.1} MB", b / 1e6)
    } else {
        format!("{:.1} kB", b / 1e3)
    }
}

pub fn latency_line(l: &Latency) -> String {
    if l.count == 0 {
        return "no samples".to_string();
    }
    format!(
        "p50 {}  p90 {}  p99 {}  p99.9 {}  max {}  ({} samples)",
        ms(l.p50_us),
        ms(l.p90_us),
        ms(l.p99_us),
        ms(l.p999_us),
        ms(l.max_us),
        l.count
    )
}

impl Report {
    pub fn row(&mut self, key: &str, value: impl Into<String>) {
        self.rows.push((key.to_string(), value.into()));
    }

    /// Why the scenario judged the run failed, if it did.
    pub fn failure(&self) -> Option<&str> {
        self.failed.as_deref()
    }

    pub fn figure(&mut self, key: &str, value: impl Serialize) {
        self.figures.insert(
            key.to_string(),
            serde_json::to_value(value).unwrap_or(Value::Null),
        );
    }

    /// The readable block.
    pub fn table(&self) -> String {
        let mut rows: Vec<(String, String)> = Vec::new();
        if let Some(why) = &self.failed {
            rows.push(("FAILED".into(), why.clone()));
        }
        let s = &self.setup;
        // Storm and handshakes have no setup phase; their counts are their own, shown in their rows.
        if s.clients > 0 && !matches!(&*self.scenario, "storm" | "handshakes") {
            rows.push((
            "setup".into(),
            format!(
                "{} of {} connected, {} logged in, {} joined ({} accounts created, {} busy, {} full) in {:.1} s",
                s.connected, s.clients, s.logged_in, s.joined, s.created, s.busy, s.full_retries, s.seconds
            ),
        ));
        }
        if self.latency.count > 0 || self.deliveries.is_some() {
            rows.push(("latency".into(), latency_line(&self.latency)));
        }
        if let Some(d) = &self.deliveries {
            let pct = if d.expected > 0 {
                100.0 * d.delivered as f64 / d.expected as f64
            } else {
                0.0
            };
            rows.push((
                "deliveries".into(),
                format!(
                    "{} of {} expected ({pct:.1}%), {:.0}/s from {} lines; dropped {}, late sends {}{}",
                    d.delivered,
                    d.expected,
                    d.per_second,
                    d.sent,
                    d.dropped,
                    d.late_sends,
                    if d.own_lines_counted { "" } else { " (own lines not echoed: not counted)" }
                ),
            ));
        }
        rows.extend(self.rows.iter().cloned());
        rows.push((
            "errors".into(),
            format!(
                "{} (setup: {}; run: {})",
                self.errors.describe(),
                self.setup_errors.describe(),
                self.run_errors.describe()
            ),
        ));
        for sample in &self.error_samples {
            rows.push(("  e.g.".into(), sample.clone()));
        }
        if let Some(srv) = &self.server {
            rows.push((
                "server".into(),
                format!(
                    "{}: RSS {} idle, {} loaded ({} per user), {} after ({}{})",
                    pid_list(&srv.pids),
                    bytes(srv.before.rss_bytes as f64),
                    bytes(srv.loaded.rss_bytes as f64),
                    bytes(srv.rss_per_user_bytes),
                    bytes(srv.after.rss_bytes as f64),
                    if srv.rss_growth_bytes >= 0 { "+" } else { "" },
                    bytes(srv.rss_growth_bytes as f64)
                ),
            ));
            rows.push((
                "server CPU".into(),
                format!(
                    "{:.2} s in setup, {:.2} s in the measured phase ({:.2} cores)",
                    srv.cpu_setup_s, srv.cpu_run_s, srv.cpu_cores_used
                ),
            ));
        }
        for n in &self.notes {
            rows.push(("note".into(), n.clone()));
        }
        let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
        let mut out = format!(
            "== {} ({} at {}, {} clients): {} users, {} worker{}, {:.1} s measured\n",
            self.scenario,
            self.protocol,
            self.addr,
            self.client,
            self.users,
            self.workers,
            if self.workers == 1 { "" } else { "s" },
            self.seconds
        );
        for (k, v) in rows {
            out.push_str(&format!("  {k:<width$}  {v}\n"));
        }
        out
    }
}

/// `pid 101`, or `pids 101+102+103 (summed)` for several.
pub fn pid_list(pids: &[u32]) -> String {
    match pids {
        [one] => format!("pid {one}"),
        many => format!(
            "pids {} (summed)",
            many.iter()
                .map(|p| p.to_string())
                .collect::<Vec<_>>()
                .join("+")
        ),
    }
}

/// The suite's closing summary, one line per scenario.
pub fn summary(reports: &[Report]) -> String {
    let mut out = format!(
        "{:<12} {:>6} {:>9} {:>9} {:>9} {:>8}  {}\n",
        "scenario", "users", "p50", "p99", "max", "errors", "headline"
    );
    for r in reports {
        let (p50, p99, max) = if r.latency.count > 0 {
            (
                ms(r.latency.p50_us),
                ms(r.latency.p99_us),
                ms(r.latency.max_us),
            )
        } else {
            ("-".into(), "-".into(), "-".into())
        };
        out.push_str(&format!(
            "{:<12} {:>6} {:>9} {:>9} {:>9} {:>8}  {}\n",
            r.scenario,
            r.users,
            p50,
            p99,
            max,
            r.errors.total(),
            match &r.failed {
                Some(why) => format!("FAILED: {why}; {}", r.headline),
                None => r.headline.clone(),
            }
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_figures() {
        assert_eq!(ms(1234), "1.23 ms");
        assert_eq!(ms(123_456), "123 ms");
        assert_eq!(ms(12_345_678), "12.3 s");
        assert_eq!(ms(6_226_000), "6.23 s");
        assert_eq!(bytes(2_500_000.0), "2.5 MB");
        assert_eq!(bytes(9_300.0), "9.3 kB");
        assert_eq!(pid_list(&[101]), "pid 101");
        assert_eq!(pid_list(&[101, 102, 103]), "pids 101+102+103 (summed)");
    }
}
