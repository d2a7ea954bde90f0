//! One simulated user's connection: connect from a chosen 127.0.0.N, log in, join, chat, quit — in
//! either protocol.
//!
//! Reading is split the way mini-redis's `Connection` does it: [`Conn::fill`] is one socket read
//! (cancel-safe, so it can sit in a `select!` beside a send timer) and [`Conn::next_line`] hands out
//! what is buffered. Replies the protocol owes the server (IRC PONG) collect in `out` and go with the
//! next write or [`Conn::flush`].

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::fd::AsRawFd;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::{sleep, timeout_at, Duration, Instant};

use crate::irc;
use crate::lines::LineBuf;
use crate::ringtalk::{self, ChatLine, LoginLine, Notice, Prompt};
use crate::stats::{ClientError, ErrorKind};
use crate::sys::now_ns;
use crate::telnet::{Profile, TelnetClient};

/// Which server the bench talks to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// ringtalk's telnet dialogue (docs/PROTOCOL.md).
    Ringtalk,
    /// IRC: NICK/USER, JOIN, PRIVMSG; no echo of one's own messages.
    Irc,
}

impl Protocol {
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Ringtalk => "ringtalk",
            Protocol::Irc => "irc",
        }
    }

    /// Whether a sender receives its own chat line back.
    pub fn echoes_own(self) -> bool {
        self == Protocol::Ringtalk
    }
}

/// How far a login got, and when.
#[derive(Clone, Copy, Debug, Default)]
pub struct LoginInfo {
    /// CLOCK_MONOTONIC ns when the server first asked for a name (IRC: its first line).
    pub greeted_ns: Option<u64>,
    /// The account did not exist and was created.
    pub created: bool,
    /// "Server busy" answers (IRC: nickname in use) that were waited out.
    pub busy: u32,
}

/// What a line received while chatting means to the bench.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    /// A chat line the bench wrote: its send time and sender id, and whether it crossed from
    /// another node of a cluster.
    Delivery {
        sent_ns: u64,
        sender: u32,
        crossed: bool,
    },
    /// The server dropped this many lines for us.
    Dropped(u64),
    /// Flood control dropped this many of the lines we sent.
    FloodDropped(u64),
    /// A cluster's notice about a channel, and the channel's index if it is one of the bench's
    /// (`bc<k>`).
    Notice(Notice, Option<u32>),
    /// A line of the abuse scenario's paste.
    Paste,
    /// Chat text not written by the bench.
    Foreign,
    /// The server is closing the connection.
    Closing,
    /// The server complained about what we sent, or said something out of place.
    Complaint,
    /// Nothing to act on.
    Noise,
}

/// A client's bytes: straight over TCP, or inside TLS (`--tls`).
enum Stream {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl Stream {
    /// One read. Cancel-safe: TLS keeps what it decrypted for the next read.
    async fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Stream::Plain(s) => s.read(buf).await,
            Stream::Tls(s) => s.read(buf).await,
        }
    }

    /// Writes all of `buf` (TLS: encrypted and sent, not left in its buffer).
    async fn write_all(&mut self, buf: &[u8]) -> std::io::Result<()> {
        match self {
            Stream::Plain(s) => s.write_all(buf).await,
            Stream::Tls(s) => {
                s.write_all(buf).await?;
                s.flush().await
            }
        }
    }
}

/// A connected client.
pub struct Conn {
    stream: Stream,
    proto: Protocol,
    /// Login name (IRC nick).
    pub name: String,
    telnet: TelnetClient,
    lines: LineBuf,
    /// Decoded text of the last read, before it goes to `lines`.
    text: Vec<u8>,
    rbuf: Box<[u8]>,
    /// Bytes owed to the server (PONGs) not yet written.
    out: Vec<u8>,
    /// The last complaint's text, for error samples.
    pub last_complaint: Option<String>,
    /// The last line of the login or join dialogue, for the detail of a timeout.
    last_seen: String,
    /// The cluster node the server's greeting named, as a tag (`None` outside a cluster).
    pub node: Option<u32>,
}

/// The source address for client `id`: 127.0.0.N, N = 2.. rotating over `sources` addresses.
pub fn source_addr(id: u32, sources: u32) -> IpAddr {
    let n = 2 + id % sources.clamp(1, 253);
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, n as u8))
}

