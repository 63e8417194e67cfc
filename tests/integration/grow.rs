//! `khactl add-master` grows a running control plane without an outage: a client calls
//! `/readyz` through the VIP every 20 ms the whole time and never fails, the VIP stays where it
//! was, every running agent is reloaded in place (same PID) and balances to the new node, and
//! etcd has the new voter. It refuses an even size without `--yes`, refuses an unhealthy
//! cluster before changing anything, leaves the cluster as it was when the join fails, and
//! replaces a stale member of the same name. The nodes carry the lab's stand-in control plane
//! (real etcd, real TLS); results are read with `etcdctl` and `curl`.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use crate::kubeadm::{members, voters};
use crate::support::probe::{Prober, vip_holders};
use crate::support::run::{agent_backends, agent_page, agent_pid, khactl_with, sh, text};
use crate::support::{Lab, indexes, require_root, wait_for};

/// The lab's inventory without the named control planes (`- { name: cp3, … }` lines).
fn inventory_without(lab: &Lab, dir: &Path, drop: &[&str]) -> PathBuf {
    let full = std::fs::read_to_string(lab.inventory_path()).unwrap();
    let kept: String = full
        .lines()
        .filter(|l| !drop.iter().any(|n| l.contains(&format!("name: {n},"))))
        .map(|l| format!("{l}\n"))
        .collect();
    assert_eq!(
        full.lines().count() - kept.lines().count(),
        drop.len(),
        "the lab inventory lists each of {drop:?} on one line"
    );
    let path = dir.join(format!("inventory-without-{}.yaml", drop.join("-")));
    std::fs::write(&path, kept).unwrap();
    path
}

fn up(lab: &Lab, inventory: &Path, state: &Path) {
    lab.assert_up();
    let out = khactl_with(lab, &["up"], inventory, state, &[]);
    assert!(out.status.success(), "{}", text(&out));
}

fn add_master(lab: &Lab, node: &str, inventory: &Path, state: &Path, extra: &[&str]) -> Output {
    lab.assert_up();
    khactl_with(lab, &["add-master", node], inventory, state, extra)
}

/// Clients on this machine, each calling `/readyz` through the VIP every 20 ms on a new
/// connection, TLS verified against khactl's CA, until stopped; counts the answers that
/// were not `ok`.
/// Whether `node`'s etcd answers `/health`, asked from cp1 by the real `etcdctl`.
fn etcd_healthy(lab: &Lab, node: &str) -> bool {
    let endpoint = format!("https://{}:2379", lab.node_address(node));
    let out = lab.exec(
        "cp1",
        &[
            "env",
            "ETCDCTL_API=3",
            "etcdctl",
            "--endpoints",
            endpoint.as_str(),
            "--cacert",
            "/etc/kubernetes/pki/etcd/ca.crt",
            "--cert",
            "/etc/kubernetes/pki/etcd/healthcheck-client.crt",
            "--key",
            "/etc/kubernetes/pki/etcd/healthcheck-client.key",
            "--command-timeout",
            "2s",
            "endpoint",
            "health",
        ],
    );
    out.status.success()
}

