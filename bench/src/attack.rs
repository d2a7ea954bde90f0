//! The abuse scenario's attacker, worker side: one source address that, all at once, floods the
//! server with connections, guesses a password over and over, and pastes into a channel.
//!
//! It runs in a worker process of its own (no chat clients), so its work never delays a chat
//! client's send timer. Everything it meets is counted in an [`AttackReport`], never as an error:
//! the server turning it away is what the scenario measures.
//!
//! - **Flood**: `connections` attempts, spread evenly over the attack, at most `in_flight` waiting for
//!   their answer at once. Each ends at the first thing the server says: a refusal line (counted by
//!   kind), the `Username: ` greeting (accepted: held open to the end of the attack, up to
//!   `hold_max` at once, as an attacker taking descriptors would), or a close.
//! - **Guesses**: `guesses` wrong passwords for `victim`, spread evenly over the attack, by
//!   `guessers` connections side by side. A connection is kept while the server keeps it (three
//!   wrong passwords end it; the throttle does not) and opened again when it is gone, as a password
//!   guesser would. Each guess is answered (`Incorrect password.`), throttled (`Too many failed
//!   logins`), without a connection (refused when it was due), or failed.
//! - **Paste**: the paster, logged in and on `paste_channel` since setup, writes `paste_lines` lines
//!   as fast as the server reads them when the attack starts, then reads until the attack is over.
//!   What the channel's other members receive is counted by their own workers.

use std::cell::{Cell, RefCell};
use std::net::{IpAddr, SocketAddr};
use std::rc::Rc;
use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio::time::{sleep_until, timeout_at, Duration, Instant};

use crate::conn::{Conn, Event, LoginInfo, Protocol};
use crate::plan::{AttackPlan, AttackReport, Plan};
use crate::ringtalk::{self, Prompt, Refusal};
use crate::stats::{ClientError, ErrorKind};
use crate::sys::{instant_at, now_ns};
use crate::telnet::Profile;

/// How long the attacker waits for any one answer: more than the per-account slow-down's longest
/// wait (16 s) and a hash.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(30);

/// Texts kept for the report.
const MAX_SAMPLES: usize = 8;

/// Lines of the paste written at once.
const PASTE_CHUNK: u32 = 50;

/// How one guess ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Guess {
    /// `Incorrect password.`: the server checked the password.
    Answered,
    /// The login throttle's line: turned away without a check.
    Throttled,
    /// No connection to guess on.
    NoConnection,
    /// Timed out, or something unexpected.
    Failed,
}

/// A line the server sends while a password is being guessed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GuessLine {
    Incorrect,
    Throttled,
    /// The per-account slow-down: the password is checked after a wait.
    Slowed,
    /// `Too many incorrect passwords. Goodbye.`: the close follows.
    Goodbye,
    Busy,
    TimedOut,
    Refused(Refusal),
    /// The guess was right: never, since the guesses are never the password.
    LoggedIn,
    Other,
}

/// Reads a line of the login dialogue as the guesser sees it.
pub fn guess_line(line: &str) -> GuessLine {
    let line = line.trim();
    if let Some(r) = ringtalk::refusal(line) {
        GuessLine::Refused(r)
    } else if line.contains(ringtalk::defence::ACCOUNT_SLOWED) {
        GuessLine::Slowed
    } else if line.contains(ringtalk::defence::LOGIN_THROTTLE) {
        GuessLine::Throttled
    } else if line.contains("Too many incorrect passwords") {
        GuessLine::Goodbye
    } else if line.contains("Incorrect password.") {
        GuessLine::Incorrect
    } else if line.contains("Server busy") {
        GuessLine::Busy
    } else if line.contains("Login timed out") {
        GuessLine::TimedOut
    } else if line.contains("You are logged in.") {
        GuessLine::LoggedIn
    } else {
        GuessLine::Other
    }
}

/// What the server first said to a new connection.
enum Greeting {
    /// `Username: `: let in.
    Prompt,
    Refused(Refusal),
    /// Closed without a word.
    Closed,
    Failed(ClientError),
}

