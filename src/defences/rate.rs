//! Rates kept in one atomic word each, so every shard can check and update a shared limit without
//! a lock and without waiting.
//!
//! A rate (`N` events per `SECS` seconds) is kept the GCRA way: one timestamp, the "theoretical
//! arrival time" of the next event if events came exactly at the rate. An event is allowed while
//! that time is no more than `SECS - SECS/N` ahead of now (so `N` may come at once after a quiet
//! spell), and each one allowed pushes it `SECS/N` further. One compare-and-swap per event; no
//! table of past events.
//!
//! Failed logins need more than a rate: the wait must grow while failures go on and be forgotten
//! after a success or a quiet spell. [`Backoff`] keeps that in one word too: a failure count and
//! the time of the last one.

use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// Longest period a rate may be given over: a week.
pub const MAX_RATE_SECONDS: u32 = 7 * 86_400;

/// Most events a rate may allow per period.
pub const MAX_RATE_COUNT: u32 = 1_000_000;

/// `count` events per `seconds` seconds; a count of 0 means no limit. Written `N/SECS`, or `off`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rate {
    /// Events allowed per period (and at once, after a quiet period); 0 turns the limit off.
    pub count: u32,
    /// The period, in seconds.
    pub seconds: u32,
}

impl Rate {
    /// No limit.
    pub const OFF: Rate = Rate {
        count: 0,
        seconds: 1,
    };

    /// Whether this rate limits anything.
    pub fn is_off(&self) -> bool {
        self.count == 0
    }

    /// Nanoseconds between events at the steady rate.
    fn interval_ns(&self) -> u64 {
        u64::from(self.seconds) * 1_000_000_000 / u64::from(self.count.max(1))
    }

    /// How far ahead of now the next arrival time may be for an event to be allowed.
    fn tolerance_ns(&self) -> u64 {
        self.interval_ns() * u64::from(self.count.saturating_sub(1))
    }

    /// Allows one event at `now_ns` if the rate has room, recording it; otherwise says how long
    /// until it would have room. Lock-free: racing callers each get a distinct answer.
    pub fn take(&self, cell: &AtomicU64, now_ns: u64) -> Result<(), Duration> {
        if self.is_off() {
            return Ok(());
        }
        let mut tat = cell.load(Relaxed);
        loop {
            let next = gcra(tat, now_ns, self.interval_ns(), self.tolerance_ns())
                .map_err(Duration::from_nanos)?;
            match cell.compare_exchange_weak(tat, next, Relaxed, Relaxed) {
                Ok(_) => return Ok(()),
                Err(seen) => tat = seen,
            }
        }
    }

    /// Like [`Rate::take`], without recording anything.
    pub fn check(&self, cell: &AtomicU64, now_ns: u64) -> Result<(), Duration> {
        if self.is_off() {
            return Ok(());
        }
        gcra(
            cell.load(Relaxed),
            now_ns,
            self.interval_ns(),
            self.tolerance_ns(),
        )
        .map(drop)
        .map_err(Duration::from_nanos)
    }
}

/// One step of the GCRA: given the arrival time `tat` so far, an event at `now` is allowed while
/// `tat` is at most `tolerance` ahead of it, and then pushes `tat` one `interval` on (the new `tat`
/// is returned); otherwise the error is how long until it would be allowed. All in one unit of
/// time, whatever the caller counts in.
pub fn gcra(tat: u64, now: u64, interval: u64, tolerance: u64) -> Result<u64, u64> {
    let base = tat.max(now);
    let ahead = base - now;
    if ahead > tolerance {
        Err(ahead - tolerance)
    } else {
        Ok(base + interval)
    }
}

impl FromStr for Rate {
    type Err = String;

    fn from_str(s: &str) -> Result<Rate, String> {
        if s.eq_ignore_ascii_case("off") {
            return Ok(Rate::OFF);
        }
        let (count, seconds) = s
            .split_once('/')
            .ok_or_else(|| format!("{s:?} is not N/SECS (for example 32/600) or off"))?;
        let count: u32 = count
            .parse()
            .ok()
            .filter(|c| *c <= MAX_RATE_COUNT)
            .ok_or_else(|| format!("{count:?} is not a count from 0 to {MAX_RATE_COUNT}"))?;
        let seconds: u32 = seconds
            .parse()
            .ok()
            .filter(|s| (1..=MAX_RATE_SECONDS).contains(s))
            .ok_or_else(|| {
                format!("{seconds:?} is not a number of seconds from 1 to {MAX_RATE_SECONDS}")
            })?;
        if count == 0 {
            return Ok(Rate::OFF);
        }
        Ok(Rate { count, seconds })
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_off() {
            f.write_str("off")
        } else {
            write!(f, "{}/{}", self.count, self.seconds)
        }
    }
}

