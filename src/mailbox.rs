//! A session's mailbox: everything that reaches a session from outside, without its help.
//!
//! A line for a member, an answer from a channel home, a readiness report for its socket, a kick from
//! its shard: each is left here and the session's task is woken through the waker it left; the
//! session takes them the next time it runs. Nothing here does I/O or waits, so the shard's hub can
//! fill a mailbox from any of the shard's tasks, and a session that stopped reading only fills its
//! own bounded queue.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::task::Waker;
use std::time::Duration;

use shard_proto::{ChannelName, JoinOutcome, Line, ListEntry, OnlineUser, SessionFacts, SessionId};

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
        /// The channel's topic, for one who has just joined it.
        topic: Option<Arc<str>>,
    },
    /// Members of the session's channel (`None`: the session is on no channel by the time the home
    /// answered).
    Who(Option<Vec<Arc<str>>>),
    /// The channels of one shard.
    List(Vec<ListEntry>),
    /// The answer to a private message to `to`.
    Told {
        /// The addressee, as the sender typed it.
        to: Arc<str>,
        /// What became of it.
        outcome: shard_proto::Told,
    },
    /// One shard's part of who is online (see [`shard_proto::ToMember::Census`]).
    Census {
        /// How many users that part has.
        total: u32,
        /// The first of them, by name.
        users: Box<Vec<OnlineUser>>,
    },
    /// What one shard knows of some sessions (see [`shard_proto::ToMember::Facts`]).
    Facts(Box<Vec<SessionFacts>>),
    /// The users online on the other nodes of a cluster (all of them, for one name; else the
    /// first of them by name, as many as asked for), and how many there are.
    Elsewhere {
        /// How many users the other nodes have online.
        total: u32,
        /// The first of them.
        users: Vec<shard_proto::UserElsewhere>,
    },
    /// The answer to a request about the session's channel's settings.
    Managed(Box<shard_proto::Managed>),
    /// Not an answer: the session's channel's home has taken it off the channel (kicked, banned,
    /// or the channel deleted), so its prompt must no longer name the channel.
    ChannelGone,
    /// The answer to an admin's `/kill`: the user as the account spells the name, whose
    /// sessions are being ended, or `None` if none is online.
    Disconnected(Option<Arc<str>>),
    /// The other nodes' answer to an admin's order to end a user's sessions: the user as the
    /// account spells the name, if any node had a session of theirs.
    DisconnectedElsewhere(Option<Arc<str>>),
    /// The answer to an admin's `/delete-channel`: the channel as its home named it, or `None`
    /// if its home did not know it.
    Deleted(Option<ChannelName>),
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
    /// A server admin ended the session (`/kill`, `/ban-account`). What its user is told is kept
    /// by the shard, not here: a mailbox is one per user, and the text is needed once
    /// (see [`crate::shard::Shard::take_farewell`]).
    Disconnected,
}

/// What a session's shard can leave for it, and the waker to tell it.
#[derive(Debug)]
pub struct Mailbox {
    /// Which session this is.
    pub id: SessionId,
    /// Set by the shard; the session reads it each time it wakes.
    kick: Cell<Option<Kick>>,
    /// The waker of the session's task, refreshed whenever it waits. A `Cell`, not a `RefCell`:
    /// 8 bytes fewer, which is what made room for `queued_at`.
    waker: WakerSlot,
    /// Where the session is in its life: only sessions not yet logged in are subject to the login
    /// timeout, and one that moved here writes no line until the older ones come.
    stage: Cell<Stage>,
    /// Chat lines waiting to be written, at most `--queue-limit`. Not preallocated.
    queue: RefCell<VecDeque<Line>>,
    /// Lines dropped since the session last caught up.
    dropped: Cell<u32>,
    /// When the oldest line in `queue` was put there (the shard pacer's clock, in wrapping
    /// microseconds; see [`crate::pacing::Pacer::stamp`]); `None` while the queue is empty. For the
    /// delivery latency histogram: one stamp per batch of lines, not one per line.
    queued_at: Cell<Option<NonZeroU32>>,
    /// Answers from channel homes, in arrival order (rarely more than one, so a `Vec`: smaller
    /// than a `VecDeque`, and every idle user has a mailbox).
    replies: RefCell<Vec<Reply>>,
    /// Which directions of the session's socket may not block (see [`crate::readiness`]).
    ready: Cell<Ready>,
    /// When the user logged in (Unix seconds; 0 before), for `/whois`.
    since: Cell<u32>,
    /// When the user last typed a line (Unix seconds), for the idle times of `/who *`.
    last_input: Cell<u32>,
}

