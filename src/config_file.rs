//! The configuration file: `--config FILE`, in TOML, whose keys are the flags' own names.
//!
//! The file is not a second configuration language with its own parser and defaults: each key
//! becomes the flag of the same name and goes through the very parser and bounds the command line
//! goes through, so a setting means the same thing wherever it is written, and a new flag is a
//! key the day it is added. A flag given on the command line wins over the file (clap says where
//! each value came from, so the file's value is simply not passed on).
//!
//! A bad file is refused whole, naming the line and the reason; a value that is out of bounds is
//! refused with the bound, as the flag would be. `--print-config` renders every key's effective
//! value as a file that loads back to the same configuration (a test holds it to that).

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use clap::parser::ValueSource;
use clap::{ArgAction, ArgMatches, CommandFactory, FromArgMatches};
use toml::{Spanned, Value};

use crate::config::Config;

/// Flags that are not settings: they say what to do with the settings.
const NOT_KEYS: [&str; 4] = ["help", "version", "config", "print_config"];

/// The most a configuration file may be (far beyond any real one; the file is read whole).
pub const MAX_FILE_BYTES: u64 = 1 << 20;

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The command line itself is wrong (clap's own message, `--help` and `--version` included).
    #[error("{0}")]
    CommandLine(#[from] clap::Error),
    /// The file could not be read, is not TOML, or holds a key or value the flags refuse.
    #[error("{path}: {reason}")]
    File {
        /// The file named by `--config`.
        path: PathBuf,
        /// What is wrong, starting with the line when one is to blame.
        reason: String,
    },
}

/// A configuration with the parse it came from, which knows each value's source.
#[derive(Debug)]
pub struct Loaded {
    /// The configuration to run.
    pub config: Config,
    matches: ArgMatches,
}

impl Loaded {
    /// Every key's effective value, keyed by name; `None` for a key with no value (an optional
    /// setting left unset).
    pub fn settings(&self) -> BTreeMap<String, Option<Vec<String>>> {
        Config::command()
            .get_arguments()
            .filter_map(|arg| {
                let key = key_of(arg)?.to_string();
                Some((key, raw_values(&self.matches, arg.get_id().as_str())))
            })
            .collect()
    }

    /// The effective configuration as a TOML file, each key under its flag's help.
    pub fn to_toml(&self) -> String {
        let command = Config::command();
        let mut out = String::from(
            "# ringtalk's configuration (`ringtalk --print-config`): every key is a flag's name.\n",
        );
        for arg in command.get_arguments() {
            let Some(key) = key_of(arg) else { continue };
            out.push('\n');
            if let Some(help) = arg.get_help() {
                for line in wrap(&help.to_string(), 96) {
                    let _ = writeln!(out, "# {line}");
                }
            }
            match raw_values(&self.matches, arg.get_id().as_str()) {
                None => {
                    let _ = writeln!(out, "# {key} =");
                }
                Some(values) => {
                    let value = if takes_many(arg) {
                        Value::Array(values.iter().map(|v| toml_value(v)).collect())
                    } else if is_switch(arg) {
                        Value::Boolean(values.first().is_some_and(|v| v == "true"))
                    } else {
                        toml_value(values.first().map_or("", String::as_str))
                    };
                    let _ = writeln!(out, "{key} = {value}");
                }
            }
        }
        out
    }
}

/// Loads the configuration `args` (the program's name first) ask for: the command line, over the
/// file it names with `--config`, if it names one. The message of the day is not read here (see
/// [`Config::load_motd`]).
pub fn load<I, T>(args: I) -> Result<Loaded, LoadError>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let args: Vec<OsString> = args.into_iter().map(Into::into).collect();
    let command = Config::command();
    let first = command.clone().try_get_matches_from(&args)?;
    let Some(path) = first.get_one::<PathBuf>("config").cloned() else {
        return finish(first);
    };
    let text = read(&path).map_err(|reason| LoadError::File {
        path: path.clone(),
        reason,
    })?;
    let from_file =
        file_args(&command, &first, &text).map_err(|reason| LoadError::File { path, reason })?;
    // The file's flags first: those of the command line are all after them, and none is given
    // twice (a key the command line sets was left out).
    let mut all = Vec::with_capacity(args.len() + from_file.len());
    all.extend(args.first().cloned());
    all.extend(from_file.into_iter().map(OsString::from));
    all.extend(args.iter().skip(1).cloned());
    finish(command.try_get_matches_from(all)?)
}

fn finish(matches: ArgMatches) -> Result<Loaded, LoadError> {
    let config = Config::from_arg_matches(&matches)?;
    Ok(Loaded { config, matches })
}

fn read(path: &Path) -> Result<String, String> {
    use std::io::Read as _;
    let file = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let mut bytes = Vec::new();
    file.take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| e.to_string())?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(format!("longer than {MAX_FILE_BYTES} bytes"));
    }
    String::from_utf8(bytes).map_err(|_| "not UTF-8 text".to_string())
}

