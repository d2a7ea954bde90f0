//! Telnet over TLS, and a server listening on several addresses, end to end: a real server with a
//! self-signed certificate made in the test, and a rustls client. The session is the same session
//! whichever port a user came in by, so these tests check what TLS changes (the handshake, the
//! first bytes after it, errors, the login timeout, certificate reloads) and that TLS and plain
//! users share one chat.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{
    prompt, start_server_with, Client, KillOnDrop, Kind, Telnet, TestServer, DEADLINE, ECHO, WILL,
    WONT,
};
use ringtalk::{Config, Server, StartError};

const SHARDS: usize = 2;
const PASSWORD: &str = "tls-password";

/// A self-signed certificate for `localhost` and its key, as PEM files in a directory of the test.
struct Certificate {
    cert: PathBuf,
    key: PathBuf,
    /// The certificate as the client trusts it.
    der: rustls::pki_types::CertificateDer<'static>,
}

impl Certificate {
    /// A new one, written as `<stem>.crt` and `<stem>.key` in `dir`.
    fn new(dir: &Path, stem: &str) -> Certificate {
        let made = rcgen::generate_simple_self_signed(vec!["localhost".to_string()])
            .expect("making a certificate");
        let cert = dir.join(format!("{stem}.crt"));
        let key = dir.join(format!("{stem}.key"));
        std::fs::write(&cert, made.cert.pem()).expect("writing the certificate");
        std::fs::write(&key, made.signing_key.serialize_pem()).expect("writing the key");
        Certificate {
            cert,
            key,
            der: made.cert.der().clone(),
        }
    }

    /// A client configuration that trusts this certificate alone.
    fn client(&self) -> Arc<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.der.clone()).expect("a usable certificate");
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        Arc::new(
            rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .expect("the default versions")
                .with_root_certificates(roots)
                .with_no_client_auth(),
        )
    }
}

/// A server with a plain port and a TLS port on `127.0.0.1:0`, serving `cert`.
fn tls_server(cert: &Certificate, adjust: impl FnOnce(&mut Config)) -> TestServer {
    let (cert, key) = (cert.cert.clone(), cert.key.clone());
    start_server_with(SHARDS, move |c| {
        c.tls_listen = vec!["127.0.0.1:0".parse().unwrap()];
        c.tls_cert = Some(cert);
        c.tls_key = Some(key);
        adjust(c);
    })
}

/// Reads from a raw socket until the server closes it (or resets it), failing the test if it is
/// still open after [`DEADLINE`]. Returns what came.
fn read_until_closed(stream: &mut TcpStream) -> Vec<u8> {
    let deadline = Instant::now() + DEADLINE;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "the server kept the connection open");
        stream.set_read_timeout(Some(left)).unwrap();
        match stream.read(&mut buf) {
            Ok(0) => return got,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::ConnectionReset => return got,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => panic!("reading: {e}"),
        }
    }
}

#[test]
fn a_tls_user_and_a_plain_user_chat_in_one_channel() {
    let dir = tempfile::tempdir().unwrap();
    let cert = Certificate::new(dir.path(), "server");
    let server = tls_server(&cert, |_| {});

    let mut alice = Client::connect_tls(server.tls_addr(), Kind::Raw, cert.client());
    // The greeting the server wrote before the handshake ended arrives, whole, after it.
    alice.expect("Welcome to ringtalk.");
    alice.create_account("alice", PASSWORD);
    assert_eq!(alice.peer_certificate().as_deref(), Some(&*cert.der));
    let mut bob = server.connect(Kind::Raw);
    bob.create_account("bob", PASSWORD);

    alice.send_line("/create lounge");
    alice.expect("You have joined #lounge\r\n");
    alice.expect("alice #lounge> ");
    bob.send_line("/join lounge");
    bob.expect("You have joined #lounge\r\n");
    bob.expect("bob #lounge> ");

    alice.send_line("hello from TLS");
    alice.expect("alice says, \"hello from TLS\"\r\n");
    bob.expect("alice says, \"hello from TLS\"\r\n");
    bob.send_line("hello in the clear");
    bob.expect("bob says, \"hello in the clear\"\r\n");
    alice.expect("bob says, \"hello in the clear\"\r\n");

    alice.send_line("/quit");
    alice.expect("Goodbye.\r\n");
    alice.expect_closed();
}

