//! The scenarios, parent side: size the run from the limits, plan the workers, drive them through
//! setup → go → measured phase → done, and turn what they report into a [`Report`].
//!
//! Every scenario is one [`Spec`] given to [`Bench::execute`]; what differs afterwards is only how its
//! figures are read out. Storm and churn decide their own end (everyone logged in; the server's counts
//! right), firehose stops its ladder once steps keep failing, the rest run for a fixed time.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use crate::telnet::Profile;
use anyhow::bail;
use serde::Serialize;
use serde_json::{json, Map};

use crate::cli::Opts;
use crate::conn::{Conn, LoginInfo, Protocol};
use crate::fleet::{Fleet, Msg};
use crate::plan::{Command, Mode, Plan, Report as WorkerMsg, Window, WindowReport, WorkerReport};
use crate::report::{bytes, latency_line, ms, Deliveries, Report, ServerFigures, Setup};
use crate::stats::{merge_or_warn, Errors, HistWire, Latency};
use crate::sys::{self, now_ns, ListenCounters, ProcSample};

/// All scenario names, in the order `suite` runs them by default.
pub const SCENARIOS: &[&str] = &[
    "seed",
    "ceiling",
    "firehose",
    "storm",
    "logins",
    "bigroom",
    "slowreaders",
    "churn",
];

/// Firehose: a step is held when its p99 is under this.
const FIREHOSE_P99_US: u64 = 10_000;

/// What the limits allow, found before anything runs.
#[derive(Clone, Debug, Serialize)]
pub struct Limits {
    pub nofile_soft: u64,
    pub nofile_hard: u64,
    pub clients_per_worker: u64,
    pub source_addrs: u32,
    pub ephemeral_ports: Option<(u32, u32)>,
    pub somaxconn: Option<u64>,
    pub server_pid: Option<u32>,
    pub server_max_users: Option<u64>,
    /// Where `server_max_users` came from.
    pub server_max_source: String,
}

/// One scenario run, before its figures are read.
struct Spec {
    name: &'static str,
    mode: Mode,
    users: u32,
    group: u32,
    windows: Vec<Window>,
    grace_ms: u64,
    slow_fraction: f64,
    loopers: u32,
    bigroom_messages: u32,
    bigroom_interval_ms: u64,
    hold_ms: u64,
    report_windows: bool,
    /// Firehose: each window's target lines per second (total), to judge steps while running.
    targets: Vec<u64>,
    /// Pause between setup and go (bigroom: lets the flood of join notices drain).
    settle_ms: u64,
    /// Worker processes to use unless `--workers` says otherwise.
    min_workers: u32,
}

impl Spec {
    fn new(name: &'static str, mode: Mode, users: u32, group: u32) -> Spec {
        Spec {
            name,
            mode,
            users,
            group,
            windows: Vec::new(),
            grace_ms: 0,
            slow_fraction: 0.0,
            loopers: 0,
            bigroom_messages: 0,
            bigroom_interval_ms: 0,
            hold_ms: 0,
            report_windows: false,
            targets: Vec::new(),
            settle_ms: 500,
            min_workers: 1,
        }
    }
}

/// What came back from the workers.
struct Outcome {
    plans: Vec<Plan>,
    workers: u32,
    setup: Setup,
    setup_errors: Errors,
    reports: Vec<WorkerReport>,
    lost: Vec<String>,
    go_ns: u64,
    /// When the "after setup" sample was taken.
    loaded_ns: u64,
    /// When the measured phase ended (the "after" sample).
    end_ns: u64,
    /// Churn probe: (request time, member total).
    probe: Vec<(u64, u64)>,
    probe_errors: Vec<String>,
    counts_right_ns: Option<u64>,
    /// Firehose: the ladder was stopped after this window.
    stopped_after: Option<usize>,
    /// Server cores busy during each window (CPU seconds over wall seconds), when its pid is known.
    window_cores: Vec<Option<f64>>,
    /// The server's pid and its samples: before setup, after setup, and after the measured phase.
    server: Option<(u32, ProcSample, ProcSample, ProcSample)>,
    /// The server's sample at go, which starts the measured phase (setup ends before a settling
    /// pause); `None` if none was taken.
    at_go: Option<ProcSample>,
    listen: Option<(ListenCounters, ListenCounters)>,
}

/// The bench, once its limits are known.
pub struct Bench {
    pub opts: Opts,
    pub limits: Limits,
}

impl Bench {
    /// Raises the open-files limit, finds the server's limits, and says what they allow.
    pub fn new(opts: Opts) -> anyhow::Result<Bench> {
        let (soft, hard) = sys::raise_nofile()?;
        let server_pid = opts.server_pid.or_else(|| {
            opts.addr
                .ip()
                .is_loopback()
                .then(|| sys::find_listener_pid(opts.addr))
                .flatten()
        });
        let (server_max_users, server_max_source) = if let Some(n) = opts.server_max_users {
            (Some(n), "--server-max-users".to_string())
        } else if let Some(n) = opts
            .server_log
            .as_ref()
            .and_then(|p| std::fs::read_to_string(p).ok())
            .and_then(|log| sys::parse_startup_users(&log))
        {
            (Some(n), "the server's startup line".to_string())
        } else if let Some(nofile) = server_pid.and_then(|pid| sys::proc_nofile(pid).ok()) {
            // What ringtalk keeps for itself, with its defaults of one shard and one worker per CPU.
            let reserved = ringtalk::limits::reserved_fds(sys::cpus(), sys::cpus());
            (
                Some(nofile.saturating_sub(reserved)),
                format!(
                    "/proc/{}/limits: open files {nofile} less {reserved} reserved",
                    server_pid.unwrap_or(0)
                ),
            )
        } else {
            (None, "unknown".to_string())
        };
        let limits = Limits {
            nofile_soft: soft,
            nofile_hard: hard,
            clients_per_worker: sys::clients_per_worker(soft),
            source_addrs: opts.source_addrs.clamp(1, 253),
            ephemeral_ports: sys::ephemeral_ports(),
            somaxconn: sys::somaxconn(),
            server_pid,
            server_max_users,
            server_max_source,
        };
        Ok(Bench { opts, limits })
    }

