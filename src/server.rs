//! Starting and stopping the whole server: limits, listeners, the worker pool, one pinned executor per
//! shard, the heartbeat, and an orderly shutdown.
//!
//! Everything that can fail at start (port in use, database, a shard that cannot start) fails here, on
//! the caller's thread, before [`Server::start`] returns, so the binary can print one clear line and exit
//! non-zero instead of leaving half a server running.

use std::net::SocketAddr;
use std::os::fd::{FromRawFd, OwnedFd};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use futures::channel::oneshot;
use glommio::{ExecutorJoinHandle, LocalExecutorBuilder, Placement};
use shard_proto::{ChannelName, ShardId};
use tracing::{info, warn};

use crate::accounts::{Accounts, OpenError};
use crate::audit::{AuditGuard, AuditLog};
use crate::chanlog::{ChannelLog, LogWriterGuard};
use crate::channel::Settings;
use crate::cluster::link::ShardLink;
use crate::cluster::store::{Store, StoreGuard};
use crate::cluster::{BridgeStart, Cluster, ClusterView, ClusterWatch};
use crate::config::Config;
use crate::data_dir::{DataDirLock, LockError};
use crate::defences::{Defences, Limit};
use crate::limits::{self, FileLimit};
use crate::listener::Serves;
use crate::live::{Live, Reloader};
use crate::mesh::{self, Doorbell, RingRx, RingTx};
use crate::metrics::{MetricsServer, Sources};
use crate::stats::{Snapshot, Stats};
use crate::tasks::{self, ShardStart};
use crate::tls::Certificates;
use crate::workers::WorkersGuard;

/// Memory glommio registers per executor for file I/O. Sockets do not use it, so the 10 MiB default
/// would only cost RSS.
const IO_MEMORY: usize = 64 << 10;

/// How long [`Server::start`] waits for every shard to report that it is accepting.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// Log lines that may wait for the log writer before new ones are dropped (and counted).
const LOG_QUEUE: usize = 1 << 14;

/// Audit entries that may wait for their writer before new ones are dropped (and counted).
const AUDIT_QUEUE: usize = 1 << 12;

