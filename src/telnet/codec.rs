//! The receive side: one state machine that turns telnet bytes into [`Event`]s.
//!
//! The parser looks at one byte at a time and remembers only a `State`, so input may be split
//! at any byte boundary: a CR at the end of one read and its LF at the start of the next, or a
//! subnegotiation spread over several reads, parse exactly as if they had arrived together.
//! Runs of plain text (and of subnegotiation data) take a fast path that skips the per-byte
//! `match`, which keeps bulk pastes cheap.
//!
//! # End of line
//!
//! CR LF, CR NUL, bare CR and bare LF each yield exactly one [`Event::EndOfLine`], emitted as
//! soon as the CR or LF is seen: inetutils telnet in character mode sends CR NUL for Enter, and
//! the user must get an answer without typing another key. After a CR the parser remembers, in
//! `State::Cr`, to swallow one following LF or NUL, even if it arrives in the next call; any
//! other byte is processed normally.
//!
//! Telnet commands between CR and LF are not looked through: `CR IAC NOP LF` yields two
//! ends of line (as does `CR IAC SB ... IAC SE LF`). No real client sends that, and handling it
//! would need a second "after CR" flag that every command would have to carry along.
//!
//! # Subnegotiation
//!
//! `IAC SB <opt> ... IAC SE` data is collected, with `IAC IAC` unescaped, into a buffer that is
//! allocated when the first data byte arrives, grows to at most [`MAX_SB_LEN`] bytes and is
//! freed when the subnegotiation ends. Bytes past the cap are dropped in O(1) each and the
//! subnegotiation is reported as [`SbIgnored::TooLong`], so an `IAC SB` that is never closed
//! costs at most `MAX_SB_LEN` bytes of memory and linear time. NAWS and TTYPE IS are decoded
//! whatever their negotiation state (a client that sends them wants us to know); any other
//! option is reported as [`SbIgnored::Unsupported`]. `IAC` followed by anything other than `SE`
//! or `IAC` inside a subnegotiation ends it as [`SbIgnored::Malformed`], and the `IAC <byte>`
//! is then parsed as an ordinary command, as libtelnet does.

use super::consts::{cmd, opt, CR, LF, NUL, TTYPE_IS};
use super::options::{Negotiator, Policy, Side, DEFAULT_POLICY};

/// Most subnegotiation data bytes kept per `IAC SB ... IAC SE`; the rest are dropped.
///
/// Our decoded subnegotiations need 4 (NAWS) and 65 (TTYPE IS) bytes; 512 leaves room for
/// verbose clients while bounding memory per connection.
pub const MAX_SB_LEN: usize = 512;

/// Longest terminal type name reported in [`Event::TerminalType`], in characters.
pub const MAX_TTYPE_LEN: usize = 64;

/// Something the peer said, in the order it was said.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// One data byte, passed through undecoded (the line editor decodes UTF-8 and strips
    /// control characters). `IAC IAC` arrives here as 0xFF.
    Data(u8),
    /// The user ended a line with CR LF, CR NUL, bare CR or bare LF.
    EndOfLine,
    /// `IAC <byte>` for any byte that is not IAC, SB or a negotiation verb: NOP, GA, AYT, IP,
    /// BRK, DM, EOR, EC, EL, a stray SE, and also invalid bytes (the session survives them).
    Command(u8),
    /// An option we perform is now on: the peer agreed (DO) to our WILL, or asked for it and
    /// the policy accepted.
    LocalEnabled(u8),
    /// An option we perform is now off: the peer asked us to stop, confirmed our WONT, or
    /// refused our WILL.
    LocalDisabled(u8),
    /// An option the peer performs is now on (it sent WILL and we agreed, or it agreed to DO).
    /// For TTYPE this is the moment to send [`send_ttype_request`](super::send_ttype_request).
    RemoteEnabled(u8),
    /// An option the peer performs is now off: it stopped, confirmed our DONT, or refused
    /// our DO.
    RemoteDisabled(u8),
    /// NAWS: the client's window size in characters; 0 means unknown (inetutils telnet
    /// sometimes sends 0x0).
    WindowSize {
        /// Columns, 0 if unknown.
        width: u16,
        /// Rows, 0 if unknown.
        height: u16,
    },
    /// TTYPE IS: the client's terminal type, e.g. `XTERM-256COLOR` or `MUDLET`. Bytes outside
    /// printable ASCII become `?`; at most [`MAX_TTYPE_LEN`] characters are kept.
    TerminalType(String),
    /// A subnegotiation that carried no event: unsupported option, too long, or malformed.
    IgnoredSubnegotiation {
        /// The option the subnegotiation was about.
        opt: u8,
        /// Why it was ignored.
        reason: SbIgnored,
    },
}

