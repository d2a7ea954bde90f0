//! The tasks of one shard's executor, and how a shard starts and stops.
//!
//! Above the sessions: this is what accepts a connection and starts its session (or takes up one
//! that moved here from another shard), moves messages between the shard's outboxes and the rings
//! to other shards, routes socket readiness to sessions, closes connections that do not log in in
//! time, and at the end tells every session to go. Which task awaits what is the graph in
//! docs/ARCHITECTURE.md; none of them awaits a send into a ring but the pump, which receives from
//! no ring.

use std::cell::RefCell;
use std::os::fd::{AsFd, FromRawFd, OwnedFd, RawFd};
use std::pin::pin;
use std::rc::Rc;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

use futures::channel::oneshot;
use futures::future::{poll_fn, select, Either};
use glommio::sync::Gate;
use shard_proto::{ChannelName, ShardId};

use crate::channel::Settings;
use tracing::{debug, info, warn};

use crate::accounts::Accounts;
use crate::audit::AuditLog;
use crate::chanlog::ChannelLog;
use crate::cluster::link::ShardLink;
use crate::config::Config;
use crate::defences::{Admission, Defences, Refusal, Ticket};
use crate::listener::{self, LogLimiter, Serves};
use crate::live::Live;
use crate::mailbox::{urgent_at, SHUTDOWN_GRACE};
use crate::mesh::{Doorbell, RingRx, RingTx, Waiter};
use crate::readiness::Readiness;
use crate::session::{Arrival, Session};
use crate::shard::{listener_token, Shard};
use crate::socket::Socket;
use crate::stats::{Ask, Stats};
use crate::tls::Certificates;
use crate::transport::Transport;

/// How long the accept loop waits after running out of descriptors before it tries again.
const FD_EXHAUSTION_BACKOFF: Duration = Duration::from_millis(100);

/// Connections the accept loop takes in a row before it lets the shard's other tasks run.
const ACCEPT_BATCH: u32 = 64;

/// Everything a shard needs to start, all of it `Send` so it can be moved onto the shard's thread.
pub struct ShardStart {
    /// This shard's index.
    pub id: ShardId,
    /// The listening sockets this shard adopts, one per address in the order of
    /// [`Config::listeners`], with what each serves.
    pub listeners: Vec<(RawFd, Serves)>,
    /// The live TLS certificate, when some address serves TLS.
    pub tls: Option<Arc<Certificates>>,
    /// The server's configuration.
    pub config: Arc<Config>,
    /// The accounts service.
    pub accounts: Accounts,
    /// Shared counters.
    pub stats: Arc<Stats>,
    /// Per-address limits, shared by every shard.
    pub defences: Arc<Defences>,
    /// What a reload may change, shared by every shard.
    pub live: Arc<Live>,
    /// Resolved once the shard should stop.
    pub shutdown: oneshot::Receiver<()>,
    /// Resolved once every shard has started (taken its [`OwnFds`]), and dropped unresolved if the
    /// server could not start. The shard accepts nothing before: the connections it took could use
    /// up every descriptor the process may have while another shard still needs some to start.
    pub go: oneshot::Receiver<()>,
    /// Number of shards.
    pub shards: usize,
    /// The sending ends of the rings from this shard, with their destinations.
    pub ring_out: Vec<(ShardId, RingTx)>,
    /// The receiving ends of the rings into this shard.
    pub ring_in: Vec<RingRx>,
    /// The channel log writer.
    pub chanlog: ChannelLog,
    /// The audit log writer.
    pub audit: AuditLog,
    /// The channels homed on this shard.
    pub channels: Vec<(ChannelName, Settings)>,
    /// In a cluster: this shard's end of the queues to the bridge, and the node's name.
    pub cluster: Option<(ShardLink, Arc<str>)>,
    /// Questions about this shard's counters from other threads (see [`crate::stats`]); the
    /// askers ring the doorbell, and the inbox task answers.
    pub asks: crossbeam_channel::Receiver<Ask>,
}

