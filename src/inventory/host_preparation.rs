//! `hostPreparation:`: what host preparation does about the RHEL family's firewalld and
//! SELinux, as the guides do by hand (`setenforce 0`, `firewall-cmd --add-port`,
//! `systemctl disable --now firewalld`). Both act only where the facts find the thing: a
//! Debian node without firewalld or SELinux is untouched whatever is written here.

use serde::{Deserialize, Serialize};

use super::checks::typed;
use super::schema::{Field, Kind, Presence, Shape};

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HostPreparation {
    #[serde(default)]
    pub firewalld: FirewalldAction,
    #[serde(default)]
    pub selinux: SelinuxAction,
}

/// Where firewalld runs on a node.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FirewalldAction {
    /// Open the ports the node's role needs (permanent rules, then `--reload`).
    #[default]
    OpenPorts,
    /// `systemctl disable --now firewalld`, as most guides do.
    Stop,
    /// Change nothing: the operator manages the firewall.
    Leave,
}

/// Where SELinux is enforcing on a node.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SelinuxAction {
    /// `setenforce 0` now and `SELINUX=permissive` in /etc/selinux/config, with a warning
    /// (the kubeadm guides' step).
    #[default]
    Permissive,
    /// Change nothing: the operator has a policy for the kubelet and the containers.
    Leave,
}

pub(super) static HOST_PREPARATION: Shape = Shape {
    fields: &[
        Field {
            name: "firewalld",
            presence: Presence::Defaulted,
            kind: Kind::Leaf(typed::<FirewalldAction>),
        },
        Field {
            name: "selinux",
            presence: Presence::Defaulted,
            kind: Kind::Leaf(typed::<SelinuxAction>),
        },
    ],
};