    /// The limits in words, printed before a run.
    pub fn describe_limits(&self) -> String {
        let l = &self.limits;
        let ports = l
            .ephemeral_ports
            .map(|(a, b)| {
                format!(
                    "ports {a}-{b} ({} per source address)",
                    b.saturating_sub(a) + 1
                )
            })
            .unwrap_or_else(|| "ports unknown".into());
        let server = match (l.server_pid, l.server_max_users) {
            (pid, Some(n)) => format!(
                "server{}: about {n} users (from {})",
                pid.map(|p| format!(" pid {p}")).unwrap_or_default(),
                l.server_max_source
            ),
            (Some(pid), None) => format!("server pid {pid}: user limit unknown"),
            (None, None) => {
                "server: pid and user limit unknown (give --server-pid or --server-max-users)"
                    .into()
            }
        };
        format!(
            "limits: bench open files {} (hard {}) -> {} clients per worker process; sources \
             127.0.0.2-127.0.0.{}, {ports}; somaxconn {}\n        {server}",
            l.nofile_soft,
            l.nofile_hard,
            l.clients_per_worker,
            1 + l.source_addrs,
            l.somaxconn.map(|n| n.to_string()).unwrap_or("?".into()),
        )
    }

    /// Runs one scenario by name; `users` overrides `--users`.
    pub fn run(&self, name: &str, users: Option<u32>) -> anyhow::Result<Report> {
        let users = users.or(self.opts.users);
        match name {
            "seed" => self.seed(users, "seed"),
            "ceiling" => self.ceiling(users),
            "firehose" => self.firehose(users),
            "storm" => self.storm(users),
            "logins" => self.logins(users),
            "bigroom" => self.bigroom(users),
            "slowreaders" => self.slowreaders(users),
            "churn" => self.churn(users),
            other => bail!("no scenario {other:?}; scenarios: {}", SCENARIOS.join(", ")),
        }
    }

    fn seconds(&self, default: f64) -> f64 {
        self.opts.seconds.unwrap_or(default).max(0.1)
    }

    fn window(name: &str, start_s: f64, end_s: f64, rate: f64, logins: bool) -> Window {
        Window {
            name: name.to_string(),
            start_ms: (start_s * 1e3) as u64,
            end_ms: (end_s * 1e3) as u64,
            rate,
            logins,
        }
    }

    fn grace_ms(&self) -> u64 {
        (self.opts.grace * 1e3) as u64
    }

    // ---- the scenarios ----

    fn seed(&self, users: Option<u32>, name: &'static str) -> anyhow::Result<Report> {
        let users = users.unwrap_or(3_000);
        let secs = self.seconds(60.0);
        let think = self.opts.think.unwrap_or(10.0);
        let mut spec = Spec::new(name, Mode::Chat, users, self.opts.group);
        spec.windows = vec![Self::window("chat", 0.0, secs, 1.0 / think, false)];
        spec.grace_ms = self.grace_ms();
        let out = self.execute(&spec)?;
        let mut r = self.common(&spec, &out);
        r.row(
            "workload",
            format!(
                "channels of {}, a {}-byte line every {think} s per user on average",
                spec.group, self.opts.message_bytes
            ),
        );
        r.figure("think_s", think);
        let held: u32 = out.reports.iter().map(|w| w.held).sum();
        r.figure("users_held", held);
        r.row(
            "users held",
            format!("{held} of {users} ran to the end without an error"),
        );
        r.headline = format!("{held} held, p99 {}", ms(r.latency.p99_us));
        Ok(r)
    }

    fn ceiling(&self, users: Option<u32>) -> anyhow::Result<Report> {
        let mut notes = Vec::new();
        let server_max = match self.limits.server_max_users {
            Some(n) => n,
            None => {
                let guess = self
                    .limits
                    .nofile_hard
                    .saturating_sub(ringtalk::limits::reserved_fds(sys::cpus(), sys::cpus()));
                notes.push(format!(
                    "server limit unknown: assumed {guess} (this machine's hard open-files limit less \
                     ringtalk's reserve); give --server-max-users or --server-pid"
                ));
                guess
            }
        };
        let allowed = (server_max as f64 * (1.0 - self.opts.margin)).floor() as u32;
        let users = users.unwrap_or(allowed);
        let mut r = self.seed(Some(users), "ceiling")?;
        r.figure("server_max_users", server_max);
        r.figure("margin", self.opts.margin);
        r.row(
            "limit",
            format!(
                "server takes about {server_max} users ({}); ran {users} ({}% left free)",
                self.limits.server_max_source,
                self.opts.margin * 100.0
            ),
        );
        r.notes.extend(notes);
        Ok(r)
    }

