//! Several ringtalk nodes serving one chat, joined by a NATS server (`--cluster nats://HOST:PORT`).
//!
//! No maintained NATS client runs without tokio, so each node runs one *bridge* thread: a
//! current-thread tokio runtime with the `async-nats` client, the same shape as the SQLite and
//! bcrypt workers. No shard waits on it: shards and bridge meet in the queues of [`link`]. The
//! bridge
//!
//! - connects, and reconnects by itself when the NATS server goes and comes back (the log says
//!   so, and every shard is told, so members hear that cross-node chat is interrupted);
//! - announces this node once a second and keeps the [`membership`] of live nodes (a node not
//!   heard from for 3 s is gone), telling every shard when it changes; [`placement`] then says
//!   which node is each channel's home;
//! - carries what the shards' hubs say to other nodes ([`wire`]): requests to a channel's home,
//!   the home's events on the channel's subject (subscribed only while this node has members
//!   there), answers, and the list of channels, which it gathers from every node.
//!
//! What each shard does with it is in `hub::cluster`.

pub mod link;
pub mod listening;
pub mod membership;
pub mod placement;
pub mod store;
pub mod wire;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures::StreamExt;
use serde::de::DeserializeOwned;
use tracing::{debug, error, info, warn};

use link::{FromShards, ToShards, Traffic};
use membership::{Membership, ANNOUNCE_EVERY};
use wire::{ClusterIn, ClusterOut, ListItem};

pub use wire::NODES_SUBJECT;

/// What the rest of the server (the heartbeat, tests) may read of the cluster.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClusterView {
    /// The bridge is connected to the NATS server now.
    pub connected: bool,
    /// Live nodes, this one included, in name order.
    pub nodes: Vec<String>,
    /// The node listens to every channel's subject with one subscription (see [`listening`]).
    pub every_channel: bool,
}

/// Reads the bridge's [`ClusterView`] and traffic from any thread.
#[derive(Clone, Debug)]
pub struct ClusterWatch {
    view: Arc<Mutex<ClusterView>>,
    traffic: Arc<Traffic>,
}

