//! Accounts and channels of a cluster, kept in NATS JetStream key-value buckets.
//!
//! # Why
//!
//! With several nodes, an account made on one node must log in on another, and two nodes making
//! the same account or channel at the same moment must make exactly one. A node's own SQLite file
//! can do neither, so in cluster mode the [`Accounts`](crate::accounts::Accounts) workers keep
//! accounts and channels here. A KV `create` fails when its key exists, and the JetStream server
//! decides that, so the server is the one judge of uniqueness, as SQLite's `UNIQUE` is on one node.
//!
//! # Shape
//!
//! The NATS client needs tokio, and the callers are the account worker threads (plain threads that
//! may block; never shards). So [`Store`] is a cloneable handle whose methods block: each sends its
//! request to the `ringtalk-store` thread (a current-thread tokio runtime with its own NATS
//! connection, apart from the chat bridge's) and waits for the answer. The thread serves every
//! request in a task of its own, so one slow round trip holds up no other, and answers
//! [`AccountError::Failed`] when a request has taken [`REQUEST_TIMEOUT`]: while NATS is away a
//! worker gets an error, never a hang, and the client reconnects by itself. bcrypt stays on the
//! workers; the store only ever sees finished hashes.
//!
//! # Buckets
//!
//! [`ACCOUNTS_BUCKET`], [`CHANNELS_BUCKET`] and [`ACCOUNT_IDS_BUCKET`]: history 1 (only the
//! current value matters), file storage, one replica, and otherwise what any KV client gives a
//! bucket (new writes refused when full rather than old entries dropped, no deletes of stream
//! messages, direct gets; a KV delete is a marker written like a value). The store creates them
//! when it starts; when a bucket already exists (another node made it, perhaps at the same moment,
//! perhaps with other settings) it opens that one. If NATS is away at the start, the next request
//! tries again. They are made as streams directly, not with async-nats's `create_key_value`,
//! which cannot work with nats-server 2.9 (see `open_bucket`).
//!
//! # Keys
//!
//! KV keys are `[-/_=.a-zA-Z0-9]+`.
//!
//! - An account's key is its username lower-cased. Usernames are 2 to 24 ASCII letters, digits,
//!   `_` or `-`, so that is a valid key as it is, and "Alice" and "alice" are one account.
//! - A channel's key is its [`ChannelName::key`] (lower-cased, any script) written as lower-case
//!   hex of its UTF-8 bytes: "Ärger" and "ärger" are both `c3a472676572`.
//! - The id index's key is a user id in decimal; its value is that account's key.
//!
//! # Values
//!
//! Text, one `field=value` per line. An account:
//!
//! ```text
//! name=Alice
//! hash=$2b$12$…
//! created_at=1700000000
//! admin=0
//! banned=0
//! ignoring=bob,carol
//! id=42
//! last_seen=1700000500
//! ```
//!
//! and a channel:
//!
//! ```text
//! name=Ärger
//! owner=42
//! created_at=1700000000
//! topic=Shouting \\ welcome
//! topic_open=0
//! invite_only=0
//! capacity=0
//! bans=eve,mallory
//! seq=17
//! ```
//!
//! `name` is the name as it was created, in its case; times are Unix seconds; `owner` is the
//! owner's user id (0: none); lists are usernames separated by commas; flags are `0` or `1`; the
//! topic is escaped (`\\`, `\n`, `\r`) so that it stays one line. `name`, `hash`, `owner` and
//! `created_at` must be there exactly once and the names must be valid; the other fields may be
//! missing (values written before they existed): a missing flag or list is off or empty, a
//! missing `last_seen` is never. Fields not named here are ignored, so a later version may add
//! one. A value that is not UTF-8 or breaks these rules is an error, never a panic. When listing
//! channels, an entry with such a value is left out and logged rather than failing the whole list.
//!
//! # Updates
//!
//! Every change to an existing entry is a compare-and-set: read the entry and its revision, change
//! the value, write it with `update(key, value, revision)`, which JetStream refuses if anything
//! wrote the key since; then read again and start over (up to 32 times). So two nodes changing one
//! account at once (one records a last-seen time, the other an ignore list) both get their change
//! in, and a password change or a deletion acts only on the hash its password was checked against.
//! Deletes are revision-checked the same way.
//!
//! # User ids
//!
//! A user's id is the revision (stream sequence) of the KV create that made the account: positive,
//! unique across the bucket, and known without a second write. An update gives the entry a new
//! revision, so every update writes the id as the `id` field, and a value with one is read by it;
//! a value without one has never been updated, and its revision is still the id. (A node of the
//! version before `id` existed would read an updated account's id as its revision: upgrade every
//! node before anything updates accounts.) A deleted account's key can be made again, with a new
//! revision, hence a new id.
//!
//! Channels keep their owner's id; to name the owner, the [`ACCOUNT_IDS_BUCKET`] index gives the
//! account's key for an id, written when the account is made. The account is then read, and its
//! id must still be the owner's: a deleted owner's name may have been taken by a new account,
//! which does not inherit the channel. Ids the index lacks (accounts made before it) are found by
//! one pass over every account and indexed then. Unlike SQLite, nothing checks that a channel's
//! owner is an account in the bucket, and deleting an account does not rewrite the channels it
//! owned: they read as ownerless, and the next save of their settings writes `owner=0`.
//!
//! # Order
//!
//! [`Store::list_channels`] gives channels in creation order (by the revision that created them,
//! kept as `seq` once a channel's settings are saved), as SQLite does.

use super::RuntimeThread;
use std::collections::{HashMap, HashSet};
use std::sync::mpsc as std_mpsc;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, kv, stream};
use futures::future::{BoxFuture, Future};
use futures::{StreamExt, TryStreamExt};
use shard_proto::ChannelName;
use tokio::sync::{mpsc, oneshot, OnceCell};
use tracing::{info, warn};

use crate::accounts::{
    unix_now, validate_username, AccountError, AccountRecord, ChannelSettings, Created, Flag, User,
};

