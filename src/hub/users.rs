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

use std::collections::HashMap;
use std::sync::Arc;

use shard_proto::{home_of_key, Line, SessionId, ShardMsg, Tell, ToMember, ToUser};

use super::{Hub, Outputs};

/// Times a private message may be sent back to the directory before its sender is told the
/// addressee is not online.
pub const MAX_HOPS: u8 = 4;

/// The directory part a shard keeps: lower-cased name → its sessions.
#[derive(Debug, Default)]
pub struct Directory {
    online: HashMap<Arc<str>, Vec<Entry>>,
    /// Arrivals heard before the session they continue was: old session → new. Each is taken up
    /// when that session's own login or arrival is heard, which always comes, by another ring.
    early: HashMap<SessionId, SessionId>,
    /// Local sessions → who last sent them a private message, for `/reply`; only sessions that
    /// have been told something are here, until they end or move.
    last_teller: HashMap<u64, Arc<str>>,
}

/// One session of a user.
#[derive(Debug)]
struct Entry {
    session: SessionId,
    /// While it moves between shards: the private messages for it, held here until it arrives
    /// (at most one per sender, who waits for the answer), each with whether it answers.
    moving: Option<Vec<(Box<Tell>, bool)>>,
}

impl Directory {
    fn add(&mut self, name: Arc<str>, session: SessionId) {
        let entries = self.online.entry(name).or_default();
        if !entries.iter().any(|e| e.session == session) {
            entries.push(Entry {
                session,
                moving: None,
            });
        }
    }

    /// Forgets `session`, giving back what was held for it; `None` if it was not here.
    fn remove(&mut self, name: &str, session: SessionId) -> Option<Vec<(Box<Tell>, bool)>> {
        let entries = self.online.get_mut(name)?;
        let mut held = None;
        entries.retain_mut(|e| {
            if e.session != session {
                return true;
            }
            held = Some(e.moving.take().unwrap_or_default());
            false
        });
        if entries.is_empty() {
            self.online.remove(name);
        }
        held
    }

    /// Where `session` is now, following the arrivals heard early.
    fn follow(&mut self, mut session: SessionId) -> SessionId {
        while let Some(next) = self.early.remove(&session) {
            session = next;
        }
        session
    }

    fn set_moving(&mut self, name: &str, session: SessionId) {
        if let Some(e) = self
            .online
            .get_mut(name)
            .and_then(|entries| entries.iter_mut().find(|e| e.session == session))
        {
            e.moving.get_or_insert_with(Vec::new);
        }
    }

    /// The sessions of `name` (lower-cased).
    fn entries_mut(&mut self, name: &str) -> &mut [Entry] {
        self.online.get_mut(name).map_or(&mut [], Vec::as_mut_slice)
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
        self.directory.last_teller.get(&key).cloned()
    }

    /// Local session `key`, logged in as `name`, has logged off.
    pub fn user_offline(&mut self, name: &str, key: u64, out: &mut impl Outputs) {
        self.directory.last_teller.remove(&key);
        let session = self.session_id(key);
        self.send_about_user(
            ToUser::Offline {
                name: user_key(name),
                session,
            },
            out,
        );
    }

    /// Local session `key`, logged in as `name`, is moving to another shard, taking who last told
    /// it something along (`/reply` goes on working there).
    pub fn user_moving(
        &mut self,
        name: &str,
        key: u64,
        out: &mut impl Outputs,
    ) -> Option<Arc<str>> {
        let teller = self.directory.last_teller.remove(&key);
        let session = self.session_id(key);
        self.send_about_user(
            ToUser::Moving {
                name: user_key(name),
                session,
            },
            out,
        );
        teller
    }

    /// Session `from` of another shard, logged in as `name`, has arrived here as `key`, with who
    /// last told it something.
    pub fn user_arrived(
        &mut self,
        name: &str,
        from: SessionId,
        key: u64,
        teller: Option<Arc<str>>,
        out: &mut impl Outputs,
    ) {
        if let Some(teller) = teller {
            self.directory.last_teller.insert(key, teller);
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

    fn send_about_user(&mut self, msg: ToUser, out: &mut impl Outputs) {
        let name = match &msg {
            ToUser::Online { name, .. }
            | ToUser::Offline { name, .. }
            | ToUser::Moving { name, .. }
            | ToUser::Arrived { name, .. } => name.clone(),
            ToUser::Tell(tell) => user_key(&tell.to),
            ToUser::Deliver { session, .. } => {
                let dest = session.shard;
                return self.route(dest, ShardMsg::ToUser(msg), out);
            }
        };
        let dest = home_of_key(&name, self.shards);
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
                        self.told(&tell, false, out);
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
                let mut deliveries = Vec::new();
                for (i, entry) in self
                    .directory
                    .entries_mut(&user_key(&tell.to))
                    .iter_mut()
                    .enumerate()
                {
                    let answer = i == 0;
                    match &mut entry.moving {
                        Some(held) => held.push((tell.clone(), answer)),
                        None => deliveries.push((entry.session, answer)),
                    }
                }
                if deliveries.is_empty()
                    && !self.directory.online.contains_key(&*user_key(&tell.to))
                {
                    return self.told(&tell, false, out);
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
                if out.tell(session.key, &tell.line) {
                    self.directory
                        .last_teller
                        .insert(session.key, tell.from.clone());
                    if answer {
                        self.told(&tell, true, out);
                    }
                } else if answer {
                    // Moved or gone since the directory looked, which knows better by now: it
                    // heard of the move (or the end) from this shard, before this.
                    if tell.hops < MAX_HOPS {
                        let mut tell = tell;
                        tell.hops += 1;
                        self.send_about_user(ToUser::Tell(tell), out);
                    } else {
                        self.told(&tell, false, out);
                    }
                }
            }
        }
    }

    fn told(&mut self, tell: &Tell, delivered: bool, out: &mut impl Outputs) {
        let msg = ToMember::Told {
            session: tell.sender,
            to: tell.to.clone(),
            delivered,
        };
        self.route(tell.sender.shard, ShardMsg::ToMember(msg), out);
    }
}
