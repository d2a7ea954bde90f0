//! The bytes of one connection as its session reads and writes them: straight from the socket, or
//! from inside TLS.
//!
//! A user who connects to a TLS port gets the same session, on the same shard, with the same telnet
//! underneath (a MUD client such as Mudlet speaks telnet inside TLS): only the bytes travel
//! differently. So the session talks to a [`Transport`], whose `recv` and `send` behave like the
//! socket's (non-blocking, [`io::ErrorKind::WouldBlock`] when the kernel has nothing or no room,
//! `Ok(0)` at the end of the stream), and TLS is driven through rustls's buffered API over the same
//! readiness the shard already keeps: no thread, no runtime, no blocking call.
//!
//! TLS writes records of its own that the session never asked for: the handshake's replies, an
//! alert, and what it has encrypted while the socket was full. [`Transport::wants_write`] says so,
//! and the session then waits for room in the socket even when its own output is empty. Plaintext
//! the session writes before the handshake has finished (its greeting) is kept by rustls and sent,
//! encrypted, as soon as the handshake ends.
//!
//! The TLS state lives in a box beside the descriptor, so a plain connection pays one pointer.

use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd};

use rustls::ServerConnection;
use tracing::debug;

use crate::socket::Socket;

/// TLS records a `recv` takes from the socket in a row without finding plaintext (handshake
/// messages, empty records) before it lets the shard's other tasks run.
const RECORDS_PER_RECV: usize = 8;

/// One connection's way to its peer.
#[derive(Debug)]
pub struct Transport {
    socket: Socket,
    /// The TLS state of a connection accepted on a TLS port; `None` for plain telnet.
    tls: Option<Box<ServerConnection>>,
}

impl Transport {
    /// Plain telnet over `socket`.
    pub fn plain(socket: Socket) -> Transport {
        Transport { socket, tls: None }
    }

    /// Telnet inside TLS over `socket`, from the first byte of the handshake on.
    pub fn tls(socket: Socket, conn: ServerConnection) -> Transport {
        Transport {
            socket,
            tls: Some(Box::new(conn)),
        }
    }

    /// The socket underneath, for the shard's readiness set.
    pub fn socket(&self) -> &Socket {
        &self.socket
    }

    /// Whether the bytes travel inside TLS.
    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// Reads up to `buf.len()` bytes of the peer's stream. `Ok(0)` is its end (a TLS peer's
    /// close_notify, or a closed socket); `WouldBlock` means the socket has nothing more, which is
    /// the only time the caller may wait for readiness. `Interrupted` means TLS took records off the
    /// socket that held no plaintext yet: the caller should let other tasks run and call again.
    /// A TLS error (a peer that does not speak TLS, a bad record, an alert) is an error: the
    /// connection is over.
    pub fn recv(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let Some(tls) = &mut self.tls else {
            return self.socket.recv(buf);
        };
        for _ in 0..RECORDS_PER_RECV {
            match tls.reader().read(buf) {
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                // The socket closed without a close_notify: for a chat, the end all the same.
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(0),
                Err(e) => return Err(e),
            }
            match tls.read_tls(&mut Io(&self.socket)) {
                // The end of the socket's stream: what rustls already has is read first.
                Ok(_) => {}
                Err(e) => {
                    if e.kind() == io::ErrorKind::WouldBlock {
                        // Handshake replies (or a key update's) leave before the wait.
                        flush(tls, &self.socket)?;
                    }
                    return Err(e);
                }
            }
            if let Err(err) = tls.process_new_packets() {
                debug!(error = %err, "TLS failed; closing the connection");
                // The alert that says why, if the socket takes it.
                let _ = flush(tls, &self.socket);
                return Err(io::Error::new(io::ErrorKind::InvalidData, err));
            }
            match flush(tls, &self.socket) {
                Ok(()) => {}
                // Sent when the socket has room again (see `wants_write`).
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
        }
        Err(io::ErrorKind::Interrupted.into())
    }

    /// Sends as much of `buf` as the connection takes and returns how much it took. Inside TLS,
    /// records already encrypted go first; `WouldBlock` then means none of `buf` was taken. What
    /// is taken may wait in rustls (encrypted, or before the handshake ends, as plaintext) until the
    /// socket has room: see [`Transport::wants_write`].
    pub fn send(&mut self, buf: &[u8]) -> io::Result<usize> {
        let Some(tls) = &mut self.tls else {
            return self.socket.send(buf);
        };
        flush(tls, &self.socket)?;
        let taken = tls.writer().write(buf)?;
        if taken == 0 && !buf.is_empty() {
            // Nothing waits to be sent, so only plaintext held for a handshake that has not ended
            // fills the buffer: more than a greeting, which no session writes before it has input.
            return Err(io::Error::other(
                "TLS handshake unfinished and its buffer full",
            ));
        }
        match flush(tls, &self.socket) {
            Ok(()) => Ok(taken),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(taken),
            Err(e) => Err(e),
        }
    }

    /// Whether TLS holds records to send (handshake replies, encrypted output the socket had no
    /// room for). A plain connection never does.
    pub fn wants_write(&self) -> bool {
        self.tls.as_ref().is_some_and(|tls| tls.wants_write())
    }

    /// Sends the records TLS holds; `WouldBlock` when the socket has no room for all of them.
    pub fn flush(&mut self) -> io::Result<()> {
        match &mut self.tls {
            Some(tls) => flush(tls, &self.socket),
            None => Ok(()),
        }
    }

    /// Ends the stream: inside TLS a close_notify first, as far as the socket takes it at once, then
    /// the FIN after whatever the socket already holds.
    pub fn shutdown_write(&mut self) -> io::Result<()> {
        if let Some(tls) = &mut self.tls {
            tls.send_close_notify();
            let _ = flush(tls, &self.socket);
        }
        self.socket.shutdown_write()
    }
}

impl AsFd for Transport {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.socket.as_fd()
    }
}

/// Writes what TLS holds to the socket until it holds nothing or the socket is full.
fn flush(tls: &mut ServerConnection, socket: &Socket) -> io::Result<()> {
    while tls.wants_write() {
        if tls.write_tls(&mut Io(socket))? == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
    }
    Ok(())
}

/// The socket as rustls reads and writes it: the same non-blocking calls the session makes.
struct Io<'a>(&'a Socket);

impl Read for Io<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.recv(buf)
    }
}

impl Write for Io<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.send(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A plain connection pays one pointer for TLS (see `session::tests`).
    #[test]
    fn a_transport_is_a_descriptor_and_a_pointer() {
        assert!(std::mem::size_of::<Transport>() <= 16);
    }
}
