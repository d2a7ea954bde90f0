//! Who is around: `/who` on a channel, `/who *` (or `/users`) for everyone online, and `/whois`.
//!
//! Everyone online is found in two rounds (see `hub::users`): every shard's part of the directory
//! names its users, in name order, as many as the page asked for needs; then the shards of the
//! sessions on that page say when each logged in, last typed and whether it is away, which only
//! a session's own shard knows. A page costs the asker two ring round trips and at most
//! [`PAGE`] users' facts, however many are online. In a cluster the other nodes are asked too,
//! through the bridge, each answering for its own users with both rounds done (at most a second
//! for a node that does not answer); a user logged in on two nodes is one line, counted by each.

use std::collections::HashMap;

use std::sync::Arc;

use shard_proto::{OnlineUser, SessionFacts, SessionId, UserElsewhere};

use super::{Command, Ctx, Spec};
use crate::accounts;
use crate::hub::by_name;
use crate::mailbox::Reply;
use crate::session::Stop;

/// Users on one page of `/who *`.
pub const PAGE: u32 = 50;

/// The last page that may be asked for: enough for 500,000 users, and a bound on what one
/// `/who *` makes every shard and node send.
pub const MAX_PAGE: u32 = 10_000;

const WHO_USAGE: &str = "Usage: /who, or /who * [page] for everyone online";
const USERS_USAGE: &str = "Usage: /users [page]";

/// This family's commands, in `/help`'s order.
pub const COMMANDS: &[Spec] = &[
    Spec {
        word: "/who",
        args: "[* [page]]",
        summary: "who is on your channel (/who *: everyone online)",
        parse: |rest| match rest.strip_prefix('*') {
            None if rest.is_empty() => Command::Who,
            Some(page) => users(page.trim(), WHO_USAGE),
            None => Command::Usage(WHO_USAGE),
        },
    },
    Spec {
        word: "/users",
        args: "[page]",
        summary: "everyone online, with idle times, 50 to a page",
        parse: |rest| users(rest, USERS_USAGE),
    },
    Spec {
        word: "/whois",
        args: "<name>",
        summary: "whether someone is online, since when, idle, channel, away",
        parse: |rest| super::name_command(rest, Command::Whois, "Usage: /whois <name>"),
    },
];

/// `/who *` or `/users` with `page` (empty: the first).
fn users<'a>(page: &str, usage: &'static str) -> Command<'a> {
    if page.is_empty() {
        return Command::Users(1);
    }
    match page.parse::<u32>() {
        Ok(page) if (1..=MAX_PAGE).contains(&page) => Command::Users(page),
        _ => Command::Usage(usage),
    }
}

/// Applies `/who *`, `/users` or `/whois` (`/who` alone is the channel family's).
pub(crate) async fn run(ctx: &mut impl Ctx, command: Command<'_>) -> Result<(), Stop> {
    match command {
        Command::Users(page) => everyone(ctx, page).await,
        Command::Whois(name) => whois(ctx, name).await,
        _ => unreachable!("not a who command: {command:?}"),
    }
}

/// Asks the directory (one name, or every shard's first `first`) and gathers the answers: how
/// many users there are, and the ones named, in name order.
async fn census(
    ctx: &mut impl Ctx,
    first: u32,
    name: Option<&str>,
) -> Result<(u32, Vec<OnlineUser>), Stop> {
    let key = ctx.key();
    let expected = ctx
        .shard()
        .chat(|hub, out| hub.census(key, first, name, out));
    let (mut total, mut users) = (0u32, Vec::new());
    for _ in 0..expected {
        if let Reply::Census { total: t, users: u } =
            ctx.reply(|r| matches!(r, Reply::Census { .. })).await?
        {
            total = total.saturating_add(t);
            users.extend(*u);
        }
    }
    users.sort_by(|a, b| by_name(&a.name, &b.name));
    Ok((total, users))
}

/// Asks the shards of `sessions` what they know of them; a session that has gone since the
/// directory named it is missing from the answer.
async fn facts(
    ctx: &mut impl Ctx,
    sessions: &[SessionId],
) -> Result<HashMap<SessionId, SessionFacts>, Stop> {
    let key = ctx.key();
    let expected = ctx.shard().chat(|hub, out| hub.facts(key, sessions, out));
    let mut all = HashMap::new();
    for _ in 0..expected {
        if let Reply::Facts(facts) = ctx.reply(|r| matches!(r, Reply::Facts(_))).await? {
            all.extend(facts.into_iter().map(|f| (f.session, f)));
        }
    }
    Ok(all)
}

