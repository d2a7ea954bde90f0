//! MSSP, the MUD Server Status Protocol: what MUD clients and crawlers read about a server
//! (its name, how many are online, since when, on which ports) before or without logging in.
//!
//! Two ways in, one table. A client that answers our `IAC WILL MSSP` (telnet option 70) with `DO`
//! gets `IAC SB MSSP (MSSP_VAR key (MSSP_VAL value)+)* IAC SE`; a crawler that speaks no telnet
//! types `MSSP-REQUEST` at the `Username:` prompt and gets the same table as text lines between
//! `MSSP-REPLY-START` and `MSSP-REPLY-END`, then is disconnected. Mudlet offers its user a secure
//! reconnect when the table names a TLS port (`TLS`, also sent as the older `SSL`).
//!
//! The table is built once per configuration (and again on reload: `--mssp KEY=VALUE` adds or
//! replaces keys, so an operator names the server, its host and contact); only `PLAYERS` is filled
//! in when a client asks. Keys and values are checked when given: printable, and never one of the
//! bytes that frame the table (0, 1, 2, 255).

use std::fmt;
use std::str::FromStr;

use crate::telnet::cmd::{IAC, SB, SE};
use crate::telnet::opt;

/// Marks a key in the telnet form.
const MSSP_VAR: u8 = 1;
/// Marks a value in the telnet form.
const MSSP_VAL: u8 = 2;

/// What a crawler types at the `Username:` prompt to get the table as text.
pub const TEXT_REQUEST: &str = "MSSP-REQUEST";

/// Most `--mssp` entries.
pub const MAX_ENTRIES: usize = 64;
/// Longest key of an `--mssp` entry.
pub const MAX_KEY: usize = 32;
/// Longest value of an `--mssp` entry.
pub const MAX_VALUE: usize = 256;

/// One `--mssp KEY=VALUE`: a key (upper-cased) and its value, both checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    key: String,
    value: String,
}

impl FromStr for Entry {
    type Err = String;

    fn from_str(s: &str) -> Result<Entry, String> {
        let (key, value) = s
            .split_once('=')
            .ok_or_else(|| "expected KEY=VALUE, e.g. HOSTNAME=chat.example.org".to_string())?;
        let key = key.trim().to_ascii_uppercase();
        let value = value.trim().to_string();
        if key.is_empty() || key.len() > MAX_KEY {
            return Err(format!("a key is 1 to {MAX_KEY} bytes"));
        }
        if value.len() > MAX_VALUE {
            return Err(format!("a value is at most {MAX_VALUE} bytes"));
        }
        if key.chars().chain(value.chars()).any(char::is_control) {
            return Err("keys and values are printable text".to_string());
        }
        Ok(Entry { key, value })
    }
}

impl Entry {
    /// The key, upper-cased.
    pub fn key(&self) -> &str {
        &self.key
    }
}

impl fmt::Display for Entry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}={}", self.key, self.value)
    }
}

/// Where this server listens and since when: the facts of the table that are not settings.
#[derive(Clone, Debug, Default)]
pub struct Facts {
    /// Plain telnet ports.
    pub ports: Vec<u16>,
    /// TLS ports.
    pub tls_ports: Vec<u16>,
    /// When the server started, in seconds since the Unix epoch.
    pub started: u64,
}

/// The table sent to whoever asks, but for `PLAYERS`.
#[derive(Clone, Debug)]
pub struct Table {
    entries: Vec<(String, Vec<String>)>,
}

