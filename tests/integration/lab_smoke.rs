//! The lab itself, as the other integration tests rely on it: nodes that boot the real systemd
//! to `running` (or OpenRC, for nodes built with `--openrc`), reachable over real ssh with the lab key, isolated from each other and from
//! this machine (files, sysctls, hostnames, the host's enabled services), powered off, booted
//! again and frozen like machines, and a teardown that leaves nothing behind.

use std::collections::BTreeMap;
use std::io::Read;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use crate::support::lab::{KHALAB_ROOT, LabClaim, lab_sh};
use crate::support::{Lab, LabOptions, indexes, repo_root, require_root, wait_for};

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
    // This machine's own host keys (install-deps.sh installs openssh-server, which makes
    // them) are neither presented nor even visible in a node: only the node's own pair is.
    let host_keys: Vec<String> = std::fs::read_dir("/etc/ssh")
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            let name = p.file_name().unwrap().to_string_lossy();
            name.starts_with("ssh_host_") && name.ends_with("_key.pub")
        })
        .map(|p| {
            let line = std::fs::read_to_string(p).unwrap();
            line.split_whitespace().nth(1).unwrap().to_owned()
        })
        .collect();
    assert!(
        !host_keys.is_empty(),
        "this machine has no ssh host key to compare with (tests/lab/install-deps.sh)"
    );
    for key in &host_keys {
        assert!(
            !keys.contains(&key.as_str()),
            "a node presents this machine's host key"
        );
    }
    for node in lab.nodes() {
        let visible = lab.exec_ok(&node.name, &["sh", "-c", "ls /etc/ssh/ssh_host_*"]);
        assert_eq!(
            visible.split_whitespace().collect::<Vec<_>>(),
            [
                "/etc/ssh/ssh_host_ed25519_key",
                "/etc/ssh/ssh_host_ed25519_key.pub"
            ],
            "{}",
            node.name
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
fn every_node_runs_systemd_with_ssh_and_none_of_the_services_this_machine_enabled() {
    let lab = lab();
    // Services this machine may have enabled (install-deps.sh installs them), plus whatever its
    // multi-user.target.wants holds: the node's own wants dirs are opaque.
    let mut host_enabled: Vec<String> = ["keepalived", "haproxy", "nginx", "etcd"]
        .map(|u| format!("{u}.service"))
        .into();
    if let Ok(dir) = std::fs::read_dir("/etc/systemd/system/multi-user.target.wants") {
        host_enabled.extend(
            dir.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|u| u != "ssh.service" && u.ends_with(".service")),
        );
    }
    for node in lab.nodes() {
        let n = node.name.as_str();
        let state = lab.exec(n, &["systemctl", "is-system-running"]);
        assert_eq!(
            String::from_utf8_lossy(&state.stdout).trim(),
            "running",
            "{n}: failed units:\n{}",
            lab.exec_ok(n, &["systemctl", "--failed", "--no-legend"])
        );
        assert_eq!(lab.exec_ok(n, &["cat", "/proc/1/comm"]).trim(), "systemd");
        // The node's cgroup is the root of its cgroup namespace: systemd manages that subtree
        // (PID 1 in init.scope), not this machine's cgroups. (On a machine that also mounts
        // cgroup v1 controllers, their lines come first.)
        let cgroup = lab.exec_ok(n, &["cat", "/proc/1/cgroup"]);
        assert_eq!(
            cgroup.lines().find(|l| l.starts_with("0::")),
            Some("0::/init.scope"),
            "{cgroup}"
        );
        assert_eq!(
            lab.exec_ok(n, &["systemctl", "is-active", "ssh.service"])
                .trim(),
            "active"
        );
        for unit in &host_enabled {
            let state = lab.exec(n, &["systemctl", "is-active", unit]);
            assert_ne!(
                String::from_utf8_lossy(&state.stdout).trim(),
                "active",
                "{n} runs {unit}, which only this machine enabled"
            );
        }
    }
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
    // Commands see the node's processes only: its PID 1 is systemd.
    let comm = lab.exec_ok("cp1", &["cat", "/proc/1/comm"]);
    assert_eq!(comm.trim(), "systemd");
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
    assert_eq!(inventory.vip.as_ref().unwrap().address, lab.vip());
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
    let lab = Lab::bare("smoke-sshd", indexes::LAB_SMOKE_SSHD, 1, 0);
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
    let lab = Lab::bare("smoke-down", indexes::LAB_SMOKE_TEARDOWN, 1, 1);
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
    // Nor a cgroup, wherever the cgroup2 hierarchy is mounted.
    for line in mounts.lines() {
        let (mount, fs) = line.split_once(" - ").unwrap();
        if fs.starts_with("cgroup2 ") {
            let cgroup = Path::new(mount.split(' ').nth(4).unwrap())
                .join("khalab")
                .join(name);
            assert!(!cgroup.exists(), "cgroup {} left behind", cgroup.display());
        }
    }
    let nodes = Command::new("pgrep")
        .args(["-f", &format!("__boot {name} ")])
        .output()
        .unwrap();
    assert!(!nodes.status.success(), "node processes left");
}

/// `fs.*` and `kernel.*` values of this machine, except counters that change by themselves.
fn host_fs_and_kernel_sysctls() -> BTreeMap<PathBuf, Option<String>> {
    const COUNTERS: [&str; 10] = [
        "fs/dentry-state",
        "fs/dentry-negative",
        "fs/file-nr",
        "fs/inode-nr",
        "fs/inode-state",
        "fs/aio-nr",
        "kernel/ns_last_pid",
        "kernel/pty/nr",
        "kernel/random/uuid",
        "kernel/random/entropy_avail",
    ];
    let mut values = BTreeMap::new();
    let mut dirs = vec![
        PathBuf::from("/proc/sys/fs"),
        PathBuf::from("/proc/sys/kernel"),
    ];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            let path = entry.path();
            let rel = path.strip_prefix("/proc/sys").unwrap().to_str().unwrap();
            if COUNTERS.contains(&rel) || rel.starts_with("fs/quota/") {
                continue;
            }
            if entry.file_type().unwrap().is_dir() {
                dirs.push(path);
            } else {
                // Write-only entries cannot be read: they still must not become readable.
                values.insert(path.clone(), std::fs::read_to_string(&path).ok());
            }
        }
    }
    values
}

