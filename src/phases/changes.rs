//! The one gate for typed remote changes. A phase describes a change as data; in plan mode
//! the gate shows it (files with a diff, secrets by size only, sysctls old → new), in apply
//! mode it makes it and checks it took (services: polled until active). Either way each
//! change is journaled, so a command's result lists what it did or would do.

use std::path::PathBuf;

use anyhow::{Context as _, bail};
use serde::Serialize;
use similar::TextDiff;

use super::Context;
use super::manifest::manifest_functions;
use crate::facts::InitSystem;
use crate::inventory::SysctlKey;
use crate::os::service;
pub use crate::os::service::ServiceAction;
use crate::remote::{NodeHandle, RemoteCommand};
use crate::report::Event;

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
        /// What the plan shows of a secret file instead of nothing: its text with the
        /// secrets blanked (a kubeadm config with `<redacted>` for the token).
        preview: Option<String>,
    },
    /// Set runtime sysctls by writing their files under `/proc/sys`, then read each back.
    SetSysctls { values: Vec<SysctlChange> },
    /// Remove a file if it is there (`rm -f`).
    RemoveFile { path: PathBuf },
    /// Put a file's original back from the copy khactl kept (`mv -f BACKUP PATH`).
    RestoreFile { path: PathBuf, backup: PathBuf },
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
    /// `setenforce 0`: SELinux permissive until the next boot (the config file is a
    /// [`Change::WriteFile`] of its own).
    SelinuxPermissive,
    /// Add ports (`6443/tcp`) and IP protocols (`vrrp`) to firewalld's default zone,
    /// permanently, then `firewall-cmd --reload` so the running firewall has them too.
    FirewalldOpen {
        ports: Vec<String>,
        protocols: Vec<String>,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct SysctlChange {
    pub key: SysctlKey,
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
                    s.push_str(&format!(", secret, {} bytes", contents.len()));
                }
                s.push(')');
                s
            }
            Change::SetSysctls { values } => {
                let keys: Vec<String> = values.iter().map(|v| v.key.to_string()).collect();
                format!("set sysctl {}", keys.join(", "))
            }
            Change::RemoveFile { path } => format!("remove {}", path.display()),
            Change::RestoreFile { path, backup } => {
                format!("restore {} from {}", path.display(), backup.display())
            }
            Change::SwapOff => "turn swap off (swapoff -a)".to_owned(),
            Change::LoadModule { name } => format!("load kernel module {name}"),
            Change::Service {
                name,
                init,
                action,
                check_first,
            } => {
                let mut s = action.describe(name, *init);
                if let Some(argv) = check_first {
                    s.push_str(&format!(", after `{}` passes", argv.join(" ")));
                }
                s
            }
            Change::SelinuxPermissive => "set SELinux to permissive now (setenforce 0)".to_owned(),
            Change::FirewalldOpen { ports, protocols } => {
                let all: Vec<&str> = ports.iter().chain(protocols).map(String::as_str).collect();
                format!("open {} in firewalld (now and permanently)", all.join(" "))
            }
        }
    }

    /// The plan's view: the headline and, where useful, details (diff, old → new).
    pub fn plan_text(&self) -> String {
        let mut s = self.headline();
        for line in self.details() {
            s.push_str(&format!("\n      {line}"));
        }
        s
    }

    /// Lines that say more than the headline: a unified diff of a text file (never of a
    /// secret), or each sysctl's old and new value.
    pub fn details(&self) -> Vec<String> {
        let mut out = Vec::new();
        match self {
            Change::WriteFile {
                secret: true,
                preview: Some(text),
                ..
            } => out.extend(text.lines().map(str::to_owned)),
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
                    let text = diff.unified_diff().context_radius(2).to_string();
                    out.extend(text.lines().map(str::to_owned));
                }
            }
            Change::SetSysctls { values } => {
                for v in values {
                    let from = v.from.as_deref().unwrap_or("(absent)");
                    out.push(format!("{}: {} -> {}", v.key, from, v.to));
                }
            }
            _ => {}
        }
        out
    }

    /// A stable name for the kind of change, for `--output json`.
    pub fn kind(&self) -> &'static str {
        match self {
            Change::WriteFile { .. } => "write-file",
            Change::SetSysctls { .. } => "set-sysctls",
            Change::RemoveFile { .. } => "remove-file",
            Change::RestoreFile { .. } => "restore-file",
            Change::SwapOff => "swap-off",
            Change::LoadModule { .. } => "load-module",
            Change::Service { .. } => "service",
            Change::SelinuxPermissive => "selinux-permissive",
            Change::FirewalldOpen { .. } => "firewalld-open",
        }
    }
}

/// A change made or planned, as a command's result reports it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ChangeRecord {
    /// The phase that made or planned it.
    pub phase: &'static str,
    /// `write-file`, `set-sysctls`, `remove-file`, `restore-file`, `swap-off`, `load-module`,
    /// `service`, `selinux-permissive`, `firewalld-open` or
    /// `step` (an imperative step such as `kubeadm init`).
    pub kind: &'static str,
    pub headline: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub details: Vec<String>,
    /// Made (true) or only planned (false, `--dry-run`).
    pub done: bool,
}

