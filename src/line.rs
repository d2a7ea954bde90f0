//! The server-side line editor: keystrokes in, a finished line (and echo bytes) out. No I/O.
//!
//! # Why the server edits lines
//!
//! A chat server has a problem a shell does not: messages from other users arrive while the user is
//! half-way through typing. If the terminal edits and echoes locally (telnet's default "line mode"),
//! an incoming message is printed straight through the half-typed input and the user loses track of
//! what they typed. So for plain terminals (inetutils `telnet`, PuTTY) the server negotiates
//! WILL ECHO + WILL SGA ("character mode"): every keystroke comes to the server alone, the server
//! keeps the input line and echoes it, and so it can *redraw* around an incoming message: erase the
//! prompt and the half-typed input, print the message, draw the prompt and the input again
//! ([`LineEditor::interrupt`]). This is how talkers and MUD servers have done it since the 1990s; a
//! server that leaves editing to the terminal (as the wtelnet seed did) garbles input under load.
//!
//! MUD clients (Mudlet, TinTin++, ...) keep their own input line and send whole lines, so for them
//! the editor runs in [`Mode::Line`]: the same editing rules apply to the bytes (a BS in the data
//! still deletes) but nothing is echoed and no redraw is needed.
//!
//! # What the editor guarantees
//!
//! * The line is valid UTF-8 of at most [`MAX_LINE_BYTES`] bytes and never holds a control character
//!   (C0, DEL, C1): users cannot inject terminal escape sequences into other users' screens.
//!   Escape sequences typed by the user (arrow keys `ESC [ A`, function keys `ESC O P`, Alt+key
//!   `ESC x`, 8-bit CSI/SS3) are swallowed whole.
//! * Invalid UTF-8 is discarded (one count per maximal ill-formed subsequence, the same unit as
//!   `String::from_utf8_lossy`'s U+FFFD) and never echoed; the editor keeps working.
//! * Backspace removes one whole character, not one byte, and erases as many columns as the
//!   character took on screen (two for CJK and most emoji), using `unicode-width`.
//! * Memory: an empty editor owns no heap memory (about 40 bytes inline), because tens of thousands
//!   of mostly idle editors exist at once.
//!
//! # Choices
//!
//! * Tab is taken as a single space (pasted text keeps its word breaks).
//! * ^C clears the line, exactly like ^U. ^W and Alt+Backspace (`ESC DEL`, `ESC BS`) delete the
//!   previous word. ^D on an empty line is end of input; elsewhere it is ignored.
//! * Backspace on an empty line does nothing (no bell: holding the key down should not beep).
//! * A character that would make the line longer than [`MAX_LINE_BYTES`] is refused and rings the
//!   bell (character mode, not hidden) once per run of refused characters, so a large paste costs
//!   one bell, not hundreds. Everything after it is refused too until an edit makes room, so what
//!   is kept is the line's first bytes, and the session says so.
//! * Backspace also removes zero-width characters (combining marks, joiners, variation selectors)
//!   that follow the character it removes, so the buffer matches what the user sees erased.
//! * Hidden mode (passwords) echoes nothing at all, not even the bell; only the final `\r\n`.
//!
//! Known limitation: backspacing across a row boundary of a wrapped input line relies on the
//! terminal moving back with BS, which most do not; the next [`LineEditor::interrupt`] redraws
//! correctly (it counts rows from the text, not from the cursor history).
//!
//! # Output invariant
//!
//! Every byte this module appends to `out` is either ASCII (BS, BEL, CR, LF, space, `ESC [ ...`) or
//! part of valid UTF-8 text (echoed characters, the prompt, message lines: all `&str`/`char`). Valid
//! UTF-8 never contains 0xFF, so nothing written here needs telnet IAC doubling; passing it through
//! the telnet layer's escaping function anyway is harmless.

use unicode_width::UnicodeWidthChar;

/// The longest line the editor holds, in bytes of UTF-8.
pub const MAX_LINE_BYTES: usize = 512;

/// Bytes a line's buffer gets when its first character arrives: most chat lines fit.
const FIRST_RESERVE: usize = 96;

/// Terminal width assumed when the client did not report one (NAWS absent or 0).
const DEFAULT_WIDTH: u16 = 80;

const BS: u8 = 0x08;
const BEL: u8 = 0x07;
const ESC: u8 = 0x1b;
const DEL: u8 = 0x7f;

/// How the client handles its input line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Plain terminal, server echoes (we sent WILL ECHO): the editor writes echo bytes to `out`.
    Character,
    /// Client edits its own line (MUD clients): the editor never writes echo bytes.
    Line,
}

/// What one keystroke did.
#[derive(Debug, PartialEq, Eq)]
#[must_use = "EndOfInput means the user asked to leave"]
pub enum EditResult {
    /// The line was edited (or the byte was swallowed); nothing for the session to do.
    Nothing,
    /// The line was finished: returned by [`LineEditor::end_of_line`] only.
    Finished(FinishedLine),
    /// ^D on an empty line: the user wants to leave.
    EndOfInput,
}

/// A line the user finished with Enter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FinishedLine {
    /// The text exactly as typed (leading/trailing whitespace kept); valid UTF-8, no control
    /// characters, at most [`MAX_LINE_BYTES`] bytes.
    pub text: String,
    /// Input was refused because the line was full: `text` is what came first (since the line was
    /// last empty: erasing everything with ^U or backspace forgets it).
    pub truncated: bool,
    /// How many invalid UTF-8 sequences were discarded while typing this line (since it was last
    /// empty, like `truncated`).
    pub invalid: u32,
}