/// A session that joins a small channel homed on another shard moves there, TLS state and all.
#[test]
fn a_tls_session_moves_to_its_channels_home_shard_and_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let cert = Certificate::new(dir.path(), "server");
    let server = tls_server(&cert, |_| {});
    let mut dora = Client::connect_tls(server.tls_addr(), Kind::Raw, cert.client());
    dora.create_account("dora", PASSWORD);
    // One channel homed on each shard: whichever shard took the connection, one of the two
    // joins moves the session.
    for shard in 0..SHARDS {
        let channel = (0..)
            .map(|i| format!("room{i}"))
            .find(|n| {
                let name = shard_proto::ChannelName::new(n).unwrap();
                shard_proto::home_of(&name, SHARDS).index() == shard
            })
            .unwrap();
        dora.send_line(&format!("/create {channel}"));
        dora.expect(&format!("dora #{channel}> "));
        dora.send_line(&format!("in {channel}"));
        dora.expect(&format!("dora says, \"in {channel}\"\r\n"));
    }
    dora.send_line("/quit");
    dora.expect("Goodbye.\r\n");
    dora.expect_closed();
}

#[test]
fn telnet_negotiation_works_inside_tls() {
    let dir = tempfile::tempdir().unwrap();
    let cert = Certificate::new(dir.path(), "server");
    let server = tls_server(&cert, |_| {});

    // A terminal agrees to the server's echo and answers TTYPE and NAWS, all inside TLS.
    let mut term = Client::connect_tls(server.tls_addr(), Kind::Xterm, cert.client());
    term.create_account("carol", PASSWORD);
    term.expect_telnet(0, |t| *t == Telnet::Verb(WILL, ECHO));
    assert!(term.server_performs(ECHO));
    // Character mode: the name typed was echoed by the server.
    assert!(common::contains(term.text(), b"Username: carol\r\n"));

    // A MUD client gets line mode and go-ahead, as on the plain port.
    let mut mud = Client::connect_tls(server.tls_addr(), Kind::Mudlet, cert.client());
    mud.expect("Username: ");
    // Once TTYPE named MUDLET, the server gives echo back to the client.
    mud.expect_telnet(0, |t| *t == Telnet::Verb(WONT, ECHO));
    mud.send_line("");
    mud.expect("Username: ");
    assert!(mud.ga_after("Username: "), "no GA: {:?}", mud.seen());
    assert!(!mud.server_performs(ECHO));
}

#[test]
fn a_client_that_does_not_speak_tls_is_closed_and_the_port_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let cert = Certificate::new(dir.path(), "server");
    let server = tls_server(&cert, |_| {});

    let mut garbage = TcpStream::connect(server.tls_addr()).unwrap();
    garbage.write_all(b"GET / HTTP/1.0\r\n\r\n").unwrap();
    let answer = read_until_closed(&mut garbage);
    // At most an alert: never the greeting in the clear.
    assert!(
        !common::contains(&answer, b"Welcome"),
        "answered in the clear: {answer:?}"
    );
    // Plain telnet on a TLS port is the same mistake.
    let mut plain = Client::connect(server.tls_addr(), Kind::Raw);
    plain.send_line("hello");
    plain.expect_closed();

    let mut good = Client::connect_tls(server.tls_addr(), Kind::Raw, cert.client());
    good.expect("Username: ");
    let mut clear = server.connect(Kind::Raw);
    clear.expect("Username: ");
}

#[test]
fn a_handshake_that_stops_halfway_is_closed_by_the_login_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let cert = Certificate::new(dir.path(), "server");
    let server = tls_server(&cert, |c| c.login_timeout = 1);

    // A real ClientHello, then nothing: the server answers and waits for the rest.
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut client = rustls::ClientConnection::new(cert.client(), name).unwrap();
    let mut hello = Vec::new();
    client.write_tls(&mut hello).unwrap();
    let started = Instant::now();
    let mut stalled = TcpStream::connect(server.tls_addr()).unwrap();
    stalled.write_all(&hello).unwrap();
    // And one that never even says hello.
    let mut silent = TcpStream::connect(server.tls_addr()).unwrap();

    let answer = read_until_closed(&mut stalled);
    assert!(!answer.is_empty(), "the server never answered the hello");
    read_until_closed(&mut silent);
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "closed before the login timeout"
    );
    let mut good = Client::connect_tls(server.tls_addr(), Kind::Raw, cert.client());
    good.expect("Username: ");
}