/// The descriptors a shard holds all its life besides its listener and its executor's own: its
/// epoll set, with the ring and eventfd that wait for it, and the duplicate of its doorbell's
/// eventfd that it reads. Taken before the shard says it has started, because once any shard
/// accepts, connections can take every descriptor the process may have: a shard that then failed
/// to take one of these would close its listener, and with it every connection waiting there.
pub struct OwnFds {
    readiness: Readiness,
    waiter: Waiter,
}

impl OwnFds {
    /// Takes them, on the shard's executor (their waits use its ring). The error says which one
    /// could not be had.
    pub async fn take(doorbell: &Arc<Doorbell>) -> Result<OwnFds, String> {
        let readiness =
            Readiness::new().map_err(|e| format!("socket readiness setup failed: {e}"))?;
        match doorbell.waiter() {
            Ok(waiter) => Ok(OwnFds { readiness, waiter }),
            Err(e) => {
                readiness.close().await;
                Err(format!("cannot open the doorbell: {e}"))
            }
        }
    }

    /// Closes them on the executor, for a shard that ends without running.
    async fn close(self) {
        let OwnFds {
            readiness,
            mut waiter,
        } = self;
        readiness.close().await;
        waiter.close().await;
    }
}

/// The body of a shard's executor: wait until every shard has started, start its tasks, accept
/// until told to stop, then close every session within [`SHUTDOWN_GRACE`].
pub async fn run(start: ShardStart, fds: OwnFds) {
    let ShardStart {
        id,
        listeners,
        tls,
        config,
        accounts,
        stats,
        defences,
        live,
        mut shutdown,
        go,
        shards,
        ring_out,
        ring_in,
        chanlog,
        audit,
        channels,
        cluster,
        asks,
    } = start;
    let listeners: Vec<(OwnedFd, Serves)> = listeners
        .into_iter()
        // SAFETY: each descriptor was created by `listener::open` for this shard alone and is
        // adopted once.
        .map(|(fd, serves)| (unsafe { OwnedFd::from_raw_fd(fd) }, serves))
        .collect();
    if !matches!(select(&mut shutdown, go).await, Either::Right((Ok(()), _))) {
        // The server did not start (or stops already): connections waiting here are refused.
        fds.close().await;
        return;
    }
    let OwnFds {
        readiness,
        mut waiter,
    } = fds;
    let shard = Rc::new(Shard::new(
        id, shards, config, accounts, stats, defences, live, chanlog, audit, channels, readiness,
        cluster, asks,
    ));
    for (index, (listener, _)) in listeners.iter().enumerate() {
        if let Err(e) = shard.readiness.add(listener.as_fd(), listener_token(index)) {
            warn!(shard = id.0, error = %e, "cannot watch a listening socket; this shard accepts nothing");
            shard.readiness.close().await;
            waiter.close().await;
            return;
        }
    }
    let waiter = Rc::new(waiter);
    let router = glommio::spawn_local(route_readiness(shard.clone()));

    let gate = Gate::new();
    let room = Rc::new(RoomWaiters::default());
    let mut ring_tasks = Vec::new();
    for (dest, tx) in ring_out {
        ring_tasks.push(glommio::spawn_local(pump(
            shard.clone(),
            dest,
            Rc::new(tx),
            room.clone(),
        )));
    }
    let inbox_task = glommio::spawn_local(inbox(
        shard.clone(),
        ring_in,
        waiter.clone(),
        room.clone(),
        gate.clone(),
    ));

    let sweeper = glommio::spawn_local(sweep_logins(shard.clone()));
    let settings_writer = glommio::spawn_local(shard.clone().store_settings());
    let pacer = {
        let shard = shard.clone();
        glommio::spawn_local(async move { shard.pacer.run(glommio::timer::sleep).await })
    };
    {
        let loops = listeners.iter().enumerate().map(|(index, (fd, serves))| {
            let listener = Listener {
                fd,
                index,
                tls: match serves {
                    Serves::Telnet => None,
                    Serves::TelnetOverTls => tls.as_deref(),
                },
            };
            accept_loop(listener, &shard, &gate)
        });
        let accepting = pin!(futures::future::join_all(loops));
        if let Either::Right(_) = select(&mut shutdown, accepting).await {
            unreachable!("the accept loops never return");
        }
    }
    drop(listeners);
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
    // What the last commands changed is stored before the shard goes (the writer ends once it
    // has stored everything, the shard being closed).
    shard.close_settings();
    if glommio::timer::timeout(SHUTDOWN_GRACE, async {
        settings_writer.await;
        Ok(())
    })
    .await
    .is_err()
    {
        warn!(
            shard = shard.id.0,
            "channel settings were not all stored in time"
        );
    }
    drop(ring_tasks);
    // Cancelled and waited for, so their waits let go of their eventfds before those are closed.
    inbox_task.cancel().await;
    router.cancel().await;
    shard.readiness.close().await;
    let mut waiter = waiter;
    if let Some(waiter) = Rc::get_mut(&mut waiter) {
        waiter.close().await;
    }
}

