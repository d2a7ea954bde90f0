//! The mesh between shards: one lock-free SPSC ring per ordered pair of shards, and one doorbell per
//! shard that wakes it when it has gone idle.
//!
//! # Why not glommio's shared channel
//!
//! glommio's channel wakes the *sending* executor on every message received, in case it waits for
//! room, and a parked executor woken for nothing still pays for a full park and unpark (a
//! `membarrier` and about nine `io_uring_enter` calls). So every message between two idle shards
//! woke both of them: at the seed workload, 29% of the server's eventfd writes were such wake-ups of a
//! sender that wanted nothing. Here a sender is woken only when it really waits for room, which takes a
//! ring filled to its last slot.
//!
//! # How
//!
//! - **Rings** are glommio's `spsc_queue`: fixed capacity, lock-free, no notifications of their own.
//! - **A doorbell** is one eventfd per shard and an `armed` flag. The shard's inbox task drains its
//!   incoming rings; when it finds them all empty it arms the bell, looks once more, and only then waits
//!   for the eventfd (through a glommio read, as [`crate::readiness`] waits for its own). A sender
//!   pushes, then rings: a `SeqCst` fence, and an eventfd write only if it finds the bell armed. Both
//!   sides store, fence, then load (the receiver: `armed`, then the rings; the sender: a slot, then
//!   `armed`), so a message cannot be pushed while the receiver goes to sleep without the bell
//!   ringing. One ring of the bell after a batch wakes the receiver once for the whole batch.
//! - **Room**: a sender that finds a ring full sets the ring's `wants_room` flag and checks again; the
//!   receiver, after it has popped from that ring, rings the *sender's* doorbell. The sender's inbox
//!   task wakes its waiting pumps whenever it runs and, before it waits, arms its bell and looks for
//!   room as well as for messages, so room freed while it was busy is seen either way. The inbox task
//!   never waits for room itself, so no cycle of awaited sends can form (docs/ARCHITECTURE.md).

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{fence, AtomicBool, Ordering};
use std::sync::Arc;

use glommio::channels::spsc_queue::{self, Consumer, Producer};
use glommio::io::BufferedFile;
use shard_proto::ShardMsg;

/// Bytes of ring memory per slot: the message and the slot's full flag, padded.
pub const SLOT_BYTES: usize = std::mem::size_of::<(AtomicBool, ShardMsg)>();

// docs/ARCHITECTURE.md's table of what the mesh costs counts 80-byte slots: a message kind that
// grows `ShardMsg` grows every ring, so it does not build until the table is updated.
const _: () = assert!(SLOT_BYTES <= 80);

/// Most slots in each SPSC ring between two shards.
const RING_CAPACITY: usize = 4096;

/// Fewest slots in a ring, however many shards there are.
const MIN_RING_CAPACITY: usize = 64;

/// What all of a server's rings may take together, when that leaves each at least
/// [`MIN_RING_CAPACITY`] slots.
const RING_MEMORY_BUDGET: usize = 128 << 20;

/// Slots in each ring of a server of `shards` shards, a power of two: [`RING_CAPACITY`] while the
/// n(n-1) rings fit in [`RING_MEMORY_BUDGET`] that way (up to 16 shards), then fewer, down to
/// [`MIN_RING_CAPACITY`] (which 256 shards use, about 320 MiB in all). Every slot is allocated up
/// front. Whatever does not fit in a ring waits in the sending shard's outbox.
pub(crate) fn ring_capacity(shards: usize) -> usize {
    let rings = (shards * shards.saturating_sub(1)).max(1);
    let fits = RING_MEMORY_BUDGET / rings / SLOT_BYTES;
    // The largest power of two that fits, within the bounds.
    let pow2 = if fits == 0 { 1 } else { 1 << fits.ilog2() };
    pow2.clamp(MIN_RING_CAPACITY, RING_CAPACITY)
}

