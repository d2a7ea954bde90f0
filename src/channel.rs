//! The home-side state of one chat channel: who is in it, grouped by the shard that holds each member's
//! connection, and how full it is.
//!
//! Members are kept sorted by shard because that is how lines travel: the home sends one delivery per
//! shard that has members, never one per member, and the member's shard puts the line in each local
//! queue. They are one short sorted list rather than a table per shard: most channels have a few
//! members, and in a cluster a node keeps a record of every channel its users are in (the tables
//! made an idle user cost 0.13 kB more on a cluster node, and 0.07 kB more on a node alone).
//!
//! In a cluster the same record also stands on nodes that are not the channel's home: there it
//! relays for that node's members ([`Role::Replica`]), and at the home it also counts the members of
//! other nodes, grouped by node, since the home publishes each line once for all of them.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use shard_proto::{ChannelId, ChannelName, Line, SessionId, ShardId};

/// One channel as its home shard keeps it.
#[derive(Debug)]
pub struct Channel {
    /// Where the channel lives.
    pub id: ChannelId,
    /// Its name.
    pub name: ChannelName,
    /// Most members at once; 0 means no limit.
    capacity: u32,
    /// This node's members, sorted by session (so by shard first): one short list rather than a
    /// table per shard, since most channels are small and a node has a record of every channel.
    members: Vec<Member>,
    /// Shards in this node: a member on any other is refused.
    shards: u16,
    /// Members on other nodes of a cluster (this node being the home), sorted by (node, token):
    /// one short list, like the local members.
    remote: Vec<RemoteMember>,
    /// Total members, local and remote, kept so capacity checks and counts cost nothing.
    len: u32,
    /// Whether this node orders the channel or relays for it.
    pub role: Role,
    /// At its home, the last lines said in it, oldest first, for those who join (at most the
    /// hub's `--history-lines`; no allocation until something is said).
    pub history: VecDeque<Line>,
    /// What its owner decides, as stored (at its home; a replica's is left empty).
    pub settings: Box<Settings>,
}

/// What a channel's owner decides, kept with the channel at its home and stored with it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Settings {
    /// Its owner's name, as the account spells it (`None`: nobody's; its owner has gone).
    pub owner: Option<Arc<str>>,
    /// Its topic.
    pub topic: Option<Arc<str>>,
    /// Whether anyone on it may set the topic, not only the owner.
    pub topic_open: bool,
    /// Whether only its owner and those invited may join.
    pub invite_only: bool,
    /// Members it may have, set by its owner (0: the server's `--channel-capacity`).
    pub capacity: u32,
    /// Users who may not join, as the owner named them (ASCII case ignored).
    pub bans: Vec<Arc<str>>,
    /// Members whose lines are refused, each until when (Unix seconds). Kept in memory only.
    pub mutes: Vec<(Arc<str>, u32)>,
    /// Users invited to join once, even while the channel is invite-only. Kept in memory only.
    pub invites: Vec<Arc<str>>,
    /// In a cluster, a node that has just become the channel's home reads the stored settings
    /// again (another node may have changed them): until they come, changes are refused.
    pub loading: bool,
    /// While loading, joins wait too ("try again"): this node has just become the home, and its
    /// record may lack bans. A home that stays the home and reads again (it reconnected) keeps
    /// taking joins by what it knows.
    pub joins_wait: bool,
    /// Members of other nodes lately taken off (kicked or banned), by (node, token), at most
    /// [`MAX_REMOVED`], newest last: their node may still announce them (it had not yet heard they
    /// were taken off, or never did), and is told again instead. Kept in memory only.
    pub removed: Vec<(Arc<str>, u64)>,
}

/// Members of other nodes a channel remembers having taken off (see [`Settings::removed`]).
pub const MAX_REMOVED: usize = 64;

/// Whether `list` names `user` (ASCII case ignored); where.
fn find_name(list: &[Arc<str>], user: &str) -> Option<usize> {
    list.iter().position(|n| n.eq_ignore_ascii_case(user))
}

