//! Socket readiness for every connection of a shard, through one edge-triggered epoll set.
//!
//! # Why not glommio's sockets
//!
//! glommio's `TcpStream` keeps an io_uring poll armed for every socket that waits for input, and each
//! armed poll is a heap object of 496 bytes; the stream itself is 120 bytes more. A chat server's
//! users are idle nearly all the time, so at tens of thousands of users those two were a third of the
//! server's memory. Here a shard registers each socket once, when it is accepted (or when its
//! session moves in from another shard, which first takes it out of its own set), in one epoll
//! set, and an idle socket costs the kernel's epoll entry and nothing in the process.
//!
//! # How a shard hears of it without blocking
//!
//! glommio has no public way to wait for an arbitrary descriptor. So a small io_uring of our own
//! holds one poll on the epoll descriptor, with an eventfd registered to it: when that poll
//! completes, the kernel bumps the eventfd, and the shard waits for the eventfd with an ordinary
//! glommio read, which io_uring completes when the counter is non-zero. Then [`Readiness::drain`]
//! takes the ready sockets from epoll without waiting (`epoll_wait` with a zero timeout), and the
//! next wait arms the poll again. No thread, no blocking call.
//!
//! The poll is one-shot on purpose. A multishot poll posts a completion for every wake-up of the
//! epoll set, and under a burst those overflow the ring's completion queue; the kernel then ends
//! the poll with a completion that waits in its overflow list, where reading the queue never sees
//! it, and the shard would hear nothing more. One-shot, there is never more than one completion
//! outstanding, at the cost of one `io_uring_enter` per wake-up.
//!
//! # Edge-triggered
//!
//! A socket is reported when its state changes (bytes arrive, room frees up in its send buffer, the
//! peer closes), not for as long as it stays ready. Whoever owns the socket therefore keeps a ready
//! bit per direction: set when an event reports it, cleared only when a call fails with
//! `WouldBlock`, and it waits only while the bit is clear. Any change after that failure brings a
//! new event, so no wake-up is lost. A short read or write is not enough to clear the bit: a read
//! stops early at a FIN that arrived with the bytes, or at urgent data, and neither brings another
//! event.

use std::cell::{Cell, RefCell};
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, IntoRawFd, OwnedFd};
use std::rc::Rc;

use glommio::io::BufferedFile;
use io_uring::{opcode, types, IoUring};

/// Events taken from epoll per call.
const EVENTS_PER_CALL: usize = 256;

/// Entries in the private ring: it only ever holds the one poll on the epoll descriptor.
const RING_ENTRIES: u32 = 2;

/// `user_data` of the poll on the epoll descriptor.
const EPOLL_POLL: u64 = 1;

/// Which directions of a socket are ready. A small bit set.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Ready(u8);

impl Ready {
    /// Nothing is ready.
    pub const NONE: Ready = Ready(0);
    /// A read (or accept) would not block: there are bytes, a connection, an end of stream or an error.
    pub const READ: Ready = Ready(1);
    /// A write would not block: there is room, or an error.
    pub const WRITE: Ready = Ready(2);
    /// Both directions.
    pub const BOTH: Ready = Ready(3);

    /// Whether every direction in `other` is in `self`.
    pub fn contains(self, other: Ready) -> bool {
        self.0 & other.0 == other.0
    }

    /// `self` with the directions in `other` added.
    pub fn with(self, other: Ready) -> Ready {
        Ready(self.0 | other.0)
    }

    /// `self` with the directions in `other` removed.
    pub fn without(self, other: Ready) -> Ready {
        Ready(self.0 & !other.0)
    }

    /// What an epoll event mask means for a reader and a writer. Hang-ups and errors count as both:
    /// the next call reports them.
    fn from_epoll(events: u32) -> Ready {
        let mut ready = Ready::NONE;
        let errors = (libc::EPOLLHUP | libc::EPOLLERR) as u32;
        if events & ((libc::EPOLLIN | libc::EPOLLRDHUP) as u32 | errors) != 0 {
            ready = ready.with(Ready::READ);
        }
        if events & (libc::EPOLLOUT as u32 | errors) != 0 {
            ready = ready.with(Ready::WRITE);
        }
        ready
    }
}

