//! Issue #12's khactl items against real nodes: a former control plane keeps `up` from
//! succeeding; another cluster's CA stops `up` before any change and `adopt-pki` keeps it; a
//! second `up` on one state directory is refused naming the first; host keys stay pinned with
//! a state directory holding spaces and quotes; SIGTERM and a second signal leave no CA key of
//! a dry run behind (no lab: the node is a local listener that never speaks SSH).

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use crate::support::{Lab, indexes, khactl_bin, require_root};

fn agent_bin() -> PathBuf {
    let path = khactl_bin().with_file_name("khagent");
    assert!(
        path.is_file(),
        "{} is missing: run the tests with `cargo test --workspace`",
        path.display()
    );
    path
}

fn khactl(args: &[&str], inventory: &Path, state: &Path) -> Output {
    Command::new(khactl_bin())
        .args(args)
        .arg("-i")
        .arg(inventory)
        .arg("--state-dir")
        .arg(state)
        .arg("--agent-binary")
        .arg(agent_bin())
        .env_remove("KHACTL_STATE_DIR")
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

/// `adopt-pki` takes no --agent-binary.
fn adopt(inventory: &Path, state: &Path, from: &str) -> Output {
    Command::new(khactl_bin())
        .args(["adopt-pki", "--yes", "--from", from, "-i"])
        .arg(inventory)
        .arg("--state-dir")
        .arg(state)
        .env_remove("KHACTL_STATE_DIR")
        .stdin(Stdio::null())
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

#[test]
fn a_control_plane_removed_from_the_inventory_keeps_up_from_succeeding_and_names_remove_node() {
    require_root();
    agent_bin();
    let lab = Lab::up("hd-former", indexes::HARDENING_FORMER_CP, 3, 0);
    let state = tempfile::tempdir().unwrap();
    assert!(lab.is_up());
    let out = khactl(&["up"], &lab.inventory_path(), state.path());
    assert!(out.status.success(), "{}", describe(&out));

    // cp3 leaves the inventory; its agent keeps running.
    let original = std::fs::read_to_string(lab.inventory_path()).unwrap();
    let without: String = original
        .lines()
        .filter(|l| !l.contains("name: cp3"))
        .map(|l| format!("{l}\n"))
        .collect();
    assert_ne!(original, without, "the lab inventory lists cp3 on one line");
    let dir = tempfile::tempdir().unwrap();
    let inventory = dir.path().join("inventory.yaml");
    std::fs::write(&inventory, without).unwrap();

    assert!(lab.is_up());
    let out = khactl(&["up"], &inventory, state.path());
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cp3"), "{}", describe(&out));
    assert!(err.contains("khactl remove-node cp3"), "{}", describe(&out));
    assert!(!err.contains("up: made") && !err.contains("nothing to change"));

    // As told: remove-node cp3 (known from the state's record, no longer from the inventory).
    // Its agent is stopped before the others forget it; then exactly one node holds the VIP,
    // and `up` succeeds again.
    let out = khactl(&["remove-node", "cp3", "--yes"], &inventory, state.path());
    assert!(out.status.success(), "{}", describe(&out));
    let vip = lab.vip().to_string();
    let holders: Vec<&str> = ["cp1", "cp2", "cp3"]
        .into_iter()
        .filter(|n| {
            lab.exec_ok(n, &["ip", "-o", "-4", "addr", "show"])
                .split_whitespace()
                .any(|w| w.split('/').next() == Some(vip.as_str()))
        })
        .collect();
    assert_eq!(holders.len(), 1, "exactly one holder: {holders:?}");
    assert_ne!(holders, ["cp3"]);
    assert!(lab.read_file("cp3", "/usr/local/bin/khagent").is_none());
    let out = khactl(&["up"], &inventory, state.path());
    assert!(out.status.success(), "{}", describe(&out));
}

/// Another cluster's PKI, made by openssl inside the node, as kubeadm lays it out.
const FOREIGN_PKI: &str = r#"set -e
d=/etc/kubernetes/pki
mkdir -p $d/etcd
for n in ca front-proxy-ca etcd/ca; do
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 3650 \
    -keyout $d/$n.key -out $d/$n.crt -subj "/CN=other-$(basename $n)" \
    -addext basicConstraints=critical,CA:TRUE \
    -addext keyUsage=critical,digitalSignature,keyCertSign,cRLSign 2>/dev/null
done
openssl genrsa -out $d/sa.key 2048 2>/dev/null
openssl rsa -in $d/sa.key -pubout -out $d/sa.pub 2>/dev/null
"#;

#[test]
fn another_clusters_ca_stops_up_before_any_change_and_adopt_pki_then_up_keeps_it() {
    require_root();
    agent_bin();
    let lab = Lab::up("hd-foreign", indexes::HARDENING_FOREIGN_PKI, 1, 0);
    let out = lab.exec("cp1", &["sh", "-c", FOREIGN_PKI]);
    assert!(out.status.success(), "{}", describe(&out));
    let their_ca = lab.read_file("cp1", "/etc/kubernetes/pki/ca.crt").unwrap();
    let state = tempfile::tempdir().unwrap();

    assert!(lab.is_up());
    let out = khactl(&["up"], &lab.inventory_path(), state.path());
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("failed on cp1"), "{}", describe(&out));
    assert!(err.contains("adopt-pki"), "{}", describe(&out));
    assert!(err.contains("--from cp1"), "{}", describe(&out));
    assert!(err.contains("--state-dir"), "{}", describe(&out));
    assert!(
        lab.read_file("cp1", "/etc/sysctl.d/99-zz-khactl.conf")
            .is_none(),
        "nothing may change before the refusal"
    );
    assert_eq!(
        lab.read_file("cp1", "/etc/kubernetes/pki/ca.crt").unwrap(),
        their_ca
    );

    let out = adopt(&lab.inventory_path(), state.path(), "cp1");
    assert!(out.status.success(), "{}", describe(&out));
    let out = khactl(&["up"], &lab.inventory_path(), state.path());
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(
        lab.read_file("cp1", "/etc/kubernetes/pki/ca.crt").unwrap(),
        their_ca,
        "the cluster's CA is kept"
    );
    let cluster = std::fs::read_dir(state.path())
        .unwrap()
        .flatten()
        .find(|e| e.path().is_dir())
        .unwrap()
        .path();
    assert_eq!(
        std::fs::read_to_string(cluster.join("pki/ca.crt")).unwrap(),
        their_ca
    );
}

#[test]
fn a_second_up_while_one_runs_exits_1_naming_the_holder() {
    require_root();
    agent_bin();
    let lab = Lab::up("hd-lock", indexes::HARDENING_LOCK, 1, 0);
    let state = tempfile::tempdir().unwrap();
    assert!(lab.is_up());
    let mut first = Command::new(khactl_bin())
        .args(["up", "-v", "-i"])
        .arg(lab.inventory_path())
        .arg("--state-dir")
        .arg(state.path())
        .arg("--agent-binary")
        .arg(agent_bin())
        .env_remove("KHACTL_STATE_DIR")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(first.stderr.take().unwrap()).lines();
    let mut seen = Vec::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        let go = line.contains("==> Connect to nodes");
        seen.push(line);
        if go {
            break;
        }
    }
    let second = khactl(&["up"], &lab.inventory_path(), state.path());
    seen.extend(lines.map_while(Result::ok));
    let status = first.wait().unwrap();
    assert_eq!(second.status.code(), Some(1), "{}", describe(&second));
    let err = String::from_utf8_lossy(&second.stderr);
    assert!(
        err.contains(&format!("in use by khactl up (PID {}", first.id())),
        "{}",
        describe(&second)
    );
    assert!(
        status.success(),
        "the first run finishes:\n{}",
        seen.join("\n")
    );
}

