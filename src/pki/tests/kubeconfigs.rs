//! The kubeconfigs as kubeadm judges them (CA data and server URL, `validateKubeConfig`),
//! parsed with unknown fields denied; where each one goes; and that they follow their
//! client certificates through re-runs and renewals. (The real `kubectl` is not on every
//! machine that runs these; the lab's end-to-end tests use it against a cluster.)

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use time::{Duration, OffsetDateTime};

use super::subjects::holder_of;
use super::{inventory, mode, openssl, snapshot};
use crate::inventory::{DnsName, NodeName};
use crate::pki::kubeconfig::Config;
use crate::pki::{
    ClusterPki, Outcome, PkiFile, Reissue, default_init_node, ensure, ensure_at, inspect,
};

/// The kubeconfig at `/etc/kubernetes/<name>` among `files`, parsed with unknown fields
/// denied, if the node gets it.
fn conf(files: &[PkiFile], name: &str) -> Option<Config> {
    let path = Path::new("/etc/kubernetes").join(name);
    let file = files.iter().find(|f| f.remote_path == path)?;
    Some(serde_yaml_ng::from_slice(&file.contents).unwrap())
}

fn files_of(pki: &ClusterPki, inv: &crate::inventory::Inventory, node: &str) -> Vec<PkiFile> {
    pki.files_for(inv.node(node).unwrap(), default_init_node(inv))
}

/// Standard base64 with padding, decoded (the reverse of what kubeconfigs embed).
fn unbase64(text: &str) -> Vec<u8> {
    let value = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        b'/' => 63,
        other => panic!("not base64: {other}"),
    };
    let mut out = Vec::new();
    for chunk in text.as_bytes().chunks(4) {
        let digits: Vec<u8> = chunk
            .iter()
            .filter(|c| **c != b'=')
            .map(|c| value(*c))
            .collect();
        let n = digits
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, d)| n | u32::from(*d) << (18 - 6 * i));
        out.extend(&n.to_be_bytes()[1..digits.len()]);
    }
    out
}

/// kubeadm's CA comparison: both sides whitespace-trimmed, byte for byte.
fn trimmed(bytes: &[u8]) -> &[u8] {
    bytes.trim_ascii()
}

#[test]
fn each_control_plane_gets_kubeadms_kubeconfigs_with_the_urls_kubeadm_computes() {
    let tmp = tempfile::tempdir().unwrap();
    let inv = inventory(2, 1);
    let (pki, _) = ensure(tmp.path(), &inv).unwrap();
    let ca = fs::read(tmp.path().join("ca.crt")).unwrap();
    for (node, address) in [("cp-1", "10.77.0.11"), ("cp-2", "10.77.0.12")] {
        let files = files_of(&pki, &inv, node);
        for (name, user, server, pair) in [
            (
                "admin.conf",
                "kubernetes-admin",
                "https://k8s-api.lab.test:8443".to_owned(),
                "kubeconfig/admin",
            ),
            (
                "controller-manager.conf",
                "system:kube-controller-manager",
                format!("https://{address}:6443"),
                "kubeconfig/controller-manager",
            ),
            (
                "scheduler.conf",
                "system:kube-scheduler",
                format!("https://{address}:6443"),
                "kubeconfig/scheduler",
            ),
        ] {
            let what = format!("{node}: {name}");
            let c = conf(&files, name).unwrap_or_else(|| panic!("{what} missing"));
            assert_eq!((c.api_version.as_str(), c.kind.as_str()), ("v1", "Config"));
            let [cluster] = &c.clusters[..] else {
                panic!("{what}: one cluster")
            };
            let [context] = &c.contexts[..] else {
                panic!("{what}: one context")
            };
            let [user_entry] = &c.users[..] else {
                panic!("{what}: one user")
            };
            assert_eq!(cluster.name, "lab", "{what}: named after the cluster");
            assert_eq!(cluster.cluster.server, server, "{what}");
            assert_eq!(
                trimmed(&unbase64(&cluster.cluster.certificate_authority_data)),
                trimmed(&ca),
                "{what}: kubeadm would call this the wrong CA cert"
            );
            assert_eq!(user_entry.name, user, "{what}");
            assert_eq!(
                (context.name.as_str(), context.context.cluster.as_str()),
                (format!("{user}@lab").as_str(), "lab"),
                "{what}"
            );
            assert_eq!(context.context.user, user, "{what}");
            assert_eq!(c.current_context, context.name, "{what}");
            // The client certificate and key are the pair in the state directory.
            let stored = |ext: &str| {
                fs::read(tmp.path().join(format!("nodes/{node}/{pair}.{ext}"))).unwrap()
            };
            let cert = unbase64(&user_entry.user.client_certificate_data);
            assert_eq!(cert, stored("crt"), "{what}");
            assert_eq!(
                unbase64(&user_entry.user.client_key_data),
                stored("key"),
                "{what}"
            );
            assert_eq!(holder_of(&cert).cn, user, "{what}: user = CN");
        }
    }
    // Each node's kubeconfigs hold that node's own keys.
    let key = |node| {
        conf(&files_of(&pki, &inv, node), "admin.conf")
            .unwrap()
            .users[0]
            .user
            .client_key_data
            .clone()
    };
    assert_ne!(key("cp-1"), key("cp-2"));
}