/// How long a node of a cluster waits at start for NATS and the other nodes before it takes
/// users anyway (it then serves its own users alone until NATS is there).
const CLUSTER_WAIT: Duration = Duration::from_secs(4);

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The process's CPU or file limits could not be read.
    #[error("cannot read process limits: {0}")]
    Limits(std::io::Error),
    /// The doorbells between shards (one eventfd each) could not be made.
    #[error("cannot make the shards' doorbells: {0}")]
    Mesh(std::io::Error),
    /// RLIMIT_MEMLOCK is below what glommio needs and cannot be raised.
    #[error("the locked-memory limit is {have} bytes but each shard needs {need}: raise it (ulimit -l 512, or LimitMEMLOCK= for a service)")]
    MemLock {
        /// The soft limit in force.
        have: u64,
        /// What glommio requires.
        need: u64,
    },
    /// `--motd` could not be read, or is too long.
    #[error("cannot use --motd {0}")]
    Motd(String),
    /// Settings that cannot go together (see [`Config::check`]).
    #[error("{0}")]
    Config(String),
    /// `--shards` outside 1..=[`MAX_SHARDS`](crate::config::MAX_SHARDS).
    #[error("--shards must be 1 to {}, not {0}", crate::config::MAX_SHARDS)]
    Shards(usize),
    /// No address to listen on was given.
    #[error("nothing to listen on: give --listen or --tls-listen")]
    NoListener,
    /// The TLS certificate or key could not be used.
    #[error("cannot use the TLS certificate: {0}")]
    Tls(String),
    /// The listening sockets could not be opened.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// The address asked for.
        addr: SocketAddr,
        /// What the kernel said.
        source: std::io::Error,
    },
    /// `--metrics-listen` could not be bound, or its thread started.
    #[error("cannot serve metrics on {addr}: {source}")]
    Metrics {
        /// The address asked for.
        addr: SocketAddr,
        /// What failed.
        source: std::io::Error,
    },
    /// The data directory could not be made or locked, or another process uses it.
    #[error("{0}")]
    DataDir(#[from] LockError),
    /// The database or the worker threads could not be started.
    #[error("cannot open the database: {0}")]
    Database(#[from] OpenError),
    /// The channels could not be read from the database.
    #[error("cannot read the channels from the database: {0}")]
    Channels(String),
    /// The cluster's store of accounts and channels could not start (a bad NATS URL).
    #[error("cannot use the cluster's store: {0}")]
    Store(String),
    /// The audit log could not be opened.
    #[error("cannot write the audit log {path}: {source}")]
    Audit {
        /// The audit log's path.
        path: std::path::PathBuf,
        /// What failed.
        source: std::io::Error,
    },
    /// The channel log directory could not be used.
    #[error("cannot write channel logs in {dir}: {source}")]
    Logs {
        /// The log directory.
        dir: std::path::PathBuf,
        /// What failed.
        source: std::io::Error,
    },
    /// A shard's executor did not start.
    #[error("shard {shard} (CPU {cpu}) failed to start: {reason}")]
    Shard {
        /// The shard's index.
        shard: u16,
        /// The CPU it was to be pinned to.
        cpu: usize,
        /// glommio's explanation.
        reason: String,
    },
}

/// A handle that stops the server from any thread (a signal handler's thread, a test).
#[derive(Clone, Debug)]
pub struct ShutdownTrigger(Arc<Mutex<Vec<oneshot::Sender<()>>>>);

impl ShutdownTrigger {
    /// Asks every shard to stop accepting and close its sessions. Calling it again does nothing.
    pub fn trigger(&self) {
        let senders = std::mem::take(&mut *self.0.lock().unwrap_or_else(|e| e.into_inner()));
        for tx in senders {
            // A shard that already stopped has dropped its receiver; nothing to tell it.
            let _ = tx.send(());
        }
    }
}

/// A running server.
pub struct Server {
    /// The first plain address as bound, or the first TLS one when there is none.
    addr: SocketAddr,
    /// The addresses served in plain telnet, as bound (real ports where port 0 was asked for).
    plain_addrs: Vec<SocketAddr>,
    /// The addresses served over TLS, as bound.
    tls_addrs: Vec<SocketAddr>,
    shard_cpus: Vec<usize>,
    /// Threads in the worker pool.
    worker_threads: usize,
    file_limit: FileLimit,
    stats: Arc<Stats>,
    trigger: ShutdownTrigger,
    /// What a reload changes.
    reloader: Reloader,
    shards: Vec<ExecutorJoinHandle<()>>,
    workers: WorkersGuard,
    chanlog: ChannelLog,
    chanlog_guard: LogWriterGuard,
    audit_guard: AuditGuard,
    heartbeat: Option<(crossbeam_channel::Sender<()>, JoinHandle<()>)>,
    /// The bridge to the other nodes, in cluster mode.
    cluster: Option<Cluster>,
    /// The `GET /metrics` thread, with `--metrics-listen`.
    metrics: Option<MetricsServer>,
    /// The thread that keeps accounts and channels in NATS, in cluster mode.
    store: Option<StoreGuard>,
    /// The data directory is this server's while it runs; let go of last, once the database is
    /// closed (in [`Server::wait`]).
    _data_dir_lock: DataDirLock,
}

/// Sends the shard's failure to [`Server::start`] if the shard's future is dropped without running,
/// which is what glommio does when the executor cannot be built.
struct ReadyGuard {
    tx: crossbeam_channel::Sender<Result<ShardId, (ShardId, Option<String>)>>,
    id: ShardId,
}

impl Drop for ReadyGuard {
    fn drop(&mut self) {
        let _ = self.tx.send(Err((self.id, None)));
    }
}

impl Server {
    /// Starts every part of the server and returns once all shards accept connections.
    pub fn start(mut config: Config) -> Result<Server, StartError> {
        config.check().map_err(StartError::Config)?;
        config.load_motd().map_err(StartError::Motd)?;
        let started = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let file_limit = limits::raise_nofile().map_err(StartError::Limits)?;
        let memlock = limits::raise_memlock().map_err(StartError::Limits)?;
        if memlock < limits::MIN_MEMLOCK {
            return Err(StartError::MemLock {
                have: memlock,
                need: limits::MIN_MEMLOCK,
            });
        }
        let cpus = limits::allowed_cpus().map_err(StartError::Limits)?;
        let shard_count = config
            .shards
            .unwrap_or(cpus.len().min(crate::config::MAX_SHARDS));
        if !(1..=crate::config::MAX_SHARDS).contains(&shard_count) {
            return Err(StartError::Shards(shard_count));
        }
        if shard_count > cpus.len() {
            warn!(
                shards = shard_count,
                cpus = cpus.len(),
                "more shards than allowed CPUs: some shards share a CPU"
            );
        }
        let shard_cpus: Vec<usize> = (0..shard_count).map(|i| cpus[i % cpus.len()]).collect();

        let wanted = config.listeners();
        let Some(&(mut addr, _)) = wanted.first() else {
            return Err(StartError::NoListener);
        };
        // Read here, on the caller's thread: no shard ever reads a file.
        let tls = match (&config.tls_cert, &config.tls_key) {
            _ if config.tls_listen.is_empty() => None,
            (Some(cert), Some(key)) => Some(Arc::new(
                Certificates::load(cert, key).map_err(StartError::Tls)?,
            )),
            // `Config::check` refused it above.
            _ => None,
        };
        if tls.is_none() && (config.tls_cert.is_some() || config.tls_key.is_some()) {
            warn!("--tls-cert and --tls-key are not used: no --tls-listen address");
        }
        // Per shard: its listening sockets, one per address, in the order of `Config::listeners`.
        // Owned until handed to a shard, so an early return closes them.
        let mut fds: Vec<Vec<(OwnedFd, Serves)>> = (0..shard_count).map(|_| Vec::new()).collect();
        let (mut plain_addrs, mut tls_addrs) = (Vec::new(), Vec::new());
        for (addr, serves) in wanted {
            let (opened, bound) =
                crate::listener::open(addr, shard_count, config.backlog, config.cluster.is_some())
                    .map_err(|source| StartError::Listen { addr, source })?;
            for (shard, fd) in fds.iter_mut().zip(opened) {
                // SAFETY: `listener::open` returned fresh descriptors that nothing else owns.
                shard.push((unsafe { OwnedFd::from_raw_fd(fd) }, serves));
            }
            match serves {
                Serves::Telnet => plain_addrs.push(bound),
                Serves::TelnetOverTls => tls_addrs.push(bound),
            }
        }
        // Plain addresses come first, so this is the first plain one if there is any.
        if let Some(&first) = plain_addrs.first().or(tls_addrs.first()) {
            addr = first;
        }
        // Bound now, so that an address in use fails the start before anything else runs.
        let metrics_listener = config
            .metrics_listen
            .map(|addr| {
                MetricsServer::bind(addr).map_err(|source| StartError::Metrics { addr, source })
            })
            .transpose()?;

        let workers = config
            .workers
            .unwrap_or(cpus.len())
            .clamp(1, crate::config::MAX_WORKERS);
        // Before anything in the data directory is opened: it is this process's alone.
        let data_dir_lock = DataDirLock::acquire_creating(&config.data_dir)?;
        // In a cluster, accounts and channels are the cluster's, in NATS key-value buckets.
        let (store, store_guard) = match config.cluster.as_deref().map(Store::start) {
            Some(Ok((store, guard))) => (Some(store), Some(guard)),
            Some(Err(e)) => return Err(StartError::Store(e.to_string())),
            None => (None, None),
        };
        let (accounts, workers_guard) = Accounts::open_with_store(
            &config.data_dir,
            config.bcrypt_cost,
            workers,
            config.worker_queue,
            store,
        )?;

        let channels = match futures::executor::block_on(accounts.all_channel_settings()) {
            Ok(channels) => channels,
            // A node of a cluster that cannot reach NATS yet starts with no channels: it learns
            // each one when it is made, or when a node that knows it asks for it.
            Err(e) if store_guard.is_some() => {
                warn!(error = %e, "cluster: cannot read the channels yet; starting without them");
                Vec::new()
            }
            Err(e) => {
                workers_guard.shutdown();
                return Err(StartError::Channels(format!("{e:?}")));
            }
        };
        let mut homed: Vec<Vec<(ChannelName, Settings)>> = vec![Vec::new(); shard_count];
        for (name, settings) in channels {
            let home = shard_proto::home_of(&name, shard_count).index();
            homed[home].push((name, Settings::from_stored(settings)));
        }
        let log_dir = Server::log_dir(&config.data_dir);
        let (chanlog, chanlog_guard) = match ChannelLog::start(&log_dir, LOG_QUEUE) {
            Ok(log) => log,
            Err(source) => {
                workers_guard.shutdown();
                return Err(StartError::Logs {
                    dir: log_dir,
                    source,
                });
            }
        };
        let audit_path = config.data_dir.join(crate::audit::FILE_NAME);
        let (audit, audit_guard) = match AuditLog::start(&audit_path, AUDIT_QUEUE) {
            Ok(audit) => audit,
            Err(source) => {
                chanlog_guard.shutdown();
                workers_guard.shutdown();
                return Err(StartError::Audit {
                    path: audit_path,
                    source,
                });
            }
        };
        let Mesh {
            mut ring_out,
            mut ring_in,
            doorbells,
        } = match build_mesh(shard_count, config.ring_slots) {
            Ok(mesh) => mesh,
            Err(e) => {
                audit_guard.shutdown();
                chanlog_guard.shutdown();
                workers_guard.shutdown();
                return Err(StartError::Mesh(e));
            }
        };

        // In a cluster the bridge starts before the shards, and the node listens to the others
        // for a moment before it takes users (see `cluster::SETTLE`).
        let mut cluster_links: Vec<Option<(ShardLink, Arc<str>)>> =
            (0..shard_count).map(|_| None).collect();
        let cluster = config.cluster.as_deref().and_then(|url| {
            let node = config
                .node_name
                .clone()
                .unwrap_or_else(crate::cluster::default_node_name);
            let (ends, to_shards, from_shards) = crate::cluster::link::links(&doorbells);
            let start = BridgeStart {
                url: url.to_string(),
                node: node.clone(),
                to_shards,
                from_shards,
            };
            match Cluster::start(start, CLUSTER_WAIT) {
                Ok(cluster) => {
                    info!(%url, %node, "cluster: this node joins");
                    let name: Arc<str> = node.into();
                    for (slot, end) in cluster_links.iter_mut().zip(ends) {
                        *slot = Some((end, name.clone()));
                    }
                    Some(cluster)
                }
                Err(e) => {
                    warn!(error = %e, "cluster: cannot start the bridge thread; this node runs alone");
                    None
                }
            }
        });

        let defences = Defences::new(&config);
        // Each port once, in the order first given ([::]:5555 beside 0.0.0.0:5555 is one port);
        // a port on loopback only is no use to a crawler elsewhere, unless loopback is all there is
        // (a server tried out on one machine).
        let ports = |addrs: &[SocketAddr]| {
            let local_only = addrs.iter().all(|a| a.ip().is_loopback());
            let mut ports: Vec<u16> = Vec::new();
            for a in addrs {
                if (local_only || !a.ip().is_loopback()) && !ports.contains(&a.port()) {
                    ports.push(a.port());
                }
            }
            ports
        };
        let facts = crate::mssp::Facts {
            ports: ports(&plain_addrs),
            tls_ports: ports(&tls_addrs),
            started,
        };
        let live = Live::new(&config, facts);
        let config = Arc::new(config);
        let (stats, asks) = Stats::new(&doorbells);
        let mut asks = asks.into_iter();
        let (ready_tx, ready_rx) = crossbeam_channel::unbounded();
        let mut senders = Vec::with_capacity(shard_count);
        let mut go_senders = Vec::with_capacity(shard_count);
        let mut handles = Vec::with_capacity(shard_count);
        let mut failure = None;
        for (index, &cpu) in shard_cpus.iter().enumerate() {
            let id = ShardId(index as u16);
            let (shutdown_tx, shutdown_rx) = oneshot::channel();
            senders.push(shutdown_tx);
            let (go_tx, go_rx) = oneshot::channel();
            go_senders.push(go_tx);
            let listeners = std::mem::take(&mut fds[index])
                .into_iter()
                .map(|(fd, serves)| (std::os::fd::IntoRawFd::into_raw_fd(fd), serves))
                .collect();
            let start = ShardStart {
                id,
                listeners,
                tls: tls.clone(),
                config: config.clone(),
                accounts: accounts.clone(),
                stats: stats.clone(),
                defences: defences.clone(),
                live: live.clone(),
                shutdown: shutdown_rx,
                go: go_rx,
                shards: shard_count,
                ring_out: std::mem::take(&mut ring_out[index]),
                ring_in: std::mem::take(&mut ring_in[index]),
                chanlog: chanlog.clone(),
                audit: audit.clone(),
                channels: std::mem::take(&mut homed[index]),
                cluster: cluster_links[index].take(),
                asks: asks.next().expect("one queue of questions per shard"),
            };
            let guard = ReadyGuard {
                tx: ready_tx.clone(),
                id,
            };
            let doorbell = doorbells[index].clone();
            let spawned = LocalExecutorBuilder::new(Placement::Fixed(cpu))
                .name(&format!("ringtalk-shard-{index}"))
                .io_memory(IO_MEMORY)
                .spawn(move || {
                    let guard = guard;
                    async move {
                        // Every descriptor the shard keeps is taken before it says it has
                        // started, and no shard accepts before all have (see `ShardStart::go`).
                        let fds = tasks::OwnFds::take(&doorbell).await;
                        let report = match &fds {
                            Ok(_) => Ok(guard.id),
                            Err(e) => Err((guard.id, Some(e.clone()))),
                        };
                        let _ = guard.tx.send(report);
                        std::mem::forget(guard);
                        if let Ok(fds) = fds {
                            tasks::run(start, fds).await
                        }
                    }
                });
            match spawned {
                Ok(handle) => handles.push((id, cpu, Some(handle))),
                Err(e) => {
                    failure = Some(StartError::Shard {
                        shard: id.0,
                        cpu,
                        reason: e.to_string(),
                    });
                    break;
                }
            }
        }
        drop(ready_tx);
        let trigger = ShutdownTrigger(Arc::new(Mutex::new(senders)));

        let mut ready = 0;
        while failure.is_none() && ready < handles.len() {
            match ready_rx.recv_timeout(START_TIMEOUT) {
                Ok(Ok(_)) => ready += 1,
                Ok(Err((id, said))) => {
                    let (_, cpu, handle) = &mut handles[id.index()];
                    let joined = handle.take().map(|h| h.join());
                    let reason = match (said, joined) {
                        (Some(said), _) => said,
                        (None, Some(Err(e))) => e.to_string(),
                        (None, _) => "the executor stopped before it started".to_string(),
                    };
                    failure = Some(StartError::Shard {
                        shard: id.0,
                        cpu: *cpu,
                        reason,
                    });
                }
                Err(_) => {
                    failure = Some(StartError::Shard {
                        shard: ready as u16,
                        cpu: shard_cpus[ready],
                        reason: "timed out waiting for the shard to start".to_string(),
                    })
                }
            }
        }
        // Its scrapes ask the shards, which answer once they run (every shard has started here).
        let mut metrics = None;
        if let (None, Some(listener), Some(addr)) =
            (&failure, metrics_listener, config.metrics_listen)
        {
            let sources = Sources {
                stats: stats.clone(),
                accounts: accounts.clone(),
                chanlog: chanlog.clone(),
                cluster: cluster.as_ref().map(Cluster::watch),
            };
            match MetricsServer::start(listener, sources) {
                Ok(server) => metrics = Some(server),
                Err(source) => failure = Some(StartError::Metrics { addr, source }),
            }
        }
        if let Some(err) = failure {
            drop(go_senders);
            trigger.trigger();
            for (_, _, handle) in handles {
                if let Some(h) = handle {
                    let _ = h.join();
                }
            }
            chanlog_guard.shutdown();
            audit_guard.shutdown();
            workers_guard.shutdown();
            return Err(err);
        }
        // Every shard holds what it needs: they may take connections now.
        for go in go_senders {
            let _ = go.send(());
        }

        let heartbeat = (config.stats_interval > 0).then(|| {
            spawn_heartbeat(
                Duration::from_secs(config.stats_interval),
                stats.clone(),
                accounts.clone(),
                chanlog.clone(),
                cluster.as_ref().map(Cluster::watch),
            )
        });
        Ok(Server {
            addr,
            plain_addrs,
            tls_addrs,
            shard_cpus,
            // The thread for suspect logins holds a database connection too.
            worker_threads: workers + crate::accounts::SUSPECT_THREADS,
            file_limit,
            stats,
            trigger,
            reloader: Reloader {
                defences,
                live,
                tls: tls.clone(),
            },
            shards: handles.into_iter().filter_map(|(_, _, h)| h).collect(),
            workers: workers_guard,
            chanlog,
            chanlog_guard,
            audit_guard,
            heartbeat,
            cluster,
            metrics,
            store: store_guard,
            _data_dir_lock: data_dir_lock,
        })
    }

    /// The first address the shards accept plain telnet on (with the real port when port 0 was
    /// asked for); the first TLS address when there is no plain one.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Every address the shards accept plain telnet on, as bound, in the order of `--listen`.
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.plain_addrs
    }

    /// Every address the shards accept telnet over TLS on, as bound, in the order of
    /// `--tls-listen`.
    pub fn tls_addrs(&self) -> &[SocketAddr] {
        &self.tls_addrs
    }

    /// Reads the TLS certificate chain and key again and serves them to every new TLS connection;
    /// connections already open keep theirs. A file that cannot be used is refused, with its name
    /// and the reason, and the certificate in force stays. Blocks on the files: call it from a
    /// plain thread (the binary's SIGHUP handler), never from a shard.
    pub fn reload_tls(&self, cert: &std::path::Path, key: &std::path::Path) -> Result<(), String> {
        self.reloader.reload_tls(cert, key)
    }

    /// The CPU each shard is pinned to, in shard order.
    pub fn shard_cpus(&self) -> &[usize] {
        &self.shard_cpus
    }

    /// The open-files limit in force.
    pub fn file_limit(&self) -> FileLimit {
        self.file_limit
    }

    /// How many users the open-files limit allows.
    pub fn users_allowed(&self) -> u64 {
        let shards = self.shard_cpus.len();
        // `reserved_fds` counts one listener a shard; each further address takes one more.
        let more_listeners = (self.plain_addrs.len() + self.tls_addrs.len()).saturating_sub(1);
        self.file_limit
            .users_allowed(shards, self.worker_threads)
            .saturating_sub((more_listeners * shards) as u64)
    }

    /// Where `GET /metrics` is served (with the real port when port 0 was asked for); `None`
    /// without `--metrics-listen`.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics.as_ref().map(MetricsServer::local_addr)
    }

    /// The cluster as this node's bridge sees it (`None` when not in cluster mode).
    pub fn cluster_view(&self) -> Option<ClusterView> {
        self.cluster.as_ref().map(Cluster::view)
    }

    /// The counters of every shard now. Asks every shard for its per-line counters and waits for
    /// the answers (at most [`crate::stats::ASK_TIMEOUT`]): call it from a plain thread.
    pub fn stats(&self) -> Snapshot {
        self.stats.snapshot()
    }

    /// The channel log writer (for tests: [`ChannelLog::flush_blocking`] makes the logs complete).
    pub fn channel_log(&self) -> &ChannelLog {
        &self.chanlog
    }

    /// Where channel logs are written.
    pub fn log_dir(data_dir: &std::path::Path) -> std::path::PathBuf {
        data_dir.join("logs")
    }

    /// A handle that applies a reloaded configuration from any thread (see [`crate::live`]).
    pub fn reloader(&self) -> Reloader {
        self.reloader.clone()
    }

    /// A handle that stops this server from any thread.
    pub fn shutdown_trigger(&self) -> ShutdownTrigger {
        self.trigger.clone()
    }

    /// Stops the server: no new connections, every session told and closed within the grace period,
    /// then the worker threads finish their queue and the database is closed.
    pub fn shutdown(self) {
        self.trigger.trigger();
        self.wait();
    }

    /// Waits until the server has stopped (after a [`ShutdownTrigger::trigger`]).
    pub fn wait(self) {
        for handle in self.shards {
            if let Err(e) = handle.join() {
                warn!(error = %e, "a shard ended with an error");
            }
        }
        if let Some((stop, thread)) = self.heartbeat {
            drop(stop);
            let _ = thread.join();
        }
        // Its scrapes ask shards that have stopped: they are answered at once, the shards' ends
        // being gone.
        if let Some(metrics) = self.metrics {
            metrics.stop();
        }
        if let Some(cluster) = self.cluster {
            cluster.stop();
        }
        self.chanlog_guard.shutdown();
        // After the shards, the last to record anything: every entry they made is written.
        self.audit_guard.shutdown();
        self.workers.shutdown();
        // After the workers, which are its callers.
        if let Some(store) = self.store {
            store.shutdown();
        }
        info!("ringtalk stopped");
    }
}