    fn firehose(&self, users: Option<u32>) -> anyhow::Result<Report> {
        // Many users in small channels, as the seed describes: each reader gets a few lines a
        // second at the low steps, so the cost per event shows. (`firehose:60` is the peak fan-out
        // figure: few users, many lines per reader per write.)
        let users = users.unwrap_or(1200).max(1);
        let step = self.seconds(3.0);
        let rates = self.opts.rates.clone();
        let mut spec = Spec::new("firehose", Mode::Chat, users, self.opts.group);
        // One tokio worker cannot offer these rates; one per core can.
        spec.min_workers = sys::cpus() as u32;
        spec.windows = rates
            .iter()
            .enumerate()
            .map(|(i, &rate)| {
                let name = format!("{rate}/s");
                Self::window(
                    &name,
                    i as f64 * step,
                    (i + 1) as f64 * step,
                    rate as f64 / users as f64,
                    false,
                )
            })
            .collect();
        spec.grace_ms = self.grace_ms();
        spec.report_windows = true;
        spec.targets = rates.clone();
        let out = self.execute(&spec)?;
        let mut r = self.common(&spec, &out);
        let mut steps = Vec::new();
        let mut best: Option<(u64, f64, Option<f64>)> = None;
        for (i, w) in spec.windows.iter().enumerate() {
            if out.stopped_after.is_some_and(|s| i > s) {
                break;
            }
            let s = window_totals(&out.reports, i);
            let lat = Latency::of(&merge_or_warn(&s.latency_parts));
            let secs = step;
            let verdict = judge_step(rates[i], secs, s.sent, s.expected, s.delivered, &lat);
            let dps = s.delivered as f64 / secs;
            let cores = out.window_cores.get(i).copied().flatten();
            let per_cpu = cores.filter(|&c| c > 0.0).map(|c| dps / c);
            if verdict.held && best.map_or(true, |(_, d, _)| dps > d) {
                best = Some((rates[i], dps, per_cpu));
            }
            let server = match (cores, per_cpu) {
                (Some(c), Some(p)) => {
                    format!(", server {c:.2} cores ({p:.0} deliveries per CPU-second)")
                }
                _ => String::new(),
            };
            r.row(
                &format!("step {}", w.name),
                format!(
                    "sent {:.0}/s, delivered {:.0}/s ({:.1}% of expected), dropped {}, p50 {} p99 {} max {}{server} -> {}",
                    s.sent as f64 / secs,
                    dps,
                    pct(s.delivered, s.expected),
                    s.dropped,
                    ms(lat.p50_us),
                    ms(lat.p99_us),
                    ms(lat.max_us),
                    verdict.why
                ),
            );
            steps.push(json!({
                "target_lines_per_s": rates[i],
                "sent_per_s": s.sent as f64 / secs,
                "delivered_per_s": dps,
                "expected": s.expected,
                "delivered": s.delivered,
                "dropped": s.dropped,
                "late_sends": s.late_sends,
                "latency": lat,
                "server_cores": cores,
                "deliveries_per_server_cpu_s": per_cpu,
                "held": verdict.held,
                "verdict": verdict.why,
            }));
        }
        r.figure("steps", steps);
        r.figure("step_seconds", step);
        match best {
            Some((rate, dps, per_cpu)) => {
                r.figure("held_deliveries_per_s", dps);
                r.figure("held_lines_per_s", rate);
                r.figure("held_deliveries_per_server_cpu_s", per_cpu);
                r.row(
                    "held",
                    format!("{dps:.0} deliveries/s (step {rate} lines/s) with p99 under 10 ms"),
                );
                r.headline = format!("{dps:.0} deliveries/s held");
            }
            None => {
                r.figure("held_deliveries_per_s", 0.0);
                r.row(
                    "held",
                    "no step held p99 under 10 ms with everything delivered",
                );
                r.headline = "no step held".into();
            }
        }
        r.notes.push(
            "a step is held when p99 < 10 ms, at least 99% of expected deliveries arrived, and the \
             bench sent at least 90% of the target rate; the bench shares the 2 cores with the server"
                .into(),
        );
        Ok(r)
    }

    fn storm(&self, users: Option<u32>) -> anyhow::Result<Report> {
        let users = users.unwrap_or(5_000);
        let secs = self.seconds(60.0);
        let mut spec = Spec::new("storm", Mode::Storm, users, self.opts.group);
        spec.hold_ms = (secs * 1e3) as u64;
        let out = self.execute(&spec)?;
        let mut r = self.common(&spec, &out);
        let greet = merge_or_warn(out.reports.iter().map(|w| &w.greet));
        let ready = merge_or_warn(out.reports.iter().map(|w| &w.ready));
        let greeted: u32 = out.reports.iter().map(|w| w.greeted).sum();
        let logged: u32 = out.reports.iter().map(|w| w.logged_in).sum();
        let (g, l) = (Latency::of(&greet), Latency::of(&ready));
        let all = |n: u32, lat: &Latency| {
            if n == users {
                format!("all {n} in {}", ms(lat.max_us))
            } else {
                format!("only {n} of {users} (last after {})", ms(lat.max_us))
            }
        };
        r.row(
            "greeted",
            format!(
                "{}; p50 {} p99 {}",
                all(greeted, &g),
                ms(g.p50_us),
                ms(g.p99_us)
            ),
        );
        r.row(
            "logged in",
            format!(
                "{}; p50 {} p99 {}",
                all(logged, &l),
                ms(l.p50_us),
                ms(l.p99_us)
            ),
        );
        r.setup = Setup {
            clients: users,
            connected: greeted,
            logged_in: logged,
            seconds: l.max_us as f64 / 1e6,
            busy: out.reports.iter().map(|w| w.busy).sum(),
            ..Setup::default()
        };
        r.figure("greeted", greeted);
        r.figure("logged_in", logged);
        r.figure("greet_latency", &g);
        r.figure("login_latency", &l);
        r.figure(
            "all_greeted_s",
            (greeted == users).then_some(g.max_us as f64 / 1e6),
        );
        r.figure(
            "all_logged_in_s",
            (logged == users).then_some(l.max_us as f64 / 1e6),
        );
        let busy: u64 = out.reports.iter().map(|w| w.busy).sum();
        r.figure("busy", busy);
        if busy > 0 {
            r.row("busy", format!("{busy} \"Server busy\" answers waited out"));
        }
        r.headline = if logged == users {
            format!("all logged in after {}", ms(l.max_us))
        } else {
            format!("{logged} of {users} logged in")
        };
        Ok(r)
    }

