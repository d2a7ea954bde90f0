//! Flood control: how fast one session's lines are taken.
//!
//! A user may type a burst of lines at once, then about `rate` a second (a token bucket, kept as
//! one arrival time). Lines beyond that are not refused but held, in order, and taken as the bucket
//! refills; a paste longer than the hold is cut, and the user is told how many lines were dropped.
//! So a paste of 10,000 lines costs the channel a few lines a second, the server a bounded queue,
//! and the paster nothing but the lines that did not fit. Generic over what a line is, so the rules
//! are tested without a terminal.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::rate::gcra;

/// The flood limits, from `--flood-burst`, `--flood-rate` and `--flood-queue`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FloodLimits {
    /// Lines that may come at once after a quiet spell.
    pub burst: u32,
    /// Lines a second after the burst; 0 turns flood control off.
    pub per_second: u32,
    /// Lines that may wait for the bucket; more are dropped.
    pub queue: u32,
}

impl FloodLimits {
    /// Whether these limits hold anything back.
    pub fn is_off(&self) -> bool {
        self.per_second == 0
    }

    fn interval_ns(&self) -> u64 {
        1_000_000_000 / u64::from(self.per_second.max(1))
    }
}

/// One session's bucket and the lines waiting for it.
#[derive(Debug)]
pub struct Flood<T> {
    limits: FloodLimits,
    /// Times are nanoseconds since this instant.
    start: Instant,
    /// The bucket's GCRA arrival time (see [`gcra`]).
    tat_ns: u64,
    /// Lines waiting for the bucket, oldest first, at most `limits.queue`.
    held: VecDeque<T>,
    /// Lines dropped since the user was last told.
    dropped: u32,
}

impl<T> Flood<T> {
    /// A full bucket at `now`.
    pub fn new(limits: FloodLimits, now: Instant) -> Flood<T> {
        Flood {
            limits,
            start: now,
            tat_ns: 0,
            held: VecDeque::new(),
            dropped: 0,
        }
    }

    /// Goes on with `limits` (the configuration was reloaded); the bucket's level stays.
    pub fn set_limits(&mut self, limits: FloodLimits) {
        self.limits = limits;
    }

    /// Takes one line's worth of the bucket at `now`, or says how long until there is one.
    pub fn admit(&mut self, now: Instant) -> Result<(), Duration> {
        if self.limits.is_off() {
            return Ok(());
        }
        let interval = self.limits.interval_ns();
        let tolerance = interval * u64::from(self.limits.burst.saturating_sub(1));
        let now_ns = now.saturating_duration_since(self.start).as_nanos() as u64;
        self.tat_ns =
            gcra(self.tat_ns, now_ns, interval, tolerance).map_err(Duration::from_nanos)?;
        Ok(())
    }

    /// Holds a line that the bucket cannot take yet, or drops it (counted) when the hold is full.
    /// Returns whether it was held.
    pub fn hold(&mut self, line: T) -> bool {
        if self.held.len() >= self.limits.queue as usize {
            self.dropped = self.dropped.saturating_add(1);
            return false;
        }
        self.held.push_back(line);
        true
    }

    /// Whether lines wait for the bucket.
    pub fn is_holding(&self) -> bool {
        !self.held.is_empty()
    }

    /// The oldest held line.
    pub fn next_held(&mut self) -> Option<T> {
        let line = self.held.pop_front();
        if self.held.is_empty() && self.held.capacity() > 0 {
            // A session that stopped flooding keeps no queue.
            self.held = VecDeque::new();
        }
        line
    }

    /// Lines dropped since the last call.
    pub fn take_dropped(&mut self) -> u32 {
        std::mem::take(&mut self.dropped)
    }
}

/// What the user is told about lines that were dropped.
pub fn flood_notice(dropped: u32) -> String {
    let lines = if dropped == 1 {
        "line was"
    } else {
        "lines were"
    };
    format!("You are sending too fast; {dropped} {lines} dropped.")
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: FloodLimits = FloodLimits {
        burst: 5,
        per_second: 2,
        queue: 20,
    };

    #[test]
    fn a_burst_goes_at_once_then_two_lines_a_second() {
        let t0 = Instant::now();
        let mut flood: Flood<u32> = Flood::new(LIMITS, t0);
        for _ in 0..5 {
            assert!(flood.admit(t0).is_ok());
        }
        assert_eq!(flood.admit(t0), Err(Duration::from_millis(500)));
        let t1 = t0 + Duration::from_millis(500);
        assert!(flood.admit(t1).is_ok());
        assert!(flood.admit(t1).is_err());
        // After a quiet spell, a whole burst again and no more.
        let t2 = t1 + Duration::from_secs(10);
        for _ in 0..5 {
            assert!(flood.admit(t2).is_ok());
        }
        assert!(flood.admit(t2).is_err());
    }

    #[test]
    fn held_lines_keep_their_order_and_the_overflow_is_counted() {
        let mut flood: Flood<u32> = Flood::new(LIMITS, Instant::now());
        for n in 0..25 {
            assert_eq!(flood.hold(n), n < 20);
        }
        assert_eq!(flood.take_dropped(), 5);
        assert_eq!(flood.take_dropped(), 0);
        let taken: Vec<u32> = std::iter::from_fn(|| flood.next_held()).collect();
        assert_eq!(taken, (0..20).collect::<Vec<_>>());
        assert!(!flood.is_holding());
    }

    #[test]
    fn off_admits_everything() {
        let t0 = Instant::now();
        let mut flood: Flood<u32> = Flood::new(
            FloodLimits {
                per_second: 0,
                ..LIMITS
            },
            t0,
        );
        for _ in 0..10_000 {
            assert!(flood.admit(t0).is_ok());
        }
    }

    #[test]
    fn the_notice_counts_in_words() {
        assert_eq!(
            flood_notice(1),
            "You are sending too fast; 1 line was dropped."
        );
        assert_eq!(
            flood_notice(9980),
            "You are sending too fast; 9980 lines were dropped."
        );
    }
}
