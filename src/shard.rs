//! One shard: a glommio executor pinned to one CPU that accepts its own connections and runs their
//! sessions to the end. Nothing here is shared with another thread except the stats counters.
//!
//! The shard keeps a table of its live sessions so it can reach any of them without the session's help:
//! to tell every one that the server is shutting down, and to close those that have not logged in in time.
//! A session is woken through the waker it left in its [`SessionHandle`]; the shard never touches a
//! session's socket. The shard's [`Readiness`] set reports which sockets are ready, and a small task
//! routes each report to the session (or the accept loop) it is for.

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::os::fd::{AsFd, FromRawFd, OwnedFd, RawFd};
use std::pin::pin;
use std::rc::Rc;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use futures::channel::oneshot;
use futures::future::{join, join_all, poll_fn, select, Either};
use glommio::channels::shared_channel::{
    ConnectedReceiver, ConnectedSender, SharedReceiver, SharedSender,
};
use glommio::sync::Gate;
use shard_proto::{ChannelId, ChannelName, Line, SessionId, ShardId, ShardMsg, ToHome, ToMember};
use tracing::{debug, info, warn};

use crate::accounts::Accounts;
use crate::chanlog::ChannelLog;
use crate::config::Config;
use crate::hub::{Hub, Outputs, Reply};
use crate::listener::{self, LogLimiter};
use crate::pacing::Pacer;
use crate::readiness::{Readiness, Ready};
use crate::session::Session;
use crate::socket::Socket;
use crate::stats::{ShardStats, Stats};

/// How long sessions get to say goodbye and close at shutdown.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// How long the accept loop waits after running out of descriptors before it tries again.
const FD_EXHAUSTION_BACKOFF: Duration = Duration::from_millis(100);

/// Connections the accept loop takes in a row before it lets the shard's other tasks run.
const ACCEPT_BATCH: u32 = 64;

/// The readiness token of the shard's listening socket; sessions' keys start at 1.
const LISTENER_TOKEN: u64 = 0;

/// Size of the one read buffer a shard lends to whichever session is reading: sockets are read only
/// when the kernel says data is there, and the bytes are decoded before the next session runs, so no
/// connection needs a buffer of its own.
const READ_SCRATCH: usize = 4096;

/// Messages waiting for room in the ring to one other shard before droppable ones (deliveries and
/// posts) are dropped. Control messages (joins, leaves, answers) are always queued: there are at most
/// a few per session. A dropped delivery is told to the channel's members on that shard as a drop
/// notice (see [`ToMember::Lost`]); a dropped post, to the session that posted it.
pub const OUTBOX_LIMIT: usize = 65_536;

/// Most slots in each SPSC ring between two shards.
pub const RING_CAPACITY: usize = 4096;

/// Fewest slots in a ring, however many shards there are.
const MIN_RING_CAPACITY: usize = 64;

/// What all of a server's rings may take together, when that leaves each at least
/// [`MIN_RING_CAPACITY`] slots.
const RING_MEMORY_BUDGET: usize = 128 << 20;

/// Slots in each ring of a server of `shards` shards, a power of two: [`RING_CAPACITY`] while the
/// n(n-1) rings fit in [`RING_MEMORY_BUDGET`] that way (up to 16 shards), then fewer, down to
/// [`MIN_RING_CAPACITY`] (which 256 shards use, about 300 MiB in all). glommio allocates every
/// slot up front. Whatever does not fit in a ring waits in the sending shard's outbox.
pub fn ring_capacity(shards: usize) -> usize {
    let rings = (shards * shards.saturating_sub(1)).max(1);
    let fits = RING_MEMORY_BUDGET / rings / std::mem::size_of::<ShardMsg>();
    // The largest power of two that fits, within the bounds.
    let pow2 = if fits == 0 { 1 } else { 1 << fits.ilog2() };
    pow2.clamp(MIN_RING_CAPACITY, RING_CAPACITY)
}

/// Why the shard wants a session to end.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kick {
    /// The server is shutting down.
    Shutdown,
    /// The connection did not log in within the login timeout.
    LoginTimeout,
}

