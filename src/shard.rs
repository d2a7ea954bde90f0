//! One shard's state: its table of sessions, its part in chat (the hub) and the outboxes that carry
//! the hub's messages to other shards. The tasks that drive it live in [`crate::tasks`]. Nothing here
//! is shared with another thread except the per-connection stats counters; the per-line ones are
//! plain cells that other threads ask for (see [`crate::stats`]).
//!
//! The shard keeps a table of its live sessions so it can reach any of them without the session's help:
//! to tell every one that the server is shutting down, to close those that have not logged in in time,
//! to end those an admin disconnects, and to give every one an admin's `/wall`.
//! It reaches a session only through its [`Mailbox`]; it never touches a session's socket.

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Instant;

use tracing::{info, warn};

use shard_proto::{
    ChannelId, ChannelName, Line, SessionId, ShardId, ShardMsg, ToHome, ToMember, Traveller,
};

use crate::accounts::{Accounts, ChannelSettings};
use crate::audit::AuditLog;
use crate::chanlog::ChannelLog;
use crate::channel::Settings;
use crate::cluster::link::ShardLink;
use crate::cluster::wire::ClusterOut;
use crate::config::Config;
use crate::defences::{Defences, Limit};
use crate::hub::{Hub, Outputs, Reached};
use crate::listener::LogLimiter;
use crate::live::Live;
use crate::mailbox::{Kick, Mailbox, Reply};
use crate::pacing::Pacer;
use crate::readiness::{Readiness, Ready};
use crate::stats::{add, Ask, LocalStats, LoginOutcome, Stats, LIMITS};

/// The readiness token of the shard's first listening socket; the next listener's is one more, and
/// so on (see [`listener_token`]). Sessions' keys count up from 1 and never come near.
const LISTENER_TOKENS: u64 = 1 << 63;

/// The readiness token of the shard's listening socket number `index` (in the order of
/// [`Config::listeners`]).
pub(crate) fn listener_token(index: usize) -> u64 {
    LISTENER_TOKENS + index as u64
}

/// Size of the one read buffer a shard lends to whichever session is reading: sockets are read only
/// when the kernel says data is there, and the bytes are decoded before the next session runs, so no
/// connection needs a buffer of its own.
const READ_SCRATCH: usize = 4096;

/// Messages waiting for room in the ring to one other shard before droppable ones (deliveries and
/// posts) are dropped. Control messages (joins, leaves, answers) are always queued: there are at most
/// a few per session. A dropped delivery is told to the channel's members on that shard as a drop
/// notice (see [`ToMember::Lost`]); a dropped post, to the session that posted it.
pub const OUTBOX_LIMIT: usize = 65_536;