/// The attacker of one worker.
pub struct Attack {
    pub plan: AttackPlan,
    addr: SocketAddr,
    /// The attacker's logins and paster speak TLS (`--tls`).
    tls: bool,
    password: String,
    message_bytes: usize,
    timeout: Duration,
    grace_ms: u64,
    pub counts: RefCell<AttackReport>,
    /// Accepted flood connections held open right now.
    held: Cell<u64>,
}

impl Attack {
    /// The attacker of a plan that has one.
    pub fn of(plan: &Plan) -> Option<Rc<Attack>> {
        let a = plan.attack.clone()?;
        let counts = AttackReport {
            guesses: crate::plan::GuessCounts {
                planned: a.guesses as u64,
                ..Default::default()
            },
            ..Default::default()
        };
        Some(Rc::new(Attack {
            plan: a,
            addr: plan.addr,
            tls: plan.tls,
            password: plan.password.clone(),
            message_bytes: plan.message_bytes as usize,
            timeout: Duration::from_millis(plan.timeout_ms),
            grace_ms: plan.grace_ms,
            counts: RefCell::new(counts),
            held: Cell::new(0),
        }))
    }

    fn sample(&self, text: impl Into<String>) {
        let text = text.into();
        let mut c = self.counts.borrow_mut();
        if c.samples.len() < MAX_SAMPLES && !c.samples.contains(&text) {
            c.samples.push(text);
        }
    }

    async fn connect(&self, name: &str) -> Result<Conn, ClientError> {
        Conn::connect(
            self.addr,
            Some(IpAddr::V4(self.plan.src)),
            None,
            name.to_string(),
            Protocol::Ringtalk,
            Profile::Raw,
            self.tls,
        )
        .await
    }

    async fn login(&self, name: &str) -> Result<Conn, ClientError> {
        let deadline = Instant::now() + self.timeout;
        let mut conn = timeout_at(deadline, self.connect(name))
            .await
            .map_err(|_| ClientError::new(ErrorKind::Timeout, "connect: no answer in time"))??;
        conn.login(&self.password, deadline, &mut LoginInfo::default())
            .await?;
        Ok(conn)
    }

    /// Setup, from the attacker's address: makes sure the victim's account exists (logging in to it
    /// once creates it on the first run), then logs the paster in and onto its channel. Returns the
    /// paster's connection; what failed is in the counts.
    pub async fn setup(&self) -> Option<Conn> {
        match self.login(&self.plan.victim).await {
            Ok(conn) => {
                let _ = conn.quit(Instant::now() + self.timeout).await;
            }
            Err(e) => self.counts.borrow_mut().victim_error = Some(e.detail),
        }
        let mut conn = match self.login(&self.plan.paster).await {
            Ok(conn) => conn,
            Err(e) => {
                self.counts.borrow_mut().paster_error = Some(e.detail);
                return None;
            }
        };
        match conn
            .join(&self.plan.paste_channel, Instant::now() + self.timeout)
            .await
        {
            Ok(_) => Some(conn),
            Err(e) => {
                self.counts.borrow_mut().paster_error = Some(format!("join: {}", e.detail));
                None
            }
        }
    }

    /// The attack: flood, guesses and paste side by side, from go until the attack and the grace are
    /// over. Dropping the future stops every part.
    pub async fn run(self: Rc<Self>, paster: Option<Conn>, go: u64) {
        let mut parts = JoinSet::new();
        parts.spawn_local(self.clone().flood(go));
        for g in 0..self.plan.guessers.max(1) {
            parts.spawn_local(self.clone().guesser(g, go));
        }
        if let Some(conn) = paster {
            parts.spawn_local(self.clone().paste(conn, go));
        }
        while parts.join_next().await.is_some() {}
    }

    /// Reads until the greeting, a refusal line or the close.
    async fn greeting(&self, conn: &mut Conn, deadline: Instant) -> Greeting {
        loop {
            while let Some(line) = conn.next_line() {
                if let Some(r) = ringtalk::refusal(&line) {
                    return Greeting::Refused(r);
                }
            }
            if conn.take_prompt() == Some(Prompt::Username) {
                return Greeting::Prompt;
            }
            match conn.fill_by(deadline, "greeting").await {
                Ok(()) => {}
                Err(e) if e.kind == ErrorKind::Closed => return Greeting::Closed,
                Err(e) => return Greeting::Failed(e),
            }
        }
    }

