//! The messages that cross between shards.
//!
//! Two directions, two types: [`ToHome`] goes from the shard of a session to the home shard of a channel,
//! [`ToMember`] from a home back to the shards of its members. Messages between one ordered pair of
//! shards travel one FIFO ring, so they arrive in the order sent; a message for the sender's own shard
//! never enters a ring and is handled in the order it was made. Every delivery is one message per
//! destination shard, whatever the number of members there.
//!
//! # A session that moves home
//!
//! A member whose connection is on another shard than its channel's home costs every line two ring
//! crossings (to the home, and back to its shard), and each crossing wakes an executor. So a session
//! that joins a small channel moves to the home's shard, in three messages that lose nothing and
//! keep the channel's order: [`ToHome::Move`] carries the session (its socket and state) to the home,
//! which puts the new session in the old one's place in the channel; [`ToMember::Moved`] tells the
//! old shard, after every line the home sent it for the old session, to stop holding lines for it;
//! [`ToHome::Forward`] brings those held lines to the new session, which writes them before any it
//! got at the home.

use std::any::Any;
use std::fmt;
use std::sync::Arc;

use crate::{ChannelId, ChannelName, Line, SessionId};

/// A session on its way to another shard: whatever the server needs to take it up again there (its
/// socket, its terminal, its user), opaque to this crate. Dropping it closes the connection.
pub struct Traveller(pub Box<dyn Any + Send>);

impl fmt::Debug for Traveller {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Traveller")
    }
}

/// From a session's shard to a channel's home shard.
#[derive(Debug)]
pub enum ToHome {
    /// Join a channel by name. With `create`, the home first creates the channel if it does not know it;
    /// the sender asks for that only after the database has recorded the channel as new. Answered by
    /// [`ToMember::Joined`]; the home first tells the existing members `<user> has joined #<name>`.
    Join {
        /// The channel.
        channel: ChannelName,
        /// Who joins.
        session: SessionId,
        /// The session's user name, shown to others.
        user: Arc<str>,
        /// Create the channel if the home does not know it.
        create: bool,
    },
    /// Leave a channel; not answered. The home tells the remaining members `<user> has left #<name>`.
    /// A session that is not a member (it left already) is ignored.
    Leave {
        /// The channel.
        channel: ChannelId,
        /// Who leaves.
        session: SessionId,
    },
    /// The session that sent the last [`ToHome::Join`] for this channel has ended before the answer
    /// came back; not answered. Sent at once when the session ends, on the ring that carried the
    /// join, so it arrives right after it: if the join made the session a member, this takes it out
    /// again (with `<user> has left #<name>`), one ring trip after the session ended.
    Cancel {
        /// The channel the join named.
        channel: ChannelName,
        /// Who asked, and has gone.
        session: SessionId,
    },
    /// Say something: the home puts the line in the channel's order, logs it, and sends one
    /// [`ToMember::Deliver`] to each shard with members, the sender's included. Ignored if the
    /// session is not a member.
    Post {
        /// The channel.
        channel: ChannelId,
        /// Who says it.
        session: SessionId,
        /// The line as members will see it.
        line: Line,
    },
    /// Who is on the channel. Answered by [`ToMember::Who`].
    Who {
        /// The channel.
        channel: ChannelId,
        /// Who asks.
        session: SessionId,
    },
    /// Every channel homed on the receiving shard with its member count. Answered by
    /// [`ToMember::List`]; a session sends one to every shard and merges the answers.
    List {
        /// Who asks.
        session: SessionId,
    },
    /// A member of `channel` moves to the home's shard (see the module doc). The home takes the
    /// session up under a new id on its own shard, puts that id in the old one's place (no line
    /// is announced: to the others nobody came or went), and answers [`ToMember::Moved`].
    Move {
        /// The channel, homed on the receiving shard.
        channel: ChannelId,
        /// The session as it was known until now.
        session: SessionId,
        /// The session itself.
        traveller: Traveller,
    },
    /// A member asks to see or change the channel's settings (topic, owner). Answered by
    /// [`ToMember::Managed`]; a change is told to the members as a line of the channel's.
    Manage {
        /// The channel.
        channel: ChannelId,
        /// Who asks.
        session: SessionId,
        /// Their user name.
        by: Arc<str>,
        /// Whether they are a server admin (who may do what an owner may).
        admin: bool,
        /// What they ask for. Boxed: every kind sizes every ring slot.
        change: Box<Change>,
        /// The asker's shard's number for the question, given back with the answer: an answer
        /// that comes after its asker stopped waiting (from another node) is told apart.
        asked: u32,
    },
    /// A server admin deletes the channel, which the database no longer has: its home tells each
    /// shard with members ([`ToMember::Closed`]), forgets its name (a join then finds no such
    /// channel) and empties its record, which stays, so that ids held anywhere lead to no member
    /// rather than to another channel. Answered by [`ToMember::Deleted`]. In a cluster every other
    /// node does the same for its own record (its bridge hears it from the admin's node).
    Delete {
        /// The channel.
        channel: ChannelName,
        /// The admin's session, which waits for the answer.
        session: SessionId,
        /// The admin's name, told to the members.
        by: Arc<str>,
    },
    /// The lines the old shard held for a session that moved (sent on [`ToMember::Moved`]), for the
    /// new session: they are older than any it got at its new shard.
    Forward {
        /// The session at its new shard.
        session: SessionId,
        /// The lines, oldest first.
        lines: Vec<Line>,
        /// Lines dropped before these, not yet told to the user.
        dropped: u32,
    },
}