/// Connects to the node's sshd and waits up to `limit` for its banner.
fn sshd_banner(lab: &Lab, node: &str, limit: Duration) -> (TcpStream, Option<String>) {
    lab.assert_up();
    let addr = SocketAddr::from((lab.node_address(node), 22));
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).unwrap();
    stream.set_read_timeout(Some(limit)).unwrap();
    let mut buf = [0u8; 64];
    let banner = match stream.read(&mut buf) {
        Ok(n) if n > 0 => Some(String::from_utf8_lossy(&buf[..n]).into_owned()),
        _ => None,
    };
    (stream, banner)
}

#[test]
fn a_node_powers_off_cleanly_or_by_a_power_cut_boots_again_with_its_files_and_freezes() {
    require_root();
    let host_before = host_fs_and_kernel_sysctls();
    // `up --setup` installs a unit (enabled) and a file of its own before the node boots.
    let tmp = tempfile::tempdir().unwrap();
    let setup = tmp.path().join("setup.sh");
    std::fs::write(
        &setup,
        r#"#!/bin/sh
set -e
root=$1
mkdir -p "$root/etc/systemd/system/multi-user.target.wants"
echo "$2 $3" > "$root/etc/khalab-setup"
printf '[Service]\nExecStart=/bin/sleep infinity\n[Install]\nWantedBy=multi-user.target\n' \
    > "$root/etc/systemd/system/khalab-setup.service"
ln -s ../khalab-setup.service "$root/etc/systemd/system/multi-user.target.wants/"
"#,
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&setup, std::fs::Permissions::from_mode(0o755)).unwrap();
    let lab = Lab::up_with_setup("smoke-power", indexes::LAB_SMOKE_POWER, 1, 0, Some(&setup));
    assert_eq!(
        lab.read_file("cp1", "/etc/khalab-setup").as_deref(),
        Some("cp1 control-plane\n")
    );
    assert_eq!(
        lab.exec_ok("cp1", &["systemctl", "is-active", "khalab-setup.service"])
            .trim(),
        "active",
        "a unit the setup script enabled starts at boot"
    );
    // Booting systemd leaves the upper dir empty (and what the setup script installed is
    // below it): the upper dir holds only what changes afterwards.
    assert_eq!(
        lab.changed_paths("cp1"),
        Default::default(),
        "booting wrote into the upper dir"
    );

    // systemd-sysctl is masked in nodes; run by hand it writes Debian's global values
    // (fs.protected_*, kernel.pid_max), which the node must keep to itself.
    lab.exec_ok("cp1", &["/lib/systemd/systemd-sysctl"]);
    lab.exec_ok("cp1", &["sysctl", "-w", "fs.protected_regular=1"]);
    assert_eq!(
        lab.exec_ok("cp1", &["cat", "/proc/sys/fs/protected_regular"])
            .trim(),
        "1"
    );

    // A unit whose ExecStop leaves a mark on disk tells a clean poweroff from a power cut.
    lab.write_file(
        "cp1",
        "/etc/systemd/system/khalab-stopmark.service",
        "[Service]\nType=oneshot\nRemainAfterExit=yes\nExecStart=/bin/true\n\
         ExecStop=/bin/sh -c 'echo stopped > /var/lib/khalab-stopped'\n\
         [Install]\nWantedBy=multi-user.target\n",
    );
    lab.exec_ok(
        "cp1",
        &["systemctl", "enable", "--now", "khalab-stopmark.service"],
    );
    lab.write_file("cp1", "/run/khalab-volatile", "gone at the next boot\n");
    let status = || lab_sh().args(["status", lab.name()]).output().unwrap();
    let stopped = Path::new("/var/lib/khalab-stopped");

    lab.stop_node("cp1", false);
    assert_eq!(lab.node_pid("cp1"), None);
    let down = status();
    assert!(!down.status.success());
    assert!(String::from_utf8_lossy(&down.stdout).contains("cp1 10.200."));
    assert!(
        lab.changed_paths("cp1").contains(stopped),
        "a clean poweroff stops every unit first"
    );

    lab.start_node("cp1");
    assert!(status().status.success());
    assert_eq!(lab.read_file("cp1", "/run/khalab-volatile"), None);
    assert_eq!(
        lab.exec_ok(
            "cp1",
            &["systemctl", "is-active", "khalab-stopmark.service"]
        )
        .trim(),
        "active",
        "the unit enabled before the poweroff starts at boot"
    );
    lab.exec_ok("cp1", &["rm", "/var/lib/khalab-stopped"]);
    lab.stop_node("cp1", true);
    assert!(
        !lab.changed_paths("cp1").contains(stopped),
        "a power cut stops nothing"
    );
    lab.start_node("cp1");

    // Frozen: the kernel still completes the TCP handshake, but sshd never answers; thawed,
    // it answers on the same connection.
    lab.set_frozen("cp1", true);
    let frozen = status();
    assert!(!frozen.status.success());
    assert!(String::from_utf8_lossy(&frozen.stdout).contains("FROZEN"));
    let (mut stream, banner) = sshd_banner(&lab, "cp1", Duration::from_millis(500));
    assert_eq!(banner, None, "a frozen node's sshd answered");
    lab.set_frozen("cp1", false);
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut buf = [0u8; 8];
    stream.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"SSH-2.0-");

    drop(lab);
    let host_after = host_fs_and_kernel_sysctls();
    let changed: Vec<_> = host_before
        .iter()
        .filter(|(key, before)| host_after.get(*key) != Some(before))
        .map(|(key, before)| (key, before, host_after.get(key)))
        .collect();
    assert!(
        changed.is_empty(),
        "this machine's sysctls changed while the lab lived (key, before, after): {changed:?}"
    );
    assert!(
        host_before.len() > 50,
        "only {} sysctls read",
        host_before.len()
    );
}

