//! What `files_for` gives each node: a control plane its own certs and the shared ones,
//! a worker nothing.

use std::fs;
use std::path::Path;

use super::{PER_NODE, SHARED, file_names, inventory};
use crate::pki::{ensure, stale_worker_paths};

#[test]
fn a_control_plane_node_gets_its_own_certs_and_never_another_nodes() {
    let tmp = tempfile::tempdir().unwrap();
    let inv = inventory(2, 1);
    let (pki, _) = ensure(tmp.path(), &inv).unwrap();
    let cp1 = inv.node("cp-1").unwrap();
    let files = pki.files_for(cp1, None);
    let mut got: Vec<String> = files
        .iter()
        .map(|f| f.remote_path.display().to_string())
        .collect();
    got.sort();
    let bases: Vec<&str> = SHARED.iter().chain(&PER_NODE).copied().collect();
    let mut want = file_names("/etc/kubernetes/pki/", &bases);
    want.extend(
        ["admin.conf", "controller-manager.conf", "scheduler.conf"]
            .map(|f| format!("/etc/kubernetes/{f}")),
    );
    want.sort();
    assert_eq!(got, want);
    for f in &files {
        let is_secret = f
            .remote_path
            .extension()
            .is_some_and(|e| e == "key" || e == "conf");
        assert_eq!(
            (f.secret, f.mode),
            if is_secret {
                (true, 0o600)
            } else {
                (false, 0o644)
            },
            "{:?}",
            f.remote_path
        );
    }
    let own =
        |node: &str, base: &str| fs::read(tmp.path().join(format!("nodes/{node}/{base}"))).unwrap();
    let content = |p: &str| {
        &files
            .iter()
            .find(|f| f.remote_path == Path::new(p))
            .unwrap()
            .contents
    };
    assert_eq!(
        content("/etc/kubernetes/pki/apiserver.crt"),
        &own("cp-1", "apiserver.crt")
    );
    assert_eq!(
        content("/etc/kubernetes/pki/etcd/peer.key"),
        &own("cp-1", "etcd/peer.key")
    );
    for other in [
        "apiserver.crt",
        "apiserver.key",
        "etcd/server.key",
        "etcd/peer.key",
    ] {
        assert!(
            files.iter().all(|f| f.contents != own("cp-2", other)),
            "cp-2's {other} leaked to cp-1"
        );
    }
}

#[test]
fn a_worker_gets_nothing_from_the_pki() {
    let tmp = tempfile::tempdir().unwrap();
    let inv = inventory(1, 2);
    let (pki, _) = ensure(tmp.path(), &inv).unwrap();
    for worker in inv.workers() {
        assert_eq!(
            pki.files_for(worker, Some(&worker.name)),
            [],
            "{}: not even as the init node",
            worker.name
        );
    }
}

#[test]
fn the_stale_worker_paths_are_what_older_khactl_placed_there() {
    // Older khactl gave workers exactly the cluster CA certificate; kubeadm join's
    // preflight refuses a worker that has it.
    assert_eq!(
        stale_worker_paths(),
        [Path::new("/etc/kubernetes/pki/ca.crt")]
    );
    let tmp = tempfile::tempdir().unwrap();
    let inv = inventory(1, 1);
    let (pki, _) = ensure(tmp.path(), &inv).unwrap();
    let cp = pki.files_for(inv.node("cp-1").unwrap(), None);
    assert!(
        stale_worker_paths()
            .iter()
            .all(|p| cp.iter().any(|f| &f.remote_path == p)),
        "a stale worker path is one khactl does place on control planes"
    );
}
