//! Who is online where, by user name, and private messages, which find their addressee through it.
//!
//! Each user name has a directory shard, `home_of_key(lower-cased name)`, as each channel has a
//! home; its hub keeps the sessions logged in under that name, wherever they are. A session says
//! when it logs in and off, and when it moves to another shard (see [`ToUser`]). A private message
//! goes from the sender's shard to the addressee's directory shard and from there to each of the
//! addressee's sessions; the first of them answers the sender, who waits for that answer before
//! its next command, so one sender's messages to one addressee stay in order (they take the same
//! rings, one after another).
//!
//! A session that moves says so first ([`ToUser::Moving`]); the directory holds the messages for
//! it until it has arrived ([`ToUser::Arrived`]), then sends them on, in order. One that reached
//! the old shard before the directory heard of the move waits there with the session's lines and
//! travels with them, or, if the session has left already, goes back to the directory, which by
//! then has heard of the move (the old shard told it first, on the same ring). After
//! [`MAX_HOPS`] of those (only a session that ended without saying so could cause them) the sender
//! is told the addressee is not online rather than the message going round forever.
//!
//! An admin's `/kill` (and `/ban-account`) finds the user's sessions the same way
//! ([`ToUser::Kill`]): the directory sends each an order to end ([`ToUser::Disconnect`]) and
//! answers the admin at once. A session that has left its shard by the time the order arrives
//! sends it back, and the directory follows the move as for a private message: it holds the
//! order until the session has arrived (or ends it where it has arrived already). The order
//! remembers which sessions it reached, so coming back it goes only to those it has not. Two
//! edges: after [`MAX_HOPS`] returns it is dropped, and a session of the user that logs in while
//! the order is coming back (only then) is ended with the others.
//!
//! The directory also answers who is online (`/who *`, `/whois`), in two rounds: each directory
//! shard names its users and where their sessions are ([`ToUser::Census`]), then the shards of
//! those sessions say when each logged in, last typed, and whether it is away
//! ([`ToUser::Facts`]), which only the session's own shard knows.
//!
//! # Ignoring
//!
//! A user's ignore list is kept with each of their sessions, on its shard, and checked where a
//! line is put in that session's queue: a channel line whose speaker it names, or a private
//! message from them, is not delivered (the sender of a private message is answered as if it
//! was). Only sessions that ignore someone have an entry, and while a shard has none a delivery
//! checks nothing more than that.

use std::borrow::Borrow;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use shard_proto::{
    home_of_user, Kill, Line, OnlineUser, SessionFacts, SessionId, ShardMsg, Tell, TellOrigin,
    ToMember, ToUser, Told,
};

use super::{Hub, Outputs, Reached};
use crate::cluster::wire::ClusterOut;

/// Times a private message may be sent back to the directory before its sender is told the
/// addressee is not online.
pub const MAX_HOPS: u8 = 4;

/// The directory part a shard keeps.
#[derive(Debug, Default)]
pub struct Directory {
    /// Name (as the account spells it; found in any case) → its sessions, in name order. A
    /// B-tree rather than a hash table: its nodes stay about two thirds full, where a hash
    /// table's slots run from seven eighths full down to under half just after it grows (about
    /// 55 against 38 to 76 bytes a user; 90 with the entries this table had before they were
    /// packed), and `/who *` wants the names in order.
    online: BTreeMap<Filed, Sessions>,
    /// Sessions moving between shards → the private messages (at most one per sender, who waits
    /// for the answer) and admins' orders to end them, held here until they arrive.
    moving: HashMap<SessionId, Vec<Held>>,
    /// Arrivals heard before the session they continue was: old session → new. Each is taken up
    /// when that session's own login or arrival is heard, which always comes, by another ring.
    early: HashMap<SessionId, SessionId>,
    /// Local sessions → what is kept for one user: only sessions that have been told something
    /// or are away are here, until they end or move (then it goes with them).
    personal: HashMap<u64, Personal>,
    /// Local sessions → the names their users ignore: only sessions whose user ignores someone.
    /// Apart from `personal`, so that a delivery checks nothing while it is empty.
    ignoring: HashMap<u64, Box<[Arc<str>]>>,
    /// Every name some local session's user ignores, with how many ignore it: a delivery looks
    /// its speaker up here once, and looks at each member only when someone ignores the speaker.
    ignored: HashMap<Filed, u32>,
    /// Local sessions whose user is a server admin.
    admins: HashSet<u64>,
}

/// What the directory holds for a session on its way between shards.
#[derive(Debug)]
enum Held {
    /// A private message, and whether this copy answers its sender.
    Tell(Box<Tell>, bool),
    /// An admin's order to end the session.
    Kill(Box<Kill>),
}

