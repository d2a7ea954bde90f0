//! Channels: listing them, making one, joining and leaving, and who is on yours (`/who`, whose
//! table entry is the `who` family's).
//!
//! A join is a request to the channel's home (maybe another shard, maybe another node), and the
//! session waits for its answer; a session that joins a small channel homed elsewhere may then
//! move to the home's shard ([`Stop::MoveHome`]).

use std::sync::Arc;
use std::time::Duration;

use shard_proto::{ChannelName, JoinOutcome};

use super::{name_command, Command, Ctx, Spec};
use crate::mailbox::Reply;
use crate::session::Stop;

/// Said to a user on no channel who tries something that needs one.
pub const NOT_ON_A_CHANNEL: &str =
    "You are not on a channel. Use /join <channel> or /create <channel>.";

/// Said before `/list` when the other nodes of a cluster cannot be asked.
const OTHER_NODES_UNLISTED: &str =
    "The other nodes cannot be reached now; only this node's channels are listed.";

/// This family's commands, in `/help`'s order.
pub const COMMANDS: &[Spec] = &[
    Spec {
        word: "/list",
        args: "",
        summary: "list channels and how many are on each",
        parse: |_| Command::List,
    },
    Spec {
        word: "/create",
        args: "<channel>",
        summary: "create a channel and join it",
        parse: |rest| name_command(rest, Command::Create, "Usage: /create <channel>"),
    },
    Spec {
        word: "/join",
        args: "<channel>",
        summary: "join a channel (leaving the one you are on)",
        parse: |rest| name_command(rest, Command::Join, "Usage: /join <channel>"),
    },
    Spec {
        word: "/exit",
        args: "",
        summary: "leave your channel",
        parse: |_| Command::Exit,
    },
];

/// Applies a channel command that waits for an answer.
pub(crate) async fn run(ctx: &mut impl Ctx, command: Command<'_>) -> Result<(), Stop> {
    match command {
        Command::List => list(ctx).await,
        Command::Create(channel) => create(ctx, channel).await,
        Command::Join(channel) => join(ctx, channel).await,
        Command::Who => who(ctx).await,
        _ => unreachable!("not a channel command: {command:?}"),
    }
}

/// `/exit`: leaves the user's channel.
pub(crate) fn exit(ctx: &mut impl Ctx) {
    let key = ctx.key();
    match ctx.shard().chat(|hub, out| hub.exit(key, out)) {
        Some(channel) => ctx.say(&format!("You left #{channel}")),
        None => ctx.say(NOT_ON_A_CHANNEL),
    }
}

async fn who(ctx: &mut impl Ctx) -> Result<(), Stop> {
    let key = ctx.key();
    if !ctx.shard().chat(|hub, out| hub.who(key, out)) {
        ctx.say(NOT_ON_A_CHANNEL);
        return Ok(());
    }
    match ctx
        .reply_within(
            |r| matches!(r, Reply::Who(_)),
            super::HOME_NODE_ANSWERS_WITHIN,
        )
        .await?
    {
        Some(Reply::Who(Some(names))) => {
            let names: Vec<&str> = names.iter().map(|n| &**n).collect();
            ctx.say(&format!("On this channel: {}", names.join(", ")));
        }
        Some(_) => ctx.say(NOT_ON_A_CHANNEL),
        None => ctx.say(super::NO_ANSWER_FROM_HOME),
    }
    Ok(())
}

async fn list(ctx: &mut impl Ctx) -> Result<(), Stop> {
    let key = ctx.key();
    let (expected, partial) = ctx
        .shard()
        .chat(|hub, out| (hub.list(key, out), hub.cluster_unreachable()));
    if partial {
        ctx.say(OTHER_NODES_UNLISTED);
    }
    let mut channels = Vec::new();
    for _ in 0..expected {
        if let Reply::List(entries) = ctx.reply(|r| matches!(r, Reply::List(_))).await? {
            channels.extend(entries);
        }
    }
    if channels.is_empty() {
        ctx.say("There are no channels yet. Use /create <channel> to make one.");
        return Ok(());
    }
    channels.sort_by(|a, b| a.name.key().cmp(b.name.key()));
    let mut lines = vec!["Channels:".to_string()];
    lines.extend(channels.iter().map(|c| match &c.topic {
        Some(topic) => format!("  #{} ({}): {topic}", c.name, c.members),
        None => format!("  #{} ({})", c.name, c.members),
    }));
    let lines: Vec<&str> = lines.iter().map(String::as_str).collect();
    ctx.print(&lines);
    Ok(())
}

/// The channel name typed, or `None` once the user has been told why it is none.
fn channel_name(ctx: &mut impl Ctx, typed: &str) -> Option<ChannelName> {
    ChannelName::new(typed)
        .map_err(|e| ctx.say(&e.to_string()))
        .ok()
}