/// From a channel's home shard to a member's shard.
#[derive(Clone, Debug)]
pub enum ToMember {
    /// The answer to [`ToHome::Join`]. On success the receiving shard adds the session to its own list
    /// of the channel's local members before handling anything that arrives after this message, so the
    /// session sees every line the home ordered after its join, and none before. An answer for a
    /// session that has ended meanwhile is dropped: its [`ToHome::Cancel`] has already set the home
    /// right, or will.
    Joined {
        /// Who asked.
        session: SessionId,
        /// The channel as the home knows it (its display name).
        channel: ChannelName,
        /// What happened.
        outcome: JoinOutcome,
        /// The home asks the session to move to the home's shard ([`ToHome::Move`]): it has just
        /// joined, from another shard, a channel small enough that its members are best served
        /// where the channel lives.
        come_home: bool,
    },
    /// What a session its home has just let in is shown first: the last lines said in the
    /// channel and its topic; sent just ahead of the [`ToMember::Joined`] that says so.
    Welcome {
        /// The session.
        session: SessionId,
        /// The lines and the topic. Boxed: every message kind sizes every ring slot.
        welcome: Box<Welcome>,
    },
    /// A line for every local member of a channel, in the channel's order.
    Deliver {
        /// The channel.
        channel: ChannelId,
        /// The line, shared by every member's queue.
        line: Line,
    },
    /// Deliveries of a channel that the home's shard dropped because its queue for this shard was
    /// full (the ring was backed up). Sent ahead of the channel's next delivery to this shard, or
    /// when that queue empties, so every local member is told, in order, that lines were dropped.
    Lost {
        /// The channel.
        channel: ChannelId,
        /// How many of its lines were dropped.
        count: u32,
    },
    /// The answer to [`ToHome::Who`]: member names, sorted, without repeats.
    Who {
        /// Who asked.
        session: SessionId,
        /// The names, or `None` if the asker is not a member.
        names: Option<Vec<Arc<str>>>,
    },
    /// The answer to [`ToHome::List`].
    List {
        /// Who asked.
        session: SessionId,
        /// The channels homed on the answering shard.
        channels: Vec<ListEntry>,
    },
    /// The answer to a [`Tell`]: it reached a session of the addressee, or none is online.
    Told {
        /// The sender.
        session: SessionId,
        /// The addressee, as the sender typed it.
        to: Arc<str>,
        /// What happened.
        outcome: Told,
    },
    /// The answer to [`ToHome::Manage`].
    Managed {
        /// Who asked.
        session: SessionId,
        /// The answer. Boxed: every kind sizes every ring slot.
        answer: Box<Managed>,
        /// The question's number (see [`ToHome::Manage`]).
        asked: u32,
    },
    /// A line for one session from its channel's home (a muted member who spoke is told so).
    Notice {
        /// The session.
        session: SessionId,
        /// The line.
        line: Line,
    },
    /// The channel's home has taken a member off the channel (kicked or banned; the members,
    /// the member included, have been told in the channel's order, before this). Its shard
    /// forgets the membership.
    Removed {
        /// The channel.
        channel: ChannelId,
        /// The member.
        session: SessionId,
    },
    /// The answer to [`ToUser::Census`].
    Census {
        /// Who asked.
        session: SessionId,
        /// How many users the answering shard's part of the directory has (or, for one name,
        /// whether it is online: 0 or 1).
        total: u32,
        /// The first of them in name order, at most as many as asked for. Boxed: every kind
        /// sizes every ring slot.
        users: Box<Vec<OnlineUser>>,
    },
    /// The answer to [`ToUser::Facts`], for the sessions still on the answering shard.
    Facts {
        /// Who asked.
        session: SessionId,
        /// One for each session asked about that is still there. Boxed: every kind sizes every
        /// ring slot.
        facts: Box<Vec<SessionFacts>>,
    },
    /// The answer to [`ToHome::Move`]: the session `from` is now `to` in `channel`, and this
    /// message comes after every line the home sent here for `from`. The receiving shard stops
    /// holding lines for `from` and sends what it held to `to` as [`ToHome::Forward`].
    Moved {
        /// The channel.
        channel: ChannelId,
        /// The session as this shard knew it.
        from: SessionId,
        /// The same session at the home's shard.
        to: SessionId,
    },
    /// The channel's home has deleted it ([`ToHome::Delete`]): each local member is told `line`
    /// and is on no channel any more. Sent after every line the home ordered for the channel, on
    /// the ring that carried them.
    Closed {
        /// The channel.
        channel: ChannelId,
        /// What its members are told.
        line: Line,
    },
    /// The answer to [`ToHome::Delete`].
    Deleted {
        /// The admin's session.
        session: SessionId,
        /// The channel as its home named it, or `None` if the home did not know it.
        channel: Option<ChannelName>,
    },
    /// The answer to [`ToUser::Kill`], from the directory: the user's sessions are being ended.
    Disconnected {
        /// The admin's session.
        session: SessionId,
        /// The user as the account spells the name, or `None` if no session of theirs is online.
        name: Option<Arc<str>>,
    },
}

