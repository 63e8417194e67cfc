//! Install khagent (the API load balancer + VRRP virtual IP) on every control-plane node:
//! the binary that was built next to khactl, its config rendered from the inventory and the
//! node's facts, and a systemd unit or OpenRC script; then start it, or restart it where
//! something changed. Workers get nothing, except with `loadBalancer.mode: node-local`:
//! then every node, workers too, runs khagent as a load balancer on `127.0.0.1:port` to
//! every API server, without VRRP. A worker's agent verifies the API servers against its
//! own copy of the cluster CA ([`NODE_LOCAL_CA`]): kubeadm join refuses a node that already
//! has `/etc/kubernetes/pki/ca.crt`.
//!
//! Files are compared by digest and mode with the node's facts, so an unchanged node gets no
//! write and no restart. Files are written on every node in parallel; starts and restarts then
//! go one node at a time, the node holding the VIP last, so a config change moves the VIP at
//! most once away from (and back to) its holder instead of flapping it around the group.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};

use super::changes::{Change, ServiceAction};
use super::{Context, Phase, PhaseFuture, rolling};
use crate::agent::reload_is_enough;
pub use crate::agent::{
    AGENT_BINARY, AGENT_CONFIG, AgentBinary, OPENRC_SCRIPT, RESTART_PENDING, SERVICE,
    STATS_PASSWORD, SYSTEMD_UNIT, check_arch,
};
use crate::cluster::vip;
use crate::facts::{HostFacts, InitSystem, ProbeRequest, sha256_hex};
use crate::inventory::{Inventory, Node, Port, Role, Vip};
use crate::os::service::{self, ServiceState};
use crate::pki::Authority;
use crate::remote::{NodeHandle, RemoteCommand};
use crate::render::{AgentBackend, AgentConfig, AgentService, AgentTrack, AgentVrrp};
use khagent::vrrp::probe::Heard;

/// The cluster CA as DistributePki places it; the agent verifies apiservers against it.
const CLUSTER_CA: &str = "/etc/kubernetes/pki/ca.crt";
/// A worker's copy of the cluster CA for its node-local agent (public; see the module doc).
pub const NODE_LOCAL_CA: &str = "/etc/khagent/cluster-ca.crt";
/// Every kube-apiserver listens here on its node (kubeadm's default bind port).
const APISERVER_PORT: u16 = 6443;
/// Loopback only: the status page has no password by default, and operators reach it over
/// the same SSH khactl uses (`curl 127.0.0.1:9901/status`).
pub(crate) const STATUS_LISTEN: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 9901);
/// Priorities descend by control-plane order: 250, 210, 170, 130, 90, 50, 10 (distinct for
/// up to seven control planes; more share priority 1). The step does not depend on how many
/// control planes there are, so adding one changes no running agent's priority (a reload,
/// not a restart). It is wide because, when the master dies, the backups race to take over
/// and the next in line wins only by the difference of their Skew_Times, (step / 256) × the
/// advert interval (RFC 5798 §6.1): 15.6 ms at 100 ms adverts, against 3.9 ms with a step of
/// 10. A backup delayed by more than that (a vCPU the hypervisor parked, say) lets a lower
/// node take the VIP first, and the VIP then moves twice.
const TOP_PRIORITY: i32 = 250;
const PRIORITY_STEP: i32 = 40;
/// A node takes the VIP back from a lower-priority master only once it has outranked that
/// master for this long without a break. Every move of the VIP cuts the connections through it
/// (kubelets and controllers re-establish their watches), so a node whose agent crash-loops or
/// whose apiserver's readiness flaps must not pull the VIP back on every recovery. (A starting
/// agent's tracked check already counts its apiserver as down until a check succeeds, so the
/// delay is not about start-up.) Failover after a master dies or stops is not delayed by this.
const PREEMPT_DELAY_MS: u32 = 5_000;

/// Files the install reads by content (for the plan's diff) and by digest (all, for modes).
pub fn files_read() -> Vec<PathBuf> {
    [AGENT_CONFIG, SYSTEMD_UNIT, OPENRC_SCRIPT]
        .iter()
        .map(PathBuf::from)
        .collect()
}

