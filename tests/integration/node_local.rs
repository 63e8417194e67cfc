//! `loadBalancer.mode: node-local` (issue #13, topology 1): khagent on every node, workers
//! too, balancing `127.0.0.1:6444` to every API server, with no VIP and no VRRP. Each node's
//! `/etc/hosts` maps the endpoint's name to 127.0.0.1, so its kubelet reaches the API through
//! its own agent. The control plane is the lab's stand-in (`tests/standin/`, real etcd and
//! TLS); the Nodes are read with Debian's kubectl on a control plane.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant, SystemTime};

use crate::support::run::{agent_backends, agent_page, agent_pid, khactl_with, text};
use crate::support::{Lab, indexes, require_root, wait_for};

const ALL: [&str; 5] = ["cp1", "cp2", "cp3", "w1", "w2"];
const PORT: u16 = 6444;
/// Debian's kubectl (package kubernetes-client), unpacked by `tests/lab/install-deps.sh`.
const DEBIAN_KUBECTL: &str = "/opt/khalab/kubernetes-client/usr/bin/kubectl";

fn dns_name(lab: &Lab) -> String {
    format!("k8s-api.{}.local", lab.name())
}

/// The lab's inventory with its `vip` line replaced by node-local balancers.
fn node_local_inventory(lab: &Lab, dir: &Path) -> PathBuf {
    node_local_inventory_without(lab, dir, &[])
}

/// [`node_local_inventory`] without the nodes named in `left_out`.
fn node_local_inventory_without(lab: &Lab, dir: &Path, left_out: &[&str]) -> PathBuf {
    let lab_inventory = std::fs::read_to_string(lab.inventory_path()).unwrap();
    let replaced: String = lab_inventory
        .lines()
        .filter(|l| !left_out.iter().any(|n| l.contains(&format!("name: {n},"))))
        .map(|l| {
            if l.starts_with("vip:") {
                format!(
                    "loadBalancer: {{ mode: node-local, port: {PORT}, dnsName: {} }}\n",
                    dns_name(lab)
                )
            } else {
                format!("{l}\n")
            }
        })
        .collect();
    assert!(replaced.contains("node-local") && !replaced.contains("vip:"));
    let path = dir.join(format!("node-local-{}.yaml", left_out.len()));
    std::fs::write(&path, replaced).unwrap();
    path
}

fn up(lab: &Lab, inventory: &Path, state: &Path) -> Output {
    khactl_with(lab, &["up"], inventory, state, &[])
}

/// Every Node's Ready condition and Lease renewal, read on `from` with Debian's kubectl and
/// the node's own admin.conf (which dials the endpoint's name: `from`'s own agent).
fn nodes_seen(lab: &Lab, from: &str) -> Vec<(String, String, String)> {
    let kubectl = |path: &str| {
        let out = lab.exec(
            from,
            &[
                DEBIAN_KUBECTL,
                "--kubeconfig",
                "/etc/kubernetes/admin.conf",
                "--request-timeout",
                "5s",
                "get",
                "--raw",
                path,
            ],
        );
        assert!(
            out.status.success(),
            "{from}: kubectl {path}: {}",
            text(&out)
        );
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
    };
    let nodes = kubectl("/api/v1/nodes");
    let leases = kubectl("/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases");
    let mut seen: Vec<(String, String, String)> = nodes["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| {
            let name = n["metadata"]["name"].as_str().unwrap().to_owned();
            let ready = n["status"]["conditions"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|c| c["type"] == "Ready")
                .map_or("missing", |c| c["status"].as_str().unwrap_or("?"))
                .to_owned();
            let renewed = leases["items"]
                .as_array()
                .unwrap()
                .iter()
                .find(|l| l["metadata"]["name"] == name.as_str())
                .map_or(String::new(), |l| {
                    l["spec"]["renewTime"].as_str().unwrap_or("").to_owned()
                });
            (name, ready, renewed)
        })
        .collect();
    seen.sort();
    seen
}

