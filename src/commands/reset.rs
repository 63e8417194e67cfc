//! `khactl reset -i INVENTORY [--yes] [--purge-state] [--dry-run]`: tear every node of the
//! inventory down to what it was before khactl (see [`crate::phases::ResetNodes`]): kubeadm
//! reset, and exactly what each node's manifest says khactl wrote, undone. Asks for the
//! cluster's name first (`--yes` for scripts). The local state directory (PKI, known_hosts,
//! logs) is kept unless `--purge-state`. A second reset changes nothing.

use std::io::IsTerminal;
use std::path::PathBuf;

use serde::Serialize;

use super::UsageError;
use super::up::NodeResult;
use crate::diagnostics::Hinted;
use crate::phases::{Connect, GatherFacts, LockCluster, Mode, Phase, ResetNodes};
use crate::report::Reporter;
use crate::session::{self, NodeOptions};

#[derive(Debug, Clone)]
pub struct ResetOptions {
    pub nodes: NodeOptions,
    /// Do not ask for the cluster's name.
    pub yes: bool,
    /// Also remove the local state directory.
    pub purge_state: bool,
    pub dry_run: bool,
}

/// The phases of `khactl reset`.
pub fn phases() -> Vec<Box<dyn Phase>> {
    vec![
        Box::new(Connect),
        Box::new(GatherFacts),
        Box::new(LockCluster),
        Box::new(ResetNodes),
    ]
}

pub async fn run(opts: &ResetOptions, reporter: Box<dyn Reporter>) -> anyhow::Result<ResetResult> {
    let loaded = session::load(&opts.nodes)?;
    let cluster = loaded.inventory.cluster.name.to_string();
    let asks = !opts.dry_run && !opts.yes;
    if asks && !std::io::stdin().is_terminal() {
        return Err(UsageError::new(
            "reset removes Kubernetes and everything khactl installed from every node, and \
             asks you to type the cluster's name first, but there is no terminal to ask on",
        )
        .hint("pass --yes to reset without asking (scripts), or --dry-run to see what it would do")
        .into());
    }
    let mode = if opts.dry_run {
        Mode::Plan
    } else {
        Mode::Apply
    };
    let mut ctx = loaded.start("reset", mode, reporter)?;
    let state_dir = ctx.state.root().to_path_buf();
    if asks {
        let names: Vec<&str> = ctx
            .inventory
            .nodes
            .iter()
            .map(|n| n.name.as_str())
            .collect();
        let question = format!(
            "reset tears down {} ({}): kubeadm reset, khagent and every file and setting \
             khactl wrote are removed. Type the cluster's name to go on",
            cluster,
            names.join(", ")
        );
        if !ctx.report.confirm(&question, &cluster)? {
            let refused = anyhow::Error::new(
                Hinted::new("not confirmed: nothing was changed")
                    .hint(format!("run it again and type {cluster}, or pass --yes")),
            );
            return Err(session::finish(ctx, Err(refused))
                .await
                .err()
                .unwrap_or_else(|| anyhow::anyhow!("internal: an unconfirmed reset finished")));
        }
    }
    let result = session::run(&mut ctx, phases()).await;
    let finished = session::finish(ctx, result).await?;
    let purged = if opts.purge_state && !opts.dry_run {
        crate::state::remove_if_present(&state_dir).map_err(|e| {
            anyhow::anyhow!(
                "every node was reset, but the state directory {} could not be removed: {e}",
                state_dir.display()
            )
        })?;
        true
    } else {
        false
    };
    Ok(ResetResult {
        dry_run: opts.dry_run,
        cluster,
        nodes: NodeResult::every(&finished),
        total_changes: finished.total_changes(),
        nodes_changed: finished.nodes_changed(),
        state_dir,
        state_purged: purged,
        log: if purged { None } else { finished.log },
    })
}

/// What `reset` did (or, with `--dry-run`, would do). Field names are stable: see
/// `docs/output.md`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ResetResult {
    pub dry_run: bool,
    pub cluster: String,
    pub nodes: Vec<NodeResult>,
    pub total_changes: usize,
    pub nodes_changed: usize,
    pub state_dir: PathBuf,
    /// `--purge-state`: the state directory (PKI, known_hosts, logs) was removed.
    pub state_purged: bool,
    /// The run log; `null` when it went with the state directory.
    pub log: Option<PathBuf>,
}

impl ResetResult {
    pub fn text(&self) -> Vec<String> {
        let (n, nodes) = (self.total_changes, self.nodes_changed);
        let mut lines = vec![match (self.dry_run, n) {
            (true, 0) => "dry run: nothing to change, no node has anything of khactl's".to_owned(),
            (true, n) => {
                format!("dry run: {n} change(s) planned on {nodes} node(s); nothing was changed")
            }
            (false, 0) => "reset: nothing to change, no node has anything of khactl's".to_owned(),
            (false, n) => format!("reset: made {n} change(s) on {nodes} node(s)"),
        }];
        if self.state_purged {
            lines.push(format!(
                "removed the state directory {}",
                self.state_dir.display()
            ));
        } else if !self.dry_run {
            lines.push(format!(
                "the state directory {} is kept (its PKI, known_hosts and logs); \
                 --purge-state removes it",
                self.state_dir.display()
            ));
        }
        if let Some(log) = &self.log {
            lines.push(format!("log: {}", log.display()));
        }
        lines
    }
}