/// The rings between every ordered pair of shards and each shard's doorbell (see [`crate::mesh`]).
struct Mesh {
    /// Per shard: the sending ends of its rings, with their destinations.
    ring_out: Vec<Vec<(ShardId, RingTx)>>,
    /// Per shard: the receiving ends of the rings into it.
    ring_in: Vec<Vec<RingRx>>,
    doorbells: Vec<Arc<Doorbell>>,
}

/// One ring per ordered pair of shards, sized for the shard count (or `slots`), and one doorbell per
/// shard.
fn build_mesh(shards: usize, slots: Option<usize>) -> std::io::Result<Mesh> {
    let doorbells = (0..shards)
        .map(|_| Doorbell::new())
        .collect::<std::io::Result<Vec<_>>>()?;
    let mut ring_out: Vec<Vec<_>> = (0..shards).map(|_| Vec::new()).collect();
    let mut ring_in: Vec<Vec<_>> = (0..shards).map(|_| Vec::new()).collect();
    for (from, senders) in ring_out.iter_mut().enumerate() {
        for (to, receivers) in ring_in.iter_mut().enumerate() {
            if from != to {
                let capacity = slots.unwrap_or_else(|| mesh::ring_capacity(shards));
                let (tx, rx) = mesh::ring(capacity, &doorbells[from], &doorbells[to]);
                senders.push((ShardId(to as u16), tx));
                receivers.push(rx);
            }
        }
    }
    Ok(Mesh {
        ring_out,
        ring_in,
        doorbells,
    })
}

