//! Properties over the entry points that take bytes or text from users, and over the hubs that
//! pass messages between shards, checked on many generated inputs (proptest, at a case count CI
//! can afford): whatever arrives, nothing panics, and what comes out keeps its promises. Typed text
//! never carries a control character (so no terminal escape reaches other users), a finished line
//! fits its limit, a chat line is one line, and a channel name that is accepted names a log file
//! inside the log directory. Hubs stepped through any operations in any interleaving keep
//! membership, answers and every member's lines right, and no message a peer could send, however
//! wrong, panics one (the harness, `hub_sim`, is the `hub_messages` fuzz target's too).

use std::path::{Component, Path};

use proptest::prelude::*;
use ringtalk::chanlog::file_stem;
use ringtalk::cmd::{self, Command};
use ringtalk::line::MAX_LINE_BYTES;
use ringtalk::terminal::{Input, Terminal};
use shard_proto::ChannelName;

mod hub_sim;

/// Bytes a hostile or confused client might send: anything, with the interesting bytes (IAC,
/// ESC, CR, LF, NUL, DEL, backspace, ^D, ^U, high bytes) over-represented, in chunks as reads
/// would split them.
fn chunks() -> impl Strategy<Value = Vec<Vec<u8>>> {
    let byte = prop_oneof![
        any::<u8>(),
        prop::sample::select(vec![
            0xFF, 0xFA, 0xF0, 0xFB, 0xFC, 0xFD, 0xFE, 0x1B, b'\r', b'\n', 0, 0x7F, 0x08, 0x04,
            0x15, 0xC3, 0xA9, 0xE2, b'[', b'/', b'a',
        ]),
    ];
    prop::collection::vec(prop::collection::vec(byte, 0..64), 0..24)
}

/// Operations for the hubs, one a byte (see `hub_sim`), after a first byte that sets them up.
fn hub_ops() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<u8>(), 0..400)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn a_terminal_fed_anything_gives_clean_lines_within_the_limit(chunks in chunks()) {
        let mut term = Terminal::new();
        let mut out = Vec::new();
        term.start(&mut out);
        term.show_prompt("p> ", &mut out);
        for chunk in &chunks {
            term.feed(chunk, &mut out);
            while let Some(input) = term.next_input(&mut out) {
                if let Input::Line(line) = input {
                    prop_assert!(line.text.len() <= MAX_LINE_BYTES, "{} bytes", line.text.len());
                    prop_assert!(
                        !line.text.chars().any(char::is_control),
                        "control character in {:?}",
                        line.text
                    );
                }
                term.show_prompt("p> ", &mut out);
            }
            // Server text printed between reads never breaks the terminal either.
            term.print(&["someone says, \"hi\""], &mut out);
        }
    }

    #[test]
    fn any_typed_line_parses_and_renders_as_one_clean_line(
        text in "\\PC{0,120}",
        user in "[a-zA-Z][a-zA-Z0-9_]{0,15}",
    ) {
        let command = cmd::parse(&text);
        if let Some(line) = cmd::render(&user, &command) {
            prop_assert!(!line.chars().any(char::is_control), "{line:?}");
            prop_assert!(line.starts_with(user.as_str()), "{line:?}");
            let talk = matches!(
                command,
                Command::Say(_) | Command::Emote(_) | Command::Think(_) | Command::Sing(_)
            );
            prop_assert!(talk, "rendered {command:?}");
        }
    }

    #[test]
    fn an_accepted_channel_name_names_a_log_file_inside_the_log_directory(name in "\\PC{0,40}|[.~/\\\\a-z0-9_-]{0,12}") {
        if let Ok(channel) = ChannelName::new(&name) {
            let stem = file_stem(channel.key());
            let file = format!("{stem}.2026-11-30.log");
            let components: Vec<Component> = Path::new(&file).components().collect();
            prop_assert_eq!(components.len(), 1, "{:?} -> {:?}", name, file);
            prop_assert!(matches!(components[0], Component::Normal(_)), "{:?}", file);
            prop_assert!(!file.contains('\0') && !file.starts_with('.'), "{:?}", file);
            // Names that differ only in case share one log.
            let upper = ChannelName::new(&name.to_uppercase());
            if let Ok(upper) = upper {
                if upper.key() == channel.key() {
                    prop_assert_eq!(file_stem(upper.key()), stem);
                }
            }
        }
    }

    #[test]
    fn hubs_kept_to_the_protocol_keep_every_invariant(setup in any::<u8>(), ops in hub_ops()) {
        // The top bit of the first byte clear: the input keeps to the protocol.
        hub_sim::run(&[&[setup & 0x7F][..], &ops].concat());
    }

    #[test]
    fn no_message_a_peer_could_send_panics_a_hub(setup in any::<u8>(), ops in hub_ops()) {
        // The top bit set: the input may forge, repeat, reorder, misroute and lose messages.
        hub_sim::run(&[&[setup | 0x80][..], &ops].concat());
    }
}
