//! A sans-IO telnet codec: bytes in, events and reply bytes out; it never touches a socket.
//!
//! # Why our own
//!
//! No published crate fits a server holding tens of thousands of connections (see
//! `notes/telnet.md`): nectar 0.4 panicked on a subnegotiation split across two reads, and
//! libmudtelnet is built for clients (it drops the NAWS/TTYPE data a client sends, tracks no
//! negotiation state and buffers an unfinished subnegotiation without limit). This module
//! follows libtelnet's design instead, small enough to read in one sitting.
//!
//! # Parts
//!
//! * [`codec`]: [`Telnet`], the per-connection state machine (one `match` over a small state
//!   enum), and the [`Event`]s it reports; it documents end-of-line and subnegotiation handling.
//! * [`options`]: RFC 1143 Q-method negotiation, so that no exchange of WILL/DO can loop, and
//!   the [`Policy`] table of options we accept (everything else is refused).
//! * [`output`]: [`escape_into`], the single function all outgoing text goes through (0xFF
//!   doubled, `\n` made CR LF), and the fixed sequences a session sends (GA, EOR, TTYPE SEND).
//! * [`consts`]: byte values, with commands in [`cmd`] and option codes in [`opt`].
//!
//! # Use
//!
//! ```ignore
//! let mut telnet = Telnet::new();
//! let (mut events, mut out) = (Vec::new(), Vec::new());
//! telnet.request_remote(opt::NAWS, true, &mut out);   // IAC DO NAWS
//! telnet.receive(&bytes_from_socket, &mut events, &mut out);
//! // act on `events`, then write `out` (negotiation replies) to the socket
//! ```
//!
//! Tests are golden transcripts (`golden/transcripts.txt`: input written as `%FF%FD%1F`, the
//! expected events and reply bytes), Q-method scenarios, and a randomized split-invariance test.

pub mod codec;
pub mod consts;
pub mod options;
pub mod output;

#[cfg(test)]
mod testutil;

pub use codec::{Event, SbIgnored, Telnet, MAX_SB_LEN, MAX_TTYPE_LEN};
pub use consts::{cmd, opt};
pub use options::{OptionPolicy, Policy, DEFAULT_POLICY, MAX_TRACKED};
pub use output::{escape_into, send_eor, send_ga, send_ttype_request};