/// Pumps waiting for room in their ring, with the ring; the inbox task wakes them when it has some.
#[derive(Default)]
struct RoomWaiters(RefCell<Vec<(Rc<RingTx>, Waker)>>);

impl RoomWaiters {
    fn wait(&self, ring: &Rc<RingTx>, waker: &Waker) {
        self.0.borrow_mut().push((ring.clone(), waker.clone()));
    }

    /// Wakes every pump whose ring has room now.
    fn wake_ready(&self) {
        self.0.borrow_mut().retain(|(ring, waker)| {
            let stays = !ring.has_room();
            if !stays {
                waker.wake_by_ref();
            }
            stays
        });
    }
}

/// Messages a pump pushes in a row before it lets the shard's other tasks run.
const PUMP_BATCH: u32 = 256;

/// Moves messages from the outbox for `dest` into the ring to `dest`, and rings `dest`'s doorbell
/// once per batch. This is the only task that awaits room in that ring, and it receives from no
/// ring, so waiting here can never close a circle.
async fn pump(shard: Rc<Shard>, dest: ShardId, tx: Rc<RingTx>, room: Rc<RoomWaiters>) {
    loop {
        let mut msg = poll_fn(|cx| shard.poll_outbox(dest, cx)).await;
        let mut pushed = 0u32;
        loop {
            match tx.push(msg) {
                Ok(()) => {
                    pushed += 1;
                    if pushed % PUMP_BATCH == 0 {
                        tx.ring_peer();
                        futures_lite::future::yield_now().await;
                    }
                    match shard.take_outbox(dest) {
                        Some(next) => msg = next,
                        None => break,
                    }
                }
                Err(back) => {
                    msg = back;
                    // Full: let the receiver see what is there, and wait until it has taken some.
                    tx.ring_peer();
                    poll_fn(|cx| {
                        if tx.has_room() {
                            Poll::Ready(())
                        } else {
                            room.wait(&tx, cx.waker());
                            Poll::Pending
                        }
                    })
                    .await;
                }
            }
        }
        tx.ring_peer();
    }
}

/// Most messages the inbox task takes from one ring before it lets the sessions it filled write their
/// queues out.
const DRAIN_BATCH: u32 = 16;

/// Messages the inbox task takes from each ring before it yields, on a server of `shards` shards
/// whose session queues hold `queue_limit` lines: at most [`DRAIN_BATCH`], and few enough that one
/// batch from every other shard's ring cannot take a queue that has not yet asked to write at once
/// (fewer than [`urgent_at`] lines) past its limit before its session runs. So a reader that keeps up never
/// loses a line to a burst, whatever the queue limit and the number of shards (down to one message
/// a batch, below which a queue of 1 to 3 lines with many shards can still overflow).
fn drain_batch(queue_limit: usize, shards: usize) -> u32 {
    let room = queue_limit.saturating_sub(urgent_at(queue_limit)) + 1;
    let per_ring = room / shards.saturating_sub(1).max(1);
    (per_ring as u32).clamp(1, DRAIN_BATCH)
}