/// The bucket of accounts, one key per lower-cased username.
pub const ACCOUNTS_BUCKET: &str = "ringtalk_accounts";
/// The bucket of persistent channels, one key per channel (its lower-cased name in hex).
pub const CHANNELS_BUCKET: &str = "ringtalk_channels";
/// The index from a user id (in decimal) to its account's key, for naming channel owners.
pub const ACCOUNT_IDS_BUCKET: &str = "ringtalk_account_ids";
/// How many times an update that keeps meeting another node's update reads and tries again.
const UPDATE_ATTEMPTS: usize = 32;
/// How many reads a pass over a whole bucket keeps in flight.
const SCAN_READS: usize = 64;
/// How long a request may take before the store thread answers it with an error.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// How much longer than [`REQUEST_TIMEOUT`] a caller waits for that answer before giving up by
/// itself; that happens only if the store thread is stuck.
const REPLY_GRACE: Duration = Duration::from_millis(500);

/// The buckets, once opened. Cheap to clone (each is a few names and a client handle).
#[derive(Clone)]
struct Buckets {
    accounts: kv::Store,
    channels: kv::Store,
    ids: kv::Store,
}

/// The buckets, opened (or opening) on the store thread when a request needs them.
type Opening = BoxFuture<'static, Result<Buckets, AccountError>>;

/// One request as the store thread sees it: given the buckets, it does its work and answers its
/// caller itself, so the thread needs to know nothing of what it asks or returns.
type Job = Box<dyn FnOnce(Opening) -> BoxFuture<'static, ()> + Send>;

/// The handle to a cluster's accounts and channels. `Clone + Send + Sync`; its methods block the
/// calling thread for up to [`REQUEST_TIMEOUT`] (half a second more if the store thread itself is
/// stuck), so call them on worker threads only.
#[derive(Clone, Debug)]
pub struct Store {
    /// To the store thread. Unbounded because sending must never block, and what waits in it is
    /// bounded anyway: each caller blocks until its request is answered or given up on.
    requests: mpsc::UnboundedSender<Job>,
}

/// Owns the store thread. Shutting it down (or dropping it) stops the thread and joins it; any
/// request still waiting then fails, and later ones fail at once.
///
/// Stop it after the account workers, which are its callers.
#[derive(Debug)]
pub struct StoreGuard(RuntimeThread);

impl StoreGuard {
    /// Stops the store thread and waits for it.
    pub fn shutdown(mut self) {
        self.0.stop();
    }
}