/// The part of a session that its shard can reach.
#[derive(Debug)]
pub struct SessionHandle {
    /// Which session this is.
    pub id: SessionId,
    /// Set by the shard; the session reads it each time it wakes.
    kick: Cell<Option<Kick>>,
    /// The waker of the session's task, refreshed whenever it waits.
    waker: RefCell<Option<Waker>>,
    /// False until the user logs in: only such sessions are subject to the login timeout.
    logged_in: Cell<bool>,
    /// Chat lines waiting to be written, at most `--queue-limit`. Not preallocated.
    queue: RefCell<VecDeque<Line>>,
    /// Lines dropped since the session last caught up.
    dropped: Cell<u32>,
    /// Answers from channel homes, in arrival order.
    replies: RefCell<VecDeque<Reply>>,
    /// Which directions of the session's socket may not block (see [`crate::readiness`]).
    ready: Cell<Ready>,
}

impl SessionHandle {
    /// What the shard asked of this session, if anything.
    pub fn kick(&self) -> Option<Kick> {
        self.kick.get()
    }

    /// Records the waker of the session's task so the shard can wake it.
    pub fn set_waker(&self, waker: &Waker) {
        let mut slot = self.waker.borrow_mut();
        match slot.as_ref() {
            Some(w) if w.will_wake(waker) => {}
            _ => *slot = Some(waker.clone()),
        }
    }

    /// Whether the session's socket was last reported ready for all of `dir`.
    pub fn is_ready(&self, dir: Ready) -> bool {
        self.ready.get().contains(dir)
    }

    /// Records that a call in `dir` would block (or came back short): the session waits for the
    /// next readiness report before it tries again.
    pub fn clear_ready(&self, dir: Ready) {
        self.ready.set(self.ready.get().without(dir));
    }

    /// Marks the session as logged in, which exempts it from the login timeout.
    pub fn set_logged_in(&self) {
        self.logged_in.set(true);
    }

    /// Whether chat lines (or a dropped-lines notice) wait to be written.
    pub fn has_lines(&self) -> bool {
        !self.queue.borrow().is_empty() || self.dropped.get() > 0
    }

    /// Whether the queue is so full that its lines must go out now rather than wait for the pacer.
    pub fn is_urgent(&self, limit: usize) -> bool {
        self.queue.borrow().len() >= urgent_at(limit)
    }

    /// Takes every queued chat line and the number dropped since the last call.
    pub fn take_lines(&self) -> Option<(Vec<Line>, u32)> {
        let mut queue = self.queue.borrow_mut();
        if queue.is_empty() && self.dropped.get() == 0 {
            return None;
        }
        // Taking the whole queue leaves the session holding no queue memory while idle.
        let lines: Vec<Line> = std::mem::take(&mut *queue).into();
        Some((lines, self.dropped.replace(0)))
    }

    /// The oldest reply from a channel home, if one has arrived.
    pub fn take_reply(&self) -> Option<Reply> {
        let mut replies = self.replies.borrow_mut();
        let reply = replies.pop_front();
        if replies.is_empty() {
            *replies = VecDeque::new();
        }
        reply
    }

    fn push_line(&self, line: &Line, limit: usize) -> bool {
        let mut queue = self.queue.borrow_mut();
        if queue.len() >= limit {
            self.dropped.set(self.dropped.get().saturating_add(1));
            return false;
        }
        queue.push_back(line.clone());
        // Woken when the first line arrives, and again when the queue fills so far that pacing must
        // give way (see `urgent_at`).
        let wake = queue.len() == 1 || queue.len() == urgent_at(limit);
        drop(queue);
        if wake {
            self.wake();
        }
        true
    }

    /// Counts lines dropped before they reached the queue, for the next drop notice.
    fn add_dropped(&self, count: u32) {
        self.dropped.set(self.dropped.get().saturating_add(count));
        self.wake();
    }

    fn set_ready(&self, dir: Ready) {
        self.ready.set(self.ready.get().with(dir));
        self.wake();
    }

    fn push_reply(&self, reply: Reply) {
        self.replies.borrow_mut().push_back(reply);
        self.wake();
    }

    fn wake(&self) {
        if let Some(w) = self.waker.borrow().as_ref() {
            w.wake_by_ref();
        }
    }

    fn kick_with(&self, kick: Kick) {
        if self.kick.get().is_none() {
            self.kick.set(Some(kick));
        }
        if let Some(w) = self.waker.borrow().as_ref() {
            w.wake_by_ref();
        }
    }
}

/// Queued lines at which a session writes at once instead of waiting for the pacer: half the queue
/// limit. A reader that keeps up then never loses a line to pacing, however fast a channel is
/// flooded (a paste of hundreds of lines arrives between two ticks).
fn urgent_at(limit: usize) -> usize {
    (limit / 2).max(1)
}

