//! Listening sockets: one per shard, all on the same port through SO_REUSEPORT, so the kernel spreads
//! connections over the shards and no shard has to hand out the connections it accepts. (A session
//! may later move to its channel's home shard: see `shard_proto::ToHome::Move`.)
//!
//! We build the sockets ourselves instead of calling glommio's `TcpListener::bind`, which hard-codes a
//! backlog of 1,024: in a connection storm that backlog overflows and clients wait seconds for SYN
//! retransmits. All sockets are made on the main thread before any shard starts, so a port in use is one
//! clear error, and a request for port 0 resolves to one port that every shard then shares.
//!
//! A server may listen on several addresses (plain and TLS, IPv4 and IPv6): each gets its own set of
//! sockets, one per shard, opened by one call here. An IPv6 socket is made IPv6-only
//! (IPV6_V6ONLY), whatever the system default: `[::]:5555` then takes IPv6 connections only, and
//! `0.0.0.0:5555` can listen on the same port for IPv4. Left dual-stack, `[::]` would take IPv4
//! connections as mapped addresses (`::ffff:a.b.c.d`) and refuse a second listener on the port.

use std::io;
use std::net::SocketAddr;
use std::os::fd::{IntoRawFd, RawFd};
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, Socket, TcpKeepalive, Type};

/// What connections to a listening address speak.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Serves {
    /// Telnet, in the clear (`--listen`).
    Telnet,
    /// Telnet inside TLS (`--tls-listen`).
    TelnetOverTls,
}

/// Opens `count` listening sockets on `addr`, all on the same port. Returns their raw descriptors (each is
/// handed to one shard, which adopts it inside its executor) and the address actually bound. A port
/// that another process listens on is refused unless `shared` (nodes of one cluster on one machine
/// share their port).
pub fn open(
    addr: SocketAddr,
    count: usize,
    backlog: u32,
    shared: bool,
) -> io::Result<(Vec<RawFd>, SocketAddr)> {
    if addr.port() != 0 && !shared {
        ensure_port_free(addr)?;
    }
    let mut fds = Vec::with_capacity(count);
    let mut bound = addr;
    for _ in 0..count {
        let socket = Socket::new(
            Domain::for_address(bound),
            Type::STREAM,
            Some(Protocol::TCP),
        )?;
        only_v6(&socket, bound)?;
        socket.set_reuse_address(true)?;
        socket.set_reuse_port(true)?;
        socket.set_cloexec(true)?;
        // The shard accepts only when epoll says a connection waits, and never blocks.
        socket.set_nonblocking(true)?;
        // Set here once, these are copied by the kernel to every accepted socket, which saves six
        // system calls per connection in a connection storm.
        tune(&socket)?;
        socket.bind(&bound.into())?;
        socket.listen(i32::try_from(backlog).unwrap_or(i32::MAX))?;
        bound = socket
            .local_addr()?
            .as_socket()
            .ok_or_else(|| io::Error::other("listener has no IP address"))?;
        fds.push(socket.into_raw_fd());
    }
    Ok((fds, bound))
}

/// SO_REUSEPORT lets a second ringtalk started by the same user share the port silently, each getting
/// half the users. A probe bound without SO_REUSEPORT fails if anything listens there, which turns that
/// mistake into a clear "address in use".
fn ensure_port_free(addr: SocketAddr) -> io::Result<()> {
    let probe = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    only_v6(&probe, addr)?;
    probe.set_reuse_address(true)?;
    probe.bind(&addr.into())
}

/// An IPv6 socket serves IPv6 only (see the module's docs); an IPv4 one has nothing to set.
fn only_v6(socket: &Socket, addr: SocketAddr) -> io::Result<()> {
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    Ok(())
}

/// Per-connection socket options, set on the listening sockets so that accepted sockets inherit them:
/// no Nagle delay (many small writes), TCP keepalive so dead peers are found, and a capped kernel send
/// buffer so a reader that never reads cannot pin megabytes of kernel memory (our own outgoing queue
/// is the place where backlog is bounded and counted).
fn tune(socket: &Socket) -> io::Result<()> {
    socket.set_nodelay(true)?;
    socket.set_keepalive(true)?;
    socket.set_tcp_keepalive(
        &TcpKeepalive::new()
            .with_time(Duration::from_secs(120))
            .with_interval(Duration::from_secs(30))
            .with_retries(4),
    )?;
    socket.set_send_buffer_size(64 * 1024)?;
    // Urgent data stays in the stream. A telnet client's Synch is `IAC DM` with the DM urgent;
    // without this the kernel takes the DM out of the stream and leaves a stray IAC behind.
    socket.set_out_of_band_inline(true)?;
    Ok(())
}

/// True for the accept errors that mean "out of descriptors": the connection stays queued in the kernel,
/// so the caller must wait before trying again instead of spinning.
pub fn is_fd_exhaustion(err: &io::Error) -> bool {
    matches!(
        err.raw_os_error(),
        Some(libc::EMFILE) | Some(libc::ENFILE) | Some(libc::ENOBUFS) | Some(libc::ENOMEM)
    )
}

/// Rate-limits a repeated log line to once per interval, counting what it held back.
#[derive(Debug)]
pub struct LogLimiter {
    interval: Duration,
    last: Option<Instant>,
    suppressed: u64,
}

