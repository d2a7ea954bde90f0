//! A hub's part in a cluster of nodes: the channels this node is the home of take members from
//! other nodes and publish their order once for all of them; the channels homed elsewhere keep a
//! record here (a replica) that relays this node's members to the home and the home's events to
//! them.
//!
//! Within a node nothing changes: a channel's record lives on the shard `home_of` names, every
//! local member's request goes there, and deliveries go out from there to the members' shards, so
//! a replica is, to the rest of the node, a home whose order comes from elsewhere.
//!
//! Which node is the home follows [`placement::home_node`] over the live nodes the bridge reports.
//! When that changes (a node came, went, or was killed), each record takes its new role in one
//! step: a new home starts a new epoch and admits the members that other nodes re-announce; a
//! replica re-announces its members to the new home; members hear one line saying the channel
//! moved. While NATS is away, channels homed here go on for their local members, replicas refuse
//! new joins, and members are told when cross-node chat stops and starts again.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::warn;

use shard_proto::{
    Change, ChannelName, JoinOutcome, Line, ListEntry, Managed, SessionId, ShardMsg, ToMember,
};

use super::{Hub, Outputs};
use crate::channel::{Replica, Role};
use crate::cluster::placement;
use crate::cluster::wire::{
    ClusterIn, ClusterOut, Event, EventKind, HomeMsg, ListItem, NodeMsg, Outcome, ToHomeNode,
};
use crate::listener::LogLimiter;
use crate::mailbox::Reply;

/// A node's place in the cluster, as its hubs know it.
#[derive(Debug)]
pub struct NodeState {
    /// This node's name.
    me: Arc<str>,
    /// The live nodes, this one included, as the bridge last said.
    nodes: Arc<[Arc<str>]>,
    /// NATS is reachable.
    connected: bool,
    /// The epoch a channel that becomes homed here starts (the time of the last view, in ms).
    epoch: u64,
    /// The next token for a member of a replica.
    next_token: u64,
    /// Keeps the log of events that did not arrive to a line now and then.
    gap_log: LogLimiter,
}

impl Hub {
    /// Makes this hub part of node `me` of a cluster, which it believes alone until the bridge
    /// says otherwise; `epoch_ms` is now, in ms since the Unix epoch. Call before opening channels.
    pub fn join_cluster(&mut self, me: Arc<str>, epoch_ms: u64) {
        self.cluster = Some(NodeState {
            nodes: Arc::from(vec![me.clone()]),
            me,
            connected: false,
            epoch: epoch_ms,
            next_token: 1,
            gap_log: LogLimiter::new(Duration::from_secs(10)),
        });
    }

    /// This node's name, in a cluster.
    pub fn node_name(&self) -> Option<Arc<str>> {
        self.cluster.as_ref().map(|c| c.me.clone())
    }

    /// Whether this hub is part of a cluster whose other nodes cannot be reached now.
    pub fn cluster_unreachable(&self) -> bool {
        self.cluster.as_ref().is_some_and(|c| !c.connected)
    }

    /// Whether this hub is part of a cluster whose NATS server is reachable now.
    pub(super) fn cluster_connected(&self) -> bool {
        self.cluster.as_ref().is_some_and(|c| c.connected)
    }

    /// The role a new record of channel `key` takes: home unless the cluster places it elsewhere.
    pub(super) fn role_for(&self, key: &str) -> Role {
        let Some(c) = &self.cluster else {
            return Role::Home { epoch: 0, seq: 0 };
        };
        match placement::home_node(key, c.nodes.iter().map(|n| &**n)) {
            Some(node) if node != &*c.me => Role::Replica(Box::new(Replica::new(node.into()))),
            _ => Role::Home {
                epoch: c.epoch,
                seq: 0,
            },
        }
    }

    /// Handles what the bridge brings.
    pub fn from_cluster(&mut self, msg: ClusterIn, out: &mut impl Outputs) {
        if self.cluster.is_none() {
            return;
        }
        match msg {
            ClusterIn::AtHome(msg) => self.at_home_node(msg, out),
            ClusterIn::Event(event) => self.heard(event, out),
            ClusterIn::AtNode(NodeMsg::Who { session, names }) => {
                out.reply(session, Reply::Who(names))
            }
            ClusterIn::AtNode(NodeMsg::Managed {
                session,
                answer,
                asked,
            }) => self.managed(session, Box::new(answer), asked, out),
            ClusterIn::Created(name) => {
                if let Ok(name) = ChannelName::new(&name) {
                    if shard_proto::home_of(&name, self.shards) == self.id {
                        // Just made: nobody has changed it yet, and its home learns its owner
                        // from the maker's join.
                        self.open(name);
                    }
                }
            }
            ClusterIn::Deleted(said) => {
                if let Ok(name) = ChannelName::new(&said.channel) {
                    self.delete(&name, &said.by, out);
                }
            }
            ClusterIn::Nodes {
                nodes,
                connected,
                epoch,
            } => {
                if let Some(c) = &mut self.cluster {
                    c.epoch = epoch;
                }
                self.view_changed(nodes, connected, out)
            }
            ClusterIn::ListRequest { id } => {
                let channels = self
                    .homes()
                    .map(|ch| ListItem {
                        name: ch.name.as_str().to_string(),
                        members: ch.len(),
                        topic: ch.settings.topic.clone(),
                    })
                    .collect();
                out.to_cluster(ClusterOut::ListPart { id, channels });
            }
            ClusterIn::ListAnswer { session, channels } => {
                out.reply(session, Reply::List(channels))
            }
            ClusterIn::Census { id, first, name } => {
                let (total, users) = self.census_part(first, name.as_deref());
                out.to_cluster(ClusterOut::CensusPart { id, total, users });
            }
            ClusterIn::Facts { id, keys } => {
                let facts = self.facts_of(&keys, out);
                out.to_cluster(ClusterOut::FactsPart { id, facts });
            }
            ClusterIn::UsersAnswer { session, answer } => out.reply(
                session,
                Reply::Elsewhere {
                    total: answer.total,
                    users: answer.users,
                },
            ),
            ClusterIn::Wall(line) => out.wall(&line),
            ClusterIn::Ignoring(changed) => {
                self.ignoring_changed_elsewhere(changed.name, changed.names, out)
            }
            ClusterIn::Kill { asked, reply } => {
                self.kill_from_node(asked.name, asked.farewell, reply, out)
            }
            ClusterIn::KilledElsewhere { session, found } => {
                out.reply(session, Reply::DisconnectedElsewhere(found))
            }
            ClusterIn::Tell { tell, reply } => {
                self.tell_from_node(tell.from, tell.to, tell.line, reply, out)
            }
            ClusterIn::Told {
                session,
                to,
                outcome,
            } => {
                if session.shard == self.id {
                    out.reply(session.key, Reply::Told { to, outcome });
                }
            }
            ClusterIn::Tick => {
                for index in 0..self.homed.len() as u32 {
                    self.ask_again(index, out);
                }
            }
        }
    }

    /// Opens a record of channel `name`, which another node made and this node missed the
    /// making of; if this node is its home, reads what is stored of it.
    fn open_missed(&mut self, name: ChannelName, out: &mut impl Outputs) -> u32 {
        let known = self.by_key.contains_key(name.key());
        let index = self.open(name).index;
        if !known && matches!(self.homed[index as usize].role, Role::Home { .. }) {
            self.reload_settings(index, true, out);
        }
        index
    }

    /// Channel `index` is going (an admin deleted it): if it is a replica, this node stops
    /// listening to it, and the joins that waited for its home are told there is no such channel.
    pub(super) fn forget_replica(&mut self, index: u32, out: &mut impl Outputs) {
        let ch = &mut self.homed[index as usize];
        let Role::Replica(replica) = &mut ch.role else {
            return;
        };
        if std::mem::take(&mut replica.subscribed) {
            out.to_cluster(ClusterOut::Unsubscribe(ch.name.key().clone()));
        }
        let asked: Vec<SessionId> = replica.pending.drain().map(|(_, p)| p.0).collect();
        for session in asked {
            self.answer_join(index, session, JoinOutcome::NoSuchChannel, out);
        }
    }

    /// A local member asks to see or change the settings of channel `index`, homed on another
    /// node: the home decides, and answers the member's shard.
    pub(super) fn manage_at_home(
        &mut self,
        index: u32,
        session: SessionId,
        admin: bool,
        change: Change,
        asked: u32,
        out: &mut impl Outputs,
    ) {
        let token = self.homed[index as usize].token_of(session);
        match token {
            Some(token) if self.cluster_connected() => {
                let session = (session.shard.0, session.key);
                let msg = HomeMsg::Manage {
                    token,
                    session,
                    admin,
                    change,
                    asked,
                };
                self.send_to_home(index, msg, out);
            }
            _ => {
                let msg = ToMember::Managed {
                    session,
                    answer: Box::new(Managed::Unavailable),
                    asked,
                };
                self.route(session.shard, ShardMsg::ToMember(msg), out);
            }
        }
    }

    /// Tells every other node of a channel just made here, so that each keeps a record of it.
    pub(super) fn announce_created(&mut self, name: &ChannelName, out: &mut impl Outputs) {
        if self.cluster.is_some() {
            out.to_cluster(ClusterOut::Created(name.as_str().to_string()));
        }
    }

