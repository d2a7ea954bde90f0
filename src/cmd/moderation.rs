//! What a channel's owner decides: its topic, who may set it, and who owns it next.
//!
//! Each request goes to the channel's home, which alone decides (the owner, or a server admin,
//! may; anyone may set the topic if the owner has let them), stores the change and tells the
//! members in the channel's order, so everyone sees the same line at the same place.

use shard_proto::{Change, Managed};

use super::channel::NOT_ON_A_CHANNEL;
use super::{account_name, name_command, Command, Ctx, Spec};
use crate::mailbox::Reply;
use crate::session::Stop;

const SET_USAGE: &str = "Usage: /set, or /set topic anyone|owner";

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
        summary: "your channel's settings; /set topic anyone|owner: who sets the topic",
        parse: |rest| {
            let words: Vec<&str> = rest.split_whitespace().collect();
            match words[..] {
                [] => Command::Set(None),
                [setting, value] if setting.eq_ignore_ascii_case("topic") => {
                    match value.to_ascii_lowercase().as_str() {
                        "anyone" => Command::Set(Some(true)),
                        "owner" => Command::Set(Some(false)),
                        _ => Command::Usage(SET_USAGE),
                    }
                }
                _ => Command::Usage(SET_USAGE),
            }
        },
    },
    Spec {
        word: "/owner",
        args: "<name>",
        summary: "hand your channel over to someone",
        parse: |rest| name_command(rest, Command::Owner, "Usage: /owner <name>"),
    },
];

/// Applies `/topic`, `/set` or `/owner`.
pub(crate) async fn run(ctx: &mut impl Ctx, command: Command<'_>) -> Result<(), Stop> {
    let change = match command {
        Command::Topic("") | Command::Set(None) => Change::Show,
        Command::Topic("-") => Change::Topic(None),
        Command::Topic(text) => Change::Topic(Some(text.into())),
        Command::Set(Some(open)) => Change::TopicOpen(open),
        Command::Owner(name) => match account_name(ctx, name).await? {
            Some(name) => Change::Owner(name.into()),
            None => return Ok(()),
        },
        _ => unreachable!("not a moderation command: {command:?}"),
    };
    let key = ctx.key();
    let Some(channel) = ctx.shard().chat(|hub, _| hub.channel_of(key).cloned()) else {
        ctx.say(NOT_ON_A_CHANNEL);
        return Ok(());
    };
    let (by, admin) = (ctx.name().clone(), ctx.admin());
    let sent = ctx
        .shard()
        .chat(|hub, out| hub.manage(key, by, admin, change, out));
    let answer = match sent {
        true => ctx.reply(|r| matches!(r, Reply::Managed(_))).await?,
        false => {
            ctx.say(NOT_ON_A_CHANNEL);
            return Ok(());
        }
    };
    let Reply::Managed(answer) = answer else {
        return Ok(());
    };
    match *answer {
        // The members, the asker among them, are told in the channel's order.
        Managed::Done => {}
        Managed::Settings {
            owner,
            topic,
            topic_open,
        } => {
            if matches!(command, Command::Topic(_)) {
                match topic {
                    Some(topic) => ctx.say(&format!("The topic of #{channel}: {topic}")),
                    None => ctx.say(&format!("#{channel} has no topic.")),
                }
            } else {
                let owner = owner.as_deref().unwrap_or("nobody");
                let who = if topic_open { "anyone" } else { "owner" };
                ctx.print(&[
                    &format!("Settings of #{channel}:"),
                    &format!("  owner: {owner}"),
                    &format!("  topic: {who} may set it"),
                ]);
            }
        }
        Managed::NotAllowed { owner: Some(owner) } => ctx.say(&format!(
            "Only the owner of #{channel} ({owner}) or an admin can do that."
        )),
        Managed::NotAllowed { owner: None } => ctx.say(&format!(
            "#{channel} has no owner; only an admin can do that."
        )),
        Managed::NotMember => ctx.say(NOT_ON_A_CHANNEL),
        Managed::Elsewhere => {
            ctx.say("Channel settings cannot be changed on a cluster yet; they can be shown.")
        }
    }
    Ok(())
}