async fn create(ctx: &mut impl Ctx, channel: &str) -> Result<(), Stop> {
    let Some(channel) = channel_name(ctx, channel) else {
        return Ok(());
    };
    let accounts = ctx.shard().accounts.clone();
    let owner = ctx.user().id;
    match ctx.wait(accounts.create_channel(&channel, owner)).await? {
        Ok(true) => {
            ctx.say(&format!("Channel #{channel} created."));
            enter(ctx, channel, true).await
        }
        Ok(false) => {
            ctx.say("Channel already exists.");
            Ok(())
        }
        Err(e) => {
            ctx.say_account_error(&e);
            Ok(())
        }
    }
}

async fn join(ctx: &mut impl Ctx, channel: &str) -> Result<(), Stop> {
    let Some(channel) = channel_name(ctx, channel) else {
        return Ok(());
    };
    let key = ctx.key();
    let current = ctx.shard().chat(|hub, _| hub.channel_of(key).cloned());
    if let Some(current) = current.filter(|c| *c == channel) {
        ctx.say(&format!("You are already on #{current}."));
        return Ok(());
    }
    enter(ctx, channel, false).await
}

/// How long a join answered "not just now" waits before it is asked again, each time, before the
/// user is told: a home that has just opened or taken over a channel (a node that missed its
/// making, a failover) has its settings read back within milliseconds, and a user should not have
/// to type the command again for that. About 0.75 s in all.
const JOIN_RETRY_WAITS_MS: [u64; 4] = [50, 100, 200, 400];

/// Asks the channel's home to let this session in and says how that went.
async fn enter(ctx: &mut impl Ctx, channel: ChannelName, create: bool) -> Result<(), Stop> {
    let key = ctx.key();
    let asked = channel.clone();
    let name: Arc<str> = ctx.name().clone();
    let mut retries = JOIN_RETRY_WAITS_MS.iter();
    let (channel, outcome, come_home, topic) = loop {
        let (channel, name) = (asked.clone(), name.clone());
        let sent = ctx
            .shard()
            .chat(|hub, out| hub.join(key, channel, name, create, out));
        if !sent {
            // Cannot happen while a session runs one command at a time; never wait for an
            // answer to a request that was not made.
            ctx.say("You are already joining a channel; wait for the answer.");
            return Ok(());
        }
        let Reply::Joined {
            channel,
            outcome,
            come_home,
            topic,
        } = ctx.reply(|r| matches!(r, Reply::Joined { .. })).await?
        else {
            return Ok(());
        };
        if matches!(outcome, JoinOutcome::Unavailable) {
            if let Some(&ms) = retries.next() {
                ctx.wait(glommio::timer::sleep(Duration::from_millis(ms)))
                    .await?;
                continue;
            }
        }
        break (channel, outcome, come_home, topic);
    };
    match outcome {
        JoinOutcome::Joined(_) => {
            ctx.say(&format!("You have joined #{channel}"));
            if let Some(topic) = topic {
                ctx.say(&format!("Topic: {topic}"));
            }
            if come_home {
                // A session that has just moved here first waits for the lines it left
                // behind (one ring round trip), so none can be left behind twice.
                ctx.until_caught_up().await?;
                if ctx.shard().chat(|hub, _| hub.may_depart(key)) {
                    return Err(Stop::MoveHome);
                }
            }
        }
        JoinOutcome::Full => ctx.say("Request to join channel denied: Channel is full"),
        JoinOutcome::Banned => ctx.say(&format!("You are banned from #{channel}.")),
        JoinOutcome::InviteOnly => ctx.say(&format!(
            "#{channel} is invite-only; ask its owner for an invitation."
        )),
        JoinOutcome::NoSuchChannel if ctx.shard().cluster.is_some() && !create => {
            // Another node may have made it a moment ago, before this node heard of it: the
            // cluster's store has the last word.
            let accounts = ctx.shard().accounts.clone();
            match ctx.wait(accounts.find_channel(&asked)).await? {
                Ok(Some(stored)) => return Box::pin(enter(ctx, stored, true)).await,
                Ok(None) => ctx.say(&format!(
                    "Channel #{asked} does not exist. Use /create {asked} to make it."
                )),
                Err(e) => ctx.say_account_error(&e),
            }
        }
        JoinOutcome::NoSuchChannel => ctx.say(&format!(
            "Channel #{asked} does not exist. Use /create {asked} to make it."
        )),
        JoinOutcome::Unavailable => ctx.say(&format!(
            "Channel #{asked} cannot be joined just now (its home node is out of reach, or has only just taken it over); try again in a moment."
        )),
    }
    Ok(())
}
