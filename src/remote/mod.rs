//! The one way to reach a node. Everything a phase does on a host goes through here.
//!
//! - [`RemoteCommand`]: a command as an argument list (never a formatted shell line);
//!   secrets travel on stdin and are redacted wherever the command is shown.
//! - [`SshHost`]: one multiplexed SSH connection per node through the system `ssh`
//!   client (the `openssh` crate), host keys trusted on first use into the cluster's
//!   own `known_hosts`, `sudo -n` for non-root users, per-command timeouts.
//! - [`Fleet`]: all connected nodes, with bounded parallelism over them.
//!
//! This module owns `openssh`; nothing else imports it.

mod command;
mod error;
mod fleet;
mod ssh;

pub use command::{CommandOutput, RemoteCommand};
pub use error::RemoteError;
pub use fleet::{Fleet, NodeFailure};
pub use ssh::{ConnectOptions, SshHost, find_ssh_client};
