//! End-to-end tests of chat channels against a real two-shard server on `127.0.0.1:0`: one order for
//! every member on either shard and in the log, capacity, switching, races, a reader that stops
//! reading, mass disconnects, hostile names and hostile text. Assertions are on the bytes members
//! receive, the log files and the server's counters.
//!
//! Which shard a connection lands on is the kernel's choice. Where a test needs members on both
//! shards it connects one client at a time and reads the shard off the per-shard `accepted` counter,
//! so it knows (rather than hopes) that both shards are covered.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Barrier};
use std::thread;

use common::{
    contains, prompt, start_server, start_server_with, wait_until, Client, Kind, TestServer,
};
use ringtalk::chanlog::file_stem;
use shard_proto::{home_of, ChannelName};

const SHARDS: usize = 2;
const PASSWORD: &str = "channel-pw";
const BAD_NAME: &str =
    "Channel names are 1 to 32 letters, digits, _, - or ., starting with a letter or digit.\r\n";
const NOT_ON_A_CHANNEL: &str =
    "You are not on a channel. Use /join <channel> or /create <channel>.\r\n";

/// The prompt of `user` on `channel`.
fn on(user: &str, channel: &str) -> String {
    format!("{user} #{channel}> ")
}

/// `count` channel names made of `stem` and a number, each homed on `shard`.
fn homed_on(shard: usize, stem: &str, count: usize) -> Vec<String> {
    (0..)
        .map(|i| format!("{stem}{i}"))
        .filter(|n| home_of(&ChannelName::new(n).unwrap(), SHARDS).index() == shard)
        .take(count)
        .collect()
}

/// A new raw client with a new account, logged in.
fn user(server: &TestServer, name: &str) -> Client {
    let mut c = server.connect(Kind::Raw);
    c.create_account(name, PASSWORD);
    c
}

/// `/create` of a channel that does not exist yet; waits for the new prompt.
fn create(c: &mut Client, user: &str, channel: &str) {
    c.send_line(&format!("/create {channel}"));
    c.expect(&format!("Channel #{channel} created.\r\n"));
    c.expect(&format!("You have joined #{channel}\r\n"));
    c.expect(&on(user, channel));
}

/// `/join typed`, which must succeed; `shown` is the channel's display name.
fn join(c: &mut Client, user: &str, typed: &str, shown: &str) {
    c.send_line(&format!("/join {typed}"));
    c.expect(&format!("You have joined #{shown}\r\n"));
    c.expect(&on(user, shown));
}

/// Sends `line` and returns everything up to and including the prompt that follows.
fn ask(c: &mut Client, line: &str, prompt: &str) -> String {
    c.send_line(line);
    c.expect(prompt)
}

/// The `  #<name> (<members>)` lines of a `/list` answer, asked for now.
fn list_entries(c: &mut Client, prompt: &str) -> Vec<String> {
    let list = ask(c, "/list", prompt);
    lines_where(list.as_bytes(), |l| l.starts_with("  #"))
}

/// Asks `/list` until it shows `expected`. Member counts come from each channel's home, which
/// hears of a disconnect or an `/exit` by message, a little after the member's own shard has
/// counted it; the counters cannot say when the homes have caught up, so the answer is polled.
fn wait_for_list(c: &mut Client, prompt: &str, expected: &[String]) {
    wait_until(
        || list_entries(c, prompt) == expected,
        &format!("/list shows {expected:?}"),
    );
}

/// The complete (CR LF terminated) lines of `text` for which `keep` holds, without any prompts in
/// front. A raw client that sends lines without waiting for prompts can see a line run on after a
/// prompt (docs/PROTOCOL.md, Redraw): the server takes the Enter it received as the end of that row.
fn lines_where(text: &[u8], keep: impl Fn(&str) -> bool) -> Vec<String> {
    let text = String::from_utf8_lossy(text);
    let mut lines: Vec<&str> = text.split("\r\n").collect();
    lines.pop(); // not (yet) terminated
    lines
        .into_iter()
        .map(strip_prompts)
        .filter(|l| keep(l))
        .map(str::to_owned)
        .collect()
}

/// `line` without leading prompts (`<name> #<channel>> `, `<name> #(no channel)> `).
fn strip_prompts(mut line: &str) -> &str {
    loop {
        let Some(space) = line.find(' ') else {
            return line;
        };
        let rest = &line[space + 1..];
        let Some(rest) = rest.strip_prefix('#') else {
            return line;
        };
        match rest.find("> ") {
            Some(end) if !rest[..end].contains(' ') || rest[..end] == *"(no channel)" => {
                line = &rest[end + 2..];
            }
            _ => return line,
        }
    }
}

fn is_chat(line: &str) -> bool {
    line.contains(" says, \"") && !line.contains("[history] ")
}

/// A line the channel orders (and logs): chat, joins and leaves.
fn is_channel_line(line: &str) -> bool {
    !line.contains("[history] ")
        && (is_chat(line) || line.contains(" has joined #") || line.contains(" has left #"))
}

/// Whether `part` occurs in `whole` as one unbroken run.
fn is_contiguous_in(part: &[String], whole: &[String]) -> bool {
    part.is_empty() || whole.windows(part.len()).any(|w| w == part)
}

/// The lines of a channel's log files, oldest day first, timestamps removed (and checked to be
/// `YYYY-MM-DDTHH:MM:SS.mmmZ `). Flushes the log first.
fn log_lines(server: &TestServer, channel: &str) -> Vec<String> {
    server.flush_logs();
    let prefix = format!("{}.", file_stem(&channel.to_lowercase()));
    let dir = server.data_dir().join("logs");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("listing the log directory")
        .map(|e| e.expect("reading the log directory").path())
        .filter(|p| {
            let name = p.file_name().unwrap().to_string_lossy();
            // <stem>.<YYYY-MM-DD>.log
            name.strip_prefix(&prefix)
                .is_some_and(|rest| rest.len() == 14 && rest.ends_with(".log"))
        })
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no log file for #{channel} in {dir:?}");
    let mut lines = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).expect("reading a log file");
        for line in text.lines() {
            let stamp: Vec<char> = line.chars().take(25).collect();
            let shape: String = stamp
                .iter()
                .map(|c| if c.is_ascii_digit() { 'd' } else { *c })
                .collect();
            assert_eq!(shape, "dddd-dd-ddTdd:dd:dd.dddZ ", "log line {line:?}");
            lines.push(line[25..].to_owned());
        }
    }
    lines
}

/// Every path under `root` (relative), with whether it is a directory.
fn tree(root: &Path) -> BTreeMap<PathBuf, bool> {
    let mut found = BTreeMap::new();
    let mut todo = vec![root.to_path_buf()];
    while let Some(dir) = todo.pop() {
        for entry in std::fs::read_dir(&dir).expect("listing a directory") {
            let entry = entry.expect("reading a directory entry");
            let kind = entry.file_type().expect("reading a file type");
            if kind.is_dir() {
                todo.push(entry.path());
            }
            let rel = entry.path().strip_prefix(root).unwrap().to_path_buf();
            found.insert(rel, kind.is_dir());
        }
    }
    found
}