    fn logins(&self, users: Option<u32>) -> anyhow::Result<Report> {
        let users = users.unwrap_or(300);
        let secs = self.seconds(20.0);
        let base = self.opts.baseline.max(0.0);
        let think = self.opts.think.unwrap_or(1.0);
        let cost = self.opts.bcrypt_cost;
        let hash_s = measure_bcrypt(cost)?;
        let cores = self.opts.server_cores.unwrap_or_else(sys::cpus);
        let limit = cores as f64 / hash_s;
        let mut spec = Spec::new("logins", Mode::Chat, users, self.opts.group);
        spec.windows = vec![
            Self::window("baseline", 0.0, base, 1.0 / think, false),
            Self::window("logins", base, base + secs, 1.0 / think, true),
        ];
        spec.grace_ms = self.grace_ms();
        spec.loopers = self.opts.login_concurrency;
        let out = self.execute(&spec)?;
        let mut r = self.common(&spec, &out);
        let during = window_totals(&out.reports, 1);
        let login_lat = Latency::of(&merge_or_warn(&during.login_parts));
        let rate = during.logins as f64 / secs;
        r.row(
            "bcrypt",
            format!("cost {cost}: one hash takes {:.2} ms here; {cores} cores -> limit {limit:.0} logins/s", hash_s * 1e3),
        );
        r.row(
            "logins",
            format!(
                "{rate:.0}/s ({:.0}% of the limit) by {} clients in a loop; connect-to-logged-in p50 {} p99 {} max {}",
                100.0 * rate / limit,
                spec.loopers,
                ms(login_lat.p50_us),
                ms(login_lat.p99_us),
                ms(login_lat.max_us)
            ),
        );
        for (i, w) in spec.windows.iter().enumerate() {
            let s = window_totals(&out.reports, i);
            let lat = Latency::of(&merge_or_warn(&s.latency_parts));
            r.row(&format!("chat ({})", w.name), latency_line(&lat));
            r.figure(&format!("chat_latency_{}", w.name), &lat);
        }
        r.figure("bcrypt_cost", cost);
        r.figure("hash_ms", hash_s * 1e3);
        r.figure("cores", cores);
        r.figure("limit_logins_per_s", limit);
        r.figure("logins_per_s", rate);
        r.figure("login_latency", &login_lat);
        r.headline = format!("{rate:.0} logins/s of {limit:.0}");
        Ok(r)
    }

    fn bigroom(&self, users: Option<u32>) -> anyhow::Result<Report> {
        let users = users.unwrap_or(1_000).max(1);
        let secs = self.seconds(5.0);
        let messages = self.opts.messages.max(1);
        let mut spec = Spec::new("bigroom", Mode::Bigroom, users, 0);
        spec.windows = vec![Self::window("room", 0.0, secs, 0.0, false)];
        spec.grace_ms = self.grace_ms() + 3_000;
        spec.bigroom_messages = messages;
        spec.bigroom_interval_ms = (secs * 1e3 / messages as f64) as u64;
        spec.settle_ms = 3_000;
        let out = self.execute(&spec)?;
        let mut r = self.common(&spec, &out);
        let mut per: BTreeMap<u64, (u64, u64)> = BTreeMap::new();
        for w in &out.reports {
            for f in &w.fanout {
                let e = per.entry(f.sent_ns).or_insert((0, 0));
                e.0 += f.reached;
                e.1 = e.1.max(f.max_us);
            }
        }
        let expected = out
            .plans
            .first()
            .map(|p| p.expected_readers(0))
            .unwrap_or(0);
        let mut lines = Vec::new();
        for (i, (_, &(reached, max_us))) in per.iter().enumerate() {
            r.row(
                &format!("line {}", i + 1),
                format!(
                    "reached {reached} of {expected}; the last after {}",
                    ms(max_us)
                ),
            );
            lines.push(json!({"reached": reached, "expected": expected, "last_us": max_us}));
        }
        r.row("fan-out", latency_line(&r.latency.clone()));
        r.figure("lines", lines);
        r.figure("members", users);
        r.headline = format!("reach all in {} (max)", ms(r.latency.max_us));
        if r.setup.joined < users {
            r.notes.push(
                "not everyone joined: ringtalk must run with --channel-capacity 0 for this scenario".into(),
            );
        }
        Ok(r)
    }

    fn slowreaders(&self, users: Option<u32>) -> anyhow::Result<Report> {
        let users = users.unwrap_or(1_000);
        let secs = self.seconds(30.0);
        let think = self.opts.think.unwrap_or(1.0);
        let mut spec = Spec::new("slowreaders", Mode::Chat, users, self.opts.group);
        spec.windows = vec![Self::window("chat", 0.0, secs, 1.0 / think, false)];
        spec.grace_ms = self.grace_ms();
        spec.slow_fraction = self.opts.slow_fraction.clamp(0.0, 1.0);
        let out = self.execute(&spec)?;
        let mut r = self.common(&spec, &out);
        let slow = out
            .plans
            .first()
            .map(|p| (0..users).filter(|&id| p.is_slow(id)).count())
            .unwrap_or(0);
        r.row(
            "slow readers",
            format!(
                "{slow} of {users} never read after joining (SO_RCVBUF {}); latency above is the others'",
                self.opts.slow_rcvbuf
            ),
        );
        r.figure("slow_readers", slow);
        if let Some(growth) = r.server.as_ref().map(|s| s.rss_growth_bytes) {
            r.row(
                "RSS growth",
                format!("{} over the run", bytes(growth as f64)),
            );
            r.headline = format!(
                "p99 {}, RSS {:+.1} MB",
                ms(r.latency.p99_us),
                growth as f64 / 1e6
            );
        } else {
            r.headline = format!("p99 {}", ms(r.latency.p99_us));
        }
        Ok(r)
    }

