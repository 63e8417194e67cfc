//! Running khactl against a lab and reading what came out: shared by the test modules.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use super::{Lab, khactl_bin};

/// Runs `khactl up` (plus `extra` flags) with the lab's inventory and `state` as state dir.
pub fn up(lab: &Lab, state: &Path, extra: &[&str]) -> Output {
    khactl(lab, "up", state, extra)
}

/// An output as a failure message shows it.
pub fn text(o: &Output) -> String {
    format!(
        "exit {:?}\n--- stdout\n{}\n--- stderr\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// A page of the khagent on `node` (`/status`, `/events?since=N`) as JSON, fetched inside the
/// node from the agent's loopback status listener.
pub fn agent_page(lab: &Lab, node: &str, path: &str) -> serde_json::Value {
    let fetch = format!(
        "import urllib.request; \
         print(urllib.request.urlopen('http://127.0.0.1:9901{path}', timeout=2).read().decode())"
    );
    let out = lab.exec_ok(node, &["python3", "-c", &fetch]);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{node}: {path} is not JSON ({e}): {out}"))
}

/// The process id of the khagent on `node`, as systemd knows it.
pub fn agent_pid(lab: &Lab, node: &str) -> String {
    sh(
        lab,
        node,
        "systemctl show khagent.service -p MainPID --value",
    )
}

/// The names of the backends the agent on `node` balances to (its `/status`), sorted.
pub fn agent_backends(lab: &Lab, node: &str) -> Vec<String> {
    let mut names: Vec<String> = agent_page(lab, node, "/status")["backends"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|b| b["name"].as_str().map(str::to_owned))
        .collect();
    names.sort();
    names
}

/// Runs a shell line in a node; it must succeed; its trimmed stdout.
pub fn sh(lab: &Lab, node: &str, script: &str) -> String {
    let out = lab.exec(node, &["sh", "-c", script]);
    assert!(out.status.success(), "{node}: {script}: {}", text(&out));
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// The one cluster directory khactl made under `--state-dir` (named after the cluster).
pub fn cluster_state(base: &Path) -> Option<PathBuf> {
    std::fs::read_dir(base)
        .ok()?
        .flatten()
        .map(|e| e.path())
        .find(|p| p.is_dir())
}

/// The one JSON document `--output json` prints on stdout.
pub fn json_of(out: &Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("stdout is not one JSON document ({e}):\n{}", text(out)))
}

/// Every substring shaped like a bootstrap token (`[a-z0-9]{6}.[a-z0-9]{16}`, not inside a
/// longer word): what must never appear where a token could leak.
pub fn token_shaped(text: &str) -> Vec<String> {
    let b = text.as_bytes();
    let tok = |c: u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    let mut found = Vec::new();
    for i in 0..b.len().saturating_sub(22) {
        let before_ok = i == 0 || !tok(b[i - 1]);
        let after_ok = b.get(i + 23).is_none_or(|c| !tok(*c));
        if before_ok
            && after_ok
            && b[i..i + 6].iter().all(|c| tok(*c))
            && b[i + 6] == b'.'
            && b[i + 7..i + 23].iter().all(|c| tok(*c))
        {
            found.push(text[i..i + 23].to_owned());
        }
    }
    found
}

/// Runs `khactl VERB -i INVENTORY --state-dir STATE EXTRA…` against the lab.
pub fn khactl(lab: &Lab, verb: &str, state: &Path, extra: &[&str]) -> Output {
    khactl_with(lab, &[verb], &lab.inventory_path(), state, extra)
}

/// Runs `khactl VERB… -i INVENTORY --state-dir STATE EXTRA…` with another inventory of the
/// lab's nodes (one without some of them, say).
pub fn khactl_with(
    lab: &Lab,
    verb: &[&str],
    inventory: &Path,
    state: &Path,
    extra: &[&str],
) -> Output {
    // The network rule: nothing goes to a lab address unless the lab's bridge is up. A node
    // may be down on purpose (a test of `--unreachable` or of a dead node).
    assert!(
        lab.bridge_up(),
        "the lab's bridge must be up before khactl may connect to its addresses"
    );
    Command::new(khactl_bin())
        .args(verb)
        .arg("-i")
        .arg(inventory)
        .arg("--state-dir")
        .arg(state)
        .args(extra)
        .env_remove("KHACTL_STATE_DIR")
        .output()
        .expect("run khactl")
}
