//! The PKI as a whole, checked the way its consumers see it: certificates read back
//! with x509-parser, chains verified by the `openssl` CLI, files and modes on disk,
//! and re-runs that must change nothing.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use time::{Duration, OffsetDateTime};
use x509_parser::extensions::GeneralName;

use super::*;
use crate::inventory::{Inventory, KeyType};

mod authorities;
mod distribution;
mod external_etcd;
mod kubeconfigs;
mod subjects;

/// An inventory with `cps` control-plane and `workers` worker nodes (cp-1 at
/// 10.77.0.11 …, w-1 at 10.77.0.21 …), ECDSA keys unless a test asks for RSA.
pub fn inventory(cps: usize, workers: usize) -> Inventory {
    let mut nodes = String::new();
    for i in 1..=cps {
        nodes.push_str(&format!(
            "  - {{name: cp-{i}, address: 10.77.0.{}, role: control-plane}}\n",
            10 + i
        ));
    }
    for i in 1..=workers {
        nodes.push_str(&format!(
            "  - {{name: w-{i}, address: 10.77.0.{}, role: worker}}\n",
            20 + i
        ));
    }
    let yaml = format!(
        "apiVersion: khactl.io/v1alpha1\nkind: Inventory\n\
         cluster: {{name: lab, kubernetesVersion: v1.31.2}}\n\
         vip: {{address: 10.77.0.100, dnsName: k8s-api.lab.test}}\n\
         nodes:\n{nodes}\
         pki: {{keyType: ecdsa-p256}}\n"
    );
    serde_yaml_ng::from_str(&yaml).unwrap()
}

fn rsa(mut inv: Inventory) -> Inventory {
    inv.pki.key_type = KeyType::Rsa2048;
    inv
}

