//! A user's own account over real TCP on a two-shard server: `/passwd` and `/delete-account`,
//! every refusal, answers typed ahead, and what lasts across a restart (the new password, the
//! deletion, when a user was last seen, a ban). Assertions are on the bytes each user receives.

mod common;

use common::shards::{user_on, PASSWORD};
use common::{prompt, start_server_with, Client, Kind, TestServer};
use futures::executor::block_on;
use ringtalk::accounts::{Accounts, MIN_BCRYPT_COST};

fn two_shards() -> TestServer {
    start_server_with(2, |_| {})
}

/// Answers the three prompts of `/passwd`.
fn passwd(client: &mut Client, old: &str, new: &str, repeat: &str) {
    client.send_line("/passwd");
    client.expect("Old password: ");
    client.send_line(old);
    client.expect("New password: ");
    client.send_line(new);
    client.expect("Repeat new password: ");
    client.send_line(repeat);
}

/// Tries to log in, from a new connection, with a password that must be refused.
fn login_refused(server: &TestServer, name: &str, password: &str) {
    let mut client = server.connect(Kind::Raw);
    client.expect("Username: ");
    client.send_line(name);
    client.expect("Password: ");
    client.send_line(password);
    client.expect("Incorrect password.\r\n");
    client.expect("Username: ");
}

#[test]
fn passwd_changes_the_password_that_the_next_login_needs() {
    let server = two_shards();
    let mut alice = user_on(&server, "alice", 1);
    passwd(&mut alice, PASSWORD, "battery-staple", "battery-staple");
    alice.expect("Your password has been changed.\r\n");
    alice.expect(&prompt("alice"));
    login_refused(&server, "alice", PASSWORD);
    server.connect(Kind::Raw).login("alice", "battery-staple");
    // The first session goes on.
    alice.send_line("/who");
    alice.expect("You are not on a channel.");
}

#[test]
fn passwd_refuses_a_wrong_old_password_a_bad_or_mismatched_new_one_and_an_empty_answer() {
    let server = two_shards();
    let mut bob = user_on(&server, "bob", 0);
    passwd(&mut bob, "not-my-password", "new-password", "new-password");
    bob.expect("Incorrect password; your password is unchanged.\r\n");
    passwd(&mut bob, PASSWORD, "new-password", "new-passw0rd");
    bob.expect("Passwords did not match; your password is unchanged.\r\n");

    // A new password the rules refuse is refused before the repeat.
    bob.send_line("/passwd");
    bob.expect("Old password: ");
    bob.send_line(PASSWORD);
    bob.expect("New password: ");
    bob.send_line("short");
    let said = bob.expect("Passwords are 6 characters to 71 bytes.\r\n");
    assert!(!said.contains("Repeat"), "{said:?}");
    bob.expect(&prompt("bob"));

    for empty_at in 0..3 {
        bob.send_line("/passwd");
        for (at, question) in ["Old password: ", "New password: ", "Repeat new password: "]
            .into_iter()
            .enumerate()
        {
            bob.expect(question);
            if at == empty_at {
                bob.send_line("");
                break;
            }
            bob.send_line(if at == 0 { PASSWORD } else { "new-password" });
        }
        bob.expect("Your password is unchanged.\r\n");
        bob.expect(&prompt("bob"));
    }
    login_refused(&server, "bob", "new-password");
    server.connect(Kind::Raw).login("bob", PASSWORD);
}

#[test]
fn passwords_are_not_echoed_and_ctrl_d_at_a_prompt_only_cancels() {
    let server = two_shards();
    let mut carol = server.connect(Kind::Xterm);
    carol.create_account("carol", PASSWORD);
    carol.send_line("/passwd");
    carol.expect("Old password: ");
    carol.send(format!("{PASSWORD}\r").as_bytes());
    carol.expect("New password: ");
    carol.send(b"\x04");
    carol.expect("Your password is unchanged.\r\n");
    carol.expect(&prompt("carol"));
    assert!(
        !String::from_utf8_lossy(carol.text()).contains(PASSWORD),
        "the password was echoed"
    );
    // Still logged in.
    carol.send_line("/delete-account");
    carol.expect("Password to confirm: ");
    carol.send(b"\x04");
    carol.expect("Your account is kept.\r\n");
    carol.expect(&prompt("carol"));
}

/// A client that sends a command and its answers at once, with flood control holding most of
/// the lines back: each answer still goes to its prompt, and no password is ever said on the
/// channel.
#[test]
fn answers_typed_ahead_go_to_their_prompts_even_when_flood_control_holds_them() {
    let server = start_server_with(2, |c| {
        c.exempt.clear();
        c.flood_burst = 1;
        c.flood_rate = 20;
    });
    let mut dave = server.connect(Kind::Raw);
    dave.create_account("dave", PASSWORD);
    let mut erin = server.connect(Kind::Raw);
    erin.create_account("erin", PASSWORD);
    dave.send_line("/create den");
    dave.expect("You have joined #den");
    erin.send_line("/join den");
    erin.expect("You have joined #den");
    dave.expect("erin has joined #den");

    // The second line is held, and the lines after it are read into the hold meanwhile.
    erin.send(
        format!("'one\r\n'two\r\n/passwd\r\n{PASSWORD}\r\nsecret-two\r\nsecret-two\r\n'done\r\n")
            .as_bytes(),
    );
    erin.expect("Your password has been changed.\r\n");
    let heard = dave.expect("erin says, \"done\"\r\n");
    assert!(
        !heard.contains(PASSWORD) && !heard.contains("secret-two"),
        "{heard:?}"
    );
    erin.send("'three\r\n'four\r\n/delete-account\r\nwrong-one\r\n'still here\r\n".as_bytes());
    erin.expect("Incorrect password; your account is kept.\r\n");
    dave.expect("erin says, \"still here\"\r\n");
}

