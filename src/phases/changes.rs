//! The one gate for remote changes. A phase describes a change as data; in plan mode
//! the gate shows it (files with a diff, secrets by size only, sysctls old → new), in
//! apply mode it makes it and checks it took (services: polled until active).

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use similar::TextDiff;

use crate::facts::InitSystem;
use crate::remote::{RemoteCommand, SshHost};
use crate::report::{Event, Report};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `--dry-run`: read-only commands run, changes are shown, nothing is changed.
    Plan,
    Apply,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// Write a file atomically (temp file + rename), owned by root, with `mode`.
    WriteFile {
        path: PathBuf,
        contents: Vec<u8>,
        mode: u32,
        /// Never shown, never logged: only its size.
        secret: bool,
        /// Show a line diff in the plan (text files; not certificates).
        diff: bool,
        /// What is there now, for the plan's diff; `None` when absent.
        current: Option<Vec<u8>>,
        /// Copy the current file here first, once (e.g. `/etc/fstab`).
        backup: Option<PathBuf>,
    },
    /// Set runtime sysctls, then read each back from `/proc/sys`.
    SetSysctls { values: Vec<SysctlChange> },
    /// Remove a file if it is there (`rm -f`).
    RemoveFile { path: PathBuf },
    /// `swapoff -a`.
    SwapOff,
    /// Load a kernel module now.
    LoadModule { name: String },
    /// Act on a service through the node's init system. With `check_first`, that command
    /// (argv) must succeed before the action, so a config the daemon would refuse never
    /// replaces a running one.
    Service {
        name: String,
        init: InitSystem,
        action: ServiceAction,
        check_first: Option<Vec<String>>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServiceAction {
    /// systemd re-reads unit files (OpenRC reads its scripts at each start: nothing to do).
    DaemonReload,
    /// Start at boot from now on, and start now if not running.
    EnableNow,
    /// Ask the running daemon to re-read its configuration (khagent: SIGHUP).
    Reload,
    Restart,
}

/// How long a started service may take to report itself active.
const SERVICE_ACTIVE_TIMEOUT: Duration = Duration::from_secs(15);
/// How long a restarted service must stay active before the restart counts as done. A daemon
/// that starts and then exits (port taken, a capability missing) reports active for a moment;
/// a rolling restart must stop at that node, not go on to restart the next one.
const RESTART_STABLE: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, PartialEq)]
pub struct SysctlChange {
    pub key: String,
    pub from: Option<String>,
    pub to: String,
}

impl Change {
    /// One line saying what this change does.
    pub fn headline(&self) -> String {
        match self {
            Change::WriteFile {
                path,
                contents,
                mode,
                secret,
                current,
                ..
            } => {
                let verb = match current {
                    None => "create",
                    Some(c) if c == contents => "set mode of",
                    Some(_) => "update",
                };
                let mut s = format!("{verb} {} ({mode:04o}", path.display());
                if *secret {
                    let _ = write!(s, ", secret, {} bytes", contents.len());
                }
                s.push(')');
                s
            }
            Change::SetSysctls { values } => {
                let keys: Vec<&str> = values.iter().map(|v| v.key.as_str()).collect();
                format!("set sysctl {}", keys.join(", "))
            }
            Change::RemoveFile { path } => format!("remove {}", path.display()),
            Change::SwapOff => "turn swap off (swapoff -a)".to_owned(),
            Change::LoadModule { name } => format!("load kernel module {name}"),
            Change::Service {
                name,
                init,
                action,
                check_first,
            } => {
                let mut s = match action {
                    ServiceAction::DaemonReload => format!("reload {init} unit files (for {name})"),
                    ServiceAction::EnableNow => format!("enable and start service {name} ({init})"),
                    ServiceAction::Reload => format!("reload service {name} ({init})"),
                    ServiceAction::Restart => format!("restart service {name} ({init})"),
                };
                if let Some(argv) = check_first {
                    let _ = write!(s, ", after `{}` passes", argv.join(" "));
                }
                s
            }
        }
    }