/// Where a session's task leaves its waker (a `Cell` cannot show what it holds, so this says
/// only whether there is one).
#[derive(Default)]
struct WakerSlot(Cell<Option<Waker>>);

impl std::fmt::Debug for WakerSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let waker = self.0.take();
        let set = waker.is_some();
        self.0.set(waker);
        f.debug_tuple("WakerSlot").field(&set).finish()
    }
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
    /// Moved here and given the lines its old shard held, not yet written: its queue may hold
    /// more than the limit (see [`held_limit`]) until its next write.
    CatchingUp,
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
            waker: WakerSlot::default(),
            stage: Cell::new(Stage::LoggingIn),
            queue: RefCell::new(VecDeque::new()),
            dropped: Cell::new(0),
            queued_at: Cell::new(None),
            replies: RefCell::new(Vec::new()),
            ready: Cell::new(Ready::BOTH),
            since: Cell::new(0),
            last_input: Cell::new(0),
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
        self.waker.0.take();
    }

    /// Whether the session waits for lines from the shard it moved from.
    pub fn is_held(&self) -> bool {
        self.stage.get() == Stage::Arriving
    }

    /// Puts `lines`, held for this session at the shard it came from, ahead of those queued here,
    /// and lets the queue be written; lines dropped there (`dropped`) are told by a notice right
    /// after them, where the gap is. Each part was bounded by [`held_limit`] where it waited, so
    /// the queue holds at most twice that (and the notice) until the session's next write, and
    /// lines that arrive meanwhile are still taken up to [`held_limit`]. Returns how many lines did
    /// not fit (none, unless the parts broke their bounds), counted as dropped.
    ///
    /// The forwarded lines count as queued now (`now`, the pacer's stamp) for the latency
    /// histogram unless lines already wait here: what they waited at the other shard is not known.
    pub(crate) fn take_forwarded(
        &self,
        lines: Vec<Line>,
        dropped: u32,
        limit: usize,
        now: impl FnOnce() -> u32,
    ) -> u32 {
        let mut queue = self.queue.borrow_mut();
        let forwarded = lines.len();
        let newer = std::mem::take(&mut *queue);
        let mut all: VecDeque<Line> = lines.into();
        all.extend(newer);
        let bound = held_limit(limit).saturating_mul(2);
        let mut over = 0;
        if all.len() > bound {
            over = u32::try_from(all.len() - bound).unwrap_or(u32::MAX);
            all.truncate(bound);
        }
        if dropped > 0 {
            all.insert(forwarded.min(all.len()), drop_notice(dropped).into());
        }
        if !all.is_empty() && self.queued_at.get().is_none() {
            self.queued_at.set(NonZeroU32::new(now().max(1)));
        }
        *queue = all;
        drop(queue);
        self.dropped.set(self.dropped.get().saturating_add(over));
        if self.stage.get() == Stage::Arriving {
            self.stage.set(Stage::CatchingUp);
        }
        self.wake();
        over
    }

    /// Takes what a session that moved away left here: its queued lines, oldest first, and how
    /// many it dropped.
    pub(crate) fn take_left_behind(&self) -> (Vec<Line>, u32) {
        let lines = std::mem::take(&mut *self.queue.borrow_mut()).into();
        self.queued_at.set(None);
        (lines, self.dropped.replace(0))
    }

    /// What the shard asked of this session, if anything.
    pub fn kick(&self) -> Option<Kick> {
        self.kick.get()
    }

    /// Records the waker of the session's task so the shard can wake it.
    pub fn set_waker(&self, waker: &Waker) {
        let kept = match self.waker.0.take() {
            Some(w) if w.will_wake(waker) => w,
            _ => waker.clone(),
        };
        self.waker.0.set(Some(kept));
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
        self.queued_at.set(None);
        if self.stage.get() == Stage::CatchingUp {
            self.stage.set(Stage::LoggedIn);
        }
        Some((lines, self.dropped.replace(0)))
    }

    /// When the oldest queued line was queued (stamped as it was pushed), if any is; read it
    /// before [`Mailbox::take_lines`], which forgets it.
    pub fn queued_at(&self) -> Option<u32> {
        self.queued_at.get().map(NonZeroU32::get)
    }

    /// The oldest reply from a channel home, if one has arrived.
    pub fn take_reply(&self) -> Option<Reply> {
        let mut replies = self.replies.borrow_mut();
        if replies.is_empty() {
            return None;
        }
        let reply = replies.remove(0);
        if replies.is_empty() {
            *replies = Vec::new();
        }
        Some(reply)
    }

    /// Whether the session has been taken off its channel since it last looked (see
    /// [`Reply::ChannelGone`]); the notice is taken. Nearly always an empty vector's check.
    pub fn take_channel_gone(&self) -> bool {
        let mut replies = self.replies.borrow_mut();
        if replies.is_empty() {
            return false;
        }
        let before = replies.len();
        replies.retain(|r| !matches!(r, Reply::ChannelGone));
        replies.len() != before
    }

    /// Records when the user logged in (`since`) and last typed (Unix seconds): both the login's
    /// time at a login, or, for a session that moved here, what its first shard knew.
    pub fn set_times(&self, since: u32, last_input: u32) {
        self.since.set(since);
        self.last_input.set(last_input);
    }

    /// Records that the user typed a line at `at` (Unix seconds).
    pub fn set_last_input(&self, at: u32) {
        self.last_input.set(at);
    }

    /// When the user logged in and last typed (Unix seconds); `None` before the login.
    pub fn times(&self) -> Option<(u32, u32)> {
        (self.is_logged_in() && !self.has_departed())
            .then(|| (self.since.get(), self.last_input.get()))
    }

    /// Queues `line` unless the queue is full (then counts it dropped and returns `false`).
    /// `now` (the pacer's [`stamp`](crate::pacing::Pacer::stamp)) is called only when the line
    /// is the first in an empty queue.
    pub(crate) fn push_line(&self, line: &Line, limit: usize, now: impl FnOnce() -> u32) -> bool {
        let mut queue = self.queue.borrow_mut();
        // A session on its way between shards cannot be written to through no fault of its reader.
        let bound = match self.stage.get() {
            Stage::Arriving | Stage::CatchingUp | Stage::Departed => held_limit(limit),
            Stage::LoggingIn | Stage::LoggedIn => limit,
        };
        if queue.len() >= bound {
            self.dropped.set(self.dropped.get().saturating_add(1));
            return false;
        }
        queue.push_back(line.clone());
        if queue.len() == 1 {
            self.queued_at.set(NonZeroU32::new(now().max(1)));
        }
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
        self.replies.borrow_mut().push(reply);
        self.wake();
    }

    fn wake(&self) {
        // Taken out and put back: waking only schedules the task, it never reaches this mailbox.
        if let Some(w) = self.waker.0.take() {
            w.wake_by_ref();
            self.waker.0.set(Some(w));
        }
    }

    pub(crate) fn kick_with(&self, kick: Kick) {
        if self.kick.get().is_none() {
            self.kick.set(Some(kick));
        }
        self.wake();
    }
}

