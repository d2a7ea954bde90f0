//! Write pacing: a busy connection gets at most about one write per interval, so chat lines that arrive
//! close together leave in one `send` instead of one each.
//!
//! Why: on a busy server almost all of a delivery's cost is the system call and the loopback or network
//! stack behind it, not ringtalk's own work. A reader in a lively channel gets many lines a millisecond;
//! written one by one, each costs a `send` here and a wake-up and a `recv` at the client. Held back for
//! at most one interval, they share one.
//!
//! The rule is a token bucket (the generic cell rate algorithm): a connection earns one write per
//! interval and may save up one more, so after a quiet spell two writes go out at once (a prompt, then
//! the echo of the line just said) and only a connection written to faster than that waits. A write
//! that must wait waits for the shard's next *tick*, which comes one interval after the first such wait
//! began; every connection waiting then writes. So pacing adds at most one interval to a line's
//! latency, and only while its reader is being written to more often than once an interval.
//!
//! The pacer knows nothing of sessions: a waiting session leaves its task's waker, and the tick wakes
//! them all. Each connection keeps its own [`PaceState`], so a session waits at most once per tick and
//! the list of waiting wakers never holds more than one entry per connection.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use futures::future::poll_fn;

/// One connection's part in pacing: when it may next write, and which tick it waits for.
#[derive(Clone, Copy, Debug, Default)]
pub struct PaceState {
    /// The bucket's "theoretical arrival time": microseconds since the pacer's epoch at which the
    /// connection's writes so far would have been paid for, one interval each. (64 bits: a wrapping
    /// 32-bit clock cannot tell a long-idle connection from one far ahead.)
    earned_at_us: u64,
    /// The tick generation this connection waits for, or 0 when it waits for none.
    waiting_for: u32,
}

/// A shard's write pacer: the interval, the list of waiting connections and the ticker's waker.
#[derive(Debug)]
pub struct Pacer {
    /// Least time between two writes to one busy connection, in microseconds; 0 turns pacing off.
    interval_us: u32,
    /// Times are kept as microseconds since this instant.
    epoch: Instant,
    /// Counts ticks; never 0, so 0 can mean "waiting for nothing" in a [`PaceState`].
    generation: Cell<u32>,
    /// Wakers of the connections waiting for the next tick.
    waiting: RefCell<Vec<Waker>>,
    /// The ticker task, parked while nobody waits.
    ticker: RefCell<Option<Waker>>,
}

impl Pacer {
    /// A pacer allowing one write per `interval_us` microseconds to each busy connection (0: no pacing).
    pub fn new(interval_us: u32) -> Pacer {
        Pacer {
            interval_us,
            epoch: Instant::now(),
            generation: Cell::new(1),
            waiting: RefCell::new(Vec::new()),
            ticker: RefCell::new(None),
        }
    }

    /// Whether the connection with `state` may write now. If not, its task (`cx`) is woken at the next
    /// tick, when it may. A `true` answer counts as a write begun now.
    pub fn may_write(&self, state: &mut PaceState, cx: &mut Context<'_>) -> bool {
        if self.interval_us == 0 {
            return true;
        }
        self.may_write_at(self.now_us(), state, cx.waker())
    }

    /// [`Pacer::may_write`] at a given time (microseconds since the epoch), for tests.
    fn may_write_at(&self, now_us: u64, state: &mut PaceState, waker: &Waker) -> bool {
        let generation = self.generation.get();
        if state.waiting_for != 0 {
            if state.waiting_for == generation {
                // Still waiting for the tick it registered for: one entry per tick is enough.
                return false;
            }
            // Its tick has come: write now, whatever the bucket says.
            state.waiting_for = 0;
            self.spend(now_us, state);
            return true;
        }
        // Allowed while the writes so far are paid for up to one interval ahead of now (the saved
        // write).
        if state.earned_at_us <= now_us + u64::from(self.interval_us) {
            self.spend(now_us, state);
            return true;
        }
        state.waiting_for = generation;
        let mut waiting = self.waiting.borrow_mut();
        waiting.push(waker.clone());
        if waiting.len() == 1 {
            if let Some(ticker) = self.ticker.borrow_mut().take() {
                ticker.wake();
            }
        }
        false
    }

