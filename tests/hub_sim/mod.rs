//! Several hubs stepped over in-memory rings, driven by bytes: the one harness behind the
//! `hub_messages` fuzz target (`fuzz/fuzz_targets/hub_messages.rs`) and the hub properties in
//! `properties.rs`, so the fuzzer and CI check the same things.
//!
//! It is a compact cousin of the simulation in `src/hub.rs`'s tests, which stays there: that one
//! reads the hubs' private state and runs chosen scenarios; this one sees only the hubs' public
//! API and what they hand to [`Outputs`], and runs whatever the bytes say.
//!
//! # What the bytes mean
//!
//! Every byte sequence is an input, so no fuzzer or proptest case is wasted on a parse error. The
//! first byte sets the server up: 2 to 4 shards, a channel capacity (or none), the size up to which
//! a channel's joiners from other shards move home, and in its top bit whether the input may break
//! the protocol. Each byte after it is one operation: its low four bits say what, its high four on
//! whom (which live session, shard or ring). A session connects, joins or switches (one more byte:
//! which channel, and whether to create it), leaves, talks, asks who or list, ends, or moves to its
//! channel's home; a ring hands its oldest message to its shard; or every ring drains.
//!
//! # Two levels
//!
//! While the protocol is kept, what `src/hub.rs`'s simulation checks holds after every operation
//! and every message: a session that ended or moved away is known nowhere on its shard; a session's
//! channel counts it at the home; a member the home counts but its shard does not is settled by a
//! message on its way (its leave, cancel or move, or the answer to its join); every join, who and
//! list is answered once or on its way, and a session waits for a join exactly while one is in
//! flight; lines reach only sessions that are there to take them; a session that moved waits for
//! its left-behind lines only while they come. Once the rings are quiet, the homes count exactly
//! the members the shards know, and every member has seen every line of its channel since it
//! joined, once, in the channel's order, across moves. At the end everyone leaves and nothing is
//! left anywhere.
//!
//! An input that may break the protocol also makes messages a buggy or racing peer could send:
//! any message with any ids (stale ones, other shards' ones, ones that never existed), copies of
//! messages already delivered, a ring's newest message before its oldest, a message to the wrong
//! shard, a message lost. From the first of those on, nothing is checked but that no hub panics and
//! that a hub only ever sends to shards that exist (a shard indexes its rings by the destination).

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;

use ringtalk::channel::Settings;
use ringtalk::hub::{Hub, Outputs, Reached};
use ringtalk::mailbox::Reply;
use shard_proto::{
    home_of, Change, ChannelId, ChannelName, JoinOutcome, Kill, Line, ListEntry, Managed,
    OnlineUser, SessionFacts, SessionId, ShardId, ShardMsg, ToHome, ToMember, ToUser, Traveller,
};

/// The channels sessions join; the last is the first in other letters, so one channel is asked
/// for by two spellings.
const CHANNELS: [&str; 6] = ["lobby", "dev", "ops", "x", "y", "LOBBY"];

/// Live sessions at most: enough for a channel with members on every shard and a full one.
const MAX_LIVE: usize = 12;

/// Sessions ever, counting each move's new self: the checks look at every session after every
/// step, so this bounds what a long input costs.
const MAX_SESSIONS: usize = 64;

/// Runs the operations `data` spells (see the module doc) and panics if a hub panics or, while the
/// protocol is kept, an invariant breaks.
pub fn run(data: &[u8]) {
    let Some((&setup, ops)) = data.split_first() else {
        return;
    };
    let mut sim = Sim::new(setup);
    let mut bytes = ops.iter().copied();
    while let Some(op) = bytes.next() {
        sim.op(op, &mut bytes);
    }
    sim.finish();
}

/// A session on its way to another shard, as the harness carries it.
struct Arrival {
    /// Its user, whom the home keeps as the member's name.
    user: Arc<str>,
    /// The lines it had been given before it left.
    seen: Vec<Line>,
}

/// What kind of request a message asks or answers, as an index into [`Asked`].
const JOIN: usize = 0;
const WHO: usize = 1;
const LIST: usize = 2;
const TELL: usize = 3;
const CENSUS: usize = 4;
const FACTS: usize = 5;
const MANAGE: usize = 6;
const ADMIN: usize = 7;

/// Requests a session made, or answers it got, by kind ([`JOIN`], [`WHO`], [`LIST`]).
type Asked = [usize; 8];

