//! A worker process: up to 15,000 clients on one single-threaded tokio runtime.
//!
//! The parent re-executes the bench as `ringtalk-bench worker`, writes a [`Plan`] line to its stdin and
//! later [`Command`]s; the worker answers on stdout with [`Report`] lines. Clients are local tasks
//! sharing one [`Ctx`] through `Rc`, so recording a delivery is a `RefCell` borrow, not a lock.
//!
//! Life of a worker: spawn every client; each sets up (connect, log in, join) under a semaphore of
//! `connect_concurrency`; when the last has finished, report `Ready`; wait for `Go`; run the mode;
//! report `Done` once every client has ended (naturally, or on `Stop`).

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, Write};
use std::rc::Rc;

use hdrhistogram::Histogram;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use tokio::sync::{watch, Notify, Semaphore};
use tokio::task::LocalSet;
use tokio::time::{sleep_until, timeout_at, Duration, Instant};

use crate::attack::Attack;
use crate::conn::Protocol;
use crate::conn::{Conn, Event, LoginInfo};
use crate::plan::{
    ChannelFailover, Command, Fanout, LeaveAt, Mode, Notices, Plan, Report, SetupReport, Window,
    WindowReport, WorkerReport, LOST_WINDOW_NS,
};
use crate::ringtalk::{Notice, Prompt};
use crate::stats::{new_hist, record, ClientError, ErrorKind, Errors, HistWire};
use crate::sys::{instant_at, now_ns};
use crate::timer::Timer;

/// Error texts kept for the report.
const MAX_SAMPLES: usize = 8;

/// Sends more than this far behind schedule count as late (the bench could not keep up). The
/// schedule goes on regardless (open loop), and their latency counts from the schedule.
const LATE_NS: u64 = 100_000_000;

/// Where the worker is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Setup,
    Go(u64),
    Stop,
}

/// One window's running totals.
struct WindowAcc {
    sent: u64,
    expected: u64,
    delivered: u64,
    dropped: u64,
    late_sends: u64,
    latency: Histogram<u64>,
    /// Of `latency`, the lines that crossed from another cluster node.
    cross_latency: Histogram<u64>,
    logins: u64,
    login_latency: Histogram<u64>,
    login_failed: u64,
}

impl WindowAcc {
    fn new() -> WindowAcc {
        WindowAcc {
            sent: 0,
            expected: 0,
            delivered: 0,
            dropped: 0,
            late_sends: 0,
            latency: new_hist(),
            cross_latency: new_hist(),
            logins: 0,
            login_latency: new_hist(),
            login_failed: 0,
        }
    }

    fn report(&self) -> WindowReport {
        WindowReport {
            sent: self.sent,
            expected: self.expected,
            delivered: self.delivered,
            dropped: self.dropped,
            late_sends: self.late_sends,
            latency: HistWire::encode(&self.latency),
            cross_latency: HistWire::encode(&self.cross_latency),
            logins: self.logins,
            login_latency: HistWire::encode(&self.login_latency),
            login_failed: self.login_failed,
        }
    }
}

/// Everything the worker's clients count.
struct Acc {
    setup: SetupReport,
    windows: Vec<WindowAcc>,
    errors: Errors,
    samples: Vec<String>,
    greet: Histogram<u64>,
    ready: Histogram<u64>,
    greeted: u32,
    logged_in: u32,
    rejoined: u32,
    held: u32,
    busy: u64,
    full_retries: u64,
    foreign: u64,
    complaints: u64,
    fanout: HashMap<u64, (u64, u64)>,
    paste_received: u64,
    flood_dropped: u64,
    notices: Notices,
    lost_with_node: u32,
    /// Failover: per channel `bc<k>` with members here.
    failover: BTreeMap<u32, ChannelFailover>,
}

impl Acc {
    fn sample(&mut self, e: &ClientError) {
        if self.samples.len() < MAX_SAMPLES && !self.samples.contains(&e.detail) {
            self.samples.push(e.detail.clone());
        }
    }

    /// Counts a cluster's notice.
    fn notice(&mut self, notice: Notice) {
        match notice {
            Notice::Moved => self.notices.moved += 1,
            Notice::Interrupted => self.notices.interrupted += 1,
            Notice::Back => self.notices.back += 1,
        }
    }

    /// Failover: channel `k`'s part here.
    fn channel(&mut self, k: u32) -> &mut ChannelFailover {
        self.failover.entry(k).or_insert_with(|| ChannelFailover {
            channel: k,
            ..ChannelFailover::default()
        })
    }
}

/// Failover: what one chat client said at or after the kill, added to its channel's part when the
/// client ends, unless it was lost with the node.
#[derive(Clone, Copy, Debug, Default)]
struct Spoke {
    after_kill: u64,
    /// The send (scheduled) time of the last of them.
    last_ns: Option<u64>,
}

