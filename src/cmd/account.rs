//! Commands about the user's own account: changing its password, and deleting it.
//!
//! Both ask for passwords in a short dialogue of hidden prompts ([`Ctx::ask`]): the command's
//! line carries no password, so none is echoed, logged or held in a scrollback. The answers are
//! taken through flood control like any line, so a client that types ahead is answered in order.
//! An empty answer, or ^D, at any prompt ends the dialogue with nothing changed: nobody is logged
//! off by reflex halfway through, and nothing is deleted without a password typed on purpose.
//! The passwords are checked on the worker threads, with bcrypt, as at login, and a wrong one
//! counts as a failed login for the account: after a few, each check waits first (1 s, doubling,
//! see [`Defences::account_wait`](crate::defences::Defences::account_wait)), so a session left
//! open is no quicker a way to guess a password, nor to keep the workers busy, than the login.

use std::time::Duration;

use super::{Command, Ctx, Spec};
use crate::accounts::{self, Deleted, PasswordChange};
use crate::defences::account_slowed_notice;
use crate::session::Stop;

/// Said when a `/passwd` dialogue ends with no password changed and no other reason to give.
const PASSWORD_UNCHANGED: &str = "Your password is unchanged.";

/// This family's commands, in `/help`'s order.
pub const COMMANDS: &[Spec] = &[
    Spec {
        word: "/passwd",
        args: "",
        summary: "change your password",
        parse: |_| Command::Passwd,
    },
    Spec {
        word: "/delete-account",
        args: "",
        summary: "delete your account, for good",
        parse: |_| Command::DeleteAccount,
    },
];

/// Applies `/passwd` or `/delete-account`. A deleted account ends the session
/// ([`Stop::AccountDeleted`]).
pub(crate) async fn run(ctx: &mut impl Ctx, command: Command<'_>) -> Result<(), Stop> {
    match command {
        Command::Passwd => change_password(ctx).await,
        Command::DeleteAccount => delete_account(ctx).await,
        _ => unreachable!("not an account command: {command:?}"),
    }
}

/// `/passwd`: the old password, the new one, the new one again; a new password the rules refuse
/// is refused before the repeat, as when an account is made.
async fn change_password(ctx: &mut impl Ctx) -> Result<(), Stop> {
    let old = ctx.ask("Old password: ", true).await?;
    if old.is_empty() {
        ctx.say(PASSWORD_UNCHANGED);
        return Ok(());
    }
    let new = ctx.ask("New password: ", true).await?;
    if new.is_empty() {
        ctx.say(PASSWORD_UNCHANGED);
        return Ok(());
    }
    if let Err(invalid) = accounts::validate_password(&new) {
        ctx.say(&invalid.to_string());
        return Ok(());
    }
    let repeat = ctx.ask("Repeat new password: ", true).await?;
    if repeat.is_empty() {
        ctx.say(PASSWORD_UNCHANGED);
        return Ok(());
    }
    if repeat != new {
        ctx.say("Passwords did not match; your password is unchanged.");
        return Ok(());
    }
    let name = ctx.user().name.clone();
    slow_down(ctx, &name).await?;
    let accounts = ctx.shard().accounts.clone();
    let changing = accounts.change_password(&name, &old, &new);
    match ctx.wait(changing).await? {
        Ok(PasswordChange::Changed) => ctx.say("Your password has been changed."),
        Ok(PasswordChange::WrongPassword) => {
            ctx.shard().defences.login_failed(&name);
            ctx.say("Incorrect password; your password is unchanged.");
        }
        Ok(PasswordChange::Invalid(invalid)) => ctx.say(&invalid.to_string()),
        Err(e) => ctx.say_account_error(&e),
    }
    Ok(())
}

/// `/delete-account`: a warning, then the password.
async fn delete_account(ctx: &mut impl Ctx) -> Result<(), Stop> {
    ctx.say("This deletes your account and everything kept for it. It cannot be undone.");
    let password = ctx.ask("Password to confirm: ", true).await?;
    if password.is_empty() {
        ctx.say("Your account is kept.");
        return Ok(());
    }
    let name = ctx.user().name.clone();
    slow_down(ctx, &name).await?;
    let accounts = ctx.shard().accounts.clone();
    let deleting = accounts.delete_account(&name, &password);
    match ctx.wait(deleting).await? {
        Ok(Deleted::Deleted) => {
            ctx.say("Your account has been deleted. Goodbye.");
            // Its other sessions, on any shard, end too (this one is ending anyway).
            let farewell: shard_proto::Line = "Your account was deleted in another session.".into();
            ctx.shard().chat(|hub, out| {
                hub.disconnect_user(None, &name, farewell.clone(), out);
                hub.disconnect_elsewhere(None, &name, farewell, out);
            });
            Err(Stop::AccountDeleted)
        }
        Ok(Deleted::WrongPassword) => {
            ctx.shard().defences.login_failed(&name);
            ctx.say("Incorrect password; your account is kept.");
            Ok(())
        }
        Err(e) => {
            ctx.say_account_error(&e);
            Ok(())
        }
    }
}

/// Waits before a password check while the account's recent failures say so, telling the user,
/// as the login does.
async fn slow_down(ctx: &mut impl Ctx, name: &str) -> Result<(), Stop> {
    let Some(secs) = ctx.shard().defences.account_wait(name) else {
        return Ok(());
    };
    let wait = Duration::from_secs(secs.into());
    ctx.say(&account_slowed_notice(wait));
    ctx.wait(glommio::timer::sleep(wait)).await
}