/// Everything one shard's hub hands out, recorded, with the checks that can be made on the spot.
struct Recorder {
    shard: usize,
    shards: usize,
    /// False once the input broke the protocol: then anything goes, but nothing may panic.
    strict: bool,
    outgoing: Vec<(ShardId, ShardMsg)>,
    /// Sessions here, those that moved here included.
    live: HashSet<u64>,
    /// Sessions that moved away and whose lines are kept here until the home's `Moved`.
    away: HashSet<u64>,
    /// What each session has been given, in order; one that moved here starts with what it saw.
    seen: HashMap<u64, Vec<Line>>,
    /// Sessions that moved here and wait for the lines their old shard kept, with the lines they
    /// got here meanwhile.
    held: HashMap<u64, Vec<Line>>,
    answered: HashMap<u64, Asked>,
    log: Vec<(Arc<str>, Line)>,
    /// Sessions taken up here since the harness last looked: their user, and their key.
    arrived: Vec<(Arc<str>, u64)>,
    next_key: u64,
}

impl Recorder {
    /// Where a line for `session` goes: its held lines while it waits for its old shard's.
    fn queue_of(&mut self, session: u64, what: &str) -> &mut Vec<Line> {
        assert!(
            !self.strict || self.live.contains(&session) || self.away.contains(&session),
            "{what} for {}/{session}, which has gone",
            self.shard
        );
        match self.held.get_mut(&session) {
            Some(held) => held,
            None => self.seen.entry(session).or_default(),
        }
    }
}

impl Outputs for Recorder {
    fn to_shard(&mut self, dest: ShardId, msg: ShardMsg) {
        assert!(
            dest.index() < self.shards,
            "shard {} sent to {dest}, which does not exist: {msg:?}",
            self.shard
        );
        assert_ne!(
            dest.index(),
            self.shard,
            "a message for its own shard: {msg:?}"
        );
        self.outgoing.push((dest, msg));
    }

    fn deliver(&mut self, session: u64, line: &Line) {
        self.queue_of(session, line).push(line.clone());
    }

    fn lost(&mut self, session: u64, count: u32) {
        let notice: Line = format!("[{count} messages dropped]").into();
        self.queue_of(session, &notice).push(notice.clone());
    }

    fn reply(&mut self, session: u64, reply: Reply) {
        let kind = match reply {
            Reply::Joined { .. } => JOIN,
            Reply::Who(_) => WHO,
            Reply::List(_) => LIST,
            Reply::Told { .. } => TELL,
            Reply::Census { .. } => CENSUS,
            Reply::Facts(_) | Reply::Elsewhere { .. } => FACTS,
            Reply::Managed(_) | Reply::ChannelGone => MANAGE,
            Reply::Disconnected(_) | Reply::DisconnectedElsewhere(_) | Reply::Deleted(_) => ADMIN,
        };
        assert!(
            !self.strict || kind != JOIN || self.live.contains(&session),
            "a join answered for {}/{session}, which has gone",
            self.shard
        );
        self.answered.entry(session).or_default()[kind] += 1;
    }

    fn times(&self, session: u64) -> Option<(u32, u32)> {
        self.live.contains(&session).then_some((1, 2))
    }

    fn save_settings(&mut self, _channel: &ChannelName, _settings: &Settings) {}

    fn forget_settings(&mut self, _channel: &ChannelName) {}

    fn unix_now(&self) -> u32 {
        0
    }

    fn tell(&mut self, session: u64, line: &Line) -> Reached {
        if !self.live.contains(&session) {
            return Reached::Nobody;
        }
        self.queue_of(session, line).push(line.clone());
        Reached::Here
    }

    fn log(&mut self, channel: &ChannelName, line: &Line) {
        self.log.push((channel.key().clone(), line.clone()));
    }

    fn adopt(&mut self, traveller: Traveller) -> u64 {
        let arrival = traveller
            .0
            .downcast::<Arrival>()
            .expect("only the harness makes travellers");
        let key = self.next_key;
        self.next_key += 1;
        self.seen.insert(key, arrival.seen);
        self.held.insert(key, Vec::new());
        self.live.insert(key);
        self.arrived.push((arrival.user, key));
        key
    }

    fn release(&mut self, session: u64) -> (Vec<Line>, u32) {
        let away = self.away.remove(&session);
        assert!(
            !self.strict || away,
            "{}/{session} released, but it did not move away",
            self.shard
        );
        (self.seen.remove(&session).unwrap_or_default(), 0)
    }

    fn forwarded(&mut self, session: u64, lines: Vec<Line>, _dropped: u32) {
        let Some(meanwhile) = self.held.remove(&session) else {
            assert!(
                !self.strict,
                "lines forwarded to {}/{session}, which waits for none",
                self.shard
            );
            return;
        };
        let seen = self.seen.entry(session).or_default();
        seen.extend(lines);
        seen.extend(meanwhile);
    }

    fn dropped_on_the_way(&self, _dest: ShardId, _channel: ChannelId) -> u32 {
        0
    }

    fn audit(&mut self, _entry: &str) {}