impl Table {
    /// The table of a server with `facts`, with `extra` (from `--mssp`) added over the defaults.
    pub fn new(facts: &Facts, extra: &[Entry]) -> Table {
        let mut entries: Vec<(String, Vec<String>)> = Vec::new();
        let mut put = |key: &str, values: Vec<String>| {
            entries.retain(|(k, _)| k != key);
            entries.push((key.to_string(), values));
        };
        let one = |v: &str| vec![v.to_string()];
        put("NAME", one("ringtalk"));
        put("UPTIME", vec![facts.started.to_string()]);
        put(
            "CODEBASE",
            one(concat!("ringtalk ", env!("CARGO_PKG_VERSION"))),
        );
        if !facts.ports.is_empty() {
            put(
                "PORT",
                facts.ports.iter().map(u16::to_string).collect::<Vec<_>>(),
            );
        }
        if !facts.tls_ports.is_empty() {
            let tls: Vec<String> = facts.tls_ports.iter().map(u16::to_string).collect();
            put("TLS", tls.clone());
            put("SSL", tls);
        }
        for (key, value) in [
            ("FAMILY", "Custom"),
            ("GENRE", "None"),
            ("SUBGENRE", "None"),
            ("GAMEPLAY", "Social"),
            ("GAMESYSTEM", "None"),
            ("STATUS", "Live"),
            ("CRAWL DELAY", "-1"),
            ("ANSI", "1"),
            ("UTF-8", "1"),
            ("VT100", "1"),
            ("XTERM 256 COLORS", "0"),
            ("MCCP", "0"),
            ("MCP", "0"),
            ("MSDP", "0"),
            ("GMCP", "0"),
            ("MSP", "0"),
            ("MXP", "0"),
            ("PUEBLO", "0"),
            ("PAY TO PLAY", "0"),
            ("PAY FOR PERKS", "0"),
            ("HIRING BUILDERS", "0"),
            ("HIRING CODERS", "0"),
            ("NEWBIE FRIENDLY", "1"),
        ] {
            put(key, one(value));
        }
        // The operator's word wins, even on a fact (a port forwarded from 23 to 5555 is 23 to
        // the world).
        for entry in extra {
            put(&entry.key, one(&entry.value));
        }
        Table { entries }
    }

    /// The telnet form: `IAC SB MSSP (MSSP_VAR key (MSSP_VAL value)+)* IAC SE`.
    pub fn write_telnet(&self, players: u64, out: &mut Vec<u8>) {
        out.extend_from_slice(&[IAC, SB, opt::MSSP]);
        let var = |key: &str, values: &mut dyn Iterator<Item = &str>, out: &mut Vec<u8>| {
            out.push(MSSP_VAR);
            push_clean(key, out);
            for value in values {
                out.push(MSSP_VAL);
                push_clean(value, out);
            }
        };
        var(
            "PLAYERS",
            &mut std::iter::once(players.to_string().as_str()),
            out,
        );
        for (key, values) in &self.entries {
            var(key, &mut values.iter().map(String::as_str), out);
        }
        out.extend_from_slice(&[IAC, SE]);
    }

    /// The text form, for a crawler that typed [`TEXT_REQUEST`]: one `KEY\tVALUE` line per value.
    pub fn write_text(&self, players: u64, out: &mut Vec<u8>) {
        out.extend_from_slice(b"\r\nMSSP-REPLY-START\r\n");
        let line = |key: &str, value: &str, out: &mut Vec<u8>| {
            push_clean(key, out);
            out.push(b'\t');
            push_clean(value, out);
            out.extend_from_slice(b"\r\n");
        };
        line("PLAYERS", &players.to_string(), out);
        for (key, values) in &self.entries {
            for value in values {
                line(key, value, out);
            }
        }
        out.extend_from_slice(b"MSSP-REPLY-END\r\n");
    }
}

