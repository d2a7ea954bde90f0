//! What a channel's owner (or a server admin) decides, decided at the channel's home: its topic,
//! who may set it, who owns it, who is kicked, banned, muted or invited, whether it is
//! invite-only, and how many it takes.
//!
//! Every change is made at the home, so the one order of the channel's lines places it: a change
//! that concerns the members is told to them as one of the channel's lines (and logged); a member
//! taken off is told that line first, then its shard hears [`ToMember::Removed`] on the same ring.
//! What is stored (see [`Outputs::save_settings`]) is the whole record, in the order changes are
//! made. Mutes and invitations are kept in memory only.
//!
//! In a cluster the home node decides for every node: another node's member asks through its
//! node's record of the channel (`HomeMsg::Manage`), a member of another node taken off hears it
//! as an event after the line, and a node that becomes the home reads the stored record again
//! before it takes changes ([`Hub::settings_loaded`]).

use std::sync::Arc;

use shard_proto::{
    Change, ChannelName, Line, Managed, SessionId, SettingsShown, ShardMsg, ToMember,
};

use super::{Hub, Outputs};
use crate::accounts::MAX_CHANNEL_BANS;
use crate::channel::Settings;
use crate::cluster::wire::EventKind;

/// Invitations a channel keeps at most.
pub const MAX_INVITES: usize = 1000;

/// Members a channel keeps muted at most.
pub const MAX_MUTES: usize = 1000;

/// What a change does beyond its answer.
struct Effect {
    /// The answer to the asker.
    answer: Managed,
    /// A line for every member, in the channel's order.
    line: Option<String>,
    /// Whether the stored record changed.
    save: bool,
    /// Members to take off the channel, after the line.
    remove: Vec<SessionId>,
    /// Members of other nodes to take off, after the line: (node, token).
    remove_remote: Vec<(Arc<str>, u64)>,
    /// The channel's new capacity.
    capacity: Option<u32>,
    /// For the audit log (an owner's or admin's action): what was done, if not the line.
    audit: Option<String>,
}

impl Effect {
    /// Only an answer for the asker.
    fn answer(answer: Managed) -> Effect {
        Effect {
            answer,
            line: None,
            save: false,
            remove: Vec::new(),
            remove_remote: Vec::new(),
            capacity: None,
            audit: None,
        }
    }

    /// A line for the asker alone.
    fn said(text: String) -> Effect {
        Effect::answer(Managed::Said(text.into()))
    }

    /// A line for every member; `save`: the stored record changed.
    fn told(line: String, save: bool) -> Effect {
        Effect {
            answer: Managed::Done,
            line: Some(line),
            save,
            remove: Vec::new(),
            remove_remote: Vec::new(),
            capacity: None,
            audit: None,
        }
    }
}

impl Hub {
    /// Sets what the owner of channel `name`, homed here, has decided (at start, from the
    /// database); nothing if no such channel is homed here.
    pub fn set_settings(&mut self, name: &shard_proto::ChannelName, settings: Settings) {
        if let Some(&index) = self.by_key.get(name.key()) {
            let capacity = self.capacity_for(&settings);
            let ch = &mut self.homed[index as usize];
            ch.set_capacity(capacity);
            *ch.settings = settings;
        }
    }

    /// In a cluster, what the store holds for channel `name` (`None`: nothing: the channel was
    /// deleted), asked for when this node became its home: taken unless the channel is no longer
    /// waiting for it. Mutes and invitations, kept in memory only, stay as this node knew them.
    pub fn settings_loaded(
        &mut self,
        name: &ChannelName,
        stored: Option<Settings>,
        out: &mut impl Outputs,
    ) {
        let Some(&index) = self.by_key.get(name.key()) else {
            return;
        };
        if !self.homed[index as usize].settings.loading {
            return;
        }
        let Some(mut stored) = stored else {
            // Not stored (a read that fails is asked again, never answered so): an admin deleted
            // it, and this node did not hear, or a join asked again just after the deletion
            // opened it here again. It goes here too.
            let settings = &mut self.homed[index as usize].settings;
            settings.loading = false;
            settings.joins_wait = false;
            self.delete(name, "an admin", out);
            return;
        };
        let capacity = self.capacity_for(&stored);
        let ch = &mut self.homed[index as usize];
        stored.mutes = std::mem::take(&mut ch.settings.mutes);
        stored.invites = std::mem::take(&mut ch.settings.invites);
        stored.removed = std::mem::take(&mut ch.settings.removed);
        stored.loading = false;
        ch.set_capacity(capacity);
        *ch.settings = stored;
    }