impl Settings {
    /// The settings as the database gives them.
    pub fn from_stored(stored: crate::accounts::ChannelSettings) -> Settings {
        let text = |s: String| -> Arc<str> { s.into() };
        Settings {
            owner: stored.owner.map(text),
            topic: Some(stored.topic).filter(|t| !t.is_empty()).map(text),
            topic_open: stored.topic_open,
            invite_only: stored.invite_only,
            capacity: stored.capacity,
            bans: stored.bans.into_iter().map(text).collect(),
            mutes: Vec::new(),
            invites: Vec::new(),
            loading: false,
            joins_wait: false,
            removed: Vec::new(),
        }
    }

    /// The settings as the database takes them.
    pub fn to_stored(&self) -> crate::accounts::ChannelSettings {
        crate::accounts::ChannelSettings {
            owner: self.owner.as_deref().map(str::to_string),
            topic: self.topic.as_deref().unwrap_or_default().to_string(),
            topic_open: self.topic_open,
            invite_only: self.invite_only,
            capacity: self.capacity,
            bans: self.bans.iter().map(|b| b.to_string()).collect(),
        }
    }

    /// Whether `user` is banned.
    pub fn is_banned(&self, user: &str) -> bool {
        find_name(&self.bans, user).is_some()
    }

    /// Whether `user` owns the channel.
    pub fn is_owner(&self, user: &str) -> bool {
        self.owner
            .as_deref()
            .is_some_and(|o| o.eq_ignore_ascii_case(user))
    }

    /// Whether `user` may join: not banned, and, if the channel is invite-only, its owner or
    /// invited (an invitation is used up).
    pub fn may_join(&mut self, user: &str) -> Result<(), shard_proto::JoinOutcome> {
        if self.is_banned(user) {
            return Err(shard_proto::JoinOutcome::Banned);
        }
        if self.invite_only && !self.is_owner(user) {
            let at = find_name(&self.invites, user).ok_or(shard_proto::JoinOutcome::InviteOnly)?;
            self.invites.swap_remove(at);
        }
        Ok(())
    }

    /// How many whole minutes (rounded up) `user` is still muted for at `now`; forgets mutes
    /// that have ended.
    pub fn muted_for(&mut self, user: &str, now: u32) -> Option<u32> {
        self.mutes.retain(|&(_, until)| until > now);
        let &(_, until) = self
            .mutes
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(user))?;
        Some((until - now).div_ceil(60))
    }

    /// Whether `user` (an admin if `admin`) may do what only the owner may.
    pub fn may_manage(&self, user: &str, admin: bool) -> bool {
        admin || self.is_owner(user)
    }
}

/// This node's part in a channel.
#[derive(Debug)]
pub enum Role {
    /// This node puts the channel's lines in order (always, outside a cluster). In a cluster,
    /// `epoch` is when it became the home and `seq` counts the events it has published since.
    Home {
        /// When this node became the home (ms since the Unix epoch; 0 outside a cluster).
        epoch: u64,
        /// Events published in this epoch.
        seq: u64,
    },
    /// Another node is the home: this record keeps this node's members and relays for them.
    Replica(Box<Replica>),
}

/// A channel as seen from a node that is not its home.
#[derive(Debug)]
pub struct Replica {
    /// The home node.
    pub node: Arc<str>,
    /// The home's epoch and the next sequence number expected from it; `None` until the first
    /// event (and again after this node stopped listening).
    pub synced: Option<(u64, u64)>,
    /// Joins asked of the home and not yet answered: token → (session, user, created here).
    pub pending: HashMap<u64, (SessionId, Arc<str>, bool)>,
    /// Whether this node listens to the channel's events.
    pub subscribed: bool,
}

impl Replica {
    /// A replica for the channel homed on `node`, with no members yet.
    pub fn new(node: Arc<str>) -> Replica {
        Replica {
            node,
            synced: None,
            pending: HashMap::new(),
            subscribed: false,
        }
    }
}

impl Channel {
    /// An empty channel for a server of `shards` shards.
    pub fn new(id: ChannelId, name: ChannelName, capacity: u32, shards: usize) -> Channel {
        Channel {
            id,
            name,
            capacity,
            members: Vec::new(),
            shards: u16::try_from(shards).unwrap_or(u16::MAX),
            remote: Vec::new(),
            len: 0,
            role: Role::Home { epoch: 0, seq: 0 },
            history: VecDeque::new(),
            settings: Box::default(),
        }
    }