/// What a reader is told where lines meant for it were dropped.
pub(crate) fn drop_notice(count: u32) -> String {
    format!("[{count} messages dropped]")
}

/// Lines a moving session may have queued at each end of its move: at the shard it left, until the
/// channel's home has taken its place, and at its new shard, until the lines left behind arrive and
/// it writes them. Twice the queue limit: it cannot be written to meanwhile through no fault of its
/// reader, so a burst of up to twice the limit at each end loses nothing; past that, lines are
/// dropped and told as for any reader. Once it has written, the usual limit applies again.
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

    /// `before`, a notice of `dropped` lines, then `after`: what a reader sees across a gap.
    fn gap(
        before: std::ops::Range<usize>,
        dropped: u32,
        after: std::ops::Range<usize>,
    ) -> Vec<Line> {
        let mut all = lines(before);
        all.push(drop_notice(dropped).into());
        all.extend(lines(after));
        all
    }

    #[test]
    fn a_session_that_moved_writes_the_lines_left_behind_first() {
        let mailbox = Mailbox::arriving(id());
        assert!(mailbox.is_logged_in());
        for line in lines(3..5) {
            assert!(mailbox.push_line(&line, 100, || 0));
        }
        // Held: nothing to write yet, however full.
        assert!(mailbox.is_held());
        assert!(!mailbox.has_lines());
        assert!(mailbox.take_lines().is_none());
        mailbox.take_forwarded(lines(0..3), 2, 100, || 0);
        assert!(!mailbox.is_held());
        // The lines dropped at the old shard are told where they were lost: after the lines that
        // waited there, before those that came here.
        let (taken, dropped) = mailbox.take_lines().unwrap();
        assert_eq!(taken, gap(0..3, 2, 3..5));
        assert_eq!(dropped, 0);
    }

    #[test]
    fn a_moving_queue_takes_twice_the_limit_at_each_end_and_loses_none_of_it() {
        // At the shard it left: twice the limit, then drops.
        let left = Mailbox::new(id());
        left.set_logged_in();
        left.set_departed();
        for line in lines(0..16) {
            assert!(left.push_line(&line, 8, || 0));
        }
        assert!(!left.push_line(&lines(16..17)[0], 8, || 0));
        let (behind, dropped_behind) = left.take_left_behind();
        assert_eq!((behind.len(), dropped_behind), (16, 1));
        // At the new shard, while held: twice the limit too.
        let arrived = Mailbox::arriving(id());
        for line in lines(16..32) {
            assert!(arrived.push_line(&line, 8, || 0));
        }
        assert!(!arrived.push_line(&lines(32..33)[0], 8, || 0));
        // Both parts, oldest first, nothing cut; the drops are told.
        assert_eq!(arrived.take_forwarded(behind, dropped_behind, 8, || 0), 0);
        // Until it writes, lines still arriving are taken while the queue is under twice the limit
        // (here it is over, so this one is dropped and told).
        assert!(!arrived.push_line(&lines(33..34)[0], 8, || 0));
        let (taken, dropped) = arrived.take_lines().unwrap();
        assert_eq!(taken, gap(0..16, 1, 16..32));
        assert_eq!(dropped, 2);
        // Caught up: the usual limit again.
        for line in lines(0..8) {
            assert!(arrived.push_line(&line, 8, || 0));
        }
        assert!(!arrived.push_line(&lines(8..9)[0], 8, || 0));
    }

    #[test]
    fn lines_arriving_just_after_the_lines_left_behind_are_not_refused_at_the_limit() {
        let mailbox = Mailbox::arriving(id());
        for line in lines(5..10) {
            assert!(mailbox.push_line(&line, 8, || 0));
        }
        mailbox.take_forwarded(lines(0..5), 0, 8, || 0);
        // 10 queued, over the limit of 8, but the session has not had its turn to write yet.
        assert!(mailbox.push_line(&lines(10..11)[0], 8, || 0));
        let (taken, dropped) = mailbox.take_lines().unwrap();
        assert_eq!((taken, dropped), (lines(0..11), 0));
    }

    #[test]
    fn a_queue_remembers_when_its_oldest_line_came_and_reads_the_clock_once_per_batch() {
        let mailbox = Mailbox::new(id());
        mailbox.set_logged_in();
        assert_eq!(mailbox.queued_at(), None);
        assert!(mailbox.push_line(&lines(0..1)[0], 8, || 500));
        assert!(mailbox.push_line(&lines(1..2)[0], 8, || panic!(
            "the clock is read only for the first line"
        )));
        assert_eq!(mailbox.queued_at(), Some(500));
        mailbox.take_lines().unwrap();
        assert_eq!(mailbox.queued_at(), None);
        // A stamp of 0 is kept as 1 (0 means none).
        assert!(mailbox.push_line(&lines(2..3)[0], 8, || 0));
        assert_eq!(mailbox.queued_at(), Some(1));
    }

    #[test]
    fn a_mailbox_left_behind_gives_up_what_it_holds() {
        let mailbox = Mailbox::new(id());
        mailbox.set_logged_in();
        mailbox.set_departed();
        assert!(mailbox.has_departed());
        assert!(mailbox.push_line(&lines(0..1)[0], 1, || 0));
        assert!(mailbox.push_line(&lines(1..2)[0], 1, || 0));
        assert!(!mailbox.push_line(&lines(2..3)[0], 1, || 0));
        assert_eq!(mailbox.take_left_behind(), (lines(0..2), 1));
    }
}
