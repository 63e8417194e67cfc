//! The other control planes join one at a time: etcd admits one learner, and a failed join
//! must not take a second member down with it. Before each join the etcd members are read on
//! a member; the join is refused while one is unhealthy (or a learner is pending, or quorum
//! would be short), and a stale member with the joining node's name or peer URL — the remains
//! of a node reinstalled or wiped — is removed first, the failure users of every other
//! installer report most. After each join the new member must be a voter and its API server
//! ready. A join that fails is reset on its node and its member removed, so the next run
//! starts it clean.
//!
//! With external etcd (`role: etcd` nodes) none of the etcd steps apply: kubeadm adds no
//! member, and khactl neither reads nor changes the membership for a join.

use std::time::{Duration, Instant};

use anyhow::bail;

use super::init::reset_half_joined;
use super::{
    ensure_token, etcd_witness, kubeadm_with_config, member_control_plane, read_members,
    remove_member, render, reset, reset_leftovers,
};
use crate::cluster::{api, etcd};
use crate::inventory::Node;
use crate::phases::prepare_hosts::{hosts_for_join, join_route};
use crate::phases::{Context, Mode, Phase, PhaseFuture, rolling};
use crate::render::kubeadm::{API_SERVER_PORT, Purpose};

/// How long a new member may take to be promoted and its API server to answer.
const SETTLE_DEADLINE: Duration = Duration::from_secs(120);

pub struct JoinControlPlanes;

impl Phase for JoinControlPlanes {
    fn title(&self) -> &'static str {
        "Join control planes"
    }

    fn run<'a>(&'a self, ctx: &'a mut Context) -> PhaseFuture<'a> {
        Box::pin(async move {
            let joining: Vec<(String, ())> = ctx
                .inventory
                .control_plane()
                .filter(|n| !ctx.cluster.members.contains(n.name.as_str()))
                // add-master joins its node and nothing else.
                .filter(|n| ctx.in_scope(n.name.as_str()))
                .map(|n| (n.name.to_string(), ()))
                .collect();
            if joining.is_empty() {
                let done = ctx
                    .inventory
                    .control_plane()
                    .map(|n| (n.name.to_string(), Ok("in the cluster".to_owned())))
                    .collect();
                return ctx.settle(done);
            }
            ensure_token(ctx).await?;
            let c = &*ctx;
            let results = rolling::one_at_a_time(
                joining,
                &c.settings.interrupt,
                async |name, ()| join_one(c, c.node(name)?).await,
                |stopped_at, ()| match stopped_at {
                    Some(at) => Err(anyhow::anyhow!(
                        "not joined: control planes join one at a time and {at} failed; run \
                         `khactl up` again once it is fixed"
                    )),
                    None => Err(crate::interrupt::Interrupted.into()),
                },
            )
            .await;
            for (name, r) in &results {
                if r.is_ok() && ctx.settings.mode == Mode::Apply {
                    ctx.cluster.members.insert(name.clone());
                }
            }
            ctx.settle(results)
        })
    }

    fn cleanup<'a>(&'a self, ctx: &'a mut Context) -> Option<PhaseFuture<'a>> {
        Some(Box::pin(reset_half_joined(ctx)))
    }
}

/// One control plane: check etcd, clear what is stale, join, check it took. On failure the
/// node is reset and its member removed before the error is returned.
async fn join_one(ctx: &Context, node: &Node) -> anyhow::Result<String> {
    let name = node.name.as_str();
    let host = ctx
        .fleet()?
        .host(name)
        .ok_or_else(|| anyhow::anyhow!("internal: {name} is not connected"))?;
    if ctx.inventory.external_etcd() {
        return join_etcd_client(ctx, host, node).await;
    }
    let Some(witness) = etcd_witness(ctx, Some(name)) else {
        if ctx.settings.mode == Mode::Plan {
            // A dry run on a fresh cluster: init is only planned, so there is no etcd to ask.
            run_join(ctx, host, node).await?;
            return Ok("join planned (after init)".to_owned());
        }
        bail!("no control plane is a member of etcd to join {name} through");
    };
    let members = read_members(ctx, Some(name)).await?;
    let others: Vec<etcd::Member> = members
        .iter()
        .filter(|m| !m.is_node(name, &node.address.to_string()))
        .cloned()
        .collect();
    if let Some(why) = etcd::join_refusal(&others) {
        bail!("refusing to join {name}: {why}");
    }
    // Remains of this node in etcd (a wiped or reinstalled machine): remove them first, or
    // kubeadm's check-etcd dials the dead member and fails.
    remove_member(ctx, witness, node, &members).await?;
    reset_leftovers(ctx, host).await?;
    // Behind an external balancer the node's API name is its own API server, which does not
    // exist before the join: kubeadm's discovery, check-etcd and the TLS bootstrap reach it
    // at the member just asked while it joins, at 127.0.0.1 once it is ready.
    let facts = ctx.facts_of(name)?;
    let through = ctx.node(witness.node())?.address;
    let prepared = join_route(ctx, node);
    let joined = async {
        if let Some(line) = hosts_for_join(&ctx.inventory, node, facts, prepared, Some(through)) {
            ctx.apply(host, &[line]).await?;
        }
        run_join(ctx, host, node).await?;
        if ctx.settings.mode == Mode::Apply {
            wait_voter_and_ready(ctx, witness, node).await?;
        }
        anyhow::Ok(())
    }
    .await;
    if joined.is_ok()
        && let Some(line) = hosts_for_join(&ctx.inventory, node, facts, Some(through), None)
        && let Err(e) = ctx.apply(host, &[line]).await
    {
        // The join stands: the next run's host preparation points a member at 127.0.0.1.
        ctx.report.event(crate::report::Event::Warning {
            node: Some(name),
            message: &format!(
                "joined, but /etc/hosts still sends the API name to {through} ({e:#}); \
                 `khactl up` sets it to 127.0.0.1"
            ),
        });
    }
    match joined {
        Ok(()) if ctx.settings.mode == Mode::Plan => Ok("join planned".to_owned()),
        Ok(()) => Ok("joined; etcd voter, API server ready".to_owned()),
        // Ctrl-C: the step in flight finished (kubeadm join, if it ran, succeeded). Undo
        // nothing: the next `up` checks this node and finishes or repairs it.
        Err(e) if e.chain().any(|c| c.is::<crate::interrupt::Interrupted>()) => Err(e),
        Err(e) => {
            // Leave the cluster as it was: the node reset, its member (if added) removed.
            // The member first, from a healthy member, then the reset: a promoted member
            // that went away with the reset would count against the quorum meanwhile.
            let undo = async {
                let now = etcd::members(witness).await?;
                remove_member(ctx, witness, node, &now).await?;
                reset(ctx, host, "its join failed").await?;
                anyhow::Ok(())
            }
            .await;
            match undo {
                Ok(()) => Err(e.context(format!("{name} was reset and its etcd member removed"))),
                Err(u) => Err(e.context(format!(
                    "and cleaning up after it failed too ({u:#}); run `kubeadm reset -f` on {name} \
                     and remove its etcd member by hand"
                ))),
            }
        }
    }
}

