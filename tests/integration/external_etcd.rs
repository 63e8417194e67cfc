//! The external etcd topology (the cfssl guide's): lab nodes w1..w3 are declared `role: etcd`,
//! so khactl runs etcd there as a systemd service with its own certificates, and the control
//! planes' API servers use it through `etcd.external`. From fresh nodes: a 3-member etcd that
//! the real `etcdctl` reaches over mTLS with khactl's certificates (and that refuses a client
//! without one), API servers ready through it, no etcd on any control plane, and `add-master`
//! that leaves the etcd membership exactly as it was.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use crate::kubeadm::{kubectl, members, voters};
use crate::support::run::{cluster_state, json_of, khactl_with, sh, text};
use crate::support::{Lab, indexes, require_root, wait_for};

const ETCD_NODES: [&str; 3] = ["w1", "w2", "w3"];

/// The lab's inventory with its workers as etcd nodes, without the nodes in `drop`.
fn inventory(lab: &Lab, dir: &Path, drop: &[&str]) -> PathBuf {
    let full = std::fs::read_to_string(lab.inventory_path()).unwrap();
    let text: String = full
        .lines()
        .filter(|l| !drop.iter().any(|n| l.contains(&format!("name: {n},"))))
        .map(|l| format!("{}\n", l.replace("role: worker", "role: etcd")))
        .collect();
    assert_eq!(
        full.lines().count() - text.lines().count(),
        drop.len(),
        "the lab inventory lists each node on one line:\n{full}"
    );
    let path = dir.join(format!("external-etcd-without-{}.yaml", drop.join("-")));
    std::fs::write(&path, text).unwrap();
    path
}

fn run(lab: &Lab, verb: &[&str], inventory: &Path, state: &Path) -> Output {
    lab.assert_up();
    khactl_with(lab, verb, inventory, state, &[])
}

/// `etcdctl endpoint health` of every etcd node from control plane `cp`, with the API server's
/// own client certificate (apiserver-etcd-client) khactl placed there.
fn health_from_control_plane(lab: &Lab, cp: &str, with_cert: bool) -> Output {
    let endpoints: Vec<String> = ETCD_NODES
        .iter()
        .map(|n| format!("https://{}:2379", lab.node_address(n)))
        .collect();
    let mut argv = vec![
        "etcdctl".to_owned(),
        "--endpoints".to_owned(),
        endpoints.join(","),
        "--cacert".to_owned(),
        "/etc/kubernetes/pki/etcd/ca.crt".to_owned(),
        "--dial-timeout".to_owned(),
        "3s".to_owned(),
        "--command-timeout".to_owned(),
        "3s".to_owned(),
    ];
    if with_cert {
        argv.extend([
            "--cert".to_owned(),
            "/etc/kubernetes/pki/apiserver-etcd-client.crt".to_owned(),
            "--key".to_owned(),
            "/etc/kubernetes/pki/apiserver-etcd-client.key".to_owned(),
        ]);
    }
    argv.extend(["endpoint".to_owned(), "health".to_owned()]);
    let mut env = vec!["env".to_owned(), "ETCDCTL_API=3".to_owned()];
    env.extend(argv);
    lab.exec(cp, &env)
}

