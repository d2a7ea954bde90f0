//! Channel logs: every message of every channel appended to a file, in the order members saw it.
//!
//! # Why it looks like this
//!
//! - **Shards never block.** A channel's order is decided on its home shard, a glommio executor
//!   that owns one core; a `write(2)` there would stall every connection on that core. So a shard
//!   only builds a record (two `Arc` clones and a timestamp) and hands it over with
//!   `try_send` on a bounded queue. A full queue costs one log line, counted in
//!   [`ChannelLog::dropped`], never a wait.
//! - **Order is kept without locks.** All lines of one channel come from its one home shard, in
//!   order, through one FIFO queue, to one writer thread (`ringtalk-chanlog`) that appends them
//!   in the order received.
//! - **Descriptors are bounded.** One open file per active channel would eat descriptors that
//!   users need: 19,500 users in channels of 6 would hold 3,250 log files open against a limit of
//!   20,000. The writer keeps at most [`MAX_OPEN_FILES`] open and closes the least recently used
//!   one when it needs another.
//!
//! # Files
//!
//! One file per channel per UTC day: `<dir>/<file_stem(key)>.<YYYY-MM-DD>.log`, opened in append
//! mode. Each line is `YYYY-MM-DDTHH:MM:SS.mmmZ <text>\n`, the time being when
//! [`ChannelLog::append`] was called, so the day (and the file) is the record's own day: a line
//! just before midnight and one just after land in different files. [`file_stem`] is a
//! reversible encoding that is safe for any key, so a hostile name cannot escape the directory.
//!
//! # Durability
//!
//! The writer flushes open files to the OS at least every [`FLUSH_INTERVAL`] while lines arrive
//! (so `tail -f` is current), on [`ChannelLog::flush_blocking`], when it closes a file, and at
//! shutdown. It does not `fsync`. Write errors are logged (at most once a second) and counted in
//! [`ChannelLog::write_errors`]; the writer goes on with the next line.

use std::collections::HashMap;
use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};

use crate::writer_thread::WriterThread;
use tracing::warn;

/// The most log files the writer holds open at once; past this the least recently used is
/// flushed and closed.
pub const MAX_OPEN_FILES: usize = 256;

/// Buffer per open log file. Lines are ~100 bytes and flushed every [`FLUSH_INTERVAL`]; the 8 KiB
/// default would hold 2 MiB across [`MAX_OPEN_FILES`] files for no gain.
const FILE_BUFFER: usize = 1024;

/// How long written lines may sit in a buffer before the writer flushes them to the OS.
pub const FLUSH_INTERVAL: Duration = Duration::from_millis(200);

/// How long the writer rests after a batch before it looks at the queue again. While it rests, lines
/// collect in the queue without waking anyone: a shard's `try_send` to a writer that is not blocked
/// in `recv` is a plain store, where a blocked writer costs the shard a futex wake-up per line and
/// the machine a context switch (at 10,000 lines a second, 20,000 of them). The queue holds
/// [`ChannelLog::start`]'s capacity, far more than arrives in this time.
const GATHER: Duration = Duration::from_millis(10);

/// The name of the writer thread.
const THREAD_NAME: &str = "ringtalk-chanlog";

/// Milliseconds in a UTC day (leap seconds do not exist in Unix time).
const MILLIS_PER_DAY: i64 = 86_400_000;

/// How often at most a write error is reported.
const COMPLAINT_INTERVAL: Duration = Duration::from_secs(1);

/// One line to log, as it travels from a shard to the writer.
#[derive(Debug, Clone)]
struct Record {
    /// The lower-cased channel name; shared with the channel's state, not copied.
    key: Arc<str>,
    /// The text members saw; shared with the message being delivered, not copied.
    line: Arc<str>,
    /// When the shard accepted the line (milliseconds since the Unix epoch, UTC); it decides both
    /// the printed time and the day file.
    unix_millis: i64,
}

impl Record {
    /// A record stamped with an explicit time (tests feed midnight crossings through this).
    fn at(key: &Arc<str>, line: &Arc<str>, unix_millis: i64) -> Record {
        Record {
            key: Arc::clone(key),
            line: Arc::clone(line),
            unix_millis,
        }
    }
}

/// What travels on the queue to the writer.
enum Msg {
    /// Append this line.
    Line(Record),
    /// Flush every open file, then answer; sent by [`ChannelLog::flush_blocking`].
    Flush(Sender<()>),
    /// Write what is queued, close everything and leave; sent once by [`LogWriterGuard`].
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
    /// Lines refused by [`ChannelLog::append`] (queue full or writer gone).
    dropped: AtomicU64,
    /// Lines the writer could not write (open or write failed).
    write_errors: AtomicU64,
    /// The most files the writer has held open at once; lets tests check the bound.
    peak_open_files: AtomicUsize,
}

