//! Shared helpers for the integration tests: a real server on `127.0.0.1:0` in its own temporary
//! directory, and a blocking telnet client that can behave like a script, a terminal or a MUD client.
//!
//! Every wait here is for an event (bytes arriving, the connection closing) with a generous deadline;
//! only [`wait_until`] polls, because a stats counter has no event to wait for.

// Each test binary uses a different subset of these helpers.
#![allow(dead_code)]

pub mod nats;
pub mod shards;

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ringtalk::server::ShutdownTrigger;
use ringtalk::stats::Snapshot;
use ringtalk::{Config, Server};

/// How long any single wait may take before the test fails. Generous: the machine may be busy
/// compiling while the tests run.
pub const DEADLINE: Duration = Duration::from_secs(10);

/// Telnet command bytes the tests look for.
pub const IAC: u8 = 255;
pub const DONT: u8 = 254;
pub const DO: u8 = 253;
pub const WONT: u8 = 252;
pub const WILL: u8 = 251;
pub const SB: u8 = 250;
pub const GA: u8 = 249;
pub const SE: u8 = 240;

/// Telnet option codes the tests look for.
pub const ECHO: u8 = 1;
pub const SGA: u8 = 3;
pub const TTYPE: u8 = 24;
pub const NAWS: u8 = 31;

const TTYPE_IS: u8 = 0;
const TTYPE_SEND: u8 = 1;

/// A running server with its own data directory; shut down when dropped.
pub struct TestServer {
    server: Option<Server>,
    addr: SocketAddr,
    // Dropped after the server (fields drop in declaration order), so the database closes first.
    _dir: tempfile::TempDir,
}

/// Starts a server with `shards` shards and the test defaults.
pub fn start_server(shards: usize) -> TestServer {
    start_server_with(shards, |_| {})
}

/// Starts a server with `shards` shards after `adjust` has changed the test configuration.
pub fn start_server_with(shards: usize, adjust: impl FnOnce(&mut Config)) -> TestServer {
    let dir = tempfile::tempdir().expect("creating a temporary directory");
    TestServer::over_with(dir, shards, adjust)
}

impl TestServer {
    /// The cluster as this node's bridge sees it (`None` when not in cluster mode).
    pub fn cluster_view(&self) -> Option<ringtalk::cluster::ClusterView> {
        self.server.as_ref().expect("server running").cluster_view()
    }

    /// The address the shards accept on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Where `GET /metrics` is served, with `--metrics-listen`.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.server().metrics_addr()
    }

    /// The first address the server accepts TLS on.
    pub fn tls_addr(&self) -> SocketAddr {
        self.server().tls_addrs()[0]
    }

    /// The running server itself.
    pub fn running(&self) -> &Server {
        self.server()
    }

    /// The server's counters now.
    pub fn stats(&self) -> Snapshot {
        self.server().stats()
    }

    /// A handle that applies a reloaded configuration (see `ringtalk::live`).
    pub fn reloader(&self) -> ringtalk::live::Reloader {
        self.server().reloader()
    }

    /// A handle that stops the server from any thread.
    pub fn shutdown_trigger(&self) -> ShutdownTrigger {
        self.server().shutdown_trigger()
    }

    /// Stops the server and checks that every one of `clients` is told so and disconnected, and
    /// that the server stops within [`DEADLINE`].
    pub fn shut_down_telling(self, clients: &mut [Client]) {
        self.shutdown_trigger().trigger();
        for c in clients {
            c.expect("Server is shutting down.\r\n");
            c.expect_closed();
        }
        self.wait();
    }

    /// Waits until the server has stopped (after a trigger); fails the test if that takes longer
    /// than [`DEADLINE`].
    pub fn wait(mut self) {
        let server = self.server.take().expect("the server is running");
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        let waiter = std::thread::spawn(move || {
            server.wait();
            let _ = done_tx.send(());
        });
        done_rx
            .recv_timeout(DEADLINE)
            .expect("Server::wait did not return in time");
        waiter.join().expect("the waiting thread panicked");
    }

    /// A new client of the given kind, connected to this server.
    pub fn connect(&self, kind: Kind) -> Client {
        Client::connect(self.addr, kind)
    }

    /// Connects a raw client, waits for its greeting, and says which shard accepted it. Only valid
    /// while no other connection to this server is being made: the shard whose `accepted` count
    /// went up is this connection's. The client's [`Client::expect`] position stays at the start.
    pub fn connect_on_shard(&self) -> (Client, usize) {
        let before = self.stats();
        let mut c = self.connect(Kind::Raw);
        // A shard counts a connection before its session starts, so the greeting means it is counted.
        c.read_until("the greeting", |t| contains(t, b"Username: "));
        let after = self.stats();
        assert_eq!(after.accepted(), before.accepted() + 1, "{after:?}");
        let shard = (0..after.shards.len())
            .find(|&s| after.shards[s].accepted > before.shards[s].accepted)
            .expect("one shard accepted it");
        (c, shard)
    }

    fn server(&self) -> &Server {
        self.server.as_ref().expect("the server is running")
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(server) = self.server.take() {
            server.shutdown();
        }
    }
}