#[test]
fn super_admin_conf_goes_to_the_init_node_only() {
    let tmp = tempfile::tempdir().unwrap();
    let inv = inventory(3, 1);
    let (pki, _) = ensure(tmp.path(), &inv).unwrap();
    assert_eq!(default_init_node(&inv).map(NodeName::as_str), Some("cp-1"));
    let cp2 = inv.node("cp-2").unwrap();
    let has_super = |node: &str, init: Option<&NodeName>| {
        conf(
            &pki.files_for(inv.node(node).unwrap(), init),
            "super-admin.conf",
        )
    };
    for node in ["cp-1", "cp-2", "cp-3", "w-1"] {
        let chosen = has_super(node, Some(&cp2.name));
        assert_eq!(chosen.is_some(), node == "cp-2", "{node}, init on cp-2");
        assert!(has_super(node, None).is_none(), "{node}, no init node");
    }
    let c = has_super("cp-2", Some(&cp2.name)).unwrap();
    assert_eq!(
        c.clusters[0].cluster.server,
        "https://k8s-api.lab.test:8443"
    );
    assert_eq!(c.current_context, "kubernetes-super-admin@lab");
    let cert = unbase64(&c.users[0].user.client_certificate_data);
    assert_eq!(holder_of(&cert).o, ["system:masters"]);
    let file = pki
        .files_for(cp2, Some(&cp2.name))
        .into_iter()
        .find(|f| f.remote_path == Path::new("/etc/kubernetes/super-admin.conf"))
        .unwrap();
    assert_eq!((file.mode, file.secret), (0o600, true));
}

#[test]
fn the_ca_data_is_the_pem_kubeadm_encodes_even_for_an_adopted_ca_file_with_text() {
    let tmp = tempfile::tempdir().unwrap();
    ensure(tmp.path(), &inventory(1, 0)).unwrap();
    // `openssl x509 -text` output: a human-readable dump before the PEM block. kubeadm
    // parses the certificate and re-encodes it, so the file's other bytes never count.
    let (ok, text) = openssl(&["x509", "-in", "ca.crt", "-text"], tmp.path());
    assert!(ok && text.starts_with("Certificate:"), "{text}");
    let canonical = fs::read(tmp.path().join("ca.crt")).unwrap();
    fs::write(tmp.path().join("ca.crt"), &text).unwrap();
    let inv = inventory(1, 0);
    let (pki, report) = ensure(tmp.path(), &inv).unwrap();
    assert!(!report.changed(), "{report}");
    let c = conf(&files_of(&pki, &inv, "cp-1"), "admin.conf").unwrap();
    assert_eq!(
        unbase64(&c.clusters[0].cluster.certificate_authority_data),
        canonical
    );
}