pub fn digests_read() -> Vec<PathBuf> {
    [
        AGENT_BINARY,
        AGENT_CONFIG,
        SYSTEMD_UNIT,
        OPENRC_SCRIPT,
        RESTART_PENDING,
    ]
    .iter()
    .map(PathBuf::from)
    .collect()
}

/// What one node needs: file writes (done in parallel), then service actions (in order).
#[derive(Debug, Default, PartialEq)]
pub struct NodePlan {
    pub files: Vec<Change>,
    pub service: Vec<Change>,
}

pub struct InstallAgent;

impl Phase for InstallAgent {
    fn title(&self) -> &'static str {
        "Install the agent"
    }

    fn facts(&self, ctx: &Context, node: &Node) -> ProbeRequest {
        if !ctx.inventory.runs_agent(node) {
            return ProbeRequest::default();
        }
        let mut files = files_read();
        files.extend(conflicts::files().into_iter().map(PathBuf::from));
        let mut digests = digests_read();
        if agent_ca(node) == NODE_LOCAL_CA {
            digests.push(NODE_LOCAL_CA.into());
        }
        ProbeRequest {
            files,
            digests,
            // By digest only, never logged: the password's bytes are never read back.
            secret_digests: vec![STATS_PASSWORD.into()],
            ..ProbeRequest::default()
        }
    }

    /// A control plane the agent binary cannot run on, whose network cannot carry the VIP, or
    /// where something would fight the agent (a VIP someone else holds, a listener on its
    /// port, a keepalived for this VIP: see [`conflicts`]), is refused now, before any host is
    /// prepared, not halfway through the install.
    fn preflight(&self, ctx: &Context, node: &Node, facts: &HostFacts) -> Vec<String> {
        if !ctx.inventory.runs_agent(node) {
            return Vec::new();
        }
        let mut problems = vip_problems(&ctx.inventory, node, facts);
        problems.extend(conflicts::problems(&ctx.inventory, facts));
        if let Some(agent) = &ctx.settings.agent_binary
            && let Err(e) = check_arch(agent, facts)
        {
            problems.push(e.to_string());
        }
        problems
    }

    fn skip_reason(&self, ctx: &Context) -> Option<String> {
        ctx.inventory.external_lb().is_some().then(|| {
            "an external load balancer fronts the API servers: no node runs khagent".to_owned()
        })
    }

    fn run<'a>(&'a self, ctx: &'a mut Context) -> PhaseFuture<'a> {
        Box::pin(async move {
            let c = &*ctx;
            let binary =
                c.settings.agent_binary.clone().ok_or_else(|| {
                    anyhow::anyhow!("internal: `up` did not load the agent binary")
                })?;
            let runs_agent =
                |h: &NodeHandle| c.node(h.node()).is_ok_and(|n| c.inventory.runs_agent(n));
            // Agents outside the control planes (workers' node-local ones, dedicated
            // load-balancer nodes) verify the API servers against their own copy of the
            // cluster CA.
            let own_copies = c
                .inventory
                .nodes
                .iter()
                .any(|n| c.inventory.runs_agent(n) && agent_ca(n) == NODE_LOCAL_CA);
            let cluster_ca = if own_copies {
                Some(c.pki()?.authority_cert(Authority::Kubernetes).to_vec())
            } else {
                None
            };
            let prio = priorities(&c.inventory, |n| c.facts.get(n).and_then(current_priority));
            let stats_password = stats_page::password(c)?;

            let files = c
                .fleet()?
                .each(runs_agent, async |host| {
                    let node = c.node(host.node())?;
                    let facts = c.facts_of(host.node())?;
                    let state = service::state(host, facts.init, SERVICE)
                        .await
                        .context("reading whether khagent is enabled and running")?;
                    let priority = prio.get(host.node()).copied();
                    let mut plan = plan_node_with(
                        &c.inventory,
                        node,
                        facts,
                        &binary,
                        state,
                        priority,
                        stats_password.as_deref(),
                    )?;
                    if let Some(ca) = cluster_ca
                        .as_ref()
                        .filter(|_| agent_ca(node) == NODE_LOCAL_CA)
                    {
                        let sha = sha256_hex(ca);
                        // Before the config, so the agent never starts without it.
                        let write =
                            write_if_changed(facts, NODE_LOCAL_CA, ca.clone(), &sha, 0o644, false);
                        plan.files.splice(0..0, write);
                    }
                    c.apply(host, &plan.files).await?;
                    anyhow::Ok((plan.service, !state.active))
                })
                .await;
            // Per node: the service changes still to make.
            let mut pending = Vec::new();
            let mut failed = Vec::new();
            let mut first_start = Vec::new();
            for (node, r) in files {
                match r {
                    Ok((service, stopped)) => {
                        if stopped {
                            first_start.push(node.clone());
                        }
                        pending.push((node, service));
                    }
                    Err(e) => failed.push((node, Err(e))),
                }
            }
            if failed.is_empty() {
                failed = no_foreign_vrrp_router(c, &first_start)
                    .await?
                    .into_iter()
                    .filter(|(_, r)| r.is_err())
                    .collect();
            }
            if !failed.is_empty() {
                // Nothing is (re)started unless every node has its files and no stranger
                // shares our VRID.
                let failed_nodes: Vec<String> = failed.iter().map(|(n, _)| n.clone()).collect();
                failed.extend(
                    pending
                        .into_iter()
                        .filter(|(n, _)| !failed_nodes.contains(n))
                        .map(|(n, _)| (n, Ok(()))),
                );
                return ctx.settle_changes(failed);
            }

            let holder = vip::holder_in_facts(&c.inventory, &c.facts);
            let fleet = c.fleet()?;
            let order = restart_order(
                pending.iter().map(|(n, _)| n.as_str()),
                holder,
                &first_start,
            );
            let ordered: Vec<(String, Vec<Change>)> = order
                .iter()
                .filter_map(|name| pending.iter().find(|(n, _)| n == name).cloned())
                .collect();
            // One at a time: a restart counts as done once the agent stayed active for a
            // second, which also lets it rejoin as backup (Master_Down_Interval at the default
            // 100 ms adverts is under 400 ms, RFC 5798 §6.1) before the next one goes down.
            let results = rolling::one_at_a_time(
                ordered,
                &c.settings.interrupt,
                async |name, changes| {
                    let host = fleet
                        .host(name)
                        .ok_or_else(|| anyhow::anyhow!("internal: {name} is not connected"))?;
                    c.apply(host, changes).await.map(drop)
                },
                // Restarting the others (and the holder last) after one failed could leave
                // no healthy agent at all. Their new files are in place with the
                // pending-restart mark, so the next run restarts them.
                |stopped_at, changes| match stopped_at {
                    _ if changes.is_empty() => Ok(()),
                    Some(at) => Err(anyhow::anyhow!(
                        "not restarted or started: the rolling restart stopped at {at}; once \
                         {at} is fixed, run `khactl up` again to finish it"
                    )),
                    None => Err(crate::interrupt::Interrupted.into()),
                },
            )
            .await;
            ctx.settle_changes(results)
        })
    }
}

