//! `khactl add-master NAME` and `khactl add-worker NAME`: add one node the inventory names to
//! a running cluster, without an outage. The runbook is [`phases`]: the gate
//! ([`CheckGrowth`]) refuses an unhealthy cluster before anything changes; only the new node is
//! prepared and given its certificates; a control plane joins (a stale member of its name
//! removed first, a failed join reset and its member removed) and only once it is an etcd voter
//! with a ready API server do the running agents learn it as a backend and VRRP peer, by
//! reload — no restart, no VIP move — and the new node gets its agent as a backup.
//!
//! The session sees the control planes (every agent is reloaded, etcd and the API are asked
//! there) and, for `add-worker`, the new worker: other workers are neither contacted nor
//! changed, so one that is down does not block the command.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;

use serde::Serialize;

use super::UsageError;
use super::up::{NodeResult, VipResult, load_agent};
use crate::inventory::Role;
use crate::phases::kubernetes::CheckGrowth;
use crate::phases::{
    CheckEtcdGrowth, CheckKubeadm, Connect, Context, DistributePki, FormerNodes, GatherFacts,
    GeneratePki, InstallAgent, InstallAgentBeforeJoin, JoinControlPlanes, JoinEtcdMember,
    JoinWorkers, LockCluster, Mode, Phase, Preflight, PrepareHosts, UpdateEtcdEndpoints,
    VerifyCluster, WaitForVip,
};
use crate::report::Reporter;
use crate::session::{self, Finished, NodeOptions};

#[derive(Debug, Clone)]
pub struct GrowOptions {
    pub nodes: NodeOptions,
    /// The node to add, as the inventory names it.
    pub node: String,
    /// `ControlPlane` for `add-master`, `Worker` for `add-worker`.
    pub role: Role,
    pub dry_run: bool,
    /// Accept an even number of etcd members.
    pub yes: bool,
    pub agent_binary: Option<PathBuf>,
}

impl GrowOptions {
    fn verb(&self) -> &'static str {
        match self.role {
            Role::ControlPlane => "add-master",
            Role::Worker => "add-worker",
            Role::Etcd => "add-etcd",
            // Not a verb of its own: `up` installs a new load-balancer node's agent.
            Role::LoadBalancer => "up",
        }
    }
}

/// The phases, in runbook order.
pub fn phases(opts: &GrowOptions) -> Vec<Box<dyn Phase>> {
    let gate = Box::new(CheckGrowth {
        node: opts.node.clone(),
        role: opts.role,
        allow_even: opts.yes,
    });
    match opts.role {
        Role::ControlPlane => vec![
            Box::new(GeneratePki),
            Box::new(Connect),
            Box::new(GatherFacts),
            Box::new(Preflight),
            Box::new(LockCluster),
            Box::new(FormerNodes),
            Box::new(CheckKubeadm),
            gate,
            Box::new(PrepareHosts),
            Box::new(DistributePki),
            // Node-local balancers only: the joining node dials its own agent.
            Box::new(InstallAgentBeforeJoin { preflight: false }),
            // Joined and ready before any agent sends it traffic (behind a VIP; a node-local
            // agent health-checks the new backend before it sends it anything).
            Box::new(JoinControlPlanes),
            Box::new(InstallAgent),
            Box::new(WaitForVip),
            Box::new(VerifyCluster),
        ],
        // The etcd node, its certificates, its member; then the API servers (one at a time)
        // and kubeadm-config list it among their endpoints.
        Role::Etcd => vec![
            Box::new(GeneratePki),
            Box::new(Connect),
            Box::new(GatherFacts),
            Box::new(Preflight),
            Box::new(LockCluster),
            Box::new(CheckEtcdGrowth {
                node: opts.node.clone(),
                allow_even: opts.yes,
            }),
            Box::new(PrepareHosts),
            Box::new(DistributePki),
            Box::new(JoinEtcdMember {
                node: opts.node.clone(),
            }),
            Box::new(UpdateEtcdEndpoints::new(None)),
        ],
        // No grow verb adds one (`run` sends the user to `up`); `up` is what would.
        Role::LoadBalancer => super::up::phases(),
        Role::Worker => vec![
            Box::new(GeneratePki),
            Box::new(Connect),
            Box::new(GatherFacts),
            Box::new(Preflight),
            Box::new(LockCluster),
            Box::new(CheckKubeadm),
            gate,
            Box::new(PrepareHosts),
            Box::new(DistributePki),
            Box::new(InstallAgentBeforeJoin { preflight: true }),
            Box::new(JoinWorkers),
            Box::new(VerifyCluster),
        ],
    }
}