/// What every client task shares.
struct Ctx {
    plan: Plan,
    phase: watch::Receiver<Phase>,
    acc: RefCell<Acc>,
    setup_permits: Semaphore,
    setup_left: Cell<u32>,
    setup_done: Notify,
    milestone_left: Cell<u32>,
    milestone: Notify,
    started: Instant,
    /// The send schedule's timer, precise to the microsecond (see [`crate::timer`]).
    timer: Rc<Timer>,
    /// The attacker, if this worker is it (abuse).
    attack: Option<Rc<Attack>>,
}

impl Ctx {
    fn timeout(&self) -> Duration {
        Duration::from_millis(self.plan.timeout_ms)
    }

    fn go_ns(&self) -> Option<u64> {
        match *self.phase.borrow() {
            Phase::Go(t) => Some(t),
            _ => None,
        }
    }

    /// Failover: when the node is killed (CLOCK_MONOTONIC ns), once go is known.
    fn kill_ns(&self) -> Option<u64> {
        Some(self.go_ns()? + self.plan.kill_at_ms? * 1_000_000)
    }

    /// Failover: whether a client's end was the killed node's: its connection closed or reset
    /// within [`LOST_WINDOW_NS`] of the kill.
    fn lost_with_node(&self, e: &ClientError, at_ns: u64) -> bool {
        matches!(e.kind, ErrorKind::Closed | ErrorKind::Reset)
            && self
                .kill_ns()
                .is_some_and(|k| (k..k + LOST_WINDOW_NS).contains(&at_ns))
    }

    /// Marks one client's setup as finished.
    fn setup_finished(&self) {
        let left = self.setup_left.get().saturating_sub(1);
        self.setup_left.set(left);
        if left == 0 {
            self.setup_done.notify_one();
        }
    }

    /// Marks one client as past (or out of) the mode's milestone.
    fn milestone_passed(&self) {
        let left = self.milestone_left.get().saturating_sub(1);
        self.milestone_left.set(left);
        if left == 0 {
            self.milestone.notify_one();
        }
    }

    fn setup_error(&self, e: &ClientError) {
        let mut acc = self.acc.borrow_mut();
        acc.setup.errors.count(e.kind);
        acc.sample(e);
    }

    fn run_error(&self, e: &ClientError) {
        let mut acc = self.acc.borrow_mut();
        acc.errors.count(e.kind);
        acc.sample(e);
    }

    /// The window a time (ns after go) falls in.
    fn window_of(&self, since_go_ns: u64) -> Option<usize> {
        let ms = since_go_ns / 1_000_000;
        self.plan
            .windows
            .iter()
            .position(|w| w.start_ms <= ms && ms < w.end_ms)
    }

    /// Waits for the go time; `None` if the worker is stopped first.
    async fn wait_go(&self) -> Option<u64> {
        let mut phase = self.phase.clone();
        loop {
            let now = *phase.borrow_and_update();
            match now {
                Phase::Go(t) => {
                    sleep_until(instant_at(t)).await;
                    return Some(t);
                }
                Phase::Stop => return None,
                Phase::Setup => {}
            }
            if phase.changed().await.is_err() {
                return None;
            }
        }
    }

    /// Records what a received line means for the measurement.
    fn on_line(&self, conn: &mut Conn, line: &str) -> Result<(), ClientError> {
        let now = now_ns();
        let event = conn.classify(line);
        let Some(go) = self.go_ns() else {
            return Ok(());
        };
        let kill = self.kill_ns();
        let mut acc = self.acc.borrow_mut();
        match event {
            Event::Delivery {
                sent_ns,
                sender,
                crossed,
            } => {
                if sent_ns < go {
                    return Ok(());
                }
                let us = now.saturating_sub(sent_ns) / 1000;
                if self.plan.mode == Mode::Bigroom {
                    let e = acc.fanout.entry(sent_ns).or_insert((0, 0));
                    e.0 += 1;
                    e.1 = e.1.max(us);
                }
                if let Some(k) = kill
                    .filter(|&k| sent_ns >= k)
                    .and_then(|_| self.plan.channel_index_of(sender))
                {
                    let c = acc.channel(k);
                    c.first_after_ns = Some(c.first_after_ns.map_or(now, |t| t.min(now)));
                    c.delivered_after += 1;
                }
                if let Some(w) = self.window_of(sent_ns - go) {
                    let w = &mut acc.windows[w];
                    w.delivered += 1;
                    record(&mut w.latency, us);
                    if crossed {
                        record(&mut w.cross_latency, us);
                    }
                }
            }
            Event::Dropped(n) => {
                if let Some(w) = self.window_of(now.saturating_sub(go)) {
                    acc.windows[w].dropped += n;
                }
            }
            Event::FloodDropped(n) => acc.flood_dropped += n,
            Event::Notice(notice, channel) => {
                acc.notice(notice);
                if let Some(k) =
                    channel.filter(|_| notice == Notice::Moved && kill.is_some_and(|k| now >= k))
                {
                    let c = acc.channel(k);
                    c.notice_ns = Some(c.notice_ns.map_or(now, |t| t.min(now)));
                    c.last_notice_ns = Some(c.last_notice_ns.map_or(now, |t| t.max(now)));
                }
            }
            Event::Paste => acc.paste_received += 1,
            Event::Foreign => acc.foreign += 1,
            Event::Complaint => {
                acc.complaints += 1;
                let text = conn.last_complaint.take().unwrap_or_default();
                drop(acc);
                self.run_error(&ClientError::new(
                    ErrorKind::Protocol,
                    format!("server complained: {text}"),
                ));
            }
            Event::Closing => {
                return Err(ClientError::new(
                    ErrorKind::Closed,
                    "server said it is closing",
                ))
            }
            Event::Noise => {}
        }
        Ok(())
    }
}