/// Every file under `dir`, relative path → bytes.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<PathBuf, Vec<u8>>) {
        for entry in fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(root, &path, out);
            } else {
                out.insert(
                    path.strip_prefix(root).unwrap().to_path_buf(),
                    fs::read(&path).unwrap(),
                );
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

fn mode(path: &Path) -> u32 {
    fs::metadata(path).unwrap().permissions().mode() & 0o777
}

fn openssl(args: &[&str], dir: &Path) -> (bool, String) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl CLI");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// `openssl verify [extra…] -CAfile <ca> <leaf>`, run in `dir`.
fn verify(dir: &Path, ca: &str, leaf: &str, extra: &[&str]) -> (bool, String) {
    let mut args = vec!["verify"];
    args.extend_from_slice(extra);
    args.extend(["-CAfile", ca, leaf]);
    openssl(&args, dir)
}

fn der_of(path: &Path) -> Vec<u8> {
    inspect::cert_der(&fs::read(path).unwrap()).unwrap()
}

/// Shared files every control-plane node gets, without extension.
const SHARED: [&str; 7] = [
    "ca",
    "front-proxy-ca",
    "etcd/ca",
    "apiserver-kubelet-client",
    "front-proxy-client",
    "apiserver-etcd-client",
    "etcd/healthcheck-client",
];
const PER_NODE: [&str; 3] = ["apiserver", "etcd/server", "etcd/peer"];
/// The client pairs of kubeconfigs in the state directory: shared, then per node.
const SHARED_KUBECONFIG: [&str; 2] = ["kubeconfig/super-admin", "kubeconfig/workstation-admin"];
const PER_NODE_KUBECONFIG: [&str; 3] = [
    "kubeconfig/admin",
    "kubeconfig/controller-manager",
    "kubeconfig/scheduler",
];
/// How many pieces `ensure` reports for `cps` control-plane nodes: CAs, sa, the
/// shared leaves and kubeconfig pairs, then six per node.
fn pieces(cps: usize) -> usize {
    3 + 1 + 4 + 2 + cps * 6
}

/// `<prefix><base>.crt|.key` for each base plus the service-account pair, sorted.
fn file_names(prefix: &str, bases: &[impl AsRef<str>]) -> Vec<String> {
    let mut names: Vec<String> = bases
        .iter()
        .flat_map(|b| ["crt", "key"].map(|ext| format!("{prefix}{}.{ext}", b.as_ref())))
        .chain(["sa.key", "sa.pub"].map(|f| format!("{prefix}{f}")))
        .collect();
    names.sort();
    names
}

const CAS: [&str; 3] = ["ca", "front-proxy-ca", "etcd/ca"];

/// (local path without extension, CA base, openssl purpose) of every leaf for `inventory(2, _)`.
fn leaves_of_two_nodes() -> Vec<(String, &'static str, &'static str)> {
    let mut v = vec![
        ("apiserver-kubelet-client".to_owned(), "ca", "sslclient"),
        (
            "front-proxy-client".to_owned(),
            "front-proxy-ca",
            "sslclient",
        ),
        ("apiserver-etcd-client".to_owned(), "etcd/ca", "sslclient"),
        ("etcd/healthcheck-client".to_owned(), "etcd/ca", "sslclient"),
    ];
    for k in SHARED_KUBECONFIG {
        v.push((k.to_owned(), "ca", "sslclient"));
    }
    for n in ["cp-1", "cp-2"] {
        for k in PER_NODE_KUBECONFIG {
            v.push((format!("nodes/{n}/{k}"), "ca", "sslclient"));
        }
        v.push((format!("nodes/{n}/apiserver"), "ca", "sslserver"));
        v.push((format!("nodes/{n}/etcd/server"), "etcd/ca", "sslserver"));
        v.push((format!("nodes/{n}/etcd/peer"), "etcd/ca", "sslserver"));
        v.push((format!("nodes/{n}/etcd/peer"), "etcd/ca", "sslclient"));
        v.push((format!("nodes/{n}/etcd/server"), "etcd/ca", "sslclient"));
    }
    v
}

/// Asserts that the report entries `picked` names have `outcome` and all others were reused.
fn assert_only(report: &PkiReport, picked: impl Fn(&str) -> bool, outcome: &Outcome) {
    for (name, got) in &report.entries {
        let want = if picked(name) {
            outcome
        } else {
            &Outcome::Reused
        };
        assert_eq!(got, want, "{name}");
    }
    assert!(
        report.entries.iter().any(|(n, _)| picked(n)),
        "no entry was picked: {report}"
    );
}

#[test]
fn first_run_writes_kubeadms_layout_with_private_modes() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("pki");
    let (_, report) = ensure(&dir, &inventory(2, 1)).unwrap();
    let files: Vec<String> = snapshot(&dir)
        .keys()
        .map(|p| p.display().to_string())
        .collect();
    let mut bases: Vec<String> = SHARED
        .iter()
        .chain(&SHARED_KUBECONFIG)
        .map(|b| b.to_string())
        .collect();
    for n in ["cp-1", "cp-2"] {
        let per_node = PER_NODE.iter().chain(&PER_NODE_KUBECONFIG);
        bases.extend(per_node.map(|b| format!("nodes/{n}/{b}")));
    }
    assert_eq!(files, file_names("", &bases));
    for f in &files {
        let want_mode = if f.ends_with(".key") { 0o600 } else { 0o644 };
        assert_eq!(mode(&dir.join(f)), want_mode, "{f}");
    }
    for d in [
        ".",
        "etcd",
        "kubeconfig",
        "nodes",
        "nodes/cp-1",
        "nodes/cp-1/etcd",
        "nodes/cp-1/kubeconfig",
    ] {
        assert_eq!(mode(&dir.join(d)), 0o700, "{d}");
    }
    assert!(
        report.entries.iter().all(|(_, o)| *o == Outcome::Created),
        "{report:?}"
    );
    assert_eq!(report.entries.len(), pieces(2));
}