impl Store {
    /// Starts the `ringtalk-store` thread with its own connection to the NATS server at `url`.
    /// Returns at once: the connection is made (and remade) in the background, and the buckets
    /// are created or opened as soon as it is up. Fails only if the thread cannot start or `url`
    /// is not a NATS address. Call it at startup on a plain thread, not inside a tokio runtime
    /// (it runs its own briefly to make the client).
    pub fn start(url: &str) -> std::io::Result<(Store, StoreGuard)> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        // With `retry_on_initial_connect` this does not wait for the server; the tasks it spawns
        // on the runtime go on with it on the store thread.
        let client = runtime
            .block_on(
                async_nats::ConnectOptions::new()
                    .name("ringtalk-store")
                    .retry_on_initial_connect()
                    .connect(url),
            )
            .map_err(|e| {
                std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    format!("NATS address {url}: {e}"),
                )
            })?;
        let (requests_tx, requests_rx) = mpsc::unbounded_channel();
        let thread = RuntimeThread::spawn("ringtalk-store", runtime, move |stop| {
            serve(client, requests_rx, stop)
        })?;
        Ok((
            Store {
                requests: requests_tx,
            },
            StoreGuard(thread),
        ))
    }

    /// Everything stored for the account with this name (ASCII case ignored).
    pub fn find_account(&self, name: &str) -> Result<Option<AccountRecord>, AccountError> {
        // A name that is not a username has no account, and is no valid key either.
        let Some(key) = account_key(name) else {
            return Ok(None);
        };
        self.call(move |buckets| async move {
            Ok(read_account(&buckets.accounts, &key)
                .await?
                .map(Current::into_record))
        })
    }

    /// The account with this name (ASCII case ignored) and its password hash.
    pub fn find_user(&self, name: &str) -> Result<Option<(User, String)>, AccountError> {
        Ok(self.find_account(name)?.map(|a| (a.user, a.hash)))
    }

    /// Stores a new account under `name` with the bcrypt `hash` of its password.
    /// [`Created::NameTaken`] if an account has this name, ignoring ASCII case; of two concurrent
    /// creates of one name, on any nodes, exactly one gets [`Created::Ok`].
    pub fn create_user(&self, name: &str, hash: &str) -> Result<Created, AccountError> {
        let key = account_key(name).ok_or_else(|| failed(format!("not a username: {name:?}")))?;
        check_hash(hash)?;
        let value = AccountValue::new(name, hash, unix_now());
        self.call(move |buckets| async move {
            match buckets.accounts.create(&key, value.encode().into()).await {
                Ok(revision) => {
                    let id = revision_id(revision)?;
                    // Only a hint, for naming channel owners: without it they are found by a
                    // pass over every account.
                    if let Err(e) = buckets.ids.put(id.to_string(), key.clone().into()).await {
                        warn!(%key, id, error = %e, "store: cannot index the new account's id");
                    }
                    Ok(Created::Ok(User {
                        id,
                        name: value.name.into(),
                    }))
                }
                Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => Ok(Created::NameTaken),
                Err(e) => Err(failed(format!("creating account {key}: {e}"))),
            }
        })
    }

    /// Replaces the password hash of the account `name`, but only while it is still `expected`
    /// (the hash its old password was checked against). `Ok(false)`: the account is gone or its
    /// hash changed meanwhile; nothing was written.
    pub fn replace_hash(
        &self,
        name: &str,
        expected: &str,
        hash: &str,
    ) -> Result<bool, AccountError> {
        check_hash(hash)?;
        let (expected, hash) = (expected.to_owned(), hash.to_owned());
        let changed = self.update_account(name, move |account| {
            if account.hash != expected {
                return Edit::Keep(false);
            }
            account.hash = hash.clone();
            Edit::Write(true)
        })?;
        Ok(changed == Some(true))
    }

    /// Deletes the account `name`, but only while its password hash is still `expected`.
    /// `Ok(false)`: the account is gone or its hash changed meanwhile. Its id stays in the id
    /// index, pointing at its name, where a later account of that name has another id: so no
    /// channel it owned names an owner again.
    pub fn delete_account(&self, name: &str, expected: &str) -> Result<bool, AccountError> {
        let Some(key) = account_key(name) else {
            return Ok(false);
        };
        let expected = expected.to_owned();
        self.call(move |buckets| async move {
            for _ in 0..UPDATE_ATTEMPTS {
                let Some(current) = read_account(&buckets.accounts, &key).await? else {
                    return Ok(false);
                };
                if current.value.hash != expected {
                    return Ok(false);
                }
                match buckets
                    .accounts
                    .delete_expect_revision(&key, Some(current.revision))
                    .await
                {
                    Ok(()) => return Ok(true),
                    Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => continue,
                    Err(e) => return Err(failed(format!("deleting account {key}: {e}"))),
                }
            }
            Err(still_changing(&key))
        })
    }

    /// Records when a session of the account `name` last ended; nothing if there is no such
    /// account.
    pub fn record_last_seen(&self, name: &str, at: i64) -> Result<(), AccountError> {
        self.update_account(name, move |account| {
            account.last_seen = Some(at);
            Edit::Write(())
        })?;
        Ok(())
    }

    /// Replaces the ignore list of the account `name` (already checked: at most
    /// [`MAX_IGNORED`](crate::accounts::MAX_IGNORED) usernames); nothing if there is no such
    /// account.
    pub fn set_ignoring(&self, name: &str, ignoring: Vec<String>) -> Result<(), AccountError> {
        if let Some(bad) = ignoring.iter().find(|n| validate_username(n).is_err()) {
            return Err(failed(format!("cannot ignore {bad:?}: not a username")));
        }
        self.update_account(name, move |account| {
            account.ignoring = ignoring.clone();
            Edit::Write(())
        })?;
        Ok(())
    }

    /// Sets or clears a flag of the account `name`. `Ok(false)`: there is no such account.
    pub fn set_flag(&self, name: &str, flag: Flag, on: bool) -> Result<bool, AccountError> {
        let changed = self.update_account(name, move |account| {
            let field = match flag {
                Flag::Admin => &mut account.admin,
                Flag::Banned => &mut account.banned,
            };
            if *field == on {
                return Edit::Keep(());
            }
            *field = on;
            Edit::Write(())
        })?;
        Ok(changed.is_some())
    }

    /// The names of the administrators' accounts, sorted ignoring ASCII case. A pass over every
    /// account.
    pub fn admins(&self) -> Result<Vec<String>, AccountError> {
        self.call(|buckets| async move {
            let mut names: Vec<String> = all_entries(&buckets.accounts, "accounts")
                .await?
                .into_iter()
                .filter_map(|entry| match AccountValue::decode(&entry.value) {
                    Ok(account) => account.admin.then_some(account.name),
                    Err(e) => {
                        warn!(key = %entry.key, error = %e, "store: unreadable account; left out");
                        None
                    }
                })
                .collect();
            names.sort_unstable_by_key(|name| name.to_ascii_lowercase());
            Ok(names)
        })
    }

    /// Stores a channel owned by user `owner`. `Ok(false)` if a channel with this name, ignoring
    /// case (Unicode lower-casing), exists; of two concurrent creates exactly one gets `Ok(true)`.
    pub fn create_channel(&self, channel: &ChannelName, owner: i64) -> Result<bool, AccountError> {
        let key = channel_key(channel);
        let value = ChannelValue::new(channel.clone(), owner, unix_now());
        self.call(move |buckets| async move {
            match buckets.channels.create(&key, value.encode().into()).await {
                Ok(_) => Ok(true),
                Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => Ok(false),
                Err(e) => Err(failed(format!(
                    "creating channel {}: {e}",
                    value.name.as_str()
                ))),
            }
        })
    }

    /// The stored channel of this name, ignoring case, as it was created.
    pub fn find_channel(&self, channel: &ChannelName) -> Result<Option<ChannelName>, AccountError> {
        let key = channel_key(channel);
        self.call(move |buckets| async move {
            Ok(read_channel(&buckets.channels, &key)
                .await?
                .map(|(_, value)| value.name))
        })
    }

    /// Every stored channel's display name, oldest first.
    pub fn list_channels(&self) -> Result<Vec<String>, AccountError> {
        self.call(|buckets| async move {
            Ok(all_channels(&buckets.channels)
                .await?
                .into_iter()
                .map(|channel| channel.name.as_str().to_owned())
                .collect())
        })
    }

    /// The settings of the stored channel of this name (ignoring case).
    pub fn channel_settings(
        &self,
        channel: &ChannelName,
    ) -> Result<Option<ChannelSettings>, AccountError> {
        let key = channel_key(channel);
        self.call(move |buckets| async move {
            let Some((_, value)) = read_channel(&buckets.channels, &key).await? else {
                return Ok(None);
            };
            let owners = owner_names(&buckets, [value.owner].into_iter().collect()).await?;
            Ok(Some(value.settings(&owners)))
        })
    }

    /// Every stored channel with its settings, oldest first.
    pub fn all_channel_settings(
        &self,
    ) -> Result<Vec<(ChannelName, ChannelSettings)>, AccountError> {
        self.call(|buckets| async move {
            let channels = all_channels(&buckets.channels).await?;
            let owners = owner_names(&buckets, channels.iter().map(|c| c.owner).collect()).await?;
            Ok(channels
                .into_iter()
                .map(|channel| {
                    let settings = channel.settings(&owners);
                    (channel.name, settings)
                })
                .collect())
        })
    }

    /// Replaces the settings of the stored channel of this name (ignoring case); `Ok(false)`: there
    /// is no such channel. The owner is stored as its id; a name that is no account is no owner.
    pub fn save_channel_settings(
        &self,
        channel: &ChannelName,
        settings: ChannelSettings,
    ) -> Result<bool, AccountError> {
        let key = channel_key(channel);
        let owner_key = settings.owner.as_deref().and_then(account_key);
        self.call(move |buckets| async move {
            let owner = match owner_key {
                Some(owner_key) => read_account(&buckets.accounts, &owner_key)
                    .await?
                    .map_or(NO_OWNER, |owner| owner.id),
                None => NO_OWNER,
            };
            for _ in 0..UPDATE_ATTEMPTS {
                let Some((revision, mut value)) = read_channel(&buckets.channels, &key).await?
                else {
                    return Ok(false);
                };
                value.seq.get_or_insert(revision);
                value.set(owner, &settings);
                match buckets
                    .channels
                    .update(&key, value.encode().into(), revision)
                    .await
                {
                    Ok(_) => return Ok(true),
                    Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => continue,
                    Err(e) => return Err(failed(format!("updating channel {key}: {e}"))),
                }
            }
            Err(still_changing(&key))
        })
    }

    /// Deletes the stored channel of this name (ignoring case); `Ok(false)`: there is none.
    pub fn delete_channel(&self, channel: &ChannelName) -> Result<bool, AccountError> {
        let key = channel_key(channel);
        self.call(move |buckets| async move {
            for _ in 0..UPDATE_ATTEMPTS {
                let Some((revision, _)) = read_channel(&buckets.channels, &key).await? else {
                    return Ok(false);
                };
                match buckets
                    .channels
                    .delete_expect_revision(&key, Some(revision))
                    .await
                {
                    Ok(()) => return Ok(true),
                    Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => continue,
                    Err(e) => return Err(failed(format!("deleting channel {key}: {e}"))),
                }
            }
            Err(still_changing(&key))
        })
    }

    /// Reads the account `name`, lets `edit` change it, and writes it back only if nobody wrote
    /// it meanwhile (the KV's compare-and-set on the revision read); if somebody did, reads it
    /// again and starts over, so two nodes changing one account at once both get their change
    /// in. The value written carries the account's id. `Ok(None)`: there is no such account.
    fn update_account<T, F>(&self, name: &str, mut edit: F) -> Result<Option<T>, AccountError>
    where
        T: Send + 'static,
        F: FnMut(&mut AccountValue) -> Edit<T> + Send + 'static,
    {
        let Some(key) = account_key(name) else {
            return Ok(None);
        };
        self.call(move |buckets| async move {
            for _ in 0..UPDATE_ATTEMPTS {
                let Some(current) = read_account(&buckets.accounts, &key).await? else {
                    return Ok(None);
                };
                let mut value = current.value;
                value.id = Some(current.id);
                let answer = match edit(&mut value) {
                    Edit::Keep(answer) => return Ok(Some(answer)),
                    Edit::Write(answer) => answer,
                };
                match buckets
                    .accounts
                    .update(&key, value.encode().into(), current.revision)
                    .await
                {
                    Ok(_) => return Ok(Some(answer)),
                    Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => continue,
                    Err(e) => return Err(failed(format!("updating account {key}: {e}"))),
                }
            }
            Err(still_changing(&key))
        })
    }

    /// Sends `op` to the store thread and blocks until it answers.
    fn call<T, F, Fut>(&self, op: F) -> Result<T, AccountError>
    where
        T: Send + 'static,
        F: FnOnce(Buckets) -> Fut + Send + 'static,
        Fut: Future<Output = Result<T, AccountError>> + Send + 'static,
    {
        let (reply, answer) = std_mpsc::sync_channel(1);
        let job: Job = Box::new(move |opening| {
            Box::pin(async move {
                let work = async move { op(opening.await?).await };
                let result = tokio::time::timeout(REQUEST_TIMEOUT, work)
                    .await
                    .unwrap_or_else(|_| {
                        Err(failed(format!(
                            "no answer from NATS within {REQUEST_TIMEOUT:?}"
                        )))
                    });
                // The caller may have stopped waiting.
                let _ = reply.send(result);
            })
        });
        let stopped = || failed("the NATS store has stopped".to_owned());
        self.requests.send(job).map_err(|_| stopped())?;
        match answer.recv_timeout(REQUEST_TIMEOUT + REPLY_GRACE) {
            Ok(result) => result,
            Err(std_mpsc::RecvTimeoutError::Timeout) => Err(failed(format!(
                "the NATS store thread did not answer within {:?}",
                REQUEST_TIMEOUT + REPLY_GRACE
            ))),
            Err(std_mpsc::RecvTimeoutError::Disconnected) => Err(stopped()),
        }
    }
}

