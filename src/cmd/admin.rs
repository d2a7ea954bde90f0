//! What a server admin may do to anyone: end a user's sessions (`/kill`), say something to
//! everyone (`/wall`), ban an account from logging in or lift the ban, and delete a channel.
//!
//! Admins are the users the data directory says are (`ringtalk admin grant`) and those named by
//! `--admin` ([`Ctx::admin`]); everyone else is refused before anything is looked up. Every
//! action is recorded in the audit log (`<data-dir>/audit.log`, [`crate::audit`]) once done.
//!
//! The sessions of a user are found through the directory of who is online where, on any shard
//! ([`crate::hub::Hub::disconnect_user`]); a message to everyone goes once to each shard, which
//! puts it in each logged-in session's queue; a channel is deleted in the database first (so a
//! restart does not bring it back), then at its home, which tells the members. In a cluster, each
//! node's directory knows its own users, so `/kill`, `/ban-account` and `/wall` also go to every
//! other node through the bridge; deleting a channel is refused there (other nodes keep it too).

use std::sync::Arc;

use shard_proto::ChannelName;

use super::{account_name, name_command, Command, Ctx, Spec};
use crate::accounts;
use crate::mailbox::Reply;
use crate::session::Stop;

/// Said to anyone but an admin who tries one of these.
pub const ADMINS_ONLY: &str = "Only an admin can do that.";

/// Said to an admin who names themself to `/kill` or `/ban-account`.
const NOT_YOURSELF: &str = "You cannot do that to yourself.";

/// This family's commands, in `/help`'s order.
pub const COMMANDS: &[Spec] = &[
    Spec {
        word: "/kill",
        args: "<name> [reason]",
        summary: "admins: disconnect every session of someone",
        parse: |rest| name_and_reason(rest, Command::Kill, "Usage: /kill <name> [reason]"),
    },
    Spec {
        word: "/wall",
        args: "<text>",
        summary: "admins: say something to everyone online",
        parse: |rest| super::text_command(rest, Command::Wall, "Usage: /wall <text>"),
    },
    Spec {
        word: "/ban-account",
        args: "<name> [reason]",
        summary: "admins: keep someone from logging in, and disconnect them",
        parse: |rest| {
            name_and_reason(
                rest,
                Command::BanAccount,
                "Usage: /ban-account <name> [reason]",
            )
        },
    },
    Spec {
        word: "/unban-account",
        args: "<name>",
        summary: "admins: let someone log in again",
        parse: |rest| name_command(rest, Command::UnbanAccount, "Usage: /unban-account <name>"),
    },
    Spec {
        word: "/delete-channel",
        args: "<channel>",
        summary: "admins: delete a channel, for good",
        parse: |rest| {
            name_command(
                rest,
                Command::DeleteChannel,
                "Usage: /delete-channel <channel>",
            )
        },
    },
];

/// A command whose argument is a name and maybe a reason: the whole of it, split when applied
/// (see [`Command::Tell`]).
fn name_and_reason<'a>(
    rest: &'a str,
    make: fn(&'a str) -> Command<'a>,
    usage: &'static str,
) -> Command<'a> {
    if rest.is_empty() {
        Command::Usage(usage)
    } else {
        make(rest)
    }
}

/// `<name> [reason]` → the name, and the reason if there is one.
fn split_reason(rest: &str) -> (&str, Option<&str>) {
    match rest.split_once(char::is_whitespace) {
        Some((name, reason)) => (name, Some(reason.trim()).filter(|r| !r.is_empty())),
        None => (rest, None),
    }
}

/// Applies an admin's command, after checking that the user is one.
pub(crate) async fn run(ctx: &mut impl Ctx, command: Command<'_>) -> Result<(), Stop> {
    if !ctx.admin() {
        ctx.say(ADMINS_ONLY);
        return Ok(());
    }
    match command {
        Command::Kill(rest) => {
            let (name, reason) = split_reason(rest);
            kill(ctx, name, reason).await
        }
        Command::Wall(text) => {
            wall(ctx, text);
            Ok(())
        }
        Command::BanAccount(rest) => {
            let (name, reason) = split_reason(rest);
            ban(ctx, name, reason).await
        }
        Command::UnbanAccount(name) => unban(ctx, name).await,
        Command::DeleteChannel(channel) => delete_channel(ctx, channel).await,
        _ => unreachable!("not an admin command: {command:?}"),
    }
}

