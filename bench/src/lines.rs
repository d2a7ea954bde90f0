//! Splitting the server's text into lines, and the unfinished tail where prompts live.
//!
//! Both protocols end lines with CR LF; prompts (`Username: `, `bob #lobby> `) have no line end, so
//! whatever follows the last LF is kept as the *tail* and can be looked at before more bytes come.
//!
//! In character mode the server draws on the client's screen: before it prints a line over a prompt
//! it returns to the row's start and erases (`CR ESC [ J`, and `ESC [ n A` to climb wrapped rows),
//! and it rings the bell. Lines and the tail are taken as a terminal would show them, so the same
//! parsing serves every client profile.

/// Bytes read but not yet taken as lines.
#[derive(Debug, Default)]
pub struct LineBuf {
    buf: Vec<u8>,
    /// Where the next line starts in `buf`; the consumed front is compacted away lazily.
    start: usize,
}

impl LineBuf {
    /// An empty buffer.
    pub fn new() -> LineBuf {
        LineBuf::default()
    }

    /// Appends text bytes (telnet already removed).
    pub fn push(&mut self, data: &[u8]) {
        if self.start > 0 && self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        } else if self.start > 4096 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        self.buf.extend_from_slice(data);
    }

    /// The next complete line without its CR LF (a bare LF ends a line too; stray CRs and NULs at
    /// either end are removed).
    pub fn next_line(&mut self) -> Option<String> {
        let rest = &self.buf[self.start..];
        let nl = rest.iter().position(|&b| b == b'\n')?;
        let text = shown(&rest[..nl]);
        self.start += nl + 1;
        Some(text)
    }

    /// The text after the last complete line: a prompt, or the start of a line still arriving.
    pub fn tail(&self) -> String {
        shown(&self.buf[self.start..])
    }

    /// Forgets the tail, once a prompt in it has been answered.
    pub fn clear_tail(&mut self) {
        if !self.buf[self.start..].contains(&b'\n') {
            self.start = self.buf.len();
        }
    }
}

/// One row as a terminal shows it: what follows the last carriage return (the server returns to the
/// row's start before it writes over it), without escape sequences (`ESC [` parameters, final byte)
/// and bells. Stray CRs and NULs at either end are ignored.
fn shown(row: &[u8]) -> String {
    let row = trim_cr(row);
    let row = match row.iter().rposition(|&b| b == b'\r') {
        Some(cr) => &row[cr + 1..],
        None => row,
    };
    if !row.iter().any(|&b| b == 0x1b || b == 0x07) {
        return String::from_utf8_lossy(row).into_owned();
    }
    let mut kept = Vec::with_capacity(row.len());
    let mut bytes = row.iter().copied();
    while let Some(b) = bytes.next() {
        match b {
            0x07 => {}
            0x1b => {
                // CSI: ESC [, parameter and intermediate bytes, then one final byte in @..~.
                if bytes.next() == Some(b'[') {
                    for b in bytes.by_ref() {
                        if (0x40..=0x7e).contains(&b) {
                            break;
                        }
                    }
                }
            }
            _ => kept.push(b),
        }
    }
    String::from_utf8_lossy(&kept).into_owned()
}

fn trim_cr(mut s: &[u8]) -> &[u8] {
    while let [b'\r' | 0, rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b'\r' | 0] = s {
        s = rest;
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_and_tail() {
        let mut b = LineBuf::new();
        b.push(b"Welcome to ringtalk.\r\n\r\nUser");
        assert_eq!(b.next_line().as_deref(), Some("Welcome to ringtalk."));
        assert_eq!(b.next_line().as_deref(), Some(""));
        assert_eq!(b.next_line(), None);
        assert_eq!(b.tail(), "User");
        b.push(b"name: ");
        assert_eq!(b.tail(), "Username: ");
        b.clear_tail();
        assert_eq!(b.tail(), "");
        b.push(b"bob #lobby> \r\nbob says, \"hi\"\r\n");
        assert_eq!(b.next_line().as_deref(), Some("bob #lobby> "));
        assert_eq!(b.next_line().as_deref(), Some("bob says, \"hi\""));
        assert_eq!(b.next_line(), None);
    }

    #[test]
    fn a_line_printed_over_a_prompt_reads_as_the_terminal_shows_it() {
        let mut b = LineBuf::new();
        // Character mode: the prompt, then a line printed over it (return, erase), the prompt
        // redrawn; a wrapped input climbs a row first; a bell rings.
        b.push(b"bob #lobby> \r\x1b[Jalice says, \"hi\"\r\nbob #lobby> \r\x1b[1A\x1b[J");
        b.push(b"carl says, \"yo\"\x07\r\nbob #lobby> ");
        assert_eq!(b.next_line().as_deref(), Some("alice says, \"hi\""));
        assert_eq!(b.next_line().as_deref(), Some("carl says, \"yo\""));
        assert_eq!(b.tail(), "bob #lobby> ");
    }

    #[test]
    fn bare_lf_and_leading_cr() {
        let mut b = LineBuf::new();
        b.push(b"a\n\r\nb\r");
        assert_eq!(b.next_line().as_deref(), Some("a"));
        assert_eq!(b.next_line().as_deref(), Some(""));
        assert_eq!(b.next_line(), None);
        b.push(b"\n");
        assert_eq!(b.next_line().as_deref(), Some("b"));
    }
}
