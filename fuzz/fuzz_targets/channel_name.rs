//! Channel names: any text is accepted or refused without panicking, and an accepted name's log
//! file stays in the log directory.
#![no_main]

use std::path::{Component, Path};

use libfuzzer_sys::fuzz_target;
use ringtalk::chanlog::file_stem;
use shard_proto::ChannelName;

fuzz_target!(|name: &str| {
    if let Ok(channel) = ChannelName::new(name) {
        let file = format!("{}.2026-11-30.log", file_stem(channel.key()));
        let components: Vec<Component> = Path::new(&file).components().collect();
        assert_eq!(components.len(), 1, "{file:?}");
        assert!(matches!(components[0], Component::Normal(_)), "{file:?}");
        assert!(!file.starts_with('.') && !file.contains('\0'), "{file:?}");
    }
});
