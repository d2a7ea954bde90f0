//! Who is around: `/who` on a channel, `/who *` (or `/users`) for everyone online, and `/whois`.
//!
//! Everyone online is found in two rounds (see `hub::users`): every shard's part of the directory
//! names its users, in name order, as many as the page asked for needs; then the shards of the
//! sessions on that page say when each logged in, last typed and whether it is away, which only
//! a session's own shard knows. A page costs the asker two ring round trips and at most
//! [`PAGE`] users' facts, however many are online.

use std::collections::HashMap;

use shard_proto::{OnlineUser, SessionFacts, SessionId};

use super::{Command, Ctx, Spec};
use crate::accounts;
use crate::hub::by_name;
use crate::mailbox::Reply;
use crate::session::Stop;

/// Users on one page of `/who *`.
pub const PAGE: u32 = 50;

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
        Ok(page) if page > 0 => Command::Users(page),
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

/// One user as both lists show them, from what their sessions' shards said.
struct Seen<'a> {
    /// The earliest login of their sessions.
    since: u32,
    /// The latest line typed in any of them.
    last_input: u32,
    /// The away message of the first session that is away.
    away: Option<&'a str>,
    /// The channels their sessions are on, without repeats.
    channels: Vec<String>,
    /// Sessions still there.
    sessions: usize,
}

fn seen<'a>(user: &OnlineUser, facts: &'a HashMap<SessionId, SessionFacts>) -> Option<Seen<'a>> {
    let mut found = user.sessions.iter().filter_map(|s| facts.get(s)).peekable();
    found.peek()?;
    let mut seen = Seen {
        since: u32::MAX,
        last_input: 0,
        away: None,
        channels: Vec::new(),
        sessions: 0,
    };
    for f in found {
        seen.since = seen.since.min(f.since);
        seen.last_input = seen.last_input.max(f.last_input);
        seen.away = seen.away.or(f.away.as_deref());
        if let Some(channel) = &f.channel {
            let channel = format!("#{channel}");
            if !seen.channels.contains(&channel) {
                seen.channels.push(channel);
            }
        }
        seen.sessions += 1;
    }
    Some(seen)
}

async fn everyone(ctx: &mut impl Ctx, page: u32) -> Result<(), Stop> {
    let (total, users) = census(ctx, page.saturating_mul(PAGE), None).await?;
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
    let shown = users.get(start..).unwrap_or_default();
    let shown = &shown[..shown.len().min(PAGE as usize)];
    let sessions: Vec<SessionId> = shown
        .iter()
        .flat_map(|u| u.sessions.iter().copied())
        .collect();
    let facts = facts(ctx, &sessions).await?;
    let now = now();
    let somewhere = if ctx.shard().cluster.is_some() {
        " on this node"
    } else {
        ""
    };
    let mut lines = vec![format!(
        "Users online{somewhere}: {total}, page {page} of {pages}."
    )];
    for user in shown {
        // Logged off between the two rounds: not online any more.
        let Some(seen) = seen(user, &facts) else {
            continue;
        };
        let idle = short_duration(now.saturating_sub(seen.last_input));
        let mut line = format!("  {:<24} idle {idle:<7}", user.name);
        match seen.away {
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

async fn whois(ctx: &mut impl Ctx, name: &str) -> Result<(), Stop> {
    if accounts::validate_username(name).is_err() {
        ctx.say(&format!("There is no user named {name}."));
        return Ok(());
    }
    let (_, users) = census(ctx, 1, Some(name)).await?;
    let sessions = users.first().map_or(&[][..], |u| &u.sessions[..]);
    let facts = facts(ctx, sessions).await?;
    let found = users
        .first()
        .and_then(|user| Some((&user.name, seen(user, &facts)?)));
    let Some((name, seen)) = found else {
        return not_online(ctx, name).await;
    };
    let now = now();
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
        format!("  Channel: {}", seen.channels.join(", "))
    });
    match seen.away {
        Some("") => lines.push("  Away.".to_string()),
        Some(message) => lines.push(format!("  Away: {message}")),
        None => {}
    }
    let lines: Vec<&str> = lines.iter().map(String::as_str).collect();
    ctx.print(&lines);
    Ok(())
}

/// `/whois` of someone the directory does not have.
async fn not_online(ctx: &mut impl Ctx, name: &str) -> Result<(), Stop> {
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
    let here = if ctx.shard().cluster.is_some() {
        " on this node"
    } else {
        ""
    };
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