/// Per-shard state, shared by the shard's tasks through an `Rc`.
pub struct Shard {
    /// This shard's index.
    pub id: ShardId,
    /// The server's configuration.
    pub config: Arc<Config>,
    /// Accounts, served by the worker threads.
    pub accounts: Accounts,
    /// Counters, shared with readers on other threads.
    pub stats: Arc<Stats>,
    sessions: RefCell<HashMap<u64, Rc<SessionHandle>>>,
    next_key: Cell<u64>,
    /// Sessions in the order they connected, with their login deadlines; since the timeout is the same
    /// for all, the earliest deadline is always at the front.
    login_deadlines: RefCell<VecDeque<(Instant, u64)>>,
    scratch: RefCell<Box<[u8]>>,
    shutting_down: Cell<bool>,
    /// This shard's part in chat.
    hub: RefCell<Hub>,
    /// Messages for each other shard, waiting for room in its ring (index: destination shard).
    outboxes: Vec<Outbox>,
    /// Where ordered lines are logged.
    chanlog: ChannelLog,
    /// Spaces out writes to busy connections so their lines share system calls.
    pub pacer: Pacer,
    /// This shard's sockets, listening and connected, and which of them are ready.
    pub readiness: Readiness,
    /// Whether the listening socket may have connections waiting.
    listener_ready: Cell<bool>,
    /// The accept loop's waker, while it waits for connections.
    acceptor: RefCell<Option<Waker>>,
}

/// Messages for one other shard; its pump task moves them into the ring.
#[derive(Default)]
struct Outbox {
    queue: RefCell<VecDeque<ShardMsg>>,
    /// Deliveries dropped because the queue was full, by channel, not yet told to the members.
    /// Empty unless the ring is backed up; one entry per channel however many lines it lost.
    lost: RefCell<HashMap<ChannelId, u32>>,
    waker: RefCell<Option<Waker>>,
}

impl Outbox {
    /// Queues `msg`; a droppable message that finds the queue full is handed back instead.
    fn push(&self, msg: ShardMsg, stats: &ShardStats) -> Result<(), ShardMsg> {
        let mut queue = self.queue.borrow_mut();
        let droppable = matches!(
            msg,
            ShardMsg::ToMember(ToMember::Deliver { .. }) | ShardMsg::ToHome(ToHome::Post { .. })
        );
        if droppable && queue.len() >= OUTBOX_LIMIT {
            stats.ring_dropped.fetch_add(1, Relaxed);
            if let ShardMsg::ToMember(ToMember::Deliver { channel, .. }) = &msg {
                let mut lost = self.lost.borrow_mut();
                let count = lost.entry(*channel).or_default();
                *count = count.saturating_add(1);
            }
            return Err(msg);
        }
        // The members hear of lines lost before this one ahead of it, so the notice stands where
        // the gap is.
        if let ShardMsg::ToMember(ToMember::Deliver { channel, .. }) = &msg {
            let mut lost = self.lost.borrow_mut();
            // Nearly always empty: no hashing per delivery unless something was lost.
            if let Some(count) = (!lost.is_empty()).then(|| lost.remove(channel)).flatten() {
                queue.push_back(ShardMsg::ToMember(ToMember::Lost {
                    channel: *channel,
                    count,
                }));
            }
        }
        queue.push_back(msg);
        drop(queue);
        if let Some(w) = self.waker.borrow_mut().take() {
            w.wake();
        }
        Ok(())
    }

    /// The next message for the ring. Once the queue is empty, losses no later delivery has
    /// carried go out as notices of their own.
    fn poll_pop(&self, cx: &mut Context<'_>) -> Poll<ShardMsg> {
        if let Some(msg) = self.queue.borrow_mut().pop_front() {
            return Poll::Ready(msg);
        }
        let mut lost = self.lost.borrow_mut();
        if let Some(&channel) = lost.keys().next() {
            let count = lost.remove(&channel).unwrap_or(0);
            if lost.is_empty() {
                *lost = HashMap::new();
            }
            return Poll::Ready(ShardMsg::ToMember(ToMember::Lost { channel, count }));
        }
        *self.waker.borrow_mut() = Some(cx.waker().clone());
        Poll::Pending
    }
}