#[test]
fn members_on_both_shards_see_one_order_which_the_log_keeps() {
    const LINES: usize = 12;
    const AT_LEAST: usize = 8;
    // Members stay on the shard that accepted them, so lines cross between shards.
    let server = start_server_with(SHARDS, |c| {
        c.channel_capacity = 0;
        c.colocate_up_to = 0;
    });
    // One channel homed on each shard; each gets members on both shards.
    let channels = [
        homed_on(0, "Order", 1).remove(0),
        homed_on(1, "Order", 1).remove(0),
    ];
    let mut members: [Vec<(Client, String)>; 2] = Default::default();
    let mut per_shard = [[0usize; SHARDS]; 2];
    // Connections past the first AT_LEAST join only where a shard is still missing, so a channel
    // has at most 6 members and gets at most 6 * LINES + 5 lines: fewer than the queue limit, so
    // no member can lose a line however late its session runs.
    let mut idle = Vec::new();
    let (mut n, mut joined) = (0, 0);
    while per_shard.iter().flatten().any(|&k| k < 2) || joined < AT_LEAST {
        assert!(
            n < 64,
            "64 connections did not cover both shards: {per_shard:?}"
        );
        let (mut c, shard) = server.connect_on_shard();
        let name = format!("order{n}");
        n += 1;
        c.create_account(&name, PASSWORD);
        let ch = if per_shard[0][shard] <= per_shard[1][shard] {
            0
        } else {
            1
        };
        if joined >= AT_LEAST && per_shard[ch][shard] >= 2 {
            idle.push(c);
            continue;
        }
        if members[ch].is_empty() {
            create(&mut c, &name, &channels[ch]);
        } else {
            join(&mut c, &name, &channels[ch], &channels[ch]);
        }
        per_shard[ch][shard] += 1;
        joined += 1;
        members[ch].push((c, name));
    }
    let stats = server.stats();
    assert_eq!(stats.total().members, joined as u64, "{stats:?}");
    for (s, shard) in stats.shards.iter().enumerate() {
        assert!(shard.members > 0, "no members on shard {s}: {stats:?}");
    }

    // Everyone talks at once, in all three ways of saying something.
    let barrier = Arc::new(Barrier::new(joined));
    let mut threads = Vec::new();
    for (ch, list) in members.into_iter().enumerate() {
        let expected = list.len() * LINES;
        for (mut c, name) in list {
            let barrier = barrier.clone();
            threads.push(thread::spawn(move || {
                barrier.wait();
                for i in 0..LINES {
                    let text = format!("{name}-{i}");
                    match i % 3 {
                        0 => c.send_line(&text),
                        1 => c.send_line(&format!("/say {text}")),
                        _ => c.send_line(&format!("'{text}")),
                    }
                }
                c.read_until(&format!("{expected} chat lines arrived"), |t| {
                    lines_where(t, is_chat).len() >= expected
                });
                (ch, name, c)
            }));
        }
    }
    let mut received: [Vec<(String, Client)>; 2] = Default::default();
    for t in threads {
        let (ch, name, c) = t.join().expect("a client thread panicked");
        received[ch].push((name, c));
    }

    for (ch, list) in received.iter().enumerate() {
        let channel = &channels[ch];
        let log = log_lines(&server, channel);
        let log_chat: Vec<String> = log.iter().filter(|l| is_chat(l)).cloned().collect();
        assert_eq!(
            log_chat.len(),
            list.len() * LINES,
            "#{channel} log: {log:?}"
        );
        for (name, _) in list {
            // One sender's lines keep the order they were sent in.
            let own: Vec<String> = log_chat
                .iter()
                .filter(|l| l.starts_with(&format!("{name} says, ")))
                .cloned()
                .collect();
            let sent: Vec<String> = (0..LINES)
                .map(|i| format!("{name} says, \"{name}-{i}\""))
                .collect();
            assert_eq!(own, sent, "#{channel}: {name}'s lines in the log");
        }
        for (name, c) in list {
            let chat = lines_where(c.text(), is_chat);
            assert_eq!(chat, log_chat, "#{channel}: {name} saw another order");
            // Joins too: what each member saw is one unbroken stretch of the log.
            let seen = lines_where(c.text(), is_channel_line);
            assert!(
                is_contiguous_in(&seen, &log),
                "#{channel}: {name} saw {seen:?}, the log has {log:?}"
            );
        }
    }
}

#[test]
fn a_full_channel_refuses_until_someone_leaves() {
    let server = start_server_with(SHARDS, |c| c.channel_capacity = 2);
    let mut a = user(&server, "cap-a");
    let mut b = user(&server, "cap-b");
    let mut c = user(&server, "cap-c");
    create(&mut a, "cap-a", "Small");
    join(&mut b, "cap-b", "small", "Small");
    a.expect("cap-b has joined #Small\r\n");

    let reply = ask(&mut c, "/join SMALL", &prompt("cap-c"));
    assert_eq!(
        reply,
        format!(
            "Request to join channel denied: Channel is full\r\n{}",
            prompt("cap-c")
        )
    );
    let list = ask(&mut c, "/list", &prompt("cap-c"));
    assert!(list.contains("Channels:\r\n  #Small (2)\r\n"), "{list:?}");

    let reply = ask(&mut a, "/exit", &prompt("cap-a"));
    assert_eq!(reply, format!("You left #Small\r\n{}", prompt("cap-a")));
    b.expect("cap-a has left #Small\r\n");

    join(&mut c, "cap-c", "Small", "Small");
    b.expect("cap-c has joined #Small\r\n");
    let who = ask(&mut b, "/who", &on("cap-b", "Small"));
    assert!(who.contains("On this channel: cap-b, cap-c\r\n"), "{who:?}");
    // Full again for the one who left.
    let reply = ask(&mut a, "/join small", &prompt("cap-a"));
    assert!(
        reply.contains("Request to join channel denied: Channel is full\r\n"),
        "{reply:?}"
    );
}

#[test]
fn join_switches_channels_and_a_refused_join_stays_put() {
    let server = start_server_with(SHARDS, |c| c.channel_capacity = 2);
    let names = ["sw-a", "sw-b", "sw-c", "sw-d"];
    let [mut a, mut b, mut c, mut d] = names.map(|n| user(&server, n));
    create(&mut a, "sw-a", "One");
    join(&mut b, "sw-b", "one", "One");
    create(&mut c, "sw-c", "Two");
    join(&mut d, "sw-d", "two", "Two");

    // "Two" is full: a stays on "One", and nobody there hears a leave.
    let reply = ask(&mut a, "/join two", &on("sw-a", "One"));
    assert!(
        reply.contains("Request to join channel denied: Channel is full\r\n"),
        "{reply:?}"
    );
    let who = ask(&mut a, "/who", &on("sw-a", "One"));
    assert!(who.contains("On this channel: sw-a, sw-b\r\n"), "{who:?}");

    let reply = ask(&mut d, "/exit", &prompt("sw-d"));
    assert!(reply.contains("You left #Two\r\n"), "{reply:?}");
    c.expect("sw-d has left #Two\r\n");

    join(&mut a, "sw-a", "TWO", "Two");
    b.expect("sw-a has left #One\r\n");
    c.expect("sw-a has joined #Two\r\n");
    let who = ask(&mut a, "/who", &on("sw-a", "Two"));
    assert!(who.contains("On this channel: sw-a, sw-c\r\n"), "{who:?}");
    let who = ask(&mut b, "/who", &on("sw-b", "One"));
    assert!(who.contains("On this channel: sw-b\r\n"), "{who:?}");
    let reply = ask(&mut a, "/join Two", &on("sw-a", "Two"));
    assert!(reply.contains("You are already on #Two.\r\n"), "{reply:?}");

    // a talks on its new channel only.
    a.send_line("after the switch");
    c.expect("sw-a says, \"after the switch\"\r\n");
    b.send_line("still here");
    b.expect("sw-b says, \"still here\"\r\n");
    assert!(!contains(b.text(), b"after the switch"));
    assert_eq!(lines_where(b.text(), |l| l.contains("has left")).len(), 1);
    assert_eq!(server.stats().total().members, 3);
}

