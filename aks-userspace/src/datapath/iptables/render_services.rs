//! kube-proxy's iptables mode: ClusterIP services as `nat` chains.
//!
//! ```text
//! PREROUTING, OUTPUT ─→ KUBE-SERVICES ─(-d VIP --dport P)→ KUBE-SVC-<hash>
//!     KUBE-SVC-<hash> ─(statistic random 1/n, 1/(n-1), …, last always)→ KUBE-SEP-<hash>
//!         KUBE-SEP-<hash>: from the backend itself → KUBE-MARK-MASQ (hairpin); DNAT
//! POSTROUTING ─→ KUBE-POSTROUTING: MASQUERADE what KUBE-MARK-MASQ marked (0x4000)
//! ```
//!
//! Each backend of n is reached with probability 1/n: the i-th rule (0-based) matches
//! 1/(n-i) of what the rules before it let through, and the last matches the rest. The
//! first packet of a connection walks KUBE-SERVICES rule by rule, so its cost grows with
//! the number of services, which is what the benchmarks measure.

use std::net::Ipv4Addr;

use super::chain_name::{endpoint_chain, service_chain, service_port_name};
use super::ruleset::{Ruleset, Table};
use crate::cidr::Ipv4Cidr;
use crate::model::Protocol;
use crate::plan::ServicePlan;

pub const SERVICES_CHAIN: &str = "KUBE-SERVICES";
pub const MARK_MASQ_CHAIN: &str = "KUBE-MARK-MASQ";
pub const POSTROUTING_CHAIN: &str = "KUBE-POSTROUTING";
pub const FORWARD_CHAIN: &str = "KUBE-FORWARD";
/// The mark bit KUBE-MARK-MASQ sets (kube-proxy's default `--masquerade-bit` 14).
pub const MASQ_MARK: &str = "0x4000/0x4000";

/// How kube-proxy was started, as far as the rules depend on it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProxyOptions {
    /// `--cluster-cidr`: traffic to a service from outside it (a node, say) is
    /// masqueraded. AKS sets it for kubenet (the pod CIDR); legacy Azure CNI has none.
    pub cluster_cidr: Option<Ipv4Cidr>,
    /// `--masquerade-all`: masquerade every service connection. Used when the node lacks
    /// br_netfilter: a reply from a backend on the same bridge would otherwise reach
    /// the client without passing conntrack, un-DNATed (see `apply`).
    pub masquerade_all: bool,
}

pub(super) fn protocol_match(protocol: Protocol) -> &'static str {
    match protocol {
        Protocol::Tcp => "-p tcp -m tcp",
        Protocol::Udp => "-p udp -m udp",
    }
}

/// The matches that pick a service's traffic.
fn service_match(cluster_ip: Ipv4Addr, protocol: Protocol, port: u16) -> String {
    format!(
        "-d {cluster_ip}/32 {} --dport {port}",
        protocol_match(protocol)
    )
}

/// kube-proxy writes probabilities with ten decimals.
pub(super) fn probability(remaining: usize) -> String {
    format!("{:.10}", 1.0 / remaining as f64)
}

/// Adds kube-proxy's chains for `services` to the `nat` (and `filter`) tables.
pub fn add_services(ruleset: &mut Ruleset, services: &[ServicePlan], options: ProxyOptions) {
    let nat = ruleset.table_mut("nat");
    add_plumbing(nat);
    for service in services {
        add_service(nat, service, options);
    }

    // Forwarding of marked and established service traffic is accepted even where the
    // FORWARD policy drops (it is ACCEPT in these namespaces; kube-proxy adds it anyway).
    let filter = ruleset.table_mut("filter");
    filter.chain(FORWARD_CHAIN);
    filter.rule(
        "FORWARD",
        format!("-m comment --comment \"kubernetes forwarding rules\" -j {FORWARD_CHAIN}"),
    );
    filter.rule(
        FORWARD_CHAIN,
        format!("-m comment --comment \"kubernetes forwarding rules\" -m mark --mark {MASQ_MARK} -j ACCEPT"),
    );
    filter.rule(
        FORWARD_CHAIN,
        "-m comment --comment \"kubernetes forwarding conntrack rule\" -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
    );
}