/// Where we are inside a terminal escape sequence typed by the user.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum EscState {
    /// Not in a sequence.
    Ground,
    /// After ESC.
    Escape,
    /// After `ESC [` (or 8-bit CSI, U+009B): parameters until a final byte 0x40..=0x7E.
    Csi,
    /// After `ESC O` (or 8-bit SS3, U+008F): one more byte.
    Ss3,
    /// After ESC and a non-ASCII lead byte (Alt + a non-ASCII key): drop that whole character.
    DropChar,
    /// Inside a control string (OSC `ESC ]`, DCS `ESC P`, SOS `ESC X`, PM `ESC ^`, APC `ESC _`, or
    /// their 8-bit forms): everything up to BEL or ST (`ESC \`) is swallowed, so a window-title or
    /// hyperlink sequence leaves no payload behind.
    Str,
    /// ESC seen inside a control string: `\` ends the string, anything else stays inside it.
    StrEsc,
}

/// One user's input line, plus the state needed to decode the bytes that build it.
///
/// Small on purpose (about 40 bytes, no heap while empty): one exists per connection.
#[derive(Debug, Clone)]
pub struct LineEditor {
    /// The line typed so far. Freed (not just cleared) whenever it becomes empty.
    buf: String,
    /// Invalid UTF-8 sequences discarded in this line, reported in [`FinishedLine::invalid`].
    invalid: u32,
    /// Code point being assembled from a multi-byte sequence that arrives one byte per call.
    cp: u32,
    /// Continuation bytes still expected for `cp` (0 = not inside a sequence).
    need: u8,
    /// Lowest allowed value of the next continuation byte (rejects overlongs and surrogates).
    lo: u8,
    /// Highest allowed value of the next continuation byte (rejects surrogates and > U+10FFFF).
    hi: u8,
    /// Escape-sequence swallowing state.
    esc: EscState,
    /// Password entry: edit silently.
    hidden: bool,
    /// Input was refused in this line because it was full.
    truncated: bool,
    /// The last thing typed was refused (and the bell rung): do not ring again until an edit works.
    refusing: bool,
}

impl Default for LineEditor {
    fn default() -> Self {
        Self::new()
    }
}

impl LineEditor {
    /// An empty editor, not hidden. Allocates nothing.
    pub const fn new() -> Self {
        LineEditor {
            buf: String::new(),
            invalid: 0,
            cp: 0,
            need: 0,
            lo: 0x80,
            hi: 0xbf,
            esc: EscState::Ground,
            hidden: false,
            truncated: false,
            refusing: false,
        }
    }

    /// Turn hidden (password) mode on or off. Hidden input is edited normally but never echoed, and
    /// [`interrupt`](Self::interrupt) redraws the prompt without it. Takes effect at once and stays
    /// until changed.
    pub fn set_hidden(&mut self, hidden: bool) {
        self.hidden = hidden;
    }

    /// Whether hidden (password) mode is on.
    pub fn is_hidden(&self) -> bool {
        self.hidden
    }

    /// The line typed so far: valid UTF-8, no control characters, at most [`MAX_LINE_BYTES`].
    pub fn contents(&self) -> &str {
        &self.buf
    }

    /// Whether nothing has been typed on this line (or it was all erased).
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// Forget the current line and every partial sequence, without output; frees the buffer.
    /// Hidden mode is kept. For the session to use when it changes state (e.g. after login).
    pub fn clear(&mut self) {
        let hidden = self.hidden;
        *self = Self::new();
        self.hidden = hidden;
    }

    /// Feed one user data byte (telnet commands already removed, CR/LF already turned into
    /// [`end_of_line`](Self::end_of_line) calls). In [`Mode::Character`] echo bytes are appended to
    /// `out`. Returns [`EditResult::EndOfInput`] for ^D on an empty line, else
    /// [`EditResult::Nothing`]. Never panics.
    pub fn input(&mut self, mode: Mode, byte: u8, out: &mut Vec<u8>) -> EditResult {
        let echo = mode == Mode::Character && !self.hidden;

        // Inside a multi-byte UTF-8 sequence.
        if self.need > 0 {
            if (self.lo..=self.hi).contains(&byte) {
                self.cp = (self.cp << 6) | u32::from(byte & 0x3f);
                self.need -= 1;
                self.lo = 0x80;
                self.hi = 0xbf;
                if self.need > 0 {
                    return EditResult::Nothing;
                }
                let cp = std::mem::take(&mut self.cp);
                return match char::from_u32(cp) {
                    Some(c) => self.take_char(c, echo, out),
                    // Unreachable given the byte ranges above, but never panic on input.
                    None => {
                        self.discard_partial();
                        EditResult::Nothing
                    }
                };
            }
            // Not a valid continuation: the sequence so far is one invalid unit, and this byte
            // starts afresh.
            self.discard_partial();
        }

        if byte < 0x80 {
            return self.take_ascii(byte, echo, out);
        }

        // A lead byte (or garbage). Ranges from the Unicode Standard, table 3-7.
        let (need, lo, hi, bits) = match byte {
            0xc2..=0xdf => (1, 0x80, 0xbf, byte & 0x1f),
            0xe0 => (2, 0xa0, 0xbf, byte & 0x0f),
            0xe1..=0xec | 0xee..=0xef => (2, 0x80, 0xbf, byte & 0x0f),
            0xed => (2, 0x80, 0x9f, byte & 0x0f),
            0xf0 => (3, 0x90, 0xbf, byte & 0x07),
            0xf1..=0xf3 => (3, 0x80, 0xbf, byte & 0x07),
            0xf4 => (3, 0x80, 0x8f, byte & 0x07),
            // Lone continuation, C0/C1 (overlong 2-byte), F5..FF.
            _ => {
                self.invalid = self.invalid.saturating_add(1);
                self.esc = EscState::Ground;
                return EditResult::Nothing;
            }
        };
        self.esc = match self.esc {
            // Alt + non-ASCII key: swallow the whole character.
            EscState::Escape | EscState::DropChar => EscState::DropChar,
            // Non-ASCII inside CSI/SS3 ends the sequence; the character is typed normally.
            EscState::Ground | EscState::Csi | EscState::Ss3 => EscState::Ground,
            // Inside a control string: the character is part of it (take_char swallows it).
            EscState::Str | EscState::StrEsc => EscState::Str,
        };
        self.need = need;
        self.lo = lo;
        self.hi = hi;
        self.cp = u32::from(bits);
        EditResult::Nothing
    }