/// A user name as the directory files it: spelt as the account has it, equal to any spelling
/// that differs only in ASCII case (user names are ASCII), so the entry keeps the name to show
/// and any spelling typed finds it.
#[derive(Clone, Debug)]
struct Filed(Arc<str>);

/// A name looked up in the directory, in any case (see [`Filed`]).
#[repr(transparent)]
struct Folded(str);

impl Folded {
    fn new(name: &str) -> &Folded {
        // SAFETY: `Folded` is `repr(transparent)` over `str`, so the two pointers have one layout.
        unsafe { &*(name as *const str as *const Folded) }
    }
}

impl Hash for Folded {
    fn hash<H: Hasher>(&self, state: &mut H) {
        for b in folded(&self.0) {
            state.write_u8(b);
        }
        // As `str` does, so that a name is never the prefix of another's hash input.
        state.write_u8(0xff);
    }
}

impl PartialEq for Folded {
    fn eq(&self, other: &Folded) -> bool {
        self.0.eq_ignore_ascii_case(&other.0)
    }
}

impl Eq for Folded {}

impl Ord for Folded {
    fn cmp(&self, other: &Folded) -> std::cmp::Ordering {
        folded(&self.0).cmp(folded(&other.0))
    }
}

impl PartialOrd for Folded {
    fn partial_cmp(&self, other: &Folded) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Borrow<Folded> for Filed {
    fn borrow(&self) -> &Folded {
        Folded::new(&self.0)
    }
}

impl Hash for Filed {
    fn hash<H: Hasher>(&self, state: &mut H) {
        Folded::new(&self.0).hash(state);
    }
}

impl PartialEq for Filed {
    fn eq(&self, other: &Filed) -> bool {
        Folded::new(&self.0) == Folded::new(&other.0)
    }
}

impl Eq for Filed {}

impl Ord for Filed {
    fn cmp(&self, other: &Filed) -> std::cmp::Ordering {
        Folded::new(&self.0).cmp(Folded::new(&other.0))
    }
}

impl PartialOrd for Filed {
    fn partial_cmp(&self, other: &Filed) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

/// What is kept of a user beside their session, and travels with it when it moves.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Personal {
    /// Who last sent them a private message, for `/reply`.
    pub teller: Option<Arc<str>>,
    /// Their away message (empty: away with none), told to whoever sends them one.
    pub away: Option<Arc<str>>,
    /// The users they ignore (see the module doc), empty for most.
    pub ignoring: Box<[Arc<str>]>,
    /// Whether they are a server admin.
    pub admin: bool,
}

/// A user's sessions: nearly always one, packed into the entry itself (16 bytes in all, where a
/// `SessionId` alone takes 16).
#[derive(Debug)]
enum Sessions {
    /// One session: its shard in the top 16 bits, its key (under 2⁴⁸) below.
    One(u64),
    /// Several, or one whose key does not fit.
    Many(Box<[SessionId]>),
}

/// Keys below this pack into [`Sessions::One`] (a shard counts its keys up from 1: it would take
/// 8,900 years of a million logins a second to get there).
const PACKED_KEYS: u64 = 1 << 48;

impl Sessions {
    fn of(session: SessionId) -> Sessions {
        if session.key < PACKED_KEYS {
            Sessions::One(u64::from(session.shard.0) << 48 | session.key)
        } else {
            Sessions::Many(Box::new([session]))
        }
    }

    fn iter(&self) -> impl Iterator<Item = SessionId> + '_ {
        let (one, many) = match self {
            Sessions::One(packed) => {
                let session = SessionId {
                    shard: shard_proto::ShardId((packed >> 48) as u16),
                    key: packed & (PACKED_KEYS - 1),
                };
                (Some(session), &[][..])
            }
            Sessions::Many(sessions) => (None, &sessions[..]),
        };
        one.into_iter().chain(many.iter().copied())
    }

    fn contains(&self, session: SessionId) -> bool {
        self.iter().any(|s| s == session)
    }

    fn to_vec(&self) -> Vec<SessionId> {
        self.iter().collect()
    }
}

impl Directory {
    fn add(&mut self, name: Arc<str>, session: SessionId) {
        match self.online.entry(Filed(name)) {
            std::collections::btree_map::Entry::Vacant(e) => {
                e.insert(Sessions::of(session));
            }
            std::collections::btree_map::Entry::Occupied(mut e) => match e.get_mut() {
                sessions if sessions.contains(session) => {}
                sessions => {
                    let mut all = sessions.to_vec();
                    all.push(session);
                    *sessions = Sessions::Many(all.into_boxed_slice());
                }
            },
        }
    }

