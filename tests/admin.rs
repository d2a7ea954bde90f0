//! What server admins may do, against a real two-shard server: end a user's sessions wherever
//! they are (`/kill`), say something to everyone (`/wall`), ban an account and lift the ban,
//! delete a channel with members on both shards; everyone else is refused; and every action is
//! in `<data-dir>/audit.log`.

mod common;

use common::shards::{channel_on_shard_0, user_on, PASSWORD};
use common::{prompt, start_server_with, wait_until, Client, TestServer};

/// A two-shard server on which `root` is an admin (`--admin root`).
fn two_shards() -> TestServer {
    start_server_with(2, |c| c.admins = vec!["root".to_string()])
}

/// A session of the existing user `name` logged in on shard `want`.
fn login_on(server: &TestServer, name: &str, want: usize) -> Client {
    for _ in 0..64 {
        let (mut client, shard) = server.connect_on_shard();
        if shard == want {
            client.login(name, PASSWORD);
            return client;
        }
    }
    panic!("64 connections did not reach shard {want}");
}

/// Logged-in sessions on the server now.
fn logged_in(server: &TestServer) -> u64 {
    server.stats().shards.iter().map(|s| s.logged_in).sum()
}

#[test]
fn kill_closes_every_session_of_a_user_on_both_shards_and_only_an_admin_may() {
    let server = two_shards();
    let mut root = user_on(&server, "root", 0);
    let mut bob = user_on(&server, "bob", 0);
    let mut bob_again = login_on(&server, "bob", 1);
    let mut carol = user_on(&server, "carol", 1);

    carol.send_line("/kill bob");
    carol.expect("Only an admin can do that.\r\n");
    root.send_line("/kill");
    root.expect("Usage: /kill <name> [reason]\r\n");
    root.send_line("/kill ROOT");
    root.expect("You cannot do that to yourself.\r\n");
    root.send_line("/kill nobody bye");
    root.expect("nobody is not online.\r\n");
    root.send_line("/kill no/such");
    root.expect("no/such is not online.\r\n");

    root.send_line("/kill BOB too much spam");
    root.expect("bob was disconnected.\r\n");
    root.expect(&prompt("root"));
    for session in [&mut bob, &mut bob_again] {
        session.expect("You were disconnected by root: too much spam.\r\n");
        session.expect_closed();
    }
    wait_until(|| logged_in(&server) == 2, "both of bob's sessions to end");

    // Without a reason; the others are untouched.
    let mut bob = login_on(&server, "bob", 1);
    root.send_line("/kill bob");
    root.expect("bob was disconnected.\r\n");
    bob.expect("You were disconnected by root.\r\n");
    bob.expect_closed();
    carol.send_line("/who *");
    carol.expect("Users online: 2, page 1 of 1.\r\n");
}

#[test]
fn wall_reaches_every_logged_in_session_on_both_shards_once() {
    let server = two_shards();
    let mut root = user_on(&server, "root", 0);
    let mut amy = user_on(&server, "amy", 0);
    let mut ben = user_on(&server, "ben", 1);
    ben.send_line("/create den");
    ben.expect("You have joined #den\r\n");
    let (mut later, _) = server.connect_on_shard();

    amy.send_line("/wall hi");
    amy.expect("Only an admin can do that.\r\n");
    root.send_line("/wall");
    root.expect("Usage: /wall <text>\r\n");

    root.send_line("/wall The server restarts at noon.");
    root.send_line("/wall Second.");
    for user in [&mut root, &mut amy, &mut ben] {
        user.expect("[wall] root: The server restarts at noon.\r\n");
        let between = user.expect("[wall] root: Second.\r\n");
        assert!(!between.contains("noon"), "seen twice: {between}");
    }
    // Not logged in then: it gets nothing.
    later.create_account("cy", PASSWORD);
    let text = String::from_utf8_lossy(later.text()).into_owned();
    assert!(!text.contains("[wall]"), "{text}");
}

#[test]
fn a_banned_account_is_disconnected_and_cannot_log_in_until_the_ban_is_lifted() {
    let server = two_shards();
    let mut root = user_on(&server, "root", 0);
    let mut bob = user_on(&server, "Bob", 1);
    let mut carol = user_on(&server, "carol", 0);

    carol.send_line("/ban-account bob");
    carol.expect("Only an admin can do that.\r\n");
    carol.send_line("/unban-account bob");
    carol.expect("Only an admin can do that.\r\n");
    root.send_line("/ban-account");
    root.expect("Usage: /ban-account <name> [reason]\r\n");
    root.send_line("/unban-account");
    root.expect("Usage: /unban-account <name>\r\n");
    root.send_line("/ban-account Root");
    root.expect("You cannot do that to yourself.\r\n");
    root.send_line("/ban-account nobody");
    root.expect("There is no user named nobody.\r\n");
    root.send_line("/unban-account nobody");
    root.expect("There is no user named nobody.\r\n");

    root.send_line("/ban-account bob spam, again");
    root.expect("Bob may no longer log in.\r\n");
    bob.expect("You were disconnected by root: spam, again.\r\n");
    bob.expect_closed();
    let (mut bob, _) = server.connect_on_shard();
    bob.expect("Username: ");
    bob.send_line("bob");
    bob.expect("Password: ");
    bob.send_line(PASSWORD);
    bob.expect("This account is banned.\r\n");
    bob.expect("Username: ");

    root.send_line("/unban-account BOB");
    root.expect("Bob may log in again.\r\n");
    bob.send_line("bob");
    bob.expect("Password: ");
    bob.send_line(PASSWORD);
    bob.expect("You are logged in.");

    // Banned with nobody online, and without a reason.
    carol.send_line("/quit");
    carol.expect_closed();
    root.send_line("/ban-account carol");
    root.expect("carol may no longer log in.\r\n");
}

