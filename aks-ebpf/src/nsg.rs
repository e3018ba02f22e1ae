//! The NSG at the uplink (XDP): rules in priority order, first match decides, no match
//! allows.

use aks_ebpf_common::{nsg::NSG_DENY, Reason, NSG_CAPACITY};
use aya_ebpf::bindings::xdp_action::{XDP_DROP, XDP_PASS};

use crate::{maps, packet, packet::Frame};

/// The reason and XDP verdict for a frame arriving at the uplink.
#[inline(always)]
pub fn filter(frame: &Frame) -> (Reason, u32) {
    let ip = match packet::parse_ipv4(frame) {
        Ok(Some(ip)) => ip,
        Ok(None) => return (Reason::PassedNonIpv4, XDP_PASS),
        Err(reason) => return (reason, XDP_DROP),
    };
    let (src, dst, protocol) = (ip.src(), ip.dst(), ip.protocol());
    let port = match packet::ports(frame, &ip) {
        Ok(ports) => ports.map(|(_, dst)| dst),
        Err(reason) => return (reason, XDP_DROP),
    };
    let rules = maps::config().map_or(0, |c| c.nsg_rules);
    for index in 0..NSG_CAPACITY {
        if index >= rules {
            break;
        }
        let Some(rule) = maps::nsg_rule(index) else {
            break;
        };
        if rule.matches(src, dst, protocol, port) {
            if rule.action == NSG_DENY {
                return (Reason::DropNsgDenied, XDP_DROP);
            }
            break;
        }
    }
    (Reason::NsgAllowed, XDP_PASS)
}
