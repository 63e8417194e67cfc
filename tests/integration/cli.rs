//! The command line as users meet it: help that reads like a man page, and bad
//! inventories stopped with exit code 2 before any connection is attempted.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::support::{khactl_bin, repo_root};

fn run(args: &[&str], path_prefix: Option<&Path>) -> Output {
    let mut c = Command::new(khactl_bin());
    c.args(args).env_remove("KHACTL_STATE_DIR");
    if let Some(p) = path_prefix {
        let path = std::env::var("PATH").unwrap_or_default();
        c.env("PATH", format!("{}:{path}", p.display()));
    }
    c.output().unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn help_explains_commands_exit_codes_and_examples() {
    let out = run(&["--help"], None);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    for want in [
        "up",
        "validate",
        "Exit status",
        "2    bad usage",
        "130  interrupted",
    ] {
        assert!(text.contains(want), "--help lacks {want:?}:\n{text}");
    }
    let out = run(&["up", "--help"], None);
    let text = String::from_utf8_lossy(&out.stdout);
    for want in [
        "--dry-run",
        "--parallel",
        "--state-dir",
        "Examples:",
        "khactl up -i inventory.yaml",
    ] {
        assert!(text.contains(want), "up --help lacks {want:?}:\n{text}");
    }
}

#[test]
fn unknown_flag_is_a_usage_error() {
    let out = run(&["up", "--inventroy", "x.yaml"], None);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
}

#[test]
fn example_inventories_validate() {
    let dir = repo_root().join("inventories");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "yaml") {
            seen += 1;
            let out = run(&["validate", "-i", path.to_str().unwrap()], None);
            assert!(out.status.success(), "{}: {}", path.display(), stderr(&out));
        }
    }
    assert!(
        seen >= 3,
        "expected the example inventories in {}",
        dir.display()
    );
}

/// A stand-in `ssh` that only records that it was called: no test here may reach a node.
fn tripwire_ssh(dir: &Path) -> PathBuf {
    let marker = dir.join("ssh-was-called");
    let script = format!("#!/bin/sh\ntouch '{}'\nexit 255\n", marker.display());
    let ssh = dir.join("ssh");
    std::fs::write(&ssh, script).unwrap();
    std::fs::set_permissions(&ssh, std::fs::Permissions::from_mode(0o755)).unwrap();
    marker
}

/// Every broken inventory under `tests/inventories/broken/` stops `khactl up` with exit
/// code 2, names the field, and never starts `ssh`.
#[test]
fn broken_inventories_stop_up_before_any_connection() {
    let dir = repo_root().join("tests/inventories/broken");
    let bin = tempfile::tempdir().unwrap();
    let marker = tripwire_ssh(bin.path());
    let state = tempfile::tempdir().unwrap();
    let mut cases = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "yaml") {
            continue;
        }
        cases += 1;
        let out = run(
            &[
                "up",
                "-i",
                path.to_str().unwrap(),
                "--state-dir",
                state.path().to_str().unwrap(),
            ],
            Some(bin.path()),
        );
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{}: {err}", path.display());
        assert!(err.contains("error"), "{}: {err}", path.display());
        assert!(!err.contains("panicked"), "{}: {err}", path.display());
        assert!(
            !marker.exists(),
            "{}: ssh was started for a broken inventory",
            path.display()
        );
    }
    assert!(
        cases >= 20,
        "expected at least 20 broken inventories, found {cases}"
    );
    // Nothing was created for them either.
    assert_eq!(std::fs::read_dir(state.path()).unwrap().count(), 0);
}

#[test]
fn missing_inventory_file_says_so() {
    let out = run(&["up", "-i", "/nonexistent/inventory.yaml"], None);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("/nonexistent/inventory.yaml"),
        "{}",
        stderr(&out)
    );
}

/// The cfssl guide's external-etcd inventory: `render` shows `etcd.external` for the control
/// planes and no file for the etcd nodes; the failover drill's etcd-member-down scenario,
/// which parks a stacked member, is refused before any connection.
#[test]
fn the_external_etcd_guide_renders_etcd_external_and_refuses_the_stacked_member_drill() {
    let guide = repo_root().join("inventories/cfssl-external-etcd-guide.yaml");
    let state = tempfile::tempdir().unwrap();
    let out = run(
        &[
            "render",
            "-i",
            guide.to_str().unwrap(),
            "--state-dir",
            state.path().to_str().unwrap(),
        ],
        None,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("  external:\n    endpoints:\n      - \"https://192.168.1.21:2379\""),
        "{text}"
    );
    assert!(
        text.contains("certFile: \"/etc/kubernetes/pki/apiserver-etcd-client.crt\""),
        "{text}"
    );
    assert!(!text.contains("  local:\n"), "{text}");
    assert!(
        !text.contains("# etcd1 ("),
        "an etcd node got a kubeadm file:\n{text}"
    );

    let bin = tempfile::tempdir().unwrap();
    let marker = tripwire_ssh(bin.path());
    let out = run(
        &[
            "failover-test",
            "-i",
            guide.to_str().unwrap(),
            "--state-dir",
            state.path().to_str().unwrap(),
            "--scenario",
            "etcd-member-down",
            "--yes",
        ],
        Some(bin.path()),
    );
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("etcd is external"), "{err}");
    assert!(!marker.exists(), "ssh was started");
}
