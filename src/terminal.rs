//! A user's terminal as the session sees it: the telnet codec underneath, the line editor on top, and
//! the choice between character mode and line mode that decides how the two meet the screen.
//!
//! Plain terminals (inetutils telnet, PuTTY, anything not known as a MUD client) get character mode: we
//! say WILL ECHO and WILL SGA, the client sends each key as it is typed, and the server echoes and edits
//! the line; that is what lets a chat line arriving mid-typing be printed *above* the half-typed input
//! instead of through it. MUD clients keep an input line of their own, and a server that keeps ECHO on
//! hides what their users type (GoMud #633, Mudlet #620), so once TTYPE names one of them we give ECHO
//! back, send IAC GA after each prompt, and only say WILL ECHO again around the password prompt. A
//! client that never answers our negotiation (a script, `nc`) is in line mode too: nothing is echoed and
//! no escape sequences are sent to it.
//!
//! Login never waits for negotiation: bytes that arrive before the client has answered are decoded and
//! kept, in order, with the options as they stand when each byte is reached.
//!
//! No I/O here: bytes in through [`Terminal::feed`], wire bytes out into the caller's buffer.

use std::collections::VecDeque;

use crate::line::{EditResult, FinishedLine, LineEditor, Mode};
use crate::telnet::{self, cmd, opt, Event, Telnet};

/// Terminal types (TTYPE, upper-cased) whose clients keep their own input line. A name counts when it
/// starts with one of these, so versions (`MUDLET 4.17`) match too.
const MUD_CLIENTS: &[&str] = &[
    "MUDLET",
    "TINTIN",
    "MUSHCLIENT",
    "BLIGHTMUD",
    "CMUD",
    "ZMUD",
    "TINYFUGUE",
    "KBTIN",
    "AXMUD",
    "POWWOW",
    "GGMUD",
];

/// How many times we ask for the terminal type: MTTS clients answer with their name, then their
/// terminal, then `MTTS <bits>`, and repeat the last answer when there is no more.
const MAX_TTYPE_REQUESTS: u8 = 3;

/// What the user typed, once it is something the session acts on.
#[derive(Debug)]
pub enum Input {
    /// A finished line.
    Line(FinishedLine),
    /// ^D on an empty line: the user wants to leave.
    EndOfInput,
}

/// True when a TTYPE name belongs to a MUD client.
pub fn is_mud_client(terminal_type: &str) -> bool {
    let upper = terminal_type.trim().to_ascii_uppercase();
    MUD_CLIENTS.iter().any(|name| upper.starts_with(name))
}

/// One connection's terminal state.
#[derive(Debug, Default)]
pub struct Terminal {
    telnet: Telnet,
    editor: LineEditor,
    /// Decoded events not yet applied: input that arrived while the session was busy with a line.
    pending: VecDeque<Event>,
    /// The prompt last shown, kept for redrawing: allocated to its length, and again only when it
    /// changes (a `String` reused across the login's prompts kept room for the longest, about 70
    /// bytes an idle user).
    prompt: Box<str>,
    /// True while the prompt (and any half-typed input) is on the user's screen (character mode).
    prompt_shown: bool,
    /// True when the last thing written ended mid-row (a prompt without IAC GA): the next line must
    /// start with a line break so it does not run on after the prompt.
    mid_line: bool,
    /// The client said it is a MUD client.
    mud: bool,
    /// Window width from NAWS; 0 when unknown.
    width: u16,
    ttype_requests: u8,
    /// Hash of the last TTYPE answer, to see when an MTTS client starts repeating itself.
    last_ttype: u64,
    /// We said WILL ECHO for a password prompt and must say WONT ECHO after it.
    echo_for_password: bool,
    /// Where the MSSP table stands: owed once the client agrees, sent once per connection.
    mssp: Mssp,
}

/// The MSSP table's progress on one connection: a client that turns the option off and on again
/// gets no second table (each would cost the server a table's building and sending).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum Mssp {
    /// Not asked for yet.
    #[default]
    NotAsked,
    /// The client agreed: the session owes it the table.
    Owed,
    /// Sent.
    Sent,
}

impl Terminal {
    /// A terminal before any negotiation.
    pub fn new() -> Terminal {
        Terminal::default()
    }

