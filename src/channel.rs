//! The home-side state of one chat channel: who is in it, grouped by the shard that holds each member's
//! connection, and how full it is.
//!
//! Members are grouped by shard because that is how lines travel: the home sends one delivery per shard
//! that has members, never one per member, and the member's shard puts the line in each local queue.
//!
//! In a cluster the same record also stands on nodes that are not the channel's home: there it
//! relays for that node's members ([`Role::Replica`]), and at the home it also counts the members of
//! other nodes, grouped by node, since the home publishes each line once for all of them.

use std::collections::HashMap;
use std::sync::Arc;

use shard_proto::{ChannelId, ChannelName, SessionId, ShardId};

/// One channel as its home shard keeps it.
#[derive(Debug)]
pub struct Channel {
    /// Where the channel lives.
    pub id: ChannelId,
    /// Its name.
    pub name: ChannelName,
    /// Most members at once; 0 means no limit.
    capacity: u32,
    /// Members by shard: session key → user name.
    members: Vec<HashMap<u64, Arc<str>>>,
    /// Members on other nodes of a cluster (this node being the home): node → token → user name.
    remote: HashMap<Arc<str>, HashMap<u64, Arc<str>>>,
    /// Total members, local and remote, kept so capacity checks and counts cost nothing.
    len: u32,
    /// Whether this node orders the channel or relays for it.
    pub role: Role,
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
    /// This node's number for each local member, by which the home knows it.
    pub tokens: HashMap<SessionId, u64>,
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
            tokens: HashMap::new(),
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
            members: (0..shards).map(|_| HashMap::new()).collect(),
            remote: HashMap::new(),
            len: 0,
            role: Role::Home { epoch: 0, seq: 0 },
        }
    }

    /// Members on this node alone.
    pub fn local_len(&self) -> u32 {
        self.len - self.remote.values().map(|m| m.len() as u32).sum::<u32>()
    }

    /// Whether members of other nodes are in (this node being the home).
    pub fn has_remote(&self) -> bool {
        !self.remote.is_empty()
    }

    /// Whether member `token` of `node` is in.
    pub fn contains_remote(&self, node: &str, token: u64) -> bool {
        self.remote
            .get(node)
            .is_some_and(|m| m.contains_key(&token))
    }

    /// Adds member `token` of `node`; false if it was one already.
    pub fn add_remote(&mut self, node: &Arc<str>, token: u64, user: Arc<str>) -> bool {
        let members = self.remote.entry(node.clone()).or_default();
        if members.insert(token, user).is_some() {
            return false;
        }
        self.len += 1;
        true
    }

    /// Removes member `token` of `node`, returning its user name.
    pub fn remove_remote(&mut self, node: &str, token: u64) -> Option<Arc<str>> {
        let members = self.remote.get_mut(node)?;
        let user = members.remove(&token)?;
        if members.is_empty() {
            self.remote.remove(node);
        }
        self.len -= 1;
        Some(user)
    }

    /// Removes every member of the nodes `keep` refuses, returning their user names.
    pub fn remove_nodes(&mut self, keep: impl Fn(&str) -> bool) -> Vec<Arc<str>> {
        let mut gone = Vec::new();
        self.remote.retain(|node, members| {
            if keep(node) {
                return true;
            }
            gone.extend(members.drain().map(|(_, user)| user));
            false
        });
        self.len -= gone.len() as u32;
        gone
    }

    /// This node's members: (session, user name).
    pub fn local_members(&self) -> impl Iterator<Item = (SessionId, &Arc<str>)> + '_ {
        self.members.iter().enumerate().flat_map(|(shard, m)| {
            m.iter().map(move |(&key, user)| {
                let session = SessionId {
                    shard: ShardId(shard as u16),
                    key,
                };
                (session, user)
            })
        })
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

    /// Whether `session` is a member.
    pub fn contains(&self, session: SessionId) -> bool {
        self.members
            .get(session.shard.index())
            .is_some_and(|m| m.contains_key(&session.key))
    }

    /// Adds a member; false if it was one already.
    pub fn add(&mut self, session: SessionId, user: Arc<str>) -> bool {
        let Some(shard) = self.members.get_mut(session.shard.index()) else {
            return false;
        };
        if shard.insert(session.key, user).is_some() {
            return false;
        }
        self.len += 1;
        true
    }

    /// Removes a member, returning its user name; `None` if it was not one.
    pub fn remove(&mut self, session: SessionId) -> Option<Arc<str>> {
        let shard = self.members.get_mut(session.shard.index())?;
        let user = shard.remove(&session.key)?;
        if shard.is_empty() && shard.capacity() > 16 {
            *shard = HashMap::new();
        }
        self.len -= 1;
        Some(user)
    }

    /// Every member, in no particular order (for checks in tests).
    #[cfg(test)]
    pub(crate) fn members(&self) -> impl Iterator<Item = SessionId> + '_ {
        self.members.iter().enumerate().flat_map(|(shard, m)| {
            m.keys().map(move |&key| SessionId {
                shard: ShardId(shard as u16),
                key,
            })
        })
    }

    /// Whether any member's connection is on `shard`.
    pub fn has_members_on(&self, shard: ShardId) -> bool {
        self.members
            .get(shard.index())
            .is_some_and(|m| !m.is_empty())
    }

    /// Members' names, sorted, each once (a user logged in twice is listed once).
    pub fn names(&self) -> Vec<Arc<str>> {
        let mut names: Vec<Arc<str>> = self
            .members
            .iter()
            .chain(self.remote.values())
            .flat_map(|m| m.values().cloned())
            .collect();
        // Usernames are ASCII (see `accounts::validate_username`), so ASCII case folding, byte by
        // byte, orders them without a lower-cased copy per comparison.
        names.sort_unstable_by(|a, b| folded(a).cmp(folded(b)).then_with(|| a.cmp(b)));
        names.dedup();
        names
    }
}

/// A name's bytes with ASCII letters lower-cased, for comparing without a copy.
fn folded(name: &str) -> impl Iterator<Item = u8> + '_ {
    name.bytes().map(|b| b.to_ascii_lowercase())
}

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
