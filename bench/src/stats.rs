//! What the bench counts: latency histograms (microseconds), errors by kind, and how both travel from a
//! worker process to the parent (hdrhistogram's V2 format, hex-encoded inside a JSON line).

use std::io;

use hdrhistogram::serialization::{Deserializer, Serializer, V2Serializer};
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// The largest value a histogram holds: one hour in microseconds. Larger values are clamped.
const HIST_MAX: u64 = 3_600_000_000;

/// A latency histogram in microseconds, 3 significant digits.
pub fn new_hist() -> Histogram<u64> {
    Histogram::new_with_bounds(1, HIST_MAX, 3).expect("valid histogram bounds")
}

/// Records `us` microseconds, clamped into the histogram's range.
pub fn record(hist: &mut Histogram<u64>, us: u64) {
    hist.saturating_record(us.clamp(1, HIST_MAX));
}

/// A histogram as it crosses a process boundary: V2 serialization, hex.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct HistWire(pub String);

impl HistWire {
    /// Serializes a histogram.
    pub fn encode(hist: &Histogram<u64>) -> HistWire {
        let mut bytes = Vec::new();
        V2Serializer::new()
            .serialize(hist, &mut bytes)
            .expect("serializing into memory");
        let mut hex = String::with_capacity(bytes.len() * 2);
        for b in bytes {
            hex.push_str(&format!("{b:02x}"));
        }
        HistWire(hex)
    }

    /// Reads a histogram back; an empty string is an empty histogram.
    pub fn decode(&self) -> io::Result<Histogram<u64>> {
        if self.0.is_empty() {
            return Ok(new_hist());
        }
        let bad = |what: &str| io::Error::new(io::ErrorKind::InvalidData, what.to_string());
        if self.0.len() % 2 != 0 {
            return Err(bad("odd hex length"));
        }
        let bytes = (0..self.0.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&self.0[i..i + 2], 16))
            .collect::<Result<Vec<u8>, _>>()
            .map_err(|_| bad("bad hex"))?;
        Deserializer::new()
            .deserialize(&mut io::Cursor::new(bytes))
            .map_err(|e| bad(&format!("bad histogram: {e:?}")))
    }
}

/// Adds every wire histogram into one.
pub fn merge<'a>(parts: impl IntoIterator<Item = &'a HistWire>) -> io::Result<Histogram<u64>> {
    let mut total = new_hist();
    for part in parts {
        let h = part.decode()?;
        total
            .add(&h)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("{e:?}")))?;
    }
    Ok(total)
}

/// [`merge`] for a report: a part that does not decode (a bench bug, not a server's) is said on
/// stderr, and the figures then show no samples rather than stopping the run.
pub fn merge_or_warn<'a>(parts: impl IntoIterator<Item = &'a HistWire>) -> Histogram<u64> {
    merge(parts).unwrap_or_else(|e| {
        eprintln!("bench: a worker's latency histogram did not decode: {e}");
        new_hist()
    })
}

/// The percentiles the bench reports, in microseconds.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Latency {
    pub count: u64,
    pub p50_us: u64,
    pub p90_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    pub max_us: u64,
}

impl Latency {
    /// Percentiles of a histogram (all zero when it is empty).
    pub fn of(hist: &Histogram<u64>) -> Latency {
        if hist.is_empty() {
            return Latency::default();
        }
        Latency {
            count: hist.len(),
            p50_us: hist.value_at_quantile(0.50),
            p90_us: hist.value_at_quantile(0.90),
            p99_us: hist.value_at_quantile(0.99),
            p999_us: hist.value_at_quantile(0.999),
            max_us: hist.max(),
        }
    }
}

/// Why a client failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// The server refused the connection (ECONNREFUSED).
    Refused,
    /// The connection was reset (ECONNRESET, EPIPE, ECONNABORTED).
    Reset,
    /// Connecting, logging in or a reply took longer than `--timeout`.
    Timeout,
    /// The server closed the connection when the bench did not expect it.
    Closed,
    /// The server said something the protocol does not allow here, or refused the bench.
    Protocol,
    /// Anything else, mostly local: no free port, no file descriptor.
    Other,
}