    /// Forgets `session`, giving back what was held for it; `None` if it was not here.
    fn remove(&mut self, name: &str, session: SessionId) -> Option<Vec<Held>> {
        let sessions = self.online.get_mut(Folded::new(name))?;
        match sessions {
            Sessions::Many(all) => {
                let at = all.iter().position(|s| *s == session)?;
                let mut rest = all.to_vec();
                rest.swap_remove(at);
                match rest[..] {
                    [] => {
                        self.online.remove(Folded::new(name));
                    }
                    [one] => *sessions = Sessions::of(one),
                    _ => *sessions = Sessions::Many(rest.into_boxed_slice()),
                }
            }
            one if one.contains(session) => {
                self.online.remove(Folded::new(name));
            }
            Sessions::One(_) => return None,
        }
        Some(self.moving.remove(&session).unwrap_or_default())
    }

    fn set_moving(&mut self, name: &str, session: SessionId) {
        if self
            .online
            .get(Folded::new(name))
            .is_some_and(|s| s.contains(session))
        {
            self.moving.entry(session).or_default();
        }
    }

    /// Where `session` is now, following the arrivals heard early.
    fn follow(&mut self, mut session: SessionId) -> SessionId {
        while let Some(next) = self.early.remove(&session) {
            session = next;
        }
        session
    }

    /// How many users are here, and the first `first` of them by name (ASCII case ignored); or,
    /// with `name`, that user alone.
    fn census(&self, first: usize, name: Option<&str>) -> (u32, Vec<OnlineUser>) {
        let user = |(name, sessions): (&Filed, &Sessions)| OnlineUser {
            name: name.0.clone(),
            sessions: sessions.to_vec(),
        };
        if let Some(name) = name {
            let found: Vec<OnlineUser> = self
                .online
                .get_key_value(Folded::new(name))
                .map(user)
                .into_iter()
                .collect();
            return (found.len() as u32, found);
        }
        let total = u32::try_from(self.online.len()).unwrap_or(u32::MAX);
        // In name order already (two accounts' names never differ in case alone, so this is
        // `by_name`'s order).
        (total, self.online.iter().take(first).map(user).collect())
    }

    /// Whether some local session's user ignores who said `line` (see [`speaker`]): nearly
    /// always an empty table's check.
    pub(super) fn anyone_ignores(&self, line: &str) -> bool {
        !self.ignored.is_empty() && self.ignored.contains_key(Folded::new(speaker(line)))
    }

    /// Sets (or, with none, clears) whom local session `key`'s user ignores, keeping the count
    /// of who is ignored.
    fn set_ignoring(&mut self, key: u64, names: Box<[Arc<str>]>) {
        self.take_ignoring(key);
        if names.is_empty() {
            return;
        }
        for name in names.iter() {
            *self.ignored.entry(Filed(name.clone())).or_default() += 1;
        }
        self.ignoring.insert(key, names);
    }

    /// Forgets whom local session `key`'s user ignores, giving the list back.
    fn take_ignoring(&mut self, key: u64) -> Option<Box<[Arc<str>]>> {
        let names = self.ignoring.remove(&key)?;
        for name in names.iter() {
            if let Some(count) = self.ignored.get_mut(Folded::new(name)) {
                *count -= 1;
                if *count == 0 {
                    self.ignored.remove(Folded::new(name));
                }
            }
        }
        Some(names)
    }

    /// Whether local session `key`'s user ignores `name`.
    fn ignores(&self, key: u64, name: &str) -> bool {
        self.ignoring
            .get(&key)
            .is_some_and(|names| names.iter().any(|n| n.eq_ignore_ascii_case(name)))
    }
}

/// User names in the order `/who *` lists them: ASCII case ignored, then as spelt.
pub fn by_name(a: &str, b: &str) -> std::cmp::Ordering {
    folded(a).cmp(folded(b)).then_with(|| a.cmp(b))
}

/// A name's bytes with ASCII letters lower-cased, for comparing without a copy (user names are
/// ASCII, and unique ignoring its case).
fn folded(name: &str) -> impl Iterator<Item = u8> + '_ {
    name.bytes().map(|b| b.to_ascii_lowercase())
}

/// Who said `line`: its first word. Every line a channel orders begins with the name of the user
/// it is about (`alice says, …`, `alice waves`, `alice has joined #lobby`), and user names have
/// no spaces.
pub fn speaker(line: &str) -> &str {
    line.split(' ').next().unwrap_or("")
}

impl Hub {
    /// Local session `key` has logged in as `name` (the session's own copy: the directory keeps
    /// it, so the name is not stored twice).
    pub fn user_online(&mut self, name: &Arc<str>, key: u64, out: &mut impl Outputs) {
        let session = self.session_id(key);
        self.send_about_user(
            ToUser::Online {
                name: name.clone(),
                session,
            },
            out,
        );
    }

    /// Who last sent local session `key` a private message.
    pub fn last_teller(&self, key: u64) -> Option<Arc<str>> {
        self.directory.personal.get(&key)?.teller.clone()
    }

