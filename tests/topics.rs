//! Channel owners and topics, against a real two-shard server: the creator owns a channel and
//! decides its topic (or lets anyone), hands it over, an admin may too, joiners and `/list` see
//! the topic, and both last across a restart.

mod common;

use common::shards::{user_on, PASSWORD};
use common::{start_server_with, TestServer};

fn two_shards() -> TestServer {
    start_server_with(2, |_| {})
}

#[test]
fn the_owner_sets_the_topic_lets_anyone_and_hands_the_channel_over() {
    let server = two_shards();
    let mut alice = user_on(&server, "alice", 0);
    let mut bob = user_on(&server, "bob", 1);
    alice.send_line("/create Den");
    alice.expect("You have joined #Den\r\n");
    bob.send_line("/join den");
    bob.expect("You have joined #Den\r\n");

    bob.send_line("/topic cake");
    bob.expect("Only the owner of #Den (alice) or an admin can do that.\r\n");
    alice.send_line("/topic Cake and tea");
    for user in [&mut alice, &mut bob] {
        user.expect("alice set the topic of #Den: Cake and tea\r\n");
    }
    bob.send_line("/topic");
    bob.expect("The topic of #Den: Cake and tea\r\n");

    let mut carol = user_on(&server, "carol", 1);
    carol.send_line("/join DEN");
    carol.expect("You have joined #Den\r\nTopic: Cake and tea\r\n");
    carol.send_line("/list");
    carol.expect("Channels:\r\n  #Den (3): Cake and tea\r\n");

    alice.send_line("/set topic anyone");
    bob.expect("alice let anyone on #Den set its topic.\r\n");
    bob.send_line("/topic pie");
    alice.expect("bob set the topic of #Den: pie\r\n");
    carol.send_line("/set");
    carol.expect("Settings of #Den:\r\n  owner: alice\r\n  topic: anyone may set it\r\n");
    carol.send_line("/set topic everyone");
    carol.expect(
        "Usage: /set, or /set topic anyone|owner, /set invite-only on|off, /set capacity <members>\r\n",
    );

    bob.send_line("/owner carol");
    bob.expect("Only the owner of #Den (alice) or an admin can do that.\r\n");
    alice.send_line("/owner nobody");
    alice.expect("There is no user named nobody.\r\n");
    alice.send_line("/owner CAROL");
    bob.expect("alice handed #Den over to carol: carol owns it now.\r\n");
    alice.send_line("/set topic owner");
    alice.expect("Only the owner of #Den (carol) or an admin can do that.\r\n");
    bob.send_line("/topic -");
    carol.expect("bob cleared the topic of #Den.\r\n");
    carol.send_line("/topic");
    carol.expect("#Den has no topic.\r\n");

    let mut dave = user_on(&server, "dave", 0);
    dave.send_line("/topic hi");
    dave.expect("You are not on a channel. Use /join <channel> or /create <channel>.\r\n");
}

#[test]
fn topic_and_owner_last_across_a_restart_and_an_admin_may_do_what_an_owner_may() {
    let server = two_shards();
    let mut alice = user_on(&server, "alice", 1);
    alice.send_line("/create Den");
    alice.expect("You have joined #Den\r\n");
    alice.send_line("/topic Welcome home");
    alice.expect("alice set the topic of #Den: Welcome home\r\n");
    let mut zed = user_on(&server, "zed", 0);
    zed.send_line("/quit");
    alice.send_line("/quit");
    alice.expect("Goodbye.\r\n");
    let server = server.restart_with(2, |c| c.admins = vec!["ZED".to_string()]);

    let (mut bob, _) = server.connect_on_shard();
    bob.create_account("bob", PASSWORD);
    bob.send_line("/join den");
    bob.expect("You have joined #Den\r\nTopic: Welcome home\r\n");
    bob.send_line("/set");
    bob.expect("  owner: alice\r\n");
    let (mut zed, _) = server.connect_on_shard();
    zed.login("zed", PASSWORD);
    zed.send_line("/join den");
    zed.expect("You have joined #Den\r\n");
    zed.send_line("/topic Admins were here");
    bob.expect("zed set the topic of #Den: Admins were here\r\n");
}
