//! IPv4 CIDR blocks: the one address type the cluster description, the planner and the
//! datapaths share. Small on purpose: parse, contain, overlap, carve subnets, index hosts.

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// An IPv4 network such as `10.224.0.0/24`. The address is always the network address:
/// a block with host bits set is rejected, because Azure and Kubernetes reject it too and
/// silently masking it would plan a different network than the one the user wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Ipv4Cidr {
    network: Ipv4Addr,
    prefix: u8,
}

/// Why a string is not a usable CIDR block.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CidrError {
    #[error("`{0}` is not an IPv4 CIDR block like 10.224.0.0/24")]
    Syntax(String),
    #[error("`{0}` has a prefix longer than /32")]
    PrefixTooLong(String),
    #[error("{given} has host bits set; did you mean {suggested}?")]
    HostBitsSet { given: String, suggested: Ipv4Cidr },
}

impl Ipv4Cidr {
    /// The block `network/prefix`; fails when `network` has bits set below the prefix.
    pub fn new(network: Ipv4Addr, prefix: u8) -> Result<Self, CidrError> {
        if prefix > 32 {
            return Err(CidrError::PrefixTooLong(format!("{network}/{prefix}")));
        }
        let masked = Ipv4Addr::from(u32::from(network) & mask(prefix));
        if masked != network {
            return Err(CidrError::HostBitsSet {
                given: format!("{network}/{prefix}"),
                suggested: Ipv4Cidr {
                    network: masked,
                    prefix,
                },
            });
        }
        Ok(Ipv4Cidr { network, prefix })
    }

    /// `new` for constants (defaults known at compile time); `None` on host bits.
    pub const fn new_const(network: Ipv4Addr, prefix: u8) -> Option<Self> {
        if prefix > 32 || network.to_bits() & mask(prefix) != network.to_bits() {
            return None;
        }
        Some(Ipv4Cidr { network, prefix })
    }

    pub fn network(&self) -> Ipv4Addr {
        self.network
    }

    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    /// Number of addresses in the block, network and broadcast included (2^(32-prefix)).
    pub fn size(&self) -> u64 {
        1u64 << (32 - u32::from(self.prefix))
    }

    /// The `n`th address of the block (0 is the network address), if the block has one.
    pub fn nth(&self, n: u64) -> Option<Ipv4Addr> {
        if n >= self.size() {
            return None;
        }
        // n < 2^32 here, so the conversion and the addition cannot overflow.
        Some(Ipv4Addr::from(u32::from(self.network) + n as u32))
    }

    /// The last address of the block (the broadcast address for prefixes below /31).
    pub fn last(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.network) | !mask(self.prefix))
    }

    pub fn contains(&self, addr: Ipv4Addr) -> bool {
        u32::from(addr) & mask(self.prefix) == u32::from(self.network)
    }

    /// Whether `other` lies entirely inside this block.
    pub fn contains_cidr(&self, other: &Ipv4Cidr) -> bool {
        other.prefix >= self.prefix && self.contains(other.network)
    }

    /// Whether the two blocks share at least one address (for CIDRs: one contains the other).
    pub fn overlaps(&self, other: &Ipv4Cidr) -> bool {
        self.contains_cidr(other) || other.contains_cidr(self)
    }

    /// How many `/new_prefix` blocks this block splits into; zero when `new_prefix` is
    /// shorter than this block's prefix.
    pub fn subnet_count(&self, new_prefix: u8) -> u64 {
        if new_prefix < self.prefix || new_prefix > 32 {
            return 0;
        }
        1u64 << (new_prefix - self.prefix)
    }

    /// The `index`th `/new_prefix` block inside this one, in address order.
    pub fn subnet(&self, new_prefix: u8, index: u64) -> Option<Ipv4Cidr> {
        if index >= self.subnet_count(new_prefix) {
            return None;
        }
        let step = 1u64 << (32 - u32::from(new_prefix));
        let start = u64::from(u32::from(self.network)) + index * step;
        let network = Ipv4Addr::from(u32::try_from(start).ok()?);
        Some(Ipv4Cidr {
            network,
            prefix: new_prefix,
        })
    }

    /// The longest prefix (smallest block) that still holds `addresses` addresses, if any.
    pub fn prefix_for(addresses: u64) -> Option<u8> {
        (0..=32u8)
            .rev()
            .find(|prefix| (1u64 << (32 - u32::from(*prefix))) >= addresses)
    }
}

