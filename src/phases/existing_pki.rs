//! The PKI already on a node, held against the state directory's before anything is written.
//!
//! A new state directory (another workstation, a lost `~/.local/state`) makes a new CA, and
//! distributing it replaced the node's `/etc/kubernetes/pki/ca.key`: every certificate and
//! kubeconfig of a running cluster broken at once. So preflight reads the public half of each
//! root the node already has (the three CA certificates and `sa.pub`; never a key's content)
//! and compares its public key with ours. A root that is not ours stops the run before any
//! node changes, naming the two ways out. A certificate with our key but other bytes (a CA
//! re-signed elsewhere) is ours; distribution replaces it, after a backup, as it does any file
//! of an existing PKI ([`backup_path`]).

use std::path::{Path, PathBuf};

use x509_parser::pem::parse_x509_pem;

use crate::facts::HostFacts;
use crate::inventory::Node;
use crate::pki::{Authority, ClusterPki, REMOTE_DIR};

/// The public halves of the roots of trust, under [`REMOTE_DIR`].
const ROOTS: [&str; 4] = ["ca.crt", "front-proxy-ca.crt", "etcd/ca.crt", "sa.pub"];

/// Where a replaced PKI file is kept on the node: one directory per run, mirroring the path.
pub const BACKUP_ROOT: &str = "/var/lib/khactl/backup";

/// The roots' paths, read by content (they are public).
pub fn files_read() -> Vec<PathBuf> {
    ROOTS
        .iter()
        .map(|r| Path::new(REMOTE_DIR).join(r))
        .collect()
}

/// Problems for preflight: each root `node` would get from us that it already holds with
/// another public key.
pub fn problems(
    pki: &ClusterPki,
    node: &Node,
    facts: &HostFacts,
    state_pki: &Path,
    inventory: &Path,
) -> Vec<String> {
    let ours = pki.files_for(node, None);
    let cluster_ca = Path::new(REMOTE_DIR).join("ca.crt");
    let mut foreign = Vec::new();
    for path in files_read() {
        let Some(theirs) = facts.file(&path) else {
            continue;
        };
        // A worker gets no file from us, but a joined one holds the cluster CA kubeadm wrote:
        // another cluster's there means the node is that cluster's.
        let mine = match ours.iter().find(|f| f.remote_path == path) {
            Some(f) => f.contents.as_slice(),
            None if path == cluster_ca => pki.authority_cert(Authority::Kubernetes),
            None => continue,
        };
        if public_key(theirs).is_none() || public_key(theirs) != public_key(mine) {
            foreign.push(path.display().to_string());
        }
    }
    if foreign.is_empty() {
        return Vec::new();
    }
    vec![format!(
        "{} on this node {} not the one in {}: the node belongs to a cluster whose PKI this \
         state directory does not hold, and distributing ours would break it; nothing was \
         changed. Either point --state-dir at that cluster's state directory, or import the \
         cluster's CAs and service-account keys from a control plane into this one: `khactl \
         adopt-pki -i {} --from {}`",
        foreign.join(", "),
        if foreign.len() == 1 { "is" } else { "are" },
        state_pki.display(),
        inventory.display(),
        node.name
    )]
}

/// The DER SubjectPublicKeyInfo of a PEM certificate or public key; `None` if it is neither.
pub fn public_key(pem_text: &[u8]) -> Option<Vec<u8>> {
    let (_, pem) = parse_x509_pem(pem_text).ok()?;
    match pem.label.as_str() {
        "CERTIFICATE" => Some(pem.parse_x509().ok()?.public_key().raw.to_vec()),
        "PUBLIC KEY" => Some(pem.contents),
        _ => None,
    }
}

/// Where `path` is kept when a run stamped `stamp` replaces it.
pub fn backup_path(stamp: &str, path: &Path) -> PathBuf {
    let relative = path.strip_prefix("/").unwrap_or(path);
    Path::new(BACKUP_ROOT).join(stamp).join(relative)
}