#[test]
fn listening_on_ipv4_and_ipv6_loopback_serves_both() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::for_tests(dir.path());
    config.shards = Some(SHARDS);
    config.listen = vec!["127.0.0.1:0".parse().unwrap(), "[::1]:0".parse().unwrap()];
    let server = match Server::start(config) {
        Ok(server) => server,
        Err(StartError::Listen { addr, source }) if addr.is_ipv6() => {
            eprintln!("skipped: cannot listen on {addr} here ({source})");
            return;
        }
        Err(e) => panic!("starting the server: {e}"),
    };
    let addrs = server.local_addrs().to_vec();
    assert_eq!(addrs.len(), 2);
    assert!(addrs[0].is_ipv4() && addrs[1].is_ipv6());
    assert_eq!(server.local_addr(), addrs[0]);
    let mut v4 = Client::connect(addrs[0], Kind::Raw);
    v4.create_account("four", PASSWORD);
    let mut v6 = Client::connect(addrs[1], Kind::Raw);
    v6.create_account("six", PASSWORD);
    v4.send_line("/create both");
    v4.expect("four #both> ");
    v6.send_line("/join both");
    v6.expect("six #both> ");
    v6.send_line("over six");
    v4.expect("six says, \"over six\"\r\n");
    server.shutdown();
}

#[test]
fn unusable_certificate_files_are_refused_at_start_with_their_name() {
    let dir = tempfile::tempdir().unwrap();
    let cert = Certificate::new(dir.path(), "server");
    let other = Certificate::new(dir.path(), "other");
    let missing = dir.path().join("missing.crt");
    let not_pem = dir.path().join("not-pem.crt");
    std::fs::write(&not_pem, "this is not a certificate\n").unwrap();

    let start = |cert: Option<&Path>, key: Option<&Path>| {
        let data = tempfile::tempdir().unwrap();
        let mut config = Config::for_tests(data.path());
        config.shards = Some(1);
        config.tls_listen = vec!["127.0.0.1:0".parse().unwrap()];
        config.tls_cert = cert.map(Path::to_path_buf);
        config.tls_key = key.map(Path::to_path_buf);
        match Server::start(config) {
            Ok(server) => {
                server.shutdown();
                panic!("started with cert {cert:?} and key {key:?}");
            }
            Err(e) => e.to_string(),
        }
    };
    let said = start(Some(&missing), Some(&cert.key));
    assert!(said.contains("missing.crt"), "{said}");
    let said = start(Some(&not_pem), Some(&cert.key));
    assert!(said.contains("not-pem.crt"), "{said}");
    // A key that is not the certificate's.
    let said = start(Some(&cert.cert), Some(&other.key));
    assert!(said.contains("server.crt"), "{said}");
    // A certificate given as the key.
    let said = start(Some(&cert.cert), Some(&cert.cert));
    assert!(said.contains("server.crt"), "{said}");
    let said = start(Some(&cert.cert), None);
    assert!(said.contains("--tls-key"), "{said}");
}

