//! The RHEL family's part of host preparation, as the kubeadm guides do it by hand:
//! SELinux to permissive (`setenforce 0` and `SELINUX=permissive` in /etc/selinux/config,
//! with a warning), and firewalld either opened for the ports the node's role needs or
//! stopped and disabled (`hostPreparation` in the inventory). Decided from the facts
//! (`facts::rhel`), so a node already so gets no change, and a node without SELinux or
//! firewalld (Debian, the lab) none at all.

use std::path::Path;

use crate::facts::{HostFacts, SelinuxMode};
use crate::inventory::{FirewalldAction, Inventory, Node, Role, SelinuxAction, StatsBind};
use crate::phases::changes::{Change, ServiceAction};

pub const SELINUX_CONFIG: &str = "/etc/selinux/config";
/// The first /etc/selinux/config khactl changed, kept once (like fstab's).
pub const SELINUX_CONFIG_BACKUP: &str = "/etc/selinux/config.khactl.bak";

/// What a node of `node`'s role listens on for others, as firewalld spells it, and whether
/// it speaks VRRP (IP protocol 112). From Kubernetes' "Ports and Protocols": the API server,
/// etcd, the kubelet, the controller manager and the scheduler on control planes; the
/// kubelet and NodePort Services on workers; etcd's client and peer ports on external etcd
/// nodes; plus khagent's load balancer on the VIP and its
/// stats page when the inventory publishes it beyond loopback.
pub fn needed(inv: &Inventory, node: &Node) -> (Vec<String>, bool) {
    let mut ports: Vec<String> = match node.role {
        Role::ControlPlane => {
            let mut ports = vec!["6443/tcp".into()];
            // A stacked etcd member; with external etcd the control planes are only clients.
            if !inv.external_etcd() {
                ports.push("2379-2380/tcp".into());
            }
            ports.extend(["10250/tcp".into(), "10257/tcp".into(), "10259/tcp".into()]);
            ports
        }
        Role::Worker => vec!["10250/tcp".into(), "30000-32767/tcp".into()],
        // An external etcd member: its clients and its peers.
        Role::Etcd => vec!["2379-2380/tcp".into()],
        // Only the balancer (below): a dedicated load-balancer node runs nothing else.
        Role::LoadBalancer => Vec::new(),
    };
    let vrrp = inv.vrrp_nodes().any(|n| n.name == node.name);
    if let (true, Some(vip)) = (vrrp, &inv.vip) {
        // A node-local balancer listens on 127.0.0.1, which firewalld never filters.
        ports.push(format!("{}/tcp", vip.port.get()));
    }
    if let Some(page) = &inv.stats_page
        && page.bind != StatsBind::Loopback
        && inv.runs_agent(node)
    {
        ports.push(format!("{}/tcp", page.port.get()));
    }
    (ports, vrrp)
}

/// The node's SELinux and firewalld changes, and the warnings to show. Pure.
pub fn plan(
    inv: &Inventory,
    node: &Node,
    facts: &HostFacts,
) -> anyhow::Result<(Vec<Change>, Vec<String>)> {
    let mut changes = Vec::new();
    let mut warnings = Vec::new();
    selinux(inv, facts, &mut changes, &mut warnings);
    firewalld(inv, node, facts, &mut changes, &mut warnings)?;
    Ok((changes, warnings))
}

fn selinux(
    inv: &Inventory,
    facts: &HostFacts,
    changes: &mut Vec<Change>,
    warnings: &mut Vec<String>,
) {
    let enforcing = facts.selinux == SelinuxMode::Enforcing;
    let config = facts.file(Path::new(SELINUX_CONFIG));
    match inv.host_preparation.selinux {
        SelinuxAction::Leave => {
            if enforcing {
                warnings.push(
                    "SELinux is enforcing and hostPreparation.selinux is `leave`: the kubelet \
                     and the containers need a policy that allows them (container-selinux), or \
                     kubeadm's static pods may fail to start"
                        .to_owned(),
                );
            }
        }
        SelinuxAction::Permissive => {
            // Only where SELinux runs: a node without it (Debian with a policy package
            // installed, RHEL booted with selinux=0) keeps its file as it is.
            let running = matches!(
                facts.selinux,
                SelinuxMode::Enforcing | SelinuxMode::Permissive
            );
            let new_config = config.filter(|_| running).and_then(permissive_config);
            if enforcing {
                changes.push(Change::SelinuxPermissive);
            }
            if let (Some(current), Some(new)) = (config, new_config.as_ref()) {
                changes.push(Change::WriteFile {
                    path: SELINUX_CONFIG.into(),
                    contents: new.clone(),
                    mode: 0o644,
                    secret: false,
                    diff: true,
                    current: Some(current.to_vec()),
                    backup: Some(SELINUX_CONFIG_BACKUP.into()),
                    preview: None,
                });
            }
            if enforcing || new_config.is_some() {
                warnings.push(
                    "SELinux was enforcing: set to permissive now and in /etc/selinux/config, \
                     as the kubeadm guides do (it still logs what it would deny). Set \
                     hostPreparation.selinux: leave to keep it enforcing with a policy for \
                     the kubelet and containers"
                        .to_owned(),
                );
            }
        }
    }
}

