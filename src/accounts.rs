//! Registered users and persistent channels, in SQLite (in a cluster: NATS key-value buckets),
//! with bcrypt password hashes.
//!
//! # Why it looks like this
//!
//! Both SQLite and bcrypt block (bcrypt on purpose: at cost 12 a hash takes about a quarter of a
//! second). A shard must never block, so [`Accounts`] does no database or hashing work on the
//! calling thread: each method clones what it needs into a job for the process-wide
//! [`Workers`] pool and returns a future that awaits the answer. A full pool queue answers
//! [`AccountError::Busy`] at once, which the session turns into "Server busy, try again in a
//! moment." rather than letting logins pile up.
//!
//! # Storage
//!
//! - One file, `<data_dir>/ringtalk.db`. Each worker thread holds its own connection, so the
//!   database runs in WAL mode (readers do not block the writer) with `synchronous=NORMAL`
//!   (durable at each checkpoint, never corrupt) and a 5 s busy timeout for writers that meet.
//! - `user.name` is `UNIQUE COLLATE NOCASE`; usernames are ASCII, so that makes "Alice" and
//!   "alice" one user while keeping the case it was created with.
//! - `COLLATE NOCASE` folds only ASCII and channel names may not be, so `channel.key` holds the
//!   name's [`ChannelName::key`] (the one the shards compare by) and carries the uniqueness;
//!   `channel.name` is for display.
//! - Uniqueness is left to the database: two concurrent creates of one name give exactly one
//!   winner, the other sees the constraint fail.
//!
//! Closing the connections (when the [`WorkersGuard`] shuts the pool down) checkpoints the WAL,
//! one connection at a time, and truncates it.
//!
//! # In a cluster
//!
//! Nodes of a cluster must share their accounts and channels, and a node's SQLite file is its
//! own. So [`Accounts::open_with_store`] takes a [`Store`] (NATS JetStream key-value buckets; see
//! [`crate::cluster::store`]), and each worker's `Db` then reads and writes users and channels
//! there instead, with the same outcomes: the bucket's `create` picks the one winner of a race,
//! across nodes. bcrypt still runs here, on the workers, before anything is stored. While NATS
//! is away a request fails after the store's timeout (5 s), so no worker is held longer than
//! that. The SQLite file is still opened, and stays without users or channels.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::{params, Connection, ErrorCode, OptionalExtension};
use shard_proto::ChannelName;

use crate::cluster::store::Store;
use crate::workers::{JobError, StartError, SubmitError, Workers, WorkersGuard};

/// The name of the database file inside the data directory.
pub const DB_FILE: &str = "ringtalk.db";
/// The lowest bcrypt cost accepted (fast; for tests).
pub const MIN_BCRYPT_COST: u32 = 4;
/// The highest bcrypt cost accepted (a few seconds per login is already too slow).
pub const MAX_BCRYPT_COST: u32 = 16;
/// How long a connection waits for another's write lock before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

const USERNAME_MIN_CHARS: usize = 2;
const USERNAME_MAX_CHARS: usize = 24;
const PASSWORD_MIN_CHARS: usize = 6;
/// bcrypt keys its cipher with at most 72 bytes, and those include the NUL that ends the password.
const BCRYPT_KEY_BYTES: usize = 72;
/// The longest password that bcrypt hashes whole: its key limit less the NUL. Anything longer
/// would be cut short (so two passwords would collide), and `bcrypt::non_truncating_hash` refuses it.
const PASSWORD_MAX_BYTES: usize = BCRYPT_KEY_BYTES - 1;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS user (
    id            INTEGER PRIMARY KEY,
    name          TEXT    NOT NULL UNIQUE COLLATE NOCASE,
    password_hash TEXT    NOT NULL,
    created_at    INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS channel (
    id         INTEGER PRIMARY KEY,
    name       TEXT    NOT NULL,
    key        TEXT    NOT NULL UNIQUE,
    owner_id   INTEGER REFERENCES user(id),
    created_at INTEGER NOT NULL
);
";

/// Why a username or password was refused. `Display` is the message for the user.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CredentialError {
    /// The username is not 2 to 24 ASCII letters, digits, `_` or `-`.
    #[error(
        "Usernames are {} to {} letters, digits, _ or -.",
        USERNAME_MIN_CHARS,
        USERNAME_MAX_CHARS
    )]
    BadUsername,
    /// The password is shorter than 6 characters or longer than 71 bytes.
    #[error(
        "Passwords are {} characters to {} bytes.",
        PASSWORD_MIN_CHARS,
        PASSWORD_MAX_BYTES
    )]
    BadPassword,
}