#[test]
fn two_connections_creating_one_channel_make_one() {
    let server = start_server(SHARDS);
    let racers = ["racer-a", "racer-b"];
    let mut clients: Vec<Option<Client>> = racers.iter().map(|n| Some(user(&server, n))).collect();
    let mut looker = user(&server, "looker");
    let mut made: Vec<String> = Vec::new();
    for round in 0..4 {
        // Different case, same channel.
        let typed = [format!("Race{round}"), format!("RACE{round}")];
        let barrier = Arc::new(Barrier::new(2));
        let threads: Vec<_> = (0..2)
            .map(|i| {
                let mut c = clients[i].take().unwrap();
                let (barrier, typed) = (barrier.clone(), typed[i].clone());
                thread::spawn(move || {
                    barrier.wait();
                    c.send_line(&format!("/create {typed}"));
                    let (outcome, _) =
                        c.expect_any(&["created.\r\n", "Channel already exists.\r\n"]);
                    (outcome, c)
                })
            })
            .collect();
        let mut outcomes = Vec::new();
        for (i, t) in threads.into_iter().enumerate() {
            let (outcome, c) = t.join().expect("a racer panicked");
            outcomes.push(outcome);
            clients[i] = Some(c);
        }
        let winners: Vec<usize> = (0..2).filter(|&i| outcomes[i] == 0).collect();
        assert_eq!(winners.len(), 1, "round {round}: outcomes {outcomes:?}");
        let winner = winners[0];
        let shown = &typed[winner];
        let c = clients[winner].as_mut().unwrap();
        c.expect(&format!("You have joined #{shown}\r\n"));
        c.expect(&on(racers[winner], shown));

        let list = ask(&mut looker, "/list", &prompt("looker"));
        let entries = lines_where(list.as_bytes(), |l| l.starts_with("  #"));
        let mut expected: Vec<String> = made.iter().map(|m| format!("  #{m} (0)")).collect();
        expected.push(format!("  #{shown} (1)"));
        made.push(shown.clone());
        assert_eq!(entries, expected, "round {round}: {list:?}");

        let c = clients[winner].as_mut().unwrap();
        let reply = ask(c, "/exit", &prompt(racers[winner]));
        assert!(
            reply.contains(&format!("You left #{shown}\r\n")),
            "{reply:?}"
        );
        let empty: Vec<String> = made.iter().map(|m| format!("  #{m} (0)")).collect();
        wait_for_list(&mut looker, &prompt("looker"), &empty);
    }
}

/// One event in what the slow reader finally reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Flood {
    /// The writer's line with this number.
    Line(usize),
    /// `[N messages dropped]`.
    Dropped(usize),
}

fn flood_events(text: &[u8]) -> Vec<Flood> {
    lines_where(text, |_| true)
        .iter()
        .filter_map(|l| {
            if let Some(rest) = l.strip_prefix("writer says, \"") {
                Some(Flood::Line(rest[..5].parse().expect("a line number")))
            } else {
                l.strip_prefix('[')
                    .and_then(|r| r.strip_suffix(" messages dropped]"))
                    .map(|n| Flood::Dropped(n.parse().expect("a drop count")))
            }
        })
        .collect()
}

fn dropped_total(events: &[Flood]) -> usize {
    events
        .iter()
        .map(|e| match e {
            Flood::Dropped(n) => *n,
            Flood::Line(_) => 0,
        })
        .sum()
}

#[test]
fn a_reader_that_stops_reading_loses_lines_only_for_itself() {
    const POSTS: usize = 3000;
    const BATCH: usize = 50;
    const QUEUE_LIMIT: usize = 100;
    const RCVBUF: usize = 4096;
    let server = start_server_with(SHARDS, |c| c.queue_limit = QUEUE_LIMIT as u32);
    let mut writer = user(&server, "writer");
    let mut fast = user(&server, "fast");
    let mut slow = Client::connect_with_recv_buffer(server.addr(), Kind::Raw, RCVBUF);
    slow.create_account("slow", PASSWORD);
    create(&mut writer, "writer", "flood");
    join(&mut fast, "fast", "flood", "flood");
    join(&mut slow, "slow", "flood", "flood");
    writer.expect("slow has joined #flood\r\n");
    fast.expect("slow has joined #flood\r\n");
    let queued_or_dropped =
        |s: &ringtalk::stats::Snapshot| s.total().deliveries + s.total().dropped;
    let before = queued_or_dropped(&server.stats());

    // The writer and the fast reader keep up batch by batch (a batch is well under the queue
    // limit, so neither can lose a line); the slow one never reads.
    let padding = "x".repeat(400);
    for batch in 0..POSTS / BATCH {
        let mut bytes = Vec::new();
        for i in batch * BATCH..(batch + 1) * BATCH {
            bytes.extend_from_slice(format!("{i:05} {padding}\r\n").as_bytes());
        }
        writer.send(&bytes);
        let last = format!(
            "writer says, \"{:05} {padding}\"\r\n",
            (batch + 1) * BATCH - 1
        );
        writer.expect(&last);
        fast.expect(&last);
    }
    let all: Vec<Flood> = (0..POSTS).map(Flood::Line).collect();
    assert_eq!(
        flood_events(fast.text()),
        all,
        "the fast reader missed lines"
    );
    assert_eq!(flood_events(writer.text()), all, "the writer missed lines");

    wait_until(
        || queued_or_dropped(&server.stats()) - before == 3 * POSTS as u64,
        "every line is queued or dropped for each member",
    );
    let dropped = server.stats().total().dropped as usize;
    assert!(dropped > 0, "nothing was dropped: {:?}", server.stats());

    // Now the slow reader reads everything it was kept.
    slow.read_until("its drop notices add up to the dropped count", |t| {
        dropped_total(&flood_events(t)) >= dropped
    });
    let events = flood_events(slow.text());
    let Some(&Flood::Dropped(last_notice)) = events.last() else {
        panic!("the last thing read is not a notice: {:?}", events.last());
    };
    slow.expect(&format!("[{last_notice} messages dropped]\r\n"));
    assert_eq!(
        dropped_total(&events),
        dropped,
        "the writer or the fast reader lost lines too"
    );
    let got: Vec<usize> = events
        .iter()
        .filter_map(|e| match e {
            Flood::Line(i) => Some(*i),
            Flood::Dropped(_) => None,
        })
        .collect();
    let notices: Vec<&Flood> = events
        .iter()
        .filter(|e| matches!(e, Flood::Dropped(_)))
        .collect();
    assert_eq!(
        got.len() + dropped,
        POSTS,
        "received {} lines and notices {notices:?}",
        got.len()
    );
    assert!(got.windows(2).all(|w| w[0] < w[1]), "lines out of order");
    // A notice comes after the lines its queue held, and counts exactly the lines that follow
    // them and are missing.
    let mut last_line = None;
    for (at, event) in events.iter().enumerate() {
        match *event {
            Flood::Line(i) => last_line = Some(i),
            Flood::Dropped(n) => {
                let before = last_line.expect("a notice before any line");
                let next = events[at + 1..].iter().find_map(|e| match e {
                    Flood::Line(i) => Some(*i),
                    Flood::Dropped(_) => None,
                });
                assert_eq!(
                    next.unwrap_or(POSTS),
                    before + n + 1,
                    "[{n} messages dropped] after line {before}, then line {next:?}"
                );
            }
        }
    }
    // What it was kept is bounded by the kernel buffers (the server caps its send buffer at
    // 64 KiB, which the kernel doubles; ours is tiny), one batch being written and a full queue.
    let kernel_lines = (2 * 64 * 1024 + 2 * RCVBUF) / padding.len();
    assert!(
        got.len() <= kernel_lines + 2 * QUEUE_LIMIT,
        "kept {} lines for a reader that did not read",
        got.len()
    );

    let who = ask(&mut slow, "/who", &on("slow", "flood"));
    assert!(
        who.contains("On this channel: fast, slow, writer\r\n"),
        "{who:?}"
    );
    assert!(!is_chat(&who), "lines after the last notice: {who:?}");
}

