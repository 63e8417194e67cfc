//! `khactl reset` after `khactl up` on a real lab (the stand-in control plane, real etcd, real
//! khagents): each node's overlay upper dir (exactly what changed in the node) holds none of
//! khactl's files afterwards, `/etc/hosts` and `/etc/fstab` are byte for byte as before `up`,
//! the sysctls `up` changed are back, and a second reset changes nothing.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use crate::support::run::{cluster_state, json_of, khactl, sh, text, up};
use crate::support::{Lab, indexes, require_root};

const NODES: [&str; 4] = ["cp1", "cp2", "cp3", "w1"];
const SYSCTLS: [&str; 4] = [
    "net/ipv4/ip_forward",
    "net/ipv4/ip_nonlocal_bind",
    "net/bridge/bridge-nf-call-iptables",
    "net/bridge/bridge-nf-call-ip6tables",
];
const MANIFEST: &str = "/var/lib/khactl/manifest";
/// A swap line `up` comments out in w1's fstab (there is no swap to turn off in a lab node).
const SWAP_LINE: &str = "/swapfile none swap sw 0 0";

/// What a node looks like, for before/after: its changed paths, its shared files, its sysctls.
#[derive(Debug, PartialEq)]
struct Look {
    changed: BTreeSet<PathBuf>,
    hosts: Option<String>,
    fstab: Option<String>,
    sysctls: BTreeMap<&'static str, String>,
}

fn look(lab: &Lab, node: &str) -> Look {
    Look {
        changed: lab.changed_paths(node),
        hosts: lab.read_file(node, "/etc/hosts"),
        fstab: lab.read_file(node, "/etc/fstab"),
        sysctls: SYSCTLS
            .iter()
            .map(|k| (*k, sh(lab, node, &format!("cat /proc/sys/{k}"))))
            .collect(),
    }
}

/// The paths a manifest names (files, their backups, directories).
fn manifest_paths(text: &str) -> BTreeSet<PathBuf> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .flat_map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            match f.as_slice() {
                ["file", path, "existed", backup] if !backup.is_empty() => {
                    vec![PathBuf::from(path), PathBuf::from(backup)]
                }
                ["file", path, ..] | ["dir", path] => vec![PathBuf::from(path)],
                _ => vec![],
            }
        })
        .collect()
}

#[test]
fn reset_after_up_leaves_no_file_of_khactls_puts_sysctls_back_and_a_second_reset_does_nothing() {
    require_root();
    let lab = Lab::up("reset", indexes::RESET, 3, 1);
    let state = tempfile::tempdir().unwrap();
    sh(&lab, "w1", &format!("echo '{SWAP_LINE}' >> /etc/fstab"));
    let before: BTreeMap<&str, Look> = NODES.iter().map(|n| (*n, look(&lab, n))).collect();

    let out = up(&lab, state.path(), &[]);
    assert!(out.status.success(), "{}", text(&out));
    // What khactl wrote, as each node's manifest says, and what `up` visibly changed.
    let mut khactls: BTreeMap<&str, BTreeSet<PathBuf>> = BTreeMap::new();
    for node in NODES {
        let manifest = lab
            .read_file(node, MANIFEST)
            .unwrap_or_else(|| panic!("{node}: up keeps a manifest"));
        let mut paths = manifest_paths(&manifest);
        paths.insert(MANIFEST.into());
        assert!(
            paths.contains(&PathBuf::from("/etc/sysctl.d/99-zz-khactl.conf")),
            "{node}: {manifest}"
        );
        if node.starts_with("cp") {
            assert!(
                manifest.contains("service\tkhagent\n"),
                "{node}: {manifest}"
            );
            assert!(paths.contains(&PathBuf::from("/usr/local/bin/khagent")));
            assert!(paths.contains(&PathBuf::from("/etc/kubernetes/pki/ca.key")));
        }
        // Every file up wrote that is still there is in the manifest (kubeadm's own, the
        // stand-in's and the agent's state are not khactl's writes).
        for p in lab.changed_paths(node) {
            // kubeadm writes under /etc/kubernetes too (a worker's pki/ca.crt).
            let theirs = [
                "/etc/kubernetes/",
                "/var/lib/",
                "/var/log/",
                "/usr/lib/",
                "/etc/cni/",
            ]
            .iter()
            .any(|d| p.starts_with(d));
            // `systemctl enable`'s links are the init system's record of the `service` line.
            let enabled = p.to_string_lossy().contains(".wants/");
            if !theirs && !enabled && !before[node].changed.contains(&p) {
                assert!(
                    paths.contains(&p),
                    "{node}: {} is not in the manifest",
                    p.display()
                );
            }
        }
        khactls.insert(node, paths);
    }
    assert_ne!(
        look(&lab, "cp1").sysctls,
        before["cp1"].sysctls,
        "up changed sysctls"
    );
    assert!(
        lab.read_file("w1", "/etc/fstab")
            .unwrap()
            .contains(&format!("# {SWAP_LINE} # khactl")),
        "up commented the swap line out"
    );

    // Without a terminal and without --yes, it refuses before contacting anything.
    let refused = khactl(&lab, "reset", state.path(), &[]);
    assert_eq!(refused.status.code(), Some(2), "{}", text(&refused));
    assert!(
        lab.read_file("cp1", MANIFEST).is_some(),
        "nothing was changed"
    );

    let out = khactl(&lab, "reset", state.path(), &["--yes"]);
    assert!(out.status.success(), "{}", text(&out));
    for node in NODES {
        let after = look(&lab, node);
        let was = &before[node];
        let left: Vec<&PathBuf> = after
            .changed
            .iter()
            .filter(|p| khactls[node].contains(*p) && !was.changed.contains(*p))
            // /etc/hosts is copied up by any edit: its bytes are compared below.
            .filter(|p| p.as_path() != std::path::Path::new("/etc/hosts"))
            .collect();
        assert!(left.is_empty(), "{node}: khactl's files are left: {left:?}");
        assert!(
            !after
                .changed
                .iter()
                .any(|p| p.starts_with("/var/lib/khactl")
                    || p.starts_with("/var/lib/khagent")
                    || p.starts_with("/root/.kube")),
            "{node}: {:?}",
            after.changed
        );
        assert_eq!(after.hosts, was.hosts, "{node}: /etc/hosts as before up");
        assert_eq!(after.fstab, was.fstab, "{node}: /etc/fstab as before up");
        assert_eq!(after.sysctls, was.sysctls, "{node}: sysctls as before up");
        if node.starts_with("cp") {
            let active = lab.exec(node, &["systemctl", "is-active", "khagent"]);
            assert!(!active.status.success(), "{node}: khagent still runs");
            let vip = sh(&lab, node, "ip -o -4 addr show");
            assert!(
                !vip.contains(&format!("{}/", lab.vip())),
                "{node} holds the VIP"
            );
        }
    }
    assert!(
        cluster_state(state.path()).is_some_and(|s| s.join("pki/ca.key").exists()),
        "the state directory is kept without --purge-state"
    );

    // A second reset has nothing to do.
    let again = khactl(&lab, "reset", state.path(), &["--yes", "--output", "json"]);
    assert!(again.status.success(), "{}", text(&again));
    let doc = json_of(&again);
    assert_eq!(doc["result"]["totalChanges"], 0, "{doc:#}");
    let again = khactl(&lab, "reset", state.path(), &["--yes", "--purge-state"]);
    assert!(again.status.success(), "{}", text(&again));
    let err = String::from_utf8_lossy(&again.stderr);
    assert!(err.contains("reset: nothing to change"), "{}", text(&again));
    assert!(
        err.contains("removed the state directory"),
        "{}",
        text(&again)
    );
    assert_eq!(
        cluster_state(state.path()),
        None,
        "--purge-state removed it"
    );
}