/// What the run sees: the control planes, the external etcd nodes (asked, never changed) and
/// `node` (no other worker is contacted; with node-local balancers a new control plane is
/// every worker's new backend, so then every node), and what it may prepare: `node` only.
pub fn narrow(ctx: &mut Context, node: &str) {
    let every_agent = ctx.inventory.changes_every_agent(node);
    ctx.inventory.nodes.retain(|n| {
        every_agent
            || matches!(n.role, Role::ControlPlane | Role::Etcd | Role::LoadBalancer)
            || n.name.as_str() == node
    });
    ctx.settings.scope = Some(BTreeSet::from([node.to_owned()]));
}

pub async fn run(opts: &GrowOptions, reporter: Box<dyn Reporter>) -> anyhow::Result<GrowResult> {
    let loaded = session::load(&opts.nodes)?;
    loaded.check_stats_password()?;
    let verb = opts.verb();
    let Some(node) = loaded.inventory.node(&opts.node) else {
        let known: Vec<&str> = loaded
            .inventory
            .nodes
            .iter()
            .map(|n| n.name.as_str())
            .collect();
        return Err(UsageError::new(format!(
            "{verb}: {} is not in the inventory (it names {})",
            opts.node,
            known.join(", ")
        ))
        .hint(format!(
            "add it to `nodes` in {} first (role: {}), then run `khactl {verb} {}`",
            opts.nodes.inventory.display(),
            opts.role.as_str(),
            opts.node
        ))
        .into());
    };
    if node.role != opts.role {
        let hint = match node.role {
            Role::ControlPlane => format!("use `khactl add-master {}`", opts.node),
            Role::Worker => format!("use `khactl add-worker {}`", opts.node),
            Role::Etcd => format!("use `khactl add-etcd {}`", opts.node),
            Role::LoadBalancer => format!(
                "a load-balancer node runs only khagent: `khactl up -i {}` installs it on {} \
                 and reloads the other balancers with their new peer",
                opts.nodes.inventory.display(),
                opts.node
            ),
        };
        return Err(UsageError::new(format!(
            "{verb}: {} is a {} in the inventory",
            opts.node,
            node.role.as_str()
        ))
        .hint(hint)
        .into());
    }
    let agent = match opts.role {
        Role::ControlPlane => Some(Arc::new(load_agent(opts.agent_binary.as_deref())?)),
        Role::Worker | Role::Etcd | Role::LoadBalancer => None,
    };
    let mode = if opts.dry_run {
        Mode::Plan
    } else {
        Mode::Apply
    };
    let mut ctx = loaded.start(verb, mode, reporter)?;
    ctx.settings.agent_binary = agent;
    narrow(&mut ctx, &opts.node);
    let result = session::run(&mut ctx, phases(opts)).await;
    let finished = session::finish(ctx, result).await?;
    Ok(GrowResult::from_finished(opts, &finished))
}

/// What `add-master` / `add-worker` did (or would do). Field names are stable: see
/// `docs/output.md`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct GrowResult {
    pub dry_run: bool,
    pub cluster: String,
    /// The node added.
    pub node: String,
    pub role: &'static str,
    /// Every node the command reached, with what changed on it (the agents' reloads on the
    /// other control planes, everything on the new node).
    pub nodes: Vec<NodeResult>,
    pub total_changes: usize,
    /// The etcd voters at the end (control planes only; empty in a dry run).
    pub etcd_voters: Vec<String>,
    pub vip: VipResult,
    pub log: Option<PathBuf>,
}

impl GrowResult {
    fn from_finished(opts: &GrowOptions, f: &Finished) -> Self {
        let etcd_voters = f.cluster.voter_names();
        GrowResult {
            dry_run: f.mode == Mode::Plan,
            cluster: f.inventory.cluster.name.to_string(),
            node: opts.node.clone(),
            role: opts.role.as_str(),
            nodes: NodeResult::every(f),
            total_changes: f.total_changes(),
            etcd_voters,
            vip: VipResult::of(f),
            log: f.log.clone(),
        }
    }

    pub fn text(&self) -> Vec<String> {
        let verb = match self.role {
            "control-plane" => "add-master",
            "etcd" => "add-etcd",
            _ => "add-worker",
        };
        let first = match (self.dry_run, self.total_changes) {
            (true, 0) => format!("dry run: {} needs no change", self.node),
            (true, n) => format!(
                "dry run: {n} change(s) planned to add {}; nothing was changed",
                self.node
            ),
            (false, 0) => format!(
                "{verb}: {} was already in the cluster; nothing changed",
                self.node
            ),
            (false, n) => format!("{verb}: {} is in the cluster ({n} change(s))", self.node),
        };
        let mut lines = vec![first];
        lines.extend(super::membership_lines(
            &self.etcd_voters,
            &self.vip,
            self.log.as_deref(),
        ));
        lines
    }
}