#[test]
fn a_rotated_host_key_is_refused_with_a_state_dir_holding_spaces_and_quotes() {
    require_root();
    agent_bin();
    let lab = Lab::up("hd-hostkey", indexes::HARDENING_HOSTKEY, 1, 0);
    let base = tempfile::tempdir().unwrap();
    // Unquoted, ssh read this as the files "<base>/khactl" (a directory: nothing can be
    // recorded there) and two more, and accepted any key as new.
    std::fs::create_dir(base.path().join("khactl")).unwrap();
    let state = base.path().join("khactl state 'ops'");
    assert!(lab.is_up());
    let out = khactl(&["up"], &lab.inventory_path(), &state);
    assert!(out.status.success(), "{}", describe(&out));

    lab.regen_hostkey("cp1");
    assert!(lab.is_up());
    let out = khactl(&["up"], &lab.inventory_path(), &state);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("host key"), "{}", describe(&out));

    // A path ssh would read as quoting is refused before any node is contacted.
    let quoted = base.path().join("say \"hi\"");
    let out = khactl(&["up"], &lab.inventory_path(), &quoted);
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("choose another --state-dir"),
        "{}",
        describe(&out)
    );
}

/// An inventory whose only node is reached through a "bastion" on a local port that accepts
/// and never speaks SSH: the connection hangs until the listener drops it, and no packet
/// leaves the machine (the node's own address is never dialled).
fn stalled_inventory(dir: &Path, port: u16) -> PathBuf {
    let path = dir.join("inventory.yaml");
    let text = format!(
        "apiVersion: khactl.io/v1alpha1\nkind: Inventory\n\
         cluster: {{ name: t, kubernetesVersion: v1.31.2 }}\n\
         vip: {{ address: 10.200.250.100 }}\npki: {{ keyType: ecdsa-p256 }}\n\
         nodes:\n  - {{ name: cp1, address: 10.200.250.11, role: control-plane, \
         ssh: {{ bastion: {{ address: 127.0.0.1, port: {port} }} }} }}\n"
    );
    std::fs::write(&path, text).unwrap();
    path
}