    /// The user pressed Enter: return the line as [`EditResult::Finished`] and start a new, empty
    /// one. In [`Mode::Character`] appends `\r\n` (also when hidden). A partial UTF-8 sequence left
    /// at the end counts as invalid; an unfinished escape sequence is dropped.
    pub fn end_of_line(&mut self, mode: Mode, out: &mut Vec<u8>) -> EditResult {
        if self.need > 0 {
            self.discard_partial();
        }
        let line = FinishedLine {
            // Moves the buffer out: the editor is left with no heap memory.
            text: std::mem::take(&mut self.buf),
            truncated: self.truncated,
            invalid: self.invalid,
        };
        self.clear();
        if mode == Mode::Character {
            out.extend_from_slice(b"\r\n");
        }
        EditResult::Finished(line)
    }

    /// Write the prompt, then (in character mode, not hidden) the input typed so far, leaving the
    /// cursor at the end. Use it after output that ended the prompt row, e.g. a command's reply.
    /// In line mode only the prompt is written (the client shows its own input line); the session
    /// adds IAC GA / EOR if the client wants it.
    pub fn render_prompt(&self, mode: Mode, prompt: &str, out: &mut Vec<u8>) {
        out.extend_from_slice(prompt.as_bytes());
        if mode == Mode::Character && !self.hidden {
            out.extend_from_slice(self.buf.as_bytes());
        }
    }

