//! The send side: the one escaping function every outgoing byte goes through, and the few
//! fixed command sequences a session sends.
//!
//! Doubling 0xFF in a single place is what keeps one user's bytes from turning into commands
//! on another user's connection (jline3 #2164: an unescaped 0xFF became an injected WILL ECHO).

use super::consts::{cmd, opt, TTYPE_SEND};

/// Appends `data` to `out` as NVT text: every 0xFF is doubled to `IAC IAC`, and every LF not
/// already preceded by a CR *in `data`* becomes CR LF, so code above can write `"\n"`.
///
/// An existing CR LF is left alone (never CR CR LF), but a CR at the very end of one call
/// followed by an LF at the start of the next does get a second CR, since this function keeps
/// no state; a terminal displays CR CR LF exactly like CR LF. A bare CR is passed through
/// unchanged (RFC 854 would pad it with NUL; terminals treat it as a carriage return either way).
pub fn escape_into(data: &[u8], out: &mut Vec<u8>) {
    out.reserve(data.len());
    let mut start = 0;
    // Chat text rarely holds either byte: one vectorised scan, then one copy.
    for i in memchr::memchr2_iter(cmd::IAC, b'\n', data) {
        if data[i] == cmd::IAC {
            out.extend_from_slice(&data[start..=i]);
            out.push(cmd::IAC);
            start = i + 1;
        } else if i == 0 || data[i - 1] != b'\r' {
            out.extend_from_slice(&data[start..i]);
            out.extend_from_slice(b"\r\n");
            start = i + 1;
        }
    }
    out.extend_from_slice(&data[start..]);
}

/// Appends `IAC SB TTYPE SEND IAC SE`, asking for the client's terminal type. Send it once the
/// client has agreed to TTYPE ([`Event::RemoteEnabled`](super::Event::RemoteEnabled)); each
/// further request makes MTTS clients report their next name.
pub fn send_ttype_request(out: &mut Vec<u8>) {
    out.extend_from_slice(&[cmd::IAC, cmd::SB, opt::TTYPE, TTYPE_SEND, cmd::IAC, cmd::SE]);
}

/// Appends `IAC GA`: MUD clients use it to find the end of a prompt without a newline.
pub fn send_ga(out: &mut Vec<u8>) {
    out.extend_from_slice(&[cmd::IAC, cmd::GA]);
}

/// Appends `IAC EOR`, the prompt marker for clients that agreed to the EOR option.
pub fn send_eor(out: &mut Vec<u8>) {
    out.extend_from_slice(&[cmd::IAC, cmd::EOR]);
}

#[cfg(test)]
mod tests {
    use super::super::codec::{Event, Telnet};
    use super::super::testutil::unescape;
    use super::*;

    fn escaped(data: &[u8]) -> Vec<u8> {
        let mut out = b"prefix:".to_vec();
        escape_into(data, &mut out);
        assert!(out.starts_with(b"prefix:"), "appends, never clears");
        out.split_off(7)
    }

    #[test]
    fn plain_text_is_unchanged() {
        assert_eq!(escaped(b""), b"");
        assert_eq!(escaped(b"hello, world"), b"hello, world");
        assert_eq!(escaped("caf\u{e9}".as_bytes()), "caf\u{e9}".as_bytes());
    }

    #[test]
    fn iac_is_doubled() {
        assert_eq!(escaped(&unescape("%FF")), unescape("%FF%FF"));
        assert_eq!(
            escaped(&unescape("a%FF%FFb%FF")),
            unescape("a%FF%FF%FF%FFb%FF%FF")
        );
        // jline3 #2164: a user's IAC WILL ECHO must reach others as data, not as a command.
        assert_eq!(escaped(&unescape("%FF%FB%01")), unescape("%FF%FF%FB%01"));
    }

    #[test]
    fn newlines_become_cr_lf_once() {
        assert_eq!(escaped(b"\n"), b"\r\n");
        assert_eq!(escaped(b"a\nb\n\n"), b"a\r\nb\r\n\r\n");
        assert_eq!(escaped(b"a\r\nb\r\n"), b"a\r\nb\r\n", "no CR CR LF");
        assert_eq!(escaped(b"\r\r\n\n"), b"\r\r\n\r\n");
        assert_eq!(escaped(b"bare\rcr"), b"bare\rcr");
        assert_eq!(escaped(&unescape("%FF%0A")), unescape("%FF%FF%0D%0A"));
    }

    #[test]
    fn every_byte_round_trips_through_the_parser() {
        // What we send, parsed by a telnet endpoint, gives back the data with LF as line ends.
        let data: Vec<u8> = (0..=255u8).filter(|&b| b != b'\r' && b != 0).collect();
        let mut wire = Vec::new();
        escape_into(&data, &mut wire);
        let (mut events, mut out) = (Vec::new(), Vec::new());
        Telnet::new().receive(&wire, &mut events, &mut out);
        let expected: Vec<Event> = data
            .iter()
            .map(|&b| {
                if b == b'\n' {
                    Event::EndOfLine
                } else {
                    Event::Data(b)
                }
            })
            .collect();
        assert_eq!(events, expected);
        assert!(out.is_empty());
    }

    #[test]
    fn fixed_sequences() {
        let mut out = Vec::new();
        send_ttype_request(&mut out);
        send_ga(&mut out);
        send_eor(&mut out);
        assert_eq!(out, unescape("%FF%FA%18%01%FF%F0%FF%F9%FF%EF"));
    }
}