/// How far [`open`] got.
#[derive(Clone, Copy, Debug, Default)]
struct Opened {
    connected: bool,
    logged_in: bool,
    /// Filled in as the login goes, so a greeting and busy answers count even if it then fails.
    login: LoginInfo,
    full: u32,
}

/// Connection `id` of the plan, from its source address, as `name`, connected (and for TLS,
/// handshaken) by `deadline`.
async fn connect_by(
    ctx: &Ctx,
    id: u32,
    rcvbuf: Option<u32>,
    name: String,
    deadline: Instant,
) -> Result<Conn, ClientError> {
    let plan = &ctx.plan;
    let connect = Conn::connect(
        plan.addr,
        Some(plan.source(id)),
        rcvbuf,
        name,
        plan.protocol,
        plan.client,
        plan.tls,
    );
    timeout_at(deadline, connect)
        .await
        .map_err(|_| ClientError::new(ErrorKind::Timeout, "connect: no answer in time"))?
}

/// Connects, logs in as `name` and joins `channel`, all before `timeout` runs out.
async fn open(
    ctx: &Ctx,
    id: u32,
    name: String,
    channel: Option<&str>,
    rcvbuf: Option<u32>,
    progress: &mut Opened,
) -> Result<Conn, ClientError> {
    let plan = &ctx.plan;
    let deadline = Instant::now() + ctx.timeout();
    let mut conn = connect_by(ctx, id, rcvbuf, name, deadline).await?;
    progress.connected = true;
    conn.login(&plan.password, deadline, &mut progress.login)
        .await?;
    progress.logged_in = true;
    if let Some(channel) = channel {
        progress.full = conn.join(channel, deadline).await?;
    }
    Ok(conn)
}

/// Adds a setup attempt's progress to the setup counters.
fn count_setup(ctx: &Ctx, p: &Opened, joined: bool) {
    let mut acc = ctx.acc.borrow_mut();
    let s = &mut acc.setup;
    s.connected += p.connected as u32;
    s.logged_in += p.logged_in as u32;
    s.joined += joined as u32;
    s.created += (p.logged_in && p.login.created) as u32;
    s.busy += p.login.busy as u64;
    s.full_retries += p.full as u64;
}

/// A chat client: set up, then the mode's work.
async fn chat_client(ctx: Rc<Ctx>, id: u32) {
    let slow = ctx.plan.is_slow(id);
    let channel = ctx.plan.channel(id);
    let rcvbuf = slow.then_some(ctx.plan.slow_rcvbuf);
    let mut progress = Opened::default();
    let opened = {
        let _permit = ctx.setup_permits.acquire().await;
        open(
            &ctx,
            id,
            ctx.plan.name(id),
            Some(&channel),
            rcvbuf,
            &mut progress,
        )
        .await
    };
    count_setup(&ctx, &progress, opened.is_ok());
    if let Err(e) = &opened {
        ctx.setup_error(e);
    }
    // Failover: each channel's members, for the lines expected after the kill.
    let failover = ctx
        .plan
        .kill_at_ms
        .and(ctx.plan.channel_index_of(id))
        .filter(|_| opened.is_ok());
    if let Some(k) = failover {
        ctx.acc.borrow_mut().channel(k).joined += 1;
    }
    ctx.setup_finished();
    let Ok(mut conn) = opened else {
        ctx.milestone_passed();
        return;
    };
    let Some(go) = ctx.wait_go().await else {
        return;
    };
    let mut spoke = Spoke::default();
    let result = match ctx.plan.mode {
        Mode::Chat => chat(&ctx, conn, id, &channel, slow, go, &mut spoke).await,
        Mode::Bigroom => bigroom(&ctx, &mut conn, id, &channel, go).await,
        Mode::Churn => churn(&ctx, conn, id, &channel, go).await,
        Mode::Storm | Mode::Handshakes => unreachable!("storm and handshake clients connect at go"),
    };
    let lost = match &result {
        Err(e) => ctx.lost_with_node(e, now_ns()),
        Ok(()) => false,
    };
    let mut acc = ctx.acc.borrow_mut();
    if let Some(k) = failover {
        let c = acc.channel(k);
        if lost {
            // What it wrote after the kill went to a dead node: not expected anywhere.
            c.lost += 1;
        } else {
            c.sent_after += spoke.after_kill;
            c.last_said_ns = c.last_said_ns.max(spoke.last_ns);
        }
    }
    match result {
        Ok(()) => acc.held += 1,
        Err(_) if lost => acc.lost_with_node += 1,
        Err(e) => {
            drop(acc);
            ctx.run_error(&e);
        }
    }
}

