//! The external etcd (nodes with `role: etcd`): each etcd node gets khactl's config file and
//! systemd unit for its member, the service enabled and started, and then the run waits until
//! every etcd node is a started, healthy voter, before kubeadm ever dials etcd. A member whose
//! files changed is restarted one at a time, the next only once the restarted one answers
//! `/health` and every voter is healthy again; the leader last, its leadership handed to
//! another voter first. The certificates are already
//! in place (`DistributePki`). A stacked cluster has no etcd node and skips the phase.
//!
//! The binary is the distribution's package (`/usr/bin/etcd`) or the inventory's
//! `etcd.binary`; khactl does not install packages, preflight names the command that does.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

use super::changes::Mode;
use super::install_agent::write_if_changed;
use super::kubernetes::hand_over_leadership;
use super::{Change, Context, Phase, PhaseFuture, rolling};
use crate::cluster::etcd;
use crate::diagnostics::Hinted;
use crate::facts::{HostFacts, InitSystem, ProbeRequest, sha256_hex};
use crate::inventory::{Inventory, Node, Role};
use crate::os::packages::{Need, install_hint};
use crate::os::service::{self, ServiceAction, ServiceState};
use crate::remote::NodeHandle;
use crate::render::etcd::{
    CONFIG_FILE, ClusterState, EtcdMember, PACKAGE_BINARY, SERVICE, SYSTEMD_UNIT,
};

/// How long a new etcd cluster may take until every member is a healthy voter.
const HEALTHY_DEADLINE: Duration = Duration::from_secs(120);
const POLL: Duration = Duration::from_millis(500);

pub struct InstallEtcd;