    fn disconnect(&mut self, session: u64, _farewell: &Line) -> Reached {
        // Only forged messages end sessions here; the session is not taken away.
        if self.live.contains(&session) {
            Reached::Here
        } else if self.away.contains(&session) {
            Reached::InTransit
        } else {
            Reached::Nobody
        }
    }

    fn wall(&mut self, line: &Line) {
        let live: Vec<u64> = self.live.iter().copied().collect();
        for session in live {
            self.queue_of(session, line).push(line.clone());
        }
    }
}

/// The hubs, their rings, and what the harness knows of every session.
struct Sim {
    hubs: Vec<Hub>,
    rec: Vec<Recorder>,
    /// `rings[src][dst]`, oldest message first.
    rings: Vec<Vec<VecDeque<ShardMsg>>>,
    /// Whether the input may break the protocol.
    hostile: bool,
    /// False once it has: the checks stop.
    strict: bool,
    /// Sessions that may act, as (shard, key), in the order they came.
    live: Vec<(usize, u64)>,
    /// Sessions that ended or moved away.
    gone: Vec<(usize, u64)>,
    users: HashMap<(usize, u64), Arc<str>>,
    asked: HashMap<(usize, u64), Asked>,
    next_key: u64,
    next_line: u64,
    /// Messages delivered, newest last, for a hostile input to deliver again.
    history: VecDeque<(usize, ShardMsg)>,
}

impl Sim {
    fn new(setup: u8) -> Sim {
        let shards = 2 + usize::from(setup & 3) % 3;
        let capacity = [0, 1, 2, 4][usize::from(setup >> 2 & 3)];
        let colocate_up_to = [0, 1, 3, 64][usize::from(setup >> 4 & 3)];
        let hostile = setup & 0x80 != 0;
        Sim {
            hubs: (0..shards)
                .map(|s| Hub::new(ShardId(s as u16), shards, capacity, colocate_up_to))
                .collect(),
            rec: (0..shards)
                .map(|s| Recorder {
                    shard: s,
                    shards,
                    strict: true,
                    outgoing: Vec::new(),
                    live: HashSet::new(),
                    away: HashSet::new(),
                    seen: HashMap::new(),
                    held: HashMap::new(),
                    answered: HashMap::new(),
                    log: Vec::new(),
                    arrived: Vec::new(),
                    next_key: 1_000_000 * (s as u64 + 1),
                })
                .collect(),
            rings: (0..shards)
                .map(|_| (0..shards).map(|_| VecDeque::new()).collect())
                .collect(),
            hostile,
            strict: true,
            live: Vec::new(),
            gone: Vec::new(),
            users: HashMap::new(),
            asked: HashMap::new(),
            next_key: 1,
            next_line: 0,
            history: VecDeque::new(),
        }
    }

    fn shards(&self) -> usize {
        self.hubs.len()
    }

    /// One operation (see the module doc), then the checks.
    fn op(&mut self, op: u8, bytes: &mut impl Iterator<Item = u8>) {
        let pick = usize::from(op >> 4);
        match op & 0x0F {
            0 => self.connect(pick % self.shards()),
            1 | 2 => {
                let arg = bytes.next().unwrap_or(0);
                self.join(pick, arg);
            }
            3 => self.act(pick, |h, key, r| {
                h.exit(key, r);
            }),
            4 => self.post(pick),
            5 => self.ask(pick, WHO),
            6 => self.ask(pick, LIST),
            7 => self.end(pick),
            8 => self.depart(pick),
            13 => self.drain(),
            14 if self.hostile => self.forge(pick, bytes),
            15 if self.hostile => self.misdeliver(pick),
            _ => {
                self.step(pick);
            }
        }
        self.check();
    }

    /// Runs `f` on shard `s`'s hub, then moves what it sent into the rings and takes note of the
    /// sessions that arrived.
    fn with_hub(&mut self, s: usize, f: impl FnOnce(&mut Hub, &mut Recorder)) {
        f(&mut self.hubs[s], &mut self.rec[s]);
        for (dest, msg) in self.rec[s].outgoing.drain(..) {
            self.rings[s][dest.index()].push_back(msg);
        }
        for (user, key) in std::mem::take(&mut self.rec[s].arrived) {
            self.live.push((s, key));
            self.users.insert((s, key), user);
            self.asked.insert((s, key), Asked::default());
        }
    }

    fn sessions(&self) -> usize {
        self.live.len() + self.gone.len()
    }

    fn connect(&mut self, s: usize) {
        if self.live.len() >= MAX_LIVE || self.sessions() >= MAX_SESSIONS {
            return;
        }
        let key = self.next_key;
        self.next_key += 1;
        self.rec[s].live.insert(key);
        self.live.push((s, key));
        self.users.insert((s, key), format!("u{key}").into());
        self.asked.insert((s, key), Asked::default());
    }