/// A handle for appending lines to channel logs. Cheap to clone; each shard holds one.
///
/// Every method except [`ChannelLog::flush_blocking`] is safe to call on a shard.
#[derive(Clone)]
pub struct ChannelLog {
    /// The bounded queue to the writer thread; `try_send` on it is the only thing a shard does.
    tx: Sender<Msg>,
    /// Drop and error counts, shared with the writer.
    counters: Arc<Counters>,
}

impl fmt::Debug for ChannelLog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChannelLog")
            .field("queued", &self.tx.len())
            .field("counters", &self.counters)
            .finish()
    }
}

/// Owns the writer thread. Held by the server; [`LogWriterGuard::shutdown`] (or dropping the
/// guard) writes and flushes everything queued, closes the files and joins the thread.
#[derive(Debug)]
pub struct LogWriterGuard(WriterThread<Msg>);

impl ChannelLog {
    /// Creates `dir` (and its parents) if missing and starts the writer thread with a queue of
    /// `queue_capacity` lines.
    ///
    /// Fails if the directory cannot be created, `queue_capacity` is zero, or the thread cannot
    /// be started.
    pub fn start(dir: &Path, queue_capacity: usize) -> io::Result<(ChannelLog, LogWriterGuard)> {
        if queue_capacity == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "the channel log queue needs room for at least one line",
            ));
        }
        std::fs::create_dir_all(dir)?;
        let (tx, rx) = crossbeam_channel::bounded(queue_capacity);
        let counters = Arc::new(Counters::default());
        let writer = Writer::new(dir.to_path_buf(), Arc::clone(&counters));
        let thread = WriterThread::spawn(
            THREAD_NAME,
            tx.clone(),
            || Msg::Stop,
            move || writer.run(rx),
        )?;
        Ok((ChannelLog { tx, counters }, LogWriterGuard(thread)))
    }

    /// Queues `line` for the log of channel `channel_key`, stamped with the current time.
    ///
    /// `channel_key` is the lower-cased channel name; `line` is the text members saw, without a
    /// newline (any CR or LF inside it is written as a space, so one record stays one line).
    ///
    /// Never blocks. Returns false, and counts a drop, when the queue is full or the writer has
    /// stopped.
    pub fn append(&self, channel_key: &Arc<str>, line: &Arc<str>) -> bool {
        self.push(Record::at(channel_key, line, now_unix_millis()))
    }

    /// How many lines [`ChannelLog::append`] has refused since start.
    pub fn dropped(&self) -> u64 {
        self.counters.dropped.load(Ordering::Relaxed)
    }

    /// How many queued lines the writer failed to write (the file could not be opened or
    /// written); each failure is also logged, at most once a second.
    pub fn write_errors(&self) -> u64 {
        self.counters.write_errors.load(Ordering::Relaxed)
    }

    /// Waits until every line queued before this call has been handed to the OS, for at most
    /// `timeout`. Returns false if that did not happen in time or the writer has stopped.
    ///
    /// **Blocks the calling thread**: for tests and plain threads only, never on a shard.
    pub fn flush_blocking(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let (reply_tx, reply_rx) = crossbeam_channel::bounded(1);
        if self
            .tx
            .send_deadline(Msg::Flush(reply_tx), deadline)
            .is_err()
        {
            return false;
        }
        reply_rx.recv_deadline(deadline).is_ok()
    }

    /// Queues a ready-made record; the one place that counts drops.
    fn push(&self, record: Record) -> bool {
        match self.tx.try_send(Msg::Line(record)) {
            Ok(()) => true,
            Err(_) => {
                self.counters.dropped.fetch_add(1, Ordering::Relaxed);
                false
            }
        }
    }
}

impl LogWriterGuard {
    /// Stops the writer: every line already queued is written, every file flushed and closed,
    /// and the thread joined. Later appends return false.
    ///
    /// Call it after the shards have stopped appending; a line queued while the writer is
    /// leaving may be lost.
    pub fn shutdown(self) {
        self.0.stop();
    }
}

/// The current time in milliseconds since the Unix epoch (negative before it).
fn now_unix_millis() -> i64 {
    match SystemTime::now().duration_since(UNIX_EPOCH) {
        Ok(after) => i64::try_from(after.as_millis()).unwrap_or(i64::MAX),
        Err(before) => {
            let millis = before.duration().as_nanos().div_ceil(1_000_000);
            i64::try_from(millis).map_or(i64::MIN, |m| -m)
        }
    }
}

// ---------------------------------------------------------------------------------------------
// File names

