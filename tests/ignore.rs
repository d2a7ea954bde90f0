//! Ignoring someone, against a real two-shard server: their channel lines and private messages
//! stop reaching you (and only you), they are not told, and the list lasts across a restart.

mod common;

use common::shards::{user_on, PASSWORD};
use common::{prompt, start_server_with, TestServer};

fn two_shards() -> TestServer {
    start_server_with(2, |_| {})
}

/// `users` all join `channel` (made by the first).
fn all_on(channel: &str, users: &mut [&mut common::Client]) {
    for (i, user) in users.iter_mut().enumerate() {
        if i == 0 {
            user.send_line(&format!("/create {channel}"));
        } else {
            user.send_line(&format!("/join {channel}"));
        }
        user.expect(&format!("You have joined #{channel}\r\n"));
    }
}

#[test]
fn an_ignored_user_reaches_only_those_who_do_not_ignore_them_and_is_not_told() {
    let server = two_shards();
    let mut alice = user_on(&server, "alice", 0);
    let mut bob = user_on(&server, "bob", 1);
    let mut carol = user_on(&server, "carol", 0);
    all_on("den", &mut [&mut alice, &mut bob, &mut carol]);

    bob.send_line("/ignore ALICE");
    bob.expect("You are ignoring alice: you will see nothing they say or tell you.\r\n");
    alice.send_line("hello all");
    alice.expect("alice says, \"hello all\"\r\n");
    carol.expect("alice says, \"hello all\"\r\n");
    carol.send_line("hi alice");
    let heard = bob.expect("carol says, \"hi alice\"\r\n");
    assert!(!heard.contains("hello all"), "{heard}");

    // A private message looks delivered to its sender, and is not.
    alice.send_line("/tell bob psst");
    alice.expect("You tell bob, \"psst\"\r\n");
    carol.send_line("/tell bob and me");
    let heard = bob.expect("carol tells you, \"and me\"\r\n");
    assert!(!heard.contains("psst"), "{heard}");
    bob.send_line("/reply noted");
    carol.expect("bob tells you, \"noted\"\r\n");

    bob.send_line("/ignore");
    bob.expect("You are ignoring: alice.\r\n");
    bob.send_line("/ignore alice");
    bob.expect("You are already ignoring alice.\r\n");
    bob.send_line("/ignore Bob");
    bob.expect("You cannot ignore yourself.\r\n");
    bob.send_line("/ignore nobody");
    bob.expect("There is no user named nobody.\r\n");
    bob.send_line("/unignore carol");
    bob.expect("You are not ignoring carol.\r\n");
    bob.send_line("/unignore");
    bob.expect("Usage: /unignore <name>\r\n");

    bob.send_line("/unignore alice");
    bob.expect("You are no longer ignoring alice.\r\n");
    alice.send_line("back again");
    bob.expect("alice says, \"back again\"\r\n");
    bob.send_line("/ignore");
    bob.expect("You are ignoring no one.\r\n");
}

#[test]
fn an_ignore_list_lasts_across_a_restart() {
    let server = two_shards();
    let mut alice = user_on(&server, "alice", 0);
    let mut bob = user_on(&server, "bob", 1);
    bob.send_line("/ignore alice");
    bob.expect("You are ignoring alice");
    alice.send_line("/quit");
    bob.send_line("/quit");
    bob.expect("Goodbye.\r\n");
    let server = server.restart_with(2, |_| {});

    let (mut bob, _) = server.connect_on_shard();
    bob.login("bob", PASSWORD);
    bob.send_line("/ignore");
    bob.expect("You are ignoring: alice.\r\n");
    let (mut alice, _) = server.connect_on_shard();
    alice.login("alice", PASSWORD);
    let (mut carol, _) = server.connect_on_shard();
    carol.create_account("carol", PASSWORD);
    for (user, name) in [(&mut alice, "alice"), (&mut carol, "carol")] {
        user.send_line("/tell bob still there?");
        user.expect("You tell bob, \"still there?\"\r\n");
        user.expect(&prompt(name));
    }
    let heard = bob.expect("carol tells you, \"still there?\"\r\n");
    assert!(!heard.contains("alice tells you"), "{heard}");
}

#[test]
fn an_ignore_reaches_the_users_other_sessions_on_any_shard() {
    let server = two_shards();
    let mut alice = user_on(&server, "alice", 0);
    let mut bob = user_on(&server, "bob", 0);
    let (mut bob_again, _) = server.connect_on_shard();
    bob_again.login("bob", PASSWORD);
    let mut carol = user_on(&server, "carol", 1);
    all_on("den", &mut [&mut alice, &mut bob_again, &mut carol]);

    bob.send_line("/ignore alice");
    bob.expect("You are ignoring alice");
    // The other session hears of it through the directory: asked until it has.
    let deadline = std::time::Instant::now() + common::DEADLINE;
    loop {
        bob_again.send_line("/ignore");
        let (i, _) = bob_again.expect_any(&[
            "You are ignoring: alice.\r\n",
            "You are ignoring no one.\r\n",
        ]);
        if i == 0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the other session never heard"
        );
    }
    alice.send_line("only carol hears this");
    carol.expect("alice says, \"only carol hears this\"\r\n");
    carol.send_line("and this");
    let heard = bob_again.expect("carol says, \"and this\"\r\n");
    assert!(!heard.contains("only carol hears this"), "{heard}");
}