    fn pick(&self, pick: usize) -> Option<(usize, u64)> {
        (!self.live.is_empty()).then(|| self.live[pick % self.live.len()])
    }

    /// Runs `f` for the live session `pick` chooses, on its shard's hub.
    fn act(&mut self, pick: usize, f: impl FnOnce(&mut Hub, u64, &mut Recorder)) {
        if let Some((s, key)) = self.pick(pick) {
            self.with_hub(s, |h, r| f(h, key, r));
        }
    }

    fn join(&mut self, pick: usize, arg: u8) {
        let Some((s, key)) = self.pick(pick) else {
            return;
        };
        let channel = ChannelName::new(CHANNELS[usize::from(arg) % CHANNELS.len()]).unwrap();
        let create = arg >> 6 != 0;
        let user = self.users[&(s, key)].clone();
        let busy = self.hubs[s].is_joining(key);
        let mut sent = false;
        self.with_hub(s, |h, r| sent = h.join(key, channel, user, create, r));
        assert!(
            !self.strict || sent != busy,
            "{s}/{key}: a join {} while {}one was on its way",
            if sent { "sent" } else { "refused" },
            if busy { "" } else { "no " },
        );
        if sent {
            self.asked.get_mut(&(s, key)).unwrap()[JOIN] += 1;
        }
    }

    fn post(&mut self, pick: usize) {
        let Some((s, key)) = self.pick(pick) else {
            return;
        };
        let line: Line = format!("{} says {}", self.users[&(s, key)], self.next_line).into();
        self.next_line += 1;
        self.with_hub(s, |h, r| {
            h.post(key, line, r);
        });
    }

    fn ask(&mut self, pick: usize, kind: usize) {
        let Some((s, key)) = self.pick(pick) else {
            return;
        };
        let mut expected = 0;
        self.with_hub(s, |h, r| {
            expected = match kind {
                WHO => usize::from(h.who(key, r)),
                _ => h.list(key, r),
            }
        });
        self.asked.get_mut(&(s, key)).unwrap()[kind] += expected;
    }

    fn end(&mut self, pick: usize) {
        let Some((s, key)) = self.pick(pick) else {
            return;
        };
        self.forget(s, key);
        self.with_hub(s, |h, r| h.session_ended(key, r));
    }

    /// The session is no longer one that may act.
    fn forget(&mut self, s: usize, key: u64) {
        self.live.retain(|&l| l != (s, key));
        self.rec[s].live.remove(&key);
        self.gone.push((s, key));
    }

    /// The session moves to its channel's home. A session still waiting for the lines of its last
    /// move stays (it waits for them before it may move again); one that may not move is handed
    /// to the hub all the same, which ends it.
    fn depart(&mut self, pick: usize) {
        let Some((s, key)) = self.pick(pick) else {
            return;
        };
        if self.rec[s].held.contains_key(&key) || self.sessions() >= MAX_SESSIONS {
            return;
        }
        self.forget(s, key);
        self.rec[s].away.insert(key);
        // What it had been given goes with it (written, or in its output).
        let traveller = Traveller(Box::new(Arrival {
            user: self.users[&(s, key)].clone(),
            seen: self.rec[s].seen.remove(&key).unwrap_or_default(),
        }));
        self.with_hub(s, |h, r| h.depart(key, traveller, r));
    }

    /// Rings with messages waiting, as (src, dst).
    fn busy(&self) -> Vec<(usize, usize)> {
        let n = self.shards();
        (0..n)
            .flat_map(|s| (0..n).map(move |d| (s, d)))
            .filter(|&(s, d)| !self.rings[s][d].is_empty())
            .collect()
    }

    /// The ring `pick` chooses hands its oldest message to its shard; false if all are empty.
    fn step(&mut self, pick: usize) -> bool {
        let busy = self.busy();
        if busy.is_empty() {
            return false;
        }
        let (s, d) = busy[pick % busy.len()];
        let msg = self.rings[s][d].pop_front().unwrap();
        self.deliver(d, msg);
        true
    }

    fn deliver(&mut self, d: usize, msg: ShardMsg) {
        if self.hostile {
            if self.history.len() == 32 {
                self.history.pop_front();
            }
            self.history.push_back((d, copy(&msg)));
        }
        self.with_hub(d, |h, r| h.handle(msg, r));
    }

    fn drain(&mut self) {
        while self.step(0) {
            self.check();
        }
        self.check_settled();
    }

    /// From here on the input breaks the protocol: the checks stop.
    fn break_protocol(&mut self) {
        self.strict = false;
        for rec in &mut self.rec {
            rec.strict = false;
        }
    }

