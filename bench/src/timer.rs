//! Sleeps that end on the microsecond, for the send schedule.
//!
//! Latency counts from each line's scheduled time, so a send that leaves late shows up in every
//! sample as if the server had been slow. tokio's timer wheel ticks in whole milliseconds: a send
//! scheduled at t leaves anywhere up to a millisecond after it, which at light load is more than the
//! server's whole share. So the schedule runs on a timer of its own: one `timerfd` per worker process
//! (CLOCK_MONOTONIC, the clock the lines carry, set to absolute times), always armed for the earliest
//! deadline anyone waits for. The kernel's high-resolution timer makes the descriptor readable at
//! that moment, which wakes the runtime's `epoll_wait` whatever its own timeout; the driver task then
//! wakes every sleeper that is due and arms the next deadline.
//!
//! Single-threaded, like the worker's runtime: sleepers and the driver share the state through an
//! `Rc`. A sleeper registers only when it has to wait, and a dropped or reset sleeper leaves its heap
//! entry to be skipped when it comes due.

use std::cell::{Cell, RefCell};
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::future::Future;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

use crate::sys::now_ns;

/// A worker's precise timer. Run [`Timer::drive`] on the worker's `LocalSet`.
pub struct Timer {
    fd: AsyncFd<OwnedFd>,
    /// Deadlines waited for, earliest first, with the id of the sleeper waiting.
    due: RefCell<BinaryHeap<Reverse<(u64, u64)>>>,
    /// The wakers of sleepers still waiting, by id.
    wakers: RefCell<HashMap<u64, Waker>>,
    next_id: Cell<u64>,
    /// The deadline the timerfd is armed for; 0 when disarmed.
    armed_for: Cell<u64>,
}

impl Timer {
    /// A timer with nothing to wait for.
    pub fn new() -> io::Result<Rc<Timer>> {
        // SAFETY: plain system call; the result is checked before the descriptor is adopted.
        let fd = unsafe {
            let fd = libc::timerfd_create(
                libc::CLOCK_MONOTONIC,
                libc::TFD_NONBLOCK | libc::TFD_CLOEXEC,
            );
            if fd < 0 {
                return Err(io::Error::last_os_error());
            }
            OwnedFd::from_raw_fd(fd)
        };
        // SAFETY: `fd` is an open timerfd that the AsyncFd owns from here on and never replaces.
        let fd = unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) }
            .map_err(io::Error::from)?;
        Ok(Rc::new(Timer {
            fd,
            due: RefCell::new(BinaryHeap::new()),
            wakers: RefCell::new(HashMap::new()),
            next_id: Cell::new(1),
            armed_for: Cell::new(0),
        }))
    }

    /// A sleep that ends at `at_ns` (CLOCK_MONOTONIC), at once if that has passed.
    pub fn sleep_until(self: &Rc<Self>, at_ns: u64) -> Sleep {
        Sleep {
            timer: self.clone(),
            at_ns,
            id: 0,
        }
    }

    /// Wakes the sleepers as their deadlines come, for as long as the worker runs.
    pub async fn drive(self: Rc<Self>) {
        loop {
            let Ok(mut ready) = self.fd.readable().await else {
                return;
            };
            let mut expirations = [0u8; 8];
            // SAFETY: reads at most 8 bytes into the array we own.
            let _ = unsafe {
                libc::read(
                    self.fd.get_ref().as_raw_fd(),
                    expirations.as_mut_ptr().cast(),
                    expirations.len(),
                )
            };
            ready.clear_ready();
            self.fire(now_ns());
        }
    }

    /// Wakes every sleeper due by `now`, then arms the timer for the next deadline.
    fn fire(&self, now: u64) {
        self.armed_for.set(0);
        let mut due = self.due.borrow_mut();
        while let Some(&Reverse((at, id))) = due.peek() {
            if at > now {
                break;
            }
            due.pop();
            if let Some(waker) = self.wakers.borrow_mut().remove(&id) {
                waker.wake();
            }
        }
        if let Some(&Reverse((at, _))) = due.peek() {
            self.arm(at);
        }
    }

    fn register(&self, at: u64, waker: &Waker) -> u64 {
        let id = self.next_id.get();
        self.next_id.set(id + 1);
        self.wakers.borrow_mut().insert(id, waker.clone());
        self.due.borrow_mut().push(Reverse((at, id)));
        let armed = self.armed_for.get();
        if armed == 0 || at < armed {
            self.arm(at);
        }
        id
    }

    fn arm(&self, at: u64) {
        let spec = libc::itimerspec {
            it_interval: libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            },
            it_value: libc::timespec {
                tv_sec: (at / 1_000_000_000) as libc::time_t,
                // Never all zero: that would disarm the timer instead of firing at once.
                tv_nsec: (at % 1_000_000_000).max(u64::from(at < 1_000_000_000)) as libc::c_long,
            },
        };
        // SAFETY: the descriptor is a timerfd we own and `spec` outlives the call.
        unsafe {
            libc::timerfd_settime(
                self.fd.get_ref().as_raw_fd(),
                libc::TFD_TIMER_ABSTIME,
                &spec,
                std::ptr::null_mut(),
            )
        };
        self.armed_for.set(at);
    }
}

