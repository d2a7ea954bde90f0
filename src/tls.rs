//! TLS certificates: the PEM files an operator names, turned into the one live server configuration
//! that every shard's new handshakes use, and swapped for a new one when the files are renewed.
//!
//! Reading a file blocks, so certificates are read only on the caller's thread: at start, and in
//! [`Certificates::reload`] (the binary calls it on SIGHUP), never on a shard. A shard only takes the
//! live configuration (one atomic load) when it accepts a TLS connection. The configuration sits in
//! an [`ArcSwap`] so that a reload is one pointer swap: handshakes begun after it use the new
//! certificate, and every connection already open keeps the `Arc` of the configuration it began
//! with, untouched. A file that cannot be used is refused with its name and the reason, and the
//! certificate already in force stays.
//!
//! Sessions are not resumed: a chat connection lives for hours, so a resumed handshake saves little,
//! and rustls's server-side session cache is one mutex shared by every thread, which every handshake
//! on every shard would take.

use std::path::Path;
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::NoServerSessionStorage;
use rustls::{ServerConfig, ServerConnection};

/// Most bytes of TLS records a connection holds before they are sent, and most plaintext it takes
/// before its handshake has finished: a peer that stops reading holds at most this much here, on
/// top of the session's own bounded output queue.
pub const SEND_BUFFER_LIMIT: usize = 32 * 1024;

/// The server's certificate and key as every shard's new handshakes use them.
pub struct Certificates {
    live: ArcSwap<ServerConfig>,
}

impl std::fmt::Debug for Certificates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Certificates")
    }
}

impl Certificates {
    /// Reads the certificate chain and key (PEM) and makes them the live ones. The error names the
    /// file and says what is wrong with it.
    pub fn load(cert: &Path, key: &Path) -> Result<Certificates, String> {
        Ok(Certificates {
            live: ArcSwap::new(server_config(cert, key)?),
        })
    }

    /// Reads the files again and, if they can be used, makes them the live ones for every new
    /// handshake; connections already open are untouched. On an error the certificate in force
    /// stays. Blocks on the files: call it from a plain thread, never from a shard.
    pub fn reload(&self, cert: &Path, key: &Path) -> Result<(), String> {
        self.install(Certificates::read(cert, key)?);
        Ok(())
    }

    /// Reads the files into a configuration that [`Certificates::install`] makes live, so that a
    /// reload can check every file it needs before it changes anything. Blocks on the files.
    pub fn read(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>, String> {
        server_config(cert, key)
    }

    /// Makes a configuration from [`Certificates::read`] the live one for every new handshake.
    pub fn install(&self, config: Arc<ServerConfig>) {
        self.live.store(config);
    }

    /// A server side of a new TLS connection, with the live certificate and the send buffer limit.
    pub fn accept(&self) -> Result<ServerConnection, rustls::Error> {
        let mut conn = ServerConnection::new(self.live.load_full())?;
        conn.set_buffer_limit(Some(SEND_BUFFER_LIMIT));
        Ok(conn)
    }
}

/// A server configuration for the certificate chain in `cert` and the private key in `key`.
fn server_config(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>, String> {
    let named = |path: &Path, what: String| format!("{}: {what}", path.display());
    let chain = CertificateDer::pem_file_iter(cert)
        .map_err(|e| named(cert, e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| named(cert, e.to_string()))?;
    if chain.is_empty() {
        return Err(named(cert, "no PEM certificate in it".to_string()));
    }
    let private = PrivateKeyDer::from_pem_file(key).map_err(|e| named(key, e.to_string()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(chain, private)
        .map_err(|e| format!("{} with {}: {e}", cert.display(), key.display()))?;
    config.session_storage = Arc::new(NoServerSessionStorage {});
    config.send_tls13_tickets = 0;
    Ok(Arc::new(config))
}
