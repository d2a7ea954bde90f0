//! What a channel's owner decides: its topic and who may set it, who owns it next, who is
//! kicked, banned, muted or invited, whether it is invite-only, and how many it takes.
//!
//! Each request goes to the channel's home (see `hub::manage`), which alone decides (the owner,
//! or a server admin, may; anyone may set the topic if the owner has let them), stores the
//! change and tells the members in the channel's order, so everyone sees the same line at the
//! same place.

use std::sync::Arc;

use shard_proto::{Change, Managed, SettingsShown, Told};

use super::channel::NOT_ON_A_CHANNEL;
use super::{account_name, name_command, Command, Ctx, Spec};
use crate::mailbox::Reply;
use crate::session::Stop;

const SET_USAGE: &str =
    "Usage: /set, or /set topic anyone|owner, /set invite-only on|off, /set capacity <members>";
const MUTE_USAGE: &str = "Usage: /mute <name> [minutes, 1 to 10080]";

/// Minutes a mute lasts when none are given.
pub const MUTE_MINUTES: u32 = 10;
/// The longest mute: a week.
pub const MAX_MUTE_MINUTES: u32 = 7 * 24 * 60;
/// The largest capacity an owner may set.
pub const MAX_CAPACITY: u32 = 1_000_000;

/// What `/set` shows or changes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Setting {
    /// Nothing: show the settings.
    Show,
    /// Whether anyone may set the topic.
    TopicOpen(bool),
    /// Whether only those invited may join.
    InviteOnly(bool),
    /// The most members (0: the server's limit).
    Capacity(u32),
}

/// This family's commands, in `/help`'s order.
pub const COMMANDS: &[Spec] = &[
    Spec {
        word: "/topic",
        args: "[text|-]",
        summary: "show your channel's topic, set it, or clear it (-)",
        parse: |rest| Command::Topic(rest),
    },
    Spec {
        word: "/set",
        args: "[setting value]",
        summary: "show or set: topic anyone|owner, invite-only on|off, capacity <n>",
        parse: set,
    },
    Spec {
        word: "/owner",
        args: "<name>",
        summary: "hand your channel over to someone",
        parse: |rest| name_command(rest, Command::Owner, "Usage: /owner <name>"),
    },
    Spec {
        word: "/kick",
        args: "<name> [reason]",
        summary: "put someone off your channel",
        parse: |rest| match rest.split_whitespace().next() {
            Some(_) => Command::Kick(rest),
            None => Command::Usage("Usage: /kick <name> [reason]"),
        },
    },
    Spec {
        word: "/ban",
        args: "<name>",
        summary: "put someone off your channel and keep them off",
        parse: |rest| name_command(rest, Command::Ban, "Usage: /ban <name>"),
    },
    Spec {
        word: "/unban",
        args: "<name>",
        summary: "let someone banned join your channel again",
        parse: |rest| name_command(rest, Command::Unban, "Usage: /unban <name>"),
    },
    Spec {
        word: "/mute",
        args: "<name> [minutes]",
        summary: "silence someone on your channel (10 minutes unless said)",
        parse: mute,
    },
    Spec {
        word: "/unmute",
        args: "<name>",
        summary: "let someone muted speak again",
        parse: |rest| name_command(rest, Command::Unmute, "Usage: /unmute <name>"),
    },
    Spec {
        word: "/invite",
        args: "<name>",
        summary: "let someone join your channel once, even if it is invite-only",
        parse: |rest| name_command(rest, Command::Invite, "Usage: /invite <name>"),
    },
];

fn set(rest: &str) -> Command<'_> {
    let words: Vec<String> = rest
        .split_whitespace()
        .map(str::to_ascii_lowercase)
        .collect();
    let words: Vec<&str> = words.iter().map(String::as_str).collect();
    let setting = match words[..] {
        [] => Setting::Show,
        ["topic", "anyone"] => Setting::TopicOpen(true),
        ["topic", "owner"] => Setting::TopicOpen(false),
        ["invite-only", "on"] => Setting::InviteOnly(true),
        ["invite-only", "off"] => Setting::InviteOnly(false),
        ["capacity", n] => match n.parse::<u32>() {
            Ok(n) if n <= MAX_CAPACITY => Setting::Capacity(n),
            _ => return Command::Usage(SET_USAGE),
        },
        _ => return Command::Usage(SET_USAGE),
    };
    Command::Set(setting)
}

fn mute(rest: &str) -> Command<'_> {
    let words: Vec<&str> = rest.split_whitespace().collect();
    match words[..] {
        [name] => Command::Mute(name, MUTE_MINUTES),
        [name, minutes] => match minutes.parse::<u32>() {
            Ok(m) if (1..=MAX_MUTE_MINUTES).contains(&m) => Command::Mute(name, m),
            _ => Command::Usage(MUTE_USAGE),
        },
        _ => Command::Usage(MUTE_USAGE),
    }
}