    /// Channel `index`, homed on this node of a cluster, reads its stored settings again (it has
    /// just become homed here, or another node may have been its home meanwhile): changes wait
    /// for them, and so do joins if `joins_wait`.
    pub(super) fn reload_settings(&mut self, index: u32, joins_wait: bool, out: &mut impl Outputs) {
        let ch = &mut self.homed[index as usize];
        ch.settings.loading = true;
        ch.settings.joins_wait |= joins_wait;
        out.load_settings(&ch.name);
    }

    /// The capacity a channel with `settings` has: its owner's, or the server's.
    fn capacity_for(&self, settings: &Settings) -> u32 {
        match settings.capacity {
            0 => self.capacity,
            own => own,
        }
    }

    /// Applies what a member of channel `index`, homed here, asks of its settings (see
    /// [`shard_proto::ToHome::Manage`]): `by` is the member's user, a server admin if `admin`.
    pub(super) fn apply_change(
        &mut self,
        index: u32,
        by: &str,
        admin: bool,
        change: Change,
        out: &mut impl Outputs,
    ) -> Managed {
        let ch = &self.homed[index as usize];
        // A change made now would be overwritten when the stored settings come, and what is
        // shown now may be out of date.
        if ch.settings.loading {
            return Managed::Unavailable;
        }
        let channel = ch.id;
        let now = out.unix_now();
        // Whatever an owner or an admin does is audited; what anyone may do (set an open topic)
        // is not.
        let owners = self.homed[channel.index as usize]
            .settings
            .may_manage(by, admin);
        let effect = self.decide(channel.index, by, admin, change, now);
        if owners {
            match (&effect.audit, &effect.line) {
                (Some(done), _) | (None, Some(done)) => out.audit(done),
                (None, None) => {}
            }
        }
        let ch = &mut self.homed[channel.index as usize];
        if let Some(capacity) = effect.capacity {
            ch.set_capacity(capacity);
        }
        if effect.save {
            out.save_settings(&ch.name, &ch.settings);
        }
        if let Some(line) = effect.line {
            let line: Line = line.into();
            self.order(channel.index, line, out);
        }
        for member in effect.remove {
            if self.homed[channel.index as usize].remove(member).is_some() {
                let msg = ToMember::Removed {
                    channel,
                    session: member,
                };
                self.route(member.shard, ShardMsg::ToMember(msg), out);
            }
        }
        for (node, token) in effect.remove_remote {
            let ch = &mut self.homed[index as usize];
            if ch.remove_remote(&node, token).is_some() {
                let removed = &mut ch.settings.removed;
                if removed.len() >= crate::channel::MAX_REMOVED {
                    removed.remove(0);
                }
                removed.push((node.clone(), token));
                self.publish(index, EventKind::Removed { node, token }, out);
            }
        }
        effect.answer
    }

