//! Which nodes are alive: every node announces itself once a second, and a node not heard from for
//! [`NODE_TIMEOUT`] is gone. Pure: time is an argument, so the rules are tested without a clock.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// How often a node announces itself.
pub const ANNOUNCE_EVERY: Duration = Duration::from_secs(1);

/// How long a node may go unheard before the others take it for gone.
pub const NODE_TIMEOUT: Duration = Duration::from_secs(3);

/// How long a node must have been silent here too before another node's word that it is gone is
/// taken: a node that every node finds gone at its own next tick is gone everywhere within
/// moments of the first, instead of up to a tick apart, while a node still heard is kept.
pub const GONE_HINT_SILENCE: Duration = Duration::from_millis(1500);

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

    /// Forgets `node` because another node found it gone, unless this node has heard it within
    /// [`GONE_HINT_SILENCE`] (then it is alive as far as this node knows, and stays); true if it
    /// was forgotten. Never forgets `me`.
    pub fn forget_if_silent(&mut self, me: &str, node: &str, now: Instant) -> bool {
        let silent = self
            .last_heard
            .get(node)
            .is_some_and(|&at| now.saturating_duration_since(at) >= GONE_HINT_SILENCE);
        if node == me || !silent {
            return false;
        }
        self.last_heard.remove(node);
        true
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

    /// The live nodes but `me`, in name order: those a question for every other node goes to.
    pub fn others(&self, me: &str) -> Vec<String> {
        self.nodes()
            .filter(|n| *n != me)
            .map(str::to_string)
            .collect()
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
        assert_eq!(m.others("me"), ["other"]);
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
    fn another_nodes_word_that_a_node_is_gone_is_taken_only_if_it_is_silent_here_too() {
        let t0 = Instant::now();
        let mut m = Membership::new("me", t0);
        m.heard("quiet", t0);
        m.heard("chatty", t0 + Duration::from_millis(2000));
        let at = t0 + Duration::from_millis(2500);
        assert!(!m.forget_if_silent("me", "chatty", at), "heard 0.5 s ago");
        assert!(!m.forget_if_silent("me", "me", at));
        assert!(!m.forget_if_silent("me", "unknown", at));
        assert!(m.forget_if_silent("me", "quiet", at), "silent for 2.5 s");
        assert_eq!(m.nodes().collect::<Vec<_>>(), ["chatty", "me"]);
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
