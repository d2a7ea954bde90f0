//! The defences over real TCP: each per-address limit, the login and sign-up throttles and flood
//! control, from source addresses in 127.0.0.0/8 with the exempt list cleared, and loopback's
//! exemption with it in place. Every refusal must be a clear line, and the counters must move.

mod common;

use common::{prompt, start_server_with, wait_until, Client, Kind, TestServer};
use ringtalk::defences::rate::Rate;
use ringtalk::defences::Limit;
use ringtalk::Config;
use shard_proto::{home_of, ChannelName};

/// A two-shard server with no exempt address, after `adjust`.
fn limited(adjust: impl FnOnce(&mut Config)) -> TestServer {
    start_server_with(2, |config| {
        config.exempt.clear();
        adjust(config);
    })
}

fn hits(server: &TestServer, limit: Limit) -> u64 {
    server.stats().total().hits(limit)
}

/// A client from `from` that the server has greeted (so it has been counted).
fn greeted(server: &TestServer, from: &str) -> Client {
    let mut client = Client::connect_from(server.addr(), from, Kind::Raw);
    client.expect("Username: ");
    client
}

/// What a connection from `from` is sent before the server closes it, refusing it.
fn refusal(server: &TestServer, from: &str) -> String {
    Client::connect_from(server.addr(), from, Kind::Raw).expect_closed()
}

/// Creates an account from a `Username: ` prompt already seen.
fn sign_up_at_prompt(client: &mut Client, name: &str, password: &str) {
    client.send_line(name);
    client.expect("Create new account? (y/n) ");
    client.send_line("y");
    client.expect("Password for new account: ");
    client.send_line(password);
    client.expect("Repeat password: ");
    client.send_line(password);
    client.expect("Your new account has been created. You are logged in.\r\n");
    client.expect(&prompt(name));
}

/// Creates an account from `from` and logs off.
fn make_account(server: &TestServer, from: &str, name: &str, password: &str) {
    let mut client = Client::connect_from(server.addr(), from, Kind::Raw);
    client.create_account(name, password);
    client.send_line("/quit");
    client.expect_closed();
}

/// One wrong password from a `Username: ` prompt already seen.
fn guess_at_prompt(client: &mut Client, name: &str, password: &str) {
    client.send_line(name);
    client.expect("Password: ");
    client.send_line(password);
    client.expect("Incorrect password.\r\n");
}

#[test]
fn an_address_past_its_connection_cap_is_told_in_one_line_and_closed() {
    let server = limited(|c| {
        c.max_conns_per_ip = 3;
        c.max_unauth_per_ip = 0;
    });
    let mut held: Vec<Client> = (0..3).map(|_| greeted(&server, "127.0.0.2")).collect();
    let mut over = Client::connect_from(server.addr(), "127.0.0.2", Kind::Xterm);
    // One line and nothing else: no greeting, no negotiation, no login work.
    assert_eq!(
        over.expect_closed(),
        "Too many connections from your address.\r\n"
    );
    assert!(over.seen().is_empty());
    assert_eq!(hits(&server, Limit::ConnCap), 1);
    // Another address has its own count.
    let _other = greeted(&server, "127.0.0.3");
    // One leaves, and its place is given back.
    drop(held.pop());
    wait_until(
        || server.stats().connections() == 3,
        "the server to close the connection that left",
    );
    let _again = greeted(&server, "127.0.0.2");
}

#[test]
fn connections_not_logged_in_are_capped_apart_and_logging_in_frees_a_place() {
    let server = limited(|c| c.signup_rate = Rate::OFF);
    let mut waiting: Vec<Client> = (0..4).map(|_| greeted(&server, "127.0.0.4")).collect();
    assert_eq!(
        refusal(&server, "127.0.0.4"),
        "Too many connections from your address are still logging in; try again later.\r\n"
    );
    assert_eq!(hits(&server, Limit::UnauthCap), 1);
    assert_eq!(hits(&server, Limit::ConnCap), 0);
    // A connection that logs in counts only toward the cap on connections.
    sign_up_at_prompt(&mut waiting[0], "early", "secret-1");
    let _sixth = greeted(&server, "127.0.0.4");
}