    fn churn(&self, users: Option<u32>) -> anyhow::Result<Report> {
        let users = users.unwrap_or(3_000);
        let secs = self.seconds(60.0);
        let mut spec = Spec::new("churn", Mode::Churn, users, self.opts.group);
        spec.hold_ms = (secs * 1e3) as u64;
        let out = self.execute(&spec)?;
        let mut r = self.common(&spec, &out);
        let ready = merge_or_warn(out.reports.iter().map(|w| &w.ready));
        let rejoined: u32 = out.reports.iter().map(|w| w.rejoined).sum();
        let l = Latency::of(&ready);
        r.row(
            "rejoined",
            format!(
                "{rejoined} of {} (clients' view): all by {}, p50 {}",
                r.setup.joined,
                ms(l.max_us),
                ms(l.p50_us)
            ),
        );
        let min_total = out.probe.iter().map(|p| p.1).min();
        let right = out.counts_right_ns.map(|t| (t - out.go_ns) as f64 / 1e9);
        let dropped = drop_counted_s(&out.probe, out.go_ns);
        match (dropped, min_total) {
            (Some(s), Some(low)) => r.row(
                "drop counted",
                format!(
                    "after {s:.2} s: /list member total first at its lowest ({low}) after every client dropped (probe every 50 ms)"
                ),
            ),
            _ => r.row("drop counted", "no probe answer after the drop".to_string()),
        }
        match right {
            Some(s) => r.row(
                "counts right",
                format!(
                    "after {s:.2} s: /list member total back to {} with every client rejoined (lowest seen {})",
                    r.setup.joined,
                    min_total.map(|n| n.to_string()).unwrap_or("-".into())
                ),
            ),
            None => r.row(
                "counts right",
                format!(
                    "not within {secs} s (last total {}, wanted {})",
                    out.probe.last().map(|p| p.1.to_string()).unwrap_or("-".into()),
                    r.setup.joined
                ),
            ),
        }
        let full: u64 = out.reports.iter().map(|w| w.full_retries).sum();
        let busy: u64 = out.reports.iter().map(|w| w.busy).sum();
        r.row(
            "retries",
            format!(
                "{full} \"Channel is full\" (the old session still held the seat), {busy} busy"
            ),
        );
        for e in out.probe_errors.iter().take(3) {
            r.notes.push(format!("probe: {e}"));
        }
        r.figure("rejoined", rejoined);
        r.figure("rejoin_latency", &l);
        r.figure("counts_right_s", right);
        r.figure("drop_counted_s", dropped);
        r.figure("probe_min_total", min_total);
        r.figure("probe_samples", out.probe.len());
        r.figure("full_retries", full);
        let drop_text = match dropped {
            Some(d) => format!("drop counted after {d:.2} s, "),
            None => String::new(),
        };
        r.headline = match right {
            Some(s) => format!("{drop_text}all back after {s:.2} s"),
            None => format!("{drop_text}counts not right in time"),
        };
        Ok(r)
    }

    // ---- running ----

