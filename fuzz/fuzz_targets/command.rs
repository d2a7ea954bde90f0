//! Command parsing of any typed text: it never panics, and a chat line it renders is one line with
//! no control character.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringtalk::cmd;

fuzz_target!(|text: &str| {
    let command = cmd::parse(text);
    if let Some(line) = cmd::render("fuzzer", &command) {
        // Typed lines never hold control characters (the line editor strips them); what the
        // parser adds must not either.
        if !text.chars().any(char::is_control) {
            assert!(!line.chars().any(char::is_control), "{line:?}");
        }
    }
});