/// The PID of the one process whose command line is exactly `cmdline` in the node, if any.
fn pid_of(lab: &Lab, node: &str, cmdline: &str) -> Option<String> {
    let out = lab.exec(node, &["pgrep", "-x", "-f", cmdline]);
    let pids = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert!(!pids.contains('\n'), "{node}: several {cmdline:?}: {pids}");
    (!pids.is_empty()).then_some(pids)
}

#[test]
fn an_openrc_node_boots_supervises_its_services_and_powers_off_cleanly() {
    let lab = Lab::up_with(
        "orc-smoke",
        indexes::LAB_SMOKE_OPENRC,
        1,
        1,
        LabOptions {
            openrc: &["w1"],
            ..LabOptions::default()
        },
    );
    assert!(lab.is_openrc("w1") && !lab.is_openrc("cp1"));
    let boots = |node: &str, init: &str, state_dir: &str, absent: &str| {
        assert_eq!(lab.exec_ok(node, &["cat", "/proc/1/comm"]).trim(), init);
        assert!(
            lab.exec(node, &["test", "-d", state_dir]).status.success()
                && !lab.exec(node, &["test", "-e", absent]).status.success(),
            "{node}: {state_dir} should exist and {absent} not"
        );
    };
    // PID 1 is openrc-init on w1, systemd beside it on cp1; how a program tells them apart.
    boots("w1", "openrc-init", "/run/openrc", "/run/systemd/system");
    boots("cp1", "systemd", "/run/systemd/system", "/run/openrc");
    // `rc-status --crashed` lists crashed services and exits 1 when there are none.
    let crashed = || {
        let out = lab.exec("w1", &["rc-status", "--crashed"]);
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    // OpenRC finished its default runlevel with sshd started and nothing crashed.
    assert_eq!(
        lab.exec_ok("w1", &["rc-status", "--runlevel"]).trim(),
        "default"
    );
    assert_eq!(crashed(), "", "crashed services on w1");
    let default = lab.exec_ok("w1", &["rc-update", "show", "default"]);
    assert_eq!(
        default.split_whitespace().collect::<Vec<_>>(),
        ["sshd", "|", "default"],
        "only the lab's sshd in the default runlevel (none of this machine's services)"
    );
    let status = || lab_sh().args(["status", lab.name()]).output().unwrap();
    let up = String::from_utf8_lossy(&status().stdout).into_owned();
    assert!(
        up.contains("init=openrc system=running sshd=active")
            && up.contains("init=systemd system=running sshd=active"),
        "{up}"
    );
    // Real ssh with the lab key, and booting (and logging in) left the upper dir empty.
    let tmp = tempfile::tempdir().unwrap();
    let known_hosts = tmp.path().join("known_hosts");
    let ssh = |cmd: &str| {
        lab.ssh_command("w1", &known_hosts)
            .arg(cmd)
            .output()
            .unwrap()
    };
    let out = ssh("hostname");
    assert!(out.status.success(), "ssh to w1: {}", ssh_stderr(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "w1");
    assert_eq!(
        lab.changed_paths("w1"),
        Default::default(),
        "booting OpenRC wrote into the upper dir"
    );

    // A service as khactl installs its agent on OpenRC: supervised, respawned, reloadable.
    lab.write_file(
        "w1",
        "/usr/local/bin/khalab-smoke-daemon",
        "#!/bin/sh\ntrap 'echo hup > /run/khalab-smoke.hup' HUP\necho \"started $$\"\n\
         while :; do sleep 0.1; done\n",
    );
    lab.write_file(
        "w1",
        "/etc/init.d/khalab-smoke",
        "#!/sbin/openrc-run\ndescription=\"khalab smoke\"\n\
         command=/usr/local/bin/khalab-smoke-daemon\nsupervisor=supervise-daemon\n\
         respawn_delay=1\noutput_log=/var/log/khalab-smoke.log\n\
         extra_started_commands=reload\n\
         depend() {\n\tneed net\n}\n\
         reload() {\n\tebegin \"Reloading $RC_SVCNAME\"\n\
         \tsupervise-daemon \"$RC_SVCNAME\" --signal HUP\n\teend $?\n}\n",
    );
    lab.exec_ok(
        "w1",
        &[
            "chmod",
            "0755",
            "/usr/local/bin/khalab-smoke-daemon",
            "/etc/init.d/khalab-smoke",
        ],
    );
    let daemon = "/bin/sh /usr/local/bin/khalab-smoke-daemon";
    lab.exec_ok("w1", &["rc-service", "khalab-smoke", "start"]);
    let first = pid_of(&lab, "w1", daemon).expect("the service's process runs");
    assert_eq!(
        lab.exec_ok("w1", &["grep", "^0::", &format!("/proc/{first}/cgroup")])
            .trim(),
        "0::/khalab-smoke",
        "OpenRC puts each service in a cgroup of its own"
    );
    lab.exec_ok("w1", &["rc-service", "khalab-smoke", "reload"]);
    wait_for("the HUP of reload", Duration::from_secs(5), || {
        lab.read_file("w1", "/run/khalab-smoke.hup").is_some()
    });
    assert_eq!(pid_of(&lab, "w1", daemon).as_ref(), Some(&first));

    lab.exec_ok("w1", &["kill", "-KILL", &first]);
    let mut second = None;
    wait_for(
        "supervise-daemon to respawn",
        Duration::from_secs(10),
        || {
            second = pid_of(&lab, "w1", daemon).filter(|p| *p != first);
            second.is_some()
        },
    );
    assert!(
        lab.exec("w1", &["rc-service", "khalab-smoke", "status"])
            .status
            .success()
    );
    assert_eq!(crashed(), "", "crashed services on w1");
    let log = lab.unit_log("w1", "khalab-smoke");
    assert!(
        log.contains("status: started")
            && log.contains(&format!("started {first}"))
            && log.contains(&format!("started {}", second.unwrap())),
        "{log}"
    );

    lab.exec_ok("w1", &["rc-service", "khalab-smoke", "stop"]);
    assert_eq!(
        lab.exec("w1", &["rc-service", "khalab-smoke", "status"])
            .status
            .code(),
        Some(3),
        "stopped"
    );
    // Stopped for good: nothing comes back after the respawn delay (1 s) has passed.
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(
        pid_of(&lab, "w1", daemon),
        None,
        "a stopped service came back"
    );

    // Enabled as khactl enables its agent, plus a service whose stop leaves a mark: a clean
    // poweroff stops every service, and the next boot starts what is enabled.
    lab.write_file(
        "w1",
        "/etc/init.d/khalab-stopmark",
        "#!/sbin/openrc-run\nstart() {\n\treturn 0\n}\n\
         stop() {\n\techo stopped > /var/lib/khalab-stopped\n}\n",
    );
    lab.exec_ok("w1", &["chmod", "0755", "/etc/init.d/khalab-stopmark"]);
    for service in ["khalab-smoke", "khalab-stopmark"] {
        lab.exec_ok("w1", &["rc-update", "add", service, "default"]);
        lab.exec_ok("w1", &["rc-service", service, "start"]);
    }
    assert!(
        lab.changed_paths("w1")
            .contains(Path::new("/etc/runlevels/default/khalab-smoke")),
        "rc-update add writes the runlevel link"
    );
    let stopped = Path::new("/var/lib/khalab-stopped");
    lab.stop_node("w1", false);
    assert_eq!(lab.node_pid("w1"), None);
    assert!(
        lab.changed_paths("w1").contains(stopped),
        "a clean poweroff stops every service first"
    );
    lab.start_node("w1");
    assert!(status().status.success());
    assert_eq!(
        lab.exec_ok("w1", &["rc-status", "--runlevel"]).trim(),
        "default"
    );
    assert!(
        pid_of(&lab, "w1", daemon).is_some(),
        "the service enabled before the poweroff starts at boot"
    );
    // Its sshd came back with the node; stop-sshd and start-sshd work on OpenRC too.
    assert!(ssh("true").status.success());
    lab.stop_sshd("w1");
    assert_eq!(ssh("true").status.code(), Some(255));
    lab.start_sshd("w1");
    assert!(ssh("true").status.success());
    assert_eq!(
        lab.exec_ok("cp1", &["cat", "/proc/1/comm"]).trim(),
        "systemd"
    );
}