#[test]
fn a_reloaded_certificate_serves_new_connections_and_a_bad_one_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let first = Certificate::new(dir.path(), "first");
    let second = Certificate::new(dir.path(), "second");
    let server = tls_server(&first, |_| {});

    let mut early = Client::connect_tls(server.tls_addr(), Kind::Raw, first.client());
    early.create_account("early", PASSWORD);

    server
        .running()
        .reload_tls(&second.cert, &second.key)
        .expect("reloading");
    let mut late = Client::connect_tls(server.tls_addr(), Kind::Raw, second.client());
    late.expect("Username: ");
    assert_eq!(late.peer_certificate().as_deref(), Some(&*second.der));
    // The session that began with the first certificate goes on.
    early.send_line("/who");
    early.expect(&prompt("early"));

    let bad = dir.path().join("bad.key");
    std::fs::write(
        &bad,
        "-----BEGIN PRIVATE KEY-----\nnonsense\n-----END PRIVATE KEY-----\n",
    )
    .unwrap();
    let said = server
        .running()
        .reload_tls(&second.cert, &bad)
        .expect_err("a bad key is refused");
    assert!(said.contains("bad.key"), "{said}");
    let said = server
        .running()
        .reload_tls(&dir.path().join("gone.crt"), &second.key)
        .expect_err("a missing file is refused");
    assert!(said.contains("gone.crt"), "{said}");
    let mut still = Client::connect_tls(server.tls_addr(), Kind::Raw, second.client());
    still.expect("Username: ");
    assert_eq!(still.peer_certificate().as_deref(), Some(&*second.der));
}

/// A reload whose certificate cannot be used changes nothing, not even the settings that could
/// change: the running configuration stays whole.
#[test]
fn a_reload_with_an_unusable_certificate_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let cert = Certificate::new(dir.path(), "server");
    let server = tls_server(&cert, |_| {});
    let motd = dir.path().join("motd");
    std::fs::write(&motd, "Not to be seen.\n").unwrap();
    let mut config = Config::for_tests(dir.path());
    config.tls_listen = vec!["127.0.0.1:0".parse().unwrap()];
    config.tls_cert = Some(cert.cert.clone());
    config.tls_key = Some(dir.path().join("missing.key"));
    config.motd = Some(motd);
    config.load_motd().unwrap();
    let said = server.reloader().apply(&config).expect_err("refused");
    assert!(said.contains("missing.key"), "{said}");
    let mut c = Client::connect_tls(server.tls_addr(), Kind::Raw, cert.client());
    c.create_account("ann", PASSWORD);
    assert!(!common::contains(c.text(), b"Not to be seen."));
    // The same reload with the key in place applies it all.
    config.tls_key = Some(cert.key.clone());
    server.reloader().apply(&config).expect("applied");
    let mut d = Client::connect_tls(server.tls_addr(), Kind::Raw, cert.client());
    d.create_account("bob", PASSWORD);
    assert!(common::contains(d.text(), b"Not to be seen."));
}

/// `--listen none` leaves plain telnet off: a server on its TLS address alone.
#[test]
fn a_server_may_listen_on_tls_alone() {
    let dir = tempfile::tempdir().unwrap();
    let cert = Certificate::new(dir.path(), "server");
    let server = tls_server(&cert, |c| c.listen = vec!["none".parse().unwrap()]);
    assert!(server.running().local_addrs().is_empty());
    let mut c = Client::connect_tls(server.tls_addr(), Kind::Raw, cert.client());
    c.create_account("ann", PASSWORD);
    // MSSP names no plain port, and the TLS one.
    let mut crawler = Client::connect_tls(server.tls_addr(), Kind::Raw, cert.client());
    crawler.expect("Username: ");
    crawler.send_line("MSSP-REQUEST");
    let rest = crawler.expect_closed();
    assert!(!rest.contains("PORT\t"), "{rest}");
    assert!(
        rest.contains(&format!("TLS\t{}", server.tls_addr().port())),
        "{rest}"
    );
}

/// The plain and TLS addresses a server reports are the ones it listens on, with real ports.
#[test]
fn a_server_reports_every_address_it_listens_on() {
    let dir = tempfile::tempdir().unwrap();
    let cert = Certificate::new(dir.path(), "server");
    let server = tls_server(&cert, |c| {
        c.listen.push("127.0.0.1:0".parse().unwrap());
    });
    let server = server.running();
    let plain: Vec<SocketAddr> = server.local_addrs().to_vec();
    assert_eq!(plain.len(), 2);
    assert_eq!(server.tls_addrs().len(), 1);
    let mut all: Vec<u16> = plain
        .iter()
        .chain(server.tls_addrs())
        .map(|a| a.port())
        .collect();
    assert!(all.iter().all(|&p| p != 0));
    all.sort_unstable();
    all.dedup();
    assert_eq!(all.len(), 3, "three addresses, three ports");
    for addr in plain {
        Client::connect(addr, Kind::Raw).expect("Username: ");
    }
}

