//! End-to-end tests of the foundation: accounts and login, telnet modes, bad input, shutdown and the
//! login timeout, each against a real two-shard server on `127.0.0.1:0`, asserting bytes on the wire.

mod common;

use std::sync::{Arc, Barrier};

use common::{
    contains, prompt, start_server, start_server_with, wait_until, Kind, Telnet, ECHO, IAC, SB, SE,
    WILL, WONT,
};

const SHARDS: usize = 2;

#[test]
fn an_account_created_on_one_connection_logs_in_on_another() {
    let server = start_server(SHARDS);

    let mut first = server.connect(Kind::Raw);
    first.create_account("alice", "correct-horse");
    first.send_line("/quit");
    first.expect("Goodbye.\r\n");
    first.expect_closed();

    let mut second = server.connect(Kind::Raw);
    second.login("alice", "correct-horse");
    assert_eq!(server.stats().logged_in(), 1);
    second.send_line("/help");
    second.expect("Commands:\r\n");
    second.expect("  /quit                 log off (or ^D on an empty line)\r\n");
    second.expect(&prompt("alice"));
    second.send_line("/help JOIN");
    second.expect("/join <channel>\r\n  join a channel (leaving the one you are on)\r\n");
    second.send_line("/help /nosuch");
    second.expect("No such command: /nosuch. Use /help for the list.\r\n");
    second.send_line("/x");
    second.expect("Command \"/x\" not recognized.\r\n");
    second.send_line("/quit");
    second.expect("Goodbye.\r\n");
    second.expect_closed();
    // The session stops counting itself logged in before it says goodbye.
    assert_eq!(server.stats().logged_in(), 0);
    wait_until(
        || server.stats().connections() == 0,
        "no connection is open",
    );
}

#[test]
fn three_wrong_passwords_close_the_connection() {
    let server = start_server(SHARDS);
    let mut setup = server.connect(Kind::Raw);
    setup.create_account("bob", "bobs-password");
    drop(setup);

    let mut guesser = server.connect(Kind::Raw);
    for attempt in 1..=3 {
        guesser.expect("Username: ");
        guesser.send_line("bob");
        guesser.expect("Password: ");
        guesser.send_line(&format!("wrong-{attempt}"));
        guesser.expect("Incorrect password.\r\n");
    }
    guesser.expect("Too many incorrect passwords. Goodbye.\r\n");
    let after = guesser.expect_closed();
    assert_eq!(after, "", "nothing may follow the goodbye");

    let mut owner = server.connect(Kind::Raw);
    owner.login("bob", "bobs-password");
}

#[test]
fn connections_spread_over_both_shards_and_are_counted() {
    const CLIENTS: u64 = 64;
    let server = start_server(SHARDS);
    let mut clients: Vec<_> = (0..CLIENTS).map(|_| server.connect(Kind::Raw)).collect();
    for client in &mut clients {
        client.expect("Username: ");
    }
    // A session counts itself before it sends its first byte, so the counters are exact now.
    let stats = server.stats();
    assert_eq!(stats.shards.len(), SHARDS);
    for (i, shard) in stats.shards.iter().enumerate() {
        assert!(shard.accepted > 0, "shard {i} accepted nothing: {stats:?}");
    }
    assert_eq!(stats.accepted(), CLIENTS, "{stats:?}");
    assert_eq!(stats.connections(), CLIENTS, "{stats:?}");
    assert_eq!(stats.logged_in(), 0, "{stats:?}");

    drop(clients);
    wait_until(
        || server.stats().connections() == 0,
        "every connection is closed",
    );
    assert_eq!(server.stats().accepted(), CLIENTS);
}

/// Regression: the shard's readiness is edge-triggered, and a read that stops short at a FIN which
/// arrived with the bytes brings no second report. Treating that short read as "nothing more" left
/// such sessions open until shutdown.
#[test]
fn a_line_and_the_end_of_stream_arriving_together_close_the_session() {
    let server = start_server(SHARDS);
    let mut clients: Vec<_> = (0..32).map(|_| server.connect(Kind::Raw)).collect();
    for client in &mut clients {
        client.expect("Username: ");
    }
    for client in &mut clients {
        client.send(b"nobody-here\r\n");
        client.shutdown_write();
    }
    for client in &mut clients {
        client.expect("Create new account? (y/n) ");
        client.expect_closed();
    }
    wait_until(
        || server.stats().connections() == 0,
        "every connection is closed",
    );
}