    /// A made-up message, spelt by the bytes that follow, for the shard `pick` chooses.
    fn forge(&mut self, pick: usize, bytes: &mut impl Iterator<Item = u8>) {
        self.break_protocol();
        let mut next = || bytes.next().unwrap_or(0);
        let kind = next() % 31;
        let (a, b) = (next(), next());
        let session = self.any_session(a);
        let id = self.any_channel(b);
        let name = ChannelName::new(CHANNELS[usize::from(b) % CHANNELS.len()]).unwrap();
        let line: Line = format!("forged {a} {b}").into();
        let msg = match kind {
            0 => ShardMsg::ToHome(ToHome::Join {
                channel: name,
                session,
                user: "mallory".into(),
                create: b & 1 != 0,
            }),
            1 => ShardMsg::ToHome(ToHome::Leave {
                channel: id,
                session,
            }),
            2 => ShardMsg::ToHome(ToHome::Cancel {
                channel: name,
                session,
            }),
            3 => ShardMsg::ToHome(ToHome::Post {
                channel: id,
                session,
                line,
            }),
            4 => ShardMsg::ToHome(ToHome::Who {
                channel: id,
                session,
            }),
            5 => ShardMsg::ToHome(ToHome::List { session }),
            6 => ShardMsg::ToHome(ToHome::Move {
                channel: id,
                session,
                traveller: stranger(),
            }),
            7 => ShardMsg::ToHome(ToHome::Forward {
                session,
                lines: vec![line; usize::from(b % 3)],
                dropped: u32::from(b),
            }),
            8 => ShardMsg::ToMember(ToMember::Joined {
                session,
                channel: name,
                outcome: match b % 3 {
                    0 => JoinOutcome::Joined(id),
                    1 => JoinOutcome::Full,
                    _ => JoinOutcome::NoSuchChannel,
                },
                come_home: b & 8 != 0,
            }),
            9 => ShardMsg::ToMember(ToMember::Deliver { channel: id, line }),
            10 => ShardMsg::ToMember(ToMember::Lost {
                channel: id,
                count: u32::from(b) << 24,
            }),
            11 => ShardMsg::ToMember(ToMember::Who {
                session,
                names: (b & 1 != 0).then(|| vec!["mallory".into()]),
            }),
            12 => ShardMsg::ToMember(ToMember::List {
                session,
                channels: vec![
                    ListEntry {
                        name,
                        members: u32::MAX,
                        topic: Some("forged".into()),
                    };
                    usize::from(b & 1)
                ],
            }),
            13 => ShardMsg::ToUser(ToUser::Census {
                asker: session,
                first: u32::from(b) << 24,
                name: (b & 1 != 0).then(|| "Mallory".into()),
            }),
            14 => ShardMsg::ToUser(ToUser::Facts {
                asker: session,
                keys: Box::new(vec![u64::from(a), u64::from(b), u64::MAX]),
            }),
            15 => ShardMsg::ToMember(ToMember::Census {
                session,
                total: u32::MAX,
                users: Box::new(vec![OnlineUser {
                    name: "mallory".into(),
                    sessions: vec![self.any_session(b)],
                }]),
            }),
            16 => ShardMsg::ToMember(ToMember::Facts {
                session,
                facts: Box::new(vec![SessionFacts {
                    session: self.any_session(b),
                    since: u32::MAX,
                    last_input: 0,
                    away: Some("".into()),
                    channel: Some(name),
                }]),
            }),
            17 => ShardMsg::ToHome(ToHome::Manage {
                channel: id,
                session,
                by: "mallory".into(),
                admin: b & 1 != 0,
                change: Box::new(match b % 12 {
                    0 => Change::Show,
                    1 => Change::Topic(Some(line)),
                    2 => Change::TopicOpen(b & 2 != 0),
                    3 => Change::Kick {
                        name: format!("u{a}").into(),
                        reason: Some(line),
                    },
                    4 => Change::Ban(format!("u{a}").into()),
                    5 => Change::Unban(format!("U{a}").into()),
                    6 => Change::Mute {
                        name: format!("u{a}").into(),
                        minutes: u32::MAX,
                    },
                    7 => Change::Unmute(format!("u{a}").into()),
                    8 => Change::Invite(format!("u{a}").into()),
                    9 => Change::InviteOnly(b & 2 != 0),
                    10 => Change::Capacity(u32::from(a) % 4),
                    _ => Change::Owner("mallory".into()),
                }),
                asked: u32::from(a),
            }),
            18 => ShardMsg::ToMember(ToMember::Managed {
                session,
                answer: Box::new(Managed::NotMember),
                asked: u32::from(b),
            }),
            19 => ShardMsg::ToMember(ToMember::Notice { session, line }),
            20 => ShardMsg::ToMember(ToMember::Removed {
                channel: id,
                session,
            }),
            21 => ShardMsg::ToHome(ToHome::Delete {
                channel: name,
                session,
                by: "mallory".into(),
            }),
            22 => ShardMsg::ToMember(ToMember::Closed { channel: id, line }),
            23 => ShardMsg::ToMember(ToMember::Deleted {
                session,
                channel: (b & 1 != 0).then_some(name),
            }),
            24 => ShardMsg::ToUser(ToUser::Kill(forged_kill(session, self.any_session(b), b))),
            25 => ShardMsg::ToUser(ToUser::Disconnect {
                kill: forged_kill(session, self.any_session(b), b),
                session: self.any_session(b ^ 1),
            }),
            26 => ShardMsg::ToUser(ToUser::Wall { line }),
            27 => ShardMsg::ToMember(ToMember::Disconnected {
                session,
                name: (b & 1 != 0).then(|| "Mallory".into()),
            }),
            28 => ShardMsg::ToUser(ToUser::Ignoring {
                name: format!("u{a}").into(),
                from: (b & 1 != 0).then_some(session),
                names: vec![Arc::<str>::from("mallory")].into(),
            }),
            29 => ShardMsg::ToUser(ToUser::SetIgnoring {
                session,
                names: vec![Arc::<str>::from(format!("u{b}"))].into(),
            }),
            _ => ShardMsg::ToMember(ToMember::Moved {
                channel: id,
                from: session,
                to: self.any_session(b),
            }),
        };
        let d = pick % self.shards();
        self.deliver(d, msg);
    }

