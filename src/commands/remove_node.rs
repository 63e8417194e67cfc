//! `khactl remove-node NAME`: take a node out of the running cluster without an outage. The
//! runbook is [`phases`]; [`LeaveCluster`] and [`FinishRemoval`] hold the order (VIP away
//! first, drain, etcd member removed before its etcd stops, agents reloaded without it, then
//! the node reset). With `--unreachable` the machine is not contacted: only the cluster's
//! side (etcd member, Node object, agents) is cleaned up.
//!
//! An etcd node of the external etcd takes [`etcd_phases`] instead: its member removed
//! before its etcd stops, nothing of Kubernetes touched.
//!
//! The node stays in the inventory for the run (khactl needs its address); the user deletes
//! it from the file afterwards, which the result says.

use std::path::PathBuf;
use std::sync::Arc;

use serde::Serialize;

use super::UsageError;
use super::up::{NodeResult, VipResult, load_agent};
use crate::inventory::Role;
use crate::phases::kubernetes::{FinishRemoval, LeaveCluster, Leaving};
use crate::phases::{
    Connect, GatherFacts, GeneratePki, InstallAgent, LeaveEtcd, LockCluster, Mode, Phase,
    Preflight, UpdateEtcdEndpoints, VerifyCluster, WaitForVip,
};
use crate::report::Reporter;
use crate::session::{self, Finished, NodeOptions};

#[derive(Debug, Clone)]
pub struct RemoveOptions {
    pub nodes: NodeOptions,
    pub node: String,
    pub unreachable: bool,
    pub dry_run: bool,
    /// Do not ask.
    pub yes: bool,
    pub agent_binary: Option<PathBuf>,
}

pub fn phases(leaving: &Leaving) -> Vec<Box<dyn Phase>> {
    vec![
        Box::new(GeneratePki),
        Box::new(Connect),
        Box::new(GatherFacts),
        Box::new(Preflight),
        Box::new(LockCluster),
        Box::new(LeaveCluster(leaving.clone())),
        Box::new(InstallAgent),
        Box::new(WaitForVip),
        Box::new(FinishRemoval(leaving.clone())),
        Box::new(VerifyCluster),
    ]
}

/// An external etcd node: first the API servers (one at a time) and kubeadm-config stop
/// listing it among their endpoints, so none is left pointing at it alone and a failed
/// rewrite stops the run before the membership changes; then its member is removed, from
/// another etcd node, and etcd stopped there and its files and data removed.
pub fn etcd_phases(leaving: &Leaving) -> Vec<Box<dyn Phase>> {
    vec![
        Box::new(Connect),
        Box::new(GatherFacts),
        Box::new(Preflight),
        Box::new(LockCluster),
        Box::new(UpdateEtcdEndpoints::new(Some(
            leaving.node.name.to_string(),
        ))),
        Box::new(LeaveEtcd {
            node: leaving.node.clone(),
            unreachable: leaving.unreachable,
        }),
    ]
}