/// The next send time (seconds after go) at or after `from`, for exponential think times at each
/// window's rate; `None` once the windows are over.
fn next_send(from: f64, windows: &[Window], rng: &mut SmallRng) -> Option<f64> {
    let mut t = from;
    loop {
        let w = windows.iter().find(|w| t < w.end_ms as f64 / 1e3)?;
        t = t.max(w.start_ms as f64 / 1e3);
        let end = w.end_ms as f64 / 1e3;
        if w.rate <= 0.0 {
            t = end;
            continue;
        }
        let u: f64 = rng.gen_range(f64::EPSILON..1.0);
        let dt = -u.ln() / w.rate;
        if t + dt < end {
            return Some(t + dt);
        }
        // Memoryless: start again at the window's end with the next window's rate.
        t = end;
    }
}

/// Reads everything buffered and records it.
async fn drain(ctx: &Ctx, conn: &mut Conn) -> Result<(), ClientError> {
    while let Some(line) = conn.next_line() {
        ctx.on_line(conn, &line)?;
    }
    conn.flush().await
}

/// Chats on the windows' schedule until the last window and the grace are over, or stop. With a
/// leave schedule (soak), leaves and comes back at its times. Failover: counts in `spoke` the lines
/// sent at or after the kill.
async fn chat(
    ctx: &Ctx,
    mut conn: Conn,
    id: u32,
    channel: &str,
    slow: bool,
    go: u64,
    spoke: &mut Spoke,
) -> Result<(), ClientError> {
    let plan = &ctx.plan;
    let kill = ctx.kill_ns().unwrap_or(u64::MAX);
    let leaves: Vec<LeaveAt> = plan.leave.map(|l| l.schedule(id)).unwrap_or_default();
    let mut leaves = leaves.into_iter();
    let mut next_leave = leaves.next();
    let leave_at = |l: Option<LeaveAt>| instant_at(go + l.map_or(0, |l| l.at_ms) * 1_000_000);
    let leave = sleep_until(leave_at(next_leave));
    tokio::pin!(leave);
    let stop_at = instant_at(go + (plan.windows_end_ms() + plan.grace_ms) * 1_000_000);
    let mut rng = SmallRng::seed_from_u64(go ^ (id as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15));
    let expected = plan.expected_readers(id);
    let mut next = next_send(0.0, &plan.windows, &mut rng);
    let mut phase = ctx.phase.clone();
    // The timers and the stop signal live across the loop: made afresh on every pass, each would
    // cost a registration per read.
    let stopped = phase.wait_for(|p| *p == Phase::Stop);
    tokio::pin!(stopped);
    let stop = sleep_until(stop_at);
    tokio::pin!(stop);
    let end_ns = go + (plan.windows_end_ms() + plan.grace_ms) * 1_000_000;
    let mut send = ctx
        .timer
        .sleep_until(next.map_or(end_ns, |s| go + (s * 1e9) as u64));
    loop {
        tokio::select! {
            r = conn.fill(), if !slow => {
                r?;
                drain(ctx, &mut conn).await?;
            }
            _ = &mut send, if next.is_some() => {
                // Each line is its own write at its scheduled time. Only lines already overdue when
                // the timer fires share one (the bench fell behind; a client's socket would have
                // sent them together too). Open loop: the schedule never waits for the server, and
                // each line carries its scheduled time, so latency counts from the schedule.
                let now = now_ns();
                // Each line counts as sent in the window of its scheduled time, as its deliveries
                // do (a line due just before a window's end may leave just after it).
                let mut due: Vec<(Option<usize>, bool)> = Vec::new();
                let mut said = Spoke::default();
                while let Some(at) = next {
                    let planned = go + (at * 1e9) as u64;
                    if planned > now {
                        break;
                    }
                    let text = crate::ringtalk::chat_text(planned, id, conn.node, plan.message_bytes as usize);
                    if plan.tells {
                        // Someone else, at random.
                        let other = (id + 1 + rng.gen_range(0..plan.total.max(2) - 1)) % plan.total.max(1);
                        conn.queue_tell(&plan.name(other), &text);
                    } else {
                        conn.queue_chat(channel, &text);
                    }
                    due.push((ctx.window_of(planned - go), now > planned + LATE_NS));
                    if planned >= kill {
                        said.after_kill += 1;
                        said.last_ns = Some(planned);
                    }
                    next = next_send(at, &plan.windows, &mut rng);
                }
                match timeout_at(stop_at, conn.flush()).await {
                    Ok(r) => r?,
                    // A slow reader the server stopped reading from: its lines back up.
                    Err(_) if slow => break,
                    Err(_) => return Err(ClientError::new(ErrorKind::Timeout, "send: server not reading")),
                }
                spoke.after_kill += said.after_kill;
                spoke.last_ns = spoke.last_ns.max(said.last_ns);
                let mut acc = ctx.acc.borrow_mut();
                for (window, late) in due {
                    if let Some(w) = window {
                        let w = &mut acc.windows[w];
                        w.sent += 1;
                        w.expected += expected;
                        w.late_sends += u64::from(late);
                    }
                }
                if let Some(at) = next {
                    send.reset(go + (at * 1e9) as u64);
                }
            }
            _ = &mut leave, if next_leave.is_some() => {
                let quit = next_leave.is_some_and(|l| l.quit);
                conn = come_back(ctx, conn, id, channel, quit, go).await?;
                // Lines that fell due while away were never typed: skip them.
                let now = now_ns();
                while let Some(at) = next {
                    if go + (at * 1e9) as u64 >= now {
                        break;
                    }
                    next = next_send(at, &plan.windows, &mut rng);
                }
                if let Some(at) = next {
                    send.reset(go + (at * 1e9) as u64);
                }
                next_leave = leaves.next();
                leave.as_mut().reset(leave_at(next_leave));
            }
            _ = &mut stop => break,
            _ = &mut stopped => break,
        }
    }
    Ok(())
}