/// One shard's epoll set, and the means to wait for it on the shard's executor.
pub struct Readiness {
    epoll: OwnedFd,
    /// Holds the poll on `epoll` and bumps `signal` when it completes.
    ring: RefCell<IoUring>,
    /// The eventfd the ring bumps, read through glommio so the wait is an io_uring operation. Shared
    /// with a wait in progress, so no borrow is held across its await; `None` once closed.
    signal: RefCell<Option<Rc<BufferedFile>>>,
    /// Whether the poll on `epoll` is in the ring and has not completed.
    armed: Cell<bool>,
    /// Reused by every `drain`.
    events: RefCell<Vec<libc::epoll_event>>,
}

impl std::fmt::Debug for Readiness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Readiness")
            .field("epoll", &self.epoll)
            .field("armed", &self.armed.get())
            .finish()
    }
}

impl Readiness {
    /// A new, empty epoll set. Call it on the shard's executor: the wait uses that executor's ring.
    pub fn new() -> io::Result<Readiness> {
        // SAFETY: plain system calls; each result is checked before the descriptor is adopted.
        let epoll = unsafe {
            let fd = libc::epoll_create1(libc::EPOLL_CLOEXEC);
            if fd < 0 {
                return Err(io::Error::last_os_error());
            }
            OwnedFd::from_raw_fd(fd)
        };
        // Blocking on purpose: io_uring answers a read of a non-blocking descriptor with EAGAIN
        // instead of waiting for it.
        let signal = unsafe {
            let fd = libc::eventfd(0, libc::EFD_CLOEXEC);
            if fd < 0 {
                return Err(io::Error::last_os_error());
            }
            OwnedFd::from_raw_fd(fd)
        };
        let ring = IoUring::new(RING_ENTRIES)?;
        ring.submitter().register_eventfd(signal.as_raw_fd())?;
        Ok(Readiness {
            epoll,
            ring: RefCell::new(ring),
            // SAFETY: `signal` is a valid descriptor that nothing else owns; the file takes it over.
            signal: RefCell::new(Some(Rc::new(unsafe {
                BufferedFile::from_raw_fd(signal.into_raw_fd())
            }))),
            armed: Cell::new(false),
            events: RefCell::new(Vec::with_capacity(EVENTS_PER_CALL)),
        })
    }