    /// Marks local session `key` away with `message` (empty: none), or back (`None`); returns
    /// whether it was away.
    pub fn set_away(&mut self, key: u64, message: Option<Arc<str>>) -> bool {
        let personal = &mut self.directory.personal;
        let was = personal.get(&key).is_some_and(|p| p.away.is_some());
        match message {
            Some(message) => personal.entry(key).or_default().away = Some(message),
            None => {
                if let Some(p) = personal.get_mut(&key) {
                    p.away = None;
                    if p.teller.is_none() {
                        personal.remove(&key);
                    }
                }
            }
        }
        was
    }

    /// The users local session `key`'s user ignores, in the order they were added.
    pub fn ignoring(&self, key: u64) -> &[Arc<str>] {
        self.directory.ignoring.get(&key).map_or(&[], |names| names)
    }

    /// Sets whom local session `key`'s user ignores (empty: nobody).
    pub fn set_ignoring(&mut self, key: u64, names: Box<[Arc<str>]>) {
        self.directory.set_ignoring(key, names);
    }

    /// Local session `key`'s user, `name`, has changed whom they ignore to `names`: this session
    /// at once, and the user's other sessions on this node through the directory.
    pub fn change_ignoring(
        &mut self,
        key: u64,
        name: &str,
        names: Box<[Arc<str>]>,
        out: &mut impl Outputs,
    ) {
        let shared: Arc<[Arc<str>]> = names.iter().cloned().collect();
        self.set_ignoring(key, names);
        if self.cluster.is_some() {
            // The user's sessions on other nodes (no node knows who is online elsewhere).
            out.to_cluster(ClusterOut::Ignoring {
                name: name.into(),
                names: shared.to_vec(),
            });
        }
        let msg = ToUser::Ignoring {
            name: name.into(),
            from: Some(self.session_id(key)),
            names: shared,
        };
        self.send_about_user(msg, out);
    }

    /// User `name` has changed whom they ignore on another node of a cluster: their sessions
    /// here take the new list.
    pub fn ignoring_changed_elsewhere(
        &mut self,
        name: Arc<str>,
        names: Vec<Arc<str>>,
        out: &mut impl Outputs,
    ) {
        let msg = ToUser::Ignoring {
            name,
            from: None,
            names: names.into(),
        };
        self.send_about_user(msg, out);
    }

    /// Whether local session `key`'s user ignores `name` (any case).
    pub fn ignores(&self, key: u64, name: &str) -> bool {
        self.directory.ignores(key, name)
    }

    /// Records whether local session `key`'s user is a server admin.
    pub fn set_admin(&mut self, key: u64, admin: bool) {
        if admin {
            self.directory.admins.insert(key);
        } else {
            self.directory.admins.remove(&key);
        }
    }

    /// Whether local session `key`'s user is a server admin.
    pub fn is_admin(&self, key: u64) -> bool {
        self.directory.admins.contains(&key)
    }

    /// Local session `key`, logged in as `name`, has logged off.
    pub fn user_offline(&mut self, name: &str, key: u64, out: &mut impl Outputs) {
        self.directory.personal.remove(&key);
        self.directory.take_ignoring(key);
        self.directory.admins.remove(&key);
        let session = self.session_id(key);
        self.user_gone(name, session, out);
    }

    /// Session `session` (of any shard), logged in as `name`, has ended: also one that said it
    /// was moving and never arrived (its move failed, or its new shard was closing), which the
    /// directory would otherwise keep, holding what is sent to it.
    pub fn user_gone(&mut self, name: &str, session: SessionId, out: &mut impl Outputs) {
        self.send_about_user(
            ToUser::Offline {
                name: name.into(),
                session,
            },
            out,
        );
    }

    /// Local session `key`, logged in as `name`, is moving to another shard, taking what is kept
    /// for it along (`/reply`, away and ignoring go on working there).
    pub fn user_moving(
        &mut self,
        name: &str,
        key: u64,
        out: &mut impl Outputs,
    ) -> Option<Personal> {
        let mut personal = self.directory.personal.remove(&key);
        if let Some(ignoring) = self.directory.take_ignoring(key) {
            personal.get_or_insert_with(Personal::default).ignoring = ignoring;
        }
        if self.directory.admins.remove(&key) {
            personal.get_or_insert_with(Personal::default).admin = true;
        }
        let session = self.session_id(key);
        self.send_about_user(
            ToUser::Moving {
                name: name.into(),
                session,
            },
            out,
        );
        personal
    }

