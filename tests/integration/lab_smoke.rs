//! The lab itself, as the other integration tests rely on it: nodes reachable over real ssh
//! with the lab key, isolated from each other and from this machine (files, sysctls,
//! hostnames), services through `systemctl`, and a teardown that leaves nothing behind.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use crate::support::lab::{KHALAB_ROOT, LabClaim, lab_sh};
use crate::support::{Lab, indexes, repo_root, require_root, wait_for};

/// Two nodes (cp1, w1) for the read-mostly checks; tests that break sshd build their own.
fn lab() -> Arc<Lab> {
    Lab::shared("smoke", indexes::LAB_SMOKE, 1, 1)
}

fn host_sysctl(key: &str) -> String {
    let path = format!("/proc/sys/{}", key.replace('.', "/"));
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {path}: {e}"))
        .trim()
        .to_owned()
}

fn node_sysctl(lab: &Lab, node: &str, key: &str) -> String {
    lab.exec_ok(node, &["sysctl", "-n", key]).trim().to_owned()
}

fn ssh_stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn nodes_accept_the_lab_key_over_ssh_and_answer_with_their_own_hostname() {
    let lab = lab();
    let tmp = tempfile::tempdir().unwrap();
    let known_hosts = tmp.path().join("known_hosts");
    for node in lab.nodes() {
        let out = lab
            .ssh_command(&node.name, &known_hosts)
            .arg("hostname")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "ssh to {}: {}",
            node.name,
            ssh_stderr(&out)
        );
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), node.name);
    }
    // Each node presents a key of its own, never this machine's.
    let learned = std::fs::read_to_string(&known_hosts).unwrap();
    let keys: Vec<&str> = learned
        .lines()
        .filter_map(|l| l.split_whitespace().nth(2))
        .collect();
    assert_eq!(
        keys.len(),
        lab.nodes().len(),
        "one host key per node:\n{learned}"
    );
    assert_ne!(keys[0], keys[1], "nodes share a host key");
    if let Ok(host_key) = std::fs::read_to_string("/etc/ssh/ssh_host_ed25519_key.pub") {
        let host_key = host_key.split_whitespace().nth(1).unwrap().to_owned();
        assert!(
            !keys.contains(&host_key.as_str()),
            "a node presents this machine's host key"
        );
    }
}

#[test]
fn ssh_without_the_lab_key_is_refused() {
    let lab = lab();
    let tmp = tempfile::tempdir().unwrap();
    let stranger = tmp.path().join("id_ed25519");
    let keygen = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&stranger)
        .status()
        .unwrap();
    assert!(keygen.success());
    lab.assert_up();
    let out = Command::new("ssh")
        .args(["-F", "/dev/null", "-i"])
        .arg(&stranger)
        .arg("-o")
        .arg(format!(
            "UserKnownHostsFile={}",
            tmp.path().join("known_hosts").display()
        ))
        .args([
            "-o",
            "StrictHostKeyChecking=accept-new",
            "-o",
            "IdentitiesOnly=yes",
        ])
        .args(["-o", "BatchMode=yes", "-o", "ConnectTimeout=5"])
        .arg(format!("root@{}", lab.node_address("cp1")))
        .arg("true")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(255), "a stranger's key got in");
    assert!(
        ssh_stderr(&out).contains("Permission denied"),
        "{}",
        ssh_stderr(&out)
    );
}

#[test]
fn each_node_has_its_hostname_and_address_and_no_default_route() {
    let lab = lab();
    for node in lab.nodes() {
        assert_eq!(lab.exec_ok(&node.name, &["hostname"]).trim(), node.name);
        let addrs = lab.exec_ok(
            &node.name,
            &["ip", "-4", "-o", "addr", "show", "dev", "eth0"],
        );
        assert!(
            addrs.contains(&format!(" {}/24 ", node.address)),
            "{}: {addrs}",
            node.name
        );
        let routes = lab.exec_ok(&node.name, &["ip", "-4", "route", "show"]);
        assert!(
            !routes.contains("default"),
            "{} has a default route:\n{routes}",
            node.name
        );
        assert!(
            routes.contains("224.0.0.0/4 dev eth0"),
            "{} lacks the multicast route",
            node.name
        );
    }
    assert_ne!(
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .unwrap()
            .trim(),
        "cp1",
        "a node's hostname leaked to the host"
    );
}

