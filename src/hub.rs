//! A shard's part in chat, with no I/O: the channels it is home to, and which of its own sessions are
//! members of which channel anywhere.
//!
//! Every chat action is a message: a session's request goes to the channel's home ([`ToHome`]); the
//! home decides (admits, orders, logs) and answers with [`ToMember`] messages, one per shard that has
//! members. The hub handles both kinds and says what should happen through [`Outputs`]: messages for
//! other shards, lines and replies for local sessions, lines for the channel log. A message for its own
//! shard is handled at once, never queued.
//!
//! Because nothing here touches a socket, a ring or a clock, tests step several hubs over in-memory
//! queues in any interleaving and check ordering and membership exactly (see `tests` below).
//!
//! # Membership, in two places
//!
//! The home's [`Channel`] is the truth: it decides joins and orders lines. Each member shard keeps a
//! mirror (channel → its local member sessions) so that a delivery carries only the channel and the
//! line. The mirror changes only when a [`ToMember::Joined`] arrives (add) or when a local session
//! leaves (remove, at once, then [`ToHome::Leave`]). Deliveries travel the same FIFO ring as the
//! `Joined` answers, so the mirror always matches what the home had when it sent each delivery, except
//! that a leaving session stops receiving a little early — never late.
//!
//! A session is in at most one channel and has at most one join on its way: a join or exit asked for
//! while one is in flight is refused here (a session handles one command at a time, so this is a
//! guard, not a user-visible rule). That makes every `Joined` answer the answer to the one join its
//! session is waiting for. `/join` while in a channel sends the join first and leaves the old channel
//! only once the new one has said yes, so a refused join leaves the user where they were.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use shard_proto::{
    ChannelId, ChannelName, JoinOutcome, Line, ListEntry, SessionId, ShardId, ShardMsg, ToHome,
    ToMember,
};

use crate::channel::Channel;

/// An answer for a local session.
#[derive(Clone, Debug)]
pub enum Reply {
    /// The answer to a join.
    Joined {
        /// The channel asked for, as its home names it.
        channel: ChannelName,
        /// What happened.
        outcome: JoinOutcome,
    },
    /// Members of the session's channel (`None`: the session is on no channel by the time the home
    /// answered).
    Who(Option<Vec<Arc<str>>>),
    /// The channels of one shard.
    List(Vec<ListEntry>),
}

/// Where a hub's decisions go. The shard implements it over rings, session queues and the log writer;
/// tests implement it over vectors.
pub trait Outputs {
    /// Queue a message for another shard.
    fn to_shard(&mut self, dest: ShardId, msg: ShardMsg);
    /// Put a line in a local session's outgoing queue.
    fn deliver(&mut self, session: u64, line: &Line);
    /// Hand a reply to a local session.
    fn reply(&mut self, session: u64, reply: Reply);
    /// Append a line to a channel's log.
    fn log(&mut self, channel: &ChannelName, line: &Line);
    /// Whether a local session is still connected.
    fn is_live(&self, session: u64) -> bool;
}

/// One shard's chat state.
#[derive(Debug)]
pub struct Hub {
    id: ShardId,
    shards: usize,
    capacity: u32,
    /// Channels homed here, by index.
    homed: Vec<Channel>,
    /// Lower-cased name → index in `homed`.
    by_key: HashMap<Arc<str>, u32>,
    /// Mirror: channel (homed anywhere) → local member sessions.
    local: HashMap<ChannelId, Vec<u64>>,
    /// Local session → the channel it is in.
    session_channel: HashMap<u64, (ChannelId, ChannelName)>,
    /// Local sessions with a join on its way.
    joining: HashSet<u64>,
}

impl Hub {
    /// The hub of shard `id` of `shards`, with channels of at most `capacity` members (0: no limit).
    pub fn new(id: ShardId, shards: usize, capacity: u32) -> Hub {
        Hub {
            id,
            shards,
            capacity,
            homed: Vec::new(),
            by_key: HashMap::new(),
            local: HashMap::new(),
            session_channel: HashMap::new(),
            joining: HashSet::new(),
        }
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
        self.homed
            .push(Channel::new(id, name, self.capacity, self.shards));
        id
    }

    /// Channels homed here.
    pub fn homed_channels(&self) -> usize {
        self.homed.len()
    }

    /// Members of all channels homed here.
    pub fn homed_members(&self) -> u64 {
        self.homed.iter().map(|c| u64::from(c.len())).sum()
    }

    /// Local sessions that are in a channel.
    pub fn local_members(&self) -> usize {
        self.session_channel.len()
    }

    /// The channel a local session is in.
    pub fn channel_of(&self, session: u64) -> Option<&ChannelName> {
        self.session_channel.get(&session).map(|(_, name)| name)
    }

