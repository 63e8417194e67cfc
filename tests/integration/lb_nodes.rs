//! Dedicated load-balancer nodes (issue #13, topology 3: the Alpine + keepalived + haproxy
//! guide). Lab nodes w1 and w2 boot Debian's OpenRC (`openrc-init`, `supervise-daemon`)
//! instead of systemd, as an Alpine machine would, and the inventory gives them
//! `role: loadbalancer`: khactl installs khagent there as an OpenRC service, and nowhere else.
//! From fresh nodes to a ready cluster (the lab's stand-in control plane): the VIP on a
//! balancer, the API through it on 6443, no agent on a control plane; `status` sees the
//! balancers; `failover-test --scenario agent-crash` passes with the killed agent restarted by
//! supervise-daemon; `remove-node` of the holder hands the VIP over without a failed request
//! and reloads the other balancer in place (OpenRC's `reload`), then stops and removes the
//! agent on the one that left. Nodes are read with Debian's kubectl, the VIP with `ip`.

use std::path::{Path, PathBuf};

use crate::kubeadm::registered_nodes;
use crate::support::lab::LabOptions;
use crate::support::probe::{Prober, vip_holders};
use crate::support::run::{agent_backends, agent_page, json_of, khactl_with, sh, text};
use crate::support::{Lab, indexes, repo_root, require_root};

const CONTROL_PLANES: [&str; 3] = ["cp1", "cp2", "cp3"];
const BALANCERS: [&str; 2] = ["w1", "w2"];
const WORKER: &str = "w3";
/// The guide's haproxy frontend port on the balancers: no API server runs there.
const PORT: u16 = 6443;

/// The lab's inventory with w1 and w2 as load-balancer nodes and the VIP on 6443.
fn inventory(lab: &Lab, dir: &Path) -> PathBuf {
    let lab_inventory = std::fs::read_to_string(lab.inventory_path()).unwrap();
    let text: String = lab_inventory
        .lines()
        .map(|l| {
            let l = if BALANCERS.iter().any(|b| l.contains(&format!("name: {b},"))) {
                l.replace("role: worker", "role: loadbalancer")
            } else {
                l.replace("port: 8443", &format!("port: {PORT}"))
            };
            format!("{l}\n")
        })
        .collect();
    assert_eq!(text.matches("role: loadbalancer").count(), 2, "{text}");
    assert!(text.contains(&format!("port: {PORT}")), "{text}");
    let path = dir.join("lb-nodes.yaml");
    std::fs::write(&path, text).unwrap();
    path
}

fn run(
    lab: &Lab,
    verb: &[&str],
    inventory: &Path,
    state: &Path,
    extra: &[&str],
) -> std::process::Output {
    lab.assert_up();
    khactl_with(lab, verb, inventory, state, extra)
}

/// The PID of khagent on an OpenRC node and its parent process's program.
fn agent_and_parent(lab: &Lab, node: &str) -> (String, String) {
    let pid = sh(lab, node, "pidof khagent");
    let parent = sh(
        lab,
        node,
        &format!("readlink \"/proc/$(awk '{{print $4}}' /proc/{pid}/stat)/exe\""),
    );
    (pid, parent)
}