/// The heartbeat runs on a plain thread because reading RSS from /proc is a blocking file read.
fn spawn_heartbeat(
    every: Duration,
    stats: Arc<Stats>,
    accounts: Accounts,
    chanlog: ChannelLog,
    cluster: Option<ClusterWatch>,
) -> (crossbeam_channel::Sender<()>, JoinHandle<()>) {
    let (stop_tx, stop_rx) = crossbeam_channel::bounded::<()>(0);
    let thread = std::thread::Builder::new()
        .name("ringtalk-heartbeat".into())
        .spawn(move || {
            let mut last = stats.snapshot();
            let mut last_at = std::time::Instant::now();
            while let Err(crossbeam_channel::RecvTimeoutError::Timeout) =
                stop_rx.recv_timeout(every)
            {
                let snap = stats.snapshot();
                let now = std::time::Instant::now();
                let secs = now.duration_since(last_at).as_secs_f64().max(1e-3);
                let per_shard: Vec<String> = snap
                    .shards
                    .iter()
                    .map(|s| format!("{}/{}", s.connections, s.logged_in))
                    .collect();
                let (now_total, last_total) = (snap.total(), last.total());
                // Each defence's hits since the last heartbeat, named: "conn_cap=3 flood=120".
                let limits: Vec<String> = Limit::ALL
                    .iter()
                    .map(|&l| format!("{}={}", l.name(), now_total.hits(l).saturating_sub(last_total.hits(l))))
                    .collect();
                info!(
                    connections = now_total.connections,
                    logged_in = now_total.logged_in,
                    per_shard = %per_shard.join(" "),
                    channels = now_total.channels,
                    members = now_total.members,
                    lines_per_s = (now_total.lines.saturating_sub(last_total.lines) as f64 / secs).round(),
                    deliveries_per_s =
                        (now_total.deliveries.saturating_sub(last_total.deliveries) as f64 / secs).round(),
                    dropped = now_total.dropped.saturating_sub(last_total.dropped),
                    ring_dropped = now_total.ring_dropped.saturating_sub(last_total.ring_dropped),
                    log_dropped = chanlog.dropped(),
                    limits = %limits.join(" "),
                    cluster = %cluster.as_ref().map_or_else(|| "off".to_string(), |c| {
                        let view = c.view();
                        let (sent, received, dropped) = c.traffic();
                        format!(
                            "{} nodes, NATS {}, sent {sent} received {received} dropped {dropped}",
                            view.nodes.len(),
                            if view.connected { "connected" } else { "away" }
                        )
                    }),
                    worker_queue = accounts.queue_depth(),
                    rss_mb = limits::rss_bytes().unwrap_or(0) as f64 / 1e6,
                    "heartbeat"
                );
                last = snap;
                last_at = now;
            }
        })
        .expect("spawning the heartbeat thread");
    (stop_tx, thread)
}