    /// Session `from` of another shard, logged in as `name`, has arrived here as `key`, with what
    /// was kept for it there.
    pub fn user_arrived(
        &mut self,
        name: &Arc<str>,
        from: SessionId,
        key: u64,
        personal: Option<Personal>,
        out: &mut impl Outputs,
    ) {
        if let Some(mut personal) = personal {
            self.set_ignoring(key, std::mem::take(&mut personal.ignoring));
            self.set_admin(key, personal.admin);
            if personal.teller.is_some() || personal.away.is_some() {
                self.directory.personal.insert(key, personal);
            }
        }
        let to = self.session_id(key);
        self.send_about_user(
            ToUser::Arrived {
                name: name.clone(),
                from,
                to,
            },
            out,
        );
    }

    /// Local session `key` asks who is online: each shard's part of the directory answers with
    /// [`crate::mailbox::Reply::Census`], naming its first `first` users; or, with `name`, the
    /// name's directory shard alone answers about that user. Returns how many answers come.
    pub fn census(
        &mut self,
        key: u64,
        first: u32,
        name: Option<&str>,
        out: &mut impl Outputs,
    ) -> usize {
        let asker = self.session_id(key);
        if let Some(name) = name {
            let msg = ToUser::Census {
                asker,
                first,
                name: Some(name.into()),
            };
            self.send_about_user(msg, out);
            return 1;
        }
        for shard in 0..self.shards {
            let msg = ToUser::Census {
                asker,
                first,
                name: None,
            };
            self.route(
                shard_proto::ShardId(shard as u16),
                ShardMsg::ToUser(msg),
                out,
            );
        }
        self.shards
    }

    /// This shard's part of the directory: how many users it has, and the first `first` of
    /// them by name (or, with `name`, that one).
    pub(super) fn census_part(&self, first: u32, name: Option<&str>) -> (u32, Vec<OnlineUser>) {
        let first = usize::try_from(first).unwrap_or(usize::MAX);
        self.directory.census(first, name)
    }

    /// What this shard knows of those of `keys` that are its logged-in sessions.
    pub(super) fn facts_of(&self, keys: &[u64], out: &impl Outputs) -> Vec<SessionFacts> {
        keys.iter()
            .filter_map(|&key| {
                let (since, last_input) = out.times(key)?;
                Some(SessionFacts {
                    session: self.session_id(key),
                    since,
                    last_input,
                    away: self
                        .directory
                        .personal
                        .get(&key)
                        .and_then(|p| p.away.clone()),
                    channel: self.channel_of(key).cloned(),
                })
            })
            .collect()
    }

    /// Local session `key` asks the other nodes of a cluster who of their users are online (the
    /// first `first` by name, or `name` alone): the answer comes as
    /// [`crate::mailbox::Reply::Elsewhere`]. False (and nothing asked) outside a cluster or while
    /// NATS is away.
    pub fn census_elsewhere(
        &mut self,
        key: u64,
        first: u32,
        name: Option<&str>,
        out: &mut impl Outputs,
    ) -> bool {
        if !self.cluster_connected() {
            return false;
        }
        out.to_cluster(ClusterOut::Users {
            session: self.session_id(key),
            first,
            name: name.map(Arc::from),
        });
        true
    }

    /// Local session `key` asks the shards of `sessions` what they know of them: each shard
    /// answers with [`crate::mailbox::Reply::Facts`]. Returns how many answers come.
    pub fn facts(&mut self, key: u64, sessions: &[SessionId], out: &mut impl Outputs) -> usize {
        let asker = self.session_id(key);
        let mut by_shard: Vec<Vec<u64>> = vec![Vec::new(); self.shards];
        for session in sessions {
            if let Some(keys) = by_shard.get_mut(session.shard.index()) {
                keys.push(session.key);
            }
        }
        let mut asked = 0;
        for (shard, keys) in by_shard.into_iter().enumerate() {
            if keys.is_empty() {
                continue;
            }
            let msg = ToUser::Facts {
                asker,
                keys: Box::new(keys),
            };
            self.route(
                shard_proto::ShardId(shard as u16),
                ShardMsg::ToUser(msg),
                out,
            );
            asked += 1;
        }
        asked
    }

    /// Local session `key`, logged in as `from`, tells `to` the line `line`; the answer comes back
    /// as [`crate::mailbox::Reply::Told`].
    pub fn tell(&mut self, key: u64, from: Arc<str>, to: &str, line: Line, out: &mut impl Outputs) {
        let tell = Box::new(Tell {
            from,
            sender: self.session_id(key),
            to: to.into(),
            line,
            hops: 0,
            origin: TellOrigin::Here,
        });
        self.send_about_user(ToUser::Tell(tell), out);
    }

