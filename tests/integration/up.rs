//! `khactl up` against a real lab of 3 control-plane and 2 worker nodes: what each node
//! ends up with, read from the node's own namespaces; idempotency; dry runs; faults.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::run::{cluster_state, json_of, sh, text, up};
use crate::support::{Lab, indexes, khactl_bin, require_root};

const CONTROL_PLANES: [&str; 3] = ["cp1", "cp2", "cp3"];
const WORKERS: [&str; 2] = ["w1", "w2"];
const PKI: &str = "/etc/kubernetes/pki";

/// Every file below a node's upper dir that khactl could have written (sshd and the lab's
/// own runtime files excluded), as relative paths.
fn written_files(lab: &Lab, node: &str) -> BTreeSet<PathBuf> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeSet<PathBuf>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() && !p.is_symlink() {
                walk(root, &p, out);
            } else if let Ok(rel) = p.strip_prefix(root) {
                out.insert(rel.to_path_buf());
            }
        }
    }
    let upper = lab.upper_dir(node);
    let mut files = BTreeSet::new();
    for sub in [
        "etc/sysctl.d",
        "etc/modules-load.d",
        "etc/kubernetes",
        "etc/hosts",
        "etc/fstab",
    ] {
        let p = upper.join(sub);
        if p.is_file() {
            files.insert(PathBuf::from(sub));
        } else {
            walk(&upper, &p, &mut files);
        }
    }
    files
}