/// Checks a username: 2 to 24 ASCII letters, digits, `_` or `-`.
pub fn validate_username(name: &str) -> Result<(), CredentialError> {
    let allowed = |b: u8| b.is_ascii_alphanumeric() || b == b'_' || b == b'-';
    // All allowed characters are ASCII, so bytes are characters.
    if (USERNAME_MIN_CHARS..=USERNAME_MAX_CHARS).contains(&name.len()) && name.bytes().all(allowed)
    {
        Ok(())
    } else {
        Err(CredentialError::BadUsername)
    }
}

/// Checks a password: at least 6 characters and at most 71 bytes (what bcrypt hashes whole).
pub fn validate_password(password: &str) -> Result<(), CredentialError> {
    if password.len() <= PASSWORD_MAX_BYTES && password.chars().count() >= PASSWORD_MIN_CHARS {
        Ok(())
    } else {
        Err(CredentialError::BadPassword)
    }
}

/// Why [`Accounts::open`] failed.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The bcrypt cost is outside 4..=16.
    #[error("bcrypt cost {0} is outside {MIN_BCRYPT_COST}..={MAX_BCRYPT_COST}")]
    BcryptCost(u32),
    /// The data directory could not be created.
    #[error("cannot create data directory {path}: {source}")]
    DataDir {
        /// The directory asked for.
        path: PathBuf,
        /// What the operating system said.
        source: std::io::Error,
    },
    /// The worker pool did not start; `StartError::State` holds the SQLite error from opening
    /// the database or creating the schema.
    #[error("cannot open the account database: {0}")]
    Start(#[from] StartError<rusqlite::Error>),
}

/// Why an account operation produced no answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AccountError {
    /// The worker queue is full; the user should retry shortly.
    #[error("Server busy, try again in a moment.")]
    Busy,
    /// The database or the worker failed; the text is for the log, not for the user.
    #[error("account storage failed: {0}")]
    Failed(String),
}

impl AccountError {
    /// The line to show the user (never any internal detail).
    pub fn user_message(&self) -> &'static str {
        match self {
            AccountError::Busy => "Server busy, try again in a moment.",
            AccountError::Failed(_) => "Something went wrong on the server, try again later.",
        }
    }
}

impl From<SubmitError> for AccountError {
    fn from(e: SubmitError) -> Self {
        match e {
            SubmitError::Busy => AccountError::Busy,
            SubmitError::Closed => AccountError::Failed(e.to_string()),
        }
    }
}

impl From<JobError> for AccountError {
    fn from(e: JobError) -> Self {
        AccountError::Failed(e.to_string())
    }
}

impl From<rusqlite::Error> for AccountError {
    fn from(e: rusqlite::Error) -> Self {
        AccountError::Failed(e.to_string())
    }
}

impl From<bcrypt::BcryptError> for AccountError {
    fn from(e: bcrypt::BcryptError) -> Self {
        AccountError::Failed(format!("bcrypt: {e}"))
    }
}

/// A registered user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// The database id; stable for the life of the account.
    pub id: i64,
    /// The name as stored, in the case it was created with.
    pub name: String,
}

/// The outcome of [`Accounts::login`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Login {
    /// The password matched.
    Ok(User),
    /// The user exists and the password did not match.
    WrongPassword,
    /// No user has this name.
    NoSuchUser,
}

/// The outcome of [`Accounts::create_user`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Created {
    /// The account now exists.
    Ok(User),
    /// Another account has this name, ignoring ASCII case.
    NameTaken,
    /// The name or password failed validation; nothing was stored.
    Invalid(CredentialError),
}

/// One worker thread's database connection.
struct Db {
    /// Used only on the worker thread that opened it.
    conn: Connection,
    /// Shared by every worker's `Db`: setup and the closing checkpoint take turns on it.
    turns: Arc<Mutex<()>>,
    /// In a cluster, where users and channels live instead of `conn`.
    store: Option<Store>,
}

impl Drop for Db {
    /// Checkpoints the WAL into the main file and truncates it, one connection at a time.
    ///
    /// SQLite checkpoints on close only when the closing connection is the last one, and two
    /// workers closing at once can each see the other and both skip it; an explicit checkpoint
    /// in turn does not depend on who closes last.
    fn drop(&mut self) {
        let _turn = self.turns.lock().unwrap_or_else(PoisonError::into_inner);
        // The pragma answers (busy, WAL frames, frames checkpointed); busy = 1 means it could not
        // finish, which is not an error to SQLite but leaves the WAL behind.
        let busy = self
            .conn
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |row| {
                row.get::<_, i64>(0)
            });
        match busy {
            Ok(0) => {}
            Ok(_) => tracing::warn!("database checkpoint at close was blocked; the WAL stays"),
            Err(e) => tracing::warn!("database checkpoint at close failed: {e}"),
        }
    }
}

