//! Byte values from the telnet RFCs, grouped so that names which collide on the wire
//! (`EOR` is both command 239 and option 25) stay apart: `cmd::EOR` versus `opt::EOR`.

/// Command bytes: what may follow IAC (RFC 854, plus EOR from RFC 885).
pub mod cmd {
    /// End of record (RFC 885), sent after a prompt when the EOR option is on.
    pub const EOR: u8 = 239;
    /// End of subnegotiation parameters.
    pub const SE: u8 = 240;
    /// No operation.
    pub const NOP: u8 = 241;
    /// Data mark: the data-stream part of a Synch.
    pub const DM: u8 = 242;
    /// Break.
    pub const BRK: u8 = 243;
    /// Interrupt process.
    pub const IP: u8 = 244;
    /// Abort output.
    pub const AO: u8 = 245;
    /// Are you there.
    pub const AYT: u8 = 246;
    /// Erase character.
    pub const EC: u8 = 247;
    /// Erase line.
    pub const EL: u8 = 248;
    /// Go ahead: MUD clients use it to find the end of a prompt that has no newline.
    pub const GA: u8 = 249;
    /// Start of subnegotiation.
    pub const SB: u8 = 250;
    /// Sender wants to perform, or is performing, an option.
    pub const WILL: u8 = 251;
    /// Sender refuses to perform, or stops performing, an option.
    pub const WONT: u8 = 252;
    /// Sender asks the receiver to perform an option.
    pub const DO: u8 = 253;
    /// Sender asks the receiver to stop performing an option.
    pub const DONT: u8 = 254;
    /// Interpret as command: introduces every sequence above; doubled, it is data byte 0xFF.
    pub const IAC: u8 = 255;
}

/// Option codes used by ringtalk (assigned numbers registry).
pub mod opt {
    /// Echo (RFC 857): when we WILL it, we echo the user's typing (or hide it, for passwords).
    pub const ECHO: u8 = 1;
    /// Suppress go-ahead (RFC 858): together with ECHO it puts plain clients in character mode.
    pub const SGA: u8 = 3;
    /// Terminal type (RFC 1091): the client names itself, e.g. `XTERM-256COLOR` or `MUDLET`.
    pub const TTYPE: u8 = 24;
    /// End of record (RFC 885): lets us mark the end of a prompt with IAC EOR.
    pub const EOR: u8 = 25;
    /// Negotiate about window size (RFC 1073).
    pub const NAWS: u8 = 31;
    /// Terminal speed (RFC 1079); PuTTY offers it, we refuse it.
    pub const TSPEED: u8 = 32;
    /// Linemode (RFC 1184): never requested, always refused, because inetutils telnet switches
    /// to its own local line editing when it is enabled.
    pub const LINEMODE: u8 = 34;
    /// New environment (RFC 1572); PuTTY offers it, we refuse it.
    pub const NEW_ENVIRON: u8 = 39;
    /// MUD Server Status Protocol: we offer it, and send the table (see `crate::mssp`) to a
    /// client that agrees.
    pub const MSSP: u8 = 70;
}

/// TTYPE subnegotiation verb: "my terminal type IS ...", sent by the client.
pub const TTYPE_IS: u8 = 0;
/// TTYPE subnegotiation verb: "SEND your terminal type", sent by us.
pub const TTYPE_SEND: u8 = 1;

/// Carriage return.
pub(crate) const CR: u8 = b'\r';
/// Line feed.
pub(crate) const LF: u8 = b'\n';
/// NUL, which follows a CR that is not part of a newline (RFC 854).
pub(crate) const NUL: u8 = 0;