/// How a join ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JoinOutcome {
    /// The session is a member of this channel now.
    Joined(ChannelId),
    /// The channel has as many members as its capacity allows.
    Full,
    /// Its owner has banned the user.
    Banned,
    /// It lets in only those invited, and the user is not.
    InviteOnly,
    /// No channel has that name.
    NoSuchChannel,
    /// The channel's home is another node of the cluster, which cannot be reached now.
    Unavailable,
}

/// One channel in a [`ToMember::List`] answer.
#[derive(Clone, Debug)]
pub struct ListEntry {
    /// The channel's name.
    pub name: ChannelName,
    /// Sessions in it now.
    pub members: u32,
    /// Its topic, if it has one.
    pub topic: Option<Arc<str>>,
}

/// What a [`ToMember::Welcome`] brings.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Welcome {
    /// The channel's topic.
    pub topic: Option<Arc<str>>,
    /// The last lines said in it, oldest first.
    pub history: Vec<Line>,
}

/// What a [`ToHome::Manage`] asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum Change {
    /// Nothing: show the settings.
    Show,
    /// Set the topic (`None`: clear it). The owner may, an admin may, and anyone may when the
    /// owner has opened the topic.
    Topic(Option<Arc<str>>),
    /// Let anyone set the topic, or the owner only.
    TopicOpen(bool),
    /// Hand the channel over to this user (as their account spells the name).
    Owner(Arc<str>),
    /// Take this user's sessions off the channel, with a reason to tell.
    Kick {
        /// The user (any case).
        name: Arc<str>,
        /// Why, if the owner said.
        reason: Option<Arc<str>>,
    },
    /// Keep this user (as their account spells the name) out, and take them off it now.
    Ban(Arc<str>),
    /// Let this user in again.
    Unban(Arc<str>),
    /// Refuse this member's lines for some minutes.
    Mute {
        /// The user (any case).
        name: Arc<str>,
        /// For how long.
        minutes: u32,
    },
    /// Take a mute back.
    Unmute(Arc<str>),
    /// Let this user (as their account spells the name) join once, even when the channel is
    /// invite-only.
    Invite(Arc<str>),
    /// Let only those invited join, or everyone.
    InviteOnly(bool),
    /// The most members the channel takes (0: the server's default).
    Capacity(u32),
}

