//! ringtalk's lines as docs/PROTOCOL.md writes them, turned into what the bench acts on.
//!
//! Pure functions over one line of text (telnet and CR LF already gone), so they are tested without a
//! server. The chat text the bench sends, `t=<ns> s=<sender> [n=<node>] <padding>`, is built and read
//! here too; it is the same for IRC.

/// Prompts that end the login dialogue's questions (no line end follows them).
pub mod prompt {
    pub const USERNAME: &str = "Username: ";
    pub const PASSWORD: &str = "Password: ";
    pub const CREATE: &str = "(y/n) ";
    pub const NEW_PASSWORD: &str = "Password for new account: ";
    pub const REPEAT_PASSWORD: &str = "Repeat password: ";
}

/// The lines of ringtalk's defences (issue 10), exactly as the server sends them.
pub mod defence {
    /// Over `--max-conns-per-ip`: sent, then the connection is closed.
    pub const TOO_MANY_CONNS: &str = "Too many connections from your address.";
    /// Over `--max-unauth-per-ip` (connections not yet logged in): sent, then closed.
    pub const TOO_MANY_UNAUTH: &str =
        "Too many connections from your address are still logging in; try again later.";
    /// Over `--conn-rate`: sent, then closed.
    pub const TOO_MANY_RECENT: &str =
        "Too many connections from your address recently; try again later.";
    /// Part of the login throttle's line; the connection stays open, back at `Username: `.
    pub const LOGIN_THROTTLE: &str = "Too many failed logins";
    /// Part of the line of the per-account slow-down (which also contains [`LOGIN_THROTTLE`]): the
    /// password is checked after the wait it names, so the login goes on.
    pub const ACCOUNT_SLOWED: &str = "your password will be checked";
    /// Part of the sign-up throttle's line.
    pub const SIGNUP_THROTTLE: &str = "Too many new accounts";
}

/// The notices of a ringtalk cluster (issue 11), as its nodes write them to a channel's members.
pub mod cluster {
    /// `[#<channel> moved to another node; lines sent in the last seconds may be lost.]`: the
    /// channel's home node is gone and another took it over.
    pub const MOVED: &str = " moved to another node";
    /// `[Chat with other nodes in #<channel> is interrupted; lines from them will resume when the
    /// link is back.]`: this node lost NATS.
    pub const LINK_PREFIX: &str = "[Chat with other nodes in #";
    pub const INTERRUPTED: &str = " is interrupted";
    /// `[Chat with other nodes in #<channel> is back.]`: NATS again.
    pub const BACK: &str = " is back.]";
}

/// Which cluster notice a line is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Notice {
    /// The channel moved to another node.
    Moved,
    /// Chat with other nodes is interrupted.
    Interrupted,
    /// Chat with other nodes is back.
    Back,
}

/// Why the server turned a connection away before any login work (issue 10's per-address limits).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// `--max-conns-per-ip`.
    Conns,
    /// `--max-unauth-per-ip`.
    Unauth,
    /// `--conn-rate`.
    Rate,
}

/// Reads a connection refusal line (after anything a prompt left on the row); `None` for any other
/// line.
pub fn refusal(line: &str) -> Option<Refusal> {
    let line = line.trim();
    if line.ends_with(defence::TOO_MANY_UNAUTH) {
        Some(Refusal::Unauth)
    } else if line.ends_with(defence::TOO_MANY_RECENT) {
        Some(Refusal::Rate)
    } else if line.ends_with(defence::TOO_MANY_CONNS) {
        Some(Refusal::Conns)
    } else {
        None
    }
}

/// Which login question a tail of unfinished text is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Prompt {
    Username,
    Password,
    Create,
    NewPassword,
    RepeatPassword,
}