#[test]
fn a_deleted_channel_loses_its_members_on_both_shards_and_its_name_but_keeps_its_log() {
    // Members stay on the shard that accepted them, so the channel has some on each.
    let server = start_server_with(2, |c| {
        c.admins = vec!["root".to_string()];
        c.colocate_up_to = 0;
    });
    let den = channel_on_shard_0("Den");
    let mut amy = user_on(&server, "amy", 0);
    let mut ben = user_on(&server, "ben", 1);
    let mut root = user_on(&server, "root", 1);
    amy.send_line(&format!("/create {den}"));
    amy.expect(&format!("You have joined #{den}\r\n"));
    ben.send_line(&format!("/join {}", den.to_lowercase()));
    ben.expect(&format!("You have joined #{den}\r\n"));
    amy.send_line("hi");
    ben.expect("amy says, \"hi\"\r\n");

    ben.send_line(&format!("/delete-channel {den}"));
    ben.expect("Only an admin can do that.\r\n");
    root.send_line("/delete-channel");
    root.expect("Usage: /delete-channel <channel>\r\n");
    root.send_line("/delete-channel nosuch");
    root.expect("Channel #nosuch does not exist.\r\n");

    root.send_line(&format!("/delete-channel #{}", den.to_uppercase()));
    root.expect(&format!("#{den} was deleted.\r\n"));
    for (user, name) in [(&mut amy, "amy"), (&mut ben, "ben")] {
        user.expect(&format!("#{den} was deleted by root.\r\n"));
        user.send_line("still here?");
        user.expect("You are not on a channel. Use /join <channel> or /create <channel>.\r\n");
        user.expect(&prompt(name));
    }
    ben.send_line(&format!("/join {den}"));
    ben.expect(&format!(
        "Channel #{den} does not exist. Use /create {den} to make it.\r\n"
    ));
    amy.send_line("/list");
    amy.expect("There are no channels yet. Use /create <channel> to make one.\r\n");

    // Its log stays, the deletion last.
    server.flush_logs();
    let stem = format!("c-{}.", den.to_lowercase());
    let log: String = std::fs::read_dir(server.data_dir().join("logs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with(&stem))
        .map(|p| std::fs::read_to_string(p).unwrap())
        .collect();
    let last = log.lines().last().unwrap_or_default();
    assert!(
        last.ends_with(&format!(" #{den} was deleted by root.")),
        "{log}"
    );

    // The name is free: a new channel, whose first member is alone in it.
    ben.send_line(&format!("/create {den}"));
    ben.expect(&format!(
        "Channel #{den} created.\r\nYou have joined #{den}\r\n"
    ));
    ben.send_line("/who");
    ben.expect("On this channel: ben\r\n");
}

#[test]
fn every_admin_and_owner_action_is_in_the_audit_log() {
    let server = two_shards();
    let mut root = user_on(&server, "root", 0);
    let mut alice = user_on(&server, "alice", 1);
    let mut bob = user_on(&server, "bob", 1);
    alice.send_line("/create Den");
    alice.expect("You have joined #Den\r\n");
    alice.send_line("/topic Cake\x1b[31m and tea");
    alice.expect("alice set the topic of #Den: Cake and tea\r\n");
    root.send_line("/wall hello");
    root.expect("[wall] root: hello\r\n");
    root.send_line("/kill bob spam");
    root.expect("bob was disconnected.\r\n");
    bob.expect_closed();
    root.send_line("/ban-account bob");
    root.expect("bob may no longer log in.\r\n");
    root.send_line("/unban-account bob");
    root.expect("bob may log in again.\r\n");
    root.send_line("/delete-channel den");
    root.expect("#Den was deleted.\r\n");
    // Refused: not recorded.
    root.send_line("/kill nobody");
    root.expect("nobody is not online.\r\n");
    alice.send_line("/wall no");
    alice.expect("Only an admin can do that.\r\n");

    let dir = server.stop_keeping_data();
    let text = std::fs::read_to_string(dir.path().join("audit.log")).expect("the audit log");
    let mut entries = Vec::new();
    for line in text.lines() {
        let (stamp, entry) = line.split_once(' ').expect("a time, then the entry");
        // YYYY-MM-DDTHH:MM:SSZ
        let b = stamp.as_bytes();
        assert!(
            b.len() == 20
                && b[4] == b'-'
                && b[7] == b'-'
                && b[10] == b'T'
                && b[13] == b':'
                && b[16] == b':'
                && b[19] == b'Z'
                && stamp.starts_with("20"),
            "{line:?}"
        );
        entries.push(entry.to_string());
    }
    assert_eq!(
        entries,
        [
            // The line editor keeps escapes out of what users type.
            "alice set the topic of #Den: Cake and tea",
            "root said to everyone: hello",
            "root disconnected bob: spam",
            "root banned bob",
            "root unbanned bob",
            "root deleted #Den",
        ]
    );
}
