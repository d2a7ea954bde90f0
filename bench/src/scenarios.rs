//! The scenarios, parent side: size the run from the limits, plan the workers, drive them through
//! setup → go → measured phase → done, and turn what they report into a [`Report`].
//!
//! Every scenario is one [`Spec`] given to [`Bench::execute`]; what differs afterwards is only how its
//! figures are read out. Storm and churn decide their own end (everyone logged in; the server's counts
//! right), firehose stops its ladder once steps keep failing, soak ends once the server's counts after
//! its last period are in, the rest run for a fixed time. Abuse adds a worker process of its own for
//! the attacker ([`crate::attack`]).

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
use crate::plan::{
    AttackPlan, AttackReport, ChannelFailover, Command, Leave, Mode, Notices, Plan,
    Report as WorkerMsg, Window, WindowReport, WorkerReport,
};
use crate::report::{
    bytes, latency_line, ms, Deliveries, PidSamples, Report, ServerFigures, Setup,
};
use crate::stats::{merge_or_warn, Errors, HistWire, Latency};
use crate::sys::{self, now_ns, ListenCounters, ProcSample};

/// All scenario names, in the order `suite` runs them by default.
pub const SCENARIOS: &[&str] = &[
    "seed",
    "tells",
    "ceiling",
    "firehose",
    "storm",
    "logins",
    "bigroom",
    "slowreaders",
    "churn",
    "abuse",
    "soak",
    "failover",
    "handshakes",
];

/// Scenarios `all` leaves out: the ceiling's size, abuse's server flags (`--exempt none`, and
/// cost-12 accounts), soak's ten minutes, failover's cluster (and the node it kills), handshakes
/// (which is for a TLS port, `--tls`).
pub const NOT_IN_ALL: &[&str] = &["ceiling", "abuse", "soak", "failover", "handshakes"];

/// Firehose: a step is held when its p99 is under this.
const FIREHOSE_P99_US: u64 = 10_000;

/// Abuse: the attacker's one address. The users' own addresses start at 127.1.1.1.
const ATTACKER: std::net::Ipv4Addr = std::net::Ipv4Addr::new(127, 0, 0, 2);

/// Abuse: seconds after the attack starts that the flood begins (the guessers connect first).
const FLOOD_DELAY_S: f64 = 1.0;

/// Abuse: the prefix of its account names, so its cost-12 accounts never mix with the others'.
const ABUSE_PREFIX: &str = "ba";

/// What the limits allow, found before anything runs.
#[derive(Clone, Debug, Serialize)]
pub struct Limits {
    pub nofile_soft: u64,
    pub nofile_hard: u64,
    pub clients_per_worker: u64,
    pub source_addrs: u32,
    pub ephemeral_ports: Option<(u32, u32)>,
    pub somaxconn: Option<u64>,
    /// The first of `server_pids` (its open-files limit is the one read).
    pub server_pid: Option<u32>,
    /// The server's processes (`--server-pid`, or every process listening on a loopback
    /// `--addr`'s port: several for a cluster's nodes); RSS and CPU are summed over them.
    pub server_pids: Vec<u32>,
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
    /// Login names' prefix (`b`; abuse: `ba`, so its cost-12 accounts are its own).
    name_prefix: &'static str,
    /// Every client on an address of its own (abuse).
    own_addrs: bool,
    /// Seats of the first channel kept for the abuse paster.
    reserved_seats: u32,
    /// Loopers log in one at a time this far apart, over all of them (0: as fast as they can).
    login_interval_ms: u64,
    /// Soak: chat clients leave and come back.
    leave: Option<Leave>,
    /// Abuse: one more worker process, the attacker.
    attack: Option<AttackPlan>,
    /// Setup logins per worker at once, if fewer than `--connect-concurrency`.
    connect_concurrency: Option<u32>,
    /// Run the `/list` probe (churn, soak), asking this often.
    probe_every_ms: Option<u64>,
    /// Failover: the node the parent kills, and when.
    kill: Option<Kill>,
    /// Soak: once the windows are over, stop as soon as the probe (and, if the server logs them, a
    /// heartbeat) has answered after that.
    end_check: bool,
    /// Tells: lines are private messages to random users (see [`Plan::tells`]).
    tells: bool,
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
            name_prefix: "b",
            own_addrs: false,
            reserved_seats: 0,
            login_interval_ms: 0,
            leave: None,
            attack: None,
            connect_concurrency: None,
            probe_every_ms: None,
            end_check: false,
            kill: None,
            tells: false,
        }
    }
}

/// Failover: SIGKILL to `pid`, `at_ms` after go.
#[derive(Clone, Copy, Debug)]
struct Kill {
    pid: u32,
    at_ms: u64,
}

/// Failover: what became of the kill.
#[derive(Clone, Debug, Default)]
struct KillOutcome {
    /// The planned time (go + `at_ms`): the instant the workers divide lines at.
    planned_ns: u64,
    /// When `kill(2)` returned; `None` if it was not sent (the run ended first).
    sent_ns: Option<u64>,
    /// Why `kill(2)` failed, if it did.
    error: Option<String>,
    /// Established connections the node held on the server's port after setup: its clients.
    node_connections: Option<u64>,
}

/// The server's processes and their samples: before setup, after setup, and after the measured
/// phase (each in the order of `pids`).
struct ServerSamples {
    pids: Vec<u32>,
    before: Vec<ProcSample>,
    loaded: Vec<ProcSample>,
    after: Vec<ProcSample>,
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
    /// The server's samples at each window's start and end, when its pid is known.
    window_samples: Vec<[Option<ProcSample>; 2]>,
    /// The length of `--server-log` at each window's start and end (to read what it gained).
    window_log: Vec<[Option<u64>; 2]>,
    /// Soak: the first probe answer asked for after the windows ended: (request time, total).
    end_probe: Option<(u64, u64)>,
    /// Soak: the first heartbeat the server logged after the windows ended.
    end_heartbeat: Option<BTreeMap<String, String>>,
    /// The server's processes and their samples.
    server: Option<ServerSamples>,
    /// Failover: the kill.
    kill: Option<KillOutcome>,
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
        let server_pids = match &opts.server_pid {
            Some(list) => list.0.clone(),
            None if opts.addr.ip().is_loopback() => sys::find_listener_pids(opts.addr),
            None => Vec::new(),
        };
        let server_pid = server_pids.first().copied();
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
            server_pids,
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
        let pids = if l.server_pids.is_empty() {
            String::new()
        } else {
            format!(" {}", crate::report::pid_list(&l.server_pids))
        };
        let server = match (l.server_pid, l.server_max_users) {
            (_, Some(n)) => format!(
                "server{pids}: about {n} users (from {})",
                l.server_max_source
            ),
            (Some(_), None) => format!("server{pids}: user limit unknown"),
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
            "tells" => self.tells(users),
            "ceiling" => self.ceiling(users),
            "firehose" => self.firehose(users),
            "storm" => self.storm(users),
            "logins" => self.logins(users),
            "bigroom" => self.bigroom(users),
            "slowreaders" => self.slowreaders(users),
            "churn" => self.churn(users),
            "abuse" => self.abuse(users),
            "soak" => self.soak(users),
            "failover" => self.failover(users),
            "handshakes" => self.handshakes(users),
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
        self.chat_at_seed_rate(users, name, false)
    }

    /// seed's users, channels and rate, but every line a private message to a user picked at
    /// random (on another shard with probability (shards - 1) / shards).
    fn tells(&self, users: Option<u32>) -> anyhow::Result<Report> {
        if self.opts.protocol == Protocol::Irc {
            bail!("tells is a ringtalk scenario (its /tell)");
        }
        self.chat_at_seed_rate(users, "tells", true)
    }