/// A failed client: what kind, and the detail for the samples.
#[derive(Clone, Debug)]
pub struct ClientError {
    pub kind: ErrorKind,
    pub detail: String,
}

impl ClientError {
    pub fn new(kind: ErrorKind, detail: impl Into<String>) -> ClientError {
        ClientError {
            kind,
            detail: detail.into(),
        }
    }

    /// Sorts an I/O error into a kind.
    pub fn io(what: &str, e: &io::Error) -> ClientError {
        use io::ErrorKind as K;
        let kind = match e.kind() {
            K::ConnectionRefused => ErrorKind::Refused,
            K::ConnectionReset | K::ConnectionAborted | K::BrokenPipe => ErrorKind::Reset,
            K::TimedOut => ErrorKind::Timeout,
            K::UnexpectedEof => ErrorKind::Closed,
            _ => ErrorKind::Other,
        };
        ClientError::new(kind, format!("{what}: {e}"))
    }
}

/// Errors counted by kind.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Errors {
    pub refused: u64,
    pub reset: u64,
    pub timeout: u64,
    pub closed: u64,
    pub protocol: u64,
    pub other: u64,
}

impl Errors {
    pub fn count(&mut self, kind: ErrorKind) {
        match kind {
            ErrorKind::Refused => self.refused += 1,
            ErrorKind::Reset => self.reset += 1,
            ErrorKind::Timeout => self.timeout += 1,
            ErrorKind::Closed => self.closed += 1,
            ErrorKind::Protocol => self.protocol += 1,
            ErrorKind::Other => self.other += 1,
        }
    }

    pub fn add(&mut self, o: &Errors) {
        self.refused += o.refused;
        self.reset += o.reset;
        self.timeout += o.timeout;
        self.closed += o.closed;
        self.protocol += o.protocol;
        self.other += o.other;
    }

    pub fn total(&self) -> u64 {
        self.refused + self.reset + self.timeout + self.closed + self.protocol + self.other
    }

    /// `refused 0, reset 0, ...`, or `none`.
    pub fn describe(&self) -> String {
        if self.total() == 0 {
            return "none".to_string();
        }
        let parts = [
            ("refused", self.refused),
            ("reset", self.reset),
            ("timeout", self.timeout),
            ("closed", self.closed),
            ("protocol", self.protocol),
            ("other", self.other),
        ];
        parts
            .iter()
            .filter(|(_, n)| *n > 0)
            .map(|(k, n)| format!("{k} {n}"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_merge_across_the_wire() {
        let mut a = new_hist();
        let mut b = new_hist();
        for us in 1..=1000 {
            record(&mut a, us);
        }
        record(&mut b, 50_000);
        record(&mut b, u64::MAX);
        let wires = [
            HistWire::encode(&a),
            HistWire::encode(&b),
            HistWire::default(),
        ];
        let total = merge(&wires).unwrap();
        assert_eq!(total.len(), 1002);
        let lat = Latency::of(&total);
        assert!((499..=501).contains(&lat.p50_us), "{lat:?}");
        assert!(lat.max_us >= HIST_MAX);
        assert!(HistWire("zz".into()).decode().is_err());
    }

    #[test]
    fn errors_by_kind() {
        let mut e = Errors::default();
        assert_eq!(e.describe(), "none");
        e.count(ErrorKind::Timeout);
        e.count(ErrorKind::Protocol);
        e.count(ErrorKind::Protocol);
        let io = io::Error::from(io::ErrorKind::ConnectionRefused);
        e.count(ClientError::io("connect", &io).kind);
        assert_eq!(e.describe(), "refused 1, timeout 1, protocol 2");
        assert_eq!(e.total(), 4);
    }
}
