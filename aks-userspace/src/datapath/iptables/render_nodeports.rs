//! kube-proxy's iptables mode for NodePort and LoadBalancer services: how traffic that
//! reaches a node's own address on a node port (from the load balancer, or straight
//! from a client) finds a backend.
//!
//! ```text
//! KUBE-SERVICES ─(last rule: dst is a local address)→ KUBE-NODEPORTS
//!     KUBE-NODEPORTS ─(--dport nodePort)→ KUBE-EXT-<hash>
//!         Cluster: KUBE-MARK-MASQ (the backend sees the node), KUBE-SVC-<hash> (any backend)
//!         Local:   pod-sourced or node-local traffic → KUBE-SVC-<hash>;
//!                  the rest → KUBE-SVL-<hash> (this node's backends only, no SNAT)
//! filter: KUBE-EXTERNAL-SERVICES drops new flows to the node port of a Local service
//!         that has no backend on this node
//! ```
//!
//! `KUBE-SVL-*` is what kube-proxy before 1.24 called `KUBE-XLB-*`. The chains are
//! per node: with `Local`, each node lists only its own backends.

use super::chain_name::{
    endpoint_chain, external_chain, local_chain, service_chain, service_port_name,
};
use super::render_services::{probability, protocol_match, MARK_MASQ_CHAIN, SERVICES_CHAIN};
use super::ruleset::Ruleset;
use crate::cidr::Ipv4Cidr;
use crate::model::loadbalancer::{Exposure, ExternalTrafficPolicy};
use crate::plan::ServicePlan;

pub const NODEPORTS_CHAIN: &str = "KUBE-NODEPORTS";
pub const EXTERNAL_SERVICES_CHAIN: &str = "KUBE-EXTERNAL-SERVICES";

/// Adds the NodePort chains of `exposures` for node `node`; `cluster_cidr` is
/// kube-proxy's `--cluster-cidr` (pod-sourced traffic is never made node-local).
/// Call after `add_services`, so KUBE-NODEPORTS is the last rule of KUBE-SERVICES.
pub fn add_node_ports(
    ruleset: &mut Ruleset,
    services: &[ServicePlan],
    exposures: &[Exposure],
    node: &str,
    cluster_cidr: Option<Ipv4Cidr>,
) {
    let exposed: Vec<(&Exposure, &ServicePlan)> = exposures
        .iter()
        .filter_map(|e| Some((e, services.iter().find(|s| s.name == e.service)?)))
        .collect();
    if exposed.is_empty() {
        return;
    }
    let nat = ruleset.table_mut("nat");
    nat.chain(NODEPORTS_CHAIN);
    nat.rule(
        SERVICES_CHAIN,
        format!("-m comment --comment \"kubernetes service nodeports; NOTE: this must be the last rule in this chain\" -m addrtype --dst-type LOCAL -j {NODEPORTS_CHAIN}"),
    );
    let mut no_local = Vec::new();
    for (exposure, service) in &exposed {
        let name = service_port_name(service);
        let ext = external_chain(service);
        let svc = service_chain(service);
        let p = protocol_match(service.protocol);
        nat.chain(&ext);
        nat.rule(
            NODEPORTS_CHAIN,
            format!(
                "-m comment --comment \"{name}\" {p} --dport {} -j {ext}",
                exposure.node_port
            ),
        );
        match exposure.external_traffic_policy {
            ExternalTrafficPolicy::Cluster => {
                nat.rule(&ext, format!("-m comment --comment \"masquerade traffic for {name} external destinations\" -j {MARK_MASQ_CHAIN}"));
                nat.rule(&ext, format!("-j {svc}"));
            }
            ExternalTrafficPolicy::Local => {
                let svl = local_chain(service);
                nat.chain(&svl);
                if let Some(cidr) = cluster_cidr {
                    nat.rule(&ext, format!("-s {cidr} -m comment --comment \"pod traffic for {name} external destinations\" -j {svc}"));
                }
                nat.rule(&ext, format!("-m comment --comment \"masquerade LOCAL traffic for {name} external destinations\" -m addrtype --src-type LOCAL -j {MARK_MASQ_CHAIN}"));
                nat.rule(&ext, format!("-m comment --comment \"route LOCAL traffic for {name} external destinations\" -m addrtype --src-type LOCAL -j {svc}"));
                nat.rule(&ext, format!("-j {svl}"));
                let local: Vec<_> = service.backends.iter().filter(|b| b.node == node).collect();
                if local.is_empty() {
                    no_local.push((name.clone(), p, exposure.node_port));
                }
                for (i, backend) in local.iter().enumerate() {
                    let choice = if i + 1 < local.len() {
                        format!(
                            " -m statistic --mode random --probability {}",
                            probability(local.len() - i)
                        )
                    } else {
                        String::new()
                    };
                    // The endpoint chains are the ones KUBE-SVC-* uses (add_services).
                    nat.rule(
                        &svl,
                        format!(
                            "-m comment --comment \"{name} -> {}:{}\"{choice} -j {}",
                            backend.ip,
                            backend.port,
                            endpoint_chain(service, backend)
                        ),
                    );
                }
            }
        }
    }
    if no_local.is_empty() {
        return;
    }
    let filter = ruleset.table_mut("filter");
    filter.chain(EXTERNAL_SERVICES_CHAIN);
    for hook in ["INPUT", "FORWARD"] {
        filter.rule(
            hook,
            format!("-m conntrack --ctstate NEW -m comment --comment \"kubernetes externally-visible service portals\" -j {EXTERNAL_SERVICES_CHAIN}"),
        );
    }
    for (name, p, port) in no_local {
        filter.rule(
            EXTERNAL_SERVICES_CHAIN,
            format!("-m comment --comment \"{name} has no local endpoints\" -m addrtype --dst-type LOCAL {p} --dport {port} -j DROP"),
        );
    }
}