#[test]
fn authorities_are_ca_true_with_cert_and_crl_signing_and_ca_validity() {
    let tmp = tempfile::tempdir().unwrap();
    let mut inv = inventory(1, 0);
    inv.pki.ca_validity_days = 1000;
    let now = OffsetDateTime::now_utc();
    ensure_at(tmp.path(), &inv, now).unwrap();
    for (base, cn) in CAS.iter().zip(["kubernetes", "front-proxy-ca", "etcd-ca"]) {
        let der = der_of(&tmp.path().join(format!("{base}.crt")));
        let cert = inspect::parse(&der).unwrap();
        let bc = cert.basic_constraints().unwrap().unwrap();
        assert!(bc.critical && bc.value.ca, "{base}");
        let ku = cert.key_usage().unwrap().unwrap().value;
        assert!(
            ku.key_cert_sign() && ku.crl_sign() && ku.digital_signature(),
            "{base}"
        );
        assert!(!ku.key_encipherment(), "{base}");
        assert!(
            cert.extended_key_usage().unwrap().is_none(),
            "{base}: a CA carries no EKU"
        );
        assert!(cert.iter_extensions().any(|e| matches!(
            e.parsed_extension(),
            x509_parser::extensions::ParsedExtension::SubjectKeyIdentifier(_)
        )));
        let subject_cn: Vec<_> = cert
            .subject()
            .iter_common_name()
            .map(|a| a.as_str().unwrap())
            .collect();
        assert_eq!(subject_cn, [cn]);
        assert_eq!(
            cert.subject().as_raw(),
            cert.issuer().as_raw(),
            "{base} is self-signed"
        );
        let lifetime = inspect::not_after(&cert) - now;
        assert!(
            (lifetime - Duration::days(1000)).abs() < Duration::seconds(2),
            "{base}: {lifetime}"
        );
        assert!(inspect::not_before(&cert) <= now - Duration::minutes(4));
    }
}

#[test]
fn leaves_carry_their_profile_names_and_authority_key_id() {
    let tmp = tempfile::tempdir().unwrap();
    let inv = inventory(2, 0);
    let now = OffsetDateTime::now_utc();
    ensure_at(tmp.path(), &inv, now).unwrap();
    for spec in catalog::leaf_specs(&inv).unwrap() {
        let name = spec.display_name();
        let (cert_path, _) = lifecycle::pair_paths(tmp.path(), &spec.local_base());
        let der = der_of(&cert_path);
        let cert = inspect::parse(&der).unwrap();
        let ca_der = der_of(&tmp.path().join(format!("{}.crt", spec.authority.base())));
        let ca = inspect::parse(&ca_der).unwrap();

        let bc = cert.basic_constraints().unwrap().unwrap().value;
        assert!(!bc.ca, "{name}");
        let ku = cert.key_usage().unwrap().unwrap().value;
        assert!(
            ku.digital_signature() && !ku.key_encipherment() && !ku.key_cert_sign(),
            "{name}"
        );
        let eku = cert.extended_key_usage().unwrap().unwrap().value;
        let (server, client) = match spec.base {
            "apiserver" | "etcd/server" | "etcd/peer" => (true, true),
            _ => (false, true),
        };
        assert_eq!(
            (eku.server_auth, eku.client_auth),
            (server, client),
            "{name}"
        );

        let aki = cert
            .iter_extensions()
            .find_map(|e| match e.parsed_extension() {
                x509_parser::extensions::ParsedExtension::AuthorityKeyIdentifier(a) => {
                    a.key_identifier.clone()
                }
                _ => None,
            });
        let ski = ca
            .iter_extensions()
            .find_map(|e| match e.parsed_extension() {
                x509_parser::extensions::ParsedExtension::SubjectKeyIdentifier(k) => {
                    Some(k.clone())
                }
                _ => None,
            });
        assert_eq!(aki.unwrap().0, ski.unwrap().0, "{name}: AKI names its CA");
        assert_eq!(cert.issuer().as_raw(), ca.subject().as_raw(), "{name}");

        let cns: Vec<_> = cert
            .subject()
            .iter_common_name()
            .map(|a| a.as_str().unwrap())
            .collect();
        assert_eq!(cns, [spec.common_name.as_str()], "{name}");
        let orgs: Vec<_> = cert
            .subject()
            .iter_organization()
            .map(|a| a.as_str().unwrap().to_owned())
            .collect();
        assert_eq!(orgs, spec.organizations, "{name}");

        let mut dns = Vec::new();
        let mut ips = Vec::new();
        if let Some(san) = cert.subject_alternative_name().unwrap() {
            for n in &san.value.general_names {
                match n {
                    GeneralName::DNSName(d) => dns.push((*d).to_owned()),
                    GeneralName::IPAddress(b) => ips.push(inspect::ip_from_bytes(b).unwrap()),
                    other => panic!("{name}: unexpected SAN {other:?}"),
                }
            }
        }
        assert_eq!(dns, spec.dns_names, "{name}");
        assert_eq!(ips, spec.ip_addresses, "{name}");

        let lifetime = inspect::not_after(&cert) - now;
        assert!(
            (lifetime - Duration::days(365)).abs() < Duration::seconds(2),
            "{name}: {lifetime}"
        );
    }
}