    // ---- the flood ----

    async fn flood(self: Rc<Self>, go: u64) {
        let p = &self.plan;
        let permits = Arc::new(Semaphore::new(p.in_flight.max(1) as usize));
        let hold_until = go + p.end_ms * 1_000_000;
        let mut attempts = JoinSet::new();
        for i in 0..p.connections {
            sleep_until(instant_at(go + p.attempt_at_ms(i) * 1_000_000)).await;
            let Ok(permit) = permits.clone().acquire_owned().await else {
                break;
            };
            attempts.spawn_local(self.clone().attempt(permit, hold_until));
            while attempts.try_join_next().is_some() {}
        }
        while attempts.join_next().await.is_some() {}
    }

    /// One connection attempt of the flood.
    async fn attempt(self: Rc<Self>, permit: OwnedSemaphorePermit, hold_until: u64) {
        self.counts.borrow_mut().flood.attempts += 1;
        let deadline = Instant::now() + ANSWER_TIMEOUT;
        let mut conn = match timeout_at(deadline, self.connect("")).await {
            Ok(Ok(conn)) => conn,
            Ok(Err(e)) => {
                self.counts.borrow_mut().flood.failed += 1;
                self.sample(format!("flood: {}", e.detail));
                return;
            }
            Err(_) => {
                self.counts.borrow_mut().flood.failed += 1;
                self.sample("flood: connect: no answer in time");
                return;
            }
        };
        let greeting = self.greeting(&mut conn, deadline).await;
        {
            let mut c = self.counts.borrow_mut();
            let f = &mut c.flood;
            match &greeting {
                Greeting::Prompt => f.accepted += 1,
                Greeting::Refused(Refusal::Conns) => f.refused_conns += 1,
                Greeting::Refused(Refusal::Unauth) => f.refused_unauth += 1,
                Greeting::Refused(Refusal::Rate) => f.refused_rate += 1,
                Greeting::Closed => f.closed += 1,
                Greeting::Failed(_) => f.failed += 1,
            }
        }
        if let Greeting::Failed(e) = &greeting {
            self.sample(format!("flood: {}", e.detail));
        }
        drop(permit);
        if !matches!(greeting, Greeting::Prompt) || self.held.get() >= self.plan.hold_max as u64 {
            return;
        }
        // Let in: hold the connection, saying nothing, until the attack ends or the server closes it.
        self.held.set(self.held.get() + 1);
        {
            let mut c = self.counts.borrow_mut();
            c.flood.held_peak = c.flood.held_peak.max(self.held.get());
        }
        let until = instant_at(hold_until);
        let closed_early = loop {
            tokio::select! {
                r = conn.fill() => match r {
                    Ok(()) => {
                        while conn.next_line().is_some() {}
                    }
                    Err(_) => break true,
                },
                _ = sleep_until(until) => break false,
            }
        };
        self.held.set(self.held.get() - 1);
        if closed_early {
            self.counts.borrow_mut().flood.closed_while_held += 1;
        }
    }

    // ---- the guesses ----

    /// Guesser `g`: guesses `g`, `g + guessers`, ... each at its time, on one connection while it
    /// lasts. Guesses still waiting when the attack and the grace are over are not made.
    async fn guesser(self: Rc<Self>, g: u32, go: u64) {
        let p = &self.plan;
        let give_up = go + (p.end_ms + self.grace_ms) * 1_000_000;
        let mut conn: Option<Conn> = None;
        let mut i = g;
        while i < p.guesses {
            sleep_until(instant_at(go + p.guess_at_ms(i) * 1_000_000)).await;
            if now_ns() >= give_up {
                break;
            }
            let deadline = (Instant::now() + ANSWER_TIMEOUT).min(instant_at(give_up));
            let outcome = self.guess(&mut conn, i, deadline).await;
            let mut c = self.counts.borrow_mut();
            match outcome {
                Guess::Answered => c.guesses.answered += 1,
                Guess::Throttled => c.guesses.throttled += 1,
                Guess::NoConnection => c.guesses.no_connection += 1,
                Guess::Failed => c.guesses.failed += 1,
            }
            drop(c);
            i += p.guessers.max(1);
        }
    }

