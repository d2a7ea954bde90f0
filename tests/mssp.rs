//! MSSP over real TCP: the server offers it to every connection, sends its table to a client
//! that agrees (with the players online counted), sends nothing to one that refuses, and answers a
//! crawler's plain-text `MSSP-REQUEST` at the login prompt, then closes.

mod common;

use common::{contains, start_server_with, Kind, Telnet};
use ringtalk::telnet::cmd::{DO, IAC, WILL};
use ringtalk::telnet::opt::MSSP;

/// The table in an MSSP subnegotiation's data: each key with its values.
fn table(data: &[u8]) -> Vec<(String, Vec<String>)> {
    let mut table: Vec<(String, Vec<String>)> = Vec::new();
    let mut marker = 0;
    let mut text = Vec::new();
    let flush = |marker: u8, text: &mut Vec<u8>, table: &mut Vec<(String, Vec<String>)>| {
        let s = String::from_utf8(std::mem::take(text)).expect("UTF-8");
        match marker {
            1 => table.push((s, Vec::new())),
            2 => table.last_mut().expect("a value after a key").1.push(s),
            _ => assert!(s.is_empty(), "text before the first key"),
        }
    };
    for &b in data {
        if b == 1 || b == 2 {
            flush(marker, &mut text, &mut table);
            marker = b;
        } else {
            text.push(b);
        }
    }
    flush(marker, &mut text, &mut table);
    table
}

fn value<'a>(table: &'a [(String, Vec<String>)], key: &str) -> &'a [String] {
    &table
        .iter()
        .find(|(k, _)| k == key)
        .unwrap_or_else(|| panic!("{key} missing from {table:?}"))
        .1
}

#[test]
fn a_client_that_agrees_gets_the_table_and_one_that_refuses_gets_nothing() {
    let server = start_server_with(2, |c| {
        c.mssp = vec![
            "NAME=Test Chat".parse().unwrap(),
            "CONTACT=ops@example.org".parse().unwrap(),
        ];
    });
    let mut ann = server.connect(Kind::Raw);
    ann.create_account("ann", "secret-1");

    let mut mud = server.connect(Kind::Raw);
    mud.expect_telnet(0, |t| *t == Telnet::Verb(WILL, MSSP));
    mud.send(&[IAC, DO, MSSP]);
    let at = mud.expect_telnet(0, |t| matches!(t, Telnet::Sub(MSSP, _)));
    let Telnet::Sub(_, data) = &mud.seen()[at].what else {
        unreachable!()
    };
    let t = table(data);
    assert_eq!(value(&t, "NAME"), ["Test Chat"]);
    assert_eq!(value(&t, "CONTACT"), ["ops@example.org"]);
    assert_eq!(value(&t, "PLAYERS"), ["1"], "ann is logged in");
    assert_eq!(value(&t, "PORT"), [server.addr().port().to_string()]);
    let uptime: u64 = value(&t, "UPTIME")[0].parse().unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(uptime <= now && uptime + 600 > now, "{uptime} vs {now}");
    // The login goes on as usual after it.
    mud.create_account("mud", "secret-2");

    // A terminal refuses (inetutils telnet answers DONT): it gets no table.
    let mut term = server.connect(Kind::Xterm);
    term.create_account("tess", "secret-3");
    assert!(term
        .seen()
        .iter()
        .all(|s| !matches!(s.what, Telnet::Sub(MSSP, _))));
    assert!(term.raw().windows(3).any(|w| w == [IAC, WILL, MSSP]));
}

#[test]
fn a_crawler_that_types_mssp_request_gets_text_and_is_closed() {
    let server = start_server_with(1, |_| {});
    let mut crawler = server.connect(Kind::Raw);
    crawler.expect("Username: ");
    crawler.send_line("MSSP-REQUEST");
    let rest = crawler.expect_closed();
    assert!(rest.contains("MSSP-REPLY-START\r\n"), "{rest}");
    assert!(rest.contains("PLAYERS\t0\r\n"), "{rest}");
    assert!(rest.contains("NAME\tringtalk\r\n"), "{rest}");
    assert!(
        rest.contains(&format!("PORT\t{}\r\n", server.addr().port())),
        "{rest}"
    );
    assert!(rest.trim_end().ends_with("MSSP-REPLY-END"), "{rest}");
    assert!(!contains(crawler.text(), b"Goodbye"));
}
