//! Private messages: `/tell` (or `/msg`) someone, and `/reply` to whoever told you last; and
//! `/away`, which whoever tells you something is shown.
//!
//! A message finds its addressee through the directory of who is online where (`hub::users`),
//! on whichever shard they are, and the sender waits for the answer: delivered, or not online.
//! It reaches the addressee through the same bounded queue as channel lines.

use std::sync::Arc;

use shard_proto::Told;

use super::{Command, Ctx, Spec};
use crate::accounts;
use crate::mailbox::Reply;
use crate::session::Stop;

/// This family's commands, in `/help`'s order.
pub const COMMANDS: &[Spec] = &[
    Spec {
        word: "/tell",
        args: "<name> <text>",
        summary: "tell someone something privately",
        parse: |rest| tell(rest, "Usage: /tell <name> <text>"),
    },
    Spec {
        word: "/msg",
        args: "<name> <text>",
        summary: "the same as /tell",
        parse: |rest| tell(rest, "Usage: /msg <name> <text>"),
    },
    Spec {
        word: "/away",
        args: "[message]",
        summary: "say you are away (those who tell you something see why)",
        parse: |rest| Command::Away(rest),
    },
    Spec {
        word: "/back",
        args: "",
        summary: "say you are back",
        parse: |_| Command::Back,
    },
    Spec {
        word: "/reply",
        args: "<text>",
        summary: "tell the last person who told you something",
        parse: |rest| super::text_command(rest, Command::Reply, "Usage: /reply <text>"),
    },
];

fn tell<'a>(rest: &'a str, usage: &'static str) -> Command<'a> {
    match split(rest) {
        Some(_) => Command::Tell(rest),
        None => Command::Usage(usage),
    }
}

/// `<name> <text>` → the name and the text, both there.
fn split(rest: &str) -> Option<(&str, &str)> {
    let (to, text) = rest.split_once(char::is_whitespace)?;
    let text = text.trim();
    (!text.is_empty()).then_some((to, text))
}

/// Applies `/tell` or `/reply`.
pub(crate) async fn run(ctx: &mut impl Ctx, command: Command<'_>) -> Result<(), Stop> {
    match command {
        Command::Tell(rest) => match split(rest) {
            Some((to, text)) => send(ctx, to, text).await,
            None => Ok(()),
        },
        Command::Reply(text) => {
            let key = ctx.key();
            match ctx.shard().chat(|hub, _| hub.last_teller(key)) {
                Some(to) => send(ctx, &to, text).await,
                None => {
                    ctx.say("No one has told you anything yet.");
                    Ok(())
                }
            }
        }
        _ => unreachable!("not a tell: {command:?}"),
    }
}

/// Applies `/away` or `/back`, which wait for nothing.
pub(crate) fn run_now(ctx: &mut impl Ctx, command: Command<'_>) -> Result<(), Stop> {
    match command {
        Command::Away(message) => {
            let key = ctx.key();
            let message: Arc<str> = message.into();
            let said = if message.is_empty() {
                "You are away.".to_string()
            } else {
                format!("You are away: {message}")
            };
            ctx.shard().chat(|hub, _| hub.set_away(key, Some(message)));
            ctx.say(&said);
            Ok(())
        }
        Command::Back => {
            let key = ctx.key();
            if ctx.shard().chat(|hub, _| hub.set_away(key, None)) {
                ctx.say("You are back.");
            } else {
                ctx.say("You were not away.");
            }
            Ok(())
        }
        _ => unreachable!("not away or back: {command:?}"),
    }
}

/// The line the addressee sees.
pub fn told_line(from: &str, text: &str) -> String {
    format!("{from} tells you, \"{text}\"")
}

async fn send(ctx: &mut impl Ctx, to: &str, text: &str) -> Result<(), Stop> {
    if accounts::validate_username(to).is_err() {
        ctx.say(&format!("{to} is not online."));
        return Ok(());
    }
    let key = ctx.key();
    let from: Arc<str> = ctx.name().clone();
    let line = told_line(&from, text).into();
    ctx.shard()
        .chat(|hub, out| hub.tell(key, from, to, line, out));
    if let Reply::Told { to, outcome } = ctx.reply(|r| matches!(r, Reply::Told { .. })).await? {
        match outcome {
            Told::Delivered { away } => {
                ctx.say(&format!("You tell {to}, \"{text}\""));
                match away.as_deref() {
                    Some("") => ctx.say(&format!("{to} is away.")),
                    Some(message) => ctx.say(&format!("{to} is away: {message}")),
                    None => {}
                }
            }
            // The other nodes could not be asked.
            Told::NotOnline if ctx.shard().chat(|hub, _| hub.cluster_unreachable()) => {
                ctx.say(&format!(
                    "{to} is not online on this node, and the other nodes cannot be reached now."
                ))
            }
            Told::NotOnline => ctx.say(&format!("{to} is not online.")),
        }
    }
    Ok(())
}