    /// The epoch for a record that becomes the home now.
    fn now_epoch(&self) -> u64 {
        self.cluster.as_ref().map_or(0, |c| c.epoch)
    }

    /// Sends `msg` about channel `index` to its home node (a replica's).
    fn send_to_home(&mut self, index: u32, msg: HomeMsg, out: &mut impl Outputs) {
        let Some(c) = &self.cluster else { return };
        let ch = &self.homed[index as usize];
        let Role::Replica(replica) = &ch.role else {
            return;
        };
        out.to_cluster(ClusterOut::ToHome {
            node: replica.node.clone(),
            key: ch.name.key().clone(),
            msg: ToHomeNode {
                channel: ch.name.as_str().to_string(),
                from: c.me.clone(),
                msg,
            },
        });
    }

    /// Publishes an event of channel `index`, homed here, on its subject.
    pub(super) fn publish(&mut self, index: u32, what: EventKind, out: &mut impl Outputs) {
        let Some(c) = &self.cluster else { return };
        let ch = &mut self.homed[index as usize];
        let Role::Home { epoch, seq } = &mut ch.role else {
            return;
        };
        *seq += 1;
        let event = Event {
            channel: ch.name.as_str().to_string(),
            home: c.me.clone(),
            epoch: *epoch,
            seq: *seq,
            what,
        };
        out.to_cluster(ClusterOut::Publish {
            key: ch.name.key().clone(),
            event,
        });
    }

    /// Listens to channel `index`'s events while this node has members or joins there, and not
    /// otherwise.
    fn listen_as_needed(&mut self, index: u32, out: &mut impl Outputs) {
        let ch = &mut self.homed[index as usize];
        let wanted = ch.local_len() > 0;
        let Role::Replica(replica) = &mut ch.role else {
            return;
        };
        let wanted = wanted || !replica.pending.is_empty();
        if wanted == replica.subscribed {
            return;
        }
        replica.subscribed = wanted;
        let key = ch.name.key().clone();
        if wanted {
            out.to_cluster(ClusterOut::Subscribe(key));
        } else {
            // Numbers heard before are no guide to those heard after listening again.
            replica.synced = None;
            out.to_cluster(ClusterOut::Unsubscribe(key));
        }
    }

    /// A local session asks to join channel `index`, homed on another node: the home is asked,
    /// and answers on the channel's subject.
    pub(super) fn ask_home_to_join(
        &mut self,
        index: u32,
        session: SessionId,
        user: Arc<str>,
        create: bool,
        out: &mut impl Outputs,
    ) {
        let Some(c) = &mut self.cluster else { return };
        if !c.connected {
            return self.answer_join(index, session, JoinOutcome::Unavailable, out);
        }
        let token = c.next_token;
        c.next_token += 1;
        if let Role::Replica(replica) = &mut self.homed[index as usize].role {
            replica
                .pending
                .insert(token, (session, user.clone(), create));
        }
        self.listen_as_needed(index, out);
        let msg = HomeMsg::Join {
            token,
            user,
            create,
        };
        self.send_to_home(index, msg, out);
    }

    /// Answers a local session's join of channel `index`.
    fn answer_join(
        &mut self,
        index: u32,
        session: SessionId,
        outcome: JoinOutcome,
        out: &mut impl Outputs,
    ) {
        let ch = &self.homed[index as usize];
        let come_home = matches!(outcome, JoinOutcome::Joined(_))
            && session.shard != self.id
            && ch.local_len() <= self.colocate_up_to;
        let msg = ToMember::Joined {
            session,
            channel: ch.name.clone(),
            outcome,
            come_home,
        };
        self.route(session.shard, ShardMsg::ToMember(msg), out);
    }

    /// A local member leaves channel `index` (homed elsewhere), or its join is cancelled: the home
    /// is told, and announces it.
    pub(super) fn leave_at_home(&mut self, index: u32, session: SessionId, out: &mut impl Outputs) {
        let ch = &mut self.homed[index as usize];
        let left = ch.remove_with_token(session);
        let Role::Replica(replica) = &mut ch.role else {
            return;
        };
        let mut tokens: Vec<u64> = left.map(|(_, token)| token).into_iter().collect();
        replica.pending.retain(|&token, (asker, _, _)| {
            let cancelled = *asker == session;
            if cancelled {
                tokens.push(token);
            }
            !cancelled
        });
        for token in tokens {
            self.send_to_home(index, HomeMsg::Leave { token }, out);
        }
        self.listen_as_needed(index, out);
    }

    /// A local member's line, for the home to order. While NATS is away it goes nowhere: the
    /// members were told cross-node chat is interrupted.
    pub(super) fn post_to_home(
        &mut self,
        index: u32,
        session: SessionId,
        line: Line,
        out: &mut impl Outputs,
    ) {
        if !self.cluster.as_ref().is_some_and(|c| c.connected) {
            return;
        }
        let ch = &self.homed[index as usize];
        if !matches!(ch.role, Role::Replica(_)) {
            return;
        }
        if let Some(token) = ch.token_of(session) {
            self.send_to_home(index, HomeMsg::Post { token, line }, out);
        }
    }

    /// A local member asks who is on channel `index`: the home knows every node's members. While
    /// NATS is away, this node's own members are the answer.
    pub(super) fn ask_home_who(&mut self, index: u32, session: SessionId, out: &mut impl Outputs) {
        let connected = self.cluster.as_ref().is_some_and(|c| c.connected);
        let ch = &self.homed[index as usize];
        if let (true, Role::Replica(_)) = (connected, &ch.role) {
            if let Some(token) = ch.token_of(session) {
                let session = (session.shard.0, session.key);
                return self.send_to_home(index, HomeMsg::Who { token, session }, out);
            }
        }
        let msg = ToMember::Who {
            session,
            names: Some(ch.names()),
        };
        self.route(session.shard, ShardMsg::ToMember(msg), out);
    }

    /// Joins of channel `index` still unanswered are asked again (their answers may have been
    /// lost, or their home has changed); the home answers a member it has already let in again.
    fn ask_again(&mut self, index: u32, out: &mut impl Outputs) {
        let Role::Replica(replica) = &self.homed[index as usize].role else {
            return;
        };
        let asks: Vec<HomeMsg> = replica
            .pending
            .iter()
            .map(|(&token, (_, user, create))| HomeMsg::Join {
                token,
                user: user.clone(),
                create: *create,
            })
            .collect();
        for msg in asks {
            self.send_to_home(index, msg, out);
        }
    }

    /// Tells the home every local member of channel `index` (a new home, or NATS is back).
    fn announce_members(&mut self, index: u32, out: &mut impl Outputs) {
        let Some(c) = &mut self.cluster else { return };
        let ch = &mut self.homed[index as usize];
        if !matches!(ch.role, Role::Replica(_)) {
            return;
        }
        let members = ch.tokens(|| {
            c.next_token += 1;
            c.next_token - 1
        });
        if !members.is_empty() {
            self.send_to_home(index, HomeMsg::Rejoin { members }, out);
        }
    }