/// Per-shard state, shared by the shard's tasks through an `Rc`.
pub struct Shard {
    /// This shard's index.
    pub id: ShardId,
    /// The server's configuration.
    pub config: Arc<Config>,
    /// Accounts, served by the worker threads.
    pub accounts: Accounts,
    /// Per-connection counters, shared with readers on other threads.
    pub stats: Arc<Stats>,
    /// Per-line counters, this thread's alone; other threads ask for them ([`Shard::answer_asks`]).
    local: LocalStats,
    /// Questions for [`Shard::local`] from other threads, answered by the inbox task.
    asks: crossbeam_channel::Receiver<Ask>,
    /// Per-address limits and flood settings, shared by every shard.
    pub defences: Arc<Defences>,
    /// The settings a reload may change (the message of the day).
    pub live: Arc<Live>,
    /// One log line a second at most for each kind of limit hit.
    limit_logs: RefCell<[LogLimiter; LIMITS]>,
    sessions: RefCell<HashMap<u64, Rc<Mailbox>>>,
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
    /// Where admins' and owners' actions are recorded.
    audit: AuditLog,
    /// What sessions an admin has ended are to tell their users as they close, by key, until
    /// they do (see [`Kick::Disconnected`]).
    farewells: RefCell<HashMap<u64, Line>>,
    /// Spaces out writes to busy connections so their lines share system calls.
    pub pacer: Pacer,
    /// This shard's sockets, listening and connected, and which of them are ready.
    pub readiness: Readiness,
    /// Per listening socket (in the order of [`Config::listeners`]): whether it may have
    /// connections waiting.
    listeners_ready: Box<[Cell<bool>]>,
    /// Per listening socket: its accept loop's waker, while it waits for connections.
    acceptors: RefCell<Box<[Option<Waker>]>>,
    /// Sessions that have moved here and have a mailbox but no task yet; the inbox task starts
    /// them right after the message that brought them.
    arrivals: RefCell<Vec<(Rc<Mailbox>, Traveller)>>,
    /// This shard's end of the queues to the node's bridge, in a cluster.
    pub(crate) cluster: Option<ShardLink>,
    /// Channel settings changed at this shard's homes and not yet stored: the latest of each
    /// channel, by key (one entry per channel at most, however fast they change).
    settings_to_store: RefCell<HashMap<Arc<str>, (ChannelName, ChannelSettings)>>,
    /// In a cluster, channels whose home has just become this node and whose stored settings
    /// are to be read again, by key (one entry per channel at most).
    settings_to_load: RefCell<HashMap<Arc<str>, ChannelName>>,
    /// The settings writer's waker, while it waits for something to store.
    settings_writer: RefCell<Option<Waker>>,
    /// Set when the shard closes: the settings writer ends once it has stored everything.
    settings_closing: Cell<bool>,
}