/// Polls `cond` every few milliseconds until it holds; fails the test naming `what` after
/// [`DEADLINE`]. Only for state with no event to wait for, such as stats counters.
pub fn wait_until(mut cond: impl FnMut() -> bool, what: &str) {
    let deadline = Instant::now() + DEADLINE;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The chat prompt of a logged-in user with no channel.
pub fn prompt(name: &str) -> String {
    format!("{name} #(no channel)> ")
}

/// How a client answers the server's telnet negotiation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A script or `nc`: answers nothing, so the server keeps it in line mode.
    Raw,
    /// A plain terminal like inetutils telnet: DO ECHO, DO SGA, WILL TTYPE (`XTERM-256COLOR`),
    /// WILL NAWS (80x24). The server puts it in character mode.
    Xterm,
    /// A MUD client like Mudlet: agrees to the same options, but names itself `MUDLET` (then,
    /// MTTS style, its terminal and its MTTS bits). The server puts it in line mode with IAC GA.
    Mudlet,
}

impl Kind {
    /// Whether this client lets the server perform `opt` (answers WILL with DO).
    fn accepts_server(self, opt: u8) -> bool {
        self != Kind::Raw && matches!(opt, ECHO | SGA)
    }

    /// Whether this client agrees to perform `opt` (answers DO with WILL).
    fn performs(self, opt: u8) -> bool {
        self != Kind::Raw && matches!(opt, TTYPE | NAWS)
    }

    /// The answers to successive TTYPE SEND requests; the last one repeats.
    fn terminal_types(self) -> &'static [&'static str] {
        match self {
            Kind::Raw => &[],
            Kind::Xterm => &["XTERM-256COLOR"],
            Kind::Mudlet => &["MUDLET", "ANSI-TRUECOLOR", "MTTS 2825"],
        }
    }
}

/// A telnet command the client received.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Telnet {
    /// `IAC WILL|WONT|DO|DONT <opt>`: the verb byte and the option.
    Verb(u8, u8),
    /// `IAC <byte>` for any other command, e.g. GA.
    Command(u8),
    /// `IAC SB <opt> <data> IAC SE`, with the data unescaped.
    Sub(u8, Vec<u8>),
}

/// A telnet command and where it arrived: `at` is the length of the text received before it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Seen {
    /// The command.
    pub what: Telnet,
    /// How many text bytes had arrived before it.
    pub at: usize,
}

/// Where the client's telnet parser stands between two bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Parse {
    Data,
    Iac,
    Verb(u8),
    Sb,
    SbData,
    SbIac,
}

/// A blocking test client: accumulates the text the server sends (telnet commands stripped and
/// recorded in [`Client::seen`]) and answers negotiation like its [`Kind`].
pub struct Client {
    stream: TcpStream,
    /// The client side of TLS, for a client of a TLS port (see [`Client::connect_tls`]).
    tls: Option<Box<rustls::ClientConnection>>,
    kind: Kind,
    /// False while negotiation is being ignored on purpose (see [`Client::connect_deferred`]).
    answering: bool,
    /// Negotiation received while not answering, replayed by [`Client::start_answering`].
    deferred: Vec<Telnet>,
    parse: Parse,
    sb_opt: u8,
    sb_data: Vec<u8>,
    /// Every byte received, as it came off the wire.
    raw: Vec<u8>,
    /// The text received: data bytes only, `IAC IAC` unescaped.
    text: Vec<u8>,
    /// Where the next [`Client::expect`] starts looking in `text`.
    pos: usize,
    /// Every telnet command received, in order.
    seen: Vec<Seen>,
    /// Options the server performs with our agreement (its WILL answered with our DO).
    server_on: [bool; 256],
    /// Options we perform (its DO answered with our WILL).
    client_on: [bool; 256],
    /// How many TTYPE SEND requests were answered.
    ttype_answers: usize,
    /// The server closed the connection.
    eof: bool,
}