#[test]
fn the_workstation_admin_conf_dials_the_vip_with_a_key_no_node_has() {
    let tmp = tempfile::tempdir().unwrap();
    let mut inv = inventory(2, 0);
    inv.vip.as_mut().unwrap().dns_name = Some(DnsName::new("api.corp.example").unwrap());
    let (pki, _) = ensure(&tmp.path().join("pki"), &inv).unwrap();
    let c: Config = serde_yaml_ng::from_slice(pki.workstation_admin_conf()).unwrap();
    assert_eq!(c.clusters[0].cluster.server, "https://10.77.0.100:8443");
    assert_eq!(c.current_context, "kubernetes-admin@lab");
    let cert = unbase64(&c.users[0].user.client_certificate_data);
    let holder = holder_of(&cert);
    assert_eq!(
        (holder.cn.as_str(), holder.o),
        (
            "kubernetes-admin",
            vec!["kubeadm:cluster-admins".to_owned()]
        )
    );
    let key = &c.users[0].user.client_key_data;
    for node in ["cp-1", "cp-2"] {
        let files = files_of(&pki, &inv, node);
        assert!(
            files
                .iter()
                .all(|f| !f.contents.windows(key.len()).any(|w| w == key.as_bytes())),
            "{node} holds the workstation's key"
        );
    }

    // Saved private, and a second save with the same bytes changes nothing.
    let path = tmp.path().join("admin.conf");
    pki.save_workstation_admin_conf(&path).unwrap();
    assert_eq!(fs::read(&path).unwrap(), pki.workstation_admin_conf());
    assert_eq!(mode(&path), 0o600);
    fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
    let inode = |p: &Path| std::os::unix::fs::MetadataExt::ino(&fs::metadata(p).unwrap());
    let before = inode(&path);
    pki.save_workstation_admin_conf(&path).unwrap();
    assert_eq!(inode(&path), before, "not rewritten");
    assert_eq!(mode(&path), 0o600, "but made private again");
}

#[test]
fn a_new_endpoint_rewrites_the_admin_confs_but_keeps_their_certificates() {
    let tmp = tempfile::tempdir().unwrap();
    let inv = inventory(1, 0);
    let (before, _) = ensure(tmp.path(), &inv).unwrap();
    let mut moved = inventory(1, 0);
    moved.vip.as_mut().unwrap().dns_name = None;
    let (after, report) = ensure(tmp.path(), &moved).unwrap();
    assert_eq!(report.outcome("admin.conf (cp-1)"), Some(&Outcome::Reused));
    let old = conf(&files_of(&before, &inv, "cp-1"), "admin.conf").unwrap();
    let new = conf(&files_of(&after, &moved, "cp-1"), "admin.conf").unwrap();
    assert_eq!(new.clusters[0].cluster.server, "https://10.77.0.100:8443");
    assert_eq!(
        old.users[0].user.client_key_data,
        new.users[0].user.client_key_data
    );
    // The local components' kubeconfigs do not depend on the endpoint at all.
    assert_eq!(
        conf(&files_of(&before, &inv, "cp-1"), "scheduler.conf")
            .unwrap()
            .clusters[0]
            .cluster
            .server,
        conf(&files_of(&after, &moved, "cp-1"), "scheduler.conf")
            .unwrap()
            .clusters[0]
            .cluster
            .server,
    );
}

#[test]
fn kubeconfig_certificates_are_renewed_like_every_leaf() {
    let tmp = tempfile::tempdir().unwrap();
    let inv = inventory(1, 0);
    let now = OffsetDateTime::now_utc();
    let (first, _) = ensure_at(tmp.path(), &inv, now).unwrap();
    let before = snapshot(tmp.path());
    let (renewed, report) = ensure_at(tmp.path(), &inv, now + Duration::days(340)).unwrap();
    for name in [
        "admin.conf (cp-1)",
        "controller-manager.conf (cp-1)",
        "scheduler.conf (cp-1)",
        "super-admin.conf",
        "admin.conf (workstation)",
    ] {
        assert!(
            matches!(
                report.outcome(name),
                Some(Outcome::Reissued(Reissue::ExpiresSoon { .. }))
            ),
            "{name}: {report}"
        );
    }
    assert_eq!(
        before[Path::new("ca.crt")],
        snapshot(tmp.path())[Path::new("ca.crt")]
    );
    let old = conf(&files_of(&first, &inv, "cp-1"), "admin.conf").unwrap();
    let new = conf(&files_of(&renewed, &inv, "cp-1"), "admin.conf").unwrap();
    assert_ne!(
        old.users[0].user.client_certificate_data,
        new.users[0].user.client_certificate_data
    );
    assert_eq!(
        old.clusters[0].cluster.certificate_authority_data,
        new.clusters[0].cluster.certificate_authority_data,
        "same CA, so kubeadm still accepts the file in place"
    );
    let der = inspect::cert_der(&unbase64(&new.users[0].user.client_certificate_data)).unwrap();
    let cert = inspect::parse(&der).unwrap();
    assert!(inspect::not_after(&cert) > now + Duration::days(700));
}
