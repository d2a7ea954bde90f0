//! A terminal (telnet, then the line editor), fed any bytes in reads split at 0xFE bytes: it never
//! panics, and every line it finishes is within the byte limit with no control character, so no
//! terminal escape a user types can reach anyone else.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringtalk::line::MAX_LINE_BYTES;
use ringtalk::terminal::{Input, Terminal};

fuzz_target!(|data: &[u8]| {
    let mut term = Terminal::new();
    let mut out = Vec::new();
    term.start(&mut out);
    term.show_prompt("p> ", &mut out);
    for chunk in data.split(|&b| b == 0xFE) {
        term.feed(chunk, &mut out);
        while let Some(input) = term.next_input(&mut out) {
            if let Input::Line(line) = input {
                assert!(line.text.len() <= MAX_LINE_BYTES);
                assert!(!line.text.chars().any(char::is_control), "{:?}", line.text);
            }
            term.show_prompt("p> ", &mut out);
        }
        term.print(&["someone says, \"hi\""], &mut out);
        out.clear();
    }
});