/// The flags the file's keys stand for, each checked on its own so that an error names its line;
/// keys the command line already sets are left out.
fn file_args(
    command: &clap::Command,
    command_line: &ArgMatches,
    text: &str,
) -> Result<Vec<String>, String> {
    let table: BTreeMap<Spanned<String>, Spanned<Value>> = toml::from_str(text).map_err(|e| {
        let line = e.span().map(|span| line_of(text, span.start));
        let message = e.message().trim_end();
        match line {
            Some(line) => format!("line {line}: {message}"),
            None => message.to_string(),
        }
    })?;
    let mut args = Vec::new();
    for (key, value) in &table {
        let line = line_of(text, key.span().start);
        let at = |reason: String| format!("line {line}: {}: {reason}", key.get_ref());
        let wanted = key.get_ref().replace('_', "-");
        let arg = command
            .get_arguments()
            .find(|arg| key_of(arg) == Some(wanted.as_str()))
            .ok_or_else(|| at("no such setting (see `ringtalk --print-config`)".to_string()))?;
        let id = arg.get_id().as_str();
        let flags = flags_for(arg, &wanted, value.get_ref()).map_err(at)?;
        // Checked alone, through the flag's own parser and bounds.
        let mut alone = vec!["ringtalk".to_string()];
        alone.extend(flags.iter().cloned());
        if let Err(e) = command.clone().try_get_matches_from(alone) {
            return Err(at(clap_reason(&e)));
        }
        if command_line.value_source(id) != Some(ValueSource::CommandLine) {
            args.extend(flags);
        }
    }
    Ok(args)
}

/// `--key=value` for each of `value`'s values (the `=` keeps a value that starts with `-` a value).
fn flags_for(arg: &clap::Arg, key: &str, value: &Value) -> Result<Vec<String>, String> {
    if is_switch(arg) {
        return match value {
            Value::Boolean(true) => Ok(vec![format!("--{key}")]),
            Value::Boolean(false) => Ok(Vec::new()),
            _ => Err("expected true or false".to_string()),
        };
    }
    let values: Vec<&Value> = match value {
        // No flags at all would leave the default in place, not the empty list written.
        Value::Array(items) if items.is_empty() && arg.get_default_values().is_empty() => {
            Vec::new()
        }
        Value::Array(items) if items.is_empty() => {
            return Err(format!(
                "an empty list would leave the default ({}); give at least one value{}",
                arg.get_default_values()
                    .iter()
                    .map(|v| v.to_string_lossy())
                    .collect::<Vec<_>>()
                    .join(", "),
                if key == "exempt" {
                    " (\"none\" for none)"
                } else {
                    ""
                }
            ));
        }
        Value::Array(items) if takes_many(arg) => items.iter().collect(),
        Value::Array(_) => return Err("takes one value, not a list".to_string()),
        one => vec![one],
    };
    values
        .into_iter()
        .map(|v| match v {
            Value::String(s) => Ok(format!("--{key}={s}")),
            Value::Integer(i) => Ok(format!("--{key}={i}")),
            Value::Boolean(b) => Ok(format!("--{key}={b}")),
            _ => Err("expected a string or a whole number".to_string()),
        })
        .collect()
}

/// The first line of clap's message, without its `error: `.
fn clap_reason(e: &clap::Error) -> String {
    let text = e.to_string();
    let first = text.lines().next().unwrap_or_default();
    first.strip_prefix("error: ").unwrap_or(first).to_string()
}

/// The key naming `arg` in a file, if it is a setting.
fn key_of(arg: &clap::Arg) -> Option<&str> {
    if NOT_KEYS.contains(&arg.get_id().as_str()) {
        return None;
    }
    arg.get_long()
}

fn raw_values(matches: &ArgMatches, id: &str) -> Option<Vec<String>> {
    // A switch has no raw value: its state is its value.
    if let Ok(Some(&on)) = matches.try_get_one::<bool>(id) {
        return Some(vec![on.to_string()]);
    }
    let values = matches.get_raw(id)?;
    Some(
        values
            .map(|v| v.to_string_lossy().into_owned())
            .collect::<Vec<_>>(),
    )
}

fn takes_many(arg: &clap::Arg) -> bool {
    matches!(arg.get_action(), ArgAction::Append)
}

fn is_switch(arg: &clap::Arg) -> bool {
    matches!(arg.get_action(), ArgAction::SetTrue | ArgAction::SetFalse)
}

/// A whole number as a TOML integer, anything else as a string.
fn toml_value(raw: &str) -> Value {
    match raw.parse::<i64>() {
        Ok(n) if n.to_string() == raw => Value::Integer(n),
        _ => Value::String(raw.to_string()),
    }
}

