//! Install khagent (the API load balancer + VRRP virtual IP) on every control-plane node:
//! the binary that was built next to khactl, its config rendered from the inventory and the
//! node's facts, and a systemd unit or OpenRC script; then start it, or restart it where
//! something changed. Workers get nothing.
//!
//! Files are compared by digest and mode with the node's facts, so an unchanged node gets no
//! write and no restart. Files are written on every node in parallel; starts and restarts then
//! go one node at a time, the node holding the VIP last, so a config change moves the VIP at
//! most once away from (and back to) its holder instead of flapping it around the group.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};

use super::changes::{Change, ServiceAction};
use super::{Context, Phase, PhaseFuture};
use crate::facts::{HostFacts, InitSystem, sha256_hex};
use crate::inventory::{Inventory, Node, Role};
use crate::remote::{RemoteCommand, SshHost};
use crate::render::{AgentBackend, AgentConfig, AgentService, AgentTrack, AgentVrrp};

pub const SERVICE: &str = "khagent";
pub const AGENT_BINARY: &str = "/usr/local/bin/khagent";
pub const AGENT_CONFIG: &str = "/etc/khagent/khagent.yaml";
pub const SYSTEMD_UNIT: &str = "/etc/systemd/system/khagent.service";
pub const OPENRC_SCRIPT: &str = "/etc/init.d/khagent";
/// Written before new files replace a running agent's, removed once the agent restarted on
/// them: a run cut short in between (a node lost, a restart that failed and stopped the
/// rolling restart) leaves it behind, and the next `up` restarts that agent even though its
/// files already match.
pub const RESTART_PENDING: &str = "/var/lib/khagent/restart-pending";
/// The cluster CA as DistributePki places it; the agent verifies apiservers against it.
const CLUSTER_CA: &str = "/etc/kubernetes/pki/ca.crt";
/// Every kube-apiserver listens here on its node (kubeadm's default bind port).
const APISERVER_PORT: u16 = 6443;
/// Loopback only: the status page has no password by default, and operators reach it over
/// the same SSH khactl uses (`curl 127.0.0.1:9901/status`).
const STATUS_LISTEN: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 9901);
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

/// The khagent executable khactl installs, read once before any node is contacted.
pub struct AgentBinary {
    pub path: PathBuf,
    pub contents: Vec<u8>,
    pub sha256: String,
    /// `uname -m` spelling of the ELF header's machine (`x86_64`, `aarch64`).
    pub arch: String,
}

impl fmt::Debug for AgentBinary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AgentBinary")
            .field("path", &self.path)
            .field("size", &self.contents.len())
            .field("sha256", &self.sha256)
            .field("arch", &self.arch)
            .finish()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AgentBinaryError {
    #[error(
        "the agent binary {path} cannot be read ({source})\n  hint: build it with `cargo build \
         --release` (one build makes khactl and khagent side by side), or pass --agent-binary PATH"
    )]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{path} is not a Linux executable (no ELF header); pass the khagent binary with --agent-binary"
    )]
    NotElf { path: PathBuf },
}

impl AgentBinary {
    /// The binary at `path`, or `khagent` next to the running khactl (cargo builds every
    /// workspace binary into the same directory).
    pub fn locate(path: Option<&Path>) -> Result<PathBuf, std::io::Error> {
        match path {
            Some(p) => Ok(p.to_path_buf()),
            None => {
                let exe = std::env::current_exe()?;
                Ok(exe.with_file_name(SERVICE))
            }
        }
    }

    pub fn load(path: &Path) -> Result<Self, AgentBinaryError> {
        let contents = std::fs::read(path).map_err(|source| AgentBinaryError::Read {
            path: path.to_owned(),
            source,
        })?;
        let arch = elf_arch(&contents).ok_or_else(|| AgentBinaryError::NotElf {
            path: path.to_owned(),
        })?;
        Ok(Self {
            path: path.to_owned(),
            sha256: sha256_hex(&contents),
            contents,
            arch,
        })
    }
}

/// The architecture an ELF file is built for, named as `uname -m` names it. Reads `e_machine`
/// (offset 18, in the byte order EI_DATA states); unknown machines are named by number.
pub fn elf_arch(bytes: &[u8]) -> Option<String> {
    if bytes.get(..4)? != b"\x7fELF" {
        return None;
    }
    let raw = [*bytes.get(18)?, *bytes.get(19)?];
    let machine = match bytes.get(5)? {
        1 => u16::from_le_bytes(raw),
        2 => u16::from_be_bytes(raw),
        _ => return None,
    };
    Some(match machine {
        62 => "x86_64".to_owned(),
        183 => "aarch64".to_owned(),
        40 => "arm".to_owned(),
        243 => "riscv64".to_owned(),
        n => format!("ELF machine {n}"),
    })
}

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