    /// Members on this node alone.
    pub fn local_len(&self) -> u32 {
        self.members.len() as u32
    }

    /// Whether members of other nodes are in (this node being the home).
    pub fn has_remote(&self) -> bool {
        !self.remote.is_empty()
    }

    fn find_remote(&self, node: &str, token: u64) -> Result<usize, usize> {
        self.remote
            .binary_search_by(|m| (&*m.node, m.token).cmp(&(node, token)))
    }

    /// Whether member `token` of `node` is in.
    pub fn contains_remote(&self, node: &str, token: u64) -> bool {
        self.find_remote(node, token).is_ok()
    }

    /// Adds member `token` of `node`; false if it was one already.
    pub fn add_remote(&mut self, node: &Arc<str>, token: u64, user: Arc<str>) -> bool {
        let Err(at) = self.find_remote(node, token) else {
            return false;
        };
        let member = RemoteMember {
            node: node.clone(),
            token,
            user,
        };
        self.remote.insert(at, member);
        self.len += 1;
        true
    }

    /// Removes member `token` of `node`, returning its user name.
    pub fn remove_remote(&mut self, node: &str, token: u64) -> Option<Arc<str>> {
        let at = self.find_remote(node, token).ok()?;
        let member = self.remote.remove(at);
        if self.remote.capacity() > 16 && self.remote.len() * 4 < self.remote.capacity() {
            self.remote.shrink_to_fit();
        }
        self.len -= 1;
        Some(member.user)
    }

    /// Removes every member of the nodes `keep` refuses, returning their user names.
    pub fn remove_nodes(&mut self, keep: impl Fn(&str) -> bool) -> Vec<Arc<str>> {
        let mut gone = Vec::new();
        self.remote.retain(|m| {
            if keep(&m.node) {
                return true;
            }
            gone.push(m.user.clone());
            false
        });
        self.len -= gone.len() as u32;
        gone
    }

    /// This node's members with their tokens (a replica's number for each, by which the home knows
    /// it), giving a token from `next` to each that has none yet.
    pub fn tokens(&mut self, mut next: impl FnMut() -> u64) -> Vec<(u64, Arc<str>)> {
        self.members
            .iter_mut()
            .map(|m| {
                if m.token == NO_TOKEN {
                    m.token = next();
                }
                (m.token, m.user.clone())
            })
            .collect()
    }

    /// A local member's token at the channel's home node (see [`Channel::tokens`]).
    pub fn token_of(&self, session: SessionId) -> Option<u64> {
        let at = self.find(session).ok()?;
        Some(self.members[at].token).filter(|&t| t != NO_TOKEN)
    }

    /// The local member the channel's home knows by `token`.
    pub fn session_of_token(&self, token: u64) -> Option<SessionId> {
        if token == NO_TOKEN {
            return None;
        }
        self.members
            .iter()
            .find(|m| m.token == token)
            .map(|m| m.session)
    }

    /// The user name member `token` of `node` joined as (this node being the home).
    pub fn remote_user(&self, node: &str, token: u64) -> Option<&Arc<str>> {
        let at = self.find_remote(node, token).ok()?;
        Some(&self.remote[at].user)
    }

    /// Members of other nodes logged in as `user` (ASCII case ignored): (node, token, the name
    /// as their account spells it).
    pub fn remote_of(&self, user: &str) -> Vec<(Arc<str>, u64, Arc<str>)> {
        self.remote
            .iter()
            .filter(|m| m.user.eq_ignore_ascii_case(user))
            .map(|m| (m.node.clone(), m.token, m.user.clone()))
            .collect()
    }

    /// Members now.
    pub fn len(&self) -> u32 {
        self.len
    }

    /// True when nobody is in the channel.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// True when one more member would exceed the capacity.
    pub fn is_full(&self) -> bool {
        self.capacity != 0 && self.len >= self.capacity
    }

    fn find(&self, session: SessionId) -> Result<usize, usize> {
        self.members.binary_search_by_key(&session, |m| m.session)
    }

    /// Whether `session` is a member.
    pub fn contains(&self, session: SessionId) -> bool {
        self.find(session).is_ok()
    }

    /// Adds a member; false if it was one already, or its shard is not one of this node's.
    pub fn add(&mut self, session: SessionId, user: Arc<str>) -> bool {
        self.add_with_token(session, user, NO_TOKEN)
    }