    /// A request from another node for a channel this shard keeps.
    fn at_home_node(&mut self, req: ToHomeNode, out: &mut impl Outputs) {
        let index = match (self.index_of(&req.channel), &req.msg) {
            (Some(index), _) => index,
            // The asking node knows the channel (it asks only for those), so it exists: this
            // node may have missed its creation.
            (None, HomeMsg::Join { .. } | HomeMsg::Rejoin { .. }) => {
                match ChannelName::new(&req.channel) {
                    Ok(name) if shard_proto::home_of(&name, self.shards) == self.id => {
                        self.open_missed(name, out)
                    }
                    _ => return,
                }
            }
            (None, _) => return self.not_the_home(req, out),
        };
        if let HomeMsg::Forgotten = req.msg {
            // From the home to a node whose member it does not know (it restarted, or took this
            // node for gone): this node tells it its members again.
            let from_home = matches!(&self.homed[index as usize].role,
                Role::Replica(replica) if replica.node == req.from);
            if from_home {
                self.announce_members(index, out);
            }
            return;
        }
        // A node that is not (or no longer) the home ignores what reaches it: the asker asks
        // the right node once its own view has caught up.
        if !matches!(self.homed[index as usize].role, Role::Home { .. }) {
            return self.not_the_home(req, out);
        }
        let from = req.from;
        match req.msg {
            HomeMsg::Join {
                token,
                user,
                create,
            } => {
                let ch = &mut self.homed[index as usize];
                if create && ch.settings.owner.is_none() {
                    // Its maker owns it (as stored, which the home may not have read yet).
                    ch.settings.owner = Some(user.clone());
                }
                let mut welcome = None;
                let outcome = if ch.contains_remote(&from, token) {
                    Outcome::Joined
                } else if ch.settings.loading && ch.settings.joins_wait {
                    // Whom it bans is on its way: the asking node asks again within a second.
                    return;
                } else if ch.is_full() {
                    Outcome::Full
                } else if let Err(refused) = ch.settings.may_join(&user) {
                    match refused {
                        JoinOutcome::Banned => Outcome::Banned,
                        _ => Outcome::InviteOnly,
                    }
                } else {
                    // Taken before the member's own "has joined", which it sees live.
                    if !ch.history.is_empty() || ch.settings.topic.is_some() {
                        welcome = Some(Box::new(shard_proto::Welcome {
                            topic: ch.settings.topic.clone(),
                            history: ch.history.iter().cloned().collect(),
                        }));
                    }
                    let line = super::joined_line(&user, &ch.name);
                    self.order(index, line, out);
                    self.homed[index as usize].add_remote(&from, token, user);
                    Outcome::Joined
                };
                let what = EventKind::Answer {
                    node: from,
                    token,
                    outcome,
                    welcome,
                };
                self.publish(index, what, out);
            }
            HomeMsg::Leave { token } => {
                let ch = &mut self.homed[index as usize];
                if let Some(user) = ch.remove_remote(&from, token) {
                    let line = super::left_line(&user, &ch.name);
                    self.order(index, line, out);
                }
            }
            HomeMsg::Post { token, line } => {
                let ch = &self.homed[index as usize];
                if !ch.contains_remote(&from, token) {
                    return self.forgotten(index, from, out);
                }
                // Nearly always no mutes: nothing to look up.
                let muted = match ch.settings.mutes.is_empty() {
                    true => None,
                    false => {
                        let user = ch.remote_user(&from, token).cloned().unwrap_or_default();
                        self.muted_user(index, &user, out)
                    }
                };
                match muted {
                    Some(line) => {
                        let what = EventKind::Notice {
                            node: from,
                            token,
                            line,
                        };
                        self.publish(index, what, out);
                    }
                    None => self.order_said(index, line, out),
                }
            }
            HomeMsg::Manage {
                token,
                session,
                admin,
                change,
                asked,
            } => {
                // Decided as the member's user, whom this home knows by its token.
                let user = self.homed[index as usize]
                    .remote_user(&from, token)
                    .cloned();
                let answer = match user {
                    Some(user) => self.apply_change(index, &user, admin, change, out),
                    None => {
                        self.forgotten(index, from.clone(), out);
                        Managed::Unavailable
                    }
                };
                out.to_cluster(ClusterOut::ToNode {
                    node: from,
                    shard: session.0,
                    msg: NodeMsg::Managed {
                        session: session.1,
                        answer,
                        asked,
                    },
                });
            }
            HomeMsg::Who { token, session } => {
                let ch = &self.homed[index as usize];
                let names = ch.contains_remote(&from, token).then(|| ch.names());
                if names.is_none() {
                    self.forgotten(index, from.clone(), out);
                }
                out.to_cluster(ClusterOut::ToNode {
                    node: from,
                    shard: session.0,
                    msg: NodeMsg::Who {
                        session: session.1,
                        names,
                    },
                });
            }
            HomeMsg::Rejoin { members } => {
                for (token, user) in members {
                    let ch = &mut self.homed[index as usize];
                    // Taken off here, or banned, while its node did not hear: told again.
                    let refused = ch.settings.is_banned(&user)
                        || ch
                            .settings
                            .removed
                            .iter()
                            .any(|(node, t)| *t == token && *node == from);
                    if refused {
                        let what = EventKind::Removed {
                            node: from.clone(),
                            token,
                        };
                        self.publish(index, what, out);
                    } else {
                        ch.add_remote(&from, token, user);
                    }
                }
            }
            HomeMsg::Forgotten => {}
        }
    }

    /// A request for a channel this node is not the home of (its view and the asker's differ for
    /// a moment, or the channel was deleted): a change asked of it is answered at once, so the
    /// member need not wait out its deadline; the rest the asker asks again, or goes without.
    fn not_the_home(&mut self, req: ToHomeNode, out: &mut impl Outputs) {
        if let HomeMsg::Manage { session, asked, .. } = req.msg {
            out.to_cluster(ClusterOut::ToNode {
                node: req.from,
                shard: session.0,
                msg: NodeMsg::Managed {
                    session: session.1,
                    answer: Managed::Unavailable,
                    asked,
                },
            });
        }
    }

    /// Tells node `node` that this home does not know the member it speaks for.
    fn forgotten(&mut self, index: u32, node: Arc<str>, out: &mut impl Outputs) {
        let Some(c) = &self.cluster else { return };
        let ch = &self.homed[index as usize];
        out.to_cluster(ClusterOut::ToHome {
            node,
            key: ch.name.key().clone(),
            msg: ToHomeNode {
                channel: ch.name.as_str().to_string(),
                from: c.me.clone(),
                msg: HomeMsg::Forgotten,
            },
        });
    }

    /// An event of a channel homed on another node.
    fn heard(&mut self, event: Event, out: &mut impl Outputs) {
        let Some(index) = self.index_of(&event.channel) else {
            return;
        };
        let ch = &mut self.homed[index as usize];
        let id = ch.id;
        let Role::Replica(replica) = &mut ch.role else {
            return;
        };
        if replica.node != event.home || !replica.subscribed {
            return; // a node that is not the home (a view not yet caught up), or a late one
        }
        let missed = match replica.synced {
            Some((epoch, next)) if epoch == event.epoch => {
                if event.seq < next {
                    return; // heard already
                }
                event.seq - next
            }
            // The first event heard, or the first of a new epoch: nothing before it was meant
            // for this node's members.
            _ => 0,
        };
        replica.synced = Some((event.epoch, event.seq + 1));
        if missed > 0 {
            let held_back = self
                .cluster
                .as_mut()
                .and_then(|c| c.gap_log.allow(Instant::now()));
            if let Some(held_back) = held_back {
                warn!(
                    channel = %event.channel,
                    home = %event.home,
                    epoch = event.epoch,
                    seq = event.seq,
                    missed,
                    held_back,
                    "cluster: events of a channel did not reach this node; its members are told how many"
                );
            }
            let count = u32::try_from(missed).unwrap_or(u32::MAX);
            self.send_to_member_shards(index, || ToMember::Lost { channel: id, count }, out);
            // An answer to a join may have been among them.
            self.ask_again(index, out);
        }
        let is_me = |node: &str| self.cluster.as_ref().is_some_and(|c| &*c.me == node);
        match event.what {
            EventKind::Line(line) => self.fan_out(index, line, out),
            EventKind::Removed { node, token } => {
                if !is_me(&node) {
                    return;
                }
                let ch = &mut self.homed[index as usize];
                let Some(session) = ch.session_of_token(token) else {
                    return;
                };
                ch.remove(session);
                let msg = ToMember::Removed {
                    channel: id,
                    session,
                };
                self.route(session.shard, ShardMsg::ToMember(msg), out);
                self.listen_as_needed(index, out);
            }
            EventKind::Notice { node, token, line } => {
                if !is_me(&node) {
                    return;
                }
                if let Some(session) = self.homed[index as usize].session_of_token(token) {
                    let msg = ToMember::Notice { session, line };
                    self.route(session.shard, ShardMsg::ToMember(msg), out);
                }
            }
            EventKind::Answer {
                node,
                token,
                outcome,
                welcome,
            } => {
                if !self.cluster.as_ref().is_some_and(|c| c.me == node) {
                    return;
                }
                let ch = &mut self.homed[index as usize];
                let Role::Replica(replica) = &mut ch.role else {
                    return;
                };
                let Some((session, user, _)) = replica.pending.remove(&token) else {
                    // Cancelled: the leave that cancelled it follows the join to the home.
                    return;
                };
                if replica.pending.is_empty() {
                    // Nearly always: a table kept for joins that are over cost each of a
                    // node's thousands of replicas about 200 bytes (measured with dhat).
                    replica.pending = HashMap::new();
                }
                let outcome = match outcome {
                    Outcome::Joined => {
                        ch.add_with_token(session, user, token);
                        JoinOutcome::Joined(id)
                    }
                    Outcome::Full => JoinOutcome::Full,
                    Outcome::Banned => JoinOutcome::Banned,
                    Outcome::InviteOnly => JoinOutcome::InviteOnly,
                };
                if let (JoinOutcome::Joined(_), Some(welcome)) = (outcome, welcome) {
                    // Ahead of the answer, on the same ring, as at a home on this node.
                    let msg = ToMember::Welcome { session, welcome };
                    self.route(session.shard, ShardMsg::ToMember(msg), out);
                }
                self.answer_join(index, session, outcome, out);
                self.listen_as_needed(index, out);
            }
        }
    }

    /// The bridge's view changed: new live nodes, or NATS went or came back.
    fn view_changed(&mut self, nodes: Arc<[Arc<str>]>, connected: bool, out: &mut impl Outputs) {
        let Some(c) = &mut self.cluster else { return };
        let was_connected = std::mem::replace(&mut c.connected, connected);
        c.nodes = nodes;
        let me = c.me.clone();
        let nodes = c.nodes.clone();
        for index in 0..self.homed.len() as u32 {
            let ch = &self.homed[index as usize];
            // A record an admin deleted stays, nameless (see `Hub::delete`): it has no home.
            if !self.is_open(ch) {
                continue;
            }
            let home = placement::home_node(ch.name.key(), nodes.iter().map(|n| &**n))
                .unwrap_or(&me)
                .to_string();
            let moved = match &ch.role {
                Role::Home { .. } => home != *me,
                Role::Replica(replica) => *replica.node != home,
            };
            if moved {
                self.rehome(index, &home, out);
            } else if matches!(ch.role, Role::Home { .. }) {
                self.drop_gone_members(index, &nodes, out);
                if connected && !was_connected {
                    // While this node could not be heard (or before it first was), another
                    // node may have been the home and changed the settings.
                    self.reload_settings(index, false, out);
                }
            }
            let ch = &self.homed[index as usize];
            let crosses_nodes = ch.has_remote() || matches!(ch.role, Role::Replica(_));
            if crosses_nodes && ch.local_len() > 0 && was_connected != connected {
                let notice = if connected {
                    format!("[Chat with other nodes in #{} is back.]", ch.name)
                } else {
                    format!(
                        "[Chat with other nodes in #{} is interrupted; lines from them will resume when the link is back.]",
                        ch.name
                    )
                };
                self.fan_out(index, notice.into(), out);
            }
            if let Role::Replica(replica) = &mut self.homed[index as usize].role {
                if !connected && was_connected {
                    let asked: Vec<SessionId> = replica.pending.drain().map(|(_, p)| p.0).collect();
                    for session in asked {
                        self.answer_join(index, session, JoinOutcome::Unavailable, out);
                    }
                    self.listen_as_needed(index, out);
                } else if connected && !was_connected && !moved {
                    // The home may have taken this node for gone meanwhile.
                    self.announce_members(index, out);
                }
            }
        }
    }