/// How long `khagent probe-vrid` listens on a node before its agent first starts: a master at
/// keepalived's default `advert_int 1` (the guides') sends at least one advert in that time,
/// with half a second to spare; ours advertise every 100 ms.
const PROBE_VRID_FOR: &str = "1500ms";

/// Before an agent first starts on a node, listens there for another VRRP router advertising
/// the cluster's VRID (a keepalived the guides set up with VRID 51, khactl's default too).
/// This cannot be a preflight check: listening needs the agent's binary, which preflight runs
/// before; and a `tcpdump` is not on every node. The binary is in place now, and no agent
/// started yet. In a dry run the binary may not be there, so nothing is listened for.
/// Read-only: the probe only listens. Returns each listened node's verdict.
async fn no_foreign_vrrp_router(
    c: &Context,
    nodes: &[String],
) -> anyhow::Result<Vec<(String, anyhow::Result<()>)>> {
    if c.settings.mode == super::Mode::Plan || nodes.is_empty() {
        return Ok(Vec::new());
    }
    let Some(vip) = &c.inventory.vip else {
        return Ok(Vec::new()); // no VRRP anywhere
    };
    let vrid = vip.router_id.get().to_string();
    Ok(c.fleet()?
        .each(
            |h| nodes.iter().any(|n| n == h.node()),
            async |host| {
                let node = c.node(host.node())?;
                let Some(vrrp) = agent_config(&c.inventory, node, c.facts_of(host.node())?)?.vrrp
                else {
                    return Ok(());
                };
                let interface = vrrp.interface;
                let argv = [AGENT_BINARY, "probe-vrid", "--interface", &interface]
                    .into_iter()
                    .chain(["--vrid", &vrid, "--for", PROBE_VRID_FOR]);
                let out = host
                    .run(&RemoteCommand::new(argv).read_only())
                    .await
                    .context("listening for other VRRP routers (khagent probe-vrid)")?;
                let heard: Vec<Heard> = out.stdout_str().lines().filter_map(Heard::parse).collect();
                let strangers = conflicts::foreign_routers(&c.inventory, &interface, &heard);
                if strangers.is_empty() {
                    Ok(())
                } else {
                    Err(anyhow::anyhow!(strangers.join("; ")))
                }
            },
        )
        .await)
}

