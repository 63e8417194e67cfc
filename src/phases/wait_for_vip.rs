//! Wait until the agents agree: exactly one control-plane node holds the VIP on an interface,
//! and a TCP connection to VIP:port from a node succeeds (the load balancer answers there).
//! Only then can kubeadm use the VIP as the control-plane endpoint.
//!
//! Two holders at once is normal for an instant (a preempting master adds the VIP before
//! the old one has read its advert), so it fails the phase only when it lasts.
//!
//! Holders are counted among every node khactl ever installed an agent on that may still run
//! it (`FormerNodes`), not only today's control planes: a former control plane holding the
//! VIP fails the run at once, and while one may still run khagent the run does not succeed.
//!
//! With node-local balancers (no VIP) it waits instead for `127.0.0.1:port` on every node
//! ([`node_local`]).

use std::time::{Duration, Instant};

use super::changes::Mode;
use super::{Context, Phase, PhaseFuture};
use std::net::Ipv4Addr;

use crate::cluster::{FormerNode, vip};
use crate::diagnostics::Hinted;
use crate::remote::NodeHandle;

/// How long the agents get to elect a holder and answer on the VIP.
const DEADLINE: Duration = Duration::from_secs(30);
const POLL: Duration = Duration::from_millis(250);
/// Two holders for longer than this is a split brain, not an election in progress: many
/// advert intervals (100 ms by default) have passed without either yielding.
const SPLIT_BRAIN_AFTER: Duration = Duration::from_secs(3);

mod node_local;

pub struct WaitForVip;

impl Phase for WaitForVip {
    fn title(&self) -> &'static str {
        "Wait for the virtual IP"
    }

    fn skip_reason(&self, ctx: &Context) -> Option<String> {
        if ctx.inventory.external_lb().is_some() {
            return Some("an external load balancer fronts the API servers: no VIP".to_owned());
        }
        (ctx.settings.mode == Mode::Plan)
            .then(|| "dry run: no agent was started, so there is no VIP to wait for".to_owned())
    }

    fn run<'a>(&'a self, ctx: &'a mut Context) -> PhaseFuture<'a> {
        Box::pin(async move {
            let Some(v) = &ctx.inventory.vip else {
                let port = ctx.inventory.api_endpoint().port;
                return node_local::wait(ctx, port).await;
            };
            let (vip, port) = (v.address, v.port.get());
            let c = &*ctx;
            let cps: Vec<&NodeHandle> = c
                .inventory
                .vrrp_nodes()
                .filter_map(|n| c.fleet().ok()?.host(n.name.as_str()))
                .collect();
            let names: Vec<&str> = cps.iter().map(|h| h.node()).collect();
            let former = &c.cluster.former;
            // Former control planes still in the inventory (workers now) are in the fleet;
            // removed ones in `c.former`.
            let strays_here: Vec<&str> = former
                .iter()
                .filter(|f| f.agent && c.node(&f.node).is_ok())
                .map(|f| f.node.as_str())
                .collect();
            let strays_away: Vec<&str> = former
                .iter()
                .filter(|f| f.agent && c.node(&f.node).is_err())
                .map(|f| f.node.as_str())
                .collect();
            let started = Instant::now();
            let mut split_since: Option<Instant> = None;
            let last = loop {
                c.settings.interrupt.check()?;
                let mut strays = vip::holders(c.fleet()?, &strays_here, vip).await?;
                if let Some(away) = &c.former {
                    strays.extend(vip::holders(away, &strays_away, vip).await?);
                }
                if let Some(stray) = strays.first() {
                    return Err(leftovers(c, former, Some(stray), vip));
                }
                let seen = vip::holders(c.fleet()?, &names, vip).await?;
                let outcome = match seen.as_slice() {
                    [one] => {
                        // Connect from another node when there is one: that crosses the
                        // network (ARP for the VIP included), as kubelets will.
                        let from = cps
                            .iter()
                            .find(|h| h.node() != one.as_str())
                            .or_else(|| cps.first());
                        let answered = match from {
                            Some(h) => vip::answers(h, vip, port).await?,
                            None => false,
                        };
                        if answered {
                            let summaries = cps
                                .iter()
                                .map(|h| {
                                    let s = if h.node() == one.as_str() {
                                        format!("holds {vip}; {vip}:{port} answers")
                                    } else {
                                        "does not hold the VIP".to_owned()
                                    };
                                    (h.node().to_owned(), Ok(s))
                                })
                                .collect();
                            ctx.cluster.vip_holder = Some(one.clone());
                            ctx.settle(summaries)?;
                            if ctx.cluster.former.iter().any(|f| !f.is_clean()) {
                                return Err(leftovers(ctx, &ctx.cluster.former, None, vip));
                            }
                            return Ok(());
                        }
                        format!(
                            "{one} holds {vip}, but {vip}:{port} does not accept connections \
                             (khagent's listener on {one})"
                        )
                    }
                    [] => format!("no {} node holds {vip}", c.inventory.vrrp_role_name()),
                    many => {
                        let since = *split_since.get_or_insert_with(Instant::now);
                        let text = format!("{vip} is held by {} at once", many.join(" and "));
                        if since.elapsed() > SPLIT_BRAIN_AFTER {
                            return Err(Hinted::new(format!(
                                "{text} for over {}s: the agents do not hear each other's \
                                 adverts",
                                SPLIT_BRAIN_AFTER.as_secs()
                            ))
                            .hint(format!(
                                "VRRP is IP protocol 112, unicast between the {} nodes' \
                                     addresses: check firewalls between them, and that no \
                                     other router on the segment uses vip.routerId",
                                c.inventory.vrrp_role_name()
                            ))
                            .into());
                        }
                        text
                    }
                };
                if seen.len() < 2 {
                    split_since = None;
                }
                if started.elapsed() > DEADLINE {
                    break outcome;
                }
                tokio::time::sleep(POLL).await;
            };
            Err(Hinted::new(format!("{last} after {}s", DEADLINE.as_secs()))
                .hint(format!(
                    "look at the agent on the {} nodes: `systemctl status khagent` or \
                     `journalctl -u khagent` (OpenRC: `rc-service khagent status`, \
                     /var/log/khagent.log), and `curl -s 127.0.0.1:9901/status` there",
                    ctx.inventory.vrrp_role_name()
                ))
                .into())
        })
    }
}