    /// A user of another node of a cluster tells `to` (of this node, perhaps) the line `line`;
    /// the answer goes back through the cluster's bridge to `reply` (with none, nobody waits for
    /// it).
    pub fn tell_from_node(
        &mut self,
        from: Arc<str>,
        to: Arc<str>,
        line: Line,
        reply: Option<Arc<str>>,
        out: &mut impl Outputs,
    ) {
        let tell = Box::new(Tell {
            from,
            // Nobody here waits: the answer goes to `reply`.
            sender: self.session_id(0),
            to,
            line,
            hops: 0,
            origin: TellOrigin::Node { reply },
        });
        self.send_about_user(ToUser::Tell(tell), out);
    }

    /// Sends `msg` to the directory shard of the name it is about.
    fn send_about_user(&mut self, msg: ToUser, out: &mut impl Outputs) {
        let dest = match &msg {
            ToUser::Online { name, .. }
            | ToUser::Offline { name, .. }
            | ToUser::Moving { name, .. }
            | ToUser::Arrived { name, .. } => home_of_user(name, self.shards),
            ToUser::Tell(tell) => home_of_user(&tell.to, self.shards),
            ToUser::Kill(kill) => home_of_user(&kill.name, self.shards),
            ToUser::Disconnect { session, .. } => session.shard,
            // To every shard (see `wall`), not through here.
            ToUser::Wall { .. } => self.id,
            // Without a name it goes to every shard (see `census`), not through here.
            ToUser::Census { name, asker, .. } => match name {
                Some(name) => home_of_user(name, self.shards),
                None => asker.shard,
            },
            ToUser::Facts { asker, .. } => asker.shard,
            ToUser::Ignoring { name, .. } => home_of_user(name, self.shards),
            ToUser::SetIgnoring { session, .. } => session.shard,
            ToUser::Deliver { session, .. } => session.shard,
        };
        self.route(dest, ShardMsg::ToUser(msg), out);
    }

    pub(super) fn at_user(&mut self, msg: ToUser, out: &mut impl Outputs) {
        match msg {
            ToUser::Online { name, session } => {
                let session = self.directory.follow(session);
                self.directory.add(name, session);
            }
            ToUser::Offline { name, session } => {
                // Held for a session that ended on its way (its new shard was closing); an order
                // to end it has nothing left to do.
                for held in self.directory.remove(&name, session).unwrap_or_default() {
                    if let Held::Tell(tell, true) = held {
                        self.told(&tell, Told::NotOnline, out);
                    }
                }
            }
            ToUser::Moving { name, session } => self.directory.set_moving(&name, session),
            ToUser::Arrived { name, from, to } => {
                // Rings from different shards keep no order between them: this may come before
                // the login (or arrival) of `from`, or before the arrival that led to `from`.
                let Some(held) = self.directory.remove(&name, from) else {
                    self.directory.early.insert(from, to);
                    return;
                };
                let to = self.directory.follow(to);
                self.directory.add(name, to);
                for held in held {
                    let msg = match held {
                        Held::Tell(tell, answer) => ToUser::Deliver {
                            tell,
                            session: to,
                            answer,
                        },
                        Held::Kill(mut kill) => {
                            kill.told.push(to);
                            ToUser::Disconnect { kill, session: to }
                        }
                    };
                    self.send_about_user(msg, out);
                }
            }
            ToUser::Census { asker, first, name } => {
                let (total, users) = self.census_part(first, name.as_deref());
                let msg = ToMember::Census {
                    session: asker,
                    total,
                    users: Box::new(users),
                };
                self.route(asker.shard, ShardMsg::ToMember(msg), out);
            }
            ToUser::Facts { asker, keys } => {
                let facts = self.facts_of(&keys, out);
                let msg = ToMember::Facts {
                    session: asker,
                    facts: Box::new(facts),
                };
                self.route(asker.shard, ShardMsg::ToMember(msg), out);
            }
            ToUser::Tell(tell) => {
                // Asked once: a tell sent back here (its session had moved on) has been.
                let asks_others =
                    tell.origin == TellOrigin::Here && tell.hops == 0 && self.cluster_connected();
                let Some(sessions) = self.directory.online.get(Folded::new(&tell.to)) else {
                    // Not on this node: the other nodes are asked (the bridge gathers their
                    // answers into one), unless this came from one of them.
                    if asks_others {
                        return out.to_cluster(ClusterOut::Tell(tell));
                    }
                    return self.told(&tell, Told::NotOnline, out);
                };
                if asks_others {
                    // The addressee may be logged in on other nodes too: a copy goes there,
                    // answered by nobody (the answer comes from here).
                    out.to_cluster(ClusterOut::TellCopy(tell.clone()));
                }
                let mut deliveries = Vec::new();
                for (i, session) in sessions.iter().enumerate() {
                    let answer = i == 0;
                    match self.directory.moving.get_mut(&session) {
                        Some(held) => held.push(Held::Tell(tell.clone(), answer)),
                        None => deliveries.push((session, answer)),
                    }
                }
                for (session, answer) in deliveries {
                    let deliver = ToUser::Deliver {
                        tell: tell.clone(),
                        session,
                        answer,
                    };
                    self.send_about_user(deliver, out);
                }
            }
            ToUser::Kill(kill) => self.kill(kill, out),
            ToUser::Disconnect { mut kill, session } => {
                if session.shard != self.id {
                    return;
                }
                match out.disconnect(session.key, &kill.farewell) {
                    Reached::Here => {}
                    // Gone on to another shard (or ended): the directory, which heard of the
                    // move (or the end) from this shard before this comes back, knows better.
                    Reached::InTransit | Reached::Nobody if kill.hops < MAX_HOPS => {
                        kill.hops += 1;
                        kill.told.retain(|s| *s != session);
                        self.send_about_user(ToUser::Kill(kill), out);
                    }
                    Reached::InTransit | Reached::Nobody => {}
                }
            }
            ToUser::Wall { line } => out.wall(&line),
            ToUser::Ignoring { name, from, names } => {
                let sessions: Vec<SessionId> = self
                    .directory
                    .online
                    .get(Folded::new(&name))
                    .map(Sessions::to_vec)
                    .unwrap_or_default();
                for session in sessions.into_iter().filter(|s| Some(*s) != from) {
                    let msg = ToUser::SetIgnoring {
                        session,
                        names: names.clone(),
                    };
                    self.send_about_user(msg, out);
                }
            }
            ToUser::SetIgnoring { session, names } => {
                // A session that has left this shard meanwhile took its old list along: it has the
                // new one at its next login.
                if session.shard == self.id && out.times(session.key).is_some() {
                    self.set_ignoring(session.key, names.iter().cloned().collect());
                }
            }
            ToUser::Deliver {
                tell,
                session,
                answer,
            } => {
                if session.shard != self.id {
                    return;
                }
                if self.directory.ignores(session.key, &tell.from) {
                    // Not delivered, and answered as if it was: the sender is not told.
                    if answer {
                        let away = self.directory.personal.get(&session.key);
                        let away = away.and_then(|p| p.away.clone());
                        self.told(&tell, Told::Delivered { away }, out);
                    }
                    return;
                }
                let outcome = match out.tell(session.key, &tell.line) {
                    Reached::Here => {
                        let personal = self.directory.personal.entry(session.key).or_default();
                        personal.teller = Some(tell.from.clone());
                        Told::Delivered {
                            away: personal.away.clone(),
                        }
                    }
                    // What was kept for the session has gone with it: the line follows it, but
                    // neither its last teller nor its away message is here to update or read.
                    Reached::InTransit => Told::Delivered { away: None },
                    // Moved or gone since the directory looked, which knows better by now: it
                    // heard of the move (or the end) from this shard, before this.
                    Reached::Nobody if answer && tell.hops < MAX_HOPS => {
                        let mut tell = tell;
                        tell.hops += 1;
                        return self.send_about_user(ToUser::Tell(tell), out);
                    }
                    Reached::Nobody => Told::NotOnline,
                };
                if answer {
                    self.told(&tell, outcome, out);
                }
            }
        }
    }

