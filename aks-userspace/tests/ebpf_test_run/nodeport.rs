//! NodePort and LoadBalancer services from outside (`from_vnet`): a local backend gets
//! the client's address (DNAT only) and its reply leaves as `nodeIP:nodePort`; with
//! `externalTrafficPolicy: Cluster` a backend on another node gets the flow SNATed to
//! the node, and its reply is translated back to the client; a flow keeps its backend
//! and SNAT port; a `Local` node port without a local backend drops.

use std::net::Ipv4Addr;

use aks_ebpf_common::Reason;
use aks_userspace::model::loadbalancer::{Exposure, ExternalTrafficPolicy, ServiceType};

use crate::frames::*;
use crate::harness::*;
use crate::services::web_service;

const NODE_PORT: u16 = 30080;

fn exposure(service: &str, node_port: u16, policy: ExternalTrafficPolicy) -> Exposure {
    Exposure {
        service: service.into(),
        service_type: ServiceType::LoadBalancer,
        node_port,
        external_traffic_policy: policy,
        health_check_node_port: None,
        frontend: Some(Ipv4Addr::new(198, 51, 100, 10)),
        source_ranges: Vec::new(),
    }
}

impl Harness {
    /// A LoadBalancer service with `backends` (placed on this node, "n", unless
    /// `elsewhere`) behind `NODE_PORT`, under `policy`.
    fn with_node_port(
        backends: &[[u8; 4]],
        policy: ExternalTrafficPolicy,
        elsewhere: bool,
    ) -> Self {
        let h = Harness::new();
        let mut service = web_service(backends);
        if elsewhere {
            for backend in &mut service.backends {
                backend.node = "other".into();
            }
        }
        let exposure = exposure(&service.name, NODE_PORT, policy);
        h.datapath
            .node_port_maps("n")
            .expect("NODEPORTS")
            .upsert(&exposure, &service)
            .expect("programming the node port");
        h
    }
}

#[test]
fn a_local_backend_gets_the_client_and_its_reply_leaves_from_the_node_port() {
    let h = Harness::with_node_port(&[LOCAL_POD], ExternalTrafficPolicy::Local, false);
    let syn = FrameSpec::tcp(INTERNET, NODE, NODE_PORT).bytes();
    let out = h.redirected("from_vnet", &syn, Reason::NodePortDnat);
    assert_routed(&out, POD_MAC, HOST_MAC, 63, "DNAT into the local backend");
    assert_endpoints(
        &out,
        (INTERNET, 40000),
        (LOCAL_POD, 8080),
        "to the targetPort; the client's address is kept",
    );

    let reply = FrameSpec::tcp(LOCAL_POD, INTERNET, 0)
        .ports(8080, 40000)
        .bytes();
    let out = h.redirected("from_pod", &reply, Reason::NodePortRevDnat);
    assert_routed(
        &out,
        GATEWAY_MAC,
        UPLINK_MAC,
        63,
        "the reply out of the uplink",
    );
    assert_endpoints(
        &out,
        (NODE, NODE_PORT),
        (INTERNET, 40000),
        "the reply comes from the node port",
    );
}

#[test]
fn cluster_snats_towards_another_nodes_backend_and_translates_the_reply_back() {
    let h = Harness::with_node_port(&[REMOTE_POD], ExternalTrafficPolicy::Cluster, true);
    let syn = FrameSpec::tcp(INTERNET, NODE, NODE_PORT).bytes();
    let out = h.redirected("from_vnet", &syn, Reason::NodePortDnatSnat);
    assert_routed(&out, GATEWAY_MAC, UPLINK_MAC, 63, "on to the VNet");
    assert_eq!(endpoint_of(&out, false), (REMOTE_POD, 8080));
    let (source, snat_port) = endpoint_of(&out, true);
    assert_eq!(source, NODE, "SNATed to the node address");
    assert!(
        (NAT_PORTS.0..=NAT_PORTS.1).contains(&snat_port),
        "a port of the NAT range: {snat_port}"
    );

    // The flow sticks: the next packet gets the same backend and SNAT port.
    let ack = FrameSpec::tcp(INTERNET, NODE, NODE_PORT).bytes();
    let (_, again) = h.run("from_vnet", &ack, Reason::NodePortDnatSnat);
    assert_endpoints(&again, (NODE, snat_port), (REMOTE_POD, 8080), "");

    let reply = FrameSpec::tcp(REMOTE_POD, NODE, 0)
        .ports(8080, snat_port)
        .bytes();
    let out = h.redirected("from_vnet", &reply, Reason::NodePortRevSnat);
    assert_routed(&out, GATEWAY_MAC, UPLINK_MAC, 63, "back out to the client");
    assert_endpoints(
        &out,
        (NODE, NODE_PORT),
        (INTERNET, 40000),
        "from the node port; to the client again",
    );
}

