//! `GET /metrics` against a real server: every line of what it answers is parsed as the
//! Prometheus text format, and the values are checked against what the clients did.

mod common;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::{start_server_with, Client, Kind, TestServer, DEADLINE};

const SHARDS: usize = 2;
const PASSWORD: &str = "secret-pass";

/// One sample: its name, its labels, its value.
#[derive(Debug)]
struct Sample {
    name: String,
    labels: HashMap<String, String>,
    value: f64,
}

/// A scrape, parsed.
#[derive(Debug, Default)]
struct Scrape {
    /// Family name to its type.
    types: HashMap<String, String>,
    samples: Vec<Sample>,
}

impl Scrape {
    /// Samples of `name` whose labels include every one of `with`.
    fn values(&self, name: &str, with: &[(&str, &str)]) -> Vec<f64> {
        self.samples
            .iter()
            .filter(|s| s.name == name)
            .filter(|s| {
                with.iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(v))
            })
            .map(|s| s.value)
            .collect()
    }

    /// The sum of [`Scrape::values`]; fails if there are none.
    fn sum(&self, name: &str, with: &[(&str, &str)]) -> f64 {
        let values = self.values(name, with);
        assert!(!values.is_empty(), "no sample {name} {with:?}");
        values.iter().sum()
    }
}

/// Sends `request` to the metrics endpoint and returns the status line, the headers (lower-cased
/// names) and the body.
fn http(addr: SocketAddr, request: &str) -> (String, HashMap<String, String>, String) {
    let mut stream = TcpStream::connect(addr).expect("connecting to the metrics endpoint");
    stream.set_read_timeout(Some(DEADLINE)).unwrap();
    stream.write_all(request.as_bytes()).unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).expect("reading the answer");
    let answer = String::from_utf8(answer).expect("the answer is UTF-8");
    let (head, body) = answer.split_once("\r\n\r\n").expect("headers end");
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap().to_string();
    let headers = lines
        .map(|l| {
            let (k, v) = l.split_once(':').expect("a header line");
            (k.trim().to_ascii_lowercase(), v.trim().to_string())
        })
        .collect();
    (status, headers, body.to_string())
}

/// Scrapes `/metrics` and parses every line, checking the format as it goes.
fn scrape(addr: SocketAddr) -> Scrape {
    let (status, headers, body) = http(addr, "GET /metrics HTTP/1.0\r\n\r\n");
    assert_eq!(status, "HTTP/1.0 200 OK");
    assert_eq!(
        headers["content-type"],
        "text/plain; version=0.0.4; charset=utf-8"
    );
    assert_eq!(headers["content-length"], body.len().to_string());
    parse(&body)
}

fn parse(body: &str) -> Scrape {
    let mut scrape = Scrape::default();
    let mut helped = Vec::new();
    for line in body.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').expect("HELP name text");
            assert!(!help.is_empty(), "{line}");
            helped.push(name.to_string());
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("TYPE name kind");
            assert!(["counter", "gauge", "histogram"].contains(&kind), "{line}");
            assert_eq!(
                helped.last().map(String::as_str),
                Some(name),
                "HELP before TYPE: {line}"
            );
            assert!(
                scrape
                    .types
                    .insert(name.to_string(), kind.to_string())
                    .is_none(),
                "family {name} declared twice"
            );
        } else {
            assert!(!line.starts_with('#'), "an unknown comment: {line}");
            scrape.samples.push(parse_sample(line));
        }
    }
    for (name, kind) in &scrape.types {
        assert!(name.starts_with("ringtalk_"), "{name} is not prefixed");
        assert!(
            name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
            "{name}"
        );
        assert_eq!(
            kind == "counter",
            name.ends_with("_total"),
            "{name}: {kind}"
        );
    }
    for sample in &scrape.samples {
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|suffix| {
                let base = sample.name.strip_suffix(suffix)?;
                (scrape.types.get(base).map(String::as_str) == Some("histogram")).then_some(base)
            })
            .unwrap_or(&sample.name);
        assert!(
            scrape.types.contains_key(family),
            "{} has no TYPE",
            sample.name
        );
    }
    scrape
}

