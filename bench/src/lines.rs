//! Splitting the server's text into lines, and the unfinished tail where prompts live.
//!
//! Both protocols end lines with CR LF; prompts (`Username: `, `bob #lobby> `) have no line end, so
//! whatever follows the last LF is kept as the *tail* and can be looked at before more bytes come.

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
        let line = trim_cr(&rest[..nl]);
        let text = String::from_utf8_lossy(line).into_owned();
        self.start += nl + 1;
        Some(text)
    }

    /// The text after the last complete line: a prompt, or the start of a line still arriving.
    pub fn tail(&self) -> std::borrow::Cow<'_, str> {
        String::from_utf8_lossy(trim_cr(&self.buf[self.start..]))
    }

    /// Forgets the tail, once a prompt in it has been answered.
    pub fn clear_tail(&mut self) {
        if !self.buf[self.start..].contains(&b'\n') {
            self.start = self.buf.len();
        }
    }
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