#[test]
fn a_local_node_port_without_a_local_backend_drops() {
    let h = Harness::with_node_port(&[REMOTE_POD], ExternalTrafficPolicy::Local, true);
    let syn = FrameSpec::tcp(INTERNET, NODE, NODE_PORT).bytes();
    let (verdict, _) = h.run("from_vnet", &syn, Reason::DropNodePortNoLocalBackend);
    assert_eq!(verdict, TC_ACT_SHOT);
}

#[test]
fn a_cluster_node_port_without_backends_drops_and_other_ports_reach_the_node() {
    let h = Harness::with_node_port(&[], ExternalTrafficPolicy::Cluster, false);
    let syn = FrameSpec::tcp(INTERNET, NODE, NODE_PORT).bytes();
    let (verdict, _) = h.run("from_vnet", &syn, Reason::DropNodePortNoBackend);
    assert_eq!(verdict, TC_ACT_SHOT);
    // Not a node port: the node's own.
    let other = FrameSpec::tcp(INTERNET, NODE, 22).bytes();
    let (verdict, _) = h.run("from_vnet", &other, Reason::PassedToStack);
    assert_eq!(verdict, TC_ACT_OK);
}

#[test]
fn a_new_connection_on_a_reused_client_port_gets_its_own_node_port_back() {
    // Two node ports, one local backend: a client port used towards one and then the
    // other leaves one reply tuple (backend → client) for both.
    let h = Harness::with_node_port(&[LOCAL_POD], ExternalTrafficPolicy::Local, false);
    let other = 30081;
    h.datapath
        .node_port_maps("n")
        .expect("NODEPORTS")
        .upsert(
            &exposure("other", other, ExternalTrafficPolicy::Local),
            &web_service(&[LOCAL_POD]),
        )
        .expect("programming the second node port");
    let reply = FrameSpec::tcp(LOCAL_POD, INTERNET, 0)
        .ports(8080, 40000)
        .bytes();
    let back_from = |h: &Harness| {
        let (_, out) = h.run("from_pod", &reply, Reason::NodePortRevDnat);
        endpoint_of(&out, true)
    };
    let syn = |port| FrameSpec::tcp(INTERNET, NODE, port).bytes();
    h.run("from_vnet", &syn(NODE_PORT), Reason::NodePortDnat);
    assert_eq!(back_from(&h), (NODE, NODE_PORT));
    h.run("from_vnet", &syn(other), Reason::NodePortDnat);
    assert_eq!(back_from(&h), (NODE, other));
    // The first node port's flow is known (the same backend), but a new SYN on it
    // takes the reply tuple back.
    h.run("from_vnet", &syn(NODE_PORT), Reason::NodePortDnat);
    assert_eq!(back_from(&h), (NODE, NODE_PORT));
}

#[test]
fn a_local_backend_isolated_by_policy_takes_only_the_clients_its_policy_admits() {
    use aks_ebpf_common::policy::DIRECTION_INGRESS;
    // The backend admits the internet (identity 500) on its targetPort, nothing else.
    let h = crate::policy::policy_harness(&[(500, 8080, 6, DIRECTION_INGRESS)]);
    let service = web_service(&[LOCAL_POD]);
    h.datapath
        .node_port_maps("n")
        .expect("NODEPORTS")
        .upsert(
            &exposure(&service.name, NODE_PORT, ExternalTrafficPolicy::Local),
            &service,
        )
        .expect("programming the node port");
    let admitted = FrameSpec::tcp(INTERNET, NODE, NODE_PORT).bytes();
    let out = h.redirected("from_vnet", &admitted, Reason::NodePortDnat);
    assert_eq!(
        endpoint_of(&out, true),
        (INTERNET, 40000),
        "the client kept"
    );
    let refused = FrameSpec::tcp(ON_PREM, NODE, NODE_PORT).bytes();
    let (verdict, _) = h.run("from_vnet", &refused, Reason::DropPolicyIngress);
    assert_eq!(
        verdict, TC_ACT_SHOT,
        "on-prem is not admitted by the policy"
    );
}