    /// Records a write that could not wait (its queue was filling): it is paid for like any other.
    pub fn note_write(&self, state: &mut PaceState) {
        if self.interval_us == 0 {
            return;
        }
        state.waiting_for = 0;
        self.spend(self.now_us(), state);
    }

    /// Pays for one write at `now_us`: the bucket's time moves one interval on from now or from where
    /// it was, whichever is later.
    fn spend(&self, now_us: u64, state: &mut PaceState) {
        state.earned_at_us = state.earned_at_us.max(now_us) + u64::from(self.interval_us);
    }

    /// Ends the current tick: every waiting connection may write, and is woken to do so.
    fn tick(&self) {
        let next = match self.generation.get().wrapping_add(1) {
            0 => 1,
            n => n,
        };
        self.generation.set(next);
        let waiting = std::mem::take(&mut *self.waiting.borrow_mut());
        for waker in waiting {
            waker.wake();
        }
    }

    /// Connections waiting for the next tick.
    #[cfg(test)]
    fn waiting(&self) -> usize {
        self.waiting.borrow().len()
    }

    fn now_us(&self) -> u64 {
        self.epoch.elapsed().as_micros() as u64
    }

    /// Now on the pacer's clock as a wrapping 32-bit count of microseconds: what a mailbox keeps
    /// of when its oldest line was queued (4 bytes a session; see [`Pacer::waited_us`]).
    pub fn stamp(&self) -> u32 {
        self.now_us() as u32
    }

    /// Microseconds since `stamp` (a [`Pacer::stamp`]). The clock wraps every 71 minutes, so a
    /// line that waited longer than that (a reader whose socket took nothing for over an hour)
    /// is counted as having waited the remainder.
    pub fn waited_us(&self, stamp: u32) -> u64 {
        u64::from(self.stamp().wrapping_sub(stamp))
    }

