//! `NSG`: network security group rules enforced by XDP on the node uplink, in priority
//! order: the first rule that matches decides; no match allows (Azure's default rules
//! allow traffic inside the VNet).

/// Name of the map in the object and of its pin file.
pub const NSG_MAP: &str = "NSG";
/// How many rules fit; the XDP program walks at most this many.
pub const NSG_CAPACITY: u32 = 64;

pub const NSG_ALLOW: u8 = 0;
pub const NSG_DENY: u8 = 1;

/// `NsgRule::protocol` value matching every protocol.
pub const NSG_ANY_PROTOCOL: u8 = 0;

/// One rule. Addresses and masks in map form (see [`crate::addr`]); a packet matches
/// when `(src & src_mask) == src_addr`, the same for the destination, the protocol is
/// equal (or the rule's is 0), and — for TCP and UDP — the destination port lies in
/// `port_lo..=port_hi` (host byte order; `0..=65535` for any).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NsgRule {
    pub src_addr: u32,
    pub src_mask: u32,
    pub dst_addr: u32,
    pub dst_mask: u32,
    pub port_lo: u16,
    pub port_hi: u16,
    /// IANA protocol number (6 TCP, 17 UDP, 1 ICMP) or `NSG_ANY_PROTOCOL`.
    pub protocol: u8,
    /// `NSG_ALLOW` or `NSG_DENY`.
    pub action: u8,
    pub _pad: [u8; 2],
}

const _: () = assert!(core::mem::size_of::<NsgRule>() == 24);

impl NsgRule {
    /// Whether a packet with these fields matches (shared by the XDP program and the
    /// unit tests, so both mean the same thing).
    #[inline(always)]
    pub fn matches(&self, src: u32, dst: u32, protocol: u8, dst_port: Option<u16>) -> bool {
        if src & self.src_mask != self.src_addr || dst & self.dst_mask != self.dst_addr {
            return false;
        }
        if self.protocol != NSG_ANY_PROTOCOL && self.protocol != protocol {
            return false;
        }
        match dst_port {
            Some(port) => port >= self.port_lo && port <= self.port_hi,
            // Protocols without ports match only rules that do not narrow ports.
            None => self.port_lo == 0 && self.port_hi == u16::MAX,
        }
    }
}

#[cfg(feature = "user")]
// SAFETY: repr(C), explicit padding, size asserted; every bit pattern valid.
unsafe impl aya::Pod for NsgRule {}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::addr::{ipv4, netmask};

    fn deny_tcp_8080_to(net: [u8; 4], prefix: u32) -> NsgRule {
        NsgRule {
            dst_addr: ipv4(net) & netmask(prefix),
            dst_mask: netmask(prefix),
            port_lo: 8080,
            port_hi: 8080,
            protocol: 6,
            action: NSG_DENY,
            ..Default::default()
        }
    }

    #[test]
    fn a_rule_matches_cidr_protocol_and_port() {
        let rule = deny_tcp_8080_to([10, 224, 0, 0], 24);
        let pod = ipv4([10, 224, 0, 6]);
        let any = ipv4([192, 168, 100, 10]);
        assert!(rule.matches(any, pod, 6, Some(8080)));
        assert!(!rule.matches(any, pod, 6, Some(8081)), "other port");
        assert!(!rule.matches(any, pod, 17, Some(8080)), "other protocol");
        assert!(
            !rule.matches(any, ipv4([10, 224, 1, 6]), 6, Some(8080)),
            "outside the CIDR"
        );
        assert!(
            !rule.matches(any, pod, 6, None),
            "a port rule never matches portless traffic"
        );
    }
}