pub async fn run(
    opts: &RemoveOptions,
    reporter: Box<dyn Reporter>,
) -> anyhow::Result<RemoveResult> {
    let mut loaded = session::load(&opts.nodes)?;
    loaded.check_stats_password()?;
    let listed = loaded.inventory.node(&opts.node).cloned();
    if !opts.yes && !opts.dry_run && !std::io::IsTerminal::is_terminal(&std::io::stdin()) {
        return Err(UsageError::new(
            "remove-node changes the cluster and asks first; there is no terminal to ask on",
        )
        .hint("pass --yes to remove without asking")
        .into());
    }
    // The last balancer: refused before anything is contacted, reachable or not (without it
    // the run's inventory would have no balancer, and the VIP would fall to the control
    // planes).
    if listed
        .as_ref()
        .is_some_and(|n| n.role == Role::LoadBalancer)
        && loaded.inventory.load_balancer_nodes().count() == 1
    {
        return Err(UsageError::new(format!(
            "remove-node: {} is the last load-balancer node: without it no node holds the VIP \
             and nothing balances the API servers",
            opts.node
        ))
        .hint("add another `role: loadbalancer` node and run `khactl up` first")
        .into());
    }
    let agent = Arc::new(load_agent(opts.agent_binary.as_deref())?);
    // The control planes, and the leaving node unless the machine is gone: no other worker
    // is contacted, unless a control plane leaves node-local balancers: then every worker's
    // agent is reloaded without it.
    let name = opts.node.clone();
    let unreachable = opts.unreachable;
    let every_agent = loaded.inventory.changes_every_agent(&name);
    // External etcd nodes are asked (members, health), never changed.
    loaded.inventory.nodes.retain(|n| {
        (matches!(n.role, Role::ControlPlane | Role::Etcd | Role::LoadBalancer) || every_agent)
            && n.name.as_str() != name
    });
    let mode = if opts.dry_run {
        Mode::Plan
    } else {
        Mode::Apply
    };
    let cluster = loaded.inventory.cluster.name.to_string();
    let inventory_path = opts.nodes.inventory.clone();
    let mut ctx = loaded.start("remove-node", mode, reporter)?;
    // A node taken out of the inventory already (as `up` then says to run remove-node) is
    // known from the state's record of where khactl placed its agent and keys.
    let node = match listed {
        Some(node) => node,
        None => recorded_node(&ctx, &name).ok_or_else(|| {
            UsageError::new(format!(
                "remove-node: {name} is neither in the inventory nor in the state's record of \
                 the nodes khactl placed its agent on"
            ))
            .hint(format!(
                "put it back in {} for the removal (khactl needs its address), or check \
                 --state-dir",
                inventory_path.display()
            ))
        })?,
    };
    if !unreachable {
        ctx.inventory.nodes.push(node.clone());
    }
    if !opts.yes && !opts.dry_run {
        let prompt = format!(
            "Remove {} from cluster {cluster}? Type the node's name to go on",
            opts.node
        );
        if !ctx.report.confirm(&prompt, &opts.node)? {
            anyhow::bail!("not confirmed; nothing was changed");
        }
    }
    ctx.settings.agent_binary = Some(agent);
    let leaving = Leaving { node, unreachable };
    let phases = if leaving.node.role == Role::Etcd {
        etcd_phases(&leaving)
    } else {
        phases(&leaving)
    };
    let result = session::run(&mut ctx, phases).await;
    let finished = session::finish(ctx, result).await?;
    Ok(RemoveResult::from_finished(opts, &finished))
}

/// A control plane or load-balancer node khactl placed its agent or keys on, as the state's
/// record has it (address and SSH; the CA keys tell a control plane).
fn recorded_node(ctx: &crate::phases::Context, name: &str) -> Option<crate::inventory::Node> {
    let record = crate::state::record::Placements::load(&ctx.state.placements_path()).ok()?;
    let placed = record.nodes.get(name)?;
    let target = placed.target(name).ok()?;
    Some(crate::inventory::Node {
        name: target.node,
        address: target.address,
        role: if placed.ca_keys {
            Role::ControlPlane
        } else {
            Role::LoadBalancer
        },
        ssh: crate::inventory::SshOverrides {
            user: Some(target.user),
            port: Some(target.port),
            identity_file: target.identity_file,
            sudo: Some(target.sudo),
            bastion: target.bastion,
        },
        labels: Default::default(),
        taints: None,
    })
}

/// What `remove-node` did (or would do). Field names are stable: see `docs/output.md`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RemoveResult {
    pub dry_run: bool,
    pub cluster: String,
    pub node: String,
    pub unreachable: bool,
    /// The nodes the run reached, with what changed on each.
    pub nodes: Vec<NodeResult>,
    pub total_changes: usize,
    pub etcd_voters: Vec<String>,
    pub vip: VipResult,
    pub log: Option<PathBuf>,
}

impl RemoveResult {
    fn from_finished(opts: &RemoveOptions, f: &Finished) -> Self {
        RemoveResult {
            dry_run: f.mode == Mode::Plan,
            cluster: f.inventory.cluster.name.to_string(),
            node: opts.node.clone(),
            unreachable: opts.unreachable,
            nodes: NodeResult::every(f),
            total_changes: f.total_changes(),
            etcd_voters: f.cluster.voter_names(),
            vip: VipResult::of(f),
            log: f.log.clone(),
        }
    }

    pub fn text(&self) -> Vec<String> {
        let mut lines = vec![if self.dry_run {
            format!(
                "dry run: {} change(s) planned to remove {}; nothing was changed",
                self.total_changes, self.node
            )
        } else {
            format!(
                "remove-node: {} left the cluster; delete it from the inventory now",
                self.node
            )
        }];
        lines.extend(super::membership_lines(
            &self.etcd_voters,
            &self.vip,
            self.log.as_deref(),
        ));
        lines
    }
}