impl ChangeRecord {
    fn of(phase: &'static str, change: &Change, done: bool) -> Self {
        Self {
            phase,
            kind: change.kind(),
            headline: change.headline(),
            details: change.details(),
            done,
        }
    }

    pub(super) fn step(phase: &'static str, headline: &str, done: bool) -> Self {
        Self {
            phase,
            kind: "step",
            headline: headline.to_owned(),
            details: Vec::new(),
            done,
        }
    }
}

/// Shows or makes `changes` on one host; returns how many there were.
pub(super) async fn apply_changes(
    ctx: &Context,
    host: &NodeHandle,
    changes: &[Change],
) -> anyhow::Result<usize> {
    let phase = ctx.phase();
    if ctx.settings.mode == Mode::Plan {
        for change in changes {
            let text = change.plan_text();
            ctx.report.event(Event::Planned {
                node: host.node(),
                change: &text,
            });
            ctx.record(host.node(), ChangeRecord::of(phase, change, false));
        }
        return Ok(changes.len());
    }
    // A run of file writes goes to the node as one command (one round trip instead of one
    // per file); every other change is a step of its own, in order.
    let steps = changes
        .chunk_by(|a, b| matches!((a, b), (Change::WriteFile { .. }, Change::WriteFile { .. })));
    for step in steps {
        // Ctrl-C: the node stops here, between two steps, with nothing half-made.
        ctx.settings.interrupt.check()?;
        let heads: Vec<String> = step.iter().map(Change::headline).collect();
        let message = match heads.as_slice() {
            [one] => one.clone(),
            _ => format!("writing {} files", step.len()),
        };
        ctx.report.event(Event::NodeStep {
            node: host.node(),
            message: &message,
        });
        let applied = match step {
            [one] => apply_one(ctx, host, one).await,
            writes => write_files(host, writes).await,
        };
        applied.with_context(|| heads.join("; "))?;
        for change in step {
            ctx.record(host.node(), ChangeRecord::of(phase, change, true));
        }
    }
    Ok(changes.len())
}

/// Writes files atomically, each with its mode set before any byte lands (a temp file
/// made by mktemp, then renamed). Arguments come in fours — path, mode, backup, length —
/// and the contents follow each other on stdin; `head -c` reads exactly that many bytes.
/// Each file (and each directory it creates) is noted in the node's manifest first
/// ([`super::manifest`]): new, or existed with the backup that keeps the original.
const WRITE_FILES: &str = concat!(
    manifest_functions!(),
    r#"set -eu
tmp=
trap 'if [ -n "$tmp" ]; then rm -f "$tmp"; fi' EXIT
while [ "$#" -ge 4 ]; do
  path=$1; mode=$2; backup=$3; len=$4; shift 4
  if [ -n "$backup" ] && [ -e "$path" ] && [ ! -e "$backup" ]; then
    (umask 077; mkdir -p "$(dirname "$backup")")
    cp -p "$path" "$backup"
  fi
  note_dirs "$path"
  if [ -e "$path" ]; then note file "$path" existed "$backup"; else note file "$path" new; fi
  mkdir -p "$(dirname "$path")"
  # Hidden beside its file: a directory's reader (the kubelet's static pods, sysctl.d,
  # systemd) skips dot files, so a copy left by a killed run is never taken for one.
  tmp=$(mktemp "$(dirname "$path")/.$(basename "$path").khactl.XXXXXX")
  chmod "$mode" "$tmp"
  head -c "$len" > "$tmp"
  [ "$(wc -c < "$tmp")" -eq "$len" ] || { echo "short write for $path" >&2; exit 1; }
  chown 0:0 "$tmp"
  mv -f "$tmp" "$path"
  tmp=
done
"#
);

async fn write_files(host: &NodeHandle, batch: &[Change]) -> anyhow::Result<()> {
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
    host.run(&cmd).await?;
    Ok(())
}

/// Writes each value to its file under /proc/sys: arguments come in pairs, path (under
/// /proc/sys, a [`SysctlKey`], so never an option and never outside /proc/sys) and value. A
/// refused write is reported on stderr and the read-back names it; `sysctl -w` is not used,
/// because it would take a key such as `-p/x` as an option and mangle slashed keys.
/// The value before is noted in the node's manifest first ([`super::manifest`]).
const SYSCTL_WRITE: &str = concat!(
    manifest_functions!(),
    r#"while [ "$#" -ge 2 ]; do
  p=/proc/sys/$1
  if [ -r "$p" ]; then note sysctl "$1" "$(tr '\t\n' '  ' < "$p" | sed 's/ *$//')"; else note sysctl "$1"; fi
  printf '%s\n' "$2" > "$p" || echo "writing $p failed" >&2
  shift 2
done
"#
);

