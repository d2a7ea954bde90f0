//! One connection, from accept to close: the login dialogue, then commands, on a single task.
//!
//! A session is one task that owns its connection (a [`Transport`]: the socket, with TLS around
//! the bytes on a TLS port; nothing else here knows the difference). It reads only while the shard's
//! [`Readiness`](crate::readiness) set says the kernel may have bytes for it, into the shard's shared
//! read buffer, and decodes them at once, so an idle session holds no read buffer. What it
//! writes collects in `out` and is flushed whenever the task runs; a peer that stops reading stops only
//! its own session, and the kernel send buffer is capped so such a peer cannot pin much memory.
//!
//! The shard reaches a session only through its [`Mailbox`](crate::mailbox::Mailbox): it sets a [`Kick`] and wakes the task,
//! which notices on its next poll. Every wait in here (for input, for the worker pool) also watches for a
//! kick, so shutdown and the login timeout are never held up by a slow bcrypt or a silent peer.
//!
//! A session that joins a small channel homed on another shard moves there (see
//! [`shard_proto::ToHome::Move`]): its task ends here between two commands, and what it is made of
//! (socket, terminal, unsent output, user) travels as an [`Arrival`] to a new task on the home's
//! shard, which goes on with the next command. The user sees nothing of it.

use std::future::Future;
use std::io;
use std::os::fd::AsFd;
use std::pin::pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures::future::poll_fn;
use glommio::sync::Pass;
use tracing::debug;

use std::sync::Arc;

use shard_proto::{SessionId, Traveller};

use crate::accounts::{self, AccountError, Created, LoggedIn, Login, User};
use crate::cmd;
use crate::defences::flood::{flood_notice, Flood};
use crate::defences::{account_slowed_notice, in_time, Checking, Limit, LoginStart, Ticket};
use crate::hub::Personal;
use crate::line::FinishedLine;
use crate::mailbox::{drop_notice, Kick, Reply, SHUTDOWN_GRACE};
use crate::mssp;
use crate::pacing::PaceState;
use crate::readiness::Ready;
use crate::shard::{Registration, Shard};
use crate::stats::{Gauge, GaugeGuard, LoginOutcome};
use crate::terminal::{Input, Terminal};
use crate::transport::Transport;

/// Wrong passwords in a row after which the connection is closed.
pub const MAX_PASSWORD_FAILURES: u32 = 3;

/// Unsent output above which the session stops reading input: a peer that does not read what it is
/// sent gets no more echo or replies queued for it.
const OUT_HIGH_WATER: usize = 64 * 1024;

/// Bytes a write may need beyond its lines: erasing the prompt row and drawing the prompt and a
/// half-typed line again (character mode), or the drop notice.
const REDRAW_ROOM: usize = 128;

/// How often a login waits to ask again for its address's turn to have a password checked.
const TURN_RETRY: Duration = Duration::from_millis(50);

/// A login's turn to have its password checked (see [`Session::take_turn`]).
enum Turn {
    /// An exempt address: no turns.
    Exempt,
    /// The address's turn, given back when this is dropped.
    Mine(Checking),
    /// Failed logins hold the address back; the user has been told.
    Refused,
}

/// Reads a session makes in a row while it holds back a flood before it lets other tasks run.
const READS_PER_TURN: usize = 8;

/// How long a closing session waits for its last words to be sent.
const CLOSE_GRACE: Duration = Duration::from_secs(5);

/// Why a session stopped before its user logged off.
#[derive(Debug)]
pub(crate) enum Stop {
    /// The peer closed the connection, or it failed.
    Closed,
    /// The shard asked the session to end.
    Kicked(Kick),
    /// The user logged off (`/quit` or ^D).
    Quit,
    /// Too many wrong passwords.
    TooManyFailures,
    /// The session goes on at its channel's home shard.
    MoveHome,
    /// The user deleted their account, and has been told so (`/delete-account`).
    AccountDeleted,
    /// A crawler asked for the MSSP table as text, and has it.
    Answered,
}

/// A logged-in session on its way to another shard: everything its new task needs. One that is
/// dropped before a shard takes it up (the shard it goes to is closing, or the server has stopped
/// with it still in a ring) tells its user the server is shutting down, as far as its socket takes
/// at once, and closes the connection.
pub struct Arrival(Option<Parts>);

/// What an [`Arrival`] carries.
struct Parts {
    transport: Transport,
    term: Terminal,
    /// Output not yet sent, already telnet-escaped.
    out: Vec<u8>,
    user: User,
    limits: Option<Box<Limits>>,
    /// The session as the shard it leaves knew it.
    from: SessionId,
    /// When the user logged in and last typed (see [`crate::mailbox::Mailbox::times`]).
    times: (u32, u32),
    /// What the shard kept for the user (who last told them something, away).
    personal: Option<Personal>,
}

/// What a connection from an address that is not exempt carries: its place in its address's
/// counts, and its flood bucket with the lines held back by it. Boxed in the session, so an exempt
/// connection (every load-test client) pays one pointer for it.
#[derive(Debug)]
struct Limits {
    ticket: Ticket,
    flood: Flood<Input>,
}

impl Arrival {
    /// The user and the session as the shard it left knew it, for the directory to hear that
    /// it has gone when it cannot be taken up.
    pub fn who(&self) -> Option<(&str, SessionId)> {
        self.0.as_ref().map(|p| (&*p.user.name, p.from))
    }
}