#[test]
fn delete_account_keeps_it_for_a_wrong_or_empty_password() {
    let server = two_shards();
    let mut fay = user_on(&server, "fay", 1);
    fay.send_line("/delete-account");
    fay.expect("This deletes your account and everything kept for it. It cannot be undone.\r\n");
    fay.expect("Password to confirm: ");
    fay.send_line("wrong-password");
    fay.expect("Incorrect password; your account is kept.\r\n");
    fay.expect(&prompt("fay"));
    fay.send_line("/delete-account");
    fay.expect("Password to confirm: ");
    fay.send_line("");
    fay.expect("Your account is kept.\r\n");
    fay.expect(&prompt("fay"));
    server.connect(Kind::Raw).login("fay", PASSWORD);
}

/// Wrong passwords at these prompts count with failed logins: after five, each check waits
/// first, as at login, so an open session is no quicker way to guess.
#[test]
fn wrong_passwords_in_these_commands_slow_the_next_check_as_failed_logins_do() {
    let server = two_shards();
    let mut gil = user_on(&server, "gil", 0);
    for attempt in 0..5 {
        let wrong = format!("wrong-{attempt}");
        if attempt % 2 == 0 {
            gil.send_line("/delete-account");
            gil.expect("Password to confirm: ");
            gil.send_line(&wrong);
            let said = gil.expect("Incorrect password; your account is kept.\r\n");
            assert!(!said.contains("Too many"), "{said:?}");
        } else {
            passwd(&mut gil, &wrong, "new-password", "new-password");
            gil.expect("Incorrect password; your password is unchanged.\r\n");
        }
    }
    passwd(&mut gil, PASSWORD, "new-password", "new-password");
    gil.expect(
        "Too many failed logins for this account recently; your password will be checked in 1 second.\r\n",
    );
    gil.expect("Your password has been changed.\r\n");
}

#[test]
fn delete_account_closes_the_session_and_the_name_can_be_made_anew() {
    let server = two_shards();
    let mut gus = user_on(&server, "gus", 1);
    let mut hal = user_on(&server, "hal", 0);
    gus.send_line("/create porch");
    gus.expect("You have joined #porch");
    hal.send_line("/join porch");
    hal.expect("You have joined #porch");
    // Logged in a second time, through either shard: ended too.
    let (mut gus_again, _) = server.connect_on_shard();
    gus_again.login("gus", PASSWORD);

    gus.send_line("/delete-account");
    gus.expect("Password to confirm: ");
    gus.send_line(PASSWORD);
    gus.expect("Your account has been deleted. Goodbye.\r\n");
    let rest = gus.expect_closed();
    assert!(!rest.contains("Goodbye"), "said goodbye twice: {rest:?}");
    hal.expect("gus has left #porch");
    gus_again.expect("Your account was deleted in another session.\r\n");
    gus_again.expect_closed();

    let mut anew = server.connect(Kind::Raw);
    anew.expect("Username: ");
    anew.send_line("gus");
    anew.expect("That username does not exist on this system. Create new account? (y/n) ");
    anew.send_line("y");
    anew.expect("Password for new account: ");
    anew.send_line("another-one");
    anew.expect("Repeat password: ");
    anew.send_line("another-one");
    anew.expect("Your new account has been created. You are logged in.\r\n");
    anew.expect(&prompt("gus"));
    login_refused(&server, "gus", PASSWORD);
}

#[test]
fn a_new_password_a_deletion_last_seen_and_a_ban_last_across_a_restart() {
    let server = two_shards();
    let mut ida = user_on(&server, "ida", 0);
    let mut jan = user_on(&server, "jan", 1);
    let mut kim = user_on(&server, "kim", 1);
    passwd(&mut ida, PASSWORD, "after-restart", "after-restart");
    ida.expect("Your password has been changed.\r\n");
    jan.send_line("/delete-account");
    jan.expect("Password to confirm: ");
    jan.send_line(PASSWORD);
    jan.expect_closed();
    // Ida logs off; Kim is still on when the server stops.
    ida.send_line("/quit");
    ida.expect_closed();
    let server = server.restart_with(2, |_| {});
    kim.expect_closed();

    server.connect(Kind::Raw).login("ida", "after-restart");
    login_refused(&server, "ida", PASSWORD);
    let mut gone = server.connect(Kind::Raw);
    gone.expect("Username: ");
    gone.send_line("jan");
    gone.expect("Create new account? (y/n) ");

    // Both sessions that ended recorded when; a ban set meanwhile keeps Kim out.
    let dir = server.stop_keeping_data();
    {
        let (accounts, guard) =
            Accounts::open(dir.path(), MIN_BCRYPT_COST, 1, 8).expect("the database opens");
        for name in ["ida", "kim"] {
            let profile = block_on(accounts.profile(name)).unwrap().unwrap();
            assert!(profile.last_seen.is_some(), "{profile:?}");
        }
        assert!(block_on(accounts.set_banned("kim", true)).unwrap());
        guard.shutdown();
    }
    let server = TestServer::over(dir, 2);
    let mut kim = server.connect(Kind::Raw);
    kim.expect("Username: ");
    kim.send_line("kim");
    kim.expect("Password: ");
    kim.send_line(PASSWORD);
    kim.expect("This account is banned.\r\n");
    kim.expect("Username: ");
}