    /// A session id: one the harness has seen (live, ended or moved away) for an even `b`,
    /// otherwise one made up, perhaps on a shard that does not exist.
    fn any_session(&self, b: u8) -> SessionId {
        let known = self.sessions();
        if b & 1 == 0 && known > 0 {
            let i = usize::from(b >> 1) % known;
            let (s, key) = *self.live.iter().chain(&self.gone).nth(i).unwrap();
            return sid(s, key);
        }
        SessionId {
            shard: ShardId(u16::from(b >> 1) % (self.shards() as u16 + 1)),
            key: u64::from(b >> 4),
        }
    }

    /// A channel id, perhaps of a channel that does not exist, or on a shard that does not.
    fn any_channel(&self, b: u8) -> ChannelId {
        ChannelId {
            home: ShardId(u16::from(b) % (self.shards() as u16 + 1)),
            index: u32::from(b >> 5),
        }
    }

    /// A message delivered again, or out of its ring's order, or to the wrong shard, or lost.
    fn misdeliver(&mut self, pick: usize) {
        self.break_protocol();
        let at = pick >> 2;
        if pick & 3 == 0 {
            if !self.history.is_empty() {
                let (d, msg) = &self.history[at % self.history.len()];
                let (d, msg) = (*d, copy(msg));
                self.deliver(d, msg);
            }
            return;
        }
        let busy = self.busy();
        if busy.is_empty() {
            return;
        }
        let (s, d) = busy[at % busy.len()];
        match pick & 3 {
            1 => {
                let msg = self.rings[s][d].pop_back().unwrap();
                self.deliver(d, msg);
            }
            2 => {
                let msg = self.rings[s][d].pop_front().unwrap();
                self.deliver((d + 1) % self.shards(), msg);
            }
            _ => {
                self.rings[s][d].pop_front();
            }
        }
    }