    /// The plan's view: the headline and, where useful, details (diff, old → new).
    pub fn plan_text(&self) -> String {
        let mut s = self.headline();
        match self {
            Change::WriteFile {
                contents,
                secret: false,
                diff: true,
                current,
                ..
            } => {
                let old = current
                    .as_deref()
                    .map(String::from_utf8_lossy)
                    .unwrap_or_default();
                let new = String::from_utf8_lossy(contents);
                if old != new {
                    let diff = TextDiff::from_lines(old.as_ref(), new.as_ref());
                    for line in diff.unified_diff().context_radius(2).to_string().lines() {
                        let _ = write!(s, "\n      {line}");
                    }
                }
            }
            Change::SetSysctls { values } => {
                for v in values {
                    let from = v.from.as_deref().unwrap_or("(absent)");
                    let _ = write!(s, "\n      {}: {} -> {}", v.key, from, v.to);
                }
            }
            _ => {}
        }
        s
    }
}

/// Shows or makes `changes` on one host; returns how many there were.
pub(super) async fn apply_all(
    mode: Mode,
    report: &Report,
    host: &SshHost,
    changes: &[Change],
) -> anyhow::Result<usize> {
    if mode == Mode::Plan {
        for change in changes {
            let text = change.plan_text();
            report.event(Event::Planned {
                node: host.node(),
                change: &text,
            });
        }
        return Ok(changes.len());
    }
    // A run of file writes goes to the node as one command (one round trip instead of one
    // per file); every other change is a step of its own, in order.
    let steps = changes
        .chunk_by(|a, b| matches!((a, b), (Change::WriteFile { .. }, Change::WriteFile { .. })));
    for step in steps {
        let heads: Vec<String> = step.iter().map(Change::headline).collect();
        let message = match heads.as_slice() {
            [one] => one.clone(),
            _ => format!("writing {} files", step.len()),
        };
        report.event(Event::NodeStep {
            node: host.node(),
            message: &message,
        });
        let applied = match step {
            [one] => apply_one(report, host, one).await,
            writes => write_files(report, host, writes).await,
        };
        applied.with_context(|| heads.join("; "))?;
    }
    Ok(changes.len())
}

/// Writes files atomically, each with its mode set before any byte lands (a temp file
/// made by mktemp, then renamed). Arguments come in fours — path, mode, backup, length —
/// and the contents follow each other on stdin; `head -c` reads exactly that many bytes.
const WRITE_FILES: &str = r#"set -eu
tmp=
trap 'if [ -n "$tmp" ]; then rm -f "$tmp"; fi' EXIT
while [ "$#" -ge 4 ]; do
  path=$1; mode=$2; backup=$3; len=$4; shift 4
  if [ -n "$backup" ] && [ -e "$path" ] && [ ! -e "$backup" ]; then cp -p "$path" "$backup"; fi
  mkdir -p "$(dirname "$path")"
  tmp=$(mktemp "$path.khactl.XXXXXX")
  chmod "$mode" "$tmp"
  head -c "$len" > "$tmp"
  [ "$(wc -c < "$tmp")" -eq "$len" ] || { echo "short write for $path" >&2; exit 1; }
  chown 0:0 "$tmp"
  mv -f "$tmp" "$path"
  tmp=
done
"#;

async fn write_files(report: &Report, host: &SshHost, batch: &[Change]) -> anyhow::Result<()> {
    let mut args = Vec::new();
    let mut stdin = Vec::new();
    let mut secret = false;
    for change in batch {
        if let Change::WriteFile {
            path,
            contents,
            mode,
            secret: s,
            backup,
            ..
        } = change
        {
            args.push(path.display().to_string());
            args.push(format!("{mode:04o}"));
            args.push(
                backup
                    .as_ref()
                    .map(|b| b.display().to_string())
                    .unwrap_or_default(),
            );
            args.push(contents.len().to_string());
            stdin.extend_from_slice(contents);
            secret |= *s;
        }
    }
    let cmd = RemoteCommand::script("write-files", WRITE_FILES, args);
    let cmd = if secret {
        cmd.secret_stdin(stdin)
    } else {
        cmd.stdin(stdin)
    };
    run(report, host, &cmd).await?;
    Ok(())
}

const SYSCTL_READ_BACK: &str = r#"for key in "$@"; do
  p=/proc/sys/$(printf '%s' "$key" | tr . /)
  if [ -r "$p" ]; then printf '%s=%s\n' "$key" "$(tr '\t\n' '  ' < "$p" | sed 's/ *$//')"; else printf '%s\n' "$key"; fi
done
"#;

