//! Talking on your channel: say, emote, think, sing. Each becomes one line that the channel's home
//! orders and every member gets, the speaker too.

use super::channel::NOT_ON_A_CHANNEL;
use super::{text_command, Command, Ctx, Spec};

/// This family's commands, in `/help`'s order.
pub const COMMANDS: &[Spec] = &[
    Spec {
        word: "/say",
        args: "<text>",
        summary: "say something (or just type it, or start with ')",
        parse: |rest| text_command(rest, Command::Say, "Usage: /say <text>"),
    },
    Spec {
        word: "/emote",
        args: "<text>",
        summary: "act something out (or start with ;)",
        parse: |rest| text_command(rest, Command::Emote, "Usage: /emote <text>"),
    },
    Spec {
        word: "/think",
        args: "<text>",
        summary: "think something",
        parse: |rest| text_command(rest, Command::Think, "Usage: /think <text>"),
    },
    Spec {
        word: "/sing",
        args: "<text>",
        summary: "sing something",
        parse: |rest| text_command(rest, Command::Sing, "Usage: /sing <text>"),
    },
];

/// Posts what the user says on their channel.
pub(crate) fn run(ctx: &mut impl Ctx, command: &Command<'_>) {
    let line = render(ctx.name(), command).unwrap_or_default();
    let key = ctx.key();
    if !ctx.shard().chat(|hub, out| hub.post(key, line.into(), out)) {
        ctx.say(NOT_ON_A_CHANNEL);
    }
}

/// The line members see when `user` talks with `command`; `None` for commands that do not talk.
pub fn render(user: &str, command: &Command<'_>) -> Option<String> {
    let (text, before, after) = match *command {
        Command::Say(text) => (text, " says, \"", "\""),
        Command::Emote(text) => (text, " ", ""),
        Command::Think(text) => (text, " thinks . o O ( ", " )"),
        Command::Sing(text) => (text, " sings ~ ~ ", " ~ ~"),
        _ => return None,
    };
    // Sized once: this runs for every line said, and `format!` would grow the string as it goes.
    let mut line = String::with_capacity(user.len() + before.len() + text.len() + after.len());
    for part in [user, before, text, after] {
        line.push_str(part);
    }
    Some(line)
}
