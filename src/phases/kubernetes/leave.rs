//! `remove-node`: a node leaves the cluster in the order that keeps the API up. Before
//! anything changes, the gate refuses a removal that would lose etcd's quorum or leave no
//! API server. Then [`LeaveCluster`]: the VIP moves away first if the node holds it (its agent
//! stopped: a priority-0 handover), the node is drained, and it leaves the run's inventory, so
//! the `InstallAgent` phase after it reloads every other agent without it. Last,
//! [`FinishRemoval`]: a control plane's etcd member is removed — once no agent sends its API
//! server traffic (an API server whose etcd left fails every request), and **before** its etcd
//! stops — then `kubeadm reset -f` and khagent's files gone on the node (unless it is
//! unreachable), its Node object deleted, and the state's record of it dropped.

use std::time::{Duration, Instant};

use anyhow::bail;

use super::init::learn_members;
use super::{
    delete_node_object, etcd_witness, kubeadm_command, member_control_plane, member_kubectl,
    node_object_exists, remove_member,
};
use crate::agent::{
    AGENT_BINARY, AGENT_CONFIG, OPENRC_SCRIPT, SERVICE, STATS_PASSWORD, SYSTEMD_UNIT,
};
use crate::cluster::{api, etcd, vip};
use crate::diagnostics::Hinted;
use crate::inventory::{Node, Role};
use crate::os::service::ServiceAction;
use crate::phases::changes::Change;
use crate::phases::install_agent::NODE_LOCAL_CA;
use crate::phases::{Context, Mode, Phase, PhaseFuture};
use crate::remote::NodeHandle;
use crate::render::kubeadm::API_SERVER_PORT;
use crate::report::Event;
use crate::state::record::Placements;

/// How long the other agents may take to take the VIP over after the holder's agent stopped.
const HANDOVER_DEADLINE: Duration = Duration::from_secs(15);
/// How long the holder lets requests in flight on the VIP finish before it hands the VIP
/// over, new connections dropped meanwhile: an API request takes milliseconds, and a
/// dropped SYN comes back after the kernel's first retransmission timeout (1 s), which
/// this window plus the handover (the agent's stop and a ~60 ms skew) must stay well under.
const HANDOVER_DRAIN: Duration = Duration::from_millis(300);

/// What the run removes.
#[derive(Clone)]
pub struct Leaving {
    /// As the inventory names it.
    pub node: Node,
    /// The machine is gone: only the cluster's side is cleaned up.
    pub unreachable: bool,
}

pub struct LeaveCluster(pub Leaving);

impl Phase for LeaveCluster {
    fn title(&self) -> &'static str {
        "Leave the cluster"
    }

    /// What tells a member from a newcomer (kubeadm's files), as the kubeadm check reads it.
    fn facts(&self, ctx: &Context, node: &Node) -> crate::facts::ProbeRequest {
        super::CheckKubeadm.facts(ctx, node)
    }

    fn run<'a>(&'a self, ctx: &'a mut Context) -> PhaseFuture<'a> {
        Box::pin(async move {
            learn_members(ctx).await?;
            let name = self.0.node.name.to_string();
            let left = self.leave(ctx).await;
            // From here on the node is not part of the run's cluster: the agents' phase
            // reloads the others without it.
            ctx.inventory.nodes.retain(|n| n.name.as_str() != name);
            ctx.cluster.members.remove(&name);
            ctx.settle(vec![(name, left)])
        })
    }
}

impl LeaveCluster {
    async fn leave(&self, ctx: &Context) -> anyhow::Result<String> {
        let node = &self.0.node;
        let name = node.name.as_str();
        if !ctx.cluster.initialized {
            return Err(Hinted::new("there is no cluster to remove a node from")
                .hint("`khactl reset` tears down nodes that never formed a cluster")
                .into());
        }
        if node.role == Role::ControlPlane {
            self.refuse_unsafe(ctx, &ctx.cluster.etcd).await?;
        }
        let reachable = ctx.fleet()?.host(name).filter(|_| !self.0.unreachable);
        let mut done = Vec::new();
        if let Some(host) = reachable
            && matches!(node.role, Role::ControlPlane | Role::LoadBalancer)
        {
            // Its agent stops now, holder or not: once the others are reloaded without it,
            // they no longer hear or answer it, and a running agent there would take the VIP
            // as soon as its master-down timer fired (a second holder).
            if self.stop_agent(ctx, host).await? {
                done.push("agent stopped (VIP handed over)");
            } else {
                done.push("agent stopped");
            }
        }
        if reachable.is_some() && node.role.is_kubernetes_node() && drain(ctx, name).await? {
            done.push("drained");
        }
        Ok(if done.is_empty() {
            "nothing to do on the cluster's side".to_owned()
        } else {
            done.join(", ")
        })
    }