/// Why a subnegotiation produced no decoded event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SbIgnored {
    /// We do not decode subnegotiations for this option.
    Unsupported,
    /// It carried more than [`MAX_SB_LEN`] data bytes.
    TooLong,
    /// Wrong length or verb for its option, or interrupted by `IAC` + a byte other than SE.
    Malformed,
}

/// Where the parser stands between two bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Plain data.
    Data,
    /// Just emitted an end of line for a CR: swallow one LF or NUL.
    Cr,
    /// Saw IAC.
    Iac,
    /// Saw IAC WILL; next byte is the option.
    Will,
    /// Saw IAC WONT; next byte is the option.
    Wont,
    /// Saw IAC DO; next byte is the option.
    Do,
    /// Saw IAC DONT; next byte is the option.
    Dont,
    /// Saw IAC SB; next byte is the option.
    Sb,
    /// Inside subnegotiation data.
    SbData,
    /// Saw IAC inside subnegotiation data.
    SbDataIac,
}

/// A sans-IO telnet endpoint for one connection: feed it received bytes with
/// [`receive`](Telnet::receive), send what it appends to `out`.
///
/// It is small (about 48 bytes, no heap memory outside a subnegotiation) because a server keeps
/// one per connection.
#[derive(Clone, Debug)]
pub struct Telnet {
    /// Parser position.
    state: State,
    /// Option of the subnegotiation being collected.
    sb_opt: u8,
    /// The subnegotiation being collected went past [`MAX_SB_LEN`].
    sb_overflow: bool,
    /// RFC 1143 state of each option the policy tracks.
    neg: Negotiator,
    /// Subnegotiation data; empty and unallocated outside a subnegotiation.
    sb_buf: Vec<u8>,
}

impl Default for Telnet {
    fn default() -> Self {
        Telnet::new()
    }
}

impl Telnet {
    /// A new connection using [`DEFAULT_POLICY`], every option off. Sends nothing: the session
    /// decides what to offer with [`request_local`](Self::request_local) and
    /// [`request_remote`](Self::request_remote).
    pub fn new() -> Self {
        Telnet::with_policy(&DEFAULT_POLICY)
    }

    /// A new connection that accepts options according to `policy`.
    pub fn with_policy(policy: &'static Policy) -> Self {
        Telnet {
            state: State::Data,
            sb_opt: 0,
            sb_overflow: false,
            neg: Negotiator::new(policy),
            sb_buf: Vec::new(),
        }
    }

    /// Parses `input`, appending what it means to `events` and the negotiation replies it calls
    /// for to `out` (send those to the peer). Both vectors are only appended to, so the caller
    /// can reuse them across calls. Never panics, whatever the bytes.
    pub fn receive(&mut self, input: &[u8], events: &mut Vec<Event>, out: &mut Vec<u8>) {
        let mut rest = input;
        while let Some((&byte, tail)) = rest.split_first() {
            // Fast paths for runs of bytes that cannot change the state.
            let run = match self.state {
                State::Data => rest.iter().position(|&b| matches!(b, cmd::IAC | CR | LF)),
                State::SbData => rest.iter().position(|&b| b == cmd::IAC),
                _ => Some(0),
            }
            .unwrap_or(rest.len());
            if run > 0 {
                let (plain, after) = rest.split_at(run);
                if self.state == State::Data {
                    events.extend(plain.iter().map(|&b| Event::Data(b)));
                } else {
                    self.sb_push(plain);
                }
                rest = after;
                continue;
            }
            self.step(byte, events, out);
            rest = tail;
        }
    }

