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
        /// The home asks the session to move to its shard.
        come_home: bool,
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
    /// Where the session is in its life: only sessions not yet logged in are subject to the login
    /// timeout, and one that moved here writes no line until the older ones come.
    stage: Cell<Stage>,
    /// Chat lines waiting to be written, at most `--queue-limit`. Not preallocated.
    queue: RefCell<VecDeque<Line>>,
    /// Lines dropped since the session last caught up.
    dropped: Cell<u32>,
    /// Answers from channel homes, in arrival order.
    replies: RefCell<VecDeque<Reply>>,
    /// Which directions of the session's socket may not block (see [`crate::readiness`]).
    ready: Cell<Ready>,
}

/// A session's stage, as its mailbox needs to know it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stage {
    /// Not logged in yet.
    LoggingIn,
    /// Logged in, here.
    LoggedIn,
    /// Moved here and waiting for the lines its old shard held: its queue fills but is not
    /// written, so those older lines go out first.
    Arriving,
    /// Moved to another shard: what is left here is a mailbox that holds lines for it until its
    /// channel's home says the new session has its place.
    Departed,
}

impl Mailbox {
    /// An empty mailbox for session `id`, whose socket is taken to be ready both ways until a call
    /// says otherwise.
    pub(crate) fn new(id: SessionId) -> Mailbox {
        Mailbox {
            id,
            kick: Cell::new(None),
            waker: RefCell::new(None),
            stage: Cell::new(Stage::LoggingIn),
            queue: RefCell::new(VecDeque::new()),
            dropped: Cell::new(0),
            replies: RefCell::new(VecDeque::new()),
            ready: Cell::new(Ready::BOTH),
        }
    }

    /// The mailbox of a logged-in session that moves here from another shard: its lines are held
    /// until [`Mailbox::take_forwarded`] brings the older ones.
    pub(crate) fn arriving(id: SessionId) -> Mailbox {
        let mailbox = Mailbox::new(id);
        mailbox.stage.set(Stage::Arriving);
        mailbox
    }

    /// Whether the session has moved to another shard.
    pub fn has_departed(&self) -> bool {
        self.stage.get() == Stage::Departed
    }

    pub(crate) fn set_departed(&self) {
        self.stage.set(Stage::Departed);
        // Its task has ended: lines left here wake nobody.
        self.waker.borrow_mut().take();
    }

    /// Whether the session waits for lines from the shard it moved from.
    pub fn is_held(&self) -> bool {
        self.stage.get() == Stage::Arriving
    }

    /// Puts `lines`, held for this session at the shard it came from, ahead of those queued here,
    /// and lets the queue be written. The queue keeps the bound it had while held (see
    /// [`held_limit`]): the oldest lines stay, and what does not fit is counted as dropped.
    pub(crate) fn take_forwarded(&self, lines: Vec<Line>, dropped: u32, limit: usize) {
        let mut queue = self.queue.borrow_mut();
        let mut dropped = dropped;
        if !lines.is_empty() {
            let newer = std::mem::take(&mut *queue);
            let mut all: VecDeque<Line> = lines.into();
            all.extend(newer);
            let bound = held_limit(limit);
            if all.len() > bound {
                let over = all.len() - bound;
                all.truncate(bound);
                dropped = dropped.saturating_add(u32::try_from(over).unwrap_or(u32::MAX));
            }
            *queue = all;
        }
        drop(queue);
        self.dropped.set(self.dropped.get().saturating_add(dropped));
        if self.stage.get() == Stage::Arriving {
            self.stage.set(Stage::LoggedIn);
        }
        self.wake();
    }

    /// Takes what a session that moved away left here: its queued lines, oldest first, and how
    /// many it dropped.
    pub(crate) fn take_left_behind(&self) -> (Vec<Line>, u32) {
        let lines = std::mem::take(&mut *self.queue.borrow_mut()).into();
        (lines, self.dropped.replace(0))
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
        if self.stage.get() == Stage::LoggingIn {
            self.stage.set(Stage::LoggedIn);
        }
    }

