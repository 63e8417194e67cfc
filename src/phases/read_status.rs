//! Read the whole cluster's health, read-only ([`crate::cluster::health`]): on every node
//! that answered, in parallel, whether it holds the VIP and its certificates' expiry; on each
//! control plane also its agent (service state and `/status`) and its own API server's
//! `/readyz`; then, from the first control plane that can say (the first etcd node, with
//! external etcd), the etcd members with each member's own status, the leader Leases, and `/readyz` through the VIP. A query that fails
//! is recorded with the node and the rest of the view still stands. With `watch`, it reads
//! again every interval until Ctrl-C, handing each look to `on_round`.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use super::{Context, Phase, PhaseFuture};
use crate::agent::SERVICE;
use crate::cluster::health::{
    AgentHealth, ClusterHealth, EtcdHealth, LeadersHealth, NodeHealth, ServiceHealth, VipHealth,
};
use crate::cluster::{agent, api, certs, etcd, vip};
use crate::facts::InitSystem;
use crate::inventory::{Node, Role};
use crate::os::service;
use crate::pki::catalog::{APISERVER_BIND_PORT, local_api_url};
use crate::remote::NodeHandle;
use crate::render::etcd::SERVICE as ETCD_SERVICE;

/// Sees each look as it is taken.
pub type OnRound = Box<dyn Fn(&ClusterHealth)>;

pub struct ReadStatus {
    /// Read again every this long until Ctrl-C.
    pub watch: Option<Duration>,
    /// Every look, as it is taken (`--watch` draws it).
    pub on_round: Option<OnRound>,
    /// The last look.
    pub outcome: Rc<RefCell<Option<ClusterHealth>>>,
}