/// Per-address limits meet a TLS connection in the accept loop, as they meet a plain one; the
/// one refused is closed without the refusal line, which it could not read.
#[test]
fn a_tls_connection_over_the_per_address_limit_is_closed_unanswered() {
    let dir = tempfile::tempdir().unwrap();
    let cert = Certificate::new(dir.path(), "server");
    let server = tls_server(&cert, |c| {
        c.exempt.clear();
        c.max_conns_per_ip = 1;
    });
    let mut first = Client::connect_tls(server.tls_addr(), Kind::Raw, cert.client());
    first.expect("Username: ");
    let mut second = TcpStream::connect(server.tls_addr()).unwrap();
    assert!(read_until_closed(&mut second).is_empty());
    // The plain port counts the same address.
    let mut plain = server.connect(Kind::Raw);
    plain.expect("Too many connections from your address.\r\n");
    plain.expect_closed();
}

/// An IPv6 client is counted like any other (by its /64), through the real accept path.
#[test]
fn an_ipv6_client_meets_the_per_address_limits() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::for_tests(dir.path());
    config.shards = Some(SHARDS);
    config.listen = vec!["[::1]:0".parse().unwrap()];
    config.exempt.clear();
    config.max_conns_per_ip = 1;
    let server = match Server::start(config) {
        Ok(server) => server,
        Err(StartError::Listen { addr, source }) => {
            eprintln!("skipped: cannot listen on {addr} here ({source})");
            return;
        }
        Err(e) => panic!("starting the server: {e}"),
    };
    let mut first = Client::connect(server.local_addr(), Kind::Raw);
    first.expect("Username: ");
    let mut second = Client::connect(server.local_addr(), Kind::Raw);
    second.expect("Too many connections from your address.\r\n");
    second.expect_closed();
    server.shutdown();
}

/// A TLS reader that stops reading while a channel pours lines at it: what TLS encrypted while its
/// socket was full leaves once it reads again, every line arrives in order or is counted in a drop
/// notice, and nobody else loses a line.
#[test]
fn a_tls_reader_that_stops_reading_gets_every_line_or_its_drop_notice() {
    const POSTS: usize = 1000;
    const BATCH: usize = 50;
    let dir = tempfile::tempdir().unwrap();
    let cert = Certificate::new(dir.path(), "server");
    let server = tls_server(&cert, |c| c.queue_limit = 100);
    let mut writer = server.connect(Kind::Raw);
    writer.create_account("writer", PASSWORD);
    let mut slow = Client::connect_with_recv_buffer(server.tls_addr(), Kind::Raw, 4096)
        .with_tls(cert.client());
    slow.create_account("slow", PASSWORD);
    writer.send_line("/create pour");
    writer.expect("writer #pour> ");
    slow.send_line("/join pour");
    slow.expect("slow #pour> ");
    writer.expect("slow has joined #pour\r\n");

    let padding = "x".repeat(400);
    for batch in 0..POSTS / BATCH {
        let mut bytes = Vec::new();
        for i in batch * BATCH..(batch + 1) * BATCH {
            bytes.extend_from_slice(format!("{i:05} {padding}\r\n").as_bytes());
        }
        writer.send(&bytes);
        writer.expect(&format!(
            "writer says, \"{:05} {padding}\"\r\n",
            (batch + 1) * BATCH - 1
        ));
    }
    // Every line is queued or dropped for the slow reader, then it reads it all.
    let counted = |text: &[u8]| {
        let text = String::from_utf8_lossy(text);
        let mut lines = Vec::new();
        let mut dropped = 0;
        for line in text.split("\r\n") {
            if let Some(at) = line.find("writer says, \"") {
                let n = &line[at + "writer says, \"".len()..];
                lines.push(n[..5].parse::<usize>().expect("a line number"));
            } else if let Some(n) = line
                .strip_prefix('[')
                .and_then(|r| r.strip_suffix(" messages dropped]"))
            {
                dropped += n.parse::<usize>().expect("a drop count");
            }
        }
        (lines, dropped)
    };
    slow.read_until("every line or its drop notice", |t| {
        let (lines, dropped) = counted(t);
        lines.len() + dropped == POSTS
    });
    let (lines, dropped) = counted(slow.text());
    assert!(
        dropped > 0,
        "nothing was dropped: the reader never fell behind"
    );
    assert!(lines.windows(2).all(|w| w[0] < w[1]), "lines out of order");
    let all: Vec<usize> = (0..POSTS).collect();
    assert_eq!(counted(writer.text()).0, all, "the writer missed lines");
}

