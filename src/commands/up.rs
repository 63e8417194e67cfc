//! `khactl up`: bring every node to what the inventory describes. The runbook is
//! [`phases`]; the result says, per node, what changed (or would, with `--dry-run`).

use std::path::PathBuf;
use std::sync::Arc;

use serde::Serialize;

use super::UsageError;
use crate::agent::AgentBinary;
use crate::phases::{
    ChangeRecord, CheckKubeadm, Connect, DistributePki, FormerNodes, GatherFacts, GeneratePki,
    InitCluster, InstallAgent, InstallEtcd, JoinControlPlanes, JoinWorkers, LockCluster, Mode,
    Phase, Preflight, PrepareHosts, UpdateEtcdEndpoints, VerifyCluster, WaitForVip,
};
use crate::report::Reporter;
use crate::session::{self, Finished, NodeOptions};

/// Everything `up` needs, resolved from the command line once.
#[derive(Debug, Clone)]
pub struct UpOptions {
    pub nodes: NodeOptions,
    pub dry_run: bool,
    /// The khagent to install; default: `khagent` next to this executable.
    pub agent_binary: Option<PathBuf>,
}

/// The phases of `khactl up`, in runbook order.
pub fn phases() -> Vec<Box<dyn Phase>> {
    vec![
        Box::new(GeneratePki),
        Box::new(Connect),
        Box::new(GatherFacts),
        Box::new(Preflight),
        Box::new(LockCluster),
        Box::new(FormerNodes),
        Box::new(CheckKubeadm),
        Box::new(PrepareHosts),
        Box::new(DistributePki),
        // External etcd only: a healthy etcd cluster before kubeadm dials it.
        Box::new(InstallEtcd),
        Box::new(InstallAgent),
        Box::new(WaitForVip),
        Box::new(InitCluster),
        // External etcd only: API servers that list other endpoints than the etcd nodes
        // (an etcd node added or removed by hand) follow them, one at a time, and
        // kubeadm-config with them, before a join reads its endpoints from there.
        Box::new(UpdateEtcdEndpoints::new(None)),
        Box::new(JoinControlPlanes),
        Box::new(JoinWorkers),
        Box::new(VerifyCluster),
    ]
}

pub async fn run(opts: &UpOptions, reporter: Box<dyn Reporter>) -> anyhow::Result<UpResult> {
    // Everything that can be wrong locally is found before anything is created or contacted.
    let loaded = session::load(&opts.nodes)?;
    loaded.check_stats_password()?;
    let agent = load_agent(opts.agent_binary.as_deref())?;
    let mode = if opts.dry_run {
        Mode::Plan
    } else {
        Mode::Apply
    };
    let mut ctx = loaded.start("up", mode, reporter)?;
    ctx.settings.agent_binary = Some(Arc::new(agent));
    let result = session::run(&mut ctx, phases()).await;
    let finished = session::finish(ctx, result).await?;
    Ok(UpResult::from_finished(&finished))
}

pub fn load_agent(path: Option<&std::path::Path>) -> Result<AgentBinary, UsageError> {
    let path = AgentBinary::locate(path)
        .map_err(|e| UsageError::new(format!("cannot find khactl's own executable: {e}")))?;
    AgentBinary::load(&path).map_err(|e| {
        let hint = e.hint();
        let mut err = UsageError::new(e.to_string());
        if let Some(h) = hint {
            err = err.hint(h);
        }
        err
    })
}

/// What `up` did (or, with `--dry-run`, would do). Field names are stable: see
/// `docs/output.md`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct UpResult {
    pub dry_run: bool,
    pub cluster: String,
    pub nodes: Vec<NodeResult>,
    /// Changes made (or planned) over all nodes.
    pub total_changes: usize,
    /// How many nodes had at least one.
    pub nodes_changed: usize,
    pub vip: VipResult,
    /// Where the stats page is and where its password is read (`statsPage`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stats_page: Option<StatsPageResult>,
    pub log: Option<PathBuf>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StatsPageResult {
    /// The first node running khagent's page (every one of them has one).
    pub url: String,
    pub user: String,
    /// The local file holding the password: `passwordFile`, or the state directory's.
    pub password_file: PathBuf,
}

impl StatsPageResult {
    fn of(f: &Finished) -> Option<Self> {
        let page = f.inventory.stats_page.as_ref()?;
        let host = match page.bind {
            crate::inventory::StatsBind::Loopback => "127.0.0.1".to_owned(),
            _ => {
                let inv = &f.inventory;
                inv.nodes
                    .iter()
                    .find(|n| inv.runs_agent(n))?
                    .address
                    .to_string()
            }
        };
        Some(StatsPageResult {
            url: format!("http://{host}:{}{}", page.port.get(), page.path),
            user: page.user.clone(),
            password_file: page
                .password_file()
                .unwrap_or_else(|| f.state.stats_password_path()),
        })
    }
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeResult {
    pub name: String,
    pub role: &'static str,
    pub address: String,
    pub changes: Vec<ChangeRecord>,
}

impl NodeResult {
    /// Every inventory node with what changed on it, in inventory order.
    pub fn every(f: &Finished) -> Vec<Self> {
        f.inventory
            .nodes
            .iter()
            .map(|n| NodeResult {
                name: n.name.to_string(),
                role: n.role.as_str(),
                address: n.address.to_string(),
                changes: f.journal.get(n.name.as_str()).cloned().unwrap_or_default(),
            })
            .collect()
    }
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct VipResult {
    pub address: String,
    pub port: u16,
    /// The control plane holding the VIP at the end of the run (`null` in a dry run).
    pub holder: Option<String>,
}

impl VipResult {
    pub fn of(f: &Finished) -> VipResult {
        VipResult {
            // Node-local balancers: each node's own, on 127.0.0.1; an external one: its
            // address, or the name DNS resolves to it.
            address: match (&f.inventory.vip, f.inventory.external_lb()) {
                (Some(v), _) => v.address.to_string(),
                (None, Some(ext)) => ext.address.map_or(ext.host, |a| a.to_string()),
                (None, None) => std::net::Ipv4Addr::LOCALHOST.to_string(),
            },
            port: f.inventory.api_endpoint().port,
            holder: f.cluster.vip_holder.clone(),
        }
    }
}

impl UpResult {
    fn from_finished(f: &Finished) -> Self {
        UpResult {
            dry_run: f.mode == Mode::Plan,
            cluster: f.inventory.cluster.name.to_string(),
            nodes: NodeResult::every(f),
            total_changes: f.total_changes(),
            nodes_changed: f.nodes_changed(),
            vip: VipResult::of(f),
            stats_page: StatsPageResult::of(f),
            log: f.log.clone(),
        }
    }

    /// The lines `main` prints for people at the end of the run.
    pub fn text(&self) -> Vec<String> {
        let (n, nodes) = (self.total_changes, self.nodes_changed);
        let first = match (self.dry_run, n) {
            (true, 0) => "dry run: nothing to change, every node is up to date".to_owned(),
            (true, n) => {
                format!("dry run: {n} change(s) planned on {nodes} node(s); nothing was changed")
            }
            (false, 0) => "up: nothing to change, every node was already up to date".to_owned(),
            (false, n) => format!("up: made {n} change(s) on {nodes} node(s)"),
        };
        let mut lines = vec![first];
        if let Some(s) = &self.stats_page {
            lines.push(format!(
                "stats page: {} (and on each node running khagent), user {}, password in {}",
                s.url,
                s.user,
                s.password_file.display()
            ));
        }
        lines.push(super::log_line(self.log.as_deref()));
        lines
    }
}