/// Reads a login question from the tail of the text received so far.
pub fn login_prompt(tail: &str) -> Option<Prompt> {
    if tail.ends_with(prompt::NEW_PASSWORD) {
        Some(Prompt::NewPassword)
    } else if tail.ends_with(prompt::REPEAT_PASSWORD) {
        Some(Prompt::RepeatPassword)
    } else if tail.ends_with(prompt::PASSWORD) {
        Some(Prompt::Password)
    } else if tail.ends_with(prompt::USERNAME) {
        Some(Prompt::Username)
    } else if tail.ends_with(prompt::CREATE) {
        Some(Prompt::Create)
    } else {
        None
    }
}

/// A line seen during the login dialogue.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LoginLine {
    /// `You are logged in. ...` or `Your new account has been created. You are logged in.`
    LoggedIn,
    /// `Server busy, try again in a moment.`: the question is asked again.
    Busy,
    /// `Someone else just took that username. ...`: the username prompt follows.
    Taken,
    /// `Login timed out. ...`: the server closes the connection.
    TimedOut,
    /// A refusal the bench cannot get past (wrong password, bad name, internal error): the text.
    Refused(String),
    /// A per-address limit or throttle turned the login away (a connection refusal line, the login
    /// or the sign-up throttle): the text.
    Limited(String),
    /// Welcome text, blank lines, anything else.
    Other,
}

/// Classifies a line of the login dialogue.
pub fn login_line(line: &str) -> LoginLine {
    let line = line.trim();
    if line.contains("You are logged in.") {
        LoginLine::LoggedIn
    } else if line.starts_with("Server busy") {
        LoginLine::Busy
    } else if line.starts_with("Someone else just took that username") {
        LoginLine::Taken
    } else if line.starts_with("Login timed out") {
        LoginLine::TimedOut
    } else if line.contains(defence::ACCOUNT_SLOWED) {
        // Slowed, not refused: the answer comes after the wait.
        LoginLine::Other
    } else if refusal(line).is_some()
        || line.contains(defence::LOGIN_THROTTLE)
        || line.contains(defence::SIGNUP_THROTTLE)
    {
        LoginLine::Limited(line.to_string())
    } else if line.starts_with("Incorrect password")
        || line.starts_with("Too many incorrect passwords")
        || line.starts_with("Usernames are ")
        || line.starts_with("Passwords are ")
        || line.starts_with("Confirmation password did not match")
        || line.starts_with("Something went wrong")
        || line.starts_with("That username does not exist.")
    {
        LoginLine::Refused(line.to_string())
    } else {
        LoginLine::Other
    }
}