#[test]
fn an_address_that_connects_too_often_is_refused_for_a_while() {
    let server = limited(|c| c.conn_rate = "3/600".parse().unwrap());
    for _ in 0..3 {
        drop(greeted(&server, "127.0.0.5"));
    }
    assert_eq!(
        refusal(&server, "127.0.0.5"),
        "Too many connections from your address recently; try again later.\r\n"
    );
    assert_eq!(hits(&server, Limit::ConnRate), 1);
    let _other = greeted(&server, "127.0.0.6");
}

#[test]
fn failed_logins_hold_back_their_address_without_asking_for_a_password() {
    let server = limited(|_| {});
    make_account(&server, "127.0.0.7", "victim", "right-pass");
    let mut guesser = greeted(&server, "127.0.0.8");
    for n in 0..3 {
        if n > 0 {
            guesser.expect("Username: ");
        }
        guess_at_prompt(&mut guesser, "victim", &format!("wrong-{n}"));
    }
    guesser.expect("Too many incorrect passwords. Goodbye.");
    guesser.expect_closed();

    let mut again = greeted(&server, "127.0.0.8");
    again.send_line("victim");
    let answer = again.expect("Username: ");
    assert!(
        answer.contains("Too many failed logins from your address; try again in "),
        "{answer:?}"
    );
    // Refused before the password, so no hash was spent on it.
    assert!(!answer.contains("Password"), "{answer:?}");
    assert_eq!(hits(&server, Limit::LoginThrottle), 1);
    // Told, not hung up on: the dialogue goes on, and other names are held back the same way.
    again.send_line("someone-else");
    again.expect("Create new account? (y/n) ");

    // The owner, from another address, is not held back.
    let mut owner = Client::connect_from(server.addr(), "127.0.0.7", Kind::Raw);
    owner.login("victim", "right-pass");
}

/// Regression: a failure was counted only once its hash had been checked, so guesses sent at
/// the same moment from several connections all passed the throttle and all cost a hash.
#[test]
fn guesses_racing_from_one_address_are_counted_as_they_start() {
    // A hash slow enough that all four guesses are in flight together.
    let server = limited(|c| c.bcrypt_cost = 10);
    make_account(&server, "127.0.0.14", "racer", "right-pass");
    let mut guessers: Vec<Client> = (0..4).map(|_| greeted(&server, "127.0.0.15")).collect();
    for guesser in &mut guessers {
        guesser.send_line("racer");
        guesser.expect("Password: ");
    }
    for guesser in &mut guessers {
        guesser.send_line("wrong");
    }
    let heard: Vec<usize> = guessers
        .iter_mut()
        .map(|g| {
            g.expect_any(&["Incorrect password.", "Too many failed logins"])
                .0
        })
        .collect();
    assert_eq!(heard.iter().filter(|&&h| h == 0).count(), 3, "{heard:?}");
    assert_eq!(hits(&server, Limit::LoginThrottle), 1);
}

#[test]
fn logins_at_once_from_one_address_take_turns_and_all_get_in() {
    // Users behind one address (a household, an office) log in at the same moment: their
    // passwords are checked one at a time, and none is turned away for it.
    let server = limited(|c| c.bcrypt_cost = 10);
    make_account(&server, "127.0.0.16", "one", "secret-1");
    make_account(&server, "127.0.0.16", "two", "secret-2");
    let mut users: Vec<(Client, &str, &str)> = [("one", "secret-1"), ("two", "secret-2")]
        .into_iter()
        .map(|(name, password)| (greeted(&server, "127.0.0.17"), name, password))
        .collect();
    for (client, name, _) in &mut users {
        client.send_line(name);
        client.expect("Password: ");
    }
    for (client, _, password) in &mut users {
        client.send_line(password);
    }
    for (client, name, _) in &mut users {
        client.expect(&prompt(name));
    }
    assert_eq!(hits(&server, Limit::LoginThrottle), 0);
}

