//! ringtalk: a telnet chat server built thread-per-core.
//!
//! # The shape
//!
//! One glommio executor (a *shard*) runs pinned to each allowed CPU. Every shard opens its own listening
//! socket for each address served (SO_REUSEPORT), so the kernel spreads connections over shards. A
//! connection belongs to one shard at a time: its socket, its TLS state if it came in on a TLS port, its
//! telnet state, its line editor and its session all belong to that one thread, with no locks.
//!
//! A chat channel lives on its *home* shard, chosen by a stable hash of its name. The home orders the
//! channel's lines, logs them, and sends each line once to every shard that has members, over lock-free
//! SPSC rings; that shard puts it in each local member's bounded queue. A session that joins a small
//! channel homed elsewhere moves to the home's shard (see [`shard_proto::ToHome::Move`]), so the lines
//! of a small channel whose members have all come home cross no ring at all.
//!
//! Work that blocks (SQLite, bcrypt) never runs on a shard: it goes to a pool of plain threads through a
//! bounded queue, and a full queue answers "busy" at once instead of making anyone wait.
//!
//! # The parts
//!
//! - [`server`]: start everything, stop everything.
//! - [`tasks`]: what each shard's executor runs: the accept loop, the ring pumps and inbox, the
//!   readiness router, the login sweeper, start and shutdown. It sits above the sessions it starts.
//! - [`shard`]: one shard's state: its table of sessions, its hub and its outboxes to other shards.
//! - [`mailbox`]: what reaches a session from outside (lines, answers, readiness, kicks).
//! - [`mesh`]: the lock-free SPSC rings between shards and the doorbell that wakes an idle shard.
//! - [`readiness`]: one epoll set per shard that says which sockets are ready, waited for through
//!   io_uring; [`socket`]: a connection as a bare descriptor, non-blocking calls only;
//!   [`transport`]: what a session reads and writes through, the socket or TLS over it (rustls,
//!   driven by the same readiness); [`tls`]: the certificate every shard's handshakes use, read
//!   only off the shards and swapped whole on a reload.
//! - [`hub`] and [`channel`]: a shard's part in chat, with no I/O: the channels it is home to, and
//!   which of its sessions are in which channel. Messages between shards are typed in `shard-proto`.
//! - [`chanlog`]: per-channel daily log files, written by a thread of their own; [`audit`]: what
//!   admins and channel owners did, in one file, written by another ([`writer_thread`] stops both).
//! - [`session`]: one connection, login then commands; [`pacing`]: at most one write per interval to a
//!   busy connection.
//!
//! Data walks one way: socket → [`transport`] → [`telnet`] → [`line`](mod@line) → [`cmd`] → [`session`] → home
//! ([`hub`], [`channel`]) → members ([`hub`] on their shards) → [`mailbox`] → [`session`] → socket.
//! - [`terminal`]: character mode or line mode, over [`telnet`] (a sans-IO codec) and [`line`](mod@line) (the
//!   line editor and redraw).
//! - [`cmd`]: what a typed line means.
//! - [`accounts`] over [`workers`]: users and channels in SQLite, bcrypt hashes, on worker threads.
//! - [`defences`]: what keeps one client from holding everyone up: per-address limits shared by every
//!   shard without a lock, login and sign-up throttles, flood control between [`line`](mod@line) and
//!   [`cmd`].
//! - [`cluster`]: several nodes over NATS: the bridge thread, membership, placement, the wire, and
//!   accounts and channels in JetStream key-value buckets (each shard's part is in `hub::cluster`).
//! - [`listener`], [`limits`], [`stats`], [`config`]: listening sockets (one per address per shard),
//!   OS limits, counters, flags;
//!   [`config_file`]: the same flags as keys of a TOML file; [`live`]: what a reload (SIGHUP) changes
//!   while users stay connected;
//!   [`metrics`]: `GET /metrics` on a plain thread of its own, which asks the shards for their
//!   counters at each scrape (no shard waits for it);
//!   [`data_dir`]: the lock that keeps a data directory to one process.
//!
//! `docs/ARCHITECTURE.md` draws who sends to whom; `docs/PROTOCOL.md` lists every string on the wire.

#![deny(missing_docs)]

pub mod accounts;
pub mod audit;
pub mod chanlog;
pub mod channel;
pub mod cluster;
pub mod cmd;
pub mod config;
pub mod config_file;
pub mod data_dir;
pub mod defences;
pub mod hub;
pub mod limits;
pub mod line;
pub mod listener;
pub mod live;
pub mod mailbox;
pub mod mesh;
pub mod metrics;
pub mod mssp;
pub mod pacing;
pub mod readiness;
pub mod server;
pub mod session;
pub mod shard;
pub mod socket;
pub mod stats;
pub mod tasks;
pub mod telnet;
pub mod terminal;
pub mod tls;
pub mod transport;
pub mod workers;
pub mod writer_thread;

pub use config::Config;
pub use server::{Server, ShutdownTrigger, StartError};