/// Threads that check the passwords of suspect attempts (see [`Accounts::login`]).
pub const SUSPECT_THREADS: usize = 1;

/// The nice value of those threads: the lowest priority there is, which any process may take.
const SUSPECT_NICE: libc::c_int = 19;

/// Gives the calling thread the lowest CPU priority. A failure is only logged: the thread then
/// runs at the normal priority, and is still the only one for suspect attempts.
fn lower_this_threads_priority() {
    // SAFETY: plain system calls; `gettid` has no preconditions, and `setpriority` on this
    // thread's own id changes only this thread.
    let done = unsafe {
        let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
        libc::setpriority(libc::PRIO_PROCESS, tid, SUSPECT_NICE)
    };
    if done != 0 {
        tracing::warn!(error = %std::io::Error::last_os_error(), "cannot lower the priority of the thread for suspect logins");
    }
}

/// The shared, cloneable handle to accounts and channels. `Send + Sync`; clone one per shard.
#[derive(Clone)]
pub struct Accounts {
    /// The pool whose threads each own a [`Db`].
    workers: Workers<Db>,
    /// [`SUSPECT_THREADS`] more, at the lowest priority, for suspect password checks.
    suspect: Workers<Db>,
    /// The bcrypt cost for new hashes (existing hashes carry their own).
    cost: u32,
}

impl std::fmt::Debug for Accounts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Accounts")
            .field("cost", &self.cost)
            .field("queue_depth", &self.queue_depth())
            .finish()
    }
}

impl Accounts {
    /// Opens (creating if needed) `<data_dir>/ringtalk.db` and starts `threads` worker threads
    /// with a queue of `queue_capacity` jobs. Blocks until every thread has its connection:
    /// call it at startup, not on a shard. Keep the guard until exit; shutting it down closes the
    /// database cleanly.
    pub fn open(
        data_dir: &Path,
        bcrypt_cost: u32,
        threads: usize,
        queue_capacity: usize,
    ) -> Result<(Self, WorkersGuard), OpenError> {
        Self::open_with_store(data_dir, bcrypt_cost, threads, queue_capacity, None)
    }

    /// [`Accounts::open`], keeping users and channels in `store` when there is one (cluster
    /// mode) instead of the SQLite file. Shut the returned guard down before the store's.
    pub fn open_with_store(
        data_dir: &Path,
        bcrypt_cost: u32,
        threads: usize,
        queue_capacity: usize,
        store: Option<Store>,
    ) -> Result<(Self, WorkersGuard), OpenError> {
        if !(MIN_BCRYPT_COST..=MAX_BCRYPT_COST).contains(&bcrypt_cost) {
            return Err(OpenError::BcryptCost(bcrypt_cost));
        }
        std::fs::create_dir_all(data_dir).map_err(|source| OpenError::DataDir {
            path: data_dir.to_path_buf(),
            source,
        })?;
        let path = data_dir.join(DB_FILE);
        // Threads set up one at a time: switching to WAL and creating the schema need the
        // write lock, and taking turns is simpler than leaning on the busy timeout.
        let turns = Arc::new(Mutex::new(()));
        let opener = |lowered: bool| {
            let (path, turns, store) = (path.clone(), Arc::clone(&turns), store.clone());
            move || {
                if lowered {
                    lower_this_threads_priority();
                }
                let _turn = turns.lock().unwrap_or_else(PoisonError::into_inner);
                Db::open(&path, Arc::clone(&turns), store.clone())
            }
        };
        let (workers, guard) = Workers::start(threads, queue_capacity, opener(false))?;
        let (suspect, suspect_guard) =
            Workers::start(SUSPECT_THREADS, queue_capacity, opener(true))?;
        Ok((
            Accounts {
                workers,
                suspect,
                cost: bcrypt_cost,
            },
            guard.and(suspect_guard),
        ))
    }

