//! What a logged-in user's line means: a `/command`, one of the one-character shortcuts, or plain text to
//! say on the current channel.
//!
//! Parsing is separate from doing so that the syntax (wtelnet's, kept so its users' habits and bots still
//! work) is tested without a server, and so every command documents its own form in one table.

/// One line typed by a logged-in user, parsed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Command<'a> {
    /// Nothing but white space: the prompt is shown again.
    Empty,
    /// `/help`: list the commands.
    Help,
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
    /// A known command without the argument it needs; holds the usage line to show.
    Usage(&'static str),
    /// A `/word` that is no command; holds the word as typed, slash included.
    Unknown(&'a str),
}

/// The `/help` text, one command a line.
pub const HELP: &[&str] = &[
    "Commands:",
    "  /list                 list channels and how many are on each",
    "  /create <channel>     create a channel and join it",
    "  /join <channel>       join a channel (leaving the one you are on)",
    "  /who                  show who is on your channel",
    "  /exit                 leave your channel",
    "  /say <text>           say something (or just type it, or start with ')",
    "  /emote <text>         act something out (or start with ;)",
    "  /think <text>         think something",
    "  /sing <text>          sing something",
    "  /help                 this list",
    "  /quit                 log off (or ^D on an empty line)",
];

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
    match word.to_ascii_lowercase().as_str() {
        "/help" => Command::Help,
        "/quit" => Command::Quit,
        "/list" => Command::List,
        "/who" => Command::Who,
        "/exit" => Command::Exit,
        "/create" => name_command(rest, Command::Create, "Usage: /create <channel>"),
        "/join" => name_command(rest, Command::Join, "Usage: /join <channel>"),
        "/say" => text_command(rest, Command::Say, "Usage: /say <text>"),
        "/emote" => text_command(rest, Command::Emote, "Usage: /emote <text>"),
        "/think" => text_command(rest, Command::Think, "Usage: /think <text>"),
        "/sing" => text_command(rest, Command::Sing, "Usage: /sing <text>"),
        _ => Command::Unknown(word),
    }
}

fn text_command<'a>(
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

fn name_command<'a>(
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
        let cases: &[(&str, Command<'_>)] = &[
            ("", Command::Empty),
            ("   ", Command::Empty),
            ("/help", Command::Help),
            ("/HELP", Command::Help),
            ("/quit", Command::Quit),
            ("/list", Command::List),
            ("/who", Command::Who),
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
            ("/x", Command::Unknown("/x")),
            ("/x y", Command::Unknown("/x")),
            ("/", Command::Unknown("/")),
        ];
        for (line, want) in cases {
            assert_eq!(parse(line), *want, "line {line:?}");
        }
    }
}