/// `name{label="value",...} number` or `name number`.
fn parse_sample(line: &str) -> Sample {
    let name_end = line
        .find(['{', ' '])
        .unwrap_or_else(|| panic!("no value: {line}"));
    let name = line[..name_end].to_string();
    let mut labels = HashMap::new();
    let mut rest = &line[name_end..];
    if let Some(inner) = rest.strip_prefix('{') {
        let mut chars = inner.char_indices();
        loop {
            let (start, c) = chars.next().unwrap_or_else(|| panic!("unclosed: {line}"));
            if c == '}' {
                rest = &inner[start + 1..];
                break;
            }
            let start = if c == ',' {
                chars.next().unwrap().0
            } else {
                start
            };
            let eq = inner[start..]
                .find("=\"")
                .unwrap_or_else(|| panic!("{line}"))
                + start;
            let key = inner[start..eq].to_string();
            for _ in start..eq + 1 {
                chars.next();
            }
            let mut value = String::new();
            loop {
                match chars
                    .next()
                    .unwrap_or_else(|| panic!("unclosed value: {line}"))
                    .1
                {
                    '"' => break,
                    '\\' => match chars.next().unwrap().1 {
                        'n' => value.push('\n'),
                        c => value.push(c),
                    },
                    c => value.push(c),
                }
            }
            assert!(labels.insert(key, value).is_none(), "a label twice: {line}");
        }
    }
    let value = rest.strip_prefix(' ').unwrap_or_else(|| panic!("{line}"));
    let value: f64 = match value {
        "+Inf" => f64::INFINITY,
        v => v.parse().unwrap_or_else(|_| panic!("not a number: {line}")),
    };
    Sample {
        name,
        labels,
        value,
    }
}