/// What wakes an idle shard when a message arrives for it (or room frees up in a ring it writes to).
#[derive(Debug)]
pub struct Doorbell {
    /// The eventfd senders write to. The shard waits on a duplicate of it.
    fd: OwnedFd,
    /// Set by the shard once it has found its rings empty and is about to wait; a sender that finds
    /// it set clears it and writes the eventfd.
    armed: AtomicBool,
}

impl Doorbell {
    /// A new doorbell for one shard.
    pub fn new() -> io::Result<Arc<Doorbell>> {
        // Blocking on purpose: io_uring answers a read of a non-blocking descriptor with EAGAIN
        // instead of waiting for it (see `readiness`).
        // SAFETY: a plain system call; the result is checked before the descriptor is adopted.
        let fd = unsafe {
            let fd = libc::eventfd(0, libc::EFD_CLOEXEC);
            if fd < 0 {
                return Err(io::Error::last_os_error());
            }
            OwnedFd::from_raw_fd(fd)
        };
        Ok(Arc::new(Doorbell {
            fd,
            armed: AtomicBool::new(false),
        }))
    }

    /// Wakes the shard if it is waiting (or about to): call after pushing.
    pub fn ring(&self) {
        // Orders the push before the look at `armed` (the receiver orders its arming before its
        // look at the rings).
        fence(Ordering::SeqCst);
        if self.armed.load(Ordering::Relaxed) && self.armed.swap(false, Ordering::Relaxed) {
            let one = 1u64.to_ne_bytes();
            // SAFETY: writes 8 bytes from a live array to an eventfd we own. An eventfd write only
            // fails if the counter would overflow, which eight bytes of ones cannot reach here.
            unsafe { libc::write(self.fd.as_raw_fd(), one.as_ptr().cast(), one.len()) };
        }
    }

    /// The shard's side: opens the file it waits on, on the shard's own executor.
    pub fn waiter(self: &Arc<Self>) -> io::Result<Waiter> {
        // SAFETY: `dup` of a descriptor we own; the result is checked before it is adopted.
        let fd = unsafe {
            let fd = libc::dup(self.fd.as_raw_fd());
            if fd < 0 {
                return Err(io::Error::last_os_error());
            }
            fd
        };
        Ok(Waiter {
            bell: self.clone(),
            // SAFETY: `fd` is a fresh descriptor that nothing else owns; the file takes it over.
            file: Some(unsafe { BufferedFile::from_raw_fd(fd) }),
        })
    }
}

/// A shard's hold on its own doorbell: arm it, and wait for it to ring.
pub struct Waiter {
    bell: Arc<Doorbell>,
    /// The eventfd, read through glommio; `None` once closed.
    file: Option<BufferedFile>,
}

impl Waiter {
    /// Arms the bell: from now on a sender's ring writes the eventfd. Look at the rings once more
    /// after this before waiting, and disarm if they are not empty.
    pub fn arm(&self) {
        self.bell.armed.store(true, Ordering::Relaxed);
        fence(Ordering::SeqCst);
    }

    /// Disarms the bell (the shard found work after all, or has woken).
    pub fn disarm(&self) {
        self.bell.armed.store(false, Ordering::Relaxed);
    }

    /// Waits until the bell rings (spuriously now and then, so look and arm again).
    pub async fn wait(&self) -> io::Result<()> {
        let file = self
            .file
            .as_ref()
            .ok_or_else(|| io::Error::other("doorbell is closed"))?;
        file.read_at(0, 8).await.map_err(io::Error::from)?;
        self.disarm();
        Ok(())
    }

    /// Closes the eventfd on the executor (glommio closes a dropped file only on its next I/O pass,
    /// which an ending executor never has). Waits after this fail.
    pub async fn close(&mut self) {
        if let Some(file) = self.file.take() {
            let _ = file.close().await;
        }
    }
}

/// The sending end of the ring from one shard to another.
pub struct RingTx {
    producer: Producer<ShardMsg>,
    /// The receiving shard's doorbell.
    peer: Arc<Doorbell>,
    /// Set while this end waits for room (shared with the receiving end).
    wants_room: Arc<AtomicBool>,
}

