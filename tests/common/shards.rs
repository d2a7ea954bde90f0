//! Users placed on a given shard of a two-shard test server, and moved between its shards.

use shard_proto::{home_of, ChannelName};

use super::{wait_until, Client, TestServer};

pub const PASSWORD: &str = "correct-horse";

/// A new user logged in on shard `want` of the server: connects until the kernel gives a
/// connection to that shard (the others are dropped unused).
pub fn user_on(server: &TestServer, name: &str, want: usize) -> Client {
    for _ in 0..64 {
        let (mut client, shard) = server.connect_on_shard();
        if shard == want {
            client.create_account(name, PASSWORD);
            return client;
        }
    }
    panic!("64 connections did not reach shard {want}");
}

/// A channel named `stem<n>` homed on shard 0.
pub fn channel_on_shard_0(stem: &str) -> String {
    (0..)
        .map(|n| format!("{stem}{n}"))
        .find(|c| home_of(&ChannelName::new(c).unwrap(), 2).index() == 0)
        .unwrap()
}

/// `user`, logged in on shard 1, creates a channel homed on shard 0 and so moves there; returns
/// once the server counts no one on shard 1.
pub fn move_to_shard_0(server: &TestServer, user: &mut Client, stem: &str) {
    let channel = channel_on_shard_0(stem);
    user.send_line(&format!("/create {channel}"));
    user.expect(&format!("You have joined #{channel}\r\n"));
    wait_until(
        || server.stats().shards[1].logged_in == 0,
        "the user to move to shard 0",
    );
}
