//! `loadBalancer.mode: external` (issue #13, topology 2): a cloud load balancer khactl does
//! not run, which drops a connection from one of its own backends to itself (no hairpin,
//! the Aliyun SLB guide). In the lab it is Debian's real haproxy on a fifth namespace that
//! the inventory does not name, told to refuse connections from the control planes. The
//! control planes resolve the API name to 127.0.0.1 (their own API server), the workers to
//! the balancer. The control plane is the lab's stand-in (`tests/standin/`); the Nodes are
//! read with Debian's kubectl, the balancer's side with iptables counters and haproxy's log.

use std::path::{Path, PathBuf};

use crate::support::run::{json_of, khactl_with, text};
use crate::support::{Lab, indexes, require_root};

const CONTROL_PLANES: [&str; 3] = ["cp1", "cp2", "cp3"];
const WORKER: &str = "w1";
/// The lab namespace that plays the cloud balancer; left out of the inventory.
const BALANCER: &str = "w2";
/// Debian's kubectl (package kubernetes-client), unpacked by `tests/lab/install-deps.sh`.
const DEBIAN_KUBECTL: &str = "/opt/khalab/kubernetes-client/usr/bin/kubectl";

fn dns_name(lab: &Lab) -> String {
    format!("k8s-api.{}.local", lab.name())
}

/// The lab's inventory with its `vip` replaced by the external balancer, without the node
/// that plays it.
fn external_inventory(lab: &Lab, dir: &Path) -> PathBuf {
    let lab_inventory = std::fs::read_to_string(lab.inventory_path()).unwrap();
    let replaced: String = lab_inventory
        .lines()
        .filter(|l| !l.contains(&format!("name: {BALANCER},")))
        .map(|l| {
            if l.starts_with("vip:") {
                format!(
                    "loadBalancer: {{ mode: external, dnsName: {}, address: {}, port: 6443 }}\n",
                    dns_name(lab),
                    lab.node_address(BALANCER)
                )
            } else {
                format!("{l}\n")
            }
        })
        .collect();
    assert!(replaced.contains("mode: external") && !replaced.contains("vip:"));
    let path = dir.join("external.yaml");
    std::fs::write(&path, replaced).unwrap();
    path
}

/// haproxy as a cloud TCP balancer: 6443 to every control plane's 6443 with health checks,
/// refusing a connection whose source is one of its backends, as a balancer without
/// hairpin does; every connection it takes is logged when it starts.
fn start_balancer(lab: &Lab) {
    let backends: Vec<String> = CONTROL_PLANES
        .iter()
        .map(|n| lab.node_address(n).to_string())
        .collect();
    let servers: String = CONTROL_PLANES
        .iter()
        .zip(&backends)
        .map(|(n, a)| format!("    server {n} {a}:6443 check inter 1s\n"))
        .collect();
    let config = format!(
        "global\n    log /dev/log local0\n\
         defaults\n    mode tcp\n    log global\n    option tcplog\n    option logasap\n    timeout connect 3s\n    \
         timeout client 1h\n    timeout server 1h\n\
         frontend cloud_lb\n    bind :6443\n    \
         tcp-request connection reject if {{ src {} }}\n    default_backend api\n\
         backend api\n    balance roundrobin\n{servers}",
        backends.join(" ")
    );
    lab.write_file(BALANCER, "/etc/haproxy/haproxy.cfg", &config);
    // Count every connection attempt to 6443 by source, refused or not: a rule per node
    // with no target only counts.
    for node in CONTROL_PLANES.iter().chain([&WORKER]) {
        let source = lab.node_address(node).to_string();
        lab.exec_ok(
            BALANCER,
            &[
                "iptables", "-A", "INPUT", "-p", "tcp", "--dport", "6443", "--syn", "-s", &source,
            ],
        );
    }
    lab.exec_ok(BALANCER, &["systemctl", "restart", "haproxy"]);
}

