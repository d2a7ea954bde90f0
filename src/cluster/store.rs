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
//! [`ACCOUNTS_BUCKET`] and [`CHANNELS_BUCKET`]: history 1 (only the current value matters), file
//! storage, one replica, and otherwise what any KV client gives a bucket (new writes refused when
//! full rather than old entries dropped, no deletes, direct gets). The store creates them when it
//! starts; when a bucket already exists (another node made it, perhaps at the same moment,
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
//!
//! # Values
//!
//! Text, one `field=value` per line. An account:
//!
//! ```text
//! name=Alice
//! hash=$2b$12$…
//! created_at=1700000000
//! ```
//!
//! and a channel:
//!
//! ```text
//! name=Ärger
//! owner=42
//! created_at=1700000000
//! ```
//!
//! `name` is the name as it was created, in its case; `created_at` is in Unix seconds; `owner` is
//! the creator's user id. Every field named here must be there exactly once, and the names must be
//! valid; fields not named here are ignored, so a later version may add one. A value that is not
//! UTF-8 or breaks these rules is an error, never a panic. When listing channels, an entry with
//! such a value is left out and logged rather than failing the whole list.
//!
//! # User ids
//!
//! A user's id is the revision (stream sequence) of the KV create that made the account: positive,
//! unique across the bucket, and known without a second write. Nothing updates an account, and the
//! bucket keeps one revision per key, so reading the entry back gives that same revision as the id.
//! Whatever comes to update accounts (a password change, say) must then store the id as a field.
//! Unlike SQLite, nothing checks that a channel's owner is an account in the bucket.
//!
//! # Order
//!
//! [`Store::list_channels`] gives channels in creation order (by revision), as SQLite does.

use super::RuntimeThread;
use std::sync::mpsc as std_mpsc;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, kv, stream};
use futures::future::{BoxFuture, Future};
use futures::TryStreamExt;
use shard_proto::ChannelName;
use tokio::sync::{mpsc, oneshot, OnceCell};
use tracing::{info, warn};

use crate::accounts::{unix_now, validate_username, AccountError, Created, User};

/// The bucket of accounts, one key per lower-cased username.
pub const ACCOUNTS_BUCKET: &str = "ringtalk_accounts";
/// The bucket of persistent channels, one key per channel (its lower-cased name in hex).
pub const CHANNELS_BUCKET: &str = "ringtalk_channels";
/// How long a request may take before the store thread answers it with an error.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// How much longer than [`REQUEST_TIMEOUT`] a caller waits for that answer before giving up by
/// itself; that happens only if the store thread is stuck.
const REPLY_GRACE: Duration = Duration::from_millis(500);

/// Both buckets, once opened. Cheap to clone (each is a few names and a client handle).
#[derive(Clone)]
struct Buckets {
    accounts: kv::Store,
    channels: kv::Store,
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

    /// The account with this name (ASCII case ignored) and its password hash.
    pub fn find_user(&self, name: &str) -> Result<Option<(User, String)>, AccountError> {
        // A name that is not a username has no account, and is no valid key either.
        let Some(key) = account_key(name) else {
            return Ok(None);
        };
        self.call(move |buckets| async move {
            let Some(entry) = buckets
                .accounts
                .entry(key.as_str())
                .await
                .map_err(|e| failed(format!("reading account {key}: {e}")))?
            else {
                return Ok(None);
            };
            if entry.operation != kv::Operation::Put {
                return Ok(None);
            }
            let account = AccountValue::decode(&entry.value)
                .map_err(|e| failed(format!("account {key}: {e}")))?;
            if account.name.to_ascii_lowercase() != key {
                return Err(failed(format!(
                    "account {key} holds the name {:?}",
                    account.name
                )));
            }
            let user = User {
                id: revision_id(entry.revision)?,
                name: account.name,
            };
            Ok(Some((user, account.hash)))
        })
    }

    /// Stores a new account under `name` with the bcrypt `hash` of its password.
    /// [`Created::NameTaken`] if an account has this name, ignoring ASCII case; of two concurrent
    /// creates of one name, on any nodes, exactly one gets [`Created::Ok`].
    pub fn create_user(&self, name: &str, hash: &str) -> Result<Created, AccountError> {
        let key = account_key(name).ok_or_else(|| failed(format!("not a username: {name:?}")))?;
        if hash.is_empty() || hash.contains('\n') {
            return Err(failed(
                "a password hash must be one line of text".to_owned(),
            ));
        }
        let value = AccountValue {
            name: name.to_owned(),
            hash: hash.to_owned(),
            created_at: unix_now(),
        };
        self.call(move |buckets| async move {
            match buckets.accounts.create(&key, value.encode().into()).await {
                Ok(revision) => Ok(Created::Ok(User {
                    id: revision_id(revision)?,
                    name: value.name,
                })),
                Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => Ok(Created::NameTaken),
                Err(e) => Err(failed(format!("creating account {key}: {e}"))),
            }
        })
    }

