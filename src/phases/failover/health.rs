//! Whether the control plane is whole: every agent running and seeing every API server up,
//! exactly one VIP holder that the others follow and none is about to preempt, every API
//! server ready, every etcd member a healthy voter. The drill starts only from there and
//! waits for it between scenarios (a restarted agent takes the VIP back after its preempt
//! delay: a scenario started in that window would break the wrong node). Read-only.

use std::time::Duration;

use serde::Serialize;

use crate::cluster::agent::{self, AgentStatus};
use crate::cluster::{api, etcd, vip};
use crate::inventory::{Inventory, Role};
use crate::os::service;
use crate::phases::Context;
use crate::remote::NodeHandle;
use crate::render::kubeadm::API_SERVER_PORT;

/// One look at the control plane.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Health {
    pub control_planes: usize,
    pub holders: Vec<String>,
    pub agents_down: Vec<String>,
    /// Agents not yet settled behind the holder, with why: about to preempt it, not yet
    /// following it, or out of the running.
    pub unsettled: Vec<String>,
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

    /// Whether all that is wrong is VRRP still settling (an agent about to take the VIP back
    /// or just restarted), which passes on its own within a preempt delay.
    pub fn only_settling(&self) -> bool {
        // The unsettled agents are one line of the problems.
        !self.unsettled.is_empty() && self.problems().len() == 1
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
        if !self.unsettled.is_empty() {
            p.push(format!("VRRP not settled: {}", list(&self.unsettled)));
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

/// One node's part: its agent and the VIP where it runs VRRP, its API server where it is a
/// control plane (with dedicated load-balancer nodes these are different nodes).
struct NodeLook {
    agent_active: Option<bool>,
    /// Its `/status` (`None`: not answering).
    agent: Option<AgentStatus>,
    holds_vip: bool,
    apiserver_ready: Option<bool>,
}

async fn look(
    host: &NodeHandle,
    inv: &Inventory,
    init: crate::os::InitSystem,
) -> anyhow::Result<NodeLook> {
    let node = inv.node(host.node());
    let address = node.map(|n| n.address.to_string()).unwrap_or_default();
    let router = node.is_some_and(|n| inv.vrrp_nodes().any(|r| r.name == n.name));
    let holds_vip = match &inv.vip {
        Some(v) if router => vip::holds_on(host, v.address).await?,
        _ => false,
    };
    let agent_active = if router {
        Some(service::state(host, init, "khagent").await?.active)
    } else {
        None
    };
    let agent = if agent_active == Some(true) {
        agent::status(host).await?
    } else {
        None
    };
    let apiserver_ready = if node.is_some_and(|n| n.role == Role::ControlPlane) {
        Some(api::ready(host, &address, API_SERVER_PORT, &address).await?)
    } else {
        None
    };
    Ok(NodeLook {
        agent_active,
        agent,
        holds_vip,
        apiserver_ready,
    })
}

/// Looks at every control plane and every load-balancer node side by side, then at etcd from
/// one that answered (from an etcd node with external etcd).
pub async fn check(ctx: &Context) -> anyhow::Result<Health> {
    let fleet = ctx.fleet()?;
    let inv = &ctx.inventory;
    let planes: Vec<&str> = inv.control_plane().map(|n| n.name.as_str()).collect();
    let asked: Vec<&str> = inv
        .nodes
        .iter()
        .filter(|n| n.role == Role::ControlPlane || inv.vrrp_nodes().any(|r| r.name == n.name))
        .map(|n| n.name.as_str())
        .collect();
    let init_of = |node: &str| {
        ctx.facts
            .get(node)
            .map(|f| f.init)
            .unwrap_or(crate::os::InitSystem::Unknown)
    };
    let looks = fleet
        .each(
            |h| asked.contains(&h.node()),
            async |h| look(h, inv, init_of(h.node())).await,
        )
        .await;
    let mut health = Health {
        control_planes: planes.len(),
        ..Health::default()
    };
    let mut ask_etcd = None;
    let mut agents = Vec::new();
    for (node, look) in looks {
        match look {
            Ok(l) => {
                if l.holds_vip {
                    health.holders.push(node.clone());
                }
                match l.agent_active {
                    Some(false) => health.agents_down.push(node.clone()),
                    Some(true) => agents.push((node.clone(), l.agent)),
                    None => {}
                }
                match l.apiserver_ready {
                    Some(true) => {
                        health.apiservers_ready.push(node.clone());
                        ask_etcd.get_or_insert(node);
                    }
                    Some(false) => health.apiservers_not_ready.push(node),
                    None => {}
                }
            }
            Err(e) => health.unreachable.push(format!("{node} ({e:#})")),
        }
    }
    if inv.vip.is_some() {
        let holder_address = match health.holders.as_slice() {
            [one] => inv.node(one).map(|n| n.address.to_string()),
            _ => None,
        };
        health.unsettled = agents
            .iter()
            .filter_map(|(node, status)| {
                unsettled(status.as_ref(), holder_address.as_deref())
                    .map(|why| format!("{node} ({why})"))
            })
            .collect();
    }
    // An external etcd is asked on its own nodes (the first that is connected).
    if inv.external_etcd() {
        ask_etcd = inv
            .etcd_nodes()
            .find(|n| fleet.host(n.name.as_str()).is_some())
            .map(|n| n.name.to_string());
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

/// How long the drill waits for VRRP to settle (a preempt delay, 5 s, and then some) before
/// it calls the control plane not whole.
pub const SETTLE_WAIT: Duration = Duration::from_secs(20);

/// [`check`], again every half second while all that is wrong is VRRP settling, for up to
/// [`SETTLE_WAIT`].
pub async fn settled(ctx: &Context) -> anyhow::Result<Health> {
    let deadline = std::time::Instant::now() + SETTLE_WAIT;
    loop {
        let h = check(ctx).await?;
        if !h.only_settling() || std::time::Instant::now() > deadline {
            return Ok(h);
        }
        ctx.settings.interrupt.check()?;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Why a running agent is not settled behind the one holder at `holder_address` (`None`
/// when there is not exactly one holder: that is its own problem), or `None` if it is.
fn unsettled(status: Option<&AgentStatus>, holder_address: Option<&str>) -> Option<String> {
    let Some(s) = status else {
        return Some("its status page does not answer".to_owned());
    };
    if s.track_pending {
        return Some("its tracked checks have not all run yet".to_owned());
    }
    if !s.listening {
        return Some("its load balancer is not listening".to_owned());
    }
    // With every API server ready, an agent that still counts one down has not caught up
    // (rise checks to go): its priority or its load balancing is about to change.
    let lowered = s.lowered_by();
    if !lowered.is_empty() {
        return Some(format!(
            "its priority is still lowered: {}",
            lowered.join("; ")
        ));
    }
    let down: Vec<&str> = s
        .backends
        .iter()
        .filter(|b| !b.healthy)
        .map(|b| b.name.as_str())
        .collect();
    if !down.is_empty() {
        return Some(format!(
            "its load balancer still counts {} down",
            down.join(", ")
        ));
    }
    match s.vrrp_state.as_deref() {
        Some("master") => None,
        Some("backup") if s.preempt_pending => {
            Some("takes the VIP over once its preempt delay runs out".to_owned())
        }
        Some("backup") => match (s.master_address.as_deref(), holder_address) {
            (None, _) => Some("has not heard the holder yet".to_owned()),
            (Some(m), Some(h)) if m != h => Some(format!("follows {m}, not the holder")),
            _ => None,
        },
        Some(other) => Some(format!("VRRP state {other}")),
        None => Some("runs no VRRP".to_owned()),
    }
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

    fn agent(state: &str, master: Option<&str>, preempt_pending: bool) -> AgentStatus {
        AgentStatus {
            version: None,
            uptime_seconds: None,
            vrrp_state: Some(state.to_owned()),
            base_priority: Some(200),
            effective_priority: Some(200),
            track_reasons: vec![],
            track_pending: false,
            holds_vip: state == "master",
            preempt_pending,
            master_address: master.map(str::to_owned),
            last_error: None,
            listening: true,
            active_connections: 0,
            backends: vec![],
        }
    }

    /// A restarted higher-priority agent takes the VIP back after its preempt delay; until
    /// then the group is not settled and the drill must not pick a victim.
    #[test]
    fn an_agent_about_to_preempt_or_not_yet_following_the_holder_is_unsettled() {
        let holder = Some("10.0.0.12");
        let settled = |s: AgentStatus| unsettled(Some(&s), holder);
        assert_eq!(settled(agent("master", Some("10.0.0.12"), false)), None);
        assert_eq!(settled(agent("backup", Some("10.0.0.12"), false)), None);
        assert_eq!(
            settled(agent("backup", Some("10.0.0.12"), true)).as_deref(),
            Some("takes the VIP over once its preempt delay runs out")
        );
        assert_eq!(
            settled(agent("backup", None, false)).as_deref(),
            Some("has not heard the holder yet")
        );
        assert_eq!(
            settled(agent("backup", Some("10.0.0.13"), false)).as_deref(),
            Some("follows 10.0.0.13, not the holder")
        );
        assert!(settled(agent("fault", None, false)).is_some());
        let mut lowered = agent("backup", Some("10.0.0.12"), false);
        lowered.track_reasons = vec!["local-apiserver: backend cp1 failing (-120)".into()];
        assert_eq!(
            settled(lowered).as_deref(),
            Some("its priority is still lowered: local-apiserver: backend cp1 failing (-120)")
        );
        let mut behind = agent("backup", Some("10.0.0.12"), false);
        behind.backends = vec![crate::cluster::agent::Backend {
            name: "cp1".into(),
            address: "10.0.0.11:6443".into(),
            healthy: false,
            active_connections: 0,
            last_error: None,
        }];
        assert_eq!(
            settled(behind).as_deref(),
            Some("its load balancer still counts cp1 down")
        );
        let mut deaf = agent("backup", Some("10.0.0.12"), false);
        deaf.listening = false;
        assert_eq!(
            settled(deaf).as_deref(),
            Some("its load balancer is not listening")
        );
        let mut fresh = agent("backup", Some("10.0.0.12"), false);
        fresh.track_pending = true;
        assert_eq!(
            settled(fresh).as_deref(),
            Some("its tracked checks have not all run yet")
        );
        assert!(unsettled(None, holder).is_some());
        let mut h = whole();
        h.unsettled
            .push("cp1 (has not heard the holder yet)".into());
        assert!(!h.healthy());
    }
}
