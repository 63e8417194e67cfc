//! The CLI's verbs. Each resolves its settings once, then hands the work to phases.
//! Thin on purpose: what a command does is readable as its list of phases.

pub mod up;

/// How khactl exits; documented in `khactl --help` and `docs/operations.md`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitCode {
    Ok = 0,
    /// The operation failed on one or more nodes.
    Failed = 1,
    /// Bad usage, inventory or local setup; nothing was touched.
    Usage = 2,
}

/// An error that must exit with [`ExitCode::Usage`]: found before any connection.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);
