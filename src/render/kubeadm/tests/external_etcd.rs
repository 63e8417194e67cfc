//! The external etcd topology: nodes with `role: etcd` make the ClusterConfiguration's
//! `etcd.external` (those nodes' client URLs, the etcd CA and the apiserver-etcd-client
//! pair khactl places), in both API versions, and get no kubeadm file of their own.

use super::*;

const GUIDE: &str = include_str!("../../../../inventories/cfssl-external-etcd-guide.yaml");

fn guide(version: &str) -> Inventory {
    let text = GUIDE.replace(
        "kubernetesVersion: v1.31.2",
        &format!("kubernetesVersion: {version}"),
    );
    inventory::parse(&text).unwrap().inventory
}

const ENDPOINTS: [&str; 3] = [
    "https://192.168.1.21:2379",
    "https://192.168.1.22:2379",
    "https://192.168.1.23:2379",
];

#[test]
fn both_api_versions_point_etcd_external_at_the_etcd_nodes_with_khactls_client_pair() {
    for (version, api) in [
        ("v1.30.4", KubeadmApi::V1beta3),
        ("v1.31.2", KubeadmApi::V1beta4),
        ("v1.37.0", KubeadmApi::V1beta4),
    ] {
        let init = render(&guide(version), "master1");
        assert_eq!(init.api(), api);
        let etcd = match &init.documents()[1] {
            Document::ClusterV1beta3(c) => (c.etcd.local.is_some(), c.etcd.external.clone()),
            Document::ClusterV1beta4(c) => (c.etcd.local.is_some(), c.etcd.external.clone()),
            _ => panic!("{}", init.text()),
        };
        let (false, Some(e)) = etcd else {
            panic!("{version}: not external alone:\n{}", init.text())
        };
        assert_eq!(e.endpoints, ENDPOINTS);
        assert_eq!(e.ca_file, "/etc/kubernetes/pki/etcd/ca.crt");
        assert_eq!(e.cert_file, "/etc/kubernetes/pki/apiserver-etcd-client.crt");
        assert_eq!(e.key_file, "/etc/kubernetes/pki/apiserver-etcd-client.key");
    }
}

#[test]
fn etcd_nodes_get_no_kubeadm_file_and_the_others_keep_their_purpose() {
    let inv = guide("v1.31.2");
    let all = render_cluster(&inv, &token(), &hash()).unwrap();
    assert_eq!(
        purposes(&all),
        [
            ("master1", Purpose::Init),
            ("master2", Purpose::JoinControlPlane),
            ("master3", Purpose::JoinControlPlane),
            ("worker1", Purpose::JoinWorker),
        ]
    );
    let etcd1 = inv.node("etcd1").unwrap();
    assert_eq!(Purpose::for_node(&inv, etcd1), None);
}

#[test]
fn a_stacked_cluster_config_is_refused_when_the_inventory_has_etcd_nodes() {
    // The layout rule holds the documents, not the template: a template that printed
    // the stacked block for this inventory is an error before any node is touched.
    let inv = guide("v1.31.2");
    let t = broken_templates("cluster", "{%- if etcd_external %}", "{%- if false %}");
    let node = inv.node("master1").unwrap();
    let err = render_node_with(&t, &inv, node, Purpose::Init, &token(), &hash()).unwrap_err();
    let KubeadmError::Control { rules, .. } = err else {
        panic!("{err}")
    };
    assert!(
        rules.iter().any(|r| r.contains("etcd is not external")),
        "{rules:?}"
    );
}

#[test]
fn the_stacked_inventory_still_renders_etcd_local_alone() {
    let inv = inventory("v1.31.2");
    let init = render(&inv, "cp1");
    let Document::ClusterV1beta4(c) = &init.documents()[1] else {
        panic!()
    };
    assert!(c.etcd.external.is_none() && c.etcd.local.is_some());
}