    /// Takes away the home's members of nodes that are no longer live, saying so.
    fn drop_gone_members(&mut self, index: u32, nodes: &[Arc<str>], out: &mut impl Outputs) {
        let ch = &mut self.homed[index as usize];
        if !ch.has_remote() {
            return;
        }
        let gone = ch.remove_nodes(|node| nodes.iter().any(|n| &**n == node));
        for user in gone {
            let line = super::left_line(&user, &self.homed[index as usize].name);
            self.order(index, line, out);
        }
    }

    /// Channel `index` has a new home node, `home` (perhaps this one).
    fn rehome(&mut self, index: u32, home: &str, out: &mut impl Outputs) {
        let Some(c) = &self.cluster else { return };
        let me = c.me.clone();
        let epoch = self.now_epoch();
        let ch = &mut self.homed[index as usize];
        let old = std::mem::replace(&mut ch.role, Role::Home { epoch, seq: 0 });
        let had_members = ch.local_len() > 0;
        match (&old, home == &*me) {
            (Role::Replica(_), true) => self.homes += 1,
            (Role::Home { .. }, false) => self.homes -= 1,
            _ => {}
        }
        if home == &*me {
            if let Role::Replica(replica) = &old {
                if replica.subscribed {
                    out.to_cluster(ClusterOut::Unsubscribe(ch.name.key().clone()));
                }
            }
            // Another node may have changed its settings while it was the home.
            self.reload_settings(index, true, out);
            // Home now: the other nodes' members come back as they hear of it. Joins that waited
            // for the old home are answered here, "try again" while the settings (whom it bans)
            // are on their way.
            if let Role::Replica(replica) = old {
                for (_, (session, user, _)) in replica.pending {
                    self.admit_here(index, session, user, out);
                }
            }
        } else {
            // Members of other nodes rejoin the new home from their own nodes.
            ch.remove_nodes(|_| false);
            let mut replica = Replica::new(home.into());
            if let Role::Replica(old) = old {
                replica.pending = old.pending;
                // Still listening: the subject is the channel's, whoever publishes on it.
                replica.subscribed = old.subscribed;
            }
            ch.role = Role::Replica(Box::new(replica));
            self.listen_as_needed(index, out);
            self.announce_members(index, out);
            self.ask_again(index, out);
        }
        if had_members {
            let notice = format!(
                "[#{} moved to another node; lines sent in the last seconds may be lost.]",
                self.homed[index as usize].name
            );
            self.fan_out(index, notice.into(), out);
        }
    }

    /// A join that waited for a home which has since become this node: decided here.
    fn admit_here(
        &mut self,
        index: u32,
        session: SessionId,
        user: Arc<str>,
        out: &mut impl Outputs,
    ) {
        let outcome = self.admit(index, session, user, out);
        self.answer_join(index, session, outcome, out);
    }
}