#[test]
fn five_hundred_members_disconnecting_at_once_leave_nothing_behind() {
    const CLIENTS: usize = 500;
    const THREADS: usize = 10;
    let server = start_server_with(SHARDS, |c| c.channel_capacity = 0);
    let mut channels = homed_on(0, "mass", 5);
    channels.extend(homed_on(1, "mass", 5));
    // The first member creates every channel and stays in the last one.
    let mut first = user(&server, "mass-first");
    for ch in &channels {
        create(&mut first, "mass-first", ch);
    }

    let threads: Vec<_> = (0..THREADS)
        .map(|t| {
            let addr = server.addr();
            let channels = channels.clone();
            thread::spawn(move || {
                (0..CLIENTS / THREADS)
                    .skip(usize::from(t == 0))
                    .map(|i| {
                        let name = format!("m{t}-{i}");
                        let ch = &channels[(t + i) % channels.len()];
                        let mut c = Client::connect(addr, Kind::Raw);
                        c.create_account(&name, PASSWORD);
                        join(&mut c, &name, ch, ch);
                        c
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let mut clients = vec![first];
    for t in threads {
        clients.extend(t.join().expect("a client thread panicked"));
    }
    assert_eq!(clients.len(), CLIENTS);
    let stats = server.stats();
    assert_eq!(stats.connections(), CLIENTS as u64, "{stats:?}");
    assert_eq!(stats.logged_in(), CLIENTS as u64, "{stats:?}");
    assert_eq!(stats.total().members, CLIENTS as u64, "{stats:?}");
    for (s, shard) in stats.shards.iter().enumerate() {
        assert!(shard.members > 0, "no members on shard {s}: {stats:?}");
    }

    // Half close with a FIN, half with a reset, all at once.
    for (i, c) in clients.into_iter().enumerate() {
        if i % 2 == 0 {
            c.reset();
        } else {
            drop(c);
        }
    }
    wait_until(
        || {
            let s = server.stats();
            s.connections() == 0 && s.logged_in() == 0 && s.total().members == 0
        },
        "every connection, login and membership is gone",
    );

    let mut fresh = user(&server, "fresh");
    let reply = ask(&mut fresh, "/who", &prompt("fresh"));
    assert_eq!(reply, format!("{NOT_ON_A_CHANNEL}{}", prompt("fresh")));
    let mut sorted = channels.clone();
    sorted.sort_by_key(|c| c.to_lowercase());
    let expected: Vec<String> = sorted.iter().map(|c| format!("  #{c} (0)")).collect();
    wait_for_list(&mut fresh, &prompt("fresh"), &expected);
    join(&mut fresh, "fresh", &channels[0], &channels[0]);
    let who = ask(&mut fresh, "/who", &on("fresh", &channels[0]));
    assert!(who.contains("On this channel: fresh\r\n"), "{who:?}");
}

#[test]
fn hostile_channel_names_are_refused_and_logs_stay_in_their_directory() {
    let server = start_server(SHARDS);
    let mut c = user(&server, "namer");
    let p = prompt("namer");
    let logs = server.data_dir().join("logs");
    let before = tree(server.data_dir());

    let long = "a".repeat(33);
    for bad in [
        "../x",
        "a/b",
        "..",
        ".x",
        "./x",
        "a\\b",
        "-x",
        "_x",
        "x..%2f",
        "a\u{202e}b", // right-to-left override
        "a\u{200b}b", // zero-width space
        "a🎉",
        &long,
    ] {
        for verb in ["/create", "/join"] {
            let reply = ask(&mut c, &format!("{verb} {bad}"), &p);
            assert_eq!(reply, format!("{BAD_NAME}{p}"), "{verb} {bad:?}");
        }
    }
    // Control characters, escape sequences and 0xFF never reach a name: the line editor removes
    // them from the line before the command is read, so what is left is checked like any name.
    let cases: [(&[u8], &str); 3] = [
        (b"/create ctl\x01\x02one\r\n", "ctlone"),
        (b"/create esc\x1b[2Jtwo\r\n", "esctwo"),
        (b"/create ff\xff\xffthree\r\n", "ffthree"),
    ];
    for (bytes, name) in cases {
        c.send(bytes);
        c.expect(&format!("Channel #{name} created.\r\n"));
        c.expect(&on("namer", name));
    }
    let reply = ask(&mut c, "/create ..\u{1}", &on("namer", "ffthree"));
    assert!(reply.starts_with(BAD_NAME), "{reply:?}");
    let list = ask(&mut c, "/list", &on("namer", "ffthree"));
    for l in lines_where(list.as_bytes(), |l| l.starts_with("  #")) {
        assert!(
            l.chars().all(|ch| !ch.is_control()) && !l.contains('\u{fffd}'),
            "{l:?}"
        );
    }

    // Names of any script work, match without case, and are logged inside logs/.
    for (name, other_case) in [("çafé", "ÇAFÉ"), ("日本語", "日本語"), ("CON", "con")] {
        create(&mut c, "namer", name);
        let mut other = user(&server, &format!("visitor{}", name.len()));
        join(
            &mut other,
            &format!("visitor{}", name.len()),
            other_case,
            name,
        );
        other.send_line("hello");
        c.expect("says, \"hello\"\r\n");
        let log = log_lines(&server, name);
        assert!(
            log.iter().any(|l| l.ends_with("says, \"hello\"")),
            "#{name}: {log:?}"
        );
    }
    server.flush_logs();

    let after = tree(server.data_dir());
    for (path, is_dir) in &after {
        if before.contains_key(path) {
            continue;
        }
        let full = server.data_dir().join(path);
        assert!(
            full.parent() == Some(logs.as_path()) && !is_dir,
            "{path:?} was created outside {logs:?} (or is a directory)"
        );
        let meta = std::fs::symlink_metadata(&full).expect("reading a log file's metadata");
        assert!(meta.file_type().is_file(), "{path:?} is not a regular file");
    }
    for entry in std::fs::read_dir(&logs).expect("listing logs") {
        let entry = entry.expect("reading logs");
        assert!(
            entry.file_type().unwrap().is_file(),
            "{:?} in logs/ is not a regular file",
            entry.path()
        );
        let name = entry.file_name().to_string_lossy().into_owned();
        assert!(
            name.is_ascii() && !name.starts_with('.'),
            "unexpected log file name {name:?}"
        );
    }
    let con = format!("{}.", file_stem("con"));
    assert!(
        std::fs::read_dir(&logs).unwrap().any(|e| e
            .unwrap()
            .file_name()
            .to_string_lossy()
            .starts_with(&con)),
        "no log for #CON in {logs:?}"
    );
}

#[test]
fn escape_sequences_and_iac_never_reach_other_members() {
    let server = start_server(SHARDS);
    let mut sender = user(&server, "esc-a");
    let mut raw = user(&server, "esc-b");
    let mut mud = server.connect(Kind::Mudlet);
    mud.create_account("esc-c", PASSWORD);
    let mut term = server.connect(Kind::Xterm);
    term.create_account("esc-d", PASSWORD);
    create(&mut sender, "esc-a", "screen");
    for (c, name) in [
        (&mut raw, "esc-b"),
        (&mut mud, "esc-c"),
        (&mut term, "esc-d"),
    ] {
        join(c, name, "screen", "screen");
    }

    // (typed, what members may see: the escape sequences and 0xFF gone)
    let cases: [(&[u8], &[&str]); 5] = [
        (b"clear\x1b[2Jscreen", &["clearscreen"]),
        // OSC: ESC ] and BEL go; the payload may stay as plain text.
        (
            b"title\x1b]0;pwned\x07here",
            &["titlehere", "title0;pwnedhere"],
        ),
        (b"x\xff\xffy", &["xy"]),
        ("8bit\u{9b}31mcsi".as_bytes(), &["8bitcsi"]),
        (b"red\x1b[1;31mtext\x1b[0m", &["redtext"]),
    ];
    for (typed, allowed) in cases {
        let starts: Vec<usize> = [&raw, &mud, &term].iter().map(|c| c.raw().len()).collect();
        let mut bytes = typed.to_vec();
        bytes.extend_from_slice(b"\r\n");
        sender.send(&bytes);
        sender.expect("esc-a says, \"");
        for (c, start) in [&mut raw, &mut mud, &mut term].into_iter().zip(starts) {
            c.expect("esc-a says, \"");
            let line = c.expect("\"\r\n");
            let said = line.strip_suffix("\"\r\n").unwrap();
            assert!(
                allowed.contains(&said),
                "{:?} arrived as {said:?}",
                String::from_utf8_lossy(typed)
            );
            // No ESC, BEL or 0xFF in the bytes of the line itself.
            let wire = &c.raw()[start..];
            let at = common::find(wire, b"esc-a says, \"").expect("the line on the wire");
            let end = at + common::find(&wire[at..], b"\r\n").unwrap();
            let on_wire = &wire[at..end];
            assert!(
                !on_wire.iter().any(|&b| b == 0x1b || b == 0x07 || b == 0xff),
                "raw bytes {on_wire:?}"
            );
        }
    }
    // Line-mode members never get an escape sequence at all, nor 0xFF outside telnet commands.
    assert!(
        !raw.text().contains(&0x1b),
        "escape sequence sent to a raw client"
    );
    assert!(
        !mud.text().contains(&0x1b),
        "escape sequence sent to a MUD client"
    );
    for c in [&raw, &mud] {
        assert!(!c.text().contains(&0xff), "a 0xFF data byte was sent");
    }
}

#[test]
fn a_user_logged_in_twice_is_two_members_but_one_name() {
    let server = start_server_with(SHARDS, |c| c.channel_capacity = 0);
    let mut first = user(&server, "twin");
    let mut second = server.connect(Kind::Raw);
    second.login("twin", PASSWORD);
    let mut other = user(&server, "Alice");
    let mut zed = user(&server, "bob");

    create(&mut first, "twin", "pair");
    join(&mut second, "twin", "pair", "pair");
    join(&mut other, "Alice", "pair", "pair");
    join(&mut zed, "bob", "pair", "pair");
    assert_eq!(server.stats().total().members, 4);

    let who = ask(&mut first, "/who", &on("twin", "pair"));
    assert!(
        who.contains("On this channel: Alice, bob, twin\r\n"),
        "{who:?}"
    );
    let list = ask(&mut second, "/list", &on("twin", "pair"));
    assert!(list.contains("Channels:\r\n  #pair (4)\r\n"), "{list:?}");

    // Both connections hear what either says.
    second.send_line("from the second");
    first.expect("twin says, \"from the second\"\r\n");
    second.expect("twin says, \"from the second\"\r\n");

    // One of them leaving keeps the name on the channel.
    let reply = ask(&mut first, "/exit", &prompt("twin"));
    assert!(reply.contains("You left #pair\r\n"), "{reply:?}");
    other.expect("twin has left #pair\r\n");
    let who = ask(&mut other, "/who", &on("Alice", "pair"));
    assert!(
        who.contains("On this channel: Alice, bob, twin\r\n"),
        "{who:?}"
    );
    assert_eq!(server.stats().total().members, 3);
}

#[test]
fn disconnecting_in_the_middle_of_a_join_leaves_no_member_behind() {
    const AT_LEAST_PER_SHARD: usize = 8;
    let server = start_server_with(SHARDS, |c| c.channel_capacity = 0);
    let channels = [
        homed_on(0, "midjoin", 1).remove(0),
        homed_on(1, "midjoin", 1).remove(0),
    ];
    let mut stayers: Vec<Client> = channels
        .iter()
        .enumerate()
        .map(|(i, ch)| {
            let name = format!("stayer{i}");
            let mut c = user(&server, &name);
            create(&mut c, &name, ch);
            c
        })
        .collect();
    user(&server, "ghost");

    let mut per_shard = [0usize; SHARDS];
    let mut n = 0;
    while per_shard.iter().any(|&k| k < AT_LEAST_PER_SHARD) {
        assert!(
            n < 200,
            "200 connections did not cover both shards: {per_shard:?}"
        );
        let (mut c, shard) = server.connect_on_shard();
        per_shard[shard] += 1;
        let channel = &channels[n % 2];
        match n % 3 {
            // Logged in, then the join and a FIN at once.
            0 => {
                c.login("ghost", PASSWORD);
                c.send_line(&format!("/join {channel}"));
                drop(c);
            }
            // The same with a reset.
            1 => {
                c.login("ghost", PASSWORD);
                c.send_line(&format!("/join {channel}"));
                c.reset();
            }
            // Everything in one write before the first prompt, then a FIN.
            _ => {
                c.send(format!("ghost\r\n{PASSWORD}\r\n/join {channel}\r\n").as_bytes());
                drop(c);
            }
        }
        n += 1;
    }
    wait_until(
        || {
            let s = server.stats();
            s.connections() == 2 && s.logged_in() == 2 && s.total().members == 2
        },
        "only the two real members are left",
    );

    let mut expected: Vec<String> = channels.iter().map(|c| format!("  #{c} (1)")).collect();
    expected.sort_by_key(|l| l.to_lowercase());
    wait_for_list(&mut stayers[0], &on("stayer0", &channels[0]), &expected);
    for (i, c) in stayers.iter_mut().enumerate() {
        let name = format!("stayer{i}");
        let who = ask(c, "/who", &on(&name, &channels[i]));
        assert!(
            who.contains(&format!("On this channel: {name}\r\n")),
            "{who:?}"
        );
    }
}

#[test]
fn channel_commands_answer_as_documented() {
    let server = start_server(SHARDS);
    let mut a = user(&server, "doc-a");
    let mut b = user(&server, "doc-b");
    let p = prompt("doc-a");

    let list = ask(&mut a, "/list", &p);
    assert_eq!(
        list,
        format!("There are no channels yet. Use /create <channel> to make one.\r\n{p}")
    );
    for line in ["hello", "/who", "/exit", ";waves", "/sing la"] {
        let reply = ask(&mut a, line, &p);
        assert_eq!(reply, format!("{NOT_ON_A_CHANNEL}{p}"), "{line:?}");
    }
    let reply = ask(&mut a, "/join Nowhere", &p);
    assert_eq!(
        reply,
        format!("Channel #Nowhere does not exist. Use /create Nowhere to make it.\r\n{p}")
    );

    create(&mut a, "doc-a", "Talk");
    let reply = ask(&mut b, "/create tALK", &prompt("doc-b"));
    assert_eq!(
        reply,
        format!("Channel already exists.\r\n{}", prompt("doc-b"))
    );
    join(&mut b, "doc-b", "#talk", "Talk");
    a.expect("doc-b has joined #Talk\r\n");
    let reply = ask(&mut a, "/join #Talk", &on("doc-a", "Talk"));
    assert!(reply.contains("You are already on #Talk.\r\n"), "{reply:?}");

    for (typed, seen) in [
        ("/say hi there", "doc-a says, \"hi there\""),
        ("'quoted", "doc-a says, \"quoted\""),
        (";waves", "doc-a waves"),
        ("/emote bows", "doc-a bows"),
        ("/think hmm", "doc-a thinks . o O ( hmm )"),
        ("/sing la", "doc-a sings ~ ~ la ~ ~"),
    ] {
        a.send_line(typed);
        a.expect(&format!("{seen}\r\n"));
        b.expect(&format!("{seen}\r\n"));
    }

    let reply = ask(&mut b, "/exit", &prompt("doc-b"));
    assert_eq!(reply, format!("You left #Talk\r\n{}", prompt("doc-b")));
    a.expect("doc-b has left #Talk\r\n");
    let list = ask(&mut b, "/list", &prompt("doc-b"));
    assert_eq!(
        list,
        format!("Channels:\r\n  #Talk (1)\r\n{}", prompt("doc-b"))
    );

    // The log has the joins, the talk and the leave, exactly as members saw them.
    let log = log_lines(&server, "Talk");
    let seen = lines_where(a.text(), is_channel_line);
    let seen: Vec<String> = seen
        .into_iter()
        .chain(
            ["doc-a waves", "doc-a bows", "doc-a thinks . o O ( hmm )"]
                .into_iter()
                .map(String::from),
        )
        .collect();
    for line in &seen {
        assert!(log.contains(line), "{line:?} not in the log {log:?}");
    }
    assert_eq!(log[0], "doc-a has joined #Talk");
    assert_eq!(log.last().unwrap(), "doc-b has left #Talk");
}

/// Regression: `/join` of the channel one is on, typed in another case, once answered with the name
/// as typed instead of the channel's display name.
#[test]
fn already_on_a_channel_names_it_as_created() {
    let server = start_server(SHARDS);
    let mut a = user(&server, "case-a");
    create(&mut a, "case-a", "Talk");
    let reply = ask(&mut a, "/join TALK", &on("case-a", "Talk"));
    assert_eq!(
        reply,
        format!("You are already on #Talk.\r\n{}", on("case-a", "Talk"))
    );
}

/// Regression: lines were once dropped for members that read everything at once, the sender
/// included, when one paste held more lines than the queue limit: the sender's session posted every
/// line of one read without yielding, and each member shard's drain task queued the deliveries back
/// to back. Sessions now yield between commands and drain tasks between small batches.
#[test]
fn a_paste_longer_than_the_queue_limit_reaches_members_that_keep_up() {
    const PASTE: usize = 150;
    let server = start_server(SHARDS);
    let mut writer = user(&server, "paster");
    let mut reader = user(&server, "keeper");
    create(&mut writer, "paster", "paste");
    join(&mut reader, "keeper", "paste", "paste");
    writer.expect("keeper has joined #paste\r\n");
    let mut bytes = Vec::new();
    for i in 0..PASTE {
        bytes.extend_from_slice(format!("line {i}\r\n").as_bytes());
    }
    writer.send(&bytes);
    let last = format!("paster says, \"line {}\"\r\n", PASTE - 1);
    for c in [&mut writer, &mut reader] {
        let (found, _) = c.expect_any(&[&last, " messages dropped]"]);
        assert_eq!(found, 0, "lines dropped for a member that keeps up");
    }
    assert_eq!(server.stats().total().dropped, 0);
}

/// Regression: 300 logged-in clients sent `/join` to one channel and reset their connections at
/// once, without reading the answer. Joins that were still on their way to the channel's home when
/// the session ended left a member behind (`/list` showed it), and a live user's `/join` to that
/// channel was never answered.
#[test]
fn joins_racing_with_resets_leave_no_member_and_never_wedge_the_channel() {
    const CLIENTS: usize = 300;
    const THREADS: usize = 30;
    let server = start_server_with(SHARDS, |c| c.channel_capacity = 0);
    let mut owner = user(&server, "owner");
    create(&mut owner, "owner", "dmj");
    assert_eq!(
        ask(&mut owner, "/exit", &prompt("owner")),
        format!("You left #dmj\r\n{}", prompt("owner"))
    );

    // Log everyone in first (raw and character-mode clients alike), then let them all go at once.
    let start = Arc::new(Barrier::new(THREADS));
    let threads: Vec<_> = (0..THREADS)
        .map(|t| {
            let addr = server.addr();
            let start = start.clone();
            thread::spawn(move || {
                let clients: Vec<Client> = (0..CLIENTS / THREADS)
                    .map(|i| {
                        let name = format!("r{t}-{i}");
                        let kind = if i % 2 == 0 { Kind::Raw } else { Kind::Xterm };
                        let mut c = Client::connect(addr, kind);
                        c.create_account(&name, PASSWORD);
                        c
                    })
                    .collect();
                start.wait();
                for mut c in clients {
                    c.send_line("/join dmj");
                    c.reset();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("a client thread panicked");
    }
    wait_until(
        || {
            let s = server.stats();
            s.connections() == 1 && s.total().members == 0
        },
        "only the owner is connected, and on no channel",
    );
    wait_for_list(&mut owner, &prompt("owner"), &["  #dmj (0)".to_string()]);

    let mut live = user(&server, "live");
    join(&mut live, "live", "dmj", "dmj");
    let who = ask(&mut live, "/who", &on("live", "dmj"));
    assert!(who.contains("On this channel: live\r\n"), "{who:?}");
    join(&mut owner, "owner", "dmj", "dmj");
    let who = ask(&mut owner, "/who", &on("owner", "dmj"));
    assert!(who.contains("On this channel: live, owner\r\n"), "{who:?}");
}

/// Lines that arrive one at a time (the seed's pattern) each start a fresh write. Once a reader stops
/// reading and its socket fills, those writes must leave the lines in the bounded queue, where they
/// are dropped, rather than gather them in the unsent output: what the server keeps for a reader
/// that never reads is its kernel buffers and one queue.
#[test]
fn a_reader_that_stops_reading_is_kept_no_more_than_its_queue_one_line_at_a_time() {
    const POSTS: usize = 1500;
    const QUEUE_LIMIT: usize = 20;
    const RCVBUF: usize = 4096;
    let server = start_server_with(SHARDS, |c| c.queue_limit = QUEUE_LIMIT as u32);
    let mut writer = user(&server, "writer");
    let mut slow = Client::connect_with_recv_buffer(server.addr(), Kind::Raw, RCVBUF);
    slow.create_account("slow", PASSWORD);
    create(&mut writer, "writer", "trickle");
    join(&mut slow, "slow", "trickle", "trickle");
    writer.expect("slow has joined #trickle\r\n");
    let queued_or_dropped = || {
        let s = server.stats().total();
        (s.deliveries + s.dropped) as usize
    };
    let before = queued_or_dropped();

    let padding = "x".repeat(400);
    for i in 0..POSTS {
        writer.send_line(&format!("{i:05} {padding}"));
        writer.expect(&format!("writer says, \"{i:05} {padding}\"\r\n"));
    }
    let dropped = || server.stats().total().dropped as usize;
    wait_until(
        || queued_or_dropped() - before == 2 * POSTS,
        "every line is queued or dropped for each member",
    );
    assert!(dropped() > 0, "nothing was dropped: {:?}", server.stats());
    slow.read_until("its drop notices add up to the dropped count", |t| {
        dropped_total(&flood_events(t)) >= dropped()
    });
    let events = flood_events(slow.text());
    let got = events
        .iter()
        .filter(|e| matches!(e, Flood::Line(_)))
        .count();
    assert_eq!(got + dropped_total(&events), POSTS);
    let kernel_lines = (2 * 64 * 1024 + 2 * RCVBUF) / padding.len();
    assert!(
        got <= kernel_lines + 2 * QUEUE_LIMIT,
        "kept {got} lines for a reader that did not read (kernel buffers hold about {kernel_lines})"
    );
}

/// With rings of two slots, a burst across shards fills them at once: senders must wait for room
/// and be woken when the other shard has taken some (the path a ring full to its last slot takes),
/// and every line still reaches every member, in one order, with nothing dropped.
#[test]
fn rings_of_two_slots_carry_a_burst_across_shards_in_order() {
    const PASTE: usize = 120;
    let server = start_server_with(SHARDS, |c| {
        c.ring_slots = Some(2);
        c.channel_capacity = 0;
    });
    // Members on both shards, the channel homed on shard 1, the writer on shard 0.
    let channel = homed_on(1, "tiny", 1).remove(0);
    let mut members = Vec::new();
    let mut per_shard = [0usize; SHARDS];
    let mut n = 0;
    while per_shard.iter().any(|&k| k < 2) {
        assert!(n < 100, "100 connections did not cover both shards");
        let (mut c, shard) = server.connect_on_shard();
        let name = format!("tiny{n}");
        c.create_account(&name, PASSWORD);
        if n == 0 {
            create(&mut c, &name, &channel);
        } else {
            join(&mut c, &name, &channel, &channel);
        }
        per_shard[shard] += 1;
        members.push((c, name, shard));
        n += 1;
    }
    let writer = members
        .iter()
        .position(|m| m.2 == 0)
        .expect("a member on shard 0");
    let last = members.last().map(|m| m.1.clone()).unwrap();
    let others = members.len() - 1;
    for (c, _, _) in members.iter_mut().take(others) {
        c.expect(&format!("{last} has joined #{channel}\r\n"));
    }
    let mut bytes = Vec::new();
    for i in 0..PASTE {
        bytes.extend_from_slice(format!("burst {i:03}\r\n").as_bytes());
    }
    members[writer].0.send(&bytes);
    let who = members[writer].1.clone();
    let expected: Vec<String> = (0..PASTE)
        .map(|i| format!("{who} says, \"burst {i:03}\""))
        .collect();
    for (c, name, _) in members.iter_mut() {
        c.expect(&format!("{who} says, \"burst {:03}\"\r\n", PASTE - 1));
        let got = lines_where(c.text(), |l| {
            l.starts_with(&format!("{who} says, \"burst "))
        });
        assert_eq!(
            got, expected,
            "{name} saw the burst out of order or with gaps"
        );
    }
    assert_eq!(server.stats().total().dropped, 0);
}

/// Members whose connections are on the other shard move to their channel's home when they join
/// (docs/ARCHITECTURE.md, "A session that moves home"). Here each joins while a talker's lines are on
/// their way, so lines reach its old shard after it left: every member still sees one unbroken
/// run of the channel's lines, in the log's order, up to the last one. Afterwards every member is on
/// the home's shard, and what a moved member types (even half a line typed before the move) works.
#[test]
fn members_moving_to_their_channels_home_lose_no_line_and_keep_the_order() {
    const JOINERS: usize = 12;
    const BURST: usize = 6;
    let server = start_server_with(SHARDS, |c| c.channel_capacity = 0);
    let channel = homed_on(0, "home", 1).remove(0);
    let mut talker = user(&server, "talker");
    create(&mut talker, "talker", &channel);

    // Joiners from both shards, at least a few from the shard that is not the channel's home.
    let mut joiners = Vec::new();
    let mut away = 0;
    for n in 0.. {
        if joiners.len() >= JOINERS && away >= 4 {
            break;
        }
        assert!(n < 64, "64 connections gave {away} on shard 1");
        let (mut c, shard) = server.connect_on_shard();
        let name = format!("mover{n}");
        c.create_account(&name, PASSWORD);
        away += usize::from(shard == 1);
        joiners.push((c, name));
    }

    // Each join goes out with lines right behind it, so the move races the talker's lines.
    let mut said = 0;
    for (c, _) in &mut joiners {
        c.send_line(&format!("/join {channel}"));
        for _ in 0..BURST {
            talker.send_line(&format!("line {said}"));
            said += 1;
        }
    }
    // Every join is in the channel's order before the last line, which each joiner must then see.
    for (c, _) in &mut joiners {
        c.expect(&format!("You have joined #{channel}\r\n"));
    }
    talker.send_line("last");
    for (c, _) in &mut joiners {
        c.expect("talker says, \"last\"\r\n");
    }
    let log = log_lines(&server, &channel);
    let log_chat: Vec<String> = log.iter().filter(|l| is_chat(l)).cloned().collect();
    assert_eq!(log_chat.len(), said + 1, "{log:?}");
    for (c, name) in &joiners {
        let seen = lines_where(c.text(), is_channel_line);
        assert!(
            is_contiguous_in(&seen, &log),
            "{name} saw {seen:?}, the log has {log:?}"
        );
        let chat = lines_where(c.text(), is_chat);
        assert!(
            log_chat.ends_with(&chat),
            "{name} missed lines: saw {chat:?}, the log has {log_chat:?}"
        );
    }

    // Every member ends up on the home's shard, counted once. (A joiner may have seen the last
    // line before its session left the other shard, so the counters are polled.)
    let everyone = joiners.len() as u64 + 1;
    wait_until(
        || {
            let s = server.stats();
            s.shards[0].members == everyone
                && s.shards[1].members == 0
                && s.shards[1].connections == 0
                && s.connections() == everyone
                && s.logged_in() == everyone
        },
        "every member on the channel's home shard",
    );

    // A moved member talks, asks who is on, and moves on to a channel homed on the other shard.
    let (mut mover, name) = joiners.pop().unwrap();
    mover.send_line("after the move");
    talker.expect(&format!("{name} says, \"after the move\"\r\n"));
    mover.expect(&format!("{name} says, \"after the move\"\r\n"));
    mover.send_line("/who");
    mover.expect("On this channel: ");
    let who = mover.expect("\r\n");
    let names: Vec<&str> = who.trim_end().split(", ").collect();
    assert_eq!(names.len(), joiners.len() + 2, "{who:?}");
    assert!(
        names.contains(&name.as_str()) && names.contains(&"talker"),
        "{who:?}"
    );
    let elsewhere = homed_on(1, "away", 1).remove(0);
    create(&mut talker, "talker", &elsewhere);
    mover.send_line(&format!("/join {elsewhere}"));
    mover.expect(&format!("You have joined #{elsewhere}\r\n"));
    mover.expect(&on(&name, &elsewhere));
    talker.send_line("over here");
    mover.expect("talker says, \"over here\"\r\n");
    let stats = server.stats();
    assert_eq!(stats.shards[1].members, 2, "{stats:?}");
}

/// A terminal in character mode moves in the middle of typing: what it typed before the move is
/// finished after it and reaches the channel whole.
#[test]
fn a_terminal_moves_home_with_its_half_typed_line() {
    let server = start_server_with(SHARDS, |c| c.channel_capacity = 0);
    let channel = homed_on(0, "typing", 1).remove(0);
    let mut talker = user(&server, "listener");
    create(&mut talker, "listener", &channel);
    // Terminals until one lands on shard 1, away from the channel's home.
    let mut n = 0;
    let (mut term, name) = loop {
        assert!(n < 64, "64 terminals all landed on shard 0");
        let name = format!("typist{n}");
        n += 1;
        let before = server.stats();
        let mut c = server.connect(Kind::Xterm);
        c.create_account(&name, PASSWORD);
        if server.stats().shards[1].accepted > before.shards[1].accepted {
            break (c, name);
        }
    };
    term.send(format!("/join {channel}\r\nhalf").as_bytes());
    term.expect(&format!("You have joined #{channel}"));
    term.send(b"-typed\r\n");
    talker.expect(&format!("{name} says, \"half-typed\"\r\n"));
    let stats = server.stats();
    assert_eq!(stats.shards[1].members, 0, "{stats:?}");
}

/// Shutdown while users keep creating and switching channels homed on either shard, so members
/// move home all the time: every one of them is told the server is shutting down and disconnected,
/// and the server stops. (Which sessions are between shards at that instant is up to timing; a
/// session that arrives at a shard whose sessions have all gone is told the same before it closes.)
#[test]
fn a_shutdown_while_members_move_home_tells_everyone_and_stops() {
    const CLIENTS: usize = 60;
    let server = start_server_with(SHARDS, |c| c.channel_capacity = 0);
    let mut clients = Vec::new();
    for i in 0..CLIENTS {
        let mut c = user(&server, &format!("leaver{i}"));
        // Channels of its own, homed on both shards, so every switch is a join from elsewhere.
        let mut burst = String::new();
        for (k, ch) in homed_on(i % 2, &format!("sd{i}x"), 8)
            .into_iter()
            .chain(homed_on(1 - i % 2, &format!("sd{i}y"), 8))
            .enumerate()
        {
            burst.push_str(&format!("/create {ch}\r\nsaid {k}\r\n"));
        }
        c.send(burst.as_bytes());
        clients.push(c);
    }
    server.shut_down_telling(&mut clients);
}

/// A member that has just moved and joins another channel before the lines it left behind have
/// come waits for them, then moves on to the new channel's home. Three shards, so the answer to the
/// second join (from a third shard) can overtake the lines left behind: both joins go in one write
/// from a user on shard 2, to channels homed on shards 0 and 1.
#[test]
fn a_member_joining_again_right_after_a_move_still_moves_home() {
    const THREE: usize = 3;
    let server = start_server_with(THREE, |c| c.channel_capacity = 0);
    let homed = |shard: usize| {
        (0..)
            .map(|i| format!("hop{i}"))
            .find(|n| home_of(&ChannelName::new(n).unwrap(), THREE).index() == shard)
            .unwrap()
    };
    let (here, there) = (homed(0), homed(1));
    let mut owner = user(&server, "hopowner");
    create(&mut owner, "hopowner", &here);
    create(&mut owner, "hopowner", &there);
    let mut rounds = 0;
    for n in 0.. {
        if rounds == 30 {
            break;
        }
        assert!(
            n < 1000,
            "only {rounds} of 1000 connections landed on shard 2"
        );
        let (mut c, shard) = server.connect_on_shard();
        if shard != 2 {
            continue;
        }
        rounds += 1;
        let name = format!("hopper{n}");
        c.create_account(&name, PASSWORD);
        c.send(format!("/join {here}\r\n/join {there}\r\n").as_bytes());
        c.expect(&format!("You have joined #{here}\r\n"));
        c.expect(&format!("You have joined #{there}\r\n"));
        c.expect(&on(&name, &there));
        // The owner (on #there now) and the hopper: both on #there's home shard in the end.
        wait_until(
            || {
                let s = server.stats();
                s.shards[1].members == 2 && s.shards[0].members == 0 && s.shards[2].members == 0
            },
            "the hopper on #there's home shard",
        );
        owner.send_line(&format!("round {n}"));
        c.expect(&format!("hopowner says, \"round {n}\"\r\n"));
        c.send_line("/quit");
        c.expect_closed();
        wait_until(
            || server.stats().total().members == 1,
            "the hopper gone from #there",
        );
    }
}

/// Whoever joins a channel is first shown the last lines said in it (`--history-lines`, 20 by
/// default), marked, oldest first, whichever shard it is homed on; joins and leaves are not kept,
/// and with `--history-lines 0` nothing is shown.
#[test]
fn a_joiner_sees_the_channels_last_lines_marked_as_history() {
    for (kept, channel_shard) in [(20u32, 0usize), (20, 1), (0, 0)] {
        let server = start_server_with(SHARDS, |c| c.history_lines = kept);
        let channel = homed_on(channel_shard, "hist", 1).remove(0);
        let mut talker = user(&server, "talker");
        create(&mut talker, "talker", &channel);
        for n in 0..25 {
            talker.send_line(&format!("line {n}"));
            talker.expect(&format!("talker says, \"line {n}\"\r\n"));
        }
        let mut late = user(&server, "late");
        late.send_line(&format!("/join {channel}"));
        late.expect(&format!("You have joined #{channel}\r\n"));
        talker.send_line("live");
        late.expect("talker says, \"live\"\r\n");
        let seen: Vec<String> = lines_where(late.text(), |l| l.contains("talker says"));
        let mut want: Vec<String> = (25 - kept as usize..25)
            .map(|n| format!("[history] talker says, \"line {n}\""))
            .collect();
        want.push("talker says, \"live\"".to_string());
        assert_eq!(
            seen, want,
            "history {kept}, channel on shard {channel_shard}"
        );
    }
}
