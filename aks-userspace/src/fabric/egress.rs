//! The cluster's egress to the internet in the fabric, per `outboundType`
//! (`model::outbound`): a NAT gateway SNATs what leaves towards the internet to its
//! public address from one shared port pool; `none` drops new flows towards it.
//! `loadBalancer` adds nothing here (the nodes masquerade, see `model::outbound`).

use crate::model::outbound::{Outbound, OutboundType, NAT_GATEWAY_PORTS};

/// `nat` lines (POSTROUTING), empty unless a NAT gateway is configured: TCP and UDP
/// from the port pool, anything else (ICMP) to the address alone.
pub fn nat_rules(outbound: &Outbound) -> String {
    let (OutboundType::ManagedNatGateway, Some(ip)) = (outbound.outbound_type, outbound.public_ip)
    else {
        return String::new();
    };
    let (lo, hi) = NAT_GATEWAY_PORTS;
    let ports = u32::from(hi) - u32::from(lo) + 1;
    let comment = format!("-m comment --comment \"aksnet: managed NAT gateway ({ports} ports)\"");
    let mut out = String::new();
    for protocol in ["tcp", "udp"] {
        out.push_str(&format!(
            "-A POSTROUTING -o internet -p {protocol} {comment} -j SNAT --to-source {ip}:{lo}-{hi}\n"
        ));
    }
    out.push_str(&format!(
        "-A POSTROUTING -o internet {comment} -j SNAT --to-source {ip}\n"
    ));
    out
}

/// `filter` lines (FORWARD), empty unless egress is `none`.
pub fn filter_rules(outbound: &Outbound) -> String {
    match outbound.outbound_type {
        OutboundType::None => "-A FORWARD -o internet -m conntrack --ctstate NEW -m comment --comment \"aksnet: outboundType none, no egress\" -j DROP\n".to_owned(),
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::outbound::resolve;

    #[test]
    fn each_outbound_type_writes_its_own_rule() {
        let lb = resolve(None).expect("default");
        assert!(nat_rules(&lb).is_empty() && filter_rules(&lb).is_empty());
        let nat = resolve(Some(OutboundType::ManagedNatGateway)).expect("nat");
        let rules = nat_rules(&nat);
        assert!(rules.contains(
            "-p tcp -m comment --comment \"aksnet: managed NAT gateway (64512 ports)\" -j SNAT --to-source 198.51.100.5:1024-65535\n"
        ));
        assert_eq!(rules.lines().count(), 3, "tcp, udp, the rest: {rules}");
        assert!(filter_rules(&nat).is_empty());
        let none = resolve(Some(OutboundType::None)).expect("none");
        assert!(nat_rules(&none).is_empty());
        assert!(filter_rules(&none).contains("-o internet -m conntrack --ctstate NEW"));
    }
}
