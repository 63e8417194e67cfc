//! `kubeadm init` on the first control plane, unless a control plane already is a member:
//! then the cluster exists and the others join it. The certificates are already where kubeadm
//! looks (no `--upload-certs`), and the VIP forwards to this node's API server, so kubeadm's
//! own wait through the endpoint succeeds. After it, `/readyz` must answer through the VIP
//! (and its DNS name) with a certificate that verifies against the cluster CA, and the
//! workstation `admin.conf` is kept 0600 in the state directory.

use std::time::{Duration, Instant};

use anyhow::bail;

use super::{has_member_files, is_member, kubeadm_with_config, render, reset, reset_leftovers};
use std::collections::BTreeSet;

use crate::cluster::{api, etcd};
use crate::diagnostics::Hinted;
use crate::phases::{Context, Mode, Phase, PhaseFuture};
use crate::render::kubeadm::{Purpose, init_node};
use crate::report::Event;

/// How long the API may take to answer through the VIP after `kubeadm init` returned.
const READY_DEADLINE: Duration = Duration::from_secs(120);

pub struct InitCluster;

impl Phase for InitCluster {
    fn title(&self) -> &'static str {
        "Initialize the control plane"
    }

    fn run<'a>(&'a self, ctx: &'a mut Context) -> PhaseFuture<'a> {
        Box::pin(async move {
            learn_members(ctx).await?;
            let name = init_node(&ctx.inventory)
                .ok_or_else(|| anyhow::anyhow!("internal: the inventory has no control plane"))?
                .name
                .to_string();
            if ctx.cluster.initialized {
                let members: Vec<&str> = ctx.cluster.members.iter().map(String::as_str).collect();
                let summary = format!("the cluster exists ({} in it)", members.join(", "));
                save_admin_conf(ctx)?;
                return ctx.settle(vec![(name, Ok(summary))]);
            }
            let apply = ctx.settings.mode == Mode::Apply;
            if apply {
                // Until init succeeds, a failure or Ctrl-C resets the node (the cleanup).
                ctx.cluster.half_joined.push(name.clone());
            }
            if let Err(e) = init_on(ctx, &name).await {
                return ctx.settle(vec![(name, Err(e))]);
            }
            if !apply {
                return ctx.settle(vec![(name, Ok("kubeadm init planned".to_owned()))]);
            }
            // kubeadm init succeeded: from here on nothing resets this node.
            ctx.cluster.half_joined.retain(|n| *n != name);
            ctx.cluster.initialized = true;
            ctx.cluster.token_in_cluster = true;
            ctx.cluster.token_made = Some(std::time::Instant::now());
            ctx.cluster.members.insert(name.clone());
            if !ctx.inventory.external_etcd() {
                // Its local member answers from now on (an external etcd answered already).
                ctx.cluster.etcd_answers_on = Some(name.clone());
            }
            let ready = wait_ready_through_vip(ctx, &name).await.map(|()| {
                format!(
                    "initialized; /readyz answers through {}",
                    ctx.inventory.api_endpoint()
                )
            });
            save_admin_conf(ctx)?;
            ctx.settle(vec![(name, ready)])
        })
    }

    fn cleanup<'a>(&'a self, ctx: &'a mut Context) -> Option<PhaseFuture<'a>> {
        Some(Box::pin(reset_half_joined(ctx)))
    }
}

/// Resets what an earlier attempt left and runs `kubeadm init` with its configuration.
async fn init_on(ctx: &Context, name: &str) -> anyhow::Result<()> {
    let node = ctx.node(name)?;
    let host = ctx
        .fleet()?
        .host(name)
        .ok_or_else(|| anyhow::anyhow!("internal: {name} is not connected"))?;
    reset_leftovers(ctx, host).await?;
    let docs = render(ctx, node, Purpose::Init)?;
    // --skip-token-print: the token is ours already; kubeadm would print it twice into the
    // output the log keeps.
    let headline = "kubeadm init (with the certificates khactl placed)";
    kubeadm_with_config(
        ctx,
        host,
        &docs,
        "init",
        headline,
        &["init"],
        &["--skip-token-print"],
    )
    .await?;
    Ok(())
}