/// One user as both lists show them, from what their sessions' shards said (on this node, or
/// another node's bridge for that node's sessions).
#[derive(Debug)]
struct Seen {
    /// The name as the account spells it.
    name: Arc<str>,
    /// The earliest login of their sessions.
    since: u32,
    /// The latest line typed in any of them.
    last_input: u32,
    /// The away message of the first session that is away.
    away: Option<Arc<str>>,
    /// The channels their sessions are on, without repeats.
    channels: Vec<String>,
    /// Sessions still there.
    sessions: u32,
    /// The nodes they are on (in a cluster).
    nodes: Vec<Arc<str>>,
}

impl Seen {
    /// Adds what `other` says of the same user's other sessions.
    fn merge(&mut self, other: Seen) {
        self.since = self.since.min(other.since);
        self.last_input = self.last_input.max(other.last_input);
        if self.away.is_none() {
            self.away = other.away;
        }
        for channel in other.channels {
            if !self.channels.contains(&channel) {
                self.channels.push(channel);
            }
        }
        self.sessions += other.sessions;
        self.nodes.extend(other.nodes);
    }
}

/// What this node's shards said of `user`'s sessions, put together; `None` if all have ended.
fn seen_here(
    user: &OnlineUser,
    facts: &HashMap<SessionId, SessionFacts>,
    node: Option<&Arc<str>>,
) -> Option<Seen> {
    let mut found = user.sessions.iter().filter_map(|s| facts.get(s)).peekable();
    found.peek()?;
    let mut seen = Seen {
        name: user.name.clone(),
        since: u32::MAX,
        last_input: 0,
        away: None,
        channels: Vec::new(),
        sessions: 0,
        nodes: node.into_iter().cloned().collect(),
    };
    for f in found {
        seen.since = seen.since.min(f.since);
        seen.last_input = seen.last_input.max(f.last_input);
        if seen.away.is_none() {
            seen.away = f.away.clone();
        }
        if let Some(channel) = &f.channel {
            let channel = channel.to_string();
            if !seen.channels.contains(&channel) {
                seen.channels.push(channel);
            }
        }
        seen.sessions += 1;
    }
    Some(seen)
}

impl From<UserElsewhere> for Seen {
    fn from(u: UserElsewhere) -> Seen {
        Seen {
            name: u.name,
            since: u.since,
            last_input: u.last_input,
            away: u.away,
            channels: u.channels,
            sessions: u.sessions,
            nodes: vec![u.node],
        }
    }
}

/// Asks the other nodes of a cluster (the first `first` users by name, or `name`); `None` when
/// there are none to ask or they cannot be reached now.
async fn elsewhere(
    ctx: &mut impl Ctx,
    first: u32,
    name: Option<&str>,
) -> Result<Option<(u32, Vec<UserElsewhere>)>, Stop> {
    let key = ctx.key();
    if !ctx
        .shard()
        .chat(|hub, out| hub.census_elsewhere(key, first, name, out))
    {
        return Ok(None);
    }
    match ctx.reply(|r| matches!(r, Reply::Elsewhere { .. })).await? {
        Reply::Elsewhere { total, users } => Ok(Some((total, users))),
        _ => Ok(None),
    }
}

/// A note for the heading when only this node's users could be counted.
fn this_node_only(ctx: &impl Ctx, asked_elsewhere: bool) -> &'static str {
    if ctx.shard().cluster.is_some() && !asked_elsewhere {
        " on this node"
    } else {
        ""
    }
}