/// The RFC 4648 base32 alphabet, lower-cased.
const BASE32: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";

/// Whether a key can be used as it is: non-empty and only `[a-z0-9_-]`.
fn is_plain_key(key: &str) -> bool {
    !key.is_empty()
        && key
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

/// The file-name stem for a channel key: a reversible encoding safe for any string.
///
/// Keys made only of `[a-z0-9_-]` become `c-<key>`; anything else (including the empty key)
/// becomes `x-<base32 of its UTF-8 bytes>` (RFC 4648 alphabet lower-cased, no padding). So a stem
/// never contains `/`, NUL, a control character or `..`, never starts with `.` or `-`, and
/// distinct keys give distinct stems. A key of up to 128 UTF-8 bytes (32 characters of any script)
/// gives a stem of at most 207 bytes, leaving room for `.YYYY-MM-DD.log` within 255.
pub fn file_stem(channel_key: &str) -> String {
    if is_plain_key(channel_key) {
        let mut stem = String::with_capacity(2 + channel_key.len());
        stem.push_str("c-");
        stem.push_str(channel_key);
        return stem;
    }
    let bytes = channel_key.as_bytes();
    let mut stem = String::with_capacity(2 + (bytes.len() * 8).div_ceil(5));
    stem.push_str("x-");
    let mut acc: u32 = 0;
    let mut bits: u32 = 0;
    for &b in bytes {
        acc = (acc << 8) | u32::from(b);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            stem.push(char::from(BASE32[((acc >> bits) & 31) as usize]));
        }
        acc &= (1 << bits) - 1;
    }
    if bits > 0 {
        stem.push(char::from(BASE32[((acc << (5 - bits)) & 31) as usize]));
    }
    stem
}

/// The channel key a stem made by [`file_stem`] stands for; `None` for anything `file_stem`
/// would not produce (unknown prefix, bad base32, non-canonical form, invalid UTF-8). Only the
/// tests read stems back, to show that the mapping is one-to-one.
#[cfg(test)]
fn decode_file_stem(stem: &str) -> Option<String> {
    let key = if let Some(plain) = stem.strip_prefix("c-") {
        plain.to_owned()
    } else if let Some(encoded) = stem.strip_prefix("x-") {
        let mut bytes = Vec::with_capacity(encoded.len() * 5 / 8);
        let mut acc: u32 = 0;
        let mut bits: u32 = 0;
        for c in encoded.bytes() {
            let value = BASE32.iter().position(|&a| a == c)?;
            acc = (acc << 5) | value as u32;
            bits += 5;
            if bits >= 8 {
                bits -= 8;
                bytes.push(((acc >> bits) & 0xff) as u8);
            }
            acc &= (1 << bits) - 1;
        }
        String::from_utf8(bytes).ok()?
    } else {
        return None;
    };
    // Only the canonical spelling decodes, so the mapping is one-to-one both ways.
    (file_stem(&key) == stem).then_some(key)
}

/// The log file name for a channel on a given day (days since 1970-01-01).
fn file_name(channel_key: &str, day: i64) -> String {
    format!("{}.{}.log", file_stem(channel_key), date_of(day))
}

// ---------------------------------------------------------------------------------------------
// Time

/// The UTC date `day` days after 1970-01-01; it prints as `YYYY-MM-DD`. A day outside the
/// calendar's range (no clock gives one) is taken as the epoch.
fn date_of(day: i64) -> time::Date {
    time::OffsetDateTime::from_unix_timestamp(day.saturating_mul(MILLIS_PER_DAY / 1_000))
        .map_or(time::OffsetDateTime::UNIX_EPOCH.date(), |t| t.date())
}

/// A Unix time in milliseconds split into its day number and UTC time of day.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct UtcMillis {
    /// Days since 1970-01-01.
    day: i64,
    /// Milliseconds since that day's midnight.
    millis_of_day: i64,
}

impl UtcMillis {
    fn new(unix_millis: i64) -> UtcMillis {
        UtcMillis {
            day: unix_millis.div_euclid(MILLIS_PER_DAY),
            millis_of_day: unix_millis.rem_euclid(MILLIS_PER_DAY),
        }
    }
}

impl fmt::Display for UtcMillis {
    /// `YYYY-MM-DDTHH:MM:SS.mmmZ`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = self.millis_of_day;
        write!(
            f,
            "{}T{:02}:{:02}:{:02}.{:03}Z",
            date_of(self.day),
            m / 3_600_000,
            m / 60_000 % 60,
            m / 1_000 % 60,
            m % 1_000
        )
    }
}

