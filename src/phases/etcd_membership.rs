//! Growing and shrinking the external etcd (nodes with `role: etcd`), one member at a time,
//! the way etcd's runtime reconfiguration guide says:
//!
//! - `add-etcd`: [`CheckEtcdGrowth`] refuses before anything changes unless every member is a
//!   healthy voter and no learner is pending (and, without `--yes`, an even size); it also
//!   refuses a node etcd already counts as a voter, even a down one (its member and data are
//!   never thrown away here: `remove-node` first), and a running member that is no etcd node
//!   of the inventory. Then [`JoinEtcdMember`] stops any etcd left on the node and empties its
//!   data directory, adds the node as a **learner** (it receives the log but does not vote,
//!   so the quorum does not grow before it has caught up), writes its member config with the
//!   live member list's started members as its initial cluster (`existing`), starts etcd
//!   there and **promotes** it once etcd accepts (a learner is promoted only when in sync with
//!   the leader; a promotion whose answer was lost is recognised by the member list). A join
//!   that fails removes the member again and stops etcd on the node.
//! - `remove-node` of an etcd node: [`LeaveEtcd`] refuses to break the quorum or remove the
//!   last member, hands the leadership over if the node leads, **removes the member first** (from another etcd node, so the cluster never
//!   counts a voter that is gone), then stops etcd on the node and removes its files and data.
//!
//! The API servers' `--etcd-servers` and `kubeadm-config` follow in the next phase
//! ([`super::UpdateEtcdEndpoints`]).

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

use super::changes::Mode;
use super::install_etcd::{binary, not_healthy_voters, plan_member, prerequisites};
use super::kubernetes::{etcd_quorum_after, etcd_witness, hand_over_leadership, remove_member};
use super::{Change, Context, Phase, PhaseFuture};
use crate::cluster::etcd;
use crate::diagnostics::Hinted;
use crate::facts::{DirState, HostFacts, ProbeRequest};
use crate::inventory::{Node, Role};
use crate::os::service::{self, ServiceAction};
use crate::remote::{NodeHandle, RemoteCommand};
use crate::render::etcd::{CONFIG_FILE, ClusterState, DATA_DIR, EtcdMember, SERVICE, SYSTEMD_UNIT};
use crate::report::Event;

/// How long a new member may take to catch up, be promoted and answer healthy.
const SETTLE_DEADLINE: Duration = Duration::from_secs(120);
const POLL: Duration = Duration::from_millis(500);

/// The gate of `add-etcd`.
pub struct CheckEtcdGrowth {
    pub node: String,
    /// `--yes`: an even number of members is a warning, not a refusal.
    pub allow_even: bool,
}

impl Phase for CheckEtcdGrowth {
    fn title(&self) -> &'static str {
        "Check the etcd cluster before it grows"
    }

    fn run<'a>(&'a self, ctx: &'a mut Context) -> PhaseFuture<'a> {
        Box::pin(async move {
            let verdict = self.check(ctx).await;
            ctx.settle(vec![(self.node.clone(), verdict)])
        })
    }
}

impl CheckEtcdGrowth {
    async fn check(&self, ctx: &mut Context) -> anyhow::Result<String> {
        let node = ctx.node(&self.node)?.clone();
        if node.role != Role::Etcd {
            bail!("internal: {} is not an etcd node", self.node);
        }
        let (witness, members) = read_members(ctx, &node).await?;
        ctx.cluster.etcd_answers_on = Some(witness);
        ctx.cluster.etcd.clone_from(&members);
        let address = node.address.to_string();
        if is_healthy_voter(&node, &members) {
            return Ok(format!(
                "{} is already a healthy voter: nothing to add",
                node.name
            ));
        }
        if let Some(m) = members
            .iter()
            .find(|m| m.is_node(node.name.as_str(), &address) && !m.is_learner)
        {
            return Err(already_a_voter(&node, m).into());
        }
        initial_cluster(&ctx.inventory, &node, &members)?;
        let others: Vec<etcd::Member> = members
            .iter()
            .filter(|m| !m.is_node(node.name.as_str(), &address))
            .cloned()
            .collect();
        if let Some(why) = etcd::join_refusal(&others) {
            return Err(Hinted::new(format!("refusing to add {}: {why}", node.name))
                .hint("`khactl status` shows every member; bring the cluster back first")
                .into());
        }
        let after = others.len() + 1;
        if after.is_multiple_of(2) {
            let why = format!(
                "etcd would have {after} members: it needs {} of them to work, so it survives \
                 the loss of {} member(s), no more than with {}",
                etcd::quorum(after),
                after - etcd::quorum(after),
                after - 1
            );
            if !self.allow_even {
                return Err(Hinted::new(format!("refusing to add {}: {why}", node.name))
                    .hint(format!(
                        "add two etcd nodes (one after the other) to reach {}, and pass --yes \
                         to accept the even size in between",
                        after + 1
                    ))
                    .into());
            }
            ctx.report.event(Event::Warning {
                node: Some(node.name.as_str()),
                message: &format!("{why} (accepted with --yes)"),
            });
        }
        Ok(format!("etcd healthy: {} voter(s) → {after}", others.len()))
    }
}