/// A channel's settings, as `/set` shows them.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct SettingsShown {
    /// Its owner's name (`None`: nobody's: its owner deleted their account).
    pub owner: Option<Arc<str>>,
    /// Its topic.
    pub topic: Option<Arc<str>>,
    /// Whether anyone may set the topic.
    pub topic_open: bool,
    /// Whether only those invited may join.
    pub invite_only: bool,
    /// The most members it takes now (0: no limit).
    pub capacity: u32,
    /// Who is banned, as the owner named them.
    pub bans: Vec<Arc<str>>,
}

/// The answer to a [`ToHome::Manage`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum Managed {
    /// Done (the members have been told), or, for [`Change::Show`], nothing to do.
    Done,
    /// The channel's settings as they are now. Boxed: the answer is boxed in its message, and
    /// this is the largest.
    Settings(Box<SettingsShown>),
    /// A line for the asker alone: a change that concerns nobody else, or why it was not made.
    Said(Arc<str>),
    /// Only the owner (or an admin) may do that.
    NotAllowed {
        /// The owner, to name in the refusal.
        owner: Option<Arc<str>>,
    },
    /// The asker is not on the channel (any more).
    NotMember,
    /// In a cluster: the channel's home node cannot be reached now, or has just become its home
    /// and is still reading its stored settings. Nothing was changed; asking again later may do.
    Unavailable,
}

/// About logged-in users, by name: to the shard that keeps the name's entry in the directory of
/// who is online where (`home_of_key(lower-cased name)`), or on from there to a user's shard.
#[derive(Clone, Debug)]
pub enum ToUser {
    /// A session of user `name` (lower-cased) has logged in.
    Online {
        /// The user.
        name: Arc<str>,
        /// The session.
        session: SessionId,
    },
    /// It has logged off.
    Offline {
        /// The user.
        name: Arc<str>,
        /// The session.
        session: SessionId,
    },
    /// It is leaving its shard for another ([`ToUser::Arrived`] follows): private messages to it
    /// go to the old shard meanwhile, which holds them with its lines or sends them back.
    Moving {
        /// The user.
        name: Arc<str>,
        /// The session as its old shard knew it.
        session: SessionId,
    },
    /// It has arrived at its new shard.
    Arrived {
        /// The user.
        name: Arc<str>,
        /// The session as its old shard knew it.
        from: SessionId,
        /// The session at its new shard.
        to: SessionId,
    },
    /// A private message, to the directory shard of its addressee. Boxed, as each message kind
    /// sizes every ring slot.
    Tell(Box<Tell>),
    /// Who is online, to each shard's part of the directory (or, with `name`, to that name's
    /// directory shard only). Answered by [`ToMember::Census`].
    Census {
        /// Who asks.
        asker: SessionId,
        /// How many names the asker needs at most, in name order (a page of `/who *` needs the
        /// first ones of each shard only).
        first: u32,
        /// Only this user (any case), for `/whois`.
        name: Option<Arc<str>>,
    },
    /// What the receiving shard knows of some of its sessions: when they logged in, when they
    /// last typed, away, channel. Answered by [`ToMember::Facts`].
    Facts {
        /// Who asks.
        asker: SessionId,
        /// The sessions, all on the receiving shard. Boxed: every kind sizes every ring slot.
        keys: Box<Vec<u64>>,
    },
    /// A private message on its way to one of its addressee's sessions.
    Deliver {
        /// The message.
        tell: Box<Tell>,
        /// The addressee's session.
        session: SessionId,
        /// Whether this copy answers the sender (the first of the addressee's sessions).
        answer: bool,
    },
    /// A server admin ends every session of a user: to the name's directory shard, which sends
    /// [`ToUser::Disconnect`] to each and answers the admin ([`ToMember::Disconnected`]). A
    /// session that has left its shard meanwhile sends it back here, where it follows the move
    /// as a private message does.
    Kill(Box<Kill>),
    /// On from the directory to one session's shard: end the session, telling its user why.
    Disconnect {
        /// What to do, and whom it has reached.
        kill: Box<Kill>,
        /// The session.
        session: SessionId,
    },
    /// A line for every logged-in session of the receiving shard (a server admin's `/wall`):
    /// one message per shard, never one per session.
    Wall {
        /// The line, shared by every queue it goes into.
        line: Line,
    },
    /// User `name` has changed whom they ignore (in one session): to the name's directory shard,
    /// which sends [`ToUser::SetIgnoring`] to each of the user's other sessions.
    Ignoring {
        /// The user.
        name: Arc<str>,
        /// The session that made the change, which has it already (none: the change was made on
        /// another node of a cluster).
        from: Option<SessionId>,
        /// Whom they ignore now.
        names: Arc<[Arc<str>]>,
    },
    /// The list of whom this session's user ignores, changed in another session of theirs.
    SetIgnoring {
        /// The session.
        session: SessionId,
        /// Whom they ignore now.
        names: Arc<[Arc<str>]>,
    },
}

