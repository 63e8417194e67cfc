//! The one way to reach a node. Everything a phase does on a host goes through here.
//!
//! - [`RemoteCommand`]: a command as an argument list (never a formatted shell line);
//!   secrets travel on stdin and are redacted wherever the command or its output is shown.
//! - [`Host`]: a machine commands run on. [`SshHost`] is one multiplexed SSH connection per
//!   node through the system `ssh` client (the `openssh` crate), host keys trusted on first
//!   use into the cluster's own `known_hosts`, `sudo -n` for non-root users, per-command
//!   timeouts. Unit tests use a recording fake (`fake`).
//! - [`NodeHandle`]: a host as phases see it. It enforces the read-only rule of a dry run
//!   ([`Access`]) and tells the [`Observer`] (the run log) about every command and its
//!   output, so no command can skip either.
//! - [`Fleet`]: all connected nodes, with bounded parallelism over them.
//!
//! This module owns `openssh`; nothing else imports it.

mod command;
mod error;
#[cfg(test)]
pub mod fake;
mod fleet;
mod host;
mod ssh;

pub use command::{CommandOutput, REDACTED, RemoteCommand};
pub use error::RemoteError;
pub use fleet::{Fleet, NodeFailure};
pub use host::{Access, Held, Host, HostFuture, NodeHandle, Observer};
pub use ssh::{ConnectOptions, Connector, SshConnector, SshHost, find_ssh_client, ssh_config_path};