/// The source address of client `id` when every client has one of its own (the abuse scenario, where
/// the server limits each address): 127.1.1.1, 127.1.1.2, ..., 127.1.1.254, 127.1.2.1, ... Never in
/// 127.0.0.0/24, where the attacker and the rotating sources are, and never a .0 or .255.
pub fn own_addr(id: u32) -> IpAddr {
    let (d, rest) = (id % 254, id / 254);
    let (c, b) = (rest % 254, 1 + rest / 254);
    IpAddr::V4(Ipv4Addr::new(
        127,
        b.min(255) as u8,
        c as u8 + 1,
        d as u8 + 1,
    ))
}

impl Conn {
    /// Connects from `src` (port chosen at connect time, so ports are only unique per 4-tuple).
    /// `rcvbuf` sets a small receive buffer before connecting (slow readers). `profile` is the telnet
    /// client it behaves like (ringtalk only). With `tls`, the TLS handshake is made before this
    /// returns.
    pub async fn connect(
        addr: SocketAddr,
        src: Option<IpAddr>,
        rcvbuf: Option<u32>,
        name: String,
        proto: Protocol,
        profile: Profile,
        tls: bool,
    ) -> Result<Conn, ClientError> {
        let io = |what: &'static str| move |e: std::io::Error| ClientError::io(what, &e);
        let socket = if addr.is_ipv4() {
            TcpSocket::new_v4()
        } else {
            TcpSocket::new_v6()
        }
        .map_err(io("socket"))?;
        if let Some(size) = rcvbuf {
            socket.set_recv_buffer_size(size).map_err(io("SO_RCVBUF"))?;
        }
        if let Some(src) = src.filter(|_| addr.is_ipv4() && addr.ip().is_loopback()) {
            set_bind_no_port(&socket);
            socket.bind(SocketAddr::new(src, 0)).map_err(io("bind"))?;
        }
        let stream = socket.connect(addr).await.map_err(io("connect"))?;
        stream.set_nodelay(true).map_err(io("TCP_NODELAY"))?;
        let stream = if tls {
            let tls = crate::tls::handshake(stream, addr)
                .await
                .map_err(io("TLS handshake"))?;
            Stream::Tls(Box::new(tls))
        } else {
            Stream::Plain(stream)
        };
        let mut conn = Conn {
            stream,
            proto,
            name,
            telnet: TelnetClient::new(profile),
            lines: LineBuf::new(),
            text: Vec::new(),
            rbuf: vec![0u8; 4096].into_boxed_slice(),
            out: Vec::new(),
            last_complaint: None,
            last_seen: String::new(),
            node: None,
        };
        if proto == Protocol::Irc {
            let n = conn.name.clone();
            conn.out
                .extend_from_slice(format!("NICK {n}\r\nUSER {n} 0 * :{n}\r\n").as_bytes());
            conn.flush().await?;
        }
        Ok(conn)
    }

    /// One read from the socket into the line buffer. Cancel-safe. The server closing is an error of
    /// kind `closed`.
    pub async fn fill(&mut self) -> Result<(), ClientError> {
        let n = self
            .stream
            .read(&mut self.rbuf)
            .await
            .map_err(|e| ClientError::io("read", &e))?;
        if n == 0 {
            return Err(ClientError::new(
                ErrorKind::Closed,
                "server closed the connection",
            ));
        }
        match self.proto {
            Protocol::Ringtalk => {
                // Answers to the server's negotiation wait in `out` for the next write or flush.
                self.text.clear();
                self.telnet
                    .feed(&self.rbuf[..n], &mut self.text, &mut self.out);
                self.lines.push(&self.text);
            }
            Protocol::Irc => self.lines.push(&self.rbuf[..n]),
        }
        Ok(())
    }

    /// [`Conn::fill`] with a deadline (`timeout` when it passes).
    pub async fn fill_by(&mut self, deadline: Instant, what: &str) -> Result<(), ClientError> {
        match timeout_at(deadline, self.fill()).await {
            Ok(r) => r,
            Err(_) => Err(ClientError::new(
                ErrorKind::Timeout,
                format!(
                    "{what}: no answer in time (last line {:?}, then {:?})",
                    self.last_seen,
                    self.lines.tail()
                ),
            )),
        }
    }

    /// The next complete line. IRC PINGs are answered here (the PONG waits in `out`).
    pub fn next_line(&mut self) -> Option<String> {
        loop {
            let line = self.lines.next_line()?;
            if self.proto == Protocol::Irc {
                if let Some(m) = irc::parse(&line) {
                    if m.command == "PING" {
                        let token = m.params.first().copied().unwrap_or("");
                        self.out
                            .extend_from_slice(format!("PONG :{token}\r\n").as_bytes());
                        continue;
                    }
                }
            }
            return Some(line);
        }
    }