#[test]
fn up_prepares_every_node_and_gives_each_only_its_own_certificates() {
    require_root();
    let lab = Lab::up("up-main", indexes::UP_MAIN, 3, 2);
    let state = tempfile::tempdir().unwrap();
    let out = up(&lab, state.path(), &[]);
    assert!(out.status.success(), "{}", text(&out));

    for node in CONTROL_PLANES.iter().chain(&WORKERS) {
        // Sysctls, read from the node's own /proc/sys (net.* is per network namespace).
        for (path, want) in [
            ("/proc/sys/net/ipv4/ip_forward", "1"),
            ("/proc/sys/net/ipv4/ip_nonlocal_bind", "1"),
            ("/proc/sys/net/bridge/bridge-nf-call-iptables", "1"),
            ("/proc/sys/net/bridge/bridge-nf-call-ip6tables", "1"),
        ] {
            assert_eq!(
                sh(&lab, node, &format!("cat {path}")),
                want,
                "{node}: {path}"
            );
        }
        let drop_in = lab
            .read_file(node, "/etc/sysctl.d/99-zz-khactl.conf")
            .expect("drop-in");
        assert!(
            drop_in.contains("net.ipv4.ip_nonlocal_bind = 1"),
            "{node}: {drop_in}"
        );
        let hosts = lab.read_file(node, "/etc/hosts").unwrap();
        assert!(
            hosts.contains("10.200.") && hosts.contains("# khactl"),
            "{node}: {hosts}"
        );
        let modules = lab
            .read_file(node, "/etc/modules-load.d/khactl.conf")
            .unwrap();
        assert!(modules.contains("br_netfilter"), "{node}: {modules}");
    }
    // The machine itself is untouched: only the nodes' own views changed.
    assert!(!Path::new("/etc/sysctl.d/99-zz-khactl.conf").exists());

    // Control-plane nodes: the CAs, shared client certs, and their own serving certs, with
    // keys 0600. Each node's etcd server cert is its own (not visible on another node).
    let mut serving = BTreeSet::new();
    for node in CONTROL_PLANES {
        for (file, mode) in [
            ("ca.crt", "644"),
            ("ca.key", "600"),
            ("sa.key", "600"),
            ("sa.pub", "644"),
            ("front-proxy-ca.crt", "644"),
            ("apiserver.crt", "644"),
            ("apiserver.key", "600"),
            ("etcd/ca.crt", "644"),
            ("etcd/server.crt", "644"),
            ("etcd/server.key", "600"),
            ("etcd/peer.key", "600"),
            ("apiserver-etcd-client.key", "600"),
        ] {
            let got = sh(&lab, node, &format!("stat -c %a {PKI}/{file}"));
            assert_eq!(got, mode, "{node}: mode of {file}");
        }
        let cert = lab
            .read_file(node, &format!("{PKI}/etcd/server.crt"))
            .unwrap();
        let subject = sh(
            &lab,
            node,
            &format!("openssl x509 -noout -subject -in {PKI}/etcd/server.crt"),
        );
        assert!(
            subject.contains(node),
            "{node}: etcd server cert subject {subject}"
        );
        assert!(
            serving.insert(cert),
            "{node} got another node's etcd server certificate"
        );
    }
    for node in WORKERS {
        assert!(
            lab.read_file(node, &format!("{PKI}/ca.key")).is_none(),
            "{node} must not get CA keys"
        );
        assert!(
            lab.read_file(node, &format!("{PKI}/etcd/server.key"))
                .is_none()
        );
    }

    // Node isolation: what khactl wrote on cp1 is in cp1's upper dir and nowhere else.
    let cp1 = written_files(&lab, "cp1");
    let w1 = written_files(&lab, "w1");
    assert!(
        cp1.contains(Path::new("etc/kubernetes/pki/etcd/server.key")),
        "{cp1:?}"
    );
    assert!(
        !w1.contains(Path::new("etc/kubernetes/pki/etcd/server.key")),
        "{w1:?}"
    );

    // State dir: private, with the PKI and the cluster's own known_hosts.
    use std::os::unix::fs::PermissionsExt;
    let root = cluster_state(state.path()).expect("khactl made the cluster's state dir");
    let mode = std::fs::metadata(&root).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700);
    let known = std::fs::read_to_string(root.join("known_hosts")).unwrap();
    assert!(
        known.lines().filter(|l| !l.trim().is_empty()).count() >= 5,
        "{known}"
    );

    // A second run changes nothing and says so, for people and for scripts.
    let again = up(&lab, state.path(), &[]);
    assert!(again.status.success(), "{}", text(&again));
    let err = String::from_utf8_lossy(&again.stderr);
    assert!(err.contains("nothing to change"), "{}", text(&again));
    let json = up(&lab, state.path(), &["--output", "json"]);
    assert!(json.status.success(), "{}", text(&json));
    let doc = json_of(&json);
    assert_eq!(doc["command"], "up");
    assert_eq!(doc["ok"], true);
    let result = &doc["result"];
    assert_eq!(result["dryRun"], false);
    assert_eq!(result["totalChanges"], 0, "{result}");
    assert_eq!(result["nodes"].as_array().map(Vec::len), Some(5));
    let holder = result["vip"]["holder"].as_str().unwrap_or_default();
    assert!(CONTROL_PLANES.contains(&holder), "the VIP holder: {result}");
}

