//! Telnet as a bench client speaks it: take the text out of the stream, and answer the server's
//! option negotiation the way the client being modelled would.
//!
//! Three profiles, because the server treats them differently and each costs it something else:
//! - [`Profile::Terminal`] (the default) is inetutils telnet or PuTTY: it answers `WILL ECHO` and
//!   `WILL SGA` with `DO`, so the server runs character mode (it echoes every byte typed and redraws
//!   the prompt around every line it prints), and names itself `XTERM-256COLOR`, 80x24.
//! - [`Profile::Mud`] is Mudlet: the same answers, but named `MUDLET`, so the server gives it line
//!   mode with IAC GA after prompts.
//! - [`Profile::Raw`] is a script or `nc`: it answers nothing and the server stays in line mode.
//!
//! Sans-IO, in libtelnet's shape: bytes in, data bytes and answers out, one `match` over a small
//! state enum; a sequence cut between two reads resumes where it stopped. Each option is answered
//! once per state change (RFC 1143's point: never answer an answer), which for a client that agrees
//! or refuses at once comes down to remembering what it last said.

use serde::{Deserialize, Serialize};

use ringtalk::telnet::cmd::{DO, DONT, IAC, SB, SE, WILL, WONT};
use ringtalk::telnet::opt::{ECHO, NAWS, SGA, TTYPE};

/// TTYPE subnegotiation: IS (client to server) and SEND (server to client).
const TTYPE_IS: u8 = 0;
const TTYPE_SEND: u8 = 1;

/// Longest subnegotiation kept for answering (a TTYPE SEND is two bytes).
const MAX_SB: usize = 64;

/// The client a bench connection behaves like.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Profile {
    /// A plain terminal (inetutils telnet, PuTTY): character mode, server echo and redraws.
    #[default]
    Terminal,
    /// A MUD client (Mudlet): line mode with IAC GA.
    Mud,
    /// A script that never negotiates: line mode, no echo.
    Raw,
}

impl Profile {
    pub fn name(self) -> &'static str {
        match self {
            Profile::Terminal => "terminal",
            Profile::Mud => "mud",
            Profile::Raw => "raw",
        }
    }

    /// Whether this client lets the server perform `opt` (answers its WILL with DO).
    fn lets_server(self, opt: u8) -> bool {
        self != Profile::Raw && matches!(opt, ECHO | SGA)
    }

    /// Whether this client performs `opt` when asked (answers DO with WILL).
    fn performs(self, opt: u8) -> bool {
        self != Profile::Raw && matches!(opt, TTYPE | NAWS)
    }

    fn terminal_type(self) -> &'static [u8] {
        match self {
            Profile::Mud => b"MUDLET",
            _ => b"XTERM-256COLOR",
        }
    }
}

/// Where the decoder is inside a telnet sequence.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum State {
    /// Plain text.
    #[default]
    Data,
    /// Just read IAC.
    Iac,
    /// Read IAC and this verb (WILL/WONT/DO/DONT); the option byte comes next.
    Verb(u8),
    /// Inside IAC SB ... (the option and its parameters).
    Sb,
    /// Read IAC inside a subnegotiation: SE ends it, IAC is an escaped 0xFF parameter byte.
    SbIac,
}

/// A client's side of telnet: strips commands from the text and answers negotiation.
#[derive(Debug)]
pub struct TelnetClient {
    profile: Profile,
    state: State,
    /// What we last told the server about each option: Some(true) = DO/WILL, Some(false) = DONT/WONT,
    /// for the server's options (index 0) and ours (index 1).
    said: [[Option<bool>; 256]; 2],
    sb: Vec<u8>,
}

impl TelnetClient {
    /// A client at the start of a stream.
    pub fn new(profile: Profile) -> TelnetClient {
        TelnetClient {
            profile,
            state: State::Data,
            said: [[None; 256]; 2],
            sb: Vec::new(),
        }
    }

    /// Appends the data bytes of `input` to `text` (IAC IAC becomes one 0xFF) and this client's
    /// answers to `replies`; every other command (GA, NOP, ...) is dropped.
    pub fn feed(&mut self, input: &[u8], text: &mut Vec<u8>, replies: &mut Vec<u8>) {
        let mut input = input;
        while !input.is_empty() {
            // Plain text, the bulk of every read, is copied in one go up to the next IAC.
            if self.state == State::Data {
                let run = input.iter().position(|&b| b == IAC).unwrap_or(input.len());
                text.extend_from_slice(&input[..run]);
                input = &input[run..];
                let Some((&iac, rest)) = input.split_first() else {
                    break;
                };
                debug_assert_eq!(iac, IAC);
                self.state = State::Iac;
                input = rest;
                continue;
            }
            let (&b, rest) = input.split_first().expect("not empty");
            input = rest;
            self.step(b, text, replies);
        }
    }

    /// One byte of a telnet command (or, in [`State::Data`], of text).
    fn step(&mut self, b: u8, text: &mut Vec<u8>, replies: &mut Vec<u8>) {
        self.state = match (self.state, b) {
            (State::Data, IAC) => State::Iac,
            (State::Data, _) => {
                text.push(b);
                State::Data
            }
            (State::Iac, IAC) => {
                text.push(IAC);
                State::Data
            }
            (State::Iac, WILL | WONT | DO | DONT) => State::Verb(b),
            (State::Iac, SB) => {
                self.sb.clear();
                State::Sb
            }
            // GA, NOP, AYT, EOR, ...: two-byte commands.
            (State::Iac, _) => State::Data,
            (State::Verb(verb), opt) => {
                self.answer(verb, opt, replies);
                State::Data
            }
            (State::Sb, IAC) => State::SbIac,
            (State::Sb, _) => {
                if self.sb.len() < MAX_SB {
                    self.sb.push(b);
                }
                State::Sb
            }
            (State::SbIac, SE) => {
                self.subnegotiation(replies);
                State::Data
            }
            (State::SbIac, _) => {
                if self.sb.len() < MAX_SB {
                    self.sb.push(b);
                }
                State::Sb
            }
        };
    }