/// Writes one record as a log line: time, space, text with CR/LF made spaces, newline.
fn write_line(out: &mut impl Write, record: &Record) -> io::Result<()> {
    write!(out, "{} ", UtcMillis::new(record.unix_millis))?;
    let line: &str = &record.line;
    if line.contains(['\n', '\r']) {
        out.write_all(line.replace(['\n', '\r'], " ").as_bytes())?;
    } else {
        out.write_all(line.as_bytes())?;
    }
    out.write_all(b"\n")
}

// ---------------------------------------------------------------------------------------------
// The writer thread

/// One open log file.
struct OpenFile {
    /// The day (since 1970-01-01) this file is for; a record of another day needs another file.
    day: i64,
    /// Buffered so a burst of lines costs one `write(2)`.
    out: BufWriter<File>,
    /// Where it is, for warnings.
    path: PathBuf,
    /// The writer's tick when last written; the smallest is closed first.
    last_used: u64,
    /// Written since the last flush.
    dirty: bool,
}

/// Reports write errors at most once per [`COMPLAINT_INTERVAL`], counting the ones held back.
#[derive(Default)]
struct Complaints {
    last: Option<Instant>,
    held_back: u64,
}

impl Complaints {
    fn report(&mut self, what: &str, path: &Path, error: &io::Error) {
        let now = Instant::now();
        if self
            .last
            .is_some_and(|last| now.duration_since(last) < COMPLAINT_INTERVAL)
        {
            self.held_back += 1;
            return;
        }
        warn!(path = %path.display(), %error, held_back = self.held_back, "channel log: {what}");
        self.last = Some(now);
        self.held_back = 0;
    }
}

/// The writer thread's state: the open files and what it needs to report.
struct Writer {
    /// The log directory.
    dir: PathBuf,
    /// At most one open file per channel (today's, or the last day written), at most
    /// [`MAX_OPEN_FILES`] in all.
    files: HashMap<Arc<str>, OpenFile>,
    /// Counts records; orders files by last use.
    tick: u64,
    /// Shared with the handles.
    counters: Arc<Counters>,
    /// Rate limit for warnings.
    complaints: Complaints,
}

impl Writer {
    fn new(dir: PathBuf, counters: Arc<Counters>) -> Writer {
        Writer {
            dir,
            files: HashMap::new(),
            tick: 0,
            counters,
            complaints: Complaints::default(),
        }
    }

    /// Serves the queue until a stop request or until every sender is gone, then closes all.
    fn run(mut self, rx: Receiver<Msg>) {
        // Set when a line is written after the last flush: the latest time to flush it.
        let mut flush_due: Option<Instant> = None;
        loop {
            let msg = match flush_due {
                // Nothing unflushed: sleep until there is work.
                None => match rx.recv() {
                    Ok(msg) => msg,
                    Err(_) => break,
                },
                Some(due) => match rx.recv_timeout(due.saturating_duration_since(Instant::now())) {
                    Ok(msg) => msg,
                    Err(RecvTimeoutError::Timeout) => {
                        self.flush_all();
                        flush_due = None;
                        continue;
                    }
                    Err(RecvTimeoutError::Disconnected) => break,
                },
            };
            if matches!(msg, Msg::Stop) {
                // Lines accepted before the stop are written too.
                while let Ok(msg) = rx.try_recv() {
                    self.handle(msg);
                }
                break;
            }
            let was_line = matches!(msg, Msg::Line(_));
            self.handle(msg);
            if was_line && rx.is_empty() {
                // Rest before blocking again, so a steady stream of lines is taken in batches.
                thread::sleep(GATHER);
            }
            if was_line {
                let now = Instant::now();
                match flush_due {
                    None => flush_due = Some(now + FLUSH_INTERVAL),
                    Some(due) if now >= due => {
                        self.flush_all();
                        flush_due = None;
                    }
                    Some(_) => {}
                }
            } else {
                // A flush request flushed everything.
                flush_due = None;
            }
        }
        self.close_all();
    }

    /// Acts on one message other than a stop.
    fn handle(&mut self, msg: Msg) {
        match msg {
            Msg::Line(record) => self.write(&record),
            Msg::Flush(reply) => {
                self.flush_all();
                let _ = reply.send(());
            }
            Msg::Stop => {}
            #[cfg(test)]
            Msg::Hold { held, release } => {
                let _ = held.send(());
                let _ = release.recv();
            }
        }
    }