/// A line seen once logged in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ChatLine<'a> {
    /// `<sender> says, "<text>"`.
    Said { sender: &'a str, text: &'a str },
    /// `[<N> messages dropped]`: the server's queue for us overflowed.
    Dropped(u64),
    /// `You are sending too fast; <N> lines were dropped.` (`1 line was dropped.`): flood control
    /// dropped lines we sent.
    FloodDropped(u64),
    /// `You have joined #<Channel>`.
    Joined(&'a str),
    /// `Channel #<name> does not exist. ...`
    NoSuchChannel,
    /// `Channel #<name> created.`
    Created,
    /// `Channel already exists.`
    Exists,
    /// `Request to join channel denied: Channel is full`.
    Full,
    /// `You are already on #<Channel>.`
    AlreadyOn,
    /// `Channels:` heading of `/list`.
    ListHeading,
    /// `  #<Channel> (<members>)`, a `/list` entry.
    ListEntry { channel: &'a str, members: u64 },
    /// `There are no channels yet. ...`
    NoChannels,
    /// `Server is shutting down.` or `Goodbye.`: the connection closes next.
    Closing,
    /// A cluster's notice about a channel (moved, link interrupted, link back): which, and the
    /// channel's name.
    Cluster(Notice, &'a str),
    /// A reply that means the bench said something wrong (or the server did).
    Complaint(&'a str),
    /// Others joining or leaving, prompts, blank lines: nothing to act on.
    Noise,
}

/// Removes any prompts (`<me> #<channel>> `, `<me> #(no channel)> `) printed before a line.
pub fn strip_prompts<'a>(mut line: &'a str, me: &str) -> &'a str {
    loop {
        let Some(rest) = line.strip_prefix(me).and_then(|r| r.strip_prefix(" #")) else {
            return line;
        };
        let Some(end) = rest.find("> ") else {
            return line;
        };
        line = &rest[end + 2..];
    }
}

/// Classifies a line received while logged in as `me`.
pub fn chat_line<'a>(line: &'a str, me: &str) -> ChatLine<'a> {
    let line = strip_prompts(line, me);
    // A line said before this client joined, replayed on its join: not a delivery.
    if line.starts_with("[history] ") {
        return ChatLine::Noise;
    }
    if let Some(i) = line.find(" says, \"") {
        let text = &line[i + 8..];
        if let Some(text) = text.strip_suffix('"') {
            return ChatLine::Said {
                sender: &line[..i],
                text,
            };
        }
    }
    // A private message (the tells scenario): a delivery like a channel's line.
    if let Some(i) = line.find(" tells you, \"") {
        if let Some(text) = line[i + 13..].strip_suffix('"') {
            return ChatLine::Said {
                sender: &line[..i],
                text,
            };
        }
    }
    // The sender's own copy of a private message, and a tell that found nobody.
    if line.starts_with("You tell ") || line.ends_with(" is not online.") {
        return ChatLine::Noise;
    }
    if let Some(n) = line
        .strip_prefix('[')
        .and_then(|r| r.strip_suffix(" messages dropped]"))
        .and_then(|n| n.parse().ok())
    {
        return ChatLine::Dropped(n);
    }
    if let Some(n) = line
        .strip_prefix("You are sending too fast; ")
        .and_then(|r| {
            r.strip_suffix(" lines were dropped.")
                .or_else(|| r.strip_suffix(" line was dropped."))
        })
        .and_then(|n| n.parse().ok())
    {
        return ChatLine::FloodDropped(n);
    }
    if let Some(ch) = line.strip_prefix("You have joined #") {
        return ChatLine::Joined(ch);
    }
    if let Some(notice) = cluster_notice(line) {
        return notice;
    }
    if let Some(rest) = line.strip_prefix("  #") {
        // `  #<channel> (<members>)`, then `: <topic>` if it has one (names have no spaces).
        if let Some((ch, n)) = rest.split_once(" (") {
            if let Some(members) = n.split_once(')').and_then(|(n, _)| n.parse().ok()) {
                return ChatLine::ListEntry {
                    channel: ch,
                    members,
                };
            }
        }
    }
    match line {
        "Channel already exists." => return ChatLine::Exists,
        "Request to join channel denied: Channel is full" => return ChatLine::Full,
        "Channels:" => return ChatLine::ListHeading,
        "Server is shutting down." | "Goodbye." => return ChatLine::Closing,
        _ => {}
    }
    if line.starts_with("Channel #") {
        if line.ends_with(" created.") {
            return ChatLine::Created;
        }
        if line.contains(" does not exist.") {
            return ChatLine::NoSuchChannel;
        }
    }
    if line.starts_with("You are already on #") {
        return ChatLine::AlreadyOn;
    }
    if line.starts_with("There are no channels yet.") {
        return ChatLine::NoChannels;
    }
    if line.starts_with("Command \"")
        || line.starts_with("Usage: ")
        || line.starts_with("You are not on a channel.")
        || line.starts_with("Channel names are ")
        || line.starts_with("Line too long")
        || line.starts_with("Bytes that were not valid UTF-8")
    {
        return ChatLine::Complaint(line);
    }
    ChatLine::Noise
}

