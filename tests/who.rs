//! Who is online, against a real two-shard server: `/who *` (and `/users`) listing everyone on
//! both shards in name order with idle times and away messages, a page at a time, and `/whois`.
//! Assertions are on the bytes each user receives.

mod common;

use common::shards::{channel_on_shard_0, user_on, PASSWORD};
use common::{prompt, start_server_with, TestServer};

fn two_shards() -> TestServer {
    start_server_with(2, |_| {})
}

/// The lines between `first` and the next prompt of `user`, as the client received them.
fn lines_after(text: &str, first: &str, user: &str) -> Vec<String> {
    let from = text.rfind(first).expect("the first line");
    let to = text[from..]
        .find(&prompt(user))
        .map_or(text.len(), |at| from + at);
    text[from..to]
        .split("\r\n")
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect()
}

#[test]
fn who_star_lists_everyone_on_both_shards_by_name_with_idle_and_away() {
    let server = two_shards();
    let mut alice = user_on(&server, "alice", 0);
    let mut bob = user_on(&server, "Bob", 1);
    let _carol = user_on(&server, "carol", 0);
    bob.send_line("/away gone fishing");
    bob.expect("You are away: gone fishing\r\n");

    for asked in ["/who *", "/users", "/who * 1", "/USERS 1"] {
        alice.send_line(asked);
        let header = "Users online: 3, page 1 of 1.\r\n";
        alice.expect(header);
        let text = alice.expect(&prompt("alice"));
        let text = format!("{header}{text}");
        let lines = lines_after(&text, "Users online", "alice");
        assert_eq!(lines.len(), 4, "{asked}: {lines:?}");
        let names: Vec<&str> = lines[1..]
            .iter()
            .map(|l| l.split_whitespace().next().unwrap())
            .collect();
        assert_eq!(names, ["alice", "Bob", "carol"], "{asked}");
        for line in &lines[1..] {
            assert!(
                line.starts_with("  ") && line.contains(" idle "),
                "{line:?}"
            );
        }
        assert!(
            lines[2].ends_with(" (away: gone fishing)"),
            "{:?}",
            lines[2]
        );
        assert!(!lines[1].contains("away") && !lines[3].contains("away"));
    }

    alice.send_line("/who * 2");
    alice.expect("There is no page 2; there is 1.\r\n");
    alice.send_line("/who * x");
    alice.expect("Usage: /who, or /who * [page] for everyone online\r\n");
    alice.send_line("/users 0");
    alice.expect("Usage: /users [page]\r\n");
    alice.send_line("/who bob");
    alice.expect("Usage: /who, or /who * [page] for everyone online\r\n");
}

#[test]
fn who_star_pages_fifty_at_a_time_across_shards() {
    const USERS: usize = 55;
    let server = two_shards();
    let mut users = Vec::new();
    for n in 0..USERS {
        users.push(user_on(&server, &format!("user{n:02}"), n % 2));
    }
    let asker = &mut users[0];
    asker.send_line("/who *");
    let text = asker.expect("Type /who * 2 for the next page.\r\n");
    let lines = lines_after(&text, "Users online", "user00");
    assert_eq!(lines[0], "Users online: 55, page 1 of 2.");
    let names: Vec<String> = (0..50).map(|n| format!("user{n:02}")).collect();
    let listed: Vec<&str> = lines[1..51]
        .iter()
        .map(|l| l.split_whitespace().next().unwrap())
        .collect();
    assert_eq!(listed, names);
    assert_eq!(lines.len(), 52, "{lines:?}");

    asker.send_line("/who * 2");
    asker.expect("Users online: 55, page 2 of 2.\r\n");
    let text = asker.expect(&prompt("user00"));
    let listed: Vec<&str> = text
        .split("\r\n")
        .filter(|l| l.starts_with("  "))
        .map(|l| l.split_whitespace().next().unwrap())
        .collect();
    assert_eq!(listed, ["user50", "user51", "user52", "user53", "user54"]);
    assert!(!text.contains("next page"), "{text}");
    asker.send_line("/who * 3");
    asker.expect("There is no page 3; there are 2.\r\n");
}

#[test]
fn whois_says_where_someone_is_or_when_they_were_last_seen() {
    let server = two_shards();
    let mut alice = user_on(&server, "alice", 0);
    let mut bob = user_on(&server, "Bob", 1);
    let channel = channel_on_shard_0("den");
    bob.send_line(&format!("/create {channel}"));
    bob.expect(&format!("You have joined #{channel}\r\n"));
    bob.send_line("/away");
    bob.expect("You are away.\r\n");

    alice.send_line("/whois bob");
    alice.expect("Bob is online.\r\n");
    let text = alice.expect(&prompt("alice"));
    let lines: Vec<&str> = text.split("\r\n").collect();
    assert!(
        lines[0].starts_with("  Logged in: ") && lines[0].ends_with(" ago)"),
        "{lines:?}"
    );
    assert!(lines[1].starts_with("  Idle: "), "{lines:?}");
    assert_eq!(lines[2], format!("  Channel: #{channel}"));
    assert_eq!(lines[3], "  Away.");

    // Logged in twice: both sessions counted, one's channel each.
    let (mut again, _) = server.connect_on_shard();
    again.login("Bob", PASSWORD);
    alice.send_line("/whois BOB");
    alice.expect("Bob is online, in 2 sessions.\r\n");
    let text = alice.expect(&prompt("alice"));
    assert!(
        text.contains(&format!("  Channel: #{channel}\r\n")),
        "{text}"
    );

    alice.send_line("/whois alice");
    alice.expect("alice is online.\r\n");
    alice.expect("  Channel: none\r\n");

    let mut dave = user_on(&server, "dave", 1);
    dave.send_line("/quit");
    dave.expect("Goodbye.\r\n");
    dave.expect_closed();
    // The time dave left is stored by a worker after his session ends: asked again until it is
    // there (each answer is either "never" or the time).
    let deadline = std::time::Instant::now() + common::DEADLINE;
    loop {
        alice.send_line("/whois DAVE");
        alice.expect("dave is not online.\r\n  Last seen: ");
        let (i, _) = alice.expect_any(&["never\r\n", " ago)\r\n"]);
        alice.expect("  Account made: ");
        if i == 1 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "dave's last time was never stored"
        );
    }
    alice.send_line("/whois nobody");
    alice.expect("There is no user named nobody.\r\n");
    alice.send_line("/whois b@d");
    alice.expect("There is no user named b@d.\r\n");
    alice.send_line("/whois");
    alice.expect("Usage: /whois <name>\r\n");
}
