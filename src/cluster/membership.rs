//! Which nodes are alive: every node announces itself once a second, and a node not heard from for
//! [`NODE_TIMEOUT`] is gone. Pure: time is an argument, so the rules are tested without a clock.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// How often a node announces itself.
pub const ANNOUNCE_EVERY: Duration = Duration::from_secs(1);

/// How long a node may go unheard before the others take it for gone.
pub const NODE_TIMEOUT: Duration = Duration::from_secs(3);

/// Longest node name: names travel in every announcement and weigh every channel's placement.
pub const MAX_NODE_NAME: usize = 64;

/// The nodes heard from lately, and when each was last heard.
#[derive(Debug, Default)]
pub struct Membership {
    last_heard: BTreeMap<String, Instant>,
}

/// What changed when the membership was brought up to date.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Changes {
    /// Nodes heard from for the first time (or again, after they were gone).
    pub came: Vec<String>,
    /// Nodes not heard from for [`NODE_TIMEOUT`].
    pub went: Vec<String>,
}

impl Membership {
    /// A membership that knows only `me`.
    pub fn new(me: &str, now: Instant) -> Membership {
        let mut m = Membership::default();
        m.last_heard.insert(me.to_string(), now);
        m
    }

    /// Records an announcement from `node` at `now`; true if the node is new. Names that are empty,
    /// too long or hold control characters are ignored (false).
    pub fn heard(&mut self, node: &str, now: Instant) -> bool {
        if !valid_node_name(node) {
            return false;
        }
        self.last_heard.insert(node.to_string(), now).is_none()
    }

    /// Forgets nodes not heard from since `now - NODE_TIMEOUT`, except `me`; returns them.
    pub fn expire(&mut self, me: &str, now: Instant) -> Vec<String> {
        let mut gone = Vec::new();
        self.last_heard.retain(|node, &mut at| {
            let alive = node == me || now.saturating_duration_since(at) < NODE_TIMEOUT;
            if !alive {
                gone.push(node.clone());
            }
            alive
        });
        gone
    }

    /// Counts every known node as heard at `now`: after NATS was away, when nobody could be heard,
    /// each gets the full timeout to be heard again.
    pub fn heard_all_again(&mut self, now: Instant) {
        for at in self.last_heard.values_mut() {
            *at = now;
        }
    }

    /// The live nodes, in name order.
    pub fn nodes(&self) -> impl Iterator<Item = &str> {
        self.last_heard.keys().map(String::as_str)
    }

    /// How many nodes are live.
    pub fn len(&self) -> usize {
        self.last_heard.len()
    }

    /// Whether no node is live (never true once made with [`Membership::new`]).
    pub fn is_empty(&self) -> bool {
        self.last_heard.is_empty()
    }
}

/// Whether `name` may name a node: 1 to [`MAX_NODE_NAME`] bytes, printable, no spaces.
pub fn valid_node_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= MAX_NODE_NAME && name.chars().all(|c| c.is_ascii_graphic())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nodes_come_when_heard_and_go_when_silent_for_the_timeout() {
        let t0 = Instant::now();
        let mut m = Membership::new("me", t0);
        assert!(m.heard("other", t0));
        assert!(!m.heard("other", t0 + Duration::from_secs(1)));
        assert_eq!(m.nodes().collect::<Vec<_>>(), ["me", "other"]);
        // Heard at 1 s: still there at 3.9 s, gone at 4 s.
        assert!(m.expire("me", t0 + Duration::from_millis(3900)).is_empty());
        assert_eq!(m.expire("me", t0 + Duration::from_secs(4)), ["other"]);
        // A node never expires itself, however long since it heard its own announcement.
        assert!(m.expire("me", t0 + Duration::from_secs(100)).is_empty());
        assert_eq!(m.len(), 1);
        // It may come back.
        assert!(m.heard("other", t0 + Duration::from_secs(101)));
    }

    #[test]
    fn bad_names_are_not_nodes() {
        let t0 = Instant::now();
        let mut m = Membership::new("me", t0);
        for bad in ["", "a b", "tab\there", &"x".repeat(65), "é"] {
            assert!(!m.heard(bad, t0), "{bad:?}");
        }
        assert_eq!(m.len(), 1);
        assert!(valid_node_name(&"x".repeat(64)));
    }
}