impl Client {
    /// Connects and answers negotiation as `kind` from the start.
    pub fn connect(addr: SocketAddr, kind: Kind) -> Client {
        let mut client = Client::connect_deferred(addr, kind);
        client.answering = true;
        client
    }

    /// Connects but answers no negotiation until [`Client::start_answering`], like an auto-login
    /// client that sends its name and password before it looks at what the server said.
    pub fn connect_deferred(addr: SocketAddr, kind: Kind) -> Client {
        let stream = TcpStream::connect(addr).expect("connecting to the server");
        stream.set_nodelay(true).expect("setting TCP_NODELAY");
        Client::over(stream, kind, false)
    }

    /// Connects once the server listens: a refused connection is tried again at once, until
    /// [`DEADLINE`]. For connecting while a server starts, before it says where it listens.
    pub fn connect_once_listening(addr: SocketAddr, kind: Kind) -> Client {
        let deadline = Instant::now() + DEADLINE;
        loop {
            match TcpStream::connect(addr) {
                // Connecting to a port nobody listens on can, rarely, connect the socket to itself
                // (a TCP simultaneous open); that is no server.
                Ok(stream) if stream.local_addr().ok() != stream.peer_addr().ok() => {
                    stream.set_nodelay(true).expect("setting TCP_NODELAY");
                    return Client::over(stream, kind, true);
                }
                Ok(_) => {}
                Err(e) if e.kind() == ErrorKind::ConnectionRefused => {}
                Err(e) => panic!("connecting to {addr}: {e}"),
            }
            assert!(Instant::now() < deadline, "nothing listened on {addr}");
            std::thread::yield_now();
        }
    }

    /// Connects to a TLS port and answers negotiation as `kind` from the start; the handshake
    /// (for the name `localhost`) happens with the first read or write.
    pub fn connect_tls(addr: SocketAddr, kind: Kind, config: Arc<rustls::ClientConfig>) -> Client {
        let stream = TcpStream::connect(addr).expect("connecting to the server");
        stream.set_nodelay(true).expect("setting TCP_NODELAY");
        Client::over(stream, kind, true).with_tls(config)
    }

    /// This client, just connected (nothing read or sent yet), speaking TLS from now on.
    pub fn with_tls(mut self, config: Arc<rustls::ClientConfig>) -> Client {
        assert!(self.raw.is_empty(), "TLS starts with the connection");
        let name = rustls::pki_types::ServerName::try_from("localhost").expect("a valid name");
        let tls = rustls::ClientConnection::new(config, name).expect("a TLS client");
        self.tls = Some(Box::new(tls));
        self
    }

    /// The certificate the server showed, once the handshake is done (TLS clients only).
    pub fn peer_certificate(&self) -> Option<Vec<u8>> {
        let certs = self.tls.as_ref()?.peer_certificates()?;
        Some(certs.first()?.to_vec())
    }

    /// A client over an already connected stream.
    fn over(stream: TcpStream, kind: Kind, answering: bool) -> Client {
        Client {
            stream,
            tls: None,
            kind,
            answering,
            deferred: Vec::new(),
            parse: Parse::Data,
            sb_opt: 0,
            sb_data: Vec::new(),
            raw: Vec::new(),
            text: Vec::new(),
            pos: 0,
            seen: Vec::new(),
            server_on: [false; 256],
            client_on: [false; 256],
            ttype_answers: 0,
            eof: false,
        }
    }

    /// Answers the negotiation received so far, and from now on answers as it arrives.
    pub fn start_answering(&mut self) {
        self.answering = true;
        let mut out = Vec::new();
        for cmd in std::mem::take(&mut self.deferred) {
            self.answer(&cmd, &mut out);
        }
        self.send(&out);
    }