/// What a user is told as an admin's order ends their session.
pub fn farewell(admin: &str, reason: Option<&str>) -> String {
    match reason {
        Some(reason) => format!("You were disconnected by {admin}: {reason}."),
        None => format!("You were disconnected by {admin}."),
    }
}

/// `what` with `: <reason>` after it, if there is one, for the audit log.
fn with_reason(what: String, reason: Option<&str>) -> String {
    match reason {
        Some(reason) => format!("{what}: {reason}"),
        None => what,
    }
}

/// Whether `name` is the admin's own (then they have been told they may not).
fn is_self(ctx: &mut impl Ctx, name: &str) -> bool {
    let me = name.eq_ignore_ascii_case(ctx.name());
    if me {
        ctx.say(NOT_YOURSELF);
    }
    me
}

/// `/kill <name> [reason]`: every session of the user, on any shard, is told why and closed.
async fn kill(ctx: &mut impl Ctx, name: &str, reason: Option<&str>) -> Result<(), Stop> {
    if is_self(ctx, name) {
        return Ok(());
    }
    if accounts::validate_username(name).is_err() {
        not_online(ctx, name);
        return Ok(());
    }
    let key = ctx.key();
    let admin = ctx.name().clone();
    let words: shard_proto::Line = farewell(&admin, reason).into();
    let here_words = words.clone();
    ctx.shard()
        .chat(|hub, out| hub.disconnect_user(Some(key), name, here_words, out));
    let mut found = match ctx.reply(|r| matches!(r, Reply::Disconnected(_))).await? {
        Reply::Disconnected(found) => found,
        _ => None,
    };
    // Then the other nodes of a cluster (asked after this node answered, so the two answers
    // cannot cross).
    let elsewhere = ctx
        .shard()
        .chat(|hub, out| hub.disconnect_elsewhere(Some(key), name, words, out));
    if elsewhere {
        let wanted = |r: &Reply| matches!(r, Reply::DisconnectedElsewhere(_));
        if let Reply::DisconnectedElsewhere(there) = ctx.reply(wanted).await? {
            found = found.or(there);
        }
    }
    match found {
        Some(found) => {
            ctx.say(&format!("{found} was disconnected."));
            let entry = with_reason(format!("{admin} disconnected {found}"), reason);
            ctx.shard().audit(&entry);
        }
        None => not_online(ctx, name),
    }
    Ok(())
}

/// Tells the admin that no session of `name` is online (in a cluster whose other nodes cannot
/// be reached now: on this node).
fn not_online(ctx: &mut impl Ctx, name: &str) {
    if ctx.shard().chat(|hub, _| hub.cluster_unreachable()) {
        ctx.say(&format!("{name} is not online on this node."));
    } else {
        ctx.say(&format!("{name} is not online."));
    }
}

/// `/wall <text>`: one line to every logged-in session, the admin's own included.
fn wall(ctx: &mut impl Ctx, text: &str) {
    let admin = ctx.name().clone();
    let line = format!("[wall] {admin}: {text}").into();
    ctx.shard().chat(|hub, out| hub.wall(line, out));
    ctx.shard()
        .audit(&format!("{admin} said to everyone: {text}"));
}

/// `/ban-account <name> [reason]`: the account may not log in, and its sessions end as for
/// `/kill`.
async fn ban(ctx: &mut impl Ctx, name: &str, reason: Option<&str>) -> Result<(), Stop> {
    if is_self(ctx, name) {
        return Ok(());
    }
    let Some(account) = set_banned(ctx, name, true).await? else {
        return Ok(());
    };
    let admin = ctx.name().clone();
    ctx.say(&format!("{account} may no longer log in."));
    ctx.shard()
        .audit(&with_reason(format!("{admin} banned {account}"), reason));
    // Stored first: a session that ends here cannot log in again.
    let words: shard_proto::Line = farewell(&admin, reason).into();
    ctx.shard().chat(|hub, out| {
        hub.disconnect_user(None, &account, words.clone(), out);
        hub.disconnect_elsewhere(None, &account, words, out);
    });
    Ok(())
}