    /// Show incoming message lines while the user may be mid-line, in one go.
    ///
    /// Character mode: move to the start of the prompt row (counting the rows that the prompt and
    /// input wrapped over at `width` columns, 0 = unknown = 80), erase to the end of the screen
    /// (`\r`, `ESC [ n A` if n > 0, `ESC [ J`), write each line followed by `\r\n`, then redraw
    /// the prompt and the input (prompt only when hidden) with the cursor at the end.
    ///
    /// Line mode: only the lines, each followed by `\r\n`; whether to re-send the prompt is the
    /// session's choice.
    ///
    /// `prompt` must be plain text (no escape sequences) for the row count to be right. The lines
    /// are written as-is: they are already sanitised `&str`, so contain no 0xFF (see module docs).
    /// With no lines at all, character mode simply redraws the prompt and input.
    pub fn interrupt<'a>(
        &self,
        mode: Mode,
        prompt: &str,
        width: u16,
        lines: impl IntoIterator<Item = &'a str>,
        out: &mut Vec<u8>,
    ) {
        if mode == Mode::Line {
            for line in lines {
                out.extend_from_slice(line.as_bytes());
                out.extend_from_slice(b"\r\n");
            }
            return;
        }
        let width = if width == 0 { DEFAULT_WIDTH } else { width };
        let shown = if self.hidden { "" } else { self.buf.as_str() };
        let up = cursor_row(width, prompt.chars().chain(shown.chars()));
        out.push(b'\r');
        if up > 0 {
            out.push(ESC);
            out.push(b'[');
            push_decimal(out, up);
            out.push(b'A');
        }
        out.extend_from_slice(b"\x1b[J");
        for line in lines {
            out.extend_from_slice(line.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        self.render_prompt(mode, prompt, out);
    }

    /// Handle a byte below 0x80, first through the escape-sequence state.
    fn take_ascii(&mut self, byte: u8, echo: bool, out: &mut Vec<u8>) -> EditResult {
        match self.esc {
            EscState::Ground | EscState::DropChar => {}
            EscState::Str => {
                match byte {
                    BEL => self.esc = EscState::Ground,
                    ESC => self.esc = EscState::StrEsc,
                    _ => {}
                }
                return EditResult::Nothing;
            }
            EscState::StrEsc => {
                self.esc = match byte {
                    b'\\' => EscState::Ground,
                    ESC => EscState::StrEsc,
                    _ => EscState::Str,
                };
                return EditResult::Nothing;
            }
            EscState::Escape => {
                self.esc = EscState::Ground;
                match byte {
                    b'[' => self.esc = EscState::Csi,
                    b'O' => self.esc = EscState::Ss3,
                    b']' | b'P' | b'X' | b'^' | b'_' => self.esc = EscState::Str,
                    ESC => self.esc = EscState::Escape,
                    // Alt+Backspace: delete the previous word, like readline.
                    BS | DEL => {
                        self.kill_word(echo, out);
                        return EditResult::Nothing;
                    }
                    0x20..=0x7e => return EditResult::Nothing,
                    // ESC then another control: the ESC alone is dropped, the control acts.
                    _ => {}
                }
                if self.esc != EscState::Ground {
                    return EditResult::Nothing;
                }
            }
            EscState::Csi => match byte {
                // Parameter and intermediate bytes.
                0x20..=0x3f => return EditResult::Nothing,
                // Final byte.
                0x40..=0x7e => {
                    self.esc = EscState::Ground;
                    return EditResult::Nothing;
                }
                // A new sequence starts.
                ESC => {
                    self.esc = EscState::Escape;
                    return EditResult::Nothing;
                }
                // Any other control aborts the sequence and acts normally.
                _ => self.esc = EscState::Ground,
            },
            EscState::Ss3 => {
                self.esc = EscState::Ground;
                match byte {
                    0x20..=0x7e => return EditResult::Nothing,
                    ESC => {
                        self.esc = EscState::Escape;
                        return EditResult::Nothing;
                    }
                    _ => {}
                }
            }
        }
        // DropChar only applies to a non-ASCII character; an ASCII byte cancels it.
        self.esc = EscState::Ground;
        self.take_char(char::from(byte), echo, out)
    }

    /// Act on one decoded character (editing key, escape start, or text).
    fn take_char(&mut self, c: char, echo: bool, out: &mut Vec<u8>) -> EditResult {
        match self.esc {
            EscState::DropChar => {
                self.esc = EscState::Ground;
                return EditResult::Nothing;
            }
            EscState::Str | EscState::StrEsc => {
                // ST in its 8-bit form ends the string; any other character is part of it.
                self.esc = if c == '\u{9c}' {
                    EscState::Ground
                } else {
                    EscState::Str
                };
                return EditResult::Nothing;
            }
            _ => {}
        }
        match c {
            '\u{90}' | '\u{98}' | '\u{9d}' | '\u{9e}' | '\u{9f}' => self.esc = EscState::Str,
            '\x1b' => self.esc = EscState::Escape,
            '\u{9b}' => self.esc = EscState::Csi,
            '\u{8f}' => self.esc = EscState::Ss3,
            '\x08' | '\x7f' => self.backspace(echo, out),
            '\x03' | '\x15' => self.kill_line(echo, out),
            '\x17' => self.kill_word(echo, out),
            '\x04' => {
                if self.buf.is_empty() {
                    self.clear();
                    return EditResult::EndOfInput;
                }
            }
            '\t' => self.insert(' ', echo, out),
            // NUL, other C0, C1: dropped.
            c if c.is_control() => {}
            c => self.insert(c, echo, out),
        }
        EditResult::Nothing
    }

    /// Append a printable character if it fits, else refuse it (and ring the bell, with echo).
    /// Every character after a refused one is refused too, until an edit makes room, so what is
    /// kept is the line's first bytes, never a line with a hole in it (a 2-byte character after a
    /// refused 3-byte one would otherwise fit).
    fn insert(&mut self, c: char, echo: bool, out: &mut Vec<u8>) {
        if self.refusing || self.buf.len() + c.len_utf8() > MAX_LINE_BYTES {
            self.truncated = true;
            if echo && !self.refusing {
                out.push(BEL);
            }
            self.refusing = true;
            return;
        }
        self.refusing = false;
        if self.buf.capacity() == 0 {
            // The first character of a line: room for a typical line at once, rather than growing a
            // character at a time (the buffer leaves with the finished line, so an idle editor still
            // holds nothing).
            self.buf.reserve(FIRST_RESERVE);
        }
        self.buf.push(c);
        if echo {
            let mut tmp = [0u8; 4];
            out.extend_from_slice(c.encode_utf8(&mut tmp).as_bytes());
        }
    }

    /// Remove the last character with a width (and zero-width characters after it).
    fn backspace(&mut self, echo: bool, out: &mut Vec<u8>) {
        let mut cols = 0;
        while let Some(c) = self.buf.pop() {
            let w = char_width(c);
            cols += w;
            if w > 0 {
                break;
            }
        }
        self.after_delete(cols, echo, out);
    }

    /// Remove trailing whitespace, then the word before it.
    fn kill_word(&mut self, echo: bool, out: &mut Vec<u8>) {
        let mut cols = 0;
        let mut in_word = false;
        while let Some(c) = self.buf.chars().next_back() {
            let space = c.is_whitespace();
            if in_word && space {
                break;
            }
            in_word |= !space;
            self.buf.pop();
            cols += char_width(c);
        }
        self.after_delete(cols, echo, out);
    }

    /// Remove the whole line.
    fn kill_line(&mut self, echo: bool, out: &mut Vec<u8>) {
        let cols = str_width(&self.buf);
        self.buf.clear();
        self.after_delete(cols, echo, out);
    }

    /// Bookkeeping after removing `cols` columns of text: echo the erase, free an empty buffer.
    fn after_delete(&mut self, cols: usize, echo: bool, out: &mut Vec<u8>) {
        self.refusing = false;
        if self.buf.is_empty() {
            // Empty editors own no heap memory. What was truncated or invalid is gone too.
            self.buf = String::new();
            self.truncated = false;
            self.invalid = 0;
        }
        if echo && cols > 0 {
            // BS*n, space*n, BS*n: for one column exactly "\x08 \x08".
            out.resize(out.len() + cols, BS);
            out.resize(out.len() + cols, b' ');
            out.resize(out.len() + cols, BS);
        }
    }

    /// Drop a partially decoded character as one invalid sequence.
    fn discard_partial(&mut self) {
        self.invalid = self.invalid.saturating_add(1);
        self.need = 0;
        self.cp = 0;
        self.lo = 0x80;
        self.hi = 0xbf;
        if self.esc == EscState::DropChar {
            self.esc = EscState::Ground;
        }
    }
}

/// Columns a character takes on a terminal (controls and zero-width characters: 0).
fn char_width(c: char) -> usize {
    c.width().unwrap_or(0)
}

/// Columns a string takes, summed per character as the terminal echoed them one by one.
fn str_width(s: &str) -> usize {
    s.chars().map(char_width).sum()
}

/// The row (0 = first) the cursor is on after writing `chars` from column 0 on a terminal
/// `width` columns wide. A wide character that does not fit at the end of a row moves to the next
/// row; after exactly filling a row the cursor stays on it (terminals defer the wrap).
fn cursor_row(width: u16, chars: impl Iterator<Item = char>) -> usize {
    let width = usize::from(width.max(1));
    let (mut row, mut col) = (0usize, 0usize);
    for c in chars {
        let w = char_width(c);
        if w == 0 {
            continue;
        }
        if col + w > width && col > 0 {
            row += 1;
            col = 0;
        }
        col += w;
    }
    row
}

/// Append `n` in decimal ASCII.
fn push_decimal(out: &mut Vec<u8>, n: usize) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    let mut n = n;
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

#[cfg(test)]
mod tests {
    use super::*;

    const C: Mode = Mode::Character;
    const L: Mode = Mode::Line;

    /// Feed bytes one call each; return everything written and the last non-Nothing result.
    fn feed(ed: &mut LineEditor, mode: Mode, bytes: &[u8]) -> (Vec<u8>, Option<EditResult>) {
        let mut out = Vec::new();
        let mut last = None;
        for &b in bytes {
            let r = ed.input(mode, b, &mut out);
            if r != EditResult::Nothing {
                last = Some(r);
            }
        }
        (out, last)
    }

    fn finish(ed: &mut LineEditor, mode: Mode) -> (FinishedLine, Vec<u8>) {
        let mut out = Vec::new();
        match ed.end_of_line(mode, &mut out) {
            EditResult::Finished(line) => (line, out),
            other => panic!("expected Finished, got {other:?}"),
        }
    }

    #[test]
    fn ascii_is_echoed_and_finished() {
        let mut ed = LineEditor::new();
        let (out, r) = feed(&mut ed, C, b"hi there ");
        assert_eq!(out, b"hi there ");
        assert_eq!(r, None);
        assert_eq!(ed.contents(), "hi there ");
        let (line, out) = finish(&mut ed, C);
        assert_eq!(out, b"\r\n");
        assert_eq!(line.text, "hi there ");
        assert!(!line.truncated);
        assert_eq!(line.invalid, 0);
        assert!(ed.is_empty());
        assert_eq!(ed.buf.capacity(), 0);
    }

    #[test]
    fn backspace_removes_whole_multibyte_characters() {
        for (ch, erase) in [
            ("é", &b"\x08 \x08"[..]),
            ("世", &b"\x08\x08  \x08\x08"[..]),
            ("🎉", &b"\x08\x08  \x08\x08"[..]),
        ] {
            for key in [BS, DEL] {
                let mut ed = LineEditor::new();
                let text = format!("a{ch}");
                let (out, _) = feed(&mut ed, C, text.as_bytes());
                assert_eq!(out, text.as_bytes());
                let (out, _) = feed(&mut ed, C, &[key]);
                assert_eq!(out, erase, "{ch}");
                assert_eq!(ed.contents(), "a");
                let (out, _) = feed(&mut ed, C, &[key]);
                assert_eq!(out, b"\x08 \x08");
                assert!(ed.is_empty());
            }
        }
    }

    #[test]
    fn backspace_takes_combining_marks_with_their_base() {
        let mut ed = LineEditor::new();
        feed(&mut ed, C, "xe\u{301}".as_bytes());
        let (out, _) = feed(&mut ed, C, &[DEL]);
        assert_eq!(out, b"\x08 \x08");
        assert_eq!(ed.contents(), "x");
    }

    #[test]
    fn backspace_on_empty_line_does_nothing() {
        let mut ed = LineEditor::new();
        let (out, r) = feed(&mut ed, C, &[DEL, BS]);
        assert!(out.is_empty());
        assert_eq!(r, None);
        assert!(ed.is_empty());
    }

    #[test]
    fn multibyte_character_split_across_calls() {
        let mut ed = LineEditor::new();
        let bytes = "🎉".as_bytes();
        let mut out = Vec::new();
        for (i, &b) in bytes.iter().enumerate() {
            let _ = ed.input(C, b, &mut out);
            if i + 1 < bytes.len() {
                assert!(out.is_empty(), "echoed a partial character");
                assert!(ed.is_empty());
            }
        }
        assert_eq!(out, bytes);
        assert_eq!(ed.contents(), "🎉");
    }

    #[test]
    fn invalid_utf8_is_discarded_and_counted() {
        let cases: &[(&[u8], &str, u32)] = &[
            (b"a\x80b", "ab", 1),               // lone continuation
            (b"a\xc0\xafb", "ab", 2),           // overlong '/': C0 and AF each invalid
            (b"a\xe0\x80\xafb", "ab", 3),       // overlong 3-byte
            (b"a\xe4\xb8b", "ab", 1),           // truncated 世 followed by ASCII
            (b"a\xffb", "ab", 1),               // 0xFF
            (b"\xed\xa0\x80x", "x", 3),         // surrogate
            (b"\xf4\x90\x80\x80y", "y", 4),     // above U+10FFFF
            (b"\xe4\xb8\xe4\xb8\x96", "世", 1), // truncated then a whole one
        ];
        for &(input, want, invalid) in cases {
            let mut ed = LineEditor::new();
            let (out, _) = feed(&mut ed, C, input);
            assert_eq!(ed.contents(), want, "{input:x?}");
            assert_eq!(out, want.as_bytes(), "{input:x?}");
            let (line, _) = finish(&mut ed, C);
            assert_eq!(line.invalid, invalid, "{input:x?}");
            // Agrees with the standard library's count of replacement characters.
            let lossy = String::from_utf8_lossy(input);
            assert_eq!(
                lossy.matches('\u{fffd}').count() as u32,
                invalid,
                "{input:x?}"
            );
        }
    }

    #[test]
    fn partial_sequence_at_end_of_line_counts_as_invalid() {
        let mut ed = LineEditor::new();
        feed(&mut ed, C, b"ok\xe4");
        let (line, _) = finish(&mut ed, C);
        assert_eq!(line.text, "ok");
        assert_eq!(line.invalid, 1);
        // The next line starts clean.
        feed(&mut ed, C, b"\xb8x");
        let (line, _) = finish(&mut ed, C);
        assert_eq!((line.text.as_str(), line.invalid), ("x", 1));
    }

    #[test]
    fn escape_sequences_are_swallowed() {
        let mut ed = LineEditor::new();
        let (out, _) = feed(&mut ed, C, b"a\x1b[Ab\x1bOPc\x1b[1;5Dd\x1bxe\x1b\x1b[Bf");
        assert_eq!(ed.contents(), "abcdef");
        assert_eq!(out, b"abcdef");
        // Bracketed paste markers vanish, the pasted text stays.
        let (_, _) = feed(&mut ed, C, b"\x1b[200~hi\x1b[201~");
        assert_eq!(ed.contents(), "abcdefhi");
        // Alt + non-ASCII key drops the whole character.
        feed(&mut ed, C, "\x1bé!".as_bytes());
        assert_eq!(ed.contents(), "abcdefhi!");
        let (line, _) = finish(&mut ed, C);
        assert_eq!(line.invalid, 0);
    }

    #[test]
    fn escape_then_control_lets_control_act() {
        let mut ed = LineEditor::new();
        feed(&mut ed, C, b"one two");
        let (out, _) = feed(&mut ed, C, b"\x1b\x7f");
        assert_eq!(ed.contents(), "one ");
        assert_eq!(out, b"\x08\x08\x08   \x08\x08\x08");
        feed(&mut ed, C, b"\x1b\x15");
        assert!(ed.is_empty());
    }

    #[test]
    fn c1_controls_are_swallowed() {
        let mut ed = LineEditor::new();
        // U+0085 (NEL) dropped; U+009B is 8-bit CSI: "2J" is swallowed with it; U+008F SS3 + 'P'.
        let (out, _) = feed(&mut ed, C, "a\u{85}b\u{9b}2Jc\u{8f}Pd".as_bytes());
        assert_eq!(ed.contents(), "abcd");
        assert_eq!(out, b"abcd");
    }

    #[test]
    fn other_controls_tab_and_nul() {
        let mut ed = LineEditor::new();
        let (out, _) = feed(&mut ed, C, b"a\0b\x07c\td\x0c\x01e");
        assert_eq!(ed.contents(), "abc de");
        assert_eq!(out, b"abc de");
    }

    #[test]
    fn line_limit_rings_once_and_truncates() {
        let mut ed = LineEditor::new();
        let (out, _) = feed(&mut ed, C, &[b'x'; MAX_LINE_BYTES]);
        assert_eq!(out.len(), MAX_LINE_BYTES);
        let (out, _) = feed(&mut ed, C, b"yz");
        assert_eq!(out, b"\x07", "one bell per run of refused input");
        assert_eq!(ed.contents().len(), MAX_LINE_BYTES);
        // After deleting, a character fits again; refusing again rings again.
        let (out, _) = feed(&mut ed, C, b"\x7fqr");
        assert_eq!(out, b"\x08 \x08q\x07");
        let (line, _) = finish(&mut ed, C);
        assert!(line.truncated);
        assert_eq!(line.text.len(), MAX_LINE_BYTES);
        assert!(line.text.ends_with('q'));
        // The flag does not leak into the next line.
        feed(&mut ed, C, b"ok");
        assert!(!finish(&mut ed, C).0.truncated);
    }

    #[test]
    fn line_limit_in_line_mode_is_silent() {
        let mut ed = LineEditor::new();
        let (out, _) = feed(&mut ed, L, &[b'x'; MAX_LINE_BYTES + 10]);
        assert!(out.is_empty());
        let (line, out) = finish(&mut ed, L);
        assert!(out.is_empty());
        assert!(line.truncated);
        assert_eq!(line.text.len(), MAX_LINE_BYTES);
    }

    #[test]
    fn multibyte_character_crossing_the_limit_is_refused_whole() {
        let mut ed = LineEditor::new();
        feed(&mut ed, C, &[b'x'; MAX_LINE_BYTES - 2]);
        let (out, _) = feed(&mut ed, C, "世".as_bytes());
        assert_eq!(out, b"\x07");
        assert_eq!(ed.contents().len(), MAX_LINE_BYTES - 2);
        // A 2-byte character would fit, but it came after a refused one: kept text has no holes.
        let (out, _) = feed(&mut ed, C, "é".as_bytes());
        assert!(out.is_empty(), "one bell per run");
        assert_eq!(ed.contents().len(), MAX_LINE_BYTES - 2);
        // After an edit it fits.
        feed(&mut ed, C, b"\x7f");
        let (out, _) = feed(&mut ed, C, "éé".as_bytes());
        assert_eq!(out, "é\x07".as_bytes(), "the first fits, the second rings");
        assert_eq!(ed.contents().len(), MAX_LINE_BYTES - 1);
        let (line, _) = finish(&mut ed, C);
        assert!(line.truncated);
        assert_eq!(line.invalid, 0);
    }

    /// Regression: in line mode a character that did not fit was dropped, but a shorter one after it
    /// was kept, so the line lost a piece from its middle while the user was told "only the first
    /// 512 bytes were kept".
    #[test]
    fn an_over_long_line_keeps_exactly_its_first_bytes() {
        for mode in [L, C] {
            let mut ed = LineEditor::new();
            let mut typed = vec![b'x'; MAX_LINE_BYTES - 1];
            typed.extend_from_slice("世a".as_bytes());
            feed(&mut ed, mode, &typed);
            let (line, _) = finish(&mut ed, mode);
            assert!(line.truncated);
            assert_eq!(line.text, "x".repeat(MAX_LINE_BYTES - 1));
            assert!(typed.starts_with(line.text.as_bytes()));
        }
    }

    #[test]
    fn ctrl_u_and_ctrl_c_clear_the_line() {
        for key in [0x15u8, 0x03] {
            let mut ed = LineEditor::new();
            feed(&mut ed, C, "ab世".as_bytes());
            let (out, r) = feed(&mut ed, C, &[key]);
            assert_eq!(r, None);
            assert_eq!(out, b"\x08\x08\x08\x08    \x08\x08\x08\x08");
            assert!(ed.is_empty());
            assert_eq!(ed.buf.capacity(), 0);
            let (out, _) = feed(&mut ed, C, &[key]);
            assert!(out.is_empty());
        }
    }

    #[test]
    fn ctrl_w_deletes_the_previous_word() {
        let mut ed = LineEditor::new();
        feed(&mut ed, C, b"say hello  ");
        let (out, _) = feed(&mut ed, C, b"\x17");
        assert_eq!(ed.contents(), "say ");
        assert_eq!(out, [&[BS; 7][..], b"       ", &[BS; 7]].concat());
        feed(&mut ed, C, b"\x17");
        assert!(ed.is_empty());
        let (out, _) = feed(&mut ed, C, b"\x17");
        assert!(out.is_empty());
    }

    #[test]
    fn ctrl_d_ends_input_only_on_an_empty_line() {
        let mut ed = LineEditor::new();
        let (_, r) = feed(&mut ed, C, b"x\x04");
        assert_eq!(r, None);
        assert_eq!(ed.contents(), "x");
        let (_, r) = feed(&mut ed, C, b"\x7f\x04");
        assert_eq!(r, Some(EditResult::EndOfInput));
        let (_, r) = feed(&mut ed, L, b"\x04");
        assert_eq!(r, Some(EditResult::EndOfInput));
    }

    #[test]
    fn hidden_mode_echoes_nothing_but_edits() {
        let mut ed = LineEditor::new();
        ed.set_hidden(true);
        let (out, _) = feed(&mut ed, C, "pa世ss\x7fX\x1b[A".as_bytes());
        assert!(out.is_empty());
        feed(&mut ed, C, &[b'z'; MAX_LINE_BYTES]);
        let (out, _) = feed(&mut ed, C, b"z");
        assert!(out.is_empty(), "no bell in hidden mode");
        let _ = ed.input(C, 0x15, &mut Vec::new());
        feed(&mut ed, C, "pa世ss\x7fX".as_bytes());
        let (line, out) = finish(&mut ed, C);
        assert_eq!(out, b"\r\n");
        assert_eq!(line.text, "pa世sX");
        assert!(!line.truncated, "^U forgot the overflow");
        assert!(ed.is_hidden(), "hidden stays until changed");
    }

    #[test]
    fn line_mode_echoes_nothing_but_edits() {
        let mut ed = LineEditor::new();
        let (out, _) = feed(&mut ed, L, "say hi世\x08!\x1b[C".as_bytes());
        assert!(out.is_empty());
        let (line, out) = finish(&mut ed, L);
        assert!(out.is_empty());
        assert_eq!(line.text, "say hi!");
    }

    #[test]
    fn idle_editor_holds_no_heap_after_long_line() {
        let mut ed = LineEditor::new();
        feed(&mut ed, C, &[b'a'; 400]);
        assert!(ed.buf.capacity() >= 400);
        let (line, _) = finish(&mut ed, C);
        assert_eq!(line.text.len(), 400);
        assert_eq!(ed.buf.capacity(), 0);
        // Erasing a long line by hand frees it too.
        feed(&mut ed, C, &[b'a'; 300]);
        feed(&mut ed, C, &[DEL; 300]);
        assert!(ed.is_empty());
        assert_eq!(ed.buf.capacity(), 0);
        assert!(std::mem::size_of::<LineEditor>() <= 48);
    }

    const PROMPT: &str = "alice #(no channel)> ";

    #[test]
    fn interrupt_with_empty_input() {
        let ed = LineEditor::new();
        let mut out = Vec::new();
        ed.interrupt(C, PROMPT, 80, ["bob: hi"], &mut out);
        assert_eq!(out, b"\r\x1b[Jbob: hi\r\nalice #(no channel)> ");
    }

    #[test]
    fn interrupt_with_some_input() {
        let mut ed = LineEditor::new();
        feed(&mut ed, C, "héllo".as_bytes());
        let mut out = Vec::new();
        ed.interrupt(C, PROMPT, 0, ["bob: hi"], &mut out);
        assert_eq!(
            out,
            "\r\x1b[Jbob: hi\r\nalice #(no channel)> héllo".as_bytes()
        );
    }

    #[test]
    fn interrupt_with_input_wrapped_over_two_rows() {
        let mut ed = LineEditor::new();
        // 5 + 20 = 25 columns at width 20: cursor on row 1.
        feed(&mut ed, C, b"abcdefghijklmnopqrst");
        let mut out = Vec::new();
        ed.interrupt(C, "bob> ", 20, ["x: y"], &mut out);
        assert_eq!(
            out,
            b"\r\x1b[1A\x1b[Jx: y\r\nbob> abcdefghijklmnopqrst".to_vec()
        );
        // Exactly 20 columns: the wrap is deferred, still row 0.
        let mut ed = LineEditor::new();
        feed(&mut ed, C, b"abcdefghijklmno");
        let mut out = Vec::new();
        ed.interrupt(C, "bob> ", 20, ["x: y"], &mut out);
        assert!(out.starts_with(b"\r\x1b[J"));
        // A wide character that does not fit in the last column moves to the next row.
        let mut ed = LineEditor::new();
        feed(&mut ed, C, "abcdefghijklmn世".as_bytes());
        let mut out = Vec::new();
        ed.interrupt(C, "bob> ", 20, [], &mut out);
        assert_eq!(out, "\r\x1b[1A\x1b[Jbob> abcdefghijklmn世".as_bytes());
        // Many rows.
        let mut ed = LineEditor::new();
        feed(&mut ed, C, &[b'z'; 100]);
        let mut out = Vec::new();
        ed.interrupt(C, PROMPT, 20, [], &mut out);
        assert!(out.starts_with(b"\r\x1b[6A\x1b[J"), "121 columns = 7 rows");
    }

    #[test]
    fn interrupt_in_hidden_mode_redraws_prompt_only() {
        let mut ed = LineEditor::new();
        ed.set_hidden(true);
        feed(&mut ed, C, &[b's'; 30]);
        let mut out = Vec::new();
        ed.interrupt(C, "Password: ", 20, ["notice"], &mut out);
        assert_eq!(out, b"\r\x1b[Jnotice\r\nPassword: ".to_vec());
    }

    #[test]
    fn interrupt_with_several_lines_at_once() {
        let mut ed = LineEditor::new();
        feed(&mut ed, C, b"typing");
        let mut out = Vec::new();
        let queued = ["a: 1".to_string(), "b: 2".to_string(), "c: 3".to_string()];
        ed.interrupt(C, "> ", 80, queued.iter().map(String::as_str), &mut out);
        assert_eq!(out, b"\r\x1b[Ja: 1\r\nb: 2\r\nc: 3\r\n> typing".to_vec());
    }

    #[test]
    fn interrupt_in_line_mode_writes_only_lines() {
        let mut ed = LineEditor::new();
        feed(&mut ed, L, b"half");
        let mut out = Vec::new();
        ed.interrupt(L, PROMPT, 80, ["a: 1", "b: 2"], &mut out);
        assert_eq!(out, b"a: 1\r\nb: 2\r\n".to_vec());
    }

    #[test]
    fn render_prompt_modes() {
        let mut ed = LineEditor::new();
        feed(&mut ed, C, b"abc");
        let mut out = Vec::new();
        ed.render_prompt(C, "> ", &mut out);
        assert_eq!(out, b"> abc");
        out.clear();
        ed.render_prompt(L, "> ", &mut out);
        assert_eq!(out, b"> ");
        out.clear();
        ed.set_hidden(true);
        ed.render_prompt(C, "> ", &mut out);
        assert_eq!(out, b"> ");
    }

    #[test]
    fn push_decimal_writes_numbers() {
        for n in [0usize, 7, 10, 12345, usize::MAX] {
            let mut out = Vec::new();
            push_decimal(&mut out, n);
            assert_eq!(out, n.to_string().as_bytes());
        }
    }

    /// Small deterministic PRNG (xorshift64*) so the randomized tests need no dependency.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }

    #[test]
    fn random_bytes_never_break_invariants() {
        const INTERESTING: &[u8] = &[
            0x00, 0x03, 0x04, 0x08, 0x09, 0x15, 0x17, 0x1b, 0x7f, b'[', b'O', b'A', b'1', b';',
            b' ', 0x80, 0x8f, 0x9b, 0xbf, 0xc2, 0xc0, 0xe0, 0xe4, 0xed, 0xef, 0xf0, 0xf4, 0xf5,
            0xff,
        ];
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        for round in 0..300 {
            let mode = if round % 2 == 0 { C } else { L };
            let mut ed = LineEditor::new();
            ed.set_hidden(round % 7 == 0);
            for _ in 0..3000 {
                let mut out = Vec::new();
                let r = rng.below(100);
                if r == 0 {
                    let result = ed.end_of_line(mode, &mut out);
                    let EditResult::Finished(line) = result else {
                        panic!("end_of_line must finish");
                    };
                    assert!(line.text.len() <= MAX_LINE_BYTES);
                    assert!(!line.text.chars().any(char::is_control));
                    assert_eq!(ed.buf.capacity(), 0);
                } else {
                    let byte = match r {
                        1..=40 => INTERESTING[rng.below(INTERESTING.len() as u64) as usize],
                        41..=60 => b'a' + rng.below(26) as u8,
                        _ => rng.below(256) as u8,
                    };
                    let _ = ed.input(mode, byte, &mut out);
                }
                let s = ed.contents();
                assert!(s.len() <= MAX_LINE_BYTES);
                assert!(!s.chars().any(char::is_control), "{s:?}");
                if ed.is_empty() {
                    assert_eq!(ed.buf.capacity(), 0);
                }
                if mode == L || ed.is_hidden() {
                    assert!(out.is_empty() || out == b"\r\n");
                }
                assert!(std::str::from_utf8(&out).is_ok(), "echo is valid UTF-8");
                assert!(!out.contains(&0xff));
                let mut redraw = Vec::new();
                ed.interrupt(mode, "p> ", (round % 90) as u16, ["m"], &mut redraw);
                assert!(std::str::from_utf8(&redraw).is_ok());
            }
        }
    }

    #[test]
    fn random_text_decodes_like_the_standard_library() {
        // Alphabet without controls, ESC or 0xC2 (no C1 controls can be formed), so the editor's
        // text must equal from_utf8_lossy's minus the replacement characters it inserted.
        let mut rng = Rng(42);
        for _ in 0..20_000 {
            let len = rng.below(60) as usize;
            let bytes: Vec<u8> = (0..len)
                .map(|_| loop {
                    let b = rng.below(256) as u8;
                    let b = if rng.below(3) == 0 { b'a' + b % 26 } else { b };
                    if (0x20..0x7f).contains(&b) || (b >= 0x80 && b != 0xc2) {
                        break b;
                    }
                })
                .collect();
            let mut ed = LineEditor::new();
            feed(&mut ed, L, &bytes);
            let (line, _) = finish(&mut ed, L);
            let lossy = String::from_utf8_lossy(&bytes);
            let want: String = lossy.chars().filter(|&c| c != '\u{fffd}').collect();
            let got: String = line.text.chars().filter(|&c| c != '\u{fffd}').collect();
            assert_eq!(got, want, "{bytes:x?}");
            let replaced =
                lossy.matches('\u{fffd}').count() - line.text.matches('\u{fffd}').count();
            assert_eq!(line.invalid as usize, replaced, "{bytes:x?}");
        }
    }
}

#[cfg(test)]
mod control_string_tests {
    use super::*;

    fn typed(bytes: &[u8]) -> String {
        let mut ed = LineEditor::new();
        let mut out = Vec::new();
        for &b in bytes {
            let _ = ed.input(Mode::Line, b, &mut out);
        }
        match ed.end_of_line(Mode::Line, &mut out) {
            EditResult::Finished(line) => line.text,
            _ => unreachable!(),
        }
    }

    #[test]
    fn control_strings_leave_no_payload() {
        assert_eq!(typed(b"a\x1b]0;title\x07b"), "ab");
        assert_eq!(typed(b"a\x1b]8;;http://x\x1b\\b"), "ab");
        assert_eq!(typed(b"a\x1bPq#0;2\x1b\\b"), "ab");
        assert_eq!(typed(b"a\x1b_apc\x07b"), "ab");
        assert_eq!(typed("a\u{9d}0;t\u{9c}b".as_bytes()), "ab");
        assert_eq!(typed("a\x1b]é\x07b".as_bytes()), "ab");
    }

    #[test]
    fn an_unterminated_control_string_ends_with_the_line() {
        let mut ed = LineEditor::new();
        let mut out = Vec::new();
        for &b in b"x\x1b]0;never ends" {
            let _ = ed.input(Mode::Line, b, &mut out);
        }
        let _ = ed.end_of_line(Mode::Line, &mut out);
        for &b in b"next" {
            let _ = ed.input(Mode::Line, b, &mut out);
        }
        match ed.end_of_line(Mode::Line, &mut out) {
            EditResult::Finished(line) => assert_eq!(line.text, "next"),
            _ => unreachable!(),
        }
    }
}
