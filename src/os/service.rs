//! Services under systemd or OpenRC: the commands for each action, the read-only state query,
//! and the wait until a started service is really up.

use std::time::{Duration, Instant};

use anyhow::bail;

use super::InitSystem;
use crate::interrupt::Interrupt;
use crate::remote::{NodeHandle, RemoteCommand};

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ServiceAction {
    /// systemd re-reads unit files (OpenRC reads its scripts at each start: nothing to do).
    DaemonReload,
    /// Start at boot from now on, and start now if not running.
    EnableNow,
    /// Ask the running daemon to re-read its configuration (khagent: SIGHUP).
    Reload,
    Restart,
    /// Stop now; it still starts at boot if enabled.
    Stop,
    /// No longer start at boot; a running service keeps running.
    Disable,
}

impl ServiceAction {
    /// What the action does, for plans and progress lines.
    pub fn describe(self, name: &str, init: InitSystem) -> String {
        match self {
            ServiceAction::DaemonReload => format!("reload {init} unit files (for {name})"),
            ServiceAction::EnableNow => format!("enable and start service {name} ({init})"),
            ServiceAction::Reload => format!("reload service {name} ({init})"),
            ServiceAction::Restart => format!("restart service {name} ({init})"),
            ServiceAction::Stop => format!("stop service {name} ({init})"),
            ServiceAction::Disable => format!("disable service {name} at boot ({init})"),
        }
    }

    /// How long the service must then stay active before the action counts as done;
    /// `None` for actions after which it need not run.
    pub fn must_stay_active(self) -> Option<Duration> {
        match self {
            ServiceAction::EnableNow | ServiceAction::Reload => Some(Duration::ZERO),
            ServiceAction::Restart => Some(RESTART_STABLE),
            ServiceAction::DaemonReload | ServiceAction::Stop | ServiceAction::Disable => None,
        }
    }
}

/// How long a started service may take to report itself active.
const SERVICE_ACTIVE_TIMEOUT: Duration = Duration::from_secs(15);
/// How long a restarted service must stay active before the restart counts as done. systemd
/// reports a `Type=simple` service active the moment it forks, so a daemon that then exits
/// (port taken, a capability missing) looks active for an instant; a rolling restart must stop
/// at that node, not go on to restart the next one.
pub const RESTART_STABLE: Duration = Duration::from_secs(1);

/// The commands for a service action, in order (argv, never shell text).
pub fn commands(
    init: InitSystem,
    name: &str,
    action: ServiceAction,
) -> anyhow::Result<Vec<RemoteCommand>> {
    let cmd = |a: &[&str]| RemoteCommand::new(a.iter().copied());
    Ok(match (init, action) {
        (InitSystem::Systemd, ServiceAction::DaemonReload) => {
            vec![cmd(&["systemctl", "daemon-reload"])]
        }
        (InitSystem::Systemd, ServiceAction::EnableNow) => {
            vec![cmd(&["systemctl", "enable", "--now", name])]
        }
        (InitSystem::Systemd, ServiceAction::Reload) => vec![cmd(&["systemctl", "reload", name])],
        (InitSystem::Systemd, ServiceAction::Restart) => {
            vec![cmd(&["systemctl", "restart", name])]
        }
        (InitSystem::Systemd, ServiceAction::Stop) => vec![cmd(&["systemctl", "stop", name])],
        (InitSystem::Systemd, ServiceAction::Disable) => {
            vec![cmd(&["systemctl", "disable", name])]
        }
        (InitSystem::OpenRc, ServiceAction::DaemonReload) => Vec::new(),
        (InitSystem::OpenRc, ServiceAction::EnableNow) => vec![
            cmd(&["rc-update", "add", name, "default"]),
            cmd(&["rc-service", name, "start"]),
        ],
        (InitSystem::OpenRc, ServiceAction::Reload) => vec![cmd(&["rc-service", name, "reload"])],
        (InitSystem::OpenRc, ServiceAction::Restart) => {
            vec![cmd(&["rc-service", name, "restart"])]
        }
        (InitSystem::OpenRc, ServiceAction::Stop) => vec![cmd(&["rc-service", name, "stop"])],
        // `rc-update del` fails when the service is not in the runlevel: a second run (a
        // removal cut short and run again) must not.
        (InitSystem::OpenRc, ServiceAction::Disable) => vec![RemoteCommand::script(
            "openrc-disable",
            OPENRC_DISABLE,
            [name],
        )],
        (InitSystem::Unknown, _) => {
            bail!("no init system found to manage service {name} (systemd or OpenRC is needed)")
        }
    })
}

