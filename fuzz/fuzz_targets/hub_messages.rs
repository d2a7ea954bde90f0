//! Hubs of 2 to 4 shards, driven by any bytes through joins, switches, exits, lines, who, list,
//! sessions ending and moving home, and the rings between them moving in any order; an input may
//! also forge, repeat, reorder, misroute and lose messages. No hub ever panics, and while the
//! protocol is kept, membership, answers and every member's lines stay right after every step.
//! The harness, and what the bytes mean, is `tests/hub_sim`, which `tests/properties.rs` runs too.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../../tests/hub_sim/mod.rs"]
mod hub_sim;

fuzz_target!(|data: &[u8]| hub_sim::run(data));