    /// Appends one record to its channel's file for its day, opening (and evicting) as needed.
    fn write(&mut self, record: &Record) {
        self.tick += 1;
        let day = UtcMillis::new(record.unix_millis).day;
        let current = self.files.get(&record.key).map(|f| f.day);
        if current != Some(day) {
            if current.is_some() {
                // The channel crossed midnight: its old day's file is done.
                if let Some(old) = self.files.remove(&record.key) {
                    self.close(old);
                }
            } else if self.files.len() >= MAX_OPEN_FILES {
                self.close_least_recent();
            }
            let path = self.dir.join(file_name(&record.key, day));
            match OpenOptions::new().create(true).append(true).open(&path) {
                Ok(file) => {
                    let opened = OpenFile {
                        day,
                        out: BufWriter::with_capacity(FILE_BUFFER, file),
                        path,
                        last_used: self.tick,
                        dirty: false,
                    };
                    self.files.insert(Arc::clone(&record.key), opened);
                    self.counters
                        .peak_open_files
                        .fetch_max(self.files.len(), Ordering::Relaxed);
                }
                Err(error) => {
                    self.counters.write_errors.fetch_add(1, Ordering::Relaxed);
                    self.complaints
                        .report("cannot open log file", &path, &error);
                    return;
                }
            }
        }
        let Some(file) = self.files.get_mut(&record.key) else {
            return;
        };
        file.last_used = self.tick;
        file.dirty = true;
        if let Err(error) = write_line(&mut file.out, record) {
            self.counters.write_errors.fetch_add(1, Ordering::Relaxed);
            self.complaints
                .report("cannot write log file", &file.path, &error);
            // Reopen on the next line rather than keep a broken buffer.
            if let Some(broken) = self.files.remove(&record.key) {
                let _ = broken.out.into_parts();
            }
        }
    }

    /// Flushes and closes the file used longest ago.
    fn close_least_recent(&mut self) {
        let oldest = self
            .files
            .iter()
            .min_by_key(|(_, f)| f.last_used)
            .map(|(key, _)| Arc::clone(key));
        if let Some(file) = oldest.and_then(|key| self.files.remove(&key)) {
            self.close(file);
        }
    }

    /// Flushes one file and closes it.
    fn close(&mut self, mut file: OpenFile) {
        if let Err(error) = file.out.flush() {
            self.counters.write_errors.fetch_add(1, Ordering::Relaxed);
            self.complaints
                .report("cannot flush log file", &file.path, &error);
        }
        // Drop the file without a second flush attempt on a buffer that failed.
        let _ = file.out.into_parts();
    }

    /// Flushes every file written since its last flush.
    fn flush_all(&mut self) {
        for file in self.files.values_mut().filter(|f| f.dirty) {
            file.dirty = false;
            if let Err(error) = file.out.flush() {
                self.counters.write_errors.fetch_add(1, Ordering::Relaxed);
                self.complaints
                    .report("cannot flush log file", &file.path, &error);
            }
        }
    }

    /// Flushes and closes every file.
    fn close_all(&mut self) {
        let files: Vec<OpenFile> = self.files.drain().map(|(_, f)| f).collect();
        for file in files {
            self.close(file);
        }
    }
}

