use super::*;
use crate::model::Protocol;

#[test]
fn both_datapaths_expose_node_ports() {
    for exposures in [
        resolve(&[service("a", Some(ServiceType::NodePort))]),
        resolve(&[service("a", Some(ServiceType::LoadBalancer))]),
    ] {
        assert_eq!(exposures.expect("valid").len(), 1);
    }
}

fn service(name: &str, service_type: Option<ServiceType>) -> ServiceDescription {
    ServiceDescription {
        name: name.into(),
        cluster_ip: Ipv4Addr::new(10, 0, 0, 20),
        port: 80,
        target_port: None,
        protocol: Some(Protocol::Tcp),
        backends: 1,
        service_type,
        node_port: None,
        external_traffic_policy: None,
        load_balancer_source_ranges: Vec::new(),
        load_balancer_ip: None,
    }
}

#[test]
fn cluster_ip_services_are_not_exposed() {
    assert!(resolve(&[
        service("a", None),
        service("b", Some(ServiceType::ClusterIP))
    ])
    .expect("valid")
    .is_empty());
}

#[test]
fn node_ports_and_frontends_are_allocated_around_the_ones_asked_for() {
    let asked = ServiceDescription {
        node_port: Some(30000),
        load_balancer_ip: Some(Ipv4Addr::new(198, 51, 100, 10)),
        ..service("fixed", Some(ServiceType::LoadBalancer))
    };
    let local = ServiceDescription {
        external_traffic_policy: Some(ExternalTrafficPolicy::Local),
        ..service("local", Some(ServiceType::LoadBalancer))
    };
    let exposures =
        resolve(&[service("np", Some(ServiceType::NodePort)), asked, local]).expect("valid");
    assert_eq!(exposures.len(), 3);
    // The explicit 30000 was reserved before allocation started.
    assert_eq!(exposures[0].node_port, 30001);
    assert_eq!(exposures[0].frontend, None);
    assert_eq!(exposures[0].health_check_node_port, None);
    assert_eq!(exposures[1].node_port, 30000);
    assert_eq!(exposures[1].frontend, Some(Ipv4Addr::new(198, 51, 100, 10)));
    assert_eq!(exposures[2].node_port, 30002);
    assert_eq!(exposures[2].health_check_node_port, Some(30003));
    assert_eq!(exposures[2].frontend, Some(Ipv4Addr::new(198, 51, 100, 11)));
    assert_eq!(
        exposures[2].external_traffic_policy,
        ExternalTrafficPolicy::Local
    );
}

#[test]
fn bad_external_fields_name_the_field() {
    let field = |services: &[ServiceDescription]| {
        resolve(services)
            .expect_err("invalid")
            .field()
            .map(str::to_owned)
    };
    let low = ServiceDescription {
        node_port: Some(8080),
        ..service("a", Some(ServiceType::NodePort))
    };
    assert_eq!(field(&[low]).as_deref(), Some("services[0].nodePort"));
    let on_cluster_ip = ServiceDescription {
        node_port: Some(30000),
        ..service("a", None)
    };
    assert_eq!(
        field(&[on_cluster_ip]).as_deref(),
        Some("services[0].nodePort")
    );
    let twice = ServiceDescription {
        node_port: Some(30500),
        ..service("a", Some(ServiceType::NodePort))
    };
    let again = ServiceDescription {
        name: "b".into(),
        ..twice.clone()
    };
    assert_eq!(
        field(&[twice, again]).as_deref(),
        Some("services[1].nodePort")
    );
    let outside = ServiceDescription {
        load_balancer_ip: Some(Ipv4Addr::new(203, 0, 113, 5)),
        ..service("a", Some(ServiceType::LoadBalancer))
    };
    assert_eq!(
        field(&[outside]).as_deref(),
        Some("services[0].loadBalancerIP")
    );
    let ranges_on_node_port = ServiceDescription {
        load_balancer_source_ranges: vec!["203.0.113.0/24".parse().expect("cidr")],
        ..service("a", Some(ServiceType::NodePort))
    };
    assert_eq!(
        field(&[ranges_on_node_port]).as_deref(),
        Some("services[0].loadBalancerSourceRanges")
    );
}