/// Channels whose settings a shard reads one request each; more, waiting at once, are read in
/// one pass over every stored channel (see [`Shard::store_settings`]).
const LOAD_ONE_BY_ONE_UP_TO: usize = 32;

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
    fn push(&self, msg: ShardMsg, stats: &LocalStats) -> Result<(), ShardMsg> {
        let mut queue = self.queue.borrow_mut();
        let droppable = matches!(
            msg,
            ShardMsg::ToMember(ToMember::Deliver { .. }) | ShardMsg::ToHome(ToHome::Post { .. })
        );
        if droppable && queue.len() >= OUTBOX_LIMIT {
            add(&stats.ring_dropped, 1);
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
            if !lost.is_empty() {
                if let Some(count) = lost.remove(channel) {
                    queue.push_back(ShardMsg::ToMember(ToMember::Lost {
                        channel: *channel,
                        count,
                    }));
                }
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
        match self.pop() {
            Some(msg) => Poll::Ready(msg),
            None => {
                *self.waker.borrow_mut() = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }

    /// The next message for the ring, if any.
    fn pop(&self) -> Option<ShardMsg> {
        if let Some(msg) = self.queue.borrow_mut().pop_front() {
            return Some(msg);
        }
        let mut lost = self.lost.borrow_mut();
        let &channel = lost.keys().next()?;
        let count = lost.remove(&channel).unwrap_or(0);
        if lost.is_empty() {
            *lost = HashMap::new();
        }
        Some(ShardMsg::ToMember(ToMember::Lost { channel, count }))
    }
}

/// The shard seen by its hub: rings through the outboxes, sessions through their mailboxes.
pub(crate) struct ShardOutputs<'a> {
    shard: &'a Shard,
    stats: &'a LocalStats,
    sessions: &'a mut HashMap<u64, Rc<Mailbox>>,
    /// The pacer's clock, read at most once per hub call, when a line is the first in an empty
    /// queue (see [`Mailbox::queued_at`]): one clock read for a whole fan-out, none per delivery.
    now: Cell<Option<u32>>,
}

/// The pacer's stamp, read once and kept in `now`.
fn clock(now: &Cell<Option<u32>>, pacer: &Pacer) -> u32 {
    match now.get() {
        Some(t) => t,
        None => {
            let t = pacer.stamp();
            now.set(Some(t));
            t
        }
    }
}

impl ShardOutputs<'_> {
    /// Puts `line` in `mailbox`'s queue and counts it delivered, or dropped if the queue is full.
    fn queue(&self, mailbox: &Mailbox, line: &Line) {
        let limit = self.shard.config.queue_limit as usize;
        if mailbox.push_line(line, limit, || clock(&self.now, &self.shard.pacer)) {
            add(&self.stats.deliveries, 1);
        } else {
            add(&self.stats.dropped, 1);
        }
    }
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
            self.queue(handle, line);
        }
    }

    fn lost(&mut self, session: u64, count: u32) {
        if let Some(handle) = self.sessions.get(&session) {
            handle.add_dropped(count);
            add(&self.stats.dropped, u64::from(count));
        }
    }

    fn reply(&mut self, session: u64, reply: Reply) {
        if let Some(handle) = self.sessions.get(&session) {
            handle.push_reply(reply);
        }
    }

    fn tell(&mut self, session: u64, line: &Line) -> Reached {
        let Some(handle) = self.sessions.get(&session) else {
            return Reached::Nobody;
        };
        self.queue(handle, line);
        if handle.has_departed() {
            Reached::InTransit
        } else {
            Reached::Here
        }
    }

    fn log(&mut self, channel: &ChannelName, line: &Line) {
        add(&self.stats.lines, 1);
        self.shard.chanlog.append(channel.key(), line);
    }

    fn save_settings(&mut self, channel: &ChannelName, settings: &Settings) {
        self.shard.settings_to_store.borrow_mut().insert(
            channel.key().clone(),
            (channel.clone(), settings.to_stored()),
        );
        self.shard.ring_settings_bell();
    }

    fn forget_settings(&mut self, channel: &ChannelName) {
        self.shard
            .settings_to_store
            .borrow_mut()
            .remove(channel.key());
        self.shard
            .settings_to_load
            .borrow_mut()
            .remove(channel.key());
    }

    fn load_settings(&mut self, channel: &ChannelName) {
        self.shard
            .settings_to_load
            .borrow_mut()
            .insert(channel.key().clone(), channel.clone());
        self.shard.ring_settings_bell();
    }

    fn unix_now(&self) -> u32 {
        u32::try_from(crate::accounts::unix_now()).unwrap_or(u32::MAX)
    }

    fn times(&self, session: u64) -> Option<(u32, u32)> {
        self.sessions.get(&session)?.times()
    }

    fn adopt(&mut self, traveller: Traveller) -> u64 {
        // The mailbox is in the table before the hub hands out the key, so no line for the new
        // session can miss it; its task starts once the hub is done (see `Shard::take_arrivals`).
        let key = self.shard.new_key();
        let mailbox = Rc::new(Mailbox::arriving(SessionId {
            shard: self.shard.id,
            key,
        }));
        if self.shard.shutting_down.get() {
            mailbox.kick_with(Kick::Shutdown);
        }
        self.sessions.insert(key, mailbox.clone());
        self.shard.arrivals.borrow_mut().push((mailbox, traveller));
        key
    }

    fn release(&mut self, session: u64) -> (Vec<Line>, u32) {
        match self.sessions.remove(&session) {
            Some(mailbox) => mailbox.take_left_behind(),
            None => (Vec::new(), 0),
        }
    }

    fn dropped_on_the_way(&self, dest: ShardId, channel: ChannelId) -> u32 {
        let lost = self.shard.outboxes[dest.index()].lost.borrow();
        // Nearly always empty: no hashing unless something was lost.
        if lost.is_empty() {
            return 0;
        }
        lost.get(&channel).copied().unwrap_or(0)
    }

    fn to_cluster(&mut self, msg: ClusterOut) {
        if let Some(link) = &self.shard.cluster {
            link.send(msg);
        }
    }

    fn forwarded(&mut self, session: u64, lines: Vec<Line>, dropped: u32) {
        if let Some(mailbox) = self.sessions.get(&session) {
            let limit = self.shard.config.queue_limit as usize;
            let cut = mailbox.take_forwarded(lines, dropped, limit, || {
                clock(&self.now, &self.shard.pacer)
            });
            add(&self.stats.dropped, u64::from(cut));
        }
    }

    fn audit(&mut self, entry: &str) {
        self.shard.audit(entry);
    }

    fn disconnect(&mut self, session: u64, farewell: &Line) -> Reached {
        let Some(mailbox) = self.sessions.get(&session) else {
            return Reached::Nobody;
        };
        // What is left of a session that has moved on is read by nobody.
        if mailbox.has_departed() {
            return Reached::InTransit;
        }
        self.shard
            .farewells
            .borrow_mut()
            .insert(session, farewell.clone());
        mailbox.kick_with(Kick::Disconnected);
        Reached::Here
    }

    fn wall(&mut self, line: &Line) {
        // Sessions on their way here or away included: a line that reaches both ends of a move
        // is seen twice rather than one that reaches neither missed.
        for mailbox in self.sessions.values().filter(|m| m.is_logged_in()) {
            self.queue(mailbox, line);
        }
    }
}

