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
        (InitSystem::OpenRc, ServiceAction::Disable) => {
            vec![cmd(&["rc-update", "del", name, "default"])]
        }
        (InitSystem::Unknown, _) => {
            bail!("no init system found to manage service {name} (systemd or OpenRC is needed)")
        }
    })
}

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
/// init system's own words.
pub async fn wait_active(
    host: &NodeHandle,
    init: InitSystem,
    name: &str,
    stable: Duration,
    interrupt: &Interrupt,
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
        for (init, stop, disable) in [
            (
                InitSystem::Systemd,
                vec!["systemctl", "stop", "khagent"],
                vec!["systemctl", "disable", "khagent"],
            ),
            (
                InitSystem::OpenRc,
                vec!["rc-service", "khagent", "stop"],
                vec!["rc-update", "del", "khagent", "default"],
            ),
        ] {
            let s = commands(init, "khagent", ServiceAction::Stop).unwrap();
            let d = commands(init, "khagent", ServiceAction::Disable).unwrap();
            assert_eq!(argv(&s), [stop]);
            assert_eq!(argv(&d), [disable]);
        }
    }

    #[test]
    fn services_need_a_known_init_system() {
        let err = commands(InitSystem::Unknown, "khagent", ServiceAction::Restart).unwrap_err();
        assert!(err.to_string().contains("systemd or OpenRC"), "{err}");
    }
}