    /// Whether a user has this name (ignoring ASCII case).
    pub fn user_exists(
        &self,
        name: &str,
    ) -> impl Future<Output = Result<bool, AccountError>> + Send + 'static {
        let name = name.to_owned();
        self.run(move |db| Ok(db.find_user(&name)?.is_some()))
    }

    /// Checks a password. The bcrypt verification runs on a worker thread; for a `suspect`
    /// attempt (from an address whose last login failed), on the one low-priority thread kept for
    /// those, so that however many addresses guess, they never keep the other workers from
    /// everyone else's logins, nor the CPU from anything else.
    pub fn login(
        &self,
        name: &str,
        password: &str,
        suspect: bool,
    ) -> impl Future<Output = Result<Login, AccountError>> + Send + 'static {
        let name = name.to_owned();
        let password = password.to_owned();
        let pool = if suspect {
            &self.suspect
        } else {
            &self.workers
        };
        Self::run_on(pool, move |db| {
            let Some((user, hash)) = db.find_user(&name)? else {
                return Ok(Login::NoSuchUser);
            };
            // No stored password is longer, and bcrypt would compare only a prefix: refused
            // without spending a hash on it.
            if password.len() > PASSWORD_MAX_BYTES {
                return Ok(Login::WrongPassword);
            }
            if bcrypt::verify(password.as_bytes(), &hash)? {
                Ok(Login::Ok(user))
            } else {
                Ok(Login::WrongPassword)
            }
        })
    }

    /// Validates, hashes (on a worker thread) and stores a new user. Of two concurrent creates
    /// of one name exactly one gets `Created::Ok`.
    pub fn create_user(
        &self,
        name: &str,
        password: &str,
    ) -> impl Future<Output = Result<Created, AccountError>> + Send + 'static {
        let submitted = match validate_username(name).and_then(|()| validate_password(password)) {
            Err(invalid) => Err(Created::Invalid(invalid)),
            Ok(()) => {
                let name = name.to_owned();
                let password = password.to_owned();
                let cost = self.cost;
                Ok(self.run(move |db| db.create_user(&name, &password, cost)))
            }
        };
        async move {
            match submitted {
                Err(refused) => Ok(refused),
                Ok(running) => running.await,
            }
        }
    }

    /// Stores a channel owned by user `owner`. `Ok(false)` if a channel with this name, ignoring
    /// case (Unicode lower-casing), already exists. The name is stored as given.
    pub fn create_channel(
        &self,
        channel: &ChannelName,
        owner: i64,
    ) -> impl Future<Output = Result<bool, AccountError>> + Send + 'static {
        let channel = channel.clone();
        self.run(move |db| db.create_channel(&channel, owner))
    }

    /// The stored channel of this name (ignoring case), as it was created.
    pub fn find_channel(
        &self,
        channel: &ChannelName,
    ) -> impl Future<Output = Result<Option<ChannelName>, AccountError>> + Send + 'static {
        let channel = channel.clone();
        self.run(move |db| db.find_channel(&channel))
    }

    /// Every stored channel's display name, oldest first.
    pub fn list_channels(
        &self,
    ) -> impl Future<Output = Result<Vec<String>, AccountError>> + Send + 'static {
        self.run(|db| db.list_channels())
    }

    /// Jobs waiting for a worker thread, for load reporting.
    pub fn queue_depth(&self) -> usize {
        self.workers.queue_depth() + self.suspect.queue_depth()
    }

    /// Submits `job` now (so `Busy` is decided at call time) and returns a future of its result
    /// that borrows nothing.
    fn run<T, F>(&self, job: F) -> impl Future<Output = Result<T, AccountError>> + Send + 'static
    where
        T: Send + 'static,
        F: FnOnce(&mut Db) -> Result<T, AccountError> + Send + 'static,
    {
        Self::run_on(&self.workers, job)
    }

    /// [`Accounts::run`] on a given pool.
    fn run_on<T, F>(
        pool: &Workers<Db>,
        job: F,
    ) -> impl Future<Output = Result<T, AccountError>> + Send + 'static
    where
        T: Send + 'static,
        F: FnOnce(&mut Db) -> Result<T, AccountError> + Send + 'static,
    {
        let submitted = pool.submit(job);
        async move { submitted?.await? }
    }
}