// ---------------------------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    use super::*;

    const WAIT: Duration = Duration::from_secs(10);

    fn arc(s: &str) -> Arc<str> {
        Arc::from(s)
    }

    /// Milliseconds since the epoch of a UTC date and time (test-side inverse of `from_days`,
    /// written independently by counting years and months).
    fn unix_millis(y: i64, mo: u32, d: u32, h: i64, mi: i64, s: i64, ms: i64) -> i64 {
        let leap = |y: i64| (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
        let mut days = 0;
        for year in 1970..y {
            days += if leap(year) { 366 } else { 365 };
        }
        let lengths = [
            31,
            if leap(y) { 29 } else { 28 },
            31,
            30,
            31,
            30,
            31,
            31,
            30,
            31,
            30,
            31,
        ];
        for len in &lengths[..(mo - 1) as usize] {
            days += len;
        }
        days += i64::from(d) - 1;
        ((days * 24 + h) * 60 + mi) * 60_000 + s * 1_000 + ms
    }

    fn read(dir: &Path, key: &str, date: &str) -> String {
        let path = dir.join(format!("{}.{date}.log", file_stem(key)));
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    /// Puts the writer on hold; it resumes when the returned sender is dropped.
    fn hold_writer(log: &ChannelLog) -> Sender<()> {
        let (held_tx, held_rx) = crossbeam_channel::bounded(1);
        let (release_tx, release_rx) = crossbeam_channel::bounded(1);
        log.tx
            .send(Msg::Hold {
                held: held_tx,
                release: release_rx,
            })
            .unwrap();
        held_rx.recv_timeout(WAIT).unwrap();
        release_tx
    }

    fn sample_keys() -> Vec<String> {
        let mut keys: Vec<String> = [
            "a",
            "lobby",
            "rust-lang",
            "a_b",
            "0",
            "-",
            "_",
            "çafé",
            "日本語",
            "🦀",
            "🦀🦀",
            "A",
            "Lobby",
            "abc",
            "x-abc",
            "c-abc",
            "c-",
            "x-",
            "",
            " ",
            "a b",
            "a.b",
            "ab\u{0}",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        keys.push("𝄞".repeat(32));
        keys.push("z".repeat(128));
        keys.push("é".repeat(32));
        // Every base32 tail length (1 to 5 leftover bytes), and a whole block.
        for n in 1..=6 {
            keys.push("!".repeat(n));
        }
        keys
    }

    #[test]
    fn stems_round_trip_and_are_distinct() {
        let keys = sample_keys();
        let mut seen = std::collections::HashSet::new();
        for key in &keys {
            let stem = file_stem(key);
            assert_eq!(
                decode_file_stem(&stem).as_deref(),
                Some(key.as_str()),
                "{stem}"
            );
            assert!(seen.insert(stem.clone()), "two keys gave {stem}");
        }
        assert_eq!(file_stem("lobby"), "c-lobby");
        assert_eq!(file_stem("foobar"), "c-foobar");
        // RFC 4648 test vector, lower-cased and unpadded.
        assert_eq!(file_stem("Foobar"), "x-izxw6ytboi");
        assert_eq!(file_stem("f!"), "x-myqq");
    }

    #[test]
    fn decode_rejects_what_file_stem_never_makes() {
        for stem in [
            "", "c-", "c-A", "c-a b", "c-..", "x-1", "x-A", "x-m", "x-my", "x-mzxq", "y-abc",
            "abc", "x-mfrgg", // "abc" base32: the canonical stem is c-abc
            "x-7777",  // not UTF-8
        ] {
            assert_eq!(decode_file_stem(stem), None, "{stem}");
        }
    }

    #[test]
    fn stems_fit_in_a_file_name() {
        let longest = file_name(&"𝄞".repeat(32), 20_780);
        assert_eq!(longest.len(), 2 + 205 + ".2026-11-23.log".len());
        assert!(longest.len() < 255);
    }

    #[test]
    fn stems_are_safe_for_hostile_keys() {
        let dir = Path::new("/var/log/ringtalk");
        let hostile = [
            "",
            ".",
            "..",
            "...",
            "../x",
            "a/b",
            "/etc/passwd",
            "a\\b",
            "CON",
            "con",
            "nul",
            "\u{0}",
            "a\u{0}b",
            "\n",
            "\u{7f}",
            "\u{1b}[2J",
            "\u{fffd}",
            "\u{202e}",
            ".hidden",
            "-rf",
            "c-x",
            "x-y",
        ];
        for key in hostile {
            let name = file_name(key, 0);
            let path = dir.join(&name);
            assert_eq!(path.parent(), Some(dir), "{key:?} -> {name}");
            assert_eq!(
                path.file_name().and_then(|n| n.to_str()),
                Some(name.as_str())
            );
            assert!(!name.starts_with('.') && !name.starts_with('-'), "{name}");
            assert!(!name.contains(".."), "{name}");
            assert!(
                !name
                    .chars()
                    .any(|c| c == '/' || c == '\\' || c.is_control()),
                "{name:?}"
            );
            assert!(name.bytes().all(|b| b.is_ascii_graphic()), "{name:?}");
            assert_eq!(decode_file_stem(&file_stem(key)).as_deref(), Some(key));
        }
    }

    #[test]
    fn days_are_named_by_their_utc_date() {
        let known = [
            (0, "1970-01-01"),
            (-1, "1969-12-31"),
            (11_016, "2000-02-29"),
            (19_782, "2024-02-29"),
            (20_780, "2026-11-23"),
            (-25_508, "1900-03-01"),
            (47_541, "2100-03-01"),
            (-135_081, "1600-02-29"),
        ];
        for (day, date) in known {
            assert_eq!(date_of(day).to_string(), date, "{day}");
        }
        assert_eq!(file_name("lobby", 19_782), "c-lobby.2024-02-29.log");
    }

    #[test]
    fn timestamps_are_formatted_in_utc() {
        let t = unix_millis(2024, 2, 29, 23, 59, 59, 999);
        assert_eq!(UtcMillis::new(t).to_string(), "2024-02-29T23:59:59.999Z");
        assert_eq!(UtcMillis::new(0).to_string(), "1970-01-01T00:00:00.000Z");
        assert_eq!(UtcMillis::new(-1).to_string(), "1969-12-31T23:59:59.999Z");
        assert_eq!(
            UtcMillis::new(1_700_000_000_123).to_string(),
            "2023-11-14T22:13:20.123Z"
        );
    }

    #[test]
    fn one_channel_is_logged_in_order_with_the_right_format() {
        let dir = tempfile::tempdir().unwrap();
        let (log, guard) = ChannelLog::start(dir.path(), 64).unwrap();
        let key = arc("lobby");
        let t = unix_millis(2026, 11, 23, 12, 0, 0, 5);
        for (i, line) in ["alice: hi", "bob: hello", "* carol waves"]
            .iter()
            .enumerate()
        {
            assert!(log.push(Record::at(&key, &arc(line), t + i as i64)));
        }
        assert!(log.push(Record::at(&key, &arc("two\r\nlines"), t + 3)));
        assert!(log.flush_blocking(WAIT));
        assert_eq!(
            read(dir.path(), "lobby", "2026-11-23"),
            "2026-11-23T12:00:00.005Z alice: hi\n\
             2026-11-23T12:00:00.006Z bob: hello\n\
             2026-11-23T12:00:00.007Z * carol waves\n\
             2026-11-23T12:00:00.008Z two  lines\n"
        );
        guard.shutdown();
    }

    #[test]
    fn append_stamps_the_current_time() {
        let dir = tempfile::tempdir().unwrap();
        let (log, guard) = ChannelLog::start(dir.path(), 8).unwrap();
        let before = now_unix_millis();
        assert!(log.append(&arc("now"), &arc("hello")));
        let after = now_unix_millis();
        guard.shutdown();
        // The call may straddle midnight: look in the file of either day.
        let text = [before, after]
            .iter()
            .map(|&t| dir.path().join(file_name("now", UtcMillis::new(t).day)))
            .find_map(|path| std::fs::read_to_string(path).ok())
            .expect("a log file for today");
        let (stamp, rest) = text.split_once(' ').unwrap();
        assert_eq!(rest, "hello\n");
        assert!(
            (before..=after).any(|t| UtcMillis::new(t).to_string() == stamp),
            "{stamp} is not between {before} and {after}"
        );
    }

    #[test]
    fn two_channels_go_to_two_files() {
        let dir = tempfile::tempdir().unwrap();
        let (log, guard) = ChannelLog::start(dir.path(), 64).unwrap();
        let t = unix_millis(2024, 2, 29, 8, 30, 0, 0);
        let (a, b) = (arc("rust"), arc("日本語"));
        assert!(log.push(Record::at(&a, &arc("r1"), t)));
        assert!(log.push(Record::at(&b, &arc("j1"), t)));
        assert!(log.push(Record::at(&a, &arc("r2"), t)));
        assert!(log.flush_blocking(WAIT));
        assert_eq!(
            read(dir.path(), "rust", "2024-02-29"),
            "2024-02-29T08:30:00.000Z r1\n2024-02-29T08:30:00.000Z r2\n"
        );
        assert_eq!(
            read(dir.path(), "日本語", "2024-02-29"),
            "2024-02-29T08:30:00.000Z j1\n"
        );
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 2);
        guard.shutdown();
    }

    #[test]
    fn many_channels_stay_within_the_open_file_limit() {
        let dir = tempfile::tempdir().unwrap();
        let channels = MAX_OPEN_FILES + 44;
        let rounds = 3;
        let (log, guard) = ChannelLog::start(dir.path(), channels * rounds + 1).unwrap();
        let keys: Vec<Arc<str>> = (0..channels).map(|i| arc(&format!("ch{i}"))).collect();
        let t = unix_millis(2026, 11, 23, 0, 0, 0, 0);
        for round in 0..rounds {
            for (i, key) in keys.iter().enumerate() {
                let line = arc(&format!("round {round} of {i}"));
                assert!(log.push(Record::at(key, &line, t + round as i64)));
            }
        }
        assert!(log.flush_blocking(WAIT));
        assert_eq!(
            log.counters.peak_open_files.load(Ordering::Relaxed),
            MAX_OPEN_FILES
        );
        for (i, key) in keys.iter().enumerate() {
            let expected: String = (0..rounds)
                .map(|r| format!("2026-11-23T00:00:00.00{r}Z round {r} of {i}\n"))
                .collect();
            assert_eq!(read(dir.path(), key, "2026-11-23"), expected);
        }
        assert_eq!(log.dropped(), 0);
        assert_eq!(log.write_errors(), 0);
        guard.shutdown();
    }

    #[test]
    fn a_full_queue_drops_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let (log, guard) = ChannelLog::start(dir.path(), 4).unwrap();
        let release = hold_writer(&log);
        let key = arc("busy");
        let t = unix_millis(2026, 11, 23, 1, 2, 3, 4);
        for i in 0..4 {
            assert!(log.push(Record::at(&key, &arc(&format!("kept {i}")), t)));
        }
        assert!(!log.push(Record::at(&key, &arc("lost"), t)));
        assert!(!log.append(&key, &arc("lost too")));
        assert_eq!(log.dropped(), 2);
        drop(release);
        assert!(log.flush_blocking(WAIT));
        let text = read(dir.path(), "busy", "2026-11-23");
        assert_eq!(text.lines().count(), 4);
        assert!(!text.contains("lost"));
        guard.shutdown();
    }

    #[test]
    fn shutdown_writes_and_flushes_everything_queued() {
        let dir = tempfile::tempdir().unwrap();
        let (log, guard) = ChannelLog::start(dir.path(), 1_000).unwrap();
        let release = hold_writer(&log);
        let key = arc("last-words");
        let t = unix_millis(2000, 2, 29, 0, 0, 0, 0);
        for i in 0..500 {
            assert!(log.push(Record::at(&key, &arc(&format!("line {i}")), t)));
        }
        drop(release);
        guard.shutdown();
        let text = read(dir.path(), "last-words", "2000-02-29");
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 500);
        for (i, line) in lines.iter().enumerate() {
            assert_eq!(*line, format!("2000-02-29T00:00:00.000Z line {i}"));
        }
        // The writer is gone: appends fail fast and count.
        assert!(!log.append(&key, &arc("too late")));
        assert_eq!(log.dropped(), 1);
        assert!(!log.flush_blocking(WAIT));
    }

    #[test]
    fn a_new_utc_day_starts_a_new_file() {
        let dir = tempfile::tempdir().unwrap();
        let (log, guard) = ChannelLog::start(dir.path(), 16).unwrap();
        let key = arc("çafé");
        let midnight = unix_millis(2026, 11, 24, 0, 0, 0, 0);
        assert!(log.push(Record::at(&key, &arc("late"), midnight - 1)));
        assert!(log.push(Record::at(&key, &arc("early"), midnight)));
        assert!(log.push(Record::at(&key, &arc("later"), midnight + 1)));
        guard.shutdown();
        assert_eq!(
            read(dir.path(), "çafé", "2026-11-23"),
            "2026-11-23T23:59:59.999Z late\n"
        );
        assert_eq!(
            read(dir.path(), "çafé", "2026-11-24"),
            "2026-11-24T00:00:00.000Z early\n2026-11-24T00:00:00.001Z later\n"
        );
    }

    #[test]
    fn recent_lines_reach_the_file_without_an_explicit_flush() {
        let dir = tempfile::tempdir().unwrap();
        let (log, guard) = ChannelLog::start(dir.path(), 16).unwrap();
        let key = arc("tail");
        let t = unix_millis(2026, 11, 23, 0, 0, 0, 0);
        assert!(log.push(Record::at(&key, &arc("see me"), t)));
        let path = dir.path().join(file_name("tail", UtcMillis::new(t).day));
        // Polls the file itself (the thing `tail -f` sees); the timer flushes within 200 ms.
        let deadline = Instant::now() + WAIT;
        loop {
            if std::fs::read_to_string(&path).is_ok_and(|s| s.ends_with("see me\n")) {
                break;
            }
            assert!(Instant::now() < deadline, "the timer never flushed");
            thread::sleep(Duration::from_millis(5));
        }
        guard.shutdown();
    }

    #[test]
    fn open_errors_are_counted_not_fatal() {
        let dir = tempfile::tempdir().unwrap();
        let (log, guard) = ChannelLog::start(dir.path(), 16).unwrap();
        let t = unix_millis(2026, 11, 23, 0, 0, 0, 0);
        // Far longer than any file name the OS allows.
        let long = arc(&"é".repeat(200));
        assert!(log.push(Record::at(&long, &arc("nowhere"), t)));
        assert!(log.push(Record::at(&arc("fine"), &arc("still works"), t)));
        assert!(log.flush_blocking(WAIT));
        assert_eq!(log.write_errors(), 1);
        assert_eq!(
            read(dir.path(), "fine", "2026-11-23"),
            "2026-11-23T00:00:00.000Z still works\n"
        );
        guard.shutdown();
    }

    #[test]
    fn start_rejects_a_zero_capacity_and_creates_the_directory() {
        let dir = tempfile::tempdir().unwrap();
        assert!(ChannelLog::start(dir.path(), 0).is_err());
        let nested = dir.path().join("a/b/c");
        let (_log, guard) = ChannelLog::start(&nested, 1).unwrap();
        assert!(nested.is_dir());
        drop(guard); // dropping the guard also stops the writer
    }

    #[test]
    fn handles_can_be_shared_between_threads() {
        fn assert_send_sync<T: Send + Sync + Clone>() {}
        assert_send_sync::<ChannelLog>();
    }
}
