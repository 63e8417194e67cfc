//! What every integration test shares: the lab of real nodes on this machine ([`Lab`]), the
//! registry of lab indexes ([`indexes`]), the khactl binary under test, the root check and a
//! deadline-bound polling helper. Tests never sleep to synchronise: they poll with [`wait_for`].

#![allow(
    dead_code,
    unused_imports,
    reason = "each test module uses a different part of the harness"
)]

pub mod claim;
pub mod indexes;
pub mod lab;
pub mod probe;
pub mod run;

use std::path::PathBuf;
use std::time::{Duration, Instant};

pub use claim::require_root;
pub use lab::{Lab, LabNode, LabOptions, NodeInit, NodeRole};

/// The khactl binary cargo built for this test run.
pub fn khactl_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_khactl"))
}

/// The repository root (where `Cargo.toml`, `tests/lab/lab.sh` and `inventories/` live).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
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
