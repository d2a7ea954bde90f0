//! The bridge's listening switches between a subscription per channel and one wildcard while a
//! home publishes as fast as it can, against a real `nats-server`: every channel's events still
//! reach the shard in order, none missing (the same event twice is allowed: the replica drops it).
//!
//! Without the hand-over (both subscriptions forwarding at once from two tasks), events came out
//! of order around a switch and the replica reported them lost; issue 11's 50,000-user runs
//! showed it. The test needs `nats-server` (see `common/nats.rs`); without it it is skipped,
//! unless `RINGTALK_REQUIRE_NATS` is set.

#[path = "common/nats.rs"]
mod nats;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nats::Nats;
use ringtalk::cluster::link::{links, ShardLink};
use ringtalk::cluster::listening::{Listening, EACH_UP_TO};
use ringtalk::cluster::wire::{self, ClusterIn, Event, EventKind};
use ringtalk::mesh::Doorbell;

/// Channels with a home publishing all through the test.
const BUSY: usize = 3;
/// Switches to the wildcard and back.
const ROUNDS: usize = 40;
/// How long the test waits for the last events once the home has stopped.
const DEADLINE: Duration = Duration::from_secs(20);

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

fn key(i: usize) -> Arc<str> {
    format!("chan{i}").into()
}

/// What the shard received so far, checked as a replica reads it: per busy channel the next
/// number expected; a number past it is a gap.
#[derive(Default)]
struct Heard {
    next: HashMap<String, u64>,
    duplicates: u64,
}

impl Heard {
    fn take(&mut self, link: &ShardLink) {
        while let Some(msg) = link.try_recv() {
            let ClusterIn::Event(event) = msg else {
                continue;
            };
            // The first event heard starts the count, as it does at a replica: the home
            // published before the node listened.
            let next = self.next.entry(event.channel.clone()).or_insert(event.seq);
            assert!(
                event.seq <= *next,
                "#{}: event {} came when {} was next: {} lost or out of order",
                event.channel,
                event.seq,
                next,
                event.seq - *next
            );
            if event.seq < *next {
                self.duplicates += 1;
            } else {
                *next += 1;
            }
        }
    }
}

#[test]
fn switching_between_one_subscription_per_channel_and_the_wildcard_loses_and_reorders_nothing() {
    let Some(nats) = Nats::start() else { return };
    let url = nats.url();

    // The home: its own connection and thread, publishing events 1, 2, 3... of each busy channel
    // until told to stop; then says how many it published of each.
    let stop = Arc::new(AtomicBool::new(false));
    let home = {
        let (url, stop) = (url.clone(), stop.clone());
        std::thread::spawn(move || {
            runtime().block_on(async move {
                let client = async_nats::connect(url).await.expect("the home connects");
                let mut seq = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    seq += 1;
                    for i in 0..BUSY {
                        let event = Event {
                            channel: key(i).to_string(),
                            home: "home".into(),
                            epoch: 1,
                            seq,
                            what: EventKind::Line("a line".into()),
                        };
                        let payload = serde_json::to_vec(&event).expect("an event encodes");
                        client
                            .publish(wire::channel_subject(&key(i)), payload.into())
                            .await
                            .expect("the home publishes");
                    }
                    // Some 20,000 events a second per channel: busy, but within what the node's
                    // queues hold while the test thread switches.
                    if seq % 20 == 0 {
                        client.flush().await.expect("the home flushes");
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                }
                client.flush().await.expect("the home flushes");
                seq
            })
        })
    };

    // The listening node, with one shard whose queue the test reads.
    let doorbell = Doorbell::new().expect("an eventfd");
    let (ends, to_shards, _from_shards) = links(&[doorbell]);
    let shard = &ends[0];
    let mut heard = Heard::default();
    let rt = runtime();
    let published = rt.block_on(async {
        let client = async_nats::connect(url).await.expect("the node connects");
        let mut listening = Listening::default();
        for i in 0..BUSY {
            listening.listen(&client, key(i), &to_shards).await;
        }
        // The switching starts once the home is heard on every busy channel.
        while heard.next.len() < BUSY {
            tokio::time::sleep(Duration::from_millis(1)).await;
            heard.take(shard);
        }
        // Each round crosses EACH_UP_TO (to the wildcard) and comes back below half of it
        // (one by one again), with the busy channels heard all the while.
        let extra = EACH_UP_TO + 1 - BUSY;
        for _round in 0..ROUNDS {
            for i in BUSY..BUSY + extra {
                listening.listen(&client, key(i), &to_shards).await;
                heard.take(shard);
            }
            assert!(listening.every_channel());
            for _ in 0..20 {
                tokio::task::yield_now().await;
                heard.take(shard);
            }
            for i in BUSY..BUSY + extra {
                listening.stop(&client, &key(i), &to_shards).await;
                heard.take(shard);
            }
            assert!(!listening.every_channel());
            for _ in 0..20 {
                tokio::task::yield_now().await;
                heard.take(shard);
            }
        }
        stop.store(true, Ordering::Relaxed);
        let published = tokio::task::spawn_blocking(move || home.join().expect("the home ran"))
            .await
            .expect("joined the home");
        // Everything the home published is on its way; it arrives, in order.
        let deadline = Instant::now() + DEADLINE;
        loop {
            heard.take(shard);
            let all_in = (0..BUSY).all(|i| heard.next.get(&*key(i)) == Some(&(published + 1)));
            if all_in {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the last events did not come: {:?} of {published}",
                heard.next
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        listening.close();
        published
    });
    assert!(
        published > 100,
        "the home published while the node switched ({published} events a channel)"
    );
    eprintln!(
        "{published} events per channel, {} heard twice",
        heard.duplicates
    );
}
