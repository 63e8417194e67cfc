//! `khactl up` installs khagent on the control-plane nodes of a real lab (3 control planes +
//! 1 worker), where systemd runs it inside the unit's sandbox, and leaves exactly one node
//! holding the VIP, with data through it reaching an apiserver; a second run changes nothing;
//! an upgraded agent binary restarts the agents one at a time and stops at one that exits
//! within a second; a crashed agent is restarted by systemd and its node takes its role back after the
//! preempt delay. Also: what `up` does, before contacting anyone, when the agent binary is
//! missing or not an executable.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, SystemTime};

use crate::support::run::{agent_page, khactl_with, text, up};
use crate::support::{Lab, indexes, khactl_bin, require_root, wait_for};

const CONTROL_PLANES: [&str; 3] = ["cp1", "cp2", "cp3"];
const LB_PORT: &str = "8443";
/// The cluster CA as khactl distributes it.
const CLUSTER_CA: &str = "/etc/kubernetes/pki/ca.crt";

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
        .unwrap_or_else(|| panic!("no log path in {}", text(out)));
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

/// Sends an HTTPS request to VIP:LB_PORT from inside `from` (lab traffic only, bridge checked),
/// verifying the server against the cluster CA, and returns which control plane's API server
/// the load balancer chose, or `None`. The API server's discovery document (`GET /api`) names
/// the address it advertises (`serverAddressByClientCIDRs`), as a real kube-apiserver does; the
/// request authenticates with the apiserver-kubelet-client certificate khactl distributed.
fn vip_serves(lab: &Lab, from: &str) -> Option<String> {
    for (name, source) in [
        ("ca.crt", CLUSTER_CA),
        (
            "client.crt",
            "/etc/kubernetes/pki/apiserver-kubelet-client.crt",
        ),
        (
            "client.key",
            "/etc/kubernetes/pki/apiserver-kubelet-client.key",
        ),
    ] {
        let target = format!("/tmp/vip-probe-{name}");
        if lab.read_file(from, &target).is_none() {
            let content = lab.read_file("cp1", source).expect("cp1 has the file");
            lab.write_file(from, &target, &content);
        }
    }
    lab.assert_up();
    let url = format!("https://{}:{LB_PORT}/api", lab.vip());
    let out = lab.exec(
        from,
        &[
            "curl",
            "-sS",
            "--max-time",
            "2",
            "--cacert",
            "/tmp/vip-probe-ca.crt",
            "--cert",
            "/tmp/vip-probe-client.crt",
            "--key",
            "/tmp/vip-probe-client.key",
            &url,
        ],
    );
    if !out.status.success() {
        return None;
    }
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    let address = doc["serverAddressByClientCIDRs"][0]["serverAddress"].as_str()?;
    let ip = address.rsplit_once(':').map_or(address, |(ip, _)| ip);
    let node = lab
        .nodes()
        .iter()
        .find(|n| n.address.to_string() == ip)
        .map_or_else(|| format!("unknown address {address}"), |n| n.name.clone());
    Some(node)
}

/// Waits until the VIP serves from `from`; returns which control plane answered.
fn wait_vip_serves(lab: &Lab, from: &str) -> String {
    let mut answer = None;
    wait_for(
        &format!("{}:{LB_PORT} to serve from {from}", lab.vip()),
        Duration::from_secs(15),
        || {
            answer = vip_serves(lab, from);
            answer.is_some()
        },
    );
    let answer = answer.unwrap_or_default();
    assert!(
        CONTROL_PLANES.contains(&answer.as_str()),
        "a control plane's apiserver answers through the VIP, not {answer:?}"
    );
    answer
}

/// What systemd says of the khagent unit on `node` (`systemctl show -p NAME --value`).
fn unit_property(lab: &Lab, node: &str, name: &str) -> String {
    lab.exec_ok(
        node,
        &[
            "systemctl",
            "show",
            "khagent.service",
            "-p",
            name,
            "--value",
        ],
    )
    .trim()
    .to_owned()
}