/// A telnet Synch (`IAC DM`, the DM sent as TCP urgent data) in the middle of a line: the DM stays in
/// the stream (SO_OOBINLINE), so no stray IAC is left to garble the line, and the urgent mark, which
/// ends a read early without a new readiness report, does not stall the rest of it.
#[test]
fn a_telnet_synch_leaves_the_line_around_it_intact() {
    const DM: u8 = 242;
    let server = start_server(SHARDS);
    let mut c = server.connect(Kind::Raw);
    c.expect("Username: ");
    c.send(b"ur");
    c.send(&[IAC]);
    c.send_urgent(DM);
    c.send(b"gent\r\n");
    let reply = c.expect("Create new account? (y/n) ");
    assert!(!reply.contains("not valid UTF-8"), "{reply:?}");
    c.send_line("y");
    c.expect("Password for new account: ");
    c.send_line("synch-password");
    c.expect("Repeat password: ");
    c.send_line("synch-password");
    // The account has the whole name: nothing of the line was lost to the Synch.
    c.expect(&prompt("urgent"));
}

#[test]
fn character_mode_echoes_and_backspace_erases_whole_characters() {
    let server = start_server(SHARDS);
    let mut c = server.connect(Kind::Xterm);
    c.expect("Username: ");

    // The username prompt: "ab", a wide character, backspace over it, Enter (CR NUL, as telnet
    // sends it in character mode).
    c.send(b"ab");
    c.expect_exact(b"ab");
    c.send("世".as_bytes());
    c.expect_exact("世".as_bytes());
    c.send(&[0x7f]);
    c.expect_exact(b"\x08\x08  \x08\x08");
    c.send(b"\r\0");
    c.expect_exact(b"\r\n");
    // The name is exactly "ab": a byte-wise backspace would leave invalid UTF-8 (reported) or
    // an invalid name (refused).
    assert_eq!(
        c.expect("(y/n) "),
        "That username does not exist on this system. Create new account? (y/n) "
    );
    c.send(b"y\r\0");
    c.expect("Password for new account: ");
    c.send(b"secret-ab\r\0");
    c.expect("Repeat password: ");
    c.send(b"secret-ab\r\0");
    c.expect("Your new account has been created. You are logged in.\r\n");
    c.expect(&prompt("ab"));

    // A command line: "/h", "é" in two writes, "世", backspace.
    c.send(b"/h");
    c.expect_exact(b"/h");
    c.send(&[0xc3]);
    c.send(&[0xa9]);
    c.expect_exact("é".as_bytes());
    c.send("世".as_bytes());
    c.expect_exact("世".as_bytes());
    c.send(&[0x7f]);
    c.expect_exact(b"\x08\x08  \x08\x08");
    c.send(b"\r\0");
    c.expect_exact(b"\r\n");
    let reply = c.expect(&prompt("ab"));
    assert_eq!(
        reply,
        format!("Command \"/hé\" not recognized.\r\n{}", prompt("ab"))
    );

    // BS (0x08) over the two-byte "é" erases one column and both bytes.
    c.send("/hé".as_bytes());
    c.expect_exact("/hé".as_bytes());
    c.send(&[0x08]);
    c.expect_exact(b"\x08 \x08");
    c.send(b"\r\0");
    c.expect_exact(b"\r\n");
    let reply = c.expect(&prompt("ab"));
    assert_eq!(
        reply,
        format!("Command \"/h\" not recognized.\r\n{}", prompt("ab"))
    );
}