/// Scrapes until `done` holds of a scrape; fails after [`DEADLINE`].
fn scrape_until(addr: SocketAddr, what: &str, done: impl Fn(&Scrape) -> bool) -> Scrape {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let scrape = scrape(addr);
        if done(&scrape) {
            return scrape;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting until {what}: {scrape:?}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Checks a histogram's samples: buckets cumulative and ending in `+Inf`, which equals `_count`.
fn check_histogram(scrape: &Scrape, name: &str, with: &[(&str, &str)]) -> f64 {
    let buckets: Vec<&Sample> = scrape
        .samples
        .iter()
        .filter(|s| s.name == format!("{name}_bucket"))
        .filter(|s| {
            with.iter()
                .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(v))
        })
        .collect();
    assert!(buckets.len() > 2, "{name} {with:?} has buckets");
    let mut last = (f64::NEG_INFINITY, 0.0);
    for b in &buckets {
        let le: f64 = match b.labels["le"].as_str() {
            "+Inf" => f64::INFINITY,
            le => le.parse().unwrap(),
        };
        assert!(le > last.0, "{name}: bounds rise");
        assert!(b.value >= last.1, "{name}: counts are cumulative");
        last = (le, b.value);
    }
    assert_eq!(last.0, f64::INFINITY, "{name} ends in +Inf");
    let count = scrape.sum(&format!("{name}_count"), with);
    assert_eq!(last.1, count, "{name}: +Inf equals _count");
    assert!(scrape.sum(&format!("{name}_sum"), with) >= 0.0);
    count
}

fn user(server: &TestServer, name: &str) -> Client {
    let mut c = server.connect(Kind::Raw);
    c.create_account(name, PASSWORD);
    c
}

#[test]
fn a_scrape_of_a_real_server_parses_and_counts_what_its_users_did() {
    let server = start_server_with(SHARDS, |c| {
        c.metrics_listen = Some("127.0.0.1:0".parse().unwrap());
    });
    let addr = server.metrics_addr().expect("metrics are on");

    let mut alice = user(&server, "alice");
    let mut bob = user(&server, "bob");
    let mut guesser = server.connect(Kind::Raw);
    guesser.expect("Username: ");
    guesser.send_line("alice");
    guesser.expect("Password: ");
    guesser.send_line("not-her-password");
    guesser.expect("Incorrect password.\r\n");

    alice.send_line("/create room");
    alice.expect("You have joined #room\r\n");
    bob.send_line("/join room");
    bob.expect("You have joined #room\r\n");
    alice.send_line("hello there");
    bob.expect("alice says, \"hello there\"");

    // Logins are counted before the users are told, lines and deliveries before anyone reads
    // them; the logged-in gauge goes up just after the prompt is sent.
    let scrape = scrape_until(addr, "both users are counted logged in", |s| {
        s.sum("ringtalk_logged_in_users", &[]) == 2.0
    });
    assert_eq!(scrape.values("ringtalk_logged_in_users", &[]).len(), SHARDS);
    assert_eq!(scrape.values("ringtalk_shard_up", &[]), vec![1.0; SHARDS]);
    assert!(scrape.sum("ringtalk_connections", &[]) >= 3.0);
    assert!(scrape.sum("ringtalk_connections_accepted_total", &[]) >= 3.0);
    assert_eq!(
        scrape.sum("ringtalk_logins_total", &[("outcome", "new_account")]),
        2.0
    );
    assert_eq!(
        scrape.sum("ringtalk_logins_total", &[("outcome", "bad_password")]),
        1.0
    );
    assert_eq!(
        scrape.sum("ringtalk_logins_total", &[("outcome", "ok")]),
        0.0
    );
    assert_eq!(scrape.sum("ringtalk_channels", &[]), 1.0);
    assert_eq!(scrape.sum("ringtalk_channel_members", &[]), 2.0);
    // Two joins and the line are ordered; alice hears bob join, bob hears the line.
    let lines = scrape.sum("ringtalk_lines_total", &[]);
    let deliveries = scrape.sum("ringtalk_deliveries_total", &[]);
    assert!(
        lines >= 3.0 && deliveries >= 2.0,
        "{lines} lines, {deliveries} deliveries"
    );
    for kind in ["queue", "ring", "log"] {
        assert_eq!(scrape.sum("ringtalk_dropped_total", &[("kind", kind)]), 0.0);
    }
    assert!(scrape
        .values("ringtalk_dropped_total", &[("kind", "bridge")])
        .is_empty());
    assert_eq!(scrape.types["ringtalk_limit_hits_total"], "counter");
    assert_eq!(
        scrape.values("ringtalk_limit_hits_total", &[]).len(),
        ringtalk::defences::Limit::ALL.len()
    );
    assert!(scrape.values("ringtalk_worker_queue_depth", &[]).len() == 1);
    assert!(scrape.values("ringtalk_cluster_nodes", &[]).is_empty());
    // Two hashes and one check, at least.
    assert!(check_histogram(&scrape, "ringtalk_bcrypt_seconds", &[]) >= 3.0);
    // Bob has read the line: its write was counted before he could.
    let mut written = 0.0;
    for shard in 0..SHARDS {
        let shard = shard.to_string();
        written += check_histogram(
            &scrape,
            "ringtalk_delivery_latency_seconds",
            &[("shard", &shard)],
        );
    }
    assert!(written >= 1.0, "the delivery was timed");

    // Other paths and methods, and garbage.
    let (status, headers, _) = http(addr, "GET /other HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(status, "HTTP/1.0 404 Not Found");
    assert!(headers.contains_key("content-length"));
    let (status, _, _) = http(addr, "POST /metrics HTTP/1.1\r\n\r\n");
    assert_eq!(status, "HTTP/1.0 405 Method Not Allowed");
    let (status, _, _) = http(addr, "hello\r\n\r\n");
    assert_eq!(status, "HTTP/1.0 400 Bad Request");
    // Headers that do not end within the limit (all of it taken, so the close resets nothing).
    let endless = format!("GET /{}", "x".repeat(ringtalk::metrics::MAX_REQUEST - 5));
    let (status, _, _) = http(addr, &endless);
    assert_eq!(status, "HTTP/1.0 400 Bad Request");

    // The endpoint goes with the server, and does not hold it up.
    drop((alice, bob, guesser));
    server.shutdown_trigger().trigger();
    server.wait();
    assert!(TcpStream::connect(addr).is_err(), "the endpoint is closed");
}

/// A client that trickles its request a byte at a time (each within any per-read timeout) holds
/// the endpoint for one deadline in all, not for as long as it likes: other scrapes are answered,
/// and the server stops while it is still trickling.
#[test]
fn a_trickling_client_holds_the_endpoint_for_one_deadline_at_most() {
    let server = start_server_with(1, |c| {
        c.metrics_listen = Some("127.0.0.1:0".parse().unwrap());
    });
    let addr = server.metrics_addr().expect("metrics are on");
    let mut slow = TcpStream::connect(addr).unwrap();
    slow.write_all(b"G").unwrap();
    let trickler = std::thread::spawn(move || {
        // The workload: a byte every 300 ms until a write fails, the server having closed the
        // connection (a write after the close is refused by the peer's reset), or 20 s pass.
        for _ in 0..66 {
            std::thread::sleep(std::time::Duration::from_millis(300));
            if slow.write_all(b"E").is_err() {
                return true;
            }
        }
        false
    });
    // Answered within the test's deadline (`http` waits at most that long), though the trickler
    // never ends its request.
    let scraped = scrape(addr);
    assert!(scraped
        .samples
        .iter()
        .any(|s| s.name == "ringtalk_shard_up"));
    server.shutdown_trigger().trigger();
    server.wait();
    assert!(
        trickler.join().unwrap(),
        "the server closed the trickling connection"
    );
}