/// Removes a session from its shard's table when the session ends, however it ends, unless it
/// moved to another shard: then its mailbox stays in the table, holding the lines that still
/// arrive for it, until its channel's home says it has taken its place (see `Shard::depart`).
pub struct Registration {
    shard: Rc<Shard>,
    mailbox: Rc<Mailbox>,
}

impl Registration {
    /// The session's mailbox, which the shard fills.
    pub fn mailbox(&self) -> &Rc<Mailbox> {
        &self.mailbox
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        let key = self.mailbox.id.key;
        self.shard.farewells.borrow_mut().remove(&key);
        if self.mailbox.has_departed() {
            return;
        }
        self.shard.sessions.borrow_mut().remove(&key);
        self.shard.chat(|hub, out| hub.session_ended(key, out));
    }
}

impl Shard {
    /// Wakes the settings writer (see [`Shard::store_settings`]).
    pub(crate) fn ring_settings_bell(&self) {
        if let Some(waker) = self.settings_writer.borrow_mut().take() {
            waker.wake();
        }
    }

    /// Stores the channel settings changed at this shard's homes, one channel at a time, each
    /// store awaited before the next (so a channel's changes are stored in the order made: only
    /// its home makes them), until [`Shard::close_settings`] and nothing is left to store. A
    /// store that fails is logged; the change stays in force until the server stops.
    ///
    /// In a cluster it also reads the settings of channels whose home has just become this node
    /// (see [`Outputs::load_settings`]), once nothing is left to store: a channel this node was
    /// the home of before reads back what it stored then.
    pub async fn store_settings(self: Rc<Self>) {
        loop {
            let next = {
                let mut pending = self.settings_to_store.borrow_mut();
                let key = pending.keys().next().cloned();
                key.and_then(|key| pending.remove(&key))
            };
            if let Some((name, settings)) = next {
                match self.accounts.save_channel_settings(&name, settings).await {
                    Ok(true) => {}
                    Ok(false) => {
                        warn!(channel = %name, "channel settings not stored: no such channel in the database")
                    }
                    Err(e) => warn!(channel = %name, error = %e, "channel settings not stored"),
                }
                continue;
            }
            // A closing shard takes no more changes: nothing to read for.
            if self.settings_closing.get() {
                return;
            }
            let many = self.settings_to_load.borrow().len() > LOAD_ONE_BY_ONE_UP_TO;
            if many {
                // A node that takes over many channels at once (another has gone) reads them
                // all in one pass, rather than one request each.
                let loads: Vec<ChannelName> = self
                    .settings_to_load
                    .borrow_mut()
                    .drain()
                    .map(|(_, name)| name)
                    .collect();
                let mut stored: HashMap<Arc<str>, ChannelSettings> = match self
                    .accounts
                    .all_channel_settings()
                    .await
                {
                    Ok(all) => all
                        .into_iter()
                        .map(|(name, settings)| (name.key().clone(), settings))
                        .collect(),
                    Err(e) => {
                        warn!(channels = loads.len(), error = %e, "cluster: cannot read the settings of channels this node has taken over; asking again in a second");
                        self.load_again(loads).await;
                        continue;
                    }
                };
                self.chat(|hub, out| {
                    for name in loads {
                        let settings = stored.remove(name.key()).map(Settings::from_stored);
                        hub.settings_loaded(&name, settings, out);
                    }
                });
                continue;
            }
            let load = {
                let mut pending = self.settings_to_load.borrow_mut();
                let key = pending.keys().next().cloned();
                key.and_then(|key| pending.remove(&key))
            };
            if let Some(name) = load {
                match self.accounts.channel_settings(&name).await {
                    Ok(stored) => {
                        let stored = stored.map(Settings::from_stored);
                        self.chat(|hub, out| hub.settings_loaded(&name, stored, out));
                    }
                    Err(e) => {
                        warn!(channel = %name, error = %e, "cluster: cannot read a channel's settings; asking again in a second");
                        self.load_again(vec![name]).await;
                    }
                }
                continue;
            }
            futures::future::poll_fn(|cx| {
                if !self.settings_to_store.borrow().is_empty()
                    || !self.settings_to_load.borrow().is_empty()
                    || self.settings_closing.get()
                {
                    Poll::Ready(())
                } else {
                    *self.settings_writer.borrow_mut() = Some(cx.waker().clone());
                    Poll::Pending
                }
            })
            .await;
        }
    }

