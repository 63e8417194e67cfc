//! The gate of `add-master` and `add-worker`: before anything changes, the cluster must exist
//! and be healthy, and the new node must be one the inventory names that the cluster does not
//! have yet. A control plane is added only to a cluster whose every etcd member answers, whose
//! every API server is ready on its own address and whose VIP one node holds; and not to an
//! odd-sized etcd (an even one tolerates no more failures than the size below it) unless the
//! user says so. Every check is read-only, so `--dry-run` runs the same gate.

use anyhow::bail;

use super::init::learn_members;
use crate::cluster::{api, etcd, vip};
use crate::diagnostics::Hinted;
use crate::inventory::Role;
use crate::phases::{Context, Phase, PhaseFuture};
use crate::render::kubeadm::API_SERVER_PORT;
use crate::report::Event;

/// The node being added, and what the user allowed.
pub struct CheckGrowth {
    pub node: String,
    pub role: Role,
    /// `--yes`: an even number of etcd members is a warning, not a refusal.
    pub allow_even: bool,
}

impl Phase for CheckGrowth {
    fn title(&self) -> &'static str {
        "Check the cluster before it grows"
    }

    fn run<'a>(&'a self, ctx: &'a mut Context) -> PhaseFuture<'a> {
        Box::pin(async move {
            learn_members(ctx).await?;
            let verdict = self.check(ctx).await;
            ctx.settle(vec![(self.node.clone(), verdict)])
        })
    }
}

impl CheckGrowth {
    async fn check(&self, ctx: &Context) -> anyhow::Result<String> {
        let name = self.node.as_str();
        if !ctx.cluster.initialized {
            return Err(Hinted::new("there is no cluster to add a node to")
                .hint("build it first: `khactl up -i INVENTORY`")
                .into());
        }
        if ctx.cluster.members.contains(name) {
            return Ok(format!("{name} is already in the cluster: nothing to add"));
        }
        let others_missing: Vec<&str> = ctx
            .inventory
            .control_plane()
            .map(|n| n.name.as_str())
            .filter(|n| *n != name && !ctx.cluster.members.contains(*n))
            // A control plane etcd still counts as a voter is in the cluster, however
            // broken: the health check below names it.
            .filter(|n| !is_voter(ctx, n))
            .collect();
        if !others_missing.is_empty() {
            return Err(Hinted::new(format!(
                "{} {} in the inventory but not in the cluster; control planes are added one \
                 at a time, to a cluster that has all the others",
                others_missing.join(", "),
                if others_missing.len() == 1 {
                    "is"
                } else {
                    "are"
                }
            ))
            .hint(format!(
                "add {} first, or take {} out of the inventory for now",
                others_missing[0], name
            ))
            .into());
        }
        let problems = self.health_problems(ctx).await?;
        if !problems.is_empty() {
            return Err(Hinted::new(format!(
                "the cluster is not healthy, so {name} is not added: {}",
                problems.join("; ")
            ))
            .hint("fix these first (`khactl status` shows the whole picture), then run the command again")
            .into());
        }
        if self.role != Role::ControlPlane {
            return Ok("cluster healthy; the worker can join".to_owned());
        }
        if ctx.inventory.external_etcd() {
            // The new control plane is only etcd's client: the membership stays as it is.
            return Ok(format!(
                "cluster healthy: {} external etcd member(s), left as they are",
                ctx.cluster.etcd.len()
            ));
        }
        let voters = ctx
            .cluster
            .etcd
            .iter()
            .filter(|m| !m.is_learner && !self.is_new_node(ctx, m))
            .count();
        let after = voters + 1;
        if after % 2 == 0 {
            let why = format!(
                "etcd would have {after} members: it needs {} of them to work, so it survives \
                 the loss of {} member(s), no more than with {voters}",
                etcd::quorum(after),
                after - etcd::quorum(after),
            );
            if !self.allow_even {
                return Err(Hinted::new(format!("refusing to add {name}: {why}"))
                    .hint(format!(
                        "add two control planes (one after the other) to reach {}, and pass \
                         --yes to accept the even size in between",
                        after + 1
                    ))
                    .into());
            }
            ctx.report.event(Event::Warning {
                node: Some(name),
                message: &format!("{why} (accepted with --yes)"),
            });
        }
        Ok(format!(
            "cluster healthy: {voters} etcd voter(s) → {after}, one node holds the VIP"
        ))
    }

    /// A member that is the node being added (by name or peer URL): the remains of an earlier
    /// life of that machine, which the join removes first.
    fn is_new_node(&self, ctx: &Context, m: &etcd::Member) -> bool {
        ctx.inventory
            .node(&self.node)
            .is_some_and(|n| m.is_node(n.name.as_str(), &n.address.to_string()))
    }

    /// Every etcd member healthy (stale remains of the new node aside), every member control
    /// plane's API server ready on its own address, exactly one VIP holder.
    async fn health_problems(&self, ctx: &Context) -> anyhow::Result<Vec<String>> {
        let mut problems = Vec::new();
        for m in &ctx.cluster.etcd {
            if self.is_new_node(ctx, m) {
                continue;
            }
            let label = if m.name.is_empty() {
                m.peer_urls.first().cloned().unwrap_or_default()
            } else {
                m.name.clone()
            };
            if m.is_learner {
                problems.push(format!(
                    "etcd member {label} is a learner (a join that did not finish)"
                ));
            } else if m.healthy != Some(true) {
                problems.push(format!("etcd member {label} does not answer"));
            }
        }
        for other in ctx.inventory.control_plane() {
            let n = other.name.as_str();
            if n != self.node && !ctx.cluster.members.contains(n) && is_voter(ctx, n) {
                problems.push(format!(
                    "{n} is an etcd voter but not a complete member (its kubelet.conf, etcd \
                     manifest or Node object is missing)"
                ));
            }
        }
        let fleet = ctx.fleet()?;
        let members: Vec<&crate::inventory::Node> = ctx
            .inventory
            .control_plane()
            .filter(|n| ctx.cluster.members.contains(n.name.as_str()))
            .collect();
        for node in &members {
            let Some(host) = fleet.host(node.name.as_str()) else {
                bail!("internal: {} is not connected", node.name);
            };
            let address = node.address.to_string();
            if !api::ready(host, &address, API_SERVER_PORT, &address).await? {
                problems.push(format!(
                    "the API server of {} is not ready (/readyz on {address}:{API_SERVER_PORT})",
                    node.name
                ));
            }
        }
        // The member control planes, or the load-balancer nodes that hold the VIP for them.
        let names: Vec<&str> = if ctx.inventory.dedicated_lb() {
            ctx.inventory
                .vrrp_nodes()
                .map(|n| n.name.as_str())
                .collect()
        } else {
            members.iter().map(|n| n.name.as_str()).collect()
        };
        // Node-local balancers: no VIP to be held.
        if let Some(vip) = ctx.inventory.vip.as_ref().map(|v| v.address) {
            let holders = vip::holders(fleet, &names, vip).await?;
            match holders.len() {
                1 => {}
                0 => problems.push(format!("no node holds the VIP {vip}")),
                _ => problems.push(format!("{} all hold the VIP {vip}", holders.join(", "))),
            }
        }
        Ok(problems)
    }
}

/// Whether etcd lists control plane `name` (by name or peer URL) as a voter.
fn is_voter(ctx: &Context, name: &str) -> bool {
    let Some(node) = ctx.inventory.node(name) else {
        return false;
    };
    let address = node.address.to_string();
    ctx.cluster
        .etcd
        .iter()
        .any(|m| !m.is_learner && m.is_node(name, &address))
}