/// How failed logins slow the next attempts: after `threshold` failures, each within `window_s`
/// of the first, the next attempt must wait `first_delay_s`; every further failure doubles the wait,
/// up to `max_delay_s`. A success clears it all; so does `quiet_s` without a failure.
///
/// The state is one word: the time (in whole seconds since the table's start, plus one so that 0
/// means "none") in the high half and the failure count in the low half. While the count is below
/// the threshold the time is that of the first failure of the run; from the threshold on, that of
/// the last.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    /// Failures before any wait.
    pub threshold: u32,
    /// Failures count toward the threshold only when they all fall within this many seconds.
    pub window_s: u32,
    /// The wait after the threshold is reached.
    pub first_delay_s: u32,
    /// The longest wait.
    pub max_delay_s: u32,
    /// Seconds without a failure after which everything is forgotten.
    pub quiet_s: u32,
}

impl Backoff {
    fn unpack(word: u64) -> (u32, u32) {
        ((word >> 32) as u32, word as u32)
    }

    fn pack(time: u32, count: u32) -> u64 {
        (u64::from(time) << 32) | u64::from(count)
    }

    /// The wait after `count` failures (at least the threshold).
    fn delay(&self, count: u32) -> u32 {
        let doublings = (count - self.threshold).min(31);
        self.first_delay_s
            .saturating_mul(1 << doublings)
            .min(self.max_delay_s)
    }

    /// Seconds an attempt at `now_s` must still wait, if any.
    pub fn wait(&self, cell: &AtomicU64, now_s: u32) -> Option<u32> {
        self.wait_in(cell.load(Relaxed), now_s)
    }

    fn wait_in(&self, word: u64, now_s: u32) -> Option<u32> {
        let (time, count) = Self::unpack(word);
        if count < self.threshold || now_s.saturating_sub(time) >= self.quiet_s {
            return None;
        }
        let until = time.saturating_add(self.delay(count));
        (until > now_s).then(|| until - now_s)
    }

    /// The state after one more failure at `now_s`.
    fn failed(&self, word: u64, now_s: u32) -> u64 {
        let (time, count) = Self::unpack(word);
        let since = now_s.saturating_sub(time);
        let (time, count) = if count == 0
            || since >= self.quiet_s
            || (count < self.threshold && since > self.window_s)
        {
            (now_s, 1)
        } else if count + 1 < self.threshold {
            (time, count + 1)
        } else {
            (now_s, count.saturating_add(1))
        };
        Self::pack(time, count)
    }

    /// Records a failure at `now_s`.
    pub fn fail(&self, cell: &AtomicU64, now_s: u32) {
        let _ = cell.fetch_update(Relaxed, Relaxed, |word| Some(self.failed(word, now_s)));
    }

    /// Starts an attempt at `now_s`: refused with the seconds left if the failures so far hold it
    /// back; otherwise counted as a failure at once, in the same step, so that attempts racing
    /// each other (several connections guessing at the same moment) cannot all pass before the
    /// first of them fails. A success then [`clear`](Backoff::clear)s it; an attempt that never
    /// got an answer is given back with [`Backoff::forget_one`]. Returns the failures counted
    /// before this one (none after a quiet spell).
    pub fn attempt(&self, cell: &AtomicU64, now_s: u32) -> Result<u32, u32> {
        let mut refused = None;
        match cell.fetch_update(Relaxed, Relaxed, |word| {
            refused = self.wait_in(word, now_s);
            refused.is_none().then(|| self.failed(word, now_s))
        }) {
            Ok(before) => Ok(Self::unpack(self.failed(before, now_s)).1 - 1),
            Err(_) => Err(refused.unwrap_or(0)),
        }
    }

    /// Takes back one failure counted by [`Backoff::attempt`] for an attempt that never got an
    /// answer (the server was busy).
    pub fn forget_one(&self, cell: &AtomicU64) {
        let _ = cell.fetch_update(Relaxed, Relaxed, |word| {
            let (time, count) = Self::unpack(word);
            Some(Self::pack(time, count.saturating_sub(1)))
        });
    }