    /// Plans the workers, runs setup, go and the measured phase, and collects the reports.
    fn execute(&self, spec: &Spec) -> anyhow::Result<Outcome> {
        let o = &self.opts;
        let per_worker = self.limits.clients_per_worker.max(1);
        let clients = spec.users as u64 + spec.loopers as u64;
        let n = (o.workers.unwrap_or(spec.min_workers) as u64)
            .max(clients.div_ceil(per_worker))
            .max(1) as u32;
        if let Some(max) = self.limits.server_max_users {
            if clients > max {
                eprintln!(
                    "{}: warning: {clients} clients but the server takes about {max}",
                    spec.name
                );
            }
        }
        let chunk = spec.users.div_ceil(n);
        let plans: Vec<Plan> = (0..n)
            .map(|w| {
                let first = (w * chunk).min(spec.users);
                let end = ((w + 1) * chunk).min(spec.users);
                Plan {
                    mode: spec.mode,
                    protocol: o.protocol,
                    client: o.client,
                    addr: o.addr,
                    worker: w,
                    first,
                    count: end - first,
                    total: spec.users,
                    group: spec.group,
                    password: o.password.clone(),
                    source_addrs: self.limits.source_addrs,
                    timeout_ms: (o.timeout * 1e3) as u64,
                    connect_concurrency: o.connect_concurrency,
                    message_bytes: o.message_bytes.max(24),
                    windows: spec.windows.clone(),
                    grace_ms: spec.grace_ms,
                    slow_fraction: spec.slow_fraction,
                    slow_rcvbuf: o.slow_rcvbuf,
                    loopers: (0..spec.loopers).filter(|l| l % n == w).collect(),
                    bigroom_messages: spec.bigroom_messages,
                    bigroom_interval_ms: spec.bigroom_interval_ms,
                    hold_ms: spec.hold_ms,
                    report_windows: spec.report_windows,
                }
            })
            .collect();

        let pid = self.limits.server_pid;
        let sample = || pid.and_then(|p| sys::proc_sample(p).ok());
        let before = sample();
        let listen_before = sys::listen_counters().ok();
        eprintln!(
            "{}: {} users{} over {n} worker process{} ...",
            spec.name,
            spec.users,
            if spec.loopers > 0 {
                format!(" + {} login loopers", spec.loopers)
            } else {
                String::new()
            },
            if n == 1 { "" } else { "es" }
        );
        let started = Instant::now();
        let mut fleet = Fleet::start(&plans)?;
        let setups = fleet.wait_ready()?;
        let mut setup = Setup::default();
        let mut setup_errors = Errors::default();
        for s in &setups {
            setup.clients += s.clients;
            setup.connected += s.connected;
            setup.logged_in += s.logged_in;
            setup.joined += s.joined;
            setup.created += s.created;
            setup.busy += s.busy;
            setup.full_retries += s.full_retries;
            setup.seconds = setup.seconds.max(s.seconds);
            setup_errors.add(&s.errors);
        }
        if spec.mode != Mode::Storm {
            eprintln!(
                "{}: setup done in {:.1} s: {} logged in, {} joined, errors: {}",
                spec.name,
                started.elapsed().as_secs_f64(),
                setup.logged_in,
                setup.joined,
                setup_errors.describe()
            );
        }
        let loaded = sample();
        let loaded_ns = now_ns();

        let probe_stop = Arc::new(AtomicBool::new(false));
        let mut probe_thread = None;
        if spec.mode == Mode::Churn {
            let (ready_tx, ready_rx) = mpsc::channel();
            probe_thread = Some(start_probe(
                o.addr,
                o.protocol,
                o.password.clone(),
                Duration::from_secs_f64(o.timeout),
                fleet.tx.clone(),
                probe_stop.clone(),
                ready_tx,
            ));
            match ready_rx.recv_timeout(Duration::from_secs_f64(o.timeout + 5.0)) {
                Ok(Ok(())) => {}
                Ok(Err(e)) => eprintln!("churn: the probe could not log in: {e}"),
                Err(_) => eprintln!("churn: the probe did not log in in time"),
            }
        }

        let go_ns = now_ns() + spec.settle_ms * 1_000_000;
        fleet.broadcast(&Command::Go { at_ns: go_ns });
        let measured_end = go_ns + (plans[0].windows_end_ms() + spec.grace_ms / 2) * 1_000_000;
        let give_up = go_ns
            + (plans[0].windows_end_ms().max(spec.hold_ms)
                + spec.grace_ms
                + plans[0].timeout_ms
                + 30_000)
                * 1_000_000;
        let mut after = None;
        let mut end_ns = 0;
        let mut reached = 0;
        let mut reached_ns = None;
        let mut probe = Vec::new();
        let mut probe_errors = Vec::new();
        let mut counts_right_ns = None;
        let mut stopped_after = None;
        let mut stopped = false;
        let mut windows: BTreeMap<usize, Vec<WindowReport>> = BTreeMap::new();
        let mut failed_in_a_row = 0;
        let mut at_go = None;
        // Server CPU at each window's start and end: (time, CPU seconds).
        let mut window_cpu: Vec<[Option<(u64, f64)>; 2]> = vec![[None; 2]; spec.windows.len()];
        let expected_members = setup.joined as u64;
        let stop = |fleet: &mut Fleet,
                    after: &mut Option<ProcSample>,
                    end_ns: &mut u64,
                    stopped: &mut bool| {
            if !*stopped {
                *after = sample();
                *end_ns = now_ns();
                probe_stop.store(true, Ordering::Relaxed);
                fleet.broadcast(&Command::Stop);
                *stopped = true;
            }
        };
        while !fleet.all_finished() {
            let now = now_ns();
            if pid.is_some() && !stopped {
                if at_go.is_none() && now >= go_ns {
                    at_go = sample();
                }
                for (w, cpu) in spec.windows.iter().zip(window_cpu.iter_mut()) {
                    for (edge, ms) in [w.start_ms, w.end_ms].into_iter().enumerate() {
                        if cpu[edge].is_none() && now >= go_ns + ms * 1_000_000 {
                            cpu[edge] = sample().map(|s| (now_ns(), s.cpu_s));
                        }
                    }
                }
            }
            if now > give_up {
                eprintln!(
                    "{}: workers did not finish in time; stopping them",
                    spec.name
                );
                stop(&mut fleet, &mut after, &mut end_ns, &mut stopped);
                break;
            }
            if after.is_none()
                && !stopped
                && matches!(spec.mode, Mode::Chat | Mode::Bigroom)
                && now >= measured_end
            {
                after = sample();
                end_ns = now;
            }
            if spec.mode == Mode::Churn && !stopped && now > go_ns + spec.hold_ms * 1_000_000 {
                stop(&mut fleet, &mut after, &mut end_ns, &mut stopped);
            }
            let Some(msg) = fleet.next(Duration::from_millis(100)) else {
                continue;
            };
            match msg {
                Msg::Worker(_, WorkerMsg::Window { index, stats }) => {
                    let parts = windows.entry(index).or_default();
                    parts.push(stats);
                    if parts.len() == fleet.len() && !spec.targets.is_empty() && !stopped {
                        let t = totals(parts.iter());
                        let lat = Latency::of(&merge_or_warn(&t.latency_parts));
                        let secs = (spec.windows[index].end_ms - spec.windows[index].start_ms)
                            as f64
                            / 1e3;
                        let v = judge_step(
                            spec.targets[index],
                            secs,
                            t.sent,
                            t.expected,
                            t.delivered,
                            &lat,
                        );
                        eprintln!(
                            "firehose: step {} lines/s: delivered {:.0}/s, p99 {} -> {}",
                            spec.targets[index],
                            t.delivered as f64 / secs,
                            ms(lat.p99_us),
                            v.why
                        );
                        failed_in_a_row = if v.held { 0 } else { failed_in_a_row + 1 };
                        if failed_in_a_row >= self.opts.max_failed_steps
                            && index + 1 < spec.windows.len()
                        {
                            stopped_after = Some(index);
                            stop(&mut fleet, &mut after, &mut end_ns, &mut stopped);
                        }
                    }
                }
                Msg::Worker(_, WorkerMsg::Reached) => {
                    reached += 1;
                    if reached == fleet.len() {
                        reached_ns = Some(now_ns());
                        if spec.mode == Mode::Storm {
                            stop(&mut fleet, &mut after, &mut end_ns, &mut stopped);
                        }
                    }
                }
                Msg::Probe(t, Ok(total)) => {
                    probe.push((t, total));
                    if counts_right_ns.is_none()
                        && reached_ns.is_some_and(|r| t >= r)
                        && total == expected_members
                    {
                        counts_right_ns = Some(now_ns());
                        stop(&mut fleet, &mut after, &mut end_ns, &mut stopped);
                    }
                }
                Msg::Probe(_, Err(e)) if probe_errors.len() < 10 => probe_errors.push(e),
                _ => {}
            }
        }
        probe_stop.store(true, Ordering::Relaxed);
        if after.is_none() {
            after = sample();
            end_ns = now_ns();
        }
        let reports = fleet.finish(Duration::from_secs(30));
        if let Some(t) = probe_thread {
            let _ = t.join();
        }
        let listen_after = sys::listen_counters().ok();
        let mut lost = fleet.lost.clone();
        if reports.len() < plans.len() {
            lost.push(format!(
                "{} of {} workers reported",
                reports.len(),
                plans.len()
            ));
        }
        Ok(Outcome {
            loaded_ns,
            plans,
            workers: n,
            setup,
            setup_errors,
            reports,
            lost,
            go_ns,
            end_ns,
            probe,
            probe_errors,
            counts_right_ns,
            stopped_after,
            window_cores: window_cpu
                .iter()
                .map(|edges| match edges {
                    [Some((t0, c0)), Some((t1, c1))] if t1 > t0 => {
                        Some((c1 - c0) / ((t1 - t0) as f64 / 1e9))
                    }
                    _ => None,
                })
                .collect(),
            server: match (pid, before, loaded, after) {
                (Some(p), Some(b), Some(l), Some(a)) => Some((p, b, l, a)),
                _ => None,
            },
            listen: listen_before.zip(listen_after),
            at_go,
        })
    }