#[test]
fn a_successful_login_forgets_its_addresses_failures() {
    let server = limited(|_| {});
    make_account(&server, "127.0.0.9", "resetter", "right-pass");
    // Two failures, then a success...
    let mut first = greeted(&server, "127.0.0.10");
    guess_at_prompt(&mut first, "resetter", "wrong-1");
    first.expect("Username: ");
    guess_at_prompt(&mut first, "resetter", "wrong-2");
    first.login("resetter", "right-pass");
    first.send_line("/quit");
    first.expect_closed();
    // ...so two more failures are the first two, and the third attempt is still heard.
    let mut second = greeted(&server, "127.0.0.10");
    guess_at_prompt(&mut second, "resetter", "wrong-3");
    second.expect("Username: ");
    guess_at_prompt(&mut second, "resetter", "wrong-4");
    second.expect("Username: ");
    guess_at_prompt(&mut second, "resetter", "wrong-5");
    second.expect_closed();
    assert_eq!(hits(&server, Limit::LoginThrottle), 0);
    // Three since the success: now the address waits.
    let mut third = greeted(&server, "127.0.0.10");
    third.send_line("resetter");
    let answer = third.expect("Username: ");
    assert!(answer.contains("Too many failed logins"), "{answer:?}");
}

#[test]
fn failures_from_many_addresses_slow_an_account_but_let_its_owner_in() {
    let server = limited(|_| {});
    make_account(&server, "127.0.0.11", "star", "right-pass");
    // One failure from each of seven addresses: no address is held back, the account is.
    for n in 0..7 {
        let mut guesser = greeted(&server, &format!("127.0.1.{n}"));
        guess_at_prompt(&mut guesser, "star", "wrong");
    }
    assert_eq!(hits(&server, Limit::LoginThrottle), 0);
    let mut owner = greeted(&server, "127.0.0.11");
    owner.send_line("star");
    owner.expect("Password: ");
    owner.send_line("right-pass");
    let told = owner.expect("You are logged in.");
    assert!(
        told.contains(
            "Too many failed logins for this account recently; your password will be checked in "
        ),
        "{told:?}"
    );
    // The sixth and seventh guessers were slowed too.
    assert_eq!(hits(&server, Limit::AccountSlowed), 3);
    // The success forgot the account's failures.
    owner.send_line("/quit");
    owner.expect_closed();
    let mut later = greeted(&server, "127.0.0.11");
    later.send_line("star");
    later.expect("Password: ");
    later.send_line("right-pass");
    let told = later.expect("You are logged in.");
    assert!(!told.contains("Too many"), "{told:?}");
}

#[test]
fn an_address_makes_two_accounts_per_ten_minutes() {
    let server = limited(|_| {});
    make_account(&server, "127.0.0.12", "first", "secret-1");
    make_account(&server, "127.0.0.12", "second", "secret-2");
    let mut third = greeted(&server, "127.0.0.12");
    third.send_line("third");
    third.expect("Create new account? (y/n) ");
    third.send_line("y");
    let answer = third.expect("Username: ");
    assert!(
        answer.contains("Too many new accounts from your address; try again in 5 minutes."),
        "{answer:?}"
    );
    assert_eq!(hits(&server, Limit::SignupRate), 1);
    // Logging in to an existing account is not a sign-up.
    third.send_line("first");
    third.expect("Password: ");
    third.send_line("secret-1");
    third.expect(&prompt("first"));
    make_account(&server, "127.0.0.13", "third", "secret-3");
}

/// A name homed on `shard` of a two-shard server.
fn channel_on(shard: usize, prefix: &str) -> String {
    (0..)
        .map(|n| format!("{prefix}{n}"))
        .find(|name| home_of(&ChannelName::new(name).unwrap(), 2).index() == shard)
        .unwrap()
}