/// The shard seen by its hub: rings through the outboxes, sessions through their handles.
pub(crate) struct ShardOutputs<'a> {
    shard: &'a Shard,
    stats: &'a ShardStats,
    sessions: &'a HashMap<u64, Rc<SessionHandle>>,
}

impl Outputs for ShardOutputs<'_> {
    fn to_shard(&mut self, dest: ShardId, msg: ShardMsg) {
        if let Err(ShardMsg::ToHome(ToHome::Post { session, .. })) =
            self.shard.outboxes[dest.index()].push(msg, self.stats)
        {
            // The line never left: its sender hears that it was dropped, as a reader would.
            self.lost(session.key, 1);
        }
    }

    fn deliver(&mut self, session: u64, line: &Line) {
        if let Some(handle) = self.sessions.get(&session) {
            let limit = self.shard.config.queue_limit as usize;
            if handle.push_line(line, limit) {
                self.stats.deliveries.fetch_add(1, Relaxed);
            } else {
                self.stats.dropped.fetch_add(1, Relaxed);
            }
        }
    }

    fn lost(&mut self, session: u64, count: u32) {
        if let Some(handle) = self.sessions.get(&session) {
            handle.add_dropped(count);
            self.stats.dropped.fetch_add(u64::from(count), Relaxed);
        }
    }

    fn reply(&mut self, session: u64, reply: Reply) {
        if let Some(handle) = self.sessions.get(&session) {
            handle.push_reply(reply);
        }
    }

    fn log(&mut self, channel: &ChannelName, line: &Line) {
        self.stats.lines.fetch_add(1, Relaxed);
        self.shard.chanlog.append(channel.key(), line);
    }
}

/// Removes a session from its shard's table when the session ends, however it ends.
pub struct Registration {
    shard: Rc<Shard>,
    handle: Rc<SessionHandle>,
}

impl Registration {
    /// The handle the shard uses to reach this session.
    pub fn handle(&self) -> &Rc<SessionHandle> {
        &self.handle
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        let key = self.handle.id.key;
        self.shard.sessions.borrow_mut().remove(&key);
        self.shard.chat(|hub, out| hub.session_ended(key, out));
    }
}

