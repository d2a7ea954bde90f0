//! Commands about the session itself: help (made from every family's table) and logging off.

use super::{commands, find, Command, Ctx, Spec};
use crate::session::Stop;

/// This family's commands, in `/help`'s order.
pub const COMMANDS: &[Spec] = &[
    Spec {
        word: "/help",
        args: "",
        summary: "this list (/help <command> for one)",
        parse: |rest| Command::Help((!rest.is_empty()).then_some(rest)),
    },
    Spec {
        word: "/quit",
        args: "",
        summary: "log off (or ^D on an empty line)",
        parse: |_| Command::Quit,
    },
];

/// Applies `/help` or `/quit`.
pub(crate) fn run(ctx: &mut impl Ctx, command: Command<'_>) -> Result<(), Stop> {
    match command {
        Command::Help(None) => {
            let lines = help();
            let lines: Vec<&str> = lines.iter().map(String::as_str).collect();
            ctx.print(&lines);
            Ok(())
        }
        Command::Help(Some(word)) => {
            match find(word) {
                Some(spec) => ctx.print(&[&usage(spec), &format!("  {}", spec.summary)]),
                None => ctx.say(&format!("No such command: {word}. Use /help for the list.")),
            }
            Ok(())
        }
        Command::Quit => Err(Stop::Quit),
        _ => unreachable!("not a session command: {command:?}"),
    }
}

/// How a command is typed: `/join <channel>`.
fn usage(spec: &Spec) -> String {
    if spec.args.is_empty() {
        spec.word.to_string()
    } else {
        format!("{} {}", spec.word, spec.args)
    }
}

/// The `/help` text: a heading, then one line per command: its usage in a column of 22, or
/// followed by one space where it is longer.
pub fn help() -> Vec<String> {
    let mut lines = vec!["Commands:".to_string()];
    lines.extend(commands().map(|spec| format!("  {:<21} {}", usage(spec), spec.summary)));
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_command_has_one_help_line_and_help_finds_it_by_name() {
        let lines = help();
        assert_eq!(lines[0], "Commands:");
        assert_eq!(lines.len(), commands().count() + 1);
        assert_eq!(
            lines[3],
            "  /join <channel>       join a channel (leaving the one you are on)"
        );
        for spec in commands() {
            assert!(spec.word.starts_with('/') && spec.word == spec.word.to_lowercase());
            assert_eq!(find(spec.word).map(|s| s.word), Some(spec.word));
            assert_eq!(
                find(&spec.word[1..].to_uppercase()).map(|s| s.word),
                Some(spec.word)
            );
            let listed = lines
                .iter()
                .filter(|l| l.starts_with(&format!("  {} ", spec.word)));
            assert_eq!(listed.count(), 1, "{}", spec.word);
        }
        assert!(find("/nosuch").is_none());
    }

    #[test]
    fn protocol_md_shows_the_help_text_the_server_sends() {
        let doc = include_str!("../../docs/PROTOCOL.md");
        let block = doc
            .split("```\nCommands:\n")
            .nth(1)
            .and_then(|rest| rest.split("```").next())
            .expect("PROTOCOL.md has the /help block");
        let documented: Vec<&str> = std::iter::once("Commands:").chain(block.lines()).collect();
        assert_eq!(documented, help());
    }
}