/// SYNs to the balancer's 6443 from `node`, by the iptables counter.
fn syns_from(lab: &Lab, node: &str) -> u64 {
    let source = lab.node_address(node).to_string();
    let table = lab.exec_ok(BALANCER, &["iptables", "-nvxL", "INPUT"]);
    table
        .lines()
        .find(|l| l.contains("dpt:6443") && l.split_whitespace().any(|f| f == source))
        .and_then(|l| l.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no counter for {source} in {table}"))
}

fn hosts_maps(lab: &Lab, node: &str, address: &str, name: &str) -> bool {
    let hosts = lab.read_file(node, "/etc/hosts").unwrap();
    hosts
        .lines()
        .any(|l| l.split_whitespace().take(2).eq([address, name]))
}

#[test]
fn a_cloud_balancer_without_hairpin_serves_the_workers_and_control_planes_use_their_own() {
    require_root();
    let lab = Lab::up("extlb", indexes::EXTERNAL_LB, 3, 2);
    start_balancer(&lab);
    let dir = tempfile::tempdir().unwrap();
    let inventory = external_inventory(&lab, dir.path());
    let state = dir.path().join("state");
    let out = khactl_with(&lab, &["up"], &inventory, &state, &[]);
    assert!(out.status.success(), "{}", text(&out));

    // Every node registered and Ready, read through cp2's own admin.conf (the name, on
    // cp2 its own API server).
    let nodes = lab.exec_ok(
        "cp2",
        &[
            DEBIAN_KUBECTL,
            "--kubeconfig",
            "/etc/kubernetes/admin.conf",
            "get",
            "nodes",
            "--no-headers",
        ],
    );
    let mut ready: Vec<&str> = nodes
        .lines()
        .filter(|l| l.split_whitespace().nth(1) == Some("Ready"))
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    ready.sort_unstable();
    assert_eq!(ready, ["cp1", "cp2", "cp3", WORKER], "{nodes}");

    // No agent and no VIP anywhere: the balancer is not khactl's.
    let vip = format!("inet {}/", lab.vip());
    for node in CONTROL_PLANES.iter().chain([&WORKER]) {
        assert!(
            lab.read_file(node, "/usr/local/bin/khagent").is_none(),
            "{node} runs no khagent"
        );
        let addrs = lab.exec_ok(node, &["ip", "-o", "-4", "addr", "show"]);
        assert!(!addrs.contains(&vip), "{node} holds no VIP: {addrs}");
    }

    // The name: 127.0.0.1 on control planes (the joiners were moved there after their
    // join), the balancer on the worker, whose kubelet dials the name.
    let name = dns_name(&lab);
    let balancer = lab.node_address(BALANCER).to_string();
    for cp in CONTROL_PLANES {
        assert!(hosts_maps(&lab, cp, "127.0.0.1", &name), "{cp}");
    }
    assert!(hosts_maps(&lab, WORKER, &balancer, &name));
    let kubelet_conf = lab
        .read_file(WORKER, "/etc/kubernetes/kubelet.conf")
        .unwrap();
    assert!(
        kubelet_conf.contains(&format!("server: https://{name}:6443")),
        "{kubelet_conf}"
    );
    // The API through the balancer, by name, verified against the cluster CA: what the
    // worker's kubelet does.
    let readyz = lab.exec_ok(
        WORKER,
        &[
            "curl",
            "-sS",
            "--max-time",
            "5",
            "--cacert",
            "/etc/kubernetes/pki/ca.crt",
            &format!("https://{name}:6443/readyz"),
        ],
    );
    assert_eq!(readyz.trim(), "ok");

    // The balancer's side: no control plane ever dialled it (a connection it would drop),
    // the worker did; haproxy logged the worker's connections and none of theirs.
    for cp in CONTROL_PLANES {
        assert_eq!(syns_from(&lab, cp), 0, "{cp} never dialled the balancer");
    }
    assert!(syns_from(&lab, WORKER) > 0, "the worker went through it");
    let log = lab.unit_log(BALANCER, "haproxy");
    // `-o cat`: each line starts with the client's `address:port`.
    let from = |node: &str| format!("{}:", lab.node_address(node));
    assert!(log.contains(&from(WORKER)), "{log}");
    for cp in CONTROL_PLANES {
        assert!(!log.contains(&from(cp)), "{cp} in haproxy's log: {log}");
    }

    // status asks the endpoint from the worker, as workers use it; no agent is missed.
    let status = khactl_with(&lab, &["status"], &inventory, &state, &["--output", "json"]);
    let health = &json_of(&status)["result"];
    assert!(status.status.success(), "{}", text(&status));
    assert_eq!(health["healthy"], true, "{health}");
    assert_eq!(health["vip"]["external"], true);
    assert_eq!(health["vip"]["apiReady"], true);
    assert_eq!(health["vip"]["askedFrom"], WORKER);

    // The drill has no VIP of khactl's to break: refused before any connection.
    let drill = khactl_with(
        &lab,
        &["failover-test"],
        &inventory,
        &state,
        &["--yes", "--output", "json"],
    );
    assert_eq!(drill.status.code(), Some(2), "{}", text(&drill));
    assert!(
        String::from_utf8_lossy(&drill.stderr).contains("external load balancer"),
        "{}",
        text(&drill)
    );

    // A second run finds every hosts line and certificate in place.
    let again = khactl_with(&lab, &["up"], &inventory, &state, &[]);
    assert!(again.status.success(), "{}", text(&again));
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("nothing to change"),
        "{}",
        text(&again)
    );
}