/// Adds the node as a learner, starts its member, promotes it.
pub struct JoinEtcdMember {
    pub node: String,
}

impl Phase for JoinEtcdMember {
    fn title(&self) -> &'static str {
        "Join the etcd member"
    }

    /// Its member files, and what `up` checks an etcd node has (the binary, curl).
    fn facts(&self, ctx: &Context, node: &Node) -> ProbeRequest {
        let mut probe = member_files(node, &self.node);
        if node.name.as_str() == self.node {
            probe.digests.push(binary(&ctx.inventory));
            probe.versions.push("curl".to_owned());
        }
        probe
    }

    /// The same prerequisites `up` checks on an etcd node, before anything changes.
    fn preflight(&self, ctx: &Context, node: &Node, facts: &HostFacts) -> Vec<String> {
        if node.name.as_str() != self.node {
            return Vec::new();
        }
        prerequisites(&ctx.inventory, facts)
    }

    fn run<'a>(&'a self, ctx: &'a mut Context) -> PhaseFuture<'a> {
        Box::pin(async move {
            let r = self.join(ctx).await;
            ctx.settle(vec![(self.node.clone(), r)])
        })
    }
}

/// What `DistributePki` places on an etcd node (`ClusterPki::files_for`): the etcd CA's
/// certificate, its own server and peer pairs, the healthcheck client pair. Removed with it.
pub(super) const MEMBER_PKI: [&str; 7] = [
    "/etc/kubernetes/pki/etcd/ca.crt",
    "/etc/kubernetes/pki/etcd/server.crt",
    "/etc/kubernetes/pki/etcd/server.key",
    "/etc/kubernetes/pki/etcd/peer.crt",
    "/etc/kubernetes/pki/etcd/peer.key",
    "/etc/kubernetes/pki/etcd/healthcheck-client.crt",
    "/etc/kubernetes/pki/etcd/healthcheck-client.key",
];

/// The member files, keys and data directory of `node`, when it is the one `name` names.
fn member_files(node: &Node, name: &str) -> ProbeRequest {
    if node.name.as_str() != name {
        return ProbeRequest::default();
    }
    let mut digests: Vec<std::path::PathBuf> = vec![CONFIG_FILE.into(), SYSTEMD_UNIT.into()];
    digests.extend(MEMBER_PKI.iter().map(std::path::PathBuf::from));
    ProbeRequest {
        files: vec![CONFIG_FILE.into(), SYSTEMD_UNIT.into()],
        digests,
        dirs: vec![DATA_DIR.into()],
        ..ProbeRequest::default()
    }
}