/// The VIP must be on this control plane's own network, for VRRP to move it between them on
/// one L2 segment, and `vip.interface` (when set) must exist. Pure.
pub fn vip_problems(inv: &Inventory, node: &Node, facts: &HostFacts) -> Vec<String> {
    let mut problems = Vec::new();
    let Some(vip) = &inv.vip else {
        return problems; // node-local balancers: nothing moves between nodes
    };
    let own = facts
        .addresses
        .iter()
        .find(|(_, net)| IpAddr::V4(net.addr()) == node.address);
    match own {
        None => problems.push(format!(
            "the node does not have its inventory address {} on any interface",
            node.address
        )),
        Some((dev, net)) => {
            if !net.trunc().contains(&vip.address) {
                problems.push(format!(
                    "vip.address {} is outside this node's subnet {} (on {dev}); the VIP \
                     must be on the VRRP nodes' own network (the control planes, or the \
                     load-balancer nodes) for VRRP to move it",
                    vip.address,
                    net.trunc()
                ));
            }
            if let Some(want) = &vip.interface
                && !facts.addresses.iter().any(|(d, _)| d == want)
            {
                problems.push(format!(
                    "vip.interface {want} has no IPv4 address on this node (its address \
                     is on {dev})"
                ));
            }
        }
    }
    problems
}

/// Nodes in inventory order with the VIP holder moved last, then the agents that start for
/// the first time (`fresh`): by then every running agent was reloaded with them as peers.
/// Started earlier, a new agent would hear no advert (the holder still sends them to its old
/// peers only), take the VIP after its Master_Down_Interval, and cut the connections on it.
pub fn restart_order<'a>(
    nodes: impl Iterator<Item = &'a str>,
    holder: Option<&str>,
    fresh: &[String],
) -> Vec<&'a str> {
    let (mut order, last): (Vec<&str>, Vec<&str>) = nodes.partition(|n| Some(*n) != holder);
    order.extend(last);
    order.sort_by_key(|n| fresh.iter().any(|f| f == n));
    order
}

/// Each control plane's VRRP priority, stable across runs: a running agent keeps the priority
/// its config has (so adding or removing a control plane anywhere in the inventory changes no
/// running agent's priority — a reload, not a restart that could move the VIP), and a node
/// without one gets, in inventory order, the highest free step of the ladder (250, 210, …).
pub fn priorities(
    inv: &Inventory,
    current: impl Fn(&str) -> Option<u8>,
) -> std::collections::BTreeMap<String, i32> {
    let mut out = std::collections::BTreeMap::new();
    let mut used = std::collections::BTreeSet::new();
    let cps: Vec<&Node> = inv.vrrp_nodes().collect();
    for n in &cps {
        if let Some(p) = current(n.name.as_str())
            && used.insert(i32::from(p))
        {
            out.insert(n.name.to_string(), i32::from(p));
        }
    }
    let mut ladder =
        (0..).map(|k: i32| TOP_PRIORITY.saturating_sub(k.saturating_mul(PRIORITY_STEP)));
    for n in &cps {
        if out.contains_key(n.name.as_str()) {
            continue;
        }
        let p = ladder
            .by_ref()
            .find(|p| *p < 1 || !used.contains(p))
            .unwrap_or(1)
            .max(1);
        used.insert(p);
        out.insert(n.name.to_string(), p);
    }
    out
}

