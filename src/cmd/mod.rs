//! What a logged-in user's line means, and doing it: a `/command`, one of the one-character
//! shortcuts, or plain text to say on the current channel.
//!
//! Each family of commands has a file of its own ([`channel`], [`moderation`], [`talk`], [`tell`],
//! [`ignore`], [`who`], [`account`], [`admin`], [`meta`]) with the table of its commands and the code that applies them, so adding a command
//! touches one file. The tables are also where `/help` comes from. Parsing is separate from doing so that the syntax
//! (wtelnet's, kept so its users' habits and bots still work) is tested without a server; doing
//! goes through [`Ctx`], the little the session lends a command: its user, its shard, a way to
//! print and to wait for answers.

pub mod account;
pub mod admin;
pub mod channel;
pub mod ignore;
pub mod meta;
pub mod moderation;
pub mod talk;
pub mod tell;
pub mod who;

use std::future::Future;
use std::rc::Rc;
use std::sync::Arc;

use crate::accounts::{AccountError, User};
use crate::mailbox::Reply;
use crate::session::Stop;
use crate::shard::Shard;

/// One line typed by a logged-in user, parsed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Command<'a> {
    /// Nothing but white space: the prompt is shown again.
    Empty,
    /// `/help`: list the commands; `/help <command>`: one of them.
    Help(Option<&'a str>),
    /// `/quit` (or ^D on an empty line in character mode): log off.
    Quit,
    /// `/list`: every channel and how many are in it.
    List,
    /// `/create <name>`: make a channel and join it.
    Create(&'a str),
    /// `/join <name>`: leave the current channel, if any, and join this one.
    Join(&'a str),
    /// `/who`: who is on the current channel.
    Who,
    /// `/exit`: leave the current channel.
    Exit,
    /// `/say <text>`, `'<text>`, or a line that is not a command.
    Say(&'a str),
    /// `/emote <text>` or `;<text>`.
    Emote(&'a str),
    /// `/think <text>`.
    Think(&'a str),
    /// `/sing <text>`.
    Sing(&'a str),
    /// `/tell <name> <text>` or `/msg <name> <text>`: what follows the word, `<name> <text>`
    /// (split when applied: every session's task reserves room for the largest command, so none
    /// holds more than one string).
    Tell(&'a str),
    /// `/reply <text>`: a tell to whoever told you something last.
    Reply(&'a str),
    /// `/away [message]` (empty: no message).
    Away(&'a str),
    /// `/back`.
    Back,
    /// `/who *` or `/users`, with the page asked for (from 1).
    Users(u32),
    /// `/whois <name>`.
    Whois(&'a str),
    /// `/passwd`: change your password (the passwords are asked for).
    Passwd,
    /// `/delete-account`: delete your account (the password is asked for).
    DeleteAccount,
    /// `/ignore` alone: whom you ignore.
    Ignoring,
    /// `/ignore <name>`.
    Ignore(&'a str),
    /// `/unignore <name>`.
    Unignore(&'a str),
    /// `/topic [text|-]`: "" shows it, `-` clears it.
    Topic(&'a str),
    /// `/set [setting value]`: show or change the channel's settings.
    Set(moderation::Setting),
    /// `/owner <name>`: hand the channel over.
    Owner(&'a str),
    /// `/kick <name> [reason]`: what follows the word.
    Kick(&'a str),
    /// `/ban <name>`.
    Ban(&'a str),
    /// `/unban <name>`.
    Unban(&'a str),
    /// `/mute <name> [minutes]`: the name and the minutes (checked).
    Mute(&'a str, u32),
    /// `/unmute <name>`.
    Unmute(&'a str),
    /// `/invite <name>`.
    Invite(&'a str),
    /// `/kill <name> [reason]` (admins): what follows the word, split when applied.
    Kill(&'a str),
    /// `/wall <text>` (admins).
    Wall(&'a str),
    /// `/ban-account <name> [reason]` (admins): what follows the word, split when applied.
    BanAccount(&'a str),
    /// `/unban-account <name>` (admins).
    UnbanAccount(&'a str),
    /// `/delete-channel <channel>` (admins).
    DeleteChannel(&'a str),
    /// A known command without the argument it needs; holds the usage line to show.
    Usage(&'static str),
    /// A `/word` that is no command; holds the word as typed, slash included.
    Unknown(&'a str),
}

/// One command as `/help` shows it and [`parse`] finds it.
pub struct Spec {
    /// The word, slash included, lower case.
    pub word: &'static str,
    /// What follows the word, for help (`<channel>`), or "".
    pub args: &'static str,
    /// One line of help.
    pub summary: &'static str,
    /// Makes the command from what follows the word (trimmed).
    pub parse: for<'a> fn(&'a str) -> Command<'a>,
}

/// Every family's table, in the order `/help` lists them.
/// How long a command waits for an answer from a channel's home on another node of a cluster,
/// which can go (or NATS lose the message) before it answers; answers from this node's shards
/// come in well under that, even under load.
pub(crate) const HOME_NODE_ANSWERS_WITHIN: std::time::Duration = std::time::Duration::from_secs(10);

/// Said when that answer did not come.
pub(crate) const NO_ANSWER_FROM_HOME: &str =
    "No answer came from the channel's home node in time; try again in a moment.";

/// Said when the answer to a change did not come.
pub(crate) const NO_ANSWER_FROM_HOME_TO_A_CHANGE: &str =
    "No answer came from the channel's home node in time; the change may or may not have been made (/set shows).";

const FAMILIES: &[&[Spec]] = &[
    channel::COMMANDS,
    moderation::COMMANDS,
    talk::COMMANDS,
    tell::COMMANDS,
    ignore::COMMANDS,
    who::COMMANDS,
    account::COMMANDS,
    admin::COMMANDS,
    meta::COMMANDS,
];

/// Every command, in `/help`'s order.
pub fn commands() -> impl Iterator<Item = &'static Spec> {
    FAMILIES.iter().flat_map(|family| family.iter())
}

/// The command typed as `word` (any case, slash optional).
pub fn find(word: &str) -> Option<&'static Spec> {
    let word = word.strip_prefix('/').unwrap_or(word);
    commands().find(|spec| spec.word[1..].eq_ignore_ascii_case(word))
}

/// The line members see when `user` talks with `command`; `None` for commands that do not talk.
pub fn render(user: &str, command: &Command<'_>) -> Option<String> {
    talk::render(user, command)
}

/// Parses one finished input line.
pub fn parse(line: &str) -> Command<'_> {
    let line = line.trim();
    if line.is_empty() {
        return Command::Empty;
    }
    if let Some(text) = line.strip_prefix('\'') {
        return text_command(text.trim(), Command::Say, "Usage: '<text>");
    }
    if let Some(text) = line.strip_prefix(';') {
        return text_command(text.trim(), Command::Emote, "Usage: ;<text>");
    }
    if !line.starts_with('/') {
        return Command::Say(line);
    }
    let (word, rest) = match line.find(char::is_whitespace) {
        Some(at) => (&line[..at], line[at..].trim()),
        None => (line, ""),
    };
    match commands().find(|spec| spec.word.eq_ignore_ascii_case(word)) {
        Some(spec) => (spec.parse)(rest),
        None => Command::Unknown(word),
    }
}

/// Does what `command` says, for the user behind `ctx`.
pub(crate) async fn run(ctx: &mut impl Ctx, command: Command<'_>) -> Result<(), Stop> {
    match command {
        Command::Empty => Ok(()),
        Command::Usage(usage) => {
            ctx.say(usage);
            Ok(())
        }
        Command::Unknown(word) => {
            ctx.say(&format!("Command \"{word}\" not recognized."));
            Ok(())
        }
        Command::Help(_) | Command::Quit => meta::run(ctx, command),
        Command::Exit => {
            channel::exit(ctx);
            Ok(())
        }
        // Boxed, as every command that waits: each session's task would otherwise reserve room
        // for the largest of them all its idle life (measured: 105 bytes per idle user).
        Command::List | Command::Create(_) | Command::Join(_) | Command::Who => {
            Box::pin(channel::run(ctx, command)).await
        }
        Command::Say(_) | Command::Emote(_) | Command::Think(_) | Command::Sing(_) => {
            talk::run(ctx, &command);
            Ok(())
        }
        Command::Away(_) | Command::Back => tell::run_now(ctx, command),
        Command::Tell(_) | Command::Reply(_) => Box::pin(tell::run(ctx, command)).await,
        Command::Users(_) | Command::Whois(_) => Box::pin(who::run(ctx, command)).await,
        Command::Passwd | Command::DeleteAccount => Box::pin(account::run(ctx, command)).await,
        Command::Ignoring | Command::Ignore(_) | Command::Unignore(_) => {
            Box::pin(ignore::run(ctx, command)).await
        }
        Command::Topic(_)
        | Command::Set(_)
        | Command::Owner(_)
        | Command::Kick(_)
        | Command::Ban(_)
        | Command::Unban(_)
        | Command::Mute(..)
        | Command::Unmute(_)
        | Command::Invite(_) => Box::pin(moderation::run(ctx, command)).await,
        Command::Kill(_)
        | Command::Wall(_)
        | Command::BanAccount(_)
        | Command::UnbanAccount(_)
        | Command::DeleteChannel(_) => Box::pin(admin::run(ctx, command)).await,
    }
}

/// What a command may use of the session that runs it.
pub(crate) trait Ctx {
    /// The user's name.
    fn name(&self) -> &Arc<str>;
    /// The user's account.
    fn user(&self) -> &User;
    /// The session's key on its shard.
    fn key(&self) -> u64;
    /// The shard the session runs on.
    fn shard(&self) -> &Rc<Shard>;
    /// Whether the user is a server admin.
    fn admin(&self) -> bool {
        let key = self.key();
        self.shard().chat(|hub, _| hub.is_admin(key))
    }
    /// Prints one line of server text for the user.
    fn say(&mut self, text: &str);
    /// Prints lines of server text at once.
    fn print(&mut self, lines: &[&str]);
    /// Tells the user that an account request failed.
    fn say_account_error(&mut self, err: &AccountError);
    /// The next answer the session's mailbox gets that `wanted` accepts, while output flows.
    async fn reply(&mut self, wanted: fn(&Reply) -> bool) -> Result<Reply, Stop>;
    /// [`Ctx::reply`], or `None` after `limit`: for an answer that may come from another node of
    /// a cluster (a channel's home there), which can go before it answers.
    async fn reply_within(
        &mut self,
        wanted: fn(&Reply) -> bool,
        limit: std::time::Duration,
    ) -> Result<Option<Reply>, Stop>;
    /// Waits for `job` (work on the worker pool) while output flows.
    async fn wait<T>(&mut self, job: impl Future<Output = T>) -> Result<T, Stop>;
    /// Waits until a session that has just moved shards has every line it left behind.
    async fn until_caught_up(&mut self) -> Result<(), Stop>;
    /// Shows `prompt` and returns the next line the user types, not echoed when `hidden`. Lines
    /// typed ahead are answered in order, at flood control's pace. ^D answers as an empty line
    /// (in a dialogue it means "never mind", not "log off").
    async fn ask(&mut self, prompt: &str, hidden: bool) -> Result<String, Stop>;
}

/// The user named `name` as their account spells it, or `None` once the user typing has been
/// told there is no such user (or why it could not be found out).
pub(crate) async fn account_name(ctx: &mut impl Ctx, name: &str) -> Result<Option<String>, Stop> {
    if crate::accounts::validate_username(name).is_err() {
        ctx.say(&format!("There is no user named {name}."));
        return Ok(None);
    }
    let accounts = ctx.shard().accounts.clone();
    match ctx.wait(accounts.profile(name)).await? {
        Ok(Some(profile)) => Ok(Some(profile.name)),
        Ok(None) => {
            ctx.say(&format!("There is no user named {name}."));
            Ok(None)
        }
        Err(e) => {
            ctx.say_account_error(&e);
            Ok(None)
        }
    }
}

/// A command whose argument is free text.
pub(crate) fn text_command<'a>(
    text: &'a str,
    make: fn(&'a str) -> Command<'a>,
    usage: &'static str,
) -> Command<'a> {
    if text.is_empty() {
        Command::Usage(usage)
    } else {
        make(text)
    }
}

/// A command whose argument is one name (a `#` before it is ignored).
pub(crate) fn name_command<'a>(
    rest: &'a str,
    make: fn(&'a str) -> Command<'a>,
    usage: &'static str,
) -> Command<'a> {
    let name = rest.strip_prefix('#').unwrap_or(rest);
    if name.is_empty() || name.contains(char::is_whitespace) {
        Command::Usage(usage)
    } else {
        make(name)
    }
}
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn talk_renders_as_members_see_it() {
        let r = |c| render("bob", &c).unwrap();
        assert_eq!(r(Command::Say("hi")), "bob says, \"hi\"");
        assert_eq!(r(Command::Emote("waves")), "bob waves");
        assert_eq!(r(Command::Think("hmm")), "bob thinks . o O ( hmm )");
        assert_eq!(r(Command::Sing("la")), "bob sings ~ ~ la ~ ~");
        assert_eq!(render("bob", &Command::Who), None);
    }

    #[test]
    fn commands_parse() {
        let who_usage = "Usage: /who, or /who * [page] for everyone online";
        let cases: &[(&str, Command<'_>)] = &[
            ("", Command::Empty),
            ("   ", Command::Empty),
            ("/help", Command::Help(None)),
            ("/help join", Command::Help(Some("join"))),
            ("/HELP", Command::Help(None)),
            ("/quit", Command::Quit),
            ("/list", Command::List),
            ("/who", Command::Who),
            ("/who *", Command::Users(1)),
            ("/who * 2", Command::Users(2)),
            ("/who *2", Command::Users(2)),
            ("/who * 0", Command::Usage(who_usage)),
            ("/who * x", Command::Usage(who_usage)),
            ("/who bob", Command::Usage(who_usage)),
            ("/users", Command::Users(1)),
            ("/users 3", Command::Users(3)),
            ("/users -1", Command::Usage("Usage: /users [page]")),
            ("/users 10000", Command::Users(10_000)),
            ("/users 10001", Command::Usage("Usage: /users [page]")),
            ("/whois Bob", Command::Whois("Bob")),
            ("/whois", Command::Usage("Usage: /whois <name>")),
            ("/exit", Command::Exit),
            ("/create lobby", Command::Create("lobby")),
            ("/create #lobby", Command::Create("lobby")),
            ("/join  lobby ", Command::Join("lobby")),
            ("/join", Command::Usage("Usage: /join <channel>")),
            ("/join a b", Command::Usage("Usage: /join <channel>")),
            ("/create", Command::Usage("Usage: /create <channel>")),
            ("/say hello there", Command::Say("hello there")),
            ("/say", Command::Usage("Usage: /say <text>")),
            ("'hi", Command::Say("hi")),
            ("' hi", Command::Say("hi")),
            ("'", Command::Usage("Usage: '<text>")),
            (";waves", Command::Emote("waves")),
            ("/emote waves", Command::Emote("waves")),
            ("/think hmm", Command::Think("hmm")),
            ("/sing la la", Command::Sing("la la")),
            ("hello", Command::Say("hello")),
            ("  hello  ", Command::Say("hello")),
            ("/tell bob hi there", Command::Tell("bob hi there")),
            ("/msg bob  hi ", Command::Tell("bob  hi")),
            ("/tell bob", Command::Usage("Usage: /tell <name> <text>")),
            ("/tell", Command::Usage("Usage: /tell <name> <text>")),
            ("/msg bob ", Command::Usage("Usage: /msg <name> <text>")),
            ("/reply ok", Command::Reply("ok")),
            ("/away", Command::Away("")),
            ("/away gone  fishing ", Command::Away("gone  fishing")),
            ("/back", Command::Back),
            ("/passwd", Command::Passwd),
            ("/PASSWD now", Command::Passwd),
            ("/delete-account", Command::DeleteAccount),
            ("/Delete-Account ", Command::DeleteAccount),
            ("/delete", Command::Unknown("/delete")),
            ("/reply", Command::Usage("Usage: /reply <text>")),
            ("/x", Command::Unknown("/x")),
            ("/x y", Command::Unknown("/x")),
            ("/", Command::Unknown("/")),
        ];
        for (line, want) in cases {
            assert_eq!(parse(line), *want, "line {line:?}");
        }
    }
}