/// The receiving end of the ring from one shard to another.
pub struct RingRx {
    consumer: Consumer<ShardMsg>,
    /// The sending shard's doorbell, rung when it waits for room and some has freed up.
    sender: Arc<Doorbell>,
    wants_room: Arc<AtomicBool>,
}

/// A ring of at least `capacity` slots from the shard owning `sender` to the shard owning
/// `receiver` (the doorbells of the two shards).
pub fn ring(capacity: usize, sender: &Arc<Doorbell>, receiver: &Arc<Doorbell>) -> (RingTx, RingRx) {
    let (producer, consumer) = spsc_queue::make(capacity);
    let wants_room = Arc::new(AtomicBool::new(false));
    (
        RingTx {
            producer,
            peer: receiver.clone(),
            wants_room: wants_room.clone(),
        },
        RingRx {
            consumer,
            sender: sender.clone(),
            wants_room,
        },
    )
}

impl RingTx {
    /// Pushes a message; gives it back if the ring is full (then the receiving end will ring this
    /// shard's doorbell once it has taken something out). A message for a shard that has stopped is
    /// dropped.
    pub fn push(&self, msg: ShardMsg) -> Result<(), ShardMsg> {
        let Some(msg) = self.producer.try_push(msg) else {
            return Ok(());
        };
        if self.producer.consumer_disconnected() {
            return Ok(());
        }
        self.wants_room.store(true, Ordering::Relaxed);
        // Orders the flag before the second look (the receiver orders its pops before its look at
        // the flag), so room that frees up in between is either seen here or rung for.
        fence(Ordering::SeqCst);
        match self.producer.try_push(msg) {
            None => Ok(()),
            Some(msg) => Err(msg),
        }
    }

    /// Whether the ring has room for a message now.
    pub fn has_room(&self) -> bool {
        self.producer.free_space() > 0 || self.producer.consumer_disconnected()
    }

    /// Wakes the receiving shard if it is idle: call after a batch of pushes.
    pub fn ring_peer(&self) {
        self.peer.ring();
    }
}

impl RingRx {
    /// The next message, if there is one.
    pub fn pop(&self) -> Option<ShardMsg> {
        self.consumer.try_pop()
    }

