//! Channel names: what is allowed, how two names compare, and which shard is a channel's home.

use std::fmt;
use std::sync::Arc;

use crate::ShardId;

/// Longest channel name, in characters.
pub const MAX_CHANNEL_NAME_CHARS: usize = 32;

/// A validated channel name.
///
/// 1 to 32 characters: letters of any script, digits, `_`, `-` and `.`; the first must be a letter or a
/// digit. So no spaces, slashes, control characters or leading dots. Two names are the same channel when
/// their lower-cased forms ([`ChannelName::key`]) are equal; the display form keeps the case it was
/// created with. Cloning is cheap (two reference counts).
#[derive(Clone)]
pub struct ChannelName {
    display: Arc<str>,
    key: Arc<str>,
}

/// Why a string is not a channel name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChannelNameError {
    /// The name is empty.
    Empty,
    /// The name has more than [`MAX_CHANNEL_NAME_CHARS`] characters.
    TooLong,
    /// The name holds a character that is not allowed, or starts with `_`, `-` or `.`.
    BadCharacter,
}

impl fmt::Display for ChannelNameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(
            "Channel names are 1 to 32 letters, digits, _, - or ., starting with a letter or digit.",
        )
    }
}

impl std::error::Error for ChannelNameError {}

impl ChannelName {
    /// Validates `name` (a leading `#` is not part of it and is refused here: strip it first).
    pub fn new(name: &str) -> Result<ChannelName, ChannelNameError> {
        let mut chars = name.chars();
        let first = chars.next().ok_or(ChannelNameError::Empty)?;
        if !first.is_alphanumeric() {
            return Err(ChannelNameError::BadCharacter);
        }
        let mut count = 1;
        for c in chars {
            count += 1;
            if !(c.is_alphanumeric() || matches!(c, '_' | '-' | '.')) {
                return Err(ChannelNameError::BadCharacter);
            }
        }
        if count > MAX_CHANNEL_NAME_CHARS {
            return Err(ChannelNameError::TooLong);
        }
        let display: Arc<str> = name.into();
        let lower = name.to_lowercase();
        // Most names are written in lower case already: then both are one allocation. Every
        // node of a cluster keeps a record of each channel its users are in, so this counts.
        let key = if lower == name {
            display.clone()
        } else {
            lower.into()
        };
        Ok(ChannelName { display, key })
    }

    /// The name as it was created, for showing.
    pub fn as_str(&self) -> &str {
        &self.display
    }

    /// The lower-cased name: equal keys are the same channel.
    pub fn key(&self) -> &Arc<str> {
        &self.key
    }
}

impl PartialEq for ChannelName {
    fn eq(&self, other: &Self) -> bool {
        self.key == other.key
    }
}

impl Eq for ChannelName {}

impl std::hash::Hash for ChannelName {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.key.hash(state)
    }
}

impl fmt::Display for ChannelName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.display)
    }
}

impl fmt::Debug for ChannelName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.display)
    }
}

/// The home shard of a channel: 64-bit FNV-1a of the UTF-8 bytes of the lower-cased name, modulo the
/// number of shards. The function is fixed here for good: the same name has the same home on every
/// run and machine with the same shard count.
pub fn home_of(name: &ChannelName, shards: usize) -> ShardId {
    home_of_key(name.key(), shards)
}

/// [`home_of`] for a channel known only by its key ([`ChannelName::key`]), as a message from
/// another node names it.
pub fn home_of_key(key: &str, shards: usize) -> ShardId {
    shard_of_bytes(key.bytes(), shards)
}

/// The shard that keeps the entry of user `name` in the directory of who is online where: the
/// same hash as [`home_of_key`] over the name with ASCII letters lower-cased (user names are
/// ASCII), so any spelling of a name finds one shard, with nothing allocated.
pub fn home_of_user(name: &str, shards: usize) -> ShardId {
    shard_of_bytes(name.bytes().map(|b| b.to_ascii_lowercase()), shards)
}

fn shard_of_bytes(bytes: impl Iterator<Item = u8>, shards: usize) -> ShardId {
    assert!(
        shards > 0 && shards <= usize::from(u16::MAX),
        "shard count out of range"
    );
    let hash = bytes.fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    ShardId((hash % shards as u64) as u16)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_names() {
        for name in [
            "a",
            "lobby",
            "Lobby_2",
            "x-y.z",
            "çafé",
            "日本語",
            "Ω",
            "1",
            &"a".repeat(32),
        ] {
            assert!(ChannelName::new(name).is_ok(), "{name:?}");
        }
    }

    #[test]
    fn invalid_names() {
        let cases: &[(&str, ChannelNameError)] = &[
            ("", ChannelNameError::Empty),
            ("../x", ChannelNameError::BadCharacter),
            ("..", ChannelNameError::BadCharacter),
            (".hidden", ChannelNameError::BadCharacter),
            ("a/b", ChannelNameError::BadCharacter),
            ("a\\b", ChannelNameError::BadCharacter),
            ("a b", ChannelNameError::BadCharacter),
            ("a\u{0}b", ChannelNameError::BadCharacter),
            ("a\u{1b}[2J", ChannelNameError::BadCharacter),
            ("a\u{7f}", ChannelNameError::BadCharacter),
            ("a\u{85}", ChannelNameError::BadCharacter),
            ("a\u{fffd}", ChannelNameError::BadCharacter),
            ("#lobby", ChannelNameError::BadCharacter),
            ("-x", ChannelNameError::BadCharacter),
            ("_x", ChannelNameError::BadCharacter),
            ("a🎉", ChannelNameError::BadCharacter),
        ];
        for (name, err) in cases {
            assert_eq!(ChannelName::new(name).unwrap_err(), *err, "{name:?}");
        }
        assert_eq!(
            ChannelName::new(&"a".repeat(33)).unwrap_err(),
            ChannelNameError::TooLong
        );
    }

    #[test]
    fn a_lower_case_name_is_one_allocation_for_both_forms() {
        let lower = ChannelName::new("lobby").unwrap();
        assert!(std::ptr::eq(lower.as_str().as_ptr(), lower.key().as_ptr()));
        let mixed = ChannelName::new("Lobby").unwrap();
        assert!(!std::ptr::eq(mixed.as_str().as_ptr(), mixed.key().as_ptr()));
        assert_eq!(lower, mixed);
    }

    #[test]
    fn names_compare_without_case() {
        let a = ChannelName::new("Lobby").unwrap();
        let b = ChannelName::new("lOBBY").unwrap();
        assert_eq!(a, b);
        assert_eq!(a.as_str(), "Lobby");
        assert_eq!(&**a.key(), "lobby");
        assert_eq!(
            ChannelName::new("ÇAFÉ").unwrap(),
            ChannelName::new("çafé").unwrap()
        );
    }

    #[test]
    fn home_is_stable_and_case_blind() {
        let name = ChannelName::new("Lobby").unwrap();
        // Pinned values: changing the hash would move every channel's home.
        assert_eq!(home_of(&name, 1), ShardId(0));
        let h2 = home_of(&name, 2);
        assert_eq!(h2, home_of(&ChannelName::new("LOBBY").unwrap(), 2));
        assert_eq!(h2, ShardId(1));
        assert_eq!(home_of(&name, 3), ShardId(1));
        // Names spread over shards.
        let mut seen = [0usize; 4];
        for i in 0..400 {
            let n = ChannelName::new(&format!("chan{i}")).unwrap();
            seen[home_of(&n, 4).index()] += 1;
        }
        assert!(seen.iter().all(|&c| c > 50), "{seen:?}");
    }
}