/// A stand-in `ssh` that only records that it was called.
fn tripwire_ssh(dir: &std::path::Path) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let marker = dir.join("ssh-was-called");
    let ssh = dir.join("ssh");
    std::fs::write(
        &ssh,
        format!("#!/bin/sh\ntouch '{}'\nexit 255\n", marker.display()),
    )
    .unwrap();
    std::fs::set_permissions(&ssh, std::fs::Permissions::from_mode(0o755)).unwrap();
    marker
}

/// `status` and `reset` stop bad input with exit 2 before any connection: a broken
/// inventory, and a reset that would have to ask without a terminal to ask on.
#[test]
fn status_and_reset_stop_bad_input_before_any_connection() {
    let dir = tempfile::tempdir().unwrap();
    let marker = tripwire_ssh(dir.path());
    let key = dir.path().join("id_ed25519");
    std::fs::write(&key, "not used").unwrap();
    let good = dir.path().join("inventory.yaml");
    std::fs::write(
        &good,
        format!(
            "apiVersion: khactl.io/v1alpha1\nkind: Inventory\n\
             cluster: {{ name: t, kubernetesVersion: v1.31.2 }}\n\
             vip: {{ address: 10.0.0.100 }}\nssh: {{ identityFile: {} }}\n\
             nodes:\n  - {{ name: cp1, address: 10.0.0.11, role: control-plane }}\n",
            key.display()
        ),
    )
    .unwrap();
    let broken = crate::support::repo_root().join("tests/inventories/broken");
    let broken = std::fs::read_dir(broken)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "yaml"))
        .unwrap();
    let state = dir.path().join("state");
    let path = format!(
        "{}:{}",
        dir.path().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let run = |args: &[&str], inventory: &std::path::Path| {
        std::process::Command::new(crate::support::khactl_bin())
            .args(args)
            .arg("-i")
            .arg(inventory)
            .arg("--state-dir")
            .arg(&state)
            .env("PATH", &path)
            .env_remove("KHACTL_STATE_DIR")
            .output()
            .unwrap()
    };
    for args in [&["status"][..], &["reset", "--yes"][..]] {
        let out = run(args, &broken);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", text(&out));
    }
    let out = run(&["reset"], &good);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no terminal to ask on"),
        "{}",
        text(&out)
    );
    let json = run(&["reset", "--output", "json"], &good);
    assert_eq!(json_of(&json)["error"]["exitCode"], 2);
    assert!(!marker.exists(), "ssh was started");
    assert!(!state.exists(), "nothing was created");
}