/// Resets every node whose init or join started in this run and did not finish, so the next
/// run starts it clean.
pub async fn reset_half_joined(ctx: &mut Context) -> anyhow::Result<()> {
    let nodes = std::mem::take(&mut ctx.cluster.half_joined);
    let c = &*ctx;
    let mut failed = Vec::new();
    for name in nodes {
        let Some(host) = c.fleet()?.host(&name) else {
            continue;
        };
        if let Err(e) = reset(c, host, "it did not finish joining").await {
            failed.push(format!("{name}: {e:#}"));
        }
    }
    if failed.is_empty() {
        Ok(())
    } else {
        bail!(
            "could not reset: {}; run `kubeadm reset -f` there by hand",
            failed.join("; ")
        )
    }
}

/// Which nodes are already in the cluster: their files, etcd's member list and the API's
/// Nodes. When a control plane has a member's files, etcd must answer on one of them: a
/// cluster that exists must never look fresh (that would reset and init it again), so an
/// etcd that answers nowhere stops the run.
pub async fn learn_members(ctx: &mut Context) -> anyhow::Result<()> {
    let candidates: Vec<String> = ctx
        .inventory
        .control_plane()
        .filter(|n| {
            ctx.facts
                .get(n.name.as_str())
                .is_some_and(|f| has_member_files(&ctx.inventory, n, f))
        })
        .map(|n| n.name.to_string())
        .collect();
    let c = &*ctx;
    let (members, registered, ctx_answered) = if c.inventory.external_etcd() {
        external_view(c, &candidates).await?
    } else {
        stacked_view(c, &candidates).await?
    };
    let joined: BTreeSet<String> = c
        .inventory
        .nodes
        .iter()
        .filter(|n| {
            registered.contains(n.name.as_str())
                && c.facts
                    .get(n.name.as_str())
                    .is_some_and(|f| is_member(&c.inventory, n, f, &members))
        })
        .map(|n| n.name.to_string())
        .collect();
    let initialized = c
        .inventory
        .control_plane()
        .any(|n| joined.contains(n.name.as_str()));
    ctx.cluster.initialized = initialized;
    ctx.cluster.members = joined;
    ctx.cluster.etcd = members;
    ctx.cluster.etcd_answers_on = ctx_answered;
    Ok(())
}

/// A stacked etcd, asked on the control planes with a member's files: the member list and
/// the API's Nodes, and which control plane answered.
async fn stacked_view(c: &Context, candidates: &[String]) -> anyhow::Result<ClusterView> {
    let mut asked = None;
    let mut ctx_answered = None;
    let mut failures = Vec::new();
    for name in candidates {
        let Some(host) = c.fleet()?.host(name) else {
            continue;
        };
        match etcd::members(host).await {
            Ok(members) => {
                asked = Some((host, members));
                break;
            }
            Err(e) => failures.push(format!("{name}: {e:#}")),
        }
    }
    let (members, registered) = match asked {
        None if candidates.is_empty() => (Vec::new(), BTreeSet::new()),
        None => {
            return Err(Hinted::new(format!(
                "{} {} a member's files, but etcd answers on none of them ({}); khactl will \
                 not treat an existing cluster as new",
                candidates.join(", "),
                if candidates.len() == 1 { "has" } else { "have" },
                failures.join("; ")
            ))
            .hint(
                "bring etcd back on one of those control planes (`crictl ps`, `journalctl -u \
                 kubelet` there), then run the command again",
            )
            .into());
        }
        Some((host, members)) => {
            let nodes = api::nodes(host).await.map_err(|e| {
                Hinted::new(format!(
                    "etcd answers on {}, but the API does not ({e:#}); khactl needs it to tell \
                     which nodes are in the cluster",
                    host.node()
                ))
                .hint("look at the API servers (`crictl ps`, `journalctl -u kubelet`)")
            })?;
            ctx_answered = Some(host.node().to_owned());
            (members, nodes.into_iter().map(|n| n.name).collect())
        }
    };
    Ok((members, registered, ctx_answered))
}

/// The etcd members, the API's Nodes and the etcd node that answered.
type ClusterView = (Vec<etcd::Member>, BTreeSet<String>, Option<String>);

