//! Chain names derived from the object they serve, the way kube-proxy names them: a
//! prefix and the first 16 characters of the base32 (RFC 4648) SHA-256 of a string that
//! identifies the service port (and, for an endpoint, its address). The same service
//! always gets the same chain on every node and in every run, and 80 bits keep names
//! unique well beyond 10,000 services while fitting iptables' 28-character limit.

use data_encoding::BASE32_NOPAD;
use sha2::{Digest, Sha256};

use crate::model::Protocol;
use crate::plan::{Backend, ServicePlan};

/// Services of the description live in this Kubernetes namespace.
pub const SERVICE_NAMESPACE: &str = "default";

/// Characters of the hash kept in a chain name.
const HASH_CHARS: usize = 16;

/// `namespace/name`: how kube-proxy names a service port that has no port name (the
/// description's services have one unnamed port each).
pub fn service_port_name(service: &ServicePlan) -> String {
    format!("{SERVICE_NAMESPACE}/{}", service.name)
}

fn protocol_name(protocol: Protocol) -> &'static str {
    match protocol {
        Protocol::Tcp => "tcp",
        Protocol::Udp => "udp",
    }
}

/// `KUBE-SVC-<hash of service port and protocol>`.
pub fn service_chain(service: &ServicePlan) -> String {
    format!(
        "KUBE-SVC-{}",
        short_hash(&format!(
            "{}{}",
            service_port_name(service),
            protocol_name(service.protocol)
        ))
    )
}

/// `KUBE-EXT-<hash>`: where a service's external traffic (NodePort, load balancer)
/// enters; the hash is the service chain's.
pub fn external_chain(service: &ServicePlan) -> String {
    service_chain(service).replacen("KUBE-SVC-", "KUBE-EXT-", 1)
}

/// `KUBE-SVL-<hash>`: the service's node-local endpoints (`externalTrafficPolicy: Local`).
pub fn local_chain(service: &ServicePlan) -> String {
    service_chain(service).replacen("KUBE-SVC-", "KUBE-SVL-", 1)
}

/// `KUBE-SEP-<hash of service port, protocol and endpoint address>`.
pub fn endpoint_chain(service: &ServicePlan, backend: &Backend) -> String {
    format!(
        "KUBE-SEP-{}",
        short_hash(&format!(
            "{}{}{}:{}",
            service_port_name(service),
            protocol_name(service.protocol),
            backend.ip,
            backend.port
        ))
    )
}

pub(super) fn short_hash(input: &str) -> String {
    let mut encoded = BASE32_NOPAD.encode(&Sha256::digest(input.as_bytes()));
    encoded.truncate(HASH_CHARS);
    encoded
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base32_matches_rfc_4648_test_vectors() {
        // RFC 4648 section 10, padding left out: the standard alphabet, not base32hex.
        for (input, expected) in [
            ("", ""),
            ("f", "MY"),
            ("fo", "MZXQ"),
            ("foo", "MZXW6"),
            ("foob", "MZXW6YQ"),
            ("fooba", "MZXW6YTB"),
            ("foobar", "MZXW6YTBOI"),
        ] {
            assert_eq!(BASE32_NOPAD.encode(input.as_bytes()), expected, "{input:?}");
        }
    }

    #[test]
    fn chain_names_are_stable_distinct_and_fit_iptables() {
        let service = ServicePlan {
            name: "web".into(),
            cluster_ip: "10.0.0.20".parse().expect("ip"),
            port: 80,
            target_port: 8080,
            protocol: Protocol::Tcp,
            backends: Vec::new(),
        };
        let backend = |ip: &str| Backend {
            pod: "p".into(),
            node: "n".into(),
            ip: ip.parse().expect("ip"),
            port: 8080,
        };
        let svc = service_chain(&service);
        assert_eq!(svc, service_chain(&service.clone()));
        assert_eq!(svc.len(), "KUBE-SVC-".len() + HASH_CHARS);
        assert!(svc.len() <= 28, "iptables chain names are at most 28 chars");
        let a = endpoint_chain(&service, &backend("10.244.0.2"));
        let b = endpoint_chain(&service, &backend("10.244.0.3"));
        assert_ne!(a, b);
        let udp = ServicePlan {
            protocol: Protocol::Udp,
            ..service
        };
        assert_ne!(service_chain(&udp), svc, "the protocol is part of the name");
    }
}