async fn everyone(ctx: &mut impl Ctx, page: u32) -> Result<(), Stop> {
    let first = page.saturating_mul(PAGE);
    let (here_total, here) = census(ctx, first, None).await?;
    let there = elsewhere(ctx, first, None).await?;
    let somewhere = this_node_only(ctx, there.is_some());
    let (there_total, there) = there.unwrap_or_default();
    // Both lists in name order, and the page taken from the two together. A user logged in on
    // several nodes is listed by each: one line, counted once (each node counted them, so the
    // total loses the repeats seen; a repeat past the pages asked so far is not seen).
    enum Entry {
        Here(OnlineUser),
        There(UserElsewhere),
    }
    let name_of = |e: &Entry| match e {
        Entry::Here(u) => u.name.clone(),
        Entry::There(u) => u.name.clone(),
    };
    let mut all: Vec<Entry> = here.into_iter().map(Entry::Here).collect();
    all.extend(there.into_iter().map(Entry::There));
    all.sort_by(|a, b| by_name(&name_of(a), &name_of(b)));
    let listed = all.len();
    let mut users: Vec<Vec<Entry>> = Vec::new();
    for entry in all {
        match users.last_mut() {
            Some(user) if name_of(&user[0]).eq_ignore_ascii_case(&name_of(&entry)) => {
                user.push(entry)
            }
            _ => users.push(vec![entry]),
        }
    }
    let repeats = u32::try_from(listed - users.len()).unwrap_or(u32::MAX);
    let total = here_total
        .saturating_add(there_total)
        .saturating_sub(repeats);
    let pages = total.div_ceil(PAGE).max(1);
    if page > pages {
        let have = if pages == 1 {
            "there is 1".to_string()
        } else {
            format!("there are {pages}")
        };
        ctx.say(&format!("There is no page {page}; {have}."));
        return Ok(());
    }
    let start = ((page - 1) * PAGE) as usize;
    let shown: Vec<Vec<Entry>> = users.into_iter().skip(start).take(PAGE as usize).collect();
    let sessions: Vec<SessionId> = shown
        .iter()
        .flatten()
        .filter_map(|e| match e {
            Entry::Here(u) => Some(u.sessions.iter().copied()),
            Entry::There(_) => None,
        })
        .flatten()
        .collect();
    let facts = facts(ctx, &sessions).await?;
    let now = now();
    let mut lines = vec![format!(
        "Users online{somewhere}: {total}, page {page} of {pages}."
    )];
    let mut seen_all: Vec<Seen> = Vec::new();
    for user in shown {
        let mut merged: Option<Seen> = None;
        for entry in user {
            // Logged off between the two rounds: not online here any more.
            let seen = match entry {
                Entry::Here(user) => match seen_here(&user, &facts, None) {
                    Some(seen) => seen,
                    None => continue,
                },
                Entry::There(user) => user.into(),
            };
            match &mut merged {
                Some(merged) => merged.merge(seen),
                None => merged = Some(seen),
            }
        }
        seen_all.extend(merged);
    }
    for seen in seen_all {
        let idle = short_duration(now.saturating_sub(seen.last_input));
        let mut line = format!("  {:<24} idle {idle:<7}", seen.name);
        match seen.away.as_deref() {
            Some("") => line.push_str(" (away)"),
            Some(message) => line.push_str(&format!(" (away: {message})")),
            None => {}
        }
        lines.push(line.trim_end().to_string());
    }
    if page < pages {
        lines.push(format!("Type /who * {} for the next page.", page + 1));
    }
    let lines: Vec<&str> = lines.iter().map(String::as_str).collect();
    ctx.print(&lines);
    Ok(())
}

/// Nodes one user may be on at most, as `/whois` asks the others.
const WHOIS_NODES: u32 = 64;

