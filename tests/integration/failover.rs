//! `khactl failover-test` on a 3-master lab built by `khactl up` (stand-in control plane:
//! real etcd, real TLS; see tests/standin). The drill breaks real things: khagent killed and
//! stopped through systemd, the API server's and etcd's static-pod manifests moved away, the
//! holder's interface taken down, the whole holder frozen (`lab.sh freeze`, the lab's
//! node-down hook). Timing targets are the command's own; the tests check that it holds
//! them, reports the figures, and leaves the cluster whole.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};

use crate::support::run::{json_of, khactl, khactl_with, text};
use crate::support::{Lab, indexes, repo_root, require_root};

const CONTROL_PLANES: [&str; 3] = ["cp1", "cp2", "cp3"];

/// The lab both tests use, brought up once with `khactl up`, and a lock so that one drill
/// runs at a time (two would break each other's cluster and timing).
fn cluster() -> (Arc<Lab>, MutexGuard<'static, Option<PathBuf>>) {
    static READY: Mutex<Option<PathBuf>> = Mutex::new(None);
    let lab = Lab::shared("failover", indexes::FAILOVER, 3, 0);
    let mut ready = READY.lock().unwrap_or_else(|p| p.into_inner());
    if ready.is_none() {
        let state = lab.dir().join("khactl-state");
        let out = khactl(&lab, "up", &state, &[]);
        assert!(out.status.success(), "khactl up: {}", text(&out));
        *ready = Some(state);
    }
    (lab, ready)
}

/// The control planes holding the VIP now, read in the nodes themselves.
fn holders(lab: &Lab) -> Vec<&'static str> {
    let vip = format!("inet {}/", lab.vip());
    CONTROL_PLANES
        .into_iter()
        .filter(|n| {
            String::from_utf8_lossy(&lab.exec(n, &["ip", "-o", "-4", "addr"]).stdout).contains(&vip)
        })
        .collect()
}

/// Whole again: one holder, every agent active, every manifest back in place.
fn assert_whole(lab: &Lab) {
    crate::support::wait_for(
        "exactly one VIP holder",
        std::time::Duration::from_secs(30),
        || holders(lab).len() == 1,
    );
    for n in CONTROL_PLANES {
        let active = lab.exec(n, &["systemctl", "is-active", "khagent"]);
        assert!(active.status.success(), "{n}: khagent: {}", text(&active));
        for m in ["kube-apiserver.yaml", "etcd.yaml"] {
            let path = format!("/etc/kubernetes/manifests/{m}");
            assert!(lab.read_file(n, &path).is_some(), "{n}: {path} is missing");
        }
        assert!(
            lab.read_file(n, "/etc/kubernetes/khactl-failover")
                .is_none()
                && !lab
                    .exec(n, &["test", "-e", "/etc/kubernetes/khactl-failover"])
                    .status
                    .success(),
            "{n}: a parked manifest directory was left"
        );
    }
}