/// The store thread: runs each request in a task of its own until told to stop.
async fn serve(
    client: async_nats::Client,
    mut requests: mpsc::UnboundedReceiver<Job>,
    mut stop: oneshot::Receiver<()>,
) {
    // Made here, not in `Store::start`: it spawns a task, which needs the runtime running.
    let js = jetstream::new(client);
    let buckets: Arc<OnceCell<Buckets>> = Arc::default();
    // Opens the buckets, or waits for the open already under way; after a failure the next
    // request tries again.
    let opening = move || -> Opening {
        let (buckets, js) = (Arc::clone(&buckets), js.clone());
        Box::pin(async move { buckets.get_or_try_init(|| open_buckets(&js)).await.cloned() })
    };
    // At once rather than at the first request, so a NATS server without JetStream shows in the
    // log at startup.
    let first = opening();
    tokio::spawn(async move {
        match first.await {
            Ok(_) => info!("store: account and channel buckets ready"),
            Err(e) => warn!(error = %e, "store: buckets not open yet; the next request retries"),
        }
    });
    loop {
        let job = tokio::select! {
            _ = &mut stop => break,
            job = requests.recv() => match job {
                Some(job) => job,
                None => break,
            },
        };
        tokio::spawn(job(opening()));
    }
    // Dropping the runtime after this cancels the tasks still running; their callers see the
    // store stopped.
}

/// Creates a bucket, or opens it if it exists.
///
/// The bucket's stream is created directly, with the settings async-nats's `create_key_value`
/// would give it: that call first asks for the account's JetStream limits, and async-nats 0.51
/// cannot read nats-server 2.9's answer (it lacks the `reserved_*` fields), so it always fails.
async fn open_bucket(js: &jetstream::Context, name: &str) -> Result<kv::Store, AccountError> {
    let config = stream::Config {
        name: format!("KV_{name}"),
        description: Some("ringtalk: see src/cluster/store.rs".to_owned()),
        subjects: vec![format!("$KV.{name}.>")],
        // History 1: only the current value matters.
        max_messages_per_subject: 1,
        storage: stream::StorageType::File,
        num_replicas: 1,
        discard: stream::DiscardPolicy::New,
        allow_rollup: true,
        deny_delete: true,
        allow_direct: true,
        ..Default::default()
    };
    // Creating a stream that exists with the same settings succeeds; with other settings it
    // fails, and then the one that is there is used.
    let created = js.create_stream(config).await;
    js.get_key_value(name).await.map_err(|open| match created {
        Err(create) => failed(format!(
            "cannot create bucket {name} ({create}) nor open it ({open})"
        )),
        Ok(_) => failed(format!("cannot open bucket {name}: {open}")),
    })
}

