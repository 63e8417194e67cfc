//! `khactl up` installs khagent on the control-plane nodes of a real lab (3 control planes +
//! 1 worker) and leaves exactly one node holding the VIP, with the load balancer answering on
//! it; a second run changes nothing; killing the holder's agent moves the VIP. Also: what `up`
//! does, before contacting anyone, when the agent binary is missing or not an executable.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use crate::support::{Lab, indexes, khactl_bin, require_root, wait_for};

const CONTROL_PLANES: [&str; 3] = ["cp1", "cp2", "cp3"];
const LB_PORT: &str = "8443";
/// The port a changed inventory moves the load balancer to.
const NEW_LB_PORT: &str = "9443";

/// The khagent cargo built beside khactl. `cargo test --workspace` builds both; `cargo test -p
/// khactl` alone does not, and then this says so instead of testing a stale binary.
fn agent_bin() -> PathBuf {
    let path = khactl_bin().with_file_name("khagent");
    assert!(
        path.is_file(),
        "{} is missing: run the tests with `cargo test --workspace` (or `cargo build \
         --workspace` first) so the agent is built next to khactl",
        path.display()
    );
    path
}

fn khactl_up(inventory: &Path, state: &Path, extra: &[&str]) -> Output {
    Command::new(khactl_bin())
        .arg("up")
        .arg("-i")
        .arg(inventory)
        .arg("--state-dir")
        .arg(state)
        .args(extra)
        .env_remove("KHACTL_STATE_DIR")
        .output()
        .unwrap()
}

