//! Channel moderation, against a real two-shard server: an owner kicks, bans (kept across a
//! restart), mutes, invites, makes a channel invite-only and limits it; everyone affected is
//! told in one line, and members on both shards see the same lines.

mod common;

use common::shards::{user_on, PASSWORD};
use common::{prompt, start_server_with, Client, Kind, TestServer};

fn two_shards() -> TestServer {
    start_server_with(2, |_| {})
}

/// alice (shard 0) makes #Den; bob (shard 1) and carol (shard 0) join it.
fn den(server: &TestServer) -> (Client, Client, Client) {
    let mut alice = user_on(server, "alice", 0);
    let mut bob = user_on(server, "bob", 1);
    let mut carol = user_on(server, "carol", 0);
    alice.send_line("/create Den");
    alice.expect("You have joined #Den\r\n");
    for user in [&mut bob, &mut carol] {
        user.send_line("/join den");
        user.expect("You have joined #Den\r\n");
    }
    alice.expect("carol has joined #Den\r\n");
    (alice, bob, carol)
}

#[test]
fn the_owner_kicks_and_bans_and_the_ban_lasts_across_a_restart() {
    let server = two_shards();
    let (mut alice, mut bob, mut carol) = den(&server);

    bob.send_line("/kick carol");
    bob.expect("Only the owner of #Den (alice) or an admin can do that.\r\n");
    alice.send_line("/kick BOB spamming");
    for user in [&mut alice, &mut bob, &mut carol] {
        user.expect("alice kicked bob from #Den: spamming\r\n");
    }
    bob.send_line("/who");
    bob.expect("You are not on a channel. Use /join <channel> or /create <channel>.\r\n");
    alice.send_line("/kick bob");
    alice.expect("bob is not on #Den.\r\n");
    alice.send_line("/kick alice");
    alice.expect("You cannot do that to yourself.\r\n");
    bob.send_line("/join den");
    bob.expect("You have joined #Den\r\n");

    alice.send_line("/ban bob");
    for user in [&mut alice, &mut bob, &mut carol] {
        user.expect("alice banned bob from #Den.\r\n");
    }
    bob.send_line("/join den");
    bob.expect("You are banned from #Den.\r\n");
    alice.send_line("/ban nobody");
    alice.expect("There is no user named nobody.\r\n");
    alice.send_line("/set");
    alice.expect("  banned: bob\r\n");
    alice.send_line("/quit");
    alice.expect("Goodbye.\r\n");

    let server = server.restart_with(2, |_| {});
    let (mut bob, _) = server.connect_on_shard();
    bob.login("bob", PASSWORD);
    bob.send_line("/join den");
    bob.expect("You are banned from #Den.\r\n");
    let (mut alice, _) = server.connect_on_shard();
    alice.login("alice", PASSWORD);
    alice.send_line("/join den");
    alice.expect("You have joined #Den\r\n");
    alice.send_line("/unban Bob");
    alice.expect("Bob may join #Den again.\r\n");
    alice.send_line("/unban bob");
    alice.expect("bob is not banned from #Den.\r\n");
    bob.send_line("/join den");
    bob.expect("You have joined #Den\r\n");
}

#[test]
fn a_muted_member_is_told_and_nobody_hears_them_until_unmuted() {
    let server = two_shards();
    let (mut alice, mut bob, mut carol) = den(&server);
    alice.send_line("/mute carol 3");
    for user in [&mut alice, &mut bob, &mut carol] {
        user.expect("alice muted carol on #Den for 3 minutes.\r\n");
    }
    carol.send_line("can anyone hear me?");
    carol.expect("You are muted on #Den for another 3 minutes; nobody heard that.\r\n");
    alice.send_line("quiet now");
    let heard = bob.expect("alice says, \"quiet now\"\r\n");
    assert!(!heard.contains("can anyone hear me"), "{heard}");
    alice.send_line("/mute carol 0");
    alice.expect("Usage: /mute <name> [minutes, 1 to 10080]\r\n");
    alice.send_line("/mute dave");
    alice.expect("dave is not on #Den.\r\n");
    alice.send_line("/unmute carol");
    bob.expect("alice unmuted carol on #Den.\r\n");
    carol.send_line("better");
    bob.expect("carol says, \"better\"\r\n");
    alice.send_line("/unmute carol");
    alice.expect("carol is not muted on #Den.\r\n");
}

#[test]
fn invite_only_lets_in_the_invited_once_and_a_capacity_refuses_the_next() {
    let server = two_shards();
    let (mut alice, mut bob, _carol) = den(&server);
    alice.send_line("/set invite-only on");
    bob.expect("alice made #Den invite-only.\r\n");
    let mut dave = user_on(&server, "dave", 1);
    dave.send_line("/join den");
    dave.expect("#Den is invite-only; ask its owner for an invitation.\r\n");
    alice.send_line("/invite DAVE");
    alice.expect("You invited dave to #Den; they may join it once.\r\n");
    dave.expect("alice invites you to #Den: /join Den\r\n");
    dave.send_line("/join den");
    dave.expect("You have joined #Den\r\n");
    dave.send_line("/exit");
    dave.expect("You left #Den\r\n");
    dave.send_line("/join den");
    dave.expect("#Den is invite-only; ask its owner for an invitation.\r\n");
    alice.send_line("/set invite-only off");
    bob.expect("alice opened #Den to everyone.\r\n");

    alice.send_line("/set capacity 3");
    bob.expect("alice set #Den to at most 3 members.\r\n");
    dave.send_line("/join den");
    dave.expect("Request to join channel denied: Channel is full\r\n");
    alice.send_line("/set capacity x");
    alice.expect(
        "Usage: /set, or /set topic anyone|owner, /set invite-only on|off, /set capacity <members>\r\n",
    );
    alice.send_line("/set capacity 0");
    bob.expect("alice set #Den back to");
    dave.send_line("/join den");
    dave.expect("You have joined #Den\r\n");
    dave.send_line("/set");
    dave.expect("Settings of #Den:\r\n  owner: alice\r\n  topic: owner may set it\r\n  invite-only: off\r\n");
}

#[test]
fn a_terminal_users_prompt_stops_naming_the_channel_they_were_kicked_from() {
    let server = two_shards();
    let mut alice = user_on(&server, "alice", 0);
    let mut bob = server.connect(Kind::Xterm);
    bob.create_account("bob", PASSWORD);
    alice.send_line("/create Den");
    alice.expect("You have joined #Den\r\n");
    bob.send_line("/join den");
    bob.expect("bob #Den> ");
    alice.send_line("/kick bob");
    // Character mode: the line is printed and the prompt drawn again, without the channel,
    // before bob types anything.
    bob.expect("alice kicked bob from #Den.");
    bob.expect(&prompt("bob"));
}
