//! One cluster-changing khactl at a time per cluster, across state directories: a run whose
//! cluster is locked (on the first control plane) by another khactl exits 1 naming that run,
//! and changes nothing; the lock goes with the run that holds it, even SIGKILLed.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use crate::support::run::{text, up};
use crate::support::{Lab, indexes, khactl_bin, require_root};

/// Copies a state directory (PKI, known_hosts, records) as a second workstation would hold it.
fn copy_state(from: &std::path::Path, to: &std::path::Path) {
    let status = Command::new("cp")
        .arg("-a")
        .arg(format!("{}/.", from.display()))
        .arg(to)
        .status()
        .unwrap();
    assert!(status.success());
}

#[test]
fn a_second_workstation_waits_for_the_cluster_lock_which_a_killed_run_does_not_keep() {
    require_root();
    let lab = Lab::up("cluster-lock", indexes::CLUSTER_LOCK, 1, 0);
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    let first = up(&lab, a.path(), &[]);
    assert!(first.status.success(), "{}", text(&first));
    copy_state(a.path(), b.path());

    // Workstation A starts a run and stops (SIGSTOP) right after taking the cluster lock.
    lab.assert_up();
    let mut holder = Command::new(khactl_bin())
        .args(["up", "-v", "-i"])
        .arg(lab.inventory_path())
        .arg("--state-dir")
        .arg(a.path())
        .env_remove("KHACTL_STATE_DIR")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(holder.stderr.take().unwrap()).lines();
    let mut seen = Vec::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        let locked = line.contains("cp1: locked");
        seen.push(line);
        if locked {
            break;
        }
    }
    assert!(
        seen.iter().any(|l| l.contains("cp1: locked")),
        "{}",
        seen.join("\n")
    );
    let pid = holder.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-STOP", &pid])
            .status()
            .unwrap()
            .success()
    );

    // Workstation B, its own state directory: refused, naming A's run, nothing changed.
    let before = lab.changed_paths("cp1");
    let refused = up(&lab, b.path(), &[]);
    assert_eq!(refused.status.code(), Some(1), "{}", text(&refused));
    let err = text(&refused);
    assert!(
        err.contains(&format!(
            "the cluster is locked on cp1 by khactl up (pid {pid} on"
        )),
        "{err}"
    );
    assert!(err.contains("hint:"), "{err}");
    assert_eq!(
        lab.changed_paths("cp1"),
        before,
        "the refused run changed nothing"
    );

    // A dies without a word: its lock goes with it.
    assert!(
        Command::new("kill")
            .args(["-KILL", &pid])
            .status()
            .unwrap()
            .success()
    );
    holder.wait().unwrap();
    let mut after = None;
    crate::support::wait_for(
        "the killed run's lock to go",
        std::time::Duration::from_secs(15),
        || {
            let o = up(&lab, b.path(), &[]);
            let ok = o.status.success();
            after = Some(o);
            ok
        },
    );
    let after = after.unwrap();
    assert!(after.status.success(), "{}", text(&after));
}
