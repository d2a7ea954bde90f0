//! The `ringtalk` binary: flags in, server started, signals turned into a clean shutdown; or,
//! as `ringtalk admin ...`, account administration on a stopped server's data directory.

mod admin_cli;
mod systemd;

use ringtalk::config_file;
use ringtalk::live::{self, Reloader};
use ringtalk::Server;
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use tracing::{error, info, warn};
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::reload;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::EnvFilter;

/// What changes the log filter of the running process.
type LogFilter = reload::Handle<EnvFilter, tracing_subscriber::Registry>;

#[cfg(feature = "dhat-heap")]
#[global_allocator]
static ALLOC: dhat::Alloc = dhat::Alloc;

fn main() {
    if std::env::args_os()
        .nth(1)
        .is_some_and(|first| first == "admin")
    {
        // Warnings only: what it did goes to stdout.
        tracing_subscriber::fmt()
            .with_writer(std::io::stderr)
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_default_env()
                    .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
            )
            .init();
        std::process::exit(admin_cli::main(std::env::args_os().skip(2)));
    }
    #[cfg(feature = "dhat-heap")]
    let _profiler = dhat::Profiler::new_heap();
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let loaded = match config_file::load(&args) {
        Ok(loaded) => loaded,
        Err(config_file::LoadError::CommandLine(e)) => e.exit(),
        Err(e) => {
            eprintln!("ringtalk: cannot use --config {e}");
            std::process::exit(2);
        }
    };
    if loaded.config.print_config {
        print!("{}", loaded.to_toml());
        return;
    }
    // Log lines are written by a thread of their own: a shard that logs never waits on stderr.
    let (writer, _flush_on_exit) = tracing_appender::non_blocking(std::io::stderr());
    let (filter, filter_handle) = reload::Layer::new(log_filter(&loaded.config));
    tracing_subscriber::registry()
        .with(filter)
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(writer)
                // Colours for a terminal, none for a file or the journal.
                .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())),
        )
        .init();
    let mut running = loaded.settings();
    let config = loaded.config;
    // Before the server starts: the handlers take two descriptors, and once the shards accept,
    // connections may take every one the process is allowed. (A signal during the start is acted on
    // once the server has started.)
    let mut signals = match signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP]) {
        Ok(s) => s,
        Err(e) => {
            error!("cannot install signal handlers: {e}");
            drop(_flush_on_exit);
            std::process::exit(1);
        }
    };
    let server = match Server::start(config) {
        Ok(server) => server,
        Err(e) => {
            error!("ringtalk could not start: {e}");
            drop(_flush_on_exit);
            std::process::exit(1);
        }
    };
    let limit = server.file_limit();
    let (plain, tls) = (server.local_addrs(), server.tls_addrs());
    let first = server.local_addr();
    // The first line names the first address as it always has (scripts and tests read it); each
    // further address has a line of its own.
    info!(
        "ringtalk listening on {first}{} with {} shards (CPUs {:?}); open-files limit {} (hard {}) allows about {} users",
        if plain.is_empty() { " (TLS)" } else { "" },
        server.shard_cpus().len(),
        server.shard_cpus(),
        limit.soft,
        limit.hard,
        server.users_allowed(),
    );
    for addr in plain.iter().skip(1) {
        info!("also listening on {addr}");
    }
    for addr in tls.iter().skip(usize::from(plain.is_empty())) {
        info!("also listening on {addr} for telnet over TLS");
    }
    if plain.iter().chain(tls).all(|a| a.ip().is_loopback()) {
        let everywhere = match first {
            std::net::SocketAddr::V4(_) => "0.0.0.0",
            std::net::SocketAddr::V6(_) => "[::]",
        };
        let flag = if plain.is_empty() {
            "--tls-listen"
        } else {
            "--listen"
        };
        info!(
            "only this machine can connect; use {flag} {everywhere}:{} to accept remote users",
            first.port()
        );
    }
    if let Some(addr) = plain.first() {
        info!("connect with: telnet {} {}", addr.ip(), addr.port());
    }
    if let Some(addr) = tls.first() {
        info!("connect over TLS with: openssl s_client -quiet -connect {addr} (or a MUD client with TLS on)");
    }
    let all: Vec<String> = plain.iter().chain(tls).map(|a| a.to_string()).collect();
    let status = format!(
        "listening on {}, {} shards, about {} users allowed",
        all.join(" "),
        server.shard_cpus().len(),
        server.users_allowed()
    );
    systemd::ready(&status);

    let trigger = server.shutdown_trigger();
    let reloader = server.reloader();
    let signal_thread = std::thread::spawn(move || {
        for sig in signals.forever() {
            if sig == SIGHUP {
                systemd::reloading();
                reload_config(&args, &mut running, &reloader, &filter_handle);
                systemd::ready(&status);
                continue;
            }
            info!(signal = sig, "shutting down");
            systemd::stopping();
            trigger.trigger();
            break;
        }
    });
    server.wait();
    drop(signal_thread);
}

/// The log filter `config` asks for: `--log-level`, else `RUST_LOG`, else `info`.
fn log_filter(config: &ringtalk::Config) -> EnvFilter {
    match &config.log_level {
        // Checked when the flag was parsed.
        Some(level) => EnvFilter::try_new(level).unwrap_or_else(|_| EnvFilter::new("info")),
        None => EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
    }
}

/// SIGHUP: reads the command line's configuration again (the `--config` file, the message of the
/// day) and applies what may change while users are connected. A file that cannot be used changes
/// nothing; a change that needs a restart is named, and its running value stays.
fn reload_config(
    args: &[std::ffi::OsString],
    running: &mut std::collections::BTreeMap<String, Option<Vec<String>>>,
    reloader: &Reloader,
    log: &LogFilter,
) {
    let mut loaded = match config_file::load(args) {
        Ok(loaded) => loaded,
        Err(e) => {
            error!("configuration not reloaded (the running one stays): {e}");
            return;
        }
    };
    if let Err(e) = loaded.config.check() {
        error!("configuration not reloaded (the running one stays): {e}");
        return;
    }
    if let Err(e) = loaded.config.load_motd() {
        error!("configuration not reloaded (the running one stays): --motd {e}");
        return;
    }
    let read = loaded.settings();
    let (applied, restart) = live::changes(running, &read, reloader.serves_tls());
    if let Err(e) = reloader.apply(&loaded.config) {
        error!("configuration not reloaded (the running one stays): {e}");
        return;
    }
    if reloader.serves_tls() && loaded.config.tls_cert.is_some() {
        info!("TLS certificate reloaded");
    }
    if let Err(e) = log.reload(log_filter(&loaded.config)) {
        warn!(error = %e, "cannot change the log filter");
    }
    for key in &applied {
        running.insert(key.clone(), read.get(key).cloned().flatten());
    }
    info!(
        changed = ?applied,
        motd_lines = loaded.config.motd_lines.len(),
        "configuration reloaded"
    );
    if !restart.is_empty() {
        warn!(
            "changes that take a restart, not applied (the running values stay): {}",
            restart.join(", ")
        );
    }
}