/// The VRRP priority in the agent config a node has now, if any.
pub fn current_priority(facts: &HostFacts) -> Option<u8> {
    let text = facts.file(Path::new(AGENT_CONFIG))?;
    let config = khagent::config::Config::parse(&String::from_utf8_lossy(text)).ok()?;
    config.vrrp.map(|v| v.priority)
}

/// The agent config for one node, with the rank-based priority. Pure: unit-tested without a
/// node.
pub fn agent_config(
    inv: &Inventory,
    node: &Node,
    facts: &HostFacts,
) -> anyhow::Result<AgentConfig> {
    agent_config_with(inv, node, facts, None)
}

/// The agent config for one node; `priority` from [`priorities`] (None: by rank).
pub fn agent_config_with(
    inv: &Inventory,
    node: &Node,
    facts: &HostFacts,
    priority: Option<i32>,
) -> anyhow::Result<AgentConfig> {
    match (&inv.vip, inv.node_local()) {
        (Some(vip), None) => vip_agent_config(inv, vip, node, facts, priority),
        (_, Some(nl)) => Ok(node_local_agent_config(inv, node, nl.port)),
        (None, None) => bail!("internal: the inventory has neither a VIP nor node-local balancers"),
    }
}

/// Every API server, in inventory order: the backends of every agent. (Behind dedicated
/// balancers a control plane may be IPv6: only VRRP is IPv4.)
fn api_backends(inv: &Inventory) -> Vec<AgentBackend> {
    inv.control_plane()
        .map(|n| AgentBackend {
            name: n.name.to_string(),
            address: SocketAddr::new(n.address, APISERVER_PORT),
        })
        .collect()
}

/// The CA an agent checks the API servers against: kubeadm's on a control plane; elsewhere
/// (workers, load-balancer nodes) its own copy, since kubeadm join refuses a worker that
/// already has `ca.crt`, and a balancer has no kubeadm files at all.
fn agent_ca(node: &Node) -> &'static str {
    if node.role == Role::ControlPlane {
        CLUSTER_CA
    } else {
        NODE_LOCAL_CA
    }
}

/// A node-local balancer: `127.0.0.1:port` to every API server, health-checked like the VIP's
/// balancer; no tracked check and no VRRP (nothing to elect). Every node's file is the same
/// but for the CA's path and the comment, so a control plane added or removed is a reload.
fn node_local_agent_config(inv: &Inventory, node: &Node, port: Port) -> AgentConfig {
    AgentConfig {
        node: node.name.to_string(),
        listen: SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port.get()),
        backends: api_backends(inv),
        ca_file: agent_ca(node).to_owned(),
        status_listen: STATUS_LISTEN,
        stats: stats_page::section(inv, node),
        track: None,
        vrrp: None,
    }
}