impl Drop for Arrival {
    fn drop(&mut self) {
        if let Some(mut parts) = self.0.take() {
            parts
                .term
                .print(&["Server is shutting down."], &mut parts.out);
            let _ = parts.transport.send(&parts.out);
            let _ = parts.transport.shutdown_write();
        }
    }
}

/// One connection and everything it needs.
pub struct Session {
    transport: Transport,
    shard: Rc<Shard>,
    registration: Registration,
    term: Terminal,
    /// Bytes to send, already telnet-escaped.
    out: Vec<u8>,
    /// How much of `out` the socket has taken.
    written: usize,
    /// This connection's write budget with the shard's [`Pacer`](crate::pacing::Pacer).
    pace: PaceState,
    /// Per-address counts and flood control; `None` for an exempt address.
    limits: Option<Box<Limits>>,
    _connection: GaugeGuard,
    /// Keeps the shard's shutdown gate open until this session is gone.
    _pass: Pass,
}

impl Session {
    /// A session for a freshly accepted connection, holding `ticket`, its place in its address's
    /// counts (`None` for an exempt address, which no per-address limit or flood control applies to).
    pub fn new(
        transport: Transport,
        shard: Rc<Shard>,
        now: Instant,
        pass: Pass,
        ticket: Option<Ticket>,
    ) -> Session {
        let registration = shard.register(now);
        let connection = GaugeGuard::new(shard.stats.clone(), shard.id.index(), Gauge::Connections);
        let limits = ticket.map(|ticket| {
            Box::new(Limits {
                ticket,
                flood: Flood::new(shard.defences.flood(), now),
            })
        });
        Session {
            limits,
            transport,
            shard,
            registration,
            term: Terminal::new(),
            out: Vec::new(),
            written: 0,
            pace: PaceState::default(),
            _connection: connection,
            _pass: pass,
        }
    }

    /// A session that moved here from another shard, under `registration` (its mailbox is already
    /// in this shard's table). Its task is [`Session::run_arrived`].
    pub fn arrived(
        mut arrival: Arrival,
        shard: Rc<Shard>,
        registration: Registration,
        pass: Pass,
    ) -> (Session, User, (SessionId, Option<Personal>)) {
        let Parts {
            transport,
            term,
            out,
            user,
            limits,
            from,
            times,
            personal,
        } = arrival.0.take().expect("an arrival is taken up once");
        registration.mailbox().set_times(times.0, times.1);
        let connection = GaugeGuard::new(shard.stats.clone(), shard.id.index(), Gauge::Connections);
        let session = Session {
            transport,
            shard,
            registration,
            term,
            out,
            written: 0,
            pace: PaceState::default(),
            limits,
            _connection: connection,
            _pass: pass,
        };
        (session, user, (from, personal))
    }

    /// The key the shard knows this session by (and its socket's readiness token).
    pub fn key(&self) -> u64 {
        self.registration.mailbox().id.key
    }

    /// The session's connection (its socket, for the shard's readiness set).
    pub fn transport(&self) -> &Transport {
        &self.transport
    }

    /// Serves the connection until it ends, then says why and closes it.
    ///
    /// Not an `async fn`: an `async fn run(mut self)` keeps the argument and its `mut` rebinding as
    /// two copies of the session in the task (368 bytes each). Capturing an already `mut` binding
    /// keeps one.
    pub fn run(self) -> impl Future<Output = ()> {
        let mut session = self;
        async move {
            let mut user = None;
            let outcome = session.serve(&mut user).await;
            let outcome = session.unless_kicked(outcome);
            let personal = user.as_ref().and_then(|u| session.user_left(u, &outcome));
            match (outcome, user) {
                (Err(Stop::MoveHome), Some(user)) => session.move_home(user, personal),
                (outcome, _) => {
                    debug!(session = %session.registration.mailbox().id, ?outcome, "session ends");
                    // Boxed: needed once, at the end, so the task does not reserve room for it
                    // all its life.
                    Box::pin(session.close(outcome)).await;
                }
            }
        }
    }

    /// Serves a session that moved here (see [`Session::arrived`]) until it ends, or moves again.
    /// `came`: the session as the shard it left knew it, and who last told it something.
    pub fn run_arrived(
        self,
        user: User,
        came: (SessionId, Option<Personal>),
    ) -> impl Future<Output = ()> {
        // Said here, not in the task, which would keep `came` all its life.
        let key = self.key();
        let (from, personal) = came;
        let name: Arc<str> = user.name.clone();
        self.shard
            .chat(|hub, out| hub.user_arrived(&name, from, key, personal, out));
        let mut session = self;
        async move {
            let outcome = session.chat_logged_in(&user, &name).await;
            let outcome = session.unless_kicked(outcome);
            let personal = session.user_left(&user, &outcome);
            if let Err(Stop::MoveHome) = outcome {
                return session.move_home(user, personal);
            }
            debug!(session = %session.registration.mailbox().id, ?outcome, "session ends");
            Box::pin(session.close(outcome)).await;
        }
    }

    /// A session about to move that its shard has kicked meanwhile ends here instead: the kick
    /// would stay in the mailbox it leaves behind, which no session reads (an admin's order to
    /// end it would be lost).
    fn unless_kicked(&self, outcome: Result<(), Stop>) -> Result<(), Stop> {
        match (outcome, self.registration.mailbox().kick()) {
            (Err(Stop::MoveHome), Some(kick)) => Err(Stop::Kicked(kick)),
            (outcome, _) => outcome,
        }
    }