impl JoinEtcdMember {
    async fn join(&self, ctx: &Context) -> anyhow::Result<String> {
        let node = ctx.node(&self.node)?;
        let name = node.name.as_str();
        let address = node.address.to_string();
        let fleet = ctx.fleet()?;
        let host = fleet
            .host(name)
            .ok_or_else(|| anyhow::anyhow!("internal: {name} is not connected"))?;
        let witness = etcd_witness(ctx, Some(name))
            .ok_or_else(|| anyhow::anyhow!("no other etcd node answers to add {name} through"))?;
        let members = etcd::members(witness).await?;
        if is_healthy_voter(node, &members) {
            return Ok("already a healthy voter".to_owned());
        }
        // A voter, even one that does not answer, keeps its data: it is removed with
        // `remove-node` first, never here.
        if let Some(m) = members
            .iter()
            .find(|m| m.is_node(name, &address) && !m.is_learner)
        {
            return Err(already_a_voter(node, m).into());
        }
        let initial = initial_cluster(&ctx.inventory, node, &members)?;
        let learner = members
            .iter()
            .find(|m| m.is_node(name, &address) && m.is_learner)
            .map(|m| m.id);
        let id = match learner {
            Some(id) => Some(id),
            None => {
                // Not a member: whatever an earlier membership left on the node (a running
                // etcd, a data directory naming another cluster) would make the new member
                // refuse to start.
                clear_old_member(ctx, host).await?;
                let peer = node.etcd_peer_url();
                let headline = format!("add etcd member {name} ({peer}) as a learner");
                ctx.step(witness, &headline, async |w| {
                    etcd::add_learner(w, &peer).await
                })
                .await?
            }
        };
        let mut member = EtcdMember::new(&ctx.inventory, node, [node], ClusterState::Existing);
        member.initial_cluster = initial;
        let facts = ctx.facts_of(name)?;
        let state = service::state(host, facts.init, SERVICE)
            .await
            .context("reading whether etcd is enabled and running")?;
        let (files, service) = plan_member(&member, facts, state)?;
        let joined = async {
            ctx.apply(host, &files).await?;
            ctx.apply(host, &service).await?;
            let Some(id) = id.filter(|_| ctx.settings.mode == Mode::Apply) else {
                return anyhow::Ok("join planned (learner, then promoted)".to_owned());
            };
            promote_when_in_sync(ctx, witness, id).await?;
            wait_voter(ctx, witness, node).await?;
            anyhow::Ok("joined as a learner, promoted; healthy voter".to_owned())
        }
        .await;
        match joined {
            Ok(done) => Ok(done),
            Err(e) if e.chain().any(|c| c.is::<crate::interrupt::Interrupted>()) => Err(e),
            Err(e) => {
                // The cluster as it was: the member removed, etcd stopped on the node, its
                // half-written data gone so the next attempt starts clean.
                let undo = async {
                    let now = etcd::members(witness).await?;
                    remove_member(ctx, witness, node, &now).await?;
                    stop_and_clear(ctx, host).await
                }
                .await;
                match undo {
                    Ok(()) => Err(e.context(format!(
                        "{name}'s member was removed again and etcd stopped there"
                    ))),
                    Err(u) => Err(e.context(format!(
                        "and undoing it failed too ({u:#}): remove {name}'s member by hand \
                         (`etcdctl member remove`) and stop etcd there"
                    ))),
                }
            }
        }
    }
}

/// Promotes learner `id`, retrying while etcd says it has not caught up yet. After a failed
/// attempt the member list decides: a voter already (an answer lost, a promotion that went
/// through anyway) is done; a member gone is a failure at once.
async fn promote_when_in_sync(ctx: &Context, witness: &NodeHandle, id: u64) -> anyhow::Result<()> {
    let interrupt = ctx.settings.interrupt.clone();
    let headline = format!("promote etcd learner {id:x} to a voter");
    ctx.step(witness, &headline, async |w| {
        let started = Instant::now();
        loop {
            let Err(e) = etcd::promote(w, id).await else {
                return Ok(());
            };
            if format!("{e:#}").contains("member not found") {
                return Err(e.context(format!("learner {id:x} is no longer a member")));
            }
            if let Ok(members) = etcd::members(w).await {
                match members.iter().find(|m| m.id == id) {
                    None => {
                        return Err(e.context(format!(
                            "learner {id:x} is no longer a member (member not found)"
                        )));
                    }
                    Some(m) if !m.is_learner => return Ok(()),
                    Some(_) => {}
                }
            }
            if started.elapsed() >= SETTLE_DEADLINE {
                return Err(e.context(format!(
                    "the learner did not catch up within {}s",
                    SETTLE_DEADLINE.as_secs()
                )));
            }
            // "can only promote a learner member which is in sync with leader", or the
            // learner not started yet: both pass; retried until the deadline.
            interrupt.check()?;
            tokio::time::sleep(POLL).await;
        }
    })
    .await?;
    Ok(())
}

/// The refusal of `add-etcd` for a node etcd already counts as a voter.
fn already_a_voter(node: &Node, m: &etcd::Member) -> Hinted {
    Hinted::new(format!(
        "refusing to add {}: it is already an etcd voter ({} {}), though not a healthy one; \
         adding it again would throw its member and data away",
        node.name,
        m.name,
        m.peer_urls.first().map(String::as_str).unwrap_or("?")
    ))
    .hint(format!(
        "bring its etcd back (`khactl status`, `journalctl -u etcd` there), or remove it first \
         with `khactl remove-node {0}` (`--unreachable` if the machine is gone) and then run \
         `khactl add-etcd {0}`",
        node.name
    ))
}