    /// Sends bytes exactly as given.
    pub fn send(&mut self, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        let sent = match &mut self.tls {
            Some(tls) => rustls::Stream::new(&mut **tls, &mut self.stream).write_all(bytes),
            None => self.stream.write_all(bytes),
        };
        sent.unwrap_or_else(|e| panic!("sending {bytes:?}: {e}"));
    }

    /// Sends one byte as TCP urgent data (what a telnet client's Synch does).
    pub fn send_urgent(&mut self, byte: u8) {
        use std::os::fd::AsRawFd;
        // SAFETY: one byte from a live buffer, on a socket we own.
        let sent = unsafe {
            libc::send(
                self.stream.as_raw_fd(),
                (&byte as *const u8).cast(),
                1,
                libc::MSG_OOB,
            )
        };
        assert_eq!(
            sent,
            1,
            "sending urgent data: {}",
            std::io::Error::last_os_error()
        );
    }

    /// Closes the sending half: the server sees the end of the stream after what was sent.
    pub fn shutdown_write(&mut self) {
        self.stream
            .shutdown(std::net::Shutdown::Write)
            .expect("shutting down the write half");
    }

    /// Sends `line` followed by CR LF.
    pub fn send_line(&mut self, line: &str) {
        let mut bytes = line.as_bytes().to_vec();
        bytes.extend_from_slice(b"\r\n");
        self.send(&bytes);
    }

    /// Reads until the text received after the previous match contains `needle`; returns the text
    /// from the previous match up to and including this one. Fails the test, showing the text seen,
    /// if `needle` does not arrive within [`DEADLINE`].
    pub fn expect(&mut self, needle: &str) -> String {
        self.expect_any(&[needle]).1
    }