/// Soak: leaves (`/quit`, or dropping the connection), then at once connects again, logs in and
/// joins `channel` again. The return counts as a login of the window it ends in, timed from leaving.
async fn come_back(
    ctx: &Ctx,
    mut conn: Conn,
    id: u32,
    channel: &str,
    quit: bool,
    go: u64,
) -> Result<Conn, ClientError> {
    let t0 = now_ns();
    if quit {
        // Lines still coming in before the close are not counted: this user is leaving.
        while conn.next_line().is_some() {}
        conn.quit(Instant::now() + ctx.timeout()).await?;
    } else {
        drop(conn);
    }
    let (opened, progress) = reopen(ctx, id, channel).await;
    let done = now_ns();
    let mut acc = ctx.acc.borrow_mut();
    acc.busy += progress.login.busy as u64;
    acc.full_retries += progress.full as u64;
    if let Some(w) = ctx.window_of(done.saturating_sub(go)) {
        let w = &mut acc.windows[w];
        if opened.is_ok() {
            w.logins += 1;
            record(&mut w.login_latency, (done - t0) / 1000);
        } else {
            w.login_failed += 1;
        }
    }
    if opened.is_ok() {
        acc.rejoined += 1;
    }
    opened
}

/// Bigroom: client 0 sends the lines; everyone reads until the lines and the grace are over.
async fn bigroom(
    ctx: &Ctx,
    conn: &mut Conn,
    id: u32,
    channel: &str,
    go: u64,
) -> Result<(), ClientError> {
    let plan = &ctx.plan;
    let interval = plan.bigroom_interval_ms * 1_000_000;
    let stop_at = instant_at(go + (plan.windows_end_ms() + plan.grace_ms) * 1_000_000);
    let mut sent = 0;
    let sender = id == 0;
    let expected = plan.expected_readers(id);
    let mut phase = ctx.phase.clone();
    // The first line goes half an interval after go, the rest one interval apart, on the precise
    // timer, since latency counts from this schedule.
    let planned_at = |sent: u32| go + interval / 2 + u64::from(sent) * interval;
    let mut send = ctx.timer.sleep_until(planned_at(0));
    loop {
        let more = sender && sent < plan.bigroom_messages;
        tokio::select! {
            r = conn.fill() => {
                r?;
                drain(ctx, conn).await?;
            }
            _ = &mut send, if more => {
                let now = now_ns();
                let text = crate::ringtalk::chat_text(planned_at(sent), id, conn.node, plan.message_bytes as usize);
                conn.chat(channel, &text).await?;
                sent += 1;
                send.reset(planned_at(sent));
                if let Some(w) = ctx.window_of(now - go) {
                    let mut acc = ctx.acc.borrow_mut();
                    acc.windows[w].sent += 1;
                    acc.windows[w].expected += expected;
                }
            }
            _ = sleep_until(stop_at) => break,
            _ = phase.wait_for(|p| *p == Phase::Stop) => break,
        }
    }
    Ok(())
}

/// Connects user `id` again, logs in and joins `channel`; with what the attempt went through.
async fn reopen(ctx: &Ctx, id: u32, channel: &str) -> (Result<Conn, ClientError>, Opened) {
    let mut progress = Opened::default();
    let opened = open(
        ctx,
        id,
        ctx.plan.name(id),
        Some(channel),
        None,
        &mut progress,
    )
    .await;
    (opened, progress)
}

/// Churn: drop the connection at go (no `/quit`), reconnect at once, log in, join; then hold.
async fn churn(ctx: &Ctx, conn: Conn, id: u32, channel: &str, go: u64) -> Result<(), ClientError> {
    drop(conn);
    let (opened, progress) = reopen(ctx, id, channel).await;
    {
        let mut acc = ctx.acc.borrow_mut();
        acc.busy += progress.login.busy as u64;
        acc.full_retries += progress.full as u64;
        if opened.is_ok() {
            acc.rejoined += 1;
            let us = now_ns().saturating_sub(go) / 1000;
            record(&mut acc.ready, us);
        }
    }
    ctx.milestone_passed();
    let mut conn = opened?;
    hold(ctx, &mut conn, go).await
}