    /// Reads that failed are asked again after a second: until then their channels keep refusing
    /// changes (see [`crate::channel::Settings::loading`]) rather than go on without the bans
    /// stored. A read put back for a channel deleted meanwhile finds no record waiting for it
    /// ([`Hub::settings_loaded`]), and does nothing.
    async fn load_again(&self, names: Vec<ChannelName>) {
        glommio::timer::sleep(std::time::Duration::from_secs(1)).await;
        let mut pending = self.settings_to_load.borrow_mut();
        for name in names {
            pending.entry(name.key().clone()).or_insert(name);
        }
    }

    /// Records an admin's or owner's action in the audit log (`entry`: `<actor> <what>`), without
    /// waiting.
    pub fn audit(&self, entry: &str) {
        self.audit.record(entry);
    }

    /// What local session `key`, which an admin ended, is to tell its user as it closes (once).
    pub fn take_farewell(&self, key: u64) -> Option<Line> {
        self.farewells.borrow_mut().remove(&key)
    }

    /// Lets the settings writer end once it has stored everything (the shard is closing).
    pub fn close_settings(&self) {
        self.settings_closing.set(true);
        self.ring_settings_bell();
    }

    /// A shard with no sessions, home to `channels`.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        id: ShardId,
        shards: usize,
        config: Arc<Config>,
        accounts: Accounts,
        stats: Arc<Stats>,
        defences: Arc<Defences>,
        live: Arc<Live>,
        chanlog: ChannelLog,
        audit: AuditLog,
        channels: Vec<(ChannelName, Settings)>,
        readiness: Readiness,
        cluster: Option<(ShardLink, Arc<str>)>,
        asks: crossbeam_channel::Receiver<Ask>,
    ) -> Shard {
        let listeners = config.listeners().len();
        let mut hub = Hub::new(id, shards, config.channel_capacity, config.colocate_up_to);
        hub.keep_history(config.history_lines as usize);
        let cluster = cluster.map(|(link, node)| {
            hub.join_cluster(node, crate::cluster::now_ms());
            link
        });
        for (name, settings) in channels {
            hub.open(name.clone());
            hub.set_settings(&name, settings);
        }
        Shard {
            id,
            hub: RefCell::new(hub),
            pacer: Pacer::new(config.write_interval_us),
            outboxes: (0..shards).map(|_| Outbox::default()).collect(),
            chanlog,
            audit,
            farewells: RefCell::new(HashMap::new()),
            config,
            accounts,
            stats,
            local: LocalStats::default(),
            asks,
            defences,
            live,
            limit_logs: RefCell::new(std::array::from_fn(|_| {
                LogLimiter::new(std::time::Duration::from_secs(1))
            })),
            sessions: RefCell::new(HashMap::new()),
            next_key: Cell::new(1),
            login_deadlines: RefCell::new(VecDeque::new()),
            scratch: RefCell::new(vec![0; READ_SCRATCH].into_boxed_slice()),
            shutting_down: Cell::new(false),
            settings_to_store: RefCell::new(HashMap::new()),
            settings_to_load: RefCell::new(HashMap::new()),
            settings_writer: RefCell::new(None),
            settings_closing: Cell::new(false),
            readiness,
            listeners_ready: (0..listeners).map(|_| Cell::new(true)).collect(),
            acceptors: RefCell::new((0..listeners).map(|_| None).collect()),
            arrivals: RefCell::new(Vec::new()),
            cluster,
        }
    }

    fn new_key(&self) -> u64 {
        let key = self.next_key.get();
        self.next_key.set(key + 1);
        key
    }

    /// Adds a session to the table; it leaves the table when the returned registration is dropped.
    pub fn register(self: &Rc<Self>, now: Instant) -> Registration {
        let key = self.new_key();
        let handle = Rc::new(Mailbox::new(SessionId {
            shard: self.id,
            key,
        }));
        if self.shutting_down.get() {
            handle.kick_with(Kick::Shutdown);
        }
        self.sessions.borrow_mut().insert(key, handle.clone());
        self.login_deadlines
            .borrow_mut()
            .push_back((now + self.config.login_timeout(), key));
        Registration {
            shard: self.clone(),
            mailbox: handle,
        }
    }

    /// Sessions that moved here since the last call, each with the mailbox the hub already fills
    /// and the registration that will take it out of the table when it ends.
    pub(crate) fn take_arrivals(self: &Rc<Self>) -> Vec<(Registration, Traveller)> {
        let arrivals = std::mem::take(&mut *self.arrivals.borrow_mut());
        arrivals
            .into_iter()
            .map(|(mailbox, traveller)| {
                let registration = Registration {
                    shard: self.clone(),
                    mailbox,
                };
                (registration, traveller)
            })
            .collect()
    }

    /// Whether sessions have moved here and wait for their tasks.
    pub(crate) fn has_arrivals(&self) -> bool {
        !self.arrivals.borrow().is_empty()
    }

    /// Sends a session to its channel's home as `traveller`. Its mailbox stays in the table, and
    /// its registration no longer removes it: the home's answer does ([`Outputs::release`]).
    pub(crate) fn depart(&self, registration: Registration, traveller: Traveller) {
        let key = registration.mailbox.id.key;
        registration.mailbox.set_departed();
        drop(registration);
        self.chat(|hub, out| hub.depart(key, traveller, out));
    }

    /// Passes a readiness report to whoever owns the socket: an accept loop or a session. Reports
    /// for sessions that have ended are dropped (keys are never reused).
    pub(crate) fn route_ready(&self, token: u64, ready: Ready) {
        if token >= LISTENER_TOKENS {
            let index = usize::try_from(token - LISTENER_TOKENS).unwrap_or(usize::MAX);
            if let Some(flag) = self.listeners_ready.get(index) {
                if ready.contains(Ready::READ) {
                    flag.set(true);
                    if let Some(w) = self.acceptors.borrow_mut()[index].take() {
                        w.wake();
                    }
                }
            }
        } else if let Some(handle) = self.sessions.borrow().get(&token) {
            handle.set_ready(ready);
        }
    }

    /// Records that listening socket `index` has no connection waiting: its accept loop waits for
    /// the next readiness report.
    pub(crate) fn listener_drained(&self, index: usize) {
        if let Some(flag) = self.listeners_ready.get(index) {
            flag.set(false);
        }
    }

    /// The next message for the ring to `dest`, once there is one.
    pub(crate) fn poll_outbox(&self, dest: ShardId, cx: &mut Context<'_>) -> Poll<ShardMsg> {
        self.outboxes[dest.index()].poll_pop(cx)
    }

    /// The next message for the ring to `dest`, if one is waiting.
    pub(crate) fn take_outbox(&self, dest: ShardId) -> Option<ShardMsg> {
        self.outboxes[dest.index()].pop()
    }

    /// Shards in the server (one outbox each, its own unused).
    pub(crate) fn shards(&self) -> usize {
        self.outboxes.len()
    }

    /// Ready while listening socket `index` may have connections waiting.
    pub(crate) fn poll_listener(&self, index: usize, cx: &mut Context<'_>) -> Poll<()> {
        if self.listeners_ready.get(index).is_some_and(Cell::get) {
            return Poll::Ready(());
        }
        if let Some(waker) = self.acceptors.borrow_mut().get_mut(index) {
            *waker = Some(cx.waker().clone());
        }
        Poll::Pending
    }

    /// Runs a chat action on this shard's hub, with the shard as its outputs; returns what `f` returns.
    /// Never awaits, so no borrow outlives it.
    pub(crate) fn chat<R>(&self, f: impl FnOnce(&mut Hub, &mut ShardOutputs<'_>) -> R) -> R {
        let mut sessions = self.sessions.borrow_mut();
        let mut out = ShardOutputs {
            shard: self,
            stats: &self.local,
            sessions: &mut sessions,
            now: Cell::new(None),
        };
        let mut hub = self.hub.borrow_mut();
        f(&mut hub, &mut out)
    }

    /// Answers every question other threads have asked about this shard's per-line counters
    /// ([`crate::stats::Ask`]), without waiting; returns how many. Called by the inbox task, which
    /// the asker rings.
    pub(crate) fn answer_asks(&self) -> u32 {
        let mut answered = 0;
        while let Ok(ask) = self.asks.try_recv() {
            let (channels, members) = {
                let hub = self.hub.borrow();
                (hub.homed_channels() as u64, hub.local_members() as u64)
            };
            ask.answer(self.id.index(), self.local.snapshot(channels, members));
            answered += 1;
        }
        answered
    }

    /// Counts `lines` just taken from a session's queue to be written, the oldest of them queued
    /// at `queued_at` (a pacer stamp): each is counted in the latency histogram at the oldest's
    /// wait, an upper bound that costs one clock read per write rather than one per line.
    pub(crate) fn note_written(&self, queued_at: Option<u32>, lines: usize) {
        if let (Some(at), n @ 1..) = (queued_at, lines) {
            self.local
                .latency
                .observe(self.pacer.waited_us(at), n as u64);
        }
    }

    /// Counts a login attempt that ended as `outcome`.
    pub(crate) fn note_login(&self, outcome: LoginOutcome) {
        self.stats.shard(self.id.index()).login(outcome);
    }

    /// Sessions on this shard (not counting the mailboxes of sessions that have moved away and
    /// whose channel's home has not yet answered).
    pub fn session_count(&self) -> usize {
        self.sessions
            .borrow()
            .values()
            .filter(|m| !m.has_departed())
            .count()
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
                if !handle.is_logged_in() {
                    handle.kick_with(Kick::LoginTimeout);
                    expired += 1;
                }
            }
        }
        expired
    }

    /// Counts a hit of `limit` by a connection from `ip` (`None`: an exempt address), and logs it
    /// unless that kind was logged less than a second ago.
    pub fn note_limit(&self, limit: Limit, ip: Option<IpAddr>) {
        self.stats.shard(self.id.index()).hit(limit);
        if let Some(held) = self.limit_logs.borrow_mut()[limit.index()].allow(Instant::now()) {
            let address = ip.map_or_else(|| "exempt".to_string(), |ip| ip.to_string());
            info!(shard = self.id.0, limit = limit.name(), %address, repeats = held, "limit hit");
        }
    }

    /// Asks every session to say goodbye and close.
    pub fn kick_all(&self) {
        self.shutting_down.set(true);
        for handle in self.sessions.borrow().values() {
            handle.kick_with(Kick::Shutdown);
        }
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
        let stats = &LocalStats::default();
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
        assert_eq!(stats.ring_dropped.get(), 7);
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
}