    /// One guess: on the connection kept from the last one (at its `Username: ` prompt), or on a new
    /// one. A kept connection the server has closed meanwhile is replaced once.
    async fn guess(&self, slot: &mut Option<Conn>, i: u32, deadline: Instant) -> Guess {
        for _ in 0..2 {
            let fresh = slot.is_none();
            if fresh {
                match self.guess_connection(deadline).await {
                    Ok(conn) => *slot = Some(conn),
                    Err(outcome) => return outcome,
                }
            }
            let conn = slot.as_mut().expect("a connection was just made");
            let (outcome, keep) = self.exchange(conn, i, deadline).await;
            if !keep {
                *slot = None;
            }
            match outcome {
                Some(o) => return o,
                // Closed before any answer: a kept connection had gone stale; try a new one.
                None if !fresh => continue,
                None => {
                    self.sample("guess: closed before an answer");
                    return Guess::Failed;
                }
            }
        }
        Guess::Failed
    }

    /// A new connection for guessing, at its `Username: ` prompt, or how the guess ends without one.
    async fn guess_connection(&self, deadline: Instant) -> Result<Conn, Guess> {
        let mut conn = match timeout_at(deadline, self.connect(&self.plan.victim)).await {
            Ok(Ok(conn)) => conn,
            Ok(Err(e)) => {
                self.sample(format!("guess: {}", e.detail));
                return Err(Guess::NoConnection);
            }
            Err(_) => return Err(Guess::Failed),
        };
        match self.greeting(&mut conn, deadline).await {
            Greeting::Prompt => {
                self.counts.borrow_mut().guesses.connections += 1;
                Ok(conn)
            }
            Greeting::Refused(_) | Greeting::Closed => Err(Guess::NoConnection),
            Greeting::Failed(e) if matches!(e.kind, ErrorKind::Reset | ErrorKind::Refused) => {
                Err(Guess::NoConnection)
            }
            Greeting::Failed(e) => {
                self.sample(format!("guess: {}", e.detail));
                Err(Guess::Failed)
            }
        }
    }

    /// Says the victim's name and a wrong password, and reads the answer up to the next `Username: `
    /// prompt or the close. Returns the outcome (`None`: closed before any answer) and whether the
    /// connection can take the next guess.
    async fn exchange(&self, conn: &mut Conn, i: u32, deadline: Instant) -> (Option<Guess>, bool) {
        let victim = self.plan.victim.clone();
        if conn.send_line(&victim).await.is_err() {
            return (None, false);
        }
        let mut outcome = None;
        loop {
            while let Some(line) = conn.next_line() {
                match guess_line(&line) {
                    GuessLine::Incorrect => outcome = Some(Guess::Answered),
                    GuessLine::Throttled => outcome = Some(Guess::Throttled),
                    GuessLine::Slowed => self.counts.borrow_mut().guesses.slowed += 1,
                    GuessLine::Busy => self.counts.borrow_mut().guesses.busy += 1,
                    GuessLine::Goodbye | GuessLine::Other => {}
                    GuessLine::TimedOut => return (outcome, false),
                    GuessLine::Refused(_) => return (outcome.or(Some(Guess::NoConnection)), false),
                    GuessLine::LoggedIn => {
                        self.sample("guess: logged in with a wrong password");
                        return (Some(Guess::Failed), false);
                    }
                }
            }
            let sent = match conn.take_prompt() {
                Some(Prompt::Username) => match outcome {
                    Some(o) => return (Some(o), true),
                    // Asked again without an answer (busy): the name again.
                    None => conn.send_line(&victim).await,
                },
                Some(Prompt::Password) => conn.send_line(&AttackPlan::wrong_password(i)).await,
                Some(Prompt::Create) => {
                    self.sample(format!("guess: the victim {victim} does not exist"));
                    outcome = Some(Guess::Failed);
                    conn.send_line("n").await
                }
                Some(p) => {
                    self.sample(format!("guess: unexpected prompt {p:?}"));
                    return (Some(Guess::Failed), false);
                }
                None => Ok(()),
            };
            if sent.is_err() {
                return (outcome, false);
            }
            match conn.fill_by(deadline, "guess").await {
                Ok(()) => {}
                Err(e) if matches!(e.kind, ErrorKind::Closed | ErrorKind::Reset) => {
                    return (outcome, false)
                }
                Err(e) => {
                    self.sample(format!("guess: {}", e.detail));
                    return (Some(outcome.unwrap_or(Guess::Failed)), false);
                }
            }
        }
    }