impl Phase for InstallEtcd {
    fn title(&self) -> &'static str {
        "Install the external etcd"
    }

    fn skip_reason(&self, ctx: &Context) -> Option<String> {
        (!ctx.inventory.external_etcd())
            .then(|| "etcd is stacked on the control planes (no `role: etcd` node)".to_owned())
    }

    fn facts(&self, ctx: &Context, node: &Node) -> ProbeRequest {
        if node.role != Role::Etcd {
            return ProbeRequest::default();
        }
        let files: Vec<PathBuf> = vec![CONFIG_FILE.into(), SYSTEMD_UNIT.into()];
        let mut digests = files.clone();
        digests.push(binary(&ctx.inventory));
        ProbeRequest {
            files,
            digests,
            versions: vec!["curl".to_owned()],
            ..ProbeRequest::default()
        }
    }

    fn preflight(&self, ctx: &Context, node: &Node, facts: &HostFacts) -> Vec<String> {
        if node.role != Role::Etcd {
            return Vec::new();
        }
        let mut problems = prerequisites(&ctx.inventory, facts);
        problems.extend(newcomer(ctx, node));
        problems
    }

    fn run<'a>(&'a self, ctx: &'a mut Context) -> PhaseFuture<'a> {
        Box::pin(async move {
            let strangers = not_members(ctx).await?;
            if !strangers.is_empty() {
                return ctx.settle_changes(strangers);
            }
            let c = &*ctx;
            let is_etcd = |h: &NodeHandle| c.node(h.node()).is_ok_and(|n| n.role == Role::Etcd);
            let planned = c
                .fleet()?
                .each(is_etcd, async |host| {
                    let node = c.node(host.node())?;
                    let facts = c.facts_of(host.node())?;
                    let state = service::state(host, facts.init, SERVICE)
                        .await
                        .context("reading whether etcd is enabled and running")?;
                    let member = EtcdMember::new(
                        &c.inventory,
                        node,
                        c.inventory.etcd_nodes(),
                        ClusterState::New,
                    )
                    .keeping_initial_cluster(facts.file(Path::new(CONFIG_FILE)));
                    let (files, service) = plan_member(&member, facts, state)?;
                    c.apply(host, &files).await?;
                    anyhow::Ok(service)
                })
                .await;
            let mut pending: Vec<(String, Vec<Change>)> = Vec::new();
            let mut failed = Vec::new();
            for (node, r) in planned {
                match r {
                    Ok(service) => pending.push((node, service)),
                    Err(e) => failed.push((node, Err(e))),
                }
            }
            if !failed.is_empty() {
                return ctx.settle(failed);
            }
            // One member at a time, and the next only once the restarted member answers and
            // every voter is healthy again: two members down at once in a three-member cluster
            // is no quorum. The leader goes last (and hands its leadership over first), so the
            // cluster holds one election at most, not one per restart.
            let apply = c.settings.mode == Mode::Apply;
            if apply && pending.iter().any(|(_, s)| restarts(s)) {
                // Members that are down first (restarting one costs no vote, and may be its
                // repair), the leader last.
                let leader = leader_node(c).await;
                let down = down_nodes(c).await;
                pending.sort_by_key(|(n, _)| (!down.contains(n), Some(n) == leader.as_ref()));
            }
            let started = rolling::one_at_a_time(
                pending,
                &c.settings.interrupt,
                async |name, service| {
                    let host = c
                        .fleet()?
                        .host(name)
                        .ok_or_else(|| anyhow::anyhow!("internal: {name} is not connected"))?;
                    let restart = apply && restarts(service);
                    if restart {
                        others_healthy(c, host).await?;
                        hand_over_before_restart(c, host).await?;
                    }
                    let n = c.apply(host, service).await?;
                    if restart {
                        wait_member_healthy(c, host).await?;
                    }
                    anyhow::Ok(n)
                },
                |stopped_at, _| match stopped_at {
                    Some(at) => Err(anyhow::anyhow!(
                        "not started: etcd members start one at a time and {at} failed"
                    )),
                    None => Err(crate::interrupt::Interrupted.into()),
                },
            )
            .await;
            if started.iter().any(|(_, r)| r.is_err()) {
                let results = started
                    .into_iter()
                    .map(|(n, r)| (n, r.map(|_| ())))
                    .collect();
                return ctx.settle_changes(results);
            }
            if ctx.settings.mode == Mode::Apply {
                let (witness, members) = wait_healthy(ctx).await?;
                ctx.cluster.etcd = members;
                ctx.cluster.etcd_answers_on = Some(witness);
            }
            let results = started.into_iter().map(|(n, _)| (n, Ok(()))).collect();
            ctx.settle_changes(results)
        })
    }
}

/// Whether `changes` restart etcd.
fn restarts(changes: &[Change]) -> bool {
    changes.iter().any(|c| {
        matches!(
            c,
            Change::Service {
                action: ServiceAction::Restart,
                ..
            }
        )
    })
}

/// The etcd node whose member leads, as the first etcd node that answers says; `None` when
/// none answers or the leader is no node of the inventory.
async fn leader_node(ctx: &Context) -> Option<String> {
    let fleet = ctx.fleet().ok()?;
    for node in ctx.inventory.etcd_nodes() {
        let Some(host) = fleet.host(node.name.as_str()) else {
            continue;
        };
        let (Ok(members), Ok(leader)) = (etcd::members(host).await, etcd::leader(host).await)
        else {
            continue;
        };
        let leading = members.iter().find(|m| m.id == leader)?;
        return ctx
            .inventory
            .etcd_nodes()
            .find(|n| leading.is_node(n.name.as_str(), &n.address.to_string()))
            .map(|n| n.name.to_string());
    }
    None
}

/// The etcd nodes whose member is not healthy, as the first etcd node that answers says.
async fn down_nodes(ctx: &Context) -> Vec<String> {
    let Ok(fleet) = ctx.fleet() else {
        return Vec::new();
    };
    for node in ctx.inventory.etcd_nodes() {
        let Some(host) = fleet.host(node.name.as_str()) else {
            continue;
        };
        let Ok(members) = etcd::members(host).await else {
            continue;
        };
        return ctx
            .inventory
            .etcd_nodes()
            .filter(|n| {
                !members.iter().any(|m| {
                    m.is_node(n.name.as_str(), &n.address.to_string()) && m.healthy == Some(true)
                })
            })
            .map(|n| n.name.to_string())
            .collect();
    }
    Vec::new()
}