/// A cluster's notice, or `None`.
fn cluster_notice(line: &str) -> Option<ChatLine<'_>> {
    if let Some(rest) = line.strip_prefix(cluster::LINK_PREFIX) {
        // The interrupted notice ends in "... when the link is back.]" too: it goes first.
        if let Some((ch, _)) = rest.split_once(cluster::INTERRUPTED) {
            return Some(ChatLine::Cluster(Notice::Interrupted, ch));
        }
        let ch = rest.strip_suffix(cluster::BACK)?;
        return Some(ChatLine::Cluster(Notice::Back, ch));
    }
    let rest = line.strip_prefix("[#")?;
    if !rest.ends_with(']') {
        return None;
    }
    let (ch, _) = rest.split_once(cluster::MOVED)?;
    Some(ChatLine::Cluster(Notice::Moved, ch))
}

/// The chat text the bench sends: `t=<CLOCK_MONOTONIC ns> s=<sender id> `, then `n=<node tag> ` when
/// the sender knows its cluster node (see [`node_of_greeting`]), padded with `x` to `len`.
pub fn chat_text(sent_ns: u64, sender: u32, node: Option<u32>, len: usize) -> String {
    let mut text = format!("t={sent_ns} s={sender} ");
    if let Some(node) = node {
        text.push_str(&format!("n={node:06x} "));
    }
    while text.len() < len {
        text.push('x');
    }
    text
}

/// The node a cluster's greeting names (`You are on node <name>.`), as the 24-bit tag chat texts
/// carry: a hash of the name (FNV-1a), so every bench process tags a node alike.
pub fn node_of_greeting(line: &str) -> Option<u32> {
    let name = line
        .trim()
        .strip_prefix("You are on node ")?
        .strip_suffix('.')?;
    let hash = name.bytes().fold(0x811c_9dc5u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    });
    Some(hash & 0xff_ffff)
}

/// What a chat text the bench wrote says about itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChatText {
    pub sent_ns: u64,
    pub sender: u32,
    /// The sender's node tag, in a cluster.
    pub node: Option<u32>,
}

/// Line `n` of the abuse scenario's paste: `paste=<n> ` padded with `x` to `len`. It carries no send
/// time: the paste is not a latency measurement, only counted where it arrives.
pub fn paste_text(n: u32, len: usize) -> String {
    let mut text = format!("paste={n} ");
    while text.len() < len {
        text.push('x');
    }
    text
}