/// `note KIND KEY [VALUE…]` in the node's manifest ([`super::manifest`]).
const MANIFEST_NOTE: &str = concat!(manifest_functions!(), "note \"$@\"\n");

pub(super) const SYSCTL_READ_BACK: &str = r#"for key in "$@"; do
  p=/proc/sys/$key
  if [ -r "$p" ]; then printf '%s=%s\n' "$key" "$(tr '\t\n' '  ' < "$p" | sed 's/ *$//')"; else printf '%s\n' "$key"; fi
done
"#;

async fn apply_one(ctx: &Context, host: &NodeHandle, change: &Change) -> anyhow::Result<()> {
    match change {
        // A lone write is a batch of one; `apply_changes` sends longer runs to `write_files`.
        Change::WriteFile { .. } => write_files(host, std::slice::from_ref(change)).await?,
        Change::SetSysctls { values } => {
            let pairs = values
                .iter()
                .flat_map(|v| [v.key.path().to_owned(), v.to.clone()]);
            host.run(&RemoteCommand::script("sysctl-write", SYSCTL_WRITE, pairs))
                .await?;
            // A write the kernel refused shows only in what the file holds now.
            let keys = values.iter().map(|v| v.key.path().to_owned());
            let cmd = RemoteCommand::script("sysctl-read-back", SYSCTL_READ_BACK, keys).read_only();
            let out = host.run(&cmd).await?.stdout_str();
            for v in values {
                let now = out.lines().find_map(|l| {
                    l.strip_prefix(v.key.path())
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
            host.run(&RemoteCommand::new(["rm", "-f", "--", path.as_str()]))
                .await?;
        }
        Change::RestoreFile { path, backup } => {
            let (path, backup) = (path.display().to_string(), backup.display().to_string());
            host.run(&RemoteCommand::new(["mv", "-f", "--", &backup, &path]))
                .await?;
        }
        Change::SwapOff => {
            host.run(&RemoteCommand::script(
                "manifest-note",
                MANIFEST_NOTE,
                ["swap", "off"],
            ))
            .await?;
            host.run(&RemoteCommand::new(["swapoff", "-a"])).await?;
        }
        Change::LoadModule { name } => {
            host.run(&RemoteCommand::new(["modprobe", "--", name.as_str()]))
                .await?;
        }
        Change::Service {
            name,
            init,
            action,
            check_first,
        } => {
            if let Some(argv) = check_first {
                host.run(&RemoteCommand::new(argv.clone())).await.context(
                    "the new configuration was refused, so the service was neither started \
                         nor restarted",
                )?;
            }
            if *action == ServiceAction::EnableNow {
                let note = ["service", name.as_str()];
                host.run(&RemoteCommand::script("manifest-note", MANIFEST_NOTE, note))
                    .await?;
            }
            for cmd in service::commands(*init, name, *action)? {
                host.run(&cmd).await?;
            }
            if let Some(stable) = action.must_stay_active() {
                let interrupt = &ctx.settings.interrupt;
                service::wait_active(host, *init, name, stable, interrupt).await?;
            }
        }
        Change::SelinuxPermissive => {
            host.run(&RemoteCommand::new(["setenforce", "0"])).await?;
        }
        Change::FirewalldOpen { ports, protocols } => {
            // One call for all: firewall-cmd takes the option repeated, and one already there
            // is a warning (ALREADY_ENABLED), not a failure.
            let adds = ports
                .iter()
                .map(|p| format!("--add-port={p}"))
                .chain(protocols.iter().map(|p| format!("--add-protocol={p}")));
            // Now and permanently, without `--reload`: a reload would drop the running
            // firewall's rules that someone added without `--permanent`.
            let adds: Vec<String> = adds.collect();
            let now = std::iter::once("firewall-cmd".to_owned()).chain(adds.iter().cloned());
            host.run(&RemoteCommand::new(now)).await?;
            let permanent = ["firewall-cmd".to_owned(), "--permanent".to_owned()]
                .into_iter()
                .chain(adds);
            host.run(&RemoteCommand::new(permanent)).await?;
        }
    }
    Ok(())
}

/// Multi-value sysctls read back with single spaces (`net.ipv4.ip_local_port_range`).
pub(crate) fn normalise(v: &str) -> String {
    v.split_whitespace().collect::<Vec<_>>().join(" ")
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
            preview: None,
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
            preview: None,
        };
        let text = c.plan_text();
        assert!(!text.contains("SECRET"), "{text}");
        assert!(text.contains("secret, 35 bytes"), "{text}");
    }

    #[test]
    fn plan_shows_sysctls_old_to_new() {
        let c = Change::SetSysctls {
            values: vec![SysctlChange {
                key: SysctlKey::parse("net.ipv4.ip_forward").unwrap(),
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
    fn sysctl_values_compare_ignoring_whitespace() {
        assert_eq!(normalise("32768\t60999"), normalise("32768 60999"));
    }
}
