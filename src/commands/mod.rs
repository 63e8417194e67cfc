//! The CLI's verbs. A command that reaches nodes is its list of phases plus its typed result:
//! it opens a session (`crate::session`), runs its phases and turns what they did into a
//! result that `main` prints as text or JSON. Commands never print.

pub mod adopt_pki;
pub mod failover_html;
pub mod failover_test;
pub mod grow;
pub mod remove_node;
pub mod render;
pub mod reset;
pub mod status;
pub mod up;
pub mod validate;

pub use crate::session::UsageError;

/// The last lines of `add-master`'s and `remove-node`'s text: the etcd voters, the VIP
/// holder, the run log.
pub fn membership_lines(
    voters: &[String],
    vip: &up::VipResult,
    log: Option<&std::path::Path>,
) -> Vec<String> {
    let mut lines = Vec::new();
    if !voters.is_empty() {
        lines.push(format!("etcd voters: {}", voters.join(", ")));
    }
    if let Some(h) = &vip.holder {
        lines.push(format!("VIP {} held by {h}", vip.address));
    }
    lines.push(log_line(log));
    lines
}

/// The last line of a command's text: where its run log is.
pub fn log_line(log: Option<&std::path::Path>) -> String {
    format!(
        "log: {}",
        log.map(|p| p.display().to_string()).unwrap_or_default()
    )
}

/// How khactl exits; documented in `khactl --help` and `docs/operations.md`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitCode {
    Ok = 0,
    /// The operation failed on one or more nodes.
    Failed = 1,
    /// Bad usage, inventory or local setup; nothing was touched.
    Usage = 2,
    /// Ctrl-C: the run stopped between steps.
    Interrupted = 130,
}