    /// The login question waiting at the end of what was received, if any; taking it clears it, so
    /// each question is answered once.
    pub fn take_prompt(&mut self) -> Option<Prompt> {
        let prompt = ringtalk::login_prompt(&self.lines.tail())?;
        self.lines.clear_tail();
        Some(prompt)
    }

    /// Writes whatever is owed to the server.
    pub async fn flush(&mut self) -> Result<(), ClientError> {
        if self.out.is_empty() {
            return Ok(());
        }
        self.stream
            .write_all(&self.out)
            .await
            .map_err(|e| ClientError::io("write", &e))?;
        self.out.clear();
        Ok(())
    }

    /// Sends one line (CR LF added).
    pub async fn send_line(&mut self, line: &str) -> Result<(), ClientError> {
        self.out.extend_from_slice(line.as_bytes());
        self.out.extend_from_slice(b"\r\n");
        self.flush().await
    }

    /// Logs in with `password`, creating the account if it does not exist (IRC: registers the nick).
    /// `info` records how far it got as it goes, so it holds the greeting time and busy answers of
    /// a login that then fails too.
    pub async fn login(
        &mut self,
        password: &str,
        deadline: Instant,
        info: &mut LoginInfo,
    ) -> Result<(), ClientError> {
        match self.proto {
            Protocol::Ringtalk => self.login_ringtalk(password, deadline, info).await,
            Protocol::Irc => self.login_irc(deadline, info).await,
        }
    }

    async fn login_ringtalk(
        &mut self,
        password: &str,
        deadline: Instant,
        info: &mut LoginInfo,
    ) -> Result<(), ClientError> {
        let mut back_off = false;
        loop {
            while let Some(line) = self.lines.next_line() {
                if let Some(node) = ringtalk::node_of_greeting(&line) {
                    self.node = Some(node);
                }
                let kind = ringtalk::login_line(&line);
                self.last_seen = line;
                match kind {
                    LoginLine::LoggedIn => return Ok(()),
                    LoginLine::Busy => {
                        info.busy += 1;
                        back_off = true;
                    }
                    LoginLine::Taken => info.busy += 1,
                    LoginLine::TimedOut => {
                        return Err(ClientError::new(
                            ErrorKind::Timeout,
                            "server: login timed out",
                        ))
                    }
                    LoginLine::Refused(text) => {
                        return Err(ClientError::new(
                            ErrorKind::Protocol,
                            format!("login: {text}"),
                        ))
                    }
                    LoginLine::Limited(text) => {
                        return Err(ClientError::new(
                            ErrorKind::Refused,
                            format!("login: {text}"),
                        ))
                    }
                    LoginLine::Other => {}
                }
            }
            if let Some(prompt) = ringtalk::login_prompt(&self.lines.tail()) {
                self.lines.clear_tail();
                let answer = match prompt {
                    Prompt::Username => {
                        info.greeted_ns.get_or_insert_with(now_ns);
                        self.name.clone()
                    }
                    Prompt::Create => {
                        info.created = true;
                        "y".to_string()
                    }
                    Prompt::Password | Prompt::NewPassword | Prompt::RepeatPassword => {
                        password.to_string()
                    }
                };
                if std::mem::take(&mut back_off) {
                    // "try again in a moment": 50-150 ms, spread so retries do not come in waves.
                    sleep(Duration::from_millis(50 + now_ns() % 100)).await;
                }
                self.send_line(&answer).await?;
            }
            self.fill_by(deadline, "login").await?;
        }
    }

    async fn login_irc(
        &mut self,
        deadline: Instant,
        info: &mut LoginInfo,
    ) -> Result<(), ClientError> {
        loop {
            while let Some(line) = self.next_line() {
                info.greeted_ns.get_or_insert_with(now_ns);
                self.last_seen.clone_from(&line);
                let Some(m) = irc::parse(&line) else { continue };
                match m.command {
                    "001" => {
                        self.flush().await?;
                        return Ok(());
                    }
                    "433" | "436" => {
                        // Nick still held by our previous connection: wait for the server to notice.
                        info.busy += 1;
                        sleep(Duration::from_millis(200)).await;
                        let nick = format!("NICK {}", self.name);
                        self.send_line(&nick).await?;
                    }
                    "ERROR" => {
                        return Err(ClientError::new(ErrorKind::Closed, format!("irc: {line}")))
                    }
                    c if irc::is_fatal_numeric(c) => {
                        return Err(ClientError::new(
                            ErrorKind::Protocol,
                            format!("irc: {line}"),
                        ))
                    }
                    _ => {}
                }
            }
            self.flush().await?;
            self.fill_by(deadline, "registration").await?;
        }
    }

