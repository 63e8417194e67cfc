//! One multiplexed SSH connection per node, through the system `ssh` client.

use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use openssh::{ControlPersist, KnownHosts, Session, SessionBuilder, Stdio};
use tokio::io::AsyncWriteExt;

use super::command::{CommandOutput, RemoteCommand};
use super::error::RemoteError;
use super::host::{Held, Host, HostFuture};
use crate::inventory::{Bastion, SshTarget};

/// A master left behind by a killed khactl exits after this long without sessions.
const CONTROL_PERSIST_SECS: NonZeroUsize = NonZeroUsize::MIN.saturating_add(299);
/// While khactl runs, each master gets a session this often, so its idle timer (which only
/// counts while no session is open) never reaches [`CONTROL_PERSIST_SECS`]: a long step on one
/// node (a kubeadm join waits up to 14 minutes) must not close the other nodes' connections.
const KEEPALIVE_EVERY: Duration = Duration::from_secs(120);

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
    session: Arc<Session>,
    keepalive: Option<tokio::task::JoinHandle<()>>,
}

impl Drop for SshHost {
    fn drop(&mut self) {
        if let Some(task) = &self.keepalive {
            task.abort();
        }
    }
}

/// Opens an empty session (`true`) every [`KEEPALIVE_EVERY`] until aborted. It is not a step of
/// any phase and changes nothing, so it bypasses the run log.
fn keep_alive(session: Arc<Session>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(KEEPALIVE_EVERY).await;
            let _ = session
                .command("true")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .await;
        }
    })
}

impl SshHost {
    pub async fn connect(target: &SshTarget, opts: &ConnectOptions) -> Result<Self, RemoteError> {
        // ssh splits this option's value at whitespace (it takes a list of files): unquoted, a
        // state directory with a space named two files that did not exist, and a changed host
        // key was accepted as new.
        let known_hosts =
            ssh_config_path(&opts.known_hosts).map_err(|detail| connect_failure(target, detail))?;
        let mut b = SessionBuilder::default();
        b.user(target.user.clone())
            .port(target.port.get())
            .known_hosts_check(KnownHosts::Add)
            .user_known_hosts_file(&known_hosts)
            .control_directory(&opts.control_dir)
            .connect_timeout(opts.connect_timeout)
            .server_alive_interval(Duration::from_secs(15))
            .control_persist(ControlPersist::IdleFor(CONTROL_PERSIST_SECS));
        if let Some(key) = &target.identity_file {
            b.keyfile(key);
        }
        if let Some(bastion) = &target.bastion {
            // `ProxyJump` hops do not inherit the builder's options (known_hosts, key), so
            // the jump host is described in an ssh_config of our own: the same TOFU policy
            // and the same key apply to it as to the node.
            let config = jump_config(target, bastion, &opts.known_hosts)
                .map_err(|detail| connect_failure(target, detail))?;
            let path = opts.control_dir.join(format!("{}.jump.conf", target.node));
            write_private(&path, &config)
                .map_err(|e| connect_failure(target, format!("writing {}: {e}", path.display())))?;
            b.config_file(&path);
            b.jump_hosts([JUMP_ALIAS]);
        }
        let destination = target.address.to_string();
        let session = b
            .connect_mux(&destination)
            .await
            .map_err(|e| connect_error(target, &opts.known_hosts, &e))?;
        let session = Arc::new(session);
        Ok(Self {
            target: target.clone(),
            keepalive: Some(keep_alive(Arc::clone(&session))),
            session,
        })
    }

    pub fn target(&self) -> &SshTarget {
        &self.target
    }

    async fn exec_ssh(&self, cmd: &RemoteCommand) -> Result<CommandOutput, RemoteError> {
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
                node: self.target.node.to_string(),
                command: cmd.label(),
                timeout: started.elapsed(),
            })??;
        Ok(CommandOutput {
            status: out.status.code(),
            stdout: out.stdout,
            stderr: out.stderr,
        })
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
            node: self.target.node.to_string(),
            command: cmd.label(),
            detail: e.to_string(),
        }
    }
}

impl Host for SshHost {
    fn node(&self) -> &str {
        self.target.node.as_str()
    }