async fn apply_one(report: &Report, host: &SshHost, change: &Change) -> anyhow::Result<()> {
    match change {
        // A lone write is a batch of one; `apply_all` sends longer runs to `write_files`.
        Change::WriteFile { .. } => write_files(report, host, std::slice::from_ref(change)).await?,
        Change::SetSysctls { values } => {
            let mut argv = vec!["sysctl".to_owned(), "-w".to_owned()];
            argv.extend(values.iter().map(|v| format!("{}={}", v.key, v.to)));
            run(report, host, &RemoteCommand::new(argv)).await?;
            // procps `sysctl -w` exits 0 even when a write fails: trust only a read-back.
            let keys = values.iter().map(|v| v.key.clone());
            let cmd = RemoteCommand::script("sysctl-read-back", SYSCTL_READ_BACK, keys).read_only();
            let out = run(report, host, &cmd).await?.stdout_str();
            for v in values {
                let now = out.lines().find_map(|l| {
                    l.strip_prefix(v.key.as_str())
                        .and_then(|r| r.strip_prefix('='))
                });
                if now.map(normalise) != Some(normalise(&v.to)) {
                    bail!(
                        "sysctl {} is {} after writing {}: the kernel refused it (read-only in \
                         this namespace or an invalid value)",
                        v.key,
                        now.unwrap_or("absent"),
                        v.to
                    );
                }
            }
        }
        Change::RemoveFile { path } => {
            let path = path.display().to_string();
            run(
                report,
                host,
                &RemoteCommand::new(["rm", "-f", "--", path.as_str()]),
            )
            .await?;
        }
        Change::SwapOff => {
            run(report, host, &RemoteCommand::new(["swapoff", "-a"])).await?;
        }
        Change::LoadModule { name } => {
            run(
                report,
                host,
                &RemoteCommand::new(["modprobe", "--", name.as_str()]),
            )
            .await?;
        }
        Change::Service {
            name,
            init,
            action,
            check_first,
        } => {
            if let Some(argv) = check_first {
                run(report, host, &RemoteCommand::new(argv.clone()))
                    .await
                    .context(
                        "the new configuration was refused, so the service was neither started \
                         nor restarted",
                    )?;
            }
            for argv in service_commands(*init, name, *action)? {
                run(report, host, &RemoteCommand::new(argv)).await?;
            }
            match action {
                ServiceAction::DaemonReload => {}
                ServiceAction::EnableNow | ServiceAction::Reload => {
                    wait_active(host, *init, name, Duration::ZERO).await?;
                }
                ServiceAction::Restart => wait_active(host, *init, name, RESTART_STABLE).await?,
            }
        }
    }
    Ok(())
}

/// The commands for a service action, in order.
fn service_commands(
    init: InitSystem,
    name: &str,
    action: ServiceAction,
) -> anyhow::Result<Vec<Vec<String>>> {
    let argv = |a: &[&str]| a.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
    Ok(match (init, action) {
        (InitSystem::Systemd, ServiceAction::DaemonReload) => {
            vec![argv(&["systemctl", "daemon-reload"])]
        }
        (InitSystem::Systemd, ServiceAction::EnableNow) => {
            vec![argv(&["systemctl", "enable", "--now", name])]
        }
        (InitSystem::Systemd, ServiceAction::Reload) => {
            vec![argv(&["systemctl", "reload", name])]
        }
        (InitSystem::Systemd, ServiceAction::Restart) => {
            vec![argv(&["systemctl", "restart", name])]
        }
        (InitSystem::OpenRc, ServiceAction::DaemonReload) => Vec::new(),
        (InitSystem::OpenRc, ServiceAction::EnableNow) => vec![
            argv(&["rc-update", "add", name, "default"]),
            argv(&["rc-service", name, "start"]),
        ],
        (InitSystem::OpenRc, ServiceAction::Reload) => {
            vec![argv(&["rc-service", name, "reload"])]
        }
        (InitSystem::OpenRc, ServiceAction::Restart) => {
            vec![argv(&["rc-service", name, "restart"])]
        }
        (InitSystem::Unknown, _) => {
            bail!("no init system found to manage service {name} (systemd or OpenRC is needed)")
        }
    })
}

