//! Cluster mode against a real `nats-server` on loopback: nodes find each other, share a port,
//! notice a node that stops, and reconnect by themselves when NATS goes and comes back.
//!
//! These need `nats-server` on the PATH (Debian: `apt-get install nats-server`; `.ci/run` installs
//! it). Without it they are skipped with a message, unless `RINGTALK_REQUIRE_NATS` is set, as CI
//! sets it, when they fail.

mod common;

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{start_server_with, wait_until, Client, Kind, TestServer, DEADLINE};

/// A nats-server with JetStream in a temporary directory; killed when dropped.
struct Nats {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl Nats {
    /// Starts one on a free port, or says why not (`None`: not installed, and not required).
    fn start() -> Option<Nats> {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        Nats::start_on(port, tempfile::tempdir().expect("a temporary directory"))
    }

    fn start_on(port: u16, dir: tempfile::TempDir) -> Option<Nats> {
        // Debian installs it in /usr/sbin, which a user's PATH may lack.
        let spawn = |program: &str| {
            Command::new(program)
                .args(["-a", "127.0.0.1", "-p", &port.to_string(), "-js", "-sd"])
                .arg(dir.path())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
        };
        let spawned = spawn("nats-server").or_else(|_| spawn("/usr/sbin/nats-server"));
        let mut child = match spawned {
            Ok(child) => child,
            Err(e) if std::env::var_os("RINGTALK_REQUIRE_NATS").is_none() => {
                eprintln!("skipped: cannot run nats-server ({e}); apt-get install nats-server");
                return None;
            }
            Err(e) => panic!("RINGTALK_REQUIRE_NATS is set but nats-server cannot run: {e}"),
        };
        // Ready when its log says so; the log is read to its end, so the pipe never fills.
        let log = BufReader::new(child.stderr.take().expect("stderr is piped"));
        let (ready_tx, ready_rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in log.lines().map_while(Result::ok) {
                if line.contains("Server is ready") {
                    let _ = ready_tx.send(());
                }
            }
        });
        let nats = Nats { child, port, dir };
        ready_rx
            .recv_timeout(DEADLINE)
            .expect("nats-server did not say it is ready");
        Some(nats)
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Kills it and starts another on the same port and directory.
    fn restart(mut self) -> Nats {
        self.kill();
        let dir = std::mem::replace(&mut self.dir, tempfile::tempdir().expect("a directory"));
        Nats::start_on(self.port, dir).expect("nats-server ran before")
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A one-shard node named `name` of the cluster at `url`, listening on `listen`.
fn node(url: &str, name: &str, listen: &str) -> TestServer {
    let (url, name, listen) = (url.to_string(), name.to_string(), listen.parse().unwrap());
    start_server_with(1, move |c| {
        c.cluster = Some(url);
        c.node_name = Some(name);
        c.listen = listen;
    })
}

fn nodes(server: &TestServer) -> Vec<String> {
    server.cluster_view().expect("cluster mode").nodes
}

#[test]
fn nodes_find_each_other_and_a_node_that_stops_is_gone_within_seconds() {
    let Some(nats) = Nats::start() else { return };
    let alpha = node(&nats.url(), "alpha", "127.0.0.1:0");
    let beta = node(&nats.url(), "beta", "127.0.0.1:0");
    for server in [&alpha, &beta] {
        wait_until(
            || nodes(server) == ["alpha", "beta"] && server.cluster_view().unwrap().connected,
            "both nodes to see both",
        );
    }
    let stopped = Instant::now();
    drop(beta);
    wait_until(|| nodes(&alpha) == ["alpha"], "alpha to see beta gone");
    // Gone after 3 s of silence, seen at the next announcement tick.
    assert!(
        stopped.elapsed() < Duration::from_secs(5),
        "{:?}",
        stopped.elapsed()
    );
}

#[test]
fn nodes_of_one_cluster_share_a_port_and_each_serves_users() {
    let Some(nats) = Nats::start() else { return };
    let first = node(&nats.url(), "first", "127.0.0.1:0");
    let port = first.addr().to_string();
    let second = node(&nats.url(), "second", &port);
    assert_eq!(second.addr(), first.addr());
    for _ in 0..8 {
        let mut client = Client::connect(first.addr(), Kind::Raw);
        client.expect("Username: ");
    }
    wait_until(
        || first.stats().accepted() > 0 && second.stats().accepted() > 0,
        "the kernel to spread connections over both nodes",
    );
}

#[test]
fn a_node_started_before_nats_connects_when_it_comes_and_again_after_a_restart() {
    // A port with nothing on it yet.
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap()
        .port();
    let url = format!("nats://127.0.0.1:{port}");
    let alone = node(&url, "early", "127.0.0.1:0");
    assert!(!alone.cluster_view().unwrap().connected);
    // The node serves its users meanwhile.
    let mut client = Client::connect(alone.addr(), Kind::Raw);
    client.expect("Username: ");
    let Some(nats) = Nats::start_on(port, tempfile::tempdir().unwrap()) else {
        return;
    };
    wait_until(
        || alone.cluster_view().unwrap().connected,
        "the node to connect once NATS is there",
    );
    let nats = nats.restart();
    wait_until(
        || alone.cluster_view().unwrap().connected,
        "the node to reconnect after NATS restarted",
    );
    drop(nats);
    wait_until(
        || !alone.cluster_view().unwrap().connected,
        "the node to notice NATS is gone",
    );
}
