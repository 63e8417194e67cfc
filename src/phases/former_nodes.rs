//! Nodes that left the control plane but may still hold what khactl put there: a running
//! khagent (which, hearing no peer, takes the VIP: a second holder) and the CA keys.
//!
//! The state directory records every node khactl placed an agent or CA keys on
//! ([`crate::state::record`]). This phase reads that record, and for each recorded node that
//! is no longer a control plane (removed from the inventory, or now a worker) looks for
//! khagent's files and the CA keys there: through the run's connection for a worker, through a
//! connection of its own, from the record, for a node the inventory no longer lists. What it
//! finds is in [`crate::cluster::ClusterState::former`]; `WaitForVip` counts holders among
//! those nodes too and refuses to call the run a success while one is left. A node found clean
//! is dropped from the record; the current control planes are (re)recorded before the phases
//! that place the agent and the keys run.

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

    /// A recorded node that is now a worker: whether the agent's files and CA keys are there.
    fn facts(&self, ctx: &Context, node: &Node) -> ProbeRequest {
        let recorded = Placements::load(&ctx.state.placements_path())
            .is_ok_and(|r| r.nodes.contains_key(node.name.as_str()));
        if recorded && node.role != Role::ControlPlane {
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
            let is_cp = |name: &str| inv.node(name).is_some_and(|n| n.role == Role::ControlPlane);
            let former: Vec<(String, Placed)> = record
                .nodes
                .iter()
                .filter(|(name, placed)| (placed.agent || placed.ca_keys) && !is_cp(name))
                .map(|(n, p)| (n.clone(), p.clone()))
                .collect();

            let mut found = Vec::new();
            let mut connected: Vec<Box<dyn Host>> = Vec::new();
            for (name, placed) in &former {
                if inv.node(name).is_some() {
                    let facts = ctx.facts_of(name)?;
                    found.push(FormerNode::seen(
                        name,
                        present(facts, &AGENT_FILES),
                        present(facts, &CA_KEYS),
                    ));
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
                    Ok(f) => {
                        FormerNode::seen(&name, present(&f, &AGENT_FILES), present(&f, &CA_KEYS))
                    }
                    Err(e) => FormerNode::unreachable(&name, &e.to_string()),
                });
            }
            ctx.former = Some(fleet);

            if ctx.settings.mode == Mode::Apply {
                for f in found.iter().filter(|f| f.is_clean()) {
                    record.nodes.remove(&f.node);
                }
                for n in inv.control_plane() {
                    record
                        .nodes
                        .insert(n.name.to_string(), Placed::control_plane(&inv.ssh_for(n)));
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