#[test]
fn a_file_written_on_one_node_is_absent_on_the_other_node_and_on_the_host() {
    let lab = lab();
    let path = "/etc/khalab-smoke-isolation.conf";
    lab.write_file("cp1", path, "written on cp1\n");

    assert_eq!(
        lab.read_file("cp1", path).as_deref(),
        Some("written on cp1\n")
    );
    assert_eq!(lab.read_file("w1", path), None);
    assert!(!Path::new(path).exists(), "{path} appeared on the host");
    // The upper dir is the oracle of what changed in a node.
    assert!(lab.changed_paths("cp1").contains(Path::new(path)));
    assert!(!lab.changed_paths("w1").contains(Path::new(path)));
    assert_eq!(
        std::fs::read_to_string(lab.upper_dir("cp1").join(&path[1..])).unwrap(),
        "written on cp1\n"
    );
}

#[test]
fn upper_dir_matches_lab_sh_and_sshd_logins_leave_it_unchanged() {
    let lab = lab();
    let out = lab_sh().args(["upper", lab.name(), "w1"]).output().unwrap();
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        lab.upper_dir("w1").to_str().unwrap()
    );

    let tmp = tempfile::tempdir().unwrap();
    let ssh = lab
        .ssh_command("w1", &tmp.path().join("known_hosts"))
        .arg("true")
        .output()
        .unwrap();
    assert!(ssh.status.success(), "{}", ssh_stderr(&ssh));
    // Other tests share this lab and write their own files; what a login could write (login
    // records, root's dotfiles, host keys) must not show up.
    let noise: Vec<_> = lab
        .changed_paths("w1")
        .into_iter()
        .filter(|p| {
            p.starts_with("/root")
                || p.starts_with("/etc/ssh")
                || p.starts_with("/var/log/wtmp")
                || p.starts_with("/var/log/lastlog")
                || p.starts_with("/var/log/btmp")
        })
        .collect();
    assert!(
        noise.is_empty(),
        "an ssh login wrote into w1's upper dir: {noise:?}"
    );
}

#[test]
fn ip_forward_set_in_one_node_changes_that_node_only() {
    let lab = lab();
    let host_before = host_sysctl("net.ipv4.ip_forward");
    // Nodes start like fresh hosts, whatever this machine has.
    assert_eq!(node_sysctl(&lab, "w1", "net.ipv4.ip_forward"), "0");
    lab.exec_ok("cp1", &["sysctl", "-w", "net.ipv4.ip_forward=1"]);
    // procps sysctl exits 0 even when a write fails: read the value back.
    assert_eq!(node_sysctl(&lab, "cp1", "net.ipv4.ip_forward"), "1");
    assert_eq!(node_sysctl(&lab, "w1", "net.ipv4.ip_forward"), "0");
    assert_eq!(host_sysctl("net.ipv4.ip_forward"), host_before);
    lab.exec_ok("cp1", &["sysctl", "-w", "net.ipv4.ip_forward=0"]);
}