    /// Joins `channel`, creating it if it does not exist; a full channel is retried every 100 ms
    /// until the deadline. Returns how many times it was full.
    pub async fn join(&mut self, channel: &str, deadline: Instant) -> Result<u32, ClientError> {
        let mut full = 0;
        match self.proto {
            Protocol::Ringtalk => self.send_line(&format!("/join {channel}")).await?,
            Protocol::Irc => self.send_line(&format!("JOIN #{channel}")).await?,
        }
        loop {
            while let Some(line) = self.next_line() {
                self.last_seen.clone_from(&line);
                match self.proto {
                    Protocol::Ringtalk => match ringtalk::chat_line(&line, &self.name) {
                        ChatLine::Joined(ch) if ch.eq_ignore_ascii_case(channel) => {
                            return Ok(full)
                        }
                        ChatLine::AlreadyOn => return Ok(full),
                        ChatLine::NoSuchChannel => {
                            self.send_line(&format!("/create {channel}")).await?
                        }
                        ChatLine::Exists => self.send_line(&format!("/join {channel}")).await?,
                        ChatLine::Full => {
                            full += 1;
                            sleep(Duration::from_millis(100)).await;
                            self.send_line(&format!("/join {channel}")).await?;
                        }
                        ChatLine::Complaint(text) => {
                            return Err(ClientError::new(
                                ErrorKind::Protocol,
                                format!("join: {text}"),
                            ))
                        }
                        ChatLine::Closing => {
                            return Err(ClientError::new(ErrorKind::Closed, "join: server closing"))
                        }
                        _ => {}
                    },
                    Protocol::Irc => {
                        let Some(m) = irc::parse(&line) else { continue };
                        match m.command {
                            "JOIN"
                                if m.nick().is_some_and(|n| n.eq_ignore_ascii_case(&self.name)) =>
                            {
                                return Ok(full)
                            }
                            "471" => {
                                full += 1;
                                sleep(Duration::from_millis(100)).await;
                                self.send_line(&format!("JOIN #{channel}")).await?;
                            }
                            "ERROR" => {
                                return Err(ClientError::new(
                                    ErrorKind::Closed,
                                    format!("irc: {line}"),
                                ))
                            }
                            c if irc::is_fatal_numeric(c) => {
                                return Err(ClientError::new(
                                    ErrorKind::Protocol,
                                    format!("irc join: {line}"),
                                ))
                            }
                            _ => {}
                        }
                    }
                }
            }
            self.flush().await?;
            self.fill_by(deadline, "join").await?;
        }
    }

    /// Says `text` on `channel` (ringtalk: the channel we are on).
    pub async fn chat(&mut self, channel: &str, text: &str) -> Result<(), ClientError> {
        self.queue_chat(channel, text);
        self.flush().await
    }

    /// Queues `text` for `channel` without sending it: [`Conn::flush`] sends every queued line in one
    /// write, as a client with several lines to say at once would.
    pub fn queue_chat(&mut self, channel: &str, text: &str) {
        if self.proto == Protocol::Irc {
            self.out.extend_from_slice(b"PRIVMSG #");
            self.out.extend_from_slice(channel.as_bytes());
            self.out.extend_from_slice(b" :");
        }
        self.out.extend_from_slice(text.as_bytes());
        self.out.extend_from_slice(b"\r\n");
    }

    /// Queues a private message to `to` (ringtalk's `/tell`), written at the next flush.
    pub fn queue_tell(&mut self, to: &str, text: &str) {
        self.out.extend_from_slice(b"/tell ");
        self.out.extend_from_slice(to.as_bytes());
        self.out.push(b' ');
        self.out.extend_from_slice(text.as_bytes());
        self.out.extend_from_slice(b"\r\n");
    }

    /// What a line received while chatting means.
    pub fn classify(&mut self, line: &str) -> Event {
        let text = match self.proto {
            Protocol::Ringtalk => match ringtalk::chat_line(line, &self.name) {
                ChatLine::Said { text, .. } => text,
                ChatLine::Dropped(n) => return Event::Dropped(n),
                ChatLine::FloodDropped(n) => return Event::FloodDropped(n),
                ChatLine::Cluster(notice, ch) => {
                    return Event::Notice(notice, crate::plan::channel_index(ch))
                }
                ChatLine::Closing => return Event::Closing,
                ChatLine::Complaint(text) => {
                    self.last_complaint = Some(text.to_string());
                    return Event::Complaint;
                }
                _ => return Event::Noise,
            },
            Protocol::Irc => {
                let Some(m) = irc::parse(line) else {
                    return Event::Noise;
                };
                match m.command {
                    "PRIVMSG" if m.params.len() >= 2 => m.params[1],
                    "ERROR" => return Event::Closing,
                    c if irc::is_fatal_numeric(c) || c == "404" || c == "442" => {
                        self.last_complaint = Some(line.to_string());
                        return Event::Complaint;
                    }
                    _ => return Event::Noise,
                }
            }
        };
        match ringtalk::parse_chat_text(text) {
            Some(t) => Event::Delivery {
                sent_ns: t.sent_ns,
                sender: t.sender,
                crossed: matches!((self.node, t.node), (Some(a), Some(b)) if a != b),
            },
            None if ringtalk::is_paste_text(text) => Event::Paste,
            None => Event::Foreign,
        }
    }