async fn open_buckets(js: &jetstream::Context) -> Result<Buckets, AccountError> {
    Ok(Buckets {
        accounts: open_bucket(js, ACCOUNTS_BUCKET).await?,
        channels: open_bucket(js, CHANNELS_BUCKET).await?,
        ids: open_bucket(js, ACCOUNT_IDS_BUCKET).await?,
    })
}

fn failed(why: String) -> AccountError {
    AccountError::Failed(why)
}

/// The error of an update that kept meeting other writers.
fn still_changing(key: &str) -> AccountError {
    failed(format!(
        "{key} changed under each of {UPDATE_ATTEMPTS} attempts to update it"
    ))
}

/// A password hash goes into a value as one line.
fn check_hash(hash: &str) -> Result<(), AccountError> {
    if hash.is_empty() || hash.contains('\n') {
        return Err(failed(
            "a password hash must be one line of text".to_owned(),
        ));
    }
    Ok(())
}

/// What an edit of an account (see `Store::update_account`) decided.
enum Edit<T> {
    /// Write the edited value back, then answer this.
    Write(T),
    /// Write nothing; answer this.
    Keep(T),
}

/// An account as read from its bucket.
struct Current {
    /// The revision read, for a compare-and-set.
    revision: u64,
    /// The account's id: its `id` field, or for an account never updated, the revision.
    id: i64,
    value: AccountValue,
}

impl Current {
    fn into_record(self) -> AccountRecord {
        let AccountValue {
            name,
            hash,
            created_at,
            last_seen,
            admin,
            banned,
            ignoring,
            ..
        } = self.value;
        AccountRecord {
            user: User {
                id: self.id,
                name: name.into(),
            },
            hash,
            created_at,
            last_seen,
            admin,
            banned,
            ignoring,
        }
    }
}

/// Reads the account under `key`; `None` if there is none (or it was deleted).
async fn read_account(accounts: &kv::Store, key: &str) -> Result<Option<Current>, AccountError> {
    let Some(entry) = accounts
        .entry(key)
        .await
        .map_err(|e| failed(format!("reading account {key}: {e}")))?
    else {
        return Ok(None);
    };
    if entry.operation != kv::Operation::Put {
        return Ok(None);
    }
    let value =
        AccountValue::decode(&entry.value).map_err(|e| failed(format!("account {key}: {e}")))?;
    if value.name.to_ascii_lowercase() != key {
        return Err(failed(format!(
            "account {key} holds the name {:?}",
            value.name
        )));
    }
    let id = match value.id {
        Some(id) => id,
        None => revision_id(entry.revision)?,
    };
    Ok(Some(Current {
        revision: entry.revision,
        id,
        value,
    }))
}

/// Reads the channel under `key` with its revision; `None` if there is none (or it was deleted).
async fn read_channel(
    channels: &kv::Store,
    key: &str,
) -> Result<Option<(u64, ChannelValue)>, AccountError> {
    let entry = channels
        .entry(key)
        .await
        .map_err(|e| failed(format!("reading channel {key}: {e}")))?;
    match entry {
        Some(entry) if entry.operation == kv::Operation::Put => {
            let value = ChannelValue::decode(&entry.value)
                .map_err(|e| failed(format!("channel {key}: {e}")))?;
            Ok(Some((entry.revision, value)))
        }
        _ => Ok(None),
    }
}

/// Every live entry of a bucket, in no order; `what` names the bucket in errors.
async fn all_entries(bucket: &kv::Store, what: &str) -> Result<Vec<kv::Entry>, AccountError> {
    let listing = |e: &dyn std::fmt::Display| failed(format!("listing {what}: {e}"));
    let keys: Vec<String> = bucket
        .keys()
        .await
        .map_err(|e| listing(&e))?
        .try_collect()
        .await
        .map_err(|e| listing(&e))?;
    let entries: Vec<Option<kv::Entry>> = futures::stream::iter(keys)
        .map(|key| bucket.entry(key))
        .buffered(SCAN_READS)
        .try_collect()
        .await
        .map_err(|e| listing(&e))?;
    Ok(entries
        .into_iter()
        .flatten()
        .filter(|entry| entry.operation == kv::Operation::Put)
        .collect())
}

/// Every stored channel, oldest first (by the revision that created it). An entry that cannot be
/// read, or sits under another name's key, is left out and logged rather than failing the list.
async fn all_channels(channels: &kv::Store) -> Result<Vec<ChannelValue>, AccountError> {
    let mut found: Vec<(u64, ChannelValue)> = all_entries(channels, "channels")
        .await?
        .into_iter()
        .filter_map(|entry| match ChannelValue::decode(&entry.value) {
            Ok(channel) if channel_key(&channel.name) == entry.key => {
                Some((channel.seq.unwrap_or(entry.revision), channel))
            }
            Ok(channel) => {
                warn!(key = %entry.key, name = %channel.name.as_str(), "store: channel under another key; left out");
                None
            }
            Err(e) => {
                warn!(key = %entry.key, error = %e, "store: unreadable channel; left out");
                None
            }
        })
        .collect();
    found.sort_unstable_by_key(|&(seq, _)| seq);
    Ok(found.into_iter().map(|(_, channel)| channel).collect())
}

/// The names of the accounts whose ids are `ids` (ids of no live account are left out).
///
/// Each id is looked up in the [`ACCOUNT_IDS_BUCKET`] index, and the account it names is read to
/// check that it still has that id: a deleted account's name may belong to a new account now.
/// Ids the index lacks (accounts made before it existed) are found by one pass over every
/// account, and indexed then.
async fn owner_names(
    buckets: &Buckets,
    ids: HashSet<i64>,
) -> Result<HashMap<i64, String>, AccountError> {
    let ids: Vec<i64> = ids.into_iter().filter(|&id| id != NO_OWNER).collect();
    let looked_up = futures::stream::iter(ids)
        .map(|id| async move {
            let indexed = buckets
                .ids
                .get(id.to_string())
                .await
                .map_err(|e| failed(format!("reading the id index for {id}: {e}")))?;
            let Some(key) = indexed else {
                return Ok((id, None));
            };
            let Ok(key) = String::from_utf8(key.to_vec()) else {
                return Ok((id, Some(None)));
            };
            let name = read_account(&buckets.accounts, &key)
                .await?
                .filter(|account| account.id == id)
                .map(|account| account.value.name);
            Ok::<_, AccountError>((id, Some(name)))
        })
        .buffer_unordered(SCAN_READS)
        .try_collect::<Vec<_>>()
        .await?;
    let mut names = HashMap::new();
    let mut unindexed = HashSet::new();
    for (id, found) in looked_up {
        match found {
            Some(Some(name)) => {
                names.insert(id, name);
            }
            Some(None) => {}
            None => {
                unindexed.insert(id);
            }
        }
    }
    if unindexed.is_empty() {
        return Ok(names);
    }
    for entry in all_entries(&buckets.accounts, "accounts").await? {
        let Ok(account) = AccountValue::decode(&entry.value) else {
            continue;
        };
        let id = match account.id {
            Some(id) => id,
            None => revision_id(entry.revision)?,
        };
        if unindexed.contains(&id) {
            if let Err(e) = buckets
                .ids
                .put(id.to_string(), entry.key.clone().into())
                .await
            {
                warn!(key = %entry.key, id, error = %e, "store: cannot index an account's id");
            }
            names.insert(id, account.name);
        }
    }
    Ok(names)
}

