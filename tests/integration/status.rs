//! `khactl status` against a real cluster (the lab's stand-in control plane with real etcd and
//! real khagents): healthy exits 0; a VIP added by hand on a backup is a double holder, and
//! so are two agents that cannot hear each other, which converge once they do; a stopped
//! agent and a stopped etcd member exit 1, named with hints. The JSON is read as a
//! script would.

use std::process::Output;
use std::time::{Duration, Instant};

use crate::support::run::{agent_page, json_of, khactl, sh, text, up};
use crate::support::{Lab, indexes, require_root, wait_for};

const CONTROL_PLANES: [&str; 3] = ["cp1", "cp2", "cp3"];

/// A 3+1 lab with a cluster built by `up`.
fn cluster(name: &str, index: u8) -> (Lab, tempfile::TempDir) {
    let lab = Lab::up(name, index, 3, 1);
    let state = tempfile::tempdir().unwrap();
    let out = up(&lab, state.path(), &[]);
    assert!(out.status.success(), "{}", text(&out));
    (lab, state)
}

/// Runs `status` until it exits 0; panics with the last view after `timeout`.
fn until_healthy(lab: &Lab, state: &std::path::Path, timeout: Duration) -> Output {
    let deadline = Instant::now() + timeout;
    loop {
        let out = khactl(lab, "status", state, &[]);
        if out.status.code() == Some(0) {
            return out;
        }
        assert!(
            Instant::now() < deadline,
            "not healthy after {timeout:?}:\n{}",
            text(&out)
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn status_json(lab: &Lab, state: &std::path::Path) -> (Option<i32>, serde_json::Value) {
    let out = khactl(lab, "status", state, &["--output", "json"]);
    (out.status.code(), json_of(&out))
}

fn problems(doc: &serde_json::Value) -> Vec<String> {
    doc["result"]["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["message"].as_str().unwrap().to_owned())
        .collect()
}

/// The hint of the "double holder" problem `status` reported.
fn double_holder_hint(doc: &serde_json::Value) -> String {
    doc["result"]["problems"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["message"].as_str().unwrap().contains("double holder"))
        .and_then(|p| p["hint"].as_str())
        .unwrap_or_else(|| panic!("no double holder with a hint: {doc:#}"))
        .to_owned()
}

fn holders(doc: &serde_json::Value) -> Vec<String> {
    doc["result"]["vip"]["holders"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h.as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn status_of_a_healthy_cluster_exits_0_and_a_double_holder_is_named_and_agents_converge() {
    require_root();
    let (lab, state) = cluster("status-ok", indexes::STATUS_HEALTHY);

    // Right after `up` the leaders may still be electing: healthy within a few seconds.
    let out = until_healthy(&lab, state.path(), Duration::from_secs(60));
    let view = String::from_utf8_lossy(&out.stdout);
    assert!(
        view.starts_with("cluster status-ok: healthy"),
        "{}",
        text(&out)
    );
    for node in ["cp1", "cp2", "cp3", "w1"] {
        assert!(
            view.contains(&format!("\n{node}  ")),
            "{node}: {}",
            text(&out)
        );
    }

    let (code, doc) = status_json(&lab, state.path());
    assert_eq!(code, Some(0), "{doc:#}");
    assert_eq!(doc["ok"], true);
    let r = &doc["result"];
    assert_eq!(r["healthy"], true, "{doc:#}");
    assert_eq!(holders(&doc).len(), 1, "{doc:#}");
    let holder = holders(&doc)[0].clone();
    assert!(CONTROL_PLANES.contains(&holder.as_str()));
    assert_eq!(r["vip"]["apiReady"], true);
    // The real etcd: three started voters, one leader, a database of some size.
    let members = r["etcd"]["members"].as_array().unwrap();
    assert_eq!(members.len(), 3, "{doc:#}");
    assert!(
        members
            .iter()
            .all(|m| m["healthy"] == true && m["learner"] == false)
    );
    assert_eq!(members.iter().filter(|m| m["leader"] == true).count(), 1);
    assert!(members.iter().all(|m| m["dbSize"].as_u64().unwrap() > 0));
    // The stand-in's controller-manager and scheduler hold their Leases on a control plane.
    for leader in ["controllerManager", "scheduler"] {
        let node = r["leaders"][leader]["node"].as_str().unwrap();
        assert!(CONTROL_PLANES.contains(&node), "{leader}: {doc:#}");
    }
    for n in r["nodes"].as_array().unwrap() {
        let certs = n["certificates"].as_array().unwrap();
        assert!(!certs.is_empty(), "{}: {doc:#}", n["name"]);
        let days: Vec<i64> = certs
            .iter()
            .map(|c| c["daysLeft"].as_i64().unwrap())
            .collect();
        assert!(
            days.windows(2).all(|w| w[0] <= w[1]),
            "soonest first: {days:?}"
        );
        if n["role"] == "control-plane" {
            let agent = &n["agent"]["status"];
            assert!(["master", "backup"].contains(&agent["vrrpState"].as_str().unwrap()));
            assert_eq!(agent["backends"].as_array().unwrap().len(), 3);
            assert_eq!(n["apiReady"], true);
        }
    }

    // Someone adds the VIP by hand on a backup: two holders at once.
    let backup = CONTROL_PLANES.iter().find(|n| **n != holder).unwrap();
    let vip = format!("{}/24", lab.vip());
    sh(&lab, backup, &format!("ip addr add {vip} dev eth0"));
    let (code, doc) = status_json(&lab, state.path());
    sh(&lab, backup, &format!("ip addr del {vip} dev eth0"));
    assert_eq!(code, Some(1), "{doc:#}");
    assert_eq!(doc["ok"], false);
    assert_eq!(doc["error"]["exitCode"], 1);
    let mut both = vec![holder.clone(), (*backup).to_owned()];
    both.sort();
    assert_eq!(holders(&doc), both, "{doc:#}");
    let hint = double_holder_hint(&doc);
    assert!(
        hint.contains(&format!("on {backup} was not added by its agent")),
        "{hint}"
    );

    // And once it is gone, healthy again.
    let (code, doc) = status_json(&lab, state.path());
    assert_eq!(code, Some(0), "{doc:#}");

    // Two agents forced into conflict: the backup hears no adverts (VRRP dropped on its
    // INPUT), so it becomes master too. khagent never removes an address it did not add
    // (docs/security.md), so a VIP added by hand stays for the operator to remove, as the
    // hint above says; a conflict between agents is VRRP's to resolve.
    // The backup must rank below the holder, or the holder would yield to it at once.
    let priority = |doc: &serde_json::Value, node: &str| {
        doc["result"]["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["name"] == node)
            .and_then(|n| n["agent"]["status"]["effectivePriority"].as_u64())
            .unwrap_or_else(|| panic!("{node}: no agent priority in {doc:#}"))
    };
    assert!(
        priority(&doc, backup) < priority(&doc, &holder),
        "{backup} outranks the holder {holder}: {doc:#}"
    );
    let deaf = VrrpDropped::on(&lab, backup);
    let mut seen = (None, serde_json::Value::Null);
    wait_for("both agents master", Duration::from_secs(10), || {
        seen = status_json(&lab, state.path());
        holders(&seen.1).len() == 2
    });
    let (code, doc) = seen;
    let unblocked = unix_us();
    drop(deaf);
    assert_eq!(code, Some(1), "{doc:#}");
    assert_eq!(holders(&doc), both, "{doc:#}");
    let hint = double_holder_hint(&doc);
    assert!(hint.contains("two agents are master at once"), "{hint}");
    // They converge once they hear each other: the lower priority gives way, as its own
    // event log stamps it, within a second of the adverts getting through again.
    wait_for("one holder again", Duration::from_secs(10), || {
        let (_, doc) = status_json(&lab, state.path());
        holders(&doc).len() == 1
    });
    let gave_way = both
        .iter()
        .filter_map(|n| {
            agent_page(&lab, n, "/events")["events"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|e| e["kind"] == "vrrp" && e["from"] == "master" && e["to"] == "backup")
                .filter_map(|e| e["unix_us"].as_u64())
                .find(|at| *at >= unblocked)
        })
        .min()
        .expect("an agent went from master to backup after the adverts got through");
    let took_ms = (gave_way - unblocked) / 1000;
    assert!(
        took_ms < 1000,
        "the agents took {took_ms} ms to converge after the adverts got through"
    );
    let (code, doc) = status_json(&lab, state.path());
    assert_eq!(code, Some(0), "{doc:#}");
}

/// VRRP dropped on a node's INPUT until dropped itself (also when the test fails).
struct VrrpDropped<'a> {
    lab: &'a Lab,
    node: &'a str,
}

impl<'a> VrrpDropped<'a> {
    fn on(lab: &'a Lab, node: &'a str) -> Self {
        sh(lab, node, "iptables -w -I INPUT -p vrrp -j DROP");
        Self { lab, node }
    }
}

impl Drop for VrrpDropped<'_> {
    fn drop(&mut self) {
        let out = self.lab.exec(
            self.node,
            &["iptables", "-w", "-D", "INPUT", "-p", "vrrp", "-j", "DROP"],
        );
        if !out.status.success() && !std::thread::panicking() {
            panic!("{}: removing the VRRP drop: {}", self.node, text(&out));
        }
    }
}

fn unix_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros() as u64
}

#[test]
fn status_with_an_agent_and_an_etcd_member_stopped_exits_1_naming_both_with_hints() {
    require_root();
    let (lab, state) = cluster("status-bad", indexes::STATUS_DEGRADED);
    let (_, doc) = status_json(&lab, state.path());
    let holder = holders(&doc).first().cloned().unwrap_or_default();
    // Stop things on two control planes that do not hold the VIP, so nothing else moves.
    let others: Vec<&str> = CONTROL_PLANES
        .iter()
        .copied()
        .filter(|n| *n != holder)
        .collect();
    let (agent_node, etcd_node) = (others[0], others[1]);
    sh(&lab, agent_node, "systemctl stop khagent");
    // etcd is a static pod: without its manifest the kubelet stops it.
    sh(
        &lab,
        etcd_node,
        "mv /etc/kubernetes/manifests/etcd.yaml /root/etcd.yaml",
    );
    wait_for("etcd to stop", Duration::from_secs(60), || {
        lab.exec(etcd_node, &["sh", "-c", "ss -ltn | grep -q ':2379 '"])
            .status
            .code()
            == Some(1)
    });

    let out = khactl(&lab, "status", state.path(), &[]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let view = String::from_utf8_lossy(&out.stdout);
    assert!(view.contains("DEGRADED"), "{}", text(&out));
    assert!(
        view.contains(&format!("{agent_node}: khagent is not running")),
        "{}",
        text(&out)
    );
    assert!(
        view.contains(&format!("etcd member {etcd_node} ")),
        "{}",
        text(&out)
    );
    assert!(view.contains("hint: start it on"), "{}", text(&out));
    assert!(view.contains("hint: start etcd on"), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("is degraded"), "{}", text(&out));

    let (code, doc) = status_json(&lab, state.path());
    assert_eq!(code, Some(1));
    assert_eq!(doc["ok"], false);
    assert_eq!(doc["command"], "status");
    let listed = problems(&doc);
    assert!(
        listed.contains(&format!("{agent_node}: khagent is not running")),
        "{listed:?}"
    );
    assert!(
        listed
            .iter()
            .any(|p| p.starts_with(&format!("etcd member {etcd_node} "))),
        "{listed:?}"
    );
    let hints = doc["error"]["hints"].as_array().unwrap();
    assert_eq!(hints.len(), listed.len(), "one hint per problem: {doc:#}");
    assert!(hints.iter().all(|h| !h.as_str().unwrap().is_empty()));
    let member = doc["result"]["etcd"]["members"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == etcd_node)
        .unwrap();
    assert_eq!(member["healthy"], false, "{doc:#}");

    // Put both back: status is healthy again.
    sh(&lab, agent_node, "systemctl start khagent");
    sh(
        &lab,
        etcd_node,
        "mv /root/etcd.yaml /etc/kubernetes/manifests/etcd.yaml",
    );
    until_healthy(&lab, state.path(), Duration::from_secs(90));
}
