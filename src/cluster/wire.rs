//! What nodes say to each other over NATS, the subjects they say it on, and what a shard's hub
//! and the bridge hand each other.
//!
//! A channel's home node is the only publisher on the channel's subject, so every node hears its
//! events in one order (NATS keeps each publisher's order); each event carries the home's epoch
//! (when it became the home) and a sequence number, so a node that misses some (NATS is
//! at-most-once) sees a gap and tells its members instead of reordering or hiding it. Everything
//! else a node says goes to one node: to the home's inbox (joins, leaves, lines, who), or to one
//! shard of the asking node (answers).
//!
//! Messages are JSON: a line costs one small encode at its home and one decode per node with
//! members, never one per member, and a node of another version fails to decode loudly rather
//! than misreading. Names and node names are hex-encoded in subjects, where `.`, `*` and `>` mean
//! something.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use shard_proto::{ListEntry, SessionId, UserElsewhere, Welcome};

/// Where every node announces itself once a second.
pub const NODES_SUBJECT: &str = "ringtalk.nodes";
/// Where a node says that a node it has not heard from for the timeout is gone (payload: its
/// name), so that the others need not wait for their own next tick.
pub const GONE_SUBJECT: &str = "ringtalk.gone";
/// Where a node says it made a channel, so every node knows it (payload: the display name).
pub const CREATED_SUBJECT: &str = "ringtalk.created";
/// Where a node says an admin deleted a channel, so every node forgets it and tells its members
/// there ([`ChannelDeleted`]).
pub const DELETED_SUBJECT: &str = "ringtalk.deleted";

/// An admin deleted a channel: on [`DELETED_SUBJECT`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelDeleted {
    /// The channel's display name.
    pub channel: String,
    /// The admin.
    pub by: Arc<str>,
}

/// Lower-case hex of `s`'s UTF-8 bytes: a subject token whatever `s` holds.
pub fn hex(s: &str) -> String {
    use std::fmt::Write;
    s.bytes()
        .fold(String::with_capacity(s.len() * 2), |mut h, b| {
            let _ = write!(h, "{b:02x}");
            h
        })
}

/// The inverse of [`hex`]; `None` for anything [`hex`] did not make.
pub fn unhex(h: &str) -> Option<String> {
    if h.len() % 2 != 0 {
        return None;
    }
    let bytes = (0..h.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(h.get(i..i + 2)?, 16).ok())
        .collect::<Option<Vec<u8>>>()?;
    String::from_utf8(bytes).ok()
}

/// The subject a channel's home publishes its [`Event`]s on.
pub fn channel_subject(key: &str) -> String {
    format!("ringtalk.chan.{}", hex(key))
}

/// The inbox of node `node`'s record of channel `key`: requests to the home, and the home's
/// [`HomeMsg::Forgotten`] to a node with members (the channel rides in the subject so the
/// receiving bridge knows the shard).
pub fn home_subject(node: &str, key: &str) -> String {
    format!("ringtalk.home.{}.{}", hex(node), hex(key))
}

/// The inbox of one shard of node `node`, for answers.
pub fn node_subject(node: &str, shard: u16) -> String {
    format!("ringtalk.node.{}.{shard}", hex(node))
}

/// Where node `node` takes private messages for its users, as requests answered with a
/// [`TellAnswer`].
pub fn tell_subject(node: &str) -> String {
    format!("ringtalk.tell.{}", hex(node))
}

/// A private message from a user of another node: to a node's [`tell_subject`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeTell {
    /// The sender's name.
    pub from: Arc<str>,
    /// The addressee, as the sender typed it.
    pub to: Arc<str>,
    /// The line the addressee sees.
    pub line: Arc<str>,
}

/// A node's answer to a [`NodeTell`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TellAnswer {
    /// It reached a session of the addressee there.
    pub delivered: bool,
    /// The addressee's away message (empty: away with none), if delivered and away.
    pub away: Option<Arc<str>>,
}

/// Where node `node` answers who of its users are online (`/who *`, `/whois`), as requests
/// ([`UsersAsked`]) answered with [`UsersAnswer`].
pub fn users_subject(node: &str) -> String {
    format!("ringtalk.users.{}", hex(node))
}

/// A request for a node's users online.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsersAsked {
    /// How many names at most, the first in name order.
    pub first: u32,
    /// Only this user (any case).
    pub name: Option<Arc<str>>,
}