#[test]
fn openssl_verifies_every_leaf_against_its_own_ca_only() {
    let tmp = tempfile::tempdir().unwrap();
    ensure(tmp.path(), &inventory(2, 0)).unwrap();
    for (leaf, ca, purpose) in leaves_of_two_nodes() {
        let (ok, out) = verify(
            tmp.path(),
            &format!("{ca}.crt"),
            &format!("{leaf}.crt"),
            &["-purpose", purpose],
        );
        assert!(ok && out.contains(": OK"), "{leaf} for {purpose}: {out}");
        for other in CAS.iter().filter(|c| **c != ca) {
            let (ok, out) = verify(
                tmp.path(),
                &format!("{other}.crt"),
                &format!("{leaf}.crt"),
                &[],
            );
            assert!(!ok, "{leaf} must not verify under {other}: {out}");
        }
    }
}

#[test]
fn openssl_accepts_the_apiserver_cert_for_its_node_the_vip_and_the_service_only() {
    let tmp = tempfile::tempdir().unwrap();
    ensure(tmp.path(), &inventory(3, 0)).unwrap();
    let leaf = "nodes/cp-1/apiserver.crt";
    for ip in ["10.77.0.100", "10.96.0.1", "10.77.0.11"] {
        let (ok, out) = verify(tmp.path(), "ca.crt", leaf, &["-verify_ip", ip]);
        assert!(ok, "{ip}: {out}");
    }
    for host in [
        "k8s-api.lab.test",
        "kubernetes.default.svc.cluster.local",
        "cp-1",
    ] {
        let (ok, out) = verify(tmp.path(), "ca.crt", leaf, &["-verify_hostname", host]);
        assert!(ok, "{host}: {out}");
    }
    for (flag, other) in [
        ("-verify_ip", "10.77.0.99"),
        ("-verify_ip", "10.77.0.13"),
        ("-verify_hostname", "cp-3"),
    ] {
        let (ok, _) = verify(tmp.path(), "ca.crt", leaf, &[flag, other]);
        assert!(!ok, "{other} is not cp-1's, and is refused");
    }
}

#[test]
fn behind_an_external_balancer_the_apiserver_cert_names_it_loopback_and_the_name() {
    let tmp = tempfile::tempdir().unwrap();
    let example = include_str!("../../inventories/cloud-lb-without-hairpin.yaml");
    let inv = crate::inventory::parse(example).unwrap().inventory;
    ensure(tmp.path(), &inv).unwrap();
    let leaf = "nodes/master1/apiserver.crt";
    for ip in ["192.168.1.200", "127.0.0.1", "192.168.1.101"] {
        let (ok, out) = verify(tmp.path(), "ca.crt", leaf, &["-verify_ip", ip]);
        assert!(ok, "{ip}: {out}");
    }
    let (ok, out) = verify(
        tmp.path(),
        "ca.crt",
        leaf,
        &["-verify_hostname", "k8s-api.cluster.internal"],
    );
    assert!(ok, "{out}");
    let (ok, _) = verify(tmp.path(), "ca.crt", leaf, &["-verify_ip", "192.168.1.201"]);
    assert!(!ok, "an address that is not the balancer's is refused");
    assert_eq!(
        catalog::workstation_url(&inv),
        "https://192.168.1.200:6443",
        "a workstation is no backend: it dials the balancer"
    );
}

