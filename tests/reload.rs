//! Changing the configuration of a running server: the library's reload keeps every connection
//! and applies limits, flood control and the message of the day to what comes next; the binary
//! reads its `--config` file again on SIGHUP, names what waits for a restart, and keeps running
//! on its old settings when the file is bad.

mod common;

use std::io::{BufRead, BufReader};
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;

use common::{contains, start_server_with, Client, KillOnDrop, Kind, DEADLINE};

#[test]
fn a_reload_applies_new_limits_and_motd_to_what_comes_next_and_keeps_everyone() {
    let server = start_server_with(2, |c| {
        c.exempt.clear();
        c.max_conns_per_ip = 1;
        c.max_unauth_per_ip = 0;
    });
    let mut first = Client::connect_from(server.addr(), "127.0.0.2", Kind::Xterm);
    first.read_until("the greeting", |t| contains(t, b"Username: "));
    let refused = Client::connect_from(server.addr(), "127.0.0.2", Kind::Raw).expect_closed();
    assert!(refused.contains("Too many connections from your address."));

    let dir = tempfile::tempdir().unwrap();
    let motd = dir.path().join("motd");
    std::fs::write(&motd, "Reloaded welcome.\n").unwrap();
    let mut config = ringtalk::Config::for_tests(dir.path());
    config.exempt.clear();
    config.max_conns_per_ip = 2;
    config.max_unauth_per_ip = 0;
    config.motd = Some(motd);
    config.load_motd().unwrap();
    server.reloader().apply(&config).unwrap();

    // The connection already open is still served, and the one that was refused now fits.
    let mut second = Client::connect_from(server.addr(), "127.0.0.2", Kind::Raw);
    second.expect("Username: ");
    first.create_account("ann", "secret-1");
    assert!(contains(first.text(), b"Reloaded welcome."));
    // The new cap holds too.
    let refused = Client::connect_from(server.addr(), "127.0.0.2", Kind::Raw).expect_closed();
    assert!(refused.contains("Too many connections from your address."));
}

#[test]
fn a_reload_changes_flood_control_of_sessions_already_logged_in() {
    let server = start_server_with(1, |c| {
        c.exempt.clear();
        c.flood_burst = 1;
        c.flood_rate = 1;
        c.flood_queue = 0;
    });
    let mut ann = Client::connect_from(server.addr(), "127.0.0.3", Kind::Raw);
    ann.create_account("ann", "secret-1");
    ann.send_line("/create flood");
    ann.expect("You have joined #flood");
    // `/create` took the only token.
    ann.send(b"one\r\n");
    ann.expect("You are sending too fast; 1 line was dropped.");

    let dir = tempfile::tempdir().unwrap();
    let mut config = ringtalk::Config::for_tests(dir.path());
    config.exempt.clear();
    config.flood_burst = 10;
    config.flood_rate = 1;
    config.flood_queue = 0;
    server.reloader().apply(&config).unwrap();
    ann.send(b"three\r\nfour\r\nfive\r\n");
    for word in ["three", "four", "five"] {
        ann.expect(&format!("says, \"{word}\""));
    }
    let text = String::from_utf8_lossy(ann.text()).into_owned();
    assert_eq!(
        text.matches("too fast").count(),
        1,
        "a burst of 10 takes three lines: {text}"
    );
}

/// The binary's log lines, read by a thread as they come.
struct Logs {
    lines: mpsc::Receiver<String>,
}

impl Logs {
    fn of(child: &mut Child) -> Logs {
        let stderr = child.stderr.take().expect("stderr is piped");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Logs { lines }
    }

    /// The next log line that contains `needle` (those before it are passed over).
    fn expect(&self, needle: &str) -> String {
        loop {
            match self.lines.recv_timeout(DEADLINE) {
                Ok(line) if line.contains(needle) => return line,
                Ok(_) => {}
                Err(e) => panic!("no log line with {needle:?}: {e}"),
            }
        }
    }
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
}

fn signal(child: &Child, name: &str) {
    let pid = child.id().to_string();
    assert!(Command::new("kill")
        .args([name, &pid])
        .status()
        .unwrap()
        .success());
}

