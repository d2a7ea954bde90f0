//! Which channels' events this node hears: the subjects of the channels where it has members (or
//! joins waiting) and is not the home.
//!
//! Each channel has a subject of its own and a node listens to it only while it has an interest,
//! so NATS carries a channel's events only to the nodes that want them. But a subscription costs
//! about 6 kB in the client (async-nats gives each one a channel whose first block holds 32
//! messages), so a node interested in thousands of channels would spend more on subscriptions
//! than on its users (measured: 3.9 kB per idle user instead of 2.0, issue 11). Past
//! [`EACH_UP_TO`] channels the node listens to every channel's subject with one wildcard
//! subscription instead, and drops, before decoding, the events of channels it has no interest in;
//! below half of that it goes back to one subscription per channel.
//!
//! A switch hands over without losing or reordering an event. The new subscriptions are made
//! first, and a request that nobody answers goes to NATS and back: once NATS says "no responders",
//! it has registered them, and every event it sent before that answer is in the old
//! subscriptions' queues (but for stragglers, which the old subscriptions get a few milliseconds
//! more for, see [`STRAGGLERS`]). The old subscriptions' tasks are stopped, what their queues hold
//! is handed to the shards, and only then do the new subscriptions' tasks start, with everything
//! since the switch waiting in their queues. An event in both comes twice, in order, and the
//! replica's sequence numbers drop the second. (Forwarding both at once from two tasks
//! reordered events, which replicas reported as lost: issue 11's 50,000-user runs showed it.)

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures::{FutureExt, StreamExt};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use super::link::ToShards;
use super::wire::{self, ClusterIn};

/// The most channels a node listens to with a subscription each.
pub const EACH_UP_TO: usize = 64;

/// The subject of every channel.
const EVERY_CHANNEL: &str = "ringtalk.chan.>";

/// The subject of the round trip that tells when NATS has registered new subscriptions; nobody
/// subscribes to it.
const BARRIER: &str = "ringtalk.barrier";

/// How long a switch waits for NATS's answer (longer only while NATS is away, when no events come
/// anyway).
const BARRIER_WAIT: Duration = Duration::from_secs(1);

/// How long the old subscriptions go on after NATS's answer. NATS matches a message against the
/// subscriptions a moment before it queues it for this node, so a message matched just before a
/// new subscription was registered can still come after the answer, through the old one only.
const STRAGGLERS: Duration = Duration::from_millis(5);

/// The bridge's subscriptions to channels' subjects.
#[derive(Debug, Default)]
pub struct Listening {
    /// The keys of the channels this node wants events of (shared with the wildcard's task).
    interest: Arc<Mutex<HashSet<Arc<str>>>>,
    /// One subscription per channel, while there are few.
    each: HashMap<Arc<str>, Hearing>,
    /// The wildcard subscription, while there are many.
    all: Option<Hearing>,
}

impl Listening {
    /// Starts hearing channel `key`'s events.
    pub async fn listen(&mut self, client: &async_nats::Client, key: Arc<str>, to: &ToShards) {
        let count = {
            let mut interest = self.interest.lock().unwrap_or_else(PoisonError::into_inner);
            if !interest.insert(key.clone()) {
                return;
            }
            interest.len()
        };
        if self.all.is_some() {
            return;
        }
        if count <= EACH_UP_TO {
            return self.listen_each(client, key, to).await;
        }
        let Some(sub) = subscribe(client, EVERY_CHANNEL.to_string()).await else {
            warn!("cluster: cannot listen to every channel; one by one instead");
            return self.listen_each(client, key, to).await;
        };
        barrier(client).await;
        for (_, hearing) in self.each.drain() {
            hearing.finish(to).await;
        }
        self.all = Some(Hearing::start(sub, self.feed_of(None, to), to));
        info!(
            channels = count,
            "cluster: listening to every channel's subject"
        );
    }

    /// Stops hearing channel `key`'s events.
    pub async fn stop(&mut self, client: &async_nats::Client, key: &Arc<str>, to: &ToShards) {
        // The channels to listen to one by one, when the wildcard is to go.
        let remaining: Option<Vec<Arc<str>>> = {
            let mut interest = self.interest.lock().unwrap_or_else(PoisonError::into_inner);
            if !interest.remove(key) {
                return;
            }
            (self.all.is_some() && interest.len() <= EACH_UP_TO / 2)
                .then(|| interest.iter().cloned().collect())
        };
        if let Some(hearing) = self.each.remove(key) {
            // Nothing more of it is wanted: no hand-over.
            hearing.abort();
        }
        let Some(remaining) = remaining else { return };
        let Some(all) = self.all.take() else { return };
        let mut subs = Vec::with_capacity(remaining.len());
        for key in remaining {
            if let Some(sub) = subscribe(client, wire::channel_subject(&key)).await {
                subs.push((key, sub));
            }
        }
        barrier(client).await;
        all.finish(to).await;
        for (key, sub) in subs {
            self.hear_each(key, sub, to);
        }
        info!(
            channels = self.each.len(),
            "cluster: listening to channels one by one"
        );
    }