    /// The state machine proper: consumes one byte.
    fn step(&mut self, byte: u8, events: &mut Vec<Event>, out: &mut Vec<u8>) {
        match self.state {
            State::Data => self.data(byte, events),
            State::Cr => {
                self.state = State::Data;
                if byte != LF && byte != NUL {
                    self.data(byte, events);
                }
            }
            State::Iac => self.command(byte, events),
            State::Will => self.negotiate(Side::Remote, true, byte, events, out),
            State::Wont => self.negotiate(Side::Remote, false, byte, events, out),
            State::Do => self.negotiate(Side::Local, true, byte, events, out),
            State::Dont => self.negotiate(Side::Local, false, byte, events, out),
            State::Sb => {
                self.sb_opt = byte;
                self.sb_overflow = false;
                self.sb_buf.clear();
                self.state = State::SbData;
            }
            State::SbData => {
                if byte == cmd::IAC {
                    self.state = State::SbDataIac;
                } else {
                    self.sb_push(&[byte]);
                }
            }
            State::SbDataIac => match byte {
                cmd::SE => {
                    self.state = State::Data;
                    self.finish_sb(None, events);
                }
                cmd::IAC => {
                    self.state = State::SbData;
                    self.sb_push(&[cmd::IAC]);
                }
                _ => {
                    self.finish_sb(Some(SbIgnored::Malformed), events);
                    self.command(byte, events);
                }
            },
        }
    }

    /// A byte in the data stream.
    fn data(&mut self, byte: u8, events: &mut Vec<Event>) {
        match byte {
            CR => {
                events.push(Event::EndOfLine);
                self.state = State::Cr;
            }
            LF => events.push(Event::EndOfLine),
            cmd::IAC => self.state = State::Iac,
            _ => events.push(Event::Data(byte)),
        }
    }

    /// The byte after an IAC.
    fn command(&mut self, byte: u8, events: &mut Vec<Event>) {
        self.state = match byte {
            cmd::WILL => State::Will,
            cmd::WONT => State::Wont,
            cmd::DO => State::Do,
            cmd::DONT => State::Dont,
            cmd::SB => State::Sb,
            cmd::IAC => {
                events.push(Event::Data(cmd::IAC));
                State::Data
            }
            _ => {
                events.push(Event::Command(byte));
                State::Data
            }
        };
    }

    /// The option byte after WILL/WONT/DO/DONT.
    fn negotiate(
        &mut self,
        side: Side,
        positive: bool,
        opt: u8,
        events: &mut Vec<Event>,
        out: &mut Vec<u8>,
    ) {
        self.state = State::Data;
        self.neg.received(side, positive, opt, events, out);
    }

    /// Appends subnegotiation data, dropping what does not fit under [`MAX_SB_LEN`].
    fn sb_push(&mut self, bytes: &[u8]) {
        let len = self.sb_buf.len();
        let take = bytes.len().min(MAX_SB_LEN - len);
        if take < bytes.len() {
            self.sb_overflow = true;
        }
        if take == 0 {
            return;
        }
        let needed = len + take;
        if needed > self.sb_buf.capacity() {
            // Grow by doubling, but never past the cap (plain `Vec` growth could reach 2x).
            let target = (self.sb_buf.capacity() * 2)
                .max(needed)
                .clamp(16, MAX_SB_LEN);
            self.sb_buf.reserve_exact(target - len);
        }
        self.sb_buf.extend_from_slice(&bytes[..take]);
    }

    /// Ends the current subnegotiation, reporting it and freeing its buffer.
    fn finish_sb(&mut self, error: Option<SbIgnored>, events: &mut Vec<Event>) {
        let data = std::mem::take(&mut self.sb_buf);
        let opt = self.sb_opt;
        let ignored = |reason| Event::IgnoredSubnegotiation { opt, reason };
        let event = if self.sb_overflow {
            ignored(SbIgnored::TooLong)
        } else if let Some(reason) = error {
            ignored(reason)
        } else {
            match (opt, data.as_slice()) {
                (opt::NAWS, &[w1, w0, h1, h0]) => Event::WindowSize {
                    width: u16::from_be_bytes([w1, w0]),
                    height: u16::from_be_bytes([h1, h0]),
                },
                (opt::TTYPE, [TTYPE_IS, name @ ..]) => Event::TerminalType(
                    name.iter()
                        .take(MAX_TTYPE_LEN)
                        .map(|&b| {
                            if (0x20..0x7f).contains(&b) {
                                char::from(b)
                            } else {
                                '?'
                            }
                        })
                        .collect(),
                ),
                (opt::NAWS | opt::TTYPE, _) => ignored(SbIgnored::Malformed),
                _ => ignored(SbIgnored::Unsupported),
            }
        };
        self.sb_overflow = false;
        events.push(event);
    }