    /// Like [`Client::expect`] for several candidates: returns the index of the one that arrives
    /// first (the earliest in the text) and the text up to the end of it.
    pub fn expect_any(&mut self, needles: &[&str]) -> (usize, String) {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let hay = &self.text[self.pos..];
            let found = needles
                .iter()
                .enumerate()
                .filter_map(|(i, n)| find(hay, n.as_bytes()).map(|at| (at, i, n.len())))
                .min();
            if let Some((at, index, len)) = found {
                let end = self.pos + at + len;
                let segment = String::from_utf8_lossy(&self.text[self.pos..end]).into_owned();
                self.pos = end;
                return (index, segment);
            }
            if !self.read_some(deadline) {
                panic!(
                    "{} waiting for {needles:?}; text after the last match: {:?}",
                    if self.eof {
                        "connection closed"
                    } else {
                        "timed out"
                    },
                    String::from_utf8_lossy(&self.text[self.pos..]),
                );
            }
        }
    }

    /// Reads until at least `expected.len()` more text bytes have arrived and asserts that they are
    /// exactly `expected` (no other bytes before them).
    pub fn expect_exact(&mut self, expected: &[u8]) {
        let deadline = Instant::now() + DEADLINE;
        while self.text.len() < self.pos + expected.len() {
            if !self.read_some(deadline) {
                panic!(
                    "waiting for exactly {:?}; got only {:?}",
                    String::from_utf8_lossy(expected),
                    String::from_utf8_lossy(&self.text[self.pos..]),
                );
            }
        }
        let got = &self.text[self.pos..self.pos + expected.len()];
        assert_eq!(
            got,
            expected,
            "expected exactly {:?}, got {:?}",
            String::from_utf8_lossy(expected),
            String::from_utf8_lossy(got),
        );
        self.pos += expected.len();
    }

    /// Reads until a telnet command matching `pred` arrives after the first `from` commands seen;
    /// returns its index in [`Client::seen`].
    pub fn expect_telnet(&mut self, from: usize, pred: impl Fn(&Telnet) -> bool) -> usize {
        let deadline = Instant::now() + DEADLINE;
        loop {
            if let Some(i) = self.seen.iter().skip(from).position(|s| pred(&s.what)) {
                return from + i;
            }
            if !self.read_some(deadline) {
                panic!(
                    "no matching telnet command arrived; commands seen: {:?}",
                    &self.seen[from.min(self.seen.len())..]
                );
            }
        }
    }

    /// Reads until the server closes the connection; returns the text that came after the last
    /// match. Fails the test if the connection is still open after [`DEADLINE`].
    pub fn expect_closed(&mut self) -> String {
        let deadline = Instant::now() + DEADLINE;
        while !self.eof {
            if !self.read_some(deadline) && !self.eof {
                panic!(
                    "connection still open; text after the last match: {:?}",
                    String::from_utf8_lossy(&self.text[self.pos..])
                );
            }
        }
        let rest = String::from_utf8_lossy(&self.text[self.pos..]).into_owned();
        self.pos = self.text.len();
        rest
    }

    /// Creates an account from the first `Username: ` prompt on, and waits for the chat prompt.
    pub fn create_account(&mut self, name: &str, password: &str) {
        self.expect("Username: ");
        self.send_line(name);
        self.expect("Create new account? (y/n) ");
        self.send_line("y");
        self.expect("Password for new account: ");
        self.send_line(password);
        self.expect("Repeat password: ");
        self.send_line(password);
        self.expect("Your new account has been created. You are logged in.\r\n");
        self.expect(&prompt(name));
    }

    /// Logs in to an existing account from the next `Username: ` prompt on, and waits for the chat
    /// prompt.
    pub fn login(&mut self, name: &str, password: &str) {
        self.expect("Username: ");
        self.send_line(name);
        self.expect("Password: ");
        self.send_line(password);
        self.expect("You are logged in. Use /help for help with commands.\r\n");
        self.expect(&prompt(name));
    }

    /// Every byte received so far, telnet commands included.
    pub fn raw(&self) -> &[u8] {
        &self.raw
    }

    /// All text received so far (telnet commands removed).
    pub fn text(&self) -> &[u8] {
        &self.text
    }

    /// The end of the last match in [`Client::text`].
    pub fn pos(&self) -> usize {
        self.pos
    }

    /// Every telnet command received so far, with where in the text it arrived.
    pub fn seen(&self) -> &[Seen] {
        &self.seen
    }

    /// Whether `IAC GA` arrived right after the text `prompt` (anywhere in what was received).
    pub fn ga_after(&self, prompt: &str) -> bool {
        self.seen.iter().any(|s| {
            s.what == Telnet::Command(GA) && self.text[..s.at].ends_with(prompt.as_bytes())
        })
    }

    /// Whether the server currently performs `opt` with this client's agreement.
    pub fn server_performs(&self, opt: u8) -> bool {
        self.server_on[usize::from(opt)]
    }

    /// Reads once (waiting at most until `deadline`) and processes what came. False on timeout or
    /// end of stream.
    fn read_some(&mut self, deadline: Instant) -> bool {
        if self.eof {
            return false;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        self.stream
            .set_read_timeout(Some(left))
            .expect("setting the read timeout");
        let mut buf = [0u8; 8192];
        let read = match &mut self.tls {
            Some(tls) => rustls::Stream::new(&mut **tls, &mut self.stream).read(&mut buf),
            None => self.stream.read(&mut buf),
        };
        match read {
            Ok(0) => {
                self.eof = true;
                false
            }
            Ok(n) => {
                self.receive(&buf[..n]);
                true
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => false,
            Err(e) if e.kind() == ErrorKind::Interrupted => true,
            // A TLS server that closes without a close_notify.
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::ConnectionReset | ErrorKind::BrokenPipe | ErrorKind::UnexpectedEof
                ) =>
            {
                self.eof = true;
                false
            }
            Err(e) => panic!("reading from the server: {e}"),
        }
    }

    /// Parses received bytes, recording text and commands, then sends any answers.
    fn receive(&mut self, bytes: &[u8]) {
        self.raw.extend_from_slice(bytes);
        let mut out = Vec::new();
        for &b in bytes {
            let cmd = match (self.parse, b) {
                (Parse::Data, IAC) => {
                    self.parse = Parse::Iac;
                    None
                }
                (Parse::Data, _) => {
                    self.text.push(b);
                    None
                }
                (Parse::Iac, IAC) => {
                    self.parse = Parse::Data;
                    self.text.push(IAC);
                    None
                }
                (Parse::Iac, WILL | WONT | DO | DONT) => {
                    self.parse = Parse::Verb(b);
                    None
                }
                (Parse::Iac, SB) => {
                    self.parse = Parse::Sb;
                    None
                }
                (Parse::Iac, _) => {
                    self.parse = Parse::Data;
                    Some(Telnet::Command(b))
                }
                (Parse::Verb(verb), _) => {
                    self.parse = Parse::Data;
                    Some(Telnet::Verb(verb, b))
                }
                (Parse::Sb, _) => {
                    self.sb_opt = b;
                    self.sb_data.clear();
                    self.parse = Parse::SbData;
                    None
                }
                (Parse::SbData, IAC) => {
                    self.parse = Parse::SbIac;
                    None
                }
                (Parse::SbData, _) => {
                    self.sb_data.push(b);
                    None
                }
                (Parse::SbIac, IAC) => {
                    self.sb_data.push(IAC);
                    self.parse = Parse::SbData;
                    None
                }
                (Parse::SbIac, _) => {
                    // SE, or anything else that ends the subnegotiation.
                    self.parse = Parse::Data;
                    Some(Telnet::Sub(self.sb_opt, std::mem::take(&mut self.sb_data)))
                }
            };
            if let Some(cmd) = cmd {
                self.seen.push(Seen {
                    what: cmd.clone(),
                    at: self.text.len(),
                });
                if self.answering {
                    self.answer(&cmd, &mut out);
                } else {
                    self.deferred.push(cmd);
                }
            }
        }
        self.send(&out);
    }

    /// Appends this client's answer to one command (RFC 1143 style: never answer a request that
    /// would not change an option's state, so no exchange can loop).
    fn answer(&mut self, cmd: &Telnet, out: &mut Vec<u8>) {
        match *cmd {
            Telnet::Verb(WILL, opt) => {
                let on = &mut self.server_on[usize::from(opt)];
                if !self.kind.accepts_server(opt) {
                    out.extend_from_slice(&[IAC, DONT, opt]);
                } else if !*on {
                    *on = true;
                    out.extend_from_slice(&[IAC, DO, opt]);
                }
            }
            Telnet::Verb(WONT, opt) => {
                let on = &mut self.server_on[usize::from(opt)];
                if *on {
                    *on = false;
                    out.extend_from_slice(&[IAC, DONT, opt]);
                }
            }
            Telnet::Verb(DO, opt) => {
                let on = &mut self.client_on[usize::from(opt)];
                if !self.kind.performs(opt) {
                    out.extend_from_slice(&[IAC, WONT, opt]);
                } else if !*on {
                    *on = true;
                    out.extend_from_slice(&[IAC, WILL, opt]);
                    if opt == NAWS {
                        out.extend_from_slice(&[IAC, SB, NAWS, 0, 80, 0, 24, IAC, SE]);
                    }
                }
            }
            Telnet::Verb(DONT, opt) => {
                let on = &mut self.client_on[usize::from(opt)];
                if *on {
                    *on = false;
                    out.extend_from_slice(&[IAC, WONT, opt]);
                }
            }
            Telnet::Sub(TTYPE, ref data)
                if data.as_slice() == [TTYPE_SEND] && self.client_on[usize::from(TTYPE)] =>
            {
                let names = self.kind.terminal_types();
                if let Some(last) = names.last() {
                    let name = names.get(self.ttype_answers).unwrap_or(last);
                    self.ttype_answers += 1;
                    out.extend_from_slice(&[IAC, SB, TTYPE, TTYPE_IS]);
                    out.extend_from_slice(name.as_bytes());
                    out.extend_from_slice(&[IAC, SE]);
                }
            }
            _ => {}
        }
    }
}