/// A Lease's `renewTime` (`2026-12-05T05:30:01.123456Z`) as a point in time.
fn parse_micro_time(t: &str) -> Option<SystemTime> {
    let out = Command::new("date")
        .args(["-u", "-d", t, "+%s.%N"])
        .output()
        .ok()?;
    let secs: f64 = String::from_utf8_lossy(&out.stdout).trim().parse().ok()?;
    Some(SystemTime::UNIX_EPOCH + Duration::from_secs_f64(secs))
}

#[test]
fn node_local_balancers_keep_every_node_ready_without_a_vip_when_an_api_server_stops() {
    require_root();
    let lab = Lab::up("nodelocal", indexes::NODE_LOCAL, 3, 2);
    let dir = tempfile::tempdir().unwrap();
    let inventory = node_local_inventory(&lab, dir.path());
    let state = dir.path().join("state");
    let started = Instant::now();
    let out = up(&lab, &inventory, &state);
    assert!(out.status.success(), "{}", text(&out));
    eprintln!("node-local up: {:.1}s", started.elapsed().as_secs_f64());

    // No VIP anywhere, and every node, workers too, has its agent on 127.0.0.1 with every
    // API server as a backend, none of them VRRP.
    let vip = format!("inet {}/", lab.vip());
    let name = dns_name(&lab);
    for node in ALL {
        let addrs = lab.exec_ok(node, &["ip", "-o", "-4", "addr", "show"]);
        assert!(!addrs.contains(&vip), "{node} holds no VIP: {addrs}");
        let hosts = lab.read_file(node, "/etc/hosts").unwrap();
        assert!(
            hosts.lines().any(|l| l
                .split_whitespace()
                .take(2)
                .eq(["127.0.0.1", name.as_str()])),
            "{node}: /etc/hosts maps {name} to 127.0.0.1: {hosts}"
        );
        let status = agent_page(&lab, node, "/status");
        assert_eq!(
            status["listener"]["address"],
            format!("127.0.0.1:{PORT}"),
            "{node}"
        );
        assert!(status["vrrp"].is_null(), "{node}: no VRRP: {status}");
        assert_eq!(agent_backends(&lab, node), ["cp1", "cp2", "cp3"], "{node}");
    }
    // Each worker's kubelet dials the name, and its agent carried the connections.
    for worker in ["w1", "w2"] {
        let kubelet_conf = lab
            .read_file(worker, "/etc/kubernetes/kubelet.conf")
            .unwrap();
        assert!(
            kubelet_conf.contains(&format!("server: https://{name}:{PORT}")),
            "{worker}: {kubelet_conf}"
        );
        let status = agent_page(&lab, worker, "/status");
        let accepted = status["listener"]["accepted_total"].as_u64().unwrap();
        let to_backends: u64 = status["backends"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b["connections_total"].as_u64().unwrap())
            .sum();
        assert!(
            accepted > 0 && to_backends > 0,
            "{worker}: its kubelet reached the API through 127.0.0.1:{PORT}: {status}"
        );
    }
    // A second run finds every agent, CA copy and hosts entry in place.
    let again = up(&lab, &inventory, &state);
    assert!(again.status.success(), "{}", text(&again));
    let err = String::from_utf8_lossy(&again.stderr);
    assert!(err.contains("nothing to change"), "{}", text(&again));

    let before = nodes_seen(&lab, "cp2");
    let names: Vec<&str> = before.iter().map(|(n, _, _)| n.as_str()).collect();
    assert_eq!(names, ALL);
    assert!(before.iter().all(|(_, r, _)| r == "True"), "{before:?}");

    // Stop cp1's API server: the stand-in kubelet stops the static pod when its manifest
    // goes. cp1 holds the first backend, and is where `kubeadm init` ran.
    lab.exec_ok(
        "cp1",
        &[
            "mv",
            "/etc/kubernetes/manifests/kube-apiserver.yaml",
            "/root/kube-apiserver.yaml",
        ],
    );
    let stopped_at = SystemTime::now();
    wait_for("cp1's API server to stop", Duration::from_secs(30), || {
        !lab.exec(
            "cp1",
            &[
                "curl",
                "-sk",
                "--max-time",
                "2",
                "https://127.0.0.1:6443/readyz",
            ],
        )
        .status
        .success()
    });
    // Every Node stays Ready for 45 s, longer than the 40 s grace after which the node
    // lifecycle controller would mark a silent one Unknown, and every kubelet, cp1's and the
    // workers' included, renews its Lease after the stop: through its own 127.0.0.1.
    let watch = Instant::now();
    let mut renewed_after_stop: Vec<String> = Vec::new();
    while watch.elapsed() < Duration::from_secs(45) {
        for from in ["cp2", "cp3"] {
            let seen = nodes_seen(&lab, from);
            assert_eq!(seen.len(), ALL.len(), "{seen:?}");
            for (node, ready, renewed) in &seen {
                assert_eq!(
                    ready,
                    "True",
                    "{node} after {:?}: {seen:?}",
                    watch.elapsed()
                );
                if parse_micro_time(renewed).is_some_and(|t| t > stopped_at)
                    && !renewed_after_stop.contains(node)
                {
                    renewed_after_stop.push(node.clone());
                }
            }
        }
        std::thread::sleep(Duration::from_secs(2));
    }
    renewed_after_stop.sort();
    assert_eq!(
        renewed_after_stop, ALL,
        "every kubelet heartbeats without cp1's API server"
    );
    // The workers' agents saw cp1 go down and kept serving from the others.
    for worker in ["w1", "w2"] {
        let status = agent_page(&lab, worker, "/status");
        let health: Vec<(String, bool)> = status["backends"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| {
                (
                    b["name"].as_str().unwrap().to_owned(),
                    b["healthy"].as_bool().unwrap(),
                )
            })
            .collect();
        assert!(
            health.contains(&("cp1".to_owned(), false))
                && health.iter().filter(|(_, h)| *h).count() == 2,
            "{worker}: {health:?}"
        );
    }
    // Clean for `khactl status` or a rerun: put cp1's API server back.
    lab.exec_ok(
        "cp1",
        &[
            "mv",
            "/root/kube-apiserver.yaml",
            "/etc/kubernetes/manifests/kube-apiserver.yaml",
        ],
    );
}

