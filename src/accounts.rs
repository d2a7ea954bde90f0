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
//! - An account also keeps when it was last seen, whether it is an administrator's and whether it
//!   is banned (columns of `user`), and the names it ignores (table `ignored`, in order). A
//!   channel keeps its settings ([`ChannelSettings`]): columns of `channel`, and its bans in
//!   table `channel_ban`. Both lists are bounded ([`MAX_IGNORED`], [`MAX_CHANNEL_BANS`]).
//! - `user.id` is `AUTOINCREMENT`: a deleted account's id is never given to another, so nothing
//!   that kept an id can mistake a new account for the old one. Deleting an account removes its
//!   ignore list and leaves the channels it owned without an owner (`owner_id` NULL).
//! - A password change or a deletion is written only over the hash that the password typed was
//!   checked against: two at once cannot both act on a password that one of them replaced.
//!
//! # Schema versions
//!
//! `PRAGMA user_version` says which schema a file has. The first worker to open a file brings an
//! older one up to date in one transaction (see `MIGRATE_FROM_0`), keeping every user, id and
//! channel; a file from a newer version is refused rather than misread.
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
use crate::stats::{Histogram, SharedHistogram};
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

/// The schema this version writes, as [`SCHEMA_VERSION`] (kept in `PRAGMA user_version`).
///
/// `user.id` is `AUTOINCREMENT` so that the id of a deleted account is never given to another:
/// without it SQLite reuses the highest id once its row is gone.
const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS user (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    name          TEXT    NOT NULL UNIQUE COLLATE NOCASE,
    password_hash TEXT    NOT NULL,
    created_at    INTEGER NOT NULL,
    last_seen     INTEGER,
    admin         INTEGER NOT NULL DEFAULT 0,
    banned        INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS channel (
    id          INTEGER PRIMARY KEY,
    name        TEXT    NOT NULL,
    key         TEXT    NOT NULL UNIQUE,
    owner_id    INTEGER REFERENCES user(id),
    created_at  INTEGER NOT NULL,
    topic       TEXT    NOT NULL DEFAULT '',
    topic_open  INTEGER NOT NULL DEFAULT 0,
    invite_only INTEGER NOT NULL DEFAULT 0,
    capacity    INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS ignored (
    user_id  INTEGER NOT NULL REFERENCES user(id) ON DELETE CASCADE,
    position INTEGER NOT NULL,
    name     TEXT    NOT NULL,
    PRIMARY KEY (user_id, position)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS channel_ban (
    channel_id INTEGER NOT NULL REFERENCES channel(id) ON DELETE CASCADE,
    position   INTEGER NOT NULL,
    name       TEXT    NOT NULL,
    PRIMARY KEY (channel_id, position)
) WITHOUT ROWID;
";

/// The schema version [`SCHEMA`] is. Version 0 is the first schema (users with a name, a hash and
/// a creation time; channels with an owner), which [`MIGRATE_FROM_0`] brings up to date.
const SCHEMA_VERSION: i64 = 1;

/// From schema version 0 to 1, in one transaction: the user table is rebuilt (ids kept) to make
/// its id `AUTOINCREMENT` and add the account's flags, which `ALTER TABLE` cannot do; the channel
/// table gets its settings as new columns (existing rows take the defaults); the lists are new.
const MIGRATE_FROM_0: &str = "
CREATE TABLE user_v1 (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    name          TEXT    NOT NULL UNIQUE COLLATE NOCASE,
    password_hash TEXT    NOT NULL,
    created_at    INTEGER NOT NULL,
    last_seen     INTEGER,
    admin         INTEGER NOT NULL DEFAULT 0,
    banned        INTEGER NOT NULL DEFAULT 0
);
INSERT INTO user_v1 (id, name, password_hash, created_at)
    SELECT id, name, password_hash, created_at FROM user;
DROP TABLE user;
ALTER TABLE user_v1 RENAME TO user;
ALTER TABLE channel ADD COLUMN topic       TEXT    NOT NULL DEFAULT '';
ALTER TABLE channel ADD COLUMN topic_open  INTEGER NOT NULL DEFAULT 0;
ALTER TABLE channel ADD COLUMN invite_only INTEGER NOT NULL DEFAULT 0;
ALTER TABLE channel ADD COLUMN capacity    INTEGER NOT NULL DEFAULT 0;
";

/// The most names one user's ignore list may hold (see [`Accounts::set_ignoring`]).
pub const MAX_IGNORED: usize = 100;
/// The most names one channel's ban list may hold (see [`Accounts::save_channel_settings`]).
pub const MAX_CHANNEL_BANS: usize = 1000;
/// The longest topic stored, in bytes (see [`Accounts::save_channel_settings`]).
pub const MAX_TOPIC_BYTES: usize = 1024;

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
    pub name: Arc<str>,
}

/// What a login returns beside the user (not kept in the session task).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoggedIn {
    /// The account.
    pub user: User,
    /// The names this user ignores, as stored by [`Accounts::set_ignoring`].
    pub ignoring: Vec<String>,
    /// Whether the account is an administrator's (see [`Accounts::set_admin`]).
    pub admin: bool,
}

/// The outcome of [`Accounts::login`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Login {
    /// The password matched.
    Ok(LoggedIn),
    /// The user exists and the password did not match.
    WrongPassword,
    /// No user has this name.
    NoSuchUser,
    /// The password matched, and the account may not log in (see [`Accounts::set_banned`]).
    /// Checked only after the password, so it tells nothing to whoever does not know it.
    Banned,
}

/// The outcome of [`Accounts::change_password`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PasswordChange {
    /// The new password is the account's now.
    Changed,
    /// The old password did not match (or the account is gone, or its password changed
    /// meanwhile); nothing was changed.
    WrongPassword,
    /// The new password failed validation; nothing was changed.
    Invalid(CredentialError),
}

/// The outcome of [`Accounts::delete_account`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Deleted {
    /// The account is gone, and its ignore list; channels it owned have no owner now.
    Deleted,
    /// The password did not match (or the account is gone already); nothing was deleted.
    WrongPassword,
}