/// `$1` the service: out of the default runlevel, if it is in it.
const OPENRC_DISABLE: &str = r#"[ -e "/etc/runlevels/default/$1" ] || exit 0
exec rc-update del "$1" default
"#;

/// `$1` the service: prints the PID of the process supervise-daemon runs for it, and fails
/// unless OpenRC calls it started and that process exists. `rc-service status` alone says
/// started while the supervisor respawns a daemon that keeps dying.
const OPENRC_ACTIVE: &str = r#"rc-service "$1" status >/dev/null 2>&1 || exit 3
supervisor=$(cat "/run/supervise-$1.pid" 2>/dev/null) || exit 3
child=$(pgrep -P "$supervisor" | head -n 1)
[ -n "$child" ] || exit 3
echo "$child"
"#;

/// Whether a service is enabled at boot and running now, as the init system says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ServiceState {
    pub enabled: bool,
    pub active: bool,
}

/// `$1` the init system as the facts found it (a host may have both tools installed), `$2`
/// the service.
const SERVICE_STATE: &str = r#"init=$1 name=$2
if [ "$init" = systemd ]; then
  if systemctl is-enabled "$name" >/dev/null 2>&1; then echo enabled; fi
  if systemctl is-active "$name" >/dev/null 2>&1; then echo active; fi
else
  if [ -e "/etc/runlevels/default/$name" ]; then echo enabled; fi
  if rc-service "$name" status >/dev/null 2>&1; then echo active; fi
fi
"#;

/// Reads a service's state in one read-only command.
pub async fn state(
    host: &NodeHandle,
    init: InitSystem,
    name: &str,
) -> anyhow::Result<ServiceState> {
    if init == InitSystem::Unknown {
        return Ok(ServiceState::default());
    }
    let cmd = RemoteCommand::script(
        "service-state",
        SERVICE_STATE,
        [init.to_string().as_str(), name],
    )
    .read_only();
    let out = host.run(&cmd).await?.stdout_str();
    Ok(ServiceState {
        enabled: out.lines().any(|l| l == "enabled"),
        active: out.lines().any(|l| l == "active"),
    })
}

/// Where to look when a service misbehaves on this node.
pub fn logs_hint(init: InitSystem, name: &str) -> String {
    match init {
        InitSystem::OpenRc => format!("rc-service {name} status"),
        _ => format!("journalctl -u {name}"),
    }
}