/// Before a serving member restarts: every other voter must be healthy, or its restart could
/// cost the quorum. A member that does not answer itself restarts regardless (a repair).
pub(super) async fn others_healthy(ctx: &Context, host: &NodeHandle) -> anyhow::Result<()> {
    let node = ctx.node(host.node())?;
    let (name, address) = (node.name.as_str(), node.address.to_string());
    let Ok(members) = etcd::members(host).await else {
        return Ok(());
    };
    if !members
        .iter()
        .any(|m| m.is_node(name, &address) && m.healthy == Some(true))
    {
        return Ok(());
    }
    let down: Vec<String> = members
        .iter()
        .filter(|m| !m.is_learner && !m.is_node(name, &address) && m.healthy != Some(true))
        .map(|m| {
            if m.name.is_empty() {
                format!("{:x}", m.id)
            } else {
                m.name.clone()
            }
        })
        .collect();
    if !down.is_empty() {
        bail!(
            "etcd member(s) {} not healthy, and restarting {name}'s etcd now could cost the \
             quorum; bring them back first (`khactl status`), then run the command again",
            down.join(", ")
        );
    }
    Ok(())
}

/// If `host`'s member leads, hands the leadership to another healthy voter before its etcd
/// restarts. A member that does not answer leads nothing: its restart (a repair) goes on.
async fn hand_over_before_restart(ctx: &Context, host: &NodeHandle) -> anyhow::Result<()> {
    let Ok(members) = etcd::members(host).await else {
        return Ok(());
    };
    let fleet = ctx.fleet()?;
    let witness = ctx
        .inventory
        .etcd_nodes()
        .filter(|n| n.name.as_str() != host.node())
        .filter(|n| {
            members.iter().any(|m| {
                m.is_node(n.name.as_str(), &n.address.to_string())
                    && !m.is_learner
                    && m.healthy == Some(true)
            })
        })
        .find_map(|n| fleet.host(n.name.as_str()));
    let Some(witness) = witness else {
        return Ok(());
    };
    let node = ctx.node(host.node())?;
    hand_over_leadership(ctx, host, witness, node, &members).await
}

/// After `host`'s etcd restarted: until its member answers `/health` and every voter is
/// healthy again, so the next restart never takes a second vote away.
async fn wait_member_healthy(ctx: &Context, host: &NodeHandle) -> anyhow::Result<()> {
    let node = ctx.node(host.node())?;
    let address = node.address.to_string();
    let started = Instant::now();
    loop {
        ctx.settings.interrupt.check()?;
        let last = match etcd::members(host).await {
            Ok(members) => {
                let me_ok = members
                    .iter()
                    .any(|m| m.is_node(node.name.as_str(), &address) && m.healthy == Some(true));
                let down: Vec<String> = members
                    .iter()
                    .filter(|m| !m.is_learner && m.healthy != Some(true))
                    .map(|m| {
                        m.peer_urls
                            .first()
                            .cloned()
                            .unwrap_or_else(|| m.name.clone())
                    })
                    .collect();
                if me_ok && down.is_empty() {
                    return Ok(());
                }
                if down.is_empty() {
                    "its member does not answer /health yet".to_owned()
                } else {
                    format!("voters not healthy: {}", down.join(", "))
                }
            }
            Err(e) => format!("{e:#}"),
        };
        if started.elapsed() > HEALTHY_DEADLINE {
            bail!(
                "etcd on {} was restarted but the cluster is not healthy after {}s ({last});                  the members after it were not restarted; look at `journalctl -u etcd` there",
                node.name,
                HEALTHY_DEADLINE.as_secs()
            );
        }
        tokio::time::sleep(POLL).await;
    }
}