/// A node's answer to [`UsersAsked`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsersAnswer {
    /// How many users the node has online (for one name: 0 or 1).
    pub total: u32,
    /// The first of them, in name order, with what their sessions' shards said.
    pub users: Vec<UserElsewhere>,
}

/// Where every node hears that a user changed whom they ignore ([`IgnoringChanged`]), for the
/// user's sessions there.
pub const IGNORING_SUBJECT: &str = "ringtalk.ignoring";

/// A user changed whom they ignore: on [`IGNORING_SUBJECT`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IgnoringChanged {
    /// The user.
    pub name: Arc<str>,
    /// Whom they ignore now.
    pub names: Vec<Arc<str>>,
}

/// Where every node hears an admin's message to everyone (payload: the line).
pub const WALL_SUBJECT: &str = "ringtalk.wall";

/// Where node `node` takes an admin's order to end a user's sessions there, as requests
/// ([`KillAsked`]) answered with the user's name if any of their sessions was there (JSON
/// `Option<name>`).
pub fn kill_subject(node: &str) -> String {
    format!("ringtalk.kill.{}", hex(node))
}

/// An admin's order, from another node, to end a user's sessions.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KillAsked {
    /// The user (any case).
    pub name: Arc<str>,
    /// What each session's user is told as it closes.
    pub farewell: Arc<str>,
}

/// Where node `node` answers requests for the channels homed on it.
pub fn list_subject(node: &str) -> String {
    format!("ringtalk.list.{}", hex(node))
}

/// A request to a channel's home node, from a node with members (or would-be members) there.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ToHomeNode {
    /// The channel's display name.
    pub channel: String,
    /// The node asking.
    pub from: Arc<str>,
    /// What it asks.
    pub msg: HomeMsg,
}

/// What a node asks of a channel's home. A member is known there by (node, token): the token is
/// the member's node's own number for it, which stays the same when the session moves between
/// that node's shards.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum HomeMsg {
    /// Let this user in (answered by an [`EventKind::Answer`] on the channel's subject). Asked
    /// again, with the same token, until answered: a member already in is answered again, with no
    /// second "has joined".
    Join {
        /// The member's number at its node.
        token: u64,
        /// Its user name.
        user: Arc<str>,
        /// The asking node has just created the channel.
        create: bool,
    },
    /// This member has left (or its join was cancelled).
    Leave {
        /// The member's number at its node.
        token: u64,
    },
    /// A line from this member.
    Post {
        /// The member's number at its node.
        token: u64,
        /// The line as members will see it.
        line: Arc<str>,
    },
    /// Who is on the channel, for this member's session; answered by [`NodeMsg::Who`].
    Who {
        /// The member's number at its node.
        token: u64,
        /// The session asking, at the asking node.
        session: (u16, u64),
    },
    /// These members of the asking node are in the channel: sent to a node that has just become
    /// the home, after NATS comes back, and when the home says [`HomeMsg::Forgotten`]. Nobody is
    /// announced.
    Rejoin {
        /// (token, user name) of each.
        members: Vec<(u64, Arc<str>)>,
    },
    /// The other way: sent by the home (as `from`) to a node that spoke for a member it does not
    /// know (the home restarted, or took that node for gone). The node answers with
    /// [`HomeMsg::Rejoin`].
    Forgotten,
    /// This member asks to see or change the channel's settings; answered by
    /// [`NodeMsg::Managed`]. The home decides as the member's user (whom it knows by the
    /// token), a server admin if `admin`.
    Manage {
        /// The member's number at its node.
        token: u64,
        /// The session asking, at the asking node.
        session: (u16, u64),
        /// Its user is a server admin.
        admin: bool,
        /// What it asks.
        change: shard_proto::Change,
        /// The asking shard's number for the question, given back in the answer.
        asked: u32,
    },
}

/// What a channel's home publishes on the channel's subject.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// The channel's display name.
    pub channel: String,
    /// The node publishing (the home, as it believes).
    pub home: Arc<str>,
    /// When that node became the channel's home (ms since the epoch): a new home, or the same node
    /// restarted, starts new numbers.
    pub epoch: u64,
    /// Counts up from 1 within an epoch, one per event.
    pub seq: u64,
    /// What happened.
    pub what: EventKind,
}

