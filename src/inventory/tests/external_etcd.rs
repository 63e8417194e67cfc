//! The external etcd topology: nodes with `role: etcd` and the optional `etcd` section.

use super::super::*;

const HEAD: &str = "apiVersion: khactl.io/v1alpha1\nkind: Inventory\n\
                    cluster: { name: t, kubernetesVersion: v1.31.2 }\n\
                    vip: { address: 10.0.0.100 }\n";

fn with(rest: &str) -> Result<Validated, InventoryError> {
    parse(&format!("{HEAD}{rest}"))
}

fn nodes(etcd: usize, cps: usize) -> String {
    let mut s = "nodes:\n".to_owned();
    for i in 1..=etcd {
        s.push_str(&format!(
            "  - {{ name: etcd{i}, address: 10.0.0.2{i}, role: etcd }}\n"
        ));
    }
    for i in 1..=cps {
        s.push_str(&format!(
            "  - {{ name: cp{i}, address: 10.0.0.1{i}, role: control-plane }}\n"
        ));
    }
    s
}

/// `(path, message)` of every problem of `severity`.
fn problems(rest: &str, severity: Severity) -> Vec<(String, String)> {
    let all = match with(rest) {
        Err(InventoryError::Invalid { problems, .. }) => problems,
        Ok(v) => v.warnings,
        Err(other) => panic!("{other}"),
    };
    all.into_iter()
        .filter(|p| p.severity == severity)
        .map(|p| (p.path.to_string(), p.message))
        .collect()
}

#[test]
fn etcd_nodes_make_the_topology_external_and_are_its_members() {
    let inv = with(&nodes(3, 2)).unwrap().inventory;
    assert!(inv.external_etcd());
    let members: Vec<&str> = inv.etcd_members().map(|n| n.name.as_str()).collect();
    assert_eq!(members, ["etcd1", "etcd2", "etcd3"]);
    assert_eq!(inv.control_plane().count(), 2);
    assert_eq!(inv.workers().count(), 0);
    let etcd1 = inv.node("etcd1").unwrap();
    assert_eq!(etcd1.etcd_client_url(), "https://10.0.0.21:2379");
    assert_eq!(etcd1.etcd_peer_url(), "https://10.0.0.21:2380");
    assert!(!etcd1.role.is_kubernetes_node());
    assert!(!inv.runs_agent(etcd1));
}

#[test]
fn without_etcd_nodes_the_control_planes_are_the_members() {
    let inv = with(&nodes(0, 3)).unwrap().inventory;
    assert!(!inv.external_etcd());
    let members: Vec<&str> = inv.etcd_members().map(|n| n.name.as_str()).collect();
    assert_eq!(members, ["cp1", "cp2", "cp3"]);
}

#[test]
fn an_even_number_of_etcd_nodes_warns_and_the_control_plane_count_no_longer_does() {
    let warnings = problems(&nodes(2, 2), Severity::Warning);
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert_eq!(warnings[0].0, "nodes");
    assert!(
        warnings[0]
            .1
            .starts_with("2 etcd nodes: etcd needs 2 of 2 members"),
        "{warnings:?}"
    );
    assert!(problems(&nodes(3, 2), Severity::Warning).is_empty());
    assert!(
        problems(&nodes(4, 1), Severity::Warning)[0]
            .1
            .contains("only 1 failure(s), like 3")
    );
}

#[test]
fn a_cluster_of_etcd_nodes_alone_still_needs_a_control_plane() {
    let errors = problems(&nodes(3, 0), Severity::Error);
    assert!(
        errors
            .iter()
            .any(|(_, m)| m.contains("no node has `role: control-plane`")),
        "{errors:?}"
    );
}

#[test]
fn labels_and_taints_on_an_etcd_node_are_refused() {
    let text = "nodes:\n\
                - { name: etcd1, address: 10.0.0.21, role: etcd, labels: { a: b } }\n\
                - { name: etcd2, address: 10.0.0.22, role: etcd, taints: [] }\n\
                - { name: etcd3, address: 10.0.0.23, role: etcd }\n\
                - { name: cp1, address: 10.0.0.11, role: control-plane }\n";
    let errors = problems(text, Severity::Error);
    let paths: Vec<&str> = errors.iter().map(|(p, _)| p.as_str()).collect();
    assert_eq!(paths, ["nodes[0].labels", "nodes[1].taints"], "{errors:?}");
    assert!(errors[0].1.contains("never registers with Kubernetes"));
}

#[test]
fn kubeadm_etcd_extra_args_are_refused_with_external_etcd() {
    let text = format!(
        "{}kubeadm: {{ etcdExtraArgs: {{ quota-backend-bytes: 1 }} }}\n",
        nodes(3, 1)
    );
    let errors = problems(&text, Severity::Error);
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0].0, "kubeadm.etcdExtraArgs");
    assert!(errors[0].1.contains("kubeadm runs no etcd"));
}

#[test]
fn the_etcd_section_names_an_absolute_binary_and_needs_etcd_nodes() {
    let inv = with(&format!(
        "{}etcd: {{ binary: /opt/etcd/bin/etcd }}\n",
        nodes(3, 1)
    ))
    .unwrap()
    .inventory;
    assert_eq!(
        inv.etcd.binary.as_deref(),
        Some(std::path::Path::new("/opt/etcd/bin/etcd"))
    );
    let relative = problems(
        &format!("{}etcd: {{ binary: bin/etcd }}\n", nodes(3, 1)),
        Severity::Error,
    );
    assert_eq!(relative.len(), 1, "{relative:?}");
    assert_eq!(relative[0].0, "etcd.binary");
    assert!(relative[0].1.contains("not an absolute path"));
    let stacked = problems(
        &format!("{}etcd: {{ binary: /usr/bin/etcd }}\n", nodes(0, 3)),
        Severity::Error,
    );
    assert_eq!(stacked.len(), 1, "{stacked:?}");
    assert_eq!(stacked[0].0, "etcd");
    assert!(stacked[0].1.contains("no node has `role: etcd`"));
    let typo = problems(
        &format!("{}etcd: {{ binray: /usr/bin/etcd }}\n", nodes(3, 1)),
        Severity::Error,
    );
    assert!(typo[0].1.contains("did you mean `binary`"), "{typo:?}");
}

#[test]
fn the_guide_example_validates_without_warnings() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("inventories/cfssl-external-etcd-guide.yaml");
    let v = load(&path).unwrap();
    assert!(v.warnings.is_empty(), "{:?}", v.warnings);
    assert_eq!(v.inventory.etcd_nodes().count(), 3);
    assert_eq!(v.inventory.control_plane().count(), 3);
}

#[test]
fn an_etcd_node_with_an_ipv6_address_is_refused_naming_it() {
    let rest = nodes(3, 1).replace("10.0.0.22", "fd00::22");
    let e = problems(&rest, Severity::Error);
    assert_eq!(e.len(), 1, "{e:?}");
    assert_eq!(e[0].0, "nodes[1].address");
    assert!(e[0].1.contains("IPv4"), "{}", e[0].1);
}

#[test]
fn etcd_servers_in_the_api_server_args_is_refused_with_etcd_nodes() {
    let rest = format!(
        "{}kubeadm: {{ apiServerExtraArgs: {{ etcd-servers: https://x:2379 }} }}\n",
        nodes(3, 1)
    );
    let e = problems(&rest, Severity::Error);
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(e[0].0.contains("etcd-servers"), "{e:?}");
}
