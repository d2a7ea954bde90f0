//! The `ringtalk` binary: flags in, server started, signals turned into a clean shutdown; or,
//! as `ringtalk admin ...`, account administration on a stopped server's data directory.

mod admin_cli;
mod systemd;

use clap::Parser;
use ringtalk::{Config, Server};
use signal_hook::consts::{SIGINT, SIGTERM};
use tracing::{error, info};

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
    // Log lines are written by a thread of their own: a shard that logs never waits on stderr.
    let (writer, _flush_on_exit) = tracing_appender::non_blocking(std::io::stderr());
    tracing_subscriber::fmt()
        .with_writer(writer)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let config = Config::parse();
    let listen = config.listen;
    // Before the server starts: the handlers take two descriptors, and once the shards accept,
    // connections may take every one the process is allowed. (A signal during the start is acted on
    // once the server has started.)
    let mut signals = match signal_hook::iterator::Signals::new([SIGINT, SIGTERM]) {
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
    let addr = server.local_addr();
    info!(
        "ringtalk listening on {addr} with {} shards (CPUs {:?}); open-files limit {} (hard {}) allows about {} users",
        server.shard_cpus().len(),
        server.shard_cpus(),
        limit.soft,
        limit.hard,
        server.users_allowed(),
    );
    if listen.ip().is_loopback() {
        let everywhere = match listen {
            std::net::SocketAddr::V4(_) => "0.0.0.0",
            std::net::SocketAddr::V6(_) => "[::]",
        };
        info!(
            "only this machine can connect; use --listen {everywhere}:{} to accept remote users",
            addr.port()
        );
    }
    info!("connect with: telnet {} {}", addr.ip(), addr.port());
    systemd::ready(&format!(
        "listening on {addr}, {} shards, about {} users allowed",
        server.shard_cpus().len(),
        server.users_allowed()
    ));

    let trigger = server.shutdown_trigger();
    let signal_thread = std::thread::spawn(move || {
        if let Some(sig) = signals.forever().next() {
            info!(signal = sig, "shutting down");
            systemd::stopping();
            trigger.trigger();
        }
    });
    server.wait();
    drop(signal_thread);
}
