//! The drill's scenarios: what each breaks, on which node, how it is restored, and the
//! targets it is held to by default (documented in docs/failover.md).
//!
//! Everything is broken the way it breaks on a real kubeadm node: khagent through its init
//! system, the API server and etcd by taking their static-pod manifests out of
//! `/etc/kubernetes/manifests` (the kubelet stops a pod whose manifest is gone, and starts it
//! again when it is back), the network by taking the interface down with a timer armed on
//! the node first, the whole node through the user's own hook.

use std::time::Duration;

use serde::Serialize;

use super::measure::Targets;
use crate::os::InitSystem;
use crate::remote::RemoteCommand;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Scenario {
    /// SIGKILL the VIP holder's khagent (its init system restarts it).
    AgentCrash,
    /// Stop the VIP holder's khagent cleanly (priority-0 advert), then start it again.
    AgentStop,
    /// Stop the VIP holder's API server (its manifest moved out of the kubelet's sight); with
    /// dedicated load-balancer nodes, which run none, a control plane's: the VIP stays.
    ApiserverDown,
    /// Stop one other control plane's etcd member: the API through the VIP must stay up.
    EtcdMemberDown,
    /// Take the VIP holder's interface down; a timer armed on the node first brings it up.
    NetworkCut,
    /// The whole VIP holder gone, through `--node-down-cmd` / `--node-up-cmd`.
    NodeDown,
}

/// In the order a full drill runs them: the gentlest first.
pub const ALL: [Scenario; 6] = [
    Scenario::AgentCrash,
    Scenario::AgentStop,
    Scenario::ApiserverDown,
    Scenario::EtcdMemberDown,
    Scenario::NetworkCut,
    Scenario::NodeDown,
];

/// How long the network stays cut.
pub const CUT_FOR: Duration = Duration::from_secs(5);
/// Where manifests are parked while their pod is meant to be down: outside the manifest
/// directory, since a kubelet reads every file there (not only `*.yaml`).
pub const PARKED: &str = "/etc/kubernetes/khactl-failover";

