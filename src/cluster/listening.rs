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
//! below half of that it goes back to one subscription per channel. While it switches, an event
//! may come twice; the replica's sequence numbers drop the second.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};

use futures::StreamExt;
use tokio::task::AbortHandle;
use tracing::{debug, info, warn};

use super::link::ToShards;
use super::wire::{self, ClusterIn};

/// The most channels a node listens to with a subscription each.
pub const EACH_UP_TO: usize = 64;

/// The subject of every channel.
const EVERY_CHANNEL: &str = "ringtalk.chan.>";

/// The bridge's subscriptions to channels' subjects.
#[derive(Debug, Default)]
pub struct Listening {
    /// The keys of the channels this node wants events of (shared with the wildcard's task).
    interest: Arc<Mutex<HashSet<Arc<str>>>>,
    /// One subscription (its forwarding task) per channel, while there are few.
    each: HashMap<Arc<str>, AbortHandle>,
    /// The wildcard subscription's task, while there are many.
    all: Option<AbortHandle>,
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
            return self.subscribe_each(client, key, to).await;
        }
        match client.subscribe(EVERY_CHANNEL).await {
            Ok(sub) => {
                info!(
                    channels = count,
                    "cluster: listening to every channel's subject"
                );
                let task = tokio::spawn(hear_all(sub, self.interest.clone(), to.clone()));
                self.all = Some(task.abort_handle());
                for (_, task) in self.each.drain() {
                    task.abort();
                }
            }
            Err(e) => {
                warn!(error = %e, "cluster: cannot listen to every channel; one by one instead");
                self.subscribe_each(client, key, to).await;
            }
        }
    }

    /// Stops hearing channel `key`'s events.
    pub async fn stop(&mut self, client: &async_nats::Client, key: &Arc<str>, to: &ToShards) {
        let remaining: Vec<Arc<str>> = {
            let mut interest = self.interest.lock().unwrap_or_else(PoisonError::into_inner);
            if !interest.remove(key) {
                return;
            }
            let back_to_each = self.all.is_some() && interest.len() <= EACH_UP_TO / 2;
            if !back_to_each {
                Vec::new()
            } else {
                interest.iter().cloned().collect()
            }
        };
        if let Some(task) = self.each.remove(key) {
            // Dropping the subscriber with its task unsubscribes.
            task.abort();
        }
        let Some(all) = self.all.clone() else { return };
        if self.interest_len() > EACH_UP_TO / 2 {
            return;
        }
        // One subscription each first, then the wildcard goes: nothing falls between.
        for key in remaining {
            self.subscribe_each(client, key, to).await;
        }
        info!(
            channels = self.each.len(),
            "cluster: listening to channels one by one"
        );
        all.abort();
        self.all = None;
    }

    /// Whether the node listens to every channel's subject (with one wildcard subscription).
    pub fn every_channel(&self) -> bool {
        self.all.is_some()
    }

    /// Stops every subscription.
    pub fn close(&mut self) {
        for (_, task) in self.each.drain() {
            task.abort();
        }
        if let Some(all) = self.all.take() {
            all.abort();
        }
    }

    fn interest_len(&self) -> usize {
        self.interest
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    async fn subscribe_each(&mut self, client: &async_nats::Client, key: Arc<str>, to: &ToShards) {
        if self.each.contains_key(&key) {
            return;
        }
        match client.subscribe(wire::channel_subject(&key)).await {
            Ok(sub) => {
                let task = tokio::spawn(hear_one(sub, key.clone(), to.clone()));
                self.each.insert(key, task.abort_handle());
            }
            Err(e) => warn!(error = %e, "cluster: cannot listen to a channel"),
        }
    }
}

/// Hands every event heard on one channel's subject to the shard that keeps the channel.
async fn hear_one(mut sub: async_nats::Subscriber, key: Arc<str>, to: ToShards) {
    let shard = shard_proto::home_of_key(&key, to.len()).index();
    while let Some(msg) = sub.next().await {
        hand_over(&msg.payload, shard, &to);
    }
}

/// Hands the events of the channels of interest, heard on the wildcard, to their shards; the
/// others are dropped before they are decoded.
async fn hear_all(
    mut sub: async_nats::Subscriber,
    interest: Arc<Mutex<HashSet<Arc<str>>>>,
    to: ToShards,
) {
    while let Some(msg) = sub.next().await {
        let Some(key) = msg.subject.rsplit('.').next().and_then(wire::unhex) else {
            continue;
        };
        let wanted = interest
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .contains(key.as_str());
        if wanted {
            let shard = shard_proto::home_of_key(&key, to.len()).index();
            hand_over(&msg.payload, shard, &to);
        }
    }
}

fn hand_over(payload: &[u8], shard: usize, to: &ToShards) {
    match serde_json::from_slice::<wire::Event>(payload) {
        Ok(event) => to.send(shard, ClusterIn::Event(event)),
        Err(e) => debug!(error = %e, "cluster: an unreadable event"),
    }
}