    fn exec<'a>(
        &'a self,
        cmd: &'a RemoteCommand,
    ) -> HostFuture<'a, Result<CommandOutput, RemoteError>> {
        Box::pin(self.exec_ssh(cmd))
    }

    fn hold<'a>(
        &'a self,
        cmd: &'a RemoteCommand,
    ) -> HostFuture<'a, Result<(String, Held), RemoteError>> {
        Box::pin(async move {
            use tokio::io::AsyncBufReadExt;
            let argv = self.with_privilege(cmd);
            let Some((program, args)) = argv.split_first() else {
                return Ok((String::new(), Held::default()));
            };
            let mut c = Session::arc_command(Arc::clone(&self.session), program.as_str());
            c.args(args.iter().map(String::as_str))
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::null());
            let mut child = c.spawn().await.map_err(|e| self.broken(cmd, &e))?;
            let Some(stdout) = child.stdout().take() else {
                return Err(self.broken(cmd, &"no stdout"));
            };
            let mut lines = tokio::io::BufReader::new(stdout).lines();
            let first = tokio::time::timeout(cmd.timeout, lines.next_line())
                .await
                .map_err(|_| RemoteError::Timeout {
                    node: self.target.node.to_string(),
                    command: cmd.label(),
                    timeout: cmd.timeout,
                })?
                .map_err(|e| self.broken(cmd, &e))?
                .unwrap_or_default();
            Ok((first, Held::new(Box::new((child, lines)))))
        })
    }

    fn close(self: Box<Self>) -> HostFuture<'static, Result<(), String>> {
        Box::pin(async move {
            let mut this = *self;
            // Stop the keep-alive task and wait until it has dropped its handle on the session.
            if let Some(task) = this.keepalive.take() {
                task.abort();
                let _ = task.await;
            }
            let session = Arc::clone(&this.session);
            drop(this);
            let Ok(session) = Arc::try_unwrap(session) else {
                return Err(format!(
                    "the connection was still in use; its master process exits by itself \
                     after {CONTROL_PERSIST_SECS} s idle"
                ));
            };
            session.close().await.map_err(|e| {
                format!(
                    "closing the SSH connection failed ({e}); its master process exits by \
                     itself after {CONTROL_PERSIST_SECS} s idle"
                )
            })
        })
    }
}

/// Opens hosts for a run; [`SshConnector`] in production, a fake in unit tests.
pub trait Connector {
    fn connect<'a>(
        &'a self,
        target: &'a SshTarget,
        opts: &'a ConnectOptions,
    ) -> HostFuture<'a, Result<Box<dyn Host>, RemoteError>>;
}

/// Connects with the system `ssh` client, one multiplexed master per node.
pub struct SshConnector;

impl Connector for SshConnector {
    fn connect<'a>(
        &'a self,
        target: &'a SshTarget,
        opts: &'a ConnectOptions,
    ) -> HostFuture<'a, Result<Box<dyn Host>, RemoteError>> {
        Box::pin(async move {
            let host = SshHost::connect(target, opts).await?;
            Ok(Box::new(host) as Box<dyn Host>)
        })
    }
}

const JUMP_ALIAS: &str = "khactl-jump";

/// The ssh_config block for a node's jump host. Values come from the inventory, so
/// anything that could end a directive (whitespace, quotes, newlines) is refused.
fn jump_config(
    target: &SshTarget,
    bastion: &Bastion,
    known_hosts: &Path,
) -> Result<String, String> {
    let plain = |what: &str, v: &str| -> Result<String, String> {
        if v.is_empty()
            || v.chars()
                .any(|c| c.is_whitespace() || c == '"' || c == '\\' || c.is_control())
        {
            Err(format!(
                "bastion {what} {v:?} cannot be used in an ssh configuration"
            ))
        } else {
            Ok(v.to_owned())
        }
    };
    let quoted = |what: &str, p: &Path| -> Result<String, String> {
        ssh_config_path(p).map_err(|e| format!("{what}: {e}"))
    };
    let mut c = format!("Host {JUMP_ALIAS}\n");
    c.push_str(&format!(
        "  HostName {}\n",
        plain("address", &bastion.address)?
    ));
    c.push_str(&format!(
        "  User {}\n",
        plain("user", bastion.user.as_deref().unwrap_or(&target.user))?
    ));
    c.push_str(&format!(
        "  Port {}\n",
        bastion.port.map_or(22, |p| p.get())
    ));
    if let Some(key) = &target.identity_file {
        c.push_str(&format!(
            "  IdentityFile {}\n  IdentitiesOnly yes\n",
            quoted("identity file", key)?
        ));
    }
    c.push_str(&format!(
        "  UserKnownHostsFile {}\n",
        quoted("known_hosts", known_hosts)?
    ));
    c.push_str("  StrictHostKeyChecking accept-new\n  BatchMode yes\n");
    Ok(c)
}

/// Creates `path` with `text`, 0600, failing if anything is already there: a file is never
/// overwritten and a symlink planted where the config goes is never followed.
fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)?;
    f.write_all(text.as_bytes())
}