impl Scenario {
    pub fn name(self) -> &'static str {
        match self {
            Scenario::AgentCrash => "agent-crash",
            Scenario::AgentStop => "agent-stop",
            Scenario::ApiserverDown => "apiserver-down",
            Scenario::EtcdMemberDown => "etcd-member-down",
            Scenario::NetworkCut => "network-cut",
            Scenario::NodeDown => "node-down",
        }
    }

    /// Whether the scenario breaks the VIP holder (else a control plane that does not hold
    /// it). With dedicated load-balancer nodes (`dedicated_lb`) the holder runs no API server,
    /// so apiserver-down breaks a control plane's instead.
    pub fn breaks_holder(self, dedicated_lb: bool) -> bool {
        match self {
            Scenario::EtcdMemberDown => false,
            Scenario::ApiserverDown => !dedicated_lb,
            _ => true,
        }
    }

    /// Whether the broken node's agent cannot be observed until the restore: its process is
    /// gone (a new one logs afresh) or it is cut off or frozen.
    pub fn darkens(self) -> bool {
        matches!(
            self,
            Scenario::AgentCrash | Scenario::AgentStop | Scenario::NetworkCut | Scenario::NodeDown
        )
    }

    /// The default targets (docs/failover.md explains each); `dedicated_lb` as for
    /// [`Self::breaks_holder`].
    pub fn default_targets(self, dedicated_lb: bool) -> Targets {
        let base = Targets {
            max_takeover_ms: Some(1_000.0),
            max_api_unavailable_ms: Some(2_000.0),
            max_long_lived_recovery_ms: Some(1_000.0),
            max_vip_moves: None,
            max_split_brain_ms: Some(1_000.0),
            max_healthy_after_ms: Some(90_000.0),
        };
        match self {
            Scenario::AgentCrash => base,
            Scenario::AgentStop => Targets {
                max_takeover_ms: Some(500.0),
                max_api_unavailable_ms: Some(1_000.0),
                ..base
            },
            // A control plane's API server behind dedicated balancers: as with etcd-member-down
            // the VIP stays, and the balancers retry new connections on another API server.
            Scenario::ApiserverDown if dedicated_lb => Targets {
                max_takeover_ms: None,
                max_vip_moves: Some(0),
                max_api_unavailable_ms: Some(1_000.0),
                ..base
            },
            // The VIP moves once the health checks saw the API server gone (fall 2 at a 1 s
            // interval) and the preempt delay (5 s) ran out; new connections are retried on
            // another API server meanwhile, so the API stays up.
            Scenario::ApiserverDown => Targets {
                max_takeover_ms: Some(10_000.0),
                max_api_unavailable_ms: Some(1_000.0),
                ..base
            },
            // The VIP must stay. Requests the load balancers send to the member's own API
            // server fail (kubeadm points it at its local etcd only) until the health checks
            // take it out: a share of requests for about two seconds.
            Scenario::EtcdMemberDown => Targets {
                max_takeover_ms: None,
                max_vip_moves: Some(0),
                max_api_unavailable_ms: Some(1_000.0),
                ..base
            },
            // The first connection the new holder's load balancer sends to the vanished
            // node's API server waits out the 1 s connect timeout before it is retried (and
            // counts as a failed check of it); a long-lived reconnect that a slow lab stretches past
            // the prober's 2 s timeout costs one more attempt (measured up to 2.1 s).
            Scenario::NetworkCut | Scenario::NodeDown => Targets {
                max_api_unavailable_ms: Some(3_000.0),
                max_long_lived_recovery_ms: Some(3_000.0),
                ..base
            },
        }
    }

    /// The break, as one remote command on the broken node (node-down runs the user's hook
    /// instead: `None`).
    pub fn break_command(self, init: InitSystem, interface: &str) -> Option<RemoteCommand> {
        Some(match self {
            Scenario::AgentCrash => match init {
                InitSystem::Systemd => RemoteCommand::new([
                    "systemctl",
                    "kill",
                    "--kill-who=main",
                    "--signal=KILL",
                    "khagent.service",
                ]),
                _ => RemoteCommand::script("kill-khagent", KILL_AGENT, Vec::<String>::new()),
            },
            Scenario::AgentStop => match init {
                // The stop returns at once: the agent hands the VIP over at SIGTERM, then
                // drains connections for up to drain_timeout.
                InitSystem::Systemd => {
                    RemoteCommand::new(["systemctl", "stop", "--no-block", "khagent.service"])
                }
                _ => RemoteCommand::new(["rc-service", "khagent", "stop"]),
            },
            Scenario::ApiserverDown => park("kube-apiserver.yaml"),
            Scenario::EtcdMemberDown => park("etcd.yaml"),
            Scenario::NetworkCut => RemoteCommand::script(
                "network-cut",
                NETWORK_CUT,
                [interface.to_owned(), CUT_FOR.as_secs().to_string()],
            )
            .timeout(Duration::from_secs(3)),
            Scenario::NodeDown => return None,
        })
    }

    /// What puts things back; idempotent (also the cleanup after Ctrl-C or an error).
    /// `None`: nothing to do on the node (the init system restarts a killed agent; the
    /// user's hook brings a node back).
    pub fn restore_command(self, init: InitSystem, interface: &str) -> Option<RemoteCommand> {
        match self {
            Scenario::AgentCrash | Scenario::AgentStop => Some(match init {
                InitSystem::Systemd => RemoteCommand::new(["systemctl", "start", "khagent"]),
                _ => RemoteCommand::new(["rc-service", "khagent", "start"]),
            }),
            Scenario::ApiserverDown => Some(unpark("kube-apiserver.yaml")),
            Scenario::EtcdMemberDown => Some(unpark("etcd.yaml")),
            Scenario::NetworkCut => Some(RemoteCommand::new([
                "ip", "link", "set", "dev", interface, "up",
            ])),
            Scenario::NodeDown => None,
        }
    }
}

/// Without systemd: the agent's own process (supervise-daemon restarts it).
const KILL_AGENT: &str = r#"pids=$(pidof khagent) || { echo "no khagent process" >&2; exit 1; }
exec kill -KILL $pids
"#;

/// `$1` interface, `$2` seconds. The timer is armed first, in its own session so it
/// outlives this SSH session, which dies with the link.
const NETWORK_CUT: &str = r#"setsid -f sh -c 'sleep "$1"; ip link set dev "$2" up' khactl-restore "$2" "$1" </dev/null >/dev/null 2>&1
exec ip link set dev "$1" down
"#;