#[test]
fn dry_run_lists_the_changes_and_leaves_every_node_untouched() {
    require_root();
    let lab = Lab::up("up-plan", indexes::UP_DRY_RUN, 3, 2);
    let state = tempfile::tempdir().unwrap();
    // Every file each node has changed since boot: sshd and our read-only probe add none.
    // Left out: the stand-in's record of every invocation of its programs (tests/standin), which
    // its kubelet service starts on its own schedule after boot and the dry run's read-only
    // `kubeadm config validate` appends to: instrumentation, not a change to the node.
    let changed = |n: &str| {
        let mut paths = lab.changed_paths(n);
        paths.retain(|p| !p.starts_with("/var/log/khalab-standin"));
        paths
    };
    let before: Vec<_> = CONTROL_PLANES
        .iter()
        .chain(&WORKERS)
        .map(|n| changed(n))
        .collect();
    let sysctl_before = sh(&lab, "cp1", "cat /proc/sys/net/ipv4/ip_nonlocal_bind");

    let out = up(&lab, state.path(), &["--dry-run"]);
    assert!(out.status.success(), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    for expected in [
        "cp1: create /etc/sysctl.d/99-zz-khactl.conf",
        "net.ipv4.ip_nonlocal_bind: 0 -> 1",
        "w2: create /etc/modules-load.d/khactl.conf",
        "cp2: create /etc/kubernetes/pki/etcd/server.key (0600, secret",
        "nothing was changed",
    ] {
        assert!(
            err.contains(expected),
            "missing {expected:?} in\n{}",
            text(&out)
        );
    }
    assert!(
        !err.contains("BEGIN"),
        "a dry run must never print key material"
    );
    // It shows every node's kubeadm documents, the bootstrap token redacted.
    assert!(err.contains("kind: InitConfiguration"), "{}", text(&out));
    assert!(err.contains("token: \"<redacted>\""), "{}", text(&out));
    let leaked = crate::support::run::token_shaped(&err);
    assert!(
        leaked.is_empty(),
        "a dry run printed token-shaped text: {leaked:?}"
    );

    // The same plan for scripts: one JSON document, a list of changes per node.
    let json = up(&lab, state.path(), &["--dry-run", "--output", "json"]);
    assert!(json.status.success(), "{}", text(&json));
    assert!(!String::from_utf8_lossy(&json.stdout).contains("BEGIN"));
    let doc = json_of(&json);
    let result = &doc["result"];
    assert_eq!(result["dryRun"], true);
    let nodes = result["nodes"].as_array().expect("nodes");
    assert_eq!(nodes.len(), 5);
    let cp1 = &nodes[0];
    assert_eq!(
        (cp1["name"].as_str(), cp1["role"].as_str()),
        (Some("cp1"), Some("control-plane"))
    );
    let changes = cp1["changes"].as_array().expect("changes");
    let drop_in = changes
        .iter()
        .find(|c| {
            c["headline"]
                .as_str()
                .is_some_and(|h| h.contains("99-zz-khactl.conf"))
        })
        .expect("the sysctl drop-in is planned on cp1");
    assert_eq!(drop_in["kind"], "write-file");
    assert_eq!(drop_in["done"], false);
    assert!(
        drop_in["details"].as_array().is_some_and(|d| !d.is_empty()),
        "with its diff"
    );
    assert!(changes.iter().all(|c| c["done"] == false));
    assert_eq!(result["vip"]["holder"], serde_json::Value::Null);

    let after: Vec<_> = CONTROL_PLANES
        .iter()
        .chain(&WORKERS)
        .map(|n| changed(n))
        .collect();
    assert_eq!(before, after, "a dry run wrote files on nodes");
    assert_eq!(
        sh(&lab, "cp1", "cat /proc/sys/net/ipv4/ip_nonlocal_bind"),
        sysctl_before
    );
    // Nor did it create the PKI in the state directory.
    let root = cluster_state(state.path());
    assert!(root.is_none_or(|r| !r.join("pki/ca.key").exists()));
}

#[test]
fn unreachable_node_is_named_and_a_rerun_completes_once_it_is_back() {
    require_root();
    let lab = Lab::up("up-fault", indexes::UP_FAULT, 3, 2);
    let state = tempfile::tempdir().unwrap();
    lab.stop_sshd("cp2");

    let out = up(&lab, state.path(), &["--connect-timeout", "3"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cp2"), "{}", text(&out));
    assert!(err.contains("cannot connect"), "{}", text(&out));
    assert!(err.contains("hint:"), "{}", text(&out));
    // Nothing was changed on the reachable nodes: connecting is all-or-nothing.
    assert!(
        lab.read_file("cp1", "/etc/sysctl.d/99-zz-khactl.conf")
            .is_none()
    );

    lab.start_sshd("cp2");
    let out = up(&lab, state.path(), &[]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(sh(&lab, "cp2", "cat /proc/sys/net/ipv4/ip_forward"), "1");
}

#[test]
fn ctrl_c_stops_between_steps_exits_130_naming_the_phase_and_a_rerun_completes() {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;

    require_root();
    let lab = Lab::up("up-interrupt", indexes::UP_INTERRUPT, 3, 2);
    let state = tempfile::tempdir().unwrap();
    assert!(lab.is_up());
    let mut child = Command::new(khactl_bin())
        .args(["up", "-v", "-i"])
        .arg(lab.inventory_path())
        .arg("--state-dir")
        .arg(state.path())
        .env_remove("KHACTL_STATE_DIR")
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let mut lines = BufReader::new(stderr).lines();
    let mut seen = Vec::new();
    // Interrupt once the nodes are being changed: the first file write of Prepare hosts.
    for line in lines.by_ref() {
        let line = line.unwrap();
        let go = line.contains("$ sh -c '<script>' write-files");
        seen.push(line);
        if go {
            let pid = child.id().to_string();
            let kill = Command::new("kill").args(["-INT", &pid]).status().unwrap();
            assert!(kill.success());
            break;
        }
    }
    seen.extend(lines.map_while(Result::ok));
    let status = child.wait().unwrap();
    let err = seen.join("\n");
    assert_eq!(status.code(), Some(130), "{err}");
    assert!(
        err.contains("interrupted during phase \"Prepare hosts\""),
        "names the phase:\n{err}"
    );
    for node in CONTROL_PLANES.iter().chain(&WORKERS) {
        assert!(
            err.contains(&format!("\n  {node}: ")),
            "says what {node} did:\n{err}"
        );
    }
    assert!(
        err.contains("run the command again") || err.contains("hint"),
        "{err}"
    );

    let out = up(&lab, state.path(), &[]);
    assert!(out.status.success(), "{}", text(&out));
    for node in CONTROL_PLANES.iter().chain(&WORKERS) {
        assert_eq!(
            sh(&lab, node, "cat /proc/sys/net/ipv4/ip_forward"),
            "1",
            "{node}"
        );
    }
}

#[test]
fn changed_host_key_is_refused_with_a_clear_message() {
    require_root();
    let lab = Lab::up("up-hostkey", indexes::UP_HOSTKEY, 1, 1);
    let state = tempfile::tempdir().unwrap();
    let out = up(&lab, state.path(), &[]);
    assert!(out.status.success(), "{}", text(&out));

    lab.regen_hostkey("w1");
    let out = up(&lab, state.path(), &[]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("w1") && err.contains("host key"),
        "{}",
        text(&out)
    );
    assert!(err.contains("ssh-keygen -R"), "{}", text(&out));
}

#[test]
fn a_node_behind_a_bastion_is_reached_through_it_with_the_same_trust_rules() {
    require_root();
    let lab = Lab::up("up-bastion", indexes::UP_BASTION, 1, 1);
    let cp1 = lab.node_address("cp1");
    let w1 = lab.node_address("w1");
    // w1 is reached only through cp1.
    let inventory = std::fs::read_to_string(lab.inventory_path()).unwrap();
    let line = inventory.lines().find(|l| l.contains("name: w1")).unwrap();
    let behind = line.replace(
        "role: worker }",
        &format!("role: worker, ssh: {{ bastion: {{ address: \"{cp1}\" }} }} }}"),
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("inventory.yaml");
    std::fs::write(&path, inventory.replace(line, &behind)).unwrap();

    assert!(lab.is_up());
    let state = tempfile::tempdir().unwrap();
    let out = Command::new(khactl_bin())
        .args(["up", "-i", path.to_str().unwrap(), "--state-dir"])
        .arg(state.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(sh(&lab, "w1", "cat /proc/sys/net/ipv4/ip_forward"), "1");
    // w1's sshd saw the login come from the bastion, not from the machine khactl runs on.
    let log = lab.unit_log("w1", "ssh.service");
    let accepted =
        |from: String| log.contains(&format!("Accepted publickey for root from {from} "));
    assert!(accepted(cp1.to_string()), "w1 sshd log:\n{log}");
    assert!(
        !accepted(lab.gateway().to_string()),
        "w1 was reached directly:\n{log}"
    );
    // The bastion's host key went into the cluster's own known_hosts too.
    let root = cluster_state(state.path()).unwrap();
    // (Looked up with ssh-keygen: entries may be hashed, as Debian's HashKnownHosts does.)
    for host in [cp1, w1] {
        let found = Command::new("ssh-keygen")
            .arg("-F")
            .arg(host.to_string())
            .arg("-f")
            .arg(root.join("known_hosts"))
            .output()
            .unwrap();
        assert!(
            found.status.success(),
            "{host} is not in the cluster's known_hosts"
        );
    }
}

/// Adds user `deploy` on `node`, authorised with the lab key, with passwordless sudo.
fn add_sudo_user(lab: &Lab, node: &str) {
    sh(
        lab,
        node,
        "set -e
         useradd -m -s /bin/sh -p '*' deploy
         mkdir -p /home/deploy/.ssh
         cp /root/.ssh/authorized_keys /home/deploy/.ssh/authorized_keys
         chown -R deploy: /home/deploy/.ssh && chmod 700 /home/deploy/.ssh
         echo 'deploy ALL=(ALL) NOPASSWD: ALL' > /etc/sudoers.d/deploy
         chmod 440 /etc/sudoers.d/deploy",
    );
}

#[test]
fn a_non_root_user_works_through_sudo_and_is_stopped_without_it() {
    require_root();
    let lab = Lab::up("up-sudo", indexes::UP_SUDO, 1, 0);
    add_sudo_user(&lab, "cp1");
    let inventory = std::fs::read_to_string(lab.inventory_path()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let with = |ssh: &str| {
        let path = dir.path().join(format!("{}.yaml", ssh.len()));
        let text = inventory
            .lines()
            .map(|l| {
                if l.starts_with("ssh:") {
                    ssh.to_owned()
                } else {
                    l.to_owned()
                }
            })
            .collect::<Vec<_>>()
            .join("\n");
        std::fs::write(&path, text).unwrap();
        path
    };
    let key = lab.ssh_key_path();
    let run = |inv: &Path, state: &Path| {
        assert!(lab.is_up());
        Command::new(khactl_bin())
            .args(["up", "-i", inv.to_str().unwrap(), "--state-dir"])
            .arg(state)
            .output()
            .unwrap()
    };

    // A non-root user without sudo: the inventory itself is refused (exit 2), before any
    // connection, pointing at `ssh.sudo`.
    let no_sudo = with(&format!(
        "ssh: {{ user: deploy, identityFile: {}, sudo: false }}",
        key.display()
    ));
    let state = tempfile::tempdir().unwrap();
    let out = run(&no_sudo, state.path());
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("ssh.sudo"),
        "{}",
        text(&out)
    );
    assert!(
        lab.read_file("cp1", "/etc/sysctl.d/99-zz-khactl.conf")
            .is_none()
    );

    let sudo = with(&format!(
        "ssh: {{ user: deploy, identityFile: {}, sudo: true }}",
        key.display()
    ));
    let out = run(&sudo, state.path());
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(sh(&lab, "cp1", "cat /proc/sys/net/ipv4/ip_forward"), "1");
    assert_eq!(
        sh(&lab, "cp1", "stat -c '%a %U' /etc/kubernetes/pki/ca.key"),
        "600 root"
    );
    let log = lab.unit_log("cp1", "ssh.service");
    assert!(log.contains("Accepted publickey for deploy"), "{log}");

    // sudo that runs commands as someone else than root (here: nobody) passes the inventory
    // and the connection; preflight finds the commands are not root's and stops the run
    // before any change.
    sh(
        &lab,
        "cp1",
        "printf 'Defaults:deploy runas_default=nobody\\ndeploy ALL=(nobody) NOPASSWD: ALL\\n' \
         > /etc/sudoers.d/deploy && rm /etc/sysctl.d/99-zz-khactl.conf",
    );
    let before = lab.changed_paths("cp1");
    let out = run(&sudo, state.path());
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("Preflight checks")
            && err.contains("cp1: FAILED: commands do not run as root"),
        "{}",
        text(&out)
    );
    assert_eq!(
        lab.changed_paths("cp1"),
        before,
        "preflight changed nothing"
    );
}
