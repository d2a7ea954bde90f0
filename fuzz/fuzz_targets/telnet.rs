//! The telnet codec, fed any bytes in two reads split where the first byte says: it never panics,
//! and its replies stay small (negotiation answers, never an echo of the input).
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringtalk::telnet::Telnet;

fuzz_target!(|data: &[u8]| {
    let split = data.first().map_or(0, |&b| usize::from(b)).min(data.len());
    let mut telnet = Telnet::new();
    let (mut events, mut out) = (Vec::new(), Vec::new());
    telnet.receive(&data[..split], &mut events, &mut out);
    telnet.receive(&data[split..], &mut events, &mut out);
    assert!(events.len() <= data.len());
    assert!(
        out.len() <= 3 * data.len() + 64,
        "{} reply bytes for {}",
        out.len(),
        data.len()
    );
});
