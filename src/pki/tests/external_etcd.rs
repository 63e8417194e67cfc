//! External etcd (`role: etcd` nodes): each etcd node is a member with its own server and
//! peer certificates (the cfssl guide's profiles); control planes are only etcd's clients.

use std::path::Path;

use super::{inventory, verify};
use crate::inventory::{Node, Role};
use crate::pki::{ClusterPki, ensure};

/// `inventory(cps, workers)` plus `etcd` nodes etcd-1 … at 10.77.0.31 ….
fn with_etcd(cps: usize, etcd: usize) -> crate::inventory::Inventory {
    let mut inv = inventory(cps, 1);
    for i in 1..=etcd {
        inv.nodes.push(Node {
            name: crate::inventory::NodeName::new(&format!("etcd-{i}")).unwrap(),
            address: format!("10.77.0.{}", 30 + i).parse().unwrap(),
            role: Role::Etcd,
            ssh: Default::default(),
            labels: Default::default(),
            taints: None,
        });
    }
    inv
}

fn paths(pki: &ClusterPki, node: &Node) -> Vec<String> {
    let mut p: Vec<String> = pki
        .files_for(node, None)
        .iter()
        .map(|f| {
            f.remote_path
                .strip_prefix("/etc/kubernetes/")
                .unwrap()
                .display()
                .to_string()
        })
        .collect();
    p.sort();
    p
}

#[test]
fn an_etcd_node_gets_the_etcd_ca_cert_its_own_member_pairs_and_the_healthcheck_client() {
    let tmp = tempfile::tempdir().unwrap();
    let inv = with_etcd(2, 3);
    let (pki, _) = ensure(tmp.path(), &inv).unwrap();
    let etcd1 = inv.node("etcd-1").unwrap();
    assert_eq!(
        paths(&pki, etcd1),
        [
            "pki/etcd/ca.crt",
            "pki/etcd/healthcheck-client.crt",
            "pki/etcd/healthcheck-client.key",
            "pki/etcd/peer.crt",
            "pki/etcd/peer.key",
            "pki/etcd/server.crt",
            "pki/etcd/server.key",
        ]
    );
    let files = pki.files_for(etcd1, None);
    let server = files
        .iter()
        .find(|f| f.remote_path == Path::new("/etc/kubernetes/pki/etcd/server.crt"))
        .unwrap();
    assert_eq!(
        server.contents,
        std::fs::read(tmp.path().join("nodes/etcd-1/etcd/server.crt")).unwrap()
    );
}

#[test]
fn a_control_plane_is_only_etcds_client_with_the_ca_cert_and_no_member_certs() {
    let tmp = tempfile::tempdir().unwrap();
    let inv = with_etcd(2, 3);
    let (pki, _) = ensure(tmp.path(), &inv).unwrap();
    let cp = paths(&pki, inv.node("cp-1").unwrap());
    for wanted in [
        "pki/etcd/ca.crt",
        "pki/apiserver-etcd-client.crt",
        "pki/apiserver-etcd-client.key",
        "pki/apiserver.crt",
    ] {
        assert!(cp.contains(&wanted.to_owned()), "{wanted} missing: {cp:?}");
    }
    for unwanted in [
        "pki/etcd/ca.key",
        "pki/etcd/server.crt",
        "pki/etcd/peer.crt",
        "pki/etcd/healthcheck-client.crt",
    ] {
        assert!(
            !cp.contains(&unwanted.to_owned()),
            "{unwanted} placed: {cp:?}"
        );
    }
    // No control plane has member certificates in the state either.
    assert!(!tmp.path().join("nodes/cp-1/etcd").exists());
    // A worker still gets nothing.
    assert!(pki.files_for(inv.node("w-1").unwrap(), None).is_empty());
}

#[test]
fn openssl_verifies_the_etcd_members_as_server_and_peer_under_the_etcd_ca() {
    let tmp = tempfile::tempdir().unwrap();
    ensure(tmp.path(), &with_etcd(1, 3)).unwrap();
    for node in ["etcd-1", "etcd-2", "etcd-3"] {
        for (base, purpose) in [
            ("server", "sslserver"),
            ("peer", "sslserver"),
            ("peer", "sslclient"),
        ] {
            let (ok, out) = verify(
                tmp.path(),
                "etcd/ca.crt",
                &format!("nodes/{node}/etcd/{base}.crt"),
                &["-purpose", purpose],
            );
            assert!(ok && out.contains(": OK"), "{node} {base} {purpose}: {out}");
        }
        let ip = format!("10.77.0.{}", 30 + node[5..].parse::<u8>().unwrap());
        let (ok, out) = verify(
            tmp.path(),
            "etcd/ca.crt",
            &format!("nodes/{node}/etcd/server.crt"),
            &["-verify_ip", &ip],
        );
        assert!(ok, "{node} server cert does not name {ip}: {out}");
    }
    let (ok, out) = verify(
        tmp.path(),
        "etcd/ca.crt",
        "apiserver-etcd-client.crt",
        &["-purpose", "sslclient"],
    );
    assert!(ok, "{out}");
}
