//! Test helpers: the `%FF%FD%1F` notation, event transcripts, and the golden-file runner.

use super::codec::{Event, SbIgnored, Telnet};

/// Decodes `%XX` (two hex digits) to that byte; every other character stands for itself.
pub(crate) fn unescape(s: &str) -> Vec<u8> {
    let bytes = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).expect("hex escape");
            out.push(u8::from_str_radix(hex, 16).expect("hex escape"));
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    out
}

/// The inverse of [`unescape`]: printable ASCII (but `%`) as is, everything else as `%XX`.
pub(crate) fn escape(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|&b| match b {
            b' '..=b'~' if b != b'%' => char::from(b).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// One line per event, with consecutive data bytes merged into one `data` line.
pub(crate) fn transcript(events: &[Event]) -> Vec<String> {
    let mut lines = Vec::new();
    let mut data = Vec::new();
    for event in events {
        if let Event::Data(b) = event {
            data.push(*b);
            continue;
        }
        if !data.is_empty() {
            lines.push(format!("data {}", escape(&data)));
            data.clear();
        }
        lines.push(match event {
            Event::Data(_) => unreachable!(),
            Event::EndOfLine => "eol".to_string(),
            Event::Command(c) => format!("cmd {c:02X}"),
            Event::LocalEnabled(o) => format!("local-on {o:02X}"),
            Event::LocalDisabled(o) => format!("local-off {o:02X}"),
            Event::RemoteEnabled(o) => format!("remote-on {o:02X}"),
            Event::RemoteDisabled(o) => format!("remote-off {o:02X}"),
            Event::WindowSize { width, height } => format!("naws {width}x{height}"),
            Event::TerminalType(name) => format!("ttype {name}"),
            Event::IgnoredSubnegotiation { opt, reason } => {
                let reason = match reason {
                    SbIgnored::Unsupported => "unsupported",
                    SbIgnored::TooLong => "too-long",
                    SbIgnored::Malformed => "malformed",
                };
                format!("sb {opt:02X} {reason}")
            }
        });
    }
    if !data.is_empty() {
        lines.push(format!("data {}", escape(&data)));
    }
    lines
}

/// One step of a golden case.
#[derive(Debug)]
enum Step {
    /// Feed these bytes to `receive`, `usize` times, in one call each.
    Input(Vec<u8>, usize),
    /// Feed these bytes one per call.
    Bytewise(Vec<u8>),
    /// `request_local` (`true`) or `request_remote` (`false`): option, enable.
    Request(bool, u8, bool),
}

/// One golden transcript.
#[derive(Debug, Default)]
pub(crate) struct Case {
    /// From the `case` line.
    pub(crate) name: String,
    steps: Vec<Step>,
    /// `ev` lines.
    expected_events: Vec<String>,
    /// `out` lines, concatenated.
    expected_out: Vec<u8>,
}

/// Parses the golden file format described at the top of `golden/transcripts.txt`.
pub(crate) fn parse_golden(text: &str) -> Vec<Case> {
    let mut cases = Vec::new();
    let mut case: Option<Case> = None;
    for (n, line) in text.lines().enumerate() {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (word, rest) = line.split_once(' ').unwrap_or((line, ""));
        if word == "case" {
            assert!(case.is_none(), "line {}: case inside case", n + 1);
            case = Some(Case {
                name: rest.to_string(),
                ..Case::default()
            });
            continue;
        }
        let c = case
            .as_mut()
            .unwrap_or_else(|| panic!("line {}: outside a case", n + 1));
        match word {
            "in" => c.steps.push(Step::Input(unescape(rest), 1)),
            "bytewise" => c.steps.push(Step::Bytewise(unescape(rest))),
            "repeat" => {
                let (count, chunk) = rest.split_once(' ').expect("repeat N chunk");
                c.steps
                    .push(Step::Input(unescape(chunk), count.parse().expect("count")));
            }
            "local" | "remote" => {
                let (opt, on) = rest.split_once(' ').expect("OPT on|off");
                let opt = u8::from_str_radix(opt, 16).expect("hex option");
                c.steps
                    .push(Step::Request(word == "local", opt, on == "on"));
            }
            "ev" => c.expected_events.push(rest.to_string()),
            "out" => c.expected_out.extend(unescape(rest)),
            "end" => cases.push(case.take().expect("case")),
            _ => panic!("line {}: unknown directive {word:?}", n + 1),
        }
    }
    assert!(case.is_none(), "golden file ends inside a case");
    cases
}

/// Runs one case on a fresh [`Telnet`]; returns the transcript and the reply bytes.
pub(crate) fn run_case(case: &Case) -> (Vec<String>, Vec<u8>) {
    let mut telnet = Telnet::new();
    let (mut events, mut out) = (Vec::new(), Vec::new());
    for step in &case.steps {
        match step {
            Step::Input(bytes, times) => {
                for _ in 0..*times {
                    telnet.receive(bytes, &mut events, &mut out);
                }
            }
            Step::Bytewise(bytes) => {
                for b in bytes.chunks(1) {
                    telnet.receive(b, &mut events, &mut out);
                }
            }
            Step::Request(true, opt, on) => {
                telnet.request_local(*opt, *on, &mut out);
            }
            Step::Request(false, opt, on) => {
                telnet.request_remote(*opt, *on, &mut out);
            }
        }
    }
    (transcript(&events), out)
}

/// For cases made only of input: all their bytes, to re-run in other splits.
pub(crate) fn all_input(case: &Case) -> Option<Vec<u8>> {
    let mut all = Vec::new();
    for step in &case.steps {
        match step {
            Step::Input(bytes, times) => {
                for _ in 0..*times {
                    all.extend_from_slice(bytes);
                }
            }
            Step::Bytewise(bytes) => all.extend_from_slice(bytes),
            Step::Request(..) => return None,
        }
    }
    Some(all)
}

/// Checks every case of the golden file against the codec.
pub(crate) fn check_golden(text: &str) -> usize {
    let cases = parse_golden(text);
    let mut failures = Vec::new();
    for case in &cases {
        let (events, out) = run_case(case);
        if events != case.expected_events || out != case.expected_out {
            failures.push(format!(
                "case {}:\n  events   {:?}\n  expected {:?}\n  out      {}\n  expected {}",
                case.name,
                events,
                case.expected_events,
                escape(&out),
                escape(&case.expected_out)
            ));
            continue;
        }
        // The same bytes in one call and one byte per call must mean the same.
        if let Some(all) = all_input(case) {
            for chunk in [all.len().max(1), 1] {
                let mut telnet = Telnet::new();
                let (mut ev, mut out) = (Vec::new(), Vec::new());
                for part in all.chunks(chunk) {
                    telnet.receive(part, &mut ev, &mut out);
                }
                if transcript(&ev) != case.expected_events || out != case.expected_out {
                    failures.push(format!(
                        "case {}: differs with chunks of {chunk}",
                        case.name
                    ));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    cases.len()
}