    /// Call after popping: if the sender waits for room, ring its doorbell.
    pub fn after_pops(&self) {
        fence(Ordering::SeqCst);
        if self.wants_room.load(Ordering::Relaxed) && self.wants_room.swap(false, Ordering::Relaxed)
        {
            self.sender.ring();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shard_proto::{ShardId, ToHome};
    use std::sync::atomic::AtomicUsize;
    use std::time::Duration;

    fn msg(n: u64) -> ShardMsg {
        ShardMsg::ToHome(ToHome::List {
            session: shard_proto::SessionId {
                shard: ShardId(0),
                key: n,
            },
        })
    }

    fn key(msg: &ShardMsg) -> u64 {
        match msg {
            ShardMsg::ToHome(ToHome::List { session }) => session.key,
            other => panic!("unexpected {other:?}"),
        }
    }

    /// Two executors on two threads; the receiver goes idle (arms and waits) between bursts and
    /// the sender sends in bursts with pauses, and with a tiny ring, so both the bell and the room
    /// path are exercised. Every message arrives, in order, and nobody hangs.
    #[test]
    fn messages_between_two_executors_arrive_in_order_through_idle_and_full() {
        const MESSAGES: u64 = 20_000;
        crate::limits::raise_memlock().unwrap();
        let bell_a = Doorbell::new().unwrap();
        let bell_b = Doorbell::new().unwrap();
        let (tx, rx) = ring(8, &bell_a, &bell_b);
        let received = Arc::new(AtomicUsize::new(0));
        let got = received.clone();
        let receiver = glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
            .spawn(move || async move {
                let waiter = bell_b.waiter().unwrap();
                let mut next = 0;
                while next < MESSAGES {
                    let mut popped = false;
                    while let Some(m) = rx.pop() {
                        assert_eq!(key(&m), next, "out of order");
                        next += 1;
                        popped = true;
                        if next % 97 == 0 {
                            // Slow down now and then, so the ring fills.
                            glommio::timer::sleep(Duration::from_micros(50)).await;
                        }
                    }
                    if popped {
                        rx.after_pops();
                        continue;
                    }
                    waiter.arm();
                    if let Some(m) = rx.pop() {
                        waiter.disarm();
                        assert_eq!(key(&m), next, "out of order");
                        next += 1;
                        rx.after_pops();
                        continue;
                    }
                    waiter.wait().await.unwrap();
                }
                got.store(next as usize, Ordering::SeqCst);
            })
            .unwrap();
        let sender = glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
            .spawn(move || async move {
                let waiter = bell_a.waiter().unwrap();
                let mut n = 0;
                while n < MESSAGES {
                    let mut pending = msg(n);
                    loop {
                        match tx.push(pending) {
                            Ok(()) => break,
                            Err(back) => {
                                pending = back;
                                tx.ring_peer();
                                // Wait for the receiver to make room (it rings our bell).
                                waiter.arm();
                                if tx.has_room() {
                                    waiter.disarm();
                                    continue;
                                }
                                waiter.wait().await.unwrap();
                            }
                        }
                    }
                    n += 1;
                    if n % 64 == 0 {
                        tx.ring_peer();
                        if n % 1024 == 0 {
                            // A pause long enough for the receiver to go idle and arm its bell.
                            glommio::timer::sleep(Duration::from_millis(1)).await;
                        }
                    }
                }
                tx.ring_peer();
            })
            .unwrap();
        sender.join().unwrap();
        receiver.join().unwrap();
        assert_eq!(received.load(Ordering::SeqCst) as u64, MESSAGES);
    }

    #[test]
    fn a_ring_holds_its_capacity_and_gives_back_what_does_not_fit() {
        let bell_a = Doorbell::new().unwrap();
        let bell_b = Doorbell::new().unwrap();
        let (tx, rx) = ring(4, &bell_a, &bell_b);
        for n in 0..4 {
            assert!(tx.push(msg(n)).is_ok());
        }
        let back = tx.push(msg(4)).expect_err("full");
        assert_eq!(key(&back), 4);
        assert!(!tx.has_room());
        assert!(tx.wants_room.load(Ordering::SeqCst));
        assert_eq!(rx.pop().map(|m| key(&m)), Some(0));
        rx.after_pops();
        assert!(!tx.wants_room.load(Ordering::SeqCst), "the sender was rung");
        assert!(tx.has_room());
        // A ring to a stopped shard swallows what it is given.
        drop(rx);
        assert!(tx.push(msg(9)).is_ok());
    }

    #[test]
    fn rings_shrink_as_shards_grow_and_stay_within_bounds() {
        assert_eq!(ring_capacity(1), RING_CAPACITY);
        assert_eq!(ring_capacity(2), RING_CAPACITY);
        assert_eq!(ring_capacity(16), RING_CAPACITY);
        let mut last = RING_CAPACITY;
        for shards in 1..=crate::config::MAX_SHARDS {
            let slots = ring_capacity(shards);
            assert!(
                slots.is_power_of_two() && slots <= last,
                "{shards} shards: {slots}"
            );
            assert!((MIN_RING_CAPACITY..=RING_CAPACITY).contains(&slots));
            let bytes = shards * (shards - 1) * slots * SLOT_BYTES;
            assert!(
                bytes <= RING_MEMORY_BUDGET || slots == MIN_RING_CAPACITY,
                "{shards} shards: {bytes} bytes of rings"
            );
            last = slots;
        }
        let most = 256 * 255 * ring_capacity(256) * SLOT_BYTES;
        assert!(most <= 320 << 20, "{most}");
    }
}