impl Db {
    /// Opens the database and prepares it; runs on a worker thread.
    fn open(
        path: &Path,
        turns: Arc<Mutex<()>>,
        store: Option<Store>,
    ) -> Result<Db, rusqlite::Error> {
        let conn = Connection::open(path)?;
        conn.busy_timeout(BUSY_TIMEOUT)?;
        let mode: String =
            conn.pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(rusqlite::Error::SqliteFailure(
                rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_ERROR),
                Some(format!("journal_mode stayed {mode}; WAL is needed")),
            ));
        }
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.pragma_update(None, "foreign_keys", true)?;
        conn.execute_batch(SCHEMA)?;
        Ok(Db { conn, turns, store })
    }

    /// The user with this name (ASCII case ignored) and their password hash.
    fn find_user(&mut self, name: &str) -> Result<Option<(User, String)>, AccountError> {
        if let Some(store) = &self.store {
            return store.find_user(name);
        }
        let mut stmt = self
            .conn
            .prepare_cached("SELECT id, name, password_hash FROM user WHERE name = ?1")?;
        let found = stmt
            .query_row([name], |row| {
                Ok((
                    User {
                        id: row.get(0)?,
                        name: row.get(1)?,
                    },
                    row.get::<_, String>(2)?,
                ))
            })
            .optional()?;
        Ok(found)
    }

    fn create_user(
        &mut self,
        name: &str,
        password: &str,
        cost: u32,
    ) -> Result<Created, AccountError> {
        // Skip the expensive hash when the name is visibly taken; the UNIQUE constraint (or the
        // store's create) still decides races.
        if self.find_user(name)?.is_some() {
            return Ok(Created::NameTaken);
        }
        let hash = bcrypt::non_truncating_hash(password.as_bytes(), cost)?;
        if let Some(store) = &self.store {
            return store.create_user(name, &hash);
        }
        let inserted = self
            .conn
            .prepare_cached(
                "INSERT INTO user (name, password_hash, created_at) VALUES (?1, ?2, ?3)",
            )?
            .execute(params![name, hash, unix_now()]);
        match inserted {
            Ok(_) => Ok(Created::Ok(User {
                id: self.conn.last_insert_rowid(),
                name: name.to_owned(),
            })),
            Err(e) if is_unique_violation(&e) => Ok(Created::NameTaken),
            Err(e) => Err(e.into()),
        }
    }

    fn create_channel(&mut self, channel: &ChannelName, owner: i64) -> Result<bool, AccountError> {
        if let Some(store) = &self.store {
            return store.create_channel(channel, owner);
        }
        let changed = self
            .conn
            .prepare_cached(
                "INSERT INTO channel (name, key, owner_id, created_at) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (key) DO NOTHING",
            )?
            .execute(params![
                channel.as_str(),
                &**channel.key(),
                owner,
                unix_now()
            ])?;
        Ok(changed == 1)
    }

    fn find_channel(&mut self, channel: &ChannelName) -> Result<Option<ChannelName>, AccountError> {
        if let Some(store) = &self.store {
            return store.find_channel(channel);
        }
        let name: Option<String> = self
            .conn
            .prepare_cached("SELECT name FROM channel WHERE key = ?1")?
            .query_row([&**channel.key()], |row| row.get(0))
            .optional()?;
        Ok(name.and_then(|name| ChannelName::new(&name).ok()))
    }

    fn list_channels(&mut self) -> Result<Vec<String>, AccountError> {
        if let Some(store) = &self.store {
            return store.list_channels();
        }
        let mut stmt = self
            .conn
            .prepare_cached("SELECT name FROM channel ORDER BY id")?;
        let names = stmt
            .query_map([], |row| row.get(0))?
            .collect::<Result<Vec<String>, _>>()?;
        Ok(names)
    }
}

/// Whether an insert failed on a UNIQUE constraint.
fn is_unique_violation(e: &rusqlite::Error) -> bool {
    matches!(
        e,
        rusqlite::Error::SqliteFailure(f, _)
            if f.code == ErrorCode::ConstraintViolation
                && f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
    )
}