#[test]
fn the_bridge_routes_nothing_from_nodes_off_the_machine() {
    let lab = lab();
    // Routing input checks forwarding on the incoming interface: off on the bridge, nothing a
    // node sends is routed on, even if this machine forwards between its other interfaces.
    let forwarding = format!("net.ipv4.conf.{}.forwarding", lab.bridge_name());
    assert_eq!(host_sysctl(&forwarding), "0");
    let bridge = lab.bridge_name();
    let ports = std::fs::read_dir(format!("/sys/class/net/{bridge}/brif"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect::<Vec<_>>();
    let veth = format!("khl{}n", lab.index());
    assert!(
        !ports.is_empty() && ports.iter().all(|p| p.starts_with(&veth)),
        "the bridge has a port that is not a lab veth: {ports:?}"
    );
}

#[test]
fn vm_sysctl_written_in_a_node_does_not_reach_the_host_or_other_nodes() {
    let lab = lab();
    let host_before = host_sysctl("vm.swappiness");
    let w1_before = node_sysctl(&lab, "w1", "vm.swappiness");
    let new = if host_before == "17" { "18" } else { "17" };

    lab.exec_ok("cp1", &["sysctl", "-w", &format!("vm.swappiness={new}")]);

    assert_eq!(node_sysctl(&lab, "cp1", "vm.swappiness"), new);
    assert_eq!(
        host_sysctl("vm.swappiness"),
        host_before,
        "a node changed the machine's vm.swappiness"
    );
    assert_eq!(node_sysctl(&lab, "w1", "vm.swappiness"), w1_before);
    // Namespaced kernel entries stay live under the snapshot: the hostname is the node's.
    assert_eq!(node_sysctl(&lab, "w1", "kernel.hostname"), "w1");
}

#[test]
fn systemctl_starts_and_stops_a_unit_in_a_node() {
    let lab = lab();
    lab.write_file(
        "w1",
        "/etc/systemd/system/khalab-smoke.service",
        "[Unit]\nDescription=khalab smoke\n[Service]\nType=simple\nExecStart=/bin/sleep 4242\n\
         [Install]\nWantedBy=multi-user.target\n",
    );
    lab.exec_ok("w1", &["systemctl", "daemon-reload"]);
    lab.exec_ok(
        "w1",
        &["systemctl", "enable", "--now", "khalab-smoke.service"],
    );

    let active = lab.exec("w1", &["systemctl", "is-active", "khalab-smoke.service"]);
    assert_eq!(String::from_utf8_lossy(&active.stdout).trim(), "active");
    assert!(
        lab.exec("w1", &["pgrep", "-f", "sleep 4242"])
            .status
            .success()
    );
    assert!(
        !lab.exec("cp1", &["pgrep", "-f", "sleep 4242"])
            .status
            .success(),
        "unit ran on cp1"
    );
    assert!(
        lab.changed_paths("w1").contains(Path::new(
            "/etc/systemd/system/multi-user.target.wants/khalab-smoke.service"
        )),
        "enable did not link the unit"
    );

    lab.exec_ok("w1", &["systemctl", "stop", "khalab-smoke.service"]);
    let inactive = lab.exec("w1", &["systemctl", "is-active", "khalab-smoke.service"]);
    assert!(!inactive.status.success());
    assert!(
        !lab.exec("w1", &["pgrep", "-f", "sleep 4242"])
            .status
            .success()
    );
}

#[test]
fn exec_passes_exit_status_stdin_and_stdout_through() {
    let lab = lab();
    assert_eq!(
        lab.exec("cp1", &["sh", "-c", "exit 7"]).status.code(),
        Some(7)
    );
    let out = lab.exec_with_input("cp1", &["tr", "a-z", "A-Z"], b"hello");
    assert_eq!(out.stdout, b"HELLO");
    // Commands see the node's processes only: its PID 1 is tini.
    let comm = lab.exec_ok("cp1", &["cat", "/proc/1/comm"]);
    assert_eq!(comm.trim(), "tini");
}

#[test]
fn lab_inventory_is_what_lab_sh_prints_and_a_valid_khactl_inventory() {
    let lab = lab();
    let written = std::fs::read_to_string(lab.inventory_path()).unwrap();
    let printed = lab_sh().args(["inventory", lab.name()]).output().unwrap();
    assert!(printed.status.success());
    assert_eq!(String::from_utf8_lossy(&printed.stdout), written);

    let inventory = khactl::inventory::parse(&written)
        .unwrap_or_else(|e| panic!("lab inventory rejected by khactl: {e}\n{written}"))
        .inventory;
    let nodes: Vec<(String, String)> = inventory
        .nodes
        .iter()
        .map(|n| (n.name.to_string(), n.address.to_string()))
        .collect();
    let expected: Vec<(String, String)> = lab
        .nodes()
        .iter()
        .map(|n| (n.name.clone(), n.address.to_string()))
        .collect();
    assert_eq!(nodes, expected);
    assert_eq!(inventory.vip.address, lab.vip());
    assert_eq!(
        inventory.ssh.identity_file.as_deref(),
        Some(lab.ssh_key_path().as_path())
    );
}

#[test]
fn committed_lab_inventory_is_the_default_lab_s_inventory() {
    require_root();
    let printed = lab_sh()
        .args([
            "inventory",
            "lab",
            "--index",
            "1",
            "--control-planes",
            "3",
            "--workers",
            "2",
        ])
        .output()
        .unwrap();
    assert!(
        printed.status.success(),
        "{}",
        String::from_utf8_lossy(&printed.stderr)
    );
    let committed = std::fs::read_to_string(repo_root().join("inventories/lab.yaml")).unwrap();
    assert_eq!(String::from_utf8_lossy(&printed.stdout), committed);
    khactl::inventory::parse(&committed).unwrap();
}

#[test]
fn stopped_sshd_refuses_connections_and_a_new_host_key_is_detected() {
    let lab = Lab::up("smoke-sshd", indexes::LAB_SMOKE_SSHD, 1, 0);
    let tmp = tempfile::tempdir().unwrap();
    let known_hosts = tmp.path().join("known_hosts");
    let ssh_true = |known_hosts: &Path| {
        lab.ssh_command("cp1", known_hosts)
            .arg("true")
            .output()
            .unwrap()
    };
    assert!(ssh_true(&known_hosts).status.success());

    lab.stop_sshd("cp1");
    let refused = ssh_true(&known_hosts);
    assert_eq!(refused.status.code(), Some(255));
    assert!(
        ssh_stderr(&refused).contains("Connection refused"),
        "{}",
        ssh_stderr(&refused)
    );

    lab.start_sshd("cp1");
    assert!(ssh_true(&known_hosts).status.success());

    lab.regen_hostkey("cp1");
    let changed = ssh_true(&known_hosts);
    assert_eq!(
        changed.status.code(),
        Some(255),
        "a changed host key was accepted"
    );
    assert!(
        ssh_stderr(&changed).contains("REMOTE HOST IDENTIFICATION HAS CHANGED"),
        "{}",
        ssh_stderr(&changed)
    );
    assert!(
        ssh_true(&tmp.path().join("fresh_known_hosts"))
            .status
            .success()
    );
}

#[test]
fn down_leaves_no_namespace_bridge_link_mount_or_state_behind() {
    let lab = Lab::up("smoke-down", indexes::LAB_SMOKE_TEARDOWN, 1, 1);
    assert!(lab.is_up());
    drop(lab);
    assert_nothing_left("smoke-down", indexes::LAB_SMOKE_TEARDOWN);
}

#[test]
fn down_removes_a_half_built_lab_and_status_notices_a_dead_node() {
    let (name, index) = ("smoke-half", indexes::LAB_SMOKE_HALF);
    let _claim = LabClaim::acquire(name, index);
    assert!(lab_sh().args(["down", name]).status().unwrap().success());
    // No time to wait for sshd and no clean-up on failure: up stops with its nodes booted and
    // nothing else done.
    let up = lab_sh()
        .env("KHALAB_KEEP_FAILED", "1")
        .env("KHALAB_SSHD_DEADLINE", "0")
        .args(["up", name, "--index", &index.to_string()])
        .args(["--control-planes", "1", "--workers", "1"])
        .output()
        .unwrap();
    assert!(!up.status.success(), "up was meant to fail");
    assert!(Path::new(&format!("/run/netns/khl_{name}_w1")).exists());

    let status = || lab_sh().args(["status", name]).output().unwrap();
    wait_for("both nodes up", Duration::from_secs(20), || {
        status().status.success()
    });
    let pid = std::fs::read_to_string(format!("/var/lib/khalab/{name}/w1/pid")).unwrap();
    let killed = Command::new("kill")
        .args(["-KILL", pid.trim()])
        .status()
        .unwrap();
    assert!(killed.success());
    wait_for("status to report w1 down", Duration::from_secs(10), || {
        let out = status();
        !out.status.success()
            && String::from_utf8_lossy(&out.stdout).contains("w1 10.200.")
            && String::from_utf8_lossy(&out.stdout).contains("DOWN")
    });

    let down = lab_sh().args(["down", name]).output().unwrap();
    assert!(
        down.status.success(),
        "{}",
        String::from_utf8_lossy(&down.stderr)
    );
    assert_nothing_left(name, index);
}

/// No network namespace, bridge, veth, mount, state dir or node process of the lab remains.
fn assert_nothing_left(name: &str, index: u8) {
    let names_in = |dir: &str| -> Vec<String> {
        std::fs::read_dir(dir)
            .map(|d| {
                d.filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default()
    };
    let netns = names_in("/run/netns");
    let ns_prefix = format!("khl_{name}_");
    assert!(
        !netns.iter().any(|n| n.starts_with(&ns_prefix)),
        "netns left: {netns:?}"
    );
    let links = names_in("/sys/class/net");
    let (bridge, veth) = (format!("khl{index}br"), format!("khl{index}n"));
    assert!(
        !links.iter().any(|l| *l == bridge || l.starts_with(&veth)),
        "links left: {links:?}"
    );
    let dir = Path::new(KHALAB_ROOT).join(name);
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !mounts.contains(dir.to_str().unwrap()),
        "mounts left under {}",
        dir.display()
    );
    assert!(!dir.exists(), "{} left behind", dir.display());
    let nodes = Command::new("pgrep")
        .args(["-f", &format!("__boot {name} ")])
        .output()
        .unwrap();
    assert!(!nodes.status.success(), "node processes left");
}