/// `up` founds an etcd cluster; it does not grow a running one. Here, before the running
/// etcd can be asked (preflight reads files; [`not_members`] asks etcd when the phase
/// starts), an etcd node without a member config is refused when other etcd nodes have one whose initial cluster does not
/// list it (started with `new`, it would found a second cluster, or fail against the
/// first), with the command that adds it. A founding cut short (some configs written, each
/// listing this node) goes on.
fn newcomer(ctx: &Context, node: &Node) -> Option<String> {
    let config = |n: &Node| {
        ctx.facts
            .get(n.name.as_str())
            .and_then(|f| f.file(Path::new(CONFIG_FILE)))
            .map(|b| String::from_utf8_lossy(b).into_owned())
    };
    if config(node).is_some() {
        return None;
    }
    let configs: Vec<String> = ctx.inventory.etcd_nodes().filter_map(config).collect();
    let entry = format!("{}={}", node.name, node.etcd_peer_url());
    let listed = configs.iter().any(|c| lists(c, &entry));
    (!configs.is_empty() && !listed).then(|| {
        format!(
            "it is not among the members the running etcd was founded with, and `up` founds \
             an etcd cluster but does not grow one: add it with `khactl add-etcd {}`, then run \
             `up` again",
            node.name
        )
    })
}

/// Pure: whether a member config's `initial-cluster` has `entry` (`name=peerURL`) as one of
/// its entries (`etcd1=…` is not in `myetcd1=…`).
pub fn lists(config: &str, entry: &str) -> bool {
    config
        .lines()
        .filter_map(|l| l.strip_prefix("initial-cluster:"))
        .flat_map(|v| v.trim().trim_matches('"').split(','))
        .any(|e| e.trim() == entry)
}

/// When the running etcd answers: the etcd nodes of the inventory that are no member of it
/// (by name or peer URL), each with why `up` does not start one. `up` founds etcd; a node
/// removed with `remove-node` but left in the inventory would otherwise start an empty
/// member of its own. Nothing when no etcd node answers (a cluster still being founded).
async fn not_members(ctx: &Context) -> anyhow::Result<Vec<(String, anyhow::Result<()>)>> {
    let fleet = ctx.fleet()?;
    let mut members = None;
    for node in ctx.inventory.etcd_nodes() {
        if let Some(host) = fleet.host(node.name.as_str())
            && let Ok(m) = etcd::members(host).await
        {
            members = Some(m);
            break;
        }
    }
    let Some(members) = members else {
        return Ok(Vec::new());
    };
    Ok(ctx
        .inventory
        .etcd_nodes()
        .filter(|n| {
            !members
                .iter()
                .any(|m| m.is_node(n.name.as_str(), &n.address.to_string()))
        })
        .map(|n| {
            let refusal = Hinted::new(format!(
                "{} is not a member of the running etcd, and `up` founds an etcd cluster but \
                 does not grow one",
                n.name
            ))
            .hint(format!(
                "add it with `khactl add-etcd {}`, then run `up` again (or take it out of the \
                 inventory)",
                n.name
            ));
            (n.name.to_string(), Err(refusal.into()))
        })
        .collect())
}

/// The etcd binary every etcd node runs.
pub fn binary(inventory: &Inventory) -> PathBuf {
    inventory
        .etcd
        .binary
        .clone()
        .unwrap_or_else(|| PACKAGE_BINARY.into())
}