#[test]
fn a_paste_is_held_in_order_cut_with_a_notice_and_costs_the_paster_nothing_else() {
    const PASTE: usize = 10_000;
    let server = limited(|c| c.flood_rate = 20);
    let channel = channel_on(0, "flood");
    let mut ear = Client::connect_from(server.addr(), "127.0.0.20", Kind::Raw);
    ear.create_account("ear", "secret-1");
    ear.send_line(&format!("/create {channel}"));
    ear.expect(&format!("You have joined #{channel}"));
    let mut paster = Client::connect_from(server.addr(), "127.0.0.21", Kind::Raw);
    paster.create_account("paster", "secret-2");
    paster.send_line(&format!("/join {channel}"));
    paster.expect(&format!("You have joined #{channel}"));
    ear.expect("paster has joined");

    let lines_before = server.stats().total().lines;
    let paste: String = (0..PASTE).map(|n| format!("'{n}\r\n")).collect();
    paster.send(paste.as_bytes());
    // Every pasted line is either said or dropped before the last one is seen to.
    wait_until(
        || {
            let total = server.stats().total();
            (total.lines - lines_before) + total.hits(Limit::Flood) == PASTE as u64
        },
        "every pasted line to be said or dropped",
    );
    paster.send_line("'done");
    let heard = ear.expect("paster says, \"done\"");
    let said: Vec<usize> = heard
        .lines()
        .filter_map(|l| l.trim().strip_prefix("paster says, \""))
        .filter_map(|l| l.strip_suffix('"'))
        .filter_map(|n| n.parse().ok())
        .collect();
    // In order, none twice, and the burst and the hold are never cut: the burst of 5 less the
    // `/join` (whose token may not be back yet), then the 20 held.
    assert!(said.windows(2).all(|w| w[0] < w[1]), "{said:?}");
    assert!(said.len() >= 24, "{said:?}");
    assert_eq!(&said[..24], &(0..24).collect::<Vec<_>>()[..], "{said:?}");
    assert!(said.len() < 200, "{} lines got through", said.len());

    let seen = paster.expect("paster says, \"done\"");
    let told: u64 = seen
        .lines()
        .filter_map(|l| l.trim().strip_prefix("You are sending too fast; "))
        .filter_map(|l| l.split(' ').next()?.parse::<u64>().ok())
        .sum();
    assert_eq!(told, (PASTE - said.len()) as u64);
    assert_eq!(hits(&server, Limit::Flood), told);
    // Still connected, and answered at once.
    paster.send_line("/who");
    paster.expect("On this channel: ");
}

#[test]
fn a_session_that_moves_shards_keeps_its_place_in_its_addresss_count() {
    let server = limited(|c| {
        c.max_conns_per_ip = 2;
        c.colocate_up_to = 64;
    });
    let mut mover = Client::connect_from(server.addr(), "127.0.0.30", Kind::Raw);
    mover.create_account("mover", "secret-1");
    // Channels homed on both shards: whichever shard the connection is on, one join moves it.
    for shard in [0, 1] {
        let channel = channel_on(shard, "move");
        mover.send_line(&format!("/create {channel}"));
        mover.expect(&format!("You have joined #{channel}"));
    }
    mover.send_line("/who");
    mover.expect("On this channel: mover");
    let second = greeted(&server, "127.0.0.30");
    assert_eq!(
        refusal(&server, "127.0.0.30"),
        "Too many connections from your address.\r\n"
    );
    // Once it leaves, from the shard it moved to, its place is free.
    mover.send_line("/quit");
    mover.expect_closed();
    wait_until(
        || server.stats().connections() == 1,
        "the moved session to close",
    );
    let _third = greeted(&server, "127.0.0.30");
    drop(second);
}

#[test]
fn exempt_addresses_skip_every_limit() {
    // Loopback is exempt by default; every limit is set as tight as it goes.
    let server = start_server_with(2, |c| {
        c.max_conns_per_ip = 1;
        c.max_unauth_per_ip = 1;
        c.conn_rate = "1/600".parse().unwrap();
        c.signup_rate = "1/600".parse().unwrap();
        c.flood_burst = 1;
        c.flood_rate = 1;
        c.flood_queue = 0;
    });
    let _waiting: Vec<Client> = (0..5).map(|_| greeted(&server, "127.0.0.40")).collect();
    let mut ear = Client::connect_from(server.addr(), "127.0.0.40", Kind::Raw);
    ear.create_account("ear", "secret-1");
    ear.send_line("/create exempt");
    ear.expect("You have joined #exempt");
    let mut talker = Client::connect_from(server.addr(), "127.0.0.40", Kind::Raw);
    talker.create_account("talker", "secret-2");
    talker.send_line("/join exempt");
    talker.expect("You have joined #exempt");
    let paste: String = (0..30).map(|n| format!("'{n}\r\n")).collect();
    talker.send(paste.as_bytes());
    let heard = ear.expect("talker says, \"29\"");
    for n in 0..30 {
        assert!(heard.contains(&format!("talker says, \"{n}\"")), "{n} lost");
    }
    let total = server.stats().total();
    for limit in Limit::ALL {
        assert_eq!(total.hits(limit), 0, "{}", limit.name());
    }
}
