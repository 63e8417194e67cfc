//! `loadBalancer.mode: external`: a balancer khactl does not run, no agent, no VIP.

use super::super::*;
use super::node_local::{errors, with};

#[test]
fn an_external_balancer_needs_no_vip_runs_no_agent_and_is_on_6443() {
    let v = with("loadBalancer: { mode: external, dnsName: api.internal, address: 10.0.0.200 }\n")
        .unwrap();
    assert!(v.warnings.is_empty(), "{:?}", v.warnings);
    let inv = v.inventory;
    assert!(inv.vip.is_none() && inv.node_local().is_none());
    let ext = inv.external_lb().unwrap();
    assert_eq!(ext.host, "api.internal");
    assert_eq!(ext.address, Some("10.0.0.200".parse().unwrap()));
    assert_eq!(inv.api_endpoint().to_string(), "api.internal:6443");
    assert_eq!(
        inv.api_dns_name().map(DnsName::as_str),
        Some("api.internal")
    );
    assert!(inv.nodes.iter().all(|n| !inv.runs_agent(n)));
    assert!(!inv.changes_every_agent("cp1"));
}

#[test]
fn without_its_address_workers_resolve_the_name_through_dns_with_a_warning() {
    let v = with("loadBalancer: { mode: external, dnsName: api.internal }\n").unwrap();
    assert_eq!(v.warnings.len(), 1, "{:?}", v.warnings);
    assert_eq!(v.warnings[0].path.to_string(), "loadBalancer.address");
    assert!(v.warnings[0].message.contains("DNS"));
}

#[test]
fn an_external_balancer_excludes_the_vip_and_needs_the_name_and_port_6443() {
    let e = errors(
        "vip: { address: 10.0.0.100, routerId: 7 }\n\
         loadBalancer: { mode: external, port: 8443, address: 10.0.0.200 }\n",
    );
    let paths: Vec<&str> = e.iter().map(|(p, _)| p.as_str()).collect();
    assert_eq!(
        paths,
        ["vip", "loadBalancer.port", "loadBalancer.dnsName"],
        "{e:?}"
    );
    assert!(e[0].1.contains("vip.routerId"), "{}", e[0].1);
    assert!(e[1].1.contains("6443"), "{}", e[1].1);
    assert!(e[2].1.contains("127.0.0.1"), "{}", e[2].1);
}

#[test]
fn the_balancer_s_address_belongs_to_external_mode_and_is_ipv4() {
    let e = errors("vip: { address: 10.0.0.100 }\nloadBalancer: { address: 10.0.0.200 }\n");
    assert_eq!(e.len(), 1, "{e:?}");
    assert_eq!(e[0].0, "loadBalancer.address");
    assert!(e[0].1.contains("mode: external"), "{}", e[0].1);
    let e = errors("loadBalancer: { mode: external, dnsName: a.b, address: lb.example.com }\n");
    assert_eq!(e[0].0, "loadBalancer.address");
    assert!(e[0].1.contains("IPv4"), "{}", e[0].1);
}

#[test]
fn the_guide_named_example_validates_without_warnings() {
    let v = parse(include_str!(
        "../../../inventories/cloud-lb-without-hairpin.yaml"
    ))
    .unwrap();
    assert!(v.warnings.is_empty(), "{:?}", v.warnings);
    assert!(v.inventory.external_lb().is_some());
}

#[test]
fn the_name_must_be_a_real_name_and_the_address_no_node_s() {
    for name in ["192.168.1.200", "localhost"] {
        let e = errors(&format!(
            "loadBalancer: {{ mode: external, dnsName: {name}, address: 10.0.0.200 }}\n"
        ));
        assert_eq!(e.len(), 1, "{name}: {e:?}");
        assert_eq!(e[0].0, "loadBalancer.dnsName");
        assert!(e[0].1.contains("/etc/hosts"), "{}", e[0].1);
    }
    let e = errors("loadBalancer: { mode: external, dnsName: a.b, address: 10.0.0.21 }\n");
    assert_eq!(e.len(), 1, "{e:?}");
    assert_eq!(e[0].0, "loadBalancer.address");
    assert!(e[0].1.contains("w1"), "{}", e[0].1);
}