    /// The parts every scenario reports the same way.
    fn common(&self, spec: &Spec, out: &Outcome) -> Report {
        let mut run_errors = Errors::default();
        let mut samples = Vec::new();
        for w in &out.reports {
            run_errors.add(&w.errors);
            for s in &w.samples {
                if samples.len() < 5 && !samples.contains(s) {
                    samples.push(s.clone());
                }
            }
        }
        let mut errors = out.setup_errors.clone();
        errors.add(&run_errors);
        let measured_s = match spec.mode {
            Mode::Chat | Mode::Bigroom => out.plans[0].windows_end_ms() as f64 / 1e3,
            _ => out.end_ns.saturating_sub(out.go_ns) as f64 / 1e9,
        };
        // Firehose may have stopped early: count only the windows that ran.
        let ran = out
            .stopped_after
            .map(|s| s + 1)
            .unwrap_or(spec.windows.len());
        let measured_s = if ran < spec.windows.len() {
            spec.windows[ran - 1].end_ms as f64 / 1e3
        } else {
            measured_s
        };
        let all =
            totals((0..ran).flat_map(|i| out.reports.iter().filter_map(move |w| w.windows.get(i))));
        let latency = Latency::of(&merge_or_warn(&all.latency_parts));
        let deliveries = (!spec.windows.is_empty()).then(|| Deliveries {
            sent: all.sent,
            expected: all.expected,
            delivered: all.delivered,
            per_second: all.delivered as f64 / measured_s.max(1e-9),
            dropped: all.dropped,
            late_sends: all.late_sends,
            own_lines_counted: self.opts.protocol.echoes_own(),
        });
        // Storm clients connect only after go: their RSS shows in the "after" sample.
        let storm = spec.mode == Mode::Storm;
        let storm_users: u32 = out.reports.iter().map(|w| w.logged_in).sum();
        let server = out.server.map(|(pid, before, loaded, after)| {
            let (users, with_users) = if storm {
                (storm_users.max(1) as f64, after)
            } else {
                (out.setup.connected.max(1) as f64, loaded)
            };
            // The measured phase runs from go to the "after" sample; without a sample at go, from
            // the end of setup (then the settling pause counts in too, on both sides).
            let (start, start_ns) = match out.at_go {
                Some(s) => (s, out.go_ns),
                None => (loaded, out.loaded_ns),
            };
            let run_wall = out.end_ns.saturating_sub(start_ns) as f64 / 1e9;
            ServerFigures {
                pid,
                before,
                loaded,
                after,
                rss_per_user_bytes: (with_users.rss_bytes as f64 - before.rss_bytes as f64) / users,
                rss_growth_bytes: after.rss_bytes as i64 - start.rss_bytes as i64,
                cpu_setup_s: loaded.cpu_s - before.cpu_s,
                cpu_run_s: after.cpu_s - start.cpu_s,
                cpu_cores_used: (after.cpu_s - start.cpu_s) / run_wall.max(1e-9),
            }
        });
        let foreign: u64 = out.reports.iter().map(|w| w.foreign).sum();
        let mut notes: Vec<String> = out.lost.clone();
        if foreign > 0 {
            notes.push(format!(
                "{foreign} chat lines not written by the bench were seen"
            ));
        }
        if self.opts.protocol == Protocol::Irc && deliveries.is_some() {
            notes.push("IRC servers do not echo a sender's own line: deliveries count lines from others only".into());
        }
        if all.late_sends > 0 {
            notes.push(format!(
                "{} sends ran over 100 ms behind schedule: the bench could not keep up",
                all.late_sends
            ));
        }
        let mut figures = Map::new();
        figures.insert(
            "limits".into(),
            serde_json::to_value(&self.limits).unwrap_or_default(),
        );
        let mut rows = Vec::new();
        if let Some((before, after)) = out.listen {
            let (o, d) = (
                after.overflows - before.overflows,
                after.drops - before.drops,
            );
            figures.insert("listen_overflows".into(), o.into());
            figures.insert("listen_drops".into(), d.into());
            if o + d > 0 || storm {
                rows.push((
                    "listen queue".to_string(),
                    format!(
                        "ListenOverflows +{o}, ListenDrops +{d} during the run (whole machine; somaxconn {})",
                        self.limits.somaxconn.map(|n| n.to_string()).unwrap_or("?".into())
                    ),
                ));
            }
        }
        Report {
            scenario: spec.name.to_string(),
            protocol: self.opts.protocol.name().to_string(),
            client: match self.opts.protocol {
                Protocol::Ringtalk => self.opts.client.name().to_string(),
                Protocol::Irc => "irc".to_string(),
            },
            addr: self.opts.addr.to_string(),
            users: spec.users,
            workers: out.workers,
            seconds: measured_s,
            setup: if storm {
                Setup::default()
            } else {
                out.setup.clone()
            },
            latency,
            deliveries,
            errors,
            setup_errors: out.setup_errors.clone(),
            run_errors,
            error_samples: samples,
            server,
            figures,
            notes,
            rows,
            headline: String::new(),
        }
    }
}