/// A VRRP node behind the VIP: balancer on VIP:port to every API server, and VRRP with the
/// other VRRP nodes. A control plane tracks its own API server; a dedicated load-balancer
/// node, which has none, tracks whether its balancer has any backend up.
fn vip_agent_config(
    inv: &Inventory,
    vip: &Vip,
    node: &Node,
    facts: &HostFacts,
    priority: Option<i32>,
) -> anyhow::Result<AgentConfig> {
    let routers: Vec<&Node> = inv.vrrp_nodes().collect();
    let index = routers
        .iter()
        .position(|n| n.name == node.name)
        .ok_or_else(|| anyhow::anyhow!("internal: {} runs no VRRP for the VIP", node.name))?;
    let v4 = |n: &Node| match n.address {
        IpAddr::V4(a) => Ok(a),
        IpAddr::V6(_) => Err(anyhow::anyhow!(
            "{}: address {} is IPv6; khagent's VRRP and balancer are IPv4 only, give the \
             control-plane and load-balancer nodes IPv4 addresses",
            n.name,
            n.address
        )),
    };
    let own = v4(node)?;
    let (dev, net) = facts
        .addresses
        .iter()
        .find(|(_, net)| net.addr() == own)
        .ok_or_else(|| {
            anyhow::anyhow!("the node does not have its inventory address {own} on any interface")
        })?;
    let interface = vip.interface.clone().unwrap_or_else(|| dev.clone());
    // The prefix the VIP is added with: the inventory's, else that of the subnet holding the
    // VIP on the chosen interface, else the node address's own.
    let prefix = vip.prefix_length.unwrap_or_else(|| {
        facts
            .addresses
            .iter()
            .find(|(d, n)| *d == interface && n.trunc().contains(&vip.address))
            .map_or(net.prefix_len(), |(_, n)| n.prefix_len())
    });
    let rank = i32::try_from(index).unwrap_or(i32::MAX);
    let priority =
        priority.unwrap_or_else(|| TOP_PRIORITY.saturating_sub(rank.saturating_mul(PRIORITY_STEP)));
    let mut peers = Vec::new();
    for n in &routers {
        if n.name != node.name {
            peers.push(v4(n)?);
        }
    }
    let own_api_server = node.role == Role::ControlPlane;
    Ok(AgentConfig {
        node: node.name.to_string(),
        listen: SocketAddr::new(IpAddr::V4(vip.address), vip.port.get()),
        backends: api_backends(inv),
        ca_file: agent_ca(node).to_owned(),
        status_listen: STATUS_LISTEN,
        stats: stats_page::section(inv, node),
        // A dead local apiserver (a balancer with no backend up) costs the whole priority
        // range: the agent keeps the result at 1, under every node with a live one, whatever
        // priorities running agents kept from earlier inventories (`priorities`), so a
        // balancer cut off from the API servers neither keeps nor takes back the VIP.
        track: Some(AgentTrack {
            backend: own_api_server.then(|| node.name.to_string()),
            weight: -254,
        }),
        vrrp: Some(AgentVrrp {
            interface,
            router_id: vip.router_id.get(),
            priority: u8::try_from(priority.clamp(1, 254)).unwrap_or(1),
            vip: vip.address,
            vip_prefix_len: prefix,
            source_address: own,
            preempt_delay_ms: PREEMPT_DELAY_MS,
            peers,
        }),
    })
}

fn service_files() -> AgentService {
    AgentService {
        binary: AGENT_BINARY.to_owned(),
        config: AGENT_CONFIG.to_owned(),
    }
}

/// A write when the node's file differs in content or mode; `diff` files show a line diff.
pub(super) fn write_if_changed(
    facts: &HostFacts,
    path: &str,
    contents: Vec<u8>,
    sha256: &str,
    mode: u32,
    diff: bool,
) -> Option<Change> {
    let have = facts.digest(Path::new(path));
    let current = match have {
        Some(d) if d.sha256 == sha256 && d.mode == mode => return None,
        // Same bytes, wrong mode: the plan says "set mode of".
        Some(d) if d.sha256 == sha256 => Some(contents.clone()),
        Some(_) => Some(
            facts
                .file(Path::new(path))
                .map(<[u8]>::to_vec)
                .unwrap_or_default(),
        ),
        None => None,
    };
    Some(Change::WriteFile {
        path: path.into(),
        contents,
        mode,
        secret: false,
        diff,
        current,
        backup: None,
        preview: None,
    })
}

/// A secret's write (0600, shown and logged by size only) when the node's differs by digest
/// or mode; its bytes are never read from the node.
fn write_secret_if_changed(facts: &HostFacts, path: &str, contents: Vec<u8>) -> Option<Change> {
    let sha = sha256_hex(&contents);
    let mut change = write_if_changed(facts, path, contents, &sha, 0o600, false)?;
    if let Change::WriteFile { secret, .. } = &mut change {
        *secret = true;
    }
    Some(change)
}

/// Decides a node's agent changes from its facts, with the rank-based priority. Pure:
/// unit-tested without a node.
pub fn plan_node(
    inv: &Inventory,
    node: &Node,
    facts: &HostFacts,
    binary: &AgentBinary,
    state: ServiceState,
) -> anyhow::Result<NodePlan> {
    plan_node_with(inv, node, facts, binary, state, None, None)
}

