//! `khactl up` builds a Kubernetes control plane: kubeadm init, serial control-plane joins,
//! worker joins. The nodes carry the lab's stand-in control plane (`tests/standin/`: kubeadm,
//! kubelet, API server and controller-manager stand-ins; **real etcd**, real TLS, real
//! discovery), which reproduces the real kubeadm's contract. The results are read with real
//! clients: `etcdctl` with khactl's healthcheck certificate, `curl` through the VIP with TLS
//! verified against khactl's CA, and Debian's own `kubectl` with the `admin.conf` khactl keeps.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Output, Stdio};

use crate::support::run::{cluster_state, sh, text, token_shaped, up};
use crate::support::{Lab, indexes, khactl_bin, require_root};

const CONTROL_PLANES: [&str; 3] = ["cp1", "cp2", "cp3"];
const ALL: [&str; 5] = ["cp1", "cp2", "cp3", "w1", "w2"];

/// Debian's kubectl (package kubernetes-client, 1.20), unpacked by `tests/lab/install-deps.sh`.
const DEBIAN_KUBECTL: &str = "/opt/khalab/kubernetes-client/usr/bin/kubectl";

/// One etcd member as `etcdctl member list` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Member {
    pub(crate) id: String,
    pub(crate) started: bool,
    pub(crate) name: String,
    pub(crate) learner: bool,
}

/// The etcd members, read on `from` by the real `etcdctl` with khactl's healthcheck client
/// certificate.
pub(crate) fn members(lab: &Lab, from: &str) -> Vec<Member> {
    let out = sh(
        lab,
        from,
        "ETCDCTL_API=3 etcdctl --endpoints https://127.0.0.1:2379 \
         --cacert /etc/kubernetes/pki/etcd/ca.crt \
         --cert /etc/kubernetes/pki/etcd/healthcheck-client.crt \
         --key /etc/kubernetes/pki/etcd/healthcheck-client.key member list",
    );
    out.lines()
        .map(|l| {
            let f: Vec<&str> = l.split(", ").collect();
            Member {
                id: f[0].to_owned(),
                started: f[1] == "started",
                name: f[2].to_owned(),
                learner: f.get(5) == Some(&"true"),
            }
        })
        .collect()
}

pub(crate) fn voters(lab: &Lab, from: &str) -> Vec<String> {
    let mut names: Vec<String> = members(lab, from)
        .into_iter()
        .filter(|m| m.started && !m.learner)
        .map(|m| m.name)
        .collect();
    names.sort();
    names
}

/// Debian's kubectl with the workstation admin.conf khactl kept in its state directory.
pub(crate) fn kubectl(state: &Path, args: &[&str]) -> Output {
    let root = cluster_state(state).expect("khactl's state dir");
    Command::new(DEBIAN_KUBECTL)
        .arg("--kubeconfig")
        .arg(root.join("admin.conf"))
        .args(args)
        .output()
        .expect("run Debian's kubectl (tests/lab/install-deps.sh unpacks it)")
}

/// The names of the Node objects, sorted, as Debian's kubectl reads them with khactl's
/// admin.conf.
pub(crate) fn registered_nodes(state: &Path) -> Vec<String> {
    let nodes = kubectl(state, &["get", "--raw", "/api/v1/nodes"]);
    assert!(nodes.status.success(), "{}", text(&nodes));
    let list: serde_json::Value = serde_json::from_slice(&nodes.stdout).unwrap();
    let mut names: Vec<String> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["metadata"]["name"].as_str().unwrap().to_owned())
        .collect();
    names.sort_unstable();
    names
}

/// `/readyz` through the VIP from this machine, for `host` resolved to the VIP, with TLS
/// verified against khactl's CA.
fn readyz_through_vip(lab: &Lab, state: &Path, host: &str) -> Output {
    lab.assert_up();
    let root = cluster_state(state).expect("khactl's state dir");
    let vip = lab.vip().to_string();
    Command::new("curl")
        .args(["-sS", "--max-time", "5", "--cacert"])
        .arg(root.join("pki/ca.crt"))
        .arg("--resolve")
        .arg(format!("{host}:8443:{vip}"))
        .arg(format!("https://{host}:8443/readyz"))
        .output()
        .unwrap()
}

fn dns_name(lab: &Lab) -> String {
    format!("k8s-api.{}.local", lab.name())
}