    fn answer(&mut self, verb: u8, opt: u8, replies: &mut Vec<u8>) {
        if self.profile == Profile::Raw {
            return; // A script answers nothing; the server waits for no one and stays in line mode.
        }
        // The server offers (WILL/WONT) an option it would perform, or asks (DO/DONT) us to.
        let (side, agree, yes, no) = match verb {
            WILL => (0, self.profile.lets_server(opt), DO, DONT),
            WONT => (0, false, DO, DONT),
            DO => (1, self.profile.performs(opt), WILL, WONT),
            _ => (1, false, WILL, WONT),
        };
        let said = &mut self.said[side][usize::from(opt)];
        if *said == Some(agree) {
            return; // Already said so: an answer is never answered.
        }
        *said = Some(agree);
        replies.extend_from_slice(&[IAC, if agree { yes } else { no }, opt]);
        if agree && side == 1 && opt == NAWS {
            // 80 columns, 24 rows, like a terminal window left at its default size.
            replies.extend_from_slice(&[IAC, SB, NAWS, 0, 80, 0, 24, IAC, SE]);
        }
    }

    fn subnegotiation(&mut self, replies: &mut Vec<u8>) {
        if self.sb == [TTYPE, TTYPE_SEND] && self.said[1][usize::from(TTYPE)] == Some(true) {
            replies.extend_from_slice(&[IAC, SB, TTYPE, TTYPE_IS]);
            replies.extend_from_slice(self.profile.terminal_type());
            replies.extend_from_slice(&[IAC, SE]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(profile: Profile, chunks: &[&[u8]]) -> (Vec<u8>, Vec<u8>) {
        let mut client = TelnetClient::new(profile);
        let (mut text, mut replies) = (Vec::new(), Vec::new());
        for chunk in chunks {
            client.feed(chunk, &mut text, &mut replies);
        }
        (text, replies)
    }

    const GREETING: &[u8] =
        b"\xff\xfb\x01\xff\xfb\x03\xff\xfd\x18\xff\xfd\x1fWelcome\r\n\r\nUsername: ";

    #[test]
    fn a_raw_client_answers_nothing_and_keeps_the_text() {
        let (text, replies) = run(Profile::Raw, &[GREETING, b"\xff\xfa\x18\x01\xff\xf0"]);
        assert_eq!(text, b"Welcome\r\n\r\nUsername: ");
        assert!(replies.is_empty());
    }

    #[test]
    fn a_terminal_refuses_what_it_does_not_do() {
        // LINEMODE offered by the server, TSPEED asked of us.
        let (_, replies) = run(Profile::Terminal, &[b"\xff\xfb\x22\xff\xfd\x20"]);
        assert_eq!(replies, b"\xff\xfe\x22\xff\xfc\x20");
    }

    #[test]
    fn a_terminal_takes_echo_and_sga_and_names_itself() {
        let (text, replies) = run(Profile::Terminal, &[GREETING, b"\xff\xfa\x18\x01\xff\xf0"]);
        assert_eq!(text, b"Welcome\r\n\r\nUsername: ");
        let mut expected = b"\xff\xfd\x01\xff\xfd\x03\xff\xfb\x18\xff\xfb\x1f".to_vec();
        expected.extend_from_slice(b"\xff\xfa\x1f\x00\x50\x00\x18\xff\xf0");
        expected.extend_from_slice(b"\xff\xfa\x18\x00XTERM-256COLOR\xff\xf0");
        assert_eq!(replies, expected);
    }

    #[test]
    fn a_mud_client_names_itself_mudlet() {
        let (_, replies) = run(Profile::Mud, &[b"\xff\xfd\x18\xff\xfa\x18\x01\xff\xf0"]);
        assert!(replies.ends_with(b"\xff\xfa\x18\x00MUDLET\xff\xf0"));
    }

    #[test]
    fn an_option_is_answered_once_per_change() {
        // WILL ECHO twice, then WONT ECHO (a password prompt's end), then WILL again.
        let (_, replies) = run(
            Profile::Terminal,
            &[b"\xff\xfb\x01\xff\xfb\x01\xff\xfc\x01\xff\xfb\x01"],
        );
        assert_eq!(replies, b"\xff\xfd\x01\xff\xfe\x01\xff\xfd\x01");
    }

    #[test]
    fn doubled_iac_is_one_data_byte() {
        assert_eq!(run(Profile::Raw, &[b"a\xff\xffb"]).0, b"a\xffb");
    }

    #[test]
    fn go_ahead_is_dropped() {
        assert_eq!(
            run(Profile::Raw, &[b"name #lobby> \xff\xf9"]).0,
            b"name #lobby> "
        );
    }

    #[test]
    fn sequences_cut_between_reads_resume() {
        let (text, _) = run(
            Profile::Raw,
            &[
                b"a\xff",
                b"\xfb",
                b"\x01b\xff",
                b"\xfa\x18",
                b"\xff",
                b"\xf0c",
            ],
        );
        assert_eq!(text, b"abc");
        assert_eq!(run(Profile::Raw, &[b"a\xff", b"\xffb"]).0, b"a\xffb");
    }
}
