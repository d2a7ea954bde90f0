//! The server as a separate process under a small open-files limit: connections past the limit wait in
//! the listen backlog and are served as others leave, and the server says it ran out; connections
//! made while it starts wait too, without taking the descriptors it needs to start.

mod common;

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;

use common::{Client, Kind, DEADLINE};

/// The soft and hard open-files limit the server runs under: room for about 50 connections.
const FILE_LIMIT: u64 = 80;
/// More clients than the limit has room for, so some must wait for others to leave.
const CLIENTS: usize = 100;

/// The server binary, started with `FILE_LIMIT` open files; killed when dropped.
struct LimitedServer {
    child: Child,
    addr: SocketAddr,
    log: mpsc::Receiver<String>,
    _dir: tempfile::TempDir,
}

impl LimitedServer {
    /// Starts the server on a port of its choosing and waits until it says where it listens.
    fn start() -> LimitedServer {
        let mut server = LimitedServer::spawn("127.0.0.1:0".parse().expect("literal address"));
        let line = server.wait_for_log("listening on ");
        let rest = &line[line.find("listening on ").expect("matched") + "listening on ".len()..];
        let addr = rest.split_whitespace().next().expect("an address");
        server.addr = addr.parse().unwrap_or_else(|e| panic!("{addr:?}: {e}"));
        server
    }

    /// Starts the server on `addr`, without waiting for it.
    fn spawn(addr: SocketAddr) -> LimitedServer {
        let dir = tempfile::tempdir().expect("creating a temporary directory");
        let mut command = Command::new(env!("CARGO_BIN_EXE_ringtalk"));
        command
            .arg("--listen")
            .arg(addr.to_string())
            .args(["--bcrypt-cost", "4", "--stats-interval", "0"])
            .arg("--data-dir")
            .arg(dir.path())
            .env("NO_COLOR", "1")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        // SAFETY: setrlimit is async-signal-safe, and the closure touches nothing else.
        unsafe {
            command.pre_exec(|| {
                let limit = libc::rlimit {
                    rlim_cur: FILE_LIMIT,
                    rlim_max: FILE_LIMIT,
                };
                if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = command.spawn().expect("starting the ringtalk binary");
        let stderr = child.stderr.take().expect("piped stderr");
        let (tx, log) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        LimitedServer {
            child,
            addr,
            log,
            _dir: dir,
        }
    }

    /// The first log line (from now on) containing `needle`; fails the test after [`DEADLINE`].
    fn wait_for_log(&self, needle: &str) -> String {
        loop {
            match self.log.recv_timeout(DEADLINE) {
                Ok(line) if line.contains(needle) => return line,
                Ok(_) => {}
                Err(e) => panic!("no log line with {needle:?}: {e}"),
            }
        }
    }
}

impl Drop for LimitedServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn connections_past_the_file_limit_wait_and_are_served_as_others_leave() {
    let server = LimitedServer::start();
    // Every connect succeeds: the kernel completes them into the listen backlog.
    let clients: Vec<Client> = (0..CLIENTS)
        .map(|_| Client::connect(server.addr, Kind::Raw))
        .collect();
    // The server accepts until it runs out of descriptors, and says so.
    server.wait_for_log("out of file descriptors");
    each_is_greeted_and_leaves(clients);
}

/// Regression: a shard began to accept as soon as it had started itself, while the other shards (and
/// the signal handlers) still had descriptors to take, so connections that were waiting when the
/// server started could take them all: the server then failed to start, or a shard that could
/// not open its doorbell closed its listener, and every connection waiting there with it. Now no
/// shard accepts before the server has taken every descriptor it keeps.
#[test]
fn connections_made_while_the_server_starts_under_the_file_limit_all_wait_and_are_served() {
    let server = LimitedServer::spawn(unused_port());
    // Connected as soon as the server listens, which is before its shards have started.
    let clients: Vec<Client> = (0..CLIENTS)
        .map(|_| Client::connect_once_listening(server.addr, Kind::Raw))
        .collect();
    server.wait_for_log("listening on ");
    each_is_greeted_and_leaves(clients);
}

/// Each client, as soon as it is greeted, leaves; the ones the server could not accept at first are
/// accepted once others have gone. Each shard has a backlog of its own, so which waiting client a
/// freed descriptor goes to is not the order they connected in: every client waits on a thread of
/// its own. (Waiting for them one by one, in connect order, could wait forever for one in the
/// other shard's backlog while the clients holding the descriptors waited their turn.)
fn each_is_greeted_and_leaves(clients: Vec<Client>) {
    let threads: Vec<_> = clients
        .into_iter()
        .enumerate()
        .map(|(i, mut client)| {
            std::thread::spawn(move || {
                let greeting = client.expect("Username: ");
                assert!(
                    greeting.contains("Welcome to ringtalk."),
                    "client {i}: {greeting:?}"
                );
                client.shutdown_write();
                client.expect_closed();
            })
        })
        .collect();
    for t in threads {
        t.join().expect("a client was not served");
    }
}

/// A loopback port nothing listens on, below the usual ephemeral range (32768 and up), so that no
/// connect made while waiting for the server can be given it as its own port.
fn unused_port() -> SocketAddr {
    let start = std::process::id() % 10_000;
    (0..10_000)
        .map(|i| SocketAddr::from(([127, 0, 0, 1], (20_000 + (start + i) % 10_000) as u16)))
        .find(|addr| TcpListener::bind(addr).is_ok())
        .expect("a free port between 20000 and 29999")
}