/// The agent's event log on `node` after sequence number `since` (`/events?since=`).
fn agent_events(lab: &Lab, node: &str, since: u64) -> Vec<serde_json::Value> {
    agent_page(lab, node, &format!("/events?since={since}"))["events"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn last_seq(lab: &Lab, node: &str) -> u64 {
    agent_events(lab, node, 0)
        .last()
        .and_then(|e| e["seq"].as_u64())
        .unwrap_or(0)
}

/// The run log `add-master` names on its last line.
fn run_log(out: &Output) -> String {
    let all = text(out);
    let path = all
        .lines()
        .find_map(|l| l.trim().strip_prefix("log: "))
        .unwrap_or_else(|| panic!("no log path in {all}"));
    std::fs::read_to_string(path.trim()).unwrap()
}

#[test]
fn add_master_grows_two_to_three_to_four_with_no_failed_request_and_no_vip_move() {
    require_root();
    let lab = Lab::up("grow", indexes::GROW, 4, 1);
    let state = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let two = inventory_without(&lab, dir.path(), &["cp3", "cp4"]);
    let three = inventory_without(&lab, dir.path(), &["cp4"]);
    let four = lab.inventory_path();
    up(&lab, &two, state.path());
    assert_eq!(voters(&lab, "cp1"), ["cp1", "cp2"]);
    let holder = vip_holders(&lab, &["cp1", "cp2"]);
    assert_eq!(holder.len(), 1, "{holder:?}");
    let pids: Vec<String> = ["cp1", "cp2"].iter().map(|n| agent_pid(&lab, n)).collect();

    let prober = Prober::start(&lab, state.path());
    // 2 -> 3.
    let out = add_master(&lab, "cp3", &three, state.path(), &[]);
    assert!(out.status.success(), "{}", text(&out));
    let log = run_log(&out);
    assert_eq!(voters(&lab, "cp1"), ["cp1", "cp2", "cp3"]);
    assert!(
        !log.lines().any(|l| l.trim_start().starts_with("w1:")),
        "add-master contacts no worker: {log}"
    );
    assert!(
        !log.contains("restart service khagent"),
        "no agent restarted: {log}"
    );
    // The agents learn the new backend only after its join: reloads come after the join.
    let joined = log
        .find("cp3: kubeadm join as a control plane")
        .expect("joined");
    let reloaded = log
        .find("cp1: reload service khagent")
        .expect("cp1 reloaded");
    assert!(joined < reloaded, "joined before any agent balances to it");

    // 3 -> 4 is an even etcd: refused without --yes, with nothing changed on cp4.
    let before = lab.changed_paths("cp4");
    let even = add_master(&lab, "cp4", &four, state.path(), &[]);
    assert_eq!(even.status.code(), Some(1), "{}", text(&even));
    assert!(text(&even).contains("--yes"), "{}", text(&even));
    assert_eq!(
        lab.changed_paths("cp4"),
        before,
        "a refusal changes nothing"
    );
    let out = add_master(&lab, "cp4", &four, state.path(), &["--yes"]);
    assert!(out.status.success(), "{}", text(&out));
    let (calls, failures) = prober.finish();

    assert!(calls > 100, "the prober ran all along ({calls} calls)");
    assert!(
        failures.is_empty(),
        "{} of {calls} requests through the VIP failed: {failures:?}",
        failures.len()
    );
    assert_eq!(voters(&lab, "cp1"), ["cp1", "cp2", "cp3", "cp4"]);
    assert_eq!(vip_holders(&lab, &["cp1", "cp2", "cp3", "cp4"]), holder);
    let now: Vec<String> = ["cp1", "cp2"].iter().map(|n| agent_pid(&lab, n)).collect();
    assert_eq!(pids, now, "the same agent processes, reloaded in place");
    for node in ["cp1", "cp2", "cp3", "cp4"] {
        let backends = agent_backends(&lab, node);
        assert!(
            backends.iter().any(|b| b == "cp4"),
            "{node} balances to cp4: {backends:?}"
        );
    }
    // remove-node of the VIP holder, under a prober: the VIP moves once, gracefully (a
    // priority-0 handover, no request fails); etcd has three members; the node is reset and
    // its agent gone; the others were reloaded, not restarted.
    let removed = holder[0].clone();
    let rest: Vec<&str> = ["cp1", "cp2", "cp3", "cp4"]
        .into_iter()
        .filter(|n| *n != removed)
        .collect();
    let seqs: Vec<u64> = rest.iter().map(|n| last_seq(&lab, n)).collect();
    let rest_pids: Vec<String> = rest.iter().map(|n| agent_pid(&lab, n)).collect();
    // A new connection held back by the holder comes back after the client's 1 s SYN
    // retransmission; 4 s leaves room for a second one on a busy machine. A cut connection
    // fails at once whatever the limit.
    let prober = Prober::start_with(&lab, state.path(), 4, 4);
    let out = khactl_with(
        &lab,
        &["remove-node", &removed],
        &four,
        state.path(),
        &["--yes"],
    );
    let (calls, failures) = prober.finish();
    assert!(out.status.success(), "{}", text(&out));
    assert!(calls > 20, "the prober ran ({calls} calls)");
    // Not one request fails: the holder drops new connections for a moment, so they come
    // back a second later to the next holder, while those in flight finish before the VIP
    // moves. The rule that dropped them is gone from every node.
    assert!(
        run_log(&out).contains("drop new connections"),
        "the holder held new connections: {}",
        text(&out)
    );
    for node in ["cp1", "cp2", "cp3", "cp4"] {
        let rules = lab.exec_ok(node, &["iptables", "-S", "INPUT"]);
        assert!(!rules.contains("khactl-vip-handover"), "{node}: {rules}");
    }
    assert!(
        failures.is_empty(),
        "{} of {calls} requests through the VIP failed while {removed} left: {failures:?}",
        failures.len()
    );
    let mut voters_now = voters(&lab, rest[0]);
    voters_now.sort();
    assert_eq!(voters_now, rest);
    let took_over: usize = rest
        .iter()
        .zip(&seqs)
        .map(|(n, since)| {
            agent_events(&lab, n, *since)
                .iter()
                .filter(|e| e["kind"] == "vrrp" && e["to"] == "master")
                .count()
        })
        .sum();
    assert_eq!(took_over, 1, "the VIP moved exactly once");
    assert_eq!(vip_holders(&lab, &rest).len(), 1);
    let now: Vec<String> = rest.iter().map(|n| agent_pid(&lab, n)).collect();
    assert_eq!(rest_pids, now, "the other agents were reloaded in place");
    for node in &rest {
        let backends = agent_backends(&lab, node);
        assert!(
            !backends.contains(&removed),
            "{node} no longer balances to {removed}: {backends:?}"
        );
    }
    assert!(
        lab.read_file(&removed, "/usr/local/bin/khagent").is_none(),
        "khagent removed from {removed}"
    );
    assert!(
        lab.read_file(&removed, "/etc/kubernetes/manifests/etcd.yaml")
            .is_none(),
        "{removed} was reset"
    );
    // The worker: drained, reset, its Node object gone. (The removed control plane is out of
    // the inventory now, as the result told the user.)
    let without = inventory_without(&lab, dir.path(), &[removed.as_str()]);
    let out = khactl_with(
        &lab,
        &["remove-node", "w1"],
        &without,
        state.path(),
        &["--yes"],
    );
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        lab.read_file("w1", "/etc/kubernetes/kubelet.conf")
            .is_none()
    );
    let nodes = sh(
        &lab,
        rest[0],
        "kubectl --kubeconfig /etc/kubernetes/admin.conf get nodes -o name",
    );
    assert!(
        !nodes.contains("node/w1") && !nodes.contains(&format!("node/{removed}")),
        "{nodes}"
    );
    // add-worker brings the reset worker back: joined with a fresh token, registered again.
    let out = khactl_with(&lab, &["add-worker", "w1"], &without, state.path(), &[]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        lab.read_file("w1", "/etc/kubernetes/kubelet.conf")
            .is_some()
    );
    let nodes = sh(
        &lab,
        rest[0],
        "kubectl --kubeconfig /etc/kubernetes/admin.conf get nodes -o name",
    );
    assert!(nodes.contains("node/w1"), "{nodes}");
}

#[test]
fn add_master_of_a_node_already_in_the_cluster_changes_nothing() {
    require_root();
    let lab = Lab::up("grow-again", indexes::GROW_AGAIN, 3, 0);
    let state = tempfile::tempdir().unwrap();
    up(&lab, &lab.inventory_path(), state.path());
    let four = lab.inventory_path();
    // A second add-master of a node in the cluster changes nothing.
    let again = add_master(&lab, "cp3", &four, state.path(), &["--yes"]);
    assert!(again.status.success(), "{}", text(&again));
    assert!(
        text(&again).contains("already in the cluster"),
        "{}",
        text(&again)
    );
}

#[test]
fn add_master_refuses_an_unhealthy_cluster_undoes_a_failed_join_and_replaces_a_stale_member() {
    require_root();
    let lab = Lab::up("grow-guards", indexes::GROW_GUARDS, 4, 0);
    let state = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let three = inventory_without(&lab, dir.path(), &["cp4"]);
    let four = lab.inventory_path();
    up(&lab, &three, state.path());

    // Bad input stops before any connection: a node the inventory does not name, a worker.
    let unknown = add_master(&lab, "cp9", &four, state.path(), &[]);
    assert_eq!(unknown.status.code(), Some(2), "{}", text(&unknown));
    assert!(text(&unknown).contains("cp9 is not in the inventory"));

    // One etcd member stopped (its static pod manifest moved away, as on a real node):
    // refused, naming it, and no node changed.
    sh(
        &lab,
        "cp3",
        "mv /etc/kubernetes/manifests/etcd.yaml /root/etcd.yaml",
    );
    wait_for("cp3's etcd to stop", Duration::from_secs(30), || {
        !etcd_healthy(&lab, "cp3")
    });
    let nodes = ["cp1", "cp2", "cp3", "cp4"];
    let before: Vec<_> = nodes.iter().map(|n| lab.changed_paths(n)).collect();
    let out = add_master(&lab, "cp4", &four, state.path(), &["--yes"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let err = text(&out);
    assert!(err.contains("etcd member cp3 does not answer"), "{err}");
    assert!(err.contains("hint:"), "{err}");
    let after: Vec<_> = nodes.iter().map(|n| lab.changed_paths(n)).collect();
    assert_eq!(before, after, "a refused add-master changes no node");
    sh(
        &lab,
        "cp3",
        "mv /root/etcd.yaml /etc/kubernetes/manifests/etcd.yaml",
    );

    // The join fails once (the learner never catches up): cp4 is reset and its learner
    // removed; the cluster keeps its three voters; the rerun completes.
    sh(
        &lab,
        "cp4",
        "mkdir -p /etc/khalab-standin && echo 'join:etcd-promote-timeout once' > /etc/khalab-standin/fail",
    );
    let mut out = None;
    wait_for("cp3's etcd to be back", Duration::from_secs(60), || {
        let o = add_master(&lab, "cp4", &four, state.path(), &["--yes"]);
        let refused_for_health = text(&o).contains("is not healthy");
        out = Some(o);
        !refused_for_health
    });
    let out = out.unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("was reset"), "{}", text(&out));
    assert_eq!(voters(&lab, "cp1"), ["cp1", "cp2", "cp3"]);
    assert_eq!(members(&lab, "cp1").len(), 3, "the learner was removed");
    let out = add_master(&lab, "cp4", &four, state.path(), &["--yes"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(voters(&lab, "cp1"), ["cp1", "cp2", "cp3", "cp4"]);

    // cp4 reinstalled out of band: its member stays in etcd, dead. add-master removes it and
    // joins the machine again.
    let old = members(&lab, "cp1")
        .into_iter()
        .find(|m| m.name == "cp4")
        .unwrap()
        .id;
    sh(
        &lab,
        "cp4",
        "systemctl stop kubelet && rm -rf /etc/kubernetes /var/lib/etcd /var/lib/kubelet",
    );
    let out = add_master(&lab, "cp4", &four, state.path(), &["--yes"]);
    assert!(out.status.success(), "{}", text(&out));
    let now = members(&lab, "cp1");
    assert!(
        now.iter().all(|m| m.id != old),
        "stale member gone: {now:?}"
    );
    assert_eq!(voters(&lab, "cp1"), ["cp1", "cp2", "cp3", "cp4"]);

    // Dead hardware: cp4 loses power. remove-node --unreachable cleans up the cluster's side
    // (etcd member, Node object, the other agents) without contacting it.
    lab.stop_node("cp4", true);
    let out = khactl_with(
        &lab,
        &["remove-node", "cp4"],
        &four,
        state.path(),
        &["--unreachable", "--yes"],
    );
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        !run_log(&out)
            .lines()
            .any(|l| l.trim_start().starts_with("cp4: $")),
        "nothing ran on cp4"
    );
    assert_eq!(voters(&lab, "cp1"), ["cp1", "cp2", "cp3"]);
    assert_eq!(members(&lab, "cp1").len(), 3);
    let nodes = sh(
        &lab,
        "cp1",
        "kubectl --kubeconfig /etc/kubernetes/admin.conf get nodes -o name",
    );
    assert!(!nodes.contains("node/cp4"), "{nodes}");
    for node in ["cp1", "cp2", "cp3"] {
        let backends = agent_backends(&lab, node);
        assert!(
            !backends.iter().any(|b| b == "cp4"),
            "{node} no longer balances to cp4: {backends:?}"
        );
    }
}