/// The binary reads the certificate files again on SIGHUP: a renewed certificate (same file names)
/// serves new connections, and files that cannot be used are named in the log and change nothing.
#[test]
fn sighup_reloads_the_certificate_files() {
    use std::io::BufRead;
    use std::process::{Command, Stdio};

    let dir = tempfile::tempdir().unwrap();
    let first = Certificate::new(dir.path(), "first");
    let second = Certificate::new(dir.path(), "second");
    let (cert, key) = (dir.path().join("live.crt"), dir.path().join("live.key"));
    std::fs::copy(&first.cert, &cert).unwrap();
    std::fs::copy(&first.key, &key).unwrap();
    let mut server = KillOnDrop(
        Command::new(env!("CARGO_BIN_EXE_ringtalk"))
            .args(["--listen", "127.0.0.1:0", "--tls-listen", "127.0.0.1:0"])
            .args([
                "--shards",
                "1",
                "--bcrypt-cost",
                "4",
                "--stats-interval",
                "0",
            ])
            .arg("--tls-cert")
            .arg(&cert)
            .arg("--tls-key")
            .arg(&key)
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let stderr = server.0.stderr.take().unwrap();
    let (tx, logs) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let expect = |needle: &str| loop {
        match logs.recv_timeout(DEADLINE) {
            Ok(line) if line.contains(needle) => return line,
            Ok(_) => {}
            Err(e) => panic!("no log line with {needle:?}: {e}"),
        }
    };
    let signal = |name: &str| {
        let pid = server.0.id().to_string();
        assert!(Command::new("kill")
            .args([name, &pid])
            .status()
            .unwrap()
            .success());
    };
    let line = expect("for telnet over TLS");
    let addr: SocketAddr = line
        .split("also listening on ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("no address in {line:?}"));
    let served = |trusting: &Certificate| {
        let mut c = Client::connect_tls(addr, Kind::Raw, trusting.client());
        c.expect("Username: ");
        c.peer_certificate().expect("a certificate")
    };
    assert_eq!(served(&first), first.der.to_vec());

    std::fs::copy(&second.cert, &cert).unwrap();
    std::fs::copy(&second.key, &key).unwrap();
    signal("-HUP");
    expect("TLS certificate reloaded");
    assert_eq!(served(&second), second.der.to_vec());

    std::fs::write(&key, "not a key\n").unwrap();
    signal("-HUP");
    let line = expect("configuration not reloaded");
    assert!(line.contains("live.key"), "{line}");
    assert_eq!(served(&second), second.der.to_vec());

    signal("-TERM");
    assert!(server.0.wait().unwrap().success());
}

/// MSSP names the TLS port, so a MUD client or crawler that asks knows it may reconnect with TLS;
/// over TLS the same question gets the same answer.
#[test]
fn mssp_names_the_tls_port() {
    let dir = tempfile::tempdir().unwrap();
    let cert = Certificate::new(dir.path(), "server");
    let server = tls_server(&cert, |_| {});
    let tls_port = server.tls_addr().port();
    for mut crawler in [
        server.connect(Kind::Raw),
        Client::connect_tls(server.tls_addr(), Kind::Raw, cert.client()),
    ] {
        crawler.expect("Username: ");
        crawler.send_line("MSSP-REQUEST");
        let rest = crawler.expect_closed();
        assert!(
            rest.contains(&format!("PORT\t{}\r\n", server.addr().port())),
            "{rest}"
        );
        assert!(rest.contains(&format!("TLS\t{tls_port}\r\n")), "{rest}");
        assert!(rest.contains(&format!("SSL\t{tls_port}\r\n")), "{rest}");
    }
}