impl Shard {
    /// A shard with no sessions, home to `channels`.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        id: ShardId,
        shards: usize,
        config: Arc<Config>,
        accounts: Accounts,
        stats: Arc<Stats>,
        chanlog: ChannelLog,
        channels: Vec<ChannelName>,
        readiness: Readiness,
    ) -> Shard {
        let mut hub = Hub::new(id, shards, config.channel_capacity);
        for name in channels {
            hub.open(name);
        }
        stats
            .shard(id.index())
            .channels
            .store(hub.homed_channels() as u64, Relaxed);
        Shard {
            id,
            hub: RefCell::new(hub),
            pacer: Pacer::new(config.write_interval_us),
            outboxes: (0..shards).map(|_| Outbox::default()).collect(),
            chanlog,
            config,
            accounts,
            stats,
            sessions: RefCell::new(HashMap::new()),
            next_key: Cell::new(1),
            login_deadlines: RefCell::new(VecDeque::new()),
            scratch: RefCell::new(vec![0; READ_SCRATCH].into_boxed_slice()),
            shutting_down: Cell::new(false),
            readiness,
            listener_ready: Cell::new(true),
            acceptor: RefCell::new(None),
        }
    }

    /// Adds a session to the table; it leaves the table when the returned registration is dropped.
    pub fn register(self: &Rc<Self>, now: Instant) -> Registration {
        let key = self.next_key.get();
        self.next_key.set(key + 1);
        let handle = Rc::new(SessionHandle {
            id: SessionId {
                shard: self.id,
                key,
            },
            kick: Cell::new(None),
            waker: RefCell::new(None),
            logged_in: Cell::new(false),
            queue: RefCell::new(VecDeque::new()),
            dropped: Cell::new(0),
            replies: RefCell::new(VecDeque::new()),
            // Tried at once; the first call that would block clears it.
            ready: Cell::new(Ready::BOTH),
        });
        if self.shutting_down.get() {
            handle.kick.set(Some(Kick::Shutdown));
        }
        self.sessions.borrow_mut().insert(key, handle.clone());
        self.login_deadlines
            .borrow_mut()
            .push_back((now + self.config.login_timeout(), key));
        Registration {
            shard: self.clone(),
            handle,
        }
    }

    /// Passes a readiness report to whoever owns the socket: the accept loop or a session. Reports
    /// for sessions that have ended are dropped (keys are never reused).
    fn route_ready(&self, token: u64, ready: Ready) {
        if token == LISTENER_TOKEN {
            if ready.contains(Ready::READ) {
                self.listener_ready.set(true);
                if let Some(w) = self.acceptor.borrow_mut().take() {
                    w.wake();
                }
            }
        } else if let Some(handle) = self.sessions.borrow().get(&token) {
            handle.set_ready(ready);
        }
    }

    /// Ready while the listening socket may have connections waiting.
    fn poll_listener(&self, cx: &mut Context<'_>) -> Poll<()> {
        if self.listener_ready.get() {
            return Poll::Ready(());
        }
        *self.acceptor.borrow_mut() = Some(cx.waker().clone());
        Poll::Pending
    }

    /// Runs a chat action on this shard's hub, with the shard as its outputs; returns what `f` returns.
    /// Never awaits, so no borrow outlives it.
    pub(crate) fn chat<R>(&self, f: impl FnOnce(&mut Hub, &mut ShardOutputs<'_>) -> R) -> R {
        let sessions = self.sessions.borrow();
        let stats = self.stats.shard(self.id.index());
        let mut out = ShardOutputs {
            shard: self,
            stats,
            sessions: &sessions,
        };
        let mut hub = self.hub.borrow_mut();
        let result = f(&mut hub, &mut out);
        stats.members.store(hub.local_members() as u64, Relaxed);
        stats.channels.store(hub.homed_channels() as u64, Relaxed);
        result
    }

    /// Number of sessions in the table.
    pub fn session_count(&self) -> usize {
        self.sessions.borrow().len()
    }

    /// Runs `f` over the shard's read buffer. The buffer must not be held across an await, which the
    /// closure form makes impossible.
    pub fn with_scratch<R>(&self, f: impl FnOnce(&mut [u8]) -> R) -> R {
        f(&mut self.scratch.borrow_mut())
    }

    /// Kicks every session whose login deadline has passed and that has not logged in. Returns how many.
    pub fn expire_logins(&self, now: Instant) -> usize {
        let mut expired = 0;
        let sessions = self.sessions.borrow();
        let mut deadlines = self.login_deadlines.borrow_mut();
        while let Some(&(deadline, key)) = deadlines.front() {
            if deadline > now {
                break;
            }
            deadlines.pop_front();
            if let Some(handle) = sessions.get(&key) {
                if !handle.logged_in.get() {
                    handle.kick_with(Kick::LoginTimeout);
                    expired += 1;
                }
            }
        }
        expired
    }

    /// Asks every session to say goodbye and close.
    pub fn kick_all(&self) {
        self.shutting_down.set(true);
        for handle in self.sessions.borrow().values() {
            handle.kick_with(Kick::Shutdown);
        }
    }
}

/// Everything a shard needs to start, all of it `Send` so it can be moved onto the shard's thread.
pub struct ShardStart {
    /// This shard's index.
    pub id: ShardId,
    /// The listening socket this shard adopts.
    pub listener_fd: RawFd,
    /// The server's configuration.
    pub config: Arc<Config>,
    /// The accounts service.
    pub accounts: Accounts,
    /// Shared counters.
    pub stats: Arc<Stats>,
    /// Resolved once the shard should stop.
    pub shutdown: oneshot::Receiver<()>,
    /// Number of shards.
    pub shards: usize,
    /// The sending halves of the rings from this shard, with their destinations.
    pub ring_out: Vec<(ShardId, SharedSender<ShardMsg>)>,
    /// The receiving halves of the rings into this shard.
    pub ring_in: Vec<SharedReceiver<ShardMsg>>,
    /// The channel log writer.
    pub chanlog: ChannelLog,
    /// The channels homed on this shard.
    pub channels: Vec<ChannelName>,
}

