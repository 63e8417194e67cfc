//! Whether the control plane is whole: every agent running, exactly one VIP holder, every
//! API server ready, every etcd member a healthy voter. The drill starts only from there and
//! waits for it between scenarios. Read-only.

use std::time::Duration;

use serde::Serialize;

use crate::cluster::{api, etcd, vip};
use crate::inventory::Inventory;
use crate::os::service;
use crate::phases::Context;
use crate::remote::{NodeHandle, RemoteCommand};
use crate::render::kubeadm::API_SERVER_PORT;

/// One look at the control plane.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Health {
    pub control_planes: usize,
    pub holders: Vec<String>,
    pub agents_down: Vec<String>,
    pub apiservers_ready: Vec<String>,
    pub apiservers_not_ready: Vec<String>,
    /// Members not healthy or still learners, by name (or id).
    pub etcd_unhealthy: Vec<String>,
    /// Nodes that could not be asked, with why.
    pub unreachable: Vec<String>,
}

impl Health {
    pub fn healthy(&self) -> bool {
        self.problems().is_empty()
    }

    /// What is wrong, one line each.
    pub fn problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        let list = |v: &[String]| v.join(", ");
        if !self.unreachable.is_empty() {
            p.push(format!("unreachable: {}", list(&self.unreachable)));
        }
        if !self.agents_down.is_empty() {
            p.push(format!(
                "khagent not running on {}",
                list(&self.agents_down)
            ));
        }
        match self.holders.len() {
            1 => {}
            0 => p.push("no node holds the VIP".to_owned()),
            _ => p.push(format!(
                "{} nodes hold the VIP: {}",
                self.holders.len(),
                list(&self.holders)
            )),
        }
        if !self.apiservers_not_ready.is_empty() {
            p.push(format!(
                "API server not ready on {}",
                list(&self.apiservers_not_ready)
            ));
        }
        if !self.etcd_unhealthy.is_empty() {
            p.push(format!(
                "etcd members not healthy voters: {}",
                list(&self.etcd_unhealthy)
            ));
        }
        p
    }
}

/// One node's part.
struct NodeLook {
    agent_active: bool,
    holds_vip: bool,
    apiserver_ready: bool,
}

async fn look(
    host: &NodeHandle,
    inv: &Inventory,
    init: crate::os::InitSystem,
) -> anyhow::Result<NodeLook> {
    let address = inv
        .node(host.node())
        .map(|n| n.address.to_string())
        .unwrap_or_default();
    let addrs = RemoteCommand::new(["ip", "-o", "-4", "addr", "show"])
        .read_only()
        .timeout(Duration::from_secs(3));
    let holds_vip = match &inv.vip {
        Some(v) => vip::holds(&host.run(&addrs).await?.stdout_str(), v.address),
        None => false,
    };
    let agent_active = service::state(host, init, "khagent").await?.active;
    let apiserver_ready = api::ready(host, &address, API_SERVER_PORT, &address).await?;
    Ok(NodeLook {
        agent_active,
        holds_vip,
        apiserver_ready,
    })
}

/// Looks at every control plane side by side, then at etcd from one that answered.
pub async fn check(ctx: &Context) -> anyhow::Result<Health> {
    let fleet = ctx.fleet()?;
    let inv = &ctx.inventory;
    let planes: Vec<&str> = inv.control_plane().map(|n| n.name.as_str()).collect();
    let init_of = |node: &str| {
        ctx.facts
            .get(node)
            .map(|f| f.init)
            .unwrap_or(crate::os::InitSystem::Unknown)
    };
    let looks = fleet
        .each(
            |h| planes.contains(&h.node()),
            async |h| look(h, inv, init_of(h.node())).await,
        )
        .await;
    let mut health = Health {
        control_planes: planes.len(),
        ..Health::default()
    };
    let mut ask_etcd = None;
    for (node, look) in looks {
        match look {
            Ok(l) => {
                if l.holds_vip {
                    health.holders.push(node.clone());
                }
                if !l.agent_active {
                    health.agents_down.push(node.clone());
                }
                if l.apiserver_ready {
                    health.apiservers_ready.push(node.clone());
                    ask_etcd.get_or_insert(node);
                } else {
                    health.apiservers_not_ready.push(node);
                }
            }
            Err(e) => health.unreachable.push(format!("{node} ({e:#})")),
        }
    }
    match ask_etcd.as_deref().and_then(|n| fleet.host(n)) {
        Some(host) => match etcd::members(host).await {
            Ok(members) => {
                for m in members {
                    if m.is_learner || m.healthy != Some(true) {
                        health.etcd_unhealthy.push(if m.name.is_empty() {
                            format!("{:x}", m.id)
                        } else {
                            m.name
                        });
                    }
                }
            }
            Err(e) => health.etcd_unhealthy.push(format!("(cannot list: {e:#})")),
        },
        None => health
            .etcd_unhealthy
            .push("(no control plane with a ready API server to ask)".to_owned()),
    }
    Ok(health)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn whole() -> Health {
        Health {
            control_planes: 3,
            holders: vec!["cp1".into()],
            apiservers_ready: vec!["cp1".into(), "cp2".into(), "cp3".into()],
            ..Health::default()
        }
    }

    #[test]
    fn a_whole_control_plane_has_no_problem() {
        assert!(whole().healthy());
    }

    #[test]
    fn each_problem_is_named() {
        let mut h = whole();
        h.holders.push("cp2".into());
        h.agents_down.push("cp3".into());
        h.etcd_unhealthy.push("cp3".into());
        let p = h.problems();
        assert_eq!(
            p,
            [
                "khagent not running on cp3",
                "2 nodes hold the VIP: cp1, cp2",
                "etcd members not healthy voters: cp3"
            ]
        );
        h.holders.clear();
        assert!(h.problems().contains(&"no node holds the VIP".to_owned()));
    }
}