/// Every run log khactl wrote for this cluster.
fn run_logs(state: &Path) -> String {
    let logs = cluster_state(state).unwrap().join("logs");
    let mut all = String::new();
    for e in std::fs::read_dir(logs).unwrap().flatten() {
        all.push_str(&std::fs::read_to_string(e.path()).unwrap_or_default());
    }
    all
}

/// The stand-in's record of every kubeadm, kubelet, … argv on a node.
fn argv_log(lab: &Lab, node: &str) -> String {
    lab.read_file(node, "/var/log/khalab-standin/argv.log")
        .unwrap_or_default()
}

/// The bootstrap tokens the cluster holds (`id.secret`), read through the API.
fn cluster_tokens(state: &Path) -> Vec<String> {
    let out = kubectl(
        state,
        &["get", "--raw", "/api/v1/namespaces/kube-system/secrets"],
    );
    assert!(out.status.success(), "{}", text(&out));
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let b64 = |v: &serde_json::Value| {
        use std::io::Write;
        let mut child = Command::new("base64")
            .arg("-d")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(v.as_str().unwrap_or_default().as_bytes())
            .unwrap();
        String::from_utf8(child.wait_with_output().unwrap().stdout).unwrap()
    };
    list["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["type"] == "bootstrap.kubernetes.io/token")
        .map(|s| {
            format!(
                "{}.{}",
                b64(&s["data"]["token-id"]),
                b64(&s["data"]["token-secret"])
            )
        })
        .collect()
}

#[test]
fn up_builds_a_cluster_that_answers_through_the_vip_and_a_second_up_changes_nothing() {
    require_root();
    let lab = Lab::up("kubeadm", indexes::KUBEADM_CLUSTER, 3, 2);
    let state = tempfile::tempdir().unwrap();
    let out = up(&lab, state.path(), &[]);
    assert!(out.status.success(), "{}", text(&out));

    // /readyz through the VIP and khagent, the certificate verified against khactl's CA for
    // the VIP and for the DNS name.
    for host in [lab.vip().to_string(), dns_name(&lab)] {
        let ready = readyz_through_vip(&lab, state.path(), &host);
        assert_eq!(
            String::from_utf8_lossy(&ready.stdout),
            "ok",
            "{host}: {}",
            text(&ready)
        );
    }
    // etcd: exactly three started voters, read by etcdctl with our healthcheck client cert.
    assert_eq!(voters(&lab, "cp2"), CONTROL_PLANES);
    assert_eq!(members(&lab, "cp1").len(), 3);
    // Debian's kubectl, with the admin.conf khactl kept, unchanged.
    let readyz = kubectl(state.path(), &["get", "--raw", "/readyz"]);
    assert_eq!(
        String::from_utf8_lossy(&readyz.stdout),
        "ok",
        "{}",
        text(&readyz)
    );
    assert_eq!(registered_nodes(state.path()), ALL);

    // The join token: never in argv on any node, never in a run log.
    let tokens = cluster_tokens(state.path());
    assert!(!tokens.is_empty(), "the cluster holds khactl's token");
    let logs = run_logs(state.path());
    for token in &tokens {
        let secret = token.split('.').nth(1).unwrap();
        assert!(!logs.contains(secret), "the token is in the run log");
        for node in ALL {
            let argv = argv_log(&lab, node);
            assert!(argv.contains("\"kubeadm\""), "{node} ran kubeadm: {argv}");
            assert!(
                !argv.contains(secret),
                "{node}: the token is in argv: {argv}"
            );
        }
    }
    assert!(token_shaped(&logs).is_empty(), "{:?}", token_shaped(&logs));

    // A second run changes nothing and joins nothing.
    let again = up(&lab, state.path(), &[]);
    assert!(again.status.success(), "{}", text(&again));
    let err = String::from_utf8_lossy(&again.stderr);
    assert!(err.contains("nothing to change"), "{}", text(&again));
    assert!(err.contains("the cluster exists"), "{}", text(&again));
}

/// Starts `khactl up -v` and SIGKILLs it once a line matching `at` appears on its stderr.
fn up_killed_at(lab: &Lab, state: &Path, at: &str) {
    lab.assert_up();
    let mut child = Command::new(khactl_bin())
        .args(["up", "-v", "-i"])
        .arg(lab.inventory_path())
        .arg("--state-dir")
        .arg(state)
        .env_remove("KHACTL_STATE_DIR")
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut seen = Vec::new();
    let mut killed = false;
    for line in lines.map_while(Result::ok) {
        let hit = line.contains(at);
        seen.push(line);
        if hit {
            child.kill().unwrap();
            killed = true;
            break;
        }
    }
    child.wait().unwrap();
    assert!(killed, "never saw {at:?}:\n{}", seen.join("\n"));
}

#[test]
fn khactl_killed_right_after_the_first_control_plane_join_is_finished_by_the_next_up() {
    require_root();
    let lab = Lab::up("kubeadm-kill", indexes::KUBEADM_KILLED, 3, 1);
    let state = tempfile::tempdir().unwrap();
    // cp2 has joined (and is a voter) when khactl starts cp3's join: kill it there.
    up_killed_at(&lab, state.path(), "cp3: kubeadm join as a control plane");
    let out = up(&lab, state.path(), &[]);
    assert!(out.status.success(), "{}", text(&out));
    let all = members(&lab, "cp1");
    assert_eq!(all.len(), 3, "no duplicate or stale member: {all:?}");
    assert_eq!(voters(&lab, "cp1"), CONTROL_PLANES, "{all:?}");
}

#[test]
fn a_control_plane_wiped_out_of_band_rejoins_after_its_stale_member_is_removed() {
    require_root();
    let lab = Lab::up("kubeadm-wipe", indexes::KUBEADM_WIPED, 3, 0);
    let state = tempfile::tempdir().unwrap();
    let out = up(&lab, state.path(), &[]);
    assert!(out.status.success(), "{}", text(&out));
    let before = members(&lab, "cp1");
    let old_cp3 = before.iter().find(|m| m.name == "cp3").unwrap().id.clone();

    // A reinstalled machine: no kubelet, no /etc/kubernetes, no etcd data; its member stays.
    sh(
        &lab,
        "cp3",
        "systemctl stop kubelet && rm -rf /etc/kubernetes /var/lib/etcd /var/lib/kubelet",
    );
    let stale = members(&lab, "cp1");
    assert!(stale.iter().any(|m| m.id == old_cp3), "{stale:?}");

    let out = up(&lab, state.path(), &[]);
    assert!(out.status.success(), "{}", text(&out));
    let after = members(&lab, "cp1");
    assert_eq!(after.len(), 3, "{after:?}");
    assert!(
        after.iter().all(|m| m.id != old_cp3),
        "the stale member is gone: {after:?}"
    );
    assert_eq!(voters(&lab, "cp1"), CONTROL_PLANES);
    // It was removed before cp3 joined, which kubeadm's check-etcd would otherwise refuse.
    let logs = run_logs(state.path());
    let removed = logs.find("remove etcd member cp3").expect("removed");
    let joined = logs
        .rfind("cp3: kubeadm join as a control plane")
        .expect("joined");
    assert!(removed < joined, "removed first");
}

#[test]
fn a_failure_injected_into_the_second_join_names_the_node_resets_it_and_the_next_up_completes() {
    require_root();
    let lab = Lab::up("kubeadm-fail", indexes::KUBEADM_FAILED_JOIN, 3, 1);
    let state = tempfile::tempdir().unwrap();
    // The stand-in fails cp3's join once, as kubeadm does when the learner never catches up:
    // the learner is left in etcd.
    sh(
        &lab,
        "cp3",
        "mkdir -p /etc/khalab-standin && echo 'join:etcd-promote-timeout once' > /etc/khalab-standin/fail",
    );
    let out = up(&lab, state.path(), &[]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("Join control planes: failed on cp3"),
        "{}",
        text(&out)
    );
    assert!(err.contains("was reset"), "{}", text(&out));
    // The cluster is as it was: cp3 reset, its learner removed, the worker not joined yet.
    assert!(
        lab.read_file("cp3", "/etc/kubernetes/manifests/etcd.yaml")
            .is_none()
    );
    assert_eq!(voters(&lab, "cp1"), ["cp1", "cp2"]);
    assert_eq!(members(&lab, "cp1").len(), 2);

    let out = up(&lab, state.path(), &[]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(voters(&lab, "cp1"), CONTROL_PLANES);
}