/// `/unban-account <name>`.
async fn unban(ctx: &mut impl Ctx, name: &str) -> Result<(), Stop> {
    let Some(account) = set_banned(ctx, name, false).await? else {
        return Ok(());
    };
    ctx.say(&format!("{account} may log in again."));
    let admin = ctx.name().clone();
    ctx.shard().audit(&format!("{admin} unbanned {account}"));
    Ok(())
}

/// Bans the account named `name` (any case), or lifts its ban; returns the name as the account
/// spells it, or `None` once the admin has been told why not.
async fn set_banned(ctx: &mut impl Ctx, name: &str, banned: bool) -> Result<Option<String>, Stop> {
    let Some(account) = account_name(ctx, name).await? else {
        return Ok(None);
    };
    let accounts = ctx.shard().accounts.clone();
    match ctx.wait(accounts.set_banned(&account, banned)).await? {
        Ok(true) => Ok(Some(account)),
        // Deleted since it was looked up.
        Ok(false) => {
            ctx.say(&format!("There is no user named {name}."));
            Ok(None)
        }
        Err(e) => {
            ctx.say_account_error(&e);
            Ok(None)
        }
    }
}

/// `/delete-channel <channel>`: out of the database first (so nothing brings it back), then out
/// of its home, which tells its members; the admin is answered once the home has done it, so a
/// join after the answer finds no such channel.
async fn delete_channel(ctx: &mut impl Ctx, typed: &str) -> Result<(), Stop> {
    let channel = match ChannelName::new(typed) {
        Ok(channel) => channel,
        Err(e) => {
            ctx.say(&e.to_string());
            return Ok(());
        }
    };
    // Every node must hear of it, or the ones that did not would keep it.
    if ctx.shard().chat(|hub, _| hub.cluster_unreachable()) {
        ctx.say(
            "The other nodes cannot be reached now; channels can be deleted only while they can.",
        );
        return Ok(());
    }
    let accounts = ctx.shard().accounts.clone();
    match ctx.wait(accounts.delete_channel(&channel)).await? {
        Ok(true) => {}
        Ok(false) => {
            ctx.say(&format!("Channel #{channel} does not exist."));
            return Ok(());
        }
        Err(e) => {
            ctx.say_account_error(&e);
            return Ok(());
        }
    }
    let key = ctx.key();
    let admin: Arc<str> = ctx.name().clone();
    let asked = channel.clone();
    ctx.shard()
        .chat(|hub, out| hub.delete_channel(key, asked, admin.clone(), out));
    let deleted = ctx.reply(|r| matches!(r, Reply::Deleted(_))).await?;
    let shown = match deleted {
        Reply::Deleted(Some(name)) => name,
        _ => channel,
    };
    ctx.say(&format!("#{shown} was deleted."));
    ctx.shard().audit(&format!("{admin} deleted #{shown}"));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cmd::parse;

    #[test]
    fn admin_commands_parse() {
        let cases: &[(&str, Command<'_>)] = &[
            ("/kill bob", Command::Kill("bob")),
            (
                "/KILL bob  too much spam ",
                Command::Kill("bob  too much spam"),
            ),
            ("/kill", Command::Usage("Usage: /kill <name> [reason]")),
            ("/wall hello all", Command::Wall("hello all")),
            ("/wall", Command::Usage("Usage: /wall <text>")),
            ("/ban-account bob spam", Command::BanAccount("bob spam")),
            (
                "/ban-account",
                Command::Usage("Usage: /ban-account <name> [reason]"),
            ),
            ("/unban-account Bob", Command::UnbanAccount("Bob")),
            (
                "/unban-account a b",
                Command::Usage("Usage: /unban-account <name>"),
            ),
            ("/delete-channel #Den", Command::DeleteChannel("Den")),
            (
                "/delete-channel",
                Command::Usage("Usage: /delete-channel <channel>"),
            ),
        ];
        for (line, want) in cases {
            assert_eq!(parse(line), *want, "line {line:?}");
        }
        assert_eq!(split_reason("bob"), ("bob", None));
        assert_eq!(split_reason("bob   "), ("bob", None));
        assert_eq!(split_reason("bob  too  much "), ("bob", Some("too  much")));
        assert_eq!(
            farewell("root", Some("spam")),
            "You were disconnected by root: spam."
        );
        assert_eq!(farewell("root", None), "You were disconnected by root.");
    }
}