/// A user id from the revision that created the account.
fn revision_id(revision: u64) -> Result<i64, AccountError> {
    i64::try_from(revision).map_err(|_| failed(format!("revision {revision} is too big for an id")))
}

/// The key of the account named `name`, or `None` if `name` is not a username.
fn account_key(name: &str) -> Option<String> {
    validate_username(name)
        .ok()
        .map(|()| name.to_ascii_lowercase())
}

/// The key of a channel: its lower-cased name as lower-case hex of the UTF-8 bytes.
fn channel_key(channel: &ChannelName) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let bytes = channel.key().as_bytes();
    let mut key = String::with_capacity(2 * bytes.len());
    for &b in bytes {
        key.push(char::from(HEX[usize::from(b >> 4)]));
        key.push(char::from(HEX[usize::from(b & 0xf)]));
    }
    key
}

/// Why a stored value could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed stored value: {0}")]
struct ValueError(String);

/// The `field=value` lines of a stored value, in order.
struct Fields<'a>(Vec<(&'a str, &'a str)>);

impl<'a> Fields<'a> {
    fn parse(value: &'a [u8]) -> Result<Fields<'a>, ValueError> {
        let text = std::str::from_utf8(value).map_err(|e| ValueError(e.to_string()))?;
        let mut fields: Vec<(&str, &str)> = Vec::new();
        for line in text.lines() {
            let (field, value) = line
                .split_once('=')
                .ok_or_else(|| ValueError(format!("line {line:?} has no '='")))?;
            if fields.iter().any(|&(seen, _)| seen == field) {
                return Err(ValueError(format!("field {field:?} appears twice")));
            }
            fields.push((field, value));
        }
        Ok(Fields(fields))
    }

    /// The field, if it is there.
    fn get(&self, field: &str) -> Option<&'a str> {
        self.0
            .iter()
            .find(|&&(name, _)| name == field)
            .map(|&(_, value)| value)
    }

    fn text(&self, field: &str) -> Result<&'a str, ValueError> {
        self.get(field)
            .ok_or_else(|| ValueError(format!("no field {field:?}")))
    }

    fn int(&self, field: &str) -> Result<i64, ValueError> {
        parse_number(field, self.text(field)?)
    }

    /// A number that may be missing.
    fn optional<T: std::str::FromStr>(&self, field: &str) -> Result<Option<T>, ValueError> {
        self.get(field)
            .map(|text| parse_number(field, text))
            .transpose()
    }

    /// `0` or `1`; missing is `false`.
    fn flag(&self, field: &str) -> Result<bool, ValueError> {
        match self.get(field) {
            None | Some("0") => Ok(false),
            Some("1") => Ok(true),
            Some(other) => Err(ValueError(format!(
                "field {field:?} is not 0 or 1: {other:?}"
            ))),
        }
    }

    /// A comma-separated list of usernames; missing or empty is none.
    fn names(&self, field: &str) -> Result<Vec<String>, ValueError> {
        match self.get(field) {
            None | Some("") => Ok(Vec::new()),
            Some(list) => list
                .split(',')
                .map(|name| match validate_username(name) {
                    Ok(()) => Ok(name.to_owned()),
                    Err(_) => Err(ValueError(format!(
                        "field {field:?} holds {name:?}, no username"
                    ))),
                })
                .collect(),
        }
    }
}

fn parse_number<T: std::str::FromStr>(field: &str, text: &str) -> Result<T, ValueError> {
    text.parse()
        .map_err(|_| ValueError(format!("field {field:?} is not a number: {text:?}")))
}

/// Free text as one line of a value: `\` becomes `\\`, a line feed `\n`, a carriage return `\r`.
fn escape(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\\' => escaped.push_str("\\\\"),
            '\n' => escaped.push_str("\\n"),
            '\r' => escaped.push_str("\\r"),
            c => escaped.push(c),
        }
    }
    escaped
}

/// The text [`escape`] made `escaped` from; any other use of `\` is an error.
fn unescape(escaped: &str) -> Result<String, ValueError> {
    let mut text = String::with_capacity(escaped.len());
    let mut chars = escaped.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            text.push(c);
            continue;
        }
        match chars.next() {
            Some('\\') => text.push('\\'),
            Some('n') => text.push('\n'),
            Some('r') => text.push('\r'),
            other => return Err(ValueError(format!("bad escape \\{other:?} in {escaped:?}"))),
        }
    }
    Ok(text)
}

/// What the accounts bucket holds for one account.
#[derive(Debug, Clone, PartialEq, Eq)]
struct AccountValue {
    /// The account's id, written with every update; `None` until the first (then the id is the
    /// revision of the create, which is the entry's revision while nothing has updated it).
    id: Option<i64>,
    /// The username as created, in its case.
    name: String,
    /// The bcrypt hash of the password.
    hash: String,
    /// Unix seconds.
    created_at: i64,
    /// Unix seconds, when a session of it last ended.
    last_seen: Option<i64>,
    admin: bool,
    banned: bool,
    /// Usernames, in the order stored.
    ignoring: Vec<String>,
}

impl AccountValue {
    /// A new account's value: nothing but its name, hash and creation time.
    fn new(name: &str, hash: &str, created_at: i64) -> AccountValue {
        AccountValue {
            id: None,
            name: name.to_owned(),
            hash: hash.to_owned(),
            created_at,
            last_seen: None,
            admin: false,
            banned: false,
            ignoring: Vec::new(),
        }
    }

