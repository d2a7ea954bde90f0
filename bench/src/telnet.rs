//! Telnet for a client that never negotiates: strip every IAC sequence, keep the text.
//!
//! A client that answers none of the server's offers stays in line mode (no echo, no escape sequences),
//! so all the bench needs from telnet is to drop what is not text. Sans-IO, in libtelnet's shape: bytes
//! in, data bytes out, one `match` over a small state enum; a sequence cut between two reads resumes
//! where it stopped.

use ringtalk::telnet::cmd::{DO, DONT, IAC, SB, SE, WILL, WONT};

/// Where the decoder is inside a telnet sequence.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum State {
    /// Plain text.
    #[default]
    Data,
    /// Just read IAC.
    Iac,
    /// Read IAC WILL/WONT/DO/DONT; the option byte comes next.
    Verb,
    /// Inside IAC SB ... (the option and its parameters).
    Sb,
    /// Read IAC inside a subnegotiation: SE ends it, IAC is an escaped 0xFF parameter byte.
    SbIac,
}

/// Removes telnet commands from a byte stream.
#[derive(Debug, Default)]
pub struct TelnetFilter {
    state: State,
}

impl TelnetFilter {
    /// A filter at the start of a stream.
    pub fn new() -> TelnetFilter {
        TelnetFilter::default()
    }

    /// Appends the data bytes of `input` to `out`; IAC IAC becomes one 0xFF data byte, every other
    /// command (negotiation, subnegotiation, GA, NOP, ...) is dropped.
    pub fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) {
        for &b in input {
            self.state = match (self.state, b) {
                (State::Data, IAC) => State::Iac,
                (State::Data, _) => {
                    out.push(b);
                    State::Data
                }
                (State::Iac, IAC) => {
                    out.push(IAC);
                    State::Data
                }
                (State::Iac, WILL | WONT | DO | DONT) => State::Verb,
                (State::Iac, SB) => State::Sb,
                // GA, NOP, AYT, EOR, ...: two-byte commands.
                (State::Iac, _) => State::Data,
                (State::Verb, _) => State::Data,
                (State::Sb, IAC) => State::SbIac,
                (State::Sb, _) => State::Sb,
                (State::SbIac, SE) => State::Data,
                (State::SbIac, _) => State::Sb,
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strip(chunks: &[&[u8]]) -> Vec<u8> {
        let mut filter = TelnetFilter::new();
        let mut out = Vec::new();
        for chunk in chunks {
            filter.feed(chunk, &mut out);
        }
        out
    }

    #[test]
    fn greeting_negotiation_is_dropped() {
        let wire = b"\xff\xfb\x01\xff\xfb\x03\xff\xfd\x18\xff\xfd\x1fWelcome\r\n\r\nUsername: ";
        assert_eq!(strip(&[wire]), b"Welcome\r\n\r\nUsername: ");
    }

    #[test]
    fn doubled_iac_is_one_data_byte() {
        assert_eq!(strip(&[b"a\xff\xffb"]), b"a\xffb");
    }

    #[test]
    fn subnegotiation_with_escaped_iac_is_dropped() {
        assert_eq!(strip(&[b"x\xff\xfa\x18\x01\xff\xff\x05\xff\xf0y"]), b"xy");
    }

    #[test]
    fn go_ahead_is_dropped() {
        assert_eq!(strip(&[b"name #lobby> \xff\xf9"]), b"name #lobby> ");
    }

    #[test]
    fn sequences_cut_between_reads_resume() {
        assert_eq!(
            strip(&[
                b"a\xff",
                b"\xfb",
                b"\x01b\xff",
                b"\xfa\x18",
                b"\xff",
                b"\xf0c"
            ]),
            b"abc"
        );
        assert_eq!(strip(&[b"a\xff", b"\xffb"]), b"a\xffb");
    }
}