    /// The opening negotiation: offer to echo and to suppress go-ahead (character mode), ask for
    /// the terminal type and window size, and offer MSSP.
    pub fn start(&mut self, out: &mut Vec<u8>) {
        self.telnet.request_local(opt::ECHO, true, out);
        self.telnet.request_local(opt::SGA, true, out);
        self.telnet.request_remote(opt::TTYPE, true, out);
        self.telnet.request_remote(opt::NAWS, true, out);
        self.telnet.request_local(opt::MSSP, true, out);
    }

    /// Whether the session owes the client the MSSP table (it agreed to the option), once per
    /// connection: true once, then false for good.
    pub fn take_mssp_request(&mut self) -> bool {
        if self.mssp == Mssp::Owed {
            self.mssp = Mssp::Sent;
            return true;
        }
        false
    }

    /// How input is edited and output drawn right now.
    pub fn mode(&self) -> Mode {
        if !self.mud && self.telnet.is_local_enabled(opt::ECHO) {
            Mode::Character
        } else {
            Mode::Line
        }
    }

    /// Whether the client named itself as a MUD client.
    pub fn is_mud(&self) -> bool {
        self.mud
    }

    /// Decodes bytes from the socket. Negotiation replies go to `out` at once; everything else waits
    /// for [`Terminal::next_input`].
    pub fn feed(&mut self, bytes: &[u8], out: &mut Vec<u8>) {
        // At most one event per byte: one allocation, not one per doubling (this runs for every read).
        let mut events = Vec::with_capacity(bytes.len());
        self.telnet.receive(bytes, &mut events, out);
        if self.pending.is_empty() {
            // The usual case: the queue takes over the events' allocation as it is.
            self.pending = events.into();
        } else {
            self.pending.extend(events);
        }
    }

    /// Applies decoded input until a line is finished or ^D is typed; echo and negotiation go to `out`.
    /// `None` when all input so far has been used.
    pub fn next_input(&mut self, out: &mut Vec<u8>) -> Option<Input> {
        let mut found = None;
        while let Some(event) = self.pending.pop_front() {
            if let Some(input) = self.apply(event, out) {
                found = Some(input);
                break;
            }
        }
        if self.pending.is_empty() && self.pending.capacity() > 0 {
            // An idle connection keeps no event queue.
            self.pending = VecDeque::new();
        }
        if found.is_some() {
            // The user pressed Enter: we echoed it in character mode, their client did in line mode,
            // so their cursor is at the start of a row. (A client that sends several lines at once
            // without reading, like a script, may see a reply run on after a prompt it never showed.)
            self.mid_line = false;
            self.prompt_shown = false;
        }
        found
    }

    fn apply(&mut self, event: Event, out: &mut Vec<u8>) -> Option<Input> {
        let mode = self.mode();
        match event {
            Event::Data(byte) => self.edit(byte, out),
            Event::EndOfLine => match self.editor.end_of_line(mode, out) {
                EditResult::Finished(line) => Some(Input::Line(line)),
                EditResult::EndOfInput => Some(Input::EndOfInput),
                EditResult::Nothing => None,
            },
            // Line-mode clients may send the editing functions as commands.
            Event::Command(cmd::EC) => self.edit(0x08, out),
            Event::Command(cmd::EL) => self.edit(0x15, out),
            Event::Command(cmd::AYT) => {
                self.print(&["[ringtalk is here]"], out);
                None
            }
            Event::Command(_) => None,
            Event::RemoteEnabled(opt::TTYPE) => {
                self.ask_ttype(out);
                None
            }
            Event::LocalEnabled(opt::MSSP) => {
                if self.mssp == Mssp::NotAsked {
                    self.mssp = Mssp::Owed;
                }
                None
            }
            Event::WindowSize { width, .. } => {
                self.width = width;
                None
            }
            Event::TerminalType(name) => {
                self.on_terminal_type(&name, out);
                None
            }
            Event::LocalEnabled(_)
            | Event::LocalDisabled(_)
            | Event::RemoteEnabled(_)
            | Event::RemoteDisabled(_)
            | Event::IgnoredSubnegotiation { .. } => None,
        }
    }

    fn edit(&mut self, byte: u8, out: &mut Vec<u8>) -> Option<Input> {
        match self.editor.input(self.mode(), byte, out) {
            EditResult::Nothing => None,
            EditResult::EndOfInput => Some(Input::EndOfInput),
            EditResult::Finished(line) => Some(Input::Line(line)),
        }
    }

