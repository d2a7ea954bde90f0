//! A shard's part in chat, with no I/O: the channels it is home to, and which of its own sessions are
//! members of which channel anywhere.
//!
//! Every chat action is a message: a session's request goes to the channel's home ([`ToHome`]); the
//! home decides (admits, orders, logs) and answers with [`ToMember`] messages, one per shard that has
//! members. The hub handles both kinds and says what should happen through [`Outputs`]: messages for
//! other shards, lines and replies for local sessions, lines for the channel log, entries for the
//! audit log, sessions an admin ends. A message for its own shard is handled at once, never queued.
//!
//! Because nothing here touches a socket, a ring or a clock, tests step several hubs over in-memory
//! queues in any interleaving and check ordering and membership exactly (see `tests` below; and
//! `tests/hub_sim`, which the property tests and the `hub_messages` fuzz target drive with any
//! operations, and with messages a buggy peer could send, which must never panic a hub).
//!
//! # Membership, in two places
//!
//! The home's [`Channel`] is the truth: it decides joins and orders lines. Each member shard keeps a
//! mirror (channel → its local member sessions) so that a delivery carries only the channel and the
//! line. The mirror changes only when a [`ToMember::Joined`] arrives (add), when a local session
//! leaves (remove, at once, then [`ToHome::Leave`]), and when a member moves to its channel's home
//! (added at the home when [`ToHome::Move`] arrives; removed from the old shard when
//! [`ToMember::Moved`] does, after every line the home sent there for it). Deliveries travel the
//! same FIFO ring as the `Joined` answers, so the mirror always matches what the home had when it
//! sent each delivery, except that a leaving session stops receiving a little early — never late.
//!
//! A session is in at most one channel and has at most one join on its way: a join or exit asked for
//! while one is in flight is refused here (a session handles one command at a time, so this is a
//! guard, not a user-visible rule). That makes every `Joined` answer the answer to the one join its
//! session is waiting for. `/join` while in a channel sends the join first and leaves the old channel
//! only once the new one has said yes, so a refused join leaves the user where they were.
//!
//! # A session that ends
//!
//! When a session ends, its shard forgets it at once and tells every home that may count it, in the
//! same step: [`ToHome::Leave`] to the home of the channel it was in, and [`ToHome::Cancel`] to the
//! home of a channel it was still waiting to join. The cancel travels the ring that carried the join,
//! so the home sees it right after the join and takes back whatever the join gave. No answer is
//! waited for: an answer that comes back for a session the shard no longer waits on is dropped. So
//! an ended session is a member nowhere one ring trip after it ended, whatever order the messages
//! meet in, and nothing anywhere waits on it.

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::sync::Arc;

use shard_proto::{
    Change, ChannelId, ChannelName, JoinOutcome, Line, ListEntry, Managed, SessionId, ShardId,
    ShardMsg, ToHome, ToMember, Traveller, Welcome,
};

use crate::channel::{Channel, Role, Settings};
use crate::cluster::wire::{ChannelDeleted, ClusterOut, EventKind};
use crate::mailbox::Reply;

mod cluster;
mod manage;
mod users;

pub use cluster::{list_entries, NodeState};
pub use manage::minutes_text;
pub use users::{by_name, speaker, Personal};

/// Where a hub's decisions go. The shard implements it over rings, session queues and the log writer;
/// tests implement it over vectors.
pub trait Outputs {
    /// Queue a message for another shard.
    fn to_shard(&mut self, dest: ShardId, msg: ShardMsg);
    /// Put a line in a local session's outgoing queue.
    fn deliver(&mut self, session: u64, line: &Line);
    /// Tell a local session that `count` lines meant for it were dropped before they reached its
    /// queue (it sees them counted in its next drop notice).
    fn lost(&mut self, session: u64, count: u32);
    /// Hand a reply to a local session.
    fn reply(&mut self, session: u64, reply: Reply);
    /// Put a private message in a local session's outgoing queue (the same bounded queue as its
    /// channel's lines), and say whose queue that was.
    fn tell(&mut self, session: u64, line: &Line) -> Reached;
    /// Append a line to a channel's log.
    fn log(&mut self, channel: &ChannelName, line: &Line);
    /// Store a channel's settings, which its home has just changed. Changes of one channel are
    /// stored in the order made (they are all made at its home).
    fn save_settings(&mut self, channel: &ChannelName, settings: &Settings);
    /// Now, in Unix seconds (for mutes, which end by themselves).
    fn unix_now(&self) -> u32;
    /// When a local logged-in session logged in and when its user last typed (Unix seconds);
    /// `None` for a key no session here has.
    fn times(&self, session: u64) -> Option<(u32, u32)>;
    /// Take up a session that moves here from another shard; returns its key here. Its lines are
    /// held (not written) until [`Outputs::forwarded`] brings the ones it had not yet written.
    fn adopt(&mut self, traveller: Traveller) -> u64;
    /// Forget a local session that has moved away, handing back the lines it held meanwhile (oldest
    /// first) and how many it had dropped.
    fn release(&mut self, session: u64) -> (Vec<Line>, u32);
    /// Put the lines a session held at its old shard ahead of those it got here, and let it write.
    fn forwarded(&mut self, session: u64, lines: Vec<Line>, dropped: u32);
    /// Deliveries of `channel` for shard `dest` that this shard dropped (its queue to `dest` was
    /// full) and has not yet told `dest` of.
    fn dropped_on_the_way(&self, dest: ShardId, channel: ChannelId) -> u32;
    /// Hand a message to this node's bridge to the cluster. Only a hub that has joined a cluster
    /// ([`Hub::join_cluster`]) makes any; outside a cluster there is nowhere for them to go.
    fn to_cluster(&mut self, _msg: ClusterOut) {}
    /// Read a channel's stored settings and hand them to [`Hub::settings_loaded`]: in a cluster,
    /// for a channel whose home has just become this node. Stores made before come first.
    fn load_settings(&mut self, _channel: &ChannelName) {}
    /// Forget what waits to be stored or read for a channel an admin has deleted: a store
    /// made late could otherwise land on a channel made again under its name.
    fn forget_settings(&mut self, channel: &ChannelName);
    /// Record an admin's or a channel owner's action in the audit log: `entry` is
    /// `<actor> <what>`, and the time it is recorded at is added.
    fn audit(&mut self, entry: &str);
    /// End a local session (an admin said so), telling its user `farewell` as it closes, and say
    /// whose session that was: one that has just left for another shard cannot be ended here.
    fn disconnect(&mut self, session: u64, farewell: &Line) -> Reached;
    /// Put a line in the chat queue of every logged-in local session (the same bounded queue as
    /// its channel's lines).
    fn wall(&mut self, line: &Line);
}

/// Whose queue a private message went into (see [`Outputs::tell`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reached {
    /// A session here.
    Here,
    /// A session that has just left for another shard: its old queue, whose lines follow it.
    InTransit,
    /// No session has that key here.
    Nobody,
}

/// One shard's chat state.
#[derive(Debug)]
pub struct Hub {
    id: ShardId,
    shards: usize,
    capacity: u32,
    /// Members a channel may have, counting one who just joined from another shard, for that
    /// joiner to be asked to move here (0: never). Up to it, moving saves every line of the
    /// member's two ring crossings for the price of three messages once; past it, members stay
    /// spread over the shards that accepted them, so a big channel's writes run on every core.
    colocate_up_to: u32,
    /// Channels homed here, by index. A record is never removed nor moved: one an admin deleted
    /// stays, emptied and out of `by_key` (see [`Hub::delete`]), so every id stays valid.
    homed: Vec<Channel>,
    /// Lower-cased name → index in `homed`.
    by_key: HashMap<Arc<str>, u32>,
    /// Mirror: channel (homed anywhere) → local member sessions.
    local: HashMap<ChannelId, Vec<u64>>,
    /// Local session → the channel it is in.
    session_channel: HashMap<u64, (ChannelId, ChannelName)>,
    /// Local sessions with a join on its way, and the channel each asked for.
    joining: HashMap<u64, ChannelName>,
    /// This node's place in a cluster (`None`: a node on its own).
    cluster: Option<NodeState>,
    /// Channels in `homed` whose role is [`Role::Home`], kept because the shard reads it after
    /// every hub call.
    homes: usize,
    /// Who is online where, for the user names whose directory is this shard (see [`users`]).
    directory: users::Directory,
    /// Lines each channel homed here keeps for those who join (`--history-lines`; 0: none).
    history_lines: usize,
    /// Local sessions with a join on its way whose channel's topic has come (in the
    /// [`ToMember::Welcome`] ahead of the answer), to give them with the answer.
    topics: HashMap<u64, Arc<str>>,
    /// Local sessions waiting for the answer to a channel settings question, with its number: an
    /// answer that comes after its session stopped waiting (see [`Hub::forget_asking`]) is
    /// dropped, not taken for the answer to the next one.
    asking: HashMap<u64, u32>,
    /// The last question's number.
    next_ask: u32,
}

impl Hub {
    /// The hub of shard `id` of `shards`, with channels of at most `capacity` members (0: no limit),
    /// whose joiners from other shards move here while a channel has at most `colocate_up_to`.
    pub fn new(id: ShardId, shards: usize, capacity: u32, colocate_up_to: u32) -> Hub {
        Hub {
            id,
            shards,
            capacity,
            colocate_up_to,
            homed: Vec::new(),
            by_key: HashMap::new(),
            local: HashMap::new(),
            session_channel: HashMap::new(),
            joining: HashMap::new(),
            cluster: None,
            homes: 0,
            directory: users::Directory::default(),
            history_lines: 0,
            topics: HashMap::new(),
            asking: HashMap::new(),
            next_ask: 0,
        }
    }

    /// Keeps the last `lines` lines said in each channel homed here, for those who join.
    pub fn keep_history(&mut self, lines: usize) {
        self.history_lines = lines;
    }

    /// Places a channel homed here (at start, from the database); returns its id. Idempotent.
    pub fn open(&mut self, name: ChannelName) -> ChannelId {
        debug_assert_eq!(shard_proto::home_of(&name, self.shards), self.id);
        if let Some(&index) = self.by_key.get(name.key()) {
            return self.homed[index as usize].id;
        }
        let index = self.homed.len() as u32;
        let id = ChannelId {
            home: self.id,
            index,
        };
        self.by_key.insert(name.key().clone(), index);
        let role = self.role_for(name.key());
        if matches!(role, Role::Home { .. }) {
            self.homes += 1;
        }
        let mut channel = Channel::new(id, name, self.capacity, self.shards);
        channel.role = role;
        self.homed.push(channel);
        id
    }

    /// Channels homed here (in a cluster: those this node is the home of).
    pub fn homed_channels(&self) -> usize {
        self.homes
    }

    /// Members of all channels homed here.
    pub fn homed_members(&self) -> u64 {
        self.homed.iter().map(|c| u64::from(c.len())).sum()
    }

    /// Local sessions that are in a channel (not counting those that have moved away).
    pub fn local_members(&self) -> usize {
        self.session_channel.len()
    }

    /// The channel a local session is in.
    pub fn channel_of(&self, session: u64) -> Option<&ChannelName> {
        self.session_channel.get(&session).map(|(_, name)| name)
    }

    /// Whether a local session has a join on its way.
    pub fn is_joining(&self, session: u64) -> bool {
        self.joining.contains_key(&session)
    }

    /// Whether the channel `channel`, homed here, counts `session` (on any shard) as a member: the
    /// home's side of what [`Hub::channel_of`] says on the member's shard, for checks that the two
    /// agree (the fuzz target and the property tests).
    pub fn has_member(&self, channel: &ChannelName, session: SessionId) -> bool {
        self.by_key
            .get(channel.key())
            .is_some_and(|&index| self.homed[index as usize].contains(session))
    }

    /// Whether a local session may move to its channel's home: it is in a channel homed on another
    /// shard and has no join on its way.
    pub fn may_depart(&self, session: u64) -> bool {
        !self.joining.contains_key(&session)
            && self
                .session_channel
                .get(&session)
                .is_some_and(|(id, _)| id.home != self.id)
    }

    /// A local session leaves for its channel's home, as `traveller` (see
    /// [`shard_proto::ToHome::Move`]). It is no longer one of this shard's members, but stays in
    /// the channel's mirror, so its lines keep going into its queue here until the home answers
    /// that the new session has its place. If it may not move (see [`Hub::may_depart`], which the
    /// caller checks in the same step) the traveller is dropped, closing the connection, and the
    /// session ends here.
    pub fn depart(&mut self, session: u64, traveller: Traveller, out: &mut impl Outputs) {
        if !self.may_depart(session) {
            drop(traveller);
            out.release(session);
            self.session_ended(session, out);
            return;
        }
        let Some((channel, _)) = self.session_channel.remove(&session) else {
            return;
        };
        let msg = ToHome::Move {
            channel,
            session: self.session_id(session),
            traveller,
        };
        self.route(channel.home, ShardMsg::ToHome(msg), out);
    }

    /// A local session asks to join `channel` (`create`: the database has just recorded it as new).
    /// The answer comes as [`Reply::Joined`]. False, and nothing sent, if a join is already on its way.
    pub fn join(
        &mut self,
        session: u64,
        channel: ChannelName,
        user: Arc<str>,
        create: bool,
        out: &mut impl Outputs,
    ) -> bool {
        match self.joining.entry(session) {
            Entry::Occupied(_) => return false,
            Entry::Vacant(slot) => slot.insert(channel.clone()),
        };
        let home = shard_proto::home_of(&channel, self.shards);
        let msg = ToHome::Join {
            channel,
            session: self.session_id(session),
            user,
            create,
        };
        self.route(home, ShardMsg::ToHome(msg), out);
        true
    }

    /// A local session leaves its channel; returns the channel it left. Nothing happens while a join
    /// is on its way.
    pub fn exit(&mut self, session: u64, out: &mut impl Outputs) -> Option<ChannelName> {
        if self.joining.contains_key(&session) {
            return None;
        }
        self.leave(session, out)
    }

    fn leave(&mut self, session: u64, out: &mut impl Outputs) -> Option<ChannelName> {
        let (id, name) = self.session_channel.remove(&session)?;
        self.unmirror(id, session);
        let msg = ToHome::Leave {
            channel: id,
            session: self.session_id(session),
        };
        self.route(id.home, ShardMsg::ToHome(msg), out);
        Some(name)
    }

    /// A local session has gone: it leaves its channel, if any, and a join still on its way is
    /// cancelled at its home, which hears of it right after the join (see the module doc).
    pub fn session_ended(&mut self, session: u64, out: &mut impl Outputs) {
        self.topics.remove(&session);
        self.asking.remove(&session);
        if let Some(channel) = self.joining.remove(&session) {
            // A join homed here is answered before `join` returns, so one still waiting is remote.
            let home = shard_proto::home_of(&channel, self.shards);
            let msg = ToHome::Cancel {
                channel,
                session: self.session_id(session),
            };
            self.route(home, ShardMsg::ToHome(msg), out);
        }
        self.leave(session, out);
    }