/// External etcd: the members as an etcd node sees them (the first that answers), and the
/// API's Nodes as a control plane with a member's files sees them. An etcd that answers
/// nowhere is an error once a control plane has joined: an existing cluster must never look
/// fresh.
async fn external_view(c: &Context, candidates: &[String]) -> anyhow::Result<ClusterView> {
    let fleet = c.fleet()?;
    let mut failures = Vec::new();
    let mut asked = None;
    for node in c.inventory.etcd_nodes() {
        let Some(host) = fleet.host(node.name.as_str()) else {
            continue;
        };
        match etcd::members(host).await {
            Ok(members) => {
                asked = Some((node.name.to_string(), members));
                break;
            }
            Err(e) => failures.push(format!("{}: {e:#}", node.name)),
        }
    }
    let (answered, members) = match asked {
        Some((name, members)) => (Some(name), members),
        None if candidates.is_empty() => (None, Vec::new()),
        None => {
            return Err(Hinted::new(format!(
                "{} {} a member's files, but the external etcd answers on no etcd node ({}); \
                 khactl will not treat an existing cluster as new",
                candidates.join(", "),
                if candidates.len() == 1 { "has" } else { "have" },
                failures.join("; ")
            ))
            .hint("bring etcd back on the etcd nodes (`systemctl status etcd`, `journalctl -u etcd` there), then run the command again")
            .into());
        }
    };
    let mut registered = BTreeSet::new();
    let mut api_failures = Vec::new();
    let mut api_answered = candidates.is_empty();
    for name in candidates {
        let Some(host) = fleet.host(name) else {
            continue;
        };
        match api::nodes(host).await {
            Ok(nodes) => {
                registered = nodes.into_iter().map(|n| n.name).collect();
                api_answered = true;
                break;
            }
            Err(e) => api_failures.push(format!("{name}: {e:#}")),
        }
    }
    if !api_answered {
        return Err(Hinted::new(format!(
            "the external etcd answers, but the API does not on {} ({}); khactl needs it to \
             tell which nodes are in the cluster",
            candidates.join(", "),
            api_failures.join("; ")
        ))
        .hint("look at the API servers (`crictl ps`, `journalctl -u kubelet`)")
        .into());
    }
    Ok((members, registered, answered))
}

/// Polls `/readyz` through the VIP from `host` until it answers, checking the certificate for
/// the VIP and (when set) the DNS name; with node-local balancers, through this node's
/// own balancer on 127.0.0.1, for the name and 127.0.0.1; behind an external balancer, on
/// 127.0.0.1 as the node's kubeconfigs do (the balancer may refuse its own backends).
async fn wait_ready_through_vip(ctx: &Context, name: &str) -> anyhow::Result<()> {
    let host = ctx
        .fleet()?
        .host(name)
        .ok_or_else(|| anyhow::anyhow!("internal: {name} is not connected"))?;
    let (vip, port) = match &ctx.inventory.vip {
        Some(v) => (v.address.to_string(), v.port.get()),
        // Node-local balancers, or behind an external one: a control plane reaches the API
        // name on 127.0.0.1 (its balancer, or its own API server).
        None => (
            std::net::Ipv4Addr::LOCALHOST.to_string(),
            ctx.inventory.api_endpoint().port,
        ),
    };
    let mut names = vec![vip.clone()];
    if let Some(dns) = ctx.inventory.api_dns_name() {
        names.push(dns.to_string());
    }
    let started = Instant::now();
    loop {
        ctx.settings.interrupt.check()?;
        let mut all = true;
        for name in &names {
            all &= api::ready(host, name, port, &vip).await?;
        }
        if all {
            return Ok(());
        }
        if started.elapsed() > READY_DEADLINE {
            bail!(
                "kubeadm init finished, but /readyz does not answer through {vip}:{port} with a \
                 certificate for {} after {}s: look at the API server (`crictl ps`, \
                 `journalctl -u kubelet`) and at khagent (`curl -s 127.0.0.1:9901/status`) on {}",
                names.join(" and "),
                READY_DEADLINE.as_secs(),
                host.node()
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Keeps an `admin.conf` that dials the VIP, 0600 in the state directory, and says how to
/// use it.
fn save_admin_conf(ctx: &Context) -> anyhow::Result<()> {
    if ctx.settings.mode == Mode::Plan {
        return Ok(());
    }
    let path = ctx.state.root().join("admin.conf");
    ctx.pki()?.save_workstation_admin_conf(&path)?;
    ctx.report.event(Event::Info {
        message: &format!(
            "    admin.conf: {} (use it with `kubectl --kubeconfig {} get nodes`)",
            path.display(),
            path.display()
        ),
    });
    Ok(())
}