/// Accepts connections and holds each for `hold`, then drops it; stops after `max`.
fn stalling_listener(hold: Duration, max: usize) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming().take(max) {
            let Ok(stream) = stream else { break };
            std::thread::spawn(move || {
                std::thread::sleep(hold);
                drop(stream);
            });
        }
    });
    port
}

/// Starts `up --dry-run` and returns once it is connecting (the plan's PKI is in its scratch).
fn dry_run_connecting(inventory: &Path, state: &Path, tmp: &Path) -> std::process::Child {
    let mut child = Command::new(khactl_bin())
        .args(["up", "--dry-run", "-v", "--connect-timeout", "5", "-i"])
        .arg(inventory)
        .arg("--state-dir")
        .arg(state)
        .arg("--agent-binary")
        .arg(khactl_bin())
        .env_remove("KHACTL_STATE_DIR")
        .env("TMPDIR", tmp)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let mut lines = BufReader::new(stderr).lines();
    for line in lines.by_ref() {
        if line.unwrap().contains("connecting to") {
            break;
        }
    }
    // Keep draining, so the child never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines.map_while(Result::ok) {});
    child
}

/// Every file under `dir` whose name ends in `.key`.
fn keys_under(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "key") {
                found.push(p);
            }
        }
    }
    found
}

fn signal(child: &std::process::Child, name: &str) {
    let status = Command::new("kill")
        .args([&format!("-{name}"), &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

#[test]
fn sigterm_stops_a_dry_run_with_130_and_leaves_no_ca_key_behind() {
    for second_signal in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let tmp = tempfile::tempdir().unwrap();
        let port = stalling_listener(Duration::from_secs(3), 4);
        let inventory = stalled_inventory(dir.path(), port);
        let state = dir.path().join("state");
        let mut child = dry_run_connecting(&inventory, &state, tmp.path());
        assert!(
            !keys_under(&state).is_empty(),
            "the plan's scratch PKI exists while the run lasts"
        );
        signal(&child, "TERM");
        if second_signal {
            signal(&child, "INT");
        }
        let status = child.wait().unwrap();
        assert_eq!(status.code(), Some(130), "second signal: {second_signal}");
        assert_eq!(keys_under(&state), Vec::<PathBuf>::new());
        assert_eq!(keys_under(tmp.path()), Vec::<PathBuf>::new());
    }
}