/// What can be shown of an account to anyone (see [`Accounts::profile`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Profile {
    /// The name as stored, in the case it was created with.
    pub name: String,
    /// When the account was made, in Unix seconds.
    pub created_at: i64,
    /// When a session of it last ended, in Unix seconds; `None` if none has yet.
    pub last_seen: Option<i64>,
    /// Whether it is an administrator's.
    pub admin: bool,
    /// Whether it may not log in.
    pub banned: bool,
}

/// Everything stored for one account, as a backend hands it to the workers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountRecord {
    /// Its id and name.
    pub user: User,
    /// The bcrypt hash of its password.
    pub hash: String,
    /// When it was made, in Unix seconds.
    pub created_at: i64,
    /// When a session of it last ended, in Unix seconds.
    pub last_seen: Option<i64>,
    /// Whether it is an administrator's.
    pub admin: bool,
    /// Whether it may not log in.
    pub banned: bool,
    /// The names it ignores, in the order stored.
    pub ignoring: Vec<String>,
}

impl AccountRecord {
    /// What anyone may see of it.
    pub fn profile(&self) -> Profile {
        Profile {
            name: self.user.name.to_string(),
            created_at: self.created_at,
            last_seen: self.last_seen,
            admin: self.admin,
            banned: self.banned,
        }
    }
}

/// What is kept for a persistent channel beside its name.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ChannelSettings {
    /// The owner's user name as stored (display case); `None`: nobody (the owner was deleted).
    pub owner: Option<String>,
    /// The topic; "" is none.
    pub topic: String,
    /// Whether anyone may set the topic.
    pub topic_open: bool,
    /// Whether only those invited may join.
    pub invite_only: bool,
    /// The most members it takes; 0 is the server's default.
    pub capacity: u32,
    /// Banned user names, as typed at ban time; compared ignoring ASCII case.
    pub bans: Vec<String>,
}

/// Checks the lists and the topic of `settings` against what may be stored: at most
/// [`MAX_CHANNEL_BANS`] bans, each a username, and a topic of at most [`MAX_TOPIC_BYTES`].
/// Repeated bans (ignoring ASCII case) are dropped, the first kept.
pub(crate) fn checked_settings(
    mut settings: ChannelSettings,
) -> Result<ChannelSettings, AccountError> {
    settings.bans = checked_names(settings.bans, MAX_CHANNEL_BANS, "bans")?;
    if settings.topic.len() > MAX_TOPIC_BYTES {
        return Err(AccountError::Failed(format!(
            "a topic of {} bytes is over {MAX_TOPIC_BYTES}",
            settings.topic.len()
        )));
    }
    Ok(settings)
}

