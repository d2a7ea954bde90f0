//! A connected socket as a session holds it: the descriptor and nothing else (4 bytes).
//!
//! Every call is non-blocking and made only when the shard's [`Readiness`](crate::readiness) says
//! the socket is ready, so a call that would block is rare and answered with
//! [`io::ErrorKind::WouldBlock`]. What to do then (clear the ready bit, wait for the next event)
//! is the caller's business; this module only wraps the system calls.

use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

/// One accepted TCP connection, non-blocking. Closed when dropped.
#[derive(Debug)]
pub struct Socket {
    fd: OwnedFd,
}

impl Socket {
    /// Takes the next connection waiting on `listener`, already non-blocking and close-on-exec,
    /// with the address it came from (`None` for a peer that is not IP, which a TCP listener never
    /// has). `WouldBlock` when none is waiting. Options such as `TCP_NODELAY` come from the listener.
    pub fn accept(listener: BorrowedFd<'_>) -> io::Result<(Socket, Option<SocketAddr>)> {
        // SAFETY: `try_init` hands us a zeroed storage and its length to fill, which accept4 does.
        let (fd, peer) = unsafe {
            socket2::SockAddr::try_init(|storage, len| {
                retrying(|| {
                    libc::accept4(
                        listener.as_raw_fd(),
                        storage.cast(),
                        len,
                        libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                    ) as isize
                })
            })
        }?;
        // A descriptor came back, so it fits a `RawFd`.
        let fd = RawFd::try_from(fd).map_err(io::Error::other)?;
        // SAFETY: accept4 returned a new descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok((Socket { fd }, peer.as_socket()))
    }

    /// Reads what the kernel has, up to `buf.len()` bytes. `Ok(0)` is the end of the stream.
    pub fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        retrying(|| {
            // SAFETY: `buf` is valid for writes of `buf.len()` bytes for the call.
            unsafe {
                libc::recv(
                    self.fd.as_raw_fd(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    libc::MSG_DONTWAIT,
                )
            }
        })
    }

    /// Sends as much of `buf` as the send buffer takes. Never raises SIGPIPE.
    pub fn send(&self, buf: &[u8]) -> io::Result<usize> {
        retrying(|| {
            // SAFETY: `buf` is valid for reads of `buf.len()` bytes for the call.
            unsafe {
                libc::send(
                    self.fd.as_raw_fd(),
                    buf.as_ptr().cast(),
                    buf.len(),
                    libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
                )
            }
        })
    }

    /// Sends the end of the stream (FIN) after what is already in the send buffer.
    pub fn shutdown_write(&self) -> io::Result<()> {
        // SAFETY: a plain system call on a descriptor we own.
        if unsafe { libc::shutdown(self.fd.as_raw_fd(), libc::SHUT_WR) } < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

/// Makes a system call that returns a count or a descriptor (never negative) or -1 with `errno`, and
/// makes it again while a signal interrupts it.
fn retrying(mut call: impl FnMut() -> isize) -> io::Result<usize> {
    loop {
        if let Ok(done) = usize::try_from(call()) {
            return Ok(done);
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}

impl AsFd for Socket {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};

    /// Waits (up to 10 s, as a guard against a hang) until `fd` reports one of `events`.
    fn wait_for(fd: BorrowedFd<'_>, events: libc::c_short) -> libc::c_short {
        let mut pollfd = libc::pollfd {
            fd: fd.as_raw_fd(),
            events,
            revents: 0,
        };
        // SAFETY: one valid pollfd for the call.
        let n = unsafe { libc::poll(&mut pollfd, 1, 10_000) };
        assert_eq!(n, 1, "descriptor never became ready");
        pollfd.revents
    }

    fn pair() -> (Socket, TcpStream, TcpListener) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        assert_eq!(
            Socket::accept(listener.as_fd()).unwrap_err().kind(),
            io::ErrorKind::WouldBlock
        );
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        wait_for(listener.as_fd(), libc::POLLIN);
        let (socket, peer) = Socket::accept(listener.as_fd()).unwrap();
        // The peer is the client's end, as the limits per address need it.
        assert_eq!(peer, Some(client.local_addr().unwrap()));
        (socket, client, listener)
    }

    #[test]
    fn accepted_socket_is_non_blocking_and_close_on_exec() {
        let (socket, _client, _listener) = pair();
        let mut buf = [0u8; 16];
        assert_eq!(
            socket.recv(&mut buf).unwrap_err().kind(),
            io::ErrorKind::WouldBlock
        );
        // SAFETY: reading the flags of a descriptor we own.
        let flags = unsafe { libc::fcntl(socket.as_fd().as_raw_fd(), libc::F_GETFD) };
        assert_ne!(flags & libc::FD_CLOEXEC, 0);
    }

    #[test]
    fn bytes_go_both_ways_and_end_of_stream_reads_zero() {
        let (socket, mut client, _listener) = pair();
        client.write_all(b"hello").unwrap();
        wait_for(socket.as_fd(), libc::POLLIN);
        let mut buf = [0u8; 16];
        assert_eq!(socket.recv(&mut buf).unwrap(), 5);
        assert_eq!(&buf[..5], b"hello");
        assert_eq!(socket.send(b"world").unwrap(), 5);
        socket.shutdown_write().unwrap();
        let mut answer = Vec::new();
        client.read_to_end(&mut answer).unwrap();
        assert_eq!(answer, b"world");
        drop(client);
        wait_for(socket.as_fd(), libc::POLLIN);
        assert_eq!(socket.recv(&mut buf).unwrap(), 0);
    }

    #[test]
    fn send_to_a_reset_peer_is_an_error_not_a_signal() {
        let (socket, client, _listener) = pair();
        // SO_LINGER 0 makes the close a reset.
        socket2::SockRef::from(&client)
            .set_linger(Some(std::time::Duration::ZERO))
            .unwrap();
        drop(client);
        let revents = wait_for(socket.as_fd(), libc::POLLIN);
        assert_ne!(revents & (libc::POLLERR | libc::POLLHUP), 0);
        assert!(socket.send(b"x").is_err());
    }
}
