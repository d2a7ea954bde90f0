//! What an operator may change while the server runs, without dropping anyone.
//!
//! A reload (SIGHUP to the binary; [`Reloader::apply`] to the library) reads the configuration
//! again and applies what is safe to change under running sessions: the per-address limits and
//! throttles, flood control and exempt networks (swapped whole inside [`Defences`]), the message
//! of the day and the MSSP table (here), and the TLS certificate, read again from its files
//! ([`Reloader::reload_tls`]; see [`crate::tls`]). Everything else (where the server listens, how many shards, the data
//! directory, the cluster) shapes what was built at start; a change to it is named in the log as
//! waiting for a restart, and the running value stays.
//!
//! Shards read these settings where they use them, through an [`ArcSwap`]: a read is a few atomic
//! operations and never waits, and a reload holds up no shard.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::config::Config;
use crate::defences::Defences;
use crate::mssp;
use crate::tls::Certificates;

/// The configuration keys a reload applies; a change to any other waits for a restart.
pub const LIVE_KEYS: [&str; 13] = [
    "exempt",
    "max-conns-per-ip",
    "max-unauth-per-ip",
    "conn-rate",
    "signup-rate",
    "flood-burst",
    "flood-rate",
    "flood-queue",
    "motd",
    "log-level",
    "mssp",
    "tls-cert",
    "tls-key",
];

/// The live settings that are not the defences', shared by every shard.
#[derive(Debug)]
pub struct Live {
    motd: ArcSwap<Vec<String>>,
    mssp: ArcSwap<mssp::Table>,
    /// What the MSSP table says that no setting does, kept to build it again.
    facts: mssp::Facts,
}

impl Live {
    /// The settings of `config` (its message of the day already read), for a server with `facts`.
    pub fn new(config: &Config, facts: mssp::Facts) -> Arc<Live> {
        Arc::new(Live {
            motd: ArcSwap::from_pointee(config.motd_lines.to_vec()),
            mssp: ArcSwap::from_pointee(mssp::Table::new(&facts, &config.mssp)),
            facts,
        })
    }

    /// The MSSP table (but for its `PLAYERS`).
    pub fn mssp(&self) -> arc_swap::Guard<Arc<mssp::Table>> {
        self.mssp.load()
    }

    /// The message of the day's lines, as the latest load or reload read them.
    pub fn motd(&self) -> Arc<Vec<String>> {
        self.motd.load_full()
    }
}

/// What a reload touches; cheap to clone, and usable from any thread.
#[derive(Clone, Debug)]
pub struct Reloader {
    pub(crate) defences: Arc<Defences>,
    pub(crate) live: Arc<Live>,
    /// The live TLS certificate, when the server has a TLS address.
    pub(crate) tls: Option<Arc<Certificates>>,
}

impl Reloader {
    /// Applies the live settings of `config` (see [`LIVE_KEYS`]; its message of the day already
    /// read by [`Config::load_motd`]), and, on a server with a TLS address, the certificate files it
    /// names, read again even when their names did not change (a renewed certificate usually keeps
    /// its file's name). Connections that are open stay; a limit lowered below what an address
    /// holds refuses only its next connection. A certificate that cannot be used refuses the whole
    /// reload, naming the file: nothing changes. Reads those files: call it from a plain thread,
    /// never a shard. The log level is the binary's to apply.
    pub fn apply(&self, config: &Config) -> Result<(), String> {
        // A configuration that names no certificate files (its TLS addresses gone too, waiting for
        // a restart: `Config::check` refuses TLS addresses without files) keeps the running one.
        let files = config.tls_cert.as_deref().zip(config.tls_key.as_deref());
        let certificate = match (&self.tls, files) {
            (Some(_), Some((cert, key))) => Some(Certificates::read(cert, key)?),
            _ => None,
        };
        if let (Some(live), Some(certificate)) = (&self.tls, certificate) {
            live.install(certificate);
        }
        self.defences.set_policy(config);
        self.live.motd.store(Arc::new(config.motd_lines.to_vec()));
        let table = mssp::Table::new(&self.live.facts, &config.mssp);
        self.live.mssp.store(Arc::new(table));
        Ok(())
    }

    /// Whether the server has a TLS address, whose certificate [`Reloader::reload_tls`] renews.
    pub fn serves_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// Reads the TLS certificate chain and key again and serves them to every new TLS connection;
    /// connections already open keep theirs. A file that cannot be used is refused with its name
    /// and the reason, and the certificate in force stays. Reads the files: call it from a plain
    /// thread (the binary's signal thread), never from a shard.
    pub fn reload_tls(&self, cert: &Path, key: &Path) -> Result<(), String> {
        match &self.tls {
            Some(certificates) => certificates.reload(cert, key),
            None => Err("this server has no TLS address (--tls-listen)".to_string()),
        }
    }
}

/// The keys whose values differ between two configurations (as
/// [`Loaded::settings`](crate::config_file::Loaded::settings) gives them), split into those a
/// reload applies and those that wait for a restart.
pub fn changes(
    running: &BTreeMap<String, Option<Vec<String>>>,
    read: &BTreeMap<String, Option<Vec<String>>>,
    serves_tls: bool,
) -> (Vec<String>, Vec<String>) {
    let mut live = Vec::new();
    let mut restart = Vec::new();
    for (key, value) in read {
        if running.get(key) != Some(value) {
            // A server started without TLS has no certificate to renew: its files wait for the
            // restart that brings its TLS addresses.
            let tls_file = key == "tls-cert" || key == "tls-key";
            if LIVE_KEYS.contains(&key.as_str()) && (serves_tls || !tls_file) {
                live.push(key.clone());
            } else {
                restart.push(key.clone());
            }
        }
    }
    (live, restart)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn every_live_key_is_a_setting() {
        let command = Config::command();
        for key in LIVE_KEYS {
            assert!(
                command.get_arguments().any(|a| a.get_long() == Some(key)),
                "{key} is no flag"
            );
        }
    }

    #[test]
    fn changes_are_split_into_live_and_restart() {
        let settings = |pairs: &[(&str, &str)]| -> BTreeMap<String, Option<Vec<String>>> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), Some(vec![v.to_string()])))
                .collect()
        };
        let running = settings(&[("flood-rate", "2"), ("shards", "2"), ("motd", "a")]);
        let read = settings(&[("flood-rate", "3"), ("shards", "4"), ("motd", "a")]);
        assert_eq!(
            changes(&running, &read, false),
            (vec!["flood-rate".to_string()], vec!["shards".to_string()])
        );
        assert_eq!(changes(&running, &running, false), (vec![], vec![]));
        let with_cert = settings(&[("tls-cert", "new.pem")]);
        let no_cert = settings(&[("tls-cert", "old.pem")]);
        assert_eq!(
            changes(&no_cert, &with_cert, true),
            (vec!["tls-cert".to_string()], vec![])
        );
        assert_eq!(
            changes(&no_cert, &with_cert, false),
            (vec![], vec!["tls-cert".to_string()])
        );
    }
}