/// Keeps a connection open, reading, until stop or the hold time is over.
async fn hold(ctx: &Ctx, conn: &mut Conn, go: u64) -> Result<(), ClientError> {
    let until = instant_at(go + ctx.plan.hold_ms * 1_000_000);
    let mut phase = ctx.phase.clone();
    loop {
        tokio::select! {
            r = conn.fill() => {
                r?;
                while let Some(line) = conn.next_line() {
                    if let Event::Notice(notice, _) = conn.classify(&line) {
                        ctx.acc.borrow_mut().notice(notice);
                    }
                }
                conn.flush().await?;
            }
            _ = sleep_until(until) => return Ok(()),
            _ = phase.wait_for(|p| *p == Phase::Stop) => return Ok(()),
        }
    }
}

/// Storm: connect at go with everyone else, log in, hold.
async fn storm_client(ctx: Rc<Ctx>, id: u32) {
    let Some(go) = ctx.wait_go().await else {
        return;
    };
    let mut progress = Opened::default();
    let opened = open(&ctx, id, ctx.plan.name(id), None, None, &mut progress).await;
    {
        let mut acc = ctx.acc.borrow_mut();
        acc.busy += progress.login.busy as u64;
        if let Some(g) = progress.login.greeted_ns {
            acc.greeted += 1;
            record(&mut acc.greet, g.saturating_sub(go) / 1000);
        }
        if opened.is_ok() {
            acc.logged_in += 1;
            record(&mut acc.ready, now_ns().saturating_sub(go) / 1000);
        }
    }
    ctx.milestone_passed();
    let result = match opened {
        Ok(mut conn) => hold(&ctx, &mut conn, go).await,
        Err(e) => Err(e),
    };
    match result {
        Ok(()) => ctx.acc.borrow_mut().held += 1,
        Err(e) => ctx.run_error(&e),
    }
}