/// Seconds since the Unix epoch (0 if the clock is before it).
pub(crate) fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::executor::block_on;
    use std::sync::{Arc, Barrier};

    fn chan(name: &str) -> ChannelName {
        ChannelName::new(name).unwrap()
    }

    fn open(dir: &Path, threads: usize) -> (Accounts, WorkersGuard) {
        Accounts::open(dir, MIN_BCRYPT_COST, threads, 64).expect("database opens")
    }

    fn created(outcome: Created) -> User {
        match outcome {
            Created::Ok(user) => user,
            other => panic!("expected a new user, got {other:?}"),
        }
    }

    #[test]
    fn username_rules() {
        let table: &[(&str, bool)] = &[
            ("al", true),
            ("Alice", true),
            ("bob_the-2nd", true),
            ("ABCDEFGHIJKLMNOPQRSTUVWX", true),   // 24
            ("ABCDEFGHIJKLMNOPQRSTUVWXY", false), // 25
            ("a", false),
            ("", false),
            ("has space", false),
            ("dot.ted", false),
            ("émile", false),
            ("ab\u{0}", false),
            ("tab\t", false),
        ];
        for &(name, ok) in table {
            assert_eq!(validate_username(name).is_ok(), ok, "{name:?}");
        }
        assert_eq!(
            validate_username("x").unwrap_err().to_string(),
            "Usernames are 2 to 24 letters, digits, _ or -."
        );
    }

    #[test]
    fn password_rules() {
        let table: &[(&str, bool)] = &[
            ("12345", false),
            ("123456", true),
            ("ééééé", false), // 5 chars, 10 bytes
            ("éééééé", true), // 6 chars
            (&"x".repeat(71), true),
            (&"x".repeat(72), false),
            (&format!("{}x", "é".repeat(35)), true), // 71 bytes
            (&"é".repeat(36), false),                // 72 bytes
            ("", false),
        ];
        for (password, ok) in table {
            assert_eq!(
                validate_password(password).is_ok(),
                *ok,
                "{} bytes",
                password.len()
            );
        }
        assert_eq!(
            validate_password("").unwrap_err().to_string(),
            "Passwords are 6 characters to 71 bytes."
        );
    }

    /// The longest passwords the rules accept, ASCII and multi-byte, each ending on the last byte
    /// allowed; and the shortest the rules refuse.
    fn longest_accepted() -> Vec<String> {
        vec![
            "x".repeat(71),
            format!("{}x", "é".repeat(35)),    // 2-byte characters
            format!("{}xy", "€".repeat(23)),   // 3-byte characters
            format!("{}xyz", "😀".repeat(17)), // 4-byte characters
        ]
    }

    fn shortest_refused() -> Vec<String> {
        vec![
            "x".repeat(72),
            "é".repeat(36),
            format!("{}xyz", "€".repeat(23)),
            format!("{}xyzw", "😀".repeat(17)),
        ]
    }

    /// Regression: a 72-byte password passed the rules, then bcrypt refused to hash it and account
    /// creation answered "Something went wrong". Every password the rules accept must go through
    /// the real hash and log in.
    #[test]
    fn a_password_the_rules_accept_never_fails_to_hash() {
        let dir = tempfile::tempdir().unwrap();
        let (accounts, _guard) = open(dir.path(), 1);
        for (i, password) in longest_accepted().iter().enumerate() {
            assert_eq!(password.len(), PASSWORD_MAX_BYTES, "{password:?}");
            assert!(validate_password(password).is_ok(), "{password:?}");
            let name = format!("long{i}");
            let user = created(block_on(accounts.create_user(&name, password)).unwrap());
            assert_eq!(
                block_on(accounts.login(&name, password, false)).unwrap(),
                Login::Ok(user)
            );
            // One byte less is another password, not a prefix that also logs in.
            let shorter: String = {
                let mut s = password.clone();
                s.pop();
                s
            };
            assert_eq!(
                block_on(accounts.login(&name, &shorter, false)).unwrap(),
                Login::WrongPassword
            );
        }
        for password in shortest_refused() {
            assert_eq!(password.len(), PASSWORD_MAX_BYTES + 1, "{password:?}");
            assert_eq!(
                block_on(accounts.create_user("toolong", &password)).unwrap(),
                Created::Invalid(CredentialError::BadPassword)
            );
            assert!(!block_on(accounts.user_exists("toolong")).unwrap());
        }
    }

    #[test]
    fn the_longest_password_the_rules_accept_hashes_whole() {
        // Found through the validator, not the constant, so the check and the hash cannot drift.
        for unit in ["x", "é", "€", "😀"] {
            let longest = (1..=200)
                .map(|n| unit.repeat(n))
                .take_while(|p| validate_password(p).is_ok() || p.chars().count() < 6)
                .last()
                .unwrap();
            let hash = bcrypt::non_truncating_hash(&longest, MIN_BCRYPT_COST)
                .unwrap_or_else(|e| panic!("{} bytes of {unit:?}: {e}", longest.len()));
            assert!(bcrypt::verify(&longest, &hash).unwrap());
        }
        assert!(
            bcrypt::non_truncating_hash("x".repeat(PASSWORD_MAX_BYTES + 1), MIN_BCRYPT_COST)
                .is_err(),
            "one byte more would be hashed cut short, so the limit could be higher"
        );
    }

    #[test]
    fn bcrypt_cost_out_of_range_is_rejected() {
        let dir = tempfile::tempdir().unwrap();
        for cost in [0, 3, 17, 31] {
            assert!(matches!(
                Accounts::open(dir.path(), cost, 1, 8),
                Err(OpenError::BcryptCost(c)) if c == cost
            ));
        }
        assert!(Accounts::open(dir.path(), 4, 1, 8).is_ok());
    }

    #[test]
    fn create_then_login() {
        let dir = tempfile::tempdir().unwrap();
        let (accounts, _guard) = open(dir.path(), 2);
        assert!(!block_on(accounts.user_exists("alice")).unwrap());
        let alice = created(block_on(accounts.create_user("alice", "secret1")).unwrap());
        assert_eq!(alice.name, "alice");
        assert!(block_on(accounts.user_exists("alice")).unwrap());
        assert_eq!(
            block_on(accounts.login("alice", "secret1", false)).unwrap(),
            Login::Ok(alice.clone())
        );
        // A suspect attempt is checked the same, on the thread kept for those.
        assert_eq!(
            block_on(accounts.login("alice", "secret1", true)).unwrap(),
            Login::Ok(alice)
        );
        assert_eq!(
            block_on(accounts.login("alice", "wrong-1", true)).unwrap(),
            Login::WrongPassword
        );
    }

    /// The thread for suspect attempts runs at the lowest priority, so its hashes take only CPU
    /// that nothing else wants.
    #[test]
    fn suspect_attempts_run_on_a_thread_of_the_lowest_priority() {
        let dir = tempfile::tempdir().unwrap();
        let (accounts, _guard) = open(dir.path(), 1);
        let nice = block_on(Accounts::run_on(&accounts.suspect, |_| {
            // SAFETY: plain system calls about the calling thread.
            Ok(unsafe {
                let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
                libc::getpriority(libc::PRIO_PROCESS, tid)
            })
        }))
        .unwrap();
        assert_eq!(nice, SUSPECT_NICE);
        let normal = block_on(Accounts::run_on(&accounts.workers, |_| {
            // SAFETY: as above.
            Ok(unsafe {
                let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
                libc::getpriority(libc::PRIO_PROCESS, tid)
            })
        }))
        .unwrap();
        assert!(normal < SUSPECT_NICE);
    }

    #[test]
    fn wrong_password_and_unknown_user() {
        let dir = tempfile::tempdir().unwrap();
        let (accounts, _guard) = open(dir.path(), 1);
        created(block_on(accounts.create_user("bob", "hunter22")).unwrap());
        assert_eq!(
            block_on(accounts.login("bob", "hunter23", false)).unwrap(),
            Login::WrongPassword
        );
        assert_eq!(
            block_on(accounts.login("bob", &"h".repeat(200), false)).unwrap(),
            Login::WrongPassword
        );
        assert_eq!(
            block_on(accounts.login("carol", "hunter22", false)).unwrap(),
            Login::NoSuchUser
        );
        assert_eq!(
            block_on(accounts.login("", "", false)).unwrap(),
            Login::NoSuchUser
        );
    }

    #[test]
    fn invalid_credentials_are_not_stored() {
        let dir = tempfile::tempdir().unwrap();
        let (accounts, _guard) = open(dir.path(), 1);
        assert_eq!(
            block_on(accounts.create_user("a b", "secret1")).unwrap(),
            Created::Invalid(CredentialError::BadUsername)
        );
        assert_eq!(
            block_on(accounts.create_user("dave", "short")).unwrap(),
            Created::Invalid(CredentialError::BadPassword)
        );
        assert!(!block_on(accounts.user_exists("dave")).unwrap());
    }

    #[test]
    fn names_ignore_case_and_keep_the_first_spelling() {
        let dir = tempfile::tempdir().unwrap();
        let (accounts, _guard) = open(dir.path(), 2);
        let alice = created(block_on(accounts.create_user("Alice", "secret1")).unwrap());
        assert_eq!(
            block_on(accounts.create_user("alice", "other-pw")).unwrap(),
            Created::NameTaken
        );
        assert!(block_on(accounts.user_exists("aLiCe")).unwrap());
        match block_on(accounts.login("ALICE", "secret1", false)).unwrap() {
            Login::Ok(user) => {
                assert_eq!(user, alice);
                assert_eq!(user.name, "Alice");
            }
            other => panic!("expected login, got {other:?}"),
        }
    }

    #[test]
    fn concurrent_creates_of_one_name_have_one_winner() {
        let dir = tempfile::tempdir().unwrap();
        let (accounts, _guard) = open(dir.path(), 2);
        for round in 0..4 {
            let name = format!("racer{round}");
            let barrier = Arc::new(Barrier::new(2));
            let racers: Vec<_> = [name.clone(), name.to_uppercase()]
                .into_iter()
                .map(|spelling| {
                    let accounts = accounts.clone();
                    let barrier = Arc::clone(&barrier);
                    std::thread::spawn(move || {
                        barrier.wait();
                        block_on(accounts.create_user(&spelling, "password"))
                    })
                })
                .collect();
            let outcomes: Vec<Created> = racers
                .into_iter()
                .map(|racer| racer.join().unwrap().unwrap())
                .collect();
            let winners = outcomes
                .iter()
                .filter(|o| matches!(o, Created::Ok(_)))
                .count();
            let losers = outcomes
                .iter()
                .filter(|o| matches!(o, Created::NameTaken))
                .count();
            assert_eq!((winners, losers), (1, 1), "{outcomes:?}");
        }
    }

    #[test]
    fn only_unique_violations_count_as_taken() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join(DB_FILE), Arc::default(), None).unwrap();
        let insert = "INSERT INTO user (name, password_hash, created_at) VALUES (?1, 'x', 0)";
        db.conn.execute(insert, ["Zed"]).unwrap();
        let duplicate = db.conn.execute(insert, ["zED"]).unwrap_err();
        assert!(is_unique_violation(&duplicate));
        let orphan = db
            .conn
            .execute(
                "INSERT INTO channel (name, key, owner_id, created_at) VALUES ('#a', '#a', 42, 0)",
                [],
            )
            .unwrap_err();
        assert!(!is_unique_violation(&orphan));
    }

    #[test]
    fn channels_are_unique_ignoring_unicode_case() {
        let dir = tempfile::tempdir().unwrap();
        let (accounts, _guard) = open(dir.path(), 2);
        let owner = created(block_on(accounts.create_user("owner", "secret1")).unwrap());
        assert!(block_on(accounts.list_channels()).unwrap().is_empty());
        assert!(block_on(accounts.create_channel(&chan("Rust"), owner.id)).unwrap());
        assert!(!block_on(accounts.create_channel(&chan("rust"), owner.id)).unwrap());
        assert!(block_on(accounts.create_channel(&chan("Çafé"), owner.id)).unwrap());
        assert!(!block_on(accounts.create_channel(&chan("çafé"), owner.id)).unwrap());
        assert!(!block_on(accounts.create_channel(&chan("ÇAFÉ"), owner.id)).unwrap());
        assert!(block_on(accounts.create_channel(&chan("lobby"), owner.id)).unwrap());
        assert_eq!(
            block_on(accounts.list_channels()).unwrap(),
            ["Rust", "Çafé", "lobby"]
        );
    }

    #[test]
    fn channel_with_unknown_owner_fails_cleanly() {
        let dir = tempfile::tempdir().unwrap();
        let (accounts, _guard) = open(dir.path(), 1);
        assert!(matches!(
            block_on(accounts.create_channel(&chan("ghost"), 999)),
            Err(AccountError::Failed(_))
        ));
        assert!(block_on(accounts.list_channels()).unwrap().is_empty());
    }

    #[test]
    fn data_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let data_dir = dir.path().join("nested").join("data");
        let (accounts, guard) = open(&data_dir, 2);
        let erin = created(block_on(accounts.create_user("Erin", "secret1")).unwrap());
        assert!(block_on(accounts.create_channel(&chan("home"), erin.id)).unwrap());
        guard.shutdown();
        assert!(matches!(
            block_on(accounts.user_exists("Erin")),
            Err(AccountError::Failed(_))
        ));
        // A clean close checkpoints the WAL into the main file.
        let wal = data_dir.join(format!("{DB_FILE}-wal"));
        assert!(!wal.exists() || std::fs::metadata(&wal).unwrap().len() == 0);

        let (reopened, _guard) = open(&data_dir, 2);
        assert_eq!(
            block_on(reopened.login("erin", "secret1", false)).unwrap(),
            Login::Ok(erin)
        );
        assert_eq!(block_on(reopened.list_channels()).unwrap(), ["home"]);
    }

    #[test]
    fn unusable_data_dir_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("not-a-dir");
        std::fs::write(&file, b"x").unwrap();
        assert!(matches!(
            Accounts::open(&file, MIN_BCRYPT_COST, 1, 8),
            Err(OpenError::DataDir { .. })
        ));
        let db_is_dir = dir.path().join("d");
        std::fs::create_dir_all(db_is_dir.join(DB_FILE)).unwrap();
        assert!(matches!(
            Accounts::open(&db_is_dir, MIN_BCRYPT_COST, 2, 8),
            Err(OpenError::Start(StartError::State(_)))
        ));
    }

    #[test]
    fn busy_messages() {
        assert_eq!(
            AccountError::Busy.to_string(),
            "Server busy, try again in a moment."
        );
        assert_eq!(
            AccountError::Busy.user_message(),
            "Server busy, try again in a moment."
        );
        assert!(!AccountError::Failed("disk I/O error".into())
            .user_message()
            .contains("disk"));
    }

    #[test]
    fn handle_and_futures_are_send() {
        fn assert_send_sync<T: Send + Sync + Clone>(_: &T) {}
        fn assert_send_static<T: Send + 'static>(_: &T) {}
        let dir = tempfile::tempdir().unwrap();
        let (accounts, _guard) = open(dir.path(), 1);
        assert_send_sync(&accounts);
        let name = String::from("x");
        let pending = accounts.login(&name, "y", false);
        drop(name);
        assert_send_static(&pending);
        assert_eq!(block_on(pending).unwrap(), Login::NoSuchUser);
    }
}