    /// What `change`, asked by `by`, does to channel `index`.
    fn decide(&mut self, index: u32, by: &str, admin: bool, change: Change, now: u32) -> Effect {
        let server_capacity = self.capacity;
        let ch = &mut self.homed[index as usize];
        let name = ch.name.clone();
        // The members a change names, here and on other nodes, found before the settings are
        // borrowed to change them; and the name as their account spells it.
        let (members, remote) = match &change {
            Change::Kick { name, .. } | Change::Mute { name, .. } | Change::Ban(name) => {
                (ch.sessions_of(name), ch.remote_of(name))
            }
            _ => (Vec::new(), Vec::new()),
        };
        let shown = members
            .first()
            .map(|(_, user)| user.clone())
            .or_else(|| remote.first().map(|(_, _, user)| user.clone()));
        let remove: Vec<SessionId> = members.iter().map(|(s, _)| *s).collect();
        let remove_remote: Vec<(Arc<str>, u64)> = remote
            .into_iter()
            .map(|(node, token, _)| (node, token))
            .collect();
        let capacity_now = ch.capacity();
        let settings = &mut *ch.settings;
        let allowed = settings.may_manage(by, admin);
        match change {
            Change::Show => Effect::answer(Managed::Settings(Box::new(SettingsShown {
                owner: settings.owner.clone(),
                topic: settings.topic.clone(),
                topic_open: settings.topic_open,
                invite_only: settings.invite_only,
                capacity: capacity_now,
                bans: settings.bans.clone(),
            }))),
            Change::Topic(_) if !allowed && !settings.topic_open => refused(settings),
            Change::Topic(topic) => {
                let line = match &topic {
                    Some(topic) => format!("{by} set the topic of #{name}: {topic}"),
                    None => format!("{by} cleared the topic of #{name}."),
                };
                settings.topic = topic;
                Effect::told(line, true)
            }
            _ if !allowed => refused(settings),
            Change::TopicOpen(open) => {
                settings.topic_open = open;
                Effect::told(
                    if open {
                        format!("{by} let anyone on #{name} set its topic.")
                    } else {
                        format!("{by} let only the owner of #{name} set its topic.")
                    },
                    true,
                )
            }
            Change::Owner(to) => {
                let line = format!("{by} handed #{name} over to {to}: {to} owns it now.");
                settings.owner = Some(to);
                Effect::told(line, true)
            }
            Change::Kick { name: who, .. } | Change::Mute { name: who, .. }
                if who.eq_ignore_ascii_case(by) =>
            {
                Effect::said("You cannot do that to yourself.".to_string())
            }
            Change::Kick { name: who, reason } => {
                let Some(shown) = shown else {
                    return Effect::said(format!("{who} is not on #{name}."));
                };
                let line = match reason {
                    Some(reason) => format!("{by} kicked {shown} from #{name}: {reason}"),
                    None => format!("{by} kicked {shown} from #{name}."),
                };
                Effect {
                    remove,
                    remove_remote,
                    ..Effect::told(line, false)
                }
            }
            Change::Ban(who) if who.eq_ignore_ascii_case(by) => {
                Effect::said("You cannot do that to yourself.".to_string())
            }
            Change::Ban(who) if settings.is_banned(&who) => {
                Effect::said(format!("{who} is already banned from #{name}."))
            }
            Change::Ban(_) if settings.bans.len() >= MAX_CHANNEL_BANS => Effect::said(format!(
                "#{name} has {MAX_CHANNEL_BANS} bans, the most it can have; /unban someone first."
            )),
            Change::Ban(who) => {
                let line = format!("{by} banned {who} from #{name}.");
                settings.bans.push(who);
                Effect {
                    remove,
                    remove_remote,
                    ..Effect::told(line, true)
                }
            }
            Change::Unban(who) => match settings
                .bans
                .iter()
                .position(|b| b.eq_ignore_ascii_case(&who))
            {
                None => Effect::said(format!("{who} is not banned from #{name}.")),
                Some(at) => {
                    settings.bans.remove(at);
                    Effect {
                        save: true,
                        audit: Some(format!("{by} unbanned {who} from #{name}.")),
                        ..Effect::said(format!("{who} may join #{name} again."))
                    }
                }
            },
            Change::Mute { name: who, minutes } => {
                let Some(shown) = shown else {
                    return Effect::said(format!("{who} is not on #{name}."));
                };
                settings
                    .mutes
                    .retain(|(n, until)| *until > now && !n.eq_ignore_ascii_case(&who));
                if settings.mutes.len() >= MAX_MUTES {
                    return Effect::said(format!(
                        "#{name} has {MAX_MUTES} members muted, the most it can have; /unmute someone first."
                    ));
                }
                let until = now.saturating_add(minutes.saturating_mul(60));
                settings.mutes.push((shown.clone(), until));
                Effect::told(
                    format!(
                        "{by} muted {shown} on #{name} for {}.",
                        minutes_text(minutes)
                    ),
                    false,
                )
            }
            Change::Unmute(who) => match settings.muted_for(&who, now) {
                None => Effect::said(format!("{who} is not muted on #{name}.")),
                Some(_) => {
                    settings
                        .mutes
                        .retain(|(n, _)| !n.eq_ignore_ascii_case(&who));
                    Effect::told(format!("{by} unmuted {who} on #{name}."), false)
                }
            },
            Change::Invite(who) => {
                if !settings
                    .invites
                    .iter()
                    .any(|n| n.eq_ignore_ascii_case(&who))
                {
                    if settings.invites.len() >= MAX_INVITES {
                        return Effect::said(format!(
                            "#{name} has {MAX_INVITES} invitations waiting, the most it can have."
                        ));
                    }
                    settings.invites.push(who.clone());
                }
                Effect {
                    audit: Some(format!("{by} invited {who} to #{name}.")),
                    ..Effect::answer(Managed::Done)
                }
            }
            Change::InviteOnly(only) => {
                settings.invite_only = only;
                Effect::told(
                    if only {
                        format!("{by} made #{name} invite-only.")
                    } else {
                        format!("{by} opened #{name} to everyone.")
                    },
                    true,
                )
            }
            Change::Capacity(capacity) => {
                settings.capacity = capacity;
                let effective = if capacity == 0 {
                    server_capacity
                } else {
                    capacity
                };
                let line = match (capacity, effective) {
                    (0, 0) => format!("{by} set #{name} back to no limit of members."),
                    (0, n) => {
                        format!("{by} set #{name} back to the server's limit of {n} members.")
                    }
                    (n, _) => format!("{by} set #{name} to at most {n} members."),
                };
                Effect {
                    capacity: Some(effective),
                    ..Effect::told(line, true)
                }
            }
        }
    }