/// Polls the init system until the service reports itself running, without a break, for
/// `stable`. A daemon that exits at once (port taken, bad capability) fails here, with the
/// init system's own words.
async fn wait_active(
    host: &SshHost,
    init: InitSystem,
    name: &str,
    stable: Duration,
) -> anyhow::Result<()> {
    let cmd = match init {
        InitSystem::OpenRc => RemoteCommand::new(["rc-service", name, "status"]),
        _ => RemoteCommand::new(["systemctl", "is-active", name]),
    }
    .read_only();
    let started = Instant::now();
    let mut active_since = None;
    let mut was_active = false;
    loop {
        let out = host.run_unchecked(&cmd).await?;
        if out.success() {
            let since = *active_since.get_or_insert_with(Instant::now);
            was_active = true;
            if since.elapsed() >= stable {
                return Ok(());
            }
        } else {
            active_since = None;
        }
        if started.elapsed() > SERVICE_ACTIVE_TIMEOUT {
            let how = if was_active {
                "keeps stopping after it starts"
            } else {
                "is not active"
            };
            bail!(
                "service {name} {how} {}s after starting it ({}): see `{}` on the node",
                SERVICE_ACTIVE_TIMEOUT.as_secs(),
                out.stdout_str().trim(),
                match init {
                    InitSystem::OpenRc => format!("rc-service {name} status"),
                    _ => format!("journalctl -u {name}"),
                }
            );
        }
        // A product-side poll, not a test synchronisation: the init system has no "wait
        // until active" for Type=simple services.
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Multi-value sysctls read back with single spaces (`net.ipv4.ip_local_port_range`).
pub(crate) fn normalise(v: &str) -> String {
    v.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Runs a command on a host with the report told about it and its output logged.
pub(crate) async fn run(
    report: &Report,
    host: &SshHost,
    cmd: &RemoteCommand,
) -> anyhow::Result<crate::remote::CommandOutput> {
    let shown = cmd.to_string();
    report.event(Event::Command {
        node: host.node(),
        command: &shown,
    });
    let out = host.run_unchecked(cmd).await?;
    report.command_output(
        host.node(),
        &out.stdout,
        if cmd.is_read_only() { &[] } else { &out.stderr },
    );
    Ok(host.check(cmd, out)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_shows_a_diff_for_text_files() {
        let c = Change::WriteFile {
            path: "/etc/hosts".into(),
            contents: b"127.0.0.1 localhost\n10.0.0.100 api.local # khactl\n".to_vec(),
            mode: 0o644,
            secret: false,
            diff: true,
            current: Some(b"127.0.0.1 localhost\n".to_vec()),
            backup: None,
        };
        let text = c.plan_text();
        assert!(text.starts_with("update /etc/hosts (0644)"), "{text}");
        assert!(text.contains("+10.0.0.100 api.local # khactl"), "{text}");
    }

    #[test]
    fn plan_never_shows_secret_contents() {
        let c = Change::WriteFile {
            path: "/etc/kubernetes/pki/ca.key".into(),
            contents: b"-----BEGIN PRIVATE KEY-----\nSECRET\n".to_vec(),
            mode: 0o600,
            secret: true,
            diff: false,
            current: None,
            backup: None,
        };
        let text = c.plan_text();
        assert!(!text.contains("SECRET"), "{text}");
        assert!(text.contains("secret, 35 bytes"), "{text}");
    }

    #[test]
    fn plan_shows_sysctls_old_to_new() {
        let c = Change::SetSysctls {
            values: vec![SysctlChange {
                key: "net.ipv4.ip_forward".into(),
                from: Some("0".into()),
                to: "1".into(),
            }],
        };
        assert!(c.plan_text().contains("net.ipv4.ip_forward: 0 -> 1"));
    }

    #[test]
    fn plan_says_which_check_gates_a_restart() {
        let c = Change::Service {
            name: "khagent".into(),
            init: InitSystem::Systemd,
            action: ServiceAction::Restart,
            check_first: Some(vec!["khagent".into(), "check".into()]),
        };
        assert_eq!(
            c.plan_text(),
            "restart service khagent (systemd), after `khagent check` passes"
        );
    }

    #[test]
    fn openrc_enables_in_the_default_runlevel_then_starts() {
        let cmds =
            service_commands(InitSystem::OpenRc, "khagent", ServiceAction::EnableNow).unwrap();
        assert_eq!(
            cmds,
            [
                vec!["rc-update", "add", "khagent", "default"],
                vec!["rc-service", "khagent", "start"]
            ]
        );
    }

    #[test]
    fn services_need_a_known_init_system() {
        let err =
            service_commands(InitSystem::Unknown, "khagent", ServiceAction::Restart).unwrap_err();
        assert!(err.to_string().contains("systemd or OpenRC"), "{err}");
    }

    #[test]
    fn sysctl_values_compare_ignoring_whitespace() {
        assert_eq!(normalise("32768\t60999"), normalise("32768 60999"));
    }
}