/// The run cannot succeed while a former control plane may still run khagent (or hold the CA
/// keys): the error names each, what is there, and the way out: `remove-node` for a node that
/// left the inventory; for one still in it (a control plane whose agent moved to the
/// load-balancer nodes, a balancer that was a control plane), removing by hand only what it
/// should no longer have, since remove-node would take the node out of the cluster.
fn leftovers(
    ctx: &Context,
    former: &[FormerNode],
    holder: Option<&str>,
    vip: Ipv4Addr,
) -> anyhow::Error {
    let left: Vec<&FormerNode> = former.iter().filter(|f| !f.is_clean()).collect();
    let names: Vec<&str> = left.iter().map(|f| f.node.as_str()).collect();
    let mut message = match holder {
        Some(h) => format!(
            "{vip} is held by {h}, which should no longer run khagent (it left the inventory, \
             or its role changed): khactl installed khagent there and it still runs, so the VIP \
             has two holders"
        ),
        None => format!(
            "not done: {} should no longer hold what khactl placed there (khagent, CA keys), \
             but it is still there, and a khagent left running can take {vip} at any time (two \
             holders)",
            names.join(", ")
        ),
    };
    for f in &left {
        message.push_str(&format!("\n  {}: {}", f.node, f.describe()));
    }
    let mut hinted = Hinted::new(message);
    let gone: Vec<&str> = names
        .iter()
        .copied()
        .filter(|n| ctx.node(n).is_err())
        .collect();
    if let Some(first) = gone.first() {
        hinted = hinted
            .hint(format!(
                "run `khactl remove-node {first}` for each of {}: it stops the agent, removes \
                 the keys and forgets the node",
                gone.join(", ")
            ))
            .hint(
                "a machine that is gone for good: delete its entry from placements.json in the \
                 state directory",
            );
    }
    for f in &left {
        let mut steps = Vec::new();
        if f.agent {
            steps.push(
                "`systemctl disable --now khagent` (OpenRC: `rc-service khagent stop && \
                 rc-update del khagent`); `rm -f /usr/local/bin/khagent \
                 /etc/khagent/khagent.yaml /etc/systemd/system/khagent.service \
                 /etc/init.d/khagent`",
            );
        }
        if f.ca_keys {
            steps.push(
                "`rm -f /etc/kubernetes/pki/ca.key /etc/kubernetes/pki/front-proxy-ca.key \
                 /etc/kubernetes/pki/etcd/ca.key /etc/kubernetes/pki/sa.key`",
            );
        }
        let who = if ctx.node(&f.node).is_ok() {
            format!(
                "{} stays in the cluster, so not remove-node: on it, by hand,",
                f.node
            )
        } else {
            format!("or by hand on {}:", f.node)
        };
        hinted = hinted.hint(format!(
            "{who} {}; the next `khactl up` sees it is gone",
            steps.join("; ")
        ));
    }
    hinted.into()
}