/// Merges the list answers of other nodes: their channels, for one session.
pub fn list_entries(items: impl IntoIterator<Item = ListItem>) -> Vec<ListEntry> {
    items
        .into_iter()
        .filter_map(|item| {
            Some(ListEntry {
                name: ChannelName::new(&item.name).ok()?,
                members: item.members,
                topic: item.topic,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    //! Nodes of one shard each, joined by a NATS stand-in that keeps each publisher's order
    //! (and can lose a message when told to): no threads, no sockets.

    use super::*;
    use std::collections::{BTreeMap, BTreeSet, VecDeque};

    use shard_proto::{ChannelId, ShardId, Traveller};

    /// What one node's hub produced.
    #[derive(Default)]
    struct Node {
        cluster: Vec<ClusterOut>,
        lines: BTreeMap<u64, Vec<Line>>,
        replies: BTreeMap<u64, Vec<Reply>>,
        log: Vec<Line>,
        audited: Vec<String>,
        /// Settings stored, oldest first, not yet carried to the cluster's store.
        saved: Vec<(ChannelName, crate::channel::Settings)>,
        /// Channels whose stored settings this node asked for.
        to_load: Vec<ChannelName>,
    }

    impl Outputs for Node {
        fn to_shard(&mut self, dest: ShardId, _msg: ShardMsg) {
            panic!("one shard per node: nothing for {dest}");
        }
        fn deliver(&mut self, session: u64, line: &Line) {
            self.lines.entry(session).or_default().push(line.clone());
        }
        fn lost(&mut self, session: u64, count: u32) {
            let notice: Line = format!("[{count} messages dropped]").into();
            self.lines.entry(session).or_default().push(notice);
        }
        fn reply(&mut self, session: u64, reply: Reply) {
            self.replies.entry(session).or_default().push(reply);
        }
        fn tell(&mut self, session: u64, line: &Line) -> crate::hub::Reached {
            self.lines.entry(session).or_default().push(line.clone());
            crate::hub::Reached::Here
        }
        fn log(&mut self, _channel: &ChannelName, line: &Line) {
            self.log.push(line.clone());
        }
        fn times(&self, _session: u64) -> Option<(u32, u32)> {
            None
        }
        fn save_settings(&mut self, channel: &ChannelName, settings: &crate::channel::Settings) {
            self.saved.push((channel.clone(), settings.clone()));
        }
        fn load_settings(&mut self, channel: &ChannelName) {
            self.to_load.push(channel.clone());
        }
        fn forget_settings(&mut self, channel: &ChannelName) {
            self.saved.retain(|(c, _)| c.key() != channel.key());
            self.to_load.retain(|c| c.key() != channel.key());
        }
        fn unix_now(&self) -> u32 {
            0
        }
        fn adopt(&mut self, _traveller: Traveller) -> u64 {
            unreachable!("one shard per node")
        }
        fn release(&mut self, _session: u64) -> (Vec<Line>, u32) {
            (Vec::new(), 0)
        }
        fn forwarded(&mut self, _session: u64, _lines: Vec<Line>, _dropped: u32) {}
        fn dropped_on_the_way(&self, _dest: ShardId, _channel: ChannelId) -> u32 {
            0
        }
        fn to_cluster(&mut self, msg: ClusterOut) {
            self.cluster.push(msg);
        }
        fn audit(&mut self, entry: &str) {
            self.audited.push(entry.to_string());
        }
        fn disconnect(&mut self, _session: u64, _farewell: &Line) -> crate::hub::Reached {
            crate::hub::Reached::Here
        }
        fn wall(&mut self, line: &Line) {
            for lines in self.lines.values_mut() {
                lines.push(line.clone());
            }
        }
    }

    struct Cluster {
        names: Vec<Arc<str>>,
        hubs: Vec<Hub>,
        nodes: Vec<Node>,
        /// Per node: the channel keys it listens to.
        listening: Vec<BTreeSet<Arc<str>>>,
        /// Messages in flight, per receiving node, in the order sent.
        wire: Vec<VecDeque<ClusterIn>>,
        /// Drop the next published line.
        lose_next_line: bool,
        /// Drop the next published removal of a member.
        lose_next_removal: bool,
        /// The settings every node stores and reads, by channel key.
        store: BTreeMap<String, crate::channel::Settings>,
        /// Leave the nodes' reads of the store unanswered.
        hold_loads: bool,
    }

    impl Cluster {
        fn new(names: &[&str]) -> Cluster {
            let names: Vec<Arc<str>> = names.iter().map(|n| Arc::from(*n)).collect();
            let hubs = names
                .iter()
                .enumerate()
                .map(|(i, name)| {
                    let mut hub = Hub::new(ShardId(0), 1, 0, 64);
                    hub.join_cluster(name.clone(), 1000 + i as u64);
                    hub
                })
                .collect();
            let n = names.len();
            let mut c = Cluster {
                names,
                hubs,
                nodes: (0..n).map(|_| Node::default()).collect(),
                listening: vec![BTreeSet::new(); n],
                wire: (0..n).map(|_| VecDeque::new()).collect(),
                lose_next_line: false,
                lose_next_removal: false,
                store: BTreeMap::new(),
                hold_loads: false,
            };
            let all = c.names.clone();
            c.view(&all, true);
            c
        }

        fn index(&self, node: &str) -> usize {
            self.names.iter().position(|n| &**n == node).unwrap()
        }

        /// Every node in `live` hears that they are the live nodes.
        fn view(&mut self, live: &[Arc<str>], connected: bool) {
            let nodes: Arc<[Arc<str>]> = live.to_vec().into();
            for node in live {
                let i = self.index(node);
                let msg = ClusterIn::Nodes {
                    nodes: nodes.clone(),
                    connected,
                    epoch: 5000 + i as u64,
                };
                self.hubs[i].from_cluster(msg, &mut self.nodes[i]);
            }
            self.settle();
        }

        /// Moves every message until none is left.
        fn settle(&mut self) {
            loop {
                let mut moved = false;
                // The store: what was saved first, then what is read.
                for i in 0..self.hubs.len() {
                    for (name, settings) in std::mem::take(&mut self.nodes[i].saved) {
                        self.store.insert(name.key().to_string(), settings);
                    }
                }
                for i in 0..self.hubs.len() {
                    if self.hold_loads {
                        break;
                    }
                    for name in std::mem::take(&mut self.nodes[i].to_load) {
                        moved = true;
                        let stored = self.store.get(&**name.key()).cloned();
                        self.hubs[i].settings_loaded(&name, stored, &mut self.nodes[i]);
                    }
                }
                for from in 0..self.hubs.len() {
                    for msg in std::mem::take(&mut self.nodes[from].cluster) {
                        moved = true;
                        self.carry(from, msg);
                    }
                }
                for to in 0..self.hubs.len() {
                    while let Some(msg) = self.wire[to].pop_front() {
                        moved = true;
                        self.hubs[to].from_cluster(msg, &mut self.nodes[to]);
                    }
                }
                if !moved {
                    return;
                }
            }
        }

        fn carry(&mut self, from: usize, msg: ClusterOut) {
            match msg {
                // Nobody is there to read what goes to a node that is not in the cluster.
                ClusterOut::ToHome { node, msg, .. } => {
                    if let Some(to) = self.names.iter().position(|n| *n == node) {
                        self.wire[to].push_back(ClusterIn::AtHome(msg));
                    }
                }
                ClusterOut::Publish { key, event } => {
                    if matches!(event.what, EventKind::Line(_))
                        && std::mem::take(&mut self.lose_next_line)
                    {
                        return;
                    }
                    if matches!(event.what, EventKind::Removed { .. })
                        && std::mem::take(&mut self.lose_next_removal)
                    {
                        return;
                    }
                    for to in 0..self.hubs.len() {
                        if to != from && self.listening[to].contains(&key) {
                            self.wire[to].push_back(ClusterIn::Event(event.clone()));
                        }
                    }
                }
                ClusterOut::ToNode { node, msg, .. } => {
                    if let Some(to) = self.names.iter().position(|n| *n == node) {
                        self.wire[to].push_back(ClusterIn::AtNode(msg));
                    }
                }
                ClusterOut::Subscribe(key) => {
                    self.listening[from].insert(key);
                }
                ClusterOut::Unsubscribe(key) => {
                    self.listening[from].remove(&key);
                }
                ClusterOut::Created(name) => {
                    for to in 0..self.hubs.len() {
                        if to != from {
                            self.wire[to].push_back(ClusterIn::Created(name.clone()));
                        }
                    }
                }
                // To every node, the sender too, as NATS does.
                ClusterOut::Deleted(said) => {
                    for to in 0..self.hubs.len() {
                        self.wire[to].push_back(ClusterIn::Deleted(said.clone()));
                    }
                }
                // Lists and private messages between nodes are gathered by the bridge, which this
                // stand-in does not model (tests/cluster.rs covers them).
                ClusterOut::ListPart { .. }
                | ClusterOut::List { .. }
                | ClusterOut::Tell(_)
                | ClusterOut::TellCopy(_)
                | ClusterOut::Ignoring { .. }
                | ClusterOut::Told { .. }
                | ClusterOut::Users { .. }
                | ClusterOut::Wall(_)
                | ClusterOut::Kill { .. }
                | ClusterOut::Killed { .. }
                | ClusterOut::CensusPart { .. }
                | ClusterOut::FactsPart { .. } => {}
            }
        }

        fn join(&mut self, node: &str, session: u64, user: &str, create: bool) {
            let i = self.index(node);
            let name = ChannelName::new("lobby").unwrap();
            if create {
                // As the database records a channel made, before its home hears of it.
                let owned = crate::channel::Settings {
                    owner: Some(user.into()),
                    ..Default::default()
                };
                self.store.insert(name.key().to_string(), owned);
            }
            self.hubs[i].join(session, name, user.into(), create, &mut self.nodes[i]);
            self.settle();
        }

        /// Session `session` of `node`, user `by`, asks `change` of its channel; the answer.
        fn manage(&mut self, node: &str, session: u64, by: &str, change: Change) -> Managed {
            let i = self.index(node);
            assert!(self.hubs[i].manage(session, by.into(), false, change, &mut self.nodes[i]));
            self.settle();
            match self.nodes[i].replies[&session].last() {
                Some(Reply::Managed(answer)) => (**answer).clone(),
                other => panic!("no answer to a change: {other:?}"),
            }
        }

        fn say(&mut self, node: &str, session: u64, text: &str) {
            let i = self.index(node);
            self.hubs[i].post(session, text.into(), &mut self.nodes[i]);
        }

        fn seen(&self, node: &str, session: u64) -> Vec<String> {
            let i = self.index(node);
            self.nodes[i]
                .lines
                .get(&session)
                .map_or(Vec::new(), |l| l.iter().map(|l| l.to_string()).collect())
        }

        fn joined(&self, node: &str, session: u64) -> Option<JoinOutcome> {
            let i = self.index(node);
            self.nodes[i]
                .replies
                .get(&session)?
                .iter()
                .rev()
                .find_map(|r| match r {
                    Reply::Joined { outcome, .. } => Some(*outcome),
                    _ => None,
                })
        }
    }

    /// The node that is the home of `lobby` among these, and the others.
    fn home_of_lobby(names: &[&str]) -> String {
        placement::home_node("lobby", names.iter().copied())
            .unwrap()
            .to_string()
    }

    /// Two nodes, `n1` and `n2`: `hal` in `lobby` on its home node, `ann` on the other.
    /// Returns the cluster, the home node and the other.
    fn hal_at_home_and_ann_away() -> (Cluster, String, &'static str) {
        let names = ["n1", "n2"];
        let home = home_of_lobby(&names);
        let away = names.into_iter().find(|n| *n != home).unwrap();
        let mut c = Cluster::new(&names);
        c.join(&home, 1, "hal", true);
        c.join(away, 1, "ann", false);
        (c, home, away)
    }

    #[test]
    fn members_on_every_node_see_one_order_which_the_home_logs() {
        let names = ["n1", "n2", "n3"];
        let home = home_of_lobby(&names);
        let mut c = Cluster::new(&names);
        let others: Vec<&str> = names.iter().copied().filter(|n| *n != home).collect();
        // Created away from its home: every node learns it, and the home takes the join.
        c.join(others[0], 1, "ann", true);
        assert!(matches!(
            c.joined(others[0], 1),
            Some(JoinOutcome::Joined(_))
        ));
        c.join(&home, 1, "hal", false);
        c.join(others[1], 1, "bea", false);
        for round in 0..5 {
            c.say(others[0], 1, &format!("ann {round}"));
            c.say(&home, 1, &format!("hal {round}"));
            c.say(others[1], 1, &format!("bea {round}"));
        }
        c.settle();
        let log: Vec<String> = c.nodes[c.index(&home)]
            .log
            .iter()
            .map(|l| l.to_string())
            .collect();
        assert_eq!(
            log.iter()
                .filter(|l| l.contains(' ') && !l.contains("joined"))
                .count(),
            15
        );
        // Each member sees the log from its own join on, its own lines included, in that order.
        for (node, user) in [
            (others[0], "ann"),
            (home.as_str(), "hal"),
            (others[1], "bea"),
        ] {
            let seen = c.seen(node, 1);
            let from = log.len() - seen.len();
            assert_eq!(seen, log[from..], "{user} on {node}");
            assert!(seen.contains(&format!("{user} 4")));
        }
        // Who and the counts are the cluster's.
        let i = c.index(others[1]);
        c.hubs[i].who(1, &mut c.nodes[i]);
        c.settle();
        let who = c.nodes[i].replies[&1].last().cloned();
        let Some(Reply::Who(Some(names))) = who else {
            panic!("{who:?}")
        };
        assert_eq!(
            names.iter().map(|n| &**n).collect::<Vec<_>>(),
            ["ann", "bea", "hal"]
        );
    }

    #[test]
    fn a_lost_line_is_told_where_it_was_lost_and_a_leave_is_announced() {
        let (mut c, home, away) = hal_at_home_and_ann_away();
        c.say(&home, 1, "one");
        c.settle();
        c.lose_next_line = true;
        c.say(&home, 1, "two");
        c.say(&home, 1, "three");
        c.settle();
        assert_eq!(c.seen(away, 1), ["one", "[1 messages dropped]", "three"]);
        let i = c.index(away);
        c.hubs[i].exit(1, &mut c.nodes[i]);
        c.settle();
        assert_eq!(c.seen(&home, 1).last().unwrap(), "ann has left #lobby");
        assert!(
            c.listening[i].is_empty(),
            "a node with no members stops listening"
        );
    }

    #[test]
    fn when_the_home_dies_its_channel_moves_and_chat_goes_on_with_a_notice() {
        let names = ["n1", "n2", "n3"];
        let home = home_of_lobby(&names);
        let mut c = Cluster::new(&names);
        let others: Vec<&str> = names.iter().copied().filter(|n| *n != home).collect();
        c.join(&home, 1, "hal", true);
        c.join(others[0], 1, "ann", false);
        c.join(others[1], 1, "bea", false);
        // The home is killed: the others see it gone.
        let live: Vec<Arc<str>> = others.iter().map(|n| Arc::from(*n)).collect();
        c.view(&live, true);
        let new_home = home_of_lobby(&others);
        for node in &others {
            let seen = c.seen(node, 1);
            assert!(
                seen.last().unwrap().contains("moved to another node"),
                "{seen:?}"
            );
            assert!(!seen
                .iter()
                .any(|l| l.contains("ann has left") || l.contains("bea has left")));
        }
        // hal is gone with its node; the new home counts the other two, and is the only home.
        let i = c.index(&new_home);
        assert_eq!(c.hubs[i].homed_members(), 2);
        let homes: Vec<usize> = others
            .iter()
            .map(|n| c.hubs[c.index(n)].homed_channels())
            .collect();
        assert_eq!(homes.iter().sum::<usize>(), 1, "{homes:?}");
        c.say(others[0], 1, "still here");
        c.say(others[1], 1, "me too");
        c.settle();
        // Both see both lines, in the one order the new home gave them.
        let tails: Vec<Vec<String>> = others
            .iter()
            .map(|node| c.seen(node, 1).split_off(c.seen(node, 1).len() - 2))
            .collect();
        assert_eq!(tails[0], tails[1]);
        let mut sorted = tails[0].clone();
        sorted.sort();
        assert_eq!(sorted, ["me too", "still here"]);
    }

    #[test]
    fn while_nats_is_away_local_chat_goes_on_remote_joins_wait_and_members_are_told() {
        let names = ["n1", "n2"];
        let home = home_of_lobby(&names);
        let away = names.iter().copied().find(|n| *n != home).unwrap();
        let mut c = Cluster::new(&names);
        c.join(&home, 1, "hal", true);
        c.join(&home, 2, "hex", false);
        c.join(away, 1, "ann", false);
        let all: Vec<Arc<str>> = names.iter().map(|n| Arc::from(*n)).collect();
        c.view(&all, false);
        assert!(c.seen(away, 1).last().unwrap().contains("interrupted"));
        assert!(c.seen(&home, 1).last().unwrap().contains("interrupted"));
        // The home's own members still talk.
        c.say(&home, 2, "local");
        c.settle();
        assert_eq!(c.seen(&home, 1).last().unwrap(), "local");
        // A join at the other node is refused for now, with a reason.
        c.join(away, 2, "amy", false);
        assert_eq!(c.joined(away, 2), Some(JoinOutcome::Unavailable));
        c.view(&all, true);
        assert!(c.seen(away, 1).last().unwrap().contains("is back"));
        c.say(away, 1, "hello again");
        c.settle();
        assert_eq!(c.seen(&home, 1).last().unwrap(), "hello again");
    }

    #[test]
    fn a_home_that_restarted_is_told_the_members_it_forgot_at_their_first_line() {
        let (mut c, home, away) = hal_at_home_and_ann_away();
        // The home restarts under the same name, faster than anyone noticed it gone: it knows
        // the channel (from the store) but none of the other node's members.
        let h = c.index(&home);
        let mut fresh = Hub::new(ShardId(0), 1, 0, 64);
        fresh.join_cluster(home.as_str().into(), 9000);
        fresh.open(ChannelName::new("lobby").unwrap());
        c.hubs[h] = fresh;
        c.nodes[h] = Node::default();
        c.listening[h].clear();
        let nodes: Arc<[Arc<str>]> = c.names.clone().into();
        let msg = ClusterIn::Nodes {
            nodes,
            connected: true,
            epoch: 9000,
        };
        c.hubs[h].from_cluster(msg, &mut c.nodes[h]);
        // It reads the stored settings again as it first hears the cluster.
        assert_eq!(c.nodes[h].to_load.len(), 1);
        c.settle();
        c.join(&home, 7, "hex", false);
        // ann's first line is lost, but it makes the home ask; her next one gets through.
        c.say(away, 1, "anyone?");
        c.settle();
        assert_eq!(c.hubs[h].homed_members(), 2, "ann is known again");
        c.say(away, 1, "hello");
        c.settle();
        assert_eq!(c.seen(&home, 7).last().unwrap(), "hello");
    }

    #[test]
    fn a_node_that_comes_takes_the_channels_it_wins_and_their_members_follow() {
        // A third node that wins `lobby` over the first two.
        let newcomer = (0..)
            .map(|i| format!("new{i}"))
            .find(|n| home_of_lobby(&["n1", "n2", n]) == *n)
            .unwrap();
        let names = ["n1", "n2", newcomer.as_str()];
        let mut c = Cluster::new(&names);
        // Until it comes, the cluster is the first two.
        let two: Vec<Arc<str>> = ["n1", "n2"].iter().map(|n| Arc::from(*n)).collect();
        c.view(&two, true);
        c.join("n1", 1, "ann", true);
        c.join("n2", 1, "bea", false);
        c.say("n1", 1, "before");
        c.settle();
        assert_eq!(c.seen("n2", 1).last().unwrap(), "before");
        let all: Vec<Arc<str>> = names.iter().map(|n| Arc::from(*n)).collect();
        c.view(&all, true);
        let n3 = c.index(&newcomer);
        assert_eq!(c.hubs[n3].homed_channels(), 1);
        assert_eq!(c.hubs[n3].homed_members(), 2, "both members followed");
        for node in ["n1", "n2"] {
            assert_eq!(c.hubs[c.index(node)].homed_channels(), 0);
            assert!(c
                .seen(node, 1)
                .last()
                .unwrap()
                .contains("moved to another node"));
        }
        c.say("n1", 1, "after");
        c.settle();
        assert_eq!(c.seen("n2", 1).last().unwrap(), "after");
        assert_eq!(c.seen("n1", 1).last().unwrap(), "after");
        assert_eq!(
            c.nodes[n3].log.last().unwrap().as_ref(),
            "after",
            "the new home logs"
        );
    }

    /// A message another node (buggy, old, or hostile) could send, from a few numbers.
    fn forged(kind: u8, a: u64, b: u64, node: &str) -> ClusterIn {
        let from: Arc<str> = node.into();
        let channel = if a % 3 == 0 { "lobby" } else { "other" }.to_string();
        let home_msg = |msg| {
            ClusterIn::AtHome(ToHomeNode {
                channel: channel.clone(),
                from: from.clone(),
                msg,
            })
        };
        match kind % 17 {
            0 => home_msg(HomeMsg::Join {
                token: b % 4,
                user: "mal".into(),
                create: a % 2 == 0,
            }),
            1 => home_msg(HomeMsg::Leave { token: b % 4 }),
            2 => home_msg(HomeMsg::Post {
                token: b % 4,
                line: "forged".into(),
            }),
            3 => home_msg(HomeMsg::Who {
                token: b % 4,
                session: ((a % 3) as u16, b),
            }),
            4 => home_msg(HomeMsg::Rejoin {
                members: (0..b % 5).map(|t| (t, Arc::from("ghost"))).collect(),
            }),
            5 => home_msg(HomeMsg::Forgotten),
            6 => ClusterIn::Event(Event {
                channel,
                home: from,
                epoch: a % 3,
                seq: b % 8,
                what: if b % 2 == 0 {
                    EventKind::Line("forged".into())
                } else {
                    EventKind::Answer {
                        node: "n1".into(),
                        token: a % 4,
                        outcome: Outcome::Joined,
                        welcome: (b % 4 == 1).then(|| {
                            Box::new(shard_proto::Welcome {
                                topic: Some("forged".into()),
                                history: vec!["forged".into()],
                            })
                        }),
                    }
                },
            }),
            7 => ClusterIn::AtNode(NodeMsg::Who {
                session: b,
                names: None,
            }),
            8 => ClusterIn::Tell {
                tell: crate::cluster::wire::NodeTell {
                    from: "mallory".into(),
                    to: if a % 2 == 0 { "u1" } else { "" }.into(),
                    line: "forged".into(),
                },
                reply: (b % 2 == 0).then(|| "anywhere".into()),
            },
            10 => ClusterIn::Census {
                id: a,
                first: b as u32,
                name: (b % 2 == 0).then(|| "U1".into()),
            },
            11 => ClusterIn::Facts {
                id: a,
                keys: vec![a, b, u64::MAX],
            },
            9 => ClusterIn::Told {
                session: SessionId {
                    shard: ShardId((a % 3) as u16),
                    key: b,
                },
                to: "u1".into(),
                outcome: shard_proto::Told::NotOnline,
            },
            13 => home_msg(HomeMsg::Manage {
                token: b % 4,
                session: ((a % 3) as u16, b),
                admin: a % 2 == 0,
                // Nothing that would take a real member off.
                change: match b % 4 {
                    0 => Change::Show,
                    1 => Change::Topic(Some("forged".into())),
                    2 => Change::Ban("mal".into()),
                    _ => Change::InviteOnly(a % 4 == 0),
                },
                asked: a as u32,
            }),
            14 => ClusterIn::Event(Event {
                channel,
                home: from,
                epoch: a % 3,
                seq: b % 8,
                what: if a % 2 == 0 {
                    EventKind::Removed {
                        node: "n1".into(),
                        token: b % 4,
                    }
                } else {
                    EventKind::Notice {
                        node: "n2".into(),
                        token: b % 4,
                        line: "forged".into(),
                    }
                },
            }),
            15 => ClusterIn::AtNode(NodeMsg::Managed {
                session: b,
                answer: Managed::Done,
                asked: a as u32,
            }),
            16 => ClusterIn::Deleted(crate::cluster::wire::ChannelDeleted {
                channel: if a % 2 == 0 { "other" } else { "" }.into(),
                by: "mal".into(),
            }),
            _ => ClusterIn::Created(if a % 2 == 0 { "lobby" } else { "" }.into()),
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]

        /// Whatever other nodes send, in any order, a hub neither panics nor loses count of its
        /// own members; and the real members still hear one another afterwards.
        #[test]
        fn forged_messages_from_other_nodes_never_break_a_hub(
            ops in proptest::collection::vec((0u8..20, 0u64..1000, 0u64..1000), 1..60)
        ) {
            let names = ["n1", "n2"];
            let home = home_of_lobby(&names);
            let away = names.iter().copied().find(|n| *n != home).unwrap();
            let mut c = Cluster::new(&names);
            c.join(&home, 1, "hal", true);
            c.join(away, 1, "ann", false);
            for (kind, a, b) in ops {
                // From the other real node with even tokens (its real member, ann, is token 1,
                // so no forgery speaks for her), or from a node that is not in the cluster.
                let to = (a % 2) as usize;
                let node = if b % 2 == 0 { names[1 - to] } else { "stranger" };
                let msg = if kind >= 17 {
                    // Now and then a view that comes and goes with the stranger in it.
                    let mut live: Vec<Arc<str>> = names.iter().map(|n| Arc::from(*n)).collect();
                    if kind == 18 {
                        live.push("stranger".into());
                    }
                    ClusterIn::Nodes { nodes: live.into(), connected: kind != 19, epoch: a }
                } else {
                    forged(kind, a, b, node)
                };
                c.hubs[to].from_cluster(msg, &mut c.nodes[to]);
                c.settle();
            }
            // Back to the two real nodes, connected: the real members talk.
            let live: Vec<Arc<str>> = names.iter().map(|n| Arc::from(*n)).collect();
            c.view(&live, true);
            let i = c.index(away);
            proptest::prop_assert!(c.hubs[i].channel_of(1).is_some());
            c.say(away, 1, "still one chat");
            c.settle();
            let seen = c.seen(&home, 1);
            proptest::prop_assert_eq!(seen.last().map(String::as_str), Some("still one chat"));
        }
    }

    /// The last line `session` of `node` saw.
    fn last_seen(c: &Cluster, node: &str, session: u64) -> String {
        c.seen(node, session).last().cloned().unwrap_or_default()
    }

    #[test]
    fn a_member_of_another_node_changes_the_settings_at_the_home_as_its_own_user() {
        let (mut c, home, away) = hal_at_home_and_ann_away();
        // Not the owner: refused by the home, and told whose it is.
        assert_eq!(
            c.manage(away, 1, "ann", Change::Topic(Some("mine".into()))),
            Managed::NotAllowed {
                owner: Some("hal".into())
            }
        );
        // The node's word for who asks is not taken: the home knows its member as ann.
        assert_eq!(
            c.manage(away, 1, "hal", Change::Owner("ann".into())),
            Managed::NotAllowed {
                owner: Some("hal".into())
            }
        );
        assert_eq!(
            c.manage(&home, 1, "hal", Change::TopicOpen(true)),
            Managed::Done
        );
        assert_eq!(
            c.manage(away, 1, "ann", Change::Topic(Some("cake".into()))),
            Managed::Done
        );
        let said = "ann set the topic of #lobby: cake";
        assert_eq!(last_seen(&c, &home, 1), said);
        assert_eq!(last_seen(&c, away, 1), said);
        assert_eq!(c.nodes[c.index(&home)].log.last().unwrap().as_ref(), said);
        // Stored by the home alone, and shown to a member of any node.
        assert_eq!(c.store["lobby"].topic.as_deref(), Some("cake"));
        assert!(c.nodes.iter().all(|n| n.saved.is_empty()));
        match c.manage(away, 1, "ann", Change::Show) {
            Managed::Settings(shown) => {
                assert_eq!(shown.topic.as_deref(), Some("cake"));
                assert!(shown.topic_open);
            }
            other => panic!("{other:?}"),
        }
        // While NATS is away, the home cannot be asked: nothing changes, and the member is told.
        let all = c.names.clone();
        c.view(&all, false);
        assert_eq!(
            c.manage(away, 1, "ann", Change::Topic(None)),
            Managed::Unavailable
        );
        assert_eq!(c.store["lobby"].topic.as_deref(), Some("cake"));
    }

    #[test]
    fn an_answer_that_comes_after_its_asker_stopped_waiting_is_dropped() {
        let (mut c, _home, away) = hal_at_home_and_ann_away();
        let a = c.index(away);
        let answers = |c: &Cluster| {
            c.nodes[a].replies[&1]
                .iter()
                .filter(|r| matches!(r, Reply::Managed(_)))
                .count()
        };
        assert!(matches!(
            c.manage(away, 1, "ann", Change::Show),
            Managed::Settings(_)
        ));
        assert_eq!(answers(&c), 1);
        // The asker gives up (its home did not answer in time) before the answer comes.
        assert!(c.hubs[a].manage(1, "ann".into(), false, Change::Show, &mut c.nodes[a]));
        c.hubs[a].forget_asking(1);
        c.settle();
        assert_eq!(answers(&c), 1, "the late answer is dropped");
        // Nor is an answer taken twice, or one to a question never asked.
        for asked in [0, 1, 2, 99] {
            let late = NodeMsg::Managed {
                session: 1,
                answer: Managed::Done,
                asked,
            };
            c.hubs[a].from_cluster(ClusterIn::AtNode(late), &mut c.nodes[a]);
        }
        assert_eq!(answers(&c), 1);
        // The next question gets its own answer.
        assert!(matches!(
            c.manage(away, 1, "ann", Change::Show),
            Managed::Settings(_)
        ));
        assert_eq!(answers(&c), 2);
    }

    #[test]
    fn an_owner_kicks_bans_mutes_and_invites_members_of_other_nodes() {
        let (mut c, home, away) = hal_at_home_and_ann_away();
        let kick = Change::Kick {
            name: "ANN".into(),
            reason: Some("spam".into()),
        };
        assert_eq!(c.manage(&home, 1, "hal", kick), Managed::Done);
        // She sees the line, then her node takes her off.
        let said = "hal kicked ann from #lobby: spam";
        assert_eq!(last_seen(&c, away, 1), said);
        assert_eq!(last_seen(&c, &home, 1), said);
        let a = c.index(away);
        assert!(c.hubs[a].channel_of(1).is_none());
        assert!(matches!(
            c.nodes[a].replies[&1].last(),
            Some(Reply::ChannelGone)
        ));
        assert_eq!(c.hubs[c.index(&home)].homed_members(), 1);
        // A kick is not a ban: she may come back; a ban takes her off and keeps her out.
        c.join(away, 1, "ann", false);
        assert!(matches!(c.joined(away, 1), Some(JoinOutcome::Joined(_))));
        assert_eq!(
            c.manage(&home, 1, "hal", Change::Ban("ann".into())),
            Managed::Done
        );
        assert!(c.hubs[a].channel_of(1).is_none());
        c.join(away, 1, "ann", false);
        assert_eq!(c.joined(away, 1), Some(JoinOutcome::Banned));
        assert_eq!(
            c.manage(&home, 1, "hal", Change::Unban("ann".into())),
            Managed::Said("ann may join #lobby again.".into())
        );
        c.join(away, 1, "ann", false);
        assert!(matches!(c.joined(away, 1), Some(JoinOutcome::Joined(_))));
        // A mute holds her lines back at the home, and tells her alone.
        let mute = Change::Mute {
            name: "ann".into(),
            minutes: 5,
        };
        assert_eq!(c.manage(&home, 1, "hal", mute), Managed::Done);
        c.say(away, 1, "ann says, \"let me speak\"");
        c.settle();
        assert_eq!(
            last_seen(&c, away, 1),
            "You are muted on #lobby for another 5 minutes; nobody heard that."
        );
        assert_eq!(
            last_seen(&c, &home, 1),
            "hal muted ann on #lobby for 5 minutes."
        );
        assert_eq!(
            c.manage(&home, 1, "hal", Change::Unmute("ann".into())),
            Managed::Done
        );
        c.say(away, 1, "ann says, \"thanks\"");
        c.settle();
        assert_eq!(last_seen(&c, &home, 1), "ann says, \"thanks\"");
        // Invite-only: a member of another node needs an invitation, used once.
        assert_eq!(
            c.manage(&home, 1, "hal", Change::InviteOnly(true)),
            Managed::Done
        );
        c.join(away, 2, "bob", false);
        assert_eq!(c.joined(away, 2), Some(JoinOutcome::InviteOnly));
        assert_eq!(
            c.manage(&home, 1, "hal", Change::Invite("bob".into())),
            Managed::Done
        );
        c.join(away, 2, "bob", false);
        assert!(matches!(c.joined(away, 2), Some(JoinOutcome::Joined(_))));
        c.join(away, 3, "bob", false);
        assert_eq!(c.joined(away, 3), Some(JoinOutcome::InviteOnly));
    }

    #[test]
    fn a_member_kicked_on_another_node_whose_removal_was_lost_is_taken_off_at_its_next_line() {
        let (mut c, home, away) = hal_at_home_and_ann_away();
        c.lose_next_removal = true;
        let kick = Change::Kick {
            name: "ann".into(),
            reason: None,
        };
        assert_eq!(c.manage(&home, 1, "hal", kick), Managed::Done);
        let a = c.index(away);
        assert!(c.hubs[a].channel_of(1).is_some(), "her node did not hear");
        // Her next line finds the home without her; her node announces her again, and hears
        // this time that she was taken off, instead of putting her back.
        c.say(away, 1, "still here?");
        c.settle();
        assert!(c.hubs[a].channel_of(1).is_none());
        assert_eq!(c.hubs[c.index(&home)].homed_members(), 1);
        assert!(!c.seen(&home, 1).iter().any(|l| l.contains("still here?")));
        // A ban holds the same way, and she may not come back.
        c.join(away, 1, "ann", false);
        c.lose_next_removal = true;
        assert_eq!(
            c.manage(&home, 1, "hal", Change::Ban("ann".into())),
            Managed::Done
        );
        c.say(away, 1, "and now?");
        c.settle();
        assert!(c.hubs[a].channel_of(1).is_none());
        assert_eq!(c.hubs[c.index(&home)].homed_members(), 1);
    }

    #[test]
    fn a_home_that_stays_the_home_reads_again_after_nats_and_takes_joins_meanwhile() {
        let (mut c, home, _away) = hal_at_home_and_ann_away();
        let all = c.names.clone();
        c.view(&all, false);
        c.hold_loads = true;
        c.view(&all, true);
        let h = c.index(&home);
        assert_eq!(c.nodes[h].to_load.len(), 1, "it reads again");
        c.join(&home, 2, "hex", false);
        assert!(matches!(c.joined(&home, 2), Some(JoinOutcome::Joined(_))));
        assert_eq!(
            c.manage(&home, 1, "hal", Change::Topic(Some("x".into()))),
            Managed::Unavailable
        );
        c.hold_loads = false;
        c.settle();
        assert_eq!(
            c.manage(&home, 1, "hal", Change::Topic(Some("x".into()))),
            Managed::Done
        );
    }

    #[test]
    fn a_new_home_reads_the_stored_settings_and_takes_no_change_until_it_has() {
        let names = ["n1", "n2", "n3"];
        let first = home_of_lobby(&names);
        let rest: Vec<&str> = names.into_iter().filter(|n| *n != first).collect();
        let mut c = Cluster::new(&names);
        // ann makes the channel on a node that is not its home; bea is on the third.
        c.join(rest[0], 1, "ann", true);
        c.join(rest[1], 1, "bea", false);
        assert_eq!(
            c.manage(rest[1], 1, "bea", Change::Topic(Some("no".into()))),
            Managed::NotAllowed {
                owner: Some("ann".into())
            }
        );
        assert_eq!(
            c.manage(rest[0], 1, "ann", Change::Topic(Some("old news".into()))),
            Managed::Done
        );
        assert_eq!(
            c.manage(rest[0], 1, "ann", Change::Ban("eve".into())),
            Managed::Done
        );
        // The home dies; one of the others takes the channel over. Until its read of the store
        // is answered, a change is refused rather than made and then overwritten.
        c.hold_loads = true;
        let live: Vec<Arc<str>> = rest.iter().map(|n| Arc::from(*n)).collect();
        c.view(&live, true);
        let next = home_of_lobby(&rest);
        assert_eq!(c.hubs[c.index(&next)].homed_channels(), 1);
        assert_eq!(
            c.manage(rest[0], 1, "ann", Change::Topic(Some("new".into()))),
            Managed::Unavailable
        );
        c.hold_loads = false;
        c.settle();
        match c.manage(rest[1], 1, "bea", Change::Show) {
            Managed::Settings(shown) => {
                assert_eq!(shown.owner.as_deref(), Some("ann"));
                assert_eq!(shown.topic.as_deref(), Some("old news"));
                assert_eq!(shown.bans, vec![Arc::<str>::from("eve")]);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            c.manage(rest[0], 1, "ann", Change::Topic(Some("new".into()))),
            Managed::Done
        );
        assert_eq!(
            last_seen(&c, rest[1], 1),
            "ann set the topic of #lobby: new"
        );
        // The ban holds at the new home.
        c.join(rest[1], 2, "eve", false);
        assert_eq!(c.joined(rest[1], 2), Some(JoinOutcome::Banned));
    }

    #[test]
    fn a_channel_made_on_a_node_that_is_not_its_home_is_owned_there_by_its_maker() {
        let names = ["n1", "n2"];
        let home = home_of_lobby(&names);
        let away = names.into_iter().find(|n| *n != home).unwrap();
        let mut c = Cluster::new(&names);
        // The home reads nothing for a channel just made (a read held back would leave its
        // changes refused): it learns the owner from the maker's join.
        c.hold_loads = true;
        c.join(away, 1, "ann", true);
        assert!(matches!(c.joined(away, 1), Some(JoinOutcome::Joined(_))));
        c.join(&home, 1, "hal", false);
        assert_eq!(
            c.manage(&home, 1, "hal", Change::Topic(Some("x".into()))),
            Managed::NotAllowed {
                owner: Some("ann".into())
            }
        );
        assert_eq!(
            c.manage(away, 1, "ann", Change::Topic(Some("x".into()))),
            Managed::Done
        );
    }

    #[test]
    fn a_join_that_reaches_the_home_after_a_deletion_does_not_bring_the_channel_back() {
        let (mut c, home, away) = hal_at_home_and_ann_away();
        let (h, a) = (c.index(&home), c.index(away));
        // The home (and the store) have the deletion; the other node has not heard yet.
        c.store.clear();
        let deleted = crate::cluster::wire::ChannelDeleted {
            channel: "lobby".into(),
            by: "root".into(),
        };
        c.hubs[h].from_cluster(ClusterIn::Deleted(deleted.clone()), &mut c.nodes[h]);
        c.settle();
        assert_eq!(c.hubs[h].homed_channels(), 0);
        // A join there asks the home, which opens the channel for it, reads the store, finds
        // nothing and forgets it again; asked again a second later, the same.
        c.join(away, 2, "bob", false);
        assert_eq!(c.hubs[h].homed_channels(), 0);
        c.hubs[a].from_cluster(ClusterIn::Tick, &mut c.nodes[a]);
        c.settle();
        assert_eq!(c.hubs[h].homed_channels(), 0);
        assert_eq!(c.joined(away, 2), None, "still waiting");
        // Once the other node hears, the join is told there is no such channel.
        c.hubs[a].from_cluster(ClusterIn::Deleted(deleted), &mut c.nodes[a]);
        c.settle();
        assert_eq!(c.joined(away, 2), Some(JoinOutcome::NoSuchChannel));
        assert_eq!(
            c.seen(away, 1).last().unwrap(),
            "#lobby was deleted by root."
        );
    }

    #[test]
    fn a_deleted_channel_is_forgotten_by_every_node_whose_members_are_told() {
        let (mut c, home, away) = hal_at_home_and_ann_away();
        let a = c.index(away);
        let lobby = ChannelName::new("lobby").unwrap();
        // The admin is a member of the node that is not the home.
        c.hubs[a].delete_channel(2, lobby.clone(), "root".into(), &mut c.nodes[a]);
        c.settle();
        assert!(matches!(
            c.nodes[a].replies[&2].last(),
            Some(Reply::Deleted(Some(name))) if name.as_str() == "lobby"
        ));
        let said = "#lobby was deleted by root.";
        for node in [&*home, away] {
            assert_eq!(last_seen(&c, node, 1), said, "{node}");
            let i = c.index(node);
            assert!(c.hubs[i].channel_of(1).is_none(), "{node}");
            assert_eq!(c.hubs[i].homed_channels(), 0, "{node}");
            assert!(c.listening[i].is_empty(), "{node} stopped listening to it");
        }
        // Logged once, at the home.
        assert_eq!(c.nodes[c.index(&home)].log.last().unwrap().as_ref(), said);
        assert!(c.nodes[a].log.is_empty());
        // The nameless record left behind has no home, whatever the views say.
        let all = c.names.clone();
        for live in [&all[..1], &all[1..], &all[..]] {
            c.view(live, true);
            c.view(live, false);
            c.view(live, true);
        }
        c.view(&all, true);
        for hub in &c.hubs {
            assert_eq!(hub.homed_channels(), 0);
        }
        // Made again, it is a new channel on every node.
        c.join(away, 1, "ann", true);
        c.join(&home, 1, "hal", false);
        c.say(away, 1, "fresh");
        c.settle();
        assert_eq!(last_seen(&c, &home, 1), "fresh");
    }
}