    /// Whether a local session has a join on its way.
    pub fn is_joining(&self, session: u64) -> bool {
        self.joining.contains(&session)
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
        if !self.joining.insert(session) {
            return false;
        }
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
        if self.joining.contains(&session) {
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

    /// A local session has gone: it leaves its channel, if any. A join still on its way is undone when
    /// its answer arrives (the session is no longer live then).
    pub fn session_ended(&mut self, session: u64, out: &mut impl Outputs) {
        self.joining.remove(&session);
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

    /// A local session asks for every channel: one [`Reply::List`] comes from each shard.
    pub fn list(&mut self, session: u64, out: &mut impl Outputs) -> usize {
        for shard in 0..self.shards {
            let msg = ToHome::List {
                session: self.session_id(session),
            };
            self.route(ShardId(shard as u16), ShardMsg::ToHome(msg), out);
        }
        self.shards
    }

    /// Handles a message from another shard (or from this one).
    pub fn handle(&mut self, msg: ShardMsg, out: &mut impl Outputs) {
        match msg {
            ShardMsg::ToHome(msg) => self.at_home(msg, out),
            ShardMsg::ToMember(msg) => self.at_member(msg, out),
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
        } else {
            out.to_shard(dest, msg);
        }
    }

    fn at_home(&mut self, msg: ToHome, out: &mut impl Outputs) {
        match msg {
            ToHome::Join {
                channel,
                session,
                user,
                create,
            } => {
                let index = match self.by_key.get(channel.key()) {
                    Some(&index) => Some(index),
                    None if create => Some(self.open(channel.clone()).index),
                    None => None,
                };
                let Some(index) = index else {
                    let msg = ToMember::Joined {
                        session,
                        channel,
                        outcome: JoinOutcome::NoSuchChannel,
                    };
                    return self.route(session.shard, ShardMsg::ToMember(msg), out);
                };
                let ch = &mut self.homed[index as usize];
                let outcome = if ch.contains(session) {
                    JoinOutcome::Joined(ch.id)
                } else if ch.is_full() {
                    JoinOutcome::Full
                } else {
                    let line: Line = format!("{user} has joined #{}", ch.name).into();
                    self.order(index, line, out);
                    let ch = &mut self.homed[index as usize];
                    ch.add(session, user);
                    JoinOutcome::Joined(ch.id)
                };
                let channel = self.homed[index as usize].name.clone();
                let msg = ToMember::Joined {
                    session,
                    channel,
                    outcome,
                };
                self.route(session.shard, ShardMsg::ToMember(msg), out);
            }
            ToHome::Leave { channel, session } => {
                let Some(ch) = self.homed_mut(channel) else {
                    return;
                };
                if let Some(user) = ch.remove(session) {
                    let line: Line = format!("{user} has left #{}", ch.name).into();
                    self.order(channel.index, line, out);
                }
            }
            ToHome::Post {
                channel,
                session,
                line,
            } => {
                if self
                    .homed_mut(channel)
                    .is_some_and(|ch| ch.contains(session))
                {
                    self.order(channel.index, line, out);
                }
            }
            ToHome::Who { channel, session } => {
                let names = self
                    .homed_mut(channel)
                    .filter(|ch| ch.contains(session))
                    .map(|ch| ch.names());
                let msg = ToMember::Who { session, names };
                self.route(session.shard, ShardMsg::ToMember(msg), out);
            }
            ToHome::List { session } => {
                let channels = self
                    .homed
                    .iter()
                    .map(|ch| ListEntry {
                        name: ch.name.clone(),
                        members: ch.len(),
                    })
                    .collect();
                let msg = ToMember::List { session, channels };
                self.route(session.shard, ShardMsg::ToMember(msg), out);
            }
        }
    }

    fn homed_mut(&mut self, id: ChannelId) -> Option<&mut Channel> {
        if id.home != self.id {
            return None;
        }
        self.homed.get_mut(id.index as usize)
    }

    /// Gives a line its place in the channel's order: log it, then one delivery per member shard.
    fn order(&mut self, index: u32, line: Line, out: &mut impl Outputs) {
        let ch = &self.homed[index as usize];
        out.log(&ch.name, &line);
        let id = ch.id;
        for shard in 0..self.shards {
            let shard = ShardId(shard as u16);
            if self.homed[index as usize].has_members_on(shard) {
                let msg = ToMember::Deliver {
                    channel: id,
                    line: line.clone(),
                };
                self.route(shard, ShardMsg::ToMember(msg), out);
            }
        }
    }

    fn at_member(&mut self, msg: ToMember, out: &mut impl Outputs) {
        match msg {
            ToMember::Deliver { channel, line } => {
                if let Some(members) = self.local.get(&channel) {
                    for &session in members {
                        out.deliver(session, &line);
                    }
                }
            }
            ToMember::Joined {
                session,
                channel,
                outcome,
            } => {
                let key = session.key;
                self.joining.remove(&key);
                if let JoinOutcome::Joined(id) = outcome {
                    if !out.is_live(key) {
                        // Gone while the join was on its way: undo it at the home.
                        let msg = ToHome::Leave {
                            channel: id,
                            session,
                        };
                        return self.route(id.home, ShardMsg::ToHome(msg), out);
                    }
                    match self.session_channel.get(&key) {
                        Some(&(old, _)) if old == id => {}
                        _ => {
                            self.leave(key, out);
                            self.local.entry(id).or_default().push(key);
                            self.session_channel.insert(key, (id, channel.clone()));
                        }
                    }
                }
                out.reply(key, Reply::Joined { channel, outcome });
            }
            ToMember::Who { session, names } => out.reply(session.key, Reply::Who(names)),
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

#[cfg(test)]
mod tests {
    //! Several hubs stepped over in-memory rings: no threads, no sockets, no clocks. A seeded PRNG
    //! picks operations and which ring moves next, so every interleaving is replayable.

    use super::*;
    use std::collections::{BTreeMap, HashSet, VecDeque};

    /// Everything one shard's hub produced, recorded.
    #[derive(Default)]
    struct Recorder {
        outgoing: Vec<(ShardId, ShardMsg)>,
        lines: BTreeMap<u64, Vec<Line>>,
        replies: BTreeMap<u64, Vec<Reply>>,
        live: HashSet<u64>,
        log: Vec<(Arc<str>, Line)>,
    }

    impl Outputs for Recorder {
        fn to_shard(&mut self, dest: ShardId, msg: ShardMsg) {
            self.outgoing.push((dest, msg));
        }
        fn deliver(&mut self, session: u64, line: &Line) {
            self.lines.entry(session).or_default().push(line.clone());
        }
        fn reply(&mut self, session: u64, reply: Reply) {
            self.replies.entry(session).or_default().push(reply);
        }
        fn log(&mut self, channel: &ChannelName, line: &Line) {
            self.log.push((channel.key().clone(), line.clone()));
        }
        fn is_live(&self, session: u64) -> bool {
            self.live.contains(&session)
        }
    }

    struct Sim {
        hubs: Vec<Hub>,
        rec: Vec<Recorder>,
        /// rings[src][dst]
        rings: Vec<Vec<VecDeque<ShardMsg>>>,
        rng: u64,
        next_key: u64,
    }

    impl Sim {
        fn new(shards: usize, capacity: u32, seed: u64) -> Sim {
            Sim {
                hubs: (0..shards)
                    .map(|i| Hub::new(ShardId(i as u16), shards, capacity))
                    .collect(),
                rec: (0..shards).map(|_| Recorder::default()).collect(),
                rings: (0..shards)
                    .map(|_| (0..shards).map(|_| VecDeque::new()).collect())
                    .collect(),
                rng: seed | 1,
                next_key: 1,
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
        }

        fn connect(&mut self, s: usize) -> u64 {
            let key = self.next_key;
            self.next_key += 1;
            self.rec[s].live.insert(key);
            key
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

    #[test]
    fn random_churn_leaves_home_counts_equal_to_live_members() {
        for seed in 1..=60 {
            let shards = 2 + (seed as usize % 3);
            let mut sim = Sim::new(shards, 4, seed);
            let channels = ["a", "b", "c", "d"];
            let mut live: Vec<(usize, u64)> = Vec::new();
            for _ in 0..400 {
                match sim.rand(6) {
                    0 => {
                        let s = sim.rand(shards);
                        let key = sim.connect(s);
                        live.push((s, key));
                    }
                    1 | 2 if !live.is_empty() => {
                        let (s, key) = live[sim.rand(live.len())];
                        let ch = name(channels[sim.rand(channels.len())]);
                        let busy = sim.hubs[s].is_joining(key);
                        sim.with_hub(s, |h, r| {
                            assert_eq!(h.join(key, ch, "u".into(), true, r), !busy)
                        });
                    }
                    3 if !live.is_empty() => {
                        let (s, key) = live[sim.rand(live.len())];
                        sim.with_hub(s, |h, r| {
                            h.exit(key, r);
                        });
                    }
                    4 if !live.is_empty() => {
                        // The session ends at any moment, even with a join in flight.
                        let i = sim.rand(live.len());
                        let (s, key) = live.swap_remove(i);
                        sim.rec[s].live.remove(&key);
                        sim.with_hub(s, |h, r| h.session_ended(key, r));
                    }
                    _ => {
                        sim.step();
                    }
                }
            }
            sim.drain();
            let homed: u64 = sim.hubs.iter().map(|h| h.homed_members()).sum();
            let mirrored: usize = sim.hubs.iter().map(|h| h.local_members()).sum();
            assert_eq!(homed as usize, mirrored, "seed {seed}");
            // Everyone ends: nothing is left anywhere.
            for (s, key) in live.drain(..) {
                sim.rec[s].live.remove(&key);
                sim.with_hub(s, |h, r| h.session_ended(key, r));
            }
            sim.drain();
            assert_eq!(
                sim.hubs.iter().map(|h| h.homed_members()).sum::<u64>(),
                0,
                "seed {seed}"
            );
            assert_eq!(sim.hubs.iter().map(|h| h.local_members()).sum::<usize>(), 0);
            assert!(
                sim.hubs.iter().all(|h| h.local.is_empty()),
                "seed {seed}: mirror left over"
            );
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
}
