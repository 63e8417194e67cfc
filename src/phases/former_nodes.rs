//! Nodes that left the control plane (or the load-balancer nodes) but may still hold what
//! khactl put there: a running khagent (which, hearing no peer, takes the VIP: a second
//! holder) and the CA keys.
//!
//! The state directory records every node khactl placed an agent or CA keys on
//! ([`crate::state::record`]). This phase reads that record, and for each recorded node that
//! should no longer hold them (removed from the inventory, a control plane now a worker, a
//! control plane whose agent moved to load-balancer nodes) looks for what it should not have
//! there: through the run's connection for a worker, through a
//! connection of its own, from the record, for a node the inventory no longer lists. What it
//! finds is in [`crate::cluster::ClusterState::former`]; `WaitForVip` counts holders among
//! those nodes too and refuses to call the run a success while one is left. A node found clean
//! is dropped from the record; the current control planes and load-balancer nodes are
//! (re)recorded before the phases that place the agent and the keys run.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::changes::Mode;
use super::{Context, Phase, PhaseFuture};
use crate::agent::{AGENT_BINARY, AGENT_CONFIG, OPENRC_SCRIPT, SYSTEMD_UNIT};
use crate::cluster::FormerNode;
use crate::facts::{HostFacts, ProbeRequest};
use crate::inventory::{Node, Role};
use crate::remote::{Access, ConnectOptions, Fleet, Host, Observer};
use crate::report::Event;
use crate::state::record::{Placed, Placements};

const AGENT_FILES: [&str; 4] = [AGENT_BINARY, AGENT_CONFIG, SYSTEMD_UNIT, OPENRC_SCRIPT];
const CA_KEYS: [&str; 4] = [
    "/etc/kubernetes/pki/ca.key",
    "/etc/kubernetes/pki/front-proxy-ca.key",
    "/etc/kubernetes/pki/etcd/ca.key",
    "/etc/kubernetes/pki/sa.key",
];

fn probe() -> ProbeRequest {
    ProbeRequest {
        digests: AGENT_FILES
            .iter()
            .chain(&CA_KEYS)
            .map(PathBuf::from)
            .collect(),
        ..ProbeRequest::default()
    }
}

fn present(facts: &HostFacts, paths: &[&str]) -> bool {
    paths.iter().any(|p| facts.digest(Path::new(p)).is_some())
}

pub struct FormerNodes;

impl Phase for FormerNodes {
    fn title(&self) -> &'static str {
        "Check former control planes"
    }

    /// A recorded node that should no longer hold what was placed there (a control plane now
    /// a worker, a node whose agent moved to load-balancer nodes): whether the agent's files
    /// and CA keys are there.
    fn facts(&self, ctx: &Context, node: &Node) -> ProbeRequest {
        let excess = Placements::load(&ctx.state.placements_path()).is_ok_and(|r| {
            r.nodes.get(node.name.as_str()).is_some_and(|placed| {
                excess(&ctx.inventory, node.name.as_str(), placed) != (false, false)
            })
        });
        if excess {
            probe()
        } else {
            ProbeRequest::default()
        }
    }

    fn run<'a>(&'a self, ctx: &'a mut Context) -> PhaseFuture<'a> {
        Box::pin(async move {
            let path = ctx.state.placements_path();
            let mut record = Placements::load(&path)?;
            let inv = &ctx.inventory;
            let former: Vec<(String, Placed, (bool, bool))> = record
                .nodes
                .iter()
                .map(|(name, placed)| (name, placed, excess(inv, name, placed)))
                .filter(|(_, _, e)| *e != (false, false))
                .map(|(n, p, e)| (n.clone(), p.clone(), e))
                .collect();
            let excess_of = |name: &str| {
                former
                    .iter()
                    .find(|(n, _, _)| n == name)
                    .map_or((false, false), |(_, _, e)| *e)
            };
            // Only what should not be there counts: a control plane keeps its CA keys.
            let seen = |name: &str, facts: &HostFacts| {
                let (agent, keys) = excess_of(name);
                FormerNode::seen(
                    name,
                    agent && present(facts, &AGENT_FILES),
                    keys && present(facts, &CA_KEYS),
                )
            };

            let mut found = Vec::new();
            let mut connected: Vec<Box<dyn Host>> = Vec::new();
            for (name, placed, _) in &former {
                if inv.node(name).is_some() {
                    found.push(seen(name, ctx.facts_of(name)?));
                    continue;
                }
                match connect(ctx, name, placed).await {
                    Ok(host) => connected.push(host),
                    Err(e) => found.push(FormerNode::unreachable(name, &format!("{e:#}"))),
                }
            }
            let access = match ctx.settings.mode {
                Mode::Plan => Access::ReadOnly,
                Mode::Apply => Access::ReadWrite,
            };
            let observer: Arc<dyn Observer> = Arc::new(ctx.report.clone());
            let fleet = Fleet::from_hosts(connected, ctx.settings.parallelism, access, observer);
            let probed = fleet
                .each(|_| true, async |h| HostFacts::gather(h, &probe()).await)
                .await;
            for (name, facts) in probed {
                found.push(match facts {
                    Ok(f) => seen(&name, &f),
                    Err(e) => FormerNode::unreachable(&name, &e.to_string()),
                });
            }
            ctx.former = Some(fleet);

            if ctx.settings.mode == Mode::Apply {
                for f in found.iter().filter(|f| f.is_clean()) {
                    record.nodes.remove(&f.node);
                }
                // What this run places: the CA keys on the control planes, the agent where
                // it runs behind the VIP. A node still holding more than it should keeps its
                // entry until that is gone.
                let left: Vec<&str> = found
                    .iter()
                    .filter(|f| !f.is_clean())
                    .map(|f| f.node.as_str())
                    .collect();
                for n in inv.nodes.iter().filter(|n| {
                    matches!(n.role, Role::ControlPlane | Role::LoadBalancer)
                        && !left.contains(&n.name.as_str())
                }) {
                    let placed = Placed::new(
                        &inv.ssh_for(n),
                        inv.runs_agent(n),
                        n.role == Role::ControlPlane,
                    );
                    record.nodes.insert(n.name.to_string(), placed);
                }
                record.save(&path)?;
            }
            let mut summaries = Vec::new();
            for f in &found {
                let text = f.describe();
                if !f.is_clean() {
                    ctx.report.event(Event::Warning {
                        node: Some(&f.node),
                        message: &format!(
                            "{text}; `up` will not report success while it is (run `khactl \
                             remove-node {}`)",
                            f.node
                        ),
                    });
                }
                summaries.push((f.node.clone(), Ok(text)));
            }
            ctx.cluster.former = found;
            ctx.settle(summaries)
        })
    }
}

