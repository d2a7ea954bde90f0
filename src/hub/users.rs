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

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::sync::Arc;

use shard_proto::{home_of_key, Line, SessionId, ShardMsg, Tell, ToMember, ToUser, Told};

use super::{Hub, Outputs, Reached};

/// Times a private message may be sent back to the directory before its sender is told the
/// addressee is not online.
pub const MAX_HOPS: u8 = 4;

/// The directory part a shard keeps.
#[derive(Debug, Default)]
pub struct Directory {
    /// Lower-cased name → its sessions.
    online: HashMap<Arc<str>, Sessions>,
    /// Sessions moving between shards → the private messages for them, held here until they
    /// arrive (at most one per sender, who waits for the answer), each with whether it answers.
    moving: HashMap<SessionId, Vec<(Box<Tell>, bool)>>,
    /// Arrivals heard before the session they continue was: old session → new. Each is taken up
    /// when that session's own login or arrival is heard, which always comes, by another ring.
    early: HashMap<SessionId, SessionId>,
    /// Local sessions → what is kept for one user: only sessions that have been told something
    /// or are away are here, until they end or move (then it goes with them).
    personal: HashMap<u64, Personal>,
}

/// What is kept of a user beside their session, and travels with it when it moves.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Personal {
    /// Who last sent them a private message, for `/reply`.
    pub teller: Option<Arc<str>>,
    /// Their away message (empty: away with none), told to whoever sends them one.
    pub away: Option<Arc<str>>,
}

/// A user's sessions: nearly always one, kept in the table itself.
#[derive(Debug)]
enum Sessions {
    One(SessionId),
    Many(Vec<SessionId>),
}

impl Sessions {
    fn as_slice(&self) -> &[SessionId] {
        match self {
            Sessions::One(session) => std::slice::from_ref(session),
            Sessions::Many(sessions) => sessions,
        }
    }
}

impl Directory {
    fn add(&mut self, name: Arc<str>, session: SessionId) {
        match self.online.entry(name) {
            Entry::Vacant(e) => {
                e.insert(Sessions::One(session));
            }
            Entry::Occupied(mut e) => {
                let sessions = e.get_mut();
                if sessions.as_slice().contains(&session) {
                    return;
                }
                let mut all = sessions.as_slice().to_vec();
                all.push(session);
                *sessions = Sessions::Many(all);
            }
        }
    }

    /// Forgets `session`, giving back what was held for it; `None` if it was not here.
    fn remove(&mut self, name: &str, session: SessionId) -> Option<Vec<(Box<Tell>, bool)>> {
        let sessions = self.online.get_mut(name)?;
        match sessions {
            Sessions::One(s) if *s == session => {
                self.online.remove(name);
            }
            Sessions::One(_) => return None,
            Sessions::Many(all) => {
                let at = all.iter().position(|s| *s == session)?;
                all.swap_remove(at);
                if let [one] = all[..] {
                    *sessions = Sessions::One(one);
                }
            }
        }
        Some(self.moving.remove(&session).unwrap_or_default())
    }

    fn set_moving(&mut self, name: &str, session: SessionId) {
        if self
            .online
            .get(name)
            .is_some_and(|s| s.as_slice().contains(&session))
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
}

/// The key a user name is filed under.
pub fn user_key(name: &str) -> Arc<str> {
    name.to_ascii_lowercase().into()
}

impl Hub {
    /// Local session `key` has logged in as `name`.
    pub fn user_online(&mut self, name: &str, key: u64, out: &mut impl Outputs) {
        let session = self.session_id(key);
        self.send_about_user(
            ToUser::Online {
                name: user_key(name),
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

    /// Local session `key`, logged in as `name`, has logged off.
    pub fn user_offline(&mut self, name: &str, key: u64, out: &mut impl Outputs) {
        self.directory.personal.remove(&key);
        let session = self.session_id(key);
        self.send_about_user(
            ToUser::Offline {
                name: user_key(name),
                session,
            },
            out,
        );
    }

    /// Local session `key`, logged in as `name`, is moving to another shard, taking what is kept
    /// for it along (`/reply` and away go on working there).
    pub fn user_moving(
        &mut self,
        name: &str,
        key: u64,
        out: &mut impl Outputs,
    ) -> Option<Personal> {
        let personal = self.directory.personal.remove(&key);
        let session = self.session_id(key);
        self.send_about_user(
            ToUser::Moving {
                name: user_key(name),
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
        name: &str,
        from: SessionId,
        key: u64,
        personal: Option<Personal>,
        out: &mut impl Outputs,
    ) {
        if let Some(personal) = personal {
            self.directory.personal.insert(key, personal);
        }
        let to = self.session_id(key);
        self.send_about_user(
            ToUser::Arrived {
                name: user_key(name),
                from,
                to,
            },
            out,
        );
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
        });
        self.send_about_user(ToUser::Tell(tell), out);
    }

    /// Sends `msg` to the directory shard of the name it is about.
    fn send_about_user(&mut self, msg: ToUser, out: &mut impl Outputs) {
        let dest = match &msg {
            ToUser::Online { name, .. }
            | ToUser::Offline { name, .. }
            | ToUser::Moving { name, .. }
            | ToUser::Arrived { name, .. } => home_of_key(name, self.shards),
            ToUser::Tell(tell) => home_of_key(&user_key(&tell.to), self.shards),
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
                // Held for a session that ended on its way (its new shard was closing).
                for (tell, answer) in self.directory.remove(&name, session).unwrap_or_default() {
                    if answer {
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
                for (tell, answer) in held {
                    let deliver = ToUser::Deliver {
                        tell,
                        session: to,
                        answer,
                    };
                    self.send_about_user(deliver, out);
                }
            }
            ToUser::Tell(tell) => {
                let Some(sessions) = self.directory.online.get(&*user_key(&tell.to)) else {
                    return self.told(&tell, Told::NotOnline, out);
                };
                let mut deliveries = Vec::new();
                for (i, &session) in sessions.as_slice().iter().enumerate() {
                    let answer = i == 0;
                    match self.directory.moving.get_mut(&session) {
                        Some(held) => held.push((tell.clone(), answer)),
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
            ToUser::Deliver {
                tell,
                session,
                answer,
            } => {
                if session.shard != self.id {
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

    fn told(&mut self, tell: &Tell, outcome: Told, out: &mut impl Outputs) {
        let msg = ToMember::Told {
            session: tell.sender,
            to: tell.to.clone(),
            outcome,
        };
        self.route(tell.sender.shard, ShardMsg::ToMember(msg), out);
    }
}
