//! The end of `up`: every inventory node registered with the API and Ready, control planes
//! labelled and tainted as the inventory says (kubeadm's control-plane taint unless the
//! inventory says otherwise), the inventory's labels on every node, and etcd with exactly one
//! started voter per control plane.

use std::time::{Duration, Instant};

use anyhow::bail;

use super::etcd_witness;
use crate::cluster::{api, etcd};
use crate::inventory::{Node, Role};
use crate::phases::{Context, Mode, Phase, PhaseFuture};
use crate::render::kubeadm::effective_taints;

/// How long freshly joined kubelets get to register and report Ready.
const READY_DEADLINE: Duration = Duration::from_secs(180);
const CONTROL_PLANE_LABEL: &str = "node-role.kubernetes.io/control-plane";

pub struct VerifyCluster;

impl Phase for VerifyCluster {
    fn title(&self) -> &'static str {
        "Verify the cluster"
    }

    fn skip_reason(&self, ctx: &Context) -> Option<String> {
        (ctx.settings.mode == Mode::Plan)
            .then(|| "dry run: nothing was joined, so there is nothing to verify".to_owned())
    }

    fn run<'a>(&'a self, ctx: &'a mut Context) -> PhaseFuture<'a> {
        Box::pin(async move {
            let c = &*ctx;
            let host = etcd_witness(c, None)
                .ok_or_else(|| anyhow::anyhow!("no control plane is in the cluster to ask"))?;
            let started = Instant::now();
            let (nodes, members) = loop {
                c.settings.interrupt.check()?;
                let nodes = api::nodes(host).await?;
                let members = etcd::members(host).await?;
                let problems = problems(c, &nodes, &members);
                if problems.is_empty() {
                    break (nodes, members);
                }
                if started.elapsed() > READY_DEADLINE {
                    bail!(
                        "after {}s, asked on {}: {}",
                        READY_DEADLINE.as_secs(),
                        host.node(),
                        problems.join("; ")
                    );
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            };
            let results = c
                .inventory
                .nodes
                .iter()
                .map(|n| {
                    let api = nodes.iter().find(|a| a.name == n.name.as_str());
                    let taints = api.map_or(0, |a| a.taints.len());
                    let mut s = format!("registered, Ready, {taints} taint(s)");
                    if n.role == Role::ControlPlane {
                        s.push_str(", etcd voter");
                    }
                    (n.name.to_string(), Ok(s))
                })
                .collect();
            ctx.cluster.etcd = members;
            ctx.settle(results)
        })
    }
}

/// What is not yet as the inventory says; empty when the cluster is.
fn problems(ctx: &Context, nodes: &[api::ApiNode], members: &[etcd::Member]) -> Vec<String> {
    let mut out = Vec::new();
    for n in &ctx.inventory.nodes {
        let Some(api) = nodes.iter().find(|a| a.name == n.name.as_str()) else {
            out.push(format!("{} is not registered", n.name));
            continue;
        };
        if !api.ready {
            out.push(format!("{} is not Ready", n.name));
        }
        out.extend(label_and_taint_problems(n, api));
    }
    let voters = members
        .iter()
        .filter(|m| !m.is_learner && !m.name.is_empty())
        .count();
    let cps = ctx.inventory.control_plane().count();
    if voters != cps || members.len() != cps {
        out.push(format!(
            "etcd has {} member(s), {voters} of them started voters, for {cps} control planes",
            members.len()
        ));
    }
    for cp in ctx.inventory.control_plane() {
        if !members
            .iter()
            .any(|m| m.is_node(cp.name.as_str(), &cp.address.to_string()) && !m.is_learner)
        {
            out.push(format!("{} is not an etcd voter", cp.name));
        }
    }
    out
}

fn label_and_taint_problems(node: &Node, api: &api::ApiNode) -> Vec<String> {
    let mut out = Vec::new();
    if node.role == Role::ControlPlane && !api.labels.contains_key(CONTROL_PLANE_LABEL) {
        out.push(format!(
            "{} lacks the label {CONTROL_PLANE_LABEL}",
            node.name
        ));
    }
    for (k, v) in &node.labels {
        if api.labels.get(k) != Some(v) {
            out.push(format!("{} lacks the label {k}={v}", node.name));
        }
    }
    for t in effective_taints(node) {
        let text = match &t.value {
            Some(v) if !v.is_empty() => format!("{}={v}:{:?}", t.key, t.effect),
            _ => format!("{}:{:?}", t.key, t.effect),
        };
        if !api.taints.contains(&text) {
            out.push(format!("{} lacks the taint {text}", node.name));
        }
    }
    out
}