#[test]
fn rsa_pki_uses_2048_bit_keys_and_a_pkix_service_account_key() {
    let tmp = tempfile::tempdir().unwrap();
    ensure(tmp.path(), &rsa(inventory(1, 0))).unwrap();
    for f in [
        "ca.crt",
        "etcd/ca.crt",
        "nodes/cp-1/apiserver.crt",
        "apiserver-etcd-client.crt",
    ] {
        let (ok, out) = openssl(&["x509", "-in", f, "-noout", "-text"], tmp.path());
        assert!(
            ok && out.contains("Public-Key: (2048 bit)") && out.contains("sha256WithRSAEncryption"),
            "{f}: {out}"
        );
    }
    let der = der_of(&tmp.path().join("nodes/cp-1/apiserver.crt"));
    let cert = inspect::parse(&der).unwrap();
    let ku = cert.key_usage().unwrap().unwrap().value;
    assert!(
        ku.digital_signature() && ku.key_encipherment(),
        "RSA leaves allow key transport"
    );
    let (ok, out) = verify(
        tmp.path(),
        "ca.crt",
        "nodes/cp-1/apiserver.crt",
        &["-purpose", "sslserver"],
    );
    assert!(ok, "{out}");

    let sa_pub = fs::read_to_string(tmp.path().join("sa.pub")).unwrap();
    assert!(
        sa_pub.starts_with("-----BEGIN PUBLIC KEY-----"),
        "PKIX, not PKCS#1"
    );
    let (ok, from_key) = openssl(&["pkey", "-in", "sa.key", "-pubout"], tmp.path());
    assert!(ok, "{from_key}");
    assert_eq!(from_key, sa_pub, "sa.pub is the public half of sa.key");
    let (ok, out) = openssl(&["pkey", "-in", "sa.key", "-noout", "-text"], tmp.path());
    assert!(ok && out.contains("Private-Key: (2048 bit"), "{out}");
}

#[test]
fn discovery_hash_matches_the_kubeadm_docs_openssl_pipeline() {
    let tmp = tempfile::tempdir().unwrap();
    let (pki, _) = ensure(tmp.path(), &rsa(inventory(1, 0))).unwrap();
    // The command from the kubeadm join documentation, run for real.
    let out = Command::new("sh")
        .arg("-c")
        .arg(
            "openssl x509 -pubkey -noout -in ca.crt | openssl pkey -pubin -outform der | sha256sum",
        )
        .current_dir(tmp.path())
        .output()
        .unwrap();
    assert!(out.status.success());
    let hex = String::from_utf8(out.stdout)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned();
    assert_eq!(hex.len(), 64);
    assert_eq!(pki.discovery_hash(), format!("sha256:{hex}"));
}

#[test]
fn a_second_run_changes_no_byte() {
    let tmp = tempfile::tempdir().unwrap();
    let inv = inventory(3, 2);
    let (first, _) = ensure(tmp.path(), &inv).unwrap();
    let before = snapshot(tmp.path());
    let (second, report) = ensure(tmp.path(), &inv).unwrap();
    assert!(!report.changed(), "{report}");
    assert_eq!(snapshot(tmp.path()), before);
    for node in &inv.nodes {
        assert_eq!(
            first.files_for(node, default_init_node(&inv)),
            second.files_for(node, default_init_node(&inv)),
            "{}",
            node.name
        );
    }
    assert_eq!(first.discovery_hash(), second.discovery_hash());
    assert_eq!(
        report.to_string(),
        format!("certificates and keys: reused {}", pieces(3))
    );
}

#[test]
fn adding_a_fourth_control_plane_reissues_nothing_of_the_first_three() {
    let tmp = tempfile::tempdir().unwrap();
    let three = inventory(3, 1);
    let (first, _) = ensure(tmp.path(), &three).unwrap();
    let before = snapshot(tmp.path());
    let four = inventory(4, 1);
    let (second, report) = ensure(tmp.path(), &four).unwrap();
    let after = snapshot(tmp.path());
    for (path, bytes) in &before {
        assert_eq!(Some(bytes), after.get(path), "{} changed", path.display());
    }
    let added: Vec<_> = after.keys().filter(|p| !before.contains_key(*p)).collect();
    assert!(
        !added.is_empty() && added.iter().all(|p| p.starts_with("nodes/cp-4")),
        "{added:?}"
    );
    assert_only(&report, |n| n.ends_with("(cp-4)"), &Outcome::Created);
    for node in three.control_plane() {
        assert_eq!(
            first.files_for(node, default_init_node(&three)),
            second.files_for(node, default_init_node(&three)),
            "{} gets the same files",
            node.name
        );
    }
    let (ok, out) = verify(
        tmp.path(),
        "ca.crt",
        "nodes/cp-4/apiserver.crt",
        &["-verify_ip", "10.77.0.14"],
    );
    assert!(ok, "the new node's cert names it: {out}");
}