/// /etc/selinux/config with `SELINUX=enforcing` made `SELINUX=permissive`, every other byte
/// kept; `None` when it says something else (permissive, or disabled, which is left alone).
/// The value is read as libselinux does: the line starts `SELINUX=` and its value starts
/// with `enforcing` in any case (`SELINUX=Enforcing # x` enforces too).
fn permissive_config(current: &[u8]) -> Option<Vec<u8>> {
    let mut changed = false;
    let mut out = Vec::with_capacity(current.len());
    for line in current.split_inclusive(|b| *b == b'\n') {
        let body = line.strip_suffix(b"\n").unwrap_or(line);
        let value = body.trim_ascii_start().strip_prefix(b"SELINUX=");
        if value.is_some_and(|v| v.len() >= 9 && v[..9].eq_ignore_ascii_case(b"enforcing")) {
            changed = true;
            out.extend_from_slice(b"SELINUX=permissive");
            out.extend_from_slice(&line[body.len()..]);
        } else {
            out.extend_from_slice(line);
        }
    }
    changed.then_some(out)
}

fn firewalld(
    inv: &Inventory,
    node: &Node,
    facts: &HostFacts,
    changes: &mut Vec<Change>,
    warnings: &mut Vec<String>,
) -> anyhow::Result<()> {
    let Some(fw) = &facts.firewalld else {
        return Ok(());
    };
    let (ports, vrrp) = needed(inv, node);
    let wanted = || {
        let mut all = ports.clone();
        if vrrp {
            all.push("vrrp".to_owned());
        }
        all.join(" ")
    };
    match inv.host_preparation.firewalld {
        FirewalldAction::Leave => {
            if fw.running {
                warnings.push(format!(
                    "firewalld is running and hostPreparation.firewalld is `leave`: make sure \
                     it lets in {}",
                    wanted()
                ));
            }
        }
        FirewalldAction::Stop => {
            let service = |action| Change::Service {
                name: "firewalld".to_owned(),
                init: facts.init,
                action,
                check_first: None,
            };
            if fw.running {
                changes.push(service(ServiceAction::Stop));
            }
            if fw.enabled {
                changes.push(service(ServiceAction::Disable));
            }
            if fw.running || fw.enabled {
                warnings.push(
                    "firewalld stopped and disabled, as hostPreparation.firewalld: stop asks: \
                     this node has no host firewall now"
                        .to_owned(),
                );
            }
        }
        FirewalldAction::OpenPorts if !fw.running => {
            if fw.enabled {
                warnings.push(format!(
                    "firewalld is enabled but not running, so khactl cannot add its rules: when \
                     it starts (at the next boot) it will block {}; start it and run `khactl \
                     up` again, or set hostPreparation.firewalld: stop",
                    wanted()
                ));
            }
        }
        FirewalldAction::OpenPorts => {
            if !fw.cmd {
                anyhow::bail!(
                    "firewalld is running but firewall-cmd is missing, so its ports cannot be \
                     opened: install firewalld's command line tool, or set \
                     hostPreparation.firewalld: stop (or leave)"
                );
            }
            let ports: Vec<String> = ports
                .into_iter()
                .filter(|p| !fw.ports.contains(p))
                .collect();
            let protocols: Vec<String> = (vrrp && !fw.protocols.iter().any(|p| p == "vrrp"))
                .then(|| "vrrp".to_owned())
                .into_iter()
                .collect();
            if !ports.is_empty() || !protocols.is_empty() {
                changes.push(Change::FirewalldOpen { ports, protocols });
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