    /// The shard's ticker: while any connection waits, one tick an interval after the first began
    /// waiting. `sleep` is the executor's timer.
    pub async fn run<S, F>(&self, sleep: S)
    where
        S: Fn(Duration) -> F,
        F: Future<Output = ()>,
    {
        if self.interval_us == 0 {
            return;
        }
        let interval = Duration::from_micros(u64::from(self.interval_us));
        loop {
            poll_fn(|cx| {
                if self.waiting.borrow().is_empty() {
                    *self.ticker.borrow_mut() = Some(cx.waker().clone());
                    Poll::Pending
                } else {
                    Poll::Ready(())
                }
            })
            .await;
            sleep(interval).await;
            self.tick();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::task::Wake;

    struct Count(AtomicUsize);

    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn counter() -> (Arc<Count>, Waker) {
        let count = Arc::new(Count(AtomicUsize::new(0)));
        (count.clone(), Waker::from(count))
    }

    #[test]
    fn an_idle_connection_writes_at_once() {
        let pacer = Pacer::new(1000);
        let (_, waker) = counter();
        let mut state = PaceState::default();
        assert!(pacer.may_write_at(5_000, &mut state, &waker));
        assert!(pacer.may_write_at(6_000, &mut state, &waker));
        assert!(pacer.may_write_at(9_999, &mut state, &waker));
        assert!(pacer.may_write_at(20_000, &mut state, &waker));
        assert_eq!(pacer.waiting(), 0);
    }

    #[test]
    fn two_writes_close_together_go_out_and_a_third_waits_for_the_tick() {
        let pacer = Pacer::new(1000);
        let (count, waker) = counter();
        let mut state = PaceState::default();
        // A prompt, then the echo of the line just said: both at once.
        assert!(pacer.may_write_at(5_000, &mut state, &waker));
        assert!(pacer.may_write_at(5_100, &mut state, &waker));
        // A third within the interval waits.
        assert!(!pacer.may_write_at(5_200, &mut state, &waker));
        // Polled again before the tick: still waiting, and registered only once.
        assert!(!pacer.may_write_at(5_300, &mut state, &waker));
        assert_eq!(pacer.waiting(), 1);
        pacer.tick();
        assert_eq!(count.0.load(Ordering::SeqCst), 1);
        assert_eq!(pacer.waiting(), 0);
        // After the tick it writes, whatever the bucket says.
        assert!(pacer.may_write_at(5_400, &mut state, &waker));
        // Still busy: the next write waits again.
        assert!(!pacer.may_write_at(5_500, &mut state, &waker));
    }

    #[test]
    fn a_busy_connection_gets_one_write_per_interval() {
        let pacer = Pacer::new(1000);
        let (_, waker) = counter();
        let mut state = PaceState::default();
        let mut written = 0;
        // Asking every 100 µs for 100 ms, with a tick every 1,000 µs.
        for t in (0..100_000u64).step_by(100) {
            if t % 1000 == 0 && pacer.waiting() > 0 {
                pacer.tick();
            }
            if pacer.may_write_at(t, &mut state, &waker) {
                written += 1;
            }
        }
        assert!(
            (100..=102).contains(&written),
            "{written} writes in 100 intervals"
        );
    }

    #[test]
    fn one_tick_releases_every_waiting_connection() {
        let pacer = Pacer::new(500);
        let (count, waker) = counter();
        let mut states = vec![PaceState::default(); 10];
        for s in &mut states {
            assert!(pacer.may_write_at(500, s, &waker));
            assert!(pacer.may_write_at(505, s, &waker));
            assert!(!pacer.may_write_at(510, s, &waker));
        }
        assert_eq!(pacer.waiting(), 10);
        pacer.tick();
        assert_eq!(count.0.load(Ordering::SeqCst), 10);
        for s in &mut states {
            assert!(pacer.may_write_at(520, s, &waker));
        }
    }

    #[test]
    fn a_connection_idle_for_a_long_time_writes_at_once() {
        let pacer = Pacer::new(1000);
        let (_, waker) = counter();
        let mut state = PaceState::default();
        for t in [0, 1 << 31, 1 << 32, (1 << 32) + 2_500, 1 << 40] {
            assert!(pacer.may_write_at(t, &mut state, &waker), "at {t}");
        }
        assert_eq!(pacer.waiting(), 0);
    }

    #[test]
    fn interval_zero_never_waits() {
        let pacer = Pacer::new(0);
        let (_, waker) = counter();
        let mut cx = Context::from_waker(&waker);
        let mut state = PaceState::default();
        for _ in 0..3 {
            assert!(pacer.may_write(&mut state, &mut cx));
        }
        assert_eq!(pacer.waiting(), 0);
    }

    #[test]
    fn the_ticker_sleeps_only_while_someone_waits() {
        use futures::executor::LocalPool;
        use futures::task::LocalSpawnExt;
        use std::rc::Rc;

        let pacer = Rc::new(Pacer::new(1000));
        let sleeps = Rc::new(Cell::new(0));
        let mut pool = LocalPool::new();
        let (p, s) = (pacer.clone(), sleeps.clone());
        pool.spawner()
            .spawn_local(async move {
                p.run(|_| {
                    s.set(s.get() + 1);
                    futures::future::ready(())
                })
                .await
            })
            .unwrap();
        pool.run_until_stalled();
        assert_eq!(sleeps.get(), 0, "nobody waits: no timer");
        let (count, waker) = counter();
        let mut state = PaceState::default();
        assert!(pacer.may_write_at(1_000, &mut state, &waker));
        assert!(pacer.may_write_at(1_001, &mut state, &waker));
        assert!(!pacer.may_write_at(1_002, &mut state, &waker));
        pool.run_until_stalled();
        assert_eq!(sleeps.get(), 1);
        assert_eq!(
            count.0.load(Ordering::SeqCst),
            1,
            "the tick woke the waiting writer"
        );
        assert_eq!(pacer.waiting(), 0);
    }
}
