//! Errors from reaching or running things on a node. Each names the node; the hint
//! says what the user can do.

use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    #[error("the local `ssh` client was not found in PATH")]
    NoSshClient,

    #[error("{node}: cannot connect to {address} over SSH: {detail}")]
    Connect {
        node: String,
        address: String,
        detail: String,
    },

    #[error(
        "{node}: the SSH host key of {address} has changed since it was first trusted \
         (recorded in {known_hosts})"
    )]
    HostKeyChanged {
        node: String,
        address: String,
        known_hosts: PathBuf,
    },

    #[error("{node}: `{command}` did not finish within {timeout:?}")]
    Timeout {
        node: String,
        command: String,
        timeout: Duration,
    },

    #[error("{node}: the SSH connection broke while running `{command}`: {detail}")]
    Disconnected {
        node: String,
        command: String,
        detail: String,
    },

    /// A bug, not a user error: a phase tried to change a node in a read-only run.
    #[error(
        "internal error: {node}: `{command}` changes the node, but this run is read-only \
         (--dry-run or a read-only command); a phase must hand changes to the gate"
    )]
    NotReadOnly { node: String, command: String },

    #[error("{node}: `{command}` failed (exit {status}){}", tail_suffix(.tail))]
    Failed {
        node: String,
        command: String,
        status: String,
        tail: String,
    },
}

fn tail_suffix(tail: &str) -> String {
    if tail.trim().is_empty() {
        String::new()
    } else {
        let indented: Vec<String> = tail.lines().map(|l| format!("    {l}")).collect();
        format!(":\n{}", indented.join("\n"))
    }
}

impl RemoteError {
    /// The node this error is about, when it is about one.
    pub fn node(&self) -> Option<&str> {
        match self {
            RemoteError::NoSshClient => None,
            RemoteError::Connect { node, .. }
            | RemoteError::HostKeyChanged { node, .. }
            | RemoteError::Timeout { node, .. }
            | RemoteError::Disconnected { node, .. }
            | RemoteError::NotReadOnly { node, .. }
            | RemoteError::Failed { node, .. } => Some(node),
        }
    }

    /// What the user can do about it.
    pub fn hint(&self) -> Option<String> {
        match self {
            RemoteError::NoSshClient => Some(
                "install the OpenSSH client (Debian/Ubuntu: apt-get install openssh-client)".into(),
            ),
            RemoteError::Connect { node, .. } => Some(format!(
                "check that {node} is up, that sshd runs on it, and that the inventory's ssh \
                 user, port and identityFile are right; then run the command again"
            )),
            RemoteError::HostKeyChanged {
                address,
                known_hosts,
                ..
            } => Some(format!(
                "if the machine was reinstalled, remove the old key with \
                 `ssh-keygen -R {address} -f {}` and run again; otherwise someone may be \
                 intercepting the connection",
                known_hosts.display()
            )),
            RemoteError::Timeout { .. } => {
                Some("the node may be overloaded or the network slow; run again".into())
            }
            RemoteError::Disconnected { node, .. } => Some(format!(
                "check that {node} is still up; then run the command again"
            )),
            RemoteError::NotReadOnly { .. } => {
                Some("this is a bug in khactl; please report it with the run log".into())
            }
            RemoteError::Failed { .. } => None,
        }
    }
}