/// Regression: a password of exactly 72 bytes passed the rules, `Repeat password: ` followed, and
/// then account creation failed with "Something went wrong on the server". The longest passwords
/// the rules accept (ASCII and multi-byte) now create an account and log in over the wire, in line
/// and in character mode; one byte more is refused at once with the true limit.
#[test]
fn a_password_at_the_byte_limit_creates_an_account_and_logs_in() {
    const RULE: &str = "Passwords are 6 characters to 71 bytes.\r\n";
    let server = start_server(SHARDS);
    let accepted = [
        "x".repeat(71),
        format!("{}x", "é".repeat(35)),
        format!("{}xy", "€".repeat(23)),
        format!("{}xyz", "😀".repeat(17)),
    ];
    for (i, password) in accepted.iter().enumerate() {
        assert_eq!(password.len(), 71);
        let kind = if i % 2 == 0 { Kind::Raw } else { Kind::Xterm };
        let name = format!("long{i}");
        // One byte over the limit first: refused before the repeat, and asked again.
        let mut c = server.connect(kind);
        c.expect("Username: ");
        c.send_line(&name);
        c.expect("Create new account? (y/n) ");
        c.send_line("y");
        c.expect("Password for new account: ");
        c.send_line(&format!("{password}!"));
        let reply = c.expect("Password for new account: ");
        assert!(
            reply.ends_with(&format!("{RULE}Password for new account: ")),
            "{reply:?}"
        );
        c.send_line(password);
        c.expect("Repeat password: ");
        c.send_line(password);
        c.expect("Your new account has been created. You are logged in.\r\n");
        c.expect(&prompt(&name));
        c.send_line("/quit");
        c.expect_closed();

        let mut again = server.connect(kind);
        again.login(&name, password);
        again.send_line("/quit");
        again.expect_closed();
    }
}

#[test]
fn passwords_are_never_echoed() {
    const PASSWORD: &str = "Qz7-hidden-pw";
    let server = start_server(SHARDS);

    let mut creator = server.connect(Kind::Xterm);
    creator.create_account("carol", PASSWORD);
    // Echo is on (the name came back), so the absence of the password means something.
    assert!(contains(creator.text(), b"Username: carol\r\n"));
    creator.send_line("/quit");
    creator.expect_closed();
    assert!(
        !contains(creator.raw(), PASSWORD.as_bytes()),
        "password echoed while creating the account"
    );

    let mut user = server.connect(Kind::Xterm);
    user.login("carol", PASSWORD);
    user.send_line("/quit");
    user.expect_closed();
    assert!(contains(user.text(), b"Username: carol\r\n"));
    assert!(
        !contains(user.raw(), PASSWORD.as_bytes()),
        "password echoed while logging in"
    );
    // Not even one character of it: after the password prompt, only the newline came back.
    assert!(contains(user.text(), b"Password: \r\nYou are logged in."));
}

#[test]
fn a_mud_client_gets_line_mode_and_go_ahead() {
    let server = start_server(SHARDS);
    let mut setup = server.connect(Kind::Raw);
    setup.create_account("dave", "daves-password");
    drop(setup);

    let mut mud = server.connect(Kind::Mudlet);
    mud.expect("Username: ");
    // Once TTYPE named MUDLET, the server gives echo back to the client.
    let wont = mud.expect_telnet(0, |t| *t == Telnet::Verb(WONT, ECHO));
    assert!(!mud.server_performs(ECHO));

    // The next Username: prompt (after an empty line) ends with IAC GA.
    mud.send_line("");
    mud.expect("Username: ");
    assert!(mud.ga_after("Username: "), "no GA: {:?}", mud.seen());

    mud.send_line("dave");
    let before_password = mud.pos();
    let segment = mud.expect("Password: ");
    assert!(!segment.contains("dave"), "name echoed: {segment:?}");
    let prompt_start = mud.pos() - "Password: ".len();
    let prompt_end = mud.pos();
    assert!(mud.ga_after("Password: "), "no GA: {:?}", mud.seen());
    // WILL ECHO (the client hides the password) arrives before the prompt ...
    let will = mud.expect_telnet(wont + 1, |t| *t == Telnet::Verb(WILL, ECHO));
    let will_at = mud.seen()[will].at;
    assert!(
        (before_password..=prompt_start).contains(&will_at),
        "WILL ECHO at {will_at}, prompt at {prompt_start}"
    );
    mud.send_line("daves-password");
    mud.expect("You are logged in. Use /help for help with commands.\r\n");
    // ... and WONT ECHO (the client shows typing again) after it, before the reply.
    let wont_again = mud.expect_telnet(will + 1, |t| *t == Telnet::Verb(WONT, ECHO));
    let wont_at = mud.seen()[wont_again].at;
    assert!(
        (prompt_end..mud.pos()).contains(&wont_at),
        "WONT ECHO at {wont_at}, prompt ended at {prompt_end}"
    );

    mud.expect(&prompt("dave"));
    assert!(mud.ga_after(&prompt("dave")), "no GA: {:?}", mud.seen());
    mud.send_line("hello-from-mudlet");
    let reply = mud.expect(&prompt("dave"));
    assert!(!reply.contains("hello-from-mudlet"), "echoed: {reply:?}");
    assert!(reply.contains("You are not on a channel."), "{reply:?}");

    // Line mode: no escape sequences ever, and echo is the client's business at the end.
    assert!(!mud.text().contains(&0x1b), "escape sequence sent");
    assert!(!mud.server_performs(ECHO), "server still says WILL ECHO");
}

