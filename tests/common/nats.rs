//! A real `nats-server` with JetStream for the cluster tests, in a temporary directory on a free
//! loopback port, killed when dropped.
//!
//! The tests need `nats-server` on the PATH or in /usr/sbin (Debian: `apt-get install
//! nats-server`; `.ci/run` installs it). Without it [`Nats::start`] says so and answers `None`,
//! and the test returns early, unless `RINGTALK_REQUIRE_NATS` is set, as CI sets it: then it panics.
//! Readiness is nats-server's own "Server is ready" log line, not a poll of its port.

// Each test binary uses a different subset of these helpers.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// How long nats-server may take to say it is ready. Generous: the machine may be busy compiling.
const READY_DEADLINE: Duration = Duration::from_secs(10);

/// A nats-server with JetStream in a temporary directory; killed when dropped.
pub struct Nats {
    child: Child,
    port: u16,
    /// Its JetStream storage; kept across [`Nats::restart`].
    dir: tempfile::TempDir,
}

impl Nats {
    /// Starts one on a free port, or says why not (`None`: not installed, and not required).
    pub fn start() -> Option<Nats> {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        Nats::start_on(port, tempfile::tempdir().expect("a temporary directory"))
    }

    /// Starts one on `port` with its storage in `dir`.
    pub fn start_on(port: u16, dir: tempfile::TempDir) -> Option<Nats> {
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
            .recv_timeout(READY_DEADLINE)
            .expect("nats-server did not say it is ready");
        Some(nats)
    }

    /// The address clients connect to.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Kills it and starts another on the same port and directory.
    pub fn restart(mut self) -> Nats {
        self.kill();
        let dir = std::mem::replace(&mut self.dir, tempfile::tempdir().expect("a directory"));
        Nats::start_on(self.port, dir).expect("nats-server ran before")
    }

    /// Kills it and waits for it to exit.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        self.kill();
    }
}