/// `names` with repeats (ignoring ASCII case) dropped, the first kept; an error if there are more
/// than `most` or one is not a username.
pub(crate) fn checked_names(
    names: Vec<String>,
    most: usize,
    what: &str,
) -> Result<Vec<String>, AccountError> {
    let mut kept: Vec<String> = Vec::with_capacity(names.len().min(most));
    for name in names {
        if validate_username(&name).is_err() {
            return Err(AccountError::Failed(format!(
                "{what}: {name:?} is not a username"
            )));
        }
        if kept.iter().any(|k| k.eq_ignore_ascii_case(&name)) {
            continue;
        }
        // Refused as soon as it is too long, so a huge list costs no more than a long one.
        if kept.len() == most {
            return Err(AccountError::Failed(format!(
                "{what}: more than {most} names"
            )));
        }
        kept.push(name);
    }
    Ok(kept)
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
    /// How long each bcrypt hash or check took, shared by every worker (for `GET /metrics`).
    bcrypt: Arc<SharedHistogram>,
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
    /// How long bcrypt took, on every worker thread.
    bcrypt: Arc<SharedHistogram>,
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
        let bcrypt = Arc::new(SharedHistogram::default());
        let opener = |lowered: bool| {
            let (path, turns, store) = (path.clone(), Arc::clone(&turns), store.clone());
            let bcrypt = Arc::clone(&bcrypt);
            move || {
                if lowered {
                    lower_this_threads_priority();
                }
                let _turn = turns.lock().unwrap_or_else(PoisonError::into_inner);
                Db::open(
                    &path,
                    Arc::clone(&turns),
                    store.clone(),
                    Arc::clone(&bcrypt),
                )
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
                bcrypt,
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
        self.run(move |db| Ok(db.find_account(&name)?.is_some()))
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
            let Some(account) = db.find_account(&name)? else {
                return Ok(Login::NoSuchUser);
            };
            if !password_matches(&password, &account.hash, &db.bcrypt)? {
                return Ok(Login::WrongPassword);
            }
            if account.banned {
                return Ok(Login::Banned);
            }
            Ok(Login::Ok(LoggedIn {
                user: account.user,
                ignoring: account.ignoring,
                admin: account.admin,
            }))
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

    /// Changes a password: `old` must be the account's password, `new` must pass
    /// [`validate_password`] (checked here, before any work is queued). The check and the new
    /// hash run on a worker thread; the account keeps its id. [`PasswordChange::WrongPassword`]
    /// also when there is no such account, or its password changed while this one was checked.
    pub fn change_password(
        &self,
        name: &str,
        old: &str,
        new: &str,
    ) -> impl Future<Output = Result<PasswordChange, AccountError>> + Send + 'static {
        let submitted = match validate_password(new) {
            Err(invalid) => Err(PasswordChange::Invalid(invalid)),
            Ok(()) => {
                let (name, old, new) = (name.to_owned(), old.to_owned(), new.to_owned());
                let cost = self.cost;
                Ok(self.run(move |db| db.change_password(&name, &old, &new, cost)))
            }
        };
        async move {
            match submitted {
                Err(refused) => Ok(refused),
                Ok(running) => running.await,
            }
        }
    }

    /// Deletes an account whose password is `password`, with its ignore list; channels it owned
    /// are left with no owner. The name is free again at once, and an account made under it gets
    /// a new id. [`Deleted::WrongPassword`] also when there is no such account.
    pub fn delete_account(
        &self,
        name: &str,
        password: &str,
    ) -> impl Future<Output = Result<Deleted, AccountError>> + Send + 'static {
        let (name, password) = (name.to_owned(), password.to_owned());
        self.run(move |db| db.delete_account(&name, &password))
    }

    /// What anyone may see of the account with this name (ASCII case ignored); `None` if there is
    /// none.
    pub fn profile(
        &self,
        name: &str,
    ) -> impl Future<Output = Result<Option<Profile>, AccountError>> + Send + 'static {
        let name = name.to_owned();
        self.run(move |db| Ok(db.find_account(&name)?.map(|a| a.profile())))
    }

    /// Records that a session of this account ended at `at` (Unix seconds). Nothing happens if
    /// there is no such account.
    ///
    /// Unlike the other methods, the write happens even if the returned future is dropped before
    /// a worker reaches it (a session that ends is not there to wait), as long as it was queued:
    /// the future is only for who wants to know how it went.
    pub fn record_last_seen(
        &self,
        name: &str,
        at: i64,
    ) -> impl Future<Output = Result<(), AccountError>> + Send + 'static {
        let name = name.to_owned();
        let (done, answer) = futures::channel::oneshot::channel();
        let submitted = self.workers.submit_detached(move |db: &mut Db| {
            // Nobody may be listening any more.
            let _ = done.send(db.record_last_seen(&name, at));
        });
        async move {
            submitted?;
            // A job that panicked dropped its sender.
            answer
                .await
                .map_err(|_| AccountError::from(JobError::Dropped))?
        }
    }

    /// Replaces the whole list of names this account ignores. At most [`MAX_IGNORED`] names, each
    /// a username (see [`validate_username`]); repeats (ignoring ASCII case) are dropped, the first
    /// kept. A longer list, or one with a name that is no username, is refused with
    /// [`AccountError::Failed`] and nothing is stored: callers check the bound first, and tell
    /// their user. Nothing happens if there is no such account.
    pub fn set_ignoring(
        &self,
        name: &str,
        ignoring: Vec<String>,
    ) -> impl Future<Output = Result<(), AccountError>> + Send + 'static {
        let name = name.to_owned();
        let checked = checked_names(ignoring, MAX_IGNORED, "ignore list");
        let submitted =
            checked.map(|ignoring| self.run(move |db| db.set_ignoring(&name, ignoring)));
        async move { submitted?.await }
    }

    /// Makes the account an administrator's, or not. `Ok(false)`: there is no such account.
    pub fn set_admin(
        &self,
        name: &str,
        admin: bool,
    ) -> impl Future<Output = Result<bool, AccountError>> + Send + 'static {
        let name = name.to_owned();
        self.run(move |db| db.set_flag(&name, Flag::Admin, admin))
    }

    /// Bans the account from logging in, or lifts the ban. `Ok(false)`: there is no such account.
    /// Sessions already logged in are not touched here.
    pub fn set_banned(
        &self,
        name: &str,
        banned: bool,
    ) -> impl Future<Output = Result<bool, AccountError>> + Send + 'static {
        let name = name.to_owned();
        self.run(move |db| db.set_flag(&name, Flag::Banned, banned))
    }

    /// The names of the administrators' accounts, sorted ignoring ASCII case.
    pub fn admins(
        &self,
    ) -> impl Future<Output = Result<Vec<String>, AccountError>> + Send + 'static {
        self.run(|db| db.admins())
    }

    /// The settings of the stored channel of this name (ignoring case); `None` if there is none.
    /// A channel just made has its creator as owner and every other setting at its default.
    pub fn channel_settings(
        &self,
        channel: &ChannelName,
    ) -> impl Future<Output = Result<Option<ChannelSettings>, AccountError>> + Send + 'static {
        let channel = channel.clone();
        self.run(move |db| db.channel_settings(&channel))
    }

    /// Every stored channel with its settings, oldest first (for loading at start). A channel
    /// whose stored name is no longer valid is left out and logged.
    pub fn all_channel_settings(
        &self,
    ) -> impl Future<Output = Result<Vec<(ChannelName, ChannelSettings)>, AccountError>> + Send + 'static
    {
        self.run(|db| db.all_channel_settings())
    }

    /// Replaces the settings of the stored channel of this name (ignoring case); `Ok(false)`: there
    /// is no such channel. An owner name that is no account is stored as no owner. Refused with
    /// [`AccountError::Failed`], nothing stored, when the settings break a bound (at most
    /// [`MAX_CHANNEL_BANS`] bans, each a username; a topic of at most [`MAX_TOPIC_BYTES`]); repeated
    /// bans (ignoring ASCII case) are dropped, the first kept.
    pub fn save_channel_settings(
        &self,
        channel: &ChannelName,
        settings: ChannelSettings,
    ) -> impl Future<Output = Result<bool, AccountError>> + Send + 'static {
        let channel = channel.clone();
        let submitted = checked_settings(settings)
            .map(|settings| self.run(move |db| db.save_channel_settings(&channel, settings)));
        async move { submitted?.await }
    }

    /// Deletes the stored channel of this name (ignoring case) and its settings; `Ok(false)`: there
    /// is no such channel.
    pub fn delete_channel(
        &self,
        channel: &ChannelName,
    ) -> impl Future<Output = Result<bool, AccountError>> + Send + 'static {
        let channel = channel.clone();
        self.run(move |db| db.delete_channel(&channel))
    }

    /// Jobs waiting for a worker thread, for load reporting.
    pub fn queue_depth(&self) -> usize {
        self.workers.queue_depth() + self.suspect.queue_depth()
    }

    /// How long every bcrypt hash and check since start took.
    pub fn bcrypt_times(&self) -> Histogram {
        self.bcrypt.snapshot()
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

/// An account flag that [`Accounts::set_admin`] and [`Accounts::set_banned`] change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flag {
    /// The account is an administrator's.
    Admin,
    /// The account may not log in.
    Banned,
}

/// Whether `password` is the one `hash` was made from. A password longer than any stored one is
/// not, without spending a hash on it (bcrypt would compare only a prefix).
fn password_matches(
    password: &str,
    hash: &str,
    times: &SharedHistogram,
) -> Result<bool, AccountError> {
    if password.len() > PASSWORD_MAX_BYTES {
        return Ok(false);
    }
    Ok(times.time(|| bcrypt::verify(password.as_bytes(), hash))?)
}