    /// A local session says something on its channel. False if it is on none.
    pub fn post(&mut self, session: u64, line: Line, out: &mut impl Outputs) -> bool {
        let Some(&(id, _)) = self.session_channel.get(&session) else {
            return false;
        };
        let msg = ToHome::Post {
            channel: id,
            session: self.session_id(session),
            line,
        };
        self.route(id.home, ShardMsg::ToHome(msg), out);
        true
    }

    /// A local session asks who is on its channel. False if it is on none; otherwise the answer comes
    /// as [`Reply::Who`].
    pub fn who(&mut self, session: u64, out: &mut impl Outputs) -> bool {
        let Some(&(id, _)) = self.session_channel.get(&session) else {
            return false;
        };
        let msg = ToHome::Who {
            channel: id,
            session: self.session_id(session),
        };
        self.route(id.home, ShardMsg::ToHome(msg), out);
        true
    }

    /// A local session asks to see or change its channel's settings (`admin`: its user is a
    /// server admin). False if it is on no channel; otherwise the answer comes as
    /// [`Reply::Managed`].
    pub fn manage(
        &mut self,
        session: u64,
        by: Arc<str>,
        admin: bool,
        change: Change,
        out: &mut impl Outputs,
    ) -> bool {
        let Some(&(id, _)) = self.session_channel.get(&session) else {
            return false;
        };
        self.next_ask = self.next_ask.wrapping_add(1);
        self.asking.insert(session, self.next_ask);
        let msg = ToHome::Manage {
            channel: id,
            session: self.session_id(session),
            by,
            admin,
            change: Box::new(change),
            asked: self.next_ask,
        };
        self.route(id.home, ShardMsg::ToHome(msg), out);
        true
    }

    /// Local session `key` has stopped waiting for the answer to its settings question (the
    /// channel's home, on another node, did not answer in time): a late answer is dropped.
    pub fn forget_asking(&mut self, key: u64) {
        self.asking.remove(&key);
    }

    /// The answer to local session `key`'s settings question number `asked`: given to the
    /// session if it still waits for that one.
    pub(super) fn managed(
        &mut self,
        key: u64,
        answer: Box<Managed>,
        asked: u32,
        out: &mut impl Outputs,
    ) {
        if self.asking.get(&key) == Some(&asked) {
            self.asking.remove(&key);
            out.reply(key, Reply::Managed(answer));
        }
    }

    /// Local session `key`, a server admin's named `by`, deletes `channel`, which the database no
    /// longer has: its home tells the members and forgets it (see [`ToHome::Delete`]), then
    /// answers with [`Reply::Deleted`]. In a cluster every other node is told to do the same for
    /// its members (and no node waits for another).
    pub fn delete_channel(
        &mut self,
        key: u64,
        channel: ChannelName,
        by: Arc<str>,
        out: &mut impl Outputs,
    ) {
        if self.cluster.is_some() {
            out.to_cluster(ClusterOut::Deleted(ChannelDeleted {
                channel: channel.as_str().to_string(),
                by: by.clone(),
            }));
        }
        let home = shard_proto::home_of(&channel, self.shards);
        let msg = ToHome::Delete {
            channel,
            session: self.session_id(key),
            by,
        };
        self.route(home, ShardMsg::ToHome(msg), out);
    }

    /// A local session asks for every channel: one [`Reply::List`] comes from each shard, and in
    /// a cluster one more with the other nodes' channels; returns how many.
    pub fn list(&mut self, session: u64, out: &mut impl Outputs) -> usize {
        for shard in 0..self.shards {
            let msg = ToHome::List {
                session: self.session_id(session),
            };
            self.route(ShardId(shard as u16), ShardMsg::ToHome(msg), out);
        }
        // While NATS is away (or never came), other nodes are not asked: nobody would answer.
        if self.cluster_connected() {
            let session = self.session_id(session);
            out.to_cluster(ClusterOut::List { session });
            return self.shards + 1;
        }
        self.shards
    }

    /// Handles a message from another shard (or from this one).
    pub fn handle(&mut self, msg: ShardMsg, out: &mut impl Outputs) {
        match msg {
            ShardMsg::ToHome(msg) => self.at_home(msg, out),
            ShardMsg::ToMember(msg) => self.at_member(msg, out),
            ShardMsg::ToUser(msg) => self.at_user(msg, out),
        }
    }

    fn session_id(&self, key: u64) -> SessionId {
        SessionId {
            shard: self.id,
            key,
        }
    }

    fn route(&mut self, dest: ShardId, msg: ShardMsg, out: &mut impl Outputs) {
        if dest == self.id {
            self.handle(msg, out);
        } else if dest.index() < self.shards {
            out.to_shard(dest, msg);
        }
        // Otherwise `dest` came from an id no shard made (only a peer's bug makes one): the
        // message is dropped here, where the shard would index its rings out of bounds.
    }

    fn at_home(&mut self, msg: ToHome, out: &mut impl Outputs) {
        match msg {
            ToHome::Move {
                channel,
                session,
                traveller,
            } => {
                let key = out.adopt(traveller);
                let to = self.session_id(key);
                if let Some(ch) = self.homed_mut(channel) {
                    // A member of a channel homed on another node keeps its token there.
                    if let Some((user, token)) = ch.remove_with_token(session) {
                        ch.add_with_token(to, user, token);
                        let name = ch.name.clone();
                        self.local.entry(channel).or_default().push(key);
                        self.session_channel.insert(key, (channel, name));
                        // Lines dropped on their way to its old shard are told there after the
                        // `Moved` below, when it is no longer listed: it hears of them here.
                        let missed = out.dropped_on_the_way(session.shard, channel);
                        if missed > 0 {
                            out.lost(key, missed);
                        }
                    }
                }
                let msg = ToMember::Moved {
                    channel,
                    from: session,
                    to,
                };
                self.route(session.shard, ShardMsg::ToMember(msg), out);
            }
            ToHome::Forward {
                session,
                lines,
                dropped,
            } => out.forwarded(session.key, lines, dropped),
            ToHome::Join {
                channel,
                session,
                user,
                create,
            } => {
                let index = match self.by_key.get(channel.key()) {
                    Some(&index) => Some(index),
                    // Only the channel's home may create it: a join that reached another shard
                    // (a peer's bug) would make a second channel of that name.
                    None if create && shard_proto::home_of(&channel, self.shards) == self.id => {
                        self.announce_created(&channel, out);
                        let index = self.open(channel.clone()).index;
                        // Its creator owns it, as the database has already recorded.
                        self.homed[index as usize].settings.owner = Some(user.clone());
                        Some(index)
                    }
                    None => None,
                };
                let Some(index) = index else {
                    let msg = ToMember::Joined {
                        session,
                        channel,
                        outcome: JoinOutcome::NoSuchChannel,
                        come_home: false,
                    };
                    return self.route(session.shard, ShardMsg::ToMember(msg), out);
                };
                let ch = &self.homed[index as usize];
                let was_member = ch.contains(session);
                if matches!(ch.role, Role::Replica(_)) && !was_member {
                    return self.ask_home_to_join(index, session, user, create, out);
                }
                let outcome = self.admit(index, session, user, out);
                let ch = &self.homed[index as usize];
                let newly = !was_member && matches!(outcome, JoinOutcome::Joined(_));
                let come_home =
                    newly && session.shard != self.id && ch.local_len() <= self.colocate_up_to;
                let channel = ch.name.clone();
                if newly && (!ch.history.is_empty() || ch.settings.topic.is_some()) {
                    let welcome = Box::new(Welcome {
                        topic: ch.settings.topic.clone(),
                        history: ch.history.iter().cloned().collect(),
                    });
                    let msg = ToMember::Welcome { session, welcome };
                    self.route(session.shard, ShardMsg::ToMember(msg), out);
                }
                let msg = ToMember::Joined {
                    session,
                    channel,
                    outcome,
                    come_home,
                };
                self.route(session.shard, ShardMsg::ToMember(msg), out);
            }
            ToHome::Leave { channel, session } => {
                if self.homed_mut(channel).is_some() {
                    self.remove_member(channel.index, session, out);
                }
            }
            ToHome::Cancel { channel, session } => {
                if let Some(&index) = self.by_key.get(channel.key()) {
                    self.remove_member(index, session, out);
                }
            }
            ToHome::Post {
                channel,
                session,
                line,
            } => {
                let Some(ch) = self.homed_mut(channel).filter(|ch| ch.contains(session)) else {
                    return;
                };
                if matches!(ch.role, Role::Replica(_)) {
                    self.post_to_home(channel.index, session, line, out);
                } else if let Some(notice) = self.muted(channel.index, session, out) {
                    let msg = ToMember::Notice {
                        session,
                        line: notice,
                    };
                    self.route(session.shard, ShardMsg::ToMember(msg), out);
                } else {
                    self.order_said(channel.index, line, out);
                }
            }
            ToHome::Who { channel, session } => {
                let member = self.homed_mut(channel).filter(|ch| ch.contains(session));
                if member
                    .as_ref()
                    .is_some_and(|ch| matches!(ch.role, Role::Replica(_)))
                {
                    return self.ask_home_who(channel.index, session, out);
                }
                let names = member.map(|ch| ch.names());
                let msg = ToMember::Who { session, names };
                self.route(session.shard, ShardMsg::ToMember(msg), out);
            }
            ToHome::Manage {
                channel,
                session,
                by,
                admin,
                change,
                asked,
            } => {
                let relays = self
                    .homed_mut(channel)
                    .filter(|ch| ch.contains(session))
                    .map(|ch| matches!(ch.role, Role::Replica(_)));
                let answer = match relays {
                    None => Managed::NotMember,
                    Some(true) => {
                        return self.manage_at_home(
                            channel.index,
                            session,
                            admin,
                            *change,
                            asked,
                            out,
                        )
                    }
                    Some(false) => self.apply_change(channel.index, &by, admin, *change, out),
                };
                let msg = ToMember::Managed {
                    session,
                    answer: Box::new(answer),
                    asked,
                };
                self.route(session.shard, ShardMsg::ToMember(msg), out);
            }
            ToHome::Delete {
                channel,
                session,
                by,
            } => {
                let channel = self.delete(&channel, &by, out);
                let msg = ToMember::Deleted { session, channel };
                self.route(session.shard, ShardMsg::ToMember(msg), out);
            }
            ToHome::List { session } => {
                let channels = self
                    .homes()
                    .map(|ch| ListEntry {
                        name: ch.name.clone(),
                        members: ch.len(),
                        topic: ch.settings.topic.clone(),
                    })
                    .collect();
                let msg = ToMember::List { session, channels };
                self.route(session.shard, ShardMsg::ToMember(msg), out);
            }
        }
    }

    /// Deletes the channel named `name` homed here (see [`ToHome::Delete`]); returns its name as
    /// it was, or `None` if no such channel is homed here. In a cluster every node does this for
    /// its own record (see [`crate::cluster::wire::ClusterIn::Deleted`]): this node's members are told here.
    ///
    /// The members are told in the channel's order (and so is its log, which stays), one
    /// [`ToMember::Closed`] per shard with members, after every line ordered before it. The
    /// record stays where it is, emptied, and only its name is forgotten: ids held elsewhere
    /// (a member's shard, a message on its way) lead to an empty channel, which nobody can enter
    /// again (a join finds it by name, and a move finds its member gone), rather than to another
    /// channel. A channel made later under the name gets a record of its own.
    fn delete(
        &mut self,
        name: &ChannelName,
        by: &str,
        out: &mut impl Outputs,
    ) -> Option<ChannelName> {
        let index = *self.by_key.get(name.key())?;
        self.forget_replica(index, out);
        let ch = &self.homed[index as usize];
        let (id, name) = (ch.id, ch.name.clone());
        let line: Line = format!("#{name} was deleted by {by}.").into();
        // A replica's lines are logged at the home.
        if matches!(ch.role, Role::Home { .. }) {
            out.log(&name, &line);
        }
        out.forget_settings(&name);
        let closed = || ToMember::Closed {
            channel: id,
            line: line.clone(),
        };
        self.send_to_member_shards(index, closed, out);
        self.by_key.remove(name.key());
        if matches!(self.homed[index as usize].role, Role::Home { .. }) {
            self.homes -= 1;
        }
        self.homed[index as usize] = Channel::new(id, name.clone(), self.capacity, self.shards);
        Some(name)
    }

    /// Whether channel record `ch` is a channel still, not one an admin deleted (whose record
    /// stays, nameless: see [`Hub::delete`]).
    pub(super) fn is_open(&self, ch: &Channel) -> bool {
        self.by_key.get(ch.name.key()) == Some(&ch.id.index)
    }

    /// Lets a session into channel `index`, ordered here, unless it is full: the members are told
    /// first. A member already is answered as one.
    fn admit(
        &mut self,
        index: u32,
        session: SessionId,
        user: Arc<str>,
        out: &mut impl Outputs,
    ) -> JoinOutcome {
        let ch = &mut self.homed[index as usize];
        if ch.contains(session) {
            return JoinOutcome::Joined(ch.id);
        }
        // A home just taken over: whom it bans, and whether it is invite-only, are on their way.
        if ch.settings.loading && ch.settings.joins_wait {
            return JoinOutcome::Unavailable;
        }
        if ch.is_full() {
            return JoinOutcome::Full;
        }
        if let Err(refused) = ch.settings.may_join(&user) {
            return refused;
        }
        let line = joined_line(&user, &ch.name);
        self.order(index, line, out);
        let ch = &mut self.homed[index as usize];
        ch.add(session, user);
        JoinOutcome::Joined(ch.id)
    }

    /// Takes a session out of a channel homed here, telling the members left; nothing if it is not in.
    fn remove_member(&mut self, index: u32, session: SessionId, out: &mut impl Outputs) {
        let ch = &mut self.homed[index as usize];
        if matches!(ch.role, Role::Replica(_)) {
            return self.leave_at_home(index, session, out);
        }
        if let Some(user) = ch.remove(session) {
            let line = left_line(&user, &ch.name);
            self.order(index, line, out);
        }
    }

    fn homed_mut(&mut self, id: ChannelId) -> Option<&mut Channel> {
        if id.home != self.id {
            return None;
        }
        self.homed.get_mut(id.index as usize)
    }

    /// Gives a line its place in the channel's order: log it, then one delivery per member shard
    /// and, in a cluster, one publication for the members of every other node.
    fn order(&mut self, index: u32, line: Line, out: &mut impl Outputs) {
        let ch = &self.homed[index as usize];
        out.log(&ch.name, &line);
        if ch.has_remote() {
            self.publish(index, EventKind::Line(line.clone()), out);
        }
        self.fan_out(index, line, out);
    }

    /// [`Hub::order`] for a line someone said, which the channel also keeps for those who join.
    fn order_said(&mut self, index: u32, line: Line, out: &mut impl Outputs) {
        if self.history_lines > 0 {
            let history = &mut self.homed[index as usize].history;
            if history.len() >= self.history_lines {
                history.pop_front();
            }
            history.push_back(line.clone());
        }
        self.order(index, line, out);
    }

    /// One delivery of `line` to each shard with local members of the channel.
    fn fan_out(&mut self, index: u32, line: Line, out: &mut impl Outputs) {
        let channel = self.homed[index as usize].id;
        let deliver = || ToMember::Deliver {
            channel,
            line: line.clone(),
        };
        self.send_to_member_shards(index, deliver, out);
    }

