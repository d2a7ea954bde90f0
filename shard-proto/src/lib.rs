//! The vocabulary that ringtalk's shards share: identities, and (with the channels work) the typed messages
//! that cross the SPSC rings between shards.
//!
//! Why a crate of its own: everything here must mean the same on every shard and be testable without an
//! executor, a socket or a thread. Keeping glommio and I/O out of this crate makes that a compile-time fact
//! rather than a convention: the shard logic built on these types can be stepped by hand in tests.
//!
//! The `serde` feature (the server turns it on) lets the few messages that also cross between
//! nodes of a cluster (a channel's settings asked for and the answer, what a member let in from
//! another node is shown first, a user online on another node) be encoded as they are.

#![deny(missing_docs)]

use std::fmt;
use std::sync::Arc;

mod channel_name;
mod messages;

pub use channel_name::{
    home_of, home_of_key, home_of_user, ChannelName, ChannelNameError, MAX_CHANNEL_NAME_CHARS,
};
pub use messages::{
    Change, JoinOutcome, Kill, ListEntry, Managed, OnlineUser, SessionFacts, SettingsShown,
    ShardMsg, Tell, TellOrigin, ToHome, ToMember, ToUser, Told, Traveller, UserElsewhere, Welcome,
};

/// The index of a shard: one glommio executor, pinned to one CPU. Shards are numbered `0..shards`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ShardId(pub u16);

impl ShardId {
    /// The shard's index as a `usize`, for indexing per-shard tables.
    pub fn index(self) -> usize {
        usize::from(self.0)
    }
}

impl fmt::Display for ShardId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "shard {}", self.0)
    }
}

/// One connection, anywhere in the server: the shard that owns its socket, and a key unique on that shard
/// for the life of the process (keys are never reused, so a stale id can never reach a newer session).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionId {
    /// The shard whose executor owns the connection.
    pub shard: ShardId,
    /// Counts up from 1 on each shard.
    pub key: u64,
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.shard.0, self.key)
    }
}

/// A channel, anywhere in the server: its home shard and its index there. A channel's record is never
/// removed while the server runs (one an admin deletes stays, emptied, with no name leading to it),
/// so an id stays valid: at worst it leads to a channel with nobody in it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChannelId {
    /// The shard that orders the channel's messages (see [`home_of`]).
    pub home: ShardId,
    /// Index among the channels of that home.
    pub index: u32,
}

/// A line of chat as members see it, shared by every queue it is put in (never copied per member).
pub type Line = Arc<str>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_ids_differ_by_shard_and_key() {
        let a = SessionId {
            shard: ShardId(0),
            key: 1,
        };
        let b = SessionId {
            shard: ShardId(1),
            key: 1,
        };
        let c = SessionId {
            shard: ShardId(0),
            key: 2,
        };
        assert_ne!(a, b);
        assert_ne!(a, c);
        assert_eq!(a.to_string(), "0/1");
        assert_eq!(ShardId(3).index(), 3);
    }
}