    /// Logs off politely and waits (up to `deadline`) for the server to close.
    pub async fn quit(mut self, deadline: Instant) -> Result<(), ClientError> {
        let line = match self.proto {
            Protocol::Ringtalk => "/quit",
            Protocol::Irc => "QUIT :bench done",
        };
        self.send_line(line).await?;
        loop {
            while self.next_line().is_some() {}
            match timeout_at(deadline, self.fill()).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) if e.kind == ErrorKind::Closed => return Ok(()),
                Ok(Err(e)) => return Err(e),
                Err(_) => return Err(ClientError::new(ErrorKind::Timeout, "quit: not closed")),
            }
        }
    }

    /// Sum of the member counts of every channel (`/list`; IRC `LIST`), for the churn probe.
    pub async fn member_total(&mut self, deadline: Instant) -> Result<u64, ClientError> {
        while self.next_line().is_some() {}
        self.lines.clear_tail();
        let mut total = 0;
        match self.proto {
            Protocol::Ringtalk => {
                self.send_line("/list").await?;
                let mut heading = false;
                loop {
                    while let Some(line) = self.next_line() {
                        match ringtalk::chat_line(&line, &self.name) {
                            ChatLine::ListHeading => heading = true,
                            ChatLine::ListEntry { members, .. } if heading => total += members,
                            ChatLine::NoChannels => return Ok(0),
                            _ => {}
                        }
                    }
                    // The list ends with our prompt, which has no line end.
                    if heading && self.lines.tail().ends_with("> ") {
                        self.lines.clear_tail();
                        return Ok(total);
                    }
                    self.fill_by(deadline, "/list").await?;
                }
            }
            Protocol::Irc => {
                self.send_line("LIST").await?;
                loop {
                    while let Some(line) = self.next_line() {
                        let Some(m) = irc::parse(&line) else { continue };
                        match m.command {
                            "322" => {
                                total += m.params.get(2).and_then(|n| n.parse().ok()).unwrap_or(0)
                            }
                            "323" => return Ok(total),
                            _ => {}
                        }
                    }
                    self.flush().await?;
                    self.fill_by(deadline, "LIST").await?;
                }
            }
        }
    }
}

/// IP_BIND_ADDRESS_NO_PORT: bind() picks only the address, connect() picks the port, unique per
/// 4-tuple; without it every bound socket would hold a port of the source address on its own.
fn set_bind_no_port(socket: &TcpSocket) {
    let one: libc::c_int = 1;
    // SAFETY: setsockopt reads `one` for the given length; the fd is open for the socket's lifetime.
    unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_BIND_ADDRESS_NO_PORT,
            &one as *const libc::c_int as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_rotate_from_127_0_0_2() {
        assert_eq!(source_addr(0, 64), IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2)));
        assert_eq!(
            source_addr(63, 64),
            IpAddr::V4(Ipv4Addr::new(127, 0, 0, 65))
        );
        assert_eq!(source_addr(64, 64), IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2)));
        assert_eq!(
            source_addr(252, 1000),
            IpAddr::V4(Ipv4Addr::new(127, 0, 0, 254))
        );
    }

    #[test]
    fn own_addresses_are_distinct_and_outside_127_0_0() {
        let v4 = |ip: IpAddr| match ip {
            IpAddr::V4(v4) => v4.octets(),
            IpAddr::V6(_) => panic!("v4 only"),
        };
        assert_eq!(v4(own_addr(0)), [127, 1, 1, 1]);
        assert_eq!(v4(own_addr(253)), [127, 1, 1, 254]);
        assert_eq!(v4(own_addr(254)), [127, 1, 2, 1]);
        let mut seen = std::collections::HashSet::new();
        for id in 0..70_000 {
            let o = v4(own_addr(id));
            assert!(o[1] >= 1 && o[2] >= 1 && o[3] >= 1 && o[3] <= 254, "{o:?}");
            assert!(seen.insert(o), "{id} repeats {o:?}");
        }
    }
}