/// A run's stamp for backup directories: UTC, second precision, sortable.
pub fn stamp() -> String {
    let format = time::macros::format_description!("[year][month][day]T[hour][minute][second]Z");
    time::OffsetDateTime::now_utc()
        .format(&format)
        .unwrap_or_else(|_| "unknown-time".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::facts::{FileDigest, sha256_hex};
    use crate::inventory::Inventory;
    use crate::phases::distribute_pki::plan_node;
    use crate::phases::{Change, test_support::debian_host};

    const INVENTORY: &str = "\
apiVersion: khactl.io/v1alpha1
kind: Inventory
cluster: { name: t, kubernetesVersion: v1.31.2 }
vip: { address: 10.0.0.100 }
pki: { keyType: ecdsa-p256 }
nodes:
  - { name: cp1, address: 10.0.0.11, role: control-plane }
  - { name: w1, address: 10.0.0.21, role: worker }
";

    fn inventory() -> Inventory {
        crate::inventory::parse(INVENTORY).unwrap().inventory
    }

    /// A cluster PKI made in a directory of its own: ours, or another cluster's.
    fn pki(dir: &Path) -> ClusterPki {
        crate::pki::ensure(dir, &inventory()).unwrap().0
    }

    fn file(pki: &ClusterPki, node: &Node, name: &str) -> Vec<u8> {
        let path = Path::new(REMOTE_DIR).join(name);
        let files = pki.files_for(node, None);
        files
            .into_iter()
            .find(|f| f.remote_path == path)
            .unwrap()
            .contents
    }

    fn holding(files: &[(&str, &[u8])]) -> HostFacts {
        let mut facts = debian_host();
        for (name, contents) in files {
            facts
                .files
                .insert(Path::new(REMOTE_DIR).join(name), Some(contents.to_vec()));
        }
        facts
    }

    #[test]
    fn another_clusters_ca_on_a_node_is_refused_naming_both_ways_out() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let (ours, theirs) = (pki(a.path()), pki(b.path()));
        let inv = inventory();
        let cp1 = inv.node("cp1").unwrap();
        let state = Path::new("/state/t/pki");
        let inv_path = Path::new("inv.yaml");

        let facts = holding(&[("ca.crt", &file(&theirs, cp1, "ca.crt"))]);
        let problems = problems(&ours, cp1, &facts, state, inv_path);
        assert_eq!(problems.len(), 1, "{problems:?}");
        let text = &problems[0];
        assert!(text.contains("/etc/kubernetes/pki/ca.crt"), "{text}");
        assert!(text.contains("--state-dir"), "{text}");
        assert!(
            text.contains("khactl adopt-pki -i inv.yaml --from cp1"),
            "{text}"
        );

        // Ours, or nothing there yet: fine.
        let facts = holding(&[("ca.crt", &file(&ours, cp1, "ca.crt"))]);
        assert!(problems_of(&ours, cp1, &facts).is_empty());
        assert!(problems_of(&ours, cp1, &debian_host()).is_empty());
        // Every root counts, sa.pub included; garbage is not ours either.
        let facts = holding(&[("sa.pub", &file(&theirs, cp1, "sa.pub"))]);
        assert_eq!(problems_of(&ours, cp1, &facts).len(), 1);
        let facts = holding(&[("etcd/ca.crt", b"not a certificate")]);
        assert_eq!(problems_of(&ours, cp1, &facts).len(), 1);
    }

    fn problems_of(pki: &ClusterPki, node: &Node, facts: &HostFacts) -> Vec<String> {
        problems(pki, node, facts, Path::new("/s"), Path::new("i"))
    }

    #[test]
    fn a_worker_is_judged_only_by_what_it_would_get() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let (ours, theirs) = (pki(a.path()), pki(b.path()));
        let inv = inventory();
        let (cp1, w1) = (inv.node("cp1").unwrap(), inv.node("w1").unwrap());
        // A worker never gets front-proxy-ca.crt, so one that is there is not replaced.
        let facts = holding(&[(
            "front-proxy-ca.crt",
            &file(&theirs, cp1, "front-proxy-ca.crt"),
        )]);
        assert!(problems_of(&ours, w1, &facts).is_empty());
        let facts = holding(&[("ca.crt", &file(&theirs, cp1, "ca.crt"))]);
        assert_eq!(problems_of(&ours, w1, &facts).len(), 1);
    }

    #[test]
    fn a_replaced_pki_file_is_backed_up_first_and_an_unchanged_one_is_not() {
        let a = tempfile::tempdir().unwrap();
        let ours = pki(a.path());
        let inv = inventory();
        let files = ours.files_for(inv.node("cp1").unwrap(), None);
        let key = files
            .iter()
            .find(|f| f.remote_path.ends_with("apiserver.key"))
            .unwrap();
        let ca = files
            .iter()
            .find(|f| f.remote_path.ends_with("ca.crt"))
            .unwrap();
        let mut facts = debian_host();
        facts.digests.insert(
            key.remote_path.clone(),
            Some(FileDigest {
                sha256: sha256_hex(b"an older key"),
                mode: 0o600,
            }),
        );
        facts.digests.insert(
            ca.remote_path.clone(),
            Some(FileDigest {
                sha256: sha256_hex(&ca.contents),
                mode: 0o600,
            }),
        );
        let changes = plan_node(&files, &facts, "20260101T000000Z");
        let backup_of = |path: &Path| {
            changes.iter().find_map(|c| match c {
                Change::WriteFile {
                    path: p, backup, ..
                } if p == path => Some(backup.clone()),
                _ => None,
            })
        };
        assert_eq!(
            backup_of(&key.remote_path),
            Some(Some(PathBuf::from(
                "/var/lib/khactl/backup/20260101T000000Z/etc/kubernetes/pki/apiserver.key"
            )))
        );
        // Same bytes, another mode: nothing of it is lost, no backup.
        assert_eq!(backup_of(&ca.remote_path), Some(None));
    }
}
