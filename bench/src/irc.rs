//! The little of IRC (RFC 1459/2812) the bench speaks: registration, JOIN, PRIVMSG, PING/PONG, LIST.
//!
//! `[:prefix] COMMAND params... [:trailing]`, parsed without copying. IRC servers do not send a user's
//! own PRIVMSG back to it, so IRC deliveries are counted from others only.

/// One parsed IRC line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message<'a> {
    /// The source without its `:`, e.g. `bob!bob@127.0.0.2` or `irc.example.net`.
    pub prefix: Option<&'a str>,
    /// The command or three-digit numeric.
    pub command: &'a str,
    /// Middle parameters and, last, the trailing one (without its `:`).
    pub params: Vec<&'a str>,
}

impl<'a> Message<'a> {
    /// The nick part of the prefix (`bob` of `bob!bob@host`).
    pub fn nick(&self) -> Option<&'a str> {
        self.prefix.map(|p| p.split('!').next().unwrap_or(p))
    }
}

/// Parses one line (no CR LF); `None` for an empty line.
pub fn parse(line: &str) -> Option<Message<'_>> {
    let mut rest = line.trim_start_matches(' ');
    // IRCv3 message tags are not asked for, but skip them if a server sends some.
    if rest.starts_with('@') {
        rest = rest.split_once(' ')?.1.trim_start_matches(' ');
    }
    let prefix = if let Some(p) = rest.strip_prefix(':') {
        let (prefix, after) = p.split_once(' ')?;
        rest = after.trim_start_matches(' ');
        Some(prefix)
    } else {
        None
    };
    let (command, mut rest) = match rest.split_once(' ') {
        Some((c, r)) => (c, r),
        None => (rest, ""),
    };
    if command.is_empty() {
        return None;
    }
    let mut params = Vec::new();
    loop {
        rest = rest.trim_start_matches(' ');
        if rest.is_empty() {
            break;
        }
        if let Some(trailing) = rest.strip_prefix(':') {
            params.push(trailing);
            break;
        }
        match rest.split_once(' ') {
            Some((p, r)) => {
                params.push(p);
                rest = r;
            }
            None => {
                params.push(rest);
                break;
            }
        }
    }
    Some(Message {
        prefix,
        command,
        params,
    })
}

/// Numerics after which the bench cannot go on with this connection as planned.
pub fn is_fatal_numeric(command: &str) -> bool {
    matches!(
        command,
        "403" // no such channel
            | "405" // joined too many channels
            | "431" | "432" // no / erroneous nickname
            | "461" // need more params
            | "464" // password mismatch
            | "465" // banned
            | "473" | "474" | "475" // invite only, banned, bad key
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn privmsg_with_prefix_and_trailing() {
        let m = parse(":bob!bob@127.0.0.2 PRIVMSG #bc0 :t=1 s=2 xx").unwrap();
        assert_eq!(m.prefix, Some("bob!bob@127.0.0.2"));
        assert_eq!(m.nick(), Some("bob"));
        assert_eq!(m.command, "PRIVMSG");
        assert_eq!(m.params, vec!["#bc0", "t=1 s=2 xx"]);
    }

    #[test]
    fn ping_without_prefix() {
        let m = parse("PING :irc.example.net").unwrap();
        assert_eq!(m.prefix, None);
        assert_eq!(m.command, "PING");
        assert_eq!(m.params, vec!["irc.example.net"]);
        let m = parse("PING token").unwrap();
        assert_eq!(m.params, vec!["token"]);
    }

    #[test]
    fn numerics_and_list() {
        let m = parse(":irc.local 001 b5 :Welcome to the network b5").unwrap();
        assert_eq!(m.command, "001");
        assert_eq!(m.params[0], "b5");
        let m = parse(":irc.local 322 probe #bc3 6 :[+nt] ").unwrap();
        assert_eq!(m.params, vec!["probe", "#bc3", "6", "[+nt] "]);
        let m = parse(":irc.local 323 probe :End of channel list.").unwrap();
        assert_eq!(m.command, "323");
    }

    #[test]
    fn join_echo_and_tags() {
        let m = parse(":b5!b5@h JOIN :#bc0").unwrap();
        assert_eq!((m.command, m.params[0]), ("JOIN", "#bc0"));
        let m = parse("@time=2024 :b5!b5@h JOIN #bc0").unwrap();
        assert_eq!(m.nick(), Some("b5"));
        assert_eq!(m.params, vec!["#bc0"]);
        assert_eq!(parse(""), None);
        assert_eq!(parse("ERROR").unwrap().command, "ERROR");
    }
}