    /// Tells the directory of who is online where that this logged-in session ends, or moves
    /// (then returns what the shard kept for the user, to take along).
    fn user_left(&self, user: &User, outcome: &Result<(), Stop>) -> Option<Personal> {
        let key = self.key();
        if !matches!(outcome, Err(Stop::MoveHome | Stop::AccountDeleted)) {
            self.record_last_seen(user);
        }
        self.shard.chat(|hub, out| match outcome {
            Err(Stop::MoveHome) => hub.user_moving(&user.name, key, out),
            _ => {
                hub.user_offline(&user.name, key, out);
                None
            }
        })
    }

    /// Records that the user was seen until now, without waiting for it: the write is queued at
    /// once and runs even if nobody waits (see [`Accounts::record_last_seen`]), and a detached
    /// task only logs a failure.
    ///
    /// [`Accounts::record_last_seen`]: crate::accounts::Accounts::record_last_seen
    fn record_last_seen(&self, user: &User) {
        let recorded = self
            .shard
            .accounts
            .record_last_seen(&user.name, accounts::unix_now());
        glommio::spawn_local(async move {
            if let Err(e) = recorded.await {
                debug!(error = %e, "cannot record when a user was last seen");
            }
        })
        .detach();
    }

    /// Hands the connection to its channel's home shard. Its socket leaves this shard's readiness
    /// set first, so nothing here touches it again.
    fn move_home(self, user: User, personal: Option<Personal>) {
        let Session {
            transport,
            shard,
            registration,
            term,
            mut out,
            written,
            limits,
            ..
        } = self;
        if let Err(err) = shard.readiness.remove(transport.as_fd()) {
            // Still watched here, it would be read by two shards: end it instead (the directory
            // heard it was moving: it hears it has gone).
            debug!(session = %registration.mailbox().id, error = %err, "cannot move; closing");
            let key = registration.mailbox().id.key;
            shard.chat(|hub, out| hub.user_offline(&user.name, key, out));
            return;
        }
        out.drain(..written);
        let from = registration.mailbox().id;
        let times = registration.mailbox().times().unwrap_or_default();
        let arrival = Arrival(Some(Parts {
            transport,
            term,
            out,
            user,
            limits,
            from,
            times,
            personal,
        }));
        shard.depart(registration, Traveller(Box::new(arrival)));
    }

    /// Says why the session ends (if there is anything to say), sends it within a grace period, and
    /// closes the socket.
    async fn close(&mut self, outcome: Result<(), Stop>) {
        let farewell;
        let last_words = match outcome {
            Ok(()) | Err(Stop::Quit) => Some("Goodbye."),
            Err(Stop::Kicked(Kick::Shutdown)) => Some("Server is shutting down."),
            Err(Stop::Kicked(Kick::LoginTimeout)) => {
                Some("Login timed out. Connect again when you are ready.")
            }
            Err(Stop::Kicked(Kick::Disconnected)) => {
                farewell = self.shard.take_farewell(self.key());
                Some(
                    farewell
                        .as_deref()
                        .unwrap_or("You were disconnected by an admin."),
                )
            }
            Err(Stop::TooManyFailures) => Some("Too many incorrect passwords. Goodbye."),
            // Its last words were the command's own.
            Err(Stop::Closed | Stop::MoveHome | Stop::AccountDeleted | Stop::Answered) => None,
        };
        if let Some(text) = last_words {
            self.term.print(&[text], &mut self.out);
        }
        if last_words.is_some() || matches!(outcome, Err(Stop::AccountDeleted | Stop::Answered)) {
            let grace = if matches!(outcome, Err(Stop::Kicked(Kick::Shutdown))) {
                SHUTDOWN_GRACE
            } else {
                CLOSE_GRACE
            };
            let _ = glommio::timer::timeout(grace, async {
                poll_fn(|cx| self.poll_flush(cx)).await?;
                Ok(())
            })
            .await;
        }
        // The FIN goes after whatever is still in the send buffer; dropping the socket closes it.
        let _ = self.transport.shutdown_write();
    }

    /// The whole dialogue. The user who logged in is left in `user`, for a session that moves on.
    async fn serve(&mut self, user: &mut Option<User>) -> Result<(), Stop> {
        self.term.start(&mut self.out);
        self.say("Welcome to ringtalk. Type ^D to exit.");
        // In a cluster, which node took the connection: for whoever reports a problem (and for
        // the bench, which tells lines that crossed nodes from those that did not).
        if let Some(node) = self.shard.chat(|hub, _| hub.node_name()) {
            self.say(&format!("You are on node {node}."));
        }
        self.say("");
        // Boxed: the login dialogue's state is large and needed once, so the idle task does not
        // carry room for it.
        let logged_in = Box::pin(self.login()).await?;
        let name = self.begin_chat(logged_in, user);
        let logged_in = user.as_ref().expect("just logged in");
        self.chat_logged_in(logged_in, &name).await
    }

    /// What follows a login, up to the first prompt: the user is kept in `user`, and the name is
    /// returned (one copy, which the directory of who is online shares). Not in `serve`, so
    /// that nothing used here takes room in the session's task for the rest of its life.
    fn begin_chat(&mut self, logged_in: LoggedIn, user: &mut Option<User>) -> Arc<str> {
        let LoggedIn {
            user: account,
            ignoring,
            admin,
        } = logged_in;
        let now = unix_secs();
        self.registration.mailbox().set_times(now, now);
        self.registration.mailbox().set_logged_in();
        if let Some(limits) = self.limits.as_deref_mut() {
            limits.ticket.logged_in();
        }
        let motd = self.shard.live.motd();
        if !motd.is_empty() {
            let lines: Vec<&str> = motd.iter().map(String::as_str).collect();
            self.term.print(&lines, &mut self.out);
        }
        let name: Arc<str> = account.name.clone();
        *user = Some(account);
        self.come_online(&name, ignoring, admin);
        name
    }