    fn ask_ttype(&mut self, out: &mut Vec<u8>) {
        if self.ttype_requests < MAX_TTYPE_REQUESTS {
            self.ttype_requests += 1;
            telnet::send_ttype_request(out);
        }
    }

    fn on_terminal_type(&mut self, name: &str, out: &mut Vec<u8>) {
        if !self.mud && is_mud_client(name) {
            self.mud = true;
            if self.editor.is_hidden() {
                // Mid-password: keep the client's echo off until the password is in.
                self.echo_for_password = self.telnet.is_local_enabled(opt::ECHO);
            } else {
                self.telnet.request_local(opt::ECHO, false, out);
            }
        }
        let hash = fnv1a(name.as_bytes());
        if hash != self.last_ttype {
            self.last_ttype = hash;
            self.ask_ttype(out);
        }
    }

    /// Hides typed input (password prompts) or shows it again. In line mode the client does the
    /// echoing, so we say WILL ECHO to stop it and WONT ECHO afterwards.
    pub fn set_hidden(&mut self, hidden: bool, out: &mut Vec<u8>) {
        self.editor.set_hidden(hidden);
        if hidden {
            if self.mode() == Mode::Line && !self.telnet.is_local_enabled(opt::ECHO) {
                // MUD clients often never acknowledge our earlier WONT ECHO; the WILL must not wait
                // for that acknowledgement.
                self.echo_for_password = self.telnet.request_local_now(opt::ECHO, true, out);
            }
        } else if std::mem::take(&mut self.echo_for_password) {
            self.telnet.request_local(opt::ECHO, false, out);
        }
    }

    /// Shows a prompt (and, in character mode, any input typed ahead). MUD clients get IAC GA after it
    /// (or IAC EOR if they asked for EOR) to mark where the prompt ends.
    pub fn show_prompt(&mut self, prompt: &str, out: &mut Vec<u8>) {
        self.keep_prompt(prompt);
        self.editor.render_prompt(self.mode(), prompt, out);
        if self.mud {
            if self.telnet.is_local_enabled(opt::EOR) {
                telnet::send_eor(out);
            } else {
                telnet::send_ga(out);
            }
        }
        self.prompt_shown = true;
        // A MUD client ends the prompt's row at IAC GA.
        self.mid_line = !self.mud;
    }

    /// Changes the prompt drawn again after the next lines printed (the session has been taken off
    /// its channel, which the prompt names) without drawing it now.
    pub fn replace_prompt(&mut self, prompt: &str) {
        self.keep_prompt(prompt);
    }

    fn keep_prompt(&mut self, prompt: &str) {
        if *self.prompt != *prompt {
            self.prompt = prompt.into();
        }
    }

    /// The prompt last shown.
    pub fn prompt(&self) -> &str {
        &self.prompt
    }

    /// Prints lines of text for the user. If the prompt is on screen in character mode, the prompt and
    /// half-typed input are erased, the lines printed, and both drawn again. Otherwise the lines start
    /// on a fresh row (a line break first if a prompt left the row open) and the prompt is not repeated.
    pub fn print(&mut self, lines: &[&str], out: &mut Vec<u8>) {
        if self.prompt_shown && self.mode() == Mode::Character {
            self.editor.interrupt(
                Mode::Character,
                &self.prompt,
                self.width,
                lines.iter().copied(),
                out,
            );
            return;
        }
        if std::mem::take(&mut self.mid_line) {
            out.extend_from_slice(b"\r\n");
        }
        self.prompt_shown = false;
        out.reserve(lines.iter().map(|l| l.len() + 2).sum());
        for line in lines {
            telnet::escape_into(line.as_bytes(), out);
            out.extend_from_slice(b"\r\n");
        }
    }
}

