//! What every integration test shares: the lab of real nodes on this machine ([`Lab`]), the
//! registry of lab indexes ([`indexes`]), the khactl binary under test, the root check and a
//! deadline-bound polling helper. Tests never sleep to synchronise: they poll with [`wait_for`].

#![allow(
    dead_code,
    unused_imports,
    reason = "each test module uses a different part of the harness"
)]

pub mod indexes;
pub mod lab;

use std::path::PathBuf;
use std::time::{Duration, Instant};

pub use lab::{Lab, LabNode, NodeRole};

/// The khactl binary cargo built for this test run.
pub fn khactl_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_khactl"))
}

/// The repository root (where `Cargo.toml`, `tests/lab/lab.sh` and `inventories/` live).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Lab tests need root (namespaces, bridges, mounts). Without it they must fail loudly: a lab
/// test that passes without running would hide every regression. CI runs as root.
pub fn require_root() {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let euid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().nth(1))
        .map(str::to_owned);
    assert_eq!(
        euid.as_deref(),
        Some("0"),
        "this test builds a lab of network namespaces and must run as root \
         (CI does: .ci/run); run the tests with sudo or as root"
    );
}

/// Polls `condition` every 20 ms until it holds, panicking with `what` once `timeout` passes.
pub fn wait_for(what: &str, timeout: Duration, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    loop {
        if condition() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}