/// When systemd last started khagent on `node`, from its journal (`Started khagent.service`,
/// wall clock, microseconds).
fn agent_started_at(lab: &Lab, node: &str) -> SystemTime {
    let journal = lab.exec_ok(
        node,
        &[
            "journalctl",
            "--no-pager",
            "-b",
            "-o",
            "short-unix",
            "-u",
            "khagent.service",
        ],
    );
    let line = journal
        .lines()
        .rev()
        .find(|l| l.contains("Started khagent.service"))
        .unwrap_or_else(|| panic!("{node}: no start of khagent in its journal:\n{journal}"));
    let seconds: f64 = line.split_whitespace().next().unwrap().parse().unwrap();
    SystemTime::UNIX_EPOCH + Duration::from_secs_f64(seconds)
}

/// Polls until `node` alone holds the VIP; returns the wall-clock time it was first seen so
/// (never earlier than the truth: polling only adds delay).
fn wait_sole_holder(lab: &Lab, node: &'static str, limit: Duration) -> SystemTime {
    wait_for(&format!("{node} alone to hold the VIP"), limit, || {
        vip_holders(lab) == [node]
    });
    SystemTime::now()
}

/// A counter from the `vrrp.counters` of the agent's /status on `node`.
fn vrrp_counter(lab: &Lab, node: &str, name: &str) -> u64 {
    let status = agent_page(lab, node, "/status");
    status["vrrp"]["counters"][name]
        .as_u64()
        .unwrap_or_else(|| panic!("{node}: no counter {name} in /status: {status}"))
}

/// Capability bits by name, for the ones the agent's unit may grant (`capability.h`).
const CAPABILITIES: [(&str, u32); 4] = [
    ("CAP_NET_BIND_SERVICE", 10),
    ("CAP_NET_ADMIN", 12),
    ("CAP_NET_RAW", 13),
    ("CAP_SYS_NICE", 23),
];

/// The running agent on `node` holds only the capabilities its installed unit grants, cannot
/// gain privileges, and cannot write to the machine's files: systemd enforces the unit's
/// sandbox, it does not merely carry it.
fn assert_sandboxed(lab: &Lab, node: &str) {
    let unit = lab
        .read_file(node, "/etc/systemd/system/khagent.service")
        .unwrap();
    let granted = unit
        .lines()
        .find_map(|l| l.strip_prefix("CapabilityBoundingSet="))
        .unwrap_or_else(|| panic!("{node}: the unit grants no bounded capability set:\n{unit}"));
    let mut mask = 0u64;
    for name in granted.split_whitespace() {
        let (_, bit) = CAPABILITIES
            .iter()
            .find(|(n, _)| *n == name)
            .unwrap_or_else(|| panic!("capability {name} missing from the test's table"));
        mask |= 1 << bit;
    }
    let pid = unit_property(lab, node, "MainPID");
    let status = lab.exec_ok(node, &["cat", &format!("/proc/{pid}/status")]);
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name}:")))
            .map(str::trim)
            .unwrap_or_else(|| panic!("{node}: no {name} in /proc/{pid}/status"))
            .to_owned()
    };
    for set in ["CapBnd", "CapEff", "CapPrm"] {
        assert_eq!(
            u64::from_str_radix(&field(set), 16).unwrap(),
            mask,
            "{node}: the agent's {set} is not what the unit grants ({granted})"
        );
    }
    assert_eq!(field("NoNewPrivs"), "1", "{node}: NoNewPrivileges");
    // Writes from inside the agent's own mount namespace are refused everywhere but its
    // private /tmp; the same writes in the node itself succeed, so the refusal is the
    // sandbox's.
    let write = "for d in /etc/khagent /usr/local/bin /var/lib /root; do \
                 if ( echo x > \"$d/khagent-probe\" ) 2>/dev/null; then rm \"$d/khagent-probe\"; \
                 echo \"wrote $d\"; fi; done; echo x > /tmp/khagent-probe && echo 'wrote /tmp'";
    let in_node = lab.exec_ok(node, &["sh", "-c", write]);
    assert_eq!(
        in_node.lines().count(),
        5,
        "{node}: root in the node writes everywhere: {in_node}"
    );
    let in_agent = lab.exec_ok(node, &["nsenter", "-t", &pid, "-m", "sh", "-c", write]);
    assert_eq!(
        in_agent.trim(),
        "wrote /tmp",
        "{node}: the agent's mount namespace lets these writes through"
    );
    lab.exec_ok(node, &["rm", "/tmp/khagent-probe"]);
}