    /// Adds a socket to the set. Its events come back from [`drain`](Self::drain) with `token`. A
    /// socket leaves the set by itself when it is closed.
    pub fn add(&self, fd: BorrowedFd<'_>, token: u64) -> io::Result<()> {
        let mut event = libc::epoll_event {
            events: (libc::EPOLLIN | libc::EPOLLOUT | libc::EPOLLRDHUP | libc::EPOLLET) as u32,
            u64: token,
        };
        // SAFETY: both descriptors are valid for the call and `event` outlives it.
        let rc = unsafe {
            libc::epoll_ctl(
                self.epoll.as_raw_fd(),
                libc::EPOLL_CTL_ADD,
                fd.as_raw_fd(),
                &mut event,
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Takes a socket out of the set while it stays open (it moves to another shard's set).
    pub fn remove(&self, fd: BorrowedFd<'_>) -> io::Result<()> {
        // SAFETY: both descriptors are valid for the call; DEL ignores the event pointer.
        let rc = unsafe {
            libc::epoll_ctl(
                self.epoll.as_raw_fd(),
                libc::EPOLL_CTL_DEL,
                fd.as_raw_fd(),
                std::ptr::null_mut(),
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Waits until some socket in the set may be ready. Wake-ups can be spurious; then `drain` finds
    /// nothing. Call `drain` between two waits: a set that stays ready ends every wait at once.
    pub async fn wait(&self) -> io::Result<()> {
        self.arm()?;
        let signal = self
            .signal
            .borrow()
            .clone()
            .ok_or_else(|| io::Error::other("socket readiness is closed"))?;
        signal.read_at(0, 8).await.map_err(io::Error::from)?;
        // The only completion there can be is the poll's: whatever it says (ready, or an error),
        // the next wait arms a new one.
        if self.ring.borrow_mut().completion().count() > 0 {
            self.armed.set(false);
        }
        Ok(())
    }

    /// Closes the eventfd. glommio closes a file it is dropped with on its next I/O pass, which an
    /// executor that is ending never has, so the shard calls this before it returns, once nothing
    /// waits any more. Waits after this fail.
    pub async fn close(&self) {
        let signal = self.signal.borrow_mut().take();
        if let Some(file) = signal.and_then(Rc::into_inner) {
            let _ = file.close().await;
        }
    }

    /// Hands every ready socket's token and directions to `f`, without waiting.
    pub fn drain(&self, mut f: impl FnMut(u64, Ready)) -> io::Result<()> {
        let mut events = self.events.borrow_mut();
        loop {
            events.clear();
            // SAFETY: the buffer has room for `EVENTS_PER_CALL` events and epoll writes at most that
            // many, whose count it returns.
            let n = unsafe {
                libc::epoll_wait(
                    self.epoll.as_raw_fd(),
                    events.as_mut_ptr(),
                    EVENTS_PER_CALL as i32,
                    0,
                )
            };
            if n < 0 {
                let err = io::Error::last_os_error();
                if err.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(err);
            }
            // SAFETY: epoll initialised the first `n` entries.
            unsafe { events.set_len(n as usize) };
            for event in events.iter() {
                let (mask, token) = (event.events, event.u64);
                f(token, Ready::from_epoll(mask));
            }
            if (n as usize) < EVENTS_PER_CALL {
                return Ok(());
            }
        }
    }

    /// Puts a poll on the epoll descriptor into the ring, if none is there. If the set is ready
    /// already, the poll completes at once.
    fn arm(&self) -> io::Result<()> {
        if self.armed.get() {
            return Ok(());
        }
        let poll = opcode::PollAdd::new(types::Fd(self.epoll.as_raw_fd()), libc::POLLIN as u32)
            .build()
            .user_data(EPOLL_POLL);
        let mut ring = self.ring.borrow_mut();
        // SAFETY: the entry holds no pointer, only the epoll descriptor, which the kernel resolves
        // when it takes the entry and keeps a reference to for as long as the poll lasts.
        unsafe { ring.submission().push(&poll) }
            .map_err(|_| io::Error::other("readiness ring is full"))?;
        ring.submit()?;
        self.armed.set(true);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::net::{TcpListener, TcpStream};
    use std::os::fd::AsFd;

    use crate::socket::Socket;

    /// Runs `f` on a glommio executor of its own and returns what it returns.
    fn on_executor<T: Send + 'static>(
        f: impl FnOnce() -> std::pin::Pin<Box<dyn std::future::Future<Output = T>>> + Send + 'static,
    ) -> T {
        crate::limits::raise_memlock().unwrap();
        glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
            .spawn(f)
            .unwrap()
            .join()
            .unwrap()
    }

    /// Drains until the events for `token` are seen, and returns them with every token reported.
    async fn until_reported(readiness: &Readiness, token: u64) -> (Ready, Vec<u64>) {
        let mut seen = Vec::new();
        loop {
            readiness.wait().await.unwrap();
            let mut found = None;
            readiness
                .drain(|t, ready| {
                    seen.push(t);
                    if t == token {
                        found = Some(ready);
                    }
                })
                .unwrap();
            if let Some(ready) = found {
                return (ready, seen);
            }
        }
    }

    fn connected(listener: &TcpListener) -> (Socket, TcpStream) {
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (socket, _) = Socket::accept(listener.as_fd()).unwrap();
        (socket, client)
    }

    #[test]
    fn epoll_masks_map_to_directions() {
        assert_eq!(Ready::from_epoll(libc::EPOLLIN as u32), Ready::READ);
        assert_eq!(Ready::from_epoll(libc::EPOLLRDHUP as u32), Ready::READ);
        assert_eq!(Ready::from_epoll(libc::EPOLLOUT as u32), Ready::WRITE);
        assert_eq!(Ready::from_epoll(libc::EPOLLERR as u32), Ready::BOTH);
        assert_eq!(Ready::from_epoll(libc::EPOLLHUP as u32), Ready::BOTH);
        assert_eq!(Ready::from_epoll(0), Ready::NONE);
        assert!(Ready::BOTH.contains(Ready::READ));
        assert!(!Ready::WRITE.contains(Ready::READ));
        assert_eq!(Ready::BOTH.without(Ready::READ), Ready::WRITE);
        assert_eq!(Ready::NONE.with(Ready::WRITE), Ready::WRITE);
    }

    #[test]
    fn each_new_arrival_is_reported_once_more() {
        on_executor(|| {
            Box::pin(async {
                let listener = TcpListener::bind("127.0.0.1:0").unwrap();
                let readiness = Readiness::new().unwrap();
                let (socket, mut client) = connected(&listener);
                readiness.add(socket.as_fd(), 7).unwrap();
                // A fresh socket has room to write.
                let (ready, _) = until_reported(&readiness, 7).await;
                assert!(ready.contains(Ready::WRITE));
                for round in 0..3u8 {
                    client.write_all(&[b'a' + round]).unwrap();
                    let (ready, _) = until_reported(&readiness, 7).await;
                    assert!(ready.contains(Ready::READ), "round {round}: {ready:?}");
                    let mut buf = [0u8; 8];
                    assert_eq!(socket.recv(&mut buf).unwrap(), 1);
                    assert_eq!(buf[0], b'a' + round);
                }
                client.shutdown(std::net::Shutdown::Write).unwrap();
                let (ready, _) = until_reported(&readiness, 7).await;
                assert!(ready.contains(Ready::READ));
                assert_eq!(socket.recv(&mut [0u8; 8]).unwrap(), 0);
            })
        });
    }

    #[test]
    fn a_closed_socket_leaves_the_set() {
        on_executor(|| {
            Box::pin(async {
                let listener = TcpListener::bind("127.0.0.1:0").unwrap();
                let readiness = Readiness::new().unwrap();
                let (gone, mut gone_client) = connected(&listener);
                let (kept, mut kept_client) = connected(&listener);
                readiness.add(gone.as_fd(), 1).unwrap();
                readiness.add(kept.as_fd(), 2).unwrap();
                until_reported(&readiness, 1).await;
                readiness.drain(|_, _| {}).unwrap();
                drop(gone);
                // The peer of the closed socket writes first, then the other one: by the time the
                // second is reported, the first would have been too.
                let _ = gone_client.write_all(b"x");
                kept_client.write_all(b"y").unwrap();
                let (ready, seen) = until_reported(&readiness, 2).await;
                assert!(ready.contains(Ready::READ));
                assert!(!seen.contains(&1), "closed socket reported: {seen:?}");
            })
        });
    }

    #[test]
    fn a_closed_set_refuses_to_wait() {
        on_executor(|| {
            Box::pin(async {
                let readiness = Readiness::new().unwrap();
                readiness.close().await;
                readiness.close().await; // twice is harmless
                assert!(readiness.wait().await.is_err());
            })
        });
    }

    #[test]
    fn a_listener_reports_waiting_connections() {
        on_executor(|| {
            Box::pin(async {
                let listener = TcpListener::bind("127.0.0.1:0").unwrap();
                listener.set_nonblocking(true).unwrap();
                let readiness = Readiness::new().unwrap();
                readiness.add(listener.as_fd(), 0).unwrap();
                let _client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
                let (ready, _) = until_reported(&readiness, 0).await;
                assert!(ready.contains(Ready::READ));
                assert!(Socket::accept(listener.as_fd()).is_ok());
            })
        });
    }
}
