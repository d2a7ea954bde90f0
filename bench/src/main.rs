//! ringtalk-bench: the load generator of ringtalk, and of any IRC server for comparison.
//!
//! - [`cli`]: flags; every one is global.
//! - [`scenarios`]: sizes each scenario from the limits, drives the workers, reads out the figures.
//! - [`fleet`]: worker processes (this binary, `worker` subcommand) and their JSON lines.
//! - [`worker`]: up to 15,000 clients on one single-threaded runtime.
//! - [`conn`]: one client's connection in either protocol; [`telnet`], [`lines`], [`ringtalk`] and
//!   [`irc`] are the sans-IO parsers under it.
//! - [`attack`]: the abuse scenario's attacker (connection flood, password guesses, paste).
//! - [`stats`]: histograms (µs) and errors by kind; [`report`]: the table and the JSON.
//! - [`sys`]: the shared clock, limits, and the server's figures from /proc.

mod attack;
mod cli;
mod conn;
mod fleet;
mod irc;
mod lines;
mod plan;
mod report;
mod ringtalk;
mod scenarios;
mod stats;
mod sys;
mod telnet;
mod timer;
mod tls;
mod worker;

use clap::Parser;

use cli::{Cli, Cmd};
use report::Report;
use scenarios::Bench;

fn main() {
    let cli = Cli::parse();
    if let Cmd::Worker = cli.command {
        if let Err(e) = worker::main() {
            eprintln!("worker: {e:#}");
            std::process::exit(1);
        }
        return;
    }
    match run(cli) {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("ringtalk-bench: {e:#}");
            std::process::exit(2);
        }
    }
}

/// Runs the command; returns the exit code.
fn run(cli: Cli) -> anyhow::Result<i32> {
    let json = cli.opts.json;
    let runs: Vec<(String, Option<u32>)> = match &cli.command {
        Cmd::Seed => vec![("seed".into(), None)],
        Cmd::Tells => vec![("tells".into(), None)],
        Cmd::Ceiling => vec![("ceiling".into(), None)],
        Cmd::Firehose => vec![("firehose".into(), None)],
        Cmd::Storm => vec![("storm".into(), None)],
        Cmd::Logins => vec![("logins".into(), None)],
        Cmd::Bigroom => vec![("bigroom".into(), None)],
        Cmd::Slowreaders => vec![("slowreaders".into(), None)],
        Cmd::Churn => vec![("churn".into(), None)],
        Cmd::Abuse => vec![("abuse".into(), None)],
        Cmd::Soak => vec![("soak".into(), None)],
        Cmd::Failover => vec![("failover".into(), None)],
        Cmd::Handshakes => vec![("handshakes".into(), None)],
        Cmd::Suite { scenarios } => parse_suite(scenarios)?,
        Cmd::All => parse_suite(
            &scenarios::SCENARIOS
                .iter()
                .filter(|s| !scenarios::NOT_IN_ALL.contains(s))
                .map(|s| s.to_string())
                .collect::<Vec<_>>(),
        )?,
        Cmd::Smoke => return smoke(cli.opts),
        Cmd::Worker => unreachable!(),
    };
    let bench = Bench::new(cli.opts)?;
    eprintln!("{}", bench.describe_limits());
    let mut reports = Vec::new();
    let mut failed = false;
    for (name, users) in &runs {
        match bench.run(name, *users) {
            Ok(r) => {
                print_report(&r, json);
                if let Some(why) = r.failure() {
                    eprintln!("{name}: FAILED: {why}");
                    failed = true;
                }
                reports.push(r);
            }
            Err(e) => {
                eprintln!("{name}: {e:#}");
                failed = true;
            }
        }
    }
    if runs.len() > 1 && !json {
        println!("{}", report::summary(&reports));
    }
    Ok(if failed { 1 } else { 0 })
}

fn print_report(r: &Report, json: bool) {
    if json {
        println!("{}", serde_json::to_string(r).expect("reports serialize"));
    } else {
        println!("{}", r.table());
    }
}

/// `seed,storm:5000` -> [("seed", None), ("storm", Some(5000))].
fn parse_suite(items: &[String]) -> anyhow::Result<Vec<(String, Option<u32>)>> {
    items
        .iter()
        .filter(|s| !s.trim().is_empty())
        .map(|item| {
            let (name, users) = match item.trim().split_once(':') {
                Some((n, u)) => (
                    n,
                    Some(
                        u.parse::<u32>()
                            .map_err(|_| anyhow::anyhow!("bad size in {item:?}"))?,
                    ),
                ),
                None => (item.trim(), None),
            };
            if !scenarios::SCENARIOS.contains(&name) {
                anyhow::bail!(
                    "no scenario {name:?}; scenarios: {}",
                    scenarios::SCENARIOS.join(", ")
                );
            }
            Ok((name.to_string(), users))
        })
        .collect()
}

/// The CI path: seed, storm and churn at ~200 users, a few seconds each. Fails on protocol errors,
/// on a scenario that could not run, and when no client could log in at all (nothing was tested).
fn smoke(mut opts: cli::Opts) -> anyhow::Result<i32> {
    let users = opts.users.unwrap_or(200);
    opts.seconds = Some(opts.seconds.unwrap_or(5.0));
    opts.think.get_or_insert(1.0);
    opts.timeout = opts.timeout.min(30.0);
    let json = opts.json;
    let bench = Bench::new(opts)?;
    eprintln!("{}", bench.describe_limits());
    let mut problems = Vec::new();
    let mut reports = Vec::new();
    for name in ["seed", "storm", "churn"] {
        match bench.run(name, Some(users)) {
            Ok(r) => {
                print_report(&r, json);
                if r.errors.protocol > 0 {
                    problems.push(format!("{name}: {} protocol errors", r.errors.protocol));
                }
                if r.setup.logged_in == 0
                    && r.figures
                        .get("logged_in")
                        .and_then(|v| v.as_u64())
                        .unwrap_or(0)
                        == 0
                {
                    problems.push(format!("{name}: no client logged in"));
                }
                reports.push(r);
            }
            Err(e) => problems.push(format!("{name}: {e:#}")),
        }
    }
    if !json {
        println!("{}", report::summary(&reports));
    }
    if problems.is_empty() {
        eprintln!("smoke: ok");
        Ok(0)
    } else {
        for p in &problems {
            eprintln!("smoke: FAILED: {p}");
        }
        Ok(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suite_items() {
        let items: Vec<String> = vec!["seed".into(), "storm:5000".into()];
        let runs = parse_suite(&items).unwrap();
        assert_eq!(
            runs,
            vec![
                ("seed".to_string(), None),
                ("storm".to_string(), Some(5000))
            ]
        );
        assert!(parse_suite(&["nope".to_string()]).is_err());
        assert!(parse_suite(&["seed:x".to_string()]).is_err());
    }

    #[test]
    fn flags_parse_before_and_after_the_scenario() {
        let cli = Cli::try_parse_from([
            "ringtalk-bench",
            "--addr",
            "127.0.0.1:6667",
            "seed",
            "--users",
            "10",
            "--protocol",
            "irc",
            "--json",
        ])
        .unwrap();
        assert_eq!(cli.opts.users, Some(10));
        assert!(cli.opts.json);
        assert_eq!(cli.opts.protocol, conn::Protocol::Irc);
        assert!(matches!(cli.command, Cmd::Seed));
    }
}