#[test]
fn failover_test_passes_every_scenario_with_the_default_targets_and_reports_the_figures() {
    require_root();
    let (lab, state) = cluster();
    let state = state.as_ref().unwrap().clone();
    let lab_sh = repo_root().join("tests/lab/lab.sh");
    let down = format!("{} freeze {} {{node}}", lab_sh.display(), lab.name());
    let up = format!("{} thaw {} {{node}}", lab_sh.display(), lab.name());
    let report = lab.dir().join("drill.html");
    let out = khactl(
        &lab,
        "failover-test",
        &state,
        &[
            "--yes",
            "--output",
            "json",
            "--node-down-cmd",
            &down,
            "--node-up-cmd",
            &up,
            "--report",
            report.to_str().unwrap(),
        ],
    );
    let doc = json_of(&out);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(doc["command"], "failover-test");
    let r = &doc["result"];
    assert_eq!(r["passed"], true, "{r}");
    let scenarios = r["scenarios"].as_array().unwrap();
    let names: Vec<&str> = scenarios
        .iter()
        .map(|s| s["scenario"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "agent-crash",
            "agent-stop",
            "apiserver-down",
            "etcd-member-down",
            "network-cut",
            "node-down"
        ]
    );
    for s in scenarios {
        let name = s["scenario"].as_str().unwrap();
        let f = &s["figures"];
        assert_eq!(s["passed"], true, "{name}: {s}");
        assert!(s["missed"].as_array().unwrap().is_empty(), "{name}: {s}");
        // The prober ran through the whole scenario at 20 ms: over a hundred probes.
        assert!(f["probes"].as_u64().unwrap() > 100, "{name}: {f}");
        assert!(f["apiUnavailableMs"].is_number(), "{name}: {f}");
        assert!(f["healthyAfterMs"].is_number(), "{name}: {f}");
        assert_eq!(
            f["maxHolders"].as_u64().map(|m| m <= 2),
            Some(true),
            "{name}"
        );
        if name == "etcd-member-down" {
            // The VIP stays where it was; a non-holder was broken.
            assert_eq!(f["vipMoves"], 0, "{f}");
            assert_ne!(s["node"], s["holderBefore"], "{s}");
        } else {
            // Another node took the VIP, as the agents' own event logs say.
            let took = f["vipTakeoverMs"].as_f64().unwrap();
            assert!(took > 0.0, "{name}: {f}");
            assert_ne!(f["newHolder"], s["holderBefore"], "{name}: {s}");
            assert_eq!(s["node"], s["holderBefore"], "{name}: {s}");
        }
        let timeline = &s["timeline"];
        assert_eq!(timeline["nodes"].as_array().unwrap().len(), 3, "{name}");
        assert!(!timeline["probes"].as_array().unwrap().is_empty(), "{name}");
    }
    // The cluster is as whole as before, its holder named in the result.
    assert_whole(&lab);
    let now = holders(&lab);
    assert_eq!(r["holderAfter"].as_str(), Some(now[0]), "{r}");
    // One self-contained page with a timeline per scenario.
    let html = std::fs::read_to_string(&report).unwrap();
    assert_eq!(html.matches("<svg").count(), 6);
    assert!(!html.contains("<script") && !html.contains("src=\"http"));
    for n in names {
        assert!(html.contains(n), "{n} missing from the report");
    }
}

/// Targets come from the inventory's `failoverTest` section and from the flags, which win:
/// one impossible target from each, and both are named.
#[test]
fn impossible_targets_from_the_inventory_and_a_flag_exit_1_naming_the_scenario_and_both() {
    require_root();
    let (lab, state) = cluster();
    let state = state.as_ref().unwrap().clone();
    let inventory = lab.dir().join("inventory-with-drill-targets.yaml");
    let mut text_of = std::fs::read_to_string(lab.inventory_path()).unwrap();
    text_of.push_str(
        "\nfailoverTest:\n  targets: { maxApiUnavailable: 5s, maxTakeover: 5s }\n  \
         scenarios:\n    agentCrash: { maxApiUnavailable: 1ms }\n",
    );
    std::fs::write(&inventory, text_of).unwrap();
    let out = khactl_with(
        &lab,
        &["failover-test"],
        &inventory,
        &state,
        &[
            "--yes",
            "--scenario",
            "agent-crash",
            "--max-takeover",
            "1ms",
            "--output",
            "json",
        ],
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    for target in ["max-takeover", "max-api-unavailable"] {
        assert!(
            stderr.contains(&format!("agent-crash missed {target}")),
            "{target}: {}",
            text(&out)
        );
    }
    // Still one JSON document, with every figure and what was missed.
    let doc = json_of(&out);
    let s = &doc["result"]["scenarios"][0];
    assert_eq!(doc["result"]["passed"], false);
    let missed: Vec<(&str, &str)> = s["missed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["target"].as_str().unwrap(), m["limit"].as_str().unwrap()))
        .collect();
    assert_eq!(
        missed,
        [("max-takeover", "1 ms"), ("max-api-unavailable", "1 ms")],
        "{s}"
    );
    assert_eq!(s["targets"]["maxApiUnavailableMs"], 1.0, "{s}");
    assert!(
        s["figures"]["apiUnavailableMs"].as_f64().unwrap() > 1.0,
        "{s}"
    );
    assert_whole(&lab);
}