/// Applies a command of this family.
pub(crate) async fn run(ctx: &mut impl Ctx, command: Command<'_>) -> Result<(), Stop> {
    let key = ctx.key();
    let Some(channel) = ctx.shard().chat(|hub, _| hub.channel_of(key).cloned()) else {
        ctx.say(NOT_ON_A_CHANNEL);
        return Ok(());
    };
    // Names that become part of what is stored, or are told to others, are spelt as their
    // accounts spell them (and must be accounts).
    let stored_name = match command {
        Command::Owner(name) | Command::Ban(name) | Command::Invite(name) => {
            match account_name(ctx, name).await? {
                Some(name) => Some(Arc::<str>::from(name)),
                None => return Ok(()),
            }
        }
        _ => None,
    };
    let change = match command {
        Command::Topic("") | Command::Set(Setting::Show) => Change::Show,
        Command::Topic("-") => Change::Topic(None),
        Command::Topic(text) => Change::Topic(Some(text.into())),
        Command::Set(Setting::TopicOpen(open)) => Change::TopicOpen(open),
        Command::Set(Setting::InviteOnly(only)) => Change::InviteOnly(only),
        Command::Set(Setting::Capacity(n)) => Change::Capacity(n),
        Command::Owner(_) => Change::Owner(stored_name.clone().expect("looked up")),
        Command::Ban(_) => Change::Ban(stored_name.clone().expect("looked up")),
        Command::Invite(_) => Change::Invite(stored_name.clone().expect("looked up")),
        Command::Kick(rest) => {
            let (name, reason) = match rest.split_once(char::is_whitespace) {
                Some((name, reason)) => (name, Some(reason.trim().into())),
                None => (rest, None),
            };
            Change::Kick {
                name: name.into(),
                reason,
            }
        }
        Command::Unban(name) => Change::Unban(name.into()),
        Command::Mute(name, minutes) => Change::Mute {
            name: name.into(),
            minutes,
        },
        Command::Unmute(name) => Change::Unmute(name.into()),
        _ => unreachable!("not a moderation command: {command:?}"),
    };
    let (by, admin) = (ctx.name().clone(), ctx.admin());
    if !ctx
        .shard()
        .chat(|hub, out| hub.manage(key, by, admin, change, out))
    {
        ctx.say(NOT_ON_A_CHANNEL);
        return Ok(());
    }
    let wanted = |r: &Reply| matches!(r, Reply::Managed(_));
    let answer = match ctx
        .reply_within(wanted, super::HOME_NODE_ANSWERS_WITHIN)
        .await?
    {
        Some(Reply::Managed(answer)) => answer,
        Some(_) => return Ok(()),
        None => {
            ctx.shard().chat(|hub, _| hub.forget_asking(key));
            ctx.say(super::NO_ANSWER_FROM_HOME_TO_A_CHANGE);
            return Ok(());
        }
    };
    match *answer {
        Managed::Done => {
            if let (Command::Invite(_), Some(invited)) = (command, stored_name) {
                return invite(ctx, &channel.to_string(), &invited).await;
            }
            // Otherwise the members, the asker among them, are told in the channel's order.
        }
        Managed::Said(text) => ctx.say(&text),
        Managed::Settings(shown) if matches!(command, Command::Topic(_)) => match shown.topic {
            Some(topic) => ctx.say(&format!("The topic of #{channel}: {topic}")),
            None => ctx.say(&format!("#{channel} has no topic.")),
        },
        Managed::Settings(shown) => {
            let lines = settings_lines(&channel.to_string(), &shown);
            let lines: Vec<&str> = lines.iter().map(String::as_str).collect();
            ctx.print(&lines);
        }
        Managed::NotAllowed { owner: Some(owner) } => ctx.say(&format!(
            "Only the owner of #{channel} ({owner}) or an admin can do that."
        )),
        Managed::NotAllowed { owner: None } => ctx.say(&format!(
            "#{channel} has no owner; only an admin can do that."
        )),
        Managed::NotMember => ctx.say(NOT_ON_A_CHANNEL),
        Managed::Unavailable => ctx.say(&format!(
            "The settings of #{channel} cannot be reached just now (its home node is out of reach, or has only just taken it over); nothing was changed. Try again in a moment."
        )),
    }
    Ok(())
}

/// Tells the asker the invitation stands, and the one invited (if online) that they are.
async fn invite(ctx: &mut impl Ctx, channel: &str, invited: &str) -> Result<(), Stop> {
    ctx.say(&format!(
        "You invited {invited} to #{channel}; they may join it once."
    ));
    let key = ctx.key();
    let from = ctx.name().clone();
    let line = format!("{from} invites you to #{channel}: /join {channel}").into();
    ctx.shard()
        .chat(|hub, out| hub.tell(key, from, invited, line, out));
    if let Reply::Told { outcome, .. } = ctx.reply(|r| matches!(r, Reply::Told { .. })).await? {
        if outcome == Told::NotOnline {
            ctx.say(&format!(
                "{invited} is not online; the invitation waits until the server restarts."
            ));
        }
    }
    Ok(())
}

/// `/set`'s answer.
fn settings_lines(channel: &str, shown: &SettingsShown) -> Vec<String> {
    let bans: Vec<&str> = shown.bans.iter().map(|b| &**b).collect();
    vec![
        format!("Settings of #{channel}:"),
        format!("  owner: {}", shown.owner.as_deref().unwrap_or("nobody")),
        format!(
            "  topic: {} may set it",
            if shown.topic_open { "anyone" } else { "owner" }
        ),
        format!(
            "  invite-only: {}",
            if shown.invite_only { "on" } else { "off" }
        ),
        match shown.capacity {
            0 => "  capacity: no limit".to_string(),
            n => format!("  capacity: {n} members"),
        },
        if bans.is_empty() {
            "  banned: nobody".to_string()
        } else {
            format!("  banned: {}", bans.join(", "))
        },
    ]
}