    fn encode(&self) -> String {
        let mut value = format!(
            "name={}\nhash={}\ncreated_at={}\nadmin={}\nbanned={}\nignoring={}\n",
            self.name,
            self.hash,
            self.created_at,
            u8::from(self.admin),
            u8::from(self.banned),
            self.ignoring.join(",")
        );
        if let Some(id) = self.id {
            value.push_str(&format!("id={id}\n"));
        }
        if let Some(at) = self.last_seen {
            value.push_str(&format!("last_seen={at}\n"));
        }
        value
    }

    fn decode(value: &[u8]) -> Result<AccountValue, ValueError> {
        let fields = Fields::parse(value)?;
        let name = fields.text("name")?;
        validate_username(name).map_err(|_| ValueError(format!("{name:?} is no username")))?;
        let hash = fields.text("hash")?;
        if hash.is_empty() {
            return Err(ValueError("the hash is empty".to_owned()));
        }
        let id = fields.optional("id")?;
        if id.is_some_and(|id: i64| id <= 0) {
            return Err(ValueError(format!("id {id:?} is not positive")));
        }
        Ok(AccountValue {
            id,
            name: name.to_owned(),
            hash: hash.to_owned(),
            created_at: fields.int("created_at")?,
            last_seen: fields.optional("last_seen")?,
            admin: fields.flag("admin")?,
            banned: fields.flag("banned")?,
            ignoring: fields.names("ignoring")?,
        })
    }
}

/// The `owner` of a channel whose owner was deleted (user ids are positive).
const NO_OWNER: i64 = 0;

/// What the channels bucket holds for one channel.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ChannelValue {
    /// The revision that created it, written with every update (until then, the entry's).
    seq: Option<u64>,
    /// The name as created, in its case.
    name: ChannelName,
    /// The owner's user id; [`NO_OWNER`] for none.
    owner: i64,
    /// Unix seconds.
    created_at: i64,
    /// "" for none.
    topic: String,
    topic_open: bool,
    invite_only: bool,
    /// 0 for the server's default.
    capacity: u32,
    /// Usernames, as typed at ban time.
    bans: Vec<String>,
}

impl ChannelValue {
    /// A new channel's value: its name, owner and creation time, every setting at its default.
    fn new(name: ChannelName, owner: i64, created_at: i64) -> ChannelValue {
        ChannelValue {
            seq: None,
            name,
            owner,
            created_at,
            topic: String::new(),
            topic_open: false,
            invite_only: false,
            capacity: 0,
            bans: Vec::new(),
        }
    }

    /// Its settings, naming the owner from `owners` (an owner not there is none).
    fn settings(&self, owners: &HashMap<i64, String>) -> ChannelSettings {
        ChannelSettings {
            owner: owners.get(&self.owner).cloned(),
            topic: self.topic.clone(),
            topic_open: self.topic_open,
            invite_only: self.invite_only,
            capacity: self.capacity,
            bans: self.bans.clone(),
        }
    }

    /// Takes `settings`, with the owner as the id `owner`.
    fn set(&mut self, owner: i64, settings: &ChannelSettings) {
        self.owner = owner;
        self.topic.clone_from(&settings.topic);
        self.topic_open = settings.topic_open;
        self.invite_only = settings.invite_only;
        self.capacity = settings.capacity;
        self.bans.clone_from(&settings.bans);
    }

    fn encode(&self) -> String {
        let mut value = format!(
            "name={}\nowner={}\ncreated_at={}\ntopic={}\ntopic_open={}\ninvite_only={}\ncapacity={}\nbans={}\n",
            self.name.as_str(),
            self.owner,
            self.created_at,
            escape(&self.topic),
            u8::from(self.topic_open),
            u8::from(self.invite_only),
            self.capacity,
            self.bans.join(",")
        );
        if let Some(seq) = self.seq {
            value.push_str(&format!("seq={seq}\n"));
        }
        value
    }