#[test]
fn credentials_sent_before_negotiation_still_log_in() {
    let server = start_server(SHARDS);
    let mut setup = server.connect(Kind::Raw);
    setup.create_account("erin", "erins-password");
    drop(setup);

    for kind in [Kind::Xterm, Kind::Mudlet, Kind::Raw] {
        let mut eager = common::Client::connect_deferred(server.addr(), kind);
        eager.send(b"erin\r\nerins-password\r\n");
        eager.expect("Username: ");
        eager.start_answering();
        eager.expect("Password: ");
        eager.expect("You are logged in. Use /help for help with commands.\r\n");
        eager.expect(&prompt("erin"));
        eager.send_line("/help");
        eager.expect("Commands:\r\n");
        assert!(
            !contains(eager.raw(), b"erins-password"),
            "{kind:?}: password echoed"
        );
    }
}

#[test]
fn bad_input_leaves_the_session_working() {
    let server = start_server(SHARDS);
    for (name, kind) in [("frank", Kind::Raw), ("grace", Kind::Xterm)] {
        let mut c = server.connect(kind);
        c.create_account(name, "a-password");
        let p = prompt(name);
        let still_works = |c: &mut common::Client| {
            c.send_line("/help");
            c.expect("Commands:\r\n");
            c.expect(&p);
        };

        // A 2,000-byte line.
        let mut long = vec![b'x'; 2000];
        long.extend_from_slice(b"\r\n");
        c.send(&long);
        c.expect("Line too long: only the first 512 bytes were kept.\r\n");
        c.expect(&p);
        still_works(&mut c);

        // Invalid UTF-8: a bad continuation, a lone continuation byte, a truncated sequence.
        c.send(b"/ab\xc3\x28c\x80d\xe2\x82\r\n");
        let reply = c.expect(&p);
        assert!(
            reply.contains("Bytes that were not valid UTF-8 were removed from your line.\r\n"),
            "{reply:?}"
        );
        assert!(
            reply.contains("Command \"/ab(cd\" not recognized.\r\n"),
            "{reply:?}"
        );
        still_works(&mut c);

        // A stray IAC followed by a byte that is no telnet command.
        c.send(&[IAC, 0x01]);
        c.send(b"/y1\r\n");
        c.expect("Command \"/y1\" not recognized.\r\n");
        c.expect(&p);
        still_works(&mut c);

        // A subnegotiation left open, closed in a later write, then a normal line.
        c.send(&[IAC, SB, 99, 1, 2, 3]);
        c.send(&[4, 5, IAC, SE]);
        c.send(b"/y2\r\n");
        c.expect("Command \"/y2\" not recognized.\r\n");
        c.expect(&p);
        // One longer than any buffer the server should keep for it.
        let mut sb = vec![IAC, SB, 99];
        sb.extend(std::iter::repeat(b'z').take(20_000));
        c.send(&sb);
        c.send(&[IAC, SE]);
        c.send(b"/y3\r\n");
        c.expect("Command \"/y3\" not recognized.\r\n");
        c.expect(&p);
        still_works(&mut c);

        // IAC IAC in text is data byte 0xFF, never valid UTF-8: removed, and reported.
        c.send(b"/x\xff\xffy\r\n");
        let reply = c.expect(&p);
        assert!(
            reply.contains("Bytes that were not valid UTF-8 were removed from your line.\r\n"),
            "{reply:?}"
        );
        assert!(
            reply.contains("Command \"/xy\" not recognized.\r\n"),
            "{reply:?}"
        );
        still_works(&mut c);

        // Terminal escape sequences typed into a line are swallowed whole.
        c.send(b"/z\x1b[2Jq\x1b[1;31mr\r\n");
        c.expect("Command \"/zqr\" not recognized.\r\n");
        c.expect(&p);
        still_works(&mut c);

        if kind == Kind::Raw {
            assert!(
                !c.text().contains(&0x1b),
                "escape sequence sent to a raw client"
            );
        }
        c.send_line("/quit");
        c.expect("Goodbye.\r\n");
        c.expect_closed();
    }
}