/// Pure: the joining member's `initial-cluster`: `name=peerURL` of every started member of
/// the live list, and `node`. A started member that no etcd node of the inventory is stops
/// the join: khactl would not know the cluster it grows.
pub fn initial_cluster(
    inventory: &crate::inventory::Inventory,
    node: &Node,
    members: &[etcd::Member],
) -> anyhow::Result<String> {
    let address = node.address.to_string();
    let mut entries = Vec::new();
    for m in members {
        if m.name.is_empty() || m.is_node(node.name.as_str(), &address) {
            continue;
        }
        let listed = inventory
            .etcd_nodes()
            .any(|n| m.is_node(n.name.as_str(), &n.address.to_string()));
        let Some(url) = m.peer_urls.first().filter(|_| listed) else {
            return Err(Hinted::new(format!(
                "refusing to add {}: etcd member {} ({}) runs but is no etcd node of the \
                 inventory",
                node.name,
                m.name,
                m.peer_urls.first().map(String::as_str).unwrap_or("?")
            ))
            .hint(format!(
                "remove it with `khactl remove-node {} --unreachable`, or add it to the \
                 inventory as a `role: etcd` node",
                m.name
            ))
            .into());
        };
        entries.push(format!("{}={url}", m.name));
    }
    entries.push(format!("{}={}", node.name, node.etcd_peer_url()));
    Ok(entries.join(","))
}

/// Before a node that is no member joins: its etcd stopped if it runs, and the contents of
/// its data directory removed (not the directory: it may be a mount point).
async fn clear_old_member(ctx: &Context, host: &NodeHandle) -> anyhow::Result<()> {
    let facts = ctx.facts_of(host.node())?;
    let state = service::state(host, facts.init, SERVICE)
        .await
        .context("reading whether etcd is running")?;
    if state.active {
        let stop = Change::Service {
            name: SERVICE.to_owned(),
            init: facts.init,
            action: ServiceAction::Stop,
            check_first: None,
        };
        ctx.apply(host, &[stop]).await?;
    }
    let full = facts
        .dirs
        .get(Path::new(DATA_DIR))
        .is_some_and(|d| *d == DirState::NotEmpty);
    if !full && !state.active {
        return Ok(());
    }
    let headline = format!("empty {DATA_DIR} (data of an earlier etcd membership)");
    ctx.step(host, &headline, async |h| {
        h.run(&RemoteCommand::new([
            "find",
            DATA_DIR,
            "-mindepth",
            "1",
            "-maxdepth",
            "1",
            "-exec",
            "rm",
            "-rf",
            "--one-file-system",
            "{}",
            "+",
        ]))
        .await?;
        Ok(())
    })
    .await?;
    Ok(())
}

/// Until `node` is a started, healthy voter.
async fn wait_voter(ctx: &Context, witness: &NodeHandle, node: &Node) -> anyhow::Result<()> {
    let started = Instant::now();
    loop {
        ctx.settings.interrupt.check()?;
        let members = etcd::members(witness).await?;
        if is_healthy_voter(node, &members) {
            return Ok(());
        }
        if started.elapsed() > SETTLE_DEADLINE {
            bail!(
                "after {}s {} is not a healthy etcd voter; look at `journalctl -u etcd` there",
                SETTLE_DEADLINE.as_secs(),
                node.name
            );
        }
        tokio::time::sleep(POLL).await;
    }
}

fn is_healthy_voter(node: &Node, members: &[etcd::Member]) -> bool {
    not_healthy_voters(&[node], members).is_empty()
}

/// The members as an etcd node other than `node` sees them, and which one answered.
async fn read_members(ctx: &Context, node: &Node) -> anyhow::Result<(String, Vec<etcd::Member>)> {
    let mut failures = Vec::new();
    for other in ctx.inventory.etcd_nodes().filter(|n| n.name != node.name) {
        let Some(host) = ctx.fleet()?.host(other.name.as_str()) else {
            continue;
        };
        match etcd::members(host).await {
            Ok(members) => return Ok((other.name.to_string(), members)),
            Err(e) => failures.push(format!("{}: {e:#}", other.name)),
        }
    }
    Err(Hinted::new(format!(
        "the external etcd answers on no other etcd node ({})",
        failures.join("; ")
    ))
    .hint("build the cluster first (`khactl up`), or bring etcd back (`khactl status`)")
    .into())
}