/// `text` without the bytes that would break either form's framing (entries are checked when
/// given; this keeps a fact that was not from breaking the table).
fn push_clean(text: &str, out: &mut Vec<u8>) {
    out.extend(
        text.bytes()
            .filter(|&b| !matches!(b, 0 | MSSP_VAR | MSSP_VAL | b'\t' | b'\r' | b'\n' | IAC)),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts() -> Facts {
        Facts {
            ports: vec![5555, 5556],
            tls_ports: vec![5443],
            started: 1_700_000_000,
        }
    }

    /// The telnet form read back: each key with its values, in order.
    fn parse(bytes: &[u8]) -> Vec<(String, Vec<String>)> {
        let body = bytes
            .strip_prefix(&[IAC, SB, opt::MSSP])
            .and_then(|b| b.strip_suffix(&[IAC, SE]))
            .expect("framed by IAC SB MSSP ... IAC SE");
        assert!(!body.contains(&IAC));
        let mut table: Vec<(String, Vec<String>)> = Vec::new();
        let mut parts = body
            .split_inclusive(|&b| b == MSSP_VAR || b == MSSP_VAL)
            .peekable();
        assert_eq!(parts.next(), Some(&[MSSP_VAR][..]));
        let mut marker = MSSP_VAR;
        for part in parts {
            let (text, next) = match part.last() {
                Some(&m) if m == MSSP_VAR || m == MSSP_VAL => (&part[..part.len() - 1], m),
                _ => (part, 0),
            };
            let text = String::from_utf8(text.to_vec()).unwrap();
            if marker == MSSP_VAR {
                table.push((text, Vec::new()));
            } else {
                table.last_mut().unwrap().1.push(text);
            }
            marker = next;
        }
        table
    }

    #[test]
    fn the_table_names_the_server_its_players_uptime_and_ports() {
        let table = Table::new(&facts(), &[]);
        let mut out = Vec::new();
        table.write_telnet(42, &mut out);
        let parsed = parse(&out);
        let get = |key: &str| {
            parsed
                .iter()
                .find(|(k, _)| k == key)
                .unwrap_or_else(|| panic!("{key} missing: {parsed:?}"))
                .1
                .clone()
        };
        assert_eq!(parsed[0].0, "PLAYERS");
        assert_eq!(get("PLAYERS"), ["42"]);
        assert_eq!(get("NAME"), ["ringtalk"]);
        assert_eq!(get("UPTIME"), ["1700000000"]);
        assert_eq!(get("PORT"), ["5555", "5556"]);
        assert_eq!(get("TLS"), ["5443"]);
        assert_eq!(get("SSL"), ["5443"]);
        assert!(get("CODEBASE")[0].starts_with("ringtalk "));
        assert_eq!(get("UTF-8"), ["1"]);
        assert!(parsed.iter().all(|(_, v)| !v.is_empty()));
        let no_tls = Table::new(
            &Facts {
                tls_ports: vec![],
                ..facts()
            },
            &[],
        );
        let mut out = Vec::new();
        no_tls.write_telnet(0, &mut out);
        assert!(!parse(&out).iter().any(|(k, _)| k == "TLS" || k == "SSL"));
    }

    #[test]
    fn operator_entries_replace_defaults_and_add_keys() {
        let extra: Vec<Entry> = ["name=Our Chat", "HOSTNAME=chat.example.org", "PORT=23"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        let table = Table::new(&facts(), &extra);
        let mut out = Vec::new();
        table.write_telnet(1, &mut out);
        let parsed = parse(&out);
        let names: Vec<_> = parsed.iter().filter(|(k, _)| k == "NAME").collect();
        assert_eq!(names.len(), 1, "one NAME: {parsed:?}");
        assert_eq!(names[0].1, ["Our Chat"]);
        assert!(parsed.contains(&("HOSTNAME".into(), vec!["chat.example.org".into()])));
        assert!(parsed.contains(&("PORT".into(), vec!["23".into()])));
    }

    #[test]
    fn entries_are_checked() {
        for bad in [
            "NOEQUALS",
            "=value",
            "KEY=a\u{1}b",
            "KEY=tab\there",
            "KEY=\u{ff}\u{1b}[2J",
        ] {
            assert!(bad.parse::<Entry>().is_err(), "{bad:?} taken");
        }
        assert!(format!("{}=x", "K".repeat(MAX_KEY + 1))
            .parse::<Entry>()
            .is_err());
        assert!(format!("K={}", "v".repeat(MAX_VALUE + 1))
            .parse::<Entry>()
            .is_err());
        let e: Entry = " contact = admin@example.org ".parse().unwrap();
        assert_eq!(e.to_string(), "CONTACT=admin@example.org");
        // A value may hold ÿ (U+00FF): UTF-8 never has byte 255 in it.
        let e: Entry = "NAME=Café ÿ".parse().unwrap();
        let mut out = Vec::new();
        Table::new(&facts(), &[e]).write_telnet(0, &mut out);
        assert!(parse(&out).contains(&("NAME".into(), vec!["Café ÿ".into()])));
    }

    #[test]
    fn the_text_form_has_one_line_per_value_between_the_markers() {
        let mut out = Vec::new();
        Table::new(&facts(), &[]).write_text(7, &mut out);
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.split("\r\n").collect();
        let start = lines.iter().position(|l| *l == "MSSP-REPLY-START").unwrap();
        let end = lines.iter().position(|l| *l == "MSSP-REPLY-END").unwrap();
        let body = &lines[start + 1..end];
        assert_eq!(body[0], "PLAYERS\t7");
        assert!(body.contains(&"PORT\t5555") && body.contains(&"PORT\t5556"));
        assert!(body.iter().all(|l| l.split('\t').count() == 2), "{body:?}");
    }
}