impl Phase for ReadStatus {
    fn title(&self) -> &'static str {
        "Read the cluster's status"
    }

    fn run<'a>(&'a self, ctx: &'a mut Context) -> PhaseFuture<'a> {
        Box::pin(async move {
            loop {
                let health = observe(ctx).await?;
                if let Some(show) = &self.on_round {
                    show(&health);
                }
                *self.outcome.borrow_mut() = Some(health);
                let Some(every) = self.watch else {
                    return Ok(());
                };
                // Ctrl-C ends the watch; the last look is the result.
                let deadline = tokio::time::Instant::now() + every;
                while tokio::time::Instant::now() < deadline {
                    if ctx.settings.interrupt.is_raised() {
                        return Ok(());
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        })
    }
}

/// One look at the cluster.
pub async fn observe(ctx: &Context) -> anyhow::Result<ClusterHealth> {
    let inv = &ctx.inventory;
    let fleet = ctx.fleet()?;
    let seen = fleet
        .each(
            |_| true,
            async |host| anyhow::Ok(node_view(ctx, host).await),
        )
        .await;
    let mut nodes = Vec::new();
    for n in &inv.nodes {
        let name = n.name.as_str();
        let view = seen
            .iter()
            .find(|(node, _)| node == name)
            .and_then(|(_, r)| r.as_ref().ok().cloned());
        nodes.push(view.unwrap_or_else(|| {
            let why = ctx
                .cluster
                .unreachable
                .get(name)
                .cloned()
                .unwrap_or_else(|| "not connected".to_owned());
            NodeHealth {
                name: name.to_owned(),
                role: n.role.as_str(),
                address: n.address.to_string(),
                reachable: false,
                unreachable: Some(why),
                holds_vip: false,
                agent: None,
                api_ready: None,
                certificates: Vec::new(),
                errors: Vec::new(),
                etcd_service: None,
            }
        }));
    }
    // Control planes that answered, those whose API server is ready first.
    let mut asking: Vec<(&Node, &NodeHandle)> = inv
        .control_plane()
        .filter_map(|n| fleet.host(n.name.as_str()).map(|h| (n, h)))
        .collect();
    asking.sort_by_key(|(n, _)| {
        let ready = nodes
            .iter()
            .any(|v| v.name == n.name.as_str() && v.api_ready == Some(true));
        !ready
    });

    // etcd on its own nodes (external), else on the control planes, the ready ones first.
    let etcd_nodes: Vec<&NodeHandle> = inv
        .etcd_nodes()
        .filter_map(|n| fleet.host(n.name.as_str()))
        .collect();
    let etcd_asking: Vec<&NodeHandle> = if inv.external_etcd() {
        etcd_nodes
    } else {
        asking.iter().map(|(_, h)| *h).collect()
    };
    let mut etcd_view = EtcdHealth::default();
    for host in etcd_asking {
        match etcd::members(host).await {
            Ok(members) => {
                let statuses = etcd::statuses(host, &members).await.unwrap_or_default();
                etcd_view = EtcdHealth::from_members(host.node(), &members, &statuses);
                break;
            }
            Err(e) => etcd_view.error = Some(format!("{e:#}")),
        }
    }
    let mut leaders = LeadersHealth::default();
    for (node, host) in &asking {
        match api::leaders(host, &local_api_url(node)).await {
            Ok(list) => {
                let pick = |lease: &str| list.iter().find(|l| l.lease == lease).cloned();
                leaders = LeadersHealth {
                    asked_on: Some(host.node().to_owned()),
                    error: None,
                    controller_manager: pick("kube-controller-manager"),
                    scheduler: pick("kube-scheduler"),
                };
                break;
            }
            Err(e) => leaders.error = Some(format!("{e:#}")),
        }
    }
    // The endpoint as clients dial it: the VIP, or a node's own balancer on 127.0.0.1, from
    // a control plane; an external balancer from a worker, as workers use it (it may refuse
    // its own backends).
    let endpoint = inv.api_endpoint();
    let external = inv.external_lb();
    let (address, from) = match &external {
        Some(ext) => (
            ext.address
                .map_or_else(|| endpoint.host.clone(), |a| a.to_string()),
            ext.address
                .and(inv.workers().find_map(|n| fleet.host(n.name.as_str()))),
        ),
        None => (
            inv.vip.as_ref().map_or_else(
                || std::net::Ipv4Addr::LOCALHOST.to_string(),
                |v| v.address.to_string(),
            ),
            asking.first().map(|(_, host)| *host),
        ),
    };
    let (api_ready, asked_from) = match from {
        Some(host) => {
            let ready = api::ready(host, &endpoint.host, endpoint.port, &address).await;
            (ready.ok(), Some(host.node().to_owned()))
        }
        None => (None, None),
    };
    let holders = nodes
        .iter()
        .filter(|n| n.holds_vip)
        .map(|n| n.name.clone())
        .collect();
    let mut health = ClusterHealth {
        cluster: inv.cluster.name.to_string(),
        healthy: false,
        checked_at: time::OffsetDateTime::now_utc()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default(),
        vip: VipHealth {
            address,
            port: endpoint.port,
            external: external.is_some(),
            holders,
            api_ready,
            asked_from,
        },
        nodes,
        etcd: etcd_view,
        leaders,
        problems: Vec::new(),
        warnings: Vec::new(),
    };
    health.assess(inv);
    Ok(health)
}

/// What one reachable node says; failures are recorded in `errors`, never fatal.
async fn node_view(ctx: &Context, host: &NodeHandle) -> NodeHealth {
    let name = host.node();
    let inv = &ctx.inventory;
    let node = inv.node(name);
    let role = node.map_or(Role::Worker, |n| n.role);
    let address = node.map(|n| n.address.to_string()).unwrap_or_default();
    let mut errors = Vec::new();
    let holds_vip = match &inv.vip {
        Some(v) => vip::holds_on(host, v.address).await.unwrap_or_else(|e| {
            errors.push(format!("cannot read its addresses: {e:#}"));
            false
        }),
        None => false,
    };
    let mut agent_view = None;
    let mut api_ready = None;
    if node.is_some_and(|n| inv.runs_agent(n)) {
        let init = ctx.facts_of(name).map_or(InitSystem::Unknown, |f| f.init);
        match service::state(host, init, SERVICE).await {
            Ok(state) => {
                let status = if state.active {
                    agent::status(host).await.unwrap_or_else(|e| {
                        errors.push(format!("khagent's status: {e:#}"));
                        None
                    })
                } else {
                    None
                };
                agent_view = Some(AgentHealth {
                    active: state.active,
                    enabled: state.enabled,
                    status,
                    logs: service::logs_hint(init, SERVICE),
                });
            }
            Err(e) => errors.push(format!("khagent's service state: {e:#}")),
        }
    }
    if role == Role::ControlPlane {
        match api::ready(host, &address, APISERVER_BIND_PORT, &address).await {
            Ok(ready) => api_ready = Some(ready),
            Err(e) => errors.push(format!("the API server's /readyz: {e:#}")),
        }
    }
    let mut etcd_service = None;
    if role == Role::Etcd {
        let init = ctx.facts_of(name).map_or(InitSystem::Unknown, |f| f.init);
        match service::state(host, init, ETCD_SERVICE).await {
            Ok(state) => {
                etcd_service = Some(ServiceHealth {
                    active: state.active,
                    enabled: state.enabled,
                    logs: service::logs_hint(init, ETCD_SERVICE),
                });
            }
            Err(e) => errors.push(format!("etcd's service state: {e:#}")),
        }
    }
    let certificates = certs::read(host).await.unwrap_or_else(|e| {
        errors.push(format!("its certificates: {e:#}"));
        Vec::new()
    });
    NodeHealth {
        name: name.to_owned(),
        role: role.as_str(),
        address,
        reachable: true,
        unreachable: None,
        holds_vip,
        agent: agent_view,
        api_ready,
        certificates,
        errors,
        etcd_service,
    }
}