/// One window's figures summed over workers.
#[derive(Default)]
struct Totals {
    sent: u64,
    expected: u64,
    delivered: u64,
    dropped: u64,
    late_sends: u64,
    logins: u64,
    latency_parts: Vec<HistWire>,
    login_parts: Vec<HistWire>,
}

fn totals<'a>(parts: impl Iterator<Item = &'a WindowReport>) -> Totals {
    let mut t = Totals::default();
    for w in parts {
        t.sent += w.sent;
        t.expected += w.expected;
        t.delivered += w.delivered;
        t.dropped += w.dropped;
        t.late_sends += w.late_sends;
        t.logins += w.logins;
        t.latency_parts.push(w.latency.clone());
        t.login_parts.push(w.login_latency.clone());
    }
    t
}

fn window_totals(reports: &[WorkerReport], i: usize) -> Totals {
    totals(reports.iter().filter_map(|w| w.windows.get(i)))
}

fn pct(a: u64, b: u64) -> f64 {
    if b == 0 {
        0.0
    } else {
        100.0 * a as f64 / b as f64
    }
}

/// A firehose step's verdict.
struct Verdict {
    held: bool,
    why: String,
}

fn judge_step(
    target: u64,
    secs: f64,
    sent: u64,
    expected: u64,
    delivered: u64,
    lat: &Latency,
) -> Verdict {
    let offered = sent as f64 / (target as f64 * secs).max(1e-9);
    if offered < 0.9 {
        return Verdict {
            held: false,
            why: format!("bench sent only {:.0}% of the target", offered * 100.0),
        };
    }
    if expected == 0 || (delivered as f64) < 0.99 * expected as f64 {
        return Verdict {
            held: false,
            why: format!("only {:.1}% delivered", pct(delivered, expected)),
        };
    }
    if lat.p99_us >= FIREHOSE_P99_US {
        return Verdict {
            held: false,
            why: format!("p99 {} over 10 ms", ms(lat.p99_us)),
        };
    }
    Verdict {
        held: true,
        why: "held".into(),
    }
}

/// Seconds one bcrypt hash takes here at `cost` (the median of three).
fn measure_bcrypt(cost: u32) -> anyhow::Result<f64> {
    let mut times = Vec::new();
    for _ in 0..3 {
        let t = Instant::now();
        bcrypt::hash("bench-password", cost)?;
        times.push(t.elapsed().as_secs_f64());
    }
    times.sort_by(f64::total_cmp);
    Ok(times[1])
}

/// Seconds from `go_ns` (when every churn client drops its connection) to the first probe answer
/// that shows the member total at its lowest: how long the server took to count the drop. Only
/// answers to requests made after the drop count.
fn drop_counted_s(probe: &[(u64, u64)], go_ns: u64) -> Option<f64> {
    let after: Vec<&(u64, u64)> = probe.iter().filter(|p| p.0 >= go_ns).collect();
    let low = after.iter().map(|p| p.1).min()?;
    let first = after.iter().find(|p| p.1 == low)?;
    Some((first.0 - go_ns) as f64 / 1e9)
}

/// The churn probe: one more client, logged in as `bprobe`, asking for the member totals over and
/// over; each answer goes to the parent's queue.
fn start_probe(
    addr: std::net::SocketAddr,
    protocol: Protocol,
    password: String,
    timeout: Duration,
    tx: mpsc::Sender<Msg>,
    stop: Arc<AtomicBool>,
    ready: mpsc::Sender<Result<(), String>>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let rt = match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(rt) => rt,
            Err(e) => {
                let _ = ready.send(Err(e.to_string()));
                return;
            }
        };
        rt.block_on(async move {
            let deadline = tokio::time::Instant::now() + timeout;
            let conn = async {
                let mut c =
                    Conn::connect(addr, None, None, "bprobe".into(), protocol, Profile::Raw)
                        .await?;
                c.login(&password, deadline, &mut LoginInfo::default())
                    .await?;
                Ok::<Conn, crate::stats::ClientError>(c)
            };
            let mut conn = match tokio::time::timeout_at(deadline, conn).await {
                Ok(Ok(c)) => c,
                Ok(Err(e)) => {
                    let _ = ready.send(Err(e.detail));
                    return;
                }
                Err(_) => {
                    let _ = ready.send(Err("timed out".into()));
                    return;
                }
            };
            let _ = ready.send(Ok(()));
            while !stop.load(Ordering::Relaxed) {
                let t = now_ns();
                let r = conn
                    .member_total(tokio::time::Instant::now() + timeout)
                    .await
                    .map_err(|e| e.detail);
                let failed = r.is_err();
                if tx.send(Msg::Probe(t, r)).is_err() || failed {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            let _ = conn
                .quit(tokio::time::Instant::now() + Duration::from_secs(2))
                .await;
        });
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_drop_is_counted_at_the_first_lowest_answer_after_go() {
        let go = 1_000_000_000;
        let probe = [
            (go - 50_000_000, 0), // before the drop: ignored
            (go + 10_000_000, 300),
            (go + 60_000_000, 12),
            (go + 110_000_000, 5),
            (go + 160_000_000, 5),
            (go + 210_000_000, 40),
        ];
        assert_eq!(drop_counted_s(&probe, go), Some(0.11));
        assert_eq!(drop_counted_s(&probe[..1], go), None);
    }

    #[test]
    fn firehose_steps_are_judged() {
        let fast = Latency {
            count: 10,
            p99_us: 2_000,
            ..Latency::default()
        };
        let slow = Latency {
            count: 10,
            p99_us: 20_000,
            ..Latency::default()
        };
        assert!(judge_step(1000, 3.0, 3000, 18000, 18000, &fast).held);
        assert!(!judge_step(1000, 3.0, 3000, 18000, 18000, &slow).held);
        assert!(!judge_step(1000, 3.0, 3000, 18000, 17000, &fast).held);
        assert!(!judge_step(1000, 3.0, 1000, 6000, 6000, &fast).held);
    }
}