    /// seed (and, with `tells`, its private-message twin): users in channels of `--group`, a line
    /// every `--think` seconds each.
    fn chat_at_seed_rate(
        &self,
        users: Option<u32>,
        name: &'static str,
        tells: bool,
    ) -> anyhow::Result<Report> {
        let users = users.unwrap_or(3_000);
        let secs = self.seconds(60.0);
        let think = self.opts.think.unwrap_or(10.0);
        let mut spec = Spec::new(name, Mode::Chat, users, self.opts.group);
        spec.windows = vec![Self::window("chat", 0.0, secs, 1.0 / think, false)];
        spec.grace_ms = self.grace_ms();
        spec.tells = tells;
        let out = self.execute(&spec)?;
        let mut r = self.common(&spec, &out);
        let what = if tells {
            "telling a random user"
        } else {
            "saying"
        };
        r.row(
            "workload",
            format!(
                "channels of {}, each user {what} a {}-byte line every {think} s on average",
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

    /// The ceiling's size: the server's user limit (and where it came from), the users it allows
    /// after `--margin`, and a note if the limit had to be guessed.
    fn ceiling_size(&self) -> (u64, u32, Vec<String>) {
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
        (server_max, allowed, notes)
    }

    fn ceiling(&self, users: Option<u32>) -> anyhow::Result<Report> {
        let (server_max, allowed, notes) = self.ceiling_size();
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

    /// Connections (with `--tls`, full TLS handshakes) the server completes per second, and per
    /// second of its CPU: `users` clients each connect, wait for the greeting and close, in a loop.
    fn handshakes(&self, users: Option<u32>) -> anyhow::Result<Report> {
        let users = users.unwrap_or(32);
        let secs = self.seconds(10.0);
        let mut spec = Spec::new("handshakes", Mode::Handshakes, users, self.opts.group);
        spec.hold_ms = (secs * 1e3) as u64;
        let out = self.execute(&spec)?;
        let mut r = self.common(&spec, &out);
        let greet = merge_or_warn(out.reports.iter().map(|w| &w.greet));
        let g = Latency::of(&greet);
        let done: u64 = out.reports.iter().map(|w| w.greeted as u64).sum();
        let per_s = done as f64 / r.seconds.max(1e-9);
        let server_cpu = r.server.as_ref().map(|s| (s.cpu_run_s, s.cpu_cores_used));
        let per_cpu_s = server_cpu
            .filter(|&(cpu, _)| cpu > 0.0)
            .map(|(cpu, _)| done as f64 / cpu);
        let what = if self.opts.tls {
            "TLS handshakes"
        } else {
            "connections (plain: --tls for handshakes)"
        };
        r.row(
            what,
            format!(
                "{done} in {:.1} s: {per_s:.0}/s; connect to greeting p50 {} p99 {}",
                r.seconds,
                ms(g.p50_us),
                ms(g.p99_us)
            ),
        );
        if let (Some(per_cpu), Some((_, cores))) = (per_cpu_s, server_cpu) {
            r.row(
                "per server CPU-second",
                format!("{per_cpu:.0} (the server used {cores:.2} cores)"),
            );
        }
        r.figure("tls", self.opts.tls);
        r.figure("handshakes", done);
        r.figure("handshakes_per_s", per_s);
        r.figure("handshakes_per_server_cpu_s", per_cpu_s);
        r.figure("greet_latency", &g);
        r.headline = format!("{per_s:.0}/s");
        Ok(r)
    }

    fn logins(&self, users: Option<u32>) -> anyhow::Result<Report> {
        let users = users.unwrap_or(300);
        let secs = self.seconds(20.0);
        let base = self.opts.baseline.unwrap_or(5.0).max(0.0);
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
        spec.probe_every_ms = Some(50);
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

    /// abuse: one address (127.0.0.2) floods connections, guesses a password and pastes, while
    /// `users` users, each on an address of its own, chat at the seed rate and a few more log in
    /// and out in turn. A baseline phase without the attacker comes first. The server must run with
    /// `--exempt none`, or loopback is exempt from every limit measured here.
    fn abuse(&self, users: Option<u32>) -> anyhow::Result<Report> {
        if self.opts.protocol != Protocol::Ringtalk {
            bail!("abuse measures ringtalk's defences: it speaks ringtalk only");
        }
        let users = users.unwrap_or(1_000).max(1);
        let attack_s = self.seconds(60.0);
        let base = self.opts.baseline.unwrap_or(30.0).max(1.0);
        let think = self.opts.think.unwrap_or(10.0);
        let rate = self.opts.login_rate;
        let probes = if rate > 0.0 {
            self.opts.login_probes
        } else {
            0
        };
        let group = self.opts.group;
        let mut spec = Spec::new("abuse", Mode::Chat, users, group);
        spec.windows = vec![
            Self::window("baseline", 0.0, base, 1.0 / think, true),
            Self::window("attack", base, base + attack_s, 1.0 / think, true),
        ];
        spec.grace_ms = self.grace_ms();
        spec.loopers = probes;
        spec.login_interval_ms = if rate > 0.0 { (1e3 / rate) as u64 } else { 0 };
        spec.name_prefix = ABUSE_PREFIX;
        spec.own_addrs = true;
        spec.reserved_seats = 1;
        // Cost-12 logins queue for the server's bcrypt workers whatever the bench does; fewer at
        // once keeps each within the server's login timeout.
        spec.connect_concurrency = Some(64);
        let attack = AttackPlan {
            src: ATTACKER,
            start_ms: (base * 1e3) as u64,
            end_ms: ((base + attack_s) * 1e3) as u64,
            connections: self.opts.attack_conns,
            flood_start_ms: ((base + attack_s.min(FLOOD_DELAY_S)) * 1e3) as u64,
            in_flight: 64,
            hold_max: 256,
            guesses: self.opts.guesses,
            guessers: 4,
            victim: format!("{ABUSE_PREFIX}victim"),
            paster: format!("{ABUSE_PREFIX}paster"),
            paste_channel: "bc0".into(),
            paste_lines: self.opts.paste_lines,
        };
        spec.attack = Some(attack.clone());
        let out = self.execute(&spec)?;
        let mut r = self.common(&spec, &out);
        let a = out
            .reports
            .iter()
            .find_map(|w| w.attack.clone())
            .unwrap_or_default();
        r.row(
            "workload",
            format!(
                "{users} users, each on an address of its own from 127.1.1.1, channels of {group}, a \
                 line every {think} s on average; {probes} more (`{ABUSE_PREFIX}l<id>`) log in and \
                 /quit in turn, {rate}/s in all, timed from connect to logged in; {base} s baseline, \
                 then {attack_s} s of attack from {ATTACKER}"
            ),
        );
        // Chat and logins, before and during the attack.
        let phases: Vec<(Latency, Latency, u64, u64)> = (0..2)
            .map(|i| {
                let t = window_totals(&out.reports, i);
                (
                    Latency::of(&merge_or_warn(&t.latency_parts)),
                    Latency::of(&merge_or_warn(&t.login_parts)),
                    t.logins,
                    t.login_failed,
                )
            })
            .collect();
        let (chat_base, login_base, logins_base, failed_base) = phases[0].clone();
        let (chat_att, login_att, logins_att, failed_att) = phases[1].clone();
        r.row("chat (baseline)", latency_line(&chat_base));
        r.row("chat (attack)", latency_line(&chat_att));
        let change = p99_change_us(&chat_base, &chat_att);
        r.row(
            "p99 change",
            format!(
                "{} with the attacker (goal: within 1 ms)",
                signed_ms(change)
            ),
        );
        for (name, lat, n, failed) in [
            ("logins (baseline)", &login_base, logins_base, failed_base),
            ("logins (attack)", &login_att, logins_att, failed_att),
        ] {
            r.row(
                name,
                format!(
                    "{n} timed logins, {failed} failed; connect to logged in p50 {} p99 {} max {}{}",
                    ms(lat.p50_us),
                    ms(lat.p99_us),
                    ms(lat.max_us),
                    if name.ends_with("(attack)") {
                        " (goal: p99 under 0.5 s)"
                    } else {
                        ""
                    }
                ),
            );
        }
        let refused = r.errors.refused;
        let others = r.errors.total() - refused;
        let flood_dropped: u64 = out.reports.iter().map(|w| w.flood_dropped).sum();
        r.row(
            "normal users",
            format!(
                "{refused} turned away (a per-address limit or throttle, or ECONNREFUSED), {others} \
                 other errors, {} logins failed while timed; flood control dropped {flood_dropped} of \
                 their lines (goal: all 0)",
                failed_base + failed_att
            ),
        );
        let f = &a.flood;
        r.row(
            "flood",
            format!(
                "{} of {} attempts made: {} let in (at most {} held open at once, {} of them closed \
                 by the server), refused {} \"too many\", {} \"still logging in\", {} \"recently\"; \
                 {} closed without a word, {} failed",
                f.attempts,
                attack.connections,
                f.accepted,
                f.held_peak,
                f.closed_while_held,
                f.refused_conns,
                f.refused_unauth,
                f.refused_rate,
                f.closed,
                f.failed
            ),
        );
        let g = guess_totals(&a);
        r.row(
            "guesses",
            format!(
                "{} wrong passwords for {}: {} answered \"Incorrect password.\" (a hash each), {} \
                 throttled, {} without a connection, {} failed, {} not made; {} connections; {} \
                 slowed for the account first",
                g.planned,
                attack.victim,
                g.answered,
                g.throttled,
                g.no_connection,
                g.failed,
                g.not_made,
                g.connections,
                g.slowed
            ),
        );
        let members = paste_members(group, users);
        let received: u64 = out.reports.iter().map(|w| w.paste_received).sum();
        let per_member = received as f64 / members.max(1) as f64;
        let p = &a.paste;
        r.row(
            "paste",
            match &a.paster_error {
                Some(e) => format!("none: the paster could not log in or join: {e}"),
                None => format!(
                    "{} of {} lines written (the writes took {:.2} s); the channel's {members} other members \
                     received {per_member:.0} each on average ({received} in all); {} echoed to the \
                     paster; the server said it dropped {} ({} notices); paster {}",
                    p.sent,
                    attack.paste_lines,
                    p.write_s,
                    p.echoed,
                    p.dropped,
                    p.notices,
                    if p.disconnected {
                        "disconnected"
                    } else {
                        "still connected"
                    }
                ),
            },
        );
        let at = |i: usize, edge: usize| {
            out.window_samples
                .get(i)
                .and_then(|e| e[edge])
                .map(|s| s.rss_bytes)
        };
        let (start, end) = (at(1, 0), at(1, 1));
        let before = r.server.as_ref().map(|s| s.before.rss_bytes);
        if let (Some(b), Some(s0), Some(s1)) = (before, start, end) {
            r.row(
                "RSS",
                format!(
                    "{} before setup, {} when the attack started, {} when it ended: {} during the attack",
                    bytes(b as f64),
                    bytes(s0 as f64),
                    bytes(s1 as f64),
                    signed_bytes(s1 as i64 - s0 as i64)
                ),
            );
            r.figure("rss_attack_start_bytes", s0);
            r.figure("rss_attack_end_bytes", s1);
            r.figure("rss_attack_growth_bytes", s1 as i64 - s0 as i64);
        }
        // The server's own count of limit hits: the sum over its heartbeats (each counts the hits
        // since the one before), in the baseline and from the attack's start to the end of the log.
        let log = self.opts.server_log.as_deref();
        let edge = |i: usize, e: usize| out.window_log.get(i).and_then(|w| w[e]);
        let limits_in = |from: Option<u64>, to: Option<u64>| {
            let (Some(path), Some(from)) = (log, from) else {
                return None;
            };
            let beats = sys::heartbeats_in(path, from, to);
            (!beats.is_empty()).then(|| limit_hits(&beats))
        };
        let hits_base = limits_in(edge(0, 0), edge(0, 1));
        let hits_attack = limits_in(edge(1, 0), None);
        if let (Some(b), Some(a)) = (&hits_base, &hits_attack) {
            let show = |h: &BTreeMap<String, u64>| {
                h.iter()
                    .map(|(k, v)| format!("{k} {v}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            r.row(
                "server's counts",
                format!(
                    "limit hits in its heartbeats: baseline {}; from the attack on {}",
                    show(b),
                    show(a)
                ),
            );
        }
        if let Some(e) = &a.victim_error {
            r.notes.push(format!(
                "the victim's account could not be made sure of: {e}"
            ));
        }
        for s in &a.samples {
            r.notes.push(format!("attacker: {s}"));
        }
        r.notes.push(format!(
            "the server must run with --exempt none (else loopback skips every limit); accounts \
             {ABUSE_PREFIX}<id>, {ABUSE_PREFIX}l<id>, {ABUSE_PREFIX}victim and {ABUSE_PREFIX}paster \
             are made on the first run against a --data-dir and logged in to on later ones"
        ));
        r.figure("chat_latency_baseline", &chat_base);
        r.figure("chat_latency_attack", &chat_att);
        r.figure("p99_change_us", change);
        r.figure("login_latency_baseline", &login_base);
        r.figure("login_latency_attack", &login_att);
        r.figure("logins_baseline", logins_base);
        r.figure("logins_attack", logins_att);
        r.figure("logins_failed", failed_base + failed_att);
        r.figure("normal_refused", refused);
        r.figure("normal_other_errors", others);
        r.figure("normal_flood_dropped", flood_dropped);
        r.figure("flood", &a.flood);
        r.figure("guesses", &g);
        r.figure("paste", &a.paste);
        r.figure("paste_members", members);
        r.figure("paste_received", received);
        r.figure("paste_received_per_member", per_member);
        r.figure("paster_error", &a.paster_error);
        r.figure("server_limit_hits_baseline", &hits_base);
        r.figure("server_limit_hits_attack", &hits_attack);
        r.figure("attacker", ATTACKER.to_string());
        r.headline = format!(
            "p99 {} ({} baseline), logins p99 {}, {refused} refused",
            ms(chat_att.p99_us),
            ms(chat_base.p99_us),
            ms(login_att.p99_us)
        );
        Ok(r)
    }

    /// soak: the ceiling workload for `--seconds` (600) while `--leave-fraction` of the users leave
    /// and come back in every `--period` (60 s); RSS at each period's end, the server's counts once
    /// the periods are over.
    fn soak(&self, users: Option<u32>) -> anyhow::Result<Report> {
        let (server_max, allowed, notes) = self.ceiling_size();
        let users = users.unwrap_or(allowed);
        let period = self.opts.period.max(1.0);
        let periods = (self.seconds(600.0) / period).round().max(1.0) as u32;
        let think = self.opts.think.unwrap_or(10.0);
        let fraction = self.opts.leave_fraction.clamp(0.0, 1.0);
        let unit = if period == 60.0 { "minute" } else { "period" };
        let mut spec = Spec::new("soak", Mode::Chat, users, self.opts.group);
        spec.windows = (0..periods)
            .map(|p| {
                let name = format!("{unit} {}", p + 1);
                Self::window(
                    &name,
                    p as f64 * period,
                    (p + 1) as f64 * period,
                    1.0 / think,
                    false,
                )
            })
            .collect();
        let leave = Leave {
            fraction,
            period_ms: (period * 1e3) as u64,
            periods,
        };
        spec.leave = Some(leave);
        // Room after the periods for a probe answer and, with the server's log, a heartbeat.
        let wait_ms = if self.opts.server_log.is_some() {
            12_000
        } else {
            3_000
        };
        spec.grace_ms = self.grace_ms().max(wait_ms);
        spec.probe_every_ms = Some(1_000);
        spec.end_check = true;
        let out = self.execute(&spec)?;
        let mut r = self.common(&spec, &out);
        r.notes.extend(notes);
        let planned: u64 = (0..users).map(|id| leave.schedule(id).len() as u64).sum();
        r.row(
            "workload",
            format!(
                "ceiling: {users} users (server takes about {server_max}, {}), channels of {}, a \
                 line every {think} s on average, for {periods} {unit}s of {period} s; in each, {:.0}% \
                 of the users leave (half /quit, half drop the connection) and at once connect, log \
                 in and join again",
                self.limits.server_max_source,
                spec.group,
                fraction * 100.0
            ),
        );
        let mut rss_ends = Vec::new();
        let mut per = Vec::new();
        let mut back = 0;
        let mut failed = 0;
        let mut return_parts = Vec::new();
        for (i, w) in spec.windows.iter().enumerate() {
            let t = window_totals(&out.reports, i);
            let lat = Latency::of(&merge_or_warn(&t.latency_parts));
            let ret = Latency::of(&merge_or_warn(&t.login_parts));
            let rss = out
                .window_samples
                .get(i)
                .and_then(|e| e[1])
                .map(|s| s.rss_bytes);
            rss_ends.extend(rss);
            back += t.logins;
            failed += t.login_failed;
            return_parts.extend(t.login_parts.iter().cloned());
            r.row(
                &w.name,
                format!(
                    "p50 {} p99 {} max {}; {} back ({} failed), back after p99 {}; RSS {}",
                    ms(lat.p50_us),
                    ms(lat.p99_us),
                    ms(lat.max_us),
                    t.logins,
                    t.login_failed,
                    ms(ret.p99_us),
                    rss.map(|b| bytes(b as f64)).unwrap_or("-".into())
                ),
            );
            per.push(json!({
                "name": w.name,
                "latency": lat,
                "back": t.logins,
                "failed": t.login_failed,
                "back_latency": ret,
                "rss_bytes": rss,
            }));
        }
        let returns = Latency::of(&merge_or_warn(&return_parts));
        r.row(
            "left and back",
            format!(
                "{back} of {planned} planned came back ({failed} failed); leaving to joined again \
                 p50 {} p99 {} max {}",
                ms(returns.p50_us),
                ms(returns.p99_us),
                ms(returns.max_us)
            ),
        );
        let growth = growth_per_period(&rss_ends);
        match growth {
            Some(g) => r.row(
                "RSS growth",
                format!(
                    "{} per {unit} after the first (least squares over {unit}s 2..{}; goal: flat); \
                     {} from the end of {unit} 1 to the end",
                    signed_bytes(g as i64),
                    rss_ends.len(),
                    signed_bytes(
                        *rss_ends.last().unwrap_or(&0) as i64 - *rss_ends.first().unwrap_or(&0) as i64
                    )
                ),
            ),
            None => r.row(
                "RSS growth",
                format!("needs the server's pid and at least 3 {unit}s"),
            ),
        }
        // The server's counts once every user is back: all that held are on their channels, and
        // connected and logged in with the probe.
        let held: u32 = out.reports.iter().map(|w| w.held).sum();
        let counts = end_counts(held as u64, out.end_probe.map(|p| p.1), &out.end_heartbeat);
        r.row("counts at the end", counts.describe());
        r.figure("periods", per);
        r.figure("period_s", period);
        r.figure("leave_fraction", fraction);
        r.figure("leaves_planned", planned);
        r.figure("back", back);
        r.figure("back_failed", failed);
        r.figure("back_latency", &returns);
        r.figure("rss_per_period_bytes", &rss_ends);
        r.figure("rss_growth_per_period_bytes", growth);
        r.figure("users_held", held);
        r.figure("end_counts", &counts);
        r.figure("server_max_users", server_max);
        r.headline = format!(
            "RSS {} per {unit}, counts {}, {} errors",
            growth.map(|g| signed_bytes(g as i64)).unwrap_or("?".into()),
            if counts.right() { "right" } else { "NOT right" },
            r.errors.total()
        );
        Ok(r)
    }

    /// failover: `users` users chat in channels of `--group` at the seed rate for a baseline of
    /// `--seconds`; then the parent sends SIGKILL to `--kill-pid`, one node of a cluster, and the
    /// run goes on for `--after` seconds. Clients of that node lose their connection (counted as
    /// lost with the node, not as errors); channels whose home it was move to another node, and
    /// their survivors are told so. For each, the time from the kill until a line sent after it
    /// reaches a member again.
    fn failover(&self, users: Option<u32>) -> anyhow::Result<Report> {
        let o = &self.opts;
        if o.protocol != Protocol::Ringtalk {
            bail!("failover kills a node of a ringtalk cluster: it speaks ringtalk only");
        }
        let Some(pid) = o.kill_pid else {
            bail!("failover needs --kill-pid: the pid of the cluster node to kill");
        };
        if !sys::listens_on(pid, o.addr) {
            bail!(
                "pid {pid} holds no socket listening on port {} (or is not this user's): not a \
                 node of the server at {}; refusing to kill it",
                o.addr.port(),
                o.addr
            );
        }
        if o.group == 0 {
            bail!("failover needs channels: --group must be at least 1");
        }
        let users = users.unwrap_or(3_000).max(1);
        let base = self.seconds(10.0);
        let after = o.after.unwrap_or(15.0).max(0.1);
        let think = o.think.unwrap_or(10.0);
        let mut spec = Spec::new("failover", Mode::Chat, users, o.group);
        spec.windows = vec![
            Self::window("baseline", 0.0, base, 1.0 / think, false),
            Self::window("after", base, base + after, 1.0 / think, false),
        ];
        spec.grace_ms = self.grace_ms();
        spec.kill = Some(Kill {
            pid,
            at_ms: (base * 1e3) as u64,
        });
        let out = self.execute(&spec)?;
        let mut r = self.common(&spec, &out);
        let kill = out.kill.clone().unwrap_or_default();

        // The usual figures, over the baseline: every node still up.
        let before = window_totals(&out.reports, 0);
        let later = window_totals(&out.reports, 1);
        let chat_base = Latency::of(&merge_or_warn(&before.latency_parts));
        let chat_after = Latency::of(&merge_or_warn(&later.latency_parts));
        r.latency = chat_base.clone();
        r.deliveries = Some(Deliveries {
            sent: before.sent,
            expected: before.expected,
            delivered: before.delivered,
            per_second: before.delivered as f64 / base,
            dropped: before.dropped,
            late_sends: before.late_sends,
            own_lines_counted: true,
        });

        let lost: u32 = out.reports.iter().map(|w| w.lost_with_node).sum();
        let held: u32 = out.reports.iter().map(|w| w.held).sum();
        let mut channels: BTreeMap<u32, ChannelFailover> = BTreeMap::new();
        for part in out.reports.iter().flat_map(|w| &w.failover) {
            channels
                .entry(part.channel)
                .and_modify(|c| c.merge(part))
                .or_insert_with(|| part.clone());
        }
        let channels: Vec<ChannelFailover> = channels.into_values().collect();
        let f = failover_figures(kill.planned_ns, MOVE_SETTLE_NS, &channels);

        // RSS per user of the nodes sampled: their own clients only.
        if let Some(srv) = r.server.as_mut() {
            let theirs = out
                .setup
                .connected
                .saturating_sub(kill.node_connections.map_or(lost, |n| n as u32));
            srv.rss_per_user_bytes =
                (srv.loaded.rss_bytes as f64 - srv.before.rss_bytes as f64) / theirs.max(1) as f64;
        }
        if self.limits.server_pids.contains(&pid) {
            r.notes.push(format!(
                "pid {pid} (killed) is left out of the server figures: they are the other nodes'"
            ));
        }

        r.row(
            "workload",
            format!(
                "channels of {}, a {}-byte line every {think} s per user on average; {base} s \
                 baseline, SIGKILL to pid {pid}, then {after} s",
                spec.group, o.message_bytes
            ),
        );
        let late_ms = kill
            .sent_ns
            .map(|t| t.saturating_sub(kill.planned_ns) as f64 / 1e6);
        r.row(
            "kill",
            match (&kill.error, late_ms) {
                (Some(e), _) => format!("SIGKILL to pid {pid} failed: {e}"),
                (None, None) => format!("pid {pid} was not killed: the run ended first"),
                (None, Some(late)) => format!(
                    "SIGKILL to pid {pid} at +{base} s ({late:.2} ms after the planned instant); \
                     it held {} client connections after setup",
                    kill.node_connections
                        .map_or("an unknown number of".to_string(), |n| n.to_string())
                ),
            },
        );
        r.row(
            "lost with node",
            format!(
                "{lost} clients lost their connection at the kill (not errors); {held} others ran \
                 to the end without an error"
            ),
        );
        if let Some(n) = kill.node_connections.filter(|&n| n != lost as u64) {
            r.notes.push(format!(
                "the killed node held {n} connections on the port after setup, but {lost} clients \
                 were counted lost with it (a client is, when its connection closes or resets \
                 within {} s of the kill)",
                crate::plan::LOST_WINDOW_NS / 1_000_000_000
            ));
        }
        r.row("chat (after)", latency_line(&chat_after));
        r.row(
            "channels",
            format!(
                "{} with members, {} with members left after the kill; {} moved (their survivors \
                 got the notice): {} carried a line sent after the kill again, {} had no survivor \
                 speak {} s after the last notice, {} NEVER carried one again",
                f.channels,
                f.channels_with_survivors,
                f.channels_moved,
                f.channels_recovered,
                f.channels_unproven,
                MOVE_SETTLE_NS as f64 / 1e9,
                f.channels_not_recovered
            ),
        );
        let spread = |s: &Spread| {
            if s.count == 0 {
                "none".to_string()
            } else {
                format!(
                    "p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms over {} channels",
                    s.p50_ms, s.p99_ms, s.max_ms, s.count
                )
            }
        };
        r.row(
            "recovery",
            format!(
                "kill to the first delivery of a line sent after it: {}",
                spread(&f.recovery_ms)
            ),
        );
        r.row(
            "notice delay",
            format!(
                "kill to the first \"moved\" notice: {}",
                spread(&f.notice_delay_ms)
            ),
        );
        let share = |a: &AfterKill| {
            format!(
                "{} of {} ({:.1}%) from {} lines",
                a.delivered,
                a.expected,
                pct(a.delivered, a.expected),
                a.sent
            )
        };
        r.row(
            "after the kill",
            format!(
                "deliveries of lines the survivors sent after the kill: {}; in channels that \
                 moved {}; in the others {}; dropped {}",
                share(&f.after_kill),
                share(&f.after_kill_moved),
                share(&f.after_kill_others),
                later.dropped
            ),
        );
        if f.channels_moved == 0 {
            r.notes.push(
                "no channel moved: no survivor got a \"moved to another node\" notice, so no \
                 recovery was measured (was the killed process a node of this cluster?)"
                    .into(),
            );
        }
        r.notes.push(format!(
            "recovery includes waiting for a survivor to speak: with a line every {think} s each, \
             k survivors say one every {think}/k s on average"
        ));

        r.figure("think_s", think);
        r.figure("baseline_s", base);
        r.figure("after_s", after);
        r.figure("kill_pid", pid);
        r.figure("kill_late_ms", late_ms);
        r.figure("kill_error", &kill.error);
        r.figure("node_connections", kill.node_connections);
        r.figure("lost_with_node", lost);
        r.figure("users_held", held);
        r.figure("chat_latency_baseline", &chat_base);
        r.figure("chat_latency_after", &chat_after);
        r.figure("sent_after_kill", f.after_kill.sent);
        r.figure("expected_after_kill", f.after_kill.expected);
        r.figure("delivered_after_kill", f.after_kill.delivered);
        r.figure("dropped_after_kill", later.dropped);
        if let Ok(serde_json::Value::Object(map)) = serde_json::to_value(&f) {
            r.figures.extend(map);
        }

        let mut failures = Vec::new();
        if let Some(e) = &kill.error {
            failures.push(format!("SIGKILL to pid {pid} failed: {e}"));
        } else if kill.sent_ns.is_none() {
            failures.push(format!("pid {pid} was not killed"));
        }
        if f.channels_not_recovered > 0 {
            let some: Vec<String> = f.not_recovered.iter().map(|k| format!("#bc{k}")).collect();
            failures.push(format!(
                "{} channels moved and never carried a line sent after the kill, though survivors \
                 spoke more than {} s after the last notice (e.g. {})",
                f.channels_not_recovered,
                MOVE_SETTLE_NS as f64 / 1e9,
                some.join(", ")
            ));
        }
        r.headline = if f.channels_moved == 0 {
            format!("no channel moved; {lost} lost with the node")
        } else {
            format!(
                "{} moved, {} recovered, p99 {:.0} ms, max {:.0} ms; {lost} lost with the node",
                f.channels_moved, f.channels_recovered, f.recovery_ms.p99_ms, f.recovery_ms.max_ms
            )
        };
        if !failures.is_empty() {
            r.failed = Some(failures.join("; "));
        }
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
        let mut plans: Vec<Plan> = (0..n)
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
                    connect_concurrency: spec
                        .connect_concurrency
                        .map_or(o.connect_concurrency, |c| c.min(o.connect_concurrency)),
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
                    name_prefix: spec.name_prefix.to_string(),
                    own_addrs: spec.own_addrs,
                    reserved_seats: spec.reserved_seats,
                    looper_total: spec.loopers,
                    login_interval_ms: spec.login_interval_ms,
                    leave: spec.leave,
                    attack: None,
                    kill_at_ms: spec.kill.map(|k| k.at_ms),
                    tells: spec.tells,
                    tls: o.tls,
                }
            })
            .collect();
        // The attacker is a worker process of its own, with no chat clients.
        if let Some(a) = &spec.attack {
            let mut plan = plans[0].clone();
            plan.worker = n;
            plan.first = spec.users;
            plan.count = 0;
            plan.loopers = Vec::new();
            plan.attack = Some(a.clone());
            plans.push(plan);
        }
        let n = plans.len() as u32;

        // Every process of the server but the one failover kills (its figures would end with it).
        let pids: Vec<u32> = self
            .limits
            .server_pids
            .iter()
            .copied()
            .filter(|&p| spec.kill.map_or(true, |k| k.pid != p))
            .collect();
        let sample_all = || sys::proc_samples(&pids);
        let sample = || sample_all().map(|v| ProcSample::sum(&v));
        let before = sample_all();
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
        if !matches!(spec.mode, Mode::Storm | Mode::Handshakes) {
            eprintln!(
                "{}: setup done in {:.1} s: {} logged in, {} joined, errors: {}",
                spec.name,
                started.elapsed().as_secs_f64(),
                setup.logged_in,
                setup.joined,
                setup_errors.describe()
            );
        }
        let loaded = sample_all();
        let loaded_ns = now_ns();
        let node_connections = spec
            .kill
            .and_then(|k| sys::connections_held(k.pid, o.addr.port()));

        let probe_stop = Arc::new(AtomicBool::new(false));
        let mut probe_thread = None;
        if let Some(every) = spec.probe_every_ms {
            let (ready_tx, ready_rx) = mpsc::channel();
            probe_thread = Some(start_probe(
                o,
                fleet.tx.clone(),
                probe_stop.clone(),
                ready_tx,
                Duration::from_millis(every),
            ));
            match ready_rx.recv_timeout(Duration::from_secs_f64(o.timeout + 5.0)) {
                Ok(Ok(())) => {}
                Ok(Err(e)) => eprintln!("{}: the probe could not log in: {e}", spec.name),
                Err(_) => eprintln!("{}: the probe did not log in in time", spec.name),
            }
        }
        let log = o.server_log.clone();
        let log_len = || log.as_deref().and_then(sys::file_len);
        // Whether the server writes heartbeats (soak waits for one after the windows only if so).
        let mut heartbeats_seen = log
            .as_deref()
            .map(|p| !sys::heartbeats_in(p, 0, None).is_empty())
            .unwrap_or(false);

        let go_ns = now_ns() + spec.settle_ms * 1_000_000;
        fleet.broadcast(&Command::Go { at_ns: go_ns });
        let kill_abort = Arc::new(AtomicBool::new(false));
        let kill_thread = spec.kill.map(|k| {
            let planned = go_ns + k.at_ms * 1_000_000;
            let abort = kill_abort.clone();
            let name = spec.name;
            std::thread::spawn(move || kill_at(name, k.pid, planned, &abort))
        });
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
        // The server at each window's start and end: (time, sample); and the log's length then.
        let mut window_cpu: Vec<[Option<(u64, ProcSample)>; 2]> =
            vec![[None; 2]; spec.windows.len()];
        let mut window_log: Vec<[Option<u64>; 2]> = vec![[None; 2]; spec.windows.len()];
        let windows_end_ns = go_ns + plans[0].windows_end_ms() * 1_000_000;
        // Soak's end check: the log's length when the windows ended, and what came after.
        let mut end_log: Option<Option<u64>> = None;
        let mut end_probe = None;
        let mut end_heartbeat = None;
        let expected_members = setup.joined as u64;
        let stop = |fleet: &mut Fleet,
                    after: &mut Option<Vec<ProcSample>>,
                    end_ns: &mut u64,
                    stopped: &mut bool| {
            if !*stopped {
                *after = sample_all();
                *end_ns = now_ns();
                probe_stop.store(true, Ordering::Relaxed);
                fleet.broadcast(&Command::Stop);
                *stopped = true;
            }
        };
        while !fleet.all_finished() {
            let now = now_ns();
            if !stopped {
                if !pids.is_empty() && at_go.is_none() && now >= go_ns {
                    at_go = sample();
                }
                for (i, w) in spec.windows.iter().enumerate() {
                    for (edge, ms) in [w.start_ms, w.end_ms].into_iter().enumerate() {
                        if now >= go_ns + ms * 1_000_000 && window_log[i][edge].is_none() {
                            window_log[i][edge] = Some(log_len().unwrap_or(0));
                            window_cpu[i][edge] = sample().map(|s| (now_ns(), s));
                        }
                    }
                }
            }
            if spec.end_check && !stopped && now >= windows_end_ns {
                let from = *end_log.get_or_insert_with(|| {
                    heartbeats_seen |= log
                        .as_deref()
                        .is_some_and(|p| !sys::heartbeats_in(p, 0, None).is_empty());
                    log_len()
                });
                if end_heartbeat.is_none() && heartbeats_seen {
                    if let (Some(p), Some(from)) = (log.as_deref(), from) {
                        end_heartbeat = sys::heartbeats_in(p, from, None).into_iter().next();
                    }
                }
                if end_probe.is_some() && (end_heartbeat.is_some() || !heartbeats_seen) {
                    stop(&mut fleet, &mut after, &mut end_ns, &mut stopped);
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
                after = sample_all();
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
                        if matches!(spec.mode, Mode::Storm | Mode::Handshakes) {
                            stop(&mut fleet, &mut after, &mut end_ns, &mut stopped);
                        }
                    }
                }
                Msg::Probe(t, Ok(total)) => {
                    probe.push((t, total));
                    if spec.end_check && end_probe.is_none() && t >= windows_end_ns {
                        end_probe = Some((t, total));
                    }
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
        kill_abort.store(true, Ordering::Relaxed);
        if after.is_none() {
            after = sample_all();
            end_ns = now_ns();
        }
        let kill = spec.kill.map(|k| {
            let (sent_ns, error) = kill_thread
                .and_then(|t| t.join().ok())
                .flatten()
                .map_or((None, None), |(t, e)| (Some(t), e));
            KillOutcome {
                planned_ns: go_ns + k.at_ms * 1_000_000,
                sent_ns,
                error,
                node_connections,
            }
        });
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
                    [Some((t0, s0)), Some((t1, s1))] if t1 > t0 => {
                        Some((s1.cpu_s - s0.cpu_s) / ((t1 - t0) as f64 / 1e9))
                    }
                    _ => None,
                })
                .collect(),
            window_samples: window_cpu
                .iter()
                .map(|edges| [edges[0].map(|e| e.1), edges[1].map(|e| e.1)])
                .collect(),
            window_log: if log.is_some() {
                window_log
            } else {
                Vec::new()
            },
            end_probe,
            end_heartbeat,
            server: match (before, loaded, after) {
                (Some(before), Some(loaded), Some(after)) => Some(ServerSamples {
                    pids: pids.clone(),
                    before,
                    loaded,
                    after,
                }),
                _ => None,
            },
            kill,
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
        let server = out.server.as_ref().map(|samples| {
            let (before, loaded, after) = (
                ProcSample::sum(&samples.before),
                ProcSample::sum(&samples.loaded),
                ProcSample::sum(&samples.after),
            );
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
                pid: samples.pids[0],
                pids: samples.pids.clone(),
                per_pid: samples
                    .pids
                    .iter()
                    .enumerate()
                    .map(|(i, &pid)| PidSamples {
                        pid,
                        before: samples.before[i],
                        loaded: samples.loaded[i],
                        after: samples.after[i],
                    })
                    .collect(),
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
        let mut notices = Notices::default();
        for w in &out.reports {
            notices.add(&w.notices);
        }
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
        figures.insert(
            "cluster_notices".into(),
            serde_json::to_value(notices).unwrap_or_default(),
        );
        let mut rows = Vec::new();
        // In a cluster, the lines that crossed nodes on their own (the sender's node is in each
        // line, the receiver's in its greeting).
        let crossed = Latency::of(&merge_or_warn(&all.cross_parts));
        if crossed.count > 0 {
            rows.push((
                "latency (crossed nodes)".to_string(),
                format!(
                    "{}; {:.1}% of deliveries",
                    latency_line(&crossed),
                    pct(crossed.count, latency.count)
                ),
            ));
            figures.insert(
                "latency_cross_node".into(),
                serde_json::to_value(&crossed).unwrap_or_default(),
            );
        }
        if notices.total() > 0 {
            rows.push((
                "cluster notices".to_string(),
                format!(
                    "{} \"moved to another node\", {} \"chat with other nodes interrupted\", {} \"back\" (received by the clients)",
                    notices.moved, notices.interrupted, notices.back
                ),
            ));
        }
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
            failed: None,
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
    login_failed: u64,
    latency_parts: Vec<HistWire>,
    cross_parts: Vec<HistWire>,
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
        t.login_failed += w.login_failed;
        t.latency_parts.push(w.latency.clone());
        t.cross_parts.push(w.cross_latency.clone());
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

/// Abuse: each defence's hits summed over heartbeats (ringtalk's names, from its `Limit`); a
/// heartbeat counts the hits since the one before.
fn limit_hits(beats: &[BTreeMap<String, String>]) -> BTreeMap<String, u64> {
    ringtalk::defences::Limit::ALL
        .iter()
        .map(|l| {
            let n = beats
                .iter()
                .filter_map(|b| b.get(l.name()).and_then(|v| v.parse::<u64>().ok()))
                .sum();
            (l.name().to_string(), n)
        })
        .collect()
}

/// Abuse: how much the attack moved p99, in µs (positive: slower).
fn p99_change_us(baseline: &Latency, attack: &Latency) -> i64 {
    attack.p99_us as i64 - baseline.p99_us as i64
}

/// A signed duration in µs as a short figure (`+0.12 ms`, `-1.50 ms`).
fn signed_ms(us: i64) -> String {
    let sign = if us < 0 { "-" } else { "+" };
    format!("{sign}{}", ms(us.unsigned_abs()))
}

/// A signed byte count (`+1.2 MB`, `-300.0 kB`).
fn signed_bytes(b: i64) -> String {
    let sign = if b < 0 { "-" } else { "+" };
    format!("{sign}{}", bytes(b.unsigned_abs() as f64))
}

/// Abuse: the guesses with `not_made` filled in (those the attacker never got to, also when it was
/// stopped mid-guess).
fn guess_totals(a: &AttackReport) -> crate::plan::GuessCounts {
    let mut g = a.guesses.clone();
    let ended = g.answered + g.throttled + g.no_connection + g.failed;
    g.not_made = g.planned.saturating_sub(ended);
    g
}

/// Abuse: the chat users on the paste's channel (the first, one seat of which the paster takes).
fn paste_members(group: u32, users: u32) -> u32 {
    group.saturating_sub(1).min(users)
}

/// Soak: RSS growth per period after the first (warm-up) period: the least-squares slope of the
/// RSS at each period's end, over every period but the first. `None` with fewer than two points.
fn growth_per_period(rss_ends: &[u64]) -> Option<f64> {
    let pts: Vec<(f64, f64)> = rss_ends
        .iter()
        .enumerate()
        .skip(1)
        .map(|(i, &b)| (i as f64, b as f64))
        .collect();
    if pts.len() < 2 {
        return None;
    }
    let n = pts.len() as f64;
    let mx = pts.iter().map(|p| p.0).sum::<f64>() / n;
    let my = pts.iter().map(|p| p.1).sum::<f64>() / n;
    let sxy: f64 = pts.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    let sxx: f64 = pts.iter().map(|p| (p.0 - mx) * (p.0 - mx)).sum();
    Some(sxy / sxx)
}

/// Soak: the server's counts once the periods are over, beside what they should be.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
struct EndCounts {
    /// Chat clients that ran to the end: each on its channel, connected and logged in.
    held: u64,
    /// `/list`'s member total (the probe's first answer after the periods).
    members_listed: Option<u64>,
    /// From the server's first heartbeat after the periods (with `--server-log`).
    connections: Option<u64>,
    logged_in: Option<u64>,
    members: Option<u64>,
}

impl EndCounts {
    /// Whether every count there is is right: members = held; connections = logged in = held and
    /// the probe. At least one count is needed.
    fn right(&self) -> bool {
        let conns = self.held + 1;
        self.members_listed.is_some()
            && self.members_listed == Some(self.held)
            && self.members.map_or(true, |m| m == self.held)
            && self.connections.map_or(true, |c| c == conns)
            && self.logged_in.map_or(true, |l| l == conns)
    }

    fn describe(&self) -> String {
        let show = |v: Option<u64>| v.map_or("-".to_string(), |v| v.to_string());
        let beat = if self.connections.is_some() {
            format!(
                "; heartbeat: connections {}, logged in {}, members {} (want {}, {}, {})",
                show(self.connections),
                show(self.logged_in),
                show(self.members),
                self.held + 1,
                self.held + 1,
                self.held
            )
        } else {
            "; no heartbeat after the end (give --server-log, server with --stats-interval 1..10)"
                .to_string()
        };
        format!(
            "{}: /list member total {} (want {}, the users held){beat}",
            if self.right() { "right" } else { "NOT right" },
            show(self.members_listed),
            self.held
        )
    }
}

/// Soak: the end counts from the probe's total and the heartbeat's fields.
fn end_counts(
    held: u64,
    members_listed: Option<u64>,
    heartbeat: &Option<BTreeMap<String, String>>,
) -> EndCounts {
    let field = |k: &str| {
        heartbeat
            .as_ref()
            .and_then(|h| h.get(k))
            .and_then(|v| v.parse().ok())
    };
    EndCounts {
        held,
        members_listed,
        connections: field("connections"),
        logged_in: field("logged_in"),
        members: field("members"),
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

/// Failover: sleeps until `planned_ns` and sends SIGKILL to `pid`, unless `abort` is set first.
/// Returns when kill(2) returned, and why it failed if it did; `None` if aborted.
fn kill_at(
    name: &str,
    pid: u32,
    planned_ns: u64,
    abort: &AtomicBool,
) -> Option<(u64, Option<String>)> {
    // Coarse sleeps that watch `abort`, then one precise sleep on the clock itself.
    const NEAR_NS: u64 = 20_000_000;
    loop {
        if abort.load(Ordering::Relaxed) {
            return None;
        }
        let now = now_ns();
        if now + NEAR_NS >= planned_ns {
            break;
        }
        std::thread::sleep(Duration::from_nanos(
            (planned_ns - NEAR_NS - now).min(50_000_000),
        ));
    }
    sys::sleep_until_ns(planned_ns);
    if abort.load(Ordering::Relaxed) {
        return None;
    }
    let result = sys::sigkill(pid);
    let sent = now_ns();
    match &result {
        Ok(()) => eprintln!(
            "{name}: SIGKILL sent to pid {pid}, {:.2} ms after the planned instant",
            sent.saturating_sub(planned_ns) as f64 / 1e6
        ),
        Err(e) => eprintln!("{name}: SIGKILL to pid {pid} failed: {e}"),
    }
    Some((sent, result.err().map(|e| e.to_string())))
}

/// Failover: how long after the last member of a moved channel was told that its survivors' lines
/// must get through. Each node takes a silent node for gone on its own one-second tick (ringtalk's
/// announcements), so the nodes learn of a move up to a second apart, and a line sent meanwhile may
/// still go to the dead home.
const MOVE_SETTLE_NS: u64 = 1_000_000_000;

/// Failover: a spread of per-channel times, in ms (nearest-rank percentiles).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
struct Spread {
    count: u64,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
}

impl Spread {
    fn of(mut ns: Vec<u64>) -> Spread {
        if ns.is_empty() {
            return Spread::default();
        }
        ns.sort_unstable();
        let at = |q: f64| {
            let rank = (q * ns.len() as f64).ceil() as usize;
            ns[rank.clamp(1, ns.len()) - 1] as f64 / 1e6
        };
        Spread {
            count: ns.len() as u64,
            p50_ms: at(0.50),
            p99_ms: at(0.99),
            max_ms: at(1.0),
        }
    }
}

/// Failover: lines the surviving members sent at or after the kill, and their deliveries
/// (expected: each line at every survivor of its channel, the sender too).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
struct AfterKill {
    sent: u64,
    expected: u64,
    delivered: u64,
}

impl AfterKill {
    fn add(&mut self, c: &ChannelFailover) {
        self.sent += c.sent_after;
        self.expected += c.sent_after * c.survivors() as u64;
        self.delivered += c.delivered_after;
    }
}

/// Failover: what the channels went through, from the workers' merged parts.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
struct FailoverFigures {
    /// Channels with members after setup.
    channels: u64,
    /// Of those, with at least one member left after the kill.
    channels_with_survivors: u64,
    /// Channels whose survivors got the `moved to another node` notice after the kill.
    channels_moved: u64,
    /// Moved channels that delivered a line sent after the kill.
    channels_recovered: u64,
    /// Moved channels that delivered none, though a survivor spoke `settle` after the last
    /// member was told: the run fails.
    channels_not_recovered: u64,
    /// Moved channels that delivered none, and no survivor spoke that late: nothing to show either
    /// way.
    channels_unproven: u64,
    /// The first few channels (`k` of `bc<k>`) that did not recover.
    not_recovered: Vec<u32>,
    /// Moved and recovered channels: kill to the first delivery of a line sent after the kill.
    recovery_ms: Spread,
    /// Moved channels: kill to the first notice.
    notice_delay_ms: Spread,
    /// Every channel (in the JSON as `sent_after_kill`, `expected_after_kill` and
    /// `delivered_after_kill`, so that no figure is an object counted twice beside its parts);
    /// the moved ones; the others.
    #[serde(skip)]
    after_kill: AfterKill,
    after_kill_moved: AfterKill,
    after_kill_others: AfterKill,
}

/// Failover: the figures of the channels (merged over workers) for a kill at `kill_ns`. A channel
/// *moved* if a survivor got the notice after the kill; it *recovered* if a line sent after the
/// kill reached any member, and the recovery time runs from the kill to the first such delivery.
/// One that did not is a failure only if a survivor spoke `settle_ns` or more after the last of
/// its members was told (before, its nodes may not all know the new home yet); else unproven.
fn failover_figures(kill_ns: u64, settle_ns: u64, channels: &[ChannelFailover]) -> FailoverFigures {
    let mut f = FailoverFigures::default();
    let mut recovery = Vec::new();
    let mut notice = Vec::new();
    for c in channels.iter().filter(|c| c.joined > 0) {
        f.channels += 1;
        f.channels_with_survivors += (c.survivors() > 0) as u64;
        f.after_kill.add(c);
        let Some(told) = c.notice_ns.filter(|&t| t >= kill_ns) else {
            f.after_kill_others.add(c);
            continue;
        };
        f.after_kill_moved.add(c);
        f.channels_moved += 1;
        notice.push(told - kill_ns);
        match c.first_after_ns.filter(|&t| t >= kill_ns) {
            Some(t) => {
                f.channels_recovered += 1;
                recovery.push(t - kill_ns);
            }
            None if c
                .last_said_ns
                .zip(c.last_notice_ns)
                .is_some_and(|(said, told)| said >= told + settle_ns) =>
            {
                f.channels_not_recovered += 1;
                if f.not_recovered.len() < 10 {
                    f.not_recovered.push(c.channel);
                }
            }
            None => f.channels_unproven += 1,
        }
    }
    f.recovery_ms = Spread::of(recovery);
    f.notice_delay_ms = Spread::of(notice);
    f
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

/// The probe of churn and soak: one more client, logged in as `bprobe`, asking for the member totals
/// `every` so often; each answer goes to the parent's queue.
fn start_probe(
    opts: &Opts,
    tx: mpsc::Sender<Msg>,
    stop: Arc<AtomicBool>,
    ready: mpsc::Sender<Result<(), String>>,
    every: Duration,
) -> std::thread::JoinHandle<()> {
    let (addr, protocol, password, tls) =
        (opts.addr, opts.protocol, opts.password.clone(), opts.tls);
    let timeout = Duration::from_secs_f64(opts.timeout);
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
                let mut c = Conn::connect(
                    addr,
                    None,
                    None,
                    "bprobe".into(),
                    protocol,
                    Profile::Raw,
                    tls,
                )
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
                tokio::time::sleep(every).await;
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

    fn channel(k: u32, joined: u32, lost: u32) -> ChannelFailover {
        ChannelFailover {
            channel: k,
            joined,
            lost,
            ..ChannelFailover::default()
        }
    }

    #[test]
    fn failover_recovery_counts_from_the_kill_to_the_first_line_after_it() {
        let kill = 10_000_000_000;
        let ms = |n: u64| kill + n * 1_000_000;
        // Moved, recovered 4.2 s after the kill; 2 of 6 members lost; 3 lines after, 8 deliveries.
        let mut a = channel(0, 6, 2);
        a.notice_ns = Some(ms(3_500));
        a.first_after_ns = Some(ms(4_200));
        a.sent_after = 3;
        a.delivered_after = 8;
        // Moved, recovered after 6 s.
        let mut b = channel(1, 6, 1);
        b.notice_ns = Some(ms(3_900));
        b.first_after_ns = Some(ms(6_000));
        b.sent_after = 1;
        b.delivered_after = 5;
        // Moved, and a survivor spoke well after the last member was told, but nothing arrived:
        // not recovered.
        let mut c = channel(2, 6, 3);
        c.notice_ns = Some(ms(3_700));
        c.last_notice_ns = Some(ms(4_000));
        c.sent_after = 2;
        c.last_said_ns = Some(ms(5_000));
        // Moved; its last line after the kill went less than the settling time after the last
        // notice (another node may not have known yet): unproven.
        let mut d = channel(3, 6, 5);
        d.notice_ns = Some(ms(3_600));
        d.last_notice_ns = Some(ms(3_600));
        d.sent_after = 1;
        d.last_said_ns = Some(ms(4_599));
        // Not moved (its home lived); every line arrived. A notice from before the kill is not
        // this kill's.
        let mut e = channel(4, 6, 0);
        e.notice_ns = Some(kill - 1);
        e.first_after_ns = Some(ms(3));
        e.sent_after = 2;
        e.delivered_after = 12;
        // Every member lost; and a channel nobody joined.
        let g = channel(5, 6, 6);
        let h = channel(6, 0, 0);
        let f = failover_figures(kill, 1_000_000_000, &[a, b, c, d, e, g, h]);
        assert_eq!(f.channels, 6);
        assert_eq!(f.channels_with_survivors, 5);
        assert_eq!(f.channels_moved, 4);
        assert_eq!(f.channels_recovered, 2);
        assert_eq!(f.channels_not_recovered, 1);
        assert_eq!(f.not_recovered, vec![2]);
        assert_eq!(f.channels_unproven, 1);
        assert_eq!(f.recovery_ms.count, 2);
        assert_eq!(f.recovery_ms.p50_ms, 4_200.0);
        assert_eq!(f.recovery_ms.max_ms, 6_000.0);
        assert_eq!(f.notice_delay_ms.count, 4);
        assert_eq!(f.notice_delay_ms.p50_ms, 3_600.0);
        assert_eq!(f.notice_delay_ms.max_ms, 3_900.0);
        // Expected: each line at every survivor (the sender too).
        assert_eq!(
            f.after_kill_moved,
            AfterKill {
                sent: 7,
                expected: 3 * 4 + 5 + 2 * 3 + 1,
                delivered: 13
            }
        );
        assert_eq!(
            f.after_kill_others,
            AfterKill {
                sent: 2,
                expected: 12,
                delivered: 12
            }
        );
        assert_eq!(f.after_kill.sent, 9);
        assert_eq!(f.after_kill.expected, 36);
        assert_eq!(f.after_kill.delivered, 25);
    }

    #[test]
    fn spreads_use_nearest_rank() {
        assert_eq!(Spread::of(vec![]), Spread::default());
        let s = Spread::of((1..=100).rev().map(|n| n * 1_000_000).collect());
        assert_eq!(
            (s.count, s.p50_ms, s.p99_ms, s.max_ms),
            (100, 50.0, 99.0, 100.0)
        );
        let one = Spread::of(vec![2_500_000]);
        assert_eq!((one.p50_ms, one.p99_ms, one.max_ms), (2.5, 2.5, 2.5));
    }

    #[test]
    fn rss_growth_skips_the_warm_up_period() {
        // A big first period, then 1 MB a period.
        let rss = [50_000_000, 60_000_000, 61_000_000, 62_000_000, 63_000_000];
        let g = growth_per_period(&rss).unwrap();
        assert!((g - 1_000_000.0).abs() < 1.0, "{g}");
        // Flat after warm-up, with noise that cancels.
        let flat = [40_000_000, 50_000_000, 50_100_000, 49_900_000, 50_000_000];
        assert!(growth_per_period(&flat).unwrap().abs() < 100_000.0);
        assert_eq!(growth_per_period(&rss[..2]), None);
        assert_eq!(growth_per_period(&[]), None);
    }

    #[test]
    fn soak_counts_are_right_only_when_every_count_agrees() {
        let mut beat = BTreeMap::new();
        beat.insert("connections".to_string(), "101".to_string());
        beat.insert("logged_in".to_string(), "101".to_string());
        beat.insert("members".to_string(), "100".to_string());
        let c = end_counts(100, Some(100), &Some(beat.clone()));
        assert!(c.right(), "{c:?}");
        assert!(c.describe().starts_with("right"));
        assert!(end_counts(100, Some(100), &None).right());
        assert!(!end_counts(100, None, &None).right());
        assert!(!end_counts(100, Some(101), &None).right());
        beat.insert("connections".to_string(), "103".to_string());
        let c = end_counts(100, Some(100), &Some(beat));
        assert!(!c.right());
        assert!(c.describe().contains("connections 103"));
    }

    #[test]
    fn limit_hits_add_up_over_heartbeats() {
        let beat = |conn_rate: &str, flood: &str| {
            let mut b = BTreeMap::new();
            b.insert("conn_rate".to_string(), conn_rate.to_string());
            b.insert("flood".to_string(), flood.to_string());
            b.insert("connections".to_string(), "100".to_string());
            b
        };
        let hits = limit_hits(&[beat("74", "0"), beat("3", "1975")]);
        assert_eq!(hits["conn_rate"], 77);
        assert_eq!(hits["flood"], 1975);
        assert_eq!(hits["conn_cap"], 0);
        assert!(!hits.contains_key("connections"));
    }

    #[test]
    fn abuse_figures() {
        let mut a = AttackReport::default();
        a.guesses.planned = 1000;
        a.guesses.answered = 6;
        a.guesses.throttled = 900;
        a.guesses.no_connection = 50;
        a.guesses.failed = 4;
        assert_eq!(guess_totals(&a).not_made, 40);
        a.guesses.throttled = 2000;
        assert_eq!(guess_totals(&a).not_made, 0);
        let base = Latency {
            p99_us: 900,
            ..Latency::default()
        };
        let attack = Latency {
            p99_us: 1_250,
            ..Latency::default()
        };
        assert_eq!(p99_change_us(&base, &attack), 350);
        assert_eq!(signed_ms(350), "+0.35 ms");
        assert_eq!(signed_ms(-1_500), "-1.50 ms");
        assert_eq!(signed_bytes(-300_000), "-300.0 kB");
        assert_eq!(paste_members(6, 1000), 5);
        assert_eq!(paste_members(6, 3), 3);
        assert_eq!(paste_members(0, 10), 0);
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