/// The body of a shard's executor: connect the rings, accept until told to stop, then close every
/// session within [`SHUTDOWN_GRACE`]. `readiness` is made on the executor's thread, since its wait
/// uses the executor's ring.
pub async fn run(start: ShardStart, readiness: Readiness) {
    let ShardStart {
        id,
        listener_fd,
        config,
        accounts,
        stats,
        mut shutdown,
        shards,
        ring_out,
        ring_in,
        chanlog,
        channels,
    } = start;
    // SAFETY: the descriptor was created by `listener::open` for this shard alone and is adopted once.
    let listener = unsafe { OwnedFd::from_raw_fd(listener_fd) };
    let shard = Rc::new(Shard::new(
        id, shards, config, accounts, stats, chanlog, channels, readiness,
    ));
    if let Err(e) = shard.readiness.add(listener.as_fd(), LISTENER_TOKEN) {
        warn!(shard = id.0, error = %e, "cannot watch the listening socket; this shard accepts nothing");
        return;
    }
    let router = glommio::spawn_local(route_readiness(shard.clone()));

    // Every half must be connected at once: `connect` waits for the peer's half, so connecting one
    // after another can wait in a circle.
    let connecting = join(
        join_all(
            ring_out
                .into_iter()
                .map(|(dest, tx)| async move { (dest, tx.connect().await) }),
        ),
        join_all(ring_in.into_iter().map(|rx| rx.connect())),
    );
    let (senders, receivers) = match select(pin!(connecting), &mut shutdown).await {
        Either::Left((rings, _)) => rings,
        Either::Right(_) => return,
    };
    let mut ring_tasks = Vec::new();
    for (dest, tx) in senders {
        ring_tasks.push(glommio::spawn_local(pump(shard.clone(), dest, tx)));
    }
    for rx in receivers {
        ring_tasks.push(glommio::spawn_local(drain(shard.clone(), rx)));
    }

    let gate = Gate::new();
    let sweeper = glommio::spawn_local(sweep_logins(shard.clone()));
    let pacer = {
        let shard = shard.clone();
        glommio::spawn_local(async move { shard.pacer.run(glommio::timer::sleep).await })
    };
    {
        let accepting = pin!(accept_loop(&listener, &shard, &gate));
        if let Either::Right(_) = select(shutdown, accepting).await {
            unreachable!("the accept loop never returns");
        }
    }
    drop(listener);
    drop(sweeper);
    drop(pacer);
    let live = shard.session_count();
    shard.kick_all();
    let closed = glommio::timer::timeout(SHUTDOWN_GRACE, gate.close()).await;
    match closed {
        Ok(()) => info!(
            shard = shard.id.0,
            sessions = live,
            "shard closed all sessions"
        ),
        Err(_) => warn!(
            shard = shard.id.0,
            left = shard.session_count(),
            "shard dropped sessions that did not close in time"
        ),
    }
    drop(ring_tasks);
    // Cancelled and waited for, so its wait lets go of the eventfd before that is closed.
    router.cancel().await;
    shard.readiness.close().await;
}

/// Moves messages from the outbox for `dest` into the ring to `dest`. This is the only task that
/// awaits room in that ring, and it receives from no ring, so waiting here can never close a circle.
async fn pump(shard: Rc<Shard>, dest: ShardId, tx: ConnectedSender<ShardMsg>) {
    loop {
        let msg = poll_fn(|cx| shard.outboxes[dest.index()].poll_pop(cx)).await;
        if tx.send(msg).await.is_err() {
            return; // the other shard has stopped
        }
    }
}

/// Most messages a drain task handles before it lets the sessions it filled write their queues out.
const DRAIN_BATCH: u32 = 16;

/// Messages a drain task handles before it yields, on a server of `shards` shards whose session
/// queues hold `queue_limit` lines: at most [`DRAIN_BATCH`], and few enough that one batch from every
/// other shard's ring cannot take a queue that has not yet asked to write at once (fewer than
/// [`urgent_at`] lines) past its limit before its session runs. So a reader that keeps up never
/// loses a line to a burst, whatever the queue limit and the number of shards (down to one message
/// a batch, below which a queue of 1 to 3 lines with many shards can still overflow).
pub fn drain_batch(queue_limit: usize, shards: usize) -> u32 {
    let room = queue_limit.saturating_sub(urgent_at(queue_limit)) + 1;
    let per_ring = room / shards.saturating_sub(1).max(1);
    (per_ring as u32).clamp(1, DRAIN_BATCH)
}

/// Handles every message arriving from one other shard. It never awaits a send: whatever handling
/// produces for other shards goes to their outboxes.
async fn drain(shard: Rc<Shard>, rx: ConnectedReceiver<ShardMsg>) {
    let batch = drain_batch(shard.config.queue_limit as usize, shard.outboxes.len());
    let mut handled = 0u32;
    while let Some(msg) = rx.recv().await {
        shard.chat(|hub, out| hub.handle(msg, out));
        handled += 1;
        if handled % batch == 0 {
            futures_lite::future::yield_now().await;
        }
    }
}