    // ---- the paste ----

    /// Reads what the paster's connection gets until `deadline`. False if the server closed it
    /// (counted as the paster disconnected).
    async fn read_paste_until(&self, conn: &mut Conn, deadline: Instant) -> bool {
        loop {
            tokio::select! {
                r = conn.fill() => {
                    if r.is_err() {
                        self.counts.borrow_mut().paste.disconnected = true;
                        return false;
                    }
                    self.read_paste(conn);
                }
                _ = sleep_until(deadline) => return true,
            }
        }
    }

    /// Writes the paste when the attack starts, then reads until the attack and the grace are over.
    async fn paste(self: Rc<Self>, mut conn: Conn, go: u64) {
        let p = &self.plan;
        let start = instant_at(go + p.start_ms * 1_000_000);
        let end = instant_at(go + (p.end_ms + self.grace_ms) * 1_000_000);
        // Until the attack starts, read what the channel says, as any member would.
        if !self.read_paste_until(&mut conn, start).await {
            return;
        }
        let t0 = now_ns();
        let mut n = 0;
        while n < p.paste_lines {
            let upto = (n + PASTE_CHUNK).min(p.paste_lines);
            for i in n..upto {
                conn.queue_chat(
                    &p.paste_channel,
                    &ringtalk::paste_text(i, self.message_bytes),
                );
            }
            match timeout_at(end, conn.flush()).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    self.sample(format!("paste: {}", e.detail));
                    self.counts.borrow_mut().paste.disconnected = true;
                    return;
                }
                Err(_) => {
                    self.sample("paste: the server stopped reading");
                    break;
                }
            }
            n = upto;
            self.counts.borrow_mut().paste.sent = n as u64;
            // Read what has come meanwhile, without waiting.
            loop {
                let read = tokio::select! {
                    biased;
                    r = conn.fill() => Some(r),
                    _ = std::future::ready(()) => None,
                };
                match read {
                    Some(Ok(())) => self.read_paste(&mut conn),
                    Some(Err(_)) => {
                        self.counts.borrow_mut().paste.disconnected = true;
                        return;
                    }
                    None => break,
                }
            }
        }
        self.counts.borrow_mut().paste.write_s = (now_ns() - t0) as f64 / 1e9;
        self.read_paste_until(&mut conn, end).await;
        let _ = conn.quit(Instant::now() + Duration::from_secs(2)).await;
    }

    /// Counts the paste's echoes and the flood notices among what the paster has received.
    fn read_paste(&self, conn: &mut Conn) {
        while let Some(line) = conn.next_line() {
            let event = conn.classify(&line);
            let mut c = self.counts.borrow_mut();
            match event {
                Event::Paste => c.paste.echoed += 1,
                Event::FloodDropped(n) => {
                    c.paste.dropped += n;
                    c.paste.notices += 1;
                }
                Event::Closing => c.paste.disconnected = true,
                _ => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guess_lines() {
        assert_eq!(guess_line("Incorrect password."), GuessLine::Incorrect);
        assert_eq!(
            guess_line("Too many failed logins from your address; try again in 40 s."),
            GuessLine::Throttled
        );
        assert_eq!(
            guess_line("Too many incorrect passwords. Goodbye."),
            GuessLine::Goodbye
        );
        assert_eq!(
            guess_line(
                "Too many failed logins for this account recently; your password will be checked in 2 seconds."
            ),
            GuessLine::Slowed
        );
        assert_eq!(
            guess_line("Server busy, try again in a moment."),
            GuessLine::Busy
        );
        assert_eq!(
            guess_line("Too many connections from your address recently; try again later."),
            GuessLine::Refused(Refusal::Rate)
        );
        assert_eq!(
            guess_line("Login timed out. Connect again when you are ready."),
            GuessLine::TimedOut
        );
        assert_eq!(
            guess_line("Welcome to ringtalk. Type ^D to exit."),
            GuessLine::Other
        );
    }
}