/// Stops and disables etcd on the node, removes khactl's unit and config, and the member's
/// data, through the gate.
async fn stop_and_clear(ctx: &Context, host: &NodeHandle) -> anyhow::Result<()> {
    let facts = ctx.facts_of(host.node())?;
    let service = |action| Change::Service {
        name: SERVICE.to_owned(),
        init: facts.init,
        action,
        check_first: None,
    };
    let mut changes = vec![
        service(ServiceAction::Stop),
        service(ServiceAction::Disable),
    ];
    for path in [SYSTEMD_UNIT, CONFIG_FILE] {
        changes.push(Change::RemoveFile { path: path.into() });
    }
    changes.push(service(ServiceAction::DaemonReload));
    ctx.apply(host, &changes).await?;
    // etcd may have created it since the facts were read (a join that failed).
    remove_data(ctx, host, true).await
}

/// Removes the member's data directory once its etcd is stopped; unless `always`, only when
/// the facts saw it (so a second `reset` changes nothing).
pub(super) async fn remove_data(
    ctx: &Context,
    host: &NodeHandle,
    always: bool,
) -> anyhow::Result<()> {
    let seen = ctx
        .facts_of(host.node())?
        .dirs
        .get(Path::new(DATA_DIR))
        .is_some_and(|d| *d != DirState::Absent);
    if !seen && !always {
        return Ok(());
    }
    let headline = format!("remove the etcd member's data ({DATA_DIR})");
    ctx.step(host, &headline, async |h| {
        h.run(&RemoteCommand::new([
            "rm",
            "-rf",
            "--one-file-system",
            DATA_DIR,
        ]))
        .await?;
        Ok(())
    })
    .await?;
    Ok(())
}

/// `remove-node` of an etcd node: the member out first, then etcd stopped there.
pub struct LeaveEtcd {
    pub node: Node,
    /// The machine is gone: only the member is removed.
    pub unreachable: bool,
}

impl Phase for LeaveEtcd {
    fn title(&self) -> &'static str {
        "Remove the etcd member"
    }

    fn facts(&self, _ctx: &Context, node: &Node) -> ProbeRequest {
        member_files(node, self.node.name.as_str())
    }

    fn run<'a>(&'a self, ctx: &'a mut Context) -> PhaseFuture<'a> {
        Box::pin(async move {
            let name = self.node.name.to_string();
            let r = self.leave(ctx).await;
            ctx.inventory.nodes.retain(|n| n.name.as_str() != name);
            ctx.settle(vec![(name, r)])
        })
    }
}

impl LeaveEtcd {
    async fn leave(&self, ctx: &Context) -> anyhow::Result<String> {
        let node = &self.node;
        let name = node.name.as_str();
        let (answered, members) = read_members(ctx, node).await?;
        let witness = ctx
            .fleet()?
            .host(&answered)
            .ok_or_else(|| anyhow::anyhow!("internal: {answered} is not connected"))?;
        etcd_quorum_after(name, &node.address.to_string(), &members)?;
        // A leader removed costs an election while every API server's request waits; a
        // transfer is one round trip. Only a reachable node can hand over.
        if !self.unreachable
            && let Some(host) = ctx.fleet()?.host(name)
        {
            hand_over_leadership(ctx, host, witness, node, &members).await?;
        }
        let removed = remove_member(ctx, witness, node, &members).await?;
        if self.unreachable {
            return Ok(format!(
                "{removed} member(s) removed; the machine was not touched"
            ));
        }
        let host = ctx
            .fleet()?
            .host(name)
            .ok_or_else(|| anyhow::anyhow!("internal: {name} is not connected"))?;
        stop_and_clear(ctx, host).await?;
        // Its keys go too: a machine that left keeps no credential of the cluster's etcd.
        let facts = ctx.facts_of(name)?;
        let keys: Vec<Change> = MEMBER_PKI
            .iter()
            .filter(|p| facts.digest(Path::new(p)).is_some())
            .map(|p| Change::RemoveFile { path: p.into() })
            .collect();
        ctx.apply(host, &keys).await?;
        Ok(format!(
            "{removed} member(s) removed, then etcd stopped, its data and keys removed"
        ))
    }
}