    /// Tells the hub that the user `name` is online here, whom they ignore and whether they are
    /// an admin (the data directory says so, or `--admin`). A function of its own, so that the
    /// list is gone before the session's long wait rather than kept in its task.
    fn come_online(&self, name: &Arc<str>, ignoring: Vec<String>, admin: bool) {
        let key = self.key();
        let admin = admin
            || self
                .shard
                .config
                .admins
                .iter()
                .any(|a| a.eq_ignore_ascii_case(name));
        let ignoring: Box<[Arc<str>]> = ignoring.into_iter().map(Arc::from).collect();
        self.shard.chat(|hub, out| {
            hub.user_online(name, key, out);
            hub.set_ignoring(key, ignoring);
            hub.set_admin(key, admin);
        });
    }

    /// Commands of a logged-in user, counted as one while they last. The directory of who is
    /// online where hears of the user before (`serve`, `run_arrived`) and after (`user_left`).
    async fn chat_logged_in(&mut self, user: &User, name: &Arc<str>) -> Result<(), Stop> {
        let _logged_in = GaugeGuard::new(
            self.shard.stats.clone(),
            self.shard.id.index(),
            Gauge::LoggedIn,
        );
        self.chat(user, name).await
    }

    /// The login dialogue, with wtelnet's prompts. Returns the logged-in user.
    async fn login(&mut self) -> Result<LoggedIn, Stop> {
        let mut failures = 0;
        loop {
            let name = self.ask("Username: ", false).await?;
            let name = name.trim();
            if name.is_empty() {
                continue;
            }
            if name == mssp::TEXT_REQUEST {
                let players = self.players_online();
                self.shard.live.mssp().write_text(players, &mut self.out);
                return Err(Stop::Answered);
            }
            if let Err(e) = accounts::validate_username(name) {
                self.say(&e.to_string());
                continue;
            }
            let accounts = self.shard.accounts.clone();
            let exists = match self.wait(accounts.user_exists(name)).await? {
                Ok(exists) => exists,
                Err(e) => {
                    self.count_login_error(&e);
                    self.say_account_error(&e);
                    continue;
                }
            };
            if exists {
                if self.login_throttled() {
                    continue;
                }
                let password = self.ask("Password: ", true).await?;
                if let Some(secs) = self.shard.defences.account_wait(name) {
                    let ip = self.ticket().map(Ticket::ip);
                    self.shard.note_limit(Limit::AccountSlowed, ip);
                    let wait = Duration::from_secs(secs.into());
                    self.say(&account_slowed_notice(wait));
                    self.send_ready().await?;
                    self.wait(glommio::timer::sleep(wait)).await?;
                }
                // Held until the answer is recorded: the address's one check at a time.
                let turn = match self.take_turn().await? {
                    Turn::Refused => continue,
                    turn => turn,
                };
                let suspect = matches!(&turn, Turn::Mine(c) if c.is_suspect());
                match self.wait(accounts.login(name, &password, suspect)).await? {
                    Ok(Login::Ok(logged_in)) => {
                        self.shard.note_login(LoginOutcome::Ok);
                        self.shard.defences.login_succeeded(self.ticket(), name);
                        self.say("You are logged in. Use /help for help with commands.");
                        return Ok(logged_in);
                    }
                    Ok(Login::Banned) => {
                        // The right password: no failure to count, and no success either (that
                        // would forgive the address its failures).
                        self.shard.note_login(LoginOutcome::Banned);
                        self.login_unanswered();
                        self.say("This account is banned.");
                    }
                    Ok(Login::WrongPassword) => {
                        self.shard.note_login(LoginOutcome::BadPassword);
                        self.shard.defences.login_failed(name);
                        failures += 1;
                        self.say("Incorrect password.");
                        if failures >= MAX_PASSWORD_FAILURES {
                            return Err(Stop::TooManyFailures);
                        }
                    }
                    Ok(Login::NoSuchUser) => {
                        self.shard.note_login(LoginOutcome::Unknown);
                        self.login_unanswered();
                        self.say("That username does not exist.");
                    }
                    Err(e) => {
                        self.count_login_error(&e);
                        self.login_unanswered();
                        self.say_account_error(&e);
                    }
                }
                continue;
            }
            let answer = self
                .ask(
                    "That username does not exist on this system. Create new account? (y/n) ",
                    false,
                )
                .await?;
            if !matches!(answer.trim().to_ascii_lowercase().as_str(), "y" | "yes") {
                continue;
            }
            if let Some(wait) = self
                .ticket()
                .and_then(|t| self.shard.defences.signup_wait(t))
            {
                self.signup_refused(wait);
                continue;
            }
            if let Some(user) = self.create_account(name).await? {
                return Ok(LoggedIn {
                    user,
                    ignoring: Vec::new(),
                    admin: false,
                });
            }
        }
    }