    /// At the directory: sends an admin's order to each session of its user it has not reached
    /// yet (holding it for one on its way between shards), answering the admin the first time.
    fn kill(&mut self, mut kill: Box<Kill>, out: &mut impl Outputs) {
        let found = self
            .directory
            .online
            .get_key_value(Folded::new(&kill.name))
            .map(|(name, sessions)| (name.0.clone(), sessions.to_vec()));
        if let (0, Some(asker)) = (kill.hops, kill.asker) {
            let msg = ToMember::Disconnected {
                session: asker,
                name: found.as_ref().map(|(name, _)| name.clone()),
            };
            self.route(asker.shard, ShardMsg::ToMember(msg), out);
        }
        let Some((_, sessions)) = found else {
            return;
        };
        let targets: Vec<SessionId> = sessions
            .into_iter()
            .filter(|s| !kill.told.contains(s))
            .collect();
        kill.told.extend(&targets);
        for session in targets {
            match self.directory.moving.get_mut(&session) {
                Some(held) => held.push(Held::Kill(kill.clone())),
                None => {
                    let msg = ToUser::Disconnect {
                        kill: kill.clone(),
                        session,
                    };
                    self.send_about_user(msg, out);
                }
            }
        }
    }

    /// Ends every session of user `name` (any case), on any shard, each telling its user
    /// `farewell` as it closes: a server admin's order. With `asker` (a local session), the
    /// directory answers it with [`crate::mailbox::Reply::Disconnected`]: the user as the account
    /// spells the name, or that none of their sessions is online.
    pub fn disconnect_user(
        &mut self,
        asker: Option<u64>,
        name: &str,
        farewell: Line,
        out: &mut impl Outputs,
    ) {
        let kill = Box::new(Kill {
            name: name.into(),
            asker: asker.map(|key| self.session_id(key)),
            farewell,
            told: Vec::new(),
            hops: 0,
        });
        self.send_about_user(ToUser::Kill(kill), out);
    }