    /// A control plane's removal must leave at least one ready API server and, with a stacked
    /// etcd, a quorum of healthy voters (an external etcd loses no member).
    async fn refuse_unsafe(&self, ctx: &Context, members: &[etcd::Member]) -> anyhow::Result<()> {
        let node = &self.0.node;
        let name = node.name.as_str();
        let address = node.address.to_string();
        if !ctx.inventory.external_etcd() {
            etcd_quorum_after(name, &address, members)?;
        }
        self.api_left(ctx).await
    }

    /// Whether another member control plane's API server is ready.
    async fn api_left(&self, ctx: &Context) -> anyhow::Result<()> {
        let node = &self.0.node;
        let name = node.name.as_str();
        let fleet = ctx.fleet()?;
        let mut ready = 0;
        for other in ctx.inventory.control_plane() {
            if other.name == node.name || !ctx.cluster.members.contains(other.name.as_str()) {
                continue;
            }
            if let Some(h) = fleet.host(other.name.as_str()) {
                let a = other.address.to_string();
                if api::ready(h, &a, API_SERVER_PORT, &a).await? {
                    ready += 1;
                }
            }
        }
        if ready == 0 {
            bail!("removing {name} would leave no ready API server");
        }
        Ok(())
    }

    /// Stops and disables the node's agent. If it held the VIP (the stop gives it up with a
    /// priority-0 advert), waits until another control plane holds it; returns whether it did.
    async fn stop_agent(&self, ctx: &Context, host: &NodeHandle) -> anyhow::Result<bool> {
        // Node-local balancers have no VIP to hand over.
        let vip = ctx.inventory.vip.as_ref().map(|v| v.address);
        let name = host.node().to_owned();
        let fleet = ctx.fleet()?;
        let facts = ctx.facts_of(&name)?;
        if facts.digest(std::path::Path::new(AGENT_BINARY)).is_none() {
            return Ok(false);
        }
        let held = match vip {
            Some(vip) => vip::holders(fleet, &[name.as_str()], vip)
                .await?
                .contains(&name),
            None => false,
        };
        let init = facts.init;
        // The holder first lets the requests in flight on the VIP finish while new
        // connections wait for the next holder: a request under way when the VIP moves is
        // lost with its connection.
        let port = ctx.inventory.api_endpoint().port;
        let holding = vip.filter(|_| held);
        if let Some(vip) = holding {
            let hold = ctx
                .step(
                    host,
                    &format!(
                        "drop new connections to {vip}:{port} for {} ms, then hand the VIP over",
                        HANDOVER_DRAIN.as_millis()
                    ),
                    async |h| {
                        vip::hold_new_connections(h, vip, port).await?;
                        tokio::time::sleep(HANDOVER_DRAIN).await;
                        anyhow::Ok(())
                    },
                )
                .await;
            match hold {
                Err(e) if e.chain().any(|c| c.is::<crate::interrupt::Interrupted>()) => {
                    return Err(e);
                }
                // Without iptables the handover still happens, only less gently.
                Err(e) => ctx.report.event(Event::Warning {
                    node: Some(&name),
                    message: &format!(
                        "could not hold new connections before the handover ({e:#}); requests \
                         in flight on the VIP may fail once"
                    ),
                }),
                Ok(_) => {}
            }
        }
        let stopped = ctx
            .apply(
                host,
                &[
                    service_change(init, ServiceAction::Stop),
                    service_change(init, ServiceAction::Disable),
                ],
            )
            .await;
        // Whatever became of the hold and the stop (a Ctrl-C included): not through the
        // change gate, which a Ctrl-C closes, so the rule never outlives the run here.
        if let Some(vip) = holding.filter(|_| ctx.settings.mode == Mode::Apply)
            && let Err(e) = vip::release_new_connections(host, vip, port).await
        {
            ctx.report.event(Event::Warning {
                node: Some(&name),
                message: &format!(
                    "the rule holding new connections to {vip}:{port} may still be there ({e:#}); \
                     it removes itself within seconds, or run `iptables -D INPUT -p tcp -d {vip} \
                     --dport {port} --syn -m comment --comment khactl-vip-handover -j DROP` on \
                     {name}"
                ),
            });
        }
        stopped?;
        let Some(vip) = vip.filter(|_| held && ctx.settings.mode == Mode::Apply) else {
            return Ok(held);
        };
        let others: Vec<&str> = ctx
            .inventory
            .vrrp_nodes()
            .map(|n| n.name.as_str())
            .filter(|n| *n != name)
            .collect();
        let started = Instant::now();
        loop {
            ctx.settings.interrupt.check()?;
            if !vip::holders(fleet, &others, vip).await?.is_empty() {
                return Ok(true);
            }
            if started.elapsed() > HANDOVER_DEADLINE {
                bail!(
                    "{name}'s agent stopped, but no other {} node took the VIP {vip} within \
                     {}s",
                    ctx.inventory.vrrp_role_name(),
                    HANDOVER_DEADLINE.as_secs()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// If the leaving member leads etcd, moves the leadership to the witness's member first, so
/// its removal costs no election.
pub async fn hand_over_leadership(
    ctx: &Context,
    leaving: &NodeHandle,
    witness: &NodeHandle,
    node: &Node,
    members: &[etcd::Member],
) -> anyhow::Result<()> {
    let address = node.address.to_string();
    let Some(me) = members
        .iter()
        .find(|m| m.is_node(node.name.as_str(), &address))
    else {
        return Ok(());
    };
    if etcd::leader(witness).await? != me.id {
        return Ok(());
    }
    let witness_node = ctx.node(witness.node())?;
    let witness_address = witness_node.address.to_string();
    let Some(target) = members
        .iter()
        .find(|m| m.is_node(witness_node.name.as_str(), &witness_address))
    else {
        return Ok(());
    };
    let target_id = target.id;
    let headline = format!(
        "move the etcd leadership from {} to {}",
        node.name, witness_node.name
    );
    ctx.step(leaving, &headline, async |h| {
        etcd::move_leader(h, target_id).await
    })
    .await?;
    Ok(())
}

fn service_change(init: crate::facts::InitSystem, action: ServiceAction) -> Change {
    Change::Service {
        name: SERVICE.to_owned(),
        init,
        action,
        check_first: None,
    }
}

/// `kubectl drain` on a member control plane's own API server: cordon, evict what runs there
/// (DaemonSet pods and the static pods' mirrors stay). A Node already gone (a second run, a
/// node that never joined) has nothing to drain.
async fn drain(ctx: &Context, name: &str) -> anyhow::Result<bool> {
    let Some(member) = member_control_plane(ctx, Some(name)) else {
        return Ok(false);
    };
    if !node_object_exists(ctx, member, name).await? {
        return Ok(false);
    }
    let cmd = member_kubectl(
        ctx,
        member,
        &[
            "drain",
            name,
            "--ignore-daemonsets",
            "--delete-emptydir-data",
            "--force",
            "--timeout=120s",
        ],
    )?
    .timeout(Duration::from_secs(150));
    let headline = format!("drain {name} (kubectl, on {})", member.node());
    ctx.step(member, &headline, async |m| {
        m.run(&cmd).await?;
        Ok(())
    })
    .await?;
    Ok(true)
}

/// After the agents let go of the node: reset it and remove khagent (unless unreachable),
/// delete its Node object, and drop it from the state's record.
pub struct FinishRemoval(pub Leaving);

impl Phase for FinishRemoval {
    fn title(&self) -> &'static str {
        "Clean up the removed node"
    }

    /// Which of khagent's files are on the leaving node.
    fn facts(&self, _ctx: &Context, node: &Node) -> crate::facts::ProbeRequest {
        if node.name != self.0.node.name {
            return crate::facts::ProbeRequest::default();
        }
        crate::facts::ProbeRequest {
            digests: [
                SYSTEMD_UNIT,
                OPENRC_SCRIPT,
                AGENT_CONFIG,
                AGENT_BINARY,
                NODE_LOCAL_CA,
            ]
            .iter()
            .map(std::path::PathBuf::from)
            .collect(),
            secret_digests: vec![STATS_PASSWORD.into()],
            ..crate::facts::ProbeRequest::default()
        }
    }

    fn run<'a>(&'a self, ctx: &'a mut Context) -> PhaseFuture<'a> {
        Box::pin(async move {
            let name = self.0.node.name.to_string();
            let r = self.finish(ctx).await;
            ctx.settle(vec![(name, r)])
        })
    }
}

impl FinishRemoval {
    async fn finish(&self, ctx: &Context) -> anyhow::Result<String> {
        let node = &self.0.node;
        let name = node.name.as_str();
        if node.role == Role::ControlPlane && !ctx.inventory.external_etcd() {
            // The agents no longer send it traffic: its API server can lose its etcd now.
            // Removed before `kubeadm reset` stops that etcd, so the cluster never counts a
            // voter that is gone.
            let witness = etcd_witness(ctx, Some(name))
                .ok_or_else(|| anyhow::anyhow!("no other control plane is an etcd member"))?;
            let members = etcd::members(witness).await?;
            if let Some(host) = ctx.fleet()?.host(name).filter(|_| !self.0.unreachable) {
                hand_over_leadership(ctx, host, witness, node, &members).await?;
            }
            remove_member(ctx, witness, node, &members).await?;
        }
        let host = ctx.fleet()?.host(name).filter(|_| !self.0.unreachable);
        let kubernetes = node.role.is_kubernetes_node();
        if let Some(host) = host {
            // A load-balancer node never ran kubeadm: only khagent goes.
            if kubernetes {
                let cri = ctx.inventory.kubeadm.cri_socket.as_str().to_owned();
                ctx.step(host, "kubeadm reset -f (the node leaves)", async |h| {
                    h.run(&kubeadm_command(
                        ["reset", "-f", "--cri-socket", cri.as_str()],
                        None,
                    ))
                    .await?;
                    Ok(())
                })
                .await?;
            }
            let facts = ctx.facts_of(name)?;
            let mut changes = Vec::new();
            // (Its agent was stopped and disabled by LeaveCluster.)
            for path in [
                SYSTEMD_UNIT,
                OPENRC_SCRIPT,
                AGENT_CONFIG,
                AGENT_BINARY,
                NODE_LOCAL_CA,
                STATS_PASSWORD,
            ] {
                if facts.digest(std::path::Path::new(path)).is_some() {
                    changes.push(Change::RemoveFile { path: path.into() });
                }
            }
            ctx.apply(host, &changes).await?;
        }
        if kubernetes {
            delete_node_object(ctx, name).await?;
        }
        // A machine that was not reached keeps its record: its agent and keys are still
        // there, and the next `up` looks for them (FormerNodes) once it answers again.
        if ctx.settings.mode == Mode::Apply && !self.0.unreachable {
            let path = ctx.state.placements_path();
            if let Ok(mut record) = Placements::load(&path)
                && record.nodes.remove(name).is_some()
            {
                record.save(&path)?;
            }
        }
        Ok(match (self.0.unreachable, kubernetes) {
            (true, _) => "removed from the cluster's side; the machine was not touched".to_owned(),
            (false, true) => "reset; khagent removed; Node object deleted".to_owned(),
            (false, false) => "khagent stopped and removed".to_owned(),
        })
    }
}
/// Removing member `name` must leave etcd a quorum of healthy voters, and some voter.
pub fn etcd_quorum_after(
    name: &str,
    address: &str,
    members: &[etcd::Member],
) -> anyhow::Result<()> {
    let remaining: Vec<&etcd::Member> = members
        .iter()
        .filter(|m| !m.is_learner && !m.is_node(name, address))
        .collect();
    let healthy = remaining.iter().filter(|m| m.healthy == Some(true)).count();
    if remaining.is_empty() {
        bail!("{name} is the last etcd member: removing it removes the cluster (`khactl reset`)");
    }
    if healthy < etcd::quorum(remaining.len()) {
        return Err(Hinted::new(format!(
            "removing {name} would leave {} etcd voter(s) of which {healthy} answer: etcd \
                 needs {} to work",
            remaining.len(),
            etcd::quorum(remaining.len())
        ))
        .hint("bring the other members back first (`khactl status`)")
        .into());
    }
    Ok(())
}
