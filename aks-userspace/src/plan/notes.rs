//! Notes `plan` prints about the chosen AKS model: where AKS as documented today differs
//! from the study chapter the emulation started from, with the document that says so.

use crate::model::{Cluster, PodNetwork};

/// The notes for `cluster`, most important first.
pub fn notes(cluster: &Cluster) -> Vec<String> {
    let network = cluster.pod_network;
    let mut notes = vec![format!(
        "{}: default maxPods {} (concepts-network-ip-address-planning.md); every pool needs \
         room for 30 pods (count × maxPods)",
        network.title(),
        crate::model::defaults::max_pods(network)
    )];
    notes.push(match network {
        PodNetwork::Kubenet => "ip-masq-agent default: only podCidr keeps pod addresses; VNet \
             resources see the node address (configure-kubenet.md). The study chapter also \
             kept VNet destinations unmasqueraded."
            .to_string(),
        PodNetwork::AzureNodeSubnet => "ip-masq-agent default: only the VNet sees pod \
             addresses; on-prem and the internet see the node address \
             (concepts-network-legacy-cni.md). The study chapter kept on-prem unmasqueraded too."
            .to_string(),
        PodNetwork::AzurePodSubnet => "Pod Subnet runs no ip-masq-agent: pods keep their \
             address toward the VNet and on-prem (concepts-network-legacy-cni.md FAQ); the \
             emulation masquerades only the internet, where Azure's outbound load balancer \
             would."
            .to_string(),
        PodNetwork::AzureOverlay => "Overlay: pods take podCidr addresses, a /24 per node; \
             the VNet has no route for them (no UDR, no 400-route limit); pod → pod across \
             nodes keeps pod addresses through the overlay, everything outside podCidr is \
             SNATed to the node, and VNet and on-prem hosts cannot open connections to pods \
             (concepts-network-azure-cni-overlay.md)."
            .to_string(),
    });
    if network == PodNetwork::Kubenet {
        notes.push(
            "kubenet retires on 31 March 2028 (includes/kubenet-retirement.md); Azure CNI \
             Overlay is the default for new clusters"
                .to_string(),
        );
    }
    notes
}