/// Passes every readiness report to the session or accept loop it is for. It only wakes tasks and
/// awaits nothing but the next report, so it adds no edge to the graph of awaited sends.
async fn route_readiness(shard: Rc<Shard>) {
    let mut error_log = LogLimiter::new(Duration::from_secs(1));
    loop {
        let waited = shard.readiness.wait().await;

        let drained = waited.and_then(|()| {
            shard
                .readiness
                .drain(|token, ready| shard.route_ready(token, ready))
        });
        if let Err(err) = drained {
            if let Some(held) = error_log.allow(Instant::now()) {
                warn!(shard = shard.id.0, error = %err, repeats = held, "socket readiness failed");
            }
            // Whatever failed is not going to be fixed by trying again at once.
            glommio::timer::sleep(FD_EXHAUSTION_BACKOFF).await;
        }
    }
}

/// Accepts connections while the listener has them, in batches of [`ACCEPT_BATCH`], and waits for
/// the readiness report when it has none.
async fn accept_loop(listener: &OwnedFd, shard: &Rc<Shard>, gate: &Gate) {
    let mut exhausted_log = LogLimiter::new(Duration::from_secs(1));
    let mut error_log = LogLimiter::new(Duration::from_secs(1));
    let mut unwatched_log = LogLimiter::new(Duration::from_secs(1));
    let mut in_a_row = 0u32;
    loop {
        poll_fn(|cx| shard.poll_listener(cx)).await;
        match Socket::accept(listener.as_fd()) {
            Ok(socket) => {
                let counters = shard.stats.shard(shard.id.index());
                counters.accepted.fetch_add(1, Relaxed);
                if let Err(err) = start_session(socket, shard, gate) {
                    if let Some(held) = unwatched_log.allow(Instant::now()) {
                        warn!(shard = shard.id.0, error = %err, repeats = held,
                              "cannot watch a new connection, so it is closed (is fs.epoll.max_user_watches too low?)");
                    }
                }
                in_a_row += 1;
                if in_a_row % ACCEPT_BATCH == 0 {
                    futures_lite::future::yield_now().await;
                }
            }
            Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => {
                shard.listener_ready.set(false);
                in_a_row = 0;
            }
            Err(err) => {
                if listener::is_fd_exhaustion(&err) {
                    if let Some(held) = exhausted_log.allow(Instant::now()) {
                        warn!(shard = shard.id.0, error = %err, repeats = held,
                              "out of file descriptors: new connections wait in the backlog");
                    }
                    glommio::timer::sleep(FD_EXHAUSTION_BACKOFF).await;
                } else {
                    if let Some(held) = error_log.allow(Instant::now()) {
                        debug!(shard = shard.id.0, error = %err, repeats = held, "accept failed");
                    }
                    // Usually one aborted connection; the next accept goes on, after the others ran.
                    futures_lite::future::yield_now().await;
                }
            }
        }
    }
}

/// Starts a session for a new connection. An error means the shard could not watch the socket (the
/// kernel's epoll limits); the connection is then closed unanswered.
fn start_session(socket: Socket, shard: &Rc<Shard>, gate: &Gate) -> std::io::Result<()> {
    // Socket options come from the listener (see `listener::open`): nothing to set per connection.
    // The session holds its own pass through the gate. `Gate::spawn` would wrap the session's future
    // in another that owns a second copy of it, doubling every session task (~1 kB each).
    let Ok(pass) = gate.enter() else {
        return Ok(()); // shutting down
    };
    let session = Session::new(socket, shard.clone(), Instant::now(), pass);
    let key = session.key();
    // Watched only once the session is in the table, so no report can miss it.
    shard.readiness.add(session.socket().as_fd(), key)?;
    glommio::spawn_local(session.run()).detach();
    Ok(())
}