    /// Stores a channel owned by user `owner`. `Ok(false)` if a channel with this name, ignoring
    /// case (Unicode lower-casing), exists; of two concurrent creates exactly one gets `Ok(true)`.
    pub fn create_channel(&self, channel: &ChannelName, owner: i64) -> Result<bool, AccountError> {
        let key = channel_key(channel);
        let value = ChannelValue {
            name: channel.clone(),
            owner,
            created_at: unix_now(),
        };
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
            let entry = buckets
                .channels
                .entry(key.as_str())
                .await
                .map_err(|e| failed(format!("reading channel {key}: {e}")))?;
            match entry {
                Some(entry) if entry.operation == kv::Operation::Put => {
                    let value = ChannelValue::decode(&entry.value)
                        .map_err(|e| failed(format!("channel {key}: {e}")))?;
                    Ok(Some(value.name))
                }
                _ => Ok(None),
            }
        })
    }

    /// Every stored channel's display name, oldest first.
    pub fn list_channels(&self) -> Result<Vec<String>, AccountError> {
        self.call(|buckets| async move {
            let listing = |e: &dyn std::fmt::Display| failed(format!("listing channels: {e}"));
            let keys: Vec<String> = buckets
                .channels
                .keys()
                .await
                .map_err(|e| listing(&e))?
                .try_collect()
                .await
                .map_err(|e| listing(&e))?;
            let entries = futures::future::try_join_all(
                keys.into_iter().map(|key| buckets.channels.entry(key)),
            )
            .await
            .map_err(|e| listing(&e))?;
            let mut channels: Vec<(u64, ChannelName)> = entries
                .into_iter()
                .flatten()
                .filter(|entry| entry.operation == kv::Operation::Put)
                .filter_map(|entry| match ChannelValue::decode(&entry.value) {
                    Ok(channel) if channel_key(&channel.name) == entry.key => {
                        Some((entry.revision, channel.name))
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
            channels.sort_unstable_by_key(|&(revision, _)| revision);
            Ok(channels
                .into_iter()
                .map(|(_, name)| name.as_str().to_owned())
                .collect())
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
    })
}

fn failed(why: String) -> AccountError {
    AccountError::Failed(why)
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

    fn text(&self, field: &str) -> Result<&'a str, ValueError> {
        self.0
            .iter()
            .find(|&&(name, _)| name == field)
            .map(|&(_, value)| value)
            .ok_or_else(|| ValueError(format!("no field {field:?}")))
    }

    fn int(&self, field: &str) -> Result<i64, ValueError> {
        let text = self.text(field)?;
        text.parse()
            .map_err(|_| ValueError(format!("field {field:?} is not a number: {text:?}")))
    }
}

/// What the accounts bucket holds for one account; its id is the entry's revision.
#[derive(Debug, Clone, PartialEq, Eq)]
struct AccountValue {
    /// The username as created, in its case.
    name: String,
    /// The bcrypt hash of the password.
    hash: String,
    /// Unix seconds.
    created_at: i64,
}

impl AccountValue {
    fn encode(&self) -> String {
        format!(
            "name={}\nhash={}\ncreated_at={}\n",
            self.name, self.hash, self.created_at
        )
    }

    fn decode(value: &[u8]) -> Result<AccountValue, ValueError> {
        let fields = Fields::parse(value)?;
        let name = fields.text("name")?;
        validate_username(name).map_err(|_| ValueError(format!("{name:?} is no username")))?;
        let hash = fields.text("hash")?;
        if hash.is_empty() {
            return Err(ValueError("the hash is empty".to_owned()));
        }
        Ok(AccountValue {
            name: name.to_owned(),
            hash: hash.to_owned(),
            created_at: fields.int("created_at")?,
        })
    }
}

/// What the channels bucket holds for one channel.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ChannelValue {
    /// The name as created, in its case.
    name: ChannelName,
    /// The id of the user who made it.
    owner: i64,
    /// Unix seconds.
    created_at: i64,
}

impl ChannelValue {
    fn encode(&self) -> String {
        format!(
            "name={}\nowner={}\ncreated_at={}\n",
            self.name.as_str(),
            self.owner,
            self.created_at
        )
    }

    fn decode(value: &[u8]) -> Result<ChannelValue, ValueError> {
        let fields = Fields::parse(value)?;
        let name = fields.text("name")?;
        let name = ChannelName::new(name)
            .map_err(|e| ValueError(format!("{name:?} is no channel name: {e}")))?;
        Ok(ChannelValue {
            name,
            owner: fields.int("owner")?,
            created_at: fields.int("created_at")?,
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
        let account = AccountValue {
            name: "Alice".to_owned(),
            hash: "$2b$04$abcdefghijklmnopqrstuu5mDP0VvMT5NU5rbqmeTGL2ycNeUkwXe".to_owned(),
            created_at: 1_700_000_000,
        };
        assert_eq!(
            AccountValue::decode(account.encode().as_bytes()),
            Ok(account)
        );
        let channel = ChannelValue {
            name: chan("Ärger"),
            owner: 42,
            created_at: -1,
        };
        let decoded = ChannelValue::decode(channel.encode().as_bytes()).unwrap();
        assert_eq!(decoded.name.as_str(), "Ärger");
        assert_eq!((decoded.owner, decoded.created_at), (42, -1));
    }

    #[test]
    fn unknown_fields_are_ignored_so_later_versions_may_add_some() {
        let value = b"id=7\nname=Bob\nhash=$2b$x\ncreated_at=5\nnote=a=b\n";
        let account = AccountValue::decode(value).unwrap();
        assert_eq!(
            (
                account.name.as_str(),
                account.hash.as_str(),
                account.created_at
            ),
            ("Bob", "$2b$x", 5)
        );
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
