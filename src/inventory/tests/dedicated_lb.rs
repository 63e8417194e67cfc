//! `role: loadbalancer`: dedicated balancer nodes hold the VIP; the control planes run no
//! agent.

use super::super::*;

const HEAD: &str = "apiVersion: khactl.io/v1alpha1\nkind: Inventory\n\
                    cluster: { name: t, kubernetesVersion: v1.31.2 }\n";
const NODES: &str = "nodes:\n\
                     - { name: cp1, address: 10.0.0.11, role: control-plane }\n\
                     - { name: cp2, address: 10.0.0.12, role: control-plane }\n\
                     - { name: cp3, address: 10.0.0.13, role: control-plane }\n\
                     - { name: lb1, address: 10.0.0.5, role: loadbalancer }\n\
                     - { name: lb2, address: 10.0.0.6, role: loadbalancer }\n\
                     - { name: w1, address: 10.0.0.21, role: worker }\n";

fn with(section: &str, nodes: &str) -> Result<Validated, InventoryError> {
    parse(&format!("{HEAD}{section}{nodes}"))
}

fn problems(section: &str, nodes: &str, severity: Severity) -> Vec<(String, String)> {
    let found = match with(section, nodes) {
        Ok(v) => v.warnings,
        Err(InventoryError::Invalid { problems, .. }) => problems,
        Err(e) => panic!("{e}"),
    };
    found
        .into_iter()
        .filter(|p| p.severity == severity)
        .map(|p| (p.path.to_string(), p.message))
        .collect()
}

#[test]
fn load_balancer_nodes_hold_the_vip_and_balance_to_the_control_planes() {
    // 6443 on the VIP, as the guide's haproxy binds it: no API server runs there.
    let inv = with("vip: { address: 10.0.0.100, port: 6443 }\n", NODES)
        .unwrap()
        .inventory;
    assert!(inv.dedicated_lb());
    let names = |it: Vec<&Node>| -> Vec<String> { it.iter().map(|n| n.name.to_string()).collect() };
    assert_eq!(names(inv.vrrp_nodes().collect()), ["lb1", "lb2"]);
    let agents: Vec<&Node> = inv.nodes.iter().filter(|n| inv.runs_agent(n)).collect();
    assert_eq!(
        names(agents),
        ["lb1", "lb2"],
        "the control planes run no agent"
    );
    assert_eq!(inv.vrrp_role_name(), "load-balancer");
    assert!(!Role::LoadBalancer.is_kubernetes_node());
    // The VIP's endpoint for kubeadm.
    assert_eq!(inv.api_endpoint().to_string(), "10.0.0.100:6443");
    // Without them the control planes hold it, as before.
    let stacked = with(
        "vip: { address: 10.0.0.100 }\n",
        &NODES.replace("loadbalancer", "worker"),
    )
    .unwrap()
    .inventory;
    assert_eq!(names(stacked.vrrp_nodes().collect()), ["cp1", "cp2", "cp3"]);
    // There 6443 is each control plane's own API server's port.
    let e = problems(
        "vip: { address: 10.0.0.100, port: 6443 }\n",
        &NODES.replace("loadbalancer", "worker"),
        Severity::Error,
    );
    assert_eq!(e.len(), 1, "{e:?}");
    assert_eq!(e[0].0, "vip.port");
    assert!(e[0].1.contains("8443"), "{}", e[0].1);
}

#[test]
fn the_role_is_spelled_as_the_guides_write_it_and_with_a_dash() {
    let inv = with(
        "vip: { address: 10.0.0.100 }\n",
        &NODES.replace(
            "lb2, address: 10.0.0.6, role: loadbalancer",
            "lb2, address: 10.0.0.6, role: load-balancer",
        ),
    )
    .unwrap()
    .inventory;
    assert_eq!(inv.vrrp_nodes().count(), 2);
}

#[test]
fn load_balancer_nodes_need_the_vip_mode() {
    let e = problems(
        "loadBalancer: { mode: node-local, dnsName: api.internal }\n",
        NODES,
        Severity::Error,
    );
    assert_eq!(e.len(), 1, "{e:?}");
    assert_eq!(e[0].0, "nodes[3].role");
    assert!(e[0].1.contains("mode: vip"), "{}", e[0].1);
    let e = problems("", NODES, Severity::Error);
    assert_eq!(e[0].0, "vip", "{e:?}");
}

#[test]
fn a_load_balancer_node_has_no_labels_no_taints_and_an_ipv4_address_on_the_vip_subnet() {
    let nodes = NODES
        .replace(
            "{ name: lb1, address: 10.0.0.5, role: loadbalancer }",
            "{ name: lb1, address: 10.0.0.5, role: loadbalancer, labels: { a: b } }",
        )
        .replace("lb2, address: 10.0.0.6", "lb2, address: 10.9.0.6");
    let e = problems(
        "vip: { address: 10.0.0.100, prefixLength: 24 }\n",
        &nodes,
        Severity::Error,
    );
    let paths: Vec<&str> = e.iter().map(|(p, _)| p.as_str()).collect();
    assert_eq!(paths, ["nodes[3].labels", "nodes[4].address"], "{e:?}");
    assert!(
        e[1].1.starts_with("loadbalancer node 10.9.0.6 is outside"),
        "{}",
        e[1].1
    );
    // The control planes may sit elsewhere: they hold no VIP.
    let elsewhere = NODES.replace("cp3, address: 10.0.0.13", "cp3, address: 10.7.0.13");
    assert!(
        problems(
            "vip: { address: 10.0.0.100, prefixLength: 24 }\n",
            &elsewhere,
            Severity::Error
        )
        .is_empty()
    );
}

#[test]
fn a_single_load_balancer_node_is_a_warning() {
    let one: String = NODES
        .lines()
        .filter(|l| !l.contains("lb2"))
        .map(|l| format!("{l}\n"))
        .collect();
    let w = problems("vip: { address: 10.0.0.100 }\n", &one, Severity::Warning);
    assert_eq!(w.len(), 1, "{w:?}");
    assert!(w[0].1.contains("add a second"), "{}", w[0].1);
    assert!(problems("vip: { address: 10.0.0.100 }\n", NODES, Severity::Warning).is_empty());
}
