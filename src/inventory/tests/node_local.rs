//! `loadBalancer.mode: node-local`: khagent on every node on 127.0.0.1, no VIP. Its
//! `with` and `errors` serve the other modes' tests too.

use super::super::*;

const HEAD: &str = "apiVersion: khactl.io/v1alpha1\nkind: Inventory\n\
                    cluster: { name: t, kubernetesVersion: v1.31.2 }\n";
const NODES: &str = "nodes:\n\
                     - { name: cp1, address: 10.0.0.11, role: control-plane }\n\
                     - { name: w1, address: 10.0.0.21, role: worker }\n";

pub(super) fn with(section: &str) -> Result<Validated, InventoryError> {
    parse(&format!("{HEAD}{section}{NODES}"))
}

/// `(path, message)` of every error.
pub(super) fn errors(section: &str) -> Vec<(String, String)> {
    match with(section) {
        Err(InventoryError::Invalid { problems, .. }) => problems
            .into_iter()
            .filter(|p| p.severity == Severity::Error)
            .map(|p| (p.path.to_string(), p.message))
            .collect(),
        other => panic!("expected an invalid inventory, got {other:?}"),
    }
}

#[test]
fn node_local_needs_no_vip_and_defaults_its_port_to_6444() {
    let v = with("loadBalancer: { mode: node-local, dnsName: api.internal }\n").unwrap();
    let inv = v.inventory;
    assert!(inv.vip.is_none());
    let nl = inv.node_local().unwrap();
    assert_eq!((nl.host.as_str(), nl.port.get()), ("api.internal", 6444));
    assert_eq!(inv.api_endpoint().to_string(), "api.internal:6444");
    assert_eq!(
        inv.api_dns_name().map(DnsName::as_str),
        Some("api.internal")
    );
    // Workers run the agent too in this mode.
    assert!(inv.nodes.iter().all(|n| inv.runs_agent(n)));
}

#[test]
fn the_vip_mode_is_the_default_and_keeps_workers_without_an_agent() {
    let inv = with("vip: { address: 10.0.0.100 }\n").unwrap().inventory;
    assert_eq!(inv.load_balancer.mode, LbMode::Vip);
    assert!(inv.node_local().is_none());
    assert_eq!(inv.api_endpoint().to_string(), "10.0.0.100:8443");
    let w1 = inv.node("w1").unwrap();
    assert!(!inv.runs_agent(w1));
}

#[test]
fn a_control_plane_added_or_removed_reaches_every_node_local_agent() {
    let nl = with("loadBalancer: { mode: node-local, dnsName: api.internal }\n")
        .unwrap()
        .inventory;
    assert!(nl.changes_every_agent("cp1"));
    assert!(
        !nl.changes_every_agent("w1"),
        "a worker is no one's backend"
    );
    let vip = with("vip: { address: 10.0.0.100 }\n").unwrap().inventory;
    assert!(
        !vip.changes_every_agent("cp1"),
        "behind a VIP workers run no agent"
    );
}

#[test]
fn node_local_without_a_dns_name_is_refused_naming_the_field() {
    let e = errors("loadBalancer: { mode: node-local }\n");
    assert_eq!(e.len(), 1, "{e:?}");
    assert_eq!(e[0].0, "loadBalancer.dnsName");
    assert!(e[0].1.contains("127.0.0.1"), "{}", e[0].1);
}

#[test]
fn a_vip_next_to_node_local_balancers_is_refused_for_now() {
    let e = errors(
        "vip: { address: 10.0.0.100 }\nloadBalancer: { mode: node-local, dnsName: api.internal }\n",
    );
    assert_eq!(e.len(), 1, "{e:?}");
    assert_eq!(e[0].0, "vip");
    assert!(e[0].1.contains("not supported yet"), "{}", e[0].1);
}

#[test]
fn without_node_local_the_vip_is_required() {
    let e = errors("");
    assert_eq!(e[0].0, "vip");
    assert!(e[0].1.contains("missing field `vip`"), "{}", e[0].1);
    assert!(e[0].1.contains("node-local"), "{}", e[0].1);
}

#[test]
fn node_local_fields_in_vip_mode_are_refused_not_ignored() {
    let e = errors("vip: { address: 10.0.0.100 }\nloadBalancer: { port: 6444, dnsName: a.b }\n");
    let paths: Vec<&str> = e.iter().map(|(p, _)| p.as_str()).collect();
    assert_eq!(
        paths,
        ["loadBalancer.port", "loadBalancer.dnsName"],
        "{e:?}"
    );
}

#[test]
fn the_node_local_port_avoids_the_api_server_and_kubelet_ports() {
    for port in [6443, 10250] {
        let e = errors(&format!(
            "loadBalancer: {{ mode: node-local, dnsName: a.b, port: {port} }}\n"
        ));
        assert_eq!(e[0].0, "loadBalancer.port", "{e:?}");
    }
}

#[test]
fn an_unknown_mode_lists_the_modes() {
    let e = errors("loadBalancer: { mode: nodelocal, dnsName: a.b }\n");
    assert_eq!(e[0].0, "loadBalancer.mode");
    assert!(e[0].1.contains("node-local"), "{}", e[0].1);
}