    /// One message made by `msg` to each shard with local members of channel `index`.
    fn send_to_member_shards(
        &mut self,
        index: u32,
        msg: impl Fn() -> ToMember,
        out: &mut impl Outputs,
    ) {
        for shard in 0..self.shards {
            let shard = ShardId(shard as u16);
            if self.homed[index as usize].has_members_on(shard) {
                self.route(shard, ShardMsg::ToMember(msg()), out);
            }
        }
    }

    /// Channels this node orders (all of them outside a cluster), deleted ones left out.
    fn homes(&self) -> impl Iterator<Item = &Channel> {
        self.homed
            .iter()
            .filter(|ch| matches!(ch.role, Role::Home { .. }) && self.is_open(ch))
    }

    /// The index of the record of the channel named `name` (any case), without making a
    /// [`ChannelName`] of it: nodes name channels in every message about them, lines included.
    fn index_of(&self, name: &str) -> Option<u32> {
        // A name's key is its lower-case form (`ChannelName::key`); most names are lower case.
        let lower = name
            .chars()
            .all(|c| c.to_lowercase().eq(std::iter::once(c)));
        let found = if !lower {
            self.by_key.get(name.to_lowercase().as_str())
        } else {
            self.by_key.get(name)
        };
        found.copied()
    }

    fn at_member(&mut self, msg: ToMember, out: &mut impl Outputs) {
        match msg {
            ToMember::Welcome { session, welcome } => {
                // Ahead of every line ordered after the join, which all come after this.
                if session.shard == self.id && self.joining.contains_key(&session.key) {
                    let Welcome { topic, history } = *welcome;
                    for line in &history {
                        if !self.ignores(session.key, users::speaker(line)) {
                            out.deliver(session.key, &history_line(line));
                        }
                    }
                    if let Some(topic) = topic {
                        self.topics.insert(session.key, topic);
                    }
                }
            }
            ToMember::Deliver { channel, line } => {
                if let Some(members) = self.local.get(&channel) {
                    if !self.directory.anyone_ignores(&line) {
                        for &session in members {
                            out.deliver(session, &line);
                        }
                    } else {
                        let speaker = users::speaker(&line);
                        for &session in members {
                            if !self.ignores(session, speaker) {
                                out.deliver(session, &line);
                            }
                        }
                    }
                }
            }
            ToMember::Joined {
                session,
                channel,
                outcome,
                come_home,
            } => {
                let key = session.key;
                let topic = self.topics.remove(&key);
                if self.joining.remove(&key).is_none() {
                    // The session ended while its join was on its way; the cancel it sent then
                    // follows the join to the home and undoes it there.
                    return;
                }
                if let JoinOutcome::Joined(id) = outcome {
                    match self.session_channel.get(&key) {
                        Some(&(old, _)) if old == id => {}
                        _ => {
                            self.leave(key, out);
                            self.local.entry(id).or_default().push(key);
                            self.session_channel.insert(key, (id, channel.clone()));
                        }
                    }
                }
                out.reply(
                    key,
                    Reply::Joined {
                        channel,
                        outcome,
                        come_home,
                        topic,
                    },
                );
            }
            ToMember::Told {
                session,
                to,
                outcome,
            } => {
                if session.shard == self.id {
                    out.reply(session.key, Reply::Told { to, outcome });
                }
            }
            ToMember::Moved { channel, from, to } => {
                // Every line the home sent for `from` is here by now: hand over what it holds.
                self.unmirror(channel, from.key);
                let (lines, dropped) = out.release(from.key);
                let msg = ToHome::Forward {
                    session: to,
                    lines,
                    dropped,
                };
                self.route(to.shard, ShardMsg::ToHome(msg), out);
            }
            ToMember::Lost { channel, count } => {
                if let Some(members) = self.local.get(&channel) {
                    for &session in members {
                        out.lost(session, count);
                    }
                }
            }
            ToMember::Closed { channel, line } => {
                // Deleted at its home: its local members (and what is left here of one that has
                // just moved on, whose lines follow it) are told, and are on no channel.
                for key in self.local.remove(&channel).unwrap_or_default() {
                    out.deliver(key, &line);
                    if self
                        .session_channel
                        .get(&key)
                        .is_some_and(|(id, _)| *id == channel)
                    {
                        self.session_channel.remove(&key);
                        out.reply(key, Reply::ChannelGone);
                    }
                }
            }
            ToMember::Deleted { session, channel } => {
                out.reply(session.key, Reply::Deleted(channel))
            }
            ToMember::Disconnected { session, name } => {
                out.reply(session.key, Reply::Disconnected(name))
            }
            ToMember::Who { session, names } => out.reply(session.key, Reply::Who(names)),
            ToMember::Census {
                session,
                total,
                users,
            } => out.reply(session.key, Reply::Census { total, users }),
            ToMember::Facts { session, facts } => out.reply(session.key, Reply::Facts(facts)),
            ToMember::Managed {
                session,
                answer,
                asked,
            } if session.shard == self.id => self.managed(session.key, answer, asked, out),
            ToMember::Managed { .. } => {}
            ToMember::Notice { session, line } => {
                if session.shard == self.id {
                    out.deliver(session.key, &line);
                }
            }
            ToMember::Removed { channel, session } => {
                let key = session.key;
                let here = session.shard == self.id
                    && self
                        .session_channel
                        .get(&key)
                        .is_some_and(|(id, _)| *id == channel);
                if here {
                    self.session_channel.remove(&key);
                    self.unmirror(channel, key);
                    out.reply(key, Reply::ChannelGone);
                }
            }
            ToMember::List { session, channels } => out.reply(session.key, Reply::List(channels)),
        }
    }

    fn unmirror(&mut self, id: ChannelId, session: u64) {
        if let Some(members) = self.local.get_mut(&id) {
            if let Some(at) = members.iter().position(|&s| s == session) {
                members.swap_remove(at);
            }
            if members.is_empty() {
                self.local.remove(&id);
            }
        }
    }
}

/// A line a channel kept, as someone who joins is shown it.
pub fn history_line(line: &str) -> Line {
    format!("[history] {line}").into()
}

/// What members see when `user` joins channel `name`.
fn joined_line(user: &str, name: &ChannelName) -> Line {
    format!("{user} has joined #{name}").into()
}

/// What members see when `user` leaves channel `name`, however it left.
fn left_line(user: &str, name: &ChannelName) -> Line {
    format!("{user} has left #{name}").into()
}

#[cfg(test)]
mod tests {
    //! Several hubs stepped over in-memory rings: no threads, no sockets, no clocks. A seeded PRNG
    //! picks operations and which ring moves next, so every interleaving is replayable.

    use super::*;
    use shard_proto::{Managed, SettingsShown};
    use std::collections::{BTreeMap, HashSet, VecDeque};

    /// Everything one shard's hub produced, recorded.
    #[derive(Default)]
    struct Recorder {
        outgoing: Vec<(ShardId, ShardMsg)>,
        /// What each session has been given, in order; a session that moved here starts with
        /// what it saw before.
        lines: BTreeMap<u64, Vec<Line>>,
        replies: BTreeMap<u64, Vec<Reply>>,
        live: HashSet<u64>,
        log: Vec<(Arc<str>, Line)>,
        /// Sessions that moved here and wait for the lines their old shard held, with the lines
        /// they got here meanwhile (not yet written).
        held: BTreeMap<u64, Vec<Line>>,
        /// Sessions taken up here since the sim last looked: where from, and the key here.
        arrived: Vec<((usize, u64), u64)>,
        /// The next key for a session that moves here (each shard has its own range).
        next_key: u64,
        /// Deliveries this shard dropped for another, not yet told there (see
        /// [`Outputs::dropped_on_the_way`]); set by tests.
        on_the_way: HashMap<(ShardId, ChannelId), u32>,
        /// Sessions whose mailbox stays here after they left (a private message for one is
        /// [`Reached::InTransit`]); set by tests.
        in_transit: HashSet<u64>,
        /// Channel settings stored, in order.
        saved: Vec<(Arc<str>, Settings)>,
        /// Channels whose waiting stores and reads were forgotten, in order.
        forgotten: Vec<Arc<str>>,
        /// What `unix_now` says; set by tests.
        clock: u32,
        /// Audit entries, in order.
        audited: Vec<String>,
        /// Sessions an admin ended, with what each was told.
        disconnected: BTreeMap<u64, Line>,
    }

    /// A session on its way in the sim: who it was and what it had seen.
    struct SimTraveller {
        from: (usize, u64),
        seen: Vec<Line>,
    }

    impl Recorder {
        fn queue_of(&mut self, session: u64) -> &mut Vec<Line> {
            match self.held.get_mut(&session) {
                Some(held) => held,
                None => self.lines.entry(session).or_default(),
            }
        }
    }

    impl Outputs for Recorder {
        fn to_shard(&mut self, dest: ShardId, msg: ShardMsg) {
            self.outgoing.push((dest, msg));
        }
        fn deliver(&mut self, session: u64, line: &Line) {
            self.queue_of(session).push(line.clone());
        }
        fn lost(&mut self, session: u64, count: u32) {
            let notice: Line = format!("[{count} messages dropped]").into();
            self.queue_of(session).push(notice);
        }
        fn times(&self, session: u64) -> Option<(u32, u32)> {
            self.live.contains(&session).then_some((1, 2))
        }
        fn save_settings(&mut self, channel: &ChannelName, settings: &Settings) {
            self.saved.push((channel.key().clone(), settings.clone()));
        }
        fn forget_settings(&mut self, channel: &ChannelName) {
            self.forgotten.push(channel.key().clone());
        }
        fn unix_now(&self) -> u32 {
            self.clock
        }
        fn tell(&mut self, session: u64, line: &Line) -> Reached {
            if !self.live.contains(&session) {
                return Reached::Nobody;
            }
            self.queue_of(session).push(line.clone());
            if self.in_transit.contains(&session) {
                Reached::InTransit
            } else {
                Reached::Here
            }
        }
        fn adopt(&mut self, traveller: Traveller) -> u64 {
            let traveller = traveller
                .0
                .downcast::<SimTraveller>()
                .expect("the sim's own traveller");
            let key = self.next_key;
            self.next_key += 1;
            self.lines.insert(key, traveller.seen);
            self.held.insert(key, Vec::new());
            self.live.insert(key);
            self.arrived.push((traveller.from, key));
            key
        }
        fn release(&mut self, session: u64) -> (Vec<Line>, u32) {
            (self.lines.remove(&session).unwrap_or_default(), 0)
        }
        fn dropped_on_the_way(&self, dest: ShardId, channel: ChannelId) -> u32 {
            self.on_the_way.get(&(dest, channel)).copied().unwrap_or(0)
        }
        fn forwarded(&mut self, session: u64, lines: Vec<Line>, _dropped: u32) {
            let Some(meanwhile) = self.held.remove(&session) else {
                panic!("lines forwarded twice, or to a session that never moved: {session}");
            };
            let seen = self.lines.entry(session).or_default();
            seen.extend(lines);
            seen.extend(meanwhile);
        }
        fn reply(&mut self, session: u64, reply: Reply) {
            self.replies.entry(session).or_default().push(reply);
        }
        fn log(&mut self, channel: &ChannelName, line: &Line) {
            self.log.push((channel.key().clone(), line.clone()));
        }
        fn audit(&mut self, entry: &str) {
            self.audited.push(entry.to_string());
        }
        fn disconnect(&mut self, session: u64, farewell: &Line) -> Reached {
            if !self.live.contains(&session) {
                return Reached::Nobody;
            }
            if self.in_transit.contains(&session) {
                return Reached::InTransit;
            }
            let before = self.disconnected.insert(session, farewell.clone());
            assert!(before.is_none(), "{session} was ended twice");
            Reached::Here
        }
        fn wall(&mut self, line: &Line) {
            let live: Vec<u64> = self.live.iter().copied().collect();
            for session in live {
                self.queue_of(session).push(line.clone());
            }
        }
    }