/// Pure: what an etcd node lacks to run its member, each with what to do about it there.
pub fn prerequisites(inventory: &Inventory, facts: &HostFacts) -> Vec<String> {
    let mut problems = Vec::new();
    if facts.init != InitSystem::Systemd {
        problems.push(format!(
            "khactl runs the external etcd as a systemd service, and this node runs {}",
            facts.init
        ));
    }
    let bin = binary(inventory);
    if facts.digest(&bin).is_none() {
        problems.push(match &inventory.etcd.binary {
            Some(p) => format!(
                "{} (the inventory's etcd.binary) is not on this node: place the etcd binary \
                 there, or leave etcd.binary out to use the distribution's package",
                p.display()
            ),
            None => format!(
                "etcd is not installed ({PACKAGE_BINARY} is missing): {}",
                install_hint(facts, Need::Etcd, 0)
            ),
        });
    }
    if facts.version("curl").is_none() {
        problems.push(format!(
            "curl is missing, and khactl asks etcd's health with it: {}",
            install_hint(facts, Need::Curl, 0)
        ));
    }
    problems
}

/// Pure: the files of a member (first) and the service changes (after), from what the node
/// has now. `up` founds the cluster with every etcd node of the inventory (`new`); `add-etcd`
/// joins the running members (`existing`). Once its data directory holds data, etcd reads no
/// `initial-*` setting again.
pub fn plan_member(
    member: &EtcdMember,
    facts: &HostFacts,
    state: ServiceState,
) -> anyhow::Result<(Vec<Change>, Vec<Change>)> {
    let write = |path: &str, text: String| {
        let bytes = text.into_bytes();
        let sha = sha256_hex(&bytes);
        write_if_changed(facts, path, bytes, &sha, 0o644, true)
    };
    let config = write(CONFIG_FILE, member.render_config()?);
    let unit = write(SYSTEMD_UNIT, member.render_systemd()?);
    let unit_changed = unit.is_some();
    let changed = config.is_some() || unit_changed;
    let mut files: Vec<Change> = config.into_iter().chain(unit).collect();
    let service = |action| Change::Service {
        name: SERVICE.to_owned(),
        init: facts.init,
        action,
        check_first: None,
    };
    if unit_changed {
        files.push(service(ServiceAction::DaemonReload));
    }
    let mut services = Vec::new();
    if !state.enabled || !state.active {
        services.push(service(ServiceAction::EnableNow));
    }
    if state.active && changed {
        services.push(service(ServiceAction::Restart));
    }
    Ok((files, services))
}

/// Until every etcd node of the inventory is a started, healthy voter, asked on each etcd
/// node in turn (the first that answers); returns the node that answered and the members.
async fn wait_healthy(ctx: &Context) -> anyhow::Result<(String, Vec<etcd::Member>)> {
    let fleet = ctx.fleet()?;
    let nodes: Vec<&Node> = ctx.inventory.etcd_nodes().collect();
    let started = Instant::now();
    let mut last = String::from("no etcd node answered yet");
    loop {
        ctx.settings.interrupt.check()?;
        for node in &nodes {
            let Some(host) = fleet.host(node.name.as_str()) else {
                continue;
            };
            match etcd::members(host).await {
                Ok(members) => {
                    let missing = not_healthy_voters(&nodes, &members);
                    if missing.is_empty() {
                        return Ok((node.name.to_string(), members));
                    }
                    last = format!("not yet healthy voters: {}", missing.join(", "));
                    break;
                }
                Err(e) => last = format!("{}: {e:#}", node.name),
            }
        }
        if started.elapsed() > HEALTHY_DEADLINE {
            bail!(
                "the external etcd is not healthy after {}s ({last}); look at `journalctl -u \
                 etcd` on the etcd nodes",
                HEALTHY_DEADLINE.as_secs()
            );
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Pure: the etcd nodes that are not a started, healthy voter in `members`.
pub fn not_healthy_voters(nodes: &[&Node], members: &[etcd::Member]) -> Vec<String> {
    nodes
        .iter()
        .filter(|n| {
            !members.iter().any(|m| {
                m.is_node(n.name.as_str(), &n.address.to_string())
                    && !m.name.is_empty()
                    && !m.is_learner
                    && m.healthy == Some(true)
            })
        })
        .map(|n| n.name.to_string())
        .collect()
}