#[test]
fn shutdown_tells_every_session_and_closes_it() {
    let server = start_server(SHARDS);
    let kinds = [Kind::Raw, Kind::Xterm, Kind::Mudlet];
    let mut clients = Vec::new();
    for i in 0..20 {
        let kind = kinds[i % kinds.len()];
        let mut c = server.connect(kind);
        if i % 2 == 0 {
            c.create_account(&format!("user{i}"), "shutdown-pw");
        } else {
            c.expect("Username: ");
        }
        clients.push(c);
    }
    // A session counts itself logged in before it shows the chat prompt, which each client has seen.
    assert_eq!(server.stats().logged_in(), 10);
    assert_eq!(server.stats().connections(), 20);

    server.shut_down_telling(&mut clients);
}

#[test]
fn two_connections_creating_one_name_make_one_account() {
    let server = start_server(SHARDS);
    for round in 0..4 {
        let name = format!("race{round}");
        let passwords = [format!("first-pw-{round}"), format!("second-pw-{round}")];
        let barrier = Arc::new(Barrier::new(2));
        let threads: Vec<_> = passwords
            .iter()
            .map(|password| {
                let mut c = server.connect(Kind::Raw);
                c.expect("Username: ");
                c.send_line(&name);
                c.expect("Create new account? (y/n) ");
                c.send_line("y");
                c.expect("Password for new account: ");
                c.send_line(password);
                c.expect("Repeat password: ");
                let (barrier, password) = (barrier.clone(), password.clone());
                std::thread::spawn(move || {
                    barrier.wait();
                    c.send_line(&password);
                    c.expect_any(&[
                        "Your new account has been created. You are logged in.\r\n",
                        "Someone else just took that username. Please choose another.\r\n",
                    ])
                    .0
                })
            })
            .collect();
        let outcomes: Vec<usize> = threads
            .into_iter()
            .map(|t| t.join().expect("client thread panicked"))
            .collect();
        let winners: Vec<usize> = (0..2).filter(|&i| outcomes[i] == 0).collect();
        assert_eq!(winners.len(), 1, "round {round}: outcomes {outcomes:?}");
        let (winner, loser) = (winners[0], 1 - winners[0]);

        let mut ok = server.connect(Kind::Raw);
        ok.login(&name, &passwords[winner]);
        let mut bad = server.connect(Kind::Raw);
        bad.expect("Username: ");
        bad.send_line(&name);
        bad.expect("Password: ");
        bad.send_line(&passwords[loser]);
        bad.expect("Incorrect password.\r\n");
    }
}

#[test]
fn login_timeout_closes_idle_connections_only() {
    let server = start_server_with(SHARDS, |config| config.login_timeout = 1);
    let mut idle = server.connect(Kind::Raw);
    let mut quick = server.connect(Kind::Raw);
    // Everything in one write, so the login is done well within the second.
    quick.send(b"henry\r\ny\r\nhenrys-pw\r\nhenrys-pw\r\n");
    quick.expect("Your new account has been created. You are logged in.\r\n");
    quick.expect(&prompt("henry"));

    idle.expect("Username: ");
    idle.expect("Login timed out. Connect again when you are ready.\r\n");
    assert_eq!(idle.expect_closed(), "");

    // Each shard checks login deadlines in the order connections came. So once a connection made
    // after `quick` has timed out on every shard, each shard has checked `quick`'s deadline too.
    let mut later: Vec<Option<common::Client>> = (0..SHARDS).map(|_| None).collect();
    while later.iter().any(Option::is_none) {
        let (c, shard) = server.connect_on_shard();
        later[shard].get_or_insert(c);
    }
    for c in later.iter_mut().flatten() {
        c.expect("Login timed out. Connect again when you are ready.\r\n");
        c.expect_closed();
    }
    quick.send_line("/help");
    quick.expect("Commands:\r\n");
    quick.expect(&prompt("henry"));
    wait_until(
        || server.stats().connections() == 1,
        "only the logged-in connection is open",
    );
}