/// Closes connections that have not logged in by their deadline. Deadlines are checked once a second,
/// so a connection is closed between the timeout and a second after it.
async fn sweep_logins(shard: Rc<Shard>) {
    loop {
        glommio::timer::sleep(Duration::from_secs(1)).await;
        shard.expire_logins(Instant::now());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deliver(channel: u32, n: usize) -> ShardMsg {
        ShardMsg::ToMember(ToMember::Deliver {
            channel: ChannelId {
                home: ShardId(0),
                index: channel,
            },
            line: format!("line {n}").into(),
        })
    }

    fn pop(outbox: &Outbox) -> Option<ShardMsg> {
        let waker = futures::task::noop_waker();
        match outbox.poll_pop(&mut Context::from_waker(&waker)) {
            Poll::Ready(msg) => Some(msg),
            Poll::Pending => None,
        }
    }

    /// Regression: deliveries dropped at a full outbox vanished, for every member on that shard,
    /// with no notice. Now the members hear how many, where the gap is.
    #[test]
    fn deliveries_dropped_at_a_full_outbox_reach_the_members_as_a_notice_in_place() {
        let stats = Stats::new(1);
        let stats = stats.shard(0);
        let outbox = Outbox::default();
        for n in 0..OUTBOX_LIMIT {
            assert!(outbox.push(deliver(0, n), stats).is_ok());
        }
        for n in 0..5 {
            assert!(outbox.push(deliver(0, n), stats).is_err());
        }
        assert!(outbox.push(deliver(1, 0), stats).is_err());
        assert!(outbox.push(deliver(1, 1), stats).is_err());
        // Control messages always queue.
        let leave = ShardMsg::ToHome(ToHome::List {
            session: SessionId {
                shard: ShardId(0),
                key: 1,
            },
        });
        assert!(outbox.push(leave, stats).is_ok());
        assert_eq!(stats.ring_dropped.load(Relaxed), 7);
        for _ in 0..OUTBOX_LIMIT {
            assert!(matches!(
                pop(&outbox),
                Some(ShardMsg::ToMember(ToMember::Deliver { .. }))
            ));
        }
        // Channel 0 goes on: its loss is announced just ahead of its next line.
        assert!(outbox.push(deliver(0, 99), stats).is_ok());
        assert!(matches!(
            pop(&outbox),
            Some(ShardMsg::ToHome(ToHome::List { .. }))
        ));
        assert!(matches!(
            pop(&outbox),
            Some(ShardMsg::ToMember(ToMember::Lost { channel, count: 5 })) if channel.index == 0
        ));
        assert!(matches!(
            pop(&outbox),
            Some(ShardMsg::ToMember(ToMember::Deliver { channel, .. })) if channel.index == 0
        ));
        // Channel 1 has no next line: its notice goes once the queue is empty, and only once.
        assert!(matches!(
            pop(&outbox),
            Some(ShardMsg::ToMember(ToMember::Lost { channel, count: 2 })) if channel.index == 1
        ));
        assert!(pop(&outbox).is_none());
    }

    #[test]
    fn a_round_of_drain_batches_never_overflows_a_queue_that_has_not_asked_to_write() {
        assert_eq!(drain_batch(100, 2), DRAIN_BATCH);
        for limit in 1..=300usize {
            for shards in 1..=64usize {
                let batch = drain_batch(limit, shards) as usize;
                assert!((1..=DRAIN_BATCH as usize).contains(&batch));
                let worst = urgent_at(limit) - 1 + shards.saturating_sub(1) * batch;
                // Below one message a batch nothing better is possible; otherwise the bound holds.
                assert!(
                    worst <= limit || batch == 1,
                    "limit {limit}, {shards} shards: batch {batch} can reach {worst}"
                );
            }
        }
    }

    #[test]
    fn rings_shrink_as_shards_grow_and_stay_within_bounds() {
        assert_eq!(ring_capacity(1), RING_CAPACITY);
        assert_eq!(ring_capacity(2), RING_CAPACITY);
        assert_eq!(ring_capacity(16), RING_CAPACITY);
        let mut last = RING_CAPACITY;
        for shards in 1..=crate::config::MAX_SHARDS {
            let slots = ring_capacity(shards);
            assert!(
                slots.is_power_of_two() && slots <= last,
                "{shards} shards: {slots}"
            );
            assert!((MIN_RING_CAPACITY..=RING_CAPACITY).contains(&slots));
            let bytes = shards * (shards - 1) * slots * std::mem::size_of::<ShardMsg>();
            assert!(
                bytes <= RING_MEMORY_BUDGET || slots == MIN_RING_CAPACITY,
                "{shards} shards: {bytes} bytes of rings"
            );
            last = slots;
        }
        let most = 256 * 255 * ring_capacity(256) * std::mem::size_of::<ShardMsg>();
        assert!(most < 320 << 20, "{most}");
    }
}