/// The chains every service shares: the hooks, marking and masquerading.
fn add_plumbing(nat: &mut Table) {
    for chain in [SERVICES_CHAIN, POSTROUTING_CHAIN, MARK_MASQ_CHAIN] {
        nat.chain(chain);
    }
    for hook in ["PREROUTING", "OUTPUT"] {
        nat.rule(
            hook,
            format!("-m comment --comment \"kubernetes service portals\" -j {SERVICES_CHAIN}"),
        );
    }
    nat.rule(
        "POSTROUTING",
        format!("-m comment --comment \"kubernetes postrouting rules\" -j {POSTROUTING_CHAIN}"),
    );
    nat.rule(MARK_MASQ_CHAIN, format!("-j MARK --set-xmark {MASQ_MARK}"));
    // Unmarked traffic returns; the mark is cleared so it does not follow the packet
    // (e.g. into a tunnel), then the connection is masqueraded.
    nat.rule(
        POSTROUTING_CHAIN,
        format!("-m mark ! --mark {MASQ_MARK} -j RETURN"),
    );
    nat.rule(POSTROUTING_CHAIN, "-j MARK --set-xmark 0x4000/0x0");
    nat.rule(
        POSTROUTING_CHAIN,
        "-m comment --comment \"kubernetes service traffic requiring SNAT\" -j MASQUERADE --random-fully",
    );
}

fn add_service(nat: &mut Table, service: &ServicePlan, options: ProxyOptions) {
    let port_name = service_port_name(service);
    let svc_chain = service_chain(service);
    let matches = service_match(service.cluster_ip, service.protocol, service.port);
    nat.chain(&svc_chain);
    nat.rule(
        SERVICES_CHAIN,
        format!("{matches} -m comment --comment \"{port_name} cluster IP\" -j {svc_chain}"),
    );

    if options.masquerade_all {
        nat.rule(
            &svc_chain,
            format!(
                "{matches} -m comment --comment \"{port_name} cluster IP\" -j {MARK_MASQ_CHAIN}"
            ),
        );
    } else if let Some(cluster_cidr) = options.cluster_cidr {
        nat.rule(
            &svc_chain,
            format!("! -s {cluster_cidr} {matches} -m comment --comment \"{port_name} cluster IP\" -j {MARK_MASQ_CHAIN}"),
        );
    }

    // The endpoint chains' rules follow the service chain's, so each service reads as
    // one block: its entry, its choice among backends, then each backend.
    let mut endpoint_rules = Vec::new();
    let count = service.backends.len();
    for (i, backend) in service.backends.iter().enumerate() {
        let sep_chain = endpoint_chain(service, backend);
        let endpoint = format!("{}:{}", backend.ip, backend.port);
        nat.chain(&sep_chain);
        let choice = if i + 1 < count {
            format!(
                " -m statistic --mode random --probability {}",
                probability(count - i)
            )
        } else {
            String::new()
        };
        nat.rule(
            &svc_chain,
            format!("-m comment --comment \"{port_name} -> {endpoint}\"{choice} -j {sep_chain}"),
        );
        // A pod that reaches itself through the service must be masqueraded, or it
        // would answer its own address and drop the reply as not its connection.
        endpoint_rules.push((
            sep_chain.clone(),
            format!(
                "-s {}/32 -m comment --comment \"{port_name}\" -j {MARK_MASQ_CHAIN}",
                backend.ip
            ),
        ));
        endpoint_rules.push((
            sep_chain,
            format!(
                "{} -m comment --comment \"{port_name}\" -j DNAT --to-destination {endpoint}",
                protocol_match(service.protocol)
            ),
        ));
    }
    for (chain, spec) in endpoint_rules {
        nat.rule(&chain, spec);
    }
}