/// A control plane of an external etcd: kubeadm adds no etcd member (`etcd.external`), and
/// neither does khactl, so there is no stale member to remove and no voter to wait for; the
/// join counts once its own API server is ready. A failed join is reset on its node.
async fn join_etcd_client(
    ctx: &Context,
    host: &crate::remote::NodeHandle,
    node: &Node,
) -> anyhow::Result<String> {
    let name = node.name.as_str();
    if ctx.settings.mode == Mode::Plan {
        run_join(ctx, host, node).await?;
        return Ok("join planned (etcd is external: no member added)".to_owned());
    }
    reset_leftovers(ctx, host).await?;
    // Behind an external balancer too, the API name goes to a member while the node joins
    // and to 127.0.0.1 once its own API server is ready, as in the stacked join above.
    let through = match member_control_plane(ctx, Some(name)) {
        Some(m) => Some(ctx.node(m.node())?.address),
        None => None,
    };
    let facts = ctx.facts_of(name)?;
    let joined = async {
        let route = hosts_for_join(&ctx.inventory, node, facts, join_route(ctx, node), through);
        ctx.apply(host, &Vec::from_iter(route)).await?;
        run_join(ctx, host, node).await?;
        wait_api_ready(ctx, host, node).await?;
        let back = hosts_for_join(&ctx.inventory, node, facts, through, None);
        ctx.apply(host, &Vec::from_iter(back)).await?;
        anyhow::Ok(())
    }
    .await;
    match joined {
        Ok(()) => {
            Ok("joined; API server ready (etcd is external: membership untouched)".to_owned())
        }
        Err(e) if e.chain().any(|c| c.is::<crate::interrupt::Interrupted>()) => Err(e),
        Err(e) => match reset(ctx, host, "its join failed").await {
            Ok(()) => Err(e.context(format!("{name} was reset"))),
            Err(u) => Err(e.context(format!(
                "and resetting it failed too ({u:#}); run `kubeadm reset -f` on {name} by hand"
            ))),
        },
    }
}

/// Until `node`'s own API server answers `/readyz`.
async fn wait_api_ready(
    ctx: &Context,
    host: &crate::remote::NodeHandle,
    node: &Node,
) -> anyhow::Result<()> {
    let address = node.address.to_string();
    let started = Instant::now();
    while !api::ready(host, &address, API_SERVER_PORT, &address).await? {
        ctx.settings.interrupt.check()?;
        if started.elapsed() > SETTLE_DEADLINE {
            bail!(
                "kubeadm join finished, but after {}s the API server of {} does not answer \
                 /readyz",
                SETTLE_DEADLINE.as_secs(),
                node.name
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    Ok(())
}

/// Writes the join configuration, runs `kubeadm join` (a control plane's, from the file:
/// never `--control-plane` with `--config`), and removes the file whatever happened.
async fn run_join(
    ctx: &Context,
    host: &crate::remote::NodeHandle,
    node: &Node,
) -> anyhow::Result<()> {
    let docs = render(ctx, node, Purpose::JoinControlPlane)?;
    let headline = "kubeadm join as a control plane";
    kubeadm_with_config(ctx, host, &docs, "join", headline, &["join"], &[]).await
}

/// Until `node` is a started etcd voter and its own API server answers `/readyz`.
async fn wait_voter_and_ready(
    ctx: &Context,
    witness: &crate::remote::NodeHandle,
    node: &Node,
) -> anyhow::Result<()> {
    let name = node.name.as_str();
    let address = node.address.to_string();
    let host = ctx
        .fleet()?
        .host(name)
        .ok_or_else(|| anyhow::anyhow!("internal: {name} is not connected"))?;
    let started = Instant::now();
    loop {
        ctx.settings.interrupt.check()?;
        let members = etcd::members(witness).await?;
        let voter = members
            .iter()
            .any(|m| m.is_node(name, &address) && !m.is_learner && m.healthy == Some(true));
        let ready = voter && api::ready(host, &address, API_SERVER_PORT, &address).await?;
        if ready {
            return Ok(());
        }
        if started.elapsed() > SETTLE_DEADLINE {
            bail!(
                "kubeadm join finished, but after {}s {name} is {}",
                SETTLE_DEADLINE.as_secs(),
                if voter {
                    "a voter whose API server does not answer /readyz"
                } else {
                    "not a healthy etcd voter (a learner never promoted?)"
                }
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
