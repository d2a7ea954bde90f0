//! The audit log: one line for every action a server admin or a channel's owner takes, in
//! `<data-dir>/audit.log`, so that who did what to whom can be looked up afterwards.
//!
//! # Why it looks like this
//!
//! - **Shards never block.** The actions are decided on shards (a channel's home, an admin's
//!   session), which must not wait for a disk. A shard stamps the entry with the time and hands it
//!   to a writer thread (`ringtalk-audit`) with `try_send` on a bounded queue; a full queue costs
//!   the entry, counted in [`AuditLog::dropped`] and told in the server's log (a warning at most
//!   every [`WARN_INTERVAL`], however many are lost), never a wait.
//! - **One file, append only.** Admin actions are rare: the writer holds the file open, writes
//!   what it is given and flushes as soon as the queue is empty, so a line reaches the OS within
//!   moments of the action. It does not `fsync`. At shutdown ([`AuditGuard::shutdown`]) every
//!   entry already queued is written and flushed before the thread is joined.
//! - **Nothing raw from users.** Entries name users, channels, reasons and topics that users
//!   typed; every control character (escape sequences, line breaks, and the Unicode line and
//!   paragraph separators) is replaced, so an entry is one line and no terminal that shows the file
//!   obeys anything in it.
//!
//! Each line: `YYYY-MM-DDTHH:MM:SSZ <actor> <what>`, the time (UTC) being when the action was
//! taken, e.g. `2026-11-30T12:00:00Z alice kicked bob from #den: spam`.

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crossbeam_channel::{Receiver, Sender};

use crate::writer_thread::WriterThread;
use tracing::warn;

/// The audit log's file name in the data directory.
pub const FILE_NAME: &str = "audit.log";

/// How often at most a lost entry (or a failed write) is told in the server's log.
pub const WARN_INTERVAL: Duration = Duration::from_secs(10);

/// The name of the writer thread.
const THREAD_NAME: &str = "ringtalk-audit";

/// What travels on the queue to the writer.
enum Msg {
    /// Append this line (stamped, cleaned, without its line end).
    Entry(String),
    /// Write what is queued, flush and leave; sent once by [`AuditGuard`].
    Stop,
    /// Test hook: report on `held`, then wait until `release` yields or disconnects, so a test
    /// can fill the queue while the writer is known to be busy.
    #[cfg(test)]
    Hold {
        held: Sender<()>,
        release: Receiver<()>,
    },
}

/// Counters shared by every handle and the writer.
#[derive(Debug, Default)]
struct Counters {
    /// Entries refused (queue full, or writer gone).
    dropped: AtomicU64,
    /// Entries the writer could not write.
    write_errors: AtomicU64,
    /// When a loss was last told in the server's log (Unix seconds; 0: never), shared by every
    /// shard so the warnings stay one per [`WARN_INTERVAL`] in all.
    last_warned: AtomicU64,
}

/// A handle for recording actions. Cheap to clone; each shard holds one. Never blocks.
#[derive(Clone)]
pub struct AuditLog {
    tx: Sender<Msg>,
    counters: Arc<Counters>,
}

impl fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuditLog")
            .field("queued", &self.tx.len())
            .field("counters", &self.counters)
            .finish()
    }
}

/// Owns the writer thread; [`AuditGuard::shutdown`] (or dropping it) writes and flushes
/// everything queued and joins the thread.
#[derive(Debug)]
pub struct AuditGuard(WriterThread<Msg>);

impl AuditLog {
    /// Opens (or creates) `path` for appending and starts the writer thread with a queue of
    /// `capacity` entries. Fails if the file cannot be opened, `capacity` is zero, or the thread
    /// cannot be started.
    pub fn start(path: &Path, capacity: usize) -> io::Result<(AuditLog, AuditGuard)> {
        if capacity == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "the audit log queue needs room for at least one entry",
            ));
        }
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        let (tx, rx) = crossbeam_channel::bounded(capacity);
        let counters = Arc::new(Counters::default());
        let writer_counters = Arc::clone(&counters);
        let run = move || write_all(file, &rx, &writer_counters);
        let thread = WriterThread::spawn(THREAD_NAME, tx.clone(), || Msg::Stop, run)?;
        Ok((AuditLog { tx, counters }, AuditGuard(thread)))
    }

    /// Records `entry` (`<actor> <what>`), stamped with the current time. Never blocks: a full
    /// queue drops it, counts it and warns (at most once per [`WARN_INTERVAL`]). Returns whether
    /// it was queued.
    pub fn record(&self, entry: &str) -> bool {
        let line = format!("{} {}", utc_stamp(unix_now()), clean(entry));
        if self.tx.try_send(Msg::Entry(line)).is_ok() {
            return true;
        }
        let dropped = self.counters.dropped.fetch_add(1, Ordering::Relaxed) + 1;
        if self.counters.may_warn() {
            warn!(
                dropped,
                "audit log: entries lost (its queue is full or its writer gone)"
            );
        }
        false
    }

    /// Entries [`AuditLog::record`] has refused since start.
    pub fn dropped(&self) -> u64 {
        self.counters.dropped.load(Ordering::Relaxed)
    }

    /// Entries the writer could not write.
    pub fn write_errors(&self) -> u64 {
        self.counters.write_errors.load(Ordering::Relaxed)
    }
}