/// One event of a channel, in the channel's order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum EventKind {
    /// A line for every member.
    Line(Arc<str>),
    /// The answer to a [`HomeMsg::Join`] from `node`.
    Answer {
        /// The asking node.
        node: Arc<str>,
        /// The member's number there.
        token: u64,
        /// What happened.
        outcome: Outcome,
        /// For a member just let in: the channel's topic and its last lines said, which the
        /// member's node shows it (absent from a node of an older version).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        welcome: Option<Box<Welcome>>,
    },
    /// Member `token` of `node` is off the channel (kicked or banned): after the line that said
    /// so, so it sees that line first.
    Removed {
        /// The member's node.
        node: Arc<str>,
        /// Its number there.
        token: u64,
    },
    /// A line for member `token` of `node` alone: why the home refused its line.
    Notice {
        /// The member's node.
        node: Arc<str>,
        /// Its number there.
        token: u64,
        /// What it is told.
        line: Arc<str>,
    },
}

/// How a join from another node ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    /// The member is in.
    Joined,
    /// The channel is at its capacity.
    Full,
    /// The user is banned from it.
    Banned,
    /// It is invite-only and the user was not invited.
    InviteOnly,
}

/// An answer to one shard of a node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum NodeMsg {
    /// The answer to [`HomeMsg::Who`]: member names, or `None` if the asker is no member.
    Who {
        /// The session that asked.
        session: u64,
        /// The names, sorted.
        names: Option<Vec<Arc<str>>>,
    },
    /// The answer to [`HomeMsg::Manage`].
    Managed {
        /// The session that asked.
        session: u64,
        /// The answer.
        answer: shard_proto::Managed,
        /// The question's number.
        asked: u32,
    },
}

/// One channel in an answer to a list request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListItem {
    /// Its display name.
    pub name: String,
    /// Its members, on every node.
    pub members: u32,
    /// Its topic.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topic: Option<Arc<str>>,
}

/// What a hub asks its node's bridge to do.
#[derive(Debug)]
pub enum ClusterOut {
    /// Send to a channel's home node.
    ToHome {
        /// The home node.
        node: Arc<str>,
        /// The channel's key, for the subject.
        key: Arc<str>,
        /// The request.
        msg: ToHomeNode,
    },
    /// Publish an event on the channel's subject (from its home only).
    Publish {
        /// The channel's key, for the subject.
        key: Arc<str>,
        /// The event.
        event: Event,
    },
    /// Answer one shard of a node.
    ToNode {
        /// The node.
        node: Arc<str>,
        /// Its shard.
        shard: u16,
        /// The answer.
        msg: NodeMsg,
    },
    /// Start hearing a channel's events (this node has members or would-be members there).
    Subscribe(Arc<str>),
    /// Stop hearing them.
    Unsubscribe(Arc<str>),
    /// Tell every node of a channel just made (its display name).
    Created(String),
    /// Tell every node that an admin deleted this channel.
    Deleted(ChannelDeleted),
    /// One shard's part of the answer to [`ClusterIn::ListRequest`].
    ListPart {
        /// The request.
        id: u64,
        /// The channels homed on this node at that shard.
        channels: Vec<ListItem>,
    },
    /// Ask every other node for its channels, for this session: answered by
    /// [`ClusterIn::ListAnswer`] (after at most a second, with what came).
    List {
        /// Who asks.
        session: SessionId,
    },
    /// A private message for a user not online on this node: every other node is asked, and
    /// the answer comes as [`ClusterIn::Told`] (delivered if any node delivered it; not online if
    /// none did within a second).
    Tell(Box<shard_proto::Tell>),
    /// A user of this node changed whom they ignore: for their sessions on every other node.
    Ignoring {
        /// The user.
        name: Arc<str>,
        /// Whom they ignore now.
        names: Vec<Arc<str>>,
    },
    /// A copy of a private message delivered on this node, for the addressee's sessions on every
    /// other node (a user may be logged in on several); nobody answers.
    TellCopy(Box<shard_proto::Tell>),
    /// Ask every other node who of its users are online (the first `first` by name, or one
    /// name), for this session: answered by [`ClusterIn::UsersAnswer`] (after at most a second,
    /// with what came).
    Users {
        /// Who asks.
        session: SessionId,
        /// How many names at most.
        first: u32,
        /// Only this user.
        name: Option<Arc<str>>,
    },
    /// One shard's part of the directory, for the bridge's [`ClusterIn::Census`] `id`.
    CensusPart {
        /// The request.
        id: u64,
        /// How many users this shard's part has.
        total: u32,
        /// The first of them.
        users: Vec<shard_proto::OnlineUser>,
    },
    /// What one shard knows of some of its sessions, for the bridge's [`ClusterIn::Facts`] `id`.
    FactsPart {
        /// The request.
        id: u64,
        /// The sessions still there.
        facts: Vec<shard_proto::SessionFacts>,
    },
    /// An admin's message to everyone, for the other nodes' users.
    Wall(Arc<str>),
    /// End user `name`'s sessions on every other node; with `asker`, answered by
    /// [`ClusterIn::KilledElsewhere`] (after at most a second).
    Kill {
        /// The admin's session, if it waits for the answer.
        asker: Option<SessionId>,
        /// The user.
        name: Arc<str>,
        /// What each session's user is told.
        farewell: Arc<str>,
    },
    /// This node's answer to a [`KillAsked`] from another node: the user as the account spells
    /// the name, if any of their sessions was here.
    Killed {
        /// Where the answer goes.
        reply: Arc<str>,
        /// The user, if found.
        found: Option<Arc<str>>,
    },
    /// This node's answer to a [`NodeTell`] from another node.
    Told {
        /// Where the answer goes.
        reply: Arc<str>,
        /// What became of it.
        outcome: shard_proto::Told,
    },
}

