//! Who a per-address limit counts, and who it leaves alone.
//!
//! An IPv4 user has one address; an IPv6 user is usually handed a whole /64 and can pick any
//! address in it, so a limit per IPv6 address would limit nobody. Limits therefore count an IPv4
//! address, or an IPv6 /64. An IPv4 address that arrives written as IPv6 (`::ffff:a.b.c.d`, from a
//! dual-stack listener) is the IPv4 address it names.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

/// The address as limits see it: IPv4-mapped IPv6 addresses become IPv4.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(v6),
        },
        v4 => v4,
    }
}

/// What per-address limits count under: the family and the IPv4 address or the IPv6 /64.
pub fn limit_key(ip: IpAddr) -> (u8, u64) {
    match canonical(ip) {
        IpAddr::V4(v4) => (4, u64::from(u32::from(v4))),
        IpAddr::V6(v6) => (6, (u128::from(v6) >> 64) as u64),
    }
}

/// A network: an address and how many of its leading bits must match.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    net: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// Whether `ip` is in this network.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.net, canonical(ip)) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = mask_v4(self.prefix);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = mask_v6(self.prefix);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

fn mask_v4(prefix: u8) -> u32 {
    u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0)
}

fn mask_v6(prefix: u8) -> u128 {
    u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0)
}

impl FromStr for Cidr {
    type Err = String;

    /// `ADDRESS/PREFIX`, or a bare address (a network of one). An address with bits set past the
    /// prefix is refused: `10.1.2.3/8` is more likely a typo than a way to write `10.0.0.0/8`.
    fn from_str(s: &str) -> Result<Cidr, String> {
        let (addr, prefix) = match s.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (s, None),
        };
        let net: IpAddr = addr
            .parse()
            .map_err(|_| format!("{addr:?} is not an IP address"))?;
        let max = if net.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|&p| p <= max)
                .ok_or_else(|| format!("prefix {p:?} is not a number from 0 to {max}"))?,
        };
        let cidr = Cidr { net, prefix };
        let host_bits_clear = match net {
            IpAddr::V4(v4) => u32::from(v4) & !mask_v4(prefix) == 0,
            IpAddr::V6(v6) => u128::from(v6) & !mask_v6(prefix) == 0,
        };
        if !host_bits_clear {
            let base = match net {
                IpAddr::V4(v4) => IpAddr::V4(Ipv4Addr::from(u32::from(v4) & mask_v4(prefix))),
                IpAddr::V6(v6) => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & mask_v6(prefix))),
            };
            return Err(format!(
                "{s} has bits set past its prefix; did you mean {base}/{prefix}?"
            ));
        }
        Ok(cidr)
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.net, self.prefix)
    }
}

/// One `--exempt` value: a network, or `none`, which stands for no network at all (so
/// `--exempt none` leaves the list empty).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExemptArg(pub Option<Cidr>);

impl FromStr for ExemptArg {
    type Err = String;

    fn from_str(s: &str) -> Result<ExemptArg, String> {
        if s.eq_ignore_ascii_case("none") {
            return Ok(ExemptArg(None));
        }
        s.parse().map(|cidr| ExemptArg(Some(cidr)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn networks_contain_what_their_prefix_says() {
        let lo: Cidr = "127.0.0.0/8".parse().unwrap();
        assert!(lo.contains(ip("127.0.0.1")));
        assert!(lo.contains(ip("127.255.3.4")));
        assert!(!lo.contains(ip("128.0.0.1")));
        assert!(!lo.contains(ip("::1")));
        // Written as IPv6 by a dual-stack socket, still loopback.
        assert!(lo.contains(ip("::ffff:127.0.0.9")));
        let one: Cidr = "::1".parse().unwrap();
        assert!(one.contains(ip("::1")));
        assert!(!one.contains(ip("::2")));
        let all: Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains(ip("203.0.113.7")));
        let v6: Cidr = "2001:db8::/32".parse().unwrap();
        assert!(v6.contains(ip("2001:db8:ffff::1")));
        assert!(!v6.contains(ip("2001:db9::1")));
    }

    #[test]
    fn bad_networks_are_refused_with_the_reason() {
        assert!("10.1.2.3/8"
            .parse::<Cidr>()
            .unwrap_err()
            .contains("10.0.0.0/8"));
        assert!("10.0.0.0/33".parse::<Cidr>().is_err());
        assert!("::/129".parse::<Cidr>().is_err());
        assert!("localhost".parse::<Cidr>().is_err());
        assert!("10.0.0.0/x".parse::<Cidr>().is_err());
        assert_eq!("none".parse::<ExemptArg>().unwrap(), ExemptArg(None));
        assert_eq!(
            "::1".parse::<Cidr>().unwrap().to_string(),
            "::1/128".to_string()
        );
    }

    #[test]
    fn ipv4_counts_per_address_and_ipv6_per_64() {
        assert_ne!(limit_key(ip("10.0.0.1")), limit_key(ip("10.0.0.2")));
        assert_eq!(
            limit_key(ip("2001:db8:1:2::1")),
            limit_key(ip("2001:db8:1:2:ffff::9"))
        );
        assert_ne!(
            limit_key(ip("2001:db8:1:2::1")),
            limit_key(ip("2001:db8:1:3::1"))
        );
        assert_eq!(limit_key(ip("::ffff:10.0.0.1")), limit_key(ip("10.0.0.1")));
        // The families never share a key.
        assert_ne!(limit_key(ip("0.0.0.1")), limit_key(ip("0:0:0:1::")));
    }
}