/// Whether the service is enabled at boot and running now, as the init system says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ServiceState {
    pub enabled: bool,
    pub active: bool,
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

    fn run<'a>(&'a self, ctx: &'a mut Context) -> PhaseFuture<'a> {
        Box::pin(async move {
            let c = &*ctx;
            let binary =
                c.settings.agent_binary.clone().ok_or_else(|| {
                    anyhow::anyhow!("internal: `up` did not load the agent binary")
                })?;
            // The binary's architecture was checked against every control plane in
            // Preflight, before any host was changed.
            let is_cp = |h: &SshHost| c.node(h.node()).is_ok_and(|n| n.role == Role::ControlPlane);

            let files = c
                .fleet()?
                .each(is_cp, async |host| {
                    let node = c.node(host.node())?;
                    let facts = c.facts_of(host.node())?;
                    let state = service_state(host, facts.init).await?;
                    let plan = plan_node(&c.inventory, node, facts, &binary, state)?;
                    let written = c.apply(host, &plan.files).await?;
                    anyhow::Ok((written, plan.service))
                })
                .await;
            // Per node: how many files were written, and the service changes still to make.
            let mut written = Vec::new();
            let mut failed = Vec::new();
            for (node, r) in files {
                match r {
                    Ok((n, service)) => written.push((node, n, service)),
                    Err(e) => failed.push((node, Err(e))),
                }
            }
            if !failed.is_empty() {
                // Nothing is (re)started unless every node has its files.
                failed.extend(written.into_iter().map(|(n, k, _)| (n, Ok(k))));
                return ctx.settle_changes(self.title(), failed);
            }

            let holder = vip_holder(&c.inventory, &c.facts);
            let fleet = c.fleet()?;
            let order = restart_order(written.iter().map(|(n, ..)| n.as_str()), holder);
            let ordered: Vec<_> = order
                .iter()
                .filter_map(|name| written.iter().find(|(n, ..)| n == name))
                .collect();
            let mut results = Vec::new();
            // One at a time: a restart counts as done once the agent stayed active for a
            // second, which also lets it rejoin as backup (Master_Down_Interval at the default
            // 100 ms adverts is under 400 ms, RFC 5798 §6.1) before the next one goes down.
            for (at, (name, wrote, changes)) in ordered.iter().enumerate() {
                let Some(host) = fleet.host(name) else {
                    results.push((
                        name.clone(),
                        Err(anyhow::anyhow!("internal: not connected")),
                    ));
                    continue;
                };
                let r = c.apply(host, changes).await.map(|n| n + wrote);
                let stop = r.is_err();
                results.push((name.clone(), r));
                if stop {
                    // Restarting the others (and the holder last) after one failed could
                    // leave no healthy agent at all. Their new files are in place with the
                    // pending-restart mark, so the next run restarts them.
                    for (rest, _, changes) in &ordered[at + 1..] {
                        if !changes.is_empty() {
                            results.push((
                                rest.clone(),
                                Err(anyhow::anyhow!(
                                    "not restarted or started: the rolling restart stopped at \
                                     {name}; once {name} is fixed, run `khactl up` again to \
                                     finish it"
                                )),
                            ));
                        }
                    }
                    break;
                }
            }
            ctx.settle_changes(self.title(), results)
        })
    }
}

/// Refuses a node the binary cannot run on.
pub fn check_arch(binary: &AgentBinary, facts: &HostFacts) -> anyhow::Result<()> {
    if binary.arch != facts.arch {
        bail!(
            "the agent binary {} is built for {}, but this node is {}: build khagent for {} \
             (cargo build --release --target …) and pass it with --agent-binary",
            binary.path.display(),
            binary.arch,
            facts.arch,
            facts.arch
        );
    }
    Ok(())
}

/// The control-plane node that held the VIP when facts were gathered, if any.
pub fn vip_holder<'a>(
    inv: &Inventory,
    facts: &'a std::collections::BTreeMap<String, HostFacts>,
) -> Option<&'a str> {
    inv.control_plane().find_map(|n| {
        let (name, f) = facts.get_key_value(n.name.as_str())?;
        f.addresses
            .iter()
            .any(|(_, net)| net.addr() == inv.vip.address)
            .then_some(name.as_str())
    })
}

/// Nodes in inventory order with the VIP holder moved last.
pub fn restart_order<'a>(
    nodes: impl Iterator<Item = &'a str>,
    holder: Option<&str>,
) -> Vec<&'a str> {
    let (mut order, last): (Vec<&str>, Vec<&str>) = nodes.partition(|n| Some(*n) != holder);
    order.extend(last);
    order
}

const SERVICE_STATE: &str = r#"name=$1
if command -v systemctl >/dev/null 2>&1; then
  if systemctl is-enabled "$name" >/dev/null 2>&1; then echo enabled; fi
  if systemctl is-active "$name" >/dev/null 2>&1; then echo active; fi
else
  if rc-update show default 2>/dev/null | grep -qw "$name"; then echo enabled; fi
  if rc-service "$name" status >/dev/null 2>&1; then echo active; fi
fi
"#;