    /// If member `session` of channel `index` is muted, the line that tells it so.
    pub(super) fn muted(
        &mut self,
        index: u32,
        session: SessionId,
        out: &mut impl Outputs,
    ) -> Option<Line> {
        let ch = &self.homed[index as usize];
        // Nearly always empty: nothing to look up.
        if ch.settings.mutes.is_empty() {
            return None;
        }
        let user: Arc<str> = ch.user_of(session)?.clone();
        self.muted_user(index, &user, out)
    }

    /// If `user`, a member of channel `index`, is muted, the line that tells it so.
    pub(super) fn muted_user(
        &mut self,
        index: u32,
        user: &str,
        out: &mut impl Outputs,
    ) -> Option<Line> {
        let ch = &mut self.homed[index as usize];
        if ch.settings.mutes.is_empty() {
            return None;
        }
        let minutes = ch.settings.muted_for(user, out.unix_now())?;
        Some(
            format!(
                "You are muted on #{} for another {}; nobody heard that.",
                ch.name,
                minutes_text(minutes)
            )
            .into(),
        )
    }
}

/// Refused: only the owner or an admin may.
fn refused(settings: &Settings) -> Effect {
    Effect::answer(Managed::NotAllowed {
        owner: settings.owner.clone(),
    })
}

/// `1 minute`, `5 minutes`.
pub fn minutes_text(minutes: u32) -> String {
    match minutes {
        1 => "1 minute".to_string(),
        n => format!("{n} minutes"),
    }
}