/// Whether a chat text is a line of the abuse scenario's paste.
pub fn is_paste_text(text: &str) -> bool {
    text.strip_prefix("paste=")
        .and_then(|r| r.split(' ').next())
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// Reads the send time, sender and node back out of a chat text; `None` for text the bench did not
/// write.
pub fn parse_chat_text(text: &str) -> Option<ChatText> {
    let mut words = text.split(' ');
    let sent_ns = words.next()?.strip_prefix("t=")?.parse().ok()?;
    let sender = words.next()?.strip_prefix("s=")?.parse().ok()?;
    let node = words
        .next()
        .and_then(|w| w.strip_prefix("n="))
        .and_then(|n| u32::from_str_radix(n, 16).ok());
    Some(ChatText {
        sent_ns,
        sender,
        node,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn login_prompts() {
        assert_eq!(login_prompt("\r\nUsername: "), Some(Prompt::Username));
        assert_eq!(login_prompt("Password: "), Some(Prompt::Password));
        assert_eq!(
            login_prompt("That username does not exist on this system. Create new account? (y/n) "),
            Some(Prompt::Create)
        );
        assert_eq!(
            login_prompt("Password for new account: "),
            Some(Prompt::NewPassword)
        );
        assert_eq!(
            login_prompt("Repeat password: "),
            Some(Prompt::RepeatPassword)
        );
        assert_eq!(login_prompt("Passw"), None);
        assert_eq!(login_prompt("Username:"), None);
    }

    #[test]
    fn login_lines() {
        assert_eq!(
            login_line("You are logged in. Use /help for help with commands."),
            LoginLine::LoggedIn
        );
        assert_eq!(
            login_line("Your new account has been created. You are logged in."),
            LoginLine::LoggedIn
        );
        assert_eq!(
            login_line("Server busy, try again in a moment."),
            LoginLine::Busy
        );
        assert!(matches!(
            login_line("Incorrect password."),
            LoginLine::Refused(_)
        ));
        assert_eq!(
            login_line("Welcome to ringtalk. Type ^D to exit."),
            LoginLine::Other
        );
    }

    #[test]
    fn prompt_prefixes_are_noise() {
        assert_eq!(strip_prompts("b1 #bc0> ", "b1"), "");
        assert_eq!(
            strip_prompts("b1 #(no channel)> b1 #bc0> bob says, \"x\"", "b1"),
            "bob says, \"x\""
        );
        assert_eq!(strip_prompts("b12 says, \"x\"", "b1"), "b12 says, \"x\"");
        assert_eq!(chat_line("b1 #bc0> ", "b1"), ChatLine::Noise);
    }

    #[test]
    fn chat_lines() {
        assert_eq!(
            chat_line("b1 #bc0> bob says, \"t=5 s=3 \"quoted\" xx\"", "b1"),
            ChatLine::Said {
                sender: "bob",
                text: "t=5 s=3 \"quoted\" xx"
            }
        );
        assert_eq!(
            chat_line("[12 messages dropped]", "b1"),
            ChatLine::Dropped(12)
        );
        assert_eq!(
            chat_line("b1 #bc0> b7 tells you, \"t=5 s=7 xx\"", "b1"),
            ChatLine::Said {
                sender: "b7",
                text: "t=5 s=7 xx"
            }
        );
        assert_eq!(
            chat_line("You tell b7, \"t=5 s=1 xx\"", "b1"),
            ChatLine::Noise
        );
        assert_eq!(
            chat_line("You have joined #bc0", "b1"),
            ChatLine::Joined("bc0")
        );
        assert_eq!(
            chat_line(
                "Channel #bc0 does not exist. Use /create bc0 to make it.",
                "b1"
            ),
            ChatLine::NoSuchChannel
        );
        assert_eq!(chat_line("Channel #bc0 created.", "b1"), ChatLine::Created);
        assert_eq!(chat_line("Channel already exists.", "b1"), ChatLine::Exists);
        assert_eq!(
            chat_line("Request to join channel denied: Channel is full", "b1"),
            ChatLine::Full
        );
        assert_eq!(
            chat_line("  #Lobby (1234)", "b1"),
            ChatLine::ListEntry {
                channel: "Lobby",
                members: 1234
            }
        );
        assert_eq!(chat_line("bob has joined #bc0", "b1"), ChatLine::Noise);
        assert!(matches!(
            chat_line(
                "You are not on a channel. Use /join <channel> or /create <channel>.",
                "b1"
            ),
            ChatLine::Complaint(_)
        ));
    }

    #[test]
    fn cluster_notices() {
        // As src/hub/cluster.rs writes them, after the prompt a terminal shows.
        assert_eq!(
            chat_line(
                "b1 #bc7> [#bc7 moved to another node; lines sent in the last seconds may be lost.]",
                "b1"
            ),
            ChatLine::Cluster(Notice::Moved, "bc7")
        );
        assert_eq!(
            chat_line(
                "[Chat with other nodes in #Lobby is interrupted; lines from them will resume when the link is back.]",
                "b1"
            ),
            ChatLine::Cluster(Notice::Interrupted, "Lobby")
        );
        assert_eq!(
            chat_line("[Chat with other nodes in #bc0 is back.]", "b1"),
            ChatLine::Cluster(Notice::Back, "bc0")
        );
        // Chat text that looks like one is still chat; other bracketed lines are noise.
        assert!(matches!(
            chat_line(
                "bob says, \"[#bc7 moved to another node; lines sent in the last seconds may be lost.]\"",
                "b1"
            ),
            ChatLine::Said { .. }
        ));
        assert_eq!(
            chat_line("[#bc7 moved to another node", "b1"),
            ChatLine::Noise
        );
        assert_eq!(
            chat_line("[5 messages dropped]", "b1"),
            ChatLine::Dropped(5)
        );
    }

    #[test]
    fn defence_lines() {
        assert_eq!(
            refusal("Too many connections from your address."),
            Some(Refusal::Conns)
        );
        assert_eq!(
            refusal(
                "Too many connections from your address are still logging in; try again later."
            ),
            Some(Refusal::Unauth)
        );
        assert_eq!(
            refusal("Too many connections from your address recently; try again later.\r"),
            Some(Refusal::Rate)
        );
        assert_eq!(refusal("Too many connections"), None);
        assert_eq!(
            refusal("Username: Too many connections from your address."),
            Some(Refusal::Conns)
        );
        assert!(matches!(
            login_line("Too many connections from your address."),
            LoginLine::Limited(_)
        ));
        assert!(matches!(
            login_line("Too many failed logins from your address; try again in 20 seconds."),
            LoginLine::Limited(_)
        ));
        assert!(matches!(
            login_line("Too many new accounts from your address; try again later."),
            LoginLine::Limited(_)
        ));
        // The third wrong password is still the old refusal.
        assert!(matches!(
            login_line("Too many incorrect passwords. Goodbye."),
            LoginLine::Refused(_)
        ));
        assert_eq!(
            chat_line(
                "b1 #bc0> You are sending too fast; 9980 lines were dropped.",
                "b1"
            ),
            ChatLine::FloodDropped(9980)
        );
        assert_eq!(
            chat_line("You are sending too fast; 1 line was dropped.", "b1"),
            ChatLine::FloodDropped(1)
        );
        // The per-account slow-down delays the answer; it refuses nothing.
        assert_eq!(
            login_line(
                "Too many failed logins for this account recently; your password will be checked in 4 seconds."
            ),
            LoginLine::Other
        );
    }

    #[test]
    fn defence_lines_are_the_servers() {
        use ringtalk::defences::Refusal as R;
        assert_eq!(defence::TOO_MANY_CONNS, R::TooMany.message());
        assert_eq!(defence::TOO_MANY_UNAUTH, R::TooManyLoggingIn.message());
        assert_eq!(defence::TOO_MANY_RECENT, R::TooFast.message());
    }

    #[test]
    fn paste_text_is_told_apart() {
        let text = paste_text(9_999, 40);
        assert_eq!(text.len(), 40);
        assert!(is_paste_text(&text));
        assert!(!is_paste_text(&chat_text(5, 1, None, 40)));
        assert!(!is_paste_text("paste= x"));
        assert!(!is_paste_text("hello"));
    }

    #[test]
    fn chat_text_round_trip() {
        let text = chat_text(123_456_789_012, 45, None, 40);
        assert_eq!(text.len(), 40);
        assert!(text.starts_with("t=123456789012 s=45 x"));
        let plain = ChatText {
            sent_ns: 123_456_789_012,
            sender: 45,
            node: None,
        };
        assert_eq!(parse_chat_text(&text), Some(plain));
        let text = chat_text(123_456_789_012, 45, Some(0xab), 40);
        assert_eq!(text.len(), 40);
        assert!(text.starts_with("t=123456789012 s=45 n=0000ab x"));
        let tagged = ChatText {
            node: Some(0xab),
            ..plain
        };
        assert_eq!(parse_chat_text(&text), Some(tagged));
        assert_eq!(parse_chat_text("hello there"), None);
        assert_eq!(parse_chat_text("t=1 s=x"), None);
    }

    #[test]
    fn a_cluster_greeting_names_the_node() {
        let a = node_of_greeting("You are on node a.").unwrap();
        let b = node_of_greeting("You are on node b.\r").unwrap();
        assert_ne!(a, b);
        assert!(a <= 0xff_ffff && b <= 0xff_ffff);
        assert_eq!(node_of_greeting("You are on node a."), Some(a));
        assert_eq!(
            node_of_greeting("Welcome to ringtalk. Type ^D to exit."),
            None
        );
    }
}