async fn service_state(host: &SshHost, init: InitSystem) -> anyhow::Result<ServiceState> {
    if init == InitSystem::Unknown {
        return Ok(ServiceState::default());
    }
    let cmd = RemoteCommand::script("khagent-service-state", SERVICE_STATE, [SERVICE]).read_only();
    let out = host
        .run(&cmd)
        .await
        .context("reading whether khagent is enabled and running")?
        .stdout_str();
    Ok(ServiceState {
        enabled: out.lines().any(|l| l == "enabled"),
        active: out.lines().any(|l| l == "active"),
    })
}

/// The agent config for one control-plane node. Pure: unit-tested without a node.
pub fn agent_config(
    inv: &Inventory,
    node: &Node,
    facts: &HostFacts,
) -> anyhow::Result<AgentConfig> {
    let cps: Vec<&Node> = inv.control_plane().collect();
    let index = cps
        .iter()
        .position(|n| n.name == node.name)
        .ok_or_else(|| anyhow::anyhow!("internal: {} is not a control-plane node", node.name))?;
    let v4 = |n: &Node| match n.address {
        IpAddr::V4(a) => Ok(a),
        IpAddr::V6(_) => Err(anyhow::anyhow!(
            "{}: address {} is IPv6; khagent's VRRP is IPv4 only, give control-plane nodes \
             IPv4 addresses",
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
    let interface = inv.vip.interface.clone().unwrap_or_else(|| dev.clone());
    // The prefix the VIP is added with: the inventory's, else that of the subnet holding the
    // VIP on the chosen interface, else the node address's own.
    let prefix = inv.vip.prefix_length.unwrap_or_else(|| {
        facts
            .addresses
            .iter()
            .find(|(d, n)| *d == interface && n.trunc().contains(&inv.vip.address))
            .map_or(net.prefix_len(), |(_, n)| n.prefix_len())
    });
    let count = i32::try_from(cps.len()).unwrap_or(i32::MAX);
    let rank = i32::try_from(index).unwrap_or(i32::MAX);
    let priority = TOP_PRIORITY.saturating_sub(rank.saturating_mul(PRIORITY_STEP));
    let mut peers = Vec::new();
    let mut backends = Vec::new();
    for n in &cps {
        let a = v4(n)?;
        if n.name != node.name {
            peers.push(a);
        }
        backends.push(AgentBackend {
            name: n.name.to_string(),
            address: SocketAddr::new(IpAddr::V4(a), APISERVER_PORT),
        });
    }
    Ok(AgentConfig {
        node: node.name.to_string(),
        listen: SocketAddr::new(IpAddr::V4(inv.vip.address), inv.vip.port.get()),
        backends,
        ca_file: CLUSTER_CA.to_owned(),
        status_listen: STATUS_LISTEN,
        track: AgentTrack {
            backend: node.name.to_string(),
            // A dead local apiserver costs more than the whole priority ladder, so any node
            // with a live apiserver outranks every node without one.
            weight: -(count.saturating_mul(PRIORITY_STEP)).clamp(1, 254),
        },
        vrrp: AgentVrrp {
            interface,
            router_id: inv.vip.router_id.get(),
            priority: u8::try_from(priority.clamp(1, 254)).unwrap_or(1),
            vip: inv.vip.address,
            vip_prefix_len: prefix,
            source_address: own,
            preempt_delay_ms: PREEMPT_DELAY_MS,
            peers,
        },
    })
}

fn service_files() -> AgentService {
    AgentService {
        binary: AGENT_BINARY.to_owned(),
        config: AGENT_CONFIG.to_owned(),
    }
}

/// A write when the node's file differs in content or mode; `diff` files show a line diff.
fn write_if_changed(
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
    })
}

/// Decides a control-plane node's changes from its facts. Pure: unit-tested without a node.
pub fn plan_node(
    inv: &Inventory,
    node: &Node,
    facts: &HostFacts,
    binary: &AgentBinary,
    state: ServiceState,
) -> anyhow::Result<NodePlan> {
    check_arch(binary, facts)?;
    let config = agent_config(inv, node, facts)?.render()?.into_bytes();
    let reload_enough = facts
        .file(Path::new(AGENT_CONFIG))
        .is_some_and(|old| only_reloadable_differ(old, &config));
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

/// Whether two agent configs differ only in what khagent applies on SIGHUP: the backend
/// list, health checks, tracked checks and VRRP peers (the agent warns that `listen`,
/// `status`, `max_connections` and the rest of `vrrp` need a restart). Anything unreadable
/// counts as a difference.
fn only_reloadable_differ(old: &[u8], new: &[u8]) -> bool {
    let restart_only = |bytes: &[u8]| {
        let mut value: serde_yaml_ng::Value = serde_yaml_ng::from_slice(bytes).ok()?;
        let map = value.as_mapping_mut()?;
        for key in ["backends", "health", "track"] {
            map.remove(key);
        }
        if let Some(vrrp) = map.get_mut("vrrp") {
            vrrp.as_mapping_mut()?.remove("peers");
        }
        Some(value)
    };
    match (restart_only(old), restart_only(new)) {
        (Some(a), Some(b)) => a == b,
        _ => false,
    }
}

#[cfg(test)]
mod tests;