    /// Asks for a new password twice and creates the account. `None` sends the user back to the
    /// username prompt.
    async fn create_account(&mut self, name: &str) -> Result<Option<User>, Stop> {
        loop {
            let password = self.ask("Password for new account: ", true).await?;
            if let Err(e) = accounts::validate_password(&password) {
                self.say(&e.to_string());
                continue;
            }
            let repeat = self.ask("Repeat password: ", true).await?;
            if repeat != password {
                self.say("Confirmation password did not match. Please try again.");
                continue;
            }
            // Counted when the account is asked for, so racing connections cannot all pass.
            if let Some(Err(wait)) = self.ticket().map(|t| self.shard.defences.take_signup(t)) {
                self.signup_refused(wait);
                return Ok(None);
            }
            let accounts = self.shard.accounts.clone();
            return match self.wait(accounts.create_user(name, &password)).await? {
                Ok(Created::Ok(user)) => {
                    self.shard.note_login(LoginOutcome::NewAccount);
                    self.say("Your new account has been created. You are logged in.");
                    Ok(Some(user))
                }
                Ok(Created::Invalid(e)) => {
                    self.say(&e.to_string());
                    Ok(None)
                }
                Ok(Created::NameTaken) => {
                    self.say("Someone else just took that username. Please choose another.");
                    Ok(None)
                }
                Err(e) => {
                    self.count_login_error(&e);
                    self.say_account_error(&e);
                    Ok(None)
                }
            };
        }
    }

    /// Commands of a logged-in user until they log off.
    async fn chat(&mut self, user: &User, name: &Arc<str>) -> Result<(), Stop> {
        let key = self.registration.mailbox().id.key;
        loop {
            futures_lite::future::yield_now().await;
            let prompt = match self.shard.chat(|hub, _| hub.channel_of(key).cloned()) {
                Some(channel) => format!("{name} #{channel}> "),
                None => format!("{name} #(no channel)> "),
            };
            self.term.show_prompt(&prompt, &mut self.out);
            self.send_ready().await?;
            let line = match self.next_chat_input().await? {
                Input::EndOfInput => return Err(Stop::Quit),
                Input::Line(line) => line,
            };
            self.registration.mailbox().set_last_input(unix_secs());
            self.report_line_problems(&line);
            let mut ctx = Chat {
                session: self,
                user,
                name,
                key,
            };
            cmd::run(&mut ctx, cmd::parse(&line.text)).await?;
        }
    }

    /// Sends what is ready without waiting: the last command's output, the prompt and the lines
    /// queued meanwhile, in one write. Called between commands, after the session has let every
    /// other task run once, so a user who pastes many lines at once cannot fill other members' queues
    /// (or their own) before those readers get a turn to write them out; and the prompt goes in the
    /// same write as the output before it, not in one of its own.
    async fn send_ready(&mut self) -> Result<(), Stop> {
        poll_fn(|cx| match self.poll_kick_and_flush(cx) {
            Poll::Ready(Err(stop)) => Poll::Ready(Err(stop)),
            _ => Poll::Ready(Ok(())),
        })
        .await
    }

    /// The next answer from a channel home that `wanted` accepts, while output keeps flowing. Every
    /// request is answered once and a session makes one at a time, so nothing else should be
    /// there; anything that is (an answer to a request this session no longer waits for) is
    /// dropped rather than taken for the answer.
    async fn reply(&mut self, wanted: fn(&Reply) -> bool) -> Result<Reply, Stop> {
        poll_fn(|cx| self.poll_reply(cx, wanted)).await
    }

    /// [`Session::reply`], giving up after `limit` (`None`): for an answer that may come from
    /// another node of a cluster, which can go, or lose the message, before answering.
    async fn reply_within(
        &mut self,
        wanted: fn(&Reply) -> bool,
        limit: Duration,
    ) -> Result<Option<Reply>, Stop> {
        let mut timer = pin!(glommio::timer::sleep(limit));
        poll_fn(|cx| match self.poll_reply(cx, wanted) {
            Poll::Ready(answer) => Poll::Ready(answer.map(Some)),
            Poll::Pending => timer.as_mut().poll(cx).map(|()| Ok(None)),
        })
        .await
    }

    /// The next answer that `wanted` accepts, if it has come; others are dropped.
    fn poll_reply(
        &mut self,
        cx: &mut Context<'_>,
        wanted: fn(&Reply) -> bool,
    ) -> Poll<Result<Reply, Stop>> {
        if let Poll::Ready(Err(stop)) = self.poll_kick_and_flush(cx) {
            return Poll::Ready(Err(stop));
        }
        while let Some(reply) = self.registration.mailbox().take_reply() {
            if wanted(&reply) {
                return Poll::Ready(Ok(reply));
            }
            debug!(session = %self.registration.mailbox().id, ?reply, "unexpected answer dropped");
        }
        Poll::Pending
    }

    /// Ready once the session no longer waits for lines from the shard it moved from, while output
    /// keeps flowing.
    async fn until_caught_up(&mut self) -> Result<(), Stop> {
        poll_fn(|cx| {
            if let Poll::Ready(Err(stop)) = self.poll_kick_and_flush(cx) {
                return Poll::Ready(Err(stop));
            }
            if self.registration.mailbox().is_held() {
                Poll::Pending // the lines' arrival wakes the session
            } else {
                Poll::Ready(Ok(()))
            }
        })
        .await
    }

    /// The connection's place in its address's counts (`None`: an exempt address).
    fn ticket(&self) -> Option<&Ticket> {
        self.limits.as_deref().map(|l| &l.ticket)
    }

    /// Whether failed logins from this connection's address hold its next attempt back; if so, the
    /// user is told for how long.
    fn login_throttled(&mut self) -> bool {
        let Some(ticket) = self.ticket() else {
            return false;
        };
        let Some(secs) = self.shard.defences.login_wait(ticket) else {
            return false;
        };
        let ip = ticket.ip();
        self.throttled(ip, secs);
        true
    }