/// Every control plane's API server lists exactly `members` (their client URLs, in inventory
/// order) in its manifest's `--etcd-servers` and answers ready, and `kubeadm-config`'s
/// ClusterConfiguration (what a later control-plane join reads) lists the same.
fn assert_api_servers_use(lab: &Lab, state: &Path, control_planes: &[&str], members: &[&str]) {
    let urls: Vec<String> = members
        .iter()
        .map(|n| format!("https://{}:2379", lab.node_address(n)))
        .collect();
    for cp in control_planes {
        let manifest = lab
            .read_file(cp, "/etc/kubernetes/manifests/kube-apiserver.yaml")
            .unwrap();
        let servers: Vec<&str> = manifest
            .lines()
            .filter_map(|l| l.trim().strip_prefix("- --etcd-servers="))
            .collect();
        assert_eq!(servers, [urls.join(",")], "{cp}: {manifest}");
        assert_eq!(readyz(lab, cp), "ok", "{cp}");
    }
    let out = kubectl(
        state,
        &[
            "get",
            "--raw",
            "/api/v1/namespaces/kube-system/configmaps/kubeadm-config",
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    let config_map = json_of(&out);
    let cluster = config_map["data"]["ClusterConfiguration"].as_str().unwrap();
    let cluster: serde_yaml_ng::Value = serde_yaml_ng::from_str(cluster).unwrap();
    let endpoints: Vec<&str> = cluster["etcd"]["external"]["endpoints"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|e| e.as_str().unwrap())
        .collect();
    assert_eq!(endpoints, urls, "kubeadm-config: {cluster:?}");
}

/// The `kubernetes.io/config.hash` of `cp`'s kube-apiserver mirror pod: which manifest its
/// kubelet runs; `None` while the API does not answer.
fn mirror_pod_hash(state: &Path, cp: &str) -> Option<String> {
    let path = format!("/api/v1/namespaces/kube-system/pods/kube-apiserver-{cp}");
    let out = kubectl(state, &["get", "--raw", &path]);
    let pod: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    pod["metadata"]["annotations"]["kubernetes.io/config.hash"]
        .as_str()
        .map(str::to_owned)
}

/// `/readyz` of `cp`'s own API server, read on the node, TLS verified against the cluster CA.
fn readyz(lab: &Lab, cp: &str) -> String {
    let address = lab.node_address(cp);
    sh(
        lab,
        cp,
        &format!(
            "curl -sS --max-time 5 --cacert /etc/kubernetes/pki/ca.crt \
             https://{address}:6443/readyz"
        ),
    )
}

#[test]
fn up_builds_an_external_etcd_the_api_servers_use_and_add_master_leaves_its_members_alone() {
    require_root();
    let lab = Lab::up("extetcd", indexes::EXTERNAL_ETCD, 3, 3);
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let two = inventory(&lab, dir.path(), &["cp3"]);
    let out = run(&lab, &["up"], &two, &state);
    assert!(out.status.success(), "{}", text(&out));

    // Three started voters, named after the etcd nodes, on every etcd node's view.
    for node in ETCD_NODES {
        assert_eq!(voters(&lab, node), ETCD_NODES, "as {node} sees it");
        assert_eq!(
            sh(
                &lab,
                node,
                "systemctl is-active etcd; systemctl is-enabled etcd"
            ),
            "active\nenabled"
        );
    }
    let before = members(&lab, "w1");
    // From a control plane: the API server's client certificate is accepted by every
    // member; without a client certificate etcd refuses.
    let ok = health_from_control_plane(&lab, "cp1", true);
    assert!(ok.status.success(), "{}", text(&ok));
    assert_eq!(
        String::from_utf8_lossy(&ok.stderr)
            .matches("is healthy")
            .count()
            + String::from_utf8_lossy(&ok.stdout)
                .matches("is healthy")
                .count(),
        3,
        "{}",
        text(&ok)
    );
    let refused = health_from_control_plane(&lab, "cp1", false);
    assert!(!refused.status.success(), "{}", text(&refused));

    // The API servers are ready, through etcd.external; no control plane runs etcd or holds
    // an etcd member's certificate.
    for cp in ["cp1", "cp2"] {
        assert_eq!(readyz(&lab, cp), "ok", "{cp}");
        let manifest = lab
            .read_file(cp, "/etc/kubernetes/manifests/kube-apiserver.yaml")
            .unwrap();
        let servers: Vec<String> = ETCD_NODES
            .iter()
            .map(|n| format!("https://{}:2379", lab.node_address(n)))
            .collect();
        assert!(
            manifest.contains(&format!("--etcd-servers={}", servers.join(","))),
            "{cp}: {manifest}"
        );
        for absent in [
            "/etc/kubernetes/manifests/etcd.yaml",
            "/etc/kubernetes/pki/etcd/server.crt",
            "/etc/kubernetes/pki/etcd/peer.key",
            "/etc/kubernetes/pki/etcd/ca.key",
        ] {
            assert!(lab.read_file(cp, absent).is_none(), "{cp} has {absent}");
        }
    }
    // The etcd nodes never registered with Kubernetes.
    let nodes = kubectl(&state, &["get", "nodes", "-o", "name"]);
    assert!(nodes.status.success(), "{}", text(&nodes));
    let nodes = String::from_utf8_lossy(&nodes.stdout).into_owned();
    let mut names: Vec<&str> = nodes.lines().collect();
    names.sort_unstable();
    assert_eq!(names, ["node/cp1", "node/cp2"]);

    // add-master: the new control plane joins, its API server is ready, and etcd's members
    // are exactly the ones before (same IDs, same URLs).
    let three = inventory(&lab, dir.path(), &[]);
    let out = run(&lab, &["add-master", "cp3"], &three, &state);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(readyz(&lab, "cp3"), "ok");
    assert_eq!(members(&lab, "w2"), before);
    assert!(
        lab.read_file("cp3", "/etc/kubernetes/manifests/etcd.yaml")
            .is_none()
    );

    // `status` shows the etcd nodes: each as a node of role etcd, each a healthy voter, and
    // the cluster healthy with no control plane expected in etcd.
    let status = run(&lab, &["status", "--output", "json"], &three, &state);
    assert_eq!(status.status.code(), Some(0), "{}", text(&status));
    let doc = json_of(&status);
    let result = &doc["result"];
    let roles: Vec<(&str, &str, bool)> = result["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| {
            (
                n["name"].as_str().unwrap(),
                n["role"].as_str().unwrap(),
                n["etcdService"]["active"] == true,
            )
        })
        .filter(|(_, role, _)| *role == "etcd")
        .collect();
    assert_eq!(
        roles,
        [
            ("w1", "etcd", true),
            ("w2", "etcd", true),
            ("w3", "etcd", true)
        ]
    );
    let etcd_members: Vec<(&str, bool)> = result["etcd"]["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["name"].as_str().unwrap(), m["healthy"] == true))
        .collect();
    let mut etcd_members = etcd_members;
    etcd_members.sort_unstable();
    assert_eq!(etcd_members, [("w1", true), ("w2", true), ("w3", true)]);

    // A second `up` with every node changes nothing.
    let again = run(&lab, &["up"], &three, &state);
    assert!(again.status.success(), "{}", text(&again));
    let err = String::from_utf8_lossy(&again.stderr);
    assert!(err.contains("nothing to change"), "{}", text(&again));
    assert!(cluster_state(&state).is_some());

    // `reset` takes the etcd nodes back too: the service stopped, its files and the
    // member's data gone, so a later `up` founds a new etcd.
    let reset = khactl_with(&lab, &["reset"], &three, &state, &["--yes"]);
    assert!(reset.status.success(), "{}", text(&reset));
    for node in ETCD_NODES {
        assert_eq!(
            sh(&lab, node, "systemctl is-active etcd || true"),
            "inactive",
            "{node}"
        );
        for gone in [
            "/etc/systemd/system/etcd.service",
            "/etc/etcd/etcd.conf.yml",
            "/etc/kubernetes/pki/etcd/server.key",
        ] {
            assert!(lab.read_file(node, gone).is_none(), "{node} keeps {gone}");
        }
        assert_eq!(
            sh(
                &lab,
                node,
                "test -e /var/lib/etcd && echo there || echo gone"
            ),
            "gone",
            "{node}"
        );
    }
}

/// `add-etcd` grows the external etcd by a learner that is promoted, refusing an even size
/// without `--yes`; `remove-node` of an etcd node removes its member before its etcd stops.
/// After each, every API server (restarted one at a time) and `kubeadm-config` list exactly
/// the members, so replacing the founding members one by one never leaves the API on
/// removed endpoints.
#[test]
fn add_etcd_promotes_a_learner_and_remove_node_takes_the_member_out_before_etcd_stops() {
    require_root();
    let lab = Lab::up("extetcdm", indexes::EXTERNAL_ETCD_MEMBERSHIP, 2, 4);
    let cps = ["cp1", "cp2"];
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let three = inventory(&lab, dir.path(), &["w4"]);
    let out = run(&lab, &["up"], &three, &state);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(voters(&lab, "w1"), ETCD_NODES);

    let four = inventory(&lab, dir.path(), &[]);
    // `up` founds an etcd cluster, it does not grow one: refused in preflight, w4 untouched.
    let grown = run(&lab, &["up"], &four, &state);
    assert!(!grown.status.success(), "{}", text(&grown));
    assert!(
        String::from_utf8_lossy(&grown.stderr).contains("khactl add-etcd w4"),
        "{}",
        text(&grown)
    );
    assert!(lab.read_file("w4", "/etc/etcd/etcd.conf.yml").is_none());

    let refused = run(&lab, &["add-etcd", "w4"], &four, &state);
    assert!(!refused.status.success(), "{}", text(&refused));
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("etcd would have 4 members"),
        "{}",
        text(&refused)
    );
    assert_eq!(members(&lab, "w1").len(), 3, "a refusal changes nothing");

    // A dry run shows the API servers' and kubeadm-config's new endpoints, and changes none.
    let planned = khactl_with(
        &lab,
        &["add-etcd", "w4"],
        &four,
        &state,
        &["--yes", "--dry-run"],
    );
    assert!(planned.status.success(), "{}", text(&planned));
    let w4_url = format!("https://{}:2379", lab.node_address("w4"));
    let shown = text(&planned);
    assert!(
        shown.contains("kube-apiserver.yaml") && shown.contains(&w4_url),
        "{shown}"
    );
    assert!(shown.contains("kubeadm-config"), "{shown}");
    assert_api_servers_use(&lab, &state, &cps, &ETCD_NODES);

    let added = khactl_with(&lab, &["add-etcd", "w4"], &four, &state, &["--yes"]);
    assert!(added.status.success(), "{}", text(&added));
    assert_eq!(voters(&lab, "w2"), ["w1", "w2", "w3", "w4"]);
    assert!(
        sh(&lab, "w4", "cat /etc/etcd/etcd.conf.yml")
            .contains("initial-cluster-state: \"existing\""),
        "w4 joined the running cluster"
    );
    assert_api_servers_use(&lab, &state, &cps, &["w1", "w2", "w3", "w4"]);
    // The next `up` keeps every member as it is: no config rewritten, no restart.
    let again = run(&lab, &["up"], &four, &state);
    assert!(again.status.success(), "{}", text(&again));
    let err = String::from_utf8_lossy(&again.stderr);
    assert!(err.contains("nothing to change"), "{}", text(&again));

    // Out again: the member first (from another etcd node), then its etcd stopped.
    let removed = khactl_with(&lab, &["remove-node", "w4"], &four, &state, &["--yes"]);
    assert!(removed.status.success(), "{}", text(&removed));
    assert_eq!(voters(&lab, "w1"), ETCD_NODES);
    assert_api_servers_use(&lab, &state, &cps, &ETCD_NODES);
    assert_eq!(
        sh(&lab, "w4", "systemctl is-active etcd || true"),
        "inactive"
    );
    assert_eq!(
        sh(
            &lab,
            "w4",
            "test -e /var/lib/etcd && echo there || echo gone"
        ),
        "gone"
    );
    // Its keys went with it: no credential of the cluster's etcd stays on the machine.
    assert_eq!(
        sh(
            &lab,
            "w4",
            "for f in ca.crt server.crt server.key peer.crt peer.key healthcheck-client.crt \
             healthcheck-client.key; do test -e /etc/kubernetes/pki/etcd/$f && echo $f; done; true"
        ),
        ""
    );

    // A founding member can leave too; the API server keeps working through the others.
    let removed = khactl_with(&lab, &["remove-node", "w1"], &three, &state, &["--yes"]);
    assert!(removed.status.success(), "{}", text(&removed));
    assert_eq!(voters(&lab, "w2"), ["w2", "w3"]);
    assert_api_servers_use(&lab, &state, &cps, &["w2", "w3"]);
    // With the removed nodes out of the inventory, `up` finds the API servers and
    // kubeadm-config as they should be: nothing to change.
    let two = inventory(&lab, dir.path(), &["w1", "w4"]);
    let again = run(&lab, &["up"], &two, &state);
    assert!(again.status.success(), "{}", text(&again));
    let err = String::from_utf8_lossy(&again.stderr);
    assert!(err.contains("nothing to change"), "{}", text(&again));

    // A manifest that drifted (a removed member listed again by hand) is brought back by
    // `up`, its API server waited for. The drifted one runs first (its mirror pod's hash
    // changed, the API ready), so `up` starts from a settled node.
    let stale: Vec<String> = ["w1", "w2", "w3"]
        .iter()
        .map(|n| format!("https://{}:2379", lab.node_address(n)))
        .collect();
    let before = mirror_pod_hash(&state, "cp2");
    assert!(before.is_some());
    sh(
        &lab,
        "cp2",
        &format!(
            "sed -i 's#--etcd-servers=.*#--etcd-servers={}#' \
             /etc/kubernetes/manifests/kube-apiserver.yaml",
            stale.join(",")
        ),
    );
    wait_for(
        "cp2's kubelet to run the drifted manifest",
        Duration::from_secs(60),
        || {
            let now = mirror_pod_hash(&state, "cp2");
            now.is_some() && now != before && readyz(&lab, "cp2") == "ok"
        },
    );
    let converged = run(&lab, &["up"], &two, &state);
    assert!(converged.status.success(), "{}", text(&converged));
    assert_api_servers_use(&lab, &state, &cps, &["w2", "w3"]);

    assert_eq!(readyz(&lab, "cp1"), "ok");

    // Left in the inventory, w1 is no member of the running etcd, though the others' configs
    // still list it as a founder: `up` refuses to start an empty member there, by the live
    // member list, and says how to add it back.
    let refused = run(&lab, &["up"], &three, &state);
    assert!(!refused.status.success(), "{}", text(&refused));
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("khactl add-etcd w1"),
        "{}",
        text(&refused)
    );
    assert!(lab.read_file("w1", "/etc/etcd/etcd.conf.yml").is_none());
    assert_eq!(voters(&lab, "w2"), ["w2", "w3"]);
}