impl LogLimiter {
    /// A limiter that lets one line through per `interval`.
    pub fn new(interval: Duration) -> LogLimiter {
        LogLimiter {
            interval,
            last: None,
            suppressed: 0,
        }
    }

    /// Returns `Some(n)` when a line may be logged now (`n` lines were held back since the last one), or
    /// `None` when it must be held back.
    pub fn allow(&mut self, now: Instant) -> Option<u64> {
        match self.last {
            Some(last) if now.duration_since(last) < self.interval => {
                self.suppressed += 1;
                None
            }
            _ => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.suppressed))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::{FromRawFd, OwnedFd};

    #[test]
    fn port_zero_resolves_to_one_shared_port() {
        let (fds, addr) = open("127.0.0.1:0".parse().unwrap(), 3, 128, false).unwrap();
        assert_ne!(addr.port(), 0);
        for fd in fds {
            // SAFETY: `open` returned owned, open descriptors.
            let owned = unsafe { OwnedFd::from_raw_fd(fd) };
            let s = Socket::from(owned);
            assert_eq!(s.local_addr().unwrap().as_socket().unwrap(), addr);
        }
    }

    #[test]
    fn ipv4_and_ipv6_wildcards_share_a_port() {
        let (v4, addr) = open("0.0.0.0:0".parse().unwrap(), 2, 16, false).unwrap();
        let v6 = open(
            SocketAddr::new("::".parse().unwrap(), addr.port()),
            2,
            16,
            false,
        );
        let close = |fds: Vec<RawFd>| {
            for fd in fds {
                // SAFETY: `open` returned owned, open descriptors.
                drop(unsafe { OwnedFd::from_raw_fd(fd) });
            }
        };
        close(v4);
        match v6 {
            Ok((fds, bound)) => {
                assert_eq!(bound.port(), addr.port());
                close(fds);
            }
            // A machine without IPv6 cannot say anything about it.
            Err(e)
                if e.kind() == io::ErrorKind::AddrNotAvailable
                    || e.raw_os_error() == Some(libc::EAFNOSUPPORT) =>
            {
                eprintln!("skipped: no IPv6 here ({e})");
            }
            Err(e) => panic!("[::] on the port of 0.0.0.0: {e}"),
        }
    }

    #[test]
    fn a_port_in_use_without_reuseport_is_an_error() {
        let plain = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let err = open(plain.local_addr().unwrap(), 1, 128, false).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse);
    }

    #[test]
    fn a_second_server_on_the_same_port_is_refused() {
        let (fds, addr) = open("127.0.0.1:0".parse().unwrap(), 2, 128, false).unwrap();
        let err = open(addr, 2, 128, false).unwrap_err();
        // Nodes of one cluster share it.
        let (shared, _) = open(addr, 1, 128, true).unwrap();
        for fd in shared {
            // SAFETY: `open` returned owned, open descriptors.
            drop(unsafe { OwnedFd::from_raw_fd(fd) });
        }
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse);
        for fd in fds {
            // SAFETY: `open` returned owned, open descriptors.
            drop(unsafe { OwnedFd::from_raw_fd(fd) });
        }
    }

    #[test]
    fn accepted_sockets_inherit_the_listeners_options() {
        let (fds, addr) = open("127.0.0.1:0".parse().unwrap(), 1, 16, false).unwrap();
        // SAFETY: `open` returned an owned, open descriptor.
        let listener = std::net::TcpListener::from(unsafe { OwnedFd::from_raw_fd(fds[0]) });
        // Non-blocking, so a shard's accept never waits.
        assert_eq!(
            listener.accept().unwrap_err().kind(),
            io::ErrorKind::WouldBlock
        );
        listener.set_nonblocking(false).unwrap();
        let _client = std::net::TcpStream::connect(addr).unwrap();
        let (accepted, _) = listener.accept().unwrap();
        let accepted = Socket::from(accepted);
        assert!(accepted.nodelay().unwrap());
        assert!(accepted.keepalive().unwrap());
        assert_eq!(accepted.keepalive_time().unwrap(), Duration::from_secs(120));
        assert_eq!(
            accepted.keepalive_interval().unwrap(),
            Duration::from_secs(30)
        );
        assert_eq!(accepted.keepalive_retries().unwrap(), 4);
        // The kernel doubles what it is given for its own bookkeeping.
        assert_eq!(accepted.send_buffer_size().unwrap(), 2 * 64 * 1024);
        assert!(accepted.out_of_band_inline().unwrap());
    }

    #[test]
    fn fd_exhaustion_is_recognised() {
        assert!(is_fd_exhaustion(&io::Error::from_raw_os_error(
            libc::EMFILE
        )));
        assert!(is_fd_exhaustion(&io::Error::from_raw_os_error(
            libc::ENFILE
        )));
        assert!(!is_fd_exhaustion(&io::Error::from_raw_os_error(
            libc::ECONNABORTED
        )));
    }

    #[test]
    fn log_limiter_lets_one_line_a_second() {
        let mut l = LogLimiter::new(Duration::from_secs(1));
        let t0 = Instant::now();
        assert_eq!(l.allow(t0), Some(0));
        assert_eq!(l.allow(t0 + Duration::from_millis(10)), None);
        assert_eq!(l.allow(t0 + Duration::from_millis(20)), None);
        assert_eq!(l.allow(t0 + Duration::from_millis(1001)), Some(2));
    }
}