/// Position of the first occurrence of `needle` in `hay`.
pub fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() {
        return Some(0);
    }
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Whether `needle` occurs anywhere in `hay`.
pub fn contains(hay: &[u8], needle: &[u8]) -> bool {
    find(hay, needle).is_some()
}

// Helpers added for the chat-channel tests (tests/channels.rs).

impl TestServer {
    /// The server's data directory: the database and `logs/`.
    pub fn data_dir(&self) -> &std::path::Path {
        self._dir.path()
    }

    /// Makes every channel-log line ordered so far visible in the log files; fails the test if
    /// that takes longer than [`DEADLINE`].
    pub fn flush_logs(&self) {
        assert!(
            self.server().channel_log().flush_blocking(DEADLINE),
            "the channel log did not flush in time"
        );
    }
}

impl Client {
    /// Connects with the client's kernel receive buffer set to `bytes` before the handshake, so
    /// the window the server sees is small from the start; answers negotiation as `kind`.
    pub fn connect_with_recv_buffer(addr: SocketAddr, kind: Kind, bytes: usize) -> Client {
        Client::connect_prepared(addr, kind, |socket| {
            socket
                .set_recv_buffer_size(bytes)
                .expect("setting SO_RCVBUF")
        })
    }

    /// Connects a socket that `prepare` has set up first; answers negotiation as `kind`.
    fn connect_prepared(
        addr: SocketAddr,
        kind: Kind,
        prepare: impl FnOnce(&socket2::Socket),
    ) -> Client {
        use socket2::{Domain, Protocol, Socket, Type};
        let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))
            .expect("creating a socket");
        prepare(&socket);
        socket
            .connect(&addr.into())
            .expect("connecting to the server");
        let stream: TcpStream = socket.into();
        stream.set_nodelay(true).expect("setting TCP_NODELAY");
        Client::over(stream, kind, true)
    }

    /// Connects from source address `from` (any address in 127.0.0.0/8 works on Linux loopback),
    /// so tests of the per-address limits can be several addresses; answers negotiation as `kind`.
    pub fn connect_from(addr: SocketAddr, from: &str, kind: Kind) -> Client {
        let from = SocketAddr::new(from.parse().expect("a source address"), 0);
        Client::connect_prepared(addr, kind, |socket| {
            socket
                .bind(&from.into())
                .expect("binding the source address")
        })
    }

    /// Reads until `done` holds for all the text received so far; `what` names the wait in the
    /// failure message. Does not move the [`Client::expect`] position.
    pub fn read_until(&mut self, what: &str, mut done: impl FnMut(&[u8]) -> bool) {
        let deadline = Instant::now() + DEADLINE;
        while !done(&self.text) {
            if !self.read_some(deadline) {
                let tail = self.text.len().saturating_sub(300);
                panic!(
                    "{} waiting until {what}; last text received: {:?}",
                    if self.eof {
                        "connection closed"
                    } else {
                        "timed out"
                    },
                    String::from_utf8_lossy(&self.text[tail..]),
                );
            }
        }
    }

    /// Closes the connection with a TCP reset (SO_LINGER 0) instead of an orderly FIN.
    pub fn reset(self) {
        socket2::SockRef::from(&self.stream)
            .set_linger(Some(Duration::ZERO))
            .expect("setting SO_LINGER");
    }
}