fn notification(socket: &UnixDatagram) -> String {
    let mut buf = [0u8; 4096];
    let n = socket.recv(&mut buf).expect("a notification in time");
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

#[test]
fn sighup_reads_the_file_again_and_a_bad_file_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("ringtalk.toml");
    let motd = dir.path().join("motd");
    write(&motd, "First welcome.\n");
    let base = format!(
        "listen = \"127.0.0.1:0\"\nshards = 2\nbcrypt-cost = 4\nstats-interval = 0\n\
         data-dir = {:?}\nmotd = {:?}\nexempt = [\"none\"]\nmax-unauth-per-ip = 0\n",
        dir.path().join("data"),
        motd,
    );
    write(&file, &format!("{base}max-conns-per-ip = 1\n"));
    let notify_path = dir.path().join("notify");
    let notify = UnixDatagram::bind(&notify_path).unwrap();
    notify.set_read_timeout(Some(DEADLINE)).unwrap();
    let mut server = KillOnDrop(
        Command::new(env!("CARGO_BIN_EXE_ringtalk"))
            .arg("--config")
            .arg(&file)
            .env("NOTIFY_SOCKET", &notify_path)
            .env_remove("RUST_LOG")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let logs = Logs::of(&mut server.0);
    let line = logs.expect("ringtalk listening on ");
    let addr: std::net::SocketAddr = line
        .split("listening on ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("no address in {line:?}"));
    assert!(notification(&notify).contains("READY=1"));

    let mut first = Client::connect_from(addr, "127.0.0.2", Kind::Raw);
    first.read_until("the greeting", |t| contains(t, b"Username: "));
    let refused = Client::connect_from(addr, "127.0.0.2", Kind::Raw).expect_closed();
    assert!(refused.contains("Too many connections"), "{refused}");

    // A new limit and MOTD, and a change that needs a restart.
    write(&motd, "Second welcome.\n");
    write(
        &file,
        &format!(
            "{}max-conns-per-ip = 3\n",
            base.replace("shards = 2", "shards = 1")
        ),
    );
    signal(&server.0, "-HUP");
    let reloading = notification(&notify);
    assert!(reloading.contains("RELOADING=1"), "{reloading:?}");
    assert!(reloading.contains("MONOTONIC_USEC="), "{reloading:?}");
    assert!(notification(&notify).contains("READY=1"));
    let line = logs.expect("configuration reloaded");
    assert!(line.contains("max-conns-per-ip"), "{line}");
    let line = logs.expect("take a restart");
    assert!(line.contains("shards"), "{line}");
    let mut second = Client::connect_from(addr, "127.0.0.2", Kind::Raw);
    second.expect("Username: ");
    first.create_account("ann", "secret-1");
    assert!(contains(first.text(), b"Second welcome."));
    assert!(!contains(first.text(), b"First welcome."));

    // A bad file is refused with its line, and the running configuration stays.
    write(&file, &format!("{base}max-conns-per-ip = -1\n"));
    signal(&server.0, "-HUP");
    let line = logs.expect("configuration not reloaded");
    assert!(line.contains("line 9: max-conns-per-ip"), "{line}");
    let mut third = Client::connect_from(addr, "127.0.0.2", Kind::Raw);
    third.expect("Username: ");

    signal(&server.0, "-TERM");
    assert!(server.0.wait().unwrap().success());
    let _ = (first, second, third);
}

#[test]
fn a_bad_file_at_start_is_refused_with_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("ringtalk.toml");
    write(&file, "shards = 2\nflood-rate = 5000\n");
    let out = Command::new(env!("CARGO_BIN_EXE_ringtalk"))
        .arg("--config")
        .arg(&file)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("line 2: flood-rate:"), "{said}");
    assert!(said.contains("0..=1000"), "{said}");
}

#[test]
fn print_config_shows_the_file_under_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("ringtalk.toml");
    write(&file, "flood-rate = 7\nflood-burst = 8\n");
    let out = Command::new(env!("CARGO_BIN_EXE_ringtalk"))
        .arg("--config")
        .arg(&file)
        .args(["--flood-burst", "9", "--print-config"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.lines().any(|l| l == "flood-rate = 7"), "{text}");
    assert!(text.lines().any(|l| l == "flood-burst = 9"), "{text}");
    assert!(text.lines().any(|l| l == "bcrypt-cost = 12"), "{text}");
    assert!(out.stderr.is_empty(), "nothing else is said");
}