    /// Asks to turn an option we perform on (send WILL) or off (send WONT), following RFC 1143:
    /// nothing is sent if the option is already in, or on its way to, the wanted state, and a
    /// change of mind during a negotiation is queued until the peer answers. Used e.g. to send
    /// WILL ECHO only around a password prompt, then WONT ECHO.
    ///
    /// Returns `false`, sending nothing, if asked to enable an option the policy does not allow
    /// us to perform.
    pub fn request_local(&mut self, opt: u8, enable: bool, out: &mut Vec<u8>) -> bool {
        self.neg.request(Side::Local, opt, enable, out)
    }

    /// Asks the peer to turn an option on (send DO) or off (send DONT); otherwise as
    /// [`request_local`](Self::request_local). DO LINEMODE is never sent.
    pub fn request_remote(&mut self, opt: u8, enable: bool, out: &mut Vec<u8>) -> bool {
        self.neg.request(Side::Remote, opt, enable, out)
    }

    /// Like [`request_local`](Self::request_local), for a peer that may never have acknowledged
    /// our last WONT for `opt` (many MUD clients do not answer WONT ECHO): that WONT is taken as
    /// answered, so a WILL goes out now instead of waiting behind it.
    pub fn request_local_now(&mut self, opt: u8, enable: bool, out: &mut Vec<u8>) -> bool {
        self.neg.settle_unanswered_disable(Side::Local, opt);
        self.neg.request(Side::Local, opt, enable, out)
    }

    /// Whether we perform `opt` now. An option we asked to disable counts as off at once.
    pub fn is_local_enabled(&self, opt: u8) -> bool {
        self.neg.is_enabled(Side::Local, opt)
    }