fn line_of(text: &str, byte: usize) -> usize {
    text.as_bytes()[..byte.min(text.len())]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines = Vec::new();
    let mut line = String::new();
    for word in text.split_whitespace() {
        if !line.is_empty() && line.len() + 1 + word.len() > width {
            lines.push(std::mem::take(&mut line));
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(word);
    }
    if !line.is_empty() {
        lines.push(line);
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_file(text: &str, flags: &[&str]) -> (tempfile::TempDir, Result<Loaded, LoadError>) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ringtalk.toml");
        std::fs::write(&path, text).unwrap();
        let mut args = vec![
            "ringtalk".to_string(),
            "--config".to_string(),
            path.display().to_string(),
        ];
        args.extend(flags.iter().map(|f| f.to_string()));
        let loaded = load(args);
        (dir, loaded)
    }

    fn refusal(text: &str) -> String {
        match with_file(text, &[]).1 {
            Err(LoadError::File { reason, .. }) => reason,
            other => panic!("{text:?} was not refused: {other:?}"),
        }
    }

    #[test]
    fn the_file_sets_what_the_command_line_does_not() {
        let text = "flood-rate = 7\nflood_burst = 9\nlisten = [\"127.0.0.1:6000\", \"[::1]:6000\"]\nadmin = [\"bob\", \"carol\"]\n\
                    exempt = [\"none\"]\nconn-rate = \"10/60\"\nmotd = \"/etc/motd\"\n";
        let (_dir, loaded) = with_file(text, &["--flood-rate", "3"]);
        let c = loaded.unwrap().config;
        assert_eq!(c.flood_rate, 3, "the command line wins");
        assert_eq!(c.flood_burst, 9, "underscores name the same key");
        assert_eq!(
            c.listen,
            [
                "127.0.0.1:6000".parse().unwrap(),
                "[::1]:6000".parse().unwrap()
            ]
        );
        assert_eq!(c.admins, ["bob", "carol"]);
        assert!(c.exempt.iter().all(|e| e.0.is_none()));
        assert_eq!(c.conn_rate.to_string(), "10/60");
        assert_eq!(c.motd, Some(PathBuf::from("/etc/motd")));
        assert_eq!(c.bcrypt_cost, 12, "defaults stay for keys not given");
    }

    #[test]
    fn a_bad_file_is_refused_with_its_line_and_reason() {
        let r = refusal("flood-rate = 2\n\nflood-rat = 3\n");
        assert!(r.starts_with("line 3: flood-rat: no such setting"), "{r}");
        let r = refusal("# comment\nflood-rate = 5000\n");
        assert!(r.starts_with("line 2: flood-rate: "), "{r}");
        assert!(r.contains("0..=1000"), "the bound is named: {r}");
        let r = refusal("bcrypt-cost = [4, 5]\n");
        assert!(r.contains("line 1: bcrypt-cost: takes one value"), "{r}");
        let r = refusal("listen = 1.5\n");
        assert!(r.contains("line 1: listen: expected a string"), "{r}");
        let r = refusal("a = 1\nflood-rate = = 2\n");
        assert!(r.starts_with("line 2: "), "{r}");
        let r = refusal("print-config = true\n");
        assert!(r.contains("no such setting"), "{r}");
        let r = refusal("[shards]\ncount = 2\n");
        assert!(r.contains("expected a string or a whole number"), "{r}");
        let r = refusal("exempt = []\n");
        assert!(
            r.contains("line 1: exempt: an empty list would leave the default"),
            "{r}"
        );
        assert!(r.contains("\"none\" for none"), "{r}");
        let r = refusal("log-level = \"info,[\"\n");
        assert!(r.contains("line 1: log-level"), "{r}");
    }

    #[test]
    fn a_missing_or_huge_file_is_refused() {
        let err = load(["ringtalk", "--config", "/nonexistent/ringtalk.toml"]).unwrap_err();
        assert!(matches!(err, LoadError::File { .. }), "{err}");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big.toml");
        std::fs::write(&path, vec![b'#'; MAX_FILE_BYTES as usize + 1]).unwrap();
        let err = load(["ringtalk".as_ref(), "--config".as_ref(), path.as_os_str()]).unwrap_err();
        assert!(err.to_string().contains("longer than"), "{err}");
    }

    #[test]
    fn printed_configuration_loads_back_to_the_same_one() {
        let flags = [
            "ringtalk",
            "--listen",
            "127.0.0.1:6001",
            "--listen",
            "[::1]:6001",
            "--mssp",
            "NAME=Our \"Chat\"",
            "--shards",
            "3",
            "--exempt",
            "10.0.0.0/8",
            "--admin",
            "alice",
            "--node-name",
            "1234",
            "--conn-rate",
            "off",
            "--log-level",
            "info,ringtalk=debug",
            "--data-dir",
            "/var/lib/ringtalk \"quoted\"",
        ];
        let first = load(flags).unwrap();
        let text = first.to_toml();
        assert!(
            text.contains("# Number of shards"),
            "help above each key:\n{text}"
        );
        assert!(
            text.contains("# cluster ="),
            "an unset key is shown:\n{text}"
        );
        let (_dir, again) = with_file(&text, &[]);
        let again = again.unwrap();
        assert_eq!(first.settings(), again.settings());
        let mut reloaded = again.config.clone();
        reloaded.config = None;
        assert_eq!(format!("{:?}", first.config), format!("{reloaded:?}"));
        // Every setting is printed, so a new flag is a key the day it is added.
        for arg in Config::command().get_arguments() {
            if let Some(key) = key_of(arg) {
                assert!(text.contains(&format!("{key} =")), "{key} missing");
            }
        }
    }
}
