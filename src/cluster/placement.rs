//! Which node is a channel's home: rendezvous (highest-random-weight) hashing of the channel's key
//! over the live nodes.
//!
//! Every node computes the same answer from the same list of names, with no coordination: each
//! node gets a weight per channel from a hash of (node name, channel key), and the heaviest wins.
//! When a node comes or goes, only the channels it wins (or won) change home; every other channel
//! keeps its node, which is why this is used rather than `hash mod nodes`. The shard within the
//! node stays `shard_proto::home_of`.

/// FNV-1a 64 over `bytes`, from `hash`.
fn fnv1a(hash: u64, bytes: &[u8]) -> u64 {
    bytes.iter().fold(hash, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Spreads the bits of an FNV hash (whose low bits vary little for similar inputs) so weights of
/// similar names do not cluster; the finaliser of SplitMix64.
fn mix(mut x: u64) -> u64 {
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// Node `node`'s weight for channel `key` (a channel's lower-cased key, `ChannelName::key`).
pub fn weight(node: &str, key: &str) -> u64 {
    // The separator keeps ("ab", "c") and ("a", "bc") apart; a node name never holds 0xff.
    let h = fnv1a(0xcbf2_9ce4_8422_2325, node.as_bytes());
    mix(fnv1a(fnv1a(h, &[0xff]), key.as_bytes()))
}

/// The home node of channel `key` among `nodes` (any order; `None` if there are none). Ties, which
/// need a 64-bit collision, go to the smaller name, so every node agrees.
pub fn home_node<'a>(key: &str, nodes: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    nodes
        .into_iter()
        .max_by(|a, b| weight(a, key).cmp(&weight(b, key)).then_with(|| b.cmp(a)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("channel-{i}")).collect()
    }

    #[test]
    fn every_node_agrees_whatever_order_it_lists_the_nodes_in() {
        let a = ["node-a", "node-b", "node-c"];
        let b = ["node-c", "node-a", "node-b"];
        for key in keys(500) {
            assert_eq!(home_node(&key, a), home_node(&key, b));
        }
        assert_eq!(home_node("lobby", std::iter::empty()), None);
        assert_eq!(home_node("lobby", ["only"]), Some("only"));
    }

    #[test]
    fn channels_spread_over_the_nodes() {
        let nodes = ["host1-100", "host1-101", "host2-100"];
        let mut count = [0usize; 3];
        for key in keys(3000) {
            let home = home_node(&key, nodes).unwrap();
            count[nodes.iter().position(|n| *n == home).unwrap()] += 1;
        }
        for c in count {
            assert!((800..=1200).contains(&c), "{count:?}");
        }
    }

    #[test]
    fn a_node_that_comes_or_goes_moves_only_its_own_channels() {
        let three = ["a", "b", "c"];
        let four = ["a", "b", "c", "d"];
        let mut moved = 0;
        for key in keys(4000) {
            let before = home_node(&key, three).unwrap();
            let after = home_node(&key, four).unwrap();
            if before != after {
                // Only to the node that came.
                assert_eq!(after, "d");
                moved += 1;
            }
            // And when `b` goes, only `b`'s channels move.
            let without_b = home_node(&key, ["a", "c", "d"]).unwrap();
            if after != "b" {
                assert_eq!(without_b, after);
            }
        }
        // About a quarter of the channels go to the fourth node.
        assert!((800..=1200).contains(&moved), "{moved}");
    }
}