    /// Waits for this address's turn to have a password checked (see [`Checking`]), unless its
    /// failed logins hold it back: then the user is told for how long. Other connections from the
    /// address may have failed while this one typed, so this is asked again here, and the check
    /// counts as a failure from now until it succeeds.
    ///
    /// The turn is asked for again every [`TURN_RETRY`] rather than handed over: the check this
    /// waits for belongs to a session on any shard, which has no way to wake this one. It costs
    /// one look a retry, for at most `--max-unauth-per-ip` connections of one address.
    async fn take_turn(&mut self) -> Result<Turn, Stop> {
        loop {
            let Some(ticket) = self.ticket() else {
                return Ok(Turn::Exempt);
            };
            let ip = ticket.ip();
            match self.shard.defences.begin_login(ticket) {
                LoginStart::Check(checking) => return Ok(Turn::Mine(checking)),
                LoginStart::Throttled(secs) => {
                    self.throttled(ip, secs);
                    return Ok(Turn::Refused);
                }
                LoginStart::Busy => self.wait(glommio::timer::sleep(TURN_RETRY)).await?,
            }
        }
    }

    /// Gives back the address's count of an attempt that got no answer.
    fn login_unanswered(&self) {
        if let Some(ticket) = self.ticket() {
            self.shard.defences.login_unanswered(ticket);
        }
    }

    /// Tells the user that failed logins from their address hold them back for `secs`.
    fn throttled(&mut self, ip: std::net::IpAddr, secs: u32) {
        self.shard.note_login(LoginOutcome::Throttled);
        self.shard.note_limit(Limit::LoginThrottle, Some(ip));
        self.say(&format!(
            "Too many failed logins from your address; try again {}.",
            in_time(Duration::from_secs(secs.into()))
        ));
    }

    /// Tells the user that their address has made its accounts for now.
    fn signup_refused(&mut self, wait: Duration) {
        let ip = self.ticket().map(Ticket::ip);
        self.shard.note_limit(Limit::SignupRate, ip);
        self.say(&format!(
            "Too many new accounts from your address; try again {}.",
            in_time(wait)
        ));
    }

    /// The next line (or ^D) of a logged-in user, at the pace flood control allows; a session from
    /// an exempt address has none. Lines over the bucket wait in order while input goes on being
    /// read (so echo goes on, and a hold that overflows is seen), and the user hears how many were
    /// dropped before the next line is taken.
    async fn next_chat_input(&mut self) -> Result<Input, Stop> {
        loop {
            let Some(limits) = self.limits.as_deref_mut() else {
                return self.next_input().await;
            };
            let dropped = limits.flood.take_dropped();
            if dropped > 0 {
                self.say(&flood_notice(dropped));
                continue;
            }
            if limits.flood.is_holding() {
                // A reload may have changed them (also below, after the wait for input).
                limits.flood.set_limits(self.shard.defences.flood());
                match limits.flood.admit(Instant::now()) {
                    Ok(()) => return Ok(limits.flood.next_held().expect("lines are held")),
                    Err(wait) => {
                        self.hold_input_for(wait).await?;
                        continue;
                    }
                }
            }
            let input = self.next_input().await?;
            let Some(limits) = self.limits.as_deref_mut() else {
                return Ok(input);
            };
            limits.flood.set_limits(self.shard.defences.flood());
            if limits.flood.admit(Instant::now()).is_ok() {
                return Ok(input);
            }
            self.hold(input);
        }
    }

    /// Holds a line for flood control, or counts it dropped when the hold is full.
    fn hold(&mut self, input: Input) {
        let limits = self
            .limits
            .as_deref_mut()
            .expect("only limited input is held");
        if !limits.flood.hold(input) {
            let ip = limits.ticket.ip();
            self.shard.note_limit(Limit::Flood, Some(ip));
        }
    }

