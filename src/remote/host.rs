//! The seam every remote command passes: a [`Host`] runs commands (SSH in production, a
//! recording fake in unit tests), and a [`NodeHandle`] wraps it with the two rules no command
//! may skip: in a read-only run only read-only commands run, and every command and its output
//! reach the [`Observer`] (the run log and `-v`), secrets redacted.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use super::command::{CommandOutput, RemoteCommand};
use super::error::RemoteError;

/// A boxed future, so hosts of different kinds can sit behind `dyn Host`. khactl drives
/// nodes from one thread, so it need not be `Send`.
pub type HostFuture<'a, T> = Pin<Box<dyn Future<Output = T> + 'a>>;

/// A machine commands run on.
pub trait Host {
    /// The inventory name of the node.
    fn node(&self) -> &str;

    /// Runs a command; a non-zero exit is output, not an error.
    fn exec<'a>(
        &'a self,
        cmd: &'a RemoteCommand,
    ) -> HostFuture<'a, Result<CommandOutput, RemoteError>>;

    /// Releases the connection. A failure is worth a line in the run log, not a failed run:
    /// an SSH master left behind exits by itself once idle.
    fn close(self: Box<Self>) -> HostFuture<'static, Result<(), String>>;

    /// Starts `cmd` and keeps it running until the returned [`Held`] is dropped, which closes
    /// its stdin (and the connection dying does the same): the remote half of a lock. Returns
    /// the first line it printed. Hosts that cannot keep a command running run it to the end.
    fn hold<'a>(
        &'a self,
        cmd: &'a RemoteCommand,
    ) -> HostFuture<'a, Result<(String, Held), RemoteError>> {
        Box::pin(async move {
            let out = self.exec(cmd).await?;
            let first = out
                .stdout_str()
                .lines()
                .next()
                .unwrap_or_default()
                .to_owned();
            Ok((first, Held::default()))
        })
    }
}

/// A remote command kept running; dropping it closes the command's stdin, so it ends.
#[derive(Default)]
pub struct Held(Option<Box<dyn std::any::Any>>);

impl Held {
    pub fn new(inner: Box<dyn std::any::Any>) -> Self {
        Self(Some(inner))
    }
}

impl fmt::Debug for Held {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_some() {
            "Held(running)"
        } else {
            "Held(none)"
        })
    }
}

/// Sees every command a [`NodeHandle`] runs. The report implements it.
pub trait Observer {
    /// A command about to run.
    fn command(&self, node: &str, cmd: &RemoteCommand);
    /// What it produced. Show it only through [`RemoteCommand::visible_output`], which
    /// drops a secret stdout and blanks the command's known secrets.
    fn output(&self, node: &str, cmd: &RemoteCommand, out: &CommandOutput);
    /// Something about the connection worth keeping in the log (not a command).
    fn note(&self, node: &str, message: &str);
}

/// Whether a run may change nodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// `--dry-run` and read-only commands such as `status`: only commands marked
    /// [`RemoteCommand::read_only`] run; anything else is refused before it reaches the node.
    ReadOnly,
    ReadWrite,
}

/// A connected node as phases see it: the host, the access rule and the observer.
pub struct NodeHandle {
    host: Box<dyn Host>,
    access: Access,
    observer: Arc<dyn Observer>,
}

impl fmt::Debug for NodeHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NodeHandle")
            .field("node", &self.node())
            .field("access", &self.access)
            .finish()
    }
}

impl NodeHandle {
    pub fn new(host: Box<dyn Host>, access: Access, observer: Arc<dyn Observer>) -> Self {
        Self {
            host,
            access,
            observer,
        }
    }

    pub fn node(&self) -> &str {
        self.host.node()
    }

    pub fn access(&self) -> Access {
        self.access
    }

    /// Runs a command through the gate; a non-zero exit is returned as output.
    pub async fn run_unchecked(&self, cmd: &RemoteCommand) -> Result<CommandOutput, RemoteError> {
        if self.access == Access::ReadOnly && !cmd.is_read_only() {
            return Err(RemoteError::NotReadOnly {
                node: self.node().to_owned(),
                command: cmd.label(),
            });
        }
        self.observer.command(self.node(), cmd);
        let out = self.host.exec(cmd).await?;
        self.observer.output(self.node(), cmd, &out);
        Ok(out)
    }

    /// Runs a command and turns a non-zero exit into an error carrying its last lines.
    pub async fn run(&self, cmd: &RemoteCommand) -> Result<CommandOutput, RemoteError> {
        let out = self.run_unchecked(cmd).await?;
        self.check(cmd, out)
    }

    /// A finished command's output, or the error that names this node, the command, its
    /// exit status and its last lines (secrets blanked, a secret stdout left out).
    pub fn check(
        &self,
        cmd: &RemoteCommand,
        out: CommandOutput,
    ) -> Result<CommandOutput, RemoteError> {
        if out.success() {
            return Ok(out);
        }
        Err(RemoteError::Failed {
            node: self.node().to_owned(),
            command: cmd.label(),
            status: out
                .status
                .map_or_else(|| "by signal".to_owned(), |s| s.to_string()),
            tail: cmd.visible_output(&out).tail(10),
        })
    }

    /// Starts a command that keeps running until the returned [`Held`] is dropped (see
    /// [`Host::hold`]), through the same gate and log as [`Self::run`].
    pub async fn hold(&self, cmd: &RemoteCommand) -> Result<(String, Held), RemoteError> {
        if self.access == Access::ReadOnly && !cmd.is_read_only() {
            return Err(RemoteError::NotReadOnly {
                node: self.node().to_owned(),
                command: cmd.label(),
            });
        }
        self.observer.command(self.node(), cmd);
        let (first, held) = self.host.hold(cmd).await?;
        self.observer
            .note(self.node(), &format!("{}: {first}", cmd.label()));
        Ok((first, held))
    }

    /// Closes the connection; a failure is told to the observer.
    pub async fn close(self) {
        let node = self.node().to_owned();
        if let Err(e) = self.host.close().await {
            self.observer.note(&node, &e);
        }
    }
}
