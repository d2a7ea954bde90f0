//! A session's mailbox: everything that reaches a session from outside, without its help.
//!
//! A line for a member, an answer from a channel home, a readiness report for its socket, a kick from
//! its shard: each is left here and the session's task is woken through the waker it left; the
//! session takes them the next time it runs. Nothing here does I/O or waits, so the shard's hub can
//! fill a mailbox from any of the shard's tasks, and a session that stopped reading only fills its
//! own bounded queue.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::sync::Arc;
use std::task::Waker;
use std::time::Duration;

use shard_proto::{ChannelName, JoinOutcome, Line, ListEntry, SessionId};

use crate::readiness::Ready;

/// An answer for a local session.
#[derive(Clone, Debug)]
pub enum Reply {
    /// The answer to a join.
    Joined {
        /// The channel asked for, as its home names it.
        channel: ChannelName,
        /// What happened.
        outcome: JoinOutcome,
    },
    /// Members of the session's channel (`None`: the session is on no channel by the time the home
    /// answered).
    Who(Option<Vec<Arc<str>>>),
    /// The channels of one shard.
    List(Vec<ListEntry>),
}

/// How long sessions get to say goodbye and close at shutdown.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// Why the shard wants a session to end.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kick {
    /// The server is shutting down.
    Shutdown,
    /// The connection did not log in within the login timeout.
    LoginTimeout,
}

/// What a session's shard can leave for it, and the waker to tell it.
#[derive(Debug)]
pub struct Mailbox {
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

impl Mailbox {
    /// An empty mailbox for session `id`, whose socket is taken to be ready both ways until a call
    /// says otherwise.
    pub(crate) fn new(id: SessionId) -> Mailbox {
        Mailbox {
            id,
            kick: Cell::new(None),
            waker: RefCell::new(None),
            logged_in: Cell::new(false),
            queue: RefCell::new(VecDeque::new()),
            dropped: Cell::new(0),
            replies: RefCell::new(VecDeque::new()),
            ready: Cell::new(Ready::BOTH),
        }
    }

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

    /// Whether the user has logged in.
    pub(crate) fn is_logged_in(&self) -> bool {
        self.logged_in.get()
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

    pub(crate) fn push_line(&self, line: &Line, limit: usize) -> bool {
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
    pub(crate) fn add_dropped(&self, count: u32) {
        self.dropped.set(self.dropped.get().saturating_add(count));
        self.wake();
    }

    pub(crate) fn set_ready(&self, dir: Ready) {
        self.ready.set(self.ready.get().with(dir));
        self.wake();
    }

    pub(crate) fn push_reply(&self, reply: Reply) {
        self.replies.borrow_mut().push_back(reply);
        self.wake();
    }

    fn wake(&self) {
        if let Some(w) = self.waker.borrow().as_ref() {
            w.wake_by_ref();
        }
    }

    pub(crate) fn kick_with(&self, kick: Kick) {
        if self.kick.get().is_none() {
            self.kick.set(Some(kick));
        }
        self.wake();
    }
}

/// Queued lines at which a session writes at once instead of waiting for the pacer: half the queue
/// limit. A reader that keeps up then never loses a line to pacing, however fast a channel is
/// flooded (a paste of hundreds of lines arrives between two ticks).
pub(crate) fn urgent_at(limit: usize) -> usize {
    (limit / 2).max(1)
}