fn describe(o: &Output) -> String {
    format!(
        "exit {:?}\n--- stdout\n{}\n--- stderr\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// The control-plane nodes with the VIP on an interface, read in each node's own netns.
fn vip_holders(lab: &Lab) -> Vec<&'static str> {
    let vip = lab.vip().to_string();
    CONTROL_PLANES
        .into_iter()
        .filter(|node| {
            let out = lab.exec_ok(node, &["ip", "-o", "-4", "addr", "show"]);
            out.split_whitespace()
                .any(|w| w.split('/').next() == Some(vip.as_str()))
        })
        .collect()
}

/// A TCP connection to VIP:port opened from inside `node` (lab traffic only, bridge checked).
fn vip_answers_from(lab: &Lab, node: &str, port: &str) -> bool {
    lab.assert_up();
    let vip = lab.vip().to_string();
    let script = "exec 3<>/dev/tcp/$0/$1";
    lab.exec(node, &["timeout", "2", "bash", "-c", script, &vip, port])
        .status
        .success()
}

/// The run log `up` names on its last line (`log: PATH`, or `… full log: PATH` on failure).
fn run_log(out: &Output) -> String {
    let output = String::from_utf8_lossy(&out.stdout) + String::from_utf8_lossy(&out.stderr);
    let path = output
        .lines()
        .find_map(|l| {
            let l = l.trim();
            l.strip_prefix("log: ")
                .or_else(|| l.split_once("full log: ").map(|(_, path)| path))
        })
        .unwrap_or_else(|| panic!("no log path in {}", describe(out)));
    std::fs::read_to_string(path.trim()).unwrap()
}

/// The nodes whose agent a run restarted (or tried to), in the order it did so.
fn restarts(log: &str) -> Vec<String> {
    log.lines()
        .filter(|l| l.contains(": restart service khagent") && !l.contains("FAILED"))
        .filter_map(|l| l.trim().split(':').next().map(str::to_owned))
        .collect()
}

fn mode_and_sha(lab: &Lab, node: &str, path: &str) -> String {
    let script = r#"printf '%s %s' "$(stat -c %a "$0")" "$(sha256sum < "$0" | cut -d' ' -f1)""#;
    lab.exec_ok(node, &["sh", "-c", script, path])
}

fn local_sha(path: &Path) -> String {
    let out = Command::new("sha256sum").arg(path).output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned()
}

#[test]
fn up_installs_the_agent_and_one_node_holds_the_vip_until_its_agent_dies() {
    require_root();
    let agent = agent_bin();
    let lab = Lab::up("agent-install", indexes::AGENT_INSTALL, 3, 1);
    let state = tempfile::tempdir().unwrap();
    assert!(lab.is_up(), "the lab must be up before khactl connects");
    let out = khactl_up(&lab.inventory_path(), state.path(), &[]);
    assert!(out.status.success(), "{}", describe(&out));

    // `up` returned only once the VIP was settled: no polling needed here.
    let holders = vip_holders(&lab);
    assert_eq!(
        holders,
        ["cp1"],
        "the first control plane has the top priority"
    );
    for from in ["cp2", "w1"] {
        assert!(
            vip_answers_from(&lab, from, LB_PORT),
            "{}:{LB_PORT} from {from}",
            lab.vip()
        );
    }

    let binary_sha = local_sha(&agent);
    for node in CONTROL_PLANES {
        assert_eq!(
            mode_and_sha(&lab, node, "/usr/local/bin/khagent"),
            format!("755 {binary_sha}"),
            "{node}: the binary cargo built, executable"
        );
        let config = mode_and_sha(&lab, node, "/etc/khagent/khagent.yaml");
        assert!(config.starts_with("600 "), "{node}: config {config}");
        let unit = mode_and_sha(&lab, node, "/etc/systemd/system/khagent.service");
        assert!(unit.starts_with("644 "), "{node}: unit {unit}");
        // The installed config is one the agent itself accepts.
        lab.exec_ok(
            node,
            &[
                "/usr/local/bin/khagent",
                "check",
                "--config",
                "/etc/khagent/khagent.yaml",
            ],
        );
        assert!(
            lab.exec(node, &["pgrep", "-x", "khagent"]).status.success(),
            "{node}: agent running"
        );
    }
    assert_eq!(lab.read_file("w1", "/etc/khagent/khagent.yaml"), None);
    assert_eq!(
        lab.read_file("w1", "/etc/systemd/system/khagent.service"),
        None
    );
    assert!(
        !lab.exec("w1", &["test", "-e", "/usr/local/bin/khagent"])
            .status
            .success(),
        "workers get no agent"
    );

    let again = khactl_up(&lab.inventory_path(), state.path(), &[]);
    assert!(again.status.success(), "{}", describe(&again));
    let text = String::from_utf8_lossy(&again.stdout).into_owned()
        + &String::from_utf8_lossy(&again.stderr);
    assert!(
        text.contains("nothing to change"),
        "second run: {}",
        describe(&again)
    );
    assert_eq!(
        vip_holders(&lab),
        ["cp1"],
        "a second run must not move the VIP"
    );
    assert!(restarts(&run_log(&again)).is_empty());

    // A changed inventory: every agent gets the new config, restarted one at a time with the
    // VIP holder last, and `up` again returns with exactly one holder serving the new port.
    let (_dir, moved) = on_new_lb_port(&lab);
    let third = khactl_up(&moved, state.path(), &[]);
    assert!(third.status.success(), "{}", describe(&third));
    assert_eq!(restarts(&run_log(&third)), ["cp2", "cp3", "cp1"]);
    assert_eq!(vip_holders(&lab).len(), 1);
    assert!(vip_answers_from(&lab, "w1", NEW_LB_PORT));
    // cp1 came back last and takes its VIP back after the preemption delay (5 s).
    wait_for("cp1 to hold the VIP again", Duration::from_secs(15), || {
        vip_holders(&lab) == ["cp1"]
    });

    // A run cut short after writing cp3's new files (its node lost, or an earlier restart
    // failed) leaves the pending-restart mark with the agent still on its old files; the next
    // run restarts that agent alone, although every file already matches, and clears the mark.
    lab.exec_ok(
        "cp3",
        &[
            "sh",
            "-c",
            "mkdir -p /var/lib/khagent && echo cut short > /var/lib/khagent/restart-pending",
        ],
    );
    let fourth = khactl_up(&moved, state.path(), &[]);
    assert!(fourth.status.success(), "{}", describe(&fourth));
    assert_eq!(restarts(&run_log(&fourth)), ["cp3"]);
    assert!(
        !has_restart_mark(&lab, "cp3"),
        "the mark is gone once cp3's agent restarted"
    );
    assert_eq!(
        vip_holders(&lab),
        ["cp1"],
        "restarting a backup moves no VIP"
    );

    // A crashed agent: keepalived would leave the VIP behind (two holders); khagent's VIP has a
    // short kernel lifetime, so it disappears from the dead node while a backup takes over.
    let kill = lab.exec("cp1", &["pkill", "-9", "-x", "khagent"]);
    assert!(kill.status.success(), "pkill: {kill:?}");
    let mut last = Vec::new();
    wait_for(
        "one other control plane to hold the VIP, and cp1 to have lost it",
        Duration::from_secs(10),
        || {
            last = vip_holders(&lab);
            last.len() == 1 && last[0] != "cp1"
        },
    );
    // cp2 (priority 210) outranks cp3 (170): its Skew_Time is 15.6 ms shorter at 100 ms
    // adverts (RFC 5798 §6.1), so it wins the race and the VIP moves once.
    assert_eq!(last, ["cp2"], "the next in line takes over");
    assert!(
        vip_answers_from(&lab, "w1", NEW_LB_PORT),
        "the new holder serves the VIP"
    );
}

/// The lab's inventory with the load balancer moved to NEW_LB_PORT, in a directory that lives
/// as long as the returned guard.
fn on_new_lb_port(lab: &Lab) -> (tempfile::TempDir, PathBuf) {
    let original = std::fs::read_to_string(lab.inventory_path()).unwrap();
    let changed = original.replace(&format!("port: {LB_PORT}"), &format!("port: {NEW_LB_PORT}"));
    assert_ne!(original, changed, "the lab inventory names the LB port");
    let dir = tempfile::tempdir().unwrap();
    let moved = dir.path().join("inventory.yaml");
    std::fs::write(&moved, changed).unwrap();
    (dir, moved)
}

/// A new lab of `control_planes` control planes (no workers) and an empty state directory,
/// once the agent binary is known to be built.
fn fresh_lab(name: &str, index: u8, control_planes: usize) -> (Lab, tempfile::TempDir) {
    require_root();
    agent_bin();
    let lab = Lab::up(name, index, control_planes, 0);
    assert!(lab.is_up(), "the lab must be up before khactl connects");
    (lab, tempfile::tempdir().unwrap())
}

fn has_restart_mark(lab: &Lab, node: &str) -> bool {
    lab.exec(node, &["test", "-e", "/var/lib/khagent/restart-pending"])
        .status
        .success()
}

#[test]
fn a_restart_that_fails_stops_the_rolling_restart_and_the_next_run_finishes_it() {
    let (lab, state) = fresh_lab("agent-restart-fail", indexes::AGENT_RESTART_FAIL, 3);
    let first = khactl_up(&lab.inventory_path(), state.path(), &[]);
    assert!(first.status.success(), "{}", describe(&first));
    assert_eq!(vip_holders(&lab), ["cp1"]);

    // On cp2 something else already listens on the VIP at the port the new inventory moves
    // the load balancer to: the config passes `khagent check`, but the restarted agent cannot
    // bind and exits at once. (On a wildcard address preflight would refuse it before any
    // change; on the VIP of a node whose agent is installed, it cannot tell it from the
    // agent's own listener. IP_FREEBIND (15): cp2 does not hold the VIP.)
    let blocker = lab.exec_ok(
        "cp2",
        &[
            "sh",
            "-c",
            "python3 -c 'import socket,sys,time; s=socket.socket(); \
             s.setsockopt(socket.SOL_IP, 15, 1); \
             s.bind((sys.argv[1], int(sys.argv[2]))); s.listen(); time.sleep(600)' \"$0\" \"$1\" \
             >/dev/null 2>&1 & echo $!",
            &lab.vip().to_string(),
            NEW_LB_PORT,
        ],
    );
    let blocker = blocker.trim().to_owned();
    wait_for(
        "the blocker to listen on cp2",
        Duration::from_secs(5),
        || {
            lab.exec_ok("cp2", &["ss", "-Hltn"])
                .contains(&format!(":{NEW_LB_PORT}"))
        },
    );
    let (_dir, moved) = on_new_lb_port(&lab);

    let failed = khactl_up(&moved, state.path(), &[]);
    let text = describe(&failed);
    assert_eq!(failed.status.code(), Some(1), "{text}");
    // Real systemd reports a Type=simple service active until it exits, which the wait for it
    // to stay active catches; the lab's systemctl already fails the restart itself.
    assert!(
        text.contains("cp2: FAILED: restart service khagent"),
        "cp2's restart is the failure: {text}"
    );
    for skipped in ["cp3", "cp1"] {
        assert!(
            text.contains(&format!(
                "{skipped}: FAILED: not restarted or started: the rolling restart stopped at cp2"
            )),
            "{skipped} named as not restarted: {text}"
        );
    }
    assert_eq!(
        restarts(&run_log(&failed)),
        ["cp2"],
        "the rolling restart stopped at the first failure"
    );
    // The two agents not restarted still serve the VIP on the old port.
    assert_eq!(vip_holders(&lab), ["cp1"]);
    assert!(vip_answers_from(&lab, "cp3", LB_PORT));
    for node in CONTROL_PLANES {
        assert!(
            has_restart_mark(&lab, node),
            "{node}: new files, restart pending"
        );
    }

    // Once the port is free, the next run starts cp2's stopped agent and restarts the two
    // others (the holder last), although every file already matches the inventory.
    lab.exec_ok("cp2", &["kill", blocker.as_str()]);
    let fixed = khactl_up(&moved, state.path(), &[]);
    assert!(fixed.status.success(), "{}", describe(&fixed));
    let log = run_log(&fixed);
    assert!(
        log.contains("cp2: enable and start service khagent"),
        "cp2 started: {log}"
    );
    assert_eq!(restarts(&log), ["cp3", "cp1"]);
    for node in CONTROL_PLANES {
        assert!(!has_restart_mark(&lab, node), "{node}: mark cleared");
    }
    assert_eq!(vip_holders(&lab).len(), 1);
    assert!(vip_answers_from(&lab, "cp3", NEW_LB_PORT));
}

/// The pid of the khagent running on `node`.
fn agent_pid(lab: &Lab, node: &str) -> String {
    lab.exec_ok(node, &["pgrep", "-x", "khagent"])
        .trim()
        .to_owned()
}

/// The agent's /status on `node`, fetched inside the node from its loopback status listener.
fn agent_status(lab: &Lab, node: &str) -> String {
    let fetch = "import urllib.request; \
                 print(urllib.request.urlopen('http://127.0.0.1:9901/status', timeout=2).read().decode())";
    lab.exec_ok(node, &["python3", "-c", fetch])
}

#[test]
fn a_control_plane_added_to_the_inventory_reaches_running_agents_by_reload() {
    let (lab, state) = fresh_lab("agent-reload", indexes::AGENT_RELOAD, 4);
    let full = std::fs::read_to_string(lab.inventory_path()).unwrap();
    let without_cp4: String = full
        .lines()
        .filter(|l| !l.contains("name: cp4,"))
        .map(|l| format!("{l}\n"))
        .collect();
    assert_ne!(full, without_cp4, "the lab inventory lists cp4");
    let dir = tempfile::tempdir().unwrap();
    let three = dir.path().join("inventory.yaml");
    std::fs::write(&three, without_cp4).unwrap();
    let first = khactl_up(&three, state.path(), &[]);
    assert!(first.status.success(), "{}", describe(&first));
    assert_eq!(vip_holders(&lab), ["cp1"]);
    let pids: Vec<String> = CONTROL_PLANES.iter().map(|n| agent_pid(&lab, n)).collect();

    let grown = khactl_up(&lab.inventory_path(), state.path(), &[]);
    assert!(grown.status.success(), "{}", describe(&grown));
    let log = run_log(&grown);
    assert!(restarts(&log).is_empty(), "no agent restarted: {log}");
    for node in CONTROL_PLANES {
        assert!(
            log.contains(&format!("{node}: reload service khagent")),
            "{node} reloaded: {log}"
        );
    }
    assert!(
        log.contains("cp4: enable and start service khagent"),
        "cp4 gets its first agent: {log}"
    );
    // Before its first start, and only there, khactl listened for a stranger with our VRID.
    let listened: Vec<&str> = log
        .lines()
        .filter(|l| l.contains(": $ ") && l.contains("khagent probe-vrid"))
        .filter_map(|l| l.trim().split(':').next())
        .collect();
    assert_eq!(listened, ["cp4"], "{log}");
    let now: Vec<String> = CONTROL_PLANES.iter().map(|n| agent_pid(&lab, n)).collect();
    assert_eq!(pids, now, "the same agent processes, reloaded in place");
    for node in CONTROL_PLANES {
        let status = agent_status(&lab, node);
        assert!(
            status.contains("\"cp4\""),
            "{node} balances to cp4 now: {status}"
        );
        assert!(!has_restart_mark(&lab, node), "{node}: mark cleared");
    }
    assert_eq!(vip_holders(&lab), ["cp1"], "a reload moves no VIP");
}

/// An inventory whose nodes are never contacted: `up` must stop before connecting.
fn unreachable_inventory(dir: &Path) -> PathBuf {
    let path = dir.join("inventory.yaml");
    let net = Ipv4Addr::new(10, 200, indexes::AGENT_INSTALL, 0).octets();
    let addr = |host: u8| format!("{}.{}.{}.{host}", net[0], net[1], net[2]);
    let text = format!(
        "apiVersion: khactl.io/v1alpha1\nkind: Inventory\n\
         cluster: {{ name: t, kubernetesVersion: v1.31.2 }}\n\
         vip: {{ address: {} }}\n\
         nodes:\n  - {{ name: cp1, address: {}, role: control-plane }}\n",
        addr(100),
        addr(11)
    );
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn a_missing_agent_binary_stops_up_before_any_connection() {
    let dir = tempfile::tempdir().unwrap();
    let inventory = unreachable_inventory(dir.path());
    let missing = dir.path().join("no-such-khagent");
    let out = khactl_up(
        &inventory,
        &dir.path().join("state"),
        &["--agent-binary", missing.to_str().unwrap()],
    );
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no-such-khagent"), "{}", describe(&out));
    assert!(err.contains("cargo build --release"), "{}", describe(&out));
    let all = describe(&out);
    assert!(
        !all.contains("Connect") && !all.contains("connected"),
        "nothing may be contacted: {all}"
    );
}

#[test]
fn a_non_executable_agent_binary_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let inventory = unreachable_inventory(dir.path());
    let script = dir.path().join("khagent");
    std::fs::write(&script, "#!/bin/sh\necho not an agent\n").unwrap();
    let out = khactl_up(
        &inventory,
        &dir.path().join("state"),
        &["--agent-binary", script.to_str().unwrap()],
    );
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not a Linux executable"),
        "{}",
        describe(&out)
    );
}