/// [`plan_node`] with the priority [`priorities`] gave the node and the stats page's password
/// ([`stats_page::password`]; `None` without `statsPage`).
pub fn plan_node_with(
    inv: &Inventory,
    node: &Node,
    facts: &HostFacts,
    binary: &AgentBinary,
    state: ServiceState,
    priority: Option<i32>,
    stats_password: Option<&[u8]>,
) -> anyhow::Result<NodePlan> {
    check_arch(binary, facts)?;
    let config = agent_config_with(inv, node, facts, priority)?
        .render()?
        .into_bytes();
    let reload_enough = facts
        .file(Path::new(AGENT_CONFIG))
        .is_some_and(|old| reload_is_enough(old, &config));
    let (unit_path, unit, unit_mode) = match facts.init {
        InitSystem::Systemd => (SYSTEMD_UNIT, service_files().render_systemd()?, 0o644),
        InitSystem::OpenRc => (OPENRC_SCRIPT, service_files().render_openrc()?, 0o755),
        InitSystem::Unknown => {
            bail!("no init system found to run khagent (systemd or OpenRC is needed)")
        }
    };
    let mut plan = NodePlan::default();
    let binary_change = write_if_changed(
        facts,
        AGENT_BINARY,
        binary.contents.clone(),
        &binary.sha256,
        0o755,
        false,
    );
    let same_binary = binary_change.is_none();
    plan.files.extend(binary_change);
    // A password is written before the config that names it, and removed only after the
    // config that no longer does: `khagent check` never meets a config without its file.
    let (password_first, password_last) =
        match stats_page::password_change(inv, facts, stats_password)? {
            Some(remove @ Change::RemoveFile { .. }) => (None, Some(remove)),
            write => (write, None),
        };
    plan.files.extend(password_first);
    let sha = sha256_hex(&config);
    // Not secret (it names no key), but private to root all the same: 0600.
    plan.files.extend(write_if_changed(
        facts,
        AGENT_CONFIG,
        config,
        &sha,
        0o600,
        true,
    ));
    plan.files.extend(password_last);
    let unit = unit.into_bytes();
    let sha = sha256_hex(&unit);
    let unit_change = write_if_changed(facts, unit_path, unit, &sha, unit_mode, true);
    let unit_changed = unit_change.is_some();
    plan.files.extend(unit_change);
    // New bytes, not only a new mode: the running agent must restart to use them.
    let new_contents = plan.files.iter().any(|c| {
        matches!(c, Change::WriteFile { contents, current, .. } if current.as_ref() != Some(contents))
    });
    let pending = facts.digest(Path::new(RESTART_PENDING)).is_some();
    // Backends, peers, health and tracked checks reach a running agent by SIGHUP, without
    // dropping a connection or moving the VIP. After a run cut short the old config is gone,
    // so a pending mark always means a restart.
    let reload =
        state.active && new_contents && !pending && same_binary && !unit_changed && reload_enough;
    let restart = state.active && (new_contents || pending) && !reload;
    if (restart || reload) && !pending {
        // First in the batch, so no new file lands without it.
        let mark = b"khactl replaced khagent's files; the next `khactl up` restarts it\n".to_vec();
        let sha = sha256_hex(&mark);
        let mark = write_if_changed(facts, RESTART_PENDING, mark, &sha, 0o600, false);
        plan.files.splice(0..0, mark);
    }

    let service = |action, check: bool| Change::Service {
        name: SERVICE.to_owned(),
        init: facts.init,
        action,
        check_first: check.then(|| {
            vec![
                AGENT_BINARY.to_owned(),
                "check".to_owned(),
                "--config".to_owned(),
                AGENT_CONFIG.to_owned(),
            ]
        }),
    };
    // A pending restart may follow a run that wrote the unit but stopped before reloading it.
    if (unit_changed || pending) && facts.init == InitSystem::Systemd {
        plan.files.push(service(ServiceAction::DaemonReload, false));
    }
    if !state.enabled || !state.active {
        // `enable --now` starts a stopped service with the new files and leaves a running one
        // alone; a running one with new files still needs the restart below.
        plan.service
            .push(service(ServiceAction::EnableNow, !state.active));
    }
    if reload {
        plan.service.push(service(ServiceAction::Reload, true));
    }
    if restart {
        plan.service.push(service(ServiceAction::Restart, true));
    }
    if pending || restart || reload {
        // Only reached once the agent runs on the files now in place.
        plan.service.push(Change::RemoveFile {
            path: RESTART_PENDING.into(),
        });
    }
    Ok(plan)
}

mod before_join;
mod conflicts;
pub mod stats_page;

pub use before_join::InstallAgentBeforeJoin;
#[cfg(test)]
mod tests;