/// Handles every message arriving from the other shards, a batch from each ring in turn, and
/// wakes the pumps that wait for room; answers questions about the shard's counters (see
/// [`crate::stats`]) in the same turns. When every ring is empty it arms the shard's doorbell, looks
/// once more (for messages, and for room a pump waits for), and waits for the bell. It never awaits a
/// send: whatever handling produces for other shards goes to their outboxes. A session that a
/// message brought (one moving here) gets its task before the next message is handled.
async fn inbox(
    shard: Rc<Shard>,
    rings: Vec<RingRx>,
    waiter: Rc<Waiter>,
    room: Rc<RoomWaiters>,
    gate: Gate,
) {
    let batch = drain_batch(shard.config.queue_limit as usize, shard.shards());
    let mut error_log = LogLimiter::new(Duration::from_secs(1));
    let round = |shard: &Rc<Shard>| {
        let mut handled = 0;
        for ring in &rings {
            let mut taken = 0;
            while taken < batch {
                let Some(msg) = ring.pop() else { break };
                shard.chat(|hub, out| hub.handle(msg, out));
                if shard.has_arrivals() {
                    start_arrivals(shard, &gate);
                }
                taken += 1;
            }
            if taken > 0 {
                ring.after_pops();
            }
            handled += taken;
        }
        // What the bridge brings from other nodes, in the same turns as the rings.
        if let Some(link) = &shard.cluster {
            let mut taken = 0;
            while taken < batch {
                let Some(msg) = link.try_recv() else { break };
                shard.chat(|hub, out| hub.from_cluster(msg, out));
                taken += 1;
            }
            handled += taken;
        }
        // Questions about the counters: a few a scrape, answered without waiting.
        handled + shard.answer_asks()
    };
    // Set once every ring was found empty: the bell is armed and the rings get one more look
    // before the wait (see `crate::mesh`).
    let mut armed = false;
    loop {
        let handled = round(&shard);
        room.wake_ready();
        if handled > 0 {
            if std::mem::take(&mut armed) {
                waiter.disarm();
            }
            futures_lite::future::yield_now().await;
        } else if !armed {
            waiter.arm();
            armed = true;
        } else {
            armed = false;
            if let Err(err) = waiter.wait().await {
                // The bell is closed only after this task is cancelled, so this is a real failure.
                // Whatever failed is not going to be fixed by trying again at once; messages keep
                // arriving meanwhile and are taken on the next pass.
                if let Some(held) = error_log.allow(Instant::now()) {
                    warn!(shard = shard.id.0, error = %err, repeats = held, "waiting for the doorbell failed");
                }
                waiter.disarm();
                glommio::timer::sleep(FD_EXHAUSTION_BACKOFF).await;
            }
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

/// One of the shard's listening sockets, as its accept loop uses it.
struct Listener<'a> {
    fd: &'a OwnedFd,
    /// Its place in the shard's listeners (its readiness token's).
    index: usize,
    /// The certificate its connections' handshakes use; `None` for plain telnet.
    tls: Option<&'a Certificates>,
}

/// Accepts connections while the listener has them, in batches of [`ACCEPT_BATCH`], and waits for
/// the readiness report when it has none. Every listener of a shard has a loop of its own.
async fn accept_loop(listener: Listener<'_>, shard: &Rc<Shard>, gate: &Gate) {
    let mut exhausted_log = LogLimiter::new(Duration::from_secs(1));
    let mut error_log = LogLimiter::new(Duration::from_secs(1));
    let mut unwatched_log = LogLimiter::new(Duration::from_secs(1));
    let mut in_a_row = 0u32;
    loop {
        poll_fn(|cx| shard.poll_listener(listener.index, cx)).await;
        match Socket::accept(listener.fd.as_fd()) {
            Ok((socket, peer)) => {
                let counters = shard.stats.shard(shard.id.index());
                counters.accepted.fetch_add(1, Relaxed);
                // A TCP peer always has an IP address; one without is treated as exempt.
                let ticket = match peer.map(|p| (p.ip(), shard.defences.admit(p.ip()))) {
                    None | Some((_, Admission::Exempt)) => None,
                    Some((_, Admission::Admitted(ticket))) => Some(ticket),
                    Some((ip, Admission::Refused(why))) => {
                        shard.note_limit(why.limit(), Some(ip));
                        refuse(shard, socket, why, listener.tls.is_some());
                        in_a_row += 1;
                        if in_a_row % ACCEPT_BATCH == 0 {
                            futures_lite::future::yield_now().await;
                        }
                        continue;
                    }
                };
                let transport = match listener.tls {
                    None => Transport::plain(socket),
                    Some(certificates) => match certificates.accept() {
                        Ok(conn) => Transport::tls(socket, conn),
                        Err(err) => {
                            if let Some(held) = error_log.allow(Instant::now()) {
                                warn!(shard = shard.id.0, error = %err, repeats = held,
                                      "cannot start TLS for a new connection, so it is closed");
                            }
                            continue;
                        }
                    },
                };
                if let Err(err) = start_session(transport, shard, gate, ticket) {
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
                shard.listener_drained(listener.index);
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

/// Reads a refused connection's first bytes, writes it the one line that says why, and closes it.
/// Never waits: a fresh socket's send buffer is empty, so the line fits. The input is read first
/// because closing a socket with unread input resets the connection, and the reset can overtake
/// the line; a client that keeps sending after that is reset, which is all it asked for. A TLS
/// client is closed without the line, which it could only take as a broken handshake.
fn refuse(shard: &Shard, socket: Socket, why: Refusal, tls: bool) {
    shard.with_scratch(|buf| {
        for _ in 0..4 {
            if !matches!(socket.recv(buf), Ok(n) if n > 0) {
                break;
            }
        }
    });
    if !tls {
        let line = format!("{}\r\n", why.message());
        let _ = socket.send(line.as_bytes());
    }
    let _ = socket.shutdown_write();
}

/// Starts a session for a new connection, holding `ticket` (its place in its address's counts;
/// `None` for an exempt address). An error means the shard could not watch the socket (the
/// kernel's epoll limits); the connection is then closed unanswered.
fn start_session(
    transport: Transport,
    shard: &Rc<Shard>,
    gate: &Gate,
    ticket: Option<Ticket>,
) -> std::io::Result<()> {
    // Socket options come from the listener (see `listener::open`): nothing to set per connection.
    // The session holds its own pass through the gate. `Gate::spawn` would wrap the session's future
    // in another that owns a second copy of it, doubling every session task (~1 kB each).
    let Ok(pass) = gate.enter() else {
        return Ok(()); // shutting down
    };
    let session = Session::new(transport, shard.clone(), Instant::now(), pass, ticket);
    let key = session.key();
    // Watched only once the session is in the table, so no report can miss it.
    shard.readiness.add(session.transport().as_fd(), key)?;
    glommio::spawn_local(session.run()).detach();
    Ok(())
}

/// Starts a task for every session that has moved here. One that cannot run here (the shard is
/// closing, or its socket cannot be watched) ends at once: its registration takes it out of its
/// channel, and its connection closes.
fn start_arrivals(shard: &Rc<Shard>, gate: &Gate) {
    for (registration, traveller) in shard.take_arrivals() {
        let Ok(arrival) = traveller.0.downcast::<Arrival>() else {
            warn!(
                shard = shard.id.0,
                "a traveller that is not a session was dropped"
            );
            continue;
        };
        // A session not taken up here has gone: the directory, which heard it was moving, hears
        // that too (or it would hold what is sent to it, and its senders would wait).
        let gone = |name: &str, from| shard.chat(|hub, out| hub.user_gone(name, from, out));
        let Ok(pass) = gate.enter() else {
            // Closing: the arrival, dropped, tells its user so.
            if let Some((name, from)) = arrival.who() {
                gone(name, from);
            }
            continue;
        };
        let key = registration.mailbox().id.key;
        let (session, user, came_from) =
            Session::arrived(*arrival, shard.clone(), registration, pass);
        if let Err(err) = shard.readiness.add(session.transport().as_fd(), key) {
            // The session, dropped, ends like any other: out of its channel, connection closed.
            warn!(shard = shard.id.0, error = %err, "cannot watch a connection that moved here, so it is closed");
            gone(&user.name, came_from.0);
            continue;
        }
        glommio::spawn_local(session.run_arrived(user, came_from)).detach();
    }
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
}