/// Polls the init system until the service reports itself running, without a break, for
/// `stable`. A daemon that exits at once (port taken, bad capability) fails here, with the
/// init system's own words. On OpenRC the same process must run the whole time: its
/// supervisor would respawn a crashing daemon and still call the service started.
pub async fn wait_active(
    host: &NodeHandle,
    init: InitSystem,
    name: &str,
    stable: Duration,
    interrupt: &Interrupt,
) -> anyhow::Result<()> {
    let cmd = match init {
        InitSystem::OpenRc => RemoteCommand::script("openrc-active", OPENRC_ACTIVE, [name]),
        _ => RemoteCommand::new(["systemctl", "is-active", name]),
    }
    .read_only();
    let started = Instant::now();
    // Since when, and as what (systemd: `active`; OpenRC: the daemon's PID).
    let mut active_since: Option<(Instant, String)> = None;
    let mut was_active = false;
    loop {
        let out = host.run_unchecked(&cmd).await?;
        if out.success() {
            let seen = out.stdout_str().trim().to_owned();
            if active_since.as_ref().is_some_and(|(_, s)| *s != seen) {
                active_since = None;
            }
            let (since, _) = active_since.get_or_insert_with(|| (Instant::now(), seen));
            was_active = true;
            if since.elapsed() >= stable {
                return Ok(());
            }
        } else {
            active_since = None;
        }
        if started.elapsed() > SERVICE_ACTIVE_TIMEOUT || interrupt.is_raised() {
            let how = if was_active {
                "keeps stopping after it starts"
            } else {
                "is not active"
            };
            let when = if interrupt.is_raised() {
                "when the run was interrupted".to_owned()
            } else {
                format!("{}s after starting it", SERVICE_ACTIVE_TIMEOUT.as_secs())
            };
            bail!(
                "service {name} {how} {when} ({}): see `{}` on the node",
                out.stdout_str().trim(),
                logs_hint(init, name)
            );
        }
        // A product-side poll, not a test synchronisation: the init system has no "wait
        // until active" for Type=simple services.
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(cmds: &[RemoteCommand]) -> Vec<Vec<String>> {
        cmds.iter().map(|c| c.argv().to_vec()).collect()
    }

    #[test]
    fn openrc_enables_in_the_default_runlevel_then_starts() {
        let cmds = commands(InitSystem::OpenRc, "khagent", ServiceAction::EnableNow).unwrap();
        assert_eq!(
            argv(&cmds),
            [
                vec!["rc-update", "add", "khagent", "default"],
                vec!["rc-service", "khagent", "start"]
            ]
        );
    }

    #[test]
    fn stop_and_disable_are_separate_actions_on_both_init_systems() {
        let s = commands(InitSystem::Systemd, "khagent", ServiceAction::Stop).unwrap();
        let d = commands(InitSystem::Systemd, "khagent", ServiceAction::Disable).unwrap();
        assert_eq!(argv(&s), [["systemctl", "stop", "khagent"]]);
        assert_eq!(argv(&d), [["systemctl", "disable", "khagent"]]);
        let s = commands(InitSystem::OpenRc, "khagent", ServiceAction::Stop).unwrap();
        let d = commands(InitSystem::OpenRc, "khagent", ServiceAction::Disable).unwrap();
        assert_eq!(argv(&s), [["rc-service", "khagent", "stop"]]);
        assert_eq!(
            argv(&d),
            [["sh", "-c", OPENRC_DISABLE, "openrc-disable", "khagent"]]
        );
    }

    /// `rc-update del` of a service not in the runlevel fails (rc-update.c): the disable
    /// runs it only for a service that is there, so running it twice succeeds. Run with a
    /// real `sh` and an `rc-update` that fails whenever it is called.
    #[test]
    fn disabling_a_service_not_in_the_default_runlevel_succeeds_without_rc_update() {
        let dir = tempfile::tempdir().unwrap();
        let fake = dir.path().join("rc-update");
        std::fs::write(&fake, "#!/bin/sh\necho called >&2\nexit 1\n").unwrap();
        std::fs::set_permissions(&fake, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        let path = format!("{}:/usr/bin:/bin", dir.path().display());
        let run = |name: &str| {
            std::process::Command::new("sh")
                .args(["-c", OPENRC_DISABLE, "openrc-disable", name])
                .env("PATH", &path)
                .output()
                .unwrap()
        };
        let out = run("khactl-test-not-a-service");
        assert!(out.status.success() && out.stderr.is_empty(), "{out:?}");
    }

    #[test]
    fn services_need_a_known_init_system() {
        let err = commands(InitSystem::Unknown, "khagent", ServiceAction::Restart).unwrap_err();
        assert!(err.to_string().contains("systemd or OpenRC"), "{err}");
    }
}
