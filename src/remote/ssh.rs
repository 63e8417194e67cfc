//! One multiplexed SSH connection per node, through the system `ssh` client.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use openssh::{KnownHosts, Session, SessionBuilder, Stdio};
use tokio::io::AsyncWriteExt;

use super::command::{CommandOutput, RemoteCommand};
use super::error::RemoteError;
use crate::inventory::SshTarget;

/// Settings shared by every connection of one run.
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    /// The cluster's own known_hosts: trust on first use, refuse a changed key.
    pub known_hosts: PathBuf,
    /// Where the ControlMaster sockets live; keep the path short (sun_path is 108 bytes).
    pub control_dir: PathBuf,
    pub connect_timeout: Duration,
}

/// Fails early, with a clear message, when there is no `ssh` to drive.
pub fn find_ssh_client() -> Result<PathBuf, RemoteError> {
    which::which("ssh").map_err(|_| RemoteError::NoSshClient)
}

/// A connected node.
pub struct SshHost {
    target: SshTarget,
    session: Session,
}

impl SshHost {
    pub async fn connect(target: &SshTarget, opts: &ConnectOptions) -> Result<Self, RemoteError> {
        let mut b = SessionBuilder::default();
        b.user(target.user.clone())
            .port(target.port.get())
            .known_hosts_check(KnownHosts::Add)
            .user_known_hosts_file(&opts.known_hosts)
            .control_directory(&opts.control_dir)
            .connect_timeout(opts.connect_timeout)
            .server_alive_interval(Duration::from_secs(15));
        if let Some(key) = &target.identity_file {
            b.keyfile(key);
        }
        if let Some(bastion) = &target.bastion {
            let mut jump = String::new();
            if let Some(user) = &bastion.user {
                jump.push_str(user);
                jump.push('@');
            }
            jump.push_str(&bastion.address);
            if let Some(port) = bastion.port {
                jump.push(':');
                jump.push_str(&port.to_string());
            }
            b.jump_hosts([jump]);
        }
        let destination = target.address.to_string();
        let session = b
            .connect_mux(&destination)
            .await
            .map_err(|e| connect_error(target, &opts.known_hosts, &e))?;
        Ok(Self {
            target: target.clone(),
            session,
        })
    }

    pub fn node(&self) -> &str {
        self.target.node.as_str()
    }

    pub fn target(&self) -> &SshTarget {
        &self.target
    }

    /// Runs a command; a non-zero exit is returned as output, not as an error.
    pub async fn run_unchecked(&self, cmd: &RemoteCommand) -> Result<CommandOutput, RemoteError> {
        let argv = self.with_privilege(cmd);
        let Some((program, args)) = argv.split_first() else {
            return Ok(CommandOutput {
                status: Some(0),
                stdout: Vec::new(),
                stderr: Vec::new(),
            });
        };
        let mut c = self.session.command(program.as_str());
        c.args(args.iter().map(String::as_str))
            .stdin(if cmd.stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let started = Instant::now();
        let work = async {
            let mut child = c.spawn().await.map_err(|e| self.broken(cmd, &e))?;
            if let Some(data) = &cmd.stdin
                && let Some(mut stdin) = child.stdin().take()
            {
                stdin
                    .write_all(data)
                    .await
                    .map_err(|e| self.broken(cmd, &e))?;
                stdin.shutdown().await.map_err(|e| self.broken(cmd, &e))?;
            }
            child
                .wait_with_output()
                .await
                .map_err(|e| self.broken(cmd, &e))
        };
        let out = tokio::time::timeout(cmd.timeout, work)
            .await
            .map_err(|_| RemoteError::Timeout {
                node: self.node().to_owned(),
                command: cmd.label(),
                timeout: started.elapsed(),
            })??;
        Ok(CommandOutput {
            status: out.status.code(),
            stdout: out.stdout,
            stderr: out.stderr,
        })
    }

    /// Runs a command and turns a non-zero exit into an error carrying its last lines.
    pub async fn run(&self, cmd: &RemoteCommand) -> Result<CommandOutput, RemoteError> {
        let out = self.run_unchecked(cmd).await?;
        if out.success() {
            Ok(out)
        } else {
            Err(RemoteError::Failed {
                node: self.node().to_owned(),
                command: cmd.label(),
                status: out
                    .status
                    .map_or_else(|| "by signal".to_owned(), |s| s.to_string()),
                tail: out.tail(10),
            })
        }
    }

    pub async fn close(self) {
        // Closing only tears down the ControlMaster; a failure leaves a socket in our
        // private control dir, which the next run's builder cleans up.
        if self.session.close().await.is_err() {}
    }

    fn with_privilege(&self, cmd: &RemoteCommand) -> Vec<String> {
        if self.target.sudo && self.target.user != "root" {
            // -n: never prompt (there is no terminal); fail clearly instead.
            let mut argv = vec!["sudo".to_owned(), "-n".to_owned(), "--".to_owned()];
            argv.extend(cmd.argv.iter().cloned());
            argv
        } else {
            cmd.argv.clone()
        }
    }

    fn broken(&self, cmd: &RemoteCommand, e: &dyn std::fmt::Display) -> RemoteError {
        RemoteError::Disconnected {
            node: self.node().to_owned(),
            command: cmd.label(),
            detail: e.to_string(),
        }
    }
}

fn connect_error(target: &SshTarget, known_hosts: &Path, e: &openssh::Error) -> RemoteError {
    let detail = error_chain(e);
    if detail.contains("REMOTE HOST IDENTIFICATION HAS CHANGED")
        || detail.contains("Host key verification failed")
    {
        return RemoteError::HostKeyChanged {
            node: target.node.to_string(),
            address: target.address.to_string(),
            known_hosts: known_hosts.to_path_buf(),
        };
    }
    RemoteError::Connect {
        node: target.node.to_string(),
        address: format!("{}:{}", target.address, target.port),
        detail,
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut parts = vec![e.to_string()];
    let mut source = e.source();
    while let Some(s) = source {
        parts.push(s.to_string());
        source = s.source();
    }
    parts
        .join(": ")
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}