/// With a MUD client, each hidden prompt of account creation must end with WONT ECHO, or the
/// client keeps hiding what its user types after logging in.
#[test]
fn a_mud_client_sees_its_typing_again_after_creating_an_account() {
    let server = start_server(SHARDS);
    let mut mud = server.connect(Kind::Mudlet);
    // Known as a MUD client before typing anything.
    mud.expect_telnet(0, |t| *t == Telnet::Verb(WONT, ECHO));
    mud.create_account("ivy", "ivys-password");
    mud.send_line("/help");
    mud.expect("Commands:\r\n");
    mud.expect(&prompt("ivy"));
    let echo: Vec<_> = mud
        .seen()
        .iter()
        .filter(|s| matches!(s.what, Telnet::Verb(_, ECHO)))
        .collect();
    assert!(
        !mud.server_performs(ECHO),
        "the server still performs ECHO after login; ECHO commands seen: {echo:?}"
    );
    assert!(mud.ga_after(&prompt("ivy")));
}

#[test]
fn a_port_in_use_stops_start_with_a_clear_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut config = ringtalk::Config::for_tests(dir.path());
    config.shards = Some(2);
    config.listen = vec![taken.local_addr().unwrap().into()];
    let err = match ringtalk::Server::start(config) {
        Ok(_) => panic!("the server started on a port that is in use"),
        Err(e) => e,
    };
    assert!(
        matches!(err, ringtalk::StartError::Listen { .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("in use"), "{err}");
}

#[test]
fn channels_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let config = || {
        let mut c = ringtalk::Config::for_tests(dir.path());
        c.shards = Some(2);
        c
    };
    let server = ringtalk::Server::start(config()).unwrap();
    let mut alice = common::Client::connect(server.local_addr(), common::Kind::Raw);
    alice.create_account("alice", "secret1");
    alice.send_line("/create Lounge");
    alice.expect("You have joined #Lounge");
    drop(alice);
    server.shutdown();

    let server = ringtalk::Server::start(config()).unwrap();
    let mut bob = common::Client::connect(server.local_addr(), common::Kind::Raw);
    bob.create_account("bob", "secret1");
    bob.send_line("/list");
    bob.expect("#Lounge (0)");
    bob.send_line("/join lounge");
    bob.expect("You have joined #Lounge");
    server.shutdown();
}

#[test]
fn the_message_of_the_day_follows_a_login_cleaned_of_control_characters() {
    let dir = tempfile::tempdir().unwrap();
    let motd = dir.path().join("motd.txt");
    std::fs::write(&motd, b"Welcome to the \x1b[2Jtest server.\r\nBe kind.\n").unwrap();
    let server = start_server_with(1, |c| c.motd = Some(motd.clone()));
    let mut alice = server.connect(Kind::Raw);
    alice.expect("Username: ");
    alice.send_line("alice");
    alice.expect("(y/n) ");
    alice.send_line("y");
    alice.expect("Password for new account: ");
    alice.send_line("correct-horse");
    alice.expect("Repeat password: ");
    alice.send_line("correct-horse");
    alice.expect(
        "You are logged in.\r\nWelcome to the [2Jtest server.\r\nBe kind.\r\nalice #(no channel)> ",
    );
    // A file that cannot be read stops the start with the reason.
    let mut config = ringtalk::config::Config::for_tests(dir.path());
    config.motd = Some(dir.path().join("missing.txt"));
    let err = ringtalk::server::Server::start(config)
        .err()
        .expect("a missing --motd is refused");
    assert!(err.to_string().contains("missing.txt"), "{err}");
}
