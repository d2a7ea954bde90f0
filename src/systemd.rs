//! What the binary tells systemd (or any service manager speaking its notify protocol) when it
//! runs as a `Type=notify` service (`dist/ringtalk.service`): ready once every shard accepts, and
//! stopping as soon as a shutdown begins, so that `systemctl start` returns when users can connect
//! and `systemctl stop` shows the server draining rather than hung.
//!
//! Outside systemd (`NOTIFY_SOCKET` unset) every call does nothing. A notification that cannot be
//! sent is logged and otherwise ignored: the server serves its users whether or not its manager
//! hears. Called from the main and signal threads only, never from a shard.

use sd_notify::NotifyState;
use tracing::warn;

/// Every shard accepts: `READY=1`, with `status` for `systemctl status`.
pub fn ready(status: &str) {
    send(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// A reload of the configuration has begun (SIGHUP): `RELOADING=1`, with the time systemd asks
/// for; [`ready`] follows when it is done.
pub fn reloading() {
    match NotifyState::monotonic_usec_now() {
        Ok(now) => send(&[NotifyState::Reloading, now]),
        Err(_) => send(&[NotifyState::Reloading]),
    }
}

/// A shutdown has begun (users are being told, queues flushed): `STOPPING=1`.
pub fn stopping() {
    send(&[NotifyState::Stopping, NotifyState::Status("shutting down")]);
}

fn send(states: &[NotifyState<'_>]) {
    // The variable stays: a later notification needs it too.
    if let Err(e) = sd_notify::notify(false, states) {
        warn!(error = %e, "cannot notify the service manager");
    }
}
