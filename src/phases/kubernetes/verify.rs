//! The end of `up`: every inventory node registered with the API and Ready, control planes
//! labelled and tainted as the inventory says (kubeadm's control-plane taint unless the
//! inventory says otherwise), the inventory's labels on every node, and etcd with exactly one
//! started voter per etcd member node (each control plane, or each `role: etcd` node with
//! external etcd; etcd nodes never register with the API).
//!
//! kubeadm sets labels and taints only when a node joins; when the inventory changes them
//! later, this phase applies the difference through the gate (`kubectl label` / `kubectl
//! taint`, adding or changing, never removing what khactl did not put there). A node that is
//! NotReady only because no pod network is installed has joined all the same: kubeadm leaves
//! the network plugin to the user, and the run says so instead of failing.

use std::time::{Duration, Instant};

use anyhow::bail;

use super::{etcd_witness, member_control_plane};
use crate::cluster::{api, etcd};
use crate::inventory::{Node, Role};
use crate::phases::{Context, Mode, Phase, PhaseFuture};
use crate::remote::NodeHandle;
use crate::render::kubeadm::effective_taints;
use crate::report::Event;

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
            let host = member_control_plane(c, None)
                .ok_or_else(|| anyhow::anyhow!("no control plane is in the cluster to ask"))?;
            // The same node with a stacked etcd; an etcd node with an external one.
            let etcd_host = etcd_witness(c, None)
                .ok_or_else(|| anyhow::anyhow!("no node to ask etcd's members on"))?;
            let started = Instant::now();
            let mut corrected = false;
            let (nodes, members) = loop {
                c.settings.interrupt.check()?;
                let nodes = api::nodes(host).await?;
                let members = etcd::members(etcd_host).await?;
                let drift = drift(c, &nodes);
                if !drift.is_empty() && !corrected {
                    // Once: what kubeadm set at join time and the inventory changed since.
                    for d in &drift {
                        apply(c, host, d).await?;
                    }
                    corrected = true;
                    continue;
                }
                let mut problems = problems(c, &nodes, &members);
                problems.extend(drift.iter().map(Drift::describe));
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
            let waiting: Vec<&str> = nodes
                .iter()
                .filter(|n| n.waits_for_a_network())
                .map(|n| n.name.as_str())
                .collect();
            if !waiting.is_empty() {
                c.report.event(Event::Warning {
                    node: None,
                    message: &format!(
                        "{} NotReady until a pod network is installed: khactl, like kubeadm, \
                         leaves the CNI plugin to you (e.g. `kubectl --kubeconfig \
                         <state>/admin.conf apply -f` Calico's or Cilium's manifest, with \
                         podSubnet {})",
                        waiting.join(", "),
                        c.inventory.networking.pod_subnet
                    ),
                });
            }
            let results = c
                .inventory
                .nodes
                .iter()
                .map(|n| {
                    match n.role {
                        Role::Etcd => {
                            return (n.name.to_string(), Ok("etcd voter, healthy".to_owned()));
                        }
                        Role::LoadBalancer => {
                            return (
                                n.name.to_string(),
                                Ok("load balancer only, no Kubernetes node".to_owned()),
                            );
                        }
                        Role::ControlPlane | Role::Worker => {}
                    }
                    let api = nodes.iter().find(|a| a.name == n.name.as_str());
                    let state = match api {
                        Some(a) if a.waits_for_a_network() => "registered, waits for a pod network",
                        _ => "registered, Ready",
                    };
                    let taints = api.map_or(0, |a| a.taints.len());
                    let mut s = format!("{state}, {taints} taint(s)");
                    if n.role == Role::ControlPlane && !c.inventory.external_etcd() {
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

/// What is not as the inventory says, besides labels and taints; empty when all is well.
fn problems(ctx: &Context, nodes: &[api::ApiNode], members: &[etcd::Member]) -> Vec<String> {
    let mut out = Vec::new();
    for n in ctx
        .inventory
        .nodes
        .iter()
        .filter(|n| n.role.is_kubernetes_node())
    {
        let Some(api) = nodes.iter().find(|a| a.name == n.name.as_str()) else {
            out.push(format!("{} is not registered", n.name));
            continue;
        };
        if !api.ready && !api.waits_for_a_network() {
            let why = api
                .not_ready_because
                .as_deref()
                .unwrap_or("no reason given");
            out.push(format!("{} is not Ready ({why})", n.name));
        }
        if n.role == Role::ControlPlane && !api.labels.contains_key(CONTROL_PLANE_LABEL) {
            out.push(format!("{} lacks the label {CONTROL_PLANE_LABEL}", n.name));
        }
    }
    let voters = members
        .iter()
        .filter(|m| !m.is_learner && !m.name.is_empty())
        .count();
    let wanted = ctx.inventory.etcd_members().count();
    let nodes_of = if ctx.inventory.external_etcd() {
        "etcd nodes"
    } else {
        "control planes"
    };
    if voters != wanted || members.len() != wanted {
        out.push(format!(
            "etcd has {} member(s), {voters} of them started voters, for {wanted} {nodes_of}",
            members.len()
        ));
    }
    for n in ctx.inventory.etcd_members() {
        if !members
            .iter()
            .any(|m| m.is_node(n.name.as_str(), &n.address.to_string()) && !m.is_learner)
        {
            out.push(format!("{} is not an etcd voter", n.name));
        }
    }
    out
}

/// A label or taint the inventory wants on a registered node that the node lacks.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Drift {
    /// `key=value`
    Label { node: String, label: String },
    /// `key[=value]:Effect`
    Taint { node: String, taint: String },
}

impl Drift {
    fn describe(&self) -> String {
        match self {
            Drift::Label { node, label } => format!("{node} lacks the label {label}"),
            Drift::Taint { node, taint } => format!("{node} lacks the taint {taint}"),
        }
    }
}

fn drift(ctx: &Context, nodes: &[api::ApiNode]) -> Vec<Drift> {
    let mut out = Vec::new();
    for n in &ctx.inventory.nodes {
        if let Some(api) = nodes.iter().find(|a| a.name == n.name.as_str()) {
            out.extend(node_drift(n, api));
        }
    }
    out
}

fn node_drift(node: &Node, api: &api::ApiNode) -> Vec<Drift> {
    let mut out = Vec::new();
    for (k, v) in &node.labels {
        if api.labels.get(k) != Some(v) {
            out.push(Drift::Label {
                node: node.name.to_string(),
                label: format!("{k}={v}"),
            });
        }
    }
    for t in effective_taints(node) {
        let text = match &t.value {
            Some(v) if !v.is_empty() => format!("{}={v}:{:?}", t.key, t.effect),
            _ => format!("{}:{:?}", t.key, t.effect),
        };
        if !api.taints.contains(&text) {
            out.push(Drift::Taint {
                node: node.name.to_string(),
                taint: text,
            });
        }
    }
    out
}

/// Applies one drift with kubectl on a member control plane, as a gated step.
async fn apply(ctx: &Context, host: &NodeHandle, d: &Drift) -> anyhow::Result<()> {
    let (verb, node, what) = match d {
        Drift::Label { node, label } => ("label", node, label),
        Drift::Taint { node, taint } => ("taint", node, taint),
    };
    let headline = format!("kubectl {verb} node {node} {what} --overwrite");
    let argv = [verb, "node", node.as_str(), what.as_str(), "--overwrite"];
    ctx.step(host, &headline, async |h| {
        h.run(&api::kubectl(argv).timeout(Duration::from_secs(60)))
            .await?;
        Ok(())
    })
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_and_taints_the_inventory_adds_later_are_drift_and_present_ones_are_not() {
        let inv = crate::inventory::parse(
            "apiVersion: khactl.io/v1alpha1\nkind: Inventory\n\
             cluster: { name: t, kubernetesVersion: v1.31.2 }\nvip: { address: 10.0.0.100 }\n\
             nodes:\n  - { name: cp1, address: 10.0.0.11, role: control-plane, labels: { zone: a } }\n",
        )
        .unwrap()
        .inventory;
        let node = inv.node("cp1").unwrap();
        let api = api::ApiNode {
            name: "cp1".into(),
            labels: [(CONTROL_PLANE_LABEL.to_owned(), String::new())].into(),
            taints: vec!["node-role.kubernetes.io/control-plane:NoSchedule".into()],
            ready: true,
            not_ready_because: None,
        };
        assert_eq!(
            node_drift(node, &api),
            [Drift::Label {
                node: "cp1".into(),
                label: "zone=a".into()
            }]
        );
        let mut labelled = api.clone();
        labelled.labels.insert("zone".into(), "a".into());
        assert!(node_drift(node, &labelled).is_empty());
    }
}