#[test]
fn a_new_api_dns_name_reissues_the_apiserver_certs_and_nothing_else() {
    let tmp = tempfile::tempdir().unwrap();
    ensure(tmp.path(), &inventory(2, 0)).unwrap();
    let mut renamed = inventory(2, 0);
    renamed.vip.as_mut().unwrap().dns_name =
        Some(crate::inventory::DnsName::new("api.lab.test").unwrap());
    let (_, report) = ensure(tmp.path(), &renamed).unwrap();
    assert_only(
        &report,
        |n| n.starts_with("apiserver ("),
        &Outcome::Reissued(Reissue::NamesChanged),
    );
    let (ok, out) = verify(
        tmp.path(),
        "ca.crt",
        "nodes/cp-2/apiserver.crt",
        &["-verify_hostname", "api.lab.test"],
    );
    assert!(ok, "{out}");
}

#[test]
fn changing_the_key_type_reissues_leaves_but_keeps_the_cas() {
    let tmp = tempfile::tempdir().unwrap();
    ensure(tmp.path(), &inventory(1, 0)).unwrap();
    let before = snapshot(tmp.path());
    let (_, report) = ensure(tmp.path(), &rsa(inventory(1, 0))).unwrap();
    assert_eq!(
        report.outcome("etcd/peer (cp-1)"),
        Some(&Outcome::Reissued(Reissue::KeyTypeChanged))
    );
    assert_eq!(report.outcome("ca"), Some(&Outcome::Reused));
    assert_eq!(
        before[Path::new("ca.key")],
        fs::read(tmp.path().join("ca.key")).unwrap()
    );
    let (ok, out) = verify(tmp.path(), "etcd/ca.crt", "nodes/cp-1/etcd/peer.crt", &[]);
    assert!(ok, "an RSA leaf under the ECDSA CA still verifies: {out}");
}

#[test]
fn leaves_are_renewed_within_thirty_days_of_expiry_and_cas_are_not() {
    let tmp = tempfile::tempdir().unwrap();
    let inv = inventory(1, 0);
    let now = OffsetDateTime::now_utc();
    ensure_at(tmp.path(), &inv, now).unwrap();
    let (_, report) = ensure_at(tmp.path(), &inv, now + Duration::days(300)).unwrap();
    assert!(!report.changed(), "65 days left is fine: {report}");
    let (pki, report) = ensure_at(tmp.path(), &inv, now + Duration::days(340)).unwrap();
    assert!(
        matches!(
            report.outcome("front-proxy-client"),
            Some(Outcome::Reissued(Reissue::ExpiresSoon { days: 24 | 25 }))
        ),
        "{report}"
    );
    assert_eq!(report.outcome("ca"), Some(&Outcome::Reused));
    let leaf = pki
        .expiries()
        .into_iter()
        .find(|e| e.name == "front-proxy-client")
        .unwrap();
    assert!(leaf.not_after > now + Duration::days(700));
}

#[test]
fn short_lived_leaves_are_renewed_in_the_last_half_of_their_life_only() {
    let tmp = tempfile::tempdir().unwrap();
    let mut inv = inventory(1, 0);
    inv.pki.cert_validity_days = 7;
    let now = OffsetDateTime::now_utc();
    ensure_at(tmp.path(), &inv, now).unwrap();
    let (_, report) = ensure_at(tmp.path(), &inv, now + Duration::days(3)).unwrap();
    assert!(!report.changed(), "{report}");
    let (_, report) = ensure_at(tmp.path(), &inv, now + Duration::days(4)).unwrap();
    assert_eq!(
        report.outcome("apiserver (cp-1)"),
        Some(&Outcome::Reissued(Reissue::ExpiresSoon { days: 2 }))
    );
}

#[test]
fn a_leaf_from_another_ca_is_reissued() {
    let tmp = tempfile::tempdir().unwrap();
    ensure(tmp.path(), &inventory(1, 0)).unwrap();
    // Right names, wrong CA: sign-alike written by a second PKI.
    let other = tempfile::tempdir().unwrap();
    ensure(other.path(), &inventory(1, 0)).unwrap();
    for ext in ["crt", "key"] {
        let f = format!("apiserver-etcd-client.{ext}");
        fs::copy(other.path().join(&f), tmp.path().join(&f)).unwrap();
    }
    let (_, report) = ensure(tmp.path(), &inventory(1, 0)).unwrap();
    assert_eq!(
        report.outcome("apiserver-etcd-client"),
        Some(&Outcome::Reissued(Reissue::IssuerChanged))
    );
    let (ok, out) = verify(tmp.path(), "etcd/ca.crt", "apiserver-etcd-client.crt", &[]);
    assert!(ok, "{out}");
}