    /// Listens to channel `key` with a subscription of its own.
    async fn listen_each(&mut self, client: &async_nats::Client, key: Arc<str>, to: &ToShards) {
        if let Some(sub) = subscribe(client, wire::channel_subject(&key)).await {
            self.hear_each(key, sub, to);
        }
    }

    /// Forwards what `sub`, channel `key`'s own subscription, hears.
    fn hear_each(&mut self, key: Arc<str>, sub: async_nats::Subscriber, to: &ToShards) {
        let hearing = Hearing::start(sub, self.feed_of(Some(&key), to), to);
        self.each.insert(key, hearing);
    }

    /// Whether the node listens to every channel's subject (with one wildcard subscription).
    pub fn every_channel(&self) -> bool {
        self.all.is_some()
    }

    /// Stops every subscription.
    pub fn close(&mut self) {
        for (_, hearing) in self.each.drain() {
            hearing.abort();
        }
        if let Some(all) = self.all.take() {
            all.abort();
        }
    }

    /// Where the events of channel `key`'s subscription go, or, for `None`, the wildcard's.
    fn feed_of(&self, key: Option<&Arc<str>>, to: &ToShards) -> Feed {
        match key {
            Some(key) => Feed::One {
                shard: shard_proto::home_of_key(key, to.len()).index(),
            },
            None => Feed::All {
                interest: self.interest.clone(),
            },
        }
    }
}

/// Subscribes to `subject`; `None` (and a warning) if the client cannot.
async fn subscribe(client: &async_nats::Client, subject: String) -> Option<async_nats::Subscriber> {
    match client.subscribe(subject).await {
        Ok(sub) => Some(sub),
        Err(e) => {
            warn!(error = %e, "cluster: cannot subscribe to a channel's events");
            None
        }
    }
}

/// Returns once NATS has registered every subscription made before, and this node has taken in
/// every message NATS sent it before that (or after [`BARRIER_WAIT`]): NATS handles one client's
/// commands in order and answers a request nobody listens to at once, on the same connection.
async fn barrier(client: &async_nats::Client) {
    let asked = client.request(BARRIER, Vec::new().into());
    match tokio::time::timeout(BARRIER_WAIT, asked).await {
        Ok(Err(e)) if e.kind() == async_nats::RequestErrorKind::NoResponders => {
            tokio::time::sleep(STRAGGLERS).await;
        }
        Ok(Ok(_)) => warn!(
            "cluster: someone answers on {BARRIER}; a switch of subscriptions may lose events"
        ),
        Ok(Err(e)) => {
            debug!(error = %e, "cluster: no barrier round trip; a switch of subscriptions may lose events")
        }
        Err(_) => {
            debug!("cluster: no barrier answer in time; a switch of subscriptions may lose events")
        }
    }
}

/// Which events of a subscription go to which shard.
#[derive(Debug, Clone)]
enum Feed {
    /// One channel's subject: all of them, to the shard that keeps the channel.
    One { shard: usize },
    /// Every channel's subject: the events of the channels of interest, to their shards; the
    /// others are dropped before they are decoded.
    All {
        interest: Arc<Mutex<HashSet<Arc<str>>>>,
    },
}

impl Feed {
    fn forward(&self, msg: &async_nats::Message, to: &ToShards) {
        let shard = match self {
            Feed::One { shard } => *shard,
            Feed::All { interest } => {
                let Some(key) = msg.subject.rsplit('.').next().and_then(wire::unhex) else {
                    return;
                };
                let wanted = interest
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .contains(key.as_str());
                if !wanted {
                    return;
                }
                shard_proto::home_of_key(&key, to.len()).index()
            }
        };
        match serde_json::from_slice::<wire::Event>(&msg.payload) {
            Ok(event) => to.send(shard, ClusterIn::Event(event)),
            Err(e) => debug!(error = %e, "cluster: an unreadable event"),
        }
    }
}

/// A subscription and the task that forwards what it hears.
#[derive(Debug)]
struct Hearing {
    stop: oneshot::Sender<()>,
    task: JoinHandle<(async_nats::Subscriber, Feed)>,
}

impl Hearing {
    fn start(sub: async_nats::Subscriber, feed: Feed, to: &ToShards) -> Hearing {
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(hear(sub, feed, to.clone(), stopped));
        Hearing { stop, task }
    }

    /// Stops the task and forwards what the subscription has already received; the subscription
    /// then ends.
    async fn finish(self, to: &ToShards) {
        let _ = self.stop.send(());
        let Ok((mut sub, feed)) = self.task.await else {
            return;
        };
        while let Some(Some(msg)) = sub.next().now_or_never() {
            feed.forward(&msg, to);
        }
    }

    /// Stops the task; what it had not forwarded is dropped with the subscription.
    fn abort(self) {
        self.task.abort();
    }
}

/// Forwards what `sub` hears until told to stop; gives the subscription back, with whatever it
/// received and did not forward still in it.
async fn hear(
    mut sub: async_nats::Subscriber,
    feed: Feed,
    to: ToShards,
    mut stop: oneshot::Receiver<()>,
) -> (async_nats::Subscriber, Feed) {
    loop {
        tokio::select! {
            biased;
            _ = &mut stop => break,
            msg = sub.next() => match msg {
                Some(msg) => feed.forward(&msg, &to),
                None => break,
            },
        }
    }
    (sub, feed)
}