    fn decode(value: &[u8]) -> Result<ChannelValue, ValueError> {
        let fields = Fields::parse(value)?;
        let name = fields.text("name")?;
        let name = ChannelName::new(name)
            .map_err(|e| ValueError(format!("{name:?} is no channel name: {e}")))?;
        Ok(ChannelValue {
            seq: fields.optional("seq")?,
            name,
            owner: fields.int("owner")?,
            created_at: fields.int("created_at")?,
            topic: fields
                .get("topic")
                .map(unescape)
                .transpose()?
                .unwrap_or_default(),
            topic_open: fields.flag("topic_open")?,
            invite_only: fields.flag("invite_only")?,
            capacity: fields.optional("capacity")?.unwrap_or(0),
            bans: fields.names("bans")?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chan(name: &str) -> ChannelName {
        ChannelName::new(name).unwrap()
    }

    /// The KV key rule, `[-/_=.a-zA-Z0-9]+` and no '.' at either end, as async-nats checks it.
    fn valid_kv_key(key: &str) -> bool {
        !key.is_empty()
            && !key.starts_with('.')
            && !key.ends_with('.')
            && key
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-/_=.".contains(&b))
    }

    #[test]
    fn channel_keys_are_valid_kv_keys_and_ignore_case() {
        let names = [
            "lobby",
            "Ärger",
            "ärger",
            "ÄRGER",
            "İstanbul", // lower-cases to more bytes than it has
            "日本語",
            "a.b-c_d",
            "Ωmega9",
        ];
        for name in names {
            let key = channel_key(&chan(name));
            assert!(valid_kv_key(&key), "{name:?} -> {key:?}");
            assert!(
                key.bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)),
                "{key:?}"
            );
        }
        assert_eq!(channel_key(&chan("Ärger")), "c3a472676572");
        assert_eq!(channel_key(&chan("Ärger")), channel_key(&chan("ärger")));
        assert_eq!(channel_key(&chan("ÄRGER")), channel_key(&chan("ärger")));
        assert_ne!(channel_key(&chan("arger")), channel_key(&chan("ärger")));
    }

    #[test]
    fn account_keys_are_lower_case_usernames_and_nothing_else() {
        assert_eq!(account_key("Alice").as_deref(), Some("alice"));
        assert_eq!(account_key("bob_the-2nd").as_deref(), Some("bob_the-2nd"));
        assert!(valid_kv_key(
            &account_key("ABCDEFGHIJKLMNOPQRSTUVWX").unwrap()
        ));
        for not_a_username in ["", "a", "has space", "dot.ted", "émile", "a>b", "x*"] {
            assert_eq!(account_key(not_a_username), None, "{not_a_username:?}");
        }
    }

    #[test]
    fn values_round_trip() {
        let hash = "$2b$04$abcdefghijklmnopqrstuu5mDP0VvMT5NU5rbqmeTGL2ycNeUkwXe";
        let fresh = AccountValue::new("Alice", hash, 1_700_000_000);
        assert_eq!(
            AccountValue::decode(fresh.encode().as_bytes()),
            Ok(fresh.clone())
        );
        let updated = AccountValue {
            id: Some(42),
            last_seen: Some(1_700_000_500),
            admin: true,
            banned: true,
            ignoring: vec!["bob".to_owned(), "Carol_2".to_owned()],
            ..fresh
        };
        assert_eq!(
            AccountValue::decode(updated.encode().as_bytes()),
            Ok(updated)
        );
        let mut channel = ChannelValue::new(chan("Ärger"), 42, -1);
        let decoded = ChannelValue::decode(channel.encode().as_bytes()).unwrap();
        assert_eq!(decoded, channel);
        channel.seq = Some(9);
        channel.set(
            NO_OWNER,
            &ChannelSettings {
                owner: None,
                topic: "a\\b\nc\rd = e, f".to_owned(),
                topic_open: true,
                invite_only: true,
                capacity: 7,
                bans: vec!["eve".to_owned(), "Mallory".to_owned()],
            },
        );
        assert_eq!(
            ChannelValue::decode(channel.encode().as_bytes()),
            Ok(channel)
        );
    }

    /// Values written by the version before these fields: they decode, every new field at its
    /// default.
    #[test]
    fn values_of_the_first_version_still_decode() {
        let account = AccountValue::decode(b"name=Bob\nhash=$2b$x\ncreated_at=5\n").unwrap();
        assert_eq!(account, AccountValue::new("Bob", "$2b$x", 5));
        let channel = ChannelValue::decode(b"name=lobby\nowner=3\ncreated_at=5\n").unwrap();
        assert_eq!(channel, ChannelValue::new(chan("lobby"), 3, 5));
    }

    #[test]
    fn escaped_text_comes_back_and_bad_escapes_are_errors() {
        for text in ["", "plain", "\\", "\\n", "\n\r\n", "é\\\\x", "ends with \\"] {
            let escaped = escape(text);
            assert!(!escaped.contains(['\n', '\r']), "{escaped:?}");
            assert_eq!(unescape(&escaped).as_deref(), Ok(text));
        }
        for bad in ["\\", "a\\t", "\\x"] {
            assert!(unescape(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn unknown_fields_are_ignored_so_later_versions_may_add_some() {
        let value = b"id=7\nname=Bob\nhash=$2b$x\ncreated_at=5\nnote=a=b\nnew_flag=2\n";
        let account = AccountValue::decode(value).unwrap();
        assert_eq!(
            (
                account.id,
                account.name.as_str(),
                account.hash.as_str(),
                account.created_at
            ),
            (Some(7), "Bob", "$2b$x", 5)
        );
        let channel = ChannelValue::decode(b"name=x\nowner=1\ncreated_at=2\nmode=+s\n").unwrap();
        assert_eq!(channel, ChannelValue::new(chan("x"), 1, 2));
    }

    #[test]
    fn malformed_values_are_errors() {
        let accounts: &[&[u8]] = &[
            b"",
            b"name=Bob\nhash=h\n",                  // no created_at
            b"name=Bob\nhash=h\ncreated_at=soon\n", // not a number
            b"name=Bob\nhash=h\ncreated_at=99999999999999999999", // out of range
            b"name=Bob\nname=Eve\nhash=h\ncreated_at=1\n", // twice
            b"name=B\nhash=h\ncreated_at=1\n",      // not a username
            b"name=Bob\nhash=\ncreated_at=1\n",     // empty hash
            b"name=Bob\nhash=h\ncreated_at=1\ngarbage\n", // a line without '='
            b"name=Bob\xff\nhash=h\ncreated_at=1\n", // not UTF-8
            b"name=Bob\nhash=h\ncreated_at=1\nid=0\n", // not a user id
            b"name=Bob\nhash=h\ncreated_at=1\nid=x\n",
            b"name=Bob\nhash=h\ncreated_at=1\nadmin=yes\n",
            b"name=Bob\nhash=h\ncreated_at=1\nbanned=2\n",
            b"name=Bob\nhash=h\ncreated_at=1\nlast_seen=later\n",
            b"name=Bob\nhash=h\ncreated_at=1\nignoring=ann,,bo\n",
            b"name=Bob\nhash=h\ncreated_at=1\nignoring=a b\n",
        ];
        for value in accounts {
            assert!(
                AccountValue::decode(value).is_err(),
                "{:?}",
                String::from_utf8_lossy(value)
            );
        }
        let channels: &[&[u8]] = &[
            b"name=lobby\nowner=1\n",
            b"name=lobby\nowner=me\ncreated_at=1\n",
            b"name=.dot\nowner=1\ncreated_at=1\n",
            b"name=\nowner=1\ncreated_at=1\n",
            b"name=has space\nowner=1\ncreated_at=1\n",
            b"\xc3\n",
            b"name=lobby\nowner=1\ncreated_at=1\ncapacity=-1\n",
            b"name=lobby\nowner=1\ncreated_at=1\ncapacity=4294967296\n",
            b"name=lobby\nowner=1\ncreated_at=1\ntopic=bad \\q\n",
            b"name=lobby\nowner=1\ncreated_at=1\ninvite_only=true\n",
            b"name=lobby\nowner=1\ncreated_at=1\nbans=eve,\n",
            b"name=lobby\nowner=1\ncreated_at=1\nseq=-3\n",
        ];
        for value in channels {
            assert!(
                ChannelValue::decode(value).is_err(),
                "{:?}",
                String::from_utf8_lossy(value)
            );
        }
    }

    #[test]
    fn a_store_is_a_shareable_handle() {
        fn assert_clone_send_sync<T: Clone + Send + Sync>() {}
        assert_clone_send_sync::<Store>();
        fn assert_send<T: Send>() {}
        assert_send::<StoreGuard>();
    }

    #[test]
    fn an_address_that_is_not_one_fails_at_start() {
        assert!(Store::start("nats://127.0.0.1:notaport").is_err());
    }
}