#[test]
fn up_installs_a_sandboxed_agent_that_systemd_restarts_and_one_node_holds_the_vip() {
    require_root();
    let agent = agent_bin();
    let lab = Lab::up("agent-install", indexes::AGENT_INSTALL, 3, 1);
    let state = tempfile::tempdir().unwrap();
    assert!(lab.is_up(), "the lab must be up before khactl connects");
    let out = up(&lab, state.path(), &[]);
    assert!(out.status.success(), "{}", text(&out));

    // `up` returned only once the VIP was settled: no polling needed here.
    let holders = vip_holders(&lab);
    assert_eq!(
        holders,
        ["cp1"],
        "the first control plane has the top priority"
    );
    // Data through the VIP reaches an apiserver (the load balancer's backends) and back.
    for from in ["cp2", "w1"] {
        wait_vip_serves(&lab, from);
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
        assert_eq!(
            unit_property(&lab, node, "ActiveState"),
            "active",
            "{node}: agent running"
        );
        assert_sandboxed(&lab, node);
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

    let again = up(&lab, state.path(), &[]);
    assert!(again.status.success(), "{}", text(&again));
    let said = String::from_utf8_lossy(&again.stdout).into_owned()
        + &String::from_utf8_lossy(&again.stderr);
    assert!(
        said.contains("nothing to change"),
        "second run: {}",
        text(&again)
    );
    assert_eq!(
        vip_holders(&lab),
        ["cp1"],
        "a second run must not move the VIP"
    );
    assert!(restarts(&run_log(&again)).is_empty());

    // An upgraded agent: every node gets the new binary, restarted one at a time with the VIP
    // holder last, and `up` again returns with exactly one holder serving through the VIP.
    let (_dir, upgraded) = upgraded_agent();
    let upgrade = ["--agent-binary", upgraded.to_str().unwrap()];
    let third = up(&lab, state.path(), &upgrade);
    assert!(third.status.success(), "{}", text(&third));
    assert_eq!(restarts(&run_log(&third)), ["cp2", "cp3", "cp1"]);
    assert_eq!(vip_holders(&lab).len(), 1);
    wait_vip_serves(&lab, "w1");
    // cp1's restart handed the VIP over; its new agent outranks the holder at once but takes
    // the VIP back only once it has done so for the whole preempt delay (5 s).
    let restarted = agent_started_at(&lab, "cp1");
    let back = wait_sole_holder(&lab, "cp1", Duration::from_secs(15));
    assert_preempted_after_the_delay(restarted, back);

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
    let fourth = up(&lab, state.path(), &upgrade);
    assert!(fourth.status.success(), "{}", text(&fourth));
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

    // The holder's agent crashes. Its VIP has a short kernel lifetime, so it leaves the dead
    // node (keepalived's would stay: two holders) while the VIP moves once, to the
    // highest-priority survivor; systemd restarts the agent (Restart=always), and the node
    // takes its role back after the preempt delay.
    let crashed = unit_property(&lab, "cp1", "MainPID");
    let restarts_before: u64 = unit_property(&lab, "cp1", "NRestarts").parse().unwrap();
    let masters = |node| vrrp_counter(&lab, node, "transitions_to_master");
    let (cp2_before, cp3_before) = (masters("cp2"), masters("cp3"));
    lab.exec_ok("cp1", &["kill", "-KILL", &crashed]);
    wait_for("cp2 alone to hold the VIP", Duration::from_secs(10), || {
        vip_holders(&lab) == ["cp2"]
    });
    assert_eq!(
        (masters("cp2"), masters("cp3")),
        (cp2_before + 1, cp3_before),
        "the VIP moved once, to cp2 (transitions to master of cp2, cp3)"
    );
    wait_vip_serves(&lab, "w1");
    wait_for(
        "systemd to restart cp1's agent",
        Duration::from_secs(10),
        || {
            let pid = unit_property(&lab, "cp1", "MainPID");
            pid != "0" && pid != crashed && unit_property(&lab, "cp1", "ActiveState") == "active"
        },
    );
    assert_eq!(
        unit_property(&lab, "cp1", "NRestarts")
            .parse::<u64>()
            .unwrap(),
        restarts_before + 1,
        "systemd restarted the agent once"
    );
    let restarted = agent_started_at(&lab, "cp1");
    let back = wait_sole_holder(&lab, "cp1", Duration::from_secs(15));
    assert_preempted_after_the_delay(restarted, back);
    wait_vip_serves(&lab, "w1");
}

/// `preempt_delay_ms` as khactl renders it (src/phases/install_agent.rs).
const PREEMPT_DELAY: Duration = Duration::from_secs(5);

/// A restarted agent took the VIP back no sooner than the preempt delay after systemd started
/// it, and not much later: its first health check passes within about a second, then the
/// delay runs, then one Master_Down_Interval. The slack is for a shared 2-core machine running
/// other labs' control planes beside this one (10.6 s was seen there once).
fn assert_preempted_after_the_delay(started: SystemTime, holds: SystemTime) {
    let after = holds.duration_since(started).unwrap_or_default();
    assert!(
        (PREEMPT_DELAY..PREEMPT_DELAY + Duration::from_secs(8)).contains(&after),
        "cp1 took the VIP back {after:?} after its agent started (preempt delay {PREEMPT_DELAY:?})"
    );
}

/// A new build of the agent, as an upgrade brings: the same program with other bytes (a
/// trailing note, which the ELF loader ignores), so its digest differs, in a directory that
/// lives as long as the returned guard.
fn upgraded_agent() -> (tempfile::TempDir, PathBuf) {
    use std::os::unix::fs::PermissionsExt;
    let mut bytes = std::fs::read(agent_bin()).unwrap();
    bytes.extend_from_slice(b"\nkhactl lab test: an upgraded khagent\n");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("khagent");
    std::fs::write(&path, bytes).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    (dir, path)
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
fn an_agent_that_exits_within_a_second_of_its_restart_stops_the_rolling_restart() {
    let (lab, state) = fresh_lab("agent-restart-fail", indexes::AGENT_RESTART_FAIL, 3);
    let first = up(&lab, state.path(), &[]);
    assert!(first.status.success(), "{}", text(&first));
    assert_eq!(vip_holders(&lab), ["cp1"]);
    wait_vip_serves(&lab, "cp3");

    // On cp2 something grabs the agent's port on the VIP between the old agent's stop and
    // the upgraded one's start: the restarted agent cannot bind and exits, after systemd has
    // reported it active. A drop-in starts the grabber in the unit itself just before the
    // agent (IP_FREEBIND (15): cp2 does not hold the VIP), and starts the agent half a second
    // late, as on a loaded node, so that systemd (and khactl) see it active before it exits,
    // well within the second a restart must hold: the case the window is for. It takes effect
    // at the next (re)start only; the grabber dies with the unit's cgroup each time.
    lab.write_file(
        "cp2",
        PORT_GRABBER,
        "#!/usr/bin/python3\nimport socket, sys, time\ns = socket.socket()\n\
         s.setsockopt(socket.SOL_IP, 15, 1)\ns.bind((sys.argv[1], int(sys.argv[2])))\n\
         s.listen()\ntime.sleep(600)\n",
    );
    lab.exec_ok("cp2", &["chmod", "0755", PORT_GRABBER]);
    lab.exec_ok("cp2", &["mkdir", "-p", AGENT_DROP_IN_DIR]);
    lab.write_file(
        "cp2",
        &format!("{AGENT_DROP_IN_DIR}/late.conf"),
        &format!(
            "[Service]\nExecStart=\nExecStart=/bin/sh -c '{PORT_GRABBER} {} {LB_PORT} & \
             sleep 0.5; exec /usr/local/bin/khagent --config /etc/khagent/khagent.yaml'\n",
            lab.vip()
        ),
    );
    lab.exec_ok("cp2", &["systemctl", "daemon-reload"]);
    let (_dir, upgraded) = upgraded_agent();
    let upgrade = ["--agent-binary", upgraded.to_str().unwrap()];

    let failed = up(&lab, state.path(), &upgrade);
    let report = text(&failed);
    assert_eq!(failed.status.code(), Some(1), "{report}");
    // systemd reported cp2's agent active (Type=simple: once it forked), so `systemctl
    // restart` succeeded; khactl saw it active, then saw it stop within the second, and did
    // not count the restart as done.
    assert!(
        report.contains("cp2: FAILED: restart service khagent")
            && report.contains("keeps stopping after it starts"),
        "cp2's restart is the failure, seen active and then stopping: {report}"
    );
    for skipped in ["cp3", "cp1"] {
        assert!(
            report.contains(&format!(
                "{skipped}: FAILED: not restarted or started: the rolling restart stopped at cp2"
            )),
            "{skipped} named as not restarted: {report}"
        );
    }
    assert_eq!(
        restarts(&run_log(&failed)),
        ["cp2"],
        "the rolling restart stopped at the first failure"
    );
    // Meanwhile systemd kept restarting it (Restart=always), and it kept exiting.
    let log = lab.unit_log("cp2", "khagent.service");
    assert!(
        log.contains("Address already in use"),
        "cp2's agent exits on the taken port:\n{log}"
    );
    let crash_loops: u64 = unit_property(&lab, "cp2", "NRestarts").parse().unwrap();
    assert!(
        crash_loops >= 2,
        "systemd restarted cp2's agent {crash_loops} times"
    );
    // The two agents not restarted still serve the VIP.
    assert_eq!(vip_holders(&lab), ["cp1"]);
    wait_vip_serves(&lab, "cp3");
    for node in CONTROL_PLANES {
        assert!(
            has_restart_mark(&lab, node),
            "{node}: new files, restart pending"
        );
    }

    // Once the drop-in is gone (and the grabber with it), systemd's next restart of cp2's
    // agent holds by itself; the next run restarts all three (their marks are pending: cp2's
    // mark cannot tell which files its agent runs), the holder last.
    lab.exec_ok("cp2", &["rm", "-r", AGENT_DROP_IN_DIR]);
    lab.exec_ok("cp2", &["systemctl", "daemon-reload"]);
    wait_for(
        "systemd to bring cp2's agent up again",
        Duration::from_secs(10),
        || {
            unit_property(&lab, "cp2", "ActiveState") == "active"
                && lab
                    .exec_ok("cp2", &["ss", "-Hltn"])
                    .contains(&format!(":{LB_PORT}"))
        },
    );
    let fixed = up(&lab, state.path(), &upgrade);
    assert!(fixed.status.success(), "{}", text(&fixed));
    assert_eq!(restarts(&run_log(&fixed)), ["cp2", "cp3", "cp1"]);
    for node in CONTROL_PLANES {
        assert!(!has_restart_mark(&lab, node), "{node}: mark cleared");
    }
    assert_eq!(vip_holders(&lab).len(), 1);
    wait_vip_serves(&lab, "cp3");
}

/// A test's program that takes a port on a node and holds it.
const PORT_GRABBER: &str = "/usr/local/bin/khalab-port-grabber";

/// Where a test adds its own drop-ins to the agent's unit (khactl manages only the unit).
const AGENT_DROP_IN_DIR: &str = "/etc/systemd/system/khagent.service.d";

/// The pid of the khagent running on `node`, as systemd knows it.
fn agent_pid(lab: &Lab, node: &str) -> String {
    unit_property(lab, node, "MainPID")
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
    let first = khactl_with(&lab, &["up"], &three, state.path(), &[]);
    assert!(first.status.success(), "{}", text(&first));
    assert_eq!(vip_holders(&lab), ["cp1"]);
    let pids: Vec<String> = CONTROL_PLANES.iter().map(|n| agent_pid(&lab, n)).collect();

    let grown = up(&lab, state.path(), &[]);
    assert!(grown.status.success(), "{}", text(&grown));
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
        let status = agent_page(&lab, node, "/status").to_string();
        assert!(
            status.contains("\"cp4\""),
            "{node} balances to cp4 now: {status}"
        );
        assert!(!has_restart_mark(&lab, node), "{node}: mark cleared");
    }
    assert_eq!(vip_holders(&lab), ["cp1"], "a reload moves no VIP");
}

/// An inventory on TEST-NET-1 (192.0.2.0/24, RFC 5737: never a lab's or anyone's), and a
/// PATH whose first `ssh` only records that it was run: `up` must stop before connecting,
/// and would send nothing anywhere if it did not.
fn unreachable_setup(dir: &Path) -> (PathBuf, String) {
    let path = dir.join("inventory.yaml");
    let text = "apiVersion: khactl.io/v1alpha1\nkind: Inventory\n\
                cluster: { name: t, kubernetesVersion: v1.31.2 }\n\
                vip: { address: 192.0.2.100 }\n\
                nodes:\n  - { name: cp1, address: 192.0.2.11, role: control-plane }\n";
    std::fs::write(&path, text).unwrap();
    let bin = dir.join("tripwire");
    std::fs::create_dir(&bin).unwrap();
    let ssh = bin.join("ssh");
    std::fs::write(
        &ssh,
        format!(
            "#!/bin/sh\necho \"$@\" >> {}\nexit 255\n",
            dir.join("ssh-ran").display()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&ssh, std::fs::Permissions::from_mode(0o755)).unwrap();
    let path_var = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    (path, path_var)
}

/// `khactl up` with the tripwire PATH; returns its output and the ssh command lines it ran.
fn up_with_tripwire(dir: &Path, agent_binary: &Path) -> (Output, String) {
    let (inventory, path_var) = unreachable_setup(dir);
    let out = Command::new(khactl_bin())
        .arg("up")
        .arg("-i")
        .arg(&inventory)
        .arg("--state-dir")
        .arg(dir.join("state"))
        .arg("--agent-binary")
        .arg(agent_binary)
        .env_remove("KHACTL_STATE_DIR")
        .env("PATH", path_var)
        .output()
        .unwrap();
    let ran = std::fs::read_to_string(dir.join("ssh-ran")).unwrap_or_default();
    (out, ran)
}

#[test]
fn a_missing_agent_binary_stops_up_before_any_connection() {
    let dir = tempfile::tempdir().unwrap();
    let (out, ssh_ran) = up_with_tripwire(dir.path(), &dir.path().join("no-such-khagent"));
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert_eq!(ssh_ran, "", "ssh ran before the binary was refused");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no-such-khagent"), "{}", text(&out));
    assert!(err.contains("cargo build --release"), "{}", text(&out));

    // The tripwire is live: with a real agent binary, `up` goes on to connect, and the only
    // `ssh` it finds is the tripwire's.
    let again = tempfile::tempdir().unwrap();
    let (out, ssh_ran) = up_with_tripwire(again.path(), &agent_bin());
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        ssh_ran.contains("192.0.2.11"),
        "{ssh_ran:?}: {}",
        text(&out)
    );
}

#[test]
fn a_non_executable_agent_binary_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("khagent");
    std::fs::write(&script, "#!/bin/sh\necho not an agent\n").unwrap();
    let (out, ssh_ran) = up_with_tripwire(dir.path(), &script);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert_eq!(ssh_ran, "", "ssh ran before the binary was refused");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not a Linux executable"),
        "{}",
        text(&out)
    );
}