    /// What holds between any two steps while the protocol is kept (see the module doc).
    fn check(&self) {
        if !self.strict {
            return;
        }
        let n = self.shards();
        // What is on its way, by the session it is about.
        let mut requests: HashMap<(SessionId, usize), usize> = HashMap::new();
        let mut settling: HashSet<(usize, SessionId)> = HashSet::new();
        let mut cancels: HashSet<(SessionId, &str)> = HashSet::new();
        let mut admitted: HashSet<SessionId> = HashSet::new();
        let mut bringing: HashSet<SessionId> = HashSet::new();
        for (src, rings) in self.rings.iter().enumerate() {
            for (dst, ring) in rings.iter().enumerate() {
                for msg in ring {
                    let request = match msg {
                        ShardMsg::ToHome(ToHome::Join { session, .. }) => Some((*session, JOIN)),
                        ShardMsg::ToMember(ToMember::Joined {
                            session, outcome, ..
                        }) => {
                            if matches!(outcome, JoinOutcome::Joined(_)) {
                                admitted.insert(*session);
                            }
                            Some((*session, JOIN))
                        }
                        ShardMsg::ToHome(ToHome::Who { session, .. })
                        | ShardMsg::ToMember(ToMember::Who { session, .. }) => {
                            Some((*session, WHO))
                        }
                        ShardMsg::ToHome(ToHome::List { session })
                        | ShardMsg::ToMember(ToMember::List { session, .. }) => {
                            Some((*session, LIST))
                        }
                        ShardMsg::ToHome(
                            ToHome::Leave { session, .. } | ToHome::Move { session, .. },
                        ) => {
                            assert_eq!(session.shard.index(), src, "{msg:?}");
                            settling.insert((dst, *session));
                            None
                        }
                        ShardMsg::ToHome(ToHome::Cancel { channel, session }) => {
                            assert_eq!(session.shard.index(), src, "{msg:?}");
                            cancels.insert((*session, &**channel.key()));
                            None
                        }
                        ShardMsg::ToMember(ToMember::Moved { to, .. }) => {
                            bringing.insert(*to);
                            None
                        }
                        ShardMsg::ToHome(ToHome::Forward { session, .. }) => {
                            bringing.insert(*session);
                            None
                        }
                        _ => None,
                    };
                    if let Some(request) = request {
                        *requests.entry(request).or_default() += 1;
                    }
                }
            }
        }
        for &(s, key) in &self.gone {
            let hub = &self.hubs[s];
            assert!(
                hub.channel_of(key).is_none() && !hub.is_joining(key),
                "{s}/{key} has gone, and its shard still has it in a channel or joining one"
            );
        }
        for &(s, key) in &self.live {
            let me = sid(s, key);
            let hub = &self.hubs[s];
            if let Some(name) = hub.channel_of(key) {
                let home = home_of(name, n).index();
                assert!(
                    self.hubs[home].has_member(name, me),
                    "{s}/{key} is on #{name}, whose home does not count it"
                );
            }
            let asked = self.asked[&(s, key)];
            let answered = self.rec[s].answered.get(&key).copied().unwrap_or_default();
            for kind in [JOIN, WHO, LIST] {
                let in_flight = requests.get(&(me, kind)).copied().unwrap_or(0);
                assert_eq!(
                    answered[kind] + in_flight,
                    asked[kind],
                    "{s}/{key}: requests of kind {kind} answered and on their way"
                );
                if kind == JOIN {
                    assert_eq!(
                        in_flight,
                        usize::from(hub.is_joining(key)),
                        "{s}/{key}: joins on their way, and whether it waits for one"
                    );
                }
            }
        }
        for (i, &(s, key)) in self.live.iter().chain(&self.gone).enumerate() {
            let me = sid(s, key);
            let live = i < self.live.len();
            let mine = self.hubs[s].channel_of(key);
            for channel in CHANNELS {
                let channel = ChannelName::new(channel).unwrap();
                let home = home_of(&channel, n).index();
                if !self.hubs[home].has_member(&channel, me)
                    || mine.is_some_and(|m| m.key() == channel.key())
                {
                    continue;
                }
                let settled = settling.contains(&(home, me))
                    || cancels.contains(&(me, &**channel.key()))
                    || (live && admitted.contains(&me));
                assert!(
                    settled,
                    "#{channel} at {home} counts {s}/{key} ({}), and nothing on its way \
                     settles that",
                    if live { "live" } else { "gone" }
                );
            }
        }
        for (s, rec) in self.rec.iter().enumerate() {
            for &key in rec.held.keys() {
                assert!(
                    bringing.contains(&sid(s, key)),
                    "{s}/{key} waits for lines that nothing brings"
                );
            }
        }
    }

    /// What holds once the rings are quiet.
    fn check_settled(&self) {
        if !self.strict {
            return;
        }
        assert!(self.busy().is_empty());
        assert!(
            self.rec.iter().all(|r| r.held.is_empty()),
            "a moved session still waits for its lines"
        );
        // Each local member is counted at its home (see `check`), so equal totals mean the homes
        // count no one else.
        let homed: u64 = self.hubs.iter().map(Hub::homed_members).sum();
        let members: usize = self.hubs.iter().map(Hub::local_members).sum();
        assert_eq!(
            homed, members as u64,
            "members counted by the homes and by the shards"
        );
    }