// Helpers added for the account tests (tests/accounts.rs).

impl TestServer {
    /// Starts a server with `shards` shards and the test defaults on a data directory another one
    /// left (see [`TestServer::stop_keeping_data`]), after `adjust` has changed the configuration.
    pub fn over_with(
        dir: tempfile::TempDir,
        shards: usize,
        adjust: impl FnOnce(&mut Config),
    ) -> TestServer {
        let mut config = Config::for_tests(dir.path());
        config.shards = Some(shards);
        adjust(&mut config);
        let server = Server::start(config).expect("starting the server");
        TestServer {
            addr: server.local_addr(),
            server: Some(server),
            _dir: dir,
        }
    }

    /// [`TestServer::over_with`] with the test defaults.
    pub fn over(dir: tempfile::TempDir, shards: usize) -> TestServer {
        TestServer::over_with(dir, shards, |_| {})
    }

    /// Stops the server (its users told, the database closed) and keeps its data directory.
    pub fn stop_keeping_data(mut self) -> tempfile::TempDir {
        if let Some(server) = self.server.take() {
            server.shutdown();
        }
        // A fresh empty directory takes its place, to be dropped with `self`.
        std::mem::replace(
            &mut self._dir,
            tempfile::tempdir().expect("creating a temporary directory"),
        )
    }

    /// Stops this server and starts another with `shards` shards on the same data directory,
    /// after `adjust` has changed the test configuration.
    pub fn restart_with(self, shards: usize, adjust: impl FnOnce(&mut Config)) -> TestServer {
        TestServer::over_with(self.stop_keeping_data(), shards, adjust)
    }
}

/// A child process (a server binary) killed and reaped when dropped, so that a test that fails
/// leaves no server running behind it.
pub struct KillOnDrop(pub std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        // Already gone after a clean stop: both calls then fail, harmlessly.
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