    /// The kinds of request a session waits on an answer for.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    enum Request {
        Join,
        Who,
        List,
        Tell,
        Census,
        Manage,
        Admin,
    }

    /// The request a message in a ring asks or answers, and whose it is.
    fn request_of(msg: &ShardMsg) -> Option<(SessionId, Request)> {
        match msg {
            ShardMsg::ToHome(ToHome::Join { session, .. })
            | ShardMsg::ToMember(ToMember::Joined { session, .. }) => {
                Some((*session, Request::Join))
            }
            ShardMsg::ToHome(ToHome::Who { session, .. })
            | ShardMsg::ToMember(ToMember::Who { session, .. }) => Some((*session, Request::Who)),
            ShardMsg::ToHome(ToHome::List { session })
            | ShardMsg::ToMember(ToMember::List { session, .. }) => Some((*session, Request::List)),
            _ => None,
        }
    }

    /// The request a reply answers.
    fn answers(reply: &Reply) -> Request {
        match reply {
            Reply::Joined { .. } => Request::Join,
            Reply::Who(_) => Request::Who,
            Reply::List(_) => Request::List,
            Reply::Told { .. } => Request::Tell,
            Reply::Census { .. } | Reply::Facts(_) | Reply::Elsewhere { .. } => Request::Census,
            Reply::Managed(_) | Reply::ChannelGone => Request::Manage,
            Reply::Disconnected(_) | Reply::DisconnectedElsewhere(_) | Reply::Deleted(_) => {
                Request::Admin
            }
        }
    }

    /// What one simulated session has asked for, to check that every request is answered.
    #[derive(Default, Clone, Copy, Debug)]
    struct Asked {
        joins: usize,
        whos: usize,
        /// `List` answers expected: one per shard per `/list`.
        lists: usize,
    }

    struct Sim {
        hubs: Vec<Hub>,
        rec: Vec<Recorder>,
        /// rings[src][dst]
        rings: Vec<Vec<VecDeque<ShardMsg>>>,
        rng: u64,
        next_key: u64,
        /// Sessions that have ended, as (shard, key).
        ended: HashSet<(usize, u64)>,
        /// What each session has asked for.
        asked: BTreeMap<(usize, u64), Asked>,
        /// Sessions that moved away, as (shard, key) where they were.
        departed: HashSet<(usize, u64)>,
        /// Moves completed at the home: (from, to), as (shard, key), not yet taken by the test.
        moves: Vec<((usize, u64), (usize, u64))>,
    }

    impl Sim {
        fn new(shards: usize, capacity: u32, seed: u64) -> Sim {
            Sim {
                hubs: (0..shards)
                    .map(|i| Hub::new(ShardId(i as u16), shards, capacity, 64))
                    .collect(),
                rec: (0..shards)
                    .map(|s| Recorder {
                        next_key: 1_000_000 * (s as u64 + 1),
                        ..Recorder::default()
                    })
                    .collect(),
                rings: (0..shards)
                    .map(|_| (0..shards).map(|_| VecDeque::new()).collect())
                    .collect(),
                rng: seed | 1,
                next_key: 1,
                ended: HashSet::new(),
                asked: BTreeMap::new(),
                departed: HashSet::new(),
                moves: Vec::new(),
            }
        }

        fn rand(&mut self, n: usize) -> usize {
            self.rng ^= self.rng << 13;
            self.rng ^= self.rng >> 7;
            self.rng ^= self.rng << 17;
            (self.rng % n as u64) as usize
        }

        /// Moves what shard `s` produced into its rings.
        fn flush(&mut self, s: usize) {
            for (dest, msg) in self.rec[s].outgoing.drain(..) {
                assert_ne!(
                    dest.index(),
                    s,
                    "a message for the own shard entered a ring"
                );
                self.rings[s][dest.index()].push_back(msg);
            }
        }

        fn with_hub(&mut self, s: usize, f: impl FnOnce(&mut Hub, &mut Recorder)) {
            f(&mut self.hubs[s], &mut self.rec[s]);
            self.flush(s);
            for (from, key) in std::mem::take(&mut self.rec[s].arrived) {
                self.asked.insert((s, key), Asked::default());
                self.moves.push((from, (s, key)));
            }
        }

        /// The session moves to its channel's home, as the server's sessions do when asked;
        /// false (and nothing sent) if it may not now: it is on no channel, or on one homed here,
        /// or has a join on its way, or still waits for the lines of its last move.
        fn depart(&mut self, s: usize, key: u64) -> bool {
            if !self.hubs[s].may_depart(key) || self.rec[s].held.contains_key(&key) {
                return false;
            }
            assert!(self.rec[s].live.remove(&key));
            self.departed.insert((s, key));
            // What it had been given went out with it (written, or carried in its output).
            let seen = self.rec[s].lines.remove(&key).unwrap_or_default();
            let traveller = Traveller(Box::new(SimTraveller {
                from: (s, key),
                seen,
            }));
            self.with_hub(s, |h, r| h.depart(key, traveller, r));
            true
        }

        fn connect(&mut self, s: usize) -> u64 {
            let key = self.next_key;
            self.next_key += 1;
            self.rec[s].live.insert(key);
            self.asked.insert((s, key), Asked::default());
            key
        }

        /// The session asks to join `channel`; false if the hub refused to send it (a join was
        /// already on its way).
        fn join(&mut self, s: usize, key: u64, channel: &str, create: bool) -> bool {
            let mut sent = false;
            let user: Arc<str> = format!("u{key}").into();
            self.with_hub(s, |h, r| sent = h.join(key, name(channel), user, create, r));
            if sent {
                self.asked.get_mut(&(s, key)).unwrap().joins += 1;
            }
            sent
        }

        fn who(&mut self, s: usize, key: u64) {
            let mut sent = false;
            self.with_hub(s, |h, r| sent = h.who(key, r));
            if sent {
                self.asked.get_mut(&(s, key)).unwrap().whos += 1;
            }
        }

        fn list(&mut self, s: usize, key: u64) {
            let mut expected = 0;
            self.with_hub(s, |h, r| expected = h.list(key, r));
            self.asked.get_mut(&(s, key)).unwrap().lists += expected;
        }

        /// The session ends (its connection closed), at whatever point its requests are.
        fn end(&mut self, s: usize, key: u64) {
            assert!(self.rec[s].live.remove(&key), "{s}/{key} ended twice");
            self.ended.insert((s, key));
            self.with_hub(s, |h, r| h.session_ended(key, r));
        }

        fn is_live(&self, s: usize, key: u64) -> bool {
            self.rec[s].live.contains(&key)
        }

        /// Delivers one message from a random non-empty ring; false if all are empty.
        fn step(&mut self) -> bool {
            let n = self.hubs.len();
            let busy: Vec<(usize, usize)> = (0..n)
                .flat_map(|s| (0..n).map(move |d| (s, d)))
                .filter(|&(s, d)| !self.rings[s][d].is_empty())
                .collect();
            if busy.is_empty() {
                return false;
            }
            let (s, d) = busy[self.rand(busy.len())];
            let msg = self.rings[s][d].pop_front().unwrap();
            self.with_hub(d, |hub, rec| hub.handle(msg, rec));
            true
        }

        fn drain(&mut self) {
            while self.step() {}
        }

        /// Hands every message now on the ring from `src` to `dst` to `dst`, oldest first.
        fn pass(&mut self, src: usize, dst: usize) {
            while let Some(msg) = self.rings[src][dst].pop_front() {
                self.with_hub(dst, |hub, rec| hub.handle(msg, rec));
            }
        }

        /// [`Sim::step`], then every invariant; false once the rings are empty.
        fn step_checked(&mut self, context: &str) -> bool {
            let moved = self.step();
            self.check(context);
            moved
        }

        fn drain_checked(&mut self, context: &str) {
            while self.step_checked(context) {}
        }

        /// Messages on their way from shard `src` to shard `dst`.
        fn ring(&self, src: usize, dst: usize) -> impl Iterator<Item = &ShardMsg> {
            self.rings[src][dst].iter()
        }

        fn all_rings(&self) -> impl Iterator<Item = &ShardMsg> {
            self.rings.iter().flatten().flatten()
        }

        /// What must hold between any two steps, whatever the order messages arrive in:
        ///
        /// 1. A session that has ended has left no trace on its own shard.
        /// 2. A shard's mirror and its sessions' channels agree, and every mirrored membership is
        ///    one the home has.
        /// 3. A member the home counts is either a member as its own shard sees it, or a message
        ///    that settles it is already on its way: the answer to its join (live sessions only),
        ///    its leave or cancel, or its move. For a session that has ended it is always the latter, so the
        ///    home is right one ring trip after a session ends.
        /// 4. Every join a live session waits for has exactly one message about it in flight (the
        ///    join, or its answer), and every join, who and list it made is answered or on its way.
        fn check(&self, context: &str) {
            for &(s, key) in &self.departed {
                let me = sid(s, key);
                let moving = self.all_rings().any(|m| {
                    matches!(m, ShardMsg::ToHome(ToHome::Move { session, .. }) if *session == me)
                        || matches!(m, ShardMsg::ToMember(ToMember::Moved { from, .. }) if *from == me)
                });
                let hub = &self.hubs[s];
                assert!(
                    moving
                        || (hub.local.values().all(|keys| !keys.contains(&key))
                            && !self.rec[s].lines.contains_key(&key)),
                    "{context}: {s}/{key} moved away and is still held on its old shard"
                );
                assert!(
                    !hub.session_channel.contains_key(&key) && !hub.joining.contains_key(&key),
                    "{context}: {s}/{key} moved away and is still a member of its old shard"
                );
            }
            for (s, rec) in self.rec.iter().enumerate() {
                for &key in rec.held.keys() {
                    let me = sid(s, key);
                    let coming = self.all_rings().any(|m| {
                        matches!(m, ShardMsg::ToMember(ToMember::Moved { to, .. }) if *to == me)
                            || matches!(m, ShardMsg::ToHome(ToHome::Forward { session, .. }) if *session == me)
                    });
                    assert!(
                        coming,
                        "{context}: {s}/{key} waits for lines that nothing brings"
                    );
                }
            }
            for &(s, key) in &self.ended {
                let hub = &self.hubs[s];
                assert!(
                    !hub.session_channel.contains_key(&key)
                        && !hub.joining.contains_key(&key)
                        && hub.local.values().all(|keys| !keys.contains(&key)),
                    "{context}: ended session {s}/{key} still known on its shard"
                );
            }
            for (s, hub) in self.hubs.iter().enumerate() {
                // The mirror holds this shard's members, and the sessions that moved away until
                // the home's `Moved` comes (those are members here no longer).
                let mirrored: usize = hub.local.values().map(Vec::len).sum();
                let moving_away = self.departed.iter().filter(|&&(d, key)| {
                    d == s && hub.local.values().any(|keys| keys.contains(&key))
                });
                assert_eq!(
                    mirrored,
                    hub.session_channel.len() + moving_away.count(),
                    "{context}: shard {s}"
                );
                for (&key, (id, name)) in &hub.session_channel {
                    assert!(
                        hub.local.get(id).is_some_and(|keys| keys.contains(&key)),
                        "{context}: {s}/{key} is on {name} but not in the mirror"
                    );
                    let ch = &self.hubs[id.home.index()].homed[id.index as usize];
                    assert_eq!(ch.name.key(), name.key(), "{context}");
                    // A channel an admin deleted lets go of its members at once; they hear of
                    // it one ring trip later.
                    let closing = self.ring(id.home.index(), s).any(|m| {
                        matches!(m, ShardMsg::ToMember(ToMember::Closed { channel, .. }) if channel == id)
                    });
                    assert!(
                        ch.contains(sid(s, key)) || closing,
                        "{context}: {s}/{key} thinks it is on #{name}, whose home disagrees"
                    );
                }
            }
            for (h, hub) in self.hubs.iter().enumerate() {
                for ch in &hub.homed {
                    for member in ch.members() {
                        let (s, key) = (member.shard.index(), member.key);
                        let mirrored = self.hubs[s]
                            .session_channel
                            .get(&key)
                            .is_some_and(|(id, _)| *id == ch.id);
                        if mirrored {
                            continue;
                        }
                        let settling = self.ring(s, h).any(|m| match m {
                            ShardMsg::ToHome(ToHome::Leave { channel, session }) => {
                                *channel == ch.id && *session == member
                            }
                            ShardMsg::ToHome(ToHome::Cancel { channel, session }) => {
                                channel.key() == ch.name.key() && *session == member
                            }
                            // It moved away: the home swaps it for its new self.
                            ShardMsg::ToHome(ToHome::Move {
                                channel, session, ..
                            }) => *channel == ch.id && *session == member,
                            _ => false,
                        });
                        let answering = self.is_live(s, key)
                            && self.ring(h, s).any(|m| {
                                matches!(m, ShardMsg::ToMember(ToMember::Joined {
                                    session,
                                    outcome: JoinOutcome::Joined(id),
                                    ..
                                }) if *session == member && *id == ch.id)
                            });
                        assert!(
                            settling || answering,
                            "{context}: #{} at {h} counts {s}/{key} ({}), and nothing on its \
                             way will settle that",
                            ch.name,
                            if self.is_live(s, key) {
                                "live"
                            } else {
                                "ended"
                            },
                        );
                    }
                }
            }
            for (&(s, key), asked) in &self.asked {
                if !self.is_live(s, key) {
                    continue;
                }
                let me = sid(s, key);
                let replies = self.rec[s].replies.get(&key).map_or(&[][..], Vec::as_slice);
                for (kind, asked) in [
                    (Request::Join, asked.joins),
                    (Request::Who, asked.whos),
                    (Request::List, asked.lists),
                ] {
                    let in_flight = self
                        .all_rings()
                        .filter(|m| request_of(m) == Some((me, kind)))
                        .count();
                    let answered = replies.iter().filter(|r| answers(r) == kind).count();
                    assert_eq!(
                        answered + in_flight,
                        asked,
                        "{context}: {s}/{key}: a {kind:?} was not answered"
                    );
                    if kind == Request::Join {
                        assert_eq!(
                            in_flight,
                            usize::from(self.hubs[s].joining.contains_key(&key)),
                            "{context}: {s}/{key}: a join waited for is not on its way"
                        );
                    }
                }
            }
        }

        /// Once the rings are empty: every home's count is exactly its live members.
        fn check_settled(&self, context: &str) {
            assert!(self.all_rings().next().is_none());
            assert!(
                self.rec.iter().all(|r| r.held.is_empty()),
                "{context}: a moved session still waits for its lines"
            );
            let homed: u64 = self.hubs.iter().map(|h| h.homed_members()).sum();
            let mirrored: usize = self.hubs.iter().map(|h| h.local_members()).sum();
            assert_eq!(homed as usize, mirrored, "{context}");
            for hub in &self.hubs {
                for ch in &hub.homed {
                    for m in ch.members() {
                        assert!(
                            self.is_live(m.shard.index(), m.key),
                            "{context}: #{} keeps {}/{} after the rings went quiet",
                            ch.name,
                            m.shard.index(),
                            m.key
                        );
                    }
                }
            }
        }

        fn log_of(&self, key: &str) -> Vec<Line> {
            self.rec
                .iter()
                .flat_map(|r| r.log.iter())
                .filter(|(k, _)| &**k == key)
                .map(|(_, l)| l.clone())
                .collect()
        }
    }

    fn name(s: &str) -> ChannelName {
        ChannelName::new(s).unwrap()
    }

    fn sid(shard: usize, key: u64) -> SessionId {
        SessionId {
            shard: ShardId(shard as u16),
            key,
        }
    }

    fn is_contiguous_slice(part: &[Line], whole: &[Line]) -> bool {
        part.is_empty() || whole.windows(part.len()).any(|w| w == part)
    }

    #[test]
    fn members_on_every_shard_see_one_order_which_the_log_has() {
        for seed in 1..=40 {
            let mut sim = Sim::new(3, 0, seed);
            let mut sessions = Vec::new();
            for s in 0..3 {
                for _ in 0..3 {
                    let key = sim.connect(s);
                    sim.with_hub(s, |h, r| {
                        assert!(h.join(key, name("Lobby"), format!("u{key}").into(), true, r))
                    });
                    sessions.push((s, key));
                }
            }
            sim.drain();
            // Everybody posts while the rings move in a random order.
            for round in 0..20 {
                let (s, key) = sessions[sim.rand(sessions.len())];
                let line: Line = format!("u{key} says, \"{round}\"").into();
                sim.with_hub(s, |h, r| assert!(h.post(key, line, r)));
                for _ in 0..sim.rand(4) {
                    sim.step();
                }
            }
            sim.drain();
            let log = sim.log_of("lobby");
            let chat: Vec<Line> = log.iter().filter(|l| l.contains("says")).cloned().collect();
            assert_eq!(chat.len(), 20, "seed {seed}");
            for &(s, key) in &sessions {
                let seen = &sim.rec[s].lines[&key];
                assert!(
                    is_contiguous_slice(seen, &log),
                    "seed {seed}: {key} saw {seen:?}"
                );
                let seen_chat: Vec<Line> = seen
                    .iter()
                    .filter(|l| l.contains("says"))
                    .cloned()
                    .collect();
                assert_eq!(seen_chat, chat, "seed {seed}: session {key}");
            }
        }
    }

    #[test]
    fn capacity_refuses_the_extra_member() {
        let mut sim = Sim::new(2, 2, 7);
        let keys: Vec<(usize, u64)> = (0..3).map(|i| (i % 2, sim.connect(i % 2))).collect();
        for &(s, key) in &keys {
            sim.with_hub(s, |h, r| {
                assert!(h.join(key, name("small"), "x".into(), true, r))
            });
            sim.drain();
        }
        let outcomes: Vec<JoinOutcome> = keys
            .iter()
            .map(|&(s, key)| match &sim.rec[s].replies[&key][0] {
                Reply::Joined { outcome, .. } => *outcome,
                other => panic!("unexpected {other:?}"),
            })
            .collect();
        assert!(matches!(outcomes[0], JoinOutcome::Joined(_)));
        assert!(matches!(outcomes[1], JoinOutcome::Joined(_)));
        assert_eq!(outcomes[2], JoinOutcome::Full);
    }

    /// The home asks a joiner to move only when it comes from another shard and the channel,
    /// counting it, has at most `colocate_up_to` members; never when that is 0.
    #[test]
    fn only_joiners_from_elsewhere_into_small_channels_are_asked_to_come_home() {
        let come_home = |sim: &Sim, s: usize, key: u64| match sim.rec[s].replies[&key].last() {
            Some(Reply::Joined {
                outcome: JoinOutcome::Joined(_),
                come_home,
                ..
            }) => *come_home,
            other => panic!("unexpected {other:?}"),
        };
        for limit in [0, 1, 3] {
            let mut sim = Sim::new(2, 0, 5);
            for hub in &mut sim.hubs {
                hub.colocate_up_to = limit;
            }
            let home = shard_proto::home_of(&name("small"), 2).index();
            let away = 1 - home;
            // The first joiner is on the home's shard: it is home already.
            let local = sim.connect(home);
            assert!(sim.join(home, local, "small", true));
            sim.drain();
            assert!(!come_home(&sim, home, local), "limit {limit}");
            // Joiners from the other shard: asked while the channel, with them, fits the limit.
            for members in 2..=5u32 {
                let key = sim.connect(away);
                assert!(sim.join(away, key, "small", false));
                sim.drain();
                assert_eq!(
                    come_home(&sim, away, key),
                    limit != 0 && members <= limit,
                    "limit {limit}, member {members}"
                );
            }
        }
    }

    #[test]
    fn joining_an_unknown_channel_without_create_is_refused() {
        let mut sim = Sim::new(2, 0, 3);
        let key = sim.connect(0);
        sim.with_hub(0, |h, r| {
            assert!(h.join(key, name("nowhere"), "x".into(), false, r))
        });
        sim.drain();
        assert!(matches!(
            sim.rec[0].replies[&key][0],
            Reply::Joined {
                outcome: JoinOutcome::NoSuchChannel,
                ..
            }
        ));
        assert!(sim.hubs[0].channel_of(key).is_none());
    }

    #[test]
    fn switching_channels_leaves_the_old_one_only_after_the_new_one_says_yes() {
        let mut sim = Sim::new(2, 1, 11);
        let a = sim.connect(0);
        let b = sim.connect(1);
        sim.with_hub(0, |h, r| {
            assert!(h.join(a, name("one"), "a".into(), true, r))
        });
        sim.with_hub(1, |h, r| {
            assert!(h.join(b, name("two"), "b".into(), true, r))
        });
        sim.drain();
        // "two" is full (capacity 1): a stays in "one".
        sim.with_hub(0, |h, r| {
            assert!(h.join(a, name("two"), "a".into(), false, r))
        });
        sim.drain();
        assert_eq!(sim.hubs[0].channel_of(a), Some(&name("one")));
        // b leaves "two"; now a can switch, and "one" is left behind empty.
        sim.with_hub(1, |h, r| assert_eq!(h.exit(b, r), Some(name("two"))));
        sim.with_hub(0, |h, r| {
            assert!(h.join(a, name("two"), "a".into(), false, r))
        });
        sim.drain();
        assert_eq!(sim.hubs[0].channel_of(a), Some(&name("two")));
        let total: u64 = sim.hubs.iter().map(|h| h.homed_members()).sum();
        assert_eq!(total, 1);
        assert!(sim
            .log_of("one")
            .last()
            .unwrap()
            .contains("a has left #one"));
    }

    /// Random joins, switches, exits, posts, who, list and session ends, with the rings moving in
    /// a random order, on 2 to 4 shards with and without a capacity; every invariant is checked
    /// after every operation and every message, then again once everyone has ended.
    #[test]
    fn random_churn_keeps_every_invariant_after_every_step() {
        let mut moved = 0;
        for seed in 1..=300 {
            let shards = 2 + (seed as usize % 3);
            let capacity = [0, 2, 4][seed as usize % 3];
            let mut sim = Sim::new(shards, capacity, seed);
            let channels = ["a", "b", "c", "d", "e"];
            let mut live: Vec<(usize, u64)> = Vec::new();
            for op in 0..600 {
                let context = format!("seed {seed}, op {op}");
                match sim.rand(10) {
                    0 => {
                        let s = sim.rand(shards);
                        let key = sim.connect(s);
                        live.push((s, key));
                    }
                    1 | 2 if !live.is_empty() => {
                        // A join, or a switch when the session is on a channel already.
                        let (s, key) = live[sim.rand(live.len())];
                        let ch = channels[sim.rand(channels.len())];
                        let create = sim.rand(4) != 0;
                        let busy = sim.hubs[s].is_joining(key);
                        assert_eq!(sim.join(s, key, ch, create), !busy, "{context}");
                    }
                    3 if !live.is_empty() => {
                        let (s, key) = live[sim.rand(live.len())];
                        sim.with_hub(s, |h, r| {
                            h.exit(key, r);
                        });
                    }
                    4 if !live.is_empty() => {
                        let (s, key) = live[sim.rand(live.len())];
                        sim.with_hub(s, |h, r| {
                            h.post(key, format!("u{key} says, \"{op}\"").into(), r);
                        });
                    }
                    5 if !live.is_empty() => {
                        let (s, key) = live[sim.rand(live.len())];
                        if sim.rand(2) == 0 {
                            sim.who(s, key);
                        } else {
                            sim.list(s, key);
                        }
                    }
                    6 if !live.is_empty() => {
                        // The session ends at any moment: mid-join, mid-switch, mid-exit, mid-who,
                        // or just after it moved and before its lines caught up.
                        let i = sim.rand(live.len());
                        let (s, key) = live.swap_remove(i);
                        sim.end(s, key);
                    }
                    7 if !live.is_empty() => {
                        // A member moves to its channel's home (if it may).
                        let i = sim.rand(live.len());
                        let (s, key) = live[i];
                        if sim.depart(s, key) {
                            live.swap_remove(i);
                        }
                    }
                    _ => {
                        sim.step();
                    }
                }
                sim.check(&context);
                moved += sim.moves.len();
                live.extend(sim.moves.drain(..).map(|(_, to)| to));
            }
            sim.drain_checked(&format!("seed {seed}, draining"));
            live.extend(sim.moves.drain(..).map(|(_, to)| to));
            sim.check_settled(&format!("seed {seed}"));
            // Everyone ends: nothing is left anywhere.
            for (s, key) in live.drain(..) {
                sim.end(s, key);
                sim.check(&format!("seed {seed}, ending"));
            }
            sim.drain_checked(&format!("seed {seed}, final drain"));
            sim.check_settled(&format!("seed {seed}, all ended"));
            assert_eq!(
                sim.hubs.iter().map(|h| h.homed_members()).sum::<u64>(),
                0,
                "seed {seed}"
            );
            assert!(
                sim.hubs
                    .iter()
                    .all(|h| h.local.is_empty() && h.joining.is_empty()),
                "seed {seed}: state left over"
            );
        }
        // The moves above did happen, at every stage of the churn.
        assert!(moved > 100, "only {moved} sessions moved");
    }

    /// Members on every shard talk while those away from the channel's home move there, each at a
    /// random moment and while lines are on their way to its old shard: every member sees every
    /// line, once, in the channel's order, across its move.
    #[test]
    fn a_session_moving_home_misses_no_line_and_sees_the_channel_order() {
        const SHARDS: usize = 3;
        for seed in 1..=100 {
            let context = format!("seed {seed}");
            let mut sim = Sim::new(SHARDS, 0, seed);
            let mut members = Vec::new();
            for s in 0..SHARDS {
                for _ in 0..3 {
                    let key = sim.connect(s);
                    assert!(sim.join(s, key, "lobby", true));
                    members.push((s, key));
                }
            }
            sim.drain_checked(&context);
            let mut waiting: Vec<(usize, u64)> = members.clone();
            let mut posted = 0;
            while posted < 60 || sim.all_rings().next().is_some() {
                if posted < 60 {
                    // Somebody talks: a member wherever it is now.
                    let (s, key) = members[sim.rand(members.len())];
                    let line: Line = format!("u{key} says, \"{posted}\"").into();
                    sim.with_hub(s, |h, r| assert!(h.post(key, line, r), "{context}"));
                    posted += 1;
                }
                if sim.rand(4) == 0 && !waiting.is_empty() {
                    let (s, key) = waiting.swap_remove(sim.rand(waiting.len()));
                    if sim.depart(s, key) {
                        members.retain(|&m| m != (s, key));
                    }
                }
                sim.step_checked(&context);
                for (from, to) in sim.moves.drain(..) {
                    assert!(!members.contains(&from), "{context}");
                    members.push(to);
                    // A session that moved may move again only once its lines caught up.
                    waiting.push(to);
                }
            }
            sim.drain_checked(&context);
            sim.check_settled(&context);
            let home = shard_proto::home_of(&name("lobby"), SHARDS).index();
            assert_eq!(members.len(), 3 * SHARDS, "{context}");
            assert!(
                members.iter().all(|&(s, _)| s == home),
                "{context}: every member ended at the home: {members:?}"
            );
            let chat: Vec<Line> = sim
                .log_of("lobby")
                .into_iter()
                .filter(|l| l.contains("says"))
                .collect();
            assert_eq!(chat.len(), 60, "{context}");
            for &(s, key) in &members {
                let seen: Vec<Line> = sim.rec[s].lines[&key]
                    .iter()
                    .filter(|l| l.contains("says"))
                    .cloned()
                    .collect();
                assert_eq!(seen, chat, "{context}: {s}/{key}");
            }
        }
    }

    /// What the session under test does before it ends.
    #[derive(Clone, Copy, Debug)]
    enum Move {
        /// Joins a channel homed on another shard, from no channel.
        Join,
        /// Switches from its channel to one homed on a third shard.
        Switch,
        /// Switches to a channel homed on the same shard as its current one.
        SwitchSameHome,
        /// Leaves its channel.
        Exit,
        /// Joins a channel homed on its own shard (answered at once).
        JoinLocal,
    }

    /// Regression: a session that ended while its join was on its way to the home left a member
    /// behind (the home heard of the end only after a round trip, or not at all). Here the session
    /// ends after every possible number of ring steps into a join, a switch or an exit, in many
    /// interleavings, while others talk on both channels; every invariant holds after every step,
    /// and once the rings are quiet the session is a member nowhere and a fresh join is answered.
    #[test]
    fn a_session_ending_at_any_point_of_a_join_switch_or_exit_leaves_nothing() {
        const SHARDS: usize = 3;
        // A channel homed on `shard`, named `stem` and a number.
        let on = |stem: &str, shard: usize| -> String {
            (0..)
                .map(|i| format!("{stem}{i}"))
                .find(|n| shard_proto::home_of(&name(n), SHARDS).index() == shard)
                .expect("some name is homed on every shard")
        };
        let moves = [
            Move::Join,
            Move::Switch,
            Move::SwitchSameHome,
            Move::Exit,
            Move::JoinLocal,
        ];
        for mv in moves {
            for seed in 1..=40u64 {
                for end_after in 0..=12 {
                    let context = format!("{mv:?}, seed {seed}, ending after {end_after} steps");
                    let mut sim = Sim::new(SHARDS, 0, seed);
                    // The session under test lives on shard 0; its first channel is homed on 1.
                    let from = on("x", 1);
                    let to = match mv {
                        Move::Join | Move::Exit => on("x", 1),
                        Move::Switch => on("x", 2),
                        Move::SwitchSameHome => on("y", 1),
                        Move::JoinLocal => on("x", 0),
                    };
                    let (from, to) = (from.as_str(), to.as_str());
                    // Bystanders on every shard in both channels, talking throughout.
                    let mut bystanders = Vec::new();
                    for s in 0..SHARDS {
                        for ch in [from, to] {
                            let key = sim.connect(s);
                            assert!(sim.join(s, key, ch, true));
                            bystanders.push((s, key));
                        }
                    }
                    sim.drain_checked(&context);
                    let me = sim.connect(0);
                    if !matches!(mv, Move::Join | Move::JoinLocal) {
                        assert!(sim.join(0, me, from, false));
                        sim.drain_checked(&context);
                        assert_eq!(sim.hubs[0].channel_of(me), Some(&name(from)));
                    }
                    match mv {
                        Move::Exit => sim.with_hub(0, |h, r| {
                            assert_eq!(h.exit(me, r), Some(name(from)));
                        }),
                        _ => assert!(sim.join(0, me, to, false)),
                    }
                    sim.check(&context);
                    let mut steps = 0;
                    loop {
                        if steps == end_after {
                            sim.end(0, me);
                            sim.check(&context);
                        }
                        // Someone talks now and then while the rings move.
                        if sim.rand(3) == 0 {
                            let (s, key) = bystanders[sim.rand(bystanders.len())];
                            sim.with_hub(s, |h, r| {
                                assert!(h.post(key, format!("u{key} says, \"hi\"").into(), r));
                            });
                        }
                        if !sim.step_checked(&context) && steps >= end_after {
                            break;
                        }
                        steps += 1;
                    }
                    sim.check_settled(&context);
                    for ch in [from, to] {
                        let home = &sim.hubs[shard_proto::home_of(&name(ch), SHARDS).index()];
                        let ch = &home.homed[home.by_key[name(ch).key()] as usize];
                        assert!(!ch.contains(sid(0, me)), "{context}: still on #{}", ch.name);
                    }
                    // The channels still answer: a fresh session joins each.
                    for ch in [from, to] {
                        let fresh = sim.connect(1);
                        assert!(sim.join(1, fresh, ch, false));
                        sim.drain_checked(&context);
                        assert!(
                            matches!(
                                sim.rec[1].replies[&fresh].last(),
                                Some(Reply::Joined {
                                    outcome: JoinOutcome::Joined(_),
                                    ..
                                })
                            ),
                            "{context}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn lines_lost_on_the_way_are_told_to_every_local_member() {
        let mut sim = Sim::new(2, 0, 9);
        let ch = ["x0", "x1", "x2", "x3"]
            .into_iter()
            .find(|n| shard_proto::home_of(&name(n), 2).index() == 0)
            .unwrap();
        let (a, b) = (sim.connect(1), sim.connect(1));
        assert!(sim.join(1, a, ch, true));
        assert!(sim.join(1, b, ch, true));
        sim.drain();
        let id = sim.hubs[0].homed[0].id;
        let lost = ShardMsg::ToMember(ToMember::Lost {
            channel: id,
            count: 3,
        });
        sim.with_hub(1, |h, r| h.handle(lost, r));
        for key in [a, b] {
            assert_eq!(
                sim.rec[1].lines[&key].last().map(|l| &**l),
                Some("[3 messages dropped]")
            );
        }
    }

    /// Regression: deliveries dropped on their way to a member's shard are told there once the
    /// queue drains, which can be after the member moved home and left that shard's list; the
    /// member hears of them at the home instead, after the lines it got before the gap.
    #[test]
    fn a_member_moving_home_hears_of_lines_dropped_on_their_way_to_its_old_shard() {
        let mut sim = Sim::new(2, 0, 21);
        let home = shard_proto::home_of(&name("gap"), 2).index();
        let away = 1 - home;
        let owner = sim.connect(home);
        assert!(sim.join(home, owner, "gap", true));
        let mover = sim.connect(away);
        assert!(sim.join(away, mover, "gap", false));
        sim.drain();
        let channel = sim.hubs[home].homed[0].id;
        sim.rec[home]
            .on_the_way
            .insert((ShardId(away as u16), channel), 3);
        assert!(sim.depart(away, mover));
        sim.drain_checked("moving");
        let (_, moved) = sim.moves.pop().expect("the member moved");
        let seen = &sim.rec[moved.0].lines[&moved.1];
        assert_eq!(
            seen.last().map(|l| &**l),
            Some("[3 messages dropped]"),
            "{seen:?}"
        );
    }

    /// Regression: an answer for a session on a shard that does not exist (an id no shard made,
    /// from a peer's bug) went to `Outputs::to_shard`, and the shard indexed its rings with it
    /// and panicked. Found by the `hub_messages` harness (`tests/hub_sim`); now it is dropped.
    #[test]
    fn an_answer_for_a_session_on_a_shard_that_does_not_exist_is_dropped() {
        let mut sim = Sim::new(2, 0, 1);
        let stranger = sid(7, 1);
        let ch = ["x0", "x1", "x2", "x3"]
            .into_iter()
            .find(|n| shard_proto::home_of(&name(n), 2).index() == 0)
            .unwrap();
        let msgs = [
            ToHome::List { session: stranger },
            ToHome::Join {
                channel: name(ch),
                session: stranger,
                user: "mallory".into(),
                create: true,
            },
        ];
        for msg in msgs {
            sim.with_hub(0, |h, r| h.handle(ShardMsg::ToHome(msg), r));
        }
        assert!(sim.all_rings().next().is_none());
        assert_eq!(sim.hubs[0].homed_members(), 0);
    }

    /// Regression: a join with `create` that reached a shard other than its channel's home (a
    /// peer's bug) made that shard open the channel, which `Hub::open` asserts never happens
    /// (a second channel of the same name, on the wrong shard). Found by the `hub_messages`
    /// harness (`tests/hub_sim`); now the join is refused as if the channel did not exist.
    #[test]
    fn a_join_that_reaches_a_shard_other_than_the_home_creates_nothing() {
        let mut sim = Sim::new(2, 0, 1);
        let ch = ["x0", "x1", "x2", "x3"]
            .into_iter()
            .find(|n| shard_proto::home_of(&name(n), 2).index() == 1)
            .unwrap();
        let key = sim.connect(0);
        assert!(sim.join(0, key, ch, true));
        // The join, on its way to shard 1, reaches shard 0 instead.
        let join = sim.rings[0][1].pop_front().unwrap();
        sim.with_hub(0, |h, r| h.handle(join, r));
        assert_eq!(sim.hubs[0].homed_channels(), 0);
        assert!(matches!(
            sim.rec[0].replies[&key][..],
            [Reply::Joined {
                outcome: JoinOutcome::NoSuchChannel,
                ..
            }]
        ));
    }

    #[test]
    fn a_channel_named_in_a_message_is_found_in_any_case_without_its_name_being_rebuilt() {
        let mut hub = Hub::new(ShardId(0), 1, 0, 64);
        let lobby = hub.open(name("lobby")).index;
        let aerger = hub.open(name("Ärger")).index;
        for (asked, found) in [
            ("lobby", Some(lobby)),
            ("LoBBy", Some(lobby)),
            ("ärger", Some(aerger)),
            ("ÄRGER", Some(aerger)),
            ("nope", None),
            ("", None),
        ] {
            assert_eq!(hub.index_of(asked), found, "{asked:?}");
        }
    }

    #[test]
    fn who_and_list_answer() {
        let mut sim = Sim::new(2, 0, 5);
        let a = sim.connect(0);
        let b = sim.connect(1);
        sim.with_hub(0, |h, r| {
            assert!(h.join(a, name("room"), "alice".into(), true, r))
        });
        sim.with_hub(1, |h, r| {
            assert!(h.join(b, name("ROOM"), "bob".into(), false, r))
        });
        sim.drain();
        sim.with_hub(1, |h, r| assert!(h.who(b, r)));
        let asked = {
            let mut n = 0;
            sim.with_hub(0, |h, r| n = h.list(a, r));
            n
        };
        sim.drain();
        let who: Vec<&Reply> = sim.rec[1].replies[&b].iter().collect();
        match who.last().unwrap() {
            Reply::Who(Some(names)) => {
                let names: Vec<&str> = names.iter().map(|n| &**n).collect();
                assert_eq!(names, ["alice", "bob"]);
            }
            other => panic!("unexpected {other:?}"),
        }
        let lists: Vec<&Reply> = sim.rec[0].replies[&a]
            .iter()
            .filter(|r| matches!(r, Reply::List(_)))
            .collect();
        assert_eq!(lists.len(), asked);
        let total: u32 = lists
            .iter()
            .flat_map(|r| match r {
                Reply::List(entries) => entries.iter().map(|e| e.members).collect::<Vec<_>>(),
                _ => vec![],
            })
            .sum();
        assert_eq!(total, 2);
    }

    /// Six users on three shards tell each other things, one at a time each (a sender waits for
    /// the answer), while they move between shards, with the rings delivering in a random order:
    /// every tell is answered, every one reaches its addressee exactly once, and one sender's
    /// tells to one addressee arrive in the order sent.
    /// The moves the sim has completed: each user's new place, its arrival told to the
    /// directory; returns which users moved.
    fn arrivals(sim: &mut Sim, at: &mut [(usize, u64)], names: &[String]) -> Vec<usize> {
        let mut moved = Vec::new();
        for (from, to) in std::mem::take(&mut sim.moves) {
            let i = at.iter().position(|&a| a == from).expect("a user moved");
            at[i] = to;
            sim.with_hub(to.0, |h, r| {
                h.user_arrived(
                    &names[i].as_str().into(),
                    sid(from.0, from.1),
                    to.1,
                    None,
                    r,
                )
            });
            moved.push(i);
        }
        moved
    }

    /// A user whose session has more tell answers than `answered` says waits no more.
    fn note_answers(sim: &Sim, at: &[(usize, u64)], answered: &mut [usize], waiting: &mut [bool]) {
        for (i, &(s, key)) in at.iter().enumerate() {
            let told = sim.rec[s].replies.get(&key).map_or(0, |r| {
                r.iter().filter(|r| matches!(r, Reply::Told { .. })).count()
            });
            if told > answered[i] {
                answered[i] = told;
                waiting[i] = false;
            }
        }
    }

    #[test]
    fn every_tell_is_answered_and_arrives_once_in_order_while_addressees_move() {
        const USERS: usize = 6;
        for seed in 1..=80 {
            let shards = 3;
            let mut sim = Sim::new(shards, 0, seed);
            let names: Vec<String> = (0..USERS).map(|i| format!("user{i}")).collect();
            let mut at: Vec<(usize, u64)> = Vec::new();
            for (i, name) in names.iter().enumerate() {
                let s = i % shards;
                let key = sim.connect(s);
                sim.with_hub(s, |h, r| h.user_online(&name.as_str().into(), key, r));
                at.push((s, key));
            }
            sim.drain();
            // Per user: tells sent, answers seen (on its current key), and whether one waits.
            let mut sent = [0usize; USERS];
            let mut answered = [0usize; USERS];
            let mut waiting = [false; USERS];
            // Between its departure and its arrival a session runs no command.
            let mut travelling = [false; USERS];
            let channels = ["Room0", "Room1", "Room2", "Room3"];
            let context = format!("seed {seed}");
            for op in 0..400 {
                match sim.rand(6) {
                    0 | 1 => {
                        let i = sim.rand(USERS);
                        if !waiting[i] && !travelling[i] {
                            let j = sim.rand(USERS);
                            let (s, key) = at[i];
                            let line: Line = format!("{} tells you {}", names[i], sent[i]).into();
                            let from: Arc<str> = names[i].as_str().into();
                            let to = names[j].to_uppercase();
                            sim.with_hub(s, |h, r| h.tell(key, from, &to, line, r));
                            sent[i] += 1;
                            waiting[i] = true;
                        }
                    }
                    2 => {
                        // A join: homed elsewhere, it asks the session to move.
                        let i = sim.rand(USERS);
                        let (s, key) = at[i];
                        let ch = channels[sim.rand(channels.len())];
                        if !waiting[i] && !travelling[i] && !sim.hubs[s].is_joining(key) {
                            sim.join(s, key, ch, true);
                        }
                    }
                    3 => {
                        // The move itself, between two commands (never while a tell waits).
                        let i = sim.rand(USERS);
                        let (s, key) = at[i];
                        if !waiting[i]
                            && !travelling[i]
                            && sim.hubs[s].may_depart(key)
                            && !sim.rec[s].held.contains_key(&key)
                        {
                            sim.with_hub(s, |h, r| {
                                h.user_moving(&names[i], key, r);
                            });
                            assert!(sim.depart(s, key), "{context}");
                            travelling[i] = true;
                        }
                    }
                    _ => {
                        sim.step();
                    }
                }
                for i in arrivals(&mut sim, &mut at, &names) {
                    answered[i] = 0;
                    travelling[i] = false;
                }
                note_answers(&sim, &at, &mut answered, &mut waiting);
                sim.check(&format!("{context}, op {op}"));
            }
            sim.drain_checked(&format!("{context}, draining"));
            for i in arrivals(&mut sim, &mut at, &names) {
                answered[i] = 0;
            }
            sim.drain_checked(&format!("{context}, arrivals"));
            note_answers(&sim, &at, &mut answered, &mut waiting);
            // Every answer said delivered (everyone stayed online), and each addressee has each
            // sender's tells once, in order.
            for (s, rec) in sim.rec.iter().enumerate() {
                for (key, replies) in &rec.replies {
                    for r in replies {
                        if let Reply::Told { outcome, to } = r {
                            assert!(
                                matches!(outcome, shard_proto::Told::Delivered { .. }),
                                "{context}: {s}/{key}: {to} taken for offline"
                            );
                        }
                    }
                }
            }
            let mut delivered_total = 0;
            for &(s, key) in &at {
                let lines = sim.rec[s].lines.get(&key).cloned().unwrap_or_default();
                for sender in &names {
                    let got: Vec<usize> = lines
                        .iter()
                        .filter_map(|l| l.strip_prefix(&format!("{sender} tells you ")))
                        .map(|n| n.parse().unwrap())
                        .collect();
                    assert!(
                        got.windows(2).all(|w| w[0] < w[1]),
                        "{context}: {sender}'s tells to {s}/{key} out of order or twice: {got:?}"
                    );
                    delivered_total += got.len();
                }
            }
            let total: usize = sent.iter().sum();
            let still_waiting = waiting.iter().filter(|w| **w).count();
            assert_eq!(still_waiting, 0, "{context}: a tell was never answered");
            assert_eq!(delivered_total, total, "{context}: tells lost or doubled");
        }
    }

    /// Rings from different shards keep no order between them: a session's arrival may reach the
    /// directory before its login, and a second move's arrival before the first's. Whatever the
    /// order, the directory ends with the session where it is, and a tell finds it there.
    #[test]
    fn the_directory_follows_arrivals_heard_before_the_login_or_move_they_continue() {
        let shards = 3;
        let d = shard_proto::home_of_key("zed", shards).index();
        let others: Vec<usize> = (0..shards).filter(|&s| s != d).collect();
        let (x, y) = (others[0], others[1]);
        let deliver_all = |sim: &mut Sim, from: usize, to: usize| {
            while let Some(msg) = sim.rings[from][to].pop_front() {
                sim.with_hub(to, |h, r| h.handle(msg, r));
            }
        };
        for chain in [false, true] {
            let mut sim = Sim::new(shards, 0, 1);
            let kx = sim.connect(x);
            sim.with_hub(x, |h, r| h.user_online(&"Zed".into(), kx, r));
            sim.with_hub(x, |h, r| {
                h.user_moving("zed", kx, r);
            });
            let ky = sim.connect(y);
            sim.with_hub(y, |h, r| {
                h.user_arrived(&"zed".into(), sid(x, kx), ky, None, r)
            });
            let mut at = (y, ky);
            if chain {
                // On again, back to x, before the directory has heard anything.
                sim.with_hub(y, |h, r| {
                    h.user_moving("zed", ky, r);
                });
                let kx2 = sim.connect(x);
                sim.with_hub(x, |h, r| {
                    h.user_arrived(&"zed".into(), sid(y, ky), kx2, None, r)
                });
                // x's ring now holds the login, the first move and the second arrival, and is
                // heard first; y's holds the first arrival and the second move.
                at = (x, kx2);
                deliver_all(&mut sim, x, d);
                deliver_all(&mut sim, y, d);
            } else {
                // The arrival (y's ring) is heard before the login (x's).
                deliver_all(&mut sim, y, d);
                deliver_all(&mut sim, x, d);
            }
            let dir = format!("{:?}", sim.hubs[d].directory);
            assert!(dir.contains("early: {}"), "chain {chain}: {dir}");
            let amy = sim.connect(d);
            let line: Line = "amy tells you, \"found you\"".into();
            sim.with_hub(d, |h, r| h.tell(amy, "amy".into(), "ZED", line.clone(), r));
            sim.drain();
            assert_eq!(sim.rec[at.0].lines[&at.1], vec![line], "chain {chain}");
            assert!(
                matches!(
                    sim.rec[d].replies[&amy][..],
                    [Reply::Told {
                        outcome: shard_proto::Told::Delivered { .. },
                        ..
                    }]
                ),
                "chain {chain}: {:?}",
                sim.rec[d].replies
            );
        }
    }

    /// A private message that lands in the old mailbox of a session on its way to another shard
    /// is delivered (the line follows the session) and leaves nothing behind for the session's
    /// key there; one to a session here is remembered for `/reply` until the session logs off.
    #[test]
    fn a_tell_to_a_session_in_transit_is_delivered_and_kept_for_nobody() {
        let mut hub = Hub::new(ShardId(0), 1, 0, 64);
        let mut rec = Recorder::default();
        let (amy, zed) = (1, 2);
        rec.live.extend([amy, zed]);
        hub.user_online(&"amy".into(), amy, &mut rec);
        hub.user_online(&"zed".into(), zed, &mut rec);
        rec.in_transit.insert(zed);
        hub.tell(
            amy,
            "amy".into(),
            "zed",
            "amy tells you, \"1\"".into(),
            &mut rec,
        );
        assert!(matches!(
            rec.replies[&amy][..],
            [Reply::Told {
                outcome: shard_proto::Told::Delivered { away: None },
                ..
            }]
        ));
        assert_eq!(hub.last_teller(zed), None);
        rec.in_transit.clear();
        hub.tell(
            amy,
            "amy".into(),
            "zed",
            "amy tells you, \"2\"".into(),
            &mut rec,
        );
        assert_eq!(hub.last_teller(zed).as_deref(), Some("amy"));
        assert_eq!(rec.lines[&zed].len(), 2);
        hub.user_offline("zed", zed, &mut rec);
        assert_eq!(hub.last_teller(zed), None);
        assert!(format!("{:?}", hub.directory).contains("personal: {}"));
    }

    /// The replies of one kind a session has been given.
    fn replies_of(sim: &Sim, s: usize, key: u64, kind: fn(&Reply) -> bool) -> Vec<Reply> {
        sim.rec[s]
            .replies
            .get(&key)
            .map(|r| r.iter().filter(|r| kind(r)).cloned().collect())
            .unwrap_or_default()
    }

    #[test]
    fn the_census_names_everyone_in_name_order_and_a_page_needs_only_the_first_of_each_shard() {
        let mut sim = Sim::new(3, 0, 7);
        let names = [
            "zed", "Amy", "bob", "Carl", "dora", "Eve", "fay", "Gus", "hal", "Ida",
        ];
        let mut keys = Vec::new();
        for (i, name) in names.iter().enumerate() {
            let s = i % 3;
            let key = sim.connect(s);
            let name: Arc<str> = (*name).into();
            sim.with_hub(s, |h, r| h.user_online(&name, key, r));
            keys.push((s, key));
        }
        sim.drain();
        let (s, asker) = keys[0];
        let mut expected = 0;
        sim.with_hub(s, |h, r| expected = h.census(asker, 3, None, r));
        sim.drain();
        let answers = replies_of(&sim, s, asker, |r| matches!(r, Reply::Census { .. }));
        assert_eq!((answers.len(), expected), (3, 3));
        let mut total = 0;
        let mut first: Vec<Arc<str>> = Vec::new();
        for answer in answers {
            let Reply::Census { total: t, users } = answer else {
                unreachable!()
            };
            assert!(users.len() <= 3, "a shard sent more than the page needs");
            total += t;
            first.extend(users.iter().map(|u| u.name.clone()));
        }
        first.sort_by(|a, b| by_name(a, b));
        assert_eq!(total, 10);
        assert_eq!(&first[..3], ["Amy", "bob", "Carl"].map(Arc::<str>::from));
        // One name, in any case, from its directory shard alone, as the account spells it.
        let mut expected = 0;
        sim.with_hub(s, |h, r| expected = h.census(asker, 1, Some("GUS"), r));
        sim.drain();
        let answers = replies_of(&sim, s, asker, |r| matches!(r, Reply::Census { .. }));
        assert_eq!(expected, 1);
        match answers.last() {
            Some(Reply::Census { total: 1, users }) => {
                assert_eq!(&*users[0].name, "Gus");
                assert_eq!(users[0].sessions, vec![sid(keys[7].0, keys[7].1)]);
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn facts_come_from_each_sessions_own_shard() {
        let mut sim = Sim::new(2, 0, 3);
        let a = sim.connect(0);
        let b = sim.connect(1);
        sim.with_hub(1, |h, _| {
            h.set_away(b, Some("fishing".into()));
        });
        sim.with_hub(1, |h, r| {
            assert!(h.join(b, name("Lobby"), "bob".into(), true, r))
        });
        sim.drain();
        let mut expected = 0;
        let gone = sid(1, 999);
        sim.with_hub(0, |h, r| {
            expected = h.facts(a, &[sid(0, a), sid(1, b), gone], r)
        });
        sim.drain();
        assert_eq!(expected, 2);
        let mut facts: Vec<shard_proto::SessionFacts> =
            replies_of(&sim, 0, a, |r| matches!(r, Reply::Facts(_)))
                .into_iter()
                .flat_map(|r| match r {
                    Reply::Facts(f) => *f,
                    _ => unreachable!(),
                })
                .collect();
        facts.sort_by_key(|f| f.session);
        assert_eq!(
            facts.len(),
            2,
            "the session that has gone is left out: {facts:?}"
        );
        assert_eq!(
            (facts[0].away.clone(), facts[0].channel.clone()),
            (None, None)
        );
        assert_eq!(facts[1].away.as_deref(), Some("fishing"));
        assert_eq!(facts[1].channel.as_ref().map(|c| c.as_str()), Some("Lobby"));
        assert_eq!((facts[1].since, facts[1].last_input), (1, 2));
    }

    #[test]
    fn an_ignored_speaker_reaches_nobody_who_ignores_them_and_their_tells_look_delivered() {
        let mut sim = Sim::new(2, 0, 5);
        let a = sim.connect(0);
        let b = sim.connect(1);
        let c = sim.connect(1);
        for (s, key) in [(0, a), (1, b), (1, c)] {
            let user: Arc<str> = format!("u{key}").into();
            sim.with_hub(s, |h, r| h.user_online(&user, key, r));
            sim.join(s, key, "Lobby", true);
            sim.drain();
        }
        // a said something before b ignored them: kept as history for whoever joins.
        let said: Line = format!("u{a} says, \"early\"").into();
        sim.with_hub(0, |h, r| assert!(h.post(a, said, r)));
        sim.drain();
        let ignored: Arc<str> = format!("U{a}").into();
        sim.with_hub(1, |h, _| {
            h.set_ignoring(b, vec![ignored.clone()].into_boxed_slice())
        });
        assert!(sim.hubs[1].ignores(b, &format!("u{a}")));
        let before = |sim: &Sim, key: u64| sim.rec[1].lines.get(&key).map_or(0, Vec::len);
        let (b0, c0) = (before(&sim, b), before(&sim, c));
        let line: Line = format!("u{a} says, \"hi\"").into();
        sim.with_hub(0, |h, r| assert!(h.post(a, line.clone(), r)));
        let other: Line = format!("u{c} says, \"yo\"").into();
        sim.with_hub(1, |h, r| assert!(h.post(c, other.clone(), r)));
        sim.drain();
        assert_eq!(sim.rec[1].lines[&b][b0..], *std::slice::from_ref(&other));
        let mut heard = sim.rec[1].lines[&c][c0..].to_vec();
        heard.sort();
        assert_eq!(heard, [line.clone(), other]);
        // A private message from a: answered as delivered, not delivered.
        let told: Line = format!("u{a} tells you, \"psst\"").into();
        let (from, to): (Arc<str>, String) = (format!("u{a}").into(), format!("u{b}"));
        sim.with_hub(0, |h, r| h.tell(a, from, &to, told, r));
        sim.drain();
        assert!(matches!(
            replies_of(&sim, 0, a, |r| matches!(r, Reply::Told { .. }))[..],
            [Reply::Told {
                outcome: shard_proto::Told::Delivered { .. },
                ..
            }]
        ));
        assert!(!sim.rec[1].lines[&b].iter().any(|l| l.contains("psst")));
        assert_eq!(sim.hubs[1].last_teller(b), None);
        // b leaves and joins again: a's line is not in b's history either.
        sim.with_hub(1, |h, r| {
            h.exit(b, r);
        });
        sim.join(1, b, "Lobby", false);
        sim.drain();
        assert!(!sim.rec[1].lines[&b]
            .iter()
            .any(|l| l.starts_with("[history] u") && l.contains("early")));
        // The list travels with a session that moves, and is gone with one that logs off.
        let mut rec = Recorder::default();
        let personal = sim.hubs[1].user_moving(&to, b, &mut rec).unwrap();
        assert_eq!(&personal.ignoring[..], [ignored]);
        assert!(!sim.hubs[1].ignores(b, &format!("u{a}")));
        let name: Arc<str> = to.as_str().into();
        sim.hubs[0].user_arrived(&name, sid(1, b), 77, Some(personal), &mut rec);
        assert!(sim.hubs[0].ignores(77, &format!("u{a}")));
        sim.hubs[0].user_offline(&to, 77, &mut rec);
        assert!(!sim.hubs[0].ignores(77, &format!("u{a}")));
        assert!(!sim.hubs[0]
            .directory
            .anyone_ignores(&format!("u{a} says, \"hi\"")));
        let dir = format!("{:?}", sim.hubs[0].directory);
        assert!(dir.contains("ignoring: {}, ignored: {}"), "{dir}");
    }

    /// What session `key` of shard `s` was last answered about its channel's settings.
    fn last_managed(sim: &Sim, s: usize, key: u64) -> Managed {
        match replies_of(sim, s, key, |r| matches!(r, Reply::Managed(_))).pop() {
            Some(Reply::Managed(m)) => *m,
            other => panic!("no answer: {other:?}"),
        }
    }

    #[test]
    fn the_creator_owns_a_channel_and_decides_who_sets_its_topic_which_joiners_are_shown() {
        let mut sim = Sim::new(2, 0, 11);
        let (owner, other) = (sim.connect(0), sim.connect(1));
        assert!(sim.join(0, owner, "Den", true));
        sim.drain();
        assert!(sim.join(1, other, "den", false));
        sim.drain();
        let manage = |sim: &mut Sim, s: usize, key: u64, change: Change| {
            let by: Arc<str> = format!("U{key}").into();
            sim.with_hub(s, |h, r| assert!(h.manage(key, by, false, change, r)));
            sim.drain();
            last_managed(sim, s, key)
        };
        let home = shard_proto::home_of(&name("den"), 2).index();
        let owner_name: Arc<str> = format!("u{owner}").into();
        // Not the owner: refused, and told whose it is.
        let topic = Change::Topic(Some("cake".into()));
        assert_eq!(
            manage(&mut sim, 1, other, topic.clone()),
            Managed::NotAllowed {
                owner: Some(owner_name.clone())
            }
        );
        assert!(sim.rec[home].saved.is_empty());
        // The owner (any case): done, stored, and every member told in the channel's order.
        assert_eq!(manage(&mut sim, 0, owner, topic.clone()), Managed::Done);
        let said: Line = format!("U{owner} set the topic of #Den: cake").into();
        for (s, key) in [(0, owner), (1, other)] {
            assert_eq!(sim.rec[s].lines[&key].last(), Some(&said));
        }
        assert_eq!(sim.log_of("den").last(), Some(&said));
        let (key, saved) = sim.rec[home].saved.last().unwrap().clone();
        assert_eq!((&*key, saved.topic.as_deref()), ("den", Some("cake")));
        // Opened to anyone: the other member may now, and may not hand the channel over.
        assert_eq!(
            manage(&mut sim, 0, owner, Change::TopicOpen(true)),
            Managed::Done
        );
        assert_eq!(
            manage(&mut sim, 1, other, Change::Topic(Some("pie".into()))),
            Managed::Done
        );
        assert!(matches!(
            manage(&mut sim, 1, other, Change::Owner("x".into())),
            Managed::NotAllowed { .. }
        ));
        assert_eq!(
            manage(&mut sim, 1, other, Change::Show),
            Managed::Settings(Box::new(SettingsShown {
                owner: Some(owner_name),
                topic: Some("pie".into()),
                topic_open: true,
                invite_only: false,
                capacity: 0,
                bans: vec![],
            }))
        );
        // Whoever joins is given the topic with the answer; /list shows it.
        let third = sim.connect(1);
        assert!(sim.join(1, third, "DEN", false));
        sim.drain();
        assert!(matches!(
            replies_of(&sim, 1, third, |r| matches!(r, Reply::Joined { .. }))[..],
            [Reply::Joined { ref topic, .. }] if topic.as_deref() == Some("pie")
        ));
        sim.list(1, third);
        sim.drain();
        let topics: Vec<Option<Arc<str>>> =
            replies_of(&sim, 1, third, |r| matches!(r, Reply::List(_)))
                .into_iter()
                .flat_map(|r| match r {
                    Reply::List(entries) => entries.into_iter().map(|e| e.topic).collect(),
                    _ => vec![],
                })
                .collect();
        assert_eq!(topics, [Some("pie".into())]);
        // The owner hands it over; the old owner may no longer.
        assert_eq!(
            manage(&mut sim, 0, owner, Change::Owner("Bea".into())),
            Managed::Done
        );
        assert!(matches!(
            manage(&mut sim, 0, owner, Change::TopicOpen(false)),
            Managed::NotAllowed { owner: Some(ref o) } if &**o == "Bea"
        ));
        // Someone on no channel: nothing sent.
        let stranger = sim.connect(0);
        let by: Arc<str> = "s".into();
        sim.with_hub(0, |h, r| {
            assert!(!h.manage(stranger, by, true, Change::Show, r))
        });
    }

    #[test]
    fn owners_kick_ban_mute_invite_and_limit_and_members_are_told_in_the_channels_order() {
        let mut sim = Sim::new(2, 0, 13);
        let (owner, bob, carol) = (sim.connect(0), sim.connect(1), sim.connect(1));
        assert!(sim.join(0, owner, "Den", true));
        sim.drain();
        for key in [bob, carol] {
            assert!(sim.join(1, key, "den", false));
            sim.drain();
        }
        let manage = |sim: &mut Sim, s: usize, key: u64, change: Change| {
            let by: Arc<str> = format!("u{key}").into();
            sim.with_hub(s, |h, r| assert!(h.manage(key, by, false, change, r)));
            sim.drain();
            last_managed(sim, s, key)
        };
        let joined = |sim: &mut Sim, s: usize, key: u64| {
            assert!(sim.join(s, key, "den", false));
            sim.drain();
            match replies_of(sim, s, key, |r| matches!(r, Reply::Joined { .. })).pop() {
                Some(Reply::Joined { outcome, .. }) => outcome,
                other => panic!("{other:?}"),
            }
        };
        let (u_bob, u_carol): (Arc<str>, Arc<str>) =
            (format!("u{bob}").into(), format!("u{carol}").into());
        let kick = Change::Kick {
            name: u_bob.to_uppercase().into(),
            reason: Some("spam".into()),
        };
        assert!(matches!(
            manage(&mut sim, 1, carol, kick.clone()),
            Managed::NotAllowed { .. }
        ));
        assert_eq!(manage(&mut sim, 0, owner, kick), Managed::Done);
        let said: Line = format!("u{owner} kicked {u_bob} from #Den: spam").into();
        // Told to all, the one kicked included, then off the channel on its own shard too.
        for (s, key) in [(0, owner), (1, bob), (1, carol)] {
            assert_eq!(sim.rec[s].lines[&key].last(), Some(&said), "{key}");
        }
        assert_eq!(sim.hubs[1].channel_of(bob), None);
        assert!(!sim
            .hubs
            .iter()
            .any(|h| h.has_member(&name("den"), sid(1, bob))));
        assert!(matches!(joined(&mut sim, 1, bob), JoinOutcome::Joined(_)));

        // A ban takes them off and keeps them off; it is stored; an unban lets them back.
        assert_eq!(
            manage(&mut sim, 0, owner, Change::Ban(u_bob.clone())),
            Managed::Done
        );
        assert_eq!(sim.hubs[1].channel_of(bob), None);
        assert_eq!(joined(&mut sim, 1, bob), JoinOutcome::Banned);
        let home = shard_proto::home_of(&name("den"), 2).index();
        assert_eq!(
            sim.rec[home].saved.last().unwrap().1.bans,
            *std::slice::from_ref(&u_bob)
        );
        assert_eq!(
            manage(&mut sim, 0, owner, Change::Ban(u_bob.clone())),
            Managed::Said(format!("{u_bob} is already banned from #Den.").into())
        );
        assert_eq!(
            manage(
                &mut sim,
                0,
                owner,
                Change::Unban(u_bob.to_uppercase().into())
            ),
            Managed::Said(format!("{} may join #Den again.", u_bob.to_uppercase()).into())
        );
        assert!(matches!(joined(&mut sim, 1, bob), JoinOutcome::Joined(_)));

        // A mute refuses the member's lines (telling them) until it ends.
        let mute = Change::Mute {
            name: u_carol.clone(),
            minutes: 5,
        };
        assert_eq!(manage(&mut sim, 0, owner, mute), Managed::Done);
        let log_len = sim.log_of("den").len();
        let hushed: Line = format!("{u_carol} says, \"hello?\"").into();
        sim.with_hub(1, |h, r| assert!(h.post(carol, hushed.clone(), r)));
        sim.drain();
        assert_eq!(sim.log_of("den").len(), log_len, "a muted line was ordered");
        let notice: Line = "You are muted on #Den for another 5 minutes; nobody heard that.".into();
        assert_eq!(sim.rec[1].lines[&carol].last(), Some(&notice));
        for rec in &mut sim.rec {
            rec.clock += 5 * 60;
        }
        sim.with_hub(1, |h, r| assert!(h.post(carol, hushed.clone(), r)));
        sim.drain();
        assert_eq!(sim.log_of("den").last(), Some(&hushed));
        assert_eq!(
            manage(&mut sim, 0, owner, Change::Unmute(u_carol.clone())),
            Managed::Said(format!("{u_carol} is not muted on #Den.").into())
        );
        assert_eq!(
            manage(
                &mut sim,
                0,
                owner,
                Change::Kick {
                    name: format!("u{owner}").into(),
                    reason: None
                }
            ),
            Managed::Said("You cannot do that to yourself.".into())
        );

        // Invite-only: only the invited join, once each.
        assert_eq!(
            manage(&mut sim, 0, owner, Change::InviteOnly(true)),
            Managed::Done
        );
        let dave = sim.connect(1);
        assert_eq!(joined(&mut sim, 1, dave), JoinOutcome::InviteOnly);
        let u_dave: Arc<str> = format!("u{dave}").into();
        assert_eq!(
            manage(&mut sim, 0, owner, Change::Invite(u_dave)),
            Managed::Done
        );
        assert!(matches!(joined(&mut sim, 1, dave), JoinOutcome::Joined(_)));
        sim.with_hub(1, |h, r| {
            h.exit(dave, r);
        });
        sim.drain();
        assert_eq!(joined(&mut sim, 1, dave), JoinOutcome::InviteOnly);
        assert_eq!(
            manage(&mut sim, 0, owner, Change::InviteOnly(false)),
            Managed::Done
        );

        // A capacity below the members there keeps them and refuses the next.
        assert_eq!(
            manage(&mut sim, 0, owner, Change::Capacity(2)),
            Managed::Done
        );
        assert_eq!(joined(&mut sim, 1, dave), JoinOutcome::Full);
        assert!(matches!(
            manage(&mut sim, 0, owner, Change::Show),
            Managed::Settings(shown) if shown.capacity == 2 && shown.bans.is_empty()
        ));
    }
    /// A name whose directory shard of `shards` is `shard`.
    fn user_filed_on(stem: &str, shard: usize, shards: usize) -> String {
        (0..)
            .map(|n| format!("{stem}{n}"))
            .find(|u| shard_proto::home_of_user(u, shards).index() == shard)
            .unwrap()
    }

    /// The admin's answers to `/kill`, in order.
    fn kill_answers(sim: &Sim, s: usize, key: u64) -> Vec<Option<Arc<str>>> {
        replies_of(sim, s, key, |r| matches!(r, Reply::Disconnected(_)))
            .into_iter()
            .map(|r| match r {
                Reply::Disconnected(name) => name,
                _ => unreachable!(),
            })
            .collect()
    }

    #[test]
    fn an_admin_ends_every_session_of_a_user_on_any_shard_and_is_answered_once() {
        let mut sim = Sim::new(3, 0, 17);
        let bob: Arc<str> = "Bob".into();
        let admin = sim.connect(0);
        let sessions = [
            (1, sim.connect(1)),
            (2, sim.connect(2)),
            (0, sim.connect(0)),
        ];
        for &(s, key) in &sessions {
            sim.with_hub(s, |h, r| h.user_online(&bob, key, r));
        }
        sim.drain();
        let farewell: Line = "You were disconnected by root: spam.".into();
        sim.with_hub(0, |h, r| {
            h.disconnect_user(Some(admin), "BOB", farewell.clone(), r)
        });
        sim.drain();
        for (s, key) in sessions {
            assert_eq!(
                sim.rec[s].disconnected.get(&key),
                Some(&farewell),
                "{s}/{key}"
            );
        }
        assert_eq!(kill_answers(&sim, 0, admin), [Some(bob)]);
        assert!(!sim.rec[0].disconnected.contains_key(&admin));
        // Nobody of that name: answered so, and nothing else happens.
        sim.with_hub(0, |h, r| {
            h.disconnect_user(Some(admin), "nobody", farewell, r)
        });
        sim.drain();
        assert_eq!(kill_answers(&sim, 0, admin)[1], None);
        assert_eq!(
            sim.rec.iter().map(|r| r.disconnected.len()).sum::<usize>(),
            3
        );
    }

    /// The order reaches the shard a session is leaving after it left: sent back to the
    /// directory, it follows the session to where it arrives, whether the directory has heard of
    /// the arrival by then or not.
    #[test]
    fn an_order_to_end_a_session_that_is_moving_follows_it_to_its_new_shard() {
        for arrived_first in [false, true] {
            // Directory on 2, the session leaves 1 for 0, the admin is on 0.
            let mut sim = Sim::new(3, 0, 23);
            let name: Arc<str> = user_filed_on("cy", 2, 3).into();
            let admin = sim.connect(0);
            let old = sim.connect(1);
            sim.with_hub(1, |h, r| h.user_online(&name, old, r));
            sim.drain();
            let farewell: Line = "You were disconnected by root.".into();
            sim.with_hub(0, |h, r| {
                h.disconnect_user(Some(admin), &name, farewell.clone(), r)
            });
            sim.pass(0, 2);
            assert_eq!(
                sim.rings[2][1].len(),
                1,
                "the order is on its way to shard 1"
            );
            // Meanwhile the session leaves shard 1 (what is left of it there is a stub).
            sim.with_hub(1, |h, r| {
                h.user_moving(&name, old, r);
            });
            sim.rec[1].in_transit.insert(old);
            let new = sim.connect(0);
            let from = sid(1, old);
            if arrived_first {
                // The directory hears of the move and the arrival, and the stub is gone, before
                // the order reaches shard 1: there it finds nobody.
                sim.pass(1, 2);
                sim.with_hub(0, |h, r| h.user_arrived(&name, from, new, None, r));
                sim.pass(0, 2);
                sim.rec[1].live.remove(&old);
                sim.rec[1].in_transit.remove(&old);
                sim.pass(2, 1);
            } else {
                // The order finds the stub, goes back, and waits for the arrival.
                sim.pass(2, 1);
                sim.pass(1, 2);
                assert!(sim.rings[2][0].iter().all(|m| !matches!(
                    m,
                    ShardMsg::ToUser(shard_proto::ToUser::Disconnect { .. })
                )));
                sim.with_hub(0, |h, r| h.user_arrived(&name, from, new, None, r));
            }
            sim.drain();
            assert_eq!(
                sim.rec[0].disconnected.get(&new),
                Some(&farewell),
                "arrived first: {arrived_first}"
            );
            assert!(sim.rec[1].disconnected.is_empty());
            assert_eq!(kill_answers(&sim, 0, admin), [Some(name.clone())]);
        }
    }

    #[test]
    fn a_wall_is_one_message_per_shard_and_reaches_every_session_once() {
        let mut sim = Sim::new(3, 0, 29);
        let admin = sim.connect(0);
        let (a, b) = (sim.connect(1), sim.connect(2));
        assert!(sim.join(1, a, "den", true));
        sim.drain();
        let line: Line = "[wall] root: hello".into();
        sim.with_hub(0, |h, r| h.wall(line.clone(), r));
        assert_eq!((sim.rings[0][1].len(), sim.rings[0][2].len()), (1, 1));
        sim.drain();
        for (s, key) in [(0, admin), (1, a), (2, b)] {
            let seen = sim.rec[s].lines.get(&key).cloned().unwrap_or_default();
            assert_eq!(seen.iter().filter(|l| **l == line).count(), 1, "{s}/{key}");
        }
    }

    #[test]
    fn a_deleted_channel_tells_its_members_forgets_them_and_its_name_and_stale_ids_lead_nowhere() {
        let mut sim = Sim::new(2, 0, 31);
        let den = (0..)
            .map(|n| format!("den{n}"))
            .find(|c| shard_proto::home_of(&name(c), 2).index() == 0)
            .unwrap();
        let (a, b, c) = (sim.connect(0), sim.connect(1), sim.connect(1));
        assert!(sim.join(0, a, &den, true));
        sim.drain();
        for (s, key) in [(1, b), (1, c)] {
            assert!(sim.join(s, key, &den, false));
        }
        sim.drain_checked("joined");
        sim.with_hub(0, |h, r| assert!(h.post(a, "ua says hi".into(), r)));
        sim.drain();
        let old = sim.hubs[0].session_channel[&a].0;
        // `c` is on its way home when the channel goes: the deletion reaches it through the
        // lines its old shard held.
        assert!(sim.depart(1, c));
        let admin = sim.connect(1);
        sim.with_hub(1, |h, r| {
            h.delete_channel(admin, name(&den), "root".into(), r)
        });
        sim.drain_checked("deleted");
        sim.check_settled("deleted");
        let said: Line = format!("#{den} was deleted by root.").into();
        let moved = sim
            .moves
            .iter()
            .find(|(from, _)| *from == (1, c))
            .unwrap()
            .1;
        for (s, key) in [(0, a), (1, b), moved] {
            assert_eq!(sim.rec[s].lines[&key].last(), Some(&said), "{s}/{key}");
            assert_eq!(sim.hubs[s].channel_of(key), None, "{s}/{key}");
        }
        assert_eq!(sim.log_of(&den).last(), Some(&said));
        // A store still waiting would land on a channel made again under the name.
        assert_eq!(sim.rec[0].forgotten, [name(&den).key().clone()]);
        assert!(matches!(
            replies_of(&sim, 1, admin, |r| matches!(r, Reply::Deleted(_)))[..],
            [Reply::Deleted(Some(ref n))] if n.key() == name(&den).key()
        ));
        assert_eq!(sim.hubs[0].homed_channels(), 0);
        assert!(sim.hubs.iter().all(|h| h.local.is_empty()));
        // Its name leads nowhere; its id leads to nobody.
        assert!(sim.join(1, b, &den, false));
        sim.drain();
        assert!(matches!(
            replies_of(&sim, 1, b, |r| matches!(r, Reply::Joined { .. })).last(),
            Some(Reply::Joined {
                outcome: JoinOutcome::NoSuchChannel,
                ..
            })
        ));
        sim.list(1, b);
        sim.drain();
        assert!(replies_of(&sim, 1, b, |r| matches!(r, Reply::List(_)))
            .iter()
            .all(|r| matches!(r, Reply::List(e) if e.is_empty())));
        let stale = [
            ToHome::Post {
                channel: old,
                session: sid(0, a),
                line: "ua says late".into(),
            },
            ToHome::Who {
                channel: old,
                session: sid(0, a),
            },
            ToHome::Leave {
                channel: old,
                session: sid(0, a),
            },
        ];
        sim.asked.get_mut(&(0, a)).unwrap().whos += 1;
        for msg in stale {
            sim.with_hub(0, |h, r| h.handle(ShardMsg::ToHome(msg), r));
        }
        assert!(matches!(
            sim.rec[0].replies[&a].last(),
            Some(Reply::Who(None))
        ));
        assert_eq!(sim.rec[0].lines[&a].last(), Some(&said));
        // Made again, it is another channel, and the first one is still nobody's.
        assert!(sim.join(0, a, &den, true));
        sim.drain_checked("made again");
        let again = sim.hubs[0].session_channel[&a].0;
        assert_ne!(again, old);
        assert_eq!(sim.hubs[0].homed[old.index as usize].len(), 0);
        assert_eq!(sim.hubs[0].homed_channels(), 1);
        // Asking for a channel nobody has: answered so.
        sim.with_hub(1, |h, r| {
            h.delete_channel(admin, name("nosuch"), "root".into(), r)
        });
        sim.drain();
        assert!(matches!(
            replies_of(&sim, 1, admin, |r| matches!(r, Reply::Deleted(_))).last(),
            Some(Reply::Deleted(None))
        ));
    }

    #[test]
    fn what_an_owner_or_admin_changes_is_audited_and_what_anyone_may_do_is_not() {
        let mut sim = Sim::new(2, 0, 37);
        let (owner, other) = (sim.connect(0), sim.connect(1));
        assert!(sim.join(0, owner, "Den", true));
        sim.drain();
        assert!(sim.join(1, other, "den", false));
        sim.drain();
        let manage = |sim: &mut Sim, s: usize, key: u64, admin: bool, change: Change| {
            let by: Arc<str> = format!("u{key}").into();
            sim.with_hub(s, |h, r| assert!(h.manage(key, by, admin, change, r)));
            sim.drain();
        };
        manage(
            &mut sim,
            0,
            owner,
            false,
            Change::Topic(Some("cake".into())),
        );
        manage(&mut sim, 0, owner, false, Change::TopicOpen(true));
        manage(&mut sim, 1, other, false, Change::Topic(Some("pie".into())));
        manage(&mut sim, 1, other, true, Change::Topic(None));
        manage(&mut sim, 0, owner, false, Change::Owner("Bea".into()));
        manage(&mut sim, 0, owner, false, Change::TopicOpen(false));
        let home = shard_proto::home_of(&name("den"), 2).index();
        let audited = &sim.rec[home].audited;
        assert_eq!(
            audited,
            &[
                format!("u{owner} set the topic of #Den: cake"),
                format!("u{owner} let anyone on #Den set its topic."),
                format!("u{other} cleared the topic of #Den."),
                format!("u{owner} handed #Den over to Bea: Bea owns it now."),
            ]
        );
        assert!(sim.rec[1 - home].audited.is_empty());
    }

    /// A session that said it was moving and never arrived (its move failed) is said to have
    /// gone: the directory forgets it and answers what it held for it, instead of keeping both
    /// and leaving the senders waiting.
    #[test]
    fn a_move_that_never_arrives_leaves_no_one_waiting() {
        let mut sim = Sim::new(2, 0, 3);
        let (amy, zed) = (sim.connect(0), sim.connect(1));
        sim.with_hub(0, |h, r| h.user_online(&"amy".into(), amy, r));
        sim.with_hub(1, |h, r| h.user_online(&"zed".into(), zed, r));
        sim.drain();
        sim.with_hub(1, |h, r| {
            h.user_moving("zed", zed, r);
        });
        sim.drain();
        let line: Line = "amy tells you, \"hi\"".into();
        sim.with_hub(0, |h, r| h.tell(amy, "amy".into(), "zed", line, r));
        sim.drain();
        assert!(replies_of(&sim, 0, amy, |r| matches!(r, Reply::Told { .. })).is_empty());
        sim.with_hub(1, |h, r| h.user_gone("zed", sid(1, zed), r));
        sim.drain();
        assert!(matches!(
            replies_of(&sim, 0, amy, |r| matches!(r, Reply::Told { .. }))[..],
            [Reply::Told {
                outcome: shard_proto::Told::NotOnline,
                ..
            }]
        ));
        let d = shard_proto::home_of_user("zed", 2).index();
        let dir = format!("{:?}", sim.hubs[d].directory);
        assert!(
            !dir.contains("\"zed\"") && dir.contains("moving: {}"),
            "{dir}"
        );
    }
}