    /// Every session saw the lines of each channel once each, in the channel's order; a member
    /// now saw every line since it last joined.
    fn check_lines(&self) {
        let mut logs: HashMap<&str, Vec<&Line>> = HashMap::new();
        for (channel, line) in self.rec.iter().flat_map(|r| &r.log) {
            logs.entry(channel).or_default().push(line);
        }
        // Every chat line is unique: where it is in which channel's log.
        let mut said: HashMap<&str, (&str, usize)> = HashMap::new();
        for (&channel, log) in &logs {
            for (at, line) in log.iter().enumerate() {
                if line.contains(" says ") {
                    said.insert(line, (channel, at));
                }
            }
        }
        for (s, rec) in self.rec.iter().enumerate() {
            for (key, seen) in &rec.seen {
                let mut last: HashMap<&str, usize> = HashMap::new();
                for line in seen {
                    if let Some(&(channel, at)) = said.get(&**line) {
                        let before = last.insert(channel, at);
                        assert!(
                            before.map_or(true, |b| b < at),
                            "{s}/{key} saw {line:?} of #{channel} again or out of order"
                        );
                    }
                }
            }
        }
        for &(s, key) in &self.live {
            let Some(channel) = self.hubs[s].channel_of(key) else {
                continue;
            };
            let log = &logs[&**channel.key()];
            let joined = format!("{} has joined #", self.users[&(s, key)]);
            let since = log.iter().rposition(|l| l.starts_with(&joined)).unwrap();
            let expected: Vec<&Line> = log[since..]
                .iter()
                .copied()
                .filter(|l| l.contains(" says "))
                .collect();
            let seen = self.rec[s].seen.get(&key).map_or(&[][..], Vec::as_slice);
            let got: Vec<&Line> = seen
                .iter()
                .filter(|l| {
                    said.get(&***l)
                        .is_some_and(|&(c, at)| c == &**channel.key() && at > since)
                })
                .collect();
            assert_eq!(got, expected, "{s}/{key} on #{channel}");
        }
    }

    /// The rings drain, every line is checked, everyone ends, and nothing is left anywhere.
    fn finish(&mut self) {
        self.drain();
        if self.strict {
            self.check_lines();
        }
        while let Some(&(s, key)) = self.live.last() {
            self.forget(s, key);
            self.with_hub(s, |h, r| h.session_ended(key, r));
            self.check();
        }
        self.drain();
        if self.strict {
            assert!(self.hubs.iter().all(|h| h.homed_members() == 0));
            assert!(self.hubs.iter().all(|h| h.local_members() == 0));
        }
    }
}

fn sid(shard: usize, key: u64) -> SessionId {
    SessionId {
        shard: ShardId(shard as u16),
        key,
    }
}

/// An order to end the sessions of a user the harness names (`u<key>`, as its sessions log in)
/// or of nobody, from `asker`, having reached `told`, sent back up to 255 times.
fn forged_kill(asker: SessionId, told: SessionId, b: u8) -> Box<Kill> {
    Box::new(Kill {
        name: if b & 2 != 0 { "mallory" } else { "U1" }.into(),
        asker: (b & 4 != 0).then_some(asker),
        farewell: "forged".into(),
        told: vec![told; usize::from(b % 3)],
        hops: b,
    })
}

/// A traveller nobody sent: what a forged or repeated move carries.
fn stranger() -> Traveller {
    Traveller(Box::new(Arrival {
        user: "mallory".into(),
        seen: Vec::new(),
    }))
}

/// A message as it was, to deliver again (a move's session is a stranger the second time).
fn copy(msg: &ShardMsg) -> ShardMsg {
    match msg {
        ShardMsg::ToMember(msg) => ShardMsg::ToMember(msg.clone()),
        ShardMsg::ToUser(msg) => ShardMsg::ToUser(msg.clone()),
        ShardMsg::ToHome(msg) => ShardMsg::ToHome(match msg {
            ToHome::Join {
                channel,
                session,
                user,
                create,
            } => ToHome::Join {
                channel: channel.clone(),
                session: *session,
                user: user.clone(),
                create: *create,
            },
            ToHome::Leave { channel, session } => ToHome::Leave {
                channel: *channel,
                session: *session,
            },
            ToHome::Cancel { channel, session } => ToHome::Cancel {
                channel: channel.clone(),
                session: *session,
            },
            ToHome::Post {
                channel,
                session,
                line,
            } => ToHome::Post {
                channel: *channel,
                session: *session,
                line: line.clone(),
            },
            ToHome::Who { channel, session } => ToHome::Who {
                channel: *channel,
                session: *session,
            },
            ToHome::List { session } => ToHome::List { session: *session },
            ToHome::Move {
                channel, session, ..
            } => ToHome::Move {
                channel: *channel,
                session: *session,
                traveller: stranger(),
            },
            ToHome::Forward {
                session,
                lines,
                dropped,
            } => ToHome::Forward {
                session: *session,
                lines: lines.clone(),
                dropped: *dropped,
            },
            ToHome::Manage {
                channel,
                session,
                by,
                admin,
                change,
                asked,
            } => ToHome::Manage {
                channel: *channel,
                session: *session,
                by: by.clone(),
                admin: *admin,
                change: change.clone(),
                asked: *asked,
            },
            ToHome::Delete {
                channel,
                session,
                by,
            } => ToHome::Delete {
                channel: channel.clone(),
                session: *session,
                by: by.clone(),
            },
        }),
    }
}