    /// Adds a member that the channel's home knows by `token` (see [`Channel::tokens`]).
    pub fn add_with_token(&mut self, session: SessionId, user: Arc<str>, token: u64) -> bool {
        if session.shard.0 >= self.shards {
            return false;
        }
        let Err(at) = self.find(session) else {
            return false;
        };
        let member = Member {
            session,
            user,
            token,
        };
        self.members.insert(at, member);
        self.len += 1;
        true
    }

    /// Removes a member, returning its user name; `None` if it was not one.
    pub fn remove(&mut self, session: SessionId) -> Option<Arc<str>> {
        self.remove_with_token(session).map(|(user, _)| user)
    }

    /// Removes a member, returning its user name and its token (0 if it had none).
    pub fn remove_with_token(&mut self, session: SessionId) -> Option<(Arc<str>, u64)> {
        let at = self.find(session).ok()?;
        let member = self.members.remove(at);
        if self.members.capacity() > 16 && self.members.len() * 4 < self.members.capacity() {
            self.members.shrink_to_fit();
        }
        self.len -= 1;
        Some((member.user, member.token))
    }

    /// Every member on this node, in session order (for checks in tests).
    #[cfg(test)]
    pub(crate) fn members(&self) -> impl Iterator<Item = SessionId> + '_ {
        self.members.iter().map(|m| m.session)
    }

    /// Whether any member's connection is on `shard`.
    pub fn has_members_on(&self, shard: ShardId) -> bool {
        let first = self.members.partition_point(|m| m.session.shard < shard);
        self.members
            .get(first)
            .is_some_and(|m| m.session.shard == shard)
    }

    /// This node's members logged in as `user` (ASCII case ignored), with the name as their
    /// account spells it.
    pub fn sessions_of(&self, user: &str) -> Vec<(SessionId, Arc<str>)> {
        self.members
            .iter()
            .filter(|m| m.user.eq_ignore_ascii_case(user))
            .map(|m| (m.session, m.user.clone()))
            .collect()
    }

    /// The user name member `session` joined as.
    pub fn user_of(&self, session: SessionId) -> Option<&Arc<str>> {
        let at = self.find(session).ok()?;
        Some(&self.members[at].user)
    }

    /// The most members it takes (0: no limit).
    pub fn capacity(&self) -> u32 {
        self.capacity
    }

    /// The most members it takes from now on (0: no limit); those already in stay.
    pub fn set_capacity(&mut self, capacity: u32) {
        self.capacity = capacity;
    }

    /// Members' names, sorted, each once (a user logged in twice is listed once).
    pub fn names(&self) -> Vec<Arc<str>> {
        let mut names: Vec<Arc<str>> = self
            .members
            .iter()
            .map(|m| m.user.clone())
            .chain(self.remote.iter().map(|m| m.user.clone()))
            .collect();
        // In `/who *`'s order: ASCII case folded, without a lower-cased copy per comparison.
        names.sort_unstable_by(|a, b| crate::hub::by_name(a, b));
        names.dedup();
        names
    }
}

/// A member on this node.
#[derive(Debug)]
struct Member {
    session: SessionId,
    user: Arc<str>,
    /// A replica's number for the member at the channel's home; [`NO_TOKEN`] until it needs one.
    token: u64,
}

/// A member on another node, counted at the channel's home.
#[derive(Debug)]
struct RemoteMember {
    node: Arc<str>,
    /// Its node's number for it.
    token: u64,
    user: Arc<str>,
}

/// No token: tokens count up from 1.
const NO_TOKEN: u64 = 0;

#[cfg(test)]
mod tests {
    use super::*;

    fn sid(shard: u16, key: u64) -> SessionId {
        SessionId {
            shard: ShardId(shard),
            key,
        }
    }

    fn channel(capacity: u32) -> Channel {
        let id = ChannelId {
            home: ShardId(0),
            index: 0,
        };
        Channel::new(id, ChannelName::new("lobby").unwrap(), capacity, 2)
    }