    /// [`Hub::disconnect_user`] on the other nodes of a cluster: with `asker`, the answer comes
    /// as [`crate::mailbox::Reply::DisconnectedElsewhere`]. False (and nothing asked) outside a
    /// cluster or while NATS is away.
    pub fn disconnect_elsewhere(
        &mut self,
        asker: Option<u64>,
        name: &str,
        farewell: Line,
        out: &mut impl Outputs,
    ) -> bool {
        if !self.cluster_connected() {
            return false;
        }
        out.to_cluster(ClusterOut::Kill {
            asker: asker.map(|key| self.session_id(key)),
            name: name.into(),
            farewell,
        });
        true
    }

    /// An admin of another node ends user `name`'s sessions here (this shard keeps the name's
    /// directory entry); the answer, whether any was here, goes back through the bridge.
    pub(super) fn kill_from_node(
        &mut self,
        name: Arc<str>,
        farewell: Line,
        reply: Arc<str>,
        out: &mut impl Outputs,
    ) {
        let found = self
            .directory
            .online
            .get_key_value(Folded::new(&name))
            .map(|(name, _)| name.0.clone());
        out.to_cluster(ClusterOut::Killed { reply, found });
        let kill = Box::new(Kill {
            name,
            asker: None,
            farewell,
            told: Vec::new(),
            hops: 0,
        });
        self.kill(kill, out);
    }

    /// Puts `line` in the chat queue of every logged-in session of every shard: one
    /// [`ToUser::Wall`] per shard; in a cluster, every other node's too.
    pub fn wall(&mut self, line: Line, out: &mut impl Outputs) {
        if self.cluster_connected() {
            out.to_cluster(ClusterOut::Wall(line.clone()));
        }
        for shard in 0..self.shards {
            let msg = ToUser::Wall { line: line.clone() };
            self.route(
                shard_proto::ShardId(shard as u16),
                ShardMsg::ToUser(msg),
                out,
            );
        }
    }

    fn told(&mut self, tell: &Tell, outcome: Told, out: &mut impl Outputs) {
        match &tell.origin {
            TellOrigin::Here => {}
            TellOrigin::Node { reply: Some(reply) } => {
                return out.to_cluster(ClusterOut::Told {
                    reply: reply.clone(),
                    outcome,
                })
            }
            TellOrigin::Node { reply: None } => return,
        }
        let msg = ToMember::Told {
            session: tell.sender,
            to: tell.to.clone(),
            outcome,
        };
        self.route(tell.sender.shard, ShardMsg::ToMember(msg), out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shard_proto::ShardId;

    fn sid(shard: u16, key: u64) -> SessionId {
        SessionId {
            shard: ShardId(shard),
            key,
        }
    }

    #[test]
    fn the_directory_keeps_every_session_of_a_name_in_any_case_and_in_name_order() {
        assert_eq!(std::mem::size_of::<Sessions>(), 16);
        let mut d = Directory::default();
        let big = sid(u16::MAX, PACKED_KEYS + 7);
        for (name, session) in [
            ("bob", sid(1, 5)),
            ("Ann", sid(u16::MAX, PACKED_KEYS - 1)),
            ("carl", big),
            ("BOB", sid(0, 9)),
            ("bob", sid(1, 5)),
        ] {
            d.add(name.into(), session);
        }
        let (total, users) = d.census(10, None);
        assert_eq!(total, 3);
        let listed: Vec<(&str, Vec<SessionId>)> = users
            .iter()
            .map(|u| (&*u.name, u.sessions.clone()))
            .collect();
        assert_eq!(
            listed,
            [
                ("Ann", vec![sid(u16::MAX, PACKED_KEYS - 1)]),
                ("bob", vec![sid(1, 5), sid(0, 9)]),
                ("carl", vec![big]),
            ]
        );
        assert_eq!(d.census(1, None).1.len(), 1);
        assert_eq!(d.census(0, Some("BOB")).1[0].sessions.len(), 2);
        // Taken out one by one, in any case; a session not there is no change.
        assert!(d.remove("Bob", sid(1, 6)).is_none());
        assert!(d.remove("bob", sid(1, 5)).is_some());
        assert!(d.online[Folded::new("BOB")].contains(sid(0, 9)));
        assert!(matches!(d.online[Folded::new("bob")], Sessions::One(_)));
        assert!(d.remove("bob", sid(0, 9)).is_some());
        assert!(d.remove("CARL", big).is_some());
        assert_eq!(d.census(10, None).0, 1);
    }
}