    /// Forgets every failure (after a success).
    pub fn clear(&self, cell: &AtomicU64) {
        cell.store(0, Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    #[test]
    fn a_rate_allows_its_count_at_once_then_one_per_interval() {
        let rate: Rate = "4/8".parse().unwrap();
        let cell = AtomicU64::new(0);
        let t0 = 100 * S;
        for _ in 0..4 {
            assert!(rate.check(&cell, t0).is_ok());
            assert!(rate.take(&cell, t0).is_ok());
        }
        // Full: the fifth waits one interval (8 s / 4).
        assert_eq!(rate.take(&cell, t0), Err(Duration::from_secs(2)));
        assert_eq!(rate.check(&cell, t0), Err(Duration::from_secs(2)));
        assert_eq!(rate.take(&cell, t0 + S), Err(Duration::from_secs(1)));
        assert!(rate.take(&cell, t0 + 2 * S).is_ok());
        assert!(rate.take(&cell, t0 + 2 * S).is_err());
        // A quiet period gives the whole count back, and no more.
        let later = t0 + 60 * S;
        for _ in 0..4 {
            assert!(rate.take(&cell, later).is_ok());
        }
        assert!(rate.take(&cell, later).is_err());
    }

    #[test]
    fn rates_parse_and_print_as_flags_write_them() {
        assert_eq!(
            "32/600".parse::<Rate>().unwrap(),
            Rate {
                count: 32,
                seconds: 600
            }
        );
        assert!("off".parse::<Rate>().unwrap().is_off());
        assert!("0/10".parse::<Rate>().unwrap().is_off());
        assert_eq!("2/600".parse::<Rate>().unwrap().to_string(), "2/600");
        for bad in ["32", "32/0", "-1/5", "x/5", "5/604801", "1000001/1", ""] {
            assert!(bad.parse::<Rate>().is_err(), "{bad} taken");
        }
        let cell = AtomicU64::new(0);
        for _ in 0..1000 {
            assert!(Rate::OFF.take(&cell, 0).is_ok());
        }
    }

    const B: Backoff = Backoff {
        threshold: 3,
        window_s: 60,
        first_delay_s: 30,
        max_delay_s: 900,
        quiet_s: 3600,
    };

    #[test]
    fn failures_past_the_threshold_wait_longer_each_time() {
        let cell = AtomicU64::new(0);
        B.fail(&cell, 10);
        B.fail(&cell, 20);
        assert_eq!(B.wait(&cell, 20), None);
        B.fail(&cell, 30);
        assert_eq!(B.wait(&cell, 30), Some(30));
        assert_eq!(B.wait(&cell, 50), Some(10));
        assert_eq!(B.wait(&cell, 60), None);
        B.fail(&cell, 60);
        assert_eq!(B.wait(&cell, 60), Some(60));
        B.fail(&cell, 200);
        assert_eq!(B.wait(&cell, 200), Some(120));
        // Capped.
        let mut t = 200;
        for _ in 0..40 {
            t += 1000;
            B.fail(&cell, t);
        }
        assert_eq!(B.wait(&cell, t), Some(900));
    }

    #[test]
    fn racing_attempts_are_counted_as_they_start() {
        let cell = AtomicU64::new(0);
        // Three start before any has failed; the fourth is already held back.
        for before in 0..3 {
            assert_eq!(B.attempt(&cell, 10), Ok(before));
        }
        assert_eq!(B.attempt(&cell, 10), Err(30));
        // One of them succeeds: everything is forgotten.
        B.clear(&cell);
        assert_eq!(B.attempt(&cell, 11), Ok(0));
        assert_eq!(B.attempt(&cell, 11), Ok(1));
        // An attempt that got no answer is given back.
        B.forget_one(&cell);
        assert_eq!(B.attempt(&cell, 12), Ok(1));
        assert_eq!(B.wait(&cell, 12), None);
        assert_eq!(B.attempt(&cell, 12), Ok(2));
        assert_eq!(B.wait(&cell, 12), Some(30));
        // After a quiet hour the count starts again.
        assert_eq!(B.attempt(&cell, 12 + 3600), Ok(0));
    }

    #[test]
    fn failures_spread_over_more_than_the_window_never_reach_the_threshold() {
        let cell = AtomicU64::new(0);
        for t in [10, 50, 100, 140, 190, 230] {
            B.fail(&cell, t);
            assert_eq!(B.wait(&cell, t), None, "at {t}");
        }
    }

    #[test]
    fn a_success_or_a_quiet_hour_forgets_the_failures() {
        let cell = AtomicU64::new(0);
        for t in [1, 2, 3, 4] {
            B.fail(&cell, t);
        }
        assert!(B.wait(&cell, 5).is_some());
        B.clear(&cell);
        assert_eq!(B.wait(&cell, 5), None);
        for t in [6, 7, 8, 9, 10] {
            B.fail(&cell, t);
        }
        assert!(B.wait(&cell, 11).is_some());
        assert_eq!(B.wait(&cell, 10 + 3600), None);
        // And the next failure after the quiet hour starts a new count.
        B.fail(&cell, 10 + 3600);
        assert_eq!(B.wait(&cell, 10 + 3600), None);
    }
}