    #[test]
    fn membership_and_capacity() {
        let mut c = channel(2);
        assert!(c.add(sid(0, 1), "bob".into()));
        assert!(!c.add(sid(0, 1), "bob".into()), "joining twice adds once");
        assert!(!c.is_full());
        assert!(c.add(sid(1, 1), "alice".into()));
        assert!(c.is_full());
        assert_eq!(c.len(), 2);
        assert!(c.has_members_on(ShardId(0)) && c.has_members_on(ShardId(1)));
        assert_eq!(c.remove(sid(0, 1)).as_deref(), Some("bob"));
        assert_eq!(c.remove(sid(0, 1)), None);
        assert!(!c.has_members_on(ShardId(0)));
        assert!(!c.is_full());
        assert_eq!(c.remove(sid(9, 1)), None, "an unknown shard is no member");
    }

    #[test]
    fn members_are_found_by_shard_and_keep_their_tokens_when_they_move() {
        let mut c = channel(0);
        assert!(!c.has_members_on(ShardId(0)) && !c.has_members_on(ShardId(1)));
        assert!(c.add(sid(1, 5), "bob".into()));
        assert!(c.add(sid(1, 2), "amy".into()));
        assert!(!c.add(sid(2, 1), "eve".into()), "no shard 2 on a node of 2");
        assert!(!c.has_members_on(ShardId(0)) && c.has_members_on(ShardId(1)));
        // Tokens are given once, to those without one, and kept.
        let mut next = 10;
        let given = c.tokens(|| {
            next += 1;
            next
        });
        assert_eq!(given.len(), 2);
        assert_eq!(c.tokens(|| unreachable!("everyone has one")), given);
        let token = c.token_of(sid(1, 5)).unwrap();
        // Moving to shard 0: out under one id, in under another, with the same token.
        let (user, kept) = c.remove_with_token(sid(1, 5)).unwrap();
        assert!(c.add_with_token(sid(0, 9), user, kept));
        assert_eq!(c.token_of(sid(0, 9)), Some(token));
        assert_eq!(c.token_of(sid(1, 5)), None);
        assert!(c.has_members_on(ShardId(0)) && c.has_members_on(ShardId(1)));
        assert_eq!(c.len(), 2);
        assert!(c.add(sid(0, 3), "cy".into()));
        assert_eq!(
            c.token_of(sid(0, 3)),
            None,
            "a member at a home has no token"
        );
    }

    #[test]
    fn members_of_other_nodes_count_and_go_with_their_node() {
        let mut c = channel(3);
        let (a, b): (Arc<str>, Arc<str>) = ("node-a".into(), "node-b".into());
        assert!(c.add(sid(0, 1), "hal".into()));
        assert!(c.add_remote(&a, 7, "ann".into()));
        assert!(!c.add_remote(&a, 7, "ann".into()), "twice is once");
        assert!(c.add_remote(&b, 7, "bea".into()), "tokens are per node");
        assert!(c.is_full() && c.has_remote());
        assert_eq!((c.len(), c.local_len()), (3, 1));
        assert!(c.contains_remote("node-b", 7) && !c.contains_remote("node-b", 8));
        let names = c.names();
        assert_eq!(
            names.iter().map(|n| &**n).collect::<Vec<_>>(),
            ["ann", "bea", "hal"]
        );
        assert_eq!(c.remove_nodes(|n| n != "node-a"), [Arc::<str>::from("ann")]);
        assert_eq!(c.remove_remote("node-b", 7).as_deref(), Some("bea"));
        assert_eq!(c.remove_remote("node-b", 7), None);
        assert!(!c.has_remote());
        assert_eq!(c.len(), 1);
    }

    #[test]
    fn zero_capacity_is_unlimited() {
        let mut c = channel(0);
        for k in 0..1000 {
            assert!(c.add(sid((k % 2) as u16, k), format!("u{k}").into()));
        }
        assert!(!c.is_full());
    }

    #[test]
    fn names_are_sorted_and_unique() {
        let mut c = channel(0);
        c.add(sid(0, 1), "bob".into());
        c.add(sid(1, 2), "Alice".into());
        c.add(sid(1, 3), "bob".into());
        c.add(sid(0, 4), "Carl".into());
        let names = c.names();
        let names: Vec<&str> = names.iter().map(|n| &**n).collect();
        // Ignoring case: a plain byte order would put "Carl" before "bob".
        assert_eq!(names, ["Alice", "bob", "Carl"]);
    }
}