/// A sleep on a [`Timer`]; see [`Timer::sleep_until`].
pub struct Sleep {
    timer: Rc<Timer>,
    at_ns: u64,
    /// The id it waits under, once it has had to wait; 0 before.
    id: u64,
}

impl Sleep {
    /// Makes the sleep end at `at_ns` instead, as if new.
    pub fn reset(&mut self, at_ns: u64) {
        self.forget();
        self.at_ns = at_ns;
    }

    fn forget(&mut self) {
        if self.id != 0 {
            self.timer.wakers.borrow_mut().remove(&self.id);
            self.id = 0;
        }
    }
}

impl Future for Sleep {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if now_ns() >= self.at_ns {
            self.forget();
            return Poll::Ready(());
        }
        if self.id == 0 {
            let id = self.timer.register(self.at_ns, cx.waker());
            self.id = id;
        } else if let Some(waker) = self.timer.wakers.borrow_mut().get_mut(&self.id) {
            if !waker.will_wake(cx.waker()) {
                *waker = cx.waker().clone();
            }
        }
        Poll::Pending
    }
}

impl Drop for Sleep {
    fn drop(&mut self) {
        self.forget();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn on_runtime<F: Future>(f: impl FnOnce(Rc<Timer>) -> F) -> F::Output {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let local = tokio::task::LocalSet::new();
        local.block_on(&rt, async {
            let timer = Timer::new().unwrap();
            tokio::task::spawn_local(timer.clone().drive());
            f(timer).await
        })
    }

    #[test]
    fn sleepers_wake_at_their_deadlines_in_order() {
        let woke = on_runtime(|timer| async move {
            let start = now_ns();
            let order = Rc::new(RefCell::new(Vec::new()));
            let mut tasks = Vec::new();
            // Registered out of order, including one already due and one dropped unfinished.
            for (i, us) in [(0u64, 3000u64), (1, 500), (2, 0), (3, 1500)] {
                let sleep = timer.sleep_until(start + us * 1000);
                let order = order.clone();
                tasks.push(tokio::task::spawn_local(async move {
                    sleep.await;
                    order.borrow_mut().push((i, now_ns() - start));
                }));
            }
            let mut dropped = timer.sleep_until(start + 1_000_000);
            let waker = futures_noop();
            assert!(Pin::new(&mut dropped)
                .poll(&mut Context::from_waker(&waker))
                .is_pending());
            drop(dropped);
            for t in tasks {
                t.await.unwrap();
            }
            let order = order.borrow().clone();
            order
        });
        let ids: Vec<u64> = woke.iter().map(|w| w.0).collect();
        assert_eq!(ids, [2, 1, 3, 0]);
        for (i, at) in woke {
            let due = [3000u64, 500, 0, 1500][i as usize] * 1000;
            assert!(at >= due, "sleeper {i} woke at {at} ns, before {due}");
        }
    }

    #[test]
    fn a_reset_sleep_waits_for_its_new_deadline() {
        on_runtime(|timer| async move {
            let start = now_ns();
            let mut sleep = timer.sleep_until(start + 5_000_000_000);
            sleep.reset(start + 200_000);
            sleep.await;
            let waited = now_ns() - start;
            assert!(waited >= 200_000);
            assert!(waited < 5_000_000_000);
        });
    }

    fn futures_noop() -> Waker {
        struct Noop;
        impl std::task::Wake for Noop {
            fn wake(self: std::sync::Arc<Self>) {}
        }
        Waker::from(std::sync::Arc::new(Noop))
    }
}