    /// Whether the peer performs `opt` now. An option we asked it to disable counts as off at
    /// once.
    pub fn is_remote_enabled(&self, opt: u8) -> bool {
        self.neg.is_enabled(Side::Remote, opt)
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::{check_golden, transcript, unescape};
    use super::*;

    /// xorshift64*: a tiny deterministic PRNG, so the randomized tests need no crates.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }

        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    /// Checks the memory bounds that must hold between any two calls.
    fn check_bounds(t: &Telnet) {
        assert!(t.sb_buf.len() <= MAX_SB_LEN);
        assert!(t.sb_buf.capacity() <= MAX_SB_LEN);
        if !matches!(t.state, State::SbData | State::SbDataIac) {
            assert_eq!(
                t.sb_buf.capacity(),
                0,
                "SB buffer not freed in {:?}",
                t.state
            );
        }
    }

    fn feed(input: &[u8]) -> (Vec<Event>, Vec<u8>) {
        let mut telnet = Telnet::new();
        let (mut events, mut out) = (Vec::new(), Vec::new());
        telnet.receive(input, &mut events, &mut out);
        (events, out)
    }

    #[test]
    fn golden_transcripts() {
        let cases = check_golden(include_str!("golden/transcripts.txt"));
        assert!(cases >= 60, "only {cases} golden cases found");
    }

    #[test]
    fn connection_state_is_small() {
        assert!(
            std::mem::size_of::<Telnet>() <= 48,
            "{}",
            std::mem::size_of::<Telnet>()
        );
    }

    #[test]
    fn sb_buffer_is_allocated_lazily_and_freed() {
        let mut t = Telnet::new();
        let (mut events, mut out) = (Vec::new(), Vec::new());
        assert_eq!(t.sb_buf.capacity(), 0);
        t.receive(&unescape("%FF%FA%1F%00%50"), &mut events, &mut out);
        assert!(t.sb_buf.capacity() > 0);
        t.receive(&unescape("%00%18%FF%F0"), &mut events, &mut out);
        assert_eq!(t.sb_buf.capacity(), 0);
        assert_eq!(
            events,
            [Event::WindowSize {
                width: 80,
                height: 24
            }]
        );
    }

    #[test]
    fn unterminated_sb_stays_bounded_and_linear() {
        // 16 MiB of subnegotiation data that never ends, in reads of 4 KiB: memory must stay at
        // the cap and each read must cost the same (a quadratic parser would take minutes).
        let mut t = Telnet::new();
        let (mut events, mut out) = (Vec::new(), Vec::new());
        t.receive(&unescape("%FF%FA%18%00"), &mut events, &mut out);
        let chunk: Vec<u8> = (0..4096u32).map(|i| (i % 251) as u8 + 1).collect();
        for _ in 0..4096 {
            t.receive(&chunk, &mut events, &mut out);
            check_bounds(&t);
        }
        assert!(events.is_empty() && out.is_empty());
        t.receive(&unescape("%FF%F0ok"), &mut events, &mut out);
        assert_eq!(
            transcript(&events),
            ["sb 18 too-long".to_string(), "data ok".to_string()]
        );
        check_bounds(&t);
    }

    #[test]
    fn accepts_without_prior_negotiation() {
        // Auto-login clients may send NAWS or text before negotiation finishes.
        let (events, out) = feed(&unescape("name%0D%0A%FF%FA%1F%00%50%00%18%FF%F0pw%0D%0A"));
        assert_eq!(
            transcript(&events),
            ["data name", "eol", "naws 80x24", "data pw", "eol"]
        );
        assert!(out.is_empty());
    }

    /// A byte stream rich in telnet syntax: commands, negotiations, line ends, subnegotiations
    /// (some short, some far over the cap), and plain bytes.
    fn random_stream(rng: &mut Rng, len: usize) -> Vec<u8> {
        const SPECIAL: &[u8] = &[
            cmd::IAC,
            cmd::IAC,
            cmd::IAC,
            cmd::SB,
            cmd::SE,
            cmd::SE,
            cmd::WILL,
            cmd::WONT,
            cmd::DO,
            cmd::DONT,
            cmd::NOP,
            CR,
            LF,
            NUL,
            opt::ECHO,
            opt::SGA,
            opt::TTYPE,
            opt::EOR,
            opt::NAWS,
            opt::LINEMODE,
            TTYPE_IS,
            b'a',
        ];
        let mut s = Vec::with_capacity(len + 2048);
        while s.len() < len {
            match rng.below(100) {
                0..=39 => s.push(rng.next() as u8),
                40..=94 => s.push(SPECIAL[rng.below(SPECIAL.len())]),
                95..=97 => {
                    // A well-formed subnegotiation for NAWS or TTYPE, data escaped.
                    let opt = if rng.below(2) == 0 {
                        opt::NAWS
                    } else {
                        opt::TTYPE
                    };
                    s.extend_from_slice(&[cmd::IAC, cmd::SB, opt]);
                    for _ in 0..rng.below(8) {
                        let b = rng.next() as u8;
                        s.push(b);
                        if b == cmd::IAC {
                            s.push(cmd::IAC);
                        }
                    }
                    s.extend_from_slice(&[cmd::IAC, cmd::SE]);
                }
                _ => {
                    // A long subnegotiation, possibly never closed.
                    s.extend_from_slice(&[cmd::IAC, cmd::SB, rng.next() as u8]);
                    let n = rng.below(2000);
                    s.extend((0..n).map(|_| (rng.next() as u8).max(1) & 0xFE));
                    if rng.below(4) != 0 {
                        s.extend_from_slice(&[cmd::IAC, cmd::SE]);
                    }
                }
            }
        }
        s
    }

    #[test]
    fn random_streams_split_anywhere_parse_identically() {
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        let mut total = 0;
        while total < 6 << 20 {
            let len = 1 + rng.below(64 << 10);
            let stream = random_stream(&mut rng, len);
            total += stream.len();
            let (whole_events, whole_out) = feed(&stream);
            for round in 0..2 {
                let mut t = Telnet::new();
                let (mut events, mut out) = (Vec::new(), Vec::new());
                let mut rest = stream.as_slice();
                while !rest.is_empty() {
                    // Mostly tiny pieces (every boundary gets hit), sometimes large ones.
                    let max = if round == 0 { 4 } else { 1 + rng.below(3000) };
                    let n = (1 + rng.below(max)).min(rest.len());
                    let (piece, tail) = rest.split_at(n);
                    t.receive(piece, &mut events, &mut out);
                    check_bounds(&t);
                    rest = tail;
                }
                assert_eq!(events, whole_events, "events differ when split");
                assert_eq!(out, whole_out, "replies differ when split");
            }
        }
    }

    #[test]
    fn every_two_byte_prefix_is_harmless() {
        // Every `IAC a b` (each state, then every next byte), closed by `IAC SE`: nothing
        // panics, and the text that follows always gets through.
        for a in 0..=255u8 {
            for b in 0..=255u8 {
                let mut t = Telnet::new();
                let (mut events, mut out) = (Vec::new(), Vec::new());
                t.receive(
                    &[cmd::IAC, a, b, cmd::IAC, cmd::SE, b'z'],
                    &mut events,
                    &mut out,
                );
                check_bounds(&t);
                assert_eq!(
                    events.last(),
                    Some(&Event::Data(b'z')),
                    "IAC {a:02X} {b:02X}"
                );
                assert_eq!(t.state, State::Data);
            }
        }
    }
}