/// An admin's order to end every session of a user (see [`ToUser::Kill`]).
#[derive(Clone, Debug)]
pub struct Kill {
    /// The user, as the admin typed the name.
    pub name: Arc<str>,
    /// The admin's session, which waits for the directory's answer; `None`: nobody waits (the
    /// sessions of a banned account are ended this way).
    pub asker: Option<SessionId>,
    /// What each session's user is told as it closes.
    pub farewell: Line,
    /// The sessions it has been sent to (so one sent back finds only those it has not reached).
    pub told: Vec<SessionId>,
    /// How many times a session's shard has sent it back (the session had left); after
    /// `MAX_HOPS` it is dropped.
    pub hops: u8,
}

/// A user in a [`ToMember::Census`] answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OnlineUser {
    /// The name, as the account has it.
    pub name: Arc<str>,
    /// Where its sessions are.
    pub sessions: Vec<SessionId>,
}

/// A user online on another node of a cluster, as `/who *` and `/whois` show them (what that
/// node's shards said of their sessions there, put together).
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct UserElsewhere {
    /// The name as the account spells it.
    pub name: Arc<str>,
    /// The node.
    pub node: Arc<str>,
    /// The earliest login of their sessions there (Unix seconds).
    pub since: u32,
    /// The latest line typed in any of them (Unix seconds).
    pub last_input: u32,
    /// The away message of the first that is away.
    pub away: Option<Arc<str>>,
    /// The channels their sessions are on there.
    pub channels: Vec<String>,
    /// Their sessions there.
    pub sessions: u32,
}

/// What a [`ToMember::Facts`] answer says of one session.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionFacts {
    /// The session.
    pub session: SessionId,
    /// When it logged in (Unix seconds).
    pub since: u32,
    /// When its user last typed a line (Unix seconds).
    pub last_input: u32,
    /// Its away message (empty: away with none), if it is away.
    pub away: Option<Arc<str>>,
    /// The channel it is on.
    pub channel: Option<ChannelName>,
}

/// What became of a private message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Told {
    /// It reached the addressee, who is away with this message (empty: none) if `Some`.
    Delivered {
        /// The addressee's away message.
        away: Option<Arc<str>>,
    },
    /// No session of the addressee is online.
    NotOnline,
}

/// A private message.
#[derive(Clone, Debug)]
pub struct Tell {
    /// The sender's name, as its account has it.
    pub from: Arc<str>,
    /// The sender's session, which waits for the answer.
    pub sender: SessionId,
    /// The addressee's name, as the sender typed it.
    pub to: Arc<str>,
    /// The line the addressee sees.
    pub line: Line,
    /// How many times it has been sent back to the directory (a session that moved meanwhile).
    pub hops: u8,
    /// Where it comes from, and so where its answer goes.
    pub origin: TellOrigin,
}

/// Where a private message comes from (see [`Tell`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TellOrigin {
    /// A user of this node: its `sender` waits for the answer.
    Here,
    /// A user of another node of a cluster (the message's `sender` means nothing here): the
    /// answer goes to `reply`, an address the cluster's bridge understands; with none, nobody
    /// waits for it (a copy for the addressee's sessions here, the sender's node having
    /// delivered it to the sessions there).
    Node {
        /// Where the answer goes.
        reply: Option<Arc<str>>,
    },
}

/// Anything that crosses a ring.
#[derive(Debug)]
pub enum ShardMsg {
    /// To a channel's home.
    ToHome(ToHome),
    /// To a member's shard.
    ToMember(ToMember),
    /// About a user, by name.
    ToUser(ToUser),
}