async fn whois(ctx: &mut impl Ctx, name: &str) -> Result<(), Stop> {
    if accounts::validate_username(name).is_err() {
        ctx.say(&format!("There is no user named {name}."));
        return Ok(());
    }
    let (_, users) = census(ctx, 1, Some(name)).await?;
    let sessions = users.first().map_or(&[][..], |u| &u.sessions[..]);
    let facts = facts(ctx, sessions).await?;
    let node = ctx.shard().chat(|hub, _| hub.node_name());
    let mut found = users
        .first()
        .and_then(|user| seen_here(user, &facts, node.as_ref()));
    let there = elsewhere(ctx, WHOIS_NODES, Some(name)).await?;
    let asked_elsewhere = there.is_some();
    for user in there.map(|(_, users)| users).unwrap_or_default() {
        match &mut found {
            Some(seen) => seen.merge(user.into()),
            None => found = Some(user.into()),
        }
    }
    let Some(seen) = found else {
        return not_online(ctx, name, asked_elsewhere).await;
    };
    let now = now();
    let name = &seen.name;
    let mut lines = vec![match seen.sessions {
        1 => format!("{name} is online."),
        n => format!("{name} is online, in {n} sessions."),
    }];
    lines.push(format!(
        "  Logged in: {} ({} ago)",
        date(seen.since),
        short_duration(now.saturating_sub(seen.since))
    ));
    lines.push(format!(
        "  Idle: {}",
        short_duration(now.saturating_sub(seen.last_input))
    ));
    lines.push(if seen.channels.is_empty() {
        "  Channel: none".to_string()
    } else {
        let channels: Vec<String> = seen.channels.iter().map(|c| format!("#{c}")).collect();
        format!("  Channel: {}", channels.join(", "))
    });
    if !seen.nodes.is_empty() {
        let nodes: Vec<&str> = seen.nodes.iter().map(|n| &**n).collect();
        lines.push(format!("  Node: {}", nodes.join(", ")));
    }
    match seen.away.as_deref() {
        Some("") => lines.push("  Away.".to_string()),
        Some(message) => lines.push(format!("  Away: {message}")),
        None => {}
    }
    let lines: Vec<&str> = lines.iter().map(String::as_str).collect();
    ctx.print(&lines);
    Ok(())
}

/// `/whois` of someone the directory does not have.
async fn not_online(ctx: &mut impl Ctx, name: &str, asked_elsewhere: bool) -> Result<(), Stop> {
    let accounts = ctx.shard().accounts.clone();
    let profile = match ctx.wait(accounts.profile(name)).await? {
        Ok(Some(profile)) => profile,
        Ok(None) => {
            ctx.say(&format!("There is no user named {name}."));
            return Ok(());
        }
        Err(e) => {
            ctx.say_account_error(&e);
            return Ok(());
        }
    };
    let name = &profile.name;
    let here = this_node_only(ctx, asked_elsewhere);
    let seen = match profile.last_seen.and_then(|t| u32::try_from(t).ok()) {
        Some(at) => format!(
            "  Last seen: {} ({} ago)",
            date(at),
            short_duration(now().saturating_sub(at))
        ),
        None => "  Last seen: never".to_string(),
    };
    let created = u32::try_from(profile.created_at).unwrap_or_default();
    ctx.print(&[
        &format!("{name} is not online{here}."),
        &seen,
        &format!("  Account made: {}", date(created)),
    ]);
    Ok(())
}

/// Now, in Unix seconds.
fn now() -> u32 {
    u32::try_from(accounts::unix_now()).unwrap_or(u32::MAX)
}

/// `secs` as a user reads it at a glance: `45s`, `12m`, `3h 5m`, `2d 4h`.
pub fn short_duration(secs: u32) -> String {
    let (m, h, d) = (secs / 60, secs / 3600, secs / 86_400);
    match secs {
        0..=59 => format!("{secs}s"),
        60..=3599 => format!("{m}m"),
        3600..=86_399 => format!("{h}h {}m", m % 60),
        _ => format!("{d}d {}h", h % 24),
    }
}

/// A Unix time as `2026-11-30 12:34 UTC`.
pub fn date(unix: u32) -> String {
    match time::OffsetDateTime::from_unix_timestamp(i64::from(unix)) {
        Ok(t) => format!(
            "{}-{:02}-{:02} {:02}:{:02} UTC",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute()
        ),
        Err(_) => "an unknown time".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_dates_read_at_a_glance() {
        for (secs, text) in [
            (0, "0s"),
            (59, "59s"),
            (60, "1m"),
            (3599, "59m"),
            (3600, "1h 0m"),
            (3600 + 5 * 60 + 9, "1h 5m"),
            (86_399, "23h 59m"),
            (86_400, "1d 0h"),
            (2 * 86_400 + 4 * 3600 + 1, "2d 4h"),
        ] {
            assert_eq!(short_duration(secs), text, "{secs}");
        }
        assert_eq!(date(0), "1970-01-01 00:00 UTC");
        assert_eq!(date(1_796_000_000), "2026-11-30 00:53 UTC");
    }
}