impl Counters {
    /// Whether a warning may be logged now (none was in the last [`WARN_INTERVAL`]); if so, the
    /// time is taken, so that of shards racing here one warns.
    fn may_warn(&self) -> bool {
        let now = u64::try_from(unix_now()).unwrap_or(0);
        let last = self.last_warned.load(Ordering::Relaxed);
        if last != 0 && now.saturating_sub(last) < WARN_INTERVAL.as_secs() {
            return false;
        }
        self.last_warned
            .compare_exchange(last, now.max(1), Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    }
}

impl AuditGuard {
    /// Stops the writer once it has written and flushed every entry already queued, and joins it.
    /// Call it after the shards have stopped: an entry recorded meanwhile may be lost.
    pub fn shutdown(self) {
        self.0.stop();
    }
}

/// The writer thread: writes each entry, flushes whenever the queue is empty, until a stop (after
/// writing what was queued before it) or until every handle is gone.
fn write_all(file: File, rx: &Receiver<Msg>, counters: &Counters) {
    let mut out = BufWriter::new(file);
    let write = |out: &mut BufWriter<File>, line: &str| {
        if let Err(e) = writeln!(out, "{line}") {
            counters.write_errors.fetch_add(1, Ordering::Relaxed);
            if counters.may_warn() {
                warn!(error = %e, "audit log: cannot write");
            }
        }
    };
    while let Ok(msg) = rx.recv() {
        let mut stopping = false;
        let mut next = Some(msg);
        while let Some(msg) = next.take() {
            match msg {
                Msg::Entry(line) => write(&mut out, &line),
                Msg::Stop => stopping = true,
                #[cfg(test)]
                Msg::Hold { held, release } => {
                    let _ = held.send(());
                    let _ = release.recv();
                }
            }
            // Entries queued before the stop are written too.
            next = rx.try_recv().ok();
        }
        if let Err(e) = out.flush() {
            counters.write_errors.fetch_add(1, Ordering::Relaxed);
            if counters.may_warn() {
                warn!(error = %e, "audit log: cannot write");
            }
        }
        if stopping {
            return;
        }
    }
    let _ = out.flush();
}

/// `entry` with every control character, and the Unicode line and paragraph separators, made a
/// space (line breaks and tabs) or a `?` (the rest, escape included), so it is one line and holds
/// nothing a terminal would act on.
pub fn clean(entry: &str) -> std::borrow::Cow<'_, str> {
    let unsafe_char = |c: char| c.is_control() || matches!(c, '\u{2028}' | '\u{2029}');
    if !entry.contains(unsafe_char) {
        return entry.into();
    }
    entry
        .chars()
        .map(|c| match c {
            '\n' | '\r' | '\t' | '\u{2028}' | '\u{2029}' => ' ',
            c if c.is_control() => '?',
            c => c,
        })
        .collect::<String>()
        .into()
}

/// Now, in Unix seconds.
fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// A Unix time as `YYYY-MM-DDTHH:MM:SSZ` (UTC).
pub fn utc_stamp(unix_secs: i64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp(unix_secs)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(path: &Path) -> String {
        std::fs::read_to_string(path).unwrap()
    }

    #[test]
    fn times_are_utc_iso_8601_to_the_second() {
        assert_eq!(utc_stamp(0), "1970-01-01T00:00:00Z");
        // 2026-11-30T12:00:00Z
        assert_eq!(utc_stamp(1_796_040_000), "2026-11-30T12:00:00Z");
    }

    #[test]
    fn control_characters_and_line_breaks_never_reach_the_file_raw() {
        assert_eq!(clean("alice said hi"), "alice said hi");
        assert_eq!(
            clean("eve\x1b[2J said\r\nroot deleted #x\u{2028}\x07\u{9b}31m"),
            "eve?[2J said  root deleted #x ??31m"
        );
    }

    #[test]
    fn entries_are_stamped_cleaned_and_flushed_at_shutdown() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE_NAME);
        std::fs::write(&path, "an older line\n").unwrap();
        let (log, guard) = AuditLog::start(&path, 8).unwrap();
        assert!(log.record("root disconnected bob: spam"));
        assert!(log.record("root said to everyone: two\nlines"));
        guard.shutdown();
        let text = read(&path);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text:?}");
        assert_eq!(lines[0], "an older line", "appended, never truncated");
        for (line, entry) in lines[1..].iter().zip([
            "root disconnected bob: spam",
            "root said to everyone: two lines",
        ]) {
            let (stamp, rest) = line.split_once(' ').unwrap();
            assert_eq!(rest, entry);
            assert_eq!(stamp.len(), "2026-11-30T12:00:00Z".len(), "{stamp}");
            assert!(
                stamp.ends_with('Z') && stamp.as_bytes()[10] == b'T',
                "{stamp}"
            );
        }
        assert!(!log.record("late"), "the writer has gone");
        assert_eq!(log.dropped(), 1);
    }

    #[test]
    fn a_full_queue_drops_and_counts_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE_NAME);
        let (log, guard) = AuditLog::start(&path, 2).unwrap();
        let (held_tx, held_rx) = crossbeam_channel::bounded(1);
        let (release_tx, release_rx) = crossbeam_channel::bounded::<()>(0);
        log.tx
            .send(Msg::Hold {
                held: held_tx,
                release: release_rx,
            })
            .unwrap();
        held_rx.recv().unwrap();
        assert!(log.record("a 1"));
        assert!(log.record("a 2"));
        for _ in 0..5 {
            assert!(!log.record("a lost one"));
        }
        assert_eq!(log.dropped(), 5);
        // One warning for the five, then none until the interval has passed.
        assert!(!log.counters.may_warn());
        drop(release_tx);
        guard.shutdown();
        let text = read(&path);
        assert_eq!(text.lines().count(), 2, "{text:?}");
        assert_eq!(log.write_errors(), 0);
    }

    #[test]
    fn a_zero_queue_or_a_missing_directory_is_refused_at_start() {
        let dir = tempfile::tempdir().unwrap();
        assert!(AuditLog::start(&dir.path().join(FILE_NAME), 0).is_err());
        assert!(AuditLog::start(&dir.path().join("none").join(FILE_NAME), 4).is_err());
    }
}