    /// Whether the user has logged in.
    pub(crate) fn is_logged_in(&self) -> bool {
        self.stage.get() != Stage::LoggingIn
    }

    /// Whether chat lines (or a dropped-lines notice) wait to be written.
    pub fn has_lines(&self) -> bool {
        !self.is_held() && (!self.queue.borrow().is_empty() || self.dropped.get() > 0)
    }

    /// Whether the queue is so full that its lines must go out now rather than wait for the pacer.
    pub fn is_urgent(&self, limit: usize) -> bool {
        !self.is_held() && self.queue.borrow().len() >= urgent_at(limit)
    }

    /// Takes every queued chat line and the number dropped since the last call.
    pub fn take_lines(&self) -> Option<(Vec<Line>, u32)> {
        let mut queue = self.queue.borrow_mut();
        if self.is_held() || (queue.is_empty() && self.dropped.get() == 0) {
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
        let bound = if self.is_held() {
            held_limit(limit)
        } else {
            limit
        };
        if queue.len() >= bound {
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

/// Lines a session that has just moved may have queued while it waits for the ones its old shard
/// held: twice the queue limit. It cannot write meanwhile through no fault of its reader, so a burst
/// of up to twice the limit in that moment (about one ring round trip) loses nothing; once it may
/// write, lines past the limit are refused as usual until it has caught up.
pub(crate) fn held_limit(limit: usize) -> usize {
    limit.saturating_mul(2)
}

/// Queued lines at which a session writes at once instead of waiting for the pacer: half the queue
/// limit. A reader that keeps up then never loses a line to pacing, however fast a channel is
/// flooded (a paste of hundreds of lines arrives between two ticks).
pub(crate) fn urgent_at(limit: usize) -> usize {
    (limit / 2).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use shard_proto::ShardId;

    fn id() -> SessionId {
        SessionId {
            shard: ShardId(1),
            key: 7,
        }
    }

    fn lines(range: std::ops::Range<usize>) -> Vec<Line> {
        range.map(|n| Line::from(format!("line {n}"))).collect()
    }

    #[test]
    fn a_session_that_moved_writes_the_lines_left_behind_first() {
        let mailbox = Mailbox::arriving(id());
        assert!(mailbox.is_logged_in());
        for line in lines(3..5) {
            assert!(mailbox.push_line(&line, 100));
        }
        // Held: nothing to write yet, however full.
        assert!(mailbox.is_held());
        assert!(!mailbox.has_lines());
        assert!(mailbox.take_lines().is_none());
        mailbox.take_forwarded(lines(0..3), 2, 100);
        assert!(!mailbox.is_held());
        let (taken, dropped) = mailbox.take_lines().unwrap();
        assert_eq!(taken, lines(0..5));
        assert_eq!(dropped, 2);
    }

    #[test]
    fn a_held_queue_takes_twice_the_limit_and_keeps_the_oldest() {
        let mailbox = Mailbox::arriving(id());
        // While held, a burst of twice the limit fits; one more line is dropped.
        for line in lines(8..24) {
            assert!(mailbox.push_line(&line, 8));
        }
        assert!(!mailbox.push_line(&lines(24..25)[0], 8));
        // The 8 lines left behind come first; the bound keeps the oldest 16 of all 24.
        mailbox.take_forwarded(lines(0..8), 0, 8);
        let (taken, dropped) = mailbox.take_lines().unwrap();
        assert_eq!(taken, lines(0..16));
        assert_eq!(dropped, 9);
        // Caught up and no longer held: the usual limit again.
        for line in lines(0..8) {
            assert!(mailbox.push_line(&line, 8));
        }
        assert!(!mailbox.push_line(&lines(8..9)[0], 8));
    }

    #[test]
    fn a_mailbox_left_behind_gives_up_what_it_holds() {
        let mailbox = Mailbox::new(id());
        mailbox.set_logged_in();
        mailbox.set_departed();
        assert!(mailbox.has_departed());
        assert!(mailbox.push_line(&lines(0..1)[0], 1));
        assert!(!mailbox.push_line(&lines(1..2)[0], 1));
        assert_eq!(mailbox.take_left_behind(), (lines(0..1), 1));
    }
}