impl ClusterWatch {
    /// The cluster as the bridge sees it now.
    pub fn view(&self) -> ClusterView {
        self.view
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Messages sent to and received from other nodes, and lines dropped on the way.
    pub fn traffic(&self) -> (u64, u64, u64) {
        use std::sync::atomic::Ordering::Relaxed;
        let t = &self.traffic;
        (
            t.sent.load(Relaxed),
            t.received.load(Relaxed),
            t.dropped.load(Relaxed),
        )
    }
}

/// A thread that runs a tokio runtime until told to stop (the bridge's, the store's). Stopping
/// it, or dropping it, tells it and waits for it.
#[derive(Debug)]
pub(crate) struct RuntimeThread {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl RuntimeThread {
    /// Runs `body` on `runtime` on a new thread called `name`; `body` gets the signal to stop.
    pub(crate) fn spawn<F, Fut>(
        name: &str,
        runtime: tokio::runtime::Runtime,
        body: F,
    ) -> std::io::Result<RuntimeThread>
    where
        F: FnOnce(tokio::sync::oneshot::Receiver<()>) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ()>,
    {
        let (stop, stopped) = tokio::sync::oneshot::channel();
        let thread = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || runtime.block_on(body(stopped)))?;
        Ok(RuntimeThread {
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// Tells the thread to stop and waits for it.
    pub(crate) fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for RuntimeThread {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The bridge thread and what it shares.
#[derive(Debug)]
pub struct Cluster {
    watch: ClusterWatch,
    thread: RuntimeThread,
}

/// How long a starting node waits to hear the others before it takes users: a node that thinks
/// itself alone would take every channel's home for a moment.
pub const SETTLE: Duration = Duration::from_millis(1500);

/// What the bridge is given to start.
pub struct BridgeStart {
    /// The NATS server's URL.
    pub url: String,
    /// This node's name.
    pub node: String,
    /// The ways to the shards.
    pub to_shards: ToShards,
    /// What the shards send.
    pub from_shards: FromShards,
}

impl Cluster {
    /// Starts the bridge thread. Returns once the node has been connected for [`SETTLE`] (so it
    /// has heard the other nodes), or after `wait` if NATS is not there: the connection is made
    /// (and remade) in the background.
    pub fn start(start: BridgeStart, wait: Duration) -> std::io::Result<Cluster> {
        let view = Arc::new(Mutex::new(ClusterView {
            connected: false,
            nodes: vec![start.node.clone()],
            every_channel: false,
        }));
        let watch = ClusterWatch {
            view: view.clone(),
            traffic: start.to_shards.traffic().clone(),
        };
        let (settled_tx, settled_rx) = std::sync::mpsc::channel();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let thread = RuntimeThread::spawn("ringtalk-bridge", runtime, move |stop| {
            bridge(start, view, stop, settled_tx)
        })?;
        let _ = settled_rx.recv_timeout(wait);
        Ok(Cluster { watch, thread })
    }

    /// The cluster as the bridge sees it now.
    pub fn view(&self) -> ClusterView {
        self.watch.view()
    }

    /// A handle that reads the view from any thread (the heartbeat's).
    pub fn watch(&self) -> ClusterWatch {
        self.watch.clone()
    }

    /// Stops the bridge and waits for its thread.
    pub fn stop(mut self) {
        self.thread.stop();
    }
}

/// Milliseconds since the Unix epoch: a new home's epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// How long the bridge waits for one publish to be taken by the client, and for each other node
/// to answer what [`ask_every_node`] asks them all.
const SEND_TIMEOUT: Duration = Duration::from_secs(1);

/// A list request from another node being gathered from this node's shards.
struct Gathering {
    reply: async_nats::Subject,
    waiting: usize,
    channels: Vec<ListItem>,
}

/// Another node's question of who is online here, while this node's shards answer it: first
/// each shard's part of the directory, then what the shards of the sessions named say of them.
struct UsersGathering {
    reply: async_nats::Subject,
    /// Shards yet to answer the current round.
    waiting: usize,
    /// How many names at most.
    first: usize,
    /// Users this node has online.
    total: u32,
    /// The first of them, with their sessions.
    users: Vec<shard_proto::OnlineUser>,
    /// What the sessions' shards said.
    facts: Vec<shard_proto::SessionFacts>,
}

/// The bridge: keeps the connection, announces this node, follows the others, and carries the
/// shards' messages both ways.
async fn bridge(
    start: BridgeStart,
    view: Arc<Mutex<ClusterView>>,
    mut stop: tokio::sync::oneshot::Receiver<()>,
    settled: std::sync::mpsc::Sender<()>,
) {
    let BridgeStart {
        url,
        node,
        to_shards,
        mut from_shards,
    } = start;
    let (link_tx, mut link_rx) = tokio::sync::mpsc::unbounded_channel();
    let connecting = async_nats::ConnectOptions::new()
        .name(&node)
        // A node never needs what it published itself (its own announcements, or the events of
        // the channels it is home to, which the wildcard of `listening` would bring back).
        .no_echo()
        .retry_on_initial_connect()
        .event_callback(move |event| {
            let link_tx = link_tx.clone();
            async move {
                match event {
                    async_nats::Event::Connected => {
                        let _ = link_tx.send(true);
                    }
                    async_nats::Event::Disconnected => {
                        let _ = link_tx.send(false);
                    }
                    async_nats::Event::SlowConsumer(sid) => {
                        warn!(
                            sid,
                            "cluster: NATS dropped messages for this node (too slow)"
                        );
                    }
                    _ => {}
                }
            }
        })
        .connect(url.as_str())
        .await;
    let client = match connecting {
        Ok(client) => client,
        Err(e) => {
            warn!(%url, error = %e, "cluster: cannot use this NATS address; this node runs alone");
            return;
        }
    };
    let subscribed = async {
        Ok::<_, async_nats::SubscribeError>((
            client.subscribe(NODES_SUBJECT).await?,
            client.subscribe(wire::CREATED_SUBJECT).await?,
            client.subscribe(wire::DELETED_SUBJECT).await?,
            client
                .subscribe(format!("ringtalk.home.{}.>", wire::hex(&node)))
                .await?,
            client
                .subscribe(format!("ringtalk.node.{}.>", wire::hex(&node)))
                .await?,
            client.subscribe(wire::list_subject(&node)).await?,
            client.subscribe(wire::GONE_SUBJECT).await?,
            client.subscribe(wire::tell_subject(&node)).await?,
            client.subscribe(wire::users_subject(&node)).await?,
            client.subscribe(wire::WALL_SUBJECT).await?,
            client.subscribe(wire::IGNORING_SUBJECT).await?,
            client.subscribe(wire::kill_subject(&node)).await?,
        ))
    };
    let (
        mut announcements,
        mut created,
        mut deleted,
        mut home_inbox,
        mut node_inbox,
        mut list_requests,
        mut gone_hints,
        mut tells,
        mut users_asked,
        mut walls,
        mut ignorings,
        mut kills,
    ) = match subscribed.await {
        Ok(subs) => subs,
        Err(e) => {
            warn!(error = %e, "cluster: cannot subscribe; this node runs alone");
            return;
        }
    };
    let shards = to_shards.len();
    let traffic = to_shards.traffic().clone();
    let mut membership = Membership::new(&node, Instant::now());
    let mut connected = false;
    let mut connected_since: Option<Instant> = None;
    let mut settled = Some(settled);
    // The shards and the view are told when the live nodes or the link change.
    let mut changed = true;
    let mut listening = listening::Listening::default();
    let mut gatherings: HashMap<u64, Gathering> = HashMap::new();
    let mut users_gatherings: HashMap<u64, UsersGathering> = HashMap::new();
    let mut next_gathering = 0u64;
    let mut tick = tokio::time::interval(ANNOUNCE_EVERY);
    let mut same_name_log = crate::listener::LogLimiter::new(Duration::from_secs(10));
    loop {
        tokio::select! {
            _ = &mut stop => break,
            Some(up) = link_rx.recv() => {
                if up {
                    info!("cluster: connected to NATS");
                    // Nobody was heard while NATS was away; that is NATS's silence, not theirs.
                    membership.heard_all_again(Instant::now());
                    connected_since = Some(Instant::now());
                } else {
                    warn!("cluster: lost NATS; reconnecting (cross-node chat is interrupted)");
                    connected_since = None;
                }
                changed |= connected != up;
                connected = up;
            }
            _ = tick.tick() => {
                let announce = client.publish(NODES_SUBJECT, node.clone().into());
                let _ = tokio::time::timeout(ANNOUNCE_EVERY, announce).await;
                // While NATS is away nobody is heard, and nobody is taken for gone.
                if connected {
                    for gone in membership.expire(&node, Instant::now()) {
                        info!(node = %gone, "cluster: node gone");
                        changed = true;
                        let hint = client.publish(wire::GONE_SUBJECT, gone.into());
                        let _ = tokio::time::timeout(SEND_TIMEOUT, hint).await;
                    }
                }
                to_shards.send_all(|| ClusterIn::Tick);
            }
            msg = announcements.next() => {
                let Some(msg) = msg else { break };
                if let Ok(name) = std::str::from_utf8(&msg.payload) {
                    // NATS does not echo this node's own announcements: this is another node
                    // with the same name, and placement cannot tell the two apart.
                    if name == node {
                        if same_name_log.allow(Instant::now()).is_some() {
                            error!(node = %name, "cluster: another node announces this node's name; give each node its own --node-name");
                        }
                        continue;
                    }
                    if membership.heard(name, Instant::now()) {
                        info!(node = %name, "cluster: node joined");
                        changed = true;
                    }
                }
            }
            msg = gone_hints.next() => {
                let Some(msg) = msg else { break };
                if let Ok(name) = std::str::from_utf8(&msg.payload) {
                    if membership.forget_if_silent(&node, name, Instant::now()) {
                        info!(node = %name, "cluster: node gone (another node said so)");
                        changed = true;
                    }
                }
            }
            msg = deleted.next() => {
                let Some(msg) = msg else { break };
                if let Ok(said) = serde_json::from_slice::<wire::ChannelDeleted>(&msg.payload) {
                    if let Ok(channel) = shard_proto::ChannelName::new(&said.channel) {
                        let shard = shard_proto::home_of(&channel, shards).index();
                        to_shards.send(shard, ClusterIn::Deleted(said));
                    }
                }
            }
            msg = created.next() => {
                let Some(msg) = msg else { break };
                if let Ok(name) = std::str::from_utf8(&msg.payload) {
                    if let Ok(channel) = shard_proto::ChannelName::new(name) {
                        let shard = shard_proto::home_of(&channel, shards).index();
                        to_shards.send(shard, ClusterIn::Created(name.to_string()));
                    }
                }
            }
            msg = home_inbox.next() => {
                let Some(msg) = msg else { break };
                match serde_json::from_slice::<wire::ToHomeNode>(&msg.payload) {
                    Ok(req) => match shard_proto::ChannelName::new(&req.channel) {
                        Ok(channel) => {
                            let shard = shard_proto::home_of(&channel, shards).index();
                            to_shards.send(shard, ClusterIn::AtHome(req));
                        }
                        Err(_) => debug!("cluster: a request for a channel with an invalid name"),
                    },
                    Err(e) => debug!(error = %e, "cluster: an unreadable request"),
                }
            }
            msg = node_inbox.next() => {
                let Some(msg) = msg else { break };
                let shard = msg.subject.rsplit('.').next().and_then(|s| s.parse::<usize>().ok());
                match (shard, serde_json::from_slice::<wire::NodeMsg>(&msg.payload)) {
                    (Some(shard), Ok(answer)) => to_shards.send(shard, ClusterIn::AtNode(answer)),
                    _ => debug!("cluster: an unreadable answer"),
                }
            }
            msg = tells.next() => {
                let Some(msg) = msg else { break };
                match serde_json::from_slice::<wire::NodeTell>(&msg.payload) {
                    Ok(tell) => {
                        let shard = shard_proto::home_of_user(&tell.to, shards).index();
                        let reply = msg.reply.map(|reply| Arc::from(reply.as_str()));
                        to_shards.send(shard, ClusterIn::Tell { tell, reply });
                    }
                    Err(e) => debug!(error = %e, "cluster: an unreadable private message"),
                }
            }
            msg = walls.next() => {
                let Some(msg) = msg else { break };
                match std::str::from_utf8(&msg.payload) {
                    Ok(line) => {
                        let line: Arc<str> = line.into();
                        to_shards.send_all(|| ClusterIn::Wall(line.clone()));
                    }
                    Err(_) => debug!("cluster: an unreadable message to everyone"),
                }
            }
            msg = ignorings.next() => {
                let Some(msg) = msg else { break };
                match serde_json::from_slice::<wire::IgnoringChanged>(&msg.payload) {
                    Ok(changed) => {
                        let shard = shard_proto::home_of_user(&changed.name, shards).index();
                        to_shards.send(shard, ClusterIn::Ignoring(changed));
                    }
                    Err(e) => debug!(error = %e, "cluster: an unreadable change of whom a user ignores"),
                }
            }
            msg = kills.next() => {
                let Some(msg) = msg else { break };
                let Some(reply) = msg.reply else { continue };
                match serde_json::from_slice::<wire::KillAsked>(&msg.payload) {
                    Ok(asked) => {
                        let shard = shard_proto::home_of_user(&asked.name, shards).index();
                        let reply: Arc<str> = reply.as_str().into();
                        to_shards.send(shard, ClusterIn::Kill { asked, reply });
                    }
                    Err(e) => debug!(error = %e, "cluster: an unreadable order to end sessions"),
                }
            }
            msg = users_asked.next() => {
                let Some(msg) = msg else { break };
                let Some(reply) = msg.reply else { continue };
                let Ok(asked) = serde_json::from_slice::<wire::UsersAsked>(&msg.payload) else {
                    debug!("cluster: an unreadable question of who is online");
                    continue;
                };
                let id = next_gathering;
                next_gathering += 1;
                let shards_asked: Vec<usize> = match &asked.name {
                    Some(name) => vec![shard_proto::home_of_user(name, shards).index()],
                    None => (0..shards).collect(),
                };
                users_gatherings.insert(id, UsersGathering {
                    reply,
                    waiting: shards_asked.len(),
                    // As many as the last page a user may ask for needs, whatever was asked.
                    first: usize::try_from(asked.first.min(MAX_USERS_ASKED)).unwrap_or(usize::MAX),
                    total: 0,
                    users: Vec::new(),
                    facts: Vec::new(),
                });
                let first = asked.first.min(MAX_USERS_ASKED);
                for shard in shards_asked {
                    let name = asked.name.clone();
                    to_shards.send(shard, ClusterIn::Census { id, first, name });
                }
            }
            msg = list_requests.next() => {
                let Some(msg) = msg else { break };
                let Some(reply) = msg.reply else { continue };
                let id = next_gathering;
                next_gathering += 1;
                gatherings.insert(id, Gathering { reply, waiting: shards, channels: Vec::new() });
                to_shards.send_all(|| ClusterIn::ListRequest { id });
            }
            msg = from_shards.recv() => {
                let Some(msg) = msg else { break };
                match msg {
                    ClusterOut::Subscribe(key) => {
                        listening.listen(&client, key, &to_shards).await;
                        view.lock().unwrap_or_else(PoisonError::into_inner).every_channel = listening.every_channel();
                    }
                    ClusterOut::Unsubscribe(key) => {
                        listening.stop(&client, &key, &to_shards).await;
                        view.lock().unwrap_or_else(PoisonError::into_inner).every_channel = listening.every_channel();
                    }
                    ClusterOut::ListPart { id, channels } => {
                        let Some(g) = gatherings.get_mut(&id) else { continue };
                        g.channels.extend(channels);
                        g.waiting -= 1;
                        if g.waiting == 0 {
                            let g = gatherings.remove(&id).expect("looked up above");
                            let payload = serde_json::to_vec(&g.channels).unwrap_or_default();
                            send(&client, &traffic, connected, g.reply, payload, false).await;
                        }
                    }
                    ClusterOut::List { session } => {
                        let asking = ask_for_lists(client.clone(), membership.others(&node), connected);
                        let to_shards = to_shards.clone();
                        tokio::spawn(async move {
                            let channels = crate::hub::list_entries(asking.await);
                            let answer = ClusterIn::ListAnswer { session: session.key, channels };
                            to_shards.send(session.shard.index(), answer);
                        });
                    }
                    ClusterOut::Wall(line) => {
                        let payload = line.as_bytes().to_vec();
                        send(&client, &traffic, connected, wire::WALL_SUBJECT.into(), payload, false).await;
                    }
                    ClusterOut::Kill { asker, name, farewell } => {
                        let asked = wire::KillAsked { name, farewell };
                        let asking = ask_to_kill(client.clone(), membership.others(&node), asked, connected);
                        let to_shards = to_shards.clone();
                        tokio::spawn(async move {
                            let found = asking.await;
                            if let Some(asker) = asker {
                                let answer = ClusterIn::KilledElsewhere { session: asker.key, found };
                                to_shards.send(asker.shard.index(), answer);
                            }
                        });
                    }
                    ClusterOut::Killed { reply, found } => {
                        let payload = serde_json::to_vec(&found).unwrap_or_default();
                        send(&client, &traffic, connected, reply.to_string().into(), payload, false).await;
                    }
                    ClusterOut::CensusPart { id, total, users } => {
                        let Some(g) = users_gatherings.get_mut(&id) else { continue };
                        g.total = g.total.saturating_add(total);
                        g.users.extend(users);
                        g.waiting -= 1;
                        if g.waiting > 0 {
                            continue;
                        }
                        g.users.sort_by(|a, b| crate::hub::by_name(&a.name, &b.name));
                        g.users.truncate(g.first);
                        let mut by_shard: Vec<Vec<u64>> = vec![Vec::new(); shards];
                        for session in g.users.iter().flat_map(|u| &u.sessions) {
                            if let Some(keys) = by_shard.get_mut(session.shard.index()) {
                                keys.push(session.key);
                            }
                        }
                        for (shard, keys) in by_shard.into_iter().enumerate() {
                            if !keys.is_empty() {
                                g.waiting += 1;
                                to_shards.send(shard, ClusterIn::Facts { id, keys });
                            }
                        }
                        if g.waiting == 0 {
                            let g = users_gatherings.remove(&id).expect("looked up above");
                            answer_users(&client, &traffic, connected, &node, g).await;
                        }
                    }
                    ClusterOut::FactsPart { id, facts } => {
                        let Some(g) = users_gatherings.get_mut(&id) else { continue };
                        g.facts.extend(facts);
                        g.waiting -= 1;
                        if g.waiting == 0 {
                            let g = users_gatherings.remove(&id).expect("looked up above");
                            answer_users(&client, &traffic, connected, &node, g).await;
                        }
                    }
                    ClusterOut::Users { session, first, name } => {
                        let asked = wire::UsersAsked { first, name };
                        let asking = ask_for_users(client.clone(), membership.others(&node), asked, connected);
                        let to_shards = to_shards.clone();
                        tokio::spawn(async move {
                            let answer = asking.await;
                            let answer = ClusterIn::UsersAnswer { session: session.key, answer };
                            to_shards.send(session.shard.index(), answer);
                        });
                    }
                    ClusterOut::Tell(tell) => {
                        let asking = ask_to_tell(client.clone(), membership.others(&node), &tell, connected);
                        let to_shards = to_shards.clone();
                        tokio::spawn(async move {
                            let outcome = asking.await;
                            let answer = ClusterIn::Told { session: tell.sender, to: tell.to.clone(), outcome };
                            to_shards.send(tell.sender.shard.index(), answer);
                        });
                    }
                    ClusterOut::TellCopy(tell) => {
                        let copy = wire::NodeTell { from: tell.from, to: tell.to, line: tell.line };
                        let payload = serde_json::to_vec(&copy).unwrap_or_default();
                        for other in membership.others(&node) {
                            let subject = wire::tell_subject(&other);
                            send(&client, &traffic, connected, subject.into(), payload.clone(), false).await;
                        }
                    }
                    ClusterOut::Told { reply, outcome } => {
                        let answer = match outcome {
                            shard_proto::Told::Delivered { away } => wire::TellAnswer { delivered: true, away },
                            shard_proto::Told::NotOnline => wire::TellAnswer { delivered: false, away: None },
                        };
                        let payload = serde_json::to_vec(&answer).unwrap_or_default();
                        send(&client, &traffic, connected, reply.to_string().into(), payload, false).await;
                    }
                    other => {
                        let droppable = other.droppable();
                        if let Some((subject, payload)) = encode(other) {
                            send(&client, &traffic, connected, subject.into(), payload, droppable).await;
                        }
                    }
                }
            }
        }
        if std::mem::take(&mut changed) {
            let nodes: Vec<String> = membership.nodes().map(str::to_string).collect();
            let shared: Arc<[Arc<str>]> = nodes.iter().map(|n| Arc::from(n.as_str())).collect();
            to_shards.send_all(|| ClusterIn::Nodes {
                nodes: shared.clone(),
                connected,
                epoch: now_ms(),
            });
            let mut view = view.lock().unwrap_or_else(PoisonError::into_inner);
            view.connected = connected;
            view.nodes = nodes;
        }
        if connected_since.is_some_and(|at| at.elapsed() >= SETTLE) {
            if let Some(settled) = settled.take() {
                let _ = settled.send(());
            }
        }
    }
    listening.close();
    // What is queued goes out if NATS is there; if it is away, the flush would wait for it.
    let _ = tokio::time::timeout(FLUSH_AT_STOP, client.flush()).await;
}

/// Asks each of `nodes` for its channels, all at once, and gives what came within
/// [`SEND_TIMEOUT`].
async fn ask_for_lists(
    client: async_nats::Client,
    nodes: Vec<String>,
    connected: bool,
) -> Vec<ListItem> {
    let lists =
        ask_every_node::<Vec<ListItem>>(client, nodes, wire::list_subject, Vec::new(), connected);
    lists.await.into_iter().flatten().collect()
}

/// Answers another node's question of who is online here, once this node's shards have said:
/// each user with what their sessions' shards said of them put together (a user whose sessions
/// have all ended meanwhile is left out).
async fn answer_users(
    client: &async_nats::Client,
    traffic: &Traffic,
    connected: bool,
    node: &str,
    g: UsersGathering,
) {
    let node: Arc<str> = node.into();
    let users = g
        .users
        .iter()
        .filter_map(|user| {
            let facts: Vec<&shard_proto::SessionFacts> = g
                .facts
                .iter()
                .filter(|f| user.sessions.contains(&f.session))
                .collect();
            let first = facts.first()?;
            let mut channels: Vec<String> = Vec::new();
            for channel in facts.iter().filter_map(|f| f.channel.as_ref()) {
                let channel = channel.to_string();
                if !channels.contains(&channel) {
                    channels.push(channel);
                }
            }
            Some(shard_proto::UserElsewhere {
                name: user.name.clone(),
                node: node.clone(),
                since: facts.iter().map(|f| f.since).min().unwrap_or(first.since),
                last_input: facts.iter().map(|f| f.last_input).max().unwrap_or(0),
                away: facts.iter().find_map(|f| f.away.clone()),
                channels,
                sessions: facts.len() as u32,
            })
        })
        .collect();
    let answer = wire::UsersAnswer {
        total: g.total,
        users,
    };
    let payload = serde_json::to_vec(&answer).unwrap_or_default();
    send(client, traffic, connected, g.reply, payload, false).await;
}

/// Asks each of `nodes`, all at once, who of its users are online, and merges what came within
/// [`SEND_TIMEOUT`]: the totals added, the users in name order, every entry of the first
/// `asked.first` names kept (a user online on several of those nodes is one entry from each).
fn ask_for_users(
    client: async_nats::Client,
    nodes: Vec<String>,
    asked: wire::UsersAsked,
    connected: bool,
) -> impl std::future::Future<Output = wire::UsersAnswer> {
    let payload = serde_json::to_vec(&asked).unwrap_or_default();
    let answers =
        ask_every_node::<wire::UsersAnswer>(client, nodes, wire::users_subject, payload, connected);
    async move {
        let mut merged = wire::UsersAnswer::default();
        for answer in answers.await {
            merged.total = merged.total.saturating_add(answer.total);
            merged.users.extend(answer.users);
        }
        first_names(&mut merged.users, asked.first);
        merged
    }
}

/// Sorts `users` by name and keeps every entry of the first `first` names (a user online on
/// several nodes has an entry from each).
fn first_names(users: &mut Vec<shard_proto::UserElsewhere>, first: u32) {
    users.sort_by(|a, b| crate::hub::by_name(&a.name, &b.name));
    let first = usize::try_from(first).unwrap_or(usize::MAX);
    let mut names = 0;
    let kept = users
        .iter()
        .enumerate()
        .take_while(|&(at, user)| {
            let new_name = at == 0 || !users[at - 1].name.eq_ignore_ascii_case(&user.name);
            names += usize::from(new_name);
            names <= first
        })
        .count();
    users.truncate(kept);
}

/// Orders each of `nodes`, all at once, to end a user's sessions there; the user's name as the
/// account spells it if any node had one (within [`SEND_TIMEOUT`]).
fn ask_to_kill(
    client: async_nats::Client,
    nodes: Vec<String>,
    asked: wire::KillAsked,
    connected: bool,
) -> impl std::future::Future<Output = Option<Arc<str>>> {
    let payload = serde_json::to_vec(&asked).unwrap_or_default();
    let answers =
        ask_every_node::<Option<Arc<str>>>(client, nodes, wire::kill_subject, payload, connected);
    async move { answers.await.into_iter().flatten().next() }
}

/// Asks each of `nodes`, all at once, to deliver `tell` to its user; delivered if any of them did
/// within [`SEND_TIMEOUT`] (the addressee may be logged in on several), not online otherwise.
fn ask_to_tell(
    client: async_nats::Client,
    nodes: Vec<String>,
    tell: &shard_proto::Tell,
    connected: bool,
) -> impl std::future::Future<Output = shard_proto::Told> {
    let asked = wire::NodeTell {
        from: tell.from.clone(),
        to: tell.to.clone(),
        line: tell.line.clone(),
    };
    let payload = serde_json::to_vec(&asked).unwrap_or_default();
    let answers =
        ask_every_node::<wire::TellAnswer>(client, nodes, wire::tell_subject, payload, connected);
    async move {
        match answers.await.into_iter().find(|a| a.delivered) {
            Some(answer) => shard_proto::Told::Delivered { away: answer.away },
            None => shard_proto::Told::NotOnline,
        }
    }
}

/// Asks each of `nodes`, all at once, on its `subject_of(node)`, and gives the answers that came
/// within [`SEND_TIMEOUT`] and read as a `T` (one that does not is as one that did not come).
/// While NATS is away nobody is asked, and there are no answers.
async fn ask_every_node<T: DeserializeOwned>(
    client: async_nats::Client,
    nodes: Vec<String>,
    subject_of: fn(&str) -> String,
    payload: Vec<u8>,
    connected: bool,
) -> Vec<T> {
    if !connected {
        return Vec::new();
    }
    let payload = bytes::Bytes::from(payload);
    let asks = nodes.iter().map(|node| {
        let asked = client.request(subject_of(node), payload.clone());
        async move {
            match tokio::time::timeout(SEND_TIMEOUT, asked).await {
                Ok(Ok(msg)) => serde_json::from_slice::<T>(&msg.payload).ok(),
                _ => None,
            }
        }
    });
    futures::future::join_all(asks)
        .await
        .into_iter()
        .flatten()
        .collect()
}

/// The subject and bytes of a message for another node.
fn encode(msg: ClusterOut) -> Option<(String, Vec<u8>)> {
    let encoded = match msg {
        ClusterOut::ToHome { node, key, msg } => {
            (wire::home_subject(&node, &key), serde_json::to_vec(&msg))
        }
        ClusterOut::Publish { key, event } => {
            (wire::channel_subject(&key), serde_json::to_vec(&event))
        }
        ClusterOut::ToNode { node, shard, msg } => {
            (wire::node_subject(&node, shard), serde_json::to_vec(&msg))
        }
        ClusterOut::Created(name) => (wire::CREATED_SUBJECT.to_string(), Ok(name.into_bytes())),
        ClusterOut::Deleted(said) => (wire::DELETED_SUBJECT.to_string(), serde_json::to_vec(&said)),
        ClusterOut::Ignoring { name, names } => (
            wire::IGNORING_SUBJECT.to_string(),
            serde_json::to_vec(&wire::IgnoringChanged { name, names }),
        ),
        _ => return None,
    };
    match encoded {
        (subject, Ok(bytes)) => Some((subject, bytes)),
        (_, Err(e)) => {
            warn!(error = %e, "cluster: cannot encode a message");
            None
        }
    }
}

/// Publishes, unless NATS is away (then a line is counted dropped; anything else is put right
/// when NATS is back, by the members' rejoin and the joins asked again).
async fn send(
    client: &async_nats::Client,
    traffic: &Traffic,
    connected: bool,
    subject: async_nats::Subject,
    payload: Vec<u8>,
    droppable: bool,
) {
    use std::sync::atomic::Ordering::Relaxed;
    if !connected {
        if droppable {
            traffic.dropped.fetch_add(1, Relaxed);
        }
        return;
    }
    match tokio::time::timeout(SEND_TIMEOUT, client.publish(subject, payload.into())).await {
        Ok(Ok(())) => {
            traffic.sent.fetch_add(1, Relaxed);
        }
        _ => {
            traffic.dropped.fetch_add(1, Relaxed);
        }
    }
}

/// The most users another node's `/who *` may ask this node for.
const MAX_USERS_ASKED: u32 = crate::cmd::who::MAX_PAGE * crate::cmd::who::PAGE;

/// How long a stopping node waits to send what it has queued for NATS.
const FLUSH_AT_STOP: std::time::Duration = std::time::Duration::from_secs(1);

/// This node's name unless `--node-name` gives one: the host name and the process id.
pub fn default_node_name() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most `buf.len()` bytes into the buffer we own.
    let ok = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) } == 0;
    let host: String = if ok {
        let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
        String::from_utf8_lossy(&buf[..end])
            .chars()
            .filter(char::is_ascii_graphic)
            .take(48)
            .collect()
    } else {
        String::new()
    };
    let host = if host.is_empty() {
        "node".to_string()
    } else {
        host
    };
    format!("{host}-{}", std::process::id())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_user_on_several_nodes_takes_one_place_among_the_first_names() {
        let user = |name: &str, node: &str| shard_proto::UserElsewhere {
            name: name.into(),
            node: node.into(),
            since: 0,
            last_input: 0,
            away: None,
            channels: Vec::new(),
            sessions: 1,
        };
        let mut users = vec![
            user("cy", "b"),
            user("Ann", "b"),
            user("bea", "c"),
            user("ann", "c"),
            user("dan", "b"),
        ];
        first_names(&mut users, 2);
        let kept: Vec<(&str, &str)> = users.iter().map(|u| (&*u.name, &*u.node)).collect();
        assert_eq!(kept.len(), 3, "{kept:?}");
        assert!(kept[..2].iter().all(|(n, _)| n.eq_ignore_ascii_case("ann")));
        assert_eq!(kept[2], ("bea", "c"));
        first_names(&mut users, 0);
        assert!(users.is_empty());
    }

    #[test]
    fn the_default_node_name_is_a_valid_one() {
        let name = default_node_name();
        assert!(membership::valid_node_name(&name), "{name:?}");
        assert!(name.ends_with(&format!("-{}", std::process::id())));
    }
}