#[test]
fn add_master_and_remove_node_reload_every_node_local_agent_workers_included() {
    require_root();
    let lab = Lab::up("nodelocal-grow", indexes::NODE_LOCAL_GROW, 3, 1);
    let dir = tempfile::tempdir().unwrap();
    let two = node_local_inventory_without(&lab, dir.path(), &["cp3"]);
    let three = node_local_inventory(&lab, dir.path());
    let state = dir.path().join("state");
    let out = up(&lab, &two, &state);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(agent_backends(&lab, "w1"), ["cp1", "cp2"]);
    let w1_pid = agent_pid(&lab, "w1");

    // add-master: cp3 gets its agent before it joins (it reaches the API through it), and
    // every other agent, the worker's included, is reloaded with cp3 as a backend.
    let out = khactl_with(&lab, &["add-master", "cp3", "--yes"], &three, &state, &[]);
    assert!(out.status.success(), "{}", text(&out));
    for node in ["cp1", "cp2", "cp3", "w1"] {
        assert_eq!(agent_backends(&lab, node), ["cp1", "cp2", "cp3"], "{node}");
    }
    assert_eq!(
        agent_pid(&lab, "w1"),
        w1_pid,
        "w1's agent was reloaded in place, not restarted"
    );

    // remove-node: every remaining agent, the worker's included, lets cp3 go.
    let out = khactl_with(&lab, &["remove-node", "cp3", "--yes"], &three, &state, &[]);
    assert!(out.status.success(), "{}", text(&out));
    for node in ["cp1", "cp2", "w1"] {
        assert_eq!(agent_backends(&lab, node), ["cp1", "cp2"], "{node}");
    }
    assert_eq!(
        agent_pid(&lab, "w1"),
        w1_pid,
        "w1's agent was reloaded in place, not restarted"
    );
}