#[test]
fn a_leaf_with_a_missing_or_foreign_key_is_reissued() {
    let tmp = tempfile::tempdir().unwrap();
    ensure(tmp.path(), &inventory(1, 0)).unwrap();
    fs::remove_file(tmp.path().join("nodes/cp-1/etcd/server.key")).unwrap();
    fs::copy(
        tmp.path().join("front-proxy-client.key"),
        tmp.path().join("apiserver-kubelet-client.key"),
    )
    .unwrap();
    let (_, report) = ensure(tmp.path(), &inventory(1, 0)).unwrap();
    assert_eq!(
        report.outcome("etcd/server (cp-1)"),
        Some(&Outcome::Created)
    );
    assert_eq!(
        report.outcome("apiserver-kubelet-client"),
        Some(&Outcome::Reissued(Reissue::KeyMismatch))
    );
    let (ok, out) = openssl(
        &[
            "x509",
            "-in",
            "apiserver-kubelet-client.crt",
            "-noout",
            "-pubkey",
        ],
        tmp.path(),
    );
    let (_, from_key) = openssl(
        &["pkey", "-in", "apiserver-kubelet-client.key", "-pubout"],
        tmp.path(),
    );
    assert!(
        ok && out == from_key,
        "certificate and key are a pair again"
    );
}

#[test]
fn reused_keys_get_their_private_mode_back() {
    let tmp = tempfile::tempdir().unwrap();
    ensure(tmp.path(), &inventory(1, 0)).unwrap();
    for f in ["ca.key", "sa.key", "nodes/cp-1/apiserver.key"] {
        fs::set_permissions(tmp.path().join(f), fs::Permissions::from_mode(0o644)).unwrap();
    }
    ensure(tmp.path(), &inventory(1, 0)).unwrap();
    for f in ["ca.key", "sa.key", "nodes/cp-1/apiserver.key"] {
        assert_eq!(mode(&tmp.path().join(f)), 0o600, "{f}");
    }
}

#[test]
fn expiries_list_cas_then_every_leaf() {
    let tmp = tempfile::tempdir().unwrap();
    let (pki, _) = ensure(tmp.path(), &inventory(2, 0)).unwrap();
    let list = pki.expiries();
    let names: Vec<String> = list
        .iter()
        .map(|e| match &e.node {
            Some(n) => format!("{} ({n})", e.name),
            None => e.name.clone(),
        })
        .collect();
    assert_eq!(&names[..3], ["ca", "front-proxy-ca", "etcd/ca"]);
    assert!(list[..3].iter().all(|e| e.is_authority) && list[3..].iter().all(|e| !e.is_authority));
    assert_eq!(
        names.len(),
        pieces(2) - 1,
        "all but sa, which does not expire"
    );
    for name in [
        "etcd/peer (cp-2)",
        "scheduler.conf (cp-2)",
        "super-admin.conf",
        "admin.conf (workstation)",
    ] {
        assert!(names.contains(&name.to_owned()), "{name}: {names:?}");
    }
}

#[test]
fn debug_output_never_shows_key_material() {
    let tmp = tempfile::tempdir().unwrap();
    let inv = inventory(1, 0);
    let (pki, _) = ensure(tmp.path(), &inv).unwrap();
    let debug = format!(
        "{pki:?} {:?}",
        pki.files_for(&inv.nodes[0], default_init_node(&inv))
    );
    assert!(!debug.contains("PRIVATE KEY"), "{debug}");
}

#[test]
fn the_report_names_what_was_reissued_and_why() {
    let mut report = PkiReport::default();
    report.push("ca", Outcome::Reused);
    report.push("apiserver (cp-1)", Outcome::Reissued(Reissue::NamesChanged));
    report.push("etcd/peer (cp-3)", Outcome::Created);
    report
        .warnings
        .push("the ca CA expires on 2027-01-01".into());
    assert_eq!(
        report.to_string(),
        "certificates and keys: created 1; re-issued apiserver (cp-1) (names (SANs) changed); reused 1\n\
         warning: the ca CA expires on 2027-01-01"
    );
}