impl ClusterOut {
    /// Whether the bridge may drop it when its queue is long: lines only (their loss shows as a
    /// gap), never what changes who is where.
    pub fn droppable(&self) -> bool {
        matches!(
            self,
            ClusterOut::ToHome {
                msg: ToHomeNode {
                    msg: HomeMsg::Post { .. },
                    ..
                },
                ..
            } | ClusterOut::Publish {
                event: Event {
                    what: EventKind::Line(_),
                    ..
                },
                ..
            }
        )
    }
}

/// What the bridge hands a shard's hub.
#[derive(Debug)]
pub enum ClusterIn {
    /// A request for a channel homed (in this node) on this shard.
    AtHome(ToHomeNode),
    /// An event of a channel whose record is on this shard.
    Event(Event),
    /// An answer for a session of this shard.
    AtNode(NodeMsg),
    /// Another node made this channel (display name).
    Created(String),
    /// An admin (of any node, this one too) deleted this channel.
    Deleted(ChannelDeleted),
    /// The live nodes (this one included, in name order) and whether NATS is reachable; sent when
    /// either changes.
    Nodes {
        /// The live nodes.
        nodes: Arc<[Arc<str>]>,
        /// NATS is connected.
        connected: bool,
        /// Now, in ms since the Unix epoch: the epoch of a channel that becomes homed here.
        epoch: u64,
    },
    /// Another node asks for this node's channels: answer with [`ClusterOut::ListPart`].
    ListRequest {
        /// The request, to name in the answer.
        id: u64,
    },
    /// The other nodes' channels, for this session's list.
    ListAnswer {
        /// Who asked.
        session: u64,
        /// The channels.
        channels: Vec<ListEntry>,
    },
    /// A private message from a user of another node, for the directory on this shard.
    Tell {
        /// The message.
        tell: NodeTell,
        /// Where the answer goes (none for a copy, which nobody waits for).
        reply: Option<Arc<str>>,
    },
    /// Another node asks who is online here: this shard's part of the directory, answered with
    /// [`ClusterOut::CensusPart`].
    Census {
        /// The request.
        id: u64,
        /// How many names at most.
        first: u32,
        /// Only this user.
        name: Option<Arc<str>>,
    },
    /// What this shard knows of these of its sessions, answered with [`ClusterOut::FactsPart`].
    Facts {
        /// The request.
        id: u64,
        /// The sessions.
        keys: Vec<u64>,
    },
    /// The other nodes' users, for this session's `/who *` or `/whois`.
    UsersAnswer {
        /// Who asked.
        session: u64,
        /// The answers, merged.
        answer: UsersAnswer,
    },
    /// An admin of another node says this to everyone.
    Wall(Arc<str>),
    /// A user changed whom they ignore on another node: for the name's directory shard.
    Ignoring(IgnoringChanged),
    /// An admin of another node ends user `name`'s sessions: this shard keeps the name's entry
    /// in the directory. Answer through the bridge to `reply`.
    Kill {
        /// The order.
        asked: KillAsked,
        /// Where the answer goes.
        reply: Arc<str>,
    },
    /// The other nodes' answer to a [`ClusterOut::Kill`] from this shard's admin.
    KilledElsewhere {
        /// The admin's session.
        session: u64,
        /// The user, if any node had a session of theirs.
        found: Option<Arc<str>>,
    },
    /// The other nodes' answer to a [`ClusterOut::Tell`] from this shard.
    Told {
        /// The sender, on this shard.
        session: SessionId,
        /// The addressee, as the sender typed it.
        to: Arc<str>,
        /// What became of it.
        outcome: shard_proto::Told,
    },
    /// Once a second: joins still unanswered are asked again.
    Tick,
}