/// The netmask of a prefix as a host-order integer (0 for /0, all ones for /32).
const fn mask(prefix: u8) -> u32 {
    if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - prefix as u32)
    }
}

impl fmt::Display for Ipv4Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

impl FromStr for Ipv4Cidr {
    type Err = CidrError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let syntax = || CidrError::Syntax(s.to_string());
        let (addr, prefix) = s.trim().split_once('/').ok_or_else(syntax)?;
        let addr: Ipv4Addr = addr.parse().map_err(|_| syntax())?;
        let prefix: u8 = prefix.parse().map_err(|_| syntax())?;
        Ipv4Cidr::new(addr, prefix)
    }
}

// As a string in YAML and JSON, the way every Azure and Kubernetes tool writes it.
impl Serialize for Ipv4Cidr {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Ipv4Cidr {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        // A visitor rather than `String::deserialize` + parse: an error raised inside the
        // visitor carries the deserializer's position and field path (`vnet.nodeSubnet`).
        struct CidrVisitor;
        impl serde::de::Visitor<'_> for CidrVisitor {
            type Value = Ipv4Cidr;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an IPv4 CIDR block like 10.224.0.0/24")
            }
            fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<Ipv4Cidr, E> {
                text.parse().map_err(E::custom)
            }
        }
        deserializer.deserialize_str(CidrVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cidr(s: &str) -> Ipv4Cidr {
        s.parse().expect("test CIDR")
    }

    #[test]
    fn parses_and_prints() {
        assert_eq!(cidr("10.224.0.0/12").to_string(), "10.224.0.0/12");
        assert_eq!(cidr("0.0.0.0/0").size(), 1 << 32);
        assert_eq!(cidr("10.0.0.7/32").size(), 1);
    }

    #[test]
    fn rejects_host_bits_and_suggests_the_network() {
        let err = "10.224.0.5/24".parse::<Ipv4Cidr>().unwrap_err();
        assert_eq!(
            err.to_string(),
            "10.224.0.5/24 has host bits set; did you mean 10.224.0.0/24?"
        );
    }

    #[test]
    fn rejects_bad_syntax() {
        for bad in ["10.0.0.0", "10.0.0/8", "10.0.0.0/33", "10.0.0.0/x", ""] {
            assert!(bad.parse::<Ipv4Cidr>().is_err(), "{bad} should not parse");
        }
    }

    #[test]
    fn containment_and_overlap() {
        let vnet = cidr("10.224.0.0/12");
        assert!(vnet.contains_cidr(&cidr("10.224.0.0/24")));
        assert!(vnet.contains_cidr(&cidr("10.239.255.0/24")));
        assert!(!vnet.contains_cidr(&cidr("10.240.0.0/24")));
        assert!(!cidr("10.224.0.0/24").contains_cidr(&vnet));
        assert!(vnet.overlaps(&cidr("10.224.0.0/24")));
        assert!(cidr("10.224.0.0/24").overlaps(&vnet));
        assert!(!vnet.overlaps(&cidr("10.0.0.0/16")));
        assert_eq!(vnet.last(), Ipv4Addr::new(10, 239, 255, 255));
    }

    #[test]
    fn hosts_and_subnets() {
        let node_subnet = cidr("10.224.0.0/24");
        assert_eq!(node_subnet.nth(4), Some(Ipv4Addr::new(10, 224, 0, 4)));
        assert_eq!(node_subnet.nth(255), Some(Ipv4Addr::new(10, 224, 0, 255)));
        assert_eq!(node_subnet.nth(256), None);

        let pod_cidr = cidr("10.244.0.0/16");
        assert_eq!(pod_cidr.subnet_count(24), 256);
        assert_eq!(pod_cidr.subnet(24, 1), Some(cidr("10.244.1.0/24")));
        assert_eq!(pod_cidr.subnet(24, 255), Some(cidr("10.244.255.0/24")));
        assert_eq!(pod_cidr.subnet(24, 256), None);
        assert_eq!(cidr("10.244.0.0/25").subnet_count(24), 0);
    }

    #[test]
    fn smallest_block_for_a_count() {
        assert_eq!(Ipv4Cidr::prefix_for(256), Some(24));
        assert_eq!(Ipv4Cidr::prefix_for(257), Some(23));
        assert_eq!(Ipv4Cidr::prefix_for(4021), Some(20));
        assert_eq!(Ipv4Cidr::prefix_for(1), Some(32));
        assert_eq!(Ipv4Cidr::prefix_for((1 << 32) + 1), None);
    }
}