/// Handshakes: from go until the hold time is over, connect (`--tls`: with a full handshake), wait
/// for the greeting, close, and again. Each greeting counts, with its time from the connect; a failed
/// attempt counts as an error and the next one waits 10 ms.
async fn handshake_client(ctx: Rc<Ctx>, id: u32) {
    let Some(go) = ctx.wait_go().await else {
        return;
    };
    let until = instant_at(go + ctx.plan.hold_ms * 1_000_000);
    let phase = ctx.phase.clone();
    while Instant::now() < until && *phase.borrow() != Phase::Stop {
        let started = now_ns();
        match greeted_once(&ctx, id).await {
            Ok(()) => {
                let mut acc = ctx.acc.borrow_mut();
                acc.greeted += 1;
                record(&mut acc.greet, now_ns().saturating_sub(started) / 1000);
            }
            Err(e) => {
                ctx.run_error(&e);
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
    ctx.milestone_passed();
}

/// One connection of [`handshake_client`]: connected, greeted (ringtalk: asked for a name; IRC: any
/// line), then closed by being dropped.
async fn greeted_once(ctx: &Ctx, id: u32) -> Result<(), ClientError> {
    let plan = &ctx.plan;
    let deadline = Instant::now() + ctx.timeout();
    let mut conn = connect_by(ctx, id, None, plan.name(id), deadline).await?;
    loop {
        let greeted = match plan.protocol {
            Protocol::Ringtalk => conn.take_prompt() == Some(Prompt::Username),
            Protocol::Irc => conn.next_line().is_some(),
        };
        if greeted {
            return Ok(());
        }
        conn.fill_by(deadline, "greeting").await?;
    }
}

/// A login looper: creates its account during setup, then logs in and out during the windows marked
/// `logins`: as fast as the server lets it, or (with `login_interval_ms`) at its turns of a schedule
/// that all loopers share, one login every `login_interval_ms`.
async fn looper(ctx: Rc<Ctx>, lid: u32) {
    let name = ctx.plan.looper_name(lid);
    // Looper ids sit after the chat clients' for the choice of source address.
    let src_id = ctx.plan.total + lid;
    let mut progress = Opened::default();
    let opened = {
        let _permit = ctx.setup_permits.acquire().await;
        open(&ctx, src_id, name.clone(), None, None, &mut progress).await
    };
    count_setup(&ctx, &progress, false);
    let setup_ok = match opened {
        Ok(conn) => conn.quit(Instant::now() + ctx.timeout()).await,
        Err(e) => Err(e),
    };
    if let Err(e) = &setup_ok {
        ctx.setup_error(e);
    }
    ctx.setup_finished();
    let Some(go) = ctx.wait_go().await else {
        return;
    };
    let windows: Vec<Window> = ctx
        .plan
        .windows
        .iter()
        .filter(|w| w.logins)
        .cloned()
        .collect();
    let interval = ctx.plan.login_interval_ms * 1_000_000;
    let every = interval * ctx.plan.looper_total.max(1) as u64;
    for w in windows {
        let start = go + w.start_ms * 1_000_000;
        let end = go + w.end_ms * 1_000_000;
        // Paced: this looper's turns are start + (lid + k * loopers) * interval.
        let mut turn = start + lid as u64 * interval;
        sleep_until(instant_at(start)).await;
        while now_ns() < end && ctx.go_ns().is_some() {
            if interval > 0 {
                if turn >= end {
                    break;
                }
                sleep_until(instant_at(turn)).await;
                turn += every;
                if ctx.go_ns().is_none() {
                    break;
                }
            }
            let t0 = now_ns();
            let mut progress = Opened::default();
            let attempt = open(&ctx, src_id, name.clone(), None, None, &mut progress).await;
            let result = match attempt {
                Ok(conn) => {
                    let done = now_ns();
                    if let Some(i) = ctx.window_of(done - go) {
                        let mut acc = ctx.acc.borrow_mut();
                        acc.windows[i].logins += 1;
                        record(&mut acc.windows[i].login_latency, (done - t0) / 1000);
                    }
                    conn.quit(Instant::now() + ctx.timeout()).await
                }
                Err(e) => Err(e),
            };
            if let Err(e) = result {
                if let Some(i) = ctx.window_of(now_ns() - go) {
                    ctx.acc.borrow_mut().windows[i].login_failed += 1;
                }
                ctx.run_error(&e);
                if interval == 0 {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }
}

/// The attacker (abuse): its setup counts as one client's; then the attack, until it is over or the
/// worker is stopped.
async fn attacker(ctx: Rc<Ctx>, attack: Rc<Attack>) {
    let paster = attack.setup().await;
    ctx.setup_finished();
    let Some(go) = ctx.wait_go().await else {
        return;
    };
    let mut phase = ctx.phase.clone();
    tokio::select! {
        _ = attack.run(paster, go) => {}
        _ = phase.wait_for(|p| *p == Phase::Stop) => {}
    }
}

/// Writes one report line to stdout.
fn emit(report: &Report) {
    let line = serde_json::to_string(report).expect("reports serialize");
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// The `worker` subcommand: reads the plan from stdin, runs it, reports on stdout.
pub fn main() -> anyhow::Result<()> {
    let mut first = String::new();
    std::io::stdin().lock().read_line(&mut first)?;
    let plan: Plan = serde_json::from_str(&first)?;
    let (nofile, _) = crate::sys::raise_nofile()?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let local = LocalSet::new();
    local.block_on(&rt, run(plan, nofile));
    Ok(())
}

async fn run(plan: Plan, nofile: u64) {
    let (phase_tx, phase_rx) = watch::channel(Phase::Setup);
    let (cmd_tx, mut cmd_rx) = tokio::sync::mpsc::unbounded_channel();
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            match serde_json::from_str::<Command>(&line) {
                Ok(cmd) => {
                    if cmd_tx.send(cmd).is_err() {
                        return;
                    }
                }
                Err(e) => eprintln!("worker: bad command {line:?}: {e}"),
            }
        }
        // The parent is gone: stop.
        let _ = cmd_tx.send(Command::Stop);
    });

    let attack = Attack::of(&plan);
    let setup_clients = match plan.mode {
        Mode::Storm | Mode::Handshakes => 0,
        _ => plan.count,
    } + plan.loopers.len() as u32
        + attack.is_some() as u32;
    let windows = plan.windows.iter().map(|_| WindowAcc::new()).collect();
    let ctx = Rc::new(Ctx {
        setup_permits: Semaphore::new(plan.connect_concurrency.max(1) as usize),
        setup_left: Cell::new(setup_clients),
        setup_done: Notify::new(),
        milestone_left: Cell::new(plan.count),
        milestone: Notify::new(),
        phase: phase_rx,
        acc: RefCell::new(Acc {
            setup: SetupReport {
                clients: plan.count + plan.loopers.len() as u32,
                nofile,
                ..SetupReport::default()
            },
            windows,
            errors: Errors::default(),
            samples: Vec::new(),
            greet: new_hist(),
            ready: new_hist(),
            greeted: 0,
            logged_in: 0,
            rejoined: 0,
            held: 0,
            busy: 0,
            full_retries: 0,
            foreign: 0,
            complaints: 0,
            fanout: HashMap::new(),
            paste_received: 0,
            flood_dropped: 0,
            notices: Notices::default(),
            lost_with_node: 0,
            failover: BTreeMap::new(),
        }),
        started: Instant::now(),
        timer: match Timer::new() {
            Ok(timer) => timer,
            Err(e) => {
                eprintln!("worker: no timerfd: {e}");
                return;
            }
        },
        plan,
        attack,
    });
    tokio::task::spawn_local(ctx.timer.clone().drive());

    let mut tasks = Vec::new();
    for id in ctx.plan.first..ctx.plan.first + ctx.plan.count {
        let task = match ctx.plan.mode {
            Mode::Storm => tokio::task::spawn_local(storm_client(ctx.clone(), id)),
            Mode::Handshakes => tokio::task::spawn_local(handshake_client(ctx.clone(), id)),
            _ => tokio::task::spawn_local(chat_client(ctx.clone(), id)),
        };
        tasks.push(task);
    }
    for &lid in &ctx.plan.loopers {
        tasks.push(tokio::task::spawn_local(looper(ctx.clone(), lid)));
    }
    if let Some(a) = ctx.attack.clone() {
        tasks.push(tokio::task::spawn_local(attacker(ctx.clone(), a)));
    }
    let (all_done_tx, mut all_done) = tokio::sync::oneshot::channel::<()>();
    tokio::task::spawn_local(async move {
        for t in tasks {
            let _ = t.await;
        }
        let _ = all_done_tx.send(());
    });

    if setup_clients > 0 {
        tokio::select! {
            _ = ctx.setup_done.notified() => {}
            // The parent stopped us (or went away) during setup: nothing to report.
            cmd = cmd_rx.recv() => {
                if matches!(cmd, Some(Command::Stop) | None) {
                    return;
                }
            }
        }
    }
    ctx.acc.borrow_mut().setup.seconds = ctx.started.elapsed().as_secs_f64();
    emit(&Report::Ready(ctx.acc.borrow().setup.clone()));

    let go = match cmd_rx.recv().await {
        Some(Command::Go { at_ns }) => Some(at_ns),
        Some(Command::Stop) | None => None,
    };
    match go {
        Some(at) => {
            let _ = phase_tx.send(Phase::Go(at));
        }
        None => {
            let _ = phase_tx.send(Phase::Stop);
        }
    }

    if let Some(go) = go {
        let plan = &ctx.plan;
        // After this the worker stops its clients whatever the parent says.
        let last = plan.windows_end_ms().max(plan.hold_ms) + plan.grace_ms + plan.timeout_ms;
        let hard_stop = instant_at(go + last * 1_000_000);
        let mut next_window = 0;
        // Storm and churn wait for every worker's `Reached`; a worker with no clients of its own
        // (more workers than users) has reached its milestone at once and says so.
        let mut reached = plan.mode == Mode::Chat || plan.mode == Mode::Bigroom;
        if !reached && plan.count == 0 {
            emit(&Report::Reached);
            reached = true;
        }
        let mut stopped = false;
        loop {
            let window_at = plan
                .windows
                .get(next_window)
                .filter(|_| plan.report_windows)
                .map(|w| instant_at(go + (w.end_ms + plan.grace_ms) * 1_000_000));
            tokio::select! {
                _ = &mut all_done => break,
                cmd = cmd_rx.recv(), if !stopped => {
                    if matches!(cmd, Some(Command::Stop) | None) {
                        stopped = true;
                        let _ = phase_tx.send(Phase::Stop);
                    }
                }
                _ = sleep_until(window_at.unwrap_or(hard_stop)), if window_at.is_some() => {
                    let stats = ctx.acc.borrow().windows[next_window].report();
                    emit(&Report::Window { index: next_window, stats });
                    next_window += 1;
                }
                _ = ctx.milestone.notified(), if !reached => {
                    reached = true;
                    emit(&Report::Reached);
                }
                _ = sleep_until(hard_stop), if !stopped => {
                    stopped = true;
                    let _ = phase_tx.send(Phase::Stop);
                }
            }
        }
        if !reached {
            emit(&Report::Reached);
        }
    } else {
        let _ = all_done.await;
    }

    let acc = ctx.acc.borrow();
    let mut fanout: Vec<Fanout> = acc
        .fanout
        .iter()
        .map(|(&sent_ns, &(reached, max_us))| Fanout {
            sent_ns,
            reached,
            max_us,
        })
        .collect();
    fanout.sort_by_key(|f| f.sent_ns);
    emit(&Report::Done(Box::new(WorkerReport {
        setup: acc.setup.clone(),
        windows: acc.windows.iter().map(WindowAcc::report).collect(),
        errors: acc.errors.clone(),
        samples: acc.samples.clone(),
        greet: HistWire::encode(&acc.greet),
        ready: HistWire::encode(&acc.ready),
        greeted: acc.greeted,
        logged_in: acc.logged_in,
        rejoined: acc.rejoined,
        held: acc.held,
        busy: acc.busy,
        full_retries: acc.full_retries,
        foreign: acc.foreign,
        complaints: acc.complaints,
        fanout,
        paste_received: acc.paste_received,
        flood_dropped: acc.flood_dropped,
        attack: ctx.attack.as_ref().map(|a| a.counts.borrow().clone()),
        notices: acc.notices,
        lost_with_node: acc.lost_with_node,
        failover: acc.failover.values().cloned().collect(),
    })));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window(start_ms: u64, end_ms: u64, rate: f64) -> Window {
        Window {
            name: String::new(),
            start_ms,
            end_ms,
            rate,
            logins: false,
        }
    }

    #[test]
    fn schedule_follows_window_rates() {
        let windows = [
            window(0, 10_000, 100.0),
            window(10_000, 20_000, 0.0),
            window(20_000, 30_000, 10.0),
        ];
        let mut rng = SmallRng::seed_from_u64(1);
        let mut t = 0.0;
        let mut counts = [0u32; 3];
        while let Some(next) = next_send(t, &windows, &mut rng) {
            assert!(next >= t);
            counts[(next / 10.0) as usize] += 1;
            t = next;
        }
        assert!((800..1200).contains(&counts[0]), "{counts:?}");
        assert_eq!(counts[1], 0);
        assert!((50..150).contains(&counts[2]), "{counts:?}");
    }
}