/// A small stable hash, enough to tell whether two terminal-type answers differ.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telnet::cmd::{DO, DONT, IAC, SB, SE, WILL, WONT};

    /// Feeds `bytes` and collects every input the terminal produces.
    fn type_in(term: &mut Terminal, bytes: &[u8], out: &mut Vec<u8>) -> Vec<String> {
        term.feed(bytes, out);
        let mut lines = Vec::new();
        while let Some(input) = term.next_input(out) {
            match input {
                Input::Line(l) => lines.push(l.text),
                Input::EndOfInput => lines.push("<EOF>".into()),
            }
        }
        lines
    }

    fn plain_terminal() -> (Terminal, Vec<u8>) {
        let mut term = Terminal::new();
        let mut out = Vec::new();
        term.start(&mut out);
        assert_eq!(
            out,
            [
                IAC,
                WILL,
                opt::ECHO,
                IAC,
                WILL,
                opt::SGA,
                IAC,
                DO,
                opt::TTYPE,
                IAC,
                DO,
                opt::NAWS,
                IAC,
                WILL,
                opt::MSSP
            ]
        );
        out.clear();
        // inetutils telnet agrees to everything and names an xterm.
        let mut reply = vec![IAC, DO, opt::ECHO, IAC, DO, opt::SGA, IAC, WILL, opt::TTYPE];
        reply.extend_from_slice(&[IAC, SB, opt::TTYPE, 0]);
        reply.extend_from_slice(b"XTERM-256COLOR");
        reply.extend_from_slice(&[IAC, SE]);
        assert!(type_in(&mut term, &reply, &mut out).is_empty());
        assert_eq!(term.mode(), Mode::Character);
        out.clear();
        (term, out)
    }

    #[test]
    fn plain_terminal_gets_character_mode_and_echo() {
        let (mut term, mut out) = plain_terminal();
        term.show_prompt("Username: ", &mut out);
        assert_eq!(out, b"Username: ");
        out.clear();
        assert!(type_in(&mut term, b"bob", &mut out).is_empty());
        assert_eq!(out, b"bob");
        out.clear();
        assert_eq!(type_in(&mut term, b"\r\0", &mut out), ["bob"]);
        assert_eq!(out, b"\r\n");
    }

    #[test]
    fn a_line_arriving_mid_typing_is_drawn_above_the_input() {
        let (mut term, mut out) = plain_terminal();
        term.show_prompt("bob> ", &mut out);
        type_in(&mut term, b"hel", &mut out);
        out.clear();
        term.print(&["alice says, \"hi\""], &mut out);
        let shown = String::from_utf8(out.clone()).unwrap();
        assert!(shown.starts_with('\r'), "{shown:?}");
        assert!(shown.contains("\x1b[J"), "{shown:?}");
        assert!(
            shown.ends_with("alice says, \"hi\"\r\nbob> hel"),
            "{shown:?}"
        );
    }

    #[test]
    fn hidden_input_is_not_echoed() {
        let (mut term, mut out) = plain_terminal();
        term.set_hidden(true, &mut out);
        term.show_prompt("Password: ", &mut out);
        out.clear();
        assert_eq!(type_in(&mut term, b"secret1\r\n", &mut out), ["secret1"]);
        assert!(!out.windows(7).any(|w| w == b"secret1"));
        term.set_hidden(false, &mut out);
    }

    #[test]
    fn mudlet_gets_line_mode_echo_back_and_ga() {
        let mut term = Terminal::new();
        let mut out = Vec::new();
        term.start(&mut out);
        out.clear();
        let mut reply = vec![IAC, DO, opt::ECHO, IAC, WILL, opt::TTYPE];
        reply.extend_from_slice(&[IAC, SB, opt::TTYPE, 0]);
        reply.extend_from_slice(b"MUDLET");
        reply.extend_from_slice(&[IAC, SE]);
        type_in(&mut term, &reply, &mut out);
        assert!(term.is_mud());
        assert_eq!(term.mode(), Mode::Line);
        assert!(out.windows(3).any(|w| w == [IAC, WONT, opt::ECHO]));
        type_in(&mut term, &[IAC, DONT, opt::ECHO], &mut out);
        out.clear();
        term.show_prompt("Username: ", &mut out);
        assert_eq!(out, b"Username: \xff\xf9");
        out.clear();
        // Nothing typed is echoed in line mode.
        assert_eq!(type_in(&mut term, b"bob\r\n", &mut out), ["bob"]);
        assert!(out.is_empty());
        // The password prompt turns the client's echo off, and back on after.
        term.set_hidden(true, &mut out);
        assert_eq!(out, [IAC, WILL, opt::ECHO]);
        out.clear();
        type_in(&mut term, &[IAC, DO, opt::ECHO], &mut out);
        assert_eq!(type_in(&mut term, b"pw\r\n", &mut out), ["pw"]);
        term.set_hidden(false, &mut out);
        assert_eq!(out, [IAC, WONT, opt::ECHO]);
    }

    #[test]
    fn password_prompt_for_a_client_that_never_acknowledges_wont_echo() {
        let mut term = Terminal::new();
        let mut out = Vec::new();
        term.start(&mut out);
        let mut reply = vec![IAC, DO, opt::ECHO, IAC, SB, opt::TTYPE, 0];
        reply.extend_from_slice(b"TINTIN++");
        reply.extend_from_slice(&[IAC, SE]);
        type_in(&mut term, &reply, &mut out);
        out.clear();
        // TinTin++ never answers our WONT ECHO; the password prompt's WILL ECHO goes out anyway.
        term.set_hidden(true, &mut out);
        assert_eq!(out, [IAC, WILL, opt::ECHO]);
        out.clear();
        type_in(&mut term, &[IAC, DO, opt::ECHO], &mut out);
        assert!(out.is_empty());
        term.set_hidden(false, &mut out);
        assert_eq!(out, [IAC, WONT, opt::ECHO]);
    }

    #[test]
    fn a_silent_client_is_in_line_mode_and_never_gets_escape_sequences() {
        let mut term = Terminal::new();
        let mut out = Vec::new();
        term.start(&mut out);
        out.clear();
        term.show_prompt("bob> ", &mut out);
        assert_eq!(type_in(&mut term, b"hi\n", &mut out), ["hi"]);
        term.show_prompt("bob> ", &mut out);
        term.print(&["x"], &mut out);
        assert!(!out.contains(&0x1b));
        assert_eq!(out, b"bob> bob> \r\nx\r\n");
    }

    #[test]
    fn input_typed_before_negotiation_is_kept_in_order() {
        let mut term = Terminal::new();
        let mut out = Vec::new();
        term.start(&mut out);
        // An auto-login client sends name and password before answering anything.
        term.feed(b"bob\r\nsecret1\r\n", &mut out);
        let first = term.next_input(&mut out);
        assert!(matches!(first, Some(Input::Line(ref l)) if l.text == "bob"));
        term.set_hidden(true, &mut out);
        let second = term.next_input(&mut out);
        assert!(matches!(second, Some(Input::Line(ref l)) if l.text == "secret1"));
        assert!(term.next_input(&mut out).is_none());
    }

    #[test]
    fn ctrl_d_on_an_empty_line_ends_input() {
        let (mut term, mut out) = plain_terminal();
        assert_eq!(type_in(&mut term, b"\x04", &mut out), ["<EOF>"]);
    }

    #[test]
    fn refused_echo_means_line_mode() {
        let mut term = Terminal::new();
        let mut out = Vec::new();
        term.start(&mut out);
        type_in(&mut term, &[IAC, DONT, opt::ECHO], &mut out);
        assert_eq!(term.mode(), Mode::Line);
    }

    #[test]
    fn mud_client_names() {
        for name in [
            "MUDLET",
            "Mudlet 4.17.2",
            "TINTIN++",
            "MUSHCLIENT",
            "BLIGHTMUD",
            "CMUD",
            "ZMUD",
        ] {
            assert!(is_mud_client(name), "{name}");
        }
        for name in ["XTERM-256COLOR", "ANSI", "VT100", "PUTTY", ""] {
            assert!(!is_mud_client(name), "{name}");
        }
    }

    #[test]
    fn a_client_that_agrees_to_mssp_is_owed_the_table_once_per_connection() {
        let (mut term, mut out) = plain_terminal();
        assert!(!term.take_mssp_request(), "inetutils telnet never answered");
        type_in(&mut term, &[IAC, DO, opt::MSSP], &mut out);
        assert!(term.take_mssp_request());
        assert!(!term.take_mssp_request(), "owed once");
        // A repeated DO changes nothing (RFC 1143): no second table.
        type_in(&mut term, &[IAC, DO, opt::MSSP], &mut out);
        assert!(!term.take_mssp_request());
        // Nor does turning it off and on again: one table a connection.
        type_in(
            &mut term,
            &[IAC, DONT, opt::MSSP, IAC, DO, opt::MSSP],
            &mut out,
        );
        assert!(term.telnet.is_local_enabled(opt::MSSP));
        assert!(!term.take_mssp_request());
        // A refusal is taken quietly.
        let mut other = Terminal::new();
        let mut out = Vec::new();
        other.start(&mut out);
        type_in(&mut other, &[IAC, DONT, opt::MSSP], &mut out);
        assert!(!other.take_mssp_request());
    }
}