impl ClusterIn {
    /// Whether another node sent it (rather than the bridge itself).
    pub fn from_another_node(&self) -> bool {
        matches!(
            self,
            ClusterIn::AtHome(_)
                | ClusterIn::Event(_)
                | ClusterIn::AtNode(_)
                | ClusterIn::Created(_)
                | ClusterIn::Deleted(_)
                | ClusterIn::ListAnswer { .. }
                | ClusterIn::Tell { .. }
                | ClusterIn::Wall(_)
                | ClusterIn::Ignoring(_)
                | ClusterIn::Kill { .. }
        )
    }

    /// Whether the bridge may drop it when the shard is behind: lines only.
    pub fn droppable(&self) -> bool {
        matches!(
            self,
            ClusterIn::AtHome(ToHomeNode {
                msg: HomeMsg::Post { .. },
                ..
            }) | ClusterIn::Event(Event {
                what: EventKind::Line(_),
                ..
            })
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trips_anything_and_refuses_what_it_did_not_make() {
        for s in ["lobby", "Ärger", "a.b*c>d", "", "日本語"] {
            let h = hex(s);
            assert!(h.bytes().all(|b| b.is_ascii_hexdigit()), "{h}");
            assert_eq!(unhex(&h).as_deref(), Some(s));
        }
        for bad in ["0", "zz", "ff", "c3"] {
            assert_eq!(unhex(bad), None, "{bad}");
        }
    }

    #[test]
    fn messages_survive_the_wire_and_only_lines_are_droppable() {
        let msg = ToHomeNode {
            channel: "Lobby".into(),
            from: "node-a".into(),
            msg: HomeMsg::Post {
                token: 7,
                line: "alice says, \"hi\"".into(),
            },
        };
        let bytes = serde_json::to_vec(&msg).unwrap();
        assert_eq!(serde_json::from_slice::<ToHomeNode>(&bytes).unwrap(), msg);
        assert!(ClusterIn::AtHome(msg.clone()).droppable());
        let join = ToHomeNode {
            msg: HomeMsg::Join {
                token: 1,
                user: "bob".into(),
                create: false,
            },
            ..msg
        };
        assert!(!ClusterIn::AtHome(join).droppable());
        let event = Event {
            channel: "Lobby".into(),
            home: "node-b".into(),
            epoch: 1,
            seq: 2,
            what: EventKind::Answer {
                node: "node-a".into(),
                token: 1,
                outcome: Outcome::Full,
                welcome: None,
            },
        };
        let bytes = serde_json::to_vec(&event).unwrap();
        assert_eq!(serde_json::from_slice::<Event>(&bytes).unwrap(), event);
        assert!(!ClusterIn::Event(event).droppable());
        assert!(serde_json::from_slice::<Event>(b"{\"channel\":1}").is_err());
    }

    #[test]
    fn a_user_online_and_a_welcome_keep_their_json_field_for_field() {
        let users = r#"{"total":3,"users":[{"name":"Alice","node":"n1","since":10,"last_input":20,"away":"lunch","channels":["Lobby"],"sessions":2}]}"#;
        let answer: UsersAnswer = serde_json::from_str(users).unwrap();
        assert_eq!(serde_json::to_string(&answer).unwrap(), users);
        assert_eq!(answer.users[0].last_input, 20);
        let event = r#"{"channel":"Lobby","home":"n2","epoch":1,"seq":2,"what":{"Answer":{"node":"n1","token":7,"outcome":"Joined","welcome":{"topic":"hi","history":["a","b"]}}}}"#;
        let decoded: Event = serde_json::from_str(event).unwrap();
        assert_eq!(serde_json::to_string(&decoded).unwrap(), event);
    }
}