#[test]
fn openrc_balancer_nodes_hold_the_vip_survive_an_agent_crash_and_leave_gracefully() {
    require_root();
    let standin = repo_root().join("tests/lab/with-standin.sh");
    let lab = Lab::up_with(
        "lbnodes",
        indexes::LB_NODES,
        3,
        3,
        LabOptions {
            setup: Some(&standin),
            openrc: &BALANCERS,
        },
    );
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let inv = inventory(&lab, dir.path());
    for b in BALANCERS {
        assert_eq!(sh(&lab, b, "cat /proc/1/comm"), "openrc-init", "{b}");
    }

    // From fresh nodes to a ready cluster.
    let out = run(&lab, &["up"], &inv, &state, &[]);
    assert!(out.status.success(), "{}", text(&out));

    // The Kubernetes nodes registered (up's own check requires them Ready); the balancers
    // are no Nodes.
    assert_eq!(registered_nodes(&state), ["cp1", "cp2", "cp3", WORKER]);

    // One balancer holds the VIP; no control plane runs an agent or holds the VIP.
    let every: Vec<&str> = CONTROL_PLANES.iter().chain(&BALANCERS).copied().collect();
    let holders = vip_holders(&lab, &every);
    assert_eq!(holders.len(), 1, "{holders:?}");
    let holder = holders[0].clone();
    assert!(BALANCERS.contains(&holder.as_str()), "{holder}");
    for cp in CONTROL_PLANES {
        assert!(
            !lab.exec(cp, &["pidof", "khagent"]).status.success(),
            "{cp}"
        );
        assert!(
            lab.read_file(cp, "/usr/local/bin/khagent").is_none(),
            "{cp}"
        );
    }

    // khagent on each balancer: an OpenRC service in the default runlevel, started, its
    // process a child of supervise-daemon, balancing to every API server.
    for b in BALANCERS {
        sh(&lab, b, "rc-service khagent status");
        sh(&lab, b, "test -L /etc/runlevels/default/khagent");
        let (_, parent) = agent_and_parent(&lab, b);
        assert!(parent.ends_with("/supervise-daemon"), "{b}: {parent}");
        assert_eq!(agent_backends(&lab, b), CONTROL_PLANES, "{b}");
        // An OpenRC service, not a systemd unit; nothing of Kubernetes was prepared there.
        assert!(
            lab.read_file(b, "/etc/systemd/system/khagent.service")
                .is_none(),
            "{b}"
        );
        assert!(
            lab.read_file(b, "/etc/sysctl.d/99-zz-khactl.conf")
                .is_none(),
            "{b}"
        );
    }

    // The API through the VIP on 6443, verified against khactl's CA.
    let ca = crate::support::run::cluster_state(&state)
        .unwrap()
        .join("pki/ca.crt");
    let readyz = std::process::Command::new("curl")
        .args(["-sS", "--max-time", "5", "--cacert"])
        .arg(&ca)
        .arg(format!("https://{}:{PORT}/readyz", lab.vip()))
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&readyz.stdout).trim(),
        "ok",
        "{}",
        text(&readyz)
    );

    // status sees the balancers' agents and the holder.
    let out = run(&lab, &["status"], &inv, &state, &["--output", "json"]);
    let doc = json_of(&out);
    assert!(out.status.success(), "{doc:#}");
    assert_eq!(
        doc["result"]["vip"]["holders"][0].as_str(),
        Some(holder.as_str()),
        "{doc:#}"
    );
    for n in doc["result"]["nodes"].as_array().unwrap() {
        let name = n["name"].as_str().unwrap();
        if BALANCERS.contains(&name) {
            assert_eq!(n["role"], "loadbalancer", "{n}");
            assert_eq!(n["agent"]["active"], true, "{n}");
        }
    }

    // The holder's agent SIGKILLed: the other balancer takes the VIP, supervise-daemon
    // starts a new agent on the victim, and the drill passes its default targets.
    let (pid_before, _) = agent_and_parent(&lab, &holder);
    let out = run(
        &lab,
        &["failover-test"],
        &inv,
        &state,
        &["--scenario", "agent-crash", "--yes", "--output", "json"],
    );
    let doc = json_of(&out);
    assert!(out.status.success(), "{}", text(&out));
    let s = &doc["result"]["scenarios"][0];
    assert_eq!(s["scenario"], "agent-crash", "{s}");
    assert_eq!(s["passed"], true, "{s}");
    assert_eq!(s["node"].as_str(), Some(holder.as_str()), "{s}");
    let new_holder = s["figures"]["newHolder"].as_str().unwrap();
    assert!(
        BALANCERS.contains(&new_holder) && new_holder != holder,
        "{s}"
    );
    let (pid_after, parent) = agent_and_parent(&lab, &holder);
    assert_ne!(
        pid_after, pid_before,
        "supervise-daemon started a new agent"
    );
    assert!(parent.ends_with("/supervise-daemon"), "{parent}");

    // remove-node of whichever balancer holds the VIP now, under four clients calling
    // /readyz through it: the VIP ends on the other balancer, no request fails, that one is
    // reloaded in place with its peer gone, and the one that left has no agent left.
    let holders = vip_holders(&lab, &BALANCERS);
    assert_eq!(holders.len(), 1, "{holders:?}");
    let leaving = holders[0].clone();
    let staying = *BALANCERS.iter().find(|b| **b != leaving).unwrap();
    let (staying_pid, _) = agent_and_parent(&lab, staying);
    let reloads = |node: &str| agent_page(&lab, node, "/status")["reloads_total"].as_u64();
    let staying_reloads = reloads(staying).unwrap();
    let prober = Prober::start_on(&lab, &state, PORT, 4, 4);
    let out = run(&lab, &["remove-node", &leaving], &inv, &state, &["--yes"]);
    let (calls, failures) = prober.finish();
    assert!(out.status.success(), "{}", text(&out));
    assert!(calls > 20, "the prober ran ({calls} calls)");
    assert!(
        failures.is_empty(),
        "{} of {calls} requests through the VIP failed while {leaving} left: {failures:?}",
        failures.len()
    );
    assert_eq!(vip_holders(&lab, &every), [staying]);
    assert_eq!(
        agent_and_parent(&lab, staying).0,
        staying_pid,
        "reloaded, not restarted"
    );
    // OpenRC's reload (supervise-daemon --signal HUP) reached that same process.
    assert_eq!(reloads(staying), Some(staying_reloads + 1));
    let config = lab.read_file(staying, "/etc/khagent/khagent.yaml").unwrap();
    assert!(
        !config.contains(&lab.node_address(&leaving).to_string()),
        "{staying} no longer peers with {leaving}:\n{config}"
    );
    // Stopped for good: OpenRC calls it stopped, no supervisor is left for it, and nothing
    // khactl placed is there.
    assert!(!lab.exec(&leaving, &["pidof", "khagent"]).status.success());
    assert_ne!(
        lab.exec(&leaving, &["rc-service", "khagent", "status"])
            .status
            .code(),
        Some(0),
        "{leaving}: khagent still started"
    );
    assert!(
        lab.read_file(&leaving, "/run/supervise-khagent.pid")
            .is_none()
    );
    for path in [
        "/etc/init.d/khagent",
        "/usr/local/bin/khagent",
        "/etc/khagent/khagent.yaml",
        "/etc/khagent/cluster-ca.crt",
        "/etc/runlevels/default/khagent",
    ] {
        let gone = lab.exec(
            &leaving,
            &["sh", "-c", &format!("[ ! -e {path} ] && [ ! -L {path} ]")],
        );
        assert!(gone.status.success(), "{leaving}: {path} is left");
    }
}