    /// Reads and decodes input for `wait`, holding each line it finishes for flood control, or
    /// dropping it (counted) when the hold is full, while output keeps flowing. Yields after a few
    /// reads in a row, so a client that sends without pause cannot keep its shard to itself.
    async fn hold_input_for(&mut self, wait: Duration) -> Result<(), Stop> {
        let mut timer = pin!(glommio::timer::Timer::new(wait));
        poll_fn(|cx| {
            if timer.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Ok(()));
            }
            for _ in 0..READS_PER_TURN {
                while let Some(input) = self.term.next_input(&mut self.out) {
                    self.hold(input);
                }
                match self.poll_io(cx) {
                    Poll::Ready(Ok(())) => {}
                    Poll::Ready(Err(stop)) => return Poll::Ready(Err(stop)),
                    Poll::Pending => return Poll::Pending,
                }
            }
            cx.waker().wake_by_ref();
            Poll::Pending
        })
        .await
    }

    /// Shows `prompt` and returns the next line typed (hidden for passwords). ^D means log off.
    async fn ask(&mut self, prompt: &str, hidden: bool) -> Result<String, Stop> {
        self.term.set_hidden(hidden, &mut self.out);
        self.term.show_prompt(prompt, &mut self.out);
        let input = self.next_input().await;
        self.term.set_hidden(false, &mut self.out);
        match input? {
            Input::EndOfInput => Err(Stop::Quit),
            Input::Line(line) => {
                if !hidden {
                    self.report_line_problems(&line);
                }
                Ok(line.text)
            }
        }
    }

    /// Shows `prompt` to a logged-in user and returns the next line they type (hidden for
    /// passwords). The line comes through flood control like any chat line, so lines typed ahead
    /// are answered in the order typed and none of them is taken for something it was not meant
    /// for (a password held back by flood control must never be said on a channel). ^D answers as
    /// an empty line: in a command's dialogue it means "never mind", not "log off".
    async fn ask_in_chat(&mut self, prompt: &str, hidden: bool) -> Result<String, Stop> {
        self.term.set_hidden(hidden, &mut self.out);
        self.term.show_prompt(prompt, &mut self.out);
        let input = self.next_chat_input().await;
        self.term.set_hidden(false, &mut self.out);
        match input? {
            Input::EndOfInput => Ok(String::new()),
            Input::Line(line) => {
                if !hidden {
                    self.report_line_problems(&line);
                }
                Ok(line.text)
            }
        }
    }

    fn report_line_problems(&mut self, line: &FinishedLine) {
        if line.truncated {
            self.say(&format!(
                "Line too long: only the first {} bytes were kept.",
                crate::line::MAX_LINE_BYTES
            ));
        }
        if line.invalid > 0 {
            self.say("Bytes that were not valid UTF-8 were removed from your line.");
        }
    }

    /// Counts a login attempt that the accounts service could not answer.
    fn count_login_error(&self, err: &AccountError) {
        self.shard.note_login(match err {
            AccountError::Busy => LoginOutcome::Busy,
            AccountError::Failed(_) => LoginOutcome::Failed,
        });
    }

    fn say_account_error(&mut self, err: &AccountError) {
        if let AccountError::Failed(reason) = err {
            debug!(%reason, "account request failed");
        }
        self.say(err.user_message());
    }

    /// Prints one line of server text for this user.
    fn say(&mut self, text: &str) {
        self.term.print(&[text], &mut self.out);
    }

    /// The next line or ^D, reading from the socket as needed.
    async fn next_input(&mut self) -> Result<Input, Stop> {
        loop {
            let input = self.term.next_input(&mut self.out);
            if self.term.take_mssp_request() {
                let players = self.players_online();
                self.shard.live.mssp().write_telnet(players, &mut self.out);
            }
            if let Some(input) = input {
                return Ok(input);
            }
            poll_fn(|cx| self.poll_io(cx)).await?;
        }
    }

    /// Users logged in on this server, for MSSP.
    fn players_online(&self) -> u64 {
        self.shard.stats.logged_in_now()
    }

    /// Waits for `job` (work on the worker pool) while still sending output and watching for kicks.
    async fn wait<T>(&mut self, job: impl Future<Output = T>) -> Result<T, Stop> {
        let mut job = pin!(job);
        poll_fn(|cx| {
            if let Poll::Ready(Err(stop)) = self.poll_kick_and_flush(cx) {
                return Poll::Ready(Err(stop));
            }
            job.as_mut().poll(cx).map(Ok)
        })
        .await
    }

    /// Records the waker, reports a kick, and sends what it can. Ready only with an error.
    ///
    /// A new write (nothing of `out` sent yet, and a socket that may take it) first asks the shard's
    /// pacer: a connection that has used up its writes for now waits for the next tick, and the chat
    /// lines that arrive meanwhile stay in its bounded queue, unless that queue is half full, when
    /// they go at once. Once the write may
    /// start, the queued lines join whatever `out` holds (a prompt, an echo, a reply), so they all
    /// leave in one `send`.
    fn poll_kick_and_flush(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Stop>> {
        let mailbox = self.registration.mailbox().clone();
        mailbox.set_waker(cx.waker());
        if let Some(kick) = mailbox.kick() {
            return Poll::Ready(Err(Stop::Kicked(kick)));
        }
        loop {
            if self.written == 0 {
                if self.out.is_empty() && !mailbox.has_lines() {
                    if !self.transport.wants_write() {
                        return Poll::Pending;
                    }
                    // TLS records of its own (handshake replies, output encrypted while the
                    // socket was full) leave when the socket has room, with no pacing: they
                    // are not a new write.
                    match self.poll_flush(cx) {
                        Poll::Ready(Err(_)) => return Poll::Ready(Err(Stop::Closed)),
                        Poll::Pending => return Poll::Pending,
                        Poll::Ready(Ok(())) => continue,
                    }
                }
                // A socket that would block starts no write and takes no lines: they wait in
                // their bounded queue, and are dropped there, until it can take more. (Taking them
                // into `out` whenever nothing of it had been sent yet let a reader whose socket was
                // full at the first byte of a write hold every line sent to it.)
                if !mailbox.is_ready(Ready::WRITE) {
                    return Poll::Pending;
                }
                let limit = self.shard.config.queue_limit as usize;
                if mailbox.is_urgent(limit) {
                    self.shard.pacer.note_write(&mut self.pace);
                } else if !self.shard.pacer.may_write(&mut self.pace, cx) {
                    return Poll::Pending;
                }
                let queued_at = mailbox.queued_at();
                if let Some((lines, dropped)) = mailbox.take_lines() {
                    self.shard.note_written(queued_at, lines.len());
                    if mailbox.take_channel_gone() {
                        self.prompt_off_channel();
                    }
                    // Room for the lines, their line ends and a redraw of the prompt, at once: the
                    // buffer would otherwise grow by doubling through every write.
                    let bytes: usize = lines.iter().map(|l| l.len() + 2).sum();
                    self.out.reserve(bytes + REDRAW_ROOM);
                    let mut text: Vec<&str> = lines.iter().map(|l| &**l).collect();
                    let notice;
                    if dropped > 0 {
                        notice = drop_notice(dropped);
                        text.push(&notice);
                    }
                    self.term.print(&text, &mut self.out);
                }
            }
            match self.poll_flush(cx) {
                Poll::Ready(Err(_)) => return Poll::Ready(Err(Stop::Closed)),
                Poll::Pending => return Poll::Pending,
                // All sent. Lines may have queued while the socket was full (and a full queue wakes
                // nobody): go round again, to the pacer.
                Poll::Ready(Ok(())) => {}
            }
        }
    }

    /// The prompt, redrawn after the lines that told the user, names no channel: `<name>
    /// #<channel>> ` becomes `<name> #(no channel)> ` (user names have no spaces).
    fn prompt_off_channel(&mut self) {
        let prompt = self.term.prompt();
        if let Some((name, _)) = prompt.split_once(' ') {
            let prompt = format!("{name} #(no channel)> ");
            self.term.replace_prompt(&prompt);
        }
    }

    /// Ready once new input has been decoded, or with the reason to stop.
    fn poll_io(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Stop>> {
        if let Poll::Ready(stop) = self.poll_kick_and_flush(cx) {
            return Poll::Ready(stop);
        }
        if self.out.len() - self.written >= OUT_HIGH_WATER {
            return Poll::Pending;
        }
        let mailbox = self.registration.mailbox().clone();
        if !mailbox.is_ready(Ready::READ) {
            return Poll::Pending; // the waker is in the handle: the next report wakes us
        }
        let shard = self.shard.clone();
        shard.with_scratch(|buf| match self.transport.recv(buf) {
            Ok(0) => Poll::Ready(Err(Stop::Closed)),
            // Even a short read does not mean the kernel has nothing more: a FIN that came with
            // the bytes, or urgent data, stops a read early without a new readiness report. Only
            // `WouldBlock` clears the bit.
            Ok(n) => {
                // Character mode echoes about what was read.
                self.out.reserve(n + 2);
                self.term.feed(&buf[..n], &mut self.out);
                Poll::Ready(Ok(()))
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                mailbox.clear_ready(Ready::READ);
                Poll::Pending
            }
            // TLS took records that held no input yet: the rest after the shard's other tasks.
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {
                cx.waker().wake_by_ref();
                Poll::Pending
            }
            Err(_) => Poll::Ready(Err(Stop::Closed)),
        })
    }

    /// Writes as much of `out` as the socket takes, and then what TLS holds of its own; ready when
    /// all of it is sent.
    fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mailbox = self.registration.mailbox();
        while self.written < self.out.len() || self.transport.wants_write() {
            if !mailbox.is_ready(Ready::WRITE) {
                mailbox.set_waker(cx.waker());
                return Poll::Pending;
            }
            let sent = if self.written < self.out.len() {
                self.transport.send(&self.out[self.written..]).map(Some)
            } else {
                self.transport.flush().map(|()| None)
            };
            match sent {
                Ok(Some(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                // A short write goes round once more: only `WouldBlock` clears the bit.
                Ok(Some(n)) => self.written += n,
                // What TLS held is sent.
                Ok(None) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    mailbox.clear_ready(Ready::WRITE);
                }
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
        // Freed, not cleared: an idle session keeps no output buffer (one allocation per write is
        // cheap beside the write itself).
        self.out = Vec::new();
        self.written = 0;
        Poll::Ready(Ok(()))
    }
}

/// Now, in Unix seconds, as a mailbox keeps times.
fn unix_secs() -> u32 {
    u32::try_from(accounts::unix_now()).unwrap_or(u32::MAX)
}

/// What a command gets of the session running it (see [`cmd::Ctx`]).
struct Chat<'s> {
    session: &'s mut Session,
    user: &'s User,
    name: &'s Arc<str>,
    key: u64,
}

impl cmd::Ctx for Chat<'_> {
    fn name(&self) -> &Arc<str> {
        self.name
    }

    fn user(&self) -> &User {
        self.user
    }

    fn key(&self) -> u64 {
        self.key
    }

    fn shard(&self) -> &Rc<Shard> {
        &self.session.shard
    }

    fn say(&mut self, text: &str) {
        self.session.say(text);
    }

    fn print(&mut self, lines: &[&str]) {
        self.session.term.print(lines, &mut self.session.out);
    }

    fn say_account_error(&mut self, err: &AccountError) {
        self.session.say_account_error(err);
    }

    async fn reply(&mut self, wanted: fn(&Reply) -> bool) -> Result<Reply, Stop> {
        self.session.reply(wanted).await
    }

    async fn reply_within(
        &mut self,
        wanted: fn(&Reply) -> bool,
        limit: Duration,
    ) -> Result<Option<Reply>, Stop> {
        self.session.reply_within(wanted, limit).await
    }

    async fn wait<T>(&mut self, job: impl Future<Output = T>) -> Result<T, Stop> {
        self.session.wait(job).await
    }

    async fn until_caught_up(&mut self) -> Result<(), Stop> {
        self.session.until_caught_up().await
    }

    async fn ask(&mut self, prompt: &str, hidden: bool) -> Result<String, Stop> {
        self.session.ask_in_chat(prompt, hidden).await
    }
}

#[cfg(test)]
mod tests {
    /// docs/ARCHITECTURE.md states these sizes: every idle user holds one session and one mailbox, so
    /// a field added here is memory times the number of users.
    #[test]
    fn a_session_and_its_mailbox_stay_as_small_as_documented() {
        assert!(std::mem::size_of::<super::Session>() <= 272);
        assert!(std::mem::size_of::<crate::mailbox::Mailbox>() <= 128);
    }
}