/// `$1` = manifest name. Refuses to overwrite a parked manifest (an earlier drill cut short
/// left it: restore that first).
const PARK: &str = r#"set -e
src=/etc/kubernetes/manifests/$1 dst=/etc/kubernetes/khactl-failover/$1
[ -e "$src" ] || { echo "$src does not exist" >&2; exit 1; }
[ ! -e "$dst" ] || { echo "$dst exists: a drill was cut short; restore it first" >&2; exit 1; }
mkdir -p -m 0700 /etc/kubernetes/khactl-failover
mv "$src" "$dst"
"#;

/// `$1` = manifest name; nothing to do when it is not parked.
const UNPARK: &str = r#"set -e
src=/etc/kubernetes/khactl-failover/$1 dst=/etc/kubernetes/manifests/$1
[ -e "$src" ] || exit 0
mv "$src" "$dst"
rmdir /etc/kubernetes/khactl-failover 2>/dev/null || true
"#;

fn park(manifest: &str) -> RemoteCommand {
    RemoteCommand::script("park-manifest", PARK, [manifest])
}

fn unpark(manifest: &str) -> RemoteCommand {
    RemoteCommand::script("unpark-manifest", UNPARK, [manifest])
}

/// Is a manifest parked on the node (a drill cut short)? Prints the parked names.
pub const PARKED_NOW: &str = r#"ls -1 /etc/kubernetes/khactl-failover 2>/dev/null || true
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_the_flags_values() {
        let names: Vec<&str> = ALL.iter().map(|s| s.name()).collect();
        assert_eq!(
            names,
            [
                "agent-crash",
                "agent-stop",
                "apiserver-down",
                "etcd-member-down",
                "network-cut",
                "node-down"
            ]
        );
        for s in ALL {
            let parsed = <Scenario as clap::ValueEnum>::from_str(s.name(), false);
            assert_eq!(parsed, Ok(s));
        }
    }

    #[test]
    fn every_break_has_a_way_back() {
        for s in ALL {
            let breaks = s.break_command(InitSystem::Systemd, "eth0").is_some();
            let restores = s.restore_command(InitSystem::Systemd, "eth0").is_some();
            // node-down's way back is the user's hook; agent-crash's is the init system,
            // and its restore (a start) is harmless when the agent already runs.
            assert!(breaks == restores || s == Scenario::NodeDown, "{s:?}");
        }
    }

    #[test]
    fn values_reach_scripts_as_arguments_never_as_script_text() {
        let cut = Scenario::NetworkCut
            .break_command(InitSystem::Systemd, "eth0; reboot")
            .unwrap();
        assert!(cut.argv().iter().any(|a| a == "eth0; reboot"));
        assert!(!NETWORK_CUT.contains("eth0"));
    }

    #[test]
    fn the_network_is_restored_by_a_timer_armed_before_the_cut() {
        let arm = NETWORK_CUT.find("setsid").unwrap();
        let cut = NETWORK_CUT.find("down").unwrap();
        assert!(arm < cut);
    }

    #[test]
    fn etcd_member_down_must_not_move_the_vip_and_only_it_spares_the_holder() {
        for s in ALL {
            assert_eq!(s.breaks_holder(false), s != Scenario::EtcdMemberDown);
        }
        assert_eq!(
            Scenario::EtcdMemberDown
                .default_targets(false)
                .max_vip_moves,
            Some(0)
        );
    }

    /// Behind dedicated load-balancer nodes the holder has no API server: apiserver-down
    /// stops a control plane's, and the VIP must stay where it is.
    #[test]
    fn behind_dedicated_balancers_apiserver_down_spares_the_holder_and_keeps_the_vip() {
        for s in ALL {
            assert_eq!(
                s.breaks_holder(true),
                !matches!(s, Scenario::EtcdMemberDown | Scenario::ApiserverDown)
            );
        }
        let t = Scenario::ApiserverDown.default_targets(true);
        assert_eq!((t.max_vip_moves, t.max_takeover_ms), (Some(0), None));
        assert_eq!(
            Scenario::AgentCrash.default_targets(true),
            Scenario::AgentCrash.default_targets(false)
        );
    }
}
