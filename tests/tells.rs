//! Private messages against a real two-shard server: `/tell` and `/reply` between users on
//! different shards, refusals, one sender's order kept, and a message that finds a user who has
//! just moved to another shard. Assertions are on the bytes each user receives.

mod common;

use common::shards::{channel_on_shard_0, move_to_shard_0, user_on, PASSWORD};
use common::{prompt, start_server_with, wait_until, TestServer};

fn two_shards() -> TestServer {
    start_server_with(2, |_| {})
}

#[test]
fn a_tell_crosses_shards_both_ways_and_reply_answers_the_last_teller() {
    let server = two_shards();
    let mut alice = user_on(&server, "alice", 0);
    let mut bob = user_on(&server, "bob", 1);

    alice.send_line("/tell bob hi there");
    alice.expect("You tell bob, \"hi there\"\r\n");
    bob.expect("alice tells you, \"hi there\"\r\n");

    bob.send_line("/reply hello yourself");
    bob.expect("You tell alice, \"hello yourself\"\r\n");
    alice.expect("bob tells you, \"hello yourself\"\r\n");

    // Names are found in any case; the sender's spelling is what the sender sees.
    alice.send_line("/msg BOB and again");
    alice.expect("You tell BOB, \"and again\"\r\n");
    bob.expect("alice tells you, \"and again\"\r\n");

    // Someone nobody has told anything has no one to reply to.
    let mut carol = user_on(&server, "carol", 0);
    carol.send_line("/reply anyone?");
    carol.expect("No one has told you anything yet.\r\n");
    carol.expect(&prompt("carol"));
}

#[test]
fn a_tell_to_someone_not_online_says_so_and_the_usage_is_shown_when_text_is_missing() {
    let server = two_shards();
    let mut alice = user_on(&server, "alice", 0);
    let mut bob = user_on(&server, "bob", 1);

    alice.send_line("/tell nobody hi");
    alice.expect("nobody is not online.\r\n");
    alice.send_line("/tell b@d hi");
    alice.expect("b@d is not online.\r\n");
    alice.send_line("/tell bob");
    alice.expect("Usage: /tell <name> <text>\r\n");
    alice.send_line("/reply");
    alice.expect("Usage: /reply <text>\r\n");

    bob.send_line("/quit");
    bob.expect("Goodbye.\r\n");
    bob.expect_closed();
    alice.send_line("/tell bob are you there?");
    alice.expect("bob is not online.\r\n");
}

#[test]
fn one_senders_tells_arrive_in_the_order_sent() {
    const TELLS: usize = 40;
    let server = two_shards();
    let mut alice = user_on(&server, "alice", 0);
    let mut bob = user_on(&server, "bob", 1);
    // All at once, as a paste: the server takes them one after another.
    let mut burst = String::new();
    for n in 0..TELLS {
        burst.push_str(&format!("/tell bob number {n}\r\n"));
    }
    alice.send(burst.as_bytes());
    alice.expect(&format!("You tell bob, \"number {}\"\r\n", TELLS - 1));
    for n in 0..TELLS {
        bob.expect(&format!("alice tells you, \"number {n}\"\r\n"));
    }
}

#[test]
fn a_tell_finds_a_user_who_moved_to_their_channels_shard() {
    let server = start_server_with(2, |c| c.colocate_up_to = 64);
    let mut alice = user_on(&server, "alice", 0);
    let mut bob = user_on(&server, "bob", 1);
    // A channel homed on shard 0: bob, on shard 1, moves there when he joins it.
    let channel = channel_on_shard_0("meet");
    // Tells going while he moves: each finds him, in order, none "not online".
    const TELLS: usize = 60;
    let mut burst = String::new();
    for n in 0..TELLS {
        burst.push_str(&format!("/tell bob while moving {n}\r\n"));
    }
    alice.send(burst.as_bytes());
    bob.send_line(&format!("/create {channel}"));
    let said = alice.expect(&format!("You tell bob, \"while moving {}\"\r\n", TELLS - 1));
    assert!(!said.contains("not online"), "{said}");
    let heard = bob.expect(&format!(
        "alice tells you, \"while moving {}\"\r\n",
        TELLS - 1
    ));
    let mut at = 0;
    for n in 0..TELLS {
        let tell = format!("alice tells you, \"while moving {n}\"\r\n");
        match heard[at..].find(&tell) {
            Some(i) => at += i + tell.len(),
            None => panic!("tell {n} missing or out of order in {heard:?}"),
        }
    }
    if !heard.contains(&format!("You have joined #{channel}\r\n")) {
        bob.expect(&format!("You have joined #{channel}\r\n"));
    }
    wait_until(
        || {
            let s = server.stats();
            s.shards[0].logged_in == 2 && s.shards[1].logged_in == 0
        },
        "bob to move to shard 0",
    );
    for n in 0..5 {
        alice.send_line(&format!("/tell bob after the move {n}"));
        alice.expect(&format!("You tell bob, \"after the move {n}\"\r\n"));
        bob.expect(&format!("alice tells you, \"after the move {n}\"\r\n"));
    }
    bob.send_line("/reply got them");
    alice.expect("bob tells you, \"got them\"\r\n");
}