#[test]
fn a_closed_flows_reply_entry_does_not_catch_a_new_connection_by_another_path() {
    use aks_ebpf_common::wire::{TCP_ACK, TCP_FIN, TCP_SYN};
    // A peer node that SNATs its clients to its own address, keeping their ports: it
    // reaches the node port itself first, then the backend directly (routed, as a
    // `Cluster` node port of its own would), from the same port.
    const PEER_NODE: [u8; 4] = [10, 224, 0, 5];
    let h = Harness::with_node_port(&[LOCAL_POD], ExternalTrafficPolicy::Local, false);
    let from_pod = |flags| {
        FrameSpec::tcp(LOCAL_POD, PEER_NODE, 0)
            .ports(8080, 40000)
            .tcp_flags(flags)
            .bytes()
    };
    let syn_ack = from_pod(TCP_SYN | TCP_ACK);
    let via_node_port = |flags| {
        FrameSpec::tcp(PEER_NODE, NODE, NODE_PORT)
            .tcp_flags(flags)
            .bytes()
    };
    let translated = |frame: &[u8], case: &str| {
        let out = h.redirected("from_pod", frame, Reason::NodePortRevDnat);
        assert_endpoints(&out, (NODE, NODE_PORT), (PEER_NODE, 40000), case);
    };

    // The node port flow: its SYN-ACK (and a retransmit of it) leave from the node port.
    h.run("from_vnet", &via_node_port(TCP_SYN), Reason::NodePortDnat);
    translated(&syn_ack, "our SYN-ACK");
    translated(&syn_ack, "our SYN-ACK, retransmitted");
    h.run("from_vnet", &via_node_port(TCP_ACK), Reason::NodePortDnat);
    translated(&from_pod(TCP_ACK), "data of the established flow");
    translated(&from_pod(TCP_FIN | TCP_ACK), "the backend closing");

    // Closed; a new connection on the same tuple reaches the backend by the plain path.
    let direct = FrameSpec::tcp(PEER_NODE, LOCAL_POD, 8080).bytes();
    h.run("from_vnet", &direct, Reason::RedirectedPeer);
    let out = h.redirected("from_pod", &syn_ack, Reason::RedirectedUplink);
    assert_endpoints(
        &out,
        (LOCAL_POD, 8080),
        (PEER_NODE, 40000),
        "the new connection's SYN-ACK leaves untranslated",
    );
    // The stale entries are gone: the rest of that connection is not translated either.
    h.run("from_pod", &from_pod(TCP_ACK), Reason::RedirectedUplink);

    // A new node port flow from that port starts afresh and is translated again.
    h.run("from_vnet", &via_node_port(TCP_SYN), Reason::NodePortDnat);
    translated(&syn_ack, "a new node port flow's SYN-ACK");
}

#[test]
fn a_snated_flows_reply_entry_translates_only_its_own_handshake() {
    use aks_ebpf_common::wire::{TCP_ACK, TCP_SYN};
    let h = Harness::with_node_port(&[REMOTE_POD], ExternalTrafficPolicy::Cluster, true);
    let syn = FrameSpec::tcp(INTERNET, NODE, NODE_PORT).bytes();
    let (_, out) = h.run("from_vnet", &syn, Reason::NodePortDnatSnat);
    let (_, snat_port) = endpoint_of(&out, true);
    let from_backend = |flags| {
        FrameSpec::tcp(REMOTE_POD, NODE, 0)
            .ports(8080, snat_port)
            .tcp_flags(flags)
            .bytes()
    };
    let syn_ack = from_backend(TCP_SYN | TCP_ACK);
    for case in ["our SYN-ACK", "our SYN-ACK, retransmitted"] {
        let (_, out) = h.run("from_vnet", &syn_ack, Reason::NodePortRevSnat);
        assert_endpoints(&out, (NODE, NODE_PORT), (INTERNET, 40000), case);
    }
    h.run("from_vnet", &from_backend(TCP_ACK), Reason::NodePortRevSnat);
    // Established: a SYN-ACK on the tuple now answers someone else's connection.
    let (verdict, out) = h.run("from_vnet", &syn_ack, Reason::PassedToStack);
    assert_eq!(verdict, TC_ACT_OK);
    assert_endpoints(
        &out,
        (REMOTE_POD, 8080),
        (NODE, snat_port),
        "a stranger's SYN-ACK goes to the node untranslated",
    );
    // The client's next SYN through the node port gets a working flow again.
    let (_, out) = h.run("from_vnet", &syn, Reason::NodePortDnatSnat);
    let (_, port) = endpoint_of(&out, true);
    let (_, out) = h.run(
        "from_vnet",
        &FrameSpec::tcp(REMOTE_POD, NODE, 0)
            .ports(8080, port)
            .tcp_flags(TCP_SYN | TCP_ACK)
            .bytes(),
        Reason::NodePortRevSnat,
    );
    assert_endpoints(&out, (NODE, NODE_PORT), (INTERNET, 40000), "the new flow");
}