/// What a recorded node holds beyond what the inventory gives it now: (khagent, CA keys).
fn excess(inv: &crate::inventory::Inventory, name: &str, placed: &Placed) -> (bool, bool) {
    let node = inv.node(name);
    let agent_now = node.is_some_and(|n| inv.runs_agent(n));
    let keys_now = node.is_some_and(|n| n.role == Role::ControlPlane);
    (placed.agent && !agent_now, placed.ca_keys && !keys_now)
}

/// Connects to a node the inventory no longer lists, as the record says to reach it.
async fn connect(ctx: &Context, name: &str, placed: &Placed) -> anyhow::Result<Box<dyn Host>> {
    let target = placed.target(name).map_err(anyhow::Error::msg)?;
    let control = ctx
        .control_dir
        .as_ref()
        .ok_or_else(|| anyhow::anyhow!("internal: no control directory (Connect first)"))?;
    let opts = ConnectOptions {
        known_hosts: ctx.state.known_hosts(),
        control_dir: control.path().to_path_buf(),
        connect_timeout: ctx.settings.connect_timeout,
    };
    Ok(ctx.connector.connect(&target, &opts).await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    const INVENTORY: &str = "apiVersion: khactl.io/v1alpha1\nkind: Inventory\n\
        cluster: { name: t, kubernetesVersion: v1.31.2 }\n\
        vip: { address: 10.0.0.100 }\n\
        nodes:\n\
        - { name: cp1, address: 10.0.0.11, role: control-plane }\n\
        - { name: lb1, address: 10.0.0.5, role: loadbalancer }\n\
        - { name: lb2, address: 10.0.0.6, role: loadbalancer }\n";

    fn placed(inv: &crate::inventory::Inventory, agent: bool, ca_keys: bool) -> Placed {
        Placed::new(&inv.ssh_for(&inv.nodes[0]), agent, ca_keys)
    }

    /// Only what a node should no longer hold is looked for: a control plane keeps its keys,
    /// a balancer its agent; a control plane whose agent moved to the balancers, or a
    /// balancer gone from the inventory, holds an agent too many.
    #[test]
    fn only_what_a_node_should_no_longer_hold_is_excess() {
        let inv = crate::inventory::parse(INVENTORY).unwrap().inventory;
        assert_eq!(
            excess(&inv, "cp1", &placed(&inv, false, true)),
            (false, false)
        );
        assert_eq!(
            excess(&inv, "cp1", &placed(&inv, true, true)),
            (true, false)
        );
        assert_eq!(
            excess(&inv, "lb1", &placed(&inv, true, false)),
            (false, false)
        );
        assert_eq!(
            excess(&inv, "lb9", &placed(&inv, true, false)),
            (true, false)
        );
        assert_eq!(excess(&inv, "cp9", &placed(&inv, true, true)), (true, true));
        // Stacked on the control planes, cp1's agent is where it belongs.
        let stacked =
            crate::inventory::parse(&INVENTORY.replace("role: loadbalancer", "role: worker"))
                .unwrap()
                .inventory;
        assert_eq!(
            excess(&stacked, "cp1", &placed(&stacked, true, true)),
            (false, false)
        );
        assert_eq!(
            excess(&stacked, "lb1", &placed(&stacked, true, false)),
            (true, false)
        );
    }
}