impl Db {
    /// Opens the database and prepares it, bringing an older schema up to date; runs on a worker
    /// thread, one at a time.
    fn open(
        path: &Path,
        turns: Arc<Mutex<()>>,
        store: Option<Store>,
        bcrypt: Arc<SharedHistogram>,
    ) -> Result<Db, rusqlite::Error> {
        let mut conn = Connection::open(path)?;
        conn.busy_timeout(BUSY_TIMEOUT)?;
        let mode: String =
            conn.pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(sqlite_error(format!(
                "journal_mode stayed {mode}; WAL is needed"
            )));
        }
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        // With foreign keys off (the bundled SQLite starts with them on): the migration drops
        // and renames a table others refer to.
        conn.pragma_update(None, "foreign_keys", false)?;
        migrate(&mut conn)?;
        conn.pragma_update(None, "foreign_keys", true)?;
        Ok(Db {
            conn,
            turns,
            store,
            bcrypt,
        })
    }

    /// Everything stored for the account with this name (ASCII case ignored).
    fn find_account(&mut self, name: &str) -> Result<Option<AccountRecord>, AccountError> {
        if let Some(store) = &self.store {
            return store.find_account(name);
        }
        let found = self
            .conn
            .prepare_cached(
                "SELECT id, name, password_hash, created_at, last_seen, admin, banned
                 FROM user WHERE name = ?1",
            )?
            .query_row([name], |row| {
                Ok(AccountRecord {
                    user: User {
                        id: row.get(0)?,
                        name: row.get(1)?,
                    },
                    hash: row.get(2)?,
                    created_at: row.get(3)?,
                    last_seen: row.get(4)?,
                    admin: row.get(5)?,
                    banned: row.get(6)?,
                    ignoring: Vec::new(),
                })
            })
            .optional()?;
        let Some(mut account) = found else {
            return Ok(None);
        };
        account.ignoring = self
            .conn
            .prepare_cached("SELECT name FROM ignored WHERE user_id = ?1 ORDER BY position")?
            .query_map([account.user.id], |row| row.get(0))?
            .collect::<Result<_, _>>()?;
        Ok(Some(account))
    }

    fn create_user(
        &mut self,
        name: &str,
        password: &str,
        cost: u32,
    ) -> Result<Created, AccountError> {
        // Skip the expensive hash when the name is visibly taken; the UNIQUE constraint (or the
        // store's create) still decides races.
        if self.find_account(name)?.is_some() {
            return Ok(Created::NameTaken);
        }
        let hash = self
            .bcrypt
            .time(|| bcrypt::non_truncating_hash(password.as_bytes(), cost))?;
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
                name: name.into(),
            })),
            Err(e) if is_unique_violation(&e) => Ok(Created::NameTaken),
            Err(e) => Err(e.into()),
        }
    }

    fn change_password(
        &mut self,
        name: &str,
        old: &str,
        new: &str,
        cost: u32,
    ) -> Result<PasswordChange, AccountError> {
        let Some(account) = self.find_account(name)? else {
            return Ok(PasswordChange::WrongPassword);
        };
        if !password_matches(old, &account.hash, &self.bcrypt)? {
            return Ok(PasswordChange::WrongPassword);
        }
        let hash = self
            .bcrypt
            .time(|| bcrypt::non_truncating_hash(new.as_bytes(), cost))?;
        // Only over the hash just checked: a change that came meanwhile made `old` stale.
        let replaced = match &self.store {
            Some(store) => store.replace_hash(&account.user.name, &account.hash, &hash)?,
            None => {
                self.conn
                    .prepare_cached(
                        "UPDATE user SET password_hash = ?1 WHERE id = ?2 AND password_hash = ?3",
                    )?
                    .execute(params![hash, account.user.id, account.hash])?
                    == 1
            }
        };
        Ok(if replaced {
            PasswordChange::Changed
        } else {
            PasswordChange::WrongPassword
        })
    }

    fn delete_account(&mut self, name: &str, password: &str) -> Result<Deleted, AccountError> {
        let Some(account) = self.find_account(name)? else {
            return Ok(Deleted::WrongPassword);
        };
        if !password_matches(password, &account.hash, &self.bcrypt)? {
            return Ok(Deleted::WrongPassword);
        }
        let deleted = match &self.store {
            Some(store) => store.delete_account(&account.user.name, &account.hash)?,
            None => {
                let id = account.user.id;
                let tx = self.conn.transaction()?;
                tx.execute(
                    "UPDATE channel SET owner_id = NULL WHERE owner_id = ?1",
                    [id],
                )?;
                tx.execute("DELETE FROM ignored WHERE user_id = ?1", [id])?;
                // Only if the password checked is still the account's.
                let gone = tx.execute(
                    "DELETE FROM user WHERE id = ?1 AND password_hash = ?2",
                    params![id, account.hash],
                )?;
                if gone == 1 {
                    tx.commit()?;
                }
                // Dropped without a commit, the transaction rolls back.
                gone == 1
            }
        };
        Ok(if deleted {
            Deleted::Deleted
        } else {
            Deleted::WrongPassword
        })
    }

    fn record_last_seen(&mut self, name: &str, at: i64) -> Result<(), AccountError> {
        if let Some(store) = &self.store {
            return store.record_last_seen(name, at);
        }
        self.conn
            .prepare_cached("UPDATE user SET last_seen = ?1 WHERE name = ?2")?
            .execute(params![at, name])?;
        Ok(())
    }

    /// Replaces the ignore list; `ignoring` is already checked (see [`checked_names`]).
    fn set_ignoring(&mut self, name: &str, ignoring: Vec<String>) -> Result<(), AccountError> {
        if let Some(store) = &self.store {
            return store.set_ignoring(name, ignoring);
        }
        let tx = self.conn.transaction()?;
        let id: Option<i64> = tx
            .prepare_cached("SELECT id FROM user WHERE name = ?1")?
            .query_row([name], |row| row.get(0))
            .optional()?;
        let Some(id) = id else {
            return Ok(());
        };
        tx.execute("DELETE FROM ignored WHERE user_id = ?1", [id])?;
        {
            let mut insert = tx.prepare_cached(
                "INSERT INTO ignored (user_id, position, name) VALUES (?1, ?2, ?3)",
            )?;
            for (position, ignored) in ignoring.iter().enumerate() {
                insert.execute(params![id, position as i64, ignored])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    fn set_flag(&mut self, name: &str, flag: Flag, on: bool) -> Result<bool, AccountError> {
        if let Some(store) = &self.store {
            return store.set_flag(name, flag, on);
        }
        let sql = match flag {
            Flag::Admin => "UPDATE user SET admin = ?1 WHERE name = ?2",
            Flag::Banned => "UPDATE user SET banned = ?1 WHERE name = ?2",
        };
        let changed = self.conn.prepare_cached(sql)?.execute(params![on, name])?;
        Ok(changed == 1)
    }

    fn admins(&mut self) -> Result<Vec<String>, AccountError> {
        if let Some(store) = &self.store {
            return store.admins();
        }
        let names = self
            .conn
            .prepare_cached("SELECT name FROM user WHERE admin ORDER BY name COLLATE NOCASE")?
            .query_map([], |row| row.get(0))?
            .collect::<Result<Vec<String>, _>>()?;
        Ok(names)
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

    fn channel_settings(
        &mut self,
        channel: &ChannelName,
    ) -> Result<Option<ChannelSettings>, AccountError> {
        if let Some(store) = &self.store {
            return store.channel_settings(channel);
        }
        Ok(self
            .stored_channels(Some(channel))?
            .into_iter()
            .next()
            .map(|(_, settings)| settings))
    }

    fn all_channel_settings(
        &mut self,
    ) -> Result<Vec<(ChannelName, ChannelSettings)>, AccountError> {
        if let Some(store) = &self.store {
            return store.all_channel_settings();
        }
        self.stored_channels(None)
    }

    /// The channel `only` (ignoring case), or every channel, oldest first, with its settings.
    fn stored_channels(
        &mut self,
        only: Option<&ChannelName>,
    ) -> Result<Vec<(ChannelName, ChannelSettings)>, AccountError> {
        let key: Option<&str> = only.map(|c| &**c.key());
        // `?1 IS NULL` selects every channel.
        let rows: Vec<(i64, String, ChannelSettings)> = self
            .conn
            .prepare_cached(
                "SELECT c.id, c.name, u.name, c.topic, c.topic_open, c.invite_only, c.capacity
                 FROM channel c LEFT JOIN user u ON u.id = c.owner_id
                 WHERE ?1 IS NULL OR c.key = ?1
                 ORDER BY c.id",
            )?
            .query_map([key], |row| {
                Ok((
                    row.get(0)?,
                    row.get(1)?,
                    ChannelSettings {
                        owner: row.get(2)?,
                        topic: row.get(3)?,
                        topic_open: row.get(4)?,
                        invite_only: row.get(5)?,
                        capacity: row.get(6)?,
                        bans: Vec::new(),
                    },
                ))
            })?
            .collect::<Result<_, _>>()?;
        let mut channels = Vec::with_capacity(rows.len());
        let mut bans = self.conn.prepare_cached(
            "SELECT name FROM channel_ban WHERE channel_id = ?1 ORDER BY position",
        )?;
        for (id, name, mut settings) in rows {
            let Ok(name) = ChannelName::new(&name) else {
                tracing::warn!(channel = %name, "a stored channel's name is not valid; left out");
                continue;
            };
            settings.bans = bans
                .query_map([id], |row| row.get(0))?
                .collect::<Result<_, _>>()?;
            channels.push((name, settings));
        }
        Ok(channels)
    }

    /// Replaces a channel's settings; `settings` are already checked (see [`checked_settings`]).
    fn save_channel_settings(
        &mut self,
        channel: &ChannelName,
        settings: ChannelSettings,
    ) -> Result<bool, AccountError> {
        if let Some(store) = &self.store {
            return store.save_channel_settings(channel, settings);
        }
        let tx = self.conn.transaction()?;
        let id: Option<i64> = tx
            .prepare_cached(
                "UPDATE channel SET
                     owner_id = (SELECT id FROM user WHERE name = ?2),
                     topic = ?3, topic_open = ?4, invite_only = ?5, capacity = ?6
                 WHERE key = ?1
                 RETURNING id",
            )?
            .query_row(
                params![
                    &**channel.key(),
                    settings.owner,
                    settings.topic,
                    settings.topic_open,
                    settings.invite_only,
                    settings.capacity,
                ],
                |row| row.get(0),
            )
            .optional()?;
        let Some(id) = id else {
            return Ok(false);
        };
        tx.execute("DELETE FROM channel_ban WHERE channel_id = ?1", [id])?;
        {
            let mut insert = tx.prepare_cached(
                "INSERT INTO channel_ban (channel_id, position, name) VALUES (?1, ?2, ?3)",
            )?;
            for (position, banned) in settings.bans.iter().enumerate() {
                insert.execute(params![id, position as i64, banned])?;
            }
        }
        tx.commit()?;
        Ok(true)
    }

    fn delete_channel(&mut self, channel: &ChannelName) -> Result<bool, AccountError> {
        if let Some(store) = &self.store {
            return store.delete_channel(channel);
        }
        // Its bans go with it (ON DELETE CASCADE).
        let changed = self
            .conn
            .prepare_cached("DELETE FROM channel WHERE key = ?1")?
            .execute([&**channel.key()])?;
        Ok(changed == 1)
    }
}

/// Brings the database to [`SCHEMA_VERSION`]: creates it if it is new, migrates it if it is older
/// (in one transaction, so a failure leaves it as it was), and refuses one from a newer version.
/// Call with foreign keys off.
fn migrate(conn: &mut Connection) -> Result<(), rusqlite::Error> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let version: i64 = tx.query_row("PRAGMA user_version", [], |row| row.get(0))?;
    let has_users: bool = tx.query_row(
        "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'user')",
        [],
        |row| row.get(0),
    )?;
    match version {
        SCHEMA_VERSION => {}
        0 if has_users => {
            tx.execute_batch(MIGRATE_FROM_0)?;
            tracing::info!("account database migrated from schema 0 to {SCHEMA_VERSION}");
        }
        0 => {}
        newer => {
            return Err(sqlite_error(format!(
                "the account database has schema version {newer}, from a newer ringtalk; this one knows up to {SCHEMA_VERSION}"
            )))
        }
    }
    // Creates what is missing: everything in a new file, the new tables after a migration.
    tx.execute_batch(SCHEMA)?;
    if version != SCHEMA_VERSION {
        // The rebuilt user table must have kept every id that channels refer to.
        let broken: Option<String> = tx
            .query_row("PRAGMA foreign_key_check", [], |row| row.get(0))
            .optional()?;
        if let Some(table) = broken {
            return Err(sqlite_error(format!(
                "after the migration a row of {table} refers to nothing; the database is left as it was"
            )));
        }
        tx.pragma_update(None, "user_version", SCHEMA_VERSION)?;
    }
    tx.commit()
}

/// An error of our own, in SQLite's type.
fn sqlite_error(why: String) -> rusqlite::Error {
    rusqlite::Error::SqliteFailure(
        rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_ERROR),
        Some(why),
    )
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

    /// A login's outcome for `user` with nothing ignored and no admin flag.
    fn logged_in(user: User) -> Login {
        Login::Ok(LoggedIn {
            user,
            ignoring: Vec::new(),
            admin: false,
        })
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
                logged_in(user)
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
        assert_eq!(&*alice.name, "alice");
        assert!(block_on(accounts.user_exists("alice")).unwrap());
        assert_eq!(
            block_on(accounts.login("alice", "secret1", false)).unwrap(),
            logged_in(alice.clone())
        );
        // A suspect attempt is checked the same, on the thread kept for those.
        assert_eq!(
            block_on(accounts.login("alice", "secret1", true)).unwrap(),
            logged_in(alice)
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
            Login::Ok(LoggedIn { user, .. }) => {
                assert_eq!(user, alice);
                assert_eq!(&*user.name, "Alice");
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
        let db = Db::open(
            &dir.path().join(DB_FILE),
            Arc::default(),
            None,
            Arc::default(),
        )
        .unwrap();
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
            logged_in(erin)
        );
        assert_eq!(block_on(reopened.list_channels()).unwrap(), ["home"]);
    }

    /// The schema of version 0, as the first ringtalk made it.
    const SCHEMA_0: &str = "
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

    fn settings_owned_by(owner: &str) -> ChannelSettings {
        ChannelSettings {
            owner: Some(owner.to_owned()),
            ..ChannelSettings::default()
        }
    }

    #[test]
    fn a_database_of_schema_0_is_migrated_and_keeps_its_users_and_channels() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(DB_FILE);
        {
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(SCHEMA_0).unwrap();
            let hash = bcrypt::hash("secret1", MIN_BCRYPT_COST).unwrap();
            for (id, name) in [(1, "Old"), (7, "Elder")] {
                conn.execute(
                    "INSERT INTO user (id, name, password_hash, created_at) VALUES (?1, ?2, ?3, 100)",
                    params![id, name, hash],
                )
                .unwrap();
            }
            conn.execute(
                "INSERT INTO channel (name, key, owner_id, created_at) VALUES ('Hall', 'hall', 7, 100)",
                [],
            )
            .unwrap();
        }
        for round in 0..2 {
            // The second opening finds it migrated already.
            let (accounts, guard) = open(dir.path(), 2);
            let elder = User {
                id: 7,
                name: "Elder".into(),
            };
            if round == 0 {
                assert_eq!(
                    block_on(accounts.login("elder", "secret1", false)).unwrap(),
                    logged_in(elder.clone())
                );
                assert_eq!(block_on(accounts.list_channels()).unwrap(), ["Hall"]);
                assert_eq!(
                    block_on(accounts.channel_settings(&chan("hall"))).unwrap(),
                    Some(settings_owned_by("Elder"))
                );
                let profile = block_on(accounts.profile("OLD")).unwrap().unwrap();
                assert_eq!(
                    profile,
                    Profile {
                        name: "Old".to_owned(),
                        created_at: 100,
                        last_seen: None,
                        admin: false,
                        banned: false
                    }
                );
                // The highest id, deleted, is not given again.
                assert_eq!(
                    block_on(accounts.delete_account("Elder", "secret1")).unwrap(),
                    Deleted::Deleted
                );
                let next = created(block_on(accounts.create_user("Elder", "secret2")).unwrap());
                assert!(next.id > 7, "{next:?}");
                assert_eq!(
                    block_on(accounts.channel_settings(&chan("hall"))).unwrap(),
                    Some(ChannelSettings::default())
                );
                assert!(block_on(accounts.set_ignoring("Old", vec!["Elder".into()])).is_ok());
            }
            let old = block_on(accounts.login("old", "secret1", false)).unwrap();
            assert_eq!(
                old,
                Login::Ok(LoggedIn {
                    user: User {
                        id: 1,
                        name: "Old".into()
                    },
                    ignoring: vec!["Elder".to_owned()],
                    admin: false
                })
            );
            guard.shutdown();
        }
        let conn = Connection::open(&path).unwrap();
        let version: i64 = conn
            .query_row("PRAGMA user_version", [], |row| row.get(0))
            .unwrap();
        assert_eq!(version, SCHEMA_VERSION);
    }

    #[test]
    fn a_database_of_a_newer_schema_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        {
            let conn = Connection::open(dir.path().join(DB_FILE)).unwrap();
            conn.execute_batch(SCHEMA).unwrap();
            conn.pragma_update(None, "user_version", SCHEMA_VERSION + 1)
                .unwrap();
        }
        let refused = Accounts::open(dir.path(), MIN_BCRYPT_COST, 1, 8).unwrap_err();
        assert!(refused.to_string().contains("newer ringtalk"), "{refused}");
    }

    #[test]
    fn a_password_change_keeps_the_id_and_the_old_password_stops_working() {
        let dir = tempfile::tempdir().unwrap();
        let (accounts, _guard) = open(dir.path(), 2);
        let fay = created(block_on(accounts.create_user("Fay", "first-pw")).unwrap());
        let change =
            |old: &str, new: &str| block_on(accounts.change_password("fay", old, new)).unwrap();
        assert_eq!(
            change("wrong-pw", "second-pw"),
            PasswordChange::WrongPassword
        );
        assert_eq!(
            change("first-pw", "short"),
            PasswordChange::Invalid(CredentialError::BadPassword)
        );
        assert_eq!(
            change(&"x".repeat(200), "second-pw"),
            PasswordChange::WrongPassword
        );
        assert_eq!(change("first-pw", "second-pw"), PasswordChange::Changed);
        assert_eq!(
            block_on(accounts.login("fay", "first-pw", false)).unwrap(),
            Login::WrongPassword
        );
        assert_eq!(
            block_on(accounts.login("FAY", "second-pw", false)).unwrap(),
            logged_in(fay.clone())
        );
        assert_eq!(
            change("first-pw", "third-pw"),
            PasswordChange::WrongPassword
        );
        assert_eq!(
            block_on(accounts.change_password("nobody", "first-pw", "second-pw")).unwrap(),
            PasswordChange::WrongPassword
        );
    }

    #[test]
    fn a_deleted_account_takes_its_ignores_and_ownerships_and_its_name_is_free_with_a_new_id() {
        let dir = tempfile::tempdir().unwrap();
        let (accounts, _guard) = open(dir.path(), 2);
        let gus = created(block_on(accounts.create_user("Gus", "secret1")).unwrap());
        block_on(accounts.set_ignoring("gus", vec!["hal".into()])).unwrap();
        assert!(block_on(accounts.set_admin("gus", true)).unwrap());
        assert!(block_on(accounts.create_channel(&chan("Den"), gus.id)).unwrap());
        assert_eq!(
            block_on(accounts.delete_account("gus", "secret2")).unwrap(),
            Deleted::WrongPassword
        );
        assert!(block_on(accounts.user_exists("gus")).unwrap());
        assert_eq!(
            block_on(accounts.delete_account("GUS", "secret1")).unwrap(),
            Deleted::Deleted
        );
        assert!(!block_on(accounts.user_exists("gus")).unwrap());
        assert_eq!(block_on(accounts.profile("gus")).unwrap(), None);
        assert_eq!(
            block_on(accounts.login("gus", "secret1", false)).unwrap(),
            Login::NoSuchUser
        );
        assert_eq!(
            block_on(accounts.delete_account("gus", "secret1")).unwrap(),
            Deleted::WrongPassword
        );
        assert!(block_on(accounts.admins()).unwrap().is_empty());
        let ignored: i64 = block_on(Accounts::run_on(&accounts.workers, |db| {
            Ok(db
                .conn
                .query_row("SELECT COUNT(*) FROM ignored", [], |row| row.get(0))?)
        }))
        .unwrap();
        assert_eq!(ignored, 0);

        // The channel stays, with no owner; a new account of the name does not inherit it.
        let again = created(block_on(accounts.create_user("gus", "secret3")).unwrap());
        assert!(again.id > gus.id, "{again:?} after {gus:?}");
        assert_eq!(
            block_on(accounts.login("gus", "secret3", false)).unwrap(),
            logged_in(again)
        );
        assert_eq!(
            block_on(accounts.channel_settings(&chan("den"))).unwrap(),
            Some(ChannelSettings::default())
        );
    }

    #[test]
    fn profiles_show_creation_last_seen_and_flags() {
        let dir = tempfile::tempdir().unwrap();
        // One worker: jobs run in the order queued.
        let (accounts, _guard) = open(dir.path(), 1);
        created(block_on(accounts.create_user("Ida", "secret1")).unwrap());
        let before = unix_now();
        let profile = block_on(accounts.profile("ida")).unwrap().unwrap();
        assert_eq!(profile.name, "Ida");
        assert!((before - 5..=before).contains(&profile.created_at));
        assert_eq!(profile.last_seen, None);
        // Written even though nobody waits for it.
        drop(accounts.record_last_seen("IDA", 1_700_000_000));
        assert_eq!(
            block_on(accounts.profile("ida"))
                .unwrap()
                .unwrap()
                .last_seen,
            Some(1_700_000_000)
        );
        block_on(accounts.record_last_seen("ida", 1_700_000_100)).unwrap();
        block_on(accounts.record_last_seen("nobody", 1)).unwrap();
        assert!(block_on(accounts.set_banned("ida", true)).unwrap());
        let profile = block_on(accounts.profile("ida")).unwrap().unwrap();
        assert_eq!(
            (profile.last_seen, profile.admin, profile.banned),
            (Some(1_700_000_100), false, true)
        );
        assert_eq!(block_on(accounts.profile("nobody")).unwrap(), None);
        assert_eq!(block_on(accounts.profile("not a name")).unwrap(), None);
    }

    #[test]
    fn admins_are_listed_and_the_banned_may_not_log_in() {
        let dir = tempfile::tempdir().unwrap();
        let (accounts, _guard) = open(dir.path(), 2);
        let jo = created(block_on(accounts.create_user("jo", "secret1")).unwrap());
        created(block_on(accounts.create_user("Kim", "secret1")).unwrap());
        created(block_on(accounts.create_user("al", "secret1")).unwrap());
        assert!(block_on(accounts.set_admin("JO", true)).unwrap());
        assert!(block_on(accounts.set_admin("kim", true)).unwrap());
        assert!(block_on(accounts.set_admin("al", true)).unwrap());
        assert!(block_on(accounts.set_admin("al", false)).unwrap());
        assert!(!block_on(accounts.set_admin("nobody", true)).unwrap());
        assert!(!block_on(accounts.set_banned("nobody", true)).unwrap());
        assert_eq!(block_on(accounts.admins()).unwrap(), ["jo", "Kim"]);
        assert_eq!(
            block_on(accounts.login("jo", "secret1", false)).unwrap(),
            Login::Ok(LoggedIn {
                user: jo.clone(),
                ignoring: Vec::new(),
                admin: true
            })
        );
        assert!(block_on(accounts.set_banned("jo", true)).unwrap());
        assert_eq!(
            block_on(accounts.login("jo", "secret1", true)).unwrap(),
            Login::Banned
        );
        // Only the right password learns of the ban.
        assert_eq!(
            block_on(accounts.login("jo", "secret2", false)).unwrap(),
            Login::WrongPassword
        );
        assert!(block_on(accounts.set_banned("jo", false)).unwrap());
        assert!(matches!(
            block_on(accounts.login("jo", "secret1", false)).unwrap(),
            Login::Ok(_)
        ));
    }

    #[test]
    fn an_ignore_list_is_replaced_whole_and_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let (accounts, _guard) = open(dir.path(), 2);
        created(block_on(accounts.create_user("lee", "secret1")).unwrap());
        let ignoring = |accounts: &Accounts| match block_on(accounts.login("lee", "secret1", false))
            .unwrap()
        {
            Login::Ok(logged_in) => logged_in.ignoring,
            other => panic!("{other:?}"),
        };
        let names = |list: &[&str]| list.iter().map(|n| n.to_string()).collect::<Vec<_>>();
        block_on(accounts.set_ignoring("lee", names(&["Zed", "amy", "ZED", "bo"]))).unwrap();
        assert_eq!(ignoring(&accounts), ["Zed", "amy", "bo"]);
        block_on(accounts.set_ignoring("LEE", names(&["cy"]))).unwrap();
        assert_eq!(ignoring(&accounts), ["cy"]);
        let most: Vec<String> = (0..MAX_IGNORED).map(|i| format!("user{i}")).collect();
        block_on(accounts.set_ignoring("lee", most.clone())).unwrap();
        assert_eq!(ignoring(&accounts), most);
        // Refused whole, nothing stored.
        let too_many: Vec<String> = (0..=MAX_IGNORED).map(|i| format!("user{i}")).collect();
        assert!(matches!(
            block_on(accounts.set_ignoring("lee", too_many)),
            Err(AccountError::Failed(_))
        ));
        assert!(matches!(
            block_on(accounts.set_ignoring("lee", names(&["ok", "not,one"]))),
            Err(AccountError::Failed(_))
        ));
        assert_eq!(ignoring(&accounts), most);
        block_on(accounts.set_ignoring("lee", Vec::new())).unwrap();
        assert!(ignoring(&accounts).is_empty());
        block_on(accounts.set_ignoring("nobody", names(&["lee"]))).unwrap();
    }

    #[test]
    fn channel_settings_round_trip_and_a_deleted_channel_starts_afresh() {
        let dir = tempfile::tempdir().unwrap();
        let (accounts, _guard) = open(dir.path(), 2);
        let mo = created(block_on(accounts.create_user("Mo", "secret1")).unwrap());
        created(block_on(accounts.create_user("Ned", "secret1")).unwrap());
        assert_eq!(
            block_on(accounts.channel_settings(&chan("nowhere"))).unwrap(),
            None
        );
        assert!(block_on(accounts.create_channel(&chan("Pub"), mo.id)).unwrap());
        assert!(block_on(accounts.create_channel(&chan("Äpfel"), mo.id)).unwrap());
        assert_eq!(
            block_on(accounts.channel_settings(&chan("pub"))).unwrap(),
            Some(settings_owned_by("Mo"))
        );
        let settings = ChannelSettings {
            owner: Some("ned".to_owned()),
            topic: "Tea \\ \"cakes\"\nand more".to_owned(),
            topic_open: true,
            invite_only: true,
            capacity: 40,
            bans: vec!["Zed".into(), "amy".into(), "zed".into()],
        };
        assert!(block_on(accounts.save_channel_settings(&chan("PUB"), settings.clone())).unwrap());
        let stored = ChannelSettings {
            owner: Some("Ned".to_owned()),
            bans: vec!["Zed".into(), "amy".into()],
            ..settings.clone()
        };
        assert_eq!(
            block_on(accounts.channel_settings(&chan("pub"))).unwrap(),
            Some(stored.clone())
        );
        assert_eq!(
            block_on(accounts.all_channel_settings()).unwrap(),
            [
                (chan("Pub"), stored.clone()),
                (chan("Äpfel"), settings_owned_by("Mo"))
            ]
        );
        assert!(
            !block_on(accounts.save_channel_settings(&chan("nowhere"), settings.clone())).unwrap()
        );
        // An owner who is no account is no owner.
        let ownerless = ChannelSettings {
            owner: Some("nobody".to_owned()),
            ..ChannelSettings::default()
        };
        assert!(block_on(accounts.save_channel_settings(&chan("äPFEL"), ownerless)).unwrap());
        assert_eq!(
            block_on(accounts.channel_settings(&chan("äpfel"))).unwrap(),
            Some(ChannelSettings::default())
        );
        // Past a bound: refused, nothing changed.
        let too_many = ChannelSettings {
            bans: (0..=MAX_CHANNEL_BANS).map(|i| format!("user{i}")).collect(),
            ..stored.clone()
        };
        let too_long = ChannelSettings {
            topic: "x".repeat(MAX_TOPIC_BYTES + 1),
            ..stored.clone()
        };
        for refused in [too_many, too_long] {
            assert!(matches!(
                block_on(accounts.save_channel_settings(&chan("pub"), refused)),
                Err(AccountError::Failed(_))
            ));
        }
        assert_eq!(
            block_on(accounts.channel_settings(&chan("pub"))).unwrap(),
            Some(stored)
        );

        assert!(block_on(accounts.delete_channel(&chan("PUB"))).unwrap());
        assert!(!block_on(accounts.delete_channel(&chan("pub"))).unwrap());
        assert_eq!(
            block_on(accounts.channel_settings(&chan("pub"))).unwrap(),
            None
        );
        assert_eq!(block_on(accounts.list_channels()).unwrap(), ["Äpfel"]);
        assert!(block_on(accounts.create_channel(&chan("pub"), mo.id)).unwrap());
        assert_eq!(
            block_on(accounts.channel_settings(&chan("Pub"))).unwrap(),
            Some(settings_owned_by("Mo"))
        );
    }

    #[test]
    fn bans_ignores_and_flags_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let (accounts, guard) = open(dir.path(), 2);
        let owner = created(block_on(accounts.create_user("Ola", "secret1")).unwrap());
        assert!(block_on(accounts.create_channel(&chan("keep"), owner.id)).unwrap());
        let settings = ChannelSettings {
            owner: Some("Ola".to_owned()),
            topic: "kept".to_owned(),
            bans: vec!["pest".into()],
            ..ChannelSettings::default()
        };
        assert!(block_on(accounts.save_channel_settings(&chan("keep"), settings.clone())).unwrap());
        block_on(accounts.set_ignoring("ola", vec!["pest".into()])).unwrap();
        assert!(block_on(accounts.set_admin("ola", true)).unwrap());
        guard.shutdown();

        let (reopened, _guard) = open(dir.path(), 2);
        assert_eq!(
            block_on(reopened.all_channel_settings()).unwrap(),
            [(chan("keep"), settings)]
        );
        assert_eq!(
            block_on(reopened.login("ola", "secret1", false)).unwrap(),
            Login::Ok(LoggedIn {
                user: owner,
                ignoring: vec!["pest".to_owned()],
                admin: true
            })
        );
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
