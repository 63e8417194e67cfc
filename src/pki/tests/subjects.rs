//! Every certificate's subject against the contract's table (KUBEADM-CONTRACT.md §2,
//! from kubeadm's `certlist.go` and `kubeconfig.go`), per Kubernetes release.

use std::fs;
use std::path::{Path, PathBuf};

use super::{assert_only, inventory, snapshot};
use crate::inventory::Inventory;
use crate::pki::{Outcome, Reissue, ensure, inspect};

/// What a certificate says about its holder: CN, every O, and its extended key usages.
#[derive(Debug, PartialEq)]
pub(super) struct Holder {
    pub cn: String,
    pub o: Vec<String>,
    pub eku: Eku,
}

#[derive(Debug, PartialEq)]
pub(super) enum Eku {
    /// A CA: no extended key usage.
    None,
    Client,
    ServerAndClient,
}

pub(super) fn holder_of(pem: &[u8]) -> Holder {
    let der = inspect::cert_der(pem).unwrap();
    let cert = inspect::parse(&der).unwrap();
    let strings = |it: &mut dyn Iterator<Item = &x509_parser::x509::AttributeTypeAndValue>| {
        it.map(|a| a.as_str().unwrap().to_owned())
            .collect::<Vec<_>>()
    };
    let eku = match cert.extended_key_usage().unwrap() {
        None => Eku::None,
        Some(e) => match (e.value.server_auth, e.value.client_auth) {
            (false, true) => Eku::Client,
            (true, true) => Eku::ServerAndClient,
            other => panic!("unexpected EKU {other:?}"),
        },
    };
    Holder {
        cn: strings(&mut cert.subject().iter_common_name())
            .pop()
            .unwrap(),
        o: strings(&mut cert.subject().iter_organization()),
        eku,
    }
}

fn holder(cn: &str, o: &[&str], eku: Eku) -> Holder {
    Holder {
        cn: cn.to_owned(),
        o: o.iter().map(|s| (*s).to_owned()).collect(),
        eku,
    }
}

/// The contract's subject table (KUBEADM-CONTRACT.md §2, from kubeadm's `certlist.go`),
/// written out for one release: certificate file in the state directory → holder.
fn kubeadm_subjects(minor: u32) -> Vec<(&'static str, Holder)> {
    let kubelet_client_o = if minor >= 37 {
        "system:kubelet-api-admin"
    } else {
        "kubeadm:cluster-admins"
    };
    vec![
        ("ca.crt", holder("kubernetes", &[], Eku::None)),
        (
            "front-proxy-ca.crt",
            holder("front-proxy-ca", &[], Eku::None),
        ),
        ("etcd/ca.crt", holder("etcd-ca", &[], Eku::None)),
        // kubeadm's has serverAuth only; the extra clientAuth is khactl's documented
        // server profile, and kubeadm never checks EKUs.
        (
            "nodes/cp-1/apiserver.crt",
            holder("kube-apiserver", &[], Eku::ServerAndClient),
        ),
        (
            "apiserver-kubelet-client.crt",
            holder(
                "kube-apiserver-kubelet-client",
                &[kubelet_client_o],
                Eku::Client,
            ),
        ),
        (
            "apiserver-etcd-client.crt",
            holder("kube-apiserver-etcd-client", &[], Eku::Client),
        ),
        (
            "front-proxy-client.crt",
            holder("front-proxy-client", &[], Eku::Client),
        ),
        (
            "nodes/cp-1/etcd/server.crt",
            holder("cp-1", &[], Eku::ServerAndClient),
        ),
        (
            "nodes/cp-1/etcd/peer.crt",
            holder("cp-1", &[], Eku::ServerAndClient),
        ),
        (
            "etcd/healthcheck-client.crt",
            holder("kube-etcd-healthcheck-client", &[], Eku::Client),
        ),
        // The kubeconfigs' client certificates (embedded as they are stored, which
        // kubeconfigs.rs checks). kubelet.conf is kubeadm's own, not in this table.
        (
            "nodes/cp-1/kubeconfig/admin.crt",
            holder("kubernetes-admin", &["kubeadm:cluster-admins"], Eku::Client),
        ),
        (
            "kubeconfig/workstation-admin.crt",
            holder("kubernetes-admin", &["kubeadm:cluster-admins"], Eku::Client),
        ),
        (
            "kubeconfig/super-admin.crt",
            holder("kubernetes-super-admin", &["system:masters"], Eku::Client),
        ),
        (
            "nodes/cp-1/kubeconfig/controller-manager.crt",
            holder("system:kube-controller-manager", &[], Eku::Client),
        ),
        (
            "nodes/cp-1/kubeconfig/scheduler.crt",
            holder("system:kube-scheduler", &[], Eku::Client),
        ),
    ]
}

pub(super) fn with_version(mut inv: Inventory, version: &str) -> Inventory {
    inv.cluster.kubernetes_version = crate::inventory::KubernetesVersion::new(version).unwrap();
    inv
}

#[test]
fn every_certificate_has_the_subject_kubeadm_gives_it_for_the_target_release() {
    for (version, minor) in [("v1.30.4", 30), ("v1.31.2", 31), ("v1.37.0", 37)] {
        let tmp = tempfile::tempdir().unwrap();
        ensure(tmp.path(), &with_version(inventory(1, 0), version)).unwrap();
        let table = kubeadm_subjects(minor);
        for (file, want) in &table {
            let pem = fs::read(tmp.path().join(file)).unwrap();
            assert_eq!(&holder_of(&pem), want, "{version}: {file}");
        }
        // The table covers every certificate khactl made.
        let made: Vec<PathBuf> = snapshot(tmp.path())
            .into_keys()
            .filter(|p| p.extension().is_some_and(|e| e == "crt"))
            .collect();
        for file in &made {
            assert!(
                table.iter().any(|(f, _)| Path::new(f) == file),
                "{version}: {} is not in the table",
                file.display()
            );
        }
    }
}

#[test]
fn moving_to_1_37_reissues_the_kubelet_client_cert_for_its_new_group_only() {
    let tmp = tempfile::tempdir().unwrap();
    ensure(tmp.path(), &with_version(inventory(2, 1), "v1.30.4")).unwrap();
    // 1.29 to 1.36 share every subject: upgrading within them keeps every byte.
    let before = snapshot(tmp.path());
    ensure(tmp.path(), &with_version(inventory(2, 1), "v1.36.3")).unwrap();
    assert_eq!(snapshot(tmp.path()), before);

    let (_, report) = ensure(tmp.path(), &with_version(inventory(2, 1), "v1.37.0")).unwrap();
    assert_only(
        &report,
        |n| n == "apiserver-kubelet-client",
        &Outcome::Reissued(Reissue::SubjectChanged),
    );
    let pem = fs::read(tmp.path().join("apiserver-kubelet-client.crt")).unwrap();
    assert_eq!(holder_of(&pem).o, ["system:kubelet-api-admin"]);

    // A patch release changes nothing.
    let before = snapshot(tmp.path());
    ensure(tmp.path(), &with_version(inventory(2, 1), "v1.37.4")).unwrap();
    assert_eq!(snapshot(tmp.path()), before);
}
