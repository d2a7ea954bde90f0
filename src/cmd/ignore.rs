//! Not hearing from someone: `/ignore <name>`, `/unignore <name>`, and `/ignore` to list.
//!
//! The list is stored with the account, and the session's shard keeps a copy, checked where a
//! line is put in the session's queue (see `hub::users`): nothing of the ignored user's
//! reaches this user, on a channel or privately, and the ignored user is not told. A change
//! applies to the session that makes it at once, and to the user's other sessions on this node
//! through the directory (on other nodes of a cluster, at their next login).

use std::sync::Arc;

use super::{account_name, name_command, Command, Ctx, Spec};
use crate::accounts::MAX_IGNORED;
use crate::session::Stop;

/// This family's commands, in `/help`'s order.
pub const COMMANDS: &[Spec] = &[
    Spec {
        word: "/ignore",
        args: "[name]",
        summary: "hear nothing more from someone (alone: whom you ignore)",
        parse: |rest| {
            if rest.is_empty() {
                Command::Ignoring
            } else {
                name_command(rest, Command::Ignore, "Usage: /ignore [name]")
            }
        },
    },
    Spec {
        word: "/unignore",
        args: "<name>",
        summary: "hear someone again",
        parse: |rest| name_command(rest, Command::Unignore, "Usage: /unignore <name>"),
    },
];

/// Applies `/ignore` or `/unignore`.
pub(crate) async fn run(ctx: &mut impl Ctx, command: Command<'_>) -> Result<(), Stop> {
    let key = ctx.key();
    let current: Vec<Arc<str>> = ctx.shard().chat(|hub, _| hub.ignoring(key).to_vec());
    let at = |name: &str| current.iter().position(|n| n.eq_ignore_ascii_case(name));
    match command {
        Command::Ignoring if current.is_empty() => ctx.say("You are ignoring no one."),
        Command::Ignoring => {
            let names: Vec<&str> = current.iter().map(|n| &**n).collect();
            ctx.say(&format!("You are ignoring: {}.", names.join(", ")));
        }
        Command::Ignore(name) if name.eq_ignore_ascii_case(ctx.name()) => {
            ctx.say("You cannot ignore yourself.")
        }
        Command::Ignore(name) if at(name).is_some() => {
            ctx.say(&format!("You are already ignoring {name}."))
        }
        Command::Ignore(_) if current.len() >= MAX_IGNORED => ctx.say(&format!(
            "You are ignoring {MAX_IGNORED} users, the most there can be; /unignore someone first."
        )),
        Command::Ignore(name) => {
            let Some(name) = account_name(ctx, name).await? else {
                return Ok(());
            };
            // Read again: another session of the user may have changed it while the account was
            // looked up.
            let key = ctx.key();
            let mut names: Vec<Arc<str>> = ctx.shard().chat(|hub, _| hub.ignoring(key).to_vec());
            if names.iter().any(|n| n.eq_ignore_ascii_case(&name)) {
                ctx.say(&format!("You are already ignoring {name}."));
                return Ok(());
            }
            if names.len() >= MAX_IGNORED {
                ctx.say(&format!(
                    "You are ignoring {MAX_IGNORED} users, the most there can be; /unignore someone first."
                ));
                return Ok(());
            }
            names.push(name.as_str().into());
            if save(ctx, names).await? {
                ctx.say(&format!(
                    "You are ignoring {name}: you will see nothing they say or tell you."
                ));
            }
        }
        Command::Unignore(name) => match at(name) {
            None => ctx.say(&format!("You are not ignoring {name}.")),
            Some(at) => {
                let mut names = current.clone();
                let gone = names.remove(at);
                if save(ctx, names).await? {
                    ctx.say(&format!("You are no longer ignoring {gone}."));
                }
            }
        },
        _ => unreachable!("not an ignore command: {command:?}"),
    }
    Ok(())
}

/// Stores `names` as the user's list and, once stored, applies it to this session; false (and
/// the user told why) if it could not be stored.
async fn save(ctx: &mut impl Ctx, names: Vec<Arc<str>>) -> Result<bool, Stop> {
    let accounts = ctx.shard().accounts.clone();
    let stored: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    match ctx.wait(accounts.set_ignoring(ctx.name(), stored)).await? {
        Ok(()) => {
            let key = ctx.key();
            let name = ctx.name().clone();
            ctx.shard()
                .chat(|hub, out| hub.change_ignoring(key, &name, names.into_boxed_slice(), out));
            Ok(true)
        }
        Err(e) => {
            ctx.say_account_error(&e);
            Ok(false)
        }
    }
}