/// `path` as one ssh_config argument (`-o UserKnownHostsFile=…`, or a line of our jump config):
/// double-quoted, so whitespace and `'` or `#` stay part of it. What ssh's parser or its
/// expansions would read otherwise is refused rather than escaped, because the escapes differ
/// between OpenSSH versions and a misread known_hosts path silently switches host-key pinning
/// off: `"` and `\` (quoting), `%` (tokens such as `%h`), `$` (`${VAR}`), a leading `~`, control
/// characters, and a path that is not UTF-8.
pub fn ssh_config_path(path: &Path) -> Result<String, String> {
    let Some(text) = path.to_str() else {
        return Err(format!(
            "{} is not UTF-8, which ssh cannot be given",
            path.display()
        ));
    };
    let bad = text
        .chars()
        .find(|c| matches!(c, '"' | '\\' | '%' | '$') || c.is_control());
    if let Some(c) = bad {
        return Err(format!(
            "ssh cannot be given the path {text:?}: its {c:?} would be read as quoting or \
             expanded by ssh; use a directory without '\"', '\\\\', '%', '$' or control characters"
        ));
    }
    if text.starts_with('~') || !path.is_absolute() {
        return Err(format!(
            "ssh cannot be given the path {text:?}: it must be absolute (ssh expands '~')"
        ));
    }
    Ok(format!("\"{text}\""))
}

fn connect_failure(target: &SshTarget, detail: String) -> RemoteError {
    RemoteError::Connect {
        node: target.node.to_string(),
        address: format!("{}:{}", target.address, target.port),
        detail,
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
    connect_failure(target, detail)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inventory::{NodeName, Port};

    fn target() -> SshTarget {
        SshTarget {
            node: NodeName::new("w1").unwrap(),
            address: "10.0.0.14".parse().unwrap(),
            user: "root".into(),
            port: Port::new(22).unwrap(),
            identity_file: Some("/keys/my key".into()),
            sudo: false,
            bastion: None,
        }
    }

    #[test]
    fn jump_host_gets_our_key_and_our_known_hosts() {
        let b = Bastion {
            address: "10.0.0.11".into(),
            user: Some("jump".into()),
            port: None,
        };
        let c = jump_config(&target(), &b, Path::new("/state/known_hosts")).unwrap();
        assert!(c.contains("HostName 10.0.0.11\n"), "{c}");
        assert!(c.contains("User jump\n"), "{c}");
        assert!(c.contains("IdentityFile \"/keys/my key\"\n"), "{c}");
        assert!(
            c.contains("UserKnownHostsFile \"/state/known_hosts\"\n"),
            "{c}"
        );
        let spaced = jump_config(&target(), &b, Path::new("/my state/known_hosts")).unwrap();
        assert!(
            spaced.contains("UserKnownHostsFile \"/my state/known_hosts\"\n"),
            "{spaced}"
        );
        assert!(c.contains("StrictHostKeyChecking accept-new"), "{c}");
    }

    #[test]
    fn paths_reach_ssh_config_quoted_or_are_refused() {
        assert_eq!(
            ssh_config_path(Path::new("/srv/khactl state/it's #1/known_hosts")).unwrap(),
            "\"/srv/khactl state/it's #1/known_hosts\""
        );
        for bad in [
            "/a\"b/known_hosts",
            "/a\\b/known_hosts",
            "/50%/known_hosts",
            "/${HOME}/known_hosts",
            "/a\nb/known_hosts",
            "~/known_hosts",
            "relative/known_hosts",
        ] {
            assert!(ssh_config_path(Path::new(bad)).is_err(), "{bad}");
        }
    }

    /// The real ssh parses the quoted value as one file: `ssh -G` prints the list of known_hosts
    /// files joined by single spaces, so a path with two spaces in a row comes back whole only
    /// if ssh took it as one file (unquoted, it would be two files and one space).
    #[test]
    fn the_system_ssh_reads_a_quoted_path_with_spaces_as_one_file() {
        let path = Path::new("/state  dir/it's/known_hosts");
        let option = format!("UserKnownHostsFile={}", ssh_config_path(path).unwrap());
        let out = std::process::Command::new("ssh")
            .args(["-G", "-F", "/dev/null", "-o", &option, "node.invalid"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        let config = String::from_utf8_lossy(&out.stdout);
        let line = config
            .lines()
            .find(|l| l.starts_with("userknownhostsfile "))
            .unwrap();
        assert_eq!(line, "userknownhostsfile /state  dir/it's/known_hosts");
    }

    #[test]
    fn a_config_is_created_new_and_never_through_a_symlink() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let conf = dir.path().join("w1.jump.conf");
        write_private(&conf, "Host x\n").unwrap();
        let mode = std::fs::metadata(&conf).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        // Already there: refused, not overwritten.
        assert!(write_private(&conf, "Host evil\n").is_err());
        assert_eq!(std::fs::read_to_string(&conf).unwrap(), "Host x\n");
        // A symlink planted where the file goes: refused, its target untouched.
        let target = dir.path().join("target");
        let planted = dir.path().join("w2.jump.conf");
        std::os::unix::fs::symlink(&target, &planted).unwrap();
        assert!(write_private(&planted, "Host x\n").is_err());
        assert!(!target.exists());
    }

    #[test]
    fn jump_host_values_cannot_inject_directives() {
        let b = Bastion {
            address: "10.0.0.11\n  ProxyCommand evil".into(),
            user: None,
            port: None,
        };
        assert!(jump_config(&target(), &b, Path::new("/k")).is_err());
    }
}