#[test]
fn reply_remembers_the_last_teller_across_a_move() {
    let server = start_server_with(2, |c| c.colocate_up_to = 64);
    let mut alice = user_on(&server, "alice", 0);
    let mut bob = user_on(&server, "bob", 1);
    alice.send_line("/tell bob before you move");
    bob.expect("alice tells you, \"before you move\"\r\n");
    move_to_shard_0(&server, &mut bob, "room");
    bob.send_line("/reply and after");
    bob.expect("You tell alice, \"and after\"\r\n");
    alice.expect("bob tells you, \"and after\"\r\n");
}

#[test]
fn a_user_logged_in_twice_gets_a_tell_in_both_sessions_and_the_sender_one_answer() {
    let server = two_shards();
    let mut bob = user_on(&server, "bob", 0);
    let mut bob_again = server.connect(common::Kind::Raw);
    bob_again.login("bob", PASSWORD);
    let mut alice = user_on(&server, "alice", 1);
    alice.send_line("/tell bob to both of you");
    bob.expect("alice tells you, \"to both of you\"\r\n");
    bob_again.expect("alice tells you, \"to both of you\"\r\n");
    alice.expect("You tell bob, \"to both of you\"\r\n");
    alice.send_line("/tell bob once more");
    let said = alice.expect("You tell bob, \"once more\"\r\n");
    assert!(!said.contains("to both of you"), "{said}");
    // One of them leaves; the other still gets what is sent.
    bob.send_line("/quit");
    bob.expect_closed();
    alice.send_line("/tell bob still there?");
    alice.expect("You tell bob, \"still there?\"\r\n");
    bob_again.expect("alice tells you, \"still there?\"\r\n");
}

#[test]
fn a_tell_to_someone_away_is_delivered_and_the_sender_sees_why_even_after_a_move() {
    let server = start_server_with(2, |c| c.colocate_up_to = 64);
    let mut alice = user_on(&server, "alice", 0);
    let mut bob = user_on(&server, "bob", 1);
    bob.send_line("/away gone fishing");
    bob.expect("You are away: gone fishing\r\n");
    alice.send_line("/tell bob are you there?");
    alice.expect("You tell bob, \"are you there?\"\r\nbob is away: gone fishing\r\n");
    bob.expect("alice tells you, \"are you there?\"\r\n");

    // Away goes with him when he moves to his channel's shard.
    move_to_shard_0(&server, &mut bob, "pond");
    alice.send_line("/tell bob still fishing?");
    alice.expect("You tell bob, \"still fishing?\"\r\nbob is away: gone fishing\r\n");

    bob.send_line("/back");
    bob.expect("You are back.\r\n");
    bob.send_line("/back");
    bob.expect("You were not away.\r\n");
    alice.send_line("/tell bob welcome back");
    alice.expect("You tell bob, \"welcome back\"\r\n");
    let after = alice.expect(&prompt("alice"));
    assert!(!after.contains("is away"), "{after:?}");

    bob.send_line("/away");
    bob.expect("You are away.\r\n");
    alice.send_line("/tell bob hello?");
    alice.expect("You tell bob, \"hello?\"\r\nbob is away.\r\n");
}
